//! Project automation, so the README's two commands work with nothing but the Rust toolchain:
//!
//! - `cargo xtask up`: build the Wasm components and serve the app on 127.0.0.1:3000 with
//!   development secrets generated once into `.spin/dev-secrets.env`;
//! - `cargo xtask test`: check formatting and clippy, build the Wasm components once (release),
//!   install the Python `jwcrypto` and `Authlib` the interop tests compare against into
//!   `target/interop-venv` (pinned with hashes), run every test (the end-to-end suites on the
//!   project's host), run the end-to-end suites again on real Spin when a Spin binary is found
//!   ([`find_spin`]), then a bounded, repeatable fuzzing pass (every target for a fixed number
//!   of inputs, [`FUZZ_TARGETS`], from a fixed seed, [`CI_FUZZ_SEED`]);
//! - `cargo xtask fuzz [--seconds N | --ci | --runs N | --seed S] [--sanitizer none|address]
//!   [target...]`: build the `fuzz/` targets with the pinned cargo-fuzz (installed into
//!   `target/tools` on first use) and run each for N seconds (default [`DEFAULT_FUZZ_SECONDS`]),
//!   or, with `--ci`, `--runs` or `--seed`, repeatably as the pass of `cargo xtask test` (its
//!   counts and seed unless given); fails on any crash, panic or hang;
//! - `cargo xtask interop-venv`: only make `target/interop-venv` and print its Python;
//! - `cargo xtask build`: only build the Wasm components;
//! - `cargo xtask plugin`: package `healthctl` as a Spin plugin (`target/plugin/healthctl.json`)
//!   for `spin plugins install --file target/plugin/healthctl.json`, then `spin healthctl ...`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use sha2::Digest;

