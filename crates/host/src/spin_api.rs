//! The Spin host interfaces that spin-sdk 5.x guests import (`fermyon:spin/key-value`,
//! `sqlite` and `variables` @2.0.0), backed by local SQLite files. As in Spin, the outer
//! `Result` is a host failure (a trap) and the inner one the error the guest sees, e.g.
//! `access-denied` for a label not granted to the component.

use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use rusqlite::types::{Value as SqlValue, ValueRef};
use wasmtime::component::{HasSelf, Linker, Resource};

use crate::app::State;

mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit/deps/spin@2.0.0",
        world: "fermyon:spin/platform",
        imports: { default: trappable },
        with: {
            "fermyon:spin/key-value@2.0.0.store": super::KvStore,
            "fermyon:spin/sqlite@2.0.0.connection": super::SqlConnection,
        },
    });
}

use bindings::fermyon::spin::{key_value, sqlite, variables};

/// An open key-value store: one label's rows in its backing database.
pub struct KvStore {
    label: String,
    db: Arc<Mutex<rusqlite::Connection>>,
}

/// An open SQLite connection, exclusively the guest's until it is dropped (a guest may run its
/// own transactions on it). It comes from and goes back to its database's [`SqlitePool`].
pub struct SqlConnection {
    db: Option<rusqlite::Connection>,
    pool: Arc<SqlitePool>,
}

impl Drop for SqlConnection {
    fn drop(&mut self) {
        if let Some(db) = self.db.take() {
            self.pool.put(db);
        }
    }
}

/// Idle connections of one SQLite database, so a request does not pay for opening the file and
/// setting its pragmas. A connection left inside a transaction is closed, never reused.
pub struct SqlitePool {
    path: std::path::PathBuf,
    idle: Mutex<Vec<rusqlite::Connection>>,
}

const MAX_IDLE_CONNECTIONS: usize = 16;

impl SqlitePool {
    pub fn new(path: std::path::PathBuf) -> Self {
        Self { path, idle: Mutex::new(Vec::new()) }
    }

    fn take(&self) -> anyhow::Result<rusqlite::Connection> {
        let idle = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        match idle {
            Some(db) => Ok(db),
            None => open_sqlite(&self.path),
        }
    }

    fn put(&self, db: rusqlite::Connection) {
        if !db.is_autocommit() {
            return; // dropped: closing rolls the guest's unfinished transaction back
        }
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < MAX_IDLE_CONNECTIONS
        {
            idle.push(db);
        }
    }
}

pub fn add_to_linker(linker: &mut Linker<State>) -> wasmtime::Result<()> {
    bindings::Platform::add_to_linker::<State, HasSelf<State>>(linker, |s| s)
}

/// Opens a SQLite file configured for concurrent use by many short-lived instances.
pub fn open_sqlite(path: &Path) -> anyhow::Result<rusqlite::Connection> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let db = rusqlite::Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
    db.busy_handler(Some(retry_when_busy))?;
    until_not_busy(|| db.pragma_update(None, "journal_mode", "WAL"))?;
    until_not_busy(|| db.pragma_update(None, "synchronous", "NORMAL"))?;
    Ok(db)
}

/// Runs `op` again while it fails with `SQLITE_BUSY`, for up to [`BUSY_WAIT`] like the busy
/// handler. Switching a new database to WAL needs an exclusive lock, and SQLite answers a
/// connection that would deadlock waiting for it with `SQLITE_BUSY` at once, without calling
/// the busy handler: the first requests of a fresh state directory, opening the same database
/// together, failed that way ("database is locked").
fn until_not_busy<T>(mut op: impl FnMut() -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    let deadline = std::time::Instant::now() + BUSY_WAIT;
    loop {
        match op() {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
            other => return other,
        }
    }
}

/// How long a connection waits for another's lock before `SQLITE_BUSY` reaches the guest.
const BUSY_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
/// Tries of [`retry_when_busy`] before a statement gives up with `SQLITE_BUSY`: [`BUSY_WAIT`]
/// (the first 50 back off to 1 ms in about 25 ms; every later one sleeps 1 ms).
const BUSY_ATTEMPTS: i32 = 50 + BUSY_WAIT.as_millis() as i32;

/// Waits for another connection's write lock. SQLite's default handler sleeps 1, 2, 5, 10… ms
/// between tries, while the writers here (one audit row, one key-value pair) hold the lock for
/// tens of microseconds; at 16 concurrent requests those sleeps, not the work, made the slowest
/// requests and idled the worker threads. Yield first, then back off from 20 µs to 1 ms.
fn retry_when_busy(attempt: i32) -> bool {
    match attempt {
        0..4 => std::thread::yield_now(),
        BUSY_ATTEMPTS.. => return false,
        _ => std::thread::sleep(std::time::Duration::from_micros((20 * attempt.unsigned_abs()).min(1000).into())),
    }
    true
}

