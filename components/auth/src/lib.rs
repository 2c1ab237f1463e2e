//! The `auth` component: the tenants' authorization server (ARCHITECTURE.md §4).
//!
//! Users in the `identity` database (argon2id), password login with lockout per user and
//! source, TOTP MFA, access tokens signed by `jwks` over service chaining (nested JWE for
//! insurers, encrypted by `jwks` too: `auth` never holds a private key), rotating refresh
//! tokens with family revocation on reuse, logout and logout-all, the OAuth token endpoint
//! (`refresh_token`, `client_credentials`, RFC 8693 token exchange of a tenant's OpenID provider's
//! token: `federation`), RFC 7662 introspection, RFC 7009 revocation, the
//! validation service, self-service password change, per-tenant OIDC discovery, and the admin API for users and insurer
//! clients. Every security event is audited; no secret ever reaches a log, error or audit row.
//! A request whose stores do not answer within seconds is refused with 503
//! (`health_spin::stores`), before it is audited.

// The Spin SDK and wit-bindgen macros expand to the component ABI's `unsafe` glue.
#![allow(unsafe_code)]

mod account;
mod admin;
mod federation;
mod grants;
mod internal;
mod issue;
mod login;
mod portal;
mod sessions;
mod signin;

use std::collections::BTreeMap;

use health_core::audit::{Event, Outcome};
use health_core::routes::MAX_AUTH_BODY_BYTES;
use health_core::trace::TraceParent;
use health_core::{DEMO_TENANT, Problem, Reason, Role, TenantId, ratelimit};
use health_identity::lockout::LockoutPolicy;
use health_spin::{log, respond, stores};
use serde::de::DeserializeOwned;
use spin_sdk::http::{Method, Request, Response};
use spin_sdk::http_component;

/// The first-party web client every password login is issued to (a public client).
pub const WEB_CLIENT: &str = "health-web";

/// [`WEB_CLIENT`] as the client id it is (tested below).
pub fn web_client() -> health_core::ClientId {
    health_core::ClientId::parse(WEB_CLIENT).expect("WEB_CLIENT is a valid client id")
}
/// Insurer tokens never live longer than this, whatever is configured (ARCHITECTURE.md §4).
const MAX_INSURER_TTL: i64 = 300;
/// Every store `auth` uses, checked by its store probe before each request.
const STORES: stores::Stores =
    stores::Stores { key_value: &["revocations", "public-keys"], sqlite: &["identity", "audit"] };

#[derive(Debug, Clone, PartialEq, Eq)]
enum Api {
    Login,
    MfaEnroll,
    MfaConfirm,
    Token,
    Logout,
    LogoutAll,
    Introspect,
    Revoke,
    Validate,
    ChangePassword,
    Discovery(TenantId),
    /// OIDC Back-Channel Logout from the tenant's provider.
    BackchannelLogout(TenantId),
    /// The gateway asking whether a tenant's provider's access token is accepted.
    ProviderAccessToken,
    /// A Security Event Token (CAEP) pushed by the tenant's provider.
    SecurityEvent(TenantId),
    /// Browser sign-in with the tenant's provider (`signin`): the start and the callback.
    SignInStart(TenantId),
    SignInCallback(TenantId),
    /// Whether the tenant offers that sign-in (the portal's button).
    SignInOffer(TenantId),
    Admin(admin::AdminApi),
    Internal(internal::InternalApi),
}

/// Every refusal this component answers with: the platform's one vocabulary, whose
/// `problem()` decides each status and whose response headers `respond::refusal` adds. `auth`
/// records the precise audit reason on its event as it goes (many are known only there), so a
/// refusal's own reason is the fallback.
pub(crate) type Error = health_core::Refusal;
pub(crate) use health_spin::respond::Failure;

/// The refusal of a bearer token, for the reason `health_spin`'s checks gave as text. Every
/// such reason is in the vocabulary; `auth` records the text on its event as given.
pub(crate) fn unauthenticated(reason: Reason) -> Error {
    Error::Unauthenticated(reason)
}

fn error_response(error: &Error) -> Response {
    respond::refusal(error)
}

