//! `healthctl`'s tests against a running app, one module per file of `tests/healthctl/`,
//! linked into one test binary (the harness links wasmtime through the host once, not once per
//! file). They select the runtime from `HEALTH_E2E_RUNTIME`, so `cargo xtask test` runs this
//! binary on the host and again on real Spin.

mod backup;
mod care_team;
mod commands;
mod hospital;
mod labs;
mod patients;
mod self_service;

use std::process::{Command, Output};

use health_e2e::TestApp;
use serde_json::json;

/// Runs healthctl against `url` as the signed-in user whose access token is `token`
/// (`HEALTHCTL_ACCESS_TOKEN`; no operator token), off the async runtime's threads.
async fn as_user(url: &str, token: &str, args: &[&str]) -> Output {
    let (url, token) = (url.to_owned(), token.to_owned());
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_healthctl"));
        cmd.env("HEALTHCTL_URL", url).env("HEALTHCTL_ACCESS_TOKEN", token).args(args);
        cmd.env_remove("HEALTH_OPERATOR_TOKEN");
        cmd.output().expect("healthctl runs")
    })
    .await
    .expect("join")
}

/// A new user of the demo tenant, made through `auth`'s admin API with `bearer` (the operator's
/// token or the tenant admin's): its id.
async fn new_user(app: &TestApp, bearer: &str, username: &str, role: &str, password: &str) -> String {
    let user = json!({ "tenant_id": "demo-hospital", "username": username, "role": role, "password": password });
    let auth = format!("Bearer {bearer}");
    let headers = [("authorization", auth.as_str()), ("content-type", "application/json")];
    let created = app.send("POST", "/auth/admin/users", &headers, &user.to_string()).await;
    assert_eq!(created.status, 201, "{}", created.body);
    created.json()["id"].as_str().expect("id").to_owned()
}

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
