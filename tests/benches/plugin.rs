//! Plugin runtime benchmark: instantiate time, trivial call overhead, and a `create` over a
//! unix socket through the plugin vs the same request sent by native hyper, in one run.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use keepwarm::factory::{ContainerFactory, ContainerSpec};
use keepwarm_tests::engine::FakeEngine;
use keepwarm_tests::stats::{ratio, summarize};
use keepwarm_tests::{component, load, load_with, runtime, spec};
use std::time::{Duration, Instant};

fn post_spec() -> ContainerSpec {
    ContainerSpec {
        name: "post".into(),
        image: "http://engine/v1.41/containers/create".into(),
        memory_mb: 256,
        cpu_shares: None,
        env: vec![("Image".into(), "keepwarm/action-runtime:latest".into())],
        labels: Vec::new(),
        network: None,
        port: 8080,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let file = component("probe");

    // 1. load (cached compile → link → instantiate → describe → init) and instantiate + init
    let mut loads = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let _ = keepwarm::plugin::WasmFactory::load(runtime(), spec("probe", file.clone(), &[]))
            .await
            .unwrap();
        loads.push(t.elapsed());
    }
    println!("load plugin (cached)          {}", summarize(loads));
    let mut s = spec("probe", file.clone(), &[]);
    s.limits.max_instances = 64;
    let probe = load_with(s).await;
    let mut inst = Vec::new();
    for n in 2..=64 {
        let t = Instant::now();
        probe.prewarm_instances(n).await.unwrap();
        inst.push(t.elapsed());
    }
    println!("instantiate + init            {}", summarize(inst));

    // 2. trivial call: destroy("x") returns Ok at once inside the guest
    let probe = load("probe", &[]).await;
    for _ in 0..2_000 {
        probe.destroy("x").await.unwrap();
    }
    let mut calls = Vec::new();
    for _ in 0..50_000 {
        let t = Instant::now();
        probe.destroy("x").await.unwrap();
        calls.push(t.elapsed());
    }
    let trivial = summarize(calls);
    println!("trivial call                  {trivial}   (budget p50 <= 5 us)");

    // 3. create over a unix socket: plugin vs native hyper, interleaved, same request
    let engine = FakeEngine::start("{\"Id\":\"abc\"}", Duration::ZERO).await;
    let probe = load("probe", &[("engine", &engine.route())]).await;
    let stream = tokio::net::UnixStream::connect(&engine.socket)
        .await
        .unwrap();
    let (mut native, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let body = serde_json::to_vec(&post_spec().env).unwrap();
    let (mut via_plugin, mut via_native) = (Vec::new(), Vec::new());
    for i in 0..6_000 {
        let t = Instant::now();
        probe.create(post_spec()).await.unwrap();
        let plugin_time = t.elapsed();
        let t = Instant::now();
        let req = hyper::Request::post("/v1.41/containers/create")
            .header("host", "engine")
            .header("content-type", "application/json")
            .header("content-length", body.len())
            .body(Full::new(Bytes::from(body.clone())))
            .unwrap();
        native.ready().await.unwrap();
        let resp = native.send_request(req).await.unwrap();
        let _ = resp.into_body().collect().await.unwrap().to_bytes();
        let native_time = t.elapsed();
        if i >= 1_000 {
            via_plugin.push(plugin_time);
            via_native.push(native_time);
        }
    }
    let (p, n) = (summarize(via_plugin), summarize(via_native));
    println!("create via plugin (unix sock) {p}");
    println!("same request, native hyper    {n}");
    println!(
        "plugin / native: p50 {:.2}x, mean {:.2}x; plugin overhead p50 {:.1?} (budget <= 50 us)",
        ratio(p.p50, n.p50),
        ratio(p.mean, n.mean),
        p.p50.saturating_sub(n.p50)
    );
}
