//! Every role's routes end to end through the gateway, allowed and denied (issue 5): patients
//! read only themselves and manage their consents, doctors read and write their care-team
//! patients and break the glass for others, labs see their open orders and append one result
//! each, insurers read consented summaries as JWE encrypted to their own key, and admins query,
//! export and verify the audit trail but never read clinical data. Also tenant isolation, the
//! HTTP conventions (problems, limits, media types, headers), `/health` and `/metrics`.

use base64::Engine;
use health_e2e::{ACME, ADMIN, ALICE, BOB, DR_GREY, LAB, OPERATOR_TOKEN, Reply, TestApp, root};
use std::sync::OnceLock;
use tokio::sync::OnceCell;

const JSON: (&str, &str) = ("content-type", "application/json");
const METRICS_TOKEN: &str = "metrics-test-token";

fn app() -> &'static TestApp {
    static APP: OnceLock<TestApp> = OnceLock::new();
    APP.get_or_init(|| {
        let hash = health_core::sha256_hex(METRICS_TOKEN);
        TestApp::start_with_variables(&[("metrics_token_hash", &hash)]).expect("app loads")
    })
}

/// One login per user for the whole file (doctors and admins need a fresh TOTP step per login).
async fn token(user: (&'static str, &'static str)) -> &'static str {
    static TOKENS: OnceLock<std::sync::Mutex<std::collections::HashMap<&'static str, &'static OnceCell<String>>>> =
        OnceLock::new();
    let cell = *TOKENS
        .get_or_init(Default::default)
        .lock()
        .expect("tokens")
        .entry(user.0)
        .or_insert_with(|| Box::leak(Box::new(OnceCell::new())));
    cell.get_or_init(|| app().token(user)).await
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

async fn get(path: &str, token: &str) -> Reply {
    app().get_with(path, token).await
}

async fn send_json(method: &str, path: &str, token: &str, body: serde_json::Value) -> Reply {
    app().send(method, path, &[("authorization", &bearer(token)), JSON], &body.to_string()).await
}

/// A fresh one-time insurer token (client credentials, a nested JWE).
/// Decrypts a summary with the demo insurer's private key, as the insurer would.
fn decrypt_summary(jwe: &str) -> serde_json::Value {
    let jwk: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("demo/acme-health.enc.jwk.json")).expect("jwk"))
            .expect("json");
    let d = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(jwk["d"].as_str().expect("d")).expect("b64");
    let key = health_jose::jwe::DecryptionKey::P256(p256::SecretKey::from_slice(&d).expect("P-256 key"));
    let decrypted =
        health_jose::jwe::decrypt(jwe, &key, &health_jose::jwe::JwePolicy::PLATFORM).expect("summary decrypts");
    assert_eq!(decrypted.header.alg, "ECDH-ES+A256KW");
    assert_eq!(decrypted.header.enc, "A256GCM");
    assert_eq!(decrypted.header.kid.as_deref(), jwk["kid"].as_str());
    serde_json::from_slice(&decrypted.plaintext).expect("summary JSON")
}

/// The newest audit event of `app` whose resource is `path`: (reason, outcome, status).
fn audited(app: &TestApp, path: &str) -> (String, String, String) {
    let row = app.query_strings(
        "audit.db",
        &format!(
            "SELECT reason || '|' || COALESCE(outcome, '') || '|' || status FROM audit_events
             WHERE json_extract(event, '$.resource') = '{path}' ORDER BY rowid DESC LIMIT 1"
        ),
    );
    let row = row.first().unwrap_or_else(|| panic!("no audit event for {path}"));
    let mut parts = row.split('|').map(str::to_owned);
    (parts.next().unwrap_or_default(), parts.next().unwrap_or_default(), parts.next().unwrap_or_default())
}

fn assert_problem(reply: &Reply, status: u16) {
    assert_eq!(reply.status, status, "{}", reply.body);
    assert_eq!(reply.header("content-type"), "application/problem+json");
    assert_eq!(reply.json()["status"], status);
    for secret in ["Andersen", "Berg", "Castillo", "E11.9", "I10", "J45"] {
        assert!(!reply.body.contains(secret), "{secret} leaked: {}", reply.body);
    }
}

