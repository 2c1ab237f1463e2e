//! `GET /api/patients/{id}/export` and the patient service's half of
//! `GET /api/patients/{id}/access-log`.
//!
//! The export is everything `records` holds about the patient, opened, as one JSON document
//! (GDPR Art. 15 access and Art. 20 portability): demographics, record entries and the earlier
//! versions corrections kept, lab orders and
//! results, consents, care-team memberships and break-glass grants. The gateway adds the access
//! log from the audit database, which this service cannot read. The access log itself is
//! answered by the gateway; this service only decides, with the facts in `records`, whether the
//! caller may read it (the policy's decision, like every other).

use anyhow::Context;
use health_core::{Caller, PatientId};
use health_spin::authz;
use health_spin::records::{self, Vault};
use health_spin::service::{self, Done, Handled};
use spin_sdk::sqlite::{Connection, Value};

const CONSENTS: &str = "SELECT insurer, granted_at, expires_at, revoked_at FROM consent
    WHERE tenant_id = ? AND patient_id = ? ORDER BY granted_at, insurer";
const BREAK_GLASS: &str = "SELECT doctor_subject, granted_at, expires_at FROM break_glass
    WHERE tenant_id = ? AND patient_id = ? ORDER BY granted_at, doctor_subject";

/// `GET /api/patients/{id}/access-log`: the decision only; the gateway reads the log.
pub fn access_log(conn: &Connection, caller: &Caller, patient: &PatientId) -> Handled {
    let now = health_spin::now();
    let (_, reason) = service::authorize_patient(conn, caller, authz::Action::ReadAccessLog, patient, now)?;
    Ok(Done::json(200, serde_json::json!({ "patient_id": patient, "authorized": true }), reason))
}

/// `GET /api/patients/{id}/export`: everything in `records` about the patient.
pub fn export(conn: &Connection, caller: &Caller, patient: &PatientId) -> Handled {
    let now = health_spin::now();
    let (row, reason) = service::authorize_patient(conn, caller, authz::Action::ExportData, patient, now)?;
    let tenant = &caller.tenant_id;
    let mut vault = Vault::open(conn, tenant)?;
    let demographics = records::demographics(&mut vault, &row)??;
    let entries = records::entries(&mut vault, patient)??;
    let earlier_versions = records::earlier_versions(&mut vault, patient)??;
    let lab_results = records::lab_results(&mut vault, patient)??;
    let lab_orders = records::patient_lab_orders(&mut vault, patient)??;
    let params = || [Value::Text(tenant.to_string()), Value::Text(patient.to_string())];
    let rows = |sql: &str, what: &str| conn.execute(sql, &params()).with_context(|| format!("reading {what}"));

    let consents = rows(CONSENTS, "consents")?;
    let consents: Vec<_> = consents
        .rows()
        .map(|r| {
            let revoked_at = r.get::<i64>("revoked_at");
            let expires_at = r.get::<i64>("expires_at").unwrap_or_default();
            serde_json::json!({
                "insurer": r.get::<&str>("insurer"),
                "granted_at": r.get::<i64>("granted_at"),
                "expires_at": expires_at,
                "revoked_at": revoked_at,
                "live": revoked_at.is_none() && expires_at > now,
            })
        })
        .collect();
    let care_team: Vec<_> = records::care_team(conn, tenant, patient, now)?
        .into_iter()
        .map(|m| {
            serde_json::json!({
                "clinician": m.member, "reason": m.reason, "starts_at": m.starts_at, "ends_at": m.ends_at,
                "active": m.active,
            })
        })
        .collect();
    let grants = rows(BREAK_GLASS, "break-glass grants")?;
    let break_glass: Vec<_> = grants
        .rows()
        .map(|r| {
            serde_json::json!({
                "clinician": r.get::<&str>("doctor_subject"),
                "granted_at": r.get::<i64>("granted_at"),
                "expires_at": r.get::<i64>("expires_at"),
            })
        })
        .collect();
    let body = serde_json::json!({
        "patient_id": patient,
        "account": row.owner_subject,
        "demographics": demographics,
        "record_entries": entries,
        "record_entry_versions": earlier_versions,
        "lab_orders": lab_orders,
        "lab_results": lab_results,
        "consents": consents,
        "care_team": care_team,
        "break_glass_grants": break_glass,
    });
    Ok(Done::json(200, body, reason))
}
