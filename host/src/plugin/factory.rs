//! [`WasmFactory`]: a loaded plugin as a [`ContainerFactory`].
//!
//! Each call takes an idle instance (or instantiates one, running the plugin's `init`), runs
//! under the plugin's deadline and memory cap, and puts the instance back. An instance whose
//! call trapped, timed out or hit the cap is dropped, never reused; the next call gets a fresh
//! one. Plugins that declare `concurrent` get up to `max_instances` instances in parallel;
//! others get exactly one, so their calls run in order.

use super::address::AllowedAddresses;
use super::bindings::{v0_1, wit, ContainerFactory as Bindings};
use super::engine::{PluginRuntime, Prepared, Priority, EPOCH_TICK};
use super::host::HostState;
use super::route::{Outbound, Routes};
use super::state::{MemoryState, PluginState, StateLimits};
use super::PluginError;
use crate::factory::{
    CallError, CallResult, Container, ContainerFactory, ContainerSpec, Pairs, PluginInfo,
};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;
use wasmtime::{Store, Trap};

/// Sandbox limits for one plugin.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Deadline of one call, host I/O included.
    pub call_timeout: Duration,
    /// Linear memory cap of one instance.
    pub memory_mb: u64,
    /// Instances that may run at once when the plugin is `concurrent`.
    pub max_instances: usize,
    /// What the plugin may keep in its `state`.
    pub state: StateLimits,
}

impl Limits {
    /// The defaults, the one place they are written (config and CLI read them here).
    pub const DEFAULT_CALL_TIMEOUT_MS: u64 = 30_000;
    pub const DEFAULT_MEMORY_MB: u64 = 64;
    pub const DEFAULT_MAX_INSTANCES: usize = 8;
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            call_timeout: Duration::from_millis(Limits::DEFAULT_CALL_TIMEOUT_MS),
            memory_mb: Limits::DEFAULT_MEMORY_MB,
            max_instances: Limits::DEFAULT_MAX_INSTANCES,
            state: StateLimits::default(),
        }
    }
}

/// Everything needed to load one plugin.
#[derive(Debug, Clone)]
pub struct PluginSpec {
    /// The name the operator gave the plugin (used in logs, errors and labels).
    pub name: String,
    pub file: PathBuf,
    /// authority → `unix:///path`, `tcp://host:port` or `https://host:port`.
    pub routes: Pairs,
    /// TLS files of the routes that use TLS, by route name.
    pub tls: Vec<(String, super::RouteTls)>,
    /// Passed to the plugin's `init`.
    pub config: Pairs,
    pub limits: Limits,
    /// Where its containers may be (`None`: what its routes and `publish-ip` imply).
    pub allowed_addresses: Option<Vec<String>>,
    /// The file's sha256 (hex) the operator approved; another file is refused.
    pub sha256: Option<String>,
}

struct Instance {
    store: Store<HostState>,
    bindings: Bound,
}

/// An instance's exports, in the contract version its component speaks.
enum Bound {
    V0_2(Bindings),
    V0_1(v0_1::ContainerFactory),
}

/// Runs `$body` with `$g` bound to the instance's `factory` export, whichever contract version
/// it speaks (the versions' functions have the same signatures and share their types).
macro_rules! with_factory {
    ($bound:expr, $g:ident => $body:expr) => {
        match $bound {
            Bound::V0_2(b) => {
                let $g = b.keepwarm_factory_factory();
                $body
            }
            Bound::V0_1(b) => {
                let $g = b.keepwarm_factory_factory();
                $body
            }
        }
    };
}

/// A loaded plugin.
pub struct WasmFactory {
    name: String,
    info: PluginInfo,
    pre: Prepared,
    engine: wasmtime::Engine,
    outbound: Outbound,
    state: Arc<dyn PluginState>,
    config: Pairs,
    limits: Limits,
    idle: Mutex<Vec<Instance>>,
    slots: Semaphore,
    allowed: AllowedAddresses,
    sha256: String,
}

impl std::fmt::Debug for WasmFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmFactory")
            .field("name", &self.name)
            .field("info", &self.info)
            .field("limits", &self.limits)
            .finish()
    }
}

/// One factory operation with its arguments, so every call goes through one guarded path.
enum Op {
    Describe,
    Create(wit::ContainerSpec),
    Attach(wit::Container),
    List(Pairs),
    Pause(String),
    Resume(String),
    Destroy(String),
    Logs(String, u64, u32),
}

enum Reply {
    Info(wit::PluginInfo),
    Container(wit::Container),
    Containers(Vec<wit::Container>),
    Done,
    Text(String),
}

