//! SQLite as every component opens it, whichever backend stands behind Spin's `sqlite`
//! interface: Spin's in-process SQLite (`type = "spin"`, a file per database) or libSQL
//! (`type = "libsql"`, sqld or Turso over Hrana). The application sets what it relies on itself,
//! through statements, instead of assuming how the host opened the database; and it never reads
//! meaning out of an error's text. Spin hands every failure to the guest as `Error::Io(String)`,
//! and the backends word the same failure differently: rusqlite says `database is locked` and
//! `UNIQUE constraint failed: ...`; sqld says `SQLite error: ...`, `Server cannot handle
//! additional transactions` or `Transaction timed out` (libsql-server `hrana/stmt.rs`), wrapped
//! by the libSQL client in ``Hrana: `...` ``.
//!
//! - Per connection, in [`open`]: `busy_timeout` and `synchronous`.
//! - Per database, once, in [`migrate`]: WAL, then the schema, each version recorded in a
//!   `schema_migrations` table inside one `BEGIN IMMEDIATE` transaction.
//! - Races are decided by SQL, never by an error: `INSERT ... ON CONFLICT DO NOTHING RETURNING`,
//!   `UPDATE ... WHERE <expected> RETURNING` (a row back means this writer won), and
//!   [`transaction`] where a read-modify-write must be atomic.
//! - Failures are retried a bounded number of times whatever their text ([`Retry`]); only
//!   operations that are safe to repeat use it, and giving up is an error, never a success.
//!
//! What it does not do: pool or share connections (Spin opens one per `Connection::open`), or
//! tune anything libSQL's server manages for itself (its journal, its locking).

use std::time::Duration;

use anyhow::Context;
use spin_sdk::sqlite::{Connection, Error, QueryResult, Value};

/// The one operation everything here needs from a connection, so the migration, transaction
/// and retry logic also run natively against real SQLite in tests.
pub trait Sql {
    fn execute(&self, sql: &str, params: &[Value]) -> Result<QueryResult, Error>;
}

impl Sql for Connection {
    fn execute(&self, sql: &str, params: &[Value]) -> Result<QueryResult, Error> {
        Connection::execute(self, sql, params)
    }
}

/// How long one statement waits for another connection's lock before it fails, in ms. Under
/// Spin's in-process SQLite this is rusqlite's default too, but that is the host's choice; the
/// request deadline and the [`Retry`] bounds are reasoned against this value.
pub const BUSY_TIMEOUT_MS: u32 = 5_000;

/// Per-connection settings, in order. `synchronous = NORMAL`: with WAL (set by [`migrate`]) a
/// commit is durable once a checkpoint syncs the WAL, so a power cut (not a crash of the
/// process) may lose the last commits but never corrupts the file (sqlite.org/pragma.html
/// #pragma_synchronous); that is the trade the platform makes for one fsync per checkpoint
/// instead of one per write. In the rollback-journal mode a database stays in if WAL cannot be
/// set, NORMAL is corruption-safe too except on old filesystems (same page).
const CONNECTION_PRAGMAS: [&str; 2] = ["PRAGMA busy_timeout = 5000", "PRAGMA synchronous = NORMAL"];

/// Opens the database `label` (as declared in spin.toml) and applies [`CONNECTION_PRAGMAS`].
///
/// Both are per connection, so they cost two statements on every open (each open is a new
/// connection under Spin); journal mode, persistent in the file, is left to [`migrate`].
/// A backend that refuses them is not an error: the libSQL client refuses any `PRAGMA x = y`
/// of these before sending it ("unsupported statement", libsql `src/parser.rs`), and a remote
/// server's connections are not ours to tune (each autocommit statement may run on another
/// one). Nothing is hidden by that: if the connection itself is broken (Spin opens the file
/// lazily, on the first statement), the next statement fails, and that error is returned.
pub fn open(label: &str) -> anyhow::Result<Connection> {
    let conn = Connection::open(label).with_context(|| format!("opening the {label:?} database"))?;
    configure(&conn);
    Ok(conn)
}

