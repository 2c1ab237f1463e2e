//! The `auth` component: tenants' users in the `identity` database (argon2id password hashes)
//! and `POST /auth/login`, which issues an RS256 access token (ARCHITECTURE.md §4) signed by
//! `jwks` over service chaining; `auth` never holds a private key. Every login, successful or
//! not, is audited without any secret. MFA, refresh tokens, lockout and introspection are not
//! here yet.

// The Spin SDK and wit-bindgen macros expand to the component ABI's `unsafe` glue.
#![allow(unsafe_code)]

mod identity;

use anyhow::Context;
use health_core::audit::{Event, Outcome};
use health_core::{Caller, Problem, Role, TenantId, Username};
use health_jose::Claims;
use health_spin::respond::{self, Cache};
use serde::Deserialize;
use spin_sdk::http::{Method, Request, Response};
use spin_sdk::http_component;

/// Audience of every access token the platform issues.
pub const AUDIENCE: &str = "health-platform";
const CLIENT_ID: &str = "health-web";
const MAX_BODY: usize = 8 * 1024;
const SIGN_URL: &str = "http://jwks.spin.internal/internal/sign";

#[derive(Debug, PartialEq, Eq)]
enum Api {
    Login(Login),
}

#[derive(Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    tenant: TenantId,
    username: Username,
    password: String,
}

#[derive(Debug, PartialEq, Eq)]
enum Error {
    NotFound,
    MethodNotAllowed,
    UnsupportedMediaType,
    TooLarge,
    BadRequest(&'static str),
    InvalidCredentials,
}

fn parse(method: &Method, path: &str, content_type: Option<&str>, body: &[u8]) -> Result<Api, Error> {
    match path {
        "/auth/login" => {
            if *method != Method::Post {
                return Err(Error::MethodNotAllowed);
            }
            let media = content_type.and_then(|c| c.split(';').next()).map(str::trim);
            if !media.is_some_and(|m| m.eq_ignore_ascii_case("application/json")) {
                return Err(Error::UnsupportedMediaType);
            }
            if body.len() > MAX_BODY {
                return Err(Error::TooLarge);
            }
            let login: Login = serde_json::from_slice(body)
                .map_err(|_| Error::BadRequest("body must be {\"tenant\",\"username\",\"password\"}"))?;
            if login.password.is_empty() || login.password.len() > 1024 {
                return Err(Error::BadRequest("password must be 1-1024 bytes"));
            }
            Ok(Api::Login(login))
        }
        _ => Err(Error::NotFound),
    }
}

fn error_response(error: &Error) -> Response {
    let problem = match error {
        Error::NotFound => Problem::not_found(),
        Error::MethodNotAllowed => Problem::method_not_allowed(),
        Error::UnsupportedMediaType => Problem::unsupported_media_type(),
        Error::TooLarge => Problem::payload_too_large(),
        Error::BadRequest(detail) => Problem::bad_request(*detail),
        Error::InvalidCredentials => Problem::invalid_credentials(),
    };
    respond::problem(&problem)
}

#[http_component]
async fn handle(req: Request) -> Response {
    let content_type = req.header("content-type").and_then(|v| v.as_str());
    let api = match parse(req.method(), req.path(), content_type, req.body()) {
        Ok(api) => api,
        Err(error) => return error_response(&error),
    };
    let result = match api {
        Api::Login(login) => login_flow(&req, login).await,
    };
    match result {
        Ok(Ok(response)) => response,
        Ok(Err(error)) => error_response(&error),
        Err(e) => {
            eprintln!("auth: internal error: {e:#}");
            respond::problem(&Problem::internal())
        }
    }
}

fn scopes(role: Role) -> &'static str {
    match role {
        Role::Patient => "patient/records.read patient/results.read consents.write",
        Role::Doctor => "patient/records.read patient/records.write",
        Role::Lab => "lab/orders.read lab/results.write",
        Role::Insurance => "insurance/summary.read",
        Role::Admin => "admin/audit.read admin/users.write",
    }
}

