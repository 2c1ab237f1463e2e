//! What an operations team reads (issue 18): the W3C trace of a request in its audit event, the
//! structured JSON log lines, and the console audit sink for a SIEM, redacted as exports are.

use std::sync::OnceLock;

use health_e2e::{ALICE, TestApp};
use serde_json::Value;

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// An application writing every audit event to the console too, redacted.
fn app() -> &'static TestApp {
    static APP: OnceLock<TestApp> = OnceLock::new();
    APP.get_or_init(|| {
        TestApp::start_with_variables(&[("audit_sink", "console"), ("audit_redaction", "strict")]).expect("app loads")
    })
}

/// The JSON objects among the guest's output lines (each runtime prefixes a line with where it
/// came from: the host with `[component]`, Spin's log files with `[file]`).
fn json_lines(app: &TestApp) -> Vec<Value> {
    app.app
        .guest_output()
        .iter()
        .filter_map(|line| line.find('{').and_then(|at| serde_json::from_str(&line[at..]).ok()))
        .collect()
}

/// The trace id recorded in the newest audit event of `request_id`.
fn audited_trace(app: &TestApp, request_id: &str) -> String {
    let sql = format!(
        "SELECT COALESCE(json_extract(event, '$.trace_id'), '') FROM audit_events \
         WHERE json_extract(event, '$.request_id') = '{request_id}' ORDER BY rowid DESC LIMIT 1"
    );
    app.query_strings("audit.db", &sql).into_iter().next().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_clients_trace_is_kept_in_the_audit_event_and_a_request_without_one_starts_its_own() {
    let app = app();
    let token = app.token(ALICE).await;
    let traceparent = format!("00-{CLIENT_TRACE}-00f067aa0ba902b7-01");
    let bearer = format!("Bearer {token}");
    let traced = app
        .send("GET", "/api/patients/p-1001/records", &[("authorization", &bearer), ("traceparent", &traceparent)], "")
        .await;
    assert_eq!(traced.status, 200, "{}", traced.body);
    assert_eq!(audited_trace(app, traced.header("x-request-id")), CLIENT_TRACE);

    for header in [None, Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01"), Some("garbage")] {
        let mut headers = vec![("authorization", bearer.as_str())];
        headers.extend(header.map(|h| ("traceparent", h)));
        let reply = app.send("GET", "/api/patients/p-1001/records", &headers, "").await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        let started = audited_trace(app, reply.header("x-request-id"));
        assert!(
            started.len() == 32 && started.bytes().all(|b| b.is_ascii_hexdigit()) && started != CLIENT_TRACE,
            "{header:?} starts a trace of its own: {started:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_sink_writes_every_audit_event_as_one_redacted_json_line() {
    let app = app();
    let token = app.token(ALICE).await;
    let reply = app.get_with("/api/patients/p-1001/records", &token).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let request_id = reply.header("x-request-id");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let line = loop {
        // Spin writes a component's output to its log file as it comes; give it a moment.
        let found = json_lines(app).into_iter().find(|v| v["log"] == "audit" && v["event"]["request_id"] == request_id);
        match found {
            Some(line) => break line,
            None if std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await
            }
            None => panic!("no console audit line for {request_id}:\n{}", app.app.guest_output().join("\n")),
        }
    };
    let event = &line["event"];
    assert_eq!((event["reason"].as_str(), event["status"].as_u64()), (Some("patient_self"), Some(200)), "{line}");
    let text = line.to_string();
    assert!(!text.contains("p-1001") && !text.contains("u-alice"), "redacted as `strict` exports are: {text}");
    assert!(event["time"].is_i64() && line["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{line}");
}
