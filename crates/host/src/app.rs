//! Loading a Spin application and serving requests to it: one pre-instantiated component per
//! `[component.X]`, a fresh `Store` and instance per request, routing, the Spin request
//! headers, and outbound HTTP with `*.spin.internal` chaining dispatched in-process.
//!
//! A request from outside goes the way Spin 4.0.2's `HttpServer::handle` takes it
//! (`crates/trigger-http/src/server.rs`): a `Host` naming a service-chaining host is removed,
//! `/.well-known/spin/` is answered by the host, an unrouted path is a 404 with an empty body,
//! and a routed request whose authority cannot be determined (no `Host` left and none in the
//! URI, an invalid `Host`, or one that contradicts the URI) is refused before any component
//! runs: Spin's server then closes the connection without an answer ([`RequestRefused`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::{WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use crate::limits::Limits;
use crate::manifest::{Manifest, Route};
use crate::outbound::AllowedHost;
use crate::routing::Router;
use crate::runtime_config::RuntimeConfig;
use crate::telemetry::{Context16, Kind, Tracer, parse_traceparent};

/// Where and how to load an application.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Path to `spin.toml`.
    pub manifest: PathBuf,
    /// Spin runtime configuration file (`--runtime-config-file`).
    pub runtime_config: Option<PathBuf>,
    /// State directory for the default stores (Spin's `.spin/`).
    pub state_dir: PathBuf,
    /// Environment for `SPIN_VARIABLE_*` overrides (the CLI passes the process environment).
    pub env: HashMap<String, String>,
}

/// The most a request head may take in hyper 1's HTTP/1 server with its default buffer
/// (`DEFAULT_MAX_BUFFER_SIZE`: 8 KiB plus 100 × 4 KiB), which Spin 4.0.2 does not change.
const HYPER_MAX_HEAD_BYTES: usize = 8192 + 4096 * 100;

/// The size of a request head as sent over HTTP/1.1: request line and header lines.
fn request_head_len(parts: &http::request::Parts) -> usize {
    let line = parts.method.as_str().len() + parts.uri.to_string().len() + " HTTP/1.1\r\n".len() + 1;
    let headers: usize = parts.headers.iter().map(|(name, value)| name.as_str().len() + value.len() + 4).sum();
    line + headers + 2
}

/// Address reported as `spin-client-addr` when a caller does not give one.
pub const DEFAULT_CLIENT: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 0));
/// The `Host` an in-process request without one is given, as if a client had sent it.
const DEFAULT_HOST: &str = "127.0.0.1:3000";
/// Paths under this prefix are answered by Spin itself, never routed to a component.
const WELL_KNOWN_PREFIX: &str = "/.well-known/spin/";
/// Spin's `SERVICE_CHAINING_DOMAIN`.
const SERVICE_CHAINING_DOMAIN: &str = "spin.internal";
/// Spin's `DEFAULT_EPOCH_TICK_INTERVAL`: how often the engine's epoch advances.
const EPOCH_TICK: std::time::Duration = std::time::Duration::from_millis(10);
const GUEST_LOG_LINES: usize = 500;
/// Set (to anything) to have wasmtime write `/tmp/perf-{pid}.map`, so `perf report` names the
/// guests' functions (README, Performance).
pub const PERF_MAP_ENV: &str = "HEALTH_HOST_PERF_MAP";
const GUEST_OUTPUT_BYTES: usize = 64 * 1024;

/// A component's grants, as spin.toml gives them.
#[derive(Debug)]
pub(crate) struct ComponentConfig {
    pub id: String,
    pub key_value_stores: Vec<String>,
    pub sqlite_databases: Vec<String>,
    pub allowed_outbound_hosts: Vec<AllowedHost>,
    pub variables: HashMap<String, String>,
}

struct Loaded {
    pre: ProxyPre<State>,
    config: Arc<ComponentConfig>,
}

