//! Issue 16, items 1 and 3: lab organisations and lab orders, end to end through the real
//! components.
//!
//! - `GET`/`POST /api/admin/labs`, `PUT`/`DELETE /api/admin/labs/{lab_id}/members/{user_id}`:
//!   the tenant admin registers lab organisations (idempotent by id, 409 under another name) and
//!   attaches enabled lab users of the tenant to them; no other role, and no other tenant.
//! - `POST /api/patients/{id}/lab-orders`: a doctor on the care team (or under break-glass)
//!   orders a test from a registered lab; the note is sealed; every member of that lab, and only
//!   they, see it in `GET /api/lab/orders` and one appends the result, which the patient and the
//!   ordering doctor read at `GET /api/patients/{id}/lab-results`.
//! - `GET /api/patients/{id}/lab-orders`: the patient and the care team's doctors.
//! - Every role allowed and denied on every new route, another tenant's admin and doctor included;
//!   every change audited by the gateway before (`pending_forward`) and after.

use std::sync::OnceLock;

use health_e2e::{ACME, ADMIN, ALICE, BOB, DR_GREY, LAB, OPERATOR_TOKEN, Reply, TestApp};
use serde_json::{Value, json};
use tokio::sync::OnceCell;

const JSON: (&str, &str) = ("content-type", "application/json");
const OTHER_TENANT: &str = "st-lab-orders";
const PASSWORD: &str = "lab-orders-pass-2026";

/// One app for the file; no role needs TOTP here.
fn app() -> &'static TestApp {
    static APP: OnceLock<TestApp> = OnceLock::new();
    APP.get_or_init(|| TestApp::start_with_variables(&[("mfa_required_roles", "")]).expect("app loads"))
}

async fn operator(path: &str, body: &Value) -> Reply {
    app().send_as("POST", path, OPERATOR_TOKEN, Some(body)).await
}

async fn login_at(tenant: &str, username: &str) -> String {
    let body = json!({ "tenant": tenant, "username": username, "password": PASSWORD });
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
    (id, login_at(tenant, username).await)
}

/// Another tenant with an admin and a doctor (created once): their tokens.
async fn other_tenant() -> (String, String) {
    static CREATED: OnceCell<()> = OnceCell::const_new();
    CREATED
        .get_or_init(|| async {
            let made = operator("/admin/tenants", &json!({ "tenant_id": OTHER_TENANT })).await;
            assert_eq!(made.status, 201, "{}", made.body);
            for (username, role) in [("root", "admin"), ("dr-other", "doctor")] {
                let body =
                    json!({ "tenant_id": OTHER_TENANT, "username": username, "role": role, "password": PASSWORD });
                assert_eq!(operator("/auth/admin/users", &body).await.status, 201);
            }
        })
        .await;
    (login_at(OTHER_TENANT, "root").await, login_at(OTHER_TENANT, "dr-other").await)
}

/// The audit reasons of `action` by `actor`, in order (`pending_forward` included).
fn audited(action: &str, actor: &str) -> Vec<String> {
    let sql =
        format!("SELECT reason FROM audit_events WHERE action = '{action}' AND actor_sub = '{actor}' ORDER BY rowid");
    app().query_strings("audit.db", &sql)
}

fn last_reason(action: &str, actor: &str) -> String {
    audited(action, actor).into_iter().rev().find(|r| r != "pending_forward").unwrap_or_default()
}

/// The status and reason a refusal answers with: the problem's status, and the audit's reason.
fn refused(reply: &Reply, action: &str, actor: &str) -> (u16, String) {
    (reply.status, last_reason(action, actor))
}

fn order_ids(reply: &Reply) -> Vec<String> {
    assert_eq!(reply.status, 200, "{}", reply.body);
    let list = reply.json();
    list["orders"].as_array().expect("orders").iter().map(|o| o["order_id"].as_str().expect("id").into()).collect()
}

