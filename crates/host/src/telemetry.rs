//! Trace export over OTLP/HTTP (protobuf), as Spin 4.0.2 does it when `OTEL_EXPORTER_OTLP_ENDPOINT`
//! is set (`crates/telemetry`): the same switches, and the spans Spin's HTTP trigger and outbound
//! HTTP make, with their names, kinds, attributes, parents and trace-context propagation:
//!
//! - `spin_trigger_http.handle_http_request` (server): named `{method} {route}`, with
//!   `http.request.method`, `network.peer.address`/`port`, `network.protocol.name`, `url.path`,
//!   `url.query`, `url.scheme`, `http.route`, `http.response.status_code`, and Spin's two events;
//!   a child of the client's `traceparent` when it has a valid one.
//! - `spin_trigger_http.execute_wasm` (internal): `execute_wasm_component {component}`.
//! - `spin_outbound_http.send_request` (client): named after the method, with
//!   `http.request.method`, `url.full`, `server.address`/`port`, `http.response.status_code`;
//!   its context goes out as the request's `traceparent`, replacing the guest's. A chained
//!   request (`*.spin.internal`) runs under it, as Spin's interceptor runs it.
//! - `spin_sqlite.open` and `spin_sqlite.execute` (client), the latter named after the
//!   statement's text (`crate::spin_api`).
//!
//! Deliberately not: Spin's spans of the key-value and variables interfaces, metrics and logs,
//! gRPC and OTLP/JSON, TLS, sampling other than parent-based, `tracestate`. Spans go to a bounded
//! queue and a thread of their own exports them in batches, off the request path; a full queue
//! drops spans, and a failed export is logged and dropped, as Spin's batch processor does.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};

/// Spin's (the OpenTelemetry SDK's) batch processor defaults.
const MAX_QUEUE: usize = 2048;
const MAX_BATCH: usize = 512;
const DEFAULT_DELAY: Duration = Duration::from_millis(5000);
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// `SpanKind` of the OTLP definitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Internal = 1,
    Server = 2,
    Client = 3,
}

/// A span's place in its trace, what a child needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Context16 {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub sampled: bool,
}

impl Context16 {
    /// The W3C `traceparent` naming this span as the parent.
    pub fn traceparent(&self) -> String {
        format!("00-{}-{}-{:02x}", hex(&self.trace_id), hex(&self.span_id), u8::from(self.sampled))
    }
}

/// A parsed `traceparent` (W3C Trace Context §3.2): version, trace id and parent id neither all
/// zeros, flags. Anything else is no parent, and the request starts a trace, as the SDK's
/// `TraceContextPropagator` has it.
pub(crate) fn parse_traceparent(value: &str) -> Option<Context16> {
    let parts: Vec<&str> = value.trim().split('-').collect();
    let [version, trace, parent, flags, ..] = parts.as_slice() else { return None };
    let lower_hex =
        |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !lower_hex(version, 2) || *version == "ff" || (*version == "00" && parts.len() != 4) {
        return None;
    }
    if !lower_hex(trace, 32) || !lower_hex(parent, 16) || !lower_hex(flags, 2) {
        return None;
    }
    let mut trace_id = [0u8; 16];
    let mut span_id = [0u8; 8];
    unhex(trace, &mut trace_id)?;
    unhex(parent, &mut span_id)?;
    if trace_id == [0; 16] || span_id == [0; 8] {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some(Context16 { trace_id, span_id, sampled: flags & 1 == 1 })
}

/// An attribute value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Text(String),
    Int(i64),
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Text(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Text(s)
    }
}

impl From<i64> for Value {
    fn from(n: i64) -> Self {
        Value::Int(n)
    }
}

