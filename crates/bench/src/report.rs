//! The outputs: `results.json` (every number), `results.md` (the tables) and `throughput.png`.

use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::crypto::{self, Row};
use crate::http::{Cell, Results, SCALING_CONCURRENCY, TAIL_LIMIT};

/// How the numbers were taken.
pub struct Meta {
    pub seconds: u64,
    pub crypto_ms: u64,
}

fn profile() -> &'static str {
    if cfg!(debug_assertions) { "dev (dependencies optimised)" } else { "release" }
}

/// Writes every output; `runs` holds one [`Results`] per runtime, real Spin first. The chart
/// of the first runtime is `throughput.png`; each runtime also gets `throughput-{runtime}.png`.
pub fn write(out: &Path, meta: &Meta, runs: &[Results], crypto: &[Row]) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    std::fs::write(out.join("results.json"), serde_json::to_string_pretty(&json(meta, runs, crypto))?)?;
    let mut md = String::new();
    for requests in runs {
        md.push_str(&markdown(meta, requests));
    }
    md.push_str(&crypto_markdown(meta, crypto));
    std::fs::write(out.join("results.md"), md)?;
    for (i, requests) in runs.iter().enumerate() {
        chart(&out.join(format!("throughput-{}.png", requests.runtime)), meta, requests)?;
        if i == 0 {
            std::fs::copy(out.join(format!("throughput-{}.png", requests.runtime)), out.join("throughput.png"))?;
        }
    }
    Ok(())
}

fn json(meta: &Meta, runs: &[Results], crypto: &[Row]) -> serde_json::Value {
    let timing = |t: &bench_guest::Timing| {
        serde_json::json!({
            "iterations": t.iterations, "nanos": t.nanos,
            "us_per_op": t.micros_per_op(), "ops_per_sec": t.ops_per_sec(),
        })
    };
    serde_json::json!({
        "meta": {
            "seconds_per_cell": meta.seconds,
            "crypto_ms_per_op": meta.crypto_ms,
            "profile": profile(),
            "cores": std::thread::available_parallelism().map_or(0, usize::from),
            "unix_time": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            "baseline": "hello",
            "tail_limit_p99_over_p50": TAIL_LIMIT,
            "wasm_guest": crypto::GUEST_WASM,
        },
        "runtimes": runs.iter().map(|requests| serde_json::json!({
        "runtime": requests.runtime,
        "notes": requests.notes,
        "scenarios": requests.cells.iter().map(|c| serde_json::json!({
            "scenario": c.key, "label": c.label, "concurrency": c.concurrency,
            "requests": c.requests, "seconds": c.seconds, "rps": c.rps,
            "p50_ms": c.p50_ms, "p99_ms": c.p99_ms,
            "ratio_to_baseline": c.ratio, "target_ratio": c.target, "meets_target": c.meets_target(),
            "p99_over_p50": c.tail(), "p99_within_limit": c.tail_ok(), "note": c.note,
        })).collect::<Vec<_>>(),
        "scaling": requests.scaling.iter().map(|s| serde_json::json!({
            "audit_events": s.audit_events, "tenants": s.tenants, "concurrency": s.cell.concurrency,
            "rps": s.cell.rps, "p50_ms": s.cell.p50_ms, "p99_ms": s.cell.p99_ms, "ratio_to_baseline": s.cell.ratio,
        })).collect::<Vec<_>>(),
        "skipped": requests.skipped.iter().map(|s| serde_json::json!({
            "scenario": s.key, "label": s.label, "reason": s.reason,
        })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "crypto": crypto.iter().map(|r| serde_json::json!({
            "op": r.op, "native": timing(&r.native), "wasm": timing(&r.wasm),
            "wasm_over_native": r.wasm_over_native(),
        })).collect::<Vec<_>>(),
    })
}

fn yes_no(ok: bool) -> &'static str {
    if ok { "yes" } else { "**no**" }
}

/// Scenarios in order of first appearance.
fn scenario_keys(requests: &Results) -> Vec<&'static str> {
    let mut keys: Vec<&'static str> = Vec::new();
    for cell in &requests.cells {
        if !keys.contains(&cell.key) {
            keys.push(cell.key);
        }
    }
    keys
}

/// The concurrencies measured, in increasing order.
fn concurrencies(requests: &Results) -> Vec<usize> {
    let mut levels: Vec<usize> = requests.cells.iter().map(|c| c.concurrency).collect();
    levels.sort_unstable();
    levels.dedup();
    levels
}

fn cells<'a>(requests: &'a Results, key: &str) -> Vec<&'a Cell> {
    concurrencies(requests)
        .into_iter()
        .filter_map(|c| requests.cells.iter().find(|m| m.key == key && m.concurrency == c))
        .collect()
}

