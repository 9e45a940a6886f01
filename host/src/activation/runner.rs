//! Runs one activation: resolve the action, take a container from the pool, `/init` it when
//! new, `/run`, collect logs up to the sentinel, and build the record and acknowledgements.

use super::ack::{Acknowledgement, InvokerInstanceId};
use super::arguments::{self, Arguments};
use super::logs;
use super::message::{ActivationMessage, TransactionId, Unreadable};
use super::proxy::{ProxyClient, ProxyError};
use super::record::{ActivationResponse, Annotation, StatusCode, WhiskActivation};
use crate::action::{
    Action, ActionError, ActionStore, ParameterEncryption, Runtimes, SystemLimits,
};
use crate::factory::{CallError, ContainerFactory};
use crate::pool::{Allocation, Fate, Outage, Pool, PoolError, Want, WarmKey};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

pub use super::logs::SENTINEL;

/// What running an activation produced: its last acknowledgement and its record.
#[derive(Debug)]
pub struct Outcome {
    pub last: Acknowledgement,
    pub record: WhiskActivation,
}

/// Where a blocking activation's `ResultMessage` goes as soon as `/run` answered, before its
/// logs are read (the caller publishes it, and `Outcome::last` after it).
pub type OnResult<'a> = &'a (dyn Fn(Acknowledgement) + Send + Sync);

/// A span of time in epoch milliseconds, as upstream's `containerpool.Interval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Interval {
    start: i64,
    end: i64,
}

impl Interval {
    /// Upstream's `Interval.zero`: starting now, lasting nothing (an activation that never
    /// reached a container's `/init` or `/run`).
    fn zero() -> Interval {
        let now = now_ms();
        Interval {
            start: now,
            end: now,
        }
    }

    fn since(start: i64) -> Interval {
        Interval {
            start,
            end: now_ms(),
        }
    }

    fn duration(&self) -> i64 {
        self.end - self.start
    }
}

/// What `/init` (when needed) and `/run` gave.
struct Executed {
    response: ActivationResponse,
    init: Option<Interval>,
    /// `None` when `/init` failed and `/run` was never sent.
    run: Option<Interval>,
    fate: Fate,
}

/// What is known about an activation, for its record: upstream's `constructWhiskActivation`
/// arguments.
struct Ran<'a> {
    msg: &'a ActivationMessage,
    action: Option<&'a Action>,
    allocation: Option<&'a Allocation>,
    init: Option<Interval>,
    /// `start` to `end` of the record: `/run`'s interval stretched back by the init time.
    total: Interval,
    /// The init or run took the action's whole time limit.
    timed_out: bool,
}

impl<'a> Ran<'a> {
    /// An activation that ended before a container ran anything of it.
    fn unplaced(msg: &'a ActivationMessage, action: Option<&'a Action>) -> Ran<'a> {
        Ran {
            msg,
            action,
            allocation: None,
            init: None,
            total: Interval::zero(),
            timed_out: false,
        }
    }

    /// As upstream's `initializeAndRun`: `start = runStart − initTime`, `end = runEnd`; after
    /// a failed `/init`, its interval.
    fn executed(
        msg: &'a ActivationMessage,
        action: &'a Action,
        allocation: &'a Allocation,
        executed: &Executed,
    ) -> Ran<'a> {
        let timeout = action.limits.timeout as i64;
        let (total, timed_out) = match (executed.init, executed.run) {
            (init, Some(run)) => (
                Interval {
                    start: run.start - init.map_or(0, |i| i.duration()),
                    end: run.end,
                },
                run.duration() >= timeout,
            ),
            (Some(init), None) => (init, init.duration() >= timeout),
            (None, None) => (Interval::zero(), false),
        };
        Ran {
            msg,
            action: Some(action),
            allocation: Some(allocation),
            init: executed.init,
            total,
            timed_out,
        }
    }
}

