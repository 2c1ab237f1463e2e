//! `health-host`: run a Spin application locally (`up`) or run its build commands (`build`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use health_host::{App, Limits, LoadOptions, Manifest};

#[derive(Parser)]
#[command(version, about = "Run a Spin application the way `spin up` does (wasmtime-based local host)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the application over HTTP.
    Up {
        /// The application manifest.
        #[arg(short = 'f', long = "from", alias = "file", default_value = "spin.toml")]
        file: PathBuf,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:3000")]
        listen: SocketAddr,
        /// Spin runtime configuration (store and database locations).
        #[arg(long)]
        runtime_config_file: Option<PathBuf>,
        /// State directory for the default stores.
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Run every component's build command first.
        #[arg(long)]
        build: bool,
        /// Stop a request not finished within this long and answer 500, as `wasmtime serve -W
        /// timeout=...` does (e.g. `30s`, `500ms`). Spin has no such deadline for wasi-http 0.2
        /// components, so there is none by default.
        #[arg(long, value_parser = parse_duration)]
        request_timeout: Option<Duration>,
        /// Serve at most this many requests at once, later ones waiting, as `wasmtime serve
        /// --max-concurrent-requests` does. Spin has no such limit, so there is none by default.
        #[arg(long)]
        max_concurrent_requests: Option<usize>,
    },
    /// Run every component's `[component.X.build] command`.
    Build {
        #[arg(short = 'f', long = "from", alias = "file", default_value = "spin.toml")]
        file: PathBuf,
    },
}

fn build(manifest_path: &Path) -> anyhow::Result<()> {
    let manifest = Manifest::load(manifest_path)?;
    let base = manifest_path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut done = Vec::new();
    for (id, component) in &manifest.component {
        let Some(build) = &component.build else {
            continue;
        };
        let workdir = build.workdir.as_ref().map_or(base.to_path_buf(), |w| base.join(w));
        if done.contains(&(build.command.clone(), workdir.clone())) {
            continue;
        }
        println!("Building component {id} with `{}`", build.command);
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(&build.command)
            .current_dir(&workdir)
            .status()
            .with_context(|| format!("running build command for {id}"))?;
        if !status.success() {
            bail!("build command for component {id:?} failed: {status}");
        }
        done.push((build.command.clone(), workdir));
    }
    println!("Finished building all Spin components");
    Ok(())
}

/// `500ms`, `30s` or `30` (seconds).
fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = match text.strip_suffix("ms") {
        Some(ms) => (ms, Duration::from_millis(1)),
        None => (text.strip_suffix('s').unwrap_or(text), Duration::from_secs(1)),
    };
    let n: u32 = number.trim().parse().map_err(|_| format!("{text:?} is not a duration like 500ms or 30s"))?;
    Ok(unit * n)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,wasmtime=warn,cranelift=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Build { file } => build(&file),
        Command::Up {
            file,
            listen,
            runtime_config_file,
            state_dir,
            build: run_build,
            request_timeout,
            max_concurrent_requests,
        } => {
            if run_build {
                build(&file)?;
            }
            let base = file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
            let options = LoadOptions {
                manifest: file.clone(),
                runtime_config: runtime_config_file,
                state_dir: state_dir.unwrap_or_else(|| base.join(".spin")),
                env: std::env::vars().collect(),
            };
            let limits = Limits { request_timeout, max_concurrent_requests, ..Limits::from_env(&options.env)? };
            let app = App::load_with_limits(&options, limits)?;
            let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
            println!("Serving http://{listen}\nAvailable Routes:");
            for (route, component) in app.routes() {
                if route.starts_with('/') {
                    println!("  {component}: http://{listen}{route}");
                } else {
                    println!("  {component}: {route}");
                }
            }
            health_host::serve(app, listener).await
        }
    }
}
