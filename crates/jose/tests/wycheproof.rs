//! Wycheproof's JWS RSA vectors (json_web_crypto_test.json, groups `jws_rsa` and
//! `jws_rsa_roca_key`) against the signature steps of the verifier: every valid case verifies,
//! every invalid one (modified or missing parts, a ROCA-vulnerable key) is refused.

use health_core::TenantId;
use health_jose::{KeyRecord, KeyStatus, KeyUse, PublicJwk, TenantKeys, VerifyOptions, verify_signature};
use serde_json::Value;

fn vectors() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/wycheproof/json_web_crypto_test.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json")
}

fn key_set(public: &Value) -> TenantKeys {
    let tenant = TenantId::parse("t").expect("tenant");
    let text = |name: &str| public[name].as_str().expect(name).to_owned();
    TenantKeys {
        tenant_id: tenant.clone(),
        issuer: "i".into(),
        keys: vec![KeyRecord {
            jwk: PublicJwk {
                kty: text("kty"),
                kid: text("kid"),
                key_use: KeyUse::Sig,
                alg: text("alg"),
                n: Some(text("n")),
                e: Some(text("e")),
                crv: None,
                x: None,
                y: None,
                tenant_id: tenant,
            },
            status: KeyStatus::Active,
            created_at: 0,
            not_after: None,
        }],
    }
}

#[test]
fn jws_rsa_vectors_are_decided_as_wycheproof_expects() {
    let vectors = vectors();
    let mut checked = 0;
    for group in vectors["testGroups"].as_array().expect("groups") {
        if !matches!(group["comment"].as_str(), Some("jws_rsa" | "jws_rsa_roca_key")) {
            continue;
        }
        let keys = key_set(&group["public"]);
        for case in group["tests"].as_array().expect("tests") {
            let id = &case["tcId"];
            let jws = case["jws"].as_str().expect("compact serialization");
            let outcome = verify_signature(jws, &keys, &VerifyOptions::default());
            match case["result"].as_str() {
                Some("valid") => assert!(outcome.is_ok(), "case {id} ({}) refused: {outcome:?}", case["comment"]),
                Some("invalid") => {
                    assert!(outcome.is_err(), "case {id} ({}) accepted", case["comment"])
                }
                other => panic!("case {id}: unexpected result {other:?}"),
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 14, "vector file changed shape");
}
