//! Pure domain logic shared by every component of the platform: identifiers and their
//! validation, the public API's routes and request bodies, roles and the caller record, RFC 9457
//! problem details with the one refusal → problem mapping and the typed audit reasons, AES-256-GCM sealing of secrets and the PHI field-encryption key hierarchy,
//! the audit chain, and the HMAC-attested caller context the gateway hands to role services.
//!
//! No I/O, no clock and no global randomness: time and RNGs are parameters, so everything here
//! is unit-tested natively. It deliberately knows nothing about Spin or HTTP transports.

pub mod access_log;
pub mod alerts;
pub mod audit;
pub mod context;
pub mod ids;
pub mod phi;
pub mod problem;
pub mod ratelimit;
pub mod reason;
pub mod refusal;
pub mod routes;
pub mod seal;
pub mod trace;

/// The demo tenant, seeded when the `demo_tenant` variable is on; it exists before `jwks` first
/// creates its keys.
pub const DEMO_TENANT: &str = "demo-hospital";

pub use context::{Caller, Component, ContextError, Link, Role};
pub use ids::{ClientId, EntryId, FamilyId, IdError, LabId, Opaque, OrderId, PatientId, TenantId, TokenId, Username};
pub use problem::Problem;
pub use reason::Reason;
pub use refusal::Refusal;
pub use seal::{SealError, SecretKey};

/// `YYYY-MM-DDTHH:MM:SSZ` for a Unix time (civil-from-days, H. Hinnant's algorithm).
pub fn rfc3339(unix: i64) -> String {
    let (days, secs) = (unix.div_euclid(86_400), unix.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs % 3600 / 60, secs % 60)
}

/// Standard base64url without padding, the only base64 flavour JOSE and this platform use.
pub fn b64url(bytes: impl AsRef<[u8]>) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Strict base64url decoding: no padding, no whitespace, canonical trailing bits.
pub fn b64url_decode(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text).ok()
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(bytes: impl AsRef<[u8]>) -> String {
    hex::encode(sha256(bytes))
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: impl AsRef<[u8]>) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes.as_ref()).into()
}

/// Whether SHA-256(`token`) equals `expected_hex`, compared in constant time, so a stored
/// hash (e.g. `operator_token_hash`) never lets timing reveal how much of a guess was right.
pub fn token_matches_hash(token: &str, expected_hex: &str) -> bool {
    use subtle::ConstantTimeEq;
    let Ok(expected) = hex::decode(expected_hex.trim()) else {
        return false;
    };
    use sha2::Digest;
    let actual = sha2::Sha256::digest(token.as_bytes());
    expected.len() == actual.len() && bool::from(actual.as_slice().ct_eq(&expected))
}

/// A 32-byte value derived from `key` for one `purpose` (HMAC-SHA256), so one secret can seed
/// several independent uses without any of them revealing it or each other.
pub fn derive(key: &SecretKey, purpose: &str) -> [u8; 32] {
    use hmac::{Hmac, Mac};
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key.expose()).unwrap_or_else(|_| unreachable!());
    mac.update(purpose.as_bytes());
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derivation_is_deterministic_and_separated_by_key_and_purpose() {
        let a = SecretKey::from_bytes([1; 32]);
        assert_eq!(derive(&a, "x"), derive(&a, "x"));
        assert_ne!(derive(&a, "x"), derive(&a, "y"));
        assert_ne!(derive(&a, "x"), derive(&SecretKey::from_bytes([2; 32]), "x"));
    }

    #[test]
    fn token_hash_comparison_accepts_only_the_right_token() {
        let hash = sha256_hex("operator");
        assert!(token_matches_hash("operator", &hash));
        assert!(!token_matches_hash("operator2", &hash));
        assert!(!token_matches_hash("operator", "not hex"));
        assert!(!token_matches_hash("operator", &hash[..32]));
    }
}
