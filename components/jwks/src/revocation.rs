//! Revoking one access token by `jti` (`POST /admin/revoke-token`), for a tenant admin or the
//! operator already allowed to manage the tenant.

use anyhow::Context;
use health_core::audit::Event;
use health_core::{TenantId, TokenId};
use health_spin::respond::{self, Cache, Failure};
use health_spin::revocations;
use spin_sdk::http::Response;

use health_core::{Reason, Refusal};

/// Revokes one access token of `tenant` by `jti` until no token could still be valid. Only a
/// `jti` the tenant's audit log records as issued (a login, refresh or client-credentials grant
/// that answered 200) is revoked; any other is 404 and nothing is written, so `revoked: true`
/// always names a token that existed. The entry is scoped by tenant: it cannot touch a token
/// of another tenant, whatever `jti` is sent.
pub fn revoke_token(tenant: &TenantId, jti: &str, now: i64, event: &mut Event) -> Result<Response, Failure> {
    event.action = "token.revoke".into();
    event.jti = Some(jti.chars().take(128).collect());
    if jti.is_empty() || jti.len() > 128 {
        return Err(Refusal::BadRequest(Reason::MalformedRequest, "jti must be 1 to 128 characters".into()).into());
    }
    // The platform issues only token ids (`health_core::TokenId`): anything else was never issued.
    let jti = match TokenId::parse(jti) {
        Ok(jti) if issued(tenant, jti.as_str())? => jti,
        _ => return Err(Refusal::NotFound(Reason::UnknownJti).into()),
    };
    let until = now + health_spin::var_i64("access_token_ttl_secs")? + crate::CLOCK_TOLERANCE_SECS;
    revocations::revoke_jti(&revocations::open()?, tenant, &jti, until)?;
    let body = serde_json::json!({ "tenant_id": tenant, "jti": jti, "revoked": true, "until": until });
    Ok(respond::json(200, &body, Cache::NoStore))
}

/// Whether `tenant`'s audit log records issuing an access token with `jti` (`auth` audits every
/// issuance with its `jti`, and an issuance whose event cannot be written is not answered).
fn issued(tenant: &TenantId, jti: &str) -> anyhow::Result<bool> {
    use spin_sdk::sqlite::Value;
    const ISSUED: &str = "SELECT 1 FROM audit_events WHERE tenant_id = ? AND jti = ? AND status = 200
        AND action IN ('auth.login', 'auth.token.refresh', 'auth.token.client_credentials', 'auth.token.exchange',
            'auth.portal.login', 'auth.portal.refresh') LIMIT 1";
    let conn = health_spin::audit::open()?;
    let rows = conn
        .execute(ISSUED, &[Value::Text(tenant.to_string()), Value::Text(jti.to_owned())])
        .context("looking up an issued jti")?;
    Ok(rows.rows().next().is_some())
}
