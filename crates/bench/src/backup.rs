//! Backup and restore times (`--backup`), the figures behind the RPO and RTO in
//! docs/OPERATIONS.md: on each runtime, the platform started with the demo tenant and a little
//! traffic, then `healthctl backup create`, `verify` and `restore` timed as an operator runs
//! them (the binary, wall clock, the argon2id key derivation included), and the time from
//! `restore` to a second platform on the restored state answering a login and a record read.
//! Measured again after the demo tenant's audit chain has grown to 10^5 events (appended as
//! `--scaling` appends them, so the chain stays intact).
//!
//! Each figure is the median of [`RUNS`] runs. The first platform stays up and idle while it is
//! backed up (the drill in tests/e2e/backup.rs backs up under load).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::Context;
use health_e2e::backup::{PASSPHRASE_ENV, healthctl};
use health_e2e::{ALICE, Runtime, TestApp, root};

/// Runs per figure.
const RUNS: usize = 3;
/// The audit chain of the second measurement.
const LARGE_CHAIN: u64 = 100_000;
const PASSPHRASE: &str = "benchmark passphrase, not a secret";

/// One state's figures, in ms (medians) and bytes.
#[derive(Debug, Clone)]
pub struct Figures {
    pub runtime: String,
    pub state: String,
    pub audit_events: u64,
    pub store_bytes: u64,
    pub archive_bytes: u64,
    pub create_ms: f64,
    /// The part of `create_ms` spent deriving the key (argon2id).
    pub key_ms: f64,
    /// From the first store's snapshot to the last's.
    pub snapshot_window_ms: f64,
    pub verify_ms: f64,
    pub restore_ms: f64,
    /// From starting the second platform on the restored state to its first login and read.
    pub start_ms: f64,
    /// `restore_ms + start_ms`: the recovery time once the archive is at hand.
    pub rto_ms: f64,
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or_default()
}

