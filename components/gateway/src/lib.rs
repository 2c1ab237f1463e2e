//! The `gateway` component: every `/api/...` request enters here. It verifies the bearer token
//! against the tenant's public keys in `public-keys`, in the fixed order of ARCHITECTURE.md §4
//! (a nested JWE is first decrypted by `jwks` over chaining, the only call it makes for a
//! token), checks revocation, spends one-time insurer tokens, parses the route
//! (`health_core::routes`), checks size and media type, asks the composed `policy` for the
//! route, forwards to the private role service with an HMAC-attested caller context, and writes
//! one audit event per request to `audit`. If that write fails the request fails: no unaudited
//! access. The admin's audit queries, export, chain check and break-glass review are answered
//! here from `audit`; `/metrics` derives its counters from the same log, and `/health` checks
//! the stores. Every authentication failure is the same 401; the precise reason goes only to
//! the audit log. Before any of that, a probe in another instance checks that the stores
//! answer (`health_spin::stores`): if they do not within seconds the request is refused with
//! 503 instead of waiting on them.

// The Spin SDK and wit-bindgen macros expand to the component ABI's `unsafe` glue.
#![allow(unsafe_code)]

mod alerts;
mod federation;
mod self_service;

use anyhow::Context;
use health_core::audit::{Event, Outcome};
use health_core::ratelimit::{self as ratelimit_core, Class, Verdict, Who};
use health_core::routes::{self, Api, Service};
use health_core::trace::{self, TraceParent};
use health_core::{Caller, Component, Link, Problem, Reason, Refusal, Role};
use health_spin::audit::{self as audit_log, Selection};
use health_spin::authz;
use health_spin::chain::CALL_DEADLINE;
use health_spin::respond::{self, Cache};
use health_spin::service::{CHANGE_HEADER, REASON_HEADER};
use health_spin::{log, nested, ratelimit, stores, tokens};
use spin_sdk::http::conversions::TryFromIncomingRequest;
use spin_sdk::http::{IncomingRequest, Method, Request, Response};
use spin_sdk::http_component;

/// The policy action and route family of a request, for the gateway's coarse check.
fn route_rule(api: &Api) -> Option<(authz::Action, &'static str)> {
    use authz::Action as A;
    Some(match api {
        Api::Demographics(_) => (A::ReadDemographics, "patients"),
        Api::EditDemographics(_) => (A::EditDemographics, "patients"),
        Api::Records(_) => (A::ReadRecord, "patients"),
        // A record's history is read as the record is: one decision.
        Api::RecordHistory(..) => (A::ReadRecord, "patients"),
        Api::AddRecord(_) | Api::UpdateRecord(_) => (A::WriteRecord, "patients"),
        Api::LabResults(_) => (A::ReadLabResults, "patients"),
        Api::BreakGlass(_) => (A::BreakGlass, "patients"),
        Api::GrantConsent(_) | Api::RevokeConsent(..) => (A::ManageConsent, "patients"),
        Api::LabOrders => (A::ListLabOrders, "lab"),
        Api::AddLabResult(_) => (A::AppendLabResult, "lab"),
        Api::Summary(_) => (A::ReadSummary, "insurance"),
        Api::Audit(_) | Api::AuditExport(_) | Api::AuditVerify | Api::BreakGlassReview(_) => (A::ReadAudit, "admin"),
        // Alerts are read from the audit log, and acknowledging one is the admin's review of it.
        Api::Alerts(_) | Api::AcknowledgeAlert(_) => (A::ReadAudit, "admin"),
        Api::ErasePatient(_) => (A::ErasePatient, "admin"),
        Api::RegisterPatient => (A::RegisterPatient, "admin"),
        Api::LinkPatientAccount(_) => (A::LinkPatientAccount, "admin"),
        Api::RotateDataKey => (A::RotateDataKey, "admin"),
        Api::AccessLog(..) => (A::ReadAccessLog, "patients"),
        Api::Export(_) => (A::ExportData, "patients"),
        Api::CareTeam(_) => (A::ReadCareTeam, "patients"),
        Api::AddCareTeamMember(..) => (A::AddCareTeamMember, "patients"),
        Api::EndCareTeamMembership(..) => (A::ManageCareTeam, "patients"),
        Api::CareTeamPatients => (A::ListCareTeamPatients, "care-team"),
        Api::OwnRecord => (A::FindOwnRecord, "patients"),
        Api::Labs | Api::RegisterLab | Api::AttachLabMember(..) | Api::DetachLabMember(..) => (A::ManageLabs, "admin"),
        Api::OrderLabTest(_) => (A::OrderLabTest, "patients"),
        Api::PatientLabOrders(_) => (A::ReadLabOrders, "patients"),
        Api::BadQuery(_) => return None,
    })
}

