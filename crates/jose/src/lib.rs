//! JOSE for the platform: RS256 JWS access tokens (RFC 7515/7519, RFC 9068 profile), public
//! JWKs with RFC 7638 thumbprint `kid`s, per-tenant key records, and verification in the one
//! fixed order of ARCHITECTURE.md §4.
//!
//! Pure: the clock (`now`) and the RNG are parameters; storage, revocation lists and HTTP live
//! elsewhere. The signature algorithm always comes from the key record, never from the token
//! header. This crate does not (yet) do JWE, ES256 or EdDSA.

mod jwk;
mod jws;

pub use jwk::{KeyRecord, KeyStatus, KeyUse, LifecycleError, PublicJwk, TenantKeys, generate_rs256, thumbprint};
pub use jws::{Claims, Error, Result, VerifyOptions, peek_tenant, sign_rs256, verify, verify_signature};

/// Header `typ` of an access token (RFC 9068 §2.1).
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";
