//! The Spin host interfaces that spin-sdk 5.x guests import (`fermyon:spin/key-value`,
//! `sqlite` and `variables` @2.0.0), backed by local SQLite files opened as Spin 4.0.2 opens
//! them. As in Spin, the outer `Result` is a host failure (a trap) and the inner one the error
//! the guest sees, e.g. `access-denied` for a label not granted to the component.
//!
//! - SQLite (Spin's `crates/sqlite-inproc/src/lib.rs`, `crates/factor-sqlite/src/host.rs`):
//!   every `open` is a new connection of its own, opened at its first statement with
//!   rusqlite's defaults (SQLite's rollback journal, `synchronous=FULL`, rusqlite's 5 s busy
//!   timeout), with an authorizer denying `ATTACH` of files unless the runtime config sets
//!   `allow_attach_file`; closed when the guest drops it. At most 256 open per instance.
//! - Key-value (Spin's `crates/key-value-spin/src/store.rs`): one connection per store label,
//!   opened at the first `open` with the same defaults and Spin's `spin_key_value` table,
//!   shared by every instance behind a mutex. Open stores are not capped (Spin's table for them
//!   has a capacity of `u32::MAX`, `crates/factor-key-value/src/lib.rs`).
//! - Every statement runs on Tokio's blocking pool, never on an async worker thread.

use std::sync::{Arc, Mutex, OnceLock};

use rusqlite::types::{Value as SqlValue, ValueRef};
use wasmtime::component::{HasSelf, Linker, Resource};

use crate::app::State;
use crate::runtime_config::{Location, SqliteDatabase};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit/deps/spin@2.0.0",
        world: "fermyon:spin/platform",
        imports: { default: async | trappable },
        with: {
            "fermyon:spin/key-value@2.0.0.store": super::KvStore,
            "fermyon:spin/sqlite@2.0.0.connection": super::SqlConnection,
        },
    });
}

use bindings::fermyon::spin::{key_value, sqlite, variables};

/// Spin's `MAX_HOST_BUFFERED_BYTES` (`crates/world/src/lib.rs`): the most a query or a
/// key-value read may return to a guest.
const MAX_RESULT_BYTES: usize = 128 << 20;
/// Capacity of Spin's per-instance table of open SQLite connections.
pub(crate) const MAX_OPEN_PER_INSTANCE: usize = 256;

/// Spin's statement creating the key-value table, verbatim (`crates/key-value-spin/src/store.rs`).
pub const KV_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS spin_key_value (
                           store TEXT NOT NULL,
                           key   TEXT NOT NULL,
                           value BLOB NOT NULL,

                           PRIMARY KEY (store, key)
                        )";

type Shared = Arc<Mutex<rusqlite::Connection>>;

fn open_file(location: &Location) -> rusqlite::Result<rusqlite::Connection> {
    // rusqlite's `open` sets a 5000 ms busy timeout; nothing else is changed, as in Spin.
    match location {
        Location::InMemory => rusqlite::Connection::open_in_memory(),
        Location::Path(path) => rusqlite::Connection::open(path),
    }
}

/// Opens a database connection as Spin's sqlite-inproc does: SQLite's and rusqlite's
/// defaults, and unless `allow_attach_file`, an authorizer that denies attaching any file
/// (a temporary `''` or `':memory:'` database may still be attached).
pub fn open_sqlite(database: &SqliteDatabase) -> rusqlite::Result<rusqlite::Connection> {
    let connection = open_file(&database.location)?;
    if !database.allow_attach_file {
        connection.authorizer(Some(|ctx: rusqlite::hooks::AuthContext<'_>| {
            use rusqlite::hooks::{AuthAction, Authorization};
            match ctx.action {
                AuthAction::Attach { filename } if !matches!(filename, "" | ":memory:") => Authorization::Deny,
                _ => Authorization::Allow,
            }
        }));
    }
    Ok(connection)
}

/// Runs blocking SQLite work on Tokio's blocking pool, so a statement waiting up to the busy
/// timeout for another connection's lock never stalls the async worker threads serving other
/// requests. Spin's sqlite-inproc does the same with `spawn_blocking`; its key-value-spin uses
/// `block_in_place`, which has the same effect on Spin's multi-threaded runtime but panics on
/// the current-thread runtimes in-process tests use.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> wasmtime::Result<T> {
    tokio::task::spawn_blocking(work).await.map_err(|e| wasmtime::format_err!("blocking SQLite task failed: {e}"))
}

fn lock(connection: &Shared) -> wasmtime::Result<std::sync::MutexGuard<'_, rusqlite::Connection>> {
    connection.lock().map_err(|_| wasmtime::format_err!("SQLite connection lock poisoned"))
}

/// The database behind one key-value store label: Spin's `KeyValueSqlite`.
pub struct KeyValueDb {
    location: Location,
    connection: OnceLock<Shared>,
}

