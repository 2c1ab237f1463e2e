//! The common shell of a role service: refuse anything without a valid, fresh caller context
//! from the gateway (the one sender a role service serves, under its own link's key),
//! parse the forwarded request with the same grammar as the gateway (`health_core::routes`),
//! answer through the service's handler, and carry the decision's reason back to the gateway
//! (which audits it) in [`REASON_HEADER`]. Also the reads the patient and doctor services
//! share, each decided by the composed policy with the facts only this database knows.

use health_core::audit::RecordChange;
use health_core::routes::{self, Api};
use health_core::{Caller, ClientId, Component, EntryId, PatientId, Problem, Reason, Role};
use spin_sdk::http::{Request, Response};
use spin_sdk::sqlite::Connection;

use crate::authz;
use crate::records::{self, PatientRow, Vault};
use crate::respond::{self, Cache};

/// Response header with the machine-readable decision reason, for the gateway's audit event.
pub const REASON_HEADER: &str = "x-health-reason";

/// Response header with what a correction changed ([`health_core::audit::RecordChange`] as
/// JSON: the entry, both versions, keyed digests), for the gateway's audit event. Like
/// [`REASON_HEADER`], it goes to the gateway only, never to the client.
pub const CHANGE_HEADER: &str = "x-health-record-change";

/// Media type of a compact JOSE object (RFC 7515 §9.2.1), here an encrypted summary.
pub const JOSE: &str = "application/jose";

pub use health_core::Refusal;

pub use crate::respond::Failure;

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
    /// What a correction changed, for the gateway's audit event ([`CHANGE_HEADER`]).
    pub change: Option<RecordChange>,
}

impl Done {
    pub fn json(status: u16, body: serde_json::Value, reason: impl Into<String>) -> Self {
        Self { status, body: Body::Json(body), reason: reason.into(), change: None }
    }

    /// The answer, with what it changed in a record for the audit log.
    pub fn with_change(self, change: RecordChange) -> Self {
        Self { change: Some(change), ..self }
    }
}

pub type Handled = Result<Done, Failure>;

/// `GET /api/patients/{id}/care-team`, as the patient service (the patient, the admin) and the
/// doctor service (a member) answer it: every membership, ended ones included, once the policy
/// allows the caller to read the team.
pub fn care_team(conn: &Connection, caller: &Caller, patient: &PatientId) -> Handled {
    let now = crate::now();
    let (_, reason) = authorize_patient(conn, caller, authz::Action::ReadCareTeam, patient, now)?;
    let members = records::care_team(conn, &caller.tenant_id, patient, now)?;
    Ok(Done::json(200, serde_json::json!({ "patient_id": patient, "members": members }), reason))
}

/// The caller's client id: every token `auth` issues carries one, and the insurer's routes
/// need it, so one missing is the platform's fault: an internal error.
pub fn client_id(caller: &Caller) -> anyhow::Result<ClientId> {
    caller.client_id.clone().ok_or_else(|| anyhow::anyhow!("the caller's token carries no client id"))
}

/// Runs `handler` of role service `me` for a caller the gateway attested and a request of the
/// public API, and maps its outcome to a response (the one error-to-status mapping of every
/// role service).
pub fn serve(me: Component, req: &Request, handler: impl FnOnce(&Caller, Api, &[u8]) -> Handled) -> Response {
    let header = |name| req.header(name).and_then(|v| v.as_str());
    let trace = header(health_core::trace::HEADER).and_then(health_core::trace::TraceParent::parse);
    crate::log::begin(me.as_str(), header("x-request-id"), trace);
    // The public path the gateway forwards, attested, beside a URL without identifiers.
    let path = header(health_core::context::PATH_HEADER).unwrap_or_default();
    let mut response_change = None;
    let outcome = match crate::verify_context_of(req, path, me, &[Component::Gateway]) {
        Err(e) => Err(Failure::Internal(e)),
        Ok(Err(e)) => Err(Refusal::Unauthenticated(match e {
            health_core::ContextError::Missing => Reason::ContextMissing,
            health_core::ContextError::Malformed => Reason::ContextMalformed,
            health_core::ContextError::BadMac => Reason::ContextBadMac,
            health_core::ContextError::Stale => Reason::ContextStale,
            health_core::ContextError::UnknownSender => Reason::ContextSenderRefused,
        })
        .into()),
        Ok(Ok(caller)) => {
            crate::log::set_tenant(caller.tenant_id.as_str());
            match routes::parse(&req.method().to_string(), path) {
                None => Err(Refusal::NotFound(Reason::NoSuchRoute).into()),
                Some(Api::BadQuery(reason)) => Err(Refusal::bad_request(reason).into()),
                Some(api) => handler(&caller, api, req.body()),
            }
        }
    };
    let (mut response, reason) = match outcome {
        Ok(done) => {
            if let Some(change) = &done.change {
                match serde_json::to_string(change) {
                    Ok(json) => response_change = Some(json),
                    Err(e) => crate::log::error("record_change_unencodable", &anyhow::Error::from(e)),
                }
            }
            let response = match done.body {
                Body::Json(value) => respond::json(done.status, &value, Cache::NoStore),
                Body::Jose(token) => respond::bytes(done.status, JOSE, token.into_bytes(), Cache::NoStore),
                Body::Empty => respond::bytes(done.status, "application/json", Vec::new(), Cache::NoStore),
            };
            (response, done.reason)
        }
        Err(Failure::Refused(refusal)) => (respond::problem(&refusal.problem()), refusal.reason()),
        // A component this service asked did not answer in time (the patient service's calls
        // to `auth`): 503, which the gateway passes on, as for its own stores.
        Err(Failure::Internal(e)) if crate::stores::is_unavailable(&e) => {
            crate::log::error("unavailable", &e);
            (respond::problem(&Problem::unavailable()), Reason::Unavailable.into())
        }
        Err(Failure::Internal(e)) => {
            crate::log::error("internal_error", &e);
            (respond::problem(&Problem::internal()), Reason::InternalError.into())
        }
    };
    response.set_header(REASON_HEADER, reason);
    if let Some(change) = response_change {
        response.set_header(CHANGE_HEADER, change);
    }
    response
}