impl Op {
    fn name(&self) -> &'static str {
        match self {
            Op::Describe => "describe",
            Op::Create(_) => "create",
            Op::Attach(_) => "attach",
            Op::List(_) => "list-containers",
            Op::Pause(_) => "pause",
            Op::Resume(_) => "resume",
            Op::Destroy(_) => "destroy",
            Op::Logs(..) => "logs",
        }
    }
}

type GuestResult = wasmtime::Result<Result<Reply, wit::FactoryError>>;

impl Instance {
    async fn invoke(&mut self, op: Op) -> GuestResult {
        let s = &mut self.store;
        with_factory!(&self.bindings, g => Ok(match op {
            Op::Describe => Ok(Reply::Info(g.call_describe(&mut *s).await?)),
            Op::Create(spec) => g.call_create(s, &spec).await?.map(Reply::Container),
            Op::Attach(c) => g.call_attach(s, &c).await?.map(Reply::Container),
            Op::List(labels) => g
                .call_list_containers(s, &labels)
                .await?
                .map(Reply::Containers),
            Op::Pause(id) => g.call_pause(s, &id).await?.map(|()| Reply::Done),
            Op::Resume(id) => g.call_resume(s, &id).await?.map(|()| Reply::Done),
            Op::Destroy(id) => g.call_destroy(s, &id).await?.map(|()| Reply::Done),
            Op::Logs(id, since, max) => g.call_logs(s, &id, since, max).await?.map(Reply::Text),
        }))
    }

    async fn init(&mut self, config: &Pairs) -> wasmtime::Result<Result<(), wit::FactoryError>> {
        let s = &mut self.store;
        with_factory!(&self.bindings, g => g.call_init(s, config).await)
    }
}

impl WasmFactory {
    /// Loads, links and instantiates a plugin, runs `describe` and `init`, and keeps that first
    /// instance for the first call.
    pub async fn load(runtime: &PluginRuntime, spec: PluginSpec) -> CallResult<WasmFactory> {
        Self::load_with_state(runtime, spec, Arc::new(MemoryState::default())).await
    }

    /// As [`WasmFactory::load`], with the plugin's `state` map kept by `state`.
    pub async fn load_with_state(
        runtime: &PluginRuntime,
        spec: PluginSpec,
        state: Arc<dyn PluginState>,
    ) -> CallResult<WasmFactory> {
        Self::load_at(runtime, spec, state, Priority::Now).await
    }

    /// As [`WasmFactory::load_with_state`], compiled at the lowest priority: a new build
    /// staged beside a running host.
    pub async fn stage(
        runtime: &PluginRuntime,
        spec: PluginSpec,
        state: Arc<dyn PluginState>,
    ) -> CallResult<WasmFactory> {
        Self::load_at(runtime, spec, state, Priority::Background).await
    }

    async fn load_at(
        runtime: &PluginRuntime,
        spec: PluginSpec,
        state: Arc<dyn PluginState>,
        priority: Priority,
    ) -> CallResult<WasmFactory> {
        let (component, sha256) = runtime
            .load_component(&spec.file, spec.sha256.as_deref(), priority)
            .await?;
        let pre = runtime.prepare(&spec.file, &component)?;
        let routes = Routes::parse(&spec.name, &spec.routes, &spec.tls)?;
        let allowed = match &spec.allowed_addresses {
            Some(list) => AllowedAddresses::parse(list).map_err(|reason| PluginError::Load {
                file: spec.file.clone(),
                reason,
            })?,
            None => AllowedAddresses::implied(&spec.routes, &spec.config),
        };
        let mut factory = WasmFactory {
            outbound: Outbound::new(&spec.name, routes),
            info: PluginInfo {
                name: spec.name.clone(),
                version: String::new(),
                engine: String::new(),
                capabilities: Default::default(),
            },
            name: spec.name,
            pre,
            engine: runtime.engine().clone(),
            state,
            config: spec.config,
            limits: spec.limits,
            idle: Mutex::new(Vec::new()),
            slots: Semaphore::new(1),
            allowed,
            sha256,
        };
        let mut first = factory.instantiate().await?;
        let Reply::Info(info) = factory.guarded(&mut first, Op::Describe).await? else {
            unreachable!("describe answers with plugin info")
        };
        factory.info = info.into();
        if factory.info.capabilities.concurrent {
            factory.slots = Semaphore::new(factory.limits.max_instances.max(1));
        }
        factory.idle.get_mut().expect("idle lock").push(first);
        Ok(factory)
    }

