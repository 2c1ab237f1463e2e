//! `POST /api/patients/{id}/lab-orders` (issue 16): a doctor orders a test for a patient from
//! one of the tenant's registered lab organisations. The order belongs to the organisation, so
//! every member of it sees it in their queue (`GET /api/lab/orders`) and one of them appends
//! the result, which the patient and the ordering doctor then read at
//! `GET /api/patients/{id}/lab-results`. Ordering follows the rule of writing the record: a
//! doctor on the patient's care team, or one under break-glass (the gateway flags that for
//! review). A note to the lab is clinical text and is sealed like the record's.

use health_core::routes::NewLabOrder;
use health_core::{Caller, PatientId, Reason};
use health_spin::authz;
use health_spin::records::{self, Vault};
use health_spin::service::{self, Done, Handled, Refusal};
use spin_sdk::sqlite::Connection;

/// 201 with the new order's id; 400 if the lab organisation is not one the tenant registered.
pub fn order(conn: &Connection, caller: &Caller, patient: &PatientId, body: &[u8]) -> Handled {
    let now = health_spin::now();
    let (_, reason) = service::authorize_patient(conn, caller, authz::Action::OrderLabTest, patient, now)?;
    let order: NewLabOrder = service::body(body)?;
    if !records::lab_registered(conn, &caller.tenant_id, &order.lab_id)? {
        return Err(Refusal::bad_request(Reason::NoSuchLab).into());
    }
    let order_id = records::new_order_id()?;
    let doctor = caller.subject.clone();
    let new = records::NewLabOrder {
        order_id: &order_id,
        patient_id: patient,
        lab_id: &order.lab_id,
        test_code: &order.test_code,
        test_name: order.test_name.as_deref().unwrap_or_default(),
        note: order.note.as_deref(),
        ordered_by: &doctor,
    };
    records::add_lab_order(&mut Vault::open(conn, &caller.tenant_id)?, &new, now)?;
    let body = serde_json::json!({
        "order_id": order_id, "patient_id": patient, "lab_id": order.lab_id, "test_code": order.test_code,
        "status": "open", "ordered_by": doctor, "ordered_at": now,
    });
    Ok(Done::json(201, body, reason))
}
