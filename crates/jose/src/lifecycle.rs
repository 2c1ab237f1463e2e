//! Changes to a tenant's key set as a store without compare-and-set applies them: the store
//! reads the set, applies the change, writes it, reads it back and applies the change again
//! until what it read shows the change landed (a concurrent writer may have overwritten it
//! with a set read before). So each change here is safe to apply again to a set it already
//! changed, and says what state proves it landed ([`KeyChange::applied`]). Generating the keys
//! is the caller's (it is slow and random); these only decide.

use crate::jwk::{KeyRecord, KeyStatus, KeyUse, LifecycleError, TenantKeys};

/// One change to a tenant's key set, applied until [`KeyChange::applied`] holds.
pub trait KeyChange {
    /// Applies the change to `set`; applying it to a set it already changed changes nothing
    /// more. An error is a refusal on the set's current state (nothing to write).
    fn apply(&mut self, set: &mut TenantKeys) -> Result<(), LifecycleError>;

    /// Whether `set` shows the change landed.
    fn applied(&self, set: &TenantKeys) -> bool;
}

/// Which state proves a [`Rotation`] landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Landed {
    /// The new key is the active key of its use: an operator's rotation answers with it as
    /// the tenant's key.
    Active,
    /// The new key is in the set: a scheduled rotation only needs its successor published
    /// (it signs with it even if a concurrent rotation already retires it).
    Present,
}

/// A new key that becomes the active key of its use, the previous one retiring.
#[derive(Debug, Clone)]
pub struct Rotation {
    new: KeyRecord,
    now: i64,
    retiring_secs: i64,
    landed: Landed,
}

impl Rotation {
    /// An operator's or tenant admin's rotation to `new` at `now`; the key it replaces stays
    /// published for `retiring_secs` ([`TenantKeys::rotate`]). Landed when `new` is active.
    pub fn requested(new: KeyRecord, now: i64, retiring_secs: i64) -> Self {
        Self { new, now, retiring_secs, landed: Landed::Active }
    }

    /// A scheduled rotation to `new`: landed when `new` is in the set.
    pub fn scheduled(new: KeyRecord, now: i64, retiring_secs: i64) -> Self {
        Self { new, now, retiring_secs, landed: Landed::Present }
    }

    pub fn kid(&self) -> &str {
        &self.new.jwk.kid
    }
}

impl KeyChange for Rotation {
    fn apply(&mut self, set: &mut TenantKeys) -> Result<(), LifecycleError> {
        // Only once: a rotation already in the set, even if since retired by another, stays.
        if set.find(&self.new.jwk.kid).is_none() {
            set.rotate(self.new.clone(), self.now, self.retiring_secs);
        }
        Ok(())
    }

    fn applied(&self, set: &TenantKeys) -> bool {
        match self.landed {
            Landed::Active => set.active(self.new.jwk.key_use).is_some_and(|k| k.jwk.kid == self.new.jwk.kid),
            Landed::Present => set.find(&self.new.jwk.kid).is_some(),
        }
    }
}

/// Revokes a key; if it is the active key of its use when applied, `successor` becomes active
/// in the same write ([`TenantKeys::revoke_replacing`]).
#[derive(Debug, Clone)]
pub struct Revocation {
    kid: String,
    key_use: KeyUse,
    now: i64,
    successor: Option<KeyRecord>,
    /// Whether any application took `successor`.
    replaced: bool,
}

impl Revocation {
    /// Revokes `key` at `now`, with `successor` (see [`TenantKeys::revocation_needs_successor`])
    /// ready to replace it if it is still active when applied.
    pub fn of(key: &KeyRecord, successor: Option<KeyRecord>, now: i64) -> Self {
        Self { kid: key.jwk.kid.clone(), key_use: key.jwk.key_use, now, successor, replaced: false }
    }

    /// The successor's kid if an application took it.
    pub fn replaced_by(&self) -> Option<&str> {
        self.successor.as_ref().filter(|_| self.replaced).map(|s| s.jwk.kid.as_str())
    }
}

