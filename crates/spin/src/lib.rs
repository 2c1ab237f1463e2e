//! Spin glue shared by the components: reading variables and secrets, building responses with
//! the platform's security headers and RFC 9457 problems, reading the attested caller context,
//! SQLite as every component opens it (per-connection settings, WAL, migrations, transactions
//! and bounded retries, the same on Spin's SQLite and on libSQL), the hash-chained audit log
//! (append behind the `AuditSink` trait, query, counters), the `revocations` key-value store
//! (revoked `jti`s, subjects' not-before, the check), the `records` store with its PHI key vault
//! and demo data, the `identity` store `auth` keeps its accounts, lockout counters and refresh
//! tokens in (feature `identity`), and the shell every role service answers through.
//!
//! Everything here talks to Spin host interfaces through `spin-sdk`; the rules themselves live
//! in the pure crates (`health-core`, `health-jose`, `health-policy`, `health-identity`).

#[cfg(feature = "tokens")]
pub mod admin;
pub mod alerts;
pub mod audit;
#[cfg(feature = "authorizer")]
pub mod authz;
pub mod chain;
pub mod db;
pub mod deadline;
#[cfg(feature = "identity")]
pub mod federation;
#[cfg(feature = "identity")]
pub mod identity;
pub mod issuers;
#[cfg(feature = "tokens")]
pub mod keystore;
pub mod kv;
pub mod log;
#[cfg(feature = "tokens")]
pub mod nested;
pub mod ratelimit;
pub mod records;
pub mod respond;
pub mod revocations;
#[cfg(feature = "authorizer")]
pub mod service;
pub mod stores;
#[cfg(feature = "tokens")]
pub mod tokens;

use health_core::SecretKey;

/// Current Unix time in seconds (WASI wall clock).
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The component's value for Spin variable `name`.
pub fn var(name: &str) -> anyhow::Result<String> {
    spin_sdk::variables::get(name).map_err(|e| anyhow::anyhow!("variable {name:?} unavailable: {e}"))
}

/// A numeric Spin variable.
pub fn var_i64(name: &str) -> anyhow::Result<i64> {
    var(name)?.trim().parse().map_err(|_| anyhow::anyhow!("variable {name:?} is not an integer"))
}

/// A 256-bit secret from a Spin variable holding 64 hex characters.
pub fn secret_key(name: &str) -> anyhow::Result<SecretKey> {
    SecretKey::from_hex(&var(name)?).map_err(|e| anyhow::anyhow!("variable {name:?}: {e}"))
}

/// Random bytes from the host (WASI random).
pub fn rng() -> rand_core::OsRng {
    rand_core::OsRng
}

fn random_bytes() -> [u8; 16] {
    use rand_core::RngCore;
    let mut bytes = [0u8; 16];
    rng().fill_bytes(&mut bytes);
    bytes
}

/// A fresh random identifier (128 bits, base64url).
pub fn random_id() -> String {
    health_core::b64url(random_bytes())
}

/// A fresh token id (`jti`), 128 random bits.
pub fn new_jti() -> health_core::TokenId {
    health_core::TokenId::from_random(random_bytes())
}

/// A fresh refresh-family id, 128 random bits.
pub fn new_family_id() -> health_core::FamilyId {
    health_core::FamilyId::from_random(random_bytes())
}

/// A fresh identifier `{prefix}-{16 hex digits}` (64 random bits), lower case so it is a valid
/// entry, result or order id.
pub fn random_hex_id(prefix: &str) -> String {
    use rand_core::RngCore;
    format!("{prefix}-{:016x}", rng().next_u64())
}

/// The request, unless it carries more than one `Authorization` header: spin-sdk's `Request`
/// keeps only the last value of a repeated header, so the raw fields are counted first. Two
/// credentials are ambiguous (a proxy may check one while the component uses the other) and are
/// refused with 400 before anything reads them.
pub async fn single_credential(
    incoming: spin_sdk::http::IncomingRequest,
) -> Result<spin_sdk::http::Request, spin_sdk::http::Response> {
    use spin_sdk::http::conversions::TryFromIncomingRequest;
    let repeated = incoming.headers().get("authorization").len() > 1;
    let req = spin_sdk::http::Request::try_from_incoming_request(incoming).await.map_err(|e| {
        log::warn("unreadable_request", e.to_string());
        respond::problem(&health_core::Problem::bad_request("the request could not be read"))
    })?;
    if repeated {
        return Err(respond::problem(&health_core::Problem::bad_request("more than one Authorization header")));
    }
    Ok(req)
}

/// The attestation headers of a request, if all four are present.
pub fn attestation(req: &spin_sdk::http::Request) -> Option<health_core::context::Attestation> {
    use health_core::context::{Attestation, CALLER_HEADER, FROM_HEADER, MAC_HEADER, TIMESTAMP_HEADER};
    let header = |name| req.header(name).and_then(|v| v.as_str()).map(str::to_owned);
    Some(Attestation {
        from: header(FROM_HEADER)?,
        caller: header(CALLER_HEADER)?,
        timestamp: header(TIMESTAMP_HEADER)?,
        mac: header(MAC_HEADER)?,
    })
}

/// Verifies the caller context of a chained request to component `me` from one of `senders`
/// (the callers this endpoint serves), under the key of the link the request claims: the
/// variable of that link only, read after the sender was found to be one of `senders`, so an
/// unknown or unserved sender is refused like a forged context and no other key is needed.
pub fn verify_context(
    req: &spin_sdk::http::Request,
    me: health_core::Component,
    senders: &[health_core::Component],
) -> anyhow::Result<Result<health_core::Caller, health_core::ContextError>> {
    // The MAC covers the query too: it selects data (an insurer to revoke, audit filters).
    verify_context_of(req, req.path_and_query().unwrap_or(req.path()), me, senders)
}

/// [`verify_context`] of a request about `path` (its path and query) rather than its URL's: a
/// public request the gateway forwarded, whose path travels in
/// [`PATH_HEADER`](health_core::context::PATH_HEADER).
pub fn verify_context_of(
    req: &spin_sdk::http::Request,
    path: &str,
    me: health_core::Component,
    senders: &[health_core::Component],
) -> anyhow::Result<Result<health_core::Caller, health_core::ContextError>> {
    let attestation = attestation(req);
    let link = match health_core::context::claimed_link(attestation.as_ref(), me, senders) {
        Ok(link) => link,
        Err(refused) => return Ok(Err(refused)),
    };
    let key = secret_key(link.key_variable())?;
    let method = req.method().to_string();
    Ok(health_core::context::verify(&key, link, &method, path, req.body(), attestation.as_ref(), now()))
}

/// The path segments of a request path, without empty leading segment.
pub fn segments(path: &str) -> Vec<&str> {
    path.split('?').next().unwrap_or_default().trim_start_matches('/').split('/').collect()
}
