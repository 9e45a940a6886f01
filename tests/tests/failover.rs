//! Cluster mode with real processes: three `keepwarm run` hosts on loopback, tansu, Docker.

use keepwarm::clock::now_ms;
use keepwarm_tests::cluster::{get_with_status, Cluster};
use keepwarm_tests::eventually;
use keepwarm_tests::host::containers_of;
use keepwarm_tests::kafka::{annotation, assert_echo_runs_warm, Controller};
use serde_json::json;
use std::time::Duration;
use tokio::runtime::Runtime;

const WAIT: Duration = Duration::from_secs(60);

/// Three hosts per test already share two cores with the broker and the engine: the tests of
/// this file run one at a time so election timeouts measure the cluster, not the load.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn instance(base: u32) -> u32 {
    base * 10_000 + std::process::id() % 10_000
}

/// A controller and a three-host cluster on topics of their own; returns the active host.
fn start(rt: &Runtime, base: u32, prewarm: u32) -> (Controller, Cluster, usize) {
    let n = instance(base);
    let c = rt.block_on(Controller::new(n, &format!("f{n}")));
    let cluster = Cluster::start(3, n, prewarm);
    let Some(active) = cluster.active(Duration::from_secs(30)) else {
        let log = cluster.hosts[0].log();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        panic!("no host became active\n{}", tail.join("\n"));
    };
    (c, cluster, active)
}

#[test]
fn sigkill_of_the_active_host_keeps_warm_containers_and_loses_no_activation() {
    let _serial = serial();
    let rt = Runtime::new().unwrap();
    let (mut c, mut cluster, first) = start(&rt, 7301, 1);

    // two warm containers (echo, other) and one prewarm
    for action in ["echo", "other"] {
        let id = rt.block_on(c.invoke("guest", action, true, json!({})));
        c.wait_for(&id, WAIT);
    }
    // the used prewarm is replaced, and every container in the engine is replicated (a
    // container killed before its record is committed is an orphan for the next host)
    let counts = || {
        let engine = containers_of(&cluster.label).len();
        let replicated = cluster
            .status(first)
            .and_then(|s| s["containers"].as_u64())
            .unwrap_or(0) as usize;
        (engine, replicated)
    };
    let kept_before = eventually(
        Duration::from_secs(20),
        || {
            format!(
                "engine and replicated counts {:?}\n{}",
                counts(),
                cluster.hosts[first].log()
            )
        },
        || {
            let (engine, replicated) = counts();
            (engine >= 3 && engine == replicated).then_some(engine)
        },
    );
    assert!(
        kept_before >= 2,
        "{kept_before} containers\n{}",
        cluster.hosts[first].log()
    );

    // quiet failover: every idle container is re-attached
    let killed_at = now_ms();
    cluster.hosts[first].kill();
    let second = cluster
        .active(Duration::from_secs(5))
        .expect("no standby took over");
    let status = cluster.status(second).unwrap();
    let took = status["consuming_since_ms"].as_i64().unwrap() - killed_at;
    eprintln!(
        "failover: {took} ms; led after {} ms; takeover {}",
        status["led_at_ms"].as_i64().unwrap() - killed_at,
        status["last_takeover"]
    );
    assert!(took < 1000, "failover took {took} ms");
    assert_eq!(
        status["last_takeover"]["reattached"].as_u64().unwrap() as usize,
        kept_before,
        "{status}"
    );
    assert_eq!(status["last_takeover"]["lost"], 0);
    // the operator's view: `keepwarm status` and Prometheus metrics
    let out = std::process::Command::new(keepwarm_tests::keepwarm_bin())
        .args(["status", "--address", &cluster.status_addresses[second]])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success()
            && text.contains("Leader")
            && text.contains(&format!("re-attached {kept_before}")),
        "{text}"
    );
    let metrics =
        keepwarm_tests::cluster::get(&cluster.status_addresses[second], "/metrics").unwrap();
    assert!(
        metrics.contains("keepwarm_leader 1") && metrics.contains("keepwarm_consuming 1"),
        "{metrics}"
    );
    // the takeover in keepwarm's own metrics: one failover observed, the containers adopted
    let sample = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    assert!(
        sample("keepwarm_failover_seconds_count") >= 1.0,
        "{metrics}"
    );
    assert!(
        sample("keepwarm_takeover_containers_total{fate=\"adopted\"}") >= kept_before as f64,
        "{metrics}"
    );
    // the warm action runs warm on the new host: no cold start
    assert_echo_runs_warm(&rt, &mut c, json!({"after": "failover"}));

    // the killed host comes back (same data dir) and rejoins as a standby
    cluster.hosts[first].spawn();
    eventually(
        Duration::from_secs(20),
        || format!("the restarted host rejoins\n{}", cluster.hosts[first].log()),
        || {
            cluster
                .status(first)
                .is_some_and(|s| {
                    s["state"] == "Follower" && s["epoch"] == status["last_takeover"]["epoch"]
                })
                .then_some(())
        },
    );
    assert_eq!(cluster.status(first).unwrap()["consuming"], false);

    // failover under load: no activation is lost
    let ids = rt.block_on(c.invoke_many("guest", "echo", 40));
    c.poll_until(WAIT, |c| {
        ids.iter().filter(|i| c.received.contains_key(*i)).count() >= 10
    });
    cluster.hosts[second].kill();
    let third = cluster
        .active(Duration::from_secs(5))
        .expect("no standby took over the second time");
    assert_ne!(third, second);
    let all = c.poll_until(Duration::from_secs(60), |c| {
        ids.iter().all(|i| c.received.contains_key(i))
    });
    let missing = ids.iter().filter(|i| !c.received.contains_key(*i)).count();
    assert!(
        all,
        "{missing} activations lost\n{}",
        cluster.hosts[third].log()
    );
    let duplicated = ids.iter().filter(|i| c.completions(i) > 1).count();
    eprintln!("under load: 0 lost, {duplicated} acknowledged twice");
}

