//! Requests over HTTP, on real Spin (`spin up`) and on the project's host (served by
//! `health_host::serve`), one runtime after the other in one run: each scenario at each
//! concurrency for a fixed time, in slices alternating with slices of a hello-world baseline
//! on the same runtime (so the ratio compares requests measured side by side on a machine
//! whose speed drifts), every latency kept, p50 and p99 read from the sorted list. Each worker
//! keeps one HTTP/1.1 connection open (as `wrk` does) from its own loopback address, which
//! both runtimes report as the client address.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use base64::Engine;
use bytes::Bytes;
use health_e2e::runtime::SpinProcess;
use health_e2e::{ALICE, Runtime, TestApp, root};
use health_host::{App, LoadOptions};
use http_body_util::{BodyExt, Full};

pub const HELLO_PATH: &str = "/hello";
pub const JWKS_PATH: &str = "/.well-known/jwks.json";
pub const LOGIN_PATH: &str = "/auth/login";
pub const TOKEN_PATH: &str = "/auth/token";
pub const RECORDS_PATH: &str = "/api/patients/p-1001/records";
/// Measured instead of [`RECORDS_PATH`] (and said so) while the plural route is not there yet.
pub const LEGACY_RECORD_PATH: &str = "/api/patients/p-1001/record";
pub const CONSENTS_PATH: &str = "/api/patients/p-1001/consents";
pub const SUMMARY_PATH: &str = "/api/insurance/patients/p-1001/summary";
/// The demo insurer client and its documented secret (README).
pub const INSURER: (&str, &str) = ("acme-health", "acme-health-demo-secret-2026");
/// Issue 6's bar for tails: p99 at most this many times p50.
pub const TAIL_LIMIT: f64 = 5.0;

/// Workers that mint insurer tokens before a cell (untimed).
const MINTERS: usize = 8;
/// Each scenario's time is cut into this many slices, each right after a baseline slice of the
/// same length: the ratio compares requests measured side by side, not a minute apart.
const SLICES: u32 = 3;
/// Largest token pool minted for one cell (tokens live five minutes).
const MAX_POOL: usize = 50_000;
/// Address of warm-up and setup requests; workers use 127.0.1.{worker + 1}.
const SETUP_CLIENT: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);

/// One HTTP/1.1 connection to `server` from `source`, kept open between requests and opened
/// again when the server has closed it.
struct Client {
    server: SocketAddr,
    source: Ipv4Addr,
    sender: Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>>,
}

impl Client {
    fn new(server: SocketAddr, source: Ipv4Addr) -> Self {
        Self { server, source, sender: None }
    }

    async fn connect(&self) -> anyhow::Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(SocketAddr::from((self.source, 0))).with_context(|| format!("binding {}", self.source))?;
        let stream = socket.connect(self.server).await.with_context(|| format!("connecting to {}", self.server))?;
        stream.set_nodelay(true)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        Ok(sender)
    }

    /// Sends one request; on a kept connection the server closed meanwhile, once more on a new one.
    async fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> anyhow::Result<http::Response<Bytes>> {
        for attempt in 0..2 {
            let reused = self.sender.as_ref().is_some_and(|s| !s.is_closed());
            if !reused {
                self.sender = Some(self.connect().await?);
            }
            let sender = self.sender.as_mut().context("connected")?;
            let mut req = http::Request::builder().method(method).uri(path).header("host", self.server.to_string());
            for (name, value) in headers {
                req = req.header(*name, *value);
            }
            let sent = match sender.ready().await {
                Ok(()) => sender.send_request(req.body(Full::new(Bytes::from(body.to_owned())))?).await,
                Err(e) => Err(e),
            };
            match sent {
                Ok(response) => {
                    let (parts, body) = response.into_parts();
                    return Ok(http::Response::from_parts(parts, body.collect().await?.to_bytes()));
                }
                Err(e) if reused && attempt == 0 && (e.is_closed() || e.is_incomplete_message()) => {
                    self.sender = None;
                }
                Err(e) => return Err(e).with_context(|| format!("{method} {path} on {}", self.server)),
            }
        }
        anyhow::bail!("{method} {path}: the connection closed twice")
    }
}

