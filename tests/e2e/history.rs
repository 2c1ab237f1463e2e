//! Issue 16, item 4: record history, end to end through the real components.
//!
//! - `PUT /api/patients/{id}/records` with a required `reason`: a correction adds a version
//!   (author, time, reason) and the one it replaces is kept.
//! - `GET /api/patients/{id}/records/{entry_id}/history`: every version, newest first, to a
//!   doctor on the care team and to the patient (their own); refused to another patient, a
//!   doctor not on the care team (under break-glass he may), a lab, an insurer and the admin.
//!   The patient's export holds the earlier versions.
//! - The audit event of each correction names the entry and both versions and carries keyed
//!   digests of the old and new content; neither the audit database file nor the export (strict
//!   redaction included) holds the text, and the chain still verifies.

use std::sync::OnceLock;

use health_e2e::{ACME, ADMIN, ALICE, BOB, DR_GREY, LAB, OPERATOR_TOKEN, Reply, TestApp};
use serde_json::{Value, json};

const UPDATE: &str = "PUT /api/patients/{id}/records";
/// Alice's seeded diagnosis, version 1, written by Dr Grey.
const SEEDED: &str = "Type 2 diabetes mellitus without complications (E11.9)";
const SECOND: &str = "Type 2 diabetes mellitus with hyperglycaemia (E11.65)";
const THIRD: &str = "Type 2 diabetes mellitus with hyperglycaemia, on insulin (E11.65)";
const FIRST_REASON: &str = "HbA1c 9.1% on review";
const SECOND_REASON: &str = "Basal insulin started";

/// One app for the file, no TOTP, and strict redaction so the export is the redacted one.
fn app() -> &'static TestApp {
    static APP: OnceLock<TestApp> = OnceLock::new();
    APP.get_or_init(|| {
        TestApp::start_with_variables(&[("mfa_required_roles", ""), ("audit_redaction", "strict")]).expect("app loads")
    })
}

async fn correct(token: &str, body: Value) -> Reply {
    app().send_as("PUT", "/api/patients/p-1001/records", token, Some(&body)).await
}

/// The outcome events of the corrections, in chain order.
fn corrections() -> Vec<Value> {
    let sql = format!(
        "SELECT event FROM audit_events WHERE action = '{UPDATE}' AND reason != 'pending_forward' AND status = 200 \
         ORDER BY rowid"
    );
    app().query_strings("audit.db", &sql).iter().map(|e| serde_json::from_str(e).expect("event JSON")).collect()
}

