//! Takeover at scale: three real hosts driving the real Docker plugin against the simulated
//! Docker engine (`keepwarm_tests::docker_sim`), with 100, 1,000 and 10,000 idle prewarm
//! containers. For each size: how long the active host took to create them, the standby's
//! memory and Raft data on disk once they are replicated, and per SIGKILL of the active host
//! the takeover (claim → list → attach each → proxy probe → pool ready), the engine calls it
//! made, and kill → consuming. Engine latency per call: 0 and 2 ms (`-- latency-only`: only
//! the 2 ms run at 1,000; `-- startup`: 1,000 and 10,000 with one takeover each).
//!
//! A growth table closes the run: time per container at each size against the smallest.

use keepwarm::cluster::state::{Command, PoolChange, Replicated};
use keepwarm_tests::cluster::{sample_record, Cluster};
use keepwarm_tests::docker_sim::{SimEngine, SimOptions};
use keepwarm_tests::host::{HostOptions, PluginChoice};
use keepwarm_tests::kafka::Controller;
use keepwarm_tests::stats::{summarize, Summary};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// What one size measured.
struct Row {
    containers: usize,
    latency_ms: u64,
    created: Duration,
    standby_rss_mb: f64,
    raft_on_disk_mb: f64,
    takeover: Summary,
    consuming: Summary,
    calls_per_takeover: u64,
    /// The standby's last snapshot: bytes and milliseconds to build it, as its log says.
    snapshot: Option<(u64, u64)>,
}

/// `field=value` of the last `snapshot built` line of a host's log (ANSI colours removed).
fn last_snapshot(log: &str) -> Option<(u64, u64)> {
    let line = log.lines().rev().find(|l| l.contains("snapshot built"))?;
    let mut plain = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            chars.by_ref().find(|c| *c == 'm');
        } else {
            plain.push(c);
        }
    }
    let field = |name: &str| -> Option<u64> {
        let rest = &plain[plain.find(&format!("{name}="))? + name.len() + 1..];
        rest.split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    Some((field("bytes")?, field("took_ms")?))
}

/// Resident memory of a process, from `/proc/PID/status`.
fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn du_mb(dir: &std::path::Path) -> f64 {
    fn walk(dir: &std::path::Path) -> u64 {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| match e.metadata() {
                Ok(m) if m.is_dir() => walk(&e.path()),
                Ok(m) => m.len(),
                Err(_) => 0,
            })
            .sum()
    }
    walk(dir) as f64 / (1 << 20) as f64
}