/// Every Wasm guest: the app's components, the host's test guests and the benchmark's JOSE guest.
const GUESTS: &[&str] = &[
    "policy",
    "gateway",
    "auth",
    "jwks",
    "patient",
    "doctor",
    "lab",
    "insurance",
    "portal",
    "host-probe",
    "host-probe-baddep",
    "bench-guest",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

fn run(mut cmd: Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// Whether `cargo {tool}` is installed (rustup's minimal profile has neither rustfmt nor clippy).
fn has_cargo_tool(tool: &str) -> bool {
    cargo()
        .args([tool, "--version"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The first gates of `cargo xtask test`, before anything is built for the tests: the code is
/// as `cargo fmt` writes it, and `cargo clippy` finds nothing (every target, warnings are
/// errors). A missing tool is said, not skipped silently.
fn check_code() -> anyhow::Result<()> {
    if has_cargo_tool("fmt") {
        let mut cmd = cargo();
        cmd.args(["fmt", "--all", "--check"]);
        run(cmd).context("the code is not formatted: run `cargo fmt --all`")?;
    } else {
        println!("NOT RUN: the format check (`cargo fmt` is not installed: rustup component add rustfmt)");
    }
    if has_cargo_tool("clippy") {
        let mut cmd = cargo();
        cmd.args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]);
        run(cmd).context("clippy found something: see above")?;
    } else {
        println!("NOT RUN: clippy (`cargo clippy` is not installed: rustup component add clippy)");
    }
    Ok(())
}

/// Installs the `wasm32-wasip2` standard library if the active toolchain lacks it (rustup may
/// be told not to install anything on its own, as on CI machines).
fn ensure_wasm_target() -> anyhow::Result<()> {
    let output = Command::new("rustc")
        .current_dir(root())
        .args(["--print", "target-libdir", "--target", "wasm32-wasip2"])
        .output()?;
    let libdir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    if output.status.success() && libdir.is_dir() {
        return Ok(());
    }
    let mut rustup = Command::new("rustup");
    rustup.current_dir(root()).args(["target", "add", "wasm32-wasip2"]);
    run(rustup)
}

fn build_guests() -> anyhow::Result<()> {
    ensure_wasm_target()?;
    let mut cmd = cargo();
    cmd.args(["build", "--release", "--target", "wasm32-wasip2"]);
    for guest in GUESTS {
        cmd.args(["-p", guest]);
    }
    run(cmd)
}

/// The independent implementations the interop tests check against, jwcrypto (JOSE) and Authlib
/// (its OpenID Connect discovery metadata validation), and every package they pull in, each
/// pinned to a version and the sha256 of its files (compiled from `requirements.in` by
/// pip-compile: how is in its header).
const INTEROP_REQUIREMENTS: &str = "tests/interop/requirements.txt";

/// A Python virtual environment in `target/interop-venv` with exactly [`INTEROP_REQUIREMENTS`].
/// Installed with `--require-hashes` (a file whose hash is not listed fails the install) from
/// wheels only (no build step running code outside the pins); made again from scratch when the
/// requirements change, so nothing installed under other pins survives.
fn ensure_interop_python() -> anyhow::Result<PathBuf> {
    let venv = root().join("target/interop-venv");
    let python = venv.join("bin/python");
    let requirements = root().join(INTEROP_REQUIREMENTS);
    let pinned = std::fs::read(&requirements).with_context(|| format!("reading {}", requirements.display()))?;
    // A copy of the requirements the environment was installed from.
    let installed_from = venv.join("health-requirements.txt");
    let ready = |python: &Path| {
        Command::new(python).args(["-c", "import jwcrypto, authlib"]).output().is_ok_and(|o| o.status.success())
    };
    if std::fs::read(&installed_from).is_ok_and(|installed| installed == pinned) && ready(&python) {
        return Ok(python);
    }
    let mut create = Command::new("python3");
    create.args(["-m", "venv", "--clear"]).arg(&venv);
    run(create).context("creating the interop virtualenv needs python3 (with venv)")?;
    let mut install = Command::new(venv.join("bin/pip"));
    install.args(["install", "--quiet", "--disable-pip-version-check"]);
    install.args(["--require-hashes", "--only-binary=:all:", "-r"]).arg(&requirements);
    run(install).with_context(|| format!("installing {INTEROP_REQUIREMENTS} from PyPI"))?;
    anyhow::ensure!(ready(&python), "jwcrypto or authlib did not import after installation");
    std::fs::write(&installed_from, pinned).with_context(|| format!("writing {}", installed_from.display()))?;
    Ok(python)
}

/// Development secrets, generated once and kept so keys sealed under `master_key` stay readable.
/// A file from before a secret existed gets the missing ones added: each link's context key
/// (random) and `phi_wrapping_key`, derived from the file's `master_key` as an upgrading
/// operator does (`healthctl secrets phi-wrapping-key`), so the records written before still
/// open.
fn dev_secrets() -> anyhow::Result<Vec<(String, String)>> {
    let path = root().join(".spin/dev-secrets.env");
    let random = || -> anyhow::Result<String> {
        let mut bytes = [0u8; 32];
        getrandom::getrandom(&mut bytes).map_err(|e| anyhow::anyhow!("getrandom: {e}"))?;
        Ok(hex::encode(bytes))
    };
    if !path.exists() {
        std::fs::create_dir_all(root().join(".spin"))?;
        let operator_token = random()?;
        let text = format!(
            "# Development secrets for `cargo xtask up`. Never use these outside a laptop.\n\
             SPIN_VARIABLE_MASTER_KEY={}\n\
             # The operator token, for healthctl and /admin/... (`set -a; . .spin/dev-secrets.env; set +a`).\n\
             HEALTH_OPERATOR_TOKEN={operator_token}\nSPIN_VARIABLE_OPERATOR_TOKEN_HASH={}\n",
            random()?,
            hex::encode(sha2::Sha256::digest(operator_token.as_bytes())),
        );
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        println!("Generated development secrets in {}", path.display());
    }
    let read = || -> anyhow::Result<Vec<(String, String)>> {
        Ok(std::fs::read_to_string(&path)?
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect())
    };
    let secrets = read()?;
    let has = |name: &str| secrets.iter().any(|(k, _)| k == name);
    let mut missing = String::new();
    // Files from before the token had a line of its own kept it in a comment only.
    if !has("HEALTH_OPERATOR_TOKEN") {
        let text = std::fs::read_to_string(&path)?;
        if let Some(token) = text.lines().find_map(|l| l.strip_prefix("# operator token: ")) {
            missing.push_str(&format!("HEALTH_OPERATOR_TOKEN={}\n", token.trim()));
        }
    }
    for link in health_core::Link::ALL {
        let name = format!("SPIN_VARIABLE_{}", link.key_variable().to_uppercase());
        if !has(&name) {
            missing.push_str(&format!("{name}={}\n", random()?));
        }
    }
    if !has("SPIN_VARIABLE_PHI_WRAPPING_KEY") {
        let master = secrets.iter().find(|(k, _)| k == "SPIN_VARIABLE_MASTER_KEY").map(|(_, v)| v.as_str());
        let master = health_core::SecretKey::from_hex(master.unwrap_or_default())
            .map_err(|e| anyhow::anyhow!("SPIN_VARIABLE_MASTER_KEY in {}: {e}", path.display()))?;
        let derived = hex::encode(health_core::phi::wrapping_key(&master).expose());
        missing.push_str(&format!("SPIN_VARIABLE_PHI_WRAPPING_KEY={derived}\n"));
    }
    if missing.is_empty() {
        return Ok(secrets);
    }
    let mut text = std::fs::read_to_string(&path)?;
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&missing);
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    println!("Added the missing development secrets to {}", path.display());
    read()
}

/// Builds `healthctl` (release), packs it as Spin expects and writes the plugin manifest.
fn plugin() -> anyhow::Result<()> {
    let mut cmd = cargo();
    cmd.args(["build", "--release", "-p", "healthctl"]);
    run(cmd)?;
    let (os, arch) = match (std::env::consts::OS, std::env::consts::ARCH) {
        (os @ ("linux" | "macos"), "x86_64") => (os, "amd64"),
        (os @ ("linux" | "macos"), "aarch64") => (os, "aarch64"),
        (os, arch) => bail!("no Spin plugin package naming for {os}/{arch}"),
    };
    let out = root().join("target/plugin");
    std::fs::create_dir_all(&out)?;
    let tarball = out.join(format!("healthctl-{os}-{arch}.tar.gz"));
    let mut tar = Command::new("tar");
    tar.arg("-czf").arg(&tarball).arg("-C").arg(root().join("target/release")).arg("healthctl");
    run(tar)?;
    let sha256 = hex::encode(sha2::Sha256::digest(std::fs::read(&tarball)?));
    let manifest = format!(
        r#"{{
  "name": "healthctl",
  "description": "Operate the health platform: tenants, keys, tokens and the audit trail",
  "homepage": "https://github.com/health-platform/health-platform",
  "version": "{version}",
  "spinCompatibility": ">=3.0",
  "license": "Apache-2.0",
  "packages": [
    {{ "os": "{os}", "arch": "{arch}", "url": "file://{url}", "sha256": "{sha256}" }}
  ]
}}
"#,
        version = env!("CARGO_PKG_VERSION"),
        url = tarball.display(),
    );
    std::fs::write(out.join("healthctl.json"), manifest)?;
    println!("spin plugins install --file {}", out.join("healthctl.json").display());
    Ok(())
}

