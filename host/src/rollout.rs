//! A new plugin build, rolled out without losing a container (see `docs/architecture.md`,
//! "Swapping a plugin's build"):
//!
//! - the active host stages the file, asks every other member to stage its copy (one after
//!   the other; each compiles on one thread at the lowest CPU priority), and switches
//!   only once all of them hold the same build (so a failover right after never falls back to
//!   the old one); it attaches every pooled container through the new build first and records
//!   the build in the log (`PluginBuild`);
//! - a standby switches to a staged build once the log says the cluster runs it;
//! - every member watches the file: a standby stages a new build at once (so the active
//!   host's swap does not wait for its compile), the active host rolls it out.

use crate::cluster::inbox::{ReloadRequest, ToTerm};
use crate::cluster::state::Command;
use crate::cluster::Node;
use crate::engines::Engines;
use crate::fence::Gate;
use crate::plugin::{HotPlugin, Swap};
use crate::pool::Pool;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// How long a member may take to stage (compile) a build.
const STAGE_WAIT: Duration = Duration::from_secs(300);

/// On the active host: the file's build on every member, then on this one (attaching the
/// pooled containers of this plugin, of those `engines` run).
pub async fn cluster_wide(
    node: &Node,
    plugin: &HotPlugin,
    engines: &Engines,
    pool: &Pool,
    (epoch, lease): (u64, &Gate),
) -> Result<Swap, String> {
    let Some(staged) = plugin.stage().await? else {
        // the running build already (asked twice: the file watch and the operator)
        return plugin.switch(&mut [], Some(&|| lease.open())).await;
    };
    // one member at a time: a compile on every member at once starved the cluster's
    // heartbeats (each member also compiles at the lowest priority, on one thread)
    let others = node.other_voters();
    let body = serde_json::json!({ "plugin": plugin.name() }).to_string();
    for id in &others {
        let answer = node
            .call_member(
                *id,
                "/raft/plugin/stage",
                body.clone().into_bytes(),
                STAGE_WAIT,
            )
            .await;
        let theirs = answer
            .and_then(|body| {
                serde_json::from_slice::<serde_json::Value>(&body).map_err(|e| e.to_string())?
                    ["sha256"]
                    .as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| "no sha256 in its answer".to_string())
            })
            .map_err(|e| format!("member {id} could not stage the new build: {e}"))?;
        if theirs != staged.sha256 {
            return Err(format!(
                "member {id} holds build {theirs}, this host {}: put the same file on every \
                 member first",
                staged.sha256
            ));
        }
    }
    let mut pooled = pool.containers();
    pooled.retain(|c| engines.holds(plugin.name(), c));
    let swap = plugin.switch(&mut pooled, Some(&|| lease.open())).await?;
    pool.refresh(pooled);
    let recorded = node
        .propose(Command::PluginBuild {
            epoch,
            plugin: plugin.name().to_owned(),
            sha256: swap.to.clone(),
        })
        .await;
    if let Err(e) = recorded {
        // The cluster's record still names the old build (a leader change, most likely): this
        // host goes back to it rather than run a build no other member will follow.
        let why = format!("recording the build failed: {e}");
        let rolled_back = plugin.roll_back(&why).await;
        return Err(if rolled_back {
            format!("{why}; rolled back to the build the cluster runs")
        } else {
            why
        });
    }
    Ok(swap)
}

/// Switches a member that is not active to the build the cluster runs, if it has staged it
/// (or back to it, when it is the build this member switched from).
pub async fn follow(node: &Node, plugin: &HotPlugin) {
    let wanted = node.state().plugin_builds.get(plugin.name()).cloned();
    let Some(wanted) = wanted.filter(|w| *w != plugin.sha256()) else {
        return;
    };
    if plugin.previous_sha256().as_deref() == Some(wanted.as_str()) {
        plugin
            .roll_back("the cluster's record names the build this member switched from")
            .await;
        return;
    }
    if plugin.staged().is_some_and(|s| s.sha256 == wanted) {
        match plugin.switch(&mut [], None).await {
            Ok(swap) => tracing::info!(?swap, "switched to the build the cluster runs"),
            Err(e) => tracing::warn!("switching to the build the cluster runs: {e}"),
        }
    }
}

/// Runs on every member for the life of the process: answers the active host's stage
/// requests, follows the cluster's builds while standing by, watches each plugin's file, and
/// keeps `/status`'s plugin versions current.
pub async fn watch(node: Node, plugins: Vec<Arc<HotPlugin>>) {
    let stage_requests = {
        let (node, plugins) = (node.clone(), plugins.clone());
        tokio::spawn(async move {
            let mut requests = node.requests.stage.lock().await;
            while let Some(asked) = requests.recv().await {
                let Some(plugin) = named(&plugins, asked.plugin.as_deref()) else {
                    let names: Vec<&str> = plugins.iter().map(|p| p.name()).collect();
                    let _ = asked.reply.send(Err(format!(
                        "this member runs no plugin `{}` (it runs {})",
                        asked.plugin.unwrap_or_default(),
                        names.join(", ")
                    )));
                    continue;
                };
                let staged = plugin
                    .stage()
                    .await
                    .map(|s| s.map_or_else(|| plugin.sha256(), |s| s.sha256));
                let _ = asked.reply.send(staged);
            }
        })
    };
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut ticks = 0u64;
    loop {
        tick.tick().await;
        ticks += 1;
        for plugin in &plugins {
            if !node.is_leader() {
                follow(&node, plugin).await;
            }
            if ticks.is_multiple_of(20) && plugin.file_changed() {
                file_changed(&node, plugin).await;
            }
            let versions = plugin.versions();
            node.report(|r| {
                let reports = r.plugins.iter_mut().chain(r.plugin.as_mut());
                for p in reports.filter(|p| p.name == plugin.name()) {
                    p.version = versions.version.clone();
                    p.sha256 = versions.sha256.clone();
                    p.staged = versions.staged.clone();
                    p.last_swap = versions.last_swap.clone();
                }
            });
        }
        if stage_requests.is_finished() {
            return;
        }
    }
}

/// The plugin named `name` (`None`: the first, what a member running one plugin means).
pub fn named<'a>(plugins: &'a [Arc<HotPlugin>], name: Option<&str>) -> Option<&'a Arc<HotPlugin>> {
    match name {
        Some(name) => plugins.iter().find(|p| p.name() == name),
        None => plugins.first(),
    }
}

/// A plugin's file changed: the active host rolls the new build out, a standby stages it.
async fn file_changed(node: &Node, plugin: &HotPlugin) {
    let name = plugin.name().to_owned();
    if !node.is_leader() {
        if let Err(e) = plugin.stage().await {
            tracing::warn!(plugin = %name, "the plugin's file changed, its build is refused: {e}");
        }
        return;
    }
    let (reply, rx) = oneshot::channel::<Result<Swap, String>>();
    let request = ReloadRequest {
        plugin: Some(name.clone()),
        reply,
    };
    if node.inbox.to_term(ToTerm::Reload(request)).is_ok() {
        tokio::spawn(async move {
            match rx.await {
                Ok(Ok(swap)) => tracing::info!(
                    plugin = %name,
                    ?swap,
                    "the plugin's file changed: new build rolled out"
                ),
                Ok(Err(e)) => tracing::warn!(plugin = %name, "the plugin's file changed: {e}"),
                Err(_) => {}
            }
        });
    }
}