pub(crate) struct Shared {
    app_name: String,
    app_version: Option<String>,
    components: HashMap<String, Loaded>,
    router: Router,
    pub key_value: HashMap<String, Arc<crate::spin_api::KeyValueDb>>,
    pub sqlite: HashMap<String, Arc<crate::runtime_config::SqliteDatabase>>,
    limits: Limits,
    /// `wasmtime serve`'s request semaphore, when [`Limits::max_concurrent_requests`] is set.
    requests: Option<tokio::sync::Semaphore>,
    guest_log: Mutex<Vec<String>>,
    /// Trace export, when the environment turns it on (`OTEL_EXPORTER_OTLP_ENDPOINT`).
    tracer: Option<Tracer>,
}

/// A request Spin's HTTP trigger refuses before any component runs, because its authority
/// cannot be determined (`set_req_uri` in `crates/trigger-http/src/server.rs`). Spin's server
/// answers it by closing the connection; [`crate::serve`] does the same, and in-process callers
/// get it as the error of [`App::handle`] (downcast the `anyhow::Error` to tell it apart).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRefused(pub &'static str);

impl std::fmt::Display for RequestRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for RequestRefused {}

/// Who sent a request: a caller in this process (which may leave `Host` out), or a client
/// over the network (which, as for Spin, must send one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    InProcess,
    Network,
}

/// A loaded application. Cheap to clone; share one per test binary.
#[derive(Clone)]
pub struct App {
    shared: Arc<Shared>,
    routes: Vec<(String, String)>,
}

/// Per-request store data.
pub struct State {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    pub(crate) table: ResourceTable,
    hooks: Hooks,
    pub(crate) component: Arc<ComponentConfig>,
    pub(crate) shared: Arc<Shared>,
    /// SQLite connections the instance has open (Spin caps them at 256).
    pub(crate) open_connections: usize,
    /// The instance's `execute_wasm` span, when traces are exported.
    trace: Option<Context16>,
}

impl State {
    /// A span of a host call (Spin's `#[instrument]` on its host functions), a child of the
    /// instance's, when traces are exported; [`Tracer::end`] it when the call returns.
    pub(crate) fn span(&self, name: impl Into<String>) -> Option<(Tracer, crate::telemetry::SpanData)> {
        let tracer = self.shared.tracer.clone()?;
        let span = tracer.start(name, Kind::Client, Some(self.trace?));
        Some((tracer, span))
    }
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for State {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { hooks: &mut self.hooks, table: &mut self.table, ctx: &mut self.http }
    }
}

impl App {
    /// Loads, composes and pre-instantiates every component of the application, with Spin's
    /// limits ([`Limits::from_env`] on the options' environment).
    pub fn load(options: &LoadOptions) -> anyhow::Result<Self> {
        Self::load_with_limits(options, Limits::from_env(&options.env)?)
    }

