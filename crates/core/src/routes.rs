//! The public API as typed values (ARCHITECTURE.md §9: identifiers validated at the edge). The
//! gateway parses every `/api/...` request here before it authorises or forwards anything, and
//! forwards the same path to the role service, which parses it again with the same function: one
//! grammar, so the two can never disagree about which patient or order a request is about.
//!
//! Also the request bodies, with their limits, so they are checked natively and fuzzed.
//! Nothing here reads a store or knows about Spin.

use serde::Deserialize;

use crate::{ClientId, EntryId, LabId, Opaque, OrderId, PatientId, Reason, TokenId};

/// Why a clinician joins a patient's care team (`reason` of a membership).
pub const CARE_TEAM_REASONS: &[&str] = &["encounter", "referral", "admission", "consultation", "primary-care", "other"];

/// Largest request body the API accepts (bytes); larger ones are refused with 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Largest request body `auth` accepts: a form or JSON object carrying at most one token
/// (`health_jose::MAX_TOKEN_BYTES`) and a few short fields.
pub const MAX_AUTH_BODY_BYTES: usize = 16 * 1024 + 1024;
/// Largest request body `jwks` accepts: an internal sign, encrypt or decrypt request (a token or
/// claims set, as JSON) or an operator's key command.
pub const MAX_KEYS_BODY_BYTES: usize = 32 * 1024;
/// Largest free-text field (record content, break-glass reason, lab note), in bytes.
pub const MAX_TEXT_BYTES: usize = 16 * 1024;
/// Largest page of audit events one query returns.
pub const MAX_AUDIT_LIMIT: u32 = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Put,
    Delete,
    Other,
}

impl Method {
    pub fn parse(name: &str) -> Self {
        match name {
            "GET" => Method::Get,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            _ => Method::Other,
        }
    }
}

/// Which events an audit query selects (all conditions must hold).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Unix seconds, inclusive.
    pub from: Option<i64>,
    /// Unix seconds, inclusive.
    pub to: Option<i64>,
    pub actor: Option<Opaque>,
    pub patient: Option<PatientId>,
    pub jti: Option<TokenId>,
    pub outcome: Option<&'static str>,
    /// Only events with a sequence number above this (paging).
    pub after: Option<i64>,
    pub limit: u32,
}

/// One request of the public API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Api {
    /// `GET /api/patients/{id}`
    Demographics(PatientId),
    /// `PUT /api/patients/{id}` with [`DemographicsUpdate`]: the patient's names and birth date
    /// replaced (the front desk); answers without them.
    EditDemographics(PatientId),
    /// `GET /api/patients/{id}/records`
    Records(PatientId),
    /// `POST /api/patients/{id}/records` with [`NewEntry`]
    AddRecord(PatientId),
    /// `PUT /api/patients/{id}/records` with [`EntryUpdate`]: a correction, a new version.
    UpdateRecord(PatientId),
    /// `GET /api/patients/{id}/records/{entry_id}/history`: every version of one entry, newest
    /// first (a doctor on the care team or under break-glass, the patient, as the record).
    RecordHistory(PatientId, EntryId),
    /// `GET /api/patients/{id}/lab-results`
    LabResults(PatientId),
    /// `POST /api/patients/{id}/break-glass` with [`BreakGlass`]
    BreakGlass(PatientId),
    /// `POST /api/patients/{id}/consents` with [`Consent`]
    GrantConsent(PatientId),
    /// `DELETE /api/patients/{id}/consents?insurer={client_id}`
    RevokeConsent(PatientId, ClientId),
    /// `GET /api/lab/orders`
    LabOrders,
    /// `POST /api/lab/orders/{order_id}/results` with [`LabResult`]
    AddLabResult(OrderId),
    /// `GET /api/insurance/patients/{id}/summary`
    Summary(PatientId),
    /// `GET /api/admin/audit?from&to&actor&patient&jti&outcome&after&limit`
    Audit(AuditFilter),
    /// `GET /api/admin/audit/export?...` (NDJSON, same filters)
    AuditExport(AuditFilter),
    /// `GET /api/admin/audit/verify`
    AuditVerify,
    /// `GET /api/admin/break-glass?from&to&after&limit`
    BreakGlassReview(AuditFilter),
    /// `DELETE /api/admin/patients/{id}`: crypto-shredding erasure.
    ErasePatient(PatientId),
    /// `POST /api/admin/patients` with [`NewPatient`]: registers a patient (idempotent by id).
    RegisterPatient,
    /// `PUT /api/admin/patients/{id}/account` with [`PatientAccount`]: links the patient's user
    /// account to the record (one account per record, one record per account).
    LinkPatientAccount(PatientId),
    /// `POST /api/admin/data-keys/rotate`
    RotateDataKey,
    /// `GET /api/patients/{id}/access-log?format&after&limit`: who accessed the patient's data,
    /// when and under which rule, from the tenant's audit chain (the patient, or the admin).
    AccessLog(PatientId, AccessLogQuery),
    /// `GET /api/patients/{id}/export`: everything held about the patient, as one document
    /// (GDPR Art. 15 and 20; the patient only).
    Export(PatientId),
    /// `GET /api/patients/{id}/care-team`: the patient's care-team memberships, past and live.
    CareTeam(PatientId),
    /// `POST /api/patients/{id}/care-team/{member}` with [`CareTeamMembership`]: a clinician
    /// joins the patient's care team (the tenant admin).
    AddCareTeamMember(PatientId, Opaque),
    /// `DELETE /api/patients/{id}/care-team/{member}`: ends the member's live and future
    /// memberships of the patient's care team at once (the tenant admin).
    EndCareTeamMembership(PatientId, Opaque),
    /// `GET /api/care-team/patients`: the patients whose care team the calling clinician is on now.
    CareTeamPatients,
    /// `GET /api/me/patient`: the record the calling patient's account is linked to.
    OwnRecord,
    /// `GET /api/admin/alerts?status=open|acknowledged&after&limit`: the tenant's alerts.
    Alerts(AlertFilter),
    /// `POST /api/admin/alerts/{id}/acknowledge`
    AcknowledgeAlert(i64),
    /// `GET /api/admin/labs`: the tenant's lab organisations and their members.
    Labs,
    /// `POST /api/admin/labs` with [`NewLab`]: registers a lab organisation (idempotent by id).
    RegisterLab,
    /// `PUT /api/admin/labs/{lab_id}/members/{user_id}`: a lab user joins the organisation.
    AttachLabMember(LabId, Opaque),
    /// `DELETE /api/admin/labs/{lab_id}/members/{user_id}`: a lab user leaves it.
    DetachLabMember(LabId, Opaque),
    /// `POST /api/patients/{id}/lab-orders` with [`NewLabOrder`]: a doctor orders a test from a
    /// registered lab organisation.
    OrderLabTest(PatientId),
    /// `GET /api/patients/{id}/lab-orders`: the patient's lab orders (the patient, their doctors).
    PatientLabOrders(PatientId),
    /// A known route with a query string that does not validate (answered 400).
    BadQuery(Reason),
}

