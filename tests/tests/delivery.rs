//! The delivery contract after a failover (README, "The delivery contract"), with real
//! processes: three `keepwarm` hosts, tansu, the Docker plugin driving the simulated engine
//! (`docker_sim`: its action proxies count the `/run`s each activation id reaches, which a
//! real runtime cannot report from outside). The active host is SIGKILLed mid-activation
//! again and again while activations stream in.
//!
//! Under the default (at most once): every activation gets exactly one completion on
//! `completed{N}`, none reaches a container twice, and one that may have run on the killed
//! host is answered with the failover's whisk error instead of running again.

use keepwarm_tests::cluster::Cluster;
use keepwarm_tests::docker_sim::{SimEngine, SimOptions};
use keepwarm_tests::host::{HostOptions, PluginChoice};
use keepwarm_tests::kafka::Controller;
use serde_json::json;
use std::time::{Duration, Instant};

/// SIGKILLs of the active host in one run (each mid-activation).
const KILLS: usize = 50;

#[test]
fn killing_the_active_host_mid_activation_runs_nothing_twice_and_answers_everything_once() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sim = rt.block_on(SimEngine::start(SimOptions {
        // long enough that a kill lands while activations are in their container
        run_time: Duration::from_millis(400),
        ..SimOptions::default()
    }));
    let instance = 7900_0000 + std::process::id() % 10_000;
    let mut c = rt.block_on(Controller::new(instance, &format!("dl{instance}")));
    let mut base = HostOptions::new(instance, 0, 2048);
    base.plugin = PluginChoice {
        routes: format!("docker = \"{}\"", sim.route()),
        ..PluginChoice::docker()
    };
    let mut cluster = Cluster::start_from(3, &base);
    let mut active = cluster
        .active(Duration::from_secs(120))
        .expect("no active host");

    let started = Instant::now();
    let mut ids = Vec::new();
    let mut in_container_at_kill = 0;
    for round in 0..KILLS {
        // blocking activations: their acknowledgements carry the record
        let (batch, deliveries): (Vec<String>, Vec<_>) = (0..6)
            .map(|i| c.invoke_queued("guest", "echo", json!({ "round": round, "i": i })))
            .unzip();
        for delivered in rt.block_on(futures::future::join_all(deliveries)) {
            delivered.expect("the broker took it").expect("the broker took it");
        }
        // wait until some of them are in a container, then kill the host running them
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let running = batch
                .iter()
                .filter(|id| sim.runs().contains_key(*id))
                .count();
            if running > 0 || Instant::now() > deadline {
                in_container_at_kill += running;
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        ids.extend(batch);
        cluster.hosts[active].kill();
        let next = cluster
            .active(Duration::from_secs(30))
            .unwrap_or_else(|| panic!("round {round}: no standby took over"));
        // the killed host comes back as a standby before the next kill (a quorum of 3 stays)
        cluster.rejoin(active, Duration::from_secs(60), |_| true);
        active = next;
    }
    eprintln!(
        "{KILLS} kills in {:?}; {in_container_at_kill} activations were in a container at a kill",
        started.elapsed()
    );
    let all = c.poll_until(Duration::from_secs(120), |c| {
        ids.iter().all(|i| c.received.contains_key(i))
    });
    let unanswered: Vec<&String> = ids
        .iter()
        .filter(|i| !c.received.contains_key(*i))
        .collect();
    assert!(
        all,
        "{} of {} activations never answered: {:?}\n{}",
        unanswered.len(),
        ids.len(),
        &unanswered[..unanswered.len().min(5)],
        cluster.hosts[active].log()
    );
    // a moment for any late second answer
    c.poll_until(Duration::from_secs(3), |_| false);

    let runs = sim.runs();
    let twice: Vec<(&String, usize)> = ids
        .iter()
        .filter_map(|i| Some((i, *runs.get(i)?)))
        .filter(|(_, n)| *n > 1)
        .collect();
    let answered_twice: Vec<&String> = ids.iter().filter(|i| c.completions(i) != 1).collect();
    let failed_over = ids
        .iter()
        .filter(|i| keepwarm_tests::chaos::is_failover_answer(&Controller::record(&c.received[*i])))
        .count();
    eprintln!(
        "{} activations: {} ran once, {failed_over} answered as failed over, {} ran twice, {} not answered exactly once",
        ids.len(),
        ids.iter().filter(|i| runs.get(*i) == Some(&1)).count(),
        twice.len(),
        answered_twice.len()
    );
    assert!(
        twice.is_empty(),
        "activations that reached a container twice: {twice:?}"
    );
    assert!(
        answered_twice.is_empty(),
        "activations not completed exactly once: {:?}",
        answered_twice
            .iter()
            .map(|i| (i, c.completions(i)))
            .collect::<Vec<_>>()
    );
    assert!(
        in_container_at_kill > 0 && failed_over > 0,
        "no kill landed mid-activation: the test proves nothing"
    );
    // every other activation ran, exactly once, and succeeded
    for id in &ids {
        let record = Controller::record(&c.received[id]);
        if record["response"]["statusCode"] != 3 {
            assert_eq!(record["response"]["statusCode"], 0, "{record}");
            assert_eq!(runs.get(id), Some(&1), "{id}: {record}");
        }
    }
}
