//! The `identity` database, as `auth` keeps it: users, login attempt counters, TOTP enrolments
//! (secrets sealed by the caller under a key derived from `master_key`), refresh-token families,
//! registered OAuth clients (insurers) and spent client-assertion `jti`s.
//!
//! Every statement is a named `const`; atomic steps (spending a refresh token, using a TOTP step,
//! a one-time assertion) are single statements whose `RETURNING` or primary key says who won a
//! race, and the lockout counter is one compare-and-set loop ([`reserve_attempt`],
//! [`refund_attempt`]). Written against [`Sql`], so all of it runs natively in tests against
//! real SQLite, concurrency included (`db::testing::Native`).
//!
//! What it does not do: decide. Whether a login succeeds, what a refresh token's state means
//! and how a counter changes are `health_identity`'s rules; this module stores their inputs and
//! results. The demo tenant's accounts are data, in `identity/demo.rs`.

mod demo;
#[cfg(test)]
mod tests;

use anyhow::Context;
use health_core::{ClientId, FamilyId, Opaque, Role, TenantId, TokenId, Username};
use health_identity::lockout::{Attempts, Failure, LockoutPolicy};
use spin_sdk::sqlite::{Connection, QueryResult, Value};

use crate::db::{self, Migration, Sql, Step};

/// The schema (see [`db::migrate`]): version 1 held the users only.
const MIGRATIONS: &[Migration<'static>] = &[
    Migration { version: 1, steps: VERSION_1 },
    Migration { version: 2, steps: VERSION_2 },
    Migration { version: 3, steps: crate::federation::VERSION_3 },
    Migration { version: 4, steps: VERSION_4 },
];

const VERSION_1: &[Step<'static>] = &[Step::Sql(
    "CREATE TABLE IF NOT EXISTS users (
        tenant_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        username TEXT NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('patient', 'doctor', 'lab', 'insurance', 'admin')),
        password_hash TEXT NOT NULL,
        disabled INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (tenant_id, user_id),
        UNIQUE (tenant_id, username)
    )",
)];

/// The staff roles of issue 16 (nurse, receptionist, pharmacist): SQLite cannot change a
/// table's `CHECK`, so `users` is copied into a table with the wider one, which takes its name.
/// A new role needs a version like this one (and its row in `health_policy::permissions`).
const VERSION_4: &[Step<'static>] = &[
    Step::Sql(
        "CREATE TABLE users_v4 (
        tenant_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        username TEXT NOT NULL,
        role TEXT NOT NULL CHECK (role IN
            ('patient', 'doctor', 'lab', 'insurance', 'admin', 'nurse', 'receptionist', 'pharmacist')),
        password_hash TEXT NOT NULL,
        disabled INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (tenant_id, user_id),
        UNIQUE (tenant_id, username)
    )",
    ),
    Step::Sql(
        "INSERT INTO users_v4 (tenant_id, user_id, username, role, password_hash, disabled)
        SELECT tenant_id, user_id, username, role, password_hash, disabled FROM users",
    ),
    Step::Sql("DROP TABLE users"),
    Step::Sql("ALTER TABLE users_v4 RENAME TO users"),
];

