//! Deployment that loads, and outages that fail fast (issue 13, deliverables 4 and 6), on real
//! Spin only: every runtime configuration the project ships is started with `spin up`, its
//! services replaced by loopback ones this test starts (`redis-server` processes, a minimal
//! Vault KV v2 endpoint, libSQL addresses that refuse or never answer), and real requests go
//! through it. While Redis is down `/health` and API requests answer 503 within seconds, and the
//! application serves again once Redis is back.
//!
//! Runs when `HEALTH_E2E_RUNTIME=spin`, a Spin binary is found and `redis-server` is on `PATH`;
//! otherwise each test prints one line saying what it did not run. No libSQL server (sqld) can
//! be installed here, so the libSQL databases are tested only for failing fast, never for
//! serving (see deploy/README.md).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use health_e2e::runtime::{self, RedisServer, Runtime, SpinProcess};
use health_e2e::{ALICE, MASTER_KEY, root};
use health_host::LoadOptions;
use http_body_util::Full;

/// How long the test waits for any one answer: far longer than the application may take.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(20);
/// The longest a refusal may take while a store is down: the application's probe deadline
/// (`health_spin::stores::PROBE_DEADLINE`, 5 s) plus scheduling slack on a loaded 2-core machine.
const FAIL_FAST: Duration = Duration::from_secs(8);
/// How long Redis's return may take to show: Spin's Redis client sleeps 60–120 s between
/// reconnection attempts after the first two fail, so up to two such sleeps plus margin.
const RECOVERY: Duration = Duration::from_secs(300);
/// The token the Vault stub requires, written for every `REPLACE-ME` in the cloud configuration.
const TEST_TOKEN: &str = "deploy-test-token";

/// One test at a time: each starts Spin, which compiles every component on two cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Whether `test` can run here; if not, says in one line what was not run (and fails instead
/// where `HEALTH_E2E_REQUIRE_ALL` is set for the real-Spin pass, as on CI).
fn runnable(test: &str) -> bool {
    let why_not = if Runtime::selected() != Runtime::Spin {
        "runs in the real-Spin pass (HEALTH_E2E_RUNTIME=spin)"
    } else if runtime::spin_binary().is_none() {
        "no Spin binary (SPIN_BIN, target/tools/spin or spin on PATH)"
    } else if RedisServer::binary().is_none() {
        "no redis-server on PATH (Debian package redis-server)"
    } else {
        return true;
    };
    let required = std::env::var_os(runtime::REQUIRE_ALL_ENV).is_some();
    assert!(!required || Runtime::selected() != Runtime::Spin, "deploy::{test} cannot run: {why_not}");
    println!("deploy::{test}: NOT RUN here: {why_not}");
    false
}

/// A minimal HashiCorp Vault: exactly what Spin's Vault provider (vaultrs 0.7.3 `kv2::read`)
/// asks, `GET /v1/{mount}/data/{prefix}/{name}` with `X-Vault-Token`, answered with a KV v2
/// secret whose `value` field holds the variable; 404 for a name it does not hold, 403 for a
/// wrong token. Serves on its own thread until the process ends.
struct Vault {
    url: String,
    /// Every name read, in order.
    reads: Arc<Mutex<Vec<String>>>,
}

