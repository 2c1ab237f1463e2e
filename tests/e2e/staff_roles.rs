//! Issue 16, item 5: the staff roles, end to end through the real components.
//!
//! - Nurse: reads the record (every kind), lab results, demographics and care team of a patient
//!   whose care team they are on; writes notes and vital-sign observations, corrects only
//!   those; no diagnosis, no medication, no break-glass, nothing of any other patient.
//! - Pharmacist: reads the medication and allergy entries (and whose they are) of care-team
//!   patients: the record read leaves every other entry out, an entry's history of another kind
//!   is refused; no lab result, no write.
//! - Receptionist: registers patients, edits their demographics (`PUT /api/patients/{id}`,
//!   answered without them), admits them to a care team; ends no membership, reads no clinical
//!   content, does no other admin work.
//! - Every other role is refused the new route; every decision is the policy's and audited.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use health_e2e::{ACME, ADMIN, ALICE, DR_GREY, LAB, Reply, TestApp};
use serde_json::{Value, json};

const PASSWORD: &str = "staff-roles-pass-2026";

/// One app for the file; no role needs TOTP here.
fn app() -> &'static TestApp {
    static APP: OnceLock<TestApp> = OnceLock::new();
    APP.get_or_init(|| TestApp::start_with_variables(&[("mfa_required_roles", "")]).expect("app loads"))
}

/// A new user of `role` of the demo tenant, created by its admin through the user API: its id
/// and access token.
async fn staff(role: &str) -> (String, String) {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let username = format!("{role}-{}", NEXT.fetch_add(1, Ordering::Relaxed));
    let admin = app().token(ADMIN).await;
    let body = json!({ "username": username, "role": role, "password": PASSWORD });
    let created = app().expect_as(201, "POST", "/auth/admin/users", &admin, Some(&body)).await;
    assert_eq!(created["role"], role);
    let id = created["id"].as_str().expect("id").to_owned();
    (id, app().token((&username, PASSWORD)).await)
}

/// The reason the gateway audited for the last `action` of `actor` (its outcome, not the
/// `pending_forward` before it).
fn last_reason(action: &str, actor: &str) -> String {
    let sql = format!(
        "SELECT reason FROM audit_events WHERE action = '{action}' AND actor_sub = '{actor}' \
         AND reason != 'pending_forward' ORDER BY rowid DESC LIMIT 1"
    );
    app().query_strings("audit.db", &sql).into_iter().next().unwrap_or_default()
}

fn kinds(record: &Value) -> Vec<String> {
    let entries = record["entries"].as_array().expect("entries");
    entries.iter().map(|e| e["kind"].as_str().expect("kind").to_owned()).collect()
}

async fn admit(by: &str, patient: &str, member: &str) -> Reply {
    let path = format!("/api/patients/{patient}/care-team/{member}");
    app().send_as("POST", &path, by, Some(&json!({ "reason": "admission" }))).await
}

const WRITE: &str = "POST /api/patients/{id}/records";
const CORRECT: &str = "PUT /api/patients/{id}/records";
const HISTORY: &str = "GET /api/patients/{id}/records/{entry_id}/history";
const EDIT: &str = "PUT /api/patients/{id}";

