//! The common shell of a role service: refuse anything without a valid, fresh caller context
//! from the gateway (the one sender a role service serves, under its own link's key),
//! parse the forwarded request with the same grammar as the gateway (`health_core::routes`),
//! answer through the service's handler, and carry the decision's reason back to the gateway
//! (which audits it) in [`REASON_HEADER`]. Also the reads the patient and doctor services
//! share, each decided by the composed policy with the facts only this database knows.

use health_core::routes::{self, Api};
use health_core::{Caller, Component, Problem, Role};
use spin_sdk::http::{Request, Response};
use spin_sdk::sqlite::Connection;

use crate::authz;
use crate::records::{self, PatientRow, Vault};
use crate::respond::{self, Cache};

/// Response header with the machine-readable decision reason, for the gateway's audit event.
pub const REASON_HEADER: &str = "x-health-reason";

/// Media type of a compact JOSE object (RFC 7515 §9.2.1), here an encrypted summary.
pub const JOSE: &str = "application/jose";

/// A refusal by a role service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No valid caller context: the request did not come from the gateway (on this service's
    /// link), or not just now for this very request.
    Unattested(&'static str),
    NotFound(&'static str),
    Forbidden(String),
    BadRequest(&'static str),
    Conflict(&'static str),
    /// Stored PHI that does not open (tampered, moved): the request fails, loudly.
    Unreadable,
}

/// What a handler answers.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    Json(serde_json::Value),
    /// A compact JWE, sent as `application/jose`.
    Jose(String),
    Empty,
}

/// A successful answer with the reason it was allowed (audited by the gateway).
#[derive(Debug, Clone, PartialEq)]
pub struct Done {
    pub status: u16,
    pub body: Body,
    pub reason: String,
}

impl Done {
    pub fn json(status: u16, body: serde_json::Value, reason: impl Into<String>) -> Self {
        Self { status, body: Body::Json(body), reason: reason.into() }
    }
}

pub type Handled = anyhow::Result<Result<Done, Refusal>>;

/// `GET /api/patients/{id}/care-team`, as the patient service (the patient, the admin) and the
/// doctor service (a member) answer it: every membership, ended ones included, once the policy
/// allows the caller to read the team.
pub fn care_team(conn: &Connection, caller: &Caller, patient: &health_core::PatientId) -> Handled {
    let now = crate::now();
    let (_, reason) =
        crate::allowed!(authorize_patient(conn, caller, authz::Action::ReadCareTeam, patient.as_str(), now));
    let members = records::care_team(conn, caller.tenant_id.as_str(), patient.as_str(), now)?;
    Ok(Ok(Done::json(200, serde_json::json!({ "patient_id": patient, "members": members }), reason)))
}

/// Runs `handler` of role service `me` for a caller the gateway attested and a request of the
/// public API, and maps its outcome to a response (the one error-to-status mapping of every
/// role service).
pub fn serve(me: Component, req: &Request, handler: impl FnOnce(&Caller, Api, &[u8]) -> Handled) -> Response {
    let outcome = crate::verify_context(req, me, &[Component::Gateway]).and_then(|verified| match verified {
        Err(e) => Ok(Err(Refusal::Unattested(match e {
            health_core::ContextError::Missing => "context_missing",
            health_core::ContextError::Malformed => "context_malformed",
            health_core::ContextError::BadMac => "context_bad_mac",
            health_core::ContextError::Stale => "context_stale",
            health_core::ContextError::UnknownSender => "context_sender_refused",
        }))),
        Ok(caller) => match routes::parse(&req.method().to_string(), req.path_and_query().unwrap_or(req.path())) {
            None => Ok(Err(Refusal::NotFound("no_such_route"))),
            Some(Api::BadQuery(reason)) => Ok(Err(Refusal::BadRequest(reason))),
            Some(api) => handler(&caller, api, req.body()),
        },
    });
    let (mut response, reason) = match outcome {
        Ok(Ok(done)) => {
            let response = match done.body {
                Body::Json(value) => respond::json(done.status, &value, Cache::NoStore),
                Body::Jose(token) => respond::bytes(done.status, JOSE, token.into_bytes(), Cache::NoStore),
                Body::Empty => respond::bytes(done.status, "application/json", Vec::new(), Cache::NoStore),
            };
            (response, done.reason)
        }
        Ok(Err(refusal)) => {
            let (problem, reason) = match refusal {
                Refusal::Unattested(reason) => (Problem::unauthorized(), reason.to_owned()),
                Refusal::NotFound(reason) => (Problem::not_found(), reason.to_owned()),
                Refusal::Forbidden(reason) => (Problem::forbidden(), reason),
                Refusal::BadRequest(reason) => (Problem::bad_request(bad_request_detail(reason)), reason.to_owned()),
                Refusal::Conflict(reason) => {
                    (Problem::conflict("the resource is not in a state that allows this"), reason.to_owned())
                }
                Refusal::Unreadable => (Problem::internal(), "phi_decrypt_failed".to_owned()),
            };
            (respond::problem(&problem), reason)
        }
        // A component this service asked did not answer in time (the patient service's calls
        // to `auth`): 503, which the gateway passes on, as for its own stores.
        Err(e) if crate::stores::is_unavailable(&e) => {
            eprintln!("service: unavailable: {e:#}");
            (respond::problem(&Problem::unavailable()), "unavailable".to_owned())
        }
        Err(e) => {
            eprintln!("service: internal error: {e:#}");
            (respond::problem(&Problem::internal()), "internal_error".to_owned())
        }
    };
    response.set_header(REASON_HEADER, reason);
    response
}

/// What a 400 tells the client: the field at fault where one is, never a value.
fn bad_request_detail(reason: &str) -> &'static str {
    match reason {
        "insurer_not_registered" => "insurer is not an insurer client registered and enabled in this tenant",
        "member_not_a_clinician" => "the member is not an enabled doctor of this tenant",
        "membership_times_out_of_range" => "ends_at must lie ahead, and no time more than two years ahead",
        _ => "the request is not valid",
    }
}

/// A strictly parsed JSON body, or the refusal for a bad one (shaped like the other handler
/// steps, for [`allowed!`](crate::allowed); parsing never fails the platform).
pub fn body<T: for<'de> serde::Deserialize<'de> + routes::Validate>(
    bytes: &[u8],
) -> anyhow::Result<Result<T, Refusal>> {
    Ok(routes::body(bytes).map_err(|e| {
        Refusal::BadRequest(match e {
            routes::BodyError::Malformed => "malformed_body",
            routes::BodyError::BadText => "bad_text",
            routes::BodyError::BadValue => "bad_value",
        })
    }))
}

/// Asks policy whether `caller` may do `action` to the patient, with the facts from `records`.
/// An unknown patient gets the same 403 as someone else's (the audit reason tells them apart),
/// so a refusal reveals nothing about which patients exist, in this tenant or another. On
/// success, the patient's row and the policy's reason (e.g. `break_glass`, for review).
pub fn authorize_patient(
    conn: &Connection,
    caller: &Caller,
    action: authz::Action,
    patient_id: &str,
    now: i64,
) -> anyhow::Result<Result<(PatientRow, String), Refusal>> {
    let tenant = caller.tenant_id.as_str();
    let row = records::patient(conn, tenant, patient_id)?;
    let subject = caller.subject.as_str();
    let facts = authz::PatientFacts {
        tenant_id: tenant.to_owned(),
        patient_id: patient_id.to_owned(),
        owner_subject: row.as_ref().and_then(|r| r.owner_subject.clone()),
        on_care_team: caller.role == Role::Doctor && records::on_care_team(conn, tenant, patient_id, subject, now)?,
        break_glass_active: caller.role == Role::Doctor
            && records::break_glass_active(conn, tenant, patient_id, subject, now)?,
        consent_active: caller.role == Role::Insurance
            && records::consent_active(conn, tenant, patient_id, &caller.client_id, now)?,
    };
    let decision = authz::authorize(&authz::caller(caller), action, &authz::Resource::Patient(facts));
    match row {
        None if decision.allow => Ok(Err(Refusal::NotFound("no_such_patient"))),
        None => Ok(Err(Refusal::Forbidden("no_such_patient".into()))),
        Some(_) if !decision.allow => Ok(Err(Refusal::Forbidden(decision.reason))),
        Some(row) if row.erased => Ok(Err(Refusal::NotFound("patient_erased"))),
        Some(row) => Ok(Ok((row, decision.reason))),
    }
}

/// Unwraps a PHI read (`anyhow::Result<Result<T, PhiError>>`) in a handler, answering
/// [`Refusal::Unreadable`] when stored data does not open.
#[macro_export]
macro_rules! opened {
    ($read:expr) => {
        match $read? {
            Ok(value) => value,
            Err(e) => {
                eprintln!("service: stored PHI does not open: {e}");
                return Ok(Err($crate::service::Refusal::Unreadable));
            }
        }
    };
}

/// Unwraps a decision (`anyhow::Result<Result<T, Refusal>>`) in a handler, returning the refusal.
#[macro_export]
macro_rules! allowed {
    ($decision:expr) => {
        match $decision? {
            Ok(allowed) => allowed,
            Err(refusal) => return Ok(Err(refusal)),
        }
    };
}

/// `GET /api/patients/{id}`: demographics only.
pub fn read_demographics(conn: &Connection, caller: &Caller, patient_id: &str) -> Handled {
    let (row, reason) =
        crate::allowed!(authorize_patient(conn, caller, authz::Action::ReadDemographics, patient_id, crate::now()));
    let mut vault = Vault::open(conn, caller.tenant_id.as_str())?;
    let patient = crate::opened!(records::demographics(&mut vault, &row));
    Ok(Ok(Done::json(200, serde_json::json!({ "patient": patient }), reason)))
}

/// `GET /api/patients/{id}/records`: demographics and every entry.
pub fn read_records(conn: &Connection, caller: &Caller, patient_id: &str) -> Handled {
    let (row, reason) =
        crate::allowed!(authorize_patient(conn, caller, authz::Action::ReadRecord, patient_id, crate::now()));
    let mut vault = Vault::open(conn, caller.tenant_id.as_str())?;
    let patient = crate::opened!(records::demographics(&mut vault, &row));
    let entries = crate::opened!(records::entries(&mut vault, patient_id));
    Ok(Ok(Done::json(200, serde_json::json!({ "patient": patient, "entries": entries }), reason)))
}

/// `GET /api/patients/{id}/lab-results`.
pub fn read_lab_results(conn: &Connection, caller: &Caller, patient_id: &str) -> Handled {
    let (_, reason) =
        crate::allowed!(authorize_patient(conn, caller, authz::Action::ReadLabResults, patient_id, crate::now()));
    let mut vault = Vault::open(conn, caller.tenant_id.as_str())?;
    let results = crate::opened!(records::lab_results(&mut vault, patient_id));
    Ok(Ok(Done::json(200, serde_json::json!({ "patient_id": patient_id, "lab_results": results }), reason)))
}

/// The reads both the patient and the doctor service answer; `None` for any other route.
pub fn shared_reads(conn: &Connection, caller: &Caller, api: &Api) -> Option<Handled> {
    Some(match api {
        Api::Demographics(id) => read_demographics(conn, caller, id.as_str()),
        Api::Records(id) => read_records(conn, caller, id.as_str()),
        Api::LabResults(id) => read_lab_results(conn, caller, id.as_str()),
        _ => return None,
    })
}
