//! Responses with the platform's headers: JSON, RFC 9457 problems, security headers everywhere
//! and `Cache-Control: no-store` on anything carrying tokens or PHI.

use health_core::Problem;
use spin_sdk::http::Response;

const SECURITY_HEADERS: [(&str, &str); 4] = [
    ("strict-transport-security", "max-age=63072000; includeSubDomains"),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("content-security-policy", "default-src 'none'; frame-ancestors 'none'"),
];

/// Cache policy of a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cache {
    /// Tokens, PHI, errors: never stored.
    NoStore,
    /// Public data such as JWK Sets, cacheable for this many seconds.
    Public(u32),
}

fn with_headers(status: u16, content_type: &str, body: Vec<u8>, cache: Cache) -> Response {
    let mut builder = Response::builder();
    builder.status(status).header("content-type", content_type);
    for (name, value) in SECURITY_HEADERS {
        builder.header(name, value);
    }
    match cache {
        Cache::NoStore => builder.header("cache-control", "no-store").header("pragma", "no-cache"),
        Cache::Public(secs) => builder.header("cache-control", format!("public, max-age={secs}")),
    };
    builder.body(body).build()
}

pub fn json(status: u16, value: &impl serde::Serialize, cache: Cache) -> Response {
    with_headers(status, "application/json", serde_json::to_vec(value).unwrap_or_default(), cache)
}

/// Raw bytes with an explicit media type (e.g. a relayed service response).
pub fn bytes(status: u16, content_type: &str, body: Vec<u8>, cache: Cache) -> Response {
    with_headers(status, content_type, body, cache)
}

pub fn problem(problem: &Problem) -> Response {
    let mut response =
        with_headers(problem.status, health_core::problem::CONTENT_TYPE, problem.to_json(), Cache::NoStore);
    if *problem == Problem::unauthorized() {
        // RFC 6750 §3: the challenge for a missing or invalid bearer token.
        response.set_header("www-authenticate", r#"Bearer error="invalid_token""#);
    }
    response
}
