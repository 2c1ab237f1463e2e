//! Public JWKs and the per-tenant key records stored in the `public-keys` store.

use health_core::{TenantId, b64url};
use rand_core::{CryptoRng, RngCore};
use rsa::traits::PublicKeyParts;
use rsa::{BigUint, RsaPrivateKey, RsaPublicKey};
use serde::{Deserialize, Serialize};

/// RSA modulus size for newly generated signing keys.
pub const RSA_BITS: usize = 2048;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyStatus {
    /// Signs new tokens and verifies.
    Active,
    /// Verifies tokens issued before a rotation; no longer signs.
    Retiring,
    /// Published no more; tokens with this `kid` are refused.
    Retired,
    /// Compromised; refused at once.
    Revoked,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyUse {
    Sig,
    Enc,
}

/// An RSA public JWK as published in a JWK Set (RFC 7517), with the tenant it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicJwk {
    pub kty: String,
    pub kid: String,
    #[serde(rename = "use")]
    pub key_use: KeyUse,
    pub alg: String,
    pub n: String,
    pub e: String,
    pub tenant_id: TenantId,
}

impl PublicJwk {
    pub fn rsa_public_key(&self) -> Option<RsaPublicKey> {
        if self.kty != "RSA" {
            return None;
        }
        let n = BigUint::from_bytes_be(&health_core::b64url_decode(&self.n)?);
        let e = BigUint::from_bytes_be(&health_core::b64url_decode(&self.e)?);
        let key = RsaPublicKey::new(n, e).ok()?;
        // Refuse weak keys even if one were ever stored.
        (key.size() * 8 >= RSA_BITS).then_some(key)
    }
}

/// A key's public half and lifecycle metadata. Never holds private material.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub jwk: PublicJwk,
    pub status: KeyStatus,
    pub created_at: i64,
    pub not_after: Option<i64>,
}

/// Every key record of one tenant, as stored under `tenant/{tenant_id}` in `public-keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantKeys {
    pub tenant_id: TenantId,
    /// `iss` of every token of this tenant.
    pub issuer: String,
    pub keys: Vec<KeyRecord>,
}