/// A span being recorded; [`Tracer::end`] sends it.
#[derive(Debug, Clone)]
pub(crate) struct SpanData {
    pub context: Context16,
    pub parent: Option<[u8; 8]>,
    pub name: String,
    pub kind: Kind,
    start: u64,
    pub attributes: Vec<(&'static str, Value)>,
    pub events: Vec<(u64, String)>,
}

impl SpanData {
    pub fn set(&mut self, key: &'static str, value: impl Into<Value>) {
        let value = value.into();
        match self.attributes.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.attributes.push((key, value)),
        }
    }

    /// An event named `name` now (Spin's `tracing::info!` inside the span).
    pub fn event(&mut self, name: String) {
        self.events.push((now_nanos(), name));
    }
}

/// Where spans go, when export is on. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Tracer {
    queue: SyncSender<(SpanData, u64)>,
    ids: Arc<Mutex<IdSource>>,
}

impl Tracer {
    /// A tracer exporting as the environment `env` says, or `None` when it says nothing (as for
    /// Spin: `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` set and not
    /// empty, and `OTEL_SDK_DISABLED` not).
    pub fn from_env(env: &HashMap<String, String>) -> anyhow::Result<Option<Self>> {
        let var = |name: &str| env.get(name).filter(|v| !v.is_empty()).map(String::as_str);
        if var("OTEL_SDK_DISABLED").is_some() {
            return Ok(None);
        }
        // The SDK's rule: the signal's own endpoint as it is, else the base with `/v1/traces`.
        let endpoint = match (var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"), var("OTEL_EXPORTER_OTLP_ENDPOINT")) {
            (Some(traces), _) => traces.to_owned(),
            (None, Some(base)) => format!("{}/v1/traces", base.trim_end_matches('/')),
            (None, None) => return Ok(None),
        };
        let protocol = var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").or(var("OTEL_EXPORTER_OTLP_PROTOCOL"));
        if let Some(protocol) = protocol.filter(|p| *p != "http/protobuf") {
            bail!("OTLP protocol {protocol:?}: the host exports traces as http/protobuf only");
        }
        let uri: http::Uri = endpoint.parse().with_context(|| format!("OTLP traces endpoint {endpoint:?}"))?;
        if uri.scheme_str() != Some("http") {
            bail!("OTLP traces endpoint {endpoint:?}: the host exports over plain http only");
        }
        let delay = var("OTEL_BSP_SCHEDULE_DELAY")
            .map(|ms| ms.parse::<u64>().with_context(|| format!("OTEL_BSP_SCHEDULE_DELAY={ms:?}")))
            .transpose()?
            .map_or(DEFAULT_DELAY, Duration::from_millis);
        let service = var("OTEL_SERVICE_NAME").unwrap_or("spin").to_owned();
        let (queue, spans) = std::sync::mpsc::sync_channel(MAX_QUEUE);
        std::thread::Builder::new()
            .name("otlp-exporter".into())
            .spawn(move || export_loop(&spans, &uri, &service, delay))
            .context("starting the OTLP exporter thread")?;
        Ok(Some(Self { queue, ids: Arc::new(Mutex::new(IdSource::default())) }))
    }

    /// Starts a span: a child of `parent`, else the root of a new trace.
    pub fn start(&self, name: impl Into<String>, kind: Kind, parent: Option<Context16>) -> SpanData {
        let mut ids = self.ids.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let trace_id = match parent {
            Some(p) => p.trace_id,
            None => {
                let mut id = [0u8; 16];
                id[..8].copy_from_slice(&ids.next().to_be_bytes());
                id[8..].copy_from_slice(&ids.next().to_be_bytes());
                id
            }
        };
        let span_id = ids.next().to_be_bytes();
        SpanData {
            context: Context16 { trace_id, span_id, sampled: parent.is_none_or(|p| p.sampled) },
            parent: parent.map(|p| p.span_id),
            name: name.into(),
            kind,
            start: now_nanos(),
            attributes: Vec::new(),
            events: Vec::new(),
        }
    }

