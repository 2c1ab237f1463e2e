//! Interoperability with an independent implementation, Python `jwcrypto` (installed into
//! `target/interop-venv` by `cargo xtask test`), in both directions and for every algorithm a
//! tenant can choose: its JWK Set parses there; tokens `auth` issues (RS256, ES256, EdDSA)
//! verify there; tokens it signs with a tenant's key pass the gateway; JWEs `jwks` makes
//! (nested, ECDH-ES+A256KW and RSA-OAEP-256) decrypt there; JWEs it makes to the published
//! encryption keys decrypt in `jwks`.

use std::io::Write;
use std::process::{Command, Stdio};

use health_core::{Caller, Role, TenantId};
use health_e2e::{ALICE, OPERATOR_TOKEN, TestApp, root};
use health_jose::{Algorithm, PrivateKey};
use serde_json::{Value, json};

const RECORD: &str = "/api/patients/p-1001/records";

fn python() -> std::path::PathBuf {
    let path = std::env::var_os("HEALTH_INTEROP_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root().join("target/interop-venv/bin/python"));
    assert!(path.exists(), "{} missing: `cargo xtask test` installs jwcrypto there", path.display());
    path
}

/// Runs one operation of tests/interop/jwcrypto_interop.py.
fn jwcrypto(request: Value) -> Value {
    let mut child = Command::new(python())
        .arg(root().join("tests/interop/jwcrypto_interop.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python runs");
    child.stdin.take().expect("stdin").write_all(request.to_string().as_bytes()).expect("request written");
    let output = child.wait_with_output().expect("python finishes");
    assert!(output.status.success(), "jwcrypto {}: {}", request["op"], String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("JSON answer")
}

fn pem(key: &PrivateKey) -> String {
    use base64::Engine;
    let body = base64::engine::general_purpose::STANDARD.encode(key.to_pkcs8_der().expect("PKCS#8"));
    let lines: Vec<&str> = body.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).expect("ascii")).collect();
    format!("-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n", lines.join("\n"))
}

fn caller() -> Caller {
    Caller {
        tenant_id: TenantId::parse("demo-hospital").expect("tenant"),
        subject: health_core::Opaque::parse("u-service").expect("subject"),
        role: Role::Admin,
        client_id: Some(health_core::ClientId::parse("gateway").expect("client id")),
        scopes: vec![],
        jti: health_core::TokenId::parse("j-interop").expect("jti"),
        enc_jwk: None,
    }
}

async fn rotate(app: &TestApp, key_use: &str, alg: &str) -> String {
    let auth = format!("Bearer {OPERATOR_TOKEN}");
    let body = json!({ "tenant_id": "demo-hospital", "use": key_use, "alg": alg }).to_string();
    let reply = app
        .send("POST", "/admin/rotate-key", &[("content-type", "application/json"), ("authorization", &auth)], &body)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()["kid"].as_str().expect("kid").to_owned()
}

async fn jwks(app: &TestApp) -> Value {
    app.send("GET", "/jwk/demo-hospital", &[], "").await.json()
}

#[tokio::test(flavor = "multi_thread")]
async fn signatures_interoperate_with_jwcrypto_both_ways() {
    let app = TestApp::start(|_| {}).expect("app loads");
    for alg in [Algorithm::Rs256, Algorithm::Es256, Algorithm::EdDsa] {
        if alg != Algorithm::Rs256 {
            rotate(&app, "sig", alg.as_str()).await;
        }
        // Ours, verified there against the published JWK Set.
        let token = app.token(ALICE).await;
        let verified = jwcrypto(json!({ "op": "verify", "jwks": jwks(&app).await, "token": token }));
        assert_eq!(
            (verified["header"]["alg"].as_str(), verified["header"]["typ"].as_str()),
            (Some(alg.as_str()), Some("at+jwt"))
        );
        assert_eq!(verified["claims"]["tenant_id"], "demo-hospital");

        // Theirs, with the tenant's key, accepted by the gateway.
        let kid = verified["header"]["kid"].as_str().expect("kid").to_owned();
        let mut claims = verified["claims"].clone();
        claims["jti"] = json!(format!("jwcrypto-{}", alg.as_str()));
        let signed = jwcrypto(
            json!({ "op": "sign", "pem": pem(&app.private_key("demo-hospital", &kid, alg)), "alg": alg.as_str(), "kid": kid, "claims": claims }),
        );
        let theirs = signed["token"].as_str().expect("token");
        assert_eq!(app.get_with(RECORD, theirs).await.status, 200, "{alg:?} token from jwcrypto refused");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn encryption_interoperates_with_jwcrypto_both_ways() {
    let app = TestApp::start_with_probe().expect("app loads");
    for alg in [Algorithm::EcdhEsA256kw, Algorithm::RsaOaep256] {
        if alg != Algorithm::EcdhEsA256kw {
            rotate(&app, "enc", alg.as_str()).await;
        }
        // Ours (a nested token), decrypted there; the inner JWS verifies there too.
        let jws = app.token(ALICE).await;
        let body = json!({ "plaintext": jws, "cty": "JWT" }).to_string();
        let ours = app.chained("jwks", "POST", "/internal/encrypt", Some(&caller()), &body).await.json();
        let kid = ours["kid"].as_str().expect("kid").to_owned();
        let private = app.private_key("demo-hospital", &kid, alg);
        let decrypted = jwcrypto(json!({ "op": "decrypt", "pem": pem(&private), "token": ours["jwe"] }));
        assert_eq!(
            (decrypted["header"]["alg"].as_str(), decrypted["header"]["cty"].as_str()),
            (Some(alg.as_str()), Some("JWT"))
        );
        assert_eq!(decrypted["plaintext"], jws);
        jwcrypto(json!({ "op": "verify", "jwks": jwks(&app).await, "token": jws }));

        // Theirs, to the key as published, decrypted by jwks.
        let set = jwks(&app).await;
        let published =
            set["keys"].as_array().expect("keys").iter().find(|k| k["kid"] == kid.as_str()).expect("published").clone();
        let theirs = jwcrypto(json!({ "op": "encrypt", "jwk": published, "plaintext": "from jwcrypto", "cty": "JWT" }));
        let body = json!({ "jwe": theirs["token"] }).to_string();
        let answer = app.chained("jwks", "POST", "/internal/decrypt", Some(&caller()), &body).await;
        assert_eq!(
            (answer.status, answer.json()["plaintext"].as_str()),
            (200, Some("from jwcrypto")),
            "{alg:?}: {}",
            answer.body
        );
    }
}
