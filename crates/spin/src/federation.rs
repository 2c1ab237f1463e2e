//! Federation's storage and outbound HTTP (issue 17): each tenant's provider settings and the
//! identities linked to its users, in the `identity` database; the provider's JWK Set fetched
//! over `spin_sdk::http::send` (the discovery document's `jwks_uri` followed when the tenant
//! gives a discovery URL) and cached in the `revocations` key-value store under
//! `federation/jwks/{tenant}` for its HTTP cache lifetime. When to fetch is
//! `health_identity::federation::plan`'s decision: an unknown `kid` refetches once per
//! cooldown, and a provider that does not answer leaves the cached set in use.
//!
//! The cache lives in `revocations` (auth's writable key-value store, which nothing lists)
//! rather than a store of its own, so backups, the cloud runtime configuration and the store
//! probe need nothing new: an entry is a cache, safe to lose.

use std::time::Duration;

use anyhow::Context;
use health_core::{Opaque, TenantId};
use health_identity::federation::{self as decide, CachedJwks, Plan, ProviderSettings, TenantKeys};
use spin_sdk::http::{Method, Request, Response};

use crate::db::{Sql, Step};
use crate::identity::{first, stored, text};
use crate::issuers::{self, Accepting};
use crate::kv::Kv;

/// The `identity` schema's version 3: a tenant's provider settings (JSON, as the admin API
/// takes them) and the provider identities linked to local users.
pub(crate) const VERSION_3: &[Step<'static>] = &[
    Step::Sql(
        "CREATE TABLE IF NOT EXISTS federation (
        tenant_id TEXT PRIMARY KEY,
        settings TEXT NOT NULL,
        updated_at INTEGER NOT NULL
    )",
    ),
    Step::Sql(
        "CREATE TABLE IF NOT EXISTS federated_identities (
        tenant_id TEXT NOT NULL,
        external_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        linked_at INTEGER NOT NULL,
        PRIMARY KEY (tenant_id, external_id),
        UNIQUE (tenant_id, user_id)
    )",
    ),
];

/// How long a provider has to answer one request.
const FETCH_DEADLINE: Duration = Duration::from_secs(5);
/// Largest discovery document or JWK Set read.
const MAX_DOCUMENT_BYTES: usize = 64 * 1024;

/// The tenant's provider settings, if any were stored.
pub fn settings(conn: &impl Sql, tenant: &TenantId) -> anyhow::Result<Option<ProviderSettings>> {
    const SELECT: &str = "SELECT settings FROM federation WHERE tenant_id = ?";
    let rows = conn.execute(SELECT, &[text(tenant.as_str())]).context("reading federation settings")?;
    let Some(row) = first(&rows) else { return Ok(None) };
    let json = row.get::<&str>("settings").context("federation row without settings")?;
    serde_json::from_str(json).map(Some).context("stored federation settings")
}

/// Stores the tenant's provider settings, replacing any.
pub fn set_settings(conn: &impl Sql, tenant: &TenantId, settings: &ProviderSettings, now: i64) -> anyhow::Result<()> {
    const UPSERT: &str = "INSERT INTO federation (tenant_id, settings, updated_at) VALUES (?, ?, ?)
        ON CONFLICT (tenant_id) DO UPDATE SET settings = excluded.settings, updated_at = excluded.updated_at";
    let json = serde_json::to_string(settings).context("encoding federation settings")?;
    conn.execute(UPSERT, &[text(tenant.as_str()), text(json), spin_sdk::sqlite::Value::Integer(now)])
        .context("writing federation settings")?;
    Ok(())
}

