//! The platform's authorization rules (ARCHITECTURE.md §6) as one pure function:
//! `authorize(&caller, action, &resource) -> Decision`, deny by default, always with a reason.
//!
//! The services supply the resource facts (owner, care team, consent, order assignment); this
//! crate never reads a store. The `policy` component wraps it to export the WIT `authorizer`.

use health_core::{Caller, Reason, Role};

/// Recorded with every audit event so a decision can be traced to the rules that made it.
pub const POLICY_VERSION: &str = "2026-11-26.6";

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
    /// Editing a patient's demographics (names, birth date): no clinical content.
    EditDemographics,
    /// Adding a clinician to a patient's care team (admitting an arriving patient).
    AddCareTeamMember,
    /// Ending a clinician's membership of a patient's care team.
    ManageCareTeam,
    /// Reading who is (and was) on a patient's care team.
    ReadCareTeam,
    /// A clinician listing the patients whose care team they are on now.
    ListCareTeamPatients,
    /// Registering a patient in the tenant (organisation: the admin's).
    RegisterPatient,
    /// Linking a patient's user account to their record.
    LinkPatientAccount,
    /// Registering the tenant's lab organisations and attaching lab users to them.
    ManageLabs,
    /// A doctor ordering a test for a patient from a registered lab organisation.
    OrderLabTest,
    /// Reading a patient's lab orders (status, who ordered, which lab).
    ReadLabOrders,
    /// A patient finding which record their account is linked to (the service looks up only
    /// the caller's own link).
    FindOwnRecord,
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
    /// The kind of the record entry a `ReadRecord` or `WriteRecord` reaches (a correction's is
    /// the existing entry's); `None` for the record as a whole.
    pub entry_kind: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderFacts {
    pub tenant_id: String,
    pub order_id: String,
    /// The lab organisation the order was placed with.
    pub lab_id: String,
    /// The caller is a member of that lab organisation (the lab service reads it from `records`).
    pub lab_member: bool,
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

/// The record entry kinds a role reads (under `ReadRecord`) or writes (under `WriteRecord`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kinds {
    All,
    Only(&'static [&'static str]),
}

impl Kinds {
    const NONE: Kinds = Kinds::Only(&[]);

    fn admits(self, kind: &str) -> bool {
        match self {
            Kinds::All => true,
            Kinds::Only(kinds) => kinds.contains(&kind),
        }
    }

    fn any(self) -> bool {
        self != Kinds::NONE
    }
}

/// What one role may do: the one definition of its permissions. [`authorize`] and the gateway's
/// route check both read it, so adding a role is adding its variant and its row in
/// [`permissions`]. Each list holds actions under one kind of fact; an action the row holds
/// nowhere is refused to the role outright.
#[derive(Debug, Clone, Copy)]
pub struct Permissions {
    /// Actions on the caller's own tenant, and why they are allowed.
    pub tenant: &'static [(Action, Reason)],
    /// Actions on any patient of the caller's tenant, whatever the facts, and why: organisation
    /// (who treats whom, whose account), never clinical content.
    pub any_patient: &'static [(Action, Reason)],
    /// Actions on the patient whose record the caller owns.
    pub own_record: &'static [Action],
    /// Actions on a patient whose active care team includes the caller.
    pub care_team: &'static [Action],
    /// Actions on a patient the caller holds an active break-glass grant for.
    pub break_glass: &'static [Action],
    /// Actions on a patient whose active consent the caller (an insurer) holds.
    pub consent: &'static [Action],
    /// Actions on a lab order placed with a lab organisation the caller is a member of.
    pub assigned_orders: &'static [Action],
    /// Actions the caller's token must carry a scope for, whatever else holds.
    pub scopes: &'static [(Action, &'static str)],
    /// The entry kinds `ReadRecord` reads (a pharmacist's record is its medication and allergy
    /// entries) and `WriteRecord` writes (a nurse's notes and observations).
    pub reads: Kinds,
    pub writes: Kinds,
}

const NOTHING: Permissions = Permissions {
    tenant: &[],
    any_patient: &[],
    own_record: &[],
    care_team: &[],
    break_glass: &[],
    consent: &[],
    assigned_orders: &[],
    scopes: &[],
    reads: Kinds::NONE,
    writes: Kinds::NONE,
};