/// Everything an activation needs.
#[derive(Debug)]
pub struct Runner {
    pub store: Arc<dyn ActionStore>,
    pub runtimes: Runtimes,
    /// The system's limit ranges, narrowed per namespace by the message.
    pub limits: SystemLimits,
    /// Keys for encrypted parameters.
    pub encryption: ParameterEncryption,
    pub pool: Arc<Pool>,
    /// The engine the pool's containers run on (the lease-fenced one in cluster mode), for
    /// their logs.
    pub engine: Arc<dyn ContainerFactory>,
    pub proxy: ProxyClient,
    pub instance: InvokerInstanceId,
    /// Upper bound on `/init`.
    pub init_timeout: Duration,
    /// Read logs into records (`false`: the engine's log driver keeps them).
    pub collect_logs: bool,
    /// Whether this host still holds its lease (always open on a single host). Checked right
    /// before a container is touched; a fenced activation is left for the next active host.
    pub may_run: Gate,
    /// What an activation that may have run on a host that failed gets.
    pub delivery: Delivery,
    /// In cluster mode: records (replicated, committed) that an activation is about to be
    /// sent to a container, before `/run` is; false when it could not be (the term ended).
    pub journal: Option<Journal>,
}

/// The delivery contract after a failover (`[invoker] delivery`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Delivery {
    /// Upstream's: an activation that may have run is never run again; the next active host
    /// answers it at once with a whisk error naming the failover. Actions annotated
    /// `idempotent` run again.
    #[default]
    AtMostOnce,
    /// Every activation that may have run is run again (one result reaches the controller).
    AtLeastOnce,
}

/// Where the start of an activation is recorded before its `/run` (see [`Runner::journal`]).
#[derive(Clone)]
#[allow(clippy::type_complexity)]
pub struct Journal(
    /// `(activation id, container id, wait for the commit)`.
    pub Arc<dyn Fn(String, String, bool) -> futures::future::BoxFuture<'static, bool> + Send + Sync>,
);

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Journal")
    }
}

/// The annotation that lets an action run again after a failover under the default
/// at-most-once contract (`wsk action update A -a idempotent true`).
pub const IDEMPOTENT: &str = "idempotent";

/// The error a whisk-error answer carries for an activation the failed host may have run.
pub const FAILED_OVER: &str = "The invoker host running this activation failed and another took over; the activation may have run there, so it was not run again (at-most-once).";

pub use crate::fence::Gate;

use crate::clock::now_ms;

/// Where an activation's placement ended.
enum Placed {
    Ran(Box<(Allocation, Executed)>),
    /// No container could run it: the record's response.
    Failed(ActivationResponse),
    /// The lease lapsed before anything reached a container.
    Fenced,
}

impl Runner {
    /// The action the message names, as upstream's `handleActivationMessage` resolves it:
    /// a revision mismatch is asked again for the latest document; the limits must fit the
    /// namespace; the action must be one this invoker can run.
    async fn resolve(&self, msg: &ActivationMessage) -> Result<(Action, Want), ActionError> {
        let action = match self
            .store
            .resolve(&msg.action, msg.revision.as_deref())
            .await
        {
            Err(ActionError::Revision { name, have, want }) => {
                tracing::info!(activation = %msg.activation_id, "action {name} is at revision {have}, not {want}: using the latest");
                self.store.resolve(&msg.action, None).await?
            }
            other => other?,
        };
        self.limits
            .check(&action.limits, &msg.user.limits)
            .map_err(|message| ActionError::Limits {
                name: action.qualified(),
                message,
            })?;
        let want = self.want(msg, &action)?;
        Ok((action, want))
    }

