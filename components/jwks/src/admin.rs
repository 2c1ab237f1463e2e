//! The admin API (`/admin/...`): who is asking ([`authenticate`]), what they ask ([`Command`],
//! its body parsed once), whether they may, and the answer. Every attempt, allowed or refused,
//! is audited.

use anyhow::Context;
use health_core::audit::{Event, Outcome};
use health_core::routes::AuditFilter;
use health_core::{Reason, Refusal, TenantId};
use health_jose::{Algorithm, KeyUse, LifecycleError};
use health_spin::admin::{Principal, authenticate};
use health_spin::respond::{self, Cache, Failure};
use serde::Deserialize;
use spin_sdk::http::{Request, Response};

use crate::keyring::{self, Keys};
use crate::revocation;
use crate::routes::{Api, Chain};

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

/// Key, token and audit administration. Every attempt, allowed or refused, is audited; if the
/// audit write fails the change is reported as failed.
pub fn admin(req: &Request, api: Api, keys: &Keys, now: i64) -> Result<Response, Failure> {
    let mut event = Event {
        action: format!("{} {}", req.method(), req.path().chars().take(128).collect::<String>()),
        resource: "admin".into(),
        ..health_spin::audit::request_event(req, now)
    };
    let outcome = match authenticate(req, now)? {
        Err(reason) => {
            event.reason = reason.into();
            // A valid token of someone who is not an admin is authenticated, just not allowed.
            Err(match reason {
                Reason::NotAnAdmin => Refusal::forbidden(Reason::NotAnAdmin),
                reason => Refusal::Unauthenticated(reason),
            })
        }
        Ok(principal) => {
            principal.actor(&mut event);
            Failure::split(administer(req, api, keys, now, &principal, &mut event))?
        }
    };
    event.outcome = Some(if outcome.is_ok() { Outcome::Allow } else { Outcome::Deny });
    event.status = match &outcome {
        Ok(response) => *response.status(),
        Err(refusal) => refusal.problem().status,
    };
    if event.reason.is_empty() {
        event.reason = match &outcome {
            Ok(_) => Reason::Ok.into(),
            Err(refusal) => refusal.reason(),
        };
    }
    health_spin::audit::append(&event)?;
    outcome.map_err(Failure::from)
}

