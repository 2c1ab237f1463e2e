//! The `insurance` role service (private: reachable only as `insurance.spin.internal`). An
//! insurer reads the summary of a patient who gave it consent, and nothing else: the summary
//! (demographics and diagnoses, no free-text history or results) is returned as a compact JWE
//! (`application/jose`) encrypted to the insurer's registered public key, which `auth` bound
//! into the insurer's token and the gateway passed in the attested caller context. Every
//! request needs that context, and every decision is the composed policy's, with the consent
//! as the fact.

// The Spin SDK macros expand to the component ABI's `unsafe` glue.
#![allow(unsafe_code)]

use health_core::Reason;
use health_core::routes::Api;
use health_core::{Caller, PatientId};
use health_jose::PublicJwk;
use health_jose::jwe::{self, Protected};
use health_spin::authz;
use health_spin::records::{self, Vault};
use health_spin::service::{self, Body, Done, Handled, Refusal};
use spin_sdk::http::{Request, Response};
use spin_sdk::http_component;
use spin_sdk::sqlite::Connection;

#[http_component]
fn handle(req: Request) -> Response {
    service::serve(health_core::Component::Insurance, &req, |caller, api, _body| {
        let conn = records::open_for_service()?;
        match api {
            Api::Summary(patient) => summary(&conn, caller, &patient),
            _ => Err(Refusal::NotFound(Reason::NoSuchRoute).into()),
        }
    })
}

/// The insurer's registered encryption key from the caller context, if it is usable.
fn recipient(caller: &Caller) -> Option<(PublicJwk, jwe::EncryptionKey)> {
    let jwk: PublicJwk = serde_json::from_value(caller.enc_jwk.clone()?).ok()?;
    let key = jwk.encryption_key()?;
    Some((jwk, key))
}

fn summary(conn: &Connection, caller: &Caller, patient: &PatientId) -> Handled {
    let now = health_spin::now();
    let (row, reason) = service::authorize_patient(conn, caller, authz::Action::ReadSummary, patient, now)?;
    let Some((jwk, key)) = recipient(caller) else {
        // Only registered insurer clients have a key to encrypt to; nothing leaves in clear.
        return Err(Refusal::forbidden(Reason::NoRecipientKey).into());
    };
    let mut vault = Vault::open(conn, &caller.tenant_id)?;
    let demographics = records::demographics(&mut vault, &row)??;
    let entries = records::entries(&mut vault, patient)??;
    let diagnoses: Vec<_> = entries
        .iter()
        .filter(|e| e.kind == "diagnosis")
        .map(|e| serde_json::json!({ "diagnosis": e.content, "recorded_at": e.created_at }))
        .collect();
    let summary = serde_json::json!({
        "patient_id": patient,
        "given_name": demographics.given_name,
        "family_name": demographics.family_name,
        "birth_date": demographics.birth_date,
        "diagnoses": diagnoses,
        "insurer": caller.client_id,
        "tenant_id": caller.tenant_id,
        "generated_at": now,
    });
    let plaintext = serde_json::to_vec(&summary).map_err(anyhow::Error::from)?;
    let protected = Protected { kid: Some(&jwk.kid), cty: Some("application/json"), iss: None };
    let token = jwe::encrypt(&plaintext, &key, &protected, &mut health_spin::rng())
        .map_err(|_| anyhow::anyhow!("encrypting the summary to the insurer's key failed"))?;
    Ok(Done { status: 200, body: Body::Jose(token), reason, change: None })
}
