//! The per-tenant discovery document (RFC 8414 authorization server metadata, published at the
//! OpenID Connect location `{issuer}/.well-known/openid-configuration`). Every value matches
//! what the platform's tokens and endpoints actually do.

use serde::Serialize;

/// Where the platform is reached from outside (`issuer_base`) and the tenant's signing
/// algorithms as its key set lists them.
pub struct Settings<'a> {
    pub issuer_base: &'a str,
    pub tenant: &'a str,
    pub signing_algs: Vec<String>,
    pub encryption_algs: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Metadata {
    pub issuer: String,
    pub jwks_uri: String,
    pub token_endpoint: String,
    pub introspection_endpoint: String,
    pub revocation_endpoint: String,
    pub grant_types_supported: Vec<&'static str>,
    /// No authorization endpoint: no browser redirect flows, so no response types (RFC 8414 §2).
    pub response_types_supported: Vec<&'static str>,
    pub subject_types_supported: Vec<&'static str>,
    pub scopes_supported: Vec<&'static str>,
    pub claims_supported: Vec<&'static str>,
    pub token_endpoint_auth_methods_supported: Vec<&'static str>,
    pub token_endpoint_auth_signing_alg_values_supported: Vec<&'static str>,
    pub introspection_endpoint_auth_methods_supported: Vec<&'static str>,
    pub introspection_endpoint_auth_signing_alg_values_supported: Vec<&'static str>,
    pub revocation_endpoint_auth_methods_supported: Vec<&'static str>,
    pub revocation_endpoint_auth_signing_alg_values_supported: Vec<&'static str>,
    /// Access tokens (RFC 9068) are signed with these.
    pub id_token_signing_alg_values_supported: Vec<String>,
    pub access_token_signing_alg_values_supported: Vec<String>,
    pub access_token_encryption_alg_values_supported: Vec<String>,
    pub access_token_encryption_enc_values_supported: Vec<&'static str>,
}

const AUTH_METHODS: [&str; 3] = ["client_secret_basic", "client_secret_post", "private_key_jwt"];
/// What `private_key_jwt` assertions may be signed with (the client's registered key decides).
const ASSERTION_ALGS: [&str; 3] = ["RS256", "ES256", "EdDSA"];

pub fn metadata(settings: &Settings<'_>) -> Metadata {
    let base = settings.issuer_base.trim_end_matches('/');
    Metadata {
        issuer: format!("{base}/t/{}", settings.tenant),
        jwks_uri: format!("{base}/jwk/{}", settings.tenant),
        token_endpoint: format!("{base}/auth/token"),
        introspection_endpoint: format!("{base}/auth/introspect"),
        revocation_endpoint: format!("{base}/auth/revoke"),
        // Only what `/auth/token` grants: passwords go to `/auth/login`, never to the token
        // endpoint (RFC 9700 §2.4 forbids the password grant).
        grant_types_supported: vec!["refresh_token", "client_credentials", crate::federation::TOKEN_EXCHANGE],
        response_types_supported: vec!["token"],
        subject_types_supported: vec!["public"],
        scopes_supported: vec![
            "patient/records.read",
            "patient/records.write",
            "patient/results.read",
            "consents.write",
            "lab/orders.read",
            "lab/results.write",
            "insurance/summary.read",
            "admin/audit.read",
            "admin/users.write",
            "patient/observations.write",
            "patient/demographics.read",
            "patient/demographics.write",
            "care-team.write",
            "patient/medications.read",
        ],
        claims_supported: vec![
            "iss",
            "sub",
            "aud",
            "exp",
            "iat",
            "nbf",
            "jti",
            "tenant_id",
            "role",
            "scope",
            "client_id",
            "amr",
            "auth_time",
        ],
        token_endpoint_auth_methods_supported: AUTH_METHODS.to_vec(),
        token_endpoint_auth_signing_alg_values_supported: ASSERTION_ALGS.to_vec(),
        introspection_endpoint_auth_methods_supported: AUTH_METHODS.to_vec(),
        introspection_endpoint_auth_signing_alg_values_supported: ASSERTION_ALGS.to_vec(),
        revocation_endpoint_auth_methods_supported: AUTH_METHODS.iter().copied().chain(["none"]).collect(),
        revocation_endpoint_auth_signing_alg_values_supported: ASSERTION_ALGS.to_vec(),
        id_token_signing_alg_values_supported: settings.signing_algs.clone(),
        access_token_signing_alg_values_supported: settings.signing_algs.clone(),
        access_token_encryption_alg_values_supported: settings.encryption_algs.clone(),
        access_token_encryption_enc_values_supported: vec!["A256GCM"],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_and_issuer_follow_the_base_url() {
        let doc = metadata(&Settings {
            issuer_base: "https://health.example/",
            tenant: "demo-hospital",
            signing_algs: vec!["RS256".into()],
            encryption_algs: vec!["ECDH-ES+A256KW".into()],
        });
        assert_eq!(doc.issuer, "https://health.example/t/demo-hospital");
        assert_eq!(doc.jwks_uri, "https://health.example/jwk/demo-hospital");
        assert_eq!(doc.token_endpoint, "https://health.example/auth/token");
        assert_eq!(doc.access_token_signing_alg_values_supported, ["RS256"]);
    }
}