fn measure(rt: &tokio::runtime::Runtime, n: usize, latency_ms: u64, kills: usize) -> Row {
    let sim = rt.block_on(SimEngine::start(SimOptions {
        latency: Duration::from_millis(latency_ms),
        ..SimOptions::default()
    }));
    let instance =
        8_700_000 + (std::process::id() % 10_000) * 10 + (n % 7) as u32 + latency_ms as u32;
    let _controller = rt.block_on(Controller::new(instance, &format!("tk{instance}")));
    let mut base = HostOptions::new(instance, n as u32, 128 * (n as u64 + 16));
    base.plugin = PluginChoice {
        routes: format!("docker = \"{}\"", sim.route()),
        ..PluginChoice::docker()
    };
    let started = Instant::now();
    let mut cluster = Cluster::start_from(3, &base);
    let first = cluster
        .active(Duration::from_secs(120))
        .expect("no active host");
    // every member holds the whole pool
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        let replicated: Vec<usize> = (0..3)
            .filter_map(|i| cluster.status(i))
            .map(|s| s["idle_containers"].as_u64().unwrap_or(0) as usize)
            .collect();
        if replicated.len() == 3 && replicated.iter().all(|r| *r >= n) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pool never reached {n}: {replicated:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let created = started.elapsed();
    eprintln!("{n} containers created and replicated in {created:.1?}");
    std::thread::sleep(Duration::from_secs(2));
    let standby = (first + 1) % 3;
    let standby_rss_mb = rss_mb(cluster.hosts[standby].child.as_ref().unwrap().id());
    let raft_on_disk_mb = du_mb(&cluster.hosts[standby].dir.join("data/raft"));
    let snapshot = last_snapshot(&cluster.hosts[standby].log());

    let (mut takeover, mut consuming, mut calls) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..kills {
        let active = cluster
            .active(Duration::from_secs(60))
            .expect("no active host");
        let before = sim.calls();
        let killed = now_ms();
        cluster.hosts[active].kill();
        let next = cluster
            .active(Duration::from_secs(120))
            .expect("no takeover");
        let s = cluster.status(next).unwrap();
        let t = &s["last_takeover"];
        let reattached = t["reattached"].as_u64().unwrap_or(0) as usize;
        eprintln!("{n} containers, failover {round}: {t}");
        assert_eq!(reattached, n, "lost containers: {t}");
        takeover.push(Duration::from_millis(t["took_ms"].as_u64().unwrap()));
        consuming.push(Duration::from_millis(
            (s["consuming_since_ms"].as_i64().unwrap() - killed).max(0) as u64,
        ));
        calls.push(sim.calls() - before);
        cluster.rejoin(active, Duration::from_secs(600), |x| {
            x["idle_containers"].as_u64() >= Some(n as u64)
        });
        std::thread::sleep(Duration::from_secs(1));
    }
    calls.sort();
    drop(cluster);
    Row {
        containers: n,
        latency_ms,
        created,
        standby_rss_mb,
        raft_on_disk_mb,
        takeover: summarize(takeover),
        consuming: summarize(consuming),
        calls_per_takeover: calls[calls.len() / 2],
        snapshot,
    }
}

/// The replicated state at 10,000 containers and 10,000 completed ids, in process: its
/// snapshot's size, build (serde_json, as `store::build_snapshot`) and load time, and the
/// feed's per-message `is_completed` lookup against a scan of the same ids (the list it
/// replaced), for ids not among them (the common case).
fn state_at_scale() {
    let n = 10_000;
    let mut s = Replicated::default();
    s.apply(1, &Command::Claim { node: 1 });
    let changes = (0..n)
        .map(|i| PoolChange::Upsert(sample_record(&format!("{i:064x}"))))
        .collect();
    s.apply(2, &Command::Pool { epoch: 1, changes });
    let ids: Vec<String> = (0..n)
        .map(|_| uuid::Uuid::new_v4().simple().to_string())
        .collect();
    s.apply(
        3,
        &Command::Completed {
            epoch: 1,
            ids: ids.clone(),
            started: Vec::new(),
            started_in: Default::default(),
        },
    );
    assert_eq!((s.containers.len(), s.completed.len()), (n, n));
    let t = Instant::now();
    let bytes = serde_json::to_vec(&s).unwrap();
    let build = t.elapsed();
    let t = Instant::now();
    let back: Replicated = serde_json::from_slice(&bytes).unwrap();
    let load = t.elapsed();
    assert_eq!(back, s);
    let probes: Vec<String> = (0..2_000)
        .map(|_| uuid::Uuid::new_v4().simple().to_string())
        .collect();
    let t = Instant::now();
    let hits = probes.iter().filter(|p| s.is_completed(p)).count();
    let set = t.elapsed() / probes.len() as u32;
    let list: std::collections::VecDeque<String> = ids.into_iter().collect();
    let t = Instant::now();
    let scanned = probes
        .iter()
        .filter(|p| list.iter().any(|c| c == *p))
        .count();
    let scan = t.elapsed() / probes.len() as u32;
    assert_eq!((hits, scanned), (0, 0));
    println!(
        "replicated state at {n} containers + {n} completed ids: snapshot {:.1} MB, built in {build:.1?}, loaded in {load:.1?}",
        bytes.len() as f64 / (1 << 20) as f64
    );
    println!(
        "  is_completed per message: {set:.2?} (set) vs {scan:.2?} (scan of the list it replaced): {:.0}x",
        scan.as_secs_f64() / set.as_secs_f64().max(1e-9)
    );
}

fn main() {
    state_at_scale();
    if std::env::args().any(|a| a == "state") {
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let runs: Vec<(usize, u64, usize)> = if std::env::args().any(|a| a == "latency-only") {
        vec![(1_000, 2, 3)]
    } else if std::env::args().any(|a| a == "startup") {
        // the growth of creating the pool at start, one takeover each
        vec![(1_000, 0, 1), (10_000, 0, 1)]
    } else {
        vec![(100, 0, 5), (1_000, 0, 3), (10_000, 0, 3), (1_000, 2, 3)]
    };
    let rows: Vec<Row> = runs
        .into_iter()
        .map(|(n, latency, kills)| measure(&rt, n, latency, kills))
        .collect();

    println!("\ntakeover at scale: 3 hosts, the Docker plugin, a simulated Docker engine, idle prewarm containers");
    println!(
        "  {:>6} {:>7} {:>10} {:>11} {:>10} {:>15} {:>15} {:>10} {:>9}",
        "idle",
        "latency",
        "created s",
        "standby MB",
        "raft MB",
        "takeover p50",
        "consuming p50",
        "calls",
        "µs/cont."
    );
    let base = rows[0].takeover.p50.as_secs_f64() / rows[0].containers as f64;
    for r in &rows {
        let per = r.takeover.p50.as_secs_f64() / r.containers as f64;
        println!(
            "  {:>6} {:>5}ms {:>10.1} {:>11.0} {:>10.1} {:>13.0}ms {:>13.0}ms {:>10} {:>9.0}  ({:.2}× the first row per container)",
            r.containers,
            r.latency_ms,
            r.created.as_secs_f64(),
            r.standby_rss_mb,
            r.raft_on_disk_mb,
            r.takeover.p50.as_secs_f64() * 1000.0,
            r.consuming.p50.as_secs_f64() * 1000.0,
            r.calls_per_takeover,
            per * 1e6,
            per / base,
        );
    }
    println!("\n  the standby's last snapshot before the first kill (bytes, time to build):");
    for r in &rows {
        match r.snapshot {
            Some((bytes, ms)) => println!(
                "  {:>6} idle: {:.1} MB built in {ms} ms",
                r.containers,
                bytes as f64 / (1 << 20) as f64
            ),
            None => println!("  {:>6} idle: no snapshot built yet", r.containers),
        }
    }
}