/// Every role's permissions (ARCHITECTURE.md §6).
pub const fn permissions(role: Role) -> Permissions {
    use Action::*;
    match role {
        Role::Patient => Permissions {
            // Which record is theirs: the service reads only the caller's own link.
            tenant: &[(FindOwnRecord, Reason::PatientSelf)],
            own_record: &[
                ReadDemographics,
                ReadRecord,
                ReadLabResults,
                ManageConsent,
                ReadAccessLog,
                ExportData,
                ReadCareTeam,
                ReadLabOrders,
            ],
            reads: Kinds::All,
            ..NOTHING
        },
        Role::Doctor => Permissions {
            tenant: &[(ListCareTeamPatients, Reason::OwnCareTeam)],
            // Asking for break-glass access needs no fact: the grant is flagged for review.
            any_patient: &[(BreakGlass, Reason::BreakGlassRequest)],
            // Ordering a test is a clinical act like writing the record: the same rule, the care
            // team or a break-glass grant (flagged for review).
            care_team: &[
                ReadDemographics,
                ReadRecord,
                WriteRecord,
                ReadLabResults,
                ReadCareTeam,
                OrderLabTest,
                ReadLabOrders,
            ],
            // Who else treats the patient is for members only, not for a break-glass reader.
            break_glass: &[ReadDemographics, ReadRecord, WriteRecord, ReadLabResults, OrderLabTest, ReadLabOrders],
            reads: Kinds::All,
            writes: Kinds::All,
            ..NOTHING
        },
        // No diagnoses, orders or medication: notes and vital-sign observations.
        Role::Nurse => Permissions {
            tenant: &[(ListCareTeamPatients, Reason::OwnCareTeam)],
            care_team: &[ReadDemographics, ReadRecord, WriteRecord, ReadLabResults, ReadCareTeam],
            reads: Kinds::All,
            writes: Kinds::Only(&["note", "observation"]),
            ..NOTHING
        },
        // Dispensing needs the medication and allergy entries, and whose they are: no other
        // entry, no lab result.
        Role::Pharmacist => Permissions {
            tenant: &[(ListCareTeamPatients, Reason::OwnCareTeam)],
            care_team: &[ReadDemographics, ReadRecord, ReadCareTeam],
            reads: Kinds::Only(&["medication", "allergy"]),
            ..NOTHING
        },
        Role::Lab => Permissions { assigned_orders: &[ListLabOrders, AppendLabResult], ..NOTHING },
        Role::Insurance => Permissions { consent: &[ReadSummary], scopes: &[(ReadSummary, SUMMARY_SCOPE)], ..NOTHING },
        // Identity and organisation, no clinical content. Ending a membership is the admin's
        // alone: it takes a clinician's access away.
        Role::Receptionist => Permissions {
            tenant: &[(RegisterPatient, Reason::FrontDesk)],
            any_patient: &[
                (ReadDemographics, Reason::FrontDesk),
                (EditDemographics, Reason::FrontDesk),
                (AddCareTeamMember, Reason::FrontDesk),
            ],
            ..NOTHING
        },
        // The admin reviews the tenant's audit log already; a patient's access log is a view of
        // it, with no clinical content. Who may treat whom is organisation; whose record this
        // is, identity administration. The export is clinical: never the admin's.
        Role::Admin => Permissions {
            tenant: &[
                (ReadAudit, Reason::AdminAudit),
                (ErasePatient, Reason::AdminErasure),
                (RotateDataKey, Reason::AdminDataKeyRotation),
                (RegisterPatient, Reason::AdminRegistration),
                (ManageLabs, Reason::AdminLabs),
            ],
            any_patient: &[
                (ReadAccessLog, Reason::AdminAccessLog),
                (AddCareTeamMember, Reason::AdminCareTeam),
                (ManageCareTeam, Reason::AdminCareTeam),
                (ReadCareTeam, Reason::AdminCareTeam),
                (LinkPatientAccount, Reason::AdminPatientAccount),
            ],
            ..NOTHING
        },
    }
}

impl Permissions {
    /// Whether the role may take `action` at all, given the right facts.
    fn holds(&self, action: Action) -> bool {
        let with_reason = |list: &[(Action, Reason)]| list.iter().any(|(a, _)| *a == action);
        with_reason(self.tenant)
            || with_reason(self.any_patient)
            || [self.own_record, self.care_team, self.break_glass, self.consent, self.assigned_orders]
                .iter()
                .any(|list| list.contains(&action))
    }

