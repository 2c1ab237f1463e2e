//! The seed corpus: real tokens and requests, each with the mode byte its target expects.
//! `cargo test --manifest-path fuzz/Cargo.toml -- --ignored write_seeds` rewrites
//! `corpus/<target>/`; the other tests run every seed through its target in-process and check
//! that the "valid" seeds really pass, so a seed that stopped reaching deep code shows up.

use std::path::PathBuf;

use health_core::b64url;
use health_core::context::{self, Caller, Role};
use health_jose::jwe::{self, Protected};
use serde_json::{Value, json};

use crate::{ISSUER, NOW, TENANT, identity, jwe as jwe_target, jws, rng};

type Seeds = Vec<(&'static str, Vec<u8>)>;

fn with_mode(mode: u8, bytes: impl AsRef<[u8]>) -> Vec<u8> {
    let mut out = vec![mode];
    out.extend_from_slice(bytes.as_ref());
    out
}

fn vectors(path: &str) -> Value {
    let path = format!("{}/../crates/jose/tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))).expect("JSON")
}

/// The first `count` compact serializations of a Wycheproof JOSE file (`member` holds them).
fn wycheproof(file: &str, member: &str, count: usize) -> Vec<String> {
    let all = vectors(&format!("wycheproof/{file}"));
    let groups = all["testGroups"].as_array().expect("groups");
    groups
        .iter()
        .flat_map(|g| g["tests"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t[member].as_str().map(str::to_owned))
        .take(count)
        .collect()
}

pub fn claims() -> Value {
    json!({
        "iss": ISSUER, "sub": "u-alice", "aud": "health-platform", "exp": NOW + 600, "iat": NOW, "nbf": NOW,
        "jti": "j-1", "tenant_id": TENANT, "role": "patient", "scope": "records:read", "client_id": "health-web",
        "amr": ["pwd"], "auth_time": NOW,
    })
}

fn edited(edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut value = claims();
    edit(&mut value);
    value.to_string().into_bytes()
}

/// The access token the platform issues with signer `index` (0 RS256, 1 ES256, 2 EdDSA).
pub fn access_token(index: usize) -> String {
    let signer = &jws::FIXTURE.signers[index];
    signer.sign(signer.header().as_bytes(), claims().to_string().as_bytes())
}

fn jws_seeds() -> Seeds {
    let fixture = &*jws::FIXTURE;
    let mut seeds: Seeds = vec![
        ("rs256-valid", with_mode(0, access_token(0))),
        ("es256-valid-retiring-key", with_mode(0, access_token(1))),
        ("eddsa-valid", with_mode(0, access_token(2))),
    ];
    for (name, signer) in [("es256-revoked-key", &fixture.refused[0]), ("eddsa-retired-key", &fixture.refused[1])] {
        seeds.push((name, with_mode(0, signer.sign(signer.header().as_bytes(), claims().to_string().as_bytes()))));
    }
    let rs = &fixture.signers[0];
    let good = claims().to_string();
    for (name, header) in [
        ("alg-none", json!({"alg": "none", "typ": "at+jwt", "kid": rs.kid})),
        ("alg-hs256", json!({"alg": "HS256", "typ": "at+jwt", "kid": rs.kid})),
        ("embedded-jwk", json!({"alg": "RS256", "typ": "at+jwt", "kid": rs.kid, "jwk": {"kty": "oct"}})),
        ("crit", json!({"alg": "RS256", "typ": "at+jwt", "kid": rs.kid, "crit": ["exp"]})),
        ("unknown-kid", json!({"alg": "RS256", "typ": "at+jwt", "kid": "nope"})),
    ] {
        let token = format!("{}.{}.{}", b64url(header.to_string()), b64url(&good), b64url([0u8; 8]));
        seeds.push((name, with_mode(0, token)));
    }
    let cookbook = [
        vectors("rfc7520/jws/4_1.rsa_v15_signature.json"),
        vectors("rfc7520/jws/4_2.rsa-pss_signature.json"),
        vectors("rfc7520/jws/4_3.ecdsa_signature.json"),
    ];
    for (name, vector) in ["rfc7520-4-1-rs256", "rfc7520-4-2-ps384", "rfc7520-4-3-es512"].iter().zip(&cookbook) {
        seeds.push((name, with_mode(0, vector["output"]["compact"].as_str().expect("compact"))));
    }
    let nested = vectors("rfc7520/6.nesting_signatures_and_encryption.json");
    seeds.push(("rfc7520-6-ps256", with_mode(0, nested["sign"]["output"]["compact"].as_str().expect("compact"))));
    const WYCHEPROOF: [&str; 6] =
        ["wycheproof-1", "wycheproof-2", "wycheproof-3", "wycheproof-4", "wycheproof-5", "wycheproof-6"];
    for (name, token) in WYCHEPROOF.iter().zip(wycheproof("json_web_signature_test.json", "jws", 6)) {
        seeds.push((name, with_mode(0, token)));
    }
    // Signed by the target (modes 1-3): claims that pass, and claims each check refuses.
    let signed: [(&'static str, Vec<u8>); 11] = [
        ("signed-valid", good.clone().into_bytes()),
        ("signed-expired", edited(|c| c["exp"] = json!(NOW - 61))),
        ("signed-at-tolerance", edited(|c| c["exp"] = json!(NOW - 59))),
        ("signed-future-iat", edited(|c| c["iat"] = json!(NOW + 61))),
        ("signed-long-lifetime", edited(|c| c["exp"] = json!(NOW + 901))),
        ("signed-aud-array", edited(|c| c["aud"] = json!(["other", "health-platform"]))),
        ("signed-wrong-issuer", edited(|c| c["iss"] = json!("https://evil.example/t/demo-hospital"))),
        ("signed-other-tenant", edited(|c| c["tenant_id"] = json!("st-marys"))),
        ("signed-no-jti", edited(|c| c["jti"] = json!(""))),
        (
            "signed-extreme-times",
            edited(|c| {
                c["exp"] = json!(i64::MAX);
                c["iat"] = json!(i64::MIN);
                c["nbf"] = json!(i64::MIN);
            }),
        ),
        ("signed-duplicate-sub", br#"{"sub":"a","sub":"b"}"#.to_vec()),
    ];
    for (i, (name, payload)) in signed.into_iter().enumerate() {
        seeds.push((name, with_mode(1 + (i % 3) as u8, payload)));
    }
    let typ_jwt = format!("{}\n{good}", json!({"alg": "RS256", "typ": "JWT", "kid": rs.kid}));
    seeds.push(("signed-typ-jwt-header", with_mode(1, typ_jwt)));
    seeds
}

fn jwe_seeds() -> Seeds {
    let fixture = &*jwe_target::FIXTURE;
    let inner = access_token(0);
    let nested =
        |key, seed| jwe::encrypt_nested(&inner, key, Some("kid-1"), Some(ISSUER), &mut rng(seed)).expect("encrypts");
    let mut seeds: Seeds = vec![
        ("nested-p256", with_mode(0, nested(&fixture.p256_public, 30))),
        ("nested-rsa", with_mode(0, nested(&fixture.rsa_public, 31))),
        (
            "plain-p256",
            with_mode(
                0,
                jwe::encrypt(b"{\"patient\":\"p-1001\"}", &fixture.p256_public, &Protected::default(), &mut rng(32))
                    .expect("encrypts"),
            ),
        ),
    ];
    for (name, file) in [
        ("rfc7520-5-2-rsa-oaep", "rfc7520/jwe/5_2.key_encryption_using_rsa-oaep_with_aes-gcm.json"),
        (
            "rfc7520-5-4-ecdh-es-p384",
            "rfc7520/jwe/5_4.key_agreement_with_key_wrapping_using_ecdh-es_and_aes-keywrap_with_aes-gcm.json",
        ),
        ("rfc7520-5-8-a128kw", "rfc7520/jwe/5_8.key_wrap_using_aes-keywrap_with_aes-gcm.json"),
    ] {
        let compact = vectors(file)["output"]["compact"].as_str().expect("compact").to_owned();
        seeds.push((name, with_mode(1, compact)));
    }
    let nested_vector = vectors("rfc7520/6.nesting_signatures_and_encryption.json");
    let compact = nested_vector["encrypt"]["output"]["compact"].as_str().expect("compact").to_owned();
    seeds.push(("rfc7520-6-nested", with_mode(1, compact)));
    const WYCHEPROOF: [&str; 4] = ["wycheproof-1", "wycheproof-2", "wycheproof-3", "wycheproof-4"];
    for (name, token) in WYCHEPROOF.iter().zip(wycheproof("json_web_encryption_test.json", "jwe", 4)) {
        seeds.push((name, with_mode(0, token)));
    }
    let meta_and_jws = format!("kid-1\n{ISSUER}\0{inner}");
    seeds.push(("round-trip-p256", with_mode(2, &meta_and_jws)));
    seeds.push(("round-trip-rsa", with_mode(3, &meta_and_jws)));
    seeds.push(("round-trip-empty", vec![2]));
    seeds
}

fn context_seeds() -> Seeds {
    let key = health_core::SecretKey::from_bytes(crate::context::KEY);
    // From JSON, so fields added to the caller record later keep their defaults here.
    let caller: Caller = serde_json::from_value(json!({
        "tenant_id": TENANT, "subject": "u-alice", "role": Role::Patient.as_str(), "client_id": "health-web",
        "scopes": ["records:read"], "jti": "j-1",
    }))
    .expect("caller record");
    let path = "/patients/p-1001/record";
    let headers = |mode: u8, link: context::Link, method: &str, body: &str, at: i64| {
        let att = context::attest(&key, link, method, path, body.as_bytes(), &caller, at);
        let (from, caller, ts, mac) = (att.from, att.caller, att.timestamp, att.mac);
        with_mode(mode, format!("{method}\0{path}\0{body}\0{caller}\0{ts}\0{mac}\0{from}"))
    };
    let patient = crate::context::link();
    // The same key on the auth -> jwks link: a sender the patient service does not serve.
    let auth_jwks = context::Link::new(context::Component::Auth, context::Component::Jwks).expect("link");
    vec![
        ("attested-get", headers(0, patient, "GET", "", NOW)),
        ("attested-post", headers(0, patient, "POST", r#"{"kind":"note","content":"x"}"#, NOW - 10)),
        ("stale", headers(0, patient, "GET", "", NOW - 31)),
        ("recomputed-mac", headers(1, patient, "GET", "", NOW + 5)),
        ("recomputed-mac-bad-json", with_mode(1, format!("GET\0{path}\0\0{}\0{NOW}\0", b64url("{\"role\":1}")))),
        ("other-sender", headers(0, auth_jwks, "GET", "", NOW)),
        ("missing", vec![2]),
    ]
}

fn identity_seeds() -> Seeds {
    let fixture = &*identity::FIXTURE;
    let assertion_claims = |edit: fn(&mut Value)| {
        let mut value = json!({
            "iss": identity::CLIENT_ID, "sub": identity::CLIENT_ID, "aud": identity::TOKEN_ENDPOINT,
            "exp": NOW + 120, "iat": NOW, "jti": "a-1",
        });
        edit(&mut value);
        value.to_string()
    };
    let assertion = fixture.client.sign(fixture.assertion_header().as_bytes(), assertion_claims(|_| {}).as_bytes());
    let form_assertion = format!(
        "grant_type=client_credentials&client_assertion_type={}&client_assertion={assertion}",
        "urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer"
    );
    let basic = "Basic YWNtZS1oZWFsdGg6YWNtZS1oZWFsdGgtZGVtby1zZWNyZXQtMjAyNg==";
    let jwk = &fixture.client_jwk;
    let ec = json!({"kty": "EC", "crv": "P-256", "x": jwk.x, "y": jwk.y, "use": "sig", "alg": "ES256"});
    let rsa = vectors("rfc7520/jwk/3_3.rsa_public_key.json");
    let rsa = json!({"kty": "RSA", "n": rsa["n"], "e": rsa["e"], "alg": "RSA-OAEP-256"});
    let ed = &jws::FIXTURE.keys.keys[2].jwk;
    let okp = json!({"kty": "OKP", "crv": "Ed25519", "x": ed.x});
    let step = health_identity::totp::step_at(NOW);
    vec![
        ("form-refresh", with_mode(0, format!("grant_type=refresh_token&refresh_token={}", "A".repeat(43)))),
        ("form-secret-post", with_mode(0, "grant_type=client_credentials&client_id=ins-acme&client_secret=s%2Bp+q")),
        ("form-assertion", with_mode(0, form_assertion)),
        ("form-public-revoke", with_mode(0, "token=abc.def.ghi&token_type_hint=access_token&client_id=health-web")),
        ("form-repeated", with_mode(0, "a=1&a=2")),
        ("basic-and-form", with_mode(4, format!("{basic}\ngrant_type=client_credentials"))),
        ("basic-ipv6-source", with_mode(4, "[2001:db8::1]:443\ntoken=x")),
        ("totp-current", with_mode(1, health_identity::totp::code(identity::TOTP_SECRET, step))),
        ("totp-reused", with_mode(0x91, health_identity::totp::code(identity::TOTP_SECRET, step))),
        ("totp-base32-secret", with_mode(1, "GEZD GNBV GY3T QOJQ GEZD GNBV GY3T QOJQ====")),
        ("jwk-ec-sig", with_mode(2, ec.to_string())),
        ("jwk-rsa-enc", with_mode(2, rsa.to_string())),
        ("jwk-okp-sig", with_mode(2, okp.to_string())),
        ("jwk-private-member", with_mode(2, r#"{"kty":"EC","crv":"P-256","x":"AA","y":"AA","d":"AA"}"#)),
        ("assertion-valid", with_mode(3, assertion_claims(|_| {}))),
        ("assertion-aud-array", with_mode(3, assertion_claims(|c| c["aud"] = json!(["x", identity::TOKEN_ENDPOINT])))),
        ("assertion-too-long", with_mode(3, assertion_claims(|c| c["exp"] = json!(NOW + 3600)))),
        ("assertion-extreme-exp", with_mode(3, assertion_claims(|c| c["exp"] = json!(i64::MIN)))),
    ]
}

fn ids_seeds() -> Seeds {
    let texts: [(&'static str, String); 12] = [
        ("tenant", "demo-hospital".into()),
        ("patient", "p-1001".into()),
        ("username", "dr_grey".into()),
        ("traversal", "../etc/passwd".into()),
        ("upper", "Alice".into()),
        ("empty", String::new()),
        ("longest", "a".repeat(64)),
        ("too-long", "a".repeat(65)),
        ("non-ascii", "é-1".into()),
        ("b64url-header", "eyJhbGciOiJSUzI1NiJ9".into()),
        ("b64url-noncanonical", "eB".into()),
        ("role", "insurance".into()),
    ];
    texts.into_iter().map(|(name, text)| (name, text.into_bytes())).collect()
}

fn routes_seeds() -> Seeds {
    let requests: [(&'static str, &str, &str, &str); 18] = [
        ("demographics", "GET", "/api/patients/p-1001", ""),
        ("records", "GET", "/api/patients/p-1001/records", ""),
        ("add-record", "POST", "/api/patients/p-1001/records", r#"{"kind":"diagnosis","content":"Asthma (J45)"}"#),
        (
            "update-record",
            "PUT",
            "/api/patients/p-1001/records",
            r#"{"entry_id":"e-1","content":"Asthma, mild","reason":"Severity re-assessed"}"#,
        ),
        ("record-history", "GET", "/api/patients/p-1001/records/e-1/history", ""),
        ("lab-results", "GET", "/api/patients/p-1001/lab-results", ""),
        ("break-glass", "POST", "/api/patients/p-1001/break-glass", r#"{"reason":"Unconscious in ED, no care team"}"#),
        (
            "grant-consent",
            "POST",
            "/api/patients/p-1001/consents",
            r#"{"insurer":"acme-health","expires_at":1900000000}"#,
        ),
        ("revoke-consent", "DELETE", "/api/patients/p-1001/consents?insurer=acme-health", ""),
        ("lab-orders", "GET", "/api/lab/orders", ""),
        (
            "lab-result",
            "POST",
            "/api/lab/orders/o-1/results",
            r#"{"code":"4548-4","value":"6.1","unit":"%","note":"fasting"}"#,
        ),
        ("summary", "GET", "/api/insurance/patients/p-1001/summary", ""),
        (
            "audit",
            "GET",
            "/api/admin/audit?from=10&to=20&actor=u-alice&outcome=deny&limit=5&jti=AbC_-1&after=3&patient=p-1",
            "",
        ),
        ("audit-export", "GET", "/api/admin/audit/export?limit=1000", ""),
        ("audit-verify", "GET", "/api/admin/audit/verify", ""),
        ("break-glass-review", "GET", "/api/admin/break-glass?from=0&after=9", ""),
        ("erase", "DELETE", "/api/admin/patients/p-1001", ""),
        ("rotate", "POST", "/api/admin/data-keys/rotate", ""),
    ];
    requests.into_iter().map(|(name, m, p, b)| (name, format!("{m}\0{p}\0{b}").into_bytes())).collect()
}

/// Every target's seeds, by target name.
fn all() -> Vec<(&'static str, Seeds, fn(&[u8]))> {
    vec![
        ("jws_verify", jws_seeds(), crate::jws::run),
        ("jwe_decrypt", jwe_seeds(), crate::jwe::run),
        ("caller_context", context_seeds(), crate::context::run),
        ("identity", identity_seeds(), crate::identity::run),
        ("ids", ids_seeds(), crate::ids::run),
        ("routes", routes_seeds(), crate::routes::run),
    ]
}

#[test]
#[ignore = "rewrites fuzz/corpus; run it on purpose"]
fn write_seeds() {
    for (target, seeds, _) in all() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target);
        std::fs::create_dir_all(&dir).expect("corpus dir");
        for (name, bytes) in seeds {
            std::fs::write(dir.join(name), bytes).expect("write seed");
        }
    }
}

#[test]
fn every_seed_runs_clean() {
    for (target, seeds, run) in all() {
        for (name, bytes) in seeds {
            eprintln!("{target}/{name}");
            run(&bytes);
        }
    }
}

#[test]
fn valid_seeds_reach_the_end() {
    for index in 0..3 {
        assert_eq!(jws::check(&access_token(index)), Ok(()), "signer {index}");
    }
    let key = health_core::SecretKey::from_bytes(crate::context::KEY);
    let seed = &context_seeds()[0].1;
    let parts: Vec<&[u8]> = seed[1..].split(|&b| b == 0).collect();
    let text = |i: usize| String::from_utf8(parts[i].to_vec()).expect("utf-8");
    let att = context::Attestation { from: text(6), caller: text(3), timestamp: text(4), mac: text(5) };
    assert!(context::verify(&key, crate::context::link(), "GET", &text(1), b"", Some(&att), NOW).is_ok());
    assert_eq!(crate::context::mac("GET", &text(1), b"", &att.timestamp, &att.caller), att.mac);
    assert!(health_core::routes::parse("GET", "/api/patients/p-1001/records").is_some());
}
