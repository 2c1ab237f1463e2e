//! `healthctl backup`: an encrypted, checksummed snapshot of every store of a deployment whose
//! stores are local files (Spin's `type = "spin"` backends), made while the platform serves;
//! checked without restoring; restored into a new state directory.
//!
//! - `create` copies each store file with SQLite's online backup API, in the order of
//!   [`stores::ORDER`], into memory, and writes one archive ([`archive`]): the manifest (every
//!   file's name, labels, size, SHA-256 and row counts, the creation time, the platform version)
//!   followed by the files, all encrypted.
//! - `verify` decrypts, checks every checksum and every file's `PRAGMA integrity_check` and row
//!   counts in a private scratch directory that it deletes; it writes no state directory.
//! - `restore` does the same into a new (absent or empty) directory, file by file through a
//!   temporary name and a rename, reads every file back to check its checksum again, and writes
//!   a `runtime-config.toml` that points Spin (or the host) at the restored files.
//!
//! It does not back up secrets (`master_key`, `phi_wrapping_key`, the link keys, the operator
//! token hash): they are variables, kept in Vault or the deployment's secret store, and a
//! restore needs the same values. Nor Redis or libSQL stores (docs/OPERATIONS.md).

pub mod archive;
pub mod stores;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail, ensure};
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::Failure;
use archive::{Lock, Unlock};
use stores::Label;

/// The manifest's `format`.
const MANIFEST_FORMAT: &str = "health-backup-manifest/1";
/// Files `restore` writes beside the stores.
const RUNTIME_CONFIG: &str = "runtime-config.toml";
const MANIFEST_FILE: &str = "backup-manifest.json";
/// The largest manifest a reader accepts.
const MAX_MANIFEST_BYTES: u32 = 1 << 20;

#[derive(Subcommand)]
pub enum Command {
    /// Snapshot every store of the runtime configuration while the platform runs, into one
    /// encrypted archive with a manifest of checksums.
    Create {
        /// The archive to write (refused if it exists).
        #[arg(long)]
        out: PathBuf,
        /// The runtime configuration that places the stores (`spin up --runtime-config-file`).
        #[arg(long, default_value = "runtime-config.toml")]
        runtime_config_file: PathBuf,
        /// The Spin manifest whose components' stores must all be in the backup.
        #[arg(long, default_value = "spin.toml")]
        manifest: PathBuf,
        #[command(flatten)]
        lock: LockArgs,
    },
    /// Decrypt an archive and check every checksum and database, without restoring it.
    Verify {
        archive: PathBuf,
        #[command(flatten)]
        unlock: UnlockArgs,
    },
    /// Make a recipient key pair for `create --recipient`: the private P-256 JWK goes to `--out`
    /// (owner-only), the public one to stdout. Keep the private key off the platform's machines.
    Keygen {
        /// The private JWK file to write (refused if it exists).
        #[arg(long)]
        out: PathBuf,
    },
    /// Restore an archive into a new state directory, with a runtime-config.toml for it.
    Restore {
        archive: PathBuf,
        /// The directory to restore into: absent or empty.
        #[arg(long)]
        into: PathBuf,
        /// Required: restoring is a deliberate act.
        #[arg(long)]
        confirm: bool,
        #[command(flatten)]
        unlock: UnlockArgs,
    },
}

/// How `create` encrypts: a passphrase (argon2id) or a recipient's public key.
#[derive(Args)]
#[group(required = true, multiple = false)]
pub struct LockArgs {
    /// The environment variable holding the passphrase (12 bytes or more).
    #[arg(long, value_name = "NAME")]
    passphrase_env: Option<String>,
    /// A file holding the passphrase (one trailing newline ignored).
    #[arg(long, value_name = "PATH")]
    passphrase_file: Option<PathBuf>,
    /// A recipient's P-256 public JWK (ECDH-ES+A256KW): only its private half opens the archive.
    #[arg(long, value_name = "JWK_FILE")]
    recipient: Option<PathBuf>,
}

/// How `verify` and `restore` decrypt.
#[derive(Args)]
#[group(required = true, multiple = false)]
pub struct UnlockArgs {
    /// The environment variable holding the passphrase.
    #[arg(long, value_name = "NAME")]
    passphrase_env: Option<String>,
    /// A file holding the passphrase (one trailing newline ignored).
    #[arg(long, value_name = "PATH")]
    passphrase_file: Option<PathBuf>,
    /// The recipient's P-256 private JWK (with `d`).
    #[arg(long, value_name = "JWK_FILE")]
    identity: Option<PathBuf>,
}

