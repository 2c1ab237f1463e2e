//! Spin's runtime configuration file: where each key-value store and SQLite database lives.
//! Like Spin, the `default` store and database exist without configuration (in the state
//! directory); every other label must be declared here.
//!
//! Paths resolve as Spin 4.0.2 resolves them (`crates/runtime-config/src/lib.rs`): a relative
//! key-value `path` against the runtime config file's directory, a relative SQLite `path`
//! against the current working directory; no `path` at all means an in-memory store.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
struct File {
    #[serde(default)]
    key_value_store: BTreeMap<String, KeyValueBackend>,
    #[serde(default)]
    sqlite_database: BTreeMap<String, SqliteBackend>,
}

#[derive(Debug, Clone, Deserialize)]
struct KeyValueBackend {
    #[serde(rename = "type")]
    kind: String,
    path: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
struct SqliteBackend {
    #[serde(rename = "type")]
    kind: String,
    #[serde(flatten)]
    config: toml::Table,
}

/// Spin's `InProcDatabase` (`crates/sqlite/src/lib.rs`), unknown fields refused as there.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct InProcDatabase {
    path: Option<PathBuf>,
    #[serde(default)]
    allow_attach_file: bool,
}

/// Where a store's SQLite database lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A database of the process's own (Spin's in-memory store or database).
    InMemory,
    Path(PathBuf),
}

/// A SQLite database as the runtime config declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteDatabase {
    pub location: Location,
    /// Spin's `allow_attach_file`: when false (the default) `ATTACH` of a file is denied.
    pub allow_attach_file: bool,
}

/// Resolved locations of every store and database label.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    pub key_value: BTreeMap<String, Location>,
    pub sqlite: BTreeMap<String, SqliteDatabase>,
}

impl RuntimeConfig {
    /// Reads `file` (if any); the default store and database live in `state_dir`.
    pub fn load(file: Option<&Path>, state_dir: &Path) -> anyhow::Result<Self> {
        let cwd = std::env::current_dir().context("failed to get current working directory")?;
        Self::load_from(file, state_dir, &cwd)
    }

    /// [`RuntimeConfig::load`] with relative SQLite paths resolved against `cwd`.
    fn load_from(file: Option<&Path>, state_dir: &Path, cwd: &Path) -> anyhow::Result<Self> {
        let mut config = Self {
            key_value: BTreeMap::from([("default".to_owned(), Location::Path(state_dir.join("sqlite_key_value.db")))]),
            sqlite: BTreeMap::from([(
                "default".to_owned(),
                SqliteDatabase { location: Location::Path(state_dir.join("sqlite_db.db")), allow_attach_file: false },
            )]),
        };
        let Some(file) = file else { return Ok(config) };
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading runtime config {}", file.display()))?;
        let parsed: File =
            toml::from_str(&text).with_context(|| format!("parsing runtime config {}", file.display()))?;
        let config_dir = file.parent().unwrap_or(Path::new("."));
        let check = |kind: &str, label: &str, backend: &str| -> anyhow::Result<()> {
            if backend != "spin" {
                bail!(
                    "{kind} {label:?}: only type = \"spin\" (local SQLite) is supported by this host, not {backend:?}"
                );
            }
            Ok(())
        };
        let locate = |path: &Option<PathBuf>, base: &Path| match path {
            Some(path) => Location::Path(base.join(path)),
            None => Location::InMemory,
        };
        for (label, backend) in &parsed.key_value_store {
            check("key_value_store", label, &backend.kind)?;
            config.key_value.insert(label.clone(), locate(&backend.path, config_dir));
        }
        for (label, backend) in &parsed.sqlite_database {
            check("sqlite_database", label, &backend.kind)?;
            let backend: InProcDatabase =
                backend.config.clone().try_into().with_context(|| format!("sqlite_database {label:?}"))?;
            let database =
                SqliteDatabase { location: locate(&backend.path, cwd), allow_attach_file: backend.allow_attach_file };
            config.sqlite.insert(label.clone(), database);
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loads `text` from `<tempdir>/conf/runtime-config.toml`, state in `/state`, cwd `/cwd`.
    fn load(text: &str) -> anyhow::Result<(tempfile::TempDir, RuntimeConfig)> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("conf/runtime-config.toml");
        std::fs::create_dir_all(dir.path().join("conf"))?;
        std::fs::write(&file, text)?;
        let config = RuntimeConfig::load_from(Some(&file), Path::new("/state"), Path::new("/cwd"))?;
        Ok((dir, config))
    }

    #[test]
    fn resolves_key_value_paths_against_the_file_and_sqlite_paths_against_the_working_directory() {
        let (dir, config) = load(
            "[key_value_store.kv]\ntype = \"spin\"\npath = \"kv.db\"\n\
             [sqlite_database.db]\ntype = \"spin\"\npath = \"data/db.db\"\n",
        )
        .unwrap();
        assert_eq!(config.key_value["kv"], Location::Path(dir.path().join("conf/kv.db")));
        assert_eq!(config.sqlite["db"].location, Location::Path("/cwd/data/db.db".into()));
        assert_eq!(config.key_value["default"], Location::Path("/state/sqlite_key_value.db".into()));
        assert_eq!(config.sqlite["default"].location, Location::Path("/state/sqlite_db.db".into()));
    }

    #[test]
    fn no_path_means_in_memory_and_attach_is_denied_unless_allowed() {
        let (_dir, config) = load(
            "[key_value_store.kv]\ntype = \"spin\"\n[sqlite_database.db]\ntype = \"spin\"\n\
             [sqlite_database.open]\ntype = \"spin\"\npath = \"/abs.db\"\nallow_attach_file = true\n",
        )
        .unwrap();
        assert_eq!(config.key_value["kv"], Location::InMemory);
        assert_eq!(config.sqlite["db"], SqliteDatabase { location: Location::InMemory, allow_attach_file: false });
        assert_eq!(
            config.sqlite["open"],
            SqliteDatabase { location: Location::Path("/abs.db".into()), allow_attach_file: true }
        );
    }

    #[test]
    fn refuses_unknown_sqlite_fields_and_other_backends() {
        let err = load("[sqlite_database.db]\ntype = \"spin\"\npath = \"x\"\njournal = \"wal\"\n").unwrap_err();
        assert!(format!("{err:#}").contains("unknown field `journal`"), "{err:#}");
        let err = load("[key_value_store.kv]\ntype = \"redis\"\nurl = \"redis://x\"\n").unwrap_err();
        assert!(format!("{err:#}").contains("only type = \"spin\""), "{err:#}");
    }
}
