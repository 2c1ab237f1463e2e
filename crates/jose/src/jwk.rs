//! Public JWKs and the per-tenant key records stored in the `public-keys` store.

use health_core::{TenantId, b64url};
use p256::elliptic_curve::sec1::{FromEncodedPoint, ToEncodedPoint};
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyUse {
    #[default]
    Sig,
    Enc,
}

/// A public JWK as published in a JWK Set (RFC 7517), with the tenant it belongs to: RSA
/// (`n`, `e`), EC P-256 (`crv`, `x`, `y`) or OKP Ed25519 (`crv`, `x`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicJwk {
    pub kty: String,
    pub kid: String,
    #[serde(rename = "use")]
    pub key_use: KeyUse,
    pub alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    pub tenant_id: TenantId,
}

impl PublicJwk {
    /// The algorithm this key is for, if the platform supports it.
    pub fn algorithm(&self) -> Option<Algorithm> {
        Algorithm::parse(&self.alg)
    }

    /// The key as a JWE recipient, if it is an encryption key of a supported algorithm.
    pub fn encryption_key(&self) -> Option<crate::jwe::EncryptionKey> {
        match self.algorithm()? {
            Algorithm::EcdhEsA256kw => self.p256_public_key().map(crate::jwe::EncryptionKey::P256),
            Algorithm::RsaOaep256 => self.rsa_public_key().map(crate::jwe::EncryptionKey::Rsa),
            Algorithm::Rs256 | Algorithm::Es256 | Algorithm::EdDsa => None,
        }
    }

    /// The key as an `rsa` public key (for RSA-OAEP-256), with the same checks as RS256 keys.
    pub fn rsa_public_key(&self) -> Option<RsaPublicKey> {
        let key = self.rs256_key()?;
        let (n, e) = (key.modulus().to_bytes_be(), key.exponent().to_bytes_be());
        RsaPublicKey::new(BigUint::from_bytes_be(&n), BigUint::from_bytes_be(&e)).ok()
    }

    /// The key for RS256 verification: an RSA key of 2048 to 4096 bits with an odd public
    /// exponent, and not one of the weak keys ROCA broke.
    pub(crate) fn rs256_key(&self) -> Option<crate::rs256::VerifyingKey> {
        if self.kty != "RSA" {
            return None;
        }
        let n = health_core::b64url_decode(self.n.as_deref()?)?;
        let e = health_core::b64url_decode(self.e.as_deref()?)?;
        let key = crate::rs256::VerifyingKey::new(&n, &e)?;
        (!roca_fingerprint(key.modulus())).then_some(key)
    }

    /// The P-256 point of an EC key; `None` unless it is a valid point on the curve.
    pub fn p256_public_key(&self) -> Option<p256::PublicKey> {
        if self.kty != "EC" || self.crv.as_deref() != Some("P-256") {
            return None;
        }
        let x = health_core::b64url_decode(self.x.as_deref()?)?;
        let y = health_core::b64url_decode(self.y.as_deref()?)?;
        if x.len() != 32 || y.len() != 32 {
            return None;
        }
        let point = p256::EncodedPoint::from_affine_coordinates(x.as_slice().into(), y.as_slice().into(), false);
        Option::from(p256::PublicKey::from_encoded_point(&point))
    }

    /// The Ed25519 public key of an OKP key.
    pub fn ed25519_public_key(&self) -> Option<ed25519_dalek::VerifyingKey> {
        if self.kty != "OKP" || self.crv.as_deref() != Some("Ed25519") {
            return None;
        }
        let x: [u8; 32] = health_core::b64url_decode(self.x.as_deref()?)?.try_into().ok()?;
        let key = ed25519_dalek::VerifyingKey::from_bytes(&x).ok()?;
        // A small-order point would let forged signatures verify for some messages.
        (!key.is_weak()).then_some(key)
    }

    /// RFC 7638 thumbprint over the required members of this key's type.
    pub fn thumbprint(&self) -> Option<String> {
        use sha2::Digest;
        let canonical = match self.kty.as_str() {
            "RSA" => format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, self.e.as_deref()?, self.n.as_deref()?),
            "EC" => format!(
                r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#,
                self.crv.as_deref()?,
                self.x.as_deref()?,
                self.y.as_deref()?
            ),
            "OKP" => format!(r#"{{"crv":"{}","kty":"OKP","x":"{}"}}"#, self.crv.as_deref()?, self.x.as_deref()?),
            _ => return None,
        };
        Some(b64url(sha2::Sha256::digest(canonical.as_bytes())))
    }
}

