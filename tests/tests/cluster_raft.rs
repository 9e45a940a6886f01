//! The cluster's Raft layer with three members in one process, talking real HTTP on
//! loopback, with their storage on disk: election, replication, fencing by epoch, leader
//! loss, restart from disk, and a member without the secret.

use keepwarm::cluster::state::{Command, ContainerRecord, PoolChange};
use keepwarm::cluster::{ClusterConfig, ClusterError, Node};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

const SECRET: &str = "test-secret";

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

fn config(id: u64, peers: &BTreeMap<u64, String>, dir: &Path, secret: &str) -> ClusterConfig {
    ClusterConfig {
        id,
        peers: peers.clone(),
        secret: secret.into(),
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
        let config = config(id, &peers, dir.path(), SECRET);
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
            Node::start_on(config(*id, &peers, dir.path(), SECRET), l)
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
async fn a_member_without_the_secret_cannot_take_part() {
    let dir = tempfile::tempdir().unwrap();
    let Members {
        peers,
        mut listeners,
    } = bind(3).await;
    let mut good = Vec::new();
    for id in 1..=2 {
        let l = listeners.remove(&id).unwrap();
        good.push(
            Node::start_on(config(id, &peers, dir.path(), SECRET), l)
                .await
                .unwrap(),
        );
    }
    let l = listeners.remove(&3).unwrap();
    let intruder = Node::start_on(config(3, &peers, dir.path(), "wrong"), l)
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

/// `keepwarm cluster join` / `leave` against the admin endpoint: a fourth member joins and
/// receives the state; one leaves; a wrong token changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_join_and_leave_with_the_admin_token() {
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

    // a fourth host starts with every member in its config, itself included
    let l4 = TcpListener::bind("127.0.0.1:0").await.unwrap();
    peers.insert(4, l4.local_addr().unwrap().to_string());
    let fourth = Node::start_on(config(4, &peers, dir.path(), SECRET), l4)
        .await
        .unwrap();
    let join = |token: &str| {
        let args: Vec<String> = [
            "cluster",
            "join",
            "--leader",
            &peers[&leader],
            "--id",
            "4",
            "--address",
            &peers[&4],
            "--token",
            token,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(keepwarm_tests::keepwarm_bin())
                .args(args)
                .output()
                .unwrap()
        })
    };
    let refused = join("wrong").await.unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("401"));
    let ok = join("admin-token").await.unwrap();
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
    let voters: Vec<u64> = leader_node
        .raft
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .voter_ids()
        .collect();
    assert_eq!(voters, vec![1, 2, 3, 4]);

    let leave_addr = peers[&leader].clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(keepwarm_tests::keepwarm_bin())
            .args([
                "cluster",
                "leave",
                "--leader",
                &leave_addr,
                "--id",
                "4",
                "--token",
                "admin-token",
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let voters: Vec<u64> = leader_node
        .raft
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .voter_ids()
        .collect();
    assert_eq!(voters, vec![1, 2, 3]);
    fourth.shutdown().await;
    for n in &nodes {
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
            Node::start_on(config(standby, &peers, dir.path(), SECRET), l)
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
