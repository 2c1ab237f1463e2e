//! Encryption keys and algorithms end to end: every tenant has an `ECDH-ES+A256KW` key in its
//! JWK Set; `jwks` encrypts to it and decrypts over chaining for attested callers only, with one
//! answer for every failure; rotation to `RSA-OAEP-256` keeps retiring keys decrypting until
//! revoked; signing keys rotate to ES256 and EdDSA and the gateway follows.

use health_core::{Caller, Role, TenantId};
use health_e2e::{ALICE, OPERATOR_TOKEN, TestApp, send_from};
use health_jose::PublicJwk;
use health_jose::jwe::{self, EncryptionKey};
use serde_json::{Value, json};

fn caller(tenant: &str) -> Caller {
    Caller {
        tenant_id: TenantId::parse(tenant).expect("tenant"),
        subject: health_core::Opaque::parse("u-service").expect("subject"),
        role: Role::Admin,
        client_id: Some(health_core::ClientId::parse("gateway").expect("client id")),
        scopes: vec![],
        jti: health_core::TokenId::parse("j-chained").expect("jti"),
        enc_jwk: None,
    }
}

fn header(token: &str) -> Value {
    use base64::Engine;
    let bytes =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token.split('.').next().expect("header")).expect("b64");
    serde_json::from_slice(&bytes).expect("json")
}

/// The tenant's published keys of `key_use`.
async fn published(app: &TestApp, key_use: &str) -> Vec<PublicJwk> {
    let set = app.send("GET", "/jwk/demo-hospital", &[], "").await.json();
    serde_json::from_value::<Vec<PublicJwk>>(set["keys"].clone())
        .expect("JWK Set parses")
        .into_iter()
        .filter(|k| serde_json::to_value(k.key_use).expect("use") == key_use)
        .collect()
}

async fn operator(app: &TestApp, path: &str, body: Value) -> Value {
    let auth = format!("Bearer {OPERATOR_TOKEN}");
    let reply = app
        .send("POST", path, &[("content-type", "application/json"), ("authorization", &auth)], &body.to_string())
        .await;
    assert!(matches!(reply.status, 200 | 201), "{path}: {} {}", reply.status, reply.body);
    reply.json()
}

async fn decrypt(app: &TestApp, tenant: &str, token: &str) -> (u16, Value) {
    let reply = app
        .chained("jwks", "POST", "/internal/decrypt", Some(&caller(tenant)), &json!({ "jwe": token }).to_string())
        .await;
    (reply.status, reply.json())
}

