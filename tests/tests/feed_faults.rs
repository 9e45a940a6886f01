//! The feed never stalls on one message: a result too large for the broker goes out shrunk
//! (as upstream's `MessagingActiveAck` sends it), a completion topic that cannot exist is
//! dropped with a log line, and the offset moves past both; a second SIGTERM ends a drain at
//! once. Real `keepwarm run` processes, tansu and Docker.

use keepwarm_tests::eventually;
use keepwarm_tests::host::{containers_of, Host, HostOptions};
use keepwarm_tests::kafka::Controller;
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;

const WAIT: Duration = Duration::from_secs(60);

fn opts(instance: u32) -> HostOptions {
    let run = std::process::id() % 10_000;
    HostOptions::new(instance * 10_000 + run, 0, 1024)
}

fn start(rt: &Runtime, opts: HostOptions) -> (Host, Controller) {
    let controller = rt.block_on(Controller::new(
        opts.instance,
        &format!("t{}", opts.instance),
    ));
    (Host::start(&opts), controller)
}

#[test]
fn a_result_too_large_for_the_broker_is_acknowledged_shrunk_and_the_offset_moves_past_it() {
    let rt = Runtime::new().unwrap();
    let (mut host, mut c) = start(&rt, opts(7401));
    let big = rt.block_on(c.invoke("guest", "big", true, json!({})));
    let acks = c.wait_for(&big, WAIT);
    assert_eq!(acks.len(), 2, "{acks:?}");
    // the ResultMessage with the record replaced by its activation id, then the completion
    assert_eq!(acks[0]["response"], json!(big), "{}", host.log());
    assert!(acks[0].get("instance").is_none());
    assert_eq!(acks[1]["activationId"], json!(big));
    assert_eq!(acks[1]["isSystemError"], json!(false));
    assert!(acks[1]["instance"].is_object());
    // the full record (a million bytes of result) is in the activation log (written right
    // after the acknowledgement)
    let find = |host: &Host| {
        host.records()
            .into_iter()
            .find(|r| r["activationId"] == json!(big))
    };
    let start = Instant::now();
    while find(&host).is_none() && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let record = find(&host).expect("the record is written whole to the activation log");
    assert_eq!(
        record["response"]["result"]["big"].as_str().map(str::len),
        Some(1_000_000)
    );
    assert!(host.log().contains("too large for the broker"));

    // the next activation runs, and after a restart the big one is not run again
    let next = rt.block_on(c.invoke("guest", "echo", true, json!({})));
    c.wait_for(&next, WAIT);
    assert_eq!(host.terminate(), Some(0), "{}", host.log());
    host.spawn();
    let after = rt.block_on(c.invoke("guest", "echo", true, json!({})));
    c.wait_for(&after, WAIT);
    assert_eq!(c.completions(&big), 1, "the big activation ran again");
    assert_eq!(c.completions(&next), 1);
}