/// Which alerts `GET /api/admin/alerts` lists: by status, after an id (paging), at most `limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlertFilter {
    /// `Some(false)`: open only; `Some(true)`: acknowledged only; `None`: both.
    pub acknowledged: Option<bool>,
    pub after: Option<i64>,
    pub limit: u32,
}

impl Default for AlertFilter {
    fn default() -> Self {
        Self { acknowledged: None, after: None, limit: 100 }
    }
}

/// `?status=open|acknowledged&after=&limit=` of the alert list.
fn alert_filter(path_and_query: &str) -> Result<AlertFilter, Reason> {
    let mut filter = AlertFilter::default();
    each_parameter(path_and_query, |name, value| {
        match name {
            "status" => {
                filter.acknowledged = Some(match value {
                    "open" => false,
                    "acknowledged" => true,
                    _ => return Err(Reason::BadStatus),
                });
            }
            "after" => filter.after = Some(after_parameter(value)?),
            "limit" => filter.limit = limit_parameter(value)?,
            _ => return Err(Reason::UnknownQueryParameter),
        }
        Ok(())
    })?;
    Ok(filter)
}

/// The representation of an access log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// The platform's JSON, one entry per access with the EHDS Annex II 3.2 fields.
    #[default]
    Json,
    /// A FHIR R4 `Bundle` of `AuditEvent` resources after IHE BALP.
    Fhir,
}

/// The query of `GET /api/patients/{id}/access-log`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessLogQuery {
    pub format: LogFormat,
    /// Only events with a chain sequence number above this (paging).
    pub after: Option<i64>,
    /// At most this many audit events are read for one page (1–1000, default 100).
    pub limit: u32,
}

impl Default for AccessLogQuery {
    fn default() -> Self {
        Self { format: LogFormat::Json, after: None, limit: 100 }
    }
}

/// Which component serves a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Patient,
    Doctor,
    Lab,
    Insurance,
    /// Answered by the gateway itself from the audit database.
    Gateway,
}

impl Service {
    pub fn name(self) -> &'static str {
        match self {
            Service::Patient => "patient",
            Service::Doctor => "doctor",
            Service::Lab => "lab",
            Service::Insurance => "insurance",
            Service::Gateway => "gateway",
        }
    }
}

impl Api {
    /// The patient the request is about, for the audit log.
    pub fn patient(&self) -> Option<&PatientId> {
        match self {
            Api::Demographics(p)
            | Api::EditDemographics(p)
            | Api::RecordHistory(p, _)
            | Api::Records(p)
            | Api::AddRecord(p)
            | Api::UpdateRecord(p)
            | Api::LabResults(p)
            | Api::BreakGlass(p)
            | Api::GrantConsent(p)
            | Api::RevokeConsent(p, _)
            | Api::Summary(p)
            | Api::ErasePatient(p)
            | Api::LinkPatientAccount(p)
            | Api::AccessLog(p, _)
            | Api::Export(p)
            | Api::CareTeam(p)
            | Api::AddCareTeamMember(p, _)
            | Api::EndCareTeamMembership(p, _)
            | Api::OrderLabTest(p)
            | Api::PatientLabOrders(p) => Some(p),
            Api::LabOrders
            | Api::CareTeamPatients
            | Api::OwnRecord
            | Api::AddLabResult(_)
            | Api::Audit(_)
            | Api::AuditExport(_)
            | Api::AuditVerify
            | Api::BreakGlassReview(_)
            | Api::RotateDataKey
            | Api::RegisterPatient
            | Api::Alerts(_)
            | Api::AcknowledgeAlert(_)
            | Api::Labs
            | Api::RegisterLab
            | Api::AttachLabMember(..)
            | Api::DetachLabMember(..)
            | Api::BadQuery(_) => None,
        }
    }

    /// The route template, a bounded label for audit rows and metrics (never an id).
    pub fn template(&self) -> &'static str {
        match self {
            Api::Demographics(_) => "GET /api/patients/{id}",
            Api::EditDemographics(_) => "PUT /api/patients/{id}",
            Api::Records(_) => "GET /api/patients/{id}/records",
            Api::AddRecord(_) => "POST /api/patients/{id}/records",
            Api::UpdateRecord(_) => "PUT /api/patients/{id}/records",
            Api::RecordHistory(..) => "GET /api/patients/{id}/records/{entry_id}/history",
            Api::LabResults(_) => "GET /api/patients/{id}/lab-results",
            Api::BreakGlass(_) => "POST /api/patients/{id}/break-glass",
            Api::GrantConsent(_) => "POST /api/patients/{id}/consents",
            Api::RevokeConsent(..) => "DELETE /api/patients/{id}/consents",
            Api::LabOrders => "GET /api/lab/orders",
            Api::AddLabResult(_) => "POST /api/lab/orders/{id}/results",
            Api::Summary(_) => "GET /api/insurance/patients/{id}/summary",
            Api::Audit(_) => "GET /api/admin/audit",
            Api::AuditExport(_) => "GET /api/admin/audit/export",
            Api::AuditVerify => "GET /api/admin/audit/verify",
            Api::BreakGlassReview(_) => "GET /api/admin/break-glass",
            Api::ErasePatient(_) => "DELETE /api/admin/patients/{id}",
            Api::RotateDataKey => "POST /api/admin/data-keys/rotate",
            Api::RegisterPatient => "POST /api/admin/patients",
            Api::LinkPatientAccount(_) => "PUT /api/admin/patients/{id}/account",
            Api::AccessLog(..) => "GET /api/patients/{id}/access-log",
            Api::Export(_) => "GET /api/patients/{id}/export",
            Api::CareTeam(_) => "GET /api/patients/{id}/care-team",
            Api::AddCareTeamMember(..) => "POST /api/patients/{id}/care-team/{member}",
            Api::EndCareTeamMembership(..) => "DELETE /api/patients/{id}/care-team/{member}",
            Api::CareTeamPatients => "GET /api/care-team/patients",
            Api::OwnRecord => "GET /api/me/patient",
            Api::Alerts(_) => "GET /api/admin/alerts",
            Api::AcknowledgeAlert(_) => "POST /api/admin/alerts/{id}/acknowledge",
            Api::Labs => "GET /api/admin/labs",
            Api::RegisterLab => "POST /api/admin/labs",
            Api::AttachLabMember(..) => "PUT /api/admin/labs/{lab_id}/members/{user_id}",
            Api::DetachLabMember(..) => "DELETE /api/admin/labs/{lab_id}/members/{user_id}",
            Api::OrderLabTest(_) => "POST /api/patients/{id}/lab-orders",
            Api::PatientLabOrders(_) => "GET /api/patients/{id}/lab-orders",
            Api::BadQuery(_) => "bad query",
        }
    }

    /// Whether the request carries a JSON body (the gateway then requires
    /// `Content-Type: application/json`).
    pub fn takes_json(&self) -> bool {
        matches!(
            self,
            Api::AddRecord(_)
                | Api::UpdateRecord(_)
                | Api::EditDemographics(_)
                | Api::BreakGlass(_)
                | Api::GrantConsent(_)
                | Api::AddLabResult(_)
                | Api::AddCareTeamMember(..)
                | Api::RegisterPatient
                | Api::LinkPatientAccount(_)
                | Api::RegisterLab
                | Api::OrderLabTest(_)
        )
    }
}

