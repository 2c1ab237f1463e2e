//! Alerts (issue 18, item 5): the rules of `health_core::alerts` evaluated after each audit
//! event is appended, stored in the `audit` database beside the chains, listed and
//! acknowledged by the tenant admin, counted for `/metrics`, and delivered to an optional
//! webhook through an outbox.
//!
//! - **Evaluation** runs in whichever component appended the event (gateway, `auth`, `jwks`),
//!   on the connection that appended it, after the append: the counts come from the audit table
//!   itself (indexed by tenant, reason or actor, and time), so they hold across every instance
//!   writing to it. It is best-effort: the event is already on record, so a failure here is
//!   logged (`alert_evaluation_failed`) and counted (`health_alert_evaluation_failures_total`),
//!   and the request is answered as it would have been.
//! - **One alert per window**: an alert is unique per (tenant, rule, subject, window), so a burst
//!   of events raises one alert whose count and last time grow.
//! - **Delivery** is an outbox: every alert is stored `pending` with a next attempt time; the
//!   gateway (the one component with outbound HTTP to the receiver) sends the due ones after
//!   its own request's audit write, claiming each by compare-and-set on its next attempt time
//!   so two instances do not both send it, and on failure retries with backoff
//!   (`health_core::alerts::retry_delay`) up to `MAX_DELIVERY_ATTEMPTS`. Nothing is lost while
//!   the receiver is down; delivery is at least once (a receiver that answers after the
//!   deadline gets it again).

use anyhow::Context;
use health_core::alerts::{self as rules, Alert, Check, Count, Key, Rule, Thresholds};
use health_core::audit::Event;
use spin_sdk::sqlite::Value;

use crate::db::{Migration, Sql, Step};

/// The alerts table and the audit indexes the rules count with (version 7 of the `audit`
/// schema, `audit::MIGRATIONS`).
pub const MIGRATION: Migration<'static> = Migration {
    version: 7,
    steps: &[
        Step::Sql(
            "CREATE TABLE IF NOT EXISTS alerts (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            tenant_id TEXT NOT NULL,
            rule TEXT NOT NULL,
            subject TEXT NOT NULL,
            dedup TEXT NOT NULL,
            count INTEGER NOT NULL,
            window_secs INTEGER NOT NULL,
            first_at INTEGER NOT NULL,
            last_at INTEGER NOT NULL,
            created_at INTEGER NOT NULL,
            acknowledged_at INTEGER,
            acknowledged_by TEXT,
            delivery TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at INTEGER,
            last_error TEXT,
            UNIQUE (tenant_id, dedup)
        )",
        ),
        Step::Sql("CREATE INDEX IF NOT EXISTS alerts_by_tenant ON alerts (tenant_id, id)"),
        Step::Sql("CREATE INDEX IF NOT EXISTS alerts_due ON alerts (next_attempt_at) WHERE delivery = 'pending'"),
        Step::Sql("CREATE INDEX IF NOT EXISTS audit_by_reason ON audit_events (tenant_id, reason, time)"),
        Step::Sql("CREATE INDEX IF NOT EXISTS audit_by_actor ON audit_events (tenant_id, actor_sub, time)"),
        // Evaluations that failed: the one alert counter that cannot come from the log.
        Step::Sql("CREATE TABLE IF NOT EXISTS alert_failures (name TEXT PRIMARY KEY, n INTEGER NOT NULL)"),
    ],
};

const UPSERT: &str = "INSERT INTO alerts
    (tenant_id, rule, subject, dedup, count, window_secs, first_at, last_at, created_at, delivery, next_attempt_at)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?)
    ON CONFLICT (tenant_id, dedup) DO UPDATE SET
        count = MAX(count, excluded.count),
        first_at = MIN(first_at, excluded.first_at),
        last_at = MAX(last_at, excluded.last_at)
    RETURNING id";