/// The rate-limit class of a request: the admin family, else by method.
fn rate_class(api: Option<&Api>, method: &Method) -> Class {
    match api.and_then(route_rule) {
        Some((_, "admin")) => Class::Admin,
        _ if matches!(method, Method::Get | Method::Head) => Class::Read,
        _ => Class::Write,
    }
}

/// The service that answers a role's reads of a patient's record: the patient's own service, or
/// the clinicians' (`doctor`). What each may read there is the policy's to decide.
fn record_reader(role: Role) -> Option<Service> {
    match role {
        Role::Patient => Some(Service::Patient),
        Role::Doctor | Role::Nurse | Role::Pharmacist => Some(Service::Doctor),
        Role::Lab | Role::Insurance | Role::Admin | Role::Receptionist => None,
    }
}

/// Which component answers a request from a caller of `role`.
fn upstream(api: &Api, role: Role) -> Option<Service> {
    Some(match api {
        // The front desk's demographics are the patient service's, which owns patient identity.
        Api::Demographics(_) if role == Role::Receptionist => Service::Patient,
        Api::Demographics(_) | Api::Records(_) | Api::LabResults(_) => return record_reader(role),
        Api::EditDemographics(_) => Service::Patient,
        Api::AddRecord(_) | Api::UpdateRecord(_) | Api::BreakGlass(_) => Service::Doctor,
        Api::GrantConsent(_) | Api::RevokeConsent(..) | Api::ErasePatient(_) | Api::RotateDataKey => Service::Patient,
        // Patient identity is the patient service's: it owns the records database.
        Api::RegisterPatient | Api::LinkPatientAccount(_) => Service::Patient,
        Api::LabOrders | Api::AddLabResult(_) => Service::Lab,
        // Lab organisations are the patient service's: a member must be an enabled lab user,
        // asked of `auth` over the patient → auth link. Orders are the clinicians' service's.
        Api::Labs | Api::RegisterLab | Api::AttachLabMember(..) | Api::DetachLabMember(..) => Service::Patient,
        Api::OrderLabTest(_) => Service::Doctor,
        // Read as the lab results are, by the same services.
        Api::PatientLabOrders(_) => return record_reader(role),
        Api::Summary(_) => Service::Insurance,
        Api::Audit(_) | Api::AuditExport(_) | Api::AuditVerify | Api::BreakGlassReview(_) => Service::Gateway,
        Api::Alerts(_) | Api::AcknowledgeAlert(_) => Service::Gateway,
        // The patient service decides (it knows the record's owner); the gateway adds the log.
        Api::AccessLog(..) => match role {
            Role::Patient | Role::Admin => Service::Patient,
            _ => return None,
        },
        Api::Export(_) => Service::Patient,
        // The patient service owns patient identity and asks `auth` about the member; a doctor's
        // reads of the team they are on, and of their own patients, are the doctor service's.
        Api::CareTeam(_) => match role {
            Role::Patient | Role::Admin => Service::Patient,
            _ => return record_reader(role),
        },
        Api::AddCareTeamMember(..) | Api::EndCareTeamMembership(..) => Service::Patient,
        Api::CareTeamPatients => Service::Doctor,
        // The patient service owns the link between an account and its record.
        Api::OwnRecord => Service::Patient,
        // A record's history is read as the record is, by the same services.
        Api::RecordHistory(..) => return record_reader(role),
        Api::BadQuery(_) => return None,
    })
}

/// Every store the gateway reads or writes, checked by its store probe before each request.
const STORES: stores::Stores = stores::Stores { key_value: &["public-keys", "revocations"], sqlite: &["audit"] };

/// The one mapping from a refusal to the gateway's response and the event's outcome and reason.
fn answer(refusal: Refusal, event: &mut Event) -> Response {
    event.outcome = Some(Outcome::Deny);
    event.reason = refusal.reason();
    // The problem and the headers it needs (the bare `Bearer` challenge without credentials).
    respond::refusal(&refusal)
}

#[http_component]
async fn handle(incoming: IncomingRequest, out: spin_sdk::http::ResponseOutparam) {
    respond::send(out, serve(incoming).await);
}

