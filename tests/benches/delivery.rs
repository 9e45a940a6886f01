//! What the at-most-once contract costs an activation: a three-host cluster on the simulated
//! engine (its `/run` answers at once), blocking activations of one warm action sent one at a
//! time, under `delivery = "at-most-once"` (the start committed before `/run`) and
//! `"at-least-once"` (the start only queued), rounds interleaved in one run; the ratio of the
//! two is the figure (this machine is shared and noisy: absolute times move between runs).

use keepwarm_tests::cluster::Cluster;
use keepwarm_tests::docker_sim::{SimEngine, SimOptions};
use keepwarm_tests::host::{HostOptions, PluginChoice};
use keepwarm_tests::kafka::Controller;
use keepwarm_tests::stats::summarize;
use serde_json::json;
use std::time::{Duration, Instant};

const ROUNDS: usize = 4;
const PER_ROUND: usize = 100;

struct Bed {
    cluster: Cluster,
    controller: Controller,
    _sim: SimEngine,
}

fn bed(rt: &tokio::runtime::Runtime, instance: u32, delivery: &'static str) -> Bed {
    let sim = rt.block_on(SimEngine::start(SimOptions::default()));
    let controller = rt.block_on(Controller::new(instance, &format!("db{instance}")));
    let mut base = HostOptions::new(instance, 0, 1024);
    base.delivery = delivery;
    base.plugin = PluginChoice {
        routes: format!("docker = \"{}\"", sim.route()),
        ..PluginChoice::docker()
    };
    let cluster = Cluster::start_from(3, &base);
    cluster
        .active(Duration::from_secs(120))
        .expect("no active host");
    Bed {
        cluster,
        controller,
        _sim: sim,
    }
}

/// Sends `n` blocking activations one after another; the time to each one's result.
fn latencies(rt: &tokio::runtime::Runtime, c: &mut Controller, n: usize) -> Vec<Duration> {
    (0..n)
        .map(|i| {
            let t = Instant::now();
            let id = rt.block_on(c.invoke("guest", "echo", true, json!({ "i": i })));
            c.wait_for(&id, Duration::from_secs(30));
            t.elapsed()
        })
        .collect()
}

fn main() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let base = 8_800_000 + (std::process::id() % 10_000) * 10;
    let mut at_most = bed(&rt, base, "at-most-once");
    let mut at_least = bed(&rt, base + 1, "at-least-once");
    // warm both: the container exists, the clients are connected
    latencies(&rt, &mut at_most.controller, 20);
    latencies(&rt, &mut at_least.controller, 20);
    let (mut most, mut least) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        most.extend(latencies(&rt, &mut at_most.controller, PER_ROUND));
        least.extend(latencies(&rt, &mut at_least.controller, PER_ROUND));
    }
    let (most, least) = (summarize(most), summarize(least));
    println!("delivery: blocking activations of a warm action, one at a time, 3 hosts");
    println!("  at-most-once  (start committed before /run): {most}");
    println!("  at-least-once (start queued):                {least}");
    println!(
        "  at-most-once / at-least-once: p50 {:.2}, p99 {:.2}; the commit adds {:.2?} at p50",
        most.p50.as_secs_f64() / least.p50.as_secs_f64(),
        most.p99.as_secs_f64() / least.p99.as_secs_f64(),
        most.p50.saturating_sub(least.p50)
    );
    drop(at_most.cluster);
    drop(at_least.cluster);
}
