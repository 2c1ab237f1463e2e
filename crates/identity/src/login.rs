//! The decisions of a password login and of TOTP enrolment (`/auth/login`, `/auth/mfa/enroll`,
//! `/auth/mfa/confirm`; the password check of a self-service change too), each with the precise
//! reason the audit log records.
//!
//! The order is `auth`'s, and it is part of the defence: the attempt is counted against (user,
//! source) *before* any password is checked ([`crate::lockout`]), an unknown user costs the same
//! argon2id run as a wrong password ([`password_matches`]), the account's state is looked at
//! only once its password matched, and a second factor only after that. Every refusal says
//! what becomes of the failure counted in advance ([`Refusal::attempt`]): a wrong password or
//! code keeps it, so a stolen password buys no code guesses; a right password that ends without
//! a code check gets it back, so right passwords alone never lock anyone out.
//!
//! What it does not do: read or write anything. The caller looks the user, the enrolment and
//! the counter up, verifies the code ([`crate::totp`]) and spends its step, and answers.

use health_core::Reason;

use crate::password;
use crate::totp::TotpError;

/// Why a login step was refused; each is one audit reason ([`Refusal::reason`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No such tenant: no account can exist, so nothing is counted.
    UnknownTenant,
    /// Too many failures from this source for this user; refused before any check.
    Locked {
        retry_after: i64,
    },
    UnknownUser,
    BadPassword,
    /// The password matched a disabled account.
    UserDisabled,
    /// The account has a confirmed enrolment and no code was sent.
    MfaRequired,
    /// The role needs MFA and the account has not enrolled.
    MfaEnrollmentRequired,
    /// A wrong or malformed code.
    MfaFailed,
    /// A code whose step was already used (a replay, or a concurrent login with the same code).
    MfaCodeReused,
    MfaAlreadyEnrolled,
    /// A confirmation without an enrolment to confirm.
    MfaNotEnrolling,
    /// A confirmation without a code.
    CodeMissing,
}

/// What becomes of the failure counted in advance for the attempt a refusal ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// Nothing was counted (no tenant, or already locked).
    NotCounted,
    /// A failed login: it stays counted, and may have started a lock.
    Kept,
    /// The password matched and no code was checked: not a failed login, so taken back.
    Refunded,
}

impl Refusal {
    /// The reason in the audit log.
    pub const fn reason(self) -> Reason {
        match self {
            Refusal::UnknownTenant => Reason::UnknownTenant,
            Refusal::Locked { .. } => Reason::LockedOut,
            Refusal::UnknownUser => Reason::UnknownUser,
            Refusal::BadPassword => Reason::BadPassword,
            Refusal::UserDisabled => Reason::UserDisabled,
            Refusal::MfaRequired => Reason::MfaRequired,
            Refusal::MfaEnrollmentRequired => Reason::MfaEnrollmentRequired,
            Refusal::MfaFailed => Reason::MfaFailed,
            Refusal::MfaCodeReused => Reason::MfaCodeReused,
            Refusal::MfaAlreadyEnrolled => Reason::MfaAlreadyEnrolled,
            Refusal::MfaNotEnrolling => Reason::MfaNotEnrolling,
            Refusal::CodeMissing => Reason::MalformedRequest,
        }
    }

    /// What becomes of the attempt counted in advance.
    pub const fn attempt(self) -> Attempt {
        match self {
            Refusal::UnknownTenant | Refusal::Locked { .. } => Attempt::NotCounted,
            Refusal::UnknownUser
            | Refusal::BadPassword
            | Refusal::UserDisabled
            | Refusal::MfaFailed
            | Refusal::MfaCodeReused => Attempt::Kept,
            Refusal::MfaRequired
            | Refusal::MfaEnrollmentRequired
            | Refusal::MfaAlreadyEnrolled
            | Refusal::MfaNotEnrolling
            | Refusal::CodeMissing => Attempt::Refunded,
        }
    }
}

/// The stored account a username names, with what the password step needs to know of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Account<U> {
    pub user: U,
    pub disabled: bool,
}

