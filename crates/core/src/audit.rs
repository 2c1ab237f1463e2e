//! Audit events and their per-tenant SHA-256 hash chain (ARCHITECTURE.md §7). Each stored event
//! carries `hash = SHA-256(prev_hash || "\n" || event_json)`, so altering, removing or reordering
//! any row breaks every later link. Storage is elsewhere; this module is the format and the check.

use serde::{Deserialize, Serialize};

/// `prev_hash` of the first event of a tenant's chain.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Chain used for events that cannot be attributed to a tenant (e.g. unparseable tokens).
pub const NO_TENANT: &str = "_unattributed";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Allow,
    Deny,
    Error,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::Deny => "deny",
            Outcome::Error => "error",
        }
    }
}

/// One audit event with the fields of ARCHITECTURE.md §7. Never holds secrets or PHI.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub time: i64,
    pub request_id: String,
    pub tenant_id: String,
    pub actor_sub: Option<String>,
    pub actor_role: Option<String>,
    pub client_id: Option<String>,
    pub jti: Option<String>,
    pub kid: Option<String>,
    pub action: String,
    pub resource: String,
    pub patient_id: Option<String>,
    pub outcome: Option<Outcome>,
    pub reason: String,
    pub status: u16,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
    pub break_glass_reason: Option<String>,
    pub policy_version: Option<String>,
    /// The request's W3C trace id (`crate::trace`), so an event leads to its trace and logs.
    /// Left out of the JSON when unknown: events written before it existed hash as they did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// How long the gateway took to answer, in ms, up to the audit write: kept in its own
    /// column for the latency histograms, outside the hashed JSON (operational, not evidence).
    #[serde(skip)]
    pub duration_ms: Option<i64>,
    /// A correction of a record entry: which entry, which versions, and keyed digests of the
    /// old and new content, never the content (this database is not encrypted). Left out of
    /// the JSON when there is none: earlier events hash as they did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_change: Option<RecordChange>,
}

/// What a correction changed, as the audit log keeps it: the entry, the version it replaced and
/// the one it made, and HMAC-SHA256 digests of both contents (`crate::phi::content_digest`)
/// under a key derived from the patient's own key. Whoever holds the records can show which
/// text an event is about; the audit log alone reveals nothing, and after the patient's
/// erasure nobody can link a digest to any text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordChange {
    pub entry_id: String,
    pub from_version: i64,
    pub to_version: i64,
    pub old_digest: String,
    pub new_digest: String,
}

impl RecordChange {
    /// Whether it has the shape a role service sends: an entry id, consecutive versions and two
    /// 64-hex-digit digests (the gateway keeps nothing else in the log).
    pub fn is_well_formed(&self) -> bool {
        let digest = |d: &str| d.len() == 64 && d.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        crate::EntryId::parse(&self.entry_id).is_ok()
            && self.from_version >= 1
            && self.to_version == self.from_version.saturating_add(1)
            && digest(&self.old_digest)
            && digest(&self.new_digest)
    }
}

impl Event {
    /// Whether the event belongs in the break-glass review queue: a grant (its stated reason is
    /// recorded) or an access that only a break-glass grant allowed.
    pub fn flags_break_glass(&self) -> bool {
        self.break_glass_reason.is_some() || self.reason == "break_glass"
    }

    /// The event as exported under `audit_redaction = strict`: subjects and patients replaced
    /// by stable pseudonyms (SHA-256 of tenant and value, so one person's events still line up),
    /// and the client address, user agent and free-text break-glass reason dropped. A redacted
    /// export no longer verifies against the hash chain; `/api/admin/audit/verify` does that.
    pub fn redacted(mut self) -> Self {
        let pseudonym =
            |value: &str| format!("pseud-{}", &crate::sha256_hex(format!("{}/{value}", self.tenant_id))[..16]);
        self.actor_sub = self.actor_sub.as_deref().map(pseudonym);
        self.patient_id = self.patient_id.as_deref().map(pseudonym);
        // The resource may name a patient, user, order or client in any request, routed or not
        // (and rows written before resources were reduced hold raw paths and queries): keep its
        // shape only.
        self.resource = shape(&self.resource);
        self.client_ip = None;
        self.user_agent = None;
        self.break_glass_reason = self.break_glass_reason.map(|_| "[redacted]".into());
        // A record change stays: an entry id, version numbers and keyed digests name no person
        // and hold no text.
        self
    }
}

/// A resource with every identifier and query value gone: the API's path words stay, any other
/// segment becomes `*`, and of a query only the names of the API's parameters stay.
fn shape(resource: &str) -> String {
    use crate::routes::{AUDIT_PARAMS, PATH_WORDS};
    let (path, query) = match resource.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (resource, None),
    };
    let word = |part: &str| PATH_WORDS.contains(&part) || ["tenant", "users", "clients", "keys"].contains(&part);
    let mut out =
        path.split('/').take(16).map(|p| if p.is_empty() || word(p) { p } else { "*" }).collect::<Vec<_>>().join("/");
    if let Some(query) = query {
        let names = query.split('&').filter(|p| !p.is_empty()).take(16).map(|p| {
            let name = p.split_once('=').map_or(p, |(name, _)| name);
            if AUDIT_PARAMS.contains(&name) || name == "insurer" { name } else { "*" }
        });
        out.push('?');
        out.push_str(&names.collect::<Vec<_>>().join("&"));
    }
    out
}

