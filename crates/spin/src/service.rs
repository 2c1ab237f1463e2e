//! The common shell of a role service: refuse anything without a valid, fresh caller context,
//! then answer through the service's handler, carrying the policy's reason back to the gateway
//! (which audits it) in [`REASON_HEADER`].

use health_core::{Caller, Problem};
use spin_sdk::http::{Method, Request, Response};

use crate::authz;
use crate::respond::{self, Cache};

/// Response header with the machine-readable decision reason, for the gateway's audit event.
pub const REASON_HEADER: &str = "x-health-reason";

/// A refusal by a role service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No valid caller context: the request did not come from the gateway.
    Unattested(&'static str),
    NotFound(&'static str),
    Forbidden(String),
}

/// Runs `handler` for an attested caller and maps its outcome to a response.
pub fn serve(
    req: &Request,
    handler: impl FnOnce(&Caller) -> anyhow::Result<Result<serde_json::Value, Refusal>>,
) -> Response {
    let outcome = crate::verify_context(req).and_then(|verified| match verified {
        Ok(caller) => handler(&caller),
        Err(e) => Ok(Err(Refusal::Unattested(match e {
            health_core::ContextError::Missing => "context_missing",
            health_core::ContextError::Malformed => "context_malformed",
            health_core::ContextError::BadMac => "context_bad_mac",
            health_core::ContextError::Stale => "context_stale",
        }))),
    });
    let (mut response, reason) = match outcome {
        Ok(Ok(body)) => (respond::json(200, &body, Cache::NoStore), "allowed".to_owned()),
        Ok(Err(Refusal::Unattested(reason))) => (respond::problem(&Problem::unauthorized()), reason.to_owned()),
        Ok(Err(Refusal::NotFound(reason))) => (respond::problem(&Problem::not_found()), reason.to_owned()),
        Ok(Err(Refusal::Forbidden(reason))) => (respond::problem(&Problem::forbidden()), reason),
        Err(e) => {
            eprintln!("service: internal error: {e:#}");
            (respond::problem(&Problem::internal()), "internal_error".to_owned())
        }
    };
    response.set_header(REASON_HEADER, reason);
    response
}

/// Reads a patient's record (demographics and entries) if policy allows `caller` to.
pub fn read_record(caller: &Caller, patient_id: &str) -> anyhow::Result<Result<serde_json::Value, Refusal>> {
    let conn = crate::records::open(crate::var("demo_tenant").is_ok_and(|v| v == "true"))?;
    let tenant = caller.tenant_id.as_str();
    let Some(patient) = crate::records::patient(&conn, tenant, patient_id)? else {
        return Ok(Err(Refusal::NotFound("no_such_patient")));
    };
    let facts = authz::PatientFacts {
        tenant_id: tenant.to_owned(),
        patient_id: patient_id.to_owned(),
        owner_subject: patient.owner_subject.clone(),
        on_care_team: crate::records::on_care_team(&conn, tenant, patient_id, &caller.subject)?,
        break_glass_active: false,
        consent_active: false,
    };
    let decision =
        authz::authorize(&authz::caller(caller), authz::Action::ReadRecord, &authz::Resource::Patient(facts));
    if !decision.allow {
        return Ok(Err(Refusal::Forbidden(decision.reason)));
    }
    let entries = crate::records::entries(&conn, tenant, patient_id)?;
    Ok(Ok(serde_json::json!({ "patient": patient, "entries": entries })))
}

/// The record routes shared by the patient and doctor services (private paths).
#[derive(Debug, PartialEq, Eq)]
pub enum RecordApi<'a> {
    ReadRecord(&'a str),
}

pub fn parse_record_api<'a>(method: &Method, path: &'a str) -> Option<RecordApi<'a>> {
    match (method, crate::segments(path).as_slice()) {
        (Method::Get, ["patients", id, "record"]) => Some(RecordApi::ReadRecord(id)),
        _ => None,
    }
}

/// Serves the record routes for an attested caller; policy decides per role.
pub fn serve_records(req: &Request) -> Response {
    serve(req, |caller| match parse_record_api(req.method(), req.path()) {
        Some(RecordApi::ReadRecord(id)) => read_record(caller, id),
        None => Ok(Err(Refusal::NotFound("no_such_route"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_record_reads() {
        assert_eq!(parse_record_api(&Method::Get, "/patients/p-1001/record"), Some(RecordApi::ReadRecord("p-1001")));
        assert_eq!(parse_record_api(&Method::Put, "/patients/p-1001/record"), None);
        assert_eq!(parse_record_api(&Method::Get, "/patients/p-1001"), None);
        assert_eq!(parse_record_api(&Method::Get, "/patients/p-1001/record/x"), None);
    }
}