    fn want(&self, msg: &ActivationMessage, action: &Action) -> Result<Want, ActionError> {
        let incompatible = |reason: String| ActionError::Incompatible {
            name: action.qualified(),
            reason,
        };
        let image = if action.is_sequence() {
            // upstream: "non-executable action reached the invoker"
            return Err(ActionError::Fetch {
                name: action.qualified(),
                reason: "a sequence is not executable by an invoker".into(),
            });
        } else if action.is_blackbox() {
            let image = action.exec.image.clone().unwrap_or_default();
            if image.is_empty() || !self.runtimes.allows_blackbox(&image) {
                return Err(incompatible(format!(
                    "blackbox image `{image}` is not in the runtimes manifest's blackboxes"
                )));
            }
            image
        } else {
            self.runtimes
                .image(&action.exec.kind)
                .ok_or_else(|| {
                    incompatible(format!(
                        "kind `{}` is not in the runtimes manifest",
                        action.exec.kind
                    ))
                })?
                .to_owned()
        };
        Ok(Want {
            key: WarmKey {
                namespace: msg.user.namespace.name.clone(),
                action: msg.action.qualified(),
                revision: msg
                    .revision
                    .clone()
                    .unwrap_or_else(|| action.version.clone()),
            },
            kind: action.exec.kind.clone(),
            image,
            memory_mb: action.limits.memory,
            concurrency: action.limits.concurrency,
            blackbox: action.is_blackbox(),
            journaled: self.journal.is_some() && !self.runs_again(action),
        })
    }

    /// The epoch this runner's pool works under (0 on a single host).
    pub fn epoch(&self) -> u64 {
        self.pool.epoch()
    }

    fn fenced(&self) -> bool {
        !self.may_run.open()
    }

    /// Whether an activation of `action` that may have run already is run again.
    fn runs_again(&self, action: &Action) -> bool {
        self.delivery == Delivery::AtLeastOnce || action.annotation_is_truthy(IDEMPOTENT, false)
    }

