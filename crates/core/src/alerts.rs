//! Alert rules over the audit log (issue 18, item 5): given the event just appended, which
//! rules it can set off, what must be counted in the log to decide, and what an alert and its
//! webhook message hold. The counting (indexed queries over the audit table, so counts hold
//! across every instance writing to it), storage and delivery are the glue's
//! (`health_spin::alerts`); this module has no clock and no I/O.
//!
//! Every rule is one count over a window: the repeated ones (failed logins, patients read,
//! signature failures) fire when the count reaches the rule's threshold; the single-event ones
//! (break-glass use, a one-time token replayed, refresh-token reuse) fire at one, and their window
//! only bounds how often one subject raises a new alert. An alert is identified by tenant, rule,
//! subject and the window the event falls in ([`Alert::dedup`]), so a burst makes one alert whose
//! count grows, not one alert per event.

use serde::Serialize;

use crate::Reason;
use crate::audit::{Event, Outcome};
use crate::ratelimit::Limit;

/// One alert rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    /// Failed logins for one account (by username) in a window.
    FailedLoginsUser,
    /// Failed logins from one client address in a window, whatever the account.
    FailedLoginsAddress,
    /// One subject reading many different patients in a window.
    PatientsRead,
    /// A break-glass grant.
    BreakGlass,
    /// An insurer's one-time token presented again.
    OneTimeTokenReplay,
    /// A spent refresh token presented again (its family is revoked).
    RefreshReuse,
    /// A tenant's audit chain found broken by a verification.
    AuditChainBreak,
    /// Token signatures that did not verify, above a rate.
    SignatureFailures,
}

impl Rule {
    pub const ALL: [Rule; 8] = [
        Rule::FailedLoginsUser,
        Rule::FailedLoginsAddress,
        Rule::PatientsRead,
        Rule::BreakGlass,
        Rule::OneTimeTokenReplay,
        Rule::RefreshReuse,
        Rule::AuditChainBreak,
        Rule::SignatureFailures,
    ];

    /// The rule's name in the alerts table, the API, the webhook and the metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Rule::FailedLoginsUser => "failed_logins_user",
            Rule::FailedLoginsAddress => "failed_logins_address",
            Rule::PatientsRead => "patients_read",
            Rule::BreakGlass => "break_glass",
            Rule::OneTimeTokenReplay => "one_time_token_replay",
            Rule::RefreshReuse => "refresh_reuse",
            Rule::AuditChainBreak => "audit_chain_break",
            Rule::SignatureFailures => "signature_failures",
        }
    }

    pub fn parse(text: &str) -> Option<Rule> {
        Rule::ALL.into_iter().find(|rule| rule.as_str() == text)
    }
}

impl Serialize for Rule {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// The reasons of a failed login (`auth`'s login and password-change refusals that count
/// toward the lockout, and attempts refused because of it).
pub const FAILED_LOGIN_REASONS: &[Reason] =
    &[Reason::BadPassword, Reason::UnknownUser, Reason::MfaFailed, Reason::MfaCodeReused, Reason::LockedOut];
/// A signature that did not verify.
pub const SIGNATURE_FAILURE_REASONS: &[Reason] = &[Reason::BadSignature];
/// A one-time token presented again.
pub const REPLAY_REASONS: &[Reason] = &[Reason::OneTimeTokenReplayed];
/// A refresh token presented again.
pub const REFRESH_REUSE_REASONS: &[Reason] = &[Reason::RefreshReuseFamilyRevoked, Reason::RefreshReuse];

/// The thresholds and the outbox's retry delay, one typed value with the documented defaults,
/// read from one Spin variable, `alerts` ([`Thresholds::parse`]): one variable rather than one
/// per field, because Spin resolves every application variable through every provider for each
/// instance that makes an outbound call (its allowed-hosts check), and with Vault each is a
/// round trip on the request path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// `failed_logins`: failed logins per account, and per address, within the window.
    pub failed_logins: Option<Limit>,
    /// `patients_read`: different patients one subject reads within the window.
    pub patients_read: Option<Limit>,
    /// `signature_failures`: bad signatures within the window.
    pub signature_failures: Option<Limit>,
    /// `repeat_secs`: how long a single-event rule (break-glass, replay, refresh reuse, chain
    /// break) keeps adding to one alert per subject before a new one is raised.
    pub repeat_secs: u64,
    /// `webhook_retry_secs`: the wait before a failed webhook delivery is tried again, doubled
    /// after each failure ([`retry_delay`]).
    pub webhook_retry_secs: u64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            failed_logins: Some(Limit { quota: 10, window_secs: 300 }),
            patients_read: Some(Limit { quota: 50, window_secs: 600 }),
            signature_failures: Some(Limit { quota: 20, window_secs: 60 }),
            repeat_secs: 3600,
            webhook_retry_secs: 30,
        }
    }
}

