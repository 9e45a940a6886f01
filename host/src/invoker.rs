//! One keepwarm host doing an OpenWhisk invoker's job: load the plugin, build the pool, keep
//! prewarms up, run the feed until told to stop, then drain.
//!
//! In cluster mode ([`crate::config::ClusterSection`]) the host joins the Raft cluster and
//! runs the feed only while it leads and holds its lease; when it becomes the leader it takes
//! the pool over from the replicated state first ([`crate::failover`]).

use crate::action::{CatalogDir, Runtimes};
use crate::activation::{proxy::ProxyClient, Gate, InvokerInstanceId, Runner};
use crate::cluster::plugin_state::ReplicatedPluginState;
use crate::cluster::{ClusterConfig, Node};
use crate::config::{ClusterSection, Config, LogStore};
use crate::data_dir::DataDirLock;
use crate::factory::ContainerFactory;
use crate::feed::{self, ActivationSink, FeedConfig, FeedHooks};
use crate::plugin::{FileState, Limits, PluginRuntime, PluginSpec, WasmFactory};
use crate::pool::{Pool, PoolConfig};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// What a host loads once and reuses across leadership changes.
struct Parts {
    config: Config,
    factory: Arc<dyn ContainerFactory>,
    runtimes: Runtimes,
    store: Arc<CatalogDir>,
    sink: Arc<ActivationSink>,
}

impl Parts {
    async fn load(
        config: Config,
        plugin_state: Option<Arc<dyn crate::plugin::PluginState>>,
    ) -> anyhow::Result<Parts> {
        std::fs::create_dir_all(&config.invoker.data_dir)?;
        let cache = config
            .plugin
            .cache_dir
            .clone()
            .unwrap_or_else(|| config.invoker.data_dir.join("plugin-cache"));
        let runtime = PluginRuntime::new(Some(cache))?;
        let spec = PluginSpec {
            name: config.plugin.name.clone(),
            file: config.plugin.file.clone(),
            routes: config.plugin.routes.clone().into_iter().collect(),
            config: config.plugin.config.clone().into_iter().collect(),
            limits: Limits {
                call_timeout: Duration::from_millis(config.plugin.call_timeout_ms),
                memory_mb: config.plugin.memory_mb,
                max_instances: config.plugin.max_instances,
            },
        };
        let factory = match plugin_state {
            Some(state) => WasmFactory::load_with_state(&runtime, spec, state).await?,
            None => WasmFactory::load(&runtime, spec).await?,
        };
        factory
            .prewarm_instances(config.plugin.max_instances)
            .await?;
        if config.invoker.log_store == LogStore::Collect && !factory.info().capabilities.logs {
            anyhow::bail!(
                "[invoker] log-store = \"collect\" reads each activation's logs through the \
                 plugin, but plugin `{}` ({}) cannot read logs: set log-store = \"log-driver\"",
                config.plugin.name,
                factory.info().engine
            );
        }
        let runtimes = Runtimes::load(&config.runtimes.manifest)?;
        let store = CatalogDir::load(&config.actions.catalog)?;
        tracing::info!(actions = store.len(), plugin = %factory.name(), "invoker starting");
        let sink = Arc::new(ActivationSink::open(
            config.invoker.activation_log.as_deref(),
        )?);
        Ok(Parts {
            factory: Arc::new(factory),
            runtimes,
            store: Arc::new(store),
            sink,
            config,
        })
    }

    fn instance(&self) -> u32 {
        self.config.invoker.instance
    }

    fn pool(&self) -> Arc<Pool> {
        let c = &self.config;
        Arc::new(Pool::new(
            self.factory.clone(),
            PoolConfig {
                user_memory_mb: c.invoker.user_memory_mb,
                idle_timeout: Duration::from_secs(c.invoker.idle_timeout_s),
                cluster: c.invoker.cluster.clone(),
                name_prefix: format!("wsk{}_", self.instance()),
                stem_cells: self.runtimes.stem_cells().to_vec(),
                port: 8080,
            },
        ))
    }

    fn runner(&self, pool: Arc<Pool>, may_run: Option<Gate>) -> Arc<Runner> {
        let c = &self.config;
        Arc::new(Runner {
            store: self.store.clone(),
            runtimes: self.runtimes.clone(),
            pool,
            proxy: ProxyClient::new(c.invoker.max_response_bytes),
            instance: InvokerInstanceId::new(self.instance(), c.invoker.user_memory_mb, None),
            init_timeout: Duration::from_secs(60),
            collect_logs: c.invoker.log_store == LogStore::Collect,
            may_run,
        })
    }

    fn feed_config(&self) -> FeedConfig {
        let c = &self.config;
        FeedConfig {
            brokers: c.kafka.brokers.clone(),
            topic: format!("invoker{}", self.instance()),
            group: format!("invoker{}", self.instance()),
            fetch_wait_max_ms: c.kafka.fetch_wait_max_ms,
            linger_ms: c.kafka.linger_ms,
            max_in_flight: c.invoker.max_in_flight,
            offsets_file: c.invoker.data_dir.join("offsets.json"),
        }
    }
}

