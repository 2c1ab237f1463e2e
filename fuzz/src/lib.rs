//! The fuzz targets' code and fixtures, shared by the `fuzz_targets/*` binaries (each a one-line
//! `fuzz_target!`) and by the seed generator (`cargo test --manifest-path fuzz/Cargo.toml --
//! --ignored write_seeds`, which rewrites `corpus/`).
//!
//! Every fixture is fixed: one `NOW`, keys from the RFC 7520 cookbook or from a seeded RNG, so a
//! crashing input reproduces byte for byte on any machine. Each target's `run` only ever
//! panics on a real defect: a panic in the code under test, or a broken invariant asserted here
//! (a round trip that does not return what went in, an accepted value that breaks its own rules).
//!
//! Not fuzzed here: argon2id password hashing (deliberately slow; its input is length-capped
//! before it), storage and HTTP glue (the components), and anything needing a clock or a store.

pub mod context;
pub mod identity;
pub mod ids;
pub mod jwe;
pub mod jws;
pub mod routes;

#[cfg(test)]
mod seeds;

use health_core::{TenantId, b64url_decode};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use rsa::{BigUint, RsaPrivateKey};
use serde_json::Value;

/// The one clock of every target (2027-01-15).
pub const NOW: i64 = 1_800_000_000;
/// The tenant every key belongs to.
pub const TENANT: &str = "demo-hospital";
/// Its token issuer.
pub const ISSUER: &str = "https://health.example/t/demo-hospital";

/// A deterministic RNG: the same stream on every run, so signatures and ciphertexts made inside
/// a target are reproducible from the input alone.
pub fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

pub fn tenant() -> TenantId {
    TenantId::parse(TENANT).unwrap_or_else(|_| unreachable!("fixed tenant id is valid"))
}

/// A JWK from `fixtures/` (copied from the RFC 7520 cookbook, see `fixtures/README.md`).
fn fixture(name: &str) -> Value {
    let text = match name {
        "rsa_sig" => include_str!("../fixtures/rfc7520_3_4_rsa_private_key.json"),
        "p384" => include_str!("../fixtures/rfc7520_5_4_p384_key.json"),
        "aes" => include_str!("../fixtures/rfc7520_5_8_aes_key.json"),
        _ => unreachable!("unknown fixture {name}"),
    };
    serde_json::from_str(text).expect("fixture is JSON")
}

fn member(jwk: &Value, name: &str) -> Vec<u8> {
    jwk[name].as_str().and_then(b64url_decode).unwrap_or_else(|| panic!("fixture member {name}"))
}

fn rsa_key(jwk: &Value) -> RsaPrivateKey {
    let big = |m: &str| BigUint::from_bytes_be(&member(jwk, m));
    RsaPrivateKey::from_components(big("n"), big("e"), big("d"), vec![big("p"), big("q")]).expect("fixture RSA key")
}