/// cargo-fuzz, pinned; installed into `target/tools` on first use.
const CARGO_FUZZ_VERSION: &str = "0.13.2";
/// Every target of `fuzz/` (its `Cargo.toml` `[[bin]]`s), with its number of inputs in the
/// bounded pass of `cargo xtask test`: about 15 s each on a loaded 2-core machine (the JOSE
/// targets do RSA or elliptic-curve work on most inputs, about 150 a second; the parsers run a
/// hundred thousand a second).
const FUZZ_TARGETS: &[(&str, u64)] = &[
    ("jws_verify", 2_000),
    ("jwe_decrypt", 3_000),
    ("caller_context", 1_000_000),
    ("routes", 1_000_000),
    ("identity", 30_000),
    ("ids", 1_000_000),
];
/// libFuzzer's seed in the bounded pass. With a fixed number of inputs, the committed seeds as
/// the only starting corpus and address-space randomisation off ([`without_aslr`]), the pass is
/// the same run every time on a machine (the code under test takes no time or randomness from
/// outside: `fuzz/src/lib.rs`), so a red pass is the code's doing and `cargo xtask fuzz --ci`
/// replays it.
const CI_FUZZ_SEED: u32 = 1;
/// Seconds per target of `cargo xtask fuzz` without `--seconds` or `--runs`: the longer run.
const DEFAULT_FUZZ_SECONDS: u64 = 300;
/// libFuzzer's per-input limit: an input that runs longer is reported as a hang (the slowest
/// legitimate input, an RSA-OAEP decryption, takes milliseconds).
const FUZZ_INPUT_TIMEOUT_SECS: u64 = 10;

