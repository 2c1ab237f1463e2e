//! The `insurance` role service (private: reachable only as `insurance.spin.internal`). It already refuses
//! any request without a valid, fresh caller context from the gateway; its routes arrive with
//! the gateway and role-services issue, so every attested request is answered 404 for now.

// The Spin SDK and wit-bindgen macros expand to the component ABI's `unsafe` glue.
#![allow(unsafe_code)]

use health_spin::service::{self, Refusal};
use spin_sdk::http::{Request, Response};
use spin_sdk::http_component;

#[http_component]
fn handle(req: Request) -> Response {
    service::serve(&req, |_caller| Ok(Err(Refusal::NotFound("no_such_route"))))
}
