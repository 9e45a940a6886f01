//! A leader that cannot serve hands the active role over, with real processes: three hosts,
//! tansu, Docker. Host 1 reaches no broker (its `[kafka] brokers` points at a closed port) but
//! is otherwise healthy, and it has the shortest election timeout, so it leads first. Its feed
//! fails; it must hand leadership to a member that can consume (openraft 0.9 has no leadership
//! transfer: it stops heartbeating and campaigning until another member leads), and it must
//! not take the role back while it still cannot serve.

use keepwarm_tests::cluster::Cluster;
use keepwarm_tests::host::HostOptions;
use keepwarm_tests::kafka::Controller;
use serde_json::json;
use std::time::{Duration, Instant};

#[test]
fn a_leader_without_a_broker_hands_the_active_role_to_a_member_that_can_consume() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let instance = 7600_0000 + std::process::id() % 10_000;
    let mut controller = rt.block_on(Controller::new(instance, &format!("h{instance}")));
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string(); // dropped below: nothing listens there
    let cluster = Cluster::start_each(3, &HostOptions::new(instance, 0, 1024), |i, opts| {
        if i == 0 {
            opts.brokers = closed.clone();
        } else {
            if i == 1 {
                // host 1 initializes first, so it does not find a cluster already running
                // and rejoin it as a member that waits (and never leads first)
                std::thread::sleep(Duration::from_secs(3));
            }
            opts.extra
                .push_str("election-timeout-min-ms = 1500\nelection-timeout-max-ms = 2500\n");
        }
    });

    // host 1 leads first, its feed fails, and it hands over
    let started = Instant::now();
    let mut handing_over_at = None;
    let mut led = false;
    let active = loop {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no member that can consume became active; host 1's log:\n{}",
            tail(&cluster.hosts[0].log())
        );
        if let Some(s) = cluster.status(0) {
            led |= s["state"] == "Leader";
            if s["role"] == "handing-over" && handing_over_at.is_none() {
                handing_over_at = Some(Instant::now());
            }
        }
        match (1..3).find(|i| cluster.status(*i).is_some_and(|s| s["consuming"] == true)) {
            Some(i) if handing_over_at.is_some() => break i,
            _ => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    let handed_in = handing_over_at.unwrap().elapsed();
    assert!(led, "host 1 never led: the test proves nothing");
    eprintln!(
        "host {} consumes {handed_in:?} after host 1 began handing over",
        active + 1
    );

    // the new active host serves; host 1 does not take the role back while it cannot serve
    let id = rt.block_on(controller.invoke("guest", "echo", true, json!({"after": "hand-over"})));
    let acks = controller.wait_for(&id, Duration::from_secs(60));
    let record = Controller::record(&acks);
    assert_eq!(record["response"]["statusCode"], 0, "{record}");
    std::thread::sleep(Duration::from_secs(5));
    assert!(
        cluster.hosts[0].log().contains("leadership handed over"),
        "{}",
        tail(&cluster.hosts[0].log())
    );
    let s = cluster.status(0).expect("host 1 answers /status");
    assert_ne!(s["consuming"], true, "{s}");
    assert!(
        cluster
            .status(active)
            .is_some_and(|s| s["consuming"] == true),
        "host {} stopped consuming",
        active + 1
    );
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
