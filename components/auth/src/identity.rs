//! The `identity` database: users per tenant with argon2id password hashes, and the demo
//! tenant's users (passwords documented in the README).

use anyhow::Context;
use argon2::{Argon2, PasswordHash, PasswordVerifier};
use health_core::{Role, TenantId, Username};
use spin_sdk::sqlite::{Connection, Value};

const SCHEMA_VERSION: i64 = 1;
const MIGRATION: &[&str] = &["CREATE TABLE IF NOT EXISTS users (
    tenant_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    username TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('patient', 'doctor', 'lab', 'insurance', 'admin')),
    password_hash TEXT NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, user_id),
    UNIQUE (tenant_id, username)
)"];

/// Demo users: argon2id (m=19456 KiB, t=2, p=1), passwords `<name>-demo-2026` as in the README.
const DEMO_SEED: &[&str] = &[
    "INSERT OR IGNORE INTO users VALUES ('demo-hospital', 'u-alice', 'alice', 'patient', '$argon2id$v=19$m=19456,t=2,p=1$bFC3W6feZiVOOVQttOaOsw$GbnfoNrRyB80dUJnV4KXb06JA25FKAwEeboGrZPmyg0', 0)",
    "INSERT OR IGNORE INTO users VALUES ('demo-hospital', 'u-bob', 'bob', 'patient', '$argon2id$v=19$m=19456,t=2,p=1$o+fWHPerrmMYsqMvEhz1KA$/q0vVw2u8sjl6WKpg8AtIfQMXwU9KMvsk2qko8owNgQ', 0)",
    "INSERT OR IGNORE INTO users VALUES ('demo-hospital', 'u-dr-grey', 'dr-grey', 'doctor', '$argon2id$v=19$m=19456,t=2,p=1$3ourI53otPuaaVqvyx4eQg$UnxSG/nxyxg79X3rwA6qf3NhWT+2FPU5Cq3pNJtHNHM', 0)",
    "INSERT OR IGNORE INTO users VALUES ('demo-hospital', 'u-lab-north', 'lab-north', 'lab', '$argon2id$v=19$m=19456,t=2,p=1$wz77W+KgA45mP8ATgBMacw$WCL4Adu4zLDLYzEAfqbkgQHOQCJO2qg/GUgLvWsh5CM', 0)",
    "INSERT OR IGNORE INTO users VALUES ('demo-hospital', 'u-acme', 'acme-insurance', 'insurance', '$argon2id$v=19$m=19456,t=2,p=1$q6w/8jPlw9/qQQkYLm1SiA$gpF+YV/To/3wyf6DT6bdnOwwDFBAHNCscihf5QF4INM', 0)",
    "INSERT OR IGNORE INTO users VALUES ('demo-hospital', 'u-admin', 'admin', 'admin', '$argon2id$v=19$m=19456,t=2,p=1$OjLppgld3Z+frmpsTlQJYw$ANCq72YwLjBd4ju5zn+fXjlSDRM9B+kcmuWxbzzFahs', 0)",
];

/// Verified against when the user does not exist, so unknown users cost the same as wrong passwords.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$kXOdYX/Xzmm2NjxzW0G0fQ$9f4+xt57UtQr6lCBmFQ6sWg5sJk9cToosYgKMnhbHOo";

const FIND_USER: &str = "SELECT user_id, role, password_hash, disabled FROM users WHERE tenant_id = ? AND username = ?";

pub fn open(seed_demo: bool) -> anyhow::Result<Connection> {
    let conn = Connection::open("identity").context("opening the identity database")?;
    let statements: Vec<&str> = MIGRATION.iter().chain(if seed_demo { DEMO_SEED } else { &[] }).copied().collect();
    health_spin::audit::migrate(&conn, SCHEMA_VERSION, &statements)?;
    Ok(conn)
}

pub struct User {
    pub user_id: String,
    pub role: Role,
}

fn password_matches(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
}

/// The user if `password` is right and the account enabled; `None` for every other case,
/// after the same argon2id work.
pub fn authenticate(
    conn: &Connection,
    tenant: &TenantId,
    username: &Username,
    password: &str,
) -> anyhow::Result<Option<User>> {
    let rows = conn
        .execute(FIND_USER, &[Value::Text(tenant.to_string()), Value::Text(username.to_string())])
        .context("looking up user")?;
    let Some(row) = rows.rows().next() else {
        password_matches(DUMMY_HASH, password);
        return Ok(None);
    };
    let hash = row.get::<&str>("password_hash").context("user row without password hash")?;
    let matches = password_matches(hash, password);
    let disabled = row.get::<i64>("disabled").unwrap_or(1) != 0;
    let role = row.get::<&str>("role").and_then(Role::parse).context("user row with unknown role")?;
    let user_id = row.get::<&str>("user_id").context("user row without id")?.to_owned();
    Ok((matches && !disabled).then_some(User { user_id, role }))
}
