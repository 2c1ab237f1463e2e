//! The `jwks` component: the only place tenants' private keys exist in clear. It creates each
//! tenant's RS256 signing key (private half sealed under `master_key` in `private-keys`, public
//! half in `public-keys` where the gateway reads it), serves the JWK Sets, and signs access
//! tokens for `auth` over local service chaining. It has no outbound network at all.

// The Spin SDK and wit-bindgen macros expand to the component ABI's `unsafe` glue.
#![allow(unsafe_code)]

use anyhow::Context;
use health_core::audit::{Event, Outcome};
use health_core::{Problem, TenantId};
use health_jose::{Claims, KeyUse, TenantKeys};
use health_spin::respond::{self, Cache};
use rsa::RsaPrivateKey;
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use spin_sdk::http::{Method, Request, Response};
use spin_sdk::http_component;
use spin_sdk::key_value::Store;

/// Tenant whose keys are created on first use when `demo_tenant` is true.
const DEMO_TENANT: &str = "demo-hospital";
/// JWK Set cache lifetime. Must stay below the retiring window (the longest token lifetime)
/// so a verifier's cache never outlives a key's publication.
const JWKS_MAX_AGE_SECS: u32 = 300;
/// Largest sign request body accepted.
const MAX_BODY: usize = 8 * 1024;

#[derive(Debug, PartialEq, Eq)]
enum Api {
    AllKeys,
    TenantKeys(TenantId),
    Sign,
}

#[derive(Debug, PartialEq, Eq)]
enum Error {
    NotFound,
    MethodNotAllowed,
    BadRequest(&'static str),
    Unauthorized,
    TooLarge,
}

fn parse(method: &Method, path: &str) -> Result<Api, Error> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let api = match segments.as_slice() {
        [".well-known", "jwks.json"] => Api::AllKeys,
        ["jwk", tenant] => Api::TenantKeys(TenantId::parse(tenant).map_err(|_| Error::NotFound)?),
        ["internal", "sign"] => Api::Sign,
        _ => return Err(Error::NotFound),
    };
    let expected = if api == Api::Sign { Method::Post } else { Method::Get };
    if *method != expected {
        return Err(Error::MethodNotAllowed);
    }
    Ok(api)
}

fn error_response(error: &Error) -> Response {
    let problem = match error {
        Error::NotFound => Problem::not_found(),
        Error::MethodNotAllowed => Problem::method_not_allowed(),
        Error::BadRequest(detail) => Problem::bad_request(*detail),
        Error::Unauthorized => Problem::unauthorized(),
        Error::TooLarge => Problem::payload_too_large(),
    };
    respond::problem(&problem)
}

#[http_component]
fn handle(req: Request) -> Response {
    match route(&req) {
        Ok(Ok(response)) => response,
        Ok(Err(error)) => error_response(&error),
        Err(e) => {
            eprintln!("jwks: internal error: {e:#}");
            respond::problem(&Problem::internal())
        }
    }
}

fn route(req: &Request) -> anyhow::Result<Result<Response, Error>> {
    let api = match parse(req.method(), req.path()) {
        Ok(api) => api,
        Err(e) => return Ok(Err(e)),
    };
    let keys = Keys::open()?;
    if health_spin::var("demo_tenant")? == "true" {
        keys.ensure_tenant(&TenantId::parse(DEMO_TENANT)?)?;
    }
    match api {
        Api::AllKeys => {
            let mut all = Vec::new();
            for tenant in keys.tenants()? {
                if let Some(set) = keys.load(&tenant)? {
                    all.extend(set.published().cloned());
                }
            }
            Ok(Ok(respond::json(200, &serde_json::json!({ "keys": all }), Cache::Public(JWKS_MAX_AGE_SECS))))
        }
        Api::TenantKeys(tenant) => Ok(match keys.load(&tenant)? {
            Some(set) => {
                let published: Vec<_> = set.published().collect();
                Ok(respond::json(200, &serde_json::json!({ "keys": published }), Cache::Public(JWKS_MAX_AGE_SECS)))
            }
            None => Err(Error::NotFound),
        }),
        Api::Sign => sign(req, &keys),
    }
}

/// Signs the claims in the body after checking the chained caller's attestation, so only a
/// holder of `context_key` reaching this private endpoint can mint tokens.
fn sign(req: &Request, keys: &Keys) -> anyhow::Result<Result<Response, Error>> {
    if req.body().len() > MAX_BODY {
        return Ok(Err(Error::TooLarge));
    }
    let Ok(caller) = health_spin::verify_context(req)? else {
        return Ok(Err(Error::Unauthorized));
    };
    let Ok(claims) = serde_json::from_slice::<Claims>(req.body()) else {
        return Ok(Err(Error::BadRequest("body must be the access token claims")));
    };
    let ttl = health_spin::var_i64("access_token_ttl_secs")?;
    if claims.tenant_id != caller.tenant_id || claims.sub != caller.subject || claims.jti != caller.jti {
        return Ok(Err(Error::BadRequest("claims do not match the attested caller")));
    }
    if claims.exp.saturating_sub(claims.iat) > ttl || claims.exp <= claims.iat {
        return Ok(Err(Error::BadRequest("token lifetime out of bounds")));
    }
    let Some(set) = keys.load(&claims.tenant_id)? else {
        return Ok(Err(Error::NotFound));
    };
    if claims.iss != set.issuer {
        return Ok(Err(Error::BadRequest("issuer does not belong to the tenant")));
    }
    let active = set.active(KeyUse::Sig).context("tenant has no active signing key")?;
    let private = keys.private(&claims.tenant_id, &active.jwk.kid)?;
    let token = health_jose::sign_rs256(&private, &active.jwk.kid, &claims, &mut health_spin::rng())
        .context("signing access token")?;
    Ok(Ok(respond::json(200, &serde_json::json!({ "token": token, "kid": active.jwk.kid }), Cache::NoStore)))
}