async fn serve(incoming: IncomingRequest) -> Response {
    // spin-sdk's `Request` keeps one value per header name (the last), so a repeated
    // `Authorization` is counted on the raw fields: two credentials are ambiguous (a proxy may
    // check one and we use the other), and are refused.
    let started = std::time::Instant::now();
    let authorizations = incoming.headers().get("authorization").len();
    // The client's trace, or a new one (a malformed `traceparent` is ignored, W3C §3.2).
    let trace = incoming
        .headers()
        .get(trace::HEADER)
        .first()
        .and_then(|value| std::str::from_utf8(value).ok())
        .and_then(TraceParent::parse)
        .unwrap_or_else(|| TraceParent::start(&mut health_spin::rng()));
    log::begin("gateway", None, Some(trace));
    let req = match Request::try_from_incoming_request(incoming).await {
        Ok(req) => req,
        Err(e) => {
            log::warn("unreadable_request", e.to_string());
            return respond::problem(&Problem::bad_request("the request could not be read"));
        }
    };
    if req.path() == stores::PROBE_PATH {
        return stores::answer_probe("gateway", &STORES);
    }
    if req.path() == "/health" {
        return health().await;
    }
    if let Err(e) = stores::probe("gateway").await {
        // Not audited: the audit database may be the store that does not answer, and nothing
        // was read or served.
        log::warn("refused_without_audit", e.to_string());
        return respond::problem(&Problem::unavailable());
    }
    let path = req.path_and_query().unwrap_or(req.path()).to_owned();
    let method = req.method().to_string();
    let api = routes::parse(&method, &path);
    let mut event = Event {
        // A bounded label (a route template, never an id), so metrics stay small.
        action: match (&api, req.path()) {
            (Some(api), _) => api.template().to_owned(),
            (None, "/metrics") => "GET /metrics".to_owned(),
            (None, _) => format!("{} unmatched", method.chars().take(16).collect::<String>()),
        },
        // Only path words, validated ids and query parameter names: never token text or values.
        resource: routes::audit_resource(&path),
        trace_id: Some(trace.trace_id_hex()),
        ..health_spin::audit::request_event(&req, health_spin::now())
    };
    log::begin("gateway", Some(&event.request_id), Some(trace));
    let mut limits = Vec::new();
    let outcome = if req.path() == "/metrics" {
        metrics(&req, authorizations, &mut event)
    } else {
        process(&req, authorizations, &path, api, &mut event, &mut limits).await
    };
    let mut response = match outcome {
        Ok(response) => response,
        Err(e) if stores::is_unavailable(&e) => {
            log::error("store_unavailable", &e);
            event.outcome = Some(Outcome::Error);
            event.reason = Reason::StoreUnavailable.into();
            respond::problem(&Problem::unavailable())
        }
        Err(e) => {
            log::error("internal_error", &e);
            event.outcome = Some(Outcome::Error);
            event.reason = Reason::InternalError.into();
            respond::problem(&Problem::internal())
        }
    };
    ratelimit::set_headers(&mut response, &limits);
    event.status = response.status().to_owned();
    event.duration_ms = Some(i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX));
    if let Err(e) = health_spin::audit::append(&event) {
        // Fail closed: whatever the service answered is withheld.
        log::error("audit_write_failed", &e);
        response = respond::problem(&Problem::unavailable());
    }
    response.set_header("x-request-id", event.request_id);
    // The alert outbox: due webhook deliveries, after this request is on record.
    health_spin::alerts::deliver_due(event.time).await;
    response
}

async fn process(
    req: &Request,
    authorizations: usize,
    path: &str,
    api: Option<Api>,
    event: &mut Event,
    limits: &mut Vec<Verdict>,
) -> anyhow::Result<Response> {
    let class = rate_class(api.as_ref(), req.method());
    // Per address before anything costly: a flood of forged tokens is refused before its
    // signatures are checked.
    if let Some(address) = event.client_ip.as_deref().map(ratelimit_core::client_ip) {
        limits.extend(ratelimit::count(class, &[Who::Address(address)], event.time)?);
        if !ratelimit::allowed(limits) {
            return Ok(answer(Refusal::RateLimited, event));
        }
    }
    if authorizations > 1 {
        return Ok(answer(Refusal::Unauthenticated(Reason::MissingOrRepeatedAuthorization), event));
    }
    let caller = match authenticate(req, event).await? {
        Ok(caller) => caller,
        Err(reason) if !offers_bearer(req) => return Ok(answer(Refusal::NoCredentials(reason), event)),
        Err(reason) => return Ok(answer(Refusal::Unauthenticated(reason), event)),
    };
    // Per subject too: one stolen token used from many addresses is still one subject.
    let subject = Who::Subject { tenant: caller.tenant_id.as_str(), subject: caller.subject.as_str() };
    limits.extend(ratelimit::count(class, &[subject], event.time)?);
    if !ratelimit::allowed(limits) {
        return Ok(answer(Refusal::RateLimited, event));
    }
    let api = match api {
        None => return Ok(answer(Refusal::NotFound(Reason::NoSuchRoute), event)),
        Some(Api::BadQuery(reason)) => {
            return Ok(answer(Refusal::BadRequest(reason, routes::bad_query_detail(reason)), event));
        }
        Some(api) => api,
    };
    event.patient_id = api.patient().map(ToString::to_string);
    event.policy_version = Some(authz::policy_version());
    if let Err(refusal) = check_body(req, &api) {
        return Ok(answer(refusal, event));
    }
    let Some((action, family)) = route_rule(&api) else {
        return Ok(answer(Refusal::NotFound(Reason::NoSuchRoute), event));
    };
    let decision = authz::authorize(&authz::caller(&caller), action, &authz::Resource::Route(family.into()));
    if !decision.allow {
        return Ok(answer(Refusal::Forbidden(decision.reason), event));
    }
    if let Api::BreakGlass(_) = api {
        // The stated reason is part of the audit trail and the admins' review queue.
        match routes::body::<routes::BreakGlass>(req.body()) {
            Ok(body) => event.break_glass_reason = Some(body.reason.chars().take(1000).collect()),
            Err(_) => {
                let detail = "body member reason must be 10 to 1000 bytes of text, and the only member";
                return Ok(answer(Refusal::BadRequest(Reason::BadBreakGlassReason, detail.into()), event));
            }
        }
    }
    match upstream(&api, caller.role) {
        None => Ok(answer(Refusal::forbidden(Reason::NoServiceForRole), event)),
        Some(Service::Gateway) => admin(&api, &caller, event),
        Some(service) if self_service::completes(&api) => {
            let answer = forward(req, &api, path, &caller, service.name(), event).await?;
            self_service::complete(&api, &caller, answer, event.time)
        }
        Some(service) => forward(req, &api, path, &caller, service.name(), event).await,
    }
}

