//! One factory conformance suite, run against every factory plugin on its real engine.
//!
//! Adding a factory is one line at the bottom: `conformance!(module, "component", "route
//! name", "engine socket");`. The engine is reached through a [`Relay`] so the suite can take
//! the engine away mid-test (connections cut and refused, exactly what a plugin sees when a
//! daemon stops) without stopping the daemon other tests share.

use keepwarm::factory::{CallError, ContainerFactory, ContainerSpec, ContainerState, FactoryError};
use keepwarm::plugin::WasmFactory;
use keepwarm_tests::engine::Relay;
use keepwarm_tests::proxy::{init_script, run_body, ProxyClient, ECHO_ACTION};
use keepwarm_tests::{component, load_with, spec};
use std::path::Path;
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

fn factory_error<T: std::fmt::Debug>(r: Result<T, CallError>) -> FactoryError {
    match r {
        Err(CallError::Factory { error, .. }) => error,
        other => panic!("expected a factory error, got {other:?}"),
    }
}

/// The whole life of a container through one plugin, and a second plugin instance adopting it.
pub async fn lifecycle(stem: &str, route: &str, socket: &str) {
    let relay = Relay::new(Path::new(socket));
    let factory = load_plugin(stem, route, &relay.route()).await;
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
    let standby = load_plugin(stem, route, &relay.route()).await;
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

    // logs carry the activation's output and the sentinel
    let logs = factory.logs(&created.id, 0, 1 << 20).await.unwrap();
    assert!(logs.contains("log line from the action"), "{logs}");
    assert!(
        logs.contains("XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX"),
        "{logs}"
    );
    let cut = factory.logs(&created.id, 0, 10).await.unwrap();
    assert!(cut.len() <= 10, "{cut:?}");

    // destroy → gone from the list, attach says not-found
    factory.destroy(&created.id).await.unwrap();
    assert!(factory.list_containers(labels).await.unwrap().is_empty());
    assert!(matches!(
        factory_error(standby.attach(created.clone()).await),
        FactoryError::NotFound(_)
    ));
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

macro_rules! conformance {
    ($module:ident, $stem:literal, $route:literal, $socket:literal) => {
        mod $module {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn lifecycle() {
                super::lifecycle($stem, $route, $socket).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn errors() {
                super::errors($stem, $route, $socket).await;
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
