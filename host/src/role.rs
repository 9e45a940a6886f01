//! A cluster member's roles: **standby** (follow the log, touch nothing) → **takeover**
//! (claim an epoch, reconcile, re-attach) → **active** (consume behind the lease) →
//! **stepping down** (stop taking work, leave the containers to the next active host) →
//! standby again. See `docs/architecture.md` for the rules and why they are safe.

use crate::clock::now_ms;
use crate::cluster::plugin_state::ReplicatedPluginState;
use crate::cluster::status::Role;
use crate::cluster::status::Takeover;
use crate::cluster::{ClusterConfig, ClusterError, Node};
use crate::config::{ClusterSection, Config};
use crate::factory::ContainerFactory;
use crate::failover;
use crate::feed::{self, FeedHooks};
use crate::fence::FencedFactory;
use crate::lease::{self, Lease};
use crate::parts::{upkeep, Parts};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
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
    let plugin_state = ReplicatedPluginState::new(&config.plugin.name, node.shared_state());
    let parts = Parts::load(config, Some(plugin_state.clone())).await?;
    let cluster_wide = parts.factory.info().capabilities.cluster_wide;
    let plugin = crate::cluster::status::PluginReport {
        name: parts.config.plugin.name.clone(),
        sha256: parts.plugin_sha256.clone(),
        cluster_wide,
        warning: engine_reach(&parts.config.plugin.name, cluster_wide, &cluster)?,
    };
    node.report(|r| r.plugin = Some(plugin));
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
        plugin_state,
        lease: Duration::from_millis(cluster.lease_ms),
    };
    tracing::info!(id = cluster.id, "cluster member started; standing by");

    // Feeds of earlier terms finishing activations that were already running.
    let mut draining: Vec<JoinHandle<()>> = Vec::new();
    let mut failed_takeovers = 0;
    while let Some(term) = member.standby(&mut shutdown).await {
        draining.retain(|feed| !feed.is_finished());
        match member.active(term, shutdown.clone()).await {
            Ok(Ended::Shutdown(feed)) => {
                let _ = feed.await;
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
    for feed in draining {
        let _ = feed.await;
    }
    member.node.shutdown().await;
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
}

struct Member {
    node: Node,
    parts: Parts,
    plugin_state: Arc<ReplicatedPluginState>,
    lease: Duration,
}

impl Member {
    /// Holds the replicated pool and touches nothing until this member leads; its term, or
    /// `None` on shutdown.
    async fn standby(&self, shutdown: &mut watch::Receiver<bool>) -> Option<u64> {
        self.node.report(|r| r.role = Role::Standby);
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
        let lease = Lease::new(self.lease);
        let (lost_tx, mut lost_rx) = watch::channel(false);
        let watcher = lease::watch_leadership(node, term, lease.clone(), lost_tx.clone());
        let gate = lease.gate();
        let factory: Arc<dyn ContainerFactory> =
            Arc::new(FencedFactory::new(self.parts.factory.clone(), gate.clone()));

        // Takeover. The claim's commit is itself a quorum acknowledgement, so the lease is
        // held right after it.
        let takeover = async {
            let epoch = node.claim().await?;
            let claimed_at_ms = now_ms();
            let confirm_by = Instant::now() + self.lease * 4;
            while !gate.open() && Instant::now() < confirm_by {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            let pool = self.parts.pool(factory.clone(), epoch);
            let takeover = failover::take_over(
                node,
                epoch,
                &factory,
                &self.parts.config.invoker.cluster,
                &pool,
            )
            .await?;
            let takeover = Takeover {
                claimed_at_ms,
                ..takeover
            };
            Ok::<_, ClusterError>((pool, takeover))
        };
        let (pool, takeover) = match takeover.await {
            Ok(t) => t,
            Err(e) => {
                watcher.abort();
                return Err(e);
            }
        };
        self.report_takeover(&takeover, led_at);
        node.report(|r| r.role = Role::Active);

        let (progress_tx, progress_rx) = mpsc::unbounded_channel();
        let (commands_tx, commands_rx) = mpsc::unbounded_channel();
        self.plugin_state.activate(takeover.epoch, commands_tx);
        let replicator = tokio::spawn(failover::replicate(
            node.clone(),
            takeover.epoch,
            self.parts.config.plugin.name.clone(),
            pool.subscribe(),
            progress_rx,
            commands_rx,
            lost_tx.clone(),
        ));
        let upkeep = upkeep(
            pool.clone(),
            Some(node.clone()),
            self.parts.config.invoker.reconcile_interval_s,
        );
        let (stop_tx, stop_rx) = watch::channel(false);
        let state = node.shared_state();
        let hooks = FeedHooks {
            offsets: Some(node.state().offsets.clone()),
            already_done: Some(Arc::new(move |id: &str| {
                state.read().expect("state lock").is_completed(id)
            })),
            progress: Some(progress_tx),
            may_pull: Some(gate.clone()),
        };
        let runner = self.parts.runner(pool, factory.clone(), Some(gate));
        let mut feed = {
            let (config, sink) = (self.parts.feed_config(), self.parts.sink.clone());
            tokio::spawn(async move {
                if let Err(e) = feed::run_with(config, hooks, runner, sink, stop_rx).await {
                    tracing::warn!("feed stopped: {e}");
                }
            })
        };

        // Active until leadership of this term ends, the host shuts down, or the feed fails.
        let mut shutdown = shutdown;
        let (shutting_down, feed_failed) = loop {
            tokio::select! {
                _ = shutdown.changed() => if *shutdown.borrow() { break (true, false) },
                _ = lost_rx.changed() => break (false, false),
                _ = &mut feed => break (false, true),
            }
        };

        // Stepping down: take no further work; what runs finishes in the background.
        node.report(|r| r.role = Role::SteppingDown);
        let _ = stop_tx.send(true);
        node.report(|r| r.consuming = false);
        self.plugin_state.deactivate();
        upkeep.abort();
        watcher.abort();
        if shutting_down || feed_failed {
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
        let feed = tokio::spawn(async move {
            let _ = feed.await;
        });
        Ok(if shutting_down {
            Ended::Shutdown(feed)
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
        self.node.report(|r| {
            r.last_takeover = Some(takeover.clone());
            r.led_at_ms = Some(now_ms() - led_at.elapsed().as_millis() as i64);
        });
    }
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
