//! keepwarm hosts and the engine on machines of their own (network namespaces joined by a
//! bridge, see `keepwarm_tests::netbed`): three hosts, a Docker engine reached over TCP with
//! TLS, a broker, and the test's controller, each on its own machine. Faults are whole-machine
//! failures, cut links and partial partitions, not process kills or proxies.

use keepwarm::clock::now_ms;
use keepwarm_tests::chaos::broker::Broker;
use keepwarm_tests::cluster::Cluster;
use keepwarm_tests::eventually;
use keepwarm_tests::host::HostOptions;
use keepwarm_tests::kafka::{annotation, assert_echo_runs_warm, Controller};
use keepwarm_tests::netbed::engine::RemoteDocker;
use keepwarm_tests::netbed::site::{on_site, Site, HOSTS};
use keepwarm_tests::netbed::NetBed;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::runtime::Runtime;

const WAIT: Duration = Duration::from_secs(60);

/// Several beds at once would share two cores with three hosts and a dockerd each.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// One bed, up: machines `ctl` (the test), `h1`–`h3` (keepwarm), engine machines (Docker
/// over TLS) and `b` (the broker); a cluster consuming.
struct World<'a> {
    bed: &'a NetBed,
    /// The engine machines; with one, the plugin's route is `docker`, with several
    /// `docker-<machine>`, each an entry of its `engines`.
    engines: &'a [RemoteDocker],
    broker: &'a Broker,
    rt: Runtime,
    instance: u32,
    c: Controller,
    cluster: Cluster,
    active: usize,
}

/// Builds the bed with `engine_machines`, and runs `scenario` on machine `ctl` with the
/// cluster up.
fn on_bed(base: u32, engine_machines: &[&str], scenario: impl FnOnce(&mut World) + Send) {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    on_site(engine_machines, |site| {
        let rt = Runtime::new().unwrap();
        let instance = base * 10_000 + std::process::id() % 10_000;
        let options = HostOptions::new(instance, 1, 8192);
        let (c, cluster) = site.start_cluster(&rt, &format!("m{instance}"), options);
        let Site {
            bed,
            engines,
            broker,
        } = site;
        let active = cluster.active(WAIT).unwrap_or_else(|| {
            panic!("no host became active\n{}", cluster.hosts[0].log());
        });
        let status = cluster.status(active).unwrap();
        assert_eq!(status["plugin"]["cluster_wide"], true, "{status}");
        let mut world = World {
            bed,
            engines,
            broker,
            rt,
            instance,
            c,
            cluster,
            active,
        };
        scenario(&mut world);
    });
}

