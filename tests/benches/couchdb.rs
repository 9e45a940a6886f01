//! CouchDB stores benchmark (pouchdb-server with authentication, loopback): action fetch from
//! the cache vs from CouchDB; activation record throughput through the batched store vs one
//! PUT per record; warm activation latency through a host with both CouchDB stores vs the
//! catalog directory and the JSON-lines log. One run, ratios.

use keepwarm::action::couchdb::CouchActions;
use keepwarm::action::ActionStore;
use keepwarm::action::FullyQualifiedEntityName;
use keepwarm::activation::{ActivationResponse, WhiskActivation};
use keepwarm::activation_store::{document, CouchRecords};
use keepwarm_tests::couchdb::CouchServer;
use keepwarm_tests::host::{Host, HostOptions};
use keepwarm_tests::kafka::Controller;
use keepwarm_tests::stats::{compare, summarize};
use serde_json::json;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;

fn main() {
    let rt = Runtime::new().unwrap();
    let server = CouchServer::start();
    fetch(&rt, &server);
    records(&rt, &server);
    host_overhead(&rt, &server);
}

fn fetch(rt: &Runtime, server: &CouchServer) {
    let whisks = rt.block_on(server.db("bench_", "whisks"));
    let code = format!("#!/bin/sh\n{}echo '{{}}'\n", "# pad\n".repeat(4000));
    for (name, code) in [
        ("small", "#!/bin/sh\necho '{}'\n".to_string()),
        ("attached", code),
    ] {
        let doc = json!({ "namespace": "guest", "name": name, "exec": { "kind": "shell:1", "code": code } });
        rt.block_on(keepwarm::action::put::put(&whisks, &doc))
            .unwrap();
        let store = CouchActions::new(whisks.clone());
        let fqn: FullyQualifiedEntityName =
            serde_json::from_value(json!(format!("guest/{name}"))).unwrap();
        let rev = rt.block_on(store.resolve(&fqn, None)).unwrap().rev;
        let time = |revision: Option<&str>, n: usize| {
            (0..n)
                .map(|_| {
                    let t = Instant::now();
                    rt.block_on(store.resolve(&fqn, revision)).unwrap();
                    t.elapsed()
                })
                .collect::<Vec<_>>()
        };
        let uncached = time(None, 300);
        let cached = time(rev.as_deref(), 3000);
        compare(
            &format!("action fetch ({name})"),
            ("couchdb", uncached),
            ("cached", cached),
        );
    }
}

fn record(i: usize) -> WhiskActivation {
    WhiskActivation {
        namespace: "guest".into(),
        name: "echo".into(),
        subject: "s".into(),
        activation_id: format!("{:032x}", uuid::Uuid::new_v4().as_u128() ^ i as u128),
        start: 1,
        end: 2,
        cause: None,
        response: ActivationResponse::success(json!({"i": i})),
        logs: vec!["2026-01-01T00:00:00Z stdout: a log line".into()],
        version: "0.0.1".into(),
        publish: false,
        annotations: Vec::new(),
        duration: Some(1),
    }
}

fn records(rt: &Runtime, server: &CouchServer) {
    let n = 3000;
    let dir = tempfile::tempdir().unwrap();
    let db = rt.block_on(server.db("bench_", "activations"));
    let t = Instant::now();
    rt.block_on(async {
        let store = CouchRecords::start(db.clone(), dir.path(), 1 << 30).unwrap();
        let writes: Vec<_> = (0..n).map(record).collect();
        futures::future::join_all(writes.iter().map(|r| store.store(r))).await;
        while store.stats.stored.load(Ordering::Relaxed) < n as u64 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let batched = n as f64 / t.elapsed().as_secs_f64();
    let single_n = 500;
    let t = Instant::now();
    rt.block_on(async {
        for i in 0..single_n {
            let doc = document(&record(i), 0);
            db.put(doc["_id"].as_str().unwrap(), &doc).await.unwrap();
        }
    });
    let single = single_n as f64 / t.elapsed().as_secs_f64();
    println!("records to CouchDB: batched store {batched:.0}/s ({n} records, backlog fsync'd), one PUT each {single:.0}/s ({single_n}); batched / single {:.1}x", batched / single);
}

fn host_overhead(rt: &Runtime, server: &CouchServer) {
    let whisks = rt.block_on(server.db("bench_", "whisks"));
    let echo = serde_json::from_str(
        &std::fs::read_to_string(
            keepwarm_tests::host::repo_root().join("tests/fixtures/actions/guest/echo.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let rev = rt
        .block_on(keepwarm::action::put::put(&whisks, &echo))
        .unwrap()
        .rev;
    let run = std::process::id() % 10_000;
    let mut samples = Vec::new();
    // a stock controller names the document's revision (the cache serves it); without one,
    // upstream and keepwarm read the document every time
    for (k, couch, revision) in [(0, false, None), (1, true, Some(rev)), (2, true, None)] {
        let base = 74_000_000 + run * 10 + k;
        let mut c = rt.block_on(Controller::new(base, &format!("bench{base}")));
        let mut opts = HostOptions::new(base, 0, 2048);
        if couch {
            opts.actions = "store = \"couchdb\"".into();
            opts.extra = format!(
                "[activations]\nstore = \"couchdb\"\n{}",
                server.toml("bench_")
            );
        }
        let host = Host::start(&opts);
        let invoke = |c: &mut Controller, i: usize| {
            let (id, mut msg) = c.message("guest", "echo", false, json!({ "i": i }));
            msg["revision"] = json!(revision);
            rt.block_on(c.send_raw(&msg.to_string()));
            c.wait_for(&id, Duration::from_secs(60));
        };
        invoke(&mut c, 0);
        let lat: Vec<Duration> = (0..300)
            .map(|i| {
                let t = Instant::now();
                invoke(&mut c, i);
                t.elapsed()
            })
            .collect();
        let name = match (couch, revision.is_some()) {
            (false, _) => "catalog + log",
            (true, true) => "couchdb stores, revision named",
            (true, false) => "couchdb stores, no revision",
        };
        println!("warm activation, {name}: {}", summarize(lat.clone()));
        samples.push((name, lat));
        drop(host);
    }
    let (base_name, base) = samples.remove(0);
    for (name, lat) in samples {
        compare("warm activation", (name, lat), (base_name, base.clone()));
    }
}
