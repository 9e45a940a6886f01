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
        path: "../../wit",
        world: "container-factory",
        pub_export_macro: true,
        export_macro_name: "export",
        default_bindings_module: "keepwarm_plugin_sdk::bindings",
        generate_all,
    });
}

pub mod engine;
pub mod http;

pub use bindings::exports::keepwarm::factory::factory::Guest as Factory;
pub use bindings::keepwarm::factory::state;
pub use bindings::keepwarm::factory::types::{
    Capabilities, Container, ContainerSpec, ContainerState, FactoryError, Pairs, PluginInfo,
};

/// Exports a type implementing [`Factory`] as this component's `keepwarm:factory/factory`.
#[macro_export]
macro_rules! export {
    ($ty:ident) => {
        $crate::bindings::export!($ty);
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
