//! The `records` database shared by the role services: schema, the PHI key store behind
//! field-level encryption (ARCHITECTURE.md §8; the format is `health_core::phi`), demo data, and
//! the queries for the resource facts policy needs. Each service opens it with its own
//! capability and reads only through these functions, so every PHI field is sealed on the way
//! in and opened on the way out in one place.
//!
//! The key store ([`Vault`]: data keys wrapped under `phi_wrapping_key`, per-patient keys under
//! the data keys, crypto-shredding) and the functions that seal and open through it run over
//! any [`Sql`] connection, so creating a patient's key under concurrency, erasure and a wrong
//! wrapping key are tested natively on real SQLite.

use std::collections::HashMap;

use anyhow::Context;
use health_core::phi::{self, Field, PhiError};
use health_core::{ClientId, EntryId, IdError, LabId, Opaque, OrderId, PatientId, SecretKey, TenantId};
use spin_sdk::sqlite::{Connection, Row, Value};

use crate::db::{self, Migration, Sql, Step};

/// The records database label in spin.toml.
pub const DATABASE: &str = "records";

/// The schema (see [`crate::db::migrate`]). Version 1 stored the demo records in clear and had
/// no write route, so it held nothing but the demo seed: version 2 drops its tables and the
/// seed is written again, encrypted. Version 3 replaces the care team's on/off flag with
/// memberships that have a start, an optional end and a reason; every active row of version 2
/// (only the demo seed had a way in) becomes a membership from [`DEMO_TIME`] with no end.
/// Version 4 allows one record per patient account. Version 5 versions the record entries.
pub const MIGRATIONS: &[Migration<'static>] = &[
    Migration { version: 2, steps: VERSION_2 },
    Migration { version: 3, steps: VERSION_3 },
    Migration { version: 4, steps: VERSION_4 },
    Migration { version: 5, steps: VERSION_5 },
    Migration { version: 6, steps: VERSION_6 },
];

/// Version 6: lab organisations (issue 16). A tenant admin registers a lab (`lab_org`) and
/// attaches lab users to it (`lab_member`); an order belongs to a lab organisation
/// (`lab_order.lab_id`) and any member of it works the order. Each lab user an earlier order
/// was assigned to becomes an organisation of its own, with the user's id as its id and the
/// user as its only member, so every order stays with exactly the user who could work it.
/// `lab_order.lab_subject` keeps that earlier assignment (empty for later orders), and
/// `lab_order.note` holds the ordering doctor's note to the lab, sealed.
const VERSION_6: &[Step<'static>] = &[
    Step::Sql(
        "CREATE TABLE IF NOT EXISTS lab_org (
        tenant_id TEXT NOT NULL,
        lab_id TEXT NOT NULL,
        name TEXT NOT NULL,
        registered_by TEXT NOT NULL,
        registered_at INTEGER NOT NULL,
        PRIMARY KEY (tenant_id, lab_id)
    )",
    ),
    Step::Sql(
        "CREATE TABLE IF NOT EXISTS lab_member (
        tenant_id TEXT NOT NULL,
        lab_id TEXT NOT NULL,
        member_subject TEXT NOT NULL,
        added_by TEXT NOT NULL,
        added_at INTEGER NOT NULL,
        PRIMARY KEY (tenant_id, lab_id, member_subject)
    )",
    ),
    Step::Sql("CREATE INDEX IF NOT EXISTS lab_member_by_member ON lab_member (tenant_id, member_subject)"),
    Step::AddColumn { table: "lab_order", column: "lab_id", definition: "TEXT" },
    Step::AddColumn { table: "lab_order", column: "note", definition: "TEXT" },
    Step::Sql("UPDATE lab_order SET lab_id = lab_subject WHERE lab_id IS NULL"),
    Step::Sql(
        "INSERT OR IGNORE INTO lab_org (tenant_id, lab_id, name, registered_by, registered_at)
        SELECT DISTINCT tenant_id, lab_subject, lab_subject, 'migration', 1767225600 FROM lab_order
        WHERE lab_subject <> ''",
    ),
    Step::Sql(
        "INSERT OR IGNORE INTO lab_member (tenant_id, lab_id, member_subject, added_by, added_at)
        SELECT DISTINCT tenant_id, lab_subject, lab_subject, 'migration', 1767225600 FROM lab_order
        WHERE lab_subject <> ''",
    ),
    Step::Sql("CREATE INDEX IF NOT EXISTS lab_order_by_org ON lab_order (tenant_id, lab_id, status)"),
];

/// Version 5: versioned record entries. `entry` holds the current version: its number (an
/// entry of before is version 1) and the sealed reason it was written for (none for a first
/// version). `entry_version` keeps every version a correction replaced, sealed again under its
/// own row's place, so an update never destroys what was there.
const VERSION_5: &[Step<'static>] = &[
    Step::AddColumn { table: "entry", column: "version", definition: "INTEGER NOT NULL DEFAULT 1" },
    Step::AddColumn { table: "entry", column: "reason", definition: "TEXT" },
    Step::Sql(
        "CREATE TABLE IF NOT EXISTS entry_version (
        tenant_id TEXT NOT NULL,
        entry_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        patient_id TEXT NOT NULL,
        content TEXT NOT NULL,
        author_subject TEXT NOT NULL,
        reason TEXT,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (tenant_id, entry_id, version)
    )",
    ),
];

/// Version 4: one patient record per account. A tenant admin links a patient's user account to
/// their record (`PUT /api/admin/patients/{id}/account`); the index makes a second record for
/// the same account impossible, however many links race.
const VERSION_4: &[Step<'static>] = &[Step::Sql(
    "CREATE UNIQUE INDEX IF NOT EXISTS patient_by_owner ON patient (tenant_id, owner_subject)
    WHERE owner_subject IS NOT NULL",
)];

const VERSION_3: &[Step<'static>] = &[
    Step::Sql(
        "CREATE TABLE IF NOT EXISTS care_team_membership (
        tenant_id TEXT NOT NULL,
        membership_id TEXT NOT NULL,
        patient_id TEXT NOT NULL,
        member_subject TEXT NOT NULL,
        reason TEXT NOT NULL,
        starts_at INTEGER NOT NULL,
        ends_at INTEGER,
        added_by TEXT NOT NULL,
        added_at INTEGER NOT NULL,
        ended_by TEXT,
        PRIMARY KEY (tenant_id, membership_id)
    )",
    ),
    Step::Sql(
        "CREATE INDEX IF NOT EXISTS care_team_by_patient
        ON care_team_membership (tenant_id, patient_id, member_subject)",
    ),
    Step::Sql("CREATE INDEX IF NOT EXISTS care_team_by_member ON care_team_membership (tenant_id, member_subject)"),
    Step::Sql(
        "INSERT OR IGNORE INTO care_team_membership
        (tenant_id, membership_id, patient_id, member_subject, reason, starts_at, ends_at, added_by, added_at)
        SELECT tenant_id, 'ct-' || lower(hex(randomblob(8))), patient_id, doctor_subject, 'other', 1767225600, NULL,
            'migration', 1767225600
        FROM care_team WHERE active = 1",
    ),
    Step::Sql("DROP TABLE IF EXISTS care_team"),
];

const VERSION_2: &[Step<'static>] = &[
    Step::Sql("DROP TABLE IF EXISTS record_entries"),
    Step::Sql("DROP TABLE IF EXISTS patients"),
    Step::Sql(
        "CREATE TABLE IF NOT EXISTS patient (
        tenant_id TEXT NOT NULL,
        patient_id TEXT NOT NULL,
        owner_subject TEXT,
        given_name TEXT NOT NULL,
        family_name TEXT NOT NULL,
        birth_date TEXT NOT NULL,
        erased_at INTEGER,
        PRIMARY KEY (tenant_id, patient_id)
    )",
    ),
    // Replaced by `care_team_membership` in version 3 (which moves its rows there).
    Step::Sql(
        "CREATE TABLE IF NOT EXISTS care_team (
        tenant_id TEXT NOT NULL,
        patient_id TEXT NOT NULL,
        doctor_subject TEXT NOT NULL,
        active INTEGER NOT NULL DEFAULT 1,
        PRIMARY KEY (tenant_id, patient_id, doctor_subject)
    )",
    ),
    Step::Sql(
        "CREATE TABLE IF NOT EXISTS entry (
        tenant_id TEXT NOT NULL,
        entry_id TEXT NOT NULL,
        patient_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        content TEXT NOT NULL,
        author_subject TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (tenant_id, entry_id)
    )",
    ),
    Step::Sql("CREATE INDEX IF NOT EXISTS entry_by_patient ON entry (tenant_id, patient_id)"),
    Step::Sql(
        "CREATE TABLE IF NOT EXISTS lab_order (
        tenant_id TEXT NOT NULL,
        order_id TEXT NOT NULL,
        patient_id TEXT NOT NULL,
        lab_subject TEXT NOT NULL,
        test_code TEXT NOT NULL,
        test_name TEXT NOT NULL,
        ordered_by TEXT NOT NULL,
        ordered_at INTEGER NOT NULL,
        status TEXT NOT NULL,
        PRIMARY KEY (tenant_id, order_id)
    )",
    ),
    Step::Sql("CREATE INDEX IF NOT EXISTS lab_order_by_lab ON lab_order (tenant_id, lab_subject, status)"),
    Step::Sql(
        "CREATE TABLE IF NOT EXISTS lab_result (
        tenant_id TEXT NOT NULL,
        result_id TEXT NOT NULL,
        order_id TEXT NOT NULL,
        patient_id TEXT NOT NULL,
        code TEXT NOT NULL,
        value TEXT NOT NULL,
        unit TEXT NOT NULL,
        note TEXT,
        lab_subject TEXT NOT NULL,
        resulted_at INTEGER NOT NULL,
        PRIMARY KEY (tenant_id, result_id)
    )",
    ),
    Step::Sql("CREATE INDEX IF NOT EXISTS lab_result_by_patient ON lab_result (tenant_id, patient_id)"),
    Step::Sql(
        "CREATE TABLE IF NOT EXISTS consent (
        tenant_id TEXT NOT NULL,
        patient_id TEXT NOT NULL,
        insurer TEXT NOT NULL,
        granted_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        revoked_at INTEGER,
        PRIMARY KEY (tenant_id, patient_id, insurer)
    )",
    ),
    Step::Sql(
        "CREATE TABLE IF NOT EXISTS break_glass (
        tenant_id TEXT NOT NULL,
        patient_id TEXT NOT NULL,
        doctor_subject TEXT NOT NULL,
        granted_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        PRIMARY KEY (tenant_id, patient_id, doctor_subject, granted_at)
    )",
    ),
    Step::Sql(
        "CREATE TABLE IF NOT EXISTS data_key (
        tenant_id TEXT NOT NULL,
        key_id TEXT NOT NULL,
        wrapped TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (tenant_id, key_id)
    )",
    ),
    Step::Sql(
        "CREATE TABLE IF NOT EXISTS patient_key (
        tenant_id TEXT NOT NULL,
        patient_id TEXT NOT NULL,
        data_key_id TEXT NOT NULL,
        wrapped TEXT NOT NULL,
        PRIMARY KEY (tenant_id, patient_id, data_key_id)
    )",
    ),
];

/// 2026-01-01T00:00:00Z, the demo data's timestamps.
const DEMO_TIME: i64 = 1_767_225_600;

/// Opens `records`, creating the schema and, when `seed_demo`, the demo tenant's data
/// (encrypted like any other) the first time.
pub fn open(seed_demo: bool) -> anyhow::Result<Connection> {
    let conn = db::open(DATABASE)?;
    db::migrate(&conn, MIGRATIONS, |conn| if seed_demo { seed(conn) } else { Ok(()) })?;
    Ok(conn)
}

/// Opens `records` as a role service does: demo data per the `demo_tenant` variable.
pub fn open_for_service() -> anyhow::Result<Connection> {
    open(crate::var("demo_tenant").is_ok_and(|v| v == "true"))
}

fn text(v: &str) -> Value {
    Value::Text(v.to_owned())
}

fn opt_text(v: Option<&str>) -> Value {
    v.map_or(Value::Null, text)
}

/// An id read back from `records`. Every id was validated on its way in, so one that does not
/// parse is the platform's fault (an internal error), never the caller's, and never a panic.
fn stored_id<T>(row: &Row<'_>, column: &str, parse: fn(&str) -> Result<T, IdError>) -> anyhow::Result<T> {
    let value = row.get::<&str>(column).with_context(|| format!("records: no {column}"))?;
    parse(value).map_err(|e| anyhow::anyhow!("records: stored {column} {value:?} is not valid: {e}"))
}

/// The PHI keys of one tenant, opened lazily and kept for one request. Its storage is the
/// `data_key` and `patient_key` tables over any [`Sql`] connection: Spin's in a role service,
/// real SQLite in native tests.
pub struct Vault<'c, C = Connection> {
    conn: &'c C,
    tenant: TenantId,
    wrapping: SecretKey,
    data_keys: HashMap<String, SecretKey>,
    patient_keys: HashMap<(PatientId, String), Option<SecretKey>>,
    newest: Option<String>,
}

impl<'c, C: Sql> Vault<'c, C> {
    /// The vault of `tenant`, its data keys wrapped under `phi_wrapping_key`: the role services'
    /// own secret, so none of them holds `master_key` (which also opens the tenants' private
    /// signing keys).
    pub fn open(conn: &'c C, tenant: &TenantId) -> anyhow::Result<Self> {
        Ok(Self::with_wrapping_key(conn, tenant, crate::secret_key("phi_wrapping_key")?))
    }

    /// The vault of `tenant` with its data keys wrapped under `wrapping` (native tests; a
    /// component uses [`Vault::open`]).
    pub fn with_wrapping_key(conn: &'c C, tenant: &TenantId, wrapping: SecretKey) -> Self {
        Self {
            conn,
            tenant: tenant.clone(),
            wrapping,
            data_keys: HashMap::new(),
            patient_keys: HashMap::new(),
            newest: None,
        }
    }

    fn data_key(&mut self, key_id: &str) -> anyhow::Result<Option<SecretKey>> {
        if let Some(key) = self.data_keys.get(key_id) {
            return Ok(Some(key.clone()));
        }
        const GET: &str = "SELECT wrapped FROM data_key WHERE tenant_id = ? AND key_id = ?";
        let rows = self.conn.execute(GET, &[text(self.tenant.as_str()), text(key_id)]).context("reading data key")?;
        let Some(wrapped) = rows.rows().next().and_then(|r| r.get::<&str>("wrapped").map(str::to_owned)) else {
            return Ok(None);
        };
        let key = phi::open_data_key(&self.wrapping, self.tenant.as_str(), key_id, &wrapped)
            .map_err(|e| anyhow::anyhow!("data key {key_id} of {} does not open: {e}", self.tenant))?;
        self.data_keys.insert(key_id.to_owned(), key.clone());
        Ok(Some(key))
    }

