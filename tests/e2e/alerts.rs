//! Alerts (issue 18, item 5), on one application with low thresholds: repeated failed logins,
//! a clinician reading many patients, break-glass, a one-time token replayed, a refresh token
//! reused, signatures that do not verify, and a broken audit chain each raise one alert; the
//! tenant admin lists and acknowledges them (nobody else may); `/metrics` counts them; and the
//! webhook, down at first, gets every alert once it is up, without a username, address or
//! patient in it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use health_e2e::{ACME, ADMIN, ALICE, BOB, DR_GREY, OPERATOR_TOKEN, TestApp};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const METRICS_TOKEN: &str = "alerts-metrics-token";

/// A webhook receiver on `port`: keeps every JSON body POSTed to it and answers 200.
async fn receiver(port: u16, received: Arc<Mutex<Vec<Value>>>) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("receiver binds");
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            let received = received.clone();
            tokio::spawn(async move {
                let mut bytes = Vec::new();
                let mut buf = [0u8; 4096];
                // Headers, then as much body as Content-Length says.
                let body = loop {
                    let Ok(n) = stream.read(&mut buf).await else { return };
                    if n == 0 {
                        return;
                    }
                    bytes.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&bytes).into_owned();
                    let Some((head, body)) = text.split_once("\r\n\r\n") else { continue };
                    let head = head.to_ascii_lowercase();
                    if head.contains("transfer-encoding: chunked") {
                        if let Some(decoded) = dechunk(body) {
                            break decoded;
                        }
                        continue;
                    }
                    let length = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().to_owned()))
                        .and_then(|v| v.parse::<usize>().ok())
                        .unwrap_or(0);
                    if body.len() >= length {
                        break body[..length].to_owned();
                    }
                };
                if let Ok(value) = serde_json::from_str(&body) {
                    received.lock().expect("received").push(value);
                }
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
            });
        }
    });
}

/// A chunked body once its last chunk has come, else `None`.
fn dechunk(mut body: &str) -> Option<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n")?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            return Some(out);
        }
        out.push_str(rest.get(..size)?);
        body = rest.get(size + 2..)?;
    }
}

fn json_headers(bearer: &str) -> Vec<(&'static str, String)> {
    vec![("authorization", format!("Bearer {bearer}")), ("content-type", "application/json".into())]
}

