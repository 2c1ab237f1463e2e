//! The `gateway` component: every `/api/...` request enters here. It verifies the bearer token
//! against the tenant's public keys in `public-keys`, in the fixed order of ARCHITECTURE.md §4
//! (a nested JWE is first decrypted by `jwks` over chaining, the only call it makes for a
//! token), checks revocation, spends one-time insurer tokens, asks the composed `policy`, forwards
//! to the private role service with an HMAC-attested caller context, and writes one audit
//! event per request to `audit`. If that write fails the request fails: no unaudited access.
//! Every authentication failure is the same 401; the precise reason goes only to the audit log.

// The Spin SDK and wit-bindgen macros expand to the component ABI's `unsafe` glue.
#![allow(unsafe_code)]

use anyhow::Context;
use health_core::audit::{Event, Outcome};
use health_core::{Caller, PatientId, Problem, Role};
use health_spin::authz;
use health_spin::respond::{self, Cache};
use health_spin::service::REASON_HEADER;
use health_spin::{nested, tokens};
use spin_sdk::http::{Method, Request, Response};
use spin_sdk::http_component;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Api {
    ReadRecord(PatientId),
}

impl Api {
    fn action(&self) -> authz::Action {
        match self {
            Api::ReadRecord(_) => authz::Action::ReadRecord,
        }
    }

    fn family(&self) -> &'static str {
        match self {
            Api::ReadRecord(_) => "patients",
        }
    }

    fn patient(&self) -> Option<&PatientId> {
        match self {
            Api::ReadRecord(p) => Some(p),
        }
    }

    /// The role service and path this request is forwarded to.
    fn upstream(&self, role: Role) -> Option<(&'static str, String)> {
        let service = match role {
            Role::Patient => "patient",
            Role::Doctor => "doctor",
            Role::Lab | Role::Insurance | Role::Admin => return None,
        };
        match self {
            Api::ReadRecord(p) => Some((service, format!("/patients/{p}/record"))),
        }
    }
}

fn parse(method: &Method, path: &str) -> Option<Api> {
    match (method, health_spin::segments(path).as_slice()) {
        (Method::Get, ["api", "patients", id, "record"]) => PatientId::parse(id).ok().map(Api::ReadRecord),
        _ => None,
    }
}

/// Why a request was refused before reaching a service.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Refusal {
    Unauthenticated(&'static str),
    NotFound,
    Forbidden(String),
}

#[http_component]
async fn handle(req: Request) -> Response {
    let mut event = Event {
        action: format!("{} {}", req.method(), req.path().chars().take(256).collect::<String>()),
        resource: req.path().chars().take(256).collect(),
        ..health_spin::audit::request_event(&req, health_spin::now())
    };
    let response = match process(&req, &mut event).await {
        Ok(response) => response,
        Err(e) => {
            eprintln!("gateway: internal error: {e:#}");
            event.outcome = Some(Outcome::Error);
            event.reason = "internal_error".into();
            respond::problem(&Problem::internal())
        }
    };
    event.status = response.status().to_owned();
    if let Err(e) = health_spin::audit::append(&event) {
        // Fail closed: whatever the service answered is withheld.
        eprintln!("gateway: audit write failed: {e:#}");
        return respond::problem(&Problem::unavailable());
    }
    response
}

async fn process(req: &Request, event: &mut Event) -> anyhow::Result<Response> {
    let refusal = match authenticate(req, event).await? {
        Err(reason) => Refusal::Unauthenticated(reason),
        Ok(caller) => match parse(req.method(), req.path()) {
            None => Refusal::NotFound,
            Some(api) => {
                event.patient_id = api.patient().map(ToString::to_string);
                event.policy_version = Some(authz::policy_version());
                let route = authz::Resource::Route(api.family().into());
                let decision = authz::authorize(&authz::caller(&caller), api.action(), &route);
                match (decision.allow, api.upstream(caller.role)) {
                    (true, Some((service, path))) => {
                        return forward(req, &caller, service, &path, event).await;
                    }
                    (true, None) => Refusal::Forbidden("no_service_for_role".into()),
                    (false, _) => Refusal::Forbidden(decision.reason),
                }
            }
        },
    };
    event.outcome = Some(Outcome::Deny);
    Ok(match refusal {
        Refusal::Unauthenticated(reason) => {
            event.reason = reason.into();
            respond::problem(&Problem::unauthorized())
        }
        Refusal::NotFound => {
            event.reason = "no_such_route".into();
            respond::problem(&Problem::not_found())
        }
        Refusal::Forbidden(reason) => {
            event.reason = reason;
            respond::problem(&Problem::forbidden())
        }
    })
}

