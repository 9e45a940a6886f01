//! The cluster's Raft layer with three members in one process, talking mutual TLS on
//! loopback, with their storage on disk: election, replication, fencing by epoch, leader
//! loss, restart from disk, membership changes, and hosts without the cluster's keys.

use keepwarm::cluster::state::{Command, ContainerRecord, PoolChange};
use keepwarm::cluster::tls::{generate, MemberTls, TlsFiles};
use keepwarm::cluster::{ClusterConfig, ClusterError, Node, Transport};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

const SECRET: &str = "test-secret";

/// The certificates every test's members use: `dir/certs`, members 1–4 and the admin.
fn certs(dir: &Path) -> std::path::PathBuf {
    let certs = dir.join("certs");
    if !certs.join("ca.pem").exists() {
        generate(&[1, 2, 3, 4], &certs).unwrap();
    }
    certs
}

fn tls(certs: &Path, id: u64) -> Transport {
    Transport::Tls(MemberTls::load(&TlsFiles::in_dir(certs, id), id).unwrap())
}

struct Members {
    peers: BTreeMap<u64, String>,
    listeners: BTreeMap<u64, TcpListener>,
}

async fn bind(n: u64) -> Members {
    let mut peers = BTreeMap::new();
    let mut listeners = BTreeMap::new();
    for id in 1..=n {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        peers.insert(id, l.local_addr().unwrap().to_string());
        listeners.insert(id, l);
    }
    Members { peers, listeners }
}

/// Member `id` over TLS with the certificates in `dir/certs`.
fn config(id: u64, peers: &BTreeMap<u64, String>, dir: &Path) -> ClusterConfig {
    config_with(id, peers, dir, tls(&certs(dir), id))
}

fn config_with(
    id: u64,
    peers: &BTreeMap<u64, String>,
    dir: &Path,
    transport: Transport,
) -> ClusterConfig {
    ClusterConfig {
        id,
        peers: peers.clone(),
        transport,
        status_address: None,
        status_token: None,
        data_dir: dir.join(format!("node{id}")),
        heartbeat: Duration::from_millis(50),
        election_timeout: (Duration::from_millis(150), Duration::from_millis(300)),
        admin_token: Some("admin-token".into()),
    }
}

fn record(id: &str) -> Box<ContainerRecord> {
    keepwarm_tests::cluster::sample_record(id)
}

/// Three members with their storage in a fresh directory.
async fn start_three() -> (tempfile::TempDir, BTreeMap<u64, String>, Vec<Node>) {
    let dir = tempfile::tempdir().unwrap();
    let Members {
        peers,
        mut listeners,
    } = bind(3).await;
    let mut nodes = Vec::new();
    for id in 1..=3 {
        let l = listeners.remove(&id).unwrap();
        let config = config(id, &peers, dir.path());
        nodes.push(Node::start_on(config, l).await.unwrap());
    }
    (dir, peers, nodes)
}

