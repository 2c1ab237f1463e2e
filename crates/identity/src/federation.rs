//! Federation with a tenant's OpenID provider (issue 17): the provider settings a tenant admin
//! stores, the provider's JWK Set read into keys the platform's verifier accepts, the RFC 8693
//! token exchange's verification of the provider's token, the MFA rule for configured roles,
//! and the JWKS cache's decisions (how long a fetched set stays fresh, when an unknown `kid` may
//! trigger a refetch).
//!
//! Pure: no HTTP, no store, no clock; `now` is a parameter. Fetching, caching and mapping to a
//! local user live in the glue (`health_spin::federation`) and the `auth` component. The
//! provider's role claims are never read: the local user's role is authoritative.
//!
//! The browser sign-in (issue 17 item 5, the authorization code flow with PKCE) checks its ID
//! token with [`verify_sign_in`]: [`verify`] exactly, plus the `nonce`; its PKCE challenge and
//! the `return_to` rule are [`pkce_challenge`] and [`same_origin_path`].

use std::collections::BTreeMap;

use health_core::{Reason, Role, TenantId, Username};
pub use health_jose::TenantKeys;
use health_jose::{Algorithm, KeyRecord, KeyStatus, KeyUse, MAX_CLOCK_TOLERANCE_SECS, PublicJwk};
use serde::{Deserialize, Serialize};

/// `grant_type` of the token exchange (RFC 8693 §2.1).
pub const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// RFC 8693 §3 token type identifiers accepted as `subject_token_type`.
pub const ID_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:id_token";
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
pub const JWT_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";
/// The platform's own tokens, as `issued_token_type`.
pub const ISSUED_TOKEN_TYPE: &str = ACCESS_TOKEN_TYPE;

/// What the client said its `subject_token` is (`subject_token_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectKind {
    IdToken,
    AccessToken,
    /// Any JWT: an ID token or an access token.
    Jwt,
}

impl SubjectKind {
    pub fn parse(token_type: &str) -> Option<Self> {
        match token_type {
            ID_TOKEN_TYPE => Some(Self::IdToken),
            ACCESS_TOKEN_TYPE => Some(Self::AccessToken),
            JWT_TYPE => Some(Self::Jwt),
            _ => None,
        }
    }
}

/// Longest accepted `exp - iat` of a provider token, whatever is configured: a day.
pub const MAX_PROVIDER_TOKEN_LIFETIME_SECS: i64 = 24 * 3600;
/// Largest accepted provider token (ID tokens carry more claims than the platform's).
pub const MAX_PROVIDER_TOKEN_BYTES: usize = 16 * 1024;
/// Bounds on how long a fetched JWK Set is used without asking again: at least a minute (a
/// provider answering `max-age=0` would otherwise be asked on every exchange), at most a day.
pub const JWKS_MIN_FRESH_SECS: i64 = 60;
pub const JWKS_MAX_FRESH_SECS: i64 = 24 * 3600;
/// Freshness of a JWK Set whose response says nothing about caching.
pub const JWKS_DEFAULT_FRESH_SECS: i64 = 300;
/// Most keys kept from one JWK Set; a provider publishes a handful.
pub const MAX_PROVIDER_KEYS: usize = 16;

fn default_claim() -> String {
    "email".into()
}
fn default_amr() -> Vec<String> {
    vec!["mfa".into()]
}
const fn default_tolerance() -> i64 {
    30
}
const fn default_lifetime() -> i64 {
    3600
}
const fn default_cooldown() -> i64 {
    30
}

