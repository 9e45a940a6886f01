//! What a member says about itself: one typed struct, served as JSON on `/status`, turned into
//! gauges on `/metrics` and printed by `keepwarm status`. The Raft part is read from openraft's
//! metrics and the replicated state when asked; the host part ([`HostReport`]) is set by the
//! roles and the pool's upkeep.

use super::state::Replicated;
use super::types::Raft;
use crate::pool::PoolStats;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Registers a gauge family `name` with one sample per `(label value, value)`.
fn labelled(
    registry: &mut Registry,
    name: &str,
    help: &str,
    label: &str,
    values: Vec<(String, i64)>,
) {
    let family = Family::<Vec<(String, String)>, Gauge>::default();
    for (key, value) in values {
        family
            .get_or_create(&vec![(label.to_owned(), key)])
            .set(value);
    }
    registry.register(name, help, family);
}

/// Log entries a standby may hold unapplied and still be ready (entries are applied within
/// milliseconds of arriving; more means it is working through a backlog).
const CAUGHT_UP: u64 = 64;

/// What a takeover did, for status and the demo.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Takeover {
    pub epoch: u64,
    /// Wall-clock millis when the claim was committed.
    pub claimed_at_ms: i64,
    /// Claim to pool ready (before the feed starts).
    pub took_ms: u64,
    pub reattached: usize,
    /// The actions (`namespace/[package/]name`) with at least one re-attached warm container: their
    /// next activation should run warm.
    pub warm_actions: BTreeSet<String>,
    /// Replicated idle containers that could not be attached (gone or unhealthy).
    pub lost: usize,
    /// Containers busy without an action (being initialized) when the previous host died:
    /// destroyed, not reused.
    pub busy_destroyed: usize,
    /// Warm containers busy when the previous host died: held apart until their activation
    /// ends, then adopted (the `quarantine` module).
    #[serde(default)]
    pub quarantined: usize,
    /// Warm containers busy when the previous host died that never received `/run` (no
    /// activation was started in them): offered again at once.
    #[serde(default)]
    pub unstarted: usize,
    /// Of those, adopted so far (their activation ended) and destroyed (it did not in time).
    #[serde(default)]
    pub quarantine_adopted: usize,
    #[serde(default)]
    pub quarantine_destroyed: usize,
    /// Labelled containers the replicated state did not know: destroyed.
    pub orphans_destroyed: usize,
    /// Containers busy on the member that handed over (a planned step-down): left to it
    /// until it hands them back.
    #[serde(default)]
    pub lent: BTreeSet<String>,
    /// Where the time from leading to a ready pool went.
    #[serde(default)]
    pub phases: TakeoverPhases,
}

/// The parts of a takeover, in milliseconds, from the moment this member led.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TakeoverPhases {
    /// Following the plugin builds the cluster last switched to.
    pub follow_ms: u64,
    /// Committing the claim of a new epoch.
    pub claim_ms: u64,
    /// Until the lease was held.
    pub lease_ms: u64,
    /// Listing the engine's containers.
    pub list_ms: u64,
    /// Attaching the idle ones.
    pub reattach_ms: u64,
}

/// A member's role, as `role.rs` moves through them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    #[default]
    Standby,
    Takeover,
    Active,
    SteppingDown,
    HandingOver,
}

/// What the host (not Raft) reports.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HostReport {
    pub role: Role,
    /// True while this member consumes activations.
    pub consuming: bool,
    /// Wall-clock millis when it began consuming.
    pub consuming_since_ms: Option<i64>,
    /// Wall-clock millis when it became leader for its current (or last) active term.
    pub led_at_ms: Option<i64>,
    pub last_takeover: Option<Takeover>,
    /// The active host's pool, refreshed every second.
    pub pool: Option<PoolStats>,
    /// Acknowledgements sent again after a broker error, since the process started.
    pub publish_retries: u64,
    /// With `[activations] store = "couchdb"`: this host's records and its backlog.
    pub activation_records: Option<RecordsReport>,
    /// The default plugin (the one serving what no other plugin names), as in `plugins`.
    pub plugin: Option<PluginReport>,
    /// Every plugin this host loaded, in declared order.
    pub plugins: Vec<PluginReport>,
    /// The active host's pool by action and plugin, refreshed every second.
    pub pool_by_action: Vec<crate::pool::ActionPool>,
    /// Activations this host finished: rate and latency over the last 10 s.
    pub activity: crate::metrics::Activity,
    /// This host's takeovers and step-downs, oldest first (the last [`TIMELINE`]).
    pub timeline: Vec<Transition>,
}

/// How many transitions a host keeps on its timeline.
pub const TIMELINE: usize = 20;

