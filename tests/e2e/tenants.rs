//! Tenant isolation under attack: an insider who holds tenant A's private key (unsealed here
//! with the master key, straight from the store) forges tokens for tenant B. The gateway must
//! refuse each one, and record the precise reason in the audit log.

use health_core::TenantId;
use health_e2e::{ALICE, OPERATOR_TOKEN, TestApp};
use health_jose::Claims;

const RECORD: &str = "/api/patients/p-1001/records";
const BASE: &str = "http://127.0.0.1:3000";

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

fn claims(tenant: &str, iss_tenant: &str) -> Claims {
    Claims {
        iss: format!("{BASE}/t/{iss_tenant}"),
        sub: "u-alice".into(),
        aud: "health-platform".into(),
        exp: now() + 300,
        iat: now(),
        nbf: now(),
        jti: format!("forged-{tenant}-{iss_tenant}"),
        tenant_id: TenantId::parse(tenant).expect("tenant"),
        role: "patient".into(),
        scope: String::new(),
        client_id: "health-web".into(),
        amr: vec!["pwd".into()],
        auth_time: now(),
        enc_jwk: None,
    }
}

#[tokio::test]
async fn tenant_a_key_never_admits_a_token_for_tenant_b() {
    let app = TestApp::start(|_| {}).expect("app loads");
    let operator = format!("Bearer {OPERATOR_TOKEN}");
    let json = ("content-type", "application/json");
    app.token(ALICE).await; // demo-hospital's key exists from here on

    let create = r#"{"tenant_id":"other-hospital"}"#;
    assert_eq!(app.send("POST", "/admin/tenants", &[json], create).await.status, 401);
    let created = app.send("POST", "/admin/tenants", &[json, ("authorization", &operator)], create).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let b_kid = created.json()["kid"].as_str().expect("kid").to_owned();
    assert_eq!(app.send("POST", "/admin/tenants", &[json, ("authorization", &operator)], create).await.status, 409);
    let all = app.send("GET", "/.well-known/jwks.json", &[], "").await.json();
    let tenants: Vec<&str> =
        all["keys"].as_array().expect("keys").iter().map(|k| k["tenant_id"].as_str().expect("tenant")).collect();
    assert!(tenants.contains(&"demo-hospital") && tenants.contains(&"other-hospital"), "{tenants:?}");

    let (a_kid, a_key) = app.tenant_private_key("demo-hospital");
    let sign = |kid: &str, claims: &Claims| {
        health_jose::sign_rs256(&a_key, kid, claims, &mut rand_core::OsRng).expect("signs")
    };

    // Control: the forging helper makes tokens the gateway accepts, so the refusals below mean something.
    assert_eq!(app.get_with(RECORD, &sign(&a_kid, &claims("demo-hospital", "demo-hospital"))).await.status, 200);

    let attacks = [
        ("A's kid, tenant B's claims", sign(&a_kid, &claims("other-hospital", "other-hospital"))),
        ("B's kid, signed with A's key", sign(&b_kid, &claims("other-hospital", "other-hospital"))),
        ("tenant A claims, tenant B issuer", sign(&a_kid, &claims("demo-hospital", "other-hospital"))),
    ];
    for (attack, token) in &attacks {
        let reply = app.get_with(RECORD, token).await;
        assert_eq!(reply.status, 401, "{attack}: {}", reply.body);
        assert_eq!(reply.header("www-authenticate"), r#"Bearer error="invalid_token""#, "{attack}");
    }

    let reasons = app.query_strings("audit.db", "SELECT reason FROM audit_events WHERE status = 401");
    for reason in ["unknown_kid", "bad_signature", "wrong_issuer"] {
        assert!(reasons.iter().any(|r| r == reason), "{reason} not audited: {reasons:?}");
    }
}
