//! The caller context the gateway attaches to every request it forwards to a role service
//! (ARCHITECTURE.md §4): the WIT `caller` record as JSON, with an HMAC-SHA256 under
//! `context_key` over method, path, body digest, timestamp and the context itself. Binding the
//! method, path and body stops a captured context being replayed onto another request; the
//! timestamp bounds replay of the same request to [`MAX_AGE_SECS`].

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::{SecretKey, TenantId};

/// Header carrying the base64url JSON caller record.
pub const CALLER_HEADER: &str = "x-health-caller";
/// Header carrying the Unix time (seconds) at which the gateway attested the request.
pub const TIMESTAMP_HEADER: &str = "x-health-context-ts";
/// Header carrying the base64url HMAC-SHA256.
pub const MAC_HEADER: &str = "x-health-context-mac";
/// Contexts older (or further in the future) than this are stale.
pub const MAX_AGE_SECS: i64 = 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Patient,
    Doctor,
    Lab,
    Insurance,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Patient => "patient",
            Role::Doctor => "doctor",
            Role::Lab => "lab",
            Role::Insurance => "insurance",
            Role::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(text.to_owned())).ok()
    }
}

/// Who is calling, established by the gateway from a verified token (mirrors WIT `caller`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    pub tenant_id: TenantId,
    pub subject: String,
    pub role: Role,
    pub client_id: String,
    pub scopes: Vec<String>,
    pub jti: String,
    /// An insurer's registered public encryption JWK, from its verified token: the key the
    /// insurance service encrypts the summary to. Absent for everyone else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enc_jwk: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContextError {
    #[error("caller context missing")]
    Missing,
    #[error("caller context malformed")]
    Malformed,
    #[error("caller context signature invalid")]
    BadMac,
    #[error("caller context stale")]
    Stale,
}

/// The three header values that carry an attested context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attestation {
    pub caller: String,
    pub timestamp: String,
    pub mac: String,
}

fn mac(key: &SecretKey, method: &str, path: &str, body: &[u8], timestamp: &str, caller: &str) -> Hmac<Sha256> {
    // new_from_slice only fails for zero-length keys with some MACs; HMAC accepts any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.expose()).unwrap_or_else(|_| unreachable!());
    for part in ["health-ctx-v1", method, path, &crate::sha256_hex(body), timestamp, caller] {
        mac.update(part.as_bytes());
        mac.update(b"\n");
    }
    mac
}

/// Attests `caller` for one request at time `now` (Unix seconds).
pub fn attest(key: &SecretKey, method: &str, path: &str, body: &[u8], caller: &Caller, now: i64) -> Attestation {
    let caller = crate::b64url(serde_json::to_vec(caller).unwrap_or_default());
    let timestamp = now.to_string();
    let tag = mac(key, method, path, body, &timestamp, &caller).finalize().into_bytes();
    Attestation { caller, timestamp, mac: crate::b64url(tag) }
}

/// Checks an attestation received by a role service; the MAC is checked before the JSON is parsed.
pub fn verify(
    key: &SecretKey,
    method: &str,
    path: &str,
    body: &[u8],
    attestation: Option<&Attestation>,
    now: i64,
) -> Result<Caller, ContextError> {
    let att = attestation.ok_or(ContextError::Missing)?;
    let tag = crate::b64url_decode(&att.mac).ok_or(ContextError::Malformed)?;
    mac(key, method, path, body, &att.timestamp, &att.caller).verify_slice(&tag).map_err(|_| ContextError::BadMac)?;
    let issued: i64 = att.timestamp.parse().map_err(|_| ContextError::Malformed)?;
    // abs_diff, not (now - issued).abs(): the timestamp is the sender's, and a value near
    // i64::MIN would overflow the subtraction (found by the caller_context fuzz target).
    if now.abs_diff(issued) > MAX_AGE_SECS.unsigned_abs() {
        return Err(ContextError::Stale);
    }
    let json = crate::b64url_decode(&att.caller).ok_or(ContextError::Malformed)?;
    serde_json::from_slice(&json).map_err(|_| ContextError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller() -> Caller {
        Caller {
            tenant_id: TenantId::parse("demo-hospital").unwrap(),
            subject: "u-alice".into(),
            role: Role::Patient,
            client_id: "web".into(),
            scopes: vec!["records:read".into()],
            jti: "j1".into(),
            enc_jwk: None,
        }
    }

    fn key() -> SecretKey {
        SecretKey::from_bytes([9; 32])
    }

    #[test]
    fn accepts_fresh_context_for_the_same_request() {
        let att = attest(&key(), "GET", "/patients/p-1/record", b"", &caller(), 1000);
        assert_eq!(verify(&key(), "GET", "/patients/p-1/record", b"", Some(&att), 1010), Ok(caller()));
    }

    #[test]
    fn rejects_missing_forged_and_stale_contexts() {
        let att = attest(&key(), "GET", "/p", b"", &caller(), 1000);
        assert_eq!(verify(&key(), "GET", "/p", b"", None, 1000), Err(ContextError::Missing));
        assert_eq!(
            verify(&SecretKey::from_bytes([1; 32]), "GET", "/p", b"", Some(&att), 1000),
            Err(ContextError::BadMac)
        );
        assert_eq!(verify(&key(), "GET", "/p", b"", Some(&att), 1031), Err(ContextError::Stale));
        assert_eq!(verify(&key(), "GET", "/p", b"", Some(&att), 969), Err(ContextError::Stale));
    }

    #[test]
    fn extreme_timestamps_are_stale_not_a_panic() {
        for issued in [i64::MIN, i64::MIN + 1, -9_223_372_036_854_775_807, i64::MAX] {
            let caller = crate::b64url(serde_json::to_vec(&caller()).unwrap());
            let timestamp = issued.to_string();
            let tag = mac(&key(), "GET", "/p", b"", &timestamp, &caller).finalize().into_bytes();
            let att = Attestation { caller, timestamp, mac: crate::b64url(tag) };
            assert_eq!(verify(&key(), "GET", "/p", b"", Some(&att), 1000), Err(ContextError::Stale), "{issued}");
        }
    }

    #[test]
    fn context_is_bound_to_method_path_body_and_caller() {
        let att = attest(&key(), "GET", "/p/1", b"x", &caller(), 1000);
        assert_eq!(verify(&key(), "POST", "/p/1", b"x", Some(&att), 1000), Err(ContextError::BadMac));
        assert_eq!(verify(&key(), "GET", "/p/2", b"x", Some(&att), 1000), Err(ContextError::BadMac));
        assert_eq!(verify(&key(), "GET", "/p/1", b"y", Some(&att), 1000), Err(ContextError::BadMac));
        let mut escalated = caller();
        escalated.role = Role::Doctor;
        let forged = Attestation { caller: crate::b64url(serde_json::to_vec(&escalated).unwrap()), ..att };
        assert_eq!(verify(&key(), "GET", "/p/1", b"x", Some(&forged), 1000), Err(ContextError::BadMac));
    }
}