fn passphrase(env: Option<&str>, file: Option<&Path>) -> Result<Option<String>, Failure> {
    if let Some(name) = env {
        let value =
            std::env::var(name).map_err(|_| Failure::Usage(format!("the environment variable {name} is not set")))?;
        ensure_nonempty(value, name).map(Some)
    } else if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|e| Failure::Usage(format!("{}: {e}", path.display())))?;
        let text = text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(&text).to_owned();
        ensure_nonempty(text, &path.display().to_string()).map(Some)
    } else {
        Ok(None)
    }
}

fn ensure_nonempty(value: String, from: &str) -> Result<String, Failure> {
    if value.is_empty() { Err(Failure::Usage(format!("the passphrase from {from} is empty"))) } else { Ok(value) }
}

fn read_jwk(path: &Path) -> Result<archive::P256Jwk, Failure> {
    let text = std::fs::read_to_string(path).map_err(|e| Failure::Usage(format!("{}: {e}", path.display())))?;
    archive::parse_p256_jwk(&text).map_err(|e| Failure::Usage(format!("{}: {e:#}", path.display())))
}

impl LockArgs {
    fn lock(&self) -> Result<Lock, Failure> {
        if let Some(passphrase) = passphrase(self.passphrase_env.as_deref(), self.passphrase_file.as_deref())? {
            return Lock::passphrase(&passphrase).map_err(|e| Failure::Usage(format!("{e:#}")));
        }
        let path = self.recipient.as_deref().ok_or_else(|| Failure::Usage("no passphrase or recipient".into()))?;
        let jwk = read_jwk(path)?;
        if jwk.secret.is_some() {
            eprintln!(
                "healthctl: {} holds the private key; only its public half is used here, keep the private one off this machine",
                path.display()
            );
        }
        Ok(Lock::Recipient { key: jwk.public, thumbprint: jwk.thumbprint })
    }
}

impl UnlockArgs {
    fn unlock(&self) -> Result<Unlock, Failure> {
        if let Some(passphrase) = passphrase(self.passphrase_env.as_deref(), self.passphrase_file.as_deref())? {
            return Ok(Unlock::Passphrase(passphrase));
        }
        let path = self.identity.as_deref().ok_or_else(|| Failure::Usage("no passphrase or identity".into()))?;
        let jwk = read_jwk(path)?;
        let key = jwk.secret.ok_or_else(|| {
            Failure::Usage(format!("{}: a public JWK; --identity needs the private key (with d)", path.display()))
        })?;
        Ok(Unlock::Identity { key, thumbprint: jwk.thumbprint })
    }
}

/// What the archive holds, first in its payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    /// Unix seconds.
    pub created_at: i64,
    /// The platform (workspace) version of the healthctl that made it.
    pub platform_version: String,
    /// From the first snapshot's read transaction to the last's: the window in which the
    /// stores' states were taken.
    pub snapshot_window_ms: f64,
    /// In snapshot order.
    pub files: Vec<FileEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// The file's name in the archive and in a restored directory.
    pub name: String,
    /// The labels it holds.
    pub stores: Vec<Label>,
    /// Its path as the runtime configuration gave it.
    pub configured_path: String,
    pub bytes: u64,
    /// SHA-256 of the file, hex.
    pub sha256: String,
    /// When its snapshot was taken, in ms after the first.
    pub taken_ms: f64,
    /// Rows per table at the snapshot.
    pub rows: BTreeMap<String, u64>,
}

impl Manifest {
    fn check(&self) -> anyhow::Result<()> {
        ensure!(self.format == MANIFEST_FORMAT, "unknown manifest format {:?}", self.format);
        let mut names = std::collections::BTreeSet::new();
        for file in &self.files {
            ensure!(safe_name(&file.name), "the manifest names an unsafe file {:?}", file.name);
            ensure!(names.insert(file.name.as_str()), "the manifest names {:?} twice", file.name);
            ensure!(file.sha256.len() == 64, "{}: not a SHA-256", file.name);
        }
        Ok(())
    }
}

/// A plain file name: no directory part, not hidden, not one of the files restore writes.
fn safe_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && name != RUNTIME_CONFIG
        && name != MANIFEST_FILE
}

fn now_unix() -> i64 {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    i64::try_from(secs).unwrap_or_default()
}

fn ms(since: Instant) -> f64 {
    (since.elapsed().as_secs_f64() * 1e4).round() / 10.0
}

