//! Key lifecycle end to end: the operator rotates a tenant's signing key, tokens signed before
//! the rotation keep working while their key is retiring, new tokens use the new key, and a
//! revoked key's tokens are refused at once. Uses its own app, since it revokes keys.

use health_e2e::{ALICE, OPERATOR_TOKEN, TestApp, send_from};

fn kid_of(token: &str) -> String {
    use base64::Engine;
    let header =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token.split('.').next().expect("header")).expect("b64");
    serde_json::from_slice::<serde_json::Value>(&header).expect("json")["kid"].as_str().expect("kid").to_owned()
}

/// The signing keys' kids in a JWK Set.
fn published_kids(reply: &health_e2e::Reply) -> Vec<String> {
    let keys = reply.json()["keys"].as_array().expect("keys").clone();
    keys.iter().filter(|k| k["use"] == "sig").map(|k| k["kid"].as_str().expect("kid").to_owned()).collect()
}

const RECORD: &str = "/api/patients/p-1001/records";

#[tokio::test]
async fn rotation_keeps_old_tokens_until_revocation_refuses_them_at_once() {
    let app = TestApp::start(|_| {}).expect("app loads");
    let operator = format!("Bearer {OPERATOR_TOKEN}");
    let json = ("content-type", "application/json");
    let old_token = app.token(ALICE).await;
    let old_kid = kid_of(&old_token);

    // Only the operator may rotate.
    let body = r#"{"tenant_id":"demo-hospital","use":"sig"}"#;
    assert_eq!(app.send("POST", "/admin/rotate-key", &[json], body).await.status, 401);
    assert_eq!(
        app.send("POST", "/admin/rotate-key", &[json, ("authorization", "Bearer guess")], body).await.status,
        401
    );
    let alice_as_operator = format!("Bearer {old_token}");
    assert_eq!(
        app.send("POST", "/admin/rotate-key", &[json, ("authorization", &alice_as_operator)], body).await.status,
        403
    );

    let rotated = app.send("POST", "/admin/rotate-key", &[json, ("authorization", &operator)], body).await;
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    let new_kid = rotated.json()["kid"].as_str().expect("kid").to_owned();
    assert_ne!(new_kid, old_kid);

    let set = app.send("GET", "/jwk/demo-hospital", &[], "").await;
    assert_eq!(published_kids(&set), [old_kid.as_str(), new_kid.as_str()]);
    let listed = app.send("GET", "/admin/keys/demo-hospital", &[("authorization", &operator)], "").await.json();
    let status_of = |kid: &str| {
        listed["keys"].as_array().expect("keys").iter().find(|k| k["kid"] == kid).expect("listed")["status"].clone()
    };
    assert_eq!(status_of(&old_kid), "retiring");
    assert_eq!(status_of(&new_kid), "active");
    assert!(!listed.to_string().contains("\"d\""), "private material listed");

    // A token from before the rotation still works; new tokens carry the new kid.
    assert_eq!(app.get_with(RECORD, &old_token).await.status, 200);
    let new_token = app.token(ALICE).await;
    assert_eq!(kid_of(&new_token), new_kid);
    assert_eq!(app.get_with(RECORD, &new_token).await.status, 200);

    // Revocation is immediate for every token of that kid, and only that kid.
    let revoke = format!(r#"{{"tenant_id":"demo-hospital","kid":"{old_kid}"}}"#);
    assert_eq!(app.send("POST", "/admin/revoke-key", &[json, ("authorization", &operator)], &revoke).await.status, 200);
    assert_eq!(app.get_with(RECORD, &old_token).await.status, 401);
    assert_eq!(app.get_with(RECORD, &new_token).await.status, 200);
    assert_eq!(published_kids(&app.send("GET", "/jwk/demo-hospital", &[], "").await), [new_kid.as_str()]);
    assert_eq!(app.send("POST", "/admin/revoke-key", &[json, ("authorization", &operator)], &revoke).await.status, 409);
    let unknown = r#"{"tenant_id":"demo-hospital","kid":"nope"}"#;
    assert_eq!(app.send("POST", "/admin/revoke-key", &[json, ("authorization", &operator)], unknown).await.status, 404);
    let other_tenant = r#"{"tenant_id":"other-hospital","use":"sig"}"#;
    assert_eq!(
        app.send("POST", "/admin/rotate-key", &[json, ("authorization", &operator)], other_tenant).await.status,
        404
    );

    // Both signing keys' private halves (and the encryption key's) exist only sealed, in the
    // jwks-only store.
    let sealed = app.query_strings(
        "private-keys.db",
        "SELECT CAST(value AS TEXT) FROM spin_key_value WHERE store = 'private-keys'",
    );
    assert_eq!(sealed.len(), 3);
    assert!(sealed.iter().all(|v| v.starts_with("v1.")), "private keys stored unsealed");
    let actions = app.query_strings(
        "audit.db",
        "SELECT json_extract(event, '$.action') FROM audit_events WHERE tenant_id = 'demo-hospital'",
    );
    for action in ["key.create", "key.rotate", "key.revoke"] {
        assert!(actions.iter().any(|a| a == action), "{action} not audited: {actions:?}");
    }
    let denied = app.query_strings(
        "audit.db",
        "SELECT reason FROM audit_events WHERE reason IN ('bad_operator_token', 'missing_or_repeated_authorization', 'not_an_admin')",
    );
    assert_eq!(denied.len(), 3, "refused admin attempts are audited: {denied:?}");
}

async fn post(app: &health_e2e::Target, path: &str, auth: Option<&str>, body: &str) -> (u16, serde_json::Value) {
    let mut headers = vec![("content-type", "application/json")];
    headers.extend(auth.map(|auth| ("authorization", auth)));
    let reply = send_from(app, health_host::DEFAULT_CLIENT, "POST", path, &headers, body).await;
    (reply.status, serde_json::from_str(&reply.body).unwrap_or(serde_json::Value::Null))
}

/// `n` logins as Alice at once, each from its own address (concurrent attempts from one
/// address count against the lockout in advance); every one must succeed. Returns the tokens.
async fn concurrent_logins(app: &TestApp, n: usize) -> Vec<String> {
    let login = r#"{"tenant":"demo-hospital","username":"alice","password":"alice-demo-2026"}"#;
    let mut logins = tokio::task::JoinSet::new();
    for i in 0..n {
        let app = app.app.clone();
        let from = std::net::SocketAddr::from(([10, 0, 0, u8::try_from(i + 1).expect("small n")], 40000));
        logins.spawn(async move {
            let reply =
                send_from(&app, from, "POST", "/auth/login", &[("content-type", "application/json")], login).await;
            (reply.status, reply.json())
        });
    }
    let mut tokens = Vec::new();
    while let Some(result) = logins.join_next().await {
        let (status, body) = result.expect("join");
        assert_eq!(status, 200, "{body}");
        tokens.push(body["access_token"].as_str().expect("token").to_owned());
    }
    tokens
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_logins_on_a_fresh_tenant_all_get_working_tokens() {
    let app = TestApp::start(|_| {}).expect("app loads");
    let mut kids = std::collections::BTreeSet::new();
    for token in concurrent_logins(&app, 8).await {
        kids.insert(kid_of(&token));
        assert_eq!(app.get_with(RECORD, &token).await.status, 200, "a racing login's token does not verify");
    }
    assert_eq!(kids.len(), 1, "racing bootstraps published different keys: {kids:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_concurrent_rotation_never_undoes_a_revocation() {
    let app = TestApp::start(|_| {}).expect("app loads");
    let operator = format!("Bearer {OPERATOR_TOKEN}");
    for round in 0..3 {
        let token = app.token(ALICE).await;
        let kid = kid_of(&token);
        let (a, b) = (app.app.clone(), app.app.clone());
        let (op_a, op_b) = (operator.clone(), operator.clone());
        let revoke_body = format!(r#"{{"tenant_id":"demo-hospital","kid":"{kid}"}}"#);
        let rotate = tokio::spawn(async move {
            post(&a, "/admin/rotate-key", Some(&op_a), r#"{"tenant_id":"demo-hospital"}"#).await
        });
        let revoke = tokio::spawn(async move { post(&b, "/admin/revoke-key", Some(&op_b), &revoke_body).await });
        assert_eq!(rotate.await.expect("join").0, 200, "round {round}");
        assert_eq!(revoke.await.expect("join").0, 200, "round {round}");
        assert_eq!(app.get_with(RECORD, &token).await.status, 401, "round {round}: revocation undone");
        let listed = app.send("GET", "/admin/keys/demo-hospital", &[("authorization", &operator)], "").await.json();
        let active = listed["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .filter(|k| k["status"] == "active" && k["use"] == "sig")
            .count();
        assert_eq!(active, 1, "round {round}: {listed}");
        assert_eq!(app.get_with(RECORD, &app.token(ALICE).await).await.status, 200, "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_old_active_key_rotates_exactly_once_on_the_next_signings() {
    let app = TestApp::start(|_| {}).expect("app loads");
    let before = app.token(ALICE).await;
    let old_kid = kid_of(&before);
    // Age the active key past key_rotation_days (90) in the store, as time would.
    let ninety_one_days_ago =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() - 91 * 86_400;
    let db = rusqlite::Connection::open(app.state.path().join("public-keys.db")).expect("db");
    let aged = db
        .execute(
            "UPDATE spin_key_value SET value = CAST(json_set(CAST(value AS TEXT), '$.keys[0].created_at', ?1) AS BLOB)
             WHERE store = 'public-keys' AND key = 'tenant/demo-hospital'",
            [ninety_one_days_ago],
        )
        .expect("age key");
    assert_eq!(aged, 1);

    let kids: std::collections::BTreeSet<String> = concurrent_logins(&app, 6).await.iter().map(|t| kid_of(t)).collect();
    assert_eq!(kids.len(), 1, "racing signers rotated more than once: {kids:?}");
    assert!(!kids.contains(&old_kid), "the aged key still signs");

    let operator = format!("Bearer {OPERATOR_TOKEN}");
    let listed = app.send("GET", "/admin/keys/demo-hospital", &[("authorization", &operator)], "").await.json();
    let signing = listed["keys"].as_array().expect("keys").iter().filter(|k| k["use"] == "sig");
    let statuses: Vec<String> = signing.map(|k| k["status"].as_str().expect("status").to_owned()).collect();
    assert_eq!(statuses, ["retiring", "active"], "{listed}");
    // The token from before the rotation still works while its key is retiring.
    assert_eq!(app.get_with(RECORD, &before).await.status, 200);
    let rotations = app.query_strings(
        "audit.db",
        "SELECT reason FROM audit_events WHERE json_extract(event, '$.action') = 'key.rotate'",
    );
    assert!(!rotations.is_empty() && rotations.iter().all(|r| r == "scheduled"), "{rotations:?}");
}

#[tokio::test]
async fn a_remembered_verification_never_outlives_a_revoked_key_or_jti() {
    let app = TestApp::start(|_| {}).expect("app loads");
    let operator = format!("Bearer {OPERATOR_TOKEN}");
    let json = ("content-type", "application/json");
    let token = app.token(ALICE).await;
    // The first use verifies in full and remembers it; the second is answered from the cache.
    assert_eq!(app.get_with(RECORD, &token).await.status, 200);
    assert_eq!(app.get_with(RECORD, &token).await.status, 200);
    let hash = health_core::sha256_hex(&token);
    let remembered =
        app.query_strings("audit.db", &format!("SELECT kid FROM verified_tokens WHERE token_hash = '{hash}'"));
    assert_eq!(remembered, [kid_of(&token)]);
    // A remembered token with its payload altered is another token: it is verified afresh and refused.
    let mut forged: Vec<&str> = token.split('.').collect();
    let claims = base64_payload_with(forged[1], "role", "doctor");
    forged[1] = &claims;
    assert_eq!(app.get_with(RECORD, &forged.join(".")).await.status, 401);
    // Its jti revoked: refused at once, although remembered.
    let other = app.token(ALICE).await;
    assert_eq!(app.get_with(RECORD, &other).await.status, 200);
    let jti = base64_claim(&other, "jti");
    let revoke = format!(r#"{{"jti":"{jti}","tenant_id":"demo-hospital"}}"#);
    let revoked = app.send("POST", "/admin/revoke-token", &[json, ("authorization", &operator)], &revoke).await;
    assert_eq!(revoked.status, 200, "{}", revoked.body);
    assert_eq!(app.get_with(RECORD, &other).await.status, 401);
    // Its key revoked: refused at once, although remembered.
    let rotate = r#"{"tenant_id":"demo-hospital","use":"sig"}"#;
    assert_eq!(app.send("POST", "/admin/rotate-key", &[json, ("authorization", &operator)], rotate).await.status, 200);
    let body = format!(r#"{{"tenant_id":"demo-hospital","kid":"{}"}}"#, kid_of(&token));
    let revoked = app.send("POST", "/admin/revoke-key", &[json, ("authorization", &operator)], &body).await;
    assert_eq!(revoked.status, 200, "{}", revoked.body);
    assert_eq!(app.get_with(RECORD, &token).await.status, 401);
    let reasons = app.query_strings(
        "audit.db",
        "SELECT reason FROM audit_events WHERE action = 'GET /api/patients/{id}/records' ORDER BY rowid DESC LIMIT 1",
    );
    assert_eq!(reasons, ["key_revoked"]);
}

fn base64_claim(token: &str, name: &str) -> String {
    use base64::Engine;
    let payload = token.split('.').nth(1).expect("payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).expect("b64");
    serde_json::from_slice::<serde_json::Value>(&bytes).expect("json")[name].as_str().expect("claim").to_owned()
}

fn base64_payload_with(payload: &str, name: &str, value: &str) -> String {
    use base64::Engine;
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut claims: serde_json::Value = serde_json::from_slice(&engine.decode(payload).expect("b64")).expect("json");
    claims[name] = value.into();
    engine.encode(claims.to_string())
}