fn number(value: f64) -> String {
    if value >= 100.0 { format!("{value:.0}") } else { format!("{value:.1}") }
}

fn millis(value: f64) -> String {
    if value >= 10.0 { format!("{value:.1}") } else { format!("{value:.2}") }
}

fn percent(ratio: f64) -> String {
    if ratio >= 0.1 { format!("{:.0}%", ratio * 100.0) } else { format!("{:.1}%", ratio * 100.0) }
}

fn runtime_title(runtime: &str) -> &'static str {
    match runtime {
        "spin" => "real Spin (`spin up`)",
        _ => "the project's host (`health_host::serve`)",
    }
}

fn markdown(meta: &Meta, requests: &Results) -> String {
    let mut md = format!(
        "## Requests over HTTP on {} ({} s per cell, bench and host built with the {} profile)\n\n\
         Each scenario's time is cut into three slices, each run right after a slice of the \
         hello-world baseline on the same runtime; its ratio is its throughput over the \
         baseline's in those slices (the baseline's row is all its slices). Each worker keeps \
         one HTTP/1.1 connection. The targets: authorized JWS record read ≥ 30% of the \
         baseline, insurer JWE read ≥ 15%, p99 ≤ {TAIL_LIMIT} × p50.\n\n\
         | scenario | c | req/s | p50 ms | p99 ms | p99/p50 ≤ {TAIL_LIMIT} | vs baseline | target |\n\
         |---|---|---|---|---|---|---|---|\n",
        runtime_title(requests.runtime),
        meta.seconds,
        profile()
    );
    for key in scenario_keys(requests) {
        for c in cells(requests, key) {
            let target = match (c.target, c.meets_target()) {
                (Some(t), Some(met)) => format!("≥ {}: {}", percent(t), yes_no(met)),
                _ => "—".to_owned(),
            };
            md.push_str(&format!(
                "| {} | {} | {} | {} | {} | {:.1}: {} | {} | {} |\n",
                c.label,
                c.concurrency,
                number(c.rps),
                millis(c.p50_ms),
                millis(c.p99_ms),
                c.tail(),
                yes_no(c.tail_ok()),
                percent(c.ratio),
                target,
            ));
        }
    }
    if !requests.scaling.is_empty() {
        md.push_str(&format!(
            "\n### How the record read's cost grows ({}, c={SCALING_CONCURRENCY})\n\n\
             The demo tenant's audit chain grown to each size and the stores to each number of \
             tenants between measurements (`--scaling`, crates/bench/src/scaling.rs), each \
             measurement against its own baseline slices.\n\n\
             | audit events in the chain | tenants | req/s | p50 ms | p99 ms | vs baseline |\n\
             |---|---|---|---|---|---|\n",
            runtime_title(requests.runtime)
        ));
        for step in &requests.scaling {
            md.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} |\n",
                step.audit_events,
                step.tenants,
                number(step.cell.rps),
                millis(step.cell.p50_ms),
                millis(step.cell.p99_ms),
                percent(step.cell.ratio)
            ));
        }
        md.push('\n');
    }
    for skipped in &requests.skipped {
        md.push_str(&format!("| {} | | skipped: {} | | | | | |\n", skipped.label, skipped.reason.replace('|', "\\|")));
    }
    let cell_notes =
        requests.cells.iter().filter_map(|c| Some(format!("{} at c={}: {}", c.label, c.concurrency, c.note.as_ref()?)));
    let notes: Vec<String> = requests.notes.iter().cloned().chain(cell_notes).collect();
    if !notes.is_empty() {
        md.push('\n');
        for note in notes {
            md.push_str(&format!("- {note}\n"));
        }
    }
    md.push('\n');
    md
}

fn crypto_markdown(meta: &Meta, crypto: &[Row]) -> String {
    let mut md = String::new();
    md.push_str(&format!(
        "\n## JOSE natively and in Wasm ({} ms per operation and side)\n\n\
         The same code (`crates/bench-guest`, release profile) on the same keys and tokens: as a \
         native binary, and as a `wasm32-wasip2` command in wasmtime configured as the host is.\n\n\
         | operation | native µs/op | native ops/s | Wasm µs/op | Wasm ops/s | Wasm / native |\n\
         |---|---|---|---|---|---|\n",
        meta.crypto_ms
    ));
    for row in crypto {
        md.push_str(&format!(
            "| {} | {:.1} | {:.0} | {:.1} | {:.0} | {:.2}× |\n",
            row.op,
            row.native.micros_per_op(),
            row.native.ops_per_sec(),
            row.wasm.micros_per_op(),
            row.wasm.ops_per_sec(),
            row.wasm_over_native()
        ));
    }
    md
}

