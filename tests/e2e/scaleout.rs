//! Scale-out on shared stores: two real `spin up` instances of the application on one machine,
//! sharing one Redis (the three key-value stores, as `deploy/` configures them) and the same
//! SQLite files. Whatever one instance spends, revokes, rotates or appends, the other sees.
//!
//! Real Spin only (the project's host has no Redis backend): in the host pass of
//! `cargo xtask test`, and where Spin or `redis-server` is missing, each test says in one line
//! what it did not run.

use std::sync::OnceLock;

use health_e2e::runtime::{RedisServer, SpinProcess, spin_binary};
use health_e2e::{ALICE, OPERATOR_TOKEN, Reply, Runtime, Target, root, secrets, send_from};
use health_host::{DEFAULT_CLIENT, LoadOptions};
use serde_json::{Value, json};

const JSON: (&str, &str) = ("content-type", "application/json");
const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");
const INSURER_BASIC: &str = "Basic YWNtZS1oZWFsdGg6YWNtZS1oZWFsdGgtZGVtby1zZWNyZXQtMjAyNg=="; // acme-health:acme-health-demo-secret-2026

/// Two Spin instances over one Redis and one set of SQLite files.
struct Pair {
    a: Target,
    b: Target,
    _redis: RedisServer,
    _state: tempfile::TempDir,
}

/// The shared pair, or `None` (with the reason printed) where it cannot run.
fn pair(test: &str) -> Option<&'static Pair> {
    static PAIR: OnceLock<Option<Pair>> = OnceLock::new();
    let why_not = if Runtime::selected() != Runtime::Spin {
        Some("runs in the real-Spin pass (HEALTH_E2E_RUNTIME=spin)")
    } else if spin_binary().is_none() {
        Some("no Spin binary")
    } else if RedisServer::binary().is_none() {
        Some("no redis-server on PATH")
    } else {
        None
    };
    if let Some(why_not) = why_not {
        let required = std::env::var_os(health_e2e::runtime::REQUIRE_ALL_ENV).is_some();
        assert!(!required || Runtime::selected() != Runtime::Spin, "scaleout::{test} cannot run: {why_not}");
        println!("scaleout::{test}: NOT RUN here: {why_not}");
        return None;
    }
    PAIR.get_or_init(|| Some(start_pair(&[]).expect("two Spin instances start"))).as_ref()
}

/// A pair of its own with `variables` set on both instances (e.g. a low rate limit).
fn start_pair(variables: &[(&str, &str)]) -> anyhow::Result<Pair> {
    let redis = RedisServer::start()?;
    let state = tempfile::tempdir()?;
    let dir = state.path().display().to_string();
    // Each key-value label in a Redis database of its own: Spin's Redis store does not
    // prefix keys with the label.
    let runtime_config = format!(
        r#"
[key_value_store.public-keys]
type = "redis"
url = "{public}"

[key_value_store.private-keys]
type = "redis"
url = "{private}"

[key_value_store.revocations]
type = "redis"
url = "{revocations}"

[sqlite_database.audit]
type = "spin"
path = "{dir}/audit.db"

[sqlite_database.identity]
type = "spin"
path = "{dir}/identity.db"

[sqlite_database.records]
type = "spin"
path = "{dir}/records.db"
"#,
        public = redis.url(0),
        private = redis.url(1),
        revocations = redis.url(2),
    );
    let runtime_path = state.path().join("runtime-config.toml");
    std::fs::write(&runtime_path, runtime_config)?;
    let instance = |name: &str| -> anyhow::Result<Target> {
        let options = LoadOptions {
            manifest: root().join("spin.toml"),
            runtime_config: Some(runtime_path.clone()),
            state_dir: state.path().join(name),
            env: secrets(health_e2e::MASTER_KEY)
                .into_iter()
                .chain(variables.iter().map(|(k, v)| (format!("SPIN_VARIABLE_{}", k.to_uppercase()), (*v).to_owned())))
                .collect(),
        };
        Ok(Target::Spin(std::sync::Arc::new(SpinProcess::start(&options)?)))
    };
    let a = instance("a")?;
    let b = instance("b")?;
    Ok(Pair { a, b, _redis: redis, _state: state })
}

