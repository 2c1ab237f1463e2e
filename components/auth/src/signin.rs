//! Browser sign-in with a tenant's OpenID provider (issue 17 item 5, issue 19 item 1): the
//! authorization code flow with PKCE (OIDC Core §3.1, RFC 7636), ending as a portal session.
//!
//! `GET /auth/federation/{tenant}/authorize?return_to=/app/...` makes a `state`, a `nonce` and a
//! PKCE `code_verifier`, keeps them in `revocations` for [`decide::SIGN_IN_TTL_SECS`] under the
//! `state` (`health_spin::federation::start_sign_in`), with the hash of a random value it gives
//! the browser in a cookie scoped to the callback (so only the browser that started a sign-in
//! can finish it: no login CSRF), and redirects to the provider's `authorization_endpoint`
//! from its discovery document. `GET /auth/federation/{tenant}/callback?code&state` takes the
//! sign-in once, redeems the code at the `token_endpoint` (a public client proving PKCE), checks
//! the ID token exactly as the token exchange does plus its `nonce`
//! ([`decide::verify_sign_in`]), maps it to the local user as the exchange does
//! ([`crate::federation::local_subject`]), and signs the user in as the portal's login does:
//! the refresh token in the portal's cookie (`crate::portal`), 303 to `return_to`, where the
//! page restores its session with `/auth/portal/refresh`.
//!
//! Every refusal is audited with its reason and answered 400 with a short plain-text page.

use health_core::audit::Event;
use health_core::{Reason, Role, TenantId};
use health_identity::federation as decide;
use health_spin::federation::{self as store, PendingSignIn};
use health_spin::respond::{self, Cache};
use spin_sdk::http::Response;

use crate::issue::{self, Refresh};
use crate::{Ctx, Failure};

type Outcome = Result<Response, Failure>;

/// The cookie binding a sign-in to the browser that started it, sent only to the callbacks.
const BROWSER_COOKIE: &str = "health_signin";
const BROWSER_COOKIE_PATH: &str = "/auth/federation";
/// Where the portal lives: the default `return_to`.
const PORTAL: &str = "/app/";

/// A refusal: audited with `reason`, answered with a plain page saying what to do.
fn refuse(event: &mut Event, reason: Reason) -> Outcome {
    event.reason = reason.into();
    let page = format!(
        "Sign-in with your hospital's identity provider did not succeed ({}).\nGo back to {PORTAL} and try again.\n",
        reason.as_str()
    );
    Ok(respond::bytes(400, "text/plain; charset=utf-8", page.into_bytes(), Cache::NoStore))
}

fn query(ctx: &Ctx<'_>) -> Option<std::collections::BTreeMap<String, String>> {
    health_identity::form::parse(ctx.req.query().as_bytes()).ok()
}

/// The request's own origin (`scheme://host[:port]`), from Spin's `spin-full-url` as the
/// portal's same-origin check reads it.
fn own_origin(ctx: &Ctx<'_>) -> Option<String> {
    let url = ctx.req.header("spin-full-url").and_then(|v| v.as_str())?;
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?']).next().filter(|a| !a.is_empty())?;
    Some(format!("{scheme}://{authority}"))
}

fn browser_cookie(ctx: &Ctx<'_>) -> Option<String> {
    let cookies = ctx.req.header("cookie").and_then(|v| v.as_str())?;
    cookies
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == BROWSER_COOKIE)
        .map(|(_, v)| v.to_owned())
}

/// `SameSite=Lax`: the provider sends the browser back by a top-level GET from its own site,
/// which a `Strict` cookie would not come with.
fn browser_set_cookie(value: &str, max_age: i64) -> String {
    format!("{BROWSER_COOKIE}={value}; Path={BROWSER_COOKIE_PATH}; Max-Age={max_age}; HttpOnly; Secure; SameSite=Lax")
}

/// `GET /auth/federation/{tenant}`: whether the tenant offers a browser sign-in with its
/// provider (enabled, with a discovery document), for the portal's sign-in page; nothing of the
/// settings but that. An unknown tenant offers none. Public and not audited, as the tenant's
/// discovery document is.
pub fn offer(ctx: &Ctx<'_>, tenant: &TenantId) -> Outcome {
    let offered = ctx.settings.tenant_exists(tenant)?
        && store::settings(&ctx.db()?, tenant)?.is_some_and(|s| s.enabled && s.discovery_url.is_some());
    let body = serde_json::json!({
        "tenant_id": tenant,
        "sign_in": offered,
        "authorize": offered.then(|| format!("/auth/federation/{tenant}/authorize")),
    });
    Ok(respond::json(200, &body, Cache::NoStore))
}

