//! Rate limits: how many requests of a class one client address, and separately one
//! authenticated subject, may make per fixed window. The counting itself is one atomic upsert
//! in the `audit` database (`health_spin::ratelimit`), so the limit holds across every instance
//! and process that shares it. This module is the arithmetic: the
//! limits as variables spell them, the counter key of a window, the decision, and the
//! `RateLimit-Policy` / `RateLimit` fields of draft-ietf-httpapi-ratelimit-headers-09 (structured
//! field lists, one member per limit that applied).

use std::fmt;

/// A class of routes with a limit of its own (variable `rate_limit_{name}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Password and token endpoints: `/auth/login`, `/auth/token`, refresh, revocation,
    /// introspection, password change. Per address this bounds password spraying across many
    /// usernames from one address, beside the per-user lockout.
    Login,
    /// Reads (`GET`, `HEAD`) under `/api/`.
    Read,
    /// Writes under `/api/`.
    Write,
    /// The tenant admin's routes under `/api/admin/` and the admin actions on patients.
    Admin,
}

impl Class {
    pub const ALL: [Class; 4] = [Class::Login, Class::Read, Class::Write, Class::Admin];

    pub fn name(self) -> &'static str {
        match self {
            Class::Login => "login",
            Class::Read => "read",
            Class::Write => "write",
            Class::Admin => "admin",
        }
    }

    /// The Spin variable holding the class's limit.
    pub fn variable(self) -> &'static str {
        match self {
            Class::Login => "rate_limit_login",
            Class::Read => "rate_limit_read",
            Class::Write => "rate_limit_write",
            Class::Admin => "rate_limit_admin",
        }
    }
}

/// At most `quota` requests per `window_secs`, counted per window aligned on multiples of
/// `window_secs` since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub quota: u64,
    pub window_secs: u64,
}

/// The longest window a limit may have: old windows are swept by age, and a day is enough for
/// any rate.
pub const MAX_WINDOW_SECS: u64 = 86_400;

impl Limit {
    /// `"100/60"` (100 requests per 60 s), or `"off"` for no limit. Anything else is an error
    /// naming what is wrong: a mistyped limit must not silently turn into none.
    pub fn parse(text: &str) -> Result<Option<Limit>, String> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        let (quota, window) =
            text.split_once('/').ok_or_else(|| format!("{text:?} is not \"requests/seconds\" or \"off\""))?;
        let quota: u64 = quota.trim().parse().map_err(|_| format!("{quota:?} is not a request count"))?;
        let window_secs: u64 = window.trim().parse().map_err(|_| format!("{window:?} is not a number of seconds"))?;
        if quota == 0 {
            return Err("a quota of 0 would refuse everything; use a positive count".into());
        }
        if window_secs == 0 || window_secs > MAX_WINDOW_SECS {
            return Err(format!("the window must be 1 to {MAX_WINDOW_SECS} seconds"));
        }
        Ok(Some(Limit { quota, window_secs }))
    }
}

/// Whom a counter counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who<'a> {
    /// The client's IP address (Spin's `spin-client-addr` without the port).
    Address(&'a str),
    /// A verified token's tenant and subject.
    Subject { tenant: &'a str, subject: &'a str },
}

impl Who<'_> {
    fn scope(&self) -> &'static str {
        match self {
            Who::Address(_) => "address",
            Who::Subject { .. } => "subject",
        }
    }
}

impl fmt::Display for Who<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Key material, not output: `/` separates the key's parts, so it is escaped in values.
        let clean = |s: &str| s.replace('%', "%25").replace('/', "%2F");
        match self {
            Who::Address(address) => write!(f, "a/{}", clean(address)),
            Who::Subject { tenant, subject } => write!(f, "s/{}/{}", clean(tenant), clean(subject)),
        }
    }
}

/// The prefix of every counter key.
pub const KEY_PREFIX: &str = "rl/";

/// The client's address from `spin-client-addr` (`ip:port`, or `[v6]:port`), without the port.
pub fn client_ip(spin_client_addr: &str) -> &str {
    match spin_client_addr.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => {
            host.trim_start_matches('[').trim_end_matches(']')
        }
        _ => spin_client_addr,
    }
}

/// One counter: which window `now` falls in and the key counting it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// Unix time the window began.
    pub start: i64,
    /// Seconds until it ends (at least 1).
    pub resets_in: u64,
    /// The counter's key: `rl/{class}/{window_secs}/{start}/{who}`.
    pub key: String,
}

pub fn window(class: Class, who: Who<'_>, limit: Limit, now: i64) -> Window {
    let width = i64::try_from(limit.window_secs).unwrap_or(i64::MAX);
    let start = now - now.rem_euclid(width);
    let resets_in = u64::try_from(start + width - now).unwrap_or(1).max(1);
    Window { start, resets_in, key: format!("{KEY_PREFIX}{}/{}/{start}/{who}", class.name(), limit.window_secs) }
}

