//! What a host does when it becomes active: claim an epoch, reconcile the engine with the
//! replicated pool, re-attach idle containers, and from then on replicate every pool change,
//! offset and completion in small batches in the background.

use crate::clock::now_ms;
use crate::cluster::plugin_state::ReplicatedPluginState;
use crate::cluster::state::{Command, ContainerRecord, PoolChange, StartedIn};
use crate::cluster::status::{Takeover, TakeoverPhases};
use crate::cluster::{ClusterError, Node};
use crate::engines::{plugin_of, PLUGIN_LABEL};
use crate::factory::{CallError, Container, ContainerFactory};
use crate::feed::Progress;
use crate::pool::{Pool, PoolEvent};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

/// Reconciles the engine with the replicated pool under the committed claim `epoch` and
/// attaches; fills `pool` with the containers it keeps. Also answers the warm containers
/// busy at the failure, to be held apart (the `quarantine` module).
pub async fn take_over(
    node: &Node,
    epoch: u64,
    factory: &Arc<dyn ContainerFactory>,
    cluster: &str,
    pool: &Pool,
) -> Result<(Takeover, Vec<ToHold>), ClusterError> {
    let started = Instant::now();
    let (records, running_in) = {
        let state = node.state();
        (state.containers.clone(), state.running_in())
    };
    let labels = crate::factory::cluster_labels(cluster);
    let engine: BTreeSet<String> = match factory.list_containers(labels).await {
        Ok(list) => list.into_iter().map(|c| c.id).collect(),
        Err(e) => {
            tracing::warn!("reconcile: cannot list containers ({e}); attaching what is replicated");
            records.keys().cloned().collect()
        }
    };
    let list_ms = started.elapsed().as_millis() as u64;

    // What the old host learned of each action's run time, from every record (busy ones
    // too: their action is likely in the backlog).
    for record in records.values() {
        if let (Some(key), Some(ms)) = (&record.warm, record.held_ms) {
            pool.learn_held(key, Duration::from_millis(ms));
        }
    }
    // A planned step-down: what is busy is the old host's until it hands it back.
    let lending = node
        .state()
        .lent
        .as_ref()
        .is_some_and(|l| now_ms() < l.until_ms);
    let Plan {
        orphans,
        busy,
        held,
        unstarted,
        gone,
        mut idle,
    } = plan(&records, &engine, &running_in);
    let (lent, busy, held, unstarted) = if lending {
        let all = busy
            .into_iter()
            .chain(held.into_iter().map(|h| h.record.container.id))
            .chain(unstarted.into_iter().map(|r| r.container.id));
        (all.collect(), Vec::new(), Vec::new(), Vec::new())
    } else {
        (BTreeSet::new(), busy, held, unstarted)
    };
    let unstarted_ids: BTreeSet<String> =
        unstarted.iter().map(|r| r.container.id.clone()).collect();
    idle.extend(unstarted);
    let orphans_destroyed = orphans.len();
    let busy_destroyed = busy.len();
    let mut removed: Vec<String> = gone.into_iter().chain(busy.iter().cloned()).collect();
    let mut destroy: Vec<String> = orphans.into_iter().chain(busy).collect();

    let attaching = Instant::now();
    let attached = reattach(factory, pool, &idle).await;
    let reattach_ms = attaching.elapsed().as_millis() as u64;
    for id in &attached.failed {
        destroy.push(id.clone());
        removed.push(id.clone());
    }
    let lost = attached.failed.len();
    // Destroying does not hold up the takeover: the feed starts meanwhile.
    destroy_in_background(factory, destroy);
    let offered: Vec<&String> = unstarted_ids
        .iter()
        .filter(|id| !attached.failed.contains(id))
        .collect();
    record_takeover(node, epoch, removed, &offered).await?;
    let takeover = Takeover {
        epoch,
        claimed_at_ms: 0,
        took_ms: started.elapsed().as_millis() as u64,
        reattached: attached.count,
        warm_actions: attached.warm_actions,
        lost,
        busy_destroyed,
        quarantined: held.len(),
        unstarted: unstarted_ids.len(),
        quarantine_adopted: 0,
        quarantine_destroyed: 0,
        orphans_destroyed,
        lent,
        phases: TakeoverPhases {
            list_ms,
            reattach_ms,
            ..TakeoverPhases::default()
        },
    };
    Ok((takeover, held))
}

