//! Sessions and token state: logout and logout-all, RFC 7662 introspection, RFC 7009
//! revocation, the validation service, and per-tenant discovery.

use std::collections::BTreeMap;

use health_core::audit::Event;
use health_core::{ClientId, Component, Reason, TenantId};
use health_identity::refresh::{self, Decision, Stored};
use health_jose::{Claims, KeyUse};
use health_spin::identity;
use health_spin::nested::{self, Verified};
use health_spin::respond::{self, Cache};
use health_spin::revocations;
use health_spin::tokens::{self, TokenIds};
use serde::Deserialize;
use spin_sdk::http::Response;
use spin_sdk::sqlite::Connection;

use crate::grants::{self, Authenticated, oauth};
use crate::{Ctx, Error, Failure, issue};

type Outcome = Result<Response, Failure>;

fn no_content() -> Response {
    respond::bytes(204, "text/plain", Vec::new(), Cache::NoStore)
}

/// Verifies any access token this platform issued (JWS, or nested JWE through `jwks`).
async fn verify(token: &str, now: i64) -> anyhow::Result<Result<Verified, Reason>> {
    nested::verify(token, now, Component::Auth).await
}

/// `POST /auth/logout` ends this session (the bearer token and its refresh family);
/// `POST /auth/logout-all` ends every session of the subject (per-subject not-before).
pub async fn logout(ctx: &Ctx<'_>, event: &mut Event, everywhere: bool) -> Outcome {
    event.action = if everywhere { "auth.logout_all" } else { "auth.logout" }.into();
    let (claims, ids) = bearer_claims(ctx, event).await?;
    let db = ctx.db()?;
    if everywhere {
        issue::revoke_subject(&db, &claims.tenant_id, &ids.sub, Reason::LogoutAll, ctx.now)?;
        event.reason = Reason::AllSessionsEnded.into();
    } else {
        issue::revoke_jti(&revocations::open()?, &claims.tenant_id, &ids.jti, claims.exp)?;
        if let Some(family) = identity::family_of_access(&db, &ids.jti)? {
            issue::revoke_family(&db, &claims.tenant_id, &family, Reason::Logout, ctx.now)?;
        }
        event.reason = Reason::SessionEnded.into();
    }
    Ok(no_content())
}

/// The verified claims of the request's bearer token and its ids, typed, with the event
/// attributed to them; a missing or invalid token is [`Error::Unauthenticated`] with the
/// precise reason on the event.
pub(crate) async fn bearer_claims(ctx: &Ctx<'_>, event: &mut Event) -> Result<(Claims, TokenIds), Failure> {
    let token = match health_spin::tokens::bearer_token(ctx.req) {
        Ok(token) => token,
        Err(reason) => {
            event.reason = reason.into();
            return Err(crate::unauthenticated(reason).into());
        }
    };
    match verify(token, ctx.now).await? {
        Ok(verified) => {
            actor(event, &verified.claims);
            match tokens::ids(&verified.claims) {
                Ok(ids) => Ok((verified.claims, ids)),
                Err(reason) => {
                    event.reason = reason.into();
                    Err(crate::unauthenticated(reason).into())
                }
            }
        }
        Err(reason) => {
            event.reason = reason.into();
            Err(crate::unauthenticated(reason).into())
        }
    }
}

fn actor(event: &mut Event, claims: &Claims) {
    crate::for_tenant(event, &claims.tenant_id);
    event.actor_sub = Some(claims.sub.clone());
    event.actor_role = Some(claims.role.clone());
    event.client_id = Some(claims.client_id.clone());
    event.jti = Some(claims.jti.clone());
}

fn token_param(form: &BTreeMap<String, String>) -> Result<&str, Error> {
    form.get("token").map(String::as_str).filter(|t| t.len() <= health_jose::MAX_TOKEN_BYTES).ok_or(oauth(
        400,
        "invalid_request",
        "token is required",
    ))
}

/// A presented refresh token's family, if it is live.
fn live_family(db: &Connection, token: &str, now: i64) -> anyhow::Result<Option<identity::Family>> {
    if !refresh::well_formed(token) {
        return Ok(None);
    }
    let Some(found) = identity::find_refresh(db, &refresh::hash(token))? else {
        return Ok(None);
    };
    let stored =
        Stored { used_at: found.used_at, expires_at: found.family.expires_at, family_revoked: found.family.revoked };
    Ok((refresh::decide(stored, now) == Decision::Rotate).then_some(found.family))
}

