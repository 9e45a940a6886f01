//! The replicated state and the commands that change it. Pure logic: the Raft state machine
//! applies [`Command`]s here in log order.
//!
//! Every mutation carries the epoch of the claim it was made under; the claim's log index is
//! the epoch. A mutation from an older epoch (a host that lost leadership but did not notice
//! yet) is rejected, so a stale active host can never overwrite what the new one decided.

use super::completed::CompletedIds;
use crate::factory::Container;
use crate::plugin::StoredValue;
use crate::pool::WarmKey;
use serde::{Deserialize, Serialize};
use serde_with::{As, Same};
use std::collections::{BTreeMap, BTreeSet};

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
    /// Busy with an activation whose `/run` waits until its start is committed (cluster mode,
    /// at-most-once): if no activation started in it, it never received `/run` since it
    /// became busy, and a new active host offers it again at once.
    #[serde(default)]
    pub journaled: bool,
}

/// One change to the pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PoolChange {
    Upsert(Box<ContainerRecord>),
    Busy {
        id: String,
        busy: bool,
        at_ms: i64,
        /// See [`ContainerRecord::journaled`]; absent in older members' logs (then false).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        journaled: bool,
    },
    Warm {
        id: String,
        warm: WarmKey,
    },
    Removed {
        id: String,
    },
}

/// A planned step-down: the active host stopped pulling, names the member it asks to lead
/// next, and lends it nothing it still uses: the activations still running there finish there.
/// The next claim takes it over (as [`Replicated::lent`]); see `docs/architecture.md`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handover {
    /// The member handing over.
    pub from: u64,
    /// The member asked to campaign.
    pub to: u64,
    /// Activations still running on `from`: the next active host neither runs them nor
    /// reuses their containers while `from` may still finish them.
    pub running: BTreeSet<String>,
    /// Epoch millis by which `from` has finished or given up (its drain timeout): then what
    /// still runs is run again and the containers it held are destroyed (outcome unknown).
    pub until_ms: i64,
}

/// A Raft log entry's payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// A newly elected leader takes over; the entry's log index becomes the epoch.
    Claim { node: u64 },
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
        /// Activations about to be sent to a container (committed before `/run`): after a
        /// failover they may have run. Absent in the logs of older versions, which ignore it.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        started: Vec<String>,
        /// Where and when each of `started` was sent (absent in older logs).
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        started_in: BTreeMap<String, StartedIn>,
    },
    PluginState {
        epoch: u64,
        plugin: String,
        key: String,
        #[serde(with = "As::<Option<StoredValue>>")]
        value: Option<Vec<u8>>,
    },
    /// The active host steps down in an orderly way.
    Handover { epoch: u64, handover: Handover },
    /// The active host switched a plugin to a new build: standbys that staged the same build
    /// switch too, and a new active host runs it.
    PluginBuild {
        epoch: u64,
        plugin: String,
        sha256: String,
    },
    /// The member that handed over is done with what ran there: `completed` were
    /// acknowledged; `unfinished` were not (fenced, or its drain timed out) and are run here.
    HandedBack {
        epoch: u64,
        completed: Vec<String>,
        unfinished: Vec<String>,
    },
}

/// The container an activation was sent to, and when: its start was journaled at `at_ms`
/// (this host's clock), so its `/run` — and the sentinels that end it — came after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartedIn {
    pub container: String,
    pub at_ms: i64,
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
    pub completed: CompletedIds,
    #[serde(with = "As::<BTreeMap<Same, BTreeMap<Same, StoredValue>>>")]
    pub plugin_state: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    /// Offered by the active host stepping down, for the next claim.
    #[serde(default)]
    pub handover: Option<Handover>,
    /// The handover the current claim took over: what still runs on the member before.
    #[serde(default)]
    pub lent: Option<Handover>,
    /// The build (sha256) each plugin was last switched to cluster-wide.
    #[serde(default)]
    pub plugin_builds: BTreeMap<String, String>,
    /// Activations sent (or about to be sent) to a container and not completed: by the log
    /// index that started them, at most [`STARTED_KEPT`].
    #[serde(default)]
    pub started: BTreeMap<String, u64>,
    /// Of `started`, the container each was sent to (unknown for starts from older members).
    #[serde(default)]
    pub started_in: BTreeMap<String, StartedIn>,
}

