//! The container pool, with OpenWhisk's semantics:
//!
//! 1. a warm container of the same namespace + action + revision with spare concurrency;
//! 2. else a prewarmed container of the same kind and memory;
//! 3. else create one if it fits in `user-memory`;
//! 4. else evict idle warm containers, least recently used first, until it fits;
//! 5. else wait until capacity frees up (the feed stops pulling meanwhile).
//!
//! Prewarm stem cells are kept topped up and idle warm containers are destroyed after a
//! timeout by [`Pool::maintain`]. Every change is published as a [`PoolEvent`].

mod churn;
mod event;
mod outage;
mod state;
mod timing;

pub use churn::Churn;
pub use event::PoolEvent;
pub use outage::{Outage, ENGINE_OUTAGE};

use crate::action::StemCell;
use crate::factory::{
    cluster_labels, CallError, Container, ContainerFactory, ContainerSpec, FactoryError,
    CLUSTER_LABEL,
};
use futures::StreamExt;
use state::{Entry, Phase, State};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, Notify};

/// Identifies the code a warm container has been initialized with (replicated as is in
/// cluster mode).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct WarmKey {
    pub namespace: String,
    pub action: String,
    pub revision: String,
}

/// What an activation needs from the pool.
#[derive(Debug, Clone)]
pub struct Want {
    pub key: WarmKey,
    pub kind: String,
    pub image: String,
    pub memory_mb: u32,
    pub concurrency: u32,
    /// Blackbox actions bring their own image and never use prewarms.
    pub blackbox: bool,
    /// Its `/run` waits until its start is committed (cluster mode, at-most-once): replicated
    /// with the container becoming busy (`ContainerRecord::journaled`).
    pub journaled: bool,
}

/// How an activation's container was found, as upstream's `initStart` annotation names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Start {
    /// Already initialized with the action's code.
    Warm,
    /// A stem cell of the action's kind, not yet initialized.
    Prewarm,
    /// Created for this activation.
    Cold,
}

impl Start {
    pub fn as_str(self) -> &'static str {
        match self {
            Start::Warm => "warm",
            Start::Prewarm => "prewarm",
            Start::Cold => "cold",
        }
    }
}

impl std::fmt::Display for Start {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A container allocated to one activation until [`Pool::release`].
#[derive(Debug, Clone)]
pub struct Allocation {
    pub container: Container,
    /// The container has not run `/init` for this action yet.
    pub needs_init: bool,
    /// How the container was found.
    pub start: Start,
    /// When it was handed out.
    pub taken: Instant,
}

/// A container the pool holds, as [`Pool::view`] shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Held {
    pub container: Container,
    pub kind: String,
    pub image: String,
    pub memory_mb: u32,
    pub warm: Option<WarmKey>,
    pub busy: bool,
}

/// What happens to a leased container afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    Reuse,
    /// It was never initialized (the activation was fenced before `/init`): back to prewarm,
    /// never handed out as warm.
    Uninitialized,
    /// It failed `/init`, timed out or died: never reuse it.
    Destroy,
}

/// Pool settings.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub user_memory_mb: u64,
    pub idle_timeout: Duration,
    /// Value of the `keepwarm.cluster` label on every container.
    pub cluster: String,
    /// Prefix of container names (`wsk0_` for invoker 0, as OpenWhisk names them).
    pub name_prefix: String,
    /// The epoch this pool serves (0 on a single host): part of every container name, with
    /// the process id and a per-process sequence, so names never repeat across claims or
    /// restarts.
    pub epoch: u64,
    pub stem_cells: Vec<StemCell>,
    pub port: u16,
}

