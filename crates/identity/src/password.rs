//! Passwords: argon2id with m = 19 MiB, t = 2, p = 1 (the OWASP minimum, about 45 ms per hash in
//! Wasm on one core), verified in constant time by the `argon2` crate; and the length policy.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand_core::{CryptoRng, RngCore};

/// Shortest accepted password (NIST SP 800-63B allows 8; hospitals usually ask for more).
pub const MIN_LEN: usize = 12;
/// Longest accepted password, in bytes, so hashing cost stays bounded.
pub const MAX_LEN: usize = 1024;

/// Verified against when the user does not exist, so an unknown user costs the same argon2id
/// work as a wrong password (hash of a random string nobody knows).
pub const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$kXOdYX/Xzmm2NjxzW0G0fQ$9f4+xt57UtQr6lCBmFQ6sWg5sJk9cToosYgKMnhbHOo";

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error("password must be {MIN_LEN} to {MAX_LEN} bytes")]
    Length,
    #[error("password hashing failed")]
    Hashing,
}

fn argon2() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_else(|_| unreachable!());
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Whether a new password meets the policy.
pub fn check_policy(password: &str) -> Result<(), PasswordError> {
    if (MIN_LEN..=MAX_LEN).contains(&password.len()) { Ok(()) } else { Err(PasswordError::Length) }
}

/// A PHC-format argon2id hash of a password that meets the policy.
pub fn hash(password: &str, rng: &mut (impl RngCore + CryptoRng)) -> Result<String, PasswordError> {
    check_policy(password)?;
    let salt = SaltString::generate(rng);
    argon2().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|_| PasswordError::Hashing)
}

/// Whether `password` matches the stored `hash`; a malformed hash matches nothing. Parameters
/// come from the stored hash, so older hashes keep verifying after a parameter change.
pub fn matches(hash: &str, password: &str) -> bool {
    if password.len() > MAX_LEN {
        return false;
    }
    PasswordHash::new(hash).is_ok_and(|parsed| argon2().verify_password(password.as_bytes(), &parsed).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_carry_the_stated_parameters() {
        let hashed = hash("correct horse battery", &mut rand_core::OsRng).expect("hash");
        assert!(hashed.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{hashed}");
        assert!(matches(&hashed, "correct horse battery"));
        assert!(!matches(&hashed, "correct horse batterx"));
        assert!(!matches("not a hash", "correct horse battery"));
    }

    #[test]
    fn salts_every_hash() {
        let a = hash("correct horse battery", &mut rand_core::OsRng).expect("hash");
        let b = hash("correct horse battery", &mut rand_core::OsRng).expect("hash");
        assert_ne!(a, b);
    }

    #[test]
    fn enforces_the_length_policy() {
        assert_eq!(check_policy("short"), Err(PasswordError::Length));
        assert_eq!(check_policy(&"x".repeat(MAX_LEN + 1)), Err(PasswordError::Length));
        assert_eq!(check_policy("twelve chars"), Ok(()));
        assert!(!matches(DUMMY_HASH, &"x".repeat(MAX_LEN + 1)));
    }
}
