//! Whether the host that failed already acknowledged an activation: read from the
//! controller's own `completed{C}` topic.
//!
//! An activation the failed host started (`Command::Completed { started }`) and whose
//! completion never reached the replicated state either ended there unanswered or was answered
//! in the moments between publishing its acknowledgement and replicating that it had (the
//! host died in between). Answering it again — with the failover's error, or by running it
//! again — would give the controller a second completion, so the next active host first
//! looks for one on the completion topic, from shortly before the activation was sent.
//! A separate consumer with no group and no commits reads it: the controller's own
//! consumption is untouched.

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use std::time::{Duration, Instant};

/// How long the search may take; past it the activation is taken as unanswered.
const SEARCH_FOR: Duration = Duration::from_secs(3);

/// Messages read back at most per partition when the broker cannot find offsets by time.
const WITHOUT_TIMES: i64 = 20_000;

/// Whether `topic` holds a message freeing `activation_id`'s slot (a completion or a
/// combined message) published since `since_ms`. Blocking: run it off the async workers.
/// An error or a search past [`SEARCH_FOR`] answers `false` (nothing found).
pub fn already_acknowledged(
    brokers: &str,
    topic: &str,
    activation_id: &str,
    since_ms: i64,
) -> bool {
    match search(brokers, topic, activation_id, since_ms) {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(%topic, activation = %activation_id, "looking for an earlier acknowledgement: {e}");
            false
        }
    }
}

fn search(
    brokers: &str,
    topic: &str,
    activation_id: &str,
    since_ms: i64,
) -> Result<bool, rdkafka::error::KafkaError> {
    let deadline = Instant::now() + SEARCH_FOR;
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
    let mut ends = Vec::new();
    let mut starts = TopicPartitionList::new();
    for p in &partitions {
        let (low, high) = consumer.fetch_watermarks(topic, *p, SEARCH_FOR)?;
        if high > low {
            ends.push((*p, high));
            starts.add_partition_offset(
                topic,
                *p,
                Offset::Offset(low.max(high - WITHOUT_TIMES)),
            )?;
        }
    }
    if ends.is_empty() {
        return Ok(false);
    }
    // from shortly before the activation was sent, where the broker can find it by time
    let mut by_time = TopicPartitionList::new();
    for (p, _) in &ends {
        by_time.add_partition_offset(topic, *p, Offset::Offset(since_ms))?;
    }
    if let Ok(found) = consumer.offsets_for_times(by_time, SEARCH_FOR) {
        for e in found.elements() {
            if let Offset::Offset(o) = e.offset() {
                starts.set_partition_offset(topic, e.partition(), Offset::Offset(o))?;
            }
        }
    }
    consumer.assign(&starts)?;
    let mut open: Vec<(i32, i64)> = ends;
    while !open.is_empty() && Instant::now() < deadline {
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = message?;
        if frees_slot_of(message.payload().unwrap_or_default(), activation_id) {
            return Ok(true);
        }
        let (p, o) = (message.partition(), message.offset());
        open.retain(|(q, end)| !(*q == p && o + 1 >= *end));
    }
    Ok(false)
}

/// Whether `payload` is a completion or combined message (upstream's `isSlotFree`: it has
/// `instance`) of `activation_id`.
fn frees_slot_of(payload: &[u8], activation_id: &str) -> bool {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(payload) else {
        return false;
    };
    if v.get("instance").is_none() {
        return false;
    }
    let id = v["activationId"]
        .as_str()
        .or_else(|| v["response"].as_str())
        .or_else(|| v["response"]["activationId"].as_str());
    id == Some(activation_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_and_combined_messages_free_the_slot_results_do_not() {
        let id = "a1";
        for freeing in [
            r#"{"transid":["t",1],"activationId":"a1","isSystemError":false,"instance":{"instance":0}}"#,
            r#"{"transid":["t",1],"response":{"activationId":"a1"},"isSystemError":false,"instance":{"instance":0}}"#,
            r#"{"transid":["t",1],"response":"a1","isSystemError":false,"instance":{"instance":0}}"#,
        ] {
            assert!(frees_slot_of(freeing.as_bytes(), id), "{freeing}");
        }
        for not in [
            r#"{"transid":["t",1],"response":{"activationId":"a1"}}"#,
            r#"{"transid":["t",1],"activationId":"a2","isSystemError":false,"instance":{"instance":0}}"#,
            "not json",
        ] {
            assert!(!frees_slot_of(not.as_bytes(), id), "{not}");
        }
    }
}
