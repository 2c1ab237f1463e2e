//! The `patient` role service (private: reachable only as `patient.spin.internal`). Patients
//! read their own demographics, record and lab results, grant or withdraw insurers' consent
//! and export everything held about them (the gateway adds their access log); tenant admins erase a patient (crypto-shredding) and rotate the tenant's data key
//! here, since this service owns patient identity in `records`; receptionists register
//! patients, edit their demographics and admit them to care teams. Every request needs the
//! gateway's attested caller context, and every decision is the composed policy's.
//!
//! Two decisions need what `auth` owns, asked over the patient → auth link: a consent names an
//! insurer client the tenant has registered and enabled, and erasing a patient disables the
//! account that owns the record and ends its sessions, so the erased patient cannot sign in.
//! The tenant admin's lab organisations are kept here too (`labs`): a member must be an enabled
//! lab user, asked of `auth` over the same link.

// The Spin SDK macros expand to the component ABI's `unsafe` glue.
#![allow(unsafe_code)]

mod care_team;
mod export;
mod labs;
mod registry;

use anyhow::Context;
use health_core::Reason;
use health_core::routes::{self, Api};
use health_core::{Caller, ClientId, Component, Link, Opaque, PatientId, Role};
use health_spin::authz;
use health_spin::records::{self, Vault};
use health_spin::service::{self, Done, Handled, Refusal};
use spin_sdk::http::{Method, Request, Response};
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
            Api::OwnRecord => own_record(&conn, caller),
            Api::RegisterPatient => registry::register(&conn, caller, body),
            Api::EditDemographics(patient) => registry::edit_demographics(&conn, caller, &patient, body),
            Api::LinkPatientAccount(patient) => registry::link(&conn, caller, &patient, body),
            Api::AccessLog(patient, _) => export::access_log(&conn, caller, &patient),
            Api::Export(patient) => export::export(&conn, caller, &patient),
            Api::CareTeam(patient) => service::care_team(&conn, caller, &patient),
            Api::AddCareTeamMember(patient, member) => care_team::add(&conn, caller, &patient, &member, body),
            Api::EndCareTeamMembership(patient, member) => care_team::end(&conn, caller, &patient, &member),
            Api::Labs => labs::list(&conn, caller),
            Api::RegisterLab => labs::register(&conn, caller, body),
            Api::AttachLabMember(lab, user) => labs::attach(&conn, caller, &lab, &user),
            Api::DetachLabMember(lab, user) => labs::detach(&conn, caller, &lab, &user),
            _ => Err(Refusal::NotFound(Reason::NoSuchRoute).into()),
        }
    })
}

fn grant_consent(conn: &Connection, caller: &Caller, patient: &PatientId, body: &[u8]) -> Handled {
    let now = health_spin::now();
    let (_, reason) = service::authorize_patient(conn, caller, authz::Action::ManageConsent, patient, now)?;
    let consent: routes::Consent = service::body(body)?;
    if consent.expires_at <= now || consent.expires_at > now + MAX_CONSENT_SECS {
        return Err(Refusal::bad_request(Reason::ConsentExpiryOutOfRange).into());
    }
    if !insurer_registered(caller, &consent.insurer, now)? {
        return Err(Refusal::bad_request(Reason::InsurerNotRegistered).into());
    }
    records::grant_consent(conn, &caller.tenant_id, patient, &consent.insurer, now, consent.expires_at)?;
    let body = serde_json::json!({
        "patient_id": patient, "insurer": consent.insurer, "granted_at": now, "expires_at": consent.expires_at,
    });
    Ok(Done::json(201, body, reason))
}

fn revoke_consent(conn: &Connection, caller: &Caller, patient: &PatientId, insurer: &ClientId) -> Handled {
    let now = health_spin::now();
    let (_, reason) = service::authorize_patient(conn, caller, authz::Action::ManageConsent, patient, now)?;
    if !records::revoke_consent(conn, &caller.tenant_id, patient, insurer, now)? {
        return Err(Refusal::NotFound(Reason::NoSuchConsent).into());
    }
    Ok(Done { status: 204, body: service::Body::Empty, reason, change: None })
}

/// The patient → auth link.
pub(crate) fn auth_link() -> anyhow::Result<Link> {
    Link::new(Component::Patient, Component::Auth).context("the platform has a patient → auth link")
}