#[tokio::test]
async fn corrections_keep_every_version_and_the_audit_holds_digests_not_text() {
    let doctor = app().token(DR_GREY).await;
    let first = correct(&doctor, json!({"entry_id": "e-1", "content": SECOND, "reason": FIRST_REASON})).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!((first.json()["from_version"].as_i64(), first.json()["version"].as_i64()), (Some(1), Some(2)));
    let second = correct(&doctor, json!({"entry_id": "e-1", "content": THIRD, "reason": SECOND_REASON})).await;
    assert_eq!(second.status, 200, "{}", second.body);
    assert_eq!(second.json()["version"], 3);
    // A correction states why: without a reason, or an empty one, it is refused and changes nothing.
    for bad in [json!({"entry_id": "e-1", "content": "x"}), json!({"entry_id": "e-1", "content": "x", "reason": " "})] {
        let refused = correct(&doctor, bad.clone()).await;
        assert_eq!(refused.status, 400, "{bad}: {}", refused.body);
    }

    let history = app().send_as("GET", "/api/patients/p-1001/records/e-1/history", &doctor, None).await;
    assert_eq!(history.status, 200, "{}", history.body);
    let history = history.json();
    assert_eq!((history["entry_id"].as_str(), history["kind"].as_str()), (Some("e-1"), Some("diagnosis")));
    let versions: Vec<_> = history["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .map(|v| (v["version"].as_i64(), v["content"].as_str(), v["author"].as_str(), v["reason"].as_str()))
        .collect();
    let grey = Some("u-dr-grey");
    assert_eq!(
        versions,
        [
            (Some(3), Some(THIRD), grey, Some(SECOND_REASON)),
            (Some(2), Some(SECOND), grey, Some(FIRST_REASON)),
            (Some(1), Some(SEEDED), grey, None),
        ]
    );
    let times: Vec<_> =
        history["versions"].as_array().expect("versions").iter().map(|v| v["created_at"].as_i64()).collect();
    assert!(times[0] >= times[1] && times[1] > times[2], "{times:?}");
    // The patient reads the same history of their own record; the record shows the newest.
    let alice = app().token(ALICE).await;
    let own = app().send_as("GET", "/api/patients/p-1001/records/e-1/history", &alice, None).await;
    assert_eq!(own.status, 200, "{}", own.body);
    assert_eq!(own.json()["versions"], history["versions"]);
    let record = app().send_as("GET", "/api/patients/p-1001/records", &alice, None).await.json();
    let entry = record["entries"].as_array().expect("entries").iter().find(|e| e["entry_id"] == "e-1").cloned();
    assert_eq!(entry.map(|e| (e["content"].clone(), e["version"].clone())), Some((json!(THIRD), json!(3))));
    // Her export holds the earlier versions too: everything held about her.
    let export = app().send_as("GET", "/api/patients/p-1001/export", &alice, None).await;
    assert_eq!(export.status, 200, "{}", export.body);
    let earlier: Vec<_> = export.json()["record_entry_versions"]
        .as_array()
        .expect("earlier versions")
        .iter()
        .filter(|v| v["entry_id"] == "e-1")
        .map(|v| {
            (v["version"].as_i64(), v["content"].as_str().map(str::to_owned), v["reason"].as_str().map(str::to_owned))
        })
        .collect();
    assert_eq!(
        earlier,
        [(Some(1), Some(SEEDED.into()), None), (Some(2), Some(SECOND.into()), Some(FIRST_REASON.into()))]
    );

    // Each correction's audit event: the entry, both versions, two digests, and no text.
    let events = corrections();
    let changes: Vec<&Value> = events.iter().map(|e| &e["record_change"]).collect();
    assert_eq!(changes.len(), 2, "{events:?}");
    for (change, (from, to)) in changes.iter().zip([(1, 2), (2, 3)]) {
        assert_eq!((change["entry_id"].as_str(), change["from_version"].as_i64()), (Some("e-1"), Some(from)));
        assert_eq!(change["to_version"].as_i64(), Some(to));
        for digest in [&change["old_digest"], &change["new_digest"]] {
            let digest = digest.as_str().expect("digest");
            assert!(digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()), "{digest}");
        }
        assert_ne!(change["old_digest"], change["new_digest"]);
    }
    assert_eq!(changes[0]["new_digest"], changes[1]["old_digest"], "version 2's digest in both events");
    assert!(events.iter().all(|e| e["resource"] == "/api/patients/p-1001/records" && e["actor_sub"] == "u-dr-grey"));
    // Reads carry no change.
    let read = app().query_strings(
        "audit.db",
        "SELECT event FROM audit_events WHERE action LIKE 'GET %/history' ORDER BY rowid LIMIT 1",
    );
    assert!(!read.first().expect("the history read is audited").contains("record_change"));

    let texts = [SEEDED, SECOND, THIRD, FIRST_REASON, SECOND_REASON];
    // The raw files of the audit database (the WAL too): never the clear text.
    for entry in std::fs::read_dir(app().state.path()).expect("state directory") {
        let path = entry.expect("entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        if !name.starts_with("audit.db") {
            continue;
        }
        // SQLite deletes its journal and WAL files as it goes: one listed a moment ago may be gone.
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && name != "audit.db" => continue,
            Err(e) => panic!("audit file {name}: {e}"),
        };
        for text in texts {
            let found = bytes.windows(text.len()).any(|w| w == text.as_bytes());
            assert!(!found, "{text:?} in {name}");
        }
    }
    // Nor the export (redacted under `strict`), which keeps the change; the chain verifies.
    let admin = app().token(ADMIN).await;
    let export = app().send_as("GET", "/api/admin/audit/export?patient=p-1001", &admin, None).await;
    assert_eq!(export.status, 200, "{}", export.body);
    for text in texts {
        assert!(!export.body.contains(text), "{text:?} in the export");
    }
    let exported: Vec<Value> = export
        .body
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|e| e["event"]["record_change"].is_object() || e["record_change"].is_object())
        .collect();
    assert_eq!(exported.len(), 2, "both changes exported:\n{}", export.body);
    let verify = app().send_as("GET", "/api/admin/audit/verify", &admin, None).await;
    assert_eq!(verify.status, 200, "{}", verify.body);
    assert_eq!(verify.json()["intact"], true, "{}", verify.body);
}

