//! Every cap the host puts on requests and instances, in one value, with Spin 4.0.2's defaults.
//!
//! What Spin 4.0.2 does for a `wasi:http/incoming-handler@0.2` component (this project's):
//! - no per-request deadline: epoch interruption is on with a 10 ms ticker
//!   (`crates/core/src/lib.rs`, `DEFAULT_EPOCH_TICK_INTERVAL`), but every store's deadline is
//!   `u64::MAX / 2` ticks (`crates/core/src/store.rs`) and `spin up --request-timeout` only
//!   applies to WASIp3 components (`crates/trigger-http/src/lib.rs`);
//! - no request semaphore; concurrency is bounded by the pooling allocator, sized from
//!   `SPIN_MAX_INSTANCE_COUNT` (default 1000): 1000 component instances, 1000 linear memories,
//!   … (`crates/core/src/lib.rs`). A request that finds the pool full fails with a 500.
//!
//! `wasmtime serve` (`src/commands/serve.rs`) has no deadline by default either (`-W timeout`
//! opts in: the guest yields every epoch tick and the request is dropped at the deadline),
//! and a semaphore of 1000 concurrent requests that makes later ones wait. Both are here as
//! options, off by default, so the host answers exactly as Spin does unless asked otherwise.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;

/// Spin's default `SPIN_MAX_INSTANCE_COUNT`.
pub const DEFAULT_MAX_INSTANCES: u32 = 1000;

/// The host's limits. `Limits::default()` is what `spin up` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Size of the pooling allocator, from which Spin derives every pool total: this many
    /// component instances and linear memories, twice as many tables, four times as many core
    /// instances. A chained request holds several instances, and a component composed with a
    /// dependency has a memory per part, so fewer requests than this run at once. Default
    /// [`DEFAULT_MAX_INSTANCES`], overridden by `SPIN_MAX_INSTANCE_COUNT` as in Spin.
    pub max_instances: u32,
    /// `wasmtime serve --max-concurrent-requests`: requests from outside that run at once;
    /// later ones wait for a slot. `None` (the default): no limit, as in Spin.
    pub max_concurrent_requests: Option<usize>,
    /// `wasmtime serve -W timeout=…`: a request not finished within this is dropped and its
    /// guest stopped (it yields to the runtime every epoch tick, so a guest that never returns
    /// is stopped too) and answered 500. `None` (the default): no deadline, as in Spin.
    pub request_timeout: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_instances: DEFAULT_MAX_INSTANCES, max_concurrent_requests: None, request_timeout: None }
    }
}

impl Limits {
    /// The defaults, with `SPIN_MAX_INSTANCE_COUNT` from `env` if set (Spin reads it from its
    /// process environment).
    pub fn from_env(env: &HashMap<String, String>) -> anyhow::Result<Self> {
        let mut limits = Self::default();
        if let Some(value) = env.get("SPIN_MAX_INSTANCE_COUNT") {
            limits.max_instances =
                value.parse().with_context(|| format!("failed to parse env var `SPIN_MAX_INSTANCE_COUNT={value}`"))?;
        }
        Ok(limits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_spins_and_the_instance_count_follows_the_environment() {
        assert_eq!(Limits::from_env(&HashMap::new()).unwrap(), Limits::default());
        assert_eq!(Limits::default().max_instances, 1000);
        let env = HashMap::from([("SPIN_MAX_INSTANCE_COUNT".to_owned(), "12".to_owned())]);
        assert_eq!(Limits::from_env(&env).unwrap().max_instances, 12);
        let bad = HashMap::from([("SPIN_MAX_INSTANCE_COUNT".to_owned(), "many".to_owned())]);
        assert!(Limits::from_env(&bad).is_err());
    }
}
