//! Rate limits counted in the `rate_counters` table of the `audit` database, one row per
//! counter, incremented by a single `INSERT ... ON CONFLICT DO UPDATE ... RETURNING` statement:
//! atomic in SQLite and in libSQL, so every instance on the one `audit` database (which every
//! deployment shares: it holds the tenants' chains) counts together. The arithmetic, the keys
//! and the header fields are `health_core::ratelimit`'s.
//!
//! Why not Spin's key-value store and its atomic `increment`: on the local store behind `spin
//! up` (`type = "spin"`) every increment is a transaction in a rollback-journal database with
//! `synchronous = FULL`, behind one lock per store; measured on Spin 4.0.2 it cut the record
//! read to a third at 16 connections. Here the increment runs on the connection the request
//! has open for its audit event anyway (WAL, `synchronous = NORMAL`, see `db`).
//!
//! Windows that have ended are deleted by the first request of an identity's new window (one
//! indexed `DELETE`), so the table holds only the current and the last window's counters.
//!
//! A database that cannot count refuses the request (the caller answers 503 or 500): a limit
//! that silently stopped counting would be no limit.

use anyhow::Context;
use health_core::ratelimit::{self, Class, Limit, Verdict, Who};
use spin_sdk::sqlite::Value;

use crate::db::Sql;

/// The counters' table, created by the `audit` migration that added it.
pub const TABLE: &str = "rate_counters";

const INCREMENT: &str = "INSERT INTO rate_counters (key, window_end, n) VALUES (?, ?, 1)
    ON CONFLICT(key) DO UPDATE SET n = n + 1 RETURNING n";
const SWEEP: &str = "DELETE FROM rate_counters WHERE window_end <= ?";

/// The limit of `class` from its variable: `None` when it is `off`. A value that does not parse
/// is an error, so a typo cannot turn a limit off.
pub fn limit(class: Class) -> anyhow::Result<Option<Limit>> {
    let text = crate::var(class.variable())?;
    Limit::parse(&text).map_err(|e| anyhow::anyhow!("variable {}: {e}", class.variable()))
}

/// Counts this request of `class` once for each of `who` and returns what each counter says
/// (empty when the class has no limit). The request is refused if any verdict is not
/// [`Verdict::allowed`].
pub fn count(class: Class, who: &[Who<'_>], now: i64) -> anyhow::Result<Vec<Verdict>> {
    let Some(limit) = limit(class)? else {
        return Ok(Vec::new());
    };
    count_on(&*crate::audit::open()?, class, limit, who, now)
}

/// [`count`] on an open `audit` connection, with the limit given.
pub fn count_on<C: Sql>(
    conn: &C,
    class: Class,
    limit: Limit,
    who: &[Who<'_>],
    now: i64,
) -> anyhow::Result<Vec<Verdict>> {
    let mut verdicts = Vec::with_capacity(who.len());
    for who in who {
        let window = ratelimit::window(class, *who, limit, now);
        let end = window.start + i64::try_from(limit.window_secs).unwrap_or(i64::MAX);
        let rows = conn
            .execute(INCREMENT, &[Value::Text(window.key.clone()), Value::Integer(end)])
            .context("counting a request against its rate limit")?;
        let count = rows.rows().next().and_then(|r| r.get::<i64>("n")).context("the counter's new value")?;
        if count == 1 {
            conn.execute(SWEEP, &[Value::Integer(now)]).context("deleting ended rate-limit windows")?;
        }
        verdicts.push(Verdict::new(class, *who, limit, &window, count));
    }
    Ok(verdicts)
}

/// Sets `RateLimit-Policy` and `RateLimit` on a successful or a 429 `response` (nothing when no
/// limit applied), and `Retry-After` on a 429. Refusals for any other reason carry none: the
/// remaining count changes with every request, and two refusals of different tokens must not
/// differ in anything but their request id.
pub fn set_headers(response: &mut spin_sdk::http::Response, verdicts: &[Verdict]) {
    let status = *response.status();
    if verdicts.is_empty() || !((200..300).contains(&status) || status == 429) {
        return;
    }
    response.set_header("ratelimit-policy", ratelimit::policy_field(verdicts));
    response.set_header("ratelimit", ratelimit::state_field(verdicts));
    if let Some(seconds) = ratelimit::retry_after(verdicts) {
        response.set_header("retry-after", seconds.to_string());
    }
}

/// Whether every counter allowed the request.
pub fn allowed(verdicts: &[Verdict]) -> bool {
    verdicts.iter().all(Verdict::allowed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::MIGRATIONS;
    use crate::db::testing::Native;

    fn database(path: &std::path::Path) -> Native {
        let db = Native::open(path);
        crate::db::migrate(&db, MIGRATIONS, |_| Ok(())).expect("migrates");
        db
    }

    fn rows(db: &Native) -> i64 {
        db.execute("SELECT COUNT(*) AS n FROM rate_counters", &[])
            .expect("count")
            .rows()
            .next()
            .and_then(|r| r.get::<i64>("n"))
            .expect("n")
    }

    #[test]
    fn counts_per_identity_and_sweeps_ended_windows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = database(&dir.path().join("audit.db"));
        let limit = Limit { quota: 2, window_secs: 10 };
        let alice = Who::Subject { tenant: "t", subject: "alice" };
        let counts = |now| count_on(&db, Class::Read, limit, &[Who::Address("10.0.0.1"), alice], now).expect("counts");
        let first = counts(100);
        assert_eq!(first.iter().map(|v| v.count).collect::<Vec<_>>(), [1, 1]);
        counts(101);
        let third = counts(102);
        assert_eq!(third.iter().map(|v| (v.count, v.allowed())).collect::<Vec<_>>(), [(3, false), (3, false)]);
        assert_eq!(rows(&db), 2);
        // A new window starts at 1 and sweeps the ended one.
        let next = counts(110);
        assert_eq!(next.iter().map(|v| v.count).collect::<Vec<_>>(), [1, 1]);
        assert_eq!(rows(&db), 2, "the window that ended at 110 is gone");
    }

    #[test]
    fn concurrent_writers_on_separate_connections_lose_no_count() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.db");
        drop(database(&path));
        let limit = Limit { quota: 1_000_000, window_secs: 86_400 };
        let (writers, each) = (8, 50);
        std::thread::scope(|scope| {
            for _ in 0..writers {
                let path = &path;
                scope.spawn(move || {
                    let db = Native::open(path);
                    crate::db::configure(&db);
                    for _ in 0..each {
                        count_on(&db, Class::Write, limit, &[Who::Address("a")], 1_000).expect("counted");
                    }
                });
            }
        });
        let db = Native::open(&path);
        let last = count_on(&db, Class::Write, limit, &[Who::Address("a")], 1_000).expect("counted");
        assert_eq!(last[0].count, u64::try_from(writers * each + 1).expect("small"));
    }
}
