//! The one trait the rest of the host sees for container engines.
//!
//! The pool, failover and the CLI talk to [`ContainerFactory`]; the WebAssembly plugin runtime
//! in [`crate::plugin`] is one implementation of it. The types mirror the WIT contract in
//! `wit/factory.wit` but are plain Rust, serializable, and free of wasmtime.

use serde::{Deserialize, Serialize};

/// Ordered key/value pairs (environment, labels, plugin config).
pub type Pairs = Vec<(String, String)>;

/// The label every container keepwarm creates carries, valued with the cluster's name
/// (`[invoker] cluster`): what a host lists to find its containers.
pub const CLUSTER_LABEL: &str = "keepwarm.cluster";

/// The labels that select the containers of `cluster`.
pub fn cluster_labels(cluster: &str) -> Pairs {
    vec![(CLUSTER_LABEL.to_owned(), cluster.to_owned())]
}

/// What the host asks an engine to create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    pub memory_mb: u32,
    #[serde(default)]
    pub cpu_shares: Option<u32>,
    #[serde(default)]
    pub env: Pairs,
    #[serde(default)]
    pub labels: Pairs,
    #[serde(default)]
    pub network: Option<String>,
    /// Port of the action proxy inside the container (8080 for OpenWhisk runtimes).
    #[serde(default = "default_port")]
    pub port: u16,
}

fn default_port() -> u16 {
    8080
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ContainerState {
    Creating,
    Running,
    Paused,
    Stopped,
    #[default]
    Unknown,
}

/// A container as its engine reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    pub id: String,
    #[serde(default)]
    pub name: String,
    /// `host:port` of the action proxy.
    #[serde(default)]
    pub address: String,
    #[serde(default)]
    pub state: ContainerState,
    #[serde(default)]
    pub labels: Pairs,
    /// Opaque plugin data, stored and replicated by the host and handed back to `attach`.
    #[serde(default)]
    pub handle: String,
}

/// For tests (the unit tests, and the tests crate through the `testing` feature).
#[cfg(any(test, feature = "testing"))]
impl Container {
    /// A running container `id` (named the same) whose proxy answers nowhere.
    pub fn sample(id: &str) -> Container {
        Container {
            id: id.into(),
            name: id.into(),
            address: "127.0.0.1:1".into(),
            state: ContainerState::Running,
            labels: Vec::new(),
            handle: String::new(),
        }
    }
}

/// A failure the engine or plugin reports on purpose (the WIT `factory-error`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "message")]
pub enum FactoryError {
    #[error("not found: {0}")]
    NotFound(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    #[error("image missing: {0}")]
    ImageMissing(String),
    #[error("no capacity: {0}")]
    Capacity(String),
    #[error("engine unavailable: {0}")]
    Unavailable(String),
    #[error("engine error: {0}")]
    Engine(String),
}

/// What a plugin can do beyond the mandatory operations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Capabilities {
    pub pause: bool,
    pub logs: bool,
    /// Containers are reachable from every host of the cluster.
    pub cluster_wide: bool,
    /// Several instances may call the engine at once.
    pub concurrent: bool,
}

/// A plugin's `describe()`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginInfo {
    pub name: String,
    pub version: String,
    pub engine: String,
    pub capabilities: Capabilities,
}

/// The implementation of a factory failed, rather than the engine answering: e.g. a plugin
/// trapped, ran past its deadline or memory cap, or broke a sandbox rule. The host treats
/// every such fault alike (the call failed, the engine's state is unknown); the
/// implementation's own error is kept inside for logs and for its own tests.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct Fault(Box<dyn std::error::Error + Send + Sync>);

impl Fault {
    pub fn new(error: impl std::error::Error + Send + Sync + 'static) -> Fault {
        Fault(Box::new(error))
    }

    /// The implementation's error, when it is a `T`.
    pub fn downcast<T: std::error::Error + 'static>(self) -> Result<T, Fault> {
        self.0.downcast::<T>().map(|e| *e).map_err(Fault)
    }
}

/// Why a factory call failed: the engine said no, or the factory itself failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("{plugin}.{operation}: {error}")]
    Factory {
        plugin: String,
        operation: &'static str,
        error: FactoryError,
    },
    #[error(transparent)]
    Fault(#[from] Fault),
    /// This host's lease lapsed: the call was refused before it reached the engine.
    #[error("{operation} refused: this host no longer holds the lease")]
    Fenced { operation: &'static str },
}

impl CallError {
    /// The engine's own answer, when the call got one.
    pub fn factory_error(&self) -> Option<&FactoryError> {
        match self {
            CallError::Factory { error, .. } => Some(error),
            CallError::Fault(_) | CallError::Fenced { .. } => None,
        }
    }
}

pub type CallResult<T> = Result<T, CallError>;

/// A container engine as the host uses it.
#[async_trait::async_trait]
pub trait ContainerFactory: Send + Sync + std::fmt::Debug {
    /// What the plugin's `describe` said (the running build's, for a swapped plugin).
    fn info(&self) -> PluginInfo;
    async fn create(&self, spec: ContainerSpec) -> CallResult<Container>;
    async fn attach(&self, known: Container) -> CallResult<Container>;
    async fn list_containers(&self, labels: Pairs) -> CallResult<Vec<Container>>;
    async fn pause(&self, id: &str) -> CallResult<()>;
    async fn resume(&self, id: &str) -> CallResult<()>;
    async fn destroy(&self, id: &str) -> CallResult<()>;
    async fn logs(&self, id: &str, since_ms: u64, max_bytes: u32) -> CallResult<String>;
}