/// Whether `n` has the structure of keys from the Infineon library broken by ROCA
/// (CVE-2017-15361): for each small prime p, n mod p lies in the subgroup generated by 65537.
/// A random modulus passes all these tests with negligible probability.
fn roca_fingerprint(n: &num_bigint::BigUint) -> bool {
    const PRIMES: [u32; 38] = [
        3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89, 97, 101, 103, 107,
        109, 113, 127, 131, 137, 139, 149, 151, 157, 163, 167,
    ];
    PRIMES.iter().all(|&p| {
        let residue = (n % p).iter_u32_digits().next().unwrap_or(0);
        let generator = 65_537 % p;
        let mut element = 1u32;
        // Walk the cyclic subgroup <65537> mod p (at most p - 1 steps).
        for _ in 0..p {
            if element == residue {
                return true;
            }
            element = element * generator % p;
            if element == 1 {
                break;
            }
        }
        false
    })
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

    /// Whether the key is older than `max_age_secs` at `now`: an active key that is must be
    /// rotated before it signs or encrypts again (scheduled rotation, ARCHITECTURE.md §5).
    pub fn due_for_rotation(&self, max_age_secs: i64, now: i64) -> bool {
        now.saturating_sub(self.created_at) > max_age_secs
    }
}

impl KeyUse {
    /// Every use a tenant holds an active key for.
    pub const ALL: [KeyUse; 2] = [KeyUse::Sig, KeyUse::Enc];
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

