//! The encrypted backup archive: a small authenticated header, then the payload (the manifest
//! and every store's snapshot, see [`super`]) as a stream of AES-256-GCM chunks.
//!
//! ```text
//! "HEALTHBK" | version (1 byte, 1) | header length (u32, big-endian) | header (JSON)
//! then chunks: ciphertext length (u32, big-endian) | ciphertext (≤ CHUNK_BYTES + 16-byte tag)
//! ```
//!
//! - **One random content key per archive** (256 bits), under which every chunk is sealed. The
//!   header says how to get it back: wrapped with AES-256-GCM under a key derived from a
//!   passphrase by argon2id (RFC 9106) with a random salt, or encrypted to a recipient's P-256
//!   public JWK as a compact JWE (`ECDH-ES+A256KW`, `A256GCM`, `health-jose`).
//! - **The header is authenticated**: every chunk takes the header's bytes (magic to the end of
//!   the JSON) as its associated data, so changing a KDF parameter, the salt or the wrapped key
//!   fails the first chunk, as does swapping the header of another archive.
//! - **Chunks cannot be reordered, dropped or cut off** (the STREAM construction, Hoang et al.,
//!   CRYPTO 2015): chunk `i`'s nonce is `i` (8 bytes, big-endian) and a last-chunk flag, so a
//!   truncated archive (no chunk flagged last) or one with bytes after its last chunk is refused.
//!   With a fresh random key per archive a nonce never repeats under a key.
//!
//! Nothing here knows what the payload means; [`super`] writes and reads it.

use std::io::{Read, Write};

use aes_gcm::aead::rand_core::RngCore;
use aes_gcm::aead::{Aead, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use anyhow::{Context, bail, ensure};
use health_core::{b64url, b64url_decode};
use serde::{Deserialize, Serialize};

pub const MAGIC: &[u8; 8] = b"HEALTHBK";
pub const VERSION: u8 = 1;
/// Plaintext bytes per chunk (the last may be shorter, or empty).
pub const CHUNK_BYTES: usize = 1 << 20;
const TAG_BYTES: usize = 16;
/// The largest header a reader accepts (a few hundred bytes in practice).
const MAX_HEADER_BYTES: u32 = 64 * 1024;
/// Associated data of the content key's wrapping under a passphrase.
const WRAP_AAD: &[u8] = b"health-backup/1 content key";
/// The JWE algorithm a recipient's key is used with, and the only one accepted.
pub const RECIPIENT_ALG: &str = "ECDH-ES+A256KW";

/// An argon2id cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cost {
    pub m_cost_kib: u32,
    pub t_cost: u32,
    pub p_cost: u32,
}

impl Cost {
    /// For new archives: 64 MiB, 3 passes, one lane (RFC 9106 §4's second recommendation, one
    /// lane as the `argon2` crate runs single-threaded). A fraction of a second natively: a
    /// backup is made rarely, a guess at its passphrase should cost a lot.
    pub const DEFAULT: Cost = Cost { m_cost_kib: 64 * 1024, t_cost: 3, p_cost: 1 };
}
/// The most a header may ask of the reader (so a forged header cannot exhaust memory or time).
const KDF_MAX_M_COST_KIB: u32 = 1 << 20;
const KDF_MAX_T_COST: u32 = 16;
const KDF_MAX_P_COST: u32 = 16;
/// The shortest passphrase `backup create` accepts.
pub const MIN_PASSPHRASE_BYTES: usize = 12;

/// The archive's header, in clear but authenticated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// Always `health-backup`.
    pub format: String,
    /// Unix seconds when the archive was made.
    pub created_at: i64,
    /// Plaintext bytes per chunk.
    pub chunk_bytes: u32,
    pub key: KeySource,
}

/// How the content key is recovered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum KeySource {
    /// Wrapped under argon2id(passphrase, salt) with AES-256-GCM.
    Passphrase { kdf: String, m_cost_kib: u32, t_cost: u32, p_cost: u32, salt: String, nonce: String, wrapped: String },
    /// A compact JWE to the recipient's P-256 key, whose RFC 7638 thumbprint is `thumbprint`.
    Recipient { thumbprint: String, jwe: String },
}

/// A 256-bit key (content key or key-encryption key). Not `Debug`; not wiped on drop, as it lives
/// for one short command.
pub struct Key([u8; 32]);