/// Whether the request offers bearer credentials at all: an `Authorization` field with the
/// `Bearer` scheme (RFC 6750 §3.1 leaves the error code out for a request without any).
fn offers_bearer(req: &Request) -> bool {
    req.headers().any(|(name, value)| {
        let scheme = value.as_bytes().split(|b| *b == b' ').next().unwrap_or_default();
        name.eq_ignore_ascii_case("authorization") && scheme.eq_ignore_ascii_case(b"bearer")
    })
}

/// Body size, media type, and no body where none is expected (ARCHITECTURE.md §9).
fn check_body(req: &Request, api: &Api) -> Result<(), Refusal> {
    let body = req.body();
    if body.len() > routes::MAX_BODY_BYTES {
        return Err(Refusal::TooLarge);
    }
    if !api.takes_json() {
        return if body.is_empty() {
            Ok(())
        } else {
            Err(Refusal::BadRequest(Reason::UnexpectedBody, "this route takes no request body".into()))
        };
    }
    let media_type = req
        .header("content-type")
        .and_then(|v| v.as_str())
        .map(|v| v.split(';').next().unwrap_or_default().trim().to_ascii_lowercase());
    if media_type.as_deref() != Some("application/json") {
        return Err(Refusal::UnsupportedMediaType);
    }
    Ok(())
}

/// Verifies the bearer token (ARCHITECTURE.md §4) and returns the caller, or the precise reason.
/// Insurer tokens must come encrypted and are good for one request: the first use spends the
/// `jti` atomically and every later or concurrent use is refused.
async fn authenticate(req: &Request, event: &mut Event) -> anyhow::Result<Result<Caller, Reason>> {
    let token = match tokens::bearer_token(req) {
        Ok(token) => token,
        Err(reason) => return Ok(Err(reason)),
    };
    let verified = match nested::verify(token, event.time, Component::Gateway).await? {
        Ok(verified) => verified,
        // Not the platform's (no `tenant_id`): perhaps a tenant's provider's access token.
        Err(Reason::MissingClaim) if token.split('.').count() == 3 => {
            return federation::authenticate(token, event, Reason::MissingClaim).await;
        }
        Err(reason) => return Ok(Err(reason)),
    };
    let claims = verified.claims;
    // From here on the event is attributable to the verified tenant.
    event.tenant_id = claims.tenant_id.to_string();
    log::set_tenant(&event.tenant_id);
    event.actor_sub = Some(claims.sub.clone());
    event.actor_role = Some(claims.role.clone());
    event.client_id = Some(claims.client_id.clone());
    event.jti = Some(claims.jti.clone());
    let Some(role) = Role::parse(&claims.role) else {
        return Ok(Err(Reason::UnknownRole));
    };
    if role == Role::Insurance {
        if !verified.encrypted {
            return Ok(Err(Reason::InsurerTokenNotEncrypted));
        }
        if !tokens::spend_once(&claims.tenant_id, &claims.jti, claims.exp, event.time)? {
            return Ok(Err(Reason::OneTimeTokenReplayed));
        }
    }
    let ids = match tokens::ids(&claims) {
        Ok(ids) => ids,
        Err(reason) => return Ok(Err(reason)),
    };
    let enc_jwk = claims.enc_jwk.map(serde_json::to_value).transpose().context("encoding the recipient key")?;
    Ok(Ok(Caller {
        tenant_id: claims.tenant_id,
        subject: ids.sub,
        role,
        client_id: ids.client_id,
        scopes: claims.scope.split(' ').filter(|s| !s.is_empty()).map(str::to_owned).collect(),
        jti: ids.jti,
        enc_jwk,
    }))
}