const VERSION_2: &[Step<'static>] = &[
    Step::Sql(
        "CREATE TABLE IF NOT EXISTS login_attempts (
        tenant_id TEXT NOT NULL,
        username TEXT NOT NULL,
        source TEXT NOT NULL,
        failures INTEGER NOT NULL,
        window_start INTEGER NOT NULL,
        locked_until INTEGER NOT NULL,
        PRIMARY KEY (tenant_id, username, source)
    )",
    ),
    Step::Sql(
        "CREATE TABLE IF NOT EXISTS mfa (
        tenant_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        secret_sealed TEXT NOT NULL,
        confirmed INTEGER NOT NULL DEFAULT 0,
        last_step INTEGER,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (tenant_id, user_id)
    )",
    ),
    Step::Sql(
        "CREATE TABLE IF NOT EXISTS refresh_families (
        family_id TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        client_id TEXT NOT NULL,
        amr TEXT NOT NULL,
        auth_time INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        revoked_at INTEGER,
        revoked_reason TEXT
    )",
    ),
    Step::Sql("CREATE INDEX IF NOT EXISTS refresh_families_by_user ON refresh_families (tenant_id, user_id)"),
    Step::Sql(
        "CREATE TABLE IF NOT EXISTS refresh_tokens (
        token_hash TEXT PRIMARY KEY,
        family_id TEXT NOT NULL REFERENCES refresh_families (family_id),
        issued_at INTEGER NOT NULL,
        used_at INTEGER,
        access_jti TEXT NOT NULL,
        access_exp INTEGER NOT NULL
    )",
    ),
    Step::Sql("CREATE INDEX IF NOT EXISTS refresh_tokens_by_family ON refresh_tokens (family_id)"),
    Step::Sql("CREATE INDEX IF NOT EXISTS refresh_tokens_by_access ON refresh_tokens (access_jti)"),
    Step::Sql(
        "CREATE TABLE IF NOT EXISTS clients (
        client_id TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL,
        name TEXT NOT NULL,
        secret_hash TEXT,
        sig_jwk TEXT,
        enc_jwk TEXT NOT NULL,
        disabled INTEGER NOT NULL DEFAULT 0,
        created_at INTEGER NOT NULL,
        CHECK (secret_hash IS NOT NULL OR sig_jwk IS NOT NULL)
    )",
    ),
    Step::Sql(
        "CREATE TABLE IF NOT EXISTS client_assertions (
        client_id TEXT NOT NULL,
        jti TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        PRIMARY KEY (client_id, jti)
    )",
    ),
];

/// Opens `identity` and brings it to the current schema, seeding the demo tenant's accounts
/// with it when `seed_demo`.
pub fn open(seed_demo: bool) -> anyhow::Result<Connection> {
    let conn = db::open("identity")?;
    migrate(&conn, seed_demo)?;
    Ok(conn)
}

/// Brings `conn` to the current schema (see [`db::migrate`]); the demo accounts are inserted in
/// the same transaction when `seed_demo`, so only when the schema was not current.
pub fn migrate(conn: &impl Sql, seed_demo: bool) -> anyhow::Result<()> {
    db::migrate(conn, MIGRATIONS, |conn| if seed_demo { demo::seed(conn) } else { Ok(()) })
}

pub(crate) fn text(value: impl Into<String>) -> Value {
    Value::Text(value.into())
}

pub(crate) fn first(result: &QueryResult) -> Option<spin_sdk::sqlite::Row<'_>> {
    result.rows().next()
}

/// A stored id read back as its type: it was validated when written, so one that does not
/// parse is a damaged row.
pub(crate) fn stored<T>(
    row: &spin_sdk::sqlite::Row<'_>,
    column: &str,
    parse: impl Fn(&str) -> Result<T, health_core::IdError>,
) -> anyhow::Result<T> {
    let text = row.get::<&str>(column).with_context(|| format!("row without {column}"))?;
    parse(text).with_context(|| format!("stored {column} {text:?}"))
}

/// The access tokens a query listed, with their expiry.
fn access_tokens(rows: &QueryResult) -> anyhow::Result<Vec<(TokenId, i64)>> {
    rows.rows()
        .map(|r| Ok((stored(&r, "access_jti", TokenId::parse)?, r.get::<i64>("access_exp").context("access_exp")?)))
        .collect()
}

// ---- users -------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct User {
    pub user_id: Opaque,
    pub username: Username,
    pub role: Role,
    pub password_hash: String,
    pub disabled: bool,
}

const USER_COLUMNS: &str = "user_id, username, role, password_hash, disabled";

fn user_from(row: &spin_sdk::sqlite::Row<'_>) -> anyhow::Result<User> {
    Ok(User {
        user_id: stored(row, "user_id", Opaque::parse)?,
        username: stored(row, "username", Username::parse)?,
        role: row.get::<&str>("role").and_then(Role::parse).context("user row with unknown role")?,
        password_hash: row.get::<&str>("password_hash").context("user row without hash")?.to_owned(),
        disabled: row.get::<i64>("disabled").unwrap_or(1) != 0,
    })
}

