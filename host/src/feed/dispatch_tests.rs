//! An activation's task on its own: the runner of `activation::fixture` (a fake engine, the
//! test's action proxy, a lease the test opens and closes) and a broker that keeps what it
//! is sent (`publisher::Recorder`). What is published, in which order, and when the offset
//! moves — decided here in milliseconds, not only by real processes.

use super::dispatch::Dispatch;
use super::publisher::Recorder;
use super::{ActivationSink, Rotation};
use crate::activation::fixture::{message, setup, Proxy, Setup};
use crate::activation::logs::SENTINEL;
use crate::testing::FakeEngine;
use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

struct Task {
    engine: Arc<FakeEngine>,
    proxy: Arc<Proxy>,
    /// The lease the runner's and the task's gate read.
    lease: Arc<AtomicBool>,
    dispatch: Dispatch,
    broker: Arc<Recorder>,
    /// (partition, offset) of what may be recorded.
    done: mpsc::UnboundedReceiver<(i32, i64)>,
    ran: mpsc::UnboundedReceiver<()>,
    stop: watch::Sender<bool>,
}

async fn task(run_takes: Duration) -> Task {
    task_reading_logs(run_takes, true).await
}

/// `collect_logs`: the host reads the logs (false: the engine's log driver keeps them).
async fn task_reading_logs(run_takes: Duration, collect_logs: bool) -> Task {
    let Setup {
        mut runner,
        engine,
        proxy,
        lease,
    } = setup(5000, run_takes, "{\"ok\":true}").await;
    runner.collect_logs = collect_logs;
    *engine.output.lock().unwrap() = format!(
        "2026-12-07T10:00:00.5Z stdout: hi\n{SENTINEL}\n2026-12-07T10:00:00.6Z stderr: {SENTINEL}\n"
    );
    let broker = Arc::new(Recorder::default());
    let (done_tx, done) = mpsc::unbounded_channel();
    let (ran_tx, ran) = mpsc::unbounded_channel();
    let (stop, stop_rx) = watch::channel(false);
    let rotation = Rotation {
        max_bytes: 1 << 20,
        keep: 1,
    };
    let dispatch = Dispatch {
        gate: runner.may_run.clone(),
        runner: Arc::new(runner),
        publisher: broker.clone(),
        sink: Arc::new(ActivationSink::open(None, rotation).unwrap()),
        done: done_tx,
        ran: ran_tx,
        progress: None,
        in_flight: None,
        stop: stop_rx,
        // nothing listens there: a test that made the task look would fail, not pass
        acknowledged: Arc::new(super::acknowledged::Index::new("127.0.0.1:9")),
        sent_before_ms: 0,
    };
    Task {
        engine,
        proxy,
        lease,
        dispatch,
        broker,
        done,
        ran,
        stop,
    }
}