/// One tenant's provider, as the admin API stores and shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSettings {
    pub enabled: bool,
    /// Local passwords refused for the tenant, except [`ProviderSettings::break_glass`]'s.
    #[serde(default)]
    pub required: bool,
    /// The one local account (an admin) that may still log in with a password when `required`.
    #[serde(default)]
    pub break_glass: Option<Username>,
    /// The provider's `iss`, compared exactly.
    pub issuer: String,
    /// The `aud` the provider's tokens must carry for this tenant (its client id, or for access
    /// tokens the resource indicator).
    pub audience: String,
    /// Where keys come from: the discovery document (whose `jwks_uri` is followed) or the JWKS.
    #[serde(default)]
    pub discovery_url: Option<String>,
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// The claim whose value is looked up among the tenant's linked identities.
    #[serde(default = "default_claim")]
    pub subject_claim: String,
    /// Roles whose exchange needs MFA at the provider.
    #[serde(default)]
    pub mfa_roles: Vec<Role>,
    /// `amr` values that count as MFA (any one of them).
    #[serde(default = "default_amr")]
    pub mfa_amr: Vec<String>,
    /// `acr` values that count as MFA too.
    #[serde(default)]
    pub mfa_acr: Vec<String>,
    #[serde(default = "default_tolerance")]
    pub clock_tolerance_secs: i64,
    /// Longest accepted `exp - iat`.
    #[serde(default = "default_lifetime")]
    pub max_token_lifetime_secs: i64,
    /// A token whose `kid` the cached JWK Set lacks refetches it at most this often (see
    /// [`plan`]). A setting of the tenant's rather than an application variable: Spin resolves
    /// every variable for each instance that calls out, and this one is the provider's business.
    #[serde(default = "default_cooldown")]
    pub jwks_refetch_cooldown_secs: i64,
    /// The gateway accepts the provider's JWT access tokens (RFC 9068) as bearer tokens
    /// directly, with the exchange's checks, for the linked local user and role (item 3).
    #[serde(default)]
    pub accept_provider_tokens: bool,
}

/// Why settings were not accepted (the admin API's 400 detail).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    #[error("issuer must be an http(s) URL")]
    Issuer,
    #[error("audience must be 1-256 printable characters")]
    Audience,
    #[error("exactly one of discovery_url and jwks_uri, an http(s) URL")]
    KeySource,
    #[error("subject_claim must be 1-64 characters of a-z, 0-9 or '_'")]
    SubjectClaim,
    #[error("mfa_amr and mfa_acr values must be 1-64 printable characters, mfa_amr not empty")]
    MfaValues,
    #[error("clock_tolerance_secs must be 0 to 60")]
    Tolerance,
    #[error("max_token_lifetime_secs must be 60 to 86400")]
    Lifetime,
    #[error("required needs enabled")]
    RequiredDisabled,
    #[error("jwks_refetch_cooldown_secs must be 1 to 3600")]
    Cooldown,
}

fn http_url(url: &str) -> bool {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
    rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/'))
        && url.len() <= 512
        && !url.chars().any(|c| c.is_whitespace() || c.is_control() || c == '#')
}

fn printable(value: &str, max: usize) -> bool {
    !value.is_empty() && value.len() <= max && !value.chars().any(char::is_control)
}

impl ProviderSettings {
    /// Checks what an admin submitted.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if !http_url(&self.issuer) {
            return Err(SettingsError::Issuer);
        }
        if !printable(&self.audience, 256) {
            return Err(SettingsError::Audience);
        }
        match (&self.discovery_url, &self.jwks_uri) {
            (Some(url), None) | (None, Some(url)) if http_url(url) => {}
            _ => return Err(SettingsError::KeySource),
        }
        let claim = self.subject_claim.as_bytes();
        if claim.is_empty()
            || claim.len() > 64
            || !claim.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_')
        {
            return Err(SettingsError::SubjectClaim);
        }
        if self.mfa_amr.is_empty() || !self.mfa_amr.iter().chain(&self.mfa_acr).all(|v| printable(v, 64)) {
            return Err(SettingsError::MfaValues);
        }
        if !(0..=MAX_CLOCK_TOLERANCE_SECS).contains(&self.clock_tolerance_secs) {
            return Err(SettingsError::Tolerance);
        }
        if !(60..=MAX_PROVIDER_TOKEN_LIFETIME_SECS).contains(&self.max_token_lifetime_secs) {
            return Err(SettingsError::Lifetime);
        }
        if self.required && !self.enabled {
            return Err(SettingsError::RequiredDisabled);
        }
        if !(1..=3600).contains(&self.jwks_refetch_cooldown_secs) {
            return Err(SettingsError::Cooldown);
        }
        Ok(())
    }

    /// Whether a password login of `username` is refused because the provider is required.
    pub fn refuses_password(&self, username: &Username) -> bool {
        self.enabled && self.required && self.break_glass.as_ref() != Some(username)
    }

    /// Where the keys come from, for the cache entry: a changed source invalidates it.
    pub fn key_source(&self) -> &str {
        self.jwks_uri.as_deref().or(self.discovery_url.as_deref()).unwrap_or_default()
    }
}