    /// The id of the tenant's newest data key, creating the first one on first use. Concurrent
    /// first uses may each create one (nothing arbitrates them); every sealed value names the
    /// data key it was sealed under, so all of them open, and later writes agree on the newest.
    pub fn newest_data_key(&mut self) -> anyhow::Result<String> {
        if let Some(id) = &self.newest {
            return Ok(id.clone());
        }
        const NEWEST: &str =
            "SELECT key_id FROM data_key WHERE tenant_id = ? ORDER BY created_at DESC, rowid DESC LIMIT 1";
        let rows = self.conn.execute(NEWEST, &[text(self.tenant.as_str())]).context("reading newest data key")?;
        let id = match rows.rows().next().and_then(|r| r.get::<&str>("key_id").map(str::to_owned)) {
            Some(id) => id,
            None => self.rotate(crate::now())?,
        };
        self.newest = Some(id.clone());
        Ok(id)
    }

    /// Adds a new data key dated `now`; new writes use it, older keys stay to read older values.
    pub fn rotate(&mut self, now: i64) -> anyhow::Result<String> {
        const INSERT: &str = "INSERT INTO data_key (tenant_id, key_id, wrapped, created_at) VALUES (?, ?, ?, ?)";
        let id = format!("dk-{}", crate::random_id());
        let wrapped = phi::new_data_key(&self.wrapping, self.tenant.as_str(), &id, &mut crate::rng());
        self.conn
            .execute(INSERT, &[text(self.tenant.as_str()), text(&id), text(&wrapped), Value::Integer(now)])
            .context("storing data key")?;
        self.newest = Some(id.clone());
        Ok(id)
    }

    /// The patient's key under data key `data_key_id`; `None` once the patient was erased.
    fn patient_key(
        &mut self,
        patient: &PatientId,
        data_key_id: &str,
        create: bool,
    ) -> anyhow::Result<Option<SecretKey>> {
        let slot = (patient.clone(), data_key_id.to_owned());
        if let Some(Some(key)) = self.patient_keys.get(&slot) {
            return Ok(Some(key.clone()));
        }
        const GET: &str = "SELECT wrapped FROM patient_key WHERE tenant_id = ? AND patient_id = ? AND data_key_id = ?";
        // Concurrent first writers race on the primary key and all read back the winner; the
        // insert is refused once the patient is erased, so no key appears after an erasure.
        const CREATE: &str = "INSERT OR IGNORE INTO patient_key (tenant_id, patient_id, data_key_id, wrapped)
            SELECT ?, ?, ?, ? WHERE NOT EXISTS
            (SELECT 1 FROM patient WHERE tenant_id = ? AND patient_id = ? AND erased_at IS NOT NULL)";
        let Some(data_key) = self.data_key(data_key_id)? else {
            return Ok(None);
        };
        let (tenant, patient_id) = (self.tenant.as_str(), patient.as_str());
        let params = [text(tenant), text(patient_id), text(data_key_id)];
        if create {
            let wrapped = phi::new_patient_key(&data_key, tenant, patient_id, data_key_id, &mut crate::rng());
            let mut insert = params.to_vec();
            insert.extend([text(&wrapped), text(tenant), text(patient_id)]);
            self.conn.execute(CREATE, &insert).context("storing patient key")?;
        }
        let rows = self.conn.execute(GET, &params).context("reading patient key")?;
        let key = match rows.rows().next().and_then(|r| r.get::<&str>("wrapped").map(str::to_owned)) {
            None => None,
            Some(wrapped) => Some(
                phi::open_patient_key(&data_key, tenant, patient_id, data_key_id, &wrapped)
                    .map_err(|e| anyhow::anyhow!("patient key of {patient} does not open: {e}"))?,
            ),
        };
        self.patient_keys.insert(slot, key.clone());
        Ok(key)
    }

    /// The key of the patient's content digests ([`phi::content_digest`]): their key under the
    /// oldest data key they have one for, which a rotation keeps, so every digest of theirs is
    /// made with one key; `None` once they are erased (their keys are shredded, and with them
    /// any way to link a digest to a text).
    pub fn digest_key(&mut self, patient: &PatientId) -> anyhow::Result<Option<SecretKey>> {
        const OLDEST: &str = "SELECT pk.data_key_id FROM patient_key pk JOIN data_key dk
            ON dk.tenant_id = pk.tenant_id AND dk.key_id = pk.data_key_id
            WHERE pk.tenant_id = ? AND pk.patient_id = ? ORDER BY dk.created_at, dk.rowid LIMIT 1";
        let params = [text(self.tenant.as_str()), text(patient.as_str())];
        let rows = self.conn.execute(OLDEST, &params).context("reading the patient's oldest key")?;
        let Some(data_key_id) = rows.rows().next().and_then(|r| r.get::<&str>("data_key_id").map(str::to_owned)) else {
            return Ok(None);
        };
        self.patient_key(patient, &data_key_id, false)
    }

    /// Seals a PHI value for `field` of `patient` under the newest data key.
    pub fn seal(
        &mut self,
        patient: &PatientId,
        table: &str,
        row: &str,
        field: &str,
        plaintext: &str,
    ) -> anyhow::Result<String> {
        let data_key_id = self.newest_data_key()?;
        let key = self
            .patient_key(patient, &data_key_id, true)?
            .ok_or_else(|| anyhow::anyhow!("patient {patient} is erased: nothing may be written for them"))?;
        let tenant = self.tenant.clone();
        let place = Field { tenant: tenant.as_str(), table, row, field };
        Ok(phi::seal_field(&key, &data_key_id, &place, plaintext, &mut crate::rng()))
    }

    /// Opens a stored PHI value. The inner error is the data's fault (moved, tampered or
    /// erased), the outer one the platform's.
    pub fn open_field(
        &mut self,
        patient: &PatientId,
        table: &str,
        row: &str,
        field: &str,
        stored: &str,
    ) -> anyhow::Result<Result<String, PhiError>> {
        let data_key_id = match phi::data_key_id(stored) {
            Ok(id) => id.to_owned(),
            Err(e) => return Ok(Err(e)),
        };
        let key = self.patient_key(patient, &data_key_id, false)?;
        let place = Field { tenant: self.tenant.as_str(), table, row, field };
        Ok(phi::open_field(key.as_ref(), &place, stored))
    }

    /// Crypto-shredding: marks the patient erased, then destroys every key of theirs. From then
    /// on nothing can open their PHI, and no new key can be made for them.
    pub fn erase(&mut self, patient: &PatientId, now: i64) -> anyhow::Result<bool> {
        const MARK: &str =
            "UPDATE patient SET erased_at = ? WHERE tenant_id = ? AND patient_id = ? AND erased_at IS NULL
            RETURNING patient_id";
        const SHRED: &str = "DELETE FROM patient_key WHERE tenant_id = ? AND patient_id = ?";
        const WITHDRAW: &str =
            "UPDATE consent SET revoked_at = ? WHERE tenant_id = ? AND patient_id = ? AND revoked_at IS NULL";
        // Deleted rows are overwritten on disk, so the shredded keys do not linger in free pages.
        if let Err(e) = self.conn.execute("PRAGMA secure_delete = ON", &[]) {
            // libSQL's client refuses `PRAGMA secure_delete = ON` before sending it ("unsupported
            // statement", libsql 0.5 `src/parser.rs`); the keys are still gone from the
            // database, only their bytes may linger in the server's free pages.
            crate::log::warn("sqlite_secure_delete_unavailable", e.to_string());
        }
        let (tenant, patient_id) = (text(self.tenant.as_str()), text(patient.as_str()));
        let marked = self
            .conn
            .execute(MARK, &[Value::Integer(now), tenant.clone(), patient_id.clone()])
            .context("marking patient erased")?;
        let erased = marked.rows().next().is_some();
        // Shred even when already marked: a half-finished earlier erasure completes.
        self.conn.execute(SHRED, &[tenant.clone(), patient_id.clone()]).context("destroying patient keys")?;
        self.conn.execute(WITHDRAW, &[Value::Integer(now), tenant, patient_id]).context("withdrawing consents")?;
        self.patient_keys.retain(|(p, _), _| p != patient);
        Ok(erased)
    }
}

/// Demographics as stored (PHI still sealed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatientRow {
    pub patient_id: PatientId,
    /// As stored: policy compares it with the caller's subject; [`PatientRow::owner`] is the id.
    pub owner_subject: Option<String>,
    pub erased: bool,
    given_name: String,
    family_name: String,
    birth_date: String,
}

/// Demographics as returned.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Demographics {
    pub patient_id: PatientId,
    pub given_name: String,
    pub family_name: String,
    pub birth_date: String,
}

impl PatientRow {
    /// The account that owns the record, as the platform's opaque id. Read only where the id is
    /// used as one (erasure disables that account), so a stored value that does not parse
    /// fails that step alone, as an internal error.
    pub fn owner(&self) -> anyhow::Result<Option<Opaque>> {
        let Some(owner) = &self.owner_subject else {
            return Ok(None);
        };
        let id = Opaque::parse(owner)
            .map_err(|e| anyhow::anyhow!("records: stored owner_subject {owner:?} is not valid: {e}"))?;
        Ok(Some(id))
    }
}

const PATIENT: &str = "SELECT owner_subject, given_name, family_name, birth_date, erased_at FROM patient
    WHERE tenant_id = ? AND patient_id = ?";

pub fn patient(conn: &impl Sql, tenant: &TenantId, patient_id: &PatientId) -> anyhow::Result<Option<PatientRow>> {
    let rows = conn.execute(PATIENT, &[text(tenant.as_str()), text(patient_id.as_str())]).context("reading patient")?;
    let Some(r) = rows.rows().next() else {
        return Ok(None);
    };
    let field = |name: &str| r.get::<&str>(name).unwrap_or_default().to_owned();
    Ok(Some(PatientRow {
        patient_id: patient_id.clone(),
        owner_subject: r.get::<&str>("owner_subject").map(str::to_owned),
        erased: r.get::<i64>("erased_at").is_some(),
        given_name: field("given_name"),
        family_name: field("family_name"),
        birth_date: field("birth_date"),
    }))
}

/// Opens a patient's demographics.
pub fn demographics<C: Sql>(
    vault: &mut Vault<'_, C>,
    row: &PatientRow,
) -> anyhow::Result<Result<Demographics, PhiError>> {
    let id = &row.patient_id;
    let mut open = |field: &str, stored: &str| vault.open_field(id, "patient", id.as_str(), field, stored);
    let given_name = match open("given_name", &row.given_name)? {
        Ok(v) => v,
        Err(e) => return Ok(Err(e)),
    };
    let family_name = match open("family_name", &row.family_name)? {
        Ok(v) => v,
        Err(e) => return Ok(Err(e)),
    };
    let birth_date = match open("birth_date", &row.birth_date)? {
        Ok(v) => v,
        Err(e) => return Ok(Err(e)),
    };
    Ok(Ok(Demographics { patient_id: id.clone(), given_name, family_name, birth_date }))
}

/// What registering a patient found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    /// A new record.
    Created,
    /// The same patient was registered before, with the same demographics: nothing changed
    /// (an import run twice).
    Unchanged,
    /// The id is another patient's (other demographics), or an erased patient's.
    Conflict,
}

/// Registers a patient with sealed demographics `[given, family, birth date]`, unless the id is
/// taken: then [`Registration::Unchanged`] if it holds the same demographics, else
/// [`Registration::Conflict`]. The insert is one statement, so two registrations of one id
/// never both create.
pub fn register_patient<C: Sql>(
    vault: &mut Vault<'_, C>,
    patient_id: &PatientId,
    given: [&str; 3],
) -> anyhow::Result<Registration> {
    const INSERT: &str = "INSERT INTO patient
        (tenant_id, patient_id, owner_subject, given_name, family_name, birth_date) VALUES (?, ?, NULL, ?, ?, ?)
        ON CONFLICT DO NOTHING RETURNING patient_id";
    let tenant = vault.tenant.clone();
    // A registered id is compared, never sealed for again (an erased patient's cannot be).
    if let Some(existing) = patient(vault.conn, &tenant, patient_id)? {
        return same_patient(vault, &existing, given);
    }
    let [g, f, b] = seal_demographics(vault, patient_id, given)?;
    let params = [text(tenant.as_str()), text(patient_id.as_str()), g, f, b];
    if vault.conn.execute(INSERT, &params).context("registering patient")?.rows().next().is_some() {
        return Ok(Registration::Created);
    }
    // Another registration of the id came first.
    let existing = patient(vault.conn, &tenant, patient_id)?.context("a patient neither inserted nor found")?;
    same_patient(vault, &existing, given)
}

fn same_patient<C: Sql>(
    vault: &mut Vault<'_, C>,
    existing: &PatientRow,
    given: [&str; 3],
) -> anyhow::Result<Registration> {
    if existing.erased {
        return Ok(Registration::Conflict);
    }
    Ok(match demographics(vault, existing)? {
        Ok(stored) if [stored.given_name.as_str(), &stored.family_name, &stored.birth_date] == given => {
            Registration::Unchanged
        }
        _ => Registration::Conflict,
    })
}

/// Replaces the demographics `[given, family, birth date]` of a patient who has not been
/// erased, sealed afresh; `false` if there is no such patient (or they were erased: their keys
/// are gone, so they are refused before anything is sealed, and the update skips them too).
pub fn update_demographics<C: Sql>(
    vault: &mut Vault<'_, C>,
    patient_id: &PatientId,
    given: [&str; 3],
) -> anyhow::Result<bool> {
    const UPDATE: &str = "UPDATE patient SET given_name = ?, family_name = ?, birth_date = ?
        WHERE tenant_id = ? AND patient_id = ? AND erased_at IS NULL RETURNING patient_id";
    let tenant = vault.tenant.clone();
    if patient(vault.conn, &tenant, patient_id)?.is_none_or(|row| row.erased) {
        return Ok(false);
    }
    let [g, f, b] = seal_demographics(vault, patient_id, given)?;
    let params = [g, f, b, text(tenant.as_str()), text(patient_id.as_str())];
    Ok(vault.conn.execute(UPDATE, &params).context("updating demographics")?.rows().next().is_some())
}

/// What linking an account to a patient record found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Linked {
    /// The account now owns the record.
    Linked,
    /// It already did: nothing changed.
    Unchanged,
    /// The record has no such patient, or the patient was erased.
    NoSuchPatient,
    /// The record is owned by another account.
    RecordTaken,
    /// The account owns another record (of this patient id).
    AccountTaken(PatientId),
}

