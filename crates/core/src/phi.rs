//! Field-level encryption of PHI at rest (ARCHITECTURE.md §8), as pure functions over keys.
//!
//! Three layers, each sealed with AES-256-GCM (see [`crate::seal`]) and bound by its associated
//! data to where it belongs:
//!
//! 1. a wrapping key, the role services' `phi_wrapping_key` secret and all they hold (never
//!    `master_key`, which also seals the tenants' private keys); a deployment from before that
//!    variable sets it to [`wrapping_key`] of its `master_key`, the key it used to derive;
//! 2. per-tenant **data keys**, wrapped under it (AAD = tenant + data key id); rotation adds a
//!    newer one, older ones stay to read older values;
//! 3. per-patient keys, one per patient and data key, wrapped under that data key (AAD =
//!    tenant, patient and data key id). Every PHI field of a patient is sealed under the
//!    patient's key for the newest data key (AAD = tenant, table, row and field), and the stored
//!    value names the data key: `{data_key_id}:{sealed}`.
//!
//! Erasing a patient destroys that patient's keys (crypto-shredding): the rows stay, but no key
//! in the system can open them any more. A value copied to another row, field or tenant does
//! not open either, because its AAD no longer matches.

use crate::seal::SecretKey;

/// The label a data-key wrapping key is derived from `master_key` with.
const WRAPPING_PURPOSE: &str = "health-phi-data-keys-v1";

/// Why a PHI value did not decrypt. One variant for tampering, moving or a wrong key alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PhiError {
    #[error("stored PHI value is malformed")]
    Malformed,
    #[error("the key that sealed this value is gone (erased patient)")]
    KeyGone,
    #[error("PHI value does not open with its key and place")]
    Open,
}

/// Where a field lives: its associated data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field<'a> {
    pub tenant: &'a str,
    pub table: &'a str,
    pub row: &'a str,
    pub field: &'a str,
}

impl Field<'_> {
    fn aad(&self) -> String {
        format!("phi-field/{}/{}/{}/{}", self.tenant, self.table, self.row, self.field)
    }
}

/// The wrapping key earlier releases derived from `master_key` inside the role services: the
/// `phi_wrapping_key` an upgrading deployment sets so its data keys still open
/// (`healthctl secrets phi-wrapping-key`). A new deployment may use any random 32 bytes.
pub fn wrapping_key(master: &SecretKey) -> SecretKey {
    SecretKey::from_bytes(crate::derive(master, WRAPPING_PURPOSE))
}

fn data_key_aad(tenant: &str, data_key_id: &str) -> String {
    format!("phi-data-key/{tenant}/{data_key_id}")
}

fn patient_key_aad(tenant: &str, patient: &str, data_key_id: &str) -> String {
    format!("phi-patient-key/{tenant}/{patient}/{data_key_id}")
}

/// Seals a fresh 256-bit key under `wrapper` bound to `aad`.
fn new_wrapped(wrapper: &SecretKey, aad: &str, rng: &mut (impl rand_core::RngCore + rand_core::CryptoRng)) -> String {
    let mut key = [0u8; 32];
    rng.fill_bytes(&mut key);
    wrapper.seal(aad.as_bytes(), &key, rng)
}

fn unwrap_key(wrapper: &SecretKey, aad: &str, wrapped: &str) -> Result<SecretKey, PhiError> {
    let bytes = wrapper.open(aad.as_bytes(), wrapped).map_err(|_| PhiError::Open)?;
    Ok(SecretKey::from_bytes(bytes.try_into().map_err(|_| PhiError::Malformed)?))
}

/// A new tenant data key, wrapped for storage.
pub fn new_data_key(
    wrapping: &SecretKey,
    tenant: &str,
    data_key_id: &str,
    rng: &mut (impl rand_core::RngCore + rand_core::CryptoRng),
) -> String {
    new_wrapped(wrapping, &data_key_aad(tenant, data_key_id), rng)
}