    /// [`App::load`] with explicit [`Limits`].
    pub fn load_with_limits(options: &LoadOptions, limits: Limits) -> anyhow::Result<Self> {
        let manifest = Manifest::load(&options.manifest)?;
        let base = options.manifest.parent().unwrap_or(Path::new(".")).to_path_buf();
        let runtime = RuntimeConfig::load(options.runtime_config.as_deref(), &options.state_dir)?;
        let values = crate::variables::resolve(&manifest.variables, &options.env)?;

        let engine = build_engine(&limits, true)?;
        let mut linker: Linker<State> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        crate::spin_api::add_to_linker(&mut linker)?;

        let mut used_kv = Vec::new();
        let mut components = HashMap::new();
        for (id, component) in &manifest.component {
            for label in &component.key_value_stores {
                if !runtime.key_value.contains_key(label) {
                    bail!("unknown key_value_stores label {label:?} for component {id:?}");
                }
                used_kv.push(label.clone());
            }
            for label in &component.sqlite_databases {
                if !runtime.sqlite.contains_key(label) {
                    bail!("unknown sqlite_databases label {label:?} for component {id:?}");
                }
            }
            let variables = component
                .variables
                .iter()
                .map(|(name, template)| {
                    if !crate::variables::valid_name(name) {
                        bail!("invalid variable name {name:?} in component {id:?}");
                    }
                    let value = crate::variables::expand(template, &values)
                        .with_context(|| format!("variable {name:?} of component {id:?}"))?;
                    Ok((name.clone(), value))
                })
                .collect::<anyhow::Result<HashMap<_, _>>>()?;
            // Templates resolved as Spin does; one that does not resolve denies everything.
            let allowed_outbound_hosts =
                crate::outbound::resolve(&component.allowed_outbound_hosts, &manifest.variables, &values)
                    .with_context(|| format!("`allowed_outbound_hosts` of component {id:?} is malformed"))?
                    .unwrap_or_default();

            let source = base.join(&component.source);
            let mut bytes = std::fs::read(&source)
                .with_context(|| format!("reading component {id:?} from {}", source.display()))?;
            if !component.dependencies.is_empty() {
                let mut deps = Vec::new();
                for (interface, dep) in &component.dependencies {
                    let path = base.join(&dep.path);
                    let dep_bytes = std::fs::read(&path).with_context(|| {
                        format!("reading dependency {interface:?} of component {id:?} from {}", path.display())
                    })?;
                    crate::compose::check_dependency(&dep.path, interface, &dep_bytes)
                        .with_context(|| format!("component {id:?}"))?;
                    deps.push((interface.clone(), dep_bytes));
                }
                bytes =
                    crate::compose::compose(&bytes, &deps).with_context(|| format!("composing component {id:?}"))?;
            }
            let compiled = Component::new(&engine, &bytes)
                .map_err(anyhow::Error::from)
                .with_context(|| format!("compiling component {id:?}"))?;
            let pre = linker
                .instantiate_pre(&compiled)
                .map_err(anyhow::Error::from)
                .with_context(|| format!("linking component {id:?}"))?;
            let pre = ProxyPre::new(pre)
                .map_err(anyhow::Error::from)
                .with_context(|| format!("component {id:?} does not export wasi:http/incoming-handler"))?;
            let config = Arc::new(ComponentConfig {
                id: id.clone(),
                key_value_stores: component.key_value_stores.clone(),
                sqlite_databases: component.sqlite_databases.clone(),
                allowed_outbound_hosts,
                variables,
            });
            components.insert(id.clone(), Loaded { pre, config });
        }

        let mut router = Router::default();
        let mut routes = Vec::new();
        for trigger in &manifest.trigger.http {
            match &trigger.route {
                Route::Path(path) => {
                    router.add(path, &trigger.component)?;
                    routes.push((path.clone(), trigger.component.clone()));
                }
                Route::Private { .. } => routes.push(("(private)".into(), trigger.component.clone())),
            }
        }

        // As Spin: every store's and database's directory exists once the app is loaded; the
        // files themselves are opened when a guest first uses them.
        let mut key_value = HashMap::new();
        for label in used_kv {
            let location = &runtime.key_value[&label];
            create_parent(location).with_context(|| format!("key-value store {label:?}"))?;
            key_value.insert(label, Arc::new(crate::spin_api::KeyValueDb::new(location.clone())));
        }
        let mut sqlite = HashMap::new();
        for (label, database) in runtime.sqlite {
            create_parent(&database.location).with_context(|| format!("database {label:?}"))?;
            sqlite.insert(label, Arc::new(database));
        }
        let requests = limits.max_concurrent_requests.map(tokio::sync::Semaphore::new);
        let shared = Shared {
            app_name: manifest.application.name.clone(),
            app_version: manifest.application.version.clone(),
            components,
            router,
            key_value,
            sqlite,
            limits,
            requests,
            guest_log: Mutex::new(Vec::new()),
            tracer: Tracer::from_env(&options.env).context("trace export (OTEL_EXPORTER_OTLP_*)")?,
        };
        Ok(Self { shared: Arc::new(shared), routes })
    }

    /// `(route, component)` pairs, in manifest order, for display.
    pub fn routes(&self) -> &[(String, String)] {
        &self.routes
    }

    /// Handles a request from outside, as if from [`DEFAULT_CLIENT`].
    pub async fn handle(&self, req: http::Request<Bytes>) -> anyhow::Result<http::Response<Bytes>> {
        self.handle_from(req, DEFAULT_CLIENT).await
    }