/// The Spin variable [`Thresholds::parse`] reads.
pub const VARIABLE: &str = "alerts";

impl Thresholds {
    /// From the `alerts` variable: `name=value` fields separated by spaces or commas, e.g.
    /// `"failed_logins=10/300 patients_read=50/600 signature_failures=20/60 repeat_secs=3600
    /// webhook_retry_secs=30"`; a limit is `"count/seconds"` or `"off"`, a field left out keeps
    /// its default. An unknown, repeated or unparsable field is an error naming it: a mistyped
    /// threshold must not silently become none.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut thresholds = Self::default();
        let mut seen = Vec::new();
        let seconds = |name: &str, value: &str| {
            value
                .parse::<u64>()
                .ok()
                .filter(|s| (1..=crate::ratelimit::MAX_WINDOW_SECS).contains(s))
                .ok_or_else(|| format!("{VARIABLE}: {name}={value:?} is not 1 to 86400 seconds"))
        };
        for field in text.split([' ', ',', '\n', '\t']).filter(|f| !f.is_empty()) {
            let (name, value) =
                field.split_once('=').ok_or_else(|| format!("{VARIABLE}: {field:?} is not name=value"))?;
            if seen.contains(&name) {
                return Err(format!("{VARIABLE}: {name} is given twice"));
            }
            seen.push(name);
            let limit = |value: &str| Limit::parse(value).map_err(|e| format!("{VARIABLE}: {name}: {e}"));
            match name {
                "failed_logins" => thresholds.failed_logins = limit(value)?,
                "patients_read" => thresholds.patients_read = limit(value)?,
                "signature_failures" => thresholds.signature_failures = limit(value)?,
                "repeat_secs" => thresholds.repeat_secs = seconds(name, value)?,
                "webhook_retry_secs" => thresholds.webhook_retry_secs = seconds(name, value)?,
                _ => return Err(format!("{VARIABLE}: unknown field {name:?}")),
            }
        }
        Ok(thresholds)
    }
}

/// Which events of the tenant's chain a [`Check`] counts (all since its window began).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Count {
    /// Events with one of `reasons` and, if given, that key.
    Reasons { reasons: &'static [Reason], key: Key },
    /// Different patients whose data `actor` was allowed to read (`GET` with a patient).
    PatientsReadBy(String),
    /// Break-glass grants `actor` made.
    BreakGlassGrantsBy(String),
}

/// Narrows a [`Count::Reasons`] to one account, address or actor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    Any,
    /// The event's resource (`tenant/{tenant}/users/{username}` for a login).
    Resource(String),
    /// The client's address without its port (`spin-client-addr` is `ip:port`).
    Address(String),
    Actor(String),
}

/// One rule to decide for the event just written: count, then [`Check::fires`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub tenant_id: String,
    pub rule: Rule,
    /// Whom the alert is about: an account, an address, an actor, or `*`.
    pub subject: String,
    pub count: Count,
    /// The window's length and its start (the event's time minus the length).
    pub window_secs: u64,
    pub since: i64,
    pub threshold: u64,
    /// The aligned window the event falls in: one alert per (tenant, rule, subject, bucket).
    pub bucket: i64,
}

impl Check {
    fn new(event: &Event, rule: Rule, subject: String, count: Count, limit: Limit) -> Self {
        let window = i64::try_from(limit.window_secs).unwrap_or(i64::MAX);
        Check {
            tenant_id: event.tenant_id.clone(),
            rule,
            subject,
            count,
            window_secs: limit.window_secs,
            since: event.time.saturating_sub(window),
            threshold: limit.quota,
            bucket: event.time.div_euclid(window.max(1)),
        }
    }

    /// Whether `counted` events in the window set the rule off.
    pub fn fires(&self, counted: i64) -> bool {
        u64::try_from(counted).is_ok_and(|n| n >= self.threshold)
    }

    /// The alert for `counted` events, the first of them at `first_at`, the last at `last_at`.
    pub fn alert(&self, counted: i64, first_at: i64, last_at: i64) -> Alert {
        Alert {
            tenant_id: self.tenant_id.clone(),
            rule: self.rule,
            subject: self.subject.clone(),
            count: counted,
            window_secs: self.window_secs,
            first_at,
            last_at,
            dedup: format!("{}/{}/{}", self.rule.as_str(), self.subject, self.bucket),
        }
    }
}

