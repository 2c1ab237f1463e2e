//! The `revocations` key-value store, written and read in one place: its key names, revoking one
//! access token by its `jti`, ending every session of a subject (its not-before time), and the
//! check every verification ends with (ARCHITECTURE.md §4, step 11). Written against [`Kv`], so
//! the same code runs on Spin's store in a component and on [`crate::kv::Memory`] in native tests.
//!
//! What a last-write-wins store lets this promise, and no more: Spin's key-value interface has
//! no compare-and-set, so a subject's not-before is read, raised and written back. A raise never
//! writes a time lower than the one it read, so a not-before stored before a logout began is
//! never lowered by it (or by any number of logouts running alongside it). Among logouts that
//! overlap in time the last write wins: the stored time is then one of theirs, at least the
//! smallest `now + 1` among them, not necessarily the largest. Each logout therefore refuses at
//! least the tokens issued before the earliest of them began; a token issued between two
//! concurrent logouts of the same subject may outlive the later one. What the store does not
//! promise (a strict maximum) would need an arbiter such as a SQLite row; no caller needs it.
//!
//! Deliberately not here: deciding who may revoke what (the components do), and sweeping
//! entries whose tokens have expired (no store interface lists keys by age).

use anyhow::Context;
use health_core::{Opaque, TenantId, TokenId};

use crate::kv::Kv;

/// The key-value store label in spin.toml.
pub const STORE: &str = "revocations";

/// Opens Spin's `revocations` store (the component must declare it).
pub fn open() -> anyhow::Result<spin_sdk::key_value::Store> {
    crate::kv::open(STORE)
}

/// Key marking a revoked `jti` of `tenant`; the value is the time after which no token with it
/// could be valid anyway. Scoped by tenant like every key-value entry, so a revocation written
/// for one tenant can never refuse another tenant's token.
pub fn revoked_jti_key(tenant: &TenantId, jti: &str) -> String {
    format!("jti/{tenant}/{jti}")
}

/// Key of a revocation written before they were scoped by tenant (see [`check`]).
fn legacy_jti_key(jti: &str) -> String {
    format!("jti/{jti}")
}

/// Key holding a subject's not-before time (logout-all, password reset).
pub fn not_before_key(tenant: &TenantId, sub: &str) -> String {
    format!("sub/{tenant}/{sub}")
}

/// A stored time: decimal Unix seconds, `None` if the value is not one.
fn time(value: &[u8]) -> Option<i64> {
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// Revokes the access token `jti` of `tenant`. `until` is the moment it would be refused anyway
/// (its `exp` plus the largest clock tolerance): the entry means nothing after it.
pub fn revoke_jti<K: Kv + ?Sized>(kv: &K, tenant: &TenantId, jti: &TokenId, until: i64) -> anyhow::Result<()> {
    kv.set(&revoked_jti_key(tenant, jti.as_str()), until.to_string().as_bytes()).context("writing revocation")
}

/// The subject's not-before time, if one is stored and reads as a time (an unreadable value is
/// `None` here, for issuing; [`check`] refuses every token on it).
pub fn not_before<K: Kv + ?Sized>(kv: &K, tenant: &TenantId, sub: &Opaque) -> anyhow::Result<Option<i64>> {
    Ok(kv.get(&not_before_key(tenant, sub.as_str())).context("reading not-before")?.as_deref().and_then(time))
}

/// Ends every access token of the subject issued so far: stores a not-before newer than all of
/// them, and returns it. Those tokens carry `iat <= now`, or `iat <=` an earlier not-before when
/// they were issued in the same second as an earlier logout (issuing dates a token no earlier
/// than the subject's not-before), hence `max(now, earlier) + 1`. Never lowers the time it read;
/// concurrent logouts of one subject: see the module's header.
pub fn log_out_subject<K: Kv + ?Sized>(kv: &K, tenant: &TenantId, sub: &Opaque, now: i64) -> anyhow::Result<i64> {
    let not_before = not_before(kv, tenant, sub)?.map_or(now + 1, |earlier| (earlier + 1).max(now + 1));
    kv.set(&not_before_key(tenant, sub.as_str()), not_before.to_string().as_bytes()).context("writing not-before")?;
    Ok(not_before)
}

/// What a verified token is refused for by the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoked {
    /// Its `jti` was revoked.
    Jti,
    /// It was issued before its subject's not-before.
    SubjectLoggedOut,
}

impl Revoked {
    /// The reason for the audit log (ARCHITECTURE.md §4).
    pub fn reason(self) -> health_core::Reason {
        match self {
            Revoked::Jti => health_core::Reason::RevokedJti,
            Revoked::SubjectLoggedOut => health_core::Reason::SubjectLoggedOut,
        }
    }
}