#[derive(Clone)]
struct Scenario {
    key: &'static str,
    label: &'static str,
    /// Where the runtime serves this scenario's application.
    addr: SocketAddr,
    method: &'static str,
    path: &'static str,
    headers: Vec<(&'static str, String)>,
    body: String,
    expect: u16,
    content_type: Option<&'static str>,
    /// Each request carries its own bearer token from a pool minted before the cell.
    one_time_tokens: bool,
    /// Issue 6's throughput target, as a fraction of the baseline.
    target: Option<f64>,
}

/// One scenario at one concurrency.
#[derive(Debug, Clone)]
pub struct Cell {
    pub key: &'static str,
    pub label: &'static str,
    pub concurrency: usize,
    pub requests: usize,
    pub seconds: f64,
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Throughput over the baseline's at the same concurrency in this run.
    pub ratio: f64,
    pub target: Option<f64>,
    pub note: Option<String>,
}

impl Cell {
    pub fn tail(&self) -> f64 {
        if self.p50_ms > 0.0 { self.p99_ms / self.p50_ms } else { f64::INFINITY }
    }

    pub fn tail_ok(&self) -> bool {
        self.tail() <= TAIL_LIMIT
    }

    pub fn meets_target(&self) -> Option<bool> {
        self.target.map(|t| self.ratio >= t)
    }
}

/// A scenario that could not run, and why.
#[derive(Debug, Clone)]
pub struct Skipped {
    pub key: &'static str,
    pub label: &'static str,
    pub reason: String,
}

#[derive(Debug, Clone, Default)]
pub struct Results {
    /// The runtime measured: `spin` or `host`.
    pub runtime: &'static str,
    /// The record read as the audit log and the tenants grow (`--scaling`).
    pub scaling: Vec<crate::scaling::Step>,
    /// In scenario order, concurrency 1 first.
    pub cells: Vec<Cell>,
    pub skipped: Vec<Skipped>,
    /// Things a reader must know to read the numbers (a substituted path, for one).
    pub notes: Vec<String>,
}

/// One-time tokens handed out once each, in order.
struct TokenPool {
    tokens: Vec<String>,
    next: AtomicUsize,
}

impl TokenPool {
    fn take(&self) -> Option<&str> {
        self.tokens.get(self.next.fetch_add(1, Ordering::Relaxed)).map(String::as_str)
    }
}

/// One request over `client`, timed; `None` once the token pool is used up. Each worker has
/// its own client address: concurrent logins of one user from one address count against the
/// lockout in advance, as an attack would.
async fn once(s: &Scenario, pool: Option<&TokenPool>, client: &mut Client) -> anyhow::Result<Option<Duration>> {
    let bearer;
    let mut headers: Vec<(&str, &str)> = s.headers.iter().map(|(name, value)| (*name, value.as_str())).collect();
    if let Some(pool) = pool {
        let Some(token) = pool.take() else { return Ok(None) };
        bearer = format!("Bearer {token}");
        headers.push(("authorization", &bearer));
    }
    let start = Instant::now();
    let res = client.send(s.method, s.path, &headers, &s.body).await?;
    let took = start.elapsed();
    anyhow::ensure!(
        res.status().as_u16() == s.expect,
        "{}: status {} (expected {}): {}",
        s.label,
        res.status(),
        s.expect,
        String::from_utf8_lossy(res.body())
    );
    if let Some(expected) = s.content_type {
        let got = res.headers().get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
        anyhow::ensure!(got == expected, "{}: content-type {got:?} (expected {expected:?})", s.label);
    }
    Ok(Some(took))
}

/// The requests of one timed slice.
struct Sample {
    latencies: Vec<Duration>,
    seconds: f64,
    /// The token pool ran out before the slice's time was up.
    exhausted: bool,
}

async fn sample(
    s: &Scenario,
    concurrency: usize,
    duration: Duration,
    pool: Option<Arc<TokenPool>>,
) -> anyhow::Result<Sample> {
    // Warm-up, and a check that the scenario behaves before it is timed.
    let mut setup = Client::new(s.addr, SETUP_CLIENT);
    once(s, pool.as_deref(), &mut setup).await?.context("no token left for the warm-up")?;
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..concurrency {
        let s = s.clone();
        let pool = pool.clone();
        let from = Ipv4Addr::new(127, 0, 1, u8::try_from(worker % 250 + 1).unwrap_or(1));
        workers.spawn(async move {
            let mut client = Client::new(s.addr, from);
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                match once(&s, pool.as_deref(), &mut client).await? {
                    Some(took) => latencies.push(took),
                    None => break,
                }
            }
            anyhow::Ok(latencies)
        });
    }
    let mut latencies = Vec::new();
    while let Some(done) = workers.join_next().await {
        latencies.extend(done??);
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(Sample { latencies, seconds, exhausted: seconds + 0.05 < duration.as_secs_f64() })
}

fn rps(samples: &[Sample]) -> f64 {
    let seconds: f64 = samples.iter().map(|s| s.seconds).sum();
    samples.iter().map(|s| s.latencies.len()).sum::<usize>() as f64 / seconds.max(f64::EPSILON)
}

/// One cell from its slices; `ratio` is left for the caller.
fn cell(s: &Scenario, concurrency: usize, samples: &[Sample]) -> Cell {
    let mut all: Vec<Duration> = samples.iter().flat_map(|s| s.latencies.iter().copied()).collect();
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    let seconds = samples.iter().map(|s| s.seconds).sum();
    Cell {
        key: s.key,
        label: s.label,
        concurrency,
        requests: all.len(),
        seconds,
        rps: rps(samples),
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        ratio: 0.0,
        target: s.target,
        note: samples.iter().any(|s| s.exhausted).then(|| "token pool used up before a slice ended".to_owned()),
    }
}

/// A runtime serving one application over HTTP, kept alive while measured.
enum Served {
    /// Held only to stop Spin when dropped.
    Spin {
        _process: SpinProcess,
    },
    Host(tokio::task::JoinHandle<anyhow::Result<()>>),
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Served::Host(task) = self {
            task.abort();
        }
    }
}

