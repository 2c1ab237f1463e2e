//! Service chaining with an attested caller context: a request to another component at
//! `http://{name}.spin.internal`, signed under the key of that one caller → callee link
//! (`health_core::context::Link`, ARCHITECTURE.md §4), so the receiving component can check
//! who is asking and on whose behalf. The gateway forwards with it; `auth` and the gateway call
//! `jwks` with it. Each call carries the request's trace on (`traceparent`, see `log::trace`).

use std::time::Duration;

use anyhow::Context;
use health_core::context::PATH_HEADER;
use health_core::{Caller, Link};
use spin_sdk::http::{Method, Request, RequestBuilder, Response};

use crate::stores::Unavailable;

/// The base URL of a link's receiver: `http://{name}.spin.internal`.
pub fn base(link: Link) -> String {
    format!("http://{}.spin.internal", link.to().as_str())
}

/// A request over `link` to `path` on its receiver with `body` and the caller context for
/// `caller` attested at `now` under the link's key (sender, receiver, method, path, body
/// digest, context and time under the MAC); the caller may add headers before building it.
pub fn attested(
    link: Link,
    method: Method,
    path: &str,
    body: Vec<u8>,
    caller: &Caller,
    now: i64,
) -> anyhow::Result<RequestBuilder> {
    build(link, method, path, path, body, caller, now)
}

/// A public request the gateway forwards over `link`: attested for its `path` (path and query),
/// which travels in [`PATH_HEADER`], while the URL holds only the route `template` (`GET
/// /api/patients/{id}/records`). Spin exports every outbound URL in its traces (`url.full`), and
/// the public path names a patient (issue 18).
pub fn forwarded(
    link: Link,
    method: Method,
    template: &str,
    path: &str,
    body: Vec<u8>,
    caller: &Caller,
    now: i64,
) -> anyhow::Result<RequestBuilder> {
    let mut builder = build(link, method, &template_path(template), path, body, caller, now)?;
    builder.header(PATH_HEADER, path);
    Ok(builder)
}

/// The path of a route template, as a URL path: `GET /api/patients/{id}` → `/api/patients/%7Bid%7D`.
fn template_path(template: &str) -> String {
    let path = template.split_once(' ').map_or(template, |(_, path)| path);
    path.replace('{', "%7B").replace('}', "%7D")
}

fn build(
    link: Link,
    method: Method,
    url_path: &str,
    path: &str,
    body: Vec<u8>,
    caller: &Caller,
    now: i64,
) -> anyhow::Result<RequestBuilder> {
    let key = crate::secret_key(link.key_variable())?;
    let att = health_core::context::attest(&key, link, &method.to_string(), path, &body, caller, now);
    let mut builder = Request::builder();
    builder
        .method(method)
        .uri(format!("{}{url_path}", base(link)))
        .header(health_core::context::FROM_HEADER, att.from)
        .header(health_core::context::CALLER_HEADER, att.caller)
        .header(health_core::context::TIMESTAMP_HEADER, att.timestamp)
        .header(health_core::context::MAC_HEADER, att.mac)
        .body(body);
    if let Some(trace) = crate::log::trace() {
        // The callee's part of the request is a child of this component's (W3C Trace Context).
        builder.header(health_core::trace::HEADER, trace.child(&mut crate::rng()).to_string());
    }
    Ok(builder)
}

/// How long a chained call may take before the caller gives up with 503: what bounds the stores
/// the caller's own probe does not cover (`jwks`'s, which cannot probe, and the role services'
/// `records`). Generous, as a first signing for a tenant generates its keys (an RSA key takes
/// seconds in Wasm).
pub const CALL_DEADLINE: Duration = Duration::from_secs(30);

/// POSTs a JSON `body` over `link` to `path` (e.g. `auth` → `jwks`, `/internal/sign`) on
/// behalf of `caller`, attested at `now`: [`send`] with a JSON body.
pub async fn post_json(link: Link, path: &str, body: Vec<u8>, caller: &Caller, now: i64) -> anyhow::Result<Response> {
    let mut request = attested(link, Method::Post, path, body, caller, now)?;
    request.header("content-type", "application/json");
    deliver(link, path, request).await
}

/// Sends `method` `path` with `body` over `link` on behalf of `caller`, attested at `now`. No
/// answer within [`CALL_DEADLINE`], or a 503 (the callee's stores do not answer), is
/// [`Unavailable`](crate::stores::Unavailable), so the caller answers 503 too.
pub async fn send(
    link: Link,
    method: Method,
    path: &str,
    body: Vec<u8>,
    caller: &Caller,
    now: i64,
) -> anyhow::Result<Response> {
    deliver(link, path, attested(link, method, path, body, caller, now)?).await
}

async fn deliver(link: Link, path: &str, mut request: RequestBuilder) -> anyhow::Result<Response> {
    let base = base(link);
    let sent = crate::deadline::within(CALL_DEADLINE, spin_sdk::http::send::<_, Response>(request.build())).await;
    let Ok(response) = sent else {
        return Err(Unavailable(format!("{base}{path} did not answer within {CALL_DEADLINE:?}")).into());
    };
    let response = response.with_context(|| format!("calling {base}{path}"))?;
    if *response.status() == 503 {
        return Err(Unavailable(format!("{base}{path} answered 503")).into());
    }
    Ok(response)
}