fn parse(method: &Method, path: &str) -> Result<Api, Error> {
    let segments = health_spin::segments(path);
    let post = |api: Api| if *method == Method::Post { Ok(api) } else { Err(Error::MethodNotAllowed) };
    match segments.as_slice() {
        ["auth", "login"] => post(Api::Login),
        // The portal's session (`portal`): login, the refresh grant and logout, the refresh token
        // in a cookie; the same endpoints to rate limits, told apart by their path in `dispatch`.
        ["auth", "portal", "login"] => post(Api::Login),
        ["auth", "portal", "refresh"] => post(Api::Token),
        ["auth", "portal", "logout"] => post(Api::Logout),
        ["auth", "mfa", "enroll"] => post(Api::MfaEnroll),
        ["auth", "mfa", "confirm"] => post(Api::MfaConfirm),
        ["auth", "token"] => post(Api::Token),
        ["auth", "logout"] => post(Api::Logout),
        ["auth", "logout-all"] => post(Api::LogoutAll),
        ["auth", "introspect"] => post(Api::Introspect),
        ["auth", "revoke"] => post(Api::Revoke),
        ["api", "auth", "validate"] => post(Api::Validate),
        ["api", "auth", "change-password"] => post(Api::ChangePassword),
        ["t", tenant, ".well-known", "openid-configuration"] => {
            let tenant = TenantId::parse(tenant).map_err(|_| Error::NotFound(Reason::NoSuchRoute))?;
            if *method == Method::Get { Ok(Api::Discovery(tenant)) } else { Err(Error::MethodNotAllowed) }
        }
        ["auth", "federation", tenant, "backchannel-logout"] => {
            let tenant = TenantId::parse(tenant).map_err(|_| Error::NotFound(Reason::NoSuchRoute))?;
            post(Api::BackchannelLogout(tenant))
        }
        ["auth", "federation", tenant, "events"] => {
            let tenant = TenantId::parse(tenant).map_err(|_| Error::NotFound(Reason::NoSuchRoute))?;
            post(Api::SecurityEvent(tenant))
        }
        ["auth", "federation", tenant] => {
            let tenant = TenantId::parse(tenant).map_err(|_| Error::NotFound(Reason::NoSuchRoute))?;
            if *method == Method::Get { Ok(Api::SignInOffer(tenant)) } else { Err(Error::MethodNotAllowed) }
        }
        ["auth", "federation", tenant, step @ ("authorize" | "callback")] => {
            let tenant = TenantId::parse(tenant).map_err(|_| Error::NotFound(Reason::NoSuchRoute))?;
            let api = if *step == "authorize" { Api::SignInStart(tenant) } else { Api::SignInCallback(tenant) };
            if *method == Method::Get { Ok(api) } else { Err(Error::MethodNotAllowed) }
        }
        ["auth", "admin", rest @ ..] => admin::parse(method, rest).map(Api::Admin),
        ["internal", "federation", "access-token"] => post(Api::ProviderAccessToken),
        ["internal", rest @ ..] => internal::parse(method, rest).map(Api::Internal),
        _ => Err(Error::NotFound(Reason::NoSuchRoute)),
    }
}

/// Settings from the component's variables, read once per request.
pub(crate) struct Settings {
    pub demo: bool,
    pub issuer_base: String,
    pub access_ttl: i64,
    pub insurer_ttl: i64,
    pub refresh_ttl: i64,
    pub lockout: LockoutPolicy,
    pub mfa_roles: Vec<Role>,
}

impl Settings {
    fn load() -> anyhow::Result<Self> {
        let lockout = LockoutPolicy::new(
            health_spin::var_i64("lockout_max_failures")?,
            health_spin::var_i64("lockout_duration_secs")?,
        )
        .ok_or_else(|| anyhow::anyhow!("lockout_max_failures must be 1-1000 and lockout_duration_secs 1s-30d"))?;
        let mfa_roles = health_spin::var("mfa_required_roles")?
            .split(',')
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(|r| Role::parse(r).ok_or_else(|| anyhow::anyhow!("mfa_required_roles: unknown role {r:?}")))
            .collect::<anyhow::Result<_>>()?;
        Ok(Self {
            demo: health_spin::var("demo_tenant")? == "true",
            issuer_base: health_spin::var("issuer_base")?.trim_end_matches('/').to_owned(),
            access_ttl: health_spin::var_i64("access_token_ttl_secs")?,
            insurer_ttl: health_spin::var_i64("insurer_token_ttl_secs")?.clamp(1, MAX_INSURER_TTL),
            refresh_ttl: health_spin::var_i64("refresh_token_ttl_secs")?,
            lockout,
            mfa_roles,
        })
    }

