//! One factory conformance suite, run against every factory plugin on its real engine.
//!
//! Adding a factory is one line at the bottom: `conformance!(module, "component", "route
//! name", engine);` where the engine is a daemon's socket path or something started for the
//! test (the Mesos master simulator). The engine is reached through a [`Relay`] so the suite
//! can take the engine away mid-test (connections cut and refused, exactly what a plugin sees
//! when a daemon stops) without stopping the daemon other tests share. Pause and logs are
//! checked where the plugin declares them; where it does not, they must fail cleanly.

use keepwarm::factory::{CallError, ContainerFactory, ContainerSpec, ContainerState, FactoryError};
use keepwarm::plugin::{MemoryState, WasmFactory};
use keepwarm_tests::engine::Relay;
use keepwarm_tests::mesos::{MesosMaster, Options};
use keepwarm_tests::proxy::{init_script, run_body, ProxyClient, ECHO_ACTION};
use keepwarm_tests::{component, load_with, runtime, spec};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const IMAGE: &str = "keepwarm/action-runtime:latest";
const READY: Duration = Duration::from_secs(10);

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

async fn load_plugin(stem: &str, route: &str, endpoint: &str) -> Arc<WasmFactory> {
    load_with(spec(stem, component(stem), &[(route, endpoint)])).await
}

/// A plugin instance whose `state` is `state`: what a standby host's instance sees of the
/// active one's state in a cluster, which replicates it.
async fn load_sharing(
    stem: &str,
    route: &str,
    endpoint: &str,
    state: Arc<MemoryState>,
) -> Arc<WasmFactory> {
    let spec = spec(stem, component(stem), &[(route, endpoint)]);
    Arc::new(
        WasmFactory::load_with_state(runtime(), spec, state)
            .await
            .unwrap(),
    )
}

fn factory_error<T: std::fmt::Debug>(r: Result<T, CallError>) -> FactoryError {
    match r {
        Err(CallError::Factory { error, .. }) => error,
        other => panic!("expected a factory error, got {other:?}"),
    }
}