impl KeyValueDb {
    pub fn new(location: Location) -> Self {
        Self { location, connection: OnceLock::new() }
    }

    /// The label's one connection, opened (and its table created) on first use.
    fn connection(&self) -> rusqlite::Result<Shared> {
        if let Some(connection) = self.connection.get() {
            return Ok(connection.clone());
        }
        // Two first uses may race; the loser's connection is dropped, as in Spin.
        let connection = open_file(&self.location)?;
        connection.execute(KV_SCHEMA, [])?;
        Ok(self.connection.get_or_init(|| Arc::new(Mutex::new(connection))).clone())
    }
}

/// An open key-value store: one label's rows in its database.
pub struct KvStore {
    label: String,
    connection: Shared,
}

/// An open SQLite connection, the guest's own until it drops it (Spin's `InProcConnection`).
pub struct SqlConnection(Arc<LazyConnection>);

struct LazyConnection {
    database: Arc<SqliteDatabase>,
    connection: OnceLock<Shared>,
}

impl LazyConnection {
    /// The connection, opened at the first statement as Spin opens it.
    fn connection(&self) -> rusqlite::Result<Shared> {
        if let Some(connection) = self.connection.get() {
            return Ok(connection.clone());
        }
        let connection = open_sqlite(&self.database)?;
        Ok(self.connection.get_or_init(|| Arc::new(Mutex::new(connection))).clone())
    }
}

pub fn add_to_linker(linker: &mut Linker<State>) -> wasmtime::Result<()> {
    bindings::Platform::add_to_linker::<State, HasSelf<State>>(linker, |s| s)
}

fn kv_error(e: impl std::fmt::Display) -> key_value::Error {
    key_value::Error::Other(e.to_string())
}

fn too_large() -> String {
    format!("query result exceeds limit of {MAX_RESULT_BYTES} bytes")
}

impl key_value::Host for State {}

impl key_value::HostStore for State {
    async fn open(&mut self, label: String) -> wasmtime::Result<Result<Resource<KvStore>, key_value::Error>> {
        if !self.component.key_value_stores.contains(&label) {
            return Ok(Err(key_value::Error::AccessDenied));
        }
        let Some(db) = self.shared.key_value.get(&label).cloned() else {
            return Ok(Err(key_value::Error::NoSuchStore));
        };
        let connection = match blocking(move || db.connection()).await? {
            Ok(connection) => connection,
            Err(e) => return Ok(Err(kv_error(e))),
        };
        Ok(Ok(self.table.push(KvStore { label, connection })?))
    }