thread_local! {
    /// The connections this instance has opened with [`shared`], by label.
    static SHARED: std::cell::RefCell<Vec<(&'static str, std::rc::Rc<Connection>)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// The instance's one connection to `label`: opened with [`open`] and `prepare`d (the schema
/// check) the first time, then the same connection for every later use in this instance, so a
/// request that reads and then writes a database pays for one connection, its pragmas and its
/// schema check once. Spin closes it when the instance ends. A connection whose `prepare`
/// failed is not kept: the next use tries again.
pub fn shared(
    label: &'static str,
    prepare: impl FnOnce(&Connection) -> anyhow::Result<()>,
) -> anyhow::Result<std::rc::Rc<Connection>> {
    let kept = SHARED.with_borrow(|open| open.iter().find(|(l, _)| *l == label).map(|(_, c)| c.clone()));
    if let Some(conn) = kept {
        return Ok(conn);
    }
    let conn = open(label)?;
    prepare(&conn)?;
    let conn = std::rc::Rc::new(conn);
    SHARED.with_borrow_mut(|open| open.push((label, conn.clone())));
    Ok(conn)
}

/// Applies [`CONNECTION_PRAGMAS`], stopping at the first the backend refuses (see [`open`]);
/// `true` if all were applied.
pub fn configure<C: Sql>(conn: &C) -> bool {
    CONNECTION_PRAGMAS.iter().all(|pragma| conn.execute(pragma, &[]).is_ok())
}

/// The first column of the first row, as text.
fn first_text(result: &QueryResult) -> Option<String> {
    result.rows.first().and_then(|row| row.get::<&str>(0)).map(str::to_ascii_lowercase)
}

/// The first column of the first row, as an integer (`None` for NULL or no row).
fn first_integer(result: &QueryResult) -> Option<i64> {
    result.rows.first().and_then(|row| row.get::<i64>(0))
}

/// Puts a local database in WAL mode, which is persistent in the file, so [`migrate`] does it
/// once rather than every open. Never fatal: libSQL's server keeps its own journal (sqld runs
/// WAL and answers `wal` to the read; Turso may refuse the read: then it is left alone), and a
/// local database that cannot switch stays correct in its rollback journal, only slower
/// (logged). Switching needs a moment with no other writer, and the first requests of a fresh
/// deployment open the same database at once, so it is retried.
pub fn ensure_wal<C: Sql>(conn: &C) {
    match conn.execute("PRAGMA journal_mode", &[]) {
        Err(e) => {
            crate::log::warn("sqlite_journal_mode_unreadable", e.to_string());
            return;
        }
        // `memory`: an in-memory database, which has no WAL.
        Ok(result) if matches!(first_text(&result).as_deref(), Some("wal" | "memory")) => return,
        Ok(_) => {}
    }
    let switched = Retry::WAL.run("switching the database to WAL", || {
        let result = conn.execute("PRAGMA journal_mode = WAL", &[]).context("PRAGMA journal_mode = WAL")?;
        // SQLite answers the mode it is in after the statement: anything but `wal` means it did
        // not switch (yet).
        Ok((first_text(&result).as_deref() == Some("wal")).then_some(()))
    });
    if let Err(e) = switched {
        crate::log::warn("sqlite_rollback_journal", format!("{e:#}"));
    }
}

/// Runs `body` inside `BEGIN IMMEDIATE ... COMMIT`: the write lock is taken first, so a
/// read-modify-write (read the chain head, append after it) cannot interleave with another
/// writer, and waiting for the lock is bounded by [`BUSY_TIMEOUT_MS`]. On any error the
/// transaction is rolled back and the error returned; nothing of `body` is kept. The libSQL
/// client keeps its Hrana stream (one server connection) open from `BEGIN` to `COMMIT`, so this
/// holds there too. `body` must not open a transaction itself.
pub fn transaction<C: Sql, T>(conn: &C, body: impl FnOnce(&C) -> anyhow::Result<T>) -> anyhow::Result<T> {
    conn.execute("BEGIN IMMEDIATE", &[]).context("beginning a write transaction")?;
    let done = body(conn).and_then(|value| {
        conn.execute("COMMIT", &[]).context("committing")?;
        Ok(value)
    });
    if done.is_err()
        && let Err(e) = conn.execute("ROLLBACK", &[])
    {
        // SQLite may already have rolled back (some errors end the transaction themselves); the
        // original error is the one that matters, and it is returned.
        crate::log::warn("sqlite_rollback_failed", e.to_string());
    }
    done
}

/// Bounded retries of an operation that is safe to repeat, whatever its error says.
///
/// The operation answers `Ok(Some(value))` when done, `Ok(None)` when it lost a race another
/// writer won (a compare-and-set that changed nothing): it is tried again at once, since the
/// other writer made progress. An `Err` (a lock held past the busy timeout, libSQL's server out
/// of transaction slots, a dropped connection) is tried again after a pause that doubles up to
/// `max_pause`. After `attempts` tries the last error (or the lost races) is returned: a
/// failure is never turned into a success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    pub attempts: u32,
    pub first_pause: Duration,
    pub max_pause: Duration,
}

impl Retry {
    /// Writes on a request's path (audit append, one-time ledger). Each try may itself wait up
    /// to [`BUSY_TIMEOUT_MS`] for the lock, so few tries: what outlasts them is an outage.
    pub const WRITE: Retry =
        Retry { attempts: 4, first_pause: Duration::from_millis(5), max_pause: Duration::from_millis(100) };
    /// Compare-and-set loops (login attempt counters): lost races are the normal case under
    /// concurrent guesses, errors are not.
    pub const SWAP: Retry =
        Retry { attempts: 32, first_pause: Duration::from_millis(5), max_pause: Duration::from_millis(100) };
    /// The one-time switch to WAL (see [`ensure_wal`]).
    pub const WAL: Retry =
        Retry { attempts: 6, first_pause: Duration::from_millis(20), max_pause: Duration::from_millis(500) };
    /// A schema migration (see [`migrate`]).
    pub const MIGRATE: Retry =
        Retry { attempts: 3, first_pause: Duration::from_millis(20), max_pause: Duration::from_millis(200) };

    /// The pause after the `n`th failed try (0-based).
    pub fn pause(&self, n: u32) -> Duration {
        self.first_pause.saturating_mul(1u32.checked_shl(n).unwrap_or(u32::MAX)).min(self.max_pause)
    }

    /// Runs `op` as described on [`Retry`], sleeping between failed tries.
    pub fn run<T>(&self, what: &str, op: impl FnMut() -> anyhow::Result<Option<T>>) -> anyhow::Result<T> {
        self.run_with(what, op, std::thread::sleep)
    }

    /// [`Retry::run`] with the sleep as a parameter, for tests.
    pub fn run_with<T>(
        &self,
        what: &str,
        mut op: impl FnMut() -> anyhow::Result<Option<T>>,
        mut sleep: impl FnMut(Duration),
    ) -> anyhow::Result<T> {
        let mut failures = 0;
        let mut last_error = None;
        for attempt in 0..self.attempts {
            match op() {
                Ok(Some(value)) => return Ok(value),
                Ok(None) => last_error = None,
                Err(e) => {
                    last_error = Some(e);
                    if attempt + 1 < self.attempts {
                        sleep(self.pause(failures));
                    }
                    failures += 1;
                }
            }
        }
        match last_error {
            Some(e) => Err(e.context(format!("{what}: failed {} times", self.attempts))),
            None => Err(anyhow::anyhow!("{what}: lost {} races in a row", self.attempts)),
        }
    }
}

/// One version of a schema: the steps that bring the version before it to this one.
#[derive(Debug, Clone, Copy)]
pub struct Migration<'a> {
    pub version: i64,
    pub steps: &'a [Step<'a>],
}

