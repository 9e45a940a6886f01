//! [`HotPlugin`]: a plugin that is replaced while it runs (hot swap).
//!
//! A new build of the plugin's file is *staged* in the background — compiled, instantiated,
//! `describe`d and `init`ed with the same routes, config, limits and `state` — and then
//! *switched to* only once it has `attach`ed every container of the pool: from then on new
//! calls go to it, while calls already in flight finish on the version they started on (each
//! call holds its version). A build that fails any step is refused; the running version stays
//! and the refusal is kept for `/status`.

use super::engine::PluginRuntime;
use super::factory::{PluginSpec, WasmFactory};
use super::state::PluginState;
use crate::clock::now_ms;
use crate::factory::{CallResult, Container, ContainerFactory, ContainerSpec, Pairs, PluginInfo};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Instant, SystemTime};

/// The plugin as `/status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PluginVersions {
    pub name: String,
    /// What the running build's `describe` says.
    pub version: String,
    pub engine: String,
    /// The running file's sha256.
    pub sha256: String,
    /// A build loaded and waiting to be switched to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staged: Option<String>,
    /// The last swap, done or refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_swap: Option<Swap>,
}

/// One swap, done or refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Swap {
    pub at_ms: i64,
    pub from: String,
    /// The new file's sha256 (empty when it could not even be read).
    pub to: String,
    pub swapped: bool,
    /// Why it was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Compiling (or reading the compiled cache), instantiating and `init`.
    pub load_ms: u64,
    pub bytes: u64,
    /// Pooled containers attached through the new build before the switch.
    pub attached: usize,
}

/// What a staged build is.
#[derive(Debug, Clone, PartialEq)]
pub struct Staged {
    pub sha256: String,
    pub load_ms: u64,
    pub bytes: u64,
}

/// A plugin whose build can be replaced while it serves.
pub struct HotPlugin {
    runtime: Arc<PluginRuntime>,
    spec: PluginSpec,
    state: Arc<dyn PluginState>,
    prewarm: usize,
    current: RwLock<Arc<WasmFactory>>,
    staged: Mutex<Option<(Arc<WasmFactory>, Staged)>>,
    /// The build switched from, kept until the next switch: what a rollout that could not be
    /// recorded (a leader change) goes back to.
    previous: Mutex<Option<Arc<WasmFactory>>>,
    /// One stage or switch at a time.
    swapping: tokio::sync::Mutex<()>,
    last_swap: Mutex<Option<Swap>>,
    /// The file's length and modification time when last looked at.
    seen: Mutex<Option<(u64, SystemTime)>>,
}

impl std::fmt::Debug for HotPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HotPlugin")
            .field("name", &self.spec.name)
            .field("sha256", &self.current().sha256())
            .finish_non_exhaustive()
    }
}

/// How long a swap waits for a lapsed lease to come back.
const LAPSE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

impl HotPlugin {
    /// Loads the plugin's file (see [`WasmFactory::load_with_state`]) with `prewarm`
    /// instances ready.
    pub async fn load(
        runtime: Arc<PluginRuntime>,
        spec: PluginSpec,
        state: Arc<dyn PluginState>,
        prewarm: usize,
    ) -> CallResult<HotPlugin> {
        let first = WasmFactory::load_with_state(&runtime, spec.clone(), state.clone()).await?;
        first.prewarm_instances(prewarm).await?;
        let plugin = HotPlugin {
            runtime,
            spec,
            state,
            prewarm,
            current: RwLock::new(Arc::new(first)),
            staged: Mutex::new(None),
            previous: Mutex::new(None),
            swapping: tokio::sync::Mutex::new(()),
            last_swap: Mutex::new(None),
            seen: Mutex::new(None),
        };
        plugin.file_changed();
        Ok(plugin)
    }

