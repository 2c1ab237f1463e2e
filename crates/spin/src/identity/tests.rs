//! The `identity` store against real SQLite (`db::testing::Native`): the schema and demo seed,
//! each compare-and-set, and the races they decide, run by threads on their own connections to
//! one database file as concurrent requests would.

use std::path::Path;
use std::sync::Barrier;

use super::*;
use crate::db::testing::Native;

const POLICY: LockoutPolicy = LockoutPolicy { max_failures: 5, lock_secs: 1800 };
/// A policy no test reaches, to count failures without a lock interfering.
const NO_LOCK: LockoutPolicy = LockoutPolicy { max_failures: 1000, lock_secs: 1800 };
const T0: i64 = 1_800_000_000;
const THREADS: usize = 8;

fn tenant() -> TenantId {
    TenantId::parse("demo-hospital").expect("tenant")
}

fn uid(text: &str) -> Opaque {
    Opaque::parse(text).expect("user id")
}

fn name(text: &str) -> Username {
    Username::parse(text).expect("username")
}

fn cid(text: &str) -> ClientId {
    ClientId::parse(text).expect("client id")
}

fn fam(text: &str) -> FamilyId {
    FamilyId::parse(text).expect("family id")
}

fn jti(text: &str) -> TokenId {
    TokenId::parse(text).expect("jti")
}

/// A migrated database file (without the demo accounts) and a connection to it.
fn database(dir: &tempfile::TempDir) -> (std::path::PathBuf, Native) {
    let path = dir.path().join("identity.db");
    let db = connect(&path);
    migrate(&db, false).expect("migrates");
    (path, db)
}

/// A connection as a request opens one.
fn connect(path: &Path) -> Native {
    let db = Native::open(path);
    assert!(db::configure(&db), "pragmas apply");
    db
}

/// Runs `work` on [`THREADS`] threads at once, each with its own connection to `path`, and
/// returns what each answered.
fn race<T: Send>(path: &Path, work: impl Fn(&Native, usize) -> T + Sync) -> Vec<T> {
    let start = Barrier::new(THREADS);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|n| {
                let (start, work) = (&start, &work);
                scope.spawn(move || {
                    let db = connect(path);
                    start.wait();
                    work(&db, n)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("thread")).collect()
    })
}

fn stored_attempts(db: &Native, username: &str, source: &str) -> Option<Attempts> {
    let key = [text("demo-hospital"), text(username), text(source)];
    attempts(db, &key).expect("reads")
}

fn reserve(db: &Native, now: i64, policy: LockoutPolicy) -> Reservation {
    reserve_attempt(db, &tenant(), &name("alice"), "10.0.0.7", policy, now).expect("reserves")
}

// ---- schema and seed -----------------------------------------------------------------------

#[test]
fn migrates_to_the_current_version_and_seeds_the_demo_accounts_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = connect(&dir.path().join("identity.db"));
    migrate(&db, true).expect("migrates");
    assert_eq!(db.integer("SELECT MAX(version) FROM schema_migrations"), 4);
    assert_eq!(db.integer("SELECT COUNT(*) FROM users WHERE tenant_id = 'demo-hospital'"), 6);
    let alice = find_user(&db, &tenant(), &Username::parse("alice").expect("name")).expect("reads").expect("seeded");
    assert_eq!((alice.user_id.as_str(), alice.role, alice.disabled), ("u-alice", Role::Patient, false));
    assert!(health_identity::password::matches(&alice.password_hash, "alice-demo-2026"));
    let insurer = find_client(&db, &cid("acme-health")).expect("reads").expect("seeded");
    assert!(insurer.secret_hash.is_some() && insurer.sig_jwk.is_none() && !insurer.disabled);
    // A change after seeding survives the next open: the schema is current, nothing is re-seeded.
    assert!(set_disabled(&db, &tenant(), &uid("u-alice"), true).expect("updates"));
    migrate(&db, true).expect("current");
    assert!(user_by_id(&db, &tenant(), &uid("u-alice")).expect("reads").expect("kept").disabled);
}