/// A strictly parsed JSON body, or the refusal for a bad one (parsing never fails the
/// platform).
pub fn body<T: for<'de> serde::Deserialize<'de> + routes::Validate>(bytes: &[u8]) -> Result<T, Refusal> {
    routes::body(bytes).map_err(|e| {
        Refusal::bad_request(match e {
            routes::BodyError::Malformed => Reason::MalformedBody,
            routes::BodyError::BadText => Reason::BadText,
            routes::BodyError::BadValue => Reason::BadValue,
        })
    })
}

/// Asks policy whether `caller` may do `action` to the patient, with the facts from `records`.
/// An unknown patient gets the same 403 as someone else's (the audit reason tells them apart),
/// so a refusal reveals nothing about which patients exist, in this tenant or another. On
/// success, the patient's row and the policy's reason (e.g. `break_glass`, for review).
pub fn authorize_patient(
    conn: &Connection,
    caller: &Caller,
    action: authz::Action,
    patient_id: &PatientId,
    now: i64,
) -> Result<(PatientRow, String), Failure> {
    authorize_patient_facts(conn, caller, action, patient_id, now).map(|(row, reason, _)| (row, reason))
}

/// [`authorize_patient`], also returning the facts it decided on, for the decisions per entry
/// kind that follow ([`authorize_kind`]).
pub fn authorize_patient_facts(
    conn: &Connection,
    caller: &Caller,
    action: authz::Action,
    patient_id: &PatientId,
    now: i64,
) -> Result<(PatientRow, String, authz::PatientFacts), Failure> {
    let tenant = &caller.tenant_id;
    let row = records::patient(conn, tenant, patient_id)?;
    // Memberships and grants are looked up for any caller, by subject: which roles they count
    // for is the policy's to say. Only an insurer has a consent, under its client id.
    let subject = &caller.subject;
    let facts = authz::PatientFacts {
        tenant_id: tenant.to_string(),
        patient_id: patient_id.to_string(),
        owner_subject: row.as_ref().and_then(|r| r.owner_subject.clone()),
        on_care_team: records::on_care_team(conn, tenant, patient_id, subject, now)?,
        break_glass_active: records::break_glass_active(conn, tenant, patient_id, subject, now)?,
        consent_active: caller.role == Role::Insurance
            && records::consent_active(conn, tenant, patient_id, &client_id(caller)?, now)?,
        entry_kind: None,
    };
    let decision = authz::authorize(&authz::caller(caller), action, &authz::Resource::Patient(facts.clone()));
    Err(match row {
        None if decision.allow => Refusal::NotFound(Reason::NoSuchPatient),
        None => Refusal::forbidden(Reason::NoSuchPatient),
        Some(_) if !decision.allow => Refusal::Forbidden(decision.reason),
        Some(row) if row.erased => Refusal::NotFound(Reason::PatientErased),
        Some(row) => return Ok((row, decision.reason, facts)),
    }
    .into())
}

/// The policy's decision on `action` (reading or writing a record) for entries of `kind`, on
/// the facts an [`authorize_patient_facts`] decided on: the reason, or the refusal.
pub fn authorize_kind(
    caller: &Caller,
    action: authz::Action,
    facts: &authz::PatientFacts,
    kind: &str,
) -> Result<String, Refusal> {
    let facts = authz::PatientFacts { entry_kind: Some(kind.to_owned()), ..facts.clone() };
    let decision = authz::authorize(&authz::caller(caller), action, &authz::Resource::Patient(facts));
    if decision.allow { Ok(decision.reason) } else { Err(Refusal::Forbidden(decision.reason)) }
}

