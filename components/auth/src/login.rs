//! `POST /auth/login` and TOTP enrolment (`/auth/mfa/enroll`, `/auth/mfa/confirm`).
//!
//! Every path checks the password the same way: the attempt is counted against (user, source)
//! before argon2id runs, an unknown user costs a dummy hash, and every credential failure is
//! the same 401. What each step decides, and its precise audit reason (`unknown_user`,
//! `bad_password`, `mfa_failed`, ...), is `health_identity::login`'s; this module parses the
//! request, looks up and counts in `identity`, and answers. No reason ever contains a secret.

use health_core::audit::Event;
use health_core::{Opaque, Reason, Role, SecretKey, TenantId, Username};
use health_identity::lockout::{self, source_of};
use health_identity::login::{self as decide, Account, Attempt, Enrolment, Refusal, SecondFactor};
use health_identity::totp;
use health_spin::identity::{self, Mfa, Reservation, User};
use serde::Deserialize;
use spin_sdk::http::Response;
use spin_sdk::sqlite::Connection;

use crate::issue::{self, Refresh, Subject};
use crate::{Ctx, Error, Failure};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Credentials {
    tenant: TenantId,
    username: Username,
    password: String,
    #[serde(default)]
    otp: Option<String>,
}

const USAGE: &str = "body must be {\"tenant\", \"username\", \"password\", \"otp\"?}";

type Outcome = Result<Response, Failure>;

/// The answer to each refusal: every wrong credential or code is the same 401.
fn error(refusal: Refusal) -> Error {
    match refusal {
        Refusal::UnknownTenant
        | Refusal::UnknownUser
        | Refusal::BadPassword
        | Refusal::UserDisabled
        | Refusal::MfaFailed
        | Refusal::MfaCodeReused => Error::InvalidCredentials(refusal.reason()),
        Refusal::Locked { retry_after } => Error::Locked { retry_after },
        Refusal::MfaRequired => Error::MfaRequired,
        Refusal::MfaEnrollmentRequired => Error::MfaEnrollmentRequired,
        Refusal::MfaAlreadyEnrolled => {
            Error::ConflictWith(refusal.reason(), "MFA is already enrolled; a tenant admin can reset it".into())
        }
        Refusal::MfaNotEnrolling => {
            Error::ConflictWith(refusal.reason(), "no enrollment in progress: POST /auth/mfa/enroll first".into())
        }
        Refusal::CodeMissing => {
            Error::BadRequest(refusal.reason(), "send the code from the authenticator app as \"otp\"".into())
        }
    }
}

/// A password that matched. The attempt stays counted as a failure until the whole step
/// (one-time code included) succeeds, so a stolen password does not buy unlimited code guesses.
struct Checked {
    db: Connection,
    user: User,
    source: String,
    creds: Credentials,
    /// What counting this attempt in advance did (it may have started a lock).
    counted: lockout::Failure,
}

impl Checked {
    /// The whole step succeeded: forget this source's failures.
    fn succeed(&self) -> anyhow::Result<()> {
        identity::clear_attempts(&self.db, &self.creds.tenant, &self.creds.username, Some(&self.source))
    }

    /// Ends the step with `refusal`, settling the attempt counted in advance as the refusal
    /// says: a wrong code stays a failed login; a step that ends without checking a code
    /// (enrolment required, already enrolled, nothing to confirm) is not one, so its advance
    /// count is taken back, and clearing the earlier failures is left to a whole success.
    fn refuse(&self, ctx: &Ctx<'_>, event: &mut Event, refusal: Refusal) -> anyhow::Result<Error> {
        match refusal.attempt() {
            Attempt::Kept => refuse_credentials(ctx, event, &self.db, self.counted, refusal)?,
            Attempt::Refunded => {
                let (tenant, username) = (&self.creds.tenant, &self.creds.username);
                identity::refund_attempt(&self.db, tenant, username, &self.source, ctx.settings.lockout, self.counted)?;
                event.reason = refusal.reason().into();
            }
            Attempt::NotCounted => event.reason = refusal.reason().into(),
        }
        Ok(error(refusal))
    }

    /// The user's enrolment, if any.
    fn enrolment(&self) -> anyhow::Result<Enrolment<Mfa>> {
        Ok(match identity::mfa(&self.db, &self.creds.tenant, &self.user.user_id)? {
            None => Enrolment::None,
            Some(mfa) if mfa.confirmed => Enrolment::Confirmed(mfa),
            Some(mfa) => Enrolment::Pending(mfa),
        })
    }
}