/// Decides every rule `event` can set off, from counts over the audit table, and stores the
/// alerts that fire (one per window). Returns the ids of the alerts raised or raised again.
pub fn evaluate<C: Sql>(conn: &C, event: &Event, thresholds: &Thresholds) -> anyhow::Result<Vec<i64>> {
    let mut raised = Vec::new();
    for check in rules::checks(event, thresholds) {
        let (counted, first, last) = count(conn, &check)?;
        if check.fires(counted) {
            raised.push(store(
                conn,
                &check.alert(counted, first.unwrap_or(event.time), last.unwrap_or(event.time)),
                event.time,
            )?);
        }
    }
    Ok(raised)
}

/// The number of events `check` counts in its window, and the first and last of their times.
fn count<C: Sql>(conn: &C, check: &Check) -> anyhow::Result<(i64, Option<i64>, Option<i64>)> {
    let tenant = Value::Text(check.tenant_id.clone());
    let since = Value::Integer(check.since);
    let (sql, params) = match &check.count {
        Count::Reasons { reasons, key } => {
            let marks = vec!["?"; reasons.len()].join(", ");
            let mut sql = format!(
                "SELECT COUNT(*) AS n, MIN(time) AS first, MAX(time) AS last FROM audit_events
                 WHERE tenant_id = ? AND reason IN ({marks}) AND time >= ?"
            );
            let mut params = vec![tenant];
            params.extend(reasons.iter().map(|r| Value::Text(r.as_str().to_owned())));
            params.push(since);
            match key {
                Key::Any => {}
                Key::Resource(resource) => {
                    sql.push_str(" AND json_extract(event, '$.resource') = ?");
                    params.push(Value::Text(resource.clone()));
                }
                Key::Address(address) => {
                    // `spin-client-addr` is `ip:port` or `[ip]:port`; the port changes per connection.
                    let prefix = if address.contains(':') { format!("[{address}]:") } else { format!("{address}:") };
                    sql.push_str(
                        " AND (json_extract(event, '$.client_ip') = ?
                           OR substr(json_extract(event, '$.client_ip'), 1, ?) = ?)",
                    );
                    params.push(Value::Text(address.clone()));
                    params.push(Value::Integer(i64::try_from(prefix.len()).unwrap_or(i64::MAX)));
                    params.push(Value::Text(prefix));
                }
                Key::Actor(actor) => {
                    sql.push_str(" AND actor_sub = ?");
                    params.push(Value::Text(actor.clone()));
                }
            }
            (sql, params)
        }
        Count::PatientsReadBy(actor) => (
            "SELECT COUNT(DISTINCT patient_id) AS n, MIN(time) AS first, MAX(time) AS last FROM audit_events
             WHERE tenant_id = ? AND actor_sub = ? AND time >= ? AND outcome = 'allow'
               AND patient_id IS NOT NULL AND action LIKE 'GET %'"
                .to_owned(),
            vec![tenant, Value::Text(actor.clone()), since],
        ),
        Count::BreakGlassGrantsBy(actor) => (
            "SELECT COUNT(*) AS n, MIN(time) AS first, MAX(time) AS last FROM audit_events
             WHERE tenant_id = ? AND actor_sub = ? AND time >= ? AND break_glass = 1 AND outcome = 'allow'
               AND reason <> 'break_glass'"
                .to_owned(),
            vec![tenant, Value::Text(actor.clone()), since],
        ),
    };
    let rows = conn
        .execute(&sql, &params)
        .with_context(|| format!("counting events for alert rule {}", check.rule.as_str()))?;
    let row = rows.rows().next();
    let get = |name: &str| row.as_ref().and_then(|r| r.get::<i64>(name));
    Ok((get("n").unwrap_or(0), get("first"), get("last")))
}

/// Stores `alert` (or raises the count of the one already stored for its window); its id.
pub fn store<C: Sql>(conn: &C, alert: &Alert, now: i64) -> anyhow::Result<i64> {
    let params = [
        Value::Text(alert.tenant_id.clone()),
        Value::Text(alert.rule.as_str().to_owned()),
        Value::Text(alert.subject.clone()),
        Value::Text(alert.dedup.clone()),
        Value::Integer(alert.count),
        Value::Integer(i64::try_from(alert.window_secs).unwrap_or(i64::MAX)),
        Value::Integer(alert.first_at),
        Value::Integer(alert.last_at),
        Value::Integer(now),
        Value::Integer(now),
    ];
    let rows = conn.execute(UPSERT, &params).with_context(|| format!("storing a {} alert", alert.rule.as_str()))?;
    rows.rows().next().and_then(|r| r.get::<i64>("id")).context("the alert upsert returned no id")
}

