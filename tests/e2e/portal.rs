//! The portal (`components/portal`): its page and assets with their security headers over the
//! runtime, then each role's main journey in a real browser, headless Debian `chromium` driven
//! by `playwright-core` (`tests/portal-browser`, pinned by its `package-lock.json`, installed
//! with `npm ci` on first use): one app, one browser, every journey in one script run. The
//! script checks what is on screen, that no page reported a CSP violation or a console error,
//! and that no token reached `localStorage`, `sessionStorage` or a readable cookie; it writes
//! each role's main view to `target/screenshots/<runtime>/` (or `$HEALTH_SCREENSHOTS_DIR`).
//!
//! The same run has the platform operator (the token pasted on the sign-in page) create a tenant
//! and its first admin, connect it to a real OpenID provider (`oidc-provider`, the federation
//! suite's, `health_e2e::oidc`), and that admin sign in there from the portal's button, through
//! the provider's own login and consent forms, then manage the tenant's keys.
//!
//! Without `chromium`, `node` and `npm` the browser part says so in one line and passes, unless
//! `HEALTH_E2E_REQUIRE_ALL` is set (CI), where it fails.

use std::path::PathBuf;
use std::process::Command;

use anyhow::Context;
use health_e2e::oidc::Provider;
use health_e2e::runtime::REQUIRE_ALL_ENV;
use health_e2e::{OPERATOR_TOKEN, Reply, TestApp, root};
use serde_json::json;

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// The browser to drive: `CHROMIUM` if set, else Debian's `chromium` on `PATH`.
fn chromium() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("CHROMIUM").filter(|b| !b.is_empty()) {
        return Some(PathBuf::from(bin));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join("chromium")).find(|bin| bin.is_file())
}

fn node_and_npm() -> bool {
    let runs = |tool: &str| Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success());
    runs("node") && runs("npm")
}

fn assert_hardened(reply: &Reply, what: &str) {
    assert_eq!(reply.header("content-security-policy"), CSP, "{what}");
    assert_eq!(reply.header("x-content-type-options"), "nosniff", "{what}");
    assert_eq!(reply.header("referrer-policy"), "no-referrer", "{what}");
    assert_eq!(reply.header("x-frame-options"), "DENY", "{what}");
}

