//! The parts of one host, loaded once and reused across leadership changes: the plugin, the
//! action store, the runtimes, parameter keys and the activation sink; and how a pool, a
//! runner and a feed are built from them. Single mode (`invoker`) and each cluster role
//! (`role`) assemble theirs from here.

use crate::action::couchdb::CouchActions;
use crate::action::{ActionStore, CatalogDir, ParameterEncryption, Runtimes};
use crate::activation::runner::Journal;
use crate::activation::{proxy::ProxyClient, Gate, InvokerInstanceId, Runner};
use crate::cluster::Node;
use crate::config::StoreKind;
use crate::config::{Config, LogStore};
use crate::engines::{Engine, Engines};
use crate::factory::ContainerFactory;
use crate::feed::{ActivationSink, FeedConfig};
use crate::plugin::{HotPlugin, MemoryState, PluginRuntime, PluginState};
use crate::pool::{Pool, PoolConfig};
use std::sync::Arc;
use std::time::Duration;

/// Gives each plugin (by name) its `state` store.
pub(crate) type StateOf<'a> = dyn Fn(&str) -> Arc<dyn PluginState> + 'a;

/// What a host loads once and reuses across leadership changes.
pub(crate) struct Parts {
    pub(crate) config: Config,
    /// Every plugin as one factory: a container goes to the plugin serving its action.
    pub(crate) factory: Arc<Engines>,
    /// The same plugins, in declared order, for swapping their builds.
    pub(crate) plugins: Vec<Arc<HotPlugin>>,
    runtimes: Runtimes,
    store: Arc<dyn ActionStore>,
    encryption: ParameterEncryption,
    pub(crate) sink: Arc<ActivationSink>,
}