#[cfg(any(test, feature = "testing"))]
impl PoolConfig {
    /// Settings for tests: 1 GiB, a 10-minute idle timeout, cluster `test`, invoker 0's
    /// names, no stem cells, port 8080, serving `epoch`.
    pub fn sample(epoch: u64) -> PoolConfig {
        PoolConfig {
            user_memory_mb: 1024,
            idle_timeout: Duration::from_secs(600),
            cluster: "test".into(),
            name_prefix: "wsk0_".into(),
            epoch,
            stem_cells: Vec::new(),
            port: 8080,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("action needs {need} MiB but user memory is {cap} MiB")]
    TooBig { need: u32, cap: u64 },
    #[error("cannot create a container: {0}")]
    Create(#[from] CallError),
}

/// What one [`Pool::reconcile`] changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Idle containers the engine no longer listed, forgotten.
    pub vanished: usize,
    /// Containers the pool did not know, destroyed.
    pub orphans: usize,
    /// Containers this list left out for the first time: the next reconcile, soon, decides.
    pub unlisted: usize,
}

/// Counts by state, for status and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct PoolStats {
    pub prewarm: usize,
    pub warm_idle: usize,
    pub busy: usize,
    /// Held containers the engine's last list left out (offered to nothing until listed).
    pub unlisted: usize,
    pub used_mb: u64,
    pub created: u64,
    pub churn: Churn,
}

/// One row of the pool by action: the containers that hold one action (`namespace/name`),
/// or prewarm containers of one kind and size, on one plugin.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ActionPool {
    pub action: String,
    pub plugin: String,
    pub kind: String,
    pub warm: usize,
    pub prewarm: usize,
    pub busy: usize,
}

/// The pool of one invoker.
#[derive(Debug)]
pub struct Pool {
    factory: Arc<dyn ContainerFactory>,
    config: PoolConfig,
    state: Mutex<State>,
    freed: Notify,
    events: broadcast::Sender<PoolEvent>,
}

/// How long an idle container is safe from eviction while an activation of another action
/// waits (see [`Pool::acquire`]).
pub const EVICTION_GRACE: Duration = Duration::from_millis(500);

/// Prewarm containers created at once by one top-up (a plugin runs at most its
/// `max-instances` calls at a time anyway).
const PREWARM_PARALLEL: usize = 8;

/// How long a destroy refused for a lapsed lease is asked again: longer than a lapse that
/// ends without an election lasts; past it the term is over and the next active host
/// reconciles the container.
const FENCED_DESTROY_RETRY: Duration = Duration::from_secs(5);

/// What [`Pool::acquire`] does next.
enum Step {
    Allocated(Allocation),
    /// Create a container after destroying these (evicted) ones.
    Create(Vec<Entry>),
    /// Wait (about this long) for a busy warm container of the action.
    AwaitWarm(Duration),
    /// Wait for capacity; the feed stops pulling meanwhile.
    AwaitCapacity,
}

/// Container sequence numbers, shared by every pool this process makes.
static SEQ: AtomicU64 = AtomicU64::new(0);

impl Pool {
    pub fn new(factory: Arc<dyn ContainerFactory>, config: PoolConfig) -> Pool {
        Pool {
            factory,
            config,
            state: Mutex::new(State::default()),
            freed: Notify::new(),
            events: broadcast::channel(4096).0,
        }
    }

    /// The epoch this pool serves (0 on a single host).
    pub fn epoch(&self) -> u64 {
        self.config.epoch
    }

    /// How the names of this host's containers start (`wsk<instance>_`).
    pub fn name_prefix(&self) -> &str {
        &self.config.name_prefix
    }