async fn send(
    app: &TestApp,
    method: &str,
    path: &str,
    headers: &[(&'static str, String)],
    body: &str,
) -> health_e2e::Reply {
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    app.send(method, path, &headers, body).await
}

async fn alerts(app: &TestApp, admin: &str, query: &str) -> Vec<Value> {
    let reply = app.get_with(&format!("/api/admin/alerts{query}"), admin).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()["alerts"].as_array().expect("alerts").clone()
}

fn find<'a>(alerts: &'a [Value], rule: &str) -> &'a Value {
    alerts.iter().find(|a| a["rule"] == rule).unwrap_or_else(|| panic!("no {rule} alert in {alerts:#?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn alerts_are_raised_listed_acknowledged_counted_and_delivered_after_the_receiver_comes_up() {
    let started = Instant::now();
    let port = health_e2e::runtime::free_port().expect("a free port");
    let (url, host) = (format!("http://127.0.0.1:{port}/hook"), format!("http://127.0.0.1:{port}"));
    let metrics_hash = health_core::sha256_hex(METRICS_TOKEN);
    let app = TestApp::start_with_variables(&[
        ("alerts", "failed_logins=3/300 patients_read=3/600 signature_failures=2/60 webhook_retry_secs=1"),
        ("alert_webhook_url", &url),
        ("alert_webhook_host", &host),
        ("metrics_token_hash", &metrics_hash),
    ])
    .expect("app loads");
    let admin = app.token(ADMIN).await;

    // Failed logins: three for bob from this address.
    for _ in 0..3 {
        assert_eq!(app.login((BOB.0, "wrong-password-1")).await.status, 401);
    }
    // Break-glass, then a clinician reading three different patients.
    let grey = app.token(DR_GREY).await;
    let reason = r#"{"reason":"Unconscious patient in the emergency department"}"#;
    let glass = send(&app, "POST", "/api/patients/p-1002/break-glass", &json_headers(&grey), reason).await;
    assert_eq!(glass.status, 201, "{}", glass.body);
    // The webhook is down: the gateway's requests so far tried to deliver and failed, and the
    // alerts wait for their retry (after 1 s, then 2 s, ...).
    let pending = alerts(&app, &admin, "").await;
    assert!(
        pending.iter().any(|a| a["delivery"] == "pending" && a["delivery_attempts"].as_i64() >= Some(1)),
        "{pending:#?}"
    );
    let received = Arc::new(Mutex::new(Vec::new()));
    receiver(port, received.clone()).await;
    for patient in ["p-1001", "p-1002", "p-1003"] {
        let read = app.get_with(&format!("/api/patients/{patient}/records"), &grey).await;
        assert_eq!(read.status, 200, "{patient}: {}", read.body);
    }
    // A one-time insurer token used twice.
    let insurer = app.client_token(ACME).await;
    assert_eq!(app.get_with("/api/insurance/patients/p-1003/summary", &insurer).await.status, 200);
    assert_eq!(app.get_with("/api/insurance/patients/p-1003/summary", &insurer).await.status, 401);
    // A refresh token presented again after it was rotated.
    let tokens = app.tokens(ALICE).await;
    let refresh = |token: String| {
        let app = &app;
        async move {
            let form = format!("grant_type=refresh_token&refresh_token={token}");
            app.send("POST", "/auth/token", &[("content-type", "application/x-www-form-urlencoded")], &form).await
        }
    };
    let first = tokens["refresh_token"].as_str().expect("refresh token").to_owned();
    assert_eq!(refresh(first.clone()).await.status, 200);
    assert_eq!(refresh(first).await.status, 400, "reused");
    // Signatures that do not verify: alice's token with another signature, twice.
    let alice = tokens["access_token"].as_str().expect("access token");
    let (signed, _) = alice.rsplit_once('.').expect("a JWS");
    let forged = format!("{signed}.{}", health_core::b64url([7u8; 256]));
    for _ in 0..2 {
        assert_eq!(app.get_with("/api/patients/p-1001/records", &forged).await.status, 401);
    }

    let listed = alerts(&app, &admin, "").await;
    let bob_alert = find(&listed, "failed_logins_user");
    assert_eq!((bob_alert["subject"].as_str(), bob_alert["count"].as_i64()), (Some("bob"), Some(3)), "{bob_alert}");
    assert!(find(&listed, "failed_logins_address")["count"].as_i64() >= Some(3));
    let scraping = find(&listed, "patients_read");
    assert_eq!((scraping["subject"].as_str(), scraping["count"].as_i64()), (Some("u-dr-grey"), Some(3)), "{scraping}");
    assert_eq!(find(&listed, "break_glass")["subject"], "u-dr-grey");
    find(&listed, "one_time_token_replay");
    assert_eq!(find(&listed, "refresh_reuse")["subject"], "u-alice");
    assert!(listed.iter().all(|a| a["rule"] != "signature_failures"), "a forged token's tenant is not the admin's");
    assert!(listed.iter().all(|a| a["status"] == "open"));

    // Acknowledgement: the admin only, its own tenant's alerts only.
    let id = bob_alert["id"].as_i64().expect("id");
    let path = format!("/api/admin/alerts/{id}/acknowledge");
    // (The reuse ended alice's first session: a new one.)
    let alice = app.token(ALICE).await;
    let alice_headers = json_headers(&alice);
    assert_eq!(send(&app, "POST", &path, &alice_headers[..1], "").await.status, 403, "a patient may not");
    assert_eq!(app.get_with("/api/admin/alerts", &alice).await.status, 403);
    let admin_auth = [("authorization", format!("Bearer {admin}"))];
    let acked = send(&app, "POST", &path, &admin_auth, "").await;
    assert_eq!(acked.status, 200, "{}", acked.body);
    assert_eq!(
        (acked.json()["status"].as_str(), acked.json()["acknowledged_by"].as_str()),
        (Some("acknowledged"), Some("u-admin"))
    );
    assert_eq!(send(&app, "POST", "/api/admin/alerts/999999/acknowledge", &admin_auth, "").await.status, 404);
    assert!(alerts(&app, &admin, "?status=open").await.iter().all(|a| a["id"] != id));
    assert_eq!(alerts(&app, &admin, "?status=acknowledged").await.len(), 1);
    assert_eq!(app.get_with("/api/admin/alerts?status=closed", &admin).await.status, 400);

    // A broken chain, found by the operator's verification (`jwks`), then the admin's (the
    // gateway): one alert.
    tamper_with_the_chain(&app);
    let operator = [("authorization", format!("Bearer {OPERATOR_TOKEN}"))];
    let verify = send(&app, "GET", "/admin/audit/verify/demo-hospital", &operator, "").await;
    assert_eq!(verify.json()["intact"], false, "{}", verify.body);
    assert_eq!(find(&alerts(&app, &admin, "").await, "audit_chain_break")["subject"], "seq-2");
    let verify = app.get_with("/api/admin/audit/verify", &admin).await;
    assert_eq!(verify.json()["intact"], false, "{}", verify.body);
    // Every gateway request delivers what is due; retries back off from 1 s.
    let deadline = Instant::now() + Duration::from_secs(40);
    let listed = loop {
        let listed = alerts(&app, &admin, "").await;
        let undelivered: Vec<&Value> = listed.iter().filter(|a| a["delivery"] != "delivered").collect();
        if undelivered.is_empty() {
            break listed;
        }
        assert!(Instant::now() < deadline, "not delivered: {undelivered:#?}\n{}", app.app.guest_output().join("\n"));
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(listed.iter().filter(|a| a["rule"] == "audit_chain_break").count(), 1, "{listed:#?}");
    let retried = find(&listed, "failed_logins_user");
    assert!(
        retried["delivery_attempts"].as_i64() >= Some(2),
        "failed while the receiver was down, then delivered: {retried}"
    );
    let bodies = received.lock().expect("received").clone();
    let text = serde_json::to_string(&bodies).expect("json");
    for rule in ["failed_logins_user", "patients_read", "break_glass", "one_time_token_replay", "refresh_reuse"] {
        assert!(bodies.iter().any(|b| b["rule"] == rule && b["tenant_id"] == "demo-hospital"), "{rule}: {text}");
    }
    assert!(bodies.iter().any(|b| b["rule"] == "signature_failures" && b["tenant_id"] == "_unattributed"), "{text}");
    assert!(bodies.iter().any(|b| b["rule"] == "audit_chain_break"), "{text}");
    for secret in ["bob", "u-dr-grey", "u-alice", "127.0.0.1", "p-100", "Unconscious"] {
        assert!(!text.contains(secret), "{secret} left the platform: {text}");
    }
    assert!(bodies.iter().all(|b| b["first_event_at"].is_string() && b["count"].is_i64()), "{text}");

    let metrics = app.send("GET", "/metrics", &[("authorization", &format!("Bearer {METRICS_TOKEN}"))], "").await;
    assert_eq!(metrics.status, 200, "{}", metrics.body);
    for line in [
        "health_alerts_total{rule=\"failed_logins_user\"} 1\n",
        "health_alerts_total{rule=\"break_glass\"} 1\n",
        "health_alerts_total{rule=\"patients_read\"} 1\n",
        "health_alerts_total{rule=\"signature_failures\"} 1\n",
        "health_alerts_total{rule=\"audit_chain_break\"} 1\n",
        "health_alert_evaluation_failures_total 0\n",
    ] {
        assert!(metrics.body.contains(line), "{line} in:\n{}", metrics.body);
    }
    eprintln!("alerts suite on {}: {:?}", app.app.runtime().name(), started.elapsed());
}

/// Rewrites one stored event of the demo tenant's chain, as an intruder with the database file
/// could (the append-only triggers dropped first).
fn tamper_with_the_chain(app: &TestApp) {
    let conn = rusqlite::Connection::open(app.state.path().join("audit.db")).expect("audit database opens");
    conn.execute_batch(
        "DROP TRIGGER audit_no_update;
         UPDATE audit_events SET event = event || ' '
         WHERE tenant_id = 'demo-hospital' AND seq = 2;",
    )
    .expect("tampered");
}

/// Misconfigured alert variables. `alert_webhook_host` must always be a valid
/// `allowed_outbound_hosts` entry: Spin 4.0.2 resolves the template when the gateway runs, and
/// an entry that does not parse (an empty value included) fails its whole allowed-hosts check,
/// so every outbound request of the gateway is denied, its store probe too (`/health` is 503).
/// The host does the same. A threshold that does not parse fails only the alert evaluation:
/// the login is answered as ever, and the failure is counted.
#[tokio::test(flavor = "multi_thread")]
async fn an_empty_webhook_host_denies_the_gateway_and_a_bad_threshold_fails_only_the_rules() {
    let app = TestApp::start_with_variables(&[("alert_webhook_host", ""), ("alerts", "failed_logins=3 a minute")])
        .expect("app loads");
    let health = app.send("GET", "/health", &[], "").await;
    assert_eq!(health.status, 503, "{}", health.body);
    // `auth`'s outbound hosts are literal: it still answers, and its failed logins are still
    // refused and audited although no rule can run on them.
    assert_eq!(app.login((BOB.0, "wrong-password-1")).await.status, 401);
    assert_eq!(app.login(BOB).await.status, 200);
    let failures = app.query_strings("audit.db", "SELECT CAST(n AS TEXT) FROM alert_failures");
    assert!(failures.first().and_then(|n| n.parse::<i64>().ok()) >= Some(1), "{failures:?}");
    let audited = app.query_strings("audit.db", "SELECT reason FROM audit_events WHERE reason = 'bad_password'");
    assert_eq!(audited.len(), 1);
}
