//! The `records` database shared by the role services: schema, demo data and the queries for
//! resource facts that policy needs. Each service opens it with its own capability.

use anyhow::Context;
use spin_sdk::sqlite::{Connection, Value};

/// The records database label in spin.toml.
pub const DATABASE: &str = "records";
const SCHEMA_VERSION: i64 = 1;

const MIGRATION: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS patients (
        tenant_id TEXT NOT NULL,
        patient_id TEXT NOT NULL,
        owner_subject TEXT,
        given_name TEXT NOT NULL,
        family_name TEXT NOT NULL,
        birth_date TEXT NOT NULL,
        PRIMARY KEY (tenant_id, patient_id)
    )",
    "CREATE TABLE IF NOT EXISTS care_team (
        tenant_id TEXT NOT NULL,
        patient_id TEXT NOT NULL,
        doctor_subject TEXT NOT NULL,
        active INTEGER NOT NULL DEFAULT 1,
        PRIMARY KEY (tenant_id, patient_id, doctor_subject)
    )",
    "CREATE TABLE IF NOT EXISTS record_entries (
        tenant_id TEXT NOT NULL,
        entry_id TEXT NOT NULL,
        patient_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        content TEXT NOT NULL,
        author_subject TEXT NOT NULL,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (tenant_id, entry_id)
    )",
    "CREATE INDEX IF NOT EXISTS entries_by_patient ON record_entries (tenant_id, patient_id)",
];

/// Demo tenant data, inserted idempotently. Subjects match the users seeded by `auth`.
const DEMO_SEED: &[&str] = &[
    "INSERT OR IGNORE INTO patients VALUES ('demo-hospital', 'p-1001', 'u-alice', 'Alice', 'Andersen', '1984-03-12')",
    "INSERT OR IGNORE INTO patients VALUES ('demo-hospital', 'p-1002', 'u-bob', 'Bob', 'Berg', '1971-11-02')",
    "INSERT OR IGNORE INTO care_team VALUES ('demo-hospital', 'p-1001', 'u-dr-grey', 1)",
    "INSERT OR IGNORE INTO record_entries VALUES ('demo-hospital', 'e-1', 'p-1001', 'diagnosis',
        'Type 2 diabetes mellitus without complications (E11.9)', 'u-dr-grey', 1767225600)",
    "INSERT OR IGNORE INTO record_entries VALUES ('demo-hospital', 'e-2', 'p-1001', 'medication',
        'Metformin 500 mg twice daily', 'u-dr-grey', 1767225600)",
    "INSERT OR IGNORE INTO record_entries VALUES ('demo-hospital', 'e-3', 'p-1002', 'diagnosis',
        'Essential hypertension (I10)', 'u-dr-grey', 1767225600)",
];

const PATIENT: &str =
    "SELECT owner_subject, given_name, family_name, birth_date FROM patients WHERE tenant_id = ? AND patient_id = ?";
const ON_CARE_TEAM: &str =
    "SELECT 1 FROM care_team WHERE tenant_id = ? AND patient_id = ? AND doctor_subject = ? AND active = 1";
const ENTRIES: &str = "SELECT entry_id, kind, content, author_subject, updated_at FROM record_entries
    WHERE tenant_id = ? AND patient_id = ? ORDER BY updated_at, entry_id";

/// Opens `records`, creating the schema (and the demo tenant's data when `seed_demo`) on first use.
pub fn open(seed_demo: bool) -> anyhow::Result<Connection> {
    let conn = Connection::open(DATABASE).context("opening the records database")?;
    let statements: Vec<&str> = MIGRATION.iter().chain(if seed_demo { DEMO_SEED } else { &[] }).copied().collect();
    crate::audit::migrate(&conn, SCHEMA_VERSION, &statements)?;
    Ok(conn)
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Patient {
    pub patient_id: String,
    #[serde(skip)]
    pub owner_subject: Option<String>,
    pub given_name: String,
    pub family_name: String,
    pub birth_date: String,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Entry {
    pub entry_id: String,
    pub kind: String,
    pub content: String,
    pub author: String,
    pub updated_at: i64,
}

fn text(v: &str) -> Value {
    Value::Text(v.to_owned())
}

pub fn patient(conn: &Connection, tenant: &str, patient_id: &str) -> anyhow::Result<Option<Patient>> {
    let rows = conn.execute(PATIENT, &[text(tenant), text(patient_id)]).context("reading patient")?;
    Ok(rows.rows().next().map(|r| Patient {
        patient_id: patient_id.to_owned(),
        owner_subject: r.get::<&str>("owner_subject").map(str::to_owned),
        given_name: r.get::<&str>("given_name").unwrap_or_default().to_owned(),
        family_name: r.get::<&str>("family_name").unwrap_or_default().to_owned(),
        birth_date: r.get::<&str>("birth_date").unwrap_or_default().to_owned(),
    }))
}

pub fn on_care_team(conn: &Connection, tenant: &str, patient_id: &str, doctor: &str) -> anyhow::Result<bool> {
    let rows =
        conn.execute(ON_CARE_TEAM, &[text(tenant), text(patient_id), text(doctor)]).context("reading care team")?;
    Ok(rows.rows().next().is_some())
}

pub fn entries(conn: &Connection, tenant: &str, patient_id: &str) -> anyhow::Result<Vec<Entry>> {
    let rows = conn.execute(ENTRIES, &[text(tenant), text(patient_id)]).context("reading record entries")?;
    Ok(rows
        .rows()
        .map(|r| Entry {
            entry_id: r.get::<&str>("entry_id").unwrap_or_default().to_owned(),
            kind: r.get::<&str>("kind").unwrap_or_default().to_owned(),
            content: r.get::<&str>("content").unwrap_or_default().to_owned(),
            author: r.get::<&str>("author_subject").unwrap_or_default().to_owned(),
            updated_at: r.get::<i64>("updated_at").unwrap_or_default(),
        })
        .collect())
}
