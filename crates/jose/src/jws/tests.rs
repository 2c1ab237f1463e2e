use super::*;
use crate::{KeyRecord, PublicJwk};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use rsa::BigUint;
use serde_json::{Value, json};

const NOW: i64 = 1_800_000_000;

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/rfc7520/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn big(jwk: &Value, member: &str) -> BigUint {
    BigUint::from_bytes_be(&b64url_decode(jwk[member].as_str().unwrap()).unwrap())
}

/// The RFC 7520 §3.4 RSA key, so tests need no key generation and are reproducible.
fn rfc_key() -> RsaPrivateKey {
    let jwk = fixture("jwk/3_4.rsa_private_key.json");
    RsaPrivateKey::from_components(big(&jwk, "n"), big(&jwk, "e"), big(&jwk, "d"), vec![big(&jwk, "p"), big(&jwk, "q")])
        .unwrap()
}

fn rng() -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(7)
}

fn tenant(name: &str) -> TenantId {
    TenantId::parse(name).unwrap()
}

fn keys_for(name: &str, status: KeyStatus) -> TenantKeys {
    let jwk = fixture("jwk/3_3.rsa_public_key.json");
    let (n, e) = (jwk["n"].as_str().unwrap().to_owned(), jwk["e"].as_str().unwrap().to_owned());
    TenantKeys {
        tenant_id: tenant(name),
        issuer: format!("https://h.example/t/{name}"),
        keys: vec![KeyRecord {
            jwk: PublicJwk {
                kty: "RSA".into(),
                kid: "k1".into(),
                key_use: KeyUse::Sig,
                alg: "RS256".into(),
                n: Some(n),
                e: Some(e),
                crv: None,
                x: None,
                y: None,
                tenant_id: tenant(name),
            },
            status,
            created_at: 0,
            not_after: None,
        }],
    }
}

fn keys() -> TenantKeys {
    keys_for("demo", KeyStatus::Active)
}

fn claims() -> Claims {
    Claims {
        iss: "https://h.example/t/demo".into(),
        sub: "u-alice".into(),
        aud: "health-platform".into(),
        exp: NOW + 600,
        iat: NOW,
        nbf: NOW,
        jti: "j-1".into(),
        tenant_id: tenant("demo"),
        role: "patient".into(),
        scope: "records:read".into(),
        client_id: "web".into(),
        amr: vec!["pwd".into()],
        auth_time: NOW,
        enc_jwk: None,
    }
}

fn good() -> String {
    sign_rs256(&rfc_key(), "k1", &claims(), &mut rng()).unwrap()
}

/// Builds a token from raw header and payload JSON, signed RS256 with the fixture key.
fn forge(header: &str, payload: &str) -> String {
    let input = format!("{}.{}", b64url(header), b64url(payload));
    let sig = SigningKey::<Sha256>::new(rfc_key()).try_sign_with_rng(&mut rng(), input.as_bytes()).unwrap();
    format!("{input}.{}", b64url(sig.to_bytes()))
}

fn payload_with(edit: impl FnOnce(&mut Value)) -> String {
    let mut value = serde_json::to_value(claims()).unwrap();
    edit(&mut value);
    value.to_string()
}

const HEADER: &str = r#"{"alg":"RS256","typ":"at+jwt","kid":"k1"}"#;

fn check(token: &str) -> Result<Claims> {
    verify(token, &keys(), NOW, &VerifyOptions::default())
}

#[test]
fn matches_rfc7520_rsa_v15_signature_vector() {
    let vector = fixture("jws/4_1.rsa_v15_signature.json");
    let input = vector["signing"]["sig-input"].as_str().unwrap();
    let expected = vector["signing"]["sig"].as_str().unwrap();
    let sig = SigningKey::<Sha256>::new(rfc_key()).try_sign_with_rng(&mut rng(), input.as_bytes()).unwrap();
    assert_eq!(b64url(sig.to_bytes()), expected);
    let keys = keys();
    let jwk = &keys.keys[0].jwk;
    assert_eq!(verify_with(jwk, Algorithm::Rs256, input.as_bytes(), &b64url_decode(expected).unwrap()), Ok(()));
    assert_eq!(
        verify_with(jwk, Algorithm::Rs256, b"other input", &b64url_decode(expected).unwrap()),
        Err(Error::BadSignature)
    );
}