const FONT: &str = "sans-serif";
const WIDTH: u32 = 1400;
const ROW_HEIGHT: u32 = 90;
const LABEL_AREA: u32 = 430;

/// Horizontal bars: one group per scenario, one bar per concurrency, each labelled with its
/// requests/s and its ratio to the baseline.
fn chart(path: &Path, meta: &Meta, requests: &Results) -> anyhow::Result<()> {
    plotters::style::register_font(FONT, FontStyle::Normal, include_bytes!("../assets/DejaVuSans.ttf"))
        .map_err(|_| anyhow::anyhow!("the bundled DejaVu Sans font did not load"))?;
    let keys = scenario_keys(requests);
    let n = keys.len().max(1);
    let height = 170 + ROW_HEIGHT * u32::try_from(n).unwrap_or(1);
    let max = requests.cells.iter().map(|c| c.rps).fold(1.0, f64::max);
    let root = BitMapBackend::new(path, (WIDTH, height)).into_drawing_area();
    let draw = |e: &dyn std::fmt::Debug| anyhow::anyhow!("drawing {}: {e:?}", path.display());
    root.fill(&WHITE).map_err(|e| draw(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "Requests/s per scenario over HTTP on {} ({} s per cell, concurrency {})",
                if requests.runtime == "spin" { "real Spin" } else { "health-host" },
                meta.seconds,
                concurrencies(requests).iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
            ),
            (FONT, 24),
        )
        .margin(20)
        .margin_left(LABEL_AREA)
        .margin_right(40)
        .x_label_area_size(50)
        .build_cartesian_2d(0.0..max * 1.3, 0.0..n as f64)
        .map_err(|e| draw(&e))?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(0)
        .x_label_formatter(&|v| format!("{v:.0}"))
        .light_line_style(WHITE)
        .x_desc("requests per second (ratio to the hello-world baseline at the same concurrency)")
        .axis_desc_style((FONT, 18))
        .label_style((FONT, 16))
        .draw()
        .map_err(|e| draw(&e))?;
    let colours = [RGBColor(66, 133, 244), RGBColor(244, 160, 0), RGBColor(15, 157, 88), RGBColor(219, 68, 55)];
    let levels = concurrencies(requests);
    let bar = 0.76 / levels.len().max(1) as f64;
    for (slot, (&concurrency, colour)) in levels.iter().zip(colours.into_iter().cycle()).enumerate() {
        let bars: Vec<(f64, f64, &Cell)> = keys
            .iter()
            .enumerate()
            .filter_map(|(i, key)| {
                let cell = requests.cells.iter().find(|c| c.key == *key && c.concurrency == concurrency)?;
                // First scenario at the top; lower concurrencies above higher within a group.
                let top = (n - i) as f64 - 0.12 - bar * slot as f64;
                Some((top - bar * 0.95, top, cell))
            })
            .collect();
        chart
            .draw_series(
                bars.iter()
                    .map(|&(bottom, top, cell)| Rectangle::new([(0.0, bottom), (cell.rps, top)], colour.filled())),
            )
            .map_err(|e| draw(&e))?
            .label(format!("concurrency {concurrency}"))
            .legend(move |(x, y)| Rectangle::new([(x, y - 7), (x + 18, y + 7)], colour.filled()));
        let value_style = TextStyle::from((FONT, 16).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
        chart
            .draw_series(bars.iter().map(|&(bottom, top, cell)| {
                EmptyElement::at((cell.rps, (bottom + top) / 2.0))
                    + Text::new(
                        format!("{} req/s ({})", number(cell.rps), percent(cell.ratio)),
                        (6, 0),
                        value_style.clone(),
                    )
            }))
            .map_err(|e| draw(&e))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .label_font((FONT, 16))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(|e| draw(&e))?;
    let label_style = TextStyle::from((FONT, 17).into_font()).pos(Pos::new(HPos::Right, VPos::Center));
    for (i, key) in keys.iter().enumerate() {
        let Some(cell) = requests.cells.iter().find(|c| c.key == *key) else { continue };
        let (x, y) = chart.backend_coord(&(0.0, (n - i) as f64 - 0.5));
        root.draw(&Text::new(cell.label.to_owned(), (x - 12, y), label_style.clone())).map_err(|e| draw(&e))?;
    }
    root.present().map_err(|e| draw(&e))?;
    Ok(())
}