/// Links `external_id` (normalised) to the tenant's user, replacing the user's previous link;
/// `false` if another user of the tenant holds that identity.
pub fn link(conn: &impl Sql, tenant: &TenantId, external_id: &str, user: &Opaque, now: i64) -> anyhow::Result<bool> {
    const HOLDER: &str = "SELECT user_id FROM federated_identities WHERE tenant_id = ? AND external_id = ?";
    const UNLINK: &str = "DELETE FROM federated_identities WHERE tenant_id = ? AND user_id = ?";
    const INSERT: &str =
        "INSERT INTO federated_identities (tenant_id, external_id, user_id, linked_at) VALUES (?, ?, ?, ?)";
    crate::db::transaction(conn, |conn| {
        let rows = conn.execute(HOLDER, &[text(tenant.as_str()), text(external_id)]).context("reading link")?;
        if let Some(row) = first(&rows) {
            return Ok(stored(&row, "user_id", Opaque::parse)? == *user);
        }
        conn.execute(UNLINK, &[text(tenant.as_str()), text(user.as_str())]).context("unlinking")?;
        let params =
            [text(tenant.as_str()), text(external_id), text(user.as_str()), spin_sdk::sqlite::Value::Integer(now)];
        conn.execute(INSERT, &params).context("linking")?;
        Ok(true)
    })
}

/// The user an identity is linked to in the tenant.
pub fn linked_user(conn: &impl Sql, tenant: &TenantId, external_id: &str) -> anyhow::Result<Option<Opaque>> {
    const SELECT: &str = "SELECT user_id FROM federated_identities WHERE tenant_id = ? AND external_id = ?";
    let rows = conn.execute(SELECT, &[text(tenant.as_str()), text(external_id)]).context("reading link")?;
    first(&rows).map(|row| stored(&row, "user_id", Opaque::parse)).transpose()
}

/// The identity linked to a user, if any (shown in the user list).
pub fn external_id(conn: &impl Sql, tenant: &TenantId, user: &Opaque) -> anyhow::Result<Option<String>> {
    const SELECT: &str = "SELECT external_id FROM federated_identities WHERE tenant_id = ? AND user_id = ?";
    let rows = conn.execute(SELECT, &[text(tenant.as_str()), text(user.as_str())]).context("reading link")?;
    Ok(first(&rows).and_then(|row| row.get::<&str>("external_id").map(str::to_owned)))
}

/// Every tenant's provider settings.
pub fn all_settings(conn: &impl Sql) -> anyhow::Result<Vec<(TenantId, ProviderSettings)>> {
    const SELECT: &str = "SELECT tenant_id, settings FROM federation ORDER BY tenant_id";
    let rows = conn.execute(SELECT, &[]).context("reading federation settings")?;
    rows.rows()
        .map(|row| {
            let tenant = stored(&row, "tenant_id", TenantId::parse)?;
            let json = row.get::<&str>("settings").context("federation row without settings")?;
            Ok((tenant, serde_json::from_str(json).context("stored federation settings")?))
        })
        .collect()
}

/// Rewrites `issuer`'s entry in the routing of provider access tokens (`crate::issuers`) from the stored settings (after they changed): every tenant whose
/// provider is enabled, has that issuer and accepts its access tokens. Written whole each time,
/// so an entry a concurrent change left behind is corrected by the next one.
pub fn publish_issuer(kv: &impl Kv, conn: &impl Sql, issuer: &str) -> anyhow::Result<()> {
    let accepting: Vec<Accepting> = all_settings(conn)?
        .into_iter()
        .filter(|(_, s)| s.enabled && s.accept_provider_tokens && s.issuer == issuer)
        .map(|(tenant, s)| Accepting { tenant, audience: s.audience })
        .collect();
    if accepting.is_empty() {
        kv.delete(&issuers::key(issuer))
    } else {
        kv.set(&issuers::key(issuer), &serde_json::to_vec(&accepting)?)
    }
}

// ---- back-channel logout -------------------------------------------------------------------
//
// A logout token names the provider's `sub` and/or `sid`, not the claim identities are linked
// by (an email, by default), so each exchange remembers which local user the provider's `sub`
// and `sid` signed in as, in `revocations` beside the JWK Set cache (no schema change; an entry
// is rewritten at every exchange). A lost entry costs what the platform's own tokens cost
// without a logout: the user's tokens run to their expiry; the next exchange writes it again.