/// The thresholds from the component's `alerts` variable (`health_core::alerts::VARIABLE`);
/// a component not given it has the defaults.
pub fn thresholds() -> anyhow::Result<Thresholds> {
    let text = crate::var(rules::VARIABLE).unwrap_or_default();
    Thresholds::parse(&text).map_err(|e| anyhow::anyhow!("alert thresholds: {e}"))
}

/// [`evaluate`] for an event the component just appended on `conn`: best-effort, as the event
/// is already on record; a failure is logged and counted, never returned.
pub fn after_append<C: Sql>(conn: &C, event: &Event) {
    let evaluated = thresholds().and_then(|t| evaluate(conn, event, &t));
    if let Err(e) = evaluated {
        failed(conn, &e);
    }
}

/// Raises the chain-break alert for `tenant_id`, whose chain a verification found broken at
/// `broken_seq`: best-effort, like [`after_append`].
pub fn chain_broken(tenant_id: &str, broken_seq: i64, now: i64) {
    let conn = match crate::audit::open() {
        Ok(conn) => conn,
        Err(e) => return crate::log::error("alert_evaluation_failed", &e),
    };
    let stored = thresholds().and_then(|t| store(&*conn, &rules::chain_break(tenant_id, broken_seq, now, &t), now));
    if let Err(e) = stored {
        failed(&*conn, &e);
    }
}

fn failed<C: Sql>(conn: &C, error: &anyhow::Error) {
    crate::log::error("alert_evaluation_failed", error);
    let counted = conn.execute(
        "INSERT INTO alert_failures (name, n) VALUES ('evaluation', 1) ON CONFLICT (name) DO UPDATE SET n = n + 1",
        &[],
    );
    if let Err(e) = counted {
        crate::log::warn("alert_failure_not_counted", e.to_string());
    }
}

/// One stored alert as the admin API lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Stored {
    pub id: i64,
    pub rule: String,
    pub subject: String,
    pub count: i64,
    pub window_secs: i64,
    pub first_event_at: String,
    pub last_event_at: String,
    pub created_at: String,
    /// `open` or `acknowledged`.
    pub status: &'static str,
    pub acknowledged_at: Option<String>,
    pub acknowledged_by: Option<String>,
    /// Webhook delivery: `pending`, `delivered`, `failed` or `none` (no webhook set).
    pub delivery: String,
    pub delivery_attempts: i64,
}

const COLUMNS: &str = "id, rule, subject, count, window_secs, first_at, last_at, created_at, acknowledged_at,
    acknowledged_by, delivery, attempts";

fn stored(row: &spin_sdk::sqlite::Row<'_>) -> anyhow::Result<Stored> {
    let text = |name: &str| row.get::<&str>(name).map(str::to_owned);
    let time = |name: &str| row.get::<i64>(name).map(health_core::rfc3339);
    let acknowledged_at = time("acknowledged_at");
    Ok(Stored {
        id: row.get::<i64>("id").context("alert id")?,
        rule: text("rule").context("alert rule")?,
        subject: text("subject").context("alert subject")?,
        count: row.get::<i64>("count").context("alert count")?,
        window_secs: row.get::<i64>("window_secs").context("alert window")?,
        first_event_at: time("first_at").context("alert first time")?,
        last_event_at: time("last_at").context("alert last time")?,
        created_at: time("created_at").context("alert creation time")?,
        status: if acknowledged_at.is_some() { "acknowledged" } else { "open" },
        acknowledged_at,
        acknowledged_by: text("acknowledged_by"),
        delivery: text("delivery").context("alert delivery")?,
        delivery_attempts: row.get::<i64>("attempts").unwrap_or(0),
    })
}

