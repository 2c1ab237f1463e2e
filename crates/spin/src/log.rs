//! Structured logs: one JSON object per line on standard error, which Spin (and the host)
//! keep per component, with the fields an operator filters on: `time` (RFC 3339, UTC, ms),
//! `level`, `component`, `request_id`, `trace_id`, `tenant`, `event` (a stable snake_case
//! name) and `detail`. A component names itself and its request once ([`begin`]); every line
//! of that request carries them.
//!
//! What a line may hold is what an audit event may: no token, secret, password or PHI. An
//! error's `detail` is its chain of messages, which the code writes without values.

use std::cell::RefCell;

use health_core::trace::TraceParent;

/// The request a line belongs to.
#[derive(Debug, Clone, Default)]
struct Scope {
    component: String,
    request_id: Option<String>,
    trace: Option<TraceParent>,
    tenant: Option<String>,
}

thread_local! {
    // A Spin instance serves one request (WASI 0.2): the scope is that request's.
    static SCOPE: RefCell<Scope> = RefCell::new(Scope::default());
}

/// Starts the lines of one request of `component`, in `trace` if the request came with one
/// (the calls this request makes carry it on: `chain`).
pub fn begin(component: &str, request_id: Option<&str>, trace: Option<TraceParent>) {
    SCOPE.with(|scope| {
        *scope.borrow_mut() =
            Scope { component: component.to_owned(), request_id: request_id.map(str::to_owned), trace, tenant: None }
    });
}

/// The trace the current request is part of.
pub fn trace() -> Option<TraceParent> {
    SCOPE.with(|scope| scope.borrow().trace)
}

/// The tenant the request turned out to be for (once a token or a body said so).
pub fn set_tenant(tenant: &str) {
    SCOPE.with(|scope| scope.borrow_mut().tenant = Some(tenant.to_owned()));
}

/// Severity of a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
    Error,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

/// The line for `event` with `detail`, at `unix_ms`, in the current scope.
pub fn line(level: Level, event: &str, detail: &str, unix_ms: i64) -> String {
    SCOPE.with(|scope| {
        let scope = scope.borrow();
        let mut object = serde_json::Map::new();
        let mut put = |key: &str, value: Option<&str>| {
            if let Some(value) = value {
                object.insert(key.to_owned(), value.into());
            }
        };
        put("time", Some(&rfc3339_ms(unix_ms)));
        put("level", Some(level.as_str()));
        put("component", Some(scope.component.as_str()).filter(|c| !c.is_empty()));
        put("request_id", scope.request_id.as_deref());
        put("trace_id", scope.trace.map(|t| t.trace_id_hex()).as_deref());
        put("tenant", scope.tenant.as_deref());
        put("event", Some(event));
        put("detail", Some(detail).filter(|d| !d.is_empty()));
        serde_json::Value::Object(object).to_string()
    })
}

/// Writes one line to standard error.
pub fn write(level: Level, event: &str, detail: &str) {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    eprintln!("{}", line(level, event, detail, now_ms));
}

/// An informational line.
pub fn info(event: &str, detail: impl AsRef<str>) {
    write(Level::Info, event, detail.as_ref());
}

/// Something went wrong that the request survived (or that a client caused).
pub fn warn(event: &str, detail: impl AsRef<str>) {
    write(Level::Warn, event, detail.as_ref());
}

/// The request failed because of the platform: an error's whole chain of causes.
pub fn error(event: &str, error: &anyhow::Error) {
    write(Level::Error, event, &format!("{error:#}"));
}

/// `unix_ms` as `2026-11-26T08:00:00.123Z`.
fn rfc3339_ms(unix_ms: i64) -> String {
    let seconds = health_core::rfc3339(unix_ms.div_euclid(1000));
    format!("{}.{:03}Z", seconds.trim_end_matches('Z'), unix_ms.rem_euclid(1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_one_json_object_with_the_requests_fields() {
        let trace = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        begin("gateway", Some("req-1"), trace);
        assert_eq!(super::trace(), trace);
        set_tenant("demo-hospital");
        let text = line(Level::Warn, "audit_write_failed", "database is locked\nretry", 1_767_225_600_123);
        assert!(!text.contains('\n'), "one line: {text}");
        let value: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(
            value,
            serde_json::json!({
                "time": "2026-01-01T00:00:00.123Z", "level": "warn", "component": "gateway",
                "request_id": "req-1", "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
                "tenant": "demo-hospital", "event": "audit_write_failed", "detail": "database is locked\nretry",
            })
        );
    }

    #[test]
    fn a_new_request_forgets_the_last_ones_fields() {
        begin("patient", Some("req-1"), None);
        set_tenant("t1");
        begin("patient", None, None);
        let value: serde_json::Value = serde_json::from_str(&line(Level::Info, "started", "", 0)).expect("JSON");
        assert_eq!(
            value,
            serde_json::json!({ "time": "1970-01-01T00:00:00.000Z", "level": "info", "component": "patient", "event": "started" })
        );
    }
}
