//! The platform's stores as a runtime configuration file places them, and how each is copied
//! while the platform writes to it.
//!
//! Only Spin's local backends (`type = "spin"`: a SQLite file per database, and a SQLite file
//! holding the `spin_key_value` table per key-value store) are read here. A store on Redis or
//! libSQL is refused with where to look instead (docs/OPERATIONS.md): those servers have their
//! own snapshot tools.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use rusqlite::{Connection, DatabaseName, OpenFlags};
use serde::{Deserialize, Serialize};

/// How long a snapshot waits for a writer's lock (rollback-journal files) before giving up.
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// The kind of store behind a label, as the runtime configuration's table names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    KeyValueStore,
    SqliteDatabase,
}

/// One labelled store.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Label {
    pub kind: Kind,
    pub label: String,
}

/// One file to snapshot and the labels it holds (several key-value labels may share a file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreFile {
    pub labels: Vec<Label>,
    /// As written in the runtime configuration.
    pub configured: String,
    /// Resolved as Spin resolves it.
    pub path: PathBuf,
}

/// The order stores are copied in, so that what one snapshot refers to is in a later one (the
/// reasoning, pair by pair, is in docs/OPERATIONS.md):
///
/// 1. `audit`: the record of what happened, taken first.
/// 2. `identity`: users, sessions and refresh families.
/// 3. `records`: clinical data, with its own wrapped data keys.
/// 4. `revocations`, after `audit` and `identity`: every revocation they record (it is written
///    before its audit event) is in it.
/// 5. `public-keys`, after everything that names a `kid`: every token the snapshots know of was
///    signed or encrypted under a key published before it.
/// 6. `private-keys`, last: every key `public-keys` publishes has its private half (written
///    first), and private halves are never deleted.
///
/// Labels the platform does not use come after, by name.
pub const ORDER: [(Kind, &str); 6] = [
    (Kind::SqliteDatabase, "audit"),
    (Kind::SqliteDatabase, "identity"),
    (Kind::SqliteDatabase, "records"),
    (Kind::KeyValueStore, "revocations"),
    (Kind::KeyValueStore, "public-keys"),
    (Kind::KeyValueStore, "private-keys"),
];

fn rank(label: &Label) -> usize {
    ORDER.iter().position(|(kind, name)| *kind == label.kind && *name == label.label).unwrap_or(ORDER.len())
}

/// The store files of the runtime configuration at `config`, in snapshot order. Relative paths
/// resolve as Spin 4.0.2 resolves them: a key-value store's against the configuration file's
/// directory, a SQLite database's against the current directory (run from where `spin up` runs).
pub fn from_runtime_config(config: &Path) -> anyhow::Result<Vec<StoreFile>> {
    let text = std::fs::read_to_string(config).with_context(|| format!("reading {}", config.display()))?;
    let value: toml::Table = text.parse().with_context(|| format!("parsing {}", config.display()))?;
    let config_dir = config.parent().map(Path::to_path_buf).unwrap_or_default();
    let cwd = std::env::current_dir().context("the current directory")?;
    let mut files: Vec<StoreFile> = Vec::new();
    for (table, kind, base) in
        [("key_value_store", Kind::KeyValueStore, &config_dir), ("sqlite_database", Kind::SqliteDatabase, &cwd)]
    {
        let Some(stores) = value.get(table) else { continue };
        let stores = stores.as_table().with_context(|| format!("[{table}] is not a table"))?;
        for (label, store) in stores {
            let backend =
                store.get("type").and_then(|t| t.as_str()).with_context(|| format!("{table}.{label} has no type"))?;
            if backend != "spin" {
                bail!(
                    "{table}.{label} is on {backend:?}, not a local file: back it up with {backend}'s own tools \
                     (docs/OPERATIONS.md, \"Redis and libSQL\"); healthctl backs up type = \"spin\" stores"
                );
            }
            let configured = store
                .get("path")
                .and_then(|p| p.as_str())
                .with_context(|| format!("{table}.{label} has no path (an in-memory store has nothing to back up)"))?;
            let path = base.join(configured);
            let path = path.canonicalize().with_context(|| {
                format!(
                    "{table}.{label}: no store at {} (has the platform run with this configuration?)",
                    path.display()
                )
            })?;
            let label = Label { kind, label: label.clone() };
            match files.iter_mut().find(|f| f.path == path) {
                Some(file) => file.labels.push(label),
                None => files.push(StoreFile { labels: vec![label], configured: configured.to_owned(), path }),
            }
        }
    }
    ensure!(!files.is_empty(), "{} declares no key_value_store or sqlite_database", config.display());
    for file in &mut files {
        file.labels.sort_by_key(|l| (rank(l), l.clone()));
    }
    files.sort_by_key(|f| (rank(&f.labels[0]), f.labels[0].clone()));
    Ok(files)
}