/// A tenant's alerts matching `filter`, oldest first. The SQL is fixed text; every value is a
/// bound parameter.
pub fn list<C: Sql>(
    conn: &C,
    tenant_id: &str,
    filter: &health_core::routes::AlertFilter,
) -> anyhow::Result<Vec<Stored>> {
    let mut sql = format!("SELECT {COLUMNS} FROM alerts WHERE tenant_id = ?");
    let mut params = vec![Value::Text(tenant_id.to_owned())];
    match filter.acknowledged {
        Some(true) => sql.push_str(" AND acknowledged_at IS NOT NULL"),
        Some(false) => sql.push_str(" AND acknowledged_at IS NULL"),
        None => {}
    }
    if let Some(after) = filter.after {
        sql.push_str(" AND id > ?");
        params.push(Value::Integer(after));
    }
    sql.push_str(" ORDER BY id LIMIT ?");
    params.push(Value::Integer(i64::from(filter.limit)));
    let rows = conn.execute(&sql, &params).context("listing alerts")?;
    rows.rows().map(|r| stored(&r)).collect()
}

/// Marks a tenant's alert acknowledged by `by` at `now` (the first acknowledgement is kept);
/// the alert as it now stands, or `None` if the tenant has no alert `id`.
pub fn acknowledge<C: Sql>(conn: &C, tenant_id: &str, id: i64, by: &str, now: i64) -> anyhow::Result<Option<Stored>> {
    conn.execute(
        "UPDATE alerts SET acknowledged_at = ?, acknowledged_by = ?
         WHERE tenant_id = ? AND id = ? AND acknowledged_at IS NULL",
        &[Value::Integer(now), Value::Text(by.to_owned()), Value::Text(tenant_id.to_owned()), Value::Integer(id)],
    )
    .context("acknowledging an alert")?;
    let rows = conn
        .execute(
            &format!("SELECT {COLUMNS} FROM alerts WHERE tenant_id = ? AND id = ?"),
            &[Value::Text(tenant_id.to_owned()), Value::Integer(id)],
        )
        .context("reading an acknowledged alert")?;
    rows.rows().next().map(|r| stored(&r)).transpose()
}

/// For `/metrics`: alerts raised per rule (every rule, zero included) and failed evaluations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    pub by_rule: Vec<(Rule, i64)>,
    pub evaluation_failures: i64,
}

pub fn counters<C: Sql>(conn: &C) -> anyhow::Result<Counters> {
    let rows = conn.execute("SELECT rule, COUNT(*) AS n FROM alerts GROUP BY rule", &[]).context("counting alerts")?;
    let counted: Vec<(String, i64)> = rows
        .rows()
        .map(|r| (r.get::<&str>("rule").unwrap_or_default().to_owned(), r.get::<i64>("n").unwrap_or(0)))
        .collect();
    let by_rule = Rule::ALL
        .into_iter()
        .map(|rule| (rule, counted.iter().find(|(name, _)| name == rule.as_str()).map_or(0, |(_, n)| *n)))
        .collect();
    let failures =
        conn.execute("SELECT COALESCE(SUM(n), 0) AS n FROM alert_failures", &[]).context("counting failures")?;
    let evaluation_failures = failures.rows().next().and_then(|r| r.get::<i64>("n")).unwrap_or(0);
    Ok(Counters { by_rule, evaluation_failures })
}

/// How long a claimed delivery is left to its sender before another instance may take it.
const CLAIM_SECS: i64 = 60;
/// Deliveries one request makes at most, so a backlog costs no request more than a few sends.
const DELIVERIES_PER_REQUEST: i64 = 3;
/// How long one delivery may take.
const DELIVERY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