pub fn run(command: Command) -> Result<Value, Failure> {
    match command {
        Command::Create { out, runtime_config_file, manifest, lock } => {
            if out.exists() {
                return Err(Failure::Usage(format!("{} exists: choose a new name", out.display())));
            }
            let started = Instant::now();
            let lock = lock.lock()?;
            let key_ms = ms(started);
            let files =
                stores::from_runtime_config(&runtime_config_file).map_err(|e| Failure::Usage(format!("{e:#}")))?;
            if manifest.exists() {
                stores::check_covers_manifest(&manifest, &files).map_err(|e| Failure::Usage(format!("{e:#}")))?;
            } else {
                eprintln!("healthctl: {} not found: not checking that it uses no other store", manifest.display());
            }
            let mut report = create(&files, &lock, &out).map_err(|e| Failure::Unavailable(format!("{e:#}")))?;
            report["took_ms"]["key"] = json!(key_ms);
            report["took_ms"]["total"] = json!(ms(started));
            Ok(report)
        }
        Command::Keygen { out } => {
            let (private, public) = archive::generate_p256_jwk();
            let mut file = new_private_file(&out).map_err(|e| Failure::Usage(format!("{e:#}")))?;
            let text = serde_json::to_string_pretty(&private).unwrap_or_default() + "\n";
            file.write_all(text.as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(|e| Failure::Unavailable(format!("writing {}: {e}", out.display())))?;
            Ok(public)
        }
        Command::Verify { archive, unlock } => {
            let unlock = unlock.unlock()?;
            let started = Instant::now();
            let scratch = tempfile::tempdir().map_err(|e| Failure::Unavailable(format!("a scratch directory: {e}")))?;
            let manifest = extract(&archive, &unlock, scratch.path())
                .map_err(|e| Failure::Invalid(format!("{} does not verify: {e:#}", archive.display())))?;
            Ok(json!({ "verified": true, "archive": archive, "took_ms": ms(started), "manifest": manifest }))
        }
        Command::Restore { archive, into, confirm, unlock } => {
            if !confirm {
                return Err(Failure::Usage(format!(
                    "restore writes a new state directory at {}: pass --confirm to do it",
                    into.display()
                )));
            }
            let unlock = unlock.unlock()?;
            let started = Instant::now();
            let created = prepare_target(&into)?;
            match restore(&archive, &unlock, &into) {
                Ok(manifest) => Ok(json!({
                    "restored": true,
                    "into": into,
                    "runtime_config": into.join(RUNTIME_CONFIG),
                    "took_ms": ms(started),
                    "manifest": manifest,
                })),
                Err(e) => {
                    discard(&into, created);
                    Err(Failure::Invalid(format!("{} was not restored (nothing kept): {e:#}", archive.display())))
                }
            }
        }
    }
}

/// Snapshots `files` in order, then writes the archive at `out` through a temporary name.
fn create(files: &[stores::StoreFile], lock: &Lock, out: &Path) -> anyhow::Result<Value> {
    let created_at = now_unix();
    let epoch = Instant::now();
    let mut snapshots = Vec::new();
    let mut entries: Vec<FileEntry> = Vec::new();
    for file in files {
        let snapshot = stores::snapshot(&file.path, epoch)?;
        let base = file.path.file_name().and_then(|n| n.to_str()).unwrap_or("store.db");
        let mut name: String = base
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' })
            .collect();
        if !safe_name(&name) || entries.iter().any(|e| e.name == name) {
            name = format!("{}-{}", entries.len() + 1, name.trim_start_matches('.'));
        }
        entries.push(FileEntry {
            name,
            stores: file.labels.clone(),
            configured_path: file.configured.clone(),
            bytes: u64::try_from(snapshot.bytes.len())?,
            sha256: hex(&Sha256::digest(&snapshot.bytes)),
            taken_ms: (snapshot.taken_ms * 10.0).round() / 10.0,
            rows: snapshot.rows.clone(),
        });
        snapshots.push(snapshot);
    }
    let window = match (snapshots.first(), snapshots.last()) {
        (Some(first), Some(last)) => last.taken_ms - first.taken_ms,
        _ => 0.0,
    };
    let snapshot_ms = ms(epoch);
    let manifest = Manifest {
        format: MANIFEST_FORMAT.into(),
        created_at,
        platform_version: env!("CARGO_PKG_VERSION").into(),
        snapshot_window_ms: (window * 10.0).round() / 10.0,
        files: entries,
    };
    manifest.check()?;

    let writing = Instant::now();
    let partial = sibling(out, ".partial")?;
    let result = (|| -> anyhow::Result<u64> {
        let file = new_private_file(&partial)?;
        let mut writer = archive::Writer::new(std::io::BufWriter::new(file), lock, created_at)?;
        let json = serde_json::to_vec(&manifest)?;
        writer.write(&u32::try_from(json.len())?.to_be_bytes())?;
        writer.write(&json)?;
        for snapshot in &snapshots {
            writer.write(&snapshot.bytes)?;
        }
        let file = writer.finish()?.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        let bytes = file.metadata()?.len();
        std::fs::rename(&partial, out).with_context(|| format!("renaming to {}", out.display()))?;
        sync_dir(out)?;
        Ok(bytes)
    })();
    let bytes = result.inspect_err(|_| {
        let _ = std::fs::remove_file(&partial);
    })?;
    Ok(json!({
        "archive": out,
        "bytes": bytes,
        "created_at": created_at,
        "platform_version": manifest.platform_version,
        "snapshot_window_ms": manifest.snapshot_window_ms,
        "took_ms": { "snapshot": snapshot_ms, "write": ms(writing) },
        "files": manifest.files,
    }))
}

/// `path` with `suffix` added to its file name.
fn sibling(path: &Path, suffix: &str) -> anyhow::Result<PathBuf> {
    let name = path.file_name().with_context(|| format!("{} has no file name", path.display()))?;
    let mut name = name.to_os_string();
    name.push(suffix);
    Ok(path.with_file_name(name))
}

/// A new file only the owner may read (the archive, a restored store).
fn new_private_file(path: &Path) -> anyhow::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))
}

