//! `jws_verify`: `peek_tenant`, `verify_signature` and `verify` against one fixed tenant key set
//! at a fixed `now`.
//!
//! Input: a mode byte, then
//! - mode 0: a compact token, as received in `Authorization: Bearer`;
//! - modes 1-3: claims bytes the target signs with the RS256, ES256 or EdDSA private key of the
//!   set (default header `{"alg","typ":"at+jwt","kid"}`), or `header \n claims` to choose the
//!   header too. A random input never gets past a signature, so this is how the fuzzer reaches
//!   the claims checks, which run only on signed bytes.

use std::sync::LazyLock;

use health_core::b64url;
use health_jose::{
    Algorithm, Error, KeyRecord, KeyStatus, PrivateKey, PublicJwk, TenantKeys, VerifyOptions, generate, peek_tenant,
    sign_bytes, verify, verify_signature,
};
use rsa::traits::PublicKeyParts;

use crate::{ISSUER, NOW, fixture, rng, rsa_key, tenant};

/// A private key of the set and what its tokens' headers say.
pub struct Signer {
    pub alg: Algorithm,
    pub kid: String,
    pub key: PrivateKey,
}

impl Signer {
    /// The header the platform issues with this key.
    pub fn header(&self) -> String {
        serde_json::json!({ "alg": self.alg.as_str(), "typ": "at+jwt", "kid": self.kid }).to_string()
    }

    /// A compact JWS of `header` and `payload`, whatever they hold.
    pub fn sign(&self, header: &[u8], payload: &[u8]) -> String {
        let input = format!("{}.{}", b64url(header), b64url(payload));
        let signature = sign_bytes(&self.key, self.alg, input.as_bytes(), &mut rng(1)).expect("fixed key signs");
        format!("{input}.{}", b64url(signature))
    }
}

pub struct Fixture {
    pub keys: TenantKeys,
    /// RS256 (active), ES256 (retiring, still valid), EdDSA (active).
    pub signers: [Signer; 3],
    /// Keys in the set whose tokens must be refused after the signature: a revoked ES256 key
    /// and an EdDSA key retired an hour ago.
    pub refused: [Signer; 2],
}

fn record(jwk: PublicJwk, status: KeyStatus, not_after: Option<i64>) -> KeyRecord {
    KeyRecord { jwk, status, created_at: NOW - 86_400, not_after }
}

fn generated(alg: Algorithm, seed: u64) -> (Signer, PublicJwk) {
    let (key, rec) = generate(alg, &tenant(), NOW, &mut rng(seed)).expect("seeded key generation");
    (Signer { alg, kid: rec.jwk.kid.clone(), key }, rec.jwk)
}

pub static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    // RS256: the RFC 7520 §3.4 key, so no RSA key generation at start-up.
    let rsa = rsa_key(&fixture("rsa_sig"));
    let (n, e) = (b64url(rsa.n().to_bytes_be()), b64url(rsa.e().to_bytes_be()));
    let rs_jwk: PublicJwk = serde_json::from_value(serde_json::json!({
        "kty": "RSA", "kid": health_jose::thumbprint(&n, &e), "use": "sig", "alg": "RS256",
        "n": n, "e": e, "tenant_id": crate::TENANT,
    }))
    .expect("RSA JWK");
    let rs = Signer { alg: Algorithm::Rs256, kid: rs_jwk.kid.clone(), key: PrivateKey::Rsa(rsa) };
    let (es, es_jwk) = generated(Algorithm::Es256, 2);
    let (ed, ed_jwk) = generated(Algorithm::EdDsa, 3);
    let (revoked, revoked_jwk) = generated(Algorithm::Es256, 4);
    let (retired, retired_jwk) = generated(Algorithm::EdDsa, 5);
    // An encryption key in the same set: its kid must never verify a signature.
    let (_, enc_jwk) = generated(Algorithm::EcdhEsA256kw, 6);
    let keys = TenantKeys {
        tenant_id: tenant(),
        issuer: ISSUER.into(),
        keys: vec![
            record(rs_jwk, KeyStatus::Active, None),
            record(es_jwk, KeyStatus::Retiring, Some(NOW + 3600)),
            record(ed_jwk, KeyStatus::Active, None),
            record(revoked_jwk, KeyStatus::Revoked, Some(NOW - 60)),
            record(retired_jwk, KeyStatus::Retiring, Some(NOW - 3600)),
            record(enc_jwk, KeyStatus::Active, None),
        ],
    };
    Fixture { keys, signers: [rs, es, ed], refused: [revoked, retired] }
});

