//! Time-based one-time passwords (RFC 6238 over RFC 4226 HOTP): HMAC-SHA1, 6 digits, 30-second
//! steps, as every authenticator app expects. A code is accepted for the current step and one
//! step either side, and never for a step at or before the last one used, so a code (or an
//! older one) cannot be replayed.

use hmac::{Hmac, Mac};
use rand_core::{CryptoRng, RngCore};
use subtle::ConstantTimeEq;

/// Length of a secret: 160 bits, the HMAC-SHA1 output size RFC 4226 §4 recommends.
pub const SECRET_BYTES: usize = 20;
/// Step length in seconds.
pub const STEP_SECS: i64 = 30;
/// Digits per code.
pub const DIGITS: u32 = 6;
/// Steps accepted either side of the current one (clock drift between phone and server).
pub const WINDOW: i64 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TotpError {
    #[error("the code is not six digits")]
    Malformed,
    #[error("the code does not match any step in the window")]
    Mismatch,
    #[error("the code's step was already used")]
    Reused,
}

/// A fresh random secret.
pub fn generate_secret(rng: &mut (impl RngCore + CryptoRng)) -> [u8; SECRET_BYTES] {
    let mut secret = [0u8; SECRET_BYTES];
    rng.fill_bytes(&mut secret);
    secret
}

/// HOTP (RFC 4226 §5.3) with `digits` digits.
pub fn hotp(secret: &[u8], counter: u64, digits: u32) -> u32 {
    let mut mac = <Hmac<sha1::Sha1> as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    mac.update(&counter.to_be_bytes());
    let hash = mac.finalize().into_bytes();
    let offset = usize::from(hash[19] & 0x0f);
    let binary = u32::from_be_bytes([hash[offset] & 0x7f, hash[offset + 1], hash[offset + 2], hash[offset + 3]]);
    binary % 10u32.pow(digits)
}

/// The step containing Unix time `now`.
pub fn step_at(now: i64) -> i64 {
    now.div_euclid(STEP_SECS)
}

/// The 6-digit code for a step, zero-padded.
pub fn code(secret: &[u8], step: i64) -> String {
    format!("{:06}", hotp(secret, u64::try_from(step).unwrap_or(0), DIGITS))
}

/// Checks `candidate` at time `now`. `last_step` is the step of the last accepted code; the
/// returned step must be stored as the new one before the login succeeds.
pub fn verify(secret: &[u8], candidate: &str, now: i64, last_step: Option<i64>) -> Result<i64, TotpError> {
    if candidate.len() != DIGITS as usize || !candidate.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TotpError::Malformed);
    }
    let current = step_at(now);
    // Every step in the window is computed and compared in constant time, so timing does not
    // tell which step (if any) matched.
    let mut matched = None;
    for step in current - WINDOW..=current + WINDOW {
        if bool::from(code(secret, step).as_bytes().ct_eq(candidate.as_bytes())) && matched.is_none() {
            matched = Some(step);
        }
    }
    let step = matched.ok_or(TotpError::Mismatch)?;
    if last_step.is_some_and(|last| step <= last) {
        return Err(TotpError::Reused);
    }
    Ok(step)
}

/// RFC 4648 base32 without padding, the secret encoding of `otpauth://` URIs.
pub fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    for chunk in bytes.chunks(5) {
        let mut buf = [0u8; 5];
        buf[..chunk.len()].copy_from_slice(chunk);
        let bits = buf.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
        let chars = (chunk.len() * 8).div_ceil(5);
        for i in 0..chars {
            let index = (bits >> (35 - i * 5)) & 0x1f;
            out.push(char::from(ALPHABET[usize::try_from(index).unwrap_or(0)]));
        }
    }
    out
}

/// Decodes RFC 4648 base32 (case-insensitive, padding and spaces ignored), as users type
/// secrets into authenticator apps.
pub fn base32_decode(text: &str) -> Option<Vec<u8>> {
    let mut bits = 0u64;
    let mut count = 0u32;
    let mut out = Vec::new();
    for c in text.chars().filter(|c| !matches!(c, '=' | ' ')) {
        let value = match c.to_ascii_uppercase() {
            c @ 'A'..='Z' => u64::from(c) - u64::from('A'),
            c @ '2'..='7' => u64::from(c) - u64::from('2') + 26,
            _ => return None,
        };
        bits = (bits << 5) | value;
        count += 5;
        if count >= 8 {
            count -= 8;
            out.push(u8::try_from((bits >> count) & 0xff).ok()?);
        }
    }
    Some(out)
}