    /// Ends `span` now and queues it for export (unless its trace is not sampled, or the queue
    /// is full).
    pub fn end(&self, span: SpanData) {
        if !span.context.sampled {
            return;
        }
        match self.queue.try_send((span, now_nanos())) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => tracing::warn!("OTLP export queue full: span dropped"),
            Err(TrySendError::Disconnected(_)) => tracing::warn!("OTLP exporter stopped: span dropped"),
        }
    }
}

/// Span and trace ids: 64 random bits each, from the standard library's randomly keyed SipHash
/// over a counter (ids need to be unique and unguessable enough to not collide, not secret).
struct IdSource {
    keys: std::hash::RandomState,
    counter: u64,
}

impl Default for IdSource {
    fn default() -> Self {
        Self { keys: std::hash::RandomState::new(), counter: 0 }
    }
}

impl IdSource {
    fn next(&mut self) -> u64 {
        loop {
            self.counter = self.counter.wrapping_add(1);
            let mut hasher = self.keys.build_hasher();
            hasher.write_u64(self.counter);
            let id = hasher.finish();
            if id != 0 {
                return id;
            }
        }
    }
}

/// The exporter thread: collects spans until the batch is full or the delay has passed, then
/// sends them in one request. Ends when every [`Tracer`] is gone, after sending what it holds.
fn export_loop(spans: &Receiver<(SpanData, u64)>, uri: &http::Uri, service: &str, delay: Duration) {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return tracing::error!("OTLP exporter: no runtime: {e}"),
    };
    let mut batch = Vec::new();
    let mut due = Instant::now() + delay;
    loop {
        let open = match spans.recv_timeout(due.saturating_duration_since(Instant::now())) {
            Ok(span) => {
                batch.push(span);
                true
            }
            Err(RecvTimeoutError::Timeout) => true,
            Err(RecvTimeoutError::Disconnected) => false,
        };
        if batch.len() >= MAX_BATCH || Instant::now() >= due || !open {
            if !batch.is_empty() {
                let body = encode(service, &batch);
                batch.clear();
                if let Err(e) = runtime.block_on(post(uri, body)) {
                    tracing::warn!("OTLP export to {uri} failed: {e:#}");
                }
            }
            due = Instant::now() + delay;
        }
        if !open {
            return;
        }
    }
}

async fn post(uri: &http::Uri, body: Vec<u8>) -> anyhow::Result<()> {
    let host = uri.host().context("no host")?;
    let port = uri.port_u16().unwrap_or(80);
    let send = async {
        let stream = tokio::net::TcpStream::connect((host, port)).await?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let authority = uri.authority().map_or(host, |a| a.as_str());
        let request = http::Request::post(uri.path_and_query().map_or("/v1/traces", |p| p.as_str()))
            .header(http::header::HOST, authority)
            .header(http::header::CONTENT_TYPE, "application/x-protobuf")
            .body(Full::new(Bytes::from(body)))?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        let _ = response.into_body().collect().await;
        anyhow::ensure!(status.is_success(), "the collector answered {status}");
        anyhow::Ok(())
    };
    tokio::time::timeout(EXPORT_TIMEOUT, send).await.context("timed out")?
}

/// `ExportTraceServiceRequest` (opentelemetry-proto, `collector/trace/v1/trace_service.proto`)
/// with one resource and one scope (`spin`, as Spin's tracer is named), written field by field.
fn encode(service: &str, spans: &[(SpanData, u64)]) -> Vec<u8> {
    let mut resource = Vec::new();
    let version = concat!("health-host ", env!("CARGO_PKG_VERSION"));
    for (key, value) in [("service.name", service), ("service.version", version)] {
        message(&mut resource, 1, &key_value(key, &Value::from(value)));
    }
    let mut scope = Vec::new();
    bytes_field(&mut scope, 1, b"spin");
    let mut scope_spans = Vec::new();
    message(&mut scope_spans, 1, &scope);
    for (span, end) in spans {
        message(&mut scope_spans, 2, &encode_span(span, *end));
    }
    let mut resource_spans = Vec::new();
    message(&mut resource_spans, 1, &resource);
    message(&mut resource_spans, 2, &scope_spans);
    let mut request = Vec::new();
    message(&mut request, 1, &resource_spans);
    request
}

