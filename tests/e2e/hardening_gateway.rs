//! Issue 14, the gateway and role-service items: what the audit log keeps of a request's target
//! (5, 6), the access-token media type (8), nested tokens only for insurers and never under RSA
//! (9), no change without its audit event (11), the audit search by any `jti` (12), and the
//! smaller ones of 13 (the challenge without credentials, a repeated break-glass, validation
//! errors that name the field). Each test fails on the code before the fix.

use base64::Engine;
use health_e2e::{ADMIN, ALICE, DR_GREY, OPERATOR_TOKEN, Reply, TestApp};
use health_jose::PublicJwk;
use health_jose::jwe::{self, EncryptionKey, Protected};
use serde_json::{Value, json};

const RECORDS: &str = "/api/patients/p-1001/records";
const JSON: (&str, &str) = ("content-type", "application/json");

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn part(token: &str, index: usize) -> Value {
    let segment = token.split('.').nth(index).expect("segment");
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(segment).expect("b64"))
        .expect("json")
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// The newest audit event of a request whose stored resource starts with `prefix`.
fn audited(app: &TestApp, prefix: &str) -> Value {
    let rows = app.query_strings("audit.db", "SELECT event FROM audit_events ORDER BY rowid DESC");
    rows.iter()
        .map(|e| serde_json::from_str::<Value>(e).expect("event json"))
        .find(|e| e["resource"].as_str().is_some_and(|r| r.starts_with(prefix)))
        .unwrap_or_else(|| panic!("no audit event for {prefix}"))
}

async fn operator(app: &TestApp, path: &str, body: Value) -> Value {
    let auth = bearer(OPERATOR_TOKEN);
    let reply = app.send("POST", path, &[JSON, ("authorization", &auth)], &body.to_string()).await;
    assert!(matches!(reply.status, 200 | 201), "{path}: {} {}", reply.status, reply.body);
    reply.json()
}

/// Alice's claims under a header of our choosing, signed with the tenant's signing key.
fn resign(app: &TestApp, token: &str, header: Value) -> String {
    let kid = part(token, 0)["kid"].as_str().expect("kid").to_owned();
    let key = app.private_key("demo-hospital", &kid, health_jose::Algorithm::Rs256);
    let input = format!("{}.{}", b64(header.to_string().as_bytes()), token.split('.').nth(1).expect("claims"));
    let signature =
        health_jose::sign_bytes(&key, health_jose::Algorithm::Rs256, input.as_bytes(), &mut rand_core::OsRng)
            .expect("signs");
    format!("{input}.{}", b64(&signature))
}

/// `token` wrapped in a JWE to the tenant's active published encryption key, as anyone can.
async fn wrap(app: &TestApp, token: &str) -> (String, String) {
    let set = app.send("GET", "/jwk/demo-hospital", &[], "").await.json();
    let keys: Vec<PublicJwk> = serde_json::from_value(set["keys"].clone()).expect("JWK Set");
    let enc = keys.iter().rev().find(|k| k.encryption_key().is_some()).expect("an encryption key");
    let iss = part(token, 1)["iss"].as_str().expect("iss").to_owned();
    let key: EncryptionKey = enc.encryption_key().expect("key");
    let protected = Protected { kid: Some(&enc.kid), cty: Some("JWT"), iss: Some(&iss) };
    let sealed = jwe::encrypt(token.as_bytes(), &key, &protected, &mut rand_core::OsRng).expect("encrypts");
    let alg = part(&sealed, 0)["alg"].as_str().expect("alg").to_owned();
    (sealed, alg)
}

