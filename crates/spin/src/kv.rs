//! The key-value operations the platform uses, behind a trait, so what is built on a key-value
//! store (revocations, key sets, sealed private keys) runs natively in tests against
//! [`Memory`] as it runs in a component against Spin's `key_value::Store`.
//!
//! Only what Spin's key-value interface offers on every backend is here: no compare-and-swap,
//! no expiry. A read-modify-write that must survive concurrent writers needs an arbiter
//! elsewhere (see `tokens::spend_once_on`) or a loop that re-applies its change until it is
//! seen, and is tested against [`Memory`] with threads.

use std::collections::BTreeMap;
use std::sync::Mutex;

use anyhow::Context;

/// A key-value store as Spin offers one.
pub trait Kv {
    /// The value under `key`, if any.
    fn get(&self, key: &str) -> anyhow::Result<Option<Vec<u8>>>;
    /// Stores `value` under `key`, replacing what was there.
    fn set(&self, key: &str, value: &[u8]) -> anyhow::Result<()>;
    /// Removes `key`; removing a missing key is not an error.
    fn delete(&self, key: &str) -> anyhow::Result<()>;
    /// Every key in the store.
    fn keys(&self) -> anyhow::Result<Vec<String>>;
}

impl Kv for spin_sdk::key_value::Store {
    fn get(&self, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        spin_sdk::key_value::Store::get(self, key).with_context(|| format!("reading {key:?}"))
    }

    fn set(&self, key: &str, value: &[u8]) -> anyhow::Result<()> {
        spin_sdk::key_value::Store::set(self, key, value).with_context(|| format!("writing {key:?}"))
    }

    fn delete(&self, key: &str) -> anyhow::Result<()> {
        spin_sdk::key_value::Store::delete(self, key).with_context(|| format!("deleting {key:?}"))
    }

    fn keys(&self) -> anyhow::Result<Vec<String>> {
        spin_sdk::key_value::Store::get_keys(self).context("listing keys")
    }
}

/// Opens the key-value store `label` (as declared in spin.toml).
pub fn open(label: &str) -> anyhow::Result<spin_sdk::key_value::Store> {
    spin_sdk::key_value::Store::open(label).with_context(|| format!("opening {label}"))
}

/// An in-memory store with Spin's semantics (last write wins), shared between threads.
#[derive(Debug, Default)]
pub struct Memory(Mutex<BTreeMap<String, Vec<u8>>>);

impl Memory {
    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<u8>>> {
        // A panicking writer cannot leave a half-written entry: every operation is one call.
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Kv for Memory {
    fn get(&self, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        Ok(self.map().get(key).cloned())
    }

    fn set(&self, key: &str, value: &[u8]) -> anyhow::Result<()> {
        self.map().insert(key.to_owned(), value.to_vec());
        Ok(())
    }

    fn delete(&self, key: &str) -> anyhow::Result<()> {
        self.map().remove(key);
        Ok(())
    }

    fn keys(&self) -> anyhow::Result<Vec<String>> {
        Ok(self.map().keys().cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_behaves_as_a_last_write_wins_store() {
        let kv = Memory::default();
        assert_eq!(kv.get("a").expect("get"), None);
        kv.set("a", b"1").expect("set");
        kv.set("a", b"2").expect("set");
        kv.set("b", b"3").expect("set");
        assert_eq!(kv.get("a").expect("get").as_deref(), Some(&b"2"[..]));
        assert_eq!(kv.keys().expect("keys"), ["a", "b"]);
        kv.delete("a").expect("delete");
        kv.delete("missing").expect("deleting a missing key");
        assert_eq!(kv.keys().expect("keys"), ["b"]);
    }
}
