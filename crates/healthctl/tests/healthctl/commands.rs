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
    let url = app.app.url().await.expect("served over HTTP");
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
    let signing = set["keys"].as_array().expect("keys").iter().filter(|k| k["use"] == "sig");
    let kids: Vec<&str> = signing.filter_map(|k| k["kid"].as_str()).collect();
    assert_eq!(kids, [old_kid.as_str(), new_kid.as_str()]);
    assert_eq!(app.get_with("/api/patients/p-1001/records", &before).await.status, 200);

    let u = url.clone();
    let revoked = tokio::task::spawn_blocking(move || {
        healthctl(&u, token, &["keys", "revoke", "--tenant", "demo-hospital", "--kid", &old_kid])
    })
    .await
    .expect("join");
    assert!(revoked.status.success(), "{}", String::from_utf8_lossy(&revoked.stderr));
    assert_eq!(app.get_with("/api/patients/p-1001/records", &before).await.status, 401);

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

#[tokio::test(flavor = "multi_thread")]
async fn tokens_revoke_and_audit_verify_against_the_running_app() {
    let app = TestApp::start(|_| {}).expect("app loads");
    let url = app.app.url().await.expect("served over HTTP");
    let token = app.token(ALICE).await;
    assert_eq!(app.get_with("/api/patients/p-1001/records", &token).await.status, 200);
    let jti = {
        use base64::Engine;
        let payload = token.split('.').nth(1).expect("payload");
        let claims: serde_json::Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).expect("base64url"),
        )
        .expect("claims");
        claims["jti"].as_str().expect("jti").to_owned()
    };

    let run = |args: Vec<String>| {
        let u = url.clone();
        tokio::task::spawn_blocking(move || {
            healthctl(&u, Some(OPERATOR_TOKEN), &args.iter().map(String::as_str).collect::<Vec<_>>())
        })
    };
    let args = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();

    let revoked = run(args(&["tokens", "revoke", "--tenant", "demo-hospital", "--jti", &jti])).await.expect("join");
    assert!(revoked.status.success(), "{}", String::from_utf8_lossy(&revoked.stderr));
    assert_eq!(stdout_json(&revoked)["revoked"], true);
    // A jti the tenant never issued is refused (404, exit 1), not reported revoked.
    let unknown =
        run(args(&["tokens", "revoke", "--tenant", "demo-hospital", "--jti", "never-issued"])).await.expect("join");
    assert_eq!(unknown.status.code(), Some(1), "{}", String::from_utf8_lossy(&unknown.stdout));
    assert!(!String::from_utf8_lossy(&unknown.stdout).contains("\"revoked\""));
    assert_eq!(app.get_with("/api/patients/p-1001/records", &token).await.status, 401);

    let verified = run(args(&["audit", "verify", "--tenant", "demo-hospital"])).await.expect("join");
    assert!(verified.status.success(), "{}", String::from_utf8_lossy(&verified.stderr));
    assert_eq!(stdout_json(&verified)["intact"], true);

    // The chain of requests no tenant could be verified for: verified and exported whole.
    assert_eq!(app.get_with("/api/patients/p-1001/records", "not-a-jwt").await.status, 401);
    let unattributed = run(args(&["audit", "verify", "--unattributed"])).await.expect("join");
    assert!(unattributed.status.success(), "{}", String::from_utf8_lossy(&unattributed.stderr));
    assert_eq!(stdout_json(&unattributed)["tenant_id"], "_unattributed");
    let exported = run(args(&["audit", "export", "--unattributed", "--outcome", "deny"])).await.expect("join");
    assert!(exported.status.success(), "{}", String::from_utf8_lossy(&exported.stderr));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&exported.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("an NDJSON line"))
        .collect();
    assert!(!lines.is_empty() && lines.iter().all(|l| l["event"]["outcome"] == "deny"), "{lines:?}");
    let both = run(args(&["audit", "export", "--unattributed", "--tenant", "demo-hospital"])).await.expect("join");
    assert_eq!(both.status.code(), Some(2), "--tenant and --unattributed exclude each other");

    // Altered behind the triggers' back: the chain check fails with exit code 1.
    let conn = rusqlite::Connection::open(app.state.path().join("audit.db")).expect("opens");
    conn.execute_batch("DROP TRIGGER audit_no_update; UPDATE audit_events SET event = event || ' ' WHERE seq = 1;")
        .expect("tampers");
    let broken = run(args(&["audit", "verify", "--tenant", "demo-hospital"])).await.expect("join");
    assert_eq!(broken.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&broken.stderr).contains("broken at event 1"),
        "{}",
        String::from_utf8_lossy(&broken.stderr)
    );

    // Bad input: an empty jti and an unknown --use are usage errors (2).
    let empty = run(args(&["tokens", "revoke", "--tenant", "demo-hospital", "--jti", ""])).await.expect("join");
    let bad_use = run(args(&["keys", "rotate", "--tenant", "demo-hospital", "--use", "data"])).await.expect("join");
    assert_eq!((empty.status.code(), bad_use.status.code()), (Some(2), Some(2)));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_tenants_first_admin_is_created_with_the_password_from_the_environment() {
    let app = TestApp::start(|_| {}).expect("app loads");
    let url = app.app.url().await.expect("served over HTTP");
    let run = |args: &'static [&'static str], password: Option<&'static str>| {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_healthctl"));
            cmd.env("HEALTHCTL_URL", &url)
                .env("HEALTH_OPERATOR_TOKEN", OPERATOR_TOKEN)
                .env_remove("HEALTHCTL_PASSWORD");
            if let Some(password) = password {
                cmd.env("HEALTHCTL_PASSWORD", password);
            }
            cmd.args(args).output().expect("healthctl runs")
        })
    };
    let created = run(&["tenants", "create", "st-marys"], None).await.expect("join");
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let missing = run(&["users", "create", "--tenant", "st-marys", "--username", "root", "--role", "admin"], None)
        .await
        .expect("join");
    assert_eq!(missing.status.code(), Some(2), "no password in the environment is a usage error");
    let user = run(
        &["users", "create", "--tenant", "st-marys", "--username", "root", "--role", "admin"],
        Some("st-marys-first-admin"),
    )
    .await
    .expect("join");
    assert!(user.status.success(), "{}", String::from_utf8_lossy(&user.stderr));
    assert_eq!(stdout_json(&user)["role"], "admin");
    // The staff roles of issue 16 are created the same way; a role the platform does not have is
    // refused by `auth` (400), not stored.
    for args in [
        &["users", "create", "--tenant", "st-marys", "--username", "nina", "--role", "nurse"],
        &["users", "create", "--tenant", "st-marys", "--username", "rico", "--role", "receptionist"],
        &["users", "create", "--tenant", "st-marys", "--username", "pia", "--role", "pharmacist"],
    ] {
        let staff = run(args, Some("st-marys-staff-password")).await.expect("join");
        assert!(staff.status.success(), "{}: {}", args[7], String::from_utf8_lossy(&staff.stderr));
        assert_eq!(stdout_json(&staff)["role"], args[7]);
    }
    let args = &["users", "create", "--tenant", "st-marys", "--username", "sam", "--role", "surgeon"];
    let unknown = run(args, Some("st-marys-staff-password")).await.expect("join");
    assert!(!unknown.status.success(), "{}", String::from_utf8_lossy(&unknown.stdout));
    // The password works: the admin is asked to enrol MFA, which only follows a right password.
    let body = serde_json::json!({ "tenant": "st-marys", "username": "root", "password": "st-marys-first-admin" });
    let login = app.send("POST", "/auth/login", &[("content-type", "application/json")], &body.to_string()).await;
    assert_eq!(login.status, 403, "{}", login.body);
    assert!(login.body.contains("mfa-enrollment-required"));

    let code = run(&["totp", "--secret", "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"], None).await.expect("join");
    assert!(code.status.success());
    let otp = stdout_json(&code)["otp"].as_str().expect("otp").to_owned();
    assert!(otp.len() == 6 && otp.bytes().all(|b| b.is_ascii_digit()), "{otp}");
    let bad = run(&["totp", "--secret", "not base32!"], None).await.expect("join");
    assert_eq!(bad.status.code(), Some(2));
}

