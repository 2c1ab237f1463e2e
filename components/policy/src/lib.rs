//! The `policy` component: exports `health:platform/authorizer` by wrapping the pure
//! `health-policy` crate. It imports no store, variable or network interface (its WIT world is
//! `policy`), so Spin composes it into the gateway and role services as a dependency, and an
//! operator can swap in another implementation of the same interface without rebuilding them.

// The Spin SDK and wit-bindgen macros expand to the component ABI's `unsafe` glue.
#![allow(unsafe_code)]

wit_bindgen::generate!({ path: "../../wit", world: "authorizer-provider" });

use exports::health::platform::authorizer::Guest;
use health::platform::types::{Action, Caller, Decision, Resource, Role};

struct Policy;

fn role(role: Role) -> health_core::Role {
    match role {
        Role::Patient => health_core::Role::Patient,
        Role::Doctor => health_core::Role::Doctor,
        Role::Lab => health_core::Role::Lab,
        Role::Insurance => health_core::Role::Insurance,
        Role::Admin => health_core::Role::Admin,
        Role::Nurse => health_core::Role::Nurse,
        Role::Receptionist => health_core::Role::Receptionist,
        Role::Pharmacist => health_core::Role::Pharmacist,
    }
}

fn action(action: Action) -> health_policy::Action {
    use health_policy::Action as A;
    match action {
        Action::ReadDemographics => A::ReadDemographics,
        Action::ReadRecord => A::ReadRecord,
        Action::WriteRecord => A::WriteRecord,
        Action::ReadLabResults => A::ReadLabResults,
        Action::ListLabOrders => A::ListLabOrders,
        Action::AppendLabResult => A::AppendLabResult,
        Action::ReadSummary => A::ReadSummary,
        Action::ManageConsent => A::ManageConsent,
        Action::BreakGlass => A::BreakGlass,
        Action::ReadAudit => A::ReadAudit,
        Action::ErasePatient => A::ErasePatient,
        Action::RotateDataKey => A::RotateDataKey,
        Action::ReadAccessLog => A::ReadAccessLog,
        Action::ExportData => A::ExportData,
        Action::EditDemographics => A::EditDemographics,
        Action::AddCareTeamMember => A::AddCareTeamMember,
        Action::ManageCareTeam => A::ManageCareTeam,
        Action::ReadCareTeam => A::ReadCareTeam,
        Action::ListCareTeamPatients => A::ListCareTeamPatients,
        Action::RegisterPatient => A::RegisterPatient,
        Action::LinkPatientAccount => A::LinkPatientAccount,
        Action::ManageLabs => A::ManageLabs,
        Action::OrderLabTest => A::OrderLabTest,
        Action::ReadLabOrders => A::ReadLabOrders,
        Action::FindOwnRecord => A::FindOwnRecord,
    }
}

fn resource(resource: Resource) -> health_policy::Resource {
    use health_policy::{OrderFacts, PatientFacts, Resource as R};
    match resource {
        Resource::Route(family) => R::Route(family),
        Resource::Tenant(tenant) => R::Tenant(tenant),
        Resource::Patient(p) => R::Patient(PatientFacts {
            tenant_id: p.tenant_id,
            patient_id: p.patient_id,
            owner_subject: p.owner_subject,
            on_care_team: p.on_care_team,
            break_glass_active: p.break_glass_active,
            consent_active: p.consent_active,
            entry_kind: p.entry_kind,
        }),
        Resource::LabOrder(o) => R::LabOrder(OrderFacts {
            tenant_id: o.tenant_id,
            order_id: o.order_id,
            lab_id: o.lab_id,
            lab_member: o.lab_member,
        }),
    }
}

impl Guest for Policy {
    fn authorize(caller: Caller, act: Action, res: Resource) -> Decision {
        // A caller whose tenant id does not validate is denied outright, never interpreted.
        let Ok(tenant_id) = health_core::TenantId::parse(&caller.tenant_id) else {
            return Decision { allow: false, reason: health_core::Reason::InvalidTenant.into() };
        };
        // So is one whose subject, client id or `jti` is not an id the platform mints.
        let client_id = match caller.client_id.as_str() {
            "" => Ok(None),
            id => health_core::ClientId::parse(id).map(Some),
        };
        let (Ok(subject), Ok(client_id), Ok(jti)) =
            (health_core::Opaque::parse(&caller.subject), client_id, health_core::TokenId::parse(&caller.jti))
        else {
            return Decision { allow: false, reason: health_core::Reason::InvalidCaller.into() };
        };
        let caller = health_core::Caller {
            tenant_id,
            subject,
            role: role(caller.role),
            client_id,
            scopes: caller.scopes,
            jti,
            enc_jwk: None,
        };
        let decision = health_policy::authorize(&caller, action(act), &resource(res));
        Decision { allow: decision.allow, reason: decision.reason.into() }
    }

    fn policy_version() -> String {
        health_policy::POLICY_VERSION.into()
    }
}

export!(Policy);