/// The `?query` of a path as (name, value) pairs. Values are taken literally (no
/// percent-decoding): every value the API accepts is an identifier or a number, and one
/// spelling per value keeps the gateway and the services from reading a query differently.
pub fn query_pairs(path_and_query: &str) -> Vec<(&str, &str)> {
    path_and_query
        .split_once('?')
        .map(|(_, q)| q)
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
        .collect()
}

/// Walks the query's parameters for `each` to read, refusing one given twice.
fn each_parameter<'q>(
    path_and_query: &'q str,
    mut each: impl FnMut(&'q str, &'q str) -> Result<(), Reason>,
) -> Result<(), Reason> {
    let mut seen = Vec::new();
    for (name, value) in query_pairs(path_and_query) {
        if seen.contains(&name) {
            return Err(Reason::RepeatedQueryParameter);
        }
        seen.push(name);
        each(name, value)?;
    }
    Ok(())
}

/// A whole number of seconds or a row number: not negative.
fn count_parameter(value: &str, reason: Reason) -> Result<i64, Reason> {
    value.parse::<i64>().ok().filter(|n| *n >= 0).ok_or(reason)
}

/// Paging's `after`: the last row (`seq` or id) of the page before.
fn after_parameter(value: &str) -> Result<i64, Reason> {
    count_parameter(value, Reason::BadAfter)
}

/// Paging's `limit`: 1 to [`MAX_AUDIT_LIMIT`] rows.
fn limit_parameter(value: &str) -> Result<u32, Reason> {
    value.parse::<u32>().ok().filter(|n| (1..=MAX_AUDIT_LIMIT).contains(n)).ok_or(Reason::BadLimit)
}

fn audit_filter(path_and_query: &str, allowed: &[&str]) -> Result<AuditFilter, Reason> {
    let mut filter = AuditFilter { limit: 100, ..AuditFilter::default() };
    each_parameter(path_and_query, |name, value| {
        if !allowed.contains(&name) {
            return Err(Reason::UnknownQueryParameter);
        }
        match name {
            "from" => filter.from = Some(count_parameter(value, Reason::BadFrom)?),
            "to" => filter.to = Some(count_parameter(value, Reason::BadTo)?),
            "after" => filter.after = Some(after_parameter(value)?),
            "limit" => filter.limit = limit_parameter(value)?,
            "actor" => filter.actor = Some(Opaque::parse(value).map_err(|_| Reason::BadActor)?),
            "patient" => filter.patient = Some(PatientId::parse(value).map_err(|_| Reason::BadPatient)?),
            "jti" => filter.jti = Some(TokenId::parse(value).map_err(|_| Reason::BadJti)?),
            "outcome" => {
                filter.outcome = Some(match value {
                    "allow" => "allow",
                    "deny" => "deny",
                    "error" => "error",
                    _ => return Err(Reason::BadOutcome),
                });
            }
            _ => return Err(Reason::UnknownQueryParameter),
        }
        Ok(())
    })?;
    Ok(filter)
}

/// The filter of an audit query or export outside the public API (the operator's
/// `/admin/audit/export/{chain}`): the same parameters, limits and refusal reasons as
/// `GET /api/admin/audit`.
pub fn audit_query(path_and_query: &str) -> Result<AuditFilter, &'static str> {
    audit_filter(path_and_query, AUDIT_PARAMS).map_err(Reason::as_str)
}

/// What a [`Api::BadQuery`] reason tells the client: which parameter is wrong, never its value.
pub fn bad_query_detail(reason: Reason) -> String {
    match reason {
        Reason::UnknownQueryParameter => "a query parameter is not one this route takes".into(),
        Reason::RepeatedQueryParameter => "a query parameter is given more than once".into(),
        Reason::InsurerRequired => "query parameter insurer is required".into(),
        other => match other.as_str().strip_prefix("bad_") {
            Some(name) => format!("query parameter {name} is not valid"),
            None => "the query is not valid".into(),
        },
    }
}

/// The literal words of the API's paths (everything a route template holds but its ids).
pub(crate) const PATH_WORDS: &[&str] = &[
    "api",
    "patients",
    "records",
    "lab-results",
    "break-glass",
    "consents",
    "lab",
    "orders",
    "results",
    "insurance",
    "summary",
    "admin",
    "audit",
    "export",
    "verify",
    "data-keys",
    "rotate",
    "access-log",
    "care-team",
    "history",
    "metrics",
    "health",
    "alerts",
    "acknowledge",
    "labs",
    "members",
    "lab-orders",
];

/// The request target as the audit log keeps it, for any request, parsed or not: path words of
/// the API and segments that validate as identifiers are kept, anything else becomes `*`; of a
/// query only the parameter names are kept (the same way), never a value. So a token, a
/// password or free text sent in a path or query (`?access_token=...`) never reaches the log.
pub fn audit_resource(path_and_query: &str) -> String {
    let keep = |part: &str| PATH_WORDS.contains(&part) || PatientId::parse(part).is_ok();
    let (path, query) = match path_and_query.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (path_and_query, None),
    };
    // A care-team member is a user id (`u-` and base64url, so mixed case): kept in that place
    // only, so the audit of a care-team change names whom it is about.
    let member = |before: &str, part: &str| {
        matches!(before, "care-team" | "members") && part.starts_with("u-") && Opaque::parse(part).is_ok()
    };
    let parts: Vec<&str> = path.split('/').take(16).collect();
    let mut out: String = parts
        .iter()
        .enumerate()
        .map(|(i, part)| {
            let before = if i > 0 { parts[i - 1] } else { "" };
            if part.is_empty() || keep(part) || member(before, part) { *part } else { "*" }
        })
        .collect::<Vec<_>>()
        .join("/");
    if let Some(query) = query {
        let query = format!("?{query}");
        let names: Vec<&str> = query_pairs(&query)
            .into_iter()
            .take(16)
            .map(|(name, _)| {
                let known = AUDIT_PARAMS.contains(&name) || matches!(name, "insurer" | "format" | "status");
                if known || keep(name) { name } else { "*" }
            })
            .collect();
        out.push('?');
        out.push_str(&names.join("&"));
    }
    out.truncate(256);
    out
}

pub(crate) const AUDIT_PARAMS: &[&str] = &["from", "to", "actor", "patient", "jti", "outcome", "after", "limit"];
const REVIEW_PARAMS: &[&str] = &["from", "to", "after", "limit"];

/// `?format=json|fhir&after=&limit=` of an access log.
fn access_log_query(path_and_query: &str) -> Result<AccessLogQuery, Reason> {
    let mut query = AccessLogQuery::default();
    each_parameter(path_and_query, |name, value| {
        match name {
            "format" => {
                query.format = match value {
                    "json" => LogFormat::Json,
                    "fhir" => LogFormat::Fhir,
                    _ => return Err(Reason::BadFormat),
                };
            }
            "after" => query.after = Some(after_parameter(value)?),
            "limit" => query.limit = limit_parameter(value)?,
            _ => return Err(Reason::UnknownQueryParameter),
        }
        Ok(())
    })?;
    Ok(query)
}

