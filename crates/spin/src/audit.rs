//! Appends events to the `audit` SQLite database: append-only (triggers refuse UPDATE and
//! DELETE) and hash-chained per tenant. An append reads the tenant's chain head and inserts the
//! next link with `ON CONFLICT DO NOTHING RETURNING` on `(tenant_id, seq)`: the insert lands only
//! if no other writer took that place, so a link always follows the head it was hashed with. The
//! first try is those two statements alone, which holds the write lock for one statement; a try
//! that lost the race (or failed) is repeated inside `BEGIN IMMEDIATE`, so concurrent writers
//! (other instances, other `spin up` processes on the same file) then queue on the write lock
//! instead of racing again. Never overwritten, never dropped: a writer that cannot append
//! returns an error and its request fails.
//!
//! That append is one function over [`Sql`] ([`append_to`]), tested natively on real SQLite with
//! concurrent connections. Code that only records events takes an [`AuditSink`]: [`Database`]
//! (the instance's `audit` database) in a component, [`Sqlite`] over any open connection, or
//! [`Memory`] in a component's native tests. Queries, exports and counters read the database
//! directly; they are not part of the sink.

use anyhow::Context;
use health_core::audit::{Event, GENESIS, StoredLink, link};
use spin_sdk::sqlite::{Connection, Value};

use crate::db::{self, Migration, Retry, Sql, Step};

/// The audit database label in spin.toml.
pub const DATABASE: &str = "audit";

/// The schema, one entry per version (see [`db::migrate`]).
pub const MIGRATIONS: &[Migration<'static>] = &[
    Migration {
        version: 1,
        steps: &[
            Step::Sql(
                "CREATE TABLE IF NOT EXISTS audit_events (
                tenant_id TEXT NOT NULL,
                seq INTEGER NOT NULL,
                time INTEGER NOT NULL,
                actor_sub TEXT,
                jti TEXT,
                patient_id TEXT,
                outcome TEXT,
                reason TEXT NOT NULL,
                status INTEGER NOT NULL,
                event TEXT NOT NULL,
                prev_hash TEXT NOT NULL,
                hash TEXT NOT NULL,
                PRIMARY KEY (tenant_id, seq)
            )",
            ),
            Step::Sql("CREATE INDEX IF NOT EXISTS audit_by_time ON audit_events (tenant_id, time)"),
            Step::Sql(
                "CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit_events
                BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END",
            ),
            Step::Sql(
                "CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit_events
                BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END",
            ),
        ],
    },
    // The ledger of spent one-time tokens (see `tokens::spend_once`).
    Migration {
        version: 2,
        steps: &[Step::Sql(
            "CREATE TABLE IF NOT EXISTS spent_tokens (
            jti TEXT PRIMARY KEY,
            tenant_id TEXT NOT NULL,
            spent_at INTEGER NOT NULL,
            expires_at INTEGER NOT NULL
        )",
        )],
    },
    // The route template (bounded, for metrics and queries) and the break-glass flag (for the
    // admin review queue) as columns beside the hashed event.
    Migration {
        version: 3,
        steps: &[
            Step::AddColumn { table: "audit_events", column: "action", definition: "TEXT" },
            Step::AddColumn { table: "audit_events", column: "break_glass", definition: "INTEGER NOT NULL DEFAULT 0" },
            Step::Sql("CREATE INDEX IF NOT EXISTS audit_by_action ON audit_events (action, outcome)"),
            Step::Sql(
                "CREATE INDEX IF NOT EXISTS audit_break_glass ON audit_events (tenant_id, seq) WHERE break_glass = 1",
            ),
        ],
    },
    // Tokens already verified in full, by SHA-256 of the token (see `tokens::verify`).
    Migration {
        version: 4,
        steps: &[
            Step::Sql(
                "CREATE TABLE IF NOT EXISTS verified_tokens (
                token_hash TEXT PRIMARY KEY,
                kid TEXT NOT NULL,
                claims TEXT NOT NULL,
                expires_at INTEGER NOT NULL
            )",
            ),
            Step::Sql("CREATE INDEX IF NOT EXISTS verified_tokens_by_expiry ON verified_tokens (expires_at)"),
        ],
    },
    // Rate-limit counters, one row per (class, window, client or subject) (see `ratelimit`).
    Migration {
        version: 5,
        steps: &[
            Step::Sql(
                "CREATE TABLE IF NOT EXISTS rate_counters (
                key TEXT PRIMARY KEY,
                window_end INTEGER NOT NULL,
                n INTEGER NOT NULL
            )",
            ),
            Step::Sql("CREATE INDEX IF NOT EXISTS rate_counters_by_end ON rate_counters (window_end)"),
        ],
    },
    // The gateway's time to answer, for the latency histograms (`Event::duration_ms`).
    Migration {
        version: 6,
        steps: &[Step::AddColumn { table: "audit_events", column: "duration_ms", definition: "INTEGER" }],
    },
    // Alerts, and the indexes their rules count with (see `alerts`).
    crate::alerts::MIGRATION,
];

