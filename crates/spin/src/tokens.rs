//! Bearer access tokens as every public entry point checks them: the §4 verification of
//! `health-jose` against the tenant's keys in `public-keys`, then the store-backed steps
//! (`jti` revocation and per-subject not-before in `revocations`, checked by
//! [`crate::revocations`]), and the one-time ledger that spends an insurer's token
//! ([`spend_once_on`], decided by one SQL insert however many try at once). The component must
//! declare both stores and the `clock_tolerance_secs` and `access_token_ttl_secs` variables.

use anyhow::Context;
use health_core::{ClientId, Opaque, Reason, TokenId};
use health_jose::{Claims, TenantKeys, VerifyOptions};
use spin_sdk::http::Request;
use spin_sdk::key_value::Store;

use crate::revocations;

/// Size cap on the whole compact token (ARCHITECTURE.md §4).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Size cap on the Authorization header value, a little above the token cap.
pub const MAX_AUTHORIZATION: usize = MAX_TOKEN_BYTES + 16;
/// The `aud` every platform access token carries.
pub const AUDIENCE: &str = "health-platform";

/// A verified token's subject, client id and `jti` as the platform's id types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenIds {
    pub sub: Opaque,
    /// `None` for a token without one (not a claim every token must carry).
    pub client_id: Option<ClientId>,
    pub jti: TokenId,
}

/// The ids of verified `claims`, typed. `auth` issues tokens only for ids the platform mints, so
/// a token whose ids do not parse was not issued here (a tenant's key signing elsewhere): it is
/// refused, `bad_claims`. Callers take this step after their own checks of the token, so the
/// reason they give for those (an insurer token not encrypted, say) is unchanged.
pub fn ids(claims: &Claims) -> Result<TokenIds, Reason> {
    let client_id = match claims.client_id.as_str() {
        "" => None,
        id => Some(ClientId::parse(id).map_err(|_| Reason::BadClaims)?),
    };
    Ok(TokenIds {
        sub: Opaque::parse(&claims.sub).map_err(|_| Reason::BadClaims)?,
        client_id,
        jti: TokenId::parse(&claims.jti).map_err(|_| Reason::BadClaims)?,
    })
}

/// `Bearer <token>` (scheme case-insensitive, RFC 6750 §2.1).
pub fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && !token.contains(' ')).then_some(token)
}

/// The bearer token of a request: exactly one `Authorization` header, within the size cap.
/// The error is the precise reason for the audit log.
pub fn bearer_token(req: &Request) -> Result<&str, Reason> {
    let mut values = req.headers().filter(|(name, _)| name.eq_ignore_ascii_case("authorization"));
    let (Some((_, value)), None) = (values.next(), values.next()) else {
        return Err(Reason::MissingOrRepeatedAuthorization);
    };
    if value.as_bytes().len() > MAX_AUTHORIZATION {
        return Err(Reason::TokenTooLarge);
    }
    value.as_str().and_then(bearer).ok_or(Reason::NotABearerToken)
}

/// Verification settings from the component's variables.
pub fn options() -> anyhow::Result<VerifyOptions> {
    Ok(VerifyOptions {
        audience: AUDIENCE.into(),
        tolerance_secs: crate::var_i64("clock_tolerance_secs")?,
        max_lifetime_secs: crate::var_i64("access_token_ttl_secs")?,
        max_token_bytes: MAX_TOKEN_BYTES,
    })
}

fn tenant_key_name(tenant: &health_core::TenantId) -> String {
    format!("tenant/{tenant}")
}

/// Whether `jwks` has created the tenant (its key set exists), without reading the set.
pub fn tenant_exists(tenant: &health_core::TenantId) -> anyhow::Result<bool> {
    let public = Store::open("public-keys").context("opening public-keys")?;
    public.exists(&tenant_key_name(tenant)).context("checking tenant keys")
}

/// The tenant's key set as `jwks` stores it, if the tenant exists.
pub fn tenant_keys(tenant: &health_core::TenantId) -> anyhow::Result<Option<TenantKeys>> {
    let public = Store::open("public-keys").context("opening public-keys")?;
    let Some(bytes) = public.get(&tenant_key_name(tenant)).context("reading tenant keys")? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes).context("decoding tenant keys").map(Some)
}

/// Verifies `token` at `now` in the full order of ARCHITECTURE.md §4. `Err` is a platform
/// fault; `Ok(Err(reason))` a refused token with the reason for the audit log.
///
/// A token verified in full once is remembered by its SHA-256 in `verified_tokens` (in the
/// `audit` database) until it expires, so its next uses skip parsing and the signature check,
/// which dominate a request in Wasm. Everything that can change is checked on every use all the
/// same: the clock, the key's status in the tenant's current key set (a revoked or retired key
/// refuses the token at once), the `jti` revocation and the subject's not-before. Only a full
/// verification writes an entry, and only this exact token can find it.
pub fn verify(token: &str, now: i64) -> anyhow::Result<Result<Claims, Reason>> {
    verify_and(token, now, Remember::Yes)
}