    /// The entry kinds `action` reaches, if it is a record action.
    fn kinds(&self, action: Action) -> Option<Kinds> {
        match action {
            Action::ReadRecord => Some(self.reads),
            Action::WriteRecord => Some(self.writes),
            _ => None,
        }
    }
}

/// The gateway route family each action is asked under.
fn family(action: Action) -> &'static str {
    use Action::*;
    match action {
        ReadDemographics | EditDemographics | ReadRecord | WriteRecord | ReadLabResults | BreakGlass
        | ManageConsent | ReadAccessLog | ExportData | AddCareTeamMember | ManageCareTeam | ReadCareTeam
        | OrderLabTest | ReadLabOrders | FindOwnRecord => "patients",
        ListCareTeamPatients => "care-team",
        ListLabOrders | AppendLabResult => "lab",
        ReadSummary => "insurance",
        ReadAudit | ErasePatient | RotateDataKey | RegisterPatient | LinkPatientAccount | ManageLabs => "admin",
        // Not a gateway route: `auth` decides it on the account.
        ChangeOwnPassword => "",
    }
}

/// Decides whether `caller` may perform `action` on `resource`. Deny by default.
pub fn authorize(caller: &Caller, action: Action, resource: &Resource) -> Decision {
    let tenant_of = |t: &str| t == caller.tenant_id.as_str();
    let row = permissions(caller.role);
    let listed = |list: &[(Action, Reason)]| list.iter().find(|(a, _)| *a == action).map(|(_, reason)| *reason);
    match resource {
        Resource::Route(family) => route(caller.role, action, family),
        Resource::Tenant(tenant) if !tenant_of(tenant) => deny(Reason::TenantMismatch),
        Resource::Tenant(_) => listed(row.tenant).map_or(deny(Reason::RoleNotPermitted), allow),
        Resource::Patient(p) if !tenant_of(&p.tenant_id) => deny(Reason::TenantMismatch),
        Resource::Patient(p) => patient(caller, &row, action, p),
        Resource::Account(a) if !tenant_of(&a.tenant_id) => deny(Reason::TenantMismatch),
        // Every role manages its own credentials, and only its own; the current password is
        // checked by `auth` after this decision.
        Resource::Account(a) => match action {
            Action::ChangeOwnPassword if a.subject != caller.subject.as_str() => deny(Reason::NotOwnAccount),
            Action::ChangeOwnPassword if !a.has_password => deny(Reason::NotAUserAccount),
            Action::ChangeOwnPassword => allow(Reason::OwnAccount),
            _ => deny(Reason::RoleNotPermitted),
        },
        Resource::LabOrder(o) if !tenant_of(&o.tenant_id) => deny(Reason::TenantMismatch),
        Resource::LabOrder(o) if row.assigned_orders.contains(&action) => {
            if o.lab_member {
                allow(Reason::AssignedLab)
            } else {
                deny(Reason::OrderNotAssigned)
            }
        }
        Resource::LabOrder(_) => deny(Reason::RoleNotPermitted),
    }
}

/// A patient of the caller's tenant: the first list of the caller's row whose fact holds
/// decides; if none does, the refusal names the fact that was missing.
fn patient(caller: &Caller, row: &Permissions, action: Action, p: &PatientFacts) -> Decision {
    if let Some((_, scope)) = row.scopes.iter().find(|(a, _)| *a == action)
        && !caller.scopes.iter().any(|s| s == scope)
    {
        return deny(Reason::MissingScope);
    }
    if let Some((_, reason)) = row.any_patient.iter().find(|(a, _)| *a == action) {
        return allow(*reason);
    }
    let is_self = p.owner_subject.as_deref() == Some(caller.subject.as_str());
    let rules = [
        (row.own_record, is_self, Reason::PatientSelf, Reason::NotOwnRecord),
        (row.care_team, p.on_care_team, Reason::CareTeam, Reason::NotOnCareTeam),
        (row.break_glass, p.break_glass_active, Reason::BreakGlass, Reason::NotOnCareTeam),
        (row.consent, p.consent_active, Reason::Consent, Reason::NoConsent),
    ];
    let mut refusal = Reason::RoleNotPermitted;
    for (actions, fact, allowed, missing) in rules {
        if !actions.contains(&action) {
            continue;
        }
        if !fact {
            // The first missing fact names the refusal (a doctor is refused as not on the
            // care team, not as holding no break-glass grant).
            if refusal == Reason::RoleNotPermitted {
                refusal = missing;
            }
            continue;
        }
        // A record action reaches the kinds of the caller's row: with a kind, that kind; with
        // none (the record as a whole), at least one, and the service asks again per kind.
        return match (row.kinds(action), p.entry_kind.as_deref()) {
            (Some(kinds), Some(kind)) if !kinds.admits(kind) => deny(Reason::EntryKindNotPermitted),
            (Some(kinds), None) if !kinds.any() => deny(Reason::EntryKindNotPermitted),
            _ => allow(allowed),
        };
    }
    deny(refusal)
}