impl Key {
    pub fn random() -> Self {
        let mut key = [0u8; 32];
        OsRng.fill_bytes(&mut key);
        Self(key)
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(&self.0.into())
    }
}

/// argon2id of `passphrase` and `salt` with the given cost.
pub fn derive(passphrase: &[u8], salt: &[u8], m_cost_kib: u32, t_cost: u32, p_cost: u32) -> anyhow::Result<Key> {
    let params = argon2::Params::new(m_cost_kib, t_cost, p_cost, Some(32))
        .map_err(|e| anyhow::anyhow!("argon2id parameters: {e}"))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut key = [0u8; 32];
    argon.hash_password_into(passphrase, salt, &mut key).map_err(|e| anyhow::anyhow!("argon2id: {e}"))?;
    Ok(Key(key))
}

/// What seals a new archive's content key.
pub enum Lock {
    /// A passphrase, already stretched at `cost` (so the slow part is done before any store is
    /// read).
    Passphrase { kek: Key, salt: [u8; 16], cost: Cost },
    /// A recipient's P-256 public key, with its RFC 7638 thumbprint.
    Recipient { key: p256::PublicKey, thumbprint: String },
}

impl Lock {
    /// Stretches `passphrase` with a fresh salt at the default cost.
    pub fn passphrase(passphrase: &str) -> anyhow::Result<Self> {
        ensure!(
            passphrase.len() >= MIN_PASSPHRASE_BYTES,
            "the passphrase must be at least {MIN_PASSPHRASE_BYTES} bytes"
        );
        Self::passphrase_at(passphrase, Cost::DEFAULT)
    }

    /// Stretches `passphrase` with a fresh salt at `cost`.
    pub fn passphrase_at(passphrase: &str, cost: Cost) -> anyhow::Result<Self> {
        let mut salt = [0u8; 16];
        OsRng.fill_bytes(&mut salt);
        let kek = derive(passphrase.as_bytes(), &salt, cost.m_cost_kib, cost.t_cost, cost.p_cost)?;
        Ok(Self::Passphrase { kek, salt, cost })
    }

    /// Seals `content` as this lock says.
    fn seal(&self, content: &Key) -> anyhow::Result<KeySource> {
        match self {
            Self::Passphrase { kek, salt, cost } => {
                let mut nonce = [0u8; 12];
                OsRng.fill_bytes(&mut nonce);
                let wrapped = kek
                    .cipher()
                    .encrypt(Nonce::from_slice(&nonce), Payload { msg: &content.0, aad: WRAP_AAD })
                    .map_err(|_| anyhow::anyhow!("wrapping the content key"))?;
                Ok(KeySource::Passphrase {
                    kdf: "argon2id".into(),
                    m_cost_kib: cost.m_cost_kib,
                    t_cost: cost.t_cost,
                    p_cost: cost.p_cost,
                    salt: b64url(salt),
                    nonce: b64url(nonce),
                    wrapped: b64url(wrapped),
                })
            }
            Self::Recipient { key, thumbprint } => {
                use health_jose::jwe::{EncryptionKey, Protected, encrypt};
                let protected = Protected { kid: Some(thumbprint), cty: None, iss: None };
                let jwe = encrypt(&content.0, &EncryptionKey::P256(*key), &protected, &mut OsRng)
                    .map_err(|_| anyhow::anyhow!("encrypting the content key to the recipient"))?;
                Ok(KeySource::Recipient { thumbprint: thumbprint.clone(), jwe })
            }
        }
    }
}

/// What opens an archive's content key.
pub enum Unlock {
    Passphrase(String),
    /// A P-256 private key and its public key's RFC 7638 thumbprint.
    Identity {
        key: p256::SecretKey,
        thumbprint: String,
    },
}

