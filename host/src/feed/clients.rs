//! The feed's Kafka clients: a producer, a consumer and the topic's partitions, connected
//! before they are needed. A standby connects a set while it waits, so a takeover starts
//! consuming without paying client creation and a metadata round trip on its critical path;
//! a set is used by one term only (taken, never shared).

use super::{kafka, FeedConfig, FeedError};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::FutureProducer;
use rdkafka::ClientConfig;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// librdkafka backs off up to 10 s between reconnects by default, so a broker back after a
/// 2 s restart was reached again only seconds later (measured: activations waited 11 s). The
/// Java client's default ceiling is 1 s; keepwarm uses the same.
const RECONNECT_BACKOFF_MS: &str = "50";
const RECONNECT_BACKOFF_MAX_MS: &str = "1000";

/// A prepared set older than this has its partitions read again when taken.
const FRESH_FOR: Duration = Duration::from_secs(30);

/// Connected clients and the partitions of the topic.
pub struct Clients {
    pub producer: FutureProducer,
    pub consumer: StreamConsumer,
    pub partitions: Vec<i32>,
    connected: Instant,
}

impl std::fmt::Debug for Clients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clients")
            .field("partitions", &self.partitions)
            .field("age", &self.connected.elapsed())
            .finish_non_exhaustive()
    }
}

impl Clients {
    /// Creates the clients and reads the topic's partitions (blocking: run it off the async
    /// workers, as [`Clients::connect`] does).
    fn connect_blocking(config: &FeedConfig) -> Result<Clients, FeedError> {
        let producer = acknowledgement_producer(&config.brokers, config.linger_ms)
            .map_err(kafka("producer"))?;
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", &config.brokers)
            .set("group.id", &config.group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", config.fetch_wait_max_ms.to_string())
            .set("fetch.min.bytes", "1")
            .set("reconnect.backoff.ms", RECONNECT_BACKOFF_MS)
            .set("reconnect.backoff.max.ms", RECONNECT_BACKOFF_MAX_MS)
            .create()
            .map_err(kafka("consumer"))?;
        let partitions = partitions_of(&consumer, config)?;
        Ok(Clients {
            producer,
            consumer,
            partitions,
            connected: Instant::now(),
        })
    }

    /// Connects a set on a blocking thread.
    pub async fn connect(config: &FeedConfig) -> Result<Clients, FeedError> {
        let config = config.clone();
        tokio::task::spawn_blocking(move || Clients::connect_blocking(&config))
            .await
            .expect("connecting kafka clients panicked")
    }

    /// Reads the partitions again when the set was connected long ago (a topic may have
    /// grown); a fresh set is returned as it is.
    pub async fn refreshed(mut self, config: &FeedConfig) -> Result<Clients, FeedError> {
        if self.connected.elapsed() < FRESH_FOR {
            return Ok(self);
        }
        let config = config.clone();
        tokio::task::spawn_blocking(move || {
            self.partitions = partitions_of(&self.consumer, &config)?;
            self.connected = Instant::now();
            Ok(self)
        })
        .await
        .expect("reading partitions panicked")
    }
}

/// The producer of acknowledgements. Idempotent: a batch the broker wrote but whose answer a
/// broker crash cut off is sent again by librdkafka with the same producer id and sequence,
/// and the broker drops the copy (without it the 30-minute chaos run saw completions
/// published twice across broker restarts).
pub fn acknowledgement_producer(
    brokers: &str,
    linger_ms: u32,
) -> Result<FutureProducer, rdkafka::error::KafkaError> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", linger_ms.to_string())
        // Kafka's default broker limit. A result near `max-response-bytes` (1 MiB) makes
        // a larger acknowledgement, which goes out shrunk, as upstream's does.
        .set("message.max.bytes", super::MAX_MESSAGE_BYTES.to_string())
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("reconnect.backoff.ms", RECONNECT_BACKOFF_MS)
        .set("reconnect.backoff.max.ms", RECONNECT_BACKOFF_MAX_MS)
        .create()
}

/// The topic's partitions, waiting up to 10 s for a topic that is being created.
fn partitions_of(consumer: &StreamConsumer, config: &FeedConfig) -> Result<Vec<i32>, FeedError> {
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
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(FeedError::NoTopic {
        topic: config.topic.clone(),
        brokers: config.brokers.clone(),
    })
}

/// One prepared set, filled by a standby and taken by the next takeover.
#[derive(Debug, Clone, Default)]
pub struct Prepared {
    slot: Arc<Mutex<Option<Clients>>>,
}

impl Prepared {
    /// Connects a set in the background unless one is ready; a failure is logged and left
    /// for the takeover to meet (it connects again then).
    pub fn prepare(&self, config: &FeedConfig) {
        if self.slot.lock().expect("clients lock").is_some() {
            return;
        }
        let (slot, config) = (self.slot.clone(), config.clone());
        tokio::spawn(async move {
            match Clients::connect(&config).await {
                Ok(clients) => {
                    tracing::debug!(?clients, "kafka clients ready for a takeover");
                    *slot.lock().expect("clients lock") = Some(clients);
                }
                Err(e) => tracing::warn!("preparing kafka clients for a takeover: {e}"),
            }
        });
    }

    /// The prepared set (read again if old), else a new one.
    pub async fn take(&self, config: &FeedConfig) -> Result<Clients, FeedError> {
        let ready = self.slot.lock().expect("clients lock").take();
        match ready {
            Some(clients) => clients.refreshed(config).await,
            None => Clients::connect(config).await,
        }
    }
}
