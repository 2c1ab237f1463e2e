//! Issue 16, item 2: care teams, end to end through the real components.
//!
//! - `POST /api/patients/{id}/care-team/{member}` and `DELETE` of the same path: the tenant
//!   admin adds a doctor to a patient's care team (a reason, a start, an optional end) and ends
//!   the membership; access follows the membership at the second: an ended or expired one
//!   refuses the doctor's next read, one whose end lies ahead does not.
//! - `GET /api/patients/{id}/care-team`: the admin, the patient (their own), a member.
//! - `GET /api/care-team/patients`: a doctor's patients under the care-team rule.
//! - Every role allowed and denied, another tenant's admin included; every change audited
//!   twice by the gateway (`pending_forward` before, the outcome after).

use std::sync::OnceLock;

use health_e2e::{ACME, ADMIN, ALICE, DR_GREY, LAB, OPERATOR_TOKEN, Reply, TestApp, unix_now};
use serde_json::{Value, json};
use tokio::sync::OnceCell;

const JSON: (&str, &str) = ("content-type", "application/json");
const OTHER_TENANT: &str = "st-care-team";
const PASSWORD: &str = "care-team-pass-2026";

/// One app for the file; no role needs TOTP here.
fn app() -> &'static TestApp {
    static APP: OnceLock<TestApp> = OnceLock::new();
    APP.get_or_init(|| TestApp::start_with_variables(&[("mfa_required_roles", "")]).expect("app loads"))
}

async fn operator(path: &str, body: &Value) -> Reply {
    app().send_as("POST", path, OPERATOR_TOKEN, Some(body)).await
}

async fn login_at(tenant: &str, username: &str, password: &str) -> String {
    let body = json!({ "tenant": tenant, "username": username, "password": password });
    let login = app().send("POST", "/auth/login", &[JSON], &body.to_string()).await;
    assert_eq!(login.status, 200, "{}", login.body);
    login.json()["access_token"].as_str().expect("token").to_owned()
}

/// A new user of `role` in `tenant`: its id and access token.
async fn new_user(tenant: &str, username: &str, role: &str) -> (String, String) {
    let body = json!({ "tenant_id": tenant, "username": username, "role": role, "password": PASSWORD });
    let created = operator("/auth/admin/users", &body).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.json()["id"].as_str().expect("id").to_owned();
    (id, login_at(tenant, username, PASSWORD).await)
}

async fn other_tenant_admin() -> String {
    static CREATED: OnceCell<()> = OnceCell::const_new();
    CREATED
        .get_or_init(|| async {
            let made = operator("/admin/tenants", &json!({ "tenant_id": OTHER_TENANT })).await;
            assert_eq!(made.status, 201, "{}", made.body);
            let body = json!({ "tenant_id": OTHER_TENANT, "username": "root", "role": "admin", "password": PASSWORD });
            assert_eq!(operator("/auth/admin/users", &body).await.status, 201);
        })
        .await;
    login_at(OTHER_TENANT, "root", PASSWORD).await
}

/// The reason the last request answered with (`x-health-reason` is internal: read the audit).
fn audited(action: &str, actor: &str) -> Vec<(String, String, String)> {
    let sql = format!(
        "SELECT reason || '|' || COALESCE(patient_id, '') || '|' || json_extract(event, '$.resource') FROM audit_events \
         WHERE action = '{action}' AND actor_sub = '{actor}' ORDER BY rowid"
    );
    app()
        .query_strings("audit.db", &sql)
        .into_iter()
        .map(|row| {
            let mut parts = row.splitn(3, '|').map(str::to_owned);
            let mut next = || parts.next().unwrap_or_default();
            (next(), next(), next())
        })
        .collect()
}

fn last_reason(action: &str, actor: &str) -> String {
    audited(action, actor).into_iter().rev().find(|(r, ..)| r != "pending_forward").map(|e| e.0).unwrap_or_default()
}

fn patient_ids(reply: &Reply) -> Vec<String> {
    let list = reply.json();
    list["patients"]
        .as_array()
        .expect("patients")
        .iter()
        .map(|p| p["patient_id"].as_str().expect("patient_id").into())
        .collect()
}