async fn send(app: &Target, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    send_from(app, DEFAULT_CLIENT, method, path, headers, body).await
}

async fn login(app: &Target, (username, password): (&str, &str)) -> Value {
    let body = json!({ "tenant": "demo-hospital", "username": username, "password": password }).to_string();
    let reply = send(app, "POST", "/auth/login", &[JSON], &body).await;
    assert_eq!(reply.status, 200, "login {username}: {}", reply.body);
    reply.json()
}

async fn read_record(app: &Target, token: &str) -> u16 {
    let auth = format!("Bearer {token}");
    send(app, "GET", "/api/patients/p-1001/records", &[("authorization", &auth)], "").await.status
}

async fn operator(app: &Target, method: &str, path: &str, body: Option<Value>) -> Reply {
    let auth = format!("Bearer {OPERATOR_TOKEN}");
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    send(app, method, path, &[("authorization", &auth), JSON], &body).await
}

fn kid_of(token: &str) -> String {
    use base64::Engine;
    let header = token.split('.').next().expect("header");
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header).expect("base64url");
    serde_json::from_slice::<Value>(&header).expect("json")["kid"].as_str().expect("kid").to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_alternate_between_the_instances() {
    let Some(pair) = pair("requests_alternate_between_the_instances") else { return };
    let from_a = login(&pair.a, ALICE).await["access_token"].as_str().expect("token").to_owned();
    let from_b = login(&pair.b, ALICE).await["access_token"].as_str().expect("token").to_owned();
    for round in 0..4 {
        let (first, second) = if round % 2 == 0 { (&pair.a, &pair.b) } else { (&pair.b, &pair.a) };
        assert_eq!(read_record(first, &from_a).await, 200);
        assert_eq!(read_record(second, &from_b).await, 200);
    }
    let jwks_a = send(&pair.a, "GET", "/jwk/demo-hospital", &[], "").await.json();
    let jwks_b = send(&pair.b, "GET", "/jwk/demo-hospital", &[], "").await.json();
    assert_eq!(jwks_a, jwks_b, "both instances publish the same key set");
}