/// The hello-world baseline (the host's probe fixture) on `runtime`, and where it listens.
async fn baseline(runtime: Runtime, state: &std::path::Path) -> anyhow::Result<(Served, SocketAddr)> {
    std::fs::write(
        state.join("rc.toml"),
        "[key_value_store.allowed]\ntype = \"spin\"\npath = \"a.db\"\n[sqlite_database.db]\ntype = \"spin\"\npath = \"d.db\"\n",
    )?;
    let options = LoadOptions {
        manifest: root().join("crates/host/tests/fixtures/spin.toml"),
        runtime_config: Some(state.join("rc.toml")),
        state_dir: state.join(".spin"),
        env: HashMap::from([("SPIN_VARIABLE_TOKEN".to_owned(), "bench".to_owned())]),
    };
    let context = "loading the hello-world baseline (run `cargo xtask build` first)";
    match runtime {
        Runtime::Spin => {
            let spin = SpinProcess::start(&options).context(context)?;
            let addr = spin.addr();
            Ok((Served::Spin { _process: spin }, addr))
        }
        Runtime::Host => {
            let app = App::load(&options).context(context)?;
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            Ok((Served::Host(tokio::spawn(health_host::serve(app, listener))), addr))
        }
    }
}

/// One setup request (untimed) on a new connection.
async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> anyhow::Result<(u16, String)> {
    let res = Client::new(addr, SETUP_CLIENT).send(method, path, headers, body).await?;
    Ok((res.status().as_u16(), String::from_utf8_lossy(res.body()).into_owned()))
}

