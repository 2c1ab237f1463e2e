//! Who may call an admin endpoint: the platform operator (a bearer token whose SHA-256 is the
//! `operator_token_hash` variable) for every tenant, or a tenant admin's access token, verified
//! in full, for its own tenant. Shared by `jwks` (keys) and `auth` (users and clients).

use health_core::audit::Event;
use health_core::{Opaque, TenantId, TokenId};
use spin_sdk::http::Request;

use crate::tokens;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The platform operator: every tenant.
    Operator,
    /// A tenant admin's verified access token: its own tenant only.
    TenantAdmin { tenant: TenantId, sub: Opaque, jti: TokenId },
}

impl Principal {
    pub fn may_manage(&self, tenant: &TenantId) -> bool {
        match self {
            Principal::Operator => true,
            Principal::TenantAdmin { tenant: own, .. } => own == tenant,
        }
    }

    /// The tenant an admin request acts on: the one named, which a tenant admin may omit.
    pub fn tenant_or<'a>(&'a self, named: Option<&'a TenantId>) -> Option<&'a TenantId> {
        match (self, named) {
            (_, Some(tenant)) => Some(tenant),
            (Principal::TenantAdmin { tenant, .. }, None) => Some(tenant),
            (Principal::Operator, None) => None,
        }
    }

    /// Audit actor fields.
    pub fn actor(&self, event: &mut Event) {
        match self {
            Principal::Operator => event.actor_role = Some("operator".into()),
            Principal::TenantAdmin { sub, jti, .. } => {
                event.actor_role = Some("admin".into());
                event.actor_sub = Some(sub.to_string());
                event.jti = Some(jti.to_string());
            }
        }
    }
}

/// The operator token, or else a tenant admin's access token verified in full (signature,
/// claims, revocation); `Err` carries the precise reason for the audit log.
pub fn authenticate(req: &Request, now: i64) -> anyhow::Result<Result<Principal, health_core::Reason>> {
    let token = match tokens::bearer_token(req) {
        Ok(token) => token,
        Err(reason) => return Ok(Err(reason)),
    };
    if health_core::token_matches_hash(token, &crate::var("operator_token_hash")?) {
        return Ok(Ok(Principal::Operator));
    }
    if token.split('.').count() != 3 {
        return Ok(Err(health_core::Reason::BadOperatorToken));
    }
    let claims = match tokens::verify(token, now)? {
        Ok(claims) => claims,
        Err(reason) => return Ok(Err(reason)),
    };
    if claims.role != "admin" {
        return Ok(Err(health_core::Reason::NotAnAdmin));
    }
    match tokens::ids(&claims) {
        Ok(ids) => Ok(Ok(Principal::TenantAdmin { tenant: claims.tenant_id, sub: ids.sub, jti: ids.jti })),
        Err(reason) => Ok(Err(reason)),
    }
}