#[test]
fn without_the_demo_tenant_nothing_is_seeded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, db) = database(&dir);
    assert_eq!(db.integer("SELECT COUNT(*) FROM users"), 0);
    assert_eq!(db.integer("SELECT COUNT(*) FROM clients"), 0);
}

#[test]
fn a_version_1_database_keeps_its_users_and_gains_the_later_tables() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = connect(&dir.path().join("identity.db"));
    let [Step::Sql(users)] = VERSION_1 else { panic!("version 1 is one table") };
    db.0.execute_batch(users).expect("version 1");
    db.0.execute_batch(
        "INSERT INTO users VALUES ('demo-hospital', 'u-1', 'carol', 'doctor', 'hash', 0); PRAGMA user_version = 1;",
    )
    .expect("a user");
    migrate(&db, true).expect("migrates");
    assert_eq!(db.integer("SELECT COUNT(*) FROM schema_migrations"), 4);
    assert_eq!(db.text("SELECT how FROM schema_migrations WHERE version = 1"), "adopted from PRAGMA user_version");
    assert!(user_by_id(&db, &tenant(), &uid("u-1")).expect("reads").is_some());
    assert_eq!(db.integer("SELECT COUNT(*) FROM sqlite_master WHERE name = 'login_attempts'"), 1);
    assert_eq!(db.integer("SELECT COUNT(*) FROM sqlite_master WHERE name = 'federated_identities'"), 1);
}

#[test]
fn every_role_can_be_stored_and_no_other_and_the_users_of_version_3_are_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = connect(&dir.path().join("identity.db"));
    let [Step::Sql(users)] = VERSION_1 else { panic!("version 1 is one table") };
    db.0.execute_batch(users).expect("version 1");
    db.0.execute_batch(
        "INSERT INTO users VALUES ('demo-hospital', 'u-1', 'carol', 'doctor', 'hash', 1); PRAGMA user_version = 1;",
    )
    .expect("a user");
    migrate(&db, false).expect("migrates");
    let carol = user_by_id(&db, &tenant(), &uid("u-1")).expect("reads").expect("kept");
    assert_eq!((carol.username.as_str(), carol.role, carol.disabled), ("carol", Role::Doctor, true));
    for (i, role) in Role::ALL.into_iter().enumerate() {
        let mut new = user(&format!("u-r{i}"), &format!("staff{i}"), "hash");
        new.role = role;
        assert!(create_user(&db, &tenant(), &new).expect("inserts"), "{role:?}");
        assert_eq!(user_by_id(&db, &tenant(), &new.user_id).expect("reads").expect("stored").role, role);
    }
    let other = "INSERT INTO users VALUES ('demo-hospital', 'u-9', 'mallory', 'superuser', 'hash', 0)";
    assert!(db.0.execute_batch(other).is_err(), "a role the platform does not know");
    assert!(create_user(&db, &tenant(), &user("u-2", "carol", "hash")).is_ok_and(|created| !created));
}

// ---- users -------------------------------------------------------------------------------

fn user(user_id: &str, username: &str, hash: &str) -> User {
    User {
        user_id: uid(user_id),
        username: name(username),
        role: Role::Doctor,
        password_hash: hash.into(),
        disabled: false,
    }
}

#[test]
fn a_username_is_taken_once_per_tenant() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, db) = database(&dir);
    assert!(create_user(&db, &tenant(), &user("u-1", "carol", "h1")).expect("creates"));
    assert!(!create_user(&db, &tenant(), &user("u-2", "carol", "h2")).expect("refused"));
    let other = TenantId::parse("other-hospital").expect("tenant");
    assert!(create_user(&db, &other, &user("u-2", "carol", "h2")).expect("another tenant"));
    let listed: Vec<Opaque> = list_users(&db, &tenant()).expect("lists").into_iter().map(|u| u.user_id).collect();
    assert_eq!(listed, [uid("u-1")]);
}

