//! Federation with a tenant's OpenID provider (issue 17 items 1, 2 and 4): the RFC 8693 token
//! exchange at `/auth/token` (the provider's ID token or JWT access token in, the platform's own
//! access and refresh tokens out, for the linked local user, whose role is authoritative), the
//! admin routes that set, show and turn off a tenant's provider and link a provider identity to
//! a user, and the `required` rule for password logins.
//!
//! The checks are `health_identity::federation`'s; the provider's keys come through
//! `health_spin::federation`'s cache. Every refusal is `invalid_grant` (or `invalid_request`
//! for a malformed exchange), its precise reason in the audit event.

use std::collections::BTreeMap;

use anyhow::Context;
use health_core::audit::Event;
use health_core::{Component, Opaque, Reason, Role, TenantId, TokenId, Username};
use health_identity::client::{self, ClientAuth};
use health_identity::federation::{self as decide, ProviderSettings};
use health_spin::federation as store;
use health_spin::identity;
use health_spin::respond::{self, Cache};
use spin_sdk::http::Response;
use spin_sdk::sqlite::Connection;

use crate::grants::oauth;
use crate::issue::{self, Refresh, Subject};
use crate::{Ctx, Error, Failure};

type Outcome = Result<Response, Failure>;

const INVALID_GRANT: Error = oauth(400, "invalid_grant", "the subject token was not accepted");

/// The `amr` values (RFC 8176 §2) a provider's token may pass on into the platform's token;
/// anything else it says is dropped.
const REGISTERED_AMR: [&str; 20] = [
    "face", "fpt", "geo", "hwk", "iris", "kba", "mca", "mfa", "otp", "pin", "pwd", "rba", "retina", "sc", "sms", "swk",
    "tel", "user", "vbm", "wia",
];

fn refuse(event: &mut Event, reason: Reason, error: Error) -> Outcome {
    event.reason = reason.into();
    Err(error.into())
}

/// `grant_type=urn:ietf:params:oauth:grant-type:token-exchange` (RFC 8693 §2.1), with the
/// platform's `tenant` parameter naming the tenant (as `tenant` does in a password login).
pub async fn exchange(ctx: &Ctx<'_>, form: &BTreeMap<String, String>, event: &mut Event) -> Outcome {
    event.action = "auth.token.exchange".into();
    let invalid_request = |detail| oauth(400, "invalid_request", detail);
    // Only the public web client is issued platform sessions, as at a password login.
    let authorization = ctx.req.header("authorization").and_then(|v| v.as_str());
    match client::from_request(authorization, form) {
        Ok(ClientAuth::Public { client_id }) if client_id == crate::WEB_CLIENT => {}
        Err(client::ClientAuthError::Missing) => {}
        Ok(_) | Err(_) => {
            return refuse(
                event,
                Reason::UnknownPublicClient,
                oauth(401, "invalid_client", "client authentication failed"),
            );
        }
    }
    let Some(token) = form.get("subject_token").filter(|t| !t.is_empty()) else {
        return refuse(event, Reason::MalformedRequest, invalid_request("subject_token is required"));
    };
    let Some(kind) = form.get("subject_token_type").and_then(|t| decide::SubjectKind::parse(t)) else {
        return refuse(
            event,
            Reason::UnsupportedTokenType,
            invalid_request("subject_token_type must be the id_token, access_token or jwt token type"),
        );
    };
    if form.get("requested_token_type").is_some_and(|t| t != decide::ISSUED_TOKEN_TYPE) {
        return refuse(event, Reason::UnsupportedTokenType, invalid_request("only access tokens are issued"));
    }
    if form.contains_key("actor_token") {
        // Delegation (RFC 8693 §1.1) is not offered: the platform's token is the user's own.
        return refuse(event, Reason::MalformedRequest, invalid_request("actor_token is not supported"));
    }
    let Some(tenant) = form.get("tenant").and_then(|t| TenantId::parse(t).ok()) else {
        return refuse(event, Reason::MalformedRequest, invalid_request("tenant is required"));
    };
    event.resource = format!("tenant/{tenant}/federation");
    if !ctx.settings.tenant_exists(&tenant)? {
        return refuse(event, Reason::UnknownTenant, INVALID_GRANT);
    }
    crate::for_tenant(event, &tenant);
    let db = ctx.db()?;
    let Some(settings) = store::settings(&db, &tenant)?.filter(|s| s.enabled) else {
        return refuse(event, Reason::FederationDisabled, INVALID_GRANT);
    };
    let kv = health_spin::revocations::open()?;
    let cooldown = settings.jwks_refetch_cooldown_secs.max(1);
    let Some((keys, _)) = store::provider_keys(&kv, &tenant, &settings, token, ctx.now, cooldown).await? else {
        return refuse(event, Reason::ProviderKeysUnavailable, INVALID_GRANT);
    };
    let verified = match decide::verify(token, kind, &keys, &settings, ctx.now) {
        Ok(verified) => verified,
        Err(refused) => return refuse(event, refused.reason(), INVALID_GRANT),
    };
    let subject = match local_subject(ctx, &db, &kv, &tenant, &settings, &verified, event)? {
        Ok(subject) => subject,
        Err(reason) => return refuse(event, reason, INVALID_GRANT),
    };
    let refresh = if subject.role == Role::Insurance { Refresh::None } else { Refresh::NewFamily };
    let issued = issue::issue(ctx, &db, &subject, refresh, event).await?;
    event.reason = Reason::TokenExchanged.into();
    // RFC 8693 §2.2.1.
    let mut body = serde_json::json!({
        "access_token": issued.access_token,
        "issued_token_type": decide::ISSUED_TOKEN_TYPE,
        "token_type": "Bearer",
        "expires_in": issued.expires_in,
        "scope": issued.scope,
    });
    if let Some(refresh) = &issued.refresh_token {
        body["refresh_token"] = refresh.clone().into();
    }
    Ok(respond::json(200, &body, Cache::NoStore))
}