fn basic_auth((id, secret): (&str, &str)) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}")))
}

fn unix_now() -> i64 {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    i64::try_from(secs).unwrap_or(i64::MAX)
}

/// One insurer access token (`client_credentials` with HTTP Basic), over `client`.
async fn mint(client: &mut Client) -> anyhow::Result<String> {
    let auth = basic_auth(INSURER);
    let headers = [("content-type", "application/x-www-form-urlencoded"), ("authorization", auth.as_str())];
    let res = client.send("POST", TOKEN_PATH, &headers, "grant_type=client_credentials").await?;
    let (status, body) = (res.status().as_u16(), String::from_utf8_lossy(res.body()).into_owned());
    anyhow::ensure!(status == 200, "minting an insurer token: {status} {body}");
    let json: serde_json::Value = serde_json::from_str(&body).context("token response is not JSON")?;
    json["access_token"].as_str().map(str::to_owned).context("token response has no access_token")
}

/// `n` insurer tokens, minted by [`MINTERS`] concurrent workers.
async fn mint_pool(addr: SocketAddr, n: usize) -> anyhow::Result<Arc<TokenPool>> {
    let mut minters = tokio::task::JoinSet::new();
    for m in 0..MINTERS {
        let share = n / MINTERS + usize::from(m < n % MINTERS);
        minters.spawn(async move {
            let mut client = Client::new(addr, SETUP_CLIENT);
            let mut tokens = Vec::with_capacity(share);
            for _ in 0..share {
                tokens.push(mint(&mut client).await?);
            }
            anyhow::Ok(tokens)
        });
    }
    let mut tokens = Vec::with_capacity(n);
    while let Some(done) = minters.join_next().await {
        tokens.extend(done??);
    }
    Ok(Arc::new(TokenPool { tokens, next: AtomicUsize::new(0) }))
}

/// Alice consents to the demo insurer, then one summary read is tried end to end. `Err` is
/// the reason to skip the scenario (the routes land with issue 5).
async fn prepare_insurer(addr: SocketAddr, alice: &str) -> anyhow::Result<Result<(), String>> {
    let consent = serde_json::json!({ "insurer": INSURER.0, "expires_at": unix_now() + 24 * 3600 }).to_string();
    let bearer = format!("Bearer {alice}");
    let headers = [("content-type", "application/json"), ("authorization", bearer.as_str())];
    let (status, body) = send(addr, "POST", CONSENTS_PATH, &headers, &consent).await?;
    match status {
        201 => {}
        404 => return Ok(Err(format!("POST {CONSENTS_PATH} answers 404: the consent route is not there yet"))),
        _ => return Ok(Err(format!("POST {CONSENTS_PATH} answers {status} (expected 201): {body}"))),
    }
    let mut client = Client::new(addr, SETUP_CLIENT);
    let token = mint(&mut client).await?;
    let bearer = format!("Bearer {token}");
    let res = client.send("GET", SUMMARY_PATH, &[("authorization", &bearer)], "").await?;
    let content_type = res.headers().get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if res.status() != 200 || content_type != "application/jose" {
        return Ok(Err(format!(
            "GET {SUMMARY_PATH} answers {} {content_type:?} (expected 200 application/jose): {}",
            res.status(),
            String::from_utf8_lossy(res.body())
        )));
    }
    Ok(Ok(()))
}

