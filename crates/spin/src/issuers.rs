//! Which tenants accept which OpenID provider's access tokens at the gateway (issue 17 item 3),
//! in the `revocations` key-value store under `federation/issuer/{sha256(issuer)}`.
//!
//! The gateway holds no identity data: for a bearer token that is not the platform's it reads
//! here which tenants accept the token's issuer's access tokens, picks the one whose audience
//! the token names, and asks `auth` to verify the token for that tenant. `auth` writes the
//! entry whenever a tenant's provider settings change (`federation::publish_issuer`). The entry
//! only routes: `auth` decides from the tenant's stored settings, so a stale entry can refuse a
//! token, never accept one.

use anyhow::Context;
use health_core::TenantId;

use crate::kv::Kv;

/// One tenant accepting an issuer's access tokens, and the audience they must carry for it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Accepting {
    pub tenant: TenantId,
    pub audience: String,
}

/// Key of the tenants accepting `issuer`'s access tokens (hashed: an issuer is a URL).
pub fn key(issuer: &str) -> String {
    format!("federation/issuer/{}", health_core::sha256_hex(issuer))
}

/// The tenants accepting `issuer`'s access tokens, as last published.
pub fn accepting(kv: &impl Kv, issuer: &str) -> anyhow::Result<Vec<Accepting>> {
    let Some(bytes) = kv.get(&key(issuer))? else { return Ok(Vec::new()) };
    serde_json::from_slice(&bytes).context("stored issuer entry")
}

/// The one tenant among `accepting` whose audience the token's `aud` (a string or an array)
/// names; none when no tenant or more than one does.
pub fn tenant_for<'a>(accepting: &'a [Accepting], aud: &serde_json::Value) -> Option<&'a Accepting> {
    let names = |audience: &str| match aud {
        serde_json::Value::String(one) => one == audience,
        serde_json::Value::Array(many) => many.iter().any(|a| a.as_str() == Some(audience)),
        _ => false,
    };
    let mut matching = accepting.iter().filter(|a| names(&a.audience));
    match (matching.next(), matching.next()) {
        (Some(one), None) => Some(one),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tenant_is_the_one_whose_audience_the_token_names() {
        let at = |tenant: &str, audience: &str| Accepting {
            tenant: TenantId::parse(tenant).expect("tenant"),
            audience: audience.into(),
        };
        let list = [at("north", "n"), at("south", "s"), at("twin", "t"), at("twin-b", "t")];
        assert_eq!(tenant_for(&list, &serde_json::json!("n")).map(|a| a.tenant.as_str()), Some("north"));
        assert_eq!(tenant_for(&list, &serde_json::json!(["x", "s"])).map(|a| a.tenant.as_str()), Some("south"));
        assert_eq!(tenant_for(&list, &serde_json::json!(["n", "s"])), None, "two tenants named");
        assert_eq!(tenant_for(&list, &serde_json::json!("t")), None, "two tenants with one audience");
        assert_eq!(tenant_for(&list, &serde_json::json!("x")), None);
        assert_eq!(tenant_for(&list, &serde_json::json!(7)), None);
        let kv = crate::kv::Memory::default();
        assert!(accepting(&kv, "https://idp").expect("read").is_empty());
        assert!(key("https://idp").starts_with("federation/issuer/"));
    }
}
