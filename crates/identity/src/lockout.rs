//! Login lockout. Failures are counted per user *and* source address: after `max_failures`
//! failures within `lock_secs`, that pair is locked for `lock_secs`. An attacker guessing from
//! one address locks only themselves out of that account; the user, logging in from elsewhere,
//! is unaffected, and the lock lifts by itself, so nobody can keep an account locked forever.
//! Unknown usernames are counted the same way, so locking reveals nothing about who exists.

/// The `lockout_max_failures` and `lockout_duration_secs` variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutPolicy {
    pub max_failures: u32,
    pub lock_secs: i64,
}

impl LockoutPolicy {
    /// Refuses settings that would disable the protection by accident.
    pub fn new(max_failures: i64, lock_secs: i64) -> Option<Self> {
        let max_failures = u32::try_from(max_failures).ok().filter(|m| (1..=1000).contains(m))?;
        (1..=86_400 * 30).contains(&lock_secs).then_some(Self { max_failures, lock_secs })
    }
}

/// The stored counter for one (tenant, username, source).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Attempts {
    /// Failures in the current window.
    pub failures: u32,
    /// When the current window's first failure happened.
    pub window_start: i64,
    /// Locked while `now < locked_until`.
    pub locked_until: i64,
}

/// What a failure did to the counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Counted,
    /// This failure reached the limit and started a lock (audited as `lockout`).
    Locked,
}

impl Attempts {
    pub fn is_locked(&self, now: i64) -> bool {
        now < self.locked_until
    }

    /// Seconds until the lock lifts (for `Retry-After`), 0 when not locked.
    pub fn retry_after(&self, now: i64) -> i64 {
        (self.locked_until - now).max(0)
    }

    /// Records one failed attempt at `now`.
    pub fn fail(&mut self, policy: LockoutPolicy, now: i64) -> Failure {
        if now - self.window_start >= policy.lock_secs || self.locked_until != 0 && !self.is_locked(now) {
            // The window expired, or a past lock has lifted: start counting afresh.
            *self = Attempts { failures: 0, window_start: now, locked_until: 0 };
        }
        self.failures += 1;
        if self.failures >= policy.max_failures {
            self.locked_until = now + policy.lock_secs;
            self.failures = 0;
            return Failure::Locked;
        }
        Failure::Counted
    }
}

impl Attempts {
    /// Takes back one failure that [`Attempts::fail`] counted in advance for an attempt that
    /// turned out not to be one: the password matched and no one-time code was checked (MFA
    /// enrolment still required, enrolment already done). `counted` is what that `fail`
    /// answered; if it started the lock, the lock is lifted again. Only a code check keeps a
    /// correct password's attempt counted, so a stolen password buys no code guesses, while
    /// correct passwords alone never lock anyone out.
    pub fn refund(&mut self, policy: LockoutPolicy, counted: Failure) {
        match counted {
            Failure::Locked if self.locked_until != 0 => {
                self.locked_until = 0;
                self.failures = policy.max_failures.saturating_sub(1);
            }
            Failure::Locked | Failure::Counted => self.failures = self.failures.saturating_sub(1),
        }
    }
}

/// The source an attempt is counted against: the client address without its port, so one
/// machine cannot spread guesses over ephemeral ports.
pub fn source_of(client_addr: Option<&str>) -> String {
    let Some(addr) = client_addr.map(str::trim).filter(|a| !a.is_empty()) else {
        return "unknown".into();
    };
    if let Some(rest) = addr.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest).to_owned();
    }
    match addr.rsplit_once(':') {
        // IPv4 with a port; a bare IPv6 address has more than one colon.
        Some((host, _port)) if !host.contains(':') => host.to_owned(),
        _ => addr.to_owned(),
    }
    .chars()
    .take(64)
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: LockoutPolicy = LockoutPolicy { max_failures: 5, lock_secs: 1800 };
    const T0: i64 = 1_800_000_000;

    #[test]
    fn locks_on_the_fifth_failure_and_unlocks_after_thirty_minutes() {
        let mut attempts = Attempts::default();
        for i in 0..4 {
            assert_eq!(attempts.fail(POLICY, T0 + i), Failure::Counted);
            assert!(!attempts.is_locked(T0 + i));
        }
        assert_eq!(attempts.fail(POLICY, T0 + 4), Failure::Locked);
        assert!(attempts.is_locked(T0 + 5));
        assert_eq!(attempts.retry_after(T0 + 5), 1799);
        assert!(attempts.is_locked(T0 + 4 + 1799));
        assert!(!attempts.is_locked(T0 + 4 + 1800));
        assert_eq!(attempts.retry_after(T0 + 4 + 1800), 0);
        // After the lock lifts, counting starts again from zero.
        assert_eq!(attempts.fail(POLICY, T0 + 4 + 1800), Failure::Counted);
        assert_eq!(attempts.failures, 1);
        assert!(!attempts.is_locked(T0 + 4 + 1800));
    }

    #[test]
    fn refunded_attempts_never_lock() {
        let mut attempts = Attempts::default();
        for i in 0..20 {
            let counted = attempts.fail(POLICY, T0 + i);
            attempts.refund(POLICY, counted);
            assert!(!attempts.is_locked(T0 + i), "attempt {i}");
        }
        for i in 0..4 {
            assert_eq!(attempts.fail(POLICY, T0 + 30 + i), Failure::Counted);
        }
        // The attempt that locked, refunded, lifts its lock; a real failure then locks.
        let counted = attempts.fail(POLICY, T0 + 40);
        assert_eq!(counted, Failure::Locked);
        attempts.refund(POLICY, counted);
        assert!(!attempts.is_locked(T0 + 40));
        assert_eq!(attempts.fail(POLICY, T0 + 41), Failure::Locked);
    }

    #[test]
    fn forgets_failures_older_than_the_window() {
        let mut attempts = Attempts::default();
        for i in 0..4 {
            attempts.fail(POLICY, T0 + i);
        }
        assert_eq!(attempts.fail(POLICY, T0 + 1800), Failure::Counted);
        assert_eq!(attempts.failures, 1);
    }

    #[test]
    fn refuses_settings_that_disable_lockout() {
        assert_eq!(LockoutPolicy::new(5, 1800), Some(POLICY));
        assert_eq!(LockoutPolicy::new(0, 1800), None);
        assert_eq!(LockoutPolicy::new(-1, 1800), None);
        assert_eq!(LockoutPolicy::new(5, 0), None);
    }

    #[test]
    fn counts_sources_by_address_without_port() {
        assert_eq!(source_of(Some("10.0.0.7:51234")), "10.0.0.7");
        assert_eq!(source_of(Some("[2001:db8::1]:443")), "2001:db8::1");
        assert_eq!(source_of(Some("2001:db8::1")), "2001:db8::1");
        assert_eq!(source_of(None), "unknown");
        assert_eq!(source_of(Some("")), "unknown");
    }
}