    /// Handles a request from outside: routes it, sets Spin's headers, runs a fresh instance.
    /// A request without `Host` is given `Host: 127.0.0.1:3000`; one whose `Host` names a
    /// service-chaining host (`<component>.spin.internal`) has it removed, as Spin does, and is
    /// then refused with [`RequestRefused`] if it reaches a component.
    pub async fn handle_from(
        &self,
        req: http::Request<Bytes>,
        client: SocketAddr,
    ) -> anyhow::Result<http::Response<Bytes>> {
        self.respond(req, client, Origin::InProcess).await
    }

    pub(crate) async fn respond(
        &self,
        req: http::Request<Bytes>,
        client: SocketAddr,
        origin: Origin,
    ) -> anyhow::Result<http::Response<Bytes>> {
        let Some(tracer) = &self.shared.tracer else {
            return self.route(req, client, origin, None).await.map(|(response, _)| response);
        };
        // Spin's `http_span!` and `finalize_http_span` (`crates/trigger-http/src/instrument.rs`),
        // a child of the client's `traceparent` (`extract_trace_context`).
        let parent = req.headers().get("traceparent").and_then(|v| v.to_str().ok()).and_then(parse_traceparent);
        let method = req.method().to_string();
        let mut span = tracer.start(method.clone(), Kind::Server, parent);
        span.set("http.request.method", method.clone());
        span.set("network.peer.address", client.ip().to_string());
        span.set("network.peer.port", i64::from(client.port()));
        span.set("network.protocol.name", "http");
        span.set("url.path", req.uri().path());
        span.set("url.query", req.uri().query().unwrap_or_default());
        span.set("url.scheme", req.uri().scheme_str().unwrap_or_default());
        if let Some(forwarded) = req.headers().get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            span.set("client.address", forwarded);
        }
        span.event(format!("Processing request on path '{}'", req.uri().path()));
        let result = self.route(req, client, origin, Some(span.context)).await;
        match &result {
            Ok((response, route)) => {
                span.event(format!("Request finished, sending response with status code {}", response.status()));
                if let Some(route) = route {
                    span.set("http.route", route.clone());
                    span.name = format!("{method} {route}");
                }
                span.set("http.response.status_code", i64::from(response.status().as_u16()));
            }
            Err(e) => {
                span.set("error.type", format!("{e:?}"));
                span.set("http.response.status_code", 500);
            }
        }
        tracer.end(span);
        result.map(|(response, _)| response)
    }

    /// [`Self::respond`] without the span: the response, and the route it matched (what Spin
    /// names the request's span after), if it matched one.
    async fn route(
        &self,
        req: http::Request<Bytes>,
        client: SocketAddr,
        origin: Origin,
        trace: Option<Context16>,
    ) -> anyhow::Result<(http::Response<Bytes>, Option<String>)> {
        let _permit = match &self.shared.requests {
            Some(requests) => Some(requests.acquire().await.context("request semaphore closed")?),
            None => None,
        };
        let (mut parts, body) = req.into_parts();
        // Spin's HTTP server (hyper, default `max_buf_size`) refuses a request head it cannot
        // buffer with 431 before anything else looks at it; `serve` gets that from hyper itself.
        if request_head_len(&parts) > HYPER_MAX_HEAD_BYTES {
            return Ok((http::Response::builder().status(431).body(Bytes::new())?, None));
        }
        // Spin's `strip_forbidden_headers`: outside requests cannot pose as chained ones.
        let mut stripped_host = false;
        if parts.headers.get(http::header::HOST).and_then(|h| h.to_str().ok()).is_some_and(is_service_chaining_host) {
            parts.headers.remove(http::header::HOST);
            stripped_host = true;
        }
        let path = parts.uri.path().to_owned();
        if let Some(well_known) = path.strip_prefix(WELL_KNOWN_PREFIX) {
            return Ok((self.well_known(well_known)?, Some(path)));
        }
        let Some(matched) = self.shared.router.route(&path) else {
            return Ok((http::Response::builder().status(404).body(Bytes::new())?, None));
        };
        if origin == Origin::InProcess
            && !stripped_host
            && parts.uri.authority().is_none()
            && !parts.headers.contains_key(http::header::HOST)
        {
            parts.headers.insert(http::header::HOST, http::HeaderValue::from_static(DEFAULT_HOST));
        }
        request_authority(&parts)?;
        // Spin's `prepare_request_headers` turns every header value into a `str`; a value that
        // is not UTF-8 fails the request with an empty 500 before any component runs.
        if parts.headers.values().any(|v| std::str::from_utf8(v.as_bytes()).is_err()) {
            tracing::error!("request refused: a header value is not valid UTF-8 (as Spin refuses it)");
            return Ok((http::Response::builder().status(500).body(Bytes::new())?, Some(matched.raw_route.clone())));
        }
        // As Spin's `prepare_request_headers`: the URL's host is the `Host` header's, else "localhost".
        let host =
            parts.headers.get(http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost").to_owned();
        let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        // Spin's own headers come from the host only; a client cannot supply them.
        let client_supplied: Vec<_> =
            parts.headers.keys().filter(|k| k.as_str().starts_with("spin-")).cloned().collect();
        for name in client_supplied {
            parts.headers.remove(name);
        }
        let set = |headers: &mut http::HeaderMap, name: &'static str, value: String| -> anyhow::Result<()> {
            headers.insert(name, http::HeaderValue::from_str(&value)?);
            Ok(())
        };
        set(&mut parts.headers, "spin-full-url", format!("http://{host}{path_and_query}"))?;
        set(&mut parts.headers, "spin-path-info", matched.path_info.clone())?;
        set(&mut parts.headers, "spin-matched-route", matched.raw_route.clone())?;
        set(&mut parts.headers, "spin-raw-component-route", matched.raw_route.clone())?;
        set(&mut parts.headers, "spin-component-route", matched.base_route.clone())?;
        set(&mut parts.headers, "spin-base-path", "/".into())?;
        set(&mut parts.headers, "spin-client-addr", client.to_string())?;
        let request = invoke(self.shared.clone(), &matched.component, http::Request::from_parts(parts, body), trace);
        let response = match self.shared.limits.request_timeout {
            None => request.await,
            Some(timeout) => tokio::time::timeout(timeout, request).await.unwrap_or_else(|_| {
                Err(anyhow::anyhow!(
                    "component {:?} did not finish within the request timeout of {timeout:?}",
                    matched.component
                ))
            }),
        };
        Ok((response?, Some(matched.raw_route)))
    }

    /// Spin's own endpoints: `health` and `info`, anything else a 404.
    fn well_known(&self, path: &str) -> anyhow::Result<http::Response<Bytes>> {
        let response = match path {
            "health" => http::Response::builder().body(Bytes::from_static(b"OK"))?,
            "info" => {
                let mut info = serde_json::Map::new();
                info.insert("name".into(), self.shared.app_name.clone().into());
                if let Some(version) = &self.shared.app_version {
                    info.insert("version".into(), version.clone().into());
                }
                http::Response::builder()
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(Bytes::from(serde_json::to_vec_pretty(&info)?))?
            }
            _ => http::Response::builder().status(404).body(Bytes::new())?,
        };
        Ok(response)
    }

    /// Recent guest stdout/stderr lines, prefixed with the component id (for test failure output).
    pub fn guest_output(&self) -> Vec<String> {
        self.shared.guest_log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

/// Spin's `is_service_chaining_host` (`crates/outbound-networking-config/src/allowed_hosts.rs`):
/// one label, then exactly `spin.internal`, with any port.
fn is_service_chaining_host(host: &str) -> bool {
    let (host, _) = host.rsplit_once(':').unwrap_or((host, ""));
    host.split_once('.').is_some_and(|(_, rest)| rest == SERVICE_CHAINING_DOMAIN)
}

/// The request's authority as Spin's `set_req_uri` determines it: the `Host` header's or the
/// URI's, which must agree when both are present.
fn request_authority(parts: &http::request::Parts) -> Result<http::uri::Authority, RequestRefused> {
    let header = parts
        .headers
        .get(http::header::HOST)
        .map(|h| {
            h.to_str()
                .map_err(|_| RequestRefused("'Host' header is not valid UTF-8"))?
                .parse::<http::uri::Authority>()
                .map_err(|_| RequestRefused("'Host' header contains an invalid authority"))
        })
        .transpose()?;
    match (header, parts.uri.authority().cloned()) {
        (None, None) => Err(RequestRefused("no 'Host' header present in request")),
        (Some(a1), Some(a2)) if a1 != a2 => {
            Err(RequestRefused("authority in 'Host' header does not match authority in URI"))
        }
        (Some(a), _) | (None, Some(a)) => Ok(a),
    }
}

fn create_parent(location: &crate::runtime_config::Location) -> anyhow::Result<()> {
    if let crate::runtime_config::Location::Path(path) = location
        && let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
    {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    Ok(())
}

/// An engine configured as the host runs guests, minus epoch interruption (whose stores need
/// a deadline set, see [`App::load_with_limits`]): component model, compilation cache and
/// Spin's pooling allocator. Public so benchmarks compile guests as the host does.
pub fn engine() -> anyhow::Result<Engine> {
    build_engine(&Limits::default(), false)
}

/// Spin's engine (`crates/core/src/lib.rs`): the component model, wasmtime's compilation
/// cache, epoch interruption advanced every [`EPOCH_TICK`] by a thread that ends with the
/// engine, and where the machine can reserve its address space, the pooling allocator with
/// Spin's sizes derived from [`Limits::max_instances`] (else instances are allocated on demand,
/// as Spin falls back to).
fn build_engine(limits: &Limits, epochs: bool) -> anyhow::Result<Engine> {
    const MB: usize = 1 << 20;
    let n = limits.max_instances;
    let configure = |pooled: bool| -> anyhow::Result<Engine> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(epochs);
        if std::env::var_os(PERF_MAP_ENV).is_some() {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        config.cache(Some(
            wasmtime::Cache::new(wasmtime::CacheConfig::new())
                .map_err(anyhow::Error::from)
                .context("wasmtime compilation cache")?,
        ));
        if pooled {
            let mut pooling = wasmtime::PoolingAllocationConfig::default();
            pooling
                .total_component_instances(n)
                .total_memories(n)
                .total_tables(2 * n)
                .total_stacks(n)
                .total_core_instances(4 * n)
                .table_elements(100_000)
                .max_component_instance_size(10 * MB)
                .max_core_instance_size(10 * MB)
                .max_core_instances_per_component(200)
                .max_tables_per_component(64)
                .max_memories_per_component(32)
                .max_tables_per_module(2)
                .max_memories_per_module(2)
                .max_memory_size(4 << 30)
                .linear_memory_keep_resident(2 * MB)
                .table_keep_resident(MB / 2);
            config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pooling));
        }
        Ok(Engine::new(&config)?)
    };
    let engine = configure(true).or_else(|e| {
        tracing::warn!("pooling allocator unavailable ({e:#}); instantiating on demand");
        configure(false)
    })?;
    if epochs {
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("epoch-ticker".into())
            .spawn(move || {
                while let Some(engine) = {
                    std::thread::sleep(EPOCH_TICK);
                    weak.upgrade()
                } {
                    engine.increment_epoch();
                }
            })
            .context("starting the epoch ticker thread")?;
    }
    Ok(engine)
}