/// The provisioning URI authenticator apps scan (Key Uri Format): issuer and account are
/// percent-encoded, the secret is base32.
pub fn otpauth_uri(issuer: &str, account: &str, secret: &[u8]) -> String {
    let label: String = form_urlencoded::byte_serialize(format!("{issuer}:{account}").as_bytes()).collect();
    let issuer_param: String = form_urlencoded::byte_serialize(issuer.as_bytes()).collect();
    // byte_serialize writes spaces as '+', which URI paths do not decode; use %20.
    let label = label.replace('+', "%20");
    let issuer_param = issuer_param.replace('+', "%20");
    format!(
        "otpauth://totp/{label}?secret={}&issuer={issuer_param}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECS}",
        base32(secret)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC_SECRET: &[u8] = b"12345678901234567890";

    #[test]
    fn matches_rfc_6238_appendix_b_sha1_vectors() {
        // (time, 8-digit TOTP) from RFC 6238 Appendix B, SHA-1 rows.
        let vectors = [
            (59, 94287082),
            (1111111109, 7081804),
            (1111111111, 14050471),
            (1234567890, 89005924),
            (2000000000, 69279037),
            (20000000000, 65353130),
        ];
        for (time, expected) in vectors {
            let counter = u64::try_from(step_at(time)).expect("positive");
            assert_eq!(hotp(RFC_SECRET, counter, 8), expected, "time {time}");
        }
    }

    #[test]
    fn matches_rfc_4226_appendix_d_hotp_values() {
        let expected = [755224, 287082, 359152, 969429, 338314, 254676, 287922, 162583, 399871, 520489];
        for (counter, value) in expected.into_iter().enumerate() {
            assert_eq!(hotp(RFC_SECRET, counter as u64, 6), value);
        }
    }

    #[test]
    fn accepts_one_step_either_side_and_nothing_further() {
        let now = 1_800_000_000;
        let step = step_at(now);
        for offset in -1..=1 {
            assert_eq!(verify(RFC_SECRET, &code(RFC_SECRET, step + offset), now, None), Ok(step + offset));
        }
        for offset in [-3, -2, 2, 3] {
            assert_eq!(verify(RFC_SECRET, &code(RFC_SECRET, step + offset), now, None), Err(TotpError::Mismatch));
        }
    }

    #[test]
    fn refuses_a_reused_or_older_code() {
        let now = 1_800_000_000;
        let step = step_at(now);
        let used = verify(RFC_SECRET, &code(RFC_SECRET, step), now, None).expect("fresh code");
        assert_eq!(verify(RFC_SECRET, &code(RFC_SECRET, step), now, Some(used)), Err(TotpError::Reused));
        assert_eq!(verify(RFC_SECRET, &code(RFC_SECRET, step - 1), now, Some(used)), Err(TotpError::Reused));
        assert_eq!(verify(RFC_SECRET, &code(RFC_SECRET, step + 1), now, Some(used)), Ok(step + 1));
    }

    #[test]
    fn refuses_malformed_codes() {
        for bad in ["", "12345", "1234567", "12345a", " 123456", "１２３４５６"] {
            assert_eq!(verify(RFC_SECRET, bad, 0, None), Err(TotpError::Malformed), "{bad:?}");
        }
    }

    #[test]
    fn encodes_base32_as_rfc_4648_section_10() {
        let cases =
            [("", ""), ("f", "MY"), ("fo", "MZXQ"), ("foo", "MZXW6"), ("foob", "MZXW6YQ"), ("fooba", "MZXW6YTB")];
        for (input, expected) in cases {
            assert_eq!(base32(input.as_bytes()), expected);
        }
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
        for (input, encoded) in cases {
            assert_eq!(base32_decode(encoded).as_deref(), Some(input.as_bytes()));
        }
        assert_eq!(base32_decode("mzxw 6ytb oi======").as_deref(), Some(&b"foobar"[..]));
        assert_eq!(base32_decode("MZ1"), None);
    }

    #[test]
    fn builds_a_provisioning_uri() {
        let uri = otpauth_uri("Health demo-hospital", "dr-grey", RFC_SECRET);
        assert_eq!(
            uri,
            "otpauth://totp/Health%20demo-hospital%3Adr-grey?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\
             &issuer=Health%20demo-hospital&algorithm=SHA1&digits=6&period=30"
        );
    }
}