impl Vault {
    fn start(mount: &'static str, prefix: &'static str, secrets: HashMap<String, String>) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let url = format!("http://{}", listener.local_addr()?);
        let reads = Arc::new(Mutex::new(Vec::new()));
        let state = Arc::new(VaultState { mount, prefix, secrets, reads: reads.clone() });
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        std::thread::spawn(move || {
            runtime.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
                while let Ok((stream, _)) = listener.accept().await {
                    let state = state.clone();
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |req| {
                            let state = state.clone();
                            async move { Ok::<_, Infallible>(state.answer(&req)) }
                        });
                        let io = hyper_util::rt::TokioIo::new(stream);
                        let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
                    });
                }
            });
        });
        Ok(Self { url, reads })
    }

    fn reads(&self) -> Vec<String> {
        self.reads.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

struct VaultState {
    mount: &'static str,
    prefix: &'static str,
    secrets: HashMap<String, String>,
    reads: Arc<Mutex<Vec<String>>>,
}

impl VaultState {
    fn answer<B>(&self, req: &http::Request<B>) -> http::Response<Full<Bytes>> {
        let json = |status: u16, body: serde_json::Value| {
            http::Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body.to_string())))
                .expect("response")
        };
        if req.headers().get("x-vault-token").and_then(|v| v.to_str().ok()) != Some(TEST_TOKEN) {
            return json(403, serde_json::json!({ "errors": ["permission denied"] }));
        }
        let path = req.uri().path();
        let secret = format!("/v1/{}/data/{}/", self.mount, self.prefix);
        let Some(name) = path.strip_prefix(&secret).filter(|_| req.method() == http::Method::GET) else {
            return json(404, serde_json::json!({ "errors": [] }));
        };
        if let Ok(mut reads) = self.reads.lock() {
            reads.push(name.to_owned());
        }
        match self.secrets.get(name) {
            None => json(404, serde_json::json!({ "errors": [] })),
            Some(value) => json(
                200,
                serde_json::json!({
                    "request_id": "00000000-0000-0000-0000-000000000000",
                    "lease_id": "",
                    "renewable": false,
                    "lease_duration": 0,
                    "data": {
                        "data": { "value": value },
                        "metadata": {
                            "created_time": "2026-01-01T00:00:00Z",
                            "custom_metadata": null,
                            "deletion_time": "",
                            "destroyed": false,
                            "version": 1
                        }
                    },
                    "wrap_info": null,
                    "warnings": null,
                    "auth": null
                }),
            ),
        }
    }
}

/// Every secret, as Vault holds them, and the demo tenant switched on (the scenarios sign in
/// as demo users; `spin.toml` defaults it to off).
fn vault_secrets() -> HashMap<String, String> {
    let mut variables = health_e2e::secret_variables(MASTER_KEY);
    variables.extend(health_e2e::DEMO_VARIABLES.map(|(name, value)| (name.to_owned(), value.to_owned())));
    variables.extend(health_e2e::HARNESS_RATE_LIMITS.map(|(name, value)| (name.to_owned(), value.to_owned())));
    variables
}

/// A loopback address that accepts connections and never answers: a database that hangs.
fn silent_listener() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().map_while(Result::ok) {
            held.push(stream);
        }
    });
    Ok(addr)
}

/// `text` with the one occurrence of `from` replaced: the shipped file changing shape fails the
/// test instead of silently testing something else.
fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(text.matches(from).count(), 1, "expected {from:?} exactly once in the runtime configuration");
    text.replacen(from, to, 1)
}

/// `deploy/runtime-config.cloud.toml` with Redis, Vault and credentials pointed at the test's
/// services, and each libSQL database's `url` line replaced by `libsql(name)`'s lines.
fn cloud_config(
    redis: &RedisServer,
    keys_redis: &RedisServer,
    vault_url: &str,
    libsql: impl Fn(&str) -> String,
) -> String {
    let mut text = std::fs::read_to_string(root().join("deploy/runtime-config.cloud.toml")).expect("cloud config");
    text = text.replace("redis://health-redis:6379/0", &redis.url(0));
    text = text.replace("redis://health-redis:6379/1", &redis.url(1));
    text = replace_once(&text, "redis://health-keys-redis:6379/0", &keys_redis.url(0));
    text = replace_once(&text, "url = \"http://vault.vault:8200\"", &format!("url = \"{vault_url}\""));
    for db in ["audit", "identity", "records"] {
        let shipped = format!("type = \"libsql\"\nurl = \"http://health-{db}-db:8080\"\ntoken = \"REPLACE-ME\"");
        text = replace_once(&text, &shipped, &libsql(db));
    }
    text = text.replace("REPLACE-ME", TEST_TOKEN);
    let settings: Vec<&str> = text.lines().filter(|line| !line.trim_start().starts_with('#')).collect();
    for placeholder in ["health-redis", "health-keys-redis", "vault.vault", "-db:8080", "REPLACE-ME"] {
        assert!(
            !settings.iter().any(|line| line.contains(placeholder)),
            "{placeholder} left in the runtime configuration:\n{text}"
        );
    }
    text
}

