//! Issuing access tokens (signed by `jwks`; for insurers also encrypted by `jwks` into a nested
//! JWE), refresh tokens in families, and revoking what a subject holds.

use anyhow::Context;
use health_core::audit::Event;
use health_core::{Caller, ClientId, Component, FamilyId, Link, Opaque, Reason, Role, TenantId, TokenId};
use health_jose::Claims;
use health_spin::{identity, revocations};
use spin_sdk::key_value::Store;
use spin_sdk::sqlite::Connection;

use crate::Ctx;

/// Who a token is for.
pub struct Subject {
    pub tenant: TenantId,
    pub sub: Opaque,
    pub role: Role,
    pub client_id: ClientId,
    pub amr: Vec<String>,
    pub auth_time: i64,
    /// A registered insurer's public encryption key, carried in its token (see `Claims::enc_jwk`).
    pub enc_jwk: Option<health_jose::PublicJwk>,
}

/// Whether a refresh token comes with the access token.
pub enum Refresh<'a> {
    None,
    /// A new session (login).
    NewFamily,
    /// The next token of a rotated family.
    Family(&'a FamilyId),
}

pub struct Issued {
    pub access_token: String,
    /// The access token's `jti` and `exp`, to revoke it if its family was revoked meanwhile.
    pub jti: TokenId,
    pub exp: i64,
    pub expires_in: i64,
    pub refresh_token: Option<String>,
    pub scope: &'static str,
}

pub fn scopes(role: Role) -> &'static str {
    match role {
        Role::Patient => "patient/records.read patient/results.read consents.write",
        Role::Doctor => "patient/records.read patient/records.write",
        Role::Lab => "lab/orders.read lab/results.write",
        Role::Insurance => "insurance/summary.read",
        Role::Admin => "admin/audit.read admin/users.write",
        Role::Nurse => "patient/records.read patient/results.read patient/observations.write",
        Role::Receptionist => "patient/demographics.read patient/demographics.write care-team.write",
        Role::Pharmacist => "patient/medications.read",
    }
}

/// Issues an access token (a nested JWE for `insurance`, never with a refresh token) and,
/// if asked, a refresh token; records the issuance on `event`.
pub async fn issue(
    ctx: &Ctx<'_>,
    db: &Connection,
    subject: &Subject,
    refresh: Refresh<'_>,
    event: &mut Event,
) -> anyhow::Result<Issued> {
    let now = ctx.now;
    let insurer = subject.role == Role::Insurance;
    let ttl = if insurer { ctx.settings.insurer_ttl } else { ctx.settings.access_ttl };
    // A token issued in the same second as a logout-all must still be newer than it.
    let iat =
        revocations::not_before(&revocations::open()?, &subject.tenant, &subject.sub)?.map_or(now, |nb| nb.max(now));
    let jti = health_spin::new_jti();
    let claims = Claims {
        iss: ctx.settings.issuer(&subject.tenant),
        sub: subject.sub.to_string(),
        aud: health_spin::tokens::AUDIENCE.into(),
        exp: iat + ttl,
        iat,
        nbf: iat,
        jti: jti.to_string(),
        tenant_id: subject.tenant.clone(),
        role: subject.role.as_str().into(),
        scope: scopes(subject.role).into(),
        client_id: subject.client_id.to_string(),
        amr: subject.amr.clone(),
        auth_time: subject.auth_time,
        enc_jwk: subject.enc_jwk.clone(),
    };
    let caller = Caller {
        tenant_id: claims.tenant_id.clone(),
        subject: subject.sub.clone(),
        role: subject.role,
        client_id: Some(subject.client_id.clone()),
        scopes: claims.scope.split(' ').map(str::to_owned).collect(),
        jti: jti.clone(),
        enc_jwk: None,
    };
    let signed: Signed = call(&caller, "/internal/sign", &claims, now).await?;
    event.kid = Some(signed.kid);
    let access_token = if insurer {
        let body = serde_json::json!({ "plaintext": signed.token, "cty": "JWT" });
        let encrypted: Encrypted = call(&caller, "/internal/encrypt", &body, now).await?;
        encrypted.jwe
    } else {
        signed.token
    };
    event.jti = Some(claims.jti.clone());
    event.actor_sub = Some(subject.sub.to_string());
    event.actor_role = Some(subject.role.as_str().into());
    event.client_id = Some(subject.client_id.to_string());
    let family = match refresh {
        _ if insurer => None,
        Refresh::None => None,
        Refresh::Family(id) => Some(id.clone()),
        Refresh::NewFamily => {
            let family = identity::Family {
                family_id: health_spin::new_family_id(),
                tenant_id: subject.tenant.clone(),
                user_id: subject.sub.clone(),
                client_id: subject.client_id.clone(),
                amr: subject.amr.clone(),
                auth_time: subject.auth_time,
                created_at: now,
                expires_at: now + ctx.settings.refresh_ttl,
                revoked: false,
            };
            identity::create_family(db, &family)?;
            Some(family.family_id)
        }
    };
    let refresh_token = match family {
        None => None,
        Some(family_id) => {
            let (token, hash) = health_identity::refresh::generate(&mut health_spin::rng());
            identity::add_refresh(db, &hash, &family_id, now, &jti, claims.exp)?;
            Some(token)
        }
    };
    Ok(Issued {
        access_token,
        jti,
        exp: claims.exp,
        expires_in: claims.exp - now,
        refresh_token,
        scope: scopes(subject.role),
    })
}

