//! The main job, as a demo: three keepwarm hosts (Docker plugin) form a cluster; a stand-in
//! OpenWhisk controller sends a stream of activations; the active host is killed with SIGKILL
//! mid-stream; a standby takes over. Prints the failover time, warm containers kept vs lost,
//! activations lost and duplicated, whether each action that had a warm container re-attached
//! ran **warm** first thing on the new host, and why containers came or went afterwards.
//! Exits non-zero when an activation is lost or a re-attached warm container was not reused.
//!
//! `KW_DEMO=machines` (`make demo-machines`) runs the same story across machines: each host,
//! the Docker engine (over TLS) and the broker on a machine of its own (network namespaces,
//! `keepwarm_tests::netbed`), and the active host's whole machine fails instead of its process.

use keepwarm_tests::cluster::Cluster;
use keepwarm_tests::host::{containers_of, HostOptions};
use keepwarm_tests::kafka::{annotation, Controller};
use keepwarm_tests::netbed::site::{on_site, Site, HOSTS};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const STREAMED: [&str; 3] = ["echo", "other", "third"];
const WARMED: [&str; 4] = ["echo", "other", "third", "failing"];

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The record an activation's acknowledgements carry, when one was run at or after `since_ms`
/// (by the new host: the old one was dead by then).
fn record_since(acks: &[Value], since_ms: i64) -> Option<Value> {
    acks.iter()
        .filter_map(|a| a.get("response").filter(|r| r.is_object()))
        .find(|r| r["start"].as_i64().is_some_and(|s| s >= since_ms))
        .cloned()
}

/// `warm`, `prewarm` or `cold`, and the container, from keepwarm's annotation.
fn start_of(record: &Value) -> (String, String) {
    let k = annotation(record, "keepwarm").unwrap_or(Value::Null);
    (
        k["start"].as_str().unwrap_or("?").to_owned(),
        k["container"].as_str().unwrap_or("?").to_owned(),
    )
}

/// Where the demo runs.
enum Stage<'a> {
    /// Every host on this machine, sharing its Docker daemon and the broker (the default).
    Local,
    /// Each host, the engine and the broker on a machine of its own.
    Machines(Site<'a>),
}

impl Stage<'_> {
    fn start(&self, instance: u32) -> (Controller, Cluster) {
        let rt = tokio::runtime::Runtime::new().unwrap();
        match self {
            Stage::Local => {
                println!(
                    "== starting three keepwarm hosts (Raft over mutual TLS on loopback, Docker plugin, invoker{instance})"
                );
                let c = rt.block_on(Controller::new(instance, &format!("demo{instance}")));
                (c, Cluster::start(3, instance, 2))
            }
            Stage::Machines(site) => {
                println!(
                    "== starting three keepwarm hosts on machines h1-h3 ({}), the Docker engine on \
                     e1 ({}, TLS), the broker on b ({}); invoker{instance}",
                    HOSTS.map(|m| site.bed.machine(m).ip.clone()).join(", "),
                    site.engines[0].ip,
                    site.broker.address
                );
                let options = HostOptions::new(instance, 2, 2048);
                site.start_cluster(&rt, &format!("demo{instance}"), options)
            }
        }
    }

    /// Kills the active host (its process, or its whole machine); says what it did.
    fn fail(&self, cluster: &mut Cluster, victim: usize) -> String {
        match self {
            Stage::Local => {
                cluster.hosts[victim].kill();
                format!("killed host {} (SIGKILL)", victim + 1)
            }
            Stage::Machines(site) => {
                site.bed.fail(HOSTS[victim]);
                cluster.hosts[victim].kill();
                format!(
                    "machine {} failed (every process killed, its link cut)",
                    HOSTS[victim]
                )
            }
        }
    }

    /// The cluster's containers on the engine (short ids, as `docker ps` prints them).
    fn container_ids(&self, label: &str) -> Vec<String> {
        match self {
            Stage::Local => containers_of(label),
            Stage::Machines(site) => site.engines[0]
                .containers(label)
                .into_iter()
                .map(|id| id.chars().take(12).collect())
                .collect(),
        }
    }

    fn containers(&self, label: &str) -> usize {
        self.container_ids(label).len()
    }
}