    /// Runs `msg` to completion: every problem becomes the right error record. `None` only
    /// when this host lost its lease before anything of it reached a container.
    /// `may_have_run`: a host that failed sent it to a container (the delivery contract
    /// decides whether it runs again).
    pub async fn run(
        &self,
        msg: &ActivationMessage,
        may_have_run: bool,
        on_result: OnResult<'_>,
    ) -> Option<Outcome> {
        if self.fenced() {
            return None;
        }
        let (action, want) = match self.resolve(msg).await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(activation = %msg.activation_id, "{e}");
                return Some(self.fallback(msg, ActivationResponse::from(&e)));
            }
        };
        if may_have_run && !self.runs_again(&action) {
            tracing::warn!(activation = %msg.activation_id, "it may have run on the host that failed: answered, not run again (at-most-once)");
            let mut outcome = self.finish(
                Ran::unplaced(msg, Some(&action)),
                ActivationResponse::whisk_error(FAILED_OVER),
            );
            if !msg.blocking {
                outcome.last = self.completion(msg, &outcome.record);
            }
            return Some(outcome);
        }
        let args = match arguments::arguments(msg, &action, &self.encryption) {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(activation = %msg.activation_id, "{e}");
                return Some(self.fallback(
                    msg,
                    ActivationResponse::whisk_error(format!(
                        "The action's arguments cannot be decrypted: {e}"
                    )),
                ));
            }
        };
        let clock = std::time::Instant::now();
        let placing = now_ms();
        let (allocation, executed) = match self.place(msg, &action, &args, &want).await {
            Placed::Ran(ran) => *ran,
            Placed::Failed(response) => {
                return Some(self.finish(Ran::unplaced(msg, Some(&action)), response))
            }
            Placed::Fenced => return None,
        };
        let acquired_ms = executed
            .init
            .or(executed.run)
            .map_or(0, |i| i.start - placing);
        let ran = Ran::executed(msg, &action, &allocation, &executed);
        let developer_error = executed.response.status_code == StatusCode::DeveloperError;
        // Built once: the acknowledgements carry it, the store gets it with only the logs
        // added (upstream's `activationWithLogs`).
        let mut record = self.record(&ran, executed.response);
        // upstream's `logsToBeCollected`: the host reads the logs (not the engine's log
        // driver) and the action keeps any; then the acknowledgement is split in two
        let split = self.collect_logs && action.limits.logs > 0;
        if msg.blocking && split {
            on_result(Acknowledgement::Result {
                transid: msg.transid.clone(),
                activation: record.clone(),
            });
        }
        let ran_at = clock.elapsed();
        if split {
            record.logs = if action.limits.concurrency <= 1 {
                self.collect_logs(&allocation, &action, ran.total.start, developer_error)
                    .instrument(tracing::info_span!("logs"))
                    .await
            } else {
                vec!["Logs are not collected for actions with concurrency > 1.".into()]
            };
        }
        self.pool.release(&allocation, executed.fate);
        tracing::debug!(
            activation = %msg.activation_id,
            start = %allocation.start,
            acquire_ms = acquired_ms,
            init_ms = executed.init.map_or(0, |i| i.duration()),
            run_ms = executed.run.map_or(0, |i| i.duration()),
            logs_us = clock.elapsed().saturating_sub(ran_at).as_micros() as u64,
            total_ms = clock.elapsed().as_millis() as u64,
            "activation ran"
        );
        let mut outcome = self.combined(&msg.transid, record);
        // as upstream's `ContainerProxy`: only a blocking activation whose logs are not read
        // here gets its result and the freed slot in one message; the result of a
        // non-blocking one goes only to the activation store
        if split || !msg.blocking {
            outcome.last = self.completion(msg, &outcome.record);
        }
        Some(outcome)
    }

    /// A `CompletionMessage` for `record`.
    fn completion(&self, msg: &ActivationMessage, record: &WhiskActivation) -> Acknowledgement {
        Acknowledgement::Completion {
            transid: msg.transid.clone(),
            activation_id: msg.activation_id.clone(),
            is_system_error: record.response.is_whisk_error(),
            instance: self.instance.clone(),
        }
    }

    /// Takes a container and runs the activation in it; when the engine lost the container
    /// or another host had initialized it (nothing reached the action), destroys it and
    /// places the activation again, up to [`PLACEMENTS`] times.
    async fn place(
        &self,
        msg: &ActivationMessage,
        action: &Action,
        args: &Arguments,
        want: &Want,
    ) -> Placed {
        let mut placements = 0;
        loop {
            let allocation = match self
                .pool
                .acquire(want)
                .instrument(
                    tracing::info_span!("acquire", kind = %want.kind, memory_mb = want.memory_mb),
                )
                .await
            {
                Ok(l) => l,
                Err(PoolError::Create(CallError::Fenced { .. })) => return Placed::Fenced,
                Err(e) => {
                    tracing::warn!(activation = %msg.activation_id, "{e}");
                    return Placed::Failed(ActivationResponse::whisk_error(format!(
                        "Failed to run container with image '{}': {e}",
                        want.image
                    )));
                }
            };
            if self.fenced() {
                self.pool.release(&allocation, untouched(&allocation));
                return Placed::Fenced;
            }
            placements += 1;
            match self
                .execute(msg, action, args, &want.key, &allocation)
                .await
            {
                Ok(executed) => return Placed::Ran(Box::new((allocation, executed))),
                Err(Interrupted::Fenced { initialized }) => {
                    let fate = if initialized {
                        Fate::Reuse
                    } else {
                        untouched(&allocation)
                    };
                    self.pool.release(&allocation, fate);
                    return Placed::Fenced;
                }
                Err(elsewhere) => {
                    // nothing reached the action: the container goes, the activation is
                    // placed again
                    let (happened, in_a_row) = elsewhere.misplaced();
                    tracing::warn!(activation = %msg.activation_id, container = %allocation.container.id,
                        "{happened}; destroying it and placing the activation again ({placements} of {PLACEMENTS})");
                    self.pool.release(&allocation, Fate::Destroy);
                    if placements >= PLACEMENTS {
                        return Placed::Failed(ActivationResponse::whisk_error(format!(
                            "The action could not be placed: {PLACEMENTS} containers in a row {in_a_row}"
                        )));
                    }
                }
            }
        }
    }

    /// `/init` when needed, then `/run`, each timed as upstream's `Container.callContainer`
    /// times it. Returns what they gave, or why nothing reached the action.
    ///
    /// Once a request may have reached the container (it was sent: a timeout, a broken
    /// connection, a too-large answer) its outcome stands, whatever the lease does meanwhile:
    /// the activation is never sent again, and a container that failed is destroyed.
    async fn execute(
        &self,
        msg: &ActivationMessage,
        action: &Action,
        args: &Arguments,
        key: &WarmKey,
        allocation: &Allocation,
    ) -> Result<Executed, Interrupted> {
        let init = if allocation.needs_init {
            match self.initialize(msg, action, args, key, allocation).await? {
                Ok(interval) => Some(interval),
                Err(failed) => return Ok(failed),
            }
        } else {
            None
        };
        // Before anything is sent: the start is replicated, so a host taking over knows it
        // may have run. Where it would run again anyway, the start is only queued (not waited
        // for): the next host still looks for its completion before running it again.
        if let Some(journal) = &self.journal {
            let wait = !self.runs_again(action);
            let container = allocation.container.id.clone();
            if !(journal.0)(msg.activation_id.clone(), container, wait).await {
                return Err(Interrupted::Fenced { initialized: true });
            }
        }
        let timeout = action.limits.timeout;
        let env = arguments::environment(msg, action, now_ms() + timeout as i64);
        let body = arguments::run_body(args, &env);
        let limit = Duration::from_millis(timeout);
        let mut outage = Outage::new(Duration::from_millis(50), Duration::from_millis(500));
        let (started, answer) = loop {
            let started = now_ms();
            match self
                .proxy
                .post(&allocation.container.address, "/run", &body, limit)
                .instrument(tracing::info_span!("run", container = %allocation.container.id))
                .await
            {
                // Nothing was sent. A Docker daemon restarting takes its port proxies with it
                // for a few seconds while the container keeps running: ask again while the
                // engine says it runs or is itself unavailable, for up to pool::ENGINE_OUTAGE.
                Err(ProxyError::Connect { .. })
                    if outage.may_wait()
                        && !self.pool.vanished(&allocation.container.id)
                        && self.pool.may_still_answer(&allocation.container).await =>
                {
                    tracing::warn!(activation = %msg.activation_id, container = %allocation.container.id,
                        "the action proxy refused the connection; the container still runs: asking again in {:?}", outage.pause());
                    outage.wait().await;
                }
                answer => break (started, answer),
            }
        };
        let run = Interval::since(started);
        let (response, fate) = match answer {
            // upstream's `Container.run`: a run that took the whole limit timed out
            _ if run.duration() >= timeout as i64 => (
                proxy_failure(&timed_out(limit), action, "run"),
                Fate::Destroy,
            ),
            Ok(r) => {
                let response = ActivationResponse::from_run(r.status, &r.body);
                let fate = if r.status == 200 {
                    Fate::Reuse
                } else {
                    Fate::Destroy
                };
                (response, fate)
            }
            // Nothing was sent: the lease lapsed first.
            Err(ProxyError::Fenced) => return Err(Interrupted::Fenced { initialized: true }),
            Err(ProxyError::Connect { .. }) if self.fenced() => {
                return Err(Interrupted::Fenced { initialized: true })
            }
            // Nothing was sent, and the engine no longer lists the container (its machine
            // failed): the activation goes to another container.
            Err(ProxyError::Connect { .. }) if self.pool.vanished(&allocation.container.id) => {
                return Err(Interrupted::Unsent)
            }
            Err(e) => (proxy_failure(&e, action, "run"), Fate::Destroy),
        };
        Ok(Executed {
            response,
            init,
            run: Some(run),
            fate,
        })
    }

    /// `/init`: its interval, or the outcome of a failed one (`Ok(Err(..))`), or why it was
    /// not sent.
    async fn initialize(
        &self,
        msg: &ActivationMessage,
        action: &Action,
        args: &Arguments,
        key: &WarmKey,
        allocation: &Allocation,
    ) -> Result<Result<Interval, Executed>, Interrupted> {
        let started = now_ms();
        let env = arguments::environment(msg, action, started + action.limits.timeout as i64);
        let body = arguments::init_body(action, args, &env);
        let limit = self
            .init_timeout
            .min(Duration::from_millis(action.limits.timeout));
        let answer = self
            .proxy
            .init(&allocation.container.address, &body, limit)
            .instrument(tracing::info_span!("init", container = %allocation.container.id))
            .await;
        let interval = Interval::since(started);
        let failed = |response| {
            Ok(Err(Executed {
                response,
                init: Some(interval),
                run: None,
                fate: Fate::Destroy,
            }))
        };
        match answer {
            Ok(r) if r.status == 200 => {
                self.pool.initialized(allocation, key);
                Ok(Ok(interval))
            }
            // The runtime was initialized already, though the pool held the container as
            // a fresh prewarm: a previous active host took it just before it died, before
            // that reached the replicated pool. Not this action's fault: elsewhere.
            Ok(r) if r.status == 403 && initialized_before(&r.body) => {
                Err(Interrupted::InitializedElsewhere)
            }
            Ok(r) => failed(ActivationResponse::from_failed_init(&r.body)),
            Err(ProxyError::Fenced) => Err(Interrupted::Fenced { initialized: false }),
            Err(ProxyError::Connect { .. }) if self.fenced() => {
                Err(Interrupted::Fenced { initialized: false })
            }
            Err(ProxyError::Connect { .. }) if self.pool.vanished(&allocation.container.id) => {
                Err(Interrupted::Unsent)
            }
            // `/init` may have reached the runtime while the lease lapsed (the next active
            // host may have destroyed the container as busy): the container is not offered
            // again; no `/run` was sent, so the activation is placed again.
            Err(_) if self.fenced() => Err(Interrupted::InitBrokeOff),
            Err(e) => failed(proxy_failure(&e, action, "initialization")),
        }
    }

    /// The activation's logs as upstream's log store writes them (see [`super::logs`]):
    /// up to both sentinels (not waited for after a developer error or for a blackbox
    /// image, as upstream), within the action's log limit.
    async fn collect_logs(
        &self,
        allocation: &Allocation,
        action: &Action,
        start_ms: i64,
        developer_error: bool,
    ) -> Vec<String> {
        let limit_bytes = u64::from(action.limits.logs) * 1024 * 1024;
        let wait_for_sentinels = !developer_error && !action.is_blackbox();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        let since = u64::try_from(start_ms.saturating_sub(5)).unwrap_or(0);
        let max = u32::try_from(limit_bytes.saturating_add(64 * 1024)).unwrap_or(u32::MAX);
        let mut poll = Duration::from_millis(1);
        let mut polls = 0u32;
        loop {
            let text = match self.engine.logs(&allocation.container.id, since, max).await {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(container = %allocation.container.id, "reading logs: {e}");
                    return vec![logs::notice(now_ms(), logs::COLLECTING_FAILED)];
                }
            };
            let sentinels = text.matches(SENTINEL).count();
            polls += 1;
            let complete = sentinels >= 2 || !wait_for_sentinels;
            if complete || tokio::time::Instant::now() >= deadline {
                tracing::trace!(container = %allocation.container.id, polls, sentinels, "logs read");
                return logs::Read {
                    text: &text,
                    limit_bytes,
                    complete,
                    developer_error,
                    now_ms: now_ms(),
                }
                .lines();
            }
            // the sentinels usually follow within milliseconds; back off so that many
            // activations waiting for their logs do not keep the engine (and a core) busy
            tokio::time::sleep(poll).await;
            poll = (poll * 2).min(Duration::from_millis(20));
        }
    }

    /// The record as upstream's `ContainerProxy.constructWhiskActivation` builds it, with
    /// keepwarm's own `keepwarm` annotation last. Logs are added later, to the same record.
    fn record(&self, ran: &Ran<'_>, response: ActivationResponse) -> WhiskActivation {
        let msg = ran.msg;
        let annotation = |key: &str, value: Value| Annotation {
            key: key.into(),
            value,
        };
        let mut annotations = Vec::with_capacity(9);
        if let Some(a) = ran.action {
            annotations.push(annotation(
                "limits",
                json!({
                    "timeout": a.limits.timeout, "memory": a.limits.memory,
                    "logs": a.limits.logs, "concurrency": a.limits.concurrency,
                }),
            ));
        }
        annotations.push(annotation("path", json!(msg.action.qualified())));
        if let Some(a) = ran.action {
            annotations.push(annotation("kind", json!(a.exec.kind)));
        }
        annotations.push(annotation("timeout", json!(ran.timed_out)));
        if msg.caused_by_sequence() {
            annotations.push(annotation("causedBy", json!("sequence")));
        }
        if let Some(init) = ran.init {
            annotations.push(annotation("initTime", json!(init.duration())));
        }
        // from the controller's start of the transaction to the first call to the container:
        // queueing, acquiring a container and creating one all count
        let first_call = ran.init.map_or(ran.total.start, |i| i.start);
        let wait_ms = first_call.saturating_sub(msg.transid.start_ms).max(0);
        annotations.push(annotation("waitTime", json!(wait_ms)));
        if let Some(binding) = &msg.action.binding {
            annotations.push(annotation("binding", json!(binding)));
        }
        if let Some(l) = ran.allocation {
            // keepwarm's own: where the activation ran (`warm`, `prewarm` or `cold`), and
            // under which claim (0 on a single host).
            annotations.push(annotation(
                "keepwarm",
                json!({
                    "start": l.start,
                    "container": l.container.id,
                    "address": l.container.address,
                    "epoch": self.pool.epoch(),
                }),
            ));
        }
        WhiskActivation {
            namespace: msg.user.namespace.name.clone(),
            name: msg.action.name.clone(),
            subject: msg.user.subject.clone(),
            activation_id: msg.activation_id.clone(),
            start: ran.total.start,
            end: ran.total.end,
            cause: msg.cause.clone(),
            response,
            logs: Vec::new(),
            version: ran
                .action
                .map(|a| a.version.clone())
                .unwrap_or_else(|| "0.0.1".into()),
            publish: false,
            annotations,
            duration: Some(ran.total.duration()),
        }
    }

    /// The outcome of an activation whose run failed inside keepwarm itself (a panic): a
    /// whisk error, so the controller hears of it and the slot is freed.
    pub fn internal_error(&self, msg: &ActivationMessage, reason: &str) -> Outcome {
        self.finish(
            Ran::unplaced(msg, None),
            ActivationResponse::whisk_error(format!(
                "The invoker failed while running this activation: {reason}"
            )),
        )
    }

    fn finish(&self, ran: Ran<'_>, response: ActivationResponse) -> Outcome {
        let record = self.record(&ran, response);
        self.combined(&ran.msg.transid, record)
    }

    /// One `CombinedCompletionAndResultMessage`, blocking or not.
    fn combined(&self, transid: &TransactionId, record: WhiskActivation) -> Outcome {
        Outcome {
            last: Acknowledgement::Combined {
                transid: transid.clone(),
                activation: record.without_logs(),
                instance: self.instance.clone(),
            },
            record,
        }
    }

    /// An activation that never reached a container (its action could not be resolved):
    /// upstream's fallback record and one combined acknowledgement.
    pub fn fallback(&self, msg: &ActivationMessage, response: ActivationResponse) -> Outcome {
        self.combined(
            &msg.transid,
            WhiskActivation::fallback(msg, response, now_ms()),
        )
    }

    /// A message that is not an `ActivationMessage` but names an activation and a
    /// controller: a whisk error saying what was wrong, so the controller is not left waiting.
    pub fn not_understood(&self, message: &Unreadable) -> Outcome {
        self.combined(
            &message.transid,
            WhiskActivation::not_understood(message, now_ms()),
        )
    }
}