/// Records what the takeover changed in the pool: `removed` forgotten, `offered` (busy at
/// the failure but never sent their `/run`) idle.
async fn record_takeover(
    node: &Node,
    epoch: u64,
    removed: Vec<String>,
    offered: &[&String],
) -> Result<(), ClusterError> {
    let at_ms = now_ms();
    let offered = offered.iter().map(|id| PoolChange::Busy {
        id: (*id).clone(),
        busy: false,
        at_ms,
        journaled: false,
    });
    let changes: Vec<PoolChange> = removed
        .into_iter()
        .map(|id| PoolChange::Removed { id })
        .chain(offered)
        .collect();
    if !changes.is_empty() {
        node.propose(Command::Pool { epoch, changes }).await?;
    }
    Ok(())
}

/// Adopts containers the member that handed over is done with (`ids`, lent at takeover) into
/// `pool` as they were recorded, and records them idle. Those that cannot be attached are
/// destroyed and forgotten.
pub async fn take_back(
    node: &Node,
    epoch: u64,
    factory: &Arc<dyn ContainerFactory>,
    pool: &Pool,
    ids: &[String],
) -> Result<usize, ClusterError> {
    let records: Vec<ContainerRecord> = {
        let state = node.state();
        ids.iter()
            .filter_map(|id| state.containers.get(id).cloned())
            .collect()
    };
    let attached = reattach(factory, pool, &records).await;
    let at_ms = now_ms();
    let mut changes: Vec<PoolChange> = records
        .iter()
        .filter(|r| !attached.failed.contains(&r.container.id))
        .map(|r| PoolChange::Busy {
            id: r.container.id.clone(),
            busy: false,
            at_ms,
            journaled: false,
        })
        .collect();
    changes.extend(
        attached
            .failed
            .iter()
            .map(|id| PoolChange::Removed { id: id.clone() }),
    );
    destroy_in_background(factory, attached.failed);
    if !changes.is_empty() {
        node.propose(Command::Pool { epoch, changes }).await?;
    }
    Ok(attached.count)
}

/// Destroys and forgets containers lent to the member that handed over and never handed
/// back by its deadline: what ran in them has an unknown outcome.
pub async fn expire_lent(
    node: &Node,
    epoch: u64,
    factory: &Arc<dyn ContainerFactory>,
    ids: Vec<String>,
) -> Result<(), ClusterError> {
    if ids.is_empty() {
        return Ok(());
    }
    tracing::warn!(containers = ?ids, "the member that handed over never handed these back: destroying them");
    forget(node, epoch, factory, ids).await
}

/// Destroys `ids` (in the background) and removes them from the replicated pool.
pub async fn forget(
    node: &Node,
    epoch: u64,
    factory: &Arc<dyn ContainerFactory>,
    ids: Vec<String>,
) -> Result<(), ClusterError> {
    let changes = ids
        .iter()
        .map(|id| PoolChange::Removed { id: id.clone() })
        .collect();
    destroy_in_background(factory, ids);
    node.propose(Command::Pool { epoch, changes })
        .await
        .map(|_| ())
}

/// What re-attaching the replicated idle containers came to.
struct Reattached {
    count: usize,
    /// The actions with at least one warm container among them.
    warm_actions: BTreeSet<String>,
    /// Containers that could not be attached (gone or unhealthy): to destroy and forget.
    failed: Vec<String>,
}

/// The container of `record`, labelled with the plugin that made it (a record from an older
/// keepwarm has the plugin only in the record), so the attach goes to that plugin.
pub fn known(record: &ContainerRecord) -> Container {
    let mut container = record.container.clone();
    if plugin_of(&container).is_none() {
        container
            .labels
            .push((PLUGIN_LABEL.to_owned(), record.plugin.clone()));
    }
    container
}

