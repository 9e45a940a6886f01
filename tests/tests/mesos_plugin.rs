//! The Mesos plugin's own behaviour beyond the conformance suite, against the simulator:
//! redirects to the leading master, capacity, acknowledgements, lost agents, a silent
//! (partitioned) subscription, and its settings.

use keepwarm::factory::{CallError, ContainerFactory, ContainerSpec, FactoryError};
use keepwarm::plugin::{MemoryState, PluginState, WasmFactory};
use keepwarm_tests::mesos::{MesosMaster, Options};
use keepwarm_tests::proxy::{init_script, ProxyClient, ECHO_ACTION};
use keepwarm_tests::{component, runtime, spec};
use std::sync::Arc;
use std::time::Duration;

const STEM: &str = "keepwarm_mesos";

async fn plugin(
    routes: &[(&str, &str)],
    config: &[(&str, &str)],
) -> Result<WasmFactory, CallError> {
    plugin_with(routes, config, Arc::new(MemoryState::default())).await
}

async fn plugin_with(
    routes: &[(&str, &str)],
    config: &[(&str, &str)],
    state: Arc<MemoryState>,
) -> Result<WasmFactory, CallError> {
    let mut s = spec(STEM, component(STEM), routes);
    s.config = config
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    WasmFactory::load_with_state(runtime(), s, state).await
}

fn container(name: &str, memory_mb: u32) -> ContainerSpec {
    ContainerSpec {
        name: name.into(),
        image: "keepwarm/action-runtime:latest".into(),
        memory_mb,
        cpu_shares: Some(128),
        env: Vec::new(),
        labels: vec![("keepwarm.test".into(), name.into())],
        network: None,
        port: 8080,
    }
}