const HEAD: &str = "SELECT seq, hash FROM audit_events WHERE tenant_id = ? ORDER BY seq DESC LIMIT 1";
const INSERT: &str = "INSERT INTO audit_events
    (tenant_id, seq, time, actor_sub, jti, patient_id, outcome, reason, status, event, prev_hash, hash, action, break_glass,
     duration_ms)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT DO NOTHING RETURNING seq";
const CHAIN: &str = "SELECT seq, event, prev_hash, hash FROM audit_events WHERE tenant_id = ? ORDER BY seq";

/// The instance's connection to the audit database, schema checked (see [`db::shared`]).
pub fn open() -> anyhow::Result<std::rc::Rc<Connection>> {
    db::shared(DATABASE, |conn| db::migrate(conn, MIGRATIONS, |_| Ok(())))
}

fn opt(value: &Option<String>) -> Value {
    value.as_ref().map_or(Value::Null, |v| Value::Text(v.clone()))
}

/// A new event for a request from outside: time, a fresh request id, the client's address and
/// user agent (capped), attributed to no tenant until the handler knows which.
pub fn request_event(req: &spin_sdk::http::Request, now: i64) -> Event {
    let header = |name| req.header(name).and_then(|v| v.as_str());
    Event {
        time: now,
        request_id: crate::random_id(),
        tenant_id: health_core::audit::NO_TENANT.into(),
        client_ip: header("spin-client-addr").map(str::to_owned),
        user_agent: header("user-agent").map(|s| s.chars().take(256).collect()),
        ..Event::default()
    }
}

/// The reason of an event written before a mutating request is forwarded (see [`pending`]).
pub const PENDING: &str = "pending_forward";

/// The event a gateway writes before it forwards a mutating request: the request as known so
/// far, no outcome, status 0. Its outcome follows as a second event with the same request id.
/// The break-glass reason stays with the outcome event (one entry in the review queue).
pub fn pending(event: &Event) -> Event {
    Event { outcome: None, reason: PENDING.into(), status: 0, break_glass_reason: None, ..event.clone() }
}

/// Where a component records what it did: one operation, failing closed. An `Err` means the
/// event was not recorded, and the caller must fail its request (no unaudited access).
pub trait AuditSink {
    /// Appends `event` to its tenant's chain.
    fn append(&self, event: &Event) -> anyhow::Result<()>;
}

/// The instance's `audit` database (see [`open`]): the sink every component writes to.
#[derive(Debug, Clone, Copy, Default)]
pub struct Database;

impl AuditSink for Database {
    fn append(&self, event: &Event) -> anyhow::Result<()> {
        append(event)
    }
}

/// The chains in the `audit` schema over an open connection ([`append_to`]).
#[derive(Debug, Clone, Copy)]
pub struct Sqlite<'c, C>(pub &'c C);

impl<C: Sql> AuditSink for Sqlite<'_, C> {
    fn append(&self, event: &Event) -> anyhow::Result<()> {
        append_to(self.0, event)
    }
}

