//! Traces exported over OTLP (issue 18, item 4): with `OTEL_EXPORTER_OTLP_ENDPOINT` set, real
//! Spin and the host send their spans to a collector (here the receiver of
//! `health_e2e::otlp`, on the official protobuf definitions), one trace per request across the
//! components it reaches, and no span carries a token or a patient's name, nor a patient id
//! beyond the one place Spin itself puts the public URL path.

use std::time::Duration;

use health_e2e::otlp::{Receiver, Span};
use health_e2e::{ALICE, Runtime, TestApp};

const CLIENT_TRACE: &str = "5a0e1b2c3d4f5061728394a5b6c7d8e9";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";
/// SpanKind of the OTLP definitions.
const SERVER: i32 = 2;
const CLIENT: i32 = 3;

/// Alice's record as the demo seeds it: her patient id, and what names her.
const PATIENT_ID: &str = "p-1001";
const PATIENT_NAMES: [&str; 3] = ["Alice", "Andersen", "1984-03-12"];

fn one<'a>(spans: &'a [Span], what: &str, pick: impl Fn(&Span) -> bool) -> &'a Span {
    let found: Vec<&Span> = spans.iter().filter(|s| pick(s)).collect();
    assert_eq!(found.len(), 1, "exactly one {what} in the trace: {spans:#?}");
    found[0]
}

#[tokio::test(flavor = "multi_thread")]
async fn one_request_is_one_trace_across_components_and_no_span_names_the_patient_or_holds_the_token() {
    let receiver = Receiver::start().expect("OTLP receiver starts");
    let endpoint = receiver.endpoint();
    // A short batch delay (Spin's SDK and the host read it alike), so the test waits little.
    let env = [("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()), ("OTEL_BSP_SCHEDULE_DELAY", "200")];
    // Audit events on the console too, which Spin exports with every other line a component
    // writes: redacted as the README says to run it then.
    let variables = [("audit_sink", "console"), ("audit_redaction", "strict")];
    let app = TestApp::start_with_env(&variables, &env).expect("app loads");
    let token = app.token(ALICE).await;
    let traceparent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let headers = [("authorization", format!("Bearer {token}")), ("traceparent", traceparent)];
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let reply = app.send("GET", &format!("/api/patients/{PATIENT_ID}/records"), &headers, "").await;
    assert_eq!(reply.status, 200, "{}", reply.body);

    let complete = |spans: &[Span]| {
        spans.iter().any(|s| s.kind == SERVER) && spans.iter().any(|s| s.name == "execute_wasm_component patient")
    };
    let trace = receiver.trace(CLIENT_TRACE, Duration::from_secs(30), complete).await;
    assert!(receiver.errors().is_empty(), "undecodable exports: {:?}", receiver.errors());

    // One trace: the client's, from the gateway's inbound span down to the role service's.
    let server = one(&trace, "inbound request span", |s| s.kind == SERVER);
    assert_eq!(server.parent_span_id, CLIENT_SPAN, "the client's traceparent is the parent");
    assert_eq!(server.name, "GET /api/...", "named after the route, not the path");
    assert_eq!(server.attribute("http.route"), Some("/api/..."));
    assert_eq!(server.attribute("http.response.status_code"), Some("200"));
    // (The gateway's store probe, a chained call to itself, is another gateway span, further down.)
    let gateway = one(&trace, "gateway span", |s| {
        s.name == "execute_wasm_component gateway" && s.parent_span_id == server.span_id
    });
    let call = one(&trace, "call to the patient service", |s| {
        s.kind == CLIENT && s.attribute("url.full").is_some_and(|u| u.starts_with("http://patient.spin.internal"))
    });
    assert_eq!(call.parent_span_id, gateway.span_id);
    assert_eq!(call.attribute("url.full"), Some("http://patient.spin.internal/api/patients/%7Bid%7D/records"));
    // Spin's interceptor answers a chained call before its status would be recorded.
    assert_eq!(call.attribute("http.response.status_code"), None);
    let patient = one(&trace, "patient service span", |s| s.name == "execute_wasm_component patient");
    assert_eq!(patient.parent_span_id, call.span_id, "the role service's span is a child of the gateway's call");
    // Its statements, each a span named after its SQL text: what the checks below read too.
    let statements = trace.iter().filter(|s| s.parent_span_id == patient.span_id && s.attribute("query").is_some());
    assert!(statements.count() > 0, "no statement of the patient service in the trace");

    if app.app.runtime() == Runtime::Spin {
        // Spin exports what components write (here as span events): the console's audit line
        // of this request among it, so the checks below cover it.
        let exported_line = receiver
            .spans()
            .iter()
            .flat_map(|s| &s.events)
            .flat_map(|(_, attrs)| attrs)
            .any(|(key, value)| key == "app_log" && value.contains(r#""log":"audit""#));
        assert!(exported_line, "no audit line among the exported span events");
    }

    // No token and no name anywhere the receiver was sent (traces, and on Spin logs and
    // metrics), in any span of any trace (the login's too).
    let signature = token.rsplit('.').next().expect("a JWS");
    let secrets: Vec<&str> = [token.as_str(), signature].into_iter().chain(PATIENT_NAMES).collect();
    for (path, body) in receiver.bodies() {
        for secret in &secrets {
            let found = body.windows(secret.len()).any(|w| w == secret.as_bytes());
            assert!(!found, "{path} was sent {secret:?}");
        }
    }
    // The patient id only where Spin puts the public request's path (its inbound span's
    // `url.path` and "Processing request on path" event; README, Operations): never in an
    // outbound URL, a statement, a log line or another span.
    for span in receiver.spans() {
        let public_path = |key: &str| span.kind == SERVER && key == "url.path";
        let leaks: Vec<String> = span
            .attributes
            .iter()
            .filter(|(key, value)| value.contains(PATIENT_ID) && !public_path(key))
            .map(|(key, value)| format!("{key}={value}"))
            .chain(span.name.contains(PATIENT_ID).then(|| span.name.clone()))
            .chain(
                span.events
                    .iter()
                    .filter(|(name, _)| span.kind != SERVER || !name.starts_with("Processing request on path"))
                    .flat_map(|(name, attrs)| std::iter::once(name).chain(attrs.iter().map(|(_, v)| v)))
                    .filter(|text| text.contains(PATIENT_ID))
                    .cloned(),
            )
            .collect();
        assert!(leaks.is_empty(), "span {:?} names the patient: {leaks:?}", span.name);
    }
    assert!(
        server.attribute("url.path").is_some_and(|p| p.contains(PATIENT_ID)),
        "the one exception is real: the inbound span holds the public path"
    );
}
