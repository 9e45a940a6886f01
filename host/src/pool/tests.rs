//! The pool's policies against a native fake engine (containers are only records here; the
//! real engines are exercised by the end-to-end tests).

use super::*;
use crate::action::Reactive;
use crate::testing::FakeEngine;

fn want(action: &str) -> Want {
    Want {
        key: WarmKey {
            namespace: "guest".into(),
            action: action.into(),
            revision: "1".into(),
        },
        kind: "shell:1".into(),
        image: "img".into(),
        memory_mb: 128,
        concurrency: 1,
        blackbox: false,
        journaled: false,
    }
}

fn pool(user_memory_mb: u64, stem_cells: Vec<StemCell>) -> (Arc<FakeEngine>, Pool) {
    let engine = Arc::new(FakeEngine::default());
    let pool = Pool::new(
        engine.clone(),
        PoolConfig {
            user_memory_mb,
            stem_cells,
            ..PoolConfig::sample(0)
        },
    );
    (engine, pool)
}

#[tokio::test]
async fn warm_then_prewarm_then_cold() {
    let cell = StemCell {
        kind: "shell:1".into(),
        image: "img".into(),
        memory_mb: 128,
        count: 1,
        reactive: None,
    };
    let (_, pool) = pool(1024, vec![cell]);
    assert_eq!(pool.maintain().await, 1);
    let a = pool.acquire(&want("a")).await.unwrap();
    assert_eq!((a.start, a.needs_init), (Start::Prewarm, true));
    pool.release(&a, Fate::Reuse);
    let again = pool.acquire(&want("a")).await.unwrap();
    assert_eq!((again.start, again.needs_init), (Start::Warm, false));
    let b = pool.acquire(&want("b")).await.unwrap();
    assert_eq!(b.start, Start::Cold);
    assert_eq!(pool.stats().busy, 2);
}

#[tokio::test(start_paused = true)]
async fn a_create_waits_out_a_short_engine_outage_and_gives_up_after_a_long_one() {
    let (engine, pool) = pool(1024, Vec::new());
    engine.down_for.store(3, Ordering::SeqCst); // 100 + 200 + 400 ms of backoff
    let a = pool.acquire(&want("a")).await.unwrap();
    assert_eq!(a.start, Start::Cold);
    assert_eq!(engine.down_for.load(Ordering::SeqCst), 0);

    engine.down_for.store(usize::MAX, Ordering::SeqCst);
    let started = tokio::time::Instant::now();
    let b = pool.acquire(&want("b")).await;
    assert!(matches!(b, Err(PoolError::Create(_))), "{b:?}");
    let waited = started.elapsed();
    assert!(
        waited >= ENGINE_OUTAGE - Duration::from_secs(1) && waited <= ENGINE_OUTAGE,
        "{waited:?}"
    );
    assert_eq!(pool.stats().busy, 1, "the failed create holds no memory");
}

#[tokio::test]
async fn a_full_pool_waits_until_a_container_is_released() {
    let (_, pool) = pool(128, Vec::new());
    let pool = Arc::new(pool);
    let a = pool.acquire(&want("a")).await.unwrap();
    let waiter = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.acquire(&want("b")).await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(pool.waiting(), 1);
    assert!(!waiter.is_finished());
    pool.release(&a, Fate::Reuse); // idle a is evicted for b
    let b = tokio::time::timeout(Duration::from_secs(2), waiter)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(b.start, Start::Cold);
    assert_eq!(pool.waiting(), 0);
}

