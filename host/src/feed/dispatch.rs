//! Each activation the feed takes runs in its own task: run it (again once the lease is
//! confirmed, if it was fenced before anything ran), publish its acknowledgements, write its
//! record, report it completed, and give its slot and offset back to the feed's loop.

use super::acknowledged::Answered;
use super::publisher::{publish, Publisher};
use super::{ActivationSink, Progress};
use crate::activation::{
    Acknowledgement, ActivationMessage, Gate, Runner, Unreadable, WhiskActivation,
};
use futures::FutureExt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

/// How far back from an activation's send its completion is looked for, in milliseconds (a
/// margin for the controller's clock and this host's apart).
const CLOCKS_APART_MS: i64 = 10_000;

/// How long after a look the broker cut short the next one starts.
const LOOK_AGAIN_AFTER: Duration = Duration::from_millis(200);

/// How long the next active host waits for the completion a host that failed owes: it sent
/// an activation's result and not yet its completion (it is sent whatever the host's term
/// does meanwhile, so a paused or cut-off host sends it when it wakes). Past it, the next host
/// sends the completion itself.
const OWED_COMPLETION_WAIT: Duration = Duration::from_secs(10);

/// How far ahead of this host's clock the controller's may be (hosts kept by NTP): an
/// activation sent up to this long after the feed began is still looked for.
pub(super) const CLOCK_AHEAD_MS: i64 = 1_000;

/// What an activation's task needs; cloned into each.
#[derive(Clone)]
pub(super) struct Dispatch {
    pub runner: Arc<Runner>,
    pub publisher: Arc<dyn Publisher>,
    pub sink: Arc<ActivationSink>,
    /// (partition, offset) of an activation acknowledged (or given up on for good).
    pub done: mpsc::UnboundedSender<(i32, i64)>,
    /// An activation stopped running (its acknowledgement may still be publishing).
    pub ran: mpsc::UnboundedSender<()>,
    pub progress: Option<mpsc::UnboundedSender<Progress>>,
    pub in_flight: Option<Arc<super::InFlight>>,
    pub gate: Gate,
    pub stop: watch::Receiver<bool>,
    /// The completion topics read so far (see [`super::acknowledged`]).
    pub acknowledged: Arc<super::acknowledged::Index>,
    /// Activations sent before this (epoch millis, with a margin for clocks apart) may have
    /// been answered by the host or process before this one.
    pub sent_before_ms: i64,
}

impl Dispatch {
    /// Answers a message that names an activation and a controller but cannot be read.
    pub fn answer_unreadable(&self, unreadable: Unreadable, partition: i32, offset: i64) {
        let outcome = self.runner.not_understood(&unreadable);
        let this = self.clone();
        tokio::spawn(async move {
            publish(
                &*this.publisher,
                &unreadable.completion_topic(),
                &outcome.last,
            )
            .await;
            this.sink.write(&outcome.record, true).await;
            let _ = this.done.send((partition, offset));
        });
    }

    /// Runs `msg` in its own task.
    pub fn run(&self, msg: ActivationMessage, may_have_run: bool, partition: i32, offset: i64) {
        let this = self.clone();
        // before the task runs: a step-down reads what runs as soon as the feed stops pulling
        if let Some(f) = &this.in_flight {
            f.begin(&msg.activation_id);
        }
        // every line about it carries its id, transid and epoch; its trace continues the
        // controller's
        let span = tracing::info_span!(
            "activation",
            activation_id = %msg.activation_id,
            transid = %msg.transid.id,
            epoch = this.runner.epoch(),
            action = %msg.action.qualified(),
        );
        crate::telemetry::continue_trace(&span, msg.trace_context.as_ref());
        tokio::spawn(
            async move {
                let id = msg.activation_id.clone();
                let in_flight = this.in_flight.clone();
                let acknowledged = this
                    .run_to_the_end(msg, may_have_run, partition, offset)
                    .await;
                if let Some(f) = in_flight {
                    f.end(&id, acknowledged);
                }
            }
            .instrument(span),
        );
    }