/// Attaches every idle record at once and adopts into `pool` each container that answers.
async fn reattach(
    factory: &Arc<dyn ContainerFactory>,
    pool: &Pool,
    idle: &[ContainerRecord],
) -> Reattached {
    let attaches = idle.iter().map(|r| attach_and_check(factory, known(r)));
    let results = futures::future::join_all(attaches).await;
    let mut done = Reattached {
        count: 0,
        warm_actions: BTreeSet::new(),
        failed: Vec::new(),
    };
    for (record, result) in idle.iter().zip(results) {
        match result {
            Ok(container) => {
                done.count += 1;
                if let Some(w) = &record.warm {
                    done.warm_actions.insert(w.action.clone());
                }
                pool.adopt(
                    container,
                    (&record.kind, &record.image),
                    record.memory_mb,
                    record.warm.clone(),
                    1,
                );
            }
            Err(reason) => {
                tracing::warn!(container = %record.container.id, "not re-attached: {reason}");
                done.failed.push(record.container.id.clone());
            }
        }
    }
    done
}

/// Destroys `ids` without waiting for the engine.
fn destroy_in_background(factory: &Arc<dyn ContainerFactory>, ids: Vec<String>) {
    for id in ids {
        let factory = factory.clone();
        tokio::spawn(async move {
            if let Err(e) = factory.destroy(&id).await {
                tracing::debug!(container = %id, "reconcile destroy: {e}");
            }
        });
    }
}

/// How a takeover sorts what the engine has against what was replicated.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// In the engine with this cluster's label, unknown to the replicated pool: destroy.
    pub orphans: Vec<String>,
    /// Busy without an action when the old host died (its `/init` outcome unknown): destroy.
    pub busy: Vec<String>,
    /// Warm and busy when the old host died, an activation that may have run in it: held
    /// apart until it shows the activation ended (the `quarantine` module).
    pub held: Vec<ToHold>,
    /// Warm and busy when the old host died, but no activation was started in it since it
    /// became busy (its `/run`s wait for their starts to be committed): it never received
    /// `/run`, so it is offered again at once, as an idle one is.
    pub unstarted: Vec<ContainerRecord>,
    /// Replicated but no longer in the engine: forget.
    pub gone: Vec<String>,
    /// Replicated, idle and still in the engine: attach.
    pub idle: Vec<ContainerRecord>,
}

/// A warm container to hold apart, and since when (epoch millis) its output counts: the
/// latest start of an activation that may have run in it, else (a start from an older
/// member) a moment before it became busy.
#[derive(Debug, Clone, PartialEq)]
pub struct ToHold {
    pub record: ContainerRecord,
    pub since_ms: i64,
}

/// Sorts the replicated `records` against the ids the `engine` lists; `running_in`: the
/// containers an activation that may have run was sent to, with its start
/// (`Replicated::running_in`).
pub fn plan(
    records: &BTreeMap<String, ContainerRecord>,
    engine: &BTreeSet<String>,
    running_in: &BTreeMap<String, i64>,
) -> Plan {
    let mut plan = Plan {
        orphans: engine
            .iter()
            .filter(|id| !records.contains_key(*id))
            .cloned()
            .collect(),
        ..Plan::default()
    };
    for (id, record) in records {
        if !engine.contains(id) {
            plan.gone.push(id.clone());
        } else if record.busy && record.warm.is_some() {
            match running_in.get(id) {
                None if record.journaled => plan.unstarted.push(record.clone()),
                started => plan.held.push(ToHold {
                    record: record.clone(),
                    since_ms: started
                        .copied()
                        .unwrap_or(record.last_use_ms.saturating_sub(5)),
                }),
            }
        } else if record.busy {
            plan.busy.push(id.clone());
        } else {
            plan.idle.push(record.clone());
        }
    }
    plan
}

/// How long a takeover's attach waits for a lapsed lease to come back.
const FENCED_ATTACH_WAIT: Duration = Duration::from_secs(5);