/// A sink in memory, for components' native tests: keeps every event in the order appended, or,
/// made with [`Memory::failing`], refuses every one as an audit database that cannot be written
/// does, so a test can check that the request then fails.
#[derive(Debug, Default)]
pub struct Memory {
    events: std::sync::Mutex<Vec<Event>>,
    failing: bool,
}

impl Memory {
    /// A sink that refuses every event.
    pub fn failing() -> Self {
        Self { failing: true, ..Self::default() }
    }

    /// The events appended so far, in order.
    pub fn events(&self) -> Vec<Event> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Event>> {
        // A push cannot be left half-done by a panicking holder.
        self.events.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl AuditSink for Memory {
    fn append(&self, event: &Event) -> anyhow::Result<()> {
        anyhow::ensure!(!self.failing, "audit append for tenant {:?}: the test sink refuses it", event.tenant_id);
        self.lock().push(event.clone());
        Ok(())
    }
}

/// Appends `event` to its tenant's chain. An error means the event was not recorded, and the
/// caller must fail the request (no unaudited access). With the component's `audit_sink`
/// variable at `console`, the recorded event is also written to standard output as one JSON
/// line for a SIEM ([`console_line`]); `database` (the default) writes only the chain.
pub fn append(event: &Event) -> anyhow::Result<()> {
    let conn = open()?;
    append_to(&*conn, event)?;
    // On record now; the alert rules are best-effort from here (`alerts`).
    crate::alerts::after_append(&*conn, event);
    match crate::var("audit_sink")?.trim() {
        "database" => {}
        "console" => println!("{}", console_line(event, redaction()?)),
        other => anyhow::bail!("audit_sink must be database or console, not {other:?}"),
    }
    Ok(())
}

/// The component's `audit_redaction` variable: whether events leave the database redacted
/// (`strict`, see `Event::redacted`) or whole (`none`).
fn redaction() -> anyhow::Result<bool> {
    match crate::var("audit_redaction")?.trim() {
        "none" => Ok(false),
        "strict" => Ok(true),
        other => anyhow::bail!("audit_redaction must be none or strict, not {other:?}"),
    }
}

/// An event as the console sink writes it: one JSON object on one line, `{"log":"audit",
/// "time":..,"event":{..}}`, redacted under the same rule as exports.
pub fn console_line(event: &Event, strict: bool) -> String {
    let event = if strict { event.clone().redacted() } else { event.clone() };
    serde_json::json!({ "log": "audit", "time": health_core::rfc3339(event.time), "event": event }).to_string()
}

/// [`append`] on an open connection. The first try is two statements, each later try one
/// transaction; every try is safe to repeat: a failed one leaves nothing behind. (Over a remote backend, a commit whose answer is lost and then
/// retried appends the event twice, as two intact links: a duplicate, never a gap.)
pub fn append_to<C: Sql>(conn: &C, event: &Event) -> anyhow::Result<()> {
    let json = serde_json::to_string(event).context("encoding audit event")?;
    // Without a writer in the way, two statements: read the head, insert after it. The insert
    // lands only if no one took that `seq` meanwhile, and links are never changed, so what it
    // links to is still the head. A lost race or an error queues on the write lock instead.
    match append_once(conn, event, &json) {
        Ok(Some(())) => return Ok(()),
        Ok(None) => {}
        Err(e) => crate::log::warn("audit_append_retried", format!("{e:#}")),
    }
    Retry::WRITE
        .run("appending an audit event", || db::transaction(conn, |conn| append_once(conn, event, &json)))
        .with_context(|| format!("audit append for tenant {:?}", event.tenant_id))
}

/// Reads the chain head and inserts the next link; `None` if another writer took that `seq`.
fn append_once<C: Sql>(conn: &C, event: &Event, json: &str) -> anyhow::Result<Option<()>> {
    let outcome = event.outcome.map(|o| o.as_str().to_owned());
    let head = conn.execute(HEAD, &[Value::Text(event.tenant_id.clone())]).context("reading audit chain head")?;
    let (seq, prev) = head
        .rows()
        .next()
        .map(|r| (r.get::<i64>("seq").unwrap_or(0), r.get::<&str>("hash").unwrap_or(GENESIS).to_owned()))
        .unwrap_or((0, GENESIS.to_owned()));
    let hash = link(&prev, json);
    let params = [
        Value::Text(event.tenant_id.clone()),
        Value::Integer(seq + 1),
        Value::Integer(event.time),
        opt(&event.actor_sub),
        opt(&event.jti),
        opt(&event.patient_id),
        opt(&outcome),
        Value::Text(event.reason.clone()),
        Value::Integer(i64::from(event.status)),
        Value::Text(json.to_owned()),
        Value::Text(prev),
        Value::Text(hash),
        Value::Text(event.action.clone()),
        Value::Integer(i64::from(event.flags_break_glass())),
        event.duration_ms.map_or(Value::Null, Value::Integer),
    ];
    let inserted = conn.execute(INSERT, &params).context("appending audit event")?;
    Ok(inserted.rows().next().map(|_| ()))
}

/// The answer to a chain verification (`GET /api/admin/audit/verify` at the gateway, `GET
/// /admin/audit/verify/{tenant}` at `jwks`): `tenant_id`'s chain re-hashed from its first
/// event, `{"intact": true, "events"}`, or `{"intact": false, "events", "broken_at"}` with the
/// chain-break alert raised.
pub fn verify_report(tenant_id: &str, now: i64) -> anyhow::Result<serde_json::Value> {
    let links = chain(tenant_id)?;
    Ok(match health_core::audit::verify_chain(&links) {
        Ok(events) => serde_json::json!({ "tenant_id": tenant_id, "intact": true, "events": events }),
        Err(broken) => {
            crate::alerts::chain_broken(tenant_id, broken.seq, now);
            serde_json::json!({
                "tenant_id": tenant_id, "intact": false, "events": links.len(), "broken_at": broken.seq
            })
        }
    })
}

/// Reads one tenant's chain in order, for verification.
pub fn chain(tenant_id: &str) -> anyhow::Result<Vec<StoredLink>> {
    let conn = open()?;
    let rows = conn.execute(CHAIN, &[Value::Text(tenant_id.to_owned())]).context("reading audit chain")?;
    Ok(rows
        .rows()
        .map(|r| StoredLink {
            seq: r.get::<i64>("seq").unwrap_or(-1),
            event_json: r.get::<&str>("event").unwrap_or_default().to_owned(),
            prev_hash: r.get::<&str>("prev_hash").unwrap_or_default().to_owned(),
            hash: r.get::<&str>("hash").unwrap_or_default().to_owned(),
        })
        .collect())
}

/// One stored event as an admin query returns it: its place in the chain and the event.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Stored {
    pub seq: i64,
    pub hash: String,
    pub event: Event,
}

/// Which rows of one tenant's chain a query reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    /// Every event matching the filter.
    All,
    /// Only the break-glass review queue (grants and the accesses they allowed).
    BreakGlass,
}