/// Whether a fully verified token is remembered for its next uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remember {
    Yes,
    /// The token cannot be used again (the inner token of a one-time nested JWE): remembering it
    /// would cost a write for nothing.
    No,
}

/// [`verify`], choosing whether to remember the token.
pub fn verify_and(token: &str, now: i64, remember_it: Remember) -> anyhow::Result<Result<Claims, Reason>> {
    let opts = options()?;
    let conn = crate::audit::open()?;
    let hash = health_core::sha256_hex(token);
    let claims = match cached(&conn, &hash)? {
        Some((kid, claims)) => {
            let Some(keys) = tenant_keys(&claims.tenant_id)? else {
                return Ok(Err(Reason::UnknownTenant));
            };
            if let Err(e) = health_jose::recheck(&claims, &kid, &keys, now, &opts) {
                return Ok(Err(e.reason()));
            }
            claims
        }
        None => {
            let tenant = match health_jose::peek_tenant(token, &opts) {
                Ok(tenant) => tenant,
                Err(e) => return Ok(Err(e.reason())),
            };
            let Some(keys) = tenant_keys(&tenant)? else {
                return Ok(Err(Reason::UnknownTenant));
            };
            let (claims, kid) = match health_jose::verify_keyed(token, &keys, now, &opts) {
                Ok(verified) => verified,
                Err(e) => return Ok(Err(e.reason())),
            };
            if remember_it == Remember::Yes
                && let Err(e) = remember(&conn, &hash, &kid, &claims, now)
            {
                // Only a cache: the token was verified in full, so the request goes on.
                crate::log::warn("token_cache_write_failed", format!("{e:#}"));
            }
            claims
        }
    };
    let token = revocations::Token { tenant: &claims.tenant_id, jti: &claims.jti, sub: &claims.sub, iat: claims.iat };
    if let Some(revoked) = revocations::check(&revocations::open()?, &token, now)? {
        return Ok(Err(revoked.reason()));
    }
    Ok(Ok(claims))
}

/// The `kid` and claims remembered for a token hash, if any.
fn cached(conn: &spin_sdk::sqlite::Connection, hash: &str) -> anyhow::Result<Option<(String, Claims)>> {
    use spin_sdk::sqlite::Value;
    const GET: &str = "SELECT kid, claims FROM verified_tokens WHERE token_hash = ?";
    let rows = conn.execute(GET, &[Value::Text(hash.to_owned())]).context("reading verified tokens")?;
    let Some(row) = rows.rows().next() else {
        return Ok(None);
    };
    let kid = row.get::<&str>("kid").context("cached kid")?.to_owned();
    let claims =
        serde_json::from_str(row.get::<&str>("claims").context("cached claims")?).context("decoding cached claims")?;
    Ok(Some((kid, claims)))
}

/// Remembers a fully verified token until it expires (plus the largest clock tolerance), and
/// sweeps entries past theirs, so the table holds only live tokens.
fn remember(
    conn: &spin_sdk::sqlite::Connection,
    hash: &str,
    kid: &str,
    claims: &Claims,
    now: i64,
) -> anyhow::Result<()> {
    use spin_sdk::sqlite::Value;
    const SWEEP: &str = "DELETE FROM verified_tokens WHERE expires_at < ?";
    const PUT: &str =
        "INSERT OR REPLACE INTO verified_tokens (token_hash, kid, claims, expires_at) VALUES (?, ?, ?, ?)";
    conn.execute(SWEEP, &[Value::Integer(now)]).context("sweeping verified tokens")?;
    let params = [
        Value::Text(hash.to_owned()),
        Value::Text(kid.to_owned()),
        Value::Text(serde_json::to_string(claims)?),
        Value::Integer(claims.exp.saturating_add(60)),
    ];
    conn.execute(PUT, &params).context("remembering a verified token")?;
    Ok(())
}

/// Spends a one-time token (ARCHITECTURE.md §4, insurer tokens): `true` only for the one
/// request whose insert recorded its `jti`, however many arrive at once. Spin's key-value
/// interface has no compare-and-set, so the ledger is a table with the `jti` as primary key in
/// the `audit` database (an append-only record of token use beside the events). Entries past
/// their token's expiry are swept, since such a token is refused before it gets here.
pub fn spend_once(tenant: &health_core::TenantId, jti: &str, exp: i64, now: i64) -> anyhow::Result<bool> {
    spend_once_on(&*crate::audit::open()?, tenant, jti, exp, now)
}

/// [`spend_once`] on an open connection. Who won is the `RETURNING` row, never an error's
/// text. A failed try is repeated: either it inserted nothing (SQLite), or, over a remote
/// backend whose answer was lost, it did and the repeat finds the `jti` spent and refuses: a
/// refusal, never a second use.
pub fn spend_once_on<C: crate::db::Sql>(
    conn: &C,
    tenant: &health_core::TenantId,
    jti: &str,
    exp: i64,
    now: i64,
) -> anyhow::Result<bool> {
    use spin_sdk::sqlite::Value;
    const SWEEP: &str = "DELETE FROM spent_tokens WHERE expires_at < ?";
    const SPEND: &str = "INSERT INTO spent_tokens (jti, tenant_id, spent_at, expires_at) VALUES (?, ?, ?, ?)
        ON CONFLICT DO NOTHING RETURNING jti";
    let params =
        [Value::Text(jti.to_owned()), Value::Text(tenant.to_string()), Value::Integer(now), Value::Integer(exp)];
    crate::db::Retry::WRITE.run("spending a one-time token", || {
        conn.execute(SWEEP, &[Value::Integer(now - 120)]).context("sweeping spent tokens")?;
        let spent = conn.execute(SPEND, &params).context("spending one-time token")?;
        Ok(Some(spent.rows().next().is_some()))
    })
}