/// Links `owner` to the patient record: one statement that writes only if the record has no
/// owner and the account owns no other record, so concurrent links cannot give one account
/// two records or one record two accounts (the unique index of schema version 4 backs it).
pub fn link_owner(
    conn: &impl Sql,
    tenant: &TenantId,
    patient_id: &PatientId,
    owner: &Opaque,
) -> anyhow::Result<Linked> {
    const LINK: &str = "UPDATE patient SET owner_subject = ?
        WHERE tenant_id = ? AND patient_id = ? AND erased_at IS NULL AND owner_subject IS NULL
        AND NOT EXISTS (SELECT 1 FROM patient WHERE tenant_id = ? AND owner_subject = ?)
        RETURNING patient_id";
    const OWNED: &str = "SELECT patient_id FROM patient WHERE tenant_id = ? AND owner_subject = ?";
    let (t, o) = (text(tenant.as_str()), text(owner.as_str()));
    let params = [o.clone(), t.clone(), text(patient_id.as_str()), t.clone(), o.clone()];
    if conn.execute(LINK, &params).context("linking patient account")?.rows().next().is_some() {
        return Ok(Linked::Linked);
    }
    let Some(row) = patient(conn, tenant, patient_id)?.filter(|r| !r.erased) else {
        return Ok(Linked::NoSuchPatient);
    };
    if row.owner_subject.as_deref() == Some(owner.as_str()) {
        return Ok(Linked::Unchanged);
    }
    if row.owner_subject.is_some() {
        return Ok(Linked::RecordTaken);
    }
    let owned = conn.execute(OWNED, &[t, o]).context("finding the account's record")?;
    match owned.rows().next().and_then(|r| r.get::<&str>("patient_id").map(PatientId::parse)) {
        Some(Ok(other)) => Ok(Linked::AccountTaken(other)),
        // Taken and released between the two statements: say so, the caller may repeat.
        _ => Ok(Linked::RecordTaken),
    }
}

/// The record `owner`'s account is linked to, unless it was erased (one at most: the unique
/// index of schema version 4).
pub fn owned_patient(conn: &impl Sql, tenant: &TenantId, owner: &Opaque) -> anyhow::Result<Option<PatientId>> {
    const OWNED: &str =
        "SELECT patient_id FROM patient WHERE tenant_id = ? AND owner_subject = ? AND erased_at IS NULL";
    let owned =
        conn.execute(OWNED, &[text(tenant.as_str()), text(owner.as_str())]).context("finding the account's record")?;
    owned
        .rows()
        .next()
        .and_then(|r| r.get::<&str>("patient_id").map(PatientId::parse))
        .transpose()
        .map_err(|e| anyhow::anyhow!("records: stored patient_id is not valid: {e}"))
}

/// Adds a patient with sealed demographics (`INSERT OR IGNORE`: an existing one is kept).
pub fn add_patient<C: Sql>(
    vault: &mut Vault<'_, C>,
    patient_id: &PatientId,
    owner: Option<&Opaque>,
    demographics: [&str; 3],
) -> anyhow::Result<()> {
    const INSERT: &str = "INSERT OR IGNORE INTO patient
        (tenant_id, patient_id, owner_subject, given_name, family_name, birth_date) VALUES (?, ?, ?, ?, ?, ?)";
    let [given, family, birth] = seal_demographics(vault, patient_id, demographics)?;
    let (tenant, row) = (text(vault.tenant.as_str()), text(patient_id.as_str()));
    let owner = opt_text(owner.map(Opaque::as_str));
    vault.conn.execute(INSERT, &[tenant, row, owner, given, family, birth]).context("inserting patient")?;
    Ok(())
}

/// `[given name, family name, birth date]` sealed into the patient row's three fields, as
/// [`demographics`] opens them.
fn seal_demographics<C: Sql>(
    vault: &mut Vault<'_, C>,
    patient_id: &PatientId,
    [given, family, birth]: [&str; 3],
) -> anyhow::Result<[Value; 3]> {
    let row = patient_id.as_str();
    Ok([
        Value::Text(vault.seal(patient_id, "patient", row, "given_name", given)?),
        Value::Text(vault.seal(patient_id, "patient", row, "family_name", family)?),
        Value::Text(vault.seal(patient_id, "patient", row, "birth_date", birth)?),
    ])
}

/// Whether `member` is on the patient's care team at `now`: a membership that has started and
/// has not ended. An ended or expired membership counts for nothing from that second on.
pub fn on_care_team(
    conn: &impl db::Sql,
    tenant: &TenantId,
    patient_id: &PatientId,
    member: &Opaque,
    now: i64,
) -> anyhow::Result<bool> {
    const ON_CARE_TEAM: &str = "SELECT 1 FROM care_team_membership WHERE tenant_id = ?1 AND patient_id = ?2
        AND member_subject = ?3 AND starts_at <= ?4 AND (ends_at IS NULL OR ends_at > ?4) LIMIT 1";
    let params = [text(tenant.as_str()), text(patient_id.as_str()), text(member.as_str()), Value::Integer(now)];
    let rows = conn.execute(ON_CARE_TEAM, &params).context("reading care team")?;
    Ok(rows.rows().next().is_some())
}

/// One care-team membership as returned.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Membership {
    pub membership_id: String,
    pub patient_id: String,
    pub member: String,
    pub reason: String,
    pub starts_at: i64,
    pub ends_at: Option<i64>,
    pub added_by: String,
    pub added_at: i64,
    pub ended_by: Option<String>,
    /// Started and not ended at the time of the request.
    pub active: bool,
}

const MEMBERSHIP_COLUMNS: &str =
    "membership_id, patient_id, member_subject, reason, starts_at, ends_at, added_by, added_at, ended_by";

fn membership_from(r: &spin_sdk::sqlite::Row<'_>, now: i64) -> Membership {
    let field = |name: &str| r.get::<&str>(name).unwrap_or_default().to_owned();
    let starts_at = r.get::<i64>("starts_at").unwrap_or_default();
    let ends_at = r.get::<i64>("ends_at");
    Membership {
        membership_id: field("membership_id"),
        patient_id: field("patient_id"),
        member: field("member_subject"),
        reason: field("reason"),
        starts_at,
        ends_at,
        added_by: field("added_by"),
        added_at: r.get::<i64>("added_at").unwrap_or_default(),
        ended_by: r.get::<&str>("ended_by").map(str::to_owned),
        active: starts_at <= now && ends_at.is_none_or(|end| end > now),
    }
}

/// Every membership of the patient's care team, ended ones too, oldest first.
pub fn care_team(
    conn: &impl db::Sql,
    tenant: &TenantId,
    patient_id: &PatientId,
    now: i64,
) -> anyhow::Result<Vec<Membership>> {
    let sql = format!(
        "SELECT {MEMBERSHIP_COLUMNS} FROM care_team_membership WHERE tenant_id = ? AND patient_id = ?
        ORDER BY starts_at, added_at, membership_id"
    );
    let params = [text(tenant.as_str()), text(patient_id.as_str())];
    let rows = conn.execute(&sql, &params).context("reading care team")?;
    Ok(rows.rows().map(|r| membership_from(&r, now)).collect())
}

/// The memberships `member` holds at `now`, of patients not erased: whom they may see.
pub fn care_team_patients(
    conn: &impl db::Sql,
    tenant: &TenantId,
    member: &Opaque,
    now: i64,
) -> anyhow::Result<Vec<Membership>> {
    let sql = format!(
        "SELECT {MEMBERSHIP_COLUMNS} FROM care_team_membership m WHERE tenant_id = ?1 AND member_subject = ?2
        AND starts_at <= ?3 AND (ends_at IS NULL OR ends_at > ?3)
        AND NOT EXISTS (SELECT 1 FROM patient p WHERE p.tenant_id = ?1 AND p.patient_id = m.patient_id
            AND p.erased_at IS NOT NULL)
        ORDER BY patient_id, starts_at"
    );
    let params = [text(tenant.as_str()), text(member.as_str()), Value::Integer(now)];
    let rows = conn.execute(&sql, &params).context("reading care-team patients")?;
    Ok(rows.rows().map(|r| membership_from(&r, now)).collect())
}

/// A membership to add.
pub struct NewMembership<'a> {
    pub membership_id: &'a str,
    pub patient_id: &'a PatientId,
    pub member: &'a Opaque,
    pub reason: &'a str,
    pub starts_at: i64,
    pub ends_at: Option<i64>,
    pub added_by: &'a Opaque,
}

/// Adds a membership unless the member already holds one that has not ended by `now` (live, or
/// starting later): then `None`, and nothing changes. One conditional `INSERT`, so of two racing
/// requests one adds.
pub fn add_care_team_member(
    conn: &impl db::Sql,
    tenant: &TenantId,
    new: &NewMembership<'_>,
    now: i64,
) -> anyhow::Result<Option<Membership>> {
    const ADD: &str = "INSERT INTO care_team_membership
        (tenant_id, membership_id, patient_id, member_subject, reason, starts_at, ends_at, added_by, added_at)
        SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9 WHERE NOT EXISTS (SELECT 1 FROM care_team_membership
            WHERE tenant_id = ?1 AND patient_id = ?3 AND member_subject = ?4 AND (ends_at IS NULL OR ends_at > ?9))
        ON CONFLICT DO NOTHING RETURNING membership_id";
    let params = [
        text(tenant.as_str()),
        text(new.membership_id),
        text(new.patient_id.as_str()),
        text(new.member.as_str()),
        text(new.reason),
        Value::Integer(new.starts_at),
        new.ends_at.map_or(Value::Null, Value::Integer),
        text(new.added_by.as_str()),
        Value::Integer(now),
    ];
    let added = conn.execute(ADD, &params).context("adding care-team member")?;
    if added.rows().next().is_none() {
        return Ok(None);
    }
    Ok(Some(Membership {
        membership_id: new.membership_id.to_owned(),
        patient_id: new.patient_id.to_string(),
        member: new.member.to_string(),
        reason: new.reason.to_owned(),
        starts_at: new.starts_at,
        ends_at: new.ends_at,
        added_by: new.added_by.to_string(),
        added_at: now,
        ended_by: None,
        active: new.starts_at <= now && new.ends_at.is_none_or(|end| end > now),
    }))
}

/// Ends every membership of `member` in the patient's care team that has not ended by `now`
/// (live, or starting later), as of `now`; the ids of those ended (none: nothing was live).
pub fn end_care_team_membership(
    conn: &impl db::Sql,
    tenant: &TenantId,
    patient_id: &PatientId,
    member: &Opaque,
    ended_by: &Opaque,
    now: i64,
) -> anyhow::Result<Vec<String>> {
    const END: &str = "UPDATE care_team_membership SET ends_at = ?5, ended_by = ?4
        WHERE tenant_id = ?1 AND patient_id = ?2 AND member_subject = ?3 AND (ends_at IS NULL OR ends_at > ?5)
        RETURNING membership_id";
    let params = [
        text(tenant.as_str()),
        text(patient_id.as_str()),
        text(member.as_str()),
        text(ended_by.as_str()),
        Value::Integer(now),
    ];
    let ended = conn.execute(END, &params).context("ending care-team membership")?;
    Ok(ended.rows().filter_map(|r| r.get::<&str>("membership_id").map(str::to_owned)).collect())
}

/// Whether `doctor` holds a break-glass grant for the patient that is still open at `now`.
pub fn break_glass_active(
    conn: &Connection,
    tenant: &TenantId,
    patient_id: &PatientId,
    doctor: &Opaque,
    now: i64,
) -> anyhow::Result<bool> {
    const ACTIVE: &str = "SELECT 1 FROM break_glass WHERE tenant_id = ? AND patient_id = ? AND doctor_subject = ?
        AND granted_at <= ? AND expires_at > ? LIMIT 1";
    let (tenant, patient_id, doctor) = (text(tenant.as_str()), text(patient_id.as_str()), text(doctor.as_str()));
    let params = [tenant, patient_id, doctor, Value::Integer(now), Value::Integer(now)];
    Ok(conn.execute(ACTIVE, &params).context("reading break-glass grants")?.rows().next().is_some())
}

/// A break-glass grant: its window, and whether this request made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    pub granted_at: i64,
    pub expires_at: i64,
    pub new: bool,
}

/// Grants break-glass access until `until`, unless the doctor already holds a live grant for
/// the patient: then that grant stands, unchanged (a repeated request neither extends the
/// window nor counts as a new grant). One conditional `INSERT`, so two racing requests make one.
pub fn grant_break_glass(
    conn: &Connection,
    tenant: &TenantId,
    patient_id: &PatientId,
    doctor: &Opaque,
    now: i64,
    until: i64,
) -> anyhow::Result<Grant> {
    const GRANT: &str = "INSERT INTO break_glass (tenant_id, patient_id, doctor_subject, granted_at, expires_at)
        SELECT ?1, ?2, ?3, ?4, ?5 WHERE NOT EXISTS (SELECT 1 FROM break_glass WHERE tenant_id = ?1
            AND patient_id = ?2 AND doctor_subject = ?3 AND granted_at <= ?4 AND expires_at > ?4)
        ON CONFLICT DO NOTHING RETURNING granted_at";
    const LIVE: &str = "SELECT granted_at, expires_at FROM break_glass WHERE tenant_id = ? AND patient_id = ?
        AND doctor_subject = ? AND granted_at <= ? AND expires_at > ? ORDER BY expires_at DESC LIMIT 1";
    let (tenant, patient_id, doctor) = (text(tenant.as_str()), text(patient_id.as_str()), text(doctor.as_str()));
    let params = [tenant.clone(), patient_id.clone(), doctor.clone(), Value::Integer(now), Value::Integer(until)];
    let inserted = conn.execute(GRANT, &params).context("storing break-glass grant")?;
    if inserted.rows().next().is_some() {
        return Ok(Grant { granted_at: now, expires_at: until, new: true });
    }
    let params = [tenant, patient_id, doctor, Value::Integer(now), Value::Integer(now)];
    let live = conn.execute(LIVE, &params).context("reading the live break-glass grant")?;
    let row = live.rows().next().context("no break-glass grant stored and none live")?;
    Ok(Grant {
        granted_at: row.get::<i64>("granted_at").context("granted_at")?,
        expires_at: row.get::<i64>("expires_at").context("expires_at")?,
        new: false,
    })
}

/// Whether `insurer` holds the patient's consent at `now` (granted, not expired, not revoked).
pub fn consent_active(
    conn: &Connection,
    tenant: &TenantId,
    patient_id: &PatientId,
    insurer: &ClientId,
    now: i64,
) -> anyhow::Result<bool> {
    const ACTIVE: &str = "SELECT 1 FROM consent WHERE tenant_id = ? AND patient_id = ? AND insurer = ?
        AND revoked_at IS NULL AND expires_at > ?";
    let params = [text(tenant.as_str()), text(patient_id.as_str()), text(insurer.as_str()), Value::Integer(now)];
    Ok(conn.execute(ACTIVE, &params).context("reading consent")?.rows().next().is_some())
}