/// The username a login event names (`tenant/{tenant}/users/{username}`).
fn login_account(event: &Event) -> Option<&str> {
    let rest = event.resource.strip_prefix("tenant/")?;
    let (_, username) = rest.split_once("/users/")?;
    (!username.is_empty()).then_some(username)
}

fn reason_in(event: &Event, reasons: &[Reason]) -> bool {
    reasons.iter().any(|r| event.reason == *r)
}

/// The rules `event` can set off, each with what to count. Most events set off none, and
/// cost nothing more than this function.
pub fn checks(event: &Event, thresholds: &Thresholds) -> Vec<Check> {
    let mut checks = Vec::new();
    let single = Limit { quota: 1, window_secs: thresholds.repeat_secs };
    let actor = event.actor_sub.clone();
    if let Some(limit) = thresholds.failed_logins
        && event.action.starts_with("auth.")
        && reason_in(event, FAILED_LOGIN_REASONS)
    {
        let reasons = FAILED_LOGIN_REASONS;
        if let Some(account) = login_account(event) {
            let key = Key::Resource(event.resource.clone());
            checks.push(Check::new(
                event,
                Rule::FailedLoginsUser,
                account.into(),
                Count::Reasons { reasons, key },
                limit,
            ));
        }
        if let Some(address) = event.client_ip.as_deref().map(crate::ratelimit::client_ip) {
            let key = Key::Address(address.into());
            let count = Count::Reasons { reasons, key };
            checks.push(Check::new(event, Rule::FailedLoginsAddress, address.into(), count, limit));
        }
    }
    if let Some(limit) = thresholds.patients_read
        && let (Some(actor), Some(_)) = (&actor, &event.patient_id)
        && event.outcome == Some(Outcome::Allow)
        && event.action.starts_with("GET ")
    {
        checks.push(Check::new(event, Rule::PatientsRead, actor.clone(), Count::PatientsReadBy(actor.clone()), limit));
    }
    if let Some(actor) = &actor
        && event.break_glass_reason.is_some()
        && event.outcome == Some(Outcome::Allow)
    {
        checks.push(Check::new(
            event,
            Rule::BreakGlass,
            actor.clone(),
            Count::BreakGlassGrantsBy(actor.clone()),
            single,
        ));
    }
    let by_actor = |rule, reasons: &'static [Reason]| {
        let (subject, key) = match &actor {
            Some(actor) => (actor.clone(), Key::Actor(actor.clone())),
            None => ("*".to_owned(), Key::Any),
        };
        Check::new(event, rule, subject, Count::Reasons { reasons, key }, single)
    };
    if reason_in(event, REPLAY_REASONS) {
        checks.push(by_actor(Rule::OneTimeTokenReplay, REPLAY_REASONS));
    }
    if reason_in(event, REFRESH_REUSE_REASONS) {
        checks.push(by_actor(Rule::RefreshReuse, REFRESH_REUSE_REASONS));
    }
    if let Some(limit) = thresholds.signature_failures
        && reason_in(event, SIGNATURE_FAILURE_REASONS)
    {
        let count = Count::Reasons { reasons: SIGNATURE_FAILURE_REASONS, key: Key::Any };
        checks.push(Check::new(event, Rule::SignatureFailures, "*".into(), count, limit));
    }
    checks
}

/// The alert a verification that found `tenant_id`'s chain broken at `broken_seq` raises (at
/// `now`): one per tenant and break position within the repeat window.
pub fn chain_break(tenant_id: &str, broken_seq: i64, now: i64, thresholds: &Thresholds) -> Alert {
    let window = i64::try_from(thresholds.repeat_secs).unwrap_or(i64::MAX).max(1);
    let subject = format!("seq-{broken_seq}");
    Alert {
        tenant_id: tenant_id.to_owned(),
        rule: Rule::AuditChainBreak,
        dedup: format!("{}/{subject}/{}", Rule::AuditChainBreak.as_str(), now.div_euclid(window)),
        subject,
        count: 1,
        window_secs: thresholds.repeat_secs,
        first_at: now,
        last_at: now,
    }
}

/// An alert as decided: stored once per [`Alert::dedup`] within its tenant, its count raised by
/// later events of the same window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    pub tenant_id: String,
    pub rule: Rule,
    pub subject: String,
    pub count: i64,
    pub window_secs: u64,
    pub first_at: i64,
    pub last_at: i64,
    /// `{rule}/{subject}/{window index}`: the alert's identity within the tenant.
    pub dedup: String,
}

