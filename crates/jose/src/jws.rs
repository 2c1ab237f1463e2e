//! JWS access tokens (RS256, ES256, EdDSA): issuance, and verification in the fixed order of ARCHITECTURE.md §4.
//! Every step's failure is a distinct [`Error`] variant for the audit log; the gateway maps
//! all of them to one generic 401.

use health_core::{Reason, TenantId, b64url, b64url_decode};
use rand_core::{CryptoRng, RngCore};
use rsa::RsaPrivateKey;
use rsa::pkcs1v15::SigningKey;
use rsa::signature::{RandomizedSigner, SignatureEncoding, Signer, Verifier};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::{ACCESS_TOKEN_TYP, Algorithm, KeyStatus, KeyUse, PrivateKey, PublicJwk, TenantKeys};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("token larger than the size cap")]
    TooLarge,
    #[error("token is not a three-part compact JWS")]
    Malformed,
    #[error("token header is not valid JSON of the expected shape")]
    BadHeader,
    #[error("token header carries crit")]
    CriticalHeader,
    #[error("token header names an embedded or remote key source ({0})")]
    EmbeddedKey(&'static str),
    #[error("token header has no kid")]
    MissingKid,
    #[error("kid not in the tenant's key set")]
    UnknownKid,
    #[error("header alg does not match the key's algorithm")]
    AlgorithmMismatch,
    #[error("signature invalid")]
    BadSignature,
    #[error("claims are not valid JSON of the expected shape")]
    BadClaims,
    #[error("required claim {0} missing")]
    MissingClaim(&'static str),
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("token issued in the future")]
    IssuedInFuture,
    #[error("token lifetime exceeds the cap")]
    LifetimeTooLong,
    #[error("typ is not at+jwt")]
    WrongType,
    #[error("issuer does not match the tenant")]
    WrongIssuer,
    #[error("audience not accepted")]
    WrongAudience,
    #[error("tenant_id does not match the key's tenant")]
    TenantMismatch,
    #[error("key retired")]
    KeyRetired,
    #[error("key revoked")]
    KeyRevoked,
    #[error("signing failed")]
    Signing,
}

