use super::*;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use rsa::BigUint;
use serde_json::{Value, json};

fn rng() -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(11)
}

/// The RFC 7520 §3.4 RSA key: no key generation in unit tests.
fn rsa_key() -> RsaPrivateKey {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/rfc7520/jwk/3_4.rsa_private_key.json");
    let jwk: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let big = |m: &str| BigUint::from_bytes_be(&b64url_decode(jwk[m].as_str().unwrap()).unwrap());
    RsaPrivateKey::from_components(big("n"), big("e"), big("d"), vec![big("p"), big("q")]).unwrap()
}

fn p256_pair(seed: u64) -> (p256::SecretKey, EncryptionKey) {
    let secret = p256::SecretKey::random(&mut ChaCha20Rng::seed_from_u64(seed));
    let public = EncryptionKey::P256(secret.public_key());
    (secret, public)
}

fn ec_token(plaintext: &[u8]) -> (String, DecryptionKey) {
    let (secret, public) = p256_pair(1);
    (
        encrypt(plaintext, &public, &Protected { kid: Some("k1"), ..Protected::default() }, &mut rng()).unwrap(),
        DecryptionKey::P256(secret),
    )
}

fn header_of(token: &str) -> Value {
    serde_json::from_slice(&b64url_decode(token.split('.').next().unwrap()).unwrap()).unwrap()
}

/// `token` with its protected header replaced by `header` (other parts unchanged).
fn with_header(token: &str, header: &Value) -> String {
    let rest = token.split_once('.').unwrap().1;
    format!("{}.{rest}", b64url(serde_json::to_vec(header).unwrap()))
}

const PLATFORM: &JwePolicy = &JwePolicy::PLATFORM;

#[test]
fn round_trips_to_p256_and_rsa_keys() {
    let (token, key) = ec_token(b"hello");
    assert_eq!(token.split('.').count(), 5);
    let header = header_of(&token);
    assert_eq!(
        (header["alg"].as_str(), header["enc"].as_str(), header["kid"].as_str()),
        (Some("ECDH-ES+A256KW"), Some("A256GCM"), Some("k1"))
    );
    assert_eq!(header["epk"]["crv"], "P-256");
    assert_eq!(decrypt(&token, &key, PLATFORM).unwrap().plaintext, b"hello");

    let private = rsa_key();
    let token =
        encrypt(b"hi", &EncryptionKey::Rsa(RsaPublicKey::from(&private)), &Protected::default(), &mut rng()).unwrap();
    assert_eq!(header_of(&token)["alg"], "RSA-OAEP-256");
    let decrypted = decrypt(&token, &DecryptionKey::Rsa(private), PLATFORM).unwrap();
    assert_eq!((decrypted.plaintext.as_slice(), decrypted.header.kid), (&b"hi"[..], None));
}

#[test]
fn nested_tokens_carry_cty_jwt() {
    let (secret, public) = p256_pair(2);
    let token = encrypt_nested("a.b.c", &public, Some("k"), Some("https://h/t/a"), &mut rng()).unwrap();
    let decrypted = decrypt(&token, &DecryptionKey::P256(secret), PLATFORM).unwrap();
    assert_eq!(decrypted.header.cty.as_deref(), Some("JWT"));
    assert_eq!(decrypted.header.iss.as_deref(), Some("https://h/t/a"));
    assert_eq!(decrypted.plaintext, b"a.b.c");
    assert_eq!(peek_header(&token, PLATFORM).unwrap().kid.as_deref(), Some("k"));
}

#[test]
fn any_altered_part_is_the_same_error() {
    let (token, key) = ec_token(b"sensitive summary");
    let parts: Vec<&str> = token.split('.').collect();
    for index in 0..5 {
        // Flip one bit of the decoded part and re-encode.
        let mut bytes = b64url_decode(parts[index]).unwrap();
        if bytes.is_empty() {
            continue;
        }
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let mut altered = parts.clone();
        let encoded = b64url(&bytes);
        altered[index] = &encoded;
        assert_eq!(decrypt(&altered.join("."), &key, PLATFORM), Err(JweError), "part {index}");
        // Drop the part, and swap it with its neighbour.
        let mut dropped = parts.clone();
        dropped.remove(index);
        assert_eq!(decrypt(&dropped.join("."), &key, PLATFORM), Err(JweError));
    }
    assert_eq!(decrypt(&format!("{token}.x"), &key, PLATFORM), Err(JweError));
    assert_eq!(decrypt(&format!("{token}="), &key, PLATFORM), Err(JweError));
    assert_eq!(decrypt(&token.replacen('.', "..", 1), &key, PLATFORM), Err(JweError));
    // The standard (non-URL) base64 alphabet is not base64url.
    if token.contains('-') {
        assert_eq!(decrypt(&token.replace('-', "+"), &key, PLATFORM), Err(JweError));
    }
    assert_eq!(decrypt(&"a".repeat(17_000), &key, PLATFORM), Err(JweError));
}