/// Grants (or renews) a consent.
pub fn grant_consent(
    conn: &Connection,
    tenant: &TenantId,
    patient_id: &PatientId,
    insurer: &ClientId,
    now: i64,
    until: i64,
) -> anyhow::Result<()> {
    const GRANT: &str = "INSERT INTO consent (tenant_id, patient_id, insurer, granted_at, expires_at, revoked_at)
        VALUES (?, ?, ?, ?, ?, NULL) ON CONFLICT (tenant_id, patient_id, insurer)
        DO UPDATE SET granted_at = excluded.granted_at, expires_at = excluded.expires_at, revoked_at = NULL";
    let (tenant, patient_id, insurer) = (text(tenant.as_str()), text(patient_id.as_str()), text(insurer.as_str()));
    let params = [tenant, patient_id, insurer, Value::Integer(now), Value::Integer(until)];
    conn.execute(GRANT, &params).context("storing consent")?;
    Ok(())
}

/// Revokes a consent; `false` if there was no live one.
pub fn revoke_consent(
    conn: &Connection,
    tenant: &TenantId,
    patient_id: &PatientId,
    insurer: &ClientId,
    now: i64,
) -> anyhow::Result<bool> {
    const REVOKE: &str = "UPDATE consent SET revoked_at = ? WHERE tenant_id = ? AND patient_id = ? AND insurer = ?
        AND revoked_at IS NULL RETURNING insurer";
    let params = [Value::Integer(now), text(tenant.as_str()), text(patient_id.as_str()), text(insurer.as_str())];
    Ok(conn.execute(REVOKE, &params).context("revoking consent")?.rows().next().is_some())
}

/// A record entry as returned: its current version.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Entry {
    pub entry_id: String,
    pub kind: String,
    pub content: String,
    pub author: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub version: i64,
}

/// The patient's entries, opened; an entry that does not open fails the whole read.
pub fn entries<C: Sql>(
    vault: &mut Vault<'_, C>,
    patient_id: &PatientId,
) -> anyhow::Result<Result<Vec<Entry>, PhiError>> {
    const ENTRIES: &str = "SELECT entry_id, kind, content, author_subject, created_at, updated_at, version FROM entry
        WHERE tenant_id = ? AND patient_id = ? ORDER BY created_at, entry_id";
    let params = [text(vault.tenant.as_str()), text(patient_id.as_str())];
    let rows = vault.conn.execute(ENTRIES, &params).context("reading entries")?;
    let mut out = Vec::new();
    for r in rows.rows() {
        let field = |name: &str| r.get::<&str>(name).unwrap_or_default().to_owned();
        let entry_id = field("entry_id");
        let content = match vault.open_field(patient_id, "entry", &entry_id, "content", &field("content"))? {
            Ok(content) => content,
            Err(e) => return Ok(Err(e)),
        };
        out.push(Entry {
            entry_id,
            kind: field("kind"),
            content,
            author: field("author_subject"),
            created_at: r.get::<i64>("created_at").unwrap_or_default(),
            updated_at: r.get::<i64>("updated_at").unwrap_or_default(),
            version: r.get::<i64>("version").unwrap_or(1),
        });
    }
    Ok(Ok(out))
}

/// The kind of the patient's entry `entry_id` (a kind never changes: a correction keeps it), or
/// `None` if the patient has no such entry. Not PHI: the kind is stored in the clear.
pub fn entry_kind(
    conn: &impl Sql,
    tenant: &TenantId,
    patient_id: &PatientId,
    entry_id: &EntryId,
) -> anyhow::Result<Option<String>> {
    const KIND: &str = "SELECT kind FROM entry WHERE tenant_id = ? AND patient_id = ? AND entry_id = ?";
    let params = [text(tenant.as_str()), text(patient_id.as_str()), text(entry_id.as_str())];
    let rows = conn.execute(KIND, &params).context("reading the entry's kind")?;
    Ok(rows.rows().next().and_then(|r| r.get::<&str>("kind").map(str::to_owned)))
}

/// A fresh entry id: `e-` and 64 random bits in hex.
pub fn new_entry_id() -> anyhow::Result<EntryId> {
    let id = crate::random_hex_id("e");
    EntryId::parse(&id).with_context(|| format!("fresh entry id {id:?}"))
}

/// Adds an entry with sealed content.
pub fn add_entry<C: Sql>(
    vault: &mut Vault<'_, C>,
    patient_id: &PatientId,
    entry_id: &EntryId,
    kind: &str,
    content: &str,
    author: &Opaque,
    now: i64,
) -> anyhow::Result<()> {
    const INSERT: &str = "INSERT OR IGNORE INTO entry
        (tenant_id, entry_id, patient_id, kind, content, author_subject, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)";
    let sealed = vault.seal(patient_id, "entry", entry_id.as_str(), "content", content)?;
    let params = [
        text(vault.tenant.as_str()),
        text(entry_id.as_str()),
        text(patient_id.as_str()),
        text(kind),
        Value::Text(sealed),
        text(author.as_str()),
        Value::Integer(now),
        Value::Integer(now),
    ];
    vault.conn.execute(INSERT, &params).context("inserting entry")?;
    Ok(())
}

/// The place of an earlier version's `field` (`content`, `reason`): a row of its own per
/// version, so a sealed version opens only as that version of that entry.
fn version_row(entry_id: &str, version: i64) -> String {
    format!("{entry_id}/{version}")
}

/// What a correction did: the version it replaced and the one it made, with keyed digests of
/// both contents for the audit log (`health_core::phi::content_digest`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Correction {
    pub from_version: i64,
    pub to_version: i64,
    pub old_digest: String,
    pub new_digest: String,
}

/// A correction to make: the new content, why, by whom and when.
pub struct NewVersion<'a> {
    pub content: &'a str,
    pub reason: &'a str,
    pub author: &'a Opaque,
    pub now: i64,
}

/// Corrects an entry: its current version (content, author, time, reason) is kept in
/// `entry_version`, sealed again under that version's own place, and the entry becomes the
/// next version with the new content and reason. One `BEGIN IMMEDIATE` transaction: two
/// corrections cannot both replace the same version, and if any step fails nothing is
/// changed. `None` if the patient has no such entry; the inner error if the current version
/// does not open (then nothing is written).
pub fn correct_entry<C: Sql>(
    vault: &mut Vault<'_, C>,
    patient_id: &PatientId,
    entry_id: &EntryId,
    new: &NewVersion<'_>,
) -> anyhow::Result<Result<Option<Correction>, PhiError>> {
    // Keys are made before the transaction, so the vault never keeps one a rollback took back:
    // the patient's key under the newest data key, and the digest key.
    let newest = vault.newest_data_key()?;
    let (Some(_), Some(digest_key)) = (vault.patient_key(patient_id, &newest, true)?, vault.digest_key(patient_id)?)
    else {
        return Ok(Err(PhiError::KeyGone));
    };
    let conn = vault.conn;
    db::transaction(conn, |_| correct_in_transaction(vault, &digest_key, patient_id, entry_id, new))
}

fn correct_in_transaction<C: Sql>(
    vault: &mut Vault<'_, C>,
    digest_key: &SecretKey,
    patient_id: &PatientId,
    entry_id: &EntryId,
    new: &NewVersion<'_>,
) -> anyhow::Result<Result<Option<Correction>, PhiError>> {
    const CURRENT: &str = "SELECT content, version, author_subject, updated_at, reason FROM entry
        WHERE tenant_id = ? AND entry_id = ? AND patient_id = ?";
    const KEEP: &str = "INSERT INTO entry_version
        (tenant_id, entry_id, version, patient_id, content, author_subject, reason, created_at)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?)";
    const UPDATE: &str = "UPDATE entry SET content = ?, reason = ?, author_subject = ?, updated_at = ?,
        version = version + 1 WHERE tenant_id = ? AND entry_id = ? AND patient_id = ? AND version = ?
        RETURNING version";
    let (tenant, entry, patient) = (vault.tenant.clone(), entry_id.as_str(), patient_id.as_str());
    let rows = vault
        .conn
        .execute(CURRENT, &[text(tenant.as_str()), text(entry), text(patient)])
        .context("reading the entry to correct")?;
    let Some(row) = rows.rows().next() else {
        return Ok(Ok(None));
    };
    let version = row.get::<i64>("version").context("records: entry without a version")?;
    let old_author = row.get::<&str>("author_subject").context("records: entry without an author")?.to_owned();
    let written_at = row.get::<i64>("updated_at").context("records: entry without a time")?;
    let sealed_content = row.get::<&str>("content").context("records: entry without content")?.to_owned();
    let sealed_reason = row.get::<&str>("reason").map(str::to_owned);
    let old_content = match vault.open_field(patient_id, "entry", entry, "content", &sealed_content)? {
        Ok(v) => v,
        Err(e) => return Ok(Err(e)),
    };
    let old_reason = match sealed_reason {
        None => None,
        Some(sealed) => match vault.open_field(patient_id, "entry", entry, "reason", &sealed)? {
            Ok(v) => Some(v),
            Err(e) => return Ok(Err(e)),
        },
    };
    let kept = version_row(entry, version);
    let kept_content = vault.seal(patient_id, "entry_version", &kept, "content", &old_content)?;
    let kept_reason = old_reason.map(|r| vault.seal(patient_id, "entry_version", &kept, "reason", &r)).transpose()?;
    let keep = [
        text(tenant.as_str()),
        text(entry),
        Value::Integer(version),
        text(patient),
        Value::Text(kept_content),
        text(&old_author),
        kept_reason.map_or(Value::Null, Value::Text),
        Value::Integer(written_at),
    ];
    vault.conn.execute(KEEP, &keep).context("keeping the entry's previous version")?;
    let update = [
        Value::Text(vault.seal(patient_id, "entry", entry, "content", new.content)?),
        Value::Text(vault.seal(patient_id, "entry", entry, "reason", new.reason)?),
        text(new.author.as_str()),
        Value::Integer(new.now),
        text(tenant.as_str()),
        text(entry),
        text(patient),
        Value::Integer(version),
    ];
    let updated = vault.conn.execute(UPDATE, &update).context("writing the entry's new version")?;
    let to_version = updated.rows().next().and_then(|r| r.get::<i64>("version"));
    let to_version = to_version.context("records: the entry changed inside a write transaction")?;
    let digest = |text: &str| phi::content_digest(digest_key, tenant.as_str(), entry, text);
    Ok(Ok(Some(Correction {
        from_version: version,
        to_version,
        old_digest: digest(&old_content),
        new_digest: digest(new.content),
    })))
}

/// One version of a record entry as returned.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EntryVersion {
    pub version: i64,
    pub content: String,
    pub author: String,
    /// When this version was written.
    pub created_at: i64,
    /// Why (none for a first version, written by `POST .../records`).
    pub reason: Option<String>,
}

/// An earlier version of one of the patient's entries (one a correction replaced).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EarlierVersion {
    pub entry_id: String,
    #[serde(flatten)]
    pub version: EntryVersion,
}

/// Every earlier version of the patient's entries, opened, by entry and version: with
/// [`entries`], everything the record holds (the patient's export).
pub fn earlier_versions<C: Sql>(
    vault: &mut Vault<'_, C>,
    patient_id: &PatientId,
) -> anyhow::Result<Result<Vec<EarlierVersion>, PhiError>> {
    const EARLIER: &str = "SELECT entry_id, version, content, author_subject, created_at, reason FROM entry_version
        WHERE tenant_id = ? AND patient_id = ? ORDER BY entry_id, version";
    let params = [text(vault.tenant.as_str()), text(patient_id.as_str())];
    let rows = vault.conn.execute(EARLIER, &params).context("reading earlier entry versions")?;
    let mut out = Vec::new();
    for r in rows.rows() {
        let entry_id = r.get::<&str>("entry_id").context("records: a version without its entry")?.to_owned();
        let version = r.get::<i64>("version").context("records: a version without a number")?;
        let row = version_row(&entry_id, version);
        let stored = r.get::<&str>("content").context("records: a version without content")?.to_owned();
        let content = match vault.open_field(patient_id, "entry_version", &row, "content", &stored)? {
            Ok(v) => v,
            Err(e) => return Ok(Err(e)),
        };
        let reason = match r.get::<&str>("reason").map(str::to_owned) {
            None => None,
            Some(sealed) => match vault.open_field(patient_id, "entry_version", &row, "reason", &sealed)? {
                Ok(v) => Some(v),
                Err(e) => return Ok(Err(e)),
            },
        };
        let author = r.get::<&str>("author_subject").unwrap_or_default().to_owned();
        let created_at = r.get::<i64>("created_at").unwrap_or_default();
        out.push(EarlierVersion { entry_id, version: EntryVersion { version, content, author, created_at, reason } });
    }
    Ok(Ok(out))
}

/// An entry's kind and every version of it, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct History {
    pub kind: String,
    pub versions: Vec<EntryVersion>,
}

/// Every version of one of the patient's entries, newest first; `None` if the patient has no
/// such entry. One statement, so a correction in between cannot show a version twice or none.
pub fn entry_history<C: Sql>(
    vault: &mut Vault<'_, C>,
    patient_id: &PatientId,
    entry_id: &EntryId,
) -> anyhow::Result<Result<Option<History>, PhiError>> {
    const HISTORY: &str = "SELECT 1 AS current, kind, version, content, author_subject, updated_at AS written_at,
            reason FROM entry WHERE tenant_id = ?1 AND entry_id = ?2 AND patient_id = ?3
        UNION ALL
        SELECT 0 AS current, NULL AS kind, v.version, v.content, v.author_subject, v.created_at AS written_at,
            v.reason FROM entry_version v JOIN entry e ON e.tenant_id = v.tenant_id AND e.entry_id = v.entry_id
            AND e.patient_id = v.patient_id
        WHERE v.tenant_id = ?1 AND v.entry_id = ?2 AND v.patient_id = ?3
        ORDER BY version DESC";
    let (tenant, entry) = (vault.tenant.clone(), entry_id.as_str());
    let params = [text(tenant.as_str()), text(entry), text(patient_id.as_str())];
    let rows = vault.conn.execute(HISTORY, &params).context("reading entry history")?;
    let mut kind = None;
    let mut versions = Vec::new();
    for r in rows.rows() {
        let version = r.get::<i64>("version").context("records: a version without a number")?;
        let (table, row) = if r.get::<i64>("current") == Some(1) {
            kind = r.get::<&str>("kind").map(str::to_owned);
            ("entry", entry.to_owned())
        } else {
            ("entry_version", version_row(entry, version))
        };
        let stored = r.get::<&str>("content").context("records: a version without content")?.to_owned();
        let content = match vault.open_field(patient_id, table, &row, "content", &stored)? {
            Ok(v) => v,
            Err(e) => return Ok(Err(e)),
        };
        let reason = match r.get::<&str>("reason").map(str::to_owned) {
            None => None,
            Some(sealed) => match vault.open_field(patient_id, table, &row, "reason", &sealed)? {
                Ok(v) => Some(v),
                Err(e) => return Ok(Err(e)),
            },
        };
        versions.push(EntryVersion {
            version,
            content,
            author: r.get::<&str>("author_subject").unwrap_or_default().to_owned(),
            created_at: r.get::<i64>("written_at").unwrap_or_default(),
            reason,
        });
    }
    Ok(Ok(kind.map(|kind| History { kind, versions })))
}

