//! ES256 and EdDSA next to RS256: Wycheproof's JWS vectors (C2SP/wycheproof
//! `testvectors_v1/json_web_signature_test.json`, fixture copied unchanged) against the signature
//! steps of the verifier, and `jwt-simple` as an independent implementation in both directions.

use std::collections::BTreeMap;

use health_core::TenantId;
use health_jose::{
    Algorithm, Claims, Error, KeyRecord, KeyStatus, KeyUse, PrivateKey, PublicJwk, TenantKeys, VerifyOptions, generate,
    sign, verify, verify_signature,
};
use jwt_simple::prelude::*;
use rand_core::OsRng;
use serde_json::Value;

fn tenant() -> TenantId {
    TenantId::parse("north").expect("tenant")
}

fn now() -> i64 {
    i64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs())
        .expect("time")
}

fn key_set(record: KeyRecord) -> TenantKeys {
    TenantKeys { tenant_id: tenant(), issuer: "https://h.example/t/north".into(), keys: vec![record] }
}

fn claims(now: i64) -> Claims {
    Claims {
        iss: "https://h.example/t/north".into(),
        sub: "u-1".into(),
        aud: "health-platform".into(),
        exp: now + 600,
        iat: now,
        nbf: now,
        jti: "j-1".into(),
        tenant_id: tenant(),
        role: "doctor".into(),
        scope: "records:read".into(),
        client_id: "web".into(),
        amr: vec!["pwd".into()],
        auth_time: now,
        enc_jwk: None,
    }
}

#[derive(Serialize, Deserialize)]
struct Extra {
    tenant_id: String,
    role: String,
}

fn jwt_simple_options() -> VerificationOptions {
    VerificationOptions {
        required_signature_type: Some("at+jwt".into()),
        allowed_audiences: Some(HashSet::from_strings(&["health-platform"])),
        ..VerificationOptions::default()
    }
}

fn jwt_simple_claims() -> JWTClaims<Extra> {
    jwt_simple::claims::Claims::with_custom_claims(
        Extra { tenant_id: "north".into(), role: "doctor".into() },
        Duration::from_mins(5),
    )
    .with_issuer("https://h.example/t/north")
    .with_subject("u-2")
    .with_audience("health-platform")
    .with_jwt_id("j-2")
}

fn header_options() -> HeaderOptions {
    HeaderOptions { signature_type: Some("at+jwt".into()), ..HeaderOptions::default() }
}

fn assert_ours_verifies(token: &str, keys: &TenantKeys) {
    let verified =
        verify(token, keys, now(), &VerifyOptions::default()).expect("our verifier accepts jwt-simple's token");
    assert_eq!((verified.sub.as_str(), verified.jti.as_str(), verified.role.as_str()), ("u-2", "j-2", "doctor"));
}

#[test]
fn es256_tokens_interoperate_with_jwt_simple_both_ways() {
    let (private, record) = generate(Algorithm::Es256, &tenant(), 0, &mut OsRng).expect("key");
    let PrivateKey::P256(secret) = &private else { panic!("ES256 key is P-256") };
    let kid = record.jwk.kid.clone();
    let keys = key_set(record);

    let ours = sign(&private, Algorithm::Es256, &kid, &claims(now()), &mut OsRng).expect("signs");
    assert_eq!(verify(&ours, &keys, now(), &VerifyOptions::default()), Ok(claims(now())));
    let theirs_public = ES256PublicKey::from_bytes(&secret.public_key().to_sec1_bytes()).expect("public key");
    let decoded =
        theirs_public.verify_token::<Extra>(&ours, Some(jwt_simple_options())).expect("jwt-simple accepts ours");
    assert_eq!(decoded.custom.tenant_id, "north");

    let theirs = ES256KeyPair::from_bytes(&secret.to_bytes()).expect("key pair").with_key_id(&kid);
    let token = theirs.sign_with_options(jwt_simple_claims(), &header_options()).expect("jwt-simple signs");
    assert_ours_verifies(&token, &keys);
}

#[test]
fn eddsa_tokens_interoperate_with_jwt_simple_both_ways() {
    let (private, record) = generate(Algorithm::EdDsa, &tenant(), 0, &mut OsRng).expect("key");
    let PrivateKey::Ed25519(secret) = &private else { panic!("EdDSA key is Ed25519") };
    let kid = record.jwk.kid.clone();
    assert_eq!((record.jwk.kty.as_str(), record.jwk.crv.as_deref()), ("OKP", Some("Ed25519")));
    let keys = key_set(record);

    let ours = sign(&private, Algorithm::EdDsa, &kid, &claims(now()), &mut OsRng).expect("signs");
    assert_eq!(verify(&ours, &keys, now(), &VerifyOptions::default()), Ok(claims(now())));
    let theirs_public = Ed25519PublicKey::from_bytes(secret.verifying_key().as_bytes()).expect("public key");
    theirs_public.verify_token::<Extra>(&ours, Some(jwt_simple_options())).expect("jwt-simple accepts ours");

    let theirs = Ed25519KeyPair::from_bytes(&secret.to_keypair_bytes()).expect("key pair").with_key_id(&kid);
    let token = theirs.sign_with_options(jwt_simple_claims(), &header_options()).expect("jwt-simple signs");
    assert_ours_verifies(&token, &keys);
}