/// `GET /api/patients/{id}`: demographics only.
pub fn read_demographics(conn: &Connection, caller: &Caller, patient_id: &PatientId) -> Handled {
    let (row, reason) = authorize_patient(conn, caller, authz::Action::ReadDemographics, patient_id, crate::now())?;
    let mut vault = Vault::open(conn, &caller.tenant_id)?;
    let patient = records::demographics(&mut vault, &row)??;
    Ok(Done::json(200, serde_json::json!({ "patient": patient }), reason))
}

/// `GET /api/patients/{id}/records`: demographics and every entry the caller may read, the
/// policy asked once per distinct kind (a pharmacist's record is its medication and allergy
/// entries).
pub fn read_records(conn: &Connection, caller: &Caller, patient_id: &PatientId) -> Handled {
    let (row, reason, facts) =
        authorize_patient_facts(conn, caller, authz::Action::ReadRecord, patient_id, crate::now())?;
    let mut vault = Vault::open(conn, &caller.tenant_id)?;
    let patient = records::demographics(&mut vault, &row)??;
    let mut readable = std::collections::HashMap::new();
    let mut entries = records::entries(&mut vault, patient_id)??;
    entries.retain(|entry| {
        *readable
            .entry(entry.kind.clone())
            .or_insert_with(|| authorize_kind(caller, authz::Action::ReadRecord, &facts, &entry.kind).is_ok())
    });
    Ok(Done::json(200, serde_json::json!({ "patient": patient, "entries": entries }), reason))
}

/// `GET /api/patients/{id}/records/{entry_id}/history`: every version of the entry, newest
/// first, to whoever may read the record and entries of its kind (the same decisions as
/// [`read_records`]).
pub fn read_record_history(conn: &Connection, caller: &Caller, patient_id: &PatientId, entry: &EntryId) -> Handled {
    let (_, _, facts) = authorize_patient_facts(conn, caller, authz::Action::ReadRecord, patient_id, crate::now())?;
    // The entry's kind decides, before anything of it is opened.
    let Some(kind) = records::entry_kind(conn, &caller.tenant_id, patient_id, entry)? else {
        return Err(Refusal::NotFound(Reason::NoSuchEntry).into());
    };
    let reason = authorize_kind(caller, authz::Action::ReadRecord, &facts, &kind)?;
    let mut vault = Vault::open(conn, &caller.tenant_id)?;
    let Some(history) = records::entry_history(&mut vault, patient_id, entry)?? else {
        return Err(Refusal::NotFound(Reason::NoSuchEntry).into());
    };
    let body = serde_json::json!({
        "patient_id": patient_id, "entry_id": entry, "kind": history.kind, "versions": history.versions,
    });
    Ok(Done::json(200, body, reason))
}

/// `GET /api/patients/{id}/lab-results`.
pub fn read_lab_results(conn: &Connection, caller: &Caller, patient_id: &PatientId) -> Handled {
    let (_, reason) = authorize_patient(conn, caller, authz::Action::ReadLabResults, patient_id, crate::now())?;
    let mut vault = Vault::open(conn, &caller.tenant_id)?;
    let results = records::lab_results(&mut vault, patient_id)??;
    Ok(Done::json(200, serde_json::json!({ "patient_id": patient_id, "lab_results": results }), reason))
}

/// `GET /api/patients/{id}/lab-orders`: every order of the patient (open and resulted, with
/// the lab organisation, who ordered it, the note and the result's id once there is one).
pub fn read_lab_orders(conn: &Connection, caller: &Caller, patient_id: &PatientId) -> Handled {
    let (_, reason) = authorize_patient(conn, caller, authz::Action::ReadLabOrders, patient_id, crate::now())?;
    let mut vault = Vault::open(conn, &caller.tenant_id)?;
    let orders = records::patient_lab_orders(&mut vault, patient_id)??;
    Ok(Done::json(200, serde_json::json!({ "patient_id": patient_id, "lab_orders": orders }), reason))
}

/// The reads both the patient and the doctor service answer; `None` for any other route.
pub fn shared_reads(conn: &Connection, caller: &Caller, api: &Api) -> Option<Handled> {
    Some(match api {
        Api::Demographics(id) => read_demographics(conn, caller, id),
        Api::Records(id) => read_records(conn, caller, id),
        Api::RecordHistory(id, entry) => read_record_history(conn, caller, id, entry),
        Api::LabResults(id) => read_lab_results(conn, caller, id),
        Api::PatientLabOrders(id) => read_lab_orders(conn, caller, id),
        _ => return None,
    })
}
