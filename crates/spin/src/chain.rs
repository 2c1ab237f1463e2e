//! Service chaining with an attested caller context: a POST to another component at
//! `http://{name}.spin.internal`, signed under `context_key` like the gateway's forwarded
//! requests, so the receiving component can check who is asking.

use anyhow::Context;
use health_core::Caller;
use spin_sdk::http::{Method, Request, Response};

/// POSTs a JSON `body` to `{base}{path}` (e.g. `http://jwks.spin.internal`, `/internal/sign`)
/// on behalf of `caller`, attested at `now`.
pub async fn post_json(base: &str, path: &str, body: Vec<u8>, caller: &Caller, now: i64) -> anyhow::Result<Response> {
    let key = crate::secret_key("context_key")?;
    let att = health_core::context::attest(&key, "POST", path, &body, caller, now);
    let request = Request::builder()
        .method(Method::Post)
        .uri(format!("{base}{path}"))
        .header("content-type", "application/json")
        .header(health_core::context::CALLER_HEADER, att.caller)
        .header(health_core::context::TIMESTAMP_HEADER, att.timestamp)
        .header(health_core::context::MAC_HEADER, att.mac)
        .body(body)
        .build();
    spin_sdk::http::send(request).await.with_context(|| format!("calling {base}{path}"))
}
