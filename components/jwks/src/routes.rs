//! The `jwks` API's routes: a request's method and path parsed into an [`Api`] before anything
//! is read or checked.

use health_core::TenantId;
use spin_sdk::http::Method;

use health_core::{Reason, Refusal};

#[derive(Debug, PartialEq, Eq)]
pub enum Api {
    AllKeys,
    TenantKeys(TenantId),
    Sign,
    Encrypt,
    Decrypt,
    Rotate,
    Revoke,
    ListKeys(TenantId),
    CreateTenant,
    RevokeToken,
    VerifyAudit(Chain),
    ExportAudit(Chain),
}

/// Which audit hash chain an operator or tenant admin reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chain {
    /// A tenant's own chain.
    Tenant(TenantId),
    /// Requests refused before any tenant could be verified ([`health_core::audit::NO_TENANT`]):
    /// the operator's alone.
    Unattributed,
}

impl Chain {
    pub fn parse(text: &str) -> Result<Self, Refusal> {
        if text == health_core::audit::NO_TENANT {
            return Ok(Chain::Unattributed);
        }
        TenantId::parse(text).map(Chain::Tenant).map_err(|_| Refusal::NotFound(Reason::NoSuchRoute))
    }

    /// The `tenant_id` its events are stored under.
    pub fn name(&self) -> &str {
        match self {
            Chain::Tenant(tenant) => tenant.as_str(),
            Chain::Unattributed => health_core::audit::NO_TENANT,
        }
    }
}

pub fn parse(method: &Method, path: &str) -> Result<Api, Refusal> {
    let tenant = |t: &str| TenantId::parse(t).map_err(|_| Refusal::NotFound(Reason::NoSuchRoute));
    let api = match health_spin::segments(path).as_slice() {
        [".well-known", "jwks.json"] => Api::AllKeys,
        ["jwk", t] => Api::TenantKeys(tenant(t)?),
        ["internal", "sign"] => Api::Sign,
        ["internal", "encrypt"] => Api::Encrypt,
        ["internal", "decrypt"] => Api::Decrypt,
        ["admin", "rotate-key"] => Api::Rotate,
        ["admin", "revoke-key"] => Api::Revoke,
        ["admin", "revoke-token"] => Api::RevokeToken,
        ["admin", "tenants"] => Api::CreateTenant,
        ["admin", "keys", t] => Api::ListKeys(tenant(t)?),
        ["admin", "audit", "verify", chain] => Api::VerifyAudit(Chain::parse(chain)?),
        ["admin", "audit", "export", chain] => Api::ExportAudit(Chain::parse(chain)?),
        _ => return Err(Refusal::NotFound(Reason::NoSuchRoute)),
    };
    let read =
        matches!(api, Api::AllKeys | Api::TenantKeys(_) | Api::ListKeys(_) | Api::VerifyAudit(_) | Api::ExportAudit(_));
    if *method != if read { Method::Get } else { Method::Post } {
        return Err(Refusal::MethodNotAllowed);
    }
    Ok(api)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_public_and_private_routes() {
        assert_eq!(parse(&Method::Get, "/.well-known/jwks.json"), Ok(Api::AllKeys));
        assert_eq!(
            parse(&Method::Get, "/jwk/demo-hospital"),
            Ok(Api::TenantKeys(TenantId::parse("demo-hospital").unwrap()))
        );
        assert_eq!(parse(&Method::Post, "/internal/sign"), Ok(Api::Sign));
        assert_eq!(parse(&Method::Post, "/admin/rotate-key"), Ok(Api::Rotate));
        assert_eq!(parse(&Method::Post, "/admin/revoke-key"), Ok(Api::Revoke));
        assert_eq!(
            parse(&Method::Get, "/admin/keys/demo-hospital"),
            Ok(Api::ListKeys(TenantId::parse("demo-hospital").unwrap()))
        );
        assert_eq!(parse(&Method::Get, "/admin/rotate-key"), Err(Refusal::MethodNotAllowed));
        assert_eq!(parse(&Method::Post, "/admin/tenants"), Ok(Api::CreateTenant));
        assert_eq!(parse(&Method::Post, "/internal/encrypt"), Ok(Api::Encrypt));
        assert_eq!(parse(&Method::Post, "/internal/decrypt"), Ok(Api::Decrypt));
        assert_eq!(parse(&Method::Post, "/admin/revoke-token"), Ok(Api::RevokeToken));
        assert_eq!(
            parse(&Method::Get, "/admin/audit/verify/demo-hospital"),
            Ok(Api::VerifyAudit(Chain::Tenant(TenantId::parse("demo-hospital").unwrap())))
        );
        assert_eq!(parse(&Method::Get, "/admin/audit/verify/_unattributed"), Ok(Api::VerifyAudit(Chain::Unattributed)));
        assert_eq!(
            parse(&Method::Get, "/admin/audit/export/_unattributed?after=3&limit=10"),
            Ok(Api::ExportAudit(Chain::Unattributed))
        );
        assert_eq!(parse(&Method::Get, "/admin/audit/export/_other"), Err(Refusal::NotFound(Reason::NoSuchRoute)));
        assert_eq!(parse(&Method::Post, "/admin/audit/export/demo-hospital"), Err(Refusal::MethodNotAllowed));
    }

    #[test]
    fn refuses_bad_tenants_methods_and_unknown_paths() {
        assert_eq!(parse(&Method::Get, "/jwk/..%2Finternal"), Err(Refusal::NotFound(Reason::NoSuchRoute)));
        assert_eq!(parse(&Method::Get, "/jwk/a/b"), Err(Refusal::NotFound(Reason::NoSuchRoute)));
        assert_eq!(parse(&Method::Get, "/internal/sign"), Err(Refusal::MethodNotAllowed));
        assert_eq!(parse(&Method::Post, "/.well-known/jwks.json"), Err(Refusal::MethodNotAllowed));
    }
}
