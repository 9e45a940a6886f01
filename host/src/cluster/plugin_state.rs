//! A plugin's `state` map kept in the replicated state, so a standby's plugin instance finds
//! what the active one stored (e.g. a Mesos framework id).
//!
//! Reads come from the replicated state plus this host's writes not yet applied. Writes are
//! coalesced per key: a write marks its key dirty and wakes the replicator, which proposes
//! each dirty key once with its latest value under the current epoch. So a plugin call never
//! waits for Raft, and a plugin writing in a loop costs memory and log entries by the keys it
//! touches, not by the writes (a write of the value already held is no write at all). A host
//! that is not active has no epoch: its writes stay local until it becomes active (the
//! plugin calls of a takeover — e.g. Mesos re-subscribing and writing its framework id — run
//! before the new epoch is handed here) and are dropped when it stops being active.

use super::state::{Command, Replicated};
use crate::plugin::{PluginState, StateUsage};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::mpsc;

#[derive(Debug)]
pub struct ReplicatedPluginState {
    plugin: String,
    state: Arc<RwLock<Replicated>>,
    /// Writes not yet seen in the replicated state (`None`: deleted).
    pending: Mutex<BTreeMap<String, Option<Vec<u8>>>>,
    /// Keys written since the replicator last took them.
    dirty: Mutex<BTreeSet<String>>,
    /// The active epoch and the replicator's wake-up (one queued wake-up is enough), while
    /// this host is active.
    sink: Mutex<Option<(u64, mpsc::Sender<()>)>>,
}

impl ReplicatedPluginState {
    pub fn new(plugin: &str, state: Arc<RwLock<Replicated>>) -> Arc<ReplicatedPluginState> {
        Arc::new(ReplicatedPluginState {
            plugin: plugin.to_owned(),
            state,
            pending: Mutex::default(),
            dirty: Mutex::default(),
            sink: Mutex::default(),
        })
    }

    /// The plugin whose state this is.
    pub fn plugin(&self) -> &str {
        &self.plugin
    }

    /// This host became active under `epoch`: the writes made while taking over, and every
    /// write from now on, go to the cluster; `wake` tells the replicator to [`take`] them.
    ///
    /// [`take`]: ReplicatedPluginState::take
    pub fn activate(&self, epoch: u64, wake: mpsc::Sender<()>) {
        let mut sink = self.sink.lock().expect("sink lock");
        let pending: Vec<String> = self
            .pending
            .lock()
            .expect("pending lock")
            .keys()
            .cloned()
            .collect();
        self.dirty.lock().expect("dirty lock").extend(pending);
        let _ = wake.try_send(());
        *sink = Some((epoch, wake));
    }

    /// This host is no longer active: the replicated state is the truth again.
    pub fn deactivate(&self) {
        *self.sink.lock().expect("sink lock") = None;
        self.pending.lock().expect("pending lock").clear();
        self.dirty.lock().expect("dirty lock").clear();
    }

    /// The commands that replicate every key written since the last call, each once with its
    /// latest value (none while this host is not active).
    pub fn take(&self) -> Vec<Command> {
        let Some(epoch) = self.sink.lock().expect("sink lock").as_ref().map(|s| s.0) else {
            return Vec::new();
        };
        let dirty = std::mem::take(&mut *self.dirty.lock().expect("dirty lock"));
        let pending = self.pending.lock().expect("pending lock");
        dirty
            .into_iter()
            .filter_map(|key| {
                // a key no longer pending is already what the replicated state says
                let value = pending.get(&key)?.clone();
                Some(Command::PluginState {
                    epoch,
                    plugin: self.plugin.clone(),
                    key,
                    value,
                })
            })
            .collect()
    }

    fn write(&self, key: &str, value: Option<Vec<u8>>) {
        {
            let mut pending = self.pending.lock().expect("pending lock");
            let state = self.state.read().expect("state lock");
            let replicated = state.plugin_state.get(&self.plugin);
            let held = match pending.get(key) {
                Some(v) => v.as_ref(),
                None => replicated.and_then(|m| m.get(key)),
            };
            if held == value.as_ref() {
                return;
            }
            // What the replicated state already says needs no overlay: dropping it keeps the
            // overlay as small as the writes in flight (a plugin that puts and deletes many
            // keys would otherwise grow it without bound).
            pending.retain(|k, v| v.as_ref() != replicated.and_then(|m| m.get(k)));
            pending.insert(key.to_owned(), value);
        }
        self.dirty
            .lock()
            .expect("dirty lock")
            .insert(key.to_owned());
        if let Some((_, wake)) = &*self.sink.lock().expect("sink lock") {
            let _ = wake.try_send(());
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

    fn command(c: &Command) -> (u64, &str, &str, Option<&[u8]>) {
        match c {
            Command::PluginState {
                epoch,
                plugin,
                key,
                value,
            } => (*epoch, plugin, key, value.as_deref()),
            other => panic!("{other:?}"),
        }
    }

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
        assert!(state.take().is_empty(), "a standby proposes nothing");
        let (tx, mut rx) = mpsc::channel(1);
        state.activate(7, tx);
        assert!(rx.try_recv().is_ok());
        let taken = state.take();
        assert_eq!(
            taken.iter().map(command).collect::<Vec<_>>(),
            [(7, "mesos", "task/t1", Some(&b"record"[..]))]
        );
        state.put("framework", b"fw-2".to_vec());
        assert_eq!(
            state.get("framework"),
            Some(b"fw-2".to_vec()),
            "own writes are visible at once"
        );
        assert!(rx.try_recv().is_ok());
        assert_eq!(
            state.take().iter().map(command).collect::<Vec<_>>(),
            [(7, "mesos", "framework", Some(&b"fw-2"[..]))]
        );
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
            state.take().first().map(command),
            Some((7, _, "framework", None))
        ));
        state.deactivate();
        assert_eq!(
            state.get("task/t1"),
            None,
            "unreplicated writes die with the activity"
        );
        state.put("x", vec![1]);
        assert!(state.take().is_empty(), "a standby proposes nothing");
    }

    /// Issue 32, defect 3: every `put` (even of an unchanged value) sent a command on an
    /// unbounded channel, so a plugin writing in a loop grew memory and the Raft log without
    /// bound. Writes are coalesced per key now, and an unchanged value is no write.
    #[test]
    fn a_plugin_writing_in_a_loop_costs_one_command_per_key() {
        let shared: Arc<RwLock<Replicated>> = Arc::default();
        let state = ReplicatedPluginState::new("probe", shared.clone());
        let (tx, mut rx) = mpsc::channel(1);
        state.activate(3, tx);
        assert!(rx.try_recv().is_ok());
        for i in 0..10_000u32 {
            state.put("k", vec![(i % 7) as u8; 16_384]);
            state.put("same", vec![1; 16]);
        }
        // one wake-up queued, one command per key, each with the latest value
        assert!(rx.try_recv().is_ok());
        assert!(rx.try_recv().is_err());
        let taken = state.take();
        assert_eq!(taken.len(), 2);
        let k = taken.iter().map(command).find(|c| c.2 == "k").unwrap();
        assert_eq!(k.3, Some(&vec![(9_999 % 7) as u8; 16_384][..]));
        // once replicated, writing the same value again is no write
        for c in &taken {
            shared.write().unwrap().apply(9, c);
        }
        state.put("same", vec![1; 16]);
        state.delete("absent");
        assert!(state.take().is_empty());
        assert!(rx.try_recv().is_err(), "no wake-up for no write");
    }
}