/// Longest provider `sub` or `sid` remembered (longer ones are not, and cannot be logged out
/// by name; providers use far shorter ones).
const MAX_REMEMBERED_BYTES: usize = 256;

fn rememberable(value: &str) -> bool {
    !value.is_empty() && value.len() <= MAX_REMEMBERED_BYTES && !value.chars().any(char::is_control)
}

/// Key of the local user the provider's `sub` last signed in as.
pub fn subject_key(tenant: &TenantId, sub: &str) -> String {
    format!("federation/sub/{tenant}/{sub}")
}

/// Key of the local user the provider's session `sid` signed in as.
pub fn session_key(tenant: &TenantId, sid: &str) -> String {
    format!("federation/sid/{tenant}/{sid}")
}

/// Key marking a logout token's `jti` as received; the value is until when it matters.
pub fn logout_jti_key(tenant: &TenantId, jti: &str) -> String {
    format!("federation/logout-jti/{tenant}/{jti}")
}

/// Remembers that the provider's `sub` (and session `sid`, if the token named one) signed in
/// as `user`, for a later back-channel logout.
pub fn remember_sign_in(
    kv: &impl Kv,
    tenant: &TenantId,
    sub: &str,
    sid: Option<&str>,
    user: &Opaque,
) -> anyhow::Result<()> {
    if rememberable(sub) {
        kv.set(&subject_key(tenant, sub), user.as_str().as_bytes())?;
    }
    if let Some(sid) = sid.filter(|sid| rememberable(sid)) {
        kv.set(&session_key(tenant, sid), user.as_str().as_bytes())?;
    }
    Ok(())
}

/// The local users a logout token's `sub` and `sid` signed in as (none, one, or two if they
/// disagree: both are logged out).
pub fn signed_in_users(
    kv: &impl Kv,
    tenant: &TenantId,
    sub: Option<&str>,
    sid: Option<&str>,
) -> anyhow::Result<Vec<Opaque>> {
    let mut users = Vec::new();
    let keys = [
        sub.filter(|s| rememberable(s)).map(|s| subject_key(tenant, s)),
        sid.filter(|s| rememberable(s)).map(|s| session_key(tenant, s)),
    ];
    for key in keys.into_iter().flatten() {
        let Some(bytes) = kv.get(&key)? else { continue };
        let user = std::str::from_utf8(&bytes).ok().and_then(|id| Opaque::parse(id).ok());
        let user = user.with_context(|| format!("stored user of {key:?}"))?;
        if !users.contains(&user) {
            users.push(user);
        }
    }
    Ok(users)
}

/// Records a logout token's `jti` as received; `false` if it already was (a replay). Without
/// compare-and-set two deliveries of one token at the same instant may both pass: a logout
/// done twice ends nothing more.
pub fn first_delivery(kv: &impl Kv, tenant: &TenantId, jti: &str, until: i64) -> anyhow::Result<bool> {
    let key = logout_jti_key(tenant, jti);
    if kv.get(&key)?.is_some() {
        return Ok(false);
    }
    kv.set(&key, until.to_string().as_bytes())?;
    Ok(true)
}

// ---- browser sign-in (issue 17 item 5) ------------------------------------------------------
//
// A sign-in started at `/auth/federation/{tenant}/authorize` is kept in `revocations` under its
// `state` until its callback takes it (once: read, then deleted) or it expires
// (`decide::SIGN_IN_TTL_SECS`, checked when taken). The `state` is 128 random bits, so the key
// names nothing guessable.

/// A sign-in between `/authorize` and its callback.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PendingSignIn {
    pub tenant: TenantId,
    pub nonce: String,
    pub code_verifier: String,
    pub redirect_uri: String,
    pub return_to: String,
    pub expires_at: i64,
    /// SHA-256 (hex) of the random value the browser that started the sign-in holds in a
    /// cookie: a callback from another browser (an attacker's code and state, sent to a victim
    /// to sign them in as the attacker) is refused.
    pub browser_hash: String,
}