/// RFC 7662: a registered client of the tenant asks whether a token is active. Tokens of other
/// tenants are simply inactive.
pub async fn introspect(ctx: &Ctx<'_>, event: &mut Event) -> Outcome {
    event.action = "auth.introspect".into();
    let form = ctx.form()?;
    let db = ctx.db()?;
    let client = match grants::authenticate_client(ctx, &db, &form, event)? {
        Authenticated::Confidential(client) => client,
        Authenticated::Public(_) => {
            event.reason = Reason::PublicClientCannotIntrospect.into();
            return Err(oauth(401, "invalid_client", "introspection needs a registered client").into());
        }
    };
    let token = token_param(&form)?;
    let inactive = serde_json::json!({ "active": false });
    let answer = if token.contains('.') {
        match verify(token, ctx.now).await? {
            // RFC 7662 §2.2: an expired token is inactive, even within the clock tolerance a
            // resource server allows itself.
            Ok(verified) if verified.claims.tenant_id == client.tenant_id && ctx.now < verified.claims.exp => {
                let c = &verified.claims;
                event.jti = Some(c.jti.clone());
                serde_json::json!({
                    "active": true,
                    "token_type": "Bearer",
                    "scope": c.scope,
                    "client_id": c.client_id,
                    "sub": c.sub,
                    "aud": c.aud,
                    "iss": c.iss,
                    "exp": c.exp,
                    "iat": c.iat,
                    "nbf": c.nbf,
                    "jti": c.jti,
                    "tenant_id": c.tenant_id,
                    "role": c.role,
                    "amr": c.amr,
                    "encrypted": verified.encrypted,
                })
            }
            Ok(_) => inactive,
            Err(reason) => {
                // Text, not a `Reason`: why the token is inactive, after the prefix.
                event.reason = format!("inactive_{reason}");
                inactive
            }
        }
    } else {
        match live_family(&db, token, ctx.now)? {
            Some(family) if family.tenant_id == client.tenant_id => serde_json::json!({
                "active": true,
                "token_type": "refresh_token",
                "client_id": family.client_id,
                "sub": family.user_id,
                "exp": family.expires_at,
                "tenant_id": family.tenant_id,
            }),
            _ => inactive,
        }
    };
    if event.reason.is_empty() {
        event.reason = if answer["active"] == true { Reason::Active } else { Reason::Inactive }.into();
    }
    Ok(respond::json(200, &answer, Cache::NoStore))
}