impl KeyRecord {
    /// The status at `now`: a retiring key past its `not_after` is retired even before the
    /// stored record is updated, so verifiers never depend on a write having happened.
    pub fn status_at(&self, now: i64) -> KeyStatus {
        match (self.status, self.not_after) {
            (KeyStatus::Retiring, Some(not_after)) if now >= not_after => KeyStatus::Retired,
            (status, _) => status,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LifecycleError {
    #[error("no such key")]
    UnknownKid,
    #[error("key already revoked")]
    AlreadyRevoked,
}

impl TenantKeys {
    pub fn find(&self, kid: &str) -> Option<&KeyRecord> {
        self.keys.iter().find(|k| k.jwk.kid == kid)
    }

    /// Makes `new` the active key for its use. The previous active key of that use turns
    /// `retiring` and stays published until `now + retiring_secs` (the longest token lifetime
    /// plus clock tolerance), so tokens it signed keep verifying until they expire.
    pub fn rotate(&mut self, new: KeyRecord, now: i64, retiring_secs: i64) {
        for key in self.keys.iter_mut().filter(|k| k.jwk.key_use == new.jwk.key_use && k.status == KeyStatus::Active) {
            key.status = KeyStatus::Retiring;
            key.not_after = Some(now.saturating_add(retiring_secs));
        }
        self.keys.push(new);
    }

    /// Revokes `kid` at once: every token it signed is refused from now on.
    pub fn revoke(&mut self, kid: &str, now: i64) -> Result<(), LifecycleError> {
        let key = self.keys.iter_mut().find(|k| k.jwk.kid == kid).ok_or(LifecycleError::UnknownKid)?;
        if key.status == KeyStatus::Revoked {
            return Err(LifecycleError::AlreadyRevoked);
        }
        key.status = KeyStatus::Revoked;
        key.not_after = Some(now);
        Ok(())
    }

    /// Persists what [`KeyRecord::status_at`] already implies; true if anything changed.
    pub fn retire_expired(&mut self, now: i64) -> bool {
        let mut changed = false;
        for key in &mut self.keys {
            let status = key.status_at(now);
            if status != key.status {
                key.status = status;
                changed = true;
            }
        }
        changed
    }

    pub fn active(&self, key_use: KeyUse) -> Option<&KeyRecord> {
        self.keys.iter().rev().find(|k| k.status == KeyStatus::Active && k.jwk.key_use == key_use)
    }

    /// Keys a JWK Set publishes at `now`: active and (still) retiring.
    pub fn published(&self, now: i64) -> impl Iterator<Item = &PublicJwk> {
        self.keys
            .iter()
            .filter(move |k| matches!(k.status_at(now), KeyStatus::Active | KeyStatus::Retiring))
            .map(|k| &k.jwk)
    }
}

/// RFC 7638 JWK thumbprint of an RSA key: SHA-256 over the canonical `{"e","kty","n"}` JSON.
pub fn thumbprint(n: &str, e: &str) -> String {
    use sha2::Digest;
    let canonical = format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#);
    b64url(sha2::Sha256::digest(canonical.as_bytes()))
}

/// Generates an RS256 signing key for `tenant` at time `now`.
pub fn generate_rs256(
    tenant: &TenantId,
    now: i64,
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<(RsaPrivateKey, KeyRecord), rsa::Error> {
    let private = RsaPrivateKey::new(rng, RSA_BITS)?;
    let n = b64url(private.n().to_bytes_be());
    let e = b64url(private.e().to_bytes_be());
    let jwk = PublicJwk {
        kty: "RSA".into(),
        kid: thumbprint(&n, &e),
        key_use: KeyUse::Sig,
        alg: "RS256".into(),
        n,
        e,
        tenant_id: tenant.clone(),
    };
    Ok((private, KeyRecord { jwk, status: KeyStatus::Active, created_at: now, not_after: None }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprint_matches_rfc7638_example() {
        // RFC 7638 §3.1.
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
        assert_eq!(thumbprint(n, "AQAB"), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    }

    #[test]
    fn published_set_excludes_retired_and_revoked_keys() {
        let keys = TenantKeys {
            tenant_id: TenantId::parse("t").unwrap(),
            issuer: "i".into(),
            keys: vec![
                record("a", KeyStatus::Active),
                record("b", KeyStatus::Retiring),
                record("c", KeyStatus::Retired),
                record("d", KeyStatus::Revoked),
            ],
        };
        let kids: Vec<_> = keys.published(0).map(|k| k.kid.as_str()).collect();
        assert_eq!(kids, ["a", "b"]);
        assert_eq!(keys.active(KeyUse::Sig).unwrap().jwk.kid, "a");
    }

    fn record(kid: &str, status: KeyStatus) -> KeyRecord {
        KeyRecord {
            jwk: PublicJwk {
                kty: "RSA".into(),
                kid: kid.into(),
                key_use: KeyUse::Sig,
                alg: "RS256".into(),
                n: "AQAB".into(),
                e: "AQAB".into(),
                tenant_id: TenantId::parse("t").unwrap(),
            },
            status,
            created_at: 0,
            not_after: None,
        }
    }

    #[test]
    fn rotation_moves_active_to_retiring_then_retired_with_a_fixed_clock() {
        let mut keys = TenantKeys { tenant_id: TenantId::parse("t").unwrap(), issuer: "i".into(), keys: vec![record("old", KeyStatus::Active)] };
        keys.rotate(record("new", KeyStatus::Active), 1_000, 960);
        assert_eq!(keys.active(KeyUse::Sig).unwrap().jwk.kid, "new");
        assert_eq!(keys.find("old").unwrap().status, KeyStatus::Retiring);
        assert_eq!(keys.find("old").unwrap().not_after, Some(1_960));
        assert_eq!(keys.find("old").unwrap().status_at(1_959), KeyStatus::Retiring);
        assert_eq!(keys.find("old").unwrap().status_at(1_960), KeyStatus::Retired);
        assert_eq!(keys.published(1_959).count(), 2);
        assert_eq!(keys.published(1_960).map(|k| k.kid.as_str()).collect::<Vec<_>>(), ["new"]);
        assert!(!keys.retire_expired(1_959));
        assert!(keys.retire_expired(1_960));
        assert_eq!(keys.find("old").unwrap().status, KeyStatus::Retired);
    }

    #[test]
    fn revocation_is_immediate_and_once() {
        let mut keys = TenantKeys { tenant_id: TenantId::parse("t").unwrap(), issuer: "i".into(), keys: vec![record("a", KeyStatus::Active)] };
        assert_eq!(keys.revoke("a", 5), Ok(()));
        assert_eq!(keys.find("a").unwrap().status_at(5), KeyStatus::Revoked);
        assert_eq!(keys.published(5).count(), 0);
        assert_eq!(keys.revoke("a", 6), Err(LifecycleError::AlreadyRevoked));
        assert_eq!(keys.revoke("zzz", 6), Err(LifecycleError::UnknownKid));
    }
}