    /// Every pool change, from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<PoolEvent> {
        self.events.subscribe()
    }

    fn emit(&self, event: PoolEvent) {
        let _ = self.events.send(event);
    }

    pub fn stats(&self) -> PoolStats {
        self.state.lock().expect("pool lock").stats()
    }

    /// The containers by action and plugin, for status.
    pub fn by_action(&self) -> Vec<ActionPool> {
        self.state.lock().expect("pool lock").by_action()
    }

    /// Every container held, as the cluster replicates it: what a full re-sync proposes
    /// when pool events were lost.
    pub fn view(&self) -> Vec<Held> {
        let state = self.state.lock().expect("pool lock");
        state
            .entries()
            .map(|e| Held {
                container: e.container.clone(),
                kind: e.kind.clone(),
                image: e.image.clone(),
                memory_mb: e.memory_mb,
                warm: match &e.phase {
                    Phase::Warm(key) => Some(key.clone()),
                    Phase::Prewarm => None,
                },
                busy: e.in_flight > 0,
            })
            .collect()
    }

    /// Every container held, busy or idle.
    pub fn containers(&self) -> Vec<Container> {
        let state = self.state.lock().expect("pool lock");
        state
            .ids()
            .iter()
            .filter_map(|id| state.container(id))
            .collect()
    }

    /// Takes the addresses and handles of `attached` (the same containers, as a new plugin
    /// build attached them) for their next use.
    pub fn refresh(&self, attached: Vec<Container>) {
        let mut state = self.state.lock().expect("pool lock");
        for c in attached {
            state.refresh(c);
        }
    }

    /// The containers no activation is using now.
    pub fn idle_ids(&self) -> Vec<String> {
        let state = self.state.lock().expect("pool lock");
        state
            .ids()
            .into_iter()
            .filter(|id| state.is_idle(id))
            .collect()
    }

    /// Activations waiting for capacity; the feed pulls nothing while any wait.
    pub fn waiting(&self) -> usize {
        self.state.lock().expect("pool lock").waiting
    }

    fn spec(&self, kind: &str, image: &str, memory_mb: u32) -> ContainerSpec {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let safe_kind: String = kind
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        ContainerSpec {
            name: format!(
                "{}e{}_{}_{}_{}",
                self.config.name_prefix,
                self.config.epoch,
                std::process::id(),
                n,
                safe_kind
            ),
            image: image.to_owned(),
            memory_mb,
            cpu_shares: None,
            env: vec![("__OW_API_HOST".into(), String::new())],
            labels: vec![
                (CLUSTER_LABEL.into(), self.config.cluster.clone()),
                ("keepwarm.kind".into(), kind.to_owned()),
                ("keepwarm.memory".into(), memory_mb.to_string()),
            ],
            network: None,
            port: self.config.port,
        }
    }

    /// Finds or makes a container for `want`, waiting while the pool is full. When the pool
    /// is full, idle containers used within [`EVICTION_GRACE`] are evicted only once this
    /// activation has waited that long: after a burst (a failover's backlog) the containers
    /// just used are about to be reused, and evicting them for each other only churns.
    pub async fn acquire(&self, want: &Want) -> Result<Allocation, PoolError> {
        if u64::from(want.memory_mb) > self.config.user_memory_mb {
            return Err(PoolError::TooBig {
                need: want.memory_mb,
                cap: self.config.user_memory_mb,
            });
        }
        let mut waited = false;
        let asked = Instant::now();
        loop {
            let grace = EVICTION_GRACE.saturating_sub(asked.elapsed());
            let notified = self.freed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let next = {
                let mut st = self.state.lock().expect("pool lock");
                if waited {
                    st.waiting -= 1;
                    waited = false;
                }
                self.next_step(&mut st, want, asked, grace)
            };
            match next {
                Step::Allocated(allocation) => {
                    self.emit(PoolEvent::BecameBusy {
                        id: allocation.container.id.clone(),
                        journaled: want.journaled,
                    });
                    return Ok(allocation);
                }
                Step::Create(victims) => {
                    self.destroy_all(victims);
                    return self.create_for(want).await;
                }
                Step::AwaitWarm(wait) => {
                    let limit = (wait * 2).max(Duration::from_millis(5));
                    tokio::select! {
                        _ = notified => {}
                        _ = tokio::time::sleep(limit) => {}
                    }
                    let mut st = self.state.lock().expect("pool lock");
                    if let Some(n) = st.queued.get_mut(&want.key) {
                        *n = n.saturating_sub(1);
                    }
                }
                Step::AwaitCapacity => {
                    waited = true;
                    if grace.is_zero() {
                        notified.await;
                    } else {
                        tokio::select! {
                            _ = notified => {}
                            _ = tokio::time::sleep(grace) => {}
                        }
                    }
                }
            }
        }
    }

    /// One decision of [`Pool::acquire`], under the lock.
    fn next_step(&self, st: &mut State, want: &Want, asked: Instant, grace: Duration) -> Step {
        if let Some(allocation) = st.take_warm(want) {
            return Step::Allocated(allocation);
        }
        if let Some(allocation) = st.take_prewarm(want) {
            return Step::Allocated(allocation);
        }
        // Every warm container of this action is busy: wait for one when that is expected
        // to be quicker than a cold start (and never longer than one in all).
        let queued = st.queued.get(&want.key).copied().unwrap_or(0);
        let wait = st
            .timing
            .wait_for_warm(&want.key, st.busy_warm(&want.key), queued)
            .filter(|_| asked.elapsed() < st.timing.cold_start());
        if let Some(wait) = wait {
            *st.queued.entry(want.key.clone()).or_default() += 1;
            return Step::AwaitWarm(wait);
        }
        let mem = u64::from(want.memory_mb);
        let victims = st.evict_for(mem, self.config.user_memory_mb, grace);
        st.churn.destroyed_evicted += victims.len() as u64;
        if st.reserve(want.memory_mb, self.config.user_memory_mb) {
            Step::Create(victims)
        } else {
            st.waiting += 1;
            Step::AwaitCapacity
        }
    }

    /// Creates through the engine, remembering the name while the call runs (so a reconcile
    /// meanwhile does not take the new container for an orphan). An engine that is
    /// unavailable (a daemon restarting) is asked again, with backoff, for up to
    /// [`ENGINE_OUTAGE`] before the activation gets an error.
    async fn create(&self, spec: ContainerSpec) -> Result<Container, CallError> {
        let name = spec.name.clone();
        self.state
            .lock()
            .expect("pool lock")
            .creating
            .insert(name.clone());
        let mut outage = Outage::new(Duration::from_millis(100), Duration::from_secs(1));
        let result = loop {
            match self.factory.create(spec.clone()).await {
                Err(e)
                    if matches!(e.factory_error(), Some(FactoryError::Unavailable(_)))
                        && outage.may_wait() =>
                {
                    tracing::warn!(container = %name, "engine unavailable, creating again in {:?}: {e}", outage.pause());
                    outage.wait().await;
                }
                result => break result,
            }
        };
        self.state.lock().expect("pool lock").creating.remove(&name);
        result
    }

    /// Whether `container` may still answer: the engine says it runs, or the engine itself
    /// is unavailable (restarting) and cannot say. Asked when its proxy refuses a connection.
    pub async fn may_still_answer(&self, container: &Container) -> bool {
        match self.factory.attach(container.clone()).await {
            Ok(c) => c.state == crate::factory::ContainerState::Running,
            Err(e) => matches!(e.factory_error(), Some(FactoryError::Unavailable(_))),
        }
    }

    /// Reconciles the pool with what the engine lists under this pool's label. A container
    /// one list leaves out is offered to no activation and counts as [`Pool::vanished`] until
    /// a list has it again; left out of the next list too, it is forgotten when idle (an
    /// engine machine failed: its containers are gone) and marked vanished for good when
    /// busy. One list alone is not proof: an engine of several may miss one call, and its warm
    /// containers are worth a second look. With `destroy_orphans`,
    /// containers the pool neither holds nor is creating (e.g. created by a host that lost its
    /// lease while the call was in the engine, or left on an engine machine that came back)
    /// are destroyed — unless `recorded` says another part of the host still answers for
    /// them (a cluster's replicated pool: containers lent to the member that stepped down,
    /// or held apart after a failover). A list that fails changes nothing.
    pub async fn reconcile(
        &self,
        destroy_orphans: bool,
        recorded: &(dyn Fn(&str) -> bool + Sync),
    ) -> Reconciled {
        let labels = cluster_labels(&self.config.cluster);
        let held_before = self.state.lock().expect("pool lock").ids();
        let listed = match self.factory.list_containers(labels).await {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!("reconcile: cannot list containers: {e}");
                return Reconciled::default();
            }
        };
        let listed_ids: std::collections::HashSet<&str> =
            listed.iter().map(|c| c.id.as_str()).collect();
        let (vanished, orphans, unlisted) = {
            let mut st = self.state.lock().expect("pool lock");
            let missing: std::collections::HashSet<String> = held_before
                .into_iter()
                .filter(|id| !listed_ids.contains(id.as_str()) && st.holds(id))
                .collect();
            let (gone, unlisted): (Vec<String>, Vec<String>) = missing
                .iter()
                .cloned()
                .partition(|id| st.unlisted.contains(id));
            st.unlisted = missing;
            let (vanished, busy): (Vec<String>, Vec<String>) =
                gone.into_iter().partition(|id| st.is_idle(id));
            for id in &vanished {
                st.remove(id);
            }
            // a busy one is destroyed when its activation gives it back
            let marked = busy.iter().filter(|id| st.mark_vanished(id)).count();
            st.churn.vanished += (vanished.len() + marked) as u64;
            let orphans: Vec<String> = if destroy_orphans {
                listed
                    .iter()
                    .filter(|c| {
                        !st.holds(&c.id) && !st.creating.contains(&c.name) && !recorded(&c.id)
                    })
                    .map(|c| c.id.clone())
                    .collect()
            } else {
                Vec::new()
            };
            st.churn.destroyed_orphans += orphans.len() as u64;
            (vanished, orphans, unlisted.len())
        };
        for id in &vanished {
            tracing::warn!(container = %id, "reconcile: the engine no longer lists this idle container; forgetting it");
            self.emit(PoolEvent::Destroyed { id: id.clone() });
        }
        if !vanished.is_empty() {
            self.freed.notify_waiters();
        }
        for id in &orphans {
            tracing::info!(container = %id, "reconcile: destroying a container the pool does not know");
            if let Err(e) = self.factory.destroy(id).await {
                tracing::debug!(container = %id, "reconcile destroy: {e}");
            }
        }
        if unlisted > 0 {
            tracing::info!(
                unlisted,
                "reconcile: the engine's list left out containers the pool holds; asking again"
            );
        }
        Reconciled {
            vanished: vanished.len(),
            orphans: orphans.len(),
            unlisted,
        }
    }

    /// Whether the engine stopped listing container `id` (or the pool forgot it): a request
    /// not yet sent to it must go to another container.
    pub fn vanished(&self, id: &str) -> bool {
        let st = self.state.lock().expect("pool lock");
        st.has_vanished(id) || !st.holds(id)
    }

    async fn create_for(&self, want: &Want) -> Result<Allocation, PoolError> {
        if !want.blackbox {
            *self
                .state
                .lock()
                .expect("pool lock")
                .cold_starts
                .entry((want.kind.clone(), want.memory_mb))
                .or_default() += 1;
        }
        let spec = self.spec(&want.kind, &want.image, want.memory_mb);
        let started = Instant::now();
        match self.create(spec).await {
            Ok(container) => {
                let mut st = self.state.lock().expect("pool lock");
                st.timing.cold(started.elapsed());
                st.insert_created(Entry {
                    container: container.clone(),
                    kind: want.kind.clone(),
                    image: want.image.clone(),
                    memory_mb: want.memory_mb,
                    phase: Phase::Warm(want.key.clone()),
                    in_flight: 1,
                    concurrency: want.concurrency.max(1),
                    last_used: Instant::now(),
                });
                drop(st);
                self.emit(PoolEvent::Created {
                    container: container.clone(),
                    kind: want.kind.clone(),
                    image: want.image.clone(),
                    memory_mb: want.memory_mb,
                });
                self.emit(PoolEvent::BecameBusy {
                    id: container.id.clone(),
                    journaled: want.journaled,
                });
                Ok(Allocation {
                    container,
                    needs_init: true,
                    start: Start::Cold,
                    taken: Instant::now(),
                })
            }
            Err(e) => {
                self.state
                    .lock()
                    .expect("pool lock")
                    .unreserve(want.memory_mb);
                self.freed.notify_waiters();
                Err(PoolError::Create(e))
            }
        }
    }

    /// What the previous active host learned: `key`'s activations held a container `held`.
    pub fn learn_held(&self, key: &WarmKey, held: Duration) {
        self.state.lock().expect("pool lock").timing.held(key, held);
    }

    /// Takes over an idle container another host created (after a failover): warm for `key`,
    /// or a prewarm when `key` is `None`. It counts against user memory like any other.
    pub fn adopt(
        &self,
        container: Container,
        (kind, image): (&str, &str),
        memory_mb: u32,
        key: Option<WarmKey>,
        concurrency: u32,
    ) {
        let mut st = self.state.lock().expect("pool lock");
        st.adopt(Entry {
            container,
            kind: kind.to_owned(),
            image: image.to_owned(),
            memory_mb,
            phase: key.map_or(Phase::Prewarm, Phase::Warm),
            in_flight: 0,
            concurrency: concurrency.max(1),
            last_used: Instant::now(),
        });
        drop(st);
        self.freed.notify_waiters();
    }

    /// Takes over a warm container that was busy on the host that failed (its activation's
    /// outcome unknown): held as busy — offered to nothing, counted against user memory and
    /// among `key`'s busy containers, so activations of `key` may wait for it as for any
    /// busy one — until the caller gives it back with [`Pool::release`] (its activation
    /// ended: reused; it did not: destroyed).
    pub fn adopt_busy(
        &self,
        container: Container,
        (kind, image): (&str, &str),
        memory_mb: u32,
        key: WarmKey,
    ) -> Allocation {
        let allocation = Allocation {
            container: container.clone(),
            needs_init: false,
            start: Start::Warm,
            taken: Instant::now(),
        };
        self.state.lock().expect("pool lock").adopt(Entry {
            container,
            kind: kind.to_owned(),
            image: image.to_owned(),
            memory_mb,
            phase: Phase::Warm(key),
            in_flight: 1,
            concurrency: 1,
            last_used: Instant::now(),
        });
        allocation
    }

    /// The container's `/init` succeeded: from now on it is warm for `key`, here and in the
    /// replicated state (a takeover never adopts an uninitialized container as warm).
    pub fn initialized(&self, allocation: &Allocation, key: &WarmKey) {
        self.emit(PoolEvent::Initialized {
            id: allocation.container.id.clone(),
            key: key.clone(),
        });
    }

    /// Gives a leased container back.
    pub fn release(&self, allocation: &Allocation, fate: Fate) {
        let gone = {
            let mut st = self.state.lock().expect("pool lock");
            match fate {
                Fate::Uninitialized => {
                    if st.back_to_prewarm(&allocation.container.id) {
                        self.emit(PoolEvent::BecameIdle {
                            id: allocation.container.id.clone(),
                        });
                    }
                    None
                }
                Fate::Reuse => {
                    if let Some(key) = st.warm_key(&allocation.container.id) {
                        if allocation.start == Start::Warm {
                            st.timing.held(&key, allocation.taken.elapsed());
                        }
                    }
                    if st.release(&allocation.container.id) {
                        self.emit(PoolEvent::BecameIdle {
                            id: allocation.container.id.clone(),
                        });
                    }
                    None
                }
                Fate::Destroy => {
                    st.churn.destroyed_failed += 1;
                    st.remove(&allocation.container.id)
                }
            }
        };
        if let Some(entry) = gone {
            self.destroy_all(vec![entry]);
        }
        self.freed.notify_waiters();
    }

    fn destroy_all(&self, entries: Vec<Entry>) {
        for entry in entries {
            let factory = self.factory.clone();
            let events = self.events.clone();
            let id = entry.container.id.clone();
            tokio::spawn(async move {
                // A lapse of the lease only pauses the destroy: asked again while the lease
                // may still come back in this term (a container that failed is never kept).
                let mut answer = factory.destroy(&id).await;
                let until = Instant::now() + FENCED_DESTROY_RETRY;
                while matches!(answer, Err(CallError::Fenced { .. })) && Instant::now() < until {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    answer = factory.destroy(&id).await;
                }
                match answer {
                    // The replicated record stays: the next active host reconciles it.
                    Err(e @ CallError::Fenced { .. }) => {
                        tracing::info!(container = %id, "not destroyed: {e}");
                        return;
                    }
                    Err(e) => tracing::warn!(container = %id, "destroy failed: {e}"),
                    Ok(()) => {}
                }
                let _ = events.send(PoolEvent::Destroyed { id });
            });
        }
    }

    /// Tops prewarm stem cells up and destroys warm containers idle past the timeout.
    /// Returns how many containers it created.
    pub async fn maintain(&self) -> usize {
        let expired = {
            let mut st = self.state.lock().expect("pool lock");
            let expired = st.take_idle_older_than(self.config.idle_timeout);
            st.churn.destroyed_idle += expired.len() as u64;
            expired
        };
        self.destroy_all(expired);
        self.freed.notify_waiters();

        let mut created = 0;
        for cell in self.config.stem_cells.clone() {
            let target = self.prewarm_target(&cell) as usize;
            let missing = {
                let st = self.state.lock().expect("pool lock");
                let have = st.prewarm_count(&cell.kind, cell.memory_mb)
                    + st.prewarm_pending(&cell.kind, cell.memory_mb);
                target.saturating_sub(have)
            };
            // Created side by side, as upstream's pool starts a container proxy per missing
            // prewarm; one failure stops the ones not yet begun (an engine that is down is
            // not asked `missing` times per tick).
            let failed = std::sync::atomic::AtomicBool::new(false);
            created += futures::stream::iter(0..missing)
                .map(|_| self.prewarm(&cell, target, &failed))
                .buffer_unordered(PREWARM_PARALLEL)
                .filter(|made| std::future::ready(*made))
                .count()
                .await;
        }
        created
    }

    /// Creates one prewarm container of `cell` if it is still wanted and fits; whether it did.
    async fn prewarm(
        &self,
        cell: &StemCell,
        target: usize,
        failed: &std::sync::atomic::AtomicBool,
    ) -> bool {
        if failed.load(Ordering::Relaxed) {
            return false;
        }
        let key = (cell.kind.clone(), cell.memory_mb);
        {
            let mut st = self.state.lock().expect("pool lock");
            let have = st.prewarm_count(&cell.kind, cell.memory_mb)
                + st.prewarm_pending(&cell.kind, cell.memory_mb);
            // Activations waiting for memory come before prewarms.
            if have >= target
                || st.waiting > 0
                || !st.reserve(cell.memory_mb, self.config.user_memory_mb)
            {
                return false;
            }
            *st.pending_prewarm.entry(key.clone()).or_default() += 1;
        }
        let spec = self.spec(&cell.kind, &cell.image, cell.memory_mb);
        let result = self.create(spec).await;
        let mut st = self.state.lock().expect("pool lock");
        if let Some(n) = st.pending_prewarm.get_mut(&key) {
            *n = n.saturating_sub(1);
        }
        match result {
            Ok(container) => {
                st.insert_created(Entry {
                    container: container.clone(),
                    kind: cell.kind.clone(),
                    image: cell.image.clone(),
                    memory_mb: cell.memory_mb,
                    phase: Phase::Prewarm,
                    in_flight: 0,
                    concurrency: 1,
                    last_used: Instant::now(),
                });
                drop(st);
                self.emit(PoolEvent::Created {
                    container,
                    kind: cell.kind.clone(),
                    image: cell.image.clone(),
                    memory_mb: cell.memory_mb,
                });
                true
            }
            Err(e) => {
                st.unreserve(cell.memory_mb);
                drop(st);
                failed.store(true, Ordering::Relaxed);
                tracing::warn!(kind = %cell.kind, "prewarm failed: {e}");
                false
            }
        }
    }

    /// How many prewarm containers a stem cell wants now. Fixed cells want their count;
    /// reactive ones grow with recent cold starts and shrink as prewarms expire unused.
    fn prewarm_target(&self, cell: &StemCell) -> u32 {
        let Some(r) = &cell.reactive else {
            return cell.count;
        };
        let key = (cell.kind.clone(), cell.memory_mb);
        let mut st = self.state.lock().expect("pool lock");
        let cold = st.cold_starts.remove(&key).unwrap_or(0);
        let current = *st.targets.entry(key.clone()).or_insert(cell.count);
        let mut expired = Vec::new();
        let target = if cold >= r.threshold {
            (current + r.increment * (cold / r.threshold)).min(r.max)
        } else {
            let have = st.prewarm_count(&cell.kind, cell.memory_mb) as u32;
            let surplus = have.saturating_sub(r.min) as usize;
            expired = st.take_expired_prewarm(&cell.kind, cell.memory_mb, r.ttl, surplus);
            st.churn.destroyed_prewarm_expired += expired.len() as u64;
            if expired.is_empty() {
                current
            } else {
                (have - expired.len() as u32).max(r.min)
            }
        };
        st.targets.insert(key, target);
        drop(st);
        if !expired.is_empty() {
            tracing::debug!(kind = %cell.kind, expired = expired.len(), target, "prewarm containers expired");
            self.destroy_all(expired);
        }
        target
    }

    /// Destroys every container of the pool (on shutdown) and waits for the engine.
    pub async fn destroy_everything(&self) {
        let entries = self.state.lock().expect("pool lock").drain();
        let calls = entries
            .iter()
            .map(|e| self.factory.destroy(&e.container.id));
        for r in futures::future::join_all(calls).await {
            if let Err(e) = r {
                tracing::warn!("destroy on shutdown failed: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests;
