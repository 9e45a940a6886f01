//! Whether an activation was acknowledged already: read from the controller's own
//! `completed{C}` topic.
//!
//! Two kinds of activation may have been answered by someone else before this host took them:
//!
//! - one the host that failed started (`Command::Completed { started }`) and whose completion
//!   never reached the replicated state: it ended there unanswered, or was answered in the
//!   moments between publishing its acknowledgement and replicating that it had;
//! - any activation sent before this host began consuming: the host (or process) before it
//!   may have answered it without its start being replicated — an error answered before any
//!   container call, or a run under `delivery = "at-least-once"`, whose start is only queued.
//!
//! Answering either again — with the failover's error, or by running it again — would give
//! the controller a second completion, so the active host first looks for one on the
//! completion topic, from shortly before the activation was sent. An [`Index`] reads each
//! topic once, forward from the earliest time asked about, and remembers the activations it
//! saw answered: a backlog of thousands costs one pass, not one search each. Its consumer has
//! no group and commits nothing: the controller's own consumption is untouched.

use crate::activation::WhiskActivation;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long one look may take; past it the look says nothing (it is made again).
const SEARCH_FOR: Duration = Duration::from_secs(3);

/// Messages read back at most per partition when the broker cannot find offsets by time.
const WITHOUT_TIMES: i64 = 20_000;

/// The completion topics read so far, each from the earliest time asked about.
pub struct Index {
    brokers: String,
    topics: Mutex<HashMap<String, Arc<Mutex<Option<TopicIndex>>>>>,
}

/// One completion topic, read up to `next` (per partition), from `from_ms`.
struct TopicIndex {
    consumer: BaseConsumer,
    from_ms: i64,
    next: HashMap<i32, i64>,
    answered: HashSet<String>,
    /// Activations whose result message went out, with the record when it went out whole.
    results: HashMap<String, Option<Box<WhiskActivation>>>,
}

/// What the completion topic says about one activation.
#[derive(Debug, Clone, PartialEq)]
pub enum Answered {
    /// A completion or a combined message freed its slot: it was answered.
    Yes,
    /// Only its result went out (a blocking activation): it ran, and the host that ran it
    /// owes the completion. The record, when the message carried it whole (not shrunk to
    /// its id).
    ResultOnly(Option<Box<WhiskActivation>>),
    No,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index")
            .field("brokers", &self.brokers)
            .finish_non_exhaustive()
    }
}

impl Index {
    pub fn new(brokers: &str) -> Self {
        Self {
            brokers: brokers.to_string(),
            topics: Mutex::default(),
        }
    }

    /// What `topic` says about `activation_id` since `since_ms`: a message freeing its slot
    /// (a completion or a combined message), only its result, or nothing. Blocking: run it
    /// off the async workers. "Nothing" only once every partition was read to where it ended
    /// when the look began: a look the broker cut short (an error, or past [`SEARCH_FOR`])
    /// says nothing either way.
    pub fn answered(
        &self,
        topic: &str,
        activation_id: &str,
        since_ms: i64,
    ) -> Result<Answered, Error> {
        let slot = self
            .topics
            .lock()
            .expect("index lock")
            .entry(topic.to_string())
            .or_default()
            .clone();
        // one look per topic at a time: the next one finds what this one read
        let mut index = slot.lock().expect("topic index lock");
        if index.as_ref().is_some_and(|i| i.from_ms > since_ms) {
            *index = None;
        }
        let mut i = match index.take() {
            Some(i) => i,
            None => TopicIndex::open(&self.brokers, topic, since_ms)?,
        };
        let read = i.read_to_the_end(topic);
        let found = if i.answered.contains(activation_id) {
            Answered::Yes
        } else if let Some(record) = i.results.get(activation_id) {
            Answered::ResultOnly(record.clone())
        } else {
            Answered::No
        };
        // what was read stays read, even when the look was cut short
        *index = Some(i);
        match read {
            Ok(()) => Ok(found),
            Err(_) if found == Answered::Yes => Ok(found),
            Err(e) => Err(e),
        }
    }
}

/// Why a look could not say whether an activation was answered.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading the completion topic: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("the completion topic was not read to its end within {0:?}")]
    Unfinished(Duration),
}

impl TopicIndex {
    /// A consumer of every partition of `topic`, from `since_ms` where the broker can find
    /// offsets by time, else from the last [`WITHOUT_TIMES`] messages.
    fn open(brokers: &str, topic: &str, since_ms: i64) -> Result<Self, Error> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", "keepwarm-acknowledged")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("fetch.wait.max.ms", "20")
            .create()?;
        let metadata = consumer.fetch_metadata(Some(topic), SEARCH_FOR)?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .filter(|t| t.name() == topic && t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        let mut next = HashMap::new();
        let mut by_time = TopicPartitionList::new();
        for p in &partitions {
            let (low, high) = consumer.fetch_watermarks(topic, *p, SEARCH_FOR)?;
            next.insert(*p, low.max(high - WITHOUT_TIMES));
            by_time.add_partition_offset(topic, *p, Offset::Offset(since_ms))?;
        }
        if !partitions.is_empty() {
            if let Ok(found) = consumer.offsets_for_times(by_time, SEARCH_FOR) {
                for e in found.elements() {
                    match e.offset() {
                        Offset::Offset(o) => {
                            next.insert(e.partition(), o);
                        }
                        // nothing published since then
                        Offset::End => {
                            let (_, high) =
                                consumer.fetch_watermarks(topic, e.partition(), SEARCH_FOR)?;
                            next.insert(e.partition(), high);
                        }
                        _ => {}
                    }
                }
            }
        }
        let mut starts = TopicPartitionList::new();
        for (p, o) in &next {
            starts.add_partition_offset(topic, *p, Offset::Offset(*o))?;
        }
        consumer.assign(&starts)?;
        Ok(Self {
            consumer,
            from_ms: since_ms,
            next,
            answered: HashSet::new(),
            results: HashMap::new(),
        })
    }

