//! `health-bench`: the platform's benchmarks, in one command (after `cargo xtask build`):
//!
//! ```sh
//! cargo run -p health-bench [-- --seconds 3 --crypto-ms 1000]
//! ```
//!
//! Dev profile on purpose: it reuses the build `cargo xtask test` already made (wasmtime,
//! Cranelift and the crypto crates are optimised there, see the root `Cargo.toml`), and the
//! components it drives are the release Wasm built by `cargo xtask build` whatever the host's
//! profile. A `--release` build would first compile wasmtime again with LTO.
//!
//! What it measures, in one run:
//!
//! - **Requests over HTTP on real Spin, then on the project's host** (`spin up`, found as
//!   `cargo xtask test` finds it; `health_host::serve`), at concurrency 1 and 16, `--seconds`
//!   per cell: requests/s, p50 and p99 for a hello-world component on the same runtime (the
//!   baseline), JWKS GET, login, an authorized JWS record read, an insurer's JWE summary read
//!   (each request spends its own pre-minted one-time token; minting is not timed) and a
//!   rejected request; each one's throughput as a ratio of the baseline's, measured in slices
//!   alternating with the scenario's, and whether p99 ≤ 5 × p50. Without a Spin binary only
//!   the host is measured, and the outputs say so.
//! - **JOSE micro-benchmarks**: RS256, ES256 and EdDSA verification and JWE decryption
//!   (ECDH-ES+A256KW, RSA-OAEP-256; A256GCM), natively and in Wasm: the `bench-guest` command
//!   built with the release profile both ways (this command builds the native one), the Wasm
//!   one run in wasmtime configured as the host configures it; `--crypto-ms` per operation and
//!   side.
//!
//! - **Backups** (`--backup`, instead of the above): `healthctl backup create`, `verify` and
//!   `restore`, and a platform started on the restored state, for the demo data and for 10^5
//!   audit events (`backup.rs`); writes `target/bench/backup.json` and `backup.md`.
//!
//! Writes `target/bench/results.json` (everything), `target/bench/results.md` (the tables) and
//! `target/bench/throughput.png` (requests/s per scenario). Not a test: nothing passes or fails;
//! a scenario whose route is not there yet is skipped with the reason in every output.

mod backup;
mod crypto;
mod http;
mod report;
mod scaling;

use clap::Parser;
use health_e2e::Runtime;

/// Benchmarks over HTTP on real Spin and the host, and JOSE natively and in Wasm.
#[derive(Parser)]
struct Args {
    /// Seconds per scenario and concurrency.
    #[arg(long, default_value_t = 3)]
    seconds: u64,
    /// Milliseconds per JOSE operation, natively and again in Wasm.
    #[arg(long, default_value_t = 1000)]
    crypto_ms: u64,
    /// Only these request scenarios (hello, jwks, login, record, insurer, rejected), with the
    /// baseline always; for profiling one path. Default: all.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// The runtimes to measure, in order (spin, host). Default: both, Spin first; the host
    /// only when no Spin binary is found (SPIN_BIN, target/tools/spin or PATH).
    #[arg(long, value_delimiter = ',', value_parser = ["spin", "host"])]
    runtimes: Vec<String>,
    /// The concurrencies every scenario is measured at, e.g. `1,4,16,64`.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 16])]
    concurrency: Vec<usize>,
    /// Also measure the record read (at c=16) as the audit log grows to 10^4, 10^5 and 10^6
    /// events and the stores to 10 and 100 tenants (adds minutes and about 0.5 GB of state).
    #[arg(long)]
    scaling: bool,
    /// Only time backups and restores (RPO and RTO figures, docs/OPERATIONS.md): the demo data
    /// and 10^5 audit events, on the runtimes of `--runtimes`.
    #[arg(long)]
    backup: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let spin = health_e2e::runtime::spin_binary().is_some();
    let runtimes: Vec<Runtime> = match args.runtimes.as_slice() {
        [] if spin => vec![Runtime::Spin, Runtime::Host],
        [] => {
            eprintln!("NOT RUN on real Spin (no SPIN_BIN, target/tools/spin or spin on PATH): the host only");
            vec![Runtime::Host]
        }
        names => names.iter().map(|n| if n == "spin" { Runtime::Spin } else { Runtime::Host }).collect(),
    };
    if args.backup {
        let figures = runtime.block_on(backup::run(&runtimes))?;
        let out = health_e2e::root().join("target/bench");
        std::fs::create_dir_all(&out)?;
        let json = serde_json::Value::Array(figures.iter().map(backup::Figures::json).collect());
        std::fs::write(out.join("backup.json"), serde_json::to_string_pretty(&json)?)?;
        let table = backup::table(&figures);
        std::fs::write(out.join("backup.md"), &table)?;
        println!("{table}\nwritten to {}", out.display());
        return Ok(());
    }
    let seconds = std::time::Duration::from_secs(args.seconds);
    let mut requests = Vec::new();
    for target in runtimes {
        requests.push(runtime.block_on(http::run(target, seconds, &args.only, &args.concurrency, args.scaling))?);
    }
    // Outside the async runtime: the guest runs on wasmtime-wasi's synchronous bindings.
    let crypto = crypto::run(std::time::Duration::from_millis(args.crypto_ms))?;
    let out = health_e2e::root().join("target/bench");
    report::write(&out, &report::Meta { seconds: args.seconds, crypto_ms: args.crypto_ms }, &requests, &crypto)?;
    println!("{}", std::fs::read_to_string(out.join("results.md"))?);
    println!("written to {}", out.display());
    Ok(())
}
