//! Invoker benchmark: warm activation latency through Kafka (tansu) + a real `keepwarm run`
//! host vs calling `/run` on the same container directly; throughput at concurrency 1, 8 and
//! 32 against direct `/run` calls at the same concurrency. One run, ratios.

use keepwarm_tests::host::{Host, HostOptions};
use keepwarm_tests::kafka::{annotation, Controller};
use keepwarm_tests::proxy::{run_body, ProxyClient};
use keepwarm_tests::stats::{ratio, summarize};
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;

const WAIT: Duration = Duration::from_secs(120);

fn main() {
    let rt = Runtime::new().unwrap();
    let run = std::process::id() % 10_000;
    for (base, log_store) in [
        (72_000_000 + run * 100, "collect"),
        (73_000_000 + run * 100, "log-driver"),
    ] {
        println!("== log-store = {log_store}");
        bench(&rt, base, log_store);
    }
}

fn bench(rt: &Runtime, base: u32, log_store: &'static str) {
    let mut c = rt.block_on(Controller::new(base, &format!("bench{base}")));
    let mut opts = HostOptions::new(base, 0, 8192);
    opts.log_store = log_store;
    let host = Host::start(&opts);

    // warm up one container, learn its address
    let id = rt.block_on(c.invoke("guest", "other", false, json!({})));
    let record = Controller::record(&c.wait_for(&id, WAIT));
    let address = annotation(&record, "keepwarm").unwrap()["address"]
        .as_str()
        .unwrap()
        .to_owned();
    let proxy = ProxyClient::default();

    // 1. latency, interleaved
    let (mut via_host, mut in_host, mut direct) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..300 {
        let t = Instant::now();
        let id = rt.block_on(c.invoke("guest", "other", false, json!({ "i": i })));
        let acks = c.wait_for(&id, WAIT);
        via_host.push(t.elapsed());
        let record = Controller::record(&acks);
        in_host.push(Duration::from_millis(
            record["duration"].as_u64().unwrap_or(0),
        ));
        let t = Instant::now();
        rt.block_on(proxy.post(&address, "/run", &run_body(json!({ "i": i }), "direct")))
            .unwrap();
        direct.push(t.elapsed());
    }
    let (h, d) = (summarize(via_host), summarize(direct));
    println!("warm activation, controller→Kafka→host→ack  {h}");
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
            .map(|_| rt.block_on(c.invoke("guest", "third", false, json!({}))))
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
        println!(
            "throughput at concurrency {conc:>2}: host {host_rate:>7.1}/s, direct {direct_rate:>7.1}/s, ratio {:.2} ({} warm containers)",
            host_rate / direct_rate,
            addresses.len()
        );
        drop(host);
    }
}
