//! Publishing an acknowledgement, and how hard it is tried. The broker is behind
//! [`Publisher`] (rdkafka's producer in a host, a list in the unit tests), so the policy here
//! — shrink what is too large, drop what can never be published, retry the rest until
//! [`PUBLISH_GIVE_UP`] — is tested without one.

use crate::activation::Acknowledgement;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::time::Duration;

/// Why the broker did not take a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the message is larger than the broker takes")]
    TooLarge,
    #[error("the broker says the topic is invalid")]
    InvalidTopic,
    /// Anything else: broker down, leader moving, a refused topic or ACL.
    #[error("{0}")]
    Failed(String),
}

/// Where acknowledgements go.
#[async_trait::async_trait]
pub trait Publisher: Send + Sync {
    /// Sends `payload` to `topic`, once the broker has it (or refused it).
    async fn send(&self, topic: &str, payload: &str) -> Result<(), Refused>;
}

#[async_trait::async_trait]
impl Publisher for FutureProducer {
    async fn send(&self, topic: &str, payload: &str) -> Result<(), Refused> {
        let record = FutureRecord::<(), _>::to(topic).payload(payload);
        match FutureProducer::send(self, record, Duration::from_secs(10)).await {
            Ok(_) => Ok(()),
            Err((e, _)) => Err(match e.rdkafka_error_code() {
                Some(RDKafkaErrorCode::MessageSizeTooLarge) => Refused::TooLarge,
                Some(RDKafkaErrorCode::InvalidTopic) => Refused::InvalidTopic,
                _ => Refused::Failed(e.to_string()),
            }),
        }
    }
}