/// Why an activation stopped before its container answered.
enum Interrupted {
    /// The lease lapsed before `/init` (`initialized: false`) or `/run` was sent.
    Fenced { initialized: bool },
    /// The container's engine stopped listing it before anything reached it.
    Unsent,
    /// `/init` found the runtime initialized already: another host used the container.
    InitializedElsewhere,
    /// `/init` broke off while the lease lapsed: the container may be initialized, `/run`
    /// was never sent.
    InitBrokeOff,
}

impl Interrupted {
    /// For a container the activation never reached: what happened to it (for the log line),
    /// and how the error says it happened to every container tried.
    fn misplaced(&self) -> (&'static str, &'static str) {
        match self {
            Interrupted::Unsent => (
                "the engine lost the container before the activation reached it",
                "were lost by the engine before the activation reached them",
            ),
            Interrupted::InitializedElsewhere => (
                "the prewarm container was initialized by a previous active host",
                "had been initialized by another host",
            ),
            Interrupted::InitBrokeOff => (
                "the container's /init broke off while this host's lease lapsed",
                "broke off their /init while the lease lapsed",
            ),
            Interrupted::Fenced { .. } => {
                unreachable!("a fenced run is given back, not placed again")
            }
        }
    }
}

/// What OpenWhisk's action runtimes answer (403) to a second `/init`.
fn initialized_before(body: &[u8]) -> bool {
    String::from_utf8_lossy(body).contains("Cannot initialize the action more than once")
}