/// One change of this host's role, with what it measured.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Transition {
    /// Wall-clock millis.
    pub at_ms: i64,
    pub epoch: u64,
    /// `took-over`, or `stepped-down` with why.
    pub what: String,
    /// A takeover: this host's election to consuming. A step-down: until another member led
    /// (0 when it did not wait for one).
    pub took_ms: u64,
    /// A takeover: containers re-attached. A step-down: containers left to the next host.
    pub kept: usize,
    /// A takeover: replicated idle containers that could not be attached.
    pub lost: usize,
}

impl HostReport {
    /// Adds `t` to the timeline, dropping the oldest beyond [`TIMELINE`].
    pub fn record(&mut self, t: Transition) {
        self.timeline.push(t);
        let over = self.timeline.len().saturating_sub(TIMELINE);
        self.timeline.drain(..over);
    }
}

/// Which plugin file a host runs (its sha256 is what `[plugin] sha256` pins).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PluginReport {
    pub name: String,
    /// What the running build's `describe` says.
    pub version: String,
    /// The running build's sha256.
    pub sha256: String,
    /// A new build loaded and waiting for the cluster to switch to it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub staged: Option<String>,
    /// The last swap of builds, done or refused (and why).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_swap: Option<crate::plugin::Swap>,
    /// Whether the plugin's containers are reachable from every member (it declares
    /// `cluster-wide`).
    pub cluster_wide: bool,
    /// Set with `local-engine = true`: what a machine failure costs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    /// The kinds and blackbox images of the actions it serves, and whether it serves what no
    /// other plugin names.
    pub kinds: Vec<String>,
    pub images: Vec<String>,
    pub default: bool,
}

/// The CouchDB activation store of one host, since the process started (`waiting`: on disk now).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RecordsReport {
    pub stored: u64,
    pub waiting: u64,
    pub dropped: u64,
    pub upload_failures: u64,
}

impl RecordsReport {
    pub fn of(stats: &crate::activation_store::StoreStats) -> RecordsReport {
        use std::sync::atomic::Ordering::Relaxed;
        RecordsReport {
            stored: stats.stored.load(Relaxed),
            waiting: stats.waiting.load(Relaxed),
            dropped: stats.dropped.load(Relaxed),
            upload_failures: stats.upload_failures.load(Relaxed),
        }
    }
}

/// `GET /status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MemberStatus {
    pub id: u64,
    /// openraft's server state: `Leader`, `Follower`, `Candidate`, `Learner`, `Shutdown`.
    pub state: String,
    pub leader: Option<u64>,
    pub term: u64,
    pub last_applied: Option<u64>,
    /// The last log index this member holds (applied or not).
    pub last_log: Option<u64>,
    /// False while a member whose storage was lost catches up (it does not vote).
    pub voting: bool,
    /// The current claim: its epoch and the member that made it.
    pub epoch: u64,
    /// 0 before the first claim.
    pub active: u64,
    /// Replicated containers, and how many of them are idle.
    pub containers: usize,
    pub idle_containers: usize,
    /// Replicated Kafka offsets: partition → next offset to consume.
    pub offsets: BTreeMap<i32, i64>,
    pub members: Vec<u64>,
    /// On the leader: member → the last log index it has matched.
    pub replication: Option<BTreeMap<u64, Option<u64>>>,
    /// On the leader: member → milliseconds since its matched index last moved while it was
    /// behind (0 when it holds the whole log). A member that stopped answering grows here.
    pub stalled_ms: Option<BTreeMap<u64, u64>>,
    #[serde(flatten)]
    pub host: HostReport,
}

/// Remembers when each member's matched index last moved, for [`MemberStatus::stalled_ms`].
#[derive(Debug, Default)]
pub struct Stalls(std::sync::Mutex<BTreeMap<u64, (Option<u64>, std::time::Instant)>>);

impl Stalls {
    /// Sets `s.stalled_ms` from its replication map and what was seen before.
    pub fn observe(&self, s: &mut MemberStatus) {
        let Some(replication) = &s.replication else {
            return;
        };
        let now = std::time::Instant::now();
        let mut seen = self.0.lock().expect("stalls lock");
        let stalled = replication
            .iter()
            .map(|(id, matched)| {
                let entry = seen.entry(*id).or_insert((*matched, now));
                if entry.0 != *matched || matched.unwrap_or(0) >= s.last_log.unwrap_or(0) {
                    *entry = (*matched, now);
                }
                (*id, now.duration_since(entry.1).as_millis() as u64)
            })
            .collect();
        s.stalled_ms = Some(stalled);
    }
}