    /// Revokes `kid` like [`Self::revoke`]; if it is the active key of its use, `successor`
    /// (a fresh key of that use) becomes active in the same step, so the tenant is never left
    /// without an active key (no signing, no logins) between a revocation and a rotation.
    /// Returns whether `successor` was taken.
    pub fn revoke_replacing(&mut self, kid: &str, successor: &KeyRecord, now: i64) -> Result<bool, LifecycleError> {
        let key = self.find(kid).ok_or(LifecycleError::UnknownKid)?;
        let replace = key.status == KeyStatus::Active && key.jwk.key_use == successor.jwk.key_use;
        self.revoke(kid, now)?;
        if replace && self.find(&successor.jwk.kid).is_none() {
            self.keys.push(successor.clone());
        }
        Ok(replace)
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

    /// Whether the tenant can sign and encrypt: an active key of every use. A tenant's first
    /// keys (bootstrap) are done when this holds.
    pub fn is_complete(&self) -> bool {
        KeyUse::ALL.iter().all(|&key_use| self.active(key_use).is_some())
    }

    /// The uses a bootstrap must create a key for: those of `set` without an active key, every
    /// use for a tenant without a set.
    pub fn uses_to_create(set: Option<&TenantKeys>) -> Vec<KeyUse> {
        KeyUse::ALL.into_iter().filter(|&key_use| set.is_none_or(|set| set.active(key_use).is_none())).collect()
    }

    /// The algorithm of a requested rotation of the `key_use` key: the one asked for, else the
    /// current active key's, else the platform default. `None` if the one asked for is of the
    /// other use.
    pub fn rotation_algorithm(&self, key_use: KeyUse, requested: Option<Algorithm>) -> Option<Algorithm> {
        let current = self.active(key_use).and_then(|k| k.jwk.algorithm());
        let alg = requested.or(current).unwrap_or_else(|| Algorithm::default_for(key_use));
        (alg.key_use() == key_use).then_some(alg)
    }

    /// Whether revoking `kid` at `now` needs a successor: it does if `kid` is the active key
    /// of its use, so the tenant is never left unable to sign or encrypt.
    pub fn revocation_needs_successor(&self, kid: &str, now: i64) -> Result<bool, LifecycleError> {
        let key = self.find(kid).ok_or(LifecycleError::UnknownKid)?;
        Ok(key.status_at(now) == KeyStatus::Active)
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
    match generate(Algorithm::Rs256, tenant, now, rng)? {
        (PrivateKey::Rsa(private), record) => Ok((private, record)),
        _ => Err(rsa::Error::Internal),
    }
}

/// Generates a key for `alg` (signing or encryption) for `tenant` at time `now`, with an RFC
/// 7638 thumbprint as `kid`.
pub fn generate(
    alg: Algorithm,
    tenant: &TenantId,
    now: i64,
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<(PrivateKey, KeyRecord), rsa::Error> {
    let mut jwk = PublicJwk {
        kty: String::new(),
        kid: String::new(),
        key_use: alg.key_use(),
        alg: alg.as_str().into(),
        n: None,
        e: None,
        crv: None,
        x: None,
        y: None,
        tenant_id: tenant.clone(),
    };
    let private = match alg {
        Algorithm::Rs256 | Algorithm::RsaOaep256 => {
            let private = RsaPrivateKey::new(rng, RSA_BITS)?;
            jwk.kty = "RSA".into();
            jwk.n = Some(b64url(private.n().to_bytes_be()));
            jwk.e = Some(b64url(private.e().to_bytes_be()));
            PrivateKey::Rsa(private)
        }
        Algorithm::Es256 | Algorithm::EcdhEsA256kw => {
            let private = p256::SecretKey::random(rng);
            let point = private.public_key().to_encoded_point(false);
            jwk.kty = "EC".into();
            jwk.crv = Some("P-256".into());
            jwk.x = point.x().map(b64url);
            jwk.y = point.y().map(b64url);
            PrivateKey::P256(private)
        }
        Algorithm::EdDsa => {
            let private = ed25519_dalek::SigningKey::generate(rng);
            jwk.kty = "OKP".into();
            jwk.crv = Some("Ed25519".into());
            jwk.x = Some(b64url(private.verifying_key().as_bytes()));
            PrivateKey::Ed25519(Box::new(private))
        }
    };
    jwk.kid = jwk.thumbprint().ok_or(rsa::Error::Internal)?;
    Ok((private, KeyRecord { jwk, status: KeyStatus::Active, created_at: now, not_after: None }))
}

/// The algorithms the platform issues keys for. The algorithm belongs to the key: a token's
/// header may only repeat it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Algorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256, 2048-bit keys (default for signing).
    #[serde(rename = "RS256")]
    Rs256,
    /// ECDSA on P-256 with SHA-256.
    #[serde(rename = "ES256")]
    Es256,
    /// Ed25519.
    #[serde(rename = "EdDSA")]
    EdDsa,
    /// ECDH-ES on P-256 with AES-256 key wrap (default for encryption).
    #[serde(rename = "ECDH-ES+A256KW")]
    EcdhEsA256kw,
    /// RSA-OAEP with SHA-256, for interoperability.
    #[serde(rename = "RSA-OAEP-256")]
    RsaOaep256,
}

impl Algorithm {
    pub const ALL: [Algorithm; 5] =
        [Algorithm::Rs256, Algorithm::Es256, Algorithm::EdDsa, Algorithm::EcdhEsA256kw, Algorithm::RsaOaep256];

    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Rs256 => "RS256",
            Algorithm::Es256 => "ES256",
            Algorithm::EdDsa => "EdDSA",
            Algorithm::EcdhEsA256kw => "ECDH-ES+A256KW",
            Algorithm::RsaOaep256 => "RSA-OAEP-256",
        }
    }

    /// The exact (case-sensitive, RFC 7518) name; anything else is unsupported.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == name)
    }

    pub fn key_use(self) -> KeyUse {
        match self {
            Algorithm::Rs256 | Algorithm::Es256 | Algorithm::EdDsa => KeyUse::Sig,
            Algorithm::EcdhEsA256kw | Algorithm::RsaOaep256 => KeyUse::Enc,
        }
    }

    /// The algorithm a tenant gets for `key_use` unless it chooses another.
    pub fn default_for(key_use: KeyUse) -> Self {
        match key_use {
            KeyUse::Sig => Algorithm::Rs256,
            KeyUse::Enc => Algorithm::EcdhEsA256kw,
        }
    }
}

/// A private key as held, only ever, inside `jwks`.
// One key is held at a time, briefly: boxing the RSA variant would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum PrivateKey {
    Rsa(RsaPrivateKey),
    P256(p256::SecretKey),
    Ed25519(Box<ed25519_dalek::SigningKey>),
}

impl PrivateKey {
    /// PKCS#8 DER, for sealing under `master_key`.
    pub fn to_pkcs8_der(&self) -> Option<Vec<u8>> {
        use p256::pkcs8::EncodePrivateKey;
        let der = match self {
            PrivateKey::Rsa(key) => key.to_pkcs8_der().ok()?,
            PrivateKey::P256(key) => key.to_pkcs8_der().ok()?,
            // RFC 8410 v1 (no embedded public key): what every PKCS#8 reader takes.
            PrivateKey::Ed25519(key) => {
                ed25519_dalek::pkcs8::KeypairBytes { secret_key: key.to_bytes(), public_key: None }
                    .to_pkcs8_der()
                    .ok()?
            }
        };
        Some(der.as_bytes().to_vec())
    }