pub fn find_user(conn: &impl Sql, tenant: &TenantId, username: &Username) -> anyhow::Result<Option<User>> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE tenant_id = ? AND username = ?");
    let rows = conn.execute(&sql, &[text(tenant.as_str()), text(username.as_str())]).context("looking up user")?;
    first(&rows).map(|r| user_from(&r)).transpose()
}

pub fn user_by_id(conn: &impl Sql, tenant: &TenantId, user_id: &Opaque) -> anyhow::Result<Option<User>> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE tenant_id = ? AND user_id = ?");
    let rows = conn.execute(&sql, &[text(tenant.as_str()), text(user_id.as_str())]).context("looking up user")?;
    first(&rows).map(|r| user_from(&r)).transpose()
}

pub fn list_users(conn: &impl Sql, tenant: &TenantId) -> anyhow::Result<Vec<User>> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE tenant_id = ? ORDER BY username");
    let rows = conn.execute(&sql, &[text(tenant.as_str())]).context("listing users")?;
    rows.rows().map(|r| user_from(&r)).collect()
}

/// Inserts a user; `false` if the username is taken in the tenant.
pub fn create_user(conn: &impl Sql, tenant: &TenantId, user: &User) -> anyhow::Result<bool> {
    const INSERT: &str = "INSERT INTO users (tenant_id, user_id, username, role, password_hash, disabled)
        VALUES (?, ?, ?, ?, ?, 0) ON CONFLICT DO NOTHING RETURNING user_id";
    let params = [
        text(tenant.as_str()),
        text(user.user_id.as_str()),
        text(user.username.as_str()),
        text(user.role.as_str()),
        text(&user.password_hash),
    ];
    Ok(first(&conn.execute(INSERT, &params).context("creating user")?).is_some())
}

pub fn set_disabled(conn: &impl Sql, tenant: &TenantId, user_id: &Opaque, disabled: bool) -> anyhow::Result<bool> {
    const UPDATE: &str = "UPDATE users SET disabled = ? WHERE tenant_id = ? AND user_id = ? RETURNING user_id";
    let params = [Value::Integer(i64::from(disabled)), text(tenant.as_str()), text(user_id.as_str())];
    Ok(first(&conn.execute(UPDATE, &params).context("updating user")?).is_some())
}

pub fn set_password(conn: &impl Sql, tenant: &TenantId, user_id: &Opaque, hash: &str) -> anyhow::Result<bool> {
    const UPDATE: &str = "UPDATE users SET password_hash = ? WHERE tenant_id = ? AND user_id = ? RETURNING user_id";
    let params = [text(hash), text(tenant.as_str()), text(user_id.as_str())];
    Ok(first(&conn.execute(UPDATE, &params).context("updating password")?).is_some())
}

/// Replaces the password hash only if `old_hash` is still the stored one (a self-service
/// change, which verified the old password): `false` if another change came first.
pub fn replace_password(
    conn: &impl Sql,
    tenant: &TenantId,
    user_id: &Opaque,
    old_hash: &str,
    new_hash: &str,
) -> anyhow::Result<bool> {
    const UPDATE: &str = "UPDATE users SET password_hash = ? WHERE tenant_id = ? AND user_id = ? AND password_hash = ?
        RETURNING user_id";
    let params = [text(new_hash), text(tenant.as_str()), text(user_id.as_str()), text(old_hash)];
    Ok(first(&conn.execute(UPDATE, &params).context("replacing password")?).is_some())
}

// ---- lockout -----------------------------------------------------------------------------

/// The outcome of reserving a login attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    /// Locked: refuse without checking the password.
    Locked { retry_after: i64 },
    /// Counted as a failure in advance; a success clears it.
    Counted(Failure),
}

const SELECT_ATTEMPTS: &str = "SELECT failures, window_start, locked_until FROM login_attempts
    WHERE tenant_id = ? AND username = ? AND source = ?";
