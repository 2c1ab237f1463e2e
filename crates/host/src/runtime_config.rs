//! Spin's runtime configuration file: where each key-value store and SQLite database lives.
//! Like Spin, the `default` store and database exist without configuration (in the state
//! directory); every other label must be declared here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
struct File {
    #[serde(default)]
    key_value_store: BTreeMap<String, Backend>,
    #[serde(default)]
    sqlite_database: BTreeMap<String, Backend>,
}

#[derive(Debug, Clone, Deserialize)]
struct Backend {
    #[serde(rename = "type")]
    kind: String,
    path: Option<String>,
}

/// Resolved locations of every store and database label.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    pub key_value: BTreeMap<String, PathBuf>,
    pub sqlite: BTreeMap<String, PathBuf>,
}

impl RuntimeConfig {
    /// Reads `file` (if any); relative paths are relative to the file, defaults live in `state_dir`.
    pub fn load(file: Option<&Path>, state_dir: &Path) -> anyhow::Result<Self> {
        let mut config = Self {
            key_value: BTreeMap::from([("default".to_owned(), state_dir.join("sqlite_key_value.db"))]),
            sqlite: BTreeMap::from([("default".to_owned(), state_dir.join("sqlite_db.db"))]),
        };
        let Some(file) = file else { return Ok(config) };
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading runtime config {}", file.display()))?;
        let parsed: File =
            toml::from_str(&text).with_context(|| format!("parsing runtime config {}", file.display()))?;
        let base = file.parent().unwrap_or(Path::new("."));
        let resolve = |kind: &str, label: &str, backend: &Backend, default: PathBuf| -> anyhow::Result<PathBuf> {
            if backend.kind != "spin" {
                bail!(
                    "{kind} {label:?}: only type = \"spin\" (local SQLite) is supported by this host, not {:?}",
                    backend.kind
                );
            }
            Ok(backend.path.as_ref().map_or(default, |p| base.join(p)))
        };
        for (label, backend) in &parsed.key_value_store {
            let path = resolve("key_value_store", label, backend, state_dir.join(format!("kv-{label}.db")))?;
            config.key_value.insert(label.clone(), path);
        }
        for (label, backend) in &parsed.sqlite_database {
            let path = resolve("sqlite_database", label, backend, state_dir.join(format!("{label}.db")))?;
            config.sqlite.insert(label.clone(), path);
        }
        Ok(config)
    }
}
