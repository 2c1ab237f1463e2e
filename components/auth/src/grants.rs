//! `POST /auth/token` (RFC 6749 §4.4, §6): `refresh_token` with rotation and family revocation
//! on reuse (RFC 9700 §4.14.2), and `client_credentials` for registered insurers (client secret
//! or `private_key_jwt`), which get a one-time nested JWE and no refresh token. Client
//! authentication is shared with introspection and revocation.

use std::collections::BTreeMap;

use anyhow::Context;
use health_core::audit::Event;
use health_core::{ClientId, Reason, Role};
use health_identity::client::{self, ClientAuth};
use health_identity::refresh::{self, Decision, Stored};
use health_jose::{KeyUse, PublicJwk};
use health_spin::identity::{self, Client};
use health_spin::revocations;
use spin_sdk::http::Response;
use spin_sdk::sqlite::Connection;

use crate::issue::{self, Refresh, Subject};
use crate::{Ctx, Error, Failure, WEB_CLIENT};

type Outcome = Result<Response, Failure>;

pub(crate) const fn oauth(status: u16, code: &'static str, detail: &'static str) -> Error {
    Error::OAuth { status, code, detail }
}

const INVALID_CLIENT: Error = oauth(401, "invalid_client", "client authentication failed");
pub(crate) const INVALID_GRANT: Error = oauth(400, "invalid_grant", "the refresh token is invalid, expired or revoked");

pub async fn token(ctx: &Ctx<'_>, event: &mut Event) -> Outcome {
    event.action = "auth.token".into();
    let form = match ctx.form() {
        Ok(form) => form,
        Err(error) => {
            event.reason = Reason::MalformedRequest.into();
            return Err(error.into());
        }
    };
    match form.get("grant_type").map(String::as_str) {
        Some("refresh_token") => refresh_grant(ctx, &form, event).await,
        Some("client_credentials") => client_credentials(ctx, &form, event).await,
        Some(health_identity::federation::TOKEN_EXCHANGE) => crate::federation::exchange(ctx, &form, event).await,
        Some(_) => {
            event.reason = Reason::UnsupportedGrantType.into();
            let detail = "grant_type must be refresh_token, client_credentials or token-exchange";
            Err(oauth(400, "unsupported_grant_type", detail).into())
        }
        None => {
            event.reason = Reason::MalformedRequest.into();
            Err(oauth(400, "invalid_request", "grant_type is required").into())
        }
    }
}

async fn refresh_grant(ctx: &Ctx<'_>, form: &BTreeMap<String, String>, event: &mut Event) -> Outcome {
    event.action = "auth.token.refresh".into();
    let authorization = ctx.req.header("authorization").and_then(|v| v.as_str());
    let claimed = match client::from_request(authorization, form) {
        Ok(ClientAuth::Public { client_id }) => Some(client_id),
        Err(client::ClientAuthError::Missing) => None,
        // Refresh tokens are only issued to the public web client.
        Ok(_) | Err(_) => {
            event.reason = Reason::RefreshWithClientCredentials.into();
            return Err(INVALID_CLIENT.into());
        }
    };
    let Some(presented) = form.get("refresh_token") else {
        event.reason = Reason::MalformedRefreshToken.into();
        return Err(INVALID_GRANT.into());
    };
    refresh_token(ctx, presented, claimed, None, event).await
}