/// A guest's task. With a request timeout the guest is stopped when its request is dropped
/// (as `wasmtime serve` drops it); without one it runs to its end, as under Spin.
struct GuestTask {
    handle: tokio::task::JoinHandle<wasmtime::Result<()>>,
    abort_on_drop: bool,
}

impl Drop for GuestTask {
    fn drop(&mut self) {
        if self.abort_on_drop {
            self.handle.abort();
        }
    }
}

/// Runs one request through a fresh instance of `component_id`.
async fn invoke(
    shared: Arc<Shared>,
    component_id: &str,
    req: http::Request<Bytes>,
    trace: Option<Context16>,
) -> anyhow::Result<http::Response<Bytes>> {
    // Spin's `spin_trigger_http.execute_wasm` span, under the request's (or the chained call's).
    let Some((tracer, parent)) = shared.tracer.clone().zip(trace) else {
        return run(shared, component_id, req, None).await;
    };
    let span = tracer.start(format!("execute_wasm_component {component_id}"), Kind::Internal, Some(parent));
    let context = span.context;
    let result = run(shared, component_id, req, Some(context)).await;
    tracer.end(span);
    result
}

async fn run(
    shared: Arc<Shared>,
    component_id: &str,
    mut req: http::Request<Bytes>,
    trace: Option<Context16>,
) -> anyhow::Result<http::Response<Bytes>> {
    let loaded = shared.components.get(component_id).with_context(|| format!("no component {component_id:?}"))?;
    if req.uri().authority().is_none() && !req.headers().contains_key(http::header::HOST) {
        req.headers_mut().insert(http::header::HOST, http::HeaderValue::from_static(DEFAULT_HOST));
    }
    let output = MemoryOutputPipe::new(GUEST_OUTPUT_BYTES);
    let wasi = WasiCtx::builder().stdout(output.clone()).stderr(output.clone()).build();
    let state = State {
        wasi,
        http: WasiHttpCtx::new(),
        table: ResourceTable::new(),
        hooks: Hooks { shared: shared.clone(), component: loaded.config.clone(), trace },
        component: loaded.config.clone(),
        shared: shared.clone(),
        open_connections: 0,
        trace,
    };
    let mut store = Store::new(loaded.pre.engine(), state);
    let timeout = shared.limits.request_timeout.is_some();
    if timeout {
        // `wasmtime serve -W timeout`: yield every tick, so the deadline can stop the guest.
        store.set_epoch_deadline(1);
        store.epoch_deadline_async_yield_and_update(1);
    } else {
        // Spin's `StoreBuilder::build`: "practically forever".
        store.set_epoch_deadline(u64::MAX / 2);
    }
    let req = req.map(Full::new);
    let incoming = store.data_mut().http().new_incoming_request(Scheme::Http, req)?;
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let out = store.data_mut().http().new_response_outparam(sender)?;
    let pre = loaded.pre.clone();
    let handle = tokio::task::spawn(async move {
        let proxy = pre.instantiate_async(&mut store).await?;
        proxy.wasi_http_incoming_handler().call_handle(&mut store, incoming, out).await
    });
    let mut task = GuestTask { handle, abort_on_drop: timeout };
    let result = match receiver.await {
        Ok(Ok(response)) => {
            let (parts, body) = response.into_parts();
            let body = body.collect().await.map_err(|e| anyhow::anyhow!("guest response body: {e:?}"))?.to_bytes();
            let finished = (&mut task.handle).await.context("guest task panicked")?;
            if let Err(e) = finished {
                tracing::warn!(component = component_id, "guest trapped after responding: {e:#}");
            }
            Ok(http::Response::from_parts(parts, body))
        }
        Ok(Err(code)) => Err(anyhow::anyhow!("component {component_id:?} answered with error {code:?}")),
        Err(_) => match (&mut task.handle).await.context("guest task panicked")? {
            Ok(()) => Err(anyhow::anyhow!("component {component_id:?} never set a response")),
            Err(e) => Err(anyhow::Error::from(e).context(format!("component {component_id:?} trapped"))),
        },
    };
    record_output(&shared, component_id, &output.contents());
    result
}

