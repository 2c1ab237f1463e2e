//! The restore drill (issue 18, item 2): `healthctl backup create` runs while clients log in,
//! read records and log out; the archive verifies; `restore` refuses without `--confirm`, then
//! restores into a fresh directory; a second platform starts on it (the runtime the suite runs
//! on, host or real Spin) and carries on: every tenant's audit chain intact, the stores' row
//! counts those of the snapshot, records readable, tokens issued before the backup (one signed
//! by a key rotated out since) still verifying, a token revoked before it still refused, and
//! new logins signed with the restored private keys.

use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use health_e2e::backup::{PASSPHRASE_ENV, healthctl};
use health_e2e::{ADMIN, ALICE, BOB, OPERATOR_TOKEN, TestApp, root, send_from};
use serde_json::{Value, json};

const PASSPHRASE: &str = "drill passphrase, test only";
const RECORDS: &str = "/api/patients/p-1001/records";
const SECOND_TENANT: &str = "drill-clinic";
const LOAD_TASKS: usize = 3;

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Runs `healthctl backup ARGS` with the passphrase in [`PASSPHRASE_ENV`].
async fn backup(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        let bin = healthctl().expect("healthctl builds");
        Command::new(bin).arg("backup").args(&args).env(PASSPHRASE_ENV, PASSPHRASE).output().expect("healthctl runs")
    })
    .await
    .expect("join")
}

fn succeeded(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "healthctl failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("healthctl prints JSON")
}

async fn call(app: &TestApp, method: &str, path: &str, token: &str, body: Value) -> (u16, Value) {
    let auth = bearer(token);
    let body = if body.is_null() { String::new() } else { body.to_string() };
    let reply = app.send(method, path, &[("content-type", "application/json"), ("authorization", &auth)], &body).await;
    (reply.status, serde_json::from_str(&reply.body).unwrap_or(Value::Null))
}

/// Rows per table of every store file in `dir`, as the manifest counts them.
fn rows_in(dir: &std::path::Path, name: &str) -> Value {
    let conn = rusqlite::Connection::open(dir.join(name)).expect("restored store opens");
    let mut stmt = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        .expect("tables");
    let tables: Vec<String> = stmt.query_map([], |r| r.get(0)).expect("tables").map(|t| t.expect("name")).collect();
    let mut rows = serde_json::Map::new();
    for table in tables {
        let n: i64 = conn.query_row(&format!("SELECT count(*) FROM \"{table}\""), [], |r| r.get(0)).expect("count");
        rows.insert(table, n.into());
    }
    Value::Object(rows)
}

/// One request of the load: when it was sent, when its answer came, its status.
type Served = (Instant, Instant, u16);