    /// Instantiates (and `init`s) up to `n` more instances ahead of need, so a burst of calls
    /// (re-attaching a pool after failover) does not pay instantiation on its critical path.
    /// Returns how many instances are idle afterwards.
    pub async fn prewarm_instances(&self, n: usize) -> CallResult<usize> {
        let want = if self.info.capabilities.concurrent {
            n.min(self.limits.max_instances)
        } else {
            1
        };
        loop {
            let idle = self.idle.lock().expect("idle lock").len();
            if idle >= want {
                return Ok(idle);
            }
            let instance = self.instantiate().await?;
            self.idle.lock().expect("idle lock").push(instance);
        }
    }

    /// The operator-given name of this plugin.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The `keepwarm:factory` version the plugin was built against.
    pub fn contract(&self) -> &'static str {
        self.pre.contract()
    }

    /// The sha256 (hex) of the loaded file, to pin it with `[plugin] sha256`.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    fn deadline_ticks(&self) -> u64 {
        (self.limits.call_timeout.as_millis() / EPOCH_TICK.as_millis()) as u64 + 1
    }

    async fn instantiate(&self) -> CallResult<Instance> {
        let max_bytes = (self.limits.memory_mb as usize) << 20;
        let mut store = Store::new(
            &self.engine,
            HostState::new(
                self.outbound.clone(),
                (self.state.clone(), self.limits.state),
                max_bytes,
            ),
        );
        store.limiter(|s| &mut s.cap);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(self.deadline_ticks());
        let timeout = self.limits.call_timeout;
        let instantiated = async {
            match &self.pre {
                Prepared::V0_2(pre) => pre.instantiate_async(&mut store).await.map(Bound::V0_2),
                Prepared::V0_1(pre) => pre.instantiate_async(&mut store).await.map(Bound::V0_1),
            }
        };
        let bindings = match tokio::time::timeout(timeout, instantiated).await {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => {
                return Err(PluginError::Instantiate {
                    plugin: self.name.clone(),
                    reason: format!("{e:#}"),
                }
                .into())
            }
            Err(_) => {
                return Err(PluginError::Timeout {
                    plugin: self.name.clone(),
                    operation: "instantiate",
                    limit_ms: timeout.as_millis() as u64,
                }
                .into())
            }
        };
        let mut instance = Instance { store, bindings };
        let result = tokio::time::timeout(timeout, instance.init(&self.config))
            .await
            .map_err(|_| PluginError::Timeout {
                plugin: self.name.clone(),
                operation: "init",
                limit_ms: timeout.as_millis() as u64,
            })?;
        match result {
            Ok(Ok(())) => Ok(instance),
            Ok(Err(e)) => Err(CallError::Factory {
                plugin: self.name.clone(),
                operation: "init",
                error: e.into(),
            }),
            Err(trap) => Err(self.fault("init", &instance, trap).into()),
        }
    }

    /// Runs one operation on `instance` under the deadline; classifies what went wrong.
    async fn guarded(&self, instance: &mut Instance, op: Op) -> CallResult<Reply> {
        let operation = op.name();
        instance.store.set_epoch_deadline(self.deadline_ticks());
        instance.store.data_mut().cap.hit = false;
        let started = std::time::Instant::now();
        let result = match tokio::time::timeout(self.limits.call_timeout, instance.invoke(op)).await
        {
            Err(_) => Err(PluginError::Timeout {
                plugin: self.name.clone(),
                operation,
                limit_ms: self.limits.call_timeout.as_millis() as u64,
            }),
            Ok(Err(trap)) => Err(self.fault(operation, instance, trap)),
            Ok(Ok(Err(e))) => Ok(Err(CallError::Factory {
                plugin: self.name.clone(),
                operation,
                error: e.into(),
            })),
            Ok(Ok(Ok(reply))) => Ok(Ok(reply)),
        };
        let fault = match &result {
            Ok(Ok(_)) => None,
            Ok(Err(_)) => Some("factory_error"),
            Err(PluginError::Timeout { .. }) => Some("timeout"),
            Err(PluginError::MemoryCap { .. }) => Some("memory_cap"),
            Err(_) => Some("trap"),
        };
        crate::metrics::global().plugin_call(&self.name, operation, started.elapsed(), fault);
        result.unwrap_or_else(|fault| Err(fault.into()))
    }

    fn fault(
        &self,
        operation: &'static str,
        instance: &Instance,
        err: wasmtime::Error,
    ) -> PluginError {
        let plugin = self.name.clone();
        if instance.store.data().cap.hit {
            return PluginError::MemoryCap {
                plugin,
                operation,
                limit_mb: self.limits.memory_mb,
            };
        }
        if err.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
            return PluginError::Timeout {
                plugin,
                operation,
                limit_ms: self.limits.call_timeout.as_millis() as u64,
            };
        }
        let reason = match err.downcast_ref::<Trap>() {
            Some(trap) => trap.to_string(),
            None => err.root_cause().to_string(),
        };
        PluginError::Trap {
            plugin,
            operation,
            reason,
        }
    }

    /// Takes an instance, runs `op`, and returns the instance to the idle set unless the call
    /// faulted (a factory-error is a normal answer: the instance is fine).
    async fn call(&self, op: Op) -> CallResult<Reply> {
        let _slot = self.slots.acquire().await.expect("semaphore never closed");
        let idle = self.idle.lock().expect("idle lock").pop();
        let mut instance = match idle {
            Some(i) => i,
            None => self.instantiate().await?,
        };
        let result = self.guarded(&mut instance, op).await;
        match &result {
            Err(CallError::Fault(fault)) => {
                tracing::warn!(plugin = %self.name, "discarding plugin instance: {fault}");
            }
            _ => self.idle.lock().expect("idle lock").push(instance),
        }
        result
    }
}

