//! `identity`: the pure parsers the `auth` component runs on request input.
//!
//! Input: a mode byte, then
//! - mode 0: `authorization \n form body` (or only a body when the mode's bit 2 is clear):
//!   `form::parse`, `client::from_request`, and for a client assertion `client::verify_assertion`
//!   against the fixed client key; `refresh::well_formed` on every value and
//!   `lockout::source_of` on the header;
//! - mode 1: a TOTP code (`totp::verify` at the fixed time, a `last_step` from the mode byte)
//!   and the same text as a typed base32 secret (`totp::base32_decode`, which must round-trip);
//! - mode 2: a JWK as registered by the admin API (`SubmittedJwk` JSON, `client::register_jwk`
//!   for signing and for encryption);
//! - mode 3: assertion claims bytes signed with the client's ES256 key (header `\n` claims to
//!   choose the header too), so `verify_assertion` reaches its claims checks.

use std::sync::LazyLock;

use health_identity::client::{self, AssertionError, ClientAuth, SubmittedJwk};
use health_identity::{form, lockout, refresh, totp};
use health_jose::{Algorithm, KeyUse, PublicJwk};

use crate::jws::Signer;
use crate::{NOW, rng, tenant};

pub const CLIENT_ID: &str = "ins-acme";
pub const TOKEN_ENDPOINT: &str = "https://health.example/auth/token";
/// The enrolled TOTP secret (RFC 6238's test secret).
pub const TOTP_SECRET: &[u8; 20] = b"12345678901234567890";

pub struct Fixture {
    pub client: Signer,
    pub client_jwk: PublicJwk,
}

pub static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let (key, record) = health_jose::generate(Algorithm::Es256, &tenant(), NOW, &mut rng(20)).expect("ES256 key");
    Fixture { client: Signer { alg: Algorithm::Es256, kid: record.jwk.kid.clone(), key }, client_jwk: record.jwk }
});

impl Fixture {
    /// The header a client sends with its assertion.
    pub fn assertion_header(&self) -> String {
        serde_json::json!({ "alg": "ES256", "kid": self.client.kid, "typ": "JWT" }).to_string()
    }
}

fn assertion(token: &str) -> Result<client::Assertion, AssertionError> {
    let fixture = &*FIXTURE;
    let verified = client::verify_assertion(token, CLIENT_ID, &fixture.client_jwk, &[TOKEN_ENDPOINT], NOW);
    if let Ok(found) = &verified {
        assert!((1..=128).contains(&found.jti.len()), "jti length");
        assert!(found.exp > NOW - 60 && found.exp <= NOW + client::MAX_ASSERTION_SECS + 60, "assertion lifetime");
    }
    verified
}

fn request(authorization: Option<&str>, body: &[u8]) {
    // The lockout source comes from the host's client address, not from the request, but it
    // is parsed text all the same.
    lockout::source_of(authorization);
    let Ok(params) = form::parse(body) else { return };
    for (name, value) in &params {
        assert!(!name.is_empty() && !value.is_empty(), "empty name or value kept: {name:?}={value:?}");
        refresh::well_formed(value);
    }
    let Ok(auth) = client::from_request(authorization, &params) else { return };
    if let Some(id) = auth.claimed_id() {
        assert!(!id.is_empty(), "empty client id accepted");
    }
    if let ClientAuth::Assertion { assertion: token, .. } = auth {
        // The component verifies it against the claimed client's registered key.
        assertion(&token).ok();
    }
}

fn otp(mode: u8, text: &[u8]) {
    let text = String::from_utf8_lossy(text);
    let last_step = (mode & 0x80 != 0).then(|| totp::step_at(NOW) + i64::from(mode >> 4 & 0x3) - 2);
    if let Ok(step) = totp::verify(TOTP_SECRET, &text, NOW, last_step) {
        assert!((totp::step_at(NOW) - totp::WINDOW..=totp::step_at(NOW) + totp::WINDOW).contains(&step));
        assert!(last_step.is_none_or(|last| step > last), "a used step accepted again");
        assert_eq!(totp::code(TOTP_SECRET, step), text);
    }
    if let Some(secret) = totp::base32_decode(&text) {
        assert_eq!(totp::base32_decode(&totp::base32(&secret)), Some(secret), "base32 round trip");
    }
}

fn jwk(bytes: &[u8]) {
    let Ok(submitted) = serde_json::from_slice::<SubmittedJwk>(bytes) else { return };
    for key_use in [KeyUse::Sig, KeyUse::Enc] {
        if let Ok(registered) = client::register_jwk(submitted.clone(), key_use, &tenant()) {
            assert_eq!(registered.key_use, key_use);
            assert_eq!(registered.thumbprint().as_deref(), Some(registered.kid.as_str()));
            let alg = registered.algorithm().expect("registered key has a platform algorithm");
            assert_eq!(alg.key_use(), key_use);
        }
    }
}

/// `head \n tail`, or no head.
fn split(rest: &[u8]) -> (Option<&[u8]>, &[u8]) {
    match rest.iter().position(|&b| b == b'\n') {
        Some(i) => (Some(&rest[..i]), &rest[i + 1..]),
        None => (None, rest),
    }
}

pub fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    match mode % 4 {
        0 => {
            let (header, body) = if mode & 0x04 != 0 { split(rest) } else { (None, rest) };
            let header = header.map(String::from_utf8_lossy);
            request(header.as_deref(), body);
        }
        1 => otp(mode, rest),
        2 => jwk(rest),
        _ => {
            let fixture = &*FIXTURE;
            let default_header = fixture.assertion_header();
            let (header, claims) = match split(rest) {
                (Some(header), claims) => (header, claims),
                (None, claims) => (default_header.as_bytes(), claims),
            };
            let token = fixture.client.sign(header, claims);
            if let Err(AssertionError::Signature(reason)) = assertion(&token) {
                let own = header == default_header.as_bytes() && !claims.is_empty() && token.len() <= 8 * 1024;
                assert!(!own, "the client's own signature refused: {reason}");
            }
        }
    }
}
