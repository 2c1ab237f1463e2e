//! A patient's access log and export, completed at the gateway from the `audit` database.
//!
//! The patient service decides both requests (the policy, with the record's owner from
//! `records`) and, for the export, supplies everything `records` holds; only then does the
//! gateway read the patient's events from the tenant's chain (`patient_id`), which no role
//! service can read. A refusal by the service is passed on unchanged, and nothing is read.
//! The request itself is audited like any other, with the patient's id, so reading one's own
//! access log shows up in it from then on.

use health_core::access_log;
use health_core::audit::Event;
use health_core::routes::{AccessLogQuery, Api, AuditFilter, LogFormat, MAX_AUDIT_LIMIT};
use health_core::{Caller, PatientId, Role};
use health_spin::audit::{self as audit_log, Selection};
use health_spin::respond::{self, Cache};
use spin_sdk::http::Response;

/// Whether the gateway completes the service's answer to `api`.
pub fn completes(api: &Api) -> bool {
    matches!(api, Api::AccessLog(..) | Api::Export(_))
}

/// One page of a patient's events: `(seq, event)` in chain order, and the `seq` to ask after
/// for the next page (none once a page comes back short).
struct Page {
    events: Vec<(i64, Event)>,
    next: Option<i64>,
}

/// The patient's events, at most `limit` rows of the chain after `after`.
fn page(caller: &Caller, patient: &PatientId, after: Option<i64>, limit: u32) -> anyhow::Result<Page> {
    let filter = AuditFilter { patient: Some(patient.clone()), after, limit, ..AuditFilter::default() };
    let rows = audit_log::query(caller.tenant_id.as_str(), &filter, Selection::All)?;
    let next = if rows.len() == limit as usize { rows.last().map(|r| r.seq) } else { None };
    let shown = rows
        .into_iter()
        .filter(|r| access_log::shown(&r.event))
        .map(|r| {
            let event = match caller.role {
                Role::Patient => access_log::as_seen_by_patient(&r.event, caller.subject.as_str()),
                _ => r.event,
            };
            (r.seq, event)
        })
        .collect();
    Ok(Page { events: shown, next })
}

/// Completes the patient service's `answer` (passed on as it is unless 200).
pub fn complete(api: &Api, caller: &Caller, answer: Response, now: i64) -> anyhow::Result<Response> {
    if *answer.status() != 200 {
        return Ok(answer);
    }
    match api {
        Api::AccessLog(patient, query) => access_log_page(caller, patient, query, now),
        Api::Export(patient) => export(caller, patient, &answer, now),
        _ => anyhow::bail!("not a self-service route: {}", api.template()),
    }
}

fn access_log_page(caller: &Caller, patient: &PatientId, query: &AccessLogQuery, now: i64) -> anyhow::Result<Response> {
    let Page { events, next } = page(caller, patient, query.after, query.limit)?;
    Ok(match query.format {
        LogFormat::Json => {
            let entries: Vec<_> = events.iter().map(|(seq, event)| access_log::entry(*seq, event)).collect();
            let body = serde_json::json!({
                "patient_id": patient,
                "tenant_id": caller.tenant_id,
                "generated_at": health_core::rfc3339(now),
                "entries": entries,
                "next_after": next,
            });
            respond::json(200, &body, Cache::NoStore)
        }
        LogFormat::Fhir => {
            let next = next.map(|after| {
                format!("/api/patients/{patient}/access-log?format=fhir&after={after}&limit={}", query.limit)
            });
            let bundle = access_log::fhir_bundle(&events, patient.as_str(), now, next);
            respond::bytes(200, "application/fhir+json", serde_json::to_vec(&bundle)?, Cache::NoStore)
        }
    })
}

/// The service's document with the whole access log added.
fn export(caller: &Caller, patient: &PatientId, answer: &Response, now: i64) -> anyhow::Result<Response> {
    let mut document: serde_json::Value = serde_json::from_slice(answer.body())
        .map_err(|e| anyhow::anyhow!("the patient service's export is not JSON: {e}"))?;
    let mut log = Vec::new();
    let mut after = None;
    loop {
        let Page { events, next } = page(caller, patient, after, MAX_AUDIT_LIMIT)?;
        log.extend(events.iter().map(|(seq, event)| access_log::entry(*seq, event)));
        match next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    document["access_log"] = log.into();
    document["tenant_id"] = caller.tenant_id.to_string().into();
    document["exported_at"] = health_core::rfc3339(now).into();
    document["format"] = "health-platform-export/1".into();
    Ok(respond::json(200, &document, Cache::NoStore))
}