    async fn get(
        &mut self,
        store: Resource<KvStore>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, key_value::Error>> {
        let store = self.table.get(&store)?;
        let (label, connection) = (store.label.clone(), store.connection.clone());
        blocking(move || {
            let value = lock(&connection)?
                .prepare_cached("SELECT value FROM spin_key_value WHERE store=$1 AND key=$2")
                .and_then(|mut stmt| {
                    stmt.query_map([&label, &key], |row| row.get::<_, Vec<u8>>(0))?.next().transpose()
                });
            Ok(match value {
                Err(e) => Err(kv_error(e)),
                Ok(value) if size_of::<Option<Vec<u8>>>() + value.as_ref().map_or(0, Vec::len) > MAX_RESULT_BYTES => {
                    Err(key_value::Error::Other(too_large()))
                }
                Ok(value) => Ok(value),
            })
        })
        .await?
    }

    async fn set(
        &mut self,
        store: Resource<KvStore>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), key_value::Error>> {
        let store = self.table.get(&store)?;
        let (label, connection) = (store.label.clone(), store.connection.clone());
        blocking(move || {
            let done = lock(&connection)?
                .prepare_cached(
                    "INSERT INTO spin_key_value (store, key, value) VALUES ($1, $2, $3)
                     ON CONFLICT(store, key) DO UPDATE SET value=$3",
                )
                .and_then(|mut stmt| stmt.execute(rusqlite::params![label, key, value]));
            Ok(done.map(drop).map_err(kv_error))
        })
        .await?
    }

    async fn delete(
        &mut self,
        store: Resource<KvStore>,
        key: String,
    ) -> wasmtime::Result<Result<(), key_value::Error>> {
        let store = self.table.get(&store)?;
        let (label, connection) = (store.label.clone(), store.connection.clone());
        blocking(move || {
            let done = lock(&connection)?
                .prepare_cached("DELETE FROM spin_key_value WHERE store=$1 AND key=$2")
                .and_then(|mut stmt| stmt.execute([&label, &key]));
            Ok(done.map(drop).map_err(kv_error))
        })
        .await?
    }

    async fn exists(
        &mut self,
        store: Resource<KvStore>,
        key: String,
    ) -> wasmtime::Result<Result<bool, key_value::Error>> {
        Ok(self.get(store, key).await?.map(|v| v.is_some()))
    }

    async fn get_keys(&mut self, store: Resource<KvStore>) -> wasmtime::Result<Result<Vec<String>, key_value::Error>> {
        let store = self.table.get(&store)?;
        let (label, connection) = (store.label.clone(), store.connection.clone());
        blocking(move || {
            let db = lock(&connection)?;
            let keys = (|| {
                let mut stmt = db.prepare_cached("SELECT key FROM spin_key_value WHERE store=$1")?;
                let rows = stmt.query_map([&label], |r| r.get::<_, String>(0))?;
                rows.collect::<Result<Vec<_>, _>>()
            })();
            Ok(match keys {
                Err(e) => Err(kv_error(e)),
                Ok(keys)
                    if size_of::<Vec<String>>() + keys.iter().map(|k| size_of::<String>() + k.len()).sum::<usize>()
                        > MAX_RESULT_BYTES =>
                {
                    Err(key_value::Error::Other(too_large()))
                }
                Ok(keys) => Ok(keys),
            })
        })
        .await?
    }

    async fn drop(&mut self, store: Resource<KvStore>) -> wasmtime::Result<()> {
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

/// What a value costs in a result, as Spin counts it (`Value::memory_size`).
fn memory_size(value: &sqlite::Value) -> usize {
    size_of::<sqlite::Value>()
        + match value {
            sqlite::Value::Text(t) => t.len(),
            sqlite::Value::Blob(b) => b.len(),
            sqlite::Value::Integer(_) | sqlite::Value::Real(_) | sqlite::Value::Null => 0,
        }
}

fn execute(
    db: &rusqlite::Connection,
    statement: &str,
    params: Vec<sqlite::Value>,
) -> Result<sqlite::QueryResult, sqlite::Error> {
    let io = |e: rusqlite::Error| sqlite::Error::Io(e.to_string());
    let mut stmt = db.prepare_cached(statement).map_err(io)?;
    let columns: Vec<String> = stmt.column_names().into_iter().map(str::to_owned).collect();
    let params: Vec<SqlValue> = params.into_iter().map(to_sql).collect();
    let mut rows = stmt.query(rusqlite::params_from_iter(params)).map_err(io)?;
    let mut out = Vec::new();
    let mut bytes = size_of::<sqlite::QueryResult>();
    while let Some(row) = rows.next().map_err(io)? {
        let values: Vec<sqlite::Value> =
            (0..columns.len()).map(|i| row.get_ref(i).map(from_sql)).collect::<Result<_, _>>().map_err(io)?;
        bytes += values.iter().map(memory_size).sum::<usize>();
        if bytes > MAX_RESULT_BYTES {
            return Err(sqlite::Error::Io(too_large()));
        }
        out.push(sqlite::RowResult { values });
    }
    Ok(sqlite::QueryResult { columns, rows: out })
}

impl sqlite::HostConnection for State {
    async fn open(&mut self, database: String) -> wasmtime::Result<Result<Resource<SqlConnection>, sqlite::Error>> {
        // Spin's `spin_sqlite.open` span: the label, never a statement.
        let span = self.span("spin_sqlite.open").map(|(tracer, mut span)| {
            span.set("database", database.clone());
            span.set("db.system", "sqlite");
            (tracer, span)
        });
        let opened = self.open_database(database);
        if let Some((tracer, span)) = span {
            tracer.end(span);
        }
        opened
    }

    async fn execute(
        &mut self,
        conn: Resource<SqlConnection>,
        statement: String,
        parameters: Vec<sqlite::Value>,
    ) -> wasmtime::Result<Result<sqlite::QueryResult, sqlite::Error>> {
        // Spin's `spin_sqlite.execute` span, named after the statement's text (hence bound
        // parameters only, in this application: the text is exported, the values are not).
        let span = self.span(statement.clone()).map(|(tracer, mut span)| {
            span.set("query", statement.clone());
            span.set("db.system", "sqlite");
            (tracer, span)
        });
        let result = self.execute_statement(conn, statement, parameters).await;
        if let Some((tracer, span)) = span {
            tracer.end(span);
        }
        result
    }

    async fn drop(&mut self, conn: Resource<SqlConnection>) -> wasmtime::Result<()> {
        // Closing the connection rolls back whatever transaction the guest left open.
        self.table.delete(conn)?;
        self.open_connections = self.open_connections.saturating_sub(1);
        Ok(())
    }
}

impl State {
    fn open_database(&mut self, database: String) -> wasmtime::Result<Result<Resource<SqlConnection>, sqlite::Error>> {
        if !self.component.sqlite_databases.contains(&database) {
            return Ok(Err(sqlite::Error::AccessDenied));
        }
        let Some(database) = self.shared.sqlite.get(&database).cloned() else {
            return Ok(Err(sqlite::Error::NoSuchDatabase));
        };
        if self.open_connections >= MAX_OPEN_PER_INSTANCE {
            return Ok(Err(sqlite::Error::Io("too many connections opened".into())));
        }
        self.open_connections += 1;
        Ok(Ok(self.table.push(SqlConnection(Arc::new(LazyConnection { database, connection: OnceLock::new() })))?))
    }

    async fn execute_statement(
        &mut self,
        conn: Resource<SqlConnection>,
        statement: String,
        parameters: Vec<sqlite::Value>,
    ) -> wasmtime::Result<Result<sqlite::QueryResult, sqlite::Error>> {
        let conn = self.table.get(&conn)?.0.clone();
        blocking(move || {
            let connection = match conn.connection() {
                Ok(connection) => connection,
                Err(e) => return Ok(Err(sqlite::Error::Io(e.to_string()))),
            };
            let db = lock(&connection)?;
            Ok(execute(&db, &statement, parameters))
        })
        .await?
    }
}

impl variables::Host for State {
    async fn get(&mut self, name: String) -> wasmtime::Result<Result<String, variables::Error>> {
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
    use super::*;

    fn file(dir: &tempfile::TempDir, name: &str, allow_attach_file: bool) -> SqliteDatabase {
        SqliteDatabase { location: Location::Path(dir.path().join(name)), allow_attach_file }
    }

    fn pragma(db: &rusqlite::Connection, name: &str) -> String {
        db.query_row(&format!("PRAGMA {name}"), [], |r| r.get::<_, rusqlite::types::Value>(0))
            .map(|v| format!("{v:?}"))
            .unwrap_or_else(|e| format!("error: {e}"))
    }

    #[test]
    fn opens_with_sqlite_and_rusqlite_defaults_as_spin_does() {
        let dir = tempfile::tempdir().unwrap();
        let db = open_sqlite(&file(&dir, "a.db", false)).unwrap();
        assert_eq!(pragma(&db, "journal_mode"), "Text(\"delete\")");
        assert_eq!(pragma(&db, "synchronous"), "Integer(2)");
        assert_eq!(pragma(&db, "busy_timeout"), "Integer(5000)");
        assert_eq!(pragma(&db, "foreign_keys"), "Integer(1)");
    }

    #[test]
    fn denies_attaching_files_but_not_temporary_databases() {
        let dir = tempfile::tempdir().unwrap();
        let other = dir.path().join("other.db");
        rusqlite::Connection::open(&other).unwrap().execute_batch("CREATE TABLE secret (x)").unwrap();
        let db = open_sqlite(&file(&dir, "a.db", false)).unwrap();
        let refused = db.execute_batch(&format!("ATTACH '{}' AS o", other.display())).unwrap_err();
        assert_eq!(refused.to_string(), "not authorized");
        let uri = db.execute_batch("ATTACH 'file:x?mode=memory' AS u").unwrap_err();
        assert_eq!(uri.to_string(), "not authorized");
        db.execute_batch("ATTACH '' AS t; ATTACH ':memory:' AS m").expect("temporary databases may be attached");
        let allowed = open_sqlite(&file(&dir, "b.db", true)).unwrap();
        allowed.execute_batch(&format!("ATTACH '{}' AS o", other.display())).expect("allow_attach_file");
        let n: i64 = allowed.query_row("SELECT count(*) FROM o.sqlite_master", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 1);
    }

    #[test]
    fn a_writer_waits_for_another_connections_write_lock_up_to_the_busy_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let database = file(&dir, "busy.db", false);
        let holder = open_sqlite(&database).unwrap();
        holder.execute_batch("CREATE TABLE t (x INTEGER); BEGIN IMMEDIATE; INSERT INTO t VALUES (1);").unwrap();
        let waiter = std::thread::spawn(move || open_sqlite(&database)?.execute("INSERT INTO t VALUES (2)", []));
        std::thread::sleep(std::time::Duration::from_millis(300));
        holder.execute_batch("COMMIT").unwrap();
        waiter.join().unwrap().expect("the second writer waits for the lock, then commits");
        let rows: i64 = holder.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).unwrap();
        assert_eq!(rows, 2);
    }

    #[test]
    fn key_value_database_has_spins_table_and_journal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kv.db");
        let kv = KeyValueDb::new(Location::Path(path.clone()));
        let first = kv.connection().unwrap();
        assert!(Arc::ptr_eq(&first, &kv.connection().unwrap()), "one connection per label");
        let db = rusqlite::Connection::open(&path).unwrap();
        assert_eq!(pragma(&db, "journal_mode"), "Text(\"delete\")");
        let columns: Vec<String> = db
            .prepare("SELECT name FROM pragma_table_info('spin_key_value') ORDER BY cid")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(columns, ["store", "key", "value"]);
    }
}
