//! Cold start, in two parts, one run:
//!
//! 1. On real Docker, interleaved: an action proxy's create-to-ready through the Docker plugin
//!    against the same engine calls made natively (`docker run -d -p` of the same image as
//!    Engine API calls, then the proxy's first `/init` answered); and activations through Kafka
//!    and a real `keepwarm run` host that start cold (no stem cell of their memory size),
//!    on a prewarm (a 128 MB `shell:1` stem cell), and warm.
//! 2. A bursty trace of a few hundred actions with Zipf popularity, through a real host and
//!    the real Docker plugin against the simulated engine (`keepwarm_tests::docker_sim`), whose
//!    container start costs what part 1 measured for `docker run` here: the share of
//!    activations that were not warm and still found a prewarm, with reactive prewarming
//!    (upstream's `reactive` stem cell) off and on.
//!
//! A summary table closes the run.

use bollard::Docker;
use keepwarm::factory::{ContainerFactory, ContainerSpec};
use keepwarm_tests::docker_sim::{SimEngine, SimOptions};
use keepwarm_tests::host::{Host, HostOptions, PluginChoice};
use keepwarm_tests::kafka::{annotation, Controller};
use keepwarm_tests::native::{docker_run, remove};
use keepwarm_tests::proxy::{init_script, ProxyClient, ECHO_ACTION};
use keepwarm_tests::stats::{ratio, summarize, Summary};
use keepwarm_tests::{component, load_with, spec};
use rand::{rngs::StdRng, Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;

const IMAGE: &str = "keepwarm/action-runtime:latest";
const READY: Duration = Duration::from_secs(20);
const WAIT: Duration = Duration::from_secs(120);
/// Rounds of part 1 (each: one of every kind of start).
const ROUNDS: usize = 10;
/// The trace: actions, Zipf exponent, bursts and the arrivals in each, the quiet between.
const ACTIONS: usize = 300;
const ZIPF_S: f64 = 1.0;
const BURSTS: usize = 12;
const BURST: usize = 48;
const QUIET: Duration = Duration::from_secs(3);
/// How long the simulated proxy takes to answer `/run` (an action doing a little work).
const RUN_TIME: Duration = Duration::from_millis(100);

/// Writes one `shell:1` action per `(name, memory)` into a catalog directory.
fn catalog(dir: &Path, actions: &[(String, u32)]) {
    let ns = dir.join("guest");
    std::fs::create_dir_all(&ns).unwrap();
    for (name, memory) in actions {
        let doc = json!({
            "namespace": "guest", "name": name, "version": "0.0.1",
            "exec": { "kind": "shell:1", "code": "#!/bin/sh\necho '{\"ok\": true}'\n" },
            "limits": { "timeout": 10000, "memory": memory, "logs": 10, "concurrency": 1 }
        });
        std::fs::write(ns.join(format!("{name}.json")), doc.to_string()).unwrap();
    }
}

fn start_of(record: &Value) -> String {
    annotation(record, "keepwarm")
        .and_then(|k| k["start"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "none".into())
}

fn wait_of(record: &Value) -> Duration {
    Duration::from_millis(
        annotation(record, "waitTime")
            .and_then(|w| w.as_u64())
            .unwrap_or(0),
    )
}

/// Part 1's samples.
#[derive(Default)]
struct Starts {
    docker_run: Vec<Duration>,
    plugin: Vec<Duration>,
    /// End to end (controller → Kafka → host → acknowledgement) and the host's `waitTime`.
    by_start: BTreeMap<String, (Vec<Duration>, Vec<Duration>)>,
}

fn real_docker(rt: &Runtime) -> Starts {
    let tag = std::process::id() % 10_000;
    let base = 74_000_000 + tag * 10;
    let dir = tempfile::tempdir().unwrap();
    let mut actions = vec![("warm".to_owned(), 128)];
    for i in 0..ROUNDS {
        actions.push((format!("cold{i}"), 256));
        actions.push((format!("prewarm{i}"), 128));
    }
    catalog(dir.path(), &actions);
    let mut c = rt.block_on(Controller::new(base, &format!("cold{base}")));
    let mut opts = HostOptions::new(base, 2, 8192);
    opts.log_store = "log-driver";
    opts.actions = format!("catalog = \"{}\"", dir.path().display());
    let host = Host::start(&opts);
    let docker =
        Docker::connect_with_unix("/var/run/docker.sock", 60, bollard::API_DEFAULT_VERSION)
            .expect("docker");
    let mut s = spec(
        "docker",
        component("keepwarm_docker"),
        &[("docker", "unix:///var/run/docker.sock")],
    );
    s.limits.max_instances = 2;
    let plugin = rt.block_on(load_with(s));
    rt.block_on(plugin.prewarm_instances(2)).unwrap();
    let proxy = ProxyClient::default();

    let mut starts = Starts::default();
    // the warm action's first activation makes its container (and the host ready)
    let id = rt.block_on(c.invoke("guest", "warm", true, json!({})));
    c.wait_for(&id, WAIT);
    for i in 0..ROUNDS {
        let t = Instant::now();
        let (cid, address) = rt.block_on(docker_run(
            &docker,
            IMAGE,
            &format!("kwcs-n-{tag}-{i}"),
            &[],
        ));
        rt.block_on(proxy.post_ready(&address, "/init", &init_script(ECHO_ACTION), READY))
            .unwrap();
        starts.docker_run.push(t.elapsed());
        rt.block_on(remove(&docker, &cid));

        let t = Instant::now();
        let made = rt
            .block_on(plugin.create(ContainerSpec {
                name: format!("kwcs-p-{tag}-{i}"),
                image: IMAGE.into(),
                memory_mb: 128,
                cpu_shares: None,
                env: Vec::new(),
                labels: vec![("keepwarm.cluster".into(), "bench".into())],
                network: None,
                port: 8080,
            }))
            .unwrap();
        rt.block_on(proxy.post_ready(&made.address, "/init", &init_script(ECHO_ACTION), READY))
            .unwrap();
        starts.plugin.push(t.elapsed());
        rt.block_on(plugin.destroy(&made.id)).unwrap();

        for action in [format!("cold{i}"), format!("prewarm{i}"), "warm".into()] {
            let t = Instant::now();
            let id = rt.block_on(c.invoke("guest", &action, true, json!({ "i": i })));
            let record = Controller::record(&c.wait_for(&id, WAIT));
            let e2e = t.elapsed();
            let entry = starts.by_start.entry(start_of(&record)).or_default();
            entry.0.push(e2e);
            entry.1.push(wait_of(&record));
        }
        // the used prewarm is replaced by the next upkeep (every second)
        std::thread::sleep(Duration::from_secs(2));
    }
    drop(host);
    starts
}

/// Part 2: what the trace saw with one setting.
struct Trace {
    counts: BTreeMap<String, usize>,
    /// From the controller's send (the transaction's start) to the record's end, per start.
    latency: BTreeMap<String, Vec<Duration>>,
    took: Duration,
    /// Containers the engine made over the trace (the cost of prewarming).
    containers: usize,
}

impl Trace {
    /// The median latency of the activations that did not find a warm container.
    fn not_warm_p50(&self) -> Duration {
        let all: Vec<Duration> = self
            .latency
            .iter()
            .filter(|(k, _)| k.as_str() != "warm")
            .flat_map(|(_, v)| v.iter().copied())
            .collect();
        if all.is_empty() {
            Duration::ZERO
        } else {
            summarize(all).p50
        }
    }

    fn prewarm_hit_ratio(&self) -> f64 {
        let get = |k: &str| self.counts.get(k).copied().unwrap_or(0) as f64;
        let (p, cold) = (get("prewarm"), get("cold"));
        if p + cold == 0.0 {
            1.0
        } else {
            p / (p + cold)
        }
    }
}

/// The arrivals: for each burst, the actions it invokes (Zipf popularity, fixed seed).
fn arrivals() -> Vec<Vec<usize>> {
    let mut rng = StdRng::seed_from_u64(18);
    let zipf = Zipf::new(ACTIONS as f64, ZIPF_S).unwrap();
    (0..BURSTS)
        .map(|_| {
            // bursts vary in size around BURST
            let n = rng.random_range(BURST / 2..=BURST * 3 / 2);
            (0..n).map(|_| zipf.sample(&mut rng) as usize - 1).collect()
        })
        .collect()
}

fn trace(rt: &Runtime, start_ms: u64, reactive: bool) -> Trace {
    let sim = rt.block_on(SimEngine::start(SimOptions {
        start_latency: Duration::from_millis(start_ms),
        run_time: RUN_TIME,
        ..SimOptions::default()
    }));
    let instance = 75_000_000 + (std::process::id() % 10_000) * 10 + u32::from(reactive);
    let dir = tempfile::tempdir().unwrap();
    let actions: Vec<(String, u32)> = (0..ACTIONS).map(|i| (format!("z{i}"), 128)).collect();
    catalog(dir.path(), &actions);
    let mut c = rt.block_on(Controller::new(instance, &format!("trace{instance}")));
    // memory for every action at once: the trace measures prewarming, not eviction
    let mut opts = HostOptions::new(instance, 2, 128 * 4 * ACTIONS as u64);
    opts.log_store = "log-driver";
    opts.max_in_flight = 128;
    opts.actions = format!("catalog = \"{}\"", dir.path().display());
    opts.plugin = PluginChoice {
        routes: format!("docker = \"{}\"", sim.route()),
        ..PluginChoice::docker()
    };
    if reactive {
        opts.stem_cell = Some(json!({
            "initialCount": 2, "memory": "128 MB",
            "reactive": { "minCount": 2, "maxCount": 32, "ttl": "2 minutes", "threshold": 1, "increment": 1 }
        }));
    }
    let host = Host::start(&opts);
    // the host is up once an activation comes back; then its 2 prewarms are made
    let id = rt.block_on(c.invoke("guest", "z0", true, json!({})));
    c.wait_for(&id, WAIT);
    std::thread::sleep(Duration::from_secs(3));

    let started = Instant::now();
    let mut ids = Vec::new();
    for burst in arrivals() {
        let sends = burst
            .iter()
            .map(|a| c.invoke("guest", &actions[*a].0, true, json!({})));
        ids.extend(rt.block_on(futures::future::join_all(sends)));
        std::thread::sleep(QUIET);
    }
    assert!(
        c.poll_until(WAIT, |c| ids.iter().all(|i| c.received.contains_key(i))),
        "activations of the trace were not acknowledged"
    );
    let took = started.elapsed();
    let mut t = Trace {
        counts: BTreeMap::new(),
        latency: BTreeMap::new(),
        took,
        containers: sim.created(),
    };
    for id in &ids {
        let acks = c.wait_for(id, WAIT);
        let sent = acks[0]["transid"][1].as_i64().unwrap_or(0);
        let record = Controller::record(&acks);
        let start = start_of(&record);
        *t.counts.entry(start.clone()).or_default() += 1;
        let end = record["end"].as_i64().unwrap_or(sent);
        let latency = Duration::from_millis((end - sent).max(0) as u64);
        t.latency.entry(start).or_default().push(latency);
    }
    drop(host);
    t
}

fn line(name: &str, s: &Summary) -> String {
    format!("{name:<44} {s}")
}

fn main() {
    let rt = Runtime::new().unwrap();
    println!("== part 1: real Docker, {ROUNDS} rounds interleaved");
    let starts = real_docker(&rt);
    let docker_run = summarize(starts.docker_run.clone());
    let plugin = summarize(starts.plugin.clone());
    println!(
        "{}",
        line("docker run → proxy ready (Engine API)", &docker_run)
    );
    println!("{}", line("plugin create → proxy ready", &plugin));
    let mut e2e = BTreeMap::new();
    for (start, (total, wait)) in &starts.by_start {
        let (total, wait) = (summarize(total.clone()), summarize(wait.clone()));
        println!(
            "{}",
            line(&format!("activation, {start} start, end to end"), &total)
        );
        println!(
            "{}",
            line(&format!("activation, {start} start, waitTime"), &wait)
        );
        e2e.insert(start.clone(), total);
    }
    let p50 = |k: &str| e2e.get(k).map(|s: &Summary| s.p50);

    let start_ms = docker_run.p50.as_millis() as u64;
    println!("\n== part 2: bursty Zipf trace on the simulated engine (container start {start_ms} ms, as docker run here)");
    let mut traces = Vec::new();
    for reactive in [false, true] {
        let t = trace(&rt, start_ms, reactive);
        println!(
            "reactive {}: {:?} in {:.1?}; prewarm hit ratio {:.2}",
            if reactive { "on " } else { "off" },
            t.counts,
            t.took,
            t.prewarm_hit_ratio()
        );
        for (start, latency) in &t.latency {
            println!(
                "{}",
                line(
                    &format!("  sent → record's end, {start} start"),
                    &summarize(latency.clone())
                )
            );
        }
        traces.push((reactive, t));
    }

    println!("\nsummary: cold start");
    println!(
        "  create → ready: plugin / docker run p50 {:.2} ({:.1?} vs {:.1?})",
        ratio(plugin.p50, docker_run.p50),
        plugin.p50,
        docker_run.p50
    );
    if let (Some(cold), Some(pre), Some(warm)) = (p50("cold"), p50("prewarm"), p50("warm")) {
        println!(
            "  activation end to end p50: cold {cold:.1?}, prewarm {pre:.1?}, warm {warm:.1?}; \
             cold / docker run {:.2}, prewarm / cold {:.2}, warm / cold {:.3}",
            ratio(cold, docker_run.p50),
            ratio(pre, cold),
            ratio(warm, cold)
        );
    } else {
        println!(
            "  not every kind of start was seen: {:?}",
            e2e.keys().collect::<Vec<_>>()
        );
    }
    for (reactive, t) in &traces {
        println!(
            "  trace ({ACTIONS} actions, Zipf s={ZIPF_S}, {BURSTS} bursts of ~{BURST}), reactive {}: prewarm hit ratio {:.2} {:?}, {} containers made, not-warm p50 {:.1?}",
            if *reactive { "on " } else { "off" },
            t.prewarm_hit_ratio(),
            t.counts,
            t.containers,
            t.not_warm_p50()
        );
    }
}
