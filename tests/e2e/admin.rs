//! The admin API with a tenant admin's own access token next to the operator's: a tenant admin
//! manages its own tenant's keys and nothing else; tokens are revoked by `jti` at once; the
//! audit chain verifies, and verification notices an altered row.

use health_e2e::{ADMIN, ALICE, OPERATOR_TOKEN, TestApp};
use serde_json::{Value, json};

const RECORD: &str = "/api/patients/p-1001/records";

async fn admin_call(app: &TestApp, method: &str, path: &str, token: &str, body: Value) -> (u16, Value) {
    let auth = format!("Bearer {token}");
    let body = if body.is_null() { String::new() } else { body.to_string() };
    let reply = app.send(method, path, &[("content-type", "application/json"), ("authorization", &auth)], &body).await;
    (reply.status, serde_json::from_str(&reply.body).unwrap_or(Value::Null))
}

fn jti_of(token: &str) -> String {
    use base64::Engine;
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.split('.').nth(1).expect("payload"))
        .expect("b64");
    serde_json::from_slice::<Value>(&payload).expect("json")["jti"].as_str().expect("jti").to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_admin_manages_its_own_tenant_only() {
    let app = TestApp::start(|_| {}).expect("app loads");
    let (status, _) =
        admin_call(&app, "POST", "/admin/tenants", OPERATOR_TOKEN, json!({ "tenant_id": "other-hospital" })).await;
    assert_eq!(status, 201);
    let admin = app.token(ADMIN).await;
    let alice = app.token(ALICE).await;

    let own = json!({ "tenant_id": "demo-hospital", "use": "sig" });
    let (status, rotated) = admin_call(&app, "POST", "/admin/rotate-key", &admin, own.clone()).await;
    assert_eq!(status, 200, "{rotated}");
    let (status, listed) = admin_call(&app, "GET", "/admin/keys/demo-hospital", &admin, Value::Null).await;
    assert_eq!(status, 200);
    assert!(
        listed["keys"].as_array().expect("keys").iter().any(|k| k["kid"] == rotated["kid"] && k["status"] == "active")
    );

    // Another tenant, tenant creation, and a non-admin's token are all refused.
    let other = json!({ "tenant_id": "other-hospital", "use": "sig" });
    assert_eq!(admin_call(&app, "POST", "/admin/rotate-key", &admin, other).await.0, 403);
    assert_eq!(admin_call(&app, "GET", "/admin/keys/other-hospital", &admin, Value::Null).await.0, 403);
    assert_eq!(admin_call(&app, "GET", "/admin/audit/verify/other-hospital", &admin, Value::Null).await.0, 403);
    assert_eq!(admin_call(&app, "POST", "/admin/tenants", &admin, json!({ "tenant_id": "third" })).await.0, 403);
    assert_eq!(admin_call(&app, "POST", "/admin/rotate-key", &alice, own.clone()).await.0, 403);
    let mut forged = admin.clone();
    let at = forged.len() - 10;
    let flipped = if &forged[at..=at] == "A" { "B" } else { "A" };
    forged.replace_range(at..=at, flipped);
    assert_eq!(admin_call(&app, "POST", "/admin/rotate-key", &forged, own.clone()).await.0, 401);

    // A revoked admin token stops working at once, here as at the gateway.
    let body = json!({ "tenant_id": "demo-hospital", "jti": jti_of(&admin) });
    assert_eq!(admin_call(&app, "POST", "/admin/revoke-token", &admin, body).await.0, 200);
    assert_eq!(admin_call(&app, "POST", "/admin/rotate-key", &admin, own).await.0, 401);

    // Every attempt is in the audit trail with who made it and why it was refused.
    let reasons = app.query_strings(
        "audit.db",
        "SELECT json_extract(event, '$.reason') FROM audit_events WHERE json_extract(event, '$.resource') LIKE 'tenant/%' OR json_extract(event, '$.action') LIKE '% /admin/%'",
    );
    for reason in ["other_tenant_or_operator_only", "not_an_admin", "bad_signature", "revoked_jti"] {
        assert!(reasons.iter().any(|r| r == reason), "{reason} not audited: {reasons:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn revoked_jti_is_refused_and_the_audit_chain_verifies_until_a_row_is_altered() {
    let app = TestApp::start(|_| {}).expect("app loads");
    let alice = app.token(ALICE).await;
    let other = app.token(ALICE).await;
    assert_eq!(app.get_with(RECORD, &alice).await.status, 200);

    let (status, revoked) = admin_call(
        &app,
        "POST",
        "/admin/revoke-token",
        OPERATOR_TOKEN,
        json!({ "jti": jti_of(&alice), "tenant_id": "demo-hospital" }),
    )
    .await;
    assert_eq!(status, 200, "{revoked}");
    assert_eq!(app.get_with(RECORD, &alice).await.status, 401);
    assert_eq!(app.get_with(RECORD, &other).await.status, 200, "only that jti is revoked");
    let denied = app.query_strings("audit.db", "SELECT reason FROM audit_events WHERE reason = 'revoked_jti'");
    assert_eq!(denied.len(), 1);
    let empty = json!({ "jti": "", "tenant_id": "demo-hospital" });
    assert_eq!(admin_call(&app, "POST", "/admin/revoke-token", OPERATOR_TOKEN, empty).await.0, 400);

    let (status, report) =
        admin_call(&app, "GET", "/admin/audit/verify/demo-hospital", OPERATOR_TOKEN, Value::Null).await;
    assert_eq!((status, &report["intact"]), (200, &json!(true)), "{report}");
    assert!(report["events"].as_u64().expect("count") >= 4);

    // Someone with write access to the database file alters an event (past the triggers).
    let conn = rusqlite::Connection::open(app.state.path().join("audit.db")).expect("opens");
    conn.execute_batch(
        "DROP TRIGGER audit_no_update;
         UPDATE audit_events SET event = event || ' ' WHERE tenant_id = 'demo-hospital' AND seq = 2;",
    )
    .expect("tampers");
    let triggers: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND sql LIKE '%UPDATE%'", [], |r| {
            r.get(0)
        })
        .expect("count");
    assert_eq!(triggers, 0, "the test must really bypass the update trigger");
    let (_, report) = admin_call(&app, "GET", "/admin/audit/verify/demo-hospital", OPERATOR_TOKEN, Value::Null).await;
    assert_eq!((&report["intact"], &report["broken_at"]), (&json!(false), &json!(2)), "{report}");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_authorization_headers_are_refused_by_jwks_and_auth_before_either_is_read() {
    let app = TestApp::start(|_| {}).expect("app loads");
    let operator = format!("Bearer {OPERATOR_TOKEN}");
    let alice = app.token(ALICE).await;
    let alice = format!("Bearer {alice}");
    // One credential works; the same plus a second one, in either order, does not.
    let keys = "/admin/keys/demo-hospital";
    assert_eq!(app.send("GET", keys, &[("authorization", &operator)], "").await.status, 200);
    for pair in [[&operator, &alice], [&alice, &operator], [&operator, &operator]] {
        let headers = [("authorization", pair[0].as_str()), ("authorization", pair[1].as_str())];
        let reply = app.send("GET", keys, &headers, "").await;
        assert_eq!(reply.status, 400, "{}", reply.body);
        assert_eq!(reply.header("content-type"), "application/problem+json");
        assert!(!reply.body.contains("\"kid\""), "{}", reply.body);
        let logout = app.send("POST", "/auth/logout", &headers, "").await;
        assert_eq!(logout.status, 400, "{}", logout.body);
    }
    // Alice's token was never spent by the refused logouts.
    assert_eq!(app.get_with(RECORD, &alice["Bearer ".len()..]).await.status, 200);
}

/// Issue 14, item 7: the `_unattributed` chain (requests refused before any tenant could be
/// verified) is the operator's to verify and export; a tenant admin reads only its own chain.
#[tokio::test(flavor = "multi_thread")]
async fn the_operator_verifies_and_exports_the_unattributed_chain() {
    let app = TestApp::start(|_| {}).expect("app loads");
    // Three requests no tenant can be verified for: no token, a malformed one, a forged one.
    for auth in ["", "Bearer not-a-jwt", "Bearer eyJhbGciOiJub25lIn0.eyJ0ZW5hbnRfaWQiOiJ4In0."] {
        let headers: Vec<(&str, &str)> = if auth.is_empty() { vec![] } else { vec![("authorization", auth)] };
        assert_eq!(app.send("GET", RECORD, &headers, "").await.status, 401);
    }
    let admin = app.token(ADMIN).await;

    let (status, report) =
        admin_call(&app, "GET", "/admin/audit/verify/_unattributed", OPERATOR_TOKEN, Value::Null).await;
    assert_eq!((status, &report["intact"], &report["tenant_id"]), (200, &json!(true), &json!("_unattributed")));
    assert!(report["events"].as_u64().expect("count") >= 3, "{report}");

    let export = |token: String, path: &'static str| {
        let app = &app;
        async move {
            let auth = format!("Bearer {token}");
            app.send("GET", path, &[("authorization", &auth)], "").await
        }
    };
    let all = export(OPERATOR_TOKEN.into(), "/admin/audit/export/_unattributed").await;
    assert_eq!(all.status, 200, "{}", all.body);
    assert_eq!(all.header("content-type"), "application/x-ndjson");
    let lines: Vec<Value> = all.body.lines().map(|l| serde_json::from_str(l).expect("NDJSON line")).collect();
    assert!(lines.len() >= 3);
    assert!(lines.windows(2).all(|w| w[0]["seq"].as_i64() < w[1]["seq"].as_i64()), "chain order");
    assert!(lines.iter().all(|l| l["event"]["tenant_id"] == "_unattributed" && l["hash"].is_string()));
    assert!(lines.iter().any(|l| l["event"]["resource"].as_str().is_some_and(|r| r.contains("p-1001"))));
    // Paged: `after` and `limit` as in the tenant admin's export; a bad query names no value.
    let page = export(OPERATOR_TOKEN.into(), "/admin/audit/export/_unattributed?limit=1&after=1").await;
    let paged: Vec<Value> = page.body.lines().map(|l| serde_json::from_str(l).expect("line")).collect();
    assert_eq!((paged.len(), &paged[0]["seq"]), (1, &lines[1]["seq"]), "{}", page.body);
    assert_eq!(export(OPERATOR_TOKEN.into(), "/admin/audit/export/_unattributed?limit=0").await.status, 400);
    assert_eq!(export(OPERATOR_TOKEN.into(), "/admin/audit/export/_unattributed?sql=1").await.status, 400);

    // A tenant admin: its own chain yes, the unattributed one and another tenant's no.
    assert_eq!(export(admin.clone(), "/admin/audit/export/demo-hospital").await.status, 200);
    assert_eq!(export(admin.clone(), "/admin/audit/export/_unattributed").await.status, 403);
    assert_eq!(export(admin.clone(), "/admin/audit/verify/_unattributed").await.status, 403);
    assert_eq!(export(admin.clone(), "/admin/audit/export/other-hospital").await.status, 403);
    assert_eq!(export(OPERATOR_TOKEN.into(), "/admin/audit/export/_other").await.status, 404);

    // Altered behind the triggers' back, the unattributed chain no longer verifies.
    let conn = rusqlite::Connection::open(app.state.path().join("audit.db")).expect("opens");
    conn.execute_batch(
        "DROP TRIGGER audit_no_update;
         UPDATE audit_events SET event = event || ' ' WHERE tenant_id = '_unattributed' AND seq = 2;",
    )
    .expect("tampers");
    let (_, report) = admin_call(&app, "GET", "/admin/audit/verify/_unattributed", OPERATOR_TOKEN, Value::Null).await;
    assert_eq!((&report["intact"], &report["broken_at"]), (&json!(false), &json!(2)), "{report}");
}
