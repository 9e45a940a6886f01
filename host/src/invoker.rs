//! One keepwarm host doing an OpenWhisk invoker's job: load the plugins, build the pool, keep
//! prewarms up, run the feed until told to stop, then drain.
//!
//! In cluster mode ([`crate::config::ClusterSection`]) the host joins the Raft cluster and
//! runs the feed only while it leads and holds its lease; when it becomes the leader it takes
//! the pool over from the replicated state first ([`crate::failover`]).

use crate::cluster::server;
use crate::config::Config;
use crate::data_dir::DataDirLock;
use crate::engines::Engines;
use crate::factory::ContainerFactory;
use crate::feed;
use crate::parts::{upkeep, Parts};
use crate::plugin::{FileState, HotPlugin, PluginState};
use crate::pool::Pool;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::watch;

/// Runs the invoker until `shutdown` turns true. In-flight activations finish first.
pub async fn run(config: Config, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let _lock = DataDirLock::acquire(&config.invoker.data_dir)?;
    match config.cluster.clone() {
        Some(c) => crate::role::run_cluster(config, c, shutdown).await,
        None => {
            // A single host keeps its plugins' state on disk, so a restart finds e.g. its
            // Mesos framework (and the tasks it left) again.
            std::fs::create_dir_all(&config.invoker.data_dir)?;
            let mut states = HashMap::new();
            for (i, p) in config.plugins.iter().enumerate() {
                // the first plugin's file keeps the name it had when a host ran one plugin
                let file = match i {
                    0 => "plugin-state.json".to_owned(),
                    _ => format!("plugin-state.{}.json", p.name),
                };
                let state = FileState::open(&config.invoker.data_dir.join(file))?;
                states.insert(p.name.clone(), Arc::new(state) as Arc<dyn PluginState>);
            }
            let state_of = |name: &str| states[name].clone();
            let parts = Parts::load(config, Some(&state_of)).await?;
            run_single(parts, shutdown).await
        }
    }
}

async fn run_single(parts: Parts, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let pool = parts.pool(parts.factory.clone(), 0);
    remove_leftovers(&parts, &pool).await;
    pool.maintain().await;
    let upkeep = upkeep(
        pool.clone(),
        None,
        parts.config.invoker.reconcile_interval_s,
    );
    let swaps: Vec<_> = parts
        .plugins
        .iter()
        .map(|p| {
            tokio::spawn(swap_on_change(
                p.clone(),
                parts.factory.clone(),
                pool.clone(),
            ))
        })
        .collect();
    let runner = parts.runner(
        pool.clone(),
        parts.factory.clone(),
        crate::fence::Gate::always(),
        None,
    );
    // ready once the feed consumes: its plugins are loaded and its pool is up by then
    let consuming = Arc::new(AtomicBool::new(false));
    let probes = match &parts.config.invoker.status_address {
        Some(address) => Some(
            serve_status(
                address,
                parts.config.invoker.status_token.as_deref().map(Arc::from),
                single_status(&parts, consuming.clone(), pool.clone()),
                consuming.clone(),
                shutdown.clone(),
            )
            .await?,
        ),
        None => None,
    };
    let topic = parts.feed_config().topic;
    let hooks = feed::FeedHooks {
        on_consuming: Some(Arc::new({
            let consuming = consuming.clone();
            move || {
                consuming.store(true, Ordering::Relaxed);
                crate::service::ready(&format!("consuming {topic}"));
            }
        })),
        ..feed::FeedHooks::single()
    };
    let result = feed::run_with(
        parts.feed_config(),
        hooks,
        None,
        runner,
        parts.sink.clone(),
        shutdown,
    )
    .await;
    consuming.store(false, Ordering::Relaxed);
    if let Some(p) = probes {
        p.abort();
    }
    upkeep.abort();
    swaps.iter().for_each(|s| s.abort());
    if parts.config.invoker.destroy_on_exit {
        pool.destroy_everything().await;
    }
    tracing::info!("invoker stopped");
    Ok(result?)
}

