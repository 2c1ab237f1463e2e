//! The first vertical slice end to end through the local host: login as a demo user, read
//! records through the gateway, refusals with the right status and body, the JWK Set verifying
//! the token in an independent JOSE library, and an intact, append-only audit chain.

use base64::Engine;
use health_e2e::{ADMIN, ALICE, BOB, DR_GREY, LAB, TestApp};
use std::sync::OnceLock;

fn app() -> &'static TestApp {
    static APP: OnceLock<TestApp> = OnceLock::new();
    APP.get_or_init(|| TestApp::start(|_| {}).expect("app loads"))
}

fn decode_part(token: &str, index: usize) -> serde_json::Value {
    let part = token.split('.').nth(index).expect("part");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).expect("base64url");
    serde_json::from_slice(&bytes).expect("json")
}

fn assert_unauthorized(reply: &health_e2e::Reply) {
    assert_eq!(reply.status, 401, "{}", reply.body);
    assert_eq!(reply.header("www-authenticate"), r#"Bearer error="invalid_token""#);
    assert_eq!(reply.header("content-type"), "application/problem+json");
    assert_eq!(reply.json()["type"], "https://health-platform.dev/problems/invalid-token");
}

#[tokio::test]
async fn login_issues_an_rs256_access_token_with_the_documented_claims() {
    let app = app();
    let reply = app.login(ALICE).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.header("cache-control"), "no-store");
    let body = reply.json();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    let token = body["access_token"].as_str().expect("token");
    let header = decode_part(token, 0);
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["typ"], "at+jwt");
    assert!(header["kid"].as_str().is_some_and(|k| k.len() == 43), "{header}");
    let claims = decode_part(token, 1);
    for claim in
        ["iss", "sub", "aud", "exp", "iat", "nbf", "jti", "tenant_id", "role", "scope", "client_id", "amr", "auth_time"]
    {
        assert!(claims.get(claim).is_some(), "missing {claim}: {claims}");
    }
    assert_eq!(claims["iss"], "http://127.0.0.1:3000/t/demo-hospital");
    assert_eq!(claims["tenant_id"], "demo-hospital");
    assert_eq!(claims["sub"], "u-alice");
    assert_eq!(claims["role"], "patient");
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 900);
}

#[tokio::test]
async fn wrong_password_and_unknown_user_get_the_same_refusal() {
    let app = app();
    let wrong = app.login(("alice", "not-her-password")).await;
    let unknown = app.login(("mallory", "whatever")).await;
    assert_eq!(wrong.status, 401);
    assert_eq!((wrong.status, wrong.body.as_str()), (unknown.status, unknown.body.as_str()));
    assert_eq!(wrong.header("content-type"), "application/problem+json");
    assert!(!wrong.body.contains("alice") && !wrong.body.contains("password"), "{}", wrong.body);
}

#[tokio::test]
async fn login_rejects_malformed_requests() {
    let app = app();
    let text = app.send("POST", "/auth/login", &[("content-type", "text/plain")], "{}").await;
    assert_eq!(text.status, 415);
    let bad = app.send("POST", "/auth/login", &[("content-type", "application/json")], "{\"tenant\":\"../x\"}").await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.header("content-type"), "application/problem+json");
}

#[tokio::test]
async fn patient_reads_own_record_but_not_another_patients() {
    let app = app();
    let token = app.token(ALICE).await;
    let own = app.get_with("/api/patients/p-1001/records", &token).await;
    assert_eq!(own.status, 200, "{}", own.body);
    assert_eq!(own.header("cache-control"), "no-store");
    assert_eq!(own.header("x-content-type-options"), "nosniff");
    let record = own.json();
    assert_eq!(record["patient"]["patient_id"], "p-1001");
    assert!(
        record["entries"]
            .as_array()
            .is_some_and(|e| { e.iter().any(|e| e["content"].as_str().is_some_and(|c| c.contains("E11.9"))) })
    );
    let other = app.get_with("/api/patients/p-1002/records", &token).await;
    assert_eq!(other.status, 403, "{}", other.body);
    assert_eq!(other.header("content-type"), "application/problem+json");
    assert!(!other.body.contains("Berg") && !other.body.contains("I10"), "{}", other.body);
    let bob = app.token(BOB).await;
    assert_eq!(app.get_with("/api/patients/p-1002/records", &bob).await.status, 200);
    assert_eq!(app.get_with("/api/patients/p-1001/records", &bob).await.status, 403);
}

