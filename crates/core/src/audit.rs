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
