//! Loading a Spin application and serving requests to it: one pre-instantiated component per
//! `[component.X]`, a fresh `Store` and instance per request, routing, the Spin request
//! headers, and outbound HTTP with `*.spin.internal` chaining dispatched in-process.

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

use crate::manifest::{Manifest, Route};
use crate::outbound::AllowedHost;
use crate::routing::Router;
use crate::runtime_config::RuntimeConfig;

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

/// Address reported as `spin-client-addr` when a caller does not give one.
pub const DEFAULT_CLIENT: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 0));
const GUEST_LOG_LINES: usize = 500;
/// Concurrent component instances the pooling allocator reserves room for (a chained request
/// holds two or three at once).
const POOL_INSTANCES: u32 = 256;
/// Largest linear memory one instance may grow to.
const POOL_MAX_MEMORY: usize = 256 << 20;
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
    components: HashMap<String, Loaded>,
    router: Router,
    pub key_value: HashMap<String, Arc<crate::spin_api::KeyValueDb>>,
    pub sqlite: HashMap<String, Arc<crate::runtime_config::SqliteDatabase>>,
    guest_log: Mutex<Vec<String>>,
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
    /// Loads, composes and pre-instantiates every component of the application.
    pub fn load(options: &LoadOptions) -> anyhow::Result<Self> {
        let manifest = Manifest::load(&options.manifest)?;
        let base = options.manifest.parent().unwrap_or(Path::new(".")).to_path_buf();
        let runtime = RuntimeConfig::load(options.runtime_config.as_deref(), &options.state_dir)?;
        let values = crate::variables::resolve(&manifest.variables, &options.env)?;

        let engine = engine()?;
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
            let allowed_outbound_hosts = component
                .allowed_outbound_hosts
                .iter()
                .map(|h| AllowedHost::parse(h))
                .collect::<anyhow::Result<Vec<_>>>()
                .with_context(|| format!("component {id:?}"))?;

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
        let shared = Shared { components, router, key_value, sqlite, guest_log: Mutex::new(Vec::new()) };
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
    pub async fn handle_from(
        &self,
        req: http::Request<Bytes>,
        client: SocketAddr,
    ) -> anyhow::Result<http::Response<Bytes>> {
        let Some(matched) = self.shared.router.route(req.uri().path()) else {
            return Ok(http::Response::builder().status(404).body(Bytes::from_static(b"Not Found"))?);
        };
        let (mut parts, body) = req.into_parts();
        let host =
            parts.headers.get(http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1:3000").to_owned();
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
        invoke(self.shared.clone(), &matched.component, http::Request::from_parts(parts, body)).await
    }

    /// Recent guest stdout/stderr lines, prefixed with the component id (for test failure output).
    pub fn guest_output(&self) -> Vec<String> {
        self.shared.guest_log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

/// The engine: component model, compilation cache and, where the machine allows reserving
/// its address space, the pooling allocator Spin uses (every request instantiates fresh).
/// Public so benchmarks run guests with exactly the code generation the host uses.
pub fn engine() -> anyhow::Result<Engine> {
    let configure = |pooled: bool| -> anyhow::Result<Engine> {
        let mut config = Config::new();
        config.wasm_component_model(true);
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
                .total_component_instances(POOL_INSTANCES)
                .total_core_instances(POOL_INSTANCES * 8)
                .total_memories(POOL_INSTANCES * 2)
                .total_tables(POOL_INSTANCES * 4)
                .max_memory_size(POOL_MAX_MEMORY);
            config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pooling));
        }
        Ok(Engine::new(&config)?)
    };
    configure(true).or_else(|e| {
        tracing::warn!("pooling allocator unavailable ({e:#}); instantiating on demand");
        configure(false)
    })
}

fn create_parent(location: &crate::runtime_config::Location) -> anyhow::Result<()> {
    if let crate::runtime_config::Location::Path(path) = location
        && let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
    {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    Ok(())
}

/// Runs one request through a fresh instance of `component_id`.
async fn invoke(
    shared: Arc<Shared>,
    component_id: &str,
    mut req: http::Request<Bytes>,
) -> anyhow::Result<http::Response<Bytes>> {
    let loaded = shared.components.get(component_id).with_context(|| format!("no component {component_id:?}"))?;
    if req.uri().authority().is_none() && !req.headers().contains_key(http::header::HOST) {
        req.headers_mut().insert(http::header::HOST, http::HeaderValue::from_static("127.0.0.1:3000"));
    }
    let output = MemoryOutputPipe::new(GUEST_OUTPUT_BYTES);
    let wasi = WasiCtx::builder().stdout(output.clone()).stderr(output.clone()).build();
    let state = State {
        wasi,
        http: WasiHttpCtx::new(),
        table: ResourceTable::new(),
        hooks: Hooks { shared: shared.clone(), component: loaded.config.clone() },
        component: loaded.config.clone(),
        shared: shared.clone(),
        open_connections: 0,
    };
    let mut store = Store::new(loaded.pre.engine(), state);
    let req = req.map(Full::new);
    let incoming = store.data_mut().http().new_incoming_request(Scheme::Http, req)?;
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let out = store.data_mut().http().new_response_outparam(sender)?;
    let pre = loaded.pre.clone();
    let task = tokio::task::spawn(async move {
        let proxy = pre.instantiate_async(&mut store).await?;
        proxy.wasi_http_incoming_handler().call_handle(&mut store, incoming, out).await
    });
    let result = match receiver.await {
        Ok(Ok(response)) => {
            let (parts, body) = response.into_parts();
            let body = body.collect().await.map_err(|e| anyhow::anyhow!("guest response body: {e:?}"))?.to_bytes();
            let finished = task.await.context("guest task panicked")?;
            if let Err(e) = finished {
                tracing::warn!(component = component_id, "guest trapped after responding: {e:#}");
            }
            Ok(http::Response::from_parts(parts, body))
        }
        Ok(Err(code)) => Err(anyhow::anyhow!("component {component_id:?} answered with error {code:?}")),
        Err(_) => match task.await.context("guest task panicked")? {
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
}

type Sent = Result<
    (http::Response<WasiBody>, Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>),
    wasmtime_wasi_http::Error,
>;

impl WasiHttpHooks for Hooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
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
                let response = Box::pin(invoke(shared, target, req)).await.map_err(|e| {
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
