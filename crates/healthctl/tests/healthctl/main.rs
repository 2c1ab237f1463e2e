//! `healthctl`'s tests against a running app, one module per file of `tests/healthctl/`,
//! linked into one test binary (the harness links wasmtime through the host once, not once per
//! file). They select the runtime from `HEALTH_E2E_RUNTIME`, so `cargo xtask test` runs this
//! binary on the host and again on real Spin.

mod backup;
mod care_team;
mod commands;
mod patients;
mod self_service;

/// Every file here is declared above: a file without its `mod` line would run nothing.
#[test]
fn every_file_is_a_module() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/healthctl");
    let main = std::fs::read_to_string(dir.join("main.rs")).expect("reading main.rs");
    for entry in std::fs::read_dir(&dir).expect("listing tests/healthctl") {
        let name = entry.expect("entry").file_name().to_string_lossy().into_owned();
        if let Some(module) = name.strip_suffix(".rs").filter(|m| *m != "main") {
            assert!(main.contains(&format!("mod {module};")), "tests/healthctl/{name} has no `mod {module};` line");
        }
    }
}