/// Rotates `presented` (the refresh grant's token, or the portal's cookie): refused when
/// malformed, unknown, another client's than `claimed`, spent (the family revoked), expired,
/// revoked, or, with `idle`, issued more than `idle` seconds ago (the family revoked: the
/// session is over).
pub(crate) async fn refresh_token(
    ctx: &Ctx<'_>,
    presented: &str,
    claimed: Option<String>,
    idle: Option<i64>,
    event: &mut Event,
) -> Outcome {
    if !refresh::well_formed(presented) {
        event.reason = Reason::MalformedRefreshToken.into();
        return Err(INVALID_GRANT.into());
    }
    let hash = refresh::hash(presented);
    let db = ctx.db()?;
    let Some(found) = identity::find_refresh(&db, &hash)? else {
        event.reason = Reason::UnknownRefreshToken.into();
        return Err(INVALID_GRANT.into());
    };
    let family = found.family;
    crate::for_tenant(event, &family.tenant_id);
    event.actor_sub = Some(family.user_id.to_string());
    event.client_id = Some(family.client_id.to_string());
    event.resource = format!("refresh_family/{}", family.family_id);
    if claimed.as_ref().is_some_and(|c| c != family.client_id.as_str()) {
        event.reason = Reason::RefreshClientMismatch.into();
        return Err(INVALID_GRANT.into());
    }
    if idle.is_some_and(|idle| found.used_at.is_none() && ctx.now - found.issued_at > idle) && !family.revoked {
        issue::revoke_family(&db, &family.tenant_id, &family.family_id, Reason::RefreshIdle, ctx.now)?;
        event.reason = Reason::RefreshIdle.into();
        return Err(INVALID_GRANT.into());
    }
    let stored = Stored { used_at: found.used_at, expires_at: family.expires_at, family_revoked: family.revoked };
    let mut decision = refresh::decide(stored, ctx.now);
    if decision == Decision::Rotate && !identity::spend_refresh(&db, &hash, ctx.now)? {
        // Another request spent it first: two holders of one token.
        decision = Decision::Reuse;
    }
    match decision {
        Decision::Dead => {
            event.reason = if family.revoked { Reason::RefreshFamilyRevoked } else { Reason::RefreshExpired }.into();
            return Err(INVALID_GRANT.into());
        }
        Decision::Reuse => {
            issue::revoke_family(&db, &family.tenant_id, &family.family_id, Reason::RefreshReuse, ctx.now)?;
            event.reason = Reason::RefreshReuseFamilyRevoked.into();
            return Err(INVALID_GRANT.into());
        }
        Decision::Rotate => {}
    }
    let user = identity::user_by_id(&db, &family.tenant_id, &family.user_id)?;
    let Some(user) = user.filter(|u| !u.disabled) else {
        issue::revoke_family(&db, &family.tenant_id, &family.family_id, Reason::UserDisabled, ctx.now)?;
        event.reason = Reason::UserDisabled.into();
        return Err(INVALID_GRANT.into());
    };
    let not_before = revocations::not_before(&revocations::open()?, &family.tenant_id, &family.user_id)?;
    if not_before.is_some_and(|nb| family.created_at < nb) {
        issue::revoke_family(&db, &family.tenant_id, &family.family_id, Reason::SubjectLoggedOut, ctx.now)?;
        event.reason = Reason::SubjectLoggedOut.into();
        return Err(INVALID_GRANT.into());
    }
    let subject = Subject {
        tenant: family.tenant_id.clone(),
        sub: user.user_id,
        role: user.role,
        client_id: family.client_id.clone(),
        amr: family.amr.clone(),
        auth_time: family.auth_time,
        enc_jwk: None,
    };
    let issued = issue::issue(ctx, &db, &subject, Refresh::Family(&family.family_id), event).await?;
    // The new tokens are recorded in the family (above, in `issue`) before this read, and a
    // revocation marks the family before it lists the family's tokens: so either that listing
    // saw this access token and revoked it, or this read sees the family revoked. A concurrent
    // reuse of the same refresh token (or a logout) cannot leave the winner's token alive.
    if identity::family_revoked(&db, &family.family_id)? {
        issue::revoke_jti(&revocations::open()?, &family.tenant_id, &issued.jti, issued.exp)?;
        event.reason = Reason::RefreshFamilyRevokedDuringRotation.into();
        return Err(INVALID_GRANT.into());
    }
    event.reason = Reason::RefreshRotated.into();
    Ok(issued.response())
}

async fn client_credentials(ctx: &Ctx<'_>, form: &BTreeMap<String, String>, event: &mut Event) -> Outcome {
    event.action = "auth.token.client_credentials".into();
    let db = ctx.db()?;
    let client = match authenticate_client(ctx, &db, form, event)? {
        Authenticated::Confidential(client) => client,
        Authenticated::Public(_) => {
            event.reason = Reason::PublicClientCannotUseClientCredentials.into();
            return Err(INVALID_CLIENT.into());
        }
    };
    if form.get("scope").is_some_and(|s| s != issue::scopes(Role::Insurance)) {
        event.reason = Reason::InvalidScope.into();
        return Err(oauth(400, "invalid_scope", "insurers may only ask for insurance/summary.read").into());
    }
    let enc_jwk = serde_json::from_str(&client.enc_jwk).context("decoding the client's registered enc_jwk")?;
    let subject = Subject {
        tenant: client.tenant_id.clone(),
        sub: client.client_id.clone().into(),
        role: Role::Insurance,
        client_id: client.client_id.clone(),
        amr: Vec::new(),
        auth_time: ctx.now,
        enc_jwk: Some(enc_jwk),
    };
    let issued = issue::issue(ctx, &db, &subject, Refresh::None, event).await?;
    event.reason = Reason::TokenIssued.into();
    Ok(issued.response())
}