/// Fails unless every store a component of the Spin manifest at `manifest` uses is in `files`:
/// a label left to Spin's defaults would live in Spin's state directory, outside the backup.
pub fn check_covers_manifest(manifest: &Path, files: &[StoreFile]) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(manifest).with_context(|| format!("reading {}", manifest.display()))?;
    let value: toml::Table = text.parse().with_context(|| format!("parsing {}", manifest.display()))?;
    let covered: BTreeSet<Label> = files.iter().flat_map(|f| f.labels.iter().cloned()).collect();
    let mut missing = BTreeSet::new();
    for component in value.get("component").and_then(|c| c.as_table()).into_iter().flat_map(|c| c.values()) {
        for (key, kind) in [("key_value_stores", Kind::KeyValueStore), ("sqlite_databases", Kind::SqliteDatabase)] {
            let labels = component.get(key).and_then(|l| l.as_array()).into_iter().flatten();
            for label in labels.filter_map(|l| l.as_str()) {
                let label = Label { kind, label: label.to_owned() };
                if !covered.contains(&label) {
                    missing.insert(format!("{kind:?} {:?}", label.label));
                }
            }
        }
    }
    ensure!(
        missing.is_empty(),
        "{} uses stores the runtime configuration does not place in a file: {}",
        manifest.display(),
        missing.into_iter().collect::<Vec<_>>().join(", ")
    );
    Ok(())
}

/// A store file copied at one instant.
pub struct Snapshot {
    pub bytes: Vec<u8>,
    /// Rows per table (`spin_key_value` also per store label, as `spin_key_value:<label>`).
    pub rows: BTreeMap<String, u64>,
    /// When the copy's read transaction began, in ms after the first snapshot's began.
    pub taken_ms: f64,
}

/// Copies the database at `path` with SQLite's online backup API in one step: one read
/// transaction, so the copy is the database as of one commit. In WAL mode (the platform's
/// databases) writers go on meanwhile; a rollback-journal file (Spin's key-value files) holds
/// its writers for the copy, milliseconds, within their 5 s busy timeout. The copy goes to
/// memory, never to a plaintext file. The file is never created if it is missing.
pub fn snapshot(path: &Path, epoch: Instant) -> anyhow::Result<Snapshot> {
    let source = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .with_context(|| format!("opening {}", path.display()))?;
    source.busy_timeout(LOCK_WAIT)?;
    let page_size: i64 = source.pragma_query_value(None, "page_size", |r| r.get(0))?;
    let mut copy = Connection::open_in_memory()?;
    // An in-memory destination must have the source's page size.
    copy.pragma_update(None, "page_size", page_size)?;
    let deadline = Instant::now() + LOCK_WAIT;
    let taken_ms = loop {
        let taken_ms = epoch.elapsed().as_secs_f64() * 1e3;
        let backup = rusqlite::backup::Backup::new(&source, &mut copy)?;
        match backup.step(-1).with_context(|| format!("copying {}", path.display()))? {
            rusqlite::backup::StepResult::Done => break taken_ms,
            // Busy or locked: a writer holds the file; one step copies all or nothing, so retry.
            _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            _ => bail!("{} stayed locked by a writer for {LOCK_WAIT:?}", path.display()),
        }
    };
    let rows = row_counts(&copy)?;
    let bytes = copy.serialize(DatabaseName::Main)?.to_vec();
    Ok(Snapshot { bytes, rows, taken_ms })
}

/// Rows in every table of `conn`, and in `spin_key_value` per store label.
pub fn row_counts(conn: &Connection) -> anyhow::Result<BTreeMap<String, u64>> {
    let mut stmt = conn.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")?;
    let tables: Vec<String> = stmt.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
    let mut rows = BTreeMap::new();
    for table in tables {
        let quoted = format!("\"{}\"", table.replace('"', "\"\""));
        let n: i64 = conn.query_row(&format!("SELECT count(*) FROM {quoted}"), [], |r| r.get(0))?;
        rows.insert(table.clone(), u64::try_from(n).unwrap_or(0));
        if table == "spin_key_value" {
            let mut stmt = conn.prepare("SELECT store, count(*) FROM spin_key_value GROUP BY store")?;
            let per_store = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
            for entry in per_store {
                let (store, n) = entry?;
                rows.insert(format!("spin_key_value:{store}"), u64::try_from(n).unwrap_or(0));
            }
        }
    }
    Ok(rows)
}