/// A tenant's events matching `filter`, in chain order, at most `filter.limit`. The SQL is
/// fixed text; every filter value is a bound parameter.
pub fn query(
    tenant_id: &str,
    filter: &health_core::routes::AuditFilter,
    selection: Selection,
) -> anyhow::Result<Vec<Stored>> {
    let mut sql = String::from("SELECT seq, hash, event FROM audit_events WHERE tenant_id = ?");
    let mut params = vec![Value::Text(tenant_id.to_owned())];
    let mut condition = |clause: &str, value: Value| {
        sql.push_str(clause);
        params.push(value);
    };
    if let Some(from) = filter.from {
        condition(" AND time >= ?", Value::Integer(from));
    }
    if let Some(to) = filter.to {
        condition(" AND time <= ?", Value::Integer(to));
    }
    if let Some(after) = filter.after {
        condition(" AND seq > ?", Value::Integer(after));
    }
    if let Some(actor) = &filter.actor {
        condition(" AND actor_sub = ?", Value::Text(actor.to_string()));
    }
    if let Some(patient) = &filter.patient {
        condition(" AND patient_id = ?", Value::Text(patient.to_string()));
    }
    if let Some(jti) = &filter.jti {
        condition(" AND jti = ?", Value::Text(jti.to_string()));
    }
    if let Some(outcome) = filter.outcome {
        condition(" AND outcome = ?", Value::Text(outcome.to_owned()));
    }
    if selection == Selection::BreakGlass {
        sql.push_str(" AND break_glass = 1");
    }
    sql.push_str(" ORDER BY seq LIMIT ?");
    params.push(Value::Integer(i64::from(filter.limit)));
    let conn = open()?;
    let rows = conn.execute(&sql, &params).context("querying audit events")?;
    rows.rows()
        .map(|r| {
            let event = r.get::<&str>("event").context("audit event text")?;
            Ok(Stored {
                seq: r.get::<i64>("seq").context("audit seq")?,
                hash: r.get::<&str>("hash").context("audit hash")?.to_owned(),
                event: serde_json::from_str(event).context("decoding stored audit event")?,
            })
        })
        .collect()
}

