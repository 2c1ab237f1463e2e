//! `POST /api/auth/change-password`: a signed-in user changes their own password.
//!
//! The bearer token says who; the current password proves it is still them (a stolen access
//! token alone changes nothing). The attempt is counted against the same (user, source)
//! lockout counter as a login before argon2id runs, so a wrong current password is a failed
//! login in every respect: audited (`bad_password`), counted, and locking the pair after
//! `lockout_max_failures`. The new password meets the same policy as everywhere else (12–1024
//! bytes) and must differ from the current one.
//!
//! On success every *other* session of the user ends: each other refresh family is revoked
//! with the access tokens issued in it, and the access tokens of the current family other than
//! the presented one are revoked too, so the device that changed the password stays signed in
//! and nothing else does (`requiresReauth: false`). A token that belongs to no family (an
//! insurer user's one-time token) leaves no way to tell its session from the others: then every
//! token of the subject is refused from now on (the per-subject not-before, as logout-all) and
//! the answer says `requiresReauth: true`. The new hash replaces the old one only if the old one
//! is still stored (compare-and-set), so of two concurrent changes from one password one wins
//! and the other is refused 409. The families are listed after the new hash is stored, so a
//! login with the old password can survive only if it checked that password before the swap
//! and created its family after the listing, a window of one request's length; an admin's
//! `reset-password` or the user's `logout-all` ends that one too.

use health_core::audit::Event;
use health_core::{Caller, Reason, Role};
use health_identity::lockout::source_of;
use health_identity::login::{self as decide, Account, Refusal};
use health_identity::password;
use health_spin::identity::{self, Reservation};
use health_spin::tokens::TokenIds;
use serde::Deserialize;
use spin_sdk::http::Response;

use crate::{Ctx, Error, Failure, issue, login, sessions};

type Outcome = Result<Response, Failure>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ChangePassword {
    current_password: String,
    new_password: String,
}

/// The policy's decision on the token's own account (`health_policy`, linked in: `auth`'s WIT
/// world imports no authorizer).
fn decide(claims: &health_jose::Claims, ids: &TokenIds, has_password: bool) -> health_policy::Decision {
    let Some(role) = Role::parse(&claims.role) else {
        return health_policy::Decision { allow: false, reason: health_core::Reason::UnknownRole };
    };
    let caller = Caller {
        tenant_id: claims.tenant_id.clone(),
        subject: ids.sub.clone(),
        role,
        client_id: ids.client_id.clone(),
        scopes: claims.scope.split_whitespace().map(str::to_owned).collect(),
        jti: ids.jti.clone(),
        enc_jwk: None,
    };
    let account = health_policy::AccountFacts {
        tenant_id: claims.tenant_id.to_string(),
        subject: claims.sub.clone(),
        has_password,
    };
    health_policy::authorize(
        &caller,
        health_policy::Action::ChangeOwnPassword,
        &health_policy::Resource::Account(account),
    )
}

const USAGE: &str = "body must be {\"currentPassword\", \"newPassword\"}";

