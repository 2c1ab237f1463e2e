//! Issue 16, items 6 and 7: self-service and safe defaults, end to end through the real
//! components.
//!
//! - `POST /api/auth/change-password` (served by `auth`): every role changes its own password;
//!   the other sessions end and the current one stays (or, for a token outside any refresh
//!   family, every session ends and `requiresReauth` says so); a wrong current password is a
//!   failed login (audited, counted, locking).
//! - `GET /api/patients/{id}/access-log` (JSON, and `?format=fhir` as a BALP Bundle): who read
//!   or changed the patient's data, when and under which rule; the patient's and the tenant
//!   admin's only.
//! - `GET /api/patients/{id}/export`: everything held about the patient; the patient's only.
//! - `demo_tenant` is off unless switched on.

use std::net::SocketAddr;
use std::sync::OnceLock;

use health_e2e::{ACME, ADMIN, ALICE, BOB, DR_GREY, LAB, OPERATOR_TOKEN, Reply, TestApp, root, send_from};
use serde_json::{Value, json};
use tokio::sync::OnceCell;

const JSON: (&str, &str) = ("content-type", "application/json");
const OTHER_TENANT: &str = "st-self-service";
const OTHER_ADMIN_PASSWORD: &str = "other-admin-pass-2026";

/// One app for the file; no role needs TOTP here, so users created by the tests sign in with
/// their password alone.
fn app() -> &'static TestApp {
    static APP: OnceLock<TestApp> = OnceLock::new();
    APP.get_or_init(|| TestApp::start_with_variables(&[("mfa_required_roles", "")]).expect("app loads"))
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

async fn get(path: &str, token: &str) -> Reply {
    app().get_with(path, token).await
}

async fn post_json(path: &str, token: &str, body: &Value) -> Reply {
    app().send("POST", path, &[("authorization", &bearer(token)), JSON], &body.to_string()).await
}

async fn operator(method: &str, path: &str, body: &Value) -> Reply {
    app().send(method, path, &[("authorization", &bearer(OPERATOR_TOKEN)), JSON], &body.to_string()).await
}

async fn login_at(tenant: &str, username: &str, password: &str) -> Reply {
    let body = json!({ "tenant": tenant, "username": username, "password": password });
    app().send("POST", "/auth/login", &[JSON], &body.to_string()).await
}

/// A new user of `role` in `tenant`, created by the operator; returns its id.
async fn create_user(tenant: &str, username: &str, role: &str, password: &str) -> String {
    let body = json!({ "tenant_id": tenant, "username": username, "role": role, "password": password });
    let created = operator("POST", "/auth/admin/users", &body).await;
    assert_eq!(created.status, 201, "{}", created.body);
    created.json()["id"].as_str().expect("id").to_owned()
}

/// The admin of a second tenant (created once for the file): its access token.
async fn other_tenant_admin() -> String {
    static CREATED: OnceCell<()> = OnceCell::const_new();
    CREATED
        .get_or_init(|| async {
            let made = operator("POST", "/admin/tenants", &json!({ "tenant_id": OTHER_TENANT })).await;
            assert_eq!(made.status, 201, "{}", made.body);
            create_user(OTHER_TENANT, "root", "admin", OTHER_ADMIN_PASSWORD).await;
        })
        .await;
    let login = login_at(OTHER_TENANT, "root", OTHER_ADMIN_PASSWORD).await;
    assert_eq!(login.status, 200, "{}", login.body);
    login.json()["access_token"].as_str().expect("token").to_owned()
}

/// A fresh one-time insurer token (client credentials, a nested JWE).
/// The reason of the latest gateway event for `template` by `actor`.
fn audited_reason(template: &str, actor: &str) -> String {
    let sql = format!(
        "SELECT reason FROM audit_events WHERE action = '{template}' AND actor_sub = '{actor}' \
         AND reason <> 'pending_forward' ORDER BY rowid DESC LIMIT 1"
    );
    app().query_strings("audit.db", &sql).into_iter().next().unwrap_or_default()
}

fn entries_of(log: &Value) -> &Vec<Value> {
    log["entries"].as_array().expect("entries")
}