/// Why a provider's token was refused, each with its audit reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Size, structure, header, `kid`, algorithm or signature (the platform's JOSE checks).
    #[error("token: {0}")]
    Token(health_jose::Error),
    #[error("required claim {0} missing")]
    MissingClaim(&'static str),
    #[error("issuer is not the tenant's provider")]
    WrongIssuer,
    #[error("audience is not the tenant's")]
    WrongAudience,
    #[error("expired")]
    Expired,
    #[error("not yet valid")]
    NotYetValid,
    #[error("issued in the future")]
    IssuedInFuture,
    #[error("lifetime exceeds the cap")]
    LifetimeTooLong,
    #[error("the provider says the email is not verified")]
    EmailNotVerified,
    #[error("typ does not match the token type it was presented as")]
    WrongType,
    #[error("not a back-channel logout token")]
    NotALogoutToken,
    #[error("a logout token carries a nonce")]
    Nonce,
    #[error("not a security event token")]
    NotASecurityEvent,
    #[error("the ID token's nonce is not the sign-in's")]
    WrongNonce,
}

impl Refused {
    pub fn reason(&self) -> Reason {
        match self {
            Refused::Token(error) => error.reason(),
            Refused::MissingClaim(_) => Reason::MissingClaim,
            Refused::WrongIssuer => Reason::WrongIssuer,
            Refused::WrongAudience => Reason::WrongAudience,
            Refused::Expired => Reason::Expired,
            Refused::NotYetValid => Reason::NotYetValid,
            Refused::IssuedInFuture => Reason::IssuedInFuture,
            Refused::LifetimeTooLong => Reason::LifetimeTooLong,
            Refused::EmailNotVerified => Reason::EmailNotVerified,
            Refused::WrongType => Reason::WrongTyp,
            Refused::NotALogoutToken => Reason::NotALogoutToken,
            Refused::Nonce => Reason::LogoutTokenNonce,
            Refused::NotASecurityEvent => Reason::NotASecurityEvent,
            Refused::WrongNonce => Reason::SignInNonceMismatch,
        }
    }
}

/// What a verified provider token says, of what the platform uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The value of the tenant's `subject_claim`, looked up among linked identities.
    pub external_id: String,
    pub sub: String,
    pub amr: Vec<String>,
    pub acr: Option<String>,
    /// `auth_time` when the provider gave one, else `iat`.
    pub auth_time: i64,
    pub exp: i64,
    /// The provider's session (`sid`, OIDC Front/Back-Channel Logout), when the token names one.
    pub sid: Option<String>,
    pub iat: i64,
    /// The token's `jti` (RFC 9068 §2.2 requires one in an access token).
    pub jti: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

/// A claims set read as the platform reads its own tokens' claims: a JSON object in valid UTF-8,
/// refused when a member appears twice (a map would keep the last one, and two parsers of the
/// same token could then read two different subjects).
struct ClaimSet(BTreeMap<String, serde_json::Value>);

impl<'de> Deserialize<'de> for ClaimSet {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Members;
        impl<'de> serde::de::Visitor<'de> for Members {
            type Value = ClaimSet;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object without repeated members")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<ClaimSet, A::Error> {
                let mut members = BTreeMap::new();
                while let Some((name, value)) = map.next_entry::<String, serde_json::Value>()? {
                    if members.insert(name, value).is_some() {
                        return Err(serde::de::Error::custom("a repeated member"));
                    }
                }
                Ok(ClaimSet(members))
            }
        }
        deserializer.deserialize_map(Members)
    }
}

fn claim_set(payload: &[u8]) -> Option<ClaimSet> {
    serde_json::from_str(std::str::from_utf8(payload).ok()?).ok()
}

/// Verifies a provider's sign-in token (ID token or access token) for a tenant whose provider
/// `settings` and keys are given: [`verified_claims`]' checks → required `sub` → not a Security
/// Event Token (a logout token never signs anyone in) → the header's `typ` for the kind of token
/// it was presented as → the subject claim.
pub fn verify(
    token: &str,
    kind: SubjectKind,
    keys: &TenantKeys,
    settings: &ProviderSettings,
    now: i64,
) -> Result<Verified, Refused> {
    verify_with_claims(token, kind, keys, settings, now).map(|(verified, _)| verified)
}