/// Verifies the bearer token (ARCHITECTURE.md §4) and returns the caller, or the precise reason.
/// Insurer tokens must come encrypted and are good for one request: the first use spends the
/// `jti` atomically and every later or concurrent use is refused.
async fn authenticate(req: &Request, event: &mut Event) -> anyhow::Result<Result<Caller, &'static str>> {
    let token = match tokens::bearer_token(req) {
        Ok(token) => token,
        Err(reason) => return Ok(Err(reason)),
    };
    let verified = match nested::verify(token, event.time, "gateway").await? {
        Ok(verified) => verified,
        Err(reason) => return Ok(Err(reason)),
    };
    let claims = verified.claims;
    // From here on the event is attributable to the verified tenant.
    event.tenant_id = claims.tenant_id.to_string();
    event.actor_sub = Some(claims.sub.clone());
    event.actor_role = Some(claims.role.clone());
    event.client_id = Some(claims.client_id.clone());
    event.jti = Some(claims.jti.clone());
    let Some(role) = Role::parse(&claims.role) else {
        return Ok(Err("unknown_role"));
    };
    if role == Role::Insurance {
        if !verified.encrypted {
            return Ok(Err("insurer_token_not_encrypted"));
        }
        if !tokens::spend_once(&claims.tenant_id, &claims.jti, claims.exp, event.time)? {
            return Ok(Err("one_time_token_replayed"));
        }
    }
    Ok(Ok(Caller {
        tenant_id: claims.tenant_id,
        subject: claims.sub,
        role,
        client_id: claims.client_id,
        scopes: claims.scope.split(' ').filter(|s| !s.is_empty()).map(str::to_owned).collect(),
        jti: claims.jti,
    }))
}

async fn forward(
    req: &Request,
    caller: &Caller,
    service: &str,
    path: &str,
    event: &mut Event,
) -> anyhow::Result<Response> {
    let base = format!("http://{service}.spin.internal");
    let mut request =
        health_spin::chain::attested(req.method().clone(), &base, path, req.body().to_vec(), caller, event.time)?;
    request.header("x-request-id", event.request_id.clone());
    let upstream: Response =
        spin_sdk::http::send(request.build()).await.with_context(|| format!("forwarding to {service}"))?;
    let status = upstream.status().to_owned();
    event.reason = header_of(&upstream, REASON_HEADER).unwrap_or("upstream_no_reason").chars().take(64).collect();
    event.outcome = Some(if status < 400 { Outcome::Allow } else { Outcome::Deny });
    if status == 401 {
        // A service refusing our own attestation is a platform fault, not the client's.
        anyhow::bail!("{service} refused the gateway's caller context ({})", event.reason);
    }
    if status >= 500 {
        return Ok(respond::problem(&Problem::internal()));
    }
    let content_type = header_of(&upstream, "content-type").unwrap_or("application/json").to_owned();
    Ok(respond::bytes(status, &content_type, upstream.into_body(), Cache::NoStore))
}

fn header_of<'a>(response: &'a Response, name: &str) -> Option<&'a str> {
    response.header(name).and_then(|v| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_record_reads_with_valid_ids_only() {
        let id = PatientId::parse("p-1001").unwrap();
        assert_eq!(parse(&Method::Get, "/api/patients/p-1001/record"), Some(Api::ReadRecord(id)));
        assert_eq!(parse(&Method::Get, "/api/patients/..%2Fx/record"), None);
        assert_eq!(parse(&Method::Post, "/api/patients/p-1001/record"), None);
        assert_eq!(parse(&Method::Get, "/api/patients/p-1001/record/extra"), None);
    }

    #[test]
    fn only_patient_and_doctor_roles_have_a_record_service() {
        let api = Api::ReadRecord(PatientId::parse("p-1").unwrap());
        assert_eq!(api.upstream(Role::Patient), Some(("patient", "/patients/p-1/record".into())));
        assert_eq!(api.upstream(Role::Doctor).map(|u| u.0), Some("doctor"));
        assert_eq!(api.upstream(Role::Admin), None);
    }
}
