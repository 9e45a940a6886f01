//! One keepwarm host doing an OpenWhisk invoker's job: load the plugin, build the pool, keep
//! prewarms up, run the feed until told to stop, then drain.
//!
//! In cluster mode ([`crate::config::ClusterSection`]) the host joins the Raft cluster and
//! runs the feed only while it leads and holds its lease; when it becomes the leader it takes
//! the pool over from the replicated state first ([`crate::failover`]).

use crate::action::couchdb::CouchActions;
use crate::action::{ActionStore, CatalogDir, ParameterEncryption, Runtimes};
use crate::activation::{proxy::ProxyClient, Gate, InvokerInstanceId, Runner};
use crate::cluster::Node;
use crate::config::StoreKind;
use crate::config::{Config, LogStore};
use crate::data_dir::DataDirLock;
use crate::factory::ContainerFactory;
use crate::feed::{self, ActivationSink, FeedConfig};
use crate::plugin::{FileState, Limits, PluginRuntime, PluginSpec, StateLimits, WasmFactory};
use crate::pool::{Pool, PoolConfig};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// What a host loads once and reuses across leadership changes.
pub(crate) struct Parts {
    pub(crate) config: Config,
    pub(crate) factory: Arc<dyn ContainerFactory>,
    runtimes: Runtimes,
    store: Arc<dyn ActionStore>,
    encryption: ParameterEncryption,
    pub(crate) sink: Arc<ActivationSink>,
    /// The loaded plugin file's sha256.
    pub(crate) plugin_sha256: String,
}

impl Parts {
    pub(crate) async fn load(
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
                state: StateLimits {
                    max_keys: config.plugin.state_max_keys,
                    max_bytes: config.plugin.state_max_kb << 10,
                },
            },
            allowed_addresses: config.plugin.allowed_addresses.clone(),
            sha256: config.plugin.sha256.clone(),
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
        let store: Arc<dyn ActionStore> = match config.actions.store {
            StoreKind::Catalog => {
                let dir = config
                    .actions
                    .catalog
                    .as_deref()
                    .expect("checked by Config::load");
                let catalog = CatalogDir::load(dir)?;
                tracing::info!(actions = catalog.len(), catalog = %dir.display(), plugin = %factory.name(), "invoker starting");
                Arc::new(catalog)
            }
            StoreKind::Couchdb => {
                let couch = config.couchdb.as_ref().expect("checked by Config::load");
                let db =
                    crate::couchdb::CouchDb::open(couch, "whisks").map_err(anyhow::Error::msg)?;
                tracing::info!(database = db.name(), url = %couch.url, plugin = %factory.name(), "invoker starting: actions from CouchDB");
                Arc::new(CouchActions::new(db))
            }
        };
        let encryption = ParameterEncryption::new(
            config.actions.aes_128_key.as_deref(),
            config.actions.aes_256_key.as_deref(),
        )
        .map_err(anyhow::Error::msg)?;
        let rotation = crate::feed::Rotation {
            max_bytes: config.invoker.activation_log_max_mb << 20,
            keep: config.invoker.activation_log_keep,
        };
        let mut sink = ActivationSink::open(config.invoker.activation_log.as_deref(), rotation)?;
        if config.activations.store == StoreKind::Couchdb {
            let couch = config.couchdb.as_ref().expect("checked by Config::load");
            let db =
                crate::couchdb::CouchDb::open(couch, "activations").map_err(anyhow::Error::msg)?;
            tracing::info!(database = db.name(), "activation records go to CouchDB");
            let records = crate::activation_store::CouchRecords::start(
                db,
                &config.invoker.data_dir.join("activation-backlog"),
                config.activations.backlog_mb << 20,
            )?;
            sink = sink.with_couchdb(records);
        }
        let sink = Arc::new(sink);
        let plugin_sha256 = factory.sha256().to_owned();
        tracing::info!(plugin = %config.plugin.name, sha256 = %plugin_sha256, "plugin loaded");
        Ok(Parts {
            plugin_sha256,
            factory: Arc::new(factory),
            runtimes,
            store,
            encryption,
            sink,
            config,
        })
    }

    fn instance(&self) -> u32 {
        self.config.invoker.instance
    }

    /// A pool on `factory` (in cluster mode: the lease-fenced one) for `epoch`.
    pub(crate) fn pool(&self, factory: Arc<dyn ContainerFactory>, epoch: u64) -> Arc<Pool> {
        let c = &self.config;
        Arc::new(Pool::new(
            factory,
            PoolConfig {
                user_memory_mb: c.invoker.user_memory_mb,
                idle_timeout: Duration::from_secs(c.invoker.idle_timeout_s),
                cluster: c.invoker.cluster.clone(),
                name_prefix: format!("wsk{}_", self.instance()),
                epoch,
                stem_cells: self.runtimes.stem_cells().to_vec(),
                port: 8080,
            },
        ))
    }

    /// The runner; with a gate (cluster mode) its proxy client refuses `/init` and `/run`
    /// while the gate is closed.
    pub(crate) fn runner(&self, pool: Arc<Pool>, may_run: Option<Gate>) -> Arc<Runner> {
        let c = &self.config;
        let proxy = ProxyClient::new(c.invoker.max_response_bytes);
        let proxy = match &may_run {
            Some(gate) => proxy.fenced(gate.clone()),
            None => proxy,
        };
        Arc::new(Runner {
            store: self.store.clone(),
            runtimes: self.runtimes.clone(),
            limits: c.limits.system(),
            encryption: self.encryption.clone(),
            pool,
            proxy,
            instance: InvokerInstanceId::new(self.instance(), c.invoker.user_memory_mb, None),
            init_timeout: Duration::from_secs(60),
            collect_logs: c.invoker.log_store == LogStore::Collect,
            may_run,
        })
    }

    pub(crate) fn feed_config(&self) -> FeedConfig {
        let c = &self.config;
        FeedConfig {
            brokers: c.kafka.brokers.clone(),
            topic: format!("invoker{}", self.instance()),
            group: format!("invoker{}", self.instance()),
            fetch_wait_max_ms: c.kafka.fetch_wait_max_ms,
            linger_ms: c.kafka.linger_ms,
            max_in_flight: c.invoker.max_in_flight,
            drain_timeout: Duration::from_secs(c.invoker.drain_timeout_s),
            offsets_file: c.invoker.data_dir.join("offsets.json"),
        }
    }
}

/// Keeps prewarms topped up and idle containers timed out, every second; in cluster mode
/// also puts the pool's counts (and why containers came and went) on the member's `/status`
/// and destroys orphans every 10 s.
pub(crate) fn upkeep(pool: Arc<Pool>, node: Option<Node>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut n: u64 = 0;
        loop {
            tick.tick().await;
            pool.maintain().await;
            n += 1;
            if let Some(node) = &node {
                // The active host reconciles the engine with its pool every 10 s.
                if n.is_multiple_of(10) {
                    pool.destroy_orphans().await;
                }
                let stats = pool.stats();
                let retries = feed::PUBLISH_RETRIES.load(std::sync::atomic::Ordering::Relaxed);
                node.report(|r| {
                    r.pool = Some(stats);
                    r.publish_retries = retries;
                });
            }
        }
    })
}

/// Runs the invoker until `shutdown` turns true. In-flight activations finish first.
pub async fn run(config: Config, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let _lock = DataDirLock::acquire(&config.invoker.data_dir)?;
    match config.cluster.clone() {
        Some(c) => crate::role::run_cluster(config, c, shutdown).await,
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
    let pool = parts.pool(parts.factory.clone(), 0);
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
