//! Failures of the plugin runtime itself, as opposed to an engine's `factory-error`.

use std::path::PathBuf;

/// A plugin failed to load, or a call failed inside the sandbox.
///
/// Every variant names the plugin (or file) and, for calls, the operation, so an operator
/// reading one log line knows which engine and which step went wrong.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("cannot load plugin {file}: {reason}")]
    Load { file: PathBuf, reason: String },
    #[error("plugin `{plugin}` failed to instantiate: {reason}")]
    Instantiate { plugin: String, reason: String },
    #[error("plugin `{plugin}` trapped in `{operation}`: {reason}")]
    Trap {
        plugin: String,
        operation: &'static str,
        reason: String,
    },
    #[error("plugin `{plugin}` exceeded its {limit_ms} ms deadline in `{operation}`")]
    Timeout {
        plugin: String,
        operation: &'static str,
        limit_ms: u64,
    },
    #[error("plugin `{plugin}` hit its {limit_mb} MiB memory cap in `{operation}`")]
    MemoryCap {
        plugin: String,
        operation: &'static str,
        limit_mb: u64,
    },
    #[error("plugin `{plugin}` returned a container address the host may not use from `{operation}` (container {container}): {reason}")]
    Address {
        plugin: String,
        operation: &'static str,
        container: String,
        reason: String,
    },
    #[error("plugin `{plugin}`: invalid route `{name} = {target}`: {reason}")]
    Route {
        plugin: String,
        name: String,
        target: String,
        reason: String,
    },
}

impl From<PluginError> for crate::factory::CallError {
    fn from(error: PluginError) -> Self {
        crate::factory::CallError::Fault(crate::factory::Fault::new(error))
    }
}