#[tokio::test]
async fn patients_read_only_their_own_demographics_records_and_results() {
    let alice = token(ALICE).await;
    let demographics = get("/api/patients/p-1001", alice).await;
    assert_eq!(demographics.status, 200, "{}", demographics.body);
    assert_eq!(demographics.json()["patient"]["family_name"], "Andersen");
    assert!(!demographics.body.contains("E11.9"), "demographics carry no clinical entries");
    let records = get("/api/patients/p-1001/records", alice).await;
    assert_eq!(records.status, 200);
    assert!(records.body.contains("E11.9") && records.body.contains("Metformin"), "{}", records.body);
    let results = get("/api/patients/p-1001/lab-results", alice).await;
    assert_eq!(results.status, 200);
    assert_eq!(results.json()["lab_results"][0]["value"], "7.2");
    for path in ["/api/patients/p-1002", "/api/patients/p-1002/records", "/api/patients/p-1002/lab-results"] {
        assert_problem(&get(path, alice).await, 403);
    }
    // A patient id that does not exist is refused exactly like another patient's.
    let missing = get("/api/patients/p-9999/records", alice).await;
    let other = get("/api/patients/p-1002/records", alice).await;
    assert_eq!((missing.status, missing.body.clone()), (other.status, other.body.clone()));
    assert_eq!(audited(app(), "/api/patients/p-9999/records").0, "no_such_patient");
    // Patients never write records, open break-glass or read summaries.
    let write =
        send_json("POST", "/api/patients/p-1001/records", alice, serde_json::json!({"kind": "note", "content": "x"}))
            .await;
    assert_problem(&write, 403);
    let glass = send_json(
        "POST",
        "/api/patients/p-1001/break-glass",
        alice,
        serde_json::json!({"reason": "I want to see it all"}),
    )
    .await;
    assert_problem(&glass, 403);
    assert_problem(&get("/api/insurance/patients/p-1001/summary", alice).await, 403);
    assert_problem(&get("/api/lab/orders", alice).await, 403);
    let bob = token(BOB).await;
    assert_eq!(get("/api/patients/p-1002/records", bob).await.status, 200);
    assert_problem(&get("/api/patients/p-1001/records", bob).await, 403);
}

#[tokio::test]
async fn doctors_read_and_write_care_team_records_only() {
    let doctor = token(DR_GREY).await;
    for path in ["/api/patients/p-1001", "/api/patients/p-1001/records", "/api/patients/p-1003/lab-results"] {
        assert_eq!(get(path, doctor).await.status, 200, "{path}");
    }
    assert_eq!(audited(app(), "/api/patients/p-1001/records").0, "care_team");
    let added = send_json(
        "POST",
        "/api/patients/p-1003/records",
        doctor,
        serde_json::json!({"kind": "note", "content": "Peak flow 420 L/min, improving"}),
    )
    .await;
    assert_eq!(added.status, 201, "{}", added.body);
    let entry_id = added.json()["entry_id"].as_str().expect("entry id").to_owned();
    let corrected = send_json(
        "PUT",
        "/api/patients/p-1003/records",
        doctor,
        serde_json::json!({"entry_id": entry_id, "content": "Peak flow 430 L/min, improving", "reason": "Misread"}),
    )
    .await;
    assert_eq!(corrected.status, 200, "{}", corrected.body);
    let record = get("/api/patients/p-1003/records", doctor).await.json();
    let entry =
        record["entries"].as_array().expect("entries").iter().find(|e| e["entry_id"] == entry_id.as_str()).cloned();
    assert_eq!(entry.expect("the new entry")["content"], "Peak flow 430 L/min, improving");
    // An entry of another patient cannot be corrected through this one.
    let elsewhere = send_json(
        "PUT",
        "/api/patients/p-1003/records",
        doctor,
        serde_json::json!({"entry_id": "e-1", "content": "x", "reason": "x"}),
    )
    .await;
    assert_problem(&elsewhere, 404);
    // Bob is not on Dr Grey's care team.
    assert_problem(&get("/api/patients/p-1002/records", doctor).await, 403);
    let write =
        send_json("POST", "/api/patients/p-1002/records", doctor, serde_json::json!({"kind": "note", "content": "x"}))
            .await;
    assert_problem(&write, 403);
    assert_eq!(audited(app(), "/api/patients/p-1002/records").0, "not_on_care_team");
    // Bad bodies: unknown kind, unknown member, wrong media type.
    let bad = send_json(
        "POST",
        "/api/patients/p-1003/records",
        doctor,
        serde_json::json!({"kind": "gossip", "content": "x"}),
    )
    .await;
    assert_problem(&bad, 400);
    let extra = send_json(
        "POST",
        "/api/patients/p-1003/records",
        doctor,
        serde_json::json!({"kind": "note", "content": "x", "author": "u-someone-else"}),
    )
    .await;
    assert_problem(&extra, 400);
    let text = app()
        .send(
            "POST",
            "/api/patients/p-1003/records",
            &[("authorization", &bearer(doctor)), ("content-type", "text/plain")],
            "{}",
        )
        .await;
    assert_problem(&text, 415);
    // Doctors have no consent, summary, lab or admin routes.
    assert_problem(&get("/api/admin/audit", doctor).await, 403);
    assert_problem(&get("/api/lab/orders", doctor).await, 403);
}