#[test]
fn of_two_password_changes_from_one_hash_only_the_first_lands() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, db) = database(&dir);
    create_user(&db, &tenant(), &user("u-1", "carol", "old")).expect("creates");
    assert!(replace_password(&db, &tenant(), &uid("u-1"), "old", "first").expect("swaps"));
    assert!(!replace_password(&db, &tenant(), &uid("u-1"), "old", "second").expect("refused"));
    assert_eq!(user_by_id(&db, &tenant(), &uid("u-1")).expect("reads").expect("user").password_hash, "first");
}

// ---- lockout -----------------------------------------------------------------------------

#[test]
fn reservations_lock_at_the_threshold_and_refuse_with_the_time_left() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, db) = database(&dir);
    for i in 0..4 {
        assert_eq!(reserve(&db, T0 + i, POLICY), Reservation::Counted(Failure::Counted));
    }
    assert_eq!(reserve(&db, T0 + 4, POLICY), Reservation::Counted(Failure::Locked));
    assert_eq!(reserve(&db, T0 + 5, POLICY), Reservation::Locked { retry_after: 1799 });
    // Another source is not locked.
    let elsewhere = reserve_attempt(&db, &tenant(), &name("alice"), "10.0.0.8", POLICY, T0 + 5).expect("reserves");
    assert_eq!(elsewhere, Reservation::Counted(Failure::Counted));
    // The lock lifts by itself.
    assert_eq!(reserve(&db, T0 + 4 + 1800, POLICY), Reservation::Counted(Failure::Counted));
}

#[test]
fn a_refund_takes_back_the_advance_count_and_a_lock_it_started() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, db) = database(&dir);
    let refund =
        |counted| refund_attempt(&db, &tenant(), &name("alice"), "10.0.0.7", POLICY, counted).expect("refunds");
    for i in 0..4 {
        reserve(&db, T0 + i, POLICY);
    }
    let Reservation::Counted(counted) = reserve(&db, T0 + 4, POLICY) else { panic!("counted") };
    assert_eq!(counted, Failure::Locked);
    refund(counted);
    let after = stored_attempts(&db, "alice", "10.0.0.7").expect("row");
    assert_eq!((after.failures, after.locked_until), (4, 0));
    refund(Failure::Counted);
    assert_eq!(stored_attempts(&db, "alice", "10.0.0.7").expect("row").failures, 3);
    // Nothing stored: nothing to refund, and no row is created.
    refund_attempt(&db, &tenant(), &name("bob"), "10.0.0.7", POLICY, Failure::Counted).expect("refunds nothing");
    assert_eq!(stored_attempts(&db, "bob", "10.0.0.7"), None);
}

#[test]
fn clearing_forgets_one_source_or_all_of_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, db) = database(&dir);
    for source in ["10.0.0.7", "10.0.0.8", "10.0.0.9"] {
        reserve_attempt(&db, &tenant(), &name("alice"), source, POLICY, T0).expect("reserves");
    }
    reserve_attempt(&db, &tenant(), &name("bob"), "10.0.0.7", POLICY, T0).expect("reserves");
    clear_attempts(&db, &tenant(), &name("alice"), Some("10.0.0.7")).expect("clears");
    assert_eq!(stored_attempts(&db, "alice", "10.0.0.7"), None);
    assert!(stored_attempts(&db, "alice", "10.0.0.8").is_some());
    clear_attempts(&db, &tenant(), &name("alice"), None).expect("clears");
    assert_eq!(db.integer("SELECT COUNT(*) FROM login_attempts WHERE username = 'alice'"), 0);
    assert!(stored_attempts(&db, "bob", "10.0.0.7").is_some());
}

