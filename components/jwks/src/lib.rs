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
//!
//! This crate routes and wires: requests are parsed in `routes`, answered in `crypto` (sign,
//! encrypt, decrypt), `admin` and `revocation`, over the key store `keyring` wires from Spin's
//! stores and variables. What a key's lifecycle allows lives in `health_jose::lifecycle`; how
//! key sets are stored, sealed and changed under concurrent requests in
//! `health_spin::keystore`.

// The Spin SDK and wit-bindgen macros expand to the component ABI's `unsafe` glue.
#![allow(unsafe_code)]

mod admin;
mod crypto;
mod keyring;
mod revocation;
mod routes;

use anyhow::Context;
use health_core::{Problem, Reason, Refusal, TenantId};
use health_spin::respond::{self, Cache, Failure};
use spin_sdk::http::{Request, Response};
use spin_sdk::http_component;

use crate::routes::Api;

/// JWK Set cache lifetime. Must stay below the retiring window (the longest token lifetime)
/// so a verifier's cache never outlives a key's publication.
const JWKS_MAX_AGE_SECS: u32 = 300;
/// Clock tolerance verifiers allow; a retiring key outlives the longest token by this much.
const CLOCK_TOLERANCE_SECS: i64 = health_jose::MAX_CLOCK_TOLERANCE_SECS;

#[http_component]
async fn handle(incoming: spin_sdk::http::IncomingRequest, out: spin_sdk::http::ResponseOutparam) {
    respond::send(out, answer(incoming).await);
}

async fn answer(incoming: spin_sdk::http::IncomingRequest) -> Response {
    let req = match health_spin::single_credential(incoming).await {
        Ok(req) => req,
        Err(refused) => return refused,
    };
    let header = |name| req.header(name).and_then(|v| v.as_str());
    let trace = header(health_core::trace::HEADER).and_then(health_core::trace::TraceParent::parse);
    health_spin::log::begin("jwks", header("x-request-id"), trace);
    match route(&req) {
        Ok(response) => response,
        Err(Failure::Refused(refusal)) => respond::refusal(&refusal),
        Err(Failure::Internal(e)) => {
            health_spin::log::error("internal_error", &e);
            respond::problem(&Problem::internal())
        }
    }
}

fn route(req: &Request) -> Result<Response, Failure> {
    let api = routes::parse(req.method(), req.path())?;
    if req.body().len() > health_core::routes::MAX_KEYS_BODY_BYTES {
        return Err(Refusal::TooLarge.into());
    }
    let stores = keyring::Stores::open()?;
    let keys = stores.keys();
    if health_spin::var("demo_tenant")? == "true" {
        // The demo tenant's keys are created on first use.
        keyring::ensure_tenant(&keys, &TenantId::parse(health_core::DEMO_TENANT).context("the demo tenant's id")?)?;
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
            Ok(respond::json(200, &serde_json::json!({ "keys": all }), Cache::Public(JWKS_MAX_AGE_SECS)))
        }
        Api::TenantKeys(tenant) => {
            let set = keys.load(&tenant, now)?.ok_or(Refusal::NotFound(Reason::UnknownTenant))?;
            let published: Vec<_> = set.published(now).collect();
            Ok(respond::json(200, &serde_json::json!({ "keys": published }), Cache::Public(JWKS_MAX_AGE_SECS)))
        }
        Api::Sign => crypto::sign(req, &keys, now),
        Api::Encrypt => crypto::encrypt(req, &keys, now),
        Api::Decrypt => crypto::decrypt(req, &keys, now),
        Api::Rotate
        | Api::Revoke
        | Api::ListKeys(_)
        | Api::CreateTenant
        | Api::RevokeToken
        | Api::VerifyAudit(_)
        | Api::ExportAudit(_) => admin::admin(req, api, &keys, now),
    }
}