impl WasmFactory {
    /// `c` with an address the host may send code and parameters to; else the container is
    /// destroyed and the call fails naming the address (see [`super::address`]).
    async fn admitted(&self, operation: &'static str, mut c: Container) -> CallResult<Container> {
        match self.allowed.admit(&c.address).await {
            Ok(address) => {
                c.address = address;
                Ok(c)
            }
            Err(reason) => {
                let error = PluginError::Address {
                    plugin: self.name.clone(),
                    operation,
                    container: c.id.clone(),
                    reason,
                };
                tracing::error!("{error}; destroying the container");
                if let Err(e) = self.destroy(&c.id).await {
                    tracing::warn!(container = %c.id, "destroying it failed: {e}");
                }
                Err(error.into())
            }
        }
    }
}

fn unexpected(op: &str) -> ! {
    unreachable!("{op} answered with the wrong reply shape")
}

#[async_trait::async_trait]
impl ContainerFactory for WasmFactory {
    fn info(&self) -> PluginInfo {
        self.info.clone()
    }

    async fn create(&self, spec: ContainerSpec) -> CallResult<Container> {
        match self.call(Op::Create(spec.into())).await? {
            Reply::Container(c) => self.admitted("create", c.into()).await,
            _ => unexpected("create"),
        }
    }

    async fn attach(&self, known: Container) -> CallResult<Container> {
        match self.call(Op::Attach(known.into())).await? {
            Reply::Container(c) => self.admitted("attach", c.into()).await,
            _ => unexpected("attach"),
        }
    }

    async fn list_containers(&self, labels: Pairs) -> CallResult<Vec<Container>> {
        match self.call(Op::List(labels)).await? {
            Reply::Containers(cs) => {
                // every address at once: N host names that do not resolve cost one deadline
                let admitted = cs.into_iter().map(|c| async move {
                    let mut c: Container = c.into();
                    if c.address.is_empty() {
                        // not started yet (one being created): nothing to admit
                        return c;
                    }
                    // Listed, not used: one outside the list keeps no address, so nothing is
                    // ever sent there (reconcile destroys it as an orphan, or attach refuses it).
                    match self.allowed.admit(&c.address).await {
                        Ok(address) => c.address = address,
                        Err(reason) => {
                            tracing::error!(plugin = %self.name, container = %c.id, "list-containers: {reason}");
                            c.address = String::new();
                        }
                    }
                    c
                });
                Ok(futures::future::join_all(admitted).await)
            }
            _ => unexpected("list-containers"),
        }
    }

    async fn pause(&self, id: &str) -> CallResult<()> {
        self.call(Op::Pause(id.to_owned())).await.map(|_| ())
    }

    async fn resume(&self, id: &str) -> CallResult<()> {
        self.call(Op::Resume(id.to_owned())).await.map(|_| ())
    }

    async fn destroy(&self, id: &str) -> CallResult<()> {
        self.call(Op::Destroy(id.to_owned())).await.map(|_| ())
    }

    async fn logs(&self, id: &str, since_ms: u64, max_bytes: u32) -> CallResult<String> {
        match self
            .call(Op::Logs(id.to_owned(), since_ms, max_bytes))
            .await?
        {
            Reply::Text(t) => Ok(t),
            _ => unexpected("logs"),
        }
    }
}
