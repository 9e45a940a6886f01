//! The Kafka path's ceiling: a minimal invoker with nothing but the pipeline — an rdkafka
//! consumer on `invoker{N}` → `/run` on a warm container → an rdkafka producer to
//! `completed{controller}` — with the host's broker settings (`fetch.wait.max.ms` 2,
//! `linger.ms` 0, `acks` all) and one activation in flight per container: the next message is
//! taken when a container is free, and a container is free once its `/run` answered (its
//! acknowledgement is published meanwhile, as the host does). No pool, no records, no offsets,
//! no Raft: the best any invoker could do on this broker with these
//! containers, the baseline the invoker bench compares keepwarm against.
//!
//! Its acknowledgement is shaped as the host's with `log-store = "log-driver"` (a combined
//! completion-and-result message for a blocking activation, a completion for a non-blocking
//! one), so both put the same bytes on the broker.

use crate::proxy::{run_body, ProxyClient};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde_json::{json, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// A running minimal invoker; dropped, it stops.
#[derive(Debug)]
pub struct Pipeline {
    task: JoinHandle<()>,
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The acknowledgement for `msg` whose `/run` answered `result`, as upstream's invoker sends
/// it when it reads no logs: a combined one for a blocking activation, a completion alone
/// otherwise.
fn acknowledgement(msg: &Value, instance: u32, result: Value, start: i64) -> Value {
    let end = now_ms();
    let instance =
        json!({ "instance": instance, "instanceType": "invoker", "userMemory": "8192 MB" });
    if msg["blocking"] != true {
        return json!({
            "transid": msg["transid"],
            "activationId": msg["activationId"],
            "isSystemError": false,
            "instance": instance
        });
    }
    json!({
        "transid": msg["transid"],
        "response": {
            "namespace": msg["user"]["namespace"]["name"],
            "name": msg["action"]["name"],
            "subject": msg["user"]["subject"],
            "version": "0.0.1",
            "activationId": msg["activationId"],
            "start": start,
            "end": end,
            "duration": end - start,
            "response": { "statusCode": 0, "result": result },
            "logs": [],
            "annotations": [],
            "publish": false
        },
        "isSystemError": false,
        "instance": instance
    })
}

impl Pipeline {
    /// Consumes `invoker{instance}` from its beginning and runs each activation on a free one
    /// of `containers` (as many in flight as there are containers), acknowledging to the
    /// controller the message names.
    pub fn start(brokers: &str, instance: u32, containers: Vec<String>) -> Pipeline {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", format!("pipeline{instance}"))
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", "2")
            .set("fetch.min.bytes", "1")
            .create()
            .expect("consumer");
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("linger.ms", "0")
            .set("acks", "all")
            .create()
            .expect("producer");
        let topic = format!("invoker{instance}");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&topic, 0, Offset::Beginning)
            .expect("partition");
        consumer.assign(&tpl).expect("assign");
        let (free_tx, mut free) = mpsc::unbounded_channel::<String>();
        for c in containers {
            free_tx.send(c).expect("open");
        }
        let proxy = ProxyClient::default();
        let task = tokio::spawn(async move {
            loop {
                let Some(address) = free.recv().await else {
                    return;
                };
                let msg = loop {
                    let Ok(m) = consumer.recv().await else {
                        continue;
                    };
                    if let Some(msg) = m
                        .payload()
                        .and_then(|p| serde_json::from_slice::<Value>(p).ok())
                    {
                        break msg;
                    }
                };
                let (producer, proxy, free_tx) = (producer.clone(), proxy.clone(), free_tx.clone());
                tokio::spawn(async move {
                    let start = now_ms();
                    let id = msg["activationId"].as_str().unwrap_or_default().to_owned();
                    let body = run_body(msg["content"].clone(), &id);
                    let result = match proxy.post(&address, "/run", &body).await {
                        Ok((_, v)) => v,
                        Err(e) => json!({ "error": e }),
                    };
                    // the container is free: the next activation starts while this one's
                    // acknowledgement is published (as the host does)
                    let _ = free_tx.send(address);
                    let ack = acknowledgement(&msg, instance, result, start).to_string();
                    let controller = msg["rootControllerIndex"]["asString"]
                        .as_str()
                        .unwrap_or_default();
                    let topic = format!("completed{controller}");
                    let _ = producer
                        .send(
                            FutureRecord::<(), _>::to(&topic).payload(&ack),
                            Duration::from_secs(30),
                        )
                        .await;
                });
            }
        });
        Pipeline { task }
    }
}
