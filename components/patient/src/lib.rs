//! The `patient` role service (private: reachable only as `patient.spin.internal`). Patients
//! read their own demographics, record and lab results and grant or withdraw insurers'
//! consent; tenant admins erase a patient (crypto-shredding) and rotate the tenant's data key
//! here, since this service owns patient identity in `records`. Every request needs the
//! gateway's attested caller context, and every decision is the composed policy's.

// The Spin SDK macros expand to the component ABI's `unsafe` glue.
#![allow(unsafe_code)]

use health_core::routes::{self, Api};
use health_core::{Caller, ClientId, PatientId};
use health_spin::authz;
use health_spin::records::{self, Vault};
use health_spin::service::{self, Done, Handled, Refusal};
use spin_sdk::http::{Request, Response};
use spin_sdk::http_component;
use spin_sdk::sqlite::Connection;

/// The longest consent a patient can give in one grant (two years).
const MAX_CONSENT_SECS: i64 = 2 * 366 * 24 * 3600;

#[http_component]
fn handle(req: Request) -> Response {
    service::serve(health_core::Component::Patient, &req, |caller, api, body| {
        let conn = records::open_for_service()?;
        if let Some(read) = service::shared_reads(&conn, caller, &api) {
            return read;
        }
        match api {
            Api::GrantConsent(patient) => grant_consent(&conn, caller, &patient, body),
            Api::RevokeConsent(patient, insurer) => revoke_consent(&conn, caller, &patient, &insurer),
            Api::ErasePatient(patient) => erase(&conn, caller, &patient),
            Api::RotateDataKey => rotate(&conn, caller),
            _ => Ok(Err(Refusal::NotFound("no_such_route"))),
        }
    })
}

fn grant_consent(conn: &Connection, caller: &Caller, patient: &PatientId, body: &[u8]) -> Handled {
    let now = health_spin::now();
    let (_, reason) = health_spin::allowed!(service::authorize_patient(
        conn,
        caller,
        authz::Action::ManageConsent,
        patient.as_str(),
        now
    ));
    let consent: routes::Consent = health_spin::allowed!(service::body(body));
    if consent.expires_at <= now || consent.expires_at > now + MAX_CONSENT_SECS {
        return Ok(Err(Refusal::BadRequest("consent_expiry_out_of_range")));
    }
    let tenant = caller.tenant_id.as_str();
    records::grant_consent(conn, tenant, patient.as_str(), consent.insurer.as_str(), now, consent.expires_at)?;
    let body = serde_json::json!({
        "patient_id": patient, "insurer": consent.insurer, "granted_at": now, "expires_at": consent.expires_at,
    });
    Ok(Ok(Done::json(201, body, reason)))
}

fn revoke_consent(conn: &Connection, caller: &Caller, patient: &PatientId, insurer: &ClientId) -> Handled {
    let now = health_spin::now();
    let (_, reason) = health_spin::allowed!(service::authorize_patient(
        conn,
        caller,
        authz::Action::ManageConsent,
        patient.as_str(),
        now
    ));
    if !records::revoke_consent(conn, caller.tenant_id.as_str(), patient.as_str(), insurer.as_str(), now)? {
        return Ok(Err(Refusal::NotFound("no_such_consent")));
    }
    Ok(Ok(Done { status: 204, body: service::Body::Empty, reason }))
}

/// The admin's decision on their own tenant (erasure and data-key rotation).
fn authorize_tenant(caller: &Caller, action: authz::Action) -> anyhow::Result<Result<String, Refusal>> {
    let resource = authz::Resource::Tenant(caller.tenant_id.to_string());
    let decision = authz::authorize(&authz::caller(caller), action, &resource);
    Ok(if decision.allow { Ok(decision.reason) } else { Err(Refusal::Forbidden(decision.reason)) })
}

fn erase(conn: &Connection, caller: &Caller, patient: &PatientId) -> Handled {
    let reason = health_spin::allowed!(authorize_tenant(caller, authz::Action::ErasePatient));
    let tenant = caller.tenant_id.as_str();
    if records::patient(conn, tenant, patient.as_str())?.is_none() {
        return Ok(Err(Refusal::NotFound("no_such_patient")));
    }
    let now = health_spin::now();
    let newly = Vault::open(conn, tenant)?.erase(patient.as_str(), now)?;
    let body = serde_json::json!({ "patient_id": patient, "erased": true, "already_erased": !newly, "erased_at": now });
    Ok(Ok(Done::json(200, body, reason)))
}

fn rotate(conn: &Connection, caller: &Caller) -> Handled {
    let reason = health_spin::allowed!(authorize_tenant(caller, authz::Action::RotateDataKey));
    let key_id = Vault::open(conn, caller.tenant_id.as_str())?.rotate(health_spin::now())?;
    Ok(Ok(Done::json(201, serde_json::json!({ "data_key_id": key_id }), reason)))
}