/// A single host watches each plugin's file (every 2 s) and swaps to a new build once it has
/// attached every pooled container of that plugin (a refused build leaves the running one;
/// see [`HotPlugin::switch`]).
async fn swap_on_change(plugin: Arc<HotPlugin>, engines: Arc<Engines>, pool: Arc<Pool>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
    loop {
        tick.tick().await;
        if !plugin.file_changed() {
            continue;
        }
        let mut pooled = pool.containers();
        pooled.retain(|c| engines.holds(plugin.name(), c));
        match plugin.switch(&mut pooled, None).await {
            Ok(swap) => {
                pool.refresh(pooled);
                tracing::info!(
                    plugin = plugin.name(),
                    ?swap,
                    "the plugin's file changed: switched to the new build"
                );
            }
            Err(e) => tracing::warn!(plugin = plugin.name(), "the plugin's file changed: {e}"),
        }
    }
}

/// Destroys the containers a previous run of this single host left behind (it was killed, or
/// ran with `destroy-on-exit = false`): those with the cluster label and this invoker's name
/// prefix. A single host keeps no record of its pool across restarts, so they would only
/// hold memory (and, on Mesos, offers) forever.
async fn remove_leftovers(parts: &Parts, pool: &Pool) {
    let labels = crate::factory::cluster_labels(&parts.config.invoker.cluster);
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

/// What a single host says about itself on `/status`: the cluster's struct with no Raft
/// part (`state` = `Single`, no members), its pool, activity and plugins.
fn single_status(parts: &Parts, consuming: Arc<AtomicBool>, pool: Arc<Pool>) -> server::Status {
    use crate::cluster::status::{HostReport, MemberStatus, PluginReport, Role};
    let plugins: Vec<PluginReport> = parts
        .config
        .plugins
        .iter()
        .zip(&parts.plugins)
        .map(|(section, plugin)| PluginReport {
            name: section.name.clone(),
            version: plugin.versions().version,
            sha256: plugin.sha256(),
            kinds: section.kinds.clone(),
            images: section.images.clone(),
            default: section.name == parts.factory.default_engine().name,
            ..Default::default()
        })
        .collect();
    Arc::new(move || {
        let stats = pool.stats();
        let consuming = consuming.load(Ordering::Relaxed);
        MemberStatus {
            state: "Single".into(),
            voting: true,
            containers: stats.prewarm + stats.warm_idle + stats.busy,
            idle_containers: stats.prewarm + stats.warm_idle,
            host: HostReport {
                role: if consuming {
                    Role::Active
                } else {
                    Role::Standby
                },
                consuming,
                pool: Some(stats),
                pool_by_action: pool.by_action(),
                activity: crate::metrics::global().activity(),
                plugin: plugins.iter().find(|p| p.default).cloned(),
                plugins: plugins.clone(),
                publish_retries: crate::metrics::global().publish_retries(),
                ..Default::default()
            },
            ..Default::default()
        }
    })
}

/// A single host's status listener: the dashboard, `/status`, `/metrics`, and the probes
/// (`/readyz`: ready while the feed consumes).
async fn serve_status(
    address: &str,
    token: Option<Arc<str>>,
    status: server::Status,
    consuming: Arc<AtomicBool>,
    stopped: watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| anyhow::anyhow!("[invoker] status-address {address}: {e}"))?;
    tracing::info!(%address, "serving the dashboard, /status, /metrics, /healthz and /readyz");
    let ready: server::Readiness = Arc::new(move || {
        if consuming.load(Ordering::Relaxed) {
            Ok("consuming".into())
        } else {
            Err("not consuming (starting or draining)".into())
        }
    });
    Ok(tokio::spawn(server::serve(
        listener,
        server::status_router(status, token, Some(ready)),
        None,
        server::Limits::default(),
        stopped,
    )))
}
