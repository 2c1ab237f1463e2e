//! The identity flows of `auth` end to end through the local host with the demo tenant:
//! login and its uniform failures, lockout per user and source, TOTP enrolment and reuse,
//! refresh rotation and family revocation on reuse, logout and logout-all, insurer tokens by
//! client secret and `private_key_jwt`, validation, introspection, revocation, discovery
//! (checked by Authlib), the admin API, and that no secret reaches the audit log.

use std::net::SocketAddr;
use std::process::{Command, Stdio};

use health_core::b64url;
use health_e2e::{ADMIN, ALICE, DR_GREY, OPERATOR_TOKEN, Reply, TestApp, root, send_from};
use serde_json::{Value, json};

const ACME_ID: &str = "acme-health";
const ACME_SECRET: &str = "acme-health-demo-secret-2026";
const JSON: (&str, &str) = ("content-type", "application/json");
const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");

fn form(pairs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (name, value) in pairs {
        if !out.is_empty() {
            out.push('&');
        }
        let value: String = value
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => char::from(b).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        out.push_str(&format!("{name}={value}"));
    }
    out
}

fn basic(id: &str, secret: &str) -> String {
    use base64::Engine;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}")))
}

async fn post_form(app: &TestApp, path: &str, auth: Option<&str>, pairs: &[(&str, &str)]) -> Reply {
    let mut headers = vec![FORM];
    if let Some(auth) = auth {
        headers.push(("authorization", auth));
    }
    app.send("POST", path, &headers, &form(pairs)).await
}

async fn refresh(app: &TestApp, token: &str) -> Reply {
    post_form(app, "/auth/token", None, &[("grant_type", "refresh_token"), ("refresh_token", token)]).await
}

async fn validate(app: &TestApp, token: &str) -> Value {
    let reply = app.send("POST", "/api/auth/validate", &[JSON], &json!({ "token": token }).to_string()).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()
}

async fn introspect(app: &TestApp, token: &str) -> Value {
    let reply = post_form(app, "/auth/introspect", Some(&basic(ACME_ID, ACME_SECRET)), &[("token", token)]).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()
}

/// A JSON POST from client address `from`.
async fn post_from(app: &TestApp, from: SocketAddr, path: &str, body: &Value) -> Reply {
    send_from(&app.app, from, "POST", path, &[JSON], &body.to_string()).await
}

fn claims_of(jws: &str) -> Value {
    let payload = jws.split('.').nth(1).expect("payload");
    serde_json::from_slice(&health_core::b64url_decode(payload).expect("base64url")).expect("claims")
}

fn audit_reasons(app: &TestApp, action: &str) -> Vec<String> {
    app.query_strings(
        "audit.db",
        &format!("SELECT reason FROM audit_events WHERE json_extract(event, '$.action') = '{action}' ORDER BY seq"),
    )
}

#[tokio::test]
async fn login_issues_access_and_refresh_tokens_and_insurers_get_a_one_time_jwe_only() {
    let app = TestApp::start(|_| {}).expect("app loads");
    let alice = app.tokens(ALICE).await;
    let claims = claims_of(alice["access_token"].as_str().expect("access"));
    assert_eq!(claims["amr"], json!(["pwd"]));
    assert!(claims["exp"].as_i64().expect("exp") - claims["iat"].as_i64().expect("iat") <= 900);
    let refresh_token = alice["refresh_token"].as_str().expect("refresh token");
    assert_eq!(health_core::b64url_decode(refresh_token).map(|b| b.len()), Some(32), "256-bit opaque token");
    // Only its hash is stored.
    let stored = app.query_strings("identity.db", "SELECT token_hash FROM refresh_tokens");
    assert_eq!(stored, [health_core::sha256_hex(refresh_token)]);

    let insurer = app.login(("acme-insurance", "acme-demo-2026")).await;
    assert_eq!(insurer.status, 200, "{}", insurer.body);
    let insurer = insurer.json();
    assert_eq!(insurer["access_token"].as_str().expect("token").split('.').count(), 5, "a compact JWE");
    assert!(insurer.get("refresh_token").is_none(), "insurers never get refresh tokens");
    assert!(insurer["expires_in"].as_i64().expect("expires_in") <= 300);
}