impl Error {
    /// The reason audit events record (`health_core::Reason`).
    pub fn reason(&self) -> Reason {
        match self {
            Error::TooLarge => Reason::TokenTooLarge,
            Error::Malformed => Reason::MalformedToken,
            Error::BadHeader => Reason::BadHeader,
            Error::CriticalHeader => Reason::CritHeader,
            Error::EmbeddedKey(_) => Reason::EmbeddedKey,
            Error::MissingKid => Reason::MissingKid,
            Error::UnknownKid => Reason::UnknownKid,
            Error::AlgorithmMismatch => Reason::AlgMismatch,
            Error::BadSignature => Reason::BadSignature,
            Error::BadClaims => Reason::BadClaims,
            Error::MissingClaim(_) => Reason::MissingClaim,
            Error::Expired => Reason::Expired,
            Error::NotYetValid => Reason::NotYetValid,
            Error::IssuedInFuture => Reason::IssuedInFuture,
            Error::LifetimeTooLong => Reason::LifetimeTooLong,
            Error::WrongType => Reason::WrongTyp,
            Error::WrongIssuer => Reason::WrongIssuer,
            Error::WrongAudience => Reason::WrongAudience,
            Error::TenantMismatch => Reason::TenantMismatch,
            Error::KeyRetired => Reason::KeyRetired,
            Error::KeyRevoked => Reason::KeyRevoked,
            Error::Signing => Reason::SigningFailed,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Access-token claims (ARCHITECTURE.md §4, RFC 9068 §2.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
    pub jti: String,
    pub tenant_id: TenantId,
    pub role: String,
    pub scope: String,
    pub client_id: String,
    pub amr: Vec<String>,
    pub auth_time: i64,
    /// A registered insurer client's public encryption key, bound into its token by `auth` at
    /// issuance, so what the platform returns to it (a summary) is encrypted to that key without
    /// the role service reading the identity database. Absent on every other token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enc_jwk: Option<PublicJwk>,
}

/// The most clock tolerance any verifier allows, in seconds, whatever is configured; a retiring
/// key outlives the longest token by this much.
pub const MAX_CLOCK_TOLERANCE_SECS: i64 = 60;

/// The largest compact token (JWS or nested JWE) the platform issues or accepts, in bytes.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyOptions {
    /// Accepted `aud` value.
    pub audience: String,
    /// Clock tolerance in seconds; capped at [`MAX_CLOCK_TOLERANCE_SECS`] whatever is configured.
    pub tolerance_secs: i64,
    /// Largest accepted `exp - iat`.
    pub max_lifetime_secs: i64,
    /// Size cap on the whole compact token.
    pub max_token_bytes: usize,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        Self {
            audience: "health-platform".into(),
            tolerance_secs: MAX_CLOCK_TOLERANCE_SECS,
            max_lifetime_secs: 900,
            max_token_bytes: MAX_TOKEN_BYTES,
        }
    }
}

#[derive(Deserialize)]
struct Header {
    alg: Option<String>,
    typ: Option<String>,
    kid: Option<String>,
    crit: Option<serde_json::Value>,
    jku: Option<serde_json::Value>,
    x5u: Option<serde_json::Value>,
    jwk: Option<serde_json::Value>,
    x5c: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

/// Claims as found in an unverified payload: everything optional so absence is reported precisely.
/// Struct deserialization refuses duplicate members, so `{"sub":"a","sub":"b"}` is malformed.
#[derive(Deserialize)]
struct RawClaims {
    iss: Option<String>,
    sub: Option<String>,
    aud: Option<Audience>,
    exp: Option<i64>,
    iat: Option<i64>,
    nbf: Option<i64>,
    jti: Option<String>,
    tenant_id: Option<String>,
    role: Option<String>,
    scope: Option<String>,
    client_id: Option<String>,
    amr: Option<Vec<String>>,
    auth_time: Option<i64>,
    enc_jwk: Option<PublicJwk>,
}

struct Parts<'a> {
    signing_input: &'a str,
    header: Header,
    payload: Vec<u8>,
    signature: Vec<u8>,
}

fn split<'a>(token: &'a str, opts: &VerifyOptions) -> Result<Parts<'a>> {
    if token.len() > opts.max_token_bytes {
        return Err(Error::TooLarge);
    }
    let mut it = token.split('.');
    let (Some(h), Some(p), Some(s), None) = (it.next(), it.next(), it.next(), it.next()) else {
        return Err(Error::Malformed);
    };
    if h.is_empty() || p.is_empty() || s.is_empty() {
        return Err(Error::Malformed);
    }
    let header_bytes = b64url_decode(h).ok_or(Error::Malformed)?;
    let payload = b64url_decode(p).ok_or(Error::Malformed)?;
    let signature = b64url_decode(s).ok_or(Error::Malformed)?;
    let header: Header = crate::strict_json(&header_bytes).ok_or(Error::BadHeader)?;
    Ok(Parts { signing_input: &token[..h.len() + 1 + p.len()], header, payload, signature })
}

/// Reads `tenant_id` from an unverified token, only to pick which tenant's key set to verify
/// against. Nothing else may be trusted before [`verify`] succeeds.
pub fn peek_tenant(token: &str, opts: &VerifyOptions) -> Result<TenantId> {
    let parts = split(token, opts)?;
    let raw: RawClaims = crate::strict_json(&parts.payload).ok_or(Error::BadClaims)?;
    let tenant = raw.tenant_id.ok_or(Error::MissingClaim("tenant_id"))?;
    TenantId::parse(&tenant).map_err(|_| Error::BadClaims)
}

/// Steps one to five of the order: size, parts, header, `kid` within the tenant's set, and the
/// signature under the key's own algorithm. Returns the payload bytes, trusted from here on but
/// not yet checked as claims (exposed for vector tests and nested tokens).
pub fn verify_signature(token: &str, keys: &TenantKeys, opts: &VerifyOptions) -> Result<Vec<u8>> {
    verify_signature_parts(token, keys, opts).map(|(parts, _)| parts.payload)
}

fn verify_signature_parts<'a, 'k>(
    token: &'a str,
    keys: &'k TenantKeys,
    opts: &VerifyOptions,
) -> Result<(Parts<'a>, &'k crate::KeyRecord)> {
    let parts = split(token, opts)?;
    let header = &parts.header;
    if header.crit.is_some() {
        return Err(Error::CriticalHeader);
    }
    for (name, present) in [
        ("jku", header.jku.is_some()),
        ("x5u", header.x5u.is_some()),
        ("jwk", header.jwk.is_some()),
        ("x5c", header.x5c.is_some()),
    ] {
        if present {
            return Err(Error::EmbeddedKey(name));
        }
    }
    let kid = header.kid.as_deref().ok_or(Error::MissingKid)?;
    let record = keys.find(kid).filter(|k| k.jwk.key_use == KeyUse::Sig).ok_or(Error::UnknownKid)?;
    // The algorithm is the key's; a header naming another one (none, HS256, ...) is refused.
    let alg = record.jwk.algorithm().filter(|a| a.key_use() == KeyUse::Sig).ok_or(Error::AlgorithmMismatch)?;
    if header.alg.as_deref() != Some(alg.as_str()) {
        return Err(Error::AlgorithmMismatch);
    }
    verify_with(&record.jwk, alg, parts.signing_input.as_bytes(), &parts.signature)?;
    Ok((parts, record))
}