/// Claims up to `limit` alerts due for delivery at `now`: each row's next attempt time moved
/// forward by compare-and-set, so only one sender has it. The claimed alerts, with their ids
/// and attempts so far.
pub fn claim_due<C: Sql>(conn: &C, now: i64, limit: i64) -> anyhow::Result<Vec<(i64, i64, Alert)>> {
    let due = conn
        .execute(
            "SELECT id, next_attempt_at FROM alerts WHERE delivery = 'pending' AND next_attempt_at <= ?
             ORDER BY next_attempt_at LIMIT ?",
            &[Value::Integer(now), Value::Integer(limit)],
        )
        .context("reading due alert deliveries")?;
    let due: Vec<(i64, i64)> =
        due.rows().filter_map(|r| Some((r.get::<i64>("id")?, r.get::<i64>("next_attempt_at")?))).collect();
    let mut claimed = Vec::new();
    for (id, at) in due {
        let rows = conn
            .execute(
                "UPDATE alerts SET next_attempt_at = ? WHERE id = ? AND delivery = 'pending' AND next_attempt_at = ?
                 RETURNING tenant_id, rule, subject, dedup, count, window_secs, first_at, last_at, attempts",
                &[Value::Integer(now + CLAIM_SECS), Value::Integer(id), Value::Integer(at)],
            )
            .context("claiming an alert delivery")?;
        let Some(row) = rows.rows().next() else { continue };
        let text = |name: &str| row.get::<&str>(name).unwrap_or_default().to_owned();
        let Some(rule) = Rule::parse(&text("rule")) else { continue };
        let alert = Alert {
            tenant_id: text("tenant_id"),
            rule,
            subject: text("subject"),
            count: row.get::<i64>("count").unwrap_or(0),
            window_secs: row.get::<i64>("window_secs").and_then(|w| u64::try_from(w).ok()).unwrap_or(0),
            first_at: row.get::<i64>("first_at").unwrap_or(0),
            last_at: row.get::<i64>("last_at").unwrap_or(0),
            dedup: text("dedup"),
        };
        claimed.push((id, row.get::<i64>("attempts").unwrap_or(0), alert));
    }
    Ok(claimed)
}

/// Records the outcome of one delivery of alert `id` (its `attempts` so far): delivered, or
/// retried after [`rules::retry_delay`], or `failed` after the last attempt.
pub fn record_delivery<C: Sql>(
    conn: &C,
    id: i64,
    attempts: i64,
    outcome: Result<(), String>,
    now: i64,
    retry_base_secs: u64,
) -> anyhow::Result<()> {
    let attempts = attempts.saturating_add(1);
    let (sql, params) = match outcome {
        Ok(()) => (
            "UPDATE alerts SET delivery = 'delivered', attempts = ?, next_attempt_at = NULL, last_error = NULL WHERE id = ?",
            vec![Value::Integer(attempts), Value::Integer(id)],
        ),
        Err(error) => {
            let tries = u32::try_from(attempts).unwrap_or(u32::MAX);
            let state = if tries >= rules::MAX_DELIVERY_ATTEMPTS { "failed" } else { "pending" };
            (
                "UPDATE alerts SET delivery = ?, attempts = ?, next_attempt_at = ?, last_error = ? WHERE id = ?",
                vec![
                    Value::Text(state.to_owned()),
                    Value::Integer(attempts),
                    Value::Integer(now + rules::retry_delay(retry_base_secs, tries)),
                    Value::Text(error.chars().take(256).collect()),
                    Value::Integer(id),
                ],
            )
        }
    };
    conn.execute(sql, &params).context("recording an alert delivery")?;
    Ok(())
}

/// The gateway's part of the outbox, after its own request's audit write: sends the alerts due
/// at `now` to `alert_webhook_url` (none set: they are marked `none`, never sent). Best-effort:
/// a failure is logged and the alert stays due.
pub async fn deliver_due(now: i64) {
    if let Err(e) = try_deliver_due(now).await {
        crate::log::error("alert_delivery_failed", &e);
    }
}

async fn try_deliver_due(now: i64) -> anyhow::Result<()> {
    let conn = crate::audit::open()?;
    // The common case costs one read of a partial index, and no write lock.
    let due = conn
        .execute(
            "SELECT id FROM alerts WHERE delivery = 'pending' AND next_attempt_at <= ? LIMIT 1",
            &[Value::Integer(now)],
        )
        .context("looking for due alert deliveries")?;
    if due.rows().next().is_none() {
        return Ok(());
    }
    let url = crate::var("alert_webhook_url")?.trim().to_owned();
    if url.is_empty() {
        conn.execute(
            "UPDATE alerts SET delivery = 'none', next_attempt_at = NULL WHERE delivery = 'pending' AND next_attempt_at <= ?",
            &[Value::Integer(now)],
        )
        .context("marking alerts undeliverable")?;
        return Ok(());
    }
    let retry_base = thresholds()?.webhook_retry_secs;
    for (id, attempts, alert) in claim_due(&*conn, now, DELIVERIES_PER_REQUEST)? {
        let outcome = send(&url, &rules::webhook_body(id, &alert)).await;
        if let Err(error) = &outcome {
            crate::log::warn("alert_delivery_retried", format!("alert {id}: {error}"));
        }
        record_delivery(&*conn, id, attempts, outcome, crate::now(), retry_base)?;
    }
    Ok(())
}