    /// Decodes PKCS#8 DER for a key of algorithm `alg`.
    pub fn from_pkcs8_der(alg: Algorithm, der: &[u8]) -> Option<Self> {
        use p256::pkcs8::DecodePrivateKey;
        Some(match alg {
            Algorithm::Rs256 | Algorithm::RsaOaep256 => PrivateKey::Rsa(RsaPrivateKey::from_pkcs8_der(der).ok()?),
            Algorithm::Es256 | Algorithm::EcdhEsA256kw => PrivateKey::P256(p256_from_pkcs8(der)?),
            Algorithm::EdDsa => PrivateKey::Ed25519(Box::new(ed25519_dalek::SigningKey::from_pkcs8_der(der).ok()?)),
        })
    }
}

/// A P-256 private key from PKCS#8 without `p256`'s check that the embedded public key matches
/// the scalar: that check is a full scalar multiplication (about a millisecond in Wasm) on every
/// signing or decryption, and it guards against corruption that the AES-GCM seal around every
/// stored private key already rules out. The algorithm and curve are still checked.
fn p256_from_pkcs8(der: &[u8]) -> Option<p256::SecretKey> {
    use p256::pkcs8::AssociatedOid;
    let info = p256::pkcs8::PrivateKeyInfo::try_from(der).ok()?;
    let curve_ok = info.algorithm.oid == p256::elliptic_curve::ALGORITHM_OID
        && info.algorithm.parameters_oid().ok() == Some(p256::NistP256::OID);
    if !curve_ok {
        return None;
    }
    let ec = sec1::EcPrivateKey::try_from(info.private_key).ok()?;
    p256::SecretKey::from_slice(ec.private_key).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::SeedableRng;

    #[test]
    fn p256_keys_parse_from_pkcs8_as_the_validating_parser_does() {
        use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey};
        let key = p256::SecretKey::random(&mut rand_chacha::ChaCha20Rng::seed_from_u64(3));
        let der = key.to_pkcs8_der().unwrap();
        let parsed = p256_from_pkcs8(der.as_bytes()).unwrap();
        assert_eq!(parsed.to_bytes(), p256::SecretKey::from_pkcs8_der(der.as_bytes()).unwrap().to_bytes());
        // Another curve's or algorithm's key is refused.
        let p384 = p384::SecretKey::random(&mut rand_chacha::ChaCha20Rng::seed_from_u64(3)).to_pkcs8_der().unwrap();
        assert!(p256_from_pkcs8(p384.as_bytes()).is_none());
        let ed = ed25519_dalek::SigningKey::from_bytes(&[5; 32]);
        assert!(
            p256_from_pkcs8(ed25519_dalek::pkcs8::EncodePrivateKey::to_pkcs8_der(&ed).unwrap().as_bytes()).is_none()
        );
        assert!(p256_from_pkcs8(b"not der").is_none());
    }

    #[test]
    fn generated_keys_do_not_carry_the_roca_fingerprint() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
        let (private, _) = generate_rs256(&TenantId::parse("t").unwrap(), 0, &mut rng).unwrap();
        assert!(!roca_fingerprint(&num_bigint::BigUint::from_bytes_be(&private.n().to_bytes_be())));
    }

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

    #[test]
    fn revoking_the_active_key_activates_its_successor_in_the_same_step() {
        let mut keys = TenantKeys {
            tenant_id: TenantId::parse("t").unwrap(),
            issuer: "i".into(),
            keys: vec![record("old", KeyStatus::Retiring), record("live", KeyStatus::Active)],
        };
        assert_eq!(keys.revoke_replacing("live", &record("next", KeyStatus::Active), 5), Ok(true));
        assert_eq!(keys.active(KeyUse::Sig).unwrap().jwk.kid, "next");
        assert_eq!(keys.find("live").unwrap().status, KeyStatus::Revoked);
        // A key that is not active is revoked without a successor.
        assert_eq!(keys.revoke_replacing("old", &record("unused", KeyStatus::Active), 6), Ok(false));
        assert!(keys.find("unused").is_none());
        assert_eq!(
            keys.revoke_replacing("live", &record("x", KeyStatus::Active), 7),
            Err(LifecycleError::AlreadyRevoked)
        );
    }

    fn record(kid: &str, status: KeyStatus) -> KeyRecord {
        KeyRecord {
            jwk: PublicJwk {
                kty: "RSA".into(),
                kid: kid.into(),
                key_use: KeyUse::Sig,
                alg: "RS256".into(),
                n: Some("AQAB".into()),
                e: Some("AQAB".into()),
                crv: None,
                x: None,
                y: None,
                tenant_id: TenantId::parse("t").unwrap(),
            },
            status,
            created_at: 0,
            not_after: None,
        }
    }

    #[test]
    fn rotation_moves_active_to_retiring_then_retired_with_a_fixed_clock() {
        let mut keys = TenantKeys {
            tenant_id: TenantId::parse("t").unwrap(),
            issuer: "i".into(),
            keys: vec![record("old", KeyStatus::Active)],
        };
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
    fn a_key_is_due_for_rotation_only_once_older_than_the_maximum_age() {
        let key = KeyRecord { created_at: 1_000, ..record("a", KeyStatus::Active) };
        assert!(!key.due_for_rotation(86_400, 1_000));
        assert!(!key.due_for_rotation(86_400, 87_400));
        assert!(key.due_for_rotation(86_400, 87_401));
        // A clock behind the key's creation never makes it due; a huge age does not overflow.
        assert!(!key.due_for_rotation(0, 0));
        assert!(!key.due_for_rotation(i64::MAX, i64::MAX));
        assert!(KeyRecord { created_at: i64::MIN, ..key }.due_for_rotation(i64::MAX - 1, i64::MAX));
    }

    #[test]
    fn a_rotation_keeps_the_current_algorithm_unless_another_of_the_same_use_is_asked_for() {
        let keys = TenantKeys {
            tenant_id: TenantId::parse("t").unwrap(),
            issuer: "i".into(),
            keys: vec![KeyRecord {
                jwk: PublicJwk { alg: "ES256".into(), ..record("a", KeyStatus::Active).jwk },
                ..record("a", KeyStatus::Active)
            }],
        };
        assert_eq!(keys.rotation_algorithm(KeyUse::Sig, None), Some(Algorithm::Es256));
        assert_eq!(keys.rotation_algorithm(KeyUse::Sig, Some(Algorithm::EdDsa)), Some(Algorithm::EdDsa));
        assert_eq!(keys.rotation_algorithm(KeyUse::Enc, None), Some(Algorithm::default_for(KeyUse::Enc)));
        assert_eq!(keys.rotation_algorithm(KeyUse::Enc, Some(Algorithm::Rs256)), None);
        assert_eq!(keys.rotation_algorithm(KeyUse::Sig, Some(Algorithm::RsaOaep256)), None);
    }

    #[test]
    fn a_set_is_complete_with_an_active_key_of_each_use() {
        let mut keys = TenantKeys {
            tenant_id: TenantId::parse("t").unwrap(),
            issuer: "i".into(),
            keys: vec![record("a", KeyStatus::Active)],
        };
        assert!(!keys.is_complete());
        assert_eq!(TenantKeys::uses_to_create(Some(&keys)), [KeyUse::Enc]);
        let enc = record("e", KeyStatus::Active);
        keys.keys.push(KeyRecord { jwk: PublicJwk { key_use: KeyUse::Enc, ..enc.jwk }, ..enc });
        assert!(keys.is_complete());
        keys.revoke("a", 1).unwrap();
        assert!(!keys.is_complete());
        assert_eq!(TenantKeys::uses_to_create(Some(&keys)), [KeyUse::Sig]);
    }

    #[test]
    fn revocation_is_immediate_and_once() {
        let mut keys = TenantKeys {
            tenant_id: TenantId::parse("t").unwrap(),
            issuer: "i".into(),
            keys: vec![record("a", KeyStatus::Active)],
        };
        assert_eq!(keys.revoke("a", 5), Ok(()));
        assert_eq!(keys.find("a").unwrap().status_at(5), KeyStatus::Revoked);
        assert_eq!(keys.published(5).count(), 0);
        assert_eq!(keys.revoke("a", 6), Err(LifecycleError::AlreadyRevoked));
        assert_eq!(keys.revoke("zzz", 6), Err(LifecycleError::UnknownKid));
    }
}
