//! JWE compact serialization (RFC 7516) for sensitive-flow tokens: `ECDH-ES+A256KW` on P-256
//! (default) and `RSA-OAEP-256` key management with `A256GCM` content encryption, including
//! nested tokens (a JWS inside, `cty: "JWT"`, RFC 7519 §11.2).
//!
//! Built on RustCrypto primitives (`p256`, `rsa`, `aes-kw`, `aes-gcm`); the Concat KDF of RFC
//! 7518 §4.6.2 is the few lines below. [`JwePolicy::PLATFORM`] is what the platform accepts;
//! [`JwePolicy::CONFORMANCE`] adds the neighbouring algorithms the published vectors use, so the
//! same code is checked against them.
//!
//! Every decryption failure is the one [`JweError`]. When the content-encryption key cannot be
//! unwrapped, decryption carries on with a random key and fails at the tag like any other
//! failure, so neither the answer nor the work done tells "wrong key" from "bad tag".

use aes_gcm::AesGcm;
use aes_gcm::aead::consts::U12;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::aes::{Aes128, Aes192, Aes256};
use health_core::{b64url, b64url_decode};
use p256::elliptic_curve::sec1::{FromEncodedPoint, ToEncodedPoint};
use rand_core::{CryptoRng, RngCore};
use rsa::{Oaep, RsaPrivateKey, RsaPublicKey};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// A recipient's public key.
pub enum EncryptionKey {
    P256(p256::PublicKey),
    Rsa(RsaPublicKey),
}

/// A recipient's private key. `P384` and `Aes` exist for the published vectors.
// One key is held at a time, briefly: boxing the RSA variant would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum DecryptionKey {
    P256(p256::SecretKey),
    P384(p384::SecretKey),
    Rsa(RsaPrivateKey),
    /// A key-wrapping key for `A128KW`/`A192KW`/`A256KW`.
    Aes(Vec<u8>),
}

/// The protected header members a recipient acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JweHeader {
    pub alg: String,
    pub enc: String,
    pub kid: Option<String>,
    pub cty: Option<String>,
    pub typ: Option<String>,
    /// The issuer replicated from the encrypted claims (RFC 7519 §5.3), so a recipient can pick
    /// the tenant whose key decrypts it. Integrity-protected, but trusted only once the inner
    /// token's own `iss` is verified to equal it.
    pub iss: Option<String>,
}

/// Protected header members a sender chooses (`alg`, `enc`, `epk` follow from the key).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Protected<'a> {
    pub kid: Option<&'a str>,
    pub cty: Option<&'a str>,
    pub iss: Option<&'a str>,
}

/// Which algorithms [`decrypt`] accepts, and the size cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JwePolicy {
    pub key_algs: &'static [&'static str],
    pub enc_algs: &'static [&'static str],
    pub max_bytes: usize,
}

impl JwePolicy {
    /// What the platform issues and accepts.
    pub const PLATFORM: JwePolicy = JwePolicy {
        key_algs: &["ECDH-ES+A256KW", "RSA-OAEP-256"],
        enc_algs: &["A256GCM"],
        max_bytes: crate::jws::MAX_TOKEN_BYTES,
    };

    /// The platform's algorithms and their neighbours used by RFC 7520 and Wycheproof vectors.
    pub const CONFORMANCE: JwePolicy = JwePolicy {
        key_algs: &[
            "ECDH-ES+A128KW",
            "ECDH-ES+A192KW",
            "ECDH-ES+A256KW",
            "RSA-OAEP",
            "RSA-OAEP-256",
            "A128KW",
            "A192KW",
            "A256KW",
        ],
        enc_algs: &["A128GCM", "A192GCM", "A256GCM"],
        max_bytes: 64 * 1024,
    };
}

/// A decrypted JWE: its header and plaintext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decrypted {
    pub header: JweHeader,
    pub plaintext: Vec<u8>,
}

/// The one decryption (and encryption) error: whatever failed, callers see only this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("JWE could not be decrypted")]
pub struct JweError;

type Result<T> = std::result::Result<T, JweError>;