async fn login_flow(req: &Request, login: Login) -> anyhow::Result<Result<Response, Error>> {
    let now = health_spin::now();
    let db = identity::open(health_spin::var("demo_tenant")? == "true")?;
    let user = identity::authenticate(&db, &login.tenant, &login.username, &login.password)?;
    let mut event = Event {
        time: now,
        request_id: health_spin::random_id(),
        tenant_id: login.tenant.to_string(),
        client_id: Some(CLIENT_ID.into()),
        action: "auth.login".into(),
        resource: format!("tenant/{}/users/{}", login.tenant, login.username),
        client_ip: req.header("spin-client-addr").and_then(|v| v.as_str()).map(str::to_owned),
        user_agent: req.header("user-agent").and_then(|v| v.as_str()).map(|s| s.chars().take(256).collect()),
        ..Event::default()
    };
    let Some(user) = user else {
        event.outcome = Some(Outcome::Deny);
        event.reason = "invalid_credentials".into();
        event.status = 401;
        health_spin::audit::append(&event)?;
        return Ok(Err(Error::InvalidCredentials));
    };
    let ttl = health_spin::var_i64("access_token_ttl_secs")?;
    let issuer = format!("{}/t/{}", health_spin::var("issuer_base")?.trim_end_matches('/'), login.tenant);
    let claims = Claims {
        iss: issuer,
        sub: user.user_id.clone(),
        aud: AUDIENCE.into(),
        exp: now + ttl,
        iat: now,
        nbf: now,
        jti: health_spin::random_id(),
        tenant_id: login.tenant.clone(),
        role: user.role.as_str().into(),
        scope: scopes(user.role).into(),
        client_id: CLIENT_ID.into(),
        amr: vec!["pwd".into()],
        auth_time: now,
    };
    let signed = sign(&claims, user.role, now).await?;
    event.actor_sub = Some(user.user_id);
    event.actor_role = Some(user.role.as_str().into());
    event.jti = Some(claims.jti);
    event.kid = Some(signed.kid);
    event.outcome = Some(Outcome::Allow);
    event.reason = "token_issued".into();
    event.status = 200;
    health_spin::audit::append(&event)?;
    let body = serde_json::json!({ "access_token": signed.token, "token_type": "Bearer", "expires_in": ttl });
    Ok(Ok(respond::json(200, &body, Cache::NoStore)))
}

#[derive(Deserialize)]
struct Signed {
    token: String,
    kid: String,
}

/// Asks `jwks` to sign, attesting the request with `context_key` like the gateway does.
async fn sign(claims: &Claims, role: Role, now: i64) -> anyhow::Result<Signed> {
    let body = serde_json::to_vec(claims)?;
    let caller = Caller {
        tenant_id: claims.tenant_id.clone(),
        subject: claims.sub.clone(),
        role,
        client_id: claims.client_id.clone(),
        scopes: claims.scope.split(' ').map(str::to_owned).collect(),
        jti: claims.jti.clone(),
    };
    let key = health_spin::secret_key("context_key")?;
    let att = health_core::context::attest(&key, "POST", "/internal/sign", &body, &caller, now);
    let request = Request::builder()
        .method(Method::Post)
        .uri(SIGN_URL)
        .header("content-type", "application/json")
        .header(health_core::context::CALLER_HEADER, att.caller)
        .header(health_core::context::TIMESTAMP_HEADER, att.timestamp)
        .header(health_core::context::MAC_HEADER, att.mac)
        .body(body)
        .build();
    let response: Response = spin_sdk::http::send(request).await.context("calling jwks to sign")?;
    anyhow::ensure!(*response.status() == 200, "jwks refused to sign: status {}", response.status());
    serde_json::from_slice(response.body()).context("decoding jwks sign response")
}

#[cfg(test)]
mod tests {
    use super::*;

    const JSON: Option<&str> = Some("application/json");

    #[test]
    fn parses_a_login() {
        let body = br#"{"tenant":"demo-hospital","username":"alice","password":"pw"}"#;
        let Ok(Api::Login(login)) = parse(&Method::Post, "/auth/login", JSON, body) else { panic!("not a login") };
        assert_eq!(login.username.as_str(), "alice");
    }

    #[test]
    fn refuses_malformed_logins() {
        let ok = br#"{"tenant":"demo-hospital","username":"alice","password":"pw"}"#;
        assert_eq!(parse(&Method::Get, "/auth/login", JSON, ok), Err(Error::MethodNotAllowed));
        assert_eq!(parse(&Method::Post, "/auth/login", Some("text/plain"), ok), Err(Error::UnsupportedMediaType));
        assert_eq!(parse(&Method::Post, "/auth/login", None, ok), Err(Error::UnsupportedMediaType));
        let traversal = br#"{"tenant":"../x","username":"alice","password":"pw"}"#;
        assert!(matches!(parse(&Method::Post, "/auth/login", JSON, traversal), Err(Error::BadRequest(_))));
        let extra = br#"{"tenant":"t","username":"a","password":"p","role":"admin"}"#;
        assert!(matches!(parse(&Method::Post, "/auth/login", JSON, extra), Err(Error::BadRequest(_))));
        let empty = br#"{"tenant":"t","username":"a","password":""}"#;
        assert!(matches!(parse(&Method::Post, "/auth/login", JSON, empty), Err(Error::BadRequest(_))));
        assert_eq!(parse(&Method::Post, "/auth/login", JSON, &vec![b' '; MAX_BODY + 1]), Err(Error::TooLarge));
        assert_eq!(parse(&Method::Post, "/auth/other", JSON, ok), Err(Error::NotFound));
    }
}
