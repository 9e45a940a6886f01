//! The plugin runtime: container engines as sandboxed WebAssembly components.
//!
//! - [`engine`]: the wasmtime engine, linker, epoch ticker and compiled-component cache;
//! - [`factory`]: [`WasmFactory`], a loaded plugin behind the [`crate::factory::ContainerFactory`]
//!   trait, with its instance pool, deadlines and memory cap;
//! - [`address`]: where the host lets a plugin's containers be (`allowed-addresses`);
//! - [`route`]: outbound HTTP routed by authority to unix sockets, TCP or TLS endpoints;
//! - [`host`]: what each instance's store holds; [`state`]: the plugin's key-value `state`;
//! - [`bindings`] / [`convert`]: the generated WIT bindings and their mapping to host types.

pub mod address;
pub mod bindings;
mod convert;
pub mod engine;
mod error;
pub mod factory;
mod host;
pub mod hot;
pub mod route;
pub mod state;

pub use engine::{PluginRuntime, Priority};
pub use error::PluginError;
pub use factory::{Limits, PluginSpec, WasmFactory};
pub use hot::{HotPlugin, PluginVersions, Swap};
pub use route::RouteTls;
pub use state::{FileState, MemoryState, PluginState, StateLimits, StateUsage, StoredValue};