/// RFC 7009: the client a token was issued to revokes it. An access token is revoked by `jti`
/// for its remaining life; a refresh token takes its whole family (and that family's access
/// tokens) with it. Unknown or already invalid tokens are a 200 as the RFC says.
pub async fn revoke(ctx: &Ctx<'_>, event: &mut Event) -> Outcome {
    event.action = "auth.revoke".into();
    let form = ctx.form()?;
    let db = ctx.db()?;
    let client = grants::authenticate_client(ctx, &db, &form, event)?;
    let (client_id, tenant) = match &client {
        Authenticated::Confidential(c) => (c.client_id.clone(), Some(c.tenant_id.clone())),
        Authenticated::Public(id) => (id.clone(), None),
    };
    let token = token_param(&form)?;
    let issued_to_caller = |owner: &str, owner_tenant: &TenantId| {
        owner == client_id.as_str() && tenant.as_ref().is_none_or(|t| t == owner_tenant)
    };
    if token.contains('.') {
        match verify(token, ctx.now).await? {
            Ok(verified) => {
                let claims = verified.claims;
                if !issued_to_caller(&claims.client_id, &claims.tenant_id) {
                    event.reason = Reason::TokenOfAnotherClient.into();
                    return Err(oauth(400, "unauthorized_client", "the token was not issued to this client").into());
                }
                actor(event, &claims);
                match tokens::ids(&claims) {
                    Ok(ids) => {
                        issue::revoke_jti(&revocations::open()?, &claims.tenant_id, &ids.jti, claims.exp)?;
                        event.reason = Reason::AccessTokenRevoked.into();
                    }
                    Err(reason) => event.reason = format!("nothing_to_revoke_{reason}"),
                }
            }
            // Text, not a `Reason`: why there was nothing to revoke, after the prefix.
            Err(reason) => event.reason = format!("nothing_to_revoke_{reason}"),
        }
    } else {
        match live_family(&db, token, ctx.now)? {
            Some(family) => {
                if !issued_to_caller(family.client_id.as_str(), &family.tenant_id) {
                    event.reason = Reason::TokenOfAnotherClient.into();
                    return Err(oauth(400, "unauthorized_client", "the token was not issued to this client").into());
                }
                crate::for_tenant(event, &family.tenant_id);
                event.actor_sub = Some(family.user_id.to_string());
                event.resource = format!("refresh_family/{}", family.family_id);
                issue::revoke_family(&db, &family.tenant_id, &family.family_id, Reason::Revoked, ctx.now)?;
                event.reason = Reason::RefreshFamilyRevoked.into();
            }
            None => event.reason = Reason::NothingToRevoke.into(),
        }
    }
    Ok(respond::bytes(200, "text/plain", Vec::new(), Cache::NoStore))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ValidateRequest {
    token: String,
}

/// `POST /api/auth/validate` `{"token"}`: the validation service of seed 002.
pub async fn validate(ctx: &Ctx<'_>) -> Outcome {
    let request: ValidateRequest = match ctx.json("body must be {\"token\"}") {
        Ok(request) => request,
        Err(error) => return Err(error.into()),
    };
    let invalid = || Ok(respond::json(200, &serde_json::json!({ "valid": false }), Cache::NoStore));
    let Ok(verified) = verify(&request.token, ctx.now).await? else {
        return invalid();
    };
    let claims = verified.claims;
    // Past `exp` is invalid here, whatever tolerance verification allowed (as introspection).
    if ctx.now >= claims.exp {
        return invalid();
    }
    let db = ctx.db()?;
    let Ok(ids) = tokens::ids(&claims) else {
        return invalid();
    };
    let username = match identity::user_by_id(&db, &claims.tenant_id, &ids.sub)? {
        Some(user) if !user.disabled => user.username.to_string(),
        Some(_) => return invalid(),
        None => match ClientId::parse(ids.sub.as_str())
            .ok()
            .map(|id| identity::find_client(&db, &id))
            .transpose()?
            .flatten()
        {
            Some(client) if !client.disabled && client.tenant_id == claims.tenant_id => client.name,
            _ => return invalid(),
        },
    };
    let body = serde_json::json!({
        "valid": true,
        "user": {
            "id": claims.sub,
            "username": username,
            "role": claims.role,
            "tenantId": claims.tenant_id,
            "permissions": claims.scope.split_whitespace().collect::<Vec<_>>(),
            "expiresAt": health_core::rfc3339(claims.exp),
        },
    });
    Ok(respond::json(200, &body, Cache::NoStore))
}

/// `GET /t/{tenant}/.well-known/openid-configuration`.
pub fn discovery(ctx: &Ctx<'_>, tenant: &TenantId) -> Outcome {
    let keys = health_spin::tokens::tenant_keys(tenant)?;
    let algs = |key_use: KeyUse, default: &str| -> Vec<String> {
        let mut algs: Vec<String> = keys
            .iter()
            .flat_map(|k| k.published(ctx.now))
            .filter(|jwk| jwk.key_use == key_use)
            .map(|jwk| jwk.alg.clone())
            .collect();
        algs.sort();
        algs.dedup();
        if algs.is_empty() { vec![default.to_owned()] } else { algs }
    };
    if keys.is_none() && !(ctx.settings.demo && tenant.as_str() == health_core::DEMO_TENANT) {
        return Err(Error::NotFound(Reason::UnknownTenant).into());
    }
    let metadata = health_identity::discovery::metadata(&health_identity::discovery::Settings {
        issuer_base: &ctx.settings.issuer_base,
        tenant: tenant.as_str(),
        signing_algs: algs(KeyUse::Sig, "RS256"),
        encryption_algs: algs(KeyUse::Enc, "ECDH-ES+A256KW"),
    });
    Ok(respond::json(200, &metadata, Cache::Public(300)))
}