/// Attaches `known` through `factory` and checks its proxy answers; a lapse of the lease
/// only pauses it.
pub async fn attach_and_check(
    factory: &Arc<dyn ContainerFactory>,
    known: Container,
) -> Result<Container, String> {
    // A lapse of the lease only pauses the takeover: the container is still there, so the
    // attach is asked again while the lease may come back in this term (a lapse is not a
    // loss; the term's end is, and then nothing is attached).
    let until = Instant::now() + FENCED_ATTACH_WAIT;
    let container = loop {
        match factory.attach(known.clone()).await {
            Err(CallError::Fenced { .. }) if Instant::now() < until => {
                tokio::time::sleep(Duration::from_millis(10)).await
            }
            other => break other.map_err(|e| e.to_string())?,
        }
    };
    let probe = tokio::net::TcpStream::connect(&container.address);
    match tokio::time::timeout(Duration::from_millis(500), probe).await {
        Ok(Ok(_)) => Ok(container),
        Ok(Err(e)) => Err(format!(
            "proxy at {} refuses connections: {e}",
            container.address
        )),
        Err(_) => Err(format!("proxy at {} does not answer", container.address)),
    }
}

/// The replicated change for a pool event; a new container is recorded with the plugin its
/// label names (else `plugin`, the default one).
fn change_of(plugin: &str, event: PoolEvent) -> PoolChange {
    match event {
        PoolEvent::Created {
            container,
            kind,
            image,
            memory_mb,
        } => PoolChange::Upsert(Box::new(ContainerRecord {
            plugin: plugin_of(&container).unwrap_or(plugin).to_owned(),
            container,
            kind,
            image,
            memory_mb,
            warm: None,
            busy: false,
            last_use_ms: now_ms(),
            held_ms: None,
            journaled: false,
        })),
        PoolEvent::Initialized { id, key } => PoolChange::Warm { id, warm: key },
        PoolEvent::BecameBusy { id, journaled } => PoolChange::Busy {
            id,
            busy: true,
            at_ms: now_ms(),
            journaled,
        },
        PoolEvent::BecameIdle { id } => PoolChange::Busy {
            id,
            busy: false,
            at_ms: now_ms(),
            journaled: false,
        },
        PoolEvent::Destroyed { id } => PoolChange::Removed { id },
    }
}

/// The feed progress gathered for one round of proposals.
#[derive(Debug, Default)]
struct Batch {
    offsets: BTreeMap<i32, i64>,
    completed: Vec<String>,
    started: BTreeMap<String, StartedIn>,
}

/// Adds one feed progress to the batch; "consuming" goes to `/status` at once, whichever
/// way it was received (it may arrive in a batch behind plugin-state writes).
fn note_progress(node: &Node, progress: Progress, batch: &mut Batch) {
    match progress {
        Progress::Offset(part, next) => {
            batch.offsets.insert(part, next);
        }
        Progress::Completed(id) => batch.completed.push(id),
        Progress::Started {
            activation,
            container,
            at_ms,
        } => {
            batch
                .started
                .insert(activation, StartedIn { container, at_ms });
        }
        Progress::Consuming => {
            node.report(|r| {
                let now = now_ms();
                if let (false, Some(led), Some(takeover)) =
                    (r.consuming, r.led_at_ms, &r.last_takeover)
                {
                    let took = std::time::Duration::from_millis(now.saturating_sub(led) as u64);
                    crate::metrics::global().takeover(
                        took,
                        &[
                            ("adopted", takeover.reattached),
                            ("lost", takeover.lost),
                            ("busy_destroyed", takeover.busy_destroyed),
                            ("orphans_destroyed", takeover.orphans_destroyed),
                        ],
                    );
                    let entry = crate::cluster::status::Transition {
                        at_ms: now,
                        epoch: takeover.epoch,
                        what: "took-over".into(),
                        took_ms: took.as_millis() as u64,
                        kept: takeover.reattached,
                        lost: takeover.lost,
                    };
                    r.record(entry);
                }
                r.consuming = true;
                r.consuming_since_ms = Some(now);
            });
        }
    }
}

/// What the replicator batches.
#[derive(Debug)]
pub struct Inputs {
    pub events: broadcast::Receiver<PoolEvent>,
    pub progress: mpsc::UnboundedReceiver<Progress>,
    /// Plugin `state` writes are waiting in `plugin_states`.
    pub plugin_writes: mpsc::Receiver<()>,
    pub plugin_states: Vec<Arc<ReplicatedPluginState>>,
    /// Answered once everything queued before the request is committed.
    pub flushes: mpsc::UnboundedReceiver<oneshot::Sender<()>>,
    /// The pool the events come from: read whole when events were lost.
    pub pool: Arc<Pool>,
}

