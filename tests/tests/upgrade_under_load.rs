//! Upgrades under load, with real processes: three `keepwarm run` hosts on loopback, tansu,
//! Docker. The controller sends 30 activations a second for the whole test while the test
//! (a) swaps the Docker plugin for a new build (`keepwarm plugin reload`), (b) puts a broken
//! build in its place (refused: the running build keeps serving), and (c) restarts every host
//! in turn — the active one after `keepwarm cluster step-down`, the standbys directly.
//! Counted from the acknowledgements and the engine: no activation lost, none run twice, none
//! failed but by the delivery contract's failover answer; the containers kept, the cold starts
//! and those answers are printed as figures.

use keepwarm::plugin::engine::sha256_hex;
use keepwarm_tests::cluster::Cluster;
use keepwarm_tests::eventually;
use keepwarm_tests::host::{containers_of, HostOptions};
use keepwarm_tests::kafka::{annotation, Controller};
use keepwarm_tests::upgrade::{deploy, rebuilt, reload, step_down};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Activations per second, as the issue asks.
const RATE: u64 = 30;
const ACTIONS: [&str; 3] = ["echo", "other", "third"];

/// Waits until every host runs the plugin build `sha256`.
fn every_host_runs(cluster: &Cluster, sha256: &str) {
    eventually(
        Duration::from_secs(30),
        || {
            let shas: Vec<Value> = (0..3)
                .map(|i| {
                    cluster
                        .status(i)
                        .map_or(Value::Null, |s| s["plugin"].clone())
                })
                .collect();
            format!("every host runs build {sha256}: {shas:?}")
        },
        || {
            (0..3)
                .all(|i| {
                    cluster
                        .status(i)
                        .is_some_and(|s| s["plugin"]["sha256"] == sha256)
                })
                .then_some(())
        },
    );
}

/// (a) and (b): a new build swapped in, then a broken one refused.
fn swap_builds(cluster: &Cluster, file: &Path, good: &[u8]) -> String {
    let new = rebuilt(good, "2");
    let new_sha = sha256_hex(&new);
    deploy(file, &new);
    let active = cluster
        .active(Duration::from_secs(10))
        .expect("an active host");
    let started = Instant::now();
    let (code, out, err) = reload(cluster, active);
    assert_eq!(
        code,
        0,
        "reload refused: {out}{err}\n{}",
        tail(&cluster.hosts[active].log())
    );
    let swap: Value = serde_json::from_str(&out).unwrap();
    eprintln!("hot swap in {:?}: {swap}", started.elapsed());
    assert_eq!(swap["swapped"], true, "{swap}");
    assert_eq!(swap["to"], new_sha.as_str(), "{swap}");
    every_host_runs(cluster, &new_sha);

    // a broken build: refused, with the reason, and the running one stays
    deploy(file, &new[..new.len() / 2]);
    let (code, out, err) = reload(cluster, active);
    assert_ne!(code, 0, "a broken build was accepted: {out}");
    eprintln!("broken build refused: {}", err.trim());
    // `/status` carries the refusal and its reason (refreshed every 100 ms)
    let s = eventually(
        Duration::from_secs(5),
        || format!("the refusal in /status: {:?}", cluster.status(active)),
        || {
            cluster
                .status(active)
                .filter(|s| s["plugin"]["last_swap"]["swapped"] == false)
        },
    );
    assert_eq!(s["plugin"]["sha256"], new_sha.as_str(), "{s}");
    assert!(
        s["plugin"]["last_swap"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("not a valid component")),
        "{s}"
    );
    // the operator's view
    let out = std::process::Command::new(keepwarm_tests::keepwarm_bin())
        .args(["status", "--address", &cluster.status_addresses[active]])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("plugin docker 0.1.0  sha256 {new_sha}"))
            && text.contains("last swap refused"),
        "{text}"
    );
    // the good build back in place before anything restarts
    deploy(file, &new);
    new_sha
}

/// keepwarm's own last 40 lines of a host's log (not Raft's, not debug).
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log
        .lines()
        .rev()
        .filter(|l| l.contains("keepwarm") && !l.contains("DEBUG"))
        .take(40)
        .collect();
    lines.into_iter().rev().collect::<Vec<_>>().join("\n")
}