/// One chain's events matching `filter` as NDJSON (`{"seq","hash","event"}` per line, in chain
/// order), redacted when the component's `audit_redaction` variable is `strict`: the tenant
/// admin's export through the gateway and the operator's through `jwks` alike.
pub fn export_ndjson(tenant_id: &str, filter: &health_core::routes::AuditFilter) -> anyhow::Result<Vec<u8>> {
    let strict = redaction()?;
    let mut ndjson = Vec::new();
    for stored in query(tenant_id, filter, Selection::All)? {
        let event = if strict { stored.event.redacted() } else { stored.event };
        let line = serde_json::json!({ "seq": stored.seq, "hash": stored.hash, "event": event });
        serde_json::to_writer(&mut ndjson, &line)?;
        ndjson.push(b'\n');
    }
    Ok(ndjson)
}

/// Counters for `/metrics`, derived from the append-only log itself, so they cost the request
/// path nothing and cannot drift from what was audited.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// (route template, outcome, count) of API requests through the gateway.
    pub requests: Vec<(String, String, i64)>,
    /// Gateway requests refused with 401.
    pub auth_failures: i64,
    /// (reason, count) of token and field decryption failures.
    pub decrypt_failures: Vec<(String, i64)>,
    /// Break-glass grants made.
    pub break_glass_grants: i64,
    /// Accesses allowed only by a break-glass grant.
    pub break_glass_accesses: i64,
    /// (route template or `auth.` endpoint, count) of requests refused by a rate limit.
    pub rate_limited: Vec<(String, i64)>,
    /// The gateway's time to answer, per route template.
    pub latency: Vec<Latency>,
}

/// Upper bounds (ms) of the latency histogram's buckets, as Prometheus' `le` (in seconds).
pub const LATENCY_BUCKETS_MS: [i64; 11] = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000];

/// One route template's latency histogram.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Latency {
    pub route: String,
    /// Requests answered within each bound of [`LATENCY_BUCKETS_MS`] (cumulative).
    pub within: Vec<i64>,
    pub count: i64,
    pub sum_ms: i64,
}

/// Every route's histogram in one pass over the log (rows written before durations were
/// recorded have none and are left out).
fn latency<C: Sql>(conn: &C) -> anyhow::Result<Vec<Latency>> {
    let buckets: Vec<String> =
        LATENCY_BUCKETS_MS.iter().enumerate().map(|(i, ms)| format!("SUM(duration_ms <= {ms}) AS b{i}")).collect();
    let sql = format!(
        "SELECT action, COUNT(*) AS n, SUM(duration_ms) AS total, {} FROM audit_events
         WHERE duration_ms IS NOT NULL AND action LIKE '% /api/%' GROUP BY action ORDER BY action",
        buckets.join(", ")
    );
    let rows = conn.execute(&sql, &[]).context("reading latency histograms")?;
    Ok(rows
        .rows()
        .map(|r| Latency {
            route: r.get::<&str>("action").unwrap_or_default().to_owned(),
            within: (0..LATENCY_BUCKETS_MS.len())
                .map(|i| r.get::<i64>(format!("b{i}").as_str()).unwrap_or(0))
                .collect(),
            count: r.get::<i64>("n").unwrap_or(0),
            sum_ms: r.get::<i64>("total").unwrap_or(0),
        })
        .collect())
}

