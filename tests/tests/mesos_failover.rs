//! Framework failover on Mesos with real processes: three `keepwarm run` hosts using the Mesos
//! plugin against the master simulator (its agent runs tasks as Docker containers), tansu.

use keepwarm_tests::cluster::Cluster;
use keepwarm_tests::eventually;
use keepwarm_tests::host::{containers_of, Host, HostOptions, PluginChoice};
use keepwarm_tests::kafka::{assert_echo_runs_warm, Controller};
use keepwarm_tests::mesos::{MesosMaster, Options};
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;

const WAIT: Duration = Duration::from_secs(60);

/// Three hosts, the broker, dockerd and the simulator share two cores: one test at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn instance(base: u32) -> u32 {
    base * 10_000 + std::process::id() % 10_000
}

fn mesos_hosts(master: &MesosMaster, instance: u32, failover_timeout_s: &str) -> HostOptions {
    let mut opts = HostOptions::new(instance, 1, 2048);
    // Mesos' scheduler API cannot read task output: logs stay with the engine's log driver.
    opts.log_store = "log-driver";
    opts.plugin = PluginChoice {
        name: "mesos".into(),
        stem: "keepwarm_mesos".into(),
        routes: format!("mesos = \"{}\"", master.route()),
        config: format!("failover-timeout-s = \"{failover_timeout_s}\""),
        file: None,
    };
    opts
}

fn start(
    rt: &Runtime,
    base: u32,
    master: &MesosMaster,
    timeout: &str,
) -> (Controller, Cluster, usize) {
    let n = instance(base);
    let c = rt.block_on(Controller::new(n, &format!("m{n}")));
    let cluster = Cluster::start_from(3, &mesos_hosts(master, n, timeout));
    let Some(active) = cluster.active(Duration::from_secs(30)) else {
        let log = cluster.hosts[0].log();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        panic!("no host became active\n{}", tail.join("\n"));
    };
    (c, cluster, active)
}

fn running(master: &MesosMaster) -> Vec<String> {
    master
        .tasks()
        .into_iter()
        .filter(|t| t.state == "TASK_RUNNING")
        .map(|t| t.task_id)
        .collect()
}