const INSERT_ATTEMPTS: &str =
    "INSERT INTO login_attempts (tenant_id, username, source, failures, window_start, locked_until)
    VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING failures";
/// Writes a counter only if it is still the one read: a row back means this writer won.
const SWAP_ATTEMPTS: &str = "UPDATE login_attempts SET failures = ?, window_start = ?, locked_until = ?
    WHERE tenant_id = ? AND username = ? AND source = ? AND failures = ? AND window_start = ? AND locked_until = ?
    RETURNING failures";

fn attempts(conn: &impl Sql, key: &[Value; 3]) -> anyhow::Result<Option<Attempts>> {
    let rows = conn.execute(SELECT_ATTEMPTS, key).context("reading attempts")?;
    Ok(first(&rows).map(|r| Attempts {
        failures: r.get::<i64>("failures").and_then(|f| u32::try_from(f).ok()).unwrap_or(0),
        window_start: r.get::<i64>("window_start").unwrap_or(0),
        locked_until: r.get::<i64>("locked_until").unwrap_or(0),
    }))
}

fn attempt_values(attempts: Attempts) -> [Value; 3] {
    [
        Value::Integer(i64::from(attempts.failures)),
        Value::Integer(attempts.window_start),
        Value::Integer(attempts.locked_until),
    ]
}

/// What a step of [`swap_attempts`] wants done with the counter it read.
enum Swap<T> {
    /// Nothing to write: answer `T`.
    Keep(T),
    /// Store this counter in place of the one read, then answer `T`.
    Write(Attempts, T),
}

/// The one compare-and-set loop over a (tenant, username, source) counter: reads it, lets
/// `step` decide from what it read, and writes the new counter only if the stored one is still
/// what was read (a first counter only if there is none yet). A lost race (no row back) reads
/// again and decides again, so a concurrent change is never overwritten; a failed statement is
/// retried too ([`db::Retry::SWAP`]), which can only apply a change twice (a remote write whose
/// answer was lost), never lose one.
fn swap_attempts<T>(
    conn: &impl Sql,
    tenant: &TenantId,
    username: &Username,
    source: &str,
    what: &str,
    mut step: impl FnMut(Option<Attempts>) -> Swap<T>,
) -> anyhow::Result<T> {
    let key = [text(tenant.as_str()), text(username.as_str()), text(source)];
    db::Retry::SWAP.run(what, || {
        let stored = attempts(conn, &key)?;
        let (next, answer) = match step(stored) {
            Swap::Keep(answer) => return Ok(Some(answer)),
            Swap::Write(next, answer) => (next, answer),
        };
        let written = match stored {
            None => {
                let params: Vec<Value> = key.iter().cloned().chain(attempt_values(next)).collect();
                conn.execute(INSERT_ATTEMPTS, &params)
            }
            Some(old) => {
                let params: Vec<Value> =
                    attempt_values(next).into_iter().chain(key.iter().cloned()).chain(attempt_values(old)).collect();
                conn.execute(SWAP_ATTEMPTS, &params)
            }
        }
        .with_context(|| what.to_owned())?;
        Ok(first(&written).map(|_| answer))
    })
}

/// Counts an attempt as failed *before* the password is checked, so concurrent guesses cannot
/// all slip in before the first failure is recorded: at most `max_failures` attempts are ever
/// checked per window.
pub fn reserve_attempt(
    conn: &impl Sql,
    tenant: &TenantId,
    username: &Username,
    source: &str,
    policy: LockoutPolicy,
    now: i64,
) -> anyhow::Result<Reservation> {
    swap_attempts(conn, tenant, username, source, "counting a login attempt", |stored| {
        let current = stored.unwrap_or_default();
        if current.is_locked(now) {
            return Swap::Keep(Reservation::Locked { retry_after: current.retry_after(now) });
        }
        let mut next = current;
        let failure = next.fail(policy, now);
        Swap::Write(next, Reservation::Counted(failure))
    })
}