#[tokio::test(flavor = "multi_thread")]
async fn jwks_encrypts_and_decrypts_for_attested_callers_with_one_failure_answer() {
    let app = TestApp::start_with_probe().expect("app loads");
    let enc = published(&app, "enc").await;
    assert_eq!(enc.len(), 1);
    let key = &enc[0];
    assert_eq!((key.alg.as_str(), key.kty.as_str(), key.crv.as_deref()), ("ECDH-ES+A256KW", "EC", Some("P-256")));
    assert_eq!(key.thumbprint().as_deref(), Some(key.kid.as_str()));

    // Encrypt-to-tenant: a nested token (a JWS inside, cty JWT).
    let jws = app.token(ALICE).await;
    let body = json!({ "plaintext": jws, "cty": "JWT" }).to_string();
    let encrypted = app.chained("jwks", "POST", "/internal/encrypt", Some(&caller("demo-hospital")), &body).await;
    assert_eq!(encrypted.status, 200, "{}", encrypted.body);
    let token = encrypted.json()["jwe"].as_str().expect("jwe").to_owned();
    assert_eq!(token.split('.').count(), 5);
    let h = header(&token);
    assert_eq!(
        (h["alg"].as_str(), h["enc"].as_str(), h["cty"].as_str(), h["kid"].as_str()),
        (Some("ECDH-ES+A256KW"), Some("A256GCM"), Some("JWT"), Some(key.kid.as_str()))
    );
    let (status, answer) = decrypt(&app, "demo-hospital", &token).await;
    assert_eq!((status, answer["plaintext"].as_str(), answer["cty"].as_str()), (200, Some(jws.as_str()), Some("JWT")));

    // Anyone may encrypt to the published key; only jwks decrypts.
    let public = EncryptionKey::P256(key.p256_public_key().expect("P-256 key"));
    let outside = jwe::encrypt(
        b"from a client",
        &public,
        &jwe::Protected { kid: Some(&key.kid), ..jwe::Protected::default() },
        &mut rand_core::OsRng,
    )
    .expect("encrypts");
    assert_eq!(decrypt(&app, "demo-hospital", &outside).await.1["plaintext"], "from a client");

    // No context: refused before anything else. Every decryption failure: one answer.
    let no_context = app.chained("jwks", "POST", "/internal/decrypt", None, &json!({ "jwe": token }).to_string()).await;
    assert_eq!(no_context.status, 401);
    operator(&app, "/admin/tenants", json!({ "tenant_id": "other-hospital" })).await;
    let mut tampered_tag = token.clone();
    tampered_tag.replace_range(token.len() - 2.., if token.ends_with("AA") { "BA" } else { "AA" });
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    parts[1] = parts[1].chars().rev().collect();
    let swapped_key = parts.join(".");
    let zip = {
        use base64::Engine;
        let mut h = header(&token);
        h["zip"] = json!("DEF");
        let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(h.to_string());
        format!("{encoded}.{}", token.split_once('.').expect("parts").1)
    };
    let (first_status, first) = decrypt(&app, "demo-hospital", &tampered_tag).await;
    assert_eq!(first_status, 400);
    for (tenant, attempt) in [
        ("other-hospital", token.as_str()),
        ("demo-hospital", swapped_key.as_str()),
        ("demo-hospital", zip.as_str()),
        ("demo-hospital", "not.a.jwe.at.all"),
        ("demo-hospital", jws.as_str()),
    ] {
        assert_eq!(decrypt(&app, tenant, attempt).await, (first_status, first.clone()), "{tenant}: {attempt}");
    }

    // Rotation to RSA-OAEP-256: new tokens use it, the retiring key still decrypts; revoked, it does not.
    let rotated = operator(
        &app,
        "/admin/rotate-key",
        json!({ "tenant_id": "demo-hospital", "use": "enc", "alg": "RSA-OAEP-256" }),
    )
    .await;
    let new_kid = rotated["kid"].as_str().expect("kid");
    let enc = published(&app, "enc").await;
    assert_eq!(enc.iter().map(|k| k.kid.as_str()).collect::<Vec<_>>(), [key.kid.as_str(), new_kid]);
    assert_eq!(enc[1].alg, "RSA-OAEP-256");
    let body = json!({ "plaintext": "summary" }).to_string();
    let newer = app.chained("jwks", "POST", "/internal/encrypt", Some(&caller("demo-hospital")), &body).await.json();
    assert_eq!(header(newer["jwe"].as_str().expect("jwe"))["alg"], "RSA-OAEP-256");
    assert_eq!(decrypt(&app, "demo-hospital", newer["jwe"].as_str().expect("jwe")).await.1["plaintext"], "summary");
    assert_eq!(decrypt(&app, "demo-hospital", &token).await.0, 200, "retiring key still decrypts");
    operator(&app, "/admin/revoke-key", json!({ "tenant_id": "demo-hospital", "kid": key.kid })).await;
    assert_eq!(decrypt(&app, "demo-hospital", &token).await, (first_status, first.clone()));
    // Nothing secret is echoed in the failure.
    assert!(!first.to_string().contains(&key.kid));
}

#[tokio::test(flavor = "multi_thread")]
async fn signing_keys_rotate_to_es256_and_eddsa_and_the_gateway_follows() {
    let app = TestApp::start(|_| {}).expect("app loads");
    let record = "/api/patients/p-1001/records";
    let rs256 = app.token(ALICE).await;
    assert_eq!(header(&rs256)["alg"], "RS256");
    for (alg, kty) in [("ES256", "EC"), ("EdDSA", "OKP")] {
        let rotated =
            operator(&app, "/admin/rotate-key", json!({ "tenant_id": "demo-hospital", "use": "sig", "alg": alg }))
                .await;
        let token = app.token(ALICE).await;
        assert_eq!(
            (header(&token)["alg"].as_str(), header(&token)["kid"].as_str()),
            (Some(alg), rotated["kid"].as_str())
        );
        assert_eq!(app.get_with(record, &token).await.status, 200, "{alg} token refused");
        let sig = published(&app, "sig").await;
        assert_eq!(sig.last().map(|k| k.kty.as_str()), Some(kty));
        // The same claims under another algorithm's name are refused.
        let (h, rest) = token.split_once('.').expect("parts");
        let renamed = {
            use base64::Engine;
            let mut header: Value =
                serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(h).expect("b64"))
                    .expect("json");
            header["alg"] = json!("RS256");
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(header.to_string())
        };
        assert_eq!(app.get_with(record, &format!("{renamed}.{rest}")).await.status, 401);
    }
    // The RS256 token from before both rotations still verifies (its key is retiring).
    assert_eq!(app.get_with(record, &rs256).await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn sealed_private_keys_are_useless_without_the_master_key() {
    let app = TestApp::start(|_| {}).expect("app loads");
    app.token(ALICE).await;
    let thief = app.reopen_with_master_key(&"3".repeat(64)).expect("app loads");
    let body = json!({ "tenant": "demo-hospital", "username": ALICE.0, "password": ALICE.1 }).to_string();
    let json = [("content-type", "application/json")];
    let res = send_from(&thief, health_host::DEFAULT_CLIENT, "POST", "/auth/login", &json, &body).await;
    assert_eq!(res.status, 500, "signing must fail when the sealed key does not open");
    assert!(!res.body.contains("token"));
    assert!(
        thief.guest_output().iter().any(|line| line.contains("does not open under master_key")),
        "{:?}",
        thief.guest_output()
    );
}
