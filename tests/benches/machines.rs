//! Many machines vs one, measured in one run (read the ratios: the machine is shared):
//!
//! - failover after the active host's **machine** fails (network namespaces, the engine on a
//!   machine of its own over TLS) vs after its **process** is killed (all on loopback, Docker
//!   on its unix socket): p50/p99 over `KW_BENCH_RUNS` each (default 10);
//! - the takeover's re-attach time with 10 and 100 idle containers, over TLS to the remote
//!   engine vs over the local socket;
//! - warm activation latency (sent → acknowledged) through the remote engine vs the local one.

use keepwarm_tests::cluster::Cluster;
use keepwarm_tests::host::HostOptions;
use keepwarm_tests::kafka::Controller;
use keepwarm_tests::netbed::site::{on_site, HOSTS};
use keepwarm_tests::netbed::NetBed;
use keepwarm_tests::stats::{ratio, summarize, Summary};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::runtime::Runtime;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A three-host cluster on one machine, or one host per machine of a bed.
struct Rig<'a> {
    bed: Option<&'a NetBed>,
    cluster: Cluster,
    c: Controller,
}

impl Rig<'_> {
    /// Kills the active host (its machine on a bed, else its process) and brings it back
    /// after the takeover; returns (kill → consuming, the takeover's own time, re-attached).
    fn failover(&mut self) -> (Duration, Duration, u64) {
        let active = self
            .cluster
            .active(Duration::from_secs(30))
            .expect("no active host");
        let at = now_ms();
        if let Some(bed) = self.bed {
            bed.fail(HOSTS[active]);
        }
        self.cluster.hosts[active].kill();
        let next = self
            .cluster
            .active(Duration::from_secs(10))
            .expect("no standby took over");
        let s = self.cluster.status(next).unwrap();
        let took = s["consuming_since_ms"].as_i64().unwrap() - at;
        let takeover = &s["last_takeover"];
        let result = (
            Duration::from_millis(took.max(0) as u64),
            Duration::from_millis(takeover["took_ms"].as_u64().unwrap_or(0)),
            takeover["reattached"].as_u64().unwrap_or(0),
        );
        // the machine (or process) comes back with its disk and rejoins as a standby
        if let Some(bed) = self.bed {
            bed.mend(HOSTS[active]);
        }
        self.cluster.hosts[active].spawn();
        let epoch = takeover["epoch"].clone();
        keepwarm_tests::eventually(
            Duration::from_secs(60),
            || "the failed host did not rejoin".into(),
            || {
                self.cluster
                    .status(active)
                    .is_some_and(|s| s["state"] == "Follower" && s["epoch"] == epoch)
                    .then_some(())
            },
        );
        result
    }

    /// `n` warm containers of `action` (a burst of n at once: with `slow`, 30 s each, every
    /// one needs its own container), replicated.
    fn warm(&mut self, rt: &Runtime, action: &str, n: usize) {
        let ids = rt.block_on(self.c.invoke_many("guest", action, n));
        assert!(self.c.poll_until(Duration::from_secs(600), |c| ids
            .iter()
            .all(|i| c.received.contains_key(i))));
        std::thread::sleep(Duration::from_secs(3));
    }

    /// Sent → acknowledged for `n` sequential warm activations.
    fn latency(&mut self, rt: &Runtime, n: usize) -> Summary {
        let samples = (0..n)
            .map(|i| {
                let started = Instant::now();
                let id = rt.block_on(self.c.invoke(
                    "guest",
                    "echo",
                    false,
                    serde_json::json!({ "i": i }),
                ));
                self.c.wait_for(&id, Duration::from_secs(60));
                started.elapsed()
            })
            .collect();
        summarize(samples)
    }
}

/// A host with room (memory, activations at once) for `warm` containers and a few more.
fn options(instance: u32, warm: usize) -> HostOptions {
    let mut options = HostOptions::new(instance, 0, 128 * (warm as u64 + 8));
    options.max_in_flight = warm + 8;
    options
}

/// What one rig measured.
struct Measured {
    failover: Summary,
    reattach: Vec<(usize, Duration, u64)>,
    latency: Summary,
}

fn measure<'a>(rt: &Runtime, rig: &mut dyn FnMut(usize) -> Rig<'a>, runs: usize) -> Measured {
    // failover with a few warm containers, `runs` times
    let mut r = rig(0);
    r.warm(rt, "echo", 2);
    let latency = r.latency(rt, 100);
    let failover = summarize((0..runs).map(|_| r.failover().0).collect());
    drop(r);
    // re-attach time as the pool grows
    let reattach = [10, 100]
        .into_iter()
        .map(|n| {
            let mut r = rig(n);
            r.warm(rt, "slow", n);
            let (_, took, reattached) = r.failover();
            (n, took, reattached)
        })
        .collect();
    Measured {
        failover,
        reattach,
        latency,
    }
}

fn main() {
    let runs: usize = std::env::var("KW_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    keepwarm_tests::keepwarm_bin();
    let base = 8_500_000 + (std::process::id() % 10_000) * 10;

    println!("== one machine: hosts on loopback, Docker on its unix socket, a process is killed");
    let rt = Runtime::new().unwrap();
    let mut round = 0;
    let mut local = |warm: usize| {
        round += 1;
        let instance = base + round;
        let c = rt.block_on(Controller::new(instance, &format!("mb{instance}")));
        let cluster = Cluster::start_from(3, &options(instance, warm));
        cluster
            .active(Duration::from_secs(60))
            .expect("no active host");
        Rig {
            bed: None,
            cluster,
            c,
        }
    };
    let one = measure(&rt, &mut local, runs);
    drop(rt);

    println!(
        "== many machines: a namespace per host, the engine over TLS, the broker; a machine fails"
    );
    let many = on_site(&["e1"], |site| {
        let rt = Runtime::new().unwrap();
        let mut round = 50;
        let mut remote = |warm: usize| {
            round += 1;
            let instance = base + round;
            let (c, cluster) =
                site.start_cluster(&rt, &format!("mb{instance}"), options(instance, warm));
            cluster
                .active(Duration::from_secs(60))
                .expect("no active host");
            Rig {
                bed: Some(site.bed),
                cluster,
                c,
            }
        };
        measure(&rt, &mut remote, runs)
    });

    println!();
    println!("== failover (kill → consuming)");
    compare(
        ("process kill, one machine", &one.failover),
        ("machine failure, many machines", &many.failover),
        "machine / process",
    );
    println!("== takeover (claim, reconcile, re-attach every idle container, proxy checks)");
    for ((n, local, kept_l), (_, remote, kept_r)) in one.reattach.iter().zip(&many.reattach) {
        println!(
            "   {n:>3} containers: local socket {local:>8.1?} ({kept_l} re-attached), TLS to the engine machine {remote:>8.1?} ({kept_r} re-attached), ratio {:.2}",
            ratio(*remote, *local)
        );
    }
    println!("== warm activation, sent → acknowledged (100 sequential)");
    compare(
        ("local engine", &one.latency),
        ("remote engine", &many.latency),
        "remote / local",
    );
}

/// Prints a baseline, a contender and their p50 and p99 ratios.
fn compare(baseline: (&str, &Summary), contender: (&str, &Summary), ratio_name: &str) {
    println!("   {:<32} {}", baseline.0, baseline.1);
    println!("   {:<32} {}", contender.0, contender.1);
    println!(
        "   {ratio_name}: p50 {:.2}, p99 {:.2}",
        ratio(contender.1.p50, baseline.1.p50),
        ratio(contender.1.p99, baseline.1.p99)
    );
}