/// What one counter said about a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub class: Class,
    pub scope: &'static str,
    pub limit: Limit,
    /// The count including this request.
    pub count: u64,
    pub resets_in: u64,
}

impl Verdict {
    pub fn new(class: Class, who: Who<'_>, limit: Limit, window: &Window, count: i64) -> Self {
        Verdict {
            class,
            scope: who.scope(),
            limit,
            count: u64::try_from(count).unwrap_or(0),
            resets_in: window.resets_in,
        }
    }

    pub fn allowed(&self) -> bool {
        self.count <= self.limit.quota
    }

    pub fn remaining(&self) -> u64 {
        self.limit.quota.saturating_sub(self.count)
    }

    /// The policy's name in the header fields, e.g. `read-address`.
    fn name(&self) -> String {
        format!("{}-{}", self.class.name(), self.scope)
    }
}

/// `RateLimit-Policy` for the verdicts of one request: `"read-address";q=100;w=60, ...`.
pub fn policy_field(verdicts: &[Verdict]) -> String {
    verdicts
        .iter()
        .map(|v| format!("\"{}\";q={};w={}", v.name(), v.limit.quota, v.limit.window_secs))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `RateLimit` for the verdicts of one request: `"read-address";r=37;t=23, ...`.
pub fn state_field(verdicts: &[Verdict]) -> String {
    verdicts
        .iter()
        .map(|v| format!("\"{}\";r={};t={}", v.name(), v.remaining(), v.resets_in))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `Retry-After` in seconds when a request is refused: the latest reset among the exhausted
/// limits (the request needs all of them).
pub fn retry_after(verdicts: &[Verdict]) -> Option<u64> {
    verdicts.iter().filter(|v| !v.allowed()).map(|v| v.resets_in).max()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_parse_or_say_what_is_wrong() {
        assert_eq!(Limit::parse("100/60"), Ok(Some(Limit { quota: 100, window_secs: 60 })));
        assert_eq!(Limit::parse(" 5 / 1 "), Ok(Some(Limit { quota: 5, window_secs: 1 })));
        assert_eq!(Limit::parse("OFF"), Ok(None));
        for bad in ["", "100", "100/", "/60", "0/60", "10/0", "10/86401", "-1/60", "ten/60", "10/1m"] {
            assert!(Limit::parse(bad).is_err(), "{bad:?} must not parse");
        }
    }

    #[test]
    fn windows_align_and_keys_separate_class_scope_and_window() {
        let limit = Limit { quota: 3, window_secs: 60 };
        let w = window(Class::Read, Who::Address("10.0.0.7"), limit, 1_000_000_030);
        assert_eq!((w.start, w.resets_in), (1_000_000_020, 50));
        assert_eq!(w.key, "rl/read/60/1000000020/a/10.0.0.7");
        let next = window(Class::Read, Who::Address("10.0.0.7"), limit, 1_000_000_080);
        assert_ne!(next.key, w.key);
        let subject = window(Class::Read, Who::Subject { tenant: "t/1", subject: "u" }, limit, 1_000_000_030);
        assert_eq!(subject.key, "rl/read/60/1000000020/s/t%2F1/u");
        assert_ne!(window(Class::Write, Who::Address("10.0.0.7"), limit, 1_000_000_030).key, w.key);
    }

    #[test]
    fn client_ip_drops_the_port() {
        assert_eq!(client_ip("127.0.0.1:51234"), "127.0.0.1");
        assert_eq!(client_ip("[::1]:8080"), "::1");
        assert_eq!(client_ip("10.1.2.3"), "10.1.2.3");
    }

    #[test]
    fn header_fields_follow_the_draft_and_retry_after_waits_for_every_exhausted_limit() {
        let limit = Limit { quota: 2, window_secs: 60 };
        let w = window(Class::Read, Who::Address("a"), limit, 30);
        let address = Verdict::new(Class::Read, Who::Address("a"), limit, &w, 3);
        let subject = Verdict {
            resets_in: 45,
            ..Verdict::new(Class::Read, Who::Subject { tenant: "t", subject: "s" }, limit, &w, 1)
        };
        assert!(!address.allowed() && subject.allowed());
        let both = [address, subject];
        assert_eq!(policy_field(&both), "\"read-address\";q=2;w=60, \"read-subject\";q=2;w=60");
        assert_eq!(state_field(&both), "\"read-address\";r=0;t=30, \"read-subject\";r=1;t=45");
        assert_eq!(retry_after(&both), Some(30));
        assert_eq!(retry_after(&both[1..]), None);
    }
}
