//! `healthctl` against the app served over real HTTP: rotate changes the kid served in the JWK
//! Set while an earlier token keeps working; bad input and refusals give clear exit codes.

use std::process::{Command, Output};

use health_e2e::{ALICE, OPERATOR_TOKEN, TestApp};

fn healthctl(url: &str, token: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_healthctl"));
    cmd.env("HEALTHCTL_URL", url).env_remove("HEALTH_OPERATOR_TOKEN").args(args);
    if let Some(token) = token {
        cmd.env("HEALTH_OPERATOR_TOKEN", token);
    }
    cmd.output().expect("healthctl runs")
}

fn stdout_json(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)))
}

#[tokio::test(flavor = "multi_thread")]
async fn rotate_changes_the_served_kid_while_earlier_tokens_keep_working() {
    let app = TestApp::start(|_| {}).expect("app loads");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(health_host::serve(app.app.clone(), listener));
    let before = app.token(ALICE).await;

    let token = Some(OPERATOR_TOKEN);
    let (u, t) = (url.clone(), token);
    let list = tokio::task::spawn_blocking(move || healthctl(&u, t, &["keys", "list", "--tenant", "demo-hospital"]))
        .await
        .expect("join");
    assert!(list.status.success(), "{}", String::from_utf8_lossy(&list.stderr));
    let old_kid = stdout_json(&list)["keys"][0]["kid"].as_str().expect("kid").to_owned();

    let u = url.clone();
    let rotated =
        tokio::task::spawn_blocking(move || healthctl(&u, token, &["keys", "rotate", "--tenant", "demo-hospital"]))
            .await
            .expect("join");
    assert!(rotated.status.success(), "{}", String::from_utf8_lossy(&rotated.stderr));
    let new_kid = stdout_json(&rotated)["kid"].as_str().expect("kid").to_owned();
    assert_ne!(new_kid, old_kid);

    let set = app.send("GET", "/jwk/demo-hospital", &[], "").await.json();
    let kids: Vec<&str> = set["keys"].as_array().expect("keys").iter().filter_map(|k| k["kid"].as_str()).collect();
    assert_eq!(kids, [old_kid.as_str(), new_kid.as_str()]);
    assert_eq!(app.get_with("/api/patients/p-1001/record", &before).await.status, 200);

    let u = url.clone();
    let revoked = tokio::task::spawn_blocking(move || {
        healthctl(&u, token, &["keys", "revoke", "--tenant", "demo-hospital", "--kid", &old_kid])
    })
    .await
    .expect("join");
    assert!(revoked.status.success(), "{}", String::from_utf8_lossy(&revoked.stderr));
    assert_eq!(app.get_with("/api/patients/p-1001/record", &before).await.status, 401);

    // Clear failures: no token (2), bad tenant id (2), wrong token (1), unreachable server (3).
    let u = url.clone();
    let failures = tokio::task::spawn_blocking(move || {
        [
            healthctl(&u, None, &["keys", "list", "--tenant", "demo-hospital"]),
            healthctl(&u, token, &["keys", "list", "--tenant", "../etc"]),
            healthctl(&u, Some("wrong"), &["keys", "list", "--tenant", "demo-hospital"]),
            healthctl("http://127.0.0.1:9", token, &["keys", "list", "--tenant", "demo-hospital"]),
        ]
    })
    .await
    .expect("join");
    let codes: Vec<Option<i32>> = failures.iter().map(|o| o.status.code()).collect();
    assert_eq!(codes, [Some(2), Some(2), Some(1), Some(3)]);
    assert!(String::from_utf8_lossy(&failures[0].stderr).contains("HEALTH_OPERATOR_TOKEN"));
    assert!(String::from_utf8_lossy(&failures[2].stderr).contains("refused (401)"));
}
