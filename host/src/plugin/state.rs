//! The `keepwarm:factory/state` import: a small key-value map scoped to one plugin.
//!
//! Plugins keep engine identities here (e.g. a Mesos framework id) so a standby host can carry
//! on where the active one stopped. [`MemoryState`] keeps it in this process, [`FileState`] in
//! a file (a single host, so a restart finds e.g. its Mesos framework again); the cluster
//! replicates it by providing another [`PluginState`].

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
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

/// A plugin's state in a JSON file, rewritten (write, fsync, rename) on every change: plugins
/// write rarely (a framework id, a record per container) and must not lose what they wrote.
#[derive(Debug)]
pub struct FileState {
    path: PathBuf,
    entries: Mutex<BTreeMap<String, Vec<u8>>>,
}

impl FileState {
    /// Opens `path`, or starts empty when it does not exist; a file that does not parse is an
    /// error naming it (it is not silently replaced).
    pub fn open(path: &Path) -> std::io::Result<FileState> {
        let entries = crate::json_file::load(path)
            .map_err(|e| std::io::Error::new(e.kind(), format!("plugin state: {e}")))?;
        Ok(FileState {
            path: path.to_owned(),
            entries: Mutex::new(entries),
        })
    }

    fn save(&self, entries: &BTreeMap<String, Vec<u8>>) {
        if let Err(e) = crate::json_file::save(&self.path, entries) {
            tracing::error!(path = %self.path.display(), "cannot save plugin state: {e}");
        }
    }
}

impl PluginState for FileState {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.entries.lock().expect("state lock").get(key).cloned()
    }

    fn put(&self, key: &str, value: Vec<u8>) {
        let mut entries = self.entries.lock().expect("state lock");
        entries.insert(key.to_owned(), value);
        self.save(&entries);
    }

    fn delete(&self, key: &str) {
        let mut entries = self.entries.lock().expect("state lock");
        if entries.remove(key).is_some() {
            self.save(&entries);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_state_survives_a_restart_and_refuses_a_corrupt_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plugin-state.json");
        let state = FileState::open(&path).unwrap();
        assert_eq!(state.get("framework-id"), None);
        state.put("framework-id", b"fw-1".to_vec());
        state.put("task/a", vec![0, 255]);
        state.delete("task/a");
        drop(state);
        let again = FileState::open(&path).unwrap();
        assert_eq!(again.get("framework-id"), Some(b"fw-1".to_vec()));
        assert_eq!(again.get("task/a"), None);
        std::fs::write(&path, b"{not json").unwrap();
        let e = FileState::open(&path).unwrap_err();
        assert!(e.to_string().contains("plugin-state.json"), "{e}");
    }
}