/// Takes back an attempt [`reserve_attempt`] counted (see [`Attempts::refund`]), with the same
/// compare-and-set, so a concurrent failure is never lost.
pub fn refund_attempt(
    conn: &impl Sql,
    tenant: &TenantId,
    username: &Username,
    source: &str,
    policy: LockoutPolicy,
    counted: Failure,
) -> anyhow::Result<()> {
    swap_attempts(conn, tenant, username, source, "refunding a login attempt", |stored| {
        let Some(old) = stored else {
            return Swap::Keep(());
        };
        let mut next = old;
        next.refund(policy, counted);
        if next == old { Swap::Keep(()) } else { Swap::Write(next, ()) }
    })
}

/// Drops counters whose window and lock are both over, so guessing random usernames cannot
/// grow the table without bound.
pub fn sweep_attempts(conn: &impl Sql, policy: LockoutPolicy, now: i64) -> anyhow::Result<()> {
    conn.execute(
        "DELETE FROM login_attempts WHERE window_start < ? AND locked_until < ?",
        &[Value::Integer(now - policy.lock_secs), Value::Integer(now)],
    )
    .context("sweeping attempts")?;
    Ok(())
}

/// Forgets the failures of one source (after a success) or, with `source` `None`, of every
/// source (after an admin's password reset).
pub fn clear_attempts(
    conn: &impl Sql,
    tenant: &TenantId,
    username: &Username,
    source: Option<&str>,
) -> anyhow::Result<()> {
    match source {
        Some(source) => conn.execute(
            "DELETE FROM login_attempts WHERE tenant_id = ? AND username = ? AND source = ?",
            &[text(tenant.as_str()), text(username.as_str()), text(source)],
        ),
        None => conn.execute(
            "DELETE FROM login_attempts WHERE tenant_id = ? AND username = ?",
            &[text(tenant.as_str()), text(username.as_str())],
        ),
    }
    .context("clearing attempts")?;
    Ok(())
}

// ---- MFA ---------------------------------------------------------------------------------

pub struct Mfa {
    pub secret_sealed: String,
    pub confirmed: bool,
    pub last_step: Option<i64>,
}

pub fn mfa(conn: &impl Sql, tenant: &TenantId, user_id: &Opaque) -> anyhow::Result<Option<Mfa>> {
    const SELECT: &str = "SELECT secret_sealed, confirmed, last_step FROM mfa WHERE tenant_id = ? AND user_id = ?";
    let rows = conn.execute(SELECT, &[text(tenant.as_str()), text(user_id.as_str())]).context("reading mfa")?;
    Ok(first(&rows).map(|r| Mfa {
        secret_sealed: r.get::<&str>("secret_sealed").unwrap_or_default().to_owned(),
        confirmed: r.get::<i64>("confirmed").unwrap_or(0) != 0,
        last_step: r.get::<i64>("last_step"),
    }))
}

/// Stores a new, unconfirmed secret; refused (`false`) once an enrolment is confirmed, which
/// only an admin's reset undoes.
pub fn start_enrolment(
    conn: &impl Sql,
    tenant: &TenantId,
    user_id: &Opaque,
    sealed: &str,
    now: i64,
) -> anyhow::Result<bool> {
    const UPSERT: &str = "INSERT INTO mfa (tenant_id, user_id, secret_sealed, confirmed, last_step, created_at)
        VALUES (?, ?, ?, 0, NULL, ?) ON CONFLICT (tenant_id, user_id) DO UPDATE SET
        secret_sealed = excluded.secret_sealed, last_step = NULL, created_at = excluded.created_at
        WHERE mfa.confirmed = 0 RETURNING user_id";
    let params = [text(tenant.as_str()), text(user_id.as_str()), text(sealed), Value::Integer(now)];
    Ok(first(&conn.execute(UPSERT, &params).context("starting enrolment")?).is_some())
}

