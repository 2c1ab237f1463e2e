//! The `jwks` component: the only place tenants' private keys exist in clear. It creates each
//! tenant's signing key (RS256 by default; ES256 or EdDSA on rotation) and encryption key
//! (ECDH-ES+A256KW by default; RSA-OAEP-256 on rotation), private halves sealed under
//! `master_key` in `private-keys`, public halves in `public-keys` where the gateway reads them.
//! It serves the JWK Sets, and over local service chaining signs access tokens, encrypts to a
//! tenant and decrypts JWEs (one uniform error for every decryption failure). It has no
//! outbound network at all.
//!
//! `/admin/...` takes the platform operator's token (SHA-256 in `operator_token_hash`) or a
//! tenant admin's access token for its own tenant: rotate, revoke and list keys, revoke a token
//! by `jti`, verify and export the tenant's audit chain; creating tenants, and reading the
//! `_unattributed` chain (requests no tenant could be verified for), are the operator's alone. A
//! rotated-out key stays published as `retiring` for the longest token lifetime plus clock
//! tolerance, then retires. Every admin action, allowed or refused, is audited.

// The Spin SDK and wit-bindgen macros expand to the component ABI's `unsafe` glue.
#![allow(unsafe_code)]

use anyhow::Context;
use health_core::audit::{Event, Outcome};
use health_core::routes::AuditFilter;
use health_core::{Problem, TenantId};
use health_jose::jwe::{self, JwePolicy};
use health_jose::{Algorithm, Claims, KeyRecord, KeyStatus, KeyUse, LifecycleError, PrivateKey, TenantKeys};
use health_spin::admin::{Principal, authenticate};
use health_spin::respond::{self, Cache};
use health_spin::tokens;
use serde::Deserialize;
use spin_sdk::http::{Method, Request, Response};
use spin_sdk::http_component;
use spin_sdk::key_value::Store;

/// Tenant whose keys are created on first use when `demo_tenant` is true.
const DEMO_TENANT: &str = "demo-hospital";
/// JWK Set cache lifetime. Must stay below the retiring window (the longest token lifetime)
/// so a verifier's cache never outlives a key's publication.
const JWKS_MAX_AGE_SECS: u32 = 300;
/// Largest request body accepted.
const MAX_BODY: usize = 32 * 1024;
/// Clock tolerance verifiers allow; a retiring key outlives the longest token by this much.
const CLOCK_TOLERANCE_SECS: i64 = 60;
/// Read-back rounds before a key-set update under contention gives up.
const UPDATE_ATTEMPTS: usize = 8;
/// How long a [`claim`] on a key-set change holds off other claimants (well above any key
/// generation), after which the one-time ledger's sweep lets a new claim through.
const KEY_CLAIM_SECS: i64 = 300;
/// How long a request that lost a [`claim`] waits for the winner's keys to be published.
const KEY_CLAIM_WAIT: std::time::Duration = std::time::Duration::from_secs(30);
/// The one answer to every failed decryption, whatever failed (no oracle).
const DECRYPTION_FAILED: &str = "JWE could not be decrypted";

#[derive(Debug, PartialEq, Eq)]
enum Api {
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
enum Chain {
    /// A tenant's own chain.
    Tenant(TenantId),
    /// Requests refused before any tenant could be verified ([`health_core::audit::NO_TENANT`]):
    /// the operator's alone.
    Unattributed,
}

impl Chain {
    fn parse(text: &str) -> Result<Self, Error> {
        if text == health_core::audit::NO_TENANT {
            return Ok(Chain::Unattributed);
        }
        TenantId::parse(text).map(Chain::Tenant).map_err(|_| Error::NotFound)
    }

