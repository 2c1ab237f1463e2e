//! AES-256-GCM sealing with associated data: wraps private keys under `master_key` (AAD =
//! tenant + kid) and, later, PHI fields under data keys (AAD = tenant + table + row + field).
//! Binding the AAD means a sealed value copied to another slot does not open.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand_core::{CryptoRng, RngCore};

const VERSION: &str = "v1";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// One error for every failure to open: wrong key, wrong AAD, tampering or bad encoding.
    #[error("sealed value cannot be opened")]
    Open,
    #[error("key must be 32 bytes of hex (64 hex characters)")]
    BadKey,
}

/// A 256-bit secret key. Prints as `SecretKey(..)` only.
#[derive(Clone)]
pub struct SecretKey([u8; 32]);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

impl SecretKey {
    pub fn from_hex(text: &str) -> Result<Self, SealError> {
        let bytes = hex::decode(text.trim()).map_err(|_| SealError::BadKey)?;
        Ok(Self(bytes.try_into().map_err(|_| SealError::BadKey)?))
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    /// Encrypts `plaintext` bound to `aad`; output is `v1.<nonce>.<ciphertext+tag>` in base64url.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8], rng: &mut (impl RngCore + CryptoRng)) -> String {
        let mut nonce = [0u8; 12];
        rng.fill_bytes(&mut nonce);
        let cipher = Aes256Gcm::new(&self.0.into());
        // Encryption with a valid key and in-memory buffers cannot fail.
        let ciphertext = cipher.encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext, aad }).unwrap_or_default();
        format!("{VERSION}.{}.{}", crate::b64url(nonce), crate::b64url(ciphertext))
    }

    pub fn open(&self, aad: &[u8], sealed: &str) -> Result<Vec<u8>, SealError> {
        let mut parts = sealed.split('.');
        let (Some(VERSION), Some(nonce), Some(body), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(SealError::Open);
        };
        let nonce = crate::b64url_decode(nonce).filter(|n| n.len() == 12).ok_or(SealError::Open)?;
        let body = crate::b64url_decode(body).ok_or(SealError::Open)?;
        Aes256Gcm::new(&self.0.into())
            .decrypt(Nonce::from_slice(&nonce), Payload { msg: &body, aad })
            .map_err(|_| SealError::Open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> SecretKey {
        SecretKey::from_bytes([byte; 32])
    }

    #[test]
    fn round_trips_with_same_key_and_aad() {
        let sealed = key(1).seal(b"t1/k1", b"private", &mut rand_core::OsRng);
        assert_eq!(key(1).open(b"t1/k1", &sealed).unwrap(), b"private");
    }

    #[test]
    fn wrong_master_key_cannot_open() {
        let sealed = key(1).seal(b"t1/k1", b"private", &mut rand_core::OsRng);
        assert_eq!(key(2).open(b"t1/k1", &sealed), Err(SealError::Open));
    }

    #[test]
    fn value_moved_to_another_tenant_or_kid_cannot_open() {
        let sealed = key(1).seal(b"t1/k1", b"private", &mut rand_core::OsRng);
        assert_eq!(key(1).open(b"t2/k1", &sealed), Err(SealError::Open));
        assert_eq!(key(1).open(b"t1/k2", &sealed), Err(SealError::Open));
    }

    #[test]
    fn tampering_is_detected() {
        let sealed = key(1).seal(b"a", b"private", &mut rand_core::OsRng);
        let mut bytes = sealed.into_bytes();
        let last = bytes.len() - 2;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(key(1).open(b"a", &String::from_utf8(bytes).unwrap()), Err(SealError::Open));
        assert_eq!(key(1).open(b"a", "v1.x"), Err(SealError::Open));
    }

    #[test]
    fn parses_hex_keys_strictly() {
        assert!(SecretKey::from_hex(&"ab".repeat(32)).is_ok());
        assert_eq!(SecretKey::from_hex("abcd").unwrap_err(), SealError::BadKey);
        assert_eq!(SecretKey::from_hex(&"zz".repeat(32)).unwrap_err(), SealError::BadKey);
        assert_eq!(format!("{:?}", key(7)), "SecretKey(..)");
    }
}