impl Unlock {
    fn open(&self, source: &KeySource) -> anyhow::Result<Key> {
        // One message for every way a key fails to open: the archive does not say which.
        const WRONG: &str =
            "the archive's key does not open with this passphrase or identity (wrong key, or the header was altered)";
        match (self, source) {
            (
                Self::Passphrase(passphrase),
                KeySource::Passphrase { kdf, m_cost_kib, t_cost, p_cost, salt, nonce, wrapped },
            ) => {
                ensure!(kdf == "argon2id", "unknown key derivation {kdf:?}");
                ensure!(
                    *m_cost_kib <= KDF_MAX_M_COST_KIB && *t_cost <= KDF_MAX_T_COST && *p_cost <= KDF_MAX_P_COST,
                    "argon2id cost in the header is beyond what this healthctl accepts (m ≤ 1 GiB, t ≤ 16, p ≤ 16)"
                );
                let salt = b64url_decode(salt).context("salt is not base64url")?;
                let nonce = b64url_decode(nonce).filter(|n| n.len() == 12).context("nonce is not 12 bytes")?;
                let wrapped = b64url_decode(wrapped).context("wrapped key is not base64url")?;
                let kek = derive(passphrase.as_bytes(), &salt, *m_cost_kib, *t_cost, *p_cost)?;
                let key = kek
                    .cipher()
                    .decrypt(Nonce::from_slice(&nonce), Payload { msg: &wrapped, aad: WRAP_AAD })
                    .map_err(|_| anyhow::anyhow!(WRONG))?;
                Ok(Key(key.try_into().map_err(|_| anyhow::anyhow!(WRONG))?))
            }
            (Self::Identity { key, thumbprint }, KeySource::Recipient { thumbprint: to, jwe }) => {
                use health_jose::jwe::{DecryptionKey, JwePolicy, decrypt_with_key_alg};
                ensure!(
                    thumbprint == to,
                    "the archive is encrypted to the key with thumbprint {to}, not to this identity ({thumbprint})"
                );
                let opened =
                    decrypt_with_key_alg(jwe, &DecryptionKey::P256(key.clone()), RECIPIENT_ALG, &JwePolicy::PLATFORM)
                        .map_err(|_| anyhow::anyhow!(WRONG))?;
                Ok(Key(opened.plaintext.try_into().map_err(|_| anyhow::anyhow!(WRONG))?))
            }
            (Self::Passphrase(_), KeySource::Recipient { thumbprint, .. }) => {
                bail!("the archive is encrypted to a public key (thumbprint {thumbprint}): pass --identity")
            }
            (Self::Identity { .. }, KeySource::Passphrase { .. }) => {
                bail!("the archive is encrypted under a passphrase: pass --passphrase-env or --passphrase-file")
            }
        }
    }
}

/// The nonce of chunk `index`: the index and whether it is the last (STREAM).
fn nonce(index: u64, last: bool) -> [u8; 12] {
    let mut nonce = [0u8; 12];
    nonce[3..11].copy_from_slice(&index.to_be_bytes());
    nonce[11] = u8::from(last);
    nonce
}

/// The bytes of `header` as written (and authenticated).
fn header_bytes(header: &Header) -> anyhow::Result<Vec<u8>> {
    let json = serde_json::to_vec(header)?;
    let len = u32::try_from(json.len()).context("header too long")?;
    let mut bytes = Vec::with_capacity(13 + json.len());
    bytes.extend_from_slice(MAGIC);
    bytes.push(VERSION);
    bytes.extend_from_slice(&len.to_be_bytes());
    bytes.extend_from_slice(&json);
    Ok(bytes)
}

/// Writes an archive: the header, then whatever is written to it, sealed chunk by chunk.
pub struct Writer<W: Write> {
    out: W,
    cipher: Aes256Gcm,
    aad: Vec<u8>,
    buffer: Vec<u8>,
    index: u64,
}

impl<W: Write> Writer<W> {
    /// Writes the header for a fresh content key sealed by `lock`.
    pub fn new(mut out: W, lock: &Lock, created_at: i64) -> anyhow::Result<Self> {
        let content = Key::random();
        let header = Header {
            format: "health-backup".into(),
            created_at,
            chunk_bytes: u32::try_from(CHUNK_BYTES)?,
            key: lock.seal(&content)?,
        };
        let aad = header_bytes(&header)?;
        out.write_all(&aad).context("writing the archive header")?;
        Ok(Self { out, cipher: content.cipher(), aad, buffer: Vec::with_capacity(CHUNK_BYTES), index: 0 })
    }

