//! Nested access tokens (ARCHITECTURE.md §4, RFC 7519 §11.2): a JWS encrypted to the tenant's
//! encryption key. The tenant is read from the issuer replicated in the JWE header, `jwks`
//! decrypts over chaining (only it holds private keys), and the inner JWS is then verified in
//! full like any access token, its `iss` required to equal the header's. Decryption alone
//! proves nothing about the sender: anyone can encrypt to a published key, so a nested token
//! is accepted only for the role it is issued to (insurers), and only under `ECDH-ES+A256KW`,
//! so no caller from outside can make `jwks` run an RSA decryption (the `rsa` crate's
//! RUSTSEC-2023-0071 timing side channel) on text of its choosing.

use anyhow::Context;
use health_core::{Caller, ClientId, Component, Link, Opaque, Reason, Role, TenantId};
use health_jose::Claims;
use health_jose::jwe::{self, JwePolicy};

use crate::tokens;

/// What a bearer token may be encrypted with: the platform's ECDH-ES key agreement only.
const BEARER: &str = "ECDH-ES+A256KW";

/// The only role whose access tokens are issued nested (`auth`'s `client_credentials` grant).
const NESTED_ROLE: Role = Role::Insurance;

/// A verified access token and whether it came encrypted.
#[derive(Debug, Clone)]
pub struct Verified {
    pub claims: Claims,
    pub encrypted: bool,
}

/// The tenant whose issuer `iss` is, if it is one of this platform's (`{issuer_base}/t/{tenant}`).
pub fn tenant_of_issuer(iss: &str) -> anyhow::Result<Option<TenantId>> {
    let base = crate::var("issuer_base")?;
    let prefix = format!("{}/t/", base.trim_end_matches('/'));
    Ok(iss.strip_prefix(&prefix).and_then(|t| TenantId::parse(t).ok()))
}

/// Verifies a compact JWS or a nested JWE access token. `Ok(Err(reason))` is a refused token
/// with the precise reason for the audit log. `me` (the gateway or `auth`) must be allowed to
/// reach `jwks.spin.internal` and declare `issuer_base` and the key of its link to `jwks`.
pub async fn verify(token: &str, now: i64, me: Component) -> anyhow::Result<Result<Verified, Reason>> {
    if token.len() > tokens::MAX_TOKEN_BYTES {
        return Ok(Err(Reason::TokenTooLarge));
    }
    if token.split('.').count() != 5 {
        return Ok(tokens::verify(token, now)?.map(|claims| Verified { claims, encrypted: false }));
    }
    let Ok(header) = jwe::peek_header(token, &JwePolicy::PLATFORM) else {
        return Ok(Err(Reason::MalformedJwe));
    };
    if header.alg != BEARER {
        return Ok(Err(Reason::JweAlgNotAllowed));
    }
    if !header.cty.as_deref().is_some_and(|c| c.eq_ignore_ascii_case("JWT")) {
        return Ok(Err(Reason::JweNotNested));
    }
    let Some(iss) = header.iss.as_deref() else {
        return Ok(Err(Reason::JweWithoutIssuer));
    };
    let Some(tenant) = tenant_of_issuer(iss)? else {
        return Ok(Err(Reason::JweUnknownIssuer));
    };
    let Some(inner) = decrypt(token, &tenant, now, me).await? else {
        return Ok(Err(Reason::JweDecryptionFailed));
    };
    if inner.split('.').count() != 3 {
        return Ok(Err(Reason::JweInnerNotJws));
    }
    // Nested tokens are insurers' one-time tokens: not worth remembering.
    let claims = match tokens::verify_and(&inner, now, tokens::Remember::No)? {
        Ok(claims) => claims,
        Err(reason) => return Ok(Err(reason)),
    };
    if claims.tenant_id != tenant || claims.iss != iss {
        return Ok(Err(Reason::JweIssuerMismatch));
    }
    if claims.role != NESTED_ROLE.as_str() {
        // A patient's (or any other role's) token wrapped by whoever holds it: not issued so.
        return Ok(Err(Reason::NestedTokenRole));
    }
    Ok(Ok(Verified { claims, encrypted: true }))
}

#[derive(serde::Deserialize)]
struct Decrypted {
    plaintext: String,
}

/// Asks `jwks` to decrypt `token` with `tenant`'s keys over `me`'s link to it; `None` when it
/// refuses (its answer is the same for every failure).
async fn decrypt(token: &str, tenant: &TenantId, now: i64, me: Component) -> anyhow::Result<Option<String>> {
    let link = Link::new(me, Component::Jwks).with_context(|| format!("{} has no link to jwks", me.as_str()))?;
    let caller = Caller {
        tenant_id: tenant.clone(),
        subject: Opaque::parse(&format!("service-{}", me.as_str())).context("a component's subject")?,
        role: Role::Insurance,
        client_id: Some(ClientId::parse(me.as_str()).context("a component's client id")?),
        scopes: Vec::new(),
        jti: crate::new_jti(),
        enc_jwk: None,
    };
    let body = serde_json::to_vec(&serde_json::json!({ "jwe": token }))?;
    let response = crate::chain::post_json(link, "/internal/decrypt", body, &caller, now).await?;
    match *response.status() {
        200 => {
            let decrypted: Decrypted =
                serde_json::from_slice(response.body()).context("decoding jwks decrypt answer")?;
            Ok(Some(decrypted.plaintext))
        }
        400 => Ok(None),
        status => anyhow::bail!("jwks decrypt answered {status}"),
    }
}