#[tokio::test]
async fn break_glass_opens_a_short_audited_window_listed_for_review() {
    let app = TestApp::start(|_| {}).expect("app");
    let doctor = app.token(DR_GREY).await;
    let auth = [("authorization", bearer(&doctor)), ("content-type", "application/json".to_owned())];
    let headers: Vec<(&str, &str)> = auth.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(app.get_with("/api/patients/p-1002/records", &doctor).await.status, 403);
    let vague = app.send("POST", "/api/patients/p-1002/break-glass", &headers, r#"{"reason":"need"}"#).await;
    assert_problem(&vague, 400);
    let reason = "Unconscious in ED, no care team on shift";
    let granted = app
        .send(
            "POST",
            "/api/patients/p-1002/break-glass",
            &headers,
            &serde_json::json!({ "reason": reason }).to_string(),
        )
        .await;
    assert_eq!(granted.status, 201, "{}", granted.body);
    let grant = granted.json();
    assert_eq!(grant["expires_at"].as_i64().unwrap() - grant["granted_at"].as_i64().unwrap(), 3600);
    let record = app.get_with("/api/patients/p-1002/records", &doctor).await;
    assert_eq!(record.status, 200, "{}", record.body);
    assert!(record.body.contains("I10"));
    assert_eq!(audited(&app, "/api/patients/p-1002/records").0, "break_glass");
    // The review queue lists the grant with its stated reason and the access it allowed.
    let admin = app.token(ADMIN).await;
    let queue = app.get_with("/api/admin/break-glass", &admin).await;
    assert_eq!(queue.status, 200, "{}", queue.body);
    let events = queue.json()["events"].as_array().cloned().expect("events");
    assert!(
        events.iter().any(|e| e["event"]["break_glass_reason"] == reason && e["event"]["status"] == 201),
        "{events:?}"
    );
    assert!(events.iter().any(|e| e["event"]["reason"] == "break_glass" && e["event"]["patient_id"] == "p-1002"));
    assert!(events.iter().all(|e| e["event"]["actor_sub"] == "u-dr-grey"), "only break-glass events: {events:?}");
    // Another doctor's care team is unaffected: Alice's record is still read under care_team.
    assert_eq!(app.get_with("/api/patients/p-1001/records", &doctor).await.status, 200);
    assert_eq!(audited(&app, "/api/patients/p-1001/records").0, "care_team");
}

#[tokio::test]
async fn labs_see_their_own_open_orders_and_append_one_result_each() {
    let app = TestApp::start(|_| {}).expect("app");
    let lab = app.token(LAB).await;
    let orders = app.get_with("/api/lab/orders", &lab).await;
    assert_eq!(orders.status, 200, "{}", orders.body);
    let ids: Vec<String> = orders.json()["orders"]
        .as_array()
        .expect("orders")
        .iter()
        .map(|o| o["order_id"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(ids, ["o-2001", "o-2002"], "open orders of lab-north only");
    for clinical in ["content", "E11.9", "Andersen", "diagnosis", "7.2"] {
        assert!(!orders.body.contains(clinical), "{clinical} in {}", orders.body);
    }
    let auth = bearer(&lab);
    let headers = [("authorization", auth.as_str()), JSON];
    let result = serde_json::json!({"code": "4548-4", "value": "6.4", "unit": "%", "note": "fasting"}).to_string();
    let appended = app.send("POST", "/api/lab/orders/o-2001/results", &headers, &result).await;
    assert_eq!(appended.status, 201, "{}", appended.body);
    assert_problem(&app.send("POST", "/api/lab/orders/o-2001/results", &headers, &result).await, 409);
    // Another lab's order and an unknown one are refused alike.
    let other = app.send("POST", "/api/lab/orders/o-2003/results", &headers, &result).await;
    let unknown = app.send("POST", "/api/lab/orders/o-9999/results", &headers, &result).await;
    assert_problem(&other, 403);
    assert_eq!((other.status, other.body.clone()), (unknown.status, unknown.body.clone()));
    assert_eq!(audited(&app, "/api/lab/orders/o-2003/results").0, "order_not_assigned");
    // The closed order leaves the list; the patient and their doctor see the result.
    let after = app.get_with("/api/lab/orders", &lab).await.json();
    assert_eq!(after["orders"].as_array().map(Vec::len), Some(1));
    let alice = app.token(ALICE).await;
    let results = app.get_with("/api/patients/p-1001/lab-results", &alice).await;
    assert!(results.body.contains("\"6.4\"") && results.body.contains("fasting"), "{}", results.body);
    // Labs read no records, demographics or results.
    for path in ["/api/patients/p-1001/records", "/api/patients/p-1001", "/api/patients/p-1001/lab-results"] {
        assert_problem(&app.get_with(path, &lab).await, 403);
    }
    let text = app.send("POST", "/api/lab/orders/o-2002/results", &[("authorization", auth.as_str())], &result).await;
    assert_problem(&text, 415);
}

#[tokio::test]
async fn insurers_read_consented_summaries_encrypted_to_their_own_key_once_per_token() {
    let app = TestApp::start(|_| {}).expect("app");
    // Carol consented in the demo data.
    let token = app.client_token(ACME).await;
    let reply = app.get_with("/api/insurance/patients/p-1003/summary", &token).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.header("content-type"), "application/jose");
    assert_eq!(reply.header("cache-control"), "no-store");
    assert_eq!(reply.body.split('.').count(), 5, "a compact JWE");
    assert!(!reply.body.contains("Castillo"));
    let summary = decrypt_summary(&reply.body);
    assert_eq!(summary["family_name"], "Castillo");
    assert_eq!(summary["insurer"], "acme-health");
    assert!(summary["diagnoses"].to_string().contains("J45.30"));
    assert!(!summary.to_string().contains("Budesonide"), "medications are not in a summary: {summary}");
    // The token is spent.
    let again = app.get_with("/api/insurance/patients/p-1003/summary", &token).await;
    assert_eq!(again.status, 401);
    assert_eq!(audited(&app, "/api/insurance/patients/p-1003/summary").0, "one_time_token_replayed");
    // Alice has not consented: refused, until she does; withdrawn again, refused again.
    assert_problem(&app.get_with("/api/insurance/patients/p-1001/summary", &app.client_token(ACME).await).await, 403);
    assert_eq!(audited(&app, "/api/insurance/patients/p-1001/summary").0, "no_consent");
    let alice = app.token(ALICE).await;
    let auth = bearer(&alice);
    let headers = [("authorization", auth.as_str()), JSON];
    let expires = health_e2e::unix_now() + 86_400;
    let consent = serde_json::json!({"insurer": "acme-health", "expires_at": expires}).to_string();
    let granted = app.send("POST", "/api/patients/p-1001/consents", &headers, &consent).await;
    assert_eq!(granted.status, 201, "{}", granted.body);
    let past = serde_json::json!({"insurer": "acme-health", "expires_at": 1}).to_string();
    assert_problem(&app.send("POST", "/api/patients/p-1001/consents", &headers, &past).await, 400);
    assert_problem(&app.send("POST", "/api/patients/p-1002/consents", &headers, &consent).await, 403);
    let summary = app.get_with("/api/insurance/patients/p-1001/summary", &app.client_token(ACME).await).await;
    assert_eq!(summary.status, 200, "{}", summary.body);
    assert!(decrypt_summary(&summary.body)["diagnoses"].to_string().contains("E11.9"));
    let withdrawn = app
        .send("DELETE", "/api/patients/p-1001/consents?insurer=acme-health", &[("authorization", auth.as_str())], "")
        .await;
    assert_eq!(withdrawn.status, 204, "{}", withdrawn.body);
    assert_problem(&app.get_with("/api/insurance/patients/p-1001/summary", &app.client_token(ACME).await).await, 403);
    // Insurers read nothing else and never write.
    for (method, path) in [
        ("GET", "/api/patients/p-1003/records"),
        ("GET", "/api/patients/p-1003"),
        ("GET", "/api/patients/p-1003/lab-results"),
        ("GET", "/api/lab/orders"),
        ("GET", "/api/admin/audit"),
    ] {
        let token = app.client_token(ACME).await;
        assert_problem(&app.send(method, path, &[("authorization", &bearer(&token))], "").await, 403);
    }
    let token = app.client_token(ACME).await;
    let write = app
        .send(
            "POST",
            "/api/patients/p-1003/records",
            &[("authorization", &bearer(&token)), JSON],
            r#"{"kind":"note","content":"x"}"#,
        )
        .await;
    assert_problem(&write, 403);
}

#[tokio::test]
async fn one_insurer_token_under_64_concurrent_summary_reads_succeeds_exactly_once() {
    let app = TestApp::start(|_| {}).expect("app");
    let token = app.client_token(ACME).await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..64u16 {
        let (app, token) = (app.app.clone(), token.clone());
        tasks.spawn(async move {
            let from = std::net::SocketAddr::from(([10, 1, 0, 1], 40000 + i));
            let auth = format!("Bearer {token}");
            health_e2e::send_from(
                &app,
                from,
                "GET",
                "/api/insurance/patients/p-1003/summary",
                &[("authorization", &auth)],
                "",
            )
            .await
            .status
        });
    }
    let mut statuses = Vec::new();
    while let Some(status) = tasks.join_next().await {
        statuses.push(status.expect("task"));
    }
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 401).count(), 63, "{statuses:?}");
    let replays = app.query_strings(
        "audit.db",
        "SELECT reason FROM audit_events WHERE reason = 'one_time_token_replayed' AND action LIKE 'GET /api/insurance/%'",
    );
    assert_eq!(replays.len(), 63);
}

