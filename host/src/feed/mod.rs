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

/// Runs the feed until `shutdown` turns true, then drains in-flight activations.
pub async fn run(
    config: FeedConfig,
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
        let offset = store.get(*p).map_or(Offset::Stored, Offset::Offset);
        assignment
            .add_partition_offset(&config.topic, *p, offset)
            .map_err(kafka("assign"))?;
    }
    consumer.assign(&assignment).map_err(kafka("assign"))?;
    tracing::info!(topic = %config.topic, ?partitions, "feed consuming");

    let health = tokio::spawn(ping_health(producer.clone(), runner.instance.clone()));
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(i32, i64)>();
    // Activations still running (not yet publishing): what `max_in_flight` bounds. Publishing
    // an acknowledgement uses no pool capacity, so the next activation starts meanwhile.
    let (ran_tx, mut ran_rx) = mpsc::unbounded_channel::<()>();
    let mut running = 0usize;
    let mut tracker = OffsetTracker::default();

    loop {
        let can_pull = running < config.max_in_flight && runner.pool.waiting() == 0;
        tokio::select! {
            _ = shutdown.changed() => break,
            Some(()) = ran_rx.recv() => running -= 1,
            Some((p, o)) = done_rx.recv() => record(&consumer, &config, &mut store, &mut tracker, p, o)?,
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
                        record(&consumer, &config, &mut store, &mut tracker, partition, offset)?;
                    }
                    Ok(msg) => {
                        running += 1;
                        let (runner, producer, sink, done, ran) =
                            (runner.clone(), producer.clone(), sink.clone(), done_tx.clone(), ran_tx.clone());
                        tokio::spawn(async move {
                            let outcome = runner.run(&msg).await;
                            let _ = ran.send(());
                            let topic = msg.completion_topic();
                            for ack in outcome.early.iter().chain(std::iter::once(&outcome.last)) {
                                publish(&producer, &topic, ack).await;
                            }
                            sink.write(&outcome.record);
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
    while tracker.in_flight() > 0 {
        match done_rx.recv().await {
            Some((p, o)) => record(&consumer, &config, &mut store, &mut tracker, p, o)?,
            None => break,
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
    store: &mut OffsetStore,
    tracker: &mut OffsetTracker,
    partition: i32,
    offset: i64,
) -> Result<(), FeedError> {
    if let Some(next) = tracker.done(partition, offset) {
        store.save(partition, next)?;
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
