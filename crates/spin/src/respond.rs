//! Responses with the platform's headers: JSON, RFC 9457 problems, security headers everywhere
//! and `Cache-Control: no-store` on anything carrying tokens or PHI.

use health_core::{Problem, Refusal};
use spin_sdk::http::{OutgoingBody, OutgoingResponse, Response, ResponseOutparam};

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

/// Sends `response` as the answer to the request, its whole body handed to the runtime before the
/// response itself, so that the runtime's HTTP server finds the complete message (head, body and,
/// for chunked encoding, the last chunk) at once and writes it in one go.
///
/// spin-sdk's own path (`#[http_component]` returning a `Response`) sets the response first and
/// writes the body after it. Spin 4.0.2's server may then write the head and the body's first
/// chunk before the body ends, and the last chunk separately; it does not set `TCP_NODELAY`, so
/// Nagle's algorithm holds that small last write until the client acknowledges the first, and a
/// client delaying its ACK (Linux: up to 40 ms) waits that long for every such response on a
/// kept-alive connection (measured on the JWK Set: 145 of 200 sequential GETs took about 44 ms;
/// docs/PERFORMANCE.md). A body larger than what the runtime buffers before the response is set
/// goes out as before: the response first, then the rest of the body.
pub fn send(out: ResponseOutparam, response: Response) {
    if let Err(e) = try_send(out, response) {
        crate::log::warn("response_not_sent", e.to_string());
    }
}

/// [`send`], the failure returned instead of logged (for the portal, whose world has no clock
/// for a log line's time).
pub fn try_send(out: ResponseOutparam, mut response: Response) -> anyhow::Result<()> {
    // Taken, not copied: the conversion below reads only the status and headers.
    let body = std::mem::take(response.body_mut());
    let outgoing = OutgoingResponse::try_from(response)?;
    let outgoing_body = outgoing.body().map_err(|()| anyhow::anyhow!("response body taken twice"))?;
    let stream = outgoing_body.write().map_err(|()| anyhow::anyhow!("response body stream taken twice"))?;
    // What the runtime takes without waiting (its channel to the server has room) is written now.
    let mut rest = body.as_slice();
    while !rest.is_empty() {
        let room = usize::try_from(stream.check_write()?).unwrap_or(usize::MAX);
        if room == 0 {
            break;
        }
        let (now, later) = rest.split_at(room.min(rest.len()));
        stream.write(now)?;
        rest = later;
    }
    if rest.is_empty() {
        stream.flush()?;
        drop(stream);
        OutgoingBody::finish(outgoing_body, None)?;
        out.set(outgoing);
        return Ok(());
    }
    // A body larger than the runtime buffers: the server drains it once the response is set.
    out.set(outgoing);
    for chunk in rest.chunks(4096) {
        stream.blocking_write_and_flush(chunk)?;
    }
    drop(stream);
    OutgoingBody::finish(outgoing_body, None)?;
    Ok(())
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

/// The response to a refusal: its problem ([`Refusal::problem`], the one place a status is
/// decided) with the headers some refusals need, added here and nowhere else.
pub fn refusal(refusal: &Refusal) -> Response {
    let mut response = problem(&refusal.problem());
    for (name, value) in refusal_headers(refusal) {
        response.set_header(name, value);
    }
    response
}

/// The headers a refusal's response carries besides the problem's own.
fn refusal_headers(refusal: &Refusal) -> Vec<(&'static str, String)> {
    match refusal {
        // RFC 6750 §3.1: a request without credentials gets the challenge without an error code.
        Refusal::NoCredentials(_) => vec![("www-authenticate", "Bearer".into())],
        // RFC 6749 §5.2: a failed client authentication is challenged with the scheme it used.
        Refusal::OAuth { status: 401, .. } => vec![("www-authenticate", r#"Basic realm="health-platform""#.into())],
        Refusal::Locked { retry_after } => vec![("retry-after", retry_after.to_string())],
        Refusal::Unauthenticated(_)
        | Refusal::NotFound(_)
        | Refusal::BadRequest(..)
        | Refusal::TooLarge
        | Refusal::UnsupportedMediaType
        | Refusal::Forbidden(_)
        | Refusal::Conflict(_)
        | Refusal::RateLimited
        | Refusal::Unreadable
        | Refusal::MethodNotAllowed
        | Refusal::ForbiddenWith(..)
        | Refusal::ConflictWith(..)
        | Refusal::InvalidCredentials(_)
        | Refusal::MfaRequired
        | Refusal::MfaEnrollmentRequired
        | Refusal::WrongCurrentPassword
        | Refusal::OAuth { .. } => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use health_core::Reason;

    #[test]
    fn each_refusal_carries_its_own_headers() {
        let header = |refusal: Refusal, name: &str| {
            refusal_headers(&refusal).into_iter().find(|(n, _)| *n == name).map(|(_, v)| v)
        };
        assert_eq!(
            header(Refusal::NoCredentials(Reason::NotABearerToken), "www-authenticate").as_deref(),
            Some("Bearer")
        );
        assert_eq!(
            header(Refusal::OAuth { status: 401, code: "invalid_client", detail: "d" }, "www-authenticate").as_deref(),
            Some(r#"Basic realm="health-platform""#)
        );
        assert_eq!(
            header(Refusal::OAuth { status: 400, code: "invalid_grant", detail: "d" }, "www-authenticate"),
            None
        );
        assert_eq!(header(Refusal::Locked { retry_after: 42 }, "retry-after").as_deref(), Some("42"));
        assert!(refusal_headers(&Refusal::Unauthenticated(Reason::Expired)).is_empty());
        assert!(refusal_headers(&Refusal::InvalidCredentials(Reason::BadPassword)).is_empty());
    }
}

/// Why a handler did not answer: a refusal (the client's fault or the policy's decision, with
/// its audit reason), or an internal error (500, or 503 when a store or component did not
/// answer). `?` turns either into this, so a handler is one flat `Result`.
#[derive(Debug)]
pub enum Failure {
    Refused(Refusal),
    Internal(anyhow::Error),
}

impl Failure {
    /// `result` with its refusal apart from its internal error, for a caller that records a
    /// refusal (audits it, answers it) and lets an internal error through with `?`.
    pub fn split<T>(result: Result<T, Failure>) -> anyhow::Result<Result<T, Refusal>> {
        match result {
            Ok(value) => Ok(Ok(value)),
            Err(Failure::Refused(refusal)) => Ok(Err(refusal)),
            Err(Failure::Internal(error)) => Err(error),
        }
    }
}

impl From<Refusal> for Failure {
    fn from(refusal: Refusal) -> Self {
        Failure::Refused(refusal)
    }
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        Failure::Internal(error)
    }
}

/// Stored PHI that does not open answers [`Refusal::Unreadable`], logged here.
impl From<health_core::phi::PhiError> for Failure {
    fn from(error: health_core::phi::PhiError) -> Self {
        crate::log::warn("phi_does_not_open", error.to_string());
        Failure::Refused(Refusal::Unreadable)
    }
}
