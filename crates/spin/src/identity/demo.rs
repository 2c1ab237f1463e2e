//! The demo tenant's accounts in `identity`: its users and its insurer client, seeded with the
//! schema when `demo_tenant` is on (`super::open`). Data only: the store does not depend on it,
//! and a deployment without the demo tenant never runs it. The users match the subjects the
//! `records` demo data names (`crate::records`).

use anyhow::Context;
use spin_sdk::sqlite::Value;

use crate::db::Sql;

/// Demo users `(user_id, username, role, password hash)`: argon2id (m=19456 KiB, t=2, p=1),
/// passwords `<name>-demo-2026` as in the README.
#[rustfmt::skip]
const USERS: &[[&str; 4]] = &[
    ["u-alice", "alice", "patient", "$argon2id$v=19$m=19456,t=2,p=1$bFC3W6feZiVOOVQttOaOsw$GbnfoNrRyB80dUJnV4KXb06JA25FKAwEeboGrZPmyg0"],
    ["u-bob", "bob", "patient", "$argon2id$v=19$m=19456,t=2,p=1$o+fWHPerrmMYsqMvEhz1KA$/q0vVw2u8sjl6WKpg8AtIfQMXwU9KMvsk2qko8owNgQ"],
    ["u-dr-grey", "dr-grey", "doctor", "$argon2id$v=19$m=19456,t=2,p=1$3ourI53otPuaaVqvyx4eQg$UnxSG/nxyxg79X3rwA6qf3NhWT+2FPU5Cq3pNJtHNHM"],
    ["u-lab-north", "lab-north", "lab", "$argon2id$v=19$m=19456,t=2,p=1$wz77W+KgA45mP8ATgBMacw$WCL4Adu4zLDLYzEAfqbkgQHOQCJO2qg/GUgLvWsh5CM"],
    ["u-acme", "acme-insurance", "insurance", "$argon2id$v=19$m=19456,t=2,p=1$q6w/8jPlw9/qQQkYLm1SiA$gpF+YV/To/3wyf6DT6bdnOwwDFBAHNCscihf5QF4INM"],
    ["u-admin", "admin", "admin", "$argon2id$v=19$m=19456,t=2,p=1$OjLppgld3Z+frmpsTlQJYw$ANCq72YwLjBd4ju5zn+fXjlSDRM9B+kcmuWxbzzFahs"],
];

/// The demo insurer `acme-health`: client secret `acme-health-demo-secret-2026` (its SHA-256) and
/// the public half of demo/acme-health.enc.jwk.json as its encryption key.
const ACME_SECRET_HASH: &str = "0f2393d487a8f21ba6299f6945a6875b8322a2959faf58b9b80ab1a8d898c124";
const ACME_ENC_JWK: &str = r#"{"kty":"EC","kid":"j1I79990cDF0AUnzVq3GzsTOOjiobg8FQHYtwrF6oeU","use":"enc","alg":"ECDH-ES+A256KW","crv":"P-256","x":"WKcy1z8OOdNtjz3q85jyEnJ5L1aJI_pK9_tP7oXpgtg","y":"TKs_K9WkBCeUiYjtOo8qX9ZSgOuLQ-StcgkjI5n7Rc8","tenant_id":"demo-hospital"}"#;

// Values as bound parameters, never in the SQL text: Spin names its trace spans after the
// statement (`spin_sqlite.execute`), and a password hash is a secret.
const INSERT_USER: &str = "INSERT OR IGNORE INTO users VALUES (?, ?, ?, ?, ?, 0)";
const INSERT_CLIENT: &str = "INSERT OR IGNORE INTO clients VALUES (?, ?, ?, ?, NULL, ?, 0, 0)";

/// Inserts the demo accounts, inside the migration's transaction (`crate::db::migrate`); `INSERT
/// OR IGNORE`, so rows an earlier run left are kept as they are.
pub(super) fn seed(conn: &impl Sql) -> anyhow::Result<()> {
    let text = |value: &str| Value::Text(value.to_owned());
    for [user_id, username, role, hash] in USERS {
        let params = [health_core::DEMO_TENANT, user_id, username, role, hash].map(text);
        conn.execute(INSERT_USER, &params).context("seeding the demo tenant's users")?;
    }
    let params = ["acme-health", health_core::DEMO_TENANT, "ACME Health Insurance", ACME_SECRET_HASH, ACME_ENC_JWK];
    conn.execute(INSERT_CLIENT, &params.map(text)).context("seeding the demo insurer")?;
    Ok(())
}
