//! `routes`: `health_core::routes::parse`, the one request grammar of the gateway and the role
//! services, and the JSON bodies those routes take (`routes::body`).
//!
//! Input: `method \0 path-and-query \0 body`.

use health_core::routes::{self, Api, BreakGlass, CareTeamMembership, Consent, EntryUpdate, LabResult, NewEntry};

pub fn run(data: &[u8]) {
    let mut parts = data.splitn(3, |&b| b == 0);
    let mut next = || parts.next().unwrap_or_default();
    let (method, path, body) = (String::from_utf8_lossy(next()), String::from_utf8_lossy(next()), next());
    bodies(body);
    let Some(api) = routes::parse(&method, &path) else { return };
    // Every route is under /api/ and its template names it without any id.
    assert!(path.starts_with("/api/"), "{api:?} parsed from {path:?}");
    if let Some(patient) = api.patient() {
        assert!(path.contains(&format!("/{}", patient.as_str())), "patient {patient:?} not in the path");
    }
    if path.contains('?') {
        let allowed = matches!(
            api,
            Api::Audit(_)
                | Api::AuditExport(_)
                | Api::BreakGlassReview(_)
                | Api::RevokeConsent(..)
                | Api::AccessLog(..)
                | Api::Alerts(_)
                | Api::BadQuery(_)
        );
        assert!(allowed, "{api:?} took a query string");
    }
    routes::query_pairs(&path);
    api.template();
    api.takes_json();
}

fn bodies(body: &[u8]) {
    // The bodies are parsed whatever the route, so every parser sees every body.
    drop(routes::body::<NewEntry>(body));
    drop(routes::body::<EntryUpdate>(body));
    drop(routes::body::<BreakGlass>(body));
    drop(routes::body::<Consent>(body));
    drop(routes::body::<LabResult>(body));
    drop(routes::body::<CareTeamMembership>(body));
}
