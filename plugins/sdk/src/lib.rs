//! # keepwarm-plugin-sdk
//!
//! Everything a keepwarm container-factory plugin needs:
//!
//! - the bindings of `keepwarm:factory/container-factory@0.2.0`, generated from the same
//!   `wit/` tree the host uses ([`Factory`] to implement, the types, [`state`]);
//! - [`export!`], which exports your implementation as the component's `factory`;
//! - [`http`], a small blocking HTTP client over `wasi:http` with JSON helpers and engine
//!   status codes mapped to [`FactoryError`].
//!
//! ```ignore
//! use keepwarm_plugin_sdk::{export, Factory, FactoryError, PluginInfo, Capabilities, ...};
//! struct MyEngine;
//! impl Factory for MyEngine { /* describe, init, create, attach, ... */ }
//! export!(MyEngine);
//! ```
//!
//! See `plugins/sdk/README.md` for the walk from `cargo new` to a working plugin.

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "container-factory",
        pub_export_macro: true,
        export_macro_name: "export",
        default_bindings_module: "keepwarm_plugin_sdk::bindings",
        generate_all,
    });
}

pub mod engine;
pub mod http;

pub use bindings::keepwarm::factory::state;
pub use bindings::keepwarm::factory::types::{
    Capabilities, Container, ContainerSpec, ContainerState, FactoryError, Pairs, PluginInfo,
};
/// The JSON crate the SDK's helpers use, for plugins that build or read JSON bodies.
pub use serde_json;

/// A container engine as the keepwarm host calls it: the contract's `factory` interface
/// (`wit/factory.wit` says what each function must do). `describe`, `init`, `create`,
/// `attach`, `list_containers` and `destroy` are yours to write; `pause`, `resume` and `logs`
/// have defaults for an engine without them — an `engine` error naming the operation, what
/// the host expects of a plugin that does not declare the `pause` or `logs` capability.
pub trait Factory {
    /// What the plugin is and can do; called after `init`, on the same instance.
    fn describe() -> PluginInfo;
    /// Reads the operator's config and checks the engine. Runs on every new instance (the
    /// host starts several, and replaces one after a trap), so it must be idempotent.
    fn init(config: Pairs) -> Result<(), FactoryError>;
    /// Creates and starts a container; returns it running, at the action proxy's address.
    fn create(spec: ContainerSpec) -> Result<Container, FactoryError>;
    /// Adopts a container another instance (or host) created: its current address and
    /// state; a paused container is resumed; `not-found` when it is gone.
    fn attach(known: Container) -> Result<Container, FactoryError>;
    /// The containers carrying every one of `labels`.
    fn list_containers(labels: Pairs) -> Result<Vec<Container>, FactoryError>;
    /// Removes a container; `not-found` when there is none (a second destroy).
    fn destroy(id: String) -> Result<(), FactoryError>;

    /// Default: `engine("ID: this engine cannot pause")`.
    fn pause(id: String) -> Result<(), FactoryError> {
        Err(FactoryError::Engine(format!(
            "{id}: this engine cannot pause"
        )))
    }
    /// Default: `engine("ID: this engine cannot resume")`.
    fn resume(id: String) -> Result<(), FactoryError> {
        Err(FactoryError::Engine(format!(
            "{id}: this engine cannot resume"
        )))
    }
    /// Default: `engine("ID: this engine keeps no logs")`.
    fn logs(id: String, since_ms: u64, max_bytes: u32) -> Result<String, FactoryError> {
        let _ = (since_ms, max_bytes);
        Err(FactoryError::Engine(format!(
            "{id}: this engine keeps no logs"
        )))
    }
}

/// The component's export for a [`Factory`]: what [`export!`] hands to the bindings.
#[doc(hidden)]
pub struct Exported<T>(std::marker::PhantomData<T>);

impl<T: Factory> bindings::exports::keepwarm::factory::factory::Guest for Exported<T> {
    fn describe() -> PluginInfo {
        T::describe()
    }
    fn init(config: Pairs) -> Result<(), FactoryError> {
        T::init(config)
    }
    fn create(spec: ContainerSpec) -> Result<Container, FactoryError> {
        T::create(spec)
    }
    fn attach(known: Container) -> Result<Container, FactoryError> {
        T::attach(known)
    }
    fn list_containers(labels: Pairs) -> Result<Vec<Container>, FactoryError> {
        T::list_containers(labels)
    }
    fn pause(id: String) -> Result<(), FactoryError> {
        T::pause(id)
    }
    fn resume(id: String) -> Result<(), FactoryError> {
        T::resume(id)
    }
    fn destroy(id: String) -> Result<(), FactoryError> {
        T::destroy(id)
    }
    fn logs(id: String, since_ms: u64, max_bytes: u32) -> Result<String, FactoryError> {
        T::logs(id, since_ms, max_bytes)
    }
}

/// Exports a type implementing [`Factory`] as this component's `keepwarm:factory/factory`.
#[macro_export]
macro_rules! export {
    ($ty:ident) => {
        type __KeepwarmExported = $crate::Exported<$ty>;
        $crate::bindings::export!(__KeepwarmExported);
    };
}

/// Looks a key up in `init`'s config pairs.
pub fn config_value<'a>(config: &'a Pairs, key: &str) -> Option<&'a str> {
    config
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Looks a label up in a container's or spec's labels.
pub fn label<'a>(labels: &'a Pairs, key: &str) -> Option<&'a str> {
    config_value(labels, key)
}
