//! Raft timings against failover and flapping, with real processes: for each setting
//! (heartbeat, election timeout, lease) three hosts with 10 warm Docker containers,
//!
//! - **spurious elections**: term changes and leader changes with no host killed, in a window
//!   idle, under a steady activation load, and under that load with both cores saturated by
//!   busy threads (what a shared machine does to the timers);
//! - **failover**: SIGKILL of the active host, repeated, broken down from the kill to
//!   elected (`led_at_ms`), claimed (`claimed_at_ms`), re-attached (claim + `took_ms`) and
//!   consuming (`consuming_since_ms`).
//!
//! A summary table closes the run. `cargo bench --bench election -- quick`: fewer kills and
//! shorter windows.

use keepwarm_tests::cluster::Cluster;
use keepwarm_tests::host::HostOptions;
use keepwarm_tests::kafka::Controller;
use keepwarm_tests::stats::{summarize, Summary};
use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// One `[cluster]` timing setting.
#[derive(Debug, Clone, Copy)]
struct Setting {
    heartbeat: u64,
    min: u64,
    max: u64,
    lease: u64,
}

impl Setting {
    fn label(&self) -> String {
        format!(
            "hb {:>2} / election {:>3}-{:<3} / lease {:>3}",
            self.heartbeat, self.min, self.max, self.lease
        )
    }

    fn toml(&self) -> String {
        format!(
            "heartbeat-ms = {}\nelection-timeout-min-ms = {}\nelection-timeout-max-ms = {}\n\
             lease-ms = {}\n",
            self.heartbeat, self.min, self.max, self.lease
        )
    }
}

/// What one setting measured.
struct Row {
    setting: Setting,
    /// (condition, minutes observed, term changes, leader changes)
    spurious: Vec<(&'static str, f64, u64, u64)>,
    elected: Summary,
    claimed: Summary,
    reattached: Summary,
    consuming: Summary,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn since(killed: i64, at: i64) -> Duration {
    Duration::from_millis((at - killed).max(0) as u64)
}

/// The highest term any live member reports, and the leader the active one names.
fn term_and_leader(cluster: &Cluster) -> (u64, Option<u64>) {
    let statuses: Vec<Value> = (0..cluster.hosts.len())
        .filter_map(|i| cluster.status(i))
        .collect();
    let term = statuses
        .iter()
        .filter_map(|s| s["term"].as_u64())
        .max()
        .unwrap_or(0);
    let leader = statuses
        .iter()
        .find(|s| s["state"] == "Leader")
        .and_then(|s| s["id"].as_u64());
    (term, leader)
}

/// Watches the cluster for `window` under `condition`; returns term and leader changes.
fn watch(
    rt: &tokio::runtime::Runtime,
    cluster: &Cluster,
    c: &mut Controller,
    condition: &'static str,
    window: Duration,
    sent: &mut Vec<String>,
) -> (u64, u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let hogs: Vec<_> = if condition == "load + busy cores" {
        (0..2)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut x = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        x = std::hint::black_box(
                            x.wrapping_mul(6364136223846793005).wrapping_add(1),
                        );
                    }
                })
            })
            .collect()
    } else {
        Vec::new()
    };
    let (first_term, mut leader) = term_and_leader(cluster);
    let (mut term, mut leader_changes) = (first_term, 0);
    let start = Instant::now();
    while start.elapsed() < window {
        if condition != "idle" {
            // about 20 activations a second
            sent.extend(rt.block_on(c.invoke_many("guest", "echo", 2)));
            c.drain(Duration::from_millis(100));
        } else {
            std::thread::sleep(Duration::from_millis(100));
        }
        let (t, l) = term_and_leader(cluster);
        term = term.max(t);
        if l.is_some() && l != leader {
            if leader.is_some() {
                leader_changes += 1;
            }
            leader = l;
        }
    }
    stop.store(true, Ordering::Relaxed);
    hogs.into_iter().for_each(|h| h.join().unwrap());
    (term - first_term, leader_changes)
}