/// Header as received. Struct deserialization refuses duplicate members.
#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    enc: String,
    kid: Option<String>,
    cty: Option<String>,
    typ: Option<String>,
    iss: Option<String>,
    epk: Option<Epk>,
    apu: Option<String>,
    apv: Option<String>,
    zip: Option<serde_json::Value>,
    crit: Option<serde_json::Value>,
    jku: Option<serde_json::Value>,
    x5u: Option<serde_json::Value>,
    jwk: Option<serde_json::Value>,
    x5c: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Epk {
    kty: String,
    crv: String,
    x: String,
    y: String,
}

struct Parts<'a> {
    protected: &'a str,
    header: RawHeader,
    encrypted_key: Vec<u8>,
    iv: Vec<u8>,
    ciphertext: Vec<u8>,
    tag: Vec<u8>,
}

fn split<'a>(token: &'a str, policy: &JwePolicy) -> Result<Parts<'a>> {
    if token.len() > policy.max_bytes {
        return Err(JweError);
    }
    let mut it = token.split('.');
    let (Some(h), Some(k), Some(i), Some(c), Some(t), None) =
        (it.next(), it.next(), it.next(), it.next(), it.next(), it.next())
    else {
        return Err(JweError);
    };
    // Only key-wrapping algorithms are supported, so the encrypted key is never empty.
    if h.is_empty() || k.is_empty() || i.is_empty() || t.is_empty() {
        return Err(JweError);
    }
    let decode = |part: &str| b64url_decode(part).ok_or(JweError);
    let header: RawHeader = crate::strict_json(&decode(h)?).ok_or(JweError)?;
    let refused = [&header.zip, &header.crit, &header.jku, &header.x5u, &header.jwk, &header.x5c];
    if refused.iter().any(|member| member.is_some())
        || !policy.key_algs.contains(&header.alg.as_str())
        || !policy.enc_algs.contains(&header.enc.as_str())
    {
        return Err(JweError);
    }
    let parts = Parts {
        protected: h,
        header,
        encrypted_key: decode(k)?,
        iv: decode(i)?,
        ciphertext: decode(c)?,
        tag: decode(t)?,
    };
    if parts.iv.len() != 12 || parts.tag.len() != 16 {
        return Err(JweError);
    }
    Ok(parts)
}

fn public_header(raw: &RawHeader) -> JweHeader {
    JweHeader {
        alg: raw.alg.clone(),
        enc: raw.enc.clone(),
        kid: raw.kid.clone(),
        cty: raw.cty.clone(),
        typ: raw.typ.clone(),
        iss: raw.iss.clone(),
    }
}

/// The header of an unverified JWE, only to choose the key by `kid`; nothing in it is trusted.
pub fn peek_header(token: &str, policy: &JwePolicy) -> Result<JweHeader> {
    split(token, policy).map(|parts| public_header(&parts.header))
}

/// Key length in bytes of a content-encryption algorithm.
fn cek_len(enc: &str) -> Option<usize> {
    match enc {
        "A128GCM" => Some(16),
        "A192GCM" => Some(24),
        "A256GCM" => Some(32),
        _ => None,
    }
}

/// Key length in bytes of the AES key wrap in an `*KW` algorithm.
fn kw_len(alg: &str) -> Option<usize> {
    match alg.trim_start_matches("ECDH-ES+") {
        "A128KW" => Some(16),
        "A192KW" => Some(24),
        "A256KW" => Some(32),
        _ => None,
    }
}

/// Decrypts `token` with `key`, which is bound to the key-management algorithm `key_alg` (a
/// key is only ever used with its own algorithm, whatever the header says). Any failure is
/// [`JweError`].
pub fn decrypt_with_key_alg(token: &str, key: &DecryptionKey, key_alg: &str, policy: &JwePolicy) -> Result<Decrypted> {
    let parts = split(token, policy)?;
    if parts.header.alg != key_alg {
        return Err(JweError);
    }
    decrypt_parts(parts, key)
}

