//! The `jwks` component: the only place tenants' private keys exist in clear. It creates each
//! tenant's RS256 signing key (private half sealed under `master_key` in `private-keys`, public
//! half in `public-keys` where the gateway reads it), serves the JWK Sets, and signs access
//! tokens for `auth` over local service chaining. It has no outbound network at all.
//!
//! The platform operator (bearer token whose SHA-256 is `operator_token_hash`) rotates, revokes
//! and lists keys through `/admin/...`. A rotated-out key stays published as `retiring` for the
//! longest token lifetime plus clock tolerance, then retires.

// The Spin SDK and wit-bindgen macros expand to the component ABI's `unsafe` glue.
#![allow(unsafe_code)]

use anyhow::Context;
use health_core::audit::{Event, Outcome};
use health_core::{Problem, TenantId};
use health_jose::{Claims, KeyStatus, KeyUse, LifecycleError, TenantKeys};
use rand_chacha::rand_core::SeedableRng;
use serde::Deserialize;
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
/// Largest request body accepted.
const MAX_BODY: usize = 8 * 1024;
/// Clock tolerance verifiers allow; a retiring key outlives the longest token by this much.
const CLOCK_TOLERANCE_SECS: i64 = 60;
/// Read-back rounds before a key-set update under contention gives up.
const UPDATE_ATTEMPTS: usize = 8;