fn sign_in_key(state: &str) -> String {
    format!("federation/signin/{state}")
}

/// Whether `state` could be one [`start_sign_in`] was given (base64url, at most 64 characters).
fn plausible_state(state: &str) -> bool {
    !state.is_empty() && state.len() <= 64 && state.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Keeps a started sign-in under its `state`.
pub fn start_sign_in(kv: &impl Kv, state: &str, pending: &PendingSignIn) -> anyhow::Result<()> {
    anyhow::ensure!(plausible_state(state), "a sign-in state is base64url");
    kv.set(&sign_in_key(state), &serde_json::to_vec(pending)?)
}

/// Takes the sign-in `state` names: `None` if unknown, already taken, or expired. Without
/// compare-and-set two callbacks with one `state` at the same instant may both read it; each
/// still needs the provider to redeem the one code, which it does once.
pub fn take_sign_in(kv: &impl Kv, state: &str, now: i64) -> anyhow::Result<Option<PendingSignIn>> {
    if !plausible_state(state) {
        return Ok(None);
    }
    let key = sign_in_key(state);
    let Some(bytes) = kv.get(&key)? else { return Ok(None) };
    kv.delete(&key)?;
    let pending: Option<PendingSignIn> = serde_json::from_slice(&bytes).ok();
    Ok(pending.filter(|p| p.expires_at > now))
}

/// The provider's endpoints a browser sign-in uses, from its discovery document.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Endpoints {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
}

/// The tenant's provider's authorization and token endpoints (OIDC Discovery 1.0), its
/// document's issuer the one configured exactly; a tenant configured with only a `jwks_uri`
/// has none to offer.
pub async fn endpoints(settings: &ProviderSettings) -> anyhow::Result<Endpoints> {
    let discovery = settings.discovery_url.as_deref().context("the provider is configured without discovery")?;
    let (body, _) = get(discovery).await?;
    let doc: Endpoints = serde_json::from_slice(&body).context("decoding the discovery document")?;
    anyhow::ensure!(doc.issuer == settings.issuer, "the discovery document names issuer {:?}", doc.issuer);
    let http = |url: &str| url.starts_with("https://") || url.starts_with("http://");
    anyhow::ensure!(
        http(&doc.authorization_endpoint) && http(&doc.token_endpoint),
        "the discovery document's endpoints are not http(s) URLs"
    );
    Ok(doc)
}

/// Redeems an authorization code at the provider's token endpoint (OIDC Core §3.1.3.1, a
/// public client proving PKCE): the ID token of a 200 answer, or why not.
pub async fn redeem_code(token_endpoint: &str, form: &[(&str, &str)]) -> anyhow::Result<String> {
    let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
    let request = Request::builder()
        .method(Method::Post)
        .uri(token_endpoint)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("accept", "application/json")
        .body(body.into_bytes())
        .build();
    let sent = crate::deadline::within(FETCH_DEADLINE, spin_sdk::http::send::<_, Response>(request))
        .await
        .map_err(|_| anyhow::anyhow!("{token_endpoint}: no answer within {FETCH_DEADLINE:?}"))?;
    let response = sent.with_context(|| format!("POST {token_endpoint}"))?;
    anyhow::ensure!(response.body().len() <= MAX_DOCUMENT_BYTES, "the token response is too large");
    anyhow::ensure!(
        *response.status() == 200,
        "POST {token_endpoint}: status {}: {}",
        response.status(),
        String::from_utf8_lossy(response.body()).chars().take(200).collect::<String>()
    );
    #[derive(serde::Deserialize)]
    struct TokenResponse {
        id_token: String,
    }
    let answer: TokenResponse = serde_json::from_slice(response.body()).context("a token response without id_token")?;
    Ok(answer.id_token)
}

/// The key-value entry of a tenant's cached JWK Set.
pub fn cache_key(tenant: &TenantId) -> String {
    format!("federation/jwks/{tenant}")
}

/// Where the keys came from, for the audit event and the tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Cache,
    Fetched,
    /// The provider did not answer (or answered nonsense); the cached set was used.
    StaleCache,
}