pub fn open_data_key(
    wrapping: &SecretKey,
    tenant: &str,
    data_key_id: &str,
    wrapped: &str,
) -> Result<SecretKey, PhiError> {
    unwrap_key(wrapping, &data_key_aad(tenant, data_key_id), wrapped)
}

/// A new key for one patient under one data key, wrapped for storage.
pub fn new_patient_key(
    data_key: &SecretKey,
    tenant: &str,
    patient: &str,
    data_key_id: &str,
    rng: &mut (impl rand_core::RngCore + rand_core::CryptoRng),
) -> String {
    new_wrapped(data_key, &patient_key_aad(tenant, patient, data_key_id), rng)
}

pub fn open_patient_key(
    data_key: &SecretKey,
    tenant: &str,
    patient: &str,
    data_key_id: &str,
    wrapped: &str,
) -> Result<SecretKey, PhiError> {
    unwrap_key(data_key, &patient_key_aad(tenant, patient, data_key_id), wrapped)
}

/// Seals `plaintext` for `field` under the patient key of data key `data_key_id`.
pub fn seal_field(
    patient_key: &SecretKey,
    data_key_id: &str,
    field: &Field<'_>,
    plaintext: &str,
    rng: &mut (impl rand_core::RngCore + rand_core::CryptoRng),
) -> String {
    format!("{data_key_id}:{}", patient_key.seal(field.aad().as_bytes(), plaintext.as_bytes(), rng))
}

/// The data key id a stored value names.
pub fn data_key_id(stored: &str) -> Result<&str, PhiError> {
    stored.split_once(':').map(|(id, _)| id).filter(|id| !id.is_empty()).ok_or(PhiError::Malformed)
}

/// Opens a stored value with the patient key for the data key it names (`None`: erased).
pub fn open_field(patient_key: Option<&SecretKey>, field: &Field<'_>, stored: &str) -> Result<String, PhiError> {
    let (_, sealed) = stored.split_once(':').ok_or(PhiError::Malformed)?;
    let key = patient_key.ok_or(PhiError::KeyGone)?;
    let bytes = key.open(field.aad().as_bytes(), sealed).map_err(|_| PhiError::Open)?;
    String::from_utf8(bytes).map_err(|_| PhiError::Malformed)
}

/// The label the key of record-content digests is derived from a patient key with.
const DIGEST_PURPOSE: &str = "health-record-digest-v1";