/// The record path to measure: the plural route, or the singular one while it is missing.
async fn record_path(addr: SocketAddr, alice: &str, notes: &mut Vec<String>) -> anyhow::Result<&'static str> {
    let bearer = format!("Bearer {alice}");
    let (status, body) = send(addr, "GET", RECORDS_PATH, &[("authorization", &bearer)], "").await?;
    match status {
        200 => Ok(RECORDS_PATH),
        404 => {
            let note = format!("GET {RECORDS_PATH} answers 404 (not there yet): record reads use {LEGACY_RECORD_PATH}");
            eprintln!("note: {note}");
            notes.push(note);
            Ok(LEGACY_RECORD_PATH)
        }
        _ => anyhow::bail!("GET {RECORDS_PATH} as alice: {status} {body}"),
    }
}

/// `s` at `concurrency` for `duration`, in slices each run right after a slice of `baseline`:
/// its cell with the ratio filled in, and the baseline's slices.
async fn measure(
    s: &Scenario,
    baseline: &Scenario,
    concurrency: usize,
    duration: Duration,
    app: SocketAddr,
    done: &[Cell],
) -> anyhow::Result<(Cell, Vec<Sample>)> {
    let slice = duration / SLICES;
    let (mut mine, mut paired) = (Vec::new(), Vec::new());
    for _ in 0..SLICES {
        paired.push(sample(baseline, concurrency, slice, None).await?);
        let pool = if s.one_time_tokens {
            let n = pool_size(done, s.key, concurrency, slice);
            eprintln!("minting {n} insurer tokens for {} at c={concurrency} (untimed)", s.key);
            Some(mint_pool(app, n).await?)
        } else {
            None
        };
        mine.push(sample(s, concurrency, slice, pool).await?);
    }
    let mut measured = cell(s, concurrency, &mine);
    // Against the baseline slices run between this scenario's, so drift in the machine's speed
    // over the run moves both sides alike.
    measured.ratio = measured.rps / rps(&paired).max(f64::EPSILON);
    Ok((measured, paired))
}