/// The provider's keys to verify `token` with: from the cache or fetched as [`decide::plan`]
/// says; `None` when nothing was fetched and nothing is cached.
pub async fn provider_keys(
    kv: &impl Kv,
    tenant: &TenantId,
    settings: &ProviderSettings,
    token: &str,
    now: i64,
    cooldown_secs: i64,
) -> anyhow::Result<Option<(TenantKeys, Source)>> {
    let key = cache_key(tenant);
    let cached: Option<CachedJwks> = kv.get(&key)?.and_then(|bytes| serde_json::from_slice(&bytes).ok());
    let keys_of = |c: &CachedJwks| decide::provider_keys(c.jwks.as_bytes(), tenant, &settings.issuer);
    let source = settings.key_source();
    let kid = decide::peek_kid(token);
    let kid_known = cached
        .as_ref()
        .filter(|c| c.source == source)
        .and_then(keys_of)
        .is_some_and(|keys| kid.as_deref().is_some_and(|kid| keys.find(kid).is_some()));
    let usable = cached.filter(|c| c.source == source);
    if decide::plan(usable.as_ref(), source, kid_known, now, cooldown_secs) == Plan::UseCached {
        return Ok(usable.as_ref().and_then(keys_of).map(|keys| (keys, Source::Cache)));
    }
    match fetch(settings).await {
        Ok((jwks, fresh)) => {
            let keys = decide::provider_keys(jwks.as_bytes(), tenant, &settings.issuer);
            if let Some(keys) = keys {
                let entry = CachedJwks {
                    source: source.to_owned(),
                    jwks,
                    fetched_at: now,
                    fresh_until: now + fresh,
                    attempted_at: now,
                };
                kv.set(&key, &serde_json::to_vec(&entry)?)?;
                return Ok(Some((keys, Source::Fetched)));
            }
            crate::log::warn("provider_jwks_unusable", "the provider's JWK Set is not a JWK Set");
        }
        Err(e) => crate::log::warn("provider_unreachable", format!("{e:#}")),
    }
    // Whatever went wrong, the cooldown counts from this attempt: with nothing cached, an entry
    // holding no keys, so a flood of tokens while the provider is down costs it one request per
    // cooldown too.
    let entry = match usable {
        Some(entry) => CachedJwks { attempted_at: now, ..entry },
        None => CachedJwks {
            source: source.to_owned(),
            jwks: String::new(),
            fetched_at: 0,
            fresh_until: 0,
            attempted_at: now,
        },
    };
    kv.set(&key, &serde_json::to_vec(&entry)?)?;
    Ok(keys_of(&entry).map(|keys| (keys, Source::StaleCache)))
}

/// Fetches the JWK Set (through discovery when configured): its text and freshness in seconds.
async fn fetch(settings: &ProviderSettings) -> anyhow::Result<(String, i64)> {
    let jwks_uri = match (&settings.jwks_uri, &settings.discovery_url) {
        (Some(uri), _) => uri.clone(),
        (None, Some(discovery)) => {
            let (body, _) = get(discovery).await?;
            #[derive(serde::Deserialize)]
            struct Discovery {
                issuer: String,
                jwks_uri: String,
            }
            let doc: Discovery = serde_json::from_slice(&body).context("decoding the discovery document")?;
            // OIDC Discovery §4.3: the document's issuer is the one configured, exactly.
            anyhow::ensure!(doc.issuer == settings.issuer, "the discovery document names issuer {:?}", doc.issuer);
            anyhow::ensure!(
                doc.jwks_uri.starts_with("https://") || doc.jwks_uri.starts_with("http://"),
                "the discovery document's jwks_uri is not an http(s) URL"
            );
            doc.jwks_uri
        }
        (None, None) => anyhow::bail!("no key source configured"),
    };
    let (body, cache_control) = get(&jwks_uri).await?;
    let text = String::from_utf8(body).context("the JWK Set is not UTF-8")?;
    Ok((text, decide::fresh_secs(cache_control.as_deref())))
}