/// Makes a rename in `path`'s directory durable.
fn sync_dir(path: &Path) -> anyhow::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::File::open(dir).and_then(|d| d.sync_all()).with_context(|| format!("syncing {}", dir.display()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Opens the archive, reads its manifest and writes every file into `dir` (which must exist),
/// each checked: its checksum as written and again as read back from disk, `PRAGMA
/// integrity_check`, and its row counts against the manifest's.
fn extract(archive: &Path, unlock: &Unlock, dir: &Path) -> anyhow::Result<Manifest> {
    let file = std::fs::File::open(archive).with_context(|| format!("opening {}", archive.display()))?;
    let mut reader = archive::Reader::open(std::io::BufReader::new(file), unlock)?;
    let mut len = [0u8; 4];
    reader.read_exact(&mut len).context("reading the manifest")?;
    let len = u32::from_be_bytes(len);
    ensure!(len <= MAX_MANIFEST_BYTES, "a manifest of {len} bytes is too long");
    let mut json = vec![0u8; usize::try_from(len)?];
    reader.read_exact(&mut json).context("reading the manifest")?;
    let manifest: Manifest = serde_json::from_slice(&json).context("the manifest is not valid")?;
    manifest.check()?;
    ensure!(manifest.created_at == reader.header.created_at, "the manifest's creation time differs from the header's");
    for entry in &manifest.files {
        let partial = dir.join(format!(".{}.partial", entry.name));
        let mut out = new_private_file(&partial)?;
        let mut hasher = HashingWriter { inner: &mut out, hash: Sha256::new() };
        let copied = std::io::copy(&mut (&mut reader).take(entry.bytes), &mut hasher)
            .with_context(|| format!("reading {} from the archive", entry.name))?;
        ensure!(copied == entry.bytes, "{}: the archive holds {copied} of its {} bytes", entry.name, entry.bytes);
        let sha256 = hex(&hasher.hash.finalize());
        ensure!(sha256 == entry.sha256, "{}: SHA-256 {sha256}, the manifest says {}", entry.name, entry.sha256);
        out.sync_all()?;
        drop(out);
        let path = dir.join(&entry.name);
        std::fs::rename(&partial, &path).with_context(|| format!("renaming to {}", path.display()))?;
    }
    reader.finish()?;
    sync_dir(&dir.join("x"))?;
    for entry in &manifest.files {
        let path = dir.join(&entry.name);
        let mut hash = Sha256::new();
        std::io::copy(&mut std::fs::File::open(&path)?, &mut hash)?;
        let sha256 = hex(&hash.finalize());
        ensure!(
            sha256 == entry.sha256,
            "{} as written to disk: SHA-256 {sha256}, not {}",
            path.display(),
            entry.sha256
        );
        let rows = stores::check(&path)?;
        ensure!(rows == entry.rows, "{}: row counts {rows:?}, the manifest says {:?}", entry.name, entry.rows);
    }
    Ok(manifest)
}

struct HashingWriter<'a, W: Write> {
    inner: &'a mut W,
    hash: Sha256,
}

impl<W: Write> Write for HashingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Creates `into` (owner only) or accepts it empty; refuses anything else. `true` if created.
fn prepare_target(into: &Path) -> Result<bool, Failure> {
    match std::fs::read_dir(into) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Failure::Usage(format!(
                    "{} is not empty: restore only into a new or empty directory",
                    into.display()
                )));
            }
            Ok(false)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(into)
                .map_err(|e| Failure::Unavailable(format!("creating {}: {e}", into.display())))?;
            Ok(true)
        }
        Err(e) => Err(Failure::Usage(format!("{}: {e}", into.display()))),
    }
}