/// How long each target runs.
#[derive(Clone, Copy)]
enum FuzzBudget {
    /// Random exploration for this many seconds, starting from the committed seeds and
    /// everything earlier such runs found (`fuzz/target/corpus/<target>`, kept).
    Seconds(u64),
    /// Exactly `runs` inputs (by default each target's count in [`FUZZ_TARGETS`]) from
    /// libFuzzer's `seed` and the committed seeds only, new finds kept in a directory emptied
    /// first (`fuzz/target/fixed-corpus/<target>`): the same run every time.
    Runs { runs: Option<u64>, seed: u32 },
}

struct FuzzOptions {
    budget: FuzzBudget,
    sanitizer: String,
    targets: Vec<String>,
}

impl Default for FuzzOptions {
    fn default() -> Self {
        Self {
            budget: FuzzBudget::Seconds(DEFAULT_FUZZ_SECONDS),
            // The code under test is safe Rust (the workspace denies `unsafe_code`), where
            // panics, overflow and bounds checks already catch what a fuzzer finds; AddressSanitizer
            // would only watch the dependencies' unsafe code, at twice the run time.
            sanitizer: "none".into(),
            targets: FUZZ_TARGETS.iter().map(|(t, _)| (*t).to_owned()).collect(),
        }
    }
}

impl FuzzOptions {
    /// The bounded, repeatable pass of `cargo xtask test`.
    fn ci() -> Self {
        Self { budget: FuzzBudget::Runs { runs: None, seed: CI_FUZZ_SEED }, ..Self::default() }
    }

    fn parse(args: &[String]) -> anyhow::Result<Self> {
        let mut options = Self { targets: Vec::new(), ..Self::default() };
        let (mut seconds, mut runs, mut seed, mut ci) = (None, None, None, false);
        let mut args = args.iter();
        let number = |flag: &str, value: Option<&String>| -> anyhow::Result<u64> {
            let value = value.with_context(|| format!("{flag} needs a number"))?;
            value.parse().with_context(|| format!("{flag} {value:?}"))
        };
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--seconds" => seconds = Some(number("--seconds", args.next())?),
                "--runs" => runs = Some(number("--runs", args.next())?),
                "--seed" => {
                    let value = number("--seed", args.next())?;
                    seed = Some(u32::try_from(value).context("--seed is at most 4294967295")?);
                }
                "--ci" => ci = true,
                "--sanitizer" => options.sanitizer = args.next().context("--sanitizer needs a name")?.clone(),
                target if FUZZ_TARGETS.iter().any(|(t, _)| *t == target) => options.targets.push(target.to_owned()),
                other => bail!(
                    "unknown fuzz argument {other:?} (targets: {})",
                    FUZZ_TARGETS.iter().map(|(t, _)| *t).collect::<Vec<_>>().join(", ")
                ),
            }
        }
        let repeatable = ci || runs.is_some() || seed.is_some();
        options.budget = match seconds {
            Some(_) if repeatable => bail!("--seconds is a timed run; --ci, --runs and --seed make a repeatable one"),
            Some(seconds) => FuzzBudget::Seconds(seconds),
            None if repeatable => FuzzBudget::Runs { runs, seed: seed.unwrap_or(CI_FUZZ_SEED) },
            None => FuzzBudget::Seconds(DEFAULT_FUZZ_SECONDS),
        };
        if options.targets.is_empty() {
            options.targets = Self::default().targets;
        }
        Ok(options)
    }
}

