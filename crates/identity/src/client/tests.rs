use super::*;
use health_core::b64url;
use health_jose::{Algorithm, PrivateKey, generate};

const ENDPOINT: &str = "http://127.0.0.1:3000/auth/token";
const NOW: i64 = 1_800_000_000;

fn tenant() -> TenantId {
    TenantId::parse("demo-hospital").expect("tenant")
}

fn form(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

fn assertion(key: &PrivateKey, alg: Algorithm, kid: &str, claims: serde_json::Value) -> String {
    let header = serde_json::json!({ "alg": alg.as_str(), "kid": kid, "typ": "JWT" });
    let input = format!("{}.{}", b64url(header.to_string()), b64url(claims.to_string()));
    let signature = health_jose::sign_bytes(key, alg, input.as_bytes(), &mut rand_core::OsRng).expect("sign");
    format!("{input}.{}", b64url(signature))
}

fn claims(client: &str, jti: &str, exp: i64) -> serde_json::Value {
    serde_json::json!({ "iss": client, "sub": client, "aud": ENDPOINT, "exp": exp, "iat": NOW, "jti": jti })
}

#[test]
fn reads_each_client_authentication_method() {
    // "acme:x" and "s p" are form-urlencoded before Basic encoding (RFC 6749 §2.3.1).
    let basic = format!("Basic {}", base64_standard(b"acme%3Ax:s+p%25"));
    assert_eq!(
        from_request(Some(&basic), &form(&[])),
        Ok(ClientAuth::Secret { client_id: "acme:x".into(), secret: "s p%".into() })
    );
    assert_eq!(
        from_request(None, &form(&[("client_id", "acme"), ("client_secret", "s")])),
        Ok(ClientAuth::Secret { client_id: "acme".into(), secret: "s".into() })
    );
    assert_eq!(
        from_request(None, &form(&[("client_assertion", "a.b.c"), ("client_assertion_type", JWT_BEARER)])),
        Ok(ClientAuth::Assertion { client_id: None, assertion: "a.b.c".into() })
    );
    assert_eq!(
        from_request(None, &form(&[("client_id", "health-web")])),
        Ok(ClientAuth::Public { client_id: "health-web".into() })
    );
}

fn base64_standard(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[test]
fn refuses_ambiguous_or_malformed_client_authentication() {
    let basic = format!("Basic {}", base64_standard(b"acme:s"));
    assert_eq!(
        from_request(Some(&basic), &form(&[("client_id", "acme"), ("client_secret", "s")])),
        Err(ClientAuthError::Ambiguous)
    );
    assert_eq!(from_request(Some(&basic), &form(&[("client_id", "other")])), Err(ClientAuthError::Malformed));
    assert_eq!(from_request(Some("Bearer abc"), &form(&[])), Err(ClientAuthError::Malformed));
    assert_eq!(from_request(Some("Basic !!!"), &form(&[])), Err(ClientAuthError::Malformed));
    assert_eq!(
        from_request(Some(&format!("Basic {}", base64_standard(b"acme"))), &form(&[])),
        Err(ClientAuthError::Malformed)
    );
    assert_eq!(from_request(None, &form(&[("client_secret", "s")])), Err(ClientAuthError::Malformed));
    assert_eq!(
        from_request(None, &form(&[("client_assertion", "a.b.c"), ("client_assertion_type", "other")])),
        Err(ClientAuthError::Malformed)
    );
    assert_eq!(from_request(None, &form(&[])), Err(ClientAuthError::Missing));
}

fn submitted(record: &health_jose::KeyRecord) -> SubmittedJwk {
    let mut value = serde_json::to_value(&record.jwk).expect("jwk");
    let object = value.as_object_mut().expect("object");
    object.remove("tenant_id");
    object.remove("kid");
    serde_json::from_value(value).expect("submitted jwk")
}

#[test]
fn registers_public_keys_for_their_purpose_only() {
    let (_, enc) = generate(Algorithm::EcdhEsA256kw, &tenant(), NOW, &mut rand_core::OsRng).expect("key");
    let jwk = register_jwk(submitted(&enc), KeyUse::Enc, &tenant()).expect("enc key");
    assert_eq!(jwk.kid, enc.jwk.kid);
    assert_eq!(jwk.alg, "ECDH-ES+A256KW");
    assert_eq!(register_jwk(submitted(&enc), KeyUse::Sig, &tenant()).err(), Some(JwkError::WrongPurpose));

    let (_, sig) = generate(Algorithm::Es256, &tenant(), NOW, &mut rand_core::OsRng).expect("key");
    let mut no_alg = submitted(&sig);
    no_alg.alg = None;
    no_alg.key_use = None;
    assert_eq!(register_jwk(no_alg, KeyUse::Sig, &tenant()).map(|j| j.alg), Ok("ES256".into()));

    let mut off_curve = submitted(&enc);
    off_curve.y = off_curve.x.clone();
    assert_eq!(register_jwk(off_curve, KeyUse::Enc, &tenant()).err(), Some(JwkError::Unusable));
    let mut symmetric = submitted(&enc);
    symmetric.kty = "oct".into();
    assert_eq!(register_jwk(symmetric, KeyUse::Enc, &tenant()).err(), Some(JwkError::Unusable));

    let private = serde_json::json!({ "kty": "EC", "crv": "P-256", "x": "a", "y": "b", "d": "secret" });
    assert!(serde_json::from_value::<SubmittedJwk>(private).is_err(), "private members are refused");
}

#[test]
fn verifies_private_key_jwt_assertions() {
    let (key, record) = generate(Algorithm::Es256, &tenant(), NOW, &mut rand_core::OsRng).expect("key");
    let jwk = record.jwk.clone();
    let good = assertion(&key, Algorithm::Es256, &jwk.kid, claims("acme", "j1", NOW + 60));
    assert_eq!(
        verify_assertion(&good, "acme", &jwk, &[ENDPOINT], NOW),
        Ok(Assertion { jti: "j1".into(), exp: NOW + 60 })
    );
    // Another client's name, another audience, expired, too long-lived, no jti.
    assert!(matches!(verify_assertion(&good, "other", &jwk, &[ENDPOINT], NOW), Err(AssertionError::Claims(_))));
    assert!(matches!(verify_assertion(&good, "acme", &jwk, &["http://x/token"], NOW), Err(AssertionError::Claims(_))));
    assert!(matches!(verify_assertion(&good, "acme", &jwk, &[ENDPOINT], NOW + 200), Err(AssertionError::Claims(_))));
    let long = assertion(&key, Algorithm::Es256, &jwk.kid, claims("acme", "j2", NOW + 3600));
    assert!(matches!(verify_assertion(&long, "acme", &jwk, &[ENDPOINT], NOW), Err(AssertionError::Claims(_))));
    let mut no_jti = claims("acme", "", NOW + 60);
    no_jti.as_object_mut().expect("object").remove("jti");
    let no_jti = assertion(&key, Algorithm::Es256, &jwk.kid, no_jti);
    assert!(matches!(verify_assertion(&no_jti, "acme", &jwk, &[ENDPOINT], NOW), Err(AssertionError::Claims(_))));
}

#[test]
fn refuses_assertions_not_signed_by_the_registered_key() {
    let (key, record) = generate(Algorithm::Es256, &tenant(), NOW, &mut rand_core::OsRng).expect("key");
    let (other, _) = generate(Algorithm::Es256, &tenant(), NOW, &mut rand_core::OsRng).expect("key");
    let forged = assertion(&other, Algorithm::Es256, &record.jwk.kid, claims("acme", "j1", NOW + 60));
    assert!(matches!(
        verify_assertion(&forged, "acme", &record.jwk, &[ENDPOINT], NOW),
        Err(AssertionError::Signature(_))
    ));
    // The algorithm is the registered key's: an HS256 assertion "signed" with the public key fails.
    let header = serde_json::json!({ "alg": "HS256", "kid": record.jwk.kid });
    let input = format!("{}.{}", b64url(header.to_string()), b64url(claims("acme", "j1", NOW + 60).to_string()));
    let hs = format!("{input}.{}", b64url([0u8; 32]));
    assert!(matches!(verify_assertion(&hs, "acme", &record.jwk, &[ENDPOINT], NOW), Err(AssertionError::Signature(_))));
    let none = format!("{input}.");
    assert!(verify_assertion(&none, "acme", &record.jwk, &[ENDPOINT], NOW).is_err());
    let _ = key;
}
