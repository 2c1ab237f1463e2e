//! `wasi:keyvalue@0.2.0-draft2` (store, atomics, batch) as Spin 4.0.2 provides it
//! (`crates/factor-key-value/src/host.rs`, `crates/key-value-spin/src/store.rs`): a bucket is
//! the key-value store of the same label, granted and declared as for `fermyon:spin/key-value`,
//! over the same rows. `increment` reads and writes the value as a little-endian `i64` inside
//! one transaction under the label's connection lock, a missing key counting as 0; a
//! compare-and-swap remembers the value its `current` read and swaps only if the row still
//! holds it. Neither is atomic across processes sharing a file, as in Spin: a deployment that
//! scales out puts the store on Redis (`deploy/README.md`), where Spin uses `INCRBY`.

use std::sync::Mutex;

use wasmtime::component::{HasSelf, Linker, Resource};

use crate::app::State;
use crate::spin_api::{KvOpenError, KvStore, MAX_RESULT_BYTES, Shared, blocking, lock, too_large};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit/deps/keyvalue@0.2.0-draft2",
        world: "wasi:keyvalue/imports",
        imports: { default: async | trappable },
        with: {
            "wasi:keyvalue/store.bucket": crate::spin_api::KvStore,
            "wasi:keyvalue/atomics.cas": super::Cas,
        },
    });
}

use bindings::wasi::keyvalue::{atomics, batch, store};

/// A compare-and-swap in progress: the bucket's label and connection, the key, and the value
/// `current` last read (`None`: absent, or not read yet).
pub struct Cas {
    label: String,
    connection: Shared,
    key: String,
    seen: Mutex<Option<Vec<u8>>>,
}

pub fn add_to_linker(linker: &mut Linker<State>) -> wasmtime::Result<()> {
    bindings::Imports::add_to_linker::<State, HasSelf<State>>(linker, |s| s)
}

fn other(e: impl std::fmt::Display) -> store::Error {
    store::Error::Other(e.to_string())
}

impl store::Host for State {
    async fn open(&mut self, identifier: String) -> wasmtime::Result<Result<Resource<KvStore>, store::Error>> {
        Ok(match crate::spin_api::open_kv(self, identifier).await? {
            Ok(bucket) => Ok(self.table.push(bucket)?),
            Err(KvOpenError::AccessDenied) => Err(store::Error::AccessDenied),
            Err(KvOpenError::NoSuchStore) => Err(store::Error::NoSuchStore),
            Err(KvOpenError::Other(e)) => Err(other(e)),
        })
    }
}

