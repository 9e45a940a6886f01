//! One keepwarm host doing an OpenWhisk invoker's job: load the plugin, build the pool, keep
//! prewarms up, run the feed until told to stop, then drain.

use crate::action::{CatalogDir, Runtimes};
use crate::activation::{proxy::ProxyClient, InvokerInstanceId, Runner};
use crate::config::Config;
use crate::feed::{self, ActivationSink, FeedConfig};
use crate::plugin::{Limits, PluginRuntime, PluginSpec, WasmFactory};
use crate::pool::{Pool, PoolConfig};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Runs the invoker until `shutdown` turns true. In-flight activations finish first.
pub async fn run(config: Config, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.invoker.data_dir)?;
    let cache = config
        .plugin
        .cache_dir
        .clone()
        .unwrap_or_else(|| config.invoker.data_dir.join("plugin-cache"));
    let runtime = PluginRuntime::new(Some(cache))?;
    let factory = WasmFactory::load(
        &runtime,
        PluginSpec {
            name: config.plugin.name.clone(),
            file: config.plugin.file.clone(),
            routes: config.plugin.routes.clone().into_iter().collect(),
            config: config.plugin.config.clone().into_iter().collect(),
            limits: Limits {
                call_timeout: Duration::from_millis(config.plugin.call_timeout_ms),
                memory_mb: config.plugin.memory_mb,
                max_instances: config.plugin.max_instances,
            },
        },
    )
    .await?;
    let runtimes = Runtimes::load(&config.runtimes.manifest)?;
    let store = CatalogDir::load(&config.actions.catalog)?;
    tracing::info!(actions = store.len(), plugin = %factory.name(), "invoker starting");
    let instance = config.invoker.instance;
    let pool = Arc::new(Pool::new(
        Arc::new(factory),
        PoolConfig {
            user_memory_mb: config.invoker.user_memory_mb,
            idle_timeout: Duration::from_secs(config.invoker.idle_timeout_s),
            cluster: config.invoker.cluster.clone(),
            name_prefix: format!("wsk{instance}_"),
            stem_cells: runtimes.stem_cells().to_vec(),
            port: 8080,
        },
    ));
    let runner = Arc::new(Runner {
        store: Arc::new(store),
        runtimes,
        pool: pool.clone(),
        proxy: ProxyClient::new(config.invoker.max_response_bytes),
        instance: InvokerInstanceId::new(instance, config.invoker.user_memory_mb, None),
        init_timeout: Duration::from_secs(60),
        collect_logs: config.invoker.log_store == crate::config::LogStore::Collect,
    });
    let sink = Arc::new(ActivationSink::open(
        config.invoker.activation_log.as_deref(),
    )?);

    pool.maintain().await;
    let upkeep = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                pool.maintain().await;
            }
        })
    };
    let feed_config = FeedConfig {
        brokers: config.kafka.brokers.clone(),
        topic: format!("invoker{instance}"),
        group: format!("invoker{instance}"),
        fetch_wait_max_ms: config.kafka.fetch_wait_max_ms,
        linger_ms: config.kafka.linger_ms,
        max_in_flight: config.invoker.max_in_flight,
        offsets_file: config.invoker.data_dir.join("offsets.json"),
    };
    let result = feed::run(feed_config, runner, sink, shutdown).await;
    upkeep.abort();
    if config.invoker.destroy_on_exit {
        pool.destroy_everything().await;
    }
    tracing::info!("invoker stopped");
    Ok(result?)
}
