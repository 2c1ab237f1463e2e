//! The tenant's lab organisations, kept by the tenant admin (issue 16): registering a lab
//! (idempotent by its id, so a setup script can run again) and attaching lab users to it, or
//! detaching them. An order belongs to a lab organisation and any member works it, so a
//! membership is what lets a lab user see an order at all (`records::open_lab_orders`) and
//! append its result (the `lab` service, with the membership as the policy's fact). Here, and not
//! in the `lab` service, because a member must be an enabled lab user of the tenant, asked of
//! `auth`, which owns the accounts, over the patient → auth link the platform already has. Lab
//! names and ids are organisation, not PHI; every change is audited by the gateway before and
//! after.

use health_core::routes::NewLab;
use health_core::{Caller, LabId, Opaque, Reason, Role};
use health_spin::authz;
use health_spin::records::{self, Attached, LabRegistration};
use health_spin::service::{self, Done, Handled, Refusal};
use spin_sdk::sqlite::Connection;

/// `GET /api/admin/labs`: every lab organisation of the tenant with its members.
pub fn list(conn: &Connection, caller: &Caller) -> Handled {
    let reason = crate::authorize_tenant(caller, authz::Action::ManageLabs)?;
    let labs = records::labs(conn, &caller.tenant_id)?;
    Ok(Done::json(200, serde_json::json!({ "labs": labs }), reason))
}

/// `POST /api/admin/labs` `{"lab_id", "name"}`: 201 for a new lab; 200 if it was registered
/// under the same name before; 409 if under another.
pub fn register(conn: &Connection, caller: &Caller, body: &[u8]) -> Handled {
    let reason = crate::authorize_tenant(caller, authz::Action::ManageLabs)?;
    let lab: NewLab = service::body(body)?;
    let now = health_spin::now();
    let status = match records::register_lab(conn, &caller.tenant_id, &lab.lab_id, &lab.name, &caller.subject, now)? {
        LabRegistration::Created => 201,
        LabRegistration::Unchanged => 200,
        LabRegistration::Conflict => {
            let detail = "lab_id is registered under another name";
            return Err(Refusal::ConflictWith(Reason::LabIdTaken, detail.into()).into());
        }
    };
    Ok(Done::json(status, serde_json::json!({ "lab_id": lab.lab_id, "name": lab.name, "registered": true }), reason))
}

/// `PUT /api/admin/labs/{lab_id}/members/{user_id}`: 200 once the user is a member (also when
/// they were); 404 for a lab the tenant has not registered; 400 if the user is not an enabled
/// lab user of the tenant.
pub fn attach(conn: &Connection, caller: &Caller, lab: &LabId, user: &Opaque) -> Handled {
    let reason = crate::authorize_tenant(caller, authz::Action::ManageLabs)?;
    let now = health_spin::now();
    if !records::lab_registered(conn, &caller.tenant_id, lab)? {
        return Err(Refusal::NotFound(Reason::NoSuchLab).into());
    }
    match crate::account(caller, user, now)? {
        Some((Role::Lab, true)) => {}
        _ => return Err(Refusal::bad_request(Reason::NotALabAccount).into()),
    }
    let changed = match records::attach_lab_member(conn, &caller.tenant_id, lab, user, &caller.subject, now)? {
        Attached::Attached => true,
        Attached::Unchanged => false,
        Attached::NoSuchLab => return Err(Refusal::NotFound(Reason::NoSuchLab).into()),
    };
    let body = serde_json::json!({ "lab_id": lab, "user_id": user, "member": true, "changed": changed });
    Ok(Done::json(200, body, reason))
}

/// `DELETE /api/admin/labs/{lab_id}/members/{user_id}`: 200 once the membership is gone; 404 if
/// the user was not a member. Takes effect at the user's next request.
pub fn detach(conn: &Connection, caller: &Caller, lab: &LabId, user: &Opaque) -> Handled {
    let reason = crate::authorize_tenant(caller, authz::Action::ManageLabs)?;
    if !records::detach_lab_member(conn, &caller.tenant_id, lab, user)? {
        return Err(Refusal::NotFound(Reason::NotALabMember).into());
    }
    Ok(Done::json(200, serde_json::json!({ "lab_id": lab, "user_id": user, "member": false }), reason))
}
