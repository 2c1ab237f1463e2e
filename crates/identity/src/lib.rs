//! Pure identity rules for the `auth` component: argon2id password hashing and policy,
//! RFC 6238 TOTP, the lockout counter, the login and enrolment decisions with their audit
//! reasons, opaque refresh tokens, OAuth client authentication (RFC 6749 §2.3, RFC 7523
//! `private_key_jwt`), the per-tenant OIDC discovery document, and federation with a tenant's
//! OpenID provider (RFC 8693 token exchange).
//!
//! No I/O and no clock: time and randomness are parameters, so each rule is unit-tested
//! natively with a fixed clock. Storage lives in the glue (`health_spin::identity`).

pub mod client;
pub mod discovery;
pub mod federation;
pub mod form;
pub mod lockout;
pub mod login;
pub mod password;
pub mod refresh;
pub mod totp;
