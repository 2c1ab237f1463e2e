//! OAuth client authentication at the token, introspection and revocation endpoints: HTTP
//! Basic or form `client_secret` (RFC 6749 §2.3.1) and `private_key_jwt` (RFC 7523 §2.2, OIDC
//! Core §9); and the public JWKs a client registers (its encryption key, and its signing key
//! for `private_key_jwt`).

use std::collections::BTreeMap;

use health_core::TenantId;
use health_jose::{Algorithm, KeyRecord, KeyStatus, KeyUse, PublicJwk, TenantKeys, VerifyOptions};
use serde::Deserialize;

/// `client_assertion_type` of a JWT client assertion.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Longest accepted assertion lifetime: an assertion is a one-time proof, not a credential.
pub const MAX_ASSERTION_SECS: i64 = 300;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientAuthError {
    #[error("more than one client authentication method")]
    Ambiguous,
    #[error("malformed client credentials")]
    Malformed,
    #[error("no client authentication")]
    Missing,
}

/// How a request authenticated its client, before any credential is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientAuth {
    Secret {
        client_id: String,
        secret: String,
    },
    Assertion {
        client_id: Option<String>,
        assertion: String,
    },
    /// A public client naming itself (no credential).
    Public {
        client_id: String,
    },
}

impl ClientAuth {
    /// The client the request claims to be, if it says.
    pub fn claimed_id(&self) -> Option<&str> {
        match self {
            ClientAuth::Secret { client_id, .. } | ClientAuth::Public { client_id } => Some(client_id),
            ClientAuth::Assertion { client_id, .. } => client_id.as_deref(),
        }
    }
}

fn basic(value: &str) -> Result<(String, String), ClientAuthError> {
    let (scheme, encoded) = value.split_once(' ').ok_or(ClientAuthError::Malformed)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(ClientAuthError::Malformed);
    }
    let decoded = base64_decode(encoded.trim()).ok_or(ClientAuthError::Malformed)?;
    let text = String::from_utf8(decoded).map_err(|_| ClientAuthError::Malformed)?;
    let (id, secret) = text.split_once(':').ok_or(ClientAuthError::Malformed)?;
    // RFC 6749 §2.3.1: both halves are form-urlencoded before Basic encoding.
    let unescape = |s: &str| -> String {
        form_urlencoded::parse(format!("x={s}").as_bytes()).next().map(|(_, v)| v.into_owned()).unwrap_or_default()
    };
    let (id, secret) = (unescape(id), unescape(secret));
    if id.is_empty() || secret.is_empty() {
        return Err(ClientAuthError::Malformed);
    }
    Ok((id, secret))
}

/// Standard base64 with padding, as HTTP Basic uses.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

/// Reads the client authentication of a request from its `Authorization` header and form
/// parameters. Exactly one method may be used (RFC 6749 §2.3).
pub fn from_request(
    authorization: Option<&str>,
    form: &BTreeMap<String, String>,
) -> Result<ClientAuth, ClientAuthError> {
    let form_id = form.get("client_id").cloned();
    let form_secret = form.get("client_secret").cloned();
    let assertion = form.get("client_assertion").cloned();
    let assertion_type = form.get("client_assertion_type");
    let methods =
        usize::from(authorization.is_some()) + usize::from(form_secret.is_some()) + usize::from(assertion.is_some());
    if methods > 1 {
        return Err(ClientAuthError::Ambiguous);
    }
    if let Some(header) = authorization {
        let (client_id, secret) = basic(header)?;
        if form_id.as_ref().is_some_and(|f| *f != client_id) {
            return Err(ClientAuthError::Malformed);
        }
        return Ok(ClientAuth::Secret { client_id, secret });
    }
    if let Some(secret) = form_secret {
        let client_id = form_id.ok_or(ClientAuthError::Malformed)?;
        return Ok(ClientAuth::Secret { client_id, secret });
    }
    if let Some(assertion) = assertion {
        if assertion_type.map(String::as_str) != Some(JWT_BEARER) {
            return Err(ClientAuthError::Malformed);
        }
        return Ok(ClientAuth::Assertion { client_id: form_id, assertion });
    }
    form_id.map(|client_id| ClientAuth::Public { client_id }).ok_or(ClientAuthError::Missing)
}

/// A JWK as a client sends it at registration: public members only.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmittedJwk {
    pub kty: String,
    #[serde(default)]
    pub crv: Option<String>,
    #[serde(default)]
    pub x: Option<String>,
    #[serde(default)]
    pub y: Option<String>,
    #[serde(default)]
    pub n: Option<String>,
    #[serde(default)]
    pub e: Option<String>,
    #[serde(default)]
    pub alg: Option<String>,
    #[serde(default, rename = "use")]
    pub key_use: Option<String>,
    #[serde(default)]
    pub kid: Option<String>,
    #[serde(default)]
    pub key_ops: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JwkError {
    #[error("the key is not a public P-256, RSA (2048 bits or more) or Ed25519 key usable for this purpose")]
    Unusable,
    #[error("the key's alg or use does not fit this purpose")]
    WrongPurpose,
}