impl World<'_> {
    /// Runs `guest/{action}` and returns how it started and in which container.
    fn run(&mut self, action: &str) -> (String, String) {
        let id = self
            .rt
            .block_on(self.c.invoke("guest", action, true, json!({})));
        let record = Controller::record(&self.c.wait_for(&id, WAIT));
        let keepwarm = annotation(&record, "keepwarm").unwrap_or_else(|| panic!("{record}"));
        (
            keepwarm["start"].as_str().unwrap().to_owned(),
            keepwarm["container"].as_str().unwrap().to_owned(),
        )
    }

    /// The cluster's containers on every engine.
    fn containers(&self) -> usize {
        self.engines
            .iter()
            .map(|e| e.containers(&self.cluster.label).len())
            .sum()
    }

    /// Waits until the engines have at least `at_least` containers and every one is in the
    /// active host's replicated pool.
    fn replicated(&self, at_least: usize) {
        let (cluster, active) = (&self.cluster, self.active);
        eventually(
            Duration::from_secs(30),
            || {
                format!(
                    "engines {}, replicated {:?}\n{}",
                    self.containers(),
                    cluster.status(active).map(|s| s["containers"].clone()),
                    cluster.hosts[active].log()
                )
            },
            || {
                let on_engines = self.containers();
                let replicated = cluster.status(active)?["containers"].as_u64()? as usize;
                (on_engines >= at_least && on_engines == replicated).then_some(())
            },
        );
    }

    /// `guest/third` at 10/s from a thread of its own for 2 s, then through `fault`, then for
    /// 2 s more; returns the ids sent and what `fault` returned.
    fn under_load<T: Send>(
        &mut self,
        fault: impl FnOnce(&mut Self) -> T + Send,
    ) -> (Vec<String>, T) {
        let stop = AtomicBool::new(false);
        let (broker, instance) = (self.broker.address.clone(), self.instance);
        let controller = self.c.controller.clone();
        std::thread::scope(|s| {
            let load = s.spawn(|| {
                let rt = Runtime::new().unwrap();
                let sender = rt.block_on(Controller::on(&broker, instance, &controller));
                let mut ids = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let (id, delivery) = sender.invoke_queued("guest", "third", json!({}));
                    ids.push(id);
                    rt.spawn(delivery);
                    std::thread::sleep(Duration::from_millis(100));
                }
                // what is still queued goes out (a cut broker may need its reconnect)
                rt.block_on(async { tokio::time::sleep(Duration::from_secs(2)).await });
                ids
            });
            // the load stops however this ends (a failed assertion in `fault` included)
            struct StopOnExit<'s>(&'s AtomicBool);
            impl Drop for StopOnExit<'_> {
                fn drop(&mut self) {
                    self.0.store(true, Ordering::SeqCst);
                }
            }
            let stopping = StopOnExit(&stop);
            std::thread::sleep(Duration::from_secs(2));
            let out = fault(self);
            std::thread::sleep(Duration::from_secs(2));
            drop(stopping);
            (load.join().unwrap(), out)
        })
    }

    /// Asserts every id in `ids` was acknowledged; returns their records.
    fn all_answered(&mut self, ids: &[String], log_of: usize) -> Vec<Value> {
        let all = self
            .c
            .poll_until(WAIT, |c| ids.iter().all(|i| c.received.contains_key(i)));
        let missing = ids
            .iter()
            .filter(|i| !self.c.received.contains_key(*i))
            .count();
        assert!(
            all,
            "{missing} of {} activations lost\n{}",
            ids.len(),
            self.cluster.hosts[log_of].log()
        );
        ids.iter()
            .map(|i| Controller::record(&self.c.received[i]))
            .collect()
    }

    /// The host that is consuming now, and how long after `since_ms` it began.
    fn next_active(&self, since_ms: i64, within: Duration) -> (usize, Value, i64) {
        let next = self
            .cluster
            .active(within)
            .expect("no standby on another machine took over");
        let status = self.cluster.status(next).unwrap();
        let took = status["consuming_since_ms"].as_i64().unwrap() - since_ms;
        (next, status, took)
    }
}

#[test]
fn the_active_hosts_machine_fails_under_load_and_a_standby_elsewhere_keeps_every_container() {
    on_bed(7501, &["e1"], |w| {
        // two warm containers and a prewarm on the engine machine, all replicated
        let warm: Vec<(&str, String)> = ["echo", "other"]
            .into_iter()
            .map(|action| (action, w.run(action).1))
            .collect();
        w.replicated(3);

        // under a steady load (another action), the active host's whole machine dies
        let first = w.active;
        let (ids, (second, status, took)) = w.under_load(|w| {
            let failed_at = now_ms();
            w.bed.fail(HOSTS[first]);
            w.cluster.hosts[first].kill();
            w.next_active(failed_at, Duration::from_secs(10))
        });
        eprintln!(
            "machine failure → consuming on {}: {took} ms; takeover {}; {} activations sent",
            HOSTS[second],
            status["last_takeover"],
            ids.len()
        );
        assert!(took < 2000, "failover took {took} ms");
        assert_eq!(status["last_takeover"]["lost"], 0, "{status}");
        assert!(
            status["last_takeover"]["reattached"].as_u64().unwrap() >= 2,
            "{status}"
        );
        w.all_answered(&ids, second);

        // the idle containers live on on the engine machine and run warm, same ids, from the
        // new host on another machine
        for (action, container) in &warm {
            let (start, now) = w.run(action);
            assert_eq!((start.as_str(), &now), ("warm", container), "{action}");
        }
        assert_echo_runs_warm(&w.rt, &mut w.c, json!({"after": "machine failure"}));
    });
}