    /// Whether its acknowledgement was published.
    async fn run_to_the_end(
        self,
        msg: ActivationMessage,
        may_have_run: bool,
        partition: i32,
        offset: i64,
    ) -> bool {
        if let Some(acknowledged) = self
            .settled_before(&msg, may_have_run, partition, offset)
            .await
        {
            return acknowledged;
        }
        let runner = &self.runner;
        let topic = msg.completion_topic();
        // a blocking activation's result goes out while its logs are read; its completion
        // only once the result is published (upstream orders them so)
        let result: std::sync::Mutex<Option<tokio::task::JoinHandle<bool>>> = Default::default();
        let on_result = |ack: Acknowledgement| {
            let (this, topic, id) = (self.clone(), topic.clone(), msg.activation_id.clone());
            let span = tracing::info_span!("acknowledge", message = "result");
            let task = tokio::spawn(
                async move {
                    let may = this.may_acknowledge(&id).await;
                    if may {
                        publish(&*this.publisher, &topic, &ack).await
                    }
                    may
                }
                .instrument(span),
            );
            *result.lock().expect("result lock") = Some(task);
        };
        let outcome = loop {
            match AssertUnwindSafe(runner.run(&msg, may_have_run, &on_result))
                .catch_unwind()
                .await
            {
                Ok(Some(outcome)) => break outcome,
                Ok(None) => {}
                Err(panic) => {
                    let reason = panic_text(&panic);
                    tracing::error!(activation = %msg.activation_id, partition, offset, "running the activation panicked: {reason}");
                    match std::panic::catch_unwind(AssertUnwindSafe(|| {
                        runner.internal_error(&msg, &reason)
                    })) {
                        Ok(outcome) => break outcome,
                        Err(_) => {
                            // Not even an error record can be built: give its slot and
                            // offset back, never acknowledged.
                            let _ = self.ran.send(());
                            let _ = self.done.send((partition, offset));
                            return false;
                        }
                    }
                }
            }
            // Fenced before anything ran: run it once the lease is confirmed again. If the
            // role ends first it stays unacknowledged and its offset unrecorded: the next
            // active host runs it from the replicated offset.
            if !lease_regained(&self.gate, self.stop.clone()).await {
                let _ = self.ran.send(());
                return false;
            }
        };
        let _ = self.ran.send(());
        let result = result.lock().expect("result lock").take();
        let result_out = match result {
            Some(task) => task.await.unwrap_or(false),
            None => false,
        };
        // A result out (under the lease) is followed by its completion whatever the term
        // does meanwhile: withheld, the next active host would answer the activation a
        // second time (a completion is what tells it the activation was answered).
        if !result_out && !self.may_acknowledge(&msg.activation_id).await {
            tracing::warn!(activation = %msg.activation_id, "this host's term ended before it could acknowledge the activation: left to the next active host, which found it started");
            return false;
        }
        publish(&*self.publisher, &topic, &outcome.last)
            .instrument(tracing::info_span!(
                "acknowledge",
                message = outcome.last.kind()
            ))
            .await;
        if let Some(event) = outcome.record.event(&msg.user.namespace.name) {
            crate::metrics::global().activation(&event);
        }
        self.sink
            .write(&outcome.record, msg.user.stores_activations())
            .await;
        if let Some(p) = &self.progress {
            let _ = p.send(Progress::Completed(msg.activation_id.clone()));
        }
        let _ = self.done.send((partition, offset));
        true
    }
}

impl Dispatch {
    /// Whether this host may still acknowledge `id`: it holds the lease (a lapse is waited
    /// out), or it handed `id` over in a step-down and finishes it for the next active host.
    /// Once its term has ended otherwise it may not: a host paused or cut off mid-activation
    /// wakes after the next active host found the activation started and answered it, and a
    /// second completion would reach the controller. A single host (no lease) always may.
    async fn may_acknowledge(&self, id: &str) -> bool {
        let handed_over = || {
            self.in_flight
                .as_ref()
                .and_then(|f| f.handed_over())
                .is_some_and(|ids| ids.contains(id))
        };
        let mut stop = self.stop.clone();
        loop {
            if self.gate.open() || handed_over() {
                return true;
            }
            if *stop.borrow() {
                return false;
            }
            tokio::select! {
                changed = stop.changed() => if changed.is_err() {
                    return false;
                },
                _ = tokio::time::sleep(Duration::from_millis(5)) => {}
            }
        }
    }

    /// What the completion topic settles before anything runs, for an activation the host
    /// that failed (or the process before this one) may have answered: `Some(acknowledged)`
    /// when nothing is left to run — answered there, its owed completion sent here, or the
    /// feed stopped before it could know — and `None` when it is to be run.
    async fn settled_before(
        &self,
        msg: &ActivationMessage,
        may_have_run: bool,
        partition: i32,
        offset: i64,
    ) -> Option<bool> {
        let answered_elsewhere = may_have_run || msg.transid.start_ms < self.sent_before_ms;
        let before = match answered_elsewhere {
            true => self.answered_before(msg).await,
            false => Some(Answered::No),
        };
        let before = match before {
            Some(Answered::ResultOnly(record)) => self.owed_completion(msg, record).await,
            other => other,
        };
        match before {
            // stopped before it could know: unanswered and its offset unrecorded, for the
            // next active host
            None => {
                let _ = self.ran.send(());
                Some(false)
            }
            Some(Answered::ResultOnly(record)) => Some(
                self.complete_owed(msg, record.map(|r| *r), partition, offset)
                    .await,
            ),
            Some(Answered::Yes) => {
                tracing::info!(activation = %msg.activation_id, "the host that failed acknowledged it before it died: not answered again");
                let _ = self.ran.send(());
                if let Some(p) = &self.progress {
                    let _ = p.send(Progress::Completed(msg.activation_id.clone()));
                }
                let _ = self.done.send((partition, offset));
                Some(true)
            }
            Some(Answered::No) => None,
        }
    }