/// How many started, not completed, activations are remembered (the ones in flight at a
/// failover; more only when completions were lost).
pub const STARTED_KEPT: usize = 10_000;

impl Replicated {
    /// Applies `command`, found at log `index`.
    pub fn apply(&mut self, index: u64, command: &Command) -> Reply {
        let epoch = match command {
            Command::Claim { node } => {
                // A pending handover was offered under the claim this one ends (every claim
                // takes it or clears it): the new active host inherits what still runs.
                self.lent = self.handover.take();
                self.claim = Claim {
                    node: *node,
                    epoch: index,
                };
                return Reply::Claimed { epoch: index };
            }
            Command::Pool { epoch, .. }
            | Command::Offsets { epoch, .. }
            | Command::Completed { epoch, .. }
            | Command::PluginState { epoch, .. }
            | Command::Handover { epoch, .. }
            | Command::HandedBack { epoch, .. }
            | Command::PluginBuild { epoch, .. } => *epoch,
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
            Command::Completed {
                ids,
                started,
                started_in,
                ..
            } => {
                for id in started {
                    self.started.insert(id.clone(), index);
                }
                for (id, place) in started_in {
                    self.started_in.insert(id.clone(), place.clone());
                }
                self.complete(ids);
                while self.started.len() > STARTED_KEPT {
                    let oldest = self
                        .started
                        .iter()
                        .min_by_key(|(_, at)| **at)
                        .map(|(id, _)| id.clone());
                    if let Some(id) = oldest {
                        self.started.remove(&id);
                        self.started_in.remove(&id);
                    }
                }
            }
            Command::HandedBack {
                completed,
                unfinished,
                ..
            } => {
                // Only what the handover lent counts: an id it did not lend (or a second
                // handback of one) changes nothing, so no member can mark arbitrary
                // activations completed (skipped) or released (run again).
                let Some(lent) = &mut self.lent else {
                    return Reply::Applied;
                };
                let completed: Vec<String> = completed
                    .iter()
                    .filter(|id| lent.running.remove(*id))
                    .cloned()
                    .collect();
                for id in unfinished {
                    lent.running.remove(id);
                }
                self.complete(&completed);
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
            Command::Handover { handover, .. } => self.handover = Some(handover.clone()),
            Command::PluginBuild { plugin, sha256, .. } => {
                self.plugin_builds.insert(plugin.clone(), sha256.clone());
            }
        }
        Reply::Applied
    }

    fn complete(&mut self, ids: &[String]) {
        for id in ids {
            self.started.remove(id);
            self.started_in.remove(id);
        }
        self.completed.extend(ids, COMPLETED_KEPT);
    }

    /// Whether `id` was sent to a container (its start committed) and not completed: after a
    /// failover, it may have run.
    pub fn may_have_run(&self, id: &str) -> bool {
        self.started.contains_key(id) && !self.is_completed(id)
    }

    /// The containers an activation that may have run was sent to, each with the latest
    /// such start (epoch millis).
    pub fn running_in(&self) -> BTreeMap<String, i64> {
        let mut running = BTreeMap::new();
        for (id, place) in &self.started_in {
            if self.may_have_run(id) {
                let at = running
                    .entry(place.container.clone())
                    .or_insert(place.at_ms);
                *at = (*at).max(place.at_ms);
            }
        }
        running
    }

    fn change(&mut self, change: &PoolChange) {
        match change {
            PoolChange::Upsert(record) => {
                self.containers
                    .insert(record.container.id.clone(), (**record).clone());
            }
            PoolChange::Busy {
                id,
                busy,
                at_ms,
                journaled,
            } => {
                if let Some(c) = self.containers.get_mut(id) {
                    if c.busy && !*busy {
                        let held = u64::try_from(at_ms.saturating_sub(c.last_use_ms)).unwrap_or(0);
                        c.held_ms = Some(match c.held_ms {
                            None => held,
                            Some(old) => (old * 3 + held) / 4,
                        });
                    }
                    c.busy = *busy;
                    c.journaled = *busy && *journaled;
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
        self.completed.contains(activation_id)
    }

    /// Whether a handover from `member` is committed (offered, or taken by the current
    /// claim).
    pub fn has_handover_from(&self, member: u64) -> bool {
        self.handover
            .iter()
            .chain(self.lent.iter())
            .any(|h| h.from == member)
    }

    /// Until when (epoch millis) `activation_id` is left to the member that handed over, if
    /// it was running there and has not been reported finished.
    pub fn lent_until(&self, activation_id: &str) -> Option<i64> {
        self.lent
            .as_ref()
            .filter(|l| l.running.contains(activation_id))
            .map(|l| l.until_ms)
    }
}

/// For tests (the unit tests, and the tests crate through the `testing` feature).
#[cfg(any(test, feature = "testing"))]
impl ContainerRecord {
    /// An idle prewarm container's record on `plugin`: what the cluster's, the failover's
    /// and the tests crate's tests start from (`..ContainerRecord::sample(..)`).
    pub fn sample(plugin: &str, id: &str) -> ContainerRecord {
        ContainerRecord {
            plugin: plugin.into(),
            container: Container::sample(id),
            kind: "shell:1".into(),
            image: "keepwarm/action-runtime:latest".into(),
            memory_mb: 128,
            warm: None,
            busy: false,
            last_use_ms: 0,
            held_ms: None,
            journaled: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        ContainerRecord::sample("docker", id)
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
                journaled: false,
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
    fn the_claim_after_a_handover_inherits_what_still_runs_and_the_one_after_does_not() {
        let mut s = Replicated::default();
        s.apply(1, &Command::Claim { node: 1 });
        let handover = Handover {
            from: 1,
            to: 2,
            running: ["a1".to_string(), "a2".to_string()].into(),
            until_ms: 5_000,
        };
        let offer_at = |epoch| Command::Handover {
            epoch,
            handover: handover.clone(),
        };
        let offer = offer_at(1);
        assert_eq!(s.apply(2, &offer), Reply::Applied);
        assert_eq!(s.lent_until("a1"), None, "not lent before the next claim");
        s.apply(3, &Command::Claim { node: 2 });
        assert_eq!(s.lent.as_ref(), Some(&handover));
        assert_eq!(s.lent_until("a1"), Some(5_000));
        assert_eq!(s.lent_until("a2"), Some(5_000));
        s.apply(
            4,
            &Command::HandedBack {
                epoch: 3,
                completed: vec!["a1".into()],
                unfinished: vec![],
            },
        );
        assert_eq!(s.lent_until("a1"), None, "reported finished");
        assert!(s.is_completed("a1"));
        assert_eq!(s.lent_until("a2"), Some(5_000));
        // an old epoch cannot offer a handover, and the next claim clears what was lent
        assert!(matches!(s.apply(5, &offer), Reply::StaleEpoch { .. }));
        s.apply(
            6,
            &Command::HandedBack {
                epoch: 3,
                completed: vec![],
                unfinished: vec!["a2".into()],
            },
        );
        assert_eq!(s.lent_until("a2"), None, "handed back unfinished: run here");
        assert!(!s.is_completed("a2"));
        s.apply(7, &offer_at(3));
        s.apply(8, &Command::Claim { node: 3 });
        assert!(s.lent.is_some());
        s.apply(9, &Command::Claim { node: 1 });
        assert_eq!(
            s.lent, None,
            "only the claim right after the offer inherits it"
        );
    }

    /// Issue 32, defect 6: a handback could mark any activation completed (so it was
    /// skipped: lost). Only what the handover lent counts, once.
    #[test]
    fn a_handback_completes_only_what_the_handover_lent() {
        let mut s = Replicated::default();
        s.apply(1, &Command::Claim { node: 1 });
        let handover = Handover {
            from: 1,
            to: 2,
            running: ["a1".to_string()].into(),
            until_ms: 5_000,
        };
        s.apply(2, &Command::Handover { epoch: 1, handover });
        let back = |epoch, completed: &[&str]| Command::HandedBack {
            epoch,
            completed: completed.iter().map(|c| c.to_string()).collect(),
            unfinished: vec![],
        };
        // no handover lent anything to this claim: nothing is completed
        s.apply(3, &back(1, &["next"]));
        assert!(!s.is_completed("next"));
        s.apply(4, &Command::Claim { node: 2 });
        s.apply(5, &back(4, &["a1", "next"]));
        assert!(s.is_completed("a1"));
        assert!(!s.is_completed("next"), "an id the handover did not lend");
    }

    /// Issue 32, part 2: what was started and not completed may have run; the record of it
    /// is older versions' `Completed` entry with a field they ignore.
    #[test]
    fn started_activations_may_have_run_until_completed() {
        let mut s = Replicated::default();
        s.apply(1, &Command::Claim { node: 1 });
        let cmd = |ids: &[&str], started: &[&str]| Command::Completed {
            epoch: 1,
            ids: ids.iter().map(|i| i.to_string()).collect(),
            started: started.iter().map(|i| i.to_string()).collect(),
            started_in: BTreeMap::new(),
        };
        s.apply(2, &cmd(&[], &["a", "b"]));
        assert!(s.may_have_run("a") && s.may_have_run("b"));
        s.apply(3, &cmd(&["a"], &[]));
        assert!(!s.may_have_run("a") && s.may_have_run("b") && !s.may_have_run("c"));
        assert_eq!(s.started.len(), 1, "completed ones are forgotten");
        // the wire form an older member reads: `started` is a field it ignores
        let old: Command =
            serde_json::from_str(r#"{"Completed":{"epoch":1,"ids":["x"]}}"#).unwrap();
        assert_eq!(old, cmd(&["x"], &[]));
        assert!(!serde_json::to_string(&cmd(&["x"], &[]))
            .unwrap()
            .contains("started"));
    }

    /// Issue 32, part 3: which busy containers an activation that may have run was sent to,
    /// and since when; a completion clears it.
    #[test]
    fn the_containers_an_activation_may_have_run_in_are_known_until_it_completes() {
        let mut s = Replicated::default();
        s.apply(1, &Command::Claim { node: 1 });
        let start = |id: &str, container: &str, at_ms| Command::Completed {
            epoch: 1,
            ids: vec![],
            started: vec![id.to_string()],
            started_in: [(
                id.to_string(),
                StartedIn {
                    container: container.into(),
                    at_ms,
                },
            )]
            .into(),
        };
        s.apply(2, &start("a1", "c1", 100));
        s.apply(3, &start("a2", "c1", 250));
        s.apply(4, &start("a3", "c2", 300));
        assert_eq!(
            s.running_in(),
            [("c1".into(), 250), ("c2".into(), 300)].into()
        );
        let done = Command::Completed {
            epoch: 1,
            ids: vec!["a2".into(), "a3".into()],
            started: vec![],
            started_in: BTreeMap::new(),
        };
        s.apply(5, &done);
        assert_eq!(s.running_in(), [("c1".into(), 100)].into());
        assert_eq!(s.started_in.len(), 1, "completed ones are forgotten");
        // a busy change says whether the container's `/run`s wait for their starts
        s.apply(
            6,
            &Command::Pool {
                epoch: 1,
                changes: vec![PoolChange::Upsert(Box::new(record("c3")))],
            },
        );
        let busy = |busy, journaled| Command::Pool {
            epoch: 1,
            changes: vec![PoolChange::Busy {
                id: "c3".into(),
                busy,
                at_ms: 400,
                journaled,
            }],
        };
        s.apply(7, &busy(true, true));
        assert!(s.containers["c3"].journaled);
        s.apply(8, &busy(false, true));
        assert!(!s.containers["c3"].journaled, "only while busy");
        let old: PoolChange =
            serde_json::from_str(r#"{"Busy":{"id":"c3","busy":true,"at_ms":1}}"#).unwrap();
        assert!(matches!(
            old,
            PoolChange::Busy {
                journaled: false,
                ..
            }
        ));
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
        s.apply(
            4,
            &Command::Completed {
                epoch: 1,
                ids,
                started: vec![],
                started_in: BTreeMap::new(),
            },
        );
        assert_eq!(s.completed.len(), COMPLETED_KEPT);
        assert!(!s.is_completed("0"));
        assert!(s.is_completed(&(COMPLETED_KEPT + 4).to_string()));
    }
}
