//! `healthctl labs register|list|attach|detach` and `healthctl orders create|list|queue|result`
//! against the app served over real HTTP, each with a signed-in user's token
//! (`HEALTHCTL_ACCESS_TOKEN`): the tenant admin registers a lab and attaches a new lab user, Dr
//! Grey orders a test for Alice from it, the lab user works it, Alice reads the result; the
//! refusals exit 1, and ids that do not validate exit 2 before anything is sent.

use std::process::Output;

use crate::{as_user, new_user};
use health_e2e::{ADMIN, ALICE, DR_GREY, TestApp};
use serde_json::{Value, json};

fn stdout_json(output: &Output) -> Value {
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_sets_up_a_lab_a_doctor_orders_from_it_and_its_member_results_the_order() {
    let app = TestApp::start(|_| {}).expect("app loads");
    let url = app.app.url().await.expect("served over HTTP");
    let (admin, doctor) = (app.token(ADMIN).await, app.token(DR_GREY).await);
    let tech = new_user(&app, &admin, "ctl-lab-tech", "lab", "ctl-lab-pass-2026").await;
    let lab = app.token(("ctl-lab-tech", "ctl-lab-pass-2026")).await;

    let register = ["labs", "register", "--lab", "lab-ctl", "--name", "Control Lab"];
    assert_eq!(stdout_json(&as_user(&url, &admin, &register).await)["lab_id"], "lab-ctl");
    let again = as_user(&url, &admin, &["labs", "register", "--lab", "lab-ctl", "--name", "Another"]).await;
    assert_eq!(again.status.code(), Some(1), "409 under another name");
    let attach = ["labs", "attach", "--lab", "lab-ctl", "--user", &tech];
    assert_eq!(stdout_json(&as_user(&url, &admin, &attach).await)["member"], true);
    let listed = stdout_json(&as_user(&url, &admin, &["labs", "list"]).await);
    let ours = listed["labs"].as_array().expect("labs").iter().find(|l| l["lab_id"] == "lab-ctl").cloned();
    assert_eq!(ours.expect("lab-ctl")["members"], json!([tech]));
    // A doctor manages no labs: the server refuses (1); a bad id is refused here (2).
    assert_eq!(as_user(&url, &doctor, &attach).await.status.code(), Some(1));
    let bad = as_user(&url, &admin, &["labs", "attach", "--lab", "lab ctl", "--user", &tech]).await;
    assert_eq!(bad.status.code(), Some(2), "{}", String::from_utf8_lossy(&bad.stderr));

    let create =
        ["orders", "create", "--patient", "p-1001", "--lab", "lab-ctl", "--test-code", "4548-4", "--note", "fasting"];
    let order = stdout_json(&as_user(&url, &doctor, &create).await);
    let order_id = order["order_id"].as_str().expect("order id").to_owned();
    let queue = stdout_json(&as_user(&url, &lab, &["orders", "queue"]).await);
    assert_eq!(
        queue["orders"],
        json!([{
            "order_id": order_id, "patient_id": "p-1001", "lab_id": "lab-ctl", "test_code": "4548-4", "test_name": "",
            "ordered_at": order["ordered_at"], "status": "open", "note": "fasting",
        }])
    );
    let result = ["orders", "result", "--order", &order_id, "--code", "4548-4", "--value", "6.0", "--unit", "%"];
    assert!(stdout_json(&as_user(&url, &lab, &result).await)["result_id"].is_string());
    assert_eq!(as_user(&url, &lab, &result).await.status.code(), Some(1), "closed: 409");
    assert_eq!(as_user(&url, &admin, &create).await.status.code(), Some(1), "the admin orders no tests");

    let alice = app.token(ALICE).await;
    let mine = stdout_json(&as_user(&url, &alice, &["orders", "list", "--patient", "p-1001"]).await);
    let placed =
        mine["lab_orders"].as_array().expect("orders").iter().find(|o| o["order_id"] == order_id.as_str()).cloned();
    let placed = placed.expect("the order");
    assert_eq!((placed["status"].as_str(), placed["ordered_by"].as_str()), (Some("resulted"), Some("u-dr-grey")));

    let detach = ["labs", "detach", "--lab", "lab-ctl", "--user", &tech];
    assert_eq!(stdout_json(&as_user(&url, &admin, &detach).await)["member"], false);
    assert_eq!(as_user(&url, &admin, &detach).await.status.code(), Some(1), "not a member any more: 404");
}
