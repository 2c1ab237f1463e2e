//! Why the gateway, a role service or `auth` refuses a request, and the one mapping from a
//! refusal to the RFC 9457 problem the client gets and the reason the audit log keeps. The
//! client's problem is generic (a field name at most, never a value); the audit reason is
//! precise. The response headers some refusals need (a challenge, `Retry-After`) are added in
//! one place too (`health_spin::respond::refusal`).

use crate::Problem;
use crate::reason::Reason;

/// A refused request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No bearer credentials at all (no `Authorization`, or another scheme): 401 with the
    /// challenge and no error code (RFC 6750 §3.1).
    NoCredentials(Reason),
    /// Credentials, or a caller context, that do not verify: 401.
    Unauthenticated(Reason),
    NotFound(Reason),
    /// 400, with what the client is told is wrong (a field name, never a value).
    BadRequest(Reason, String),
    TooLarge,
    UnsupportedMediaType,
    /// Forbidden (403). The reason is text: a policy decision's reason is recorded as the policy gave it,
    /// since the `policy` component can be replaced (see [`crate::reason`]).
    Forbidden(String),
    /// 409: the resource is not in a state that allows this.
    Conflict(Reason),
    /// A rate limit of the request's class was reached (`Retry-After` and `RateLimit` say which).
    RateLimited,
    /// Stored PHI that does not open (tampered, moved): the request fails, loudly.
    Unreadable,
    /// The route exists, not with this method: 405.
    MethodNotAllowed,
    /// 403 with what the client is told (e.g. "admins only"); the reason is precise.
    ForbiddenWith(Reason, String),
    /// 409 with what the client is told of the state that prevents the request.
    ConflictWith(Reason, String),
    /// A wrong username, password or one-time code: one 401 for all of them, so the answer
    /// never says which usernames exist (the reason does: `unknown_user`, `bad_password`, ...).
    InvalidCredentials(Reason),
    /// Too many failed logins from this source for this user: 429 with `Retry-After`.
    Locked {
        retry_after: i64,
    },
    /// The password was right; the account's one-time code is needed too: 401.
    MfaRequired,
    /// The password was right; the role needs MFA and the account has not enrolled: 403.
    MfaEnrollmentRequired,
    /// A signed-in user's current password was wrong (self-service change): a failed login,
    /// but not a token problem, so 403 rather than 401.
    WrongCurrentPassword,
    /// An OAuth endpoint's error (RFC 6749 §5.2): the problem carries the `error` member, and a
    /// 401 the `Basic` challenge. It has no reason of its own: `auth` records which check
    /// failed (`unknown_client`, `client_assertion_bad_exp`, ...) on its event, and alone it
    /// is [`Reason::Refused`].
    OAuth {
        status: u16,
        code: &'static str,
        detail: &'static str,
    },
}

impl Refusal {
    /// A 403 for one of the platform's own reasons.
    pub fn forbidden(reason: Reason) -> Self {
        Self::Forbidden(reason.into())
    }

    /// A 400 telling the client what [`bad_request_detail`] says of `reason`.
    pub fn bad_request(reason: Reason) -> Self {
        Self::BadRequest(reason, bad_request_detail(reason).into())
    }

    /// The problem the client gets.
    pub fn problem(&self) -> Problem {
        match self {
            Refusal::NoCredentials(_) | Refusal::Unauthenticated(_) => Problem::unauthorized(),
            Refusal::NotFound(_) => Problem::not_found(),
            Refusal::BadRequest(_, detail) => Problem::bad_request(detail.clone()),
            Refusal::TooLarge => Problem::payload_too_large(),
            Refusal::UnsupportedMediaType => Problem::unsupported_media_type(),
            Refusal::Forbidden(_) => Problem::forbidden(),
            Refusal::Conflict(_) => Problem::conflict("the resource is not in a state that allows this"),
            Refusal::RateLimited => Problem::too_many_requests(),
            Refusal::Unreadable => Problem::internal(),
            Refusal::MethodNotAllowed => Problem::method_not_allowed(),
            Refusal::ForbiddenWith(_, detail) => Problem::forbidden().with_detail(detail.clone()),
            Refusal::ConflictWith(_, detail) => Problem::conflict(detail.clone()),
            Refusal::InvalidCredentials(_) => Problem::invalid_credentials(),
            Refusal::Locked { .. } => Problem::new("login-locked", "Too Many Failed Logins", 429)
                .with_detail("too many failed attempts from this address; try again later"),
            Refusal::MfaRequired => Problem::new("mfa-required", "One-Time Code Required", 401)
                .with_detail("send the current code from your authenticator app as \"otp\""),
            Refusal::MfaEnrollmentRequired => Problem::new("mfa-enrollment-required", "MFA Enrollment Required", 403)
                .with_detail("this role requires MFA: enroll with POST /auth/mfa/enroll, then confirm"),
            Refusal::WrongCurrentPassword => {
                Problem::new("invalid-current-password", "Current Password Incorrect", 403)
                    .with_detail("currentPassword is not the account's password")
            }
            Refusal::OAuth { status, code, detail } => {
                let title = if *status == 401 { "Client Authentication Failed" } else { "Token Request Refused" };
                Problem::new(&code.replace('_', "-"), title, *status).with_detail(*detail).with_oauth_error(code)
            }
        }
    }