    pub fn issuer(&self, tenant: &TenantId) -> String {
        format!("{}/t/{tenant}", self.issuer_base)
    }

    pub fn token_endpoint(&self) -> String {
        format!("{}/auth/token", self.issuer_base)
    }

    /// Whether `tenant` exists: it has keys in `public-keys`, or it is the demo tenant, whose
    /// keys `jwks` creates on first use.
    pub fn tenant_exists(&self, tenant: &TenantId) -> anyhow::Result<bool> {
        Ok((self.demo && tenant.as_str() == DEMO_TENANT) || health_spin::tokens::tenant_exists(tenant)?)
    }
}

/// Everything a handler needs: the request, the clock, settings and the audit event it fills.
pub(crate) struct Ctx<'a> {
    pub req: &'a Request,
    pub now: i64,
    pub settings: Settings,
}

impl Ctx<'_> {
    pub fn db(&self) -> anyhow::Result<spin_sdk::sqlite::Connection> {
        health_spin::identity::open(self.settings.demo)
    }

    pub fn client_addr(&self) -> Option<&str> {
        self.req.header("spin-client-addr").and_then(|v| v.as_str())
    }

    /// The body as JSON of type `T`, after the media-type and size checks.
    pub fn json<T: DeserializeOwned>(&self, usage: &'static str) -> Result<T, Error> {
        if !media_type_is(self.req, "application/json") {
            return Err(Error::UnsupportedMediaType);
        }
        if self.req.body().len() > MAX_AUTH_BODY_BYTES {
            return Err(Error::TooLarge);
        }
        serde_json::from_slice(self.req.body()).map_err(|_| Error::BadRequest(Reason::MalformedRequest, usage.into()))
    }

    /// The body as an OAuth form (RFC 6749 §3.2: form-encoded, no repeated parameters).
    pub fn form(&self) -> Result<BTreeMap<String, String>, Error> {
        let oauth = |detail| Error::OAuth { status: 400, code: "invalid_request", detail };
        if !media_type_is(self.req, "application/x-www-form-urlencoded") {
            return Err(Error::UnsupportedMediaType);
        }
        if self.req.body().len() > MAX_AUTH_BODY_BYTES {
            return Err(Error::TooLarge);
        }
        health_identity::form::parse(self.req.body())
            .map_err(|_| oauth("the body must be a form without repeated parameters"))
    }
}

fn media_type_is(req: &Request, expected: &str) -> bool {
    req.header("content-type")
        .and_then(|v| v.as_str())
        .and_then(|c| c.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case(expected))
}

/// Marks `event` with the outcome of the request and appends it; an audit failure fails the
/// request, so nothing is issued unaudited.
fn finish(event: &mut Event, outcome: &Result<Response, Error>) -> anyhow::Result<()> {
    // A refusal answered in an endpoint's own format (RFC 8935's `{"err"}`) is a denial too.
    let allowed = outcome.as_ref().is_ok_and(|response| *response.status() < 400);
    event.outcome = Some(if allowed { Outcome::Allow } else { Outcome::Deny });
    event.status = match outcome {
        Ok(response) => *response.status(),
        Err(error) => error.problem().status,
    };
    if event.reason.is_empty() {
        event.reason = if allowed { Reason::Ok } else { Reason::Refused }.into();
    }
    health_spin::audit::append(event)
}

/// Attributes `event` to `tenant`, and the request's log lines with it.
pub(crate) fn for_tenant(event: &mut Event, tenant: &TenantId) {
    event.tenant_id = tenant.to_string();
    log::set_tenant(tenant.as_str());
}

#[http_component]
async fn handle(incoming: spin_sdk::http::IncomingRequest, out: spin_sdk::http::ResponseOutparam) {
    respond::send(out, answer(incoming).await);
}

async fn answer(incoming: spin_sdk::http::IncomingRequest) -> Response {
    // The caller's trace, if it sent one (the gateway's chained calls and clients that trace).
    let trace = incoming
        .headers()
        .get(health_core::trace::HEADER)
        .first()
        .and_then(|value| std::str::from_utf8(value).ok())
        .and_then(TraceParent::parse);
    log::begin("auth", None, trace);
    let req = match health_spin::single_credential(incoming).await {
        Ok(req) => req,
        Err(refused) => return refused,
    };
    if req.path() == stores::PROBE_PATH {
        return stores::answer_probe("auth", &STORES);
    }
    if let Err(e) = stores::probe("auth").await {
        // Not audited: `audit` may be the store that does not answer; nothing was done.
        log::warn("refused_without_audit", e.to_string());
        return respond::problem(&Problem::unavailable());
    }
    match serve(&req).await {
        Ok(response) => response,
        Err(e) if stores::is_unavailable(&e) => {
            log::error("unavailable", &e);
            respond::problem(&Problem::unavailable())
        }
        Err(e) => {
            log::error("internal_error", &e);
            respond::problem(&Problem::internal())
        }
    }
}