/// GETs `url`: the body of a 200 answer and its `Cache-Control`.
async fn get(url: &str) -> anyhow::Result<(Vec<u8>, Option<String>)> {
    let request = Request::builder().method(Method::Get).uri(url).header("accept", "application/json").build();
    let sent = crate::deadline::within(FETCH_DEADLINE, spin_sdk::http::send::<_, Response>(request))
        .await
        .map_err(|_| anyhow::anyhow!("{url}: no answer within {FETCH_DEADLINE:?}"))?;
    let response = sent.with_context(|| format!("GET {url}"))?;
    anyhow::ensure!(*response.status() == 200, "GET {url}: status {}", response.status());
    anyhow::ensure!(response.body().len() <= MAX_DOCUMENT_BYTES, "GET {url}: larger than {MAX_DOCUMENT_BYTES} bytes");
    let cache_control = response.header("cache-control").and_then(|v| v.as_str()).map(str::to_owned);
    Ok((response.body().to_vec(), cache_control))
}

#[cfg(all(test, feature = "native"))]
mod tests {
    use super::*;
    use crate::db::testing::Native;

    #[test]
    fn settings_and_links_round_trip() {
        let dir = tempfile::tempdir().expect("dir");
        let db = Native::open(&dir.path().join("identity.db"));
        crate::identity::migrate(&db, false).expect("migrate");
        let tenant = TenantId::parse("north").expect("tenant");
        assert_eq!(settings(&db, &tenant).expect("read"), None);
        let s: ProviderSettings = serde_json::from_value(serde_json::json!({
            "enabled": true, "issuer": "https://idp.example", "audience": "a", "jwks_uri": "https://idp.example/jwks"
        }))
        .expect("settings");
        set_settings(&db, &tenant, &s, 1).expect("write");
        set_settings(&db, &tenant, &s, 2).expect("rewrite");
        assert_eq!(settings(&db, &tenant).expect("read"), Some(s));
        let (alice, bob) = (Opaque::parse("u-alice").expect("id"), Opaque::parse("u-bob").expect("id"));
        assert!(link(&db, &tenant, "alice@x", &alice, 1).expect("link"));
        assert!(!link(&db, &tenant, "alice@x", &bob, 1).expect("taken"));
        assert!(link(&db, &tenant, "alice@x", &alice, 1).expect("again"));
        assert!(link(&db, &tenant, "alice@y", &alice, 1).expect("relink"));
        assert_eq!(linked_user(&db, &tenant, "alice@x").expect("read"), None);
        assert_eq!(linked_user(&db, &tenant, "alice@y").expect("read"), Some(alice.clone()));
        assert_eq!(external_id(&db, &tenant, &alice).expect("read").as_deref(), Some("alice@y"));
        let other = TenantId::parse("south").expect("tenant");
        assert_eq!(linked_user(&db, &other, "alice@y").expect("read"), None);
    }