/// Reasons that count as decryption failures.
pub const DECRYPT_FAILURE_REASONS: [&str; 2] = ["jwe_decryption_failed", "phi_decrypt_failed"];

pub fn counters() -> anyhow::Result<Counters> {
    const REQUESTS: &str = "SELECT action, COALESCE(outcome, 'none') AS outcome, COUNT(*) AS n FROM audit_events
        WHERE action LIKE '% /api/%' AND reason <> 'pending_forward' GROUP BY action, outcome
        ORDER BY action, outcome";
    const AUTH: &str = "SELECT COUNT(*) AS n FROM audit_events WHERE action LIKE '% /api/%' AND status = 401";
    const DECRYPT: &str = "SELECT reason, COUNT(*) AS n FROM audit_events WHERE reason IN (?, ?) GROUP BY reason";
    const BREAK_GLASS: &str = "SELECT SUM(CASE WHEN reason = 'break_glass' THEN 0 ELSE 1 END) AS grants,
        SUM(CASE WHEN reason = 'break_glass' THEN 1 ELSE 0 END) AS accesses
        FROM audit_events WHERE break_glass = 1 AND outcome = 'allow'";
    let conn = open()?;
    let count = |sql: &str, params: &[Value]| -> anyhow::Result<Vec<(String, String, i64)>> {
        let rows = conn.execute(sql, params).context("reading audit counters")?;
        Ok(rows
            .rows()
            .map(|r| {
                let text = |name: &str| r.get::<&str>(name).unwrap_or_default().to_owned();
                (text("action"), text("outcome"), r.get::<i64>("n").unwrap_or(0))
            })
            .collect())
    };
    let requests = count(REQUESTS, &[])?;
    let auth_failures = count(AUTH, &[])?.first().map_or(0, |r| r.2);
    let decrypt = conn
        .execute(DECRYPT, &DECRYPT_FAILURE_REASONS.map(|r| Value::Text(r.to_owned())))
        .context("reading decrypt failures")?;
    let decrypt_failures = decrypt
        .rows()
        .map(|r| (r.get::<&str>("reason").unwrap_or_default().to_owned(), r.get::<i64>("n").unwrap_or(0)))
        .collect();
    const RATE_LIMITED: &str = "SELECT action, '' AS outcome, COUNT(*) AS n FROM audit_events WHERE reason = 'rate_limited' GROUP BY action ORDER BY action";
    let rate_limited = count(RATE_LIMITED, &[])?.into_iter().map(|(action, _, n)| (action, n)).collect();
    let break_glass = conn.execute(BREAK_GLASS, &[]).context("reading break-glass counters")?;
    let row = break_glass.rows().next();
    let sum = |name: &str| row.as_ref().and_then(|r| r.get::<i64>(name)).unwrap_or(0);
    Ok(Counters {
        requests,
        auth_failures,
        decrypt_failures,
        break_glass_grants: sum("grants"),
        break_glass_accesses: sum("accesses"),
        rate_limited,
        latency: latency(&*conn)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::testing::Native;

    fn event(tenant: &str, reason: &str) -> Event {
        Event { tenant_id: tenant.into(), reason: reason.into(), time: 1_767_225_600, ..Event::default() }
    }

    fn stored_chain(db: &Native, tenant: &str) -> Vec<StoredLink> {
        let rows = db.execute(CHAIN, &[Value::Text(tenant.into())]).expect("chain");
        rows.rows()
            .map(|r| StoredLink {
                seq: r.get::<i64>("seq").unwrap_or(-1),
                event_json: r.get::<&str>("event").unwrap_or_default().to_owned(),
                prev_hash: r.get::<&str>("prev_hash").unwrap_or_default().to_owned(),
                hash: r.get::<&str>("hash").unwrap_or_default().to_owned(),
            })
            .collect()
    }

    fn migrated(path: &std::path::Path) -> Native {
        let db = Native::open(path);
        db::configure(&db);
        db::migrate(&db, MIGRATIONS, |_| Ok(())).expect("migrates");
        db
    }

    #[test]
    fn latency_histograms_count_each_route_cumulatively_and_leave_out_rows_without_a_duration() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = migrated(&dir.path().join("audit.db"));
        let read = "GET /api/patients/{id}/records";
        for (action, duration) in [(read, Some(3)), (read, Some(40)), (read, Some(20_000)), (read, None)] {
            let event = Event { action: action.into(), duration_ms: duration, ..event("t1", "care_team") };
            append_to(&db, &event).expect("appends");
        }
        let other = Event { action: "POST /auth/login".into(), duration_ms: Some(1), ..event("t1", "ok") };
        append_to(&db, &other).expect("appends");
        let histograms = latency(&db).expect("histograms");
        assert_eq!(histograms.len(), 1, "only API routes: {histograms:?}");
        let h = &histograms[0];
        assert_eq!((h.route.as_str(), h.count, h.sum_ms), (read, 3, 20_043));
        assert_eq!(h.within, [1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2]);
        let stored = db.text("SELECT event FROM audit_events WHERE seq = 1");
        assert!(!stored.contains("duration"), "the duration stays out of the hashed event: {stored}");
    }

    #[test]
    fn the_console_line_is_one_json_line_redacted_as_exports_are() {
        let event = Event {
            actor_sub: Some("u-dr-grey".into()),
            patient_id: Some("p-1001".into()),
            client_ip: Some("10.0.0.7".into()),
            resource: "/api/patients/p-1001/records".into(),
            ..event("t1", "care_team")
        };
        let whole = console_line(&event, false);
        let strict = console_line(&event, true);
        for line in [&whole, &strict] {
            assert!(!line.contains('\n'));
            let value: serde_json::Value = serde_json::from_str(line).expect("JSON");
            assert_eq!((value["log"].as_str(), value["event"]["reason"].as_str()), (Some("audit"), Some("care_team")));
        }
        assert!(whole.contains("p-1001") && whole.contains("10.0.0.7"));
        assert!(
            !strict.contains("p-1001") && !strict.contains("u-dr-grey") && !strict.contains("10.0.0.7"),
            "{strict}"
        );
    }

    #[test]
    fn migrations_are_in_version_order_up_to_seven() {
        let versions: Vec<i64> = MIGRATIONS.iter().map(|m| m.version).collect();
        assert_eq!(versions, [1, 2, 3, 4, 5, 6, 7]);
    }

    #[test]
    fn a_version_two_database_of_an_earlier_release_gains_the_columns_and_keeps_its_events() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.db");
        let old = Native::open(&path);
        // What the user_version-based release left at version 2 (the version 1 and 2 statements).
        for migration in &MIGRATIONS[..2] {
            for step in migration.steps {
                let db::Step::Sql(sql) = step else { panic!("versions 1 and 2 are plain SQL") };
                old.0.execute_batch(sql).expect("old schema");
            }
        }
        old.0
            .execute_batch(
                "INSERT INTO audit_events (tenant_id, seq, time, reason, status, event, prev_hash, hash)
                 VALUES ('t', 1, 0, 'old', 200, '{}', 'x', 'y'); PRAGMA user_version = 2;",
            )
            .expect("old row");
        drop(old);
        let db = migrated(&path);
        assert_eq!(db.integer("SELECT COUNT(*) FROM audit_events"), 1);
        assert_eq!(db.integer("SELECT break_glass FROM audit_events"), 0);
        assert_eq!(db.integer("SELECT MAX(version) FROM schema_migrations"), 7);
        assert_eq!(db.integer("SELECT COUNT(*) FROM sqlite_master WHERE name = 'verified_tokens'"), 1);
    }

    #[test]
    fn appends_link_each_event_to_the_one_before() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = migrated(&dir.path().join("audit.db"));
        for reason in ["a", "b", "c"] {
            append_to(&db, &event("t1", reason)).expect("appends");
        }
        append_to(&db, &event("t2", "other tenant")).expect("appends");
        let chain = stored_chain(&db, "t1");
        assert_eq!(chain.iter().map(|l| l.seq).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(health_core::audit::verify_chain(&chain), Ok(3));
        assert_eq!(stored_chain(&db, "t2").len(), 1);
    }

    fn reasons(chain: &[StoredLink]) -> Vec<String> {
        chain.iter().map(|l| serde_json::from_str::<Event>(&l.event_json).expect("event").reason).collect()
    }

    #[test]
    fn concurrent_appends_from_separate_connections_keep_every_event_once_and_each_chain_intact() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.db");
        drop(migrated(&path));
        let (writers, each) = (8, 25);
        std::thread::scope(|scope| {
            for w in 0..writers {
                let path = &path;
                scope.spawn(move || {
                    // A connection per writer, opened as Spin opens one per component instance.
                    let db = Native::open(path);
                    db::configure(&db);
                    let sink = Sqlite(&db);
                    for i in 0..each {
                        // Two tenants' chains written at once: each is its own sequence.
                        let tenant = if (w + i) % 2 == 0 { "t1" } else { "t2" };
                        sink.append(&event(tenant, &format!("w{w}-{i}"))).expect("no event is dropped");
                    }
                });
            }
        });
        let db = Native::open(&path);
        let (t1, t2) = (stored_chain(&db, "t1"), stored_chain(&db, "t2"));
        // `verify_chain` also requires seq 1, 2, 3, ... without a gap.
        assert_eq!(health_core::audit::verify_chain(&t1), Ok(t1.len()));
        assert_eq!(health_core::audit::verify_chain(&t2), Ok(t2.len()));
        let mut appended: Vec<String> = reasons(&t1).into_iter().chain(reasons(&t2)).collect();
        appended.sort();
        let mut expected: Vec<String> =
            (0..writers).flat_map(|w| (0..each).map(move |i| format!("w{w}-{i}"))).collect();
        expected.sort();
        assert_eq!(appended, expected, "every event exactly once");
        assert_eq!(t1.len(), writers * each / 2);
    }

    #[test]
    fn the_memory_sink_keeps_events_in_order_or_refuses_them_all() {
        let sink = Memory::default();
        sink.append(&event("t1", "a")).expect("kept");
        sink.append(&event("t2", "b")).expect("kept");
        assert_eq!(sink.events().iter().map(|e| e.reason.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        let failing = Memory::failing();
        let error = failing.append(&event("t1", "lost?")).expect_err("refused");
        assert!(format!("{error}").contains("\"t1\""), "{error}");
        assert!(failing.events().is_empty());
    }

    /// A connection on which another writer appends between this writer's head read and its
    /// insert, once: the race the first, transactionless try can lose.
    struct Overtaken<'a> {
        db: Native,
        other: &'a Native,
        raced: std::cell::Cell<bool>,
    }

    impl Sql for Overtaken<'_> {
        fn execute(
            &self,
            sql: &str,
            params: &[Value],
        ) -> Result<spin_sdk::sqlite::QueryResult, spin_sdk::sqlite::Error> {
            if sql == INSERT && !self.raced.replace(true) {
                append_to(self.other, &event("t1", "overtaker")).expect("the other writer appends");
            }
            self.db.execute(sql, params)
        }
    }

    #[test]
    fn an_append_overtaken_between_head_and_insert_links_after_the_overtaker() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.db");
        let other = migrated(&path);
        append_to(&other, &event("t1", "first")).expect("appends");
        let overtaken = Overtaken { db: Native::open(&path), other: &other, raced: std::cell::Cell::new(false) };
        append_to(&overtaken, &event("t1", "overtaken")).expect("retried in a transaction");
        let chain = stored_chain(&other, "t1");
        assert_eq!(reasons(&chain), ["first", "overtaker", "overtaken"]);
        assert_eq!(health_core::audit::verify_chain(&chain), Ok(3));
    }

    #[test]
    fn an_append_that_cannot_be_written_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Native::open(&dir.path().join("audit.db"));
        // No schema: every try fails, and the caller learns it (fail closed).
        let error = Sqlite(&db).append(&event("t1", "lost?")).expect_err("not recorded");
        assert!(format!("{error:#}").contains("appending an audit event: failed 4 times"), "{error:#}");
    }
}
