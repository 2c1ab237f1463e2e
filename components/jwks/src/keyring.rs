//! The key store as this component wires it: Spin's `public-keys` and `private-keys` stores,
//! the `audit` database's one-time ledger as the arbiter, and the settings the store takes as
//! values (`master_key`, `issuer_base`, `access_token_ttl_secs`, `key_rotation_days`), read
//! here and only where a request needs them. Key creations and scheduled rotations are audited
//! here too.

use anyhow::Context;
use health_core::audit::{Event, Outcome};
use health_core::{SecretKey, TenantId};
use health_jose::{KeyRecord, TenantKeys};
use health_spin::keystore::{AuditLedger, KeyStore, Succession};
use spin_sdk::key_value::Store;

use crate::CLOCK_TOLERANCE_SECS;

/// The tenants' key sets, as every handler sees them.
pub type Keys<'s> = KeyStore<'s, Store, AuditLedger>;

/// The two key-value stores the key sets live in.
pub struct Stores {
    public: Store,
    private: Store,
}

impl Stores {
    pub fn open() -> anyhow::Result<Self> {
        Ok(Self { public: health_spin::kv::open("public-keys")?, private: health_spin::kv::open("private-keys")? })
    }

    pub fn keys(&self) -> Keys<'_> {
        KeyStore::new(&self.public, &self.private, &AuditLedger)
    }
}

/// The key private halves are sealed under.
pub fn master() -> anyhow::Result<SecretKey> {
    health_spin::secret_key("master_key")
}

/// How long a rotated-out key stays published: the longest token lifetime plus the clock
/// tolerance verifiers allow.
pub fn retiring_secs() -> anyhow::Result<i64> {
    Ok(health_spin::var_i64("access_token_ttl_secs")? + CLOCK_TOLERANCE_SECS)
}

/// Creates the tenant's signing and encryption keys if it lacks them (see
/// [`KeyStore::bootstrap`]), auditing each key this request created.
pub fn ensure_tenant(keys: &Keys, tenant: &TenantId) -> anyhow::Result<()> {
    let now = health_spin::now();
    let existing = keys.load(tenant, now)?;
    if existing.as_ref().is_some_and(TenantKeys::is_complete) {
        return Ok(());
    }
    let issuer = format!("{}/t/{tenant}", health_spin::var("issuer_base")?.trim_end_matches('/'));
    let created = keys.bootstrap(tenant, existing, &issuer, now, &master()?, &mut health_spin::rng())?;
    for kid in &created {
        audit_key_event(tenant, kid, "key.create", "tenant_bootstrap", now)?;
    }
    Ok(())
}

/// The key to sign or encrypt with: `active`, or, if it is older than `key_rotation_days`
/// allows, its successor (Spin has no scheduler, so the next use rotates it; see
/// [`KeyStore::scheduled_rotate`]). A rotation this request made is audited.
pub fn rotated_if_due(keys: &Keys, tenant: &TenantId, active: &KeyRecord, now: i64) -> anyhow::Result<KeyRecord> {
    let max_age = health_spin::var_i64("key_rotation_days")?.saturating_mul(86_400);
    if !active.due_for_rotation(max_age, now) {
        return Ok(active.clone());
    }
    let succession =
        keys.scheduled_rotate(tenant, active, now, retiring_secs()?, &master()?, &mut health_spin::rng())?;
    if let Succession::Rotated(kid) = &succession {
        audit_key_event(tenant, kid, "key.rotate", "scheduled", now)?;
    }
    let set = keys.load(tenant, now)?.context("tenant keys vanished during rotation")?;
    Ok(set.find(succession.kid()).context("rotated key missing")?.clone())
}

/// Records a key change `jwks` made on its own (a tenant's first keys, a scheduled rotation, a
/// revoked active key's successor) in the tenant's audit chain.
pub fn audit_key_event(tenant: &TenantId, kid: &str, action: &str, reason: &str, now: i64) -> anyhow::Result<()> {
    health_spin::audit::append(&Event {
        time: now,
        request_id: health_spin::random_id(),
        tenant_id: tenant.to_string(),
        actor_role: Some("jwks".into()),
        kid: Some(kid.to_owned()),
        action: action.into(),
        resource: format!("tenant/{tenant}/keys"),
        outcome: Some(Outcome::Allow),
        reason: reason.into(),
        status: 200,
        ..Event::default()
    })
}