/// `target/tools/bin/cargo-fuzz` at [`CARGO_FUZZ_VERSION`], installed from crates.io if missing.
fn ensure_cargo_fuzz() -> anyhow::Result<PathBuf> {
    let tools = root().join("target/tools");
    let bin = tools.join("bin/cargo-fuzz");
    let installed = |bin: &Path| {
        Command::new(bin).args(["fuzz", "--version"]).output().is_ok_and(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).split_whitespace().any(|w| w == CARGO_FUZZ_VERSION)
        })
    };
    if !installed(&bin) {
        let mut cmd = cargo();
        cmd.args(["install", "--locked", "--version", CARGO_FUZZ_VERSION, "cargo-fuzz", "--root"]).arg(&tools);
        run(cmd).context("installing cargo-fuzz from crates.io")?;
        anyhow::ensure!(installed(&bin), "{} is not cargo-fuzz {CARGO_FUZZ_VERSION}", bin.display());
    }
    Ok(bin)
}

/// `cargo fuzz <subcommand>` with the project's build settings: release (`-O`, cargo-fuzz's
/// default) with debug assertions and overflow checks (`-a`), into `fuzz/target`.
fn cargo_fuzz(bin: &Path, subcommand: &str, options: &FuzzOptions) -> Command {
    let mut cmd = match options.budget {
        FuzzBudget::Runs { .. } if subcommand == "run" => without_aslr(bin),
        _ => Command::new(bin),
    };
    cmd.current_dir(root());
    cmd.args(["fuzz", subcommand, "--sanitizer", &options.sanitizer, "--debug-assertions"]);
    // cargo-fuzz passes unstable flags to rustc for sanitizers (`-Zsanitizer=address`), which a
    // stable toolchain refuses unless RUSTC_BOOTSTRAP is set; the toolchain is pinned to a
    // stable release and CI can fetch no nightly. With `--sanitizer none` no `-Z` flag is used,
    // so this only matters for `--sanitizer address`.
    cmd.env("RUSTC_BOOTSTRAP", "1");
    cmd
}

/// `program` run with address-space randomisation off (`setarch -R`, Linux), inherited by what
/// it starts. libFuzzer files the operands of recent comparisons, which it splices into inputs,
/// under the code address of the comparison: with randomised addresses the same seed mutates
/// differently from one run to the next (measured: `caller_context` after a million inputs).
/// Where `setarch` cannot, the pass still runs, only not byte for byte the same.
fn without_aslr(program: &Path) -> Command {
    let arch = std::env::consts::ARCH;
    let setarch = || {
        let mut cmd = Command::new("setarch");
        cmd.args([arch, "-R"]);
        cmd
    };
    if setarch().arg("true").output().is_ok_and(|o| o.status.success()) {
        let mut cmd = setarch();
        cmd.arg(program);
        cmd
    } else {
        println!("NOTE: no `setarch {arch} -R` here: the fuzzing pass runs with randomised addresses, not repeatably");
        Command::new(program)
    }
}

/// `target`'s number of inputs in the pass of `cargo xtask test` ([`FUZZ_TARGETS`]).
fn ci_runs(target: &str) -> u64 {
    FUZZ_TARGETS.iter().find(|(t, _)| *t == target).map_or(0, |(_, runs)| *runs)
}