/// Opens the database file at `path` and runs `PRAGMA integrity_check` and the row counts.
pub fn check(path: &Path) -> anyhow::Result<BTreeMap<String, u64>> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .with_context(|| format!("opening {}", path.display()))?;
    let mut stmt = conn.prepare("PRAGMA integrity_check")?;
    let problems: Vec<String> = stmt.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
    ensure!(problems == ["ok"], "{} fails PRAGMA integrity_check: {}", path.display(), problems.join("; "));
    row_counts(&conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv_file(path: &Path, store: &str, keys: usize) {
        let conn = Connection::open(path).expect("opens");
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS spin_key_value (store TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL, PRIMARY KEY (store, key))",
        )
        .expect("table");
        for i in 0..keys {
            conn.execute("INSERT INTO spin_key_value VALUES (?, ?, x'00')", rusqlite::params![store, format!("k{i}")])
                .expect("row");
        }
    }

    #[test]
    fn files_come_in_snapshot_order_and_cloud_or_missing_stores_are_refused() {
        let dir = tempfile::tempdir().expect("dir");
        for name in ["a.db", "k.db", "p.db"] {
            kv_file(&dir.path().join(name), "x", 0);
        }
        let a = dir.path().join("a.db").display().to_string();
        let config = dir.path().join("runtime-config.toml");
        std::fs::write(
            &config,
            format!(
                "[key_value_store.private-keys]\ntype = \"spin\"\npath = \"k.db\"\n\
                 [key_value_store.public-keys]\ntype = \"spin\"\npath = \"p.db\"\n\
                 [key_value_store.revocations]\ntype = \"spin\"\npath = \"p.db\"\n\
                 [sqlite_database.audit]\ntype = \"spin\"\npath = \"{a}\"\n"
            ),
        )
        .expect("config");
        let files = from_runtime_config(&config).expect("reads");
        let labels: Vec<Vec<&str>> =
            files.iter().map(|f| f.labels.iter().map(|l| l.label.as_str()).collect()).collect();
        assert_eq!(labels, [vec!["audit"], vec!["revocations", "public-keys"], vec!["private-keys"]]);

        let manifest = dir.path().join("spin.toml");
        std::fs::write(
            &manifest,
            "[component.x]\nkey_value_stores = [\"public-keys\"]\nsqlite_databases = [\"audit\"]\n",
        )
        .expect("manifest");
        check_covers_manifest(&manifest, &files).expect("covered");
        std::fs::write(&manifest, "[component.x]\nsqlite_databases = [\"audit\", \"default\"]\n").expect("manifest");
        let error = check_covers_manifest(&manifest, &files).expect_err("refused");
        assert!(format!("{error:#}").contains("\"default\""), "{error:#}");

        std::fs::write(&config, "[key_value_store.revocations]\ntype = \"redis\"\nurl = \"redis://x:6379/0\"\n")
            .expect("config");
        let error = from_runtime_config(&config).expect_err("refused");
        assert!(format!("{error:#}").contains("OPERATIONS.md"), "{error:#}");
        std::fs::write(&config, "[key_value_store.revocations]\ntype = \"spin\"\npath = \"gone.db\"\n")
            .expect("config");
        assert!(from_runtime_config(&config).is_err());
        assert!(!dir.path().join("gone.db").exists(), "a missing store is not created");
    }

    #[test]
    fn a_snapshot_holds_every_committed_row_and_passes_the_integrity_check() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("kv.db");
        kv_file(&path, "public-keys", 3);
        kv_file(&path, "revocations", 2);
        let snap = snapshot(&path, Instant::now()).expect("snapshot");
        assert_eq!(snap.rows.get("spin_key_value"), Some(&5));
        assert_eq!(snap.rows.get("spin_key_value:revocations"), Some(&2));
        let copy = dir.path().join("copy.db");
        std::fs::write(&copy, &snap.bytes).expect("writes");
        assert_eq!(check(&copy).expect("intact"), snap.rows);
        std::fs::write(&copy, b"not a database at all, not even close to one").expect("writes");
        assert!(check(&copy).is_err());
    }

    #[test]
    fn a_snapshot_of_a_wal_database_is_taken_while_a_transaction_writes() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("audit.db");
        let writer = Connection::open(&path).expect("opens");
        writer.pragma_update(None, "journal_mode", "WAL").expect("wal");
        writer.execute_batch("CREATE TABLE t (n INTEGER); INSERT INTO t VALUES (1), (2);").expect("rows");
        // An open write transaction: its rows are not in the copy, and the copy does not wait.
        writer.execute_batch("BEGIN IMMEDIATE; INSERT INTO t VALUES (3);").expect("begins");
        let started = Instant::now();
        let snap = snapshot(&path, started).expect("snapshot");
        assert!(started.elapsed() < Duration::from_secs(2), "waited for the writer");
        assert_eq!(snap.rows.get("t"), Some(&2));
        writer.execute_batch("COMMIT").expect("commits");
        let copy = dir.path().join("copy.db");
        std::fs::write(&copy, &snap.bytes).expect("writes");
        assert_eq!(check(&copy).expect("intact").get("t"), Some(&2));
    }
}
