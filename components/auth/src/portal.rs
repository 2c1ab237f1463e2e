//! The portal's session (README, Portal): `/auth/portal/login`, `/auth/portal/refresh` and
//! `/auth/portal/logout`, the same login, refresh rotation and logout as `/auth/login`,
//! `/auth/token` and `/auth/logout`, with the refresh token in a cookie instead of the body:
//! `HttpOnly` (no script reads it, the portal's own included), `Secure`, `SameSite=Strict`,
//! `Path=/auth/portal` (sent to these three endpoints only). The page keeps only the access
//! token, in memory; after a reload it asks `refresh` for a new one.
//!
//! A cookie is sent by the browser on its own, so each endpoint refuses a request another site
//! could make it send (CSRF): it must carry `X-Health-Portal: 1`, a header no cross-site form
//! can set and no cross-site script may send without a CORS preflight this component never
//! grants, and an `Origin` whose host is the request's own (its `Host`, which Spin passes as
//! `spin-full-url`; `Sec-Fetch-Site`, when the browser sends it, must say `same-origin`).
//!
//! Timeouts: the absolute one is the refresh family's (`refresh_token_ttl_secs`, from the
//! login); the idle one is [`IDLE_SECS`]: a portal refresh token unused that long is refused
//! and its family revoked, so a session nobody touches ends on the server, whatever the page
//! does.

use health_core::Reason;
use health_core::audit::Event;
use spin_sdk::http::Response;

use crate::{Ctx, Error, Failure};

type Outcome = Result<Response, Failure>;

/// The cookie's name and the only path it is sent to.
pub const COOKIE: &str = "health_portal_refresh";
pub const COOKIE_PATH: &str = "/auth/portal";
/// A portal session unused this long (no refresh) ends: its next refresh is refused.
pub const IDLE_SECS: i64 = 30 * 60;
/// The header a portal request must carry.
pub const HEADER: &str = "x-health-portal";

/// The CSRF checks above; `Err` with the reason on `event`.
fn same_origin(ctx: &Ctx<'_>, event: &mut Event) -> Result<(), Error> {
    let header = |name: &str| ctx.req.header(name).and_then(|v| v.as_str()).map(str::trim);
    // The authority the browser addressed: Spin gives the request's URL (from its `Host`) as
    // `spin-full-url`; WASI HTTP passes no `Host` header itself.
    let authority =
        |url: &str| url.split_once("://").map(|(_, rest)| rest.split('/').next().unwrap_or_default().to_owned());
    let host = header("spin-full-url").and_then(authority);
    let origin_host = header("origin").and_then(authority);
    let fetch_site_ok = header("sec-fetch-site").is_none_or(|site| site == "same-origin");
    if header(HEADER) == Some("1") && host.is_some() && origin_host == host && fetch_site_ok {
        return Ok(());
    }
    event.reason = Reason::PortalCrossSiteRefused.into();
    Err(Error::ForbiddenWith(
        Reason::PortalCrossSiteRefused,
        "a portal session request must come from the portal itself (X-Health-Portal and Origin)".into(),
    ))
}

/// The refresh token the browser sent in the portal's cookie.
fn cookie(ctx: &Ctx<'_>) -> Option<String> {
    let cookies = ctx.req.header("cookie").and_then(|v| v.as_str())?;
    cookies
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, v)| v.to_owned())
}

pub(crate) fn set_cookie(value: &str, max_age: i64) -> String {
    format!("{COOKIE}={value}; Path={COOKIE_PATH}; Max-Age={max_age}; HttpOnly; Secure; SameSite=Strict")
}

/// A token response with its `refresh_token` moved from the body into the cookie.
fn into_cookie(response: Response, max_age: i64) -> anyhow::Result<Response> {
    if *response.status() != 200 {
        return Ok(response);
    }
    let mut body: serde_json::Value = serde_json::from_slice(response.body())?;
    let refresh = body.as_object_mut().and_then(|b| b.remove("refresh_token"));
    let mut out = health_spin::respond::json(200, &body, health_spin::respond::Cache::NoStore);
    if let Some(serde_json::Value::String(refresh)) = refresh {
        out.set_header("set-cookie", set_cookie(&refresh, max_age));
    }
    Ok(out)
}

/// Clears the cookie on `response` (a refused refresh: the session it held is over).
pub fn clear_cookie(response: &mut Response) {
    response.set_header("set-cookie", set_cookie("", 0));
}

/// `POST /auth/portal/login`: `/auth/login`, the refresh token in the cookie.
pub async fn login(ctx: &Ctx<'_>, event: &mut Event) -> Outcome {
    same_origin(ctx, event)?;
    let response = crate::login::login(ctx, event).await?;
    event.action = "auth.portal.login".into();
    Ok(into_cookie(response, IDLE_SECS.min(ctx.settings.refresh_ttl))?)
}

/// `POST /auth/portal/refresh`: the cookie's refresh token rotated (as `/auth/token` does),
/// refused once idle for [`IDLE_SECS`]; a new access token in the body, the next refresh token
/// in the cookie. The caller clears the cookie on a refusal.
pub async fn refresh(ctx: &Ctx<'_>, event: &mut Event) -> Outcome {
    event.action = "auth.portal.refresh".into();
    same_origin(ctx, event)?;
    let Some(presented) = cookie(ctx) else {
        event.reason = Reason::MalformedRefreshToken.into();
        return Err(crate::grants::INVALID_GRANT.into());
    };
    let response = crate::grants::refresh_token(ctx, &presented, None, Some(IDLE_SECS), event).await;
    event.action = "auth.portal.refresh".into();
    Ok(into_cookie(response?, IDLE_SECS.min(ctx.settings.refresh_ttl))?)
}

/// `POST /auth/portal/logout`: `/auth/logout` (the bearer token and its refresh family
/// revoked), and the cookie cleared.
pub async fn logout(ctx: &Ctx<'_>, event: &mut Event) -> Outcome {
    same_origin(ctx, event)?;
    let mut response = crate::sessions::logout(ctx, event, false).await?;
    event.action = "auth.portal.logout".into();
    response.set_header("set-cookie", set_cookie("", 0));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_is_http_only_secure_strict_and_scoped_to_the_portal_endpoints() {
        let cookie = set_cookie("abc", 1800);
        assert_eq!(
            cookie,
            "health_portal_refresh=abc; Path=/auth/portal; Max-Age=1800; HttpOnly; Secure; SameSite=Strict"
        );
    }
}