fn main() {
    if std::env::var("KW_DEMO").as_deref() != Ok("machines") {
        return demo(&Stage::Local);
    }
    on_site(&["e1"], |site| demo(&Stage::Machines(site)));
}

fn demo(stage: &Stage) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let instance = 9_000_000 + std::process::id() % 100_000;
    let (mut controller, mut cluster) = stage.start(instance);
    let active = cluster
        .active(Duration::from_secs(60))
        .expect("no host became active");
    println!(
        "   host {} is active; hosts {:?} stand by",
        active + 1,
        (0..3)
            .filter(|i| *i != active)
            .map(|i| i + 1)
            .collect::<Vec<_>>()
    );

    println!("== warming up: four actions, each leaves a warm container (plus 2 prewarmed)");
    let mut warm_before: BTreeMap<&str, String> = BTreeMap::new();
    for action in WARMED {
        let id = rt.block_on(controller.invoke("guest", action, true, json!({})));
        let record = Controller::record(&controller.wait_for(&id, Duration::from_secs(60)));
        warm_before.insert(action, start_of(&record).1);
    }
    std::thread::sleep(Duration::from_millis(1500));
    let before = stage.containers(&cluster.label);
    println!("   {before} idle containers, replicated to the standbys");

    println!("== sending 200 activations at ~50/s; the active host fails after the 100th");
    let mut ids = Vec::new();
    let mut killed_at = 0;
    let mut victim = active;
    // every container the engine holds right after the kill: only these can be re-attached
    // (the next host has not claimed yet)
    let mut at_kill = Vec::new();
    for i in 0..200 {
        let action = STREAMED[i % 3];
        let id = rt.block_on(controller.invoke("guest", action, true, json!({ "i": i })));
        ids.push((action, id));
        if i == 99 {
            victim = cluster
                .active(Duration::from_secs(5))
                .expect("no host is active before the kill");
            if victim != active {
                println!("   (leadership had moved to host {} meanwhile)", victim + 1);
            }
            killed_at = now_ms();
            println!("   {}", stage.fail(&mut cluster, victim));
            at_kill = stage.container_ids(&cluster.label);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let next = cluster
        .active(Duration::from_secs(10))
        .expect("no standby took over");
    let status = cluster.status(next).unwrap();
    assert_ne!(next, victim, "the killed host cannot be active");
    let consuming_since = status["consuming_since_ms"].as_i64().unwrap();
    let failover_ms = consuming_since - killed_at;
    let takeover = status["last_takeover"].clone();
    let warm_actions: BTreeSet<String> = takeover["warm_actions"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();

    // an activation is done once its slot is freed (a completion); a blocking one also gets
    // its result before that, which is not a second acknowledgement
    let all = controller.poll_until(Duration::from_secs(120), |c| {
        ids.iter().all(|(_, i)| c.completions(i) > 0)
    });
    let lost = ids
        .iter()
        .filter(|(_, i)| controller.completions(i) == 0)
        .count();
    let duplicated = ids
        .iter()
        .filter(|(_, i)| controller.completions(i) > 1)
        .count();
    // the delivery contract (at most once): what may have run on the killed host is answered
    // with the failover's whisk error, not run again
    let failed_over = ids
        .iter()
        .filter_map(|(_, i)| controller.received.get(i))
        .filter(|acks| keepwarm_tests::chaos::is_failover_answer(&Controller::record(acks)))
        .count();

    // What the new host ran, per action, in the order it started them (start time on this
    // machine's clock; activations of the backlog start concurrently, so the order they were
    // sent in says little). An action the stream did not touch ("failing") gets one now.
    let mut ran_new: BTreeMap<String, Vec<(i64, String, String)>> = BTreeMap::new();
    let mut durations: Vec<i64> = ids
        .iter()
        .filter_map(|(_, id)| controller.received.get(id))
        .filter_map(|acks| record_since(acks, consuming_since))
        .filter_map(|r| r["duration"].as_i64())
        .collect();
    durations.sort();
    let mut before_kill: Vec<i64> = ids
        .iter()
        .filter_map(|(_, id)| controller.received.get(id))
        .map(|acks| Controller::record(acks))
        .filter(|r| r["start"].as_i64().is_some_and(|s| s < killed_at))
        .filter_map(|r| r["duration"].as_i64())
        .collect();
    before_kill.sort();
    fn note(
        ran_new: &mut BTreeMap<String, Vec<(i64, String, String)>>,
        acks: &[Value],
        consuming_since: i64,
    ) {
        // an activation answered as failed over ran nowhere: it says nothing of warmth
        let record = record_since(acks, consuming_since)
            .filter(|r| !keepwarm_tests::chaos::is_failover_answer(r));
        if let Some(record) = record {
            let (start, container) = start_of(&record);
            let path = format!("guest/{}", record["name"].as_str().unwrap_or("?"));
            let at = record["start"].as_i64().unwrap_or(0);
            ran_new
                .entry(path)
                .or_default()
                .push((at, start, container));
        }
    }
    for (_, id) in &ids {
        let acks = controller.received.get(id).cloned().unwrap_or_default();
        note(&mut ran_new, &acks, consuming_since);
    }
    for action in WARMED {
        if !ran_new.contains_key(&format!("guest/{action}")) {
            let id = rt.block_on(controller.invoke("guest", action, true, json!({})));
            let acks = controller.wait_for(&id, Duration::from_secs(60));
            note(&mut ran_new, &acks, consuming_since);
        }
    }
    for runs in ran_new.values_mut() {
        runs.sort();
    }
    std::thread::sleep(Duration::from_millis(1500)); // one upkeep round: /status has the pool
                                                     // containers evicted for memory are gone from the engine once their destroy finishes (up to
                                                     // 10 s on a loaded machine): wait for the engine to hold what the pool holds
    let held = |pool: &Value| {
        ["prewarm", "warm_idle", "busy"]
            .iter()
            .map(|k| pool[k].as_u64().unwrap_or(0) as usize)
            .sum::<usize>()
    };
    let settle = std::time::Instant::now();
    let pool = loop {
        let pool = cluster.status(next).unwrap()["pool"].clone();
        if held(&pool) == stage.containers(&cluster.label)
            || settle.elapsed() > Duration::from_secs(10)
        {
            break pool;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let churn = &pool["churn"];

    println!();
    println!("== result");
    println!(
        "   failover ({} → host {} consuming): {failover_ms} ms",
        match stage {
            Stage::Local => "SIGKILL",
            Stage::Machines { .. } => "machine failure",
        },
        next + 1
    );
    println!(
        "   containers kept: {} re-attached (warm ones for {}; {} of them busy at the kill but \
         never sent their /run, so offered again at once), {} lost; {} busy at the kill held \
         apart until their activation ended ({} adopted, {} destroyed so far); {} being \
         initialized at the kill destroyed",
        takeover["reattached"],
        warm_actions.iter().cloned().collect::<Vec<_>>().join(", "),
        takeover["unstarted"],
        takeover["lost"],
        takeover["quarantined"],
        takeover["quarantine_adopted"],
        takeover["quarantine_destroyed"],
        takeover["busy_destroyed"]
    );
    println!(
        "   activations: 200 sent, {lost} lost, {duplicated} acknowledged twice; \
         {failed_over} in a container at the kill answered as failed over, not run again (at most once)"
    );
    if !before_kill.is_empty() {
        println!(
            "   on the old host: {} activations, duration p50 {} ms, max {} ms",
            before_kill.len(),
            before_kill[before_kill.len() / 2],
            before_kill[before_kill.len() - 1]
        );
    }
    if !durations.is_empty() {
        println!(
            "   on the new host: {} activations, duration p50 {} ms, max {} ms",
            durations.len(),
            durations[durations.len() / 2],
            durations[durations.len() - 1]
        );
    }

    // The promise: the action's re-attached warm container served it, warm, before any
    // activation of it had to start a container (ties at the same millisecond count as first).
    // Containers each action used before the kill: the only ones a takeover can re-attach.
    let mut old_containers: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (action, container) in &warm_before {
        old_containers
            .entry(format!("guest/{action}"))
            .or_default()
            .insert(container.clone());
    }
    for acks in controller.received.values() {
        for r in acks
            .iter()
            .filter_map(|a| a.get("response").filter(|r| r.is_object()))
        {
            if r["start"].as_i64().is_some_and(|s| s < killed_at) {
                let path = format!("guest/{}", r["name"].as_str().unwrap_or("?"));
                old_containers
                    .entry(path)
                    .or_default()
                    .insert(start_of(r).1);
            }
        }
    }
    let engine_now = stage.container_ids(&cluster.label);
    let mut not_reused = Vec::new();
    let mut evicted = Vec::new();
    for path in &warm_actions {
        let old = old_containers.get(path).cloned().unwrap_or_default();
        let runs = ran_new.get(path).cloned().unwrap_or_default();
        // warm in a container that was there at the kill: one of its own, re-attached (a
        // container the old host made during the stream counts, as the takeover adopts it)
        let was_there = |c: &String| {
            old.contains(c) || at_kill.iter().any(|short| c.starts_with(short.as_str()))
        };
        if runs
            .iter()
            .any(|(_, start, c)| start == "warm" && was_there(c))
        {
            continue;
        }
        // Not reused: fine only if every container it had is gone (evicted for memory).
        let still_there: Vec<&String> = old
            .iter()
            .filter(|c| engine_now.iter().any(|short| c.starts_with(short.as_str())))
            .collect();
        let runs: Vec<&str> = runs.iter().map(|(_, s, _)| s.as_str()).collect();
        if still_there.is_empty() && churn["destroyed_evicted"].as_u64().unwrap_or(0) > 0 {
            evicted.push(format!("{path} (its runs: {runs:?})"));
        } else {
            not_reused.push(format!(
                "{path}: a re-attached container never served it; its runs: {runs:?}"
            ));
        }
    }
    println!(
        "   warm after failover: {} of {} actions (the first activation of each action whose \
         warm container was re-attached ran warm in it)",
        warm_actions.len() - not_reused.len() - evicted.len(),
        warm_actions.len()
    );
    for e in &evicted {
        println!("     {e}: its re-attached container was evicted for memory before it was needed");
    }
    for action in WARMED {
        let path = format!("guest/{action}");
        if !warm_actions.contains(&path) {
            println!(
                "     {path}: its warm container ({}) was busy at the kill, so it was held apart \
                 until its activation ended; its first activation ran {}",
                &warm_before[action][..12.min(warm_before[action].len())],
                ran_new
                    .get(&path)
                    .and_then(|r| r.first())
                    .map_or("?", |(_, s, _)| s.as_str())
            );
        }
    }
    println!(
        "   containers: {before} before the kill, {} now (engine: {})",
        pool["prewarm"].as_u64().unwrap_or(0)
            + pool["warm_idle"].as_u64().unwrap_or(0)
            + pool["busy"].as_u64().unwrap_or(0),
        stage.containers(&cluster.label)
    );
    println!(
        "     since the takeover, created: {} prewarm (stem cells topped up to 2 again), \
         {} cold (a burst needed more containers than were idle)",
        churn["created_prewarm"], churn["created_cold"]
    );
    println!(
        "     since the takeover, destroyed: {} busy at the kill, {} evicted (memory), {} idle \
         timeout, {} expired prewarm, {} failed",
        takeover["busy_destroyed"].as_u64().unwrap_or(0)
            + takeover["quarantine_destroyed"].as_u64().unwrap_or(0),
        churn["destroyed_evicted"],
        churn["destroyed_idle"],
        churn["destroyed_prewarm_expired"],
        churn["destroyed_failed"]
    );
    assert!(all && lost == 0, "activations were lost");

    assert!(
        not_reused.is_empty(),
        "a re-attached warm container was not reused when it could have been: {}",
        not_reused.join("; ")
    );
}
