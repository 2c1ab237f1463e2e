//! For the backup drill (`tests/e2e/backup.rs`) and the backup benchmark (`health-bench
//! --backup`): the `healthctl` binary as operators run it, and the application started on the
//! stores a runtime configuration places (the one `healthctl backup restore` writes).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use anyhow::Context;
use health_host::LoadOptions;

use crate::{MASTER_KEY, Runtime, Target, TestApp, root, secrets};

/// The environment variable the drill and the benchmark pass backup passphrases in.
pub const PASSPHRASE_ENV: &str = "HEALTH_BACKUP_PASSPHRASE";

/// The `healthctl` binary, built once per process with `cargo build -p healthctl` (a no-op
/// when `cargo test --workspace` built it already) so a suite runs what operators run.
pub fn healthctl() -> anyhow::Result<PathBuf> {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    if let Some(bin) = BIN.get() {
        return Ok(bin.clone());
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .args(["build", "-q", "-p", "healthctl", "--bin", "healthctl", "--message-format=json"])
        .current_dir(root())
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo build -p healthctl")?;
    anyhow::ensure!(output.status.success(), "cargo build -p healthctl failed ({})", output.status);
    let bin = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "healthctl")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .context("cargo build -p healthctl named no executable")?;
    Ok(BIN.get_or_init(|| bin).clone())
}

impl TestApp {
    /// The real `spin.toml` on `runtime`, with the test secrets and variables, on the stores the
    /// runtime configuration at `runtime_config` places (e.g. the `runtime-config.toml` that
    /// `healthctl backup restore` writes, absolute paths). Spin's own state (logs) goes to a new
    /// temporary directory, [`TestApp::state`]; the stores stay where the configuration says.
    pub fn start_on_stores(runtime_config: &Path, runtime: Runtime) -> anyhow::Result<Self> {
        let state = tempfile::tempdir()?;
        let options = LoadOptions {
            manifest: root().join("spin.toml"),
            runtime_config: Some(runtime_config.to_owned()),
            state_dir: state.path().join(".spin"),
            env: secrets(MASTER_KEY),
        };
        Ok(Self { app: Target::load_on(runtime, &options)?, state, totp: std::sync::Mutex::default() })
    }
}
