//! Store outages fail fast: for each request, the gateway and `auth` first ask a fresh instance
//! of themselves, over service chaining, to use each of their stores once, and wait at most
//! [`PROBE_DEADLINE`] for the answer. Without a 200 in time the request is refused with 503
//! before anything in it touches a store. `jwks` has no outbound HTTP (its WIT world forbids
//! it), so it cannot probe: its callers bound their wait instead
//! ([`crate::chain::CALL_DEADLINE`]), and its public routes wait on its stores.
//!
//! Why a probe in another instance: key-value and SQLite calls block the guest until the host
//! answers, and Spin 4.0.2's Redis client waits for minutes while Redis is down (no response or
//! connection timeout, and a reconnect backoff of 1 s then 60–120 s per attempt), with nothing
//! in the runtime configuration to shorten it. An outgoing HTTP request is the one thing a
//! guest can stop waiting for ([`crate::deadline`]). The probe costs one more instance per
//! request; a probe that hangs keeps running in Spin until the store answers (Spin does not
//! cancel a chained component whose caller gave up), and a store that fails between the
//! probe and the request's own calls still makes that request wait. `deploy/README.md` has the
//! measurements and what Spin does not let an application bound.

use std::time::Duration;

use anyhow::Context;
use health_core::Problem;
use spin_sdk::http::{Request, Response};

use crate::respond::{self, Cache};

/// Path of the probe. No public route reaches it (the gateway and `auth` are routed on
/// `/api/...`, `/health`, `/metrics`, `/auth/...`, `/api/auth/validate` and `/t/...`), so only
/// service chaining does.
pub const PROBE_PATH: &str = "/internal/stores";

/// How long a request waits for its probe. A probe on healthy stores answers in milliseconds;
/// the margin is for a loaded machine: Spin runs compute-bound guests (argon2, RSA key
/// generation) without yielding, so the probe's instance may wait seconds for a thread. A probe
/// starved longer than this is answered 503 too: the platform then sheds load.
pub const PROBE_DEADLINE: Duration = Duration::from_secs(5);

/// The key the probe asks about: a read that changes nothing, whatever it finds.
const PROBE_KEY: &str = "health-platform/store-probe";

/// The stores one component uses: key-value labels and SQLite database labels.
#[derive(Debug, Clone, Copy)]
pub struct Stores {
    pub key_value: &'static [&'static str],
    pub sqlite: &'static [&'static str],
}

/// The component's stores did not all answer within the deadline: the request is refused with
/// 503 (`Problem::unavailable`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable(pub String);

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "stores unavailable: {}", self.0)
    }
}

impl std::error::Error for Unavailable {}

/// Whether `error` (or an error it wraps) is [`Unavailable`]: such a failure is answered 503,
/// any other internal error 500.
pub fn is_unavailable(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| cause.is::<Unavailable>())
}

/// In the probe instance: one real round trip to every store (`Store::open` alone does not
/// report a Redis that is down, Spin ignores the failed `PING`).
pub fn check(stores: &Stores) -> anyhow::Result<()> {
    for label in stores.key_value {
        let store = spin_sdk::key_value::Store::open(label).with_context(|| format!("opening {label}"))?;
        store.exists(PROBE_KEY).with_context(|| format!("reading {label}"))?;
    }
    for label in stores.sqlite {
        let db = spin_sdk::sqlite::Connection::open(label).with_context(|| format!("opening {label}"))?;
        db.execute("SELECT 1", &[]).with_context(|| format!("querying {label}"))?;
    }
    Ok(())
}

/// The probe's answer: 200 when every store answered, else 503.
pub fn answer_probe(component: &str, stores: &Stores) -> Response {
    match check(stores) {
        Ok(()) => respond::json(200, &serde_json::json!({ "status": "ok" }), Cache::NoStore),
        Err(e) => {
            crate::log::begin(component, None, None);
            crate::log::error("store_probe_failed", &e);
            respond::problem(&Problem::unavailable())
        }
    }
}

/// Asks a fresh instance of `component` (over `http://{component}.spin.internal`, which the
/// component must be allowed to reach) whether its stores answer, waiting at most
/// [`PROBE_DEADLINE`].
pub async fn probe(component: &str) -> Result<(), Unavailable> {
    let request = Request::get(format!("http://{component}.spin.internal{PROBE_PATH}")).build();
    match crate::deadline::within(PROBE_DEADLINE, spin_sdk::http::send::<_, Response>(request)).await {
        Ok(Ok(response)) if *response.status() == 200 => Ok(()),
        Ok(Ok(response)) => Err(Unavailable(format!("{component}'s store probe answered {}", response.status()))),
        Ok(Err(e)) => Err(Unavailable(format!("{component}'s store probe failed: {e}"))),
        Err(_) => Err(Unavailable(format!("{component}'s store probe did not answer within {PROBE_DEADLINE:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unavailable_is_found_through_context() {
        let error = anyhow::Error::new(Unavailable("x".into())).context("calling jwks");
        assert!(is_unavailable(&error));
        assert!(!is_unavailable(&anyhow::anyhow!("stores unavailable: x")));
    }
}