/// A lab order as a lab sees it: the test, the patient's id and the ordering doctor's note to
/// the lab; no record content.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LabOrder {
    pub order_id: OrderId,
    pub patient_id: PatientId,
    /// The lab organisation the order was placed with.
    pub lab_id: LabId,
    pub test_code: String,
    pub test_name: String,
    pub ordered_at: i64,
    pub status: String,
    /// Opened only where the lab lists its queue.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

const ORDER_COLUMNS: &str = "order_id, patient_id, lab_id, test_code, test_name, ordered_at, status";

fn order_from(r: &Row<'_>) -> anyhow::Result<LabOrder> {
    let field = |name: &str| r.get::<&str>(name).unwrap_or_default().to_owned();
    Ok(LabOrder {
        order_id: stored_id(r, "order_id", OrderId::parse)?,
        patient_id: stored_id(r, "patient_id", PatientId::parse)?,
        lab_id: stored_id(r, "lab_id", LabId::parse)?,
        test_code: field("test_code"),
        test_name: field("test_name"),
        ordered_at: r.get::<i64>("ordered_at").unwrap_or_default(),
        status: field("status"),
        note: None,
    })
}

pub fn lab_order(conn: &impl Sql, tenant: &TenantId, order_id: &OrderId) -> anyhow::Result<Option<LabOrder>> {
    let sql = format!("SELECT {ORDER_COLUMNS} FROM lab_order WHERE tenant_id = ? AND order_id = ?");
    let rows = conn.execute(&sql, &[text(tenant.as_str()), text(order_id.as_str())]).context("reading lab order")?;
    rows.rows().next().map(|r| order_from(&r)).transpose()
}

/// The open orders of every lab organisation `member` belongs to, each with its note opened.
/// An erased patient's orders are not listed: no result can be appended to them.
pub fn open_lab_orders<C: Sql>(
    vault: &mut Vault<'_, C>,
    member: &Opaque,
) -> anyhow::Result<Result<Vec<LabOrder>, PhiError>> {
    let sql = "SELECT o.order_id, o.patient_id, o.lab_id, o.test_code, o.test_name, o.ordered_at, o.status, o.note
        FROM lab_order o JOIN lab_member m ON m.tenant_id = o.tenant_id AND m.lab_id = o.lab_id
        JOIN patient p ON p.tenant_id = o.tenant_id AND p.patient_id = o.patient_id
        WHERE o.tenant_id = ? AND m.member_subject = ? AND o.status = 'open' AND p.erased_at IS NULL
        ORDER BY o.ordered_at, o.order_id";
    let params = [text(vault.tenant.as_str()), text(member.as_str())];
    let rows = vault.conn.execute(sql, &params).context("reading lab orders")?;
    let mut out = Vec::new();
    for r in rows.rows() {
        let mut order = order_from(&r)?;
        if let Some(stored) = r.get::<&str>("note") {
            match vault.open_field(&order.patient_id, "lab_order", order.order_id.as_str(), "note", stored)? {
                Ok(note) => order.note = Some(note),
                Err(e) => return Ok(Err(e)),
            }
        }
        out.push(order);
    }
    Ok(Ok(out))
}

/// Whether `member` belongs to the tenant's lab organisation `lab`: the fact policy needs.
pub fn lab_member(conn: &impl Sql, tenant: &TenantId, lab: &LabId, member: &Opaque) -> anyhow::Result<bool> {
    const MEMBER: &str =
        "SELECT COUNT(*) AS n FROM lab_member WHERE tenant_id = ? AND lab_id = ? AND member_subject = ?";
    let params = [text(tenant.as_str()), text(lab.as_str()), text(member.as_str())];
    let rows = conn.execute(MEMBER, &params).context("reading lab membership")?;
    Ok(rows.rows().next().and_then(|r| r.get::<i64>("n")).unwrap_or(0) > 0)
}

/// A lab organisation of a tenant and its members.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Lab {
    pub lab_id: String,
    pub name: String,
    pub registered_at: i64,
    pub members: Vec<String>,
}

/// What registering a lab organisation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabRegistration {
    Created,
    /// Registered before under the same name: nothing changed.
    Unchanged,
    /// Registered before under another name.
    Conflict,
}

/// Registers the lab organisation `lab` named `name`; idempotent by id.
pub fn register_lab(
    conn: &impl Sql,
    tenant: &TenantId,
    lab: &LabId,
    name: &str,
    by: &Opaque,
    now: i64,
) -> anyhow::Result<LabRegistration> {
    const INSERT: &str = "INSERT OR IGNORE INTO lab_org (tenant_id, lab_id, name, registered_by, registered_at)
        VALUES (?, ?, ?, ?, ?) RETURNING lab_id";
    const NAME: &str = "SELECT name FROM lab_org WHERE tenant_id = ? AND lab_id = ?";
    let params = [text(tenant.as_str()), text(lab.as_str()), text(name), text(by.as_str()), Value::Integer(now)];
    if conn.execute(INSERT, &params).context("registering a lab")?.rows().next().is_some() {
        return Ok(LabRegistration::Created);
    }
    let rows = conn.execute(NAME, &[text(tenant.as_str()), text(lab.as_str())]).context("reading a lab")?;
    let same = rows.rows().next().and_then(|r| r.get::<&str>("name").map(|n| n == name)).unwrap_or(false);
    Ok(if same { LabRegistration::Unchanged } else { LabRegistration::Conflict })
}

/// Whether the tenant has registered the lab organisation `lab`.
pub fn lab_registered(conn: &impl Sql, tenant: &TenantId, lab: &LabId) -> anyhow::Result<bool> {
    const FIND: &str = "SELECT COUNT(*) AS n FROM lab_org WHERE tenant_id = ? AND lab_id = ?";
    let rows = conn.execute(FIND, &[text(tenant.as_str()), text(lab.as_str())]).context("reading a lab")?;
    Ok(rows.rows().next().and_then(|r| r.get::<i64>("n")).unwrap_or(0) > 0)
}

/// The tenant's lab organisations, by id, each with its members.
pub fn labs(conn: &impl Sql, tenant: &TenantId) -> anyhow::Result<Vec<Lab>> {
    const LABS: &str = "SELECT l.lab_id, l.name, l.registered_at, m.member_subject FROM lab_org l
        LEFT JOIN lab_member m ON m.tenant_id = l.tenant_id AND m.lab_id = l.lab_id
        WHERE l.tenant_id = ? ORDER BY l.lab_id, m.member_subject";
    let rows = conn.execute(LABS, &[text(tenant.as_str())]).context("reading labs")?;
    let mut out: Vec<Lab> = Vec::new();
    for r in rows.rows() {
        let lab_id = r.get::<&str>("lab_id").unwrap_or_default().to_owned();
        if out.last().is_none_or(|l| l.lab_id != lab_id) {
            out.push(Lab {
                lab_id,
                name: r.get::<&str>("name").unwrap_or_default().to_owned(),
                registered_at: r.get::<i64>("registered_at").unwrap_or_default(),
                members: Vec::new(),
            });
        }
        if let (Some(lab), Some(member)) = (out.last_mut(), r.get::<&str>("member_subject")) {
            lab.members.push(member.to_owned());
        }
    }
    Ok(out)
}

/// What attaching a lab user did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attached {
    Attached,
    /// Already a member.
    Unchanged,
    NoSuchLab,
}

/// Makes `member` a member of the tenant's lab organisation `lab`.
pub fn attach_lab_member(
    conn: &impl Sql,
    tenant: &TenantId,
    lab: &LabId,
    member: &Opaque,
    by: &Opaque,
    now: i64,
) -> anyhow::Result<Attached> {
    // One statement: the lab cannot be missing between the check and the insert.
    const ATTACH: &str = "INSERT OR IGNORE INTO lab_member (tenant_id, lab_id, member_subject, added_by, added_at)
        SELECT tenant_id, lab_id, ?3, ?4, ?5 FROM lab_org WHERE tenant_id = ?1 AND lab_id = ?2 RETURNING lab_id";
    let params =
        [text(tenant.as_str()), text(lab.as_str()), text(member.as_str()), text(by.as_str()), Value::Integer(now)];
    if conn.execute(ATTACH, &params).context("attaching a lab member")?.rows().next().is_some() {
        return Ok(Attached::Attached);
    }
    Ok(if lab_registered(conn, tenant, lab)? { Attached::Unchanged } else { Attached::NoSuchLab })
}

/// Ends `member`'s membership of `lab` at once; `false` if they were not a member.
pub fn detach_lab_member(conn: &impl Sql, tenant: &TenantId, lab: &LabId, member: &Opaque) -> anyhow::Result<bool> {
    const DETACH: &str =
        "DELETE FROM lab_member WHERE tenant_id = ? AND lab_id = ? AND member_subject = ? RETURNING lab_id";
    let params = [text(tenant.as_str()), text(lab.as_str()), text(member.as_str())];
    Ok(conn.execute(DETACH, &params).context("detaching a lab member")?.rows().next().is_some())
}

/// A test a doctor orders from a lab organisation.
pub struct NewLabOrder<'a> {
    pub order_id: &'a OrderId,
    pub patient_id: &'a PatientId,
    pub lab_id: &'a LabId,
    pub test_code: &'a str,
    pub test_name: &'a str,
    pub note: Option<&'a str>,
    pub ordered_by: &'a Opaque,
}

/// A fresh order id (`o-` and 64 random bits in hex).
pub fn new_order_id() -> anyhow::Result<OrderId> {
    let id = crate::random_hex_id("o");
    OrderId::parse(&id).with_context(|| format!("fresh order id {id:?}"))
}

/// Places an open order with a lab organisation, its note sealed.
pub fn add_lab_order<C: Sql>(vault: &mut Vault<'_, C>, order: &NewLabOrder<'_>, now: i64) -> anyhow::Result<()> {
    const INSERT: &str = "INSERT INTO lab_order
        (tenant_id, order_id, patient_id, lab_subject, test_code, test_name, ordered_by, ordered_at, status, lab_id, note)
        VALUES (?, ?, ?, '', ?, ?, ?, ?, 'open', ?, ?)";
    let id = order.order_id.as_str();
    let note = order.note.map(|n| vault.seal(order.patient_id, "lab_order", id, "note", n)).transpose()?;
    let params = [
        text(vault.tenant.as_str()),
        text(id),
        text(order.patient_id.as_str()),
        text(order.test_code),
        text(order.test_name),
        text(order.ordered_by.as_str()),
        Value::Integer(now),
        text(order.lab_id.as_str()),
        note.map_or(Value::Null, Value::Text),
    ];
    vault.conn.execute(INSERT, &params).context("placing a lab order")?;
    Ok(())
}

/// A patient's lab order as the patient and their doctors see it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PatientLabOrder {
    pub order_id: String,
    pub lab_id: String,
    pub test_code: String,
    pub test_name: String,
    pub ordered_by: String,
    pub ordered_at: i64,
    pub status: String,
    pub note: Option<String>,
    /// The result's id once the order is resulted (in `GET .../lab-results`).
    pub result_id: Option<String>,
}

/// Every lab order of the patient, oldest first, notes opened.
pub fn patient_lab_orders<C: Sql>(
    vault: &mut Vault<'_, C>,
    patient_id: &PatientId,
) -> anyhow::Result<Result<Vec<PatientLabOrder>, PhiError>> {
    const ORDERS: &str = "SELECT o.order_id, o.lab_id, o.test_code, o.test_name, o.ordered_by, o.ordered_at,
        o.status, o.note, r.result_id FROM lab_order o LEFT JOIN lab_result r ON r.tenant_id = o.tenant_id
        AND r.order_id = o.order_id WHERE o.tenant_id = ? AND o.patient_id = ? ORDER BY o.ordered_at, o.order_id";
    let params = [text(vault.tenant.as_str()), text(patient_id.as_str())];
    let rows = vault.conn.execute(ORDERS, &params).context("reading a patient's lab orders")?;
    let mut out = Vec::new();
    for r in rows.rows() {
        let field = |name: &str| r.get::<&str>(name).unwrap_or_default().to_owned();
        let order_id = field("order_id");
        let note = match r.get::<&str>("note") {
            None => None,
            Some(stored) => match vault.open_field(patient_id, "lab_order", &order_id, "note", stored)? {
                Ok(note) => Some(note),
                Err(e) => return Ok(Err(e)),
            },
        };
        out.push(PatientLabOrder {
            order_id,
            lab_id: field("lab_id"),
            test_code: field("test_code"),
            test_name: field("test_name"),
            ordered_by: field("ordered_by"),
            ordered_at: r.get::<i64>("ordered_at").unwrap_or_default(),
            status: field("status"),
            note,
            result_id: r.get::<&str>("result_id").map(str::to_owned),
        });
    }
    Ok(Ok(out))
}

/// A result to append to an order.
pub struct NewResult<'a> {
    pub code: &'a str,
    pub value: &'a str,
    pub unit: &'a str,
    pub note: Option<&'a str>,
}

/// Closes the open order `order_id` of its lab organisation and appends its result, sealed,
/// with the lab user `by` who resulted it. `false` if the order was no longer open (a second
/// submission, or another racing it): exactly one wins.
pub fn append_lab_result<C: Sql>(
    vault: &mut Vault<'_, C>,
    order: &LabOrder,
    by: &Opaque,
    result_id: &str,
    result: &NewResult<'_>,
    now: i64,
) -> anyhow::Result<bool> {
    const CLOSE: &str = "UPDATE lab_order SET status = 'resulted' WHERE tenant_id = ? AND order_id = ? AND lab_id = ?
        AND status = 'open' RETURNING order_id";
    const INSERT: &str = "INSERT INTO lab_result
        (tenant_id, result_id, order_id, patient_id, code, value, unit, note, lab_subject, resulted_at)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
    let patient = &order.patient_id;
    let value = vault.seal(patient, "lab_result", result_id, "value", result.value)?;
    let note = result.note.map(|n| vault.seal(patient, "lab_result", result_id, "note", n)).transpose()?;
    let (tenant, order_id, lab) =
        (text(vault.tenant.as_str()), text(order.order_id.as_str()), text(order.lab_id.as_str()));
    let closed = vault.conn.execute(CLOSE, &[tenant.clone(), order_id.clone(), lab]).context("closing lab order")?;
    if closed.rows().next().is_none() {
        return Ok(false);
    }
    let params = [
        tenant,
        text(result_id),
        order_id,
        text(patient.as_str()),
        text(result.code),
        Value::Text(value),
        text(result.unit),
        note.map_or(Value::Null, Value::Text),
        text(by.as_str()),
        Value::Integer(now),
    ];
    vault.conn.execute(INSERT, &params).context("inserting lab result")?;
    Ok(true)
}