#[test]
fn sweeping_drops_only_counters_whose_window_and_lock_are_over() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, db) = database(&dir);
    reserve_attempt(&db, &tenant(), &name("old"), "s", POLICY, T0).expect("reserves");
    for i in 0..5 {
        reserve_attempt(&db, &tenant(), &name("locked"), "s", POLICY, T0 + 1000 + i).expect("reserves");
    }
    reserve_attempt(&db, &tenant(), &name("recent"), "s", POLICY, T0 + 2000).expect("reserves");
    sweep_attempts(&db, POLICY, T0 + 2500).expect("sweeps");
    let left: Vec<String> = {
        let mut stmt = db.0.prepare("SELECT username FROM login_attempts ORDER BY username").expect("prepare");
        stmt.query_map([], |r| r.get(0)).expect("query").map(|r| r.expect("row")).collect()
    };
    assert_eq!(left, ["locked", "recent"]);
}

/// A connection on which another request writes the counter between this one's read and its
/// compare-and-set, once: the race [`swap_attempts`] must lose and then count again.
struct Overtaken<'a> {
    conn: &'a Native,
    rival: &'a Native,
    overtaken: std::cell::Cell<bool>,
}

impl Sql for Overtaken<'_> {
    fn execute(&self, sql: &str, params: &[Value]) -> Result<QueryResult, spin_sdk::sqlite::Error> {
        let write = sql == INSERT_ATTEMPTS || sql == SWAP_ATTEMPTS;
        if write && !self.overtaken.replace(true) {
            reserve(self.rival, T0, NO_LOCK);
        }
        self.conn.execute(sql, params)
    }
}

#[test]
fn a_reservation_that_loses_its_race_reads_again_and_counts_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, db) = database(&dir);
    let rival = connect(&path);
    // First the insert of a new counter is overtaken, then the swap of an existing one.
    for expected in [2, 4] {
        let overtaken = Overtaken { conn: &db, rival: &rival, overtaken: false.into() };
        assert_eq!(
            reserve_attempt(&overtaken, &tenant(), &name("alice"), "10.0.0.7", NO_LOCK, T0).expect("reserves"),
            { Reservation::Counted(Failure::Counted) }
        );
        assert!(overtaken.overtaken.get());
        assert_eq!(stored_attempts(&db, "alice", "10.0.0.7").expect("row").failures, expected);
    }
}

#[test]
fn concurrent_reservations_count_every_attempt_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, db) = database(&dir);
    const EACH: usize = 10;
    let answers = race(&path, |db, _| (0..EACH).map(|_| reserve(db, T0, NO_LOCK)).collect::<Vec<_>>());
    assert!(answers.iter().flatten().all(|a| *a == Reservation::Counted(Failure::Counted)), "{answers:?}");
    let failures = stored_attempts(&db, "alice", "10.0.0.7").expect("row").failures;
    assert_eq!(failures as usize, THREADS * EACH);
}

#[test]
fn concurrent_reservations_lock_exactly_at_the_threshold() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, db) = database(&dir);
    const EACH: usize = 4;
    let answers: Vec<Reservation> = race(&path, |db, _| (0..EACH).map(|_| reserve(db, T0, POLICY)).collect::<Vec<_>>())
        .into_iter()
        .flatten()
        .collect();
    let count = |wanted: Reservation| answers.iter().filter(|a| **a == wanted).count();
    // Exactly `max_failures` attempts get their password checked; the one that reached the
    // limit started the lock; every other was refused without a check.
    assert_eq!(count(Reservation::Counted(Failure::Counted)), POLICY.max_failures as usize - 1, "{answers:?}");
    assert_eq!(count(Reservation::Counted(Failure::Locked)), 1, "{answers:?}");
    let refused = count(Reservation::Locked { retry_after: POLICY.lock_secs });
    assert_eq!(refused, THREADS * EACH - POLICY.max_failures as usize, "{answers:?}");
    let stored = stored_attempts(&db, "alice", "10.0.0.7").expect("row");
    assert_eq!((stored.failures, stored.locked_until), (0, T0 + POLICY.lock_secs));
}

