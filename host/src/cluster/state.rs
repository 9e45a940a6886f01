//! The replicated state and the commands that change it. Pure logic: the Raft state machine
//! applies [`Command`]s here in log order.
//!
//! Every mutation carries the epoch of the claim it was made under; the claim's log index is
//! the epoch. A mutation from an older epoch (a host that lost leadership but did not notice
//! yet) is rejected, so a stale active host can never overwrite what the new one decided.

use crate::factory::Container;
use crate::plugin::StoredValue;
use crate::pool::WarmKey;
use serde::{Deserialize, Serialize};
use serde_with::{As, Same};
use std::collections::{BTreeMap, VecDeque};

/// How many completed activation ids are kept for de-duplication after a failover.
pub const COMPLETED_KEPT: usize = 10_000;

/// A container as the cluster remembers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub plugin: String,
    pub container: Container,
    pub kind: String,
    pub image: String,
    pub memory_mb: u32,
    /// `namespace/action@revision` when warm; `None` for a prewarm.
    pub warm: Option<WarmKey>,
    pub busy: bool,
    /// Epoch millis of the last use.
    pub last_use_ms: i64,
    /// How long an activation usually holds this (warm) container, in milliseconds: learned
    /// from its busy → idle changes, so a new active host knows whether waiting for it beats
    /// a cold start.
    #[serde(default)]
    pub held_ms: Option<u64>,
}

/// One change to the pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PoolChange {
    Upsert(Box<ContainerRecord>),
    Busy { id: String, busy: bool, at_ms: i64 },
    Warm { id: String, warm: WarmKey },
    Removed { id: String },
}

/// A Raft log entry's payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// A newly elected leader takes over; the entry's log index becomes the epoch.
    Claim {
        node: u64,
    },
    Pool {
        epoch: u64,
        changes: Vec<PoolChange>,
    },
    /// Next offset to consume per partition of the activation topic.
    Offsets {
        epoch: u64,
        offsets: BTreeMap<i32, i64>,
    },
    Completed {
        epoch: u64,
        ids: Vec<String>,
    },
    PluginState {
        epoch: u64,
        plugin: String,
        key: String,
        #[serde(with = "As::<Option<StoredValue>>")]
        value: Option<Vec<u8>>,
    },
}

/// What applying a command answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Reply {
    /// The claim's epoch.
    Claimed {
        epoch: u64,
    },
    Applied,
    /// The command's epoch is older than the current claim.
    StaleEpoch {
        current: u64,
    },
}

/// Who is active, since which log index.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    pub node: u64,
    pub epoch: u64,
}

/// Everything the cluster replicates.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Replicated {
    pub claim: Claim,
    pub containers: BTreeMap<String, ContainerRecord>,
    pub offsets: BTreeMap<i32, i64>,
    pub completed: VecDeque<String>,
    #[serde(with = "As::<BTreeMap<Same, BTreeMap<Same, StoredValue>>>")]
    pub plugin_state: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
}

impl Replicated {
    /// Applies `command`, found at log `index`.
    pub fn apply(&mut self, index: u64, command: &Command) -> Reply {
        let epoch = match command {
            Command::Claim { node } => {
                self.claim = Claim {
                    node: *node,
                    epoch: index,
                };
                return Reply::Claimed { epoch: index };
            }
            Command::Pool { epoch, .. }
            | Command::Offsets { epoch, .. }
            | Command::Completed { epoch, .. }
            | Command::PluginState { epoch, .. } => *epoch,
        };
        if epoch < self.claim.epoch {
            return Reply::StaleEpoch {
                current: self.claim.epoch,
            };
        }
        match command {
            Command::Claim { .. } => unreachable!("handled above"),
            Command::Pool { changes, .. } => changes.iter().for_each(|c| self.change(c)),
            Command::Offsets { offsets, .. } => {
                for (p, o) in offsets {
                    let e = self.offsets.entry(*p).or_insert(*o);
                    *e = (*e).max(*o);
                }
            }
            Command::Completed { ids, .. } => {
                self.completed.extend(ids.iter().cloned());
                while self.completed.len() > COMPLETED_KEPT {
                    self.completed.pop_front();
                }
            }
            Command::PluginState {
                plugin, key, value, ..
            } => {
                let map = self.plugin_state.entry(plugin.clone()).or_default();
                match value {
                    Some(v) => map.insert(key.clone(), v.clone()),
                    None => map.remove(key),
                };
            }
        }
        Reply::Applied
    }

    fn change(&mut self, change: &PoolChange) {
        match change {
            PoolChange::Upsert(record) => {
                self.containers
                    .insert(record.container.id.clone(), (**record).clone());
            }
            PoolChange::Busy { id, busy, at_ms } => {
                if let Some(c) = self.containers.get_mut(id) {
                    if c.busy && !*busy {
                        let held = u64::try_from(at_ms.saturating_sub(c.last_use_ms)).unwrap_or(0);
                        c.held_ms = Some(match c.held_ms {
                            None => held,
                            Some(old) => (old * 3 + held) / 4,
                        });
                    }
                    c.busy = *busy;
                    c.last_use_ms = *at_ms;
                }
            }
            PoolChange::Warm { id, warm } => {
                if let Some(c) = self.containers.get_mut(id) {
                    c.warm = Some(warm.clone());
                }
            }
            PoolChange::Removed { id } => {
                self.containers.remove(id);
            }
        }
    }

