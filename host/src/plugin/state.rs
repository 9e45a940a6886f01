//! The `keepwarm:factory/state` import: a small key-value map scoped to one plugin.
//!
//! Plugins keep engine identities here (e.g. a Mesos framework id) so a standby host can carry
//! on where the active one stopped. [`MemoryState`] keeps it in this process; the cluster
//! replicates it by providing another [`PluginState`].

use std::collections::HashMap;
use std::sync::Mutex;

/// Storage behind one plugin's `state` import.
pub trait PluginState: Send + Sync + std::fmt::Debug {
    fn get(&self, key: &str) -> Option<Vec<u8>>;
    fn put(&self, key: &str, value: Vec<u8>);
    fn delete(&self, key: &str);
}

/// A plugin's state held in memory, shared by all of its instances.
#[derive(Debug, Default)]
pub struct MemoryState {
    entries: Mutex<HashMap<String, Vec<u8>>>,
}

impl PluginState for MemoryState {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.entries.lock().expect("state lock").get(key).cloned()
    }

    fn put(&self, key: &str, value: Vec<u8>) {
        self.entries
            .lock()
            .expect("state lock")
            .insert(key.to_owned(), value);
    }

    fn delete(&self, key: &str) {
        self.entries.lock().expect("state lock").remove(key);
    }
}
