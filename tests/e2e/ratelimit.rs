//! Rate limits through the gateway and `auth`, on the host and on real Spin: per client address
//! and per subject, per class, answered 429 with `Retry-After` and the `RateLimit` /
//! `RateLimit-Policy` fields, audited, and ended windows swept out of `audit`'s `rate_counters`.

use std::net::SocketAddr;

use health_e2e::{ALICE, BOB, TestApp, send_from, unix_now};

const RECORDS: &str = "/api/patients/p-1001/records";

fn from(ip: &str) -> SocketAddr {
    format!("{ip}:40000").parse().expect("address")
}

/// Waits until `now` is not within `margin` seconds of the end of a `width`-second window, so a
/// test that counts within one window does not straddle two.
async fn clear_of_window_end(width: i64, margin: i64) {
    while width - unix_now().rem_euclid(width) <= margin {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// The address the platform sees for a request "from" `ip`: itself on the host, its loopback
/// stand-in on Spin (`health_e2e::runtime::loopback_for`).
fn seen_as(app: &TestApp, ip: &str) -> String {
    match app.app.runtime() {
        health_e2e::Runtime::Host => ip.to_owned(),
        health_e2e::Runtime::Spin => health_e2e::runtime::loopback_for(ip.parse().expect("ip")).to_string(),
    }
}

async fn get(app: &TestApp, ip: &str, token: &str) -> health_e2e::Reply {
    send_from(&app.app, from(ip), "GET", RECORDS, &[("authorization", &format!("Bearer {token}"))], "").await
}

#[tokio::test]
async fn reads_past_the_limit_are_refused_per_address_and_per_subject_and_audited() {
    let app = TestApp::start_with_variables(&[("rate_limit_read", "3/3600")]).expect("app loads");
    let alice = app.token(ALICE).await;
    let bob = app.token(BOB).await;
    clear_of_window_end(3600, 20).await;

    for remaining in [2, 1, 0] {
        let reply = get(&app, "10.0.0.1", &alice).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.header("ratelimit-policy"), r#""read-address";q=3;w=3600, "read-subject";q=3;w=3600"#);
        assert!(
            reply.header("ratelimit").starts_with(&format!(r#""read-address";r={remaining};t="#)),
            "{}",
            reply.header("ratelimit")
        );
        assert!(reply.headers.get("retry-after").is_none());
    }
    let refused = get(&app, "10.0.0.1", &alice).await;
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert_eq!(refused.header("content-type"), "application/problem+json");
    assert_eq!(refused.json()["type"], "https://health-platform.dev/problems/rate-limited");
    let retry_after: u64 = refused.header("retry-after").parse().expect("Retry-After in seconds");
    assert!((1..=3600).contains(&retry_after), "{retry_after}");

    // Another address, the same subject: the address has room, the subject has none.
    let other_address = get(&app, "10.0.0.2", &alice).await;
    assert_eq!(other_address.status, 429, "{}", other_address.body);
    assert!(
        other_address.header("ratelimit").contains(r#""read-subject";r=0"#),
        "{}",
        other_address.header("ratelimit")
    );
    // Another subject from a third address is counted on its own.
    assert_eq!(get(&app, "10.0.0.3", &bob).await.status, 403, "bob may not read alice's record, but is not limited");
    let bob_own = send_from(
        &app.app,
        from("10.0.0.3"),
        "GET",
        "/api/patients/p-1002/records",
        &[("authorization", &format!("Bearer {bob}"))],
        "",
    )
    .await;
    assert_eq!(bob_own.status, 200, "{}", bob_own.body);
    // Writes are a class of their own: alice's consent is not refused for her reads.
    let write = send_from(
        &app.app,
        from("10.0.0.1"),
        "POST",
        "/api/patients/p-1001/consents",
        &[("authorization", &format!("Bearer {alice}")), ("content-type", "application/json")],
        &serde_json::json!({ "insurer": "acme-health", "expires_at": unix_now() + 86_400 }).to_string(),
    )
    .await;
    assert_eq!(write.status, 201, "{}", write.body);
    assert!(write.header("ratelimit").contains(r#""write-subject";"#), "{}", write.header("ratelimit"));

    let refusals = app.query_strings(
        "audit.db",
        "SELECT action || ' ' || status FROM audit_events WHERE reason = 'rate_limited' ORDER BY seq",
    );
    assert_eq!(refusals, ["GET /api/patients/{id}/records 429"; 2]);
}

#[tokio::test]
async fn password_spraying_from_one_address_is_bounded_across_usernames() {
    let scrape_hash = health_core::sha256_hex("scrape-token");
    let app = TestApp::start_with_variables(&[("rate_limit_login", "5/3600"), ("metrics_token_hash", &scrape_hash)])
        .expect("app loads");
    clear_of_window_end(3600, 20).await;
    let login = |ip: &'static str, username: &'static str, password: &'static str| {
        let body = format!(r#"{{"tenant":"demo-hospital","username":"{username}","password":"{password}"}}"#);
        let app = &app;
        async move {
            send_from(&app.app, from(ip), "POST", "/auth/login", &[("content-type", "application/json")], &body).await
        }
    };
    for username in ["alice", "bob", "carol", "dave", "erin"] {
        assert_eq!(login("10.0.1.1", username, "Winter2026!").await.status, 401);
    }
    // The sixth guess from that address is refused before any password is checked, even a
    // right one.
    let refused = login("10.0.1.1", ALICE.0, ALICE.1).await;
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert!(refused.header("retry-after").parse::<u64>().is_ok());
    assert_eq!(refused.header("ratelimit-policy"), r#""login-address";q=5;w=3600"#);
    // Another address is not affected.
    assert_eq!(login("10.0.1.2", ALICE.0, ALICE.1).await.status, 200);
    let audited = app.query_strings("audit.db", "SELECT action FROM audit_events WHERE reason = 'rate_limited'");
    assert_eq!(audited, ["auth.login"]);
    let metrics = app.send("GET", "/metrics", &[("authorization", "Bearer scrape-token")], "").await;
    assert_eq!(metrics.status, 200, "{}", metrics.body);
    assert!(metrics.body.contains("health_rate_limited_total{route=\"auth.login\"} 1\n"), "{}", metrics.body);
}

#[tokio::test]
async fn ended_windows_are_swept_from_the_store() {
    let app = TestApp::start_with_variables(&[("rate_limit_read", "1000/1")]).expect("app loads");
    let alice = app.token(ALICE).await;
    assert_eq!(get(&app, "10.0.2.1", &alice).await.status, 200);
    let keys = || app.query_strings("audit.db", "SELECT key FROM rate_counters");
    let first = keys();
    let (old, new) = (format!("/a/{}", seen_as(&app, "10.0.2.1")), format!("/a/{}", seen_as(&app, "10.0.2.2")));
    assert!(first.iter().any(|k| k.starts_with("rl/read/1/") && k.ends_with(&old)), "{first:?}");
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    // The first request of a later window sweeps every ended one.
    assert_eq!(get(&app, "10.0.2.2", &alice).await.status, 200);
    let now = unix_now();
    let left = keys();
    assert!(!left.iter().any(|k| k.ends_with(&old)), "the old address counter is gone: {left:?}");
    assert!(left.iter().any(|k| k.ends_with(&new)), "{left:?}");
    for key in &left {
        let parts: Vec<&str> = key.split('/').collect();
        let (width, start): (i64, i64) = (parts[2].parse().expect("a width"), parts[3].parse().expect("a start"));
        // Only windows that had not ended at the sweep (a second ago at most) are left.
        assert!(start + width >= now - 1, "{key} had ended: {left:?}");
    }
}
