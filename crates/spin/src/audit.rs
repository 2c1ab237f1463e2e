//! Appends events to the `audit` SQLite database: append-only (triggers refuse UPDATE and
//! DELETE) and hash-chained per tenant. Concurrent writers race on the `(tenant_id, seq)`
//! primary key; the loser re-reads the chain head and retries, so the chain stays linear
//! without cross-statement transactions.

use anyhow::{Context, bail};
use health_core::audit::{Event, GENESIS, StoredLink, link};
use spin_sdk::sqlite::{Connection, Value};

/// The audit database label in spin.toml.
pub const DATABASE: &str = "audit";
const SCHEMA_VERSION: i64 = 4;

const MIGRATION: &[&str] = &[
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
    "CREATE INDEX IF NOT EXISTS audit_by_time ON audit_events (tenant_id, time)",
    "CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit_events
        BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit_events
        BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END",
    // Version 2: the ledger of spent one-time tokens (see `tokens::spend_once`).
    "CREATE TABLE IF NOT EXISTS spent_tokens (
        jti TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL,
        spent_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL
    )",
    // Version 3: the route template (bounded, for metrics and queries) and the break-glass flag
    // (for the admin review queue) as columns beside the hashed event.
    "ALTER TABLE audit_events ADD COLUMN action TEXT",
    "ALTER TABLE audit_events ADD COLUMN break_glass INTEGER NOT NULL DEFAULT 0",
    "CREATE INDEX IF NOT EXISTS audit_by_action ON audit_events (action, outcome)",
    "CREATE INDEX IF NOT EXISTS audit_break_glass ON audit_events (tenant_id, seq) WHERE break_glass = 1",
    // Version 4: tokens already verified in full, by SHA-256 of the token (see `tokens::verify`).
    "CREATE TABLE IF NOT EXISTS verified_tokens (
        token_hash TEXT PRIMARY KEY,
        kid TEXT NOT NULL,
        claims TEXT NOT NULL,
        expires_at INTEGER NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS verified_tokens_by_expiry ON verified_tokens (expires_at)",
];

const HEAD: &str = "SELECT seq, hash FROM audit_events WHERE tenant_id = ? ORDER BY seq DESC LIMIT 1";
const INSERT: &str = "INSERT INTO audit_events
    (tenant_id, seq, time, actor_sub, jti, patient_id, outcome, reason, status, event, prev_hash, hash, action, break_glass)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
const CHAIN: &str = "SELECT seq, event, prev_hash, hash FROM audit_events WHERE tenant_id = ? ORDER BY seq";
const MAX_ATTEMPTS: usize = 50;

/// Runs `statements` once per database, guarded by `PRAGMA user_version`. Every statement must
/// be idempotent, since the first requests of several components may migrate at once: `IF NOT
/// EXISTS` everywhere, and an `ADD COLUMN` that another migrator already applied is skipped.
pub fn migrate(conn: &Connection, version: i64, statements: &[&str]) -> anyhow::Result<()> {
    migrate_then(conn, version, statements, |_| Ok(()))
}

/// [`migrate`], running `then` (e.g. idempotent seeding) after the statements and before the
/// version is recorded, so an interrupted first run is simply repeated by the next request.
pub fn migrate_then(
    conn: &Connection,
    version: i64,
    statements: &[&str],
    then: impl FnOnce(&Connection) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let current = conn.execute("PRAGMA user_version", &[]).context("reading schema version")?;
    let current = current.rows().next().and_then(|r| r.get::<i64>("user_version")).unwrap_or(0);
    if current >= version {
        return Ok(());
    }
    for statement in statements {
        match conn.execute(statement, &[]) {
            Ok(_) => {}
            Err(spin_sdk::sqlite::Error::Io(message))
                if statement.starts_with("ALTER TABLE") && message.contains("duplicate column") => {}
            Err(e) => return Err(e).with_context(|| format!("migration statement failed: {statement}")),
        }
    }
    then(conn)?;
    conn.execute(&format!("PRAGMA user_version = {version}"), &[]).context("setting schema version")?;
    Ok(())
}

pub fn open() -> anyhow::Result<Connection> {
    let conn = Connection::open(DATABASE).context("opening the audit database")?;
    migrate(&conn, SCHEMA_VERSION, MIGRATION)?;
    Ok(conn)
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

/// Appends `event` to its tenant's chain. An error means the event was not recorded, and the
/// caller must fail the request (no unaudited access).
pub fn append(event: &Event) -> anyhow::Result<()> {
    let conn = open()?;
    let json = serde_json::to_string(event).context("encoding audit event")?;
    let outcome = event.outcome.map(|o| o.as_str().to_owned());
    for _ in 0..MAX_ATTEMPTS {
        let head = conn.execute(HEAD, &[Value::Text(event.tenant_id.clone())]).context("reading audit chain head")?;
        let (seq, prev) = head
            .rows()
            .next()
            .map(|r| (r.get::<i64>("seq").unwrap_or(0), r.get::<&str>("hash").unwrap_or(GENESIS).to_owned()))
            .unwrap_or((0, GENESIS.to_owned()));
        let hash = link(&prev, &json);
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
            Value::Text(json.clone()),
            Value::Text(prev),
            Value::Text(hash),
            Value::Text(event.action.clone()),
            Value::Integer(i64::from(event.flags_break_glass())),
        ];
        match conn.execute(INSERT, &params) {
            Ok(_) => return Ok(()),
            // Another writer took this seq first (or the database was busy): re-read and retry.
            Err(spin_sdk::sqlite::Error::Io(message))
                if message.contains("UNIQUE") || message.contains("locked") || message.contains("busy") =>
            {
                continue;
            }
            Err(e) => return Err(e).context("appending audit event"),
        }
    }
    bail!("audit append for tenant {:?} lost {MAX_ATTEMPTS} races in a row", event.tenant_id)
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
}

/// Reasons that count as decryption failures.
pub const DECRYPT_FAILURE_REASONS: [&str; 2] = ["jwe_decryption_failed", "phi_decrypt_failed"];

pub fn counters() -> anyhow::Result<Counters> {
    const REQUESTS: &str = "SELECT action, COALESCE(outcome, 'none') AS outcome, COUNT(*) AS n FROM audit_events
        WHERE action LIKE '% /api/%' GROUP BY action, outcome ORDER BY action, outcome";
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
    let break_glass = conn.execute(BREAK_GLASS, &[]).context("reading break-glass counters")?;
    let row = break_glass.rows().next();
    let sum = |name: &str| row.as_ref().and_then(|r| r.get::<i64>(name)).unwrap_or(0);
    Ok(Counters {
        requests,
        auth_failures,
        decrypt_failures,
        break_glass_grants: sum("grants"),
        break_glass_accesses: sum("accesses"),
    })
}