/// Parses a request of the public API; `None` for anything that is not one of its routes
/// (answered 404). Never panics, whatever the input.
pub fn parse(method: &str, path_and_query: &str) -> Option<Api> {
    let (path, query) = match path_and_query.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (path_and_query, None),
    };
    let segments: Vec<&str> = path.strip_prefix("/api/")?.split('/').collect();
    let method = Method::parse(method);
    let patient = |id: &str| PatientId::parse(id).ok();
    let with_filter = |allowed, make: fn(AuditFilter) -> Api| {
        Some(audit_filter(path_and_query, allowed).map_or_else(Api::BadQuery, make))
    };
    // Only the audit routes and consent revocation take a query; elsewhere one is refused, so
    // nothing a client appends can change what a service reads.
    let takes_query = matches!(
        (method, segments.as_slice()),
        (
            Method::Get,
            ["admin", "audit" | "break-glass" | "alerts"]
                | ["admin", "audit", "export"]
                | ["patients", _, "access-log"]
        ) | (Method::Delete, ["patients", _, "consents"])
    );
    if query.is_some() && !takes_query {
        return None;
    }
    match (method, segments.as_slice()) {
        (Method::Get, ["patients", id]) => patient(id).map(Api::Demographics),
        (Method::Put, ["patients", id]) => patient(id).map(Api::EditDemographics),
        (Method::Get, ["patients", id, "records"]) => patient(id).map(Api::Records),
        (Method::Post, ["patients", id, "records"]) => patient(id).map(Api::AddRecord),
        (Method::Put, ["patients", id, "records"]) => patient(id).map(Api::UpdateRecord),
        (Method::Get, ["patients", id, "records", entry, "history"]) => {
            Some(Api::RecordHistory(patient(id)?, EntryId::parse(entry).ok()?))
        }
        (Method::Get, ["patients", id, "lab-results"]) => patient(id).map(Api::LabResults),
        (Method::Post, ["patients", id, "break-glass"]) => patient(id).map(Api::BreakGlass),
        (Method::Post, ["patients", id, "consents"]) => patient(id).map(Api::GrantConsent),
        (Method::Delete, ["patients", id, "consents"]) => {
            let id = patient(id)?;
            Some(match query_pairs(path_and_query).as_slice() {
                [("insurer", insurer)] => match ClientId::parse(insurer) {
                    Ok(insurer) => Api::RevokeConsent(id, insurer),
                    Err(_) => Api::BadQuery(Reason::BadInsurer),
                },
                _ => Api::BadQuery(Reason::InsurerRequired),
            })
        }
        (Method::Get, ["patients", id, "access-log"]) => {
            let id = patient(id)?;
            Some(access_log_query(path_and_query).map_or_else(Api::BadQuery, |q| Api::AccessLog(id, q)))
        }
        (Method::Get, ["patients", id, "export"]) => patient(id).map(Api::Export),
        (Method::Get, ["patients", id, "care-team"]) => patient(id).map(Api::CareTeam),
        (Method::Post, ["patients", id, "care-team", member]) => {
            Some(Api::AddCareTeamMember(patient(id)?, Opaque::parse(member).ok()?))
        }
        (Method::Delete, ["patients", id, "care-team", member]) => {
            Some(Api::EndCareTeamMembership(patient(id)?, Opaque::parse(member).ok()?))
        }
        (Method::Get, ["care-team", "patients"]) => Some(Api::CareTeamPatients),
        (Method::Get, ["me", "patient"]) => Some(Api::OwnRecord),
        (Method::Post, ["patients", id, "lab-orders"]) => patient(id).map(Api::OrderLabTest),
        (Method::Get, ["patients", id, "lab-orders"]) => patient(id).map(Api::PatientLabOrders),
        (Method::Get, ["admin", "labs"]) => Some(Api::Labs),
        (Method::Post, ["admin", "labs"]) => Some(Api::RegisterLab),
        (Method::Put, ["admin", "labs", lab, "members", user]) => {
            Some(Api::AttachLabMember(LabId::parse(lab).ok()?, Opaque::parse(user).ok()?))
        }
        (Method::Delete, ["admin", "labs", lab, "members", user]) => {
            Some(Api::DetachLabMember(LabId::parse(lab).ok()?, Opaque::parse(user).ok()?))
        }
        (Method::Get, ["lab", "orders"]) => Some(Api::LabOrders),
        (Method::Post, ["lab", "orders", order, "results"]) => OrderId::parse(order).ok().map(Api::AddLabResult),
        (Method::Get, ["insurance", "patients", id, "summary"]) => patient(id).map(Api::Summary),
        (Method::Get, ["admin", "audit"]) => with_filter(AUDIT_PARAMS, Api::Audit),
        (Method::Get, ["admin", "audit", "export"]) => with_filter(AUDIT_PARAMS, Api::AuditExport),
        (Method::Get, ["admin", "audit", "verify"]) => Some(Api::AuditVerify),
        (Method::Get, ["admin", "break-glass"]) => with_filter(REVIEW_PARAMS, Api::BreakGlassReview),
        (Method::Delete, ["admin", "patients", id]) => patient(id).map(Api::ErasePatient),
        (Method::Post, ["admin", "patients"]) => Some(Api::RegisterPatient),
        (Method::Put, ["admin", "patients", id, "account"]) => patient(id).map(Api::LinkPatientAccount),
        (Method::Post, ["admin", "data-keys", "rotate"]) => Some(Api::RotateDataKey),
        (Method::Get, ["admin", "alerts"]) => {
            Some(alert_filter(path_and_query).map_or_else(Api::BadQuery, Api::Alerts))
        }
        // Alert ids are the alerts table's row ids: 1 to 18 digits, no sign, no leading zero.
        (Method::Post, ["admin", "alerts", id, "acknowledge"]) => {
            let valid = (1..=18).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_digit()) && !id.starts_with('0');
            valid.then(|| id.parse().ok()).flatten().map(Api::AcknowledgeAlert)
        }
        _ => None,
    }
}

/// Why a request body was refused (answered 400 with a generic detail).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("body is not the expected JSON object")]
    Malformed,
    #[error("a text field is empty or too long")]
    BadText,
    #[error("a field has an invalid value")]
    BadValue,
}

fn text(value: &str, max: usize) -> Result<(), BodyError> {
    if value.trim().is_empty() || value.len() > max || value.chars().any(|c| c.is_control() && c != '\n') {
        return Err(BodyError::BadText);
    }
    Ok(())
}

fn short(value: &str) -> Result<(), BodyError> {
    text(value, 64)
}

/// Parses a JSON body strictly: unknown members and duplicates are refused, then `validate`.
pub fn body<T: for<'de> Deserialize<'de> + Validate>(bytes: &[u8]) -> Result<T, BodyError> {
    if bytes.len() > MAX_BODY_BYTES {
        return Err(BodyError::Malformed);
    }
    let value: T = serde_json::from_slice(bytes).map_err(|_| BodyError::Malformed)?;
    value.validate()?;
    Ok(value)
}

pub trait Validate {
    fn validate(&self) -> Result<(), BodyError>;
}