impl Issued {
    /// The RFC 6749 §5.1 token response.
    pub fn response(&self) -> spin_sdk::http::Response {
        let mut body = serde_json::json!({
            "access_token": self.access_token,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
            "scope": self.scope,
        });
        if let Some(refresh) = &self.refresh_token {
            body["refresh_token"] = refresh.clone().into();
        }
        health_spin::respond::json(200, &body, health_spin::respond::Cache::NoStore)
    }
}

#[derive(serde::Deserialize)]
struct Signed {
    token: String,
    kid: String,
}

#[derive(serde::Deserialize)]
struct Encrypted {
    jwe: String,
}

async fn call<T: serde::de::DeserializeOwned>(
    caller: &Caller,
    path: &str,
    body: &impl serde::Serialize,
    now: i64,
) -> anyhow::Result<T> {
    let link = Link::new(Component::Auth, Component::Jwks).context("no link from auth to jwks")?;
    let response = health_spin::chain::post_json(link, path, serde_json::to_vec(body)?, caller, now).await?;
    anyhow::ensure!(*response.status() == 200, "jwks refused {path}: status {}", response.status());
    serde_json::from_slice(response.body()).with_context(|| format!("decoding jwks {path} answer"))
}

/// Revokes one access token for its remaining life: the stored time is the moment it would
/// be refused anyway (`exp` plus the largest clock tolerance), after which a sweep may drop it.
pub fn revoke_jti(store: &Store, tenant: &TenantId, jti: &TokenId, exp: i64) -> anyhow::Result<()> {
    revocations::revoke_jti(store, tenant, jti, exp + health_jose::MAX_CLOCK_TOLERANCE_SECS)
}

/// Revokes a refresh family and every access token issued in it that may still be valid.
pub fn revoke_family(
    db: &Connection,
    tenant: &TenantId,
    family_id: &FamilyId,
    reason: Reason,
    now: i64,
) -> anyhow::Result<()> {
    let store = revocations::open()?;
    for (jti, exp) in identity::revoke_family(db, family_id, reason, now)? {
        revoke_jti(&store, tenant, &jti, exp)?;
    }
    Ok(())
}

/// Ends every session of a subject: a not-before time newer than any token it holds, and all
/// its refresh families revoked (logout-all, password reset, disabling, MFA reset).
pub fn revoke_subject(
    db: &Connection,
    tenant: &TenantId,
    sub: &Opaque,
    reason: Reason,
    now: i64,
) -> anyhow::Result<()> {
    revocations::log_out_subject(&revocations::open()?, tenant, sub, now)?;
    for family in identity::user_families(db, tenant, sub)? {
        identity::revoke_family(db, &family, reason, now)?;
    }
    Ok(())
}