fn json_body<T: serde::de::DeserializeOwned>(req: &Request, usage: &'static str) -> Result<T, Refusal> {
    let json = req.header("content-type").and_then(|v| v.as_str()).is_some_and(|c| c.starts_with("application/json"));
    if !json {
        return Err(Refusal::UnsupportedMediaType);
    }
    serde_json::from_slice(req.body()).map_err(|_| Refusal::BadRequest(Reason::MalformedRequest, usage.into()))
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
    fn parse(req: &Request, api: Api) -> Result<Self, Refusal> {
        Ok(match api {
            Api::ListKeys(t) => Command::ListKeys(t),
            Api::VerifyAudit(chain) => Command::VerifyAudit(chain),
            Api::ExportAudit(chain) => Command::ExportAudit(
                chain,
                health_core::routes::audit_query(req.path_and_query().unwrap_or_default()).map_err(|_| {
                    Refusal::BadRequest(
                        Reason::MalformedRequest,
                        "query parameters: from, to, after (non-negative integers), limit (1 to 1000), actor, patient, jti, outcome (allow, deny or error), each once".into(),
                    )
                })?,
            ),
            Api::Rotate => {
                Command::Rotate(json_body(req, "body must be {\"tenant_id\", \"use\": \"sig\"|\"enc\", \"alg\"?}")?)
            }
            Api::Revoke => Command::Revoke(json_body(req, "body must be {\"tenant_id\", \"kid\"}")?),
            Api::RevokeToken => Command::RevokeToken(json_body(req, "body must be {\"jti\", \"tenant_id\"}")?),
            Api::CreateTenant => Command::CreateTenant(json_body(req, "body must be {\"tenant_id\"}")?),
            Api::AllKeys | Api::TenantKeys(_) | Api::Sign | Api::Encrypt | Api::Decrypt => {
                return Err(Refusal::NotFound(Reason::NoSuchRoute));
            }
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
) -> Result<Response, Failure> {
    let command = Command::parse(req, api)?;
    if command.chain() == Some(&Chain::Unattributed) {
        // Recorded in the chain it reads; a tenant admin's refused attempt goes to its own.
        event.tenant_id = health_core::audit::NO_TENANT.into();
        event.resource = format!("audit/{}", health_core::audit::NO_TENANT);
        if let Principal::TenantAdmin { tenant, .. } = principal {
            event.tenant_id = tenant.to_string();
            return Err(Refusal::forbidden(Reason::OperatorOnly).into());
        }
        return audit_command(&command, event);
    }
    // The tenant the request is about, then whether this principal may act on it.
    let Some(target) = command.target().cloned() else {
        return Err(Refusal::BadRequest(Reason::MalformedRequest, "tenant_id is required".into()).into());
    };
    event.tenant_id = target.to_string();
    event.resource = format!("tenant/{target}");
    let operator_only = matches!(command, Command::CreateTenant(_));
    if !principal.may_manage(&target) || (operator_only && *principal != Principal::Operator) {
        // The tenant admin's own chain records the attempt too.
        if let Principal::TenantAdmin { tenant, .. } = principal {
            event.tenant_id = tenant.to_string();
        }
        return Err(Refusal::forbidden(Reason::OtherTenantOrOperatorOnly).into());
    }
    let set = keys.load(&target, now)?;
    if let Command::CreateTenant(_) = command {
        if set.is_some() {
            return Err(Refusal::ConflictWith(Reason::TenantExists, "tenant exists".into()).into());
        }
        keyring::ensure_tenant(keys, &target)?;
        let set = keys.load(&target, now)?.context("tenant keys just created")?;
        let kid = set.active(KeyUse::Sig).context("new tenant has no active key")?.jwk.kid.clone();
        event.action = "tenant.create".into();
        let body = serde_json::json!({ "tenant_id": target, "kid": kid });
        return Ok(respond::json(201, &body, Cache::NoStore));
    }
    let Some(set) = set else {
        return Err(Refusal::NotFound(Reason::UnknownTenant).into());
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
            return Ok(respond::json(200, &body, Cache::NoStore));
        }
        Command::VerifyAudit(_) | Command::ExportAudit(..) => return audit_command(&command, event),
        Command::Rotate(body) => {
            let Some(alg) = set.rotation_algorithm(body.key_use, body.alg) else {
                return Err(Refusal::BadRequest(
                    Reason::MalformedRequest,
                    "alg does not fit use (sig: RS256, ES256, EdDSA; enc: ECDH-ES+A256KW, RSA-OAEP-256)".into(),
                )
                .into());
            };
            let rotated = keys.rotate(
                &target,
                alg,
                now,
                keyring::retiring_secs()?,
                &keyring::master()?,
                &mut health_spin::rng(),
            )?;
            let Some(kid) = rotated else {
                return Err(Refusal::NotFound(Reason::UnknownTenant).into());
            };
            (kid, "key.rotate")
        }
        Command::Revoke(body) => {
            let revoked = keys.revoke(&target, &set, &body.kid, now, &keyring::master()?, &mut health_spin::rng())?;
            let successor = match revoked {
                None => return Err(Refusal::NotFound(Reason::UnknownTenant).into()),
                Some(Err(LifecycleError::UnknownKid)) => return Err(Refusal::NotFound(Reason::UnknownKid).into()),
                Some(Err(LifecycleError::AlreadyRevoked)) => {
                    return Err(Refusal::ConflictWith(Reason::KeyAlreadyRevoked, "key already revoked".into()).into());
                }
                Some(Ok(successor)) => successor,
            };
            if let Some(successor) = &successor {
                keyring::audit_key_event(&target, successor, "key.create", "replaces_revoked_active_key", now)?;
            }
            event.action = "key.revoke".into();
            event.kid = Some(body.kid.clone());
            let body = serde_json::json!({ "tenant_id": target, "kid": body.kid, "replaced_by": successor });
            return Ok(respond::json(200, &body, Cache::NoStore));
        }
        Command::RevokeToken(body) => return revocation::revoke_token(&target, &body.jti, now, event),
        // Answered above, before the tenant has to exist.
        Command::CreateTenant(_) => return Err(Refusal::NotFound(Reason::NoSuchRoute).into()),
    };
    event.action = action.into();
    event.kid = Some(kid.clone());
    Ok(respond::json(200, &serde_json::json!({ "tenant_id": target, "kid": kid }), Cache::NoStore))
}

/// Verifies or exports one audit chain, for a principal already allowed to read it. The
/// export is the tenant admin's NDJSON export ([`health_spin::audit::export_ndjson`]).
fn audit_command(command: &Command, event: &mut Event) -> Result<Response, Failure> {
    match command {
        Command::VerifyAudit(chain) => {
            event.action = "audit.verify".into();
            let body = health_spin::audit::verify_report(chain.name(), event.time)?;
            Ok(respond::json(200, &body, Cache::NoStore))
        }
        Command::ExportAudit(chain, filter) => {
            event.action = "audit.export".into();
            let ndjson = health_spin::audit::export_ndjson(chain.name(), filter)?;
            Ok(respond::bytes(200, "application/x-ndjson", ndjson, Cache::NoStore))
        }
        _ => Err(anyhow::anyhow!("not an audit command").into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spin_sdk::http::Method;

    fn request(method: Method, path: &str, content_type: Option<&str>, body: &str) -> Request {
        let mut builder = Request::builder();
        builder.method(method).uri(path).body(body.as_bytes().to_vec());
        if let Some(content_type) = content_type {
            builder.header("content-type", content_type);
        }
        builder.build()
    }

    fn command(path: &str, content_type: Option<&str>, body: &str) -> Result<Command, Refusal> {
        let method = if body.is_empty() { Method::Get } else { Method::Post };
        let api = crate::routes::parse(&method, path.split('?').next().unwrap_or(path))?;
        Command::parse(&request(method, path, content_type, body), api)
    }

    fn tenant(name: &str) -> TenantId {
        TenantId::parse(name).unwrap()
    }

    #[test]
    fn a_key_command_names_the_tenant_it_acts_on() {
        let json = Some("application/json");
        let rotate = command("/admin/rotate-key", json, r#"{"tenant_id":"t1","use":"enc","alg":"RSA-OAEP-256"}"#);
        let Ok(Command::Rotate(body)) = rotate else { panic!("a rotation") };
        assert_eq!((body.key_use, body.alg), (KeyUse::Enc, Some(Algorithm::RsaOaep256)));
        let rotate = command("/admin/rotate-key", json, r#"{"tenant_id":"t1"}"#).unwrap();
        assert_eq!(rotate.target(), Some(&tenant("t1")));
        let revoke =
            command("/admin/revoke-key", Some("application/json; charset=utf-8"), r#"{"tenant_id":"t2","kid":"k"}"#);
        assert_eq!(revoke.unwrap().target(), Some(&tenant("t2")));
        assert_eq!(command("/admin/keys/t3", None, "").unwrap().target(), Some(&tenant("t3")));
        // A token revocation may leave the tenant out; it is then refused, not guessed.
        assert_eq!(command("/admin/revoke-token", json, r#"{"jti":"j"}"#).unwrap().target(), None);
    }

    #[test]
    fn a_body_that_is_not_json_of_the_commands_shape_is_refused_with_its_usage() {
        assert_eq!(
            command("/admin/rotate-key", None, r#"{"tenant_id":"t1"}"#).err(),
            Some(Refusal::UnsupportedMediaType)
        );
        assert_eq!(
            command("/admin/rotate-key", Some("text/plain"), r#"{"tenant_id":"t1"}"#).err(),
            Some(Refusal::UnsupportedMediaType)
        );
        let json = Some("application/json");
        assert_eq!(
            command("/admin/revoke-key", json, r#"{"tenant_id":"t1","kid":"k","extra":1}"#).err(),
            Some(Refusal::BadRequest(Reason::MalformedRequest, "body must be {\"tenant_id\", \"kid\"}".into()))
        );
        assert_eq!(
            command("/admin/rotate-key", json, r#"{"tenant_id":"t1","use":"both"}"#).err(),
            Some(Refusal::BadRequest(
                Reason::MalformedRequest,
                "body must be {\"tenant_id\", \"use\": \"sig\"|\"enc\", \"alg\"?}".into()
            ))
        );
        assert_eq!(
            command("/admin/tenants", json, r#"{"tenant_id":"../x"}"#).err(),
            Some(Refusal::BadRequest(Reason::MalformedRequest, "body must be {\"tenant_id\"}".into()))
        );
    }

    #[test]
    fn audit_commands_read_one_chain_and_only_the_operator_names_the_unattributed_one() {
        let verify = command("/admin/audit/verify/t1", None, "").unwrap();
        assert_eq!(verify.chain(), Some(&Chain::Tenant(tenant("t1"))));
        assert_eq!(verify.target(), Some(&tenant("t1")));
        let export = command("/admin/audit/export/_unattributed?after=3&limit=10", None, "").unwrap();
        assert_eq!(export.chain(), Some(&Chain::Unattributed));
        assert_eq!(export.target(), None);
        assert!(matches!(
            command("/admin/audit/export/t1?limit=0", None, ""),
            Err(Refusal::BadRequest(_, usage)) if usage.starts_with("query parameters")
        ));
        assert_eq!(command("/admin/keys/t1", None, "").unwrap().chain(), None);
    }
}
