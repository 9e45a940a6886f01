//! A stand-in OpenWhisk controller on a real Kafka-protocol broker (tansu): creates topics,
//! sends `ActivationMessage`s to `invoker{N}` and reads acknowledgements from
//! `completed{controller}`.

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The broker the tests use (started by `scripts/tansu.sh`).
pub fn brokers() -> String {
    std::env::var("KW_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// Creates topics (ignoring "already exists").
pub async fn create_topics(names: &[&str]) {
    create_topics_on(&brokers(), names).await
}

/// Creates topics on `brokers` (ignoring "already exists").
pub async fn create_topics_on(brokers: &str, names: &[&str]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin client");
    let topics: Vec<NewTopic> = names
        .iter()
        .map(|n| NewTopic::new(n, 1, TopicReplication::Fixed(1)))
        .collect();
    let _ = admin.create_topics(&topics, &AdminOptions::new()).await;
}

/// Plays the controller for one invoker instance.
pub struct Controller {
    pub invoker_topic: String,
    pub controller: String,
    producer: FutureProducer,
    acks: BaseConsumer,
    /// activation id → acknowledgements received, in order.
    pub received: HashMap<String, Vec<Value>>,
    pub raw: Vec<Value>,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("invoker_topic", &self.invoker_topic)
            .finish()
    }
}

impl Controller {
    pub async fn new(instance: u32, controller: &str) -> Controller {
        Self::on(&brokers(), instance, controller).await
    }

    /// A controller on `brokers` rather than the shared test broker.
    pub async fn on(brokers: &str, instance: u32, controller: &str) -> Controller {
        let invoker_topic = format!("invoker{instance}");
        let completed = format!("completed{controller}");
        create_topics_on(brokers, &[&invoker_topic, &completed, "health"]).await;
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("linger.ms", "0")
            // the Java client's (a real controller's) reconnect ceiling, not librdkafka's 10 s
            .set("reconnect.backoff.max.ms", "1000")
            .create()
            .expect("producer");
        let acks: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", format!("test-controller-{controller}"))
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", "2")
            .set("reconnect.backoff.max.ms", "1000")
            .create()
            .expect("consumer");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&completed, 0, Offset::Beginning)
            .unwrap();
        acks.assign(&tpl).expect("assign");
        Controller {
            invoker_topic,
            controller: controller.to_owned(),
            producer,
            acks,
            received: HashMap::new(),
            raw: Vec::new(),
        }
    }

    /// An `ActivationMessage` as OpenWhisk's controller writes it.
    pub fn message(
        &self,
        namespace: &str,
        action: &str,
        blocking: bool,
        content: Value,
    ) -> (String, Value) {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let msg = json!({
            "transid": [format!("tid-{id}"), now],
            "action": { "path": namespace, "name": action, "version": "0.0.1" },
            "revision": null,
            "user": {
                "subject": "guest-subject",
                "namespace": { "name": namespace, "uuid": "23bc46b1-71f6-4ed5-8c54-816aa4f8c502" },
                "authkey": { "api_key": "23bc46b1-71f6-4ed5-8c54-816aa4f8c502:secret" },
                "rights": ["READ", "PUT", "DELETE", "ACTIVATE"],
                "limits": {}
            },
            "activationId": id,
            "rootControllerIndex": { "asString": self.controller, "instanceType": "controller" },
            "blocking": blocking,
            "content": content,
            "initArgs": [],
            "lockedArgs": {}
        });
        (id, msg)
    }

    pub async fn send_raw(&self, payload: &str) {
        self.producer
            .send(
                FutureRecord::<(), _>::to(&self.invoker_topic).payload(payload),
                Duration::from_secs(10),
            )
            .await
            .expect("send");
    }

    /// Sends many activations at once (all produce requests in flight together).
    pub async fn invoke_many(&self, namespace: &str, action: &str, n: usize) -> Vec<String> {
        let messages: Vec<(String, String)> = (0..n)
            .map(|i| {
                let (id, m) = self.message(namespace, action, false, json!({ "i": i }));
                (id, m.to_string())
            })
            .collect();
        let sends = messages.iter().map(|(_, m)| {
            self.producer.send(
                FutureRecord::<(), _>::to(&self.invoker_topic).payload(m),
                Duration::from_secs(30),
            )
        });
        for r in futures::future::join_all(sends).await {
            r.expect("send");
        }
        messages.into_iter().map(|(id, _)| id).collect()
    }

    /// Queues a blocking activation (its record comes back in the result) without waiting
    /// for the broker (as a controller keeps producing while a broker restarts); returns its
    /// id and the delivery to await later.
    pub fn invoke_queued(
        &self,
        namespace: &str,
        action: &str,
        content: Value,
    ) -> (String, rdkafka::producer::DeliveryFuture) {
        let (id, msg) = self.message(namespace, action, true, content);
        let payload = msg.to_string();
        let delivery = self
            .producer
            .send_result(FutureRecord::<(), _>::to(&self.invoker_topic).payload(&payload))
            .map_err(|(e, _)| e)
            .expect("the producer's queue has room");
        (id, delivery)
    }

    /// Sends an activation; returns its id. As upstream's invoker does, only a blocking
    /// activation's acknowledgements carry its record (`record`); a non-blocking one gets a
    /// `CompletionMessage` alone.
    pub async fn invoke(
        &self,
        namespace: &str,
        action: &str,
        blocking: bool,
        content: Value,
    ) -> String {
        let (id, msg) = self.message(namespace, action, blocking, content);
        self.send_raw(&msg.to_string()).await;
        id
    }

    /// Reads the acknowledgements already waiting, for at most `budget`; how many it read.
    pub fn drain(&mut self, budget: Duration) -> usize {
        let start = Instant::now();
        let mut n = 0;
        while start.elapsed() < budget {
            match self.acks.poll(Duration::ZERO) {
                Some(Ok(m)) => {
                    if let Some(v) = m
                        .payload()
                        .and_then(|p| serde_json::from_slice::<Value>(p).ok())
                    {
                        self.note(v);
                    }
                    n += 1;
                }
                Some(Err(_)) => {}
                None => break,
            }
        }
        n
    }

    fn note(&mut self, v: Value) {
        // a record, a shrunk response (the activation id alone), or a completion
        let id = v["response"]["activationId"]
            .as_str()
            .or_else(|| v["response"].as_str())
            .or_else(|| v["activationId"].as_str())
            .unwrap_or_default()
            .to_owned();
        self.received.entry(id).or_default().push(v.clone());
        self.raw.push(v);
    }

    /// Reads acknowledgements until `done` holds or `within` passes.
    pub fn poll_until(
        &mut self,
        within: Duration,
        mut done: impl FnMut(&Controller) -> bool,
    ) -> bool {
        let start = Instant::now();
        while start.elapsed() < within {
            if done(self) {
                return true;
            }
            if let Some(Ok(m)) = self.acks.poll(Duration::from_millis(50)) {
                if let Some(v) = m
                    .payload()
                    .and_then(|p| serde_json::from_slice::<Value>(p).ok())
                {
                    self.note(v);
                }
            }
        }
        done(self)
    }

    /// Waits for an activation's final acknowledgement (combined or completion) and returns
    /// every acknowledgement of it.
    pub fn wait_for(&mut self, id: &str, within: Duration) -> Vec<Value> {
        let id = id.to_owned();
        let ok = self.poll_until(within, |c| {
            c.received
                .get(&id)
                .is_some_and(|acks| acks.iter().any(|a| a.get("instance").is_some()))
        });
        assert!(ok, "no completion for activation {id} within {within:?}");
        self.received[&id].clone()
    }

    /// Waits for the acknowledgement that carries a blocking activation's record (a
    /// `ResultMessage` or a combined one: what the controller answers the caller with).
    pub fn wait_for_result(&mut self, id: &str, within: Duration) -> Value {
        let id = id.to_owned();
        let has = |acks: &[Value]| {
            acks.iter()
                .any(|a| a.get("response").is_some_and(Value::is_object))
        };
        let ok = self.poll_until(within, |c| c.received.get(&id).is_some_and(|a| has(a)));
        assert!(ok, "no result for activation {id} within {within:?}");
        Controller::record(&self.received[&id])
    }

    /// How many acknowledgements freed the activation's slot (completion or combined: they
    /// carry `instance`); more than one means it ran more than once.
    pub fn completions(&self, id: &str) -> usize {
        self.received.get(id).map_or(0, |acks| {
            acks.iter().filter(|a| a.get("instance").is_some()).count()
        })
    }

    /// The activation record in an activation's acknowledgements.
    pub fn record(acks: &[Value]) -> Value {
        acks.iter()
            .find_map(|a| a.get("response").filter(|r| r.is_object()).cloned())
            .expect("an acknowledgement with the activation record")
    }
}

/// The value of an annotation of an activation record.
pub fn annotation(record: &Value, key: &str) -> Option<Value> {
    record["annotations"]
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)
        .map(|a| a["value"].clone())
}

/// Runs `guest/echo` with `params` and checks that it ran in a warm container (no cold start,
/// no prewarm taken) and answered with them.
pub fn assert_echo_runs_warm(rt: &tokio::runtime::Runtime, c: &mut Controller, params: Value) {
    let id = rt.block_on(c.invoke("guest", "echo", true, params.clone()));
    let record = Controller::record(&c.wait_for(&id, Duration::from_secs(60)));
    assert_eq!(
        annotation(&record, "keepwarm").unwrap()["start"],
        "warm",
        "{record}"
    );
    assert_eq!(
        record["response"]["result"],
        serde_json::json!({ "echo": params })
    );
}