/// Restarts every host in turn (the active one after a step-down); the pauses in
/// consumption the step-downs caused, in milliseconds.
fn roll(cluster: &mut Cluster) -> Vec<i64> {
    let mut pauses = Vec::new();
    for i in 0..cluster.hosts.len() {
        let active = cluster
            .active(Duration::from_secs(10))
            .expect("an active host");
        if active == i {
            let done = step_down(cluster, i);
            let to = done["to"].as_u64().unwrap() as usize - 1;
            assert_ne!(to, i, "{done}");
            let successor = eventually(
                Duration::from_secs(10),
                || {
                    format!(
                        "member {} consumes after the step-down: {done}\n{}",
                        to + 1,
                        tail(&cluster.hosts[to].log())
                    )
                },
                || {
                    cluster
                        .status(to)
                        .filter(|s| s["consuming"] == true)
                        .and_then(|s| s["consuming_since_ms"].as_i64())
                },
            );
            let pause = successor - done["stopped_at_ms"].as_i64().unwrap();
            eprintln!("step-down of host {}: {done}; pause {pause} ms", i + 1);
            pauses.push(pause);
        }
        let code = cluster.hosts[i].terminate();
        assert_eq!(code, Some(0), "host {} did not stop cleanly", i + 1);
        cluster.hosts[i].spawn();
        let epoch = |s: &Value| s["epoch"].as_u64();
        eventually(
            Duration::from_secs(30),
            || format!("host {} rejoins\n{}", i + 1, tail(&cluster.hosts[i].log())),
            || {
                let leader = cluster.active(Duration::from_secs(5))?;
                let current = epoch(&cluster.status(leader)?)?;
                let s = cluster.status(i)?;
                (s["state"] == "Follower" && epoch(&s) == Some(current)).then_some(())
            },
        );
        // caught up with the log before the next host goes
        std::thread::sleep(Duration::from_secs(1));
    }
    pauses
}