#[tokio::test]
async fn admins_query_export_and_verify_the_audit_trail_but_read_no_clinical_data() {
    let alice = token(ALICE).await;
    get("/api/patients/p-1001/records", alice).await;
    get("/api/patients/p-1002/records", alice).await;
    let admin = token(ADMIN).await;
    let mine = get("/api/admin/audit?actor=u-alice&patient=p-1002&outcome=deny", admin).await;
    assert_eq!(mine.status, 200, "{}", mine.body);
    let events = mine.json()["events"].as_array().cloned().expect("events");
    assert!(!events.is_empty());
    assert!(events.iter().all(|e| e["event"]["actor_sub"] == "u-alice"
        && e["event"]["patient_id"] == "p-1002"
        && e["event"]["outcome"] == "deny"));
    let jti = events[0]["event"]["jti"].as_str().expect("jti").to_owned();
    let by_jti = get(&format!("/api/admin/audit?jti={jti}&limit=1000"), admin).await.json();
    assert!(by_jti["events"].as_array().expect("events").iter().all(|e| e["event"]["jti"] == jti.as_str()));
    let window = get("/api/admin/audit?from=0&to=1", admin).await.json();
    assert_eq!(window["events"].as_array().map(Vec::len), Some(0));
    let paged = get("/api/admin/audit?limit=2", admin).await.json();
    assert_eq!(paged["events"].as_array().map(Vec::len), Some(2));
    let next = paged["next_after"].as_i64().expect("cursor");
    let page2 = get(&format!("/api/admin/audit?limit=2&after={next}"), admin).await.json();
    assert!(page2["events"][0]["seq"].as_i64().expect("seq") > next);
    assert_problem(&get("/api/admin/audit?outcome=maybe", admin).await, 400);
    assert_problem(&get("/api/admin/audit?tenant=other-hospital", admin).await, 400);
    let export = get("/api/admin/audit/export?actor=u-alice", admin).await;
    assert_eq!(export.status, 200);
    assert_eq!(export.header("content-type"), "application/x-ndjson");
    let lines: Vec<serde_json::Value> =
        export.body.lines().map(|l| serde_json::from_str(l).expect("NDJSON line")).collect();
    assert!(!lines.is_empty() && lines.iter().all(|l| l["event"]["actor_sub"] == "u-alice" && l["hash"].is_string()));
    let verify = get("/api/admin/audit/verify", admin).await;
    assert_eq!(verify.json()["intact"], true, "{}", verify.body);
    // Admins never read clinical data.
    for path in ["/api/patients/p-1001", "/api/patients/p-1001/records", "/api/patients/p-1001/lab-results"] {
        assert_problem(&get(path, admin).await, 403);
    }
    // Nor do other roles reach the audit trail.
    for user in [ALICE, LAB] {
        assert_problem(&get("/api/admin/audit", token(user).await).await, 403);
        assert_problem(&get("/api/admin/audit/verify", token(user).await).await, 403);
    }
}