impl Parts {
    /// Loads every plugin of `config`; `state_of` gives each (by name) its `state` store
    /// (default: in memory).
    pub(crate) async fn load(
        config: Config,
        state_of: Option<&StateOf<'_>>,
    ) -> anyhow::Result<Parts> {
        std::fs::create_dir_all(&config.invoker.data_dir)?;
        let cache = config
            .plugins
            .iter()
            .find_map(|p| p.cache_dir.clone())
            .unwrap_or_else(|| config.invoker.data_dir.join("plugin-cache"));
        let runtime = Arc::new(PluginRuntime::new(Some(cache))?);
        let mut plugins = Vec::new();
        let mut engines = Vec::new();
        for section in &config.plugins {
            let spec = section.spec().map_err(anyhow::Error::msg)?;
            let state = match state_of {
                Some(state_of) => state_of(&section.name),
                None => Arc::new(MemoryState::default()),
            };
            let plugin = Arc::new(
                HotPlugin::load(runtime.clone(), spec, state, section.max_instances).await?,
            );
            let info = plugin.info();
            if config.invoker.log_store == LogStore::Collect && !info.capabilities.logs {
                anyhow::bail!(
                    "[invoker] log-store = \"collect\" reads each activation's logs through the \
                     plugin, but plugin `{}` ({}) cannot read logs: set log-store = \"log-driver\"",
                    section.name,
                    info.engine
                );
            }
            tracing::info!(plugin = %section.name, version = %info.version, sha256 = %plugin.sha256(), kinds = ?section.kinds, images = ?section.images, "plugin loaded");
            engines.push(Engine {
                name: section.name.clone(),
                serves: section.serves(),
                factory: plugin.clone(),
            });
            plugins.push(plugin);
        }
        let factory = Arc::new(Engines::new(engines).map_err(anyhow::Error::msg)?);
        let runtimes = Runtimes::load(&config.runtimes.manifest)?;
        let store: Arc<dyn ActionStore> = match config.actions.store {
            StoreKind::Catalog => {
                let dir = config
                    .actions
                    .catalog
                    .as_deref()
                    .expect("checked by Config::load");
                let catalog = CatalogDir::load(dir)?;
                tracing::info!(actions = catalog.len(), catalog = %dir.display(), plugins = config.plugins.len(), "invoker starting");
                Arc::new(catalog)
            }
            StoreKind::Couchdb => {
                let couch = config.couchdb.as_ref().expect("checked by Config::load");
                let db =
                    crate::couchdb::CouchDb::open(couch, "whisks").map_err(anyhow::Error::msg)?;
                tracing::info!(database = db.name(), url = %couch.url, plugins = config.plugins.len(), "invoker starting: actions from CouchDB");
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
        Ok(Parts {
            factory,
            plugins,
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

    /// The runner; its proxy client refuses `/init` and `/run` while `may_run` is closed (the
    /// lease in a cluster; [`Gate::always`] on a single host).
    pub(crate) fn runner(
        &self,
        pool: Arc<Pool>,
        engine: Arc<dyn ContainerFactory>,
        may_run: Gate,
        journal: Option<Journal>,
    ) -> Arc<Runner> {
        let c = &self.config;
        let proxy = ProxyClient::new(c.invoker.max_response_bytes).fenced(may_run.clone());
        Arc::new(Runner {
            store: self.store.clone(),
            runtimes: self.runtimes.clone(),
            limits: c.limits.system(),
            encryption: self.encryption.clone(),
            pool,
            engine,
            proxy,
            instance: InvokerInstanceId::new(self.instance(), c.invoker.user_memory_mb, None),
            init_timeout: Duration::from_secs(60),
            collect_logs: c.invoker.log_store == LogStore::Collect,
            may_run,
            delivery: c.invoker.delivery,
            journal,
        })
    }

    pub(crate) fn feed_config(&self) -> FeedConfig {
        let c = &self.config;
        FeedConfig {
            brokers: c.kafka.brokers.clone(),
            topic: format!("invoker{}", self.instance()),
            // keepwarm's own group: upstream's invoker commits to `invoker{N}`, and a host
            // taking over from one must not share (or move) its offsets
            group: format!("keepwarm-invoker{}", self.instance()),
            fetch_wait_max_ms: c.kafka.fetch_wait_max_ms,
            linger_ms: c.kafka.linger_ms,
            max_in_flight: c.invoker.max_in_flight,
            drain_timeout: Duration::from_secs(c.invoker.drain_timeout_s),
            offsets_file: c.invoker.data_dir.join("offsets.json"),
        }
    }
}

/// Keeps prewarms topped up and idle containers timed out, every second; every
/// `reconcile_every` seconds forgets idle containers the engine no longer lists (an engine
/// machine failed); in cluster mode also puts the pool's counts (and why containers came and
/// went) on the member's `/status` and destroys orphans every 10 s (a single host removes its
/// leftovers at start instead).
pub(crate) fn upkeep(
    pool: Arc<Pool>,
    node: Option<Node>,
    reconcile_every: u64,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        // a top-up that took longer than a tick (thousands of prewarms) is not followed by a
        // burst of the ticks it missed
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut n: u64 = 0;
        // containers the last list left out are looked at again on the next tick
        let mut recheck = false;
        loop {
            tick.tick().await;
            pool.maintain().await;
            n += 1;
            let orphans = node.is_some() && n.is_multiple_of(10);
            if recheck || orphans || n.is_multiple_of(reconcile_every.max(1)) {
                // what the replicated pool records is not an orphan: lent or held apart
                let recorded = |id: &str| {
                    node.as_ref()
                        .is_some_and(|n| n.state().containers.contains_key(id))
                };
                recheck = pool.reconcile(orphans, &recorded).await.unlisted > 0;
            }
            if let Some(node) = &node {
                let stats = pool.stats();
                let by_action = pool.by_action();
                let retries = crate::metrics::global().publish_retries();
                node.report(|r| {
                    r.pool = Some(stats);
                    r.pool_by_action = by_action;
                    r.activity = crate::metrics::global().activity();
                    r.publish_retries = retries;
                });
            }
        }
    })
}