pub const KV_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS spin_key_value (store TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL, PRIMARY KEY (store, key))";

fn kv_error(e: impl std::fmt::Display) -> key_value::Error {
    key_value::Error::Other(e.to_string())
}

impl key_value::Host for State {}

impl key_value::HostStore for State {
    fn open(&mut self, label: String) -> wasmtime::Result<Result<Resource<KvStore>, key_value::Error>> {
        if !self.component.key_value_stores.contains(&label) {
            return Ok(Err(key_value::Error::AccessDenied));
        }
        let Some(db) = self.shared.key_value.get(&label).cloned() else {
            return Ok(Err(key_value::Error::NoSuchStore));
        };
        Ok(Ok(self.table.push(KvStore { label, db })?))
    }

    fn get(
        &mut self,
        store: Resource<KvStore>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, key_value::Error>> {
        let store = self.table.get(&store)?;
        let db = store.db.lock().map_err(|_| wasmtime::format_err!("key-value lock poisoned"))?;
        let result = db
            .query_row("SELECT value FROM spin_key_value WHERE store = ?1 AND key = ?2", (&store.label, &key), |r| {
                r.get(0)
            })
            .map(Some)
            .or_else(|e| if e == rusqlite::Error::QueryReturnedNoRows { Ok(None) } else { Err(e) });
        Ok(result.map_err(kv_error))
    }

    fn set(
        &mut self,
        store: Resource<KvStore>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), key_value::Error>> {
        let store = self.table.get(&store)?;
        let db = store.db.lock().map_err(|_| wasmtime::format_err!("key-value lock poisoned"))?;
        let result = db.execute(
            "INSERT INTO spin_key_value (store, key, value) VALUES (?1, ?2, ?3)
             ON CONFLICT (store, key) DO UPDATE SET value = excluded.value",
            (&store.label, &key, &value),
        );
        Ok(result.map(|_| ()).map_err(kv_error))
    }

    fn delete(&mut self, store: Resource<KvStore>, key: String) -> wasmtime::Result<Result<(), key_value::Error>> {
        let store = self.table.get(&store)?;
        let db = store.db.lock().map_err(|_| wasmtime::format_err!("key-value lock poisoned"))?;
        let result = db.execute("DELETE FROM spin_key_value WHERE store = ?1 AND key = ?2", (&store.label, &key));
        Ok(result.map(|_| ()).map_err(kv_error))
    }

    fn exists(&mut self, store: Resource<KvStore>, key: String) -> wasmtime::Result<Result<bool, key_value::Error>> {
        Ok(self.get(store, key)?.map(|v| v.is_some()))
    }

    fn get_keys(&mut self, store: Resource<KvStore>) -> wasmtime::Result<Result<Vec<String>, key_value::Error>> {
        let store = self.table.get(&store)?;
        let db = store.db.lock().map_err(|_| wasmtime::format_err!("key-value lock poisoned"))?;
        let keys = (|| {
            let mut stmt = db.prepare_cached("SELECT key FROM spin_key_value WHERE store = ?1 ORDER BY key")?;
            let rows = stmt.query_map([&store.label], |r| r.get::<_, String>(0))?;
            rows.collect::<Result<Vec<_>, _>>()
        })();
        Ok(keys.map_err(kv_error))
    }

    fn drop(&mut self, store: Resource<KvStore>) -> wasmtime::Result<()> {
        self.table.delete(store)?;
        Ok(())
    }
}

impl sqlite::Host for State {}

fn to_sql(value: sqlite::Value) -> SqlValue {
    match value {
        sqlite::Value::Integer(i) => SqlValue::Integer(i),
        sqlite::Value::Real(f) => SqlValue::Real(f),
        sqlite::Value::Text(t) => SqlValue::Text(t),
        sqlite::Value::Blob(b) => SqlValue::Blob(b),
        sqlite::Value::Null => SqlValue::Null,
    }
}

fn from_sql(value: ValueRef<'_>) -> sqlite::Value {
    match value {
        ValueRef::Integer(i) => sqlite::Value::Integer(i),
        ValueRef::Real(f) => sqlite::Value::Real(f),
        ValueRef::Text(t) => sqlite::Value::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => sqlite::Value::Blob(b.to_vec()),
        ValueRef::Null => sqlite::Value::Null,
    }
}

fn execute(
    db: &rusqlite::Connection,
    statement: &str,
    params: Vec<sqlite::Value>,
) -> rusqlite::Result<sqlite::QueryResult> {
    let mut stmt = db.prepare_cached(statement)?;
    let columns: Vec<String> = stmt.column_names().into_iter().map(str::to_owned).collect();
    let params: Vec<SqlValue> = params.into_iter().map(to_sql).collect();
    let mut rows = stmt.query(rusqlite::params_from_iter(params))?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let values = (0..columns.len()).map(|i| row.get_ref(i).map(from_sql)).collect::<Result<_, _>>()?;
        out.push(sqlite::RowResult { values });
    }
    Ok(sqlite::QueryResult { columns, rows: out })
}