impl MemberStatus {
    /// What a member says now: the Raft part from openraft's metrics and the replicated
    /// `state`, the host part as the roles reported it.
    pub fn of(raft: &Raft, state: &Replicated, host: HostReport, voting: bool) -> MemberStatus {
        let m = raft.metrics().borrow().clone();
        MemberStatus {
            id: m.id,
            state: format!("{:?}", m.state),
            leader: m.current_leader,
            term: m.current_term,
            last_applied: m.last_applied.map(|l| l.index),
            last_log: m.last_log_index,
            voting,
            epoch: state.claim.epoch,
            active: state.claim.node,
            containers: state.containers.len(),
            idle_containers: state.containers.values().filter(|c| !c.busy).count(),
            offsets: state.offsets.clone(),
            members: m.membership_config.membership().voter_ids().collect(),
            replication: m
                .replication
                .as_ref()
                .map(|r| r.iter().map(|(id, l)| (*id, l.map(|l| l.index))).collect()),
            stalled_ms: None,
            host,
        }
    }

    /// Whether this member can do its job (`/readyz`): the active host while it consumes; a
    /// standby once its plugins are loaded, it votes (a member whose storage was lost catches
    /// up first), it knows a leader and it has applied what it was sent.
    pub fn readiness(&self) -> Result<String, String> {
        if self.host.plugins.is_empty() {
            return Err("loading its plugins".into());
        }
        match self.host.role {
            Role::Active if self.host.consuming => {
                return Ok(format!("active, consuming (epoch {})", self.epoch))
            }
            Role::Active | Role::Takeover => return Err("taking the active role over".into()),
            Role::SteppingDown | Role::HandingOver => {
                return Err("handing the active role over".into())
            }
            Role::Standby => {}
        }
        if !self.voting {
            return Err("catching up after losing its storage (not voting yet)".into());
        }
        let Some(leader) = self.leader else {
            return Err("no leader known".into());
        };
        match (self.last_applied, self.last_log) {
            (applied, Some(log)) if applied.unwrap_or(0) + CAUGHT_UP < log => Err(format!(
                "behind: applied {} of {log} log entries",
                applied.unwrap_or(0)
            )),
            _ => Ok(format!("standby of leader {leader}, caught up")),
        }
    }

    /// The status as Prometheus text exposition (gauges read when asked, encoded by
    /// `prometheus-client` as the process's own metrics are).
    /// The member's single-valued gauges: name, help, value.
    fn gauges(&self) -> Vec<(&'static str, &'static str, i64)> {
        let flag = |b: bool| i64::from(b);
        let takeover = self.host.last_takeover.as_ref();
        let count = |n: usize| n as i64;
        vec![
            (
                "keepwarm_leader",
                "1 when this member is the Raft leader",
                flag(self.state == "Leader"),
            ),
            (
                "keepwarm_consuming",
                "1 while this member consumes activations",
                flag(self.host.consuming),
            ),
            ("keepwarm_term", "Raft term", self.term as i64),
            (
                "keepwarm_epoch",
                "epoch of the current claim",
                self.epoch as i64,
            ),
            (
                "keepwarm_last_applied",
                "last applied log index",
                self.last_applied.unwrap_or(0) as i64,
            ),
            (
                "keepwarm_pool_containers",
                "replicated containers",
                count(self.containers),
            ),
            (
                "keepwarm_pool_idle_containers",
                "replicated idle containers",
                count(self.idle_containers),
            ),
            (
                "keepwarm_takeover_ms",
                "last takeover: claim to pool ready",
                takeover.map_or(0, |t| t.took_ms as i64),
            ),
            (
                "keepwarm_takeover_reattached",
                "last takeover: containers re-attached",
                takeover.map_or(0, |t| count(t.reattached)),
            ),
            (
                "keepwarm_takeover_lost",
                "last takeover: idle containers lost",
                takeover.map_or(0, |t| count(t.lost)),
            ),
            (
                "keepwarm_voting",
                "0 while this member catches up after lost storage (it does not vote)",
                flag(self.voting),
            ),
        ]
    }

