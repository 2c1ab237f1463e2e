//! The host against a real compiled guest (`host-probe`, composed with the real `policy`):
//! routing, private routes, Spin headers, label checks, stores, variables, outbound rules,
//! chaining, dependency composition and refusal, fresh instances.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use std::time::Duration;

use bytes::Bytes;
use health_host::{App, Limits, LoadOptions, RequestRefused};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn wasm(name: &str) -> PathBuf {
    root().join("target/wasm32-wasip2/release").join(format!("{name}.wasm"))
}

/// Builds the guests only if they are missing, so CI (which builds them first) never nests cargo.
fn ensure_built() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if ["host_probe", "host_probe_baddep", "policy"].iter().all(|n| wasm(n).exists()) {
            return;
        }
        let status = std::process::Command::new(env!("CARGO"))
            .args([
                "build",
                "--release",
                "--target",
                "wasm32-wasip2",
                "-p",
                "host-probe",
                "-p",
                "host-probe-baddep",
                "-p",
                "policy",
            ])
            .current_dir(root())
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building test guests failed");
    });
}

/// Every store in the state directory (Spin resolves a relative SQLite path against the working
/// directory, a relative key-value path against this file's directory).
fn runtime_config(state: &Path) -> String {
    let state = state.display();
    format!(
        r#"
[key_value_store.allowed]
type = "spin"
path = "{state}/allowed.db"
[key_value_store.other]
type = "spin"
path = "{state}/other.db"
[sqlite_database.db]
type = "spin"
path = "{state}/db.db"
[sqlite_database.otherdb]
type = "spin"
path = "{state}/otherdb.db"
"#
    )
}

struct Fixture {
    app: App,
    state: tempfile::TempDir,
}

fn options(manifest: PathBuf, state: &Path, env: &[(&str, &str)]) -> LoadOptions {
    let runtime = state.join("runtime-config.toml");
    if !runtime.exists() {
        std::fs::write(&runtime, runtime_config(state)).expect("write runtime config");
    }
    LoadOptions {
        manifest,
        runtime_config: Some(runtime),
        state_dir: state.join(".spin"),
        env: env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect::<HashMap<_, _>>(),
    }
}

fn fixture_manifest() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/spin.toml")
}

fn load(env: &[(&str, &str)]) -> Fixture {
    load_with(env, Limits::default())
}

fn load_with(env: &[(&str, &str)], limits: Limits) -> Fixture {
    ensure_built();
    let state = tempfile::tempdir().expect("tempdir");
    let app = App::load_with_limits(&options(fixture_manifest(), state.path(), env), limits).expect("fixture loads");
    Fixture { app, state }
}

fn default_env() -> Vec<(&'static str, &'static str)> {
    vec![("SPIN_VARIABLE_TOKEN", "s3cret")]
}

async fn send(app: &App, method: &str, path: &str, body: &str) -> (u16, String) {
    let req = http::Request::builder().method(method).uri(path).body(Bytes::from(body.to_owned())).expect("request");
    let res = app
        .handle(req)
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e:#}\nguest output: {:#?}", app.guest_output()));
    (res.status().as_u16(), String::from_utf8_lossy(res.body()).into_owned())
}

async fn get(app: &App, path: &str) -> (u16, String) {
    send(app, "GET", path, "").await
}

#[tokio::test]
async fn routes_exact_before_wildcard_and_longest_prefix_first() {
    let f = load(&default_env());
    assert_eq!(get(&f.app, "/api/exact").await, (200, "exact".into()));
    assert_eq!(get(&f.app, "/api/").await, (200, "api".into()));
    assert_eq!(get(&f.app, "/api/hello").await, (200, "hello".into()));
    assert_eq!(get(&f.app, "/").await, (200, "probe".into()));
    assert_eq!(get(&f.app, "/apixyz/hello").await.1, "no such probe");
}

