//! The Mesos plugin against the master simulator (its agent runs tasks as real Docker
//! containers) compared with the Docker plugin on the same Docker, interleaved in one run:
//! cold create-to-ready, destroy, a burst of creates on a master allocating once a second (as
//! Mesos does by default), and a standby's takeover work (a fresh plugin instance with the
//! replicated state: list the cluster's containers, then attach each).

use keepwarm::factory::{Container, ContainerFactory, ContainerSpec};
use keepwarm::plugin::{MemoryState, WasmFactory};
use keepwarm_tests::mesos::{MesosMaster, Options};
use keepwarm_tests::proxy::{init_script, ProxyClient, ECHO_ACTION};
use keepwarm_tests::stats::compare;
use keepwarm_tests::{component, runtime, spec};
use std::sync::Arc;
use std::time::{Duration, Instant};

const READY: Duration = Duration::from_secs(20);
const ROUNDS: usize = 12;
const ATTACHED: usize = 30;
const BURST: usize = 8;

fn container_spec(name: &str, run: &str) -> ContainerSpec {
    ContainerSpec {
        name: name.into(),
        image: "keepwarm/action-runtime:latest".into(),
        memory_mb: 128,
        cpu_shares: None,
        env: Vec::new(),
        labels: vec![("keepwarm.cluster".into(), run.into())],
        network: None,
        port: 8080,
    }
}

async fn load(stem: &str, route: (&str, &str), state: Arc<MemoryState>) -> Arc<WasmFactory> {
    let s = spec(stem, component(stem), &[route]);
    Arc::new(
        WasmFactory::load_with_state(runtime(), s, state)
            .await
            .unwrap(),
    )
}

/// A standby's part of a takeover: list the cluster's containers, attach every one.
async fn take_over(f: &WasmFactory, run: &str, known: &[Container]) -> Duration {
    let t = Instant::now();
    let listed = f
        .list_containers(vec![("keepwarm.cluster".into(), run.into())])
        .await
        .unwrap();
    assert_eq!(listed.len(), known.len());
    for c in known {
        f.attach(c.clone()).await.unwrap();
    }
    t.elapsed()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let options = Options::default();
    println!(
        "simulator: 1 agent, allocation interval {:?} (Mesos' default is 1 s), heartbeat {:?}",
        options.allocation_interval, options.heartbeat
    );
    let master = MesosMaster::start(options).await;
    let route = master.route();
    let mesos_state = Arc::new(MemoryState::default());
    let mesos = load("keepwarm_mesos", ("mesos", &route), mesos_state.clone()).await;
    let docker_state = Arc::new(MemoryState::default());
    let docker = load(
        "keepwarm_docker",
        ("docker", "unix:///var/run/docker.sock"),
        docker_state.clone(),
    )
    .await;
    let proxy = ProxyClient::default();
    let tag = std::process::id();

    // 1. cold create-to-ready and destroy, interleaved
    let mut ready = (Vec::new(), Vec::new());
    let mut destroy = (Vec::new(), Vec::new());
    for i in 0..ROUNDS {
        for (which, f) in [(0, &mesos), (1, &docker)] {
            let t = Instant::now();
            let c = f
                .create(container_spec(
                    &format!("kwbm-{which}-{tag}-{i}"),
                    "bench-cold",
                ))
                .await
                .unwrap();
            proxy
                .post_ready(&c.address, "/init", &init_script(ECHO_ACTION), READY)
                .await
                .unwrap();
            let took = t.elapsed();
            let t = Instant::now();
            f.destroy(&c.id).await.unwrap();
            let gone = t.elapsed();
            if which == 0 {
                ready.0.push(took);
                destroy.0.push(gone);
            } else {
                ready.1.push(took);
                destroy.1.push(gone);
            }
        }
    }
    compare("create-to-ready", ("mesos", ready.0), ("docker", ready.1));
    compare("destroy", ("mesos", destroy.0), ("docker", destroy.1));

    // 2. a burst of creates, back to back, on a master with Mesos' default allocation interval
    {
        let slow = MesosMaster::start(Options {
            allocation_interval: Duration::from_secs(1),
            ..Options::default()
        })
        .await;
        let slow_route = slow.route();
        let f = load(
            "keepwarm_mesos",
            ("mesos", &slow_route),
            Arc::new(MemoryState::default()),
        )
        .await;
        let (mut burst_m, mut burst_d, mut made) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..BURST {
            let t = Instant::now();
            made.push(
                f.create(container_spec(
                    &format!("kwbm-bm-{tag}-{i}"),
                    "bench-burst-m",
                ))
                .await
                .unwrap(),
            );
            burst_m.push(t.elapsed());
        }
        for i in 0..BURST {
            let t = Instant::now();
            let c = docker
                .create(container_spec(
                    &format!("kwbm-bd-{tag}-{i}"),
                    "bench-burst-d",
                ))
                .await
                .unwrap();
            burst_d.push(t.elapsed());
            made.push(c);
        }
        compare(
            &format!("burst of {BURST} creates (allocation interval 1 s)"),
            ("mesos", burst_m),
            ("docker", burst_d),
        );
        for c in &made[..BURST] {
            f.destroy(&c.id).await.unwrap();
        }
        for c in &made[BURST..] {
            docker.destroy(&c.id).await.unwrap();
        }
    }

    // 3. a standby takes over ATTACHED containers of each kind
    println!("creating {ATTACHED} containers through each plugin ...");
    // one label per plugin: the simulator's containers carry their task's labels on Docker too
    let (run_m, run_d) = (format!("bench-m-{tag}"), format!("bench-d-{tag}"));
    let (mut on_mesos, mut on_docker) = (Vec::new(), Vec::new());
    for i in 0..ATTACHED {
        on_mesos.push(
            mesos
                .create(container_spec(&format!("kwbm-am-{tag}-{i}"), &run_m))
                .await
                .unwrap(),
        );
        on_docker.push(
            docker
                .create(container_spec(&format!("kwbm-ad-{tag}-{i}"), &run_d))
                .await
                .unwrap(),
        );
    }
    let mut takeover = (Vec::new(), Vec::new());
    for _ in 0..5 {
        // a fresh instance with the same (replicated) state, as on a standby host
        let standby = load("keepwarm_mesos", ("mesos", &route), mesos_state.clone()).await;
        takeover
            .0
            .push(take_over(&standby, &run_m, &on_mesos).await);
        let standby = load(
            "keepwarm_docker",
            ("docker", "unix:///var/run/docker.sock"),
            docker_state.clone(),
        )
        .await;
        takeover
            .1
            .push(take_over(&standby, &run_d, &on_docker).await);
    }
    compare(
        &format!("standby list + attach {ATTACHED}"),
        ("mesos", takeover.0),
        ("docker", takeover.1),
    );
    println!(
        "tasks launched by the simulator: {} (none relaunched by the takeovers)",
        master.launched()
    );

    // the last standby holds the framework now; clean up through it
    let last = load("keepwarm_mesos", ("mesos", &route), mesos_state).await;
    for c in &on_mesos {
        last.destroy(&c.id).await.unwrap();
    }
    for c in &on_docker {
        docker.destroy(&c.id).await.unwrap();
    }
    master.shutdown().await;
}