/// Verifies `token` against `keys` at time `now`, in the fixed order of ARCHITECTURE.md §4:
/// size → parts → header (no `crit`, no embedded key sources) → `kid` in the tenant's set →
/// signature with the key's own algorithm → required claims and times → `typ` → issuer and
/// tenant binding → key status. Revocation by `jti` and per-subject not-before need stores and
/// are the caller's next step.
pub fn verify(token: &str, keys: &TenantKeys, now: i64, opts: &VerifyOptions) -> Result<Claims> {
    verify_keyed(token, keys, now, opts).map(|(claims, _)| claims)
}

/// [`verify`], also returning the `kid` of the key that verified the token (for [`recheck`]).
pub fn verify_keyed(token: &str, keys: &TenantKeys, now: i64, opts: &VerifyOptions) -> Result<(Claims, String)> {
    let (parts, record) = verify_signature_parts(token, keys, opts)?;
    let header = &parts.header;
    let raw: RawClaims = crate::strict_json(&parts.payload).ok_or(Error::BadClaims)?;
    let exp = raw.exp.ok_or(Error::MissingClaim("exp"))?;
    let iat = raw.iat.ok_or(Error::MissingClaim("iat"))?;
    let iss = raw.iss.ok_or(Error::MissingClaim("iss"))?;
    let aud = raw.aud.ok_or(Error::MissingClaim("aud"))?;
    let jti = raw.jti.filter(|j| !j.is_empty()).ok_or(Error::MissingClaim("jti"))?;
    let tenant_id = raw.tenant_id.ok_or(Error::MissingClaim("tenant_id"))?;
    let sub = raw.sub.filter(|s| !s.is_empty()).ok_or(Error::MissingClaim("sub"))?;

    check_times(exp, iat, raw.nbf, now, opts)?;
    if exp.saturating_sub(iat) > opts.max_lifetime_secs || exp < iat {
        return Err(Error::LifetimeTooLong);
    }
    let audience_ok = match &aud {
        Audience::One(a) => *a == opts.audience,
        Audience::Many(all) => all.contains(&opts.audience),
    };

    if !header.typ.as_deref().is_some_and(crate::is_access_token_typ) {
        return Err(Error::WrongType);
    }
    if !audience_ok {
        return Err(Error::WrongAudience);
    }
    if tenant_id != keys.tenant_id.as_str() || record.jwk.tenant_id != keys.tenant_id {
        return Err(Error::TenantMismatch);
    }
    if iss != keys.issuer {
        return Err(Error::WrongIssuer);
    }
    check_key_status(record, now)?;
    let claims = Claims {
        iss,
        sub,
        aud: opts.audience.clone(),
        exp,
        iat,
        nbf: raw.nbf.unwrap_or(iat),
        jti,
        tenant_id: keys.tenant_id.clone(),
        role: raw.role.ok_or(Error::MissingClaim("role"))?,
        scope: raw.scope.unwrap_or_default(),
        client_id: raw.client_id.unwrap_or_default(),
        amr: raw.amr.unwrap_or_default(),
        auth_time: raw.auth_time.unwrap_or(iat),
        enc_jwk: raw.enc_jwk,
    };
    Ok((claims, record.jwk.kid.clone()))
}

/// Re-checks, at `now`, a token that [`verify_keyed`] accepted earlier with key `kid`: what
/// can change since (the clock, and the key's status in the tenant's current set: a retired,
/// revoked or removed key refuses it at once). What cannot change (signature, `typ`,
/// audience, issuer and tenant binding) is not re-done; the caller must be sure `claims` are
/// exactly what `verify_keyed` returned for this token (e.g. cached under the token's hash).
pub fn recheck(claims: &Claims, kid: &str, keys: &TenantKeys, now: i64, opts: &VerifyOptions) -> Result<()> {
    check_times(claims.exp, claims.iat, Some(claims.nbf), now, opts)?;
    let record = keys.find(kid).filter(|k| k.jwk.key_use == KeyUse::Sig).ok_or(Error::UnknownKid)?;
    if claims.tenant_id != keys.tenant_id || record.jwk.tenant_id != keys.tenant_id || claims.iss != keys.issuer {
        return Err(Error::TenantMismatch);
    }
    check_key_status(record, now)
}