/// Keeps prewarms topped up and idle containers timed out, every second; in cluster mode
/// also puts the pool's counts (and why containers came and went) on the member's `/status`.
fn upkeep(pool: Arc<Pool>, node: Option<Node>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            pool.maintain().await;
            if let Some(node) = &node {
                if let Ok(stats) = serde_json::to_value(pool.stats()) {
                    node.report("pool", stats);
                }
            }
        }
    })
}

/// Runs the invoker until `shutdown` turns true. In-flight activations finish first.
pub async fn run(config: Config, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let _lock = DataDirLock::acquire(&config.invoker.data_dir)?;
    match config.cluster.clone() {
        Some(c) => run_cluster(config, c, shutdown).await,
        None => {
            // A single host keeps its plugin's state on disk, so a restart finds e.g. its
            // Mesos framework (and the tasks it left) again.
            std::fs::create_dir_all(&config.invoker.data_dir)?;
            let state = FileState::open(&config.invoker.data_dir.join("plugin-state.json"))?;
            let parts = Parts::load(config, Some(Arc::new(state))).await?;
            run_single(parts, shutdown).await
        }
    }
}

async fn run_single(parts: Parts, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let pool = parts.pool();
    remove_leftovers(&parts, &pool).await;
    pool.maintain().await;
    let upkeep = upkeep(pool.clone(), None);
    let runner = parts.runner(pool.clone(), None);
    let result = feed::run(parts.feed_config(), runner, parts.sink.clone(), shutdown).await;
    upkeep.abort();
    if parts.config.invoker.destroy_on_exit {
        pool.destroy_everything().await;
    }
    tracing::info!("invoker stopped");
    Ok(result?)
}

/// Destroys the containers a previous run of this single host left behind (it was killed, or
/// ran with `destroy-on-exit = false`): those with the cluster label and this invoker's name
/// prefix. A single host keeps no record of its pool across restarts, so they would only
/// hold memory (and, on Mesos, offers) forever.
async fn remove_leftovers(parts: &Parts, pool: &Pool) {
    let labels = vec![(
        "keepwarm.cluster".to_string(),
        parts.config.invoker.cluster.clone(),
    )];
    let prefix = pool.name_prefix().to_owned();
    let left = match parts.factory.list_containers(labels).await {
        Ok(list) => list,
        Err(e) => {
            tracing::warn!("cannot list containers left by a previous run: {e}");
            return;
        }
    };
    let mine: Vec<_> = left
        .into_iter()
        .filter(|c| c.name.starts_with(&prefix))
        .collect();
    if mine.is_empty() {
        return;
    }
    tracing::info!(
        count = mine.len(),
        "destroying containers left by a previous run"
    );
    let calls = mine.iter().map(|c| parts.factory.destroy(&c.id));
    for (c, r) in mine.iter().zip(futures::future::join_all(calls).await) {
        if let Err(e) = r {
            tracing::warn!(container = %c.id, "cannot destroy a leftover container: {e}");
        }
    }
}

