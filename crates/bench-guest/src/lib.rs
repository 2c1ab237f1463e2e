//! The JOSE operations the gateway and `jwks` pay for on every request, timed by one piece of
//! code in two places: the `bench-guest` command built natively, and built for `wasm32-wasip2`
//! and run by `health-bench` in wasmtime with the host's engine configuration. Same source,
//! same profile, same inputs, so the two timings differ only by where they run.
//!
//! Timed: [`health_jose::verify`] (the whole fixed order, claims included) of one access token
//! per signing algorithm; [`health_jose::sign`] of that token with its private key parsed from
//! PKCS#8 each time, as `jwks` does for every login (a WASIp2 instance keeps nothing between
//! requests); and [`jwe::decrypt_with_key_alg`] of one nested token (a JWS inside, as
//! insurers' tokens are) per key-management algorithm. Keys, tokens and ciphertexts are made
//! once by [`generate`], outside every timing. Not a test: nothing passes or fails, except that
//! a fixture whose tokens do not verify or decrypt is refused rather than timed.

use std::time::{Duration, Instant};

use health_core::{TenantId, b64url, b64url_decode};
use health_jose::jwe::{self, DecryptionKey, EncryptionKey, JwePolicy};
use health_jose::{Algorithm, Claims, KeyRecord, PrivateKey, TenantKeys, VerifyOptions};
use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};

/// The signature algorithms timed, in report order.
pub const SIGNING: [Algorithm; 3] = [Algorithm::Rs256, Algorithm::Es256, Algorithm::EdDsa];
/// The JWE key-management algorithms timed (content encryption is always A256GCM).
pub const ENCRYPTION: [Algorithm; 2] = [Algorithm::EcdhEsA256kw, Algorithm::RsaOaep256];

/// Untimed runs of each operation before its clock starts (caches, lazy statics).
const WARM_UP: u32 = 3;
/// Fewest timed runs of an operation, however long they take.
const MIN_ITERATIONS: u64 = 10;

/// Everything the operations need, made once by [`generate`]; JSON on the guest's stdin.
#[derive(Serialize, Deserialize)]
pub struct Fixture {
    /// The time tokens are verified at (fixed, so a long run does not expire them).
    pub now: i64,
    /// One tenant's public key set: every signing key below, as the gateway loads it.
    pub keys: TenantKeys,
    pub signed: Vec<SignedToken>,
    pub encrypted: Vec<EncryptedToken>,
}

/// An access token signed under `alg` by one key of [`Fixture::keys`], and that key's private
/// half (PKCS#8, base64url; a throwaway made for one benchmark run, never a platform key).
#[derive(Serialize, Deserialize)]
pub struct SignedToken {
    pub alg: Algorithm,
    pub kid: String,
    pub private_pkcs8: String,
    pub token: String,
}

/// A nested JWE to a key of `alg`, and that key's private half (PKCS#8, base64url). The key is
/// a throwaway made for one benchmark run, never a platform key.
#[derive(Serialize, Deserialize)]
pub struct EncryptedToken {
    pub alg: Algorithm,
    pub private_pkcs8: String,
    pub token: String,
}

/// What the guest reads on stdin.
#[derive(Serialize, Deserialize)]
pub struct Request {
    pub fixture: Fixture,
    /// Clock time spent on each operation (at least [`MIN_ITERATIONS`] runs).
    pub budget_ms: u64,
}

/// One operation's timing; the guest prints a JSON array of these.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    pub op: String,
    pub iterations: u64,
    pub nanos: u64,
}

impl Timing {
    pub fn micros_per_op(&self) -> f64 {
        self.nanos as f64 / 1e3 / self.iterations.max(1) as f64
    }

