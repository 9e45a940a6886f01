//! A cluster of real `keepwarm run` processes under a hostile network: thousands of idle
//! connections and slow-loris clients against the active host's listeners while activations
//! flow, and an oversized body from a genuine member.

use keepwarm::cluster::tls::{MemberTls, TlsFiles};
use keepwarm_tests::cluster::Cluster;
use keepwarm_tests::kafka::Controller;
use serde_json::json;
use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;

const WAIT: Duration = Duration::from_secs(60);
/// `lease-ms`'s default.
const LEASE: Duration = Duration::from_millis(100);

fn instance(base: u32) -> u32 {
    base * 10_000 + std::process::id() % 10_000
}

/// Sends `n` activations one after another; each one's time from send to completion.
fn latencies(rt: &Runtime, c: &mut Controller, n: usize) -> Vec<Duration> {
    (0..n)
        .map(|i| {
            let start = Instant::now();
            let id = rt.block_on(c.invoke("guest", "echo", true, json!({ "i": i })));
            c.wait_for(&id, WAIT);
            start.elapsed()
        })
        .collect()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Clients that open a connection and send one byte of a TLS record every 200 ms, opening a
/// new one whenever the host closes theirs; returns how many the host closed.
fn slow_loris(address: &str, clients: usize, stop: Arc<AtomicBool>) -> Arc<AtomicUsize> {
    let closed = Arc::new(AtomicUsize::new(0));
    let (address, counter) = (address.to_owned(), closed.clone());
    std::thread::spawn(move || {
        let open = || TcpStream::connect(&address).ok();
        let mut socks: Vec<Option<TcpStream>> = (0..clients).map(|_| open()).collect();
        let record = [0x16u8, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc];
        let mut sent = 0;
        while !stop.load(Ordering::Relaxed) {
            for s in socks.iter_mut() {
                let alive = s
                    .as_mut()
                    .is_some_and(|s| s.write_all(&[record[sent % record.len()]]).is_ok());
                if !alive {
                    counter.fetch_add(1, Ordering::Relaxed);
                    *s = open();
                }
            }
            sent += 1;
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    closed
}

#[test]
fn idle_and_slow_connections_cost_the_active_host_neither_its_lease_nor_its_pace() {
    let rt = Runtime::new().unwrap();
    let n = instance(7401);
    let mut c = rt.block_on(Controller::new(n, &format!("h{n}")));
    let cluster = Cluster::start(3, n, 0);
    let active = cluster
        .active(Duration::from_secs(30))
        .expect("an active host");
    let before = cluster.status(active).unwrap();

    latencies(&rt, &mut c, 3); // warm
    let quiet = latencies(&rt, &mut c, 30);

    // 2,000 idle connections to the peer listener, 200 to the status listener, 50 slow-loris
    // clients against each
    let idle: Vec<TcpStream> = (0..2000)
        .filter_map(|_| TcpStream::connect(&cluster.addresses[active]).ok())
        .chain((0..200).filter_map(|_| TcpStream::connect(&cluster.status_addresses[active]).ok()))
        .collect();
    assert!(idle.len() >= 2000, "only {} connections opened", idle.len());
    let stop = Arc::new(AtomicBool::new(false));
    let loris = slow_loris(&cluster.addresses[active], 50, stop.clone());
    let loris_status = slow_loris(&cluster.status_addresses[active], 50, stop.clone());
    std::thread::sleep(Duration::from_secs(1));

    let flooded = latencies(&rt, &mut c, 30);
    // the handshake (peer) and header-read (status) deadlines closed the slow clients
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    let after = cluster
        .status(active)
        .expect("the status listener answers under the flood");
    drop(idle);

    let (q, f) = (median(quiet.clone()), median(flooded.clone()));
    eprintln!(
        "activation latency median / max: quiet {q:?} / {:?}, flooded {f:?} / {:?}; \
         slow clients closed by the host: peer {}, status {}",
        quiet.iter().max().unwrap(),
        flooded.iter().max().unwrap(),
        loris.load(Ordering::Relaxed),
        loris_status.load(Ordering::Relaxed)
    );
    // the active host kept its lease: no new claim, no new term, still consuming
    assert_eq!(cluster.active(Duration::from_secs(1)), Some(active));
    assert_eq!(after["epoch"], before["epoch"], "{after}");
    assert_eq!(after["led_at_ms"], before["led_at_ms"], "{after}");
    assert_eq!(after["term"], before["term"], "{after}");
    assert!(
        f < q + LEASE,
        "the flood delayed activations by more than a lease period: median {q:?} → {f:?}"
    );
    assert!(
        loris.load(Ordering::Relaxed) >= 50,
        "slow peer clients were never closed"
    );
    assert!(
        loris_status.load(Ordering::Relaxed) >= 50,
        "slow status clients were never closed"
    );

    // a genuine member's 100 MB append: refused with 413 long before the body is sent
    let leader_id = after["id"].as_u64().unwrap();
    let sender = if leader_id == 1 { 2 } else { 1 };
    let tls = MemberTls::load(&TlsFiles::in_dir(&cluster.certs, sender), sender).unwrap();
    let address = cluster.addresses[active].clone();
    let (answer, sent) = rt.block_on(oversized_append(tls, leader_id, &address));
    eprintln!(
        "100 MB append: answered {answer:?} after {} MiB of it was sent",
        sent >> 20
    );
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    // answered from the declared length: no more than the sockets' buffers were written,
    // well under the 16 MiB the route would read
    assert!(
        sent < 8 << 20,
        "the host read {} MiB of a body declared over its 16 MiB limit",
        sent >> 20
    );
    assert_eq!(cluster.active(Duration::from_secs(1)), Some(active));
}

/// POSTs a 100 MB `/raft/append` in 64 KiB writes, reading the answer concurrently; returns
/// its status line and how many body bytes were written before it came (or the socket closed).
async fn oversized_append(tls: MemberTls, leader: u64, address: &str) -> (String, usize) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let connector = tokio_rustls::TlsConnector::from(tls.client.clone());
    let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    let stream = connector
        .connect(keepwarm::cluster::tls::server_name(leader), tcp)
        .await
        .unwrap();
    let (mut read, mut write) = tokio::io::split(stream);
    let head = format!(
        "POST /raft/append HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n",
        100u64 << 20
    );
    write.write_all(head.as_bytes()).await.unwrap();
    let sent = Arc::new(AtomicUsize::new(0));
    let counter = sent.clone();
    let writer = tokio::spawn(async move {
        let chunk = vec![b' '; 64 << 10];
        for _ in 0..1600 {
            if write.write_all(&chunk).await.is_err() {
                break;
            }
            counter.fetch_add(chunk.len(), Ordering::Relaxed);
        }
    });
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(30), read.read(&mut buf))
        .await
        .expect("an answer within 30 s")
        .unwrap_or(0);
    let at = sent.load(Ordering::Relaxed);
    writer.abort();
    let text = String::from_utf8_lossy(&buf[..n]).to_string();
    (text.lines().next().unwrap_or_default().to_owned(), at)
}