const REGISTER: &str = "POST /api/admin/labs";
const LIST: &str = "GET /api/admin/labs";
const ATTACH: &str = "PUT /api/admin/labs/{lab_id}/members/{user_id}";
const DETACH: &str = "DELETE /api/admin/labs/{lab_id}/members/{user_id}";
const ORDER: &str = "POST /api/patients/{id}/lab-orders";
const ORDERS: &str = "GET /api/patients/{id}/lab-orders";
const APPEND: &str = "POST /api/lab/orders/{id}/results";

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_registers_lab_organisations_and_their_members_and_no_one_else_can() {
    let admin = app().token(ADMIN).await;
    let west = json!({ "lab_id": "lab-west", "name": "West Side Pathology" });
    let created = app().send_as("POST", "/api/admin/labs", &admin, Some(&west)).await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(app().send_as("POST", "/api/admin/labs", &admin, Some(&west)).await.status, 200, "the same lab again");
    let renamed = json!({ "lab_id": "lab-west", "name": "Another Lab" });
    assert_eq!(
        refused(&app().send_as("POST", "/api/admin/labs", &admin, Some(&renamed)).await, REGISTER, "u-admin"),
        (409, "lab_id_taken".into())
    );
    let bad = json!({ "lab_id": "lab west", "name": "x" });
    assert_eq!(app().send_as("POST", "/api/admin/labs", &admin, Some(&bad)).await.status, 400);

    let (tech, _) = new_user("demo-hospital", "west-tech", "lab").await;
    let (doctor, _) = new_user("demo-hospital", "dr-west", "doctor").await;
    let member = format!("/api/admin/labs/lab-west/members/{tech}");
    let attached = app().send_as("PUT", &member, &admin, None).await;
    assert_eq!(attached.status, 200, "{}", attached.body);
    assert_eq!(attached.json()["changed"], true);
    assert_eq!(app().send_as("PUT", &member, &admin, None).await.json()["changed"], false, "already a member");
    for (path, want) in [
        (format!("/api/admin/labs/lab-west/members/{doctor}"), (400, "not_a_lab_account")),
        ("/api/admin/labs/lab-west/members/u-nobody".to_owned(), (400, "not_a_lab_account")),
        (format!("/api/admin/labs/lab-nowhere/members/{tech}"), (404, "no_such_lab")),
    ] {
        assert_eq!(
            refused(&app().send_as("PUT", &path, &admin, None).await, ATTACH, "u-admin"),
            (want.0, want.1.into()),
            "{path}"
        );
    }
    let labs = app().send_as("GET", "/api/admin/labs", &admin, None).await;
    assert_eq!(labs.status, 200, "{}", labs.body);
    let labs = labs.json();
    let find = |id: &str| labs["labs"].as_array().expect("labs").iter().find(|l| l["lab_id"] == id).cloned();
    let west_listed = find("lab-west").expect("lab-west listed");
    assert_eq!(
        (west_listed["name"].as_str(), west_listed["members"].clone()),
        (Some("West Side Pathology"), json!([tech]))
    );
    assert_eq!(find("lab-north").expect("the demo's lab")["members"], json!(["u-lab-north"]));

    // Every other role is refused at the gateway, on every route.
    let second = format!("/api/admin/labs/lab-west/members/{tech}");
    let mut others = vec![
        ("a patient", app().token(ALICE).await),
        ("a doctor", app().token(DR_GREY).await),
        ("a lab user", app().token(LAB).await),
        ("an insurer", app().client_token(ACME).await),
    ];
    for role in ["nurse", "receptionist", "pharmacist"] {
        others.push((role, new_user("demo-hospital", &format!("labs-{role}"), role).await.1));
    }
    for (who, token) in &others {
        // An insurer's token is spent on its first use: a fresh one for each request.
        let fresh = async || if *who == "an insurer" { app().client_token(ACME).await } else { token.clone() };
        for (method, path, body) in [
            ("GET", "/api/admin/labs", None),
            ("POST", "/api/admin/labs", Some(&west)),
            ("PUT", second.as_str(), None),
            ("DELETE", second.as_str(), None),
        ] {
            let reply = app().send_as(method, path, &fresh().await, body).await;
            assert_eq!(reply.status, 403, "{who} {method} {path}: {}", reply.body);
        }
    }
    assert_eq!(last_reason(LIST, "u-lab-north"), "route_not_permitted");
    assert_eq!(last_reason(DETACH, "u-dr-grey"), "route_not_permitted");

    // Another tenant's admin manages their own tenant's labs: none of ours, and none of our users.
    let (root, _) = other_tenant().await;
    let theirs = app().send_as("GET", "/api/admin/labs", &root, None).await;
    assert_eq!((theirs.status, theirs.json()["labs"].clone()), (200, json!([])), "{}", theirs.body);
    assert_eq!(app().send_as("POST", "/api/admin/labs", &root, Some(&west)).await.status, 201, "their own lab-west");
    let ours = app().send_as("PUT", &format!("/api/admin/labs/lab-west/members/{tech}"), &root, None).await;
    assert_eq!(ours.status, 400, "our lab user is not theirs: {}", ours.body);
    assert_eq!(app().send_as("DELETE", "/api/admin/labs/lab-north/members/u-lab-north", &root, None).await.status, 404);
    let still = app().send_as("GET", "/api/admin/labs", &admin, None).await.json();
    let north = still["labs"].as_array().expect("labs").iter().find(|l| l["lab_id"] == "lab-north").cloned();
    assert_eq!(north.expect("lab-north")["members"], json!(["u-lab-north"]), "untouched by the other tenant");

    // Detaching: once, then 404.
    let detached = app().send_as("DELETE", &member, &admin, None).await;
    assert_eq!(detached.status, 200, "{}", detached.body);
    assert_eq!(
        refused(&app().send_as("DELETE", &member, &admin, None).await, DETACH, "u-admin"),
        (404, "not_a_lab_member".into())
    );
    // Every change was audited before it was forwarded and after, as the admin's.
    for action in [REGISTER, ATTACH, DETACH] {
        let reasons = audited(action, "u-admin");
        assert!(reasons.iter().any(|r| r == "pending_forward"), "{action}: {reasons:?}");
        assert!(reasons.iter().any(|r| r == "admin_labs"), "{action}: {reasons:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_care_team_doctor_orders_a_test_its_labs_members_work_it_and_the_patient_and_doctor_read_it() {
    let admin = app().token(ADMIN).await;
    let east = json!({ "lab_id": "lab-east", "name": "East Clinical Laboratory" });
    assert!(matches!(app().send_as("POST", "/api/admin/labs", &admin, Some(&east)).await.status, 200 | 201));
    let (one, one_token) = new_user("demo-hospital", "east-one", "lab").await;
    let (two, two_token) = new_user("demo-hospital", "east-two", "lab").await;
    let member = |id: &str| format!("/api/admin/labs/lab-east/members/{id}");
    assert_eq!(app().send_as("PUT", &member(&one), &admin, None).await.status, 200);

    // Dr Grey is on Alice's care team (demo data).
    let grey = app().token(DR_GREY).await;
    let note = "Fasting since 20:00; on metformin";
    let order =
        json!({ "lab_id": "lab-east", "test_code": "2093-3", "test_name": "Cholesterol [Mass/volume]", "note": note });
    let placed = app().send_as("POST", "/api/patients/p-1001/lab-orders", &grey, Some(&order)).await;
    assert_eq!(placed.status, 201, "{}", placed.body);
    let order_id = placed.json()["order_id"].as_str().expect("order id").to_owned();
    assert_eq!(last_reason(ORDER, "u-dr-grey"), "care_team");
    assert!(audited(ORDER, "u-dr-grey").iter().any(|r| r == "pending_forward"));
    let stored =
        app().query_strings("records.db", &format!("SELECT note FROM lab_order WHERE order_id = '{order_id}'"));
    assert!(stored.len() == 1 && !stored[0].contains("metformin"), "the note is sealed: {stored:?}");

    // Ordering: refused to a doctor off the care team, every other role and another tenant.
    let (_, house) = new_user("demo-hospital", "dr-east-house", "doctor").await;
    let unknown = json!({ "lab_id": "lab-nowhere", "test_code": "2093-3" });
    assert_eq!(
        refused(
            &app().send_as("POST", "/api/patients/p-1001/lab-orders", &grey, Some(&unknown)).await,
            ORDER,
            "u-dr-grey"
        ),
        (400, "no_such_lab".into())
    );
    let (root, other_doctor) = other_tenant().await;
    // The other staff roles order nothing, a nurse on the care team included; nor do they read
    // the orders (a nurse reads the results, `lab-results`).
    let mut staff = Vec::new();
    for role in ["nurse", "receptionist", "pharmacist"] {
        let (id, token) = new_user("demo-hospital", &format!("orders-{role}"), role).await;
        if role != "receptionist" {
            let team = format!("/api/patients/p-1001/care-team/{id}");
            let joined = app().send_as("POST", &team, &admin, Some(&json!({ "reason": "admission" }))).await;
            assert_eq!(joined.status, 201, "{}", joined.body);
        }
        staff.push((role, token));
    }
    for (role, token) in &staff {
        let reply = app().send_as("POST", "/api/patients/p-1001/lab-orders", token, Some(&order)).await;
        assert_eq!(reply.status, 403, "{role}: {}", reply.body);
        assert_eq!(app().send_as("GET", "/api/patients/p-1001/lab-orders", token, None).await.status, 403, "{role}");
    }
    for (who, token, path, status) in [
        ("a doctor off Bob's care team", grey.clone(), "/api/patients/p-1002/lab-orders", 403),
        ("a doctor on no care team", house.clone(), "/api/patients/p-1001/lab-orders", 403),
        ("the patient", app().token(ALICE).await, "/api/patients/p-1001/lab-orders", 403),
        ("a lab user", one_token.clone(), "/api/patients/p-1001/lab-orders", 403),
        ("an insurer", app().client_token(ACME).await, "/api/patients/p-1003/lab-orders", 403),
        ("the tenant admin", admin.clone(), "/api/patients/p-1001/lab-orders", 403),
        ("another tenant's admin", root.clone(), "/api/patients/p-1001/lab-orders", 403),
        ("another tenant's doctor", other_doctor.clone(), "/api/patients/p-1001/lab-orders", 403),
    ] {
        let reply = app().send_as("POST", path, &token, Some(&order)).await;
        assert_eq!(reply.status, status, "{who}: {}", reply.body);
    }
    assert_eq!(last_reason(ORDER, "u-dr-grey"), "not_on_care_team");
    assert_eq!(last_reason(ORDER, "u-admin"), "route_not_permitted");
    // A doctor under break-glass may order (flagged for review like any access under it).
    let reason = json!({ "reason": "Collapsed in the waiting room, no care team on shift" });
    assert_eq!(app().send_as("POST", "/api/patients/p-1002/break-glass", &house, Some(&reason)).await.status, 201);
    let glass = json!({ "lab_id": "lab-east", "test_code": "2345-7" });
    let urgent = app().send_as("POST", "/api/patients/p-1002/lab-orders", &house, Some(&glass)).await;
    assert_eq!(urgent.status, 201, "{}", urgent.body);
    let urgent_id = urgent.json()["order_id"].as_str().expect("order id").to_owned();

    // The lab's queue: its members see the orders placed with it, note opened; no one else does.
    let queue = app().send_as("GET", "/api/lab/orders", &one_token, None).await;
    let mut ids = order_ids(&queue);
    ids.sort();
    let mut both = [order_id.clone(), urgent_id.clone()];
    both.sort();
    assert_eq!(ids, both);
    let listed = queue.json();
    let listed =
        listed["orders"].as_array().expect("orders").iter().find(|o| o["order_id"] == order_id.as_str()).cloned();
    let listed = json!({ "orders": [listed.expect("the order")] });
    assert_eq!(
        (listed["orders"][0]["lab_id"].as_str(), listed["orders"][0]["note"].as_str()),
        (Some("lab-east"), Some(note))
    );
    assert!(order_ids(&app().send_as("GET", "/api/lab/orders", &two_token, None).await).is_empty(), "not a member");
    let north = app().token(LAB).await;
    assert_eq!(
        order_ids(&app().send_as("GET", "/api/lab/orders", &north, None).await),
        ["o-2001", "o-2002"],
        "lab-north's only"
    );

    // Appending: members of the order's lab only.
    let result = json!({ "code": "2093-3", "value": "5.2", "unit": "mmol/L", "note": "lipemic sample" });
    let append = format!("/api/lab/orders/{order_id}/results");
    for (token, actor) in [(&two_token, two.as_str()), (&north, "u-lab-north")] {
        assert_eq!(
            refused(&app().send_as("POST", &append, token, Some(&result)).await, APPEND, actor),
            (403, "order_not_assigned".into())
        );
    }
    let appended = app().send_as("POST", &append, &one_token, Some(&result)).await;
    assert_eq!(appended.status, 201, "{}", appended.body);
    assert_eq!(last_reason(APPEND, &one), "assigned_lab");
    // A second member works the lab's other order; a detached one sees and appends no more.
    assert_eq!(app().send_as("PUT", &member(&two), &admin, None).await.status, 200);
    assert_eq!(app().send_as("DELETE", &member(&one), &admin, None).await.status, 200);
    assert!(order_ids(&app().send_as("GET", "/api/lab/orders", &one_token, None).await).is_empty(), "detached");
    let urgent_append = format!("/api/lab/orders/{urgent_id}/results");
    assert_eq!(app().send_as("POST", &urgent_append, &one_token, Some(&result)).await.status, 403);
    assert_eq!(order_ids(&app().send_as("GET", "/api/lab/orders", &two_token, None).await), [urgent_id.as_str()]);

    // The patient and the ordering doctor read the result and the order; no one else does.
    let alice = app().token(ALICE).await;
    for token in [&alice, &grey] {
        let results = app().send_as("GET", "/api/patients/p-1001/lab-results", token, None).await;
        assert_eq!(results.status, 200, "{}", results.body);
        let results = results.json();
        let ours = results["lab_results"]
            .as_array()
            .expect("results")
            .iter()
            .find(|r| r["order_id"] == order_id.as_str())
            .cloned();
        let ours = ours.expect("the new result");
        assert_eq!(
            (ours["value"].as_str(), ours["lab_id"].as_str(), ours["note"].as_str()),
            (Some("5.2"), Some("lab-east"), Some("lipemic sample"))
        );
        let orders = app().send_as("GET", "/api/patients/p-1001/lab-orders", token, None).await;
        assert_eq!(orders.status, 200, "{}", orders.body);
        let orders = orders.json();
        let mine = orders["lab_orders"]
            .as_array()
            .expect("orders")
            .iter()
            .find(|o| o["order_id"] == order_id.as_str())
            .cloned();
        let mine = mine.expect("the new order");
        assert_eq!(
            (mine["status"].as_str(), mine["ordered_by"].as_str(), mine["note"].as_str()),
            (Some("resulted"), Some("u-dr-grey"), Some(note))
        );
        assert!(mine["result_id"].is_string(), "{mine}");
    }
    assert_eq!(last_reason(ORDERS, "u-alice"), "patient_self");
    assert_eq!(last_reason(ORDERS, "u-dr-grey"), "care_team");
    for (who, token, status) in [
        ("another patient", app().token(BOB).await, 403),
        ("a doctor on no care team", house.clone(), 403),
        ("a lab user", one_token.clone(), 403),
        ("an insurer", app().client_token(ACME).await, 403),
        ("the tenant admin", admin.clone(), 403),
        ("another tenant's admin", root, 403),
        ("another tenant's doctor", other_doctor, 403),
    ] {
        let reply = app().send_as("GET", "/api/patients/p-1001/lab-orders", &token, None).await;
        assert_eq!(reply.status, status, "{who}: {}", reply.body);
        assert!(!reply.body.contains("metformin"), "{who}");
    }
    assert_eq!(last_reason(ORDERS, "u-bob"), "not_own_record");
    assert_eq!(last_reason(ORDERS, "u-admin"), "route_not_permitted");
}