#[test]
fn an_acknowledgement_for_a_topic_that_cannot_exist_is_dropped_and_the_feed_moves_on() {
    let rt = Runtime::new().unwrap();
    let (host, mut c) = start(&rt, opts(7402));
    let (bad, mut msg) = c.message("guest", "echo", false, json!({}));
    msg["rootControllerIndex"]["asString"] = json!("not a/topic");
    rt.block_on(c.send_raw(&msg.to_string()));
    let good = rt.block_on(c.invoke("guest", "echo", true, json!({})));
    c.wait_for(&good, WAIT);
    // the two run side by side: the bad one may finish after the good one
    let dropped = |log: &str| log.contains("not a legal Kafka topic name") && log.contains(&bad);
    let start = Instant::now();
    while !dropped(&host.log()) && start.elapsed() < WAIT {
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = host.log();
    assert!(dropped(&log), "{log}");
    assert!(!c.received.contains_key(&bad));
    // it ran (its record is in the activation log), only its acknowledgement had nowhere to go
    let start = Instant::now();
    while !host
        .records()
        .iter()
        .any(|r| r["activationId"] == json!(bad))
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no record of {bad}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_second_sigterm_ends_the_drain_at_once() {
    let rt = Runtime::new().unwrap();
    let (mut host, mut c) = start(&rt, opts(7403));
    let warm = rt.block_on(c.invoke("guest", "echo", true, json!({})));
    c.wait_for(&warm, WAIT);
    let slow = rt.block_on(c.invoke("guest", "slow", true, json!({})));
    // once its cold container exists it is running; then ask for a drain and change our mind
    eventually(
        WAIT,
        || format!("the slow activation's container is created\n{}", host.log()),
        || (containers_of(&host.cluster).len() >= 2).then_some(()),
    );
    host.signal("-TERM");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        host.child.as_mut().unwrap().try_wait().unwrap().is_none(),
        "the first SIGTERM drains: the slow activation is still running"
    );
    let asked = Instant::now();
    host.signal("-TERM");
    let code = host.child.take().unwrap().wait().unwrap().code();
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(code, Some(130), "{}", host.log());
    assert!(!c.received.contains_key(&slow));
}

/// Issue 32, defect 4: an acknowledgement that can never be published (here: its echoed
/// transaction id alone is over the producer's 1,000,000-byte limit, so even the shrunk one
/// is too large) was retried for ever, the offset never moved past it, and a restart ran it
/// and everything after it again. It is given up on now, with an error line and a counter.
#[test]
fn an_acknowledgement_that_can_never_be_published_is_given_up_and_the_offset_moves_on() {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let rt = Runtime::new().unwrap();
    let (mut host, mut c) = start(&rt, opts(7403));
    let (huge, mut msg) = c.message("guest", "echo", true, json!({}));
    // a transaction id upstream echoes verbatim; its third element is no parent it can read
    msg["transid"]
        .as_array_mut()
        .expect("a transaction id is an array")
        .push(json!("x".repeat(1_100_000)));
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", keepwarm_tests::kafka::brokers())
        .set("message.max.bytes", "4000000")
        .create()
        .unwrap();
    rt.block_on(producer.send(
        FutureRecord::<(), _>::to(&c.invoker_topic).payload(&msg.to_string()),
        Duration::from_secs(30),
    ))
    .expect("the broker takes the activation");
    let next = rt.block_on(c.invoke("guest", "echo", true, json!({})));
    c.wait_for(&next, WAIT);
    eventually(
        Duration::from_secs(30),
        || format!("the acknowledgement is given up on\n{}", host.log()),
        || {
            host.log()
                .contains("too large for the broker even shrunk")
                .then_some(())
        },
    );
    // after a restart neither runs again: the offset moved past both
    assert_eq!(host.terminate(), Some(0), "{}", host.log());
    host.spawn();
    let after = rt.block_on(c.invoke("guest", "echo", true, json!({})));
    c.wait_for(&after, WAIT);
    assert_eq!(c.completions(&huge), 0, "it cannot be acknowledged");
    assert_eq!(c.completions(&next), 1, "it ran again after the restart");
    let runs = host
        .records()
        .iter()
        .filter(|r| r["activationId"] == json!(huge))
        .count();
    assert_eq!(
        runs, 1,
        "the unpublishable activation ran again after the restart"
    );
}

/// Issue 32: the 30-minute chaos run saw a completion published twice across a broker
/// restart (one run, one record, two identical completions). A broker that wrote a batch and
/// died before answering gets it again from librdkafka's retry. Acknowledgements sent through
/// two broker crashes are each on the topic exactly once.
#[test]
fn acknowledgements_sent_across_broker_crashes_are_on_the_topic_once_each() {
    use keepwarm_tests::chaos::broker::Broker;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::producer::FutureRecord;
    use rdkafka::Message;
    use std::collections::HashMap;
    const SENT: usize = 12_000;
    const CRASHES: usize = 8;
    let rt = Runtime::new().unwrap();
    let broker = Broker::start();
    let topic = "completed0";
    rt.block_on(keepwarm_tests::kafka::create_topics_on(
        &broker.address,
        &[topic],
    ));
    let producer = keepwarm::feed::acknowledgement_producer(&broker.address, 0).unwrap();
    let sends = rt.block_on(async {
        let (mut sends, mut restarts) = (Vec::new(), Vec::<std::thread::JoinHandle<()>>::new());
        for i in 0..SENT {
            let producer = producer.clone();
            sends.push(tokio::spawn(async move {
                let payload = json!({"activationId": format!("a{i}"), "instance": {"instance": 0}})
                    .to_string();
                let record = FutureRecord::<(), _>::to(topic).payload(&payload);
                producer
                    .send(record, Duration::from_secs(60))
                    .await
                    .map(|_| ())
                    .map_err(|(e, _)| e)
            }));
            if i % 4 == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            if i > 0 && i % (SENT / (CRASHES + 1)) == 0 {
                // a crash with batches in flight, back 1 s later; sending goes on
                if let Some(previous) = restarts.pop() {
                    tokio::task::block_in_place(|| previous.join().unwrap());
                }
                restarts.push(broker.restart(Duration::from_secs(1)));
            }
        }
        for restart in restarts {
            restart.join().unwrap();
        }
        futures::future::join_all(sends).await
    });
    let failed: Vec<_> = sends
        .into_iter()
        .map(|s| s.unwrap())
        .filter_map(Result::err)
        .collect();
    assert!(failed.is_empty(), "sends failed: {failed:?}");
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &broker.address)
        .set("group.id", "count")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "20")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let deadline = Instant::now() + WAIT;
    while seen.len() < SENT && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
            *seen
                .entry(v["activationId"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
    }
    // what arrives within a second more would be copies
    let tail = Instant::now() + Duration::from_secs(1);
    while Instant::now() < tail {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
            *seen
                .entry(v["activationId"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
    }
    assert_eq!(seen.len(), SENT, "acknowledgements missing");
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "{} on the topic more than once: {twice:?}",
        twice.len()
    );
}