    pub fn is_completed(&self, activation_id: &str) -> bool {
        self.completed.iter().any(|c| c == activation_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::factory::ContainerState;

    #[test]
    fn plugin_state_is_replicated_as_base64_and_old_number_arrays_are_read() {
        let put = Command::PluginState {
            epoch: 3,
            plugin: "mesos".into(),
            key: "framework-id".into(),
            value: Some(b"fw-1".to_vec()),
        };
        let json = serde_json::to_string(&put).unwrap();
        assert!(json.contains(r#""value":"ZnctMQ==""#), "{json}");
        assert_eq!(serde_json::from_str::<Command>(&json).unwrap(), put);
        let old = r#"{"PluginState":{"epoch":3,"plugin":"mesos","key":"framework-id","value":[102,119,45,49]}}"#;
        assert_eq!(serde_json::from_str::<Command>(old).unwrap(), put);
        let delete = r#"{"PluginState":{"epoch":3,"plugin":"mesos","key":"k","value":null}}"#;
        assert!(matches!(
            serde_json::from_str::<Command>(delete).unwrap(),
            Command::PluginState { value: None, .. }
        ));

        let mut state = Replicated::default();
        state.apply(3, &Command::Claim { node: 1 });
        state.apply(4, &put);
        let snapshot = serde_json::to_value(&state).unwrap();
        assert_eq!(
            snapshot["plugin_state"]["mesos"]["framework-id"],
            "ZnctMQ=="
        );
        let mut old_snapshot = snapshot.clone();
        old_snapshot["plugin_state"]["mesos"]["framework-id"] =
            serde_json::json!([102, 119, 45, 49]);
        assert_eq!(
            serde_json::from_value::<Replicated>(old_snapshot).unwrap(),
            state
        );
    }

    fn record(id: &str) -> ContainerRecord {
        ContainerRecord {
            plugin: "docker".into(),
            container: Container {
                id: id.into(),
                name: id.into(),
                address: "127.0.0.1:1".into(),
                state: ContainerState::Running,
                labels: Vec::new(),
                handle: String::new(),
            },
            kind: "shell:1".into(),
            image: "img".into(),
            memory_mb: 128,
            warm: None,
            busy: false,
            last_use_ms: 0,
            held_ms: None,
        }
    }

    #[test]
    fn how_long_a_container_is_held_is_learned_from_busy_and_idle() {
        let mut s = Replicated::default();
        s.apply(1, &Command::Claim { node: 1 });
        let busy = |busy, at_ms| Command::Pool {
            epoch: 1,
            changes: vec![PoolChange::Busy {
                id: "a".into(),
                busy,
                at_ms,
            }],
        };
        s.apply(
            2,
            &Command::Pool {
                epoch: 1,
                changes: vec![PoolChange::Upsert(Box::new(record("a")))],
            },
        );
        s.apply(3, &busy(true, 1_000));
        s.apply(4, &busy(false, 1_040));
        assert_eq!(s.containers["a"].held_ms, Some(40));
        s.apply(5, &busy(true, 2_000));
        s.apply(6, &busy(false, 2_080));
        assert_eq!(s.containers["a"].held_ms, Some(50), "(3 × 40 + 80) / 4");
    }

    #[test]
    fn a_claim_fences_writes_from_older_epochs() {
        let mut s = Replicated::default();
        assert_eq!(
            s.apply(3, &Command::Claim { node: 1 }),
            Reply::Claimed { epoch: 3 }
        );
        let add = Command::Pool {
            epoch: 3,
            changes: vec![PoolChange::Upsert(Box::new(record("a")))],
        };
        assert_eq!(s.apply(4, &add), Reply::Applied);
        assert_eq!(
            s.apply(9, &Command::Claim { node: 2 }),
            Reply::Claimed { epoch: 9 }
        );
        // node 1 did not notice it lost leadership
        let stale = Command::Pool {
            epoch: 3,
            changes: vec![PoolChange::Removed { id: "a".into() }],
        };
        assert_eq!(s.apply(10, &stale), Reply::StaleEpoch { current: 9 });
        assert!(s.containers.contains_key("a"));
        let fresh = Command::Pool {
            epoch: 9,
            changes: vec![PoolChange::Removed { id: "a".into() }],
        };
        assert_eq!(s.apply(11, &fresh), Reply::Applied);
        assert!(s.containers.is_empty());
    }

    #[test]
    fn offsets_only_move_forward_and_completed_ids_are_bounded() {
        let mut s = Replicated::default();
        s.apply(1, &Command::Claim { node: 1 });
        s.apply(
            2,
            &Command::Offsets {
                epoch: 1,
                offsets: BTreeMap::from([(0, 10)]),
            },
        );
        s.apply(
            3,
            &Command::Offsets {
                epoch: 1,
                offsets: BTreeMap::from([(0, 7)]),
            },
        );
        assert_eq!(s.offsets[&0], 10);
        let ids: Vec<String> = (0..COMPLETED_KEPT + 5).map(|i| i.to_string()).collect();
        s.apply(4, &Command::Completed { epoch: 1, ids });
        assert_eq!(s.completed.len(), COMPLETED_KEPT);
        assert!(!s.is_completed("0"));
        assert!(s.is_completed(&(COMPLETED_KEPT + 4).to_string()));
    }
}