/// Builds every fuzz target, then runs each within `options.budget` ([`FuzzBudget`]), starting
/// from its committed seeds (`fuzz/corpus/<target>`). Fails if any target crashes, panics, hangs
/// past [`FUZZ_INPUT_TIMEOUT_SECS`] on an input, or runs out of memory; libFuzzer leaves the
/// input in `fuzz/artifacts/<target>/`.
fn fuzz(options: &FuzzOptions) -> anyhow::Result<()> {
    let bin = ensure_cargo_fuzz()?;
    let mut build = cargo_fuzz(&bin, "build", options);
    // `cargo fuzz build` takes one target or none (all).
    if let [only] = options.targets.as_slice() {
        build.arg(only);
    }
    run(build)?;
    let mut failed = Vec::new();
    for target in &options.targets {
        // libFuzzer adds what it finds to the first corpus directory and reads all of them.
        let (found, limit) = match options.budget {
            FuzzBudget::Seconds(seconds) => {
                (root().join("fuzz/target/corpus").join(target), format!("-max_total_time={seconds}"))
            }
            FuzzBudget::Runs { runs, .. } => {
                let runs = runs.unwrap_or_else(|| ci_runs(target));
                let found = root().join("fuzz/target/fixed-corpus").join(target);
                if found.exists() {
                    std::fs::remove_dir_all(&found).with_context(|| format!("emptying {}", found.display()))?;
                }
                (found, format!("-runs={runs}"))
            }
        };
        std::fs::create_dir_all(&found).with_context(|| format!("creating {}", found.display()))?;
        let mut cmd = cargo_fuzz(&bin, "run", options);
        cmd.arg(target).arg(&found).arg(root().join("fuzz/corpus").join(target));
        cmd.arg("--").arg(&limit);
        if let FuzzBudget::Runs { seed, .. } = options.budget {
            // `-reload=0`: never rescan the corpus on a timer, so time cannot change the inputs.
            cmd.arg(format!("-seed={seed}")).arg("-reload=0");
        }
        cmd.arg(format!("-timeout={FUZZ_INPUT_TIMEOUT_SECS}"));
        cmd.args(["-rss_limit_mb=2048", "-print_final_stats=1"]);
        match options.budget {
            FuzzBudget::Seconds(seconds) => println!("fuzzing {target} for {seconds} s"),
            FuzzBudget::Runs { runs, seed } => {
                println!("fuzzing {target}: {} inputs from seed {seed}", runs.unwrap_or_else(|| ci_runs(target)));
            }
        }
        if let Err(error) = run(cmd) {
            eprintln!("{error:#}");
            failed.push(target.as_str());
        }
    }
    if !failed.is_empty() {
        bail!(
            "fuzz targets failed: {} (inputs in fuzz/artifacts/<target>/; replay one with \
             `target/tools/bin/cargo-fuzz fuzz run --sanitizer none -a <target> <input>`)",
            failed.join(", ")
        );
    }
    Ok(())
}

/// The packages whose test binaries run once per runtime: the end-to-end suites (one binary,
/// `e2e`, a module per suite) and the `healthctl` tests (they select the runtime from
/// `HEALTH_E2E_RUNTIME` at run time, so the same binaries serve both passes and nothing is built
/// twice). Each binary runs its tests on libtest's default threads, one per core: on 2 cores,
/// two `spin up` processes at work at once.
const E2E_PACKAGES: &[&str] = &["health-e2e", "healthctl"];
/// Set by xtask for the test binaries: which runtime runs the application (`host` or `spin`).
const RUNTIME_ENV: &str = "HEALTH_E2E_RUNTIME";