async fn forward(
    req: &Request,
    api: &Api,
    path: &str,
    caller: &Caller,
    service: &str,
    event: &mut Event,
) -> anyhow::Result<Response> {
    // Each role service has its own link, and key, from the gateway.
    let link = Component::parse(service)
        .and_then(|to| Link::new(Component::Gateway, to))
        .with_context(|| format!("no link from the gateway to {service}"))?;
    let (method, body) = (req.method().clone(), req.body().to_vec());
    let mut request = health_spin::chain::forwarded(link, method, api.template(), path, body, caller, event.time)?;
    request.header("x-request-id", event.request_id.clone());
    if let Some(content_type) = header_of_request(req, "content-type") {
        request.header("content-type", content_type);
    }
    if *req.method() != Method::Get {
        // A change is made by the service before the outcome event below can be written, and
        // the audit log is another database: so the intent is written first, fail-closed. If
        // it cannot be, nothing is forwarded; if the outcome event then fails, the change is
        // still on record under this request id.
        let pending = audit_log::pending(event);
        if let Err(e) = audit_log::append(&pending) {
            anyhow::bail!(stores::Unavailable(format!("audit log refused the pending event: {e:#}")));
        }
    }
    // Bounded: the service's `records` database is not in the gateway's probe. A write that
    // finishes after the deadline has happened although the client got 503.
    let sent = health_spin::deadline::within(CALL_DEADLINE, spin_sdk::http::send::<_, Response>(request.build())).await;
    let Ok(sent) = sent else {
        anyhow::bail!(stores::Unavailable(format!("{service} did not answer within {CALL_DEADLINE:?}")));
    };
    let upstream = sent.with_context(|| format!("forwarding to {service}"))?;
    let status = upstream.status().to_owned();
    event.reason =
        header_of(&upstream, REASON_HEADER).unwrap_or(Reason::UpstreamNoReason.as_str()).chars().take(64).collect();
    event.outcome = Some(match status {
        ..400 => Outcome::Allow,
        500.. => Outcome::Error,
        _ => Outcome::Deny,
    });
    if status == 401 {
        // A service refusing our own attestation is a platform fault, not the client's.
        anyhow::bail!("{service} refused the gateway's caller context ({})", event.reason);
    }
    if status >= 500 {
        return Ok(respond::problem(&Problem::internal()));
    }
    // What a correction changed (entry, versions, keyed digests: no text), into the audit event;
    // only from a correction's answer, so no other route's service can put one on record.
    event.record_change = header_of(&upstream, CHANGE_HEADER)
        .filter(|_| status < 300 && matches!(api, Api::UpdateRecord(_)))
        .and_then(|value| serde_json::from_str::<health_core::audit::RecordChange>(value).ok())
        .filter(health_core::audit::RecordChange::is_well_formed);
    let content_type = header_of(&upstream, "content-type").unwrap_or("application/json").to_owned();
    Ok(respond::bytes(status, &content_type, upstream.into_body(), Cache::NoStore))
}

fn header_of<'a>(response: &'a Response, name: &str) -> Option<&'a str> {
    response.header(name).and_then(|v| v.as_str())
}

fn header_of_request<'a>(request: &'a Request, name: &str) -> Option<&'a str> {
    request.header(name).and_then(|v| v.as_str())
}

/// The tenant admin's audit routes, answered from the `audit` database: queries, NDJSON export
/// (redacted when `audit_redaction` is `strict`), the chain check and the break-glass queue.
/// Only the caller's own tenant, whatever is asked.
fn admin(api: &Api, caller: &Caller, event: &mut Event) -> anyhow::Result<Response> {
    let tenant = caller.tenant_id.to_string();
    let decision =
        authz::authorize(&authz::caller(caller), authz::Action::ReadAudit, &authz::Resource::Tenant(tenant.clone()));
    if !decision.allow {
        return Ok(answer(Refusal::Forbidden(decision.reason), event));
    }
    event.outcome = Some(Outcome::Allow);
    event.reason = decision.reason;
    let page = |events: Vec<audit_log::Stored>| {
        let next_after = events.last().map(|e| e.seq);
        serde_json::json!({ "tenant_id": tenant, "events": events, "next_after": next_after })
    };
    Ok(match api {
        Api::Audit(filter) => {
            respond::json(200, &page(audit_log::query(&tenant, filter, Selection::All)?), Cache::NoStore)
        }
        Api::BreakGlassReview(filter) => {
            respond::json(200, &page(audit_log::query(&tenant, filter, Selection::BreakGlass)?), Cache::NoStore)
        }
        Api::AuditExport(filter) => {
            respond::bytes(200, "application/x-ndjson", audit_log::export_ndjson(&tenant, filter)?, Cache::NoStore)
        }
        Api::AuditVerify => respond::json(200, &audit_log::verify_report(&tenant, event.time)?, Cache::NoStore),
        Api::Alerts(_) | Api::AcknowledgeAlert(_) => alerts::answer(api, caller, event)?,
        _ => anyhow::bail!("not an audit route: {}", api.template()),
    })
}