/// Whether Kafka could ever accept `topic`: legal characters and length (Kafka's own rule).
/// A malformed `rootControllerIndex` makes a completion topic that can never exist.
pub fn legal_topic(topic: &str) -> bool {
    !topic.is_empty()
        && topic.len() <= 249
        && topic != "."
        && topic != ".."
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Publishes one acknowledgement; returns only once it is published or can never be.
/// - too large for the broker: sent again shrunk (the record replaced by its activation id),
///   as upstream's `MessagingActiveAck` does on `RecordTooLargeException`;
/// - a topic that cannot exist: logged with the activation id and dropped;
/// - anything else (broker down, leader moving): retried with backoff, counted.
pub async fn publish(publisher: &dyn Publisher, topic: &str, ack: &Acknowledgement) {
    let key = ack.activation_id().to_owned();
    if !legal_topic(topic) {
        tracing::error!(%topic, activation = %key, "the completion topic is not a legal Kafka topic name: acknowledgement dropped");
        crate::metrics::global().acknowledgement_dropped("illegal_topic");
        return;
    }
    let mut payload = ack.to_json().to_string();
    let mut shrunk = false;
    let mut backoff = Duration::from_millis(50);
    let since = tokio::time::Instant::now();
    loop {
        let error = match publisher.send(topic, &payload).await {
            Ok(()) => return,
            Err(e) => e,
        };
        match error {
            Refused::TooLarge if !shrunk => {
                tracing::warn!(%topic, activation = %key, bytes = payload.len(), "acknowledgement too large for the broker: sending it shrunk (the record replaced by its id)");
                payload = ack.shrunk_json().to_string();
                shrunk = true;
                continue;
            }
            Refused::TooLarge => {
                tracing::error!(%topic, activation = %key, bytes = payload.len(), "acknowledgement too large for the broker even shrunk (its transaction id alone is): dropped");
                crate::metrics::global().acknowledgement_dropped("too_large");
                return;
            }
            Refused::InvalidTopic => {
                tracing::error!(%topic, activation = %key, "the broker says the completion topic is invalid: acknowledgement dropped");
                crate::metrics::global().acknowledgement_dropped("invalid_topic");
                return;
            }
            Refused::Failed(_) => {}
        }
        // As upstream's `MessagingActiveAck`, an acknowledgement that cannot be published is
        // given up on (an absent topic the broker will not create, an ACL refusal, a broker
        // gone for long): its offset moves on, so nothing after it runs again.
        if since.elapsed() >= PUBLISH_GIVE_UP {
            tracing::error!(%topic, activation = %key, tried_for = ?since.elapsed(), "publishing the acknowledgement failed for too long: dropped ({error})");
            crate::metrics::global().acknowledgement_dropped("unpublishable");
            return;
        }
        crate::metrics::global().publish_retried();
        tracing::warn!(%topic, activation = %key, retry_in = ?backoff, "publishing the acknowledgement failed, retrying: {error}");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// How long an acknowledgement is retried before it is dropped: longer than a broker
/// restart or a leader election takes.
const PUBLISH_GIVE_UP: Duration = Duration::from_secs(60);

/// A broker for the unit tests: keeps what it was sent, and answers from a script (then `Ok`).
#[cfg(test)]
#[derive(Debug, Default)]
pub struct Recorder {
    pub sent: std::sync::Mutex<Vec<(String, String)>>,
    pub answers: std::sync::Mutex<std::collections::VecDeque<Result<(), Refused>>>,
}

#[cfg(test)]
impl Recorder {
    /// A broker that answers `answers` in turn, then takes everything.
    pub fn answering(answers: impl IntoIterator<Item = Result<(), Refused>>) -> Recorder {
        Recorder {
            answers: std::sync::Mutex::new(answers.into_iter().collect()),
            ..Recorder::default()
        }
    }

    /// What it took, in order: (topic, payload as JSON).
    pub fn taken(&self) -> Vec<(String, serde_json::Value)> {
        self.sent
            .lock()
            .unwrap()
            .iter()
            .map(|(t, p)| (t.clone(), serde_json::from_str(p).expect("json payload")))
            .collect()
    }
}

#[cfg(test)]
#[async_trait::async_trait]
impl Publisher for Recorder {
    async fn send(&self, topic: &str, payload: &str) -> Result<(), Refused> {
        self.sent
            .lock()
            .unwrap()
            .push((topic.to_owned(), payload.to_owned()));
        let answer = self.answers.lock().unwrap().pop_front();
        answer.unwrap_or(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::{publish, Recorder, Refused, PUBLISH_GIVE_UP};
    use crate::activation::{Acknowledgement, InvokerInstanceId, TransactionId};

    fn completion() -> Acknowledgement {
        Acknowledgement::Completion {
            transid: TransactionId::new("sid_test", 1),
            activation_id: "a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5".into(),
            is_system_error: false,
            instance: InvokerInstanceId::new(0, 1024, None),
        }
    }

    #[tokio::test]
    async fn a_message_too_large_goes_again_shrunk_and_then_is_dropped() {
        let ack = completion();
        let broker = Recorder::answering([Err(Refused::TooLarge)]);
        publish(&broker, "completed0", &ack).await;
        let taken = broker.taken();
        assert_eq!(taken.len(), 2, "{taken:?}");
        assert_eq!(taken[0].1, ack.to_json());
        assert_eq!(taken[1].1, ack.shrunk_json());

        let broker = Recorder::answering([Err(Refused::TooLarge), Err(Refused::TooLarge)]);
        publish(&broker, "completed0", &ack).await;
        assert_eq!(
            broker.taken().len(),
            2,
            "dropped after the shrunk copy, not retried"
        );
    }

    #[tokio::test]
    async fn a_topic_that_cannot_exist_is_never_retried() {
        let ack = completion();
        let broker = Recorder::answering([Err(Refused::InvalidTopic)]);
        publish(&broker, "completed0", &ack).await;
        assert_eq!(broker.taken().len(), 1);

        let broker = Recorder::default();
        publish(&broker, "completed/0", &ack).await;
        assert!(
            broker.taken().is_empty(),
            "an illegal name is not sent at all"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_broker_that_fails_is_retried_with_the_same_message_until_it_takes_it() {
        let ack = completion();
        let failed = || Err(Refused::Failed("broker down".into()));
        let broker = Recorder::answering([failed(), failed(), failed()]);
        publish(&broker, "completed0", &ack).await;
        let taken = broker.taken();
        assert_eq!(taken.len(), 4);
        assert!(taken
            .iter()
            .all(|(t, p)| t == "completed0" && *p == ack.to_json()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_broker_that_never_takes_it_is_given_up_on_after_the_limit() {
        let broker = Recorder::answering((0..10_000).map(|_| Err(Refused::Failed("down".into()))));
        let began = tokio::time::Instant::now();
        publish(&broker, "completed0", &completion()).await;
        let took = began.elapsed();
        assert!(took >= PUBLISH_GIVE_UP, "gave up after {took:?}");
        assert!(
            took < PUBLISH_GIVE_UP + std::time::Duration::from_secs(6),
            "{took:?}"
        );
        let tries = broker.taken().len();
        assert!((10..100).contains(&tries), "{tries} tries in {took:?}");
    }
}
