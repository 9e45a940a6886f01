//! A Jepsen-style chaos run of the project's own: three real `keepwarm run` processes, tansu
//! and Docker under a steady load of `guest/echo`, with faults from a seeded schedule:
//!
//! - SIGKILL of the active host, restarted 3 s later;
//! - SIGSTOP of the active host for 3 s;
//! - a partition of the active host's Raft links for 4 s (it still reaches Kafka and Docker:
//!   the dangerous case, a deposed leader that could still consume);
//! - a partition of a standby's Raft links for 4 s;
//! - the broker restarted (the bed runs its own tansu, down for 2 s);
//! - the Docker daemon restarted (with `--live-restore`, as production runs it; only when
//!   `scripts/engines.sh` started the daemon, else the fault is left out and said so).
//!
//! Every Raft link goes through a [`proxy::LinkProxy`] per direction, so a partition cuts
//! only Raft. Afterwards it checks, from the acknowledgements, each host's activation log and
//! log, and the engine: **lost** (sent, never acknowledged), **stale runs** (an activation a
//! host started after another host's newer claim), **leaked** containers (labelled in the
//! engine, not in the replicated pool), **duplicates**, errors keepwarm caused (echo never
//! fails on its own), claims not caused by a fault, the failover time per fault, and how late
//! the slowest activation sent in each fault's window was answered (the backlog's drain).

pub mod broker;
pub mod proxy;

use crate::cluster::Cluster;
use crate::host::{containers_of, HostOptions};
use crate::kafka::{annotation, Controller};
use broker::Broker;
use proxy::LinkProxy;
use serde_json::json;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How a run is shaped.
#[derive(Debug, Clone)]
pub struct ChaosConfig {
    pub seed: u64,
    pub load: Duration,
    /// Activations per second.
    pub rate: u32,
    /// Time between the starts of two faults.
    pub fault_every: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    KillActive,
    PauseActive,
    PartitionActive,
    PartitionStandby,
    RestartBroker,
    RestartEngine,
}

impl Fault {
    const ALL: [Fault; 6] = [
        Fault::KillActive,
        Fault::PauseActive,
        Fault::PartitionActive,
        Fault::PartitionStandby,
        Fault::RestartBroker,
        Fault::RestartEngine,
    ];

    fn name(self) -> &'static str {
        match self {
            Fault::KillActive => "SIGKILL active + restart",
            Fault::PauseActive => "SIGSTOP active 3 s",
            Fault::PartitionActive => "partition active 4 s",
            Fault::PartitionStandby => "partition standby 4 s",
            Fault::RestartBroker => "broker restart (2 s down)",
            Fault::RestartEngine => "dockerd restart (live-restore)",
        }
    }

    /// The name `KW_CHAOS_FAULTS` lists it by.
    fn short(self) -> &'static str {
        match self {
            Fault::KillActive => "kill",
            Fault::PauseActive => "pause",
            Fault::PartitionActive => "partition-active",
            Fault::PartitionStandby => "partition-standby",
            Fault::RestartBroker => "broker",
            Fault::RestartEngine => "engine",
        }
    }

    /// Whether the fault should move the active role.
    fn moves_leadership(self) -> bool {
        matches!(
            self,
            Fault::KillActive | Fault::PauseActive | Fault::PartitionActive
        )
    }
}

/// One fault as it happened.
#[derive(Debug, Clone)]
pub struct Injected {
    pub fault: Fault,
    pub host: usize,
    pub at_ms: i64,
    /// From the fault to the next claim by another host.
    pub failover_ms: Option<i64>,
    /// The longest an activation sent in this fault's window waited for its answer.
    pub slowest_ms: Option<i64>,
}

/// One committed claim, from a host's log.
#[derive(Debug, Clone)]
pub struct Claim {
    pub host: usize,
    pub epoch: u64,
    pub at_ms: i64,
}