fn record_output(shared: &Shared, component: &str, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    let text = String::from_utf8_lossy(bytes);
    if let Ok(mut log) = shared.guest_log.lock() {
        for line in text.lines() {
            tracing::info!(target: "guest", component, "{line}");
            log.push(format!("[{component}] {line}"));
        }
        let excess = log.len().saturating_sub(GUEST_LOG_LINES);
        log.drain(..excess);
    }
}

/// Outbound HTTP for one component: `*.spin.internal` chaining in-process, other hosts only as
/// `allowed_outbound_hosts` permits, everything else `HttpRequestDenied` as in Spin.
struct Hooks {
    shared: Arc<Shared>,
    component: Arc<ComponentConfig>,
    /// The instance's `execute_wasm` span, when traces are exported.
    trace: Option<Context16>,
}

type Sent = Result<
    (http::Response<WasiBody>, Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>),
    wasmtime_wasi_http::Error,
>;

impl WasiHttpHooks for Hooks {
    fn send_request(
        &mut self,
        mut request: http::Request<WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<dyn Future<Output = Sent> + Send> {
        // Spin's `spin_outbound_http.send_request` span; its context replaces the guest's
        // `traceparent` (`inject_trace_context`), and a chained call runs under it.
        let span = self.shared.tracer.as_ref().zip(self.trace).map(|(tracer, parent)| {
            let method = request.method().to_string();
            let mut span = tracer.start(method.clone(), Kind::Client, Some(parent));
            span.set("http.request.method", method);
            span.set("url.full", request.uri().to_string());
            if let Some(authority) = request.uri().authority() {
                span.set("server.address", authority.host());
                if let Some(port) = authority.port_u16() {
                    span.set("server.port", i64::from(port));
                }
            }
            if let Ok(value) = http::HeaderValue::from_str(&span.context.traceparent()) {
                request.headers_mut().insert("traceparent", value);
            }
            span
        });
        let tracer = self.shared.tracer.clone();
        let trace = span.as_ref().map(|s| s.context);
        // Spin's interceptor answers a chained call before the status is recorded.
        let chained = request.uri().host().is_some_and(|h| is_service_chaining_host(&h.to_ascii_lowercase()));
        let sent = self.send(request, options, trace);
        Box::new(async move {
            let result = Box::into_pin(sent).await;
            if let (Some(tracer), Some(mut span)) = (tracer, span) {
                if let Ok((response, _)) = &result
                    && !chained
                {
                    span.set("http.response.status_code", i64::from(response.status().as_u16()));
                }
                tracer.end(span);
            }
            result
        })
    }
}

impl Hooks {
    /// The request itself: chained in-process under `trace`, or out to the network.
    fn send(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        trace: Option<Context16>,
    ) -> Box<dyn Future<Output = Sent> + Send> {
        let scheme = request.uri().scheme_str().unwrap_or("http").to_owned();
        let host = request.uri().host().unwrap_or_default().to_ascii_lowercase();
        let port = request.uri().port_u16();
        let permitted = crate::outbound::allowed(&self.component.allowed_outbound_hosts, &scheme, &host, port);
        let caller = self.component.id.clone();
        let shared = self.shared.clone();
        Box::new(async move {
            if !permitted {
                tracing::warn!(
                    component = caller,
                    "outbound request to {scheme}://{host} denied by allowed_outbound_hosts"
                );
                return Err(wasmtime_wasi_http::Error::HttpRequestDenied);
            }
            if let Some(target) = host.strip_suffix(".spin.internal") {
                let (parts, body) = request.into_parts();
                let body = body.collect().await?.to_bytes();
                let mut req = http::Request::from_parts(parts, body);
                let path_and_query = req.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned();
                let full_url = format!("http://{host}{path_and_query}");
                let headers = req.headers_mut();
                for (name, value) in [("spin-full-url", full_url), ("spin-path-info", path_and_query)] {
                    if let Ok(value) = http::HeaderValue::from_str(&value) {
                        headers.insert(name, value);
                    }
                }
                let response = Box::pin(invoke(shared, target, req, trace)).await.map_err(|e| {
                    tracing::warn!(component = caller, "chained request to {target:?} failed: {e:#}");
                    wasmtime_wasi_http::Error::InternalError(Some(format!("{e:#}")))
                })?;
                let response = response.map(|b| Full::new(b).map_err(|never| match never {}).boxed_unsync());
                return Ok((response, Box::new(async { Ok(()) }) as Box<dyn Future<Output = _> + Send>));
            }
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((response.map(BodyExt::boxed_unsync), Box::new(io) as Box<dyn Future<Output = _> + Send>))
        })
    }
}