/// Checks `password` against the stored hash or, when the username names no account (or the
/// tenant does not exist), against [`password::DUMMY_HASH`], so every refusal costs the same
/// argon2id run and the answer's timing does not tell who exists.
pub fn password_matches(stored_hash: Option<&str>, password: &str) -> bool {
    password::matches(stored_hash.unwrap_or(password::DUMMY_HASH), password)
}

/// The password step, once the attempt is counted: `account` is what the username names,
/// `password_matches` the verdict of [`password_matches`] on its hash. A disabled account is
/// reported only to whoever knows its password.
pub fn credentials<U>(account: Option<Account<U>>, password_matches: bool) -> Result<U, Refusal> {
    match account {
        None => Err(Refusal::UnknownUser),
        Some(_) if !password_matches => Err(Refusal::BadPassword),
        Some(Account { disabled: true, .. }) => Err(Refusal::UserDisabled),
        Some(Account { user, disabled: false }) => Ok(user),
    }
}

/// The account's TOTP enrolment, with what is stored of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enrolment<T> {
    None,
    /// Started, not yet confirmed with a first code: logins do not ask for one yet.
    Pending(T),
    Confirmed(T),
}

/// What a login needs once the password matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecondFactor<'c, T> {
    /// Nothing more: the login succeeds with `amr` `pwd`.
    None,
    /// Check `code` against `enrolment`; the login succeeds with `amr` `pwd otp` if it is right.
    CheckCode {
        enrolment: T,
        code: &'c str,
    },
    Refused(Refusal),
}

/// The second factor of a login: a confirmed enrolment always needs a code, whatever the
/// role; without one, a role that requires MFA must enrol first.
pub fn second_factor<T>(enrolment: Enrolment<T>, role_requires_mfa: bool, code: Option<&str>) -> SecondFactor<'_, T> {
    match (enrolment, code) {
        (Enrolment::Confirmed(enrolment), Some(code)) => SecondFactor::CheckCode { enrolment, code },
        (Enrolment::Confirmed(_), None) => SecondFactor::Refused(Refusal::MfaRequired),
        (Enrolment::None | Enrolment::Pending(_), _) if role_requires_mfa => {
            SecondFactor::Refused(Refusal::MfaEnrollmentRequired)
        }
        (Enrolment::None | Enrolment::Pending(_), _) => SecondFactor::None,
    }
}

/// Whether an enrolment can be confirmed: then the enrolment and the code to check.
pub fn confirmation<T>(enrolment: Enrolment<T>, code: Option<&str>) -> Result<(T, &str), Refusal> {
    match (enrolment, code) {
        (Enrolment::None, _) => Err(Refusal::MfaNotEnrolling),
        (Enrolment::Confirmed(_), _) => Err(Refusal::MfaAlreadyEnrolled),
        (Enrolment::Pending(_), None) => Err(Refusal::CodeMissing),
        (Enrolment::Pending(enrolment), Some(code)) => Ok((enrolment, code)),
    }
}