/// The key names of `revocations`, kept here for the components that write it; new code uses
/// [`revocations`] itself.
pub use crate::revocations::{not_before_key, revoked_jti_key};

#[cfg(test)]
mod tests {
    use super::{bearer, ids, spend_once_on};
    use health_core::Reason;

    fn claims(sub: &str, client_id: &str, jti: &str) -> health_jose::Claims {
        health_jose::Claims {
            iss: "https://h.example/t/demo".into(),
            sub: sub.into(),
            aud: "health-platform".into(),
            exp: 2,
            iat: 1,
            nbf: 1,
            jti: jti.into(),
            tenant_id: health_core::TenantId::parse("demo").expect("tenant"),
            role: "patient".into(),
            scope: String::new(),
            client_id: client_id.into(),
            amr: Vec::new(),
            auth_time: 1,
            enc_jwk: None,
        }
    }

    #[test]
    fn a_tokens_ids_are_typed_and_ids_the_platform_never_mints_are_bad_claims() {
        let typed = ids(&claims("u-alice", "health-web", "-Ab_9")).expect("ids");
        assert_eq!(
            (typed.sub.as_str(), typed.client_id.as_ref().map(|c| c.as_str()), typed.jti.as_str()),
            ("u-alice", Some("health-web"), "-Ab_9")
        );
        assert_eq!(ids(&claims("u-alice", "", "j")).expect("no client id").client_id, None);
        for (sub, client_id, jti) in [("client/acme", "web", "j"), ("u-a", "we b", "j"), ("u-a", "web", "j.1")] {
            assert_eq!(ids(&claims(sub, client_id, jti)), Err(Reason::BadClaims), "{sub} {client_id} {jti}");
        }
    }
    use crate::db::{self, testing::Native};

    #[test]
    fn a_one_time_token_is_spent_by_exactly_one_of_many_concurrent_uses() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.db");
        let db = Native::open(&path);
        db::migrate(&db, crate::audit::MIGRATIONS, |_| Ok(())).expect("migrates");
        let tenant = health_core::TenantId::parse("demo-hospital").expect("tenant");
        let wins = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..16 {
                scope.spawn(|| {
                    let db = Native::open(&path);
                    db::configure(&db);
                    if spend_once_on(&db, &tenant, "jti-1", 2_000, 1_000).expect("no error") {
                        wins.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                });
            }
        });
        assert_eq!(wins.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(spend_once_on(&db, &tenant, "jti-2", 2_000, 1_000).expect("no error"), "another jti is fresh");
    }

    #[test]
    fn a_spent_token_stays_spent_until_two_minutes_past_its_expiry_then_is_swept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Native::open(&dir.path().join("audit.db"));
        db::migrate(&db, crate::audit::MIGRATIONS, |_| Ok(())).expect("migrates");
        let tenant = health_core::TenantId::parse("demo-hospital").expect("tenant");
        let exp = 1_000;
        assert!(spend_once_on(&db, &tenant, "jti-1", exp, 900).expect("spends"));
        for now in [900, exp, exp + 120] {
            assert!(!spend_once_on(&db, &tenant, "jti-1", exp, now).expect("no error"), "replayed at {now}");
        }
        assert!(spend_once_on(&db, &tenant, "jti-2", exp + 500, exp + 120).expect("spends"));
        assert_eq!(db.integer("SELECT COUNT(*) FROM spent_tokens"), 2, "nothing swept before exp + 120");
        // Past `exp` + 120 s the token is refused for its expiry long before it is spent, so its
        // entry goes with the next spend of any token, and the ledger holds only live ones.
        assert!(spend_once_on(&db, &tenant, "jti-3", exp + 600, exp + 121).expect("spends"));
        assert_eq!(db.text("SELECT group_concat(jti) FROM (SELECT jti FROM spent_tokens ORDER BY jti)"), "jti-2,jti-3");
    }

    #[test]
    fn a_ledger_that_cannot_be_written_is_an_error_never_a_first_use() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Native::open(&dir.path().join("audit.db"));
        let tenant = health_core::TenantId::parse("demo-hospital").expect("tenant");
        // No schema: every try fails, and the gateway refuses the request.
        let error = spend_once_on(&db, &tenant, "jti-1", 2_000, 1_000).expect_err("not spent");
        assert!(format!("{error:#}").contains("spending a one-time token: failed 4 times"), "{error:#}");
    }

    #[test]
    fn accepts_only_well_formed_bearer_credentials() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer abc"), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("Bearer a b"), None);
        assert_eq!(bearer("Bearerabc"), None);
    }
}
