//! `jwe_decrypt`: `jwe::peek_header`, `jwe::decrypt` and `jwe::decrypt_with_key_alg` with fixed
//! P-256 and RSA decryption keys under [`JwePolicy::PLATFORM`], and the neighbouring algorithms
//! of [`JwePolicy::CONFORMANCE`] with the RFC 7520 keys (the same parsing and unwrapping code).
//!
//! Input: a mode byte, then
//! - mode 0: a compact JWE, decrypted under `PLATFORM` with both platform keys;
//! - mode 1: a compact JWE, decrypted under `CONFORMANCE` with the cookbook keys;
//! - modes 2 and 3: `kid \n iss \0 plaintext` (or just a plaintext), encrypted to the P-256
//!   (mode 2) or RSA (mode 3) key and decrypted again: the round trip must give back the
//!   plaintext and the header members that went in.

use std::sync::LazyLock;

use health_jose::Algorithm;
use health_jose::jwe::{self, DecryptionKey, EncryptionKey, JwePolicy, Protected};

use crate::{NOW, fixture, member, rng, rsa_key, tenant};

pub struct Fixture {
    pub p256: DecryptionKey,
    pub p256_public: EncryptionKey,
    pub rsa: DecryptionKey,
    pub rsa_public: EncryptionKey,
    /// RSA (the §3.4 key), RFC 7520 §5.4 (P-384) and §5.8 (A128KW) keys.
    pub cookbook: [DecryptionKey; 3],
}

pub static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let (p256, _) = health_jose::generate(Algorithm::EcdhEsA256kw, &tenant(), NOW, &mut rng(10)).expect("P-256 key");
    let health_jose::PrivateKey::P256(p256) = p256 else { unreachable!("ECDH-ES keys are P-256") };
    // RSA-OAEP-256 with the cookbook's 2048-bit RSA key (§3.4, the platform's RSA size): no RSA
    // key generation at start-up. The §5.2 key is 4096 bits, and each private operation with it
    // takes seconds in an instrumented build, so the conformance mode uses this one too: §5.2's
    // token is still parsed and unwrapped, it just does not decrypt.
    let rsa = rsa_key(&fixture("rsa_sig"));
    let p384 = p384::SecretKey::from_slice(&member(&fixture("p384"), "d")).expect("P-384 key");
    Fixture {
        p256_public: EncryptionKey::P256(p256.public_key()),
        p256: DecryptionKey::P256(p256),
        rsa_public: EncryptionKey::Rsa(rsa.to_public_key()),
        rsa: DecryptionKey::Rsa(rsa.clone()),
        cookbook: [
            DecryptionKey::Rsa(rsa),
            DecryptionKey::P384(p384),
            DecryptionKey::Aes(member(&fixture("aes"), "k")),
        ],
    }
});

fn platform(token: &str) {
    let fixture = &*FIXTURE;
    let policy = JwePolicy::PLATFORM;
    let header = jwe::peek_header(token, &policy);
    for (key, alg) in [(&fixture.p256, "ECDH-ES+A256KW"), (&fixture.rsa, "RSA-OAEP-256")] {
        let any = jwe::decrypt(token, key, &policy);
        let bound = jwe::decrypt_with_key_alg(token, key, alg, &policy);
        if let Ok(decrypted) = &bound {
            assert_eq!(Some(decrypted), any.as_ref().ok(), "bound key decrypted what the unbound one did not");
            assert_eq!(decrypted.header.alg, alg);
        }
        if let Ok(decrypted) = &any {
            assert_eq!(header.as_ref().ok(), Some(&decrypted.header), "peek_header disagrees with decrypt");
            assert!(policy.key_algs.contains(&decrypted.header.alg.as_str()));
            assert!(policy.enc_algs.contains(&decrypted.header.enc.as_str()));
            assert!(token.len() <= policy.max_bytes);
        }
    }
}

fn conformance(token: &str) {
    let policy = JwePolicy::CONFORMANCE;
    let header = jwe::peek_header(token, &policy);
    for key in &FIXTURE.cookbook {
        if let Ok(decrypted) = jwe::decrypt(token, key, &policy) {
            assert_eq!(header.as_ref().ok(), Some(&decrypted.header), "peek_header disagrees with decrypt");
        }
    }
}

fn round_trip(meta: &[u8], plaintext: &[u8], rsa: bool) {
    let fixture = &*FIXTURE;
    let meta = String::from_utf8_lossy(meta);
    let (kid, iss) = meta.split_once('\n').unwrap_or((&meta, ""));
    let protected = Protected {
        kid: Some(kid).filter(|k| !k.is_empty()),
        cty: Some("JWT"),
        iss: Some(iss).filter(|i| !i.is_empty()),
    };
    let (public, private) =
        if rsa { (&fixture.rsa_public, &fixture.rsa) } else { (&fixture.p256_public, &fixture.p256) };
    let token = jwe::encrypt(plaintext, public, &protected, &mut rng(11)).expect("encryption never fails");
    let policy = JwePolicy::PLATFORM;
    let decrypted = jwe::decrypt(&token, private, &policy);
    if token.len() > policy.max_bytes {
        assert!(decrypted.is_err(), "a token over the size cap decrypted");
        return;
    }
    let decrypted = decrypted.expect("own JWE decrypts");
    assert_eq!(decrypted.plaintext, plaintext);
    assert_eq!(decrypted.header.kid.as_deref(), protected.kid);
    assert_eq!(decrypted.header.iss.as_deref(), protected.iss);
    assert_eq!(decrypted.header.cty.as_deref(), Some("JWT"));
    assert_eq!(jwe::peek_header(&token, &policy), Ok(decrypted.header));
    // The other platform key must not open it.
    let other = if rsa { &fixture.p256 } else { &fixture.rsa };
    assert!(jwe::decrypt(&token, other, &policy).is_err(), "decrypted with the wrong key");
}

pub fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    match mode % 4 {
        0 | 1 => {
            let Ok(token) = std::str::from_utf8(rest) else { return };
            if mode % 4 == 0 { platform(token) } else { conformance(token) }
        }
        m => {
            let (meta, plaintext) = match rest.iter().position(|&b| b == 0) {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (&[][..], rest),
            };
            round_trip(meta, plaintext, m == 3);
        }
    }
}