/// What a run found.
#[derive(Debug, Default)]
pub struct Report {
    pub sent: usize,
    pub lost: usize,
    pub duplicates: usize,
    pub stale_runs: usize,
    pub leaked: usize,
    pub keepwarm_errors: usize,
    /// Activations that may have run on a host that failed, answered with the failover's
    /// whisk error instead of running again (the at-most-once contract: not an error).
    pub failed_over: usize,
    pub claims: Vec<Claim>,
    /// Claims not within 10 s after a fault that moves leadership.
    pub unprovoked_claims: usize,
    pub faults: Vec<Injected>,
    /// Fault types left out, and why.
    pub skipped: Vec<String>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// xorshift64*: a seeded, dependency-free schedule.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `epoch: N, claimed_at_ms: T` from each "active" line of a host's log.
fn claims_in(log: &str, host: usize) -> Vec<Claim> {
    let number_after = |line: &str, key: &str| -> Option<i64> {
        let rest = &line[line.find(key)? + key.len()..];
        rest.split(|c: char| !c.is_ascii_digit())
            .find(|s| !s.is_empty())?
            .parse()
            .ok()
    };
    strip_ansi(log)
        .lines()
        .filter(|l| l.contains("takeover=Takeover {"))
        .filter_map(|l| {
            Some(Claim {
                host,
                epoch: number_after(l, "epoch: ")? as u64,
                at_ms: number_after(l, "claimed_at_ms: ")?,
            })
        })
        .collect()
}

/// Three hosts whose Raft links each go through a cuttable proxy, on a broker of their own.
struct Bed {
    cluster: Cluster,
    /// `links[i][j]`: how host i reaches host j.
    links: Vec<Vec<Option<LinkProxy>>>,
    broker: Broker,
}

/// Whether this run may restart the Docker daemon: only one `scripts/engines.sh` started
/// (it records a pid file) and only with live-restore (else every container dies with it).
fn engine_restart() -> Result<std::path::PathBuf, String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repository root")
        .to_owned();
    let state = std::env::var_os("KW_STATE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join(".work"));
    if !state.join("run/dockerd.pid").is_file() {
        return Err(format!(
            "dockerd was not started by scripts/engines.sh (no {})",
            state.join("run/dockerd.pid").display()
        ));
    }
    let live = std::process::Command::new("docker")
        .args(["info", "--format", "{{.LiveRestoreEnabled}}"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "true")
        .unwrap_or(false);
    if !live {
        return Err("dockerd runs without --live-restore".into());
    }
    Ok(root.join("scripts/engines.sh"))
}

impl Bed {
    fn start(rt: &tokio::runtime::Runtime, instance: u32) -> Bed {
        let broker = Broker::start();
        let n = 3;
        let real: Vec<String> = (0..n)
            .map(|_| {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                l.local_addr().unwrap().to_string()
            })
            .collect();
        let links: Vec<Vec<Option<LinkProxy>>> = (0..n)
            .map(|i| {
                (0..n)
                    .map(|j| (i != j).then(|| rt.block_on(LinkProxy::start(real[j].clone()))))
                    .collect()
            })
            .collect();
        let mut base = HostOptions::new(instance, 2, 2048);
        base.cluster = Some(format!("kwchaos-{}-{instance}", std::process::id()));
        base.brokers = broker.address.clone();
        let cluster = Cluster::start_routed(
            real.clone(),
            &base,
            |i, j| match &links[i][j] {
                Some(proxy) => proxy.address.clone(),
                None => real[i].clone(),
            },
            |_, _| {},
        );
        Bed {
            cluster,
            links,
            broker,
        }
    }

    fn partition(&self, host: usize, cut: bool) {
        for (i, row) in self.links.iter().enumerate() {
            for (j, link) in row.iter().enumerate() {
                if let Some(link) = link.as_ref().filter(|_| i == host || j == host) {
                    if cut {
                        link.cut()
                    } else {
                        link.heal()
                    }
                }
            }
        }
    }
}

/// Something to undo later.
enum Undo {
    Restart(usize),
    Continue(usize),
    Heal(usize),
    /// A broker or engine restart running in the background.
    Join(Option<std::thread::JoinHandle<()>>),
}

impl Bed {
    fn undo(&mut self, what: &mut Undo) {
        match what {
            Undo::Restart(h) => self.cluster.hosts[*h].spawn(),
            Undo::Continue(h) => self.cluster.hosts[*h].signal("-CONT"),
            Undo::Heal(h) => self.partition(*h, false),
            Undo::Join(handle) => {
                if let Some(h) = handle.take() {
                    let _ = h.join();
                }
            }
        }
    }
}

/// Runs the load and the faults, then checks. Prints a progress line per fault.
pub fn run(config: &ChaosConfig) -> Report {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let instance = 8_000_000 + std::process::id() % 100_000 + (config.seed % 1000) as u32 * 100;
    let mut bed = Bed::start(&rt, instance);
    let mut controller = rt.block_on(Controller::on(
        &bed.broker.address,
        instance,
        &format!("chaos{instance}"),
    ));
    bed.cluster
        .active(Duration::from_secs(60))
        .expect("no host became active");
    let warm = rt.block_on(controller.invoke("guest", "echo", true, json!({})));
    controller.wait_for(&warm, Duration::from_secs(60));

    let mut rng = Rng(config.seed.max(1));
    let mut report = Report::default();
    let engines = engine_restart();
    // every fault type once in each round, in a seeded order
    // KW_CHAOS_FAULTS=kill,broker,... narrows the schedule to those types
    let only = std::env::var("KW_CHAOS_FAULTS").unwrap_or_default();
    let mut order: Vec<Fault> = Fault::ALL
        .into_iter()
        .filter(|f| *f != Fault::RestartEngine || engines.is_ok())
        .filter(|f| only.is_empty() || only.split(',').any(|o| o.trim() == f.short()))
        .collect();
    assert!(
        !order.is_empty(),
        "KW_CHAOS_FAULTS={only} names no fault type here (kill, pause, partition-active, partition-standby, broker, engine)"
    );
    if let Err(why) = &engines {
        eprintln!("[chaos] leaving out the Docker daemon restart: {why}");
        report
            .skipped
            .push(format!("{}: {why}", Fault::RestartEngine.name()));
    }
    let mut round = 0usize;
    let mut ids = Vec::new();
    let mut sent_at = Vec::new();
    let mut deliveries = Vec::new();
    let mut undo: Vec<(Instant, Undo)> = Vec::new();
    let start = Instant::now();
    let tick = Duration::from_secs(1) / config.rate.max(1);
    let mut next_fault = start + config.fault_every;
    let mut i = 0u64;
    while start.elapsed() < config.load {
        sent_at.push(now_ms());
        let (id, delivery) = controller.invoke_queued("guest", "echo", json!({ "i": i }));
        ids.push(id);
        deliveries.push(delivery);
        i += 1;
        let now = Instant::now();
        let mut k = 0;
        while k < undo.len() {
            if undo[k].0 <= now {
                let (_, mut what) = undo.remove(k);
                bed.undo(&mut what);
            } else {
                k += 1;
            }
        }
        if now >= next_fault && undo.is_empty() {
            next_fault = now + config.fault_every;
            if round.is_multiple_of(order.len()) {
                for k in (1..order.len()).rev() {
                    order.swap(k, rng.below(k + 1));
                }
            }
            let fault = order[round % order.len()];
            round += 1;
            let Some(active) = bed.cluster.active(Duration::from_secs(2)) else {
                eprintln!("[chaos] no active host right now: fault skipped");
                continue;
            };
            let host = if fault == Fault::PartitionStandby {
                let standbys: Vec<usize> = (0..3).filter(|h| *h != active).collect();
                standbys[rng.below(standbys.len())]
            } else {
                active
            };
            let at_ms = now_ms();
            match fault {
                Fault::KillActive => {
                    bed.cluster.hosts[host].kill();
                    undo.push((now + Duration::from_secs(3), Undo::Restart(host)));
                }
                Fault::PauseActive => {
                    bed.cluster.hosts[host].signal("-STOP");
                    undo.push((now + Duration::from_secs(3), Undo::Continue(host)));
                }
                Fault::PartitionActive | Fault::PartitionStandby => {
                    bed.partition(host, true);
                    undo.push((now + Duration::from_secs(4), Undo::Heal(host)));
                }
                Fault::RestartBroker => {
                    let restart = bed.broker.restart(Duration::from_secs(2));
                    undo.push((now + Duration::from_secs(3), Undo::Join(Some(restart))));
                }
                Fault::RestartEngine => {
                    let script = engines.clone().expect("engine restart available");
                    let restart = std::thread::spawn(move || {
                        let status = std::process::Command::new("bash")
                            .arg(script)
                            .arg("restart-docker")
                            .status();
                        assert!(
                            status.as_ref().is_ok_and(|s| s.success()),
                            "restarting dockerd: {status:?}"
                        );
                    });
                    undo.push((now + Duration::from_secs(6), Undo::Join(Some(restart))));
                }
            }
            eprintln!(
                "[chaos] {:>5.1} s: {} (host {})",
                start.elapsed().as_secs_f64(),
                fault.name(),
                host + 1
            );
            report.faults.push(Injected {
                fault,
                host,
                at_ms,
                failover_ms: None,
                slowest_ms: None,
            });
        }
        // read acknowledgements as they come, as a controller does (a long run's backlog
        // would otherwise outgrow the wait after the load)
        controller.drain(tick / 2);
        std::thread::sleep(tick.saturating_sub(now.elapsed()));
    }
    for (_, mut what) in std::mem::take(&mut undo) {
        bed.undo(&mut what);
    }
    report.sent = ids.len();
    let undelivered = rt
        .block_on(futures::future::join_all(deliveries))
        .into_iter()
        .filter(|d| !matches!(d, Ok(Ok(_))))
        .count();
    assert_eq!(
        undelivered, 0,
        "the broker never took {undelivered} activations"
    );
    eprintln!(
        "[chaos] load done: {} sent; waiting for the backlog",
        ids.len()
    );
    // until every activation is answered, or 60 s pass without a new answer
    let mut answered = 0;
    loop {
        // asked per message received: the cheap test first (a full scan per message made
        // the 30-minute run's tally quadratic — 42,000 ids — and it never finished)
        let done = controller.poll_until(Duration::from_secs(60), |c| {
            c.received.len() > answered
                || (c.received.len() >= ids.len() && ids.iter().all(|i| c.received.contains_key(i)))
        });
        let all_answered = || ids.iter().all(|i| controller.received.contains_key(i));
        if !done || (controller.received.len() >= ids.len() && all_answered()) {
            break;
        }
        answered = controller.received.len();
    }
    // one reconcile round of the active host (every 10 s), and destroys finishing
    std::thread::sleep(Duration::from_secs(12));
    controller.poll_until(Duration::from_secs(1), |_| false);

    check(&mut report, &bed, &controller, &ids);
    slowest_answers(&mut report, &controller, &ids, &sent_at, config.fault_every);
    drop(bed.links.drain(..));
    report
}

/// The whisk error the next active host answers an activation with that may have run on the
/// host that failed (keepwarm's `runner::FAILED_OVER`).
pub fn is_failover_answer(record: &serde_json::Value) -> bool {
    record["response"]["statusCode"] == 3
        && record["response"]["result"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("another took over"))
}

fn check(report: &mut Report, bed: &Bed, controller: &Controller, ids: &[String]) {
    report.lost = ids
        .iter()
        .filter(|i| !controller.received.contains_key(*i))
        .count();
    report.duplicates = ids.iter().filter(|i| controller.completions(i) > 1).count();
    // what each answer said, for a post-mortem (the first few)
    for id in ids
        .iter()
        .filter(|i| controller.completions(i) > 1)
        .take(10)
    {
        let answers: Vec<String> = controller.received[id]
            .iter()
            .filter_map(|a| a.get("response").filter(|r| r.is_object()))
            .map(|r| {
                format!(
                    "start {} end {} status {} {}",
                    r["start"],
                    r["end"],
                    r["response"]["statusCode"],
                    annotation(r, "keepwarm").unwrap_or_default()
                )
            })
            .collect();
        eprintln!("[chaos] acknowledged twice: {id}: {answers:?}");
    }
    for (id, acks) in ids
        .iter()
        .filter_map(|i| Some((i, controller.received.get(i)?)))
    {
        for ack in acks {
            let Some(record) = ack.get("response").filter(|r| r.is_object()) else {
                continue;
            };
            if is_failover_answer(record) {
                report.failed_over += 1;
            } else if record["response"]["statusCode"].as_i64().unwrap_or(0) != 0 {
                report.keepwarm_errors += 1;
                eprintln!(
                    "[chaos] error caused by keepwarm: {id} at {}: {}",
                    record["start"], record["response"]
                );
            }
        }
    }

    let mut claims: Vec<Claim> = bed
        .cluster
        .hosts
        .iter()
        .enumerate()
        .flat_map(|(h, host)| claims_in(&host.log(), h))
        .collect();
    claims.sort_by_key(|c| c.at_ms);
    // stale: started under epoch E after a claim with a higher epoch was committed
    for host in &bed.cluster.hosts {
        // an activation answered as failed over ran nowhere: not a run, stale or not
        for record in host
            .records()
            .into_iter()
            .filter(|r| !is_failover_answer(r))
        {
            let epoch = annotation(&record, "keepwarm")
                .and_then(|k| k["epoch"].as_u64())
                .unwrap_or(0);
            let start = record["start"].as_i64().unwrap_or(0);
            if let Some(c) = claims.iter().find(|c| c.epoch > epoch && c.at_ms < start) {
                report.stale_runs += 1;
                eprintln!(
                    "[chaos] stale run: {} started at {start} under epoch {epoch}, after host {}'s claim of epoch {} at {}",
                    record["activationId"], c.host + 1, c.epoch, c.at_ms
                );
            }
        }
    }
    for f in &mut report.faults {
        if f.fault.moves_leadership() {
            f.failover_ms = claims
                .iter()
                .find(|c| c.at_ms > f.at_ms && c.host != f.host)
                .map(|c| c.at_ms - f.at_ms);
        }
    }
    let unprovoked: Vec<&Claim> = claims
        .iter()
        .skip(1)
        .filter(|c| {
            !report.faults.iter().any(|f| {
                f.fault.moves_leadership() && c.at_ms >= f.at_ms && c.at_ms - f.at_ms < 10_000
            })
        })
        .collect();
    for c in &unprovoked {
        let before = report.faults.iter().rev().find(|f| f.at_ms <= c.at_ms);
        eprintln!(
            "[chaos] claim not caused by a fault: host {} epoch {}, {}",
            c.host + 1,
            c.epoch,
            before.map_or("before any fault".into(), |f| format!(
                "{} ms after {} (host {})",
                c.at_ms - f.at_ms,
                f.fault.name(),
                f.host + 1
            ))
        );
    }
    report.unprovoked_claims = unprovoked.len();
    report.claims = claims;

    let engine = containers_of(&bed.cluster.label).len();
    let replicated = bed
        .cluster
        .active(Duration::from_secs(5))
        .and_then(|a| bed.cluster.status(a))
        .and_then(|s| s["containers"].as_u64())
        .unwrap_or(0) as usize;
    report.leaked = engine.saturating_sub(replicated);
    if report.leaked > 0 {
        let out = std::process::Command::new("docker")
            .args(["ps", "-a", "--format", "{{.Names}} {{.Status}}", "--filter"])
            .arg(format!("label=keepwarm.cluster={}", bed.cluster.label))
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        eprintln!("[chaos] engine: {engine} containers, replicated: {replicated}\n{out}");
    }
}

/// For each fault, how late the slowest activation sent in its window (until the next fault)
/// was answered: its record's `end` minus when it was sent.
fn slowest_answers(
    report: &mut Report,
    controller: &Controller,
    ids: &[String],
    sent_at: &[i64],
    window: Duration,
) {
    let answered: Vec<(i64, Option<i64>)> = ids
        .iter()
        .zip(sent_at)
        .map(|(id, sent)| {
            let end = controller
                .received
                .get(id)
                .and_then(|acks| acks.iter().find_map(|a| a["response"]["end"].as_i64()));
            (*sent, end.map(|end| end - sent))
        })
        .collect();
    let window = window.as_millis() as i64;
    for f in &mut report.faults {
        f.slowest_ms = answered
            .iter()
            .filter(|(sent, _)| *sent >= f.at_ms && *sent < f.at_ms + window)
            .filter_map(|(_, waited)| *waited)
            .max();
    }
}

fn percentile(sorted: &[i64], p: f64) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    Some(sorted[i])
}

impl Report {
    /// Whether the run kept every promise.
    pub fn clean(&self) -> bool {
        self.lost == 0 && self.stale_runs == 0 && self.leaked == 0 && self.keepwarm_errors == 0
    }

