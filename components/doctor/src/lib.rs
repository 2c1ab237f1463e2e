//! The `doctor` role service (private: reachable only as `doctor.spin.internal`): the clinicians'
//! service, answering doctors, nurses and pharmacists alike, with the policy deciding what each
//! may do (a nurse writes notes and observations only; a pharmacist reads the medication and
//! allergy entries). Doctors read and write the records of patients on their active care team
//! (a correction keeps the version it replaces, and tells the gateway what changed for the
//! audit log); for anyone else they may open a break-glass grant with a stated reason, which
//! allows access for a short window (`break_glass_window_secs`, default one hour), and every
//! access under it is flagged for the admins' review. A clinician lists the patients whose care
//! team they are on now, and reads the team of a patient they are on. Every request needs the
//! gateway's attested caller context, and every decision is the composed policy's.

// The Spin SDK macros expand to the component ABI's `unsafe` glue.
#![allow(unsafe_code)]

mod orders;

use health_core::Reason;
use health_core::audit::RecordChange;
use health_core::routes::{self, Api};
use health_core::{Caller, PatientId};
use health_spin::authz;
use health_spin::records::{self, Vault};
use health_spin::service::{self, Done, Handled, Refusal};
use spin_sdk::http::{Request, Response};
use spin_sdk::http_component;
use spin_sdk::sqlite::Connection;

/// Never more than a shift, whatever is configured.
const MAX_BREAK_GLASS_SECS: i64 = 12 * 3600;

#[http_component]
fn handle(req: Request) -> Response {
    service::serve(health_core::Component::Doctor, &req, |caller, api, body| {
        let conn = records::open_for_service()?;
        if let Some(read) = service::shared_reads(&conn, caller, &api) {
            return read;
        }
        match api {
            Api::AddRecord(patient) => add_record(&conn, caller, &patient, body),
            Api::UpdateRecord(patient) => update_record(&conn, caller, &patient, body),
            Api::BreakGlass(patient) => break_glass(&conn, caller, &patient, body),
            Api::CareTeam(patient) => service::care_team(&conn, caller, &patient),
            Api::CareTeamPatients => care_team_patients(&conn, caller),
            Api::OrderLabTest(patient) => orders::order(&conn, caller, &patient, body),
            _ => Err(Refusal::NotFound(Reason::NoSuchRoute).into()),
        }
    })
}

fn add_record(conn: &Connection, caller: &Caller, patient: &PatientId, body: &[u8]) -> Handled {
    let now = health_spin::now();
    let (_, _, facts) = service::authorize_patient_facts(conn, caller, authz::Action::WriteRecord, patient, now)?;
    let entry: routes::NewEntry = service::body(body)?;
    // Whether the caller writes entries of this kind (a nurse: notes and observations only).
    let reason = service::authorize_kind(caller, authz::Action::WriteRecord, &facts, &entry.kind)?;
    let entry_id = records::new_entry_id()?;
    let author = caller.subject.clone();
    let mut vault = Vault::open(conn, &caller.tenant_id)?;
    records::add_entry(&mut vault, patient, &entry_id, &entry.kind, &entry.content, &author, now)?;
    let body =
        serde_json::json!({ "entry_id": entry_id, "patient_id": patient, "kind": entry.kind, "created_at": now });
    Ok(Done::json(201, body, reason))
}

fn update_record(conn: &Connection, caller: &Caller, patient: &PatientId, body: &[u8]) -> Handled {
    let now = health_spin::now();
    let (_, _, facts) = service::authorize_patient_facts(conn, caller, authz::Action::WriteRecord, patient, now)?;
    let update: routes::EntryUpdate = service::body(body)?;
    // A correction is a write of the entry's own kind: a nurse corrects no diagnosis.
    let Some(kind) = records::entry_kind(conn, &caller.tenant_id, patient, &update.entry_id)? else {
        return Err(Refusal::NotFound(Reason::NoSuchEntry).into());
    };
    let reason = service::authorize_kind(caller, authz::Action::WriteRecord, &facts, &kind)?;
    let author = caller.subject.clone();
    let mut vault = Vault::open(conn, &caller.tenant_id)?;
    let entry = &update.entry_id;
    let new = records::NewVersion { content: &update.content, reason: &update.reason, author: &author, now };
    let Some(made) = records::correct_entry(&mut vault, patient, entry, &new)?? else {
        return Err(Refusal::NotFound(Reason::NoSuchEntry).into());
    };
    let body = serde_json::json!({
        "entry_id": entry, "patient_id": patient, "updated_at": now,
        "from_version": made.from_version, "version": made.to_version,
    });
    // The gateway records the change in its audit event: versions and digests, never the text.
    let change = RecordChange {
        entry_id: entry.to_string(),
        from_version: made.from_version,
        to_version: made.to_version,
        old_digest: made.old_digest,
        new_digest: made.new_digest,
    };
    Ok(Done::json(200, body, reason).with_change(change))
}

fn break_glass(conn: &Connection, caller: &Caller, patient: &PatientId, body: &[u8]) -> Handled {
    let now = health_spin::now();
    let (_, reason) = service::authorize_patient(conn, caller, authz::Action::BreakGlass, patient, now)?;
    // The reason itself is recorded by the gateway in the audit event; here it must only be valid.
    service::body::<routes::BreakGlass>(body)?;
    let window = health_spin::var_i64("break_glass_window_secs")?.clamp(60, MAX_BREAK_GLASS_SECS);
    let until = now + window;
    let doctor = caller.subject.clone();
    let grant = records::grant_break_glass(conn, &caller.tenant_id, patient, &doctor, now, until)?;
    let body = serde_json::json!({
        "patient_id": patient, "granted_at": grant.granted_at, "expires_at": grant.expires_at, "review": "flagged"
    });
    // A repeat while a grant is live creates nothing: 200 with the grant that stands.
    Ok(Done::json(if grant.new { 201 } else { 200 }, body, reason))
}

/// `GET /api/care-team/patients`: the caller's live memberships, one per patient they may see
/// under the care-team rule (break-glass grants are not memberships and are not listed).
fn care_team_patients(conn: &Connection, caller: &Caller) -> Handled {
    let decision = authz::authorize(
        &authz::caller(caller),
        authz::Action::ListCareTeamPatients,
        &authz::Resource::Tenant(caller.tenant_id.to_string()),
    );
    if !decision.allow {
        return Err(Refusal::Forbidden(decision.reason).into());
    }
    let now = health_spin::now();
    let member = caller.subject.clone();
    let patients: Vec<_> = records::care_team_patients(conn, &caller.tenant_id, &member, now)?
        .into_iter()
        .map(|m| {
            serde_json::json!({
                "patient_id": m.patient_id, "membership_id": m.membership_id, "reason": m.reason,
                "starts_at": m.starts_at, "ends_at": m.ends_at,
            })
        })
        .collect();
    Ok(Done::json(200, serde_json::json!({ "member": caller.subject, "patients": patients }), decision.reason))
}