/// Every scenario at every `concurrency` on `runtime`, `duration` each; ratios filled in. With
/// `scaling`, the record read is measured again as the audit log and the tenants grow.
pub async fn run(
    runtime: Runtime,
    duration: Duration,
    only: &[String],
    concurrency_levels: &[usize],
    scaling: bool,
) -> anyhow::Result<Results> {
    let platform = TestApp::start_on(runtime)?;
    let url = platform.app.url().await?;
    let app: SocketAddr = url.trim_start_matches("http://").parse().context("the platform's address")?;
    let baseline_state = tempfile::tempdir()?;
    let (_baseline_served, hello) = baseline(runtime, baseline_state.path()).await?;
    let alice = platform.token(ALICE).await;
    let mut results = Results { runtime: runtime.name(), ..Results::default() };
    let records = record_path(app, &alice, &mut results.notes).await?;
    let insurer = prepare_insurer(app, &alice).await?;

    let login = serde_json::json!({ "tenant": "demo-hospital", "username": ALICE.0, "password": ALICE.1 }).to_string();
    let bearer = vec![("authorization", format!("Bearer {alice}"))];
    let plain =
        |key, label, addr: SocketAddr, method, path, headers: Vec<(&'static str, String)>, body: &str, expect| {
            Scenario {
                key,
                label,
                addr,
                method,
                path,
                headers,
                body: body.to_owned(),
                expect,
                content_type: None,
                one_time_tokens: false,
                target: None,
            }
        };
    let json = vec![("content-type", "application/json".to_owned())];
    let mut scenarios = vec![
        plain("hello", "hello-world component (baseline, same runtime)", hello, "GET", HELLO_PATH, vec![], "", 200),
        plain("jwks", "JWKS GET", app, "GET", JWKS_PATH, vec![], "", 200),
        plain("login", "login (argon2id, then signing over chaining)", app, "POST", LOGIN_PATH, json, &login, 200),
        Scenario {
            target: Some(0.30),
            ..plain("record", "authorized JWS record read (chained, audited)", app, "GET", records, bearer, "", 200)
        },
    ];
    let insurer_label = "insurer JWE summary read (one-time nested JWE)";
    match insurer {
        Ok(()) => scenarios.push(Scenario {
            content_type: Some("application/jose"),
            one_time_tokens: true,
            target: Some(0.15),
            ..plain("insurer", insurer_label, app, "GET", SUMMARY_PATH, vec![], "", 200)
        }),
        Err(reason) => {
            eprintln!("skipping {insurer_label}: {reason}");
            results.skipped.push(Skipped { key: "insurer", label: insurer_label, reason });
        }
    }
    let rejected = vec![("authorization", format!("Bearer {alice}x"))];
    scenarios.push(plain(
        "rejected",
        "rejected request (bad signature, audited)",
        app,
        "GET",
        records,
        rejected,
        "",
        401,
    ));

    if !only.is_empty() {
        scenarios.retain(|s| s.key == "hello" || only.iter().any(|k| k == s.key));
        results.notes.push(format!("only these scenarios were run: {}", only.join(", ")));
    }
    let (baseline, scenarios) = scenarios.split_first().context("the baseline scenario")?;
    for &concurrency in concurrency_levels {
        let mut baseline_samples = Vec::new();
        // This concurrency's baseline row goes here, in front of its scenarios, once measured.
        let first = results.cells.len();
        for s in scenarios {
            let (measured, paired) = measure(s, baseline, concurrency, duration, app, &results.cells).await?;
            eprintln!(
                "{:<5} {:<48} c={:<2} {:>8.1} req/s  p50 {:>7.2} ms  p99 {:>7.2} ms  {:>5.1}% of the baseline",
                results.runtime,
                measured.label,
                measured.concurrency,
                measured.rps,
                measured.p50_ms,
                measured.p99_ms,
                measured.ratio * 100.0
            );
            // Kept in `results` at once: the c=16 token pools are sized from the c=1 rate.
            results.cells.push(measured);
            baseline_samples.extend(paired);
        }
        if baseline_samples.is_empty() {
            baseline_samples.push(sample(baseline, concurrency, duration, None).await?);
        }
        let mut base = cell(baseline, concurrency, &baseline_samples);
        base.ratio = 1.0;
        eprintln!(
            "{:<5} {:<48} c={:<2} {:>8.1} req/s (all its slices)",
            results.runtime, base.label, concurrency, base.rps
        );
        results.cells.insert(first, base);
    }
    if scaling {
        match scenarios.iter().find(|s| s.key == "record") {
            Some(record) => {
                let cells = results.cells.clone();
                results.scaling = crate::scaling::run(platform.state.path(), |step| {
                    let done = cells.clone();
                    async move {
                        let (cell, _) = measure(record, baseline, SCALING_CONCURRENCY, duration, app, &done).await?;
                        eprintln!(
                            "{:<5} record read, {step}: {:.1} req/s, p50 {:.2} ms, {:.1}% of the baseline",
                            runtime.name(),
                            cell.rps,
                            cell.p50_ms,
                            cell.ratio * 100.0
                        );
                        Ok(cell)
                    }
                })
                .await?;
            }
            None => results.notes.push("scaling not measured: the record scenario was left out".into()),
        }
    }
    Ok(results)
}

/// The concurrency the scaling steps are measured at.
pub const SCALING_CONCURRENCY: usize = 16;

/// Tokens for one cell: enough for the fastest rate this scenario could plausibly reach (its
/// measured c=1 rate, scaled by the concurrency up to 4×, or a generous guess before that),
/// plus the warm-up. A pool used up early ends the cell early, which its note then says.
fn pool_size(done: &[Cell], key: &str, concurrency: usize, duration: Duration) -> usize {
    let single = done.iter().find(|c| c.key == key && c.concurrency == 1).map(|c| c.rps);
    let rate = match single {
        Some(rps) => rps * (concurrency as f64).min(4.0) * 1.3,
        None => 400.0,
    };
    ((rate * duration.as_secs_f64()) as usize + concurrency + 1).min(MAX_POOL)
}
