//! The caller context a component attaches to every request it chains to another (ARCHITECTURE.md
//! §4): the WIT `caller` record as JSON, with an HMAC-SHA256 over the link (sender and
//! receiver), method, path, body digest, timestamp and the context itself. Binding the method,
//! path and body stops a captured context being replayed onto another request; the timestamp
//! bounds replay of the same request to [`MAX_AGE_SECS`].
//!
//! Each caller → callee [`Link`] has its own key (a Spin variable of its own, given only to the
//! two ends): a receiver picks the key by the sender the request claims, among the senders it
//! serves, so the key one link's components hold attests nothing on another link. Which
//! senders an endpoint serves is the receiver's decision (`jwks` signs for `auth` only).

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::{ClientId, Opaque, SecretKey, TenantId, TokenId};

/// Header carrying the sending component's name ([`Component::as_str`]).
pub const FROM_HEADER: &str = "x-health-context-from";
/// Header carrying the base64url JSON caller record.
pub const CALLER_HEADER: &str = "x-health-caller";
/// Header carrying the Unix time (seconds) at which the sender attested the request.
pub const TIMESTAMP_HEADER: &str = "x-health-context-ts";
/// Header carrying the base64url HMAC-SHA256.
pub const MAC_HEADER: &str = "x-health-context-mac";
/// Header carrying the public request's path and query on a call the gateway forwards to a role
/// service, which the MAC covers. The call's URL holds only the route template: Spin exports
/// outbound URLs in its traces (`url.full`), and a public path names a patient.
pub const PATH_HEADER: &str = "x-health-path";
/// Contexts older (or further in the future) than this are stale.
pub const MAX_AGE_SECS: i64 = 30;

/// A component at one end of a chained call (its `spin.toml` name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Component {
    Gateway,
    Auth,
    Jwks,
    Patient,
    Doctor,
    Lab,
    Insurance,
}

impl Component {
    pub fn as_str(self) -> &'static str {
        match self {
            Component::Gateway => "gateway",
            Component::Auth => "auth",
            Component::Jwks => "jwks",
            Component::Patient => "patient",
            Component::Doctor => "doctor",
            Component::Lab => "lab",
            Component::Insurance => "insurance",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            Component::Gateway,
            Component::Auth,
            Component::Jwks,
            Component::Patient,
            Component::Doctor,
            Component::Lab,
            Component::Insurance,
        ]
        .into_iter()
        .find(|c| c.as_str() == text)
    }
}

/// One caller → callee link of the platform. Only the links of [`Link::ALL`] exist; each has its
/// own key, held by its two ends only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Link {
    from: Component,
    to: Component,
    key_variable: &'static str,
}

impl Link {
    /// Every link: the gateway to each role service and to `jwks` (decryption of nested
    /// tokens), `auth` to `jwks` (signing, encryption, decryption), `patient` to `auth`
    /// (whether an insurer is registered; disabling an erased patient's account), and the
    /// gateway to `auth` (whether a tenant's OpenID provider's access token is accepted).
    pub const ALL: [Link; 8] = [
        Link::of(Component::Gateway, Component::Patient, "context_key_patient"),
        Link::of(Component::Gateway, Component::Doctor, "context_key_doctor"),
        Link::of(Component::Gateway, Component::Lab, "context_key_lab"),
        Link::of(Component::Gateway, Component::Insurance, "context_key_insurance"),
        Link::of(Component::Gateway, Component::Jwks, "context_key_gateway_jwks"),
        Link::of(Component::Auth, Component::Jwks, "context_key_auth_jwks"),
        Link::of(Component::Patient, Component::Auth, "context_key_patient_auth"),
        Link::of(Component::Gateway, Component::Auth, "context_key_gateway_auth"),
    ];

    const fn of(from: Component, to: Component, key_variable: &'static str) -> Self {
        Self { from, to, key_variable }
    }

    /// The link `from` → `to`, if the platform has one.
    pub fn new(from: Component, to: Component) -> Option<Self> {
        Self::ALL.into_iter().find(|link| link.from == from && link.to == to)
    }

    pub fn from(self) -> Component {
        self.from
    }

    pub fn to(self) -> Component {
        self.to
    }