/// The local user a verified provider sign-in token (the exchange's subject token, the code
/// flow's ID token) signs in as: the linked identity's user, enabled, with MFA at the provider
/// if the role needs it; remembered for a back-channel logout. `Err` with the refusal's reason.
pub(crate) fn local_subject(
    ctx: &Ctx<'_>,
    db: &Connection,
    kv: &spin_sdk::key_value::Store,
    tenant: &TenantId,
    settings: &ProviderSettings,
    verified: &decide::Verified,
    event: &mut Event,
) -> anyhow::Result<Result<Subject, Reason>> {
    let Some(user_id) = store::linked_user(db, tenant, &verified.external_id)? else {
        return Ok(Err(Reason::UnmappedIdentity));
    };
    let Some(user) = identity::user_by_id(db, tenant, &user_id)? else {
        return Ok(Err(Reason::UnmappedIdentity));
    };
    event.actor_sub = Some(user.user_id.to_string());
    event.actor_role = Some(user.role.as_str().into());
    if user.disabled {
        return Ok(Err(Reason::UserDisabled));
    }
    if !decide::mfa_satisfied(settings, user.role, verified) {
        return Ok(Err(Reason::ProviderMfaRequired));
    }
    // For a back-channel logout, which names the provider's `sub` and `sid`.
    store::remember_sign_in(kv, tenant, &verified.sub, verified.sid.as_deref(), &user.user_id)?;
    Ok(Ok(Subject {
        tenant: tenant.clone(),
        sub: user.user_id.clone(),
        role: user.role,
        client_id: crate::web_client(),
        amr: verified.amr.iter().filter(|a| REGISTERED_AMR.contains(&a.as_str())).cloned().collect(),
        auth_time: verified.auth_time.min(ctx.now),
        enc_jwk: None,
    }))
}

