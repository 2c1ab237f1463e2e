//! Data protection end to end (ARCHITECTURE.md §7–8): PHI is encrypted at rest and bound to its
//! row, data keys rotate without losing old rows, erasure shreds a patient's keys, the audit
//! chain detects an altered row, and a failed audit write fails the request with no data.

use health_e2e::{ADMIN, ALICE, BOB, DR_GREY, TestApp};

fn records_db(app: &TestApp) -> rusqlite::Connection {
    rusqlite::Connection::open(app.state.path().join("records.db")).expect("records db")
}

#[tokio::test]
async fn phi_is_encrypted_at_rest_and_a_value_moved_to_another_row_does_not_open() {
    let app = TestApp::start(|_| {}).expect("app");
    let alice = app.token(ALICE).await;
    assert_eq!(app.get_with("/api/patients/p-1001/records", &alice).await.status, 200);
    // Nothing readable in the database file itself.
    let bytes = std::fs::read(app.state.path().join("records.db")).expect("file");
    let text = String::from_utf8_lossy(&bytes);
    for phi in ["Andersen", "E11.9", "Metformin", "1984-03-12", "Castillo", "J45.30"] {
        assert!(!text.contains(phi), "{phi} stored in clear");
    }
    let stored = app.query_strings("records.db", "SELECT content FROM entry WHERE entry_id = 'e-1'");
    assert!(stored[0].starts_with("dk-") && stored[0].contains(":v1."), "key id stored with the value: {}", stored[0]);
    // An insider copies Alice's diagnosis over her medication entry: it must not open there.
    let db = records_db(&app);
    db.execute(
        "UPDATE entry SET content = (SELECT content FROM entry WHERE entry_id = 'e-1') WHERE entry_id = 'e-2'",
        [],
    )
    .expect("tamper");
    let read = app.get_with("/api/patients/p-1001/records", &alice).await;
    assert_eq!(read.status, 500, "{}", read.body);
    assert!(!read.body.contains("E11.9") && !read.body.contains("Andersen"));
    let reason = app.query_strings(
        "audit.db",
        "SELECT reason FROM audit_events WHERE action LIKE 'GET %' ORDER BY rowid DESC LIMIT 1",
    );
    assert_eq!(reason, ["phi_decrypt_failed"]);
    // Moved to another patient's row, the same value fails too.
    db.execute(
        "UPDATE entry SET content = (SELECT content FROM entry WHERE entry_id = 'e-1') WHERE entry_id = 'e-3'",
        [],
    )
    .expect("tamper");
    let bob = app.token(BOB).await;
    assert_eq!(app.get_with("/api/patients/p-1002/records", &bob).await.status, 500);
}

#[tokio::test]
async fn data_keys_rotate_for_new_writes_while_old_rows_stay_readable() {
    let app = TestApp::start(|_| {}).expect("app");
    let doctor = app.token(DR_GREY).await;
    assert_eq!(app.get_with("/api/patients/p-1001/records", &doctor).await.status, 200);
    let old_key = app.query_strings("records.db", "SELECT key_id FROM data_key");
    assert_eq!(old_key.len(), 1);
    let admin = app.token(ADMIN).await;
    let rotated =
        app.send("POST", "/api/admin/data-keys/rotate", &[("authorization", &format!("Bearer {admin}"))], "").await;
    assert_eq!(rotated.status, 201, "{}", rotated.body);
    let new_key = rotated.json()["data_key_id"].as_str().expect("key id").to_owned();
    assert_ne!(new_key, old_key[0]);
    let body = serde_json::json!({"kind": "note", "content": "Foot exam normal"}).to_string();
    let headers = [("authorization", format!("Bearer {doctor}")), ("content-type", "application/json".into())];
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let added = app.send("POST", "/api/patients/p-1001/records", &headers, &body).await;
    assert_eq!(added.status, 201, "{}", added.body);
    let entry = added.json()["entry_id"].as_str().expect("entry").to_owned();
    let stored = app.query_strings("records.db", &format!("SELECT content FROM entry WHERE entry_id = '{entry}'"));
    assert!(stored[0].starts_with(&format!("{new_key}:")), "new writes use the newest key: {}", stored[0]);
    let old = app.query_strings("records.db", "SELECT content FROM entry WHERE entry_id = 'e-1'");
    assert!(old[0].starts_with(&format!("{}:", old_key[0])));
    let record = app.get_with("/api/patients/p-1001/records", &doctor).await;
    assert_eq!(record.status, 200, "{}", record.body);
    assert!(record.body.contains("E11.9") && record.body.contains("Foot exam normal"));
    // Only admins rotate.
    let refused =
        app.send("POST", "/api/admin/data-keys/rotate", &[("authorization", &format!("Bearer {doctor}"))], "").await;
    assert_eq!(refused.status, 403);
}