#[tokio::test]
async fn doctor_reads_care_team_patients_only_and_other_roles_none() {
    let app = app();
    let doctor = app.token(DR_GREY).await;
    assert_eq!(app.get_with("/api/patients/p-1001/records", &doctor).await.status, 200);
    assert_eq!(app.get_with("/api/patients/p-1002/records", &doctor).await.status, 403);
    for user in [LAB, ADMIN] {
        let token = app.token(user).await;
        assert_eq!(app.get_with("/api/patients/p-1001/records", &token).await.status, 403, "{}", user.0);
    }
}

#[tokio::test]
async fn missing_malformed_and_forged_tokens_get_a_uniform_401() {
    let app = app();
    // Without bearer credentials the challenge carries no error code (RFC 6750 §3.1).
    for authorization in [&[][..], &[("authorization", "Basic YTpi")][..]] {
        let reply = app.send("GET", "/api/patients/p-1001/records", authorization, "").await;
        assert_eq!((reply.status, reply.header("www-authenticate")), (401, "Bearer"), "{}", reply.body);
        assert_eq!(reply.json()["type"], "https://health-platform.dev/problems/invalid-token");
    }
    assert_unauthorized(&app.get_with("/api/patients/p-1001/records", "not.a.token").await);
    let token = app.token(ALICE).await;
    let parts: Vec<&str> = token.split('.').collect();
    // Payload swapped for one claiming to be the doctor: the signature no longer matches.
    let mut claims = decode_part(&token, 1);
    claims["role"] = "doctor".into();
    claims["sub"] = "u-dr-grey".into();
    let forged_payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string());
    assert_unauthorized(
        &app.get_with("/api/patients/p-1002/records", &format!("{}.{forged_payload}.{}", parts[0], parts[2])).await,
    );
    // alg none with the original claims.
    let none = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"at+jwt"}"#);
    assert_unauthorized(&app.get_with("/api/patients/p-1001/records", &format!("{none}.{}.", parts[1])).await);
    // Unknown tenant.
    claims["tenant_id"] = "other-hospital".into();
    let other = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string());
    assert_unauthorized(
        &app.get_with("/api/patients/p-1001/records", &format!("{}.{other}.{}", parts[0], parts[2])).await,
    );
}

#[tokio::test]
async fn role_services_are_private() {
    let app = app();
    let token = app.token(ALICE).await;
    // The patient service's own path is not routable from outside.
    assert_eq!(app.get_with("/patients/p-1001/records", &token).await.status, 404);
    // Neither is jwks's signing endpoint.
    let sign = app.send("POST", "/internal/sign", &[("content-type", "application/json")], "{}").await;
    assert_eq!(sign.status, 404);
}

#[tokio::test]
async fn jwks_verifies_the_token_in_an_independent_jose_library() {
    let app = app();
    let token = app.token(ALICE).await;
    let jwks = app.send("GET", "/.well-known/jwks.json", &[], "").await;
    assert_eq!(jwks.status, 200);
    assert!(jwks.header("cache-control").starts_with("public, max-age="), "{}", jwks.header("cache-control"));
    // jsonwebtoken 9 cannot parse a JWK Set holding `ECDH-ES+A256KW` keys (its `alg` enum lacks
    // it), so hand it the signing keys; jwcrypto parses the whole set (tests/e2e/interop.rs).
    let mut all: serde_json::Value = serde_json::from_str(&jwks.body).expect("JSON");
    all["keys"].as_array_mut().expect("keys").retain(|k| k["use"] == "sig");
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(all).expect("a JWK Set");
    let kid = decode_part(&token, 0)["kid"].as_str().expect("kid").to_owned();
    let jwk = set.find(&kid).expect("token's kid is published");
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).expect("usable RSA key");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&["health-platform"]);
    validation.set_issuer(&["http://127.0.0.1:3000/t/demo-hospital"]);
    let data = jsonwebtoken::decode::<serde_json::Value>(&token, &key, &validation).expect("verifies independently");
    assert_eq!(data.claims["sub"], "u-alice");
    // A tampered token does not verify there either.
    let tampered = format!("{}x", &token[..token.len() - 1]);
    assert!(jsonwebtoken::decode::<serde_json::Value>(&tampered, &key, &validation).is_err());
    let tenant = app.send("GET", "/jwk/demo-hospital", &[], "").await;
    assert_eq!(tenant.status, 200);
    assert_eq!(tenant.json()["keys"][0]["kid"], kid.as_str());
    assert_eq!(tenant.json()["keys"][0]["tenant_id"], "demo-hospital");
    assert!(tenant.json()["keys"][0].get("d").is_none(), "private material published");
    assert_eq!(app.send("GET", "/jwk/unknown-tenant", &[], "").await.status, 404);
}