/// Failures that may only come from the header or the signature.
fn before_claims(error: &Error) -> bool {
    matches!(
        error,
        Error::TooLarge
            | Error::Malformed
            | Error::BadHeader
            | Error::CriticalHeader
            | Error::EmbeddedKey(_)
            | Error::MissingKid
            | Error::UnknownKid
            | Error::AlgorithmMismatch
            | Error::BadSignature
    )
}

/// Runs the verifier on `token` and checks what it accepts against the rules it enforces.
pub fn check(token: &str) -> Result<(), Error> {
    let fixture = &*FIXTURE;
    let opts = VerifyOptions::default();
    let peeked = peek_tenant(token, &opts);
    let signed = verify_signature(token, &fixture.keys, &opts);
    let verified = verify(token, &fixture.keys, NOW, &opts);
    match &verified {
        Ok(claims) => {
            assert!(signed.is_ok(), "verify accepted what verify_signature refused");
            assert_eq!(peeked.as_ref().ok(), Some(&fixture.keys.tenant_id), "peek_tenant disagrees with verify");
            assert_eq!(claims.tenant_id, fixture.keys.tenant_id);
            assert_eq!(claims.iss, fixture.keys.issuer);
            assert_eq!(claims.aud, opts.audience);
            assert!(!claims.sub.is_empty() && !claims.jti.is_empty(), "empty sub or jti accepted");
            assert!(claims.exp > NOW - 60, "expired token accepted");
            assert!(claims.iat <= NOW + 60, "token from the future accepted");
            assert!(claims.nbf <= NOW + 60, "not-yet-valid token accepted");
            assert!(claims.iat <= claims.exp && claims.exp - claims.iat <= opts.max_lifetime_secs, "lifetime cap");
            assert!(token.len() <= opts.max_token_bytes);
        }
        Err(error) if before_claims(error) => assert!(signed.is_err(), "{error:?} after a good signature"),
        Err(_) => assert!(signed.is_ok(), "claims error {verified:?} without a good signature"),
    }
    verified.map(|_| ())
}

pub fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    match mode % 4 {
        0 => {
            if let Ok(token) = std::str::from_utf8(rest) {
                // A random token verifying would be a forgery.
                if check(token).is_ok() {
                    assert!(is_ours(token), "a token not signed by the fixture verified");
                }
            }
        }
        m => {
            let fixture = &*FIXTURE;
            let signer = &fixture.signers[usize::from(m - 1)];
            let default_header = signer.header();
            let (header, payload) = match rest.iter().position(|&b| b == b'\n') {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (default_header.as_bytes(), rest),
            };
            let token = signer.sign(header, payload);
            if let Err(error) = check(&token) {
                // The platform's own header over any non-empty payload must pass the signature.
                if header == default_header.as_bytes() && !payload.is_empty() && token.len() <= 16 * 1024 {
                    assert!(!before_claims(&error), "own signature refused: {error:?}");
                }
            }
        }
    }
}

/// Whether `token`'s signature was made by one of the fixture's private keys: RS256 and EdDSA
/// signatures are deterministic, so re-signing the signing input must reproduce them. ECDSA
/// signatures are not unique ((r, s) and (r, n - s) both verify; the claims are the same
/// signed claims), so an ES256 token only has to be signed by a fixture key.
fn is_ours(token: &str) -> bool {
    let Some((input, signature)) = token.rsplit_once('.') else { return false };
    let Some((header, payload)) = input.split_once('.') else { return false };
    let (Some(header), Some(payload)) = (health_core::b64url_decode(header), health_core::b64url_decode(payload))
    else {
        return false;
    };
    let kid =
        serde_json::from_slice::<serde_json::Value>(&header).ok().and_then(|h| h["kid"].as_str().map(str::to_owned));
    FIXTURE.signers.iter().any(|s| {
        (s.alg == Algorithm::Es256 && kid.as_deref() == Some(s.kid.as_str()))
            || s.sign(&header, &payload).ends_with(&format!(".{signature}"))
    })
}