#[test]
fn the_brokers_machine_cut_off_for_ten_seconds_loses_nothing_and_the_feed_resumes() {
    on_bed(7502, &["e1"], |w| {
        w.run("echo");
        let active = w.active;
        let (ids, ()) = w.under_load(|w| {
            w.bed.cut("b");
            std::thread::sleep(Duration::from_secs(10));
            w.bed.mend("b");
        });
        let records = w.all_answered(&ids, active);
        eprintln!("broker cut off 10 s: {} sent, 0 lost", records.len());
        // the broker's absence is not the active host's: nobody should fail over. The burst
        // when it returns can still time Raft calls out and move leadership on a loaded
        // machine (a known defect: spurious elections under load); what is asserted is that
        // nothing is lost and every answer is a success or the delivery contract's.
        let now_active = w.cluster.active(Duration::from_secs(1));
        if now_active != Some(active) {
            eprintln!("leadership moved during the broker's absence: {active} -> {now_active:?}");
        }
        // every one succeeded, except what a leadership change (the broker's return can
        // cost one: a burst of Raft calls times out) answered under the delivery contract
        let failed_over = records
            .iter()
            .filter(|r| keepwarm_tests::chaos::is_failover_answer(r))
            .count();
        eprintln!("answered as failed over (a leadership change meanwhile): {failed_over}");
        assert!(
            records.iter().all(|r| r["response"]["statusCode"] == 0
                || keepwarm_tests::chaos::is_failover_answer(r)),
            "{records:?}"
        );
        // the feed goes on after the backlog (which may have evicted idle containers to make
        // room: the backlog arrives at once)
        let id =
            w.rt.block_on(w.c.invoke("guest", "echo", true, json!({"after": "broker outage"})));
        let record = Controller::record(&w.c.wait_for(&id, WAIT));
        assert_eq!(record["response"]["statusCode"], 0, "{record}");
    });
}

#[test]
fn an_active_host_cut_off_from_its_peers_but_not_the_broker_never_runs_a_stale_activation() {
    on_bed(7503, &["e1"], |w| {
        w.run("echo");
        w.replicated(2);
        let first = w.active;
        let peers: Vec<&str> = HOSTS
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != first)
            .map(|(_, h)| *h)
            .collect();
        let (ids, (second, status, took)) = w.under_load(|w| {
            let cut_at = now_ms();
            w.bed.isolate(HOSTS[first], &peers);
            // the isolated host still reaches the broker and the engine; a standby claims
            let next = keepwarm_tests::eventually(
                Duration::from_secs(10),
                || "no standby claimed".into(),
                || {
                    (0..HOSTS.len()).filter(|i| *i != first).find_map(|i| {
                        let s = w.cluster.status(i)?;
                        (s["consuming"] == true).then_some((i, s))
                    })
                },
            );
            let took = next.1["consuming_since_ms"].as_i64().unwrap() - cut_at;
            (next.0, next.1, took)
        });
        eprintln!(
            "partition of the active host from its peers → consuming on {}: {took} ms",
            HOSTS[second]
        );
        let claimed_at = status["last_takeover"]["claimed_at_ms"].as_i64().unwrap();
        let new_epoch = status["last_takeover"]["epoch"].as_u64().unwrap();
        let records = w.all_answered(&ids, second);
        // no stale run: nothing started under an older epoch after the new claim
        let stale: Vec<&Value> = records
            .iter()
            .filter(|r| {
                let epoch = annotation(r, "keepwarm").and_then(|k| k["epoch"].as_u64());
                epoch.is_some_and(|e| e < new_epoch)
                    && r["start"].as_i64().unwrap_or(0) >= claimed_at
            })
            .collect();
        assert!(
            stale.is_empty(),
            "stale runs after the claim at {claimed_at}: {stale:?}"
        );
        // the cut-off host stopped consuming, and rejoins as a standby once the links heal
        w.bed.rejoin(HOSTS[first], &peers);
        eventually(
            Duration::from_secs(20),
            || {
                format!(
                    "the isolated host rejoins\n{}",
                    w.cluster.hosts[first].log()
                )
            },
            || {
                let s = w.cluster.status(first)?;
                (s["consuming"] == false && s["epoch"].as_u64() == Some(new_epoch)).then_some(())
            },
        );
        // and the cluster serves on, under the new epoch
        let id =
            w.rt.block_on(w.c.invoke("guest", "echo", true, json!({"after": "partition"})));
        let record = Controller::record(&w.c.wait_for(&id, WAIT));
        assert_eq!(record["response"]["statusCode"], 0, "{record}");
        let epoch = annotation(&record, "keepwarm").unwrap()["epoch"].as_u64();
        assert!(epoch >= Some(new_epoch), "{record}");
    });
}

