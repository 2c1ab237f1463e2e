//! The JWE layer against published vectors: the RFC 7520 cookbook (ietf-jose/cookbook, §5.2
//! RSA-OAEP + A256GCM, §5.4 ECDH-ES+A128KW on P-384 + A128GCM, §5.8 A128KW + A128GCM, §6 nested
//! signing and encryption) and Wycheproof (C2SP/wycheproof
//! `testvectors_v1/json_web_encryption_test.json`), fixtures copied unchanged.

use std::collections::BTreeMap;

use health_core::{b64url, b64url_decode};
use health_jose::jwe::{self, DecryptionKey, JweError, JwePolicy};
use rsa::{BigUint, RsaPrivateKey};
use serde_json::Value;

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))).expect("json")
}

fn bytes(value: &Value) -> Vec<u8> {
    b64url_decode(value.as_str().expect("base64url string")).expect("base64url")
}

/// A private JWK as the key the JWE layer decrypts with.
fn private_key(jwk: &Value) -> Option<DecryptionKey> {
    match (jwk["kty"].as_str()?, jwk["crv"].as_str()) {
        ("RSA", _) => {
            let big = |m: &str| BigUint::from_bytes_be(&bytes(&jwk[m]));
            Some(DecryptionKey::Rsa(
                RsaPrivateKey::from_components(big("n"), big("e"), big("d"), vec![big("p"), big("q")]).ok()?,
            ))
        }
        ("EC", Some("P-256")) => Some(DecryptionKey::P256(p256::SecretKey::from_slice(&bytes(&jwk["d"])).ok()?)),
        ("EC", Some("P-384")) => Some(DecryptionKey::P384(p384::SecretKey::from_slice(&bytes(&jwk["d"])).ok()?)),
        ("oct", _) => Some(DecryptionKey::Aes(bytes(&jwk["k"]))),
        _ => None,
    }
}

/// Decrypts a cookbook example's compact output and checks the plaintext; re-seals its content
/// from the published CEK, IV and header and checks the ciphertext and tag byte for byte.
fn check_cookbook(example: &Value) -> String {
    let key = private_key(&example["input"]["key"]).expect("cookbook key");
    let compact = example["output"]["compact"].as_str().expect("compact output");
    let decrypted = jwe::decrypt(compact, &key, &JwePolicy::CONFORMANCE).expect("cookbook example decrypts");
    let plaintext = example["input"]["plaintext"].as_str().expect("plaintext");
    assert_eq!(String::from_utf8(decrypted.plaintext).expect("utf-8"), plaintext);
    let content = &example["encrypting_content"];
    let sealed = jwe::seal(
        content["protected_b64u"].as_str().expect("protected"),
        &bytes(&example["encrypting_key"]["encrypted_key"]),
        &bytes(&example["generated"]["cek"]),
        &bytes(&example["generated"]["iv"]),
        plaintext.as_bytes(),
    )
    .expect("seals");
    assert_eq!(sealed, compact, "content encryption differs from the published output");
    // The platform's own policy takes none of these neighbouring algorithms.
    assert_eq!(jwe::decrypt(compact, &key, &JwePolicy::PLATFORM), Err(JweError));
    compact.to_owned()
}

#[test]
fn rfc7520_5_2_rsa_oaep_with_a256gcm() {
    check_cookbook(&fixture("rfc7520/jwe/5_2.key_encryption_using_rsa-oaep_with_aes-gcm.json"));
}

#[test]
fn rfc7520_5_4_ecdh_es_a128kw_on_p384_reproduced_byte_for_byte() {
    let example =
        fixture("rfc7520/jwe/5_4.key_agreement_with_key_wrapping_using_ecdh-es_and_aes-keywrap_with_aes-gcm.json");
    check_cookbook(&example);
    // The encrypting side: the published ephemeral key wraps the published CEK to the same bytes.
    let ephemeral = p384::SecretKey::from_slice(&bytes(&example["encrypting_key"]["epk"]["d"])).expect("ephemeral");
    let Some(DecryptionKey::P384(recipient)) = private_key(&example["input"]["key"]) else { panic!("P-384 key") };
    let wrapped = jwe::wrap_ecdh_p384(
        &ephemeral,
        &recipient.public_key(),
        "ECDH-ES+A128KW",
        &bytes(&example["generated"]["cek"]),
    )
    .expect("wraps");
    assert_eq!(b64url(&wrapped), example["encrypting_key"]["encrypted_key"].as_str().expect("encrypted key"));
    // And the whole compact output from the wrapped key just computed, not the published one.
    let resealed = jwe::seal(
        example["encrypting_content"]["protected_b64u"].as_str().expect("protected"),
        &wrapped,
        &bytes(&example["generated"]["cek"]),
        &bytes(&example["generated"]["iv"]),
        example["input"]["plaintext"].as_str().expect("plaintext").as_bytes(),
    )
    .expect("seals");
    assert_eq!(resealed, example["output"]["compact"].as_str().expect("compact"));
}