#[tokio::test]
async fn reactive_stem_cells_grow_with_cold_starts_and_expire_unused() {
    let cell = StemCell {
        kind: "shell:1".into(),
        image: "img".into(),
        memory_mb: 128,
        count: 1,
        reactive: Some(Reactive {
            min: 0,
            max: 3,
            ttl: Duration::from_millis(100),
            threshold: 1,
            increment: 1,
        }),
    };
    let (engine, pool) = pool(2048, vec![cell]);
    pool.maintain().await;
    assert_eq!(pool.stats().prewarm, 1);
    // two activations of new actions: one takes the prewarm, one starts cold
    let a = pool.acquire(&want("a")).await.unwrap();
    let b = pool.acquire(&want("b")).await.unwrap();
    assert_eq!((a.start, b.start), (Start::Prewarm, Start::Cold));
    pool.maintain().await; // one cold start: target 1 → 2
    assert_eq!(pool.stats().prewarm, 2);
    tokio::time::sleep(Duration::from_millis(150)).await;
    pool.maintain().await; // unused past the ttl: down to min (0)
    assert_eq!(pool.stats().prewarm, 0);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(engine.destroyed.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn prewarms_holding_the_memory_are_evicted_for_an_activation_of_another_kind() {
    // Two prewarms of a kind this action cannot use fill user memory: before, the
    // activation waited forever (eviction looked only at idle warm containers).
    let cell = StemCell {
        kind: "nodejs:20".into(),
        image: "node".into(),
        memory_mb: 128,
        count: 2,
        reactive: None,
    };
    let (engine, pool) = pool(256, vec![cell]);
    assert_eq!(pool.maintain().await, 2);
    let a = tokio::time::timeout(Duration::from_secs(2), pool.acquire(&want("a")))
        .await
        .expect("the activation does not wait behind prewarms")
        .unwrap();
    assert_eq!(a.start, Start::Cold);
    let stats = pool.stats();
    assert_eq!((stats.prewarm, stats.busy), (1, 1));
    assert_eq!(stats.churn.destroyed_evicted, 1);
    assert_eq!(
        (stats.churn.created_prewarm, stats.churn.created_cold),
        (2, 1)
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(engine.destroyed.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn idle_warm_containers_are_evicted_before_prewarms() {
    let cell = StemCell {
        kind: "nodejs:20".into(),
        image: "node".into(),
        memory_mb: 128,
        count: 1,
        reactive: None,
    };
    let (_, pool) = pool(256, vec![cell]);
    pool.maintain().await;
    let a = pool.acquire(&want("a")).await.unwrap();
    pool.release(&a, Fate::Reuse);
    let b = pool.acquire(&want("b")).await.unwrap();
    assert_eq!(b.start, Start::Cold);
    let stats = pool.stats();
    assert_eq!((stats.prewarm, stats.warm_idle, stats.busy), (1, 0, 1));
}

#[tokio::test]
async fn churn_counts_failed_containers() {
    let (_, pool) = pool(1024, Vec::new());
    let a = pool.acquire(&want("a")).await.unwrap();
    pool.release(&a, Fate::Destroy);
    assert_eq!(pool.stats().churn.destroyed_failed, 1);
}

#[tokio::test]
async fn containers_the_engine_no_longer_lists_are_forgotten_when_idle_and_marked_when_busy() {
    // the fake engine lists nothing: as an engine machine that failed, for every container
    let (_, pool) = pool(1024, Vec::new());
    let idle = pool.acquire(&want("a")).await.unwrap();
    pool.release(&idle, Fate::Reuse);
    let busy = pool.acquire(&want("b")).await.unwrap();
    let mut events = pool.subscribe();
    // one list that leaves them out is not enough: nothing changes yet
    let first = pool.reconcile(false, &|_| false).await;
    assert_eq!(
        first,
        Reconciled {
            vanished: 0,
            orphans: 0,
            unlisted: 2
        }
    );
    assert!(events.try_recv().is_err());
    assert_eq!(pool.stats().churn.vanished, 0);
    // ... but nothing more is sent to them
    assert!(pool.vanished(&idle.container.id) && pool.vanished(&busy.container.id));
    let meanwhile = pool.acquire(&want("a")).await.unwrap();
    assert_eq!(
        meanwhile.start,
        Start::Cold,
        "a container left out is not offered"
    );
    pool.release(&meanwhile, Fate::Destroy);
    let mut events = pool.subscribe();
    let changed = pool.reconcile(false, &|_| false).await;
    assert_eq!(
        changed,
        Reconciled {
            vanished: 1,
            orphans: 0,
            unlisted: 0
        }
    );
    assert!(
        matches!(events.try_recv(), Ok(PoolEvent::Destroyed { id }) if id == idle.container.id)
    );
    assert!(pool.vanished(&idle.container.id), "forgotten");
    assert!(
        pool.vanished(&busy.container.id),
        "marked while its activation holds it"
    );
    assert_eq!(pool.stats().churn.vanished, 2);
    // a second pass counts nothing twice; the busy one goes when given back
    pool.reconcile(false, &|_| false).await;
    assert_eq!(pool.stats().churn.vanished, 2);
    pool.release(&busy, Fate::Destroy);
    assert_eq!(pool.stats().busy, 0);
    // a warm container for `a` is no longer offered
    let again = pool.acquire(&want("a")).await.unwrap();
    assert_eq!(again.start, Start::Cold);
}

/// The orphan pass destroys what the engine lists and the pool neither holds nor creates,
/// except what the replicated pool records (lent to a member that stepped down, or held apart
/// after a failover): before, a pass inside their window destroyed those too.
#[tokio::test]
async fn the_orphan_pass_spares_what_the_replicated_pool_records() {
    let (engine, pool) = pool(1024, Vec::new());
    let held = pool.acquire(&want("a")).await.unwrap();
    let listed = Container::sample;
    *engine.listed.lock().unwrap() = vec![
        held.container.clone(),
        listed("lent"),
        listed("quarantined"),
        listed("orphan"),
    ];
    let recorded = |id: &str| id == "lent" || id == "quarantined";
    let done = pool.reconcile(true, &recorded).await;
    assert_eq!(done.orphans, 1);
    assert_eq!(
        *engine.destroyed_ids.lock().unwrap(),
        vec!["orphan".to_string()]
    );
    // without the pass, nothing is destroyed
    pool.reconcile(false, &|_| false).await;
    assert_eq!(engine.destroyed_ids.lock().unwrap().len(), 1);
}

/// Issue 32, part 3: a warm container busy on the host that failed is held as busy — its
/// memory counted, offered to nothing — and an activation of its action that comes meanwhile
/// waits for it (the pool knows the action holds a container ~50 ms) instead of a cold start;
/// given back, it serves warm.
#[tokio::test]
async fn a_container_held_busy_after_a_failover_is_waited_for_then_served_warm() {
    let (engine, pool) = pool(256, Vec::new());
    let pool = Arc::new(pool);
    let key = want("a").key;
    pool.learn_held(&key, Duration::from_millis(50));
    let held = pool.adopt_busy(
        Container {
            id: "held".into(),
            name: "held".into(),
            address: "127.0.0.1:1".into(),
            state: crate::factory::ContainerState::Running,
            labels: Vec::new(),
            handle: String::new(),
        },
        ("shell:1", "img"),
        128,
        key,
    );
    let stats = pool.stats();
    assert_eq!((stats.busy, stats.used_mb), (1, 128), "counted, busy");
    let waiting = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.acquire(&want("a")).await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!waiting.is_finished(), "not offered while held");
    pool.release(&held, Fate::Reuse);
    let served = waiting.await.unwrap();
    assert_eq!(served.container.id, "held");
    assert_eq!(served.start, Start::Warm);
    assert_eq!(engine.created.load(Ordering::SeqCst), 0, "no cold start");
}