#[tokio::test(flavor = "multi_thread")]
async fn a_nurse_reads_a_care_team_patients_record_and_writes_only_notes_and_observations() {
    let (nurse_id, nurse) = staff("nurse").await;
    let (_, desk) = staff("receptionist").await;
    let records = "/api/patients/p-1001/records";
    // Not on the team yet: nothing.
    app().expect_as(403, "GET", records, &nurse, None).await;
    assert_eq!(last_reason("GET /api/patients/{id}/records", &nurse_id), "not_on_care_team");
    // The front desk admits Alice to a team with the nurse on it.
    let added = admit(&desk, "p-1001", &nurse_id).await;
    assert_eq!(added.status, 201, "{}", added.body);

    let record = app().expect_as(200, "GET", records, &nurse, None).await;
    assert!(kinds(&record).contains(&"diagnosis".to_owned()), "{record}");
    app().expect_as(200, "GET", "/api/patients/p-1001", &nurse, None).await;
    app().expect_as(200, "GET", "/api/patients/p-1001/lab-results", &nurse, None).await;
    app().expect_as(200, "GET", "/api/patients/p-1001/records/e-1/history", &nurse, None).await;
    let team = app().expect_as(200, "GET", "/api/patients/p-1001/care-team", &nurse, None).await;
    assert!(team["members"].as_array().expect("members").iter().any(|m| m["member"] == nurse_id.as_str()));
    let mine = app().expect_as(200, "GET", "/api/care-team/patients", &nurse, None).await;
    assert_eq!(mine["patients"][0]["patient_id"], "p-1001", "{mine}");

    // Notes and vital-sign observations, written and corrected.
    let observation = json!({ "kind": "observation", "content": "BP 128/82 mmHg, pulse 72, SpO2 98%" });
    let written = app().expect_as(201, "POST", records, &nurse, Some(&observation)).await;
    assert_eq!(last_reason(WRITE, &nurse_id), "care_team");
    let entry = written["entry_id"].as_str().expect("entry_id").to_owned();
    app().expect_as(201, "POST", records, &nurse, Some(&json!({ "kind": "note", "content": "Slept well." }))).await;
    let fix = json!({ "entry_id": entry, "content": "BP 126/82 mmHg, pulse 72, SpO2 98%", "reason": "Misread" });
    app().expect_as(200, "PUT", records, &nurse, Some(&fix)).await;
    // No diagnosis, no medication: neither written nor corrected.
    for kind in ["diagnosis", "medication"] {
        app().expect_as(403, "POST", records, &nurse, Some(&json!({ "kind": kind, "content": "Something" }))).await;
        assert_eq!(last_reason(WRITE, &nurse_id), "entry_kind_not_permitted");
    }
    let diagnosis = json!({ "entry_id": "e-1", "content": "Type 1 diabetes", "reason": "Nurse's guess" });
    app().expect_as(403, "PUT", records, &nurse, Some(&diagnosis)).await;
    assert_eq!(last_reason(CORRECT, &nurse_id), "entry_kind_not_permitted");
    // The doctor reads what the nurse wrote.
    let doctor = app().token(DR_GREY).await;
    assert!(kinds(&app().expect_as(200, "GET", records, &doctor, None).await).contains(&"observation".to_owned()));

    // Nothing of a patient whose team they are not on, and no break-glass, orders or front desk.
    app().expect_as(403, "GET", "/api/patients/p-1002/records", &nurse, None).await;
    let note = json!({ "kind": "note", "content": "Hello" });
    app().expect_as(403, "POST", "/api/patients/p-1002/records", &nurse, Some(&note)).await;
    let glass = json!({ "reason": "Patient collapsed in the corridor" });
    app().expect_as(403, "POST", "/api/patients/p-1002/break-glass", &nurse, Some(&glass)).await;
    let names = json!({ "given_name": "Alice", "family_name": "Smith", "birth_date": "1984-03-12" });
    app().expect_as(403, "PUT", "/api/patients/p-1001", &nurse, Some(&names)).await;
    app()
        .expect_as(
            403,
            "POST",
            &format!("/api/patients/p-1001/care-team/{nurse_id}"),
            &nurse,
            Some(&json!({ "reason": "x" })),
        )
        .await;
    app().expect_as(403, "GET", "/api/patients/p-1001/export", &nurse, None).await;
    let patient = json!({ "given_name": "Eve", "family_name": "Ng", "birth_date": "2001-01-01" });
    app().expect_as(403, "POST", "/api/admin/patients", &nurse, Some(&patient)).await;
    app().expect_as(403, "DELETE", &format!("/api/patients/p-1001/care-team/{nurse_id}"), &nurse, None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pharmacist_reads_only_medication_and_allergy_entries_of_care_team_patients() {
    let (pharmacist_id, pharmacist) = staff("pharmacist").await;
    let admin = app().token(ADMIN).await;
    let records = "/api/patients/p-1003/records";
    app().expect_as(403, "GET", records, &pharmacist, None).await;
    // Carol (p-1003) gets an allergy and a medication beside her diagnosis, then the pharmacist.
    let doctor = app().token(DR_GREY).await;
    for (kind, content) in [("allergy", "Penicillin: hives"), ("medication", "Salbutamol inhaler as needed")] {
        app().expect_as(201, "POST", records, &doctor, Some(&json!({ "kind": kind, "content": content }))).await;
    }
    let added = admit(&admin, "p-1003", &pharmacist_id).await;
    assert_eq!(added.status, 201, "{}", added.body);

    let record = app().expect_as(200, "GET", records, &pharmacist, None).await;
    let mut seen = kinds(&record);
    seen.sort();
    seen.dedup();
    assert_eq!(seen, ["allergy", "medication"], "{record}");
    assert_eq!(record["patient"]["patient_id"], "p-1003");
    assert!(!record.to_string().contains("asthma"), "the diagnosis is left out: {record}");
    assert_eq!(last_reason("GET /api/patients/{id}/records", &pharmacist_id), "care_team");
    // The doctor still reads all of it.
    assert!(kinds(&app().expect_as(200, "GET", records, &doctor, None).await).contains(&"diagnosis".to_owned()));
    // An entry's history: its kind decides.
    let medication = record["entries"].as_array().expect("entries").iter().find(|e| e["kind"] == "medication");
    let medication = medication.and_then(|e| e["entry_id"].as_str()).expect("a medication entry");
    app().expect_as(200, "GET", &format!("/api/patients/p-1003/records/{medication}/history"), &pharmacist, None).await;
    app().expect_as(403, "GET", "/api/patients/p-1003/records/e-4/history", &pharmacist, None).await;
    assert_eq!(last_reason(HISTORY, &pharmacist_id), "entry_kind_not_permitted");
    app().expect_as(404, "GET", "/api/patients/p-1003/records/e-404/history", &pharmacist, None).await;

    let mine = app().expect_as(200, "GET", "/api/care-team/patients", &pharmacist, None).await;
    assert_eq!(mine["patients"][0]["patient_id"], "p-1003", "{mine}");
    app().expect_as(200, "GET", "/api/patients/p-1003", &pharmacist, None).await;
    // No lab results, no writes, nobody else's record.
    app().expect_as(403, "GET", "/api/patients/p-1003/lab-results", &pharmacist, None).await;
    let medication = json!({ "kind": "medication", "content": "Dispensed 1 inhaler" });
    app().expect_as(403, "POST", records, &pharmacist, Some(&medication)).await;
    assert_eq!(last_reason(WRITE, &pharmacist_id), "route_not_permitted");
    app().expect_as(403, "GET", "/api/patients/p-1001/records", &pharmacist, None).await;
    assert_eq!(last_reason("GET /api/patients/{id}/records", &pharmacist_id), "not_on_care_team");
    // Nor the front desk's or the admin's work.
    let patient = json!({ "given_name": "Eve", "family_name": "Ng", "birth_date": "2001-01-01" });
    app().expect_as(403, "POST", "/api/admin/patients", &pharmacist, Some(&patient)).await;
    app().expect_as(403, "DELETE", &format!("/api/patients/p-1003/care-team/{pharmacist_id}"), &pharmacist, None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_receptionist_registers_edits_demographics_and_admits_and_only_the_receptionist_edits() {
    let (desk_id, desk) = staff("receptionist").await;
    let (nurse_id, _) = staff("nurse").await;
    let (other_desk_id, _) = staff("receptionist").await;
    let patient =
        json!({ "patient_id": "p-8801", "given_name": "Dora", "family_name": "Quist", "birth_date": "1979-05-02" });
    let registered = app().expect_as(201, "POST", "/api/admin/patients", &desk, Some(&patient)).await;
    assert_eq!(registered["patient_id"], "p-8801");
    assert_eq!(last_reason("POST /api/admin/patients", &desk_id), "front_desk");

    // Demographics replaced: answered without them, read back by the front desk.
    let names = json!({ "given_name": "Dora", "family_name": "Quist-Berg", "birth_date": "1979-05-02" });
    let edited = app().expect_as(200, "PUT", "/api/patients/p-8801", &desk, Some(&names)).await;
    assert_eq!((&edited["patient_id"], &edited["updated"]), (&json!("p-8801"), &json!(true)));
    assert!(!edited.to_string().contains("Quist"), "{edited}");
    assert_eq!(last_reason(EDIT, &desk_id), "front_desk");
    let pending = "SELECT CAST(COUNT(*) AS TEXT) FROM audit_events WHERE action = 'PUT /api/patients/{id}' \
                   AND reason = 'pending_forward' AND patient_id = 'p-8801'";
    assert_eq!(app().query_strings("audit.db", pending), ["1"], "audited before the change too");
    let read = app().expect_as(200, "GET", "/api/patients/p-8801", &desk, None).await;
    assert_eq!(read["patient"]["family_name"], "Quist-Berg");
    let bad = json!({ "given_name": "Dora", "family_name": "Quist", "birth_date": "1979-02-30" });
    app().expect_as(400, "PUT", "/api/patients/p-8801", &desk, Some(&bad)).await;
    app().expect_as(404, "PUT", "/api/patients/p-8899", &desk, Some(&names)).await;

    // Admitted to a care team: a nurse, not another receptionist; the desk ends no membership.
    let added = admit(&desk, "p-8801", &nurse_id).await;
    assert_eq!(added.status, 201, "{}", added.body);
    assert_eq!(admit(&desk, "p-8801", &other_desk_id).await.status, 400);
    app().expect_as(403, "DELETE", &format!("/api/patients/p-8801/care-team/{nurse_id}"), &desk, None).await;

    // No clinical content, no other admin work.
    for path in [
        "/api/patients/p-1001/records",
        "/api/patients/p-1001/records/e-1/history",
        "/api/patients/p-1001/lab-results",
        "/api/patients/p-1001/care-team",
        "/api/patients/p-1001/access-log",
        "/api/patients/p-1001/export",
        "/api/admin/audit",
        "/api/care-team/patients",
    ] {
        app().expect_as(403, "GET", path, &desk, None).await;
    }
    assert_eq!(last_reason("GET /api/patients/{id}/records", &desk_id), "route_not_permitted");
    let entry = json!({ "kind": "note", "content": "Arrived at 9" });
    app().expect_as(403, "POST", "/api/patients/p-8801/records", &desk, Some(&entry)).await;
    app().expect_as(403, "DELETE", "/api/admin/patients/p-8801", &desk, None).await;
    app().expect_as(403, "POST", "/api/admin/data-keys/rotate", &desk, None).await;

    // Every other role is refused the edit, whatever it may otherwise do with the patient.
    let (_, nurse) = staff("nurse").await;
    let (_, pharmacist) = staff("pharmacist").await;
    let tokens = [
        app().token(ALICE).await,
        app().token(DR_GREY).await,
        app().token(LAB).await,
        app().token(ADMIN).await,
        nurse,
        pharmacist,
        app().client_token(ACME).await,
    ];
    let bob = json!({ "given_name": "Robert", "family_name": "Berg", "birth_date": "1971-11-02" });
    for token in &tokens {
        app().expect_as(403, "PUT", "/api/patients/p-1002", token, Some(&bob)).await;
    }
    let refused = "SELECT CAST(COUNT(*) AS TEXT) FROM audit_events WHERE action = 'PUT /api/patients/{id}' AND status = 403 \
                   AND patient_id = 'p-1002' AND reason = 'route_not_permitted'";
    assert_eq!(app().query_strings("audit.db", refused), ["7"]);
    let demographics = app().expect_as(200, "GET", "/api/patients/p-1002", &desk, None).await;
    assert_eq!(demographics["patient"]["given_name"], "Bob");
}
