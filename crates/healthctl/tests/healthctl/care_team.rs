//! `healthctl care-team add|end|list|patients` against the app served over real HTTP, with a
//! signed-in user's token (`HEALTHCTL_ACCESS_TOKEN`): the tenant admin adds and ends Dr Grey's
//! membership of Bob's care team, the doctor lists their patients, and refusals exit 1.

use std::process::Output;

use crate::as_user;
use health_e2e::{ADMIN, ALICE, DR_GREY, TestApp};
use serde_json::Value;

fn stdout_json(output: &Output) -> Value {
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)))
}

fn patients(list: &Value) -> Vec<&str> {
    list["patients"].as_array().expect("patients").iter().filter_map(|p| p["patient_id"].as_str()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_adds_and_ends_a_membership_and_the_doctor_lists_their_patients() {
    let app = TestApp::start(|_| {}).expect("app loads");
    let url = app.app.url().await.expect("served over HTTP");
    let (admin, doctor) = (app.token(ADMIN).await, app.token(DR_GREY).await);
    let bob = ["--patient", "p-1002", "--member", "u-dr-grey"];

    let before = stdout_json(&as_user(&url, &doctor, &["care-team", "patients"]).await);
    assert_eq!(patients(&before), ["p-1001", "p-1003"]);
    let add = [&["care-team", "add"][..], &bob, &["--reason", "referral"]].concat();
    let added = stdout_json(&as_user(&url, &admin, &add).await);
    assert_eq!((added["member"].as_str(), added["active"].as_bool()), (Some("u-dr-grey"), Some(true)));
    assert_eq!(app.get_with("/api/patients/p-1002/records", &doctor).await.status, 200);
    let after = stdout_json(&as_user(&url, &doctor, &["care-team", "patients"]).await);
    assert_eq!(patients(&after), ["p-1001", "p-1002", "p-1003"]);
    let team = stdout_json(&as_user(&url, &doctor, &["care-team", "list", "--patient", "p-1002"]).await);
    assert_eq!(team["members"][0]["reason"], "referral");

    let end = [&["care-team", "end"][..], &bob].concat();
    let ended = stdout_json(&as_user(&url, &admin, &end).await);
    assert_eq!(ended["ended"].as_array().map(Vec::len), Some(1));
    assert_eq!(app.get_with("/api/patients/p-1002/records", &doctor).await.status, 403);

    // Refusals are exit 1 with the problem on stderr: nothing left to end, a patient adding.
    assert_eq!(as_user(&url, &admin, &end).await.status.code(), Some(1));
    let alice = app.token(ALICE).await;
    assert_eq!(as_user(&url, &alice, &add).await.status.code(), Some(1));
    assert_eq!(as_user(&url, &alice, &["care-team", "patients"]).await.status.code(), Some(1));
}
