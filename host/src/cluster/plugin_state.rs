//! A plugin's `state` map kept in the replicated state, so a standby's plugin instance finds
//! what the active one stored (e.g. a Mesos framework id).
//!
//! Reads come from the replicated state plus this host's writes not yet applied; writes are
//! queued and proposed in the background under the current epoch, so a plugin call never
//! waits for Raft. A host that is not active has no epoch: its writes stay local until it
//! becomes active (the plugin calls of a takeover — e.g. Mesos re-subscribing and writing its
//! framework id — run before the new epoch is handed here) and are dropped when it stops
//! being active.

use super::state::{Command, Replicated};
use crate::plugin::{PluginState, StateUsage};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::mpsc;

#[derive(Debug)]
pub struct ReplicatedPluginState {
    plugin: String,
    state: Arc<RwLock<Replicated>>,
    /// Writes not yet seen in the replicated state (`None`: deleted).
    pending: Mutex<BTreeMap<String, Option<Vec<u8>>>>,
    /// The active epoch and where to send commands, while this host is active.
    sink: Mutex<Option<(u64, mpsc::UnboundedSender<Command>)>>,
}

impl ReplicatedPluginState {
    pub fn new(plugin: &str, state: Arc<RwLock<Replicated>>) -> Arc<ReplicatedPluginState> {
        Arc::new(ReplicatedPluginState {
            plugin: plugin.to_owned(),
            state,
            pending: Mutex::default(),
            sink: Mutex::default(),
        })
    }

    /// The plugin whose state this is.
    pub fn plugin(&self) -> &str {
        &self.plugin
    }

    /// This host became active under `epoch`: the writes made while taking over, and every
    /// write from now on, go to the cluster.
    pub fn activate(&self, epoch: u64, commands: mpsc::UnboundedSender<Command>) {
        let mut sink = self.sink.lock().expect("sink lock");
        for (key, value) in self.pending.lock().expect("pending lock").iter() {
            let _ = commands.send(Command::PluginState {
                epoch,
                plugin: self.plugin.clone(),
                key: key.clone(),
                value: value.clone(),
            });
        }
        *sink = Some((epoch, commands));
    }

    /// This host is no longer active: the replicated state is the truth again.
    pub fn deactivate(&self) {
        *self.sink.lock().expect("sink lock") = None;
        self.pending.lock().expect("pending lock").clear();
    }

    fn write(&self, key: &str, value: Option<Vec<u8>>) {
        {
            let mut pending = self.pending.lock().expect("pending lock");
            // What the replicated state already says needs no overlay: dropping it keeps the
            // overlay as small as the writes in flight (a plugin that puts and deletes many
            // keys would otherwise grow it without bound).
            let state = self.state.read().expect("state lock");
            let replicated = state.plugin_state.get(&self.plugin);
            pending.retain(|k, v| v.as_ref() != replicated.and_then(|m| m.get(k)));
            pending.insert(key.to_owned(), value.clone());
        }
        if let Some((epoch, tx)) = &*self.sink.lock().expect("sink lock") {
            let _ = tx.send(Command::PluginState {
                epoch: *epoch,
                plugin: self.plugin.clone(),
                key: key.to_owned(),
                value,
            });
        }
    }
}

impl PluginState for ReplicatedPluginState {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        if let Some(v) = self.pending.lock().expect("pending lock").get(key) {
            return v.clone();
        }
        self.state
            .read()
            .expect("state lock")
            .plugin_state
            .get(&self.plugin)
            .and_then(|m| m.get(key).cloned())
    }

    fn keys(&self, prefix: &str) -> Vec<String> {
        self.merged(|entries| crate::plugin::state::keys_with_prefix(entries, prefix))
    }

    fn put(&self, key: &str, value: Vec<u8>) {
        self.write(key, Some(value));
    }

    fn delete(&self, key: &str) {
        self.write(key, None);
    }

    fn usage(&self) -> StateUsage {
        self.merged(|entries| StateUsage::of(entries.iter()))
    }
}

impl ReplicatedPluginState {
    /// `read` of the replicated entries with this host's pending writes laid over them.
    fn merged<T>(&self, read: impl FnOnce(&BTreeMap<String, Vec<u8>>) -> T) -> T {
        let pending = self.pending.lock().expect("pending lock");
        let state = self.state.read().expect("state lock");
        let replicated = state.plugin_state.get(&self.plugin);
        if pending.is_empty() {
            return read(replicated.unwrap_or(&BTreeMap::new()));
        }
        let mut entries = replicated.cloned().unwrap_or_default();
        for (key, value) in pending.iter() {
            match value {
                Some(v) => entries.insert(key.clone(), v.clone()),
                None => entries.remove(key),
            };
        }
        read(&entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_replicated_values_and_queues_writes_under_the_epoch() {
        let shared: Arc<RwLock<Replicated>> = Arc::default();
        shared
            .write()
            .unwrap()
            .apply(1, &Command::Claim { node: 1 });
        shared.write().unwrap().apply(
            2,
            &Command::PluginState {
                epoch: 1,
                plugin: "mesos".into(),
                key: "framework".into(),
                value: Some(b"fw-1".to_vec()),
            },
        );
        let state = ReplicatedPluginState::new("mesos", shared.clone());
        assert_eq!(state.get("framework"), Some(b"fw-1".to_vec()));

        // written while taking over, before the epoch is known: proposed on activation
        state.put("task/t1", b"record".to_vec());
        let (tx, mut rx) = mpsc::unbounded_channel();
        state.activate(7, tx);
        assert!(matches!(
            rx.try_recv(),
            Ok(Command::PluginState { epoch: 7, ref key, .. }) if key == "task/t1"
        ));
        state.put("framework", b"fw-2".to_vec());
        assert_eq!(
            state.get("framework"),
            Some(b"fw-2".to_vec()),
            "own writes are visible at once"
        );
        match rx.try_recv().unwrap() {
            Command::PluginState {
                epoch,
                plugin,
                key,
                value,
            } => {
                assert_eq!(
                    (epoch, plugin.as_str(), key.as_str()),
                    (7, "mesos", "framework")
                );
                assert_eq!(value, Some(b"fw-2".to_vec()));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(state.keys("task/"), ["task/t1"]);
        assert_eq!(
            state.usage(),
            StateUsage {
                keys: 2,
                bytes: "framework".len() + 4 + "task/t1".len() + 6
            }
        );
        state.delete("framework");
        assert_eq!(state.get("framework"), None);
        assert_eq!(
            state.keys(""),
            ["task/t1"],
            "a pending delete hides the key"
        );
        assert!(matches!(
            rx.try_recv(),
            Ok(Command::PluginState { value: None, .. })
        ));
        state.deactivate();
        assert_eq!(
            state.get("task/t1"),
            None,
            "unreplicated writes die with the activity"
        );
        state.put("x", vec![1]);
        assert!(rx.try_recv().is_err(), "a standby proposes nothing");
    }
}
