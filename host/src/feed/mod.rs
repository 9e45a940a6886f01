//! The Kafka side: consume `invoker{N}` by assigning its partitions (no group membership),
//! run each activation, publish acknowledgements to `completed{controller}`, record offsets
//! once acknowledged, and ping `health` every second.

pub mod offsets;
mod sink;

pub use sink::ActivationSink;

use crate::activation::{Acknowledgement, ActivationMessage, PingMessage, Runner};
use offsets::{OffsetStore, OffsetTracker};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Feed settings.
#[derive(Debug, Clone)]
pub struct FeedConfig {
    pub brokers: String,
    /// `invoker{N}`.
    pub topic: String,
    /// Kafka group the offsets are also committed to (for lag tooling).
    pub group: String,
    pub fetch_wait_max_ms: u32,
    pub linger_ms: u32,
    /// Activations running at once; the feed stops pulling at this many.
    pub max_in_flight: usize,
    pub offsets_file: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("kafka ({context}): {source}")]
    Kafka {
        context: String,
        source: rdkafka::error::KafkaError,
    },
    #[error("topic {topic} has no partitions on {brokers} (create it first)")]
    NoTopic { topic: String, brokers: String },
    #[error("offsets file: {0}")]
    Offsets(#[from] std::io::Error),
}

fn kafka(context: &str) -> impl FnOnce(rdkafka::error::KafkaError) -> FeedError + '_ {
    move |source| FeedError::Kafka {
        context: context.to_owned(),
        source,
    }
}

/// Progress the feed reports for replication.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// The next offset to consume on a partition.
    Offset(i32, i64),
    /// An activation whose acknowledgement is published.
    Completed(String),
    /// The partitions are assigned and consumption has begun.
    Consuming,
}

type Predicate = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// What cluster mode adds to the feed.
#[derive(Clone, Default)]
pub struct FeedHooks {
    /// Start from these offsets (replicated) instead of the offsets file.
    pub offsets: Option<BTreeMap<i32, i64>>,
    /// Activations completed before a failover are skipped, not run twice.
    pub already_done: Option<Predicate>,
    /// Recorded offsets and completed activations, for replication.
    pub progress: Option<mpsc::UnboundedSender<Progress>>,
    /// Nothing is pulled while closed (cluster mode: the lease is not held).
    pub may_pull: Option<crate::activation::Gate>,
}

impl std::fmt::Debug for FeedHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeedHooks")
            .field("offsets", &self.offsets)
            .finish_non_exhaustive()
    }
}

/// Runs the feed until `shutdown` turns true, then drains in-flight activations.
pub async fn run(
    config: FeedConfig,
    runner: Arc<Runner>,
    sink: Arc<ActivationSink>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), FeedError> {
    run_with(config, FeedHooks::default(), runner, sink, shutdown).await
}