/// `healthctl secrets phi-wrapping-key` with `HEALTHCTL_MASTER_KEY` set to `master` (unset if
/// `None`), and no other `HEALTHCTL_*` configuration.
fn phi_wrapping_key(master: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_healthctl"));
    cmd.env_remove("HEALTHCTL_MASTER_KEY")
        .env("HEALTHCTL_URL", "http://127.0.0.1:9")
        .args(["secrets", "phi-wrapping-key"]);
    if let Some(master) = master {
        cmd.env("HEALTHCTL_MASTER_KEY", master);
    }
    cmd.output().expect("healthctl runs")
}

/// Issue 14, item 15: the value an upgrading operator sets as `phi_wrapping_key` is exactly the
/// key the role services derived from `master_key` before (HMAC-SHA256 of the master key over
/// `health-phi-data-keys-v1`; the expected values computed independently, with Python's `hmac`).
#[test]
fn secrets_phi_wrapping_key_prints_the_derivation_of_the_master_key() {
    for (master, expected) in [
        (health_e2e::MASTER_KEY, "03d9ae00135529a2587c03e7bf185cbc9b70fb9b100dd1a10ffc4f8e05632354"),
        (&"00".repeat(32)[..], "2a291424cfefa384b1a86d931ed0811f3b960f8b5dac8bc29c2d0f055d186a6a"),
    ] {
        let output = phi_wrapping_key(Some(master));
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        assert_eq!(String::from_utf8_lossy(&output.stdout), format!("{expected}\n"));
    }
    // What the test harness (and `cargo xtask up`) give the role services.
    let output = phi_wrapping_key(Some(health_e2e::MASTER_KEY));
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), health_e2e::phi_wrapping_key(health_e2e::MASTER_KEY));
}

#[test]
fn secrets_phi_wrapping_key_refuses_a_missing_or_malformed_master_key() {
    for master in [None, Some(""), Some("11"), Some(&"zz".repeat(32)[..]), Some(&"11".repeat(33)[..])] {
        let output = phi_wrapping_key(master);
        assert_eq!(output.status.code(), Some(2), "{master:?}");
        assert!(output.stdout.is_empty(), "{master:?}: {}", String::from_utf8_lossy(&output.stdout));
        assert!(String::from_utf8_lossy(&output.stderr).contains("HEALTHCTL_MASTER_KEY"), "{master:?}");
    }
    // Never an argument: a key on the command line would sit in shell history and `ps`.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_healthctl"));
    let output = cmd.env_remove("HEALTHCTL_MASTER_KEY").args(["secrets", "phi-wrapping-key", health_e2e::MASTER_KEY]);
    assert_eq!(output.output().expect("runs").status.code(), Some(2));
}
