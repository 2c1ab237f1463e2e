//! Issue 16, item 1: a hospital registers its patients and links their accounts, end to end
//! through the real components.
//!
//! - `POST /api/admin/patients`: the tenant admin registers a patient, demographics sealed;
//!   the same patient again changes nothing (200), another patient on a taken id is 409.
//! - `PUT /api/admin/patients/{id}/account`: links an enabled patient account of the tenant to
//!   the record; from then on that account's token reads that record, and only it. One account
//!   per record and one record per account (409 otherwise); a clinician's account is refused.
//! - Only the tenant admin, in their own tenant; every change audited with no clear PHI.

use health_e2e::{ADMIN, ALICE, DR_GREY, TestApp};
use serde_json::{Value, json};

fn ada(birth_date: &str) -> Value {
    json!({ "patient_id": "p-3001", "given_name": "Ada", "family_name": "Quillfeather", "birth_date": birth_date })
}

#[tokio::test]
async fn an_admin_registers_a_patient_and_links_their_account_so_they_read_that_record_alone() {
    let app = TestApp::start_with_variables(&[("mfa_required_roles", "")]).expect("app loads");
    let admin = app.token(ADMIN).await;

    // Registration: created, then idempotent, then a different patient on the id refused.
    let created = app.send_as("POST", "/api/admin/patients", &admin, Some(&ada("1980-05-01"))).await;
    assert_eq!((created.status, &created.json()["patient_id"]), (201, &json!("p-3001")), "{}", created.body);
    let again = app.send_as("POST", "/api/admin/patients", &admin, Some(&ada("1980-05-01"))).await;
    assert_eq!(again.status, 200, "{}", again.body);
    let other = app.send_as("POST", "/api/admin/patients", &admin, Some(&ada("1980-05-02"))).await;
    assert_eq!(other.status, 409, "{}", other.body);
    let unnamed = json!({ "given_name": "Bo", "family_name": "Quillfeather", "birth_date": "2001-02-03" });
    let generated = app.send_as("POST", "/api/admin/patients", &admin, Some(&unnamed)).await;
    assert_eq!(generated.status, 201, "{}", generated.body);
    assert!(generated.json()["patient_id"].as_str().is_some_and(|id| id.starts_with("p-")), "{}", generated.body);
    let bad_date = app.send_as("POST", "/api/admin/patients", &admin, Some(&ada("1980-02-30"))).await;
    assert_eq!(bad_date.status, 400, "{}", bad_date.body);
    for clinician in [app.token(DR_GREY).await, app.token(ALICE).await] {
        let refused = app.send_as("POST", "/api/admin/patients", &clinician, Some(&unnamed)).await;
        assert_eq!(refused.status, 403, "{}", refused.body);
    }

    // A new patient account reads nothing before it is linked.
    let user = json!({ "username": "ada-q", "role": "patient", "password": "ada-quill-pass-2026" });
    let account = app.send_as("POST", "/auth/admin/users", &admin, Some(&user)).await;
    assert_eq!(account.status, 201, "{}", account.body);
    let ada_id = account.json()["id"].as_str().expect("user id").to_owned();
    let ada_token = app.token(("ada-q", "ada-quill-pass-2026")).await;
    assert_eq!(app.get_with("/api/patients/p-3001", &ada_token).await.status, 403);
    assert_eq!(app.get_with("/api/me/patient", &ada_token).await.status, 404, "no record linked yet");

    // Linking: a clinician's account refused, then the patient's, idempotent.
    let link = |user_id: &str| json!({ "user_id": user_id });
    let path = "/api/admin/patients/p-3001/account";
    let doctor = app.send_as("PUT", path, &admin, Some(&link("u-dr-grey"))).await;
    assert_eq!(doctor.status, 400, "{}", doctor.body);
    let linked = app.send_as("PUT", path, &admin, Some(&link(&ada_id))).await;
    assert_eq!((linked.status, &linked.json()["changed"]), (200, &json!(true)), "{}", linked.body);
    let relinked = app.send_as("PUT", path, &admin, Some(&link(&ada_id))).await;
    assert_eq!((relinked.status, &relinked.json()["changed"]), (200, &json!(false)), "{}", relinked.body);

    // One account per record, one record per account; an unknown record is 404.
    assert_eq!(app.send_as("PUT", path, &admin, Some(&link("u-alice"))).await.status, 409);
    let bo = generated.json()["patient_id"].as_str().expect("id").to_owned();
    let bo_path = format!("/api/admin/patients/{bo}/account");
    assert_eq!(app.send_as("PUT", &bo_path, &admin, Some(&link(&ada_id))).await.status, 409);
    assert_eq!(
        app.send_as("PUT", "/api/admin/patients/p-9999/account", &admin, Some(&link("u-bob"))).await.status,
        404
    );
    assert_eq!(app.send_as("PUT", path, &app.token(DR_GREY).await, Some(&link(&ada_id))).await.status, 403);

    // Her token now finds her record (which a clinician's or the admin's cannot ask)...
    let found = app.get_with("/api/me/patient", &ada_token).await;
    assert_eq!((found.status, &found.json()["patient_id"]), (200, &json!("p-3001")), "{}", found.body);
    for other in [app.token(DR_GREY).await, admin.clone()] {
        assert_eq!(app.get_with("/api/me/patient", &other).await.status, 403);
    }
    assert_eq!(app.get_with("/api/me/patient", &app.token(ALICE).await).await.json()["patient_id"], json!("p-1001"));
    // ...and reads it, and only it.
    let mine = app.get_with("/api/patients/p-3001", &ada_token).await;
    assert_eq!((mine.status, &mine.json()["patient"]["family_name"]), (200, &json!("Quillfeather")), "{}", mine.body);
    assert_eq!(app.get_with("/api/patients/p-1001", &ada_token).await.status, 403);
    assert_eq!(app.get_with(&format!("/api/patients/{bo}"), &ada_token).await.status, 403);

    // Audited with their reasons, and nothing stored in clear.
    let reasons = app.query_strings(
        "audit.db",
        "SELECT reason FROM audit_events WHERE json_extract(event, '$.action') LIKE '%/api/admin/patients%'",
    );
    for reason in ["admin_registration", "admin_patient_account", "patient_id_taken", "account_has_a_record"] {
        assert!(reasons.iter().any(|r| r == reason), "{reason} not audited: {reasons:?}");
    }
    for (db, sql) in [
        ("audit.db", "SELECT event FROM audit_events"),
        ("records.db", "SELECT given_name || family_name FROM patient"),
    ] {
        let rows = app.query_strings(db, sql);
        assert!(rows.iter().all(|r| !r.contains("Quillfeather") && !r.contains("1980-05-01")), "{db} holds PHI");
    }
}