/// The two key stores, seen through the tenant key model.
struct Keys {
    public: Store,
    private: Store,
}

fn public_key_name(tenant: &TenantId) -> String {
    format!("tenant/{tenant}")
}

fn private_key_name(tenant: &TenantId, kid: &str) -> String {
    format!("{tenant}/{kid}")
}

impl Keys {
    fn open() -> anyhow::Result<Self> {
        Ok(Self {
            public: Store::open("public-keys").context("opening public-keys")?,
            private: Store::open("private-keys").context("opening private-keys")?,
        })
    }

    fn tenants(&self) -> anyhow::Result<Vec<TenantId>> {
        let names = self.public.get_keys().context("listing public-keys")?;
        Ok(names.iter().filter_map(|n| n.strip_prefix("tenant/")).filter_map(|t| TenantId::parse(t).ok()).collect())
    }

    fn load(&self, tenant: &TenantId) -> anyhow::Result<Option<TenantKeys>> {
        let Some(bytes) = self.public.get(&public_key_name(tenant)).context("reading tenant keys")? else {
            return Ok(None);
        };
        Ok(Some(serde_json::from_slice(&bytes).context("decoding tenant keys")?))
    }

    fn private(&self, tenant: &TenantId, kid: &str) -> anyhow::Result<RsaPrivateKey> {
        let name = private_key_name(tenant, kid);
        let sealed = self.private.get(&name).context("reading private key")?.context("private key missing")?;
        let master = health_spin::secret_key("master_key")?;
        let der = master
            .open(name.as_bytes(), std::str::from_utf8(&sealed).context("sealed key is not text")?)
            .context("private key does not open under master_key")?;
        RsaPrivateKey::from_pkcs8_der(&der).context("decoding private key")
    }

    /// Creates the tenant's signing key if it has none. The private half is written first, under
    /// its own kid, so a concurrent creator can only ever publish a key whose private half exists.
    fn ensure_tenant(&self, tenant: &TenantId) -> anyhow::Result<()> {
        if self.public.exists(&public_key_name(tenant)).context("checking tenant keys")? {
            return Ok(());
        }
        let now = health_spin::now();
        let (private, record) = health_jose::generate_rs256(tenant, now, &mut health_spin::rng())?;
        let der = private.to_pkcs8_der().context("encoding private key")?;
        let name = private_key_name(tenant, &record.jwk.kid);
        let sealed = health_spin::secret_key("master_key")?.seal(name.as_bytes(), der.as_bytes(), &mut health_spin::rng());
        self.private.set(&name, sealed.as_bytes()).context("storing private key")?;
        let issuer = format!("{}/t/{tenant}", health_spin::var("issuer_base")?.trim_end_matches('/'));
        let kid = record.jwk.kid.clone();
        let set = TenantKeys { tenant_id: tenant.clone(), issuer, keys: vec![record] };
        self.public.set(&public_key_name(tenant), &serde_json::to_vec(&set)?).context("storing tenant keys")?;
        health_spin::audit::append(&Event {
            time: now,
            request_id: health_spin::random_id(),
            tenant_id: tenant.to_string(),
            kid: Some(kid),
            action: "key.create".into(),
            resource: format!("tenant/{tenant}/keys"),
            outcome: Some(Outcome::Allow),
            reason: "tenant_bootstrap".into(),
            status: 201,
            ..Event::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_public_and_private_routes() {
        assert_eq!(parse(&Method::Get, "/.well-known/jwks.json"), Ok(Api::AllKeys));
        assert_eq!(parse(&Method::Get, "/jwk/demo-hospital"), Ok(Api::TenantKeys(TenantId::parse("demo-hospital").unwrap())));
        assert_eq!(parse(&Method::Post, "/internal/sign"), Ok(Api::Sign));
    }

    #[test]
    fn refuses_bad_tenants_methods_and_unknown_paths() {
        assert_eq!(parse(&Method::Get, "/jwk/..%2Finternal"), Err(Error::NotFound));
        assert_eq!(parse(&Method::Get, "/jwk/a/b"), Err(Error::NotFound));
        assert_eq!(parse(&Method::Get, "/internal/sign"), Err(Error::MethodNotAllowed));
        assert_eq!(parse(&Method::Post, "/.well-known/jwks.json"), Err(Error::MethodNotAllowed));
    }
}