/// The token a revocation check is about: its tenant, `jti`, subject and issue time.
#[derive(Debug, Clone, Copy)]
pub struct Token<'a> {
    pub tenant: &'a TenantId,
    pub jti: &'a str,
    pub sub: &'a str,
    pub iat: i64,
}

/// Whether the store refuses `token` at `now`, in this order: its `jti` revoked (a scoped entry
/// whatever its value; the token's own `exp` ends it), or a pre-tenant-scoping `jti/{jti}`
/// entry whose stored time has not passed (honoured until then, so upgrading revived no
/// logged-out token; no new ones are written); then its subject's not-before later than its
/// `iat`. A stored time that does not read as one counts as the end of time: it refuses.
pub fn check<K: Kv + ?Sized>(kv: &K, token: &Token<'_>, now: i64) -> anyhow::Result<Option<Revoked>> {
    if kv.get(&revoked_jti_key(token.tenant, token.jti)).context("checking jti revocation")?.is_some()
        || legacy_revocation(kv, token.jti, now)?
    {
        return Ok(Some(Revoked::Jti));
    }
    if let Some(stored) = kv.get(&not_before_key(token.tenant, token.sub)).context("checking logout")? {
        let not_before = time(&stored).unwrap_or(i64::MAX);
        if token.iat < not_before {
            return Ok(Some(Revoked::SubjectLoggedOut));
        }
    }
    Ok(None)
}

