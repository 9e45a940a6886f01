//! The Kafka side: consume `invoker{N}` by assigning its partitions (no group membership),
//! run each activation, publish acknowledgements to `completed{controller}`, record offsets
//! once acknowledged, and ping `health` every second.

pub mod acknowledged;
mod clients;
pub use clients::acknowledgement_producer;
mod dispatch;
#[cfg(test)]
mod dispatch_tests;
mod in_flight;
pub mod offsets;
mod publisher;
mod sink;
mod taken_ids;

pub use clients::{Clients, Prepared as PreparedClients};
pub use in_flight::InFlight;
pub use publisher::{Publisher, Refused};
pub use sink::{ActivationSink, Rotation};

use crate::activation::{ActivationMessage, PingMessage, Runner, Unreadable};
use crate::fence::Gate;
use dispatch::Dispatch;
use offsets::{FileOffsets, OffsetStore, OffsetTracker, ReplicatedOffsets};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
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
    /// How long stopping may wait for running activations and their acknowledgements.
    pub drain_timeout: Duration,
    /// Where a single host keeps its offsets (a cluster keeps them replicated instead).
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
    #[error("recording an offset: {0}")]
    Offsets(#[from] std::io::Error),
}

fn kafka(context: &str) -> impl FnOnce(rdkafka::error::KafkaError) -> FeedError + '_ {
    move |source| FeedError::Kafka {
        context: context.to_owned(),
        source,
    }
}

/// The largest message the producer sends (librdkafka's and the Kafka broker's default).
pub const MAX_MESSAGE_BYTES: usize = 1_000_000;

/// Progress the feed reports for replication.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// The next offset to consume on a partition.
    Offset(i32, i64),
    /// An activation whose acknowledgement is published.
    Completed(String),
    /// An activation about to be sent to a container (`/run`): replicated before it is.
    Started {
        activation: String,
        container: String,
        /// Epoch millis: its `/run` comes after.
        at_ms: i64,
    },
    /// The partitions are assigned and consumption has begun.
    Consuming,
}

type Predicate = Arc<dyn Fn(&str) -> bool + Send + Sync>;
/// Until when (epoch millis) an activation is left to another member, if it is.
pub type LentUntil = Arc<dyn Fn(&str) -> Option<i64> + Send + Sync>;

/// What the feed is given beyond its configuration: the gate it pulls through, and what a
/// cluster adds.
#[derive(Clone)]
pub struct FeedHooks {
    /// Nothing is pulled while closed: the lease in a cluster, always open on a single host.
    pub may_pull: Gate,
    /// What a cluster adds; `None` on a single host.
    pub cluster: Option<ClusterFeed>,
    /// Called once the feed's partitions are assigned and it consumes.
    pub on_consuming: Option<Arc<dyn Fn() + Send + Sync>>,
}

/// What a cluster adds to the feed: the replicated offsets and completions, the delivery
/// contract's record of starts, the activations running now, and what a handover lent.
#[derive(Clone)]
pub struct ClusterFeed {
    /// The replicated offsets to start from: each recorded one goes to `progress`, and the
    /// offsets file is neither read nor written.
    pub offsets: BTreeMap<i32, i64>,
    /// Activations completed before a failover are skipped, not run twice.
    pub already_done: Predicate,
    /// Activations a host that failed sent to a container: the delivery contract decides.
    pub may_have_run: Predicate,
    /// Recorded offsets and completed activations, for replication.
    pub progress: mpsc::UnboundedSender<Progress>,
    /// The activations running now, by id (what a planned step-down leaves to finish here).
    pub in_flight: Arc<InFlight>,
    /// Until when (epoch millis) an activation is left to the member that handed over: it is
    /// held back, skipped once reported finished, and run if it is not by then.
    pub lent_until: LentUntil,
}

impl FeedHooks {
    /// A single host's: the gate always open, nothing replicated.
    pub fn single() -> FeedHooks {
        FeedHooks {
            may_pull: Gate::always(),
            cluster: None,
            on_consuming: None,
        }
    }

    fn already_done(&self, id: &str) -> bool {
        self.cluster.as_ref().is_some_and(|c| (c.already_done)(id))
    }