#[tokio::test]
async fn private_component_is_unreachable_from_outside_but_reachable_by_chaining() {
    let f = load(&default_env());
    // No public route leads to `hidden`: the catch-all probe answers instead.
    assert_eq!(get(&f.app, "/hidden").await.1, "no such probe");
    assert_eq!(get(&f.app, "/call?url=http://hidden.spin.internal/").await, (200, "200 hidden".into()));
    assert_eq!(get(&f.app, "/call?url=http://hidden.spin.internal/hello").await, (200, "200 hello".into()));
}

#[tokio::test]
async fn outbound_requests_outside_allowed_hosts_are_denied() {
    let f = load(&default_env());
    let (status, body) = get(&f.app, "/call?url=http://example.com/").await;
    assert_eq!(status, 502);
    assert!(body.contains("HttpRequestDenied"), "{body}");
    // `api` may not chain to anything, not even a component of the same app.
    let (status, body) = get(&f.app, "/api/call?url=http://hidden.spin.internal/hello").await;
    assert_eq!(status, 502);
    assert!(body.contains("HttpRequestDenied"), "{body}");
}

#[tokio::test]
async fn sets_spin_request_headers_and_strips_client_supplied_ones() {
    let f = load(&default_env());
    let req = http::Request::builder()
        .uri("/api/headers/x?q=1")
        .header("host", "example.test")
        .header("spin-client-addr", "6.6.6.6:1")
        .body(Bytes::new())
        .expect("request");
    let res = f.app.handle(req).await.expect("handled");
    let headers: serde_json::Value = serde_json::from_slice(res.body()).expect("json");
    assert_eq!(headers["spin-full-url"], "http://example.test/api/headers/x?q=1");
    assert_eq!(headers["spin-path-info"], "/headers/x");
    assert_eq!(headers["spin-matched-route"], "/api/...");
    assert_eq!(headers["spin-component-route"], "/api");
    assert_eq!(headers["spin-base-path"], "/");
    assert_eq!(headers["spin-client-addr"], "127.0.0.1:0");
}

#[tokio::test]
async fn key_value_persists_and_labels_are_checked() {
    let f = load(&default_env());
    assert_eq!(send(&f.app, "PUT", "/kv/allowed/k", "v1").await, (200, "stored".into()));
    assert_eq!(get(&f.app, "/kv/allowed/k").await, (200, "v1".into()));
    assert_eq!(get(&f.app, "/kv/allowed/missing").await, (404, "absent".into()));
    // Declared in the runtime config, but not granted to this component.
    assert_eq!(get(&f.app, "/kv/other/k").await, (500, "open: Error::AccessDenied".into()));
    assert_eq!(get(&f.app, "/kv/default/k").await, (500, "open: Error::AccessDenied".into()));
    assert_eq!(get(&f.app, "/api/kv/allowed/k").await, (500, "open: Error::AccessDenied".into()));
}

#[tokio::test]
async fn data_survives_reloading_the_app() {
    ensure_built();
    let state = tempfile::tempdir().expect("tempdir");
    let env = default_env();
    let first = App::load(&options(fixture_manifest(), state.path(), &env)).expect("load");
    assert_eq!(send(&first, "PUT", "/kv/allowed/k", "kept").await.0, 200);
    assert_eq!(send(&first, "POST", "/sql/db", "CREATE TABLE t (x INTEGER)").await.0, 200);
    assert_eq!(send(&first, "POST", "/sql/db", "INSERT INTO t VALUES (42)").await.0, 200);
    drop(first);
    let second = App::load(&options(fixture_manifest(), state.path(), &env)).expect("reload");
    assert_eq!(get(&second, "/kv/allowed/k").await, (200, "kept".into()));
    assert_eq!(send(&second, "POST", "/sql/db", "SELECT x FROM t").await, (200, "[Value::Integer(42)]".into()));
}

