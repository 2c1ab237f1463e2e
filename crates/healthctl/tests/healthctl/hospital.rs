//! Issue 16, "done when": a tenant created with `healthctl` on a platform started without the
//! demo tenant becomes a working hospital through the public API and `healthctl` alone. The
//! operator creates the tenant and its first admin; the admin (with TOTP, as every staff role
//! needs by default) creates doctors, a nurse, a receptionist, a pharmacist, a lab technician and
//! the patients' accounts, imports the patients with their accounts linked, builds the care
//! team and registers the lab. Then each role does its day's work and is refused what is not
//! its own: a diagnosis and its correction with history, vital signs, the medication list, a
//! walk-in registered and admitted, a lab order worked and resulted; and the patient reads who
//! accessed her record and takes everything home. It runs on the host and on real Spin.

use std::process::{Command, Output};

use crate::as_user;
use health_e2e::{OPERATOR_TOKEN, TestApp};
use serde_json::{Value, json};

const TENANT: &str = "st-brigid";
const ROOT: (&str, &str) = ("root", "st-brigid-first-admin-2026");

/// `healthctl` as the platform operator, with `password` as `HEALTHCTL_PASSWORD`.
async fn operator(url: &str, args: &[&str], password: Option<&str>) -> Output {
    let (url, password) = (url.to_owned(), password.map(str::to_owned));
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_healthctl"));
        cmd.env("HEALTHCTL_URL", url).env("HEALTH_OPERATOR_TOKEN", OPERATOR_TOKEN).env_remove("HEALTHCTL_PASSWORD");
        if let Some(password) = password {
            cmd.env("HEALTHCTL_PASSWORD", password);
        }
        cmd.args(args).output().expect("healthctl runs")
    })
    .await
    .expect("join")
}

