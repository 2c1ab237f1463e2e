//! Service chaining with an attested caller context: a request to another component at
//! `http://{name}.spin.internal`, signed under `context_key` (ARCHITECTURE.md §4), so the
//! receiving component can check who is asking. The gateway forwards with it; `auth` and the
//! gateway call `jwks` with it.

use anyhow::Context;
use health_core::Caller;
use spin_sdk::http::{Method, Request, RequestBuilder, Response};

/// A request to `{base}{path}` with `body` and the caller context for `caller` attested at
/// `now` (method, path, body digest, context and time under the MAC); the caller may add
/// headers before building it.
pub fn attested(
    method: Method,
    base: &str,
    path: &str,
    body: Vec<u8>,
    caller: &Caller,
    now: i64,
) -> anyhow::Result<RequestBuilder> {
    let key = crate::secret_key("context_key")?;
    let att = health_core::context::attest(&key, &method.to_string(), path, &body, caller, now);
    let mut builder = Request::builder();
    builder
        .method(method)
        .uri(format!("{base}{path}"))
        .header(health_core::context::CALLER_HEADER, att.caller)
        .header(health_core::context::TIMESTAMP_HEADER, att.timestamp)
        .header(health_core::context::MAC_HEADER, att.mac)
        .body(body);
    Ok(builder)
}

/// POSTs a JSON `body` to `{base}{path}` (e.g. `http://jwks.spin.internal`, `/internal/sign`)
/// on behalf of `caller`, attested at `now`.
pub async fn post_json(base: &str, path: &str, body: Vec<u8>, caller: &Caller, now: i64) -> anyhow::Result<Response> {
    let mut request = attested(Method::Post, base, path, body, caller, now)?;
    request.header("content-type", "application/json");
    spin_sdk::http::send(request.build()).await.with_context(|| format!("calling {base}{path}"))
}