    /// Reads every partition up to where it ends now (or for [`SEARCH_FOR`]).
    fn read_to_the_end(&mut self, topic: &str) -> Result<(), Error> {
        let deadline = Instant::now() + SEARCH_FOR;
        let mut open = Vec::new();
        for (p, next) in &self.next {
            let (_, high) = self.consumer.fetch_watermarks(topic, *p, SEARCH_FOR)?;
            if *next < high {
                open.push((*p, high));
            }
        }
        while !open.is_empty() {
            if Instant::now() >= deadline {
                return Err(Error::Unfinished(SEARCH_FOR));
            }
            let Some(message) = self.consumer.poll(Duration::from_millis(100)) else {
                continue;
            };
            let message = message?;
            let payload = message.payload().unwrap_or_default();
            if let Some(id) = slot_freed_by(payload) {
                self.answered.insert(id);
            } else if let Some((id, record)) = result_of(payload) {
                self.results.insert(id, record);
            }
            let (p, o) = (message.partition(), message.offset());
            self.next.insert(p, o + 1);
            open.retain(|(q, end)| !(*q == p && o + 1 >= *end));
        }
        Ok(())
    }
}

/// The activation whose slot `payload` frees, if it is a completion or combined message
/// (upstream's `isSlotFree`: it has `instance`).
fn slot_freed_by(payload: &[u8]) -> Option<String> {
    let v = serde_json::from_slice::<serde_json::Value>(payload).ok()?;
    v.get("instance")?;
    v["activationId"]
        .as_str()
        .or_else(|| v["response"].as_str())
        .or_else(|| v["response"]["activationId"].as_str())
        .map(str::to_string)
}

/// The activation a result message (no `instance`: it frees no slot) is the result of, and
/// its record when the message carries it whole.
fn result_of(payload: &[u8]) -> Option<(String, Option<Box<WhiskActivation>>)> {
    let v = serde_json::from_slice::<serde_json::Value>(payload).ok()?;
    if v.get("instance").is_some() {
        return None;
    }
    match v.get("response")? {
        serde_json::Value::String(id) => Some((id.clone(), None)),
        response => {
            let id = response.get("activationId")?.as_str()?.to_string();
            let record = serde_json::from_value(response.clone()).ok().map(Box::new);
            Some((id, record))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The 30-minute chaos run saw activations answered twice: completed by the host that
    /// failed, then "failed over" by the next one, whose look gave up on a restarting broker
    /// after three seconds and said "not answered".
    #[test]
    fn a_look_that_cannot_read_the_topic_does_not_say_unanswered() {
        let index = Index::new("127.0.0.1:1");
        assert!(index.answered("completed0", "a1", 0).is_err());
    }

    #[test]
    fn a_result_message_says_the_activation_ran_and_carries_its_record_when_whole() {
        let shrunk = r#"{"transid":["t",1],"response":"a1"}"#;
        assert_eq!(result_of(shrunk.as_bytes()), Some(("a1".into(), None)));
        let partial = r#"{"transid":["t",1],"response":{"activationId":"a2"}}"#;
        assert_eq!(result_of(partial.as_bytes()), Some(("a2".into(), None)));
        let combined = r#"{"transid":["t",1],"response":"a3","isSystemError":false,"instance":{"instance":0}}"#;
        assert_eq!(
            result_of(combined.as_bytes()),
            None,
            "a combined message frees the slot"
        );
        assert_eq!(result_of(b"not json"), None);
    }

    #[test]
    fn completions_and_combined_messages_free_the_slot_results_do_not() {
        for freeing in [
            r#"{"transid":["t",1],"activationId":"a1","isSystemError":false,"instance":{"instance":0}}"#,
            r#"{"transid":["t",1],"response":{"activationId":"a1"},"isSystemError":false,"instance":{"instance":0}}"#,
            r#"{"transid":["t",1],"response":"a1","isSystemError":false,"instance":{"instance":0}}"#,
        ] {
            assert_eq!(
                slot_freed_by(freeing.as_bytes()).as_deref(),
                Some("a1"),
                "{freeing}"
            );
        }
        for not in [
            r#"{"transid":["t",1],"response":{"activationId":"a1"}}"#,
            "not json",
        ] {
            assert_eq!(slot_freed_by(not.as_bytes()), None, "{not}");
        }
    }
}