    /// The running build; a call holds it until it returns.
    pub fn current(&self) -> Arc<WasmFactory> {
        self.current.read().expect("plugin lock").clone()
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    pub fn sha256(&self) -> String {
        self.current().sha256().to_owned()
    }

    pub fn staged(&self) -> Option<Staged> {
        self.staged
            .lock()
            .expect("staged lock")
            .as_ref()
            .map(|(_, s)| s.clone())
    }

    pub fn versions(&self) -> PluginVersions {
        let current = self.current();
        let info = current.info();
        PluginVersions {
            name: self.spec.name.clone(),
            version: info.version,
            engine: info.engine,
            sha256: current.sha256().to_owned(),
            staged: self.staged().map(|s| s.sha256),
            last_swap: self.last_swap.lock().expect("swap lock").clone(),
        }
    }

    /// Whether the file's length or modification time changed since the last look (a new
    /// build is usually written beside it and renamed over it).
    pub fn file_changed(&self) -> bool {
        let now = std::fs::metadata(&self.spec.file)
            .ok()
            .and_then(|m| Some((m.len(), m.modified().ok()?)));
        let mut seen = self.seen.lock().expect("seen lock");
        let changed = now.is_some() && *seen != now;
        if now.is_some() {
            *seen = now;
        }
        changed
    }

    /// Loads the file as it is now, unless it is the running build (`Ok(None)`) or the one
    /// already staged. Refusals are recorded as the last swap.
    pub async fn stage(&self) -> Result<Option<Staged>, String> {
        let _one = self.swapping.lock().await;
        self.stage_locked().await
    }

    async fn stage_locked(&self) -> Result<Option<Staged>, String> {
        let from = self.sha256();
        let started = Instant::now();
        let bytes = std::fs::metadata(&self.spec.file)
            .map(|m| m.len())
            .unwrap_or(0);
        let refuse = |to: String, error: String| {
            self.record(Swap {
                at_ms: now_ms(),
                from: from.clone(),
                to,
                swapped: false,
                error: Some(error.clone()),
                load_ms: started.elapsed().as_millis() as u64,
                bytes,
                attached: 0,
            });
            tracing::error!(plugin = %self.spec.name, "new build refused; the running one stays: {error}");
            Err(error)
        };
        if self.spec.sha256.is_some() {
            return refuse(
                String::new(),
                "[plugin] sha256 pins the file: remove the pin (or restart with the new one) \
                 to swap builds"
                    .into(),
            );
        }
        let digest = match std::fs::read(&self.spec.file) {
            Ok(b) => super::engine::sha256_hex(&b),
            Err(e) => return refuse(String::new(), format!("{}: {e}", self.spec.file.display())),
        };
        if digest == from {
            return Ok(None);
        }
        if let Some(staged) = self.staged().filter(|s| s.sha256 == digest) {
            return Ok(Some(staged));
        }
        let mut spec = self.spec.clone();
        spec.sha256 = Some(digest.clone()); // exactly the build hashed above
        let loaded = match WasmFactory::stage(&self.runtime, spec, self.state.clone()).await {
            Ok(f) => f,
            Err(e) => return refuse(digest, e.to_string()),
        };
        if let Err(e) = loaded.prewarm_instances(self.prewarm).await {
            return refuse(digest, e.to_string());
        }
        let staged = Staged {
            sha256: digest,
            load_ms: started.elapsed().as_millis() as u64,
            bytes,
        };
        tracing::info!(plugin = %self.spec.name, ?staged, version = %loaded.info().version, "new build staged");
        *self.staged.lock().expect("staged lock") = Some((Arc::new(loaded), staged.clone()));
        Ok(Some(staged))
    }

    /// Switches to the staged build once it has attached every one of `pooled` (updated in
    /// place: their addresses and handles as the new build sees them). Nothing staged: stages
    /// the file first. Refused (the running build stays) when it cannot attach one.
    ///
    /// `lease_held`, in cluster mode: asked before every attach (a host whose lease lapsed
    /// or whose term ended attaches nothing), and a swap that met a lapse is refused.
    pub async fn switch(
        &self,
        pooled: &mut [Container],
        lease_held: Option<&(dyn Fn() -> bool + Sync)>,
    ) -> Result<Swap, String> {
        let _one = self.swapping.lock().await;
        let Some(staged) = self.stage_locked().await? else {
            // Asked twice (a file watch and the operator): the swap that made it so.
            let running = self.sha256();
            return match self.last_swap.lock().expect("swap lock").clone() {
                Some(last) if last.swapped && last.to == running => Ok(last),
                _ => Err(format!(
                    "the file is the build that runs ({running}): nothing to swap"
                )),
            };
        };
        let next = self
            .staged
            .lock()
            .expect("staged lock")
            .as_ref()
            .map(|(f, _)| f.clone())
            .expect("just staged");
        // a lapse of the lease only pauses the swap (a compile can starve heartbeats for a
        // moment); a lease that does not come back within LAPSE_WAIT ends it
        let held = || async {
            let until = Instant::now() + LAPSE_WAIT;
            while !lease_held.is_none_or(|held| held()) {
                if Instant::now() >= until {
                    return false;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            true
        };
        let attaches = pooled.iter().map(|c| {
            let (next, c) = (next.clone(), c.clone());
            async move {
                if !held().await {
                    return Err(crate::factory::CallError::Fenced {
                        operation: "attach",
                    });
                }
                next.attach(c).await
            }
        });
        let results = futures::future::join_all(attaches).await;
        let mut failed = Vec::new();
        for (c, result) in pooled.iter_mut().zip(results) {
            match result {
                Ok(attached) => *c = attached,
                Err(e) => failed.push(format!("{}: {e}", c.id)),
            }
        }
        let from = self.sha256();
        let mut swap = Swap {
            at_ms: now_ms(),
            from,
            to: staged.sha256.clone(),
            swapped: failed.is_empty(),
            error: None,
            load_ms: staged.load_ms,
            bytes: staged.bytes,
            attached: pooled.len() - failed.len(),
        };
        if !failed.is_empty() {
            *self.staged.lock().expect("staged lock") = None;
            let error = format!(
                "the new build could not attach {} of {} pooled containers ({})",
                failed.len(),
                pooled.len(),
                failed.join("; ")
            );
            tracing::error!(plugin = %self.spec.name, "new build refused; the running one stays: {error}");
            swap.error = Some(error.clone());
            self.record(swap);
            return Err(error);
        }
        if !held().await {
            *self.staged.lock().expect("staged lock") = None;
            let error =
                "this host lost its lease during the swap: the running build stays".to_string();
            swap.swapped = false;
            swap.error = Some(error.clone());
            self.record(swap);
            return Err(error);
        }
        let next = self
            .staged
            .lock()
            .expect("staged lock")
            .take()
            .map(|(f, _)| f)
            .expect("staged above");
        let was = std::mem::replace(&mut *self.current.write().expect("plugin lock"), next);
        *self.previous.lock().expect("previous lock") = Some(was);
        tracing::info!(plugin = %self.spec.name, ?swap, "switched to the new build");
        self.record(swap.clone());
        Ok(swap)
    }

    /// The sha256 of the build switched from, if it is still kept.
    pub fn previous_sha256(&self) -> Option<String> {
        self.previous
            .lock()
            .expect("previous lock")
            .as_ref()
            .map(|f| f.sha256().to_owned())
    }

    /// Goes back to the build switched from (a rollout that met a leader change: the
    /// cluster's record still names the old build). False when none is kept.
    pub async fn roll_back(&self, why: &str) -> bool {
        let _one = self.swapping.lock().await;
        let Some(previous) = self.previous.lock().expect("previous lock").take() else {
            return false;
        };
        let from = self.sha256();
        let to = previous.sha256().to_owned();
        *self.current.write().expect("plugin lock") = previous;
        tracing::warn!(plugin = %self.spec.name, %from, %to, "rolled back to the previous build: {why}");
        self.record(Swap {
            at_ms: now_ms(),
            from,
            to,
            swapped: true,
            error: Some(format!("rolled back: {why}")),
            load_ms: 0,
            bytes: 0,
            attached: 0,
        });
        true
    }

    fn record(&self, swap: Swap) {
        *self.last_swap.lock().expect("swap lock") = Some(swap);
    }
}

#[async_trait::async_trait]
impl ContainerFactory for HotPlugin {
    fn info(&self) -> PluginInfo {
        self.current().info()
    }

    async fn create(&self, spec: ContainerSpec) -> CallResult<Container> {
        self.current().create(spec).await
    }

    async fn attach(&self, known: Container) -> CallResult<Container> {
        self.current().attach(known).await
    }

    async fn list_containers(&self, labels: Pairs) -> CallResult<Vec<Container>> {
        self.current().list_containers(labels).await
    }

    async fn pause(&self, id: &str) -> CallResult<()> {
        self.current().pause(id).await
    }

    async fn resume(&self, id: &str) -> CallResult<()> {
        self.current().resume(id).await
    }

    async fn destroy(&self, id: &str) -> CallResult<()> {
        self.current().destroy(id).await
    }

    async fn logs(&self, id: &str, since_ms: u64, max_bytes: u32) -> CallResult<String> {
        self.current().logs(id, since_ms, max_bytes).await
    }
}
