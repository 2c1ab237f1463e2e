//! What `jwks` does for the components it serves over local service chaining: sign access
//! tokens and encrypt to a tenant for `auth`, decrypt nested tokens for `auth` and the gateway.
//! Each checks the caller context under the key of the link the sender claims first.

use anyhow::Context;
use health_core::{Component, Reason, Refusal};
use health_jose::jwe::{self, JwePolicy};
use health_jose::{Claims, KeyStatus, KeyUse, PrivateKey};
use health_spin::respond::{self, Cache, Failure};
use serde::Deserialize;
use spin_sdk::http::{Request, Response};

use crate::keyring::{self, Keys};

/// The one answer to every failed decryption, whatever failed (no oracle).
const DECRYPTION_FAILED: &str = "JWE could not be decrypted";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EncryptRequest {
    plaintext: String,
    cty: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DecryptRequest {
    jwe: String,
}

/// Signs the claims in the body for `auth` alone, after checking its attestation under the key
/// of the `auth` → `jwks` link: a compromised gateway or role service, holding only the keys of
/// its own links, cannot mint tokens.
pub fn sign(req: &Request, keys: &Keys, now: i64) -> Result<Response, Failure> {
    let Some(caller) = attested(req, SIGNERS)? else {
        return Err(Refusal::Unauthenticated(Reason::ContextRefused).into());
    };
    let Ok(claims) = serde_json::from_slice::<Claims>(req.body()) else {
        return Err(Refusal::BadRequest(Reason::MalformedRequest, "body must be the access token claims".into()).into());
    };
    let ttl = health_spin::var_i64("access_token_ttl_secs")?;
    if claims.tenant_id != caller.tenant_id
        || claims.sub != caller.subject.as_str()
        || claims.jti != caller.jti.as_str()
    {
        return Err(
            Refusal::BadRequest(Reason::MalformedRequest, "claims do not match the attested caller".into()).into()
        );
    }
    if claims.exp.saturating_sub(claims.iat) > ttl || claims.exp <= claims.iat {
        return Err(Refusal::BadRequest(Reason::MalformedRequest, "token lifetime out of bounds".into()).into());
    }
    let Some(mut set) = keys.load(&claims.tenant_id, now)? else {
        return Err(Refusal::NotFound(Reason::UnknownTenant).into());
    };
    if set.active(KeyUse::Sig).is_none() {
        // Left without an active key by an older version (revocation now replaces it): make
        // one rather than fail every login.
        keyring::ensure_tenant(keys, &claims.tenant_id)?;
        set = keys.load(&claims.tenant_id, now)?.context("tenant keys vanished")?;
    }
    if claims.iss != set.issuer {
        return Err(Refusal::BadRequest(Reason::MalformedRequest, "issuer does not belong to the tenant".into()).into());
    }
    let active = set.active(KeyUse::Sig).context("tenant has no active signing key")?;
    let active = keyring::rotated_if_due(keys, &claims.tenant_id, active, now)?;
    let alg = active.jwk.algorithm().context("active key has an unsupported algorithm")?;
    let private = keys.private_key(&claims.tenant_id, &active, &keyring::master()?)?;
    let token = health_jose::sign(&private, alg, &active.jwk.kid, &claims, &mut health_spin::rng())
        .context("signing access token")?;
    Ok(respond::json(200, &serde_json::json!({ "token": token, "kid": active.jwk.kid }), Cache::NoStore))
}

/// Encrypts the body's plaintext to the attested caller's tenant's active encryption key
/// (a nested token when `cty` is `JWT`), rotating that key first if it is due. For `auth` alone,
/// which issues the nested tokens.
pub fn encrypt(req: &Request, keys: &Keys, now: i64) -> Result<Response, Failure> {
    let Some(caller) = attested(req, SIGNERS)? else {
        return Err(Refusal::Unauthenticated(Reason::ContextRefused).into());
    };
    let Ok(body) = serde_json::from_slice::<EncryptRequest>(req.body()) else {
        return Err(
            Refusal::BadRequest(Reason::MalformedRequest, "body must be {\"plaintext\", \"cty\"?}".into()).into()
        );
    };
    let Some(set) = keys.load(&caller.tenant_id, now)? else {
        return Err(Refusal::NotFound(Reason::UnknownTenant).into());
    };
    let active = set.active(KeyUse::Enc).context("tenant has no active encryption key")?;
    let active = keyring::rotated_if_due(keys, &caller.tenant_id, active, now)?;
    let key = active.jwk.encryption_key().context("active encryption key does not parse")?;
    // The tenant's issuer rides in the protected header (RFC 7519 §5.3) so a recipient knows
    // whose key decrypts it; recipients check it against the inner token's verified `iss`.
    let protected = jwe::Protected { kid: Some(&active.jwk.kid), cty: body.cty.as_deref(), iss: Some(&set.issuer) };
    let token = jwe::encrypt(body.plaintext.as_bytes(), &key, &protected, &mut health_spin::rng())
        .map_err(|_| anyhow::anyhow!("encryption failed"))?;
    Ok(respond::json(200, &serde_json::json!({ "jwe": token, "kid": active.jwk.kid }), Cache::NoStore))
}

/// Decrypts a JWE addressed to one of the attested caller's tenant's published (active or
/// retiring) encryption keys. Every failure, including an unknown, retired or revoked key, is
/// the same 400, so the endpoint is no oracle; the inner token's signature is the caller's to
/// verify (decryption proves nothing about the sender). For the gateway and `auth`, which
/// both verify nested tokens.
pub fn decrypt(req: &Request, keys: &Keys, now: i64) -> Result<Response, Failure> {
    let Some(caller) = attested(req, DECRYPTERS)? else {
        return Err(Refusal::Unauthenticated(Reason::ContextRefused).into());
    };
    let failed = || Err(Refusal::BadRequest(Reason::MalformedRequest, DECRYPTION_FAILED.into()).into());
    let Ok(body) = serde_json::from_slice::<DecryptRequest>(req.body()) else {
        return failed();
    };
    let Some(set) = keys.load(&caller.tenant_id, now)? else {
        return failed();
    };
    let Ok(header) = jwe::peek_header(&body.jwe, &JwePolicy::PLATFORM) else {
        return failed();
    };
    let record = header.kid.as_deref().and_then(|kid| set.find(kid)).filter(|k| {
        k.jwk.key_use == KeyUse::Enc && matches!(k.status_at(now), KeyStatus::Active | KeyStatus::Retiring)
    });
    let Some(record) = record else {
        return failed();
    };
    let key = match keys.private_key(&caller.tenant_id, record, &keyring::master()?)? {
        PrivateKey::P256(key) => jwe::DecryptionKey::P256(key),
        PrivateKey::Rsa(key) => jwe::DecryptionKey::Rsa(key),
        PrivateKey::Ed25519(_) => return failed(),
    };
    let Ok(decrypted) = jwe::decrypt_with_key_alg(&body.jwe, &key, &record.jwk.alg, &JwePolicy::PLATFORM) else {
        return failed();
    };
    let Ok(plaintext) = String::from_utf8(decrypted.plaintext) else {
        return failed();
    };
    let answer = serde_json::json!({ "plaintext": plaintext, "cty": decrypted.header.cty, "kid": record.jwk.kid });
    Ok(respond::json(200, &answer, Cache::NoStore))
}

/// Who may ask `jwks` to sign and to encrypt: `auth`, which issues every token.
const SIGNERS: &[Component] = &[Component::Auth];
/// Who may ask `jwks` to decrypt a nested token: the two components that verify them.
const DECRYPTERS: &[Component] = &[Component::Gateway, Component::Auth];

/// The caller a chained request from one of `senders` attests, under that sender's link key;
/// `None` (answered 401) for anything else, the refusal logged with its reason.
fn attested(req: &Request, senders: &[Component]) -> anyhow::Result<Option<health_core::Caller>> {
    match health_spin::verify_context(req, Component::Jwks, senders)? {
        Ok(caller) => Ok(Some(caller)),
        Err(refused) => {
            health_spin::log::warn("context_refused", format!("{}: {refused}", req.path()));
            Ok(None)
        }
    }
}
