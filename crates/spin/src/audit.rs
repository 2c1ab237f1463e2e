//! Appends events to the `audit` SQLite database: append-only (triggers refuse UPDATE and
//! DELETE) and hash-chained per tenant. Concurrent writers race on the `(tenant_id, seq)`
//! primary key; the loser re-reads the chain head and retries, so the chain stays linear
//! without cross-statement transactions.

use anyhow::{Context, bail};
use health_core::audit::{Event, GENESIS, StoredLink, link};
use spin_sdk::sqlite::{Connection, Value};

/// The audit database label in spin.toml.
pub const DATABASE: &str = "audit";
const SCHEMA_VERSION: i64 = 2;

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
];

const HEAD: &str = "SELECT seq, hash FROM audit_events WHERE tenant_id = ? ORDER BY seq DESC LIMIT 1";
const INSERT: &str = "INSERT INTO audit_events
    (tenant_id, seq, time, actor_sub, jti, patient_id, outcome, reason, status, event, prev_hash, hash)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
const CHAIN: &str = "SELECT seq, event, prev_hash, hash FROM audit_events WHERE tenant_id = ? ORDER BY seq";
const MAX_ATTEMPTS: usize = 50;

/// Runs `statements` once per database, guarded by `PRAGMA user_version`.
pub fn migrate(conn: &Connection, version: i64, statements: &[&str]) -> anyhow::Result<()> {
    let current = conn.execute("PRAGMA user_version", &[]).context("reading schema version")?;
    let current = current.rows().next().and_then(|r| r.get::<i64>("user_version")).unwrap_or(0);
    if current >= version {
        return Ok(());
    }
    for statement in statements {
        conn.execute(statement, &[]).with_context(|| format!("migration statement failed: {statement}"))?;
    }
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