async fn run_cluster(
    config: Config,
    cluster: ClusterSection,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let peers = cluster
        .peers
        .iter()
        .map(|(id, addr)| Ok((id.parse::<u64>()?, addr.clone())))
        .collect::<Result<_, std::num::ParseIntError>>()?;
    let node = Node::start(ClusterConfig {
        id: cluster.id,
        peers,
        secret: cluster.secret.clone(),
        data_dir: config.invoker.data_dir.join("raft"),
        heartbeat: Duration::from_millis(cluster.heartbeat_ms),
        election_timeout: (
            Duration::from_millis(cluster.election_timeout_min_ms),
            Duration::from_millis(cluster.election_timeout_max_ms),
        ),
        admin_token: cluster.admin_token.clone(),
    })
    .await?;
    let plugin_state = ReplicatedPluginState::new(&config.plugin.name, node.shared_state());
    let parts = Parts::load(config, Some(plugin_state.clone())).await?;
    let lease = Duration::from_millis(cluster.lease_ms);
    tracing::info!(id = cluster.id, "cluster member started; standing by");
    node.report("consuming", serde_json::json!(false));

    loop {
        // Standby: hold the replicated pool, touch nothing, until this host leads.
        let mut metrics = node.raft.metrics();
        while !node.is_leader() {
            tokio::select! {
                _ = shutdown.changed() => {}
                _ = metrics.changed() => {}
            }
            if *shutdown.borrow() {
                node.shutdown().await;
                return Ok(());
            }
        }
        let led_at = Instant::now();
        let pool = parts.pool();
        let takeover = match crate::failover::take_over(
            &node,
            &parts.factory,
            &parts.config.invoker.cluster,
            &pool,
        )
        .await
        {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!("takeover failed: {e}; standing by");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        tracing::info!(?takeover, "active");
        node.report("last_takeover", serde_json::to_value(&takeover)?);
        node.report(
            "led_at_ms",
            serde_json::json!(crate::failover::now_ms() - led_at.elapsed().as_millis() as i64),
        );

        // The lease: a quorum must confirm this leader at least every `lease`, or the feed
        // stops and no further activation touches a container.
        let (lost_tx, mut lost_rx) = watch::channel(false);
        let lease_state = Lease::new(lease);
        let fence = {
            let (node, lease_state, lost) = (node.clone(), lease_state.clone(), lost_tx.clone());
            tokio::spawn(async move {
                loop {
                    let asked = lease_state.now_ms();
                    if matches!(
                        tokio::time::timeout(lease, node.confirm_leadership()).await,
                        Ok(true)
                    ) {
                        lease_state.confirmed(asked);
                    }
                    let lapsed = if lease_state.ever_confirmed() {
                        !lease_state.held()
                    } else {
                        lease_state.now_ms() > 4 * lease_state.lease_ms
                    };
                    if lapsed {
                        tracing::warn!("lease lost: no quorum acknowledgement within {lease:?}");
                        let _ = lost.send(true);
                        return;
                    }
                    tokio::time::sleep(lease / 4).await;
                }
            })
        };
        let gate = {
            let lease_state = lease_state.clone();
            Gate(Arc::new(move || lease_state.held()))
        };
        let confirm_by = Instant::now() + lease * 4;
        while !gate.open() && Instant::now() < confirm_by {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }

        let (progress_tx, progress_rx) = mpsc::unbounded_channel();
        let (commands_tx, commands_rx) = mpsc::unbounded_channel();
        plugin_state.activate(takeover.epoch, commands_tx);
        let replicator = tokio::spawn(crate::failover::replicate(
            node.clone(),
            takeover.epoch,
            parts.config.plugin.name.clone(),
            pool.subscribe(),
            progress_rx,
            commands_rx,
            lost_tx.clone(),
        ));
        let upkeep = upkeep(pool.clone(), Some(node.clone()));
        let (stop_tx, stop_rx) = watch::channel(false);
        let stopper = {
            let mut shutdown = shutdown.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = shutdown.changed() => {}
                    _ = lost_rx.changed() => {}
                }
                let _ = stop_tx.send(true);
            })
        };
        let state = node.shared_state();
        let hooks = FeedHooks {
            offsets: Some(node.state().offsets.clone()),
            already_done: Some(Arc::new(move |id: &str| {
                state.read().expect("state lock").is_completed(id)
            })),
            progress: Some(progress_tx),
            may_pull: Some(gate.clone()),
        };
        let runner = parts.runner(pool.clone(), Some(gate));
        let result = feed::run_with(
            parts.feed_config(),
            hooks,
            runner,
            parts.sink.clone(),
            stop_rx,
        )
        .await;
        node.report("consuming", serde_json::json!(false));
        plugin_state.deactivate();
        for task in [fence, upkeep, stopper] {
            task.abort();
        }
        // Let the last progress reach the log before stepping down.
        let mut replicator = replicator;
        if tokio::time::timeout(Duration::from_millis(500), &mut replicator)
            .await
            .is_err()
        {
            replicator.abort();
        }
        if let Err(e) = result {
            tracing::warn!("feed stopped: {e}");
        }
        if *shutdown.borrow() {
            node.shutdown().await;
            tracing::info!("cluster member stopped");
            return Ok(());
        }
        tracing::warn!(
            "no longer active: standing by; this host's containers are left to the new active host"
        );
        // Wait for the leadership to settle elsewhere (or come back) before looping.
        tokio::time::sleep(Duration::from_millis(cluster.election_timeout_min_ms)).await;
    }
}

/// When a quorum last confirmed this leader, on a monotonic clock.
#[derive(Debug, Clone)]
struct Lease {
    clock: Instant,
    lease_ms: u64,
    /// Milliseconds on `clock` at which the last confirmed round was asked, plus one
    /// (0: never confirmed).
    confirmed_at: Arc<AtomicU64>,
}

impl Lease {
    fn new(lease: Duration) -> Lease {
        Lease {
            clock: Instant::now(),
            lease_ms: lease.as_millis() as u64,
            confirmed_at: Arc::default(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.clock.elapsed().as_millis() as u64
    }

    fn confirmed(&self, asked_ms: u64) {
        self.confirmed_at.fetch_max(asked_ms + 1, Ordering::SeqCst);
    }

    fn ever_confirmed(&self) -> bool {
        self.confirmed_at.load(Ordering::SeqCst) > 0
    }

    /// True while the last confirmation is younger than the lease. A paused process (SIGSTOP)
    /// wakes up with an old confirmation and so never runs another activation.
    fn held(&self) -> bool {
        match self.confirmed_at.load(Ordering::SeqCst) {
            0 => false,
            at => self.now_ms() < at - 1 + self.lease_ms,
        }
    }
}