/// Records `step` as used (and the enrolment as confirmed) unless a step at or after it was
/// already used: one statement, so two concurrent logins with the same code cannot both win.
pub fn use_step(conn: &impl Sql, tenant: &TenantId, user_id: &Opaque, step: i64) -> anyhow::Result<bool> {
    const UPDATE: &str = "UPDATE mfa SET last_step = ?, confirmed = 1
        WHERE tenant_id = ? AND user_id = ? AND (last_step IS NULL OR last_step < ?) RETURNING user_id";
    let params = [Value::Integer(step), text(tenant.as_str()), text(user_id.as_str()), Value::Integer(step)];
    Ok(first(&conn.execute(UPDATE, &params).context("using totp step")?).is_some())
}

pub fn reset_mfa(conn: &impl Sql, tenant: &TenantId, user_id: &Opaque) -> anyhow::Result<()> {
    conn.execute(
        "DELETE FROM mfa WHERE tenant_id = ? AND user_id = ?",
        &[text(tenant.as_str()), text(user_id.as_str())],
    )
    .context("resetting mfa")?;
    Ok(())
}

// ---- refresh tokens ----------------------------------------------------------------------

pub struct Family {
    pub family_id: FamilyId,
    pub tenant_id: TenantId,
    pub user_id: Opaque,
    pub client_id: ClientId,
    pub amr: Vec<String>,
    pub auth_time: i64,
    pub created_at: i64,
    pub expires_at: i64,
    pub revoked: bool,
}

pub struct PresentedRefresh {
    pub family: Family,
    pub used_at: Option<i64>,
    /// When this token was issued (the portal's idle timeout counts from it).
    pub issued_at: i64,
}

pub fn create_family(conn: &impl Sql, family: &Family) -> anyhow::Result<()> {
    const INSERT: &str = "INSERT INTO refresh_families
        (family_id, tenant_id, user_id, client_id, amr, auth_time, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)";
    let params = [
        text(family.family_id.as_str()),
        text(family.tenant_id.as_str()),
        text(family.user_id.as_str()),
        text(family.client_id.as_str()),
        text(family.amr.join(" ")),
        Value::Integer(family.auth_time),
        Value::Integer(family.created_at),
        Value::Integer(family.expires_at),
    ];
    conn.execute(INSERT, &params).context("creating refresh family")?;
    Ok(())
}

pub fn add_refresh(
    conn: &impl Sql,
    token_hash: &str,
    family_id: &FamilyId,
    now: i64,
    access_jti: &TokenId,
    access_exp: i64,
) -> anyhow::Result<()> {
    const INSERT: &str =
        "INSERT INTO refresh_tokens (token_hash, family_id, issued_at, used_at, access_jti, access_exp)
        VALUES (?, ?, ?, NULL, ?, ?)";
    let params = [
        text(token_hash),
        text(family_id.as_str()),
        Value::Integer(now),
        text(access_jti.as_str()),
        Value::Integer(access_exp),
    ];
    conn.execute(INSERT, &params).context("storing refresh token")?;
    Ok(())
}

const FAMILY_COLUMNS: &str = "f.family_id, f.tenant_id, f.user_id, f.client_id, f.amr, f.auth_time, f.created_at,
    f.expires_at, f.revoked_at";

fn family_from(row: &spin_sdk::sqlite::Row<'_>) -> anyhow::Result<Family> {
    Ok(Family {
        family_id: stored(row, "family_id", FamilyId::parse)?,
        tenant_id: stored(row, "tenant_id", TenantId::parse)?,
        user_id: stored(row, "user_id", Opaque::parse)?,
        client_id: stored(row, "client_id", ClientId::parse)?,
        amr: row.get::<&str>("amr").unwrap_or_default().split_whitespace().map(str::to_owned).collect(),
        auth_time: row.get::<i64>("auth_time").unwrap_or(0),
        created_at: row.get::<i64>("created_at").unwrap_or(0),
        expires_at: row.get::<i64>("expires_at").unwrap_or(0),
        revoked: row.get::<i64>("revoked_at").is_some(),
    })
}

