//! The runner on its own (`fixture`: a fake engine, an action proxy of the test's, a lease
//! the test opens and closes). What the records and acknowledgements say is compared with what
//! upstream's `ContainerProxy` writes for the same run.

use super::fixture::{message, setup, setup_with};
use super::logs::SENTINEL;
use super::runner::{Delivery, Journal, FAILED_OVER};
use super::*;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn annotation<'a>(record: &'a WhiskActivation, key: &str) -> Option<&'a Value> {
    record.annotation(key)
}

/// Issue 32, defect 1: a `/run` that timed out while the lease happened to be lapsed was
/// taken for one never sent (`Interrupted::Fenced { initialized: true }`): its container went
/// back to the pool and the activation ran again. The recipe: a 1 s timeout, an action that
/// takes longer, the lease lapsing at ~950 ms for 300 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_timed_out_during_a_lapse_is_answered_once_and_its_container_destroyed() {
    let s = setup(1000, Duration::from_secs(3), "{}").await;
    let lease = s.lease.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(950)).await;
        lease.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(300)).await;
        lease.store(true, Ordering::SeqCst);
    });
    let msg = message(0, None);
    let outcome = s.runner.run(&msg, false, &|_| {}).await;
    let outcome = outcome.expect("an outcome: the request had been sent, it is not run again");
    let record = &outcome.record;
    assert_eq!(record.response.status_code, StatusCode::DeveloperError);
    assert_eq!(
        record.response.result,
        Some(json!({"error": "The action exceeded its time limits of 1000 milliseconds."}))
    );
    assert_eq!(annotation(record, "timeout"), Some(&json!(true)));
    assert_eq!(s.proxy.runs.load(Ordering::SeqCst), 1);
    // the timed-out container is destroyed once the lease is back, never offered again
    for _ in 0..100 {
        if s.engine.destroyed.load(Ordering::SeqCst) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(s.engine.destroyed.load(Ordering::SeqCst), 1);
    let stats = s.runner.pool.stats();
    assert_eq!((stats.warm_idle, stats.busy), (0, 0));
}

/// A lapse before `/run` was sent still leaves the activation to run once the lease is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lapse_before_anything_was_sent_runs_nothing() {
    let s = setup(1000, Duration::ZERO, "{}").await;
    s.lease.store(false, Ordering::SeqCst);
    assert!(s
        .runner
        .run(&message(0, None), false, &|_| {})
        .await
        .is_none());
    assert_eq!(s.proxy.runs.load(Ordering::SeqCst), 0);
}

/// Issue 33, parts 1, 2, 4 and 5: a cold start's record as upstream's `ContainerProxy` writes
/// it. `start = runStart − initTime`, `duration` = init + run (not the engine's create),
/// `waitTime` counts the create; annotations `timeout`, `causedBy`, `binding`;
/// `response.size`; the stored record is the acknowledged one with only the logs added.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_starts_record_is_upstreams() {
    let answer = "{\"greeting\":\"héllo\"}";
    let s = setup(5000, Duration::from_millis(40), answer).await;
    *s.engine.create_delay.lock().unwrap() = Duration::from_millis(300);
    *s.engine.output.lock().unwrap() = format!(
        "2026-12-06T10:00:00.5Z stdout: hello\n{SENTINEL}\n2026-12-06T10:00:00.6Z stderr: {SENTINEL}\n"
    );
    let msg = message(100, Some("0f0e0d0c0b0a09080706050403020100"));
    let acknowledged: Mutex<Option<Acknowledgement>> = Mutex::new(None);
    let outcome = s
        .runner
        .run(&msg, false, &|ack| {
            *acknowledged.lock().unwrap() = Some(ack)
        })
        .await
        .expect("an outcome");
    let stored = outcome.record;
    let keys: Vec<&str> = stored.annotations.iter().map(|a| a.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "limits", "path", "kind", "timeout", "causedBy", "initTime", "waitTime", "binding",
            "keepwarm"
        ]
    );
    assert_eq!(annotation(&stored, "timeout"), Some(&json!(false)));
    assert_eq!(annotation(&stored, "causedBy"), Some(&json!("sequence")));
    assert_eq!(annotation(&stored, "binding"), Some(&json!("guest/bound")));
    assert_eq!(annotation(&stored, "path"), Some(&json!("guest/hello")));
    assert_eq!(
        annotation(&stored, "limits"),
        Some(&json!({"timeout": 5000, "memory": 128, "logs": 10, "concurrency": 1}))
    );
    // the answer's length as Java counts it (UTF-16 units: é is one)
    assert_eq!(stored.response.size, Some(answer.chars().count()));
    let init = annotation(&stored, "initTime").unwrap().as_i64().unwrap();
    let wait = annotation(&stored, "waitTime").unwrap().as_i64().unwrap();
    let duration = stored.duration.unwrap();
    assert_eq!(duration, stored.end - stored.start);
    assert!(wait >= 100 + 300, "waitTime {wait} counts the create");
    assert!(duration >= 40 + init, "duration {duration} is init + run");
    assert!(duration < 300, "duration {duration} leaves the create out");
    // what the controller got is what the store gets, less the logs
    let Some(Acknowledgement::Result { activation, .. }) = acknowledged.lock().unwrap().take()
    else {
        panic!("a blocking activation whose logs are read gets a result message first")
    };
    assert_eq!(
        WhiskActivation {
            logs: Vec::new(),
            ..stored.clone()
        },
        activation
    );
    assert_eq!(
        stored.logs,
        vec!["2026-12-06T10:00:00.5Z         stdout: hello".to_string()]
    );

    // the second activation is warm: no initTime, start is /run's start
    let warm = s
        .runner
        .run(&message(0, None), false, &|_| {})
        .await
        .unwrap()
        .record;
    assert!(annotation(&warm, "initTime").is_none());
    assert!(annotation(&warm, "causedBy").is_none());
    assert!(warm.duration.unwrap() >= 40 && warm.duration.unwrap() < 300);
    assert_eq!(s.engine.created.load(Ordering::SeqCst), 1);
}