#[test]
fn wrong_keys_are_the_same_error() {
    let (token, _) = ec_token(b"x");
    let (other, _) = p256_pair(99);
    assert_eq!(decrypt(&token, &DecryptionKey::P256(other), PLATFORM), Err(JweError));
    assert_eq!(decrypt(&token, &DecryptionKey::Rsa(rsa_key()), PLATFORM), Err(JweError));
    let private = rsa_key();
    let token =
        encrypt(b"x", &EncryptionKey::Rsa(RsaPublicKey::from(&private)), &Protected::default(), &mut rng()).unwrap();
    let (ec, _) = p256_pair(3);
    assert_eq!(decrypt(&token, &DecryptionKey::P256(ec), PLATFORM), Err(JweError));
}

#[test]
fn refused_header_members_and_algorithms() {
    let (token, key) = ec_token(b"x");
    let header = header_of(&token);
    let variants: Vec<Value> = vec![
        {
            let mut h = header.clone();
            h["zip"] = json!("DEF");
            h
        },
        {
            let mut h = header.clone();
            h["crit"] = json!(["exp"]);
            h
        },
        {
            let mut h = header.clone();
            h["jku"] = json!("https://evil.example/jwks");
            h
        },
        {
            let mut h = header.clone();
            h["jwk"] = header["epk"].clone();
            h
        },
        {
            let mut h = header.clone();
            h["alg"] = json!("dir");
            h
        },
        {
            let mut h = header.clone();
            h["alg"] = json!("RSA1_5");
            h
        },
        {
            let mut h = header.clone();
            h["alg"] = json!("ECDH-ES");
            h
        },
        {
            let mut h = header.clone();
            h["enc"] = json!("A128CBC-HS256");
            h
        },
        {
            let mut h = header.clone();
            h["alg"] = json!("ecdh-es+a256kw");
            h
        },
        {
            let mut h = header.clone();
            h["epk"]["crv"] = json!("P-384");
            h
        },
        // A point not on P-256 (y + 1): the invalid-curve attack.
        {
            let mut h = header.clone();
            let mut y = b64url_decode(header["epk"]["y"].as_str().unwrap()).unwrap();
            y[31] ^= 1;
            h["epk"]["y"] = json!(b64url(y));
            h
        },
    ];
    for variant in variants {
        assert_eq!(decrypt(&with_header(&token, &variant), &key, PLATFORM), Err(JweError), "{variant}");
    }
    // Duplicate members: the raw header JSON written by hand.
    let duplicated = format!(r#"{{"alg":"ECDH-ES+A256KW","alg":"dir","enc":"A256GCM","epk":{}}}"#, header["epk"]);
    let rest = token.split_once('.').unwrap().1;
    assert_eq!(decrypt(&format!("{}.{rest}", b64url(duplicated)), &key, PLATFORM), Err(JweError));
}

#[test]
fn the_platform_policy_refuses_what_only_conformance_allows() {
    // RSA-OAEP (SHA-1) and A128GCM decrypt under CONFORMANCE only.
    let private = rsa_key();
    let mut cek = [7u8; 16];
    rng().fill_bytes(&mut cek);
    let ek = RsaPublicKey::from(&private).encrypt(&mut rng(), Oaep::new::<sha1::Sha1>(), &cek).unwrap();
    let protected = b64url(br#"{"alg":"RSA-OAEP","enc":"A128GCM"}"#);
    let token = seal(&protected, &ek, &cek, &[1u8; 12], b"old").unwrap();
    let key = DecryptionKey::Rsa(private);
    assert_eq!(decrypt(&token, &key, &JwePolicy::CONFORMANCE).unwrap().plaintext, b"old");
    assert_eq!(decrypt(&token, &key, PLATFORM), Err(JweError));
}

#[test]
fn concat_kdf_matches_rfc7518_appendix_c() {
    // RFC 7518 Appendix C: ECDH-ES direct, A128GCM, apu "Alice", apv "Bob".
    let z = [
        158, 86, 217, 29, 129, 113, 53, 211, 114, 131, 66, 131, 191, 132, 38, 156, 251, 49, 110, 163, 218, 128, 106,
        72, 246, 218, 167, 121, 140, 254, 144, 196,
    ];
    let derived = concat_kdf_raw(&z, "A128GCM", b"Alice", b"Bob", 16);
    assert_eq!(b64url(derived), "VqqN6vgjbSBcIijNcacQGg");
}
