//! A cluster member's roles: **standby** (follow the log, touch nothing) → **takeover**
//! (claim an epoch, reconcile, re-attach) → **active** (consume behind the lease) →
//! **stepping down** (stop taking work, leave the containers to the next active host) →
//! standby again. See `docs/architecture.md` for the rules and why they are safe. One term
//! of office is a [`term::Term`].

mod term;

use crate::clock::now_ms;
use crate::cluster::plugin_state::ReplicatedPluginState;
use crate::cluster::status::{Role, Takeover};
use crate::cluster::{ClusterConfig, ClusterError, Node};
use crate::config::{ClusterSection, Config};
use crate::factory::ContainerFactory;
use crate::feed;
use crate::parts::Parts;
use crate::rollout;
use std::sync::Arc;
use std::time::{Duration, Instant};
use term::Term;
use tokio::sync::watch;
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
    let node = start_node(&config, &cluster).await?;
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
    report_plugins(&node, &parts, &cluster)?;
    tokio::spawn(rollout::watch(node.clone(), parts.plugins.clone()));
    report_records(&node, &parts);
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

/// Starts this member's Raft node (its listeners serve `/status` from then on).
async fn start_node(config: &Config, cluster: &ClusterSection) -> anyhow::Result<Node> {
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
    Ok(Node::start_dedicated(ClusterConfig {
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
    .await?)
}

/// What `/status` says of each plugin: its build, reach and warning.
fn report_plugins(node: &Node, parts: &Parts, cluster: &ClusterSection) -> anyhow::Result<()> {
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
            warning: engine_reach(&section.name, cluster_wide, cluster)?,
            kinds: section.kinds.clone(),
            images: section.images.clone(),
            default: section.name == parts.factory.default_engine().name,
        });
    }
    node.report(|r| {
        r.plugin = reports.iter().find(|p| p.default).cloned();
        r.plugins = reports;
    });
    Ok(())
}

/// Every member drains its own record backlog, whatever its role: `/status` shows it.
fn report_records(node: &Node, parts: &Parts) {
    if let Some(couch) = parts.sink.couchdb() {
        let (stats, node) = (couch.stats.clone(), node.clone());
        tokio::spawn(async move {
            loop {
                let report = crate::cluster::status::RecordsReport::of(&stats);
                node.report(|r| r.activation_records = Some(report));
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
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
        Ok(Term::take_over(self, term).await?.run(shutdown).await)
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