async fn leader_of(nodes: &[&Node], within: Duration) -> u64 {
    let start = Instant::now();
    loop {
        if let Some(n) = nodes.iter().find(|n| n.is_leader()) {
            return n.id;
        }
        assert!(start.elapsed() < within, "no leader within {within:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < within {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elects_replicates_fences_and_fails_over() {
    let (_dir, _peers, nodes) = start_three().await;
    let all: Vec<&Node> = nodes.iter().collect();
    let first = leader_of(&all, Duration::from_secs(5)).await;
    let leader = nodes.iter().find(|n| n.id == first).unwrap();

    // the leader claims; its epoch fences everything after
    let epoch = leader.claim().await.unwrap();
    leader
        .propose(Command::Pool {
            epoch,
            changes: vec![PoolChange::Upsert(record("c1"))],
        })
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(3), || nodes
            .iter()
            .all(|n| n.state().containers.contains_key("c1")))
        .await
    );
    assert!(nodes.iter().all(|n| n.state().claim.epoch == epoch));

    // a follower cannot write
    let follower = nodes.iter().find(|n| n.id != first).unwrap();
    let e = follower
        .propose(Command::Offsets {
            epoch,
            offsets: BTreeMap::from([(0, 5)]),
        })
        .await;
    assert!(
        matches!(e, Err(ClusterError::NotLeader { leader: Some(l) }) if l == first),
        "{e:?}"
    );

    // the leader goes away: another member leads within a second and claims a newer epoch
    let killed = Instant::now();
    leader.shutdown().await;
    let rest: Vec<&Node> = nodes.iter().filter(|n| n.id != first).collect();
    let second = leader_of(&rest, Duration::from_secs(3)).await;
    let took = killed.elapsed();
    assert_ne!(second, first);
    assert!(took < Duration::from_secs(1), "failover took {took:?}");
    let new_leader = rest.iter().find(|n| n.id == second).unwrap();
    let new_epoch = new_leader.claim().await.unwrap();
    assert!(new_epoch > epoch);
    assert!(
        new_leader.state().containers.contains_key("c1"),
        "the pool survived"
    );

    // a write under the old epoch is rejected
    let stale = new_leader
        .propose(Command::Pool {
            epoch,
            changes: vec![PoolChange::Removed { id: "c1".into() }],
        })
        .await;
    assert!(
        matches!(stale, Err(ClusterError::Stale { current, .. }) if current == new_epoch),
        "{stale:?}"
    );
    assert!(new_leader.state().containers.contains_key("c1"));
    for n in rest {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_cluster_recovers_its_state_from_disk() {
    let (dir, peers, nodes) = start_three().await;
    let all: Vec<&Node> = nodes.iter().collect();
    let leader = leader_of(&all, Duration::from_secs(5)).await;
    let leader = nodes.iter().find(|n| n.id == leader).unwrap();
    let epoch = leader.claim().await.unwrap();
    for i in 0..20 {
        leader
            .propose(Command::Pool {
                epoch,
                changes: vec![PoolChange::Upsert(record(&format!("c{i}")))],
            })
            .await
            .unwrap();
    }
    leader
        .propose(Command::Offsets {
            epoch,
            offsets: BTreeMap::from([(0, 42)]),
        })
        .await
        .unwrap();
    for n in &nodes {
        n.shutdown().await;
    }
    drop(nodes);

    // the same data directories, the same addresses
    let mut nodes = Vec::new();
    for (id, addr) in &peers {
        let l = TcpListener::bind(addr).await.unwrap();
        nodes.push(
            Node::start_on(config(*id, &peers, dir.path()), l)
                .await
                .unwrap(),
        );
    }
    let all: Vec<&Node> = nodes.iter().collect();
    leader_of(&all, Duration::from_secs(5)).await;
    assert!(
        eventually(Duration::from_secs(5), || nodes.iter().all(|n| n
            .state()
            .containers
            .len()
            == 20
            && n.state().offsets.get(&0) == Some(&42)))
        .await
    );
    for n in &nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_an_insecure_cluster_a_member_without_the_secret_cannot_take_part() {
    let dir = tempfile::tempdir().unwrap();
    let Members {
        peers,
        mut listeners,
    } = bind(3).await;
    let mut good = Vec::new();
    for id in 1..=2 {
        let l = listeners.remove(&id).unwrap();
        good.push(
            Node::start_on(
                config_with(id, &peers, dir.path(), Transport::insecure(SECRET)),
                l,
            )
            .await
            .unwrap(),
        );
    }
    let l = listeners.remove(&3).unwrap();
    let intruder = Node::start_on(
        config_with(3, &peers, dir.path(), Transport::insecure("wrong-secret")),
        l,
    )
    .await
    .unwrap();
    let all: Vec<&Node> = good.iter().collect();
    let leader = leader_of(&all, Duration::from_secs(5)).await;
    // the intruder never leads, and never learns the state
    let leader = good.iter().find(|n| n.id == leader).unwrap();
    let epoch = leader.claim().await.unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(!intruder.is_leader());
    assert_ne!(intruder.state().claim.epoch, epoch);
    // and a request without the secret is refused outright
    let addr = &peers[&1];
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(b"POST /raft/vote HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}")
        .await
        .unwrap();
    let mut buf = vec![0u8; 256];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 401"));
    intruder.shutdown().await;
    for n in &good {
        n.shutdown().await;
    }
}

fn keepwarm(args: Vec<String>) -> tokio::task::JoinHandle<std::process::Output> {
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(keepwarm_tests::keepwarm_bin())
            .args(args)
            .env_remove("KEEPWARM_TLS_DIR")
            .output()
            .unwrap()
    })
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// `keepwarm cluster join` / `leave` with the admin certificate: a fourth member joins and
/// receives the state; one leaves. An admin of another CA, and a join naming an id whose key
/// the host at that address does not hold, change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_join_and_leave_with_the_admin_certificate() {
    let (dir, mut peers, nodes) = start_three().await;
    let all: Vec<&Node> = nodes.iter().collect();
    let leader = leader_of(&all, Duration::from_secs(5)).await;
    let leader_node = nodes.iter().find(|n| n.id == leader).unwrap().clone();
    let epoch = leader_node.claim().await.unwrap();
    leader_node
        .propose(Command::Pool {
            epoch,
            changes: vec![PoolChange::Upsert(record("c1"))],
        })
        .await
        .unwrap();
    let voters = |n: &Node| -> Vec<u64> {
        n.raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .collect()
    };

    // a fourth host starts with every member in its config, itself included
    let l4 = TcpListener::bind("127.0.0.1:0").await.unwrap();
    peers.insert(4, l4.local_addr().unwrap().to_string());
    let fourth = Node::start_on(config(4, &peers, dir.path()), l4)
        .await
        .unwrap();
    let certs = certs(dir.path()).display().to_string();
    let other_ca = dir.path().join("other-ca");
    generate(&[1], &other_ca).unwrap();
    let join = |tls_dir: &str, id: &str, address: &str| {
        keepwarm(strings(&[
            "cluster",
            "join",
            "--leader",
            &peers[&leader],
            "--id",
            id,
            "--address",
            address,
            "--tls-dir",
            tls_dir,
        ]))
    };
    // an admin whose certificate another CA signed: refused at the handshake
    let refused = join(&other_ca.display().to_string(), "4", &peers[&4])
        .await
        .unwrap();
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("not member 4"), "{said}");
    // the host at member 2's address is not member 4: nothing is sent to the leader
    let wrong = join(&certs, "4", &peers[&2]).await.unwrap();
    assert!(!wrong.status.success());
    let said = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        said.contains("is not member 4") && said.contains("nothing was sent"),
        "{said}"
    );
    assert_eq!(voters(&leader_node), vec![1, 2, 3]);

    let ok = join(&certs, "4", &peers[&4]).await.unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(
        eventually(Duration::from_secs(5), || fourth
            .state()
            .containers
            .contains_key("c1"))
        .await
    );
    assert_eq!(voters(&leader_node), vec![1, 2, 3, 4]);

    let out = keepwarm(strings(&[
        "cluster",
        "leave",
        "--leader",
        &peers[&leader],
        "--id",
        "4",
        "--tls-dir",
        &certs,
    ]))
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(voters(&leader_node), vec![1, 2, 3]);
    fourth.shutdown().await;
    for n in &nodes {
        n.shutdown().await;
    }
}