/// Parses the credentials, counts the attempt, and checks the password.
fn check_password(ctx: &Ctx<'_>, event: &mut Event, action: &str) -> Result<Checked, Failure> {
    event.action = action.into();
    let creds: Credentials = match ctx.json(USAGE) {
        Ok(creds) => creds,
        Err(error) => {
            event.reason = Reason::MalformedRequest.into();
            return Err(error.into());
        }
    };
    if creds.password.is_empty() || creds.password.len() > health_identity::password::MAX_LEN {
        event.reason = Reason::MalformedRequest.into();
        return Err(Error::BadRequest(Reason::MalformedRequest, "password must be 1-1024 bytes".into()).into());
    }
    event.resource = format!("tenant/{}/users/{}", creds.tenant, creds.username);
    if !ctx.settings.tenant_exists(&creds.tenant)? {
        // No account can exist, so there is nothing to protect and no counter is kept: guesses
        // against made-up tenants would otherwise fill `login_attempts`. The dummy hash keeps
        // the answer as slow as any other refusal (tenants are public: `/jwk/{tenant}`).
        decide::password_matches(None, &creds.password);
        event.reason = Refusal::UnknownTenant.reason().into();
        return Err(error(Refusal::UnknownTenant).into());
    }
    crate::for_tenant(event, &creds.tenant);
    let db = ctx.db()?;
    let source = source_of(ctx.client_addr());
    let policy = ctx.settings.lockout;
    let reservation = identity::reserve_attempt(&db, &creds.tenant, &creds.username, &source, policy, ctx.now)?;
    let counted = match reservation {
        Reservation::Locked { retry_after } => {
            let refusal = Refusal::Locked { retry_after };
            event.reason = refusal.reason().into();
            return Err(error(refusal).into());
        }
        Reservation::Counted(failure) => failure,
    };
    let user = identity::find_user(&db, &creds.tenant, &creds.username)?;
    let matches = decide::password_matches(user.as_ref().map(|u| u.password_hash.as_str()), &creds.password);
    let account = user.map(|user| Account { disabled: user.disabled, user });
    match decide::credentials(account, matches) {
        Ok(user) => {
            event.actor_sub = Some(user.user_id.to_string());
            event.actor_role = Some(user.role.as_str().into());
            // Asked only once the password matched, so a guesser learns nothing; the attempt
            // stays counted: this tenant's users sign in at its provider.
            if crate::federation::password_refused(&db, &creds.tenant, &creds.username)? {
                event.reason = Reason::FederationRequired.into();
                let detail = "this tenant signs in through its identity provider (token exchange at /auth/token)";
                return Err(Error::ForbiddenWith(Reason::FederationRequired, detail.into()).into());
            }
            Ok(Checked { db, user, source, creds, counted })
        }
        Err(refusal) => {
            refuse_credentials(ctx, event, &db, counted, refusal)?;
            Err(error(refusal).into())
        }
    }
}

/// Records a failed login (a refusal that keeps its attempt counted); when it was the one that
/// locked the pair, audits the lockout as its own event. Also the self-service password
/// change's, whose wrong current password is a failed login.
pub(crate) fn refuse_credentials(
    ctx: &Ctx<'_>,
    event: &mut Event,
    db: &Connection,
    counted: lockout::Failure,
    refusal: Refusal,
) -> anyhow::Result<()> {
    event.reason = refusal.reason().into();
    identity::sweep_attempts(db, ctx.settings.lockout, ctx.now)?;
    if counted == lockout::Failure::Locked {
        let mut lockout = event.clone();
        lockout.action = "auth.lockout".into();
        // Text, not a `Reason`: it names the lock's length, which the tenant's policy sets.
        lockout.reason = format!("locked_for_{}s", ctx.settings.lockout.lock_secs);
        lockout.outcome = Some(health_core::audit::Outcome::Deny);
        lockout.status = 429;
        health_spin::audit::append(&lockout)?;
    }
    Ok(())
}

/// The key that seals TOTP secrets: derived from `master_key` for this purpose only.
fn totp_key() -> anyhow::Result<SecretKey> {
    Ok(SecretKey::from_bytes(health_core::derive(&health_spin::secret_key("master_key")?, "health/totp-secrets/v1")))
}

fn aad(tenant: &TenantId, user_id: &Opaque) -> Vec<u8> {
    format!("{tenant}/{user_id}/totp").into_bytes()
}

/// Checks `code` against the user's enrolment and uses its step, so it can never be replayed.
fn check_code(ctx: &Ctx<'_>, checked: &Checked, enrolment: &Mfa, code: &str) -> anyhow::Result<Result<(), Refusal>> {
    let key = totp_key()?;
    let secret = key
        .open(&aad(&checked.creds.tenant, &checked.user.user_id), &enrolment.secret_sealed)
        .map_err(|_| anyhow::anyhow!("a TOTP secret does not unseal under master_key"))?;
    match totp::verify(&secret, code, ctx.now, enrolment.last_step) {
        Ok(step) if identity::use_step(&checked.db, &checked.creds.tenant, &checked.user.user_id, step)? => Ok(Ok(())),
        // Another login spent this step first.
        Ok(_) => Ok(Err(Refusal::MfaCodeReused)),
        Err(error) => Ok(Err(decide::code_refused(error))),
    }
}

