//! What `keepwarm plugin check` (see `plugin_check.rs`) cannot do on a shared engine: take the
//! engine away mid-run. Each plugin reaches its real engine through a [`Relay`] that the test
//! stops (connections cut and refused, exactly what a plugin sees when a daemon stops) without
//! stopping the daemon other tests share; calls must fail as `unavailable`, and the same plugin
//! instance must work again once the engine is back.
//!
//! Adding a factory is one line at the bottom: `conformance!(module, component file, "route
//! name", engine);` where the engine is a daemon's socket path or something started for the
//! test (the Mesos master simulator).

use keepwarm::factory::{CallError, ContainerFactory, ContainerSpec, FactoryError};
use keepwarm::plugin::WasmFactory;
use keepwarm_tests::components::python_component;
use keepwarm_tests::engine::Relay;
use keepwarm_tests::mesos::{MesosMaster, Options};
use keepwarm_tests::{component, load_with, spec};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const IMAGE: &str = "keepwarm/action-runtime:latest";

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{}", std::process::id(), nanos % 1_000_000_000)
}

fn container_spec(name: &str, run: &str, image: &str) -> ContainerSpec {
    ContainerSpec {
        name: name.into(),
        image: image.into(),
        memory_mb: 128,
        cpu_shares: Some(256),
        env: vec![("__OW_API_HOST".into(), "http://127.0.0.1".into())],
        labels: vec![
            ("keepwarm.cluster".into(), "conformance".into()),
            ("keepwarm.test-run".into(), run.into()),
        ],
        network: None,
        port: 8080,
    }
}

async fn load_plugin(name: &str, file: PathBuf, route: &str, endpoint: &str) -> Arc<WasmFactory> {
    load_with(spec(name, file, &[(route, endpoint)])).await
}

fn factory_error<T: std::fmt::Debug>(r: Result<T, CallError>) -> FactoryError {
    match r {
        Err(CallError::Factory { error, .. }) => error,
        other => panic!("expected a factory error, got {other:?}"),
    }
}

/// The engine going away and coming back.
pub async fn engine_away(name: &str, file: PathBuf, route: &str, socket: &str) {
    let mut relay = Relay::new(Path::new(socket));
    let factory = load_plugin(name, file, route, &relay.route()).await;
    let run = unique(name);

    // the engine goes away: calls fail as unavailable, the host carries on
    let labels = vec![("keepwarm.test-run".to_string(), run.clone())];
    relay.stop();
    let down = factory.list_containers(labels.clone()).await;
    assert!(matches!(factory_error(down), FactoryError::Unavailable(_)));
    // ...and once it is back, the same plugin works again
    relay.start();
    let created = factory
        .create(container_spec(&run, &run, IMAGE))
        .await
        .unwrap();
    assert_eq!(factory.list_containers(labels).await.unwrap().len(), 1);
    factory.destroy(&created.id).await.unwrap();
}

/// What a conformance run talks to: a daemon that is already running, or one started for it.
trait Engine {
    fn socket(&self) -> PathBuf;
}

impl Engine for &str {
    fn socket(&self) -> PathBuf {
        PathBuf::from(self)
    }
}

impl Engine for MesosMaster {
    fn socket(&self) -> PathBuf {
        self.socket.clone()
    }
}

/// The simulated Mesos master, its agent running tasks as Docker containers.
async fn mesos_master() -> MesosMaster {
    MesosMaster::start(Options::default()).await
}

macro_rules! conformance {
    ($module:ident, $file:expr, $route:literal, $engine:expr) => {
        mod $module {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn engine_away() {
                let engine = $engine;
                let socket = engine.socket();
                let name = stringify!($module);
                super::engine_away(name, $file, $route, socket.to_str().unwrap()).await;
            }
        }
    };
}

conformance!(
    docker,
    component("keepwarm_docker"),
    "docker",
    "/var/run/docker.sock"
);
conformance!(
    podman,
    component("keepwarm_podman"),
    "podman",
    "/run/podman/podman.sock"
);
conformance!(
    mesos,
    component("keepwarm_mesos"),
    "mesos",
    mesos_master().await
);
conformance!(
    python_docker,
    python_component("docker"),
    "docker",
    "/var/run/docker.sock"
);