    pub fn write(&mut self, mut bytes: &[u8]) -> anyhow::Result<()> {
        while !bytes.is_empty() {
            let room = CHUNK_BYTES - self.buffer.len();
            let (now, rest) = bytes.split_at(room.min(bytes.len()));
            self.buffer.extend_from_slice(now);
            bytes = rest;
            // A full chunk is written once more bytes follow, so the last chunk is never empty
            // unless the whole payload is.
            if self.buffer.len() == CHUNK_BYTES && !bytes.is_empty() {
                self.seal_chunk(false)?;
            }
        }
        Ok(())
    }

    fn seal_chunk(&mut self, last: bool) -> anyhow::Result<()> {
        let sealed = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce(self.index, last)), Payload { msg: &self.buffer, aad: &self.aad })
            .map_err(|_| anyhow::anyhow!("sealing chunk {}", self.index))?;
        let len = u32::try_from(sealed.len())?;
        self.out.write_all(&len.to_be_bytes()).context("writing the archive")?;
        self.out.write_all(&sealed).context("writing the archive")?;
        self.buffer.clear();
        self.index += 1;
        Ok(())
    }

    /// Seals the last chunk and hands back the output.
    pub fn finish(mut self) -> anyhow::Result<W> {
        self.seal_chunk(true)?;
        self.out.flush().context("writing the archive")?;
        Ok(self.out)
    }
}

/// Reads an archive back: [`Read`] yields the payload, each chunk checked before any of its
/// bytes is handed out. A failure is an `io::Error` of kind `InvalidData`.
pub struct Reader<R: Read> {
    input: R,
    pub header: Header,
    cipher: Aes256Gcm,
    aad: Vec<u8>,
    plain: Vec<u8>,
    at: usize,
    index: u64,
    ended: bool,
}

impl<R: Read> Reader<R> {
    /// Reads the header and opens the content key with `unlock`.
    pub fn open(mut input: R, unlock: &Unlock) -> anyhow::Result<Self> {
        let mut fixed = [0u8; 13];
        input.read_exact(&mut fixed).context("not a health-platform backup (shorter than its header)")?;
        ensure!(&fixed[..8] == MAGIC, "not a health-platform backup (no HEALTHBK magic)");
        ensure!(
            fixed[8] == VERSION,
            "backup format version {} is not supported (this healthctl reads {VERSION})",
            fixed[8]
        );
        let len = u32::from_be_bytes([fixed[9], fixed[10], fixed[11], fixed[12]]);
        ensure!(len <= MAX_HEADER_BYTES, "backup header of {len} bytes is too long");
        let mut json = vec![0u8; usize::try_from(len)?];
        input.read_exact(&mut json).context("backup header cut short")?;
        let header: Header = serde_json::from_slice(&json).context("backup header is not valid")?;
        ensure!(header.format == "health-backup", "not a health-platform backup (format {:?})", header.format);
        ensure!(
            usize::try_from(header.chunk_bytes).ok() == Some(CHUNK_BYTES),
            "chunk size {} is not supported",
            header.chunk_bytes
        );
        let content = unlock.open(&header.key)?;
        let mut aad = fixed.to_vec();
        aad.extend_from_slice(&json);
        Ok(Self { input, header, cipher: content.cipher(), aad, plain: Vec::new(), at: 0, index: 0, ended: false })
    }

    /// Opens the next chunk; `false` once the last one has been read.
    fn next_chunk(&mut self) -> anyhow::Result<bool> {
        if self.ended {
            return Ok(false);
        }
        let mut len = [0u8; 4];
        self.input.read_exact(&mut len).context("the archive is truncated (its last chunk is missing)")?;
        let len = usize::try_from(u32::from_be_bytes(len))?;
        ensure!((TAG_BYTES..=CHUNK_BYTES + TAG_BYTES).contains(&len), "chunk {} has an impossible length", self.index);
        let mut sealed = vec![0u8; len];
        self.input.read_exact(&mut sealed).context("the archive is truncated (a chunk is cut short)")?;
        // Try it as a middle chunk, then as the last: only the right flag authenticates.
        let mut opened = None;
        for last in [false, true] {
            let payload = Payload { msg: &sealed, aad: &self.aad };
            if let Ok(plain) = self.cipher.decrypt(Nonce::from_slice(&nonce(self.index, last)), payload) {
                opened = Some((plain, last));
                break;
            }
        }
        let (plain, last) = opened.with_context(|| {
            format!("chunk {} does not authenticate: the archive was altered, reordered or damaged", self.index)
        })?;
        self.plain = plain;
        self.at = 0;
        self.index += 1;
        self.ended = last;
        Ok(true)
    }