/// Waits (up to 15 s) until at least `n` tasks run; their ids, or what ran at the deadline.
fn wait_running(master: &MesosMaster, n: usize) -> Result<Vec<String>, Vec<String>> {
    let start = Instant::now();
    loop {
        let tasks = running(master);
        if tasks.len() >= n {
            return Ok(tasks);
        }
        if start.elapsed() > Duration::from_secs(15) {
            return Err(tasks);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Warm containers for two actions, and the prewarm one, all replicated.
fn warm_up(
    rt: &Runtime,
    c: &mut Controller,
    cluster: &Cluster,
    active: usize,
    master: &MesosMaster,
) -> Vec<String> {
    for action in ["echo", "other"] {
        let id = rt.block_on(c.invoke("guest", action, true, json!({})));
        c.wait_for(&id, WAIT);
    }
    // the prewarm replaced (the pool's upkeep runs each second), everything replicated
    let tasks = wait_running(master, 3)
        .unwrap_or_else(|t| panic!("{t:?}\n{}", cluster.hosts[active].log()));
    eventually(
        Duration::from_secs(10),
        || format!("all three replicated: {:?}", cluster.status(active)),
        || {
            let replicated = cluster
                .status(active)
                .and_then(|s| s["containers"].as_u64());
            (replicated == Some(3)).then_some(())
        },
    );
    tasks
}

#[test]
fn a_standby_resubscribes_as_the_same_framework_and_attaches_every_task() {
    let _serial = serial();
    let rt = Runtime::new().unwrap();
    let master = rt.block_on(MesosMaster::start(Options::default()));
    let (mut c, mut cluster, first) = start(&rt, 7401, &master, "60");
    let tasks = warm_up(&rt, &mut c, &cluster, first, &master);
    let launched = master.launched();
    let frameworks = master.frameworks();
    assert_eq!(frameworks.len(), 1, "{frameworks:?}");
    let (framework_id, name, connected) = frameworks[0].clone();
    assert_eq!(name, "keepwarm");
    assert!(connected);

    let killed_at = Instant::now();
    cluster.hosts[first].kill();
    let second = cluster
        .active(Duration::from_secs(5))
        .expect("no standby took over");
    eprintln!(
        "mesos failover: consuming {} ms after the kill",
        killed_at.elapsed().as_millis()
    );
    let status = cluster.status(second).unwrap();
    assert_eq!(
        status["last_takeover"]["reattached"].as_u64().unwrap() as usize,
        tasks.len(),
        "{status}\n{}",
        cluster.hosts[second].log()
    );
    assert_eq!(status["last_takeover"]["lost"], 0);

    // the same framework, subscribed again; every task kept, none launched again
    let frameworks = master.frameworks();
    assert_eq!(frameworks, vec![(framework_id.clone(), name, true)]);
    assert!(master.removed_frameworks().is_empty());
    assert_eq!(running(&master), tasks);
    assert_eq!(master.launched(), launched);

    // the warm action runs warm on the new host, in the container launched before
    assert_echo_runs_warm(&rt, &mut c, json!({"after": "failover"}));
    assert_eq!(master.launched(), launched);
    rt.block_on(master.shutdown());
}

#[test]
fn a_late_resubscription_loses_the_tasks_and_the_pool_creates_anew() {
    let _serial = serial();
    let rt = Runtime::new().unwrap();
    let options = Options {
        // the master notices the dead subscriptions within a few heartbeats
        heartbeat: Duration::from_millis(200),
        ..Options::default()
    };
    let master = rt.block_on(MesosMaster::start(options));
    let (mut c, mut cluster, first) = start(&rt, 7402, &master, "1");
    let tasks = warm_up(&rt, &mut c, &cluster, first, &master);
    let old_containers = containers_of(&cluster.label);
    assert_eq!(old_containers.len(), tasks.len());
    let (framework_id, _, _) = master.frameworks()[0].clone();
    let launched = master.launched();

    // every host is down for longer than the failover timeout
    for h in &mut cluster.hosts {
        h.kill();
    }
    let start = Instant::now();
    while !master.removed_frameworks().contains(&framework_id) {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the framework was never removed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // ...so the master killed its tasks
    let start = Instant::now();
    while !containers_of(&cluster.label).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the tasks' containers survived"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    for h in &mut cluster.hosts {
        h.spawn();
    }
    let Some(active) = cluster.active(Duration::from_secs(30)) else {
        let statuses: Vec<_> = (0..3).map(|i| cluster.status(i)).collect();
        let tails: Vec<String> = cluster
            .hosts
            .iter_mut()
            .zip(statuses)
            .map(|(h, status)| {
                let exited = h.child.as_mut().map(|c| c.try_wait());
                let log = h.log();
                let lines: Vec<&str> = log
                    .lines()
                    .filter(|l| !l.contains("openraft"))
                    .rev()
                    .take(15)
                    .collect();
                format!(
                    "exited: {exited:?}\nstatus: {status:?}\n{}",
                    lines.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect();
        panic!(
            "no host became active after the restart\n{}",
            tails.join("\n----\n")
        );
    };
    let status = cluster.status(active).unwrap();
    assert_eq!(status["last_takeover"]["reattached"], 0, "{status}");

    // a new framework, and the pool makes what it needs anew
    let id = rt.block_on(c.invoke("guest", "echo", true, json!({"late": true})));
    let record = Controller::record(&c.wait_for(&id, WAIT));
    assert_eq!(
        record["response"]["result"],
        json!({"echo": {"late": true}}),
        "{record}"
    );
    let frameworks = master.frameworks();
    assert_eq!(frameworks.len(), 1, "{frameworks:?}");
    assert_ne!(frameworks[0].0, framework_id);
    assert!(master.launched() > launched);
    rt.block_on(master.shutdown());
}

#[test]
fn a_restarted_single_host_keeps_its_framework_and_removes_what_it_left() {
    let _serial = serial();
    let rt = Runtime::new().unwrap();
    let master = rt.block_on(MesosMaster::start(Options::default()));
    let n = instance(7403);
    let mut c = rt.block_on(Controller::new(n, &format!("s{n}")));
    let mut host = Host::start(&mesos_hosts(&master, n, "60"));
    let id = rt.block_on(c.invoke("guest", "echo", true, json!({})));
    c.wait_for(&id, WAIT);
    // the warm echo container and the prewarm that replaced the one it took
    let left = wait_running(&master, 2).unwrap_or_else(|t| panic!("{t:?}\n{}", host.log()));
    let (framework_id, _, _) = master.frameworks()[0].clone();

    host.kill();
    host.spawn();
    let start = Instant::now();
    while running(&master).iter().any(|t| left.contains(t)) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the tasks of the killed run are still running\n{}",
            host.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // the framework id was kept on disk: no second framework holds resources
    let frameworks = master.frameworks();
    assert_eq!(frameworks.len(), 1, "{frameworks:?}");
    assert_eq!(frameworks[0].0, framework_id);
    let id = rt.block_on(c.invoke("guest", "echo", true, json!({"again": 1})));
    let record = Controller::record(&c.wait_for(&id, WAIT));
    assert_eq!(record["response"]["result"], json!({"echo": {"again": 1}}));
    rt.block_on(master.shutdown());
}