/// Clients at work until `stop`: log in, read the record, log out, each client always waiting
/// for an answer, so some request is in flight at every instant.
fn load(app: &TestApp, stop: Arc<AtomicBool>) -> Vec<tokio::task::JoinHandle<Vec<Served>>> {
    (0..LOAD_TASKS)
        .map(|_| {
            let target = app.app.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let json = [("content-type", "application/json")];
                let login = json!({ "tenant": "demo-hospital", "username": ALICE.0, "password": ALICE.1 }).to_string();
                while !stop.load(Ordering::Relaxed) {
                    let client = health_host::DEFAULT_CLIENT;
                    let sent = Instant::now();
                    let reply = send_from(&target, client, "POST", "/auth/login", &json, &login).await;
                    seen.push((sent, Instant::now(), reply.status));
                    let Some(token) = reply.json()["access_token"].as_str().map(str::to_owned) else { continue };
                    let auth = [("authorization", bearer(&token))];
                    let auth: Vec<(&str, &str)> = auth.iter().map(|(k, v)| (*k, v.as_str())).collect();
                    let sent = Instant::now();
                    let read = send_from(&target, client, "GET", RECORDS, &auth, "").await;
                    seen.push((sent, Instant::now(), read.status));
                    let sent = Instant::now();
                    let out = send_from(&target, client, "POST", "/auth/logout", &auth, "").await;
                    seen.push((sent, Instant::now(), out.status));
                }
                seen
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_taken_under_load_restores_into_a_platform_that_carries_on() {
    // Built (if need be) before anything is timed.
    tokio::task::spawn_blocking(healthctl).await.expect("join").expect("healthctl builds");
    let started = Instant::now();
    let app = TestApp::start(|_| {}).expect("app loads");
    let runtime = app.app.runtime();

    // Before the backup: a second tenant, tokens, a consent (a write to records), a key rotated
    // after Alice's token was signed, and Bob's token revoked by his logout.
    let (status, created) =
        call(&app, "POST", "/admin/tenants", OPERATOR_TOKEN, json!({ "tenant_id": SECOND_TENANT })).await;
    assert_eq!(status, 201, "{created}");
    let alice = app.token(ALICE).await;
    let admin = app.token(ADMIN).await;
    let bob = app.token(BOB).await;
    let expires = health_e2e::unix_now() + 86_400;
    let consent = json!({ "insurer": "acme-health", "expires_at": expires });
    let (status, body) = call(&app, "POST", "/api/patients/p-1001/consents", &alice, consent).await;
    assert_eq!(status, 201, "{body}");
    let rotate = json!({ "tenant_id": "demo-hospital", "use": "sig", "alg": "ES256" });
    let (status, rotated) = call(&app, "POST", "/admin/rotate-key", OPERATOR_TOKEN, rotate).await;
    assert_eq!(status, 200, "{rotated}");
    assert_eq!(app.send("POST", "/auth/logout", &[("authorization", &bearer(&bob))], "").await.status, 204);
    assert_eq!(app.get_with(RECORDS, &bob).await.status, 401);
    let record = app.get_with(RECORDS, &alice).await;
    assert_eq!(record.status, 200, "{}", record.body);
    let record = record.json();

    // The backup, while clients work.
    let dir = tempfile::tempdir().expect("temporary directory");
    let archive = dir.path().join("drill.hbk");
    let stop = Arc::new(AtomicBool::new(false));
    let workers = load(&app, stop.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let config = app.state.path().join("runtime-config.toml");
    let create = [
        "create",
        "--runtime-config-file",
        &config.display().to_string(),
        "--manifest",
        &root().join("spin.toml").display().to_string(),
        "--out",
        &archive.display().to_string(),
        "--passphrase-env",
        PASSPHRASE_ENV,
    ]
    .map(str::to_owned);
    let backup_started = Instant::now();
    let created = succeeded(&backup(create.to_vec()).await);
    let backup_ended = Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut replies = Vec::new();
    for worker in workers {
        replies.extend(worker.await.expect("load task"));
    }
    // Requests in flight at some point while healthctl ran.
    let during = replies.iter().filter(|(sent, done, _)| *sent < backup_ended && *done > backup_started).count();
    assert!(during > 0, "no request was served while the backup ran");
    let failed: Vec<u16> = replies.iter().map(|(_, _, s)| *s).filter(|s| !matches!(s, 200 | 204)).collect();
    assert!(failed.is_empty(), "requests failed while the backup ran: {failed:?}");
    println!(
        "backup::drill on {}: backup {:.0} ms (snapshot window {} ms) with {} requests served meanwhile",
        runtime.name(),
        (backup_ended - backup_started).as_secs_f64() * 1e3,
        created["snapshot_window_ms"],
        during
    );
    let manifest_files = created["files"].as_array().expect("files").clone();
    let labels: Vec<&str> = manifest_files
        .iter()
        .flat_map(|f| f["stores"].as_array().expect("stores"))
        .filter_map(|s| s["label"].as_str())
        .collect();
    assert_eq!(labels, ["audit", "identity", "records", "revocations", "public-keys", "private-keys"]);

    // Verified without restoring; restore refuses without --confirm, then restores.
    let verified = succeeded(
        &backup(vec!["verify".into(), archive.display().to_string(), "--passphrase-env".into(), PASSPHRASE_ENV.into()])
            .await,
    );
    assert_eq!(verified["verified"], true);
    let into = dir.path().join("restored");
    let restore = |confirm: bool| {
        let mut args =
            vec!["restore".to_owned(), archive.display().to_string(), "--into".into(), into.display().to_string()];
        args.extend(["--passphrase-env".to_owned(), PASSPHRASE_ENV.to_owned()]);
        args.extend(confirm.then(|| "--confirm".to_owned()));
        args
    };
    let refused = backup(restore(false)).await;
    assert_eq!(refused.status.code(), Some(2), "{}", String::from_utf8_lossy(&refused.stderr));
    assert!(!into.exists(), "restore without --confirm wrote {}", into.display());
    let restore_started = Instant::now();
    let restored = succeeded(&backup(restore(true)).await);
    let restore_ms = restore_started.elapsed().as_secs_f64() * 1e3;

    // The restored files hold what the snapshot held, table by table.
    for file in &manifest_files {
        let name = file["name"].as_str().expect("name");
        let mut expected = file["rows"].clone();
        expected.as_object_mut().expect("rows").retain(|table, _| !table.contains(':'));
        assert_eq!(rows_in(&into, name), expected, "{name}");
    }
    let audit = rusqlite::Connection::open(into.join("audit.db")).expect("restored audit opens");
    let mut stmt = audit.prepare("SELECT tenant_id, count(*) FROM audit_events GROUP BY tenant_id").expect("query");
    let chains: Vec<(String, i64)> =
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).expect("chains").map(|c| c.expect("row")).collect();
    drop(stmt);
    drop(audit);
    assert!(
        chains.iter().any(|(t, _)| t == SECOND_TENANT) && chains.iter().any(|(t, _)| t == "demo-hospital"),
        "{chains:?}"
    );

    // A second platform on the restored directory carries on.
    let start_started = Instant::now();
    let runtime_config = restored["runtime_config"].as_str().expect("runtime config");
    let second = TestApp::start_on_stores(std::path::Path::new(runtime_config), runtime).expect("restored app loads");
    let start_ms = start_started.elapsed().as_secs_f64() * 1e3;
    for (tenant, events) in &chains {
        let (status, report) =
            call(&second, "GET", &format!("/admin/audit/verify/{tenant}"), OPERATOR_TOKEN, Value::Null).await;
        assert_eq!(status, 200, "{tenant}: {report}");
        assert_eq!(report["intact"], true, "{tenant}: {report}");
        assert!(report["events"].as_i64().expect("events") >= *events, "{tenant}: {report}, snapshot had {events}");
    }
    // The admin's token from before the backup, at the gateway's own verification.
    let (status, report) = call(&second, "GET", "/api/admin/audit/verify", &admin, Value::Null).await;
    assert_eq!((status, &report["intact"]), (200, &json!(true)), "{report}");
    // Alice's token, signed by the key rotated out before the backup: records readable, the same.
    let read = second.get_with(RECORDS, &alice).await;
    assert_eq!(read.status, 200, "{}", read.body);
    assert_eq!(read.json(), record);
    let (status, export) = call(&second, "GET", "/api/patients/p-1001/export", &alice, Value::Null).await;
    assert_eq!(status, 200, "{export}");
    assert!(export["consents"].to_string().contains("acme-health"), "the consent is gone: {}", export["consents"]);
    let validated = second
        .send(
            "POST",
            "/api/auth/validate",
            &[("content-type", "application/json")],
            &json!({ "token": alice }).to_string(),
        )
        .await;
    assert_eq!(validated.json()["valid"], true, "{}", validated.body);
    // Bob's revoked token stays refused; a new login is signed by the restored active key.
    assert_eq!(second.get_with(RECORDS, &bob).await.status, 401);
    let fresh = second.token(ALICE).await;
    assert_eq!(second.get_with(RECORDS, &fresh).await.status, 200);
    let keys = second.send("GET", "/jwk/demo-hospital", &[], "").await.json();
    assert!(keys.to_string().contains(rotated["kid"].as_str().expect("kid")), "{keys}");

    println!(
        "backup::drill on {}: restore {restore_ms:.0} ms, restored platform started in {start_ms:.0} ms; whole drill {:.1} s",
        runtime.name(),
        started.elapsed().as_secs_f64()
    );
}