#[tokio::test]
async fn gateway_accepts_a_token_minted_by_an_independent_library_with_the_tenants_key() {
    use rsa::pkcs1::EncodeRsaPrivateKey;
    let app = app();
    app.token(ALICE).await;
    let (kid, key) = app.tenant_private_key("demo-hospital");
    let der = key.to_pkcs1_der().expect("PKCS#1");
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.typ = Some("at+jwt".into());
    header.kid = Some(kid);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    let claims = serde_json::json!({
        "iss": "http://127.0.0.1:3000/t/demo-hospital", "sub": "u-alice", "aud": "health-platform",
        "exp": now + 300, "iat": now, "nbf": now, "jti": "minted-by-jsonwebtoken", "tenant_id": "demo-hospital",
        "role": "patient", "scope": "patient/records.read", "client_id": "interop", "amr": ["pwd"], "auth_time": now,
    });
    let token = jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_rsa_der(der.as_bytes()))
        .expect("encodes");
    assert_eq!(app.get_with("/api/patients/p-1001/records", &token).await.status, 200);
    // The same library's token without the access-token type is refused.
    header.typ = Some("JWT".into());
    let wrong_type = jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_rsa_der(der.as_bytes()))
        .expect("encodes");
    assert_unauthorized(&app.get_with("/api/patients/p-1001/records", &wrong_type).await);
}

#[tokio::test]
async fn every_gateway_request_is_audited_in_an_intact_append_only_chain() {
    let app = app();
    let token = app.token(ALICE).await;
    assert_eq!(app.get_with("/api/patients/p-1001/records", &token).await.status, 200);
    assert_eq!(app.get_with("/api/patients/p-1002/records", &token).await.status, 403);
    let db = rusqlite::Connection::open(app.state.path().join("audit.db")).expect("audit db");
    let mut stmt = db
        .prepare("SELECT seq, event, prev_hash, hash FROM audit_events WHERE tenant_id = 'demo-hospital' ORDER BY seq")
        .expect("query");
    let rows: Vec<health_core::audit::StoredLink> = stmt
        .query_map([], |r| {
            Ok(health_core::audit::StoredLink {
                seq: r.get(0)?,
                event_json: r.get(1)?,
                prev_hash: r.get(2)?,
                hash: r.get(3)?,
            })
        })
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert!(rows.len() >= 3, "expected login and record events, got {}", rows.len());
    assert!(health_core::audit::verify_chain(&rows).is_ok());
    let events: Vec<serde_json::Value> =
        rows.iter().map(|r| serde_json::from_str(&r.event_json).expect("event")).collect();
    assert!(
        events.iter().any(|e| e["reason"] == "not_own_record" && e["status"] == 403 && e["patient_id"] == "p-1002")
    );
    assert!(events.iter().any(|e| e["action"] == "auth.login" && e["outcome"] == "allow"));
    assert!(!rows.iter().any(|r| r.event_json.contains("alice-demo-2026")), "password in audit");
    assert!(db.execute("UPDATE audit_events SET reason = 'x'", []).is_err(), "audit rows are updatable");
    assert!(db.execute("DELETE FROM audit_events", []).is_err(), "audit rows are deletable");
}

#[tokio::test]
async fn an_audit_write_failure_fails_the_request_without_data() {
    let app = TestApp::start(|_| {}).expect("app loads");
    let token = app.token(ALICE).await;
    assert_eq!(app.get_with("/api/patients/p-1001/records", &token).await.status, 200);
    // Replace the audit table with one that cannot take the gateway's rows.
    let db = rusqlite::Connection::open(app.state.path().join("audit.db")).expect("db");
    db.execute_batch(
        "DROP TABLE audit_events; CREATE TABLE audit_events (tenant_id TEXT NOT NULL, seq INTEGER, CHECK (seq < 0));",
    )
    .expect("break audit");
    let reply = app.get_with("/api/patients/p-1001/records", &token).await;
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert!(!reply.body.contains("E11.9") && !reply.body.contains("Andersen"), "{}", reply.body);
    // Login is audited too and fails closed the same way.
    assert_eq!(app.login(ALICE).await.status, 500);
}