#[tokio::test]
async fn lockout_counts_per_user_and_source_and_lifts_after_the_configured_time() {
    let app = TestApp::start_with_variables(&[("lockout_duration_secs", "3")]).expect("app loads");
    let attacker: SocketAddr = ([203, 0, 113, 9], 50000).into();
    let user: SocketAddr = ([198, 51, 100, 7], 50001).into();
    let wrong = json!({ "tenant": "demo-hospital", "username": "alice", "password": "guess-guess-guess" });
    let right = json!({ "tenant": "demo-hospital", "username": "alice", "password": ALICE.1 });
    for attempt in 1..=5 {
        let reply = post_from(&app, attacker, "/auth/login", &wrong).await;
        assert_eq!(reply.status, 401, "attempt {attempt}: {}", reply.body);
    }
    // Locked for the attacker's address, even with the right password...
    let locked = post_from(&app, attacker, "/auth/login", &right).await;
    assert_eq!(locked.status, 429, "{}", locked.body);
    assert_eq!(locked.json()["type"], "https://health-platform.dev/problems/login-locked");
    assert!(!locked.header("retry-after").is_empty());
    // ...but the user, elsewhere, is not locked out.
    let elsewhere = post_from(&app, user, "/auth/login", &right).await;
    assert_eq!(elsewhere.status, 200, "{}", elsewhere.body);
    // Unknown users lock the same way, so locking reveals nothing.
    let ghost = json!({ "tenant": "demo-hospital", "username": "nobody", "password": "guess-guess-guess" });
    for _ in 0..5 {
        assert_eq!(post_from(&app, attacker, "/auth/login", &ghost).await.status, 401);
    }
    assert_eq!(post_from(&app, attacker, "/auth/login", &ghost).await.status, 429);
    // The lock lifts by itself.
    tokio::time::sleep(std::time::Duration::from_millis(3500)).await;
    let lifted = post_from(&app, attacker, "/auth/login", &right).await;
    assert_eq!(lifted.status, 200, "{}", lifted.body);
    assert_eq!(audit_reasons(&app, "auth.lockout"), ["locked_for_3s", "locked_for_3s"]);
    let refusals = audit_reasons(&app, "auth.login");
    assert!(refusals.iter().filter(|r| *r == "locked_out").count() == 2, "{refusals:?}");
    assert!(refusals.contains(&"bad_password".to_owned()) && refusals.contains(&"unknown_user".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_guesses_cannot_outrun_the_lockout() {
    let app = TestApp::start(|_| {}).expect("app loads");
    let from: SocketAddr = ([203, 0, 113, 10], 50000).into();
    let wrong = json!({ "tenant": "demo-hospital", "username": "bob", "password": "guess-guess-guess" });
    let mut guesses = tokio::task::JoinSet::new();
    for _ in 0..24 {
        let app = app.app.clone();
        let body = wrong.to_string();
        guesses.spawn(async move { send_from(&app, from, "POST", "/auth/login", &[JSON], &body).await.status });
    }
    let mut statuses = Vec::new();
    while let Some(status) = guesses.join_next().await {
        statuses.push(status.expect("join"));
    }
    let checked = statuses.iter().filter(|s| **s == 401).count();
    assert_eq!(checked, 5, "exactly the allowed number of passwords were checked: {statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 19);
}

#[tokio::test]
async fn doctors_must_enrol_totp_and_a_code_works_once() {
    let app = TestApp::start(|_| {}).expect("app loads");
    let refused = app.login(DR_GREY).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert_eq!(refused.json()["type"], "https://health-platform.dev/problems/mfa-enrollment-required");

    let enrolled = app.enroll_totp(DR_GREY).await;
    let uri = enrolled["otpauth_uri"].as_str().expect("uri");
    assert!(uri.starts_with("otpauth://totp/Health%20demo-hospital%3Adr-grey?secret="), "{uri}");
    let secret = enrolled["secret"].as_str().expect("secret");
    // Stored sealed, not in clear (neither raw nor base32).
    let stored = app.query_strings("identity.db", "SELECT secret_sealed FROM mfa");
    assert_eq!(stored.len(), 1);
    assert!(!stored[0].contains(secret));
    // A second enrolment is refused once confirmed.
    let again = json!({ "tenant": "demo-hospital", "username": DR_GREY.0, "password": DR_GREY.1 });
    assert_eq!(app.send("POST", "/auth/mfa/enroll", &[JSON], &again.to_string()).await.status, 409);

    let no_code = app.login(DR_GREY).await;
    assert_eq!(no_code.status, 401);
    assert_eq!(no_code.json()["type"], "https://health-platform.dev/problems/mfa-required");
    let wrong = app.login_with_otp(DR_GREY, "000000").await;
    assert_eq!(wrong.status, 401);
    let code = app.next_otp(DR_GREY.0).await;
    let ok = app.login_with_otp(DR_GREY, &code).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(claims_of(ok.json()["access_token"].as_str().expect("token"))["amr"], json!(["pwd", "otp"]));
    let replay = app.login_with_otp(DR_GREY, &code).await;
    assert_eq!(replay.status, 401, "a code is good once");
    let reasons = audit_reasons(&app, "auth.login");
    for expected in ["mfa_enrollment_required", "mfa_required", "mfa_failed", "mfa_code_reused", "token_issued"] {
        assert!(reasons.contains(&expected.to_owned()), "{expected} missing from {reasons:?}");
    }
}

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_whole_family() {
    let app = TestApp::start(|_| {}).expect("app loads");
    let first = app.tokens(ALICE).await;
    let r1 = first["refresh_token"].as_str().expect("r1").to_owned();
    let second = refresh(&app, &r1).await;
    assert_eq!(second.status, 200, "{}", second.body);
    let second = second.json();
    let r2 = second["refresh_token"].as_str().expect("r2").to_owned();
    assert_ne!(r1, r2, "rotated");
    let access2 = second["access_token"].as_str().expect("access").to_owned();
    assert_eq!(validate(&app, &access2).await["valid"], true);

    // The spent r1 comes back: the family dies, r2 and the access tokens issued with it too.
    let reuse = refresh(&app, &r1).await;
    assert_eq!(reuse.status, 400);
    assert_eq!(reuse.json()["error"], "invalid_grant");
    assert_eq!(refresh(&app, &r2).await.status, 400, "the family is revoked");
    assert_eq!(validate(&app, &access2).await, json!({ "valid": false }));
    assert!(audit_reasons(&app, "auth.token.refresh").contains(&"refresh_reuse_family_revoked".to_owned()));

    // Malformed and unknown refresh tokens, and bad grant requests, are clear OAuth errors.
    assert_eq!(refresh(&app, "nope").await.json()["error"], "invalid_grant");
    let unsupported = post_form(&app, "/auth/token", None, &[("grant_type", "password")]).await;
    assert_eq!((unsupported.status, unsupported.json()["error"].clone()), (400, json!("unsupported_grant_type")));
    let repeated = app.send("POST", "/auth/token", &[FORM], "grant_type=refresh_token&grant_type=refresh_token").await;
    assert_eq!(repeated.json()["error"], "invalid_request");
    let json_body = app.send("POST", "/auth/token", &[JSON], "{}").await;
    assert_eq!(json_body.status, 415);
}

#[tokio::test]
async fn logout_ends_one_session_and_logout_all_ends_every_one() {
    let app = TestApp::start(|_| {}).expect("app loads");
    let one = app.tokens(ALICE).await;
    let two = app.tokens(ALICE).await;
    let (access1, access2) = (one["access_token"].as_str().expect("a1"), two["access_token"].as_str().expect("a2"));
    let bearer = |t: &str| format!("Bearer {t}");

    let out = app.send("POST", "/auth/logout", &[("authorization", &bearer(access1))], "").await;
    assert_eq!(out.status, 204, "{}", out.body);
    assert_eq!(validate(&app, access1).await["valid"], false);
    assert_eq!(refresh(&app, one["refresh_token"].as_str().expect("r1")).await.status, 400);
    assert_eq!(validate(&app, access2).await["valid"], true, "the other session lives on");

    let all = app.send("POST", "/auth/logout-all", &[("authorization", &bearer(access2))], "").await;
    assert_eq!(all.status, 204, "{}", all.body);
    assert_eq!(validate(&app, access2).await["valid"], false);
    assert_eq!(introspect(&app, access2).await, json!({ "active": false }));
    assert_eq!(refresh(&app, two["refresh_token"].as_str().expect("r2")).await.status, 400);
    // A new login right away works (its iat is past the not-before).
    let three = app.token(ALICE).await;
    assert_eq!(validate(&app, &three).await["valid"], true);
    let denied = app.send("POST", "/auth/logout", &[("authorization", "Bearer forged.token.here")], "").await;
    assert_eq!(denied.status, 401);
    assert_eq!(audit_reasons(&app, "auth.logout_all"), ["all_sessions_ended"]);
}

#[tokio::test]
async fn validate_and_introspect_report_active_tokens_until_revoked() {
    let app = TestApp::start(|_| {}).expect("app loads");
    let alice = app.tokens(ALICE).await;
    let access = alice["access_token"].as_str().expect("access");
    let valid = validate(&app, access).await;
    assert_eq!(valid["valid"], true);
    assert_eq!(valid["user"]["username"], "alice");
    assert_eq!(valid["user"]["role"], "patient");
    assert_eq!(valid["user"]["id"], "u-alice");
    assert!(valid["user"]["permissions"].as_array().expect("permissions").contains(&json!("patient/records.read")));
    assert!(valid["user"]["expiresAt"].as_str().expect("expiresAt").ends_with('Z'));

    let active = introspect(&app, access).await;
    assert_eq!((active["active"].clone(), active["sub"].clone()), (json!(true), json!("u-alice")));
    let refresh_state = introspect(&app, alice["refresh_token"].as_str().expect("refresh")).await;
    assert_eq!(refresh_state["token_type"], "refresh_token");

    // Introspection needs a registered client; the public web client cannot.
    let public = post_form(&app, "/auth/introspect", None, &[("token", access), ("client_id", "health-web")]).await;
    assert_eq!(public.status, 401);
    let wrong = post_form(&app, "/auth/introspect", Some(&basic(ACME_ID, "wrong")), &[("token", access)]).await;
    assert_eq!((wrong.status, wrong.json()["error"].clone()), (401, json!("invalid_client")));
    assert!(wrong.header("www-authenticate").starts_with("Basic"));

    // RFC 7009 by the client the token was issued to (the public web client).
    let revoked = post_form(&app, "/auth/revoke", None, &[("token", access), ("client_id", "health-web")]).await;
    assert_eq!(revoked.status, 200, "{}", revoked.body);
    assert_eq!(validate(&app, access).await, json!({ "valid": false }));
    assert_eq!(introspect(&app, access).await, json!({ "active": false }));
    // The revocation lasts exactly the token's remaining life (plus the clock tolerance).
    let exp = claims_of(access)["exp"].as_i64().expect("exp");
    let jti = claims_of(access)["jti"].as_str().expect("jti").to_owned();
    let until: Vec<String> = {
        let conn = rusqlite::Connection::open(app.state.path().join("revocations.db")).expect("db");
        let value: Vec<u8> = conn
            .query_row("SELECT value FROM spin_key_value WHERE key = ?1", [format!("jti/demo-hospital/{jti}")], |r| {
                r.get(0)
            })
            .expect("revocation stored");
        vec![String::from_utf8(value).expect("utf8")]
    };
    assert_eq!(until, [(exp + 60).to_string()]);
    // Unknown tokens are fine to revoke (RFC 7009 §2.2); a garbage validate is simply invalid.
    assert_eq!(post_form(&app, "/auth/revoke", None, &[("token", "x"), ("client_id", "health-web")]).await.status, 200);
    assert_eq!(validate(&app, "not-a-token").await, json!({ "valid": false }));
    assert!(audit_reasons(&app, "auth.revoke").contains(&"access_token_revoked".to_owned()));
}

#[tokio::test]
async fn insurers_get_one_time_jwe_tokens_by_secret_or_private_key_jwt() {
    let app = TestApp::start(|_| {}).expect("app loads");
    let grant = [("grant_type", "client_credentials")];
    let reply = post_form(&app, "/auth/token", Some(&basic(ACME_ID, ACME_SECRET)), &grant).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let body = reply.json();
    let jwe = body["access_token"].as_str().expect("token");
    assert_eq!(jwe.split('.').count(), 5);
    assert!(body.get("refresh_token").is_none());
    assert_eq!(body["scope"], "insurance/summary.read");
    let header: Value =
        serde_json::from_slice(&health_core::b64url_decode(jwe.split('.').next().expect("header")).expect("b64"))
            .expect("header json");
    assert_eq!((header["cty"].clone(), header["alg"].clone()), (json!("JWT"), json!("ECDH-ES+A256KW")));
    let valid = validate(&app, jwe).await;
    assert_eq!((valid["valid"].clone(), valid["user"]["role"].clone()), (json!(true), json!("insurance")));
    assert_eq!(introspect(&app, jwe).await["encrypted"], true);

    let wrong = post_form(&app, "/auth/token", Some(&basic(ACME_ID, "not-the-secret")), &grant).await;
    assert_eq!((wrong.status, wrong.json()["error"].clone()), (401, json!("invalid_client")));
    let scope = post_form(
        &app,
        "/auth/token",
        Some(&basic(ACME_ID, ACME_SECRET)),
        &[("grant_type", "client_credentials"), ("scope", "patient/records.write")],
    )
    .await;
    assert_eq!(scope.json()["error"], "invalid_scope");

    // The tenant admin registers an insurer that authenticates with private_key_jwt.
    let admin = app.token(ADMIN).await;
    let tenant = health_core::TenantId::parse("demo-hospital").expect("tenant");
    let (sig_private, sig) =
        health_jose::generate(health_jose::Algorithm::Es256, &tenant, 0, &mut rand_core::OsRng).expect("sig key");
    let (_, enc) = health_jose::generate(health_jose::Algorithm::EcdhEsA256kw, &tenant, 0, &mut rand_core::OsRng)
        .expect("enc key");
    let public = |record: &health_jose::KeyRecord| {
        let mut jwk = serde_json::to_value(&record.jwk).expect("jwk");
        jwk.as_object_mut().expect("object").remove("tenant_id");
        jwk
    };
    let registration = json!({ "name": "Northwind Mutual", "enc_jwk": public(&enc), "sig_jwk": public(&sig) });
    let created = app
        .send(
            "POST",
            "/auth/admin/clients",
            &[JSON, ("authorization", &format!("Bearer {admin}"))],
            &registration.to_string(),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let created = created.json();
    assert!(created.get("client_secret").is_none(), "a private_key_jwt client has no secret");
    let client_id = created["client_id"].as_str().expect("client id").to_owned();

    let now =
        i64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs())
            .expect("time");
    let assertion_claims = json!({
        "iss": client_id, "sub": client_id, "aud": "http://127.0.0.1:3000/auth/token",
        "iat": now, "exp": now + 60, "jti": health_core::b64url(now.to_be_bytes()),
    });
    let header = json!({ "alg": "ES256", "kid": sig.jwk.kid, "typ": "JWT" });
    let input = format!("{}.{}", b64url(header.to_string()), b64url(assertion_claims.to_string()));
    let signature =
        health_jose::sign_bytes(&sig_private, health_jose::Algorithm::Es256, input.as_bytes(), &mut rand_core::OsRng)
            .expect("sign");
    let assertion = format!("{input}.{}", b64url(signature));
    let jwt_grant = [
        ("grant_type", "client_credentials"),
        ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
        ("client_assertion", assertion.as_str()),
    ];
    let by_jwt = post_form(&app, "/auth/token", None, &jwt_grant).await;
    assert_eq!(by_jwt.status, 200, "{}", by_jwt.body);
    assert_eq!(by_jwt.json()["access_token"].as_str().expect("token").split('.').count(), 5);
    let replayed = post_form(&app, "/auth/token", None, &jwt_grant).await;
    assert_eq!(replayed.status, 401, "an assertion is good once");
    let reasons = audit_reasons(&app, "auth.token.client_credentials");
    for expected in ["token_issued", "bad_client_secret", "invalid_scope", "client_assertion_replayed"] {
        assert!(reasons.contains(&expected.to_owned()), "{expected} missing from {reasons:?}");
    }
}

#[tokio::test]
async fn tenant_admins_create_disable_and_reset_users_of_their_own_tenant() {
    let app = TestApp::start(|_| {}).expect("app loads");
    let admin = app.token(ADMIN).await;
    let auth = format!("Bearer {admin}");
    let headers = [JSON, ("authorization", auth.as_str())];
    let new_user = json!({ "username": "carol", "role": "patient", "password": "carol-initial-pass" });
    let created = app.send("POST", "/auth/admin/users", &headers, &new_user.to_string()).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.json()["id"].as_str().expect("id").to_owned();
    assert_eq!(app.send("POST", "/auth/admin/users", &headers, &new_user.to_string()).await.status, 409);
    let weak = json!({ "username": "dave", "role": "patient", "password": "short" });
    assert_eq!(app.send("POST", "/auth/admin/users", &headers, &weak.to_string()).await.status, 400);
    let listed = app.send("GET", "/auth/admin/users", &[("authorization", auth.as_str())], "").await;
    assert!(listed.body.contains("\"carol\"") && !listed.body.contains("argon2"), "{}", listed.body);

    let carol = ("carol", "carol-initial-pass");
    let carol_token = app.token(carol).await;
    let disabled = app.send("POST", &format!("/auth/admin/users/{id}/disable"), &headers, "{}").await;
    assert_eq!(disabled.status, 200, "{}", disabled.body);
    assert_eq!(app.login(carol).await.status, 401, "a disabled user cannot log in");
    assert_eq!(validate(&app, &carol_token).await["valid"], false, "disabling ends sessions");
    assert_eq!(app.send("POST", &format!("/auth/admin/users/{id}/enable"), &headers, "").await.status, 200);
    let carol_token = app.token(carol).await;

    let reset = json!({ "password": "carol-second-pass" });
    let reset = app.send("POST", &format!("/auth/admin/users/{id}/reset-password"), &headers, &reset.to_string()).await;
    assert_eq!(reset.status, 200, "{}", reset.body);
    assert_eq!(validate(&app, &carol_token).await["valid"], false, "a reset revokes every token");
    assert_eq!(app.login(carol).await.status, 401);
    app.token(("carol", "carol-second-pass")).await;

    // A patient is not an admin; another tenant is out of reach; no token at all is a 401.
    let alice = app.token(ALICE).await;
    let as_patient = app.send("GET", "/auth/admin/users", &[("authorization", &format!("Bearer {alice}"))], "").await;
    assert_eq!(as_patient.status, 403);
    let elsewhere =
        app.send("GET", "/auth/admin/users?tenant_id=other-hospital", &[("authorization", auth.as_str())], "").await;
    assert_eq!(elsewhere.status, 403);
    assert_eq!(app.send("GET", "/auth/admin/users", &[], "").await.status, 401);
    // The operator may act on any tenant it names.
    let operator = format!("Bearer {OPERATOR_TOKEN}");
    let as_operator =
        app.send("GET", "/auth/admin/users?tenant_id=demo-hospital", &[("authorization", operator.as_str())], "").await;
    assert_eq!(as_operator.status, 200, "{}", as_operator.body);
    let reasons = app.query_strings(
        "audit.db",
        "SELECT reason FROM audit_events WHERE json_extract(event, '$.action') LIKE 'admin.users.%'",
    );
    for expected in [
        "user_created",
        "username_taken",
        "weak_password",
        "user_disable",
        "password_reset_sessions_ended",
        "not_an_admin",
        "other_tenant",
    ] {
        assert!(reasons.contains(&expected.to_owned()), "{expected} missing from {reasons:?}");
    }
}

#[tokio::test]
async fn discovery_matches_the_tokens_and_validates_in_authlib() {
    let base = "https://health.example.test";
    let app = TestApp::start_with_variables(&[("issuer_base", base)]).expect("app loads");
    let token = app.token(ALICE).await;
    let reply = app.send("GET", "/t/demo-hospital/.well-known/openid-configuration", &[], "").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let doc = reply.json();
    let claims = claims_of(&token);
    assert_eq!(doc["issuer"], claims["iss"], "tokens carry the issuer discovery announces");
    assert_eq!(doc["jwks_uri"], format!("{base}/jwk/demo-hospital"));
    let header: Value =
        serde_json::from_slice(&health_core::b64url_decode(token.split('.').next().expect("h")).expect("b64"))
            .expect("json");
    assert!(doc["access_token_signing_alg_values_supported"].as_array().expect("algs").contains(&header["alg"]));
    assert_eq!(app.send("GET", "/t/no-such-tenant/.well-known/openid-configuration", &[], "").await.status, 404);

    let issuer = format!("{base}/t/demo-hospital");
    assert_eq!(authlib_verdict(&doc, &issuer), json!({ "ok": true }));
    // And Authlib really checks: a document with an http issuer is refused.
    let mut broken = doc.clone();
    broken["issuer"] = "http://health.example.test/t/demo-hospital".into();
    let verdict = authlib_verdict(&broken, "http://health.example.test/t/demo-hospital");
    assert_eq!(verdict["ok"], false);
}

/// Authlib's verdict on a discovery document (tests/interop/oidc_discovery.py).
fn authlib_verdict(document: &Value, issuer: &str) -> Value {
    let python = std::env::var_os("HEALTH_INTEROP_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root().join("target/interop-venv/bin/python"));
    assert!(python.exists(), "{} missing: `cargo xtask test` installs Authlib there", python.display());
    let mut child = Command::new(python)
        .arg(root().join("tests/interop/oidc_discovery.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python runs");
    let request = json!({ "document": document, "issuer": issuer });
    std::io::Write::write_all(child.stdin.as_mut().expect("stdin"), request.to_string().as_bytes()).expect("write");
    let output = child.wait_with_output().expect("python finishes");
    serde_json::from_slice(&output.stdout).expect("verdict json")
}

#[tokio::test]
async fn no_secret_reaches_the_audit_log() {
    let app = TestApp::start(|_| {}).expect("app loads");
    let alice = app.tokens(ALICE).await;
    let wrong = json!({ "tenant": "demo-hospital", "username": "alice", "password": "a-wrong-password-123" });
    app.send("POST", "/auth/login", &[JSON], &wrong.to_string()).await;
    let enrolled = app.enroll_totp(DR_GREY).await;
    let code = app.next_otp(DR_GREY.0).await;
    app.login_with_otp(DR_GREY, &code).await;
    let refresh_token = alice["refresh_token"].as_str().expect("refresh");
    refresh(&app, refresh_token).await;
    post_form(&app, "/auth/token", Some(&basic(ACME_ID, ACME_SECRET)), &[("grant_type", "client_credentials")]).await;
    let events = app.query_strings("audit.db", "SELECT event FROM audit_events").join("\n");
    assert!(events.contains("token_issued"), "the flows above were audited");
    let secrets = [
        ALICE.1,
        "a-wrong-password-123",
        DR_GREY.1,
        enrolled["secret"].as_str().expect("secret"),
        refresh_token,
        ACME_SECRET,
        alice["access_token"].as_str().expect("access"),
    ];
    for secret in secrets {
        assert!(!events.contains(secret), "audit log contains a secret");
    }
    assert!(!events.contains(&format!("\"{code}\"")), "audit log contains a one-time code");
    let output = app.app.guest_output().join("\n");
    for secret in secrets {
        assert!(!output.contains(secret), "guest output contains a secret");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_insurer_token_is_spent_by_its_first_use_even_under_64_concurrent_uses() {
    let app = TestApp::start(|_| {}).expect("app loads");
    let reply =
        post_form(&app, "/auth/token", Some(&basic(ACME_ID, ACME_SECRET)), &[("grant_type", "client_credentials")])
            .await;
    let jwe = reply.json()["access_token"].as_str().expect("token").to_owned();
    let mut uses = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let app = app.app.clone();
        let auth = format!("Bearer {jwe}");
        uses.spawn(async move {
            let headers = [("authorization", auth.as_str())];
            send_from(&app, health_host::DEFAULT_CLIENT, "GET", "/api/patients/p-1001/records", &headers, "")
                .await
                .status
        });
    }
    let mut statuses = Vec::new();
    while let Some(status) = uses.join_next().await {
        statuses.push(status.expect("join"));
    }
    // The one use that got through authentication meets the policy (insurers have no record
    // route: 403); every other use is an unauthenticated replay.
    assert_eq!(statuses.iter().filter(|s| **s == 403).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 401).count(), 63, "{statuses:?}");
    let replays =
        app.query_strings("audit.db", "SELECT reason FROM audit_events WHERE reason = 'one_time_token_replayed'");
    assert_eq!(replays.len(), 63);

    // An insurance token that was only signed, not encrypted, is refused outright.
    let (kid, key) = app.tenant_private_key("demo-hospital");
    let now =
        i64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs())
            .expect("time");
    let claims = health_jose::Claims {
        iss: "http://127.0.0.1:3000/t/demo-hospital".into(),
        sub: ACME_ID.into(),
        aud: "health-platform".into(),
        exp: now + 300,
        iat: now,
        nbf: now,
        jti: "signed-only-insurer-token".into(),
        tenant_id: health_core::TenantId::parse("demo-hospital").expect("tenant"),
        role: "insurance".into(),
        scope: "insurance/summary.read".into(),
        client_id: ACME_ID.into(),
        amr: Vec::new(),
        auth_time: now,
        enc_jwk: None,
    };
    let jws = health_jose::sign_rs256(&key, &kid, &claims, &mut rand_core::OsRng).expect("sign");
    assert_eq!(app.get_with("/api/patients/p-1001/records", &jws).await.status, 401);
    let reasons =
        app.query_strings("audit.db", "SELECT reason FROM audit_events WHERE reason = 'insurer_token_not_encrypted'");
    assert_eq!(reasons.len(), 1);
}