/// The portal's session endpoints in `auth`: the CSRF checks, the cookie, rotation, the idle
/// timeout and sign-out.
async fn portal_session(app: &TestApp) {
    let login = serde_json::json!({ "tenant": "demo-hospital", "username": "alice", "password": "alice-demo-2026" });
    let login = login.to_string();
    let json = ("content-type", "application/json");
    let (host, origin, portal) = (("host", "portal.test"), ("origin", "http://portal.test"), ("x-health-portal", "1"));
    // Another site's form or script: no portal header, another origin, no origin, cross-site.
    for headers in [
        vec![json, host, origin],
        vec![json, host, ("origin", "https://evil.test"), portal],
        vec![json, host, portal],
        vec![json, host, origin, portal, ("sec-fetch-site", "cross-site")],
    ] {
        let refused = app.send("POST", "/auth/portal/login", &headers, &login).await;
        assert_eq!(refused.status, 403, "{headers:?}: {}", refused.body);
        assert!(refused.header("set-cookie").is_empty(), "{headers:?}");
    }
    let audited =
        app.query_strings("audit.db", "SELECT reason FROM audit_events WHERE reason = 'portal_cross_site_refused'");
    assert_eq!(audited.len(), 4, "every refusal audited");

    // The portal's own page: the access token in the body, the refresh token only in the cookie.
    let same_site = [json, host, origin, portal];
    let signed_in = app.send("POST", "/auth/portal/login", &same_site, &login).await;
    assert_eq!(signed_in.status, 200, "{}\n{}", signed_in.body, app.app.guest_output().join("\n"));
    assert!(signed_in.json()["access_token"].is_string() && signed_in.json().get("refresh_token").is_none());
    let cookie = signed_in.header("set-cookie").to_owned();
    assert!(
        cookie.starts_with("health_portal_refresh=")
            && cookie.ends_with("; Path=/auth/portal; Max-Age=1800; HttpOnly; Secure; SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().expect("name=value").to_owned();
    let with_cookie = [host, origin, portal, ("cookie", pair.as_str())];
    // Refresh: from the portal only; rotated; the spent one is reuse (the family revoked).
    let cross = app.send("POST", "/auth/portal/refresh", &[host, origin, ("cookie", pair.as_str())], "").await;
    assert_eq!(cross.status, 403, "{}", cross.body);
    assert!(cross.header("set-cookie").is_empty(), "another site cannot end the session");
    let renewed = app.send("POST", "/auth/portal/refresh", &with_cookie, "").await;
    assert_eq!(renewed.status, 200, "{}", renewed.body);
    let next = renewed.header("set-cookie").split(';').next().expect("name=value").to_owned();
    assert_ne!(next, pair, "rotated");
    let token = renewed.json()["access_token"].as_str().expect("access token").to_owned();
    let reused = app.send("POST", "/auth/portal/refresh", &with_cookie, "").await;
    assert_eq!(reused.status, 400, "{}", reused.body);
    assert!(reused.header("set-cookie").contains("Max-Age=0"), "a refused refresh clears the cookie");
    let dead = app.send("POST", "/auth/portal/refresh", &[host, origin, portal, ("cookie", next.as_str())], "").await;
    assert_eq!(dead.status, 400, "the reuse revoked the family: {}", dead.body);
    assert_eq!(app.get_with("/api/patients/p-1001", &token).await.status, 401, "and its access token");

    // Idle: a refresh token unused for longer than the idle timeout is refused, its family revoked.
    let signed_in = app.send("POST", "/auth/portal/login", &same_site, &login).await;
    let pair = signed_in.header("set-cookie").split(';').next().expect("name=value").to_owned();
    let db = rusqlite::Connection::open(app.state.path().join("identity.db")).expect("identity opens");
    db.execute("UPDATE refresh_tokens SET issued_at = issued_at - 1801 WHERE used_at IS NULL", []).expect("aged");
    let idle = app.send("POST", "/auth/portal/refresh", &[host, origin, portal, ("cookie", pair.as_str())], "").await;
    assert_eq!(idle.status, 400, "{}", idle.body);
    let reasons = app.query_strings(
        "audit.db",
        "SELECT reason FROM audit_events WHERE json_extract(event, '$.action') = 'auth.portal.refresh'",
    );
    assert!(reasons.iter().any(|r| r == "refresh_idle"), "{reasons:?}");

    // Sign-out revokes the session and clears the cookie; the API's own refresh grant is unchanged.
    let signed_in = app.send("POST", "/auth/portal/login", &same_site, &login).await;
    let token = signed_in.json()["access_token"].as_str().expect("access token").to_owned();
    let bearer = format!("Bearer {token}");
    let out = app.send("POST", "/auth/portal/logout", &[host, origin, portal, ("authorization", &bearer)], "").await;
    assert_eq!(out.status, 204, "{}", out.body);
    assert!(out.header("set-cookie").contains("Max-Age=0"));
    assert_eq!(app.get_with("/api/patients/p-1001", &token).await.status, 401);
    assert!(app.tokens(health_e2e::ALICE).await["refresh_token"].is_string());
}

/// `npm ci` in `tests/portal-browser` when nothing is installed or the lock file is newer.
fn install_driver(dir: &std::path::Path) -> anyhow::Result<()> {
    let modified = |path: PathBuf| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let installed = modified(dir.join("node_modules/.package-lock.json"));
    if installed.is_none() || installed < modified(dir.join("package-lock.json")) {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(dir)
            .status()
            .context("running npm ci in tests/portal-browser")?;
        anyhow::ensure!(status.success(), "npm ci in tests/portal-browser failed: {status}");
    }
    Ok(())
}

/// The tenant the operator creates in the browser, its provider's client (`oidc-provider`'s) and
/// the provider account its first admin signs in with (journeys.mjs).
const OIDC_TENANT: &str = "st-marys";
const OIDC_CLIENT: &str = "health-south";

#[tokio::test(flavor = "multi_thread")]
async fn the_portal_is_served_hardened_and_every_role_completes_its_journey_in_a_browser() {
    let browser = chromium().filter(|_| node_and_npm());
    // The provider the browser signs in at, which the app must be allowed to reach.
    let idp = browser.as_ref().map(|_| Provider::start().expect("the OpenID provider starts"));
    let origin = idp.as_ref().map(Provider::origin);
    let variables: Vec<(&str, &str)> = origin.iter().map(|o| ("federation_provider_hosts", o.as_str())).collect();
    let app = TestApp::start_with_variables(&variables).expect("app loads");

    // The page and its assets: types, caching, the headers on every answer, refusals.
    let page = app.send("GET", "/", &[], "").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_hardened(&page, "/");
    assert_eq!(page.header("content-type"), "text/html; charset=utf-8");
    assert_eq!(page.header("cache-control"), "no-cache");
    assert!(page.body.contains(r#"<script type="module" src="/app/main.js"></script>"#), "{}", page.body);
    assert!(!page.body.contains("<script>") && !page.body.contains("style="), "inline script or style in the page");
    for (path, content_type) in [
        ("/app/main.js", "text/javascript; charset=utf-8"),
        ("/app/vendor/qrcode.mjs", "text/javascript; charset=utf-8"),
        ("/app/portal.css", "text/css; charset=utf-8"),
        ("/app/favicon.svg", "image/svg+xml"),
        ("/app/", "text/html; charset=utf-8"),
        ("/app", "text/html; charset=utf-8"),
    ] {
        let asset = app.send("GET", path, &[], "").await;
        assert_eq!((asset.status, asset.header("content-type")), (200, content_type), "{path}");
        assert_hardened(&asset, path);
        let etag = asset.header("etag").to_owned();
        assert!(etag.starts_with('"') && etag.len() > 2, "{path}: etag {etag:?}");
        let again = app.send("GET", path, &[("if-none-match", &etag)], "").await;
        assert_eq!((again.status, again.body.as_str()), (304, ""), "{path} revalidated");
    }
    let script = app.send("GET", "/app/api.js", &[], "").await;
    assert!(!script.body.contains("localStorage.setItem") && !script.body.contains("sessionStorage.setItem"));
    for (method, path, status) in [
        ("GET", "/app/nothing.js", 404),
        ("GET", "/app/main.js.map", 404),
        ("POST", "/", 405),
        ("DELETE", "/app/main.js", 405),
    ] {
        let reply = app.send(method, path, &[], "").await;
        assert_eq!(reply.status, status, "{method} {path}: {}", reply.body);
        assert_hardened(&reply, path);
    }
    // The API is still the gateway's and auth's, not the portal's.
    assert_eq!(app.send("GET", "/health", &[], "").await.status, 200);
    assert_eq!(app.send("GET", "/api/lab/orders", &[], "").await.status, 401);
    // The keys and operator views call `jwks`'s `/admin/...` from the page: same origin (the CSP's
    // `connect-src 'self'`), a bearer token and no cookie, so no CSRF check is needed there; and
    // no CORS grant lets another site's script read an answer.
    let operator = format!("Bearer {OPERATOR_TOKEN}");
    let keys = app
        .send("GET", "/admin/keys/demo-hospital", &[("authorization", &operator), ("origin", "https://evil.test")], "")
        .await;
    assert_eq!(keys.status, 200, "{}", keys.body);
    assert!(keys.header("access-control-allow-origin").is_empty(), "a CORS grant on /admin/keys");

    portal_session(&app).await;

    // Each role's journey in the browser.
    let (Some(browser), Some(idp)) = (browser, idp) else {
        assert!(std::env::var_os(REQUIRE_ALL_ENV).is_none(), "portal: chromium, node and npm are needed");
        eprintln!("portal: browser journeys NOT RUN here (no chromium, node or npm)");
        return;
    };
    let dir = root().join("tests/portal-browser");
    install_driver(&dir).expect("playwright-core installs");
    let url = app.app.url().await.expect("served over HTTP");
    // Under target/ by default, one directory per runtime, so a test run leaves the work tree
    // clean; `HEALTH_SCREENSHOTS_DIR=docs/screenshots` refreshes the README's.
    let shots = match std::env::var_os("HEALTH_SCREENSHOTS_DIR") {
        Some(dir) => root().join(dir),
        None => root().join("target/screenshots").join(app.app.runtime().name()),
    };
    // The provider's public client for the operator's new tenant, redirecting to this portal's
    // callback, and the account its first admin signs in with (their email the linked identity).
    let callback = format!("{url}/auth/federation/{OIDC_TENANT}/callback");
    idp.control("signin-client", json!({ "provider": "a", "client": OIDC_CLIENT, "redirect_uris": [callback] })).await;
    let claims = json!({ "email": "root@st-marys.example", "email_verified": true });
    idp.control("account", json!({ "provider": "a", "account": "p-root", "claims": claims })).await;
    // The host serves on this runtime's other threads while the script runs.
    let mut script = Command::new("node");
    script
        .arg("journeys.mjs")
        .arg(&url)
        .arg(&shots)
        .env("CHROMIUM", &browser)
        .env("HEALTH_OPERATOR_TOKEN", OPERATOR_TOKEN)
        .env("HEALTH_OIDC_ISSUER", idp.issuer("a"))
        .current_dir(&dir);
    let run = tokio::task::spawn_blocking(move || script.output()).await.expect("joined").expect("node runs");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "the browser journeys failed ({}):\n{stdout}\n{stderr}\n--- guests:\n{}",
        run.status,
        app.app.guest_output().join("\n")
    );
    let journeys = ["patient", "password", "doctor", "lab", "admin", "receptionist", "nurse", "pharmacist"];
    for journey in journeys.into_iter().chain(["operator", "oidc", "keys"]) {
        assert!(stdout.lines().any(|l| l == format!("ok {journey}")), "journey {journey} did not finish:\n{stdout}");
    }
    for role in ["patient", "doctor", "lab", "admin", "receptionist", "nurse", "pharmacist", "operator", "keys"] {
        let png = std::fs::read(shots.join(format!("{role}.png"))).expect("screenshot written");
        assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "{role}.png is not a real screenshot");
    }
}