/// The kinds of what was published, in order: `result`, `completion` or `combined` (as
/// `Message.scala`'s three shapes are told apart: `instance` with `response`, `instance`
/// alone, `response` alone).
fn kinds(broker: &Recorder) -> Vec<(String, &'static str)> {
    broker
        .taken()
        .into_iter()
        .map(|(topic, m): (String, Value)| {
            let kind = match (m.get("instance").is_some(), m.get("response").is_some()) {
                (true, true) => "combined",
                (true, false) => "completion",
                (false, _) => "result",
            };
            (topic, kind)
        })
        .collect()
}

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .unwrap_or_else(|_| panic!("{what}: not within 10 s"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_activation_gets_its_result_then_its_completion_then_its_offset() {
    let mut t = task(Duration::from_millis(20)).await;
    t.dispatch.run(message(0, None), false, 0, 7);
    assert_eq!(within("the offset", t.done.recv()).await, Some((0, 7)));
    assert_eq!(
        kinds(&t.broker),
        [
            ("completed0".to_string(), "result"),
            ("completed0".to_string(), "completion")
        ]
    );
    let (_, completion) = t.broker.taken().pop().unwrap();
    assert_eq!(
        completion["activationId"],
        "a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5"
    );
    assert_eq!(completion["isSystemError"], false);
    assert_eq!(t.proxy.runs.load(Ordering::SeqCst), 1);
}

/// As upstream's `ContainerProxy`: the result of a non-blocking activation goes only to the
/// activation store; the controller gets the freed slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_blocking_activation_gets_only_its_completion() {
    let mut t = task(Duration::from_millis(20)).await;
    let mut msg = message(0, None);
    msg.blocking = false;
    t.dispatch.run(msg, false, 2, 40);
    assert_eq!(within("the offset", t.done.recv()).await, Some((2, 40)));
    assert_eq!(kinds(&t.broker), [("completed0".to_string(), "completion")]);
}

/// A blocking activation whose logs the host does not read gets result and slot in one
/// `CombinedCompletionAndResultMessage`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_activation_with_a_log_driver_gets_one_combined_message() {
    let mut t = task_reading_logs(Duration::from_millis(20), false).await;
    t.dispatch.run(message(0, None), false, 1, 9);
    assert_eq!(within("the offset", t.done.recv()).await, Some((1, 9)));
    assert_eq!(kinds(&t.broker), [("completed0".to_string(), "combined")]);
    let (_, combined) = t.broker.taken().pop().unwrap();
    assert_eq!(combined["response"]["response"]["result"]["ok"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fenced_before_it_ran_it_waits_for_the_lease_and_then_runs_once() {
    let mut t = task(Duration::from_millis(20)).await;
    t.lease.store(false, Ordering::SeqCst);
    t.dispatch.run(message(0, None), false, 0, 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(t.done.try_recv().is_err(), "no offset while fenced");
    assert!(
        t.broker.taken().is_empty(),
        "nothing published while fenced"
    );
    assert_eq!(t.proxy.runs.load(Ordering::SeqCst), 0);

    t.lease.store(true, Ordering::SeqCst);
    assert_eq!(within("the offset", t.done.recv()).await, Some((0, 1)));
    assert_eq!(t.proxy.runs.load(Ordering::SeqCst), 1);
    assert_eq!(kinds(&t.broker).len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fenced_before_it_ran_and_the_term_ends_it_is_left_unanswered_for_the_next_host() {
    let mut t = task(Duration::from_millis(20)).await;
    t.lease.store(false, Ordering::SeqCst);
    t.dispatch.run(message(0, None), false, 0, 1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    t.stop.send(true).unwrap();
    within("its slot back", t.ran.recv()).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(t.done.try_recv().is_err(), "its offset is not recorded");
    assert!(t.broker.taken().is_empty());
    assert_eq!(t.proxy.runs.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_term_that_ends_while_it_runs_leaves_its_answer_to_the_next_host() {
    let mut t = task(Duration::from_millis(600)).await;
    let mut msg = message(0, None);
    msg.blocking = false; // no result goes out before the end
    t.dispatch.run(msg, false, 0, 3);
    // `/run` is sent, then the lease lapses and the term ends before the answer
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(t.proxy.runs.load(Ordering::SeqCst), 1);
    t.lease.store(false, Ordering::SeqCst);
    t.stop.send(true).unwrap();
    within("its slot back", t.ran.recv()).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        t.broker.taken().is_empty(),
        "a host whose term ended answers nothing: the next host found it started and answers it"
    );
    assert!(t.done.try_recv().is_err(), "its offset is not recorded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_out_under_the_lease_is_followed_by_its_completion_after_the_term() {
    let mut t = task(Duration::from_millis(20)).await;
    // the logs arrive only after the lease is gone: the result is out, the completion owed
    *t.engine.output.lock().unwrap() = String::new();
    t.dispatch.run(message(0, None), false, 0, 5);
    let result_out = async {
        while t.broker.taken().is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    within("the result", result_out).await;
    t.lease.store(false, Ordering::SeqCst);
    t.stop.send(true).unwrap();
    *t.engine.output.lock().unwrap() = format!("{SENTINEL}\nstderr: {SENTINEL}\n");
    assert_eq!(within("the offset", t.done.recv()).await, Some((0, 5)));
    assert_eq!(
        kinds(&t.broker),
        [
            ("completed0".to_string(), "result"),
            ("completed0".to_string(), "completion")
        ]
    );
}