fn check_times(exp: i64, iat: i64, nbf: Option<i64>, now: i64, opts: &VerifyOptions) -> Result<()> {
    let tolerance = opts.tolerance_secs.clamp(0, MAX_CLOCK_TOLERANCE_SECS);
    if now.saturating_sub(tolerance) >= exp {
        return Err(Error::Expired);
    }
    if iat > now.saturating_add(tolerance) {
        return Err(Error::IssuedInFuture);
    }
    if nbf.is_some_and(|nbf| nbf > now.saturating_add(tolerance)) {
        return Err(Error::NotYetValid);
    }
    Ok(())
}

fn check_key_status(record: &crate::KeyRecord, now: i64) -> Result<()> {
    match record.status_at(now) {
        KeyStatus::Active | KeyStatus::Retiring => Ok(()),
        KeyStatus::Retired => Err(Error::KeyRetired),
        KeyStatus::Revoked => Err(Error::KeyRevoked),
    }
}

/// Checks `signature` over `input` with the public key of `jwk` under `alg`.
fn verify_with(jwk: &PublicJwk, alg: Algorithm, input: &[u8], signature: &[u8]) -> Result<()> {
    match alg {
        Algorithm::Rs256 => {
            let key = jwk.rs256_key().ok_or(Error::UnknownKid)?;
            if key.verify(input, signature) { Ok(()) } else { Err(Error::BadSignature) }
        }
        Algorithm::Es256 => {
            let key = p256::ecdsa::VerifyingKey::from(jwk.p256_public_key().ok_or(Error::UnknownKid)?);
            // JWS ES256 signatures are the fixed 64-byte r || s (RFC 7518 §3.4), never DER.
            let signature = p256::ecdsa::Signature::from_slice(signature).map_err(|_| Error::BadSignature)?;
            key.verify(input, &signature).map_err(|_| Error::BadSignature)
        }
        Algorithm::EdDsa => {
            let key = jwk.ed25519_public_key().ok_or(Error::UnknownKid)?;
            let signature = ed25519_dalek::Signature::from_slice(signature).map_err(|_| Error::BadSignature)?;
            key.verify_strict(input, &signature).map_err(|_| Error::BadSignature)
        }
        Algorithm::EcdhEsA256kw | Algorithm::RsaOaep256 => Err(Error::AlgorithmMismatch),
    }
}

/// Signs `claims` as an RS256 access token with header `{"alg":"RS256","typ":"at+jwt","kid"}`.
pub fn sign_rs256(
    key: &RsaPrivateKey,
    kid: &str,
    claims: &Claims,
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<String> {
    sign(&PrivateKey::Rsa(key.clone()), Algorithm::Rs256, kid, claims, rng)
}

/// Signs `claims` as an access token with header `{"alg","typ":"at+jwt","kid"}` under the
/// signing algorithm `alg` of `key`. RSA signing is blinded (randomized) so private-key timing
/// does not leak; ECDSA nonces are deterministic (RFC 6979).
pub fn sign(
    key: &PrivateKey,
    alg: Algorithm,
    kid: &str,
    claims: &Claims,
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<String> {
    let header = serde_json::json!({ "alg": alg.as_str(), "typ": ACCESS_TOKEN_TYP, "kid": kid });
    let header = serde_json::to_vec(&header).map_err(|_| Error::Signing)?;
    let payload = serde_json::to_vec(claims).map_err(|_| Error::Signing)?;
    let signing_input = format!("{}.{}", b64url(header), b64url(payload));
    let signature = sign_bytes(key, alg, signing_input.as_bytes(), rng)?;
    Ok(format!("{signing_input}.{}", b64url(signature)))
}

/// The raw JWS signature of `input` under `alg`.
pub fn sign_bytes(
    key: &PrivateKey,
    alg: Algorithm,
    input: &[u8],
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<Vec<u8>> {
    Ok(match (alg, key) {
        (Algorithm::Rs256, PrivateKey::Rsa(key)) => {
            SigningKey::<Sha256>::new(key.clone()).try_sign_with_rng(rng, input).map_err(|_| Error::Signing)?.to_vec()
        }
        (Algorithm::Es256, PrivateKey::P256(key)) => {
            let signature: p256::ecdsa::Signature =
                p256::ecdsa::SigningKey::from(key).try_sign(input).map_err(|_| Error::Signing)?;
            signature.to_bytes().to_vec()
        }
        (Algorithm::EdDsa, PrivateKey::Ed25519(key)) => {
            use ed25519_dalek::Signer;
            key.sign(input).to_bytes().to_vec()
        }
        _ => return Err(Error::Signing),
    })
}

#[cfg(test)]
mod tests;