    /// What `msg`'s completion topic says about it already (what the host that failed sent
    /// before its death kept it from the replicated state). A look the broker cuts short is
    /// made again: answering without knowing could answer twice, and the answer needs the
    /// broker anyway. `None`: the feed was told to stop first.
    async fn answered_before(&self, msg: &ActivationMessage) -> Option<Answered> {
        // the acknowledgement follows the controller's send; a margin for clocks apart
        let since = msg.transid.start_ms.saturating_sub(CLOCKS_APART_MS);
        loop {
            let (index, topic, id) = (
                self.acknowledged.clone(),
                msg.completion_topic(),
                msg.activation_id.clone(),
            );
            match tokio::task::spawn_blocking(move || index.answered(&topic, &id, since)).await {
                Ok(Ok(found)) => return Some(found),
                Ok(Err(e)) => {
                    tracing::warn!(activation = %msg.activation_id, "looking for an earlier acknowledgement (looking again): {e}")
                }
                Err(e) => {
                    tracing::error!(activation = %msg.activation_id, "looking for an earlier acknowledgement failed: {e}");
                    return None;
                }
            }
            if !self.pause(LOOK_AGAIN_AFTER).await {
                return None;
            }
        }
    }

    /// Waits up to [`OWED_COMPLETION_WAIT`] for the completion of an activation whose result
    /// the host that failed sent: `Yes` once it is there, `ResultOnly` if it never came.
    async fn owed_completion(
        &self,
        msg: &ActivationMessage,
        record: Option<Box<WhiskActivation>>,
    ) -> Option<Answered> {
        tracing::info!(activation = %msg.activation_id, "the host that failed sent its result: waiting for the completion it owes");
        let deadline = tokio::time::Instant::now() + OWED_COMPLETION_WAIT;
        while tokio::time::Instant::now() < deadline {
            if !self.pause(LOOK_AGAIN_AFTER).await {
                return None;
            }
            match self.answered_before(msg).await? {
                Answered::Yes => return Some(Answered::Yes),
                Answered::ResultOnly(_) | Answered::No => {}
            }
        }
        Some(Answered::ResultOnly(record))
    }

    /// Sends the completion the host that failed owed for an activation whose result it sent
    /// (the activation ran: it is neither run again nor answered as failed over), and stores
    /// the record when the result carried it. Whether the completion was published.
    async fn complete_owed(
        &self,
        msg: &ActivationMessage,
        record: Option<WhiskActivation>,
        partition: i32,
        offset: i64,
    ) -> bool {
        tracing::warn!(activation = %msg.activation_id, waited = ?OWED_COMPLETION_WAIT, "the host that failed sent the result and not the completion: sending it here");
        let _ = self.ran.send(());
        if !self.may_acknowledge(&msg.activation_id).await {
            return false;
        }
        let completion = Acknowledgement::Completion {
            transid: msg.transid.clone(),
            activation_id: msg.activation_id.clone(),
            is_system_error: record.as_ref().is_some_and(|r| r.response.is_whisk_error()),
            instance: self.runner.instance.clone(),
        };
        publish(&*self.publisher, &msg.completion_topic(), &completion).await;
        if let Some(record) = &record {
            self.sink.write(record, msg.user.stores_activations()).await;
        }
        if let Some(p) = &self.progress {
            let _ = p.send(Progress::Completed(msg.activation_id.clone()));
        }
        let _ = self.done.send((partition, offset));
        true
    }

    /// Sleeps `pause`; false if the feed is told to stop first.
    async fn pause(&self, pause: Duration) -> bool {
        let mut stop = self.stop.clone();
        if *stop.borrow() {
            return false;
        }
        tokio::select! {
            changed = stop.changed() => changed.is_ok() && !*stop.borrow(),
            _ = tokio::time::sleep(pause) => true,
        }
    }
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Waits until `gate` opens again (true) or the feed is told to stop (false).
async fn lease_regained(gate: &Gate, mut stop: watch::Receiver<bool>) -> bool {
    loop {
        if *stop.borrow() {
            return false;
        }
        if gate.open() {
            return true;
        }
        tokio::select! {
            changed = stop.changed() => if changed.is_err() {
                return false;
            },
            _ = tokio::time::sleep(Duration::from_millis(5)) => {}
        }
    }
}