/// Proposes pool changes, offsets and completions in batches until leadership is lost
/// (then it signals `lost`). Nothing on the activation path waits for it.
pub async fn replicate(
    node: Node,
    epoch: u64,
    plugin: String,
    inputs: Inputs,
    lost: watch::Sender<bool>,
) {
    let Inputs {
        mut events,
        mut progress,
        mut plugin_writes,
        plugin_states,
        mut flushes,
        pool,
    } = inputs;
    let mut writes_open = true;
    let mut resync_next = false;
    loop {
        let mut resync = std::mem::take(&mut resync_next);
        let mut flushed = Vec::new();
        let mut changes = Vec::new();
        let mut batch = Batch::default();
        let mut commands = Vec::new();
        tokio::select! {
            w = plugin_writes.recv(), if writes_open => if w.is_none() {
                writes_open = false;
            },
            e = events.recv() => match e {
                Ok(e) => changes.push(change_of(&plugin, e)),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!("replication fell behind by {n} pool events: replicating the whole pool again");
                    resync = true;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            p = progress.recv() => match p {
                Some(p) => note_progress(&node, p, &mut batch),
                None => return,
            },
            f = flushes.recv() => match f {
                Some(f) => flushed.push(f),
                None => return,
            },
        }
        // a small batch: whatever else is already waiting
        loop {
            match events.try_recv() {
                Ok(e) => changes.push(change_of(&plugin, e)),
                Err(broadcast::error::TryRecvError::Lagged(n)) => {
                    tracing::warn!("replication fell behind by {n} pool events: replicating the whole pool again");
                    resync = true;
                }
                Err(_) => break,
            }
        }
        if resync {
            // after every event still queued, so the pool as it is now wins
            changes.extend(whole_pool(&plugin, &pool, &node.state().containers));
        }
        while let Ok(p) = progress.try_recv() {
            note_progress(&node, p, &mut batch);
        }
        for state in &plugin_states {
            commands.extend(state.take());
        }
        if !changes.is_empty() {
            commands.push(Command::Pool { epoch, changes });
        }
        if !batch.completed.is_empty() || !batch.started.is_empty() {
            commands.push(Command::Completed {
                epoch,
                ids: batch.completed,
                started: batch.started.keys().cloned().collect(),
                started_in: batch.started,
            });
        }
        if !batch.offsets.is_empty() {
            commands.push(Command::Offsets {
                epoch,
                offsets: batch.offsets,
            });
        }
        for command in commands {
            if !propose_until_committed(&node, command, &mut resync_next).await {
                let _ = lost.send(true);
                return;
            }
        }
        // everything queued before a flush was asked for is committed now
        for f in flushed {
            let _ = f.send(());
        }
    }
}

/// Proposes `command`, asking again (up to 4 times, 10 ms doubling) after a failure that is
/// not the end of this leadership; false only when the leadership ended. A command still
/// refused after that is dropped with a warning and the next round replicates the pool
/// whole (a dropped pool change must not leave the replicated pool wrong); the replicator
/// never stalls on it (its consuming report and every later batch wait behind it).
async fn propose_until_committed(node: &Node, command: Command, dropped: &mut bool) -> bool {
    let mut pause = Duration::from_millis(10);
    for attempt in 1..=4 {
        match node.propose(command.clone()).await {
            Ok(_) => return true,
            Err(e @ (ClusterError::Stale { .. } | ClusterError::NotLeader { .. })) => {
                tracing::warn!("replication stopped: {e}");
                return false;
            }
            Err(e) if attempt == 4 => {
                tracing::warn!("replication: {e}; dropped, the pool is replicated whole next");
                *dropped = true;
            }
            Err(e) => {
                tracing::warn!(retry_in = ?pause, "replication: {e}");
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
        }
    }
    true
}

/// The changes that make the replicated pool `replicated` what `pool` holds now.
fn whole_pool(
    plugin: &str,
    pool: &Pool,
    replicated: &BTreeMap<String, ContainerRecord>,
) -> Vec<PoolChange> {
    let held = pool.view();
    let ids: BTreeSet<&str> = held.iter().map(|h| h.container.id.as_str()).collect();
    // an idle record the pool does not hold was destroyed (its event lost); a busy one is
    // another host's until it hands it back (a step-down lends what still runs there)
    let gone: Vec<PoolChange> = replicated
        .iter()
        .filter(|(id, r)| !r.busy && !ids.contains(id.as_str()))
        .map(|(id, _)| PoolChange::Removed { id: id.clone() })
        .collect();
    let now = now_ms();
    let upserts = held.into_iter().map(|h| {
        let known = replicated.get(&h.container.id);
        PoolChange::Upsert(Box::new(ContainerRecord {
            plugin: plugin_of(&h.container).unwrap_or(plugin).to_owned(),
            kind: h.kind,
            image: h.image,
            memory_mb: h.memory_mb,
            warm: h.warm,
            busy: h.busy,
            last_use_ms: known.map_or(now, |k| k.last_use_ms),
            held_ms: known.and_then(|k| k.held_ms),
            journaled: h.busy && known.is_some_and(|k| k.busy && k.journaled),
            container: h.container,
        }))
    });
    gone.into_iter().chain(upserts).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, busy: bool) -> ContainerRecord {
        ContainerRecord {
            busy,
            ..ContainerRecord::sample("fake", id)
        }
    }

    #[test]
    fn a_takeover_sorts_orphans_busy_gone_and_idle() {
        let records: BTreeMap<String, ContainerRecord> = [
            record("idle", false),
            record("busy", true),
            record("gone-idle", false),
            record("gone-busy", true),
            ContainerRecord {
                warm: Some(crate::pool::WarmKey {
                    namespace: "guest".into(),
                    action: "guest/echo".into(),
                    revision: "1".into(),
                }),
                ..record("busy-warm", true)
            },
        ]
        .into_iter()
        .map(|r| (r.container.id.clone(), r))
        .collect();
        let engine: BTreeSet<String> = ["idle", "busy", "busy-warm", "orphan"]
            .into_iter()
            .map(String::from)
            .collect();
        let p = plan(&records, &engine, &BTreeMap::new());
        assert_eq!(p.orphans, vec!["orphan".to_string()]);
        assert_eq!(p.busy, vec!["busy".to_string()]);
        assert_eq!(p.held.len(), 1);
        assert_eq!(p.held[0].record.container.id, "busy-warm");
        assert!(p.unstarted.is_empty());
        assert_eq!(
            p.gone,
            vec!["gone-busy".to_string(), "gone-idle".to_string()]
        );
        assert_eq!(
            p.idle
                .iter()
                .map(|r| r.container.id.as_str())
                .collect::<Vec<_>>(),
            vec!["idle"]
        );
    }

    /// Issue 32, part 3: a warm container busy at the failure is held apart only if an
    /// activation that may have run was sent to it; one whose `/run` waited for a start that
    /// was never committed never received it, and is offered at once. Without the record of
    /// waiting (an older member, or an action that runs again) it is held, as before.
    #[test]
    fn a_busy_container_no_activation_started_in_is_offered_at_once() {
        let warm = |id: &str, journaled| ContainerRecord {
            warm: Some(crate::pool::WarmKey {
                namespace: "guest".into(),
                action: "guest/echo".into(),
                revision: "1".into(),
            }),
            journaled,
            last_use_ms: 1_000,
            ..record(id, true)
        };
        let records: BTreeMap<String, ContainerRecord> = [
            warm("ran", true),
            warm("never-ran", true),
            warm("unknown", false),
        ]
        .into_iter()
        .map(|r| (r.container.id.clone(), r))
        .collect();
        let engine: BTreeSet<String> = records.keys().cloned().collect();
        let running_in = [("ran".to_string(), 1_020)].into();
        let p = plan(&records, &engine, &running_in);
        let held: Vec<(&str, i64)> = p
            .held
            .iter()
            .map(|h| (h.record.container.id.as_str(), h.since_ms))
            .collect();
        assert_eq!(held, vec![("ran", 1_020), ("unknown", 995)]);
        assert_eq!(p.unstarted.len(), 1);
        assert_eq!(p.unstarted[0].container.id, "never-ran");
    }

    /// Issue 32, defect 5: lost pool events left the replicated pool wrong (a busy
    /// container recorded idle, a destroyed one still there); a lag now replicates the pool
    /// whole, and this is what it proposes.
    #[tokio::test]
    async fn a_resync_makes_the_replicated_pool_what_the_pool_holds() {
        use crate::pool::{PoolConfig, Want, WarmKey};
        let engine = Arc::new(crate::testing::FakeEngine::default());
        let pool = Pool::new(engine, PoolConfig::sample(1));
        let key = WarmKey {
            namespace: "guest".into(),
            action: "guest/a".into(),
            revision: "1".into(),
        };
        let want = Want {
            key: key.clone(),
            kind: "shell:1".into(),
            image: "img".into(),
            memory_mb: 128,
            concurrency: 1,
            blackbox: false,
            journaled: false,
        };
        let busy = pool.acquire(&want).await.unwrap();
        let id = busy.container.id.clone();
        // what the replicated pool says after a lost `BecameBusy` and a lost `Destroyed`
        let mut stale_idle = record(&id, false);
        stale_idle.last_use_ms = 7;
        let replicated: BTreeMap<String, ContainerRecord> = [
            (id.clone(), stale_idle),
            ("gone".into(), record("gone", false)),
        ]
        .into_iter()
        .collect();
        let changes = whole_pool("fake", &pool, &replicated);
        assert_eq!(changes.len(), 2, "{changes:?}");
        assert_eq!(changes[0], PoolChange::Removed { id: "gone".into() });
        let PoolChange::Upsert(r) = &changes[1] else {
            panic!("{changes:?}")
        };
        assert!(r.busy, "the busy container is replicated busy");
        assert_eq!(
            (r.container.id.as_str(), r.image.as_str()),
            (id.as_str(), "img")
        );
        assert_eq!((r.warm.as_ref(), r.last_use_ms), (Some(&key), 7));
        // applied, the replicated state holds what the pool holds
        let mut state = crate::cluster::state::Replicated {
            containers: replicated,
            ..Default::default()
        };
        state.apply(2, &Command::Pool { epoch: 0, changes });
        assert_eq!(state.containers.len(), 1);
        assert!(state.containers[&id].busy);
    }

    /// Issue 32, defect 11: a lease lapse during a takeover refused every re-attach and
    /// counted the whole pool lost; a lapse now only pauses it.
    #[tokio::test]
    async fn a_lapse_during_the_takeover_pauses_the_re_attach_instead_of_losing_the_pool() {
        use crate::fence::{FencedFactory, Gate};
        use crate::pool::PoolConfig;
        use std::sync::atomic::{AtomicBool, Ordering};
        // a proxy that accepts connections, as a live container's does
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            loop {
                let _ = listener.accept().await;
            }
        });
        let held = Arc::new(AtomicBool::new(false));
        let gate = {
            let held = held.clone();
            Gate(Arc::new(move || held.load(Ordering::SeqCst)))
        };
        let engine = Arc::new(crate::testing::FakeEngine::default());
        let factory: Arc<dyn ContainerFactory> = Arc::new(FencedFactory::new(engine, gate));
        let pool = Pool::new(factory.clone(), PoolConfig::sample(2));
        let idle: Vec<ContainerRecord> = (0..4)
            .map(|i| {
                let mut r = record(&format!("c{i}"), false);
                r.container.address = address.clone();
                r
            })
            .collect();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(150)).await;
            held.store(true, Ordering::SeqCst);
        });
        let done = reattach(&factory, &pool, &idle).await;
        assert_eq!((done.count, done.failed.len()), (4, 0));
        assert_eq!(pool.containers().len(), 4);
    }

    #[test]
    fn an_empty_engine_forgets_everything_and_destroys_nothing() {
        let records: BTreeMap<String, ContainerRecord> = [("a".to_string(), record("a", false))]
            .into_iter()
            .collect();
        let p = plan(&records, &BTreeSet::new(), &BTreeMap::new());
        assert_eq!(p.gone, vec!["a".to_string()]);
        assert!(p.orphans.is_empty() && p.busy.is_empty() && p.idle.is_empty());
    }
}
