//! A patient's access log: the events of a tenant's audit chain about one patient, as the
//! patient (or the tenant admin) reads them. Two forms of the same entries:
//!
//! - the platform's JSON, one entry per request with the elements the EHDS Regulation
//!   (EU) 2025/327 asks of the logging component (Annex II, 3.2; Art. 9): who accessed (the
//!   actor's identifier, role and the healthcare provider, i.e. the tenant), whose data (the
//!   patient), which category of data and what was done with it, when, and where the data came
//!   from (the provider and system that served them); and the rule that allowed or refused it
//!   (`care_team`, `break_glass`, `consent`, `patient_self`, ...), with the outcome;
//! - a FHIR R4 `Bundle` of `AuditEvent` resources after IHE Basic Audit Log Patterns (BALP),
//!   "patient privacy": RESTful events with the patient as an entity of role Patient, the
//!   recipient agent with its role and purpose of use, and the served data as a second entity.
//!
//! What is deliberately left out: client addresses, user agents, token ids and key ids (they
//! identify devices and credentials, not who accessed the record), `pending_forward` events
//! (the intent of a change, written before it is forwarded; its outcome event follows), and
//! anything about another patient (the caller selects the events by `patient_id`).
//! Pure: no store, no clock.

use serde_json::{Value, json};

use crate::audit::{Event, Outcome};
use crate::rfc3339;

/// The reason of the event a gateway writes before it forwards a change (see
/// `health_spin::audit::PENDING`); not an access of its own.
const PENDING: &str = "pending_forward";

/// BALP profiles by RESTful interaction (successful events with a patient subject).
const BALP: &str = "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.";

/// What a route does to the patient's data: the category of data (EHDS Annex II 3.2 asks
/// which data were accessed) and the operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    pub category: &'static str,
    pub operation: Operation,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Read,
    Create,
    Update,
    Delete,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Read => "read",
            Operation::Create => "create",
            Operation::Update => "update",
            Operation::Delete => "delete",
        }
    }

    /// FHIR `AuditEvent.action`.
    fn fhir_action(self) -> &'static str {
        match self {
            Operation::Read => "R",
            Operation::Create => "C",
            Operation::Update => "U",
            Operation::Delete => "D",
        }
    }

    /// The BALP profile for a successful event of this operation with a patient subject.
    fn balp_profile(self) -> &'static str {
        match self {
            Operation::Read => "PatientRead",
            Operation::Create => "PatientCreate",
            Operation::Update => "PatientUpdate",
            Operation::Delete => "PatientDelete",
        }
    }
}

/// The data category and operation of a gateway route template (`Api::template`); routes
/// added later fall back to `other` with the operation their method implies.
pub fn access_of(template: &str) -> Access {
    let (method, path) = template.split_once(' ').unwrap_or(("", template));
    let operation = match method {
        "POST" => Operation::Create,
        "PUT" => Operation::Update,
        "DELETE" => Operation::Delete,
        _ => Operation::Read,
    };
    let category = match path {
        "/api/patients/{id}" => "demographics",
        "/api/patients/{id}/records" | "/api/patients/{id}/records/{entry_id}/history" => "record",
        "/api/patients/{id}/lab-results" => "lab_results",
        "/api/patients/{id}/break-glass" => "break_glass_grant",
        "/api/patients/{id}/consents" => "consents",
        "/api/patients/{id}/access-log" => "access_log",
        "/api/patients/{id}/export" => "export",
        "/api/patients/{id}/care-team" | "/api/patients/{id}/care-team/{member}" => "care_team",
        "/api/insurance/patients/{id}/summary" => "insurance_summary",
        "/api/admin/patients/{id}" => "erasure",
        _ => "other",
    };
    Access { category, operation }
}

/// Whether a stored event is an access to show: every event about the patient but the
/// pending half of a change.
pub fn shown(event: &Event) -> bool {
    event.reason != PENDING
}

/// The event as shown to `viewer`, the patient reading their own log: another patient who
/// tried to reach this record (and was refused) is not named, since that would tell this
/// patient who else is a patient here. Everyone else, staff and clients, is named.
pub fn as_seen_by_patient(event: &Event, viewer: &str) -> Event {
    let other_patient = event.actor_role.as_deref() == Some("patient") && event.actor_sub.as_deref() != Some(viewer);
    if !other_patient {
        return event.clone();
    }
    Event { actor_sub: Some("another-patient".into()), client_id: None, ..event.clone() }
}

