//! The `keepwarm:factory/state` import: a small key-value map scoped to one plugin.
//!
//! Plugins keep engine identities here (e.g. a Mesos framework id) so a standby host can carry
//! on where the active one stopped. [`MemoryState`] keeps it in this process, [`FileState`] in
//! a file (a single host, so a restart finds e.g. its Mesos framework again); the cluster
//! replicates it by providing another [`PluginState`]. [`StateLimits`] bound what one plugin
//! may keep, whatever stores it: every value travels through Raft and lives in every member's
//! memory and snapshot.

use serde::{Deserialize, Serialize};
use serde_with::base64::Base64;
use serde_with::ser::SerializeAsWrap;
use serde_with::{As, PickFirst, Same};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// How a state value is written in JSON (files, Raft entries, snapshots): base64, a third
/// larger than the bytes; a JSON array of numbers (up to four times larger, how keepwarm
/// wrote it before) is still read.
pub type StoredValue = PickFirst<(Base64, Same)>;

/// The longest key a plugin may use, in bytes.
pub const MAX_KEY_BYTES: usize = 256;
/// The largest value a plugin may store under one key. With openraft's batches of up to 300
/// entries and base64's third, a batch of the largest values stays well inside the Raft body
/// limit (16 MiB).
pub const MAX_VALUE_BYTES: usize = 16 << 10;

/// What one plugin may keep: keys and values as above, at most `max_keys` keys and
/// `max_bytes` bytes (keys and values together).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateLimits {
    pub max_keys: usize,
    pub max_bytes: usize,
}

impl Default for StateLimits {
    fn default() -> Self {
        StateLimits {
            max_keys: 4096,
            max_bytes: 1 << 20,
        }
    }
}

/// What a plugin keeps now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateUsage {
    pub keys: usize,
    /// Keys and values together.
    pub bytes: usize,
}

impl StateUsage {
    /// The usage of `entries`.
    pub fn of<'a>(entries: impl IntoIterator<Item = (&'a String, &'a Vec<u8>)>) -> StateUsage {
        entries
            .into_iter()
            .fold(StateUsage::default(), |u, (k, v)| StateUsage {
                keys: u.keys + 1,
                bytes: u.bytes + k.len() + v.len(),
            })
    }
}

impl StateLimits {
    /// Whether writing `value` under `key` keeps a plugin whose state is `usage` (and whose
    /// current value under `key` is `replaced`) within these limits; the error names the bound.
    pub fn admit(
        &self,
        key: &str,
        value: &[u8],
        usage: StateUsage,
        replaced: Option<usize>,
    ) -> Result<(), String> {
        if key.len() > MAX_KEY_BYTES {
            return Err(format!(
                "state key of {} bytes is longer than {MAX_KEY_BYTES} bytes",
                key.len()
            ));
        }
        if value.len() > MAX_VALUE_BYTES {
            return Err(format!(
                "state value of {} bytes under `{key}` is larger than {MAX_VALUE_BYTES} bytes",
                value.len()
            ));
        }
        let keys = usage.keys + usize::from(replaced.is_none());
        if keys > self.max_keys {
            return Err(format!(
                "state is full: {} keys already, the limit is {} ([plugin] state-max-keys)",
                usage.keys, self.max_keys
            ));
        }
        let freed = replaced.map_or(0, |r| key.len() + r);
        let bytes = usage.bytes - freed.min(usage.bytes) + key.len() + value.len();
        if bytes > self.max_bytes {
            return Err(format!(
                "state is full: writing {} bytes under `{key}` would keep {bytes} bytes, the \
                 limit is {} ([plugin] state-max-kb)",
                value.len(),
                self.max_bytes
            ));
        }
        Ok(())
    }
}

/// Storage behind one plugin's `state` import. Limits are checked by the caller
/// ([`StateLimits::admit`] against [`PluginState::usage`]) before a `put`.
pub trait PluginState: Send + Sync + std::fmt::Debug {
    fn get(&self, key: &str) -> Option<Vec<u8>>;
    /// The keys starting with `prefix`, in byte order.
    fn keys(&self, prefix: &str) -> Vec<String>;
    fn put(&self, key: &str, value: Vec<u8>);
    fn delete(&self, key: &str);
    fn usage(&self) -> StateUsage;
}

