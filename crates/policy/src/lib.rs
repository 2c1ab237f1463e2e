//! The platform's authorization rules (ARCHITECTURE.md §6) as one pure function:
//! `authorize(&caller, action, &resource) -> Decision`, deny by default, always with a reason.
//!
//! The services supply the resource facts (owner, care team, consent, order assignment); this
//! crate never reads a store. The `policy` component wraps it to export the WIT `authorizer`.

use health_core::{Caller, Reason, Role};

/// Recorded with every audit event so a decision can be traced to the rules that made it.
pub const POLICY_VERSION: &str = "2026-11-26.3";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    ReadDemographics,
    ReadRecord,
    WriteRecord,
    ReadLabResults,
    ListLabOrders,
    AppendLabResult,
    ReadSummary,
    ManageConsent,
    BreakGlass,
    ReadAudit,
    ErasePatient,
    RotateDataKey,
    /// Reading who accessed a patient's data (the patient's access log).
    ReadAccessLog,
    /// Exporting everything held about a patient (GDPR access and portability).
    ExportData,
    /// Adding a clinician to a patient's care team, or ending their membership.
    ManageCareTeam,
    /// Reading who is (and was) on a patient's care team.
    ReadCareTeam,
    /// A clinician listing the patients whose care team they are on now.
    ListCareTeamPatients,
    /// Registering a patient in the tenant (organisation: the admin's).
    RegisterPatient,
    /// Linking a patient's user account to their record.
    LinkPatientAccount,
    /// A user changing their own password (`auth`, which links this crate: its WIT world has
    /// no authorizer import, so this action is not in the WIT interface).
    ChangeOwnPassword,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatientFacts {
    pub tenant_id: String,
    pub patient_id: String,
    pub owner_subject: Option<String>,
    pub on_care_team: bool,
    pub break_glass_active: bool,
    pub consent_active: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderFacts {
    pub tenant_id: String,
    pub order_id: String,
    pub assigned_subject: String,
}

/// Facts about the account a request acts on, supplied by `auth`, which owns `identity`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountFacts {
    pub tenant_id: String,
    pub subject: String,
    /// A user account with a password (an insurer client has none).
    pub has_password: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    /// A gateway route family (`patients`, `lab`, `insurance`, `admin`), checked before facts are known.
    Route(String),
    Patient(PatientFacts),
    LabOrder(OrderFacts),
    Tenant(String),
    Account(AccountFacts),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allow: bool,
    pub reason: Reason,
}

const fn allow(reason: Reason) -> Decision {
    Decision { allow: true, reason }
}

const fn deny(reason: Reason) -> Decision {
    Decision { allow: false, reason }
}

/// The scope an insurer's token must carry to read summaries.
pub const SUMMARY_SCOPE: &str = "insurance/summary.read";