/// Coarse, route-level rule applied by the gateway before forwarding: the role's row holds the
/// action, asked under its family.
fn route(role: Role, action: Action, family_asked: &str) -> Decision {
    if family(action) == family_asked && permissions(role).holds(action) {
        allow(Reason::Route)
    } else {
        deny(Reason::RouteNotPermitted)
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
            entry_kind: None,
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
            deny(Reason::RoleNotPermitted)
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
    fn a_lab_user_works_only_the_orders_of_its_own_lab_organisations() {
        let lab = caller(Role::Lab, "u-lab");
        let order = |tenant: &str, lab_member| {
            Resource::LabOrder(OrderFacts {
                tenant_id: tenant.into(),
                order_id: "o".into(),
                lab_id: "lab-north".into(),
                lab_member,
            })
        };
        for action in [Action::AppendLabResult, Action::ListLabOrders] {
            assert_eq!(authorize(&lab, action, &order("demo", true)), allow(Reason::AssignedLab));
            assert_eq!(authorize(&lab, action, &order("demo", false)), deny(Reason::OrderNotAssigned));
            assert_eq!(authorize(&lab, action, &order("other", true)), deny(Reason::TenantMismatch));
            for role in [Role::Patient, Role::Doctor, Role::Insurance, Role::Admin] {
                let decision = authorize(&caller(role, "u-lab"), action, &order("demo", true));
                assert_eq!(decision, deny(Reason::RoleNotPermitted));
            }
        }
        assert!(!authorize(&lab, Action::ReadLabOrders, &order("demo", true)).allow);
    }

    #[test]
    fn only_the_admin_manages_lab_organisations() {
        let admin = caller(Role::Admin, "u-admin");
        let tenant = |t: &str| Resource::Tenant(t.into());
        assert_eq!(authorize(&admin, Action::ManageLabs, &tenant("demo")), allow(Reason::AdminLabs));
        assert_eq!(authorize(&admin, Action::ManageLabs, &tenant("other")), deny(Reason::TenantMismatch));
        assert!(authorize(&admin, Action::ManageLabs, &Resource::Route("admin".into())).allow);
        for role in [Role::Patient, Role::Doctor, Role::Lab, Role::Insurance] {
            let who = caller(role, "u-x");
            assert!(!authorize(&who, Action::ManageLabs, &tenant("demo")).allow, "{role:?}");
            assert!(!authorize(&who, Action::ManageLabs, &Resource::Route("admin".into())).allow, "{role:?}");
        }
    }

    #[test]
    fn care_team_doctors_order_tests_and_they_and_the_patient_read_the_orders() {
        let doctor = caller(Role::Doctor, "u-grey");
        let mut member = patient("u-alice");
        member.on_care_team = true;
        let mut glass = patient("u-alice");
        glass.break_glass_active = true;
        for action in [Action::OrderLabTest, Action::ReadLabOrders] {
            assert_eq!(authorize(&doctor, action, &Resource::Patient(member.clone())), allow(Reason::CareTeam));
            assert_eq!(authorize(&doctor, action, &Resource::Patient(glass.clone())), allow(Reason::BreakGlass));
            assert_eq!(authorize(&doctor, action, &Resource::Patient(patient("u-alice"))), deny(Reason::NotOnCareTeam));
            assert!(authorize(&doctor, action, &Resource::Route("patients".into())).allow);
            for role in [Role::Lab, Role::Insurance, Role::Admin] {
                let who = caller(role, "u-alice");
                let mut everything = member.clone();
                (everything.break_glass_active, everything.consent_active) = (true, true);
                assert!(!authorize(&who, action, &Resource::Patient(everything)).allow, "{role:?} {action:?}");
                assert!(!authorize(&who, action, &Resource::Route("patients".into())).allow, "{role:?}");
            }
            let mut elsewhere = member.clone();
            elsewhere.tenant_id = "other".into();
            assert_eq!(authorize(&doctor, action, &Resource::Patient(elsewhere)), deny(Reason::TenantMismatch));
        }
        let alice = caller(Role::Patient, "u-alice");
        let read = |facts: PatientFacts| authorize(&alice, Action::ReadLabOrders, &Resource::Patient(facts));
        assert_eq!(read(patient("u-alice")), allow(Reason::PatientSelf));
        assert_eq!(read(patient("u-bob")), deny(Reason::NotOwnRecord));
        assert!(!authorize(&alice, Action::OrderLabTest, &Resource::Patient(patient("u-alice"))).allow);
        assert!(!authorize(&alice, Action::OrderLabTest, &Resource::Route("patients".into())).allow);
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

    /// Every action the gateway asks about (all but `ChangeOwnPassword`, which is `auth`'s).
    const ROUTED: [Action; 25] = {
        use Action::*;
        [
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
            ReadAccessLog,
            ExportData,
            EditDemographics,
            AddCareTeamMember,
            ManageCareTeam,
            ReadCareTeam,
            ListCareTeamPatients,
            RegisterPatient,
            LinkPatientAccount,
            ManageLabs,
            OrderLabTest,
            ReadLabOrders,
            FindOwnRecord,
        ]
    };

    /// What the gateway lets each role into, written out apart from [`permissions`]: the route
    /// check must agree with it for every role and every action.
    #[test]
    fn the_route_check_lets_each_role_into_exactly_its_actions() {
        use Action::*;
        let expected = |role| -> &'static [Action] {
            match role {
                Role::Patient => &[
                    ReadDemographics,
                    ReadRecord,
                    ReadLabResults,
                    ManageConsent,
                    ReadAccessLog,
                    ExportData,
                    ReadCareTeam,
                    ReadLabOrders,
                    FindOwnRecord,
                ],
                Role::Doctor => &[
                    ReadDemographics,
                    ReadRecord,
                    WriteRecord,
                    ReadLabResults,
                    BreakGlass,
                    ReadCareTeam,
                    ListCareTeamPatients,
                    OrderLabTest,
                    ReadLabOrders,
                ],
                Role::Nurse => {
                    &[ReadDemographics, ReadRecord, WriteRecord, ReadLabResults, ReadCareTeam, ListCareTeamPatients]
                }
                Role::Pharmacist => &[ReadDemographics, ReadRecord, ReadCareTeam, ListCareTeamPatients],
                Role::Receptionist => &[RegisterPatient, ReadDemographics, EditDemographics, AddCareTeamMember],
                Role::Lab => &[ListLabOrders, AppendLabResult],
                Role::Insurance => &[ReadSummary],
                Role::Admin => &[
                    ReadAudit,
                    ErasePatient,
                    RotateDataKey,
                    RegisterPatient,
                    LinkPatientAccount,
                    ManageLabs,
                    ReadAccessLog,
                    AddCareTeamMember,
                    ManageCareTeam,
                    ReadCareTeam,
                ],
            }
        };
        for role in Role::ALL {
            let who = caller(role, "u-x");
            for action in ROUTED {
                let allowed = ["patients", "care-team", "lab", "insurance", "admin"]
                    .into_iter()
                    .filter(|f| authorize(&who, action, &Resource::Route((*f).into())).allow)
                    .collect::<Vec<_>>();
                let want = expected(role).contains(&action);
                assert_eq!(allowed.len(), usize::from(want), "{role:?} {action:?}: {allowed:?}");
            }
            assert!(!authorize(&who, ChangeOwnPassword, &Resource::Route("patients".into())).allow);
        }
    }

    fn on_team(kind: Option<&str>) -> Resource {
        let mut facts = patient("u-alice");
        facts.on_care_team = true;
        facts.entry_kind = kind.map(str::to_owned);
        Resource::Patient(facts)
    }

    /// Every fact that could allow something, all true: what a role is still refused here, it
    /// is refused everywhere.
    fn everything(kind: Option<&str>) -> Resource {
        let mut facts = patient("u-x");
        (facts.on_care_team, facts.break_glass_active, facts.consent_active) = (true, true, true);
        facts.entry_kind = kind.map(str::to_owned);
        Resource::Patient(facts)
    }

    #[test]
    fn a_nurse_reads_a_care_team_patients_record_and_results_and_writes_notes_and_observations_only() {
        let nurse = caller(Role::Nurse, "u-nurse");
        let decide = |action, resource: &Resource| authorize(&nurse, action, resource);
        for action in [Action::ReadDemographics, Action::ReadRecord, Action::ReadLabResults, Action::ReadCareTeam] {
            assert_eq!(decide(action, &on_team(None)), allow(Reason::CareTeam), "{action:?}");
            assert_eq!(decide(action, &Resource::Patient(patient("u-alice"))), deny(Reason::NotOnCareTeam));
        }
        for kind in ["diagnosis", "medication", "allergy", "procedure", "note", "history", "observation"] {
            assert_eq!(decide(Action::ReadRecord, &on_team(Some(kind))), allow(Reason::CareTeam), "{kind}");
        }
        // Whether a nurse writes at all, then which kind: the service asks both.
        assert_eq!(decide(Action::WriteRecord, &on_team(None)), allow(Reason::CareTeam));
        for kind in ["note", "observation"] {
            assert_eq!(decide(Action::WriteRecord, &on_team(Some(kind))), allow(Reason::CareTeam), "{kind}");
        }
        for kind in ["diagnosis", "medication", "allergy", "procedure", "history", "unknown"] {
            let decision = decide(Action::WriteRecord, &on_team(Some(kind)));
            assert_eq!(decision, deny(Reason::EntryKindNotPermitted), "{kind}");
        }
        assert_eq!(decide(Action::WriteRecord, &Resource::Patient(patient("u-alice"))), deny(Reason::NotOnCareTeam));
        // No break-glass: neither asking for it nor reading under someone's grant.
        let mut glass = patient("u-alice");
        glass.break_glass_active = true;
        assert_eq!(decide(Action::ReadRecord, &Resource::Patient(glass)), deny(Reason::NotOnCareTeam));
        for action in [
            Action::BreakGlass,
            Action::OrderLabTest,
            Action::EditDemographics,
            Action::AddCareTeamMember,
            Action::ManageCareTeam,
            Action::ExportData,
            Action::ReadAccessLog,
            Action::ManageConsent,
        ] {
            assert_eq!(decide(action, &everything(None)), deny(Reason::RoleNotPermitted), "{action:?}");
        }
        assert_eq!(decide(Action::ListCareTeamPatients, &Resource::Tenant("demo".into())), allow(Reason::OwnCareTeam));
        assert_eq!(decide(Action::RegisterPatient, &Resource::Tenant("demo".into())), deny(Reason::RoleNotPermitted));
    }

    #[test]
    fn a_pharmacist_reads_only_the_medication_and_allergy_entries_of_care_team_patients() {
        let pharmacist = caller(Role::Pharmacist, "u-pharm");
        let decide = |action, resource: &Resource| authorize(&pharmacist, action, resource);
        assert_eq!(decide(Action::ReadRecord, &on_team(None)), allow(Reason::CareTeam));
        assert_eq!(decide(Action::ReadDemographics, &on_team(None)), allow(Reason::CareTeam));
        for kind in ["medication", "allergy"] {
            assert_eq!(decide(Action::ReadRecord, &on_team(Some(kind))), allow(Reason::CareTeam), "{kind}");
            assert_eq!(decide(Action::ReadRecord, &Resource::Patient(patient("u-alice"))), deny(Reason::NotOnCareTeam));
        }
        for kind in ["diagnosis", "procedure", "note", "history", "observation"] {
            let decision = decide(Action::ReadRecord, &on_team(Some(kind)));
            assert_eq!(decision, deny(Reason::EntryKindNotPermitted), "{kind}");
        }
        for kind in [None, Some("medication"), Some("note")] {
            assert_eq!(decide(Action::WriteRecord, &everything(kind)), deny(Reason::RoleNotPermitted), "{kind:?}");
        }
        for action in [Action::ReadLabResults, Action::BreakGlass, Action::OrderLabTest, Action::EditDemographics] {
            assert_eq!(decide(action, &everything(None)), deny(Reason::RoleNotPermitted), "{action:?}");
        }
        let tenant = Resource::Tenant("demo".into());
        assert_eq!(decide(Action::ListCareTeamPatients, &tenant), allow(Reason::OwnCareTeam));
    }

    #[test]
    fn a_receptionist_registers_edits_demographics_and_admits_but_sees_no_clinical_content() {
        let desk = caller(Role::Receptionist, "u-desk");
        let decide = |action, resource: &Resource| authorize(&desk, action, resource);
        let tenant = Resource::Tenant("demo".into());
        assert_eq!(decide(Action::RegisterPatient, &tenant), allow(Reason::FrontDesk));
        assert_eq!(decide(Action::RegisterPatient, &Resource::Tenant("other".into())), deny(Reason::TenantMismatch));
        for action in [Action::ReadAudit, Action::ErasePatient, Action::RotateDataKey, Action::ManageLabs] {
            assert_eq!(decide(action, &tenant), deny(Reason::RoleNotPermitted), "{action:?}");
        }
        // Any patient of the tenant: the front desk admits patients no one treats yet.
        for action in [Action::ReadDemographics, Action::EditDemographics, Action::AddCareTeamMember] {
            assert_eq!(decide(action, &Resource::Patient(patient("u-alice"))), allow(Reason::FrontDesk), "{action:?}");
            let mut elsewhere = patient("u-alice");
            elsewhere.tenant_id = "other".into();
            assert_eq!(decide(action, &Resource::Patient(elsewhere)), deny(Reason::TenantMismatch));
        }
        // Ending a membership takes a clinician's access away: the admin's alone.
        for action in [
            Action::ManageCareTeam,
            Action::ReadCareTeam,
            Action::ReadRecord,
            Action::WriteRecord,
            Action::ReadLabResults,
            Action::ReadLabOrders,
            Action::ReadAccessLog,
            Action::ExportData,
            Action::LinkPatientAccount,
            Action::BreakGlass,
            Action::ReadSummary,
        ] {
            for kind in [None, Some("note")] {
                assert_eq!(decide(action, &everything(kind)), deny(Reason::RoleNotPermitted), "{action:?}");
            }
        }
    }

    #[test]
    fn only_the_receptionist_edits_demographics_and_only_the_admin_ends_memberships() {
        for role in Role::ALL {
            let who = caller(role, "u-x");
            let edit = authorize(&who, Action::EditDemographics, &everything(None)).allow;
            assert_eq!(edit, role == Role::Receptionist, "{role:?}");
            let add = authorize(&who, Action::AddCareTeamMember, &everything(None)).allow;
            assert_eq!(add, matches!(role, Role::Receptionist | Role::Admin), "{role:?}");
            let end = authorize(&who, Action::ManageCareTeam, &everything(None)).allow;
            assert_eq!(end, role == Role::Admin, "{role:?}");
        }
    }

    #[test]
    fn entry_kinds_bind_only_record_actions_and_every_kind_for_the_doctor_and_the_patient() {
        let doctor = caller(Role::Doctor, "u-grey");
        for kind in ["diagnosis", "medication", "note", "observation"] {
            assert_eq!(authorize(&doctor, Action::WriteRecord, &on_team(Some(kind))), allow(Reason::CareTeam));
            assert_eq!(authorize(&doctor, Action::ReadRecord, &on_team(Some(kind))), allow(Reason::CareTeam));
            let mut own = patient("u-alice");
            own.entry_kind = Some(kind.into());
            let alice = caller(Role::Patient, "u-alice");
            assert_eq!(authorize(&alice, Action::ReadRecord, &Resource::Patient(own)), allow(Reason::PatientSelf));
        }
        // A kind on a decision that is not about entries changes nothing.
        let nurse = caller(Role::Nurse, "u-nurse");
        assert_eq!(authorize(&nurse, Action::ReadLabResults, &on_team(Some("diagnosis"))), allow(Reason::CareTeam));
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
