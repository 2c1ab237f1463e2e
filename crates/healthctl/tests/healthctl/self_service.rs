//! `healthctl patients access-log`, `patients export` and `auth change-password` against the app
//! served over real HTTP, acting as a signed-in user (`HEALTHCTL_ACCESS_TOKEN`): every page of
//! the log joined, the FHIR form, the export, a password change, and the exit codes of refusals.

use std::process::{Command, Output};

use health_e2e::{ALICE, BOB, OPERATOR_TOKEN, TestApp};
use serde_json::{Value, json};

/// Runs healthctl with only the environment given (no operator token, no user token).
fn healthctl(url: &str, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_healthctl"));
    cmd.env("HEALTHCTL_URL", url).args(args);
    for name in ["HEALTH_OPERATOR_TOKEN", "HEALTHCTL_ACCESS_TOKEN", "HEALTHCTL_PASSWORD", "HEALTHCTL_NEW_PASSWORD"] {
        cmd.env_remove(name);
    }
    for (name, value) in env {
        cmd.env(name, value);
    }
    cmd.output().expect("healthctl runs")
}

async fn run(url: &str, env: Vec<(&'static str, String)>, args: &'static [&'static str]) -> Output {
    let url = url.to_owned();
    tokio::task::spawn_blocking(move || {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        healthctl(&url, &env, args)
    })
    .await
    .expect("join")
}

fn stdout_json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}\n{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
    })
}

async fn login(app: &TestApp, password: &str) -> health_e2e::Reply {
    let body = json!({ "tenant": "demo-hospital", "username": "cli-changer", "password": password });
    app.send("POST", "/auth/login", &[("content-type", "application/json")], &body.to_string()).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_patient_reads_their_access_log_exports_their_data_and_changes_their_password() {
    let app = TestApp::start(|_| {}).expect("app loads");
    let url = app.app.url().await.expect("served over HTTP");
    let alice = app.token(ALICE).await;
    // Three reads of her record to find in her log.
    for _ in 0..3 {
        assert_eq!(app.get_with("/api/patients/p-1001/records", &alice).await.status, 200);
    }
    let as_alice = || vec![("HEALTHCTL_ACCESS_TOKEN", alice.clone())];

    let log = run(&url, as_alice(), &["patients", "access-log", "--patient", "p-1001"]).await;
    assert!(log.status.success(), "{}", String::from_utf8_lossy(&log.stderr));
    let log = stdout_json(&log);
    let entries = log["entries"].as_array().expect("entries");
    let own_reads = entries.iter().filter(|e| e["rule"] == "patient_self" && e["data_category"] == "record").count();
    assert_eq!(own_reads, 3, "{log}");
    assert!(log.get("next_after").is_none(), "the joined log has no paging left: {log}");
    // Pages of two, joined: the same entries first, then only reads of the log itself (each
    // page request is audited, and later pages can already hold the earlier pages' events).
    let paged = run(&url, as_alice(), &["patients", "access-log", "--patient", "p-1001", "--page-size", "2"]).await;
    assert!(paged.status.success(), "{}", String::from_utf8_lossy(&paged.stderr));
    let paged = stdout_json(&paged);
    let paged = paged["entries"].as_array().expect("entries");
    assert_eq!(paged[..entries.len()], entries[..]);
    let later = &paged[entries.len()..];
    assert!(
        !later.is_empty() && later.iter().all(|e| e["data_category"] == "access_log" && e["actor"]["id"] == "u-alice")
    );
    let seqs: Vec<i64> = paged.iter().map(|e| e["seq"].as_i64().expect("seq")).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "no entry twice, in chain order: {seqs:?}");
    let fhir = run(
        &url,
        as_alice(),
        &["patients", "access-log", "--patient", "p-1001", "--format", "fhir", "--page-size", "3"],
    )
    .await;
    assert!(fhir.status.success(), "{}", String::from_utf8_lossy(&fhir.stderr));
    let bundle = stdout_json(&fhir);
    assert_eq!(bundle["resourceType"], "Bundle");
    let events = bundle["entry"].as_array().expect("entry");
    assert!(events.len() > paged.len(), "every page joined, with the log reads since: {bundle}");
    let ids: Vec<&str> = events.iter().map(|e| e["resource"]["id"].as_str().expect("id")).collect();
    let unique: std::collections::HashSet<&&str> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "an AuditEvent twice: {ids:?}");
    assert!(bundle.get("link").is_none());
    assert!(events.iter().all(|e| e["resource"]["resourceType"] == "AuditEvent"));

    let export = run(&url, as_alice(), &["patients", "export", "--patient", "p-1001"]).await;
    assert!(export.status.success(), "{}", String::from_utf8_lossy(&export.stderr));
    let export = stdout_json(&export);
    assert_eq!(export["demographics"]["given_name"], "Alice");
    assert!(!export["access_log"].as_array().expect("access log").is_empty());

    // Refusals: someone else's record (exit 1, the problem on stderr), no token (exit 2).
    let bob = vec![("HEALTHCTL_ACCESS_TOKEN", app.token(BOB).await)];
    let refused = run(&url, bob, &["patients", "export", "--patient", "p-1001"]).await;
    assert_eq!(refused.status.code(), Some(1), "{}", String::from_utf8_lossy(&refused.stderr));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("refused (403)"));
    assert!(!String::from_utf8_lossy(&refused.stdout).contains("Alice"));
    let anonymous = run(&url, vec![], &["patients", "access-log", "--patient", "p-1001"]).await;
    assert_eq!(anonymous.status.code(), Some(2));
    let bad_id = run(&url, as_alice(), &["patients", "export", "--patient", "../p-1001"]).await;
    assert_eq!(bad_id.status.code(), Some(2));

    // A password change, the passwords from the environment.
    let (old, new) = ("cli-changer-old-2026", "cli-changer-new-2026");
    crate::new_user(&app, OPERATOR_TOKEN, "cli-changer", "patient", old).await;
    let token = login(&app, old).await.json()["access_token"].as_str().expect("token").to_owned();
    let env = |current: &str| {
        vec![
            ("HEALTHCTL_ACCESS_TOKEN", token.clone()),
            ("HEALTHCTL_PASSWORD", current.to_owned()),
            ("HEALTHCTL_NEW_PASSWORD", new.to_owned()),
        ]
    };
    let wrong = run(&url, env("not-the-password"), &["auth", "change-password"]).await;
    assert_eq!(wrong.status.code(), Some(1), "{}", String::from_utf8_lossy(&wrong.stderr));
    let changed = run(&url, env(old), &["auth", "change-password"]).await;
    assert!(changed.status.success(), "{}", String::from_utf8_lossy(&changed.stderr));
    let changed = stdout_json(&changed);
    assert_eq!((changed["success"].as_bool(), changed["requiresReauth"].as_bool()), (Some(true), Some(false)));
    assert_eq!(login(&app, old).await.status, 401);
    assert_eq!(login(&app, new).await.status, 200);
    let no_new = run(&url, vec![("HEALTHCTL_ACCESS_TOKEN", token.clone())], &["auth", "change-password"]).await;
    assert_eq!(no_new.status.code(), Some(2));
}
