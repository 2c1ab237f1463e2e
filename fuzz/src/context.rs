//! `caller_context`: what every role service runs on a chained request's
//! `x-health-context-from`, `x-health-caller`, `x-health-context-ts` and `x-health-context-mac`
//! headers, with the request's method, path and body: `health_core::context::claimed_link` for
//! the receiver `patient` (which serves the gateway only), then `context::verify` under that
//! link's key.
//!
//! Input: a mode byte, then `method \0 path \0 body \0 caller \0 timestamp \0 mac [\0 from]`;
//! without a seventh part the sender is `gateway` (so seeds from before it keep their meaning).
//! - mode 0: the headers as given;
//! - mode 1: the MAC replaced by the right one over the fuzzed parts on the gateway → patient
//!   link (computed here as `context.rs` documents it), so the fuzzer reaches the timestamp and
//!   caller JSON parsing, which only run after the MAC; a `BadMac` answer for sender `gateway`
//!   then means this copy is out of date;
//! - mode 2: no attestation at all.

use health_core::context::{self, Attestation, ContextError};
use health_core::{Component, Link, SecretKey, b64url};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::NOW;

/// The fixed key of the gateway → patient link.
pub const KEY: [u8; 32] = [0x5c; 32];

/// The link the target's receiver serves.
pub fn link() -> Link {
    Link::new(Component::Gateway, Component::Patient).expect("the gateway -> patient link")
}

/// The MAC of `context::attest` on the gateway → patient link: HMAC-SHA256 over the
/// newline-terminated parts, sender and receiver first.
pub fn mac(method: &str, path: &str, body: &[u8], timestamp: &str, caller: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&KEY).expect("HMAC takes any key length");
    let digest = health_core::sha256_hex(body);
    for part in ["health-ctx-v2", "gateway", "patient", method, path, &digest, timestamp, caller] {
        mac.update(part.as_bytes());
        mac.update(b"\n");
    }
    b64url(mac.finalize().into_bytes())
}

/// What the receiver decides: the claimed link among the senders it serves, then the MAC.
fn receive(
    method: &str,
    path: &str,
    body: &[u8],
    attestation: Option<&Attestation>,
) -> Result<context::Caller, ContextError> {
    let link = context::claimed_link(attestation, Component::Patient, &[Component::Gateway])?;
    context::verify(&SecretKey::from_bytes(KEY), link, method, path, body, attestation, NOW)
}

pub fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    let mut parts = rest.splitn(7, |&b| b == 0);
    let mut next = || parts.next().unwrap_or_default();
    let (method, path, body) = (String::from_utf8_lossy(next()), String::from_utf8_lossy(next()), next().to_vec());
    let (caller, timestamp, given_mac) =
        (String::from_utf8_lossy(next()), String::from_utf8_lossy(next()), String::from_utf8_lossy(next()));
    let from = parts.next().map_or("gateway".into(), |f| String::from_utf8_lossy(f).into_owned());
    let attestation = match mode % 3 {
        0 => Some(Attestation {
            from: from.clone(),
            caller: caller.into(),
            timestamp: timestamp.into(),
            mac: given_mac.into(),
        }),
        1 => {
            let mac = mac(&method, &path, &body, &timestamp, &caller);
            Some(Attestation { from: from.clone(), caller: caller.into(), timestamp: timestamp.into(), mac })
        }
        _ => None,
    };
    let result = receive(&method, &path, &body, attestation.as_ref());
    match (&attestation, &result) {
        (None, _) => assert_eq!(result, Err(ContextError::Missing)),
        (Some(_), _) if from != "gateway" => {
            assert_eq!(result, Err(ContextError::UnknownSender), "a sender the patient service does not serve")
        }
        (Some(_), Err(ContextError::BadMac)) => {
            assert!(
                mode % 3 == 0,
                "the MAC computed as context.rs documents it was refused: update fuzz/src/context.rs"
            )
        }
        (Some(att), Ok(caller)) => {
            let issued: i64 = att.timestamp.parse().expect("accepted timestamp is a number");
            assert!((NOW - 30..=NOW + 30).contains(&issued), "stale context accepted");
            // What the service acts on re-attests to the same headers' meaning.
            let key = SecretKey::from_bytes(KEY);
            let again = context::attest(&key, link(), &method, &path, &body, caller, issued);
            assert_eq!(receive(&method, &path, &body, Some(&again)).as_ref(), Ok(caller));
        }
        (Some(_), Err(_)) => {}
    }
}
