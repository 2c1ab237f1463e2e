//! What `auth` answers the `patient` service over service chaining (never public: Spin routes
//! only `/auth/...`, `/api/auth/validate` and `/t/...` here, and each request must carry a
//! caller context under the patient → auth link's own key). `auth` owns the identities the
//! patient service's decisions depend on:
//!
//! - `GET /internal/insurers/{client_id}`: whether the caller's tenant has that insurer client
//!   registered and enabled (a patient consents only to one that is). A read: not audited.
//! - `POST /internal/users/lookup` `{"user_id"}`: the role of that user of the caller's tenant
//!   and whether it is enabled (a tenant admin puts only an enabled clinician on a care team,
//!   links only an enabled patient account to a record, and attaches only an enabled lab user
//!   to a lab organisation). A read: not audited (the change it
//!   serves is). A POST so the id is in the body, not the URL, as below.
//! - `POST /internal/patient-accounts/erased` `{"user_id"}`: the patient record this account owns
//!   was erased, so the account is disabled and every session of it ended (its refresh
//!   families revoked, its access tokens refused from now on). Audited, with the caller (the
//!   tenant admin who erased the record) as actor. Idempotent.

use health_core::audit::Event;
use health_core::{Caller, ClientId, Component, Opaque, Reason, Role};
use health_spin::identity;
use spin_sdk::http::{Method, Request, Response};

use crate::{Ctx, Error, issue};

/// An internal request `auth` serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InternalApi {
    Insurer(ClientId),
    User,
    PatientErased,
}

/// The internal route of `segments` (after `internal`), if any.
pub fn parse(method: &Method, segments: &[&str]) -> Result<InternalApi, Error> {
    let (api, expected) = match segments {
        ["insurers", id] => (ClientId::parse(id).map(InternalApi::Insurer), Method::Get),
        // Account ids go in the body: a URL reaches telemetry (Spin's outbound spans name it),
        // and these may name a patient.
        ["users", "lookup"] => (Ok(InternalApi::User), Method::Post),
        ["patient-accounts", "erased"] => (Ok(InternalApi::PatientErased), Method::Post),
        _ => return Err(Error::NotFound(Reason::NoSuchRoute)),
    };
    match api {
        Err(_) => Err(Error::NotFound(Reason::NoSuchRoute)),
        Ok(_) if *method != expected => Err(Error::MethodNotAllowed),
        Ok(api) => Ok(api),
    }
}

/// The body naming an account: `POST /internal/users/lookup` and
/// `POST /internal/patient-accounts/erased`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AccountRef {
    user_id: Opaque,
}

/// The patient service's caller context, verified; `Err` is the refusal (401, as a forged
/// context gets from a role service).
fn attested(req: &Request) -> anyhow::Result<Result<Caller, Error>> {
    Ok(match health_spin::verify_context(req, Component::Auth, &[Component::Patient])? {
        Ok(caller) => Ok(caller),
        Err(e) => {
            health_spin::log::warn("internal_request_refused", e.to_string());
            Err(Error::Unauthenticated(Reason::ContextRefused))
        }
    })
}

/// Answers an internal request, and whether its `event` is to be audited (a read is not).
pub fn handle(ctx: &Ctx<'_>, api: InternalApi, event: &mut Event) -> anyhow::Result<(Result<Response, Error>, bool)> {
    let caller = match attested(ctx.req)? {
        Ok(caller) => caller,
        Err(refusal) => {
            event.reason = Reason::ContextRefused.into();
            return Ok((Err(refusal), true));
        }
    };
    let tenant = &caller.tenant_id;
    health_spin::log::set_tenant(tenant.as_str());
    let db = ctx.db()?;
    match api {
        InternalApi::Insurer(client_id) => {
            let registered = identity::find_client(&db, &client_id)?.filter(|c| c.tenant_id == *tenant);
            let outcome = match registered {
                Some(client) => Ok(health_spin::respond::json(
                    200,
                    &serde_json::json!({ "client_id": client_id, "enabled": !client.disabled }),
                    health_spin::respond::Cache::NoStore,
                )),
                None => Err(Error::NotFound(Reason::UnknownClient)),
            };
            Ok((outcome, false))
        }
        InternalApi::User => {
            let user_id = match ctx.json::<AccountRef>("body must be {\"user_id\"}") {
                Ok(body) => body.user_id,
                Err(refusal) => return Ok((Err(refusal), false)),
            };
            let outcome = match identity::user_by_id(&db, tenant, &user_id)? {
                Some(user) => Ok(health_spin::respond::json(
                    200,
                    &serde_json::json!({ "id": user_id, "role": user.role.as_str(), "enabled": !user.disabled }),
                    health_spin::respond::Cache::NoStore,
                )),
                None => Err(Error::NotFound(Reason::UnknownUser)),
            };
            Ok((outcome, false))
        }
        InternalApi::PatientErased => {
            event.action = "user.disable".into();
            crate::for_tenant(event, tenant);
            event.actor_sub = Some(caller.subject.to_string());
            event.actor_role = Some(caller.role.as_str().to_owned());
            event.jti = Some(caller.jti.to_string());
            let user_id = match ctx.json::<AccountRef>("body must be {\"user_id\"}") {
                Ok(body) => body.user_id,
                Err(refusal) => {
                    event.reason = refusal.reason();
                    return Ok((Err(refusal), true));
                }
            };
            event.resource = format!("tenant/{tenant}/users/{user_id}");
            let Some(user) = identity::user_by_id(&db, tenant, &user_id)? else {
                event.reason = Reason::NoSuchAccount.into();
                return Ok((Err(Error::NotFound(Reason::NoSuchAccount)), true));
            };
            if user.role != Role::Patient {
                event.reason = Reason::NotAPatientAccount.into();
                return Ok((
                    Err(Error::ConflictWith(Reason::NotAPatientAccount, "the account is not a patient's".into())),
                    true,
                ));
            }
            identity::set_disabled(&db, tenant, &user_id, true)?;
            issue::revoke_subject(&db, tenant, &user_id, Reason::PatientErased, ctx.now)?;
            event.reason = Reason::PatientErased.into();
            let body = serde_json::json!({ "id": user_id, "disabled": true, "sessions_ended": true });
            Ok((Ok(health_spin::respond::json(200, &body, health_spin::respond::Cache::NoStore)), true))
        }
    }
}
