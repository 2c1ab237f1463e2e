//! Patient identity, kept by the tenant admin and the front desk (the policy says who does
//! what): registering a patient (their demographics sealed like every PHI field), correcting
//! their demographics, and linking the patient's user account to their record, so a patient
//! token reads that record and no other. One account per record and one record per account
//! (`records::link_owner`); the account must be an enabled patient account of the tenant, asked
//! of `auth`, which owns the accounts. Registration is idempotent by the hospital's patient id,
//! so an import can run again after a partial failure (`healthctl patients import`).

use anyhow::Context;
use health_core::routes::{DemographicsUpdate, NewPatient, PatientAccount};
use health_core::{Caller, PatientId, Reason, Role};
use health_spin::authz;
use health_spin::records::{self, Linked, Registration, Vault};
use health_spin::service::{self, Done, Handled, Refusal};
use spin_sdk::sqlite::Connection;

/// `POST /api/admin/patients`: 201 with the new record's id; 200 if the same patient was
/// registered under that id before; 409 if the id is another patient's or an erased one.
pub fn register(conn: &Connection, caller: &Caller, body: &[u8]) -> Handled {
    let reason = crate::authorize_tenant(caller, authz::Action::RegisterPatient)?;
    let new: NewPatient = service::body(body)?;
    let patient_id = match new.patient_id {
        Some(id) => id,
        None => PatientId::parse(&health_spin::random_hex_id("p")).context("a fresh patient id")?,
    };
    let mut vault = Vault::open(conn, &caller.tenant_id)?;
    let given = [new.given_name.as_str(), new.family_name.as_str(), new.birth_date.as_str()];
    let status = match records::register_patient(&mut vault, &patient_id, given)? {
        Registration::Created => 201,
        Registration::Unchanged => 200,
        Registration::Conflict => {
            let detail = "patient_id is another patient's, or an erased patient's";
            return Err(Refusal::ConflictWith(Reason::PatientIdTaken, detail.into()).into());
        }
    };
    Ok(Done::json(status, serde_json::json!({ "patient_id": patient_id, "registered": true }), reason))
}

/// `PUT /api/patients/{id}` `{"given_name", "family_name", "birth_date"}`: the demographics
/// replaced, sealed afresh; 200 without them (the caller sent them); 404 for an erased patient.
/// The gateway audits it (before and after), naming the patient and the route, never a value.
pub fn edit_demographics(conn: &Connection, caller: &Caller, patient: &PatientId, body: &[u8]) -> Handled {
    let now = health_spin::now();
    let (_, reason) = service::authorize_patient(conn, caller, authz::Action::EditDemographics, patient, now)?;
    let update: DemographicsUpdate = service::body(body)?;
    let mut vault = Vault::open(conn, &caller.tenant_id)?;
    let given = [update.given_name.as_str(), update.family_name.as_str(), update.birth_date.as_str()];
    if !records::update_demographics(&mut vault, patient, given)? {
        return Err(Refusal::NotFound(Reason::PatientErased).into());
    }
    let body = serde_json::json!({ "patient_id": patient, "updated": true, "updated_at": now });
    Ok(Done::json(200, body, reason))
}

/// `PUT /api/admin/patients/{id}/account` `{"user_id"}`: 200 once the account owns the record
/// (also when it already did); 400 if it is not an enabled patient account of the tenant; 409 if
/// the record has another account or the account another record.
pub fn link(conn: &Connection, caller: &Caller, patient: &PatientId, body: &[u8]) -> Handled {
    let now = health_spin::now();
    let (_, reason) = service::authorize_patient(conn, caller, authz::Action::LinkPatientAccount, patient, now)?;
    let account: PatientAccount = service::body(body)?;
    let user = &account.user_id;
    match crate::account(caller, user, now)? {
        Some((Role::Patient, true)) => {}
        _ => return Err(Refusal::bad_request(Reason::NotAPatientAccount).into()),
    }
    let changed = match records::link_owner(conn, &caller.tenant_id, patient, user)? {
        Linked::Linked => true,
        Linked::Unchanged => false,
        Linked::NoSuchPatient => return Err(Refusal::NotFound(Reason::NoSuchPatient).into()),
        Linked::RecordTaken => {
            let detail = "the record is linked to another account";
            return Err(Refusal::ConflictWith(Reason::RecordHasAnAccount, detail.into()).into());
        }
        Linked::AccountTaken(_) => {
            let detail = "the account is linked to another patient's record";
            return Err(Refusal::ConflictWith(Reason::AccountHasARecord, detail.into()).into());
        }
    };
    let body = serde_json::json!({ "patient_id": patient, "user_id": user, "linked": true, "changed": changed });
    Ok(Done::json(200, body, reason))
}