/// A real Spin binary, in this order: `SPIN_BIN`; `target/tools/spin` (unpacked earlier);
/// `spin` on `PATH`; `../shared/tools/spin-*.xz` beside the project, unpacked into
/// `target/tools/spin` with `xz`. `None` when there is none (a laptop without Spin).
fn find_spin() -> anyhow::Result<Option<PathBuf>> {
    let works = |bin: &Path| {
        Command::new(bin)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if let Some(bin) = std::env::var_os("SPIN_BIN").filter(|b| !b.is_empty()).map(PathBuf::from) {
        anyhow::ensure!(works(&bin), "SPIN_BIN={} does not run `--version`", bin.display());
        return Ok(Some(bin));
    }
    let unpacked = root().join("target/tools/spin");
    if works(&unpacked) {
        return Ok(Some(unpacked));
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join("spin"))
        .find(|bin| works(bin));
    if on_path.is_some() {
        return Ok(on_path);
    }
    let shared = root().join("../shared/tools");
    let Some(archive) = std::fs::read_dir(&shared).ok().and_then(|entries| {
        entries.filter_map(Result::ok).map(|e| e.path()).find(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("spin-") && n.ends_with(".xz"))
        })
    }) else {
        return Ok(None);
    };
    std::fs::create_dir_all(unpacked.parent().unwrap_or(&unpacked))?;
    let out = std::fs::File::create(&unpacked).with_context(|| format!("creating {}", unpacked.display()))?;
    let mut xz = Command::new("xz");
    xz.arg("-dc").arg(&archive).stdout(out);
    run(xz).with_context(|| format!("unpacking {} needs `xz`", archive.display()))?;
    let mut chmod = Command::new("chmod");
    chmod.arg("+x").arg(&unpacked);
    run(chmod)?;
    anyhow::ensure!(works(&unpacked), "{} (from {}) does not run", unpacked.display(), archive.display());
    Ok(Some(unpacked))
}

/// The test binaries of [`E2E_PACKAGES`] that `cargo test --workspace` built, with their
/// package directories (cargo runs a test binary there).
fn e2e_test_binaries() -> anyhow::Result<Vec<(PathBuf, PathBuf)>> {
    let mut cmd = cargo();
    cmd.args(["test", "--workspace", "--no-run", "--message-format=json-render-diagnostics"]);
    cmd.stdout(Stdio::piped());
    let output = cmd.output().context("listing the test binaries")?;
    anyhow::ensure!(output.status.success(), "cargo test --no-run failed");
    let mut binaries = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        let is_test = message["profile"]["test"].as_bool() == Some(true)
            && message["target"]["kind"].as_array().is_some_and(|k| k.iter().any(|k| k == "test"));
        let manifest = message["manifest_path"].as_str().map(PathBuf::from);
        if message["reason"] != "compiler-artifact" || !is_test {
            continue;
        }
        let (Some(executable), Some(manifest)) = (message["executable"].as_str(), manifest) else { continue };
        let dir = manifest.parent().map(Path::to_path_buf).unwrap_or_default();
        let name = std::fs::read_to_string(&manifest).ok().and_then(|text| {
            text.lines().find_map(|l| l.strip_prefix("name = ").map(|n| n.trim_matches('"').to_owned()))
        });
        if name.is_some_and(|n| E2E_PACKAGES.contains(&n.as_str())) {
            binaries.push((PathBuf::from(executable), dir));
        }
    }
    anyhow::ensure!(!binaries.is_empty(), "no end-to-end test binaries found");
    Ok(binaries)
}