/// A host without the cluster's keys learns nothing and changes nothing: one whose
/// certificates another CA signed never leads and never receives the state; a plain request
/// (e.g. one captured from an insecure cluster and replayed) gets no HTTP answer at all; a
/// member's certificate cannot carry a vote in another member's name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_without_the_cluster_keys_cannot_take_part() {
    let dir = tempfile::tempdir().unwrap();
    let Members {
        peers,
        mut listeners,
    } = bind(3).await;
    let mut good = Vec::new();
    for id in 1..=2 {
        let l = listeners.remove(&id).unwrap();
        good.push(
            Node::start_on(config(id, &peers, dir.path()), l)
                .await
                .unwrap(),
        );
    }
    let other = dir.path().join("other-ca");
    generate(&[3], &other).unwrap();
    let intruder = Node::start_on(
        config_with(3, &peers, dir.path(), tls(&other, 3)),
        listeners.remove(&3).unwrap(),
    )
    .await
    .unwrap();
    let all: Vec<&Node> = good.iter().collect();
    let leader = leader_of(&all, Duration::from_secs(5)).await;
    let leader = good.iter().find(|n| n.id == leader).unwrap();
    let epoch = leader.claim().await.unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(!intruder.is_leader());
    assert_ne!(intruder.state().claim.epoch, epoch);
    let last = leader.raft.metrics().borrow().last_log_index;

    // plain HTTP against a TLS listener: no HTTP answer
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(&peers[&1]).await.unwrap();
    s.write_all(b"POST /raft/vote HTTP/1.1\r\nhost: x\r\nx-keepwarm-secret: test-secret\r\ncontent-length: 2\r\n\r\n{}")
        .await
        .unwrap();
    let mut buf = vec![0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .map(|r| r.unwrap_or(0))
        .unwrap_or(0);
    assert!(
        !String::from_utf8_lossy(&buf[..n]).contains("HTTP/1.1"),
        "a plain request was answered"
    );

    // member 3's genuine certificate, a vote in member 2's name: 403
    let certs = certs(dir.path());
    let member3 = Transport::Tls(MemberTls::load(&TlsFiles::in_dir(&certs, 3), 3).unwrap());
    let client = member3.client_for(1);
    let vote = serde_json::json!({
        "vote": { "leader_id": { "term": 999, "node_id": 2 }, "committed": false },
        "last_log_id": null
    });
    let req = hyper::Request::post(format!("https://{}/raft/vote", peers[&1]))
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            vote.to_string(),
        )))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), 403);
    // nothing was appended, no term was raised
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(leader.is_leader());
    assert!(leader.term() < 999);
    assert_eq!(leader.raft.metrics().borrow().last_log_index, last);
    intruder.shutdown().await;
    for n in &good {
        n.shutdown().await;
    }
}