    /// The secret Spin variable holding this link's key (64 hex characters).
    pub fn key_variable(self) -> &'static str {
        self.key_variable
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Patient,
    Doctor,
    Lab,
    Insurance,
    Admin,
    /// Care-team nursing: reads the record and results, writes notes and observations.
    Nurse,
    /// The front desk: registers patients, edits demographics, admits to care teams.
    Receptionist,
    /// Reads the medication and allergy entries of care-team patients.
    Pharmacist,
}

impl Role {
    /// Every role, in declaration order.
    pub const ALL: [Role; 8] = [
        Role::Patient,
        Role::Doctor,
        Role::Lab,
        Role::Insurance,
        Role::Admin,
        Role::Nurse,
        Role::Receptionist,
        Role::Pharmacist,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Patient => "patient",
            Role::Doctor => "doctor",
            Role::Lab => "lab",
            Role::Insurance => "insurance",
            Role::Admin => "admin",
            Role::Nurse => "nurse",
            Role::Receptionist => "receptionist",
            Role::Pharmacist => "pharmacist",
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
    pub subject: Opaque,
    pub role: Role,
    /// The token's `client_id`, which a token need not carry.
    pub client_id: Option<ClientId>,
    pub scopes: Vec<String>,
    pub jti: TokenId,
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
    /// The claimed sender is unknown, or not one this endpoint serves: refused before any key
    /// is read, as a forged context would be.
    #[error("caller context from a sender this endpoint does not serve")]
    UnknownSender,
}

/// The four header values that carry an attested context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attestation {
    /// The sending component, as it claims (checked by the MAC under the link's key).
    pub from: String,
    pub caller: String,
    pub timestamp: String,
    pub mac: String,
}

fn mac(
    key: &SecretKey,
    link: Link,
    method: &str,
    path: &str,
    body: &[u8],
    timestamp: &str,
    caller: &str,
) -> Hmac<Sha256> {
    // new_from_slice only fails for zero-length keys with some MACs; HMAC accepts any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.expose()).unwrap_or_else(|_| unreachable!());
    let (from, to) = (link.from.as_str(), link.to.as_str());
    for part in ["health-ctx-v2", from, to, method, path, &crate::sha256_hex(body), timestamp, caller] {
        mac.update(part.as_bytes());
        mac.update(b"\n");
    }
    mac
}

/// Attests `caller` for one request on `link` at time `now` (Unix seconds), under `key`, the
/// link's key.
pub fn attest(
    key: &SecretKey,
    link: Link,
    method: &str,
    path: &str,
    body: &[u8],
    caller: &Caller,
    now: i64,
) -> Attestation {
    let caller = crate::b64url(serde_json::to_vec(caller).unwrap_or_default());
    let timestamp = now.to_string();
    let tag = mac(key, link, method, path, body, &timestamp, &caller).finalize().into_bytes();
    Attestation { from: link.from.as_str().to_owned(), caller, timestamp, mac: crate::b64url(tag) }
}

/// The link an attestation received by `to` claims, if its sender is one of `senders` (the
/// ones the endpoint serves): the receiver then reads that link's key and [`verify`]s.
pub fn claimed_link(
    attestation: Option<&Attestation>,
    to: Component,
    senders: &[Component],
) -> Result<Link, ContextError> {
    let att = attestation.ok_or(ContextError::Missing)?;
    let from = Component::parse(&att.from).filter(|from| senders.contains(from)).ok_or(ContextError::UnknownSender)?;
    Link::new(from, to).ok_or(ContextError::UnknownSender)
}

