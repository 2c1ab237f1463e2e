//! Rate limits counted in the `rate-limits` key-value store with `wasi:keyvalue`'s atomic
//! `increment`, so every instance and every process sharing the store counts together (with
//! Redis behind the label, Spin's increment is `INCRBY`). The arithmetic, the keys and the
//! header fields are `health_core::ratelimit`'s.
//!
//! Spin's key-value stores never expire anything, so old windows are swept: the first request
//! of an identity's new window also counts the class's sweep marker for that window, and the one
//! request that brings the marker to 1 (exactly one per class and window, the increment being
//! atomic) deletes every counter and marker whose window has ended. The store holds at most the
//! counters of the current and the last window of each class.
//!
//! A store that cannot count refuses the request (503): a limit that silently stopped counting
//! would be no limit.

use anyhow::Context;
use health_core::ratelimit::{self, Class, KEY_PREFIX, Limit, Verdict, Who};
use spin_sdk::wit::wasi::keyvalue::{atomics, store};

use crate::stores::Unavailable;

/// The key-value store label of the counters.
pub const STORE: &str = "rate-limits";

/// The limit of `class` from its variable: `None` when it is `off`. A value that does not parse
/// is an error, so a typo cannot turn a limit off.
pub fn limit(class: Class) -> anyhow::Result<Option<Limit>> {
    let text = crate::var(class.variable())?;
    Limit::parse(&text).map_err(|e| anyhow::anyhow!("variable {}: {e}", class.variable()))
}

fn unavailable(what: &str, e: store::Error) -> anyhow::Error {
    anyhow::Error::new(Unavailable(format!("{what}: {e:?}")))
}

/// Counts this request of `class` once for each of `who` and returns what each counter says
/// (empty when the class has no limit). The request is refused if any verdict is not
/// [`Verdict::allowed`].
pub fn count(class: Class, who: &[Who<'_>], now: i64) -> anyhow::Result<Vec<Verdict>> {
    let Some(limit) = limit(class)? else {
        return Ok(Vec::new());
    };
    let bucket = store::open(STORE).map_err(|e| unavailable("opening the rate-limits store", e))?;
    let mut verdicts = Vec::with_capacity(who.len());
    for who in who {
        let window = ratelimit::window(class, *who, limit, now);
        let count = atomics::increment(&bucket, &window.key, 1).map_err(|e| unavailable("counting a request", e))?;
        if count == 1 {
            sweep_if_due(&bucket, class, limit, now).context("sweeping old rate-limit windows")?;
        }
        verdicts.push(Verdict::new(class, *who, limit, &window, count));
    }
    Ok(verdicts)
}

/// Sweeps the ended windows if this request is the first of its class's window to ask.
fn sweep_if_due(bucket: &store::Bucket, class: Class, limit: Limit, now: i64) -> anyhow::Result<()> {
    let marker = ratelimit::sweep_marker(class, limit, now);
    if atomics::increment(bucket, &marker, 1).map_err(|e| unavailable("counting a sweep", e))? != 1 {
        return Ok(());
    }
    let keys = bucket.list_keys(None).map_err(|e| unavailable("listing rate-limit counters", e))?.keys;
    for key in keys.iter().filter(|key| key.starts_with(KEY_PREFIX) && ratelimit::expired(key, now)) {
        bucket.delete(key).map_err(|e| unavailable("deleting an old rate-limit counter", e))?;
    }
    Ok(())
}

/// Sets `RateLimit-Policy` and `RateLimit` on a successful or a 429 `response` (nothing when no
/// limit applied), and `Retry-After` on a 429. Refusals for any other reason carry none: the
/// remaining count changes with every request, and two refusals of different tokens must not
/// differ in anything but their request id.
pub fn set_headers(response: &mut spin_sdk::http::Response, verdicts: &[Verdict]) {
    let status = *response.status();
    if verdicts.is_empty() || !((200..300).contains(&status) || status == 429) {
        return;
    }
    response.set_header("ratelimit-policy", ratelimit::policy_field(verdicts));
    response.set_header("ratelimit", ratelimit::state_field(verdicts));
    if let Some(seconds) = ratelimit::retry_after(verdicts) {
        response.set_header("retry-after", seconds.to_string());
    }
}

/// Whether every counter allowed the request.
pub fn allowed(verdicts: &[Verdict]) -> bool {
    verdicts.iter().all(Verdict::allowed)
}