    /// The reason the audit log keeps.
    pub fn reason(&self) -> String {
        match self {
            Refusal::NoCredentials(reason)
            | Refusal::Unauthenticated(reason)
            | Refusal::NotFound(reason)
            | Refusal::BadRequest(reason, _)
            | Refusal::Conflict(reason)
            | Refusal::ForbiddenWith(reason, _)
            | Refusal::ConflictWith(reason, _)
            | Refusal::InvalidCredentials(reason) => (*reason).into(),
            Refusal::TooLarge => Reason::BodyTooLarge.into(),
            Refusal::UnsupportedMediaType => Reason::UnsupportedMediaType.into(),
            Refusal::Forbidden(reason) => reason.clone(),
            Refusal::RateLimited => Reason::RateLimited.into(),
            Refusal::Unreadable => Reason::PhiDecryptFailed.into(),
            Refusal::Locked { .. } => Reason::LockedOut.into(),
            Refusal::MfaRequired => Reason::MfaRequired.into(),
            Refusal::MfaEnrollmentRequired => Reason::MfaEnrollmentRequired.into(),
            Refusal::WrongCurrentPassword => Reason::BadPassword.into(),
            Refusal::MethodNotAllowed | Refusal::OAuth { .. } => Reason::Refused.into(),
        }
    }
}

/// What a 400 of a role service tells the client about `reason`.
pub fn bad_request_detail(reason: Reason) -> &'static str {
    match reason {
        Reason::InsurerNotRegistered => "insurer is not an insurer client registered and enabled in this tenant",
        Reason::MemberNotAClinician => "the member is not an enabled doctor of this tenant",
        Reason::MembershipTimesOutOfRange => "ends_at must lie ahead, and no time more than two years ahead",
        Reason::NotAPatientAccount => "user_id is not an enabled patient account of this tenant",
        _ => "the request is not valid",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_refusal_has_one_status_and_one_reason() {
        let cases = [
            (Refusal::NoCredentials(Reason::NotABearerToken), 401, "not_a_bearer_token"),
            (Refusal::Unauthenticated(Reason::Expired), 401, "expired"),
            (Refusal::NotFound(Reason::NoSuchRoute), 404, "no_such_route"),
            (Refusal::bad_request(Reason::BadText), 400, "bad_text"),
            (Refusal::TooLarge, 413, "body_too_large"),
            (Refusal::UnsupportedMediaType, 415, "unsupported_media_type"),
            (Refusal::Forbidden("a_policy_of_its_own".into()), 403, "a_policy_of_its_own"),
            (Refusal::forbidden(Reason::NoRecipientKey), 403, "no_recipient_key"),
            (Refusal::Conflict(Reason::OrderNotOpen), 409, "order_not_open"),
            (Refusal::RateLimited, 429, "rate_limited"),
            (Refusal::Unreadable, 500, "phi_decrypt_failed"),
            (Refusal::MethodNotAllowed, 405, "refused"),
            (Refusal::ForbiddenWith(Reason::NotAnAdmin, "admins only".into()), 403, "not_an_admin"),
            (Refusal::ConflictWith(Reason::UsernameTaken, "taken".into()), 409, "username_taken"),
            (Refusal::InvalidCredentials(Reason::BadPassword), 401, "bad_password"),
            (Refusal::Locked { retry_after: 42 }, 429, "locked_out"),
            (Refusal::MfaRequired, 401, "mfa_required"),
            (Refusal::MfaEnrollmentRequired, 403, "mfa_enrollment_required"),
            (Refusal::WrongCurrentPassword, 403, "bad_password"),
            (Refusal::OAuth { status: 401, code: "invalid_client", detail: "no" }, 401, "refused"),
            (Refusal::OAuth { status: 400, code: "invalid_grant", detail: "no" }, 400, "refused"),
        ];
        for (refusal, status, reason) in cases {
            assert_eq!((refusal.problem().status, refusal.reason().as_str()), (status, reason), "{refusal:?}");
        }
    }

    #[test]
    fn the_client_is_told_the_detail_and_an_oauth_client_its_error_code() {
        let forbidden =
            Refusal::ForbiddenWith(Reason::OtherTenant, "tenant admins manage their own tenant only".into());
        assert_eq!(forbidden.problem().detail.as_deref(), Some("tenant admins manage their own tenant only"));
        let conflict = Refusal::ConflictWith(Reason::MfaAlreadyEnrolled, "MFA is already enrolled".into());
        assert_eq!(conflict.problem().detail.as_deref(), Some("MFA is already enrolled"));
        let oauth = Refusal::OAuth { status: 400, code: "invalid_grant", detail: "the refresh token is invalid" };
        let problem = oauth.problem();
        assert_eq!(problem.error.as_deref(), Some("invalid_grant"));
        assert_eq!(problem.kind, "https://health-platform.dev/problems/invalid-grant");
        assert_eq!(problem.title, "Token Request Refused");
        // Every wrong credential is the one same answer, whatever its reason.
        assert_eq!(
            Refusal::InvalidCredentials(Reason::UnknownUser).problem(),
            Refusal::InvalidCredentials(Reason::MfaFailed).problem()
        );
    }

    #[test]
    fn a_bad_request_names_no_value() {
        let problem = Refusal::bad_request(Reason::InsurerNotRegistered).problem();
        assert_eq!(problem.detail.as_deref(), Some(bad_request_detail(Reason::InsurerNotRegistered)));
    }
}