pub fn find_refresh(conn: &impl Sql, token_hash: &str) -> anyhow::Result<Option<PresentedRefresh>> {
    let sql = format!(
        "SELECT {FAMILY_COLUMNS}, t.used_at, t.issued_at FROM refresh_tokens t JOIN refresh_families f USING (family_id)
         WHERE t.token_hash = ?"
    );
    let rows = conn.execute(&sql, &[text(token_hash)]).context("looking up refresh token")?;
    first(&rows)
        .map(|r| {
            let issued_at = r.get::<i64>("issued_at").context("refresh token issued_at")?;
            Ok(PresentedRefresh { family: family_from(&r)?, used_at: r.get::<i64>("used_at"), issued_at })
        })
        .transpose()
}

/// Spends a refresh token: `true` only for the one request that marked it used.
pub fn spend_refresh(conn: &impl Sql, token_hash: &str, now: i64) -> anyhow::Result<bool> {
    const UPDATE: &str =
        "UPDATE refresh_tokens SET used_at = ? WHERE token_hash = ? AND used_at IS NULL RETURNING token_hash";
    Ok(first(&conn.execute(UPDATE, &[Value::Integer(now), text(token_hash)]).context("spending refresh token")?)
        .is_some())
}

/// Revokes one family; returns the access tokens issued in it that may still be valid, for the
/// caller to revoke too.
pub fn revoke_family(
    conn: &impl Sql,
    family_id: &FamilyId,
    reason: health_core::Reason,
    now: i64,
) -> anyhow::Result<Vec<(TokenId, i64)>> {
    const REVOKE: &str =
        "UPDATE refresh_families SET revoked_at = ?, revoked_reason = ? WHERE family_id = ? AND revoked_at IS NULL";
    conn.execute(REVOKE, &[Value::Integer(now), text(reason.as_str()), text(family_id.as_str())])
        .context("revoking family")?;
    family_access_tokens(conn, family_id, now)
}

/// Whether a family has been revoked (or does not exist).
pub fn family_revoked(conn: &impl Sql, family_id: &FamilyId) -> anyhow::Result<bool> {
    const SELECT: &str = "SELECT 1 FROM refresh_families WHERE family_id = ? AND revoked_at IS NULL";
    Ok(first(&conn.execute(SELECT, &[text(family_id.as_str())]).context("reading family")?).is_none())
}

/// The live families of a user (logout-all, password reset, disable).
pub fn user_families(conn: &impl Sql, tenant: &TenantId, user_id: &Opaque) -> anyhow::Result<Vec<FamilyId>> {
    const SELECT: &str =
        "SELECT family_id FROM refresh_families WHERE tenant_id = ? AND user_id = ? AND revoked_at IS NULL";
    let rows = conn.execute(SELECT, &[text(tenant.as_str()), text(user_id.as_str())]).context("listing families")?;
    rows.rows().map(|r| stored(&r, "family_id", FamilyId::parse)).collect()
}

/// The access tokens issued in a family that may still be valid at `now`, without revoking it.
pub fn family_access_tokens(conn: &impl Sql, family_id: &FamilyId, now: i64) -> anyhow::Result<Vec<(TokenId, i64)>> {
    const ACCESS: &str = "SELECT access_jti, access_exp FROM refresh_tokens WHERE family_id = ? AND access_exp > ?";
    let rows =
        conn.execute(ACCESS, &[text(family_id.as_str()), Value::Integer(now)]).context("listing family tokens")?;
    access_tokens(&rows)
}

/// The family an access token was issued in, if it came with a refresh token.
pub fn family_of_access(conn: &impl Sql, access_jti: &TokenId) -> anyhow::Result<Option<FamilyId>> {
    const SELECT: &str = "SELECT family_id FROM refresh_tokens WHERE access_jti = ? LIMIT 1";
    let rows = conn.execute(SELECT, &[text(access_jti.as_str())]).context("finding family")?;
    first(&rows).map(|r| stored(&r, "family_id", FamilyId::parse)).transpose()
}

// ---- clients -----------------------------------------------------------------------------

pub struct Client {
    pub client_id: ClientId,
    pub tenant_id: TenantId,
    pub name: String,
    pub secret_hash: Option<String>,
    pub sig_jwk: Option<String>,
    pub enc_jwk: String,
    pub disabled: bool,
}