impl sqlite::HostConnection for State {
    fn open(&mut self, database: String) -> wasmtime::Result<Result<Resource<SqlConnection>, sqlite::Error>> {
        if !self.component.sqlite_databases.contains(&database) {
            return Ok(Err(sqlite::Error::AccessDenied));
        }
        let Some(pool) = self.shared.sqlite.get(&database).cloned() else {
            return Ok(Err(sqlite::Error::NoSuchDatabase));
        };
        match pool.take() {
            Ok(db) => Ok(Ok(self.table.push(SqlConnection { db: Some(db), pool })?)),
            Err(e) => Ok(Err(sqlite::Error::Io(format!("{e:#}")))),
        }
    }

    fn execute(
        &mut self,
        conn: Resource<SqlConnection>,
        statement: String,
        parameters: Vec<sqlite::Value>,
    ) -> wasmtime::Result<Result<sqlite::QueryResult, sqlite::Error>> {
        let conn = self.table.get(&conn)?;
        let db = conn.db.as_ref().ok_or_else(|| wasmtime::format_err!("sqlite connection already closed"))?;
        Ok(execute(db, &statement, parameters).map_err(|e| sqlite::Error::Io(e.to_string())))
    }

    fn drop(&mut self, conn: Resource<SqlConnection>) -> wasmtime::Result<()> {
        self.table.delete(conn)?;
        Ok(())
    }
}

impl variables::Host for State {
    fn get(&mut self, name: String) -> wasmtime::Result<Result<String, variables::Error>> {
        // Spin's words for both errors (`crates/expressions/src/lib.rs`).
        if let Some(reason) = crate::variables::name_error(&name) {
            return Ok(Err(variables::Error::InvalidName(reason)));
        }
        let undefined = || variables::Error::Undefined(format!("no variable for {:?}.{name:?}", self.component.id));
        Ok(self.component.variables.get(&name).cloned().ok_or_else(undefined))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_writer_waits_for_another_connections_write_lock_instead_of_failing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("busy.db");
        let holder = open_sqlite(&path).unwrap();
        holder.execute_batch("CREATE TABLE t (x INTEGER); BEGIN IMMEDIATE; INSERT INTO t VALUES (1);").unwrap();
        let waiter = std::thread::spawn(move || {
            let db = open_sqlite(&path).unwrap();
            db.execute("INSERT INTO t VALUES (2)", [])
        });
        std::thread::sleep(Duration::from_millis(100));
        holder.execute_batch("COMMIT").unwrap();
        // Without a busy handler this is SQLITE_BUSY at once.
        waiter.join().unwrap().expect("the second writer waits for the lock, then commits");
        let rows: i64 = holder.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).unwrap();
        assert_eq!(rows, 2);
    }

    #[test]
    fn many_connections_opening_a_fresh_database_at_once_all_succeed() {
        for _ in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("fresh.db");
            let openers: Vec<_> = (0..16)
                .map(|_| {
                    let path = path.clone();
                    std::thread::spawn(move || {
                        let db = open_sqlite(&path)?;
                        db.execute_batch("CREATE TABLE IF NOT EXISTS t (x INTEGER); INSERT INTO t VALUES (1);")?;
                        anyhow::Ok(())
                    })
                })
                .collect();
            for opener in openers {
                opener.join().unwrap().expect("every connection opens and writes");
            }
            let db = open_sqlite(&path).unwrap();
            let mode: String = db.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
            assert_eq!(mode, "wal");
        }
    }

    #[test]
    fn the_busy_handler_gives_up_after_its_attempts() {
        assert!(retry_when_busy(0));
        assert!(retry_when_busy(BUSY_ATTEMPTS - 1));
        assert!(!retry_when_busy(BUSY_ATTEMPTS));
    }
}
