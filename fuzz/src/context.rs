//! `caller_context`: `health_core::context::verify`, what every role service runs on the
//! gateway's `x-health-caller`, `x-health-context-ts` and `x-health-context-mac` headers, with
//! the request's method, path and body.
//!
//! Input: a mode byte, then `method \0 path \0 body \0 caller \0 timestamp \0 mac`.
//! - mode 0: the headers as given;
//! - mode 1: the MAC replaced by the right one over the fuzzed parts (computed here as
//!   `context.rs` documents it), so the fuzzer reaches the timestamp and caller JSON parsing,
//!   which only run after the MAC; a `BadMac` answer then means this copy is out of date;
//! - mode 2: no attestation at all.

use health_core::context::{self, Attestation, ContextError};
use health_core::{SecretKey, b64url};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::NOW;

/// The fixed `context_key`.
pub const KEY: [u8; 32] = [0x5c; 32];

/// The MAC of `context::attest`: HMAC-SHA256 over the newline-terminated parts.
pub fn mac(method: &str, path: &str, body: &[u8], timestamp: &str, caller: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&KEY).expect("HMAC takes any key length");
    for part in ["health-ctx-v1", method, path, &health_core::sha256_hex(body), timestamp, caller] {
        mac.update(part.as_bytes());
        mac.update(b"\n");
    }
    b64url(mac.finalize().into_bytes())
}

pub fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    let mut parts = rest.splitn(6, |&b| b == 0);
    let mut next = || parts.next().unwrap_or_default();
    let (method, path, body) = (String::from_utf8_lossy(next()), String::from_utf8_lossy(next()), next().to_vec());
    let (caller, timestamp, given_mac) =
        (String::from_utf8_lossy(next()), String::from_utf8_lossy(next()), String::from_utf8_lossy(next()));
    let key = SecretKey::from_bytes(KEY);
    let attestation = match mode % 3 {
        0 => Some(Attestation { caller: caller.into(), timestamp: timestamp.into(), mac: given_mac.into() }),
        1 => {
            let mac = mac(&method, &path, &body, &timestamp, &caller);
            Some(Attestation { caller: caller.into(), timestamp: timestamp.into(), mac })
        }
        _ => None,
    };
    let result = context::verify(&key, &method, &path, &body, attestation.as_ref(), NOW);
    match (&attestation, &result) {
        (None, _) => assert_eq!(result, Err(ContextError::Missing)),
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
            let again = context::attest(&key, &method, &path, &body, caller, issued);
            assert_eq!(context::verify(&key, &method, &path, &body, Some(&again), NOW).as_ref(), Ok(caller));
        }
        (Some(_), Err(_)) => {}
    }
}
