//! A cluster member's roles: **standby** (follow the log, touch nothing) → **takeover**
//! (claim an epoch, reconcile, re-attach) → **active** (consume behind the lease) →
//! **stepping down** (stop taking work, leave the containers to the next active host) →
//! standby again. See `docs/architecture.md` for the rules and why they are safe.

use crate::activation::runner::Journal;
use crate::clock::now_ms;
use crate::cluster::plugin_state::ReplicatedPluginState;
use crate::cluster::state::Command;
use crate::cluster::status::Role;
use crate::cluster::status::{Takeover, TakeoverPhases, Transition};
use crate::cluster::{ClusterConfig, ClusterError, Node};
use crate::config::{ClusterSection, Config};
use crate::factory::ContainerFactory;
use crate::failover;
use crate::feed::{self, FeedHooks};
use crate::feed::{InFlight, Progress};
use crate::fence::FencedFactory;
use crate::lease::{self, Lease};
use crate::parts::{upkeep, Parts};
use crate::quarantine;
use crate::rollout;
use crate::step_down::{self, StepDownError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

/// Refuses a plugin whose containers only this machine reaches, unless the operator said
/// `local-engine = true`; then returns the warning `/status` carries.
fn engine_reach(
    plugin: &str,
    cluster_wide: bool,
    cluster: &ClusterSection,
) -> anyhow::Result<Option<String>> {
    if cluster_wide {
        return Ok(None);
    }
    if !cluster.local_engine {
        anyhow::bail!(
            "plugin `{plugin}` is not cluster-wide: its containers are reachable only from this \
             machine, so a standby on another machine could not re-attach them. Put the engine \
             where every member reaches it (e.g. Docker over TLS, `publish-ip` an address the \
             members route to), or set [cluster] local-engine = true to run anyway (a machine \
             failure then loses this host's containers)"
        );
    }
    let warning = format!(
        "local-engine: plugin `{plugin}` is not cluster-wide; a failover re-attaches its \
         containers only on this machine, and a machine failure loses them"
    );
    tracing::warn!("{warning}");
    Ok(Some(warning))
}

/// Runs a cluster member until `shutdown` turns true.
pub async fn run_cluster(
    config: Config,
    cluster: ClusterSection,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let peers = cluster
        .peers
        .iter()
        .map(|(id, addr)| Ok((id.parse::<u64>()?, addr.clone())))
        .collect::<Result<_, std::num::ParseIntError>>()?;
    if cluster.insecure {
        tracing::warn!(
            "[cluster] insecure = true: members talk plain HTTP; anyone who can read this \
             network sees the secret and can then append to the cluster's log"
        );
    }
    let node = Node::start_dedicated(ClusterConfig {
        id: cluster.id,
        peers,
        transport: cluster.transport()?,
        status_address: cluster.status_address(),
        status_token: cluster.status_token.clone(),
        data_dir: config.invoker.data_dir.join("raft"),
        heartbeat: Duration::from_millis(cluster.heartbeat_ms),
        election_timeout: (
            Duration::from_millis(cluster.election_timeout_min_ms),
            Duration::from_millis(cluster.election_timeout_max_ms),
        ),
        admin_token: cluster.admin_token.clone(),
    })
    .await?;
    // `/status` is served from now on: say what this host is before the plugin loads.
    node.report(|r| {
        r.consuming = false;
        r.role = Role::Standby;
    });
    let plugin_states: Vec<Arc<ReplicatedPluginState>> = config
        .plugins
        .iter()
        .map(|p| ReplicatedPluginState::new(&p.name, node.shared_state()))
        .collect();
    let state_of = |name: &str| {
        let state = plugin_states.iter().find(|s| s.plugin() == name);
        state.expect("one per plugin").clone() as Arc<dyn crate::plugin::PluginState>
    };
    let parts = Parts::load(config, Some(&state_of)).await?;
    let mut reports = Vec::new();
    for (section, plugin) in parts.config.plugins.iter().zip(&parts.plugins) {
        let cluster_wide = plugin.info().capabilities.cluster_wide;
        reports.push(crate::cluster::status::PluginReport {
            name: section.name.clone(),
            version: plugin.versions().version,
            sha256: plugin.sha256(),
            staged: None,
            last_swap: None,
            cluster_wide,
            warning: engine_reach(&section.name, cluster_wide, &cluster)?,
            kinds: section.kinds.clone(),
            images: section.images.clone(),
            default: section.name == parts.factory.default_engine().name,
        });
    }
    node.report(|r| {
        r.plugin = reports.iter().find(|p| p.default).cloned();
        r.plugins = reports;
    });
    tokio::spawn(rollout::watch(node.clone(), parts.plugins.clone()));
    if let Some(couch) = parts.sink.couchdb() {
        // every member drains its own record backlog, whatever its role
        let (stats, node) = (couch.stats.clone(), node.clone());
        tokio::spawn(async move {
            loop {
                let report = crate::cluster::status::RecordsReport::of(&stats);
                node.report(|r| r.activation_records = Some(report));
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
    let member = Member {
        node,
        parts,
        plugin_states,
        lease: Duration::from_millis(cluster.lease_ms),
        election_timeout_max: Duration::from_millis(cluster.election_timeout_max_ms),
        clients: feed::PreparedClients::default(),
    };
    tracing::info!(id = cluster.id, "cluster member started; standing by");
    crate::service::ready(&format!(
        "cluster member {} joined, plugins loaded; standing by",
        cluster.id
    ));

    // Feeds of earlier terms finishing activations that were already running.
    let mut draining: Vec<JoinHandle<()>> = Vec::new();
    let mut failed_takeovers = 0;
    while let Some(term) = member.standby(&mut shutdown).await {
        draining.retain(|feed| !feed.is_finished());
        match member.active(term, shutdown.clone()).await {
            Ok(Ended::Shutdown(feed)) => {
                draining.push(feed);
                break;
            }
            Ok(Ended::SteppedDown(feed)) => {
                failed_takeovers = 0;
                tracing::warn!(
                    "no longer active: standing by; this host's containers are left to the new \
                     active host"
                );
                draining.push(feed);
            }
            Ok(Ended::CannotServe) => {
                failed_takeovers = 0;
                member.hand_over(&cluster).await;
            }
            Ok(Ended::HandOver(feed)) => {
                failed_takeovers = 0;
                draining.push(feed);
                member.hand_over(&cluster).await;
            }
            Err(e) => {
                failed_takeovers += 1;
                tracing::warn!(attempt = failed_takeovers, "takeover failed: {e}");
                if failed_takeovers >= 3 {
                    failed_takeovers = 0;
                    member.hand_over(&cluster).await;
                } else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    // A shutdown ends within the drain timeout, whoever is left to hand over to: what still
    // runs then (an activation, a handback to a member that is stopping too) is given up
    // and is the next active host's.
    let drain = Duration::from_secs(member.parts.config.invoker.drain_timeout_s);
    let feeds = futures::future::join_all(draining.iter_mut());
    if tokio::time::timeout(drain, feeds).await.is_err() {
        tracing::warn!(
            ?drain,
            "stopping: the drain timeout passed with work left; leaving it to the next active host"
        );
        draining.iter().for_each(JoinHandle::abort);
    }
    if tokio::time::timeout(Duration::from_secs(5), member.node.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("stopping: Raft did not shut down within 5 s; exiting anyway");
    }
    tracing::info!("cluster member stopped");
    Ok(())
}

/// How an active term ended; the feed may still be finishing activations that were running.
enum Ended {
    Shutdown(JoinHandle<()>),
    SteppedDown(JoinHandle<()>),
    /// The feed failed (Kafka unreachable, offsets unwritable) while this host still leads:
    /// nothing is running any more, and another member should lead.
    CannotServe,
    /// A step-down stopped the feed but no member took over: hand over the slow way.
    HandOver(JoinHandle<()>),
}

/// Why an active term ends.
enum Why {
    Shutdown,
    /// Leadership of the term ended.
    Lost,
    FeedFailed,
    /// A planned step-down handed leadership over (`true`) or stopped the feed without
    /// another member taking over (`false`).
    SteppedDown(bool),
}

impl Why {
    /// For the timeline.
    fn name(&self) -> &'static str {
        match self {
            Why::Shutdown => "shutting down",
            Why::Lost => "leadership lost",
            Why::FeedFailed => "feed failed",
            Why::SteppedDown(true) => "asked, handed over",
            Why::SteppedDown(false) => "asked, no member took over",
        }
    }
}

struct Member {
    node: Node,
    parts: Parts,
    /// One per plugin.
    plugin_states: Vec<Arc<ReplicatedPluginState>>,
    lease: Duration,
    election_timeout_max: Duration,
    /// Kafka clients a standby connects ahead for its next takeover.
    clients: feed::PreparedClients,
}

impl Member {
    /// Holds the replicated pool and touches nothing until this member leads; its term, or
    /// `None` on shutdown.
    async fn standby(&self, shutdown: &mut watch::Receiver<bool>) -> Option<u64> {
        self.node.report(|r| r.role = Role::Standby);
        self.clients.prepare(&self.parts.feed_config());
        let mut metrics = self.node.raft.metrics();
        loop {
            if *shutdown.borrow() {
                return None;
            }
            {
                let m = metrics.borrow_and_update();
                if m.current_leader == Some(self.node.id) {
                    return Some(m.current_term);
                }
            }
            tokio::select! {
                _ = shutdown.changed() => {}
                _ = metrics.changed() => {}
            }
        }
    }

    /// One term as the active host: takeover, then the feed behind the lease, until the
    /// leadership of `term` ends or the host shuts down.
    async fn active(
        &self,
        term: u64,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Ended, ClusterError> {
        let node = &self.node;
        node.report(|r| r.role = Role::Takeover);
        let led_at = Instant::now();
        // The feed's Kafka clients: the set this member connected as a standby, or a new one
        // connected while the claim and the re-attach run.
        let clients = {
            let (prepared, config) = (self.clients.clone(), self.parts.feed_config());
            tokio::spawn(async move { prepared.take(&config).await })
        };
        let lease = Lease::new(self.lease);
        let (lost_tx, mut lost_rx) = watch::channel(false);
        let watcher = lease::watch_leadership(node, term, lease.clone(), lost_tx.clone());
        let gate = lease.gate();
        let factory: Arc<dyn ContainerFactory> =
            Arc::new(FencedFactory::new(self.parts.factory.clone(), gate.clone()));

        // The builds the cluster last switched to, if this member has staged them.
        for plugin in &self.parts.plugins {
            rollout::follow(node, plugin).await;
        }
        let follow_ms = led_at.elapsed().as_millis() as u64;
        // Takeover. The claim's commit is itself a quorum acknowledgement, so the lease is
        // held right after it.
        let takeover = async {
            let claiming = Instant::now();
            let epoch = node.claim().await?;
            let claim_ms = claiming.elapsed().as_millis() as u64;
            let claimed_at_ms = now_ms();
            let confirm_by = Instant::now() + self.lease * 4;
            while !gate.open() && Instant::now() < confirm_by {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            let lease_ms = claiming.elapsed().as_millis() as u64 - claim_ms;
            let pool = self.parts.pool(factory.clone(), epoch);
            let (takeover, held) = failover::take_over(
                node,
                epoch,
                &factory,
                &self.parts.config.invoker.cluster,
                &pool,
            )
            .await?;
            let takeover = Takeover {
                claimed_at_ms,
                phases: TakeoverPhases {
                    follow_ms,
                    claim_ms,
                    lease_ms,
                    ..takeover.phases
                },
                ..takeover
            };
            Ok::<_, ClusterError>((pool, takeover, held))
        };
        let (pool, takeover, held) = match takeover.await {
            Ok(t) => t,
            Err(e) => {
                watcher.abort();
                return Err(e);
            }
        };
        self.report_takeover(&takeover, led_at);
        node.report(|r| r.role = Role::Active);

        let (progress_tx, progress_rx) = mpsc::unbounded_channel();
        let (writes_tx, writes_rx) = mpsc::channel(1);
        let (flush_tx, flush_rx) = mpsc::unbounded_channel();
        for state in &self.plugin_states {
            state.activate(takeover.epoch, writes_tx.clone());
        }
        drop(writes_tx);
        let replicator = tokio::spawn(failover::replicate(
            node.clone(),
            takeover.epoch,
            self.parts.factory.default_engine().name.clone(),
            failover::Inputs {
                events: pool.subscribe(),
                progress: progress_rx,
                plugin_writes: writes_rx,
                plugin_states: self.plugin_states.clone(),
                flushes: flush_rx,
                pool: pool.clone(),
            },
            lost_tx.clone(),
        ));
        let upkeep = upkeep(
            pool.clone(),
            Some(node.clone()),
            self.parts.config.invoker.reconcile_interval_s,
        );
        let (stop_tx, stop_rx) = watch::channel(false);
        if !held.is_empty() {
            // in the pool as busy before the feed starts: its backlog may wait for them
            let (held, not_attached) =
                quarantine::hold(node, takeover.epoch, &factory, &pool, held).await;
            // the status counts each container as it is adopted or destroyed
            let report = {
                let node = node.clone();
                move |released: quarantine::Released| {
                    node.report(|r| {
                        if let Some(t) = r.last_takeover.as_mut() {
                            t.quarantine_adopted = released.adopted;
                            t.quarantine_destroyed = released.destroyed + not_attached;
                        }
                    })
                }
            };
            let release = quarantine::release(
                factory.clone(),
                pool.clone(),
                held,
                quarantine::DEADLINE,
                stop_rx.clone(),
                report,
            );
            tokio::spawn(async move {
                let mut released = release.await;
                released.destroyed += not_attached;
                tracing::info!(?released, "quarantine over");
                crate::metrics::global().quarantine(released.adopted, released.destroyed);
            });
        }
        let state = node.shared_state();
        let lent_state = node.shared_state();
        let in_flight = Arc::new(InFlight::default());
        let journal = journal(progress_tx.clone(), flush_tx.clone());
        let started = node.shared_state();
        let hooks = FeedHooks {
            offsets: Some(node.state().offsets.clone()),
            already_done: Some(Arc::new(move |id: &str| {
                state.read().expect("state lock").is_completed(id)
            })),
            may_have_run: Some(Arc::new(move |id: &str| {
                started.read().expect("state lock").may_have_run(id)
            })),
            progress: Some(progress_tx),
            may_pull: Some(gate.clone()),
            in_flight: Some(in_flight.clone()),
            lent_until: Some(Arc::new(move |id: &str| {
                lent_state.read().expect("state lock").lent_until(id)
            })),
            // the role reports consuming itself (`Progress::Consuming`)
            on_consuming: None,
        };
        // Containers the member that handed over still uses, until it hands them back.
        let mut lent = takeover.lent.clone();
        let lent_until = node.state().lent.as_ref().map_or(0, |l| l.until_ms);
        let lease_gate = gate.clone();
        let runner = self
            .parts
            .runner(pool.clone(), factory.clone(), Some(gate), Some(journal));
        let mut feed = {
            let (config, sink) = (self.parts.feed_config(), self.parts.sink.clone());
            tokio::spawn(async move {
                let clients = match clients.await {
                    Ok(Ok(clients)) => Some(clients),
                    Ok(Err(e)) => {
                        tracing::warn!("kafka clients: {e}; connecting again");
                        None
                    }
                    Err(e) => {
                        tracing::warn!("kafka clients: {e}; connecting again");
                        None
                    }
                };
                if let Err(e) = feed::run_with(config, hooks, clients, runner, sink, stop_rx).await
                {
                    tracing::warn!("feed stopped: {e}");
                }
            })
        };

        // Active until leadership of this term ends, the host shuts down, the feed fails, or
        // the operator asks this host to step down.
        let term = step_down::Term {
            node,
            epoch: takeover.epoch,
            led_at,
            election_timeout_max: self.election_timeout_max,
            drain_timeout: self.parts.feed_config().drain_timeout,
            in_flight: &in_flight,
            stop_feed: &stop_tx,
            flush: &flush_tx,
        };
        let mut step_downs = node.requests.step_down.lock().await;
        let mut handbacks = node.requests.handback.lock().await;
        let mut reloads = node.requests.reload.lock().await;
        let mut shutdown = shutdown;
        // how long a handover took until another member led (0: none was waited for)
        let mut handover_ms = 0;
        let mut handed_back = false;
        let why = loop {
            let lent_expires = tokio::time::Instant::now()
                + Duration::from_millis(u64::try_from(lent_until - now_ms()).unwrap_or(0));
            tokio::select! {
                _ = shutdown.changed() => if *shutdown.borrow() { break Why::Shutdown },
                _ = lost_rx.changed() => break Why::Lost,
                _ = &mut feed => break Why::FeedFailed,
                Some(asked) = step_downs.recv() => {
                    if asked.is_closed() {
                        continue;
                    }
                    let asked_at = Instant::now();
                    match step_down::step_down(&term).await {
                        Ok(done) => {
                            handover_ms = asked_at.elapsed().as_millis() as u64;
                            tracing::info!(?done, "stepped down: another member leads");
                            let _ = asked.send(Ok(done));
                            break Why::SteppedDown(true);
                        }
                        Err(e) => {
                            tracing::warn!("step-down: {e}");
                            let stopped = matches!(e, StepDownError::Stopped(_));
                            let _ = asked.send(Err(e.to_string()));
                            if stopped {
                                break Why::SteppedDown(false);
                            }
                        }
                    }
                }
                Some(asked) = reloads.recv() => {
                    if asked.reply.is_closed() {
                        continue;
                    }
                    let Some(plugin) = rollout::named(&self.parts.plugins, asked.plugin.as_deref()).cloned() else {
                        let names: Vec<&str> = self.parts.plugins.iter().map(|p| p.name()).collect();
                        let asked_for = asked.plugin.unwrap_or_default();
                        let _ = asked.reply.send(Err(format!("this cluster runs no plugin `{asked_for}` (it runs {})", names.join(", "))));
                        continue;
                    };
                    let (node, engines, pool, epoch) = (node.clone(), self.parts.factory.clone(), pool.clone(), takeover.epoch);
                    let lease = lease_gate.clone();
                    tokio::spawn(async move {
                        let _ = asked.reply.send(rollout::cluster_wide(&node, &plugin, &engines, &pool, (epoch, &lease)).await);
                    });
                }
                Some(back) = handbacks.recv() => {
                    // only the member the replicated handover names, once
                    let lender = node.state().lent.as_ref().map(|l| l.from);
                    if lender != Some(back.from) || handed_back {
                        tracing::warn!(from = back.from, ?lender, handed_back, "a handback no handover of this term awaits: ignored");
                        continue;
                    }
                    handed_back = true;
                    let ids: Vec<String> = back.containers.iter().filter(|id| lent.remove(*id)).cloned().collect();
                    let (node, factory, pool, epoch) = (node.clone(), factory.clone(), pool.clone(), takeover.epoch);
                    tokio::spawn(async move {
                        let handed_back = Command::HandedBack { epoch, completed: back.completed, unfinished: back.unfinished };
                        if let Err(e) = node.propose(handed_back).await {
                            tracing::warn!("recording the handback: {e}");
                        }
                        match failover::take_back(&node, epoch, &factory, &pool, &ids).await {
                            Ok(n) => tracing::info!(from = back.from, taken_back = n, "containers handed back after a step-down"),
                            Err(e) => tracing::warn!("taking back containers: {e}"),
                        }
                    });
                }
                _ = tokio::time::sleep_until(lent_expires), if !lent.is_empty() => {
                    let ids: Vec<String> = std::mem::take(&mut lent).into_iter().collect();
                    if let Err(e) = failover::expire_lent(node, takeover.epoch, &factory, ids).await {
                        tracing::warn!("forgetting containers never handed back: {e}");
                    }
                }
            }
        };
        drop((step_downs, handbacks, reloads));
        // SIGTERM on the active host: hand over first when another member can take it.
        let stopping_at = Instant::now();
        let why = match why {
            Why::Shutdown => match step_down::step_down(&term).await {
                Ok(done) => {
                    handover_ms = stopping_at.elapsed().as_millis() as u64;
                    tracing::info!(?done, "stopping: handed the active role over first");
                    Why::Shutdown
                }
                Err(e) => {
                    tracing::warn!("stopping without a handover ({e}): a standby takes over when this host is gone");
                    Why::Shutdown
                }
            },
            other => other,
        };
        let handed_over = in_flight.has_stopped_pulling() && !node.is_leader();
        let (shutting_down, feed_failed) = match why {
            Why::Shutdown => (true, false),
            Why::Lost | Why::SteppedDown(true) => (false, false),
            Why::FeedFailed => (false, true),
            Why::SteppedDown(false) => (false, false),
        };
        let slow_hand_over = matches!(why, Why::SteppedDown(false));

        // Stepping down: take no further work; what runs finishes in the background.
        let kept = pool.stats();
        node.report(|r| {
            r.role = Role::SteppingDown;
            r.record(Transition {
                at_ms: now_ms(),
                epoch: takeover.epoch,
                what: format!("stepped-down ({})", why.name()),
                took_ms: handover_ms,
                kept: kept.prewarm + kept.warm_idle + kept.busy,
                lost: 0,
            });
        });
        let _ = stop_tx.send(true);
        node.report(|r| r.consuming = false);
        self.plugin_states.iter().for_each(|s| s.deactivate());
        upkeep.abort();
        if !shutting_down || handed_over {
            watcher.abort();
        }
        // else still the leader while it drains (no one took over): the lease keeps being
        // renewed, so what finishes here is still acknowledged (`feed::dispatch`); the watcher
        // ends with Raft.
        if (shutting_down && !handed_over) || feed_failed || slow_hand_over {
            // Still the leader: let the last progress reach the log.
            let mut replicator = replicator;
            if tokio::time::timeout(Duration::from_millis(500), &mut replicator)
                .await
                .is_err()
            {
                replicator.abort();
            }
        } else {
            // A new term: anything still proposed under this epoch would be rejected.
            replicator.abort();
        }
        if feed_failed {
            return Ok(Ended::CannotServe);
        }
        // A handover leaves what runs here to finish here; once it has, hand it back.
        let node = node.clone();
        let feed = tokio::spawn(async move {
            let _ = feed.await;
            if let Some(running) = in_flight.handed_over() {
                step_down::hand_back(node, running, in_flight, pool).await;
            }
        });
        Ok(if shutting_down {
            Ended::Shutdown(feed)
        } else if slow_hand_over {
            Ended::HandOver(feed)
        } else {
            Ended::SteppedDown(feed)
        })
    }

    /// Hands leadership to another member (openraft 0.9 has no leadership transfer): stop
    /// heartbeats and elections here, so a follower's election timer fires and it takes a
    /// new term; wait (bounded) until this member follows, then heartbeat again and, after
    /// one more election timeout, campaign again.
    async fn hand_over(&self, cluster: &ClusterSection) {
        let timeout = Duration::from_millis(cluster.election_timeout_max_ms);
        let config = self.node.raft.runtime_config();
        tracing::warn!("this host cannot serve as the active host: handing leadership over");
        self.node.report(|r| r.role = Role::HandingOver);
        config.elect(false);
        config.heartbeat(false);
        // Followers elect within about two of their election timeouts once the heartbeats
        // stop; theirs may be longer than this member's, so wait generously.
        let deadline = Instant::now() + (timeout * 10).max(Duration::from_secs(20));
        while self.node.is_leader() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        config.heartbeat(true);
        tokio::time::sleep(timeout).await;
        config.elect(true);
        tracing::info!(leader = ?self.node.leader(), "leadership handed over");
    }

    fn report_takeover(&self, takeover: &Takeover, led_at: Instant) {
        tracing::info!(?takeover, "active");
        crate::service::status(&format!("active (epoch {}), consuming", takeover.epoch));
        self.node.report(|r| {
            r.last_takeover = Some(takeover.clone());
            r.led_at_ms = Some(now_ms() - led_at.elapsed().as_millis() as i64);
        });
    }
}

/// Records an activation's start in the replicated state and answers once it is committed
/// (false once this term's replicator has stopped): what the runner calls before `/run`.
fn journal(
    progress: mpsc::UnboundedSender<Progress>,
    flushes: mpsc::UnboundedSender<oneshot::Sender<()>>,
) -> Journal {
    Journal(Arc::new(
        move |activation: String, container: String, wait: bool| {
            let (progress, flushes) = (progress.clone(), flushes.clone());
            Box::pin(async move {
                let at_ms = now_ms();
                let started = Progress::Started {
                    activation,
                    container,
                    at_ms,
                };
                if progress.send(started).is_err() {
                    return false;
                }
                if !wait {
                    return true;
                }
                let (done, committed) = oneshot::channel();
                flushes.send(done).is_ok() && committed.await.is_ok()
            })
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(local_engine: bool) -> ClusterSection {
        let toml = format!(
            "id = 1\npeers = {{ 1 = \"127.0.0.1:7000\" }}\nlocal-engine = {local_engine}\n"
        );
        toml::from_str(&toml).unwrap()
    }

    #[test]
    fn a_plugin_only_this_machine_reaches_needs_local_engine_and_is_then_flagged() {
        assert_eq!(engine_reach("docker", true, &cluster(false)).unwrap(), None);
        let refused = engine_reach("docker", false, &cluster(false))
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("not cluster-wide") && refused.contains("local-engine = true"),
            "{refused}"
        );
        let warning = engine_reach("docker", false, &cluster(true))
            .unwrap()
            .unwrap();
        assert!(
            warning.contains("a machine failure loses them"),
            "{warning}"
        );
    }
}
