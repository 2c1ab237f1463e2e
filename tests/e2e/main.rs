//! The end-to-end suites, one module per file of `tests/e2e/`, linked into one test binary:
//! wasmtime (through the host) is linked once, not once per suite. A suite is a module, so
//! its tests are named `<suite>::<test>` and `cargo test -p health-e2e --test e2e roles::`
//! runs one suite. Each test still starts its own application with its own state directory
//! (or shares one within its suite through a `static` of that module); nothing here is shared
//! between suites but the freshness check of the Wasm (`health_e2e::fresh`).
//!
//! A new suite is a new file here and a `mod` line below; `every_suite_file_is_a_module`
//! fails if the line is missing, so no suite is silently left out.

mod admin;
mod alerts;
mod attacks;
mod backup;
mod care_team;
mod context;
mod data;
mod deploy;
mod encryption;
mod federation;
mod hardening_gateway;
mod hardening_keys;
mod history;
mod identity;
mod interop;
mod keys;
mod lab_orders;
mod onboarding;
mod operations;
mod portal;
mod ratelimit;
mod readme;
mod roles;
mod scaleout;
mod self_service;
mod slice;
mod staff_roles;
mod tenants;
mod tracing;
mod worlds;

/// Every `tests/e2e/*.rs` is declared above: a file without its `mod` line would compile
/// nowhere and run nothing.
#[test]
fn every_suite_file_is_a_module() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("e2e");
    let main = std::fs::read_to_string(dir.join("main.rs")).expect("reading e2e/main.rs");
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("listing e2e/") {
        let path = entry.expect("e2e/ entry").path();
        let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else { continue };
        if path.extension().is_some_and(|e| e == "rs") && stem != "main" && !main.contains(&format!("\nmod {stem};")) {
            missing.push(stem.to_owned());
        }
    }
    assert!(missing.is_empty(), "tests/e2e/ files with no `mod` line in e2e/main.rs: {missing:?}");
}