    /// The member's labelled gauges: records by state, churn by cause, lag by member.
    fn register_labelled(&self, registry: &mut Registry) {
        if let Some(records) = &self.host.activation_records {
            labelled(
                registry,
                "keepwarm_activation_records",
                "activation records for CouchDB: stored, waiting on disk, dropped over the backlog bound",
                "state",
                [("stored", records.stored), ("waiting", records.waiting), ("dropped", records.dropped)]
                    .map(|(state, n)| (state.to_owned(), n as i64))
                    .into(),
            );
            let failures = Gauge::<i64>::default();
            failures.set(records.upload_failures as i64);
            registry.register(
                "keepwarm_activation_record_upload_failures",
                "_bulk_docs requests CouchDB did not answer",
                failures,
            );
        }
        if let Some(pool) = &self.host.pool {
            labelled(
                registry,
                "keepwarm_pool_churn",
                "containers created or destroyed by this active host, by cause",
                "cause",
                pool.churn
                    .by_cause()
                    .into_iter()
                    .map(|(cause, n)| (cause.to_string(), n as i64))
                    .collect(),
            );
        }
        if let Some(replication) = &self.replication {
            let last = self.last_applied.unwrap_or(0);
            labelled(
                registry,
                "keepwarm_replication_lag",
                "entries the leader has not yet replicated to a member",
                "member",
                replication
                    .iter()
                    .map(|(id, matched)| {
                        (
                            id.to_string(),
                            last.saturating_sub(matched.unwrap_or(0)) as i64,
                        )
                    })
                    .collect(),
            );
        }
    }

    pub fn prometheus(&self) -> String {
        let mut registry = Registry::default();
        for (name, help, value) in self.gauges() {
            let gauge = Gauge::<i64>::default();
            gauge.set(value);
            registry.register(name, help, gauge);
        }
        self.register_labelled(&mut registry);
        let mut out = String::new();
        prometheus_client::encoding::text::encode_registry(&mut out, &registry)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_whose_matched_index_stops_short_of_the_log_stalls() {
        let stalls = Stalls::default();
        let mut s = MemberStatus {
            last_log: Some(10),
            replication: Some(BTreeMap::from([(2, Some(10)), (3, Some(5))])),
            ..Default::default()
        };
        stalls.observe(&mut s);
        assert_eq!(s.stalled_ms, Some(BTreeMap::from([(2, 0), (3, 0)])));
        std::thread::sleep(std::time::Duration::from_millis(30));
        s.last_log = Some(12);
        s.replication = Some(BTreeMap::from([(2, Some(12)), (3, Some(5))]));
        stalls.observe(&mut s);
        let stalled = s.stalled_ms.unwrap();
        assert_eq!(stalled[&2], 0);
        assert!(stalled[&3] >= 30, "{stalled:?}");
    }

    #[test]
    fn the_json_keeps_the_field_names_operators_and_tests_read() {
        let mut s = MemberStatus {
            id: 2,
            state: "Leader".into(),
            term: 7,
            replication: Some(BTreeMap::from([(1, Some(40)), (3, None)])),
            ..Default::default()
        };
        s.host.role = Role::SteppingDown;
        s.host.consuming = true;
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["role"], "stepping-down");
        assert_eq!(v["consuming"], true);
        assert_eq!(v["replication"]["1"], 40);
        assert!(v["last_takeover"].is_null());
        let back: MemberStatus = serde_json::from_value(v).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn metrics_show_lag_per_member_and_flags_as_numbers() {
        let s = MemberStatus {
            state: "Leader".into(),
            last_applied: Some(50),
            replication: Some(BTreeMap::from([(1, Some(40)), (3, None)])),
            ..Default::default()
        };
        let text = s.prometheus();
        assert!(text.contains("keepwarm_leader 1\n"), "{text}");
        assert!(text.contains("keepwarm_consuming 0\n"), "{text}");
        assert!(
            text.contains("keepwarm_replication_lag{member=\"1\"} 10\n"),
            "{text}"
        );
        assert!(
            text.contains("keepwarm_replication_lag{member=\"3\"} 50\n"),
            "{text}"
        );
    }

    #[test]
    fn readiness_says_why_a_member_cannot_do_its_job() {
        let mut s = MemberStatus {
            voting: true,
            leader: Some(1),
            last_applied: Some(500),
            last_log: Some(500),
            ..Default::default()
        };
        assert_eq!(s.readiness().unwrap_err(), "loading its plugins");
        s.host.plugins.push(PluginReport::default());
        assert!(s.readiness().unwrap().contains("caught up"));
        // a standby working through a backlog
        s.last_applied = Some(100);
        assert!(s
            .readiness()
            .unwrap_err()
            .contains("behind: applied 100 of 500"));
        s.last_applied = Some(480);
        assert!(s.readiness().is_ok());
        // one that lost its storage and is catching up does not vote yet
        s.voting = false;
        assert!(s.readiness().unwrap_err().contains("not voting"));
        s.voting = true;
        s.leader = None;
        assert_eq!(s.readiness().unwrap_err(), "no leader known");
        // the active host is ready while it consumes
        s.host.role = Role::Active;
        assert!(s.readiness().is_err());
        s.host.consuming = true;
        assert!(s.readiness().unwrap().starts_with("active, consuming"));
        s.host.role = Role::SteppingDown;
        assert!(s.readiness().is_err());
    }
}