/// A lab result as returned to the patient and their doctors.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LabResultView {
    pub result_id: String,
    pub order_id: String,
    pub code: String,
    pub value: String,
    pub unit: String,
    pub note: Option<String>,
    /// The lab user who resulted the order.
    pub lab: String,
    /// The lab organisation the order was placed with.
    pub lab_id: Option<String>,
    pub resulted_at: i64,
}

pub fn lab_results<C: Sql>(
    vault: &mut Vault<'_, C>,
    patient_id: &PatientId,
) -> anyhow::Result<Result<Vec<LabResultView>, PhiError>> {
    const RESULTS: &str = "SELECT r.result_id, r.order_id, r.code, r.value, r.unit, r.note, r.lab_subject,
        r.resulted_at, o.lab_id FROM lab_result r LEFT JOIN lab_order o ON o.tenant_id = r.tenant_id
        AND o.order_id = r.order_id WHERE r.tenant_id = ? AND r.patient_id = ? ORDER BY r.resulted_at, r.result_id";
    let params = [text(vault.tenant.as_str()), text(patient_id.as_str())];
    let rows = vault.conn.execute(RESULTS, &params).context("reading lab results")?;
    let mut out = Vec::new();
    for r in rows.rows() {
        let field = |name: &str| r.get::<&str>(name).unwrap_or_default().to_owned();
        let result_id = field("result_id");
        let value = match vault.open_field(patient_id, "lab_result", &result_id, "value", &field("value"))? {
            Ok(v) => v,
            Err(e) => return Ok(Err(e)),
        };
        let note = match r.get::<&str>("note") {
            None => None,
            Some(stored) => match vault.open_field(patient_id, "lab_result", &result_id, "note", stored)? {
                Ok(v) => Some(v),
                Err(e) => return Ok(Err(e)),
            },
        };
        out.push(LabResultView {
            result_id,
            order_id: field("order_id"),
            code: field("code"),
            value,
            unit: field("unit"),
            note,
            lab: field("lab_subject"),
            lab_id: r.get::<&str>("lab_id").map(str::to_owned),
            resulted_at: r.get::<i64>("resulted_at").unwrap_or_default(),
        });
    }
    Ok(Ok(out))
}

const SEED_MEMBERSHIP: &str = "INSERT OR IGNORE INTO care_team_membership SELECT ?1, ?2, ?3, ?4, 'primary-care', ?5,
    NULL, 'u-admin', ?5, NULL WHERE NOT EXISTS (SELECT 1 FROM care_team_membership WHERE tenant_id = ?1
    AND patient_id = ?3 AND member_subject = ?4)";
const SEED_ORDER: &str = "INSERT OR IGNORE INTO lab_order
    (tenant_id, order_id, patient_id, lab_subject, test_code, test_name, ordered_by, ordered_at, status, lab_id)
    VALUES (?, ?, ?, '', ?, ?, ?, ?, ?, ?)";
const SEED_LAB: &str = "INSERT OR IGNORE INTO lab_org (tenant_id, lab_id, name, registered_by, registered_at) VALUES (?, ?, ?, 'u-admin', ?)";
const SEED_LAB_MEMBER: &str = "INSERT OR IGNORE INTO lab_member (tenant_id, lab_id, member_subject, added_by, added_at)
    VALUES (?, ?, ?, 'u-admin', ?)";
const SEED_CONSENT: &str = "INSERT OR IGNORE INTO consent VALUES (?, ?, ?, ?, ?, NULL)";
const SEED_RESULT: &str = "INSERT OR IGNORE INTO lab_result VALUES (?, ?, ?, ?, ?, ?, ?, NULL, ?, ?)";