fn measure(
    rt: &tokio::runtime::Runtime,
    index: u32,
    setting: Setting,
    kills: usize,
    window: Duration,
) -> Row {
    let instance = 8_500_000 + (std::process::id() % 10_000) * 10 + index;
    let mut c = rt.block_on(Controller::new(instance, &format!("el{instance}")));
    let base = HostOptions::new(instance, 0, 128 * 18);
    let mut cluster = Cluster::start_each(3, &base, |_, o| o.extra.push_str(&setting.toml()));
    cluster
        .active(Duration::from_secs(60))
        .expect("no active host");
    let ids = rt.block_on(c.invoke_many("guest", "echo", 10));
    assert!(c.poll_until(Duration::from_secs(300), |c| ids
        .iter()
        .all(|i| c.received.contains_key(i))));
    std::thread::sleep(Duration::from_millis(1500));

    let mut spurious = Vec::new();
    let mut sent = Vec::new();
    for condition in ["idle", "load", "load + busy cores"] {
        eprintln!(
            "{}: watching for spurious elections ({condition})",
            setting.label()
        );
        let (terms, leaders) = watch(rt, &cluster, &mut c, condition, window, &mut sent);
        spurious.push((condition, window.as_secs_f64() / 60.0, terms, leaders));
    }
    // what the load sent finishes before the first kill: every container idle again
    assert!(
        c.poll_until(Duration::from_secs(600), |c| sent
            .iter()
            .all(|i| c.received.contains_key(i))),
        "the load never finished"
    );
    std::thread::sleep(Duration::from_secs(2));

    let (mut elected, mut claimed, mut reattached, mut consuming) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..kills {
        eprintln!("{}: failover {round}", setting.label());
        let active = cluster
            .active(Duration::from_secs(30))
            .expect("no active host");
        let killed = now_ms();
        cluster.hosts[active].kill();
        let next = cluster
            .active(Duration::from_secs(10))
            .expect("no takeover");
        let s = cluster.status(next).unwrap();
        let host = &s;
        let takeover = &host["last_takeover"];
        let claim = takeover["claimed_at_ms"].as_i64().unwrap();
        elected.push(since(killed, host["led_at_ms"].as_i64().unwrap()));
        claimed.push(since(killed, claim));
        reattached.push(since(killed, claim + takeover["took_ms"].as_i64().unwrap()));
        consuming.push(since(killed, host["consuming_since_ms"].as_i64().unwrap()));
        // the pool holds the 10 warm containers and whatever the load windows added
        assert!(
            takeover["reattached"].as_u64() >= Some(10) && takeover["lost"] == 0,
            "{takeover}"
        );
        cluster.rejoin(active, Duration::from_secs(30), |x| {
            x["epoch"] == s["epoch"]
        });
        std::thread::sleep(Duration::from_millis(500));
    }
    Row {
        setting,
        spurious,
        elected: summarize(elected),
        claimed: summarize(claimed),
        reattached: summarize(reattached),
        consuming: summarize(consuming),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1000.0)
}

fn main() {
    let quick = std::env::args().skip(1).any(|a| a == "quick");
    let (kills, window) = if quick {
        (6, Duration::from_secs(20))
    } else {
        (12, Duration::from_secs(45))
    };
    let settings = [
        // the defaults before this bench
        Setting {
            heartbeat: 50,
            min: 150,
            max: 300,
            lease: 100,
        },
        // the defaults it chose
        Setting {
            heartbeat: 30,
            min: 100,
            max: 200,
            lease: 60,
        },
        Setting {
            heartbeat: 20,
            min: 60,
            max: 120,
            lease: 50,
        },
    ];
    let rt = tokio::runtime::Runtime::new().unwrap();
    let rows: Vec<Row> = settings
        .iter()
        .enumerate()
        .map(|(i, s)| measure(&rt, i as u32, *s, kills, window))
        .collect();

    println!("\nfailover after SIGKILL of the active host, 3 hosts, 10 warm containers (ms from the kill; p50 / p99):");
    println!(
        "  {:<40} {:>11} {:>11} {:>11} {:>11}   vs first setting (consuming p50)",
        "setting", "elected", "claimed", "re-attached", "consuming"
    );
    let base = rows[0].consuming.p50.as_secs_f64();
    for r in &rows {
        let pair = |s: &Summary| format!("{}/{}", ms(s.p50), ms(s.p99));
        println!(
            "  {:<40} {:>11} {:>11} {:>11} {:>11}   {:.2}",
            r.setting.label(),
            pair(&r.elected),
            pair(&r.claimed),
            pair(&r.reattached),
            pair(&r.consuming),
            r.consuming.p50.as_secs_f64() / base
        );
    }
    println!(
        "\nspurious elections with no host killed (term changes / leader changes per window):"
    );
    for r in &rows {
        let cells: Vec<String> = r
            .spurious
            .iter()
            .map(|(cond, minutes, terms, leaders)| {
                format!("{cond}: {terms}/{leaders} in {minutes:.1} min")
            })
            .collect();
        println!("  {:<40} {}", r.setting.label(), cells.join("; "));
    }
}