/// One entry of the JSON access log.
pub fn entry(seq: i64, event: &Event) -> Value {
    let access = access_of(&event.action);
    json!({
        "seq": seq,
        "time": event.time,
        "recorded": rfc3339(event.time),
        "request_id": event.request_id,
        "actor": {
            "id": event.actor_sub,
            "role": event.actor_role,
            "client_id": event.client_id,
            // The healthcare provider whose staff or client acted: the tenant.
            "organization": event.tenant_id,
        },
        "patient_id": event.patient_id,
        "data_category": access.category,
        "operation": access.operation.as_str(),
        "route": event.action,
        "rule": event.reason,
        "purpose": purpose(&event.reason).map(|(code, _)| code),
        "outcome": event.outcome.map(Outcome::as_str),
        "status": event.status,
        "break_glass_reason": event.break_glass_reason,
        // Where the data were served from: the provider's records on this platform.
        "origin": { "organization": event.tenant_id, "system": "health-platform" },
    })
}

/// The purpose of use an allowing rule stands for (HL7 v3 ActReason), if any.
fn purpose(rule: &str) -> Option<(&'static str, &'static str)> {
    Some(match rule {
        "care_team" => ("TREAT", "treatment"),
        "break_glass" | "break_glass_request" => ("ETREAT", "Emergency Treatment"),
        "consent" => ("HPAYMT", "healthcare payment"),
        "patient_self" => ("PATRQT", "patient requested"),
        // The front desk's registration, demographics and admissions are operations too.
        r if r.starts_with("admin_") || r == "front_desk" => ("HOPERAT", "healthcare operations"),
        _ => return None,
    })
}

fn coding(system: &str, code: &str, display: &str) -> Value {
    json!({ "system": system, "code": code, "display": display })
}

/// One event as a FHIR R4 `AuditEvent` after IHE BALP.
pub fn audit_event(seq: i64, event: &Event, patient_id: &str) -> Value {
    let access = access_of(&event.action);
    let tenant = &event.tenant_id;
    let (outcome, success) = match event.outcome {
        Some(Outcome::Allow) => ("0", true),
        Some(Outcome::Deny) => ("4", false),
        Some(Outcome::Error) | None => ("8", false),
    };
    let purpose_of_use: Vec<Value> = purpose(&event.reason)
        .map(|(code, display)| {
            json!({ "coding": [coding("http://terminology.hl7.org/CodeSystem/v3-ActReason", code, display)] })
        })
        .into_iter()
        .collect();
    let mut user = json!({
        "type": { "coding": [coding(
            "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "IRCP", "information recipient",
        )] },
        "who": { "identifier": {
            "system": format!("urn:health-platform:{tenant}:subject"),
            "value": event.actor_sub.as_deref().unwrap_or("unknown"),
        } },
        "requestor": true,
    });
    if let Some(role) = &event.actor_role {
        user["role"] = json!([{ "coding": [{ "system": "urn:health-platform:role", "code": role }] }]);
    }
    if !purpose_of_use.is_empty() {
        user["purposeOfUse"] = Value::Array(purpose_of_use.clone());
    }
    let dcm = "http://dicom.nema.org/resources/ontology/DCM";
    let client = json!({
        "type": { "coding": [coding(dcm, "110153", "Source Role ID")] },
        "who": { "identifier": {
            "system": format!("urn:health-platform:{tenant}:client"),
            "value": event.client_id.as_deref().unwrap_or("unknown"),
        } },
        "requestor": false,
    });
    let server = json!({
        "type": { "coding": [coding(dcm, "110152", "Destination Role ID")] },
        "who": { "display": "health-platform gateway" },
        "requestor": false,
    });
    let entity_type = "http://terminology.hl7.org/CodeSystem/audit-entity-type";
    let object_role = "http://terminology.hl7.org/CodeSystem/object-role";
    let mut resource = json!({
        "resourceType": "AuditEvent",
        "id": format!("audit-{seq}"),
        "type": coding("http://terminology.hl7.org/CodeSystem/audit-event-type", "rest", "Restful Operation"),
        "subtype": [coding("http://hl7.org/fhir/restful-interaction", access.operation.as_str(), access.operation.as_str())],
        "action": access.operation.fhir_action(),
        "recorded": rfc3339(event.time),
        "outcome": outcome,
        "outcomeDesc": event.reason,
        "agent": [user, client, server],
        "source": {
            "site": tenant,
            "observer": { "display": "health-platform gateway" },
            "type": [coding("http://terminology.hl7.org/CodeSystem/security-source-type", "4", "Application Server")],
        },
        "entity": [
            {
                "what": { "reference": format!("Patient/{patient_id}") },
                "type": coding(entity_type, "1", "Person"),
                "role": coding(object_role, "1", "Patient"),
            },
            {
                "what": { "identifier": { "system": "urn:health-platform:request", "value": event.request_id } },
                "type": coding(entity_type, "2", "System Object"),
                "role": coding(object_role, "4", "Domain Resource"),
                "name": access.category,
                "description": event.action,
            },
        ],
    });
    if success {
        // BALP's patient profiles describe successful interactions; a refusal is a plain
        // AuditEvent with its failure outcome.
        resource["meta"] = json!({ "profile": [format!("{BALP}{}", access.operation.balp_profile())] });
    }
    if !purpose_of_use.is_empty() {
        resource["purposeOfEvent"] = Value::Array(purpose_of_use);
    }
    resource
}