/// The link hash of `event_json` after `prev_hash`.
pub fn link(prev_hash: &str, event_json: &str) -> String {
    crate::sha256_hex(format!("{prev_hash}\n{event_json}"))
}

/// A stored row of the chain, as read back for verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredLink {
    pub seq: i64,
    pub event_json: String,
    pub prev_hash: String,
    pub hash: String,
}

/// Where a chain first breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit chain broken at seq {seq}")]
pub struct ChainBroken {
    pub seq: i64,
}

/// Checks one tenant's rows, in `seq` order from 1, link by link.
pub fn verify_chain(rows: &[StoredLink]) -> Result<usize, ChainBroken> {
    let mut prev = GENESIS.to_owned();
    for (index, row) in rows.iter().enumerate() {
        let expected_seq = i64::try_from(index).unwrap_or(i64::MAX).saturating_add(1);
        if row.seq != expected_seq || row.prev_hash != prev || link(&prev, &row.event_json) != row.hash {
            return Err(ChainBroken { seq: row.seq });
        }
        prev = row.hash.clone();
    }
    Ok(rows.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(events: &[&str]) -> Vec<StoredLink> {
        let mut prev = GENESIS.to_owned();
        events
            .iter()
            .zip(1..)
            .map(|(json, seq)| {
                let hash = link(&prev, json);
                let row =
                    StoredLink { seq, event_json: (*json).to_owned(), prev_hash: prev.clone(), hash: hash.clone() };
                prev = hash;
                row
            })
            .collect()
    }

    #[test]
    fn strict_redaction_pseudonymises_people_and_drops_free_text() {
        let event = Event {
            tenant_id: "t1".into(),
            actor_sub: Some("u-dr-grey".into()),
            patient_id: Some("p-1002".into()),
            resource: "/api/patients/p-1002/records".into(),
            client_ip: Some("10.0.0.1:5000".into()),
            user_agent: Some("curl".into()),
            break_glass_reason: Some("Unconscious, no care team".into()),
            ..Event::default()
        };
        assert!(event.flags_break_glass());
        for raw in
            ["/api/patients/p-1003/records/", "/api/patients/p-1002/records?q=p-1002-secret", "tenant/t1/users/p-1002"]
        {
            let redacted = Event { resource: raw.into(), patient_id: None, ..event.clone() }.redacted();
            assert!(!redacted.resource.contains("p-100"), "{raw} -> {}", redacted.resource);
            assert!(!redacted.resource.contains("secret"), "{raw} -> {}", redacted.resource);
        }
        let redacted = event.clone().redacted();
        let text = serde_json::to_string(&redacted).unwrap();
        for secret in ["u-dr-grey", "p-1002", "10.0.0.1", "curl", "Unconscious"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert_eq!(redacted.actor_sub, event.clone().redacted().actor_sub, "pseudonyms are stable");
        assert_ne!(redacted.actor_sub, redacted.patient_id);
        let other_tenant = Event { tenant_id: "t2".into(), ..event }.redacted();
        assert_ne!(redacted.actor_sub, other_tenant.actor_sub, "pseudonyms differ per tenant");
    }

    #[test]
    fn a_record_change_is_kept_by_redaction_and_events_without_one_hash_as_before() {
        let change = RecordChange {
            entry_id: "e-1".into(),
            from_version: 1,
            to_version: 2,
            old_digest: "a".repeat(64),
            new_digest: "b".repeat(64),
        };
        assert!(change.is_well_formed());
        let event = Event { tenant_id: "t1".into(), record_change: Some(change.clone()), ..Event::default() };
        assert_eq!(event.clone().redacted().record_change, Some(change.clone()));
        let json = serde_json::to_string(&event).unwrap();
        assert_eq!(serde_json::from_str::<Event>(&json).unwrap(), event);
        let without = serde_json::to_string(&Event::default()).unwrap();
        assert!(!without.contains("record_change"), "{without}");
        for bad in [
            RecordChange { to_version: 3, ..change.clone() },
            RecordChange { from_version: 0, to_version: 1, ..change.clone() },
            RecordChange { old_digest: "A".repeat(64), ..change.clone() },
            RecordChange { new_digest: "b".repeat(63), ..change.clone() },
            RecordChange { entry_id: "E 1".into(), ..change.clone() },
        ] {
            assert!(!bad.is_well_formed(), "{bad:?}");
        }
    }

    #[test]
    fn intact_chain_verifies() {
        assert_eq!(verify_chain(&chain(&["a", "b", "c"])), Ok(3));
    }

    #[test]
    fn altered_removed_or_reordered_rows_are_detected() {
        let mut altered = chain(&["a", "b", "c"]);
        altered[1].event_json = "B".into();
        assert_eq!(verify_chain(&altered), Err(ChainBroken { seq: 2 }));
        let mut removed = chain(&["a", "b", "c"]);
        removed.remove(1);
        assert_eq!(verify_chain(&removed), Err(ChainBroken { seq: 3 }));
        let mut swapped = chain(&["a", "b", "c"]);
        swapped.swap(0, 1);
        assert!(verify_chain(&swapped).is_err());
    }
}