/// The demo tenant: three patients (Carol has no account), a doctor on Alice's and Carol's care
/// team but not Bob's, two lab organisations (`lab-north`, whose member is the demo lab user,
/// and `lab-south`, with none), open orders with `lab-north` and one with `lab-south`, a result, and
/// Carol's consent for the demo insurer. Subjects match the users `auth` seeds. Idempotent.
fn seed(conn: &Connection) -> anyhow::Result<()> {
    let tenant = TenantId::parse(health_core::DEMO_TENANT).context("demo tenant id")?;
    let mut vault = Vault::open(conn, &tenant)?;
    vault.newest_data_key()?;
    let patient_id = |id: &str| PatientId::parse(id).context("demo patient id");
    for (id, owner, names) in [
        ("p-1001", Some("u-alice"), ["Alice", "Andersen", "1984-03-12"]),
        ("p-1002", Some("u-bob"), ["Bob", "Berg", "1971-11-02"]),
        ("p-1003", None, ["Carol", "Castillo", "1990-07-21"]),
    ] {
        let owner = owner.map(Opaque::parse).transpose().context("demo owner")?;
        add_patient(&mut vault, &patient_id(id)?, owner.as_ref(), names)?;
    }
    // Bound parameters, never values in the SQL text: Spin names its trace spans after the
    // statement (`spin_sqlite.execute`), so a patient id written into it would be exported.
    let tenant_value = || text(health_core::DEMO_TENANT);
    for (membership, patient) in [("ct-demo-1", "p-1001"), ("ct-demo-2", "p-1003")] {
        // Not again where version 3 moved the demo's memberships over from version 2.
        conn.execute(
            SEED_MEMBERSHIP,
            &[tenant_value(), text(membership), text(patient), text("u-dr-grey"), Value::Integer(DEMO_TIME)],
        )
        .context("seeding demo care teams")?;
    }
    for (lab, name) in [("lab-north", "North Valley Laboratory"), ("lab-south", "South Bay Diagnostics")] {
        conn.execute(SEED_LAB, &[tenant_value(), text(lab), text(name), Value::Integer(DEMO_TIME)])
            .context("seeding demo labs")?;
    }
    conn.execute(SEED_LAB_MEMBER, &[tenant_value(), text("lab-north"), text("u-lab-north"), Value::Integer(DEMO_TIME)])
        .context("seeding demo lab members")?;
    for (order, patient, lab, code, name, status) in [
        ("o-2000", "p-1001", "lab-north", "2345-7", "Glucose [Moles/volume] in Serum or Plasma", "resulted"),
        ("o-2001", "p-1001", "lab-north", "4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "open"),
        ("o-2002", "p-1003", "lab-north", "57698-3", "Lipid panel with direct LDL", "open"),
        ("o-2003", "p-1002", "lab-south", "3016-3", "Thyrotropin [Units/volume] in Serum or Plasma", "open"),
    ] {
        let params = [order, patient, code, name, "u-dr-grey"].map(text);
        let [order, patient, code, name, doctor] = params;
        let time = Value::Integer(DEMO_TIME);
        conn.execute(SEED_ORDER, &[tenant_value(), order, patient, code, name, doctor, time, text(status), text(lab)])
            .context("seeding demo lab orders")?;
    }
    conn.execute(
        SEED_CONSENT,
        &[tenant_value(), text("p-1003"), text("acme-health"), Value::Integer(DEMO_TIME), Value::Integer(4102444800)],
    )
    .context("seeding demo consent")?;
    let author = Opaque::parse("u-dr-grey").context("demo author")?;
    for (entry, patient, kind, content) in [
        ("e-1", "p-1001", "diagnosis", "Type 2 diabetes mellitus without complications (E11.9)"),
        ("e-2", "p-1001", "medication", "Metformin 500 mg twice daily"),
        ("e-3", "p-1002", "diagnosis", "Essential hypertension (I10)"),
        ("e-4", "p-1003", "diagnosis", "Mild persistent asthma, uncomplicated (J45.30)"),
        ("e-5", "p-1003", "medication", "Budesonide inhaler 200 mcg twice daily"),
    ] {
        let entry = EntryId::parse(entry).context("demo entry id")?;
        add_entry(&mut vault, &patient_id(patient)?, &entry, kind, content, &author, DEMO_TIME)?;
    }
    let value = vault.seal(&patient_id("p-1001")?, "lab_result", "r-1", "value", "7.2")?;
    let [result, order, patient, code, unit, lab] =
        ["r-1", "o-2000", "p-1001", "2345-7", "mmol/L", "u-lab-north"].map(text);
    let time = Value::Integer(DEMO_TIME);
    conn.execute(SEED_RESULT, &[tenant_value(), result, order, patient, code, Value::Text(value), unit, lab, time])
        .context("seeding demo lab result")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::testing::Native;

    fn tenant(id: &str) -> TenantId {
        TenantId::parse(id).expect("tenant id")
    }

    fn patient_id(id: &str) -> PatientId {
        PatientId::parse(id).expect("patient id")
    }

    fn subject(id: &str) -> Opaque {
        Opaque::parse(id).expect("subject")
    }

    fn entry_id(id: &str) -> EntryId {
        EntryId::parse(id).expect("entry id")
    }

    /// The demo tenant, the one most tests use.
    fn t() -> TenantId {
        tenant("demo-hospital")
    }

    /// The patient, member and admin of a membership under test.
    struct Parties {
        patient: PatientId,
        members: [Opaque; 2],
        admin: Opaque,
    }

    impl Parties {
        fn new() -> Self {
            Self { patient: patient_id("p-1"), members: [subject("u-a"), subject("u-b")], admin: subject("u-admin") }
        }

        fn membership<'a>(
            &'a self,
            id: &'a str,
            member: &'a Opaque,
            starts_at: i64,
            ends_at: Option<i64>,
        ) -> NewMembership<'a> {
            NewMembership {
                membership_id: id,
                patient_id: &self.patient,
                member,
                reason: "referral",
                starts_at,
                ends_at,
                added_by: &self.admin,
            }
        }
    }

    #[test]
    fn version_3_turns_active_care_team_rows_into_open_memberships_from_the_demo_time() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let db = Native::open(&dir.path().join("records.db"));
        db::migrate(&db, &MIGRATIONS[..1], |_| Ok(())).expect("version 2");
        for row in [
            "('demo-hospital', 'p-1', 'u-grey', 1)",
            "('demo-hospital', 'p-2', 'u-grey', 0)",
            "('t2', 'p-1', 'u-x', 1)",
        ] {
            db.execute(&format!("INSERT INTO care_team VALUES {row}"), &[]).expect("version 2 row");
        }
        db::migrate(&db, MIGRATIONS, |_| Ok(())).expect("version 3");
        assert_eq!(db.integer("SELECT COUNT(*) FROM care_team_membership"), 2, "the inactive row is not a membership");
        let (p1, p2, grey, x) = (patient_id("p-1"), patient_id("p-2"), subject("u-grey"), subject("u-x"));
        let moved = care_team(&db, &t(), &p1, DEMO_TIME).expect("read");
        assert_eq!(moved.len(), 1);
        assert_eq!((moved[0].member.as_str(), moved[0].starts_at, moved[0].ends_at), ("u-grey", DEMO_TIME, None));
        assert!(on_care_team(&db, &t(), &p1, &grey, DEMO_TIME + 1).expect("read"));
        assert!(!on_care_team(&db, &t(), &p2, &grey, DEMO_TIME + 1).expect("read"));
        assert!(on_care_team(&db, &tenant("t2"), &p1, &x, DEMO_TIME).expect("read"), "tenants keep their own rows");
        assert!(!on_care_team(&db, &t(), &p1, &x, DEMO_TIME).expect("read"));
        assert_eq!(db.integer("SELECT COUNT(*) FROM sqlite_master WHERE name = 'care_team'"), 0);
    }

    #[test]
    fn a_membership_counts_from_its_start_until_its_end_or_until_it_is_ended() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let db = Native::open(&dir.path().join("records.db"));
        db::migrate(&db, MIGRATIONS, |_| Ok(())).expect("schema");
        let now = 1_000;
        let parties = Parties::new();
        let (p1, [a, b], admin) = (&parties.patient, &parties.members, &parties.admin);
        let on = |member: &Opaque, at: i64| on_care_team(&db, &t(), p1, member, at).expect("read");
        let end = |member: &Opaque, at: i64| end_care_team_membership(&db, &t(), p1, member, admin, at).expect("end");
        let added = add_care_team_member(&db, &t(), &parties.membership("ct-1", a, now + 10, Some(now + 20)), now);
        assert!(!added.expect("add").expect("added").active, "not started yet");
        assert!(!on(a, now + 9) && on(a, now + 10) && on(a, now + 19) && !on(a, now + 20));
        // One membership not yet ended per member: a second is refused, whatever its times.
        let again = add_care_team_member(&db, &t(), &parties.membership("ct-2", a, now, None), now).expect("add");
        assert_eq!(again, None);

        add_care_team_member(&db, &t(), &parties.membership("ct-3", b, now, None), now).expect("add").expect("added");
        assert!(on(b, now + 1_000_000));
        assert_eq!(end(b, now + 5), ["ct-3"]);
        assert!(on(b, now + 4) && !on(b, now + 5), "ended at once");
        assert!(end(b, now + 6).is_empty());
        // Ending also ends a membership that had not started.
        assert_eq!(end(a, now + 1), ["ct-1"]);
        assert!(!on(a, now + 15));
        let ended =
            add_care_team_member(&db, &t(), &parties.membership("ct-4", b, now + 6, None), now + 6).expect("add");
        assert!(ended.is_some(), "a member whose memberships ended can be added again");

        db.execute(
            "INSERT INTO patient (tenant_id, patient_id, given_name, family_name, birth_date, erased_at)
            VALUES ('demo-hospital', 'p-1', 'x', 'x', 'x', NULL)",
            &[],
        )
        .expect("patient");
        let mine = care_team_patients(&db, &t(), b, now + 7).expect("list");
        assert_eq!(mine.iter().map(|m| m.membership_id.as_str()).collect::<Vec<_>>(), ["ct-4"]);
        db.execute("UPDATE patient SET erased_at = 1", &[]).expect("erase");
        assert!(care_team_patients(&db, &t(), b, now + 7).expect("list").is_empty(), "erased patients are not listed");
        let team = care_team(&db, &t(), p1, now + 7).expect("team");
        assert_eq!(team.len(), 3);
        assert_eq!(team.iter().filter(|m| m.active).count(), 1);
        assert_eq!(
            team.iter().find(|m| m.membership_id == "ct-3").and_then(|m| m.ended_by.as_deref()),
            Some("u-admin")
        );
    }

    #[test]
    fn a_stored_id_that_does_not_parse_is_an_internal_error_not_a_panic() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let db = records_db(&dir.path().join("records.db"));
        db.execute(
            "INSERT INTO patient (tenant_id, patient_id, owner_subject, given_name, family_name, birth_date)
            VALUES ('demo-hospital', 'p-1', 'u/../x', 'x', 'x', 'x')",
            &[],
        )
        .expect("patient");
        let row = patient(&db, &t(), &patient_id("p-1")).expect("the row reads").expect("p-1");
        let error = row.owner().expect_err("not a valid owner");
        assert!(format!("{error}").contains("stored owner_subject \"u/../x\" is not valid"), "{error}");
        db.execute("UPDATE patient SET owner_subject = 'u-a'", &[]).expect("owner");
        let row = patient(&db, &t(), &patient_id("p-1")).expect("the row reads").expect("p-1");
        assert_eq!(row.owner().expect("valid"), Some(subject("u-a")));

        db.execute(
            "INSERT INTO lab_order (tenant_id, order_id, patient_id, lab_subject, test_code, test_name, ordered_by,
            ordered_at, status, lab_id) VALUES ('demo-hospital', 'o-1', 'P 1', '', 'c', 'n', 'u-dr', 1, 'open', 'l')",
            &[],
        )
        .expect("order");
        let orders = db.execute(&format!("SELECT {ORDER_COLUMNS} FROM lab_order"), &[]).expect("read");
        let error = orders.rows().map(|r| order_from(&r)).next().expect("one row").expect_err("not a patient id");
        assert!(format!("{error}").contains("stored patient_id \"P 1\" is not valid"), "{error}");
    }

    #[test]
    fn version_6_makes_each_assigned_lab_user_an_organisation_of_its_own() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let db = Native::open(&dir.path().join("records.db"));
        db::migrate(&db, &MIGRATIONS[..4], |_| Ok(())).expect("version 5");
        for (order, lab) in [("o-1", "u-lab-A"), ("o-2", "u-lab-A"), ("o-3", "u-lab-b")] {
            db.execute(
                "INSERT INTO lab_order VALUES ('demo-hospital', ?, 'p-1', ?, 'c', 'n', 'u-dr', 1, 'open')",
                &[text(order), text(lab)],
            )
            .expect("version 5 order");
        }
        db::migrate(&db, MIGRATIONS, |_| Ok(())).expect("version 6");
        assert_eq!(count(&db, "SELECT COUNT(*) FROM lab_org"), 2);
        assert_eq!(count(&db, "SELECT COUNT(*) FROM lab_member"), 2);
        assert_eq!(count(&db, "SELECT COUNT(*) FROM lab_order WHERE lab_id = lab_subject"), 3);
        let (a, b) = (LabId::parse("u-lab-A").expect("id"), LabId::parse("u-lab-b").expect("id"));
        assert!(lab_member(&db, &t(), &a, &subject("u-lab-A")).expect("reads"));
        assert!(!lab_member(&db, &t(), &b, &subject("u-lab-A")).expect("reads"));
        assert!(!lab_member(&db, &tenant("other"), &a, &subject("u-lab-A")).expect("reads"));
        let order = lab_order(&db, &t(), &OrderId::parse("o-3").expect("id")).expect("reads").expect("o-3");
        assert_eq!(order.lab_id, b);
    }

    #[test]
    fn a_lab_organisation_works_the_orders_placed_with_it_and_only_its_members_see_them() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let db = records_db(&dir.path().join("records.db"));
        let mut vault = Vault::with_wrapping_key(&db, &t(), wrapping(7));
        let (north, south) = (LabId::parse("lab-north").expect("id"), LabId::parse("lab-south").expect("id"));
        let (admin, ann, ben, grey) = (subject("u-admin"), subject("u-ann"), subject("u-ben"), subject("u-grey"));
        assert_eq!(register_lab(&db, &t(), &north, "North", &admin, 1).expect("registers"), LabRegistration::Created);
        assert_eq!(register_lab(&db, &t(), &north, "North", &admin, 2).expect("again"), LabRegistration::Unchanged);
        assert_eq!(register_lab(&db, &t(), &north, "Nord", &admin, 3).expect("other"), LabRegistration::Conflict);
        assert_eq!(attach_lab_member(&db, &t(), &south, &ann, &admin, 4).expect("attach"), Attached::NoSuchLab);
        assert_eq!(
            register_lab(&db, &tenant("other"), &south, "S", &admin, 4).expect("other tenant"),
            LabRegistration::Created
        );
        assert_eq!(attach_lab_member(&db, &t(), &south, &ann, &admin, 4).expect("attach"), Attached::NoSuchLab);
        assert_eq!(attach_lab_member(&db, &t(), &north, &ann, &admin, 5).expect("attach"), Attached::Attached);
        assert_eq!(attach_lab_member(&db, &t(), &north, &ann, &admin, 6).expect("again"), Attached::Unchanged);
        let listed = labs(&db, &t()).expect("labs");
        assert_eq!(
            listed,
            [Lab { lab_id: "lab-north".into(), name: "North".into(), registered_at: 1, members: vec!["u-ann".into()] }]
        );
        assert!(
            lab_registered(&db, &t(), &north).expect("reads") && !lab_registered(&db, &t(), &south).expect("reads")
        );

        let (p1, o1) = (patient_id("p-1"), OrderId::parse("o-1").expect("id"));
        register_patient(&mut vault, &p1, ["A", "B", "1990-01-01"]).expect("patient");
        let new = NewLabOrder {
            order_id: &o1,
            patient_id: &p1,
            lab_id: &north,
            test_code: "4548-4",
            test_name: "HbA1c",
            note: Some("fasting sample"),
            ordered_by: &grey,
        };
        add_lab_order(&mut vault, &new, 10).expect("orders");
        assert_eq!(count(&db, "SELECT COUNT(*) FROM lab_order WHERE note LIKE '%fasting%'"), 0, "sealed");
        let queue = open_lab_orders(&mut vault, &ann).expect("reads").expect("opens");
        assert_eq!(queue.len(), 1);
        assert_eq!((queue[0].lab_id.as_str(), queue[0].note.as_deref()), ("lab-north", Some("fasting sample")));
        assert!(open_lab_orders(&mut vault, &ben).expect("reads").expect("opens").is_empty(), "not a member");
        let result = NewResult { code: "4548-4", value: "6.1", unit: "%", note: None };
        assert!(append_lab_result(&mut vault, &queue[0], &ann, "r-1", &result, 20).expect("appends"));
        assert!(!append_lab_result(&mut vault, &queue[0], &ann, "r-2", &result, 21).expect("once"));
        let orders = patient_lab_orders(&mut vault, &p1).expect("reads").expect("opens");
        assert_eq!((orders[0].status.as_str(), orders[0].result_id.as_deref()), ("resulted", Some("r-1")));
        assert_eq!(orders[0].note.as_deref(), Some("fasting sample"));
        let results = lab_results(&mut vault, &p1).expect("reads").expect("opens");
        assert_eq!((results[0].lab.as_str(), results[0].lab_id.as_deref()), ("u-ann", Some("lab-north")));

        let o2 = OrderId::parse("o-2").expect("id");
        add_lab_order(&mut vault, &NewLabOrder { order_id: &o2, note: None, ..new }, 30).expect("orders");
        assert_eq!(open_lab_orders(&mut vault, &ann).expect("reads").expect("opens").len(), 1);
        assert!(detach_lab_member(&db, &t(), &north, &ann).expect("detaches"));
        assert!(!detach_lab_member(&db, &t(), &north, &ann).expect("not a member"));
        assert!(open_lab_orders(&mut vault, &ann).expect("reads").expect("opens").is_empty(), "left the lab");
        attach_lab_member(&db, &t(), &north, &ben, &admin, 40).expect("attach");
        vault.erase(&p1, 50).expect("erases");
        assert!(open_lab_orders(&mut vault, &ben).expect("reads").expect("opens").is_empty(), "erased patient");
    }

    fn records_db(path: &std::path::Path) -> Native {
        let db = Native::open(path);
        db::configure(&db);
        db::migrate(&db, MIGRATIONS, |_| Ok(())).expect("schema");
        db
    }

    fn wrapping(byte: u8) -> SecretKey {
        SecretKey::from_bytes([byte; 32])
    }

    fn count(db: &Native, sql: &str) -> i64 {
        db.integer(sql)
    }

    #[test]
    fn registering_is_idempotent_for_the_same_patient_and_refuses_another_on_the_same_id() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let db = records_db(&dir.path().join("records.db"));
        let mut vault = Vault::with_wrapping_key(&db, &t(), wrapping(7));
        let ada = ["Ada", "King", "1990-01-01"];
        assert_eq!(register_patient(&mut vault, &patient_id("p-1"), ada).expect("registers"), Registration::Created);
        assert_eq!(register_patient(&mut vault, &patient_id("p-1"), ada).expect("again"), Registration::Unchanged);
        let other = ["Ada", "King", "1990-01-02"];
        assert_eq!(register_patient(&mut vault, &patient_id("p-1"), other).expect("other"), Registration::Conflict);
        let row = patient(&db, &t(), &patient_id("p-1")).expect("reads").expect("stored");
        let stored = demographics(&mut vault, &row).expect("opens").expect("opens");
        assert_eq!((stored.given_name.as_str(), stored.birth_date.as_str()), ("Ada", "1990-01-01"));
        assert_eq!(count(&db, "SELECT COUNT(*) FROM patient WHERE given_name LIKE '%Ada%'"), 0, "sealed");
        vault.erase(&patient_id("p-1"), 1_800_000_000).expect("erases");
        assert_eq!(register_patient(&mut vault, &patient_id("p-1"), ada).expect("erased"), Registration::Conflict);
    }

    #[test]
    fn an_account_owns_one_record_and_a_record_one_account_however_links_race() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("records.db");
        let db = records_db(&path);
        let mut vault = Vault::with_wrapping_key(&db, &t(), wrapping(7));
        for id in ["p-1", "p-2"] {
            register_patient(&mut vault, &patient_id(id), ["A", "B", "1990-01-01"]).expect("registers");
        }
        let (p1, p2) = (patient_id("p-1"), patient_id("p-2"));
        assert_eq!(link_owner(&db, &t(), &p1, &subject("u-a")).expect("links"), Linked::Linked);
        assert_eq!(link_owner(&db, &t(), &p1, &subject("u-a")).expect("again"), Linked::Unchanged);
        assert_eq!(link_owner(&db, &t(), &p1, &subject("u-b")).expect("taken"), Linked::RecordTaken);
        assert_eq!(link_owner(&db, &t(), &p2, &subject("u-a")).expect("owns p-1"), Linked::AccountTaken(p1.clone()));
        assert_eq!(link_owner(&db, &t(), &patient_id("p-9"), &subject("u-c")).expect("none"), Linked::NoSuchPatient);
        assert_eq!(link_owner(&db, &tenant("other"), &p2, &subject("u-c")).expect("other"), Linked::NoSuchPatient);
        // Eight accounts race for p-2, and one account for eight records: one link each.
        for id in 3..=10 {
            register_patient(&mut vault, &patient_id(&format!("p-{id}")), ["A", "B", "1990-01-01"]).expect("registers");
        }
        let races: [Vec<(String, String)>; 2] = [
            (0..8).map(|i| ("p-2".to_owned(), format!("u-racer-{i}"))).collect(),
            (3..=10).map(|i| (format!("p-{i}"), "u-one".to_owned())).collect(),
        ];
        for race in races {
            let barrier = std::sync::Barrier::new(race.len());
            let linked = std::thread::scope(|scope| {
                let handles: Vec<_> = race
                    .iter()
                    .map(|(patient, user)| {
                        let (path, barrier) = (&path, &barrier);
                        scope.spawn(move || {
                            let db = Native::open(path);
                            db::configure(&db);
                            barrier.wait();
                            link_owner(&db, &t(), &patient_id(patient), &subject(user)).expect("no error")
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().expect("linker")).filter(|l| *l == Linked::Linked).count()
            });
            assert_eq!(linked, 1, "{race:?}");
        }
        assert_eq!(count(&db, "SELECT COUNT(*) FROM patient WHERE owner_subject = 'u-one'"), 1);
    }

    #[test]
    fn concurrent_first_writers_of_a_patient_end_with_one_key_they_all_used() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("records.db");
        let db = records_db(&path);
        let data_key = Vault::with_wrapping_key(&db, &t(), wrapping(7)).newest_data_key().expect("data key");
        let p1 = patient_id("p-1");
        let writers = 8;
        let barrier = std::sync::Barrier::new(writers);
        let sealed: Vec<(String, String)> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..writers)
                .map(|i| {
                    let (path, barrier, p1) = (&path, &barrier, &p1);
                    scope.spawn(move || {
                        // A connection per writer, as each role-service instance opens its own.
                        let db = Native::open(path);
                        db::configure(&db);
                        let mut vault = Vault::with_wrapping_key(&db, &t(), wrapping(7));
                        let entry = format!("e-{i}");
                        barrier.wait();
                        let stored = vault.seal(p1, "entry", &entry, "content", &format!("note {i}")).expect("seals");
                        (entry, stored)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("writer")).collect()
        });
        assert_eq!(count(&db, "SELECT COUNT(*) FROM patient_key"), 1, "one key for the patient");
        assert_eq!(db.text("SELECT data_key_id FROM patient_key"), data_key);
        // Read back by a vault that knows only the stored key: a value sealed under a key that
        // lost the race would not open.
        let mut reader = Vault::with_wrapping_key(&db, &t(), wrapping(7));
        for (i, (entry, stored)) in sealed.iter().enumerate() {
            let opened = reader.open_field(&p1, "entry", entry, "content", stored).expect("no platform error");
            assert_eq!(opened, Ok(format!("note {i}")));
        }
    }

    #[test]
    fn concurrent_first_uses_of_a_tenant_may_each_make_a_data_key_and_every_value_opens() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("records.db");
        let db = records_db(&path);
        let writers = 4;
        let barrier = std::sync::Barrier::new(writers);
        let sealed: Vec<String> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..writers)
                .map(|i| {
                    let (path, barrier) = (&path, &barrier);
                    scope.spawn(move || {
                        let db = Native::open(path);
                        db::configure(&db);
                        let mut vault = Vault::with_wrapping_key(&db, &t(), wrapping(7));
                        barrier.wait();
                        vault.seal(&patient_id(&format!("p-{i}")), "entry", "e", "content", "x").expect("seals")
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("writer")).collect()
        });
        assert!((1..=4).contains(&count(&db, "SELECT COUNT(*) FROM data_key")));
        let mut reader = Vault::with_wrapping_key(&db, &t(), wrapping(7));
        for (i, stored) in sealed.iter().enumerate() {
            let patient = patient_id(&format!("p-{i}"));
            let opened = reader.open_field(&patient, "entry", "e", "content", stored).expect("no error");
            assert_eq!(opened, Ok("x".to_owned()));
        }
    }

    #[test]
    fn a_vault_under_another_wrapping_key_or_tenant_opens_nothing_and_writes_nothing() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let db = records_db(&dir.path().join("records.db"));
        let (p1, p2) = (patient_id("p-1"), patient_id("p-2"));
        let stored = Vault::with_wrapping_key(&db, &t(), wrapping(7))
            .seal(&p1, "entry", "e-1", "content", "secret")
            .expect("seals");
        let mut wrong = Vault::with_wrapping_key(&db, &t(), wrapping(8));
        let error = wrong.open_field(&p1, "entry", "e-1", "content", &stored).expect_err("refused");
        assert!(format!("{error}").contains("does not open"), "{error}");
        wrong.seal(&p2, "entry", "e-2", "content", "x").expect_err("nothing sealed under a key it cannot open");
        assert_eq!(count(&db, "SELECT COUNT(*) FROM patient_key"), 1);
        let mut other = Vault::with_wrapping_key(&db, &tenant("other-hospital"), wrapping(7));
        let opened = other.open_field(&p1, "entry", "e-1", "content", &stored).expect("no platform error");
        assert_eq!(opened, Err(PhiError::KeyGone), "another tenant has no such data key");
        let mut right = Vault::with_wrapping_key(&db, &t(), wrapping(7));
        let moved = right.open_field(&p1, "entry", "e-2", "content", &stored).expect("no platform error");
        assert_eq!(moved, Err(PhiError::Open), "a value moved to another row does not open");
    }

    #[test]
    fn erasing_a_patient_shreds_their_keys_and_no_key_is_made_for_them_again() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let db = records_db(&dir.path().join("records.db"));
        let (p1, p2, doctor) = (patient_id("p-1"), patient_id("p-2"), subject("u-dr"));
        let mut vault = Vault::with_wrapping_key(&db, &t(), wrapping(7));
        add_patient(&mut vault, &p1, Some(&subject("u-a")), ["Ann", "Ames", "1980-01-01"]).expect("patient");
        add_patient(&mut vault, &p2, None, ["Ben", "Bell", "1981-02-02"]).expect("patient");
        add_entry(&mut vault, &p1, &entry_id("e-1"), "diagnosis", "secret", &doctor, 1_000).expect("entry");
        db.execute("INSERT INTO consent VALUES ('demo-hospital', 'p-1', 'acme', 1000, 5000, NULL)", &[])
            .expect("consent");
        assert_eq!(count(&db, "SELECT COUNT(*) FROM patient_key WHERE patient_id = 'p-1'"), 1);

        assert!(vault.erase(&p1, 2_000).expect("erases"));
        assert!(!vault.erase(&p1, 2_001).expect("again"), "already erased");
        assert_eq!(count(&db, "SELECT COUNT(*) FROM patient_key WHERE patient_id = 'p-1'"), 0);
        assert_eq!(count(&db, "SELECT revoked_at FROM consent WHERE patient_id = 'p-1'"), 2_000);
        let ann = patient(&db, &t(), &p1).expect("read").expect("kept");
        assert!(ann.erased);
        assert_eq!(ann.owner().expect("valid"), Some(subject("u-a")), "the owner reads back as it was stored");
        assert_eq!(entries(&mut vault, &p1).expect("no platform error"), Err(PhiError::KeyGone), "same request");

        // Another request: nothing of theirs opens, nothing new is sealed for them.
        let mut later = Vault::with_wrapping_key(&db, &t(), wrapping(7));
        assert_eq!(entries(&mut later, &p1).expect("no platform error"), Err(PhiError::KeyGone));
        let refused = later.seal(&p1, "entry", "e-2", "content", "more").expect_err("erased");
        assert!(format!("{refused}").contains("is erased"), "{refused}");
        assert_eq!(count(&db, "SELECT COUNT(*) FROM patient_key WHERE patient_id = 'p-1'"), 0);
        let ben = patient(&db, &t(), &p2).expect("read").expect("p-2");
        let opened = demographics(&mut later, &ben).expect("no platform error").expect("opens");
        assert_eq!(opened.given_name, "Ben", "other patients keep their keys");
    }

    fn correction<'a>(content: &'a str, reason: &'a str, author: &'a Opaque, now: i64) -> NewVersion<'a> {
        NewVersion { content, reason, author, now }
    }

    #[test]
    fn a_correction_keeps_every_earlier_version_with_its_author_time_and_reason() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let db = records_db(&dir.path().join("records.db"));
        let (p1, e1, grey, house) = (patient_id("p-1"), entry_id("e-1"), subject("u-grey"), subject("u-house"));
        let mut vault = Vault::with_wrapping_key(&db, &t(), wrapping(7));
        add_entry(&mut vault, &p1, &e1, "diagnosis", "Asthma", &grey, 1_000).expect("entry");
        let first = correct_entry(&mut vault, &p1, &e1, &correction("Asthma, mild", "Spirometry", &house, 2_000));
        let first = first.expect("no platform error").expect("opens").expect("the entry exists");
        assert_eq!((first.from_version, first.to_version), (1, 2));
        let second = correct_entry(&mut vault, &p1, &e1, &correction("Asthma, moderate", "Re-assessed", &grey, 3_000));
        let second = second.expect("no platform error").expect("opens").expect("the entry exists");
        assert_eq!((second.from_version, second.to_version), (2, 3));
        assert_eq!(second.old_digest, first.new_digest, "one key for every digest of the patient");
        assert_ne!(first.old_digest, first.new_digest);

        let mut later = Vault::with_wrapping_key(&db, &t(), wrapping(7));
        let history = entry_history(&mut later, &p1, &e1).expect("no platform error").expect("opens").expect("entry");
        assert_eq!(history.kind, "diagnosis");
        let seen: Vec<_> = history
            .versions
            .iter()
            .map(|v| (v.version, v.content.as_str(), v.author.as_str(), v.created_at, v.reason.as_deref()))
            .collect();
        assert_eq!(
            seen,
            [
                (3, "Asthma, moderate", "u-grey", 3_000, Some("Re-assessed")),
                (2, "Asthma, mild", "u-house", 2_000, Some("Spirometry")),
                (1, "Asthma", "u-grey", 1_000, None),
            ]
        );
        let current = entries(&mut later, &p1).expect("no platform error").expect("opens");
        let earlier = earlier_versions(&mut later, &p1).expect("no platform error").expect("opens");
        let earlier: Vec<_> =
            earlier.iter().map(|v| (v.entry_id.as_str(), v.version.version, v.version.content.as_str())).collect();
        assert_eq!(earlier, [("e-1", 1, "Asthma"), ("e-1", 2, "Asthma, mild")]);
        assert_eq!((current[0].content.as_str(), current[0].version), ("Asthma, moderate", 3));
        // Nothing in clear, and a version moved to another version's row does not open.
        for stored in
            db.execute("SELECT content || COALESCE(reason, '') AS v FROM entry_version", &[]).expect("read").rows()
        {
            let stored = stored.get::<&str>("v").expect("text");
            assert!(!stored.contains("Asthma") && !stored.contains("Spirometry"), "{stored}");
        }
        db.execute("UPDATE entry_version SET content = (SELECT content FROM entry_version WHERE version = 1) WHERE version = 2", &[])
            .expect("swap");
        let swapped = entry_history(&mut later, &p1, &e1).expect("no platform error");
        assert_eq!(swapped, Err(PhiError::Open));
        // Another patient's entry is not found through this one.
        let other = correct_entry(&mut later, &patient_id("p-2"), &e1, &correction("x", "y", &grey, 4_000));
        assert_eq!(other.expect("no platform error"), Ok(None));
        assert_eq!(entry_history(&mut later, &patient_id("p-2"), &e1).expect("no platform error"), Ok(None));
    }

    #[test]
    fn a_correction_that_fails_midway_changes_nothing() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let db = records_db(&dir.path().join("records.db"));
        let (p1, e1, grey) = (patient_id("p-1"), entry_id("e-1"), subject("u-grey"));
        let mut vault = Vault::with_wrapping_key(&db, &t(), wrapping(7));
        add_entry(&mut vault, &p1, &e1, "note", "before", &grey, 1_000).expect("entry");
        // A row where version 1 would be kept: the insert fails after the entry was read.
        db.execute("INSERT INTO entry_version VALUES ('demo-hospital', 'e-1', 1, 'p-1', 'x', 'u-x', NULL, 1)", &[])
            .expect("blocking row");
        correct_entry(&mut vault, &p1, &e1, &correction("after", "why", &grey, 2_000)).expect_err("fails");
        db.execute("DELETE FROM entry_version", &[]).expect("unblock");
        let read = entries(&mut vault, &p1).expect("no platform error").expect("opens");
        assert_eq!((read[0].content.as_str(), read[0].version, read[0].updated_at), ("before", 1, 1_000));
        let done = correct_entry(&mut vault, &p1, &e1, &correction("after", "why", &grey, 2_000)).expect("works now");
        assert_eq!(done.expect("opens").map(|c| c.to_version), Some(2));
    }

    #[test]
    fn concurrent_corrections_each_make_their_own_version_and_none_is_lost() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("records.db");
        let db = records_db(&path);
        let (p1, e1, grey) = (patient_id("p-1"), entry_id("e-1"), subject("u-grey"));
        add_entry(&mut Vault::with_wrapping_key(&db, &t(), wrapping(7)), &p1, &e1, "note", "v1", &grey, 1_000)
            .expect("entry");
        let writers = 4;
        let barrier = std::sync::Barrier::new(writers);
        let made: Vec<i64> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..writers)
                .map(|i| {
                    let (path, barrier, p1, e1, grey) = (&path, &barrier, &p1, &e1, &grey);
                    scope.spawn(move || {
                        let db = Native::open(path);
                        db::configure(&db);
                        let mut vault = Vault::with_wrapping_key(&db, &t(), wrapping(7));
                        let content = format!("by writer {i}");
                        barrier.wait();
                        let new = correction(&content, "concurrent", grey, 2_000);
                        let done = correct_entry(&mut vault, p1, e1, &new).expect("corrects");
                        done.expect("opens").expect("exists").to_version
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("writer")).collect()
        });
        let mut made = made;
        made.sort_unstable();
        assert_eq!(made, [2, 3, 4, 5]);
        let mut reader = Vault::with_wrapping_key(&db, &t(), wrapping(7));
        let history = entry_history(&mut reader, &p1, &e1).expect("no platform error").expect("opens").expect("entry");
        assert_eq!(history.versions.iter().map(|v| v.version).collect::<Vec<_>>(), [5, 4, 3, 2, 1]);
        assert_eq!(history.versions.last().map(|v| v.content.as_str()), Some("v1"));
    }

    #[test]
    fn earlier_versions_outlive_a_rotation_and_die_with_an_erasure() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let db = records_db(&dir.path().join("records.db"));
        let (p1, e1, grey) = (patient_id("p-1"), entry_id("e-1"), subject("u-grey"));
        let mut vault = Vault::with_wrapping_key(&db, &t(), wrapping(7));
        add_patient(&mut vault, &p1, None, ["Ann", "Ames", "1980-01-01"]).expect("patient");
        add_entry(&mut vault, &p1, &e1, "note", "v1", &grey, 1_000).expect("entry");
        let first = correct_entry(&mut vault, &p1, &e1, &correction("v2", "r2", &grey, 2_000)).expect("corrects");
        vault.rotate(crate::now() + 60).expect("rotates");
        let mut later = Vault::with_wrapping_key(&db, &t(), wrapping(7));
        let second = correct_entry(&mut later, &p1, &e1, &correction("v3", "r3", &grey, 3_000)).expect("corrects");
        let (first, second) = (first.expect("opens").expect("exists"), second.expect("opens").expect("exists"));
        assert_eq!(second.old_digest, first.new_digest, "the digest key survives a rotation");
        let history = entry_history(&mut later, &p1, &e1).expect("no platform error").expect("opens").expect("entry");
        assert_eq!(history.versions.iter().map(|v| v.content.as_str()).collect::<Vec<_>>(), ["v3", "v2", "v1"]);

        assert!(later.erase(&p1, 4_000).expect("erases"));
        let mut after = Vault::with_wrapping_key(&db, &t(), wrapping(7));
        assert_eq!(entry_history(&mut after, &p1, &e1).expect("no platform error"), Err(PhiError::KeyGone));
        assert!(after.digest_key(&p1).expect("no platform error").is_none(), "no key links a digest to a text");
        let refused = correct_entry(&mut after, &p1, &e1, &correction("v4", "r4", &grey, 5_000));
        assert_eq!(refused.expect("no platform error"), Err(PhiError::KeyGone));
        assert_eq!(count(&db, "SELECT COUNT(*) FROM entry_version"), 2, "nothing written for an erased patient");
    }

    #[test]
    fn after_a_rotation_new_values_use_the_new_data_key_and_older_values_still_open() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let db = records_db(&dir.path().join("records.db"));
        let (p1, doctor) = (patient_id("p-1"), subject("u-dr"));
        let mut vault = Vault::with_wrapping_key(&db, &t(), wrapping(7));
        let first = vault.newest_data_key().expect("first data key");
        add_entry(&mut vault, &p1, &entry_id("e-1"), "note", "before", &doctor, 1_000).expect("entry");
        let second = vault.rotate(crate::now() + 60).expect("rotates");
        assert_ne!(first, second);
        add_entry(&mut vault, &p1, &entry_id("e-2"), "note", "after", &doctor, 1_001).expect("entry");
        let key_of = |entry: &str| {
            let stored = db.text(&format!("SELECT content FROM entry WHERE entry_id = '{entry}'"));
            phi::data_key_id(&stored).expect("sealed").to_owned()
        };
        assert_eq!((key_of("e-1"), key_of("e-2")), (first, second.clone()));
        let mut later = Vault::with_wrapping_key(&db, &t(), wrapping(7));
        assert_eq!(later.newest_data_key().expect("newest"), second);
        let read = entries(&mut later, &p1).expect("no platform error").expect("opens");
        assert_eq!(read.iter().map(|e| e.content.as_str()).collect::<Vec<_>>(), ["before", "after"]);
    }
}