    /// The summary table.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(
            t,
            "| fault | count | failover p50 | failover p99 | slowest answer p50 | slowest answer max |"
        );
        let _ = writeln!(t, "|---|---|---|---|---|---|");
        let mut by: BTreeMap<Fault, Vec<&Injected>> = BTreeMap::new();
        for f in &self.faults {
            by.entry(f.fault).or_default().push(f);
        }
        let show = |v: Option<i64>| v.map_or("—".to_string(), |v| format!("{v} ms"));
        for (fault, injected) in by {
            let sorted = |pick: fn(&Injected) -> Option<i64>| {
                let mut ms: Vec<i64> = injected.iter().filter_map(|f| pick(f)).collect();
                ms.sort();
                ms
            };
            let failover = sorted(|f| f.failover_ms);
            let slowest = sorted(|f| f.slowest_ms);
            let _ = writeln!(
                t,
                "| {} | {} | {} | {} | {} | {} |",
                fault.name(),
                injected.len(),
                show(percentile(&failover, 0.5)),
                show(percentile(&failover, 0.99)),
                show(percentile(&slowest, 0.5)),
                show(slowest.last().copied()),
            );
        }
        for why in &self.skipped {
            let _ = writeln!(t, "\nleft out: {why}");
        }
        let _ = writeln!(
            t,
            "\nsent {}, lost {}, stale runs {}, leaked containers {}, duplicates {}, errors caused by keepwarm {}, answered as failed over (at most once) {}, claims {} ({} not caused by a fault)",
            self.sent,
            self.lost,
            self.stale_runs,
            self.leaked,
            self.duplicates,
            self.keepwarm_errors,
            self.failed_over,
            self.claims.len(),
            self.unprovoked_claims
        );
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_are_read_from_colored_log_lines() {
        let log = "\u{1b}[2m2026\u{1b}[0m INFO keepwarm::role: active takeover=Takeover { epoch: 243, claimed_at_ms: 1700000000123, took_ms: 5 }\nother line\n";
        let c = claims_in(log, 2);
        assert_eq!(c.len(), 1);
        assert_eq!(
            (c[0].host, c[0].epoch, c[0].at_ms),
            (2, 243, 1_700_000_000_123)
        );
    }

    #[test]
    fn the_schedule_depends_only_on_the_seed() {
        let a: Vec<usize> = {
            let mut r = Rng(7);
            (0..20).map(|_| r.below(4)).collect()
        };
        let b: Vec<usize> = {
            let mut r = Rng(7);
            (0..20).map(|_| r.below(4)).collect()
        };
        assert_eq!(a, b);
        assert!(a.iter().any(|x| *x != a[0]), "not constant: {a:?}");
    }
}
