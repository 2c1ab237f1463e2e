//! Why the gateway or a role service refuses a request, and the one mapping from a refusal to
//! the RFC 9457 problem the client gets and the reason the audit log keeps. The client's
//! problem is generic (a field name at most, never a value); the audit reason is precise.

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
        }
    }

    /// The reason the audit log keeps.
    pub fn reason(&self) -> String {
        match self {
            Refusal::NoCredentials(reason)
            | Refusal::Unauthenticated(reason)
            | Refusal::NotFound(reason)
            | Refusal::BadRequest(reason, _)
            | Refusal::Conflict(reason) => (*reason).into(),
            Refusal::TooLarge => Reason::BodyTooLarge.into(),
            Refusal::UnsupportedMediaType => Reason::UnsupportedMediaType.into(),
            Refusal::Forbidden(reason) => reason.clone(),
            Refusal::RateLimited => Reason::RateLimited.into(),
            Refusal::Unreadable => Reason::PhiDecryptFailed.into(),
        }
    }
}

/// What a 400 of a role service tells the client about `reason`.
pub fn bad_request_detail(reason: Reason) -> &'static str {
    match reason {
        Reason::InsurerNotRegistered => "insurer is not an insurer client registered and enabled in this tenant",
        Reason::MemberNotAClinician => "the member is not an enabled doctor of this tenant",
        Reason::MembershipTimesOutOfRange => "ends_at must lie ahead, and no time more than two years ahead",
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
        ];
        for (refusal, status, reason) in cases {
            assert_eq!((refusal.problem().status, refusal.reason().as_str()), (status, reason), "{refusal:?}");
        }
    }

    #[test]
    fn a_bad_request_names_no_value() {
        let problem = Refusal::bad_request(Reason::InsurerNotRegistered).problem();
        assert_eq!(problem.detail.as_deref(), Some(bad_request_detail(Reason::InsurerNotRegistered)));
    }
}