#[test]
fn round_trips_a_signed_access_token() {
    let token = good();
    assert_eq!(check(&token), Ok(claims()));
    assert_eq!(peek_tenant(&token, &VerifyOptions::default()), Ok(tenant("demo")));
    let header: Value = serde_json::from_slice(&b64url_decode(token.split('.').next().unwrap()).unwrap()).unwrap();
    assert_eq!(header, json!({"alg":"RS256","typ":"at+jwt","kid":"k1"}));
}

#[test]
fn rejects_alg_none_in_every_casing() {
    for alg in ["none", "None", "NONE", "nOnE"] {
        let header = format!(r#"{{"alg":"{alg}","typ":"at+jwt","kid":"k1"}}"#);
        let unsigned = format!("{}.{}.", b64url(&header), b64url(payload_with(|_| {})));
        assert_eq!(check(&unsigned), Err(Error::Malformed), "{alg}");
        let with_sig = format!("{unsigned}AAAA");
        assert_eq!(check(&with_sig), Err(Error::AlgorithmMismatch), "{alg}");
    }
}

#[test]
fn rejects_hs256_signed_with_the_public_key_as_secret() {
    use hmac::{Hmac, Mac};
    let header = r#"{"alg":"HS256","typ":"at+jwt","kid":"k1"}"#;
    let input = format!("{}.{}", b64url(header), b64url(payload_with(|_| {})));
    let public_jwk = fixture("jwk/3_3.rsa_public_key.json").to_string();
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(public_jwk.as_bytes()).unwrap();
    mac.update(input.as_bytes());
    let token = format!("{input}.{}", b64url(mac.finalize().into_bytes()));
    assert_eq!(check(&token), Err(Error::AlgorithmMismatch));
}

#[test]
fn rejects_crit_and_embedded_key_sources() {
    let payload = payload_with(|_| {});
    let crit = forge(r#"{"alg":"RS256","typ":"at+jwt","kid":"k1","crit":["exp"]}"#, &payload);
    assert_eq!(check(&crit), Err(Error::CriticalHeader));
    for member in ["jku", "x5u", "jwk", "x5c"] {
        let header = format!(r#"{{"alg":"RS256","typ":"at+jwt","kid":"k1","{member}":"x"}}"#);
        assert!(matches!(check(&forge(&header, &payload)), Err(Error::EmbeddedKey(_))), "{member}");
    }
}

#[test]
fn rejects_unknown_missing_and_injected_kids() {
    let payload = payload_with(|_| {});
    for kid in ["k2", "../../k1", "k1' OR '1'='1", ""] {
        let header = format!(r#"{{"alg":"RS256","typ":"at+jwt","kid":"{kid}"}}"#);
        assert_eq!(check(&forge(&header, &payload)), Err(Error::UnknownKid), "{kid}");
    }
    assert_eq!(check(&forge(r#"{"alg":"RS256","typ":"at+jwt"}"#, &payload)), Err(Error::MissingKid));
}

#[test]
fn rejects_tampered_payload_and_structural_garbage() {
    let token = good();
    let mut parts: Vec<&str> = token.split('.').collect();
    let other = b64url(payload_with(|c| c["role"] = json!("doctor")));
    parts[1] = &other;
    assert_eq!(check(&parts.join(".")), Err(Error::BadSignature));
    assert_eq!(check(&format!("{token}.")), Err(Error::Malformed));
    assert_eq!(check(&format!("{token}=")), Err(Error::Malformed));
    assert_eq!(check("a.b"), Err(Error::Malformed));
    assert_eq!(check("..."), Err(Error::Malformed));
    assert_eq!(check(&format!("!!{token}")), Err(Error::Malformed));
    let big = "a".repeat(16 * 1024 + 1);
    assert_eq!(check(&big), Err(Error::TooLarge));
}

#[test]
fn rejects_duplicate_members_and_non_json() {
    let dup_header = forge(r#"{"alg":"RS256","alg":"none","typ":"at+jwt","kid":"k1"}"#, &payload_with(|_| {}));
    assert_eq!(check(&dup_header), Err(Error::BadHeader));
    let payload = payload_with(|_| {});
    let dup_claims = forge(HEADER, &payload.replacen("{", r#"{"sub":"u-bob","#, 1));
    assert_eq!(check(&dup_claims), Err(Error::BadClaims));
    let input = format!("{}.{}", b64url([0xffu8, 0xfe]), b64url(payload));
    assert_eq!(check(&format!("{input}.AAAA")), Err(Error::BadHeader));
}

#[test]
fn enforces_required_claims_and_time_window() {
    for claim in ["exp", "iat", "iss", "aud", "jti", "tenant_id", "sub"] {
        let token = forge(
            HEADER,
            &payload_with(|c| {
                c.as_object_mut().unwrap().remove(claim);
            }),
        );
        assert_eq!(check(&token), Err(Error::MissingClaim(claim)), "{claim}");
    }
    let expired = forge(
        HEADER,
        &payload_with(|c| {
            c["iat"] = json!(NOW - 700);
            c["exp"] = json!(NOW - 61);
        }),
    );
    assert_eq!(check(&expired), Err(Error::Expired));
    let within_skew = forge(
        HEADER,
        &payload_with(|c| {
            c["iat"] = json!(NOW - 700);
            c["exp"] = json!(NOW - 59);
        }),
    );
    assert!(check(&within_skew).is_ok());
    let future = forge(
        HEADER,
        &payload_with(|c| {
            c["iat"] = json!(NOW + 61);
            c["exp"] = json!(NOW + 600);
        }),
    );
    assert_eq!(check(&future), Err(Error::IssuedInFuture));
    let nbf = forge(HEADER, &payload_with(|c| c["nbf"] = json!(NOW + 120)));
    assert_eq!(check(&nbf), Err(Error::NotYetValid));
    let long = forge(HEADER, &payload_with(|c| c["exp"] = json!(NOW + 901)));
    assert_eq!(check(&long), Err(Error::LifetimeTooLong));
    let huge = forge(HEADER, &payload_with(|c| c["exp"] = json!(i64::MAX)));
    assert_eq!(check(&huge), Err(Error::LifetimeTooLong));
    let overflow = forge(HEADER, &payload_with(|c| c["exp"] = json!(1e300)));
    assert_eq!(check(&overflow), Err(Error::BadClaims));
}

#[test]
fn accepts_the_access_token_media_type_in_every_spelling() {
    // RFC 9068 §4, RFC 7515 §4.1.9: `application/` is optional and the comparison ignores case.
    let payload = payload_with(|_| {});
    for typ in ["at+jwt", "application/at+jwt", "AT+JWT", "Application/At+Jwt"] {
        let header = format!(r#"{{"alg":"RS256","typ":"{typ}","kid":"k1"}}"#);
        assert!(check(&forge(&header, &payload)).is_ok(), "{typ}");
    }
}

#[test]
fn rejects_wrong_typ_audience_and_issuer() {
    let payload = payload_with(|_| {});
    assert_eq!(check(&forge(r#"{"alg":"RS256","typ":"JWT","kid":"k1"}"#, &payload)), Err(Error::WrongType));
    assert_eq!(check(&forge(r#"{"alg":"RS256","kid":"k1"}"#, &payload)), Err(Error::WrongType));
    for other in ["application/jwt", "text/at+jwt", "application/", "at+jwt ", "application/application/at+jwt"] {
        let header = format!(r#"{{"alg":"RS256","typ":"{other}","kid":"k1"}}"#);
        assert_eq!(check(&forge(&header, &payload)), Err(Error::WrongType), "{other}");
    }
    assert_eq!(check(&forge(HEADER, &payload_with(|c| c["aud"] = json!("other")))), Err(Error::WrongAudience));
    assert!(check(&forge(HEADER, &payload_with(|c| c["aud"] = json!(["x", "health-platform"])))).is_ok());
    let iss = forge(HEADER, &payload_with(|c| c["iss"] = json!("https://h.example/t/other")));
    assert_eq!(check(&iss), Err(Error::WrongIssuer));
}

#[test]
fn token_of_tenant_a_never_verifies_as_tenant_b() {
    // Signed by the key registered for tenant "demo" but claiming tenant "other".
    let claims_b = forge(HEADER, &payload_with(|c| c["tenant_id"] = json!("other")));
    assert_eq!(check(&claims_b), Err(Error::TenantMismatch));
    // Verified against tenant "other"'s key set, which does not hold "demo"'s kid.
    let other = TenantKeys { keys: vec![], ..keys_for("other", KeyStatus::Active) };
    assert_eq!(verify(&good(), &other, NOW, &VerifyOptions::default()), Err(Error::UnknownKid));
}

#[test]
fn retiring_keys_verify_but_retired_and_revoked_do_not() {
    let opts = VerifyOptions::default();
    assert!(verify(&good(), &keys_for("demo", KeyStatus::Retiring), NOW, &opts).is_ok());
    assert_eq!(verify(&good(), &keys_for("demo", KeyStatus::Retired), NOW, &opts), Err(Error::KeyRetired));
    assert_eq!(verify(&good(), &keys_for("demo", KeyStatus::Revoked), NOW, &opts), Err(Error::KeyRevoked));
}

#[test]
fn retiring_key_past_its_window_is_refused_without_a_store_update() {
    let mut keys = keys_for("demo", KeyStatus::Retiring);
    keys.keys[0].not_after = Some(NOW);
    assert_eq!(verify(&good(), &keys, NOW, &VerifyOptions::default()), Err(Error::KeyRetired));
    keys.keys[0].not_after = Some(NOW + 1);
    assert!(verify(&good(), &keys, NOW, &VerifyOptions::default()).is_ok());
}

#[test]
fn recheck_refuses_what_changed_since_a_token_was_verified() {
    let opts = VerifyOptions::default();
    let (claims, kid) = verify_keyed(&good(), &keys(), NOW, &opts).unwrap();
    assert_eq!(kid, "k1");
    assert_eq!(recheck(&claims, &kid, &keys(), NOW + 60, &opts), Ok(()));
    // The clock moved past expiry (plus tolerance).
    assert_eq!(recheck(&claims, &kid, &keys(), claims.exp + 60, &opts), Err(Error::Expired));
    // The key was revoked or retired, or vanished from the set.
    assert_eq!(recheck(&claims, &kid, &keys_for("demo", KeyStatus::Revoked), NOW, &opts), Err(Error::KeyRevoked));
    assert_eq!(recheck(&claims, &kid, &keys_for("demo", KeyStatus::Retired), NOW, &opts), Err(Error::KeyRetired));
    assert_eq!(recheck(&claims, "k2", &keys(), NOW, &opts), Err(Error::UnknownKid));
    // Another tenant's key set never vouches for it.
    assert_eq!(recheck(&claims, &kid, &keys_for("other", KeyStatus::Active), NOW, &opts), Err(Error::TenantMismatch));
}

#[test]
fn rejects_invalid_utf8_even_in_members_nothing_reads() {
    // Signed, well-formed JSON apart from two bytes that are not UTF-8 in an ignored member.
    let sign_raw = |header: &[u8], payload: &[u8]| {
        let input = format!("{}.{}", b64url(header), b64url(payload));
        let sig = SigningKey::<Sha256>::new(rfc_key()).try_sign_with_rng(&mut rng(), input.as_bytes()).unwrap();
        format!("{input}.{}", b64url(sig.to_bytes()))
    };
    let payload = payload_with(|_| {});
    let mut header = br#"{"alg":"RS256","typ":"at+jwt","kid":"k1","x":""#.to_vec();
    header.extend([0xff, 0xfe, b'"', b'}']);
    assert_eq!(check(&sign_raw(&header, payload.as_bytes())), Err(Error::BadHeader));
    let mut claims = payload.trim_end_matches('}').as_bytes().to_vec();
    claims.extend(br#","note":""#);
    claims.extend([0xff, 0xfe, b'"', b'}']);
    assert_eq!(check(&sign_raw(HEADER.as_bytes(), &claims)), Err(Error::BadClaims));
    assert!(check(&sign_raw(HEADER.as_bytes(), payload.as_bytes())).is_ok(), "the same token, valid UTF-8, verifies");
}