/// The keys of `entries` starting with `prefix`, in order.
pub fn keys_with_prefix<V>(entries: &BTreeMap<String, V>, prefix: &str) -> Vec<String> {
    entries
        .range(prefix.to_owned()..)
        .map(|(k, _)| k)
        .take_while(|k| k.starts_with(prefix))
        .cloned()
        .collect()
}

/// A plugin's state held in memory, shared by all of its instances.
#[derive(Debug, Default)]
pub struct MemoryState {
    entries: Mutex<BTreeMap<String, Vec<u8>>>,
}

impl PluginState for MemoryState {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.entries.lock().expect("state lock").get(key).cloned()
    }

    fn keys(&self, prefix: &str) -> Vec<String> {
        keys_with_prefix(&self.entries.lock().expect("state lock"), prefix)
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

    fn usage(&self) -> StateUsage {
        StateUsage::of(self.entries.lock().expect("state lock").iter())
    }
}

/// The state file's content.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(transparent)]
struct Stored(#[serde(with = "As::<BTreeMap<Same, StoredValue>>")] BTreeMap<String, Vec<u8>>);

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
        let Stored(entries) = crate::json_file::load(path)
            .map_err(|e| std::io::Error::new(e.kind(), format!("plugin state: {e}")))?;
        Ok(FileState {
            path: path.to_owned(),
            entries: Mutex::new(entries),
        })
    }

    fn save(&self, entries: &BTreeMap<String, Vec<u8>>) {
        let stored = SerializeAsWrap::<_, BTreeMap<Same, StoredValue>>::new(entries);
        if let Err(e) = crate::json_file::save(&self.path, &stored) {
            tracing::error!(path = %self.path.display(), "cannot save plugin state: {e}");
        }
    }
}

impl PluginState for FileState {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.entries.lock().expect("state lock").get(key).cloned()
    }

    fn keys(&self, prefix: &str) -> Vec<String> {
        keys_with_prefix(&self.entries.lock().expect("state lock"), prefix)
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

    fn usage(&self) -> StateUsage {
        StateUsage::of(self.entries.lock().expect("state lock").iter())
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

    #[test]
    fn file_state_is_written_as_base64_and_reads_the_old_number_arrays() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plugin-state.json");
        std::fs::write(&path, br#"{"old":[0,255,7]}"#).unwrap();
        let state = FileState::open(&path).unwrap();
        assert_eq!(state.get("old"), Some(vec![0, 255, 7]));
        state.put("new", b"fw-1".to_vec());
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, r#"{"new":"ZnctMQ==","old":"AP8H"}"#);
        assert_eq!(state.keys(""), ["new", "old"]);
        assert_eq!(state.keys("ne"), ["new"]);
        assert_eq!(state.keys("x"), Vec::<String>::new());
    }

    #[test]
    fn limits_name_the_bound_a_write_would_break() {
        let limits = StateLimits {
            max_keys: 2,
            max_bytes: 100,
        };
        let state = MemoryState::default();
        let put = |key: &str, value: &[u8]| {
            let replaced = state.get(key).map(|v| v.len());
            limits
                .admit(key, value, state.usage(), replaced)
                .map(|()| state.put(key, value.to_vec()))
        };
        let long_key = "k".repeat(MAX_KEY_BYTES + 1);
        assert!(put(&long_key, b"v")
            .unwrap_err()
            .contains("longer than 256"));
        let big = vec![0; MAX_VALUE_BYTES + 1];
        assert!(put("a", &big).unwrap_err().contains("larger than 16384"));
        put("a", &[1; 40]).unwrap();
        put("b", &[1; 40]).unwrap();
        let full = put("c", b"x").unwrap_err();
        assert!(
            full.contains("2 keys") && full.contains("state-max-keys"),
            "{full}"
        );
        // replacing a key adds no key and frees its old value
        put("a", &[2; 58]).unwrap();
        let bytes = put("b", &[2; 60]).unwrap_err();
        assert!(
            bytes.contains("state-max-kb") && bytes.contains("120 bytes"),
            "{bytes}"
        );
        assert_eq!(
            state.usage(),
            StateUsage {
                keys: 2,
                bytes: 100
            }
        );
        assert_eq!(
            state.get("b"),
            Some(vec![1; 40]),
            "a refused write stores nothing"
        );
    }
}