/// Decides whether `caller` may perform `action` on `resource`. Deny by default.
pub fn authorize(caller: &Caller, action: Action, resource: &Resource) -> Decision {
    use Action::*;
    let tenant_of = |t: &str| t == caller.tenant_id.as_str();
    match resource {
        Resource::Route(family) => route(caller.role, action, family),
        Resource::Tenant(tenant) if !tenant_of(tenant) => deny(Reason::TenantMismatch),
        Resource::Tenant(_) => match (caller.role, action) {
            (Role::Admin, ReadAudit) => allow(Reason::AdminAudit),
            (Role::Admin, ErasePatient) => allow(Reason::AdminErasure),
            (Role::Admin, RotateDataKey) => allow(Reason::AdminDataKeyRotation),
            (Role::Admin, RegisterPatient) => allow(Reason::AdminRegistration),
            // The service lists only the caller's own live memberships.
            (Role::Doctor, ListCareTeamPatients) => allow(Reason::OwnCareTeam),
            _ => deny(Reason::RoleNotPermitted),
        },
        Resource::Patient(p) if !tenant_of(&p.tenant_id) => deny(Reason::TenantMismatch),
        Resource::Patient(p) => {
            let is_self = p.owner_subject.as_deref() == Some(caller.subject.as_str());
            match (caller.role, action) {
                (
                    Role::Patient,
                    ReadDemographics | ReadRecord | ReadLabResults | ManageConsent | ReadAccessLog | ExportData
                    | ReadCareTeam,
                ) if is_self => allow(Reason::PatientSelf),
                (Role::Patient, _) => deny(Reason::NotOwnRecord),
                (Role::Doctor, ReadDemographics | ReadRecord | WriteRecord | ReadLabResults) if p.on_care_team => {
                    allow(Reason::CareTeam)
                }
                (Role::Doctor, ReadDemographics | ReadRecord | WriteRecord | ReadLabResults)
                    if p.break_glass_active =>
                {
                    allow(Reason::BreakGlass)
                }
                (Role::Doctor, BreakGlass) => allow(Reason::BreakGlassRequest),
                // Who read a patient's record is the patient's to know (and the admin's to
                // review), not the clinicians'; the export holds everything, access log included.
                (Role::Doctor, ReadAccessLog | ExportData) => deny(Reason::RoleNotPermitted),
                // A member sees who else treats the patient; only the admin changes the team.
                (Role::Doctor, ReadCareTeam) if p.on_care_team => allow(Reason::CareTeam),
                (Role::Doctor, ManageCareTeam) => deny(Reason::RoleNotPermitted),
                (Role::Doctor, _) => deny(Reason::NotOnCareTeam),
                (Role::Insurance, ReadSummary) if !caller.scopes.iter().any(|s| s == SUMMARY_SCOPE) => {
                    deny(Reason::MissingScope)
                }
                (Role::Insurance, ReadSummary) if p.consent_active => allow(Reason::Consent),
                (Role::Insurance, _) => deny(Reason::NoConsent),
                // The admin reviews the tenant's audit log already; a patient's access log is a
                // view of it, with no clinical content. The export is clinical: never the admin's.
                (Role::Admin, ReadAccessLog) => allow(Reason::AdminAccessLog),
                // Who may treat whom is organisation, not clinical content: the admin's.
                (Role::Admin, ManageCareTeam | ReadCareTeam) => allow(Reason::AdminCareTeam),
                // Whose record this is: identity administration, no clinical content.
                (Role::Admin, LinkPatientAccount) => allow(Reason::AdminPatientAccount),
                (Role::Lab | Role::Admin, _) => deny(Reason::RoleNotPermitted),
            }
        }
        Resource::Account(a) if !tenant_of(&a.tenant_id) => deny(Reason::TenantMismatch),
        // Every role manages its own credentials, and only its own; the current password is
        // checked by `auth` after this decision.
        Resource::Account(a) => match action {
            ChangeOwnPassword if a.subject != caller.subject.as_str() => deny(Reason::NotOwnAccount),
            ChangeOwnPassword if !a.has_password => deny(Reason::NotAUserAccount),
            ChangeOwnPassword => allow(Reason::OwnAccount),
            _ => deny(Reason::RoleNotPermitted),
        },
        Resource::LabOrder(o) if !tenant_of(&o.tenant_id) => deny(Reason::TenantMismatch),
        Resource::LabOrder(o) => match (caller.role, action) {
            (Role::Lab, AppendLabResult | ListLabOrders) if o.assigned_subject == caller.subject.as_str() => {
                allow(Reason::AssignedLab)
            }
            (Role::Lab, _) => deny(Reason::OrderNotAssigned),
            _ => deny(Reason::RoleNotPermitted),
        },
    }
}

