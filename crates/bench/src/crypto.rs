//! JOSE micro-benchmarks: the `bench-guest` command built twice with the release profile, as a
//! native binary and as the `wasm32-wasip2` component (run in wasmtime configured as
//! `health-host` configures its engine), fed the same fixture. The native side is not timed in
//! this process because the dev profile leaves the workspace crates unoptimised, and with them
//! every generic RustCrypto routine they instantiate (ES256 verification ran 6× slower that way).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command as Process, Stdio};
use std::time::Duration;

use anyhow::Context;
use bench_guest::{Request, Timing};
use rand::SeedableRng;
use wasmtime::Store;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime_wasi::p2::bindings::sync::Command;
use wasmtime_wasi::p2::pipe::{MemoryInputPipe, MemoryOutputPipe};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// The guest as `cargo xtask build` leaves it.
pub const GUEST_WASM: &str = "target/wasm32-wasip2/release/bench-guest.wasm";
/// The same guest built natively by [`build_native`].
pub const GUEST_NATIVE: &str = "target/release/bench-guest";
/// Fixed seed and clock: every run times the same keys and tokens.
const SEED: u64 = 6;
const NOW: i64 = 1_767_225_600;

/// One operation, both ways.
pub struct Row {
    pub op: String,
    pub native: Timing,
    pub wasm: Timing,
}

impl Row {
    /// How many times longer one operation takes in Wasm than natively.
    pub fn wasm_over_native(&self) -> f64 {
        self.wasm.micros_per_op() / self.native.micros_per_op()
    }
}

pub fn run(budget: Duration) -> anyhow::Result<Vec<Row>> {
    let fixture = bench_guest::generate(NOW, &mut rand::rngs::StdRng::seed_from_u64(SEED))?;
    let request = Request { fixture, budget_ms: u64::try_from(budget.as_millis()).unwrap_or(u64::MAX) };
    let request = serde_json::to_vec(&request)?;
    let native = run_native(&build_native()?, &request)?;
    eprintln!("timing JOSE in Wasm ({GUEST_WASM}), {budget:?} per operation");
    let wasm = run_guest(&request)?;
    let rows: Vec<Row> = native
        .into_iter()
        .map(|native| {
            let wasm = wasm.iter().find(|w| w.op == native.op).cloned().with_context(|| {
                format!("the Wasm guest did not time {:?} (rebuild it with `cargo xtask build`)", native.op)
            })?;
            anyhow::Ok(Row { op: native.op.clone(), native, wasm })
        })
        .collect::<anyhow::Result<_>>()?;
    for row in &rows {
        eprintln!(
            "{:<40} native {:>9.1} µs/op  Wasm {:>9.1} µs/op  ×{:.2}",
            row.op,
            row.native.micros_per_op(),
            row.wasm.micros_per_op(),
            row.wasm_over_native()
        );
    }
    Ok(rows)
}

/// Builds the guest natively with the release profile (`cargo build --release -p bench-guest`;
/// seconds once built, a minute or two the first time).
fn build_native() -> anyhow::Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("building {GUEST_NATIVE} (cargo build --release -p bench-guest)");
    let status = Process::new(&cargo)
        .current_dir(health_e2e::root())
        .args(["build", "--release", "-p", "bench-guest", "--bin", "bench-guest"])
        .status()
        .with_context(|| format!("running {cargo}"))?;
    anyhow::ensure!(status.success(), "building the native bench-guest failed: {status}");
    Ok(health_e2e::root().join(GUEST_NATIVE))
}

/// Runs the native guest once with `request` on stdin and reads its timings from stdout.
fn run_native(path: &std::path::Path, request: &[u8]) -> anyhow::Result<Vec<Timing>> {
    eprintln!("timing JOSE natively ({})", path.display());
    let mut child = Process::new(path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", path.display()))?;
    child.stdin.take().context("the native guest's stdin")?.write_all(request)?;
    let output = child.wait_with_output()?;
    let errors = String::from_utf8_lossy(&output.stderr).into_owned();
    anyhow::ensure!(output.status.success(), "the native guest failed: {errors}");
    serde_json::from_slice(&output.stdout)
        .with_context(|| format!("the native guest's output is not timings: {errors}"))
}

struct Guest {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for Guest {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// Runs the guest command once with `request` on stdin and reads its timings from stdout.
fn run_guest(request: &[u8]) -> anyhow::Result<Vec<Timing>> {
    let path = health_e2e::root().join(GUEST_WASM);
    let engine = health_host::engine()?;
    let component = Component::from_file(&engine, &path)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("loading {} (run `cargo xtask build` first)", path.display()))?;
    let mut linker = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    let stdout = MemoryOutputPipe::new(1 << 20);
    let stderr = MemoryOutputPipe::new(64 << 10);
    let wasi = WasiCtx::builder()
        .stdin(MemoryInputPipe::new(request.to_vec()))
        .stdout(stdout.clone())
        .stderr(stderr.clone())
        .build();
    let mut store = Store::new(&engine, Guest { wasi, table: ResourceTable::new() });
    let command = Command::instantiate(&mut store, &component, &linker)?;
    let outcome = command.wasi_cli_run().call_run(&mut store)?;
    let errors = String::from_utf8_lossy(&stderr.contents()).into_owned();
    anyhow::ensure!(outcome.is_ok(), "the Wasm guest failed: {errors}");
    serde_json::from_slice(&stdout.contents())
        .with_context(|| format!("the Wasm guest's output is not timings: {errors}"))
}
