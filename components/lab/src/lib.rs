//! The `lab` role service (private: reachable only as `lab.spin.internal`). A lab user lists
//! the open orders of every lab organisation they are a member of (order id, patient id, test,
//! the ordering doctor's note to the lab: never record content) and appends one result to each,
//! which closes the order; nothing else. Every request needs the gateway's attested caller
//! context, and every decision is the composed policy's, with the order's lab organisation and
//! the caller's membership of it (read from `records` now, so a detached user loses the queue at
//! once) as the facts.

// The Spin SDK macros expand to the component ABI's `unsafe` glue.
#![allow(unsafe_code)]

use health_core::Reason;
use health_core::routes::{self, Api};
use health_core::{Caller, OrderId};
use health_spin::authz;
use health_spin::records::{self, LabOrder, NewResult, Vault};
use health_spin::service::{self, Done, Handled, Refusal};
use spin_sdk::http::{Request, Response};
use spin_sdk::http_component;
use spin_sdk::sqlite::Connection;

#[http_component]
fn handle(req: Request) -> Response {
    service::serve(health_core::Component::Lab, &req, |caller, api, body| {
        let conn = records::open_for_service()?;
        match api {
            Api::LabOrders => list(&conn, caller),
            Api::AddLabResult(order) => append(&conn, caller, &order, body),
            _ => Err(Refusal::NotFound(Reason::NoSuchRoute).into()),
        }
    })
}

fn decide(conn: &Connection, caller: &Caller, action: authz::Action, order: &LabOrder) -> Decision {
    let facts = authz::OrderFacts {
        tenant_id: caller.tenant_id.to_string(),
        order_id: order.order_id.to_string(),
        lab_id: order.lab_id.to_string(),
        lab_member: records::lab_member(conn, &caller.tenant_id, &order.lab_id, &caller.subject)?,
    };
    Ok(authz::authorize(&authz::caller(caller), action, &authz::Resource::LabOrder(facts)))
}

type Decision = anyhow::Result<authz::Decision>;

fn list(conn: &Connection, caller: &Caller) -> Handled {
    let mut vault = Vault::open(conn, &caller.tenant_id)?;
    let orders = records::open_lab_orders(&mut vault, &caller.subject)??;
    // The query already selects the orders of the caller's labs; policy still decides each one.
    let mut visible: Vec<&LabOrder> = Vec::new();
    for order in &orders {
        if decide(conn, caller, authz::Action::ListLabOrders, order)?.allow {
            visible.push(order);
        }
    }
    Ok(Done::json(200, serde_json::json!({ "orders": visible }), Reason::AssignedLab))
}

fn append(conn: &Connection, caller: &Caller, order_id: &OrderId, body: &[u8]) -> Handled {
    let tenant = &caller.tenant_id;
    // An unknown order and another lab's order are refused alike.
    let Some(order) = records::lab_order(conn, tenant, order_id)? else {
        return Err(Refusal::forbidden(Reason::NoSuchOrder).into());
    };
    let decision = decide(conn, caller, authz::Action::AppendLabResult, &order)?;
    if !decision.allow {
        return Err(Refusal::Forbidden(decision.reason).into());
    }
    let result: routes::LabResult = service::body(body)?;
    if records::patient(conn, tenant, &order.patient_id)?.is_none_or(|p| p.erased) {
        return Err(Refusal::Conflict(Reason::PatientErased).into());
    }
    let result_id = health_spin::random_hex_id("r");
    let now = health_spin::now();
    let new = NewResult { code: &result.code, value: &result.value, unit: &result.unit, note: result.note.as_deref() };
    let mut vault = Vault::open(conn, tenant)?;
    if !records::append_lab_result(&mut vault, &order, &caller.subject, &result_id, &new, now)? {
        return Err(Refusal::Conflict(Reason::OrderNotOpen).into());
    }
    let body = serde_json::json!({ "result_id": result_id, "order_id": order.order_id, "resulted_at": now });
    Ok(Done::json(201, body, decision.reason))
}