/// A page of the access log as a FHIR R4 `searchset` Bundle of `AuditEvent`s; `next` is the
/// URL of the following page, if any.
pub fn fhir_bundle(events: &[(i64, Event)], patient_id: &str, now: i64, next: Option<String>) -> Value {
    let entries: Vec<Value> = events
        .iter()
        .map(|(seq, event)| json!({ "resource": audit_event(*seq, event, patient_id), "search": { "mode": "match" } }))
        .collect();
    let mut bundle = json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "timestamp": rfc3339(now),
        "entry": entries,
    });
    if let Some(next) = next {
        bundle["link"] = json!([{ "relation": "next", "url": next }]);
    }
    bundle
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_by_doctor() -> Event {
        Event {
            time: 1_767_225_600,
            request_id: "req-1".into(),
            tenant_id: "demo-hospital".into(),
            actor_sub: Some("u-dr-grey".into()),
            actor_role: Some("doctor".into()),
            client_id: Some("health-web".into()),
            jti: Some("secret-ish-jti".into()),
            kid: Some("kid-1".into()),
            action: "GET /api/patients/{id}/records".into(),
            resource: "/api/patients/p-1001/records".into(),
            patient_id: Some("p-1001".into()),
            outcome: Some(Outcome::Allow),
            reason: "care_team".into(),
            status: 200,
            client_ip: Some("10.0.0.7".into()),
            user_agent: Some("curl".into()),
            break_glass_reason: None,
            policy_version: Some("v".into()),
            trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
            duration_ms: None,
            record_change: None,
        }
    }

    #[test]
    fn an_entry_carries_the_ehds_fields_and_no_device_or_token_data() {
        let entry = entry(12, &read_by_doctor());
        assert_eq!(entry["actor"]["id"], "u-dr-grey");
        assert_eq!(entry["actor"]["role"], "doctor");
        assert_eq!(entry["actor"]["organization"], "demo-hospital");
        assert_eq!(entry["recorded"], "2026-01-01T00:00:00Z");
        assert_eq!(entry["patient_id"], "p-1001");
        assert_eq!(entry["origin"]["organization"], "demo-hospital");
        assert_eq!((entry["data_category"].as_str(), entry["operation"].as_str()), (Some("record"), Some("read")));
        assert_eq!((entry["rule"].as_str(), entry["purpose"].as_str()), (Some("care_team"), Some("TREAT")));
        let text = entry.to_string();
        for leaked in ["secret-ish-jti", "kid-1", "10.0.0.7", "curl"] {
            assert!(!text.contains(leaked), "{leaked} in {text}");
        }
    }

    #[test]
    fn another_patient_is_not_named_to_the_patient() {
        let probe = Event { actor_sub: Some("u-bob".into()), actor_role: Some("patient".into()), ..read_by_doctor() };
        let seen = as_seen_by_patient(&probe, "u-alice");
        assert_eq!(seen.actor_sub.as_deref(), Some("another-patient"));
        assert_eq!(seen.client_id, None);
        let own = Event { actor_sub: Some("u-alice".into()), ..probe.clone() };
        assert_eq!(as_seen_by_patient(&own, "u-alice"), own);
        assert_eq!(as_seen_by_patient(&read_by_doctor(), "u-alice"), read_by_doctor());
    }

    #[test]
    fn routes_map_to_data_categories_and_operations() {
        assert_eq!(
            access_of("PUT /api/patients/{id}/records"),
            Access { category: "record", operation: Operation::Update }
        );
        assert_eq!(access_of("DELETE /api/admin/patients/{id}").category, "erasure");
        assert_eq!(
            access_of("GET /api/patients/{id}/records/{entry_id}/history"),
            Access { category: "record", operation: Operation::Read }
        );
        assert_eq!(access_of("GET /api/insurance/patients/{id}/summary").category, "insurance_summary");
        assert_eq!(
            access_of("DELETE /api/patients/{id}/care-team/{member}"),
            Access { category: "care_team", operation: Operation::Delete }
        );
        assert_eq!(
            access_of("POST /api/patients/{id}/something-new"),
            Access { category: "other", operation: Operation::Create }
        );
        assert!(!shown(&Event { reason: "pending_forward".into(), ..read_by_doctor() }));
        assert!(shown(&read_by_doctor()));
    }

    #[test]
    fn audit_events_follow_balp_patient_privacy() {
        let event = audit_event(12, &read_by_doctor(), "p-1001");
        assert_eq!(event["resourceType"], "AuditEvent");
        assert_eq!(event["meta"]["profile"][0], format!("{BALP}PatientRead"));
        assert_eq!((event["action"].as_str(), event["outcome"].as_str()), (Some("R"), Some("0")));
        assert_eq!(event["type"]["code"], "rest");
        assert_eq!(event["subtype"][0]["code"], "read");
        assert_eq!(event["entity"][0]["what"]["reference"], "Patient/p-1001");
        assert_eq!(event["entity"][0]["role"]["code"], "1");
        assert_eq!(event["agent"][0]["who"]["identifier"]["value"], "u-dr-grey");
        assert_eq!(event["agent"][0]["requestor"], true);
        assert_eq!(event["agent"][0]["purposeOfUse"][0]["coding"][0]["code"], "TREAT");
        let refused = Event { outcome: Some(Outcome::Deny), reason: "not_on_care_team".into(), ..read_by_doctor() };
        let refused = audit_event(13, &refused, "p-1001");
        assert_eq!(refused["outcome"], "4");
        assert!(refused.get("meta").is_none(), "BALP's patient profiles are for successful events");
        assert!(refused.get("purposeOfEvent").is_none());
        let glass = Event { reason: "break_glass".into(), ..read_by_doctor() };
        assert_eq!(audit_event(14, &glass, "p-1001")["purposeOfEvent"][0]["coding"][0]["code"], "ETREAT");
    }

    #[test]
    fn a_bundle_is_a_searchset_with_a_next_link_when_there_is_more() {
        let events = vec![(1, read_by_doctor()), (2, read_by_doctor())];
        let bundle = fhir_bundle(&events, "p-1001", 0, Some("/next".into()));
        assert_eq!((bundle["resourceType"].as_str(), bundle["type"].as_str()), (Some("Bundle"), Some("searchset")));
        assert_eq!(bundle["entry"].as_array().map(Vec::len), Some(2));
        assert_eq!(bundle["link"][0]["url"], "/next");
        assert!(fhir_bundle(&[], "p-1001", 0, None).get("link").is_none());
    }

    #[test]
    fn formats_unix_times_as_rfc_3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(4_102_444_799), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn the_front_desk_edits_demographics_for_healthcare_operations() {
        let access = access_of("PUT /api/patients/{id}");
        assert_eq!((access.category, access.operation.as_str()), ("demographics", Operation::Update.as_str()));
        assert_eq!(purpose("front_desk").map(|(code, _)| code), Some("HOPERAT"));
        assert_eq!(purpose("entry_kind_not_permitted"), None);
    }
}