/// `GET /health`: 200 when every store the gateway uses answers within
/// [`stores::PROBE_DEADLINE`], else 503 (the probe runs in another instance, so a store that
/// hangs cannot hang this answer). Not audited: load balancers probe it every few seconds, it
/// needs no credentials and returns no data.
async fn health() -> Response {
    match stores::probe("gateway").await {
        Ok(()) => respond::json(200, &serde_json::json!({ "status": "ok" }), Cache::NoStore),
        Err(e) => {
            log::warn("health_check_failed", e.to_string());
            respond::problem(&Problem::unavailable())
        }
    }
}

/// `GET /metrics` in the Prometheus text format, for a scraper holding the token whose SHA-256
/// is `metrics_token_hash` (empty: metrics disabled, 404). Counters come from the audit log.
fn metrics(req: &Request, authorizations: usize, event: &mut Event) -> anyhow::Result<Response> {
    let expected = health_spin::var("metrics_token_hash")?;
    if expected.trim().is_empty() {
        return Ok(answer(Refusal::NotFound(Reason::MetricsDisabled), event));
    }
    if *req.method() != Method::Get {
        return Ok(answer(Refusal::NotFound(Reason::NoSuchRoute), event));
    }
    let authorized = authorizations == 1
        && tokens::bearer_token(req).is_ok_and(|token| health_core::token_matches_hash(token, &expected));
    if !authorized {
        return Ok(answer(Refusal::Unauthenticated(Reason::BadMetricsToken), event));
    }
    event.outcome = Some(Outcome::Allow);
    event.reason = Reason::MetricsScraped.into();
    let text = render_metrics(&audit_log::counters()?) + alerts::metrics()?.as_str();
    Ok(respond::bytes(200, "text/plain; version=0.0.4; charset=utf-8", text.into_bytes(), Cache::NoStore))
}

/// A Prometheus label value: backslash, quote and newline escaped.
fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn render_metrics(c: &audit_log::Counters) -> String {
    let mut out = String::new();
    let mut family = |name: &str, help: &str, samples: Vec<(String, i64)>| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} counter\n"));
        for (labels, value) in samples {
            out.push_str(&format!("{name}{labels} {value}\n"));
        }
    };
    family(
        "health_requests_total",
        "API requests through the gateway, by route template and audited outcome.",
        c.requests
            .iter()
            .map(|(route, outcome, n)| (format!("{{route=\"{}\",outcome=\"{}\"}}", label(route), label(outcome)), *n))
            .collect(),
    );
    family(
        "health_auth_failures_total",
        "API requests refused with 401 (token missing or invalid).",
        vec![(String::new(), c.auth_failures)],
    );
    family(
        "health_decrypt_failures_total",
        "Token JWEs and stored PHI fields that did not decrypt.",
        audit_log::DECRYPT_FAILURE_REASONS
            .iter()
            .map(|reason| {
                let n = c.decrypt_failures.iter().find(|(r, _)| r == reason).map_or(0, |(_, n)| *n);
                (format!("{{reason=\"{reason}\"}}"), n)
            })
            .collect(),
    );
    family(
        "health_break_glass_total",
        "Break-glass grants made, and accesses allowed only by one.",
        vec![
            ("{kind=\"grant\"}".to_owned(), c.break_glass_grants),
            ("{kind=\"access\"}".to_owned(), c.break_glass_accesses),
        ],
    );
    family(
        "health_rate_limited_total",
        "Requests refused by a rate limit (429), by route template or auth endpoint.",
        c.rate_limited.iter().map(|(route, n)| (format!("{{route=\"{}\"}}", label(route)), *n)).collect(),
    );
    let name = "health_request_duration_seconds";
    out.push_str(&format!(
        "# HELP {name} The gateway's time to answer an API request, up to its audit write, by route template.\n\
         # TYPE {name} histogram\n"
    ));
    for h in &c.latency {
        let route = label(&h.route);
        for (bound, within) in audit_log::LATENCY_BUCKETS_MS.iter().zip(&h.within) {
            out.push_str(&format!("{name}_bucket{{route=\"{route}\",le=\"{}\"}} {within}\n", seconds(*bound)));
        }
        out.push_str(&format!("{name}_bucket{{route=\"{route}\",le=\"+Inf\"}} {}\n", h.count));
        out.push_str(&format!("{name}_sum{{route=\"{route}\"}} {}\n", seconds(h.sum_ms)));
        out.push_str(&format!("{name}_count{{route=\"{route}\"}} {}\n", h.count));
    }
    out
}