/// The refusal for a code [`crate::totp::verify`] refused. A code it accepted whose step the
/// store then refuses to spend (another login used it first) is [`Refusal::MfaCodeReused`].
pub const fn code_refused(error: TotpError) -> Refusal {
    match error {
        TotpError::Reused => Refusal::MfaCodeReused,
        TotpError::Malformed | TotpError::Mismatch => Refusal::MfaFailed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACTIVE: Option<Account<&str>> = Some(Account { user: "u-1", disabled: false });
    const DISABLED: Option<Account<&str>> = Some(Account { user: "u-1", disabled: true });
    const CODE: Option<&str> = Some("123456");

    #[test]
    fn an_unknown_user_is_refused_whatever_the_password() {
        assert_eq!(credentials::<&str>(None, false), Err(Refusal::UnknownUser));
        assert_eq!(credentials::<&str>(None, true), Err(Refusal::UnknownUser));
    }

    #[test]
    fn a_disabled_account_is_revealed_only_to_its_password() {
        assert_eq!(credentials(DISABLED, false), Err(Refusal::BadPassword));
        assert_eq!(credentials(DISABLED, true), Err(Refusal::UserDisabled));
        assert_eq!(credentials(ACTIVE, false), Err(Refusal::BadPassword));
        assert_eq!(credentials(ACTIVE, true), Ok("u-1"));
    }

    #[test]
    fn an_unknown_user_is_checked_against_the_dummy_hash() {
        // The dummy hash is a real argon2id hash (the same cost as a user's), and of nothing
        // anyone knows: no password matches it.
        assert!(password::DUMMY_HASH.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(!password_matches(None, "alice-demo-2026"));
    }

    #[test]
    fn a_confirmed_enrolment_needs_a_code_whatever_the_role() {
        for role_requires_mfa in [false, true] {
            assert_eq!(
                second_factor(Enrolment::Confirmed("e"), role_requires_mfa, CODE),
                SecondFactor::CheckCode { enrolment: "e", code: "123456" }
            );
            assert_eq!(
                second_factor(Enrolment::Confirmed("e"), role_requires_mfa, None),
                SecondFactor::Refused(Refusal::MfaRequired)
            );
        }
    }

    #[test]
    fn a_role_that_requires_mfa_must_enrol_before_it_logs_in() {
        for enrolment in [Enrolment::None, Enrolment::Pending("e")] {
            for code in [None, CODE] {
                assert_eq!(second_factor(enrolment, true, code), SecondFactor::Refused(Refusal::MfaEnrollmentRequired));
                // A pending enrolment, or a code sent without one, asks nothing more.
                assert_eq!(second_factor(enrolment, false, code), SecondFactor::None);
            }
        }
    }

    #[test]
    fn only_a_pending_enrolment_with_a_code_is_confirmed() {
        assert_eq!(confirmation(Enrolment::<&str>::None, CODE), Err(Refusal::MfaNotEnrolling));
        assert_eq!(confirmation(Enrolment::Confirmed("e"), CODE), Err(Refusal::MfaAlreadyEnrolled));
        assert_eq!(confirmation(Enrolment::Pending("e"), None), Err(Refusal::CodeMissing));
        assert_eq!(confirmation(Enrolment::Pending("e"), CODE), Ok(("e", "123456")));
    }

    #[test]
    fn a_replayed_code_is_told_apart_from_a_wrong_one() {
        assert_eq!(code_refused(TotpError::Reused), Refusal::MfaCodeReused);
        assert_eq!(code_refused(TotpError::Mismatch), Refusal::MfaFailed);
        assert_eq!(code_refused(TotpError::Malformed), Refusal::MfaFailed);
    }

    #[test]
    fn wrong_secrets_stay_counted_and_right_passwords_without_a_code_check_are_refunded() {
        let kept = [
            Refusal::UnknownUser,
            Refusal::BadPassword,
            Refusal::UserDisabled,
            Refusal::MfaFailed,
            Refusal::MfaCodeReused,
        ];
        let refunded = [
            Refusal::MfaRequired,
            Refusal::MfaEnrollmentRequired,
            Refusal::MfaAlreadyEnrolled,
            Refusal::MfaNotEnrolling,
            Refusal::CodeMissing,
        ];
        assert!(kept.iter().all(|r| r.attempt() == Attempt::Kept));
        assert!(refunded.iter().all(|r| r.attempt() == Attempt::Refunded));
        assert_eq!(Refusal::UnknownTenant.attempt(), Attempt::NotCounted);
        assert_eq!(Refusal::Locked { retry_after: 10 }.attempt(), Attempt::NotCounted);
    }

    #[test]
    fn each_refusal_has_its_audit_reason() {
        let reasons = [
            (Refusal::UnknownTenant, "unknown_tenant"),
            (Refusal::Locked { retry_after: 1 }, "locked_out"),
            (Refusal::UnknownUser, "unknown_user"),
            (Refusal::BadPassword, "bad_password"),
            (Refusal::UserDisabled, "user_disabled"),
            (Refusal::MfaRequired, "mfa_required"),
            (Refusal::MfaEnrollmentRequired, "mfa_enrollment_required"),
            (Refusal::MfaFailed, "mfa_failed"),
            (Refusal::MfaCodeReused, "mfa_code_reused"),
            (Refusal::MfaAlreadyEnrolled, "mfa_already_enrolled"),
            (Refusal::MfaNotEnrolling, "mfa_not_enrolling"),
            (Refusal::CodeMissing, "malformed_request"),
        ];
        for (refusal, reason) in reasons {
            assert_eq!(refusal.reason().as_str(), reason);
        }
    }
}