/// A provider access token the gateway was given, accepted for a local user.
struct Accepted {
    user_id: Opaque,
    role: Role,
    /// The platform's id of the token (the provider's `jti`, hashed into the platform's alphabet).
    jti: TokenId,
    exp: i64,
    amr: Vec<String>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRef {
    token: String,
}

/// `POST /internal/federation/access-token` `{"token"}`, from the gateway only (its caller
/// context names the tenant the token's issuer and audience route to, `health_spin::issuers`):
/// whether the tenant accepts its provider's access tokens and this one passes, for which local
/// user and role. The exchange's checks exactly ([`decide::verify`] as an access token, so
/// `typ` `at+jwt`; the link; the user enabled; MFA for the role), then a `jti` required and
/// the revocation check of the platform's own tokens (the user's not-before: a logout-all, a
/// back-channel logout, a disabled account end these tokens too). The answer is
/// `{"accepted":true,"user_id","role","scope","jti","exp","amr"}` or
/// `{"accepted":false,"reason"}`; not audited here: the gateway audits the request.
pub async fn provider_access_token(ctx: &Ctx<'_>) -> anyhow::Result<Response> {
    let caller = match health_spin::verify_context(ctx.req, Component::Auth, &[Component::Gateway])? {
        Ok(caller) => caller,
        Err(e) => {
            health_spin::log::warn("internal_request_refused", e.to_string());
            return Ok(respond::refusal(&Error::Unauthenticated(Reason::ContextRefused)));
        }
    };
    let tenant = &caller.tenant_id;
    health_spin::log::set_tenant(tenant.as_str());
    let token = match ctx.json::<TokenRef>("body must be {\"token\"}") {
        Ok(body) => body.token,
        Err(refusal) => return Ok(respond::refusal(&refusal)),
    };
    let answer = match accept_access_token(ctx, tenant, &token).await? {
        Ok(a) => serde_json::json!({
            "accepted": true, "user_id": a.user_id, "role": a.role.as_str(), "scope": issue::scopes(a.role),
            "jti": a.jti, "exp": a.exp, "amr": a.amr,
        }),
        Err(reason) => serde_json::json!({ "accepted": false, "reason": reason.as_str() }),
    };
    Ok(respond::json(200, &answer, Cache::NoStore))
}

async fn accept_access_token(
    ctx: &Ctx<'_>,
    tenant: &TenantId,
    token: &str,
) -> anyhow::Result<Result<Accepted, Reason>> {
    let db = ctx.db()?;
    let Some(settings) = store::settings(&db, tenant)?.filter(|s| s.enabled && s.accept_provider_tokens) else {
        return Ok(Err(Reason::ProviderTokensNotAccepted));
    };
    let kv = health_spin::revocations::open()?;
    let cooldown = settings.jwks_refetch_cooldown_secs.max(1);
    let Some((keys, _)) = store::provider_keys(&kv, tenant, &settings, token, ctx.now, cooldown).await? else {
        return Ok(Err(Reason::ProviderKeysUnavailable));
    };
    let verified = match decide::verify(token, decide::SubjectKind::AccessToken, &keys, &settings, ctx.now) {
        Ok(verified) => verified,
        Err(refused) => return Ok(Err(refused.reason())),
    };
    let Some(provider_jti) = &verified.jti else {
        return Ok(Err(Reason::MissingClaim));
    };
    let Some(user_id) = store::linked_user(&db, tenant, &verified.external_id)? else {
        return Ok(Err(Reason::UnmappedIdentity));
    };
    let Some(user) = identity::user_by_id(&db, tenant, &user_id)? else {
        return Ok(Err(Reason::UnmappedIdentity));
    };
    if user.disabled {
        return Ok(Err(Reason::UserDisabled));
    }
    // Insurers' tokens are the platform's one-time nested JWEs, never a provider's.
    if user.role == Role::Insurance {
        return Ok(Err(Reason::InsurerTokenNotEncrypted));
    }
    if !decide::mfa_satisfied(&settings, user.role, &verified) {
        return Ok(Err(Reason::ProviderMfaRequired));
    }
    let jti = TokenId::parse(&health_core::sha256_hex(provider_jti)).context("a hash is a token id")?;
    let check =
        health_spin::revocations::Token { tenant, jti: jti.as_str(), sub: user.user_id.as_str(), iat: verified.iat };
    if let Some(revoked) = health_spin::revocations::check(&kv, &check, ctx.now)? {
        return Ok(Err(revoked.reason()));
    }
    Ok(Ok(Accepted {
        user_id: user.user_id,
        role: user.role,
        jti,
        exp: verified.exp,
        amr: verified.amr.into_iter().filter(|a| REGISTERED_AMR.contains(&a.as_str())).collect(),
    }))
}

const INVALID_LOGOUT: Error = oauth(400, "invalid_request", "the logout token was not accepted");

/// `POST /auth/federation/{tenant}/backchannel-logout` (OpenID Connect Back-Channel Logout 1.0):
/// the tenant's provider posts a `logout_token`, validated as §2.6 says
/// ([`decide::verify_logout`], keys as for the exchange) and taken once per `jti`; every local
/// user its `sub` or `sid` signed in as at an exchange loses every session at once: refresh
/// families revoked, access tokens refused from now on (the subject's not-before, as at
/// logout-all). 200 with an empty body, or 400 `invalid_request` (§2.8), never cached.
pub async fn backchannel_logout(ctx: &Ctx<'_>, tenant: &TenantId, event: &mut Event) -> Outcome {
    event.action = "auth.federation.backchannel_logout".into();
    event.resource = format!("tenant/{tenant}/federation");
    let form = ctx.form()?;
    let Some(token) = form.get("logout_token").filter(|t| !t.is_empty()) else {
        return refuse(event, Reason::MalformedRequest, INVALID_LOGOUT);
    };
    if !ctx.settings.tenant_exists(tenant)? {
        return refuse(event, Reason::UnknownTenant, INVALID_LOGOUT);
    }
    crate::for_tenant(event, tenant);
    let db = ctx.db()?;
    let Some(settings) = store::settings(&db, tenant)?.filter(|s| s.enabled) else {
        return refuse(event, Reason::FederationDisabled, INVALID_LOGOUT);
    };
    let kv = health_spin::revocations::open()?;
    let cooldown = settings.jwks_refetch_cooldown_secs.max(1);
    let Some((keys, _)) = store::provider_keys(&kv, tenant, &settings, token, ctx.now, cooldown).await? else {
        return refuse(event, Reason::ProviderKeysUnavailable, INVALID_LOGOUT);
    };
    let logout = match decide::verify_logout(token, &keys, &settings, ctx.now) {
        Ok(logout) => logout,
        Err(refused) => return refuse(event, refused.reason(), INVALID_LOGOUT),
    };
    event.jti = Some(logout.jti.clone());
    if !store::first_delivery(&kv, tenant, &logout.jti, logout.remember_until)? {
        return refuse(event, Reason::LogoutTokenReplayed, INVALID_LOGOUT);
    }
    let users = store::signed_in_users(&kv, tenant, logout.sub.as_deref(), logout.sid.as_deref())?;
    for user in &users {
        crate::issue::revoke_subject(&db, tenant, user, Reason::ProviderLogout, ctx.now)?;
    }
    // §2.8: a logout that found nothing to end has still succeeded.
    event.reason = match users.as_slice() {
        [] => Reason::ProviderLogoutUnknownSubject,
        [user] => {
            event.resource = format!("tenant/{tenant}/users/{user}");
            Reason::ProviderLogout
        }
        _ => {
            let ids: Vec<&str> = users.iter().map(Opaque::as_str).collect();
            event.resource = format!("tenant/{tenant}/users/{}", ids.join(","));
            Reason::ProviderLogout
        }
    }
    .into();
    Ok(respond::bytes(200, "text/plain", Vec::new(), Cache::NoStore))
}

/// `POST /auth/federation/{tenant}/events` (RFC 8935 push delivery of a Security Event Token,
/// `Content-Type: application/secevent+jwt`; OpenID CAEP 1.0): the tenant's provider pushes a
/// SET, validated by [`decide::verify_security_event`] (keys as for the exchange) and taken once
/// per `jti`. A `session-revoked` or `credential-change` event about a user of the tenant (by
/// email, when that is the subject claim, or by the provider's `sub` an exchange remembered)
/// ends every session of that user, as a back-channel logout does; other events and unknown
/// subjects are accepted and ignored (RFC 8935 §2.2: 202 means received and validated). A
/// refusal is 400 with `{"err","description"}` (RFC 8935 §2.3), never cached.
pub async fn security_event(ctx: &Ctx<'_>, tenant: &TenantId, event: &mut Event) -> Outcome {
    event.action = "auth.federation.security_event".into();
    event.resource = format!("tenant/{tenant}/federation");
    let set_error = |event: &mut Event, reason: Reason, err: &str, description: &str| -> Outcome {
        event.reason = reason.into();
        let body = serde_json::json!({ "err": err, "description": description });
        Ok(respond::json(400, &body, Cache::NoStore))
    };
    let media_type = ctx.req.header("content-type").and_then(|v| v.as_str()).and_then(|v| v.split(';').next());
    if !media_type.is_some_and(|m| m.trim().eq_ignore_ascii_case("application/secevent+jwt")) {
        return Err(Error::UnsupportedMediaType.into());
    }
    if ctx.req.body().len() > decide::MAX_PROVIDER_TOKEN_BYTES {
        return Err(Error::TooLarge.into());
    }
    let Ok(token) = std::str::from_utf8(ctx.req.body()).map(str::trim) else {
        return set_error(event, Reason::MalformedRequest, "invalid_request", "the body is not a JWT");
    };
    if !ctx.settings.tenant_exists(tenant)? {
        return set_error(event, Reason::UnknownTenant, "invalid_audience", "no such tenant");
    }
    crate::for_tenant(event, tenant);
    let db = ctx.db()?;
    let Some(settings) = store::settings(&db, tenant)?.filter(|s| s.enabled) else {
        return set_error(event, Reason::FederationDisabled, "invalid_audience", "the tenant has no provider");
    };
    let kv = health_spin::revocations::open()?;
    let cooldown = settings.jwks_refetch_cooldown_secs.max(1);
    let Some((keys, _)) = store::provider_keys(&kv, tenant, &settings, token, ctx.now, cooldown).await? else {
        return set_error(event, Reason::ProviderKeysUnavailable, "invalid_key", "the provider's keys are unavailable");
    };
    let set = match decide::verify_security_event(token, &keys, &settings, ctx.now) {
        Ok(set) => set,
        Err(refused) => {
            let err = match refused {
                decide::Refused::Token(_) => "invalid_key",
                decide::Refused::WrongIssuer => "invalid_issuer",
                decide::Refused::WrongAudience => "invalid_audience",
                _ => "invalid_request",
            };
            return set_error(event, refused.reason(), err, "the security event token was not accepted");
        }
    };
    event.jti = Some(set.jti.clone());
    if !store::first_delivery(&kv, tenant, &set.jti, set.remember_until)? {
        return set_error(event, Reason::SecurityEventReplayed, "invalid_request", "the jti was already received");
    }
    let users = match (set.event, &set.subject) {
        (None, _) | (_, decide::EventSubject::Other) => Vec::new(),
        (Some(_), decide::EventSubject::Email(email)) if settings.subject_claim == "email" => {
            store::linked_user(&db, tenant, email)?.into_iter().collect()
        }
        (Some(_), decide::EventSubject::Email(_)) => Vec::new(),
        (Some(_), decide::EventSubject::ProviderSub(sub)) => store::signed_in_users(&kv, tenant, Some(sub), None)?,
    };
    for user in &users {
        crate::issue::revoke_subject(&db, tenant, user, Reason::ProviderSessionRevoked, ctx.now)?;
    }
    event.reason = match users.as_slice() {
        [] => Reason::SecurityEventIgnored,
        [user, ..] => {
            event.resource = format!("tenant/{tenant}/users/{user}");
            Reason::ProviderSessionRevoked
        }
    }
    .into();
    Ok(respond::bytes(202, "text/plain", Vec::new(), Cache::NoStore))
}

/// Whether a password login of `username` is refused because the tenant's provider is
/// required (asked once the password matched, so the answer tells nothing to a guesser).
pub fn password_refused(db: &Connection, tenant: &TenantId, username: &Username) -> anyhow::Result<bool> {
    Ok(store::settings(db, tenant)?.is_some_and(|s| s.refuses_password(username)))
}

/// Rewrites the gateway's routing of provider access tokens for the issuers a change of a
/// tenant's settings touched (`health_spin::issuers`).
fn publish(db: &Connection, before: Option<&ProviderSettings>, after: &ProviderSettings) -> anyhow::Result<()> {
    let kv = health_spin::revocations::open()?;
    store::publish_issuer(&kv, db, &after.issuer)?;
    match before {
        Some(before) if before.issuer != after.issuer => store::publish_issuer(&kv, db, &before.issuer),
        _ => Ok(()),
    }
}

/// The admin API's federation commands, run for a tenant the principal may manage.
pub enum Command {
    Show,
    Set(Box<ProviderSettings>),
    TurnOff,
    Link(Opaque, String),
}

pub fn run(ctx: &Ctx<'_>, db: &Connection, tenant: &TenantId, command: Command, event: &mut Event) -> Outcome {
    let ok = |body: serde_json::Value| Ok(respond::json(200, &body, Cache::NoStore));
    event.resource = format!("tenant/{tenant}/federation");
    match command {
        Command::Show => ok(serde_json::json!({ "tenant_id": tenant, "federation": store::settings(db, tenant)? })),
        Command::Set(settings) => {
            if let Err(e) = settings.validate() {
                return refuse(
                    event,
                    Reason::BadFederationSettings,
                    Error::BadRequest(Reason::BadFederationSettings, e.to_string()),
                );
            }
            if let Some(break_glass) = &settings.break_glass {
                let user = identity::find_user(db, tenant, break_glass)?;
                if !user.is_some_and(|u| u.role == Role::Admin) {
                    let detail = "break_glass must name an admin of the tenant".to_owned();
                    return refuse(
                        event,
                        Reason::BadFederationSettings,
                        Error::BadRequest(Reason::BadFederationSettings, detail),
                    );
                }
            }
            // The gateway picks a provider access token's tenant by its issuer and audience.
            let routes_alike = |(other, s): &(TenantId, ProviderSettings)| {
                other != tenant
                    && s.enabled
                    && s.accept_provider_tokens
                    && s.issuer == settings.issuer
                    && s.audience == settings.audience
            };
            if settings.enabled && settings.accept_provider_tokens && store::all_settings(db)?.iter().any(routes_alike)
            {
                let detail = "another tenant accepts this provider's access tokens for the same audience".to_owned();
                return refuse(
                    event,
                    Reason::BadFederationSettings,
                    Error::BadRequest(Reason::BadFederationSettings, detail),
                );
            }
            let before = store::settings(db, tenant)?;
            store::set_settings(db, tenant, &settings, ctx.now)?;
            publish(db, before.as_ref(), &settings)?;
            event.reason = Reason::FederationSet.into();
            ok(serde_json::json!({ "tenant_id": tenant, "federation": settings }))
        }
        Command::TurnOff => {
            let Some(mut settings) = store::settings(db, tenant)? else {
                event.reason = Reason::FederationDisabled.into();
                return Err(Error::NotFound(Reason::FederationDisabled).into());
            };
            let before = settings.clone();
            settings.enabled = false;
            settings.required = false;
            store::set_settings(db, tenant, &settings, ctx.now)?;
            publish(db, Some(&before), &settings)?;
            event.reason = Reason::FederationTurnedOff.into();
            ok(serde_json::json!({ "tenant_id": tenant, "federation": settings }))
        }
        Command::Link(user_id, external_id) => {
            event.resource = format!("tenant/{tenant}/users/{user_id}");
            let external_id = external_id.trim();
            if external_id.is_empty() || external_id.len() > 256 || external_id.chars().any(char::is_control) {
                let detail = "external_id must be 1-256 printable characters".to_owned();
                return refuse(event, Reason::MalformedRequest, Error::BadRequest(Reason::MalformedRequest, detail));
            }
            if identity::user_by_id(db, tenant, &user_id)?.is_none() {
                return refuse(event, Reason::UnknownUser, Error::NotFound(Reason::UnknownUser));
            }
            let claim = store::settings(db, tenant)?.map_or_else(|| "email".to_owned(), |s| s.subject_claim);
            let external_id = decide::normalise(&claim, external_id);
            if !store::link(db, tenant, &external_id, &user_id, ctx.now)? {
                let detail = "another user of the tenant is linked to this identity".to_owned();
                return refuse(event, Reason::ExternalIdTaken, Error::ConflictWith(Reason::ExternalIdTaken, detail));
            }
            event.reason = Reason::IdentityLinked.into();
            ok(serde_json::json!({ "id": user_id, "external_id": external_id }))
        }
    }
}