#[tokio::test]
async fn erasure_shreds_a_patients_keys_so_nothing_of_theirs_decrypts() {
    let app = TestApp::start(|_| {}).expect("app");
    let bob = app.token(BOB).await;
    assert_eq!(app.get_with("/api/patients/p-1002/records", &bob).await.status, 200);
    let admin = app.token(ADMIN).await;
    let auth = [("authorization", format!("Bearer {admin}"))];
    let auth: Vec<(&str, &str)> = auth.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let erased = app.send("DELETE", "/api/admin/patients/p-1002", &auth, "").await;
    assert_eq!(erased.status, 200, "{}", erased.body);
    assert_eq!(erased.json()["erased"], true);
    assert!(!erased.body.contains("Berg"));
    // The ciphertext is still there; the keys are not.
    assert_eq!(app.query_strings("records.db", "SELECT entry_id FROM entry WHERE patient_id = 'p-1002'").len(), 1);
    assert!(
        app.query_strings("records.db", "SELECT data_key_id FROM patient_key WHERE patient_id = 'p-1002'").is_empty()
    );
    assert!(
        !app.query_strings("records.db", "SELECT data_key_id FROM patient_key WHERE patient_id = 'p-1001'").is_empty()
    );
    // Bob's account is disabled and his sessions end with the erasure (issue 14, item 13).
    assert_eq!(app.get_with("/api/patients/p-1002/records", &bob).await.status, 401);
    assert_eq!(app.get_with("/api/patients/p-1002", &bob).await.status, 401);
    assert_eq!(app.login(BOB).await.status, 401);
    // No break-glass opens for an erased patient, nor can new PHI be written for them.
    let doctor = app.token(DR_GREY).await;
    let headers = [("authorization", format!("Bearer {doctor}")), ("content-type", "application/json".into())];
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let glass =
        app.send("POST", "/api/patients/p-1002/break-glass", &headers, r#"{"reason":"Erased patient check"}"#).await;
    assert_eq!(glass.status, 404, "{}", glass.body);
    // Carol is on Dr Grey's care team: once erased, he can neither read nor write her record.
    assert_eq!(app.send("DELETE", "/api/admin/patients/p-1003", &auth, "").await.status, 200);
    assert_eq!(app.get_with("/api/patients/p-1003/records", &doctor).await.status, 404);
    let write = app.send("POST", "/api/patients/p-1003/records", &headers, r#"{"kind":"note","content":"x"}"#).await;
    assert_eq!(write.status, 404, "{}", write.body);
    assert!(
        app.query_strings("records.db", "SELECT data_key_id FROM patient_key WHERE patient_id = 'p-1003'").is_empty()
    );
    // Alice is untouched; the erasure is audited; erasing again is harmless.
    let alice = app.token(ALICE).await;
    assert_eq!(app.get_with("/api/patients/p-1001/records", &alice).await.status, 200);
    let audited = app.query_strings(
        "audit.db",
        "SELECT reason FROM audit_events WHERE action = 'DELETE /api/admin/patients/{id}' AND patient_id = 'p-1002'",
    );
    // The intent is written before the erasure is forwarded, its outcome after (issue 14, 11).
    assert_eq!(audited, ["pending_forward", "admin_erasure"]);
    let again = app.send("DELETE", "/api/admin/patients/p-1002", &auth, "").await;
    assert_eq!((again.status, again.json()["already_erased"].as_bool()), (200, Some(true)));
    assert_eq!(app.send("DELETE", "/api/admin/patients/p-9999", &auth, "").await.status, 404);
    let patient_refused =
        app.send("DELETE", "/api/admin/patients/p-1001", &[("authorization", &format!("Bearer {alice}"))], "").await;
    assert_eq!(patient_refused.status, 403);
}

#[tokio::test]
async fn audit_verification_detects_an_altered_row() {
    let app = TestApp::start(|_| {}).expect("app");
    let alice = app.token(ALICE).await;
    app.get_with("/api/patients/p-1001/records", &alice).await;
    app.get_with("/api/patients/p-1002/records", &alice).await;
    let admin = app.token(ADMIN).await;
    let intact = app.get_with("/api/admin/audit/verify", &admin).await.json();
    assert_eq!(intact["intact"], true, "{intact}");
    // Someone with file access drops the guard and turns a denial into an allowed read.
    let db = rusqlite::Connection::open(app.state.path().join("audit.db")).expect("audit db");
    db.execute("DROP TRIGGER audit_no_update", []).expect("drop trigger");
    let seq: i64 = db
        .query_row(
            "SELECT seq FROM audit_events WHERE tenant_id = 'demo-hospital' AND outcome = 'deny' ORDER BY seq LIMIT 1",
            [],
            |r| r.get(0),
        )
        .expect("a denial");
    db.execute(
        "UPDATE audit_events SET event = replace(event, '\"outcome\":\"deny\"', '\"outcome\":\"allow\"')
         WHERE tenant_id = 'demo-hospital' AND seq = ?1",
        [seq],
    )
    .expect("alter");
    let broken = app.get_with("/api/admin/audit/verify", &admin).await.json();
    assert_eq!(broken["intact"], false, "{broken}");
    assert_eq!(broken["broken_at"], seq);
}

#[tokio::test]
async fn a_failed_audit_write_fails_the_request_and_returns_no_data() {
    let app = TestApp::start(|_| {}).expect("app");
    let alice = app.token(ALICE).await;
    assert_eq!(app.get_with("/api/patients/p-1001/records", &alice).await.status, 200);
    let db = rusqlite::Connection::open(app.state.path().join("audit.db")).expect("audit db");
    db.execute_batch(
        "CREATE TRIGGER audit_down BEFORE INSERT ON audit_events BEGIN SELECT RAISE(ABORT, 'disk full'); END",
    )
    .expect("break the audit log");
    let reply = app.get_with("/api/patients/p-1001/records", &alice).await;
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert_eq!(reply.header("content-type"), "application/problem+json");
    for phi in ["Andersen", "E11.9", "Metformin"] {
        assert!(!reply.body.contains(phi), "{phi} returned without an audit record");
    }
    db.execute_batch("DROP TRIGGER audit_down").expect("repair");
    assert_eq!(app.get_with("/api/patients/p-1001/records", &alice).await.status, 200);
}
