//! Upgrade benchmark with real processes (three hosts on loopback, tansu, Docker, 10 warm
//! containers): the pause in consumption of a planned step-down (`keepwarm cluster
//! step-down`: the old host stopped pulling → the successor consuming) against a failover
//! (the active host SIGKILLed → the successor consuming), 20 of each in the same run;
//! activation latency under a steady load while step-downs happen, and while plugin builds
//! are hot-swapped (20 swaps), against without either; and how long compiling a component
//! takes against its size.

use keepwarm_tests::cluster::Cluster;
use keepwarm_tests::host::HostOptions;
use keepwarm_tests::kafka::Controller;
use keepwarm_tests::stats::{compare, summarize};
use keepwarm_tests::upgrade::{deploy, rebuilt, reload, step_down};
use serde_json::{json, Value};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const ROUNDS: usize = 20;
const WARM: usize = 10;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The successor's `consuming_since_ms` once it consumes.
fn consuming_since(cluster: &Cluster, not: usize) -> (usize, Value) {
    let start = Instant::now();
    loop {
        for i in (0..cluster.hosts.len()).filter(|i| *i != not) {
            if let Some(s) = cluster.status(i).filter(|s| s["consuming"] == true) {
                return (i, s);
            }
        }
        assert!(start.elapsed() < Duration::from_secs(30), "no successor");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn rejoined(cluster: &Cluster, i: usize, epoch: &Value) {
    let start = Instant::now();
    while !cluster
        .status(i)
        .is_some_and(|s| s["state"] == "Follower" && s["epoch"] == *epoch)
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "host did not rejoin"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // caught up, and openraft's vote of the new leader older than its leader lease
    std::thread::sleep(Duration::from_millis(1500));
}

/// Compile time of every built component, no cache, against its size; and, for the Docker
/// plugin, a compile at `Priority::Now` (every core) against `Priority::Background` (one
/// thread at nice 19, as a staged build compiles): how long each takes, and how late a 10 ms
/// ticker on the async runtime (a stand-in for Raft's heartbeats) runs meanwhile.
fn compile_times(rt: &tokio::runtime::Runtime) {
    use keepwarm::plugin::Priority;
    let runtime = keepwarm::plugin::PluginRuntime::new(None).unwrap();
    for stem in [
        "probe",
        "keepwarm_podman",
        "keepwarm_docker",
        "keepwarm_mesos",
    ] {
        let file = keepwarm_tests::components::component(stem);
        let bytes = std::fs::metadata(&file).unwrap().len();
        let mut times = Vec::new();
        for _ in 0..3 {
            let start = Instant::now();
            rt.block_on(runtime.load_component(&file, None, Priority::Now))
                .unwrap();
            times.push(start.elapsed());
        }
        let s = summarize(times);
        println!(
            "compile {stem:<16} {:>8} bytes: p50 {:>8.1?} ({:.1} ms per 100 KB)",
            bytes,
            s.p50,
            s.p50.as_secs_f64() * 1000.0 / (bytes as f64 / 100_000.0)
        );
    }
    let file = keepwarm_tests::components::component("keepwarm_docker");
    for priority in [
        Priority::Now,
        Priority::Background,
        Priority::Now,
        Priority::Background,
    ] {
        use std::sync::atomic::{AtomicU64, Ordering};
        use std::sync::Arc;
        let late_us = Arc::new(AtomicU64::new(0));
        let took = rt.block_on(async {
            let late = late_us.clone();
            let ticking = tokio::spawn(async move {
                loop {
                    let asked = Instant::now();
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    let over = asked.elapsed().saturating_sub(Duration::from_millis(10));
                    late.fetch_max(over.as_micros() as u64, Ordering::Relaxed);
                }
            });
            let start = Instant::now();
            runtime.load_component(&file, None, priority).await.unwrap();
            let took = start.elapsed();
            ticking.abort();
            took
        });
        println!(
            "compile keepwarm_docker at {priority:?}: {took:.1?}; a 10 ms ticker beside it ran at most {:.1} ms late",
            late_us.load(Ordering::Relaxed) as f64 / 1000.0
        );
    }
}

fn main() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    compile_times(&rt);
    let instance = 8_500_000 + std::process::id() % 10_000;
    let mut c = rt.block_on(Controller::new(instance, &format!("ub{instance}")));
    let plugins = tempfile::tempdir().unwrap();
    let file = plugins.path().join("docker.wasm");
    let good = std::fs::read(keepwarm_tests::components::component("keepwarm_docker")).unwrap();
    std::fs::write(&file, &good).unwrap();
    let mut options = HostOptions::new(instance, 0, 128 * (WARM as u64 + 8));
    options.plugin.file = Some(file.clone());
    let mut cluster = Cluster::start_from(3, &options);
    cluster
        .active(Duration::from_secs(60))
        .expect("no active host");
    let ids = rt.block_on(c.invoke_many("guest", "echo", WARM));
    assert!(c.poll_until(Duration::from_secs(300), |c| ids
        .iter()
        .all(|i| c.received.contains_key(i))));
    std::thread::sleep(Duration::from_millis(1500));

    let (mut planned, mut handed, mut takeover) = (Vec::new(), Vec::new(), Vec::new());
    let mut failover = Vec::new();
    for round in 0..ROUNDS * 2 {
        let active = cluster
            .active(Duration::from_secs(30))
            .expect("no active host");
        let stopped_at = if round % 2 == 0 {
            let done = step_down(&cluster, active);
            handed.push(Duration::from_millis(
                done["handed_over_ms"].as_u64().unwrap(),
            ));
            done["stopped_at_ms"].as_i64().unwrap()
        } else {
            let killed = now_ms();
            cluster.hosts[active].kill();
            killed
        };
        let (_, s) = consuming_since(&cluster, active);
        let pause =
            Duration::from_millis((s["consuming_since_ms"].as_i64().unwrap() - stopped_at) as u64);
        if round % 2 == 0 {
            planned.push(pause);
            takeover.push(Duration::from_millis(
                s["last_takeover"]["took_ms"].as_u64().unwrap(),
            ));
        } else {
            failover.push(pause);
            cluster.hosts[active].spawn();
        }
        rejoined(&cluster, active, &s["epoch"]);
        eprintln!("round {round}: pause {pause:?}");
    }
    compare(
        "pause in consumption",
        ("planned step-down", planned),
        ("failover (SIGKILL)", failover),
    );
    println!(
        "  step-down: stopped pulling → another member leads: {}",
        summarize(handed)
    );
    println!(
        "  step-down: successor's takeover (claim → re-attached): {}",
        summarize(takeover)
    );

    // activation latency under a steady load (20/s): with step-downs, with hot swaps, without
    let mut swaps = 0;
    let mut swap_ms = Vec::new();
    let mut latency = |c: &mut Controller, cluster: &Cluster, event: Option<&str>| {
        let mut sent = Vec::new();
        let start = Instant::now();
        let mut next_step = start + Duration::from_secs(2);
        let mut n = 0u64;
        while start.elapsed() < Duration::from_secs(20) {
            let due = start + Duration::from_millis(n * 50);
            if Instant::now() >= due {
                let (id, _) = c.invoke_queued("guest", "echo", json!({ "n": n }));
                sent.push((id, Instant::now()));
                n += 1;
            }
            if event.is_some() && Instant::now() >= next_step {
                if let Some(active) = cluster.active(Duration::from_secs(1)) {
                    if event == Some("swap") {
                        swaps += 1;
                        deploy(&file, &rebuilt(&good, &swaps.to_string()));
                        let started = Instant::now();
                        let (code, out, err) = reload(cluster, active);
                        assert_eq!(code, 0, "{out}{err}");
                        let swap: Value = serde_json::from_str(&out).unwrap();
                        assert_eq!(swap["swapped"], true, "{swap}");
                        swap_ms.push(started.elapsed());
                    } else {
                        step_down(cluster, active);
                    }
                }
                let every = if event == Some("swap") { 500 } else { 4000 };
                next_step = Instant::now() + Duration::from_millis(every);
            }
            c.drain(Duration::from_millis(2));
            std::thread::sleep(Duration::from_millis(2));
        }
        let mut done = Vec::new();
        let ids: Vec<String> = sent.iter().map(|(id, _)| id.clone()).collect();
        assert!(c.poll_until(Duration::from_secs(60), |c| ids
            .iter()
            .all(|i| c.received.contains_key(i))));
        for (id, at) in &sent {
            let end = c.received[id]
                .iter()
                .find_map(|a| a["response"]["end"].as_i64());
            let sent_ms = now_ms() - at.elapsed().as_millis() as i64;
            if let Some(end) = end {
                done.push(Duration::from_millis((end - sent_ms).max(0) as u64));
            }
        }
        done
    };
    // the first window after the failover rounds is not steady (its latencies reached
    // seconds in a run): warm up, then measure
    latency(&mut c, &cluster, None);
    let quiet = latency(&mut c, &cluster, None);
    let stepping = latency(&mut c, &cluster, Some("step-down"));
    let swapping = latency(&mut c, &cluster, Some("swap"));
    compare(
        "activation latency (send → end)",
        ("during step-downs", stepping),
        ("no upgrade", quiet.clone()),
    );
    compare(
        "activation latency (send → end)",
        ("during hot swaps", swapping),
        ("no upgrade", quiet),
    );
    println!(
        "  hot swap (plugin reload: staged on 3 members, every pooled container attached): {}",
        summarize(swap_ms)
    );
    drop(cluster);
}