/// The subject as it leaves the platform in a webhook: the same stable pseudonym per tenant as
/// a `strict` audit export gives people (`Event::redacted`), so a receiver can group alerts and an
/// operator can line them up with a redacted export, but no username, user id or address
/// leaves. `*` (no one in particular) and a chain position stay as they are.
pub fn webhook_subject(tenant_id: &str, rule: Rule, subject: &str) -> String {
    if subject == "*" || rule == Rule::AuditChainBreak {
        return subject.to_owned();
    }
    format!("pseud-{}", &crate::sha256_hex(format!("{tenant_id}/{subject}"))[..16])
}

/// The webhook's JSON body for a stored alert: tenant, rule, pseudonymous subject, count,
/// window and the first and last event times. No patient id, name or record content, no
/// username or address.
pub fn webhook_body(id: i64, alert: &Alert) -> serde_json::Value {
    serde_json::json!({
        "id": id,
        "tenant_id": alert.tenant_id,
        "rule": alert.rule,
        "subject": webhook_subject(&alert.tenant_id, alert.rule, &alert.subject),
        "count": alert.count,
        "window_secs": alert.window_secs,
        "first_event_at": crate::rfc3339(alert.first_at),
        "last_event_at": crate::rfc3339(alert.last_at),
    })
}

/// Deliveries tried before an alert's webhook state becomes `failed`.
pub const MAX_DELIVERY_ATTEMPTS: u32 = 10;