/// Coarse, route-level rule applied by the gateway before forwarding.
fn route(role: Role, action: Action, family: &str) -> Decision {
    use Action::*;
    match (family, role, action) {
        (
            "patients",
            Role::Patient,
            ReadDemographics | ReadRecord | ReadLabResults | ManageConsent | ReadAccessLog | ExportData | ReadCareTeam,
        ) => allow(Reason::Route),
        ("patients", Role::Admin, ReadAccessLog | ManageCareTeam | ReadCareTeam) => allow(Reason::Route),
        (
            "patients",
            Role::Doctor,
            ReadDemographics | ReadRecord | WriteRecord | ReadLabResults | BreakGlass | ReadCareTeam,
        ) => allow(Reason::Route),
        ("care-team", Role::Doctor, ListCareTeamPatients) => allow(Reason::Route),
        ("lab", Role::Lab, ListLabOrders | AppendLabResult) => allow(Reason::Route),
        ("insurance", Role::Insurance, ReadSummary) => allow(Reason::Route),
        ("admin", Role::Admin, ReadAudit | ErasePatient | RotateDataKey | RegisterPatient | LinkPatientAccount) => {
            allow(Reason::Route)
        }
        _ => deny(Reason::RouteNotPermitted),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use health_core::TenantId;

    fn caller(role: Role, subject: &str) -> Caller {
        Caller {
            tenant_id: TenantId::parse("demo").unwrap(),
            subject: health_core::Opaque::parse(subject).unwrap(),
            role,
            client_id: Some(health_core::ClientId::parse("web").unwrap()),
            scopes: vec![],
            jti: health_core::TokenId::parse("j").unwrap(),
            enc_jwk: None,
        }
    }

    fn patient(owner: &str) -> PatientFacts {
        PatientFacts {
            tenant_id: "demo".into(),
            patient_id: "p-1".into(),
            owner_subject: Some(owner.into()),
            on_care_team: false,
            break_glass_active: false,
            consent_active: false,
        }
    }

    #[test]
    fn patient_reads_own_record_only() {
        let alice = caller(Role::Patient, "u-alice");
        assert_eq!(
            authorize(&alice, Action::ReadRecord, &Resource::Patient(patient("u-alice"))),
            allow(Reason::PatientSelf)
        );
        assert_eq!(
            authorize(&alice, Action::ReadRecord, &Resource::Patient(patient("u-bob"))),
            deny(Reason::NotOwnRecord)
        );
        assert_eq!(
            authorize(&alice, Action::WriteRecord, &Resource::Patient(patient("u-alice"))),
            deny(Reason::NotOwnRecord)
        );
    }

    #[test]
    fn doctor_needs_care_team_or_break_glass() {
        let doc = caller(Role::Doctor, "u-house");
        let mut facts = patient("u-alice");
        assert_eq!(authorize(&doc, Action::ReadRecord, &Resource::Patient(facts.clone())), deny(Reason::NotOnCareTeam));
        facts.on_care_team = true;
        assert!(authorize(&doc, Action::WriteRecord, &Resource::Patient(facts.clone())).allow);
        facts.on_care_team = false;
        facts.break_glass_active = true;
        assert_eq!(authorize(&doc, Action::ReadRecord, &Resource::Patient(facts)), allow(Reason::BreakGlass));
    }

    #[test]
    fn cross_tenant_facts_are_always_denied() {
        let mut facts = patient("u-alice");
        facts.tenant_id = "other".into();
        let alice = caller(Role::Patient, "u-alice");
        assert_eq!(authorize(&alice, Action::ReadRecord, &Resource::Patient(facts)), deny(Reason::TenantMismatch));
        let admin = caller(Role::Admin, "u-admin");
        assert_eq!(
            authorize(&admin, Action::ReadAudit, &Resource::Tenant("other".into())),
            deny(Reason::TenantMismatch)
        );
    }

    #[test]
    fn lab_insurance_and_admin_never_read_clinical_records() {
        for role in [Role::Lab, Role::Insurance, Role::Admin] {
            let mut facts = patient("u-alice");
            facts.consent_active = true;
            facts.on_care_team = true;
            let decision = authorize(&caller(role, "x"), Action::ReadRecord, &Resource::Patient(facts));
            assert!(!decision.allow, "{role:?}");
        }
    }

    #[test]
    fn insurer_reads_summary_only_with_consent_and_scope() {
        let mut ins = caller(Role::Insurance, "c-acme");
        ins.scopes = vec![SUMMARY_SCOPE.into()];
        let mut facts = patient("u-alice");
        assert_eq!(authorize(&ins, Action::ReadSummary, &Resource::Patient(facts.clone())), deny(Reason::NoConsent));
        facts.consent_active = true;
        assert_eq!(authorize(&ins, Action::ReadSummary, &Resource::Patient(facts.clone())), allow(Reason::Consent));
        for action in [Action::ReadRecord, Action::WriteRecord, Action::ReadDemographics, Action::ReadLabResults] {
            assert!(!authorize(&ins, action, &Resource::Patient(facts.clone())).allow, "{action:?}");
        }
        ins.scopes.clear();
        assert_eq!(authorize(&ins, Action::ReadSummary, &Resource::Patient(facts)), deny(Reason::MissingScope));
    }

    #[test]
    fn only_the_admin_registers_patients_and_links_their_accounts_in_its_own_tenant() {
        let admin = caller(Role::Admin, "u-admin");
        let tenant = Resource::Tenant("demo".into());
        assert_eq!(authorize(&admin, Action::RegisterPatient, &tenant), allow(Reason::AdminRegistration));
        assert!(authorize(&admin, Action::RegisterPatient, &Resource::Route("admin".into())).allow);
        let other = Resource::Tenant("other".into());
        assert_eq!(authorize(&admin, Action::RegisterPatient, &other), deny(Reason::TenantMismatch));
        let record = Resource::Patient(patient("u-alice"));
        assert_eq!(authorize(&admin, Action::LinkPatientAccount, &record), allow(Reason::AdminPatientAccount));
        for role in [Role::Patient, Role::Doctor, Role::Lab, Role::Insurance] {
            let who = caller(role, "u-alice");
            assert!(!authorize(&who, Action::RegisterPatient, &tenant).allow, "{role:?}");
            assert!(!authorize(&who, Action::LinkPatientAccount, &record).allow, "{role:?}");
            assert!(!authorize(&who, Action::RegisterPatient, &Resource::Route("admin".into())).allow, "{role:?}");
        }
    }

    #[test]
    fn admin_erases_and_rotates_only_in_its_own_tenant_and_never_reads_records() {
        let admin = caller(Role::Admin, "u-admin");
        for action in [Action::ReadAudit, Action::ErasePatient, Action::RotateDataKey] {
            assert!(authorize(&admin, action, &Resource::Tenant("demo".into())).allow, "{action:?}");
            assert!(authorize(&admin, action, &Resource::Route("admin".into())).allow, "{action:?}");
            assert_eq!(authorize(&admin, action, &Resource::Tenant("other".into())), deny(Reason::TenantMismatch));
            assert!(!authorize(&caller(Role::Doctor, "d"), action, &Resource::Tenant("demo".into())).allow);
        }
        for action in [Action::ReadRecord, Action::ReadDemographics, Action::ReadLabResults, Action::ReadSummary] {
            assert!(!authorize(&admin, action, &Resource::Route("patients".into())).allow, "{action:?}");
        }
    }

    #[test]
    fn patients_manage_only_their_own_consents() {
        let alice = caller(Role::Patient, "u-alice");
        assert!(authorize(&alice, Action::ManageConsent, &Resource::Patient(patient("u-alice"))).allow);
        assert!(!authorize(&alice, Action::ManageConsent, &Resource::Patient(patient("u-bob"))).allow);
        let mut facts = patient("u-alice");
        facts.on_care_team = true;
        assert!(!authorize(&caller(Role::Doctor, "d"), Action::ManageConsent, &Resource::Patient(facts)).allow);
    }

    #[test]
    fn lab_appends_only_to_its_own_orders() {
        let lab = caller(Role::Lab, "u-lab");
        let order = |who: &str| {
            Resource::LabOrder(OrderFacts {
                tenant_id: "demo".into(),
                order_id: "o".into(),
                assigned_subject: who.into(),
            })
        };
        assert!(authorize(&lab, Action::AppendLabResult, &order("u-lab")).allow);
        assert!(!authorize(&lab, Action::AppendLabResult, &order("u-other")).allow);
        assert!(!authorize(&caller(Role::Doctor, "u-lab"), Action::AppendLabResult, &order("u-lab")).allow);
    }

    #[test]
    fn only_the_patient_and_the_admin_read_an_access_log_and_only_the_patient_exports() {
        let own = || Resource::Patient(patient("u-alice"));
        let mut everything = patient("u-alice");
        (everything.on_care_team, everything.break_glass_active, everything.consent_active) = (true, true, true);
        let alice = caller(Role::Patient, "u-alice");
        for action in [Action::ReadAccessLog, Action::ExportData] {
            assert_eq!(authorize(&alice, action, &own()), allow(Reason::PatientSelf), "{action:?}");
            assert_eq!(authorize(&alice, action, &Resource::Patient(patient("u-bob"))), deny(Reason::NotOwnRecord));
            assert!(authorize(&alice, action, &Resource::Route("patients".into())).allow);
            for role in [Role::Doctor, Role::Lab, Role::Insurance] {
                let decision = authorize(&caller(role, "u-alice"), action, &Resource::Patient(everything.clone()));
                assert!(!decision.allow, "{role:?} {action:?}");
                assert!(!authorize(&caller(role, "x"), action, &Resource::Route("patients".into())).allow);
            }
        }
        let admin = caller(Role::Admin, "u-admin");
        assert_eq!(authorize(&admin, Action::ReadAccessLog, &own()), allow(Reason::AdminAccessLog));
        assert!(authorize(&admin, Action::ReadAccessLog, &Resource::Route("patients".into())).allow);
        assert_eq!(authorize(&admin, Action::ExportData, &own()), deny(Reason::RoleNotPermitted));
        assert!(!authorize(&admin, Action::ExportData, &Resource::Route("patients".into())).allow);
        let mut elsewhere = patient("u-alice");
        elsewhere.tenant_id = "other".into();
        assert_eq!(
            authorize(&admin, Action::ReadAccessLog, &Resource::Patient(elsewhere)),
            deny(Reason::TenantMismatch)
        );
    }

    #[test]
    fn only_the_admin_manages_a_care_team_and_members_and_the_patient_read_it() {
        let mut member = patient("u-alice");
        member.on_care_team = true;
        let admin = caller(Role::Admin, "u-admin");
        let doctor = caller(Role::Doctor, "u-grey");
        let alice = caller(Role::Patient, "u-alice");
        for action in [Action::ManageCareTeam, Action::ReadCareTeam] {
            assert_eq!(authorize(&admin, action, &Resource::Patient(patient("u-alice"))), allow(Reason::AdminCareTeam));
            assert!(authorize(&admin, action, &Resource::Route("patients".into())).allow);
        }
        assert_eq!(
            authorize(&doctor, Action::ReadCareTeam, &Resource::Patient(member.clone())),
            allow(Reason::CareTeam)
        );
        assert_eq!(
            authorize(&doctor, Action::ReadCareTeam, &Resource::Patient(patient("u-alice"))),
            deny(Reason::NotOnCareTeam)
        );
        let mut glass = patient("u-alice");
        glass.break_glass_active = true;
        assert!(!authorize(&doctor, Action::ReadCareTeam, &Resource::Patient(glass)).allow);
        assert_eq!(
            authorize(&doctor, Action::ManageCareTeam, &Resource::Patient(member.clone())),
            deny(Reason::RoleNotPermitted)
        );
        assert_eq!(
            authorize(&alice, Action::ReadCareTeam, &Resource::Patient(patient("u-alice"))),
            allow(Reason::PatientSelf)
        );
        assert!(!authorize(&alice, Action::ReadCareTeam, &Resource::Patient(patient("u-bob"))).allow);
        assert!(!authorize(&alice, Action::ManageCareTeam, &Resource::Patient(patient("u-alice"))).allow);
        for role in [Role::Lab, Role::Insurance] {
            for action in [Action::ManageCareTeam, Action::ReadCareTeam] {
                assert!(!authorize(&caller(role, "x"), action, &Resource::Patient(member.clone())).allow);
                assert!(!authorize(&caller(role, "x"), action, &Resource::Route("patients".into())).allow);
            }
        }
        for role in [Role::Patient, Role::Doctor, Role::Insurance] {
            assert!(!authorize(&caller(role, "x"), Action::ManageCareTeam, &Resource::Route("patients".into())).allow);
        }
        let mut elsewhere = patient("u-alice");
        elsewhere.tenant_id = "other".into();
        assert_eq!(
            authorize(&admin, Action::ManageCareTeam, &Resource::Patient(elsewhere)),
            deny(Reason::TenantMismatch)
        );
    }

    #[test]
    fn only_a_doctor_lists_the_patients_of_their_care_teams() {
        let list = |role| {
            let who = caller(role, "u-x");
            let tenant = authorize(&who, Action::ListCareTeamPatients, &Resource::Tenant("demo".into())).allow;
            let route = authorize(&who, Action::ListCareTeamPatients, &Resource::Route("care-team".into())).allow;
            (tenant, route)
        };
        assert_eq!(list(Role::Doctor), (true, true));
        for role in [Role::Patient, Role::Lab, Role::Insurance, Role::Admin] {
            assert_eq!(list(role), (false, false), "{role:?}");
        }
        let doctor = caller(Role::Doctor, "u-x");
        let other = authorize(&doctor, Action::ListCareTeamPatients, &Resource::Tenant("other".into()));
        assert_eq!(other, deny(Reason::TenantMismatch));
    }

    #[test]
    fn every_role_changes_its_own_password_only() {
        let account = |tenant: &str, subject: &str, has_password| {
            Resource::Account(AccountFacts { tenant_id: tenant.into(), subject: subject.into(), has_password })
        };
        for role in [Role::Patient, Role::Doctor, Role::Lab, Role::Insurance, Role::Admin] {
            let me = caller(role, "u-me");
            let change = |resource: &Resource| authorize(&me, Action::ChangeOwnPassword, resource);
            assert_eq!(change(&account("demo", "u-me", true)), allow(Reason::OwnAccount), "{role:?}");
            assert_eq!(change(&account("demo", "u-other", true)), deny(Reason::NotOwnAccount), "{role:?}");
            assert_eq!(change(&account("other", "u-me", true)), deny(Reason::TenantMismatch), "{role:?}");
            assert_eq!(change(&account("demo", "u-me", false)), deny(Reason::NotAUserAccount), "{role:?}");
            assert!(!change(&Resource::Route("patients".into())).allow);
            assert!(!change(&Resource::Tenant("demo".into())).allow);
            let read = authorize(&me, Action::ReadRecord, &account("demo", "u-me", true));
            assert_eq!(read, deny(Reason::RoleNotPermitted));
        }
    }

    #[test]
    fn routes_are_denied_by_default() {
        let route = |f: &str| Resource::Route(f.into());
        assert!(authorize(&caller(Role::Patient, "a"), Action::ReadRecord, &route("patients")).allow);
        assert!(!authorize(&caller(Role::Admin, "a"), Action::ReadRecord, &route("patients")).allow);
        assert!(!authorize(&caller(Role::Insurance, "a"), Action::ReadRecord, &route("patients")).allow);
        assert!(!authorize(&caller(Role::Patient, "a"), Action::ReadRecord, &route("unknown")).allow);
    }
}
