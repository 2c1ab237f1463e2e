//! `cargo run -p health-bench [-- --seconds N]`: requests/s, p50 and p99 per scenario through
//! the local host, in-process, at concurrency 1 and 16, with each scenario's throughput as a
//! ratio of a hello-world component on the same host measured in the same run. Writes
//! `target/bench/results.json` and `target/bench/results.md`. Not a test: nothing passes or fails.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use health_e2e::{ALICE, TestApp, root};
use health_host::{App, LoadOptions};

#[derive(Clone)]
struct Scenario {
    name: &'static str,
    app: App,
    method: &'static str,
    path: &'static str,
    headers: Vec<(&'static str, String)>,
    body: String,
    expect: u16,
}

struct Measured {
    name: &'static str,
    concurrency: usize,
    requests: usize,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// One request from client address `from`. Each worker has its own address: concurrent logins
/// of one user from one address count against the lockout in advance, as an attack would.
async fn once(s: &Scenario, from: std::net::SocketAddr) -> anyhow::Result<Duration> {
    let mut req = http::Request::builder().method(s.method).uri(s.path);
    for (name, value) in &s.headers {
        req = req.header(*name, value);
    }
    let req = req.body(Bytes::from(s.body.clone()))?;
    let start = Instant::now();
    let res = s.app.handle_from(req, from).await?;
    let took = start.elapsed();
    anyhow::ensure!(res.status().as_u16() == s.expect, "{}: status {} (expected {})", s.name, res.status(), s.expect);
    Ok(took)
}

async fn measure(s: &Scenario, concurrency: usize, duration: Duration) -> anyhow::Result<Measured> {
    once(s, ([10, 0, 0, 1], 40000).into()).await?; // warm-up, and a check that the scenario behaves
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..concurrency {
        let s = s.clone();
        let from = std::net::SocketAddr::from(([10, 0, 1, u8::try_from(worker % 250).unwrap_or(0)], 40000));
        workers.spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                latencies.push(once(&s, from).await?);
            }
            anyhow::Ok(latencies)
        });
    }
    let mut all = Vec::new();
    while let Some(done) = workers.join_next().await {
        all.extend(done??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    Ok(Measured {
        name: s.name,
        concurrency,
        requests: all.len(),
        rps: all.len() as f64 / elapsed,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
    })
}

fn baseline_app(state: &std::path::Path) -> anyhow::Result<App> {
    std::fs::write(
        state.join("rc.toml"),
        "[key_value_store.allowed]\ntype = \"spin\"\npath = \"a.db\"\n[sqlite_database.db]\ntype = \"spin\"\npath = \"d.db\"\n",
    )?;
    App::load(&LoadOptions {
        manifest: root().join("crates/host/tests/fixtures/spin.toml"),
        runtime_config: Some(state.join("rc.toml")),
        state_dir: state.join(".spin"),
        env: HashMap::from([("SPIN_VARIABLE_TOKEN".to_owned(), "bench".to_owned())]),
    })
    .context("loading the hello-world baseline (run `cargo xtask build` first)")
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let seconds: u64 =
        std::env::args().skip_while(|a| a != "--seconds").nth(1).and_then(|s| s.parse().ok()).unwrap_or(3);
    let duration = Duration::from_secs(seconds);
    let platform = TestApp::start(|_| {})?;
    let baseline_state = tempfile::tempdir()?;
    let baseline = baseline_app(baseline_state.path())?;
    let token = platform.token(ALICE).await;
    let app = platform.app.clone();
    let bearer = vec![("authorization", format!("Bearer {token}"))];
    let login = serde_json::json!({ "tenant": "demo-hospital", "username": ALICE.0, "password": ALICE.1 }).to_string();
    let scenario = |name, app: &App, method, path, headers: Vec<(&'static str, String)>, body: &str, expect| Scenario {
        name,
        app: app.clone(),
        method,
        path,
        headers,
        body: body.to_owned(),
        expect,
    };
    let scenarios = [
        scenario("hello (baseline)", &baseline, "GET", "/hello", vec![], "", 200),
        scenario("JWKS GET", &app, "GET", "/.well-known/jwks.json", vec![], "", 200),
        scenario(
            "login (argon2id)",
            &app,
            "POST",
            "/auth/login",
            vec![("content-type", "application/json".into())],
            &login,
            200,
        ),
        scenario("authorized record read (JWS)", &app, "GET", "/api/patients/p-1001/record", bearer.clone(), "", 200),
        scenario(
            "rejected request (bad token)",
            &app,
            "GET",
            "/api/patients/p-1001/record",
            vec![("authorization", format!("Bearer {token}x"))],
            "",
            401,
        ),
    ];
    let mut results = Vec::new();
    for concurrency in [1, 16] {
        for s in &scenarios {
            let m = measure(s, concurrency, duration).await?;
            eprintln!(
                "{:<32} c={:<2} {:>8.1} req/s  p50 {:>7.2} ms  p99 {:>7.2} ms",
                m.name, m.concurrency, m.rps, m.p50_ms, m.p99_ms
            );
            results.push(m);
        }
    }
    let base =
        |c: usize| results.iter().find(|m| m.concurrency == c && m.name.starts_with("hello")).map_or(1.0, |m| m.rps);
    let mut table = String::from(
        "| scenario | concurrency | requests | req/s | p50 ms | p99 ms | vs baseline |\n|---|---|---|---|---|---|---|\n",
    );
    let mut json = Vec::new();
    for m in &results {
        let ratio = m.rps / base(m.concurrency);
        table.push_str(&format!(
            "| {} | {} | {} | {:.1} | {:.2} | {:.2} | {:.1}% |\n",
            m.name,
            m.concurrency,
            m.requests,
            m.rps,
            m.p50_ms,
            m.p99_ms,
            ratio * 100.0
        ));
        json.push(serde_json::json!({
            "scenario": m.name, "concurrency": m.concurrency, "requests": m.requests, "rps": m.rps,
            "p50_ms": m.p50_ms, "p99_ms": m.p99_ms, "ratio_to_baseline": ratio,
        }));
    }
    let out = root().join("target/bench");
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("results.json"), serde_json::to_string_pretty(&json)?)?;
    std::fs::write(out.join("results.md"), &table)?;
    println!("{table}");
    println!("written to {}", out.display());
    Ok(())
}