/// Milliseconds as Prometheus writes seconds (`0.005`, `2.5`, `10`).
fn seconds(ms: i64) -> String {
    let text = format!("{}.{:03}", ms / 1000, ms % 1000);
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use health_core::PatientId;

    #[test]
    fn every_route_has_a_rule_and_a_service_per_role() {
        let p = || PatientId::parse("p-1").unwrap();
        assert_eq!(upstream(&Api::Records(p()), Role::Patient), Some(Service::Patient));
        assert_eq!(upstream(&Api::Records(p()), Role::Doctor), Some(Service::Doctor));
        assert_eq!(upstream(&Api::Records(p()), Role::Admin), None);
        assert_eq!(upstream(&Api::Summary(p()), Role::Insurance), Some(Service::Insurance));
        assert_eq!(upstream(&Api::AuditVerify, Role::Admin), Some(Service::Gateway));
        assert_eq!(upstream(&Api::ErasePatient(p()), Role::Admin), Some(Service::Patient));
        assert_eq!(upstream(&Api::RegisterPatient, Role::Admin), Some(Service::Patient));
        assert_eq!(upstream(&Api::LinkPatientAccount(p()), Role::Admin), Some(Service::Patient));
        assert!(route_rule(&Api::BadQuery(Reason::BadLimit)).is_none());
        assert_eq!(route_rule(&Api::LabOrders).map(|r| r.1), Some("lab"));
        let log = || Api::AccessLog(p(), routes::AccessLogQuery::default());
        assert_eq!(upstream(&log(), Role::Patient), Some(Service::Patient));
        assert_eq!(upstream(&log(), Role::Admin), Some(Service::Patient));
        assert_eq!(upstream(&log(), Role::Doctor), None);
        assert_eq!(upstream(&Api::Export(p()), Role::Patient), Some(Service::Patient));
        assert_eq!(route_rule(&Api::Export(p())).map(|r| r.1), Some("patients"));
        let member = || health_core::Opaque::parse("u-dr-grey").unwrap();
        assert_eq!(upstream(&Api::CareTeam(p()), Role::Admin), Some(Service::Patient));
        assert_eq!(upstream(&Api::CareTeam(p()), Role::Doctor), Some(Service::Doctor));
        assert_eq!(upstream(&Api::CareTeam(p()), Role::Lab), None);
        assert_eq!(upstream(&Api::AddCareTeamMember(p(), member()), Role::Admin), Some(Service::Patient));
        assert_eq!(upstream(&Api::EndCareTeamMembership(p(), member()), Role::Admin), Some(Service::Patient));
        assert_eq!(upstream(&Api::CareTeamPatients, Role::Doctor), Some(Service::Doctor));
        assert_eq!(upstream(&Api::OwnRecord, Role::Patient), Some(Service::Patient));
        assert_eq!(route_rule(&Api::OwnRecord).map(|r| r.1), Some("patients"));
        assert_eq!(route_rule(&Api::CareTeamPatients).map(|r| r.1), Some("care-team"));
        assert_eq!(rate_class(Some(&Api::EndCareTeamMembership(p(), member())), &Method::Delete), Class::Write);
        let history = || Api::RecordHistory(p(), health_core::EntryId::parse("e-1").unwrap());
        assert_eq!(upstream(&history(), Role::Patient), Some(Service::Patient));
        assert_eq!(upstream(&history(), Role::Doctor), Some(Service::Doctor));
        for role in [Role::Lab, Role::Insurance, Role::Admin] {
            assert_eq!(upstream(&history(), role), None, "{role:?}");
        }
        assert!(matches!(route_rule(&history()), Some((authz::Action::ReadRecord, "patients"))));
        let lab = || health_core::LabId::parse("lab-north").unwrap();
        let (attach, detach) = (Api::AttachLabMember(lab(), member()), Api::DetachLabMember(lab(), member()));
        for api in [Api::Labs, Api::RegisterLab, attach, detach] {
            assert_eq!(upstream(&api, Role::Admin), Some(Service::Patient), "{api:?}");
            assert!(matches!(route_rule(&api), Some((authz::Action::ManageLabs, "admin"))), "{api:?}");
            assert_eq!(rate_class(Some(&api), &Method::Get), Class::Admin);
        }
        assert_eq!(upstream(&Api::OrderLabTest(p()), Role::Doctor), Some(Service::Doctor));
        assert_eq!(upstream(&Api::PatientLabOrders(p()), Role::Patient), Some(Service::Patient));
        assert_eq!(upstream(&Api::PatientLabOrders(p()), Role::Doctor), Some(Service::Doctor));
        assert_eq!(upstream(&Api::PatientLabOrders(p()), Role::Lab), None);
    }

    #[test]
    fn the_clinicians_service_answers_nurses_and_pharmacists_and_the_patient_service_the_front_desk() {
        let p = || PatientId::parse("p-1").unwrap();
        let history = || Api::RecordHistory(p(), health_core::EntryId::parse("e-1").unwrap());
        for role in [Role::Nurse, Role::Pharmacist] {
            let reads =
                [Api::Demographics(p()), Api::Records(p()), Api::LabResults(p()), Api::CareTeam(p()), history()];
            for api in reads {
                assert_eq!(upstream(&api, role), Some(Service::Doctor), "{role:?} {api:?}");
            }
            assert_eq!(upstream(&Api::CareTeamPatients, role), Some(Service::Doctor));
            assert_eq!(upstream(&Api::AddRecord(p()), role), Some(Service::Doctor));
        }
        let desk = Role::Receptionist;
        assert_eq!(upstream(&Api::Demographics(p()), desk), Some(Service::Patient));
        assert_eq!(upstream(&Api::EditDemographics(p()), desk), Some(Service::Patient));
        assert_eq!(upstream(&Api::RegisterPatient, desk), Some(Service::Patient));
        for api in [Api::Records(p()), Api::LabResults(p()), Api::CareTeam(p()), history()] {
            assert_eq!(upstream(&api, desk), None, "{api:?}");
        }
        assert!(matches!(route_rule(&Api::EditDemographics(p())), Some((authz::Action::EditDemographics, "patients"))));
        let member = || health_core::Opaque::parse("u-nurse").unwrap();
        let add = route_rule(&Api::AddCareTeamMember(p(), member()));
        assert!(matches!(add, Some((authz::Action::AddCareTeamMember, "patients"))));
        let end = route_rule(&Api::EndCareTeamMembership(p(), member()));
        assert!(matches!(end, Some((authz::Action::ManageCareTeam, "patients"))));
    }

    #[test]
    fn metrics_render_as_prometheus_text() {
        let counters = audit_log::Counters {
            requests: vec![("GET /api/patients/{id}/records".into(), "allow".into(), 3)],
            auth_failures: 2,
            decrypt_failures: vec![("phi_decrypt_failed".into(), 1)],
            break_glass_grants: 1,
            break_glass_accesses: 4,
            rate_limited: vec![("auth.login".into(), 5)],
            latency: vec![audit_log::Latency {
                route: "GET /api/patients/{id}/records".into(),
                within: vec![1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2],
                count: 3,
                sum_ms: 12_345,
            }],
        };
        let text = render_metrics(&counters);
        assert!(text.contains("health_requests_total{route=\"GET /api/patients/{id}/records\",outcome=\"allow\"} 3\n"));
        assert!(text.contains("health_auth_failures_total 2\n"));
        assert!(text.contains("health_decrypt_failures_total{reason=\"phi_decrypt_failed\"} 1\n"));
        assert!(text.contains("health_decrypt_failures_total{reason=\"jwe_decryption_failed\"} 0\n"));
        assert!(text.contains("health_break_glass_total{kind=\"access\"} 4\n"));
        assert!(text.contains("health_rate_limited_total{route=\"auth.login\"} 5\n"));
        let route = "route=\"GET /api/patients/{id}/records\"";
        assert!(text.contains("# TYPE health_request_duration_seconds histogram\n"));
        assert!(text.contains(&format!("health_request_duration_seconds_bucket{{{route},le=\"0.005\"}} 1\n")));
        assert!(text.contains(&format!("health_request_duration_seconds_bucket{{{route},le=\"2.5\"}} 2\n")));
        assert!(text.contains(&format!("health_request_duration_seconds_bucket{{{route},le=\"+Inf\"}} 3\n")));
        assert!(text.contains(&format!("health_request_duration_seconds_sum{{{route}}} 12.345\n")));
        assert!(text.contains(&format!("health_request_duration_seconds_count{{{route}}} 3\n")));
        assert_eq!([seconds(5), seconds(1000), seconds(10_000), seconds(0)], ["0.005", "1", "10", "0"]);
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