    /// Whether a host that failed may have run `id`.
    fn may_have_run(&self, id: &str) -> bool {
        self.cluster.as_ref().is_some_and(|c| (c.may_have_run)(id))
    }

    fn lent_until(&self, id: &str) -> Option<i64> {
        self.cluster.as_ref().and_then(|c| (c.lent_until)(id))
    }
}

impl std::fmt::Debug for FeedHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeedHooks")
            .field("may_pull", &self.may_pull)
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for ClusterFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterFeed")
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
    run_with(config, FeedHooks::single(), None, runner, sink, shutdown).await
}

/// A single host's feed clients, waiting while the broker cannot be reached or the topic
/// does not exist yet (as a running host waits for a broker that went away): a line every
/// attempt, 1 s apart growing to 10 s. `None` when told to stop first.
async fn connect_until_reachable(
    config: &FeedConfig,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<Option<Clients>, FeedError> {
    let mut pause = Duration::from_secs(1);
    loop {
        match Clients::connect(config).await {
            Ok(clients) => return Ok(Some(clients)),
            Err(e @ (FeedError::NoTopic { .. } | FeedError::Kafka { .. })) if !matches!(&e, FeedError::Kafka { context, .. } if context != "metadata") =>
            {
                tracing::warn!(brokers = %config.brokers, retry_in = ?pause, "waiting for the broker: {e}");
            }
            Err(e) => return Err(e),
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = shutdown.changed() => return Ok(None),
        }
        if *shutdown.borrow() {
            return Ok(None);
        }
        pause = (pause * 2).min(Duration::from_secs(10));
    }
}

/// As [`run`], with cluster hooks and, when connected ahead, its Kafka clients.
pub async fn run_with(
    config: FeedConfig,
    hooks: FeedHooks,
    clients: Option<Clients>,
    runner: Arc<Runner>,
    sink: Arc<ActivationSink>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), FeedError> {
    let Clients {
        producer,
        consumer,
        partitions,
        ..
    } = match clients {
        Some(clients) => clients,
        // a cluster member's feed fails instead: the leader hands the role to a member that
        // can reach the broker
        None if hooks.cluster.is_some() => Clients::connect(&config).await?,
        None => match connect_until_reachable(&config, &mut shutdown).await? {
            Some(clients) => clients,
            None => return Ok(()),
        },
    };

    let store = offset_store(&config, &hooks)?;
    assign(&consumer, &config.topic, &partitions, store.as_ref())?;
    tracing::info!(topic = %config.topic, ?partitions, "feed consuming");
    announce_consuming(&hooks);

    let health = tokio::spawn(ping_health(producer.clone(), runner.instance.clone()));
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(i32, i64)>();
    // Activations still running (not yet publishing): what `max_in_flight` bounds. Publishing
    // an acknowledgement uses no pool capacity, so the next activation starts meanwhile.
    let (ran_tx, mut ran_rx) = mpsc::unbounded_channel::<()>();
    let mut running = 0usize;
    let dispatch = Dispatch {
        runner: runner.clone(),
        publisher: Arc::new(producer.clone()),
        sink,
        done: done_tx.clone(),
        ran: ran_tx.clone(),
        progress: hooks.cluster.as_ref().map(|c| c.progress.clone()),
        in_flight: hooks.cluster.as_ref().map(|c| c.in_flight.clone()),
        gate: hooks.may_pull.clone(),
        stop: shutdown.clone(),
        acknowledged: Arc::new(acknowledged::Index::new(&config.brokers)),
        sent_before_ms: crate::clock::now_ms() + dispatch::CLOCK_AHEAD_MS,
    };
    let mut offsets = Recorder {
        consumer: &consumer,
        topic: &config.topic,
        store,
        tracker: OffsetTracker::default(),
    };

    // Messages of activations still running on the member that handed over.
    let mut held: Vec<Held> = Vec::new();
    let mut taken_ids = taken_ids::TakenIds::default();
    loop {
        let gate_open = hooks.may_pull.open();
        let can_pull = gate_open && running < config.max_in_flight && runner.pool.waiting() == 0;
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = tokio::time::sleep(Duration::from_millis(5)), if !gate_open => {}
            Some(()) = ran_rx.recv() => running -= 1,
            Some((p, o)) = done_rx.recv() => offsets.done(p, o)?,
            _ = tokio::time::sleep(Duration::from_millis(10)), if !held.is_empty() => {
                running += release_held(&hooks, &mut held, &dispatch, &mut offsets)?;
            }
            received = consumer.recv(), if can_pull => match received {
                Ok(m) => {
                    let (partition, offset) = (m.partition(), m.offset());
                    if !offsets.tracker.begin(partition, offset) {
                        tracing::warn!(partition, offset, "the broker delivered an offset this feed already took: not run again");
                        continue;
                    }
                    let payload = m.payload().unwrap_or_default();
                    let taken = Taken { partition, offset };
                    running += on_message(&hooks, payload, taken, &mut held, &dispatch, &mut offsets, &mut taken_ids)?;
                }
                Err(e) => tracing::warn!("kafka receive: {e}"),
            },
        }
    }

    if let Some(c) = &hooks.cluster {
        c.in_flight.stop_pulling();
    }
    tracing::info!(
        in_flight = offsets.tracker.in_flight(),
        running,
        timeout = ?config.drain_timeout,
        "feed stopping: draining in-flight activations"
    );
    // Only the activations' tasks hold senders now: `None` means every one of them ended.
    drop((dispatch, done_tx, ran_tx, ran_rx));
    drain(&mut offsets, done_rx, config.drain_timeout).await?;
    health.abort();
    Ok(())
}