    /// The `tenant_id` its events are stored under.
    fn name(&self) -> &str {
        match self {
            Chain::Tenant(tenant) => tenant.as_str(),
            Chain::Unattributed => health_core::audit::NO_TENANT,
        }
    }
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
    #[serde(rename = "use", default)]
    key_use: KeyUse,
    /// Algorithm of the new key; by default the current key's (or the platform default).
    alg: Option<Algorithm>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeRequest {
    tenant_id: TenantId,
    kid: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeTokenRequest {
    /// The token's tenant (a tenant admin's own); revocations are scoped by tenant.
    tenant_id: Option<TenantId>,
    jti: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EncryptRequest {
    plaintext: String,
    cty: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DecryptRequest {
    jwe: String,
}

#[derive(Debug, PartialEq, Eq)]
enum Error {
    NotFound,
    MethodNotAllowed,
    BadRequest(&'static str),
    Unauthorized,
    Forbidden,
    TooLarge,
    UnsupportedMediaType,
    Conflict(&'static str),
}

fn parse(method: &Method, path: &str) -> Result<Api, Error> {
    let tenant = |t: &str| TenantId::parse(t).map_err(|_| Error::NotFound);
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
        _ => return Err(Error::NotFound),
    };
    let read =
        matches!(api, Api::AllKeys | Api::TenantKeys(_) | Api::ListKeys(_) | Api::VerifyAudit(_) | Api::ExportAudit(_));
    if *method != if read { Method::Get } else { Method::Post } {
        return Err(Error::MethodNotAllowed);
    }
    Ok(api)
}

/// The RFC 9457 problem for each refusal: the one place its status is decided.
fn problem(error: &Error) -> Problem {
    match error {
        Error::NotFound => Problem::not_found(),
        Error::MethodNotAllowed => Problem::method_not_allowed(),
        Error::BadRequest(detail) => Problem::bad_request(*detail),
        Error::Unauthorized => Problem::unauthorized(),
        Error::Forbidden => Problem::forbidden(),
        Error::TooLarge => Problem::payload_too_large(),
        Error::UnsupportedMediaType => Problem::unsupported_media_type(),
        Error::Conflict(detail) => Problem::conflict(*detail),
    }
}

fn error_response(error: &Error) -> Response {
    respond::problem(&problem(error))
}

#[http_component]
async fn handle(incoming: spin_sdk::http::IncomingRequest) -> Response {
    let req = match health_spin::single_credential(incoming).await {
        Ok(req) => req,
        Err(refused) => return refused,
    };
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
    if req.body().len() > MAX_BODY {
        return Ok(Err(Error::TooLarge));
    }
    let keys = Keys::open()?;
    if health_spin::var("demo_tenant")? == "true" {
        keys.ensure_tenant(&TenantId::parse(DEMO_TENANT)?)?;
    }
    let now = health_spin::now();
    match api {
        Api::AllKeys => {
            let mut all = Vec::new();
            for tenant in keys.tenants()? {
                if let Some(set) = keys.load(&tenant, now)? {
                    all.extend(set.published(now).cloned());
                }
            }
            Ok(Ok(respond::json(200, &serde_json::json!({ "keys": all }), Cache::Public(JWKS_MAX_AGE_SECS))))
        }
        Api::TenantKeys(tenant) => Ok(match keys.load(&tenant, now)? {
            Some(set) => {
                let published: Vec<_> = set.published(now).collect();
                Ok(respond::json(200, &serde_json::json!({ "keys": published }), Cache::Public(JWKS_MAX_AGE_SECS)))
            }
            None => Err(Error::NotFound),
        }),
        Api::Sign => sign(req, &keys, now),
        Api::Encrypt => encrypt(req, &keys, now),
        Api::Decrypt => decrypt(req, &keys, now),
        Api::Rotate
        | Api::Revoke
        | Api::ListKeys(_)
        | Api::CreateTenant
        | Api::RevokeToken
        | Api::VerifyAudit(_)
        | Api::ExportAudit(_) => admin(req, api, &keys, now),
    }
}

/// Key, token and audit administration. Every attempt, allowed or refused, is audited; if the
/// audit write fails the change is reported as failed.
fn admin(req: &Request, api: Api, keys: &Keys, now: i64) -> anyhow::Result<Result<Response, Error>> {
    let mut event = Event {
        action: format!("{} {}", req.method(), req.path().chars().take(128).collect::<String>()),
        resource: "admin".into(),
        ..health_spin::audit::request_event(req, now)
    };
    let outcome = match authenticate(req, now)? {
        Err(reason) => {
            event.reason = reason.into();
            // A valid token of someone who is not an admin is authenticated, just not allowed.
            Err(if reason == "not_an_admin" { Error::Forbidden } else { Error::Unauthorized })
        }
        Ok(principal) => {
            principal.actor(&mut event);
            administer(req, api, keys, now, &principal, &mut event)?
        }
    };
    event.outcome = Some(if outcome.is_ok() { Outcome::Allow } else { Outcome::Deny });
    event.status = match &outcome {
        Ok(response) => *response.status(),
        Err(error) => problem(error).status,
    };
    if event.reason.is_empty() {
        event.reason = match &outcome {
            Ok(_) => "ok".into(),
            Err(e) => format!("{e:?}").to_lowercase().chars().take(64).collect(),
        };
    }
    health_spin::audit::append(&event)?;
    Ok(outcome)
}

fn json_body<T: serde::de::DeserializeOwned>(req: &Request, usage: &'static str) -> Result<T, Error> {
    let json = req.header("content-type").and_then(|v| v.as_str()).is_some_and(|c| c.starts_with("application/json"));
    if !json {
        return Err(Error::UnsupportedMediaType);
    }
    serde_json::from_slice(req.body()).map_err(|_| Error::BadRequest(usage))
}

/// An admin request with its body parsed, once.
enum Command {
    ListKeys(TenantId),
    VerifyAudit(Chain),
    ExportAudit(Chain, AuditFilter),
    Rotate(RotateRequest),
    Revoke(RevokeRequest),
    RevokeToken(RevokeTokenRequest),
    CreateTenant(CreateTenantRequest),
}

impl Command {
    fn parse(req: &Request, api: Api) -> Result<Self, Error> {
        Ok(match api {
            Api::ListKeys(t) => Command::ListKeys(t),
            Api::VerifyAudit(chain) => Command::VerifyAudit(chain),
            Api::ExportAudit(chain) => Command::ExportAudit(
                chain,
                health_core::routes::audit_query(req.path_and_query().unwrap_or_default()).map_err(|_| {
                    Error::BadRequest(
                        "query parameters: from, to, after (non-negative integers), limit (1 to 1000), actor, patient, jti, outcome (allow, deny or error), each once",
                    )
                })?,
            ),
            Api::Rotate => {
                Command::Rotate(json_body(req, "body must be {\"tenant_id\", \"use\": \"sig\"|\"enc\", \"alg\"?}")?)
            }
            Api::Revoke => Command::Revoke(json_body(req, "body must be {\"tenant_id\", \"kid\"}")?),
            Api::RevokeToken => Command::RevokeToken(json_body(req, "body must be {\"jti\", \"tenant_id\"}")?),
            Api::CreateTenant => Command::CreateTenant(json_body(req, "body must be {\"tenant_id\"}")?),
            Api::AllKeys | Api::TenantKeys(_) | Api::Sign | Api::Encrypt | Api::Decrypt => return Err(Error::NotFound),
        })
    }

    /// The audit chain an audit command reads, if it is one.
    fn chain(&self) -> Option<&Chain> {
        match self {
            Command::VerifyAudit(chain) | Command::ExportAudit(chain, _) => Some(chain),
            _ => None,
        }
    }

    /// The tenant the request is about; `None` only for a token revocation without one (refused).
    fn target(&self) -> Option<&TenantId> {
        match self {
            Command::ListKeys(t) => Some(t),
            Command::VerifyAudit(chain) | Command::ExportAudit(chain, _) => match chain {
                Chain::Tenant(t) => Some(t),
                Chain::Unattributed => None,
            },
            Command::Rotate(body) => Some(&body.tenant_id),
            Command::Revoke(body) => Some(&body.tenant_id),
            Command::RevokeToken(body) => body.tenant_id.as_ref(),
            Command::CreateTenant(body) => Some(&body.tenant_id),
        }
    }
}

fn administer(
    req: &Request,
    api: Api,
    keys: &Keys,
    now: i64,
    principal: &Principal,
    event: &mut Event,
) -> anyhow::Result<Result<Response, Error>> {
    let command = match Command::parse(req, api) {
        Ok(command) => command,
        Err(e) => return Ok(Err(e)),
    };
    if command.chain() == Some(&Chain::Unattributed) {
        // Recorded in the chain it reads; a tenant admin's refused attempt goes to its own.
        event.tenant_id = health_core::audit::NO_TENANT.into();
        event.resource = format!("audit/{}", health_core::audit::NO_TENANT);
        if let Principal::TenantAdmin { tenant, .. } = principal {
            event.tenant_id = tenant.to_string();
            event.reason = "operator_only".into();
            return Ok(Err(Error::Forbidden));
        }
        return audit_command(&command, event);
    }
    // The tenant the request is about, then whether this principal may act on it.
    let Some(target) = command.target().cloned() else {
        return Ok(Err(Error::BadRequest("tenant_id is required")));
    };
    event.tenant_id = target.to_string();
    event.resource = format!("tenant/{target}");
    let operator_only = matches!(command, Command::CreateTenant(_));
    if !principal.may_manage(&target) || (operator_only && *principal != Principal::Operator) {
        event.reason = "other_tenant_or_operator_only".into();
        // The tenant admin's own chain records the attempt too.
        if let Principal::TenantAdmin { tenant, .. } = principal {
            event.tenant_id = tenant.to_string();
        }
        return Ok(Err(Error::Forbidden));
    }
    let set = keys.load(&target, now)?;
    if let Command::CreateTenant(_) = command {
        if set.is_some() {
            return Ok(Err(Error::Conflict("tenant exists")));
        }
        keys.ensure_tenant(&target)?;
        let set = keys.load(&target, now)?.context("tenant keys just created")?;
        let kid = set.active(KeyUse::Sig).context("new tenant has no active key")?.jwk.kid.clone();
        event.action = "tenant.create".into();
        let body = serde_json::json!({ "tenant_id": target, "kid": kid });
        return Ok(Ok(respond::json(201, &body, Cache::NoStore)));
    }
    let Some(set) = set else {
        return Ok(Err(Error::NotFound));
    };
    let (kid, action) = match command {
        Command::ListKeys(tenant) => {
            event.action = "key.list".into();
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
            let body = serde_json::json!({ "tenant_id": tenant, "keys": listed });
            return Ok(Ok(respond::json(200, &body, Cache::NoStore)));
        }
        Command::VerifyAudit(_) | Command::ExportAudit(..) => return audit_command(&command, event),
        Command::Rotate(body) => {
            let current = set.active(body.key_use).and_then(|k| k.jwk.algorithm());
            let alg = body.alg.or(current).unwrap_or_else(|| Algorithm::default_for(body.key_use));
            if alg.key_use() != body.key_use {
                return Ok(Err(Error::BadRequest(
                    "alg does not fit use (sig: RS256, ES256, EdDSA; enc: ECDH-ES+A256KW, RSA-OAEP-256)",
                )));
            }
            let Some(kid) = keys.rotate(&target, alg, now)? else {
                return Ok(Err(Error::NotFound));
            };
            (kid, "key.rotate")
        }
        Command::Revoke(body) => {
            let successor = match keys.revoke(&target, &set, &body.kid, now)? {
                None | Some(Err(LifecycleError::UnknownKid)) => return Ok(Err(Error::NotFound)),
                Some(Err(LifecycleError::AlreadyRevoked)) => {
                    return Ok(Err(Error::Conflict("key already revoked")));
                }
                Some(Ok(successor)) => successor,
            };
            if let Some(successor) = &successor {
                audit_key_event(&target, successor, "key.create", "replaces_revoked_active_key", now)?;
            }
            event.action = "key.revoke".into();
            event.kid = Some(body.kid.clone());
            let body = serde_json::json!({ "tenant_id": target, "kid": body.kid, "replaced_by": successor });
            return Ok(Ok(respond::json(200, &body, Cache::NoStore)));
        }
        Command::RevokeToken(body) => return revoke_token(&target, &body.jti, now, event),
        // Answered above, before the tenant has to exist.
        Command::CreateTenant(_) => return Ok(Err(Error::NotFound)),
    };
    event.action = action.into();
    event.kid = Some(kid.clone());
    Ok(Ok(respond::json(200, &serde_json::json!({ "tenant_id": target, "kid": kid }), Cache::NoStore)))
}

/// Verifies or exports one audit chain, for a principal already allowed to read it. The
/// export is the tenant admin's NDJSON export ([`health_spin::audit::export_ndjson`]).
fn audit_command(command: &Command, event: &mut Event) -> anyhow::Result<Result<Response, Error>> {
    match command {
        Command::VerifyAudit(chain) => {
            event.action = "audit.verify".into();
            let links = health_spin::audit::chain(chain.name())?;
            let body = match health_core::audit::verify_chain(&links) {
                Ok(events) => serde_json::json!({ "tenant_id": chain.name(), "intact": true, "events": events }),
                Err(broken) => serde_json::json!({
                    "tenant_id": chain.name(), "intact": false, "events": links.len(), "broken_at": broken.seq
                }),
            };
            Ok(Ok(respond::json(200, &body, Cache::NoStore)))
        }
        Command::ExportAudit(chain, filter) => {
            event.action = "audit.export".into();
            let ndjson = health_spin::audit::export_ndjson(chain.name(), filter)?;
            Ok(Ok(respond::bytes(200, "application/x-ndjson", ndjson, Cache::NoStore)))
        }
        _ => anyhow::bail!("not an audit command"),
    }
}

/// Revokes one access token of `tenant` by `jti` until no token could still be valid. Only a
/// `jti` the tenant's audit log records as issued (a login, refresh or client-credentials grant
/// that answered 200) is revoked; any other is 404 and nothing is written, so `revoked: true`
/// always names a token that existed. The entry is scoped by tenant: it cannot touch a token
/// of another tenant, whatever `jti` is sent.
fn revoke_token(tenant: &TenantId, jti: &str, now: i64, event: &mut Event) -> anyhow::Result<Result<Response, Error>> {
    event.action = "token.revoke".into();
    event.jti = Some(jti.chars().take(128).collect());
    if jti.is_empty() || jti.len() > 128 {
        return Ok(Err(Error::BadRequest("jti must be 1 to 128 characters")));
    }
    if !issued(tenant, jti)? {
        event.reason = "unknown_jti".into();
        return Ok(Err(Error::NotFound));
    }
    let until = now + health_spin::var_i64("access_token_ttl_secs")? + CLOCK_TOLERANCE_SECS;
    Store::open("revocations")
        .context("opening revocations")?
        .set(&tokens::revoked_jti_key(tenant, jti), until.to_string().as_bytes())
        .context("writing revocation")?;
    let body = serde_json::json!({ "tenant_id": tenant, "jti": jti, "revoked": true, "until": until });
    Ok(Ok(respond::json(200, &body, Cache::NoStore)))
}

/// Whether `tenant`'s audit log records issuing an access token with `jti` (`auth` audits every
/// issuance with its `jti`, and an issuance whose event cannot be written is not answered).
fn issued(tenant: &TenantId, jti: &str) -> anyhow::Result<bool> {
    use spin_sdk::sqlite::Value;
    const ISSUED: &str = "SELECT 1 FROM audit_events WHERE tenant_id = ? AND jti = ? AND status = 200
        AND action IN ('auth.login', 'auth.token.refresh', 'auth.token.client_credentials') LIMIT 1";
    let conn = health_spin::audit::open()?;
    let rows = conn
        .execute(ISSUED, &[Value::Text(tenant.to_string()), Value::Text(jti.to_owned())])
        .context("looking up an issued jti")?;
    Ok(rows.rows().next().is_some())
}

fn audit_key_event(tenant: &TenantId, kid: &str, action: &str, reason: &str, now: i64) -> anyhow::Result<()> {
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

/// Signs the claims in the body for `auth` alone, after checking its attestation under the key
/// of the `auth` → `jwks` link: a compromised gateway or role service, holding only the keys of
/// its own links, cannot mint tokens.
fn sign(req: &Request, keys: &Keys, now: i64) -> anyhow::Result<Result<Response, Error>> {
    let Some(caller) = attested(req, SIGNERS)? else {
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
    let Some(mut set) = keys.load(&claims.tenant_id, now)? else {
        return Ok(Err(Error::NotFound));
    };
    if set.active(KeyUse::Sig).is_none() {
        // Left without an active key by an older version (revocation now replaces it): make
        // one rather than fail every login.
        keys.ensure_tenant(&claims.tenant_id)?;
        set = keys.load(&claims.tenant_id, now)?.context("tenant keys vanished")?;
    }
    if claims.iss != set.issuer {
        return Ok(Err(Error::BadRequest("issuer does not belong to the tenant")));
    }
    let mut active = set.active(KeyUse::Sig).context("tenant has no active signing key")?.clone();
    if keys.due_for_rotation(&active)? {
        let kid = keys.scheduled_rotate(&claims.tenant_id, &active, now)?;
        let set = keys.load(&claims.tenant_id, now)?.context("tenant keys vanished during rotation")?;
        active = set.find(&kid).context("rotated key missing")?.clone();
    }
    let alg = active.jwk.algorithm().context("active key has an unsupported algorithm")?;
    let private = keys.private(&claims.tenant_id, &active)?;
    let token = health_jose::sign(&private, alg, &active.jwk.kid, &claims, &mut health_spin::rng())
        .context("signing access token")?;
    Ok(Ok(respond::json(200, &serde_json::json!({ "token": token, "kid": active.jwk.kid }), Cache::NoStore)))
}

/// Encrypts the body's plaintext to the attested caller's tenant's active encryption key
/// (a nested token when `cty` is `JWT`), rotating that key first if it is due. For `auth` alone,
/// which issues the nested tokens.
fn encrypt(req: &Request, keys: &Keys, now: i64) -> anyhow::Result<Result<Response, Error>> {
    let Some(caller) = attested(req, SIGNERS)? else {
        return Ok(Err(Error::Unauthorized));
    };
    let Ok(body) = serde_json::from_slice::<EncryptRequest>(req.body()) else {
        return Ok(Err(Error::BadRequest("body must be {\"plaintext\", \"cty\"?}")));
    };
    let Some(set) = keys.load(&caller.tenant_id, now)? else {
        return Ok(Err(Error::NotFound));
    };
    let mut active = set.active(KeyUse::Enc).context("tenant has no active encryption key")?.clone();
    if keys.due_for_rotation(&active)? {
        let kid = keys.scheduled_rotate(&caller.tenant_id, &active, now)?;
        let set = keys.load(&caller.tenant_id, now)?.context("tenant keys vanished during rotation")?;
        active = set.find(&kid).context("rotated key missing")?.clone();
    }
    let key = active.jwk.encryption_key().context("active encryption key does not parse")?;
    // The tenant's issuer rides in the protected header (RFC 7519 §5.3) so a recipient knows
    // whose key decrypts it; recipients check it against the inner token's verified `iss`.
    let protected = jwe::Protected { kid: Some(&active.jwk.kid), cty: body.cty.as_deref(), iss: Some(&set.issuer) };
    let token = jwe::encrypt(body.plaintext.as_bytes(), &key, &protected, &mut health_spin::rng())
        .map_err(|_| anyhow::anyhow!("encryption failed"))?;
    Ok(Ok(respond::json(200, &serde_json::json!({ "jwe": token, "kid": active.jwk.kid }), Cache::NoStore)))
}

/// Decrypts a JWE addressed to one of the attested caller's tenant's published (active or
/// retiring) encryption keys. Every failure, including an unknown, retired or revoked key, is
/// the same 400, so the endpoint is no oracle; the inner token's signature is the caller's to
/// verify (decryption proves nothing about the sender). For the gateway and `auth`, which
/// both verify nested tokens.
fn decrypt(req: &Request, keys: &Keys, now: i64) -> anyhow::Result<Result<Response, Error>> {
    let Some(caller) = attested(req, DECRYPTERS)? else {
        return Ok(Err(Error::Unauthorized));
    };
    let failed = || Ok(Err(Error::BadRequest(DECRYPTION_FAILED)));
    let Ok(body) = serde_json::from_slice::<DecryptRequest>(req.body()) else {
        return failed();
    };
    let Some(set) = keys.load(&caller.tenant_id, now)? else {
        return failed();
    };
    let Ok(header) = jwe::peek_header(&body.jwe, &JwePolicy::PLATFORM) else {
        return failed();
    };
    let record = header.kid.as_deref().and_then(|kid| set.find(kid)).filter(|k| {
        k.jwk.key_use == KeyUse::Enc && matches!(k.status_at(now), KeyStatus::Active | KeyStatus::Retiring)
    });
    let Some(record) = record else {
        return failed();
    };
    let key = match keys.private(&caller.tenant_id, record)? {
        PrivateKey::P256(key) => jwe::DecryptionKey::P256(key),
        PrivateKey::Rsa(key) => jwe::DecryptionKey::Rsa(key),
        PrivateKey::Ed25519(_) => return failed(),
    };
    let Ok(decrypted) = jwe::decrypt_with_key_alg(&body.jwe, &key, &record.jwk.alg, &JwePolicy::PLATFORM) else {
        return failed();
    };
    let Ok(plaintext) = String::from_utf8(decrypted.plaintext) else {
        return failed();
    };
    let answer = serde_json::json!({ "plaintext": plaintext, "cty": decrypted.header.cty, "kid": record.jwk.kid });
    Ok(Ok(respond::json(200, &answer, Cache::NoStore)))
}

use health_core::Component;

/// Who may ask `jwks` to sign and to encrypt: `auth`, which issues every token.
const SIGNERS: &[Component] = &[Component::Auth];
/// Who may ask `jwks` to decrypt a nested token: the two components that verify them.
const DECRYPTERS: &[Component] = &[Component::Gateway, Component::Auth];

/// The caller a chained request from one of `senders` attests, under that sender's link key;
/// `None` (answered 401) for anything else, the refusal logged with its reason.
fn attested(req: &Request, senders: &[Component]) -> anyhow::Result<Option<health_core::Caller>> {
    match health_spin::verify_context(req, Component::Jwks, senders)? {
        Ok(caller) => Ok(Some(caller)),
        Err(refused) => {
            eprintln!("jwks: {} refused: {refused}", req.path());
            Ok(None)
        }
    }
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

    /// Generates a key for `alg` from `rng` and seals its private half under `master_key`
    /// (AAD = tenant/kid) before anything publishes it.
    fn generate(
        &self,
        tenant: &TenantId,
        alg: Algorithm,
        now: i64,
        rng: &mut (impl rand_core::RngCore + rand_core::CryptoRng),
    ) -> anyhow::Result<KeyRecord> {
        let (private, record) = health_jose::generate(alg, tenant, now, rng)?;
        let der = private.to_pkcs8_der().context("encoding private key")?;
        let name = private_key_name(tenant, &record.jwk.kid);
        let sealed = health_spin::secret_key("master_key")?.seal(name.as_bytes(), &der, &mut health_spin::rng());
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
            let Some(mut set) = self.load(tenant, now)? else {
                return Ok(None);
            };
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

    /// Rotates the tenant's key of `alg`'s use to a new `alg` key; the new private half is
    /// stored before it is published.
    fn rotate(&self, tenant: &TenantId, alg: Algorithm, now: i64) -> anyhow::Result<Option<String>> {
        if self.load(tenant, now)?.is_none() {
            return Ok(None);
        }
        let record = self.generate(tenant, alg, now, &mut health_spin::rng())?;
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
            |set| set.active(alg.key_use()).is_some_and(|k| k.jwk.kid == kid),
        )?;
        Ok(updated.map(|_| kid))
    }

    /// Rotation on schedule, done lazily by the next signing (Spin has no scheduler). However
    /// many signers find `old` due at once, one claims its succession (see [`claim`]) and adds
    /// a random successor; the others wait for it to be published and sign with it.
    fn scheduled_rotate(&self, tenant: &TenantId, old: &KeyRecord, now: i64) -> anyhow::Result<String> {
        let key_use = old.jwk.key_use;
        if !claim(tenant, &format!("successor:{}", old.jwk.kid), now)? {
            let set = self.wait_for(tenant, |set| set.active(key_use).is_some_and(|k| k.jwk.kid != old.jwk.kid))?;
            return Ok(set.active(key_use).context("successor just published")?.jwk.kid.clone());
        }
        let alg = old.jwk.algorithm().context("key with an unsupported algorithm")?;
        let record = self.generate(tenant, alg, now, &mut health_spin::rng())?;
        let kid = record.jwk.kid.clone();
        let retiring_secs = health_spin::var_i64("access_token_ttl_secs")? + CLOCK_TOLERANCE_SECS;
        self.update(
            tenant,
            now,
            |set| {
                if set.find(&kid).is_none() {
                    set.rotate(record.clone(), now, retiring_secs);
                }
                Ok(())
            },
            |set| set.find(&kid).is_some(),
        )?
        .context("tenant keys vanished during rotation")?
        .map_err(|e| anyhow::anyhow!("scheduled rotation refused: {e}"))?;
        audit_key_event(tenant, &kid, "key.rotate", "scheduled", now)?;
        Ok(kid)
    }

    /// The tenant's set once `done` holds of it: what a racer that lost a [`claim`] waits for.
    /// The winner publishes within its key generation, so the wait is bounded; past it the
    /// request fails (and a winner that died lets a later request claim again, see
    /// [`KEY_CLAIM_SECS`]).
    fn wait_for(&self, tenant: &TenantId, done: impl Fn(&TenantKeys) -> bool) -> anyhow::Result<TenantKeys> {
        let start = std::time::Instant::now();
        loop {
            if let Some(set) = self.load(tenant, health_spin::now())?.filter(&done) {
                return Ok(set);
            }
            anyhow::ensure!(
                start.elapsed() < KEY_CLAIM_WAIT,
                "tenant {tenant:?}: the request that claimed its next key did not publish it"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Whether `key` is older than the `key_rotation_days` variable allows.
    fn due_for_rotation(&self, key: &KeyRecord) -> anyhow::Result<bool> {
        let max_age = health_spin::var_i64("key_rotation_days")?.saturating_mul(86_400);
        Ok(health_spin::now().saturating_sub(key.created_at) > max_age)
    }

    /// Revokes `kid` so that no concurrent update can bring it back. If it is the active key of
    /// its use, a fresh random key of the same algorithm becomes active in the same write, so
    /// signing (logins) and encryption never find the tenant without a key; its kid is returned.
    fn revoke(
        &self,
        tenant: &TenantId,
        current: &TenantKeys,
        kid: &str,
        now: i64,
    ) -> anyhow::Result<Option<Result<Option<String>, LifecycleError>>> {
        let Some(record) = current.find(kid) else {
            return Ok(Some(Err(LifecycleError::UnknownKid)));
        };
        // Generated before the update (key generation is slow); unused if a concurrent rotation
        // already moved `kid` out of `active`.
        let successor = match record.status_at(now) {
            KeyStatus::Active => {
                let alg = record.jwk.algorithm().context("key with an unsupported algorithm")?;
                Some(self.generate(tenant, alg, now, &mut health_spin::rng())?)
            }
            _ => None,
        };
        let key_use = record.jwk.key_use;
        let replaced = std::cell::Cell::new(false);
        let outcome = self.update(
            tenant,
            now,
            |set| match &successor {
                Some(successor) => set.revoke_replacing(kid, successor, now).map(|r| replaced.set(replaced.get() || r)),
                None => set.revoke(kid, now),
            },
            |set| {
                set.find(kid).is_some_and(|k| k.status == KeyStatus::Revoked)
                    && (!replaced.get() || set.active(key_use).is_some())
            },
        )?;
        Ok(outcome.map(|r| r.map(|()| successor.filter(|_| replaced.get()).map(|s| s.jwk.kid))))
    }

    fn private(&self, tenant: &TenantId, record: &KeyRecord) -> anyhow::Result<PrivateKey> {
        let name = private_key_name(tenant, &record.jwk.kid);
        let sealed = self.private.get(&name).context("reading private key")?.context("private key missing")?;
        let master = health_spin::secret_key("master_key")?;
        let der = master
            .open(name.as_bytes(), std::str::from_utf8(&sealed).context("sealed key is not text")?)
            .context("private key does not open under master_key")?;
        let alg = record.jwk.algorithm().context("key with an unsupported algorithm")?;
        PrivateKey::from_pkcs8_der(alg, &der).context("decoding private key")
    }

    /// Creates the tenant's signing and encryption keys if it lacks them. The keys are random
    /// (nothing about them follows from `master_key` or the tenant id), so a revoked key never
    /// comes back and two deployments never share one. Concurrent first requests agree on one
    /// set because exactly one of them wins the [`claim`] for the set's current state and
    /// creates the keys; the others wait for them to be published.
    fn ensure_tenant(&self, tenant: &TenantId) -> anyhow::Result<()> {
        let now = health_spin::now();
        let complete = |set: &TenantKeys| set.active(KeyUse::Sig).is_some() && set.active(KeyUse::Enc).is_some();
        let existing = self.load(tenant, now)?;
        if existing.as_ref().is_some_and(complete) {
            return Ok(());
        }
        let state = existing.as_ref().map_or(0, |set| set.keys.len());
        if !claim(tenant, &format!("bootstrap:{state}"), now)? {
            self.wait_for(tenant, complete)?;
            return Ok(());
        }
        let mut records = Vec::new();
        for key_use in [KeyUse::Sig, KeyUse::Enc] {
            if existing.as_ref().is_none_or(|set| set.active(key_use).is_none()) {
                let record = self.generate(tenant, Algorithm::default_for(key_use), now, &mut health_spin::rng())?;
                records.push(record);
            }
        }
        match existing {
            // A new tenant: only the claim's winner writes its set, so one write suffices.
            None => self.store(&TenantKeys {
                tenant_id: tenant.clone(),
                issuer: format!("{}/t/{tenant}", health_spin::var("issuer_base")?.trim_end_matches('/')),
                keys: records.clone(),
            })?,
            // A set left without an active key (by an older version): add them, surviving
            // concurrent rotations and revocations.
            Some(_) => {
                self.update(
                    tenant,
                    now,
                    |set| {
                        for record in &records {
                            if set.find(&record.jwk.kid).is_none() {
                                set.keys.push(record.clone());
                            }
                        }
                        Ok(())
                    },
                    |set| records.iter().all(|r| set.find(&r.jwk.kid).is_some()),
                )?
                .context("tenant keys vanished during bootstrap")?
                .map_err(|e| anyhow::anyhow!("bootstrap refused: {e}"))?;
            }
        }
        for record in &records {
            audit_key_event(tenant, &record.jwk.kid, "key.create", "tenant_bootstrap", now)?;
        }
        Ok(())
    }
}

/// Claims the one right to make a change to `tenant`'s key set (`change` names it and the state
/// it starts from, e.g. `bootstrap:0`): `true` for exactly one of any number of concurrent
/// callers. Spin's key-value interface has no compare-and-set, so the arbiter is the one-time
/// ledger's atomic insert in the `audit` database (`tokens::spend_once`: SQLite `INSERT ... ON
/// CONFLICT DO NOTHING RETURNING`, shared by every instance), under a name no `jti` can take.
/// The claim lapses after [`KEY_CLAIM_SECS`], so a winner that died does not block forever.
fn claim(tenant: &TenantId, change: &str, now: i64) -> anyhow::Result<bool> {
    tokens::spend_once(tenant, &format!("key-claim:{tenant}:{change}"), now + KEY_CLAIM_SECS, now)
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
        assert_eq!(parse(&Method::Get, "/admin/rotate-key"), Err(Error::MethodNotAllowed));
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
        assert_eq!(parse(&Method::Get, "/admin/audit/export/_other"), Err(Error::NotFound));
        assert_eq!(parse(&Method::Post, "/admin/audit/export/demo-hospital"), Err(Error::MethodNotAllowed));
    }

    #[test]
    fn refuses_bad_tenants_methods_and_unknown_paths() {
        assert_eq!(parse(&Method::Get, "/jwk/..%2Finternal"), Err(Error::NotFound));
        assert_eq!(parse(&Method::Get, "/jwk/a/b"), Err(Error::NotFound));
        assert_eq!(parse(&Method::Get, "/internal/sign"), Err(Error::MethodNotAllowed));
        assert_eq!(parse(&Method::Post, "/.well-known/jwks.json"), Err(Error::MethodNotAllowed));
    }
}