/// A legacy `jti/{jti}` entry still in force at `now`. (A tenant admin could write one for
/// another tenant's `jti`; that is the hole the scoped key closes, and an old entry refuses a
/// token for minutes at most.)
fn legacy_revocation<K: Kv + ?Sized>(kv: &K, jti: &str, now: i64) -> anyhow::Result<bool> {
    let Some(until) = kv.get(&legacy_jti_key(jti)).context("checking legacy jti revocation")? else {
        return Ok(false);
    };
    Ok(now <= time(&until).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::Memory;

    fn tenant(name: &str) -> TenantId {
        TenantId::parse(name).expect("tenant")
    }

    fn jti(text: &str) -> TokenId {
        TokenId::parse(text).expect("jti")
    }

    fn sub(text: &str) -> Opaque {
        Opaque::parse(text).expect("subject")
    }

    fn token<'a>(tenant: &'a TenantId, jti: &'a str, iat: i64) -> Token<'a> {
        Token { tenant, jti, sub: "u-alice", iat }
    }

    #[test]
    fn key_formats_are_those_deployed_stores_hold() {
        let t = tenant("demo-hospital");
        assert_eq!(revoked_jti_key(&t, "j1"), "jti/demo-hospital/j1");
        assert_eq!(not_before_key(&t, "u-alice"), "sub/demo-hospital/u-alice");
        assert_eq!(legacy_jti_key("j1"), "jti/j1");
    }

    #[test]
    fn a_revoked_jti_is_refused_until_its_token_expires_and_only_in_its_tenant() {
        let kv = Memory::default();
        let (t, other) = (tenant("demo-hospital"), tenant("other-hospital"));
        let (iat, exp) = (1_000, 1_900);
        assert_eq!(check(&kv, &token(&t, "j1", iat), iat).expect("check"), None);
        revoke_jti(&kv, &t, &jti("j1"), exp + 60).expect("revoke");
        assert_eq!(kv.get("jti/demo-hospital/j1").expect("get").as_deref(), Some(&b"1960"[..]));
        for now in [iat, exp, exp + 60, exp + 61] {
            assert_eq!(check(&kv, &token(&t, "j1", iat), now).expect("check"), Some(Revoked::Jti), "at {now}");
        }
        assert_eq!(check(&kv, &token(&t, "j2", iat), iat).expect("check"), None, "another jti");
        assert_eq!(check(&kv, &token(&other, "j1", iat), iat).expect("check"), None, "another tenant");
        assert_eq!(Revoked::Jti.reason(), "revoked_jti");
    }

    #[test]
    fn a_legacy_jti_entry_refuses_until_its_stored_time_in_every_tenant() {
        let kv = Memory::default();
        let t = tenant("demo-hospital");
        kv.set("jti/j1", b"2000").expect("legacy entry");
        assert_eq!(check(&kv, &token(&t, "j1", 1_000), 2_000).expect("check"), Some(Revoked::Jti));
        assert_eq!(check(&kv, &token(&tenant("b"), "j1", 1_000), 1_500).expect("check"), Some(Revoked::Jti));
        assert_eq!(check(&kv, &token(&t, "j1", 1_000), 2_001).expect("check"), None, "inert after its time");
        kv.set("jti/j2", b"not a time").expect("legacy entry");
        assert_eq!(check(&kv, &token(&t, "j2", 1_000), i64::MAX - 1).expect("check"), Some(Revoked::Jti));
    }

    #[test]
    fn a_not_before_refuses_tokens_issued_before_it_and_accepts_those_after() {
        let kv = Memory::default();
        let t = tenant("demo-hospital");
        assert_eq!(not_before(&kv, &t, &sub("u-alice")).expect("read"), None);
        let at = log_out_subject(&kv, &t, &sub("u-alice"), 1_000).expect("logout");
        assert_eq!((at, not_before(&kv, &t, &sub("u-alice")).expect("read")), (1_001, Some(1_001)));
        let refused = Some(Revoked::SubjectLoggedOut);
        assert_eq!(check(&kv, &token(&t, "j1", 999), 1_000).expect("check"), refused);
        assert_eq!(check(&kv, &token(&t, "j1", 1_000), 1_000).expect("check"), refused, "issued that second");
        assert_eq!(check(&kv, &token(&t, "j2", 1_001), 1_001).expect("check"), None, "issued after");
        let bob = Token { sub: "u-bob", ..token(&t, "j3", 999) };
        assert_eq!(check(&kv, &bob, 1_000).expect("check"), None, "another subject");
        assert_eq!(Revoked::SubjectLoggedOut.reason(), "subject_logged_out");
    }

    #[test]
    fn a_jti_revocation_is_reported_before_a_logout() {
        let kv = Memory::default();
        let t = tenant("demo-hospital");
        log_out_subject(&kv, &t, &sub("u-alice"), 1_000).expect("logout");
        revoke_jti(&kv, &t, &jti("j1"), 2_000).expect("revoke");
        assert_eq!(check(&kv, &token(&t, "j1", 900), 1_000).expect("check"), Some(Revoked::Jti));
    }

    #[test]
    fn an_unreadable_not_before_refuses_every_token_and_a_logout_replaces_it() {
        let kv = Memory::default();
        let t = tenant("demo-hospital");
        kv.set("sub/demo-hospital/u-alice", b"garbage").expect("set");
        assert_eq!(not_before(&kv, &t, &sub("u-alice")).expect("read"), None);
        let far = token(&t, "j1", i64::MAX - 1);
        assert_eq!(check(&kv, &far, 1_000).expect("check"), Some(Revoked::SubjectLoggedOut));
        assert_eq!(log_out_subject(&kv, &t, &sub("u-alice"), 1_000).expect("logout"), 1_001);
        assert_eq!(check(&kv, &token(&t, "j1", 1_001), 1_001).expect("check"), None);
    }

    #[test]
    fn logouts_one_after_another_never_lower_the_not_before() {
        let kv = Memory::default();
        let t = tenant("demo-hospital");
        assert_eq!(log_out_subject(&kv, &t, &sub("u-alice"), 1_000).expect("logout"), 1_001);
        assert_eq!(log_out_subject(&kv, &t, &sub("u-alice"), 1_000).expect("same second"), 1_002);
        assert_eq!(log_out_subject(&kv, &t, &sub("u-alice"), 500).expect("a slow clock"), 1_003);
        assert_eq!(log_out_subject(&kv, &t, &sub("u-alice"), 5_000).expect("later"), 5_001);
    }

    #[test]
    fn concurrent_logouts_never_lower_an_earlier_not_before_and_keep_the_earliest_in_force() {
        let t = tenant("demo-hospital");
        for round in 0..20 {
            let kv = Memory::default();
            let before = log_out_subject(&kv, &t, &sub("u-alice"), 10_000).expect("an earlier logout");
            // Some writers' clocks lag the earlier not-before, some lead it; all overlap.
            let nows: Vec<i64> = (0..8).map(|i| 9_990 + i * 7 + round).collect();
            let barrier = std::sync::Barrier::new(nows.len());
            let written: Vec<i64> = std::thread::scope(|scope| {
                let handles: Vec<_> = nows
                    .iter()
                    .map(|&now| {
                        let (kv, t, barrier) = (&kv, &t, &barrier);
                        scope.spawn(move || {
                            barrier.wait();
                            log_out_subject(kv, t, &sub("u-alice"), now).expect("logout")
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().expect("writer")).collect()
            });
            let stored = not_before(&kv, &t, &sub("u-alice")).expect("read").expect("stored");
            assert!(written.iter().all(|&w| w > before), "a raise lowered {before}: {written:?}");
            assert!(written.contains(&stored), "{stored} was written by no one: {written:?}");
            let earliest = nows.iter().min().expect("writers") + 1;
            assert!(stored > before && stored >= earliest, "round {round}: {stored} after {before}");
            let refused = Some(Revoked::SubjectLoggedOut);
            assert_eq!(check(&kv, &token(&t, "j", before), 20_000).expect("check"), refused);
            assert_eq!(check(&kv, &token(&t, "j", earliest - 1), 20_000).expect("check"), refused);
        }
    }
}