impl store::HostBucket for State {
    async fn get(
        &mut self,
        bucket: Resource<KvStore>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, store::Error>> {
        Ok(self.table.get(&bucket)?.get(key).await?.map_err(other))
    }

    async fn set(
        &mut self,
        bucket: Resource<KvStore>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), store::Error>> {
        Ok(self.table.get(&bucket)?.set(key, value).await?.map_err(other))
    }

    async fn delete(&mut self, bucket: Resource<KvStore>, key: String) -> wasmtime::Result<Result<(), store::Error>> {
        Ok(self.table.get(&bucket)?.delete(key).await?.map_err(other))
    }

    async fn exists(&mut self, bucket: Resource<KvStore>, key: String) -> wasmtime::Result<Result<bool, store::Error>> {
        Ok(self.table.get(&bucket)?.get(key).await?.map(|v| v.is_some()).map_err(other))
    }

    async fn list_keys(
        &mut self,
        bucket: Resource<KvStore>,
        cursor: Option<String>,
    ) -> wasmtime::Result<Result<store::KeyResponse, store::Error>> {
        if cursor.is_some() {
            return Ok(Err(other("list_keys: cursor not supported")));
        }
        let keys = self.table.get(&bucket)?.keys().await?;
        Ok(keys.map(|keys| store::KeyResponse { keys, cursor: None }).map_err(other))
    }

    async fn drop(&mut self, bucket: Resource<KvStore>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

impl atomics::Host for State {
    async fn increment(
        &mut self,
        bucket: Resource<KvStore>,
        key: String,
        delta: i64,
    ) -> wasmtime::Result<Result<i64, store::Error>> {
        let bucket = self.table.get(&bucket)?;
        let (label, connection) = (bucket.label.clone(), bucket.connection.clone());
        blocking(move || {
            let mut db = lock(&connection)?;
            let done = (|| -> Result<i64, String> {
                let tx = db.transaction().map_err(|e| e.to_string())?;
                let current: Option<Vec<u8>> = tx
                    .prepare_cached("SELECT value FROM spin_key_value WHERE store=$1 AND key=$2")
                    .and_then(|mut stmt| stmt.query_map([&label, &key], |row| row.get(0))?.next().transpose())
                    .map_err(|e| e.to_string())?;
                let current = match current {
                    None => 0,
                    // Spin panics on a value that is not 8 bytes; the guest gets an error here.
                    Some(bytes) => i64::from_le_bytes(
                        bytes.try_into().map_err(|_| "the value is not a little-endian i64".to_owned())?,
                    ),
                };
                let new = current.wrapping_add(delta);
                tx.prepare_cached(
                    "INSERT INTO spin_key_value (store, key, value) VALUES ($1, $2, $3)
                     ON CONFLICT(store, key) DO UPDATE SET value=$3",
                )
                .and_then(|mut stmt| stmt.execute(rusqlite::params![label, key, new.to_le_bytes()]))
                .map_err(|e| e.to_string())?;
                tx.commit().map_err(|e| e.to_string())?;
                Ok(new)
            })();
            Ok(done.map_err(other))
        })
        .await?
    }

    async fn swap(&mut self, cas: Resource<Cas>, value: Vec<u8>) -> wasmtime::Result<Result<(), atomics::CasError>> {
        let (label, connection, key, seen) = {
            let cas = self.table.get(&cas)?;
            let seen = cas.seen.lock().map_err(|_| wasmtime::format_err!("CAS lock poisoned"))?.clone();
            (cas.label.clone(), cas.connection.clone(), cas.key.clone(), seen)
        };
        let swapped = {
            let (label, key) = (label.clone(), key.clone());
            blocking(move || -> wasmtime::Result<Result<bool, String>> {
                let db = lock(&connection)?;
                let changed = match seen {
                    Some(old) => db
                        .prepare_cached("UPDATE spin_key_value SET value=$4 WHERE store=$1 AND key=$2 AND value=$3")
                        .and_then(|mut stmt| stmt.execute(rusqlite::params![label, key, old, value])),
                    None => db
                        .prepare_cached(
                            "INSERT INTO spin_key_value (store, key, value) VALUES ($1, $2, $3)
                             ON CONFLICT(store, key) DO UPDATE SET value=$3",
                        )
                        .and_then(|mut stmt| stmt.execute(rusqlite::params![label, key, value])),
                };
                Ok(changed.map(|rows| rows == 1).map_err(|e| e.to_string()))
            })
            .await??
        };
        let connection = self.table.get(&cas)?.connection.clone();
        self.table.delete(cas)?;
        match swapped {
            Ok(true) => Ok(Ok(())),
            Err(e) => Ok(Err(atomics::CasError::StoreError(other(e)))),
            // As Spin: a fresh handle that has read the value now there, for the retry.
            Ok(false) => {
                let retry = Cas { label, connection, key, seen: Mutex::new(None) };
                let current = read(&retry).await?;
                match current {
                    Ok(value) => {
                        *retry.seen.lock().map_err(|_| wasmtime::format_err!("CAS lock poisoned"))? = value;
                        Ok(Err(atomics::CasError::CasFailed(self.table.push(retry)?)))
                    }
                    Err(e) => Ok(Err(atomics::CasError::StoreError(e))),
                }
            }
        }
    }
}

/// The value the CAS's key holds now.
async fn read(cas: &Cas) -> wasmtime::Result<Result<Option<Vec<u8>>, store::Error>> {
    let bucket = KvStore { label: cas.label.clone(), connection: cas.connection.clone() };
    Ok(bucket.get(cas.key.clone()).await?.map_err(other))
}

impl atomics::HostCas for State {
    async fn new(
        &mut self,
        bucket: Resource<KvStore>,
        key: String,
    ) -> wasmtime::Result<Result<Resource<Cas>, store::Error>> {
        let bucket = self.table.get(&bucket)?;
        let cas =
            Cas { label: bucket.label.clone(), connection: bucket.connection.clone(), key, seen: Mutex::new(None) };
        Ok(Ok(self.table.push(cas)?))
    }

    async fn current(&mut self, cas: Resource<Cas>) -> wasmtime::Result<Result<Option<Vec<u8>>, store::Error>> {
        let value = read(self.table.get(&cas)?).await?;
        if let Ok(value) = &value {
            *self.table.get(&cas)?.seen.lock().map_err(|_| wasmtime::format_err!("CAS lock poisoned"))? = value.clone();
        }
        Ok(value)
    }

    async fn drop(&mut self, cas: Resource<Cas>) -> wasmtime::Result<()> {
        self.table.delete(cas)?;
        Ok(())
    }
}

impl batch::Host for State {
    async fn get_many(
        &mut self,
        bucket: Resource<KvStore>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<Vec<(String, Option<Vec<u8>>)>, store::Error>> {
        let bucket = self.table.get(&bucket)?;
        let mut found = Vec::with_capacity(keys.len());
        let mut size = 0;
        for key in keys {
            match bucket.get(key.clone()).await? {
                Ok(value) => {
                    size += key.len() + value.as_ref().map_or(0, Vec::len);
                    if size > MAX_RESULT_BYTES {
                        return Ok(Err(other(too_large())));
                    }
                    found.push((key, value));
                }
                Err(e) => return Ok(Err(other(e))),
            }
        }
        Ok(Ok(found))
    }

    async fn set_many(
        &mut self,
        bucket: Resource<KvStore>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> wasmtime::Result<Result<(), store::Error>> {
        let bucket = self.table.get(&bucket)?;
        for (key, value) in key_values {
            if let Err(e) = bucket.set(key, value).await? {
                return Ok(Err(other(e)));
            }
        }
        Ok(Ok(()))
    }

    async fn delete_many(
        &mut self,
        bucket: Resource<KvStore>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<(), store::Error>> {
        let bucket = self.table.get(&bucket)?;
        for key in keys {
            if let Err(e) = bucket.delete(key).await? {
                return Ok(Err(other(e)));
            }
        }
        Ok(Ok(()))
    }
}