#[test]
fn a_token_is_checked_only_under_its_keys_own_algorithm() {
    let (es_private, es_record) = generate(Algorithm::Es256, &tenant(), 0, &mut OsRng).expect("key");
    let (ed_private, ed_record) = generate(Algorithm::EdDsa, &tenant(), 0, &mut OsRng).expect("key");
    let ed_kid = ed_record.jwk.kid.clone();
    let es_kid = es_record.jwk.kid.clone();
    let keys = TenantKeys {
        keys: vec![es_record, ed_record],
        ..key_set(generate(Algorithm::EdDsa, &tenant(), 0, &mut OsRng).expect("key").1)
    };
    let opts = VerifyOptions::default();
    // An Ed25519 signature presented under the ES256 key's kid, and the reverse.
    let forged = sign(&ed_private, Algorithm::EdDsa, &es_kid, &claims(now()), &mut OsRng).expect("signs");
    assert_eq!(verify(&forged, &keys, now(), &opts), Err(Error::AlgorithmMismatch));
    let forged = sign(&es_private, Algorithm::Es256, &ed_kid, &claims(now()), &mut OsRng).expect("signs");
    assert_eq!(verify(&forged, &keys, now(), &opts), Err(Error::AlgorithmMismatch));
    // The right algorithm name with the wrong key's signature.
    let good = sign(&es_private, Algorithm::Es256, &es_kid, &claims(now()), &mut OsRng).expect("signs");
    let (input, _) = good.rsplit_once('.').expect("three parts");
    let other = generate(Algorithm::Es256, &tenant(), 0, &mut OsRng).expect("key").0;
    let foreign = health_jose::sign_bytes(&other, Algorithm::Es256, input.as_bytes(), &mut OsRng).expect("signs");
    let forged = format!("{input}.{}", health_core::b64url(foreign));
    assert_eq!(verify(&forged, &keys, now(), &opts), Err(Error::BadSignature));
}

#[test]
fn private_keys_round_trip_through_pkcs8() {
    for alg in [Algorithm::Es256, Algorithm::EdDsa, Algorithm::EcdhEsA256kw] {
        let (private, record) = generate(alg, &tenant(), 0, &mut OsRng).expect("key");
        let der = private.to_pkcs8_der().expect("encodes");
        let back = PrivateKey::from_pkcs8_der(alg, &der).expect("decodes");
        assert_eq!(back.to_pkcs8_der(), Some(der), "{alg:?}");
        assert_eq!(record.jwk.key_use, alg.key_use());
        assert_eq!(record.jwk.thumbprint(), Some(record.jwk.kid.clone()));
    }
}

fn text(jwk: &Value, name: &str) -> Option<String> {
    jwk[name].as_str().map(str::to_owned)
}

/// A key record from a Wycheproof public JWK (or, for symmetric groups, the private one).
fn record(group: &Value) -> KeyRecord {
    let jwk = if group["public"].is_object() { &group["public"] } else { &group["private"] };
    let key_use = if text(jwk, "use").as_deref() == Some("enc") { KeyUse::Enc } else { KeyUse::Sig };
    KeyRecord {
        jwk: PublicJwk {
            kty: text(jwk, "kty").unwrap_or_default(),
            kid: text(jwk, "kid").unwrap_or_default(),
            key_use,
            alg: text(jwk, "alg").unwrap_or_default(),
            n: text(jwk, "n"),
            e: text(jwk, "e"),
            crv: text(jwk, "crv"),
            x: text(jwk, "x"),
            y: text(jwk, "y"),
            tenant_id: tenant(),
        },
        status: KeyStatus::Active,
        created_at: 0,
        not_after: None,
    }
}

#[test]
fn wycheproof_jws_vectors_are_decided_as_published() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/wycheproof/json_web_signature_test.json");
    let vectors: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json");
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for group in vectors["testGroups"].as_array().expect("groups") {
        let keys = key_set(record(group));
        let supported =
            matches!(keys.keys[0].jwk.algorithm(), Some(Algorithm::Rs256 | Algorithm::Es256 | Algorithm::EdDsa));
        for case in group["tests"].as_array().expect("tests") {
            let id = &case["tcId"];
            let valid = case["result"] == "valid";
            let Some(jws) = case["jws"].as_str() else {
                // JSON serialization: the platform only takes compact tokens.
                assert!(!valid || !supported, "case {id}: valid JSON-serialized JWS for a supported key");
                *counts.entry("json_serialization_refused").or_default() += 1;
                continue;
            };
            let outcome = verify_signature(jws, &keys, &VerifyOptions::default());
            let category = match (supported, valid, outcome.is_ok()) {
                (true, true, true) => "valid_accepted",
                (_, false, false) => "invalid_refused",
                (false, true, false) => "unsupported_alg_refused",
                // An access token always has claims: an empty payload is refused on purpose.
                (true, true, false) if jws.split('.').nth(1) == Some("") => "empty_payload_refused",
                (true, true, false) => {
                    panic!("case {id} ({}) refused: {outcome:?}", case["comment"])
                }
                (_, false, true) => panic!("case {id} ({}) accepted", case["comment"]),
                (false, true, true) => panic!("case {id}: unsupported algorithm accepted"),
            };
            *counts.entry(category).or_default() += 1;
        }
    }
    println!("{counts:?}");
    let expected: BTreeMap<&str, usize> = [
        ("empty_payload_refused", 1),
        ("invalid_refused", 355),
        ("unsupported_alg_refused", 36),
        ("valid_accepted", 9),
    ]
    .into_iter()
    .collect();
    assert_eq!(counts, expected, "vector file or verifier changed");
}