/// Runs the end-to-end suites again with the application on real Spin (`spin`); every suite
/// runs, and the failures are listed together at the end.
fn test_on_spin(spin: &Path, python: &Path, filters: &[String]) -> anyhow::Result<()> {
    let version = Command::new(spin).arg("--version").output()?;
    println!("\n== the end-to-end suites on real Spin: {} ==", String::from_utf8_lossy(&version.stdout).trim());
    let mut failed = Vec::new();
    for (binary, dir) in e2e_test_binaries()? {
        let mut cmd = Command::new(&binary);
        cmd.current_dir(&dir).env(RUNTIME_ENV, "spin").env("SPIN_BIN", spin).env("HEALTH_INTEROP_PYTHON", python);
        cmd.args(filters);
        if let Err(error) = run(cmd) {
            eprintln!("{error:#}");
            failed.push(binary.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
        }
    }
    if !failed.is_empty() {
        bail!("end-to-end suites failed on real Spin: {}", failed.join(", "));
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("build") => build_guests(),
        Some("plugin") => plugin(),
        Some("test") => {
            check_code()?;
            build_guests()?;
            let spin = find_spin()?;
            let python = ensure_interop_python()?;
            let mut cmd = cargo();
            cmd.env("HEALTH_INTEROP_PYTHON", &python).env(RUNTIME_ENV, "host");
            cmd.args(["test", "--workspace"]);
            cmd.args(&args[1..]);
            run(cmd)?;
            // Arguments after `--` (test name filters, `--nocapture`) go to the Spin pass too.
            let filters = args.iter().skip_while(|a| *a != "--").skip(1).cloned().collect::<Vec<_>>();
            match &spin {
                Some(spin) => test_on_spin(spin, &python, &filters)?,
                None if std::env::var_os("HEALTH_E2E_REQUIRE_ALL").is_some() => {
                    bail!("HEALTH_E2E_REQUIRE_ALL is set but no Spin binary was found")
                }
                None => println!(
                    "NOT RUN on real Spin (no SPIN_BIN, no `spin` on PATH, no ../shared/tools/spin-*.xz): \
                     the end-to-end suites ({}) ran on the project's host only",
                    E2E_PACKAGES.join(", ")
                ),
            }
            fuzz(&FuzzOptions::ci())?;
            if spin.is_none() {
                println!("NOT RUN: the end-to-end suites on real Spin (no Spin binary found; see above)");
            }
            Ok(())
        }
        Some("fuzz") => fuzz(&FuzzOptions::parse(&args[1..])?),
        Some("interop-venv") => {
            println!("{}", ensure_interop_python()?.display());
            Ok(())
        }
        Some("up") => {
            build_guests()?;
            let mut cmd = cargo();
            // Not `--quiet`: the first build of the host takes minutes and should show progress.
            cmd.args(["run", "-p", "health-host", "--", "up", "--runtime-config-file", "runtime-config.toml"]);
            cmd.args(&args[1..]);
            // The demo tenant and its published passwords: `spin.toml` leaves it off, so that
            // a production deployment never has it; a laptop wants it on.
            if std::env::var_os("SPIN_VARIABLE_DEMO_TENANT").is_none() {
                cmd.env("SPIN_VARIABLE_DEMO_TENANT", "true");
            }
            // Rate limits likewise: `spin.toml`'s defaults protect a deployment, and would throttle
            // a developer's scripts and load tests on one loopback address; a laptop runs without
            // them unless asked (README, Operations).
            let mut off = Vec::new();
            for class in ["LOGIN", "READ", "WRITE", "ADMIN"] {
                let name = format!("SPIN_VARIABLE_RATE_LIMIT_{class}");
                if std::env::var_os(&name).is_none() {
                    cmd.env(&name, "off");
                    off.push(name);
                }
            }
            if !off.is_empty() {
                println!(
                    "Rate limits off for local development ({}); set them, e.g. =100/60, to try them.",
                    off.join(", ")
                );
            }
            for (key, value) in dev_secrets()? {
                // Explicit environment wins, like Spin's provider order. Only Spin variables
                // go to the app (the file also holds the operator token, for healthctl).
                if key.starts_with("SPIN_VARIABLE_") && std::env::var_os(&key).is_none() {
                    cmd.env(key, value);
                }
            }
            run(cmd)
        }
        _ => {
            eprintln!(
                "usage: cargo xtask <up [host args]|test [cargo test args]|build|plugin|interop-venv\
                 |fuzz [--seconds N | --ci | --runs N | --seed S] [--sanitizer none|address] [target...]>"
            );
            std::process::exit(2);
        }
    }
}
