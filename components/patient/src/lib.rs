//! The `patient` role service (private: reachable only as `patient.spin.internal`). Serves a
//! patient's own record after checking the gateway's caller context and asking the composed
//! policy with the record's owner; another patient's record is refused.

// The Spin SDK macros expand to the component ABI's `unsafe` glue.
#![allow(unsafe_code)]

use spin_sdk::http::{Request, Response};
use spin_sdk::http_component;

#[http_component]
fn handle(req: Request) -> Response {
    health_spin::service::serve_records(&req)
}