/// A patient to register (`POST /api/admin/patients`): the hospital's own id for them when it
/// has one (importing twice then changes nothing), else one is made; demographics are sealed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPatient {
    #[serde(default)]
    pub patient_id: Option<PatientId>,
    pub given_name: String,
    pub family_name: String,
    /// `YYYY-MM-DD`, a real calendar date not after today's year.
    pub birth_date: String,
}

impl Validate for NewPatient {
    fn validate(&self) -> Result<(), BodyError> {
        text(&self.given_name, 128)?;
        text(&self.family_name, 128)?;
        if !calendar_date(&self.birth_date) {
            return Err(BodyError::BadValue);
        }
        Ok(())
    }
}

/// A patient's demographics replaced (`PUT /api/patients/{id}`): every field, sealed again.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemographicsUpdate {
    pub given_name: String,
    pub family_name: String,
    /// `YYYY-MM-DD`, as at registration.
    pub birth_date: String,
}

impl Validate for DemographicsUpdate {
    fn validate(&self) -> Result<(), BodyError> {
        text(&self.given_name, 128)?;
        text(&self.family_name, 128)?;
        if !calendar_date(&self.birth_date) {
            return Err(BodyError::BadValue);
        }
        Ok(())
    }
}

/// `YYYY-MM-DD` naming a day that exists (leap years included), from 1850 on.
pub fn calendar_date(text: &str) -> bool {
    let bytes = text.as_bytes();
    if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' {
        return false;
    }
    let number = |range: std::ops::Range<usize>| -> Option<u32> {
        let part = &text[range];
        part.bytes().all(|b| b.is_ascii_digit()).then(|| part.parse().ok()).flatten()
    };
    let (Some(year), Some(month), Some(day)) = (number(0..4), number(5..7), number(8..10)) else {
        return false;
    };
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1850..=9999).contains(&year) && (1..=days).contains(&day)
}

/// The account to link to a patient record (`PUT /api/admin/patients/{id}/account`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatientAccount {
    pub user_id: Opaque,
}

impl Validate for PatientAccount {
    fn validate(&self) -> Result<(), BodyError> {
        Ok(())
    }
}

/// Kinds of record entries (which of them a role reads and writes is the policy's:
/// `health_policy::permissions`). An `observation` is a vital-sign reading (a nurse's or a
/// doctor's).
pub const ENTRY_KINDS: &[&str] = &["diagnosis", "medication", "allergy", "procedure", "note", "history", "observation"];

/// A new record entry (`POST .../records`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewEntry {
    pub kind: String,
    pub content: String,
}

impl Validate for NewEntry {
    fn validate(&self) -> Result<(), BodyError> {
        if !ENTRY_KINDS.contains(&self.kind.as_str()) {
            return Err(BodyError::BadValue);
        }
        text(&self.content, MAX_TEXT_BYTES)
    }
}

/// Largest reason of a correction, in bytes.
pub const MAX_REASON_BYTES: usize = 1000;

/// A correction of an existing entry (`PUT .../records`): the new content and why. The old
/// content is kept as the entry's previous version, with its author, time and reason.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntryUpdate {
    pub entry_id: EntryId,
    pub content: String,
    /// Why the entry is corrected: free text (it may hold PHI, so it is sealed like the content).
    pub reason: String,
}

impl Validate for EntryUpdate {
    fn validate(&self) -> Result<(), BodyError> {
        text(&self.content, MAX_TEXT_BYTES)?;
        text(&self.reason, MAX_REASON_BYTES)
    }
}

/// A break-glass request: the stated reason is mandatory and goes to the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakGlass {
    pub reason: String,
}

impl Validate for BreakGlass {
    fn validate(&self) -> Result<(), BodyError> {
        // A reason someone can review: at least a few words, at most a paragraph.
        if self.reason.trim().len() < 10 {
            return Err(BodyError::BadText);
        }
        text(&self.reason, 1000)
    }
}

/// A patient's consent for one insurer, until `expires_at` (Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Consent {
    pub insurer: ClientId,
    pub expires_at: i64,
}

impl Validate for Consent {
    fn validate(&self) -> Result<(), BodyError> {
        Ok(())
    }
}

/// A care-team membership (`POST .../care-team/{member}`): why, from when (Unix seconds,
/// default now) and until when (none: until ended). The service checks the times against its
/// clock (an end must lie ahead).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CareTeamMembership {
    pub reason: String,
    #[serde(default)]
    pub starts_at: Option<i64>,
    #[serde(default)]
    pub ends_at: Option<i64>,
}

impl Validate for CareTeamMembership {
    fn validate(&self) -> Result<(), BodyError> {
        if !CARE_TEAM_REASONS.contains(&self.reason.as_str()) {
            return Err(BodyError::BadValue);
        }
        match (self.starts_at, self.ends_at) {
            (Some(start), _) if start < 0 => Err(BodyError::BadValue),
            (Some(start), Some(end)) if end <= start => Err(BodyError::BadValue),
            _ => Ok(()),
        }
    }
}

/// A lab organisation to register (`POST /api/admin/labs`): its id and name (not PHI).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewLab {
    pub lab_id: LabId,
    pub name: String,
}

impl Validate for NewLab {
    fn validate(&self) -> Result<(), BodyError> {
        text(&self.name, 128)
    }
}

/// A test ordered from a lab organisation (`POST /api/patients/{id}/lab-orders`): the test's
/// code (e.g. LOINC), an optional display name, and an optional note to the lab, sealed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewLabOrder {
    pub lab_id: LabId,
    pub test_code: String,
    #[serde(default)]
    pub test_name: Option<String>,
    #[serde(default)]
    pub note: Option<String>,
}

impl Validate for NewLabOrder {
    fn validate(&self) -> Result<(), BodyError> {
        short(&self.test_code)?;
        self.test_name.as_deref().map_or(Ok(()), |n| text(n, 256))?;
        self.note.as_deref().map_or(Ok(()), |n| text(n, MAX_TEXT_BYTES))
    }
}

/// A lab result appended to an order.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabResult {
    /// The analyte (e.g. a LOINC code such as `4548-4`).
    pub code: String,
    pub value: String,
    pub unit: String,
    #[serde(default)]
    pub note: Option<String>,
}