/// [`verify`], with the claims set for what a caller checks besides (the code flow's `nonce`).
fn verify_with_claims(
    token: &str,
    kind: SubjectKind,
    keys: &TenantKeys,
    settings: &ProviderSettings,
    now: i64,
) -> Result<(Verified, BTreeMap<String, serde_json::Value>), Refused> {
    let claims = verified_claims(token, keys, settings, now)?;
    let text = |name: &'static str| claims.get(name).and_then(serde_json::Value::as_str).filter(|v| !v.is_empty());
    let time = |name: &'static str| claims.get(name).and_then(serde_json::Value::as_i64);
    let sub = text("sub").ok_or(Refused::MissingClaim("sub"))?;
    let iat = time("iat").ok_or(Refused::MissingClaim("iat"))?;
    let exp = time("exp").ok_or(Refused::MissingClaim("exp"))?;
    // A Security Event Token (a back-channel logout token, a CAEP event) is never a sign-in,
    // whatever else it carries.
    if claims.contains_key("events") || header_typ(token).is_some_and(|typ| typ.eq_ignore_ascii_case(LOGOUT_TYP)) {
        return Err(Refused::WrongType);
    }
    // RFC 9068 §2.1 and §4: an access token says so in `typ`, and an ID token must not pass
    // for one, nor one for the other (OIDC ID tokens carry no `typ` or `JWT`).
    let access_typ = header_typ(token).is_some_and(|typ| health_jose::is_access_token_typ(&typ));
    match kind {
        SubjectKind::AccessToken if !access_typ => return Err(Refused::WrongType),
        SubjectKind::IdToken if access_typ => return Err(Refused::WrongType),
        _ => {}
    }
    let external_id = claims
        .get(&settings.subject_claim)
        .and_then(serde_json::Value::as_str)
        .filter(|v| !v.is_empty() && v.len() <= 256)
        .ok_or(Refused::MissingClaim("subject_claim"))?;
    // An unverified email is anyone's to type in at many providers (OIDC Core §5.7).
    if settings.subject_claim == "email" && claims.get("email_verified").is_some_and(|v| v == &serde_json::json!(false))
    {
        return Err(Refused::EmailNotVerified);
    }
    let amr = claims
        .get("amr")
        .and_then(serde_json::Value::as_array)
        .map(|list| list.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    let verified = Verified {
        external_id: normalise(&settings.subject_claim, external_id),
        sub: sub.to_owned(),
        amr,
        acr: text("acr").map(str::to_owned),
        auth_time: time("auth_time").unwrap_or(iat),
        exp,
        sid: text("sid").filter(|sid| sid.len() <= MAX_SID_BYTES).map(str::to_owned),
        iat,
        jti: text("jti").filter(|jti| jti.len() <= MAX_JTI_BYTES).map(str::to_owned),
    };
    Ok((verified, claims))
}

// ---- browser sign-in: the authorization code flow with PKCE (issue 17 item 5) --------------

/// How long a sign-in started at `/authorize` may take to come back to the callback.
pub const SIGN_IN_TTL_SECS: i64 = 600;

/// The ID token a code flow's token endpoint answered with: [`verify`] as an ID token exactly,
/// plus its `nonce` equal to the one the sign-in started with (OIDC Core §3.1.3.7 item 11), so
/// an ID token minted for another sign-in (or injected into this one) is refused.
pub fn verify_sign_in(
    token: &str,
    keys: &TenantKeys,
    settings: &ProviderSettings,
    now: i64,
    nonce: &str,
) -> Result<Verified, Refused> {
    let (verified, claims) = verify_with_claims(token, SubjectKind::IdToken, keys, settings, now)?;
    match claims.get("nonce").and_then(serde_json::Value::as_str) {
        Some(said) if !nonce.is_empty() && said == nonce => Ok(verified),
        Some(_) => Err(Refused::WrongNonce),
        None => Err(Refused::MissingClaim("nonce")),
    }
}

/// The PKCE `code_challenge` of a `code_verifier` under `S256` (RFC 7636 §4.2):
/// base64url(SHA-256(verifier)).
pub fn pkce_challenge(verifier: &str) -> String {
    health_core::b64url(health_core::sha256(verifier))
}

/// The provider's `authorization_endpoint` with the request's parameters added to its query
/// (OIDC Core §3.1.2.1; an endpoint may carry a query of its own, kept).
pub fn authorization_url(endpoint: &str, params: &[(&str, &str)]) -> String {
    let query = form_urlencoded::Serializer::new(String::new()).extend_pairs(params).finish();
    let separator = if endpoint.contains('?') { '&' } else { '?' };
    format!("{endpoint}{separator}{query}")
}

/// `return_to` when it is a path of the platform's own origin (`/app/...`, `/`), never an
/// absolute URL, a scheme-relative `//host` or `/\host` (which browsers read as one), nor
/// anything with control characters or longer than 512 bytes: no open redirect.
pub fn same_origin_path(return_to: &str) -> Option<&str> {
    let ok = return_to.starts_with('/')
        && !return_to.starts_with("//")
        && !return_to.starts_with("/\\")
        && return_to.len() <= 512
        && !return_to.chars().any(|c| c.is_control() || c == '\\' || c.is_whitespace());
    ok.then_some(return_to)
}

/// The signature and the claims every provider token must pass, in the platform's order:
/// size → parts → header (no `crit`, no embedded keys) → `kid` within the provider's keys →
/// signature under the key's own algorithm (so `none` and `HS256` are refused whatever the
/// header says) → required `iss`, `aud`, `exp`, `iat` → issuer, audience, times within the
/// tolerance (at most 60 s), lifetime cap. The claims set comes back for what each kind of
/// token checks next.
fn verified_claims(
    token: &str,
    keys: &TenantKeys,
    settings: &ProviderSettings,
    now: i64,
) -> Result<BTreeMap<String, serde_json::Value>, Refused> {
    verified_claims_with(token, keys, settings, now, Exp::Required)
}

/// Whether a token must carry `exp`: a Security Event Token (RFC 8417 §2.2) need not.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Exp {
    Required,
    Optional,
}