/// One schema change. Every step must be idempotent (`IF NOT EXISTS`, `INSERT OR IGNORE`): a
/// database migrated by an earlier release's non-transactional migration may hold part of a
/// version without its record.
#[derive(Debug, Clone, Copy)]
pub enum Step<'a> {
    Sql(&'a str),
    /// `ALTER TABLE table ADD COLUMN column definition`, skipped when the column exists (SQLite
    /// has no `ADD COLUMN IF NOT EXISTS`; asked of `pragma_table_info`, not of an error text).
    AddColumn {
        table: &'a str,
        column: &'a str,
        definition: &'a str,
    },
}

const MIGRATIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    applied_at INTEGER NOT NULL,
    how TEXT NOT NULL
)";
const CURRENT_VERSION: &str = "SELECT MAX(version) AS version FROM schema_migrations";
const RECORD_VERSION: &str =
    "INSERT INTO schema_migrations (version, applied_at, how) VALUES (?, ?, ?) ON CONFLICT DO NOTHING";
const HAS_COLUMN: &str = "SELECT COUNT(*) AS n FROM pragma_table_info(?) WHERE name = ?";

/// The highest version in `migrations`.
pub fn target_version(migrations: &[Migration<'_>]) -> i64 {
    migrations.iter().map(|m| m.version).max().unwrap_or(0)
}

/// Brings the database to the newest of `migrations` and runs `then` (idempotent seeding) in
/// the same transaction, so an interrupted first run leaves nothing half-done and is simply
/// repeated by the next request.
///
/// The version lives in a `schema_migrations` table, one row per version, not in `PRAGMA
/// user_version`: the libSQL client Spin 4.0.2 links (libsql 0.5, `src/parser.rs`) and sqld
/// accept both reading and setting it (sqld since libsql/sqld#559, 2023), but hosted Turso is
/// reported to refuse `PRAGMA user_version = N` with "SQL not allowed statement" (e.g.
/// dbcodeio/public#446, 2025), and a table reads and writes the same everywhere. Databases of
/// earlier releases carry their version in `user_version`; the first migration adopts it into
/// the table (a backend that cannot read `user_version` never had one set, so 0 is right there).
///
/// Cost: one `SELECT` per open when the schema is current. Concurrent first requests all see
/// an old version; `BEGIN IMMEDIATE` serialises them and each re-reads the version under the
/// lock, so one migrates and the others find it done.
pub fn migrate<C: Sql>(
    conn: &C,
    migrations: &[Migration<'_>],
    then: impl Fn(&C) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let target = target_version(migrations);
    // A missing table is an error here, like any other: the slow path below either creates the
    // table or returns the real error.
    if let Ok(result) = conn.execute(CURRENT_VERSION, &[])
        && first_integer(&result).is_some_and(|current| current >= target)
    {
        return Ok(());
    }
    // Outside the transaction: SQLite cannot change the journal mode inside one, and a backend
    // that refuses `PRAGMA user_version` then fails a statement outside any Hrana transaction.
    ensure_wal(conn);
    let legacy = legacy_version(conn);
    Retry::MIGRATE.run(&format!("migrating the schema to version {target}"), || {
        transaction(conn, |conn| apply(conn, migrations, target, legacy, &then)).map(Some)
    })
}

fn apply<C: Sql>(
    conn: &C,
    migrations: &[Migration<'_>],
    target: i64,
    legacy: i64,
    then: &impl Fn(&C) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    conn.execute(MIGRATIONS_TABLE, &[]).context("creating schema_migrations")?;
    let recorded = first_integer(&conn.execute(CURRENT_VERSION, &[]).context("reading the schema version")?);
    let current = match recorded {
        Some(version) => version,
        None => {
            if legacy > 0 {
                record(conn, legacy, "adopted from PRAGMA user_version")?;
            }
            legacy
        }
    };
    if current >= target {
        return Ok(());
    }
    for migration in migrations.iter().filter(|m| m.version > current) {
        for step in migration.steps {
            run_step(conn, step).with_context(|| format!("schema version {}", migration.version))?;
        }
        record(conn, migration.version, "applied")?;
    }
    then(conn)
}

/// The version an earlier release recorded in `PRAGMA user_version`; 0 if none or unreadable.
fn legacy_version<C: Sql>(conn: &C) -> i64 {
    conn.execute("PRAGMA user_version", &[]).ok().and_then(|r| first_integer(&r)).unwrap_or(0)
}

fn record<C: Sql>(conn: &C, version: i64, how: &str) -> anyhow::Result<()> {
    let params = [Value::Integer(version), Value::Integer(crate::now()), Value::Text(how.to_owned())];
    conn.execute(RECORD_VERSION, &params).with_context(|| format!("recording schema version {version}"))?;
    Ok(())
}

fn run_step<C: Sql>(conn: &C, step: &Step<'_>) -> anyhow::Result<()> {
    match *step {
        Step::Sql(sql) => {
            conn.execute(sql, &[]).with_context(|| format!("migration statement failed: {sql}"))?;
        }
        Step::AddColumn { table, column, definition } => {
            let params = [Value::Text(table.to_owned()), Value::Text(column.to_owned())];
            let found = conn.execute(HAS_COLUMN, &params).with_context(|| format!("looking for {table}.{column}"))?;
            if first_integer(&found).unwrap_or(0) == 0 {
                let sql = format!("ALTER TABLE {table} ADD COLUMN {column} {definition}");
                conn.execute(&sql, &[]).with_context(|| format!("migration statement failed: {sql}"))?;
            }
        }
    }
    Ok(())
}

/// Real SQLite (rusqlite, bundled) behind [`Sql`], so the SQL here and in the components' own
/// stores is tested natively (feature `native`, for tests only; never in a Wasm build).
#[cfg(any(test, feature = "native"))]
pub mod testing {

    use super::*;
    use spin_sdk::sqlite::RowResult;

    pub struct Native(pub rusqlite::Connection);

    impl Native {
        pub fn open(path: &std::path::Path) -> Self {
            let conn = rusqlite::Connection::open(path).expect("opening a test database");
            // As Spin 4.0.2 opens it: rusqlite's defaults, nothing else.
            Self(conn)
        }

        pub fn text(&self, sql: &str) -> String {
            self.0.query_row(sql, [], |r| r.get::<_, String>(0)).expect(sql)
        }

        pub fn integer(&self, sql: &str) -> i64 {
            self.0.query_row(sql, [], |r| r.get::<_, i64>(0)).expect(sql)
        }
    }

    impl Sql for Native {
        fn execute(&self, sql: &str, params: &[Value]) -> Result<QueryResult, Error> {
            use rusqlite::types::Value as V;
            let io = |e: rusqlite::Error| Error::Io(e.to_string());
            let mut stmt = self.0.prepare(sql).map_err(io)?;
            let columns: Vec<String> = stmt.column_names().into_iter().map(str::to_owned).collect();
            let params = params.iter().map(|p| match p {
                Value::Integer(i) => V::Integer(*i),
                Value::Real(r) => V::Real(*r),
                Value::Text(t) => V::Text(t.clone()),
                Value::Blob(b) => V::Blob(b.clone()),
                Value::Null => V::Null,
            });
            let width = columns.len();
            let rows = stmt
                .query_map(rusqlite::params_from_iter(params), |row| {
                    (0..width)
                        .map(|i| {
                            Ok(match row.get::<_, V>(i)? {
                                V::Null => Value::Null,
                                V::Integer(i) => Value::Integer(i),
                                V::Real(r) => Value::Real(r),
                                V::Text(t) => Value::Text(t),
                                V::Blob(b) => Value::Blob(b),
                            })
                        })
                        .collect::<rusqlite::Result<Vec<_>>>()
                        .map(|values| RowResult { values })
                })
                .map_err(io)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(io)?;
            Ok(QueryResult { columns, rows })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::Native;
    use super::*;
    use std::cell::Cell;

    fn no_sleep(_: Duration) {}

    #[test]
    fn retry_returns_the_first_success() {
        let tries = Cell::new(0);
        let value = Retry::WRITE
            .run_with(
                "x",
                || {
                    tries.set(tries.get() + 1);
                    if tries.get() < 3 { anyhow::bail!("busy") } else { Ok(Some(7)) }
                },
                no_sleep,
            )
            .expect("third try succeeds");
        assert_eq!((value, tries.get()), (7, 3));
    }

    #[test]
    fn retry_gives_up_with_the_last_error_never_a_success() {
        let tries = Cell::new(0);
        let error = Retry::WRITE
            .run_with::<()>(
                "appending",
                || {
                    tries.set(tries.get() + 1);
                    anyhow::bail!("failure {}", tries.get())
                },
                no_sleep,
            )
            .expect_err("every try fails");
        assert_eq!(tries.get(), Retry::WRITE.attempts);
        let text = format!("{error:#}");
        assert!(text.contains("appending: failed 4 times") && text.contains("failure 4"), "{text}");
    }

    #[test]
    fn retry_counts_lost_races_without_pausing() {
        let pauses = Cell::new(0);
        let error = Retry::SWAP
            .run_with::<()>("counting", || Ok(None), |_| pauses.set(pauses.get() + 1))
            .expect_err("every race lost");
        assert_eq!(pauses.get(), 0);
        assert_eq!(format!("{error}"), "counting: lost 32 races in a row");
    }

    #[test]
    fn retry_pauses_double_up_to_the_cap_and_not_after_the_last_try() {
        let slept = std::cell::RefCell::new(Vec::new());
        let policy =
            Retry { attempts: 5, first_pause: Duration::from_millis(10), max_pause: Duration::from_millis(30) };
        let _ = policy.run_with::<()>("x", || anyhow::bail!("busy"), |d| slept.borrow_mut().push(d));
        let ms: Vec<u128> = slept.borrow().iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [10, 20, 30, 30]);
        assert_eq!(policy.pause(40), Duration::from_millis(30));
    }

    #[test]
    fn connection_pragmas_name_the_busy_timeout_constant() {
        assert_eq!(CONNECTION_PRAGMAS[0], format!("PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}"));
    }

    #[test]
    fn configure_sets_busy_timeout_and_synchronous_on_real_sqlite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Native::open(&dir.path().join("t.db"));
        assert!(configure(&db));
        assert_eq!(db.integer("PRAGMA busy_timeout"), i64::from(BUSY_TIMEOUT_MS));
        assert_eq!(db.integer("PRAGMA synchronous"), 1, "NORMAL");
    }

    const V1: &[Step<'_>] = &[Step::Sql("CREATE TABLE IF NOT EXISTS t (a INTEGER PRIMARY KEY)")];
    const V2: &[Step<'_>] = &[
        Step::AddColumn { table: "t", column: "b", definition: "TEXT" },
        Step::Sql("CREATE INDEX IF NOT EXISTS t_by_b ON t (b)"),
    ];
    const SCHEMA: &[Migration<'_>] = &[Migration { version: 1, steps: V1 }, Migration { version: 2, steps: V2 }];

    fn versions(db: &Native) -> Vec<(i64, String)> {
        let mut stmt = db.0.prepare("SELECT version, how FROM schema_migrations ORDER BY version").expect("prepare");
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).expect("query").map(|r| r.expect("row")).collect()
    }

    #[test]
    fn migrates_a_new_database_to_wal_and_records_each_version() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Native::open(&dir.path().join("t.db"));
        let seeded = Cell::new(0);
        migrate(&db, SCHEMA, |_| {
            seeded.set(seeded.get() + 1);
            Ok(())
        })
        .expect("migrates");
        assert_eq!(db.text("PRAGMA journal_mode"), "wal");
        assert_eq!(versions(&db), [(1, "applied".to_owned()), (2, "applied".to_owned())]);
        assert_eq!(db.integer("SELECT COUNT(*) FROM pragma_table_info('t') WHERE name = 'b'"), 1);
        // Current: one SELECT, no seeding, nothing written.
        migrate(&db, SCHEMA, |_| {
            seeded.set(seeded.get() + 1);
            Ok(())
        })
        .expect("already current");
        assert_eq!(seeded.get(), 1);
        assert_eq!(db.integer("PRAGMA user_version"), 0, "user_version is no longer written");
    }

    #[test]
    fn adopts_an_earlier_release_user_version_and_applies_only_what_is_newer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Native::open(&dir.path().join("t.db"));
        // An earlier release at version 1, which also added column `b` before it was
        // interrupted (its migration was not transactional).
        db.0.execute_batch("CREATE TABLE t (a INTEGER PRIMARY KEY, b TEXT); PRAGMA user_version = 1;")
            .expect("legacy schema");
        migrate(&db, SCHEMA, |_| Ok(())).expect("migrates");
        assert_eq!(versions(&db), [(1, "adopted from PRAGMA user_version".to_owned()), (2, "applied".to_owned())]);
        assert_eq!(db.integer("SELECT COUNT(*) FROM sqlite_master WHERE name = 't_by_b'"), 1);
    }

    #[test]
    fn a_legacy_database_already_current_is_adopted_without_running_steps() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Native::open(&dir.path().join("t.db"));
        db.0.execute_batch("CREATE TABLE t (a INTEGER PRIMARY KEY); PRAGMA user_version = 2;").expect("legacy");
        migrate(&db, SCHEMA, |_| anyhow::bail!("must not seed a current database")).expect("adopted");
        assert_eq!(versions(&db), [(2, "adopted from PRAGMA user_version".to_owned())]);
        assert_eq!(db.integer("SELECT COUNT(*) FROM pragma_table_info('t') WHERE name = 'b'"), 0);
    }

    #[test]
    fn a_failed_migration_leaves_nothing_behind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Native::open(&dir.path().join("t.db"));
        let error = migrate(&db, SCHEMA, |_| anyhow::bail!("seed failed")).expect_err("seed fails");
        assert!(format!("{error:#}").contains("seed failed"));
        assert_eq!(db.integer("SELECT COUNT(*) FROM sqlite_master WHERE name IN ('t', 'schema_migrations')"), 0);
        migrate(&db, SCHEMA, |_| Ok(())).expect("the next request migrates");
        assert_eq!(versions(&db).len(), 2);
    }

    #[test]
    fn concurrent_first_opens_migrate_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.db");
        let seeds = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    let db = Native::open(&path);
                    configure(&db);
                    migrate(&db, SCHEMA, |conn| {
                        seeds.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        conn.execute("INSERT INTO t (a, b) VALUES (1, 'seed')", &[])?;
                        Ok(())
                    })
                    .expect("every opener gets a migrated database");
                });
            }
        });
        let db = Native::open(&path);
        assert_eq!(seeds.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(versions(&db).len(), 2);
        assert_eq!(db.text("PRAGMA journal_mode"), "wal");
    }

    #[test]
    fn a_transaction_rolls_back_on_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Native::open(&dir.path().join("t.db"));
        db.0.execute_batch("CREATE TABLE t (a INTEGER PRIMARY KEY)").expect("table");
        let failed: anyhow::Result<()> = transaction(&db, |c| {
            c.execute("INSERT INTO t VALUES (1)", &[])?;
            anyhow::bail!("after the insert")
        });
        assert!(failed.is_err());
        assert_eq!(db.integer("SELECT COUNT(*) FROM t"), 0);
        transaction(&db, |c| c.execute("INSERT INTO t VALUES (2)", &[]).map_err(anyhow::Error::from)).expect("ok");
        assert_eq!(db.integer("SELECT COUNT(*) FROM t"), 1);
    }
}