// ---- item 7 -----------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn the_demo_tenant_is_off_unless_switched_on() {
    let manifest = std::fs::read_to_string(root().join("spin.toml")).expect("spin.toml");
    let declared = manifest.lines().find(|l| l.starts_with("demo_tenant = {")).expect("demo_tenant is declared");
    assert!(declared.contains(r#"default = "false""#), "{declared}");

    // What a deployment that sets nothing gets: no demo tenant, no published password works.
    let bare = TestApp::start_with_variables(&[("demo_tenant", "false")]).expect("app loads");
    let login = bare.login(ALICE).await;
    assert_eq!(login.status, 401, "{}", login.body);
    assert_eq!(bare.send("GET", "/jwk/demo-hospital", &[], "").await.status, 404);
    let discovery = bare.send("GET", "/t/demo-hospital/.well-known/openid-configuration", &[], "").await;
    assert_eq!(discovery.status, 404);
    // The harness switches it on, as `cargo xtask up` does, and then the demo users work.
    assert_eq!(app().login(ALICE).await.status, 200);
}

// ---- item 6a: change-password ---------------------------------------------------------------------

async fn change_password(token: &str, current: &str, new: &str) -> Reply {
    post_json("/api/auth/change-password", token, &json!({ "currentPassword": current, "newPassword": new })).await
}

async fn valid(token: &str) -> bool {
    let reply = app().send("POST", "/api/auth/validate", &[JSON], &json!({ "token": token }).to_string()).await;
    reply.json()["valid"] == true
}

async fn refresh(refresh_token: &str) -> Reply {
    app()
        .send(
            "POST",
            "/auth/token",
            &[("content-type", "application/x-www-form-urlencoded")],
            &format!("grant_type=refresh_token&refresh_token={refresh_token}"),
        )
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn changing_the_password_ends_the_other_sessions_and_keeps_this_one() {
    let (old, new) = ("pw-change-old-2026", "pw-change-new-2026");
    create_user("demo-hospital", "pw-changer", "patient", old).await;
    let this = login_at("demo-hospital", "pw-changer", old).await.json();
    let other = login_at("demo-hospital", "pw-changer", old).await.json();
    let access = this["access_token"].as_str().expect("access");
    // A second token of this very session (a refresh), issued before the change.
    let this_refreshed = refresh(this["refresh_token"].as_str().expect("refresh")).await.json();
    let older_in_this_session = access;
    let access = this_refreshed["access_token"].as_str().expect("access");

    let changed = change_password(access, old, new).await;
    assert_eq!(changed.status, 200, "{}", changed.body);
    let body = changed.json();
    assert_eq!((body["success"].as_bool(), body["requiresReauth"].as_bool()), (Some(true), Some(false)));
    assert_eq!(body["otherSessionsEnded"], 1);
    let at = body["passwordChangedAt"].as_str().expect("passwordChangedAt");
    assert!(at.len() == 20 && at.ends_with('Z') && at.as_bytes()[10] == b'T', "{at}");

    // This token and its session go on; the other session and the older token do not.
    assert!(valid(access).await, "the token that changed the password was ended");
    assert!(!valid(other["access_token"].as_str().expect("access")).await, "another session's token still works");
    assert!(!valid(older_in_this_session).await, "an older token of this session still works");
    assert_eq!(refresh(other["refresh_token"].as_str().expect("refresh")).await.status, 400);
    let next = refresh(this_refreshed["refresh_token"].as_str().expect("refresh")).await;
    assert_eq!(next.status, 200, "{}", next.body);

    // Only the new password signs in.
    assert_eq!(login_at("demo-hospital", "pw-changer", old).await.status, 401);
    assert_eq!(login_at("demo-hospital", "pw-changer", new).await.status, 200);
    // Audited, without either password.
    let events =
        app().query_strings("audit.db", "SELECT event FROM audit_events WHERE action = 'auth.change_password'");
    assert!(events.iter().any(|e| e.contains("password_changed_other_sessions_ended")), "{events:?}");
    for event in &events {
        assert!(!event.contains(old) && !event.contains(new), "a password reached the audit log: {event}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_role_changes_its_own_password() {
    for role in ["patient", "doctor", "lab", "insurance", "admin"] {
        let (old, new) = (format!("{role}-old-pass-2026"), format!("{role}-new-pass-2026"));
        let username = format!("self-{role}");
        create_user("demo-hospital", &username, role, &old).await;
        let login = login_at("demo-hospital", &username, &old).await;
        assert_eq!(login.status, 200, "{role}: {}", login.body);
        let token = login.json()["access_token"].as_str().expect("token").to_owned();
        // Denied: a wrong current password, whatever the role; nothing changes.
        let wrong = change_password(&token, "not-this-role-password", &new).await;
        assert_eq!(wrong.status, 403, "{role}: {}", wrong.body);
        assert_eq!(login_at("demo-hospital", &username, &new).await.status, 401, "{role}");
        let changed = change_password(&token, &old, &new).await;
        assert_eq!(changed.status, 200, "{role}: {}", changed.body);
        // An insurer user's token (a one-time nested JWE) is in no refresh family: no session
        // can be told apart from the others, so all end and the client must sign in again.
        let reauth = role == "insurance";
        assert_eq!(changed.json()["requiresReauth"].as_bool(), Some(reauth), "{role}");
        assert_eq!(valid(&token).await, !reauth, "{role}");
        assert_eq!(login_at("demo-hospital", &username, &new).await.status, 200, "{role}");
    }
    // Another tenant's admin changes its own password in its own tenant, and only with it.
    let other = other_tenant_admin().await;
    assert_eq!(change_password(&other, "admin-demo-2026", "other-admin-stolen-2026").await.status, 403);
    let renewed = "other-admin-renewed-2026";
    assert_eq!(change_password(&other, OTHER_ADMIN_PASSWORD, renewed).await.status, 200);
    assert_eq!(change_password(&other, renewed, OTHER_ADMIN_PASSWORD).await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_current_password_is_a_failed_login_and_locks_like_one() {
    let password = "lock-me-pass-2026";
    let id = create_user("demo-hospital", "pw-locked", "patient", password).await;
    let from: SocketAddr = ([203, 0, 113, 66], 40000).into();
    let login = send_from(
        &app().app,
        from,
        "POST",
        "/auth/login",
        &[JSON],
        &json!({ "tenant": "demo-hospital", "username": "pw-locked", "password": password }).to_string(),
    )
    .await;
    let token = login.json()["access_token"].as_str().expect("token").to_owned();
    let auth = bearer(&token);
    let change = |current: &'static str, new: &'static str| {
        let auth = auth.clone();
        async move {
            let body = json!({ "currentPassword": current, "newPassword": new }).to_string();
            send_from(&app().app, from, "POST", "/api/auth/change-password", &[("authorization", &auth), JSON], &body)
                .await
        }
    };

    // Refused before any password is checked, so not counted.
    assert_eq!(change(password, "short").await.status, 400);
    assert_eq!(change(password, password).await.status, 400);
    let unknown = json!({ "currentPassword": password, "newPassword": "long-enough-2026", "role": "admin" });
    let reply = send_from(
        &app().app,
        from,
        "POST",
        "/api/auth/change-password",
        &[("authorization", &auth), JSON],
        &unknown.to_string(),
    )
    .await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    let anonymous = app().send("POST", "/api/auth/change-password", &[JSON], &unknown.to_string()).await;
    assert_eq!(anonymous.status, 401);

    // Five wrong guesses (lockout_max_failures): each 403 and audited as a bad password.
    for _ in 0..5 {
        let wrong = change("not-the-password", "whatever-new-2026").await;
        assert_eq!(wrong.status, 403, "{}", wrong.body);
        assert!(wrong.body.contains("invalid-current-password"), "{}", wrong.body);
    }
    assert_eq!(audited_reason("auth.change_password", &id), "bad_password");
    let lockouts = app().query_strings(
        "audit.db",
        &format!("SELECT reason FROM audit_events WHERE action = 'auth.lockout' AND actor_sub = '{id}'"),
    );
    assert_eq!(lockouts.len(), 1, "{lockouts:?}");
    // Locked: even the right password is not checked, here or at login from this source.
    let locked = change(password, "fine-new-pass-2026").await;
    assert_eq!(locked.status, 429, "{}", locked.body);
    let body = json!({ "tenant": "demo-hospital", "username": "pw-locked", "password": password }).to_string();
    assert_eq!(send_from(&app().app, from, "POST", "/auth/login", &[JSON], &body).await.status, 429);
    assert_eq!(login_at("demo-hospital", "pw-locked", password).await.status, 200, "another source is not locked");

    // An insurer client's token has no account, so no password to change.
    let client = change_password(&app().client_token(ACME).await, "anything-at-all", "anything-new-2026").await;
    assert_eq!(client.status, 403, "{}", client.body);
    assert_eq!(audited_reason("auth.change_password", "acme-health"), "not_a_user_account");
}

// ---- item 6b: the access log ------------------------------------------------------------------

/// Accesses to Alice's record under every rule, once for the file: her doctor's (care team), a
/// doctor's under break-glass, the insurer's (consent), Bob's refused attempt, and her own.
async fn accesses_to_alice() -> &'static (String, String) {
    static DONE: OnceCell<(String, String)> = OnceCell::const_new();
    DONE.get_or_init(|| async {
        let alice = app().token(ALICE).await;
        let grey = app().token(DR_GREY).await;
        assert_eq!(get("/api/patients/p-1001/records", &grey).await.status, 200);
        let er_id = create_user("demo-hospital", "dr-er", "doctor", "dr-er-pass-2026").await;
        let er = login_at("demo-hospital", "dr-er", "dr-er-pass-2026").await.json()["access_token"]
            .as_str()
            .expect("token")
            .to_owned();
        let glass = json!({ "reason": "Unconscious in ED, care team unreachable" });
        assert_eq!(post_json("/api/patients/p-1001/break-glass", &er, &glass).await.status, 201);
        assert_eq!(get("/api/patients/p-1001/records", &er).await.status, 200);
        let consent = json!({ "insurer": "acme-health", "expires_at": health_e2e::unix_now() + 3600 });
        assert_eq!(post_json("/api/patients/p-1001/consents", &alice, &consent).await.status, 201);
        assert_eq!(get("/api/insurance/patients/p-1001/summary", &app().client_token(ACME).await).await.status, 200);
        let bob = app().token(BOB).await;
        assert_eq!(get("/api/patients/p-1001/records", &bob).await.status, 403);
        assert_eq!(get("/api/patients/p-1001/lab-results", &alice).await.status, 200);
        (alice, er_id)
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_patient_reads_who_accessed_their_record_when_and_under_which_rule() {
    let (alice, er_id) = accesses_to_alice().await;
    let reply = get("/api/patients/p-1001/access-log", alice).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let log = reply.json();
    assert_eq!(log["patient_id"], "p-1001");
    let entries = entries_of(&log);
    let find = |actor: &str, rule: &str| {
        entries
            .iter()
            .find(|e| e["actor"]["id"] == actor && e["rule"] == rule)
            .unwrap_or_else(|| panic!("no {actor} {rule} in {entries:#?}"))
    };
    // EHDS Annex II 3.2: who (id, role, provider), when, which data, under which rule.
    let care = find("u-dr-grey", "care_team");
    assert_eq!(care["actor"]["role"], "doctor");
    assert_eq!(care["actor"]["organization"], "demo-hospital");
    assert_eq!(
        (care["patient_id"].as_str(), care["origin"]["organization"].as_str()),
        (Some("p-1001"), Some("demo-hospital"))
    );
    assert_eq!((care["data_category"].as_str(), care["operation"].as_str()), (Some("record"), Some("read")));
    assert_eq!((care["purpose"].as_str(), care["outcome"].as_str()), (Some("TREAT"), Some("allow")));
    assert!(care["time"].as_i64().is_some() && care["recorded"].as_str().is_some_and(|t| t.ends_with('Z')));
    let grant = find(er_id, "break_glass_request");
    assert_eq!(grant["break_glass_reason"], "Unconscious in ED, care team unreachable");
    assert_eq!(find(er_id, "break_glass")["purpose"], "ETREAT");
    let insurer = find("acme-health", "consent");
    assert_eq!(
        (insurer["actor"]["role"].as_str(), insurer["data_category"].as_str()),
        (Some("insurance"), Some("insurance_summary"))
    );
    assert_eq!(find("u-alice", "patient_self")["actor"]["role"], "patient");
    // Bob's refused attempt is there, without naming Bob to Alice.
    let refused = find("another-patient", "not_own_record");
    assert_eq!((refused["outcome"].as_str(), refused["status"].as_i64()), (Some("deny"), Some(403)));
    assert!(!reply.body.contains("u-bob"), "another patient named: {}", reply.body);
    // Neither the pending half of a change nor device or token data.
    assert!(entries.iter().all(|e| e["rule"] != "pending_forward"));
    assert!(!reply.body.contains(alice.as_str()), "token text in the access log");
    for entry in entries {
        for field in ["jti", "kid", "client_ip", "user_agent", "resource"] {
            assert!(entry.get(field).is_none() && entry["actor"].get(field).is_none(), "{field} in {entry}");
        }
    }
    // Only events about her.
    for other in ["p-1002", "p-1003"] {
        assert!(!reply.body.contains(other), "{other} in Alice's log");
    }

    // Reading the log is itself audited, and shows up the next time.
    let again = get("/api/patients/p-1001/access-log", alice).await.json();
    assert!(entries_of(&again).iter().any(|e| e["data_category"] == "access_log" && e["actor"]["id"] == "u-alice"));
    assert_eq!(audited_reason("GET /api/patients/{id}/access-log", "u-alice"), "patient_self");

    // Paging.
    let first = get("/api/patients/p-1001/access-log?limit=2", alice).await.json();
    let after = first["next_after"].as_i64().expect("a next page");
    let second = get(&format!("/api/patients/p-1001/access-log?limit=2&after={after}"), alice).await.json();
    assert!(entries_of(&second).iter().all(|e| e["seq"].as_i64() > Some(after)), "{second}");
    assert_eq!(get("/api/patients/p-1001/access-log?format=xml", alice).await.status, 400);
    assert_eq!(get("/api/patients/p-1001/access-log?patient=p-1002", alice).await.status, 400);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_access_log_exports_as_a_fhir_bundle_of_balp_audit_events() {
    let (alice, _) = accesses_to_alice().await;
    let reply = get("/api/patients/p-1001/access-log?format=fhir", alice).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.header("content-type"), "application/fhir+json");
    let bundle = reply.json();
    assert_eq!((bundle["resourceType"].as_str(), bundle["type"].as_str()), (Some("Bundle"), Some("searchset")));
    let events: Vec<&Value> = bundle["entry"].as_array().expect("entry").iter().map(|e| &e["resource"]).collect();
    assert!(!events.is_empty());
    for event in &events {
        assert_eq!(event["resourceType"], "AuditEvent");
        assert_eq!(event["type"]["code"], "rest");
        assert_eq!(event["entity"][0]["what"]["reference"], "Patient/p-1001");
        assert_eq!(event["entity"][0]["role"]["code"], "1");
        assert!(event["recorded"].as_str().is_some());
    }
    let care = events
        .iter()
        .find(|e| e["agent"][0]["who"]["identifier"]["value"] == "u-dr-grey" && e["outcome"] == "0")
        .expect("the care-team read");
    assert_eq!(
        care["meta"]["profile"][0],
        "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.PatientRead"
    );
    assert_eq!(care["action"], "R");
    assert_eq!(care["purposeOfEvent"][0]["coding"][0]["code"], "TREAT");
    assert_eq!(care["agent"][0]["role"][0]["coding"][0]["code"], "doctor");
    assert!(events.iter().any(|e| e["purposeOfEvent"][0]["coding"][0]["code"] == "ETREAT"));
    assert!(events.iter().any(|e| e["outcome"] == "4" && e.get("meta").is_none()), "the refused attempt");
    let paged = get("/api/patients/p-1001/access-log?format=fhir&limit=1", alice).await.json();
    assert!(paged["link"][0]["url"].as_str().is_some_and(|u| u.contains("format=fhir&after=")), "{paged}");
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_patient_and_their_tenants_admin_read_the_access_log() {
    let (alice, _) = accesses_to_alice().await;
    let path = "/api/patients/p-1001/access-log";
    // Allowed: the patient, and the tenant admin (who sees the whole audit log anyway, names
    // included).
    assert_eq!(get(path, alice).await.status, 200);
    let admin = app().token(ADMIN).await;
    let as_admin = get(path, &admin).await;
    assert_eq!(as_admin.status, 200, "{}", as_admin.body);
    assert!(entries_of(&as_admin.json()).iter().any(|e| e["actor"]["id"] == "u-bob"), "the admin sees who probed");
    assert_eq!(audited_reason("GET /api/patients/{id}/access-log", "u-admin"), "admin_access_log");

    // Denied: another patient, every other role, another tenant's admin, no token.
    let bob = app().token(BOB).await;
    let cases = [
        ("another patient", bob.clone(), "not_own_record"),
        ("her own doctor", app().token(DR_GREY).await, "route_not_permitted"),
        ("a lab", app().token(LAB).await, "route_not_permitted"),
        ("an insurer", app().client_token(ACME).await, "route_not_permitted"),
    ];
    for (who, token, reason) in &cases {
        let reply = get(path, token).await;
        assert_eq!(reply.status, 403, "{who}: {}", reply.body);
        assert!(!reply.body.contains("entries"), "{who}");
        let events = app().query_strings(
            "audit.db",
            &format!(
                "SELECT reason FROM audit_events WHERE action = 'GET /api/patients/{{id}}/access-log' \
                 AND reason = '{reason}'"
            ),
        );
        assert!(!events.is_empty(), "{who}: no {reason} event");
    }
    assert_eq!(get("/api/patients/p-1002/access-log", alice).await.status, 403);
    // Another tenant's admin asks its own tenant, where there is no such patient: 404 as for
    // any unknown patient an admin names (erasure answers the same), nothing of this tenant.
    let other = get(path, &other_tenant_admin().await).await;
    assert_eq!(other.status, 404, "another tenant's admin: {}", other.body);
    assert!(!other.body.contains("entries"));
    assert_eq!(app().send("GET", path, &[], "").await.status, 401);
}

// ---- item 6c: the export ----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_patient_exports_everything_held_about_them_and_no_one_else_can() {
    let (alice, _) = accesses_to_alice().await;
    let reply = get("/api/patients/p-1001/export", alice).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let doc = reply.json();
    assert_eq!(doc["format"], "health-platform-export/1");
    assert_eq!((doc["patient_id"].as_str(), doc["account"].as_str()), (Some("p-1001"), Some("u-alice")));
    assert_eq!(doc["demographics"]["given_name"], "Alice");
    let entries = doc["record_entries"].as_array().expect("entries");
    assert!(entries.iter().any(|e| e["content"].as_str().is_some_and(|c| c.contains("E11.9"))), "{entries:?}");
    assert!(!doc["lab_results"].as_array().expect("results").is_empty());
    let orders = doc["lab_orders"].as_array().expect("orders");
    assert!(orders.iter().any(|o| o["order_id"] == "o-2001" && o["status"] == "open"), "{orders:?}");
    let consents = doc["consents"].as_array().expect("consents");
    assert!(consents.iter().any(|c| c["insurer"] == "acme-health" && c["live"] == true), "{consents:?}");
    assert!(doc["care_team"].as_array().expect("team").iter().any(|m| m["clinician"] == "u-dr-grey"));
    assert!(!doc["break_glass_grants"].as_array().expect("grants").is_empty());
    let log = doc["access_log"].as_array().expect("access log");
    assert!(log.iter().any(|e| e["rule"] == "care_team"), "{log:?}");
    // Nothing about anyone else, and the export is audited under her id.
    for other in ["p-1002", "p-1003", "Berg", "Castillo", "hypertension", "asthma", "u-bob"] {
        assert!(!reply.body.contains(other), "{other} in Alice's export");
    }
    assert_eq!(audited_reason("GET /api/patients/{id}/export", "u-alice"), "patient_self");

    let path = "/api/patients/p-1001/export";
    let cases = [
        ("another patient", app().token(BOB).await, "not_own_record"),
        ("her own doctor", app().token(DR_GREY).await, "route_not_permitted"),
        ("a lab", app().token(LAB).await, "route_not_permitted"),
        ("an insurer", app().client_token(ACME).await, "route_not_permitted"),
        ("the tenant admin", app().token(ADMIN).await, "route_not_permitted"),
        ("another tenant's admin", other_tenant_admin().await, "route_not_permitted"),
    ];
    for (who, token, reason) in &cases {
        let reply = get(path, token).await;
        assert_eq!(reply.status, 403, "{who}: {}", reply.body);
        assert!(!reply.body.contains("Alice"), "{who}");
        let events = app().query_strings(
            "audit.db",
            &format!(
                "SELECT reason FROM audit_events WHERE action = 'GET /api/patients/{{id}}/export' AND reason = '{reason}'"
            ),
        );
        assert!(!events.is_empty(), "{who}: no {reason} event");
    }
    assert_eq!(app().send("GET", path, &[], "").await.status, 401);
    assert_eq!(get("/api/patients/p-1001/export?format=fhir", alice).await.status, 404);
}