/// Seconds to wait before the next delivery after `attempts` failed ones: `base` doubled each
/// time, at most an hour.
pub fn retry_delay(base_secs: u64, attempts: u32) -> i64 {
    let delay = base_secs.max(1).saturating_mul(1u64 << attempts.saturating_sub(1).min(16));
    i64::try_from(delay.min(3600)).unwrap_or(3600)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_767_225_600;

    fn login_failure(username: &str, address: &str) -> Event {
        Event {
            time: NOW,
            tenant_id: "t1".into(),
            action: "auth.login".into(),
            resource: format!("tenant/t1/users/{username}"),
            outcome: Some(Outcome::Deny),
            reason: Reason::BadPassword.into(),
            client_ip: Some(format!("{address}:51000")),
            ..Event::default()
        }
    }

    fn read(actor: &str, patient: &str) -> Event {
        Event {
            time: NOW,
            tenant_id: "t1".into(),
            actor_sub: Some(actor.into()),
            action: "GET /api/patients/{id}/records".into(),
            patient_id: Some(patient.into()),
            outcome: Some(Outcome::Allow),
            reason: Reason::CareTeam.into(),
            ..Event::default()
        }
    }

    fn rules(checks: &[Check]) -> Vec<Rule> {
        checks.iter().map(|c| c.rule).collect()
    }

    #[test]
    fn every_rule_has_its_own_name_and_reads_back() {
        for rule in Rule::ALL {
            assert_eq!(Rule::parse(rule.as_str()), Some(rule));
        }
        assert_eq!(Rule::parse("nope"), None);
    }

    #[test]
    fn a_failed_login_is_counted_per_account_and_per_address_without_the_port() {
        let t = Thresholds::default();
        let checks = checks(&login_failure("alice", "10.0.0.7"), &t);
        assert_eq!(rules(&checks), [Rule::FailedLoginsUser, Rule::FailedLoginsAddress]);
        assert_eq!(checks[0].subject, "alice");
        assert_eq!(
            checks[0].count,
            Count::Reasons { reasons: FAILED_LOGIN_REASONS, key: Key::Resource("tenant/t1/users/alice".into()) }
        );
        assert_eq!(checks[1].subject, "10.0.0.7");
        assert_eq!(checks[0].since, NOW - 300);
        assert!(!checks[0].fires(9) && checks[0].fires(10));
        let ok = Event { reason: Reason::TokenIssued.into(), outcome: Some(Outcome::Allow), ..login_failure("a", "b") };
        assert!(super::checks(&ok, &t).is_empty(), "a successful login sets nothing off");
    }

    #[test]
    fn reads_of_patients_are_counted_per_actor_and_only_allowed_reads() {
        let t = Thresholds::default();
        let checks = checks(&read("u-dr-grey", "p-1001"), &t);
        assert_eq!(rules(&checks), [Rule::PatientsRead]);
        assert_eq!(checks[0].count, Count::PatientsReadBy("u-dr-grey".into()));
        let denied = Event { outcome: Some(Outcome::Deny), ..read("u-dr-grey", "p-1001") };
        assert!(super::checks(&denied, &t).is_empty());
        let write = Event { action: "POST /api/patients/{id}/records".into(), ..read("u-dr-grey", "p-1") };
        assert!(super::checks(&write, &t).is_empty());
    }

    #[test]
    fn single_event_rules_fire_at_one_and_group_by_actor_within_the_repeat_window() {
        let t = Thresholds { repeat_secs: 600, ..Thresholds::default() };
        let grant = Event {
            break_glass_reason: Some("Unconscious patient".into()),
            action: "POST /api/patients/{id}/break-glass".into(),
            reason: Reason::BreakGlassRequest.into(),
            ..read("u-dr-grey", "p-1002")
        };
        let checks = checks(&grant, &t);
        assert_eq!(rules(&checks), [Rule::BreakGlass]);
        assert!(checks[0].fires(1));
        let alert = checks[0].alert(1, NOW, NOW);
        assert_eq!(alert.dedup, format!("break_glass/u-dr-grey/{}", NOW / 600));
        let replay = Event {
            time: NOW,
            tenant_id: "t1".into(),
            actor_sub: Some("acme-health".into()),
            outcome: Some(Outcome::Deny),
            reason: Reason::OneTimeTokenReplayed.into(),
            ..Event::default()
        };
        assert_eq!(rules(&super::checks(&replay, &t)), [Rule::OneTimeTokenReplay]);
        let reuse = Event { reason: Reason::RefreshReuseFamilyRevoked.into(), actor_sub: None, ..replay };
        let reuse = super::checks(&reuse, &t);
        assert_eq!((rules(&reuse), reuse[0].subject.as_str()), (vec![Rule::RefreshReuse], "*"));
    }

    #[test]
    fn signature_failures_count_in_the_events_own_chain() {
        let t = Thresholds::default();
        let forged = Event {
            time: NOW,
            tenant_id: crate::audit::NO_TENANT.into(),
            reason: "bad_signature".into(),
            ..Event::default()
        };
        let checks = checks(&forged, &t);
        assert_eq!(rules(&checks), [Rule::SignatureFailures]);
        assert_eq!(checks[0].tenant_id, "_unattributed");
        assert!(!checks[0].fires(19) && checks[0].fires(20));
    }

    #[test]
    fn thresholds_parse_from_the_variable_and_refuse_typos() {
        assert_eq!(Thresholds::parse(""), Ok(Thresholds::default()));
        let t = Thresholds::parse("failed_logins=3/60, patients_read=off repeat_secs=120").expect("parses");
        assert_eq!(t.failed_logins, Some(Limit { quota: 3, window_secs: 60 }));
        assert_eq!((t.patients_read, t.repeat_secs), (None, 120));
        assert_eq!((t.signature_failures, t.webhook_retry_secs), (Thresholds::default().signature_failures, 30));
        assert!(checks(&read("u", "p"), &t).is_empty(), "off turns the rule off");
        for (typo, named) in [
            ("failed_logins=3 per minute", "failed_logins"),
            ("failed_login=3/60", "failed_login"),
            ("repeat_secs=0", "repeat_secs"),
            ("webhook_retry_secs=soon", "webhook_retry_secs"),
            ("patients_read=5/60 patients_read=6/60", "twice"),
            ("3/60", "name=value"),
        ] {
            let error = Thresholds::parse(typo).expect_err(typo);
            assert!(error.starts_with("alerts: ") && error.contains(named), "{typo}: {error}");
        }
    }

    #[test]
    fn the_webhook_body_carries_no_account_address_or_patient() {
        let check = &checks(&login_failure("alice", "10.0.0.7"), &Thresholds::default())[1];
        let body = webhook_body(7, &check.alert(12, NOW - 100, NOW)).to_string();
        assert!(!body.contains("10.0.0.7") && !body.contains("alice"), "{body}");
        assert!(body.contains("\"rule\":\"failed_logins_address\"") && body.contains("\"count\":12"), "{body}");
        assert!(body.contains("\"first_event_at\":\"2025-12-31T23:58:20Z\""), "{body}");
        let chain = chain_break("t1", 42, NOW, &Thresholds::default());
        assert!(webhook_body(1, &chain).to_string().contains("\"subject\":\"seq-42\""));
    }

    #[test]
    fn retries_back_off_to_at_most_an_hour() {
        assert_eq!([retry_delay(5, 1), retry_delay(5, 2), retry_delay(5, 3)], [5, 10, 20]);
        assert_eq!(retry_delay(5, 40), 3600);
        assert_eq!(retry_delay(0, 1), 1);
    }
}
