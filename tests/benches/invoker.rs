//! Invoker benchmark: warm activation latency through Kafka (tansu) + a real `keepwarm run`
//! host vs the minimal pipeline (`keepwarm_tests::pipeline` run as a process of its own:
//! consumer → `/run` → producer on the same broker and containers, the ceiling of any invoker
//! here) vs calling `/run` on the
//! same container directly; throughput at concurrency 1, 8 and 32 against both baselines at
//! the same concurrency. One run, ratios, and a summary table at the end.

use keepwarm_tests::host::{Host, HostOptions};
use keepwarm_tests::kafka::{annotation, brokers, Controller};
use keepwarm_tests::proxy::{run_body, ProxyClient};
use keepwarm_tests::stats::{ratio, summarize};
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;

const WAIT: Duration = Duration::from_secs(120);

/// The minimal pipeline as a process of its own (the `pipeline` binary), as the host is one;
/// killed when dropped.
struct Pipeline(std::process::Child);

impl Pipeline {
    /// Starts it and waits until it has answered one activation (its clients connected and
    /// its partition assigned), as the host is up before it is measured.
    fn start(rt: &Runtime, c: &mut Controller, instance: u32, containers: &[String]) -> Pipeline {
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_pipeline"))
            .arg(brokers())
            .arg(instance.to_string())
            .args(containers)
            .spawn()
            .expect("start the pipeline");
        let id = rt.block_on(c.invoke("guest", "other", true, json!({})));
        c.wait_for(&id, WAIT);
        Pipeline(child)
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() {
    let rt = Runtime::new().unwrap();
    let run = std::process::id() % 10_000;
    let mut table = Vec::new();
    for (base, log_store) in [
        (72_000_000 + run * 100, "collect"),
        (73_000_000 + run * 100, "log-driver"),
    ] {
        println!("== log-store = {log_store}");
        table.extend(bench(&rt, base, log_store));
    }
    println!("\nsummary: keepwarm against the minimal pipeline and direct /run (same broker, same containers)");
    for line in table {
        println!("  {line}");
    }
}

fn bench(rt: &Runtime, base: u32, log_store: &'static str) -> Vec<String> {
    let mut table = Vec::new();
    let mut c = rt.block_on(Controller::new(base, &format!("bench{base}")));
    let mut opts = HostOptions::new(base, 0, 8192);
    opts.log_store = log_store;
    let host = Host::start(&opts);

    // warm up one container, learn its address
    let id = rt.block_on(c.invoke("guest", "other", true, json!({})));
    let record = Controller::record(&c.wait_for(&id, WAIT));
    let address = annotation(&record, "keepwarm").unwrap()["address"]
        .as_str()
        .unwrap()
        .to_owned();
    let proxy = ProxyClient::default();
    let mut cp = rt.block_on(Controller::new(base + 50, &format!("bench{}", base + 50)));
    let pipeline = Pipeline::start(rt, &mut cp, base + 50, std::slice::from_ref(&address));

    // 1. latency, interleaved
    let (mut via_host, mut in_host, mut direct) = (Vec::new(), Vec::new(), Vec::new());
    let (mut via_pipeline, mut host_done) = (Vec::new(), Vec::new());
    for i in 0..300 {
        // blocking: the time to the result is what the caller waits for; the completion
        // (after the logs are read, with `collect`) frees the container for the next one
        let t = Instant::now();
        let id = rt.block_on(cp.invoke("guest", "other", true, json!({ "i": i })));
        cp.wait_for_result(&id, WAIT);
        via_pipeline.push(t.elapsed());
        cp.wait_for(&id, WAIT);
        let t = Instant::now();
        let id = rt.block_on(c.invoke("guest", "other", true, json!({ "i": i })));
        let record = c.wait_for_result(&id, WAIT);
        via_host.push(t.elapsed());
        c.wait_for(&id, WAIT);
        host_done.push(t.elapsed());
        in_host.push(Duration::from_millis(
            record["duration"].as_u64().unwrap_or(0),
        ));
        let t = Instant::now();
        rt.block_on(proxy.post(&address, "/run", &run_body(json!({ "i": i }), "direct")))
            .unwrap();
        direct.push(t.elapsed());
    }
    drop(pipeline);
    let (h, d) = (summarize(via_host), summarize(direct));
    let p = summarize(via_pipeline);
    println!("warm blocking activation, controller→Kafka→host→result  {h}");
    println!("the same through the minimal pipeline       {p}");
    println!(
        "the host's completion (after the logs)     {}",
        summarize(host_done)
    );
    println!(
        "in-host time (record duration, ms units)    {}",
        summarize(in_host)
    );
    println!("direct /run on the same container           {d}");
    println!(
        "added by Kafka + host: p50 {:.2?} ({:.1}x direct)",
        h.p50.saturating_sub(d.p50),
        ratio(h.p50, d.p50)
    );
    table.push(format!(
        "{log_store:<10} latency p50: host {:.2?}, pipeline {:.2?} (host adds {:.2?}), direct {:.2?}",
        h.p50,
        p.p50,
        h.p50.saturating_sub(p.p50),
        d.p50
    ));

    drop(host);

    // 2. throughput at concurrency 1, 8, 32: a host allowed exactly `conc` in flight
    for conc in [1usize, 8, 32] {
        let instance = base + conc as u32;
        let mut c = rt.block_on(Controller::new(instance, &format!("bench{instance}")));
        let mut opts = HostOptions::new(instance, 0, 8192);
        opts.max_in_flight = conc;
        opts.log_store = log_store;
        let host = Host::start(&opts);
        let n = 320usize.max(conc * 16);
        // make sure `conc` containers are warm (one message per container, all in flight)
        let warm: Vec<String> = (0..conc)
            .map(|_| rt.block_on(c.invoke("guest", "third", true, json!({}))))
            .collect();
        let mut addresses = std::collections::BTreeSet::new();
        for id in &warm {
            let r = Controller::record(&c.wait_for(id, WAIT));
            addresses.insert(
                annotation(&r, "keepwarm").unwrap()["address"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            );
        }
        let t = Instant::now();
        let ids = rt.block_on(c.invoke_many("guest", "third", n));
        assert!(c.poll_until(WAIT, |c| ids.iter().all(|i| c.received.contains_key(i))));
        let host_rate = n as f64 / t.elapsed().as_secs_f64();

        let addresses: Vec<String> = addresses.into_iter().collect();
        let t = Instant::now();
        rt.block_on(async {
            let tasks: Vec<_> = (0..conc)
                .map(|k| {
                    let (proxy, addr) = (proxy.clone(), addresses[k % addresses.len()].clone());
                    tokio::spawn(async move {
                        for i in 0..n / conc {
                            proxy
                                .post(&addr, "/run", &run_body(json!({ "i": i }), "d"))
                                .await
                                .unwrap();
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
        });
        let direct_rate = (n / conc * conc) as f64 / t.elapsed().as_secs_f64();

        // the minimal pipeline on the same containers, the same number in flight
        let pi = instance + 50;
        let mut cp = rt.block_on(Controller::new(pi, &format!("bench{pi}")));
        let pipeline = Pipeline::start(rt, &mut cp, pi, &addresses);
        let t = Instant::now();
        let ids = rt.block_on(cp.invoke_many("guest", "third", n));
        assert!(cp.poll_until(WAIT, |c| ids.iter().all(|i| c.received.contains_key(i))));
        let pipeline_rate = n as f64 / t.elapsed().as_secs_f64();
        drop(pipeline);
        println!(
            "throughput at concurrency {conc:>2}: host {host_rate:>7.1}/s, pipeline {pipeline_rate:>7.1}/s, direct {direct_rate:>7.1}/s; host/pipeline {:.2}, host/direct {:.2} ({} warm containers)",
            host_rate / pipeline_rate,
            host_rate / direct_rate,
            addresses.len()
        );
        table.push(format!(
            "{log_store:<10} concurrency {conc:>2}: host/pipeline {:.2}, host/direct {:.2}, pipeline/direct {:.2}",
            host_rate / pipeline_rate,
            host_rate / direct_rate,
            pipeline_rate / direct_rate
        ));
        drop(host);
    }
    table
}