async fn serve(req: &Request) -> anyhow::Result<Response> {
    let api = match parse(req.method(), req.path()) {
        Ok(api) => api,
        Err(error) => return Ok(error_response(&error)),
    };
    let now = health_spin::now();
    let mut event = health_spin::audit::request_event(req, now);
    log::begin("auth", Some(&event.request_id), log::trace());
    let mut limits = Vec::new();
    if let (Some(class), Some(address)) = (rate_class(&api), event.client_ip.as_deref().map(ratelimit::client_ip)) {
        limits = health_spin::ratelimit::count(class, &[ratelimit::Who::Address(address)], now)?;
        if !health_spin::ratelimit::allowed(&limits) {
            // Audited like any refusal, with the endpoint named (a bounded set of labels).
            event.action = format!("auth.{}", endpoint(&api));
            event.reason = Reason::RateLimited.into();
            finish(&mut event, &Err(Error::RateLimited))?;
            let mut response = error_response(&Error::RateLimited);
            health_spin::ratelimit::set_headers(&mut response, &limits);
            return Ok(response);
        }
    }
    let mut response = dispatch(req, api, now, &mut event).await?;
    health_spin::ratelimit::set_headers(&mut response, &limits);
    Ok(response)
}

/// The rate-limit class of an endpoint; `None` for the chained internal routes.
fn rate_class(api: &Api) -> Option<ratelimit::Class> {
    use ratelimit::Class;
    Some(match api {
        Api::Login | Api::MfaEnroll | Api::MfaConfirm | Api::Token | Api::Logout | Api::LogoutAll => Class::Login,
        Api::Introspect | Api::Revoke | Api::ChangePassword | Api::BackchannelLogout(_) | Api::SecurityEvent(_) => {
            Class::Login
        }
        Api::SignInStart(_) | Api::SignInCallback(_) => Class::Login,
        Api::Validate | Api::Discovery(_) | Api::SignInOffer(_) => Class::Read,
        Api::Admin(_) => Class::Admin,
        Api::Internal(_) | Api::ProviderAccessToken => return None,
    })
}

/// A bounded name of the endpoint, for the audit event of a refusal made before its handler.
fn endpoint(api: &Api) -> &'static str {
    match api {
        Api::Login => "login",
        Api::MfaEnroll => "mfa.enroll",
        Api::MfaConfirm => "mfa.confirm",
        Api::Token => "token",
        Api::Logout => "logout",
        Api::LogoutAll => "logout_all",
        Api::Introspect => "introspect",
        Api::Revoke => "revoke",
        Api::Validate => "validate",
        Api::ChangePassword => "change_password",
        Api::Discovery(_) => "discovery",
        Api::BackchannelLogout(_) => "backchannel_logout",
        Api::ProviderAccessToken => "internal",
        Api::SecurityEvent(_) => "security_event",
        Api::SignInStart(_) => "federation.authorize",
        Api::SignInCallback(_) => "federation.callback",
        Api::SignInOffer(_) => "federation.offer",
        Api::Admin(_) => "admin",
        Api::Internal(_) => "internal",
    }
}