pub async fn change_password(ctx: &Ctx<'_>, event: &mut Event) -> Outcome {
    event.action = "auth.change_password".into();
    let (claims, ids) = sessions::bearer_claims(ctx, event).await?;
    let request: ChangePassword = match ctx.json(USAGE) {
        Ok(request) => request,
        Err(error) => {
            event.reason = Reason::MalformedRequest.into();
            return Err(error.into());
        }
    };
    if request.current_password.is_empty() || request.current_password.len() > password::MAX_LEN {
        event.reason = Reason::MalformedRequest.into();
        return Err(Error::BadRequest(Reason::MalformedRequest, "currentPassword must be 1-1024 bytes".into()).into());
    }
    if password::check_policy(&request.new_password).is_err() {
        event.reason = Reason::WeakPassword.into();
        return Err(Error::BadRequest(Reason::WeakPassword, "newPassword must be 12 to 1024 bytes".into()).into());
    }
    if request.new_password == request.current_password {
        event.reason = Reason::PasswordUnchanged.into();
        return Err(Error::BadRequest(
            Reason::PasswordUnchanged,
            "newPassword must differ from currentPassword".into(),
        )
        .into());
    }
    let db = ctx.db()?;
    let (tenant, sub) = (&claims.tenant_id, &ids.sub);
    // The policy decides whose password this caller may change (its own, if it is a user: an
    // insurer client's token has no user, and so no password), with the facts of `identity`.
    let user = identity::user_by_id(&db, tenant, sub)?;
    let decision = decide(&claims, &ids, user.is_some());
    let (true, Some(user)) = (decision.allow, user) else {
        event.reason = decision.reason.into();
        return Err(Error::ForbiddenWith(decision.reason, "only a user changes their own password".into()).into());
    };
    event.resource = format!("tenant/{tenant}/users/{}", user.username);
    let source = source_of(ctx.client_addr());
    let policy = ctx.settings.lockout;
    let username = &user.username;
    let counted = match identity::reserve_attempt(&db, tenant, username, &source, policy, ctx.now)? {
        Reservation::Locked { retry_after } => {
            let refusal = Refusal::Locked { retry_after };
            event.reason = refusal.reason().into();
            return Err(Error::Locked { retry_after }.into());
        }
        Reservation::Counted(failure) => failure,
    };
    let matches = decide::password_matches(Some(&user.password_hash), &request.current_password);
    match decide::credentials(Some(Account { user: (), disabled: user.disabled }), matches) {
        Ok(()) => {}
        Err(refusal @ Refusal::BadPassword) => {
            login::refuse_credentials(ctx, event, &db, counted, refusal)?;
            return Err(Error::WrongCurrentPassword.into());
        }
        // `UserDisabled`, the one other refusal of an existing account: answered, and its
        // attempt left counted, without the sweep and lockout audit of a wrong password.
        Err(refusal) => {
            event.reason = refusal.reason().into();
            return Err(Error::ForbiddenWith(refusal.reason(), "the account is disabled".into()).into());
        }
    }
    identity::clear_attempts(&db, tenant, username, Some(&source))?;
    let hash = password::hash(&request.new_password, &mut health_spin::rng())
        .map_err(|_| anyhow::anyhow!("password hashing failed"))?;
    if !identity::replace_password(&db, tenant, sub, &user.password_hash, &hash)? {
        event.reason = Reason::PasswordChangedConcurrently.into();
        return Err(Error::ConflictWith(
            Reason::PasswordChangedConcurrently,
            "the password was changed meanwhile; sign in again".into(),
        )
        .into());
    }
    let (ended, requires_reauth) = match identity::family_of_access(&db, &ids.jti)? {
        Some(current) => {
            let mut ended = 0;
            for family in identity::user_families(&db, tenant, sub)? {
                if family != current {
                    issue::revoke_family(&db, tenant, &family, Reason::PasswordChanged, ctx.now)?;
                    ended += 1;
                }
            }
            let store = health_spin::revocations::open()?;
            for (jti, exp) in identity::family_access_tokens(&db, &current, ctx.now)? {
                if jti != ids.jti {
                    issue::revoke_jti(&store, tenant, &jti, exp)?;
                }
            }
            (ended, false)
        }
        None => {
            let families = identity::user_families(&db, tenant, sub)?.len();
            issue::revoke_subject(&db, tenant, sub, Reason::PasswordChanged, ctx.now)?;
            (families, true)
        }
    };
    event.reason = if requires_reauth {
        Reason::PasswordChangedAllSessionsEnded
    } else {
        Reason::PasswordChangedOtherSessionsEnded
    }
    .into();
    let body = serde_json::json!({
        "success": true,
        "requiresReauth": requires_reauth,
        "passwordChangedAt": health_core::rfc3339(ctx.now),
        "otherSessionsEnded": ended,
    });
    Ok(health_spin::respond::json(200, &body, health_spin::respond::Cache::NoStore))
}