    #[test]
    fn an_issuer_entry_lists_the_tenants_accepting_its_access_tokens() {
        let dir = tempfile::tempdir().expect("dir");
        let db = Native::open(&dir.path().join("identity.db"));
        crate::identity::migrate(&db, false).expect("migrate");
        let kv = crate::kv::Memory::default();
        let settings = |issuer: &str, audience: &str, accept: bool| -> ProviderSettings {
            serde_json::from_value(serde_json::json!({
                "enabled": true, "issuer": issuer, "audience": audience,
                "jwks_uri": "https://idp.example/jwks", "accept_provider_tokens": accept,
            }))
            .expect("settings")
        };
        let (north, south, west) = (
            TenantId::parse("north").expect("t"),
            TenantId::parse("south").expect("t"),
            TenantId::parse("west").expect("t"),
        );
        set_settings(&db, &north, &settings("https://idp", "n", true), 1).expect("write");
        set_settings(&db, &south, &settings("https://idp", "s", false), 1).expect("write");
        set_settings(&db, &west, &settings("https://other", "w", true), 1).expect("write");
        publish_issuer(&kv, &db, "https://idp").expect("publish");
        let north_only = vec![Accepting { tenant: north.clone(), audience: "n".into() }];
        assert_eq!(issuers::accepting(&kv, "https://idp").expect("read"), north_only);
        assert!(issuers::accepting(&kv, "https://other").expect("read").is_empty(), "not published yet");
        set_settings(&db, &south, &settings("https://idp", "s", true), 2).expect("write");
        publish_issuer(&kv, &db, "https://idp").expect("publish");
        assert_eq!(issuers::accepting(&kv, "https://idp").expect("read").len(), 2);
        let mut off = settings("https://idp", "n", true);
        off.enabled = false;
        set_settings(&db, &north, &off, 3).expect("write");
        set_settings(&db, &south, &settings("https://idp", "s", false), 3).expect("write");
        publish_issuer(&kv, &db, "https://idp").expect("publish");
        assert!(issuers::accepting(&kv, "https://idp").expect("read").is_empty());
        assert_eq!(kv.get(&issuers::key("https://idp")).expect("get"), None);
    }

    #[test]
    fn a_started_sign_in_is_taken_once_and_not_after_it_expired() {
        let kv = crate::kv::Memory::default();
        let pending = PendingSignIn {
            tenant: TenantId::parse("north").expect("tenant"),
            nonce: "n".into(),
            code_verifier: "v".into(),
            redirect_uri: "https://h/cb".into(),
            return_to: "/app/".into(),
            expires_at: 100,
            browser_hash: "h".into(),
        };
        start_sign_in(&kv, "s-1", &pending).expect("start");
        start_sign_in(&kv, "s-2", &pending).expect("start");
        assert!(start_sign_in(&kv, "../x", &pending).is_err());
        assert_eq!(take_sign_in(&kv, "s-1", 99).expect("take"), Some(pending.clone()));
        assert_eq!(take_sign_in(&kv, "s-1", 99).expect("replay"), None);
        assert_eq!(take_sign_in(&kv, "s-2", 100).expect("expired"), None);
        assert_eq!(take_sign_in(&kv, "s-2", 50).expect("gone with its expiry"), None);
        assert_eq!(take_sign_in(&kv, "federation/jwks/north", 50).expect("not a state"), None);
    }

    #[test]
    fn a_sign_in_is_remembered_for_a_logout_and_a_logout_token_is_taken_once() {
        let kv = crate::kv::Memory::default();
        let (north, south) = (TenantId::parse("north").expect("tenant"), TenantId::parse("south").expect("tenant"));
        let (alice, bob) = (Opaque::parse("u-alice").expect("id"), Opaque::parse("u-bob").expect("id"));
        remember_sign_in(&kv, &north, "p-alice", Some("s-1"), &alice).expect("remember");
        remember_sign_in(&kv, &north, "p-bob", None, &bob).expect("remember");
        assert_eq!(signed_in_users(&kv, &north, Some("p-alice"), None).expect("read"), std::slice::from_ref(&alice));
        assert_eq!(signed_in_users(&kv, &north, None, Some("s-1")).expect("read"), std::slice::from_ref(&alice));
        assert_eq!(
            signed_in_users(&kv, &north, Some("p-alice"), Some("s-1")).expect("read"),
            std::slice::from_ref(&alice)
        );
        assert_eq!(signed_in_users(&kv, &north, Some("p-bob"), Some("s-1")).expect("read"), [bob, alice]);
        assert!(signed_in_users(&kv, &south, Some("p-alice"), Some("s-1")).expect("read").is_empty());
        assert!(signed_in_users(&kv, &north, Some("p-x"), None).expect("read").is_empty());
        assert!(first_delivery(&kv, &north, "j-1", 100).expect("first"));
        assert!(!first_delivery(&kv, &north, "j-1", 100).expect("replay"));
        assert!(first_delivery(&kv, &south, "j-1", 100).expect("another tenant's"));
    }
}