/// As [`run`], with cluster hooks.
pub async fn run_with(
    config: FeedConfig,
    hooks: FeedHooks,
    runner: Arc<Runner>,
    sink: Arc<ActivationSink>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), FeedError> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &config.brokers)
        .set("linger.ms", config.linger_ms.to_string())
        .set("acks", "all")
        .create()
        .map_err(kafka("producer"))?;
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &config.brokers)
        .set("group.id", &config.group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", config.fetch_wait_max_ms.to_string())
        .set("fetch.min.bytes", "1")
        .create()
        .map_err(kafka("consumer"))?;

    let mut store = OffsetStore::open(&config.offsets_file)?;
    let partitions = partitions_of(&consumer, &config).await?;
    let mut assignment = TopicPartitionList::new();
    for p in &partitions {
        let stored = match &hooks.offsets {
            Some(replicated) => replicated.get(p).copied(),
            None => store.get(*p),
        };
        let offset = stored.map_or(Offset::Stored, Offset::Offset);
        assignment
            .add_partition_offset(&config.topic, *p, offset)
            .map_err(kafka("assign"))?;
    }
    consumer.assign(&assignment).map_err(kafka("assign"))?;
    tracing::info!(topic = %config.topic, ?partitions, "feed consuming");
    if let Some(p) = &hooks.progress {
        let _ = p.send(Progress::Consuming);
    }

    let health = tokio::spawn(ping_health(producer.clone(), runner.instance.clone()));
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(i32, i64)>();
    // Activations still running (not yet publishing): what `max_in_flight` bounds. Publishing
    // an acknowledgement uses no pool capacity, so the next activation starts meanwhile.
    let (ran_tx, mut ran_rx) = mpsc::unbounded_channel::<()>();
    // An activation dropped because the lease lapsed: stop, so the next takeover consumes it
    // again from the replicated offset.
    let (fenced_tx, mut fenced_rx) = mpsc::unbounded_channel::<()>();
    let mut running = 0usize;
    let mut tracker = OffsetTracker::default();

    loop {
        let gate_open = hooks.may_pull.as_ref().is_none_or(|g| g.open());
        let can_pull = gate_open && running < config.max_in_flight && runner.pool.waiting() == 0;
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = tokio::time::sleep(Duration::from_millis(5)), if !gate_open => {}
            Some(()) = ran_rx.recv() => running -= 1,
            Some(()) = fenced_rx.recv() => {
                tracing::warn!("an activation was fenced (lease lapsed): stopping the feed");
                break;
            }
            Some((p, o)) = done_rx.recv() => record(&consumer, &config, &hooks, &mut store, &mut tracker, p, o)?,
            received = consumer.recv(), if can_pull => {
                let m = match received {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!("kafka receive: {e}");
                        continue;
                    }
                };
                let (partition, offset) = (m.partition(), m.offset());
                tracker.begin(partition, offset);
                let payload = m.payload().unwrap_or_default();
                match ActivationMessage::parse(payload) {
                    Err(e) => {
                        tracing::warn!(partition, offset, "skipping a message that is not an ActivationMessage: {e}");
                        record(&consumer, &config, &hooks, &mut store, &mut tracker, partition, offset)?;
                    }
                    Ok(msg) if hooks.already_done.as_ref().is_some_and(|done| done(&msg.activation_id)) => {
                        tracing::info!(activation = %msg.activation_id, partition, offset, "skipping an activation completed before the failover");
                        record(&consumer, &config, &hooks, &mut store, &mut tracker, partition, offset)?;
                    }
                    Ok(msg) => {
                        running += 1;
                        let (runner, producer, sink, done, ran, progress, fenced) = (
                            runner.clone(), producer.clone(), sink.clone(), done_tx.clone(), ran_tx.clone(),
                            hooks.progress.clone(), fenced_tx.clone(),
                        );
                        tokio::spawn(async move {
                            let Some(outcome) = runner.run(&msg).await else {
                                // Fenced: not run, not acknowledged, offset not recorded; the
                                // next active host takes it from the replicated offset.
                                let _ = fenced.send(());
                                let _ = ran.send(());
                                return;
                            };
                            let _ = ran.send(());
                            let topic = msg.completion_topic();
                            for ack in outcome.early.iter().chain(std::iter::once(&outcome.last)) {
                                publish(&producer, &topic, ack).await;
                            }
                            sink.write(&outcome.record);
                            if let Some(p) = progress {
                                let _ = p.send(Progress::Completed(msg.activation_id.clone()));
                            }
                            let _ = done.send((partition, offset));
                        });
                    }
                }
            }
        }
    }

    tracing::info!(
        in_flight = tracker.in_flight(),
        "feed stopping: draining in-flight activations"
    );
    while tracker.in_flight() > 0 && running > 0 {
        tokio::select! {
            Some(()) = ran_rx.recv() => running -= 1,
            got = done_rx.recv() => match got {
                Some((p, o)) => record(&consumer, &config, &hooks, &mut store, &mut tracker, p, o)?,
                None => break,
            },
        }
    }
    // acknowledgements still being published
    while let Ok(Some((p, o))) =
        tokio::time::timeout(Duration::from_millis(200), done_rx.recv()).await
    {
        record(&consumer, &config, &hooks, &mut store, &mut tracker, p, o)?;
        if tracker.in_flight() == 0 {
            break;
        }
    }
    health.abort();
    Ok(())
}

async fn partitions_of(
    consumer: &StreamConsumer,
    config: &FeedConfig,
) -> Result<Vec<i32>, FeedError> {
    for _ in 0..50 {
        let md = consumer
            .fetch_metadata(Some(&config.topic), Duration::from_secs(5))
            .map_err(kafka("metadata"))?;
        let parts: Vec<i32> = md
            .topics()
            .iter()
            .filter(|t| t.name() == config.topic && t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if !parts.is_empty() {
            return Ok(parts);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(FeedError::NoTopic {
        topic: config.topic.clone(),
        brokers: config.brokers.clone(),
    })
}

/// Marks an offset done; when the committable offset moves, stores it and commits it.
fn record(
    consumer: &StreamConsumer,
    config: &FeedConfig,
    hooks: &FeedHooks,
    store: &mut OffsetStore,
    tracker: &mut OffsetTracker,
    partition: i32,
    offset: i64,
) -> Result<(), FeedError> {
    if let Some(next) = tracker.done(partition, offset) {
        store.save(partition, next)?;
        if let Some(p) = &hooks.progress {
            let _ = p.send(Progress::Offset(partition, next));
        }
        let mut tpl = TopicPartitionList::new();
        if tpl
            .add_partition_offset(&config.topic, partition, Offset::Offset(next))
            .is_ok()
        {
            if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
                tracing::debug!("group commit: {e}");
            }
        }
    }
    Ok(())
}

async fn publish(producer: &FutureProducer, topic: &str, ack: &Acknowledgement) {
    let payload = ack.to_json().to_string();
    let key = ack.activation_id().to_owned();
    loop {
        let record = FutureRecord::to(topic).payload(&payload).key(&key);
        match producer.send(record, Duration::from_secs(10)).await {
            Ok(_) => return,
            Err((e, _)) => {
                tracing::warn!(%topic, activation = %key, "publishing the acknowledgement failed, retrying: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

async fn ping_health(producer: FutureProducer, instance: crate::activation::InvokerInstanceId) {
    let ping = serde_json::to_string(&PingMessage { name: instance }).expect("ping json");
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let record = FutureRecord::<(), _>::to("health").payload(&ping);
        if let Err((e, _)) = producer.send(record, Duration::from_secs(1)).await {
            tracing::debug!("health ping: {e}");
        }
    }
}