/// Who a client-authenticated request came from.
pub enum Authenticated {
    /// A registered client that proved its credential.
    Confidential(Client),
    /// The public web client, which has no credential.
    Public(ClientId),
}

/// Checks a request's client authentication (RFC 6749 §2.3): a registered, enabled client with
/// its secret or a fresh one-time `private_key_jwt` assertion, or the public web client by name.
/// Every failure is `invalid_client`; the audit reason says which check failed.
pub fn authenticate_client(
    ctx: &Ctx<'_>,
    db: &Connection,
    form: &BTreeMap<String, String>,
    event: &mut Event,
) -> Result<Authenticated, Failure> {
    let authorization = ctx.req.header("authorization").and_then(|v| v.as_str());
    let auth = match client::from_request(authorization, form) {
        Ok(auth) => auth,
        Err(e) => {
            // Text, not a `Reason`: it names the client-authentication error's variant.
            event.reason = format!("client_auth_{}", format!("{e:?}").to_lowercase());
            return Err(INVALID_CLIENT.into());
        }
    };
    if let ClientAuth::Public { client_id } = &auth {
        if client_id == WEB_CLIENT {
            event.client_id = Some(client_id.clone());
            return Ok(Authenticated::Public(crate::web_client()));
        }
        event.reason = Reason::UnknownPublicClient.into();
        return Err(INVALID_CLIENT.into());
    }
    let claimed = match &auth {
        ClientAuth::Assertion { client_id: None, assertion } => unverified_issuer(assertion),
        other => other.claimed_id().map(str::to_owned),
    };
    let client = match claimed {
        Some(id) => match ClientId::parse(&id) {
            Ok(id) => identity::find_client(db, &id)?,
            Err(_) => None,
        },
        _ => None,
    };
    let refusal = |event: &mut Event, reason: Reason| {
        event.reason = reason.into();
        Err(INVALID_CLIENT.into())
    };
    let Some(client) = client else {
        if let ClientAuth::Secret { secret, .. } = &auth {
            // Same work as a real comparison.
            health_core::token_matches_hash(secret, &"0".repeat(64));
        }
        return refusal(event, Reason::UnknownClient);
    };
    crate::for_tenant(event, &client.tenant_id);
    event.client_id = Some(client.client_id.to_string());
    event.actor_sub = Some(client.client_id.to_string());
    event.actor_role = Some(Role::Insurance.as_str().into());
    match &auth {
        ClientAuth::Secret { secret, .. } => {
            let Some(hash) = &client.secret_hash else {
                return refusal(event, Reason::ClientHasNoSecret);
            };
            if !health_core::token_matches_hash(secret, hash) {
                return refusal(event, Reason::BadClientSecret);
            }
        }
        ClientAuth::Assertion { assertion, .. } => {
            let Some(key) = client.sig_jwk.as_deref().and_then(|k| serde_json::from_str::<PublicJwk>(k).ok()) else {
                return refusal(event, Reason::ClientHasNoSigningKey);
            };
            if key.key_use != KeyUse::Sig {
                return refusal(event, Reason::ClientHasNoSigningKey);
            }
            let token_endpoint = ctx.settings.token_endpoint();
            let issuer = ctx.settings.issuer(&client.tenant_id);
            let audiences = [token_endpoint.as_str(), issuer.as_str()];
            let verified =
                match client::verify_assertion(assertion, client.client_id.as_str(), &key, &audiences, ctx.now) {
                    Ok(verified) => verified,
                    // These two are text, not `Reason`s: they name the assertion's verification error
                    // (`client_assertion_bad_signature`) or the claim that failed.
                    Err(client::AssertionError::Signature(reason)) => {
                        event.reason = format!("client_assertion_{reason}");
                        return Err(INVALID_CLIENT.into());
                    }
                    Err(client::AssertionError::Claims(what)) => {
                        event.reason = format!("client_assertion_bad_{what}");
                        return Err(INVALID_CLIENT.into());
                    }
                };
            if !identity::spend_assertion(db, &client.client_id, &verified.jti, verified.exp, ctx.now)? {
                return refusal(event, Reason::ClientAssertionReplayed);
            }
        }
        ClientAuth::Public { .. } => return refusal(event, Reason::UnknownPublicClient),
    }
    if client.disabled {
        return refusal(event, Reason::ClientDisabled);
    }
    Ok(Authenticated::Confidential(client))
}

/// The `iss` of an unverified assertion, only to find which client's key verifies it.
fn unverified_issuer(assertion: &str) -> Option<String> {
    let payload = assertion.split('.').nth(1)?;
    let bytes = health_core::b64url_decode(payload)?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    value.get("iss")?.as_str().map(str::to_owned)
}
