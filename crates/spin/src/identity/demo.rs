//! The demo tenant's accounts in `identity`: its users and its insurer client, seeded with the
//! schema when `demo_tenant` is on (`super::open`). Data only: the store does not depend on it,
//! and a deployment without the demo tenant never runs it. The users match the subjects the
//! `records` demo data names (`crate::records`).

use anyhow::Context;

use crate::db::Sql;

/// Demo users: argon2id (m=19456 KiB, t=2, p=1), passwords `<name>-demo-2026` as in the README.
const SEED: &[&str] = &[
    "INSERT OR IGNORE INTO users VALUES ('demo-hospital', 'u-alice', 'alice', 'patient', '$argon2id$v=19$m=19456,t=2,p=1$bFC3W6feZiVOOVQttOaOsw$GbnfoNrRyB80dUJnV4KXb06JA25FKAwEeboGrZPmyg0', 0)",
    "INSERT OR IGNORE INTO users VALUES ('demo-hospital', 'u-bob', 'bob', 'patient', '$argon2id$v=19$m=19456,t=2,p=1$o+fWHPerrmMYsqMvEhz1KA$/q0vVw2u8sjl6WKpg8AtIfQMXwU9KMvsk2qko8owNgQ', 0)",
    "INSERT OR IGNORE INTO users VALUES ('demo-hospital', 'u-dr-grey', 'dr-grey', 'doctor', '$argon2id$v=19$m=19456,t=2,p=1$3ourI53otPuaaVqvyx4eQg$UnxSG/nxyxg79X3rwA6qf3NhWT+2FPU5Cq3pNJtHNHM', 0)",
    "INSERT OR IGNORE INTO users VALUES ('demo-hospital', 'u-lab-north', 'lab-north', 'lab', '$argon2id$v=19$m=19456,t=2,p=1$wz77W+KgA45mP8ATgBMacw$WCL4Adu4zLDLYzEAfqbkgQHOQCJO2qg/GUgLvWsh5CM', 0)",
    "INSERT OR IGNORE INTO users VALUES ('demo-hospital', 'u-acme', 'acme-insurance', 'insurance', '$argon2id$v=19$m=19456,t=2,p=1$q6w/8jPlw9/qQQkYLm1SiA$gpF+YV/To/3wyf6DT6bdnOwwDFBAHNCscihf5QF4INM', 0)",
    "INSERT OR IGNORE INTO users VALUES ('demo-hospital', 'u-admin', 'admin', 'admin', '$argon2id$v=19$m=19456,t=2,p=1$OjLppgld3Z+frmpsTlQJYw$ANCq72YwLjBd4ju5zn+fXjlSDRM9B+kcmuWxbzzFahs', 0)",
    // The demo insurer `acme-health`: client secret `acme-health-demo-secret-2026` (SHA-256
    // below) and the public half of demo/acme-health.enc.jwk.json as its encryption key.
    r#"INSERT OR IGNORE INTO clients VALUES ('acme-health', 'demo-hospital', 'ACME Health Insurance',
        '0f2393d487a8f21ba6299f6945a6875b8322a2959faf58b9b80ab1a8d898c124', NULL,
        '{"kty":"EC","kid":"j1I79990cDF0AUnzVq3GzsTOOjiobg8FQHYtwrF6oeU","use":"enc","alg":"ECDH-ES+A256KW","crv":"P-256","x":"WKcy1z8OOdNtjz3q85jyEnJ5L1aJI_pK9_tP7oXpgtg","y":"TKs_K9WkBCeUiYjtOo8qX9ZSgOuLQ-StcgkjI5n7Rc8","tenant_id":"demo-hospital"}',
        0, 0)"#,
];

/// Inserts the demo accounts, inside the migration's transaction (`crate::db::migrate`); `INSERT
/// OR IGNORE`, so rows an earlier run left are kept as they are.
pub(super) fn seed(conn: &impl Sql) -> anyhow::Result<()> {
    for statement in SEED {
        conn.execute(statement, &[]).context("seeding the demo tenant")?;
    }
    Ok(())
}