    pub fn ops_per_sec(&self) -> f64 {
        self.iterations as f64 / (self.nanos.max(1) as f64 / 1e9)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("generating or encoding a {0} key failed")]
    Key(&'static str),
    #[error("the benchmark's claims do not fit health_jose::Claims")]
    Claims,
    #[error("signing a {0} token failed")]
    Sign(&'static str),
    #[error("encrypting to the {0} key failed")]
    Encrypt(&'static str),
    #[error("the {0} token did not verify: {1}")]
    Verify(&'static str, health_jose::Error),
    #[error("the {0} JWE did not decrypt")]
    Decrypt(&'static str),
    #[error("the fixture has no {0} key")]
    Missing(&'static str),
}

/// The operation name for signature verification under `alg`.
pub fn verify_op(alg: Algorithm) -> String {
    format!("{} verify", alg.as_str())
}

/// The operation name for signing under `alg`, the key parsed from PKCS#8 first.
pub fn sign_op(alg: Algorithm) -> String {
    format!("{} sign (key parsed from PKCS#8)", alg.as_str())
}

/// The operation name for JWE decryption with key-management algorithm `alg`.
pub fn decrypt_op(alg: Algorithm) -> String {
    format!("JWE decrypt {} + A256GCM", alg.as_str())
}

fn tenant() -> TenantId {
    // A literal that satisfies the tenant grammar; a failure here is a programming error.
    TenantId::parse("bench-hospital").unwrap_or_else(|_| unreachable!("\"bench-hospital\" is a valid tenant id"))
}

/// An insurer-like access token's claims. Built from JSON so optional claims added to
/// [`Claims`] later need no change here.
fn claims(now: i64, issuer: &str) -> Result<Claims, Error> {
    serde_json::from_value(serde_json::json!({
        "iss": issuer, "sub": "u-bench", "aud": VerifyOptions::default().audience,
        "exp": now + 600, "iat": now, "nbf": now, "jti": "j-bench", "tenant_id": tenant(),
        "role": "insurance", "scope": "insurance/summary.read", "client_id": "acme-health",
        "amr": ["client_secret"], "auth_time": now,
    }))
    .map_err(|_| Error::Claims)
}

/// A key set with one key per signing algorithm, a token signed by each, and a nested token
/// encrypted to a fresh key of each encryption algorithm; checked to verify and decrypt.
pub fn generate(now: i64, rng: &mut (impl RngCore + CryptoRng)) -> Result<Fixture, Error> {
    let issuer = "http://127.0.0.1:3000/t/bench-hospital".to_owned();
    let mut keys = TenantKeys { tenant_id: tenant(), issuer: issuer.clone(), keys: Vec::new() };
    let mut signed = Vec::new();
    for alg in SIGNING {
        let (private, record) =
            health_jose::generate(alg, &tenant(), now, rng).map_err(|_| Error::Key(alg.as_str()))?;
        let token = health_jose::sign(&private, alg, &record.jwk.kid, &claims(now, &issuer)?, rng)
            .map_err(|_| Error::Sign(alg.as_str()))?;
        let der = private.to_pkcs8_der().ok_or(Error::Key(alg.as_str()))?;
        signed.push(SignedToken { alg, kid: record.jwk.kid.clone(), private_pkcs8: b64url(der), token });
        keys.keys.push(record);
    }
    let inner = signed.first().map(|s| s.token.clone()).ok_or(Error::Missing("signing"))?;
    let mut encrypted = Vec::new();
    for alg in ENCRYPTION {
        let (private, record) =
            health_jose::generate(alg, &tenant(), now, rng).map_err(|_| Error::Key(alg.as_str()))?;
        let public = encryption_key(&record).ok_or(Error::Key(alg.as_str()))?;
        let token = jwe::encrypt_nested(&inner, &public, Some(&record.jwk.kid), Some(&issuer), rng)
            .map_err(|_| Error::Encrypt(alg.as_str()))?;
        let der = private.to_pkcs8_der().ok_or(Error::Key(alg.as_str()))?;
        encrypted.push(EncryptedToken { alg, private_pkcs8: b64url(der), token });
    }
    let fixture = Fixture { now, keys, signed, encrypted };
    // Refuse to time anything that would fail: a fast refusal is not a benchmark.
    run(&fixture, Duration::ZERO, 1, rng)?;
    Ok(fixture)
}

fn encryption_key(record: &KeyRecord) -> Option<EncryptionKey> {
    match record.jwk.algorithm()? {
        Algorithm::EcdhEsA256kw => record.jwk.p256_public_key().map(EncryptionKey::P256),
        Algorithm::RsaOaep256 => record.jwk.rsa_public_key().map(EncryptionKey::Rsa),
        Algorithm::Rs256 | Algorithm::Es256 | Algorithm::EdDsa => None,
    }
}

fn decryption_key(token: &EncryptedToken) -> Result<DecryptionKey, Error> {
    let name = token.alg.as_str();
    let der = b64url_decode(&token.private_pkcs8).ok_or(Error::Key(name))?;
    match PrivateKey::from_pkcs8_der(token.alg, &der).ok_or(Error::Key(name))? {
        PrivateKey::P256(secret) => Ok(DecryptionKey::P256(secret)),
        PrivateKey::Rsa(secret) => Ok(DecryptionKey::Rsa(secret)),
        PrivateKey::Ed25519(_) => Err(Error::Key(name)),
    }
}

/// Times every operation of `fixture` for `budget` each (and at least `min_iterations` runs),
/// in the order of [`SIGNING`] (verify, then sign) then [`ENCRYPTION`]. `rng` serves signing
/// (RSA blinding; ECDSA and EdDSA are deterministic).
pub fn run(
    fixture: &Fixture,
    budget: Duration,
    min_iterations: u64,
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<Vec<Timing>, Error> {
    let opts = VerifyOptions::default();
    let mut timings = Vec::new();
    for alg in SIGNING {
        let token = fixture.signed.iter().find(|s| s.alg == alg).ok_or(Error::Missing(alg.as_str()))?;
        timings.push(time(verify_op(alg), budget, min_iterations, || {
            health_jose::verify(&token.token, &fixture.keys, fixture.now, &opts)
                .map(std::hint::black_box)
                .map(drop)
                .map_err(|e| Error::Verify(alg.as_str(), e))
        })?);
    }
    let claims = claims(fixture.now, &fixture.keys.issuer)?;
    for alg in SIGNING {
        let token = fixture.signed.iter().find(|s| s.alg == alg).ok_or(Error::Missing(alg.as_str()))?;
        let der = b64url_decode(&token.private_pkcs8).ok_or(Error::Key(alg.as_str()))?;
        timings.push(time(sign_op(alg), budget, min_iterations, || {
            let key = PrivateKey::from_pkcs8_der(alg, &der).ok_or(Error::Key(alg.as_str()))?;
            health_jose::sign(&key, alg, &token.kid, &claims, rng)
                .map(std::hint::black_box)
                .map(drop)
                .map_err(|_| Error::Sign(alg.as_str()))
        })?);
    }
    for alg in ENCRYPTION {
        let token = fixture.encrypted.iter().find(|e| e.alg == alg).ok_or(Error::Missing(alg.as_str()))?;
        let key = decryption_key(token)?;
        timings.push(time(decrypt_op(alg), budget, min_iterations, || {
            jwe::decrypt_with_key_alg(&token.token, &key, alg.as_str(), &JwePolicy::PLATFORM)
                .map(std::hint::black_box)
                .map(drop)
                .map_err(|_| Error::Decrypt(alg.as_str()))
        })?);
    }
    Ok(timings)
}

/// Runs `op` a few times untimed, then until `budget` has passed (and `min_iterations` runs).
fn time(
    op: String,
    budget: Duration,
    min_iterations: u64,
    mut once: impl FnMut() -> Result<(), Error>,
) -> Result<Timing, Error> {
    for _ in 0..WARM_UP.min(u32::try_from(min_iterations).unwrap_or(u32::MAX)) {
        once()?;
    }
    let start = Instant::now();
    let mut iterations = 0;
    while iterations < min_iterations || start.elapsed() < budget {
        once()?;
        iterations += 1;
    }
    let nanos = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
    Ok(Timing { op, iterations, nanos })
}

/// What the guest does with its stdin: every operation for `budget_ms` each.
pub fn run_request(request: &Request) -> Result<Vec<Timing>, Error> {
    run(&request.fixture, Duration::from_millis(request.budget_ms), MIN_ITERATIONS, &mut rand_core::OsRng)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_is_timed_once_per_algorithm_and_round_trips_through_json() {
        let fixture = generate(1_700_000_000, &mut rand_core::OsRng).expect("fixture");
        let fixture: Fixture =
            serde_json::from_str(&serde_json::to_string(&fixture).expect("serializes")).expect("deserializes");
        let timings = run(&fixture, Duration::ZERO, 2, &mut rand_core::OsRng).expect("runs");
        let ops: Vec<&str> = timings.iter().map(|t| t.op.as_str()).collect();
        assert_eq!(
            ops,
            [
                "RS256 verify",
                "ES256 verify",
                "EdDSA verify",
                "RS256 sign (key parsed from PKCS#8)",
                "ES256 sign (key parsed from PKCS#8)",
                "EdDSA sign (key parsed from PKCS#8)",
                "JWE decrypt ECDH-ES+A256KW + A256GCM",
                "JWE decrypt RSA-OAEP-256 + A256GCM"
            ]
        );
        assert!(timings.iter().all(|t| t.iterations == 2 && t.nanos > 0));
    }

    #[test]
    fn a_fixture_whose_token_no_longer_verifies_is_refused() {
        let mut fixture = generate(1_700_000_000, &mut rand_core::OsRng).expect("fixture");
        fixture.now += 3600;
        assert!(matches!(
            run(&fixture, Duration::ZERO, 1, &mut rand_core::OsRng),
            Err(Error::Verify("RS256", health_jose::Error::Expired))
        ));
    }
}