#[derive(Debug, PartialEq, Eq)]
enum Api {
    AllKeys,
    TenantKeys(TenantId),
    Sign,
    Rotate,
    Revoke,
    ListKeys(TenantId),
    CreateTenant,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTenantRequest {
    tenant_id: TenantId,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateRequest {
    tenant_id: TenantId,
    #[serde(rename = "use", default = "sig")]
    key_use: KeyUse,
}

fn sig() -> KeyUse {
    KeyUse::Sig
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeRequest {
    tenant_id: TenantId,
    kid: String,
}

#[derive(Debug, PartialEq, Eq)]
enum Error {
    NotFound,
    MethodNotAllowed,
    BadRequest(&'static str),
    Unauthorized,
    TooLarge,
    UnsupportedMediaType,
    Conflict(&'static str),
}

fn parse(method: &Method, path: &str) -> Result<Api, Error> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let api = match segments.as_slice() {
        [".well-known", "jwks.json"] => Api::AllKeys,
        ["jwk", tenant] => Api::TenantKeys(TenantId::parse(tenant).map_err(|_| Error::NotFound)?),
        ["internal", "sign"] => Api::Sign,
        ["admin", "rotate-key"] => Api::Rotate,
        ["admin", "revoke-key"] => Api::Revoke,
        ["admin", "tenants"] => Api::CreateTenant,
        ["admin", "keys", tenant] => Api::ListKeys(TenantId::parse(tenant).map_err(|_| Error::NotFound)?),
        _ => return Err(Error::NotFound),
    };
    let expected = if matches!(api, Api::Sign | Api::Rotate | Api::Revoke | Api::CreateTenant) { Method::Post } else { Method::Get };
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
        Error::UnsupportedMediaType => Problem::unsupported_media_type(),
        Error::Conflict(detail) => Problem::conflict(*detail),
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
                if let Some(set) = keys.load(&tenant, health_spin::now())? {
                    all.extend(set.published(health_spin::now()).cloned());
                }
            }
            Ok(Ok(respond::json(200, &serde_json::json!({ "keys": all }), Cache::Public(JWKS_MAX_AGE_SECS))))
        }
        Api::TenantKeys(tenant) => Ok(match keys.load(&tenant, health_spin::now())? {
            Some(set) => {
                let published: Vec<_> = set.published(health_spin::now()).collect();
                Ok(respond::json(200, &serde_json::json!({ "keys": published }), Cache::Public(JWKS_MAX_AGE_SECS)))
            }
            None => Err(Error::NotFound),
        }),
        Api::Sign => sign(req, &keys),
        Api::Rotate | Api::Revoke | Api::ListKeys(_) | Api::CreateTenant => admin(req, api, &keys),
    }
}

/// The operator's key management. Every change is audited.
fn admin(req: &Request, api: Api, keys: &Keys) -> anyhow::Result<Result<Response, Error>> {
    let presented = req.header("authorization").and_then(|v| v.as_str()).and_then(|v| v.strip_prefix("Bearer "));
    let now = health_spin::now();
    if !presented.is_some_and(|token| health_core::token_matches_hash(token, &health_spin::var("operator_token_hash").unwrap_or_default())) {
        health_spin::audit::append(&Event {
            time: now,
            request_id: health_spin::random_id(),
            tenant_id: health_core::audit::NO_TENANT.into(),
            action: format!("{} {}", req.method(), req.path().chars().take(128).collect::<String>()),
            resource: "admin".into(),
            outcome: Some(Outcome::Deny),
            reason: if presented.is_some() { "bad_operator_token" } else { "missing_operator_token" }.into(),
            status: 401,
            client_ip: req.header("spin-client-addr").and_then(|v| v.as_str()).map(str::to_owned),
            ..Event::default()
        })?;
        return Ok(Err(Error::Unauthorized));
    }
    if let Api::ListKeys(tenant) = &api {
        let Some(set) = keys.load(tenant, now)? else { return Ok(Err(Error::NotFound)) };
        let listed: Vec<_> = set
            .keys
            .iter()
            .map(|k| {
                serde_json::json!({
                    "kid": k.jwk.kid, "use": k.jwk.key_use, "alg": k.jwk.alg, "status": k.status_at(now),
                    "created_at": k.created_at, "not_after": k.not_after,
                })
            })
            .collect();
        return Ok(Ok(respond::json(200, &serde_json::json!({ "tenant_id": tenant, "keys": listed }), Cache::NoStore)));
    }
    let json = req.header("content-type").and_then(|v| v.as_str()).is_some_and(|c| c.starts_with("application/json"));
    if !json {
        return Ok(Err(Error::UnsupportedMediaType));
    }
    if req.body().len() > MAX_BODY {
        return Ok(Err(Error::TooLarge));
    }
    let (tenant, kid, action) = match api {
        Api::Rotate => {
            let Ok(body) = serde_json::from_slice::<RotateRequest>(req.body()) else {
                return Ok(Err(Error::BadRequest("body must be {\"tenant_id\", \"use\": \"sig\"}")));
            };
            if body.key_use != KeyUse::Sig {
                return Ok(Err(Error::BadRequest("only signing keys (use = sig) exist so far")));
            }
            let Some(kid) = keys.rotate(&body.tenant_id, now)? else { return Ok(Err(Error::NotFound)) };
            (body.tenant_id, kid, "key.rotate")
        }
        Api::Revoke => {
            let Ok(body) = serde_json::from_slice::<RevokeRequest>(req.body()) else {
                return Ok(Err(Error::BadRequest("body must be {\"tenant_id\", \"kid\"}")));
            };
            match keys.revoke(&body.tenant_id, &body.kid, now)? {
                None | Some(Err(LifecycleError::UnknownKid)) => return Ok(Err(Error::NotFound)),
                Some(Err(LifecycleError::AlreadyRevoked)) => return Ok(Err(Error::Conflict("key already revoked"))),
                Some(Ok(())) => {}
            }
            (body.tenant_id, body.kid, "key.revoke")
        }
        Api::CreateTenant => {
            let Ok(body) = serde_json::from_slice::<CreateTenantRequest>(req.body()) else {
                return Ok(Err(Error::BadRequest("body must be {\"tenant_id\"}")));
            };
            if keys.load(&body.tenant_id, now)?.is_some() {
                return Ok(Err(Error::Conflict("tenant exists")));
            }
            keys.ensure_tenant(&body.tenant_id)?;
            let set = keys.load(&body.tenant_id, now)?.context("tenant keys just created")?;
            let kid = set.active(KeyUse::Sig).context("new tenant has no active key")?.jwk.kid.clone();
            return Ok(Ok(respond::json(201, &serde_json::json!({ "tenant_id": body.tenant_id, "kid": kid }), Cache::NoStore)));
        }
        Api::AllKeys | Api::TenantKeys(_) | Api::Sign | Api::ListKeys(_) => return Ok(Err(Error::NotFound)),
    };
    audit_key_event(&tenant, &kid, action, "operator", now)?;
    Ok(Ok(respond::json(200, &serde_json::json!({ "tenant_id": tenant, "kid": kid }), Cache::NoStore)))
}

fn audit_key_event(tenant: &TenantId, kid: &str, action: &str, reason: &str, now: i64) -> anyhow::Result<()> {
    health_spin::audit::append(&Event {
        time: now,
        request_id: health_spin::random_id(),
        tenant_id: tenant.to_string(),
        actor_role: Some("operator".into()),
        kid: Some(kid.to_owned()),
        action: action.into(),
        resource: format!("tenant/{tenant}/keys"),
        outcome: Some(Outcome::Allow),
        reason: reason.into(),
        status: 200,
        ..Event::default()
    })
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
    let now = health_spin::now();
    let Some(set) = keys.load(&claims.tenant_id, now)? else {
        return Ok(Err(Error::NotFound));
    };
    if claims.iss != set.issuer {
        return Ok(Err(Error::BadRequest("issuer does not belong to the tenant")));
    }
    let mut active = set.active(KeyUse::Sig).context("tenant has no active signing key")?.clone();
    let max_age = health_spin::var_i64("key_rotation_days")?.saturating_mul(86_400);
    if now.saturating_sub(active.created_at) > max_age {
        let kid = keys.scheduled_rotate(&claims.tenant_id, &active.jwk.kid, now)?;
        let set = keys.load(&claims.tenant_id, now)?.context("tenant keys vanished during rotation")?;
        active = set.find(&kid).context("rotated key missing")?.clone();
    }
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

    /// The tenant's keys, persisting any retiring key whose window ended by `now`.
    fn load(&self, tenant: &TenantId, now: i64) -> anyhow::Result<Option<TenantKeys>> {
        let Some(bytes) = self.public.get(&public_key_name(tenant)).context("reading tenant keys")? else {
            return Ok(None);
        };
        let mut set: TenantKeys = serde_json::from_slice(&bytes).context("decoding tenant keys")?;
        if set.retire_expired(now) {
            self.store(&set)?;
        }
        Ok(Some(set))
    }

    fn store(&self, set: &TenantKeys) -> anyhow::Result<()> {
        self.public.set(&public_key_name(&set.tenant_id), &serde_json::to_vec(set)?).context("storing tenant keys")
    }

    /// Generates a key from `rng` and seals its private half under `master_key` (AAD = tenant/kid).
    fn generate(
        &self,
        tenant: &TenantId,
        now: i64,
        rng: &mut (impl rand_core::RngCore + rand_core::CryptoRng),
    ) -> anyhow::Result<health_jose::KeyRecord> {
        let (private, record) = health_jose::generate_rs256(tenant, now, rng)?;
        let der = private.to_pkcs8_der().context("encoding private key")?;
        let name = private_key_name(tenant, &record.jwk.kid);
        let sealed = health_spin::secret_key("master_key")?.seal(name.as_bytes(), der.as_bytes(), &mut health_spin::rng());
        self.private.set(&name, sealed.as_bytes()).context("storing private key")?;
        Ok(record)
    }

    /// Read-modify-write of a tenant's key set that survives concurrent writers: Spin's
    /// key-value store has no compare-and-swap, so after writing, the set is read back and
    /// `change` re-applied until `applied` holds (e.g. a revocation a concurrent rotation
    /// overwrote is written again on top of the rotation).
    fn update(
        &self,
        tenant: &TenantId,
        now: i64,
        mut change: impl FnMut(&mut TenantKeys) -> Result<(), LifecycleError>,
        applied: impl Fn(&TenantKeys) -> bool,
    ) -> anyhow::Result<Option<Result<(), LifecycleError>>> {
        let mut first = None;
        for _ in 0..UPDATE_ATTEMPTS {
            let Some(mut set) = self.load(tenant, now)? else { return Ok(None) };
            if first.is_some() && applied(&set) {
                return Ok(first);
            }
            let outcome = change(&mut set);
            if outcome.is_err() {
                // Refused on the current state (e.g. already revoked): report the first answer.
                return Ok(Some(first.unwrap_or(outcome)));
            }
            self.store(&set)?;
            first.get_or_insert(Ok(()));
        }
        anyhow::bail!("key set of tenant {tenant:?} kept changing under concurrent updates")
    }

    /// Rotates the tenant's signing key; the new private half is stored before it is published.
    fn rotate(&self, tenant: &TenantId, now: i64) -> anyhow::Result<Option<String>> {
        if self.load(tenant, now)?.is_none() {
            return Ok(None);
        }
        let record = self.generate(tenant, now, &mut health_spin::rng())?;
        let kid = record.jwk.kid.clone();
        let retiring_secs = health_spin::var_i64("access_token_ttl_secs")? + CLOCK_TOLERANCE_SECS;
        let updated = self.update(
            tenant,
            now,
            |set| {
                if set.find(&kid).is_none() {
                    set.rotate(record.clone(), now, retiring_secs);
                }
                Ok(())
            },
            |set| set.active(KeyUse::Sig).is_some_and(|k| k.jwk.kid == kid),
        )?;
        Ok(updated.map(|_| kid))
    }

    /// Rotation on schedule, done lazily by the next signing (Spin has no scheduler). Every
    /// concurrent signer derives the same successor of `old_kid` from `master_key`, and adds
    /// it only if absent, so however many race there is exactly one rotation.
    fn scheduled_rotate(&self, tenant: &TenantId, old_kid: &str, now: i64) -> anyhow::Result<String> {
        let master = health_spin::secret_key("master_key")?;
        let seed = health_core::derive(&master, &format!("health-platform/scheduled-rotation/v1/{tenant}/{old_kid}"));
        let record = self.generate(tenant, now, &mut rand_chacha::ChaCha20Rng::from_seed(seed))?;
        let kid = record.jwk.kid.clone();
        let retiring_secs = health_spin::var_i64("access_token_ttl_secs")? + CLOCK_TOLERANCE_SECS;
        let mut added = false;
        self.update(
            tenant,
            now,
            |set| {
                if set.find(&kid).is_none() {
                    set.rotate(record.clone(), now, retiring_secs);
                    added = true;
                }
                Ok(())
            },
            |set| set.find(&kid).is_some(),
        )?
        .context("tenant keys vanished during rotation")?
        .map_err(|e| anyhow::anyhow!("scheduled rotation refused: {e}"))?;
        if added {
            audit_key_event(tenant, &kid, "key.rotate", "scheduled", now)?;
        }
        Ok(kid)
    }

    /// Revokes `kid` so that no concurrent update can bring it back.
    fn revoke(&self, tenant: &TenantId, kid: &str, now: i64) -> anyhow::Result<Option<Result<(), LifecycleError>>> {
        self.update(tenant, now, |set| set.revoke(kid, now), |set| set.find(kid).is_some_and(|k| k.status == KeyStatus::Revoked))
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

    /// Creates the tenant's signing key if it has none. Concurrent first requests race here
    /// with no compare-and-swap to arbitrate, so the first key is derived deterministically
    /// (an RNG seeded with HMAC-SHA256(master_key, tenant)): every racer generates the same
    /// key and kid, and whichever write lands, tokens signed by any racer verify. This derives
    /// nothing a `master_key` holder could not already unseal; rotated keys are random.
    fn ensure_tenant(&self, tenant: &TenantId) -> anyhow::Result<()> {
        if self.public.exists(&public_key_name(tenant)).context("checking tenant keys")? {
            return Ok(());
        }
        let now = health_spin::now();
        let master = health_spin::secret_key("master_key")?;
        let seed = health_core::derive(&master, &format!("health-platform/bootstrap-signing-key/v1/{tenant}"));
        let record = self.generate(tenant, now, &mut rand_chacha::ChaCha20Rng::from_seed(seed))?;
        let issuer = format!("{}/t/{tenant}", health_spin::var("issuer_base")?.trim_end_matches('/'));
        let kid = record.jwk.kid.clone();
        self.store(&TenantKeys { tenant_id: tenant.clone(), issuer, keys: vec![record] })?;
        audit_key_event(tenant, &kid, "key.create", "tenant_bootstrap", now)
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
        assert_eq!(parse(&Method::Post, "/admin/rotate-key"), Ok(Api::Rotate));
        assert_eq!(parse(&Method::Post, "/admin/revoke-key"), Ok(Api::Revoke));
        assert_eq!(parse(&Method::Get, "/admin/keys/demo-hospital"), Ok(Api::ListKeys(TenantId::parse("demo-hospital").unwrap())));
        assert_eq!(parse(&Method::Get, "/admin/rotate-key"), Err(Error::MethodNotAllowed));
        assert_eq!(parse(&Method::Post, "/admin/tenants"), Ok(Api::CreateTenant));
    }

    #[test]
    fn refuses_bad_tenants_methods_and_unknown_paths() {
        assert_eq!(parse(&Method::Get, "/jwk/..%2Finternal"), Err(Error::NotFound));
        assert_eq!(parse(&Method::Get, "/jwk/a/b"), Err(Error::NotFound));
        assert_eq!(parse(&Method::Get, "/internal/sign"), Err(Error::MethodNotAllowed));
        assert_eq!(parse(&Method::Post, "/.well-known/jwks.json"), Err(Error::MethodNotAllowed));
    }
}
