//! JOSE for the platform: JWS access tokens (RFC 7515/7519, RFC 9068 profile) signed with
//! RS256 (default), ES256 or EdDSA; public JWKs with RFC 7638 thumbprint `kid`s; per-tenant key
//! records and their lifecycle ([`lifecycle`]: the changes a key store re-applies until they
//! land); verification in the one fixed order of ARCHITECTURE.md §4; and
//! JWE ([`jwe`]: `ECDH-ES+A256KW` / `RSA-OAEP-256` with `A256GCM`, nested tokens).
//!
//! Pure: the clock (`now`) and the RNG are parameters; storage, revocation lists and HTTP live
//! elsewhere. The signature algorithm always comes from the key record, never from the token
//! header. Signatures use RustCrypto (`rsa`, `p256`,
//! `ed25519-dalek`; RS256 verification on `num-bigint`, see `rs256`); `jwt-simple` is the independent implementation the tests check them against.

pub mod jwe;
mod jwk;
mod jws;
pub mod lifecycle;
mod rs256;

pub use jwk::{
    Algorithm, KeyRecord, KeyStatus, KeyUse, LifecycleError, PrivateKey, PublicJwk, TenantKeys, generate,
    generate_rs256, thumbprint,
};
pub use jws::{
    Claims, Error, MAX_CLOCK_TOLERANCE_SECS, MAX_TOKEN_BYTES, Result, VerifyOptions, peek_tenant, recheck, sign,
    sign_bytes, sign_rs256, verify, verify_keyed, verify_signature,
};
pub use lifecycle::KeyChange;

/// Parses a JOSE header or JWT claims set, which must be a completely valid UTF-8 JSON object
/// (RFC 7515 §5.2, RFC 7519 §7.2): serde would otherwise skip an unknown member without
/// checking its bytes, and two parsers could disagree about the same token.
pub(crate) fn strict_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    serde_json::from_str(std::str::from_utf8(bytes).ok()?).ok()
}

/// Header `typ` of an access token (RFC 9068 §2.1).
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// Whether a header `typ` names an access token: RFC 9068 §4 requires accepting
/// `application/at+jwt` as well, and RFC 7515 §4.1.9 makes media types case-insensitive with
/// the `application/` prefix optional.
pub fn is_access_token_typ(typ: &str) -> bool {
    let typ = typ.as_bytes();
    let prefix = b"application/";
    let bare = if typ.len() > prefix.len() && typ[..prefix.len()].eq_ignore_ascii_case(prefix) {
        &typ[prefix.len()..]
    } else {
        typ
    };
    bare.eq_ignore_ascii_case(ACCESS_TOKEN_TYP.as_bytes())
}