/// The role of the user `user_id` of the caller's tenant and whether it is enabled, asked of
/// `auth`; `None` if it has no such user. The id travels in the attested body, not the URL.
pub(crate) fn account(caller: &Caller, user_id: &Opaque, now: i64) -> anyhow::Result<Option<(Role, bool)>> {
    let body = serde_json::to_vec(&serde_json::json!({ "user_id": user_id }))?;
    let path = "/internal/users/lookup";
    let response = spin_sdk::http::run(health_spin::chain::post_json(auth_link()?, path, body, caller, now))?;
    match *response.status() {
        200 => {
            let answer: serde_json::Value = serde_json::from_slice(response.body()).context("auth's user answer")?;
            let role = answer["role"].as_str().and_then(Role::parse).context("auth's user answer without a role")?;
            Ok(Some((role, answer["enabled"] == true)))
        }
        404 => Ok(None),
        other => anyhow::bail!("auth answered {other} to a user lookup"),
    }
}

/// Whether `insurer` is an insurer client registered and enabled in the caller's tenant.
fn insurer_registered(caller: &Caller, insurer: &ClientId, now: i64) -> anyhow::Result<bool> {
    let path = format!("/internal/insurers/{insurer}");
    let response =
        spin_sdk::http::run(health_spin::chain::send(auth_link()?, Method::Get, &path, Vec::new(), caller, now))?;
    match *response.status() {
        200 => {
            let answer: serde_json::Value = serde_json::from_slice(response.body()).context("auth's insurer answer")?;
            Ok(answer["enabled"] == true)
        }
        404 => Ok(false),
        other => anyhow::bail!("auth answered {other} to an insurer lookup"),
    }
}

/// Disables the account `user_id` that owned an erased record and ends its sessions; `false`
/// if `auth` has no such account. An error leaves the erasure done: repeating the request
/// (idempotent) finishes it. The id travels in the attested body, not the URL: a URL reaches
/// telemetry (Spin's outbound span names it), and this one would name a patient.
fn end_account(caller: &Caller, user_id: &Opaque, now: i64) -> anyhow::Result<bool> {
    let body = serde_json::to_vec(&serde_json::json!({ "user_id": user_id }))?;
    let path = "/internal/patient-accounts/erased";
    let response = spin_sdk::http::run(health_spin::chain::post_json(auth_link()?, path, body, caller, now))?;
    match *response.status() {
        200 => Ok(true),
        404 => Ok(false),
        other => anyhow::bail!("auth answered {other} when disabling an erased patient's account"),
    }
}

/// The admin's decision on their own tenant (erasure and data-key rotation).
pub(crate) fn authorize_tenant(caller: &Caller, action: authz::Action) -> Result<String, Refusal> {
    let resource = authz::Resource::Tenant(caller.tenant_id.to_string());
    let decision = authz::authorize(&authz::caller(caller), action, &resource);
    if decision.allow { Ok(decision.reason) } else { Err(Refusal::Forbidden(decision.reason)) }
}

fn erase(conn: &Connection, caller: &Caller, patient: &PatientId) -> Handled {
    let reason = authorize_tenant(caller, authz::Action::ErasePatient)?;
    let tenant = &caller.tenant_id;
    let Some(row) = records::patient(conn, tenant, patient)? else {
        return Err(Refusal::NotFound(Reason::NoSuchPatient).into());
    };
    let now = health_spin::now();
    let newly = Vault::open(conn, tenant)?.erase(patient, now)?;
    // After the keys are gone: a failure here is retried by repeating the erasure.
    let account_disabled = match row.owner()? {
        Some(owner) => end_account(caller, &owner, now)?,
        None => false,
    };
    let body = serde_json::json!({
        "patient_id": patient, "erased": true, "already_erased": !newly, "erased_at": now,
        "account_disabled": account_disabled,
    });
    Ok(Done::json(200, body, reason))
}

/// `GET /api/me/patient`: the record the caller's account is linked to (404 `no_linked_record`
/// before an admin links one). Only the caller's own link is read.
fn own_record(conn: &Connection, caller: &Caller) -> Handled {
    let reason = authorize_tenant(caller, authz::Action::FindOwnRecord)?;
    let Some(patient_id) = records::owned_patient(conn, &caller.tenant_id, &caller.subject)? else {
        return Err(Refusal::NotFound(Reason::NoLinkedRecord).into());
    };
    Ok(Done::json(200, serde_json::json!({ "patient_id": patient_id, "user_id": caller.subject }), reason))
}

fn rotate(conn: &Connection, caller: &Caller) -> Handled {
    let reason = authorize_tenant(caller, authz::Action::RotateDataKey)?;
    let key_id = Vault::open(conn, &caller.tenant_id)?.rotate(health_spin::now())?;
    Ok(Done::json(201, serde_json::json!({ "data_key_id": key_id }), reason))
}
