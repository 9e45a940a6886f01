//! The main job, as a demo: three keepwarm hosts (Docker plugin) form a cluster; a stand-in
//! OpenWhisk controller sends a stream of activations; the active host is killed with SIGKILL
//! mid-stream; a standby takes over. Prints the failover time, warm containers kept vs lost,
//! and activations lost and duplicated.

use keepwarm_tests::cluster::Cluster;
use keepwarm_tests::host::containers_of;
use keepwarm_tests::kafka::{annotation, Controller};
use serde_json::json;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn main() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let instance = 9_000_000 + std::process::id() % 100_000;
    let mut controller = rt.block_on(Controller::new(instance, &format!("demo{instance}")));
    println!(
        "== starting three keepwarm hosts (Raft on loopback, Docker plugin, invoker{instance})"
    );
    let mut cluster = Cluster::start(3, instance, 2);
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
    for action in ["echo", "other", "third", "failing"] {
        let id = rt.block_on(controller.invoke("guest", action, false, json!({})));
        controller.wait_for(&id, Duration::from_secs(60));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let before = containers_of(&cluster.label).len();
    println!("   {before} idle containers, replicated to the standbys");

    println!(
        "== sending 200 activations at ~50/s; killing host {} (SIGKILL) after the 100th",
        active + 1
    );
    let mut ids = Vec::new();
    let mut killed_at = 0;
    for i in 0..200 {
        let action = ["echo", "other", "third"][i % 3];
        ids.push(rt.block_on(controller.invoke("guest", action, false, json!({ "i": i }))));
        if i == 99 {
            killed_at = now_ms();
            cluster.hosts[active].kill();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let next = cluster
        .active(Duration::from_secs(10))
        .expect("no standby took over");
    let status = cluster.status(next).unwrap();
    let failover_ms = status["consuming_since_ms"].as_i64().unwrap() - killed_at;
    let takeover = &status["last_takeover"];

    let all = controller.poll_until(Duration::from_secs(120), |c| {
        ids.iter().all(|i| c.received.contains_key(i))
    });
    let lost = ids
        .iter()
        .filter(|i| !controller.received.contains_key(*i))
        .count();
    let duplicated = ids
        .iter()
        .filter(|i| controller.received.get(*i).is_some_and(|a| a.len() > 1))
        .count();
    let id = rt.block_on(controller.invoke("guest", "other", false, json!({})));
    let record = Controller::record(&controller.wait_for(&id, Duration::from_secs(60)));

    println!();
    println!("== result");
    println!(
        "   failover (SIGKILL → host {} consuming): {failover_ms} ms",
        next + 1
    );
    println!(
        "   containers kept: {} re-attached, {} lost; {} busy at the kill destroyed (not reused)",
        takeover["reattached"], takeover["lost"], takeover["busy_destroyed"]
    );
    println!("   activations: 200 sent, {lost} lost, {duplicated} acknowledged twice (in flight at the kill)");
    println!(
        "   containers now: {} (were {before})",
        containers_of(&cluster.label).len()
    );
    match annotation(&record, "keepwarm") {
        Some(k) => println!(
            "   an action warm before the kill ran {} on the new host",
            k["start"].as_str().unwrap_or("?")
        ),
        None => println!("   the follow-up activation: {}", record["response"]),
    }
    assert!(all && lost == 0, "activations were lost");
}