/// Decrypts `token` with `key` under `policy`, for keys not bound to one algorithm (prefer
/// [`decrypt_with_key_alg`]). Any failure is [`JweError`].
pub fn decrypt(token: &str, key: &DecryptionKey, policy: &JwePolicy) -> Result<Decrypted> {
    decrypt_parts(split(token, policy)?, key)
}

fn decrypt_parts(parts: Parts<'_>, key: &DecryptionKey) -> Result<Decrypted> {
    let header = &parts.header;
    let cek_len = cek_len(&header.enc).ok_or(JweError)?;
    let alg = header.alg.as_str();
    // Refusals that depend only on public facts (algorithm against key type) may return early.
    let unwrapped = match (key, alg) {
        (DecryptionKey::P256(secret), _) if alg.starts_with("ECDH-ES+") => {
            let epk = header.epk.as_ref().ok_or(JweError)?;
            let public = p256_point(epk)?;
            let z = p256::ecdh::diffie_hellman(secret.to_nonzero_scalar(), public.as_affine());
            unwrap_kw(
                &concat_kdf(z.raw_secret_bytes(), alg, header, kw_len(alg).ok_or(JweError)?)?,
                &parts.encrypted_key,
            )
        }
        (DecryptionKey::P384(secret), _) if alg.starts_with("ECDH-ES+") => {
            let epk = header.epk.as_ref().ok_or(JweError)?;
            let public = p384_point(epk)?;
            let z = p384::ecdh::diffie_hellman(secret.to_nonzero_scalar(), public.as_affine());
            unwrap_kw(
                &concat_kdf(z.raw_secret_bytes(), alg, header, kw_len(alg).ok_or(JweError)?)?,
                &parts.encrypted_key,
            )
        }
        (DecryptionKey::Rsa(private), "RSA-OAEP-256") => {
            private.decrypt(Oaep::new::<Sha256>(), &parts.encrypted_key).ok()
        }
        (DecryptionKey::Rsa(private), "RSA-OAEP") => {
            private.decrypt(Oaep::new::<sha1::Sha1>(), &parts.encrypted_key).ok()
        }
        (DecryptionKey::Aes(kek), "A128KW" | "A192KW" | "A256KW") if Some(kek.len()) == kw_len(alg) => {
            unwrap_kw(kek, &parts.encrypted_key)
        }
        _ => return Err(JweError),
    };
    let cek = match unwrapped {
        Some(cek) if cek.len() == cek_len => cek,
        // Carry on with a key nobody knows: the tag check fails exactly as for a bad tag.
        _ => {
            let mut random = vec![0u8; cek_len];
            rand_core::OsRng.fill_bytes(&mut random);
            random
        }
    };
    let mut sealed = parts.ciphertext.clone();
    sealed.extend_from_slice(&parts.tag);
    let plaintext = gcm(&cek, &parts.iv, parts.protected.as_bytes(), &sealed, false)?;
    Ok(Decrypted { header: public_header(header), plaintext })
}

fn p256_point(epk: &Epk) -> Result<p256::PublicKey> {
    let (x, y) = epk_coordinates(epk, "P-256", 32)?;
    let point = p256::EncodedPoint::from_affine_coordinates(x.as_slice().into(), y.as_slice().into(), false);
    Option::from(p256::PublicKey::from_encoded_point(&point)).ok_or(JweError)
}

fn p384_point(epk: &Epk) -> Result<p384::PublicKey> {
    let (x, y) = epk_coordinates(epk, "P-384", 48)?;
    let point = p384::EncodedPoint::from_affine_coordinates(x.as_slice().into(), y.as_slice().into(), false);
    Option::from(p384::PublicKey::from_encoded_point(&point)).ok_or(JweError)
}

/// The coordinates of an ephemeral key on `curve`; off-curve points are refused by the caller's
/// point decoding (invalid-curve attacks).
fn epk_coordinates(epk: &Epk, curve: &str, len: usize) -> Result<(Vec<u8>, Vec<u8>)> {
    if epk.kty != "EC" || epk.crv != curve {
        return Err(JweError);
    }
    let x = b64url_decode(&epk.x).filter(|x| x.len() == len).ok_or(JweError)?;
    let y = b64url_decode(&epk.y).filter(|y| y.len() == len).ok_or(JweError)?;
    Ok((x, y))
}