fn assert_bad_request_naming(reply: &Reply, field: &str) {
    assert_eq!(reply.status, 400, "{}", reply.body);
    let detail = reply.json()["detail"].as_str().unwrap_or_default().to_owned();
    assert!(detail.contains(field), "detail {detail:?} does not name {field}");
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_events_keep_no_token_text_from_paths_or_queries() {
    let app = TestApp::start(|_| {}).expect("app loads");
    let token = app.token(ALICE).await;
    // The token in the query (refused: no credentials), and in a path that does not route.
    let in_query = app.send("GET", &format!("{RECORDS}?access_token={token}"), &[], "").await;
    assert_eq!(in_query.status, 401, "{}", in_query.body);
    let in_path = app.get_with(&format!("/api/patients/p-1001/{token}"), &token).await;
    assert_eq!(in_path.status, 404, "{}", in_path.body);
    let events = app.query_strings("audit.db", "SELECT event FROM audit_events").join("\n");
    for piece in token.split('.') {
        assert!(!events.contains(&piece[..24.min(piece.len())]), "token text {piece:.24} in the audit log");
    }
    assert_eq!(audited(&app, RECORDS)["resource"], format!("{RECORDS}?access_token"));
    assert_eq!(audited(&app, "/api/patients/p-1001/*")["resource"], "/api/patients/p-1001/*");
}

#[tokio::test(flavor = "multi_thread")]
async fn strict_exports_hide_unrouted_paths_and_query_text() {
    let app = TestApp::start_with_variables(&[("audit_redaction", "strict")]).expect("app");
    let alice = app.token(ALICE).await;
    assert_eq!(app.get_with("/api/patients/p-1003/records/", &alice).await.status, 404);
    assert_eq!(app.get_with("/api/patients/p-1003/records?carol-note=x", &alice).await.status, 404);
    let export = app.get_with("/api/admin/audit/export", &app.token(ADMIN).await).await;
    assert_eq!(export.status, 200, "{}", export.body);
    assert!(export.body.contains("/api/patients/*/records"), "{}", export.body);
    for identifying in ["p-1003", "carol-note", "u-alice"] {
        assert!(!export.body.contains(identifying), "{identifying} in a strict export");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn application_at_jwt_is_accepted_as_the_access_token_type() {
    let app = TestApp::start(|_| {}).expect("app loads");
    let token = app.token(ALICE).await;
    let header = part(&token, 0);
    for (typ, status) in [("application/at+jwt", 200), ("Application/AT+JWT", 200), ("application/jwt", 401)] {
        let mut header = header.clone();
        header["typ"] = json!(typ);
        let reply = app.get_with(RECORDS, &resign(&app, &token, header)).await;
        assert_eq!(reply.status, status, "typ {typ}: {}", reply.body);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn nested_tokens_are_accepted_only_for_insurers_and_never_under_rsa() {
    let app = TestApp::start(|_| {}).expect("app loads");
    let token = app.token(ALICE).await;
    assert_eq!(app.get_with(RECORDS, &token).await.status, 200);
    // A patient's own token wrapped to the tenant's published EC key: not issued so.
    let (wrapped, alg) = wrap(&app, &token).await;
    assert_eq!(alg, "ECDH-ES+A256KW");
    assert_eq!(app.get_with(RECORDS, &wrapped).await.status, 401);
    assert_eq!(audited(&app, RECORDS)["reason"], "nested_token_role");
    // After rotation to RSA-OAEP-256, a bearer JWE under RSA never reaches a decryption.
    operator(&app, "/admin/rotate-key", json!({ "tenant_id": "demo-hospital", "use": "enc", "alg": "RSA-OAEP-256" }))
        .await;
    let (wrapped, alg) = wrap(&app, &token).await;
    assert_eq!(alg, "RSA-OAEP-256");
    assert_eq!(app.get_with(RECORDS, &wrapped).await.status, 401);
    assert_eq!(audited(&app, RECORDS)["reason"], "jwe_alg_not_allowed");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_change_is_not_made_unless_its_audit_event_is_written_first() {
    let app = TestApp::start(|_| {}).expect("app loads");
    let alice = app.token(ALICE).await;
    let auth = bearer(&alice);
    let consent =
        |insurer: &str| json!({ "insurer": insurer, "expires_at": health_e2e::unix_now() + 3600 }).to_string();
    let grant = |body: String| {
        let app = &app;
        let auth = auth.clone();
        async move { app.send("POST", "/api/patients/p-1001/consents", &[JSON, ("authorization", &auth)], &body).await }
    };
    let consents = || app.query_strings("records.db", "SELECT insurer FROM consent WHERE patient_id = 'p-1001'");
    assert_eq!(app.get_with(RECORDS, &alice).await.status, 200, "the records database is set up");
    assert!(consents().is_empty());
    let db = rusqlite::Connection::open(app.state.path().join("audit.db")).expect("db");
    // Outcome events (status set) refused, the pending one before forwarding accepted: the change
    // happens and is on record although the client gets 503.
    db.execute_batch(
        "CREATE TRIGGER refuse_outcomes BEFORE INSERT ON audit_events WHEN NEW.status <> 0
         BEGIN SELECT RAISE(ABORT, 'outcome refused'); END;",
    )
    .expect("break outcomes");
    let reply = grant(consent("acme-health")).await;
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert_eq!(consents(), ["acme-health"]);
    let pending = audited(&app, "/api/patients/p-1001/consents");
    assert_eq!((pending["reason"].as_str(), pending["status"].as_u64()), (Some("pending_forward"), Some(0)));
    assert_eq!(pending["request_id"], reply.header("x-request-id"));
    // No audit write at all: nothing is forwarded, nothing changes.
    db.execute_batch("DROP TRIGGER refuse_outcomes; CREATE TRIGGER refuse_all BEFORE INSERT ON audit_events BEGIN SELECT RAISE(ABORT, 'down'); END;")
        .expect("break audit");
    let reply = grant(consent("other-insurer")).await;
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert_eq!(consents(), ["acme-health"], "a change was made without its audit event");
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_search_takes_any_base64url_jti_and_bad_queries_name_the_field() {
    let app = TestApp::start(|_| {}).expect("app loads");
    let admin = app.token(ADMIN).await;
    for jti in ["-Abc_9", "_x-1", "AbC"] {
        let reply = app.get_with(&format!("/api/admin/audit?jti={jti}"), &admin).await;
        assert_eq!(reply.status, 200, "jti {jti}: {}", reply.body);
    }
    assert_bad_request_naming(&app.get_with("/api/admin/audit?jti=a.b", &admin).await, "jti");
    assert_bad_request_naming(&app.get_with("/api/admin/audit?limit=0", &admin).await, "limit");
    assert_bad_request_naming(&app.get_with("/api/admin/audit?from=x", &admin).await, "from");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_without_credentials_gets_the_challenge_without_an_error_code() {
    let app = TestApp::start(|_| {}).expect("app loads");
    let token = app.token(ALICE).await;
    let none = app.send("GET", RECORDS, &[], "").await;
    let basic = app.send("GET", RECORDS, &[("authorization", "Basic YWxpY2U6eA==")], "").await;
    let bad = app.get_with(RECORDS, &format!("{token}x")).await;
    for (reply, challenge) in [(&none, "Bearer"), (&basic, "Bearer"), (&bad, r#"Bearer error="invalid_token""#)] {
        assert_eq!(reply.status, 401, "{}", reply.body);
        assert_eq!(reply.header("www-authenticate"), challenge);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repeated_break_glass_answers_the_live_grant_and_a_bad_reason_is_named() {
    let app = TestApp::start(|_| {}).expect("app loads");
    let doctor = app.token(DR_GREY).await;
    let auth = bearer(&doctor);
    let glass = |reason: &str| {
        let body = json!({ "reason": reason }).to_string();
        let auth = auth.clone();
        let app = &app;
        async move { app.send("POST", "/api/patients/p-1002/break-glass", &[JSON, ("authorization", &auth)], &body).await }
    };
    let first = glass("Unconscious in ED, no care team on shift").await;
    assert_eq!(first.status, 201, "{}", first.body);
    let again = glass("Still unconscious, second look at the chart").await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(
        (again.json()["granted_at"].clone(), again.json()["expires_at"].clone()),
        (first.json()["granted_at"].clone(), first.json()["expires_at"].clone())
    );
    assert_bad_request_naming(&glass("why").await, "reason");
}

/// Item 13: a patient consents only to an insurer client the tenant has registered and
/// enabled; the field is named when it is not one.
#[tokio::test(flavor = "multi_thread")]
async fn a_consent_names_a_registered_enabled_insurer() {
    let app = TestApp::start(|_| {}).expect("app");
    let alice = bearer(&app.token(ALICE).await);
    let consent =
        |insurer: &str| json!({ "insurer": insurer, "expires_at": health_e2e::unix_now() + 3600 }).to_string();
    let grant = |insurer: &'static str| {
        let (app, alice, body) = (&app, alice.clone(), consent(insurer));
        async move { app.send("POST", "/api/patients/p-1001/consents", &[JSON, ("authorization", &alice)], &body).await }
    };
    assert_eq!(grant("acme-health").await.status, 201);
    let unknown = grant("no-such-insurer").await;
    assert_eq!(unknown.status, 400, "{}", unknown.body);
    assert_bad_request_naming(&unknown, "insurer");
    assert_eq!(audited(&app, "/api/patients/p-1001/consents")["reason"], "insurer_not_registered");

    // Once the tenant admin disables the insurer, no new consent to it is taken.
    let admin = bearer(&app.token(ADMIN).await);
    let disabled = app.send("POST", "/auth/admin/clients/acme-health/disable", &[("authorization", &admin)], "").await;
    assert_eq!(disabled.status, 200, "{}", disabled.body);
    assert_eq!(grant("acme-health").await.status, 400);
}

/// Item 13: erasing a patient disables the account that owned the record and ends its
/// sessions: the erased patient can neither sign in nor refresh, and the audit log says why.
#[tokio::test(flavor = "multi_thread")]
async fn an_erased_patient_can_no_longer_sign_in_or_refresh() {
    let app = TestApp::start(|_| {}).expect("app");
    let tokens = app.tokens(ALICE).await;
    let refresh = tokens["refresh_token"].as_str().expect("refresh token").to_owned();
    let admin = bearer(&app.token(ADMIN).await);
    let erased = app.send("DELETE", "/api/admin/patients/p-1001", &[("authorization", &admin)], "").await;
    assert_eq!(erased.status, 200, "{}", erased.body);
    assert_eq!(erased.json()["account_disabled"], true);

    assert_eq!(app.login(ALICE).await.status, 401);
    let form = format!("grant_type=refresh_token&refresh_token={refresh}");
    let refreshed =
        app.send("POST", "/auth/token", &[("content-type", "application/x-www-form-urlencoded")], &form).await;
    assert_eq!(refreshed.status, 400, "{}", refreshed.body);
    let access = bearer(tokens["access_token"].as_str().expect("access token"));
    assert_eq!(app.send("GET", RECORDS, &[("authorization", &access)], "").await.status, 401);
    let reasons = app.query_strings("audit.db", "SELECT reason FROM audit_events WHERE action = 'user.disable'");
    assert_eq!(reasons, ["patient_erased"]);

    // Repeating the erasure is harmless: the account stays disabled.
    let again = app.send("DELETE", "/api/admin/patients/p-1001", &[("authorization", &admin)], "").await;
    assert_eq!((again.status, &again.json()["already_erased"]), (200, &json!(true)));
}