#[test]
fn an_engine_machine_fails_under_load_and_its_containers_are_recreated_on_the_other() {
    on_bed(7504, &["e1", "e2"], |w| {
        // containers on both engine machines (placed round robin)
        for action in ["echo", "other", "third"] {
            w.run(action);
        }
        w.replicated(4);
        let per_engine: Vec<Vec<String>> = w
            .engines
            .iter()
            .map(|e| e.containers(&w.cluster.label))
            .collect();
        let (victim, survivor) = if per_engine[0].len() >= per_engine[1].len() {
            (0, 1)
        } else {
            (1, 0)
        };
        let lost = per_engine[victim].len();
        assert!(
            lost > 0 && !per_engine[survivor].is_empty(),
            "{per_engine:?}"
        );
        let (victim_ip, survivor_ip) =
            (w.engines[victim].ip.clone(), w.engines[survivor].ip.clone());
        let active = w.active;

        // under load, the engine machine with the most containers dies; the active host
        // notices at its next reconcile (the engine's list no longer has them: nothing more is
        // sent there) and forgets them when the list after that has them neither
        let (ids, (failed_at, noticed_at, forgotten_at)) = w.under_load(|w| {
            let failed_at = now_ms();
            w.bed.fail(&w.engines[victim].machine);
            let pool_since = |what: &str, seen: fn(&Value) -> bool| {
                eventually(
                    Duration::from_secs(30),
                    || {
                        format!(
                            "the pool never {what} the dead engine's containers\n{}",
                            w.cluster.hosts[active].log()
                        )
                    },
                    || seen(&w.cluster.status(active)?["pool"]).then(now_ms),
                )
            };
            let vanished = |p: &Value| p["churn"]["vanished"].as_u64() > Some(0);
            let noticed_at = pool_since("noticed", |p| {
                p["unlisted"].as_u64() > Some(0) || p["churn"]["vanished"].as_u64() > Some(0)
            });
            let forgotten_at = pool_since("forgot", vanished);
            (failed_at, noticed_at, forgotten_at)
        });
        let records = w.all_answered(&ids, active);
        let ran_on_victim = |r: &Value| {
            annotation(r, "keepwarm")
                .and_then(|k| {
                    k["address"]
                        .as_str()
                        .map(|a| a.starts_with(&format!("{victim_ip}:")))
                })
                .unwrap_or(false)
        };
        let started = |r: &Value| r["start"].as_i64().unwrap_or(0);
        // once noticed, nothing is sent there and nothing fails
        let after: Vec<&Value> = records.iter().filter(|r| started(r) > noticed_at).collect();
        assert!(!after.is_empty());
        let bad: Vec<&&Value> = after
            .iter()
            .filter(|r| ran_on_victim(r) || r["response"]["statusCode"] != 0)
            .collect();
        assert!(bad.is_empty(), "after the pool noticed: {bad:?}");
        // before, only what was already placed on the dead machine could fail
        let failed = records
            .iter()
            .filter(|r| r["response"]["statusCode"] != 0)
            .count();
        let slowest = records
            .iter()
            .filter(|r| started(r) >= failed_at)
            .map(|r| r["end"].as_i64().unwrap_or(0) - failed_at)
            .max()
            .unwrap_or(0);
        eprintln!(
            "engine machine failure: {lost} containers lost with it, noticed after {} ms \
             (forgotten after {} ms); {} activations sent, {failed} answered with an error (placed on the dead machine \
             before it was noticed), none lost; the last one sent during the fault answered \
             {slowest} ms after the failure",
            noticed_at - failed_at,
            forgotten_at - failed_at,
            ids.len()
        );

        // the pool forgot the dead machine's containers: what it holds is on the survivor
        eventually(
            Duration::from_secs(20),
            || {
                format!(
                    "the pool still holds containers of the dead engine\n{}",
                    w.cluster.hosts[active].log()
                )
            },
            || {
                let s = w.cluster.status(active)?;
                let held = s["containers"].as_u64()? as usize;
                (held == w.engines[survivor].containers(&w.cluster.label).len()).then_some(())
            },
        );
        // every action runs again, on the surviving engine machine
        for action in ["echo", "other", "third"] {
            let id = w.rt.block_on(w.c.invoke("guest", action, true, json!({})));
            let record = Controller::record(&w.c.wait_for(&id, WAIT));
            let address = annotation(&record, "keepwarm").unwrap()["address"].clone();
            assert!(
                address.as_str().unwrap().starts_with(&survivor_ip),
                "{action} ran at {address}: {record}"
            );
        }
    });
}