/// `healthctl backup ARGS`: its JSON output and wall-clock ms.
fn healthctl_backup(args: &[&str]) -> anyhow::Result<(serde_json::Value, f64)> {
    let started = Instant::now();
    let output = Command::new(healthctl()?).arg("backup").args(args).env(PASSPHRASE_ENV, PASSPHRASE).output()?;
    let ms = started.elapsed().as_secs_f64() * 1e3;
    anyhow::ensure!(
        output.status.success(),
        "healthctl backup {}: {}",
        args.first().unwrap_or(&""),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok((serde_json::from_slice(&output.stdout).context("healthctl's JSON")?, ms))
}

/// Measures every runtime in `runtimes`, at the demo state and with [`LARGE_CHAIN`] events.
pub async fn run(runtimes: &[Runtime]) -> anyhow::Result<Vec<Figures>> {
    tokio::task::spawn_blocking(healthctl).await??;
    let mut figures = Vec::new();
    for &runtime in runtimes {
        let app = TestApp::start_on(runtime)?;
        // A little of everything: logins (refresh families), a record read, an admin with TOTP.
        for _ in 0..3 {
            let token = app.token(ALICE).await;
            anyhow::ensure!(app.get_with("/api/patients/p-1001/records", &token).await.status == 200, "record read");
        }
        app.token(health_e2e::ADMIN).await;
        let events = crate::scaling::chain_length(&app.state.path().join("audit.db"), health_core::DEMO_TENANT)?;
        figures.push(measure(&app, runtime, "demo data", events).await?);
        crate::scaling::append_events(
            &app.state.path().join("audit.db"),
            health_core::DEMO_TENANT,
            LARGE_CHAIN.saturating_sub(events),
        )?;
        figures.push(measure(&app, runtime, "10^5 audit events", LARGE_CHAIN).await?);
    }
    Ok(figures)
}

async fn measure(app: &TestApp, runtime: Runtime, state: &str, audit_events: u64) -> anyhow::Result<Figures> {
    let dir = tempfile::tempdir()?;
    let config = app.state.path().join("runtime-config.toml").display().to_string();
    let manifest = root().join("spin.toml").display().to_string();
    let (mut create, mut key, mut window, mut verify, mut restore, mut start) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut store_bytes, mut archive_bytes) = (0, 0);
    for run in 0..RUNS {
        let archive = dir.path().join(format!("backup-{run}.hbk")).display().to_string();
        let (created, ms) = tokio::task::block_in_place(|| {
            healthctl_backup(&[
                "create",
                "--runtime-config-file",
                &config,
                "--manifest",
                &manifest,
                "--out",
                &archive,
                "--passphrase-env",
                PASSPHRASE_ENV,
            ])
        })?;
        create.push(ms);
        key.push(created["took_ms"]["key"].as_f64().unwrap_or_default());
        window.push(created["snapshot_window_ms"].as_f64().unwrap_or_default());
        archive_bytes = created["bytes"].as_u64().unwrap_or_default();
        store_bytes = created["files"].as_array().into_iter().flatten().filter_map(|f| f["bytes"].as_u64()).sum();
        let (_, ms) = tokio::task::block_in_place(|| {
            healthctl_backup(&["verify", &archive, "--passphrase-env", PASSPHRASE_ENV])
        })?;
        verify.push(ms);
        let into = dir.path().join(format!("restored-{run}"));
        let into_text = into.display().to_string();
        let (restored, ms) = tokio::task::block_in_place(|| {
            healthctl_backup(&[
                "restore",
                &archive,
                "--into",
                &into_text,
                "--confirm",
                "--passphrase-env",
                PASSPHRASE_ENV,
            ])
        })?;
        restore.push(ms);
        let runtime_config = restored["runtime_config"].as_str().context("runtime_config")?.to_owned();
        let started = Instant::now();
        let second = TestApp::start_on_stores(Path::new(&runtime_config), runtime)?;
        let token = second.token(ALICE).await;
        anyhow::ensure!(second.get_with("/api/patients/p-1001/records", &token).await.status == 200, "restored read");
        start.push(started.elapsed().as_secs_f64() * 1e3);
        drop(second);
    }
    let (restore_ms, start_ms) = (median(restore), median(start));
    let figures = Figures {
        runtime: runtime.name().to_owned(),
        state: state.to_owned(),
        audit_events,
        store_bytes,
        archive_bytes,
        create_ms: median(create),
        key_ms: median(key),
        snapshot_window_ms: median(window),
        verify_ms: median(verify),
        restore_ms,
        start_ms,
        rto_ms: restore_ms + start_ms,
    };
    eprintln!("{figures:?}");
    Ok(figures)
}

impl Figures {
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "runtime": self.runtime, "state": self.state, "audit_events": self.audit_events,
            "store_bytes": self.store_bytes, "archive_bytes": self.archive_bytes,
            "create_ms": self.create_ms, "key_ms": self.key_ms, "snapshot_window_ms": self.snapshot_window_ms,
            "verify_ms": self.verify_ms, "restore_ms": self.restore_ms, "start_ms": self.start_ms,
            "rto_ms": self.rto_ms,
        })
    }
}

/// The figures as a Markdown table.
pub fn table(figures: &[Figures]) -> String {
    let mut out = String::from(
        "| runtime | state | audit events | stores | archive | create (argon2id) | snapshot window | verify | restore | restored platform serving | RTO |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let mib = |b: u64| format!("{:.1} MiB", b as f64 / f64::from(1 << 20));
    for f in figures {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {:.0} ms ({:.0} ms) | {:.1} ms | {:.0} ms | {:.0} ms | {:.0} ms | {:.1} s |\n",
            f.runtime,
            f.state,
            f.audit_events,
            mib(f.store_bytes),
            mib(f.archive_bytes),
            f.create_ms,
            f.key_ms,
            f.snapshot_window_ms,
            f.verify_ms,
            f.restore_ms,
            f.start_ms,
            f.rto_ms / 1e3
        ));
    }
    out
}
