//! Helpers shared by keepwarm's integration tests and benchmarks: building and finding the
//! plugin components, loading them, a tiny HTTP client for action proxies, and fake engine
//! endpoints on unix sockets.

pub mod chaos;
pub mod cluster;
pub mod components;
pub mod couchdb;
pub mod docker_sim;
pub mod engine;
pub mod host;
pub mod kafka;
pub mod mesos;
pub mod native;
pub mod netbed;
pub mod pipeline;
pub mod proxy;
pub mod stats;
pub mod upgrade;

pub use components::{component, keepwarm_bin, load, load_with, runtime, spec};

/// Polls `ready` every 20 ms until it gives a value and returns it; after `within`, panics
/// with what was awaited (`what`, computed only then: it may read logs and status).
pub fn eventually<T>(
    within: std::time::Duration,
    what: impl FnOnce() -> String,
    mut ready: impl FnMut() -> Option<T>,
) -> T {
    let start = std::time::Instant::now();
    loop {
        if let Some(value) = ready() {
            return value;
        }
        if start.elapsed() >= within {
            panic!("not within {within:?}: {}", what());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