/// A standby back from a restart must rejoin as a follower: before the campaign guard's
/// pre-vote (and a leader retry shorter than the election timeout), a restarted member heard
/// nothing for openraft's 500 ms retry pause, campaigned on its expired timer and its higher
/// term deposed the healthy leader, which then had to claim again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_standby_does_not_depose_the_leader() {
    let (dir, peers, mut nodes) = start_three().await;
    let all: Vec<&Node> = nodes.iter().collect();
    let leader = leader_of(&all, Duration::from_secs(5)).await;
    let epoch = {
        let l = nodes.iter().find(|n| n.id == leader).unwrap();
        l.claim().await.unwrap()
    };
    // the claim is everywhere before the standby goes
    assert!(
        eventually(Duration::from_secs(3), || nodes.iter().all(|n| n
            .state()
            .claim
            .epoch
            == epoch))
        .await
    );
    let term = nodes.iter().find(|n| n.id == leader).unwrap().term();
    let standby = peers.keys().copied().find(|id| *id != leader).unwrap();
    for round in 0..4 {
        let i = nodes.iter().position(|n| n.id == standby).unwrap();
        let gone = nodes.remove(i);
        gone.shutdown().await;
        drop(gone);
        // long enough for the leader's replication to it to fail and pause
        tokio::time::sleep(Duration::from_millis(700 + 150 * round)).await;
        let l = TcpListener::bind(&peers[&standby]).await.unwrap();
        nodes.push(
            Node::start_on(config(standby, &peers, dir.path()), l)
                .await
                .unwrap(),
        );
        let back = nodes.last().unwrap();
        assert!(
            eventually(Duration::from_secs(5), || back.state().claim.epoch == epoch).await,
            "the restarted standby caught up with the claim"
        );
        // a few election timeouts for a needless campaign to show
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let l = nodes.iter().find(|n| n.id == leader).unwrap();
        assert!(l.is_leader(), "round {round}: the leader was deposed");
        assert_eq!(l.term(), term, "round {round}: the term moved");
        assert_eq!(l.state().claim.epoch, epoch);
    }
    for n in &nodes {
        n.shutdown().await;
    }
}
