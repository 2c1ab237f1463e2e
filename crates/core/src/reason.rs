//! The platform's audit reasons: one vocabulary, typed, for the audit log, the metrics and the
//! tests. Each reason is written to the audit log (and sent between components) as its stable
//! snake_case text; [`Reason::parse`] reads it back.
//!
//! Not every reason in an audit event is one of these: the `policy` component can be swapped
//! for another implementation of `health:platform/authorizer`, and its decisions' reasons are
//! recorded as it gives them.

use std::fmt;

macro_rules! reasons {
    ($($(#[$doc:meta])* $variant:ident = $text:literal,)*) => {
        /// Why a request was answered as it was.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Reason {
            $($(#[$doc])* $variant,)*
        }

        impl Reason {
            /// Every reason, in declaration order.
            pub const ALL: &[Reason] = &[$(Reason::$variant,)*];

            /// The reason's text in the audit log.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Reason::$variant => $text,)*
                }
            }

            /// The reason whose audit text is `text`.
            pub fn parse(text: &str) -> Option<Self> {
                match text {
                    $($text => Some(Reason::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

reasons! {
    // The gateway's own refusals and outcomes.
    NoSuchRoute = "no_such_route",
    MissingOrRepeatedAuthorization = "missing_or_repeated_authorization",
    BodyTooLarge = "body_too_large",
    UnsupportedMediaType = "unsupported_media_type",
    UnexpectedBody = "unexpected_body",
    BadBreakGlassReason = "bad_break_glass_reason",
    NoServiceForRole = "no_service_for_role",
    UnknownRole = "unknown_role",
    InsurerTokenNotEncrypted = "insurer_token_not_encrypted",
    OneTimeTokenReplayed = "one_time_token_replayed",
    RateLimited = "rate_limited",
    /// A store did not answer: 503.
    StoreUnavailable = "store_unavailable",
    InternalError = "internal_error",
    /// A role service answered without saying why.
    UpstreamNoReason = "upstream_no_reason",
    MetricsDisabled = "metrics_disabled",
    BadMetricsToken = "bad_metrics_token",
    MetricsScraped = "metrics_scraped",

    // Bearer credentials and token verification (`health_jose::jws::Error::reason` and the
    // revocation checks).
    NotABearerToken = "not_a_bearer_token",
    BadOperatorToken = "bad_operator_token",
    TokenTooLarge = "token_too_large",
    MalformedToken = "malformed_token",
    BadHeader = "bad_header",
    CritHeader = "crit_header",
    EmbeddedKey = "embedded_key",
    MissingKid = "missing_kid",
    UnknownKid = "unknown_kid",
    AlgMismatch = "alg_mismatch",
    BadSignature = "bad_signature",
    BadClaims = "bad_claims",
    MissingClaim = "missing_claim",
    Expired = "expired",
    NotYetValid = "not_yet_valid",
    IssuedInFuture = "issued_in_future",
    LifetimeTooLong = "lifetime_too_long",
    WrongTyp = "wrong_typ",
    WrongIssuer = "wrong_issuer",
    WrongAudience = "wrong_audience",
    TenantMismatch = "tenant_mismatch",
    KeyRetired = "key_retired",
    KeyRevoked = "key_revoked",
    SigningFailed = "signing_failed",
    RevokedJti = "revoked_jti",
    SubjectLoggedOut = "subject_logged_out",
    UnknownTenant = "unknown_tenant",
    // Nested (JWE-wrapped) tokens, the insurer's.
    MalformedJwe = "malformed_jwe",
    JweAlgNotAllowed = "jwe_alg_not_allowed",
    JweNotNested = "jwe_not_nested",
    JweWithoutIssuer = "jwe_without_issuer",
    JweUnknownIssuer = "jwe_unknown_issuer",
    JweDecryptionFailed = "jwe_decryption_failed",
    JweInnerNotJws = "jwe_inner_not_jws",
    JweIssuerMismatch = "jwe_issuer_mismatch",
    NestedTokenRole = "nested_token_role",

    // The caller context a role service receives from the gateway.
    ContextMissing = "context_missing",
    ContextMalformed = "context_malformed",
    ContextBadMac = "context_bad_mac",
    ContextStale = "context_stale",
    ContextSenderRefused = "context_sender_refused",

    // Query parameters (`routes::Api::BadQuery`).
    UnknownQueryParameter = "unknown_query_parameter",
    RepeatedQueryParameter = "repeated_query_parameter",
    BadFrom = "bad_from",
    BadTo = "bad_to",
    BadAfter = "bad_after",
    BadLimit = "bad_limit",
    BadActor = "bad_actor",
    BadPatient = "bad_patient",
    BadJti = "bad_jti",
    BadOutcome = "bad_outcome",
    BadStatus = "bad_status",
    BadFormat = "bad_format",
    BadInsurer = "bad_insurer",
    InsurerRequired = "insurer_required",

    // Request bodies.
    MalformedBody = "malformed_body",
    BadText = "bad_text",
    BadValue = "bad_value",

    // Identity (auth): logins, MFA, sessions, tokens, accounts.
    /// A request auth allowed without a more precise reason.
    Ok = "ok",
    /// A request auth refused without a more precise reason.
    Refused = "refused",
    MalformedRequest = "malformed_request",
    UnknownUser = "unknown_user",
    BadPassword = "bad_password",
    UserDisabled = "user_disabled",
    LockedOut = "locked_out",
    MfaRequired = "mfa_required",
    MfaEnrollmentRequired = "mfa_enrollment_required",
    MfaFailed = "mfa_failed",
    MfaCodeReused = "mfa_code_reused",
    MfaAlreadyEnrolled = "mfa_already_enrolled",
    MfaNotEnrolling = "mfa_not_enrolling",
    MfaEnrollmentStarted = "mfa_enrollment_started",
    MfaEnrolled = "mfa_enrolled",
    TokenIssued = "token_issued",
    UnsupportedGrantType = "unsupported_grant_type",
    InvalidScope = "invalid_scope",
    RefreshWithClientCredentials = "refresh_with_client_credentials",
    MalformedRefreshToken = "malformed_refresh_token",
    UnknownRefreshToken = "unknown_refresh_token",
    RefreshClientMismatch = "refresh_client_mismatch",
    RefreshExpired = "refresh_expired",
    /// A portal refresh token unused for the portal's idle timeout (its family revoked).
    RefreshIdle = "refresh_idle",
    /// A portal session request without the portal's header or from another origin (CSRF).
    PortalCrossSiteRefused = "portal_cross_site_refused",
    RefreshFamilyRevoked = "refresh_family_revoked",
    /// A spent refresh token presented again (also the revoked family's reason).
    RefreshReuse = "refresh_reuse",
    RefreshReuseFamilyRevoked = "refresh_reuse_family_revoked",
    RefreshFamilyRevokedDuringRotation = "refresh_family_revoked_during_rotation",
    RefreshRotated = "refresh_rotated",
    PublicClientCannotUseClientCredentials = "public_client_cannot_use_client_credentials",
    PublicClientCannotIntrospect = "public_client_cannot_introspect",
    UnknownPublicClient = "unknown_public_client",
    UnknownClient = "unknown_client",
    ClientHasNoSecret = "client_has_no_secret",
    BadClientSecret = "bad_client_secret",
    ClientHasNoSigningKey = "client_has_no_signing_key",
    ClientAssertionReplayed = "client_assertion_replayed",
    ClientDisabled = "client_disabled",
    ClientEnabled = "client_enabled",
    ClientRegistered = "client_registered",
    UnusableEncJwk = "unusable_enc_jwk",
    UnusableSigJwk = "unusable_sig_jwk",
    /// A refresh family ended by its session's logout.
    Logout = "logout",
    /// Refresh families ended by logout-all.
    LogoutAll = "logout_all",
    SessionEnded = "session_ended",
    AllSessionsEnded = "all_sessions_ended",
    Active = "active",
    Inactive = "inactive",
    TokenOfAnotherClient = "token_of_another_client",
    AccessTokenRevoked = "access_token_revoked",
    /// A refresh family its client revoked (RFC 7009).
    Revoked = "revoked",
    NothingToRevoke = "nothing_to_revoke",
    PasswordUnchanged = "password_unchanged",
    PasswordChangedConcurrently = "password_changed_concurrently",
    /// The other sessions' refresh families, ended by a password change.
    PasswordChanged = "password_changed",
    PasswordChangedAllSessionsEnded = "password_changed_all_sessions_ended",
    PasswordChangedOtherSessionsEnded = "password_changed_other_sessions_ended",
    WeakPassword = "weak_password",
    UserCreated = "user_created",
    UsernameTaken = "username_taken",
    /// The sessions ended by an admin's password reset.
    PasswordReset = "password_reset",
    PasswordResetSessionsEnded = "password_reset_sessions_ended",
    UserDisable = "user_disable",
    UserEnable = "user_enable",
    UserResetMfa = "user_reset_mfa",
    /// The sessions ended by an admin's MFA reset.
    MfaReset = "mfa_reset",
    OperatorMustNameTenant = "operator_must_name_tenant",
    OtherTenant = "other_tenant",
    NotAnAdmin = "not_an_admin",
    /// An internal request whose caller context does not verify.
    ContextRefused = "context_refused",
    NoSuchAccount = "no_such_account",
    NotAPatientAccount = "not_a_patient_account",

    // The role services' refusals.
    NoSuchPatient = "no_such_patient",
    /// A patient account no record is linked to (yet).
    NoLinkedRecord = "no_linked_record",
    /// Registering an id that is another (or an erased) patient's.
    PatientIdTaken = "patient_id_taken",
    /// Linking an account to a record that has another.
    RecordHasAnAccount = "record_has_an_account",
    /// Linking an account that owns another record.
    AccountHasARecord = "account_has_a_record",
    PatientErased = "patient_erased",
    AlreadyErased = "already_erased",
    NoSuchEntry = "no_such_entry",
    NoSuchOrder = "no_such_order",
    OrderNotOpen = "order_not_open",
    NoSuchConsent = "no_such_consent",
    /// An alert id the tenant does not have.
    NoSuchAlert = "no_such_alert",
    ConsentExpiryOutOfRange = "consent_expiry_out_of_range",
    InsurerNotRegistered = "insurer_not_registered",
    NoRecipientKey = "no_recipient_key",
    MemberNotAClinician = "member_not_a_clinician",
    MembershipTimesOutOfRange = "membership_times_out_of_range",
    AlreadyOnCareTeam = "already_on_care_team",
    NoLiveMembership = "no_live_membership",
    /// A lab organisation the tenant has not registered.
    NoSuchLab = "no_such_lab",
    /// Registering a lab id again under another name.
    LabIdTaken = "lab_id_taken",
    /// Attaching a user who is not an enabled lab user of the tenant to a lab organisation.
    NotALabAccount = "not_a_lab_account",
    /// Detaching a user who is not a member of the lab organisation.
    NotALabMember = "not_a_lab_member",
    /// Stored PHI that does not open (tampered, moved).
    PhiDecryptFailed = "phi_decrypt_failed",
    /// A component the service called did not answer in time.
    Unavailable = "unavailable",

    // The policy's decisions (`health-policy`).
    Route = "route",
    RouteNotPermitted = "route_not_permitted",
    RoleNotPermitted = "role_not_permitted",
    InvalidTenant = "invalid_tenant",
    /// A caller whose subject, client id or `jti` does not validate as the platform mints them.
    InvalidCaller = "invalid_caller",
    PatientSelf = "patient_self",
    NotOwnRecord = "not_own_record",
    CareTeam = "care_team",
    NotOnCareTeam = "not_on_care_team",
    /// A record entry of a kind the caller's role may not read or write (a nurse's diagnosis, a
    /// pharmacist's note).
    EntryKindNotPermitted = "entry_kind_not_permitted",
    /// The receptionist's front-desk work: registration, demographics, admitting to a care team.
    FrontDesk = "front_desk",
    BreakGlass = "break_glass",
    BreakGlassRequest = "break_glass_request",
    Consent = "consent",
    NoConsent = "no_consent",
    MissingScope = "missing_scope",
    /// The order belongs to a lab organisation the caller is a member of.
    AssignedLab = "assigned_lab",
    /// The order belongs to a lab organisation the caller is not a member of.
    OrderNotAssigned = "order_not_assigned",
    OwnAccount = "own_account",
    NotOwnAccount = "not_own_account",
    NotAUserAccount = "not_a_user_account",
    OwnCareTeam = "own_care_team",
    AdminAudit = "admin_audit",
    AdminErasure = "admin_erasure",
    AdminDataKeyRotation = "admin_data_key_rotation",
    AdminAccessLog = "admin_access_log",
    AdminCareTeam = "admin_care_team",
    AdminRegistration = "admin_registration",
    AdminPatientAccount = "admin_patient_account",
    /// The tenant admin registering lab organisations and their members.
    AdminLabs = "admin_labs",

    // Keys and tokens (jwks): the operator's and tenant admins' key administration.
    OperatorOnly = "operator_only",
    OtherTenantOrOperatorOnly = "other_tenant_or_operator_only",
    TenantExists = "tenant_exists",
    KeyAlreadyRevoked = "key_already_revoked",
    UnknownJti = "unknown_jti",

    // Federation with a tenant's OpenID provider (auth, issue 17).
    /// The tenant has no enabled provider.
    FederationDisabled = "federation_disabled",
    /// A password login for a tenant whose provider is required (not its break-glass account).
    FederationRequired = "federation_required",
    UnsupportedTokenType = "unsupported_token_type",
    /// The provider's keys could not be fetched and none are cached.
    ProviderKeysUnavailable = "provider_keys_unavailable",
    EmailNotVerified = "email_not_verified",
    /// The provider's identity is linked to no user of the tenant.
    UnmappedIdentity = "unmapped_identity",
    /// The user's role needs MFA and the provider's token shows none of the accepted values.
    ProviderMfaRequired = "provider_mfa_required",
    TokenExchanged = "token_exchanged",
    FederationSet = "federation_set",
    FederationTurnedOff = "federation_turned_off",
    BadFederationSettings = "bad_federation_settings",
    IdentityLinked = "identity_linked",
    ExternalIdTaken = "external_id_taken",
    /// A back-channel logout token without the back-channel logout event, or of another `typ`.
    NotALogoutToken = "not_a_logout_token",
    /// A back-channel logout token carrying a `nonce` (OIDC Back-Channel Logout §2.4 forbids it).
    LogoutTokenNonce = "logout_token_nonce",
    /// A back-channel logout token whose `jti` was already received.
    LogoutTokenReplayed = "logout_token_replayed",
    /// The provider logged the user out: their sessions, refresh families and access tokens ended.
    ProviderLogout = "provider_logout",
    /// A valid back-channel logout for a provider subject or session no user of the tenant has.
    ProviderLogoutUnknownSubject = "provider_logout_unknown_subject",
    /// A provider access token at the gateway for a tenant that does not accept them.
    ProviderTokensNotAccepted = "provider_tokens_not_accepted",
    /// Browser sign-in with the tenant's provider (code flow): signed in as a portal session.
    ProviderSignIn = "provider_sign_in",
    /// A sign-in started: the browser sent to the provider with its state, nonce and PKCE.
    ProviderSignInStarted = "provider_sign_in_started",
    /// A callback whose `state` is unknown, expired or already used (or of another tenant).
    SignInStateUnknown = "sign_in_state_unknown",
    /// The ID token's `nonce` is not the one the sign-in started with.
    SignInNonceMismatch = "sign_in_nonce_mismatch",
    /// A `return_to` that is not a path of the platform's own origin (no open redirect).
    SignInReturnToRefused = "sign_in_return_to_refused",
    /// The provider's token endpoint did not redeem the code (or answered no ID token), or the
    /// provider sent the browser back with an error instead of a code.
    SignInCodeRefused = "sign_in_code_refused",
    /// The provider's discovery document is needed for a browser sign-in and was not usable.
    SignInUnavailable = "sign_in_unavailable",
    /// An insurer's account at a browser sign-in: its systems use client credentials.
    SignInInsurerRefused = "sign_in_insurer_refused",
    /// A pushed Security Event Token that is not one (`typ`, `events`), or carries a logout.
    NotASecurityEvent = "not_a_security_event",
    /// A Security Event Token whose `jti` was already received.
    SecurityEventReplayed = "security_event_replayed",
    /// A CAEP `session-revoked` or `credential-change` event: the user's sessions ended.
    ProviderSessionRevoked = "provider_session_revoked",
    /// A valid Security Event Token with nothing to act on (another event, an unknown subject).
    SecurityEventIgnored = "security_event_ignored",
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<Reason> for String {
    fn from(reason: Reason) -> Self {
        reason.as_str().to_owned()
    }
}

impl PartialEq<Reason> for String {
    fn eq(&self, other: &Reason) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<Reason> for &str {
    fn eq(&self, other: &Reason) -> bool {
        *self == other.as_str()
    }
}

impl PartialEq<&str> for Reason {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl serde::Serialize for Reason {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_its_own_snake_case_text_and_reads_back() {
        let mut seen = std::collections::BTreeSet::new();
        for reason in Reason::ALL {
            let text = reason.as_str();
            assert!(seen.insert(text), "{text} is used twice");
            assert!(!text.is_empty() && text.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{text}");
            assert!(text.len() <= 64, "{text}: the gateway keeps 64 characters of an upstream reason");
            assert_eq!(Reason::parse(text), Some(*reason));
        }
        assert_eq!(Reason::parse("no such reason"), None);
    }

    #[test]
    fn compares_with_the_audit_text() {
        assert_eq!(String::from(Reason::NoSuchRoute), "no_such_route");
        let stored: String = "care_team".into();
        assert!(stored == Reason::CareTeam && "care_team" == Reason::CareTeam);
        assert_eq!(serde_json::to_string(&Reason::RateLimited).expect("json"), "\"rate_limited\"");
    }
}