/// A keyed digest of one content of a record entry, for the audit log, which is not encrypted:
/// HMAC-SHA256 under a key derived from `patient_key`, over the tenant, the entry and the text,
/// as lowercase hex. The same text of the same entry gives the same digest, so the versions an
/// event names can be matched against the record by whoever holds it; without the key nothing
/// can be guessed from it, and once the patient's keys are shredded nothing can be matched.
pub fn content_digest(patient_key: &SecretKey, tenant: &str, entry_id: &str, content: &str) -> String {
    use hmac::{Hmac, Mac};
    let key = crate::derive(patient_key, DIGEST_PURPOSE);
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&key).unwrap_or_else(|_| unreachable!());
    mac.update(format!("record-content/{tenant}/{entry_id}\n").as_bytes());
    mac.update(content.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rng() -> rand_core::OsRng {
        rand_core::OsRng
    }

    const ALICE_DIAGNOSIS: Field<'static> = Field { tenant: "t1", table: "entries", row: "e-1", field: "content" };

    fn keys() -> (SecretKey, SecretKey) {
        let wrapping = wrapping_key(&SecretKey::from_bytes([7; 32]));
        let wrapped_dk = new_data_key(&wrapping, "t1", "dk1", &mut rng());
        let dk = open_data_key(&wrapping, "t1", "dk1", &wrapped_dk).unwrap();
        let wrapped_pk = new_patient_key(&dk, "t1", "p-1", "dk1", &mut rng());
        (dk.clone(), open_patient_key(&dk, "t1", "p-1", "dk1", &wrapped_pk).unwrap())
    }

    #[test]
    fn a_field_round_trips_and_names_its_data_key() {
        let (_, pk) = keys();
        let stored = seal_field(&pk, "dk1", &ALICE_DIAGNOSIS, "Asthma (J45)", &mut rng());
        assert_eq!(data_key_id(&stored), Ok("dk1"));
        assert!(!stored.contains("Asthma"));
        assert_eq!(open_field(Some(&pk), &ALICE_DIAGNOSIS, &stored).unwrap(), "Asthma (J45)");
    }

    #[test]
    fn a_value_copied_to_another_row_field_or_tenant_does_not_open() {
        let (_, pk) = keys();
        let stored = seal_field(&pk, "dk1", &ALICE_DIAGNOSIS, "Asthma", &mut rng());
        for elsewhere in [
            Field { row: "e-2", ..ALICE_DIAGNOSIS },
            Field { field: "kind", ..ALICE_DIAGNOSIS },
            Field { table: "lab_results", ..ALICE_DIAGNOSIS },
            Field { tenant: "t2", ..ALICE_DIAGNOSIS },
        ] {
            assert_eq!(open_field(Some(&pk), &elsewhere, &stored), Err(PhiError::Open), "{elsewhere:?}");
        }
    }

    #[test]
    fn wrapped_keys_are_bound_to_tenant_patient_and_id() {
        let wrapping = wrapping_key(&SecretKey::from_bytes([7; 32]));
        let wrapped = new_data_key(&wrapping, "t1", "dk1", &mut rng());
        assert!(open_data_key(&wrapping, "t2", "dk1", &wrapped).is_err());
        assert!(open_data_key(&wrapping, "t1", "dk2", &wrapped).is_err());
        assert!(open_data_key(&wrapping_key(&SecretKey::from_bytes([8; 32])), "t1", "dk1", &wrapped).is_err());
        // The wrapping key is not the master key itself.
        assert!(SecretKey::from_bytes([7; 32]).open(b"phi-data-key/t1/dk1", &wrapped).is_err());
        let (dk, _) = keys();
        let pk = new_patient_key(&dk, "t1", "p-1", "dk1", &mut rng());
        assert!(open_patient_key(&dk, "t1", "p-2", "dk1", &pk).is_err());
    }

    #[test]
    fn content_digests_are_keyed_and_bound_to_tenant_and_entry() {
        let (_, pk) = keys();
        let digest = content_digest(&pk, "t1", "e-1", "Asthma");
        assert_eq!(digest.len(), 64);
        assert_eq!(digest, content_digest(&pk, "t1", "e-1", "Asthma"), "stable");
        assert_ne!(digest, crate::sha256_hex("Asthma"), "keyed, not a plain hash");
        let other_key = SecretKey::from_bytes([9; 32]);
        for other in [
            content_digest(&other_key, "t1", "e-1", "Asthma"),
            content_digest(&pk, "t2", "e-1", "Asthma"),
            content_digest(&pk, "t1", "e-2", "Asthma"),
            content_digest(&pk, "t1", "e-1", "Asthma!"),
        ] {
            assert_ne!(digest, other);
        }
    }

    #[test]
    fn erased_or_tampered_values_do_not_open() {
        let (_, pk) = keys();
        let stored = seal_field(&pk, "dk1", &ALICE_DIAGNOSIS, "Asthma", &mut rng());
        assert_eq!(open_field(None, &ALICE_DIAGNOSIS, &stored), Err(PhiError::KeyGone));
        assert_eq!(open_field(Some(&pk), &ALICE_DIAGNOSIS, "no separator"), Err(PhiError::Malformed));
        let mut tampered = stored.clone().into_bytes();
        let at = tampered.len() - 3;
        tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert_eq!(open_field(Some(&pk), &ALICE_DIAGNOSIS, &tampered), Err(PhiError::Open));
    }
}
