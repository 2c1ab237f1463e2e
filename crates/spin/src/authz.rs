//! Calls to the `policy` component composed into this one (`[component.X.dependencies]`).

#[allow(missing_docs, unsafe_code, clippy::all)]
mod bindings {
    wit_bindgen::generate!({ path: "../../wit", world: "authorizer-client" });
}

pub use bindings::health::platform::authorizer::{authorize, policy_version};
pub use bindings::health::platform::types::{Action, Caller, Decision, OrderFacts, PatientFacts, Resource, Role};

/// The WIT form of a caller.
pub fn caller(c: &health_core::Caller) -> Caller {
    Caller {
        tenant_id: c.tenant_id.to_string(),
        subject: c.subject.to_string(),
        role: match c.role {
            health_core::Role::Patient => Role::Patient,
            health_core::Role::Doctor => Role::Doctor,
            health_core::Role::Lab => Role::Lab,
            health_core::Role::Insurance => Role::Insurance,
            health_core::Role::Admin => Role::Admin,
            health_core::Role::Nurse => Role::Nurse,
            health_core::Role::Receptionist => Role::Receptionist,
            health_core::Role::Pharmacist => Role::Pharmacist,
        },
        client_id: c.client_id.as_ref().map(ToString::to_string).unwrap_or_default(),
        scopes: c.scopes.clone(),
        jti: c.jti.to_string(),
    }
}