fn verified_claims_with(
    token: &str,
    keys: &TenantKeys,
    settings: &ProviderSettings,
    now: i64,
    exp_rule: Exp,
) -> Result<BTreeMap<String, serde_json::Value>, Refused> {
    let opts = health_jose::VerifyOptions {
        audience: settings.audience.clone(),
        tolerance_secs: settings.clock_tolerance_secs.clamp(0, MAX_CLOCK_TOLERANCE_SECS),
        max_lifetime_secs: settings.max_token_lifetime_secs.min(MAX_PROVIDER_TOKEN_LIFETIME_SECS),
        max_token_bytes: MAX_PROVIDER_TOKEN_BYTES,
    };
    let payload = health_jose::verify_signature(token, keys, &opts).map_err(Refused::Token)?;
    let claims = claim_set(&payload).ok_or(Refused::Token(health_jose::Error::BadClaims))?.0;
    let text = |name: &'static str| claims.get(name).and_then(serde_json::Value::as_str).filter(|v| !v.is_empty());
    let time = |name: &'static str| claims.get(name).and_then(serde_json::Value::as_i64);
    let iss = text("iss").ok_or(Refused::MissingClaim("iss"))?;
    let aud: Audience =
        claims.get("aud").and_then(|a| serde_json::from_value(a.clone()).ok()).ok_or(Refused::MissingClaim("aud"))?;
    let exp = match (time("exp"), exp_rule) {
        (Some(exp), _) => Some(exp),
        (None, Exp::Optional) if !claims.contains_key("exp") => None,
        (None, _) => return Err(Refused::MissingClaim("exp")),
    };
    let iat = time("iat").ok_or(Refused::MissingClaim("iat"))?;
    if iss != settings.issuer {
        return Err(Refused::WrongIssuer);
    }
    let audience_ok = match &aud {
        Audience::One(a) => *a == settings.audience,
        Audience::Many(list) => list.contains(&settings.audience),
    };
    // OIDC Core §2: with an `azp`, it is the party the token was issued to.
    if !audience_ok || text("azp").is_some_and(|azp| azp != settings.audience) {
        return Err(Refused::WrongAudience);
    }
    let tolerance = opts.tolerance_secs;
    if exp.is_some_and(|exp| exp <= now - tolerance) {
        return Err(Refused::Expired);
    }
    if time("nbf").is_some_and(|nbf| nbf > now + tolerance) {
        return Err(Refused::NotYetValid);
    }
    if iat > now + tolerance {
        return Err(Refused::IssuedInFuture);
    }
    if exp.is_some_and(|exp| exp - iat > opts.max_lifetime_secs) {
        return Err(Refused::LifetimeTooLong);
    }
    Ok(claims)
}

/// The back-channel logout event (OIDC Back-Channel Logout 1.0 §2.4).
pub const BACKCHANNEL_LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";
/// The explicit type of a logout token (§2.4, RFC 8725 §3.11).
pub const LOGOUT_TYP: &str = "logout+jwt";
/// Oldest `iat` of a logout token accepted, tolerance aside: the `jti` of each accepted one is
/// kept this long (plus the tolerance), so a replay is refused for as long as it could pass.
pub const MAX_LOGOUT_TOKEN_AGE_SECS: i64 = 300;
/// Longest `jti` and `sid` read.
pub const MAX_JTI_BYTES: usize = 256;
pub const MAX_SID_BYTES: usize = 256;

