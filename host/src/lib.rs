//! keepwarm: a highly available, OpenWhisk-compatible invoker host whose container engines are
//! WebAssembly components.
//!
//! Data flows one way: [`feed`] → [`activation`] → [`pool`] → [`factory`] / [`plugin`].
//!
//! - [`config`]: the TOML config; [`invoker`]: runs one host (single mode, or a cluster
//!   member through [`role`]: standby, takeover, active, stepping down); [`parts`]: what a
//!   host loads once and builds its pool, runner and feed from; [`lease`]: the active host's
//!   lease; [`data_dir`]: one process per data directory; [`clock`]: wall-clock milliseconds;
//!   [`pem`]: certificate and key files for TLS;
//! - [`cluster`]: Raft over HTTP, durable storage, the replicated state with epoch fencing;
//! - [`failover`]: becoming active: claim, reconcile, re-attach, replicate;
//! - [`fence`]: the lease enforced at the engine boundary and the action proxy;
//! - [`feed`]: Kafka consumer, acknowledgements, offsets, health pings;
//! - [`activation`]: OpenWhisk wire formats, the action proxy client, running one activation;
//! - [`action`]: action documents (a catalog directory or CouchDB), limits, encrypted
//!   parameters, the runtimes manifest; [`couchdb`]: the CouchDB HTTP client;
//! - [`activation_store`]: activation records to CouchDB, through a backlog on disk;
//! - [`pool`]: warm, prewarm and busy containers;
//! - [`factory`]: the [`factory::ContainerFactory`] trait the host uses for engines;
//!   [`engines`]: a host's several plugins as one factory, each container with its plugin;
//! - [`plugin`]: the wasmtime runtime that loads engine plugins behind that trait;
//! - [`cli`]: the `keepwarm` command line; `testing`: a native fake engine for the unit tests (built only for them).
//!
//! A module names only modules below it; `host/tests/layers.rs` lists the layers and fails
//! on an edge that runs upward.

pub mod action;
pub mod activation;
pub mod activation_store;
pub mod check;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod couchdb;
pub mod data_dir;
pub mod engines;
pub mod factory;
pub mod failover;
pub mod feed;
pub mod fence;
pub mod invoker;
pub mod json_file;
pub mod lease;
pub mod metrics;
pub mod parts;
pub mod pem;
pub mod plugin;
pub mod pool;
pub mod quarantine;
pub mod role;
pub mod rollout;
pub mod service;
pub mod step_down;
pub mod telemetry;
/// For the unit tests and (feature `testing`) the tests crate: it does not ship in a release.
#[cfg(any(test, feature = "testing"))]
pub mod testing;
