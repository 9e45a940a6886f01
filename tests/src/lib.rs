//! Helpers shared by keepwarm's integration tests and benchmarks: building and finding the
//! plugin components, loading them, a tiny HTTP client for action proxies, and fake engine
//! endpoints on unix sockets.

pub mod chaos;
pub mod cluster;
pub mod components;
pub mod couchdb;
pub mod engine;
pub mod host;
pub mod kafka;
pub mod mesos;
pub mod proxy;
pub mod stats;

pub use components::{component, keepwarm_bin, load, load_with, runtime, spec};