/// The JSON `healthctl` printed, failing the test if it did not succeed.
fn succeeded(output: &Output) -> Value {
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_tenant_becomes_a_working_hospital_through_the_api_and_healthctl() {
    let app = TestApp::start_with_variables(&[("demo_tenant", "false")]).expect("app loads");
    let url = app.app.url().await.expect("served over HTTP");

    // An empty platform: no demo tenant, so no published password opens anything.
    assert_eq!(app.login(("admin", "admin-demo-2026")).await.status, 401);

    // The operator creates the tenant and its first admin.
    succeeded(&operator(&url, &["tenants", "create", TENANT], None).await);
    let root = ["users", "create", "--tenant", TENANT, "--username", ROOT.0, "--role", "admin"];
    succeeded(&operator(&url, &root, Some(ROOT.1)).await);
    let admin = app.token_in(TENANT, ROOT).await;

    // The admin creates the staff and the patients' accounts through the API.
    let people = [
        ("dr-okafor", "doctor"),
        ("dr-maas", "doctor"),
        ("nurse-lind", "nurse"),
        ("rec-park", "receptionist"),
        ("pharm-ito", "pharmacist"),
        ("tech-osei", "lab"),
        ("ada-lowe", "patient"),
        ("ben-hart", "patient"),
    ];
    let mut ids = std::collections::HashMap::new();
    for (username, role) in people {
        let password = format!("{username}-password-2026");
        let user = json!({ "username": username, "role": role, "password": password });
        let created = app.expect_as(201, "POST", "/auth/admin/users", &admin, Some(&user)).await;
        ids.insert(username, created["id"].as_str().expect("id").to_owned());
    }
    let password = |username: &str| format!("{username}-password-2026");
    let login = async |username: &'static str| app.token_in(TENANT, (username, &password(username))).await;

    // Patients come from the hospital's file, linked to their accounts; one bad row is reported.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("patients.csv");
    let csv = format!(
        "patient_id,given_name,family_name,birth_date,user_id\n\
         p-7001,Ada,Lowe,1961-07-14,{}\n\
         p-7002,Ben,Hart,1990-02-28,{}\n\
         p-7003,Cal,Ruiz,1990-02-30,\n",
        ids["ada-lowe"], ids["ben-hart"]
    );
    std::fs::write(&file, csv).expect("writes the file");
    let import = as_user(&url, &admin, &["patients", "import", file.to_str().expect("utf-8")]).await;
    assert_eq!(import.status.code(), Some(1), "the bad date is reported: {}", String::from_utf8_lossy(&import.stderr));
    let report: Value = serde_json::from_slice(&import.stdout).expect("report");
    assert_eq!((&report["created"], &report["linked"]), (&json!(2), &json!(2)), "{report}");

    // Dr Okafor, Nurse Lind and Pharmacist Ito treat Ada; Dr Maas treats nobody yet.
    let okafor = ids["dr-okafor"].clone();
    for member in ["dr-okafor", "nurse-lind", "pharm-ito"] {
        let team = ["care-team", "add", "--patient", "p-7001", "--member", &ids[member], "--reason", "admission"];
        succeeded(&as_user(&url, &admin, &team).await);
    }

    // The hospital's laboratory, with its technician.
    succeeded(
        &as_user(&url, &admin, &["labs", "register", "--lab", "lab-main", "--name", "St Brigid Pathology"]).await,
    );
    succeeded(&as_user(&url, &admin, &["labs", "attach", "--lab", "lab-main", "--user", &ids["tech-osei"]]).await);

    let dr_okafor = login("dr-okafor").await;
    let dr_maas = login("dr-maas").await;
    let nurse = login("nurse-lind").await;
    let reception = login("rec-park").await;
    let pharmacist = login("pharm-ito").await;
    let tech = login("tech-osei").await;
    let ada = login("ada-lowe").await;
    let ben = login("ben-hart").await;

    // The doctor writes a diagnosis, then corrects it; nothing is lost.
    let entry = json!({ "kind": "diagnosis", "content": "Community-acquired pneumonia, left lower lobe" });
    let written = app.expect_as(201, "POST", "/api/patients/p-7001/records", &dr_okafor, Some(&entry)).await;
    let entry_id = written["entry_id"].as_str().expect("entry_id").to_owned();
    let correction = json!({
        "entry_id": entry_id,
        "content": "Community-acquired pneumonia, right lower lobe",
        "reason": "Side transcribed wrongly; confirmed on the chest X-ray"
    });
    app.expect_as(200, "PUT", "/api/patients/p-7001/records", &dr_okafor, Some(&correction)).await;
    let history_path = format!("/api/patients/p-7001/records/{entry_id}/history");
    for reader in [&dr_okafor, &ada] {
        let history = app.expect_as(200, "GET", &history_path, reader, None).await;
        let contents: Vec<&str> =
            history["versions"].as_array().expect("versions").iter().filter_map(|v| v["content"].as_str()).collect();
        assert_eq!(
            contents,
            ["Community-acquired pneumonia, right lower lobe", "Community-acquired pneumonia, left lower lobe"]
        );
    }

    // The nurse records vital signs but writes no diagnosis; the pharmacist reads the medication
    // list and nothing else of the record.
    let vitals = json!({ "kind": "observation", "content": "T 38.4 C, SpO2 93% on air, RR 24" });
    app.expect_as(201, "POST", "/api/patients/p-7001/records", &nurse, Some(&vitals)).await;
    let diagnosis = json!({ "kind": "diagnosis", "content": "Sepsis" });
    app.expect_as(403, "POST", "/api/patients/p-7001/records", &nurse, Some(&diagnosis)).await;
    let medication = json!({ "kind": "medication", "content": "Amoxicillin 1 g three times daily, 5 days" });
    app.expect_as(201, "POST", "/api/patients/p-7001/records", &dr_okafor, Some(&medication)).await;
    let seen = app.expect_as(200, "GET", "/api/patients/p-7001/records", &pharmacist, None).await;
    let kinds: Vec<&str> =
        seen["entries"].as_array().expect("entries").iter().filter_map(|e| e["kind"].as_str()).collect();
    assert_eq!(kinds, ["medication"], "{seen}");
    app.expect_as(200, "GET", "/api/patients/p-7001/records", &nurse, None).await;

    // The front desk registers a walk-in, fixes her name and admits her to Dr Okafor's team,
    // and reads no clinical content.
    let walk_in =
        json!({ "patient_id": "p-7004", "given_name": "Dee", "family_name": "Sims", "birth_date": "1955-09-09" });
    app.expect_as(201, "POST", "/api/admin/patients", &reception, Some(&walk_in)).await;
    let fixed = json!({ "given_name": "Dee", "family_name": "Simms", "birth_date": "1955-09-09" });
    app.expect_as(200, "PUT", "/api/patients/p-7004", &reception, Some(&fixed)).await;
    let admit = format!("/api/patients/p-7004/care-team/{okafor}");
    app.expect_as(201, "POST", &admit, &reception, Some(&json!({ "reason": "encounter" }))).await;
    let demographics = app.expect_as(200, "GET", "/api/patients/p-7004", &dr_okafor, None).await;
    assert_eq!(demographics["patient"]["family_name"], json!("Simms"), "{demographics}");
    app.expect_as(403, "GET", "/api/patients/p-7001/records", &reception, None).await;

    // A lab order: the doctor orders, the lab works its queue, the result reaches doctor and patient.
    let order = ["orders", "create", "--patient", "p-7001", "--lab", "lab-main", "--test-code", "600-7"];
    let order = succeeded(&as_user(&url, &dr_okafor, &order).await);
    let order_id = order["order_id"].as_str().expect("order_id").to_owned();
    app.expect_as(
        403,
        "POST",
        "/api/patients/p-7001/lab-orders",
        &dr_maas,
        Some(&json!({ "lab_id": "lab-main", "test_code": "600-7" })),
    )
    .await;
    let queue = succeeded(&as_user(&url, &tech, &["orders", "queue"]).await);
    let queued: Vec<&str> =
        queue["orders"].as_array().expect("orders").iter().filter_map(|o| o["order_id"].as_str()).collect();
    assert_eq!(queued, [order_id.as_str()], "{queue}");
    let result = [
        "orders",
        "result",
        "--order",
        &order_id,
        "--code",
        "600-7",
        "--value",
        "Streptococcus pneumoniae",
        "--unit",
        "organism",
    ];
    succeeded(&as_user(&url, &tech, &result).await);
    for reader in [&dr_okafor, &ada] {
        let results = app.expect_as(200, "GET", "/api/patients/p-7001/lab-results", reader, None).await;
        let values: Vec<&str> = results["lab_results"]
            .as_array()
            .expect("lab_results")
            .iter()
            .filter_map(|r| r["value"].as_str())
            .collect();
        assert_eq!(values, ["Streptococcus pneumoniae"], "{results}");
    }

    // Whoever is not on Ada's care team, or not Ada, reads nothing of hers.
    for outsider in [&dr_maas, &ben, &admin, &tech] {
        app.expect_as(403, "GET", "/api/patients/p-7001/records", outsider, None).await;
        app.expect_as(403, "GET", &history_path, outsider, None).await;
    }

    // Ada reads who accessed her record and under which rule, and takes everything home.
    let log = succeeded(&as_user(&url, &ada, &["patients", "access-log", "--patient", "p-7001"]).await);
    let entries = log["entries"].as_array().expect("entries");
    let by_okafor = |rule: &str| entries.iter().any(|e| e["actor"]["id"] == json!(okafor) && e["rule"] == json!(rule));
    assert!(by_okafor("care_team"), "{log}");
    assert!(entries.iter().any(|e| e["outcome"] == json!("deny")), "refused attempts are listed: {log}");
    let export = succeeded(&as_user(&url, &ada, &["patients", "export", "--patient", "p-7001"]).await);
    assert_eq!(export["demographics"]["family_name"], json!("Lowe"), "{export}");
    assert_eq!(export["record_entries"].as_array().map(Vec::len), Some(3), "{export}");
    assert_eq!(export["lab_results"].as_array().map(Vec::len), Some(1), "{export}");
    assert_eq!(export["record_entry_versions"].as_array().map(Vec::len), Some(1), "{export}");

    // Every step above is in the tenant's intact audit chain.
    let verified = app.expect_as(200, "GET", "/api/admin/audit/verify", &admin, None).await;
    assert_eq!(verified["intact"], json!(true), "{verified}");
}