const CLIENT_COLUMNS: &str = "client_id, tenant_id, name, secret_hash, sig_jwk, enc_jwk, disabled";

fn client_from(row: &spin_sdk::sqlite::Row<'_>) -> anyhow::Result<Client> {
    Ok(Client {
        client_id: stored(row, "client_id", ClientId::parse)?,
        tenant_id: stored(row, "tenant_id", TenantId::parse)?,
        name: row.get::<&str>("name").unwrap_or_default().to_owned(),
        secret_hash: row.get::<&str>("secret_hash").map(str::to_owned),
        sig_jwk: row.get::<&str>("sig_jwk").map(str::to_owned),
        enc_jwk: row.get::<&str>("enc_jwk").unwrap_or_default().to_owned(),
        disabled: row.get::<i64>("disabled").unwrap_or(1) != 0,
    })
}

pub fn find_client(conn: &impl Sql, client_id: &ClientId) -> anyhow::Result<Option<Client>> {
    let sql = format!("SELECT {CLIENT_COLUMNS} FROM clients WHERE client_id = ?");
    let rows = conn.execute(&sql, &[text(client_id.as_str())]).context("looking up client")?;
    first(&rows).map(|r| client_from(&r)).transpose()
}

pub fn list_clients(conn: &impl Sql, tenant: &TenantId) -> anyhow::Result<Vec<Client>> {
    let sql = format!("SELECT {CLIENT_COLUMNS} FROM clients WHERE tenant_id = ? ORDER BY client_id");
    let rows = conn.execute(&sql, &[text(tenant.as_str())]).context("listing clients")?;
    rows.rows().map(|r| client_from(&r)).collect()
}

pub fn create_client(conn: &impl Sql, client: &Client, now: i64) -> anyhow::Result<bool> {
    const INSERT: &str =
        "INSERT INTO clients (client_id, tenant_id, name, secret_hash, sig_jwk, enc_jwk, disabled, created_at)
        VALUES (?, ?, ?, ?, ?, ?, 0, ?) ON CONFLICT DO NOTHING RETURNING client_id";
    let opt = |v: &Option<String>| v.as_ref().map_or(Value::Null, |s| text(s.as_str()));
    let params = [
        text(client.client_id.as_str()),
        text(client.tenant_id.as_str()),
        text(&client.name),
        opt(&client.secret_hash),
        opt(&client.sig_jwk),
        text(&client.enc_jwk),
        Value::Integer(now),
    ];
    Ok(first(&conn.execute(INSERT, &params).context("registering client")?).is_some())
}

pub fn set_client_disabled(
    conn: &impl Sql,
    tenant: &TenantId,
    client_id: &ClientId,
    disabled: bool,
) -> anyhow::Result<bool> {
    const UPDATE: &str = "UPDATE clients SET disabled = ? WHERE tenant_id = ? AND client_id = ? RETURNING client_id";
    let params = [Value::Integer(i64::from(disabled)), text(tenant.as_str()), text(client_id.as_str())];
    Ok(first(&conn.execute(UPDATE, &params).context("updating client")?).is_some())
}

/// Records a client assertion's `jti`; `false` if it was seen before (a replay). Expired
/// entries are swept first so the table stays small.
pub fn spend_assertion(
    conn: &impl Sql,
    client_id: &ClientId,
    jti: &str,
    expires_at: i64,
    now: i64,
) -> anyhow::Result<bool> {
    conn.execute("DELETE FROM client_assertions WHERE expires_at < ?", &[Value::Integer(now - 120)])
        .context("sweeping assertions")?;
    const INSERT: &str = "INSERT INTO client_assertions (client_id, jti, expires_at) VALUES (?, ?, ?)
        ON CONFLICT DO NOTHING RETURNING jti";
    let params = [text(client_id.as_str()), text(jti), Value::Integer(expires_at)];
    Ok(first(&conn.execute(INSERT, &params).context("recording assertion")?).is_some())
}
