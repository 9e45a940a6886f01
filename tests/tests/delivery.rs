//! The delivery contract after a failover (README, "The delivery contract"), with real
//! processes: three `keepwarm` hosts, tansu, the Docker plugin driving the simulated engine
//! (`docker_sim`: its action proxies count the `/run`s each activation id reaches, which a
//! real runtime cannot report from outside). The active host is SIGKILLed mid-activation
//! again and again while activations stream in.
//!
//! - Under the default (at most once): every activation gets exactly one completion on
//!   `completed{N}`, none reaches a container twice, and one that may have run on the killed
//!   host is answered with the failover's whisk error instead of running again.
//! - Under `delivery = "at-least-once"`: every activation gets exactly one completion, a
//!   success; some run twice (that is what the opt-in allows).

use keepwarm_tests::chaos::is_failover_answer;
use keepwarm_tests::cluster::Cluster;
use keepwarm_tests::docker_sim::{SimEngine, SimOptions};
use keepwarm_tests::host::{HostOptions, PluginChoice};
use keepwarm_tests::kafka::Controller;
use serde_json::json;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// What a run of kills came to.
struct Outcome {
    ids: Vec<String>,
    /// `/run`s reached, by activation id.
    runs: HashMap<String, usize>,
    controller: Controller,
    in_container_at_kill: usize,
}

impl Outcome {
    fn record(&self, id: &str) -> serde_json::Value {
        Controller::record(&self.controller.received[id])
    }

    fn not_completed_once(&self) -> Vec<(&String, usize)> {
        self.ids
            .iter()
            .map(|i| (i, self.controller.completions(i)))
            .filter(|(_, n)| *n != 1)
            .collect()
    }

    fn ran_twice(&self) -> Vec<(&String, usize)> {
        self.ids
            .iter()
            .filter_map(|i| Some((i, *self.runs.get(i)?)))
            .filter(|(_, n)| *n > 1)
            .collect()
    }
}

/// What happens to the active host mid-activation.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    /// SIGKILL; it comes back as a standby.
    Kill,
    /// SIGSTOP until another host has taken over and answered the batch, then SIGCONT: the
    /// paused host wakes to the answers of the `/run`s it had sent.
    Pause,
}

/// As [`fault_mid_activation`], with SIGKILL.
fn kill_mid_activation(kills: usize, instance: u32, delivery: &'static str) -> Outcome {
    fault_mid_activation(kills, instance, delivery, Fault::Kill)
}