#[tokio::test]
async fn strict_redaction_pseudonymises_exports() {
    let app = TestApp::start_with_variables(&[("audit_redaction", "strict")]).expect("app");
    let alice = app.token(ALICE).await;
    app.get_with("/api/patients/p-1001/records", &alice).await;
    let admin = app.token(ADMIN).await;
    let export = app.get_with("/api/admin/audit/export", &admin).await;
    assert_eq!(export.status, 200, "{}", export.body);
    assert!(export.body.lines().count() > 2);
    for identifying in ["u-alice", "p-1001", "user-agent", "127.0.0.1"] {
        assert!(!export.body.contains(identifying), "{identifying} in a strict export");
    }
    assert!(export.body.contains("pseud-"));
}

#[tokio::test]
async fn tenants_are_isolated() {
    let app = TestApp::start(|_| {}).expect("app");
    let operator = [("authorization", format!("Bearer {OPERATOR_TOKEN}")), ("content-type", "application/json".into())];
    let operator: Vec<(&str, &str)> = operator.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let created = app.send("POST", "/admin/tenants", &operator, r#"{"tenant_id":"st-marys"}"#).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let user = serde_json::json!({"tenant_id": "st-marys", "username": "mallory", "role": "doctor", "password": "mallory-pass-2026"});
    let made = app.send("POST", "/auth/admin/users", &operator, &user.to_string()).await;
    assert_eq!(made.status, 201, "{}", made.body);
    let login = serde_json::json!({"tenant": "st-marys", "username": "mallory", "password": "mallory-pass-2026"});
    let reply = app.send("POST", "/auth/login", &[JSON], &login.to_string()).await;
    // Doctors must enrol TOTP: enrol Mallory like any other doctor.
    assert_eq!(reply.status, 403, "{}", reply.body);
    let enrolled = app.send("POST", "/auth/mfa/enroll", &[JSON], &login.to_string()).await;
    let secret =
        health_identity::totp::base32_decode(enrolled.json()["secret"].as_str().expect("secret")).expect("b32");
    let step = health_identity::totp::step_at(health_e2e::unix_now());
    let mut confirm = login.clone();
    confirm["otp"] = health_identity::totp::code(&secret, step).into();
    assert_eq!(app.send("POST", "/auth/mfa/confirm", &[JSON], &confirm.to_string()).await.status, 200);
    let mut with_code = login.clone();
    with_code["otp"] = health_identity::totp::code(&secret, step + 1).into();
    let token = app.send("POST", "/auth/login", &[JSON], &with_code.to_string()).await.json()["access_token"]
        .as_str()
        .expect("st-marys token")
        .to_owned();
    // A doctor of St Mary's asking for demo-hospital's patients (the same ids) learns nothing.
    for path in ["/api/patients/p-1001/records", "/api/patients/p-1001", "/api/patients/p-9999/records"] {
        assert_problem(&app.get_with(path, &token).await, 403);
    }
    assert_eq!(audited(&app, "/api/patients/p-1001/records").0, "no_such_patient");
    // Break-glass into another tenant finds no patient there either.
    let glass = app
        .send(
            "POST",
            "/api/patients/p-1001/break-glass",
            &[("authorization", &bearer(&token)), JSON],
            r#"{"reason":"Trying to reach another hospital's patient"}"#,
        )
        .await;
    assert_problem(&glass, 404);
    // A demo-hospital token altered to claim st-marys is refused outright.
    let alice = app.token(ALICE).await;
    let parts: Vec<&str> = alice.split('.').collect();
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut claims: serde_json::Value = serde_json::from_slice(&engine.decode(parts[1]).expect("b64")).expect("json");
    claims["tenant_id"] = "st-marys".into();
    let forged = format!("{}.{}.{}", parts[0], engine.encode(claims.to_string()), parts[2]);
    assert_eq!(app.get_with("/api/patients/p-1001/records", &forged).await.status, 401);
}

#[tokio::test]
async fn http_conventions_hold_on_every_answer() {
    let alice = token(ALICE).await;
    let ok = get("/api/patients/p-1001/records", alice).await;
    for (name, value) in [
        ("cache-control", "no-store"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("strict-transport-security", "max-age=63072000; includeSubDomains"),
    ] {
        assert_eq!(ok.header(name), value, "{name}");
    }
    assert!(!ok.header("x-request-id").is_empty());
    let auth = bearer(alice);
    let huge = "x".repeat(70 * 1024);
    let too_big = app().send("POST", "/api/patients/p-1001/consents", &[("authorization", &auth), JSON], &huge).await;
    assert_problem(&too_big, 413);
    let body_on_get = app().send("GET", "/api/patients/p-1001/records", &[("authorization", &auth)], "{}").await;
    assert_problem(&body_on_get, 400);
    assert_problem(&get("/api/patients/p-1001/records?role=doctor", alice).await, 404);
    assert_problem(&get("/api/nothing-here", alice).await, 404);
    assert_problem(&app().send("PATCH", "/api/patients/p-1001/records", &[("authorization", &auth)], "").await, 404);
    // Unauthenticated requests learn nothing about routes: 401 whether the route exists or not.
    assert_problem(&app().send("GET", "/api/nothing-here", &[], "").await, 401);
    let health = app().send("GET", "/health", &[], "").await;
    assert_eq!((health.status, health.json()["status"].as_str()), (200, Some("ok")));
}

#[tokio::test]
async fn metrics_need_their_token_and_count_from_the_audit_log() {
    let alice = token(ALICE).await;
    get("/api/patients/p-1001/records", alice).await;
    app().send("GET", "/api/patients/p-1001/records", &[], "").await;
    assert_problem(&app().send("GET", "/metrics", &[], "").await, 401);
    assert_problem(&app().send("GET", "/metrics", &[("authorization", "Bearer wrong")], "").await, 401);
    let metrics = app().send("GET", "/metrics", &[("authorization", &bearer(METRICS_TOKEN))], "").await;
    assert_eq!(metrics.status, 200, "{}", metrics.body);
    assert!(metrics.header("content-type").starts_with("text/plain; version=0.0.4"));
    let value = |prefix: &str| -> i64 {
        metrics
            .body
            .lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{prefix} missing:\n{}", metrics.body))
    };
    assert!(value("health_requests_total{route=\"GET /api/patients/{id}/records\",outcome=\"allow\"}") >= 1);
    assert!(value("health_auth_failures_total") >= 1);
    value("health_decrypt_failures_total{reason=\"phi_decrypt_failed\"}");
    value("health_break_glass_total{kind=\"grant\"}");
    let route = "route=\"GET /api/patients/{id}/records\"";
    let answered = value(&format!("health_request_duration_seconds_count{{{route}}}"));
    assert!(answered >= 2, "both reads, the refused one too:\n{}", metrics.body);
    assert_eq!(value(&format!("health_request_duration_seconds_bucket{{{route},le=\"+Inf\"}}")), answered);
    assert!(value(&format!("health_request_duration_seconds_bucket{{{route},le=\"10\"}}")) <= answered);
    assert!(!metrics.body.contains("p-1001"), "no ids in metric labels");
    // Off unless a token hash is configured.
    let plain = TestApp::start(|_| {}).expect("app");
    assert_eq!(plain.send("GET", "/metrics", &[("authorization", &bearer(METRICS_TOKEN))], "").await.status, 404);
}

#[tokio::test]
async fn audit_chain_is_intact_and_append_only() {
    let admin = token(ADMIN).await;
    let verify = get("/api/admin/audit/verify", admin).await.json();
    assert_eq!(verify["intact"], true, "{verify}");
    let conn = rusqlite::Connection::open(app().state.path().join("audit.db")).expect("audit db");
    assert!(conn.execute("UPDATE audit_events SET reason = 'x'", []).is_err(), "UPDATE refused");
    assert!(conn.execute("DELETE FROM audit_events", []).is_err(), "DELETE refused");
}