#[test]
fn a_paused_active_host_never_runs_an_activation_after_the_new_claim() {
    let _serial = serial();
    let rt = Runtime::new().unwrap();
    let (mut c, cluster, first) = start(&rt, 7302, 0);
    let id = rt.block_on(c.invoke("guest", "echo", true, json!({})));
    c.wait_for(&id, WAIT);

    cluster.hosts[first].signal("-STOP");
    // a stopped host answers nothing; until it is silent, `active` could still find it
    eventually(
        Duration::from_secs(5),
        || "the stopped host goes silent".into(),
        || cluster.status(first).is_none().then_some(()),
    );
    let second = eventually(
        Duration::from_secs(5),
        || "a standby takes over".into(),
        || {
            (0..3)
                .filter(|&h| h != first)
                .find(|&h| cluster.status(h).is_some_and(|s| s["consuming"] == true))
        },
    );
    assert_ne!(second, first);
    let claimed_at = now_ms();
    // the new host answers these while the old one is still stopped
    let ids = rt.block_on(c.invoke_many("guest", "echo", 10));
    assert!(c.poll_until(WAIT, |c| ids.iter().all(|i| c.received.contains_key(i))));
    cluster.hosts[first].signal("-CONT");
    // the resumed host learns it lost the role; whatever it did until then is in its records
    eventually(
        Duration::from_secs(10),
        || {
            format!(
                "the resumed host stops consuming\n{}",
                cluster.hosts[first].log()
            )
        },
        || {
            cluster
                .status(first)
                .is_some_and(|s| s["consuming"] == false)
                .then_some(())
        },
    );
    // every activation sent after the claim ran on the new host
    let old_records = cluster.hosts[first].records();
    let late: Vec<_> = old_records
        .iter()
        .filter(|r| r["start"].as_i64().unwrap_or(0) >= claimed_at)
        .collect();
    assert!(
        late.is_empty(),
        "the paused host ran {} activations after the claim",
        late.len()
    );
    assert_eq!(cluster.status(first).unwrap()["consuming"], false);
}

