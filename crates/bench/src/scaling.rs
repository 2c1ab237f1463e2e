//! How a request's cost grows with the platform's state (`--scaling`): the record read is
//! measured again after the demo tenant's audit chain has grown to 10^4, 10^5 and 10^6 events,
//! and then with 10 and 100 tenants in the stores. The state is grown between measurements, in
//! the running platform's own files:
//!
//! - **Audit events** are appended to `demo-hospital`'s chain in `audit.db` as `health_spin`
//!   appends them (same columns, each linked to the one before with `health_core::audit::link`),
//!   so the chain stays intact and the platform's next append lands after them.
//! - **Tenants** are copies of the demo tenant's public key set under new names in
//!   `public-keys.db`, each with 1,000 events of its own chain in `audit.db`: as many key sets
//!   and chains as real tenants would add, without generating an RSA key pair per tenant in
//!   Wasm (minutes for 100), which the request path never touches.

use std::future::Future;
use std::path::Path;

use anyhow::Context;
use health_core::DEMO_TENANT;
use health_core::audit::{Event, GENESIS, Outcome, link};

use crate::http::Cell;

/// Total audit events in the demo tenant's chain at each log step (added to what the run
/// itself wrote, which is far fewer).
const LOG_STEPS: [u64; 3] = [10_000, 100_000, 1_000_000];
/// Tenants at each tenant step, the demo tenant included.
const TENANT_STEPS: [usize; 2] = [10, 100];
/// Events given to each added tenant's chain.
const EVENTS_PER_TENANT: u64 = 1_000;

/// One measurement: the state it was taken in and the record read's cell.
#[derive(Debug, Clone)]
pub struct Step {
    pub tenants: usize,
    pub audit_events: u64,
    pub cell: Cell,
}

/// Measures with `measure` (given a description of the step) at the current state, then after
/// each growth step.
pub async fn run<F, Fut>(state: &Path, mut measure: F) -> anyhow::Result<Vec<Step>>
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = anyhow::Result<Cell>>,
{
    let audit = state.join("audit.db");
    let mut steps = Vec::new();
    let mut tenants = 1;
    let events = chain_length(&audit, DEMO_TENANT)?;
    steps.push(Step {
        tenants,
        audit_events: events,
        cell: measure(format!("{events} audit events, 1 tenant")).await?,
    });
    for target in LOG_STEPS {
        let have = chain_length(&audit, DEMO_TENANT)?;
        let started = std::time::Instant::now();
        append_events(&audit, DEMO_TENANT, target.saturating_sub(have))?;
        eprintln!("audit chain grown to {target} events in {:.1} s (untimed)", started.elapsed().as_secs_f64());
        let cell = measure(format!("{target} audit events, 1 tenant")).await?;
        steps.push(Step { tenants, audit_events: target, cell });
    }
    for target in TENANT_STEPS {
        for n in tenants..target {
            let tenant = format!("bench-tenant-{n}");
            copy_key_set(&state.join("public-keys.db"), DEMO_TENANT, &tenant)?;
            append_events(&audit, &tenant, EVENTS_PER_TENANT)?;
        }
        tenants = target;
        let events = chain_length(&audit, DEMO_TENANT)?;
        let cell = measure(format!("{events} audit events, {tenants} tenants")).await?;
        steps.push(Step { tenants, audit_events: events, cell });
    }
    Ok(steps)
}

fn open(path: &Path) -> anyhow::Result<rusqlite::Connection> {
    let conn = rusqlite::Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    Ok(conn)
}

pub(crate) fn chain_length(audit: &Path, tenant: &str) -> anyhow::Result<u64> {
    let conn = open(audit)?;
    let n: i64 =
        conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM audit_events WHERE tenant_id = ?", [tenant], |r| r.get(0))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Appends `n` record-read events to `tenant`'s chain, linked as the platform links them.
pub(crate) fn append_events(audit: &Path, tenant: &str, n: u64) -> anyhow::Result<()> {
    let mut conn = open(audit)?;
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let (mut seq, mut prev): (i64, String) = tx
        .query_row("SELECT seq, hash FROM audit_events WHERE tenant_id = ? ORDER BY seq DESC LIMIT 1", [tenant], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok((0, GENESIS.to_owned())),
            e => Err(e),
        })?;
    {
        let mut insert = tx.prepare(
            "INSERT INTO audit_events
             (tenant_id, seq, time, actor_sub, jti, patient_id, outcome, reason, status, event, prev_hash, hash, action, break_glass)
             VALUES (?, ?, ?, ?, NULL, ?, 'allow', 'ok', 200, ?, ?, ?, ?, 0)",
        )?;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
        let time = i64::try_from(now).unwrap_or(i64::MAX);
        for i in 0..n {
            seq += 1;
            let event = Event {
                time,
                request_id: format!("bench-{seq}"),
                tenant_id: tenant.to_owned(),
                actor_sub: Some("u-bench".to_owned()),
                actor_role: Some("doctor".to_owned()),
                patient_id: Some(format!("p-{}", 1000 + i % 500)),
                action: "GET /api/patients/{id}/records".to_owned(),
                outcome: Some(Outcome::Allow),
                reason: "ok".to_owned(),
                status: 200,
                ..Event::default()
            };
            let json = serde_json::to_string(&event)?;
            let hash = link(&prev, &json);
            insert.execute(rusqlite::params![
                tenant,
                seq,
                time,
                event.actor_sub,
                event.patient_id,
                json,
                prev,
                hash,
                event.action
            ])?;
            prev = hash;
        }
    }
    tx.commit()?;
    Ok(())
}

/// Stores `from`'s public key set under `to` as well (the `spin_key_value` row Spin reads).
fn copy_key_set(public_keys: &Path, from: &str, to: &str) -> anyhow::Result<()> {
    let conn = open(public_keys)?;
    let copied = conn.execute(
        "INSERT OR REPLACE INTO spin_key_value (store, key, value)
         SELECT store, ?, value FROM spin_key_value WHERE store = 'public-keys' AND key = ?",
        [format!("tenant/{to}"), format!("tenant/{from}")],
    )?;
    anyhow::ensure!(copied == 1, "no key set for {from} in {}", public_keys.display());
    Ok(())
}