    /// Checks that the payload ended where the archive does: the last chunk read, nothing after.
    pub fn finish(mut self) -> anyhow::Result<()> {
        ensure!(self.at == self.plain.len(), "the archive holds more data than its manifest lists");
        ensure!(!self.next_chunk()?, "the archive holds more data than its manifest lists");
        let mut extra = [0u8; 1];
        ensure!(self.input.read(&mut extra)? == 0, "bytes follow the archive's last chunk");
        Ok(())
    }
}

impl<R: Read> Read for Reader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.plain.len() {
            match self.next_chunk() {
                Ok(true) => {}
                Ok(false) => return Ok(0),
                Err(e) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{e:#}"))),
            }
        }
        let n = buf.len().min(self.plain.len() - self.at);
        buf[..n].copy_from_slice(&self.plain[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// A P-256 JWK read from a file: its public key, its RFC 7638 thumbprint and, if the file holds
/// it, the private scalar `d`.
pub struct P256Jwk {
    pub public: p256::PublicKey,
    pub thumbprint: String,
    pub secret: Option<p256::SecretKey>,
}

/// A fresh P-256 key pair for `ECDH-ES+A256KW`: the private JWK and the public one, each with
/// its RFC 7638 thumbprint as `kid`.
pub fn generate_p256_jwk() -> (serde_json::Value, serde_json::Value) {
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    let secret = p256::SecretKey::random(&mut OsRng);
    let point = secret.public_key().to_encoded_point(false);
    let (x, y) = (
        b64url(point.x().map(|x| x.as_slice()).unwrap_or_default()),
        b64url(point.y().map(|y| y.as_slice()).unwrap_or_default()),
    );
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    let kid = b64url(<sha2::Sha256 as sha2::Digest>::digest(canonical.as_bytes()));
    let public = serde_json::json!({ "kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": kid, "use": "enc", "alg": RECIPIENT_ALG });
    let mut private = public.clone();
    private["d"] = b64url(secret.to_bytes()).into();
    (private, public)
}

/// Parses a P-256 JWK (`kty` `EC`, `crv` `P-256`) meant for `ECDH-ES+A256KW`.
pub fn parse_p256_jwk(text: &str) -> anyhow::Result<P256Jwk> {
    use p256::elliptic_curve::sec1::FromEncodedPoint;
    let jwk: serde_json::Value = serde_json::from_str(text).context("not a JSON JWK")?;
    let field = |name: &str| jwk[name].as_str();
    ensure!(field("kty") == Some("EC") && field("crv") == Some("P-256"), "the JWK is not an EC P-256 key");
    if let Some(alg) = field("alg") {
        ensure!(alg == RECIPIENT_ALG, "the JWK is for {alg}, not {RECIPIENT_ALG}");
    }
    if let Some(key_use) = field("use") {
        ensure!(key_use == "enc", "the JWK is a {key_use:?} key, not an encryption key");
    }
    let (x, y) = (field("x").context("the JWK has no x")?, field("y").context("the JWK has no y")?);
    let coordinate = |c: &str| b64url_decode(c).filter(|b| b.len() == 32).context("a JWK coordinate is not 32 bytes");
    let (xb, yb) = (coordinate(x)?, coordinate(y)?);
    let point = p256::EncodedPoint::from_affine_coordinates(xb.as_slice().into(), yb.as_slice().into(), false);
    let public: p256::PublicKey =
        Option::from(p256::PublicKey::from_encoded_point(&point)).context("the JWK's point is not on P-256")?;
    let secret = match field("d") {
        None => None,
        Some(d) => {
            let d = b64url_decode(d).filter(|b| b.len() == 32).context("the JWK's d is not 32 bytes")?;
            let secret = p256::SecretKey::from_slice(&d).context("the JWK's d is not a P-256 scalar")?;
            ensure!(secret.public_key() == public, "the JWK's d does not match its x and y");
            Some(secret)
        }
    };
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    let thumbprint = b64url(<sha2::Sha256 as sha2::Digest>::digest(canonical.as_bytes()));
    Ok(P256Jwk { public, thumbprint, secret })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSPHRASE: &str = "correct horse battery";
    /// A cheap cost for tests (the default is for real archives); the header states it.
    const QUICK: Cost = Cost { m_cost_kib: 64, t_cost: 1, p_cost: 1 };

    fn seal_with(lock: &Lock, payload: &[u8]) -> Vec<u8> {
        let mut writer = Writer::new(Vec::new(), lock, 1_700_000_000).expect("header");
        writer.write(payload).expect("writes");
        writer.finish().expect("finishes")
    }

    fn sealed(payload: &[u8]) -> Vec<u8> {
        seal_with(&Lock::passphrase_at(PASSPHRASE, QUICK).expect("derives"), payload)
    }

    /// `archive` with its header changed by `change` (and the chunks kept).
    fn reheader(archive: &[u8], change: impl FnOnce(&mut Header)) -> Vec<u8> {
        let len = usize::try_from(u32::from_be_bytes(archive[9..13].try_into().expect("4 bytes"))).expect("len");
        let mut header: Header = serde_json::from_slice(&archive[13..13 + len]).expect("header");
        change(&mut header);
        let mut out = header_bytes(&header).expect("header bytes");
        out.extend_from_slice(&archive[13 + len..]);
        out
    }

    fn open_all(archive: &[u8], unlock: &Unlock) -> anyhow::Result<Vec<u8>> {
        let mut reader = Reader::open(archive, unlock)?;
        let mut out = Vec::new();
        reader.read_to_end(&mut out)?;
        reader.finish()?;
        Ok(out)
    }

    fn passphrase(text: &str) -> Unlock {
        Unlock::Passphrase(text.into())
    }

    #[test]
    fn a_passphrase_archive_round_trips_across_chunks_and_refuses_a_wrong_passphrase() {
        let payload: Vec<u8> = (0..CHUNK_BYTES * 2 + 12_345).map(|i| (i % 251) as u8).collect();
        let archive = sealed(&payload);
        assert_eq!(open_all(&archive, &passphrase(PASSPHRASE)).expect("opens"), payload);
        let wrong = open_all(&archive, &passphrase("incorrect horse battery")).expect_err("refused");
        assert!(format!("{wrong:#}").contains("does not open"), "{wrong:#}");
        assert_eq!(open_all(&sealed(b""), &passphrase(PASSPHRASE)).expect("opens"), b"");
        // Exactly one full chunk: one chunk, flagged last.
        let full = vec![1u8; CHUNK_BYTES];
        assert_eq!(open_all(&sealed(&full), &passphrase(PASSPHRASE)).expect("opens"), full);
    }

    #[test]
    fn any_flipped_bit_truncation_reordering_or_trailing_byte_is_refused() {
        let payload: Vec<u8> = (0..CHUNK_BYTES + 100).map(|i| (i % 13) as u8).collect();
        let archive = sealed(&payload);
        let unlock = passphrase(PASSPHRASE);
        let header_len = 13 + usize::try_from(u32::from_be_bytes(archive[9..13].try_into().expect("4"))).expect("len");
        // A byte of the header (a digit of created_at), of the first chunk, of the last one.
        let created_at = archive[..header_len].windows(12).position(|w| w == b"created_at\":").expect("field") + 12;
        for at in [created_at, header_len + 4 + 10, archive.len() - 5] {
            let mut bad = archive.clone();
            bad[at] ^= 1;
            assert!(open_all(&bad, &unlock).is_err(), "flipped byte {at} accepted");
        }
        // The header re-encoded with another creation time, chunks kept: refused.
        assert!(open_all(&reheader(&archive, |h| h.created_at += 1), &unlock).is_err());
        let first_len = usize::try_from(u32::from_be_bytes(archive[header_len..header_len + 4].try_into().expect("4")))
            .expect("len");
        // Cut after the first chunk: no chunk is flagged last.
        let cut = &archive[..header_len + 4 + first_len];
        let error = open_all(cut, &unlock).expect_err("truncation refused");
        assert!(format!("{error:#}").contains("truncated"), "{error:#}");
        let mut trailing = archive.clone();
        trailing.push(0);
        assert!(open_all(&trailing, &unlock).is_err(), "a trailing byte accepted");
        // The first chunk dropped: the second is then read as chunk 0 and fails.
        let mut dropped = archive[..header_len].to_vec();
        dropped.extend_from_slice(&archive[header_len + 4 + first_len..]);
        assert!(open_all(&dropped, &unlock).is_err(), "a dropped chunk accepted");
    }

    #[test]
    fn a_recipient_archive_opens_with_the_private_jwk_only() {
        let secret = p256::SecretKey::random(&mut OsRng);
        let parsed = parse_p256_jwk(&jwk_json(&secret, true)).expect("parses");
        let public_only = parse_p256_jwk(&jwk_json(&secret, false)).expect("parses");
        assert!(public_only.secret.is_none());
        assert_eq!(parsed.thumbprint, public_only.thumbprint);
        let lock = Lock::Recipient { key: public_only.public, thumbprint: public_only.thumbprint.clone() };
        let archive = seal_with(&lock, b"the stores");
        let unlock = Unlock::Identity { key: parsed.secret.expect("d"), thumbprint: parsed.thumbprint };
        assert_eq!(open_all(&archive, &unlock).expect("opens"), b"the stores");

        let other = parse_p256_jwk(&jwk_json(&p256::SecretKey::random(&mut OsRng), true)).expect("parses");
        let wrong = Unlock::Identity { key: other.secret.expect("d"), thumbprint: other.thumbprint };
        assert!(format!("{:#}", open_all(&archive, &wrong).expect_err("refused")).contains("thumbprint"));
        assert!(open_all(&archive, &passphrase(PASSPHRASE)).is_err());
    }

    #[test]
    fn the_demo_insurer_key_parses_and_a_mismatched_or_foreign_jwk_is_refused() {
        let demo = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../demo/acme-health.enc.jwk.json"))
            .expect("demo key");
        let parsed = parse_p256_jwk(&demo).expect("the demo key parses");
        assert!(parsed.secret.is_some());
        assert_eq!(parsed.thumbprint, "j1I79990cDF0AUnzVq3GzsTOOjiobg8FQHYtwrF6oeU");
        let mut mismatched: serde_json::Value = serde_json::from_str(&demo).expect("json");
        mismatched["d"] = b64url(p256::SecretKey::random(&mut OsRng).to_bytes()).into();
        assert!(parse_p256_jwk(&mismatched.to_string()).is_err());
        assert!(parse_p256_jwk(r#"{"kty":"RSA","n":"AQAB","e":"AQAB"}"#).is_err());
        let mut signing: serde_json::Value = serde_json::from_str(&demo).expect("json");
        signing["use"] = "sig".into();
        assert!(parse_p256_jwk(&signing.to_string()).is_err());
    }

    #[test]
    fn a_forged_header_cannot_demand_unbounded_work_and_short_passphrases_are_refused() {
        let archive = reheader(&sealed(b"x"), |h| {
            if let KeySource::Passphrase { m_cost_kib, .. } = &mut h.key {
                *m_cost_kib = u32::MAX;
            }
        });
        let error = open_all(&archive, &passphrase(PASSPHRASE)).expect_err("refused");
        assert!(format!("{error:#}").contains("beyond"), "{error:#}");
        assert!(Lock::passphrase("short").is_err());
    }

    #[test]
    fn a_generated_key_pair_parses_and_opens_what_is_sealed_to_it() {
        let (private, public) = generate_p256_jwk();
        let public = parse_p256_jwk(&public.to_string()).expect("public parses");
        let private = parse_p256_jwk(&private.to_string()).expect("private parses");
        assert!(public.secret.is_none());
        assert_eq!(public.thumbprint, private.thumbprint);
        let archive = seal_with(&Lock::Recipient { key: public.public, thumbprint: public.thumbprint }, b"x");
        let unlock = Unlock::Identity { key: private.secret.expect("d"), thumbprint: private.thumbprint };
        assert_eq!(open_all(&archive, &unlock).expect("opens"), b"x");
    }

    fn jwk_json(secret: &p256::SecretKey, with_d: bool) -> String {
        use p256::elliptic_curve::sec1::ToEncodedPoint;
        let point = secret.public_key().to_encoded_point(false);
        let mut jwk = serde_json::json!({
            "kty": "EC", "crv": "P-256", "alg": RECIPIENT_ALG, "use": "enc",
            "x": b64url(point.x().expect("x")), "y": b64url(point.y().expect("y")),
        });
        if with_d {
            jwk["d"] = b64url(secret.to_bytes()).into();
        }
        jwk.to_string()
    }
}