/// CAEP event types (OpenID Continuous Access Evaluation Profile 1.0) that end a user's
/// sessions here.
pub const CAEP_SESSION_REVOKED: &str = "https://schemas.openid.net/secevent/caep/event-type/session-revoked";
pub const CAEP_CREDENTIAL_CHANGE: &str = "https://schemas.openid.net/secevent/caep/event-type/credential-change";
/// The explicit type of a Security Event Token (RFC 8417 §2.3).
pub const SET_TYP: &str = "secevent+jwt";

/// Who a security event is about (RFC 9493 subject identifiers, the formats a provider's user
/// can be named in here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventSubject {
    /// `{"format":"email","email"}`, normalised as the subject claim `email` is.
    Email(String),
    /// `{"format":"iss_sub","iss","sub"}` with the provider's own issuer: the provider's `sub`.
    ProviderSub(String),
    /// Any other format, or another issuer's subject: no user of the tenant.
    Other,
}

/// A verified Security Event Token carrying a CAEP event this platform acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityEvent {
    /// The CAEP event type acted on, if the token carries one (others are accepted and ignored).
    pub event: Option<&'static str>,
    pub subject: EventSubject,
    pub jti: String,
    pub remember_until: i64,
}

/// Validates a Security Event Token pushed by the tenant's provider (RFC 8417, RFC 8935; CAEP
/// 1.0): the signature and claim checks of [`verified_claims`] (`exp` optional, as RFC 8417
/// §2.2 allows), `iat` at most [`MAX_LOGOUT_TOKEN_AGE_SECS`] old, `typ` `secevent+jwt`, `events`
/// an object, a `jti`, no `nonce`, no back-channel logout event (that has its own endpoint), and
/// the subject (`sub_id`, or the event's `subject` as earlier CAEP drafts put it).
pub fn verify_security_event(
    token: &str,
    keys: &TenantKeys,
    settings: &ProviderSettings,
    now: i64,
) -> Result<SecurityEvent, Refused> {
    let claims = verified_claims_with(token, keys, settings, now, Exp::Optional)?;
    let tolerance = settings.clock_tolerance_secs.clamp(0, MAX_CLOCK_TOLERANCE_SECS);
    let iat = claims.get("iat").and_then(serde_json::Value::as_i64).ok_or(Refused::MissingClaim("iat"))?;
    if iat < now - MAX_LOGOUT_TOKEN_AGE_SECS - tolerance {
        return Err(Refused::Expired);
    }
    if !header_typ(token).is_some_and(|typ| typ.eq_ignore_ascii_case(SET_TYP)) {
        return Err(Refused::NotASecurityEvent);
    }
    let Some(events) = claims.get("events").and_then(serde_json::Value::as_object) else {
        return Err(Refused::NotASecurityEvent);
    };
    if claims.contains_key("nonce") || events.contains_key(BACKCHANNEL_LOGOUT_EVENT) {
        return Err(Refused::NotASecurityEvent);
    }
    let jti = claims
        .get("jti")
        .and_then(serde_json::Value::as_str)
        .filter(|jti| !jti.is_empty() && jti.len() <= MAX_JTI_BYTES && !jti.chars().any(char::is_control))
        .ok_or(Refused::MissingClaim("jti"))?;
    let acted_on = [CAEP_SESSION_REVOKED, CAEP_CREDENTIAL_CHANGE].into_iter().find(|e| events.contains_key(*e));
    let subject_id = claims
        .get("sub_id")
        .or_else(|| acted_on.and_then(|e| events.get(e)).and_then(|payload| payload.get("subject")));
    let subject = match subject_id {
        Some(id) => event_subject(id, settings),
        None if acted_on.is_some() => return Err(Refused::MissingClaim("sub_id")),
        None => EventSubject::Other,
    };
    Ok(SecurityEvent {
        event: acted_on,
        subject,
        jti: jti.to_owned(),
        remember_until: iat + MAX_LOGOUT_TOKEN_AGE_SECS + 2 * tolerance,
    })
}

fn event_subject(id: &serde_json::Value, settings: &ProviderSettings) -> EventSubject {
    let member =
        |name: &str| id.get(name).and_then(serde_json::Value::as_str).filter(|v| !v.is_empty() && v.len() <= 256);
    match member("format") {
        Some("email") => {
            member("email").map_or(EventSubject::Other, |email| EventSubject::Email(normalise("email", email)))
        }
        Some("iss_sub") if member("iss") == Some(settings.issuer.as_str()) => {
            member("sub").map_or(EventSubject::Other, |sub| EventSubject::ProviderSub(sub.to_owned()))
        }
        _ => EventSubject::Other,
    }
}