/// `GET /auth/federation/{tenant}/authorize`.
pub async fn authorize(ctx: &Ctx<'_>, tenant: &TenantId, event: &mut Event) -> Outcome {
    event.action = "auth.federation.authorize".into();
    event.resource = format!("tenant/{tenant}/federation");
    let Some(query) = query(ctx) else { return refuse(event, Reason::MalformedRequest) };
    let return_to = match query.get("return_to") {
        None => PORTAL,
        Some(asked) => match decide::same_origin_path(asked) {
            Some(path) => path,
            None => return refuse(event, Reason::SignInReturnToRefused),
        },
    };
    if !ctx.settings.tenant_exists(tenant)? {
        return refuse(event, Reason::UnknownTenant);
    }
    crate::for_tenant(event, tenant);
    let db = ctx.db()?;
    let Some(settings) = store::settings(&db, tenant)?.filter(|s| s.enabled) else {
        return refuse(event, Reason::FederationDisabled);
    };
    let Some(origin) = own_origin(ctx) else { return refuse(event, Reason::MalformedRequest) };
    let endpoints = match store::endpoints(&settings).await {
        Ok(endpoints) => endpoints,
        Err(e) => {
            health_spin::log::warn("provider_discovery_unusable", format!("{e:#}"));
            return refuse(event, Reason::SignInUnavailable);
        }
    };
    let state = health_spin::random_id();
    let nonce = health_spin::random_id();
    // RFC 7636 §4.1: 43 to 128 characters; 256 random bits.
    let code_verifier = format!("{}{}", health_spin::random_id(), health_spin::random_id());
    let browser = format!("{}{}", health_spin::random_id(), health_spin::random_id());
    let redirect_uri = format!("{origin}/auth/federation/{tenant}/callback");
    let pending = PendingSignIn {
        tenant: tenant.clone(),
        nonce: nonce.clone(),
        code_verifier: code_verifier.clone(),
        redirect_uri: redirect_uri.clone(),
        return_to: return_to.to_owned(),
        expires_at: ctx.now + decide::SIGN_IN_TTL_SECS,
        browser_hash: health_core::sha256_hex(&browser),
    };
    store::start_sign_in(&health_spin::revocations::open()?, &state, &pending)?;
    let challenge = decide::pkce_challenge(&code_verifier);
    let location = decide::authorization_url(
        &endpoints.authorization_endpoint,
        &[
            ("response_type", "code"),
            ("client_id", &settings.audience),
            ("redirect_uri", &redirect_uri),
            ("scope", "openid email"),
            ("state", &state),
            ("nonce", &nonce),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ],
    );
    event.reason = Reason::ProviderSignInStarted.into();
    let mut response = respond::bytes(302, "text/plain", Vec::new(), Cache::NoStore);
    response.set_header("location", location);
    response.set_header("set-cookie", browser_set_cookie(&browser, decide::SIGN_IN_TTL_SECS));
    Ok(response)
}

/// `GET /auth/federation/{tenant}/callback`.
pub async fn callback(ctx: &Ctx<'_>, tenant: &TenantId, event: &mut Event) -> Outcome {
    event.action = "auth.federation.callback".into();
    event.resource = format!("tenant/{tenant}/federation");
    let Some(query) = query(ctx) else { return refuse(event, Reason::MalformedRequest) };
    let kv = health_spin::revocations::open()?;
    let taken = match query.get("state") {
        Some(state) => store::take_sign_in(&kv, state, ctx.now)?,
        None => None,
    };
    let Some(pending) = taken.filter(|p| p.tenant == *tenant) else {
        return refuse(event, Reason::SignInStateUnknown);
    };
    crate::for_tenant(event, tenant);
    let from_its_browser =
        browser_cookie(ctx).is_some_and(|v| health_core::token_matches_hash(&v, &pending.browser_hash));
    if !from_its_browser {
        return refuse(event, Reason::SignInStateUnknown);
    }
    // OIDC Core §3.1.2.6: the provider sent the browser back with an error, not a code.
    let Some(code) = query.get("code").filter(|c| !c.is_empty() && !query.contains_key("error")) else {
        return refuse(event, Reason::SignInCodeRefused);
    };
    let db = ctx.db()?;
    let Some(settings) = store::settings(&db, tenant)?.filter(|s| s.enabled) else {
        return refuse(event, Reason::FederationDisabled);
    };
    let endpoints = match store::endpoints(&settings).await {
        Ok(endpoints) => endpoints,
        Err(e) => {
            health_spin::log::warn("provider_discovery_unusable", format!("{e:#}"));
            return refuse(event, Reason::SignInUnavailable);
        }
    };
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", pending.redirect_uri.as_str()),
        ("client_id", settings.audience.as_str()),
        ("code_verifier", pending.code_verifier.as_str()),
    ];
    let id_token = match store::redeem_code(&endpoints.token_endpoint, &form).await {
        Ok(id_token) => id_token,
        Err(e) => {
            health_spin::log::warn("provider_code_refused", format!("{e:#}"));
            return refuse(event, Reason::SignInCodeRefused);
        }
    };
    let cooldown = settings.jwks_refetch_cooldown_secs.max(1);
    let Some((keys, _)) = store::provider_keys(&kv, tenant, &settings, &id_token, ctx.now, cooldown).await? else {
        return refuse(event, Reason::ProviderKeysUnavailable);
    };
    let verified = match decide::verify_sign_in(&id_token, &keys, &settings, ctx.now, &pending.nonce) {
        Ok(verified) => verified,
        Err(refused) => return refuse(event, refused.reason()),
    };
    let subject = match crate::federation::local_subject(ctx, &db, &kv, tenant, &settings, &verified, event)? {
        Ok(subject) => subject,
        Err(reason) => return refuse(event, reason),
    };
    // An insurer's systems use client credentials and nested JWEs, never a browser session.
    if subject.role == Role::Insurance {
        return refuse(event, Reason::SignInInsurerRefused);
    }
    let issued = issue::issue(ctx, &db, &subject, Refresh::NewFamily, event).await?;
    let Some(refresh) = issued.refresh_token else {
        return Err(anyhow::anyhow!("a new family without a refresh token").into());
    };
    event.reason = Reason::ProviderSignIn.into();
    let mut response = respond::bytes(303, "text/plain", Vec::new(), Cache::NoStore);
    response.set_header("location", pending.return_to);
    let max_age = crate::portal::IDLE_SECS.min(ctx.settings.refresh_ttl);
    response.set_header("set-cookie", crate::portal::set_cookie(&refresh, max_age));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_browser_cookie_is_http_only_secure_lax_and_scoped_to_the_callbacks() {
        assert_eq!(
            browser_set_cookie("abc", 600),
            "health_signin=abc; Path=/auth/federation; Max-Age=600; HttpOnly; Secure; SameSite=Lax"
        );
    }
}