#[test]
fn concurrent_refunds_take_back_exactly_what_they_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, db) = database(&dir);
    const EACH: usize = 10;
    // Even threads are right passwords without a code check (each attempt refunded), odd ones
    // wrong passwords (each attempt stays counted).
    race(&path, |db, n| {
        for _ in 0..EACH {
            let Reservation::Counted(counted) = reserve(db, T0, NO_LOCK) else { panic!("never locked") };
            if n % 2 == 0 {
                refund_attempt(db, &tenant(), &name("alice"), "10.0.0.7", NO_LOCK, counted).expect("refunds");
            }
        }
    });
    let failures = stored_attempts(&db, "alice", "10.0.0.7").expect("row").failures;
    assert_eq!(failures as usize, THREADS / 2 * EACH);
}

// ---- MFA ---------------------------------------------------------------------------------

#[test]
fn an_enrolment_restarts_until_confirmed_and_each_step_is_used_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, db) = database(&dir);
    assert!(start_enrolment(&db, &tenant(), &uid("u-1"), "sealed-1", T0).expect("starts"));
    assert!(start_enrolment(&db, &tenant(), &uid("u-1"), "sealed-2", T0).expect("restarts"));
    assert!(use_step(&db, &tenant(), &uid("u-1"), 100).expect("uses"));
    assert!(!use_step(&db, &tenant(), &uid("u-1"), 100).expect("replayed"));
    assert!(!use_step(&db, &tenant(), &uid("u-1"), 99).expect("older"));
    let enrolment = mfa(&db, &tenant(), &uid("u-1")).expect("reads").expect("enrolled");
    assert_eq!(
        (enrolment.secret_sealed.as_str(), enrolment.confirmed, enrolment.last_step),
        ("sealed-2", true, Some(100))
    );
    assert!(!start_enrolment(&db, &tenant(), &uid("u-1"), "sealed-3", T0).expect("refused once confirmed"));
    reset_mfa(&db, &tenant(), &uid("u-1")).expect("resets");
    assert!(mfa(&db, &tenant(), &uid("u-1")).expect("reads").is_none());
}

#[test]
fn concurrent_logins_with_one_code_use_its_step_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, db) = database(&dir);
    start_enrolment(&db, &tenant(), &uid("u-1"), "sealed", T0).expect("starts");
    let won = race(&path, |db, _| use_step(db, &tenant(), &uid("u-1"), 100).expect("uses"));
    assert_eq!(won.iter().filter(|w| **w).count(), 1, "{won:?}");
}

// ---- refresh tokens ----------------------------------------------------------------------

fn family(db: &Native, family_id: &str) {
    create_family(
        db,
        &Family {
            family_id: fam(family_id),
            tenant_id: tenant(),
            user_id: uid("u-1"),
            client_id: cid("health-web"),
            amr: vec!["pwd".into(), "otp".into()],
            auth_time: T0,
            created_at: T0,
            expires_at: T0 + 3600,
            revoked: false,
        },
    )
    .expect("creates family");
}

#[test]
fn a_presented_refresh_token_comes_with_its_family() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, db) = database(&dir);
    family(&db, "f-1");
    add_refresh(&db, "hash-1", &fam("f-1"), T0, &jti("jti-1"), T0 + 900).expect("adds");
    let found = find_refresh(&db, "hash-1").expect("reads").expect("found");
    assert_eq!(found.used_at, None);
    assert_eq!(found.family.family_id, fam("f-1"));
    assert_eq!(found.family.amr, ["pwd", "otp"]);
    assert!(!found.family.revoked);
    assert!(find_refresh(&db, "hash-2").expect("reads").is_none());
    assert!(spend_refresh(&db, "hash-1", T0 + 1).expect("spends"));
    assert_eq!(find_refresh(&db, "hash-1").expect("reads").expect("found").used_at, Some(T0 + 1));
    assert_eq!(family_of_access(&db, &jti("jti-1")).expect("reads"), Some(fam("f-1")));
}