/// What a verified back-channel logout token names: the provider's subject, its session, or
/// both; and its `jti`, for the replay check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutToken {
    pub sub: Option<String>,
    pub sid: Option<String>,
    pub jti: String,
    /// Until when the `jti` must be remembered: past it, the token is refused for its age.
    pub remember_until: i64,
}

/// Validates a back-channel logout token as OIDC Back-Channel Logout 1.0 §2.6 says: signed by
/// the provider's key under the key's algorithm, `iss`, `aud`, `exp` and `iat` as for an ID
/// token (and `iat` at most [`MAX_LOGOUT_TOKEN_AGE_SECS`] old), `typ` `logout+jwt` when there is
/// one, `events` holding the back-channel logout event, `sub` or `sid` or both, no `nonce`, and
/// a `jti` (whose replay the caller checks). `sub` and `sid` are read as given (the subject
/// claim setting maps sign-in tokens, not logout tokens).
pub fn verify_logout(
    token: &str,
    keys: &TenantKeys,
    settings: &ProviderSettings,
    now: i64,
) -> Result<LogoutToken, Refused> {
    let claims = verified_claims(token, keys, settings, now)?;
    let text = |name: &'static str| claims.get(name).and_then(serde_json::Value::as_str).filter(|v| !v.is_empty());
    let tolerance = settings.clock_tolerance_secs.clamp(0, MAX_CLOCK_TOLERANCE_SECS);
    let iat = claims.get("iat").and_then(serde_json::Value::as_i64).ok_or(Refused::MissingClaim("iat"))?;
    if iat < now - MAX_LOGOUT_TOKEN_AGE_SECS - tolerance {
        return Err(Refused::Expired);
    }
    if header_typ(token).is_some_and(|typ| !typ.eq_ignore_ascii_case(LOGOUT_TYP) && !typ.eq_ignore_ascii_case("JWT")) {
        return Err(Refused::NotALogoutToken);
    }
    let event = claims.get("events").and_then(|events| events.get(BACKCHANNEL_LOGOUT_EVENT));
    if !event.is_some_and(serde_json::Value::is_object) {
        return Err(Refused::NotALogoutToken);
    }
    if claims.contains_key("nonce") {
        return Err(Refused::Nonce);
    }
    let sub = text("sub").map(str::to_owned);
    let sid = text("sid").filter(|sid| sid.len() <= MAX_SID_BYTES).map(str::to_owned);
    if sub.is_none() && sid.is_none() {
        return Err(Refused::MissingClaim("sub or sid"));
    }
    let jti = text("jti")
        .filter(|jti| jti.len() <= MAX_JTI_BYTES && !jti.chars().any(char::is_control))
        .ok_or(Refused::MissingClaim("jti"))?;
    Ok(LogoutToken { sub, sid, jti: jti.to_owned(), remember_until: iat + MAX_LOGOUT_TOKEN_AGE_SECS + 2 * tolerance })
}

/// The form linked identities are stored and looked up in: emails compare case-insensitively
/// (their domain always does, and providers differ on the local part), everything else exactly.
pub fn normalise(claim: &str, value: &str) -> String {
    if claim == "email" { value.to_ascii_lowercase() } else { value.to_owned() }
}

/// Whether a user of `role` presented enough at the provider: any accepted `amr` value, or an
/// accepted `acr`. Roles not listed need nothing more.
pub fn mfa_satisfied(settings: &ProviderSettings, role: Role, verified: &Verified) -> bool {
    !settings.mfa_roles.contains(&role)
        || verified.amr.iter().any(|a| settings.mfa_amr.contains(a))
        || verified.acr.as_ref().is_some_and(|acr| settings.mfa_acr.contains(acr))
}

/// A provider's JWK Set as keys the platform's verifier takes: signing keys of a supported
/// algorithm only (RS256 for RSA, ES256 for P-256, EdDSA for Ed25519: the key decides, and a
/// key whose `alg` names anything else is skipped), each with a `kid`, valid on its curve or of
/// an accepted RSA size. Encryption keys and symmetric keys are never taken.
pub fn provider_keys(jwks: &[u8], tenant: &TenantId, issuer: &str) -> Option<TenantKeys> {
    #[derive(Deserialize)]
    struct Set {
        keys: Vec<serde_json::Value>,
    }
    let set: Set = serde_json::from_slice(jwks).ok()?;
    let keys = set
        .keys
        .iter()
        .filter_map(|jwk| provider_key(jwk, tenant))
        .take(MAX_PROVIDER_KEYS)
        .map(|jwk| KeyRecord { jwk, status: KeyStatus::Active, created_at: 0, not_after: None })
        .collect();
    Some(TenantKeys { tenant_id: tenant.clone(), issuer: issuer.to_owned(), keys })
}

