//! Opaque refresh tokens (ARCHITECTURE.md §4): 256 random bits, base64url, stored only as a
//! SHA-256 hash, rotated on every use. What a presented token means is decided here from its
//! stored row, so the component only reads and writes.

use rand_core::{CryptoRng, RngCore};

/// A new refresh token and the hash to store.
pub fn generate(rng: &mut (impl RngCore + CryptoRng)) -> (String, String) {
    let mut bytes = [0u8; 32];
    rng.fill_bytes(&mut bytes);
    let token = health_core::b64url(bytes);
    let hash = hash(&token);
    (token, hash)
}

/// The stored form of a token. Tokens carry 256 bits of entropy, so an unsalted fast hash is
/// enough: nothing can be brute-forced from it.
pub fn hash(token: &str) -> String {
    health_core::sha256_hex(token.as_bytes())
}

/// Whether a presented string could be one of ours (43 base64url characters).
pub fn well_formed(token: &str) -> bool {
    token.len() == 43 && token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The stored state of a presented refresh token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// When it was exchanged, if it was.
    pub used_at: Option<i64>,
    /// Its family's absolute expiry (the session's end).
    pub expires_at: i64,
    /// Whether the family was revoked (logout, reuse, password reset).
    pub family_revoked: bool,
}

/// What to do with a presented refresh token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Spend it and issue the next one in the family.
    Rotate,
    /// A spent token came back: someone holds a copy. Revoke the family (RFC 9700 §4.14.2).
    Reuse,
    /// Expired or its family revoked: refuse, nothing else to do.
    Dead,
}

pub fn decide(stored: Stored, now: i64) -> Decision {
    if stored.family_revoked || now >= stored.expires_at {
        Decision::Dead
    } else if stored.used_at.is_some() {
        Decision::Reuse
    } else {
        Decision::Rotate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_256_bit_and_stored_only_as_hashes() {
        let (token, hashed) = generate(&mut rand_core::OsRng);
        assert!(well_formed(&token));
        assert_eq!(health_core::b64url_decode(&token).map(|b| b.len()), Some(32));
        assert_eq!(hashed, hash(&token));
        assert!(!hashed.contains(&token));
        assert_ne!(generate(&mut rand_core::OsRng).0, token);
        assert!(!well_formed("short"));
        assert!(!well_formed(&format!("{}=", &token[..42])));
    }

    #[test]
    fn rotates_fresh_tokens_and_flags_reuse() {
        let fresh = Stored { used_at: None, expires_at: 100, family_revoked: false };
        assert_eq!(decide(fresh, 50), Decision::Rotate);
        assert_eq!(decide(Stored { used_at: Some(40), ..fresh }, 50), Decision::Reuse);
        assert_eq!(decide(fresh, 100), Decision::Dead);
        assert_eq!(decide(Stored { family_revoked: true, ..fresh }, 50), Decision::Dead);
        assert_eq!(decide(Stored { used_at: Some(40), family_revoked: true, ..fresh }, 50), Decision::Dead);
    }
}