/// Tells the role (or the single host's status) that consumption has begun.
fn announce_consuming(hooks: &FeedHooks) {
    if let Some(c) = &hooks.cluster {
        let _ = c.progress.send(Progress::Consuming);
    }
    if let Some(f) = &hooks.on_consuming {
        f();
    }
}

/// Where the offsets are kept: replicated in a cluster, else in the offsets file.
fn offset_store(config: &FeedConfig, hooks: &FeedHooks) -> Result<Box<dyn OffsetStore>, FeedError> {
    Ok(match &hooks.cluster {
        Some(c) => Box::new(ReplicatedOffsets::new(
            c.offsets.clone(),
            c.progress.clone(),
        )),
        None => Box::new(FileOffsets::open(&config.offsets_file)?),
    })
}

/// Assigns the topic's `partitions` from the offsets `store` starts them at.
fn assign(
    consumer: &StreamConsumer,
    topic: &str,
    partitions: &[i32],
    store: &dyn OffsetStore,
) -> Result<(), FeedError> {
    let mut assignment = TopicPartitionList::new();
    for p in partitions {
        let offset = store.start(*p).map_or(Offset::Stored, Offset::Offset);
        assignment
            .add_partition_offset(topic, *p, offset)
            .map_err(kafka("assign"))?;
    }
    consumer.assign(&assignment).map_err(kafka("assign"))
}

/// Where a message was taken from.
#[derive(Debug, Clone, Copy)]
struct Taken {
    partition: i32,
    offset: i64,
}

