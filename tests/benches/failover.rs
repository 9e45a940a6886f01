//! Failover benchmark with real processes: SIGKILL of the active host (of three), repeated,
//! with 0, 10 and 100 warm containers on Docker and 10 on Mesos (the master simulator, tasks
//! as Docker containers: the standby re-subscribes as the same framework); the takeover's
//! re-attach time; and Raft write throughput and replication of pool events on an in-process
//! cluster over loopback, over mutual TLS and over plain HTTP in the same run, with the
//! in-process failover time for both.

use keepwarm::cluster::state::{Command, PoolChange};
use keepwarm::cluster::tls::{MemberTls, TlsFiles};
use keepwarm::cluster::{ClusterConfig, Node, Transport};
use keepwarm_tests::cluster::Cluster;
use keepwarm_tests::host::{HostOptions, PluginChoice};
use keepwarm_tests::kafka::Controller;
use keepwarm_tests::mesos::{MesosMaster, Options};
use keepwarm_tests::stats::summarize;
use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn failovers(rt: &tokio::runtime::Runtime, warm: usize, kills: usize, mesos: Option<&MesosMaster>) {
    let instance = 8_000_000
        + (std::process::id() % 10_000) * 10
        + warm as u32 % 10
        + warm as u32 / 10
        + mesos.map_or(0, |_| 5);
    let mut c = rt.block_on(Controller::new(instance, &format!("fb{instance}")));
    let memory = 128 * (warm as u64 + 8);
    let mut base = HostOptions::new(instance, 0, memory);
    if let Some(master) = mesos {
        base.log_store = "log-driver";
        base.plugin = PluginChoice {
            name: "mesos".into(),
            stem: "keepwarm_mesos".into(),
            routes: format!("mesos = \"{}\"", master.route()),
            config: String::new(),
            file: None,
        };
    }
    let engine = if mesos.is_some() { "mesos" } else { "docker" };
    let mut cluster = Cluster::start_from(3, &base);
    cluster
        .active(Duration::from_secs(60))
        .expect("no active host");
    if warm > 0 {
        let ids = rt.block_on(c.invoke_many("guest", "echo", warm));
        assert!(c.poll_until(Duration::from_secs(300), |c| ids
            .iter()
            .all(|i| c.received.contains_key(i))));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let (mut times, mut ready, mut reattached) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..kills {
        let active = cluster
            .active(Duration::from_secs(30))
            .expect("no active host");
        let killed = now_ms();
        cluster.hosts[active].kill();
        let next = cluster
            .active(Duration::from_secs(10))
            .expect("no takeover");
        let s = cluster.status(next).unwrap();
        times.push(Duration::from_millis(
            (s["consuming_since_ms"].as_i64().unwrap() - killed) as u64,
        ));
        ready.push(Duration::from_millis(
            s["last_takeover"]["took_ms"].as_u64().unwrap(),
        ));
        reattached.push(s["last_takeover"]["reattached"].as_u64().unwrap());
        // the killed host comes back as a standby before the next round
        cluster.rejoin(active, Duration::from_secs(30), |x| {
            x["epoch"] == s["epoch"]
        });
        std::thread::sleep(Duration::from_millis(300));
    }
    println!(
        "failover with {warm:>3} warm containers on {engine}: {}",
        summarize(times)
    );
    println!(
        "  takeover (claim → re-attached, feed not yet started): {}",
        summarize(ready)
    );
    println!("  re-attached per failover: {:?}", reattached);
}

/// Members over mutual TLS (`tls`) or plain HTTP with the secret.
fn transport(tls: bool, certs: &std::path::Path, id: u64) -> Transport {
    if tls {
        Transport::Tls(MemberTls::load(&TlsFiles::in_dir(certs, id), id).unwrap())
    } else {
        Transport::insecure("bench-secret")
    }
}

/// Three in-process members; `listeners` holds an unbound slot per member to restart one.
async fn members(
    dir: &std::path::Path,
    tls: bool,
    peers: &BTreeMap<u64, String>,
    listeners: &mut BTreeMap<u64, tokio::net::TcpListener>,
    ids: &[u64],
) -> Vec<Node> {
    let mut nodes = Vec::new();
    for id in ids {
        let config = ClusterConfig {
            id: *id,
            peers: peers.clone(),
            transport: transport(tls, &dir.join("certs"), *id),
            status_address: None,
            status_token: None,
            data_dir: dir.join(format!("n{id}")),
            heartbeat: Duration::from_millis(50),
            election_timeout: (Duration::from_millis(150), Duration::from_millis(300)),
            admin_token: None,
        };
        let l = match listeners.remove(id) {
            Some(l) => l,
            None => tokio::net::TcpListener::bind(&peers[id]).await.unwrap(),
        };
        nodes.push(Node::start_on(config, l).await.unwrap());
    }
    nodes
}

async fn leader_among(nodes: &[Node]) -> Node {
    let start = Instant::now();
    loop {
        if let Some(n) = nodes.iter().find(|n| n.is_leader()) {
            return n.clone();
        }
        if start.elapsed() > Duration::from_secs(10) {
            for n in nodes {
                let m = n.raft.metrics().borrow().clone();
                eprintln!(
                    "member {}: {:?}, term {}, leader {:?}, last applied {:?}",
                    n.id, m.state, m.current_term, m.current_leader, m.last_applied
                );
            }
            panic!("no leader among {} members within 10 s", nodes.len());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Raft write throughput and in-process failover (the leader shut down → a new leader has
/// claimed), over TLS or plain HTTP.
async fn raft(tls: bool) {
    let label = if tls {
        "mutual TLS"
    } else {
        "plain HTTP (insecure)"
    };
    let dir = tempfile::tempdir().unwrap();
    keepwarm::cluster::tls::generate(&[1, 2, 3], &dir.path().join("certs")).unwrap();
    let mut peers = BTreeMap::new();
    let mut listeners = BTreeMap::new();
    for id in 1..=3u64 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        peers.insert(id, l.local_addr().unwrap().to_string());
        listeners.insert(id, l);
    }
    let mut nodes = members(dir.path(), tls, &peers, &mut listeners, &[1, 2, 3]).await;
    let leader = leader_among(&nodes).await;
    let epoch = leader.claim().await.unwrap();
    let record =
        |i: usize| PoolChange::Upsert(keepwarm_tests::cluster::sample_record(&format!("c{i}")));
    for (batch, writers) in [(1usize, 1usize), (1, 16), (16, 16)] {
        let n = 2_000 / batch;
        let t = Instant::now();
        let tasks: Vec<_> = (0..writers)
            .map(|w| {
                let leader = leader.clone();
                tokio::spawn(async move {
                    for i in (w..n).step_by(writers) {
                        let changes = (0..batch).map(|j| record(i * batch + j)).collect();
                        leader
                            .propose(Command::Pool { epoch, changes })
                            .await
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let secs = t.elapsed().as_secs_f64();
        println!(
            "raft writes over {label}, {writers:>2} writer(s), {batch:>2} pool events per entry: {:>6.0} entries/s, {:>7.0} pool events/s",
            n as f64 / secs,
            (n * batch) as f64 / secs
        );
    }
    // replication lag right after a burst: how far behind the followers are
    let last = leader
        .raft
        .metrics()
        .borrow()
        .last_applied
        .map(|l| l.index)
        .unwrap_or(0);
    let lag: Vec<u64> = leader
        .raft
        .metrics()
        .borrow()
        .replication
        .as_ref()
        .map(|r| {
            r.values()
                .map(|m| last - m.map(|m| m.index).unwrap_or(0))
                .collect()
        })
        .unwrap_or_default();
    println!("replication lag right after the burst (entries, per member): {lag:?}");
    let mut times = Vec::new();
    for round in 0..20 {
        eprintln!("failover round {round} over {label}");
        let leader = leader_among(&nodes).await;
        let t = Instant::now();
        leader.shutdown().await;
        let rest: Vec<Node> = nodes
            .iter()
            .filter(|n| n.id != leader.id)
            .cloned()
            .collect();
        let next = leader_among(&rest).await;
        next.claim().await.unwrap();
        times.push(t.elapsed());
        // the old leader comes back before the next round
        nodes.retain(|n| n.id != leader.id);
        nodes.extend(members(dir.path(), tls, &peers, &mut listeners, &[leader.id]).await);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "in-process failover over {label} (leader shut down → new leader claimed): {}",
        summarize(times)
    );
    for n in &nodes {
        n.shutdown().await;
    }
}

fn main() {
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    // the same measurements over both transports, in one run: read the ratio
    rt.block_on(raft(false));
    rt.block_on(raft(true));
    // `cargo bench --bench failover -- raft`: only the transports
    if std::env::args().skip(1).any(|a| a == "raft") {
        return;
    }
    failovers(&rt, 0, 20, None);
    failovers(&rt, 10, 20, None);
    let master = rt.block_on(MesosMaster::start(Options::default()));
    failovers(&rt, 10, 20, Some(&master));
    println!(
        "  tasks launched on mesos: {} (10 warm; none relaunched by the failovers)",
        master.launched()
    );
    drop(master);
    failovers(&rt, 100, 10, None);
}