fn start_spin(state: &Path, runtime_config: &str, env: HashMap<String, String>) -> SpinProcess {
    let path = state.join("runtime-config.toml");
    std::fs::write(&path, runtime_config).expect("runtime config");
    let options = LoadOptions {
        manifest: root().join("spin.toml"),
        runtime_config: Some(path),
        state_dir: state.join(".spin"),
        env,
    };
    SpinProcess::start(&options).expect("spin up with the runtime configuration")
}

/// A real request over loopback, its status and body, and how long it took; `None` when no
/// answer came within [`CLIENT_TIMEOUT`].
async fn request(spin: &SpinProcess, method: &str, path: &str, token: Option<&str>, body: &str) -> Answer {
    let mut builder = http::Request::builder().method(method).uri(path);
    if let Some(token) = token {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    if !body.is_empty() {
        builder = builder.header("content-type", "application/json");
    }
    let req = builder.body(Bytes::from(body.to_owned())).expect("request");
    let started = Instant::now();
    let reply = tokio::time::timeout(CLIENT_TIMEOUT, spin.send(req, Ipv4Addr::LOCALHOST)).await;
    let elapsed = started.elapsed();
    match reply {
        Ok(Ok(response)) => Answer {
            status: Some(response.status().as_u16()),
            content_type: response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned(),
            body: String::from_utf8_lossy(response.body()).into_owned(),
            elapsed,
        },
        Ok(Err(e)) => panic!("{method} {path}: {e:#}\n{}", spin.output().join("\n")),
        Err(_) => Answer { status: None, content_type: String::new(), body: String::new(), elapsed },
    }
}

#[derive(Debug)]
struct Answer {
    /// `None`: no answer within [`CLIENT_TIMEOUT`].
    status: Option<u16>,
    content_type: String,
    body: String,
    elapsed: Duration,
}

impl Answer {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_default()
    }
}

async fn login_alice(spin: &SpinProcess) -> Answer {
    let (username, password) = ALICE;
    let body = serde_json::json!({ "tenant": "demo-hospital", "username": username, "password": password });
    request(spin, "POST", "/auth/login", None, &body.to_string()).await
}

/// Logs Alice in and reads her record: the path every store and secret is on.
async fn serves_alice(spin: &SpinProcess) -> String {
    let login = login_alice(spin).await;
    assert_eq!(login.status, Some(200), "login: {login:?}\n{}", spin.output().join("\n"));
    let token = login.json()["access_token"].as_str().expect("access token").to_owned();
    let read = request(spin, "GET", "/api/patients/p-1001/records", Some(&token), "").await;
    assert_eq!(read.status, Some(200), "record read: {read:?}\n{}", spin.output().join("\n"));
    assert!(read.body.contains("p-1001"), "{}", read.body);
    token
}

/// A 503 problem, answered within [`FAIL_FAST`].
fn assert_fails_fast(what: &str, answer: &Answer, spin: &SpinProcess) {
    assert_eq!(answer.status, Some(503), "{what}: {answer:?}\n{}", spin.output().join("\n"));
    assert_eq!(answer.content_type, "application/problem+json", "{what}: {answer:?}");
    assert_eq!(answer.json()["status"], 503, "{what}: {answer:?}");
    assert!(answer.elapsed <= FAIL_FAST, "{what} took {:?}, more than {FAIL_FAST:?}", answer.elapsed);
    println!("deploy: {what}: 503 in {:.2} s", answer.elapsed.as_secs_f64());
}