const READ: &str = "GET /api/patients/{id}/records";
const ADD: &str = "POST /api/patients/{id}/care-team/{member}";
const END: &str = "DELETE /api/patients/{id}/care-team/{member}";

#[tokio::test(flavor = "multi_thread")]
async fn an_ended_membership_stops_the_doctors_access_at_once_and_every_change_is_audited() {
    let admin = app().token(ADMIN).await;
    let (house, doctor) = new_user("demo-hospital", "dr-house", "doctor").await;
    let team = format!("/api/patients/p-1002/care-team/{house}");
    let records = "/api/patients/p-1002/records";
    assert_eq!(app().send_as("GET", records, &doctor, None).await.status, 403);
    assert_eq!(last_reason(READ, &house), "not_on_care_team");

    // An end an hour ahead: a member until then.
    let until = unix_now() + 3600;
    let added = app().send_as("POST", &team, &admin, Some(&json!({ "reason": "referral", "ends_at": until }))).await;
    assert_eq!(added.status, 201, "{}", added.body);
    let membership = added.json();
    assert_eq!(
        (membership["member"].as_str(), membership["reason"].as_str()),
        (Some(house.as_str()), Some("referral"))
    );
    assert_eq!((membership["ends_at"].as_i64(), membership["active"].as_bool()), (Some(until), Some(true)));
    assert_eq!(membership["added_by"], "u-admin");
    let read = app().send_as("GET", records, &doctor, None).await;
    assert_eq!(read.status, 200, "{}", read.body);
    assert_eq!(last_reason(READ, &house), "care_team");
    let mine = app().send_as("GET", "/api/care-team/patients", &doctor, None).await;
    assert_eq!(mine.status, 200, "{}", mine.body);
    assert_eq!(patient_ids(&mine), ["p-1002"]);
    let team_seen = app().send_as("GET", "/api/patients/p-1002/care-team", &doctor, None).await;
    assert_eq!(team_seen.status, 200, "{}", team_seen.body);
    // A second membership while one stands is refused, and changes nothing.
    let again = app().send_as("POST", &team, &admin, Some(&json!({ "reason": "encounter" }))).await;
    assert_eq!(again.status, 409, "{}", again.body);

    let ended = app().send_as("DELETE", &team, &admin, None).await;
    assert_eq!(ended.status, 200, "{}", ended.body);
    assert_eq!(ended.json()["ended"][0], membership["membership_id"]);
    // The very next request is refused: nothing is cached anywhere.
    assert_eq!(app().send_as("GET", records, &doctor, None).await.status, 403);
    assert_eq!(last_reason(READ, &house), "not_on_care_team");
    assert_eq!(
        patient_ids(&app().send_as("GET", "/api/care-team/patients", &doctor, None).await),
        Vec::<String>::new()
    );
    assert_eq!(app().send_as("GET", "/api/patients/p-1002/care-team", &doctor, None).await.status, 403);
    assert_eq!(app().send_as("DELETE", &team, &admin, None).await.status, 404, "nothing left to end");
    let listed = app().send_as("GET", "/api/patients/p-1002/care-team", &admin, None).await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    let history = listed.json();
    let row = history["members"].as_array().unwrap().iter().find(|m| m["member"] == house.as_str()).cloned();
    let row = row.expect("the ended membership is still listed");
    assert_eq!((row["active"].as_bool(), row["ended_by"].as_str()), (Some(false), Some("u-admin")));
    assert!(row["ends_at"].as_i64().unwrap() < until);

    // Ended, the doctor can be added again.
    let readded = app().send_as("POST", &team, &admin, Some(&json!({ "reason": "admission" }))).await;
    assert_eq!(readded.status, 201, "{}", readded.body);
    assert_eq!(app().send_as("GET", records, &doctor, None).await.status, 200);

    // Each change audited twice, with the patient, the member in the resource and the rule.
    let resource = format!("/api/patients/p-1002/care-team/{house}");
    let adds = audited(ADD, "u-admin");
    let ends = audited(END, "u-admin");
    for (events, rule) in [(&adds, "admin_care_team"), (&ends, "admin_care_team")] {
        let ours: Vec<_> = events.iter().filter(|(_, p, r)| p == "p-1002" && *r == resource).collect();
        assert!(ours.iter().any(|(reason, ..)| reason == "pending_forward"), "{events:?}");
        assert!(ours.iter().any(|(reason, ..)| reason == rule), "{events:?}");
    }
    assert!(adds.iter().any(|(reason, ..)| reason == "already_on_care_team"), "{adds:?}");
    assert!(ends.iter().any(|(reason, ..)| reason == "no_live_membership"), "{ends:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_membership_stops_access_and_one_not_yet_started_grants_none() {
    let admin = app().token(ADMIN).await;
    let (doc_id, doctor) = new_user("demo-hospital", "dr-brief", "doctor").await;
    let ends_at = unix_now() + 3;
    let add = |patient: &str, body: Value| {
        let path = format!("/api/patients/{patient}/care-team/{doc_id}");
        let admin = admin.clone();
        async move { app().send_as("POST", &path, &admin, Some(&body)).await }
    };
    let brief = add("p-1001", json!({ "reason": "consultation", "ends_at": ends_at })).await;
    assert_eq!(brief.status, 201, "{}", brief.body);
    let later = add("p-1003", json!({ "reason": "referral", "starts_at": unix_now() + 3600 })).await;
    assert_eq!(later.status, 201, "{}", later.body);
    assert_eq!(later.json()["active"], false);

    assert_eq!(app().send_as("GET", "/api/patients/p-1001/records", &doctor, None).await.status, 200);
    assert_eq!(
        app().send_as("GET", "/api/patients/p-1003/records", &doctor, None).await.status,
        403,
        "not started yet"
    );
    assert_eq!(patient_ids(&app().send_as("GET", "/api/care-team/patients", &doctor, None).await), ["p-1001"]);

    while unix_now() <= ends_at {
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert_eq!(app().send_as("GET", "/api/patients/p-1001/records", &doctor, None).await.status, 403, "expired");
    assert_eq!(last_reason(READ, &doc_id), "not_on_care_team");
    assert_eq!(
        patient_ids(&app().send_as("GET", "/api/care-team/patients", &doctor, None).await),
        Vec::<String>::new()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_adds_only_enabled_doctors_with_valid_times_to_its_own_patients() {
    let admin = app().token(ADMIN).await;
    let team = |patient: &str, member: &str| format!("/api/patients/{patient}/care-team/{member}");
    let referral = json!({ "reason": "referral" });
    for (path, body, status, reason) in [
        (team("p-1001", "u-nobody"), referral.clone(), 400, "member_not_a_clinician"),
        (team("p-1001", "u-alice"), referral.clone(), 400, "member_not_a_clinician"),
        (team("p-1001", "u-lab-north"), referral.clone(), 400, "member_not_a_clinician"),
        (team("p-1002", "u-dr-grey"), json!({ "reason": "because" }), 400, "bad_value"),
        (
            team("p-1002", "u-dr-grey"),
            json!({ "reason": "referral", "ends_at": unix_now() - 1 }),
            400,
            "membership_times_out_of_range",
        ),
        (team("p-1002", "u-dr-grey"), json!({ "reason": "referral", "role": "admin" }), 400, "malformed_body"),
        (team("p-9999", "u-dr-grey"), referral.clone(), 404, "no_such_patient"),
        (team("p-1001", "u-dr-grey"), referral.clone(), 409, "already_on_care_team"),
    ] {
        let reply = app().send_as("POST", &path, &admin, Some(&body)).await;
        assert_eq!(reply.status, status, "{path} {body}: {}", reply.body);
        assert_eq!(last_reason(ADD, "u-admin"), reason, "{path} {body}");
    }
    // A disabled doctor is refused too.
    let (disabled, _) = new_user("demo-hospital", "dr-gone", "doctor").await;
    let path = format!("/auth/admin/users/{disabled}/disable");
    let off = app().send_as("POST", &path, OPERATOR_TOKEN, Some(&json!({ "tenant_id": "demo-hospital" }))).await;
    assert!(off.status < 300, "{}", off.body);
    assert_eq!(app().send_as("POST", &team("p-1002", &disabled), &admin, Some(&referral)).await.status, 400);
    // Without a JSON body the gateway refuses before anything is forwarded.
    assert_eq!(app().send_as("POST", &team("p-1002", "u-dr-grey"), &admin, None).await.status, 415);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_role_is_allowed_and_denied_as_its_rules_say() {
    let grey_team = "/api/patients/p-1001/care-team/u-dr-grey";
    let referral = json!({ "reason": "referral" });

    // The patient: their own team only, never a change, no patient list.
    let alice = app().token(ALICE).await;
    let own = app().send_as("GET", "/api/patients/p-1001/care-team", &alice, None).await;
    assert_eq!(own.status, 200, "{}", own.body);
    assert!(
        own.json()["members"].as_array().unwrap().iter().any(|m| m["member"] == "u-dr-grey" && m["active"] == true)
    );
    assert_eq!(app().send_as("GET", "/api/patients/p-1002/care-team", &alice, None).await.status, 403);
    assert_eq!(app().send_as("POST", grey_team, &alice, Some(&referral)).await.status, 403);
    assert_eq!(app().send_as("DELETE", grey_team, &alice, None).await.status, 403);
    assert_eq!(app().send_as("GET", "/api/care-team/patients", &alice, None).await.status, 403);

    // A doctor: the teams they are on, their own patients, no change.
    let grey = app().token(DR_GREY).await;
    assert_eq!(app().send_as("GET", "/api/patients/p-1001/care-team", &grey, None).await.status, 200);
    assert_eq!(app().send_as("GET", "/api/patients/p-1002/care-team", &grey, None).await.status, 403);
    assert_eq!(last_reason("GET /api/patients/{id}/care-team", "u-dr-grey"), "not_on_care_team");
    assert_eq!(
        app().send_as("POST", "/api/patients/p-1002/care-team/u-dr-grey", &grey, Some(&referral)).await.status,
        403
    );
    assert_eq!(app().send_as("DELETE", grey_team, &grey, None).await.status, 403);
    let mine = app().send_as("GET", "/api/care-team/patients", &grey, None).await;
    assert_eq!(mine.status, 200, "{}", mine.body);
    let mine = patient_ids(&mine);
    assert!(mine.contains(&"p-1001".to_owned()) && mine.contains(&"p-1003".to_owned()), "{mine:?}");
    assert!(!mine.contains(&"p-1002".to_owned()), "{mine:?}");
    assert_eq!(last_reason("GET /api/care-team/patients", "u-dr-grey"), "own_care_team");

    // A lab and an insurer (whose token is good for one request): nothing.
    let lab = app().token(LAB).await;
    for (method, path, body) in [
        ("GET", "/api/patients/p-1001/care-team", None),
        ("GET", "/api/care-team/patients", None),
        ("POST", grey_team, Some(&referral)),
        ("DELETE", grey_team, None),
    ] {
        for token in [lab.clone(), app().client_token(ACME).await] {
            let reply = app().send_as(method, path, &token, body).await;
            assert_eq!(reply.status, 403, "{method} {path}: {}", reply.body);
        }
    }
    assert_eq!(last_reason("GET /api/care-team/patients", "u-lab-north"), "route_not_permitted");

    // The admin: reads and changes the team, lists no patients of its own.
    let admin = app().token(ADMIN).await;
    assert_eq!(app().send_as("GET", "/api/patients/p-1003/care-team", &admin, None).await.status, 200);
    assert_eq!(app().send_as("GET", "/api/care-team/patients", &admin, None).await.status, 403);
    assert_eq!(app().send_as("GET", "/api/patients/p-9999/care-team", &admin, None).await.status, 404);

    // Another tenant's admin: its tenant has no such patient (404, as for an admin's unknown
    // patient), and nothing changes here.
    let other = other_tenant_admin().await;
    assert_eq!(app().send_as("GET", "/api/patients/p-1001/care-team", &other, None).await.status, 404);
    assert_eq!(
        app().send_as("POST", "/api/patients/p-1002/care-team/u-dr-grey", &other, Some(&referral)).await.status,
        404
    );
    assert_eq!(app().send_as("DELETE", grey_team, &other, None).await.status, 404);
    assert_eq!(
        app().send_as("GET", "/api/patients/p-1001/records", &grey, None).await.status,
        200,
        "still on the team"
    );
}