#[test]
fn swaps_and_a_rolling_restart_under_load_lose_nothing_and_keep_every_container() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let instance = 7700_0000 + std::process::id() % 10_000;
    let mut c = rt.block_on(Controller::new(instance, &format!("r{instance}")));
    // every host loads the plugin from one file the test replaces (a deployment to each)
    let plugins = tempfile::tempdir().unwrap();
    let file = plugins.path().join("docker.wasm");
    let good = std::fs::read(keepwarm_tests::components::component("keepwarm_docker")).unwrap();
    std::fs::write(&file, &good).unwrap();
    // room for every container this load needs: at the memory cap the pool evicts one to
    // make another, churn of its own that would blur what the upgrades do
    let mut options = HostOptions::new(instance, 1, 4096);
    options.plugin.file = Some(file.clone());
    let mut cluster = Cluster::start_from(3, &options);
    cluster
        .active(Duration::from_secs(30))
        .expect("no host became active");

    let sent: Arc<std::sync::Mutex<Vec<(String, Instant)>>> = Arc::default();
    let send_for = |c: &mut Controller, how_long: Duration, stop: Option<&AtomicBool>| {
        let start = Instant::now();
        let mut n = 0u64;
        while stop.map_or(start.elapsed() < how_long, |s| !s.load(Ordering::SeqCst)) {
            let due = start + Duration::from_millis(n * 1000 / RATE);
            if Instant::now() >= due {
                let action = ACTIONS[n as usize % ACTIONS.len()];
                let (id, _delivery) = c.invoke_queued("guest", action, json!({ "n": n }));
                sent.lock().unwrap().push((id, Instant::now()));
                n += 1;
            }
            c.drain(Duration::from_millis(5));
            std::thread::sleep(Duration::from_millis(2));
        }
    };

    // steady state: every action warm, the pool settled under this load
    send_for(&mut c, Duration::from_secs(8), None);
    // the engine's containers once the active host's replicated pool holds each of them and
    // they stay the same for a second under the load (on a busy machine the pool may still be
    // evicting at the memory cap: a container being destroyed is not part of the steady pool)
    // (a loaded CI machine took more than 30 s to settle once: wait longer, say what was seen)
    let mut previous = BTreeSet::new();
    let seen = std::cell::RefCell::new(String::from("nothing yet"));
    let before: BTreeSet<String> = eventually(
        Duration::from_secs(90),
        || {
            format!(
                "the engine's containers all in the replicated pool, steady for a second; \
                 last seen: {}",
                seen.borrow()
            )
        },
        || {
            send_for(&mut c, Duration::from_secs(1), None);
            let engine: BTreeSet<String> = containers_of(&cluster.label).into_iter().collect();
            let active = cluster.active(Duration::from_secs(1))?;
            let replicated = cluster.status(active)?["containers"].as_u64()? as usize;
            let last = std::mem::replace(&mut previous, engine.clone());
            *seen.borrow_mut() = format!(
                "{} on the engine ({} new since the last look), {replicated} replicated",
                engine.len(),
                engine.difference(&last).count()
            );
            (engine.len() == replicated && engine == last).then_some(engine)
        },
    );
    let steady = sent.lock().unwrap().len();

    // the upgrades, while the load goes on
    let rolling = Arc::new(AtomicBool::new(false));
    let roller = {
        let rolling = rolling.clone();
        std::thread::spawn(move || {
            let sha = swap_builds(&cluster, &file, &good);
            let pauses = roll(&mut cluster);
            every_host_runs(&cluster, &sha);
            rolling.store(true, Ordering::SeqCst);
            (cluster, pauses)
        })
    };
    // the load goes on until the upgrades are done, or the thread doing them failed (its
    // panic, with its message, comes out of `join`)
    let watcher = {
        let rolling = rolling.clone();
        std::thread::spawn(move || {
            let result = roller.join();
            rolling.store(true, Ordering::SeqCst);
            result
        })
    };
    send_for(&mut c, Duration::ZERO, Some(&rolling));
    let (cluster, pauses) = match watcher.join().unwrap() {
        Ok(done) => done,
        Err(panic) => std::panic::resume_unwind(panic),
    };
    send_for(&mut c, Duration::from_secs(2), None);

    let ids: Vec<String> = sent
        .lock()
        .unwrap()
        .iter()
        .map(|(id, _)| id.clone())
        .collect();
    let completed = |c: &Controller, id: &String| {
        c.received
            .get(id)
            .is_some_and(|acks| acks.iter().any(|a| a.get("instance").is_some()))
    };
    c.poll_until(Duration::from_secs(60), |c| {
        ids.iter().all(|id| completed(c, id))
    });
    let lost: Vec<&String> = ids.iter().filter(|id| !completed(&c, id)).collect();
    let records: Vec<Value> = ids
        .iter()
        .filter_map(|id| {
            c.received
                .get(id)?
                .iter()
                .find_map(|a| a.get("response").filter(|r| r.is_object()).cloned())
        })
        .collect();
    let failed: Vec<&Value> = records
        .iter()
        .filter(|r| r["response"]["statusCode"] != 0)
        .collect();
    let during: BTreeSet<&String> = ids[steady..].iter().collect();
    let cold = records
        .iter()
        .filter(|r| {
            r["activationId"]
                .as_str()
                .is_some_and(|id| during.contains(&id.to_string()))
                && annotation(r, "initTime").is_some()
        })
        .count();
    let after: BTreeSet<String> = containers_of(&cluster.label).into_iter().collect();
    // run twice: two different records of one activation (a second run has its own start).
    // A message the broker delivered twice (a produce retried after a timeout) is the same
    // message again: counted and shown, not a second run.
    let records = |acks: &[serde_json::Value]| {
        acks.iter()
            .filter_map(|a| a.get("response").filter(|r| r.is_object()))
            .map(|r| (r["start"].to_string(), r["end"].to_string()))
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    };
    let twice = ids
        .iter()
        .filter(|id| c.received.get(*id).is_some_and(|acks| records(acks) > 1))
        .count();
    let redelivered = ids
        .iter()
        .filter(|id| {
            c.received.get(*id).is_some_and(|acks| {
                let distinct: std::collections::BTreeSet<String> =
                    acks.iter().map(|a| a.to_string()).collect();
                distinct.len() < acks.len()
            })
        })
        .count();
    eprintln!(
        "{redelivered} activations had an acknowledgement delivered twice (the same message)"
    );
    eprintln!(
        "upgrades under load: {} activations ({} during the upgrades), {} lost, {} failed, {} \
         cold starts during the upgrades, {} run twice; containers before {:?} after {:?}; \
         step-down pauses {pauses:?} ms",
        ids.len(),
        during.len(),
        lost.len(),
        failed.len(),
        cold,
        twice,
        before,
        after
    );
    let logs = || {
        (0..3)
            .map(|i| format!("--- host {}\n{}", i + 1, tail(&cluster.hosts[i].log())))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(lost.is_empty(), "{} lost: {lost:?}\n{}", lost.len(), logs());
    // Under the default contract (at most once) an activation that may have run on a host
    // whose term ended unplanned is answered, not run again; a loaded machine's spurious
    // election does that (the failover on a busy machine is issue 37's). Any other failure
    // is the upgrades'.
    let not_failover: Vec<String> = failed
        .iter()
        .map(|r| {
            let error = r["response"]["result"]["error"].as_str().unwrap_or("");
            format!("{} {error}", r["activationId"])
        })
        .filter(|e| !e.contains("another took over"))
        .collect();
    assert!(
        not_failover.is_empty(),
        "{} failed: {not_failover:?}\n{}",
        not_failover.len(),
        logs()
    );
    assert!(!pauses.is_empty(), "the active host was never stepped down");
    // What the upgrades cost the pool, as figures: on this 2-core machine a lease lapse or a
    // spurious election under load sends a burst to the next host now and then.
    let kept = before.intersection(&after).count();
    eprintln!(
        "pool across the upgrades: kept {kept} of {} containers, {} new, {cold} cold starts, \
         {} failover answers",
        before.len(),
        after.difference(&before).count(),
        failed.len()
    );
    let example = ids.iter().find_map(|id| {
        let acks = c.received.get(id)?;
        (records(acks) > 1).then(|| format!("{id}: {acks:?}"))
    });
    assert_eq!(twice, 0, "run twice, e.g. {example:?}\n{}", logs());
}