pub async fn login(ctx: &Ctx<'_>, event: &mut Event) -> Outcome {
    let checked = check_password(ctx, event, "auth.login")?;
    let mut amr = vec!["pwd".to_owned()];
    let role_requires_mfa = ctx.settings.mfa_roles.contains(&checked.user.role);
    match decide::second_factor(checked.enrolment()?, role_requires_mfa, checked.creds.otp.as_deref()) {
        SecondFactor::None => {}
        SecondFactor::CheckCode { enrolment, code } => {
            if let Err(refusal) = check_code(ctx, &checked, &enrolment, code)? {
                return Err(checked.refuse(ctx, event, refusal)?.into());
            }
            amr.push("otp".into());
        }
        SecondFactor::Refused(refusal) => return Err(checked.refuse(ctx, event, refusal)?.into()),
    }
    checked.succeed()?;
    let subject = Subject {
        tenant: checked.creds.tenant.clone(),
        sub: checked.user.user_id.clone(),
        role: checked.user.role,
        client_id: crate::web_client(),
        amr,
        auth_time: ctx.now,
        enc_jwk: None,
    };
    // Insurers get a one-time nested JWE and never a refresh token (ARCHITECTURE.md §4).
    let refresh = if subject.role == Role::Insurance { Refresh::None } else { Refresh::NewFamily };
    let issued = issue::issue(ctx, &checked.db, &subject, refresh, event).await?;
    event.reason = Reason::TokenIssued.into();
    Ok(issued.response())
}

/// Starts (or restarts, while unconfirmed) a TOTP enrolment and returns the secret once.
pub fn enroll(ctx: &Ctx<'_>, event: &mut Event) -> Outcome {
    let checked = check_password(ctx, event, "auth.mfa.enroll")?;
    let (tenant, user) = (&checked.creds.tenant, &checked.user);
    let secret = totp::generate_secret(&mut health_spin::rng());
    let sealed = totp_key()?.seal(&aad(tenant, &user.user_id), &secret, &mut health_spin::rng());
    if !identity::start_enrolment(&checked.db, tenant, &user.user_id, &sealed, ctx.now)? {
        return Err(checked.refuse(ctx, event, Refusal::MfaAlreadyEnrolled)?.into());
    }
    checked.succeed()?;
    event.reason = Reason::MfaEnrollmentStarted.into();
    let issuer = format!("Health {tenant}");
    let body = serde_json::json!({
        "otpauth_uri": totp::otpauth_uri(&issuer, user.username.as_str(), &secret),
        "secret": totp::base32(&secret),
        "next": "POST /auth/mfa/confirm with the same credentials and \"otp\"",
    });
    Ok(health_spin::respond::json(200, &body, health_spin::respond::Cache::NoStore))
}

/// Confirms an enrolment with a first code; from then on every login needs one.
pub fn confirm(ctx: &Ctx<'_>, event: &mut Event) -> Outcome {
    let checked = check_password(ctx, event, "auth.mfa.confirm")?;
    let (enrolment, code) = match decide::confirmation(checked.enrolment()?, checked.creds.otp.as_deref()) {
        Ok(confirmable) => confirmable,
        Err(refusal) => return Err(checked.refuse(ctx, event, refusal)?.into()),
    };
    if let Err(refusal) = check_code(ctx, &checked, &enrolment, code)? {
        return Err(checked.refuse(ctx, event, refusal)?.into());
    }
    checked.succeed()?;
    event.reason = Reason::MfaEnrolled.into();
    Ok(health_spin::respond::json(200, &serde_json::json!({ "enrolled": true }), health_spin::respond::Cache::NoStore))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_wrong_credential_or_code_gets_the_one_same_answer() {
        // Telling these apart would say which usernames exist, which accounts are disabled, or
        // that a password was right: only the audit log knows which it was.
        let wrong = [
            Refusal::UnknownTenant,
            Refusal::UnknownUser,
            Refusal::BadPassword,
            Refusal::UserDisabled,
            Refusal::MfaFailed,
            Refusal::MfaCodeReused,
        ];
        for refusal in wrong {
            assert_eq!(error(refusal), Error::InvalidCredentials(refusal.reason()), "{refusal:?}");
            assert_eq!(error(refusal).problem(), health_core::Problem::invalid_credentials());
        }
        assert_eq!(Error::InvalidCredentials(health_core::Reason::BadPassword).problem().status, 401);
    }

    #[test]
    fn a_lock_answers_with_the_time_left() {
        assert_eq!(error(Refusal::Locked { retry_after: 42 }), Error::Locked { retry_after: 42 });
    }
}