#[test]
fn revoking_a_family_lists_the_access_tokens_still_valid_in_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, db) = database(&dir);
    family(&db, "f-1");
    family(&db, "f-2");
    add_refresh(&db, "h-1", &fam("f-1"), T0, &jti("jti-expired"), T0 + 10).expect("adds");
    add_refresh(&db, "h-2", &fam("f-1"), T0, &jti("jti-live"), T0 + 900).expect("adds");
    assert_eq!(user_families(&db, &tenant(), &uid("u-1")).expect("lists").len(), 2);
    assert_eq!(family_access_tokens(&db, &fam("f-1"), T0 + 60).expect("lists"), [(jti("jti-live"), T0 + 900)]);
    let live = revoke_family(&db, &fam("f-1"), health_core::Reason::SubjectLoggedOut, T0 + 60).expect("revokes");
    assert_eq!(live, [(jti("jti-live"), T0 + 900)]);
    assert!(family_revoked(&db, &fam("f-1")).expect("reads"));
    assert!(!family_revoked(&db, &fam("f-2")).expect("reads"));
    assert!(family_revoked(&db, &fam("f-unknown")).expect("reads"), "a family that does not exist is no session");
    assert_eq!(user_families(&db, &tenant(), &uid("u-1")).expect("lists"), [fam("f-2")]);
    assert!(find_refresh(&db, "h-2").expect("reads").expect("found").family.revoked);
}

#[test]
fn concurrent_uses_of_one_refresh_token_are_won_by_exactly_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, db) = database(&dir);
    family(&db, "f-1");
    add_refresh(&db, "hash-1", &fam("f-1"), T0, &jti("jti-1"), T0 + 900).expect("adds");
    let won = race(&path, |db, n| spend_refresh(db, "hash-1", T0 + n as i64).expect("spends"));
    assert_eq!(won.iter().filter(|w| **w).count(), 1, "{won:?}");
}

// ---- clients -----------------------------------------------------------------------------

#[test]
fn a_client_id_is_registered_once_and_disabled_only_in_its_tenant() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, db) = database(&dir);
    let client = Client {
        client_id: cid("acme"),
        tenant_id: tenant(),
        name: "ACME".into(),
        secret_hash: None,
        sig_jwk: Some("{}".into()),
        enc_jwk: "{}".into(),
        disabled: false,
    };
    assert!(create_client(&db, &client, T0).expect("registers"));
    assert!(!create_client(&db, &client, T0).expect("taken"));
    let other = TenantId::parse("other-hospital").expect("tenant");
    assert!(!set_client_disabled(&db, &other, &cid("acme"), true).expect("not in that tenant"));
    assert!(set_client_disabled(&db, &tenant(), &cid("acme"), true).expect("disables"));
    let listed = list_clients(&db, &tenant()).expect("lists");
    assert_eq!(listed.len(), 1);
    assert!(listed[0].disabled && listed[0].secret_hash.is_none());
}

#[test]
fn an_assertion_jti_is_spent_once_per_client_and_swept_after_it_expires() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, db) = database(&dir);
    assert!(spend_assertion(&db, &cid("acme"), "jti-1", T0 + 60, T0).expect("spends"));
    assert!(!spend_assertion(&db, &cid("acme"), "jti-1", T0 + 60, T0).expect("replayed"));
    assert!(spend_assertion(&db, &cid("other"), "jti-1", T0 + 60, T0).expect("another client"));
    // Long after it expired the entry is swept, and the assertion itself is refused by its
    // `exp` before it gets here.
    assert!(spend_assertion(&db, &cid("acme"), "jti-1", T0 + 60, T0 + 60 + 121).expect("swept"));
}

#[test]
fn concurrent_uses_of_one_client_assertion_are_won_by_exactly_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, _) = database(&dir);
    let won = race(&path, |db, _| spend_assertion(db, &cid("acme"), "jti-1", T0 + 60, T0).expect("spends"));
    assert_eq!(won.iter().filter(|w| **w).count(), 1, "{won:?}");
}