#[test]
fn rfc7520_5_8_aes_key_wrap_with_a128gcm() {
    check_cookbook(&fixture("rfc7520/jwe/5_8.key_wrap_using_aes-keywrap_with_aes-gcm.json"));
}

#[test]
fn rfc7520_6_nested_jws_inside_jwe() {
    let example = fixture("rfc7520/6.nesting_signatures_and_encryption.json");
    let encrypt = &example["encrypt"];
    let key = private_key(&encrypt["input"]["key"]).expect("RSA key");
    let compact = encrypt["output"]["compact"].as_str().expect("compact");
    let decrypted = jwe::decrypt(compact, &key, &JwePolicy::CONFORMANCE).expect("decrypts");
    assert_eq!(decrypted.header.cty.as_deref(), Some("JWT"));
    let inner = String::from_utf8(decrypted.plaintext).expect("utf-8");
    assert_eq!(inner, example["sign"]["output"]["compact"].as_str().expect("inner JWS"));
    assert_eq!(inner.split('.').count(), 3, "the plaintext is a compact JWS");
}

#[test]
fn wycheproof_jwe_vectors_are_decided_as_published() {
    let vectors = fixture("wycheproof/json_web_encryption_test.json");
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for group in vectors["testGroups"].as_array().expect("groups") {
        let key = private_key(&group["private"]);
        for case in group["tests"].as_array().expect("tests") {
            let id = &case["tcId"];
            let valid = case["result"] == "valid";
            let Some(token) = case["jwe"].as_str() else {
                *counts.entry("json_serialization_refused").or_default() += 1;
                continue;
            };
            let header =
                token.split('.').next().and_then(b64url_decode).and_then(|h| serde_json::from_slice::<Value>(&h).ok());
            let supported = header.as_ref().is_some_and(|h| {
                JwePolicy::CONFORMANCE.key_algs.contains(&h["alg"].as_str().unwrap_or_default())
                    && JwePolicy::CONFORMANCE.enc_algs.contains(&h["enc"].as_str().unwrap_or_default())
            });
            // A key is used only with the algorithm its JWK names, if it names one.
            let run = |policy: &JwePolicy| {
                key.as_ref().map(|key| match group["private"]["alg"].as_str() {
                    Some(alg) => jwe::decrypt_with_key_alg(token, key, alg, policy),
                    None => jwe::decrypt(token, key, policy),
                })
            };
            let category = match (supported, valid, run(&JwePolicy::CONFORMANCE)) {
                (true, true, Some(Ok(decrypted))) => {
                    let expected = hex::decode(case["pt"].as_str().expect("pt")).expect("hex");
                    assert_eq!(decrypted.plaintext, expected, "case {id}: wrong plaintext");
                    // The platform policy takes these only for its own pair of algorithms; a
                    // neighbour (ECDH-ES+A128KW, RSA-OAEP, A128GCM, ...) is refused on its own.
                    let member = |m: &str, allowed: &[&str]| {
                        header.as_ref().is_some_and(|h| allowed.contains(&h[m].as_str().unwrap_or_default()))
                    };
                    let (alg_ok, enc_ok) =
                        (member("alg", JwePolicy::PLATFORM.key_algs), member("enc", JwePolicy::PLATFORM.enc_algs));
                    let platform = run(&JwePolicy::PLATFORM);
                    assert_eq!(platform.as_ref().is_some_and(Result::is_ok), alg_ok && enc_ok, "case {id}: platform");
                    *counts
                        .entry(match (alg_ok, enc_ok) {
                            (true, true) => "valid_also_platform",
                            (false, true) => "valid_platform_refuses_alg",
                            _ => "valid_platform_refuses_enc",
                        })
                        .or_default() += 1;
                    "valid_decrypted"
                }
                (_, false, None | Some(Err(_))) => "invalid_refused",
                // Compression before encryption leaks plaintext through length: refused on purpose.
                (true, true, Some(Err(_))) if header.as_ref().is_some_and(|h| h.get("zip").is_some()) => "zip_refused",
                (false, true, None | Some(Err(_))) => "unsupported_alg_refused",
                (true, true, other) => panic!("case {id} ({}) refused: {other:?}", case["comment"]),
                (_, false, Some(Ok(_))) => panic!("case {id} ({}) accepted", case["comment"]),
                (false, true, Some(Ok(_))) => panic!("case {id}: unsupported algorithm accepted"),
            };
            *counts.entry(category).or_default() += 1;
        }
    }
    println!("{counts:?}");
    // 139 cases; of the 23 valid ones decrypted, 2 use the platform's own pair, 5 are refused by
    // the platform on `alg` alone (ECDH-ES+A128KW, RSA-OAEP, A256KW with A256GCM), 16 on `enc`.
    let expected: BTreeMap<&str, usize> = [
        ("invalid_refused", 74),
        ("unsupported_alg_refused", 41),
        ("valid_decrypted", 23),
        ("valid_also_platform", 2),
        ("valid_platform_refuses_alg", 5),
        ("valid_platform_refuses_enc", 16),
        ("zip_refused", 1),
    ]
    .into_iter()
    .collect();
    assert_eq!(counts, expected, "vector file or decrypter changed");
}