/// Concat KDF (NIST SP 800-56A, RFC 7518 §4.6.2) with SHA-256 for key agreement with key
/// wrapping: AlgorithmID is `alg`, keydatalen the wrap key's bits. One round suffices (≤ 256 bits).
fn concat_kdf(z: &[u8], alg: &str, header: &RawHeader, key_len: usize) -> Result<Vec<u8>> {
    let decode_opt = |v: &Option<String>| match v {
        Some(v) => b64url_decode(v).ok_or(JweError),
        None => Ok(Vec::new()),
    };
    let apu = decode_opt(&header.apu)?;
    let apv = decode_opt(&header.apv)?;
    Ok(concat_kdf_raw(z, alg, &apu, &apv, key_len))
}

fn concat_kdf_raw(z: &[u8], alg: &str, apu: &[u8], apv: &[u8], key_len: usize) -> Vec<u8> {
    let with_len = |data: &[u8]| {
        let mut out = u32::try_from(data.len()).unwrap_or(u32::MAX).to_be_bytes().to_vec();
        out.extend_from_slice(data);
        out
    };
    let mut hash = Sha256::new();
    hash.update(1u32.to_be_bytes());
    hash.update(z);
    hash.update(with_len(alg.as_bytes()));
    hash.update(with_len(apu));
    hash.update(with_len(apv));
    hash.update(u32::try_from(key_len * 8).unwrap_or(u32::MAX).to_be_bytes());
    hash.finalize()[..key_len].to_vec()
}

fn unwrap_kw(kek: &[u8], wrapped: &[u8]) -> Option<Vec<u8>> {
    use aes_gcm::aead::generic_array::GenericArray;
    match kek.len() {
        16 => aes_kw::Kek::<Aes128>::new(GenericArray::from_slice(kek)).unwrap_vec(wrapped).ok(),
        24 => aes_kw::Kek::<Aes192>::new(GenericArray::from_slice(kek)).unwrap_vec(wrapped).ok(),
        32 => aes_kw::Kek::<Aes256>::new(GenericArray::from_slice(kek)).unwrap_vec(wrapped).ok(),
        _ => None,
    }
}

fn wrap_kw(kek: &[u8], cek: &[u8]) -> Result<Vec<u8>> {
    use aes_gcm::aead::generic_array::GenericArray;
    match kek.len() {
        16 => aes_kw::Kek::<Aes128>::new(GenericArray::from_slice(kek)).wrap_vec(cek).map_err(|_| JweError),
        24 => aes_kw::Kek::<Aes192>::new(GenericArray::from_slice(kek)).wrap_vec(cek).map_err(|_| JweError),
        32 => aes_kw::Kek::<Aes256>::new(GenericArray::from_slice(kek)).wrap_vec(cek).map_err(|_| JweError),
        _ => Err(JweError),
    }
}

/// AES-GCM with a 96-bit IV over `data` (ciphertext || tag when opening), AAD `aad`.
fn gcm(key: &[u8], iv: &[u8], aad: &[u8], data: &[u8], seal: bool) -> Result<Vec<u8>> {
    fn run<C: KeyInit + Aead + aes_gcm::AeadCore<NonceSize = U12>>(
        key: &[u8],
        iv: &[u8],
        aad: &[u8],
        data: &[u8],
        seal: bool,
    ) -> Result<Vec<u8>> {
        let cipher = C::new_from_slice(key).map_err(|_| JweError)?;
        let nonce = aes_gcm::aead::Nonce::<C>::from_slice(iv);
        let payload = Payload { msg: data, aad };
        if seal { cipher.encrypt(nonce, payload) } else { cipher.decrypt(nonce, payload) }.map_err(|_| JweError)
    }
    if iv.len() != 12 {
        return Err(JweError);
    }
    match key.len() {
        16 => run::<AesGcm<Aes128, U12>>(key, iv, aad, data, seal),
        24 => run::<AesGcm<Aes192, U12>>(key, iv, aad, data, seal),
        32 => run::<AesGcm<Aes256, U12>>(key, iv, aad, data, seal),
        _ => Err(JweError),
    }
}