fn provider_key(jwk: &serde_json::Value, tenant: &TenantId) -> Option<PublicJwk> {
    let member = |name: &str| jwk.get(name).and_then(serde_json::Value::as_str).map(str::to_owned);
    if member("use").is_some_and(|u| u != "sig") {
        return None;
    }
    let kty = member("kty")?;
    let alg = match (kty.as_str(), member("crv").as_deref()) {
        ("RSA", _) => Algorithm::Rs256,
        ("EC", Some("P-256")) => Algorithm::Es256,
        ("OKP", Some("Ed25519")) => Algorithm::EdDsa,
        _ => return None,
    };
    if member("alg").is_some_and(|a| a != alg.as_str()) {
        return None;
    }
    let key = PublicJwk {
        kty,
        kid: member("kid").filter(|k| printable(k, 128))?,
        key_use: KeyUse::Sig,
        alg: alg.as_str().into(),
        n: member("n"),
        e: member("e"),
        crv: member("crv"),
        x: member("x"),
        y: member("y"),
        tenant_id: tenant.clone(),
    };
    let usable = match alg {
        Algorithm::Rs256 => key.rsa_public_key().is_some(),
        Algorithm::Es256 => key.p256_public_key().is_some(),
        _ => key.ed25519_public_key().is_some(),
    };
    usable.then_some(key)
}

/// A member of the token's header (read again once the signature verified, or before it only
/// to ask whether the cached set knows the `kid`).
fn header_member(token: &str, name: &str) -> Option<String> {
    let header = token.split('.').next()?;
    let bytes = health_core::b64url_decode(header)?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    value.get(name)?.as_str().map(str::to_owned)
}

fn header_typ(token: &str) -> Option<String> {
    header_member(token, "typ")
}

/// The unverified header's `kid`, only to ask whether the cached set knows it.
pub fn peek_kid(token: &str) -> Option<String> {
    header_member(token, "kid")
}

/// How long a fetched JWK Set stays fresh, from its response's `Cache-Control` (RFC 9111
/// §5.2.2: `max-age`; `no-store` and `no-cache` mean the minimum), within the bounds above.
pub fn fresh_secs(cache_control: Option<&str>) -> i64 {
    let Some(value) = cache_control else { return JWKS_DEFAULT_FRESH_SECS };
    let mut max_age = None;
    for directive in value.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-store" || lower == "no-cache" {
            return JWKS_MIN_FRESH_SECS;
        }
        if let Some(age) = lower.strip_prefix("max-age=") {
            max_age = age.trim_matches('"').parse::<i64>().ok();
        }
    }
    max_age.map_or(JWKS_DEFAULT_FRESH_SECS, |age| age.clamp(JWKS_MIN_FRESH_SECS, JWKS_MAX_FRESH_SECS))
}

/// A cached JWK Set, as stored (the key-value entry's JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedJwks {
    /// The settings' key source it was fetched for.
    pub source: String,
    /// The JWK Set as fetched.
    pub jwks: String,
    pub fetched_at: i64,
    pub fresh_until: i64,
    /// The last time a fetch was tried, successful or not: the cooldown counts from here.
    pub attempted_at: i64,
}

/// What to do before verifying a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// The cached set answers.
    UseCached,
    /// Fetch; if the provider does not answer, use the cached set when there is one.
    Fetch,
}

/// Decides between the cached set and a fetch: a set that is missing, for another source, or
/// past its freshness is fetched; a fresh set that lacks the token's `kid` is fetched again
/// only once per `cooldown_secs` (a flood of random `kid`s costs the provider one request per
/// cooldown, not one per token).
pub fn plan(cached: Option<&CachedJwks>, source: &str, kid_known: bool, now: i64, cooldown_secs: i64) -> Plan {
    match cached {
        Some(c) if c.source == source && now < c.fresh_until => {
            if kid_known || now - c.attempted_at < cooldown_secs {
                Plan::UseCached
            } else {
                Plan::Fetch
            }
        }
        Some(c) if c.source == source && now - c.attempted_at < cooldown_secs => Plan::UseCached,
        _ => Plan::Fetch,
    }
}

#[cfg(test)]
mod tests;