#[tokio::test]
async fn history_is_read_as_the_record_is_and_refused_to_everyone_else() {
    let path = "/api/patients/p-1001/records/e-1/history";
    let bob = app().token(BOB).await;
    assert_eq!(app().send_as("GET", path, &bob, None).await.status, 403, "another patient");
    // A doctor of the tenant who is not on Alice's care team.
    let body = json!({ "tenant_id": "demo-hospital", "username": "dr-house", "role": "doctor",
        "password": "history-pass-2026" });
    let created = app().send_as("POST", "/auth/admin/users", OPERATOR_TOKEN, Some(&body)).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let house = app().token(("dr-house", "history-pass-2026")).await;
    assert_eq!(app().send_as("GET", path, &house, None).await.status, 403, "a doctor not on the care team");
    let lab = app().token(LAB).await;
    assert_eq!(app().send_as("GET", path, &lab, None).await.status, 403, "a lab");
    let insurer = app().client_token(ACME).await;
    assert_eq!(app().send_as("GET", path, &insurer, None).await.status, 403, "an insurer");
    let admin = app().token(ADMIN).await;
    assert_eq!(app().send_as("GET", path, &admin, None).await.status, 403, "the admin, who reads no clinical data");
    // Dr Grey may read Alice's record, but e-3 is Bob's entry: not found through Alice's record.
    let doctor = app().token(DR_GREY).await;
    assert_eq!(app().send_as("GET", "/api/patients/p-1001/records/e-3/history", &doctor, None).await.status, 404);
    let bobs = "/api/patients/p-1002/records/e-3/history";
    assert_eq!(app().send_as("GET", bobs, &doctor, None).await.status, 403);
    // Under break-glass he may, as he may read the record, and the read is flagged.
    let reason = json!({"reason": "Unconscious in ED, no care team on shift"});
    let glass = app().send_as("POST", "/api/patients/p-1002/break-glass", &doctor, Some(&reason)).await;
    assert_eq!(glass.status, 201, "{}", glass.body);
    let read = app().send_as("GET", bobs, &doctor, None).await;
    assert_eq!(read.status, 200, "{}", read.body);
    assert_eq!(read.json()["versions"][0]["content"], "Essential hypertension (I10)");
    let reasons = app().query_strings(
        "audit.db",
        "SELECT reason FROM audit_events WHERE action LIKE 'GET %/history' AND outcome = 'deny' ORDER BY rowid",
    );
    let allowed = app().query_strings(
        "audit.db",
        "SELECT reason FROM audit_events WHERE action LIKE 'GET %/history' AND patient_id = 'p-1002' AND outcome = 'allow'",
    );
    assert_eq!(allowed, ["break_glass"]);
    for reason in ["not_on_care_team", "no_such_entry", "not_own_record"] {
        assert!(reasons.iter().any(|r| r == reason), "{reason} in {reasons:?}");
    }
}
