//! A tenant's OpenID provider's access tokens as bearer tokens (issue 17 item 3), for a tenant
//! whose provider settings say `accept_provider_tokens`.
//!
//! Only a token the platform's own verification refused for having no `tenant_id` (so not one
//! of the platform's) comes here: the platform's tokens take exactly the path they took before,
//! with no read more. The token's unverified `iss` and `aud` only route it: the tenants
//! accepting that issuer's tokens are read from `revocations` (`health_spin::issuers`, which
//! `auth` writes when settings change), the one whose audience the token names is picked, and
//! `auth` is asked over the gateway → `auth` link (`/internal/federation/access-token`) to
//! verify it for that tenant as the token exchange verifies a provider's access token and to
//! map it to the linked local user and role. No tenant accepting the issuer: the platform's
//! refusal stands. The request then goes on as with a platform token, audited the same way.

use anyhow::Context;
use health_core::audit::Event;
use health_core::{Caller, ClientId, Component, Link, Opaque, Reason, Role, TenantId, TokenId};
use health_spin::{chain, issuers, log, revocations};

/// The unverified `iss` and `aud` of a compact JWS, only to route it.
fn issuer_and_audience(token: &str) -> Option<(String, serde_json::Value)> {
    let payload = token.split('.').nth(1)?;
    let claims: serde_json::Value = serde_json::from_slice(&health_core::b64url_decode(payload)?).ok()?;
    Some((claims.get("iss")?.as_str()?.to_owned(), claims.get("aud")?.clone()))
}

/// The caller of a provider's access token, or why it is refused; `platform_refusal` is the
/// reason the platform's own verification gave, which stands when no tenant accepts the issuer.
pub async fn authenticate(
    token: &str,
    event: &mut Event,
    platform_refusal: Reason,
) -> anyhow::Result<Result<Caller, Reason>> {
    let Some((issuer, audience)) = issuer_and_audience(token) else {
        return Ok(Err(platform_refusal));
    };
    let accepting = issuers::accepting(&revocations::open()?, &issuer)?;
    if accepting.is_empty() {
        return Ok(Err(platform_refusal));
    }
    let Some(route) = issuers::tenant_for(&accepting, &audience) else {
        return Ok(Err(Reason::WrongAudience));
    };
    let tenant = route.tenant.clone();
    event.tenant_id = tenant.to_string();
    log::set_tenant(&event.tenant_id);
    let answer = ask_auth(token, &tenant, event.time).await?;
    let text = |name: &str| answer.get(name).and_then(serde_json::Value::as_str);
    if answer.get("accepted") != Some(&serde_json::Value::Bool(true)) {
        return Ok(Err(text("reason").and_then(Reason::parse).unwrap_or(Reason::Refused)));
    }
    let user_id = text("user_id").and_then(|id| Opaque::parse(id).ok());
    let role = text("role").and_then(Role::parse);
    let jti = text("jti").and_then(|jti| TokenId::parse(jti).ok());
    let (Some(user_id), Some(role), Some(jti)) = (user_id, role, jti) else {
        anyhow::bail!("auth accepted a provider token without a user, role and jti");
    };
    event.actor_sub = Some(user_id.to_string());
    event.actor_role = Some(role.as_str().to_owned());
    event.jti = Some(jti.to_string());
    let scopes = text("scope").unwrap_or_default().split(' ').filter(|s| !s.is_empty()).map(str::to_owned).collect();
    Ok(Ok(Caller { tenant_id: tenant, subject: user_id, role, client_id: None, scopes, jti, enc_jwk: None }))
}

/// `auth`'s answer: `{"accepted":true,"user_id","role","scope","jti",...}` or
/// `{"accepted":false,"reason"}`.
async fn ask_auth(token: &str, tenant: &TenantId, now: i64) -> anyhow::Result<serde_json::Value> {
    let link = Link::new(Component::Gateway, Component::Auth).context("the gateway has no link to auth")?;
    // The gateway itself asks, for the tenant the token routes to (as it asks `jwks` to decrypt).
    let caller = Caller {
        tenant_id: tenant.clone(),
        subject: Opaque::parse("service-gateway").context("a component's subject")?,
        role: Role::Admin,
        client_id: Some(ClientId::parse("gateway").context("a component's client id")?),
        scopes: Vec::new(),
        jti: health_spin::new_jti(),
        enc_jwk: None,
    };
    let body = serde_json::to_vec(&serde_json::json!({ "token": token }))?;
    let response = chain::post_json(link, "/internal/federation/access-token", body, &caller, now).await?;
    anyhow::ensure!(*response.status() == 200, "auth answered {} for a provider token", response.status());
    serde_json::from_slice(response.body()).context("decoding auth's answer on a provider token")
}