/// Checks an attestation received on `link` under the link's `key`; the MAC is checked before
/// the JSON is parsed.
pub fn verify(
    key: &SecretKey,
    link: Link,
    method: &str,
    path: &str,
    body: &[u8],
    attestation: Option<&Attestation>,
    now: i64,
) -> Result<Caller, ContextError> {
    let att = attestation.ok_or(ContextError::Missing)?;
    if att.from != link.from.as_str() {
        return Err(ContextError::UnknownSender);
    }
    let tag = crate::b64url_decode(&att.mac).ok_or(ContextError::Malformed)?;
    mac(key, link, method, path, body, &att.timestamp, &att.caller)
        .verify_slice(&tag)
        .map_err(|_| ContextError::BadMac)?;
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
            subject: Opaque::parse("u-alice").unwrap(),
            role: Role::Patient,
            client_id: Some(ClientId::parse("web").unwrap()),
            scopes: vec!["records:read".into()],
            jti: TokenId::parse("j1").unwrap(),
            enc_jwk: None,
        }
    }

    fn key() -> SecretKey {
        SecretKey::from_bytes([9; 32])
    }

    fn link(from: Component, to: Component) -> Link {
        Link::new(from, to).unwrap()
    }

    fn patient() -> Link {
        link(Component::Gateway, Component::Patient)
    }

    #[test]
    fn accepts_fresh_context_for_the_same_request() {
        let att = attest(&key(), patient(), "GET", "/patients/p-1/record", b"", &caller(), 1000);
        assert_eq!(att.from, "gateway");
        assert_eq!(verify(&key(), patient(), "GET", "/patients/p-1/record", b"", Some(&att), 1010), Ok(caller()));
    }

    #[test]
    fn rejects_missing_forged_and_stale_contexts() {
        let att = attest(&key(), patient(), "GET", "/p", b"", &caller(), 1000);
        assert_eq!(verify(&key(), patient(), "GET", "/p", b"", None, 1000), Err(ContextError::Missing));
        assert_eq!(
            verify(&SecretKey::from_bytes([1; 32]), patient(), "GET", "/p", b"", Some(&att), 1000),
            Err(ContextError::BadMac)
        );
        assert_eq!(verify(&key(), patient(), "GET", "/p", b"", Some(&att), 1031), Err(ContextError::Stale));
        assert_eq!(verify(&key(), patient(), "GET", "/p", b"", Some(&att), 969), Err(ContextError::Stale));
    }

    #[test]
    fn extreme_timestamps_are_stale_not_a_panic() {
        for issued in [i64::MIN, i64::MIN + 1, -9_223_372_036_854_775_807, i64::MAX] {
            let caller = crate::b64url(serde_json::to_vec(&caller()).unwrap());
            let timestamp = issued.to_string();
            let tag = mac(&key(), patient(), "GET", "/p", b"", &timestamp, &caller).finalize().into_bytes();
            let att = Attestation { from: "gateway".into(), caller, timestamp, mac: crate::b64url(tag) };
            let verified = verify(&key(), patient(), "GET", "/p", b"", Some(&att), 1000);
            assert_eq!(verified, Err(ContextError::Stale), "{issued}");
        }
    }

    #[test]
    fn context_is_bound_to_method_path_body_and_caller() {
        let att = attest(&key(), patient(), "GET", "/p/1", b"x", &caller(), 1000);
        assert_eq!(verify(&key(), patient(), "POST", "/p/1", b"x", Some(&att), 1000), Err(ContextError::BadMac));
        assert_eq!(verify(&key(), patient(), "GET", "/p/2", b"x", Some(&att), 1000), Err(ContextError::BadMac));
        assert_eq!(verify(&key(), patient(), "GET", "/p/1", b"y", Some(&att), 1000), Err(ContextError::BadMac));
        let mut escalated = caller();
        escalated.role = Role::Doctor;
        let forged = Attestation { caller: crate::b64url(serde_json::to_vec(&escalated).unwrap()), ..att };
        assert_eq!(verify(&key(), patient(), "GET", "/p/1", b"x", Some(&forged), 1000), Err(ContextError::BadMac));
    }

    #[test]
    fn a_context_for_one_link_verifies_on_no_other_link() {
        let att = attest(&key(), patient(), "GET", "/p", b"", &caller(), 1000);
        // The receiver is under the MAC: the same key on gateway -> doctor does not accept it.
        let doctor = link(Component::Gateway, Component::Doctor);
        assert_eq!(verify(&key(), doctor, "GET", "/p", b"", Some(&att), 1000), Err(ContextError::BadMac));
        // Another link's key (the gateway's to jwks, say) does not either, on either link.
        let jwks_key = SecretKey::from_bytes([4; 32]);
        assert_eq!(verify(&jwks_key, patient(), "GET", "/p", b"", Some(&att), 1000), Err(ContextError::BadMac));
        let under_other_key = attest(&jwks_key, patient(), "GET", "/p", b"", &caller(), 1000);
        assert_eq!(
            verify(&key(), patient(), "GET", "/p", b"", Some(&under_other_key), 1000),
            Err(ContextError::BadMac)
        );
    }

    #[test]
    fn a_context_claiming_another_sender_is_refused() {
        let gateway_jwks = link(Component::Gateway, Component::Jwks);
        let auth_jwks = link(Component::Auth, Component::Jwks);
        let att = attest(&key(), gateway_jwks, "POST", "/internal/sign", b"{}", &caller(), 1000);
        // The sender the headers claim must be the link's.
        assert_eq!(
            verify(&key(), auth_jwks, "POST", "/internal/sign", b"{}", Some(&att), 1000),
            Err(ContextError::UnknownSender)
        );
        // Claiming `auth` instead, even were the key the same, breaks the MAC: the sender is under it.
        let claims_auth = Attestation { from: "auth".into(), ..att.clone() };
        assert_eq!(
            verify(&key(), auth_jwks, "POST", "/internal/sign", b"{}", Some(&claims_auth), 1000),
            Err(ContextError::BadMac)
        );
        assert!(verify(&key(), gateway_jwks, "POST", "/internal/sign", b"{}", Some(&att), 1000).is_ok());
    }

    #[test]
    fn a_receiver_serves_only_the_senders_it_lists() {
        let from = |sender: &str| Attestation {
            from: sender.into(),
            caller: String::new(),
            timestamp: String::new(),
            mac: String::new(),
        };
        let (gateway, auth) = (Component::Gateway, Component::Auth);
        // jwks signs for auth only, decrypts for both.
        assert_eq!(claimed_link(Some(&from("gateway")), Component::Jwks, &[auth]), Err(ContextError::UnknownSender));
        assert_eq!(claimed_link(Some(&from("auth")), Component::Jwks, &[auth]), Ok(link(auth, Component::Jwks)));
        assert_eq!(
            claimed_link(Some(&from("gateway")), Component::Jwks, &[gateway, auth]),
            Ok(link(gateway, Component::Jwks))
        );
        // A role service serves the gateway; a sender with no link to it, or none at all, is refused.
        assert_eq!(claimed_link(Some(&from("auth")), Component::Patient, &[auth]), Err(ContextError::UnknownSender));
        assert_eq!(
            claimed_link(Some(&from("doctor")), Component::Patient, &[gateway]),
            Err(ContextError::UnknownSender)
        );
        assert_eq!(
            claimed_link(Some(&from("Gateway")), Component::Patient, &[gateway]),
            Err(ContextError::UnknownSender)
        );
        assert_eq!(claimed_link(Some(&from("")), Component::Patient, &[gateway]), Err(ContextError::UnknownSender));
        assert_eq!(claimed_link(None, Component::Patient, &[gateway]), Err(ContextError::Missing));
    }

    #[test]
    fn each_link_has_a_key_variable_of_its_own() {
        let mut names: Vec<&str> = Link::ALL.iter().map(|l| l.key_variable()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Link::ALL.len());
        assert!(Link::new(Component::Patient, Component::Jwks).is_none());
        assert!(Link::new(Component::Jwks, Component::Auth).is_none());
        assert_eq!(patient().key_variable(), "context_key_patient");
    }

    #[test]
    fn a_version_1_context_is_refused() {
        // What the previous release's gateway sent: no sender, no receiver under the MAC.
        let caller = crate::b64url(serde_json::to_vec(&caller()).unwrap());
        let mut v1 = <Hmac<Sha256> as Mac>::new_from_slice(key().expose()).unwrap();
        for part in ["health-ctx-v1", "GET", "/p", &crate::sha256_hex(b""), "1000", &caller] {
            v1.update(part.as_bytes());
            v1.update(b"\n");
        }
        let mac = crate::b64url(v1.finalize().into_bytes());
        let att = Attestation { from: "gateway".into(), caller, timestamp: "1000".into(), mac };
        assert_eq!(verify(&key(), patient(), "GET", "/p", b"", Some(&att), 1000), Err(ContextError::BadMac));
    }
}