/// Runs the endpoint's handler and audits its outcome.
async fn dispatch(req: &Request, api: Api, now: i64, event: &mut Event) -> anyhow::Result<Response> {
    let ctx = Ctx { req, now, settings: Settings::load()? };
    let answered = |outcome: Result<Response, Failure>| {
        Failure::split(outcome).map(|outcome| outcome.unwrap_or_else(|e| error_response(&e)))
    };
    let from_portal = req.path().starts_with(portal::COOKIE_PATH);
    // A portal refresh refused for its token also clears the cookie: the session it held is over
    // (not one refused as cross-site: another site must not end the session).
    let clears_cookie = from_portal && api == Api::Token;
    let outcome = match api {
        Api::Login if from_portal => portal::login(&ctx, event).await,
        Api::Token if from_portal => portal::refresh(&ctx, event).await,
        Api::Logout if from_portal => portal::logout(&ctx, event).await,
        Api::Login => login::login(&ctx, event).await,
        Api::MfaEnroll => login::enroll(&ctx, event),
        Api::MfaConfirm => login::confirm(&ctx, event),
        Api::Token => grants::token(&ctx, event).await,
        Api::Logout => sessions::logout(&ctx, event, false).await,
        Api::LogoutAll => sessions::logout(&ctx, event, true).await,
        Api::Introspect => sessions::introspect(&ctx, event).await,
        Api::ChangePassword => account::change_password(&ctx, event).await,
        Api::Revoke => sessions::revoke(&ctx, event).await,
        Api::BackchannelLogout(tenant) => federation::backchannel_logout(&ctx, &tenant, event).await,
        Api::SecurityEvent(tenant) => federation::security_event(&ctx, &tenant, event).await,
        Api::SignInStart(tenant) => signin::authorize(&ctx, &tenant, event).await,
        Api::SignInCallback(tenant) => signin::callback(&ctx, &tenant, event).await,
        // Not audited here: the gateway audits the request the token came with.
        Api::ProviderAccessToken => return federation::provider_access_token(&ctx).await,
        // High-volume reads that change nothing: not audited.
        Api::Validate => return answered(sessions::validate(&ctx).await),
        Api::Discovery(tenant) => return answered(sessions::discovery(&ctx, &tenant)),
        Api::SignInOffer(tenant) => return answered(signin::offer(&ctx, &tenant)),
        Api::Admin(api) => admin::handle(&ctx, api, event),
        Api::Internal(api) => match internal::handle(&ctx, api, event)? {
            (outcome, true) => outcome.map_err(Failure::from),
            (outcome, false) => return answered(outcome.map_err(Failure::from)),
        },
    };
    // An internal error is answered 500 (503 for a store that did not answer) by `handle`, and
    // not audited here: the request was not decided.
    let outcome = Failure::split(outcome)?;
    finish(event, &outcome)?;
    Ok(outcome.unwrap_or_else(|e| {
        let mut response = error_response(&e);
        if clears_cookie && e.problem().status == 400 {
            portal::clear_cookie(&mut response);
        }
        response
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_web_client_id_is_a_client_id() {
        assert_eq!(web_client().as_str(), WEB_CLIENT);
    }

    #[test]
    fn routes_each_endpoint_with_its_method() {
        assert_eq!(parse(&Method::Post, "/auth/login"), Ok(Api::Login));
        assert_eq!(parse(&Method::Post, "/auth/token"), Ok(Api::Token));
        assert_eq!(parse(&Method::Post, "/auth/mfa/enroll"), Ok(Api::MfaEnroll));
        assert_eq!(parse(&Method::Post, "/api/auth/validate"), Ok(Api::Validate));
        assert_eq!(parse(&Method::Post, "/api/auth/change-password"), Ok(Api::ChangePassword));
        assert_eq!(parse(&Method::Post, "/auth/portal/login"), Ok(Api::Login));
        assert_eq!(parse(&Method::Post, "/auth/portal/refresh"), Ok(Api::Token));
        assert_eq!(parse(&Method::Post, "/auth/portal/logout"), Ok(Api::Logout));
        assert_eq!(parse(&Method::Get, "/auth/portal/refresh"), Err(Error::MethodNotAllowed));
        assert_eq!(parse(&Method::Get, "/api/auth/change-password"), Err(Error::MethodNotAllowed));
        assert_eq!(
            parse(&Method::Get, "/t/demo-hospital/.well-known/openid-configuration"),
            Ok(Api::Discovery(TenantId::parse("demo-hospital").expect("tenant")))
        );
        assert_eq!(parse(&Method::Get, "/auth/login"), Err(Error::MethodNotAllowed));
        assert_eq!(
            parse(&Method::Post, "/t/demo-hospital/.well-known/openid-configuration"),
            Err(Error::MethodNotAllowed)
        );
        let not_found = Err(Error::NotFound(Reason::NoSuchRoute));
        assert_eq!(parse(&Method::Get, "/t/../.well-known/openid-configuration"), not_found);
        assert_eq!(parse(&Method::Post, "/auth/other"), not_found);
        assert_eq!(
            parse(&Method::Post, "/auth/federation/demo-hospital/backchannel-logout"),
            Ok(Api::BackchannelLogout(TenantId::parse("demo-hospital").expect("tenant")))
        );
        assert_eq!(
            parse(&Method::Get, "/auth/federation/demo-hospital/backchannel-logout"),
            Err(Error::MethodNotAllowed)
        );
        assert_eq!(parse(&Method::Post, "/auth/federation/../backchannel-logout"), not_found);
        assert_eq!(parse(&Method::Post, "/internal/federation/access-token"), Ok(Api::ProviderAccessToken));
        assert_eq!(
            parse(&Method::Post, "/auth/federation/demo-hospital/events"),
            Ok(Api::SecurityEvent(TenantId::parse("demo-hospital").expect("tenant")))
        );
        assert_eq!(parse(&Method::Get, "/internal/federation/access-token"), Err(Error::MethodNotAllowed));
        assert_eq!(
            parse(&Method::Get, "/auth/federation/demo-hospital/authorize"),
            Ok(Api::SignInStart(TenantId::parse("demo-hospital").expect("tenant")))
        );
        assert_eq!(
            parse(&Method::Get, "/auth/federation/demo-hospital/callback"),
            Ok(Api::SignInCallback(TenantId::parse("demo-hospital").expect("tenant")))
        );
        assert_eq!(parse(&Method::Post, "/auth/federation/demo-hospital/callback"), Err(Error::MethodNotAllowed));
        assert_eq!(
            parse(&Method::Get, "/auth/federation/demo-hospital"),
            Ok(Api::SignInOffer(TenantId::parse("demo-hospital").expect("tenant")))
        );
    }

    #[test]
    fn oauth_errors_carry_the_error_member_and_a_challenge() {
        let response = error_response(&Error::OAuth {
            status: 401,
            code: "invalid_client",
            detail: "client authentication failed",
        });
        assert_eq!(*response.status(), 401);
        let body: serde_json::Value = serde_json::from_slice(response.body()).expect("json");
        assert_eq!(body["error"], "invalid_client");
        assert!(response.header("www-authenticate").is_some());
        let locked = error_response(&Error::Locked { retry_after: 42 });
        assert_eq!(locked.header("retry-after").and_then(|v| v.as_str()), Some("42"));
    }

    #[test]
    fn each_refusal_keeps_its_status_and_headers() {
        let header =
            |response: &Response, name: &str| response.header(name).and_then(|v| v.as_str()).map(str::to_owned);
        let bearer = Some(r#"Bearer error="invalid_token""#.to_owned());
        let cases = [
            (Error::NotFound(Reason::NoSuchRoute), 404, None, None),
            (Error::MethodNotAllowed, 405, None, None),
            (Error::UnsupportedMediaType, 415, None, None),
            (Error::TooLarge, 413, None, None),
            (Error::BadRequest(Reason::MalformedRequest, "usage".into()), 400, None, None),
            (Error::InvalidCredentials(Reason::UnknownUser), 401, None, None),
            (Error::Locked { retry_after: 7 }, 429, None, Some("7".to_owned())),
            (Error::MfaRequired, 401, None, None),
            (Error::MfaEnrollmentRequired, 403, None, None),
            (unauthenticated(Reason::Expired), 401, bearer.clone(), None),
            (Error::Unauthenticated(Reason::ContextRefused), 401, bearer, None),
            (Error::ForbiddenWith(Reason::NotAnAdmin, "admins only".into()), 403, None, None),
            (Error::ConflictWith(Reason::UsernameTaken, "taken".into()), 409, None, None),
            (Error::WrongCurrentPassword, 403, None, None),
            (Error::RateLimited, 429, None, None),
            (
                Error::OAuth { status: 401, code: "invalid_client", detail: "d" },
                401,
                Some(r#"Basic realm="health-platform""#.to_owned()),
                None,
            ),
            (Error::OAuth { status: 400, code: "invalid_grant", detail: "d" }, 400, None, None),
        ];
        for (error, status, challenge, retry_after) in cases {
            let response = error_response(&error);
            assert_eq!(*response.status(), status, "{error:?}");
            assert_eq!(header(&response, "www-authenticate"), challenge, "{error:?}");
            assert_eq!(header(&response, "retry-after"), retry_after, "{error:?}");
            assert_eq!(header(&response, "content-type").as_deref(), Some("application/problem+json"));
        }
        assert_eq!(unauthenticated(Reason::Expired), Error::Unauthenticated(Reason::Expired));
    }
}