/// How many containers one activation is tried on when the engine loses them before
/// anything was sent (an engine machine failed).
const PLACEMENTS: usize = 3;

/// How to give back a container no request was sent to.
fn untouched(allocation: &Allocation) -> Fate {
    if allocation.needs_init {
        Fate::Uninitialized
    } else {
        Fate::Reuse
    }
}

/// The timeout upstream's container client gives up with.
fn timed_out(limit: Duration) -> ProxyError {
    ProxyError::Timeout {
        address: String::new(),
        limit,
    }
}

/// What a call that got no usable answer means for the activation, in upstream's words
/// (`Messages.timedoutActivation`, `abnormalInitialization`, `abnormalRun`).
fn proxy_failure(e: &ProxyError, action: &Action, phase: &str) -> ActivationResponse {
    let init = phase == "initialization";
    match e {
        ProxyError::Timeout { .. } => ActivationResponse::developer_error(format!(
            "The action exceeded its time limits of {} milliseconds{}.",
            action.limits.timeout,
            if init { " during initialization" } else { "" }
        )),
        ProxyError::TooLarge { limit } => ActivationResponse::developer_error(format!(
            "The action produced a response that exceeded the allowed length: {limit} bytes."
        )),
        ProxyError::Connect { .. } | ProxyError::Broken { .. } | ProxyError::Fenced if init => {
            ActivationResponse::developer_error(
                "The action did not initialize and exited unexpectedly.",
            )
        }
        ProxyError::Connect { .. } | ProxyError::Broken { .. } | ProxyError::Fenced => {
            ActivationResponse::developer_error(
                "The action did not produce a valid response and exited unexpectedly.",
            )
        }
    }
}
