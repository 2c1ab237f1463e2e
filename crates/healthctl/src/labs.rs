//! `labs` and `orders` (issue 16): the tenant admin registers lab organisations and attaches
//! lab users to them; a doctor orders a test from one for a patient and lists the patient's
//! orders (as the patient may too); a lab user lists their labs' open orders and appends a
//! result. Each acts as the signed-in user, with the access token in `HEALTHCTL_ACCESS_TOKEN`.

use clap::Subcommand;
use serde_json::{Value, json};

use crate::{Failure, patient_id, request_as_user};

#[derive(Subcommand)]
pub enum Labs {
    /// Register a lab organisation (tenant admin); again with the same name changes nothing.
    Register {
        /// The lab's id: letters, digits, `-` and `_`.
        #[arg(long)]
        lab: String,
        #[arg(long)]
        name: String,
    },
    /// The tenant's lab organisations and their members (tenant admin).
    List,
    /// Attach a lab user (their id, as `users list` shows it) to a lab organisation.
    Attach {
        #[arg(long)]
        lab: String,
        #[arg(long)]
        user: String,
    },
    /// Detach a lab user from a lab organisation; they lose its orders at once.
    Detach {
        #[arg(long)]
        lab: String,
        #[arg(long)]
        user: String,
    },
}

#[derive(Subcommand)]
pub enum Orders {
    /// Order a test for a patient from a registered lab organisation (a doctor on the patient's
    /// care team, or under break-glass).
    Create {
        #[arg(long)]
        patient: String,
        #[arg(long)]
        lab: String,
        /// The test's code (e.g. LOINC `4548-4`).
        #[arg(long)]
        test_code: String,
        #[arg(long)]
        test_name: Option<String>,
        /// A note to the lab (clinical text, sealed); from the environment so it stays out of
        /// the process list.
        #[arg(long, env = "HEALTHCTL_ORDER_NOTE", hide_env_values = true)]
        note: Option<String>,
    },
    /// A patient's lab orders (the patient, their care team's doctors).
    List {
        #[arg(long)]
        patient: String,
    },
    /// The open orders of the signed-in lab user's lab organisations.
    Queue,
    /// Append the result of an order (a member of the order's lab organisation); closes it.
    Result {
        #[arg(long)]
        order: String,
        #[arg(long)]
        code: String,
        #[arg(long)]
        value: String,
        #[arg(long)]
        unit: String,
        #[arg(long, env = "HEALTHCTL_RESULT_NOTE", hide_env_values = true)]
        note: Option<String>,
    },
}

fn lab_id(text: &str) -> Result<health_core::LabId, Failure> {
    health_core::LabId::parse(text).map_err(|e| Failure::Usage(format!("--lab {text:?}: {e}")))
}

fn user_id(text: &str) -> Result<health_core::Opaque, Failure> {
    health_core::Opaque::parse(text).map_err(|e| Failure::Usage(format!("--user {text:?}: {e}")))
}

pub fn labs(url: &str, command: Labs) -> Result<Value, Failure> {
    match command {
        Labs::Register { lab, name } => {
            request_as_user(url, "POST", "/api/admin/labs", Some(json!({ "lab_id": lab_id(&lab)?, "name": name })))
        }
        Labs::List => request_as_user(url, "GET", "/api/admin/labs", None),
        Labs::Attach { lab, user } => {
            request_as_user(url, "PUT", &format!("/api/admin/labs/{}/members/{}", lab_id(&lab)?, user_id(&user)?), None)
        }
        Labs::Detach { lab, user } => {
            let path = format!("/api/admin/labs/{}/members/{}", lab_id(&lab)?, user_id(&user)?);
            request_as_user(url, "DELETE", &path, None)
        }
    }
}

pub fn orders(url: &str, command: Orders) -> Result<Value, Failure> {
    match command {
        Orders::Create { patient, lab, test_code, test_name, note } => {
            let mut body = json!({ "lab_id": lab_id(&lab)?, "test_code": test_code });
            if let Some(name) = test_name {
                body["test_name"] = json!(name);
            }
            if let Some(note) = note {
                body["note"] = json!(note);
            }
            request_as_user(url, "POST", &format!("/api/patients/{}/lab-orders", patient_id(&patient)?), Some(body))
        }
        Orders::List { patient } => {
            request_as_user(url, "GET", &format!("/api/patients/{}/lab-orders", patient_id(&patient)?), None)
        }
        Orders::Queue => request_as_user(url, "GET", "/api/lab/orders", None),
        Orders::Result { order, code, value, unit, note } => {
            let order =
                health_core::OrderId::parse(&order).map_err(|e| Failure::Usage(format!("--order {order:?}: {e}")))?;
            let mut body = json!({ "code": code, "value": value, "unit": unit });
            if let Some(note) = note {
                body["note"] = json!(note);
            }
            request_as_user(url, "POST", &format!("/api/lab/orders/{order}/results"), Some(body))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked_before_anything_is_sent() {
        let url = "http://127.0.0.1:9";
        let attach = Labs::Attach { lab: "lab/../x".into(), user: "u-x".into() };
        assert!(matches!(labs(url, attach), Err(Failure::Usage(m)) if m.contains("--lab")));
        let detach = Labs::Detach { lab: "lab-north".into(), user: "u x".into() };
        assert!(matches!(labs(url, detach), Err(Failure::Usage(m)) if m.contains("--user")));
        let list = Orders::List { patient: "P-1".into() };
        assert!(matches!(orders(url, list), Err(Failure::Usage(m)) if m.contains("--patient")));
        let result =
            Orders::Result { order: "o/1".into(), code: "c".into(), value: "v".into(), unit: "u".into(), note: None };
        assert!(matches!(orders(url, result), Err(Failure::Usage(m)) if m.contains("--order")));
    }
}