/// Encrypts `plaintext` to `key`: `ECDH-ES+A256KW` (fresh ephemeral P-256 key) for EC keys,
/// `RSA-OAEP-256` for RSA keys; a fresh 256-bit CEK and 96-bit IV; `A256GCM`.
pub fn encrypt(
    plaintext: &[u8],
    key: &EncryptionKey,
    protected: &Protected<'_>,
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<String> {
    let mut cek = [0u8; 32];
    rng.fill_bytes(&mut cek);
    let mut iv = [0u8; 12];
    rng.fill_bytes(&mut iv);
    let mut header = serde_json::Map::new();
    let encrypted_key = match key {
        EncryptionKey::P256(recipient) => {
            let ephemeral = p256::SecretKey::random(rng);
            let point = ephemeral.public_key().to_encoded_point(false);
            let (x, y) = (point.x().ok_or(JweError)?, point.y().ok_or(JweError)?);
            header.insert("alg".into(), "ECDH-ES+A256KW".into());
            header.insert(
                "epk".into(),
                serde_json::json!({ "kty": "EC", "crv": "P-256", "x": b64url(x), "y": b64url(y) }),
            );
            let z = p256::ecdh::diffie_hellman(ephemeral.to_nonzero_scalar(), recipient.as_affine());
            wrap_kw(&concat_kdf_raw(z.raw_secret_bytes(), "ECDH-ES+A256KW", &[], &[], 32), &cek)?
        }
        EncryptionKey::Rsa(recipient) => {
            header.insert("alg".into(), "RSA-OAEP-256".into());
            recipient.encrypt(rng, Oaep::new::<Sha256>(), &cek).map_err(|_| JweError)?
        }
    };
    header.insert("enc".into(), "A256GCM".into());
    for (name, value) in [("kid", protected.kid), ("cty", protected.cty), ("iss", protected.iss)] {
        if let Some(value) = value {
            header.insert(name.into(), value.into());
        }
    }
    let protected = b64url(serde_json::to_vec(&header).map_err(|_| JweError)?);
    seal(&protected, &encrypted_key, &cek, &iv, plaintext)
}

/// A nested token (RFC 7519 §11.2): the compact JWS `jws` encrypted with `cty: "JWT"`.
pub fn encrypt_nested(
    jws: &str,
    key: &EncryptionKey,
    kid: Option<&str>,
    iss: Option<&str>,
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<String> {
    encrypt(jws.as_bytes(), key, &Protected { kid, cty: Some("JWT"), iss }, rng)
}

/// Content encryption with every input given, so published outputs can be reproduced.
#[doc(hidden)]
pub fn seal(protected_b64: &str, encrypted_key: &[u8], cek: &[u8], iv: &[u8], plaintext: &[u8]) -> Result<String> {
    let sealed = gcm(cek, iv, protected_b64.as_bytes(), plaintext, true)?;
    let (ciphertext, tag) = sealed.split_at(sealed.len() - 16);
    Ok(format!("{protected_b64}.{}.{}.{}.{}", b64url(encrypted_key), b64url(iv), b64url(ciphertext), b64url(tag)))
}

/// `ECDH-ES+A*KW` key wrapping on P-384 with a given ephemeral key (RFC 7520 §5.4 uses it).
#[doc(hidden)]
pub fn wrap_ecdh_p384(
    ephemeral: &p384::SecretKey,
    recipient: &p384::PublicKey,
    alg: &str,
    cek: &[u8],
) -> Result<Vec<u8>> {
    let z = p384::ecdh::diffie_hellman(ephemeral.to_nonzero_scalar(), recipient.as_affine());
    wrap_kw(&concat_kdf_raw(z.raw_secret_bytes(), alg, &[], &[], kw_len(alg).ok_or(JweError)?), cek)
}

#[cfg(test)]
mod tests;