impl Validate for LabResult {
    fn validate(&self) -> Result<(), BodyError> {
        short(&self.code)?;
        short(&self.value)?;
        short(&self.unit)?;
        self.note.as_deref().map_or(Ok(()), |n| text(n, MAX_TEXT_BYTES))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(id: &str) -> PatientId {
        PatientId::parse(id).unwrap()
    }

    #[test]
    fn parses_every_role_route() {
        assert_eq!(parse("GET", "/api/patients/p-1"), Some(Api::Demographics(p("p-1"))));
        assert_eq!(parse("GET", "/api/patients/p-1/records"), Some(Api::Records(p("p-1"))));
        assert_eq!(parse("POST", "/api/patients/p-1/records"), Some(Api::AddRecord(p("p-1"))));
        assert_eq!(parse("PUT", "/api/patients/p-1/records"), Some(Api::UpdateRecord(p("p-1"))));
        assert_eq!(parse("GET", "/api/patients/p-1/lab-results"), Some(Api::LabResults(p("p-1"))));
        assert_eq!(parse("POST", "/api/patients/p-1/break-glass"), Some(Api::BreakGlass(p("p-1"))));
        assert_eq!(parse("POST", "/api/patients/p-1/consents"), Some(Api::GrantConsent(p("p-1"))));
        assert_eq!(
            parse("DELETE", "/api/patients/p-1/consents?insurer=acme-health"),
            Some(Api::RevokeConsent(p("p-1"), ClientId::parse("acme-health").unwrap()))
        );
        assert_eq!(parse("GET", "/api/lab/orders"), Some(Api::LabOrders));
        assert_eq!(
            parse("POST", "/api/lab/orders/o-1/results"),
            Some(Api::AddLabResult(OrderId::parse("o-1").unwrap()))
        );
        assert_eq!(parse("GET", "/api/insurance/patients/p-1/summary"), Some(Api::Summary(p("p-1"))));
        assert_eq!(parse("GET", "/api/admin/audit/verify"), Some(Api::AuditVerify));
        assert_eq!(parse("DELETE", "/api/admin/patients/p-1"), Some(Api::ErasePatient(p("p-1"))));
        assert_eq!(parse("POST", "/api/admin/data-keys/rotate"), Some(Api::RotateDataKey));
        assert_eq!(parse("POST", "/api/admin/patients"), Some(Api::RegisterPatient));
        assert_eq!(parse("PUT", "/api/admin/patients/p-1/account"), Some(Api::LinkPatientAccount(p("p-1"))));
        assert_eq!(parse("PUT", "/api/admin/patients/P-1/account"), None);
        assert_eq!(parse("GET", "/api/patients/p-1/export"), Some(Api::Export(p("p-1"))));
        assert_eq!(
            parse("GET", "/api/patients/p-1/access-log"),
            Some(Api::AccessLog(p("p-1"), AccessLogQuery::default()))
        );
    }

    #[test]
    fn record_history_names_the_patient_and_the_entry() {
        let history = parse("GET", "/api/patients/p-1/records/e-1a2b/history");
        assert_eq!(history, Some(Api::RecordHistory(p("p-1"), EntryId::parse("e-1a2b").unwrap())));
        let api = history.unwrap();
        assert_eq!(api.patient(), Some(&p("p-1")));
        assert_eq!(api.template(), "GET /api/patients/{id}/records/{entry_id}/history");
        assert!(!api.takes_json());
        for (method, path) in [
            ("PUT", "/api/patients/p-1/records/e-1/history"),
            ("GET", "/api/patients/p-1/records/E 1/history"),
            ("GET", "/api/patients/p-1/records/e-1/history?version=2"),
            ("GET", "/api/patients/p-1/records/e-1"),
            ("GET", "/api/patients/p-1/records//history"),
        ] {
            assert_eq!(parse(method, path), None, "{method} {path}");
        }
        assert_eq!(
            audit_resource("/api/patients/p-1/records/e-1a2b/history"),
            "/api/patients/p-1/records/e-1a2b/history"
        );
    }

    #[test]
    fn a_correction_states_its_reason() {
        let update: EntryUpdate =
            body(br#"{"entry_id":"e-1","content":"Asthma, mild","reason":"Severity re-assessed"}"#).unwrap();
        assert_eq!(update.reason, "Severity re-assessed");
        assert_eq!(body::<EntryUpdate>(br#"{"entry_id":"e-1","content":"Asthma, mild"}"#), Err(BodyError::Malformed));
        for reason in ["", "   ", r"bell\u0007"] {
            let bad = format!(r#"{{"entry_id":"e-1","content":"x","reason":"{reason}"}}"#);
            assert_eq!(body::<EntryUpdate>(bad.as_bytes()), Err(BodyError::BadText), "{reason:?}");
        }
        let long = format!(r#"{{"entry_id":"e-1","content":"x","reason":"{}"}}"#, "a".repeat(MAX_REASON_BYTES + 1));
        assert_eq!(body::<EntryUpdate>(long.as_bytes()), Err(BodyError::BadText));
    }

    #[test]
    fn care_team_routes_name_the_patient_and_the_member() {
        let member = || Opaque::parse("u-dr-Grey_1").unwrap();
        assert_eq!(parse("GET", "/api/patients/p-1/care-team"), Some(Api::CareTeam(p("p-1"))));
        assert_eq!(
            parse("POST", "/api/patients/p-1/care-team/u-dr-Grey_1"),
            Some(Api::AddCareTeamMember(p("p-1"), member()))
        );
        assert_eq!(
            parse("DELETE", "/api/patients/p-1/care-team/u-dr-Grey_1"),
            Some(Api::EndCareTeamMembership(p("p-1"), member()))
        );
        assert_eq!(parse("GET", "/api/care-team/patients"), Some(Api::CareTeamPatients));
        assert_eq!(parse("GET", "/api/me/patient"), Some(Api::OwnRecord));
        assert_eq!(parse("POST", "/api/me/patient"), None);
        for (method, path) in [
            ("POST", "/api/patients/p-1/care-team"),
            ("DELETE", "/api/patients/p-1/care-team"),
            ("GET", "/api/patients/p-1/care-team/u-x"),
            ("POST", "/api/patients/p-1/care-team/u.x"),
            ("DELETE", "/api/patients/p-1/care-team/u-x?reason=a"),
            ("GET", "/api/care-team/patients?all=1"),
            ("POST", "/api/care-team/patients"),
        ] {
            assert_eq!(parse(method, path), None, "{method} {path}");
        }
        assert!(Api::AddCareTeamMember(p("p-1"), member()).takes_json());
        assert_eq!(audit_resource("/api/patients/p-1/care-team/u-dr-grey"), "/api/patients/p-1/care-team/u-dr-grey");
        assert_eq!(audit_resource("/api/patients/p-1/care-team/u-Ab_9-Z"), "/api/patients/p-1/care-team/u-Ab_9-Z");
        assert_eq!(audit_resource("/api/patients/p-1/care-team/Ab_9-Z"), "/api/patients/p-1/care-team/*");
        assert_eq!(audit_resource("/api/patients/p-1/records/u-Ab_9-Z"), "/api/patients/p-1/records/*");
        let ok: CareTeamMembership = body(br#"{"reason":"referral","starts_at":10,"ends_at":20}"#).unwrap();
        assert_eq!((ok.starts_at, ok.ends_at), (Some(10), Some(20)));
        assert!(body::<CareTeamMembership>(br#"{"reason":"encounter"}"#).is_ok());
        for bad in [
            &br#"{"reason":"friendship"}"#[..],
            br#"{"reason":"referral","starts_at":20,"ends_at":20}"#,
            br#"{"reason":"referral","starts_at":-1}"#,
        ] {
            assert_eq!(body::<CareTeamMembership>(bad), Err(BodyError::BadValue));
        }
        assert_eq!(body::<CareTeamMembership>(br#"{"reason":"referral","member":"u-x"}"#), Err(BodyError::Malformed));
    }

    #[test]
    fn lab_routes_name_the_lab_the_member_and_the_patient() {
        let lab = || LabId::parse("lab-north").unwrap();
        let user = || Opaque::parse("u-lab_N1").unwrap();
        assert_eq!(parse("GET", "/api/admin/labs"), Some(Api::Labs));
        assert_eq!(parse("POST", "/api/admin/labs"), Some(Api::RegisterLab));
        assert_eq!(
            parse("PUT", "/api/admin/labs/lab-north/members/u-lab_N1"),
            Some(Api::AttachLabMember(lab(), user()))
        );
        assert_eq!(
            parse("DELETE", "/api/admin/labs/lab-north/members/u-lab_N1"),
            Some(Api::DetachLabMember(lab(), user()))
        );
        assert_eq!(parse("POST", "/api/patients/p-1/lab-orders"), Some(Api::OrderLabTest(p("p-1"))));
        assert_eq!(parse("GET", "/api/patients/p-1/lab-orders"), Some(Api::PatientLabOrders(p("p-1"))));
        for (method, path) in [
            ("PUT", "/api/admin/labs/lab.north/members/u-x"),
            ("PUT", "/api/admin/labs/lab-north/members/u x"),
            ("POST", "/api/admin/labs/lab-north/members/u-x"),
            ("GET", "/api/admin/labs/lab-north"),
            ("GET", "/api/admin/labs?all=1"),
            ("PUT", "/api/patients/p-1/lab-orders"),
            ("POST", "/api/patients/P-1/lab-orders"),
        ] {
            assert_eq!(parse(method, path), None, "{method} {path}");
        }
        assert!(Api::RegisterLab.takes_json() && Api::OrderLabTest(p("p-1")).takes_json());
        assert!(!Api::AttachLabMember(lab(), user()).takes_json());
        assert_eq!(Api::OrderLabTest(p("p-1")).patient(), Some(&p("p-1")));
        assert_eq!(Api::AttachLabMember(lab(), user()).patient(), None);
        assert_eq!(
            audit_resource("/api/admin/labs/lab-north/members/u-lab_N1"),
            "/api/admin/labs/lab-north/members/u-lab_N1"
        );
        assert_eq!(audit_resource("/api/patients/p-1/lab-orders"), "/api/patients/p-1/lab-orders");
        let order: NewLabOrder = body(br#"{"lab_id":"lab-north","test_code":"4548-4","note":"fasting"}"#).unwrap();
        assert_eq!((order.test_name, order.note.as_deref()), (None, Some("fasting")));
        assert_eq!(body::<NewLabOrder>(br#"{"lab_id":"lab north","test_code":"x"}"#), Err(BodyError::Malformed));
        assert_eq!(body::<NewLabOrder>(br#"{"lab_id":"l","test_code":" "}"#), Err(BodyError::BadText));
        assert_eq!(body::<NewLabOrder>(br#"{"lab_id":"l","test_code":"x","lab":"y"}"#), Err(BodyError::Malformed));
        assert_eq!(
            body::<NewLab>(br#"{"lab_id":"lab-north","name":"North Lab"}"#).map(|l| l.name),
            Ok("North Lab".into())
        );
        assert_eq!(body::<NewLab>(br#"{"lab_id":"lab-north","name":""}"#), Err(BodyError::BadText));
    }

    #[test]
    fn access_log_queries_are_validated() {
        assert_eq!(
            parse("GET", "/api/patients/p-1/access-log?format=fhir&after=7&limit=5"),
            Some(Api::AccessLog(p("p-1"), AccessLogQuery { format: LogFormat::Fhir, after: Some(7), limit: 5 }))
        );
        for (query, reason) in [
            ("format=xml", "bad_format"),
            ("limit=0", "bad_limit"),
            ("after=-1", "bad_after"),
            ("patient=p-2", "unknown_query_parameter"),
            ("format=json&format=fhir", "repeated_query_parameter"),
        ] {
            let path = format!("/api/patients/p-1/access-log?{query}");
            assert_eq!(parse("GET", &path), Some(Api::BadQuery(Reason::parse(reason).expect("a reason"))), "{query}");
        }
        assert_eq!(parse("GET", "/api/patients/p-1/export?format=fhir"), None);
        assert_eq!(parse("POST", "/api/patients/p-1/access-log"), None);
        assert_eq!(audit_resource("/api/patients/p-1/access-log?format=fhir"), "/api/patients/p-1/access-log?format");
    }

    #[test]
    fn refuses_unknown_methods_paths_and_invalid_ids() {
        for (method, path) in [
            ("DELETE", "/api/patients/p-1/records"),
            ("GET", "/api/patients/P-1/records"),
            ("GET", "/api/patients/..%2f/records"),
            ("GET", "/api/patients/p-1/records/"),
            ("GET", "/api/patients//records"),
            ("GET", "/patients/p-1/records"),
            ("POST", "/api/insurance/patients/p-1/summary"),
            ("PATCH", "/api/patients/p-1/records"),
            ("GET", "/api/patients/p-1/records?role=doctor"),
            ("GET", "/api/lab/orders/o-1/results"),
        ] {
            assert_eq!(parse(method, path), None, "{method} {path}");
        }
    }

    #[test]
    fn audit_filters_are_validated() {
        let Some(Api::Audit(filter)) =
            parse("GET", "/api/admin/audit?from=10&to=20&actor=u-alice&outcome=deny&limit=5&jti=AbC_-1")
        else {
            panic!("audit query did not parse");
        };
        assert_eq!((filter.from, filter.to, filter.limit), (Some(10), Some(20), 5));
        assert_eq!(filter.outcome, Some("deny"));
        assert_eq!(filter.actor.unwrap().as_str(), "u-alice");
        assert_eq!(parse("GET", "/api/admin/audit").map(|a| matches!(a, Api::Audit(f) if f.limit == 100)), Some(true));
        for (query, reason) in [
            ("limit=0", "bad_limit"),
            ("limit=1001", "bad_limit"),
            ("from=-1", "bad_from"),
            ("after=x", "bad_after"),
            ("jti=a.b", "bad_jti"),
            ("actor=a'b", "bad_actor"),
            ("outcome=maybe", "bad_outcome"),
            ("role=admin", "unknown_query_parameter"),
            ("from=1&from=2", "repeated_query_parameter"),
        ] {
            assert_eq!(
                parse("GET", &format!("/api/admin/audit?{query}")),
                Some(Api::BadQuery(Reason::parse(reason).expect("a reason"))),
                "{query}"
            );
        }
        assert_eq!(parse("GET", "/api/admin/break-glass?actor=x"), Some(Api::BadQuery(Reason::UnknownQueryParameter)));
        assert_eq!(parse("DELETE", "/api/patients/p-1/consents"), Some(Api::BadQuery(Reason::InsurerRequired)));
    }

    #[test]
    fn alert_routes_take_a_status_filter_and_a_numeric_id() {
        let Some(Api::Alerts(filter)) = parse("GET", "/api/admin/alerts?status=open&after=3&limit=10") else {
            panic!("alert list did not parse");
        };
        assert_eq!(filter, AlertFilter { acknowledged: Some(false), after: Some(3), limit: 10 });
        assert_eq!(parse("GET", "/api/admin/alerts"), Some(Api::Alerts(AlertFilter::default())));
        assert_eq!(parse("GET", "/api/admin/alerts?status=closed"), Some(Api::BadQuery(Reason::BadStatus)));
        assert_eq!(parse("GET", "/api/admin/alerts?actor=x"), Some(Api::BadQuery(Reason::UnknownQueryParameter)));
        assert_eq!(parse("POST", "/api/admin/alerts/17/acknowledge"), Some(Api::AcknowledgeAlert(17)));
        for bad in ["0", "017", "-1", "x", "1234567890123456789", "1e3"] {
            assert_eq!(parse("POST", &format!("/api/admin/alerts/{bad}/acknowledge")), None, "{bad}");
        }
        assert_eq!(parse("POST", "/api/admin/alerts/17/acknowledge?x=1"), None, "no query");
        assert_eq!(parse("GET", "/api/admin/alerts/17/acknowledge"), None);
        assert_eq!(audit_resource("/api/admin/alerts/17/acknowledge"), "/api/admin/alerts/17/acknowledge");
        assert_eq!(bad_query_detail(Reason::BadStatus), "query parameter status is not valid");
    }

    #[test]
    fn audit_resources_keep_no_token_text_or_query_values() {
        let jwt = "eyJhbGciOiJSUzI1NiIsInR5cCI6ImF0K2p3dCJ9.eyJzdWIiOiJ1LWFsaWNlIn0.c2ln";
        for (target, want) in [
            ("/api/patients/p-1001/records", "/api/patients/p-1001/records".to_owned()),
            (
                &format!("/api/patients/p-1001/records?access_token={jwt}"),
                "/api/patients/p-1001/records?access_token".into(),
            ),
            (&format!("/api/patients/{jwt}/records"), "/api/patients/*/records".into()),
            (&format!("/api/admin/audit?jti=x&{jwt}=1&from=2"), "/api/admin/audit?jti&*&from".into()),
            ("/api/patients/p-1003/records/", "/api/patients/p-1003/records/".into()),
            ("/api/x%2e%2e/Y?", "/api/*/*?".into()),
        ] {
            assert_eq!(audit_resource(target), want, "{target}");
        }
        assert!(audit_resource(&format!("/api/{}", "a/".repeat(500))).len() <= 256);
        assert_eq!(bad_query_detail(Reason::BadJti), "query parameter jti is not valid");
    }

    #[test]
    fn bodies_are_strict() {
        let entry: NewEntry = body(br#"{"kind":"diagnosis","content":"Asthma (J45)"}"#).unwrap();
        assert_eq!(entry.kind, "diagnosis");
        assert_eq!(
            body::<NewEntry>(br#"{"kind":"diagnosis","content":"x","role":"admin"}"#),
            Err(BodyError::Malformed)
        );
        assert_eq!(body::<NewEntry>(br#"{"kind":"bogus","content":"x"}"#), Err(BodyError::BadValue));
        assert_eq!(body::<NewEntry>(br#"{"kind":"note","content":"  "}"#), Err(BodyError::BadText));
        assert_eq!(body::<BreakGlass>(br#"{"reason":"why"}"#), Err(BodyError::BadText));
        assert!(body::<BreakGlass>(br#"{"reason":"Unconscious in ED, no care team on shift"}"#).is_ok());
        assert_eq!(body::<Consent>(br#"{"insurer":"a b","expires_at":1}"#), Err(BodyError::Malformed));
        let big = format!(r#"{{"kind":"note","content":"{}"}}"#, "a".repeat(MAX_TEXT_BYTES + 1));
        assert_eq!(body::<NewEntry>(big.as_bytes()), Err(BodyError::BadText));
        assert_eq!(
            body::<LabResult>(br#"{"code":"4548-4","value":"6.1","unit":"%","note":"bell\u0007"}"#),
            Err(BodyError::BadText)
        );
    }

    #[test]
    fn a_new_patient_needs_names_and_a_real_birth_date() {
        let patient: NewPatient =
            body(br#"{"patient_id":"p-2001","given_name":"Ada","family_name":"Byron","birth_date":"1936-12-10"}"#)
                .expect("a valid patient");
        assert_eq!(patient.patient_id.map(|p| p.to_string()).as_deref(), Some("p-2001"));
        for date in ["2000-02-29", "1999-12-31", "1850-01-01"] {
            assert!(calendar_date(date), "{date}");
        }
        for date in ["1900-02-29", "2001-02-29", "2024-13-01", "2024-04-31", "24-01-01", "2024-1-01", "+024-01-01"] {
            assert!(!calendar_date(date), "{date}");
        }
        let without_id = br#"{"given_name":"Ada","family_name":"King","birth_date":"1990-01-01"}"#;
        assert_eq!(body::<NewPatient>(without_id).map(|p| p.patient_id), Ok(None));
        assert_eq!(
            body::<NewPatient>(br#"{"patient_id":"P 1","given_name":"A","family_name":"B","birth_date":"1990-01-01"}"#),
            Err(BodyError::Malformed)
        );
        assert_eq!(
            body::<NewPatient>(br#"{"given_name":" ","family_name":"B","birth_date":"1990-01-01"}"#),
            Err(BodyError::BadText)
        );
        assert_eq!(
            body::<PatientAccount>(br#"{"user_id":"u-ada"}"#).map(|a| a.user_id.to_string()),
            Ok("u-ada".into())
        );
    }

    #[test]
    fn demographics_are_edited_with_every_field_and_nothing_else() {
        assert_eq!(parse("PUT", "/api/patients/p-1"), Some(Api::EditDemographics(p("p-1"))));
        assert_eq!(parse("PUT", "/api/patients/p-1?x=1"), None);
        assert_eq!(parse("DELETE", "/api/patients/p-1"), None);
        let edit = Api::EditDemographics(p("p-1"));
        assert!(edit.takes_json());
        assert_eq!((edit.patient(), edit.template()), (Some(&p("p-1")), "PUT /api/patients/{id}"));
        let update: DemographicsUpdate =
            body(br#"{"given_name":"Ada","family_name":"King","birth_date":"1990-02-28"}"#).unwrap();
        assert_eq!(update.family_name, "King");
        for bad in [
            &br#"{"given_name":"Ada","family_name":"King"}"#[..],
            br#"{"given_name":"Ada","family_name":"King","birth_date":"1990-02-28","kind":"note"}"#,
        ] {
            assert_eq!(body::<DemographicsUpdate>(bad), Err(BodyError::Malformed));
        }
        let date = br#"{"given_name":"Ada","family_name":"King","birth_date":"1990-02-30"}"#;
        assert_eq!(body::<DemographicsUpdate>(date), Err(BodyError::BadValue));
        let name = br#"{"given_name":" ","family_name":"King","birth_date":"1990-02-28"}"#;
        assert_eq!(body::<DemographicsUpdate>(name), Err(BodyError::BadText));
        let observation: NewEntry = body(br#"{"kind":"observation","content":"BP 120/80"}"#).unwrap();
        assert_eq!(observation.kind, "observation");
    }
}