fn factory_error<T: std::fmt::Debug>(r: Result<T, CallError>) -> FactoryError {
    match r {
        Err(CallError::Factory { error, .. }) => error,
        other => panic!("expected a factory error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_a_redirect_to_the_leading_master() {
    let master = MesosMaster::start(Options::default()).await;
    let (standby, _task) = MesosMaster::standby_for(&master).await;
    let standby = format!("http://{standby}");
    let leader = format!("http://{}", master.addr);
    // The operator routes the masters it trusts; the redirect may only lead to one of them.
    let f = plugin(&[("mesos", &standby), ("mesos-2", &leader)], &[])
        .await
        .unwrap();
    let created = f.create(container("redirected", 64)).await.unwrap();
    let (status, _) = ProxyClient::default()
        .post_ready(
            &created.address,
            "/init",
            &init_script(ECHO_ACTION),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    f.destroy(&created.id).await.unwrap();

    // a redirect to a master nobody routed is refused, saying how to allow it
    let f = plugin(&[("mesos", &standby)], &[]).await.unwrap();
    let e = factory_error(f.create(container("nowhere", 64)).await);
    assert!(
        matches!(&e, FactoryError::Unavailable(m) if m.contains("not routed")),
        "{e:?}"
    );
    master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_when_no_offer_fits_in_time() {
    let master = MesosMaster::start(Options {
        mem: 512.0,
        ..Options::default()
    })
    .await;
    let f = plugin(&[("mesos", &master.route())], &[("offer-wait-ms", "400")])
        .await
        .unwrap();
    let e = factory_error(f.create(container("too-big", 4096)).await);
    assert!(
        matches!(&e, FactoryError::Capacity(m) if m.contains("4096 MB") && m.contains("512 MB")),
        "{e:?}"
    );
    // what fits still launches
    let ok = f.create(container("fits", 256)).await.unwrap();
    f.destroy(&ok.id).await.unwrap();
    master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_updates_are_acknowledged_and_unused_offers_declined() {
    let master = MesosMaster::start(Options::default()).await;
    let f = plugin(&[("mesos", &master.route())], &[("offer-hold-ms", "0")])
        .await
        .unwrap();
    let created = f.create(container("acked", 64)).await.unwrap();
    let tasks = master.tasks();
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].state, "TASK_RUNNING");
    assert_eq!(tasks[0].unacknowledged, 0, "{tasks:?}");
    assert!(
        created.handle.contains(&tasks[0].agent_id),
        "{}",
        created.handle
    );
    f.destroy(&created.id).await.unwrap();
    assert!(
        master.tasks().is_empty(),
        "the terminal update was acknowledged too"
    );
    master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_on_a_lost_agent_are_gone() {
    let master = MesosMaster::start(Options::default()).await;
    let f = plugin(&[("mesos", &master.route())], &[]).await.unwrap();
    let created = f.create(container("lost", 64)).await.unwrap();
    let agent = master.tasks()[0].agent_id.clone();
    master.remove_agent(&agent).await;
    let labels = vec![("keepwarm.test".to_string(), "lost".to_string())];
    assert!(f.list_containers(labels).await.unwrap().is_empty());
    assert!(matches!(
        factory_error(f.attach(created.clone()).await),
        FactoryError::NotFound(_)
    ));
    // with its only agent gone there is nothing to offer
    let f2 = plugin(&[("mesos", &master.route())], &[("offer-wait-ms", "300")])
        .await
        .unwrap();
    assert!(matches!(
        factory_error(f2.create(container("none", 64)).await),
        FactoryError::Capacity(_)
    ));
    master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_subscription_is_replaced() {
    let master = MesosMaster::start(Options {
        heartbeat: Duration::from_millis(100),
        ..Options::default()
    })
    .await;
    let f = plugin(&[("mesos", &master.route())], &[]).await.unwrap();
    let created = f.create(container("partitioned", 64)).await.unwrap();
    let framework = master.frameworks()[0].0.clone();
    master.partition(&framework);
    let labels = vec![("keepwarm.test".to_string(), "partitioned".to_string())];
    // A heartbeat sent just before the cut may still sit unread in the stream, and the
    // plugin counts silence from what it last read: a call reads it first. (Without this
    // call one CI run kept the subscription after 600 ms of silence.)
    f.list_containers(labels.clone()).await.unwrap();
    let subscriptions = master.subscriptions();
    tokio::time::sleep(Duration::from_millis(600)).await; // more than three heartbeats
    let listed = f.list_containers(labels).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, created.id);
    assert_eq!(master.subscriptions(), subscriptions + 1, "replaced once");
    assert_eq!(master.frameworks()[0].0, framework, "the same framework");
    f.destroy(&created.id).await.unwrap();
    master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_are_named_at_load() {
    for (config, expect) in [
        (
            ("offer-wait", "1"),
            "unknown mesos plugin setting `offer-wait`",
        ),
        (("failover-timeout-s", "soon"), "failover-timeout-s"),
        (("network", "overlay"), "BRIDGE or HOST"),
    ] {
        let e = plugin(&[("mesos", "unix:///nonexistent.sock")], &[config])
            .await
            .unwrap_err();
        assert!(e.to_string().contains(expect), "{e}");
    }
    // no master reachable: calls say so, loading does not need one
    let f = plugin(&[("mesos", "unix:///nonexistent.sock")], &[])
        .await
        .unwrap();
    assert!(matches!(
        factory_error(f.list_containers(Vec::new()).await),
        FactoryError::Unavailable(_)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_whose_record_was_lost_is_attached_by_its_handle() {
    let master = MesosMaster::start(Options::default()).await;
    let route = master.route();
    let first = Arc::new(MemoryState::default());
    let f = plugin_with(&[("mesos", &route)], &[], first.clone())
        .await
        .unwrap();
    let created = f.create(container("by-handle", 64)).await.unwrap();

    // a state that kept the framework id but lost the task records
    let thin = Arc::new(MemoryState::default());
    thin.put("framework-id", first.get("framework-id").unwrap());
    let g = plugin_with(&[("mesos", &route)], &[], thin).await.unwrap();
    let attached = g.attach(created.clone()).await.unwrap();
    assert_eq!(attached.address, created.address);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        master.tasks()[0].state,
        "TASK_RUNNING",
        "not killed as unknown"
    );
    let labels = vec![("keepwarm.test".to_string(), "by-handle".to_string())];
    assert_eq!(
        g.list_containers(labels).await.unwrap().len(),
        1,
        "record restored"
    );
    g.destroy(&created.id).await.unwrap();
    master.shutdown().await;
}
