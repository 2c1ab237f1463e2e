//! A patient's care team, managed by the tenant admin (the receptionist admits an arriving
//! patient, adding members, but ends no membership): who may treat the patient, from when,
//! until when and why (ARCHITECTURE.md §6). A membership grants a clinician access to the
//! patient's record from its start until its end; ending one takes effect the next second,
//! since every decision reads the memberships at the time of the request
//! (`records::on_care_team`). Every change goes through the gateway, which audits it before and
//! after (a `pending_forward` event, then the outcome). The member must be an enabled doctor,
//! nurse or pharmacist of the tenant, asked of `auth`, which owns the accounts.

use health_core::Reason;
use health_core::routes::CareTeamMembership;
use health_core::{Caller, Opaque, PatientId, Role};
use health_spin::authz;
use health_spin::records::{self, NewMembership};
use health_spin::service::{self, Done, Handled, Refusal};
use spin_sdk::sqlite::Connection;

/// The longest a membership may be set ahead: its start, or its end, at most two years out.
const MAX_AHEAD_SECS: i64 = 2 * 366 * 24 * 3600;

/// The roles a care team admits: the clinicians.
const MEMBER_ROLES: &[Role] = &[Role::Doctor, Role::Nurse, Role::Pharmacist];

/// `POST /api/patients/{id}/care-team/{member}`: a new membership, 201; 409 while the member
/// holds one that has not ended.
pub fn add(conn: &Connection, caller: &Caller, patient: &PatientId, member: &Opaque, body: &[u8]) -> Handled {
    let now = health_spin::now();
    let (_, reason) = service::authorize_patient(conn, caller, authz::Action::AddCareTeamMember, patient, now)?;
    let membership: CareTeamMembership = service::body(body)?;
    let starts_at = membership.starts_at.unwrap_or(now);
    let too_far = |t: i64| t > now + MAX_AHEAD_SECS;
    if too_far(starts_at) || membership.ends_at.is_some_and(|end| end <= now || too_far(end)) {
        return Err(Refusal::bad_request(Reason::MembershipTimesOutOfRange).into());
    }
    if !clinician(caller, member, now)? {
        return Err(Refusal::bad_request(Reason::MemberNotAClinician).into());
    }
    let membership_id = health_spin::random_hex_id("ct");
    let admin = caller.subject.clone();
    let new = NewMembership {
        membership_id: &membership_id,
        patient_id: patient,
        member,
        reason: &membership.reason,
        starts_at,
        ends_at: membership.ends_at,
        added_by: &admin,
    };
    match records::add_care_team_member(conn, &caller.tenant_id, &new, now)? {
        Some(added) => Ok(Done::json(201, serde_json::json!(added), reason)),
        None => Err(Refusal::Conflict(Reason::AlreadyOnCareTeam).into()),
    }
}

/// `DELETE /api/patients/{id}/care-team/{member}`: ends the member's live and future
/// memberships now, 200 with their ids; 404 if none had not ended.
pub fn end(conn: &Connection, caller: &Caller, patient: &PatientId, member: &Opaque) -> Handled {
    let now = health_spin::now();
    let (_, reason) = service::authorize_patient(conn, caller, authz::Action::ManageCareTeam, patient, now)?;
    let admin = caller.subject.clone();
    let ended = records::end_care_team_membership(conn, &caller.tenant_id, patient, member, &admin, now)?;
    if ended.is_empty() {
        return Err(Refusal::NotFound(Reason::NoLiveMembership).into());
    }
    let body = serde_json::json!({
        "patient_id": patient, "member": member, "ended": ended, "ended_at": now, "ended_by": caller.subject,
    });
    Ok(Done::json(200, body, reason))
}

/// Whether `member` is an enabled user of the caller's tenant whose role a care team admits.
fn clinician(caller: &Caller, member: &Opaque, now: i64) -> anyhow::Result<bool> {
    Ok(crate::account(caller, member, now)?.is_some_and(|(role, enabled)| enabled && MEMBER_ROLES.contains(&role)))
}