/// Checks a submitted public key for `key_use` and returns it as a platform JWK of `tenant`,
/// with `alg` settled (the submitted one, or the default for its type) and `kid` its RFC 7638
/// thumbprint. Private members make the JSON fail to parse (`deny_unknown_fields`).
pub fn register_jwk(submitted: SubmittedJwk, key_use: KeyUse, tenant: &TenantId) -> Result<PublicJwk, JwkError> {
    let wanted_use = match key_use {
        KeyUse::Sig => "sig",
        KeyUse::Enc => "enc",
    };
    if submitted.key_use.as_deref().is_some_and(|u| u != wanted_use) {
        return Err(JwkError::WrongPurpose);
    }
    let default_alg = match (submitted.kty.as_str(), submitted.crv.as_deref(), key_use) {
        ("EC", Some("P-256"), KeyUse::Enc) => Algorithm::EcdhEsA256kw,
        ("RSA", None, KeyUse::Enc) => Algorithm::RsaOaep256,
        ("EC", Some("P-256"), KeyUse::Sig) => Algorithm::Es256,
        ("RSA", None, KeyUse::Sig) => Algorithm::Rs256,
        ("OKP", Some("Ed25519"), KeyUse::Sig) => Algorithm::EdDsa,
        _ => return Err(JwkError::Unusable),
    };
    let alg = match submitted.alg.as_deref() {
        None => default_alg,
        Some(name) => Algorithm::parse(name).filter(|a| *a == default_alg).ok_or(JwkError::WrongPurpose)?,
    };
    let mut jwk = PublicJwk {
        kty: submitted.kty,
        kid: String::new(),
        key_use,
        alg: alg.as_str().into(),
        n: submitted.n,
        e: submitted.e,
        crv: submitted.crv,
        x: submitted.x,
        y: submitted.y,
        tenant_id: tenant.clone(),
    };
    let usable = match alg {
        Algorithm::EcdhEsA256kw | Algorithm::Es256 => jwk.p256_public_key().is_some(),
        Algorithm::RsaOaep256 | Algorithm::Rs256 => jwk.rsa_public_key().is_some(),
        Algorithm::EdDsa => jwk.ed25519_public_key().is_some(),
    };
    if !usable {
        return Err(JwkError::Unusable);
    }
    jwk.kid = jwk.thumbprint().ok_or(JwkError::Unusable)?;
    Ok(jwk)
}

/// The claims of a verified client assertion that the caller must still act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assertion {
    /// One-time: the caller records it until `exp` and refuses it a second time.
    pub jti: String,
    pub exp: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AssertionError {
    #[error("bad signature or header: {0}")]
    Signature(&'static str),
    #[error("claims are missing or wrong: {0}")]
    Claims(&'static str),
}

#[derive(Deserialize)]
struct AssertionClaims {
    iss: Option<String>,
    sub: Option<String>,
    aud: Option<serde_json::Value>,
    exp: Option<i64>,
    iat: Option<i64>,
    jti: Option<String>,
}

/// Verifies a `private_key_jwt` client assertion (RFC 7523 §3): signed by the client's
/// registered key (algorithm from that key), `iss` = `sub` = `client_id`, `aud` naming the
/// endpoint, unexpired, short-lived, with a `jti`.
pub fn verify_assertion(
    assertion: &str,
    client_id: &str,
    key: &PublicJwk,
    audiences: &[&str],
    now: i64,
) -> Result<Assertion, AssertionError> {
    let keys = TenantKeys {
        tenant_id: key.tenant_id.clone(),
        issuer: client_id.to_owned(),
        keys: vec![KeyRecord { jwk: key.clone(), status: KeyStatus::Active, created_at: 0, not_after: None }],
    };
    let opts = VerifyOptions { max_token_bytes: 8 * 1024, ..VerifyOptions::default() };
    let payload = health_jose::verify_signature(assertion, &keys, &opts)
        .map_err(|e| AssertionError::Signature(e.reason().as_str()))?;
    let claims: AssertionClaims = serde_json::from_slice(&payload).map_err(|_| AssertionError::Claims("malformed"))?;
    if claims.iss.as_deref() != Some(client_id) || claims.sub.as_deref() != Some(client_id) {
        return Err(AssertionError::Claims("iss_sub"));
    }
    let aud_ok = match &claims.aud {
        Some(serde_json::Value::String(aud)) => audiences.contains(&aud.as_str()),
        Some(serde_json::Value::Array(list)) => list.iter().any(|a| a.as_str().is_some_and(|a| audiences.contains(&a))),
        _ => false,
    };
    if !aud_ok {
        return Err(AssertionError::Claims("aud"));
    }
    let exp = claims.exp.ok_or(AssertionError::Claims("exp"))?;
    let tolerance = health_jose::MAX_CLOCK_TOLERANCE_SECS;
    if exp <= now - tolerance {
        return Err(AssertionError::Claims("expired"));
    }
    if exp > now + MAX_ASSERTION_SECS + tolerance || claims.iat.is_some_and(|iat| iat > now + tolerance) {
        return Err(AssertionError::Claims("lifetime"));
    }
    let jti = claims.jti.filter(|j| (1..=128).contains(&j.len())).ok_or(AssertionError::Claims("jti"))?;
    Ok(Assertion { jti, exp })
}

#[cfg(test)]
mod tests;