/// Removes what a failed restore wrote: the directory if it created it, else its contents
/// (it was empty).
fn discard(into: &Path, created: bool) {
    if created {
        let _ = std::fs::remove_dir_all(into);
    } else if let Ok(entries) = std::fs::read_dir(into) {
        for entry in entries.flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// [`extract`] into `into`, then the runtime configuration and the manifest beside the files.
fn restore(archive: &Path, unlock: &Unlock, into: &Path) -> anyhow::Result<Manifest> {
    let manifest = extract(archive, unlock, into)?;
    let dir = into.canonicalize()?;
    let mut config = format!(
        "# Written by `healthctl backup restore` from a backup made at {} (platform {}).\n\
         # Every store of the backup, at its restored file; serve with\n\
         #   spin up --from spin.toml --runtime-config-file {}\n",
        health_core::rfc3339(manifest.created_at),
        manifest.platform_version,
        dir.join(RUNTIME_CONFIG).display()
    );
    for entry in &manifest.files {
        let path = dir.join(&entry.name);
        let Some(path) = path.to_str().map(|p| toml::Value::String(p.to_owned()).to_string()) else {
            bail!("{} is not UTF-8", dir.display());
        };
        for label in &entry.stores {
            let table = match label.kind {
                stores::Kind::KeyValueStore => "key_value_store",
                stores::Kind::SqliteDatabase => "sqlite_database",
            };
            config.push_str(&format!("\n[{table}.{}]\ntype = \"spin\"\npath = {path}\n", label.label));
        }
    }
    for (name, bytes) in [(RUNTIME_CONFIG, config.into_bytes()), (MANIFEST_FILE, serde_json::to_vec_pretty(&manifest)?)]
    {
        let partial = dir.join(format!(".{name}.partial"));
        let mut file = new_private_file(&partial)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        std::fs::rename(&partial, dir.join(name))?;
    }
    sync_dir(&dir.join(RUNTIME_CONFIG))?;
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSPHRASE: &str = "a passphrase for tests";

    /// A state directory with the platform's six stores, a few rows each, and its runtime
    /// configuration (absolute paths).
    fn state() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("dir");
        let mut config = String::new();
        for (kind, label) in stores::ORDER {
            let path = dir.path().join(format!("{label}.db"));
            let conn = rusqlite::Connection::open(&path).expect("opens");
            match kind {
                stores::Kind::SqliteDatabase => {
                    conn.pragma_update(None, "journal_mode", "WAL").expect("wal");
                    conn.execute_batch("CREATE TABLE t (v TEXT); INSERT INTO t VALUES ('a'), ('b');").expect("rows");
                    config.push_str(&format!(
                        "[sqlite_database.{label}]\ntype = \"spin\"\npath = \"{}\"\n",
                        path.display()
                    ));
                }
                stores::Kind::KeyValueStore => {
                    conn.execute_batch(&format!(
                        "CREATE TABLE spin_key_value (store TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL, PRIMARY KEY (store, key));
                         INSERT INTO spin_key_value VALUES ('{label}', 'k', x'01');"
                    ))
                    .expect("rows");
                    config.push_str(&format!(
                        "[key_value_store.{label}]\ntype = \"spin\"\npath = \"{}\"\n",
                        path.display()
                    ));
                }
            }
        }
        let config_path = dir.path().join("runtime-config.toml");
        std::fs::write(&config_path, config).expect("config");
        (dir, config_path)
    }

    fn quick_lock() -> Lock {
        Lock::passphrase_at(PASSPHRASE, archive::Cost { m_cost_kib: 64, t_cost: 1, p_cost: 1 }).expect("derives")
    }

    #[test]
    fn create_verify_and_restore_round_trip_every_store_in_order() {
        let (dir, config) = state();
        let files = stores::from_runtime_config(&config).expect("stores");
        let out = dir.path().join("backup.hbk");
        let report = create(&files, &quick_lock(), &out).expect("created");
        let names: Vec<&str> =
            report["files"].as_array().expect("files").iter().filter_map(|f| f["name"].as_str()).collect();
        assert_eq!(
            names,
            ["audit.db", "identity.db", "records.db", "revocations.db", "public-keys.db", "private-keys.db"]
        );
        assert!(!sibling(&out, ".partial").expect("name").exists());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&out).expect("archive").permissions().mode() & 0o777, 0o600);

        let unlock = Unlock::Passphrase(PASSPHRASE.into());
        let scratch = tempfile::tempdir().expect("scratch");
        let manifest = extract(&out, &unlock, scratch.path()).expect("verifies");
        assert_eq!(manifest.files.len(), 6);
        assert_eq!(manifest.files[0].rows.get("t"), Some(&2));

        let into = dir.path().join("restored/state");
        assert!(prepare_target(&into).expect("created"));
        restore(&out, &unlock, &into).expect("restores");
        let restored = stores::from_runtime_config(&into.join(RUNTIME_CONFIG)).expect("restored config");
        assert_eq!(restored.len(), 6);
        assert!(restored.iter().all(|f| f.path.starts_with(into.canonicalize().expect("dir"))));
        let conn = rusqlite::Connection::open(into.join("private-keys.db")).expect("opens");
        let key: String = conn.query_row("SELECT key FROM spin_key_value", [], |r| r.get(0)).expect("row");
        assert_eq!(key, "k");
        // A second restore into the same (now full) directory is refused.
        assert!(matches!(prepare_target(&into), Err(Failure::Usage(_))));
    }

    #[test]
    fn a_damaged_archive_or_a_wrong_passphrase_restores_nothing() {
        let (dir, config) = state();
        let files = stores::from_runtime_config(&config).expect("stores");
        let out = dir.path().join("backup.hbk");
        create(&files, &quick_lock(), &out).expect("created");
        let mut bytes = std::fs::read(&out).expect("reads");
        let at = bytes.len() - 100;
        bytes[at] ^= 0x40;
        let damaged = dir.path().join("damaged.hbk");
        std::fs::write(&damaged, &bytes).expect("writes");
        let unlock = Unlock::Passphrase(PASSPHRASE.into());
        let into = dir.path().join("restored");
        for (archive, unlock) in [(&damaged, &unlock), (&out, &Unlock::Passphrase("not the passphrase".into()))] {
            let created = prepare_target(&into).expect("prepared");
            assert!(restore(archive, unlock, &into).is_err());
            discard(&into, created);
            assert!(!into.exists(), "a failed restore left {}", into.display());
        }
        // An existing empty directory is kept, emptied.
        std::fs::create_dir(&into).expect("dir");
        let created = prepare_target(&into).expect("empty is fine");
        assert!(restore(&damaged, &unlock, &into).is_err());
        discard(&into, created);
        assert_eq!(std::fs::read_dir(&into).expect("kept").count(), 0);
    }

    #[test]
    fn restore_needs_confirm_and_create_refuses_an_existing_archive() {
        let dir = tempfile::tempdir().expect("dir");
        let into = dir.path().join("new");
        let unlock = UnlockArgs { passphrase_env: Some("PATH".into()), passphrase_file: None, identity: None };
        let refused =
            run(Command::Restore { archive: dir.path().join("x"), into: into.clone(), confirm: false, unlock });
        assert!(matches!(refused, Err(Failure::Usage(m)) if m.contains("--confirm")));
        assert!(!into.exists());
        let out = dir.path().join("exists.hbk");
        std::fs::write(&out, b"").expect("writes");
        let lock = LockArgs { passphrase_env: Some("PATH".into()), passphrase_file: None, recipient: None };
        let create = Command::Create {
            out,
            runtime_config_file: dir.path().join("runtime-config.toml"),
            manifest: dir.path().join("spin.toml"),
            lock,
        };
        assert!(matches!(run(create), Err(Failure::Usage(m)) if m.contains("exists")));
    }

    #[test]
    fn manifest_names_cannot_escape_the_restore_directory() {
        for bad in ["../audit.db", "a/b.db", ".hidden", "", "runtime-config.toml", "backup-manifest.json", "x y"] {
            assert!(!safe_name(bad), "{bad:?}");
        }
        assert!(safe_name("public-keys.db"));
    }
}