#[test]
fn a_restarted_cluster_reattaches_destroys_orphans_and_a_wiped_host_rejoins() {
    let _serial = serial();
    let rt = Runtime::new().unwrap();
    let (mut c, mut cluster, _) = start(&rt, 7303, 0);
    for action in ["echo", "other"] {
        let id = rt.block_on(c.invoke("guest", action, true, json!({})));
        c.wait_for(&id, WAIT);
    }
    // both containers are in the engine and replicated
    let active = cluster.active(WAIT).expect("an active host");
    let warm = eventually(
        Duration::from_secs(10),
        || {
            format!(
                "two containers, both replicated: {:?}",
                cluster.status(active)
            )
        },
        || {
            let engine = containers_of(&cluster.label);
            let replicated = cluster
                .status(active)
                .and_then(|s| s["containers"].as_u64());
            (engine.len() == 2 && replicated == Some(2)).then_some(engine)
        },
    );
    assert_eq!(warm.len(), 2);

    // an orphan: labelled with this cluster, unknown to its state
    let out = std::process::Command::new("docker")
        .args([
            "run",
            "-d",
            "--label",
            &format!("keepwarm.cluster={}", cluster.label),
            "keepwarm/action-runtime:latest",
        ])
        .output()
        .unwrap();
    let orphan = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(!orphan.is_empty());

    // the whole cluster goes down and comes back from its data dirs
    for h in cluster.hosts.iter_mut() {
        h.kill();
    }
    for h in cluster.hosts.iter_mut() {
        h.spawn();
    }
    let active = cluster
        .active(Duration::from_secs(30))
        .expect("restarted cluster has no active host");
    let status = cluster.status(active).unwrap();
    assert_eq!(status["last_takeover"]["reattached"], 2, "{status}");
    assert_eq!(status["last_takeover"]["orphans_destroyed"], 1, "{status}");
    eventually(
        Duration::from_secs(10),
        || "the orphan is destroyed".into(),
        || {
            let running = containers_of(&cluster.label);
            (!running.iter().any(|id| orphan.starts_with(id.as_str()))).then_some(())
        },
    );
    let now: Vec<String> = containers_of(&cluster.label);
    assert!(
        warm.iter().all(|w| now.contains(w)),
        "warm containers were replaced"
    );
    let id = rt.block_on(c.invoke("guest", "other", true, json!({})));
    let record = Controller::record(&c.wait_for(&id, WAIT));
    assert_eq!(annotation(&record, "keepwarm").unwrap()["start"], "warm");

    // a standby loses its disk and rejoins as a standby
    let standby = (0..3).find(|i| *i != active).unwrap();
    cluster.hosts[standby].kill();
    std::fs::remove_dir_all(cluster.hosts[standby].dir.join("data/raft")).unwrap();
    cluster.hosts[standby].spawn();
    // while it is not voting (catching up) it is not ready; seen as the rejoin is polled
    let not_ready_while_behind = std::cell::Cell::new(true);
    let rejoined = || {
        let address = &cluster.status_addresses[standby];
        // `/readyz` first: a member that was ready is still voting when `/status` answers
        let ready = get_with_status(address, "/readyz");
        if let (Some((code, body)), Some(s)) = (ready, cluster.status(standby)) {
            if s["voting"] == false && code == 200 {
                eprintln!("ready while not voting: {body}");
                not_ready_while_behind.set(false);
            }
        }
        cluster.status(standby).is_some_and(|s| {
            let now_active = cluster.active(Duration::from_millis(500));
            let leader_epoch = now_active
                .and_then(|a| cluster.status(a))
                .map(|a| a["epoch"].clone());
            s["state"] == "Follower"
                && Some(s["epoch"].clone()) == leader_epoch
                && s["containers"] == 2
        })
    };
    eventually(
        Duration::from_secs(20),
        || {
            format!(
                "the wiped host rejoins: {:?}\nall: {:?}\n{}",
                cluster.status(standby),
                (0..3).map(|i| cluster.status(i)).collect::<Vec<_>>(),
                cluster.hosts[standby]
                    .log()
                    .lines()
                    .filter(|l| l.contains("WARN") || l.contains("active") || l.contains("vote"))
                    .take(40)
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        },
        || rejoined().then_some(()),
    );
    assert!(
        not_ready_while_behind.get(),
        "/readyz said ready while not voting"
    );
    // it did not vote while its log was blank, and votes again once caught up
    assert!(cluster.hosts[standby]
        .log()
        .contains("not voting for a candidate behind the cluster until it has caught up"));
    eventually(
        Duration::from_secs(10),
        || "the rejoined host votes again".into(),
        || (!cluster.status(standby).is_some_and(|s| s["voting"] != true)).then_some(()),
    );
    // exactly one host consumes, and it is not the one that rejoined
    let consuming: Vec<usize> = (0..3)
        .filter(|i| cluster.status(*i).is_some_and(|s| s["consuming"] == true))
        .collect();
    assert_eq!(consuming.len(), 1, "{consuming:?}");
    assert_ne!(consuming[0], standby);
    // `/readyz`: the active host because it consumes, the others as caught-up standbys once
    // their plugins are loaded (the rejoined one may still be loading them)
    for i in 0..3 {
        let address = &cluster.status_addresses[i];
        let want = if i == consuming[0] {
            "ready: active, consuming"
        } else {
            "ready: standby of leader"
        };
        eventually(
            Duration::from_secs(30),
            || {
                format!(
                    "member {i}: {:?}, want {want}",
                    get_with_status(address, "/readyz")
                )
            },
            || {
                get_with_status(address, "/readyz")
                    .filter(|(code, body)| *code == 200 && body.starts_with(want))
                    .map(|_| ())
            },
        );
        assert_eq!(
            get_with_status(address, "/healthz"),
            Some((200, "ok\n".into()))
        );
    }
}
