//! keepwarm: a highly available, OpenWhisk-compatible invoker host whose container engines are
//! WebAssembly components.
//!
//! - [`factory`]: the [`factory::ContainerFactory`] trait the host uses for engines;
//! - [`plugin`]: the wasmtime runtime that loads engine plugins behind that trait;
//! - [`cli`]: the `keepwarm` command line.

pub mod cli;
pub mod factory;
pub mod plugin;