#[tokio::test]
async fn sqlite_labels_are_checked_and_errors_reach_the_guest() {
    let f = load(&default_env());
    assert_eq!(send(&f.app, "POST", "/sql/otherdb", "SELECT 1").await, (500, "open: Error::AccessDenied".into()));
    let (status, body) = send(&f.app, "POST", "/sql/db", "SELEKT nonsense").await;
    assert_eq!(status, 500);
    assert!(body.starts_with("execute: Error::Io("), "{body}");
}

#[tokio::test]
async fn variables_resolve_defaults_overrides_and_refuse_undeclared_names() {
    let f = load(&default_env());
    assert_eq!(get(&f.app, "/var/greeting").await, (200, "hi, world".into()));
    assert_eq!(get(&f.app, "/var/token").await, (200, "s3cret".into()));
    // Spin's words, as a guest logging them would show.
    let undefined = r#"Error::Undefined("no variable for \"probe\".\"undeclared\"")"#;
    assert_eq!(get(&f.app, "/var/undeclared").await, (500, undefined.into()));
    let invalid = r#"Error::InvalidName("\"Bad-Name\": invalid character 'B'. Variable names may contain only lower-case letters, numbers, and underscores.")"#;
    assert_eq!(get(&f.app, "/var/Bad-Name").await, (500, invalid.into()));
    let overridden = load(&[("SPIN_VARIABLE_TOKEN", "t"), ("SPIN_VARIABLE_GREETING", "hello")]);
    assert_eq!(get(&overridden.app, "/var/greeting").await, (200, "hello, world".into()));
}

#[tokio::test]
async fn each_request_gets_a_fresh_instance() {
    let f = load(&default_env());
    for _ in 0..3 {
        assert_eq!(get(&f.app, "/count").await, (200, "1".into()));
    }
}

#[tokio::test]
async fn composes_the_policy_dependency_into_the_component() {
    let f = load(&default_env());
    let (status, body) = get(&f.app, "/authz").await;
    assert_eq!(status, 200);
    assert!(body.starts_with("true admin_audit "), "{body}");
}

fn write_manifest(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("spin.toml");
    let probe = wasm("host_probe");
    let manifest = format!(
        "spin_manifest_version = 2\n[application]\nname = \"t\"\n[[trigger.http]]\nroute = \"/...\"\ncomponent = \"c\"\n[component.c]\nsource = \"{}\"\n{body}",
        probe.display()
    );
    std::fs::write(&path, manifest).expect("write manifest");
    path
}