/// The whole life of a container through one plugin, and a second plugin instance adopting it.
pub async fn lifecycle(stem: &str, route: &str, socket: &str) {
    let relay = Relay::new(Path::new(socket));
    let state = Arc::new(MemoryState::default());
    let factory = load_sharing(stem, route, &relay.route(), state.clone()).await;
    let run = unique(stem);
    let proxy = ProxyClient::default();

    // create → the action proxy answers /init and /run at the returned address
    let created = factory
        .create(container_spec(&run, &run, IMAGE))
        .await
        .unwrap();
    assert_eq!(created.state, ContainerState::Running);
    assert!(
        created.address.starts_with("127.0.0.1:"),
        "{}",
        created.address
    );
    let (status, _) = proxy
        .post_ready(&created.address, "/init", &init_script(ECHO_ACTION), READY)
        .await
        .unwrap();
    assert_eq!(status, 200);
    let (status, result) = proxy
        .post(
            &created.address,
            "/run",
            &run_body(serde_json::json!({"n": 1}), "a1"),
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(result, serde_json::json!({"echo": {"n": 1}}));

    // list-containers finds it by label
    let labels = vec![("keepwarm.test-run".to_string(), run.clone())];
    let listed = factory.list_containers(labels.clone()).await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].id, created.id);
    assert_eq!(listed[0].address, created.address);

    // a fresh plugin instance (as a standby host has) attaches it at the same address
    let standby = load_sharing(stem, route, &relay.route(), state).await;
    let mut known = created.clone();
    known.address.clear();
    let attached = standby.attach(known).await.unwrap();
    assert_eq!(attached.id, created.id);
    assert_eq!(attached.address, created.address);
    assert_eq!(attached.state, ContainerState::Running);
    let (status, _) = proxy
        .post(
            &attached.address,
            "/run",
            &run_body(serde_json::json!({"n": 2}), "a2"),
        )
        .await
        .unwrap();
    assert_eq!(status, 200);

    let capabilities = factory.info().capabilities;
    if capabilities.pause {
        // pause / resume
        factory.pause(&created.id).await.unwrap();
        let listed = factory.list_containers(labels.clone()).await.unwrap();
        assert_eq!(listed[0].state, ContainerState::Paused);
        factory.resume(&created.id).await.unwrap();
        let (status, _) = proxy
            .post(
                &created.address,
                "/run",
                &run_body(serde_json::json!({"n": 3}), "a3"),
            )
            .await
            .unwrap();
        assert_eq!(status, 200);
        // attach resumes a paused container
        factory.pause(&created.id).await.unwrap();
        let attached = standby.attach(created.clone()).await.unwrap();
        assert_eq!(attached.state, ContainerState::Running);
    } else {
        // an engine without pause says so, and the container keeps running
        assert!(matches!(
            factory_error(factory.pause(&created.id).await),
            FactoryError::Engine(_)
        ));
        let listed = factory.list_containers(labels.clone()).await.unwrap();
        assert_eq!(listed[0].state, ContainerState::Running);
    }

    if capabilities.logs {
        // logs carry the activation's output and the sentinel
        let logs = factory.logs(&created.id, 0, 1 << 20).await.unwrap();
        assert!(logs.contains("log line from the action"), "{logs}");
        assert!(
            logs.contains("XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX"),
            "{logs}"
        );
        let cut = factory.logs(&created.id, 0, 10).await.unwrap();
        assert!(cut.len() <= 10, "{cut:?}");
    } else {
        assert!(matches!(
            factory_error(factory.logs(&created.id, 0, 100).await),
            FactoryError::Engine(_)
        ));
    }

    // destroy → gone from the list, attach says not-found
    factory.destroy(&created.id).await.unwrap();
    assert!(factory.list_containers(labels).await.unwrap().is_empty());
    let gone = factory_error(standby.attach(created.clone()).await);
    assert!(matches!(gone, FactoryError::NotFound(_)), "{gone:?}");
    assert!(matches!(
        factory_error(factory.destroy(&created.id).await),
        FactoryError::NotFound(_)
    ));
}

/// Engine errors: a missing image, an unknown id, and the engine going away and coming back.
pub async fn errors(stem: &str, route: &str, socket: &str) {
    let mut relay = Relay::new(Path::new(socket));
    let factory = load_plugin(stem, route, &relay.route()).await;
    let run = unique(stem);

    let missing = factory
        .create(container_spec(&run, &run, "keepwarm/no-such-image:1"))
        .await;
    assert_eq!(
        factory_error(missing),
        FactoryError::ImageMissing("keepwarm/no-such-image:1".into())
    );
    for r in [
        factory.destroy("keepwarm-no-such-container").await,
        factory.pause("keepwarm-no-such-container").await,
    ] {
        assert!(matches!(factory_error(r), FactoryError::NotFound(_)));
    }
    let logs = factory.logs("keepwarm-no-such-container", 0, 100).await;
    assert!(matches!(factory_error(logs), FactoryError::NotFound(_)));

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
    ($module:ident, $stem:literal, $route:literal, $engine:expr) => {
        mod $module {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn lifecycle() {
                let engine = $engine;
                let socket = engine.socket();
                super::lifecycle($stem, $route, socket.to_str().unwrap()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn errors() {
                let engine = $engine;
                let socket = engine.socket();
                super::errors($stem, $route, socket.to_str().unwrap()).await;
            }
        }
    };
}

conformance!(docker, "keepwarm_docker", "docker", "/var/run/docker.sock");
conformance!(
    podman,
    "keepwarm_podman",
    "podman",
    "/run/podman/podman.sock"
);
conformance!(mesos, "keepwarm_mesos", "mesos", mesos_master().await);
