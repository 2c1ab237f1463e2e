//! `healthctl patients register|link|import` against the app served over real HTTP, with the
//! tenant admin's token (`HEALTHCTL_ACCESS_TOKEN`): an import registers and links what it can,
//! reports the rows it cannot and exits 1; run again, it changes nothing it did before.

use std::process::Output;

use crate::{as_user, new_user};
use health_e2e::{ADMIN, TestApp};
use serde_json::{Value, json};

fn report(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)))
}

#[tokio::test(flavor = "multi_thread")]
async fn an_import_registers_and_links_what_it_can_reports_the_rest_and_can_run_again() {
    let app = TestApp::start(|_| {}).expect("app loads");
    let url = app.app.url().await.expect("served over HTTP");
    let admin = app.token(ADMIN).await;
    let cy = new_user(&app, &admin, "cy-import", "patient", "cy-import-pass-2026").await;

    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("patients.csv");
    let csv = format!(
        "patient_id,given_name,family_name,birth_date,user_id\n\
         p-4001,Ada,\"Vane, Jr.\",1970-01-02,\n\
         p-4002,Bo,Lee,1971-02-30,\n\
         p-4003,Cy,Ng,1972-03-04,{cy}\n\
         p-4004,Di,Oz,1973-04-05,u-dr-grey\n"
    );
    std::fs::write(&file, csv).expect("writes the file");
    let path = file.to_str().expect("utf-8 path");

    let first = as_user(&url, &admin, &["patients", "import", path]).await;
    assert_eq!(first.status.code(), Some(1), "{}", String::from_utf8_lossy(&first.stderr));
    let first = report(&first);
    assert_eq!((&first["rows"], &first["created"], &first["linked"]), (&json!(4), &json!(3), &json!(1)), "{first}");
    let failed: Vec<_> =
        first["errors"].as_array().expect("errors").iter().map(|e| (e["line"].clone(), e["status"].clone())).collect();
    assert_eq!(failed, [(json!(3), json!(400)), (json!(5), json!(400))], "{first}");

    let second = report(&as_user(&url, &admin, &["patients", "import", path]).await);
    assert_eq!(
        (&second["created"], &second["unchanged"], &second["linked"]),
        (&json!(0), &json!(3), &json!(1)),
        "{second}"
    );

    let cy_token = app.token(("cy-import", "cy-import-pass-2026")).await;
    let own = app.get_with("/api/patients/p-4003", &cy_token).await;
    assert_eq!((own.status, &own.json()["patient"]["family_name"]), (200, &json!("Ng")), "{}", own.body);

    let registered = as_user(
        &url,
        &admin,
        &["patients", "register", "--given-name", "Ed", "--family-name", "Fox", "--birth-date", "1980-01-01"],
    )
    .await;
    assert!(registered.status.success(), "{}", String::from_utf8_lossy(&registered.stderr));
    let id = report(&registered)["patient_id"].as_str().expect("id").to_owned();
    let link = as_user(&url, &admin, &["patients", "link", "--patient", &id, "--user", &cy]).await;
    assert_eq!(link.status.code(), Some(1), "one record per account: {}", String::from_utf8_lossy(&link.stdout));
}