/// POSTs `body` to the webhook; any answer but 2xx, no answer within the deadline, or a refused
/// request (a host not in `allowed_outbound_hosts`) is a failure.
async fn send(url: &str, body: &serde_json::Value) -> Result<(), String> {
    let request = spin_sdk::http::Request::builder()
        .method(spin_sdk::http::Method::Post)
        .uri(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .build();
    let sent = crate::deadline::within(DELIVERY_DEADLINE, spin_sdk::http::send::<_, spin_sdk::http::Response>(request))
        .await
        .map_err(|_| format!("no answer within {DELIVERY_DEADLINE:?}"))?;
    let response = sent.map_err(|e| format!("sending: {e}"))?;
    match *response.status() {
        200..=299 => Ok(()),
        status => Err(format!("the receiver answered {status}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::testing::Native;
    use health_core::Reason;
    use health_core::audit::Outcome;
    use health_core::ratelimit::Limit;

    const NOW: i64 = 1_767_225_600;

    fn migrated(dir: &tempfile::TempDir) -> Native {
        let db = Native::open(&dir.path().join("audit.db"));
        crate::db::migrate(&db, crate::audit::MIGRATIONS, |_| Ok(())).expect("migrates");
        db
    }

    fn login_failure(username: &str, port: u16, time: i64) -> Event {
        Event {
            time,
            tenant_id: "t1".into(),
            action: "auth.login".into(),
            resource: format!("tenant/t1/users/{username}"),
            outcome: Some(Outcome::Deny),
            reason: Reason::BadPassword.into(),
            client_ip: Some(format!("10.0.0.7:{port}")),
            ..Event::default()
        }
    }

    /// Appends and evaluates, as `audit::append` does.
    fn write(db: &Native, event: &Event, t: &Thresholds) -> Vec<i64> {
        crate::audit::append_to(db, event).expect("appends");
        evaluate(db, event, t).expect("evaluates")
    }

    fn thresholds() -> Thresholds {
        Thresholds {
            failed_logins: Some(Limit { quota: 3, window_secs: 300 }),
            patients_read: Some(Limit { quota: 3, window_secs: 600 }),
            ..Thresholds::default()
        }
    }

    fn all(db: &Native, tenant: &str) -> Vec<Stored> {
        list(db, tenant, &health_core::routes::AlertFilter::default()).expect("lists")
    }

    #[test]
    fn failed_logins_raise_one_alert_per_account_and_address_whose_count_grows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = migrated(&dir);
        let t = thresholds();
        assert!(write(&db, &login_failure("alice", 1, NOW), &t).is_empty());
        assert!(write(&db, &login_failure("bob", 2, NOW + 1), &t).is_empty());
        // The third failure from the address (other ports, other accounts) sets off the
        // address rule; alice's own count is 2.
        let raised = write(&db, &login_failure("alice", 3, NOW + 2), &t);
        assert_eq!(raised.len(), 1);
        let raised_again = write(&db, &login_failure("alice", 4, NOW + 3), &t);
        assert_eq!(raised_again.len(), 2, "alice's third, and the address's fourth");
        let alerts = all(&db, "t1");
        let summary: Vec<(&str, &str, i64)> =
            alerts.iter().map(|a| (a.rule.as_str(), a.subject.as_str(), a.count)).collect();
        assert_eq!(summary, [("failed_logins_address", "10.0.0.7", 4), ("failed_logins_user", "alice", 3)]);
        assert_eq!(alerts[0].first_event_at, health_core::rfc3339(NOW));
        assert_eq!(alerts[0].last_event_at, health_core::rfc3339(NOW + 3));
        assert!(all(&db, "t2").is_empty(), "another tenant sees none");
        // Outside the window the old failures no longer count.
        assert!(write(&db, &login_failure("carol", 5, NOW + 1000), &t).is_empty());
    }

    #[test]
    fn a_reader_of_many_patients_is_counted_by_distinct_patients() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = migrated(&dir);
        let t = thresholds();
        let read = |patient: &str, time| Event {
            time,
            tenant_id: "t1".into(),
            actor_sub: Some("u-dr-grey".into()),
            action: "GET /api/patients/{id}/records".into(),
            patient_id: Some(patient.into()),
            outcome: Some(Outcome::Allow),
            reason: Reason::CareTeam.into(),
            ..Event::default()
        };
        for (i, patient) in ["p-1", "p-1", "p-2", "p-2"].iter().enumerate() {
            assert!(write(&db, &read(patient, NOW + i as i64), &t).is_empty(), "two patients only");
        }
        assert_eq!(write(&db, &read("p-3", NOW + 9), &t).len(), 1);
        let alerts = all(&db, "t1");
        assert_eq!(
            (alerts[0].rule.as_str(), alerts[0].subject.as_str(), alerts[0].count),
            ("patients_read", "u-dr-grey", 3)
        );
    }

    #[test]
    fn acknowledging_keeps_the_first_acknowledgement_and_filters_by_status() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = migrated(&dir);
        let alert = rules::chain_break("t1", 5, NOW, &Thresholds::default());
        let id = store(&db, &alert, NOW).expect("stored");
        assert_eq!(store(&db, &alert, NOW + 1).expect("same window"), id);
        assert_eq!(acknowledge(&db, "t2", id, "u-other", NOW).expect("reads"), None, "another tenant's");
        let acked = acknowledge(&db, "t1", id, "u-admin", NOW + 5).expect("reads").expect("found");
        assert_eq!((acked.status, acked.acknowledged_by.as_deref()), ("acknowledged", Some("u-admin")));
        let again = acknowledge(&db, "t1", id, "u-admin-2", NOW + 9).expect("reads").expect("found");
        assert_eq!(again.acknowledged_by.as_deref(), Some("u-admin"));
        let open = health_core::routes::AlertFilter { acknowledged: Some(false), ..Default::default() };
        assert!(list(&db, "t1", &open).expect("lists").is_empty());
        let counters = counters(&db).expect("counts");
        assert!(
            counters.by_rule.contains(&(Rule::AuditChainBreak, 1)) && counters.by_rule.contains(&(Rule::BreakGlass, 0))
        );
    }

    #[test]
    fn a_delivery_is_claimed_once_and_retried_with_backoff_until_it_fails_for_good() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = migrated(&dir);
        let id = store(&db, &rules::chain_break("t1", 5, NOW, &Thresholds::default()), NOW).expect("stored");
        let claimed = claim_due(&db, NOW, 3).expect("claims");
        assert_eq!(claimed.iter().map(|c| c.0).collect::<Vec<_>>(), [id]);
        assert!(claim_due(&db, NOW, 3).expect("claims").is_empty(), "claimed by the first sender");
        record_delivery(&db, id, 0, Err("receiver down".into()), NOW, 2).expect("records");
        assert!(claim_due(&db, NOW + 1, 3).expect("claims").is_empty(), "not due before its delay");
        let retried = claim_due(&db, NOW + 2, 3).expect("claims");
        assert_eq!(retried[0].1, 1, "one attempt so far");
        record_delivery(&db, id, 1, Ok(()), NOW + 2, 2).expect("records");
        assert_eq!(all(&db, "t1")[0].delivery, "delivered");
        assert!(claim_due(&db, NOW + 10_000, 3).expect("claims").is_empty());
        let other = store(&db, &rules::chain_break("t1", 6, NOW, &Thresholds::default()), NOW).expect("stored");
        let last = i64::from(rules::MAX_DELIVERY_ATTEMPTS) - 1;
        record_delivery(&db, other, last, Err("still down".into()), NOW, 2).expect("records");
        let failed = all(&db, "t1").into_iter().find(|a| a.id == other).expect("kept");
        assert_eq!((failed.delivery.as_str(), failed.delivery_attempts), ("failed", last + 1));
    }
}
