//! A small OpenTelemetry receiver for the tracing suite: OTLP over HTTP (`POST /v1/traces`,
//! `application/x-protobuf`), decoded with the official protobuf definitions (the
//! `opentelemetry-proto` crate), as the OpenTelemetry Collector's `otlp` receiver takes it. It
//! answers `/v1/logs` and `/v1/metrics` too (Spin sends both when `OTEL_EXPORTER_OTLP_ENDPOINT`
//! is set) and keeps every body it was sent, so a test can search all of it, not only the spans
//! it decodes. It does not do gRPC, OTLP/JSON or gzip: neither Spin's default exporter nor the
//! host's sends them.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message;

/// One exported span, flattened from its resource and scope.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    /// Lowercase hex, as in a `traceparent`.
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    pub name: String,
    /// `SpanKind` (1 internal, 2 server, 3 client).
    pub kind: i32,
    pub attributes: Vec<(String, String)>,
    /// Each event's name and attributes.
    pub events: Vec<(String, Vec<(String, String)>)>,
    /// The resource's `service.name`.
    pub service: String,
}

impl Span {
    /// The attribute `key`, as text.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// What the receiver was sent.
#[derive(Debug, Default)]
struct Received {
    spans: Vec<Span>,
    /// `(path, body)` of every request, decoded or not.
    bodies: Vec<(String, Bytes)>,
    /// Requests it could not decode, for the failure message.
    errors: Vec<String>,
}

/// An OTLP/HTTP receiver on a loopback port, serving from its own thread (so it outlives any one
/// test's Tokio runtime) until the test process ends.
pub struct Receiver {
    addr: SocketAddr,
    received: Arc<Mutex<Received>>,
}

impl Receiver {
    /// Starts one on a free loopback port.
    pub fn start() -> anyhow::Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding the OTLP receiver")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let received = Arc::new(Mutex::new(Received::default()));
        let state = received.clone();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        std::thread::Builder::new().name("otlp-receiver".into()).spawn(move || {
            runtime.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
                while let Ok((stream, _)) = listener.accept().await {
                    let state = state.clone();
                    let service = hyper::service::service_fn(move |req| receive(state.clone(), req));
                    tokio::spawn(
                        hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
                    );
                }
            });
        })?;
        Ok(Self { addr, received })
    }

    /// The base URL to give as `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Span> {
        self.received.lock().map(|r| r.spans.clone()).unwrap_or_default()
    }

    /// Every request body received so far (traces, logs, metrics), with its path.
    pub fn bodies(&self) -> Vec<(String, Bytes)> {
        self.received.lock().map(|r| r.bodies.clone()).unwrap_or_default()
    }

    /// Bodies it could not decode.
    pub fn errors(&self) -> Vec<String> {
        self.received.lock().map(|r| r.errors.clone()).unwrap_or_default()
    }

    /// Waits until the spans of trace `trace_id` satisfy `done` (exporters send in batches, off
    /// the request path), or `timeout` passes; returns that trace's spans either way.
    pub async fn trace(&self, trace_id: &str, timeout: Duration, done: impl Fn(&[Span]) -> bool) -> Vec<Span> {
        let deadline = Instant::now() + timeout;
        loop {
            let spans: Vec<Span> = self.spans().into_iter().filter(|s| s.trace_id == trace_id).collect();
            if done(&spans) || Instant::now() > deadline {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn receive(
    state: Arc<Mutex<Received>>,
    req: http::Request<hyper::body::Incoming>,
) -> Result<http::Response<Full<Bytes>>, hyper::Error> {
    let path = req.uri().path().to_owned();
    let protobuf = req.headers().get(http::header::CONTENT_TYPE).is_some_and(|v| v == "application/x-protobuf");
    let body = req.into_body().collect().await?.to_bytes();
    let decoded = match path.as_str() {
        "/v1/traces" if protobuf => {
            ExportTraceServiceRequest::decode(body.clone()).map(|r| Some(spans(r))).map_err(|e| e.to_string())
        }
        "/v1/traces" => Err("traces not sent as application/x-protobuf".to_owned()),
        _ => Ok(None),
    };
    if let Ok(mut received) = state.lock() {
        received.bodies.push((path.clone(), body));
        match decoded {
            Ok(Some(spans)) => received.spans.extend(spans),
            Ok(None) => {}
            Err(e) => received.errors.push(format!("{path}: {e}")),
        }
    }
    // An empty body is an `Export*ServiceResponse` with every field default: all accepted.
    let response = http::Response::builder()
        .header(http::header::CONTENT_TYPE, "application/x-protobuf")
        .body(Full::new(Bytes::new()))
        .unwrap_or_default();
    Ok(response)
}

fn spans(request: ExportTraceServiceRequest) -> Vec<Span> {
    let mut out = Vec::new();
    for resource_spans in request.resource_spans {
        let resource = resource_spans.resource.map(|r| attributes(&r.attributes)).unwrap_or_default();
        let service = resource.iter().find(|(k, _)| k == "service.name").map(|(_, v)| v.clone()).unwrap_or_default();
        for scope_spans in resource_spans.scope_spans {
            for span in scope_spans.spans {
                out.push(Span {
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    name: span.name,
                    kind: span.kind,
                    attributes: attributes(&span.attributes),
                    events: span.events.iter().map(|e| (e.name.clone(), attributes(&e.attributes))).collect(),
                    service: service.clone(),
                });
            }
        }
    }
    out
}

fn attributes(pairs: &[KeyValue]) -> Vec<(String, String)> {
    pairs.iter().map(|kv| (kv.key.clone(), kv.value.as_ref().map(text).unwrap_or_default())).collect()
}

fn text(value: &AnyValue) -> String {
    match &value.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BytesValue(b)) => String::from_utf8_lossy(b).into_owned(),
        Some(any_value::Value::ArrayValue(a)) => a.values.iter().map(text).collect::<Vec<_>>().join(","),
        Some(any_value::Value::KvlistValue(l)) => {
            attributes(&l.values).into_iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
        }
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