/// Three hosts on the simulated engine; `rounds` times: six blocking activations, and as
/// soon as one of them is in its container, `fault` the active host and wait for the next.
fn fault_mid_activation(
    rounds: usize,
    instance: u32,
    delivery: &'static str,
    fault: Fault,
) -> Outcome {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sim = rt.block_on(SimEngine::start(SimOptions {
        // long enough that a kill lands while activations are in their container
        run_time: Duration::from_millis(400),
        ..SimOptions::default()
    }));
    let mut c = rt.block_on(Controller::new(instance, &format!("dl{instance}")));
    let mut base = HostOptions::new(instance, 0, 2048);
    base.delivery = delivery;
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
    for round in 0..rounds {
        // blocking activations: their acknowledgements carry the record
        let (batch, deliveries): (Vec<String>, Vec<_>) = (0..6)
            .map(|i| c.invoke_queued("guest", "echo", json!({ "round": round, "i": i })))
            .unzip();
        for delivered in rt.block_on(futures::future::join_all(deliveries)) {
            delivered
                .expect("the broker took it")
                .expect("the broker took it");
        }
        // wait until one of them is in a container, then kill the host running them
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let runs = sim.runs();
            let running = batch.iter().filter(|id| runs.contains_key(*id)).count();
            if running > 0 || Instant::now() > deadline {
                in_container_at_kill += running;
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if fault == Fault::Pause {
            cluster.hosts[active].signal("-STOP");
            let deadline = Instant::now() + Duration::from_secs(30);
            let next = loop {
                match cluster.active(Duration::from_secs(1)) {
                    Some(next) if next != active => break next,
                    _ => assert!(
                        Instant::now() < deadline,
                        "round {round}: no standby took over from the paused host"
                    ),
                }
            };
            // what the new host answers, it has answered before the paused one wakes
            c.poll_until(Duration::from_secs(20), |c| {
                batch.iter().all(|i| c.received.contains_key(i))
            });
            cluster.hosts[active].signal("-CONT");
            let deadline = Instant::now() + Duration::from_secs(30);
            while !cluster
                .status(active)
                .is_some_and(|s| s["state"] == "Follower" && s["consuming"] == false)
            {
                assert!(
                    Instant::now() < deadline,
                    "round {round}: the woken host did not stand by"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            ids.extend(batch);
            active = next;
            continue;
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
        "[{delivery}] {rounds} faults ({fault:?}) in {:?}; {in_container_at_kill} activations were in a container at one",
        started.elapsed()
    );
    // a completion, not only a result: one whose result went out from a host that then
    // failed is completed by the next host up to 10 s later (`OWED_COMPLETION_WAIT`)
    let all = c.poll_until(Duration::from_secs(120), |c| {
        ids.iter().all(|i| c.completions(i) >= 1)
    });
    let unanswered: Vec<&String> = ids.iter().filter(|i| c.completions(i) == 0).collect();
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
    Outcome {
        ids,
        runs: sim.runs(),
        controller: c,
        in_container_at_kill,
    }
}

#[test]
fn at_most_once_killing_the_active_host_mid_activation_runs_nothing_twice() {
    let o = kill_mid_activation(50, 7900_0000 + std::process::id() % 10_000, "at-most-once");
    let failed_over = o
        .ids
        .iter()
        .filter(|i| is_failover_answer(&o.record(i)))
        .count();
    eprintln!(
        "[at-most-once] {} activations: {} reached a container once, {failed_over} answered as failed over, {} reached one twice, {} not completed exactly once",
        o.ids.len(),
        o.ids.iter().filter(|i| o.runs.get(*i) == Some(&1)).count(),
        o.ran_twice().len(),
        o.not_completed_once().len()
    );
    assert!(
        o.ran_twice().is_empty(),
        "reached a container twice: {:?}",
        o.ran_twice()
    );
    assert!(
        o.not_completed_once().is_empty(),
        "not completed exactly once: {:?}",
        o.not_completed_once()
    );
    assert!(
        o.in_container_at_kill > 0 && failed_over > 0,
        "no kill landed mid-activation: the test proves nothing"
    );
    // every other activation ran, exactly once, and succeeded
    for id in &o.ids {
        let record = o.record(id);
        if !is_failover_answer(&record) {
            assert_eq!(record["response"]["statusCode"], 0, "{record}");
            assert_eq!(o.runs.get(id), Some(&1), "{id}: {record}");
        }
    }
}

#[test]
fn a_paused_active_host_that_wakes_answers_nothing_the_next_one_answered() {
    // Found by the 30-minute chaos run: 7 activations acknowledged twice. A host paused
    // (SIGSTOP) mid-activation wakes to its `/run`'s answer after another host took over
    // and answered it as failed over, and published a second completion.
    let o = fault_mid_activation(
        6,
        7960_0000 + std::process::id() % 10_000,
        "at-most-once",
        Fault::Pause,
    );
    let failed_over = o
        .ids
        .iter()
        .filter(|i| is_failover_answer(&o.record(i)))
        .count();
    eprintln!(
        "[pause] {} activations: {failed_over} answered as failed over, {} reached a container twice, {} not completed exactly once",
        o.ids.len(),
        o.ran_twice().len(),
        o.not_completed_once().len()
    );
    assert!(
        o.in_container_at_kill > 0 && failed_over > 0,
        "no pause landed mid-activation: the test proves nothing"
    );
    assert!(
        o.not_completed_once().is_empty(),
        "not completed exactly once: {:?}",
        o.not_completed_once()
    );
    assert!(
        o.ran_twice().is_empty(),
        "reached a container twice: {:?}",
        o.ran_twice()
    );
}

#[test]
fn at_least_once_every_activation_gets_one_result_a_success() {
    let o = kill_mid_activation(20, 7910_0000 + std::process::id() % 10_000, "at-least-once");
    eprintln!(
        "[at-least-once] {} activations: {} reached a container twice (allowed), {} not completed exactly once",
        o.ids.len(),
        o.ran_twice().len(),
        o.not_completed_once().len()
    );
    assert!(
        o.not_completed_once().is_empty(),
        "not completed exactly once: {:?}",
        o.not_completed_once()
    );
    for id in &o.ids {
        let record = o.record(id);
        assert_eq!(record["response"]["statusCode"], 0, "{id}: {record}");
    }
    assert!(
        o.in_container_at_kill > 0,
        "no kill landed mid-activation: the test proves nothing"
    );
}

/// The search the next active host makes before answering an activation the failed host may
/// have answered already: a completion on the controller's topic is found; a result message
/// (no slot freed) or another activation's completion is not.
#[test]
fn an_earlier_completion_is_found_on_the_completion_topic() {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let rt = tokio::runtime::Runtime::new().unwrap();
    let n = 7920_0000 + std::process::id() % 10_000;
    let topic = format!("completed{n}");
    rt.block_on(keepwarm_tests::kafka::create_topics(&[topic.as_str()]));
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        - 10_000;
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", keepwarm_tests::kafka::brokers())
        .create()
        .unwrap();
    let instance = json!({"instance": 0, "userMemory": "1024 MB", "instanceType": "invoker", "tags": [], "dedicatedNamespaces": []});
    for message in [
        json!({"transid": ["t", 1], "response": {"activationId": "only-a-result"}}),
        json!({"transid": ["t", 1], "activationId": "answered", "isSystemError": false, "instance": instance}),
    ] {
        rt.block_on(producer.send(
            FutureRecord::<(), _>::to(&topic).payload(&message.to_string()),
            Duration::from_secs(10),
        ))
        .expect("sent");
    }
    let index = keepwarm::feed::acknowledged::Index::new(&keepwarm_tests::kafka::brokers());
    let found = |id: &str| index.answered(&topic, id, since).expect("read to the end");
    use keepwarm::feed::acknowledged::Answered;
    assert_eq!(found("answered"), Answered::Yes);
    // a result frees no slot, but says the activation ran
    assert_eq!(found("only-a-result"), Answered::ResultOnly(None));
    assert_eq!(found("never-seen"), Answered::No);
    // the index reads on from where it was: a completion published since is found
    rt.block_on(producer.send(
        FutureRecord::<(), _>::to(&topic).payload(
            &json!({"transid": ["t", 2], "activationId": "never-seen", "isSystemError": false, "instance": instance})
                .to_string(),
        ),
        Duration::from_secs(10),
    ))
    .expect("sent");
    assert_eq!(found("never-seen"), Answered::Yes);
    // and an activation sent earlier than it has read from is looked for from then
    assert_eq!(
        index.answered(&topic, "answered", since - 60_000).unwrap(),
        Answered::Yes
    );
}

/// Issue 32, part 3: a warm container busy at the kill is held apart until its output shows
/// the activation ended (the sentinels on stdout and stderr), then adopted — not destroyed:
/// the new active host reports it adopted, and the next activation of its action runs in it
/// (no container is created). The activation itself is answered as failed over (at most once).
#[test]
fn a_container_busy_at_the_kill_is_adopted_once_its_activation_ended() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    // long enough that the takeover comes before the activation ends: the quarantine waits
    let sim = rt.block_on(SimEngine::start(SimOptions {
        run_time: Duration::from_secs(3),
        ..SimOptions::default()
    }));
    let instance = 7930_0000 + std::process::id() % 10_000;
    let mut c = rt.block_on(Controller::new(instance, &format!("qa{instance}")));
    let mut base = HostOptions::new(instance, 0, 2048);
    base.plugin = PluginChoice {
        routes: format!("docker = \"{}\"", sim.route()),
        ..PluginChoice::docker()
    };
    let mut cluster = Cluster::start_from(3, &base);
    let active = cluster
        .active(Duration::from_secs(120))
        .expect("no active host");
    let invoke = |c: &Controller, i: u32| {
        let (id, delivered) = c.invoke_queued("guest", "echo", json!({ "i": i }));
        rt.block_on(delivered)
            .expect("the broker took it")
            .expect("the broker took it");
        id
    };
    // a warm container for the action, then an activation running in it
    let warm = invoke(&c, 0);
    assert!(
        c.poll_until(Duration::from_secs(60), |c| c.received.contains_key(&warm)),
        "the first activation was not answered"
    );
    let busy = invoke(&c, 1);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !sim.runs().contains_key(&busy) {
        assert!(
            Instant::now() < deadline,
            "the activation never reached its container"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let created = sim.created();
    cluster.hosts[active].kill();
    let next = cluster
        .active(Duration::from_secs(30))
        .expect("no standby took over");
    let takeover = |cluster: &Cluster| {
        cluster
            .status(next)
            .map(|s| s["last_takeover"].clone())
            .unwrap_or_default()
    };
    assert_eq!(
        takeover(&cluster)["quarantined"],
        1,
        "{}",
        takeover(&cluster)
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while takeover(&cluster)["quarantine_adopted"] != 1 {
        assert!(
            Instant::now() < deadline,
            "not adopted: {}\n{}",
            takeover(&cluster),
            cluster.hosts[next].log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(takeover(&cluster)["quarantine_destroyed"], 0);
    assert!(
        c.poll_until(Duration::from_secs(30), |c| c.received.contains_key(&busy)),
        "the activation busy at the kill was not answered"
    );
    assert!(is_failover_answer(&Controller::record(&c.received[&busy])));
    // the next activation runs in the adopted container
    let after = invoke(&c, 2);
    assert!(
        c.poll_until(Duration::from_secs(30), |c| c.received.contains_key(&after)),
        "the activation after the adoption was not answered"
    );
    let record = Controller::record(&c.received[&after]);
    assert_eq!(record["response"]["statusCode"], 0, "{record}");
    assert_eq!(
        sim.created(),
        created,
        "a container was created although the adopted one was idle: {record}"
    );
    assert_eq!(sim.runs().get(&busy), Some(&1), "run once, not again");
}

/// Issue 32, item 13: SIGTERM to every host at once, activations in flight. No member can take
/// the role over (each is stopping), so none may wait for a handover or a handback: each must
/// exit within its `drain-timeout-s` (60 s by default) — before the fix, one did not within 30 s.
#[test]
fn sigterm_to_every_host_at_once_ends_each_within_its_drain_timeout() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let instance = 7940_0000 + std::process::id() % 10_000;
    let Bed {
        sim,
        controller: c,
        mut cluster,
    } = bed(&rt, run_for(Duration::from_secs(2)), instance, "st", 3);
    let ids = send(&rt, &c, 6);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ids.iter().any(|id| sim.runs().contains_key(id)) {
        assert!(Instant::now() < deadline, "nothing reached a container");
        std::thread::sleep(Duration::from_millis(5));
    }
    for h in &cluster.hosts {
        h.signal("-TERM");
    }
    let signalled = Instant::now();
    // each within the drain timeout, plus a margin for a loaded machine
    let limit = Duration::from_secs(60 + 15);
    let waits: Vec<std::thread::JoinHandle<_>> = (0..cluster.hosts.len())
        .map(|i| {
            let mut child = cluster.hosts[i].child.take().expect("running");
            std::thread::spawn(move || {
                let until = Instant::now() + limit;
                loop {
                    if let Ok(Some(status)) = child.try_wait() {
                        return Ok((status.code(), signalled.elapsed()));
                    }
                    if Instant::now() > until {
                        let _ = child.kill();
                        let _ = child.wait();
                        return Err(i);
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        })
        .collect();
    let mut exits = Vec::new();
    for wait in waits {
        match wait.join().expect("waiter") {
            Ok(exit) => exits.push(exit),
            Err(i) => panic!(
                "host {i} did not exit within {limit:?} of SIGTERM\n{}",
                cluster.hosts[i].log()
            ),
        }
    }
    eprintln!("[sigterm all] exits: {exits:?}");
    for (code, _) in &exits {
        assert_eq!(*code, Some(0), "{exits:?}");
    }
}

#[test]
fn a_lone_member_stopping_acknowledges_what_it_drains() {
    // With no one to hand over to, the active host still leads while it drains: what
    // finishes then is acknowledged (its lease keeps being renewed), not left unanswered.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let instance = 7980_0000 + std::process::id() % 10_000;
    let Bed {
        sim,
        controller: mut c,
        mut cluster,
    } = bed(&rt, run_for(Duration::from_secs(1)), instance, "lm", 1);
    let ids = send(&rt, &c, 3);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ids.iter().all(|id| sim.runs().contains_key(id)) {
        assert!(Instant::now() < deadline, "not all reached a container");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(cluster.hosts[0].terminate(), Some(0));
    let all = c.poll_until(Duration::from_secs(30), |c| {
        ids.iter().all(|i| c.completions(i) == 1)
    });
    assert!(
        all,
        "not each acknowledged once: {:?}\n{}",
        ids.iter().map(|i| c.completions(i)).collect::<Vec<_>>(),
        cluster.hosts[0].log()
    );
    for id in &ids {
        assert_eq!(
            Controller::record(&c.received[id])["response"]["statusCode"],
            0
        );
    }
}

/// Issue 32: most of the 15-minute chaos run's duplicates. A blocking activation's result goes
/// out before its completion (the host reads the activation's logs between the two). A host
/// stopped in that moment woke and sent the completion its result obliged it to, after the
/// next host had found the activation started and answered it "failed over". Now the next
/// host waits for the owed completion (the host woke: one completion, its own), and sends it
/// itself when it never comes (the host was killed). Either way: one completion, the real
/// result, nothing answered "failed over".
#[test]
fn a_host_stopped_between_result_and_completion_is_completed_not_answered_twice() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let instance = 7990_0000 + std::process::id() % 10_000;
    let engine = SimOptions {
        run_time: Duration::from_millis(50),
        // reading logs takes 2 s: the result is out, the completion is not
        logs_latency: Duration::from_secs(2),
        ..SimOptions::default()
    };
    // the engine is kept to the end (dropped, it stops)
    let Bed {
        sim: _engine,
        controller: mut c,
        mut cluster,
    } = bed(&rt, engine, instance, "rc", 3);
    for fault in [Fault::Pause, Fault::Kill] {
        let active = cluster
            .active(Duration::from_secs(60))
            .expect("no active host");
        let ids = send(&rt, &c, 3);
        let result_only = |c: &Controller| {
            ids.iter().any(|i| {
                c.received.get(i).is_some_and(|acks| {
                    !acks.is_empty() && acks.iter().all(|a| a.get("instance").is_none())
                })
            })
        };
        assert!(
            c.poll_until(Duration::from_secs(30), result_only),
            "{fault:?}: no result came ahead of its completion: {:?}",
            ids.iter().map(|i| c.received.get(i)).collect::<Vec<_>>()
        );
        match fault {
            Fault::Pause => cluster.hosts[active].signal("-STOP"),
            Fault::Kill => cluster.hosts[active].kill(),
        }
        // those whose result was out at the fault ran: none may be answered "failed over"
        // (one whose result was not may be: at most once)
        let ran: Vec<String> = ids
            .iter()
            .filter(|i| c.received.get(*i).is_some_and(|acks| !acks.is_empty()))
            .cloned()
            .collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        while cluster
            .active(Duration::from_secs(1))
            .is_none_or(|next| next == active)
        {
            assert!(Instant::now() < deadline, "{fault:?}: no standby took over");
        }
        match fault {
            Fault::Pause => cluster.hosts[active].signal("-CONT"),
            Fault::Kill => cluster.rejoin(active, Duration::from_secs(60), |_| true),
        }
        let all = c.poll_until(Duration::from_secs(60), |c| {
            ids.iter().all(|i| c.completions(i) >= 1)
        });
        assert!(all, "{fault:?}: not every activation completed");
        // a moment for any late second answer
        c.poll_until(Duration::from_secs(3), |_| false);
        for id in &ids {
            assert_eq!(
                c.completions(id),
                1,
                "{fault:?}: {id}: {:?}",
                c.received[id]
            );
        }
        for id in &ran {
            let record = Controller::record(&c.received[id]);
            assert!(
                !is_failover_answer(&record),
                "{fault:?}: {id} ran, and was answered as failed over: {:?}",
                c.received[id]
            );
            assert_eq!(record["response"]["statusCode"], 0, "{fault:?}: {id}");
        }
    }
}

/// A cluster of `members` hosts on the simulated engine `engine`, with an active host, and the
/// controller that feeds it.
struct Bed {
    sim: SimEngine,
    controller: Controller,
    cluster: Cluster,
}

fn bed(
    rt: &tokio::runtime::Runtime,
    engine: SimOptions,
    instance: u32,
    prefix: &str,
    members: usize,
) -> Bed {
    let sim = rt.block_on(SimEngine::start(engine));
    let controller = rt.block_on(Controller::new(instance, &format!("{prefix}{instance}")));
    let mut base = HostOptions::new(instance, 0, 2048);
    base.plugin = PluginChoice {
        routes: format!("docker = \"{}\"", sim.route()),
        ..PluginChoice::docker()
    };
    let cluster = Cluster::start_from(members, &base);
    cluster
        .active(Duration::from_secs(120))
        .expect("no active host");
    Bed {
        sim,
        controller,
        cluster,
    }
}

/// A simulated engine whose `/run` takes `run_time`.
fn run_for(run_time: Duration) -> SimOptions {
    SimOptions {
        run_time,
        ..SimOptions::default()
    }
}

/// Sends `n` activations of `guest/echo` and waits until the broker took each; their ids.
fn send(rt: &tokio::runtime::Runtime, c: &Controller, n: usize) -> Vec<String> {
    let (ids, deliveries): (Vec<String>, Vec<_>) = (0..n)
        .map(|i| c.invoke_queued("guest", "echo", json!({ "i": i })))
        .unzip();
    for delivered in rt.block_on(futures::future::join_all(deliveries)) {
        delivered
            .expect("the broker took it")
            .expect("the broker took it");
    }
    ids
}
