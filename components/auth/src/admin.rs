//! The identity admin API under `/auth/admin/`: tenant admins (their own tenant) and the
//! platform operator (any tenant, named by `tenant_id`) create, disable, enable and reset users,
//! and register insurer clients with their public keys. Disabling, resetting a password or
//! resetting MFA ends every session of that user. Every call is audited.

use anyhow::Context;
use health_core::audit::Event;
use health_core::{ClientId, Opaque, Reason, Role, TenantId, Username};
use health_identity::client::{SubmittedJwk, register_jwk};
use health_identity::password;
use health_jose::KeyUse;
use health_spin::admin as principal;
use health_spin::identity::{self, Client, User};
use health_spin::respond::{self, Cache};
use serde::Deserialize;
use spin_sdk::http::{Method, Response};

use crate::{Ctx, Error, Failure, federation, issue};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminApi {
    ListUsers,
    CreateUser,
    User(Opaque, UserAction),
    ListClients,
    CreateClient,
    Client(ClientId, bool),
    /// The tenant's OpenID provider (`crate::federation`): show, set, turn off.
    ShowFederation,
    SetFederation,
    TurnOffFederation,
    /// Links a provider identity to a user.
    LinkUser(Opaque),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserAction {
    Disable,
    Enable,
    ResetPassword,
    ResetMfa,
}

pub fn parse(method: &Method, rest: &[&str]) -> Result<AdminApi, Error> {
    let api = match rest {
        ["users"] if *method == Method::Get => AdminApi::ListUsers,
        ["users"] => AdminApi::CreateUser,
        ["users", id, "link"] => {
            AdminApi::LinkUser(Opaque::parse(id).map_err(|_| Error::NotFound(Reason::NoSuchRoute))?)
        }
        ["federation"] if *method == Method::Get => AdminApi::ShowFederation,
        ["federation"] => AdminApi::SetFederation,
        ["federation", "disable"] => AdminApi::TurnOffFederation,
        ["users", id, action] => AdminApi::User(
            Opaque::parse(id).map_err(|_| Error::NotFound(Reason::NoSuchRoute))?,
            match *action {
                "disable" => UserAction::Disable,
                "enable" => UserAction::Enable,
                "reset-password" => UserAction::ResetPassword,
                "reset-mfa" => UserAction::ResetMfa,
                _ => return Err(Error::NotFound(Reason::NoSuchRoute)),
            },
        ),
        ["clients"] if *method == Method::Get => AdminApi::ListClients,
        ["clients"] => AdminApi::CreateClient,
        ["clients", id, toggle @ ("disable" | "enable")] => match ClientId::parse(id) {
            Ok(id) => AdminApi::Client(id, *toggle == "disable"),
            Err(_) => return Err(Error::NotFound(Reason::NoSuchRoute)),
        },
        _ => return Err(Error::NotFound(Reason::NoSuchRoute)),
    };
    let gets = matches!(api, AdminApi::ListUsers | AdminApi::ListClients | AdminApi::ShowFederation);
    let expected = if gets { Method::Get } else { Method::Post };
    if *method == expected { Ok(api) } else { Err(Error::MethodNotAllowed) }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TenantOnly {
    #[serde(default)]
    tenant_id: Option<TenantId>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    #[serde(default)]
    tenant_id: Option<TenantId>,
    username: Username,
    role: Role,
    password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewPassword {
    #[serde(default)]
    tenant_id: Option<TenantId>,
    password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewFederation {
    #[serde(default)]
    tenant_id: Option<TenantId>,
    settings: health_identity::federation::ProviderSettings,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewLink {
    #[serde(default)]
    tenant_id: Option<TenantId>,
    external_id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewClient {
    #[serde(default)]
    tenant_id: Option<TenantId>,
    name: String,
    enc_jwk: SubmittedJwk,
    #[serde(default)]
    sig_jwk: Option<SubmittedJwk>,
}

type Outcome = Result<Response, Failure>;

/// The `tenant_id` query parameter of a GET.
fn query_tenant(ctx: &Ctx<'_>) -> Result<Option<TenantId>, Error> {
    let form = health_identity::form::parse(ctx.req.query().as_bytes())
        .map_err(|_| Error::BadRequest(Reason::MalformedRequest, "query must be ?tenant_id=...".into()))?;
    form.get("tenant_id")
        .map(|t| {
            TenantId::parse(t)
                .map_err(|_| Error::BadRequest(Reason::MalformedRequest, "tenant_id is not a valid tenant".into()))
        })
        .transpose()
}

/// A POST body of type `T`; an empty body counts as `{}` where `T` allows it.
fn body<T: serde::de::DeserializeOwned>(ctx: &Ctx<'_>, usage: &'static str) -> Result<T, Error> {
    if ctx.req.body().is_empty() {
        return serde_json::from_slice(b"{}").map_err(|_| Error::BadRequest(Reason::MalformedRequest, usage.into()));
    }
    ctx.json(usage)
}

pub fn handle(ctx: &Ctx<'_>, api: AdminApi, event: &mut Event) -> Outcome {
    event.action = format!("admin.{}", action_name(&api));
    let principal = match principal::authenticate(ctx.req, ctx.now)? {
        Ok(principal) => principal,
        Err(reason) => {
            event.reason = reason.into();
            // A valid token of a non-admin is authenticated but not allowed.
            let error = if reason == Reason::NotAnAdmin {
                Error::ForbiddenWith(Reason::NotAnAdmin, "admins only".into())
            } else {
                crate::unauthenticated(reason)
            };
            return Err(error.into());
        }
    };
    principal.actor(event);
    let result = match api {
        AdminApi::ListUsers => query_tenant(ctx).map(|t| (t, Command::ListUsers)),
        AdminApi::ListClients => query_tenant(ctx).map(|t| (t, Command::ListClients)),
        AdminApi::CreateUser => {
            body::<NewUser>(ctx, "body must be {\"username\", \"role\", \"password\", \"tenant_id\"?}")
                .map(|b| (b.tenant_id.clone(), Command::CreateUser(b)))
        }
        AdminApi::User(id, UserAction::ResetPassword) => {
            body::<NewPassword>(ctx, "body must be {\"password\", \"tenant_id\"?}")
                .map(|b| (b.tenant_id.clone(), Command::ResetPassword(id, b.password)))
        }
        AdminApi::User(id, action) => body::<TenantOnly>(ctx, "body must be {\"tenant_id\"?} or empty")
            .map(|b| (b.tenant_id, Command::User(id, action))),
        AdminApi::CreateClient => body::<NewClient>(
            ctx,
            "body must be {\"name\", \"enc_jwk\", \"sig_jwk\"?, \"tenant_id\"?} with public JWKs",
        )
        .map(|b| (b.tenant_id.clone(), Command::CreateClient(Box::new(b)))),
        AdminApi::Client(id, disable) => body::<TenantOnly>(ctx, "body must be {\"tenant_id\"?} or empty")
            .map(|b| (b.tenant_id, Command::Client(id, disable))),
        AdminApi::ShowFederation => query_tenant(ctx).map(|t| (t, Command::Federation(federation::Command::Show))),
        AdminApi::SetFederation => {
            body::<NewFederation>(ctx, "body must be {\"settings\": {...}, \"tenant_id\"?} (README, Federation)")
                .map(|b| (b.tenant_id, Command::Federation(federation::Command::Set(Box::new(b.settings)))))
        }
        AdminApi::TurnOffFederation => body::<TenantOnly>(ctx, "body must be {\"tenant_id\"?} or empty")
            .map(|b| (b.tenant_id, Command::Federation(federation::Command::TurnOff))),
        AdminApi::LinkUser(id) => body::<NewLink>(ctx, "body must be {\"external_id\", \"tenant_id\"?}")
            .map(|b| (b.tenant_id, Command::Federation(federation::Command::Link(id, b.external_id)))),
    };
    let (named, command) = match result {
        Ok(parsed) => parsed,
        Err(error) => {
            event.reason = Reason::MalformedRequest.into();
            return Err(error.into());
        }
    };
    let Some(tenant) = principal.tenant_or(named.as_ref()).cloned() else {
        event.reason = Reason::OperatorMustNameTenant.into();
        return Err(Error::BadRequest(
            Reason::OperatorMustNameTenant,
            "the operator must name the tenant: tenant_id".into(),
        )
        .into());
    };
    crate::for_tenant(event, &tenant);
    if !principal.may_manage(&tenant) {
        event.reason = Reason::OtherTenant.into();
        return Err(
            Error::ForbiddenWith(Reason::OtherTenant, "tenant admins manage their own tenant only".into()).into()
        );
    }
    if !ctx.settings.tenant_exists(&tenant)? {
        event.reason = Reason::UnknownTenant.into();
        return Err(Error::NotFound(Reason::UnknownTenant).into());
    }
    run(ctx, &tenant, command, event)
}

enum Command {
    ListUsers,
    ListClients,
    CreateUser(NewUser),
    ResetPassword(Opaque, String),
    User(Opaque, UserAction),
    CreateClient(Box<NewClient>),
    Client(ClientId, bool),
    Federation(federation::Command),
}

fn action_name(api: &AdminApi) -> &'static str {
    match api {
        AdminApi::ListUsers => "users.list",
        AdminApi::CreateUser => "users.create",
        AdminApi::User(_, UserAction::Disable) => "users.disable",
        AdminApi::User(_, UserAction::Enable) => "users.enable",
        AdminApi::User(_, UserAction::ResetPassword) => "users.reset_password",
        AdminApi::User(_, UserAction::ResetMfa) => "users.reset_mfa",
        AdminApi::ListClients => "clients.list",
        AdminApi::CreateClient => "clients.create",
        AdminApi::Client(_, true) => "clients.disable",
        AdminApi::Client(_, false) => "clients.enable",
        AdminApi::ShowFederation => "federation.show",
        AdminApi::SetFederation => "federation.set",
        AdminApi::TurnOffFederation => "federation.disable",
        AdminApi::LinkUser(_) => "users.link",
    }
}

fn user_json(user: &User, mfa: bool) -> serde_json::Value {
    serde_json::json!({
        "id": user.user_id,
        "username": user.username,
        "role": user.role.as_str(),
        "disabled": user.disabled,
        "mfa_enrolled": mfa,
    })
}

fn run(ctx: &Ctx<'_>, tenant: &TenantId, command: Command, event: &mut Event) -> Outcome {
    let db = ctx.db()?;
    let ok = |status: u16, body: serde_json::Value| Ok(respond::json(status, &body, Cache::NoStore));
    match command {
        Command::ListUsers => {
            event.resource = format!("tenant/{tenant}/users");
            let mut users = Vec::new();
            for user in identity::list_users(&db, tenant)? {
                let mfa = identity::mfa(&db, tenant, &user.user_id)?.is_some_and(|m| m.confirmed);
                let mut json = user_json(&user, mfa);
                json["external_id"] = health_spin::federation::external_id(&db, tenant, &user.user_id)?.into();
                users.push(json);
            }
            ok(200, serde_json::json!({ "tenant_id": tenant, "users": users }))
        }
        Command::CreateUser(new) => {
            event.resource = format!("tenant/{tenant}/users/{}", new.username);
            if password::check_policy(&new.password).is_err() {
                event.reason = Reason::WeakPassword.into();
                return Err(Error::BadRequest(Reason::WeakPassword, "password must be 12 to 1024 bytes".into()).into());
            }
            let hash = password::hash(&new.password, &mut health_spin::rng())
                .map_err(|_| anyhow::anyhow!("password hashing failed"))?;
            let user = User {
                user_id: Opaque::parse(&format!("u-{}", health_spin::random_id())).context("a new user id")?,
                username: new.username.clone(),
                role: new.role,
                password_hash: hash,
                disabled: false,
            };
            if !identity::create_user(&db, tenant, &user)? {
                event.reason = Reason::UsernameTaken.into();
                return Err(Error::ConflictWith(
                    Reason::UsernameTaken,
                    "a user with this username exists in the tenant".into(),
                )
                .into());
            }
            event.reason = Reason::UserCreated.into();
            ok(201, user_json(&user, false))
        }
        Command::ResetPassword(user_id, new_password) => {
            event.resource = format!("tenant/{tenant}/users/{user_id}");
            if password::check_policy(&new_password).is_err() {
                event.reason = Reason::WeakPassword.into();
                return Err(Error::BadRequest(Reason::WeakPassword, "password must be 12 to 1024 bytes".into()).into());
            }
            let Some(user) = identity::user_by_id(&db, tenant, &user_id)? else {
                event.reason = Reason::UnknownUser.into();
                return Err(Error::NotFound(Reason::UnknownUser).into());
            };
            let hash = password::hash(&new_password, &mut health_spin::rng())
                .map_err(|_| anyhow::anyhow!("password hashing failed"))?;
            identity::set_password(&db, tenant, &user_id, &hash)?;
            identity::clear_attempts(&db, tenant, &user.username, None)?;
            issue::revoke_subject(&db, tenant, &user_id, Reason::PasswordReset, ctx.now)?;
            event.reason = Reason::PasswordResetSessionsEnded.into();
            ok(200, serde_json::json!({ "id": user_id, "password_reset": true, "sessions_ended": true }))
        }
        Command::User(user_id, action) => {
            event.resource = format!("tenant/{tenant}/users/{user_id}");
            let Some(user) = identity::user_by_id(&db, tenant, &user_id)? else {
                event.reason = Reason::UnknownUser.into();
                return Err(Error::NotFound(Reason::UnknownUser).into());
            };
            let (ended, reason) = match action {
                UserAction::Disable => {
                    identity::set_disabled(&db, tenant, &user_id, true)?;
                    issue::revoke_subject(&db, tenant, &user_id, Reason::UserDisabled, ctx.now)?;
                    (true, Reason::UserDisable)
                }
                UserAction::Enable => {
                    identity::set_disabled(&db, tenant, &user_id, false)?;
                    (false, Reason::UserEnable)
                }
                UserAction::ResetMfa => {
                    identity::reset_mfa(&db, tenant, &user_id)?;
                    issue::revoke_subject(&db, tenant, &user_id, Reason::MfaReset, ctx.now)?;
                    (true, Reason::UserResetMfa)
                }
                UserAction::ResetPassword => unreachable!("parsed as Command::ResetPassword"),
            };
            event.reason = reason.into();
            let disabled = matches!(action, UserAction::Disable) || (user.disabled && action != UserAction::Enable);
            ok(200, serde_json::json!({ "id": user_id, "disabled": disabled, "sessions_ended": ended }))
        }
        Command::ListClients => {
            event.resource = format!("tenant/{tenant}/clients");
            let clients: Vec<_> = identity::list_clients(&db, tenant)?.iter().map(client_json).collect();
            ok(200, serde_json::json!({ "tenant_id": tenant, "clients": clients }))
        }
        Command::CreateClient(new) => create_client(ctx, &db, tenant, *new, event),
        Command::Federation(command) => federation::run(ctx, &db, tenant, command, event),
        Command::Client(client_id, disable) => {
            event.resource = format!("tenant/{tenant}/clients/{client_id}");
            if !identity::set_client_disabled(&db, tenant, &client_id, disable)? {
                event.reason = Reason::UnknownClient.into();
                return Err(Error::NotFound(Reason::UnknownClient).into());
            }
            event.reason = if disable { Reason::ClientDisabled } else { Reason::ClientEnabled }.into();
            ok(200, serde_json::json!({ "client_id": client_id, "disabled": disable }))
        }
    }
}

fn client_json(client: &Client) -> serde_json::Value {
    let kid = |jwk: &str| serde_json::from_str::<serde_json::Value>(jwk).ok().and_then(|v| v.get("kid").cloned());
    serde_json::json!({
        "client_id": client.client_id,
        "name": client.name,
        "disabled": client.disabled,
        "token_endpoint_auth_method": if client.sig_jwk.is_some() { "private_key_jwt" } else { "client_secret_basic" },
        "enc_kid": kid(&client.enc_jwk),
        "sig_kid": client.sig_jwk.as_deref().and_then(kid),
    })
}

/// Registers an insurer: its public encryption key (summaries are encrypted to it) and either
/// a public signing key (`private_key_jwt`) or, without one, a generated client secret that is
/// shown once and stored only as a SHA-256 hash (256 random bits need no slow hash).
fn create_client(
    ctx: &Ctx<'_>,
    db: &spin_sdk::sqlite::Connection,
    tenant: &TenantId,
    new: NewClient,
    event: &mut Event,
) -> Outcome {
    let name = new.name.trim();
    if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
        event.reason = Reason::MalformedRequest.into();
        return Err(
            Error::BadRequest(Reason::MalformedRequest, "name must be 1-128 printable characters".into()).into()
        );
    }
    let Ok(enc) = register_jwk(new.enc_jwk, KeyUse::Enc, tenant) else {
        event.reason = Reason::UnusableEncJwk.into();
        return Err(Error::BadRequest(
            Reason::UnusableEncJwk,
            "enc_jwk must be a public P-256 (ECDH-ES+A256KW) or RSA (RSA-OAEP-256) key".into(),
        )
        .into());
    };
    let sig = match new.sig_jwk.map(|jwk| register_jwk(jwk, KeyUse::Sig, tenant)).transpose() {
        Ok(sig) => sig,
        Err(_) => {
            event.reason = Reason::UnusableSigJwk.into();
            return Err(Error::BadRequest(
                Reason::UnusableSigJwk,
                "sig_jwk must be a public RS256, ES256 or EdDSA key".into(),
            )
            .into());
        }
    };
    let client_id = ClientId::parse(&format!("ins-{}", health_spin::random_id())).context("a new client id")?;
    event.resource = format!("tenant/{tenant}/clients/{client_id}");
    let secret = sig.is_none().then(|| {
        use rand_core::RngCore;
        let mut bytes = [0u8; 32];
        health_spin::rng().fill_bytes(&mut bytes);
        health_core::b64url(bytes)
    });
    let client = Client {
        client_id: client_id.clone(),
        tenant_id: tenant.clone(),
        name: name.to_owned(),
        secret_hash: secret.as_deref().map(health_core::sha256_hex),
        sig_jwk: sig.as_ref().map(serde_json::to_string).transpose().context("encoding sig_jwk")?,
        enc_jwk: serde_json::to_string(&enc).context("encoding enc_jwk")?,
        disabled: false,
    };
    if !identity::create_client(db, &client, ctx.now)? {
        return Err(anyhow::anyhow!("client id collision").into());
    }
    event.reason = Reason::ClientRegistered.into();
    let mut body = client_json(&client);
    if let Some(secret) = secret {
        body["client_secret"] = secret.into();
    }
    Ok(respond::json(201, &body, Cache::NoStore))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_the_federation_admin_calls() {
        let user = Opaque::parse("u-alice").expect("id");
        assert_eq!(parse(&Method::Get, &["federation"]), Ok(AdminApi::ShowFederation));
        assert_eq!(parse(&Method::Post, &["federation"]), Ok(AdminApi::SetFederation));
        assert_eq!(parse(&Method::Post, &["federation", "disable"]), Ok(AdminApi::TurnOffFederation));
        assert_eq!(parse(&Method::Get, &["federation", "disable"]), Err(Error::MethodNotAllowed));
        assert_eq!(parse(&Method::Post, &["users", "u-alice", "link"]), Ok(AdminApi::LinkUser(user)));
        assert_eq!(parse(&Method::Get, &["users", "u-alice", "link"]), Err(Error::MethodNotAllowed));
        assert_eq!(parse(&Method::Post, &["users", "../x", "link"]), Err(Error::NotFound(Reason::NoSuchRoute)));
        assert_eq!(parse(&Method::Post, &["federation", "other"]), Err(Error::NotFound(Reason::NoSuchRoute)));
    }
}