/// One message from the topic: run, answered as unreadable, skipped (completed before the
/// failover, or naming nothing to answer), or held while the member that handed over may
/// still run it. Answers how many activations it started.
fn on_message(
    hooks: &FeedHooks,
    payload: &[u8],
    Taken { partition, offset }: Taken,
    held: &mut Vec<Held>,
    dispatch: &Dispatch,
    offsets: &mut Recorder<'_>,
    taken_ids: &mut taken_ids::TakenIds,
) -> Result<usize, FeedError> {
    match ActivationMessage::parse(payload) {
        Err(e) => match Unreadable::read(payload, &e) {
            // Names an activation and a controller: answer it with what was wrong.
            Some(unreadable) => {
                tracing::warn!(activation = %unreadable.activation_id, partition, offset, "answering an activation message that cannot be read with a whisk error: {e}");
                dispatch.answer_unreadable(unreadable, partition, offset);
            }
            None => {
                tracing::warn!(partition, offset, "skipping a message that is not an ActivationMessage and names no activation and controller to answer: {e}");
                offsets.done(partition, offset)?;
            }
        },
        Ok(msg) if !taken_ids.take(&msg.activation_id) => {
            tracing::warn!(activation = %msg.activation_id, partition, offset, "the topic holds this activation again (a producer's retry): the copy is not run");
            crate::metrics::global().activation_copy_skipped();
            offsets.done(partition, offset)?;
        }
        Ok(msg) if hooks.already_done(&msg.activation_id) => {
            tracing::info!(activation = %msg.activation_id, partition, offset, "skipping an activation completed before the failover");
            offsets.done(partition, offset)?;
        }
        Ok(msg) => match hooks.lent_until(&msg.activation_id) {
            Some(_) => held.push(Held {
                msg,
                partition,
                offset,
            }),
            None => {
                let ran = hooks.may_have_run(&msg.activation_id);
                dispatch.run(msg, ran, partition, offset);
                return Ok(1);
            }
        },
    }
    Ok(0)
}

/// Looks again at the messages held for the member that handed over: skipped once it
/// finished them, run here once it gave up or its deadline passed. Answers how many
/// activations it started.
fn release_held(
    hooks: &FeedHooks,
    held: &mut Vec<Held>,
    dispatch: &Dispatch,
    offsets: &mut Recorder<'_>,
) -> Result<usize, FeedError> {
    let now = crate::clock::now_ms();
    let mut started = 0;
    for h in std::mem::take(held) {
        let id = &h.msg.activation_id;
        if hooks.already_done(id) {
            tracing::info!(activation = %id, "finished on the member that handed over: skipped");
            offsets.done(h.partition, h.offset)?;
        } else if hooks.lent_until(id).is_none_or(|until| now >= until) {
            tracing::warn!(activation = %id, "not finished on the member that handed over: running it here");
            started += 1;
            let ran = hooks.may_have_run(id);
            dispatch.run(h.msg, ran, h.partition, h.offset);
        } else {
            held.push(h);
        }
    }
    Ok(started)
}

/// Waits until every activation taken from Kafka finished and its acknowledgement is
/// published, or `timeout` passes. Fenced ones give up at once: they are the next host's.
async fn drain(
    offsets: &mut Recorder<'_>,
    mut done: mpsc::UnboundedReceiver<(i32, i64)>,
    timeout: Duration,
) -> Result<(), FeedError> {
    let deadline = tokio::time::Instant::now() + timeout;
    while offsets.tracker.in_flight() > 0 {
        tokio::select! {
            got = done.recv() => match got {
                Some((p, o)) => offsets.done(p, o)?,
                None => break, // the rest were fenced: the next active host runs them
            },
            _ = tokio::time::sleep_until(deadline) => {
                tracing::warn!(
                    in_flight = offsets.tracker.in_flight(),
                    "drain timeout: exiting with activations unacknowledged (they are re-read from their offsets)"
                );
                break;
            }
        }
    }
    Ok(())
}

/// An activation the member that handed over may still be running.
struct Held {
    msg: ActivationMessage,
    partition: i32,
    offset: i64,
}

/// Marks an offset done; when the committable offset moves, stores it and commits it.
/// Records what has become safe to record: the tracker says which offset the
/// acknowledgements now cover, the store keeps it, and the Kafka group gets it too (for lag
/// tooling; never read back).
struct Recorder<'a> {
    consumer: &'a StreamConsumer,
    topic: &'a str,
    store: Box<dyn OffsetStore>,
    tracker: OffsetTracker,
}

impl Recorder<'_> {
    /// The activation at `offset` on `partition` is acknowledged (or skipped).
    fn done(&mut self, partition: i32, offset: i64) -> Result<(), FeedError> {
        let Some(next) = self.tracker.done(partition, offset) else {
            return Ok(());
        };
        self.store.record(partition, next)?;
        let mut tpl = TopicPartitionList::new();
        if tpl
            .add_partition_offset(self.topic, partition, Offset::Offset(next))
            .is_ok()
        {
            if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
                tracing::debug!("group commit: {e}");
            }
        }
        Ok(())
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