#[tokio::test]
async fn the_local_runtime_config_loads_on_spin() {
    if !runnable("the_local_runtime_config_loads_on_spin") {
        return;
    }
    let _serial = SERIAL.lock().await;
    let state = tempfile::tempdir().expect("state");
    // Its store paths made absolute: Spin resolves key-value paths against the file's directory
    // but SQLite paths against its working directory.
    let text = std::fs::read_to_string(root().join("runtime-config.toml")).expect("runtime config");
    assert_eq!(text.matches("path = \".spin/").count(), 6, "{text}");
    let text = text.replace("path = \".spin/", &format!("path = \"{}/", state.path().display()));
    let spin = start_spin(state.path(), &text, health_e2e::secrets(MASTER_KEY));
    serves_alice(&spin).await;
    for file in ["public-keys.db", "revocations.db", "private-keys.db", "audit.db", "identity.db", "records.db"] {
        assert!(state.path().join(file).is_file(), "{file} not where runtime-config.toml puts it");
    }
}

#[tokio::test]
async fn the_cloud_runtime_config_serves_from_redis_and_vault_and_fails_fast_while_redis_is_down() {
    if !runnable("the_cloud_runtime_config_serves_from_redis_and_vault_and_fails_fast_while_redis_is_down") {
        return;
    }
    let serial = SERIAL.lock().await;
    let state = tempfile::tempdir().expect("state");
    let mut redis = RedisServer::start_durable(&state.path().join("redis")).expect("redis");
    let keys_redis = RedisServer::start_durable(&state.path().join("keys-redis")).expect("keys redis");
    let vault = Vault::start("secret", "health-platform", vault_secrets()).expect("vault");
    // No libSQL server can be installed here: the databases are local SQLite files in this run
    // (the next test points them at unreachable libSQL addresses).
    let dir = state.path().display().to_string();
    let text = cloud_config(&redis, &keys_redis, &vault.url, |db| format!("type = \"spin\"\npath = \"{dir}/{db}.db\""));
    // No SPIN_VARIABLE_*: the secrets can only come from Vault.
    let spin = start_spin(state.path(), &text, HashMap::new());

    let token = serves_alice(&spin).await;
    let reads = vault.reads();
    let secrets = health_e2e::secret_variables(MASTER_KEY);
    for secret in secrets.keys() {
        assert!(reads.iter().any(|r| r == secret), "{secret} never read from Vault: {reads:?}");
    }
    let before = vault.reads().len();
    let read = request(&spin, "GET", "/api/patients/p-1001/records", Some(&token), "").await;
    assert_eq!(read.status, Some(200), "{read:?}");
    println!("deploy: one record read made {} Vault reads", vault.reads().len() - before);
    let health = request(&spin, "GET", "/health", None, "").await;
    assert_eq!((health.status, health.json()["status"].as_str()), (Some(200), Some("ok")), "{health:?}");

    // Redis (public-keys, revocations) crashes.
    redis.stop();
    let outage = Instant::now();
    assert_fails_fast("/health with Redis down", &request(&spin, "GET", "/health", None, "").await, &spin);
    let read = request(&spin, "GET", "/api/patients/p-1001/records", Some(&token), "").await;
    assert_fails_fast("a record read with Redis down", &read, &spin);
    assert!(!read.body.contains("Andersen"), "record data served during the outage");
    assert_fails_fast("a login with Redis down", &login_alice(&spin).await, &spin);
    assert_fails_fast("/health again with Redis down", &request(&spin, "GET", "/health", None, "").await, &spin);

    // The timed part is over: the other tests may start their Spin while this one waits out
    // Spin's reconnection backoff (one request a second, no time limit but RECOVERY), instead
    // of holding a test thread idle on the lock for two minutes.
    drop(serial);

    // Redis comes back with its data: the application serves again, the token still good.
    redis.restart().expect("redis restart");
    let back = Instant::now();
    loop {
        let health = request(&spin, "GET", "/health", None, "").await;
        assert!(health.status.is_some(), "/health did not answer within {CLIENT_TIMEOUT:?} after Redis returned");
        if health.status == Some(200) {
            break;
        }
        assert_eq!(health.status, Some(503), "{health:?}");
        assert!(back.elapsed() < RECOVERY, "still 503 {:?} after Redis returned", back.elapsed());
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    println!(
        "deploy: /health 200 again {:.1} s after Redis returned (outage {:.1} s)",
        back.elapsed().as_secs_f64(),
        back.duration_since(outage).as_secs_f64()
    );
    // Each component's stores reconnect on their own schedule (Spin's client sleeps 60–120 s
    // between attempts per connection), so the patient service's may come back after the
    // gateway's: until then a read is refused fast (503), never answered wrongly.
    loop {
        let read = request(&spin, "GET", "/api/patients/p-1001/records", Some(&token), "").await;
        if read.status == Some(200) {
            break;
        }
        assert_eq!(read.status, Some(503), "record read after Redis returned: {read:?}");
        assert!(back.elapsed() < RECOVERY, "record reads still 503 {:?} after Redis returned", back.elapsed());
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    println!("deploy: a record read 200 again {:.1} s after Redis returned", back.elapsed().as_secs_f64());
}

#[tokio::test]
async fn the_cloud_runtime_config_answers_503_fast_while_libsql_is_unreachable() {
    if !runnable("the_cloud_runtime_config_answers_503_fast_while_libsql_is_unreachable") {
        return;
    }
    let _serial = SERIAL.lock().await;
    let state = tempfile::tempdir().expect("state");
    let redis = RedisServer::start_durable(&state.path().join("redis")).expect("redis");
    let keys_redis = RedisServer::start_durable(&state.path().join("keys-redis")).expect("keys redis");
    let vault = Vault::start("secret", "health-platform", vault_secrets()).expect("vault");
    // `audit` refuses connections (nothing listens); `identity` and `records` accept and never
    // answer, a server that hangs.
    let refused = runtime::free_port().expect("port");
    let silent = silent_listener().expect("listener");
    let text = cloud_config(&redis, &keys_redis, &vault.url, |db| {
        let url = if db == "audit" { format!("http://127.0.0.1:{refused}") } else { format!("http://{silent}") };
        format!("type = \"libsql\"\nurl = \"{url}\"\ntoken = \"REPLACE-ME\"")
    });
    // Spin connects to libSQL lazily, on a component's first query: it starts regardless.
    let spin = start_spin(state.path(), &text, HashMap::new());
    assert_fails_fast("/health with libSQL refusing", &request(&spin, "GET", "/health", None, "").await, &spin);
    assert_fails_fast("a login with libSQL silent", &login_alice(&spin).await, &spin);
    let read = request(&spin, "GET", "/api/patients/p-1001/records", None, "").await;
    assert_fails_fast("an API request with libSQL refusing", &read, &spin);
}

#[tokio::test]
async fn the_cloud_runtime_config_answers_503_fast_while_vault_is_unreachable() {
    if !runnable("the_cloud_runtime_config_answers_503_fast_while_vault_is_unreachable") {
        return;
    }
    let _serial = SERIAL.lock().await;
    let state = tempfile::tempdir().expect("state");
    let redis = RedisServer::start_durable(&state.path().join("redis")).expect("redis");
    let keys_redis = RedisServer::start_durable(&state.path().join("keys-redis")).expect("keys redis");
    let vault_url = format!("http://127.0.0.1:{}", runtime::free_port().expect("port"));
    let dir = state.path().display().to_string();
    let text = cloud_config(&redis, &keys_redis, &vault_url, |db| format!("type = \"spin\"\npath = \"{dir}/{db}.db\""));
    // Spin checks at startup only that some provider may hold each required variable: it starts.
    let spin = start_spin(state.path(), &text, health_e2e::secrets(MASTER_KEY));
    // Even with every secret in SPIN_VARIABLE_*, Vault is asked first and its failure fails
    // every variable, defaults included.
    assert_fails_fast("/health with Vault down", &request(&spin, "GET", "/health", None, "").await, &spin);
    assert_fails_fast("a login with Vault down", &login_alice(&spin).await, &spin);
}
