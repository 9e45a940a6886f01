//! keepwarm hosts and the engine on machines of their own (network namespaces joined by a
//! bridge, see `keepwarm_tests::netbed`): three hosts, a Docker engine reached over TCP with
//! TLS, a broker, and the test's controller, each on its own machine. Faults are whole-machine
//! failures and cut links, not process kills.

use keepwarm::clock::now_ms;
use keepwarm_tests::chaos::broker::Broker;
use keepwarm_tests::cluster::Cluster;
use keepwarm_tests::eventually;
use keepwarm_tests::host::HostOptions;
use keepwarm_tests::kafka::{annotation, assert_echo_runs_warm, Controller};
use keepwarm_tests::netbed::engine::RemoteDocker;
use keepwarm_tests::netbed::NetBed;
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::runtime::Runtime;

const WAIT: Duration = Duration::from_secs(60);
const HOSTS: [&str; 3] = ["h1", "h2", "h3"];

/// Several beds at once would share two cores with three hosts and a dockerd each.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn instance(base: u32) -> u32 {
    base * 10_000 + std::process::id() % 10_000
}

/// Host options for the bed: the Docker plugin on `engine` over TLS, publishing on the engine
/// machine's address (so it declares itself cluster-wide), the broker on its machine.
fn on_engine(n: u32, engine: &RemoteDocker, broker: &Broker) -> HostOptions {
    let mut base = HostOptions::new(n, 1, 4096);
    base.brokers = broker.address.clone();
    base.local_engine = false;
    base.plugin.routes = format!("docker = \"{}\"", engine.route());
    base.plugin.config = format!("\"publish-ip\" = \"{}\"", engine.ip);
    base
}

fn with_engine_tls(engine: &RemoteDocker) -> impl Fn(usize, &mut HostOptions) + '_ {
    move |_, opts| {
        opts.extra += &format!(
            "[plugin.tls.docker]\ncert-dir = \"{}\"\n",
            engine.client_certs.display()
        );
    }
}

/// Sends `guest/third` every 50 ms (20/s) until `stop`; returns the ids sent.
fn steady_load(broker: &str, instance: u32, controller: &str, stop: &AtomicBool) -> Vec<String> {
    let rt = Runtime::new().unwrap();
    let sender = rt.block_on(Controller::on(broker, instance, controller));
    let mut ids = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let (id, delivery) = sender.invoke_queued("guest", "third", json!({}));
        ids.push(id);
        rt.spawn(delivery);
        std::thread::sleep(Duration::from_millis(50));
    }
    rt.block_on(async { tokio::time::sleep(Duration::from_secs(1)).await });
    ids
}

/// Runs `guest/{action}` and returns how it started and in which container.
fn run_on(rt: &Runtime, c: &mut Controller, action: &str) -> (String, String) {
    let id = rt.block_on(c.invoke("guest", action, false, json!({})));
    let record = Controller::record(&c.wait_for(&id, WAIT));
    let keepwarm = annotation(&record, "keepwarm").unwrap_or_else(|| panic!("{record}"));
    (
        keepwarm["start"].as_str().unwrap().to_owned(),
        keepwarm["container"].as_str().unwrap().to_owned(),
    )
}

#[test]
fn the_active_hosts_machine_fails_under_load_and_a_standby_elsewhere_keeps_every_container() {
    let _serial = serial();
    keepwarm_tests::keepwarm_bin();
    keepwarm_tests::component("keepwarm_docker");
    let mut bed = NetBed::new(&["ctl", "h1", "h2", "h3", "e1", "b"]);
    let engine = RemoteDocker::start(&mut bed, "e1");
    let broker_at = format!("{}:9092", bed.machine("b").ip);
    let bed = &bed;
    bed.inside("ctl", || {
        let broker = Broker::start_at(&broker_at, bed.prefix("b"));
        let rt = Runtime::new().unwrap();
        let n = instance(7501);
        let mut c = rt.block_on(Controller::on(&broker.address, n, &format!("m{n}")));
        let mut cluster = Cluster::start_on(
            bed,
            &HOSTS,
            &on_engine(n, &engine, &broker),
            with_engine_tls(&engine),
        );
        let first = cluster.active(WAIT).unwrap_or_else(|| {
            panic!("no host became active\n{}", cluster.hosts[0].log());
        });
        let status = cluster.status(first).unwrap();
        assert_eq!(status["plugin"]["cluster_wide"], true, "{status}");

        // two warm containers and a prewarm on the engine machine, all replicated
        let warm: Vec<(&str, String)> = ["echo", "other"]
            .into_iter()
            .map(|action| (action, run_on(&rt, &mut c, action).1))
            .collect();
        eventually(
            Duration::from_secs(30),
            || {
                format!(
                    "engine {:?}, replicated {:?}\n{}",
                    engine.containers(&cluster.label),
                    cluster.status(first).map(|s| s["containers"].clone()),
                    cluster.hosts[first].log()
                )
            },
            || {
                let ids = engine.containers(&cluster.label);
                let replicated = cluster.status(first)?["containers"].as_u64()? as usize;
                (ids.len() >= 3 && ids.len() == replicated).then_some(())
            },
        );

        // under a steady load (another action), the active host's whole machine dies
        let stop = AtomicBool::new(false);
        let (ids, second, status, took) = std::thread::scope(|s| {
            let load = s.spawn(|| steady_load(&broker.address, n, &c.controller, &stop));
            std::thread::sleep(Duration::from_secs(2));
            let failed_at = now_ms();
            bed.fail(HOSTS[first]);
            cluster.hosts[first].kill();
            let second = cluster
                .active(Duration::from_secs(10))
                .expect("no standby on another machine took over");
            let status = cluster.status(second).unwrap();
            let took = status["consuming_since_ms"].as_i64().unwrap() - failed_at;
            std::thread::sleep(Duration::from_secs(2));
            stop.store(true, Ordering::SeqCst);
            (load.join().unwrap(), second, status, took)
        });
        eprintln!(
            "machine failure → consuming on {}: {took} ms; takeover {}; {} activations sent",
            HOSTS[second],
            status["last_takeover"],
            ids.len()
        );
        assert!(took < 2000, "failover took {took} ms");
        assert_eq!(status["last_takeover"]["lost"], 0, "{status}");
        assert!(
            status["last_takeover"]["reattached"].as_u64().unwrap() >= 2,
            "{status}"
        );
        let all = c.poll_until(WAIT, |c| ids.iter().all(|i| c.received.contains_key(i)));
        let missing = ids.iter().filter(|i| !c.received.contains_key(*i)).count();
        assert!(
            all,
            "{missing} activations lost\n{}",
            cluster.hosts[second].log()
        );

        // the idle containers live on on the engine machine and run warm, same ids, from the
        // new host on another machine
        for (action, container) in &warm {
            let (start, now) = run_on(&rt, &mut c, action);
            assert_eq!((start.as_str(), &now), ("warm", container), "{action}");
        }
        assert_echo_runs_warm(&rt, &mut c, json!({"after": "machine failure"}));
        drop(cluster);
        drop(broker);
    });
    drop(engine);
}
