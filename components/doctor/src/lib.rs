//! The `doctor` role service (private: reachable only as `doctor.spin.internal`). Serves the
//! record of a patient on the doctor's active care team, after checking the caller context and
//! asking the composed policy. Writes and break-glass come with the gateway issue.

// The Spin SDK macros expand to the component ABI's `unsafe` glue.
#![allow(unsafe_code)]

use spin_sdk::http::{Request, Response};
use spin_sdk::http_component;

#[http_component]
fn handle(req: Request) -> Response {
    health_spin::service::serve_records(&req)
}