fn load_error(body: &str, env: &[(&str, &str)]) -> String {
    ensure_built();
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = write_manifest(dir.path(), body);
    match App::load(&options(manifest, dir.path(), env)) {
        Ok(_) => panic!("expected a load error for {body}"),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn refuses_a_dependency_that_imports_a_store() {
    let body = format!(
        "[component.c.dependencies]\n\"health:platform/authorizer@0.1.0\" = {{ path = \"{}\" }}\n",
        wasm("host_probe_baddep").display()
    );
    let err = load_error(&body, &[]);
    assert!(err.contains("fermyon:spin/key-value") && err.contains("may not import"), "{err}");
}

#[test]
fn refuses_unknown_store_labels_and_missing_required_variables() {
    let err = load_error("key_value_stores = [\"nope\"]\n", &[]);
    assert!(err.contains("unknown key_value_stores label \"nope\" for component \"c\""), "{err}");
    let err = load_error("sqlite_databases = [\"nodb\"]\n", &[]);
    assert!(err.contains("unknown sqlite_databases label \"nodb\""), "{err}");
    ensure_built();
    let state = tempfile::tempdir().expect("tempdir");
    let err = App::load(&options(fixture_manifest(), state.path(), &[])).err().expect("required variable missing");
    assert!(format!("{err:#}").contains("required variable \"token\""), "{err:#}");
}

#[test]
fn refuses_a_missing_dependency_file() {
    let err = load_error(
        "[component.c.dependencies]\n\"health:platform/authorizer@0.1.0\" = { path = \"/nonexistent/policy.wasm\" }\n",
        &[],
    );
    assert!(err.contains("/nonexistent/policy.wasm"), "{err}");
}

#[tokio::test]
async fn a_connection_left_in_a_transaction_is_never_reused() {
    let f = load(&default_env());
    assert_eq!(send(&f.app, "POST", "/sql/db", "BEGIN").await.0, 200);
    // Were the guest's open transaction handed on, this COMMIT would succeed.
    let (status, body) = send(&f.app, "POST", "/sql/db", "COMMIT").await;
    assert_eq!(status, 500);
    assert!(body.contains("no transaction is active"), "{body}");
}

// --- Behaving as Spin 4.0.2 does (issue 13) ---

fn sql_value(text: &str) -> String {
    format!("[Value::Text(\"{text}\")]")
}

#[tokio::test]
async fn attaching_another_database_file_is_denied_as_spin_denies_it() {
    let f = load(&default_env());
    // `probe` is granted `db`, not `otherdb`: ATTACH must not open `otherdb`'s file anyway.
    let other = f.state.path().join("otherdb.db");
    rusqlite::Connection::open(&other).unwrap().execute_batch("CREATE TABLE secret (x)").unwrap();
    let attach = format!("ATTACH '{}' AS o", other.display());
    assert_eq!(send(&f.app, "POST", "/sql/db", &attach).await, (500, "execute: Error::Io(\"not authorized\")".into()));
    let uri = "ATTACH 'file:x?mode=memory' AS u";
    assert_eq!(send(&f.app, "POST", "/sql/db", uri).await, (500, "execute: Error::Io(\"not authorized\")".into()));
    // Spin's authorizer lets a temporary or in-memory database through.
    assert_eq!(send(&f.app, "POST", "/sql/db", "ATTACH ':memory:' AS m").await, (200, String::new()));
    assert_eq!(send(&f.app, "POST", "/sql/db", "ATTACH '' AS t").await, (200, String::new()));
}

#[tokio::test]
async fn attaching_is_allowed_where_the_runtime_config_says_allow_attach_file() {
    ensure_built();
    let state = tempfile::tempdir().expect("tempdir");
    let other = state.path().join("otherdb.db");
    rusqlite::Connection::open(&other).unwrap().execute_batch("CREATE TABLE secret (x)").unwrap();
    let config = runtime_config(state.path()).replace(
        &format!("path = \"{}/db.db\"", state.path().display()),
        &format!("path = \"{}/db.db\"\nallow_attach_file = true", state.path().display()),
    );
    std::fs::write(state.path().join("runtime-config.toml"), config).unwrap();
    let app = App::load(&options(fixture_manifest(), state.path(), &default_env())).expect("load");
    let attach = format!("ATTACH '{}' AS o", other.display());
    assert_eq!(send(&app, "POST", "/sql/db", &attach).await, (200, String::new()));
}

#[tokio::test]
async fn databases_keep_sqlites_journal_synchronous_and_rusqlites_busy_timeout() {
    let f = load(&default_env());
    assert_eq!(send(&f.app, "POST", "/sql/db", "PRAGMA journal_mode").await, (200, sql_value("delete")));
    assert_eq!(send(&f.app, "POST", "/sql/db", "PRAGMA synchronous").await, (200, "[Value::Integer(2)]".into()));
    assert_eq!(send(&f.app, "POST", "/sql/db", "PRAGMA busy_timeout").await, (200, "[Value::Integer(5000)]".into()));
    // An application may choose WAL itself, through a statement Spin allows.
    assert_eq!(send(&f.app, "POST", "/sql/db", "PRAGMA journal_mode=WAL").await, (200, sql_value("wal")));
    // Key-value files are Spin's too: rollback journal, `spin_key_value(store, key, value)`.
    assert_eq!(send(&f.app, "PUT", "/kv/allowed/k", "v").await.0, 200);
    let kv = rusqlite::Connection::open(f.state.path().join("allowed.db")).unwrap();
    let mode: String = kv.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "delete");
    let row: (String, String, Vec<u8>) = kv
        .query_row("SELECT store, key, value FROM spin_key_value", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap();
    assert_eq!(row, ("allowed".into(), "k".into(), b"v".to_vec()));
}

#[tokio::test]
async fn every_open_is_a_new_connection_never_one_kept_from_another_request() {
    let f = load(&default_env());
    // Two opens in one instance: the second does not see the first's temporary table.
    let two = "CREATE TEMP TABLE mine (x)\n---\nSELECT name FROM sqlite_temp_master";
    assert_eq!(send(&f.app, "POST", "/sql2/db", two).await, (200, String::new()));
    // Nor does a later request: connections are closed, not pooled.
    assert_eq!(send(&f.app, "POST", "/sql/db", "CREATE TEMP TABLE leak (x)").await.0, 200);
    assert_eq!(send(&f.app, "POST", "/sql/db", "SELECT name FROM sqlite_temp_master").await, (200, String::new()));
}

#[tokio::test]
async fn open_connections_are_capped_per_instance_and_stores_are_not_as_in_spin() {
    let f = load(&default_env());
    assert_eq!(get(&f.app, "/open-many/sql/db/256").await, (200, "opened 256".into()));
    assert_eq!(
        get(&f.app, "/open-many/sql/db/257").await,
        (500, "open 257: Error::Io(\"too many connections opened\")".into())
    );
    // Spin's key-value store table has a capacity of u32::MAX.
    assert_eq!(get(&f.app, "/open-many/kv/allowed/300").await, (200, "opened 300".into()));
}

/// Holds an exclusive lock on a database file, so the host's statements on it wait in SQLite's
/// busy handler (up to rusqlite's 5 s) until [`Lock::release`].
struct Lock(rusqlite::Connection);

impl Lock {
    fn take(path: &Path) -> Self {
        let db = rusqlite::Connection::open(path).expect("open the file to lock");
        db.execute_batch("CREATE TABLE IF NOT EXISTS t (x INTEGER); BEGIN EXCLUSIVE;").expect("lock");
        Self(db)
    }

    fn release(self) {
        self.0.execute_batch("COMMIT").expect("unlock");
    }
}

fn spawn_send(
    app: &App,
    method: &'static str,
    path: &'static str,
    body: &'static str,
) -> tokio::task::JoinHandle<(u16, String)> {
    let app = app.clone();
    tokio::spawn(async move { send(&app, method, path, body).await })
}

/// On the current-thread runtime (one worker, as in most in-process tests) a statement waiting
/// for a lock must leave the worker free for other requests.
async fn a_wait_for_a_lock_leaves_the_worker_free(f: &Fixture, lock: Lock, method: &'static str, path: &'static str) {
    let waiting = spawn_send(&f.app, method, path, "INSERT INTO t VALUES (1)");
    tokio::time::sleep(Duration::from_millis(500)).await; // it reaches the lock and waits
    assert_eq!(get(&f.app, "/hello").await, (200, "hello".into()));
    assert!(!waiting.is_finished(), "the waiting request is still waiting for the lock");
    lock.release();
    assert_eq!(waiting.await.expect("the waiting request ends").0, 200);
}

#[tokio::test]
async fn a_sqlite_statement_waiting_for_a_lock_runs_off_the_async_worker() {
    let f = load(&default_env());
    assert_eq!(send(&f.app, "POST", "/sql/db", "CREATE TABLE t (x INTEGER)").await.0, 200);
    let lock = Lock::take(&f.state.path().join("db.db"));
    a_wait_for_a_lock_leaves_the_worker_free(&f, lock, "POST", "/sql/db").await;
}

#[tokio::test]
async fn a_key_value_call_waiting_for_a_lock_runs_off_the_async_worker() {
    let f = load(&default_env());
    let lock = Lock::take(&f.state.path().join("allowed.db"));
    a_wait_for_a_lock_leaves_the_worker_free(&f, lock, "PUT", "/kv/allowed/k").await;
}

#[tokio::test]
async fn without_a_request_timeout_a_guest_runs_for_many_epoch_ticks_as_under_spin() {
    let f = load(&default_env());
    assert_eq!(get(&f.app, "/busy/300").await, (200, "done".into()));
}

#[tokio::test]
async fn a_request_timeout_stops_a_guest_that_never_returns() {
    let limits = Limits { request_timeout: Some(Duration::from_millis(300)), ..Limits::default() };
    let f = load_with(&default_env(), limits);
    let started = std::time::Instant::now();
    let req = http::Request::builder().uri("/loop").body(Bytes::new()).unwrap();
    let err = tokio::time::timeout(Duration::from_secs(20), f.app.handle(req))
        .await
        .expect("the looping guest is stopped")
        .expect_err("a request past its deadline fails");
    assert!(format!("{err:#}").contains("request timeout of 300ms"), "{err:#}");
    assert!(started.elapsed() < Duration::from_secs(10), "stopped after {:?}", started.elapsed());
    // Requests within the deadline are unaffected.
    assert_eq!(get(&f.app, "/busy/50").await, (200, "done".into()));
}

#[tokio::test]
async fn max_concurrent_requests_makes_later_requests_wait_as_wasmtime_serve_does() {
    let limits = Limits { max_concurrent_requests: Some(1), ..Limits::default() };
    let f = load_with(&default_env(), limits);
    assert_eq!(send(&f.app, "POST", "/sql/db", "CREATE TABLE t (x INTEGER)").await.0, 200);
    let lock = Lock::take(&f.state.path().join("db.db"));
    let first = spawn_send(&f.app, "POST", "/sql/db", "INSERT INTO t VALUES (1)");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = spawn_send(&f.app, "GET", "/hello", "");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!second.is_finished(), "the second request waits for the first");
    lock.release();
    assert_eq!(first.await.unwrap().0, 200);
    assert_eq!(second.await.unwrap(), (200, "hello".into()));
}

#[tokio::test]
async fn a_request_finding_the_instance_pool_full_fails_as_under_spin() {
    // Spin sizes every pool total from SPIN_MAX_INSTANCE_COUNT; the probe, composed with its
    // policy dependency, has two linear memories, so a pool of 2 holds one instance.
    let limits = Limits { max_instances: 2, ..Limits::default() };
    let f = load_with(&default_env(), limits);
    assert_eq!(send(&f.app, "POST", "/sql/db", "CREATE TABLE t (x INTEGER)").await.0, 200);
    let lock = Lock::take(&f.state.path().join("db.db"));
    let first = spawn_send(&f.app, "POST", "/sql/db", "INSERT INTO t VALUES (1)");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let req = http::Request::builder().uri("/hello").body(Bytes::new()).unwrap();
    let err = f.app.handle(req).await.expect_err("no room for a second instance");
    assert!(format!("{err:#}").contains("limit"), "{err:#}");
    lock.release();
    assert_eq!(first.await.unwrap().0, 200);
    assert_eq!(get(&f.app, "/hello").await, (200, "hello".into()));
}

async fn send_with_host(app: &App, host: &str, path: &str) -> anyhow::Result<(u16, String)> {
    let req = http::Request::builder().uri(path).header("host", host).body(Bytes::new()).expect("request");
    let res = app.handle(req).await?;
    Ok((res.status().as_u16(), String::from_utf8_lossy(res.body()).into_owned()))
}

#[tokio::test]
async fn a_service_chaining_host_from_outside_is_refused_as_spin_refuses_it() {
    let f = load(&default_env());
    for host in ["hidden.spin.internal", "probe.spin.internal:3000"] {
        let err = send_with_host(&f.app, host, "/hello").await.expect_err(host);
        assert_eq!(err.downcast_ref::<RequestRefused>(), Some(&RequestRefused("no 'Host' header present in request")));
    }
    // Spin's rule is exact: one label, then `spin.internal`, case-sensitive.
    for host in ["a.b.spin.internal", "HIDDEN.SPIN.INTERNAL", "spin.internal", "hidden.spin.internal."] {
        assert_eq!(send_with_host(&f.app, host, "/hello").await.unwrap(), (200, "hello".into()), "{host}");
    }
    // Spin's own endpoints answer before the host is looked at.
    let health = send_with_host(&f.app, "hidden.spin.internal", "/.well-known/spin/health").await.unwrap();
    assert_eq!(health, (200, "OK".into()));
}

#[tokio::test]
async fn spins_well_known_endpoints_are_answered_by_the_host() {
    let f = load(&default_env());
    assert_eq!(get(&f.app, "/.well-known/spin/health").await, (200, "OK".into()));
    assert_eq!(get(&f.app, "/.well-known/spin/info").await, (200, "{\n  \"name\": \"host-fixture\"\n}".into()));
    assert_eq!(get(&f.app, "/.well-known/spin/other").await, (404, String::new()));
}

/// Sends raw bytes to `addr` and returns everything the server writes back before closing.
async fn raw_exchange(addr: std::net::SocketAddr, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut answer))
        .await
        .expect("the server answers or closes")
        .expect("read");
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn the_listener_closes_the_connection_without_an_answer_where_spin_does() {
    let f = load(&default_env());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(health_host::serve(f.app.clone(), listener));
    let ok = raw_exchange(addr, "GET /hello HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await;
    assert!(ok.starts_with("HTTP/1.1 200 OK") && ok.ends_with("hello"), "{ok}");
    for refused in [
        "GET /hello HTTP/1.1\r\nHost: hidden.spin.internal\r\nConnection: close\r\n\r\n",
        "GET /hello HTTP/1.1\r\nConnection: close\r\n\r\n",
        "GET /hello HTTP/1.0\r\n\r\n",
        "GET http://a.example/hello HTTP/1.1\r\nHost: b.example\r\nConnection: close\r\n\r\n",
    ] {
        assert_eq!(raw_exchange(addr, refused).await, "", "{refused:?}");
    }
    // A request that names its authority in the URI is served even without `Host`.
    let absolute =
        "GET http://hidden.spin.internal/hello HTTP/1.1\r\nHost: hidden.spin.internal\r\nConnection: close\r\n\r\n";
    assert!(raw_exchange(addr, absolute).await.ends_with("hello"));
}

/// Spin's HTTP server refuses a request head larger than hyper's default buffer with 431, and
/// Spin fails a request carrying a header value that is not UTF-8 with an empty 500 (its
/// `prepare_request_headers` makes a `str` of every value); neither reaches a component.
#[tokio::test]
async fn oversized_heads_and_non_utf8_header_values_are_refused_before_any_component_as_spin_does() {
    let f = load(&default_env());
    let send = |name: &'static str, value: http::HeaderValue| {
        let app = f.app.clone();
        async move {
            let req =
                http::Request::builder().uri("/api/hello").header(name, value).body(Bytes::new()).expect("request");
            let res = app.handle(req).await.expect("answered");
            (res.status().as_u16(), String::from_utf8_lossy(res.body()).into_owned())
        }
    };
    let big = http::HeaderValue::from_str(&"A".repeat(1 << 20)).expect("value");
    assert_eq!(send("authorization", big).await, (431, String::new()));
    let just_fits = http::HeaderValue::from_str(&"A".repeat(300 * 1024)).expect("value");
    assert_eq!(send("x-large", just_fits).await, (200, "hello".into()));
    let not_utf8 = http::HeaderValue::from_bytes(b"Bearer abc\xff\xfe").expect("obs-text is a valid value");
    assert_eq!(send("authorization", not_utf8).await, (500, String::new()));
}
