//! Engine benchmark on real Docker: cold create-to-ready (create + `/init` answered) through
//! the Docker plugin vs the same engine calls made natively with `bollard`, interleaved in one
//! run; then attach of 100 existing containers through the plugin, sequential and parallel,
//! against native inspects of the same containers.

use bollard::Docker;
use keepwarm::factory::{Container, ContainerFactory, ContainerSpec};
use keepwarm_tests::native::{docker_run, remove};
use keepwarm_tests::proxy::{init_script, ProxyClient, ECHO_ACTION};
use keepwarm_tests::stats::{compare, ratio};
use keepwarm_tests::{component, load_with, spec};
use std::time::{Duration, Instant};

const IMAGE: &str = "keepwarm/action-runtime:latest";
const READY: Duration = Duration::from_secs(20);

fn container_spec(name: &str) -> ContainerSpec {
    ContainerSpec {
        name: name.into(),
        image: IMAGE.into(),
        memory_mb: 128,
        cpu_shares: None,
        env: Vec::new(),
        labels: vec![("keepwarm.cluster".into(), "bench".into())],
        network: None,
        port: 8080,
    }
}

async fn native_create(docker: &Docker, name: &str) -> (String, String) {
    docker_run(docker, IMAGE, name, &[("keepwarm.cluster", "bench")]).await
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let docker =
        Docker::connect_with_unix("/var/run/docker.sock", 60, bollard::API_DEFAULT_VERSION)
            .expect("docker");
    let mut s = spec(
        "docker",
        component("keepwarm_docker"),
        &[("docker", "unix:///var/run/docker.sock")],
    );
    s.limits.max_instances = 8;
    let plugin = load_with(s).await;
    plugin.prewarm_instances(8).await.unwrap();
    let proxy = ProxyClient::default();
    let tag = std::process::id();

    // 1. cold create-to-ready, interleaved plugin / native
    let (mut via_plugin, mut via_native) = (Vec::new(), Vec::new());
    for i in 0..12 {
        let t = Instant::now();
        let c = plugin
            .create(container_spec(&format!("kwb-p-{tag}-{i}")))
            .await
            .unwrap();
        proxy
            .post_ready(&c.address, "/init", &init_script(ECHO_ACTION), READY)
            .await
            .unwrap();
        via_plugin.push(t.elapsed());
        plugin.destroy(&c.id).await.unwrap();

        let t = Instant::now();
        let (id, address) = native_create(&docker, &format!("kwb-n-{tag}-{i}")).await;
        proxy
            .post_ready(&address, "/init", &init_script(ECHO_ACTION), READY)
            .await
            .unwrap();
        via_native.push(t.elapsed());
        remove(&docker, &id).await;
    }
    compare(
        "create-to-ready",
        ("docker plugin", via_plugin),
        ("native bollard", via_native),
    );

    // 2. attach 100 existing containers
    println!("creating 100 containers for the attach benchmark ...");
    let mut known: Vec<Container> = Vec::new();
    for i in 0..100 {
        let (id, _) = native_create(&docker, &format!("kwb-a-{tag}-{i}")).await;
        known.push(Container {
            id,
            ..Default::default()
        });
    }
    let t = Instant::now();
    for c in &known {
        docker.inspect_container(&c.id, None).await.unwrap();
    }
    let native_seq = t.elapsed();
    let t = Instant::now();
    for c in &known {
        plugin.attach(c.clone()).await.unwrap();
    }
    let seq = t.elapsed();
    let t = Instant::now();
    let handles: Vec<_> = known
        .iter()
        .map(|c| {
            let (p, c) = (plugin.clone(), c.clone());
            tokio::spawn(async move { p.attach(c).await })
        })
        .collect();
    for h in handles {
        h.await.unwrap().unwrap();
    }
    let par = t.elapsed();
    println!(
        "attach 100, plugin sequential   {seq:?} ({:?} each)",
        seq / 100
    );
    println!(
        "attach 100, plugin parallel (8) {par:?} ({:?} each)",
        par / 100
    );
    println!("inspect 100, native sequential  {native_seq:?}");
    println!(
        "plugin sequential / native sequential {:.2}x; parallel speed-up {:.2}x",
        ratio(seq, native_seq),
        ratio(seq, par)
    );
    for c in &known {
        remove(&docker, &c.id).await;
    }
}