#[tokio::test(flavor = "multi_thread")]
async fn one_insurer_token_used_64_times_over_both_instances_succeeds_once() {
    let Some(pair) = pair("one_insurer_token_used_64_times_over_both_instances_succeeds_once") else { return };
    let reply = send(
        &pair.a,
        "POST",
        "/auth/token",
        &[("authorization", INSURER_BASIC), FORM],
        "grant_type=client_credentials",
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let token = reply.json()["access_token"].as_str().expect("token").to_owned();
    let mut uses = tokio::task::JoinSet::new();
    for i in 0..64 {
        let app = if i % 2 == 0 { pair.a.clone() } else { pair.b.clone() };
        let auth = format!("Bearer {token}");
        uses.spawn(async move {
            send(&app, "GET", "/api/insurance/patients/p-1003/summary", &[("authorization", &auth)], "").await.status
        });
    }
    let statuses = uses.join_all().await;
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert_eq!(ok, 1, "exactly one use succeeds: {statuses:?}");
    assert!(statuses.iter().all(|s| matches!(s, 200 | 401)), "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn refresh_token_reuse_on_one_instance_revokes_the_family_on_the_other() {
    let Some(pair) = pair("refresh_token_reuse_on_one_instance_revokes_the_family_on_the_other") else { return };
    let first = login(&pair.a, ALICE).await["refresh_token"].as_str().expect("refresh").to_owned();
    let refresh = |app: &Target, token: &str| {
        let (app, body) = (app.clone(), format!("grant_type=refresh_token&refresh_token={token}"));
        async move { send(&app, "POST", "/auth/token", &[FORM], &body).await }
    };
    let rotated = refresh(&pair.a, &first).await;
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    let second = rotated.json()["refresh_token"].as_str().expect("refresh").to_owned();
    // The spent one presented again, on the other instance: reuse, the family is revoked.
    let reused = refresh(&pair.b, &first).await;
    assert_eq!(reused.status, 400, "{}", reused.body);
    let after = refresh(&pair.a, &second).await;
    assert_eq!(after.status, 400, "the family's newest refresh token is revoked too: {}", after.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_rotated_through_one_instance_is_served_and_honoured_by_the_other() {
    let Some(pair) = pair("a_key_rotated_through_one_instance_is_served_and_honoured_by_the_other") else { return };
    let before = login(&pair.b, ALICE).await["access_token"].as_str().expect("token").to_owned();
    let rotated =
        operator(&pair.a, "POST", "/admin/rotate-key", Some(json!({ "tenant_id": "demo-hospital", "use": "sig" })))
            .await;
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    let kid = rotated.json()["kid"].as_str().expect("kid").to_owned();
    let served = send(&pair.b, "GET", "/jwk/demo-hospital", &[], "").await.json();
    assert!(served["keys"].as_array().expect("keys").iter().any(|k| k["kid"] == kid.as_str()), "{served}");
    // B signs with the new key, A verifies it; the token from before still works on both.
    let after = login(&pair.b, ALICE).await["access_token"].as_str().expect("token").to_owned();
    assert_eq!(kid_of(&after), kid);
    assert_eq!(read_record(&pair.a, &after).await, 200);
    assert_eq!(read_record(&pair.a, &before).await, 200);
    assert_eq!(read_record(&pair.b, &before).await, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_audit_writes_from_both_instances_keep_every_chain_intact() {
    let Some(pair) = pair("concurrent_audit_writes_from_both_instances_keep_every_chain_intact") else { return };
    let created = operator(&pair.a, "POST", "/admin/tenants", Some(json!({ "tenant_id": "scaleout-hospital" }))).await;
    assert!(matches!(created.status, 201 | 409), "{}", created.body);
    let token = login(&pair.a, ALICE).await["access_token"].as_str().expect("token").to_owned();
    let mut writes = tokio::task::JoinSet::new();
    for i in 0..48 {
        let app = if i % 2 == 0 { pair.a.clone() } else { pair.b.clone() };
        let token = token.clone();
        writes.spawn(async move {
            if i % 3 == 0 {
                // An audited operator action in the other tenant.
                operator(&app, "GET", "/admin/keys/scaleout-hospital", None).await.status
            } else {
                read_record(&app, &token).await
            }
        });
    }
    let statuses = writes.join_all().await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    for tenant in ["demo-hospital", "scaleout-hospital"] {
        for app in [&pair.a, &pair.b] {
            let report = operator(app, "GET", &format!("/admin/audit/verify/{tenant}"), None).await;
            assert_eq!(report.status, 200, "{}", report.body);
            assert_eq!(report.json()["intact"], json!(true), "{tenant}: {}", report.body);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rate_limit_counts_the_requests_of_both_instances_together() {
    // Checks the shared pair's preconditions; this test starts a pair of its own, limited.
    if pair("a_rate_limit_counts_the_requests_of_both_instances_together").is_none() {
        return;
    }
    let pair = start_pair(&[("rate_limit_read", "4/3600")]).expect("two limited Spin instances start");
    while 3600 - health_e2e::unix_now().rem_euclid(3600) <= 20 {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let token = login(&pair.a, ALICE).await["access_token"].as_str().expect("token").to_owned();
    for app in [&pair.a, &pair.b, &pair.a, &pair.b] {
        assert_eq!(read_record(app, &token).await, 200);
    }
    // Four counted over two instances: the fifth is refused on either.
    assert_eq!(read_record(&pair.a, &token).await, 429);
    assert_eq!(read_record(&pair.b, &token).await, 429);
}