/// `trace.v1.Span`.
fn encode_span(span: &SpanData, end: u64) -> Vec<u8> {
    let mut out = Vec::new();
    bytes_field(&mut out, 1, &span.context.trace_id);
    bytes_field(&mut out, 2, &span.context.span_id);
    if let Some(parent) = &span.parent {
        bytes_field(&mut out, 4, parent);
    }
    bytes_field(&mut out, 5, span.name.as_bytes());
    varint_field(&mut out, 6, span.kind as u64);
    fixed64_field(&mut out, 7, span.start);
    fixed64_field(&mut out, 8, end);
    for (key, value) in &span.attributes {
        message(&mut out, 9, &key_value(key, value));
    }
    for (time, name) in &span.events {
        let mut event = Vec::new();
        fixed64_field(&mut event, 1, *time);
        bytes_field(&mut event, 2, name.as_bytes());
        message(&mut event, 3, &key_value("level", &Value::from("INFO")));
        message(&mut out, 11, &event);
    }
    out
}

/// `common.v1.KeyValue` with its `AnyValue`.
fn key_value(key: &str, value: &Value) -> Vec<u8> {
    let mut any = Vec::new();
    match value {
        Value::Text(text) => bytes_field(&mut any, 1, text.as_bytes()),
        // int64 as a varint: two's complement, ten bytes when negative.
        Value::Int(n) => varint_field(&mut any, 3, *n as u64),
    }
    let mut out = Vec::new();
    bytes_field(&mut out, 1, key.as_bytes());
    message(&mut out, 2, &any);
    out
}

fn varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn varint_field(out: &mut Vec<u8>, field: u64, n: u64) {
    varint(out, field << 3);
    varint(out, n);
}

fn fixed64_field(out: &mut Vec<u8>, field: u64, n: u64) {
    varint(out, field << 3 | 1);
    out.extend_from_slice(&n.to_le_bytes());
}

fn bytes_field(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    varint(out, field << 3 | 2);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn message(out: &mut Vec<u8>, field: u64, encoded: &[u8]) {
    bytes_field(out, field, encoded);
}

fn now_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str, out: &mut [u8]) -> Option<()> {
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_valid_traceparent_and_refuses_malformed_ones() {
        let parsed = parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").expect("valid");
        assert_eq!(hex(&parsed.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex(&parsed.span_id), "00f067aa0ba902b7");
        assert!(parsed.sampled);
        assert!(!parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").expect("valid").sampled);
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad}");
        }
    }

    #[test]
    fn children_keep_the_trace_and_name_their_parent() {
        let (queue, _spans) = std::sync::mpsc::sync_channel(4);
        let tracer = Tracer { queue, ids: Arc::new(Mutex::new(IdSource::default())) };
        let root = tracer.start("root", Kind::Server, None);
        let child = tracer.start("child", Kind::Internal, Some(root.context));
        assert_eq!(child.context.trace_id, root.context.trace_id);
        assert_eq!(child.parent, Some(root.context.span_id));
        assert_ne!(child.context.span_id, root.context.span_id);
        assert_eq!(
            child.context.traceparent(),
            format!("00-{}-{}-01", hex(&root.context.trace_id), hex(&child.context.span_id))
        );
    }

    #[test]
    fn endpoint_follows_the_otel_variables() {
        let env = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        assert!(Tracer::from_env(&env(&[])).expect("no error").is_none());
        assert!(Tracer::from_env(&env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "")])).expect("no error").is_none());
        let disabled = [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"), ("OTEL_SDK_DISABLED", "true")];
        assert!(Tracer::from_env(&env(&disabled)).expect("no error").is_none());
        let grpc = [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"), ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")];
        assert!(Tracer::from_env(&env(&grpc)).is_err());
    }
}
