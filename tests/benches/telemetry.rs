//! What observability costs on the activation path: two real hosts on the same broker and
//! engine, one as shipped (text logs, no traces), one with `[log] format = "json"` at debug
//! level and `[trace]` exporting every activation's spans to an OTLP/HTTP collector (an
//! in-process server that accepts and discards them). Warm blocking latency, interleaved, and
//! throughput at concurrency 8; ratios traced / plain. Both hosts record the Prometheus
//! metrics (always on).

use keepwarm_tests::host::{Host, HostOptions};
use keepwarm_tests::kafka::Controller;
use keepwarm_tests::stats::{ratio, summarize};
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;

const WAIT: Duration = Duration::from_secs(120);

fn collector(rt: &Runtime) -> String {
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(|_: axum::body::Bytes| async { "" }),
    );
    rt.spawn(async move { axum::serve(listener, app).await.unwrap() });
    address
}

fn host(rt: &Runtime, instance: u32, extra: String, conc: usize) -> (Host, Controller) {
    let mut c = rt.block_on(Controller::new(instance, &format!("tel{instance}")));
    let mut opts = HostOptions::new(instance, 0, 8192);
    opts.extra = extra;
    opts.max_in_flight = conc;
    let host = Host::start(&opts);
    // warm: `conc` containers of `third`, one of `other`
    let warm: Vec<String> = (0..conc)
        .map(|_| rt.block_on(c.invoke("guest", "third", true, json!({}))))
        .chain([rt.block_on(c.invoke("guest", "other", true, json!({})))])
        .collect();
    for id in &warm {
        c.wait_for(id, WAIT);
    }
    (host, c)
}

fn main() {
    let rt = Runtime::new().unwrap();
    let run = std::process::id() % 10_000;
    let collector = collector(&rt);
    let traced_config = format!(
        "[log]\nformat = \"json\"\nfilter = \"keepwarm=debug,warn\"\n[trace]\nendpoint = \"http://{collector}\"\n"
    );
    let conc = 8;
    let (plain_host, mut plain) = host(&rt, 75_000_000 + run * 10, String::new(), conc);
    let (traced_host, mut traced) = host(&rt, 75_000_000 + run * 10 + 1, traced_config, conc);

    // latency, interleaved
    let (mut p, mut t) = (Vec::new(), Vec::new());
    for i in 0..300 {
        for (c, samples) in [(&mut plain, &mut p), (&mut traced, &mut t)] {
            let start = Instant::now();
            let id = rt.block_on(c.invoke("guest", "other", true, json!({ "i": i })));
            c.wait_for_result(&id, WAIT);
            samples.push(start.elapsed());
            c.wait_for(&id, WAIT);
        }
    }
    let (p, t) = (summarize(p), summarize(t));
    println!("warm blocking latency, plain   {p}");
    println!("warm blocking latency, traced  {t}");

    // throughput at concurrency 8, alternating rounds
    let n = 400;
    let (mut plain_rates, mut traced_rates) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        for (c, rates) in [
            (&mut plain, &mut plain_rates),
            (&mut traced, &mut traced_rates),
        ] {
            let start = Instant::now();
            let ids = rt.block_on(c.invoke_many("guest", "third", n));
            assert!(c.poll_until(WAIT, |c| ids.iter().all(|i| c.received.contains_key(i))));
            rates.push(n as f64 / start.elapsed().as_secs_f64());
        }
    }
    let best = |r: &[f64]| r.iter().copied().fold(0.0, f64::max);
    let (pr, tr) = (best(&plain_rates), best(&traced_rates));
    drop((plain_host, traced_host));
    println!("\nsummary: JSON debug logs + OTLP traces against the host as shipped (same run)");
    println!(
        "  latency p50: plain {:.2?}, traced {:.2?}: traced/plain {:.2} (adds {:.2?})",
        p.p50,
        t.p50,
        ratio(t.p50, p.p50),
        t.p50.saturating_sub(p.p50)
    );
    println!(
        "  throughput at concurrency {conc}: plain {pr:.0}/s, traced {tr:.0}/s (best of 3): traced/plain {:.2}",
        tr / pr
    );
}