/// A developer error's logs end with upstream's warning line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_developer_errors_logs_end_with_upstreams_warning() {
    let s = setup(5000, Duration::ZERO, "not json").await;
    let outcome = s
        .runner
        .run(&message(0, None), false, &|_| {})
        .await
        .unwrap();
    let record = outcome.record;
    assert_eq!(
        record.response.result,
        Some(
            json!({"error": "The action did not produce a valid JSON or JSON Array response: not json"})
        )
    );
    assert_eq!(record.response.size, Some(8));
    assert!(
        record.logs.last().unwrap().ends_with(
            "stderr: The action did not initialize or run as expected. Log data might be missing."
        ),
        "{:?}",
        record.logs
    );
}

/// Issue 32, part 2: under the default contract an activation a failed host may have run is
/// answered at once with a whisk error naming the failover, and nothing is sent to a
/// container; a blocking one gets one combined message, a non-blocking one a completion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_activation_that_may_have_run_is_answered_not_run_again() {
    let s = setup(5000, Duration::ZERO, "{}").await;
    let outcome = s
        .runner
        .run(&message(0, None), true, &|_| {})
        .await
        .unwrap();
    assert_eq!(
        outcome.record.response,
        ActivationResponse::whisk_error(FAILED_OVER)
    );
    assert!(matches!(outcome.last, Acknowledgement::Combined { .. }));
    let mut quiet = message(0, None);
    quiet.blocking = false;
    let outcome = s.runner.run(&quiet, true, &|_| {}).await.unwrap();
    assert!(matches!(
        outcome.last,
        Acknowledgement::Completion {
            is_system_error: true,
            ..
        }
    ));
    assert_eq!(s.proxy.runs.load(Ordering::SeqCst), 0);
    assert_eq!(s.engine.created.load(Ordering::SeqCst), 0);
}

/// The opt-ins: an action annotated `idempotent`, or a host with `delivery = "at-least-once"`,
/// runs it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_actions_and_at_least_once_hosts_run_it_again() {
    let s = setup_with(
        5000,
        Duration::ZERO,
        "{}",
        json!([{"key": "idempotent", "value": true}]),
    )
    .await;
    let outcome = s
        .runner
        .run(&message(0, None), true, &|_| {})
        .await
        .unwrap();
    assert_eq!(outcome.record.response.status_code, StatusCode::Success);
    assert_eq!(s.proxy.runs.load(Ordering::SeqCst), 1);

    let mut s = setup(5000, Duration::ZERO, "{}").await;
    s.runner.delivery = Delivery::AtLeastOnce;
    let outcome = s
        .runner
        .run(&message(0, None), true, &|_| {})
        .await
        .unwrap();
    assert_eq!(outcome.record.response.status_code, StatusCode::Success);
    assert_eq!(s.proxy.runs.load(Ordering::SeqCst), 1);
}

/// The start is journaled (replicated and committed) before `/run` is sent, and nothing is
/// sent when it cannot be: that is what lets the next active host tell "may have run" from
/// "never reached a container".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_start_is_journaled_before_run_is_sent() {
    let mut s = setup(5000, Duration::ZERO, "{}").await;
    let seen: Arc<Mutex<Vec<(String, usize)>>> = Arc::default();
    let (journaled, proxy) = (seen.clone(), s.proxy.clone());
    let accept = Arc::new(AtomicBool::new(true));
    let accepting = accept.clone();
    s.runner.journal = Some(Journal(Arc::new(
        move |id: String, _container, wait: bool| {
            assert!(
                wait,
                "the start of an action that does not run again is waited for"
            );
            journaled
                .lock()
                .unwrap()
                .push((id, proxy.runs.load(Ordering::SeqCst)));
            let ok = accepting.load(Ordering::SeqCst);
            Box::pin(async move { ok })
        },
    )));
    let msg = message(0, None);
    s.runner.run(&msg, false, &|_| {}).await.unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        vec![(msg.activation_id.clone(), 0)],
        "journaled once, before the run"
    );
    assert_eq!(s.proxy.runs.load(Ordering::SeqCst), 1);
    // the term ended before the start was committed: nothing is sent, the container is kept
    accept.store(false, Ordering::SeqCst);
    assert!(s.runner.run(&msg, false, &|_| {}).await.is_none());
    assert_eq!(s.proxy.runs.load(Ordering::SeqCst), 1);
    assert_eq!(s.runner.pool.stats().warm_idle, 1);
}