impl KeyChange for Revocation {
    fn apply(&mut self, set: &mut TenantKeys) -> Result<(), LifecycleError> {
        match &self.successor {
            Some(successor) => {
                let replaced = set.revoke_replacing(&self.kid, successor, self.now)?;
                self.replaced |= replaced;
                Ok(())
            }
            None => set.revoke(&self.kid, self.now),
        }
    }

    fn applied(&self, set: &TenantKeys) -> bool {
        set.find(&self.kid).is_some_and(|k| k.status == KeyStatus::Revoked)
            && (!self.replaced || set.active(self.key_use).is_some())
    }
}

/// Keys added to a set as they are (a bootstrap completing a set left without an active key).
#[derive(Debug, Clone)]
pub struct Addition {
    records: Vec<KeyRecord>,
}

impl Addition {
    pub fn new(records: Vec<KeyRecord>) -> Self {
        Self { records }
    }
}

impl KeyChange for Addition {
    fn apply(&mut self, set: &mut TenantKeys) -> Result<(), LifecycleError> {
        for record in &self.records {
            if set.find(&record.jwk.kid).is_none() {
                set.keys.push(record.clone());
            }
        }
        Ok(())
    }

    fn applied(&self, set: &TenantKeys) -> bool {
        self.records.iter().all(|r| set.find(&r.jwk.kid).is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwk::PublicJwk;
    use health_core::TenantId;

    fn record(kid: &str, key_use: KeyUse, status: KeyStatus) -> KeyRecord {
        let alg = match key_use {
            KeyUse::Sig => "ES256",
            KeyUse::Enc => "ECDH-ES+A256KW",
        };
        KeyRecord {
            jwk: PublicJwk {
                kty: "EC".into(),
                kid: kid.into(),
                key_use,
                alg: alg.into(),
                n: None,
                e: None,
                crv: Some("P-256".into()),
                x: Some("x".into()),
                y: Some("y".into()),
                tenant_id: TenantId::parse("t").unwrap(),
            },
            status,
            created_at: 0,
            not_after: None,
        }
    }

    fn set(keys: Vec<KeyRecord>) -> TenantKeys {
        TenantKeys { tenant_id: TenantId::parse("t").unwrap(), issuer: "i".into(), keys }
    }

    #[test]
    fn a_rotation_applied_twice_adds_its_key_once() {
        let mut keys = set(vec![record("old", KeyUse::Sig, KeyStatus::Active)]);
        let mut rotation = Rotation::requested(record("new", KeyUse::Sig, KeyStatus::Active), 100, 60);
        assert!(!rotation.applied(&keys));
        rotation.apply(&mut keys).unwrap();
        rotation.apply(&mut keys).unwrap();
        assert_eq!(keys.keys.len(), 2);
        assert!(rotation.applied(&keys));
        assert_eq!(keys.find("old").unwrap().status, KeyStatus::Retiring);
        assert_eq!(keys.find("old").unwrap().not_after, Some(160));
    }

    #[test]
    fn a_requested_rotation_has_landed_only_while_its_key_is_active_a_scheduled_one_once_present() {
        let mut keys = set(vec![record("old", KeyUse::Sig, KeyStatus::Active)]);
        let mut requested = Rotation::requested(record("a", KeyUse::Sig, KeyStatus::Active), 100, 60);
        let mut scheduled = Rotation::scheduled(record("b", KeyUse::Sig, KeyStatus::Active), 100, 60);
        requested.apply(&mut keys).unwrap();
        scheduled.apply(&mut keys).unwrap();
        // `b` retired `a`: `a` is in the set but no longer the tenant's key.
        assert!(!requested.applied(&keys));
        assert!(scheduled.applied(&keys));
        // Applying `a` again does not take it back: it landed once, and a later rotation won.
        requested.apply(&mut keys).unwrap();
        assert_eq!(keys.active(KeyUse::Sig).unwrap().jwk.kid, "b");
        assert_eq!(scheduled.kid(), "b");
    }

    #[test]
    fn a_rotation_overwritten_by_a_stale_write_is_applied_again() {
        let before = set(vec![record("old", KeyUse::Sig, KeyStatus::Active)]);
        let mut rotation = Rotation::requested(record("new", KeyUse::Sig, KeyStatus::Active), 100, 60);
        let mut keys = before.clone();
        rotation.apply(&mut keys).unwrap();
        // A concurrent writer stores what it read before the rotation: the rotation is gone.
        let mut keys = before;
        assert!(!rotation.applied(&keys));
        rotation.apply(&mut keys).unwrap();
        assert!(rotation.applied(&keys));
    }

    #[test]
    fn revoking_the_active_key_lands_with_its_successor_active() {
        let live = record("live", KeyUse::Sig, KeyStatus::Active);
        let mut keys = set(vec![live.clone(), record("enc", KeyUse::Enc, KeyStatus::Active)]);
        assert_eq!(keys.revocation_needs_successor("live", 5), Ok(true));
        let mut revocation = Revocation::of(&live, Some(record("next", KeyUse::Sig, KeyStatus::Active)), 5);
        assert!(!revocation.applied(&keys));
        assert_eq!(revocation.replaced_by(), None);
        revocation.apply(&mut keys).unwrap();
        assert!(revocation.applied(&keys));
        assert_eq!(revocation.replaced_by(), Some("next"));
        assert_eq!(keys.active(KeyUse::Sig).unwrap().jwk.kid, "next");
        // Applied again on the same set: already revoked, refused, nothing changes.
        assert_eq!(revocation.apply(&mut keys), Err(LifecycleError::AlreadyRevoked));
        assert_eq!(keys.keys.len(), 3);
    }

    #[test]
    fn a_revoked_key_that_a_stale_write_brought_back_is_revoked_again() {
        let live = record("live", KeyUse::Sig, KeyStatus::Active);
        let before = set(vec![live.clone()]);
        let mut revocation = Revocation::of(&live, Some(record("next", KeyUse::Sig, KeyStatus::Active)), 5);
        let mut keys = before.clone();
        revocation.apply(&mut keys).unwrap();
        // A concurrent rotation read the set before the revocation and wrote after it.
        let mut keys = before;
        keys.rotate(record("rotated", KeyUse::Sig, KeyStatus::Active), 6, 60);
        assert!(!revocation.applied(&keys));
        revocation.apply(&mut keys).unwrap();
        assert!(revocation.applied(&keys));
        assert_eq!(keys.find("live").unwrap().status, KeyStatus::Revoked);
        // `live` was only retiring this time, so the rotation's key stays the active one.
        assert_eq!(keys.active(KeyUse::Sig).unwrap().jwk.kid, "rotated");
        assert!(keys.find("next").is_none());
    }

    #[test]
    fn a_key_that_is_not_active_is_revoked_without_a_successor() {
        let old = record("old", KeyUse::Sig, KeyStatus::Retiring);
        let mut keys = set(vec![old.clone(), record("live", KeyUse::Sig, KeyStatus::Active)]);
        assert_eq!(keys.revocation_needs_successor("old", 5), Ok(false));
        assert_eq!(keys.revocation_needs_successor("nope", 5), Err(LifecycleError::UnknownKid));
        let mut revocation = Revocation::of(&old, None, 5);
        revocation.apply(&mut keys).unwrap();
        assert!(revocation.applied(&keys));
        assert_eq!(revocation.replaced_by(), None);
        assert_eq!(revocation.apply(&mut keys), Err(LifecycleError::AlreadyRevoked));
    }

    #[test]
    fn an_addition_lands_when_every_key_is_in_the_set() {
        let mut keys = set(vec![record("sig", KeyUse::Sig, KeyStatus::Revoked)]);
        assert!(!keys.is_complete());
        assert_eq!(TenantKeys::uses_to_create(Some(&keys)), [KeyUse::Sig, KeyUse::Enc]);
        let mut addition = Addition::new(vec![
            record("s2", KeyUse::Sig, KeyStatus::Active),
            record("e2", KeyUse::Enc, KeyStatus::Active),
        ]);
        assert!(!addition.applied(&keys));
        addition.apply(&mut keys).unwrap();
        addition.apply(&mut keys).unwrap();
        assert_eq!(keys.keys.len(), 3);
        assert!(addition.applied(&keys));
        assert!(keys.is_complete());
        assert!(TenantKeys::uses_to_create(Some(&keys)).is_empty());
        assert_eq!(TenantKeys::uses_to_create(None), [KeyUse::Sig, KeyUse::Enc]);
    }
}
