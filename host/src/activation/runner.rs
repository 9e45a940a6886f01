//! Runs one activation: resolve the action, take a container from the pool, `/init` it when
//! new, `/run`, collect logs up to the sentinel, and build the record and acknowledgements.

use super::ack::{Acknowledgement, InvokerInstanceId};
use super::arguments::{self, Arguments};
use super::message::{ActivationMessage, TransactionId, Unreadable};
use super::proxy::{ProxyClient, ProxyError};
use super::record::{ActivationResponse, Annotation, WhiskActivation};
use crate::action::{
    Action, ActionError, ActionStore, ParameterEncryption, Runtimes, SystemLimits,
};
use crate::factory::{CallError, ContainerFactory};
use crate::pool::{Allocation, Fate, Outage, Pool, PoolError, Want, WarmKey};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

/// OpenWhisk runtimes end each activation's output with this line on stdout and stderr.
pub const SENTINEL: &str = "XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX";

/// What running an activation produced: its last acknowledgement and its record.
#[derive(Debug)]
pub struct Outcome {
    pub last: Acknowledgement,
    pub record: WhiskActivation,
}

/// Where a blocking activation's `ResultMessage` goes as soon as `/run` answered, before its
/// logs are read (the caller publishes it, and `Outcome::last` after it).
pub type OnResult<'a> = &'a (dyn Fn(Acknowledgement) + Send + Sync);

/// What is known about an activation so far, for its record.
struct Ran<'a> {
    msg: &'a ActivationMessage,
    start: i64,
    wait_ms: i64,
    action: Option<Action>,
    allocation: Option<Allocation>,
    init_ms: Option<i64>,
}

impl<'a> Ran<'a> {
    /// An activation starting now; its wait is measured from the controller's transaction
    /// start (saturating: the timestamp comes from the message).
    fn starting(msg: &'a ActivationMessage) -> Ran<'a> {
        let start = now_ms();
        Ran {
            msg,
            start,
            wait_ms: start.saturating_sub(msg.transid.start_ms).max(0),
            action: None,
            allocation: None,
            init_ms: None,
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
    /// In cluster mode: whether this host still holds its lease. Checked right before a
    /// container is touched; a fenced activation is left for the next active host.
    pub may_run: Option<Gate>,
}

pub use crate::fence::Gate;

use crate::clock::now_ms;

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
        })
    }

    /// The epoch this runner's pool works under (0 on a single host).
    pub fn epoch(&self) -> u64 {
        self.pool.epoch()
    }

    fn fenced(&self) -> bool {
        self.may_run.as_ref().is_some_and(|gate| !gate.open())
    }

    /// Runs `msg` to completion: every problem becomes the right error record. `None` only
    /// when this host lost its lease before touching a container.
    pub async fn run(&self, msg: &ActivationMessage, on_result: OnResult<'_>) -> Option<Outcome> {
        if self.fenced() {
            return None;
        }
        let mut ran = Ran::starting(msg);
        let start = ran.start;
        let (action, want) = match self.resolve(msg).await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(activation = %msg.activation_id, "{e}");
                return Some(self.fallback(msg, ActivationResponse::from(&e)));
            }
        };
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
        ran.action = Some(action.clone());
        let clock = std::time::Instant::now();
        let mut placements = 0;
        let (allocation, acquired, (response, init_ms, fate)) = loop {
            let allocation = match self
                .pool
                .acquire(&want)
                .instrument(
                    tracing::info_span!("acquire", kind = %want.kind, memory_mb = want.memory_mb),
                )
                .await
            {
                Ok(l) => l,
                Err(PoolError::Create(CallError::Fenced { .. })) => return None,
                Err(e) => {
                    tracing::warn!(activation = %msg.activation_id, "{e}");
                    let response = ActivationResponse::whisk_error(format!(
                        "Failed to run container with image '{}': {e}",
                        want.image
                    ));
                    return Some(self.finish(&ran, response, Vec::new()));
                }
            };
            if self.fenced() {
                self.pool.release(&allocation, untouched(&allocation));
                return None;
            }
            let acquired = clock.elapsed();
            placements += 1;
            match self
                .execute(msg, &action, &args, &want.key, &allocation)
                .await
            {
                Ok(done) => break (allocation, acquired, done),
                Err(Interrupted::Fenced { initialized }) => {
                    let fate = if initialized {
                        Fate::Reuse
                    } else {
                        untouched(&allocation)
                    };
                    self.pool.release(&allocation, fate);
                    return None;
                }
                Err(elsewhere) => {
                    // nothing reached the action: the container goes, the activation is
                    // placed again
                    let (happened, in_a_row) = elsewhere.misplaced();
                    tracing::warn!(activation = %msg.activation_id, container = %allocation.container.id,
                        "{happened}; destroying it and placing the activation again ({placements} of {PLACEMENTS})");
                    self.pool.release(&allocation, Fate::Destroy);
                    if placements >= PLACEMENTS {
                        let response = ActivationResponse::whisk_error(format!(
                            "The action could not be placed: {PLACEMENTS} containers in a row {in_a_row}"
                        ));
                        return Some(self.finish(&ran, response, Vec::new()));
                    }
                }
            }
        };
        ran.allocation = Some(allocation.clone());
        ran.init_ms = init_ms;
        // upstream's `logsToBeCollected`: the host reads the logs (not the engine's log
        // driver) and the action keeps any; then the acknowledgement is split in two
        let split = self.collect_logs && action.limits.logs > 0;
        if msg.blocking && split {
            on_result(Acknowledgement::Result {
                transid: msg.transid.clone(),
                activation: self.record(&ran, response.clone(), Vec::new()),
            });
        }
        let ran_at = clock.elapsed();
        let logs = if !split {
            Vec::new()
        } else if action.limits.concurrency <= 1 {
            self.collect_logs(&allocation, start, action.limits.logs)
                .instrument(tracing::info_span!("logs"))
                .await
        } else {
            vec!["Logs are not collected for actions with concurrency > 1.".into()]
        };
        self.pool.release(&allocation, fate);
        tracing::debug!(
            activation = %msg.activation_id,
            start = %allocation.start,
            acquire_ms = acquired.as_millis() as u64,
            init_ms = init_ms.unwrap_or(0),
            run_us = ran_at.saturating_sub(acquired).as_micros() as u64,
            logs_us = clock.elapsed().saturating_sub(ran_at).as_micros() as u64,
            total_ms = clock.elapsed().as_millis() as u64,
            "activation ran"
        );
        let mut outcome = self.finish(&ran, response, logs);
        // as upstream's `ContainerProxy`: only a blocking activation whose logs are not read
        // here gets its result and the freed slot in one message; the result of a
        // non-blocking one goes only to the activation store
        if split || !msg.blocking {
            outcome.last = Acknowledgement::Completion {
                transid: msg.transid.clone(),
                activation_id: msg.activation_id.clone(),
                is_system_error: outcome.record.response.is_whisk_error(),
                instance: self.instance.clone(),
            };
        }
        Some(outcome)
    }

    /// `/init` when needed, then `/run`. Returns the response, init time and the container's
    /// fate, or that the lease lapsed before `/init` or `/run` was sent.
    async fn execute(
        &self,
        msg: &ActivationMessage,
        action: &Action,
        args: &Arguments,
        key: &WarmKey,
        allocation: &Allocation,
    ) -> Result<(ActivationResponse, Option<i64>, Fate), Interrupted> {
        let address = &allocation.container.address;
        let timeout = action.limits.timeout as i64;
        let mut init_ms = None;
        if allocation.needs_init {
            let t = now_ms();
            let env = arguments::environment(msg, action, t + timeout);
            let body = arguments::init_body(action, args, &env);
            let limit = self
                .init_timeout
                .min(Duration::from_millis(action.limits.timeout));
            match self
                .proxy
                .init(address, &body, limit)
                .instrument(tracing::info_span!("init", container = %allocation.container.id))
                .await
            {
                Ok(r) if r.status == 200 => {
                    init_ms = Some(now_ms() - t);
                    self.pool.initialized(allocation, key);
                }
                // The runtime was initialized already, though the pool held the container as
                // a fresh prewarm: a previous active host took it just before it died, before
                // that reached the replicated pool. Not this action's fault: elsewhere.
                Ok(r) if r.status == 403 && initialized_before(&r.body) => {
                    return Err(Interrupted::InitializedElsewhere)
                }
                Ok(r) => {
                    return Ok((
                        ActivationResponse::from_failed_init(&r.body),
                        None,
                        Fate::Destroy,
                    ))
                }
                Err(ProxyError::Fenced) => return Err(Interrupted::Fenced { initialized: false }),
                // The lease lapsed meanwhile: the next active host may have destroyed this
                // container as busy. Not this activation's fault: it is the next host's.
                Err(_) if self.fenced() => return Err(Interrupted::Fenced { initialized: false }),
                Err(ProxyError::Connect { .. }) if self.pool.vanished(&allocation.container.id) => {
                    return Err(Interrupted::Unsent)
                }
                Err(e) => {
                    return Ok((
                        proxy_failure(&e, action, "initialization"),
                        None,
                        Fate::Destroy,
                    ))
                }
            }
        }
        let env = arguments::environment(msg, action, now_ms() + timeout);
        let body = arguments::run_body(args, &env);
        let limit = Duration::from_millis(action.limits.timeout);
        let mut outage = Outage::new(Duration::from_millis(50), Duration::from_millis(500));
        let answer = loop {
            match self
                .proxy
                .post(address, "/run", &body, limit)
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
                answer => break answer,
            }
        };
        match answer {
            Ok(r) => {
                let response = ActivationResponse::from_run(r.status, &r.body);
                let fate = if r.status == 200 {
                    Fate::Reuse
                } else {
                    Fate::Destroy
                };
                Ok((response, init_ms, fate))
            }
            Err(ProxyError::Fenced) => Err(Interrupted::Fenced { initialized: true }),
            Err(_) if self.fenced() => Err(Interrupted::Fenced { initialized: true }),
            // Nothing was sent, and the engine no longer lists the container (its machine
            // failed): the activation goes to another container.
            Err(ProxyError::Connect { .. }) if self.pool.vanished(&allocation.container.id) => {
                Err(Interrupted::Unsent)
            }
            Err(e) => Ok((proxy_failure(&e, action, "run"), init_ms, Fate::Destroy)),
        }
    }

    /// Logs up to the action's limit (`limits.logs`, in MB as upstream counts them).
    async fn collect_logs(
        &self,
        allocation: &Allocation,
        start_ms: i64,
        limit_mb: u32,
    ) -> Vec<String> {
        let max = limit_mb.saturating_mul(1024 * 1024);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        let since = u64::try_from(start_ms.saturating_sub(5)).unwrap_or(0);
        let mut poll = Duration::from_millis(1);
        let mut polls = 0u32;
        loop {
            let text = match self
                .engine
                .logs(&allocation.container.id, since, max.saturating_add(4096))
                .await
            {
                Ok(t) => t,
                Err(e) => return vec![format!("Logs were not collected: {e}")],
            };
            let sentinels = text.matches(SENTINEL).count();
            polls += 1;
            if sentinels >= 2 || tokio::time::Instant::now() >= deadline {
                tracing::trace!(container = %allocation.container.id, polls, sentinels, "logs read");
                let mut lines = Vec::new();
                let mut size = 0usize;
                for line in text.lines().filter(|l| !l.contains(SENTINEL)) {
                    size += line.len();
                    if size > max as usize {
                        lines.push(format!(
                            "Logs were truncated because the total bytes size exceeds the limit of {max} bytes."
                        ));
                        break;
                    }
                    lines.push(line.to_owned());
                }
                return lines;
            }
            // the sentinels usually follow within milliseconds; back off so that many
            // activations waiting for their logs do not keep the engine (and a core) busy
            tokio::time::sleep(poll).await;
            poll = (poll * 2).min(Duration::from_millis(20));
        }
    }

    fn record(
        &self,
        ran: &Ran<'_>,
        response: ActivationResponse,
        logs: Vec<String>,
    ) -> WhiskActivation {
        let (msg, action, allocation) = (ran.msg, ran.action.as_ref(), ran.allocation.as_ref());
        let (start, wait_ms, init_ms) = (ran.start, ran.wait_ms, ran.init_ms);
        let end = now_ms();
        let mut annotations = vec![
            Annotation {
                key: "path".into(),
                value: json!(msg.action.qualified()),
            },
            Annotation {
                key: "waitTime".into(),
                value: json!(wait_ms),
            },
        ];
        if let Some(a) = action {
            annotations.push(Annotation {
                key: "kind".into(),
                value: json!(a.exec.kind),
            });
            annotations.push(Annotation {
                key: "limits".into(),
                value: json!({
                    "timeout": a.limits.timeout, "memory": a.limits.memory,
                    "logs": a.limits.logs, "concurrency": a.limits.concurrency,
                }),
            });
        }
        if let Some(i) = init_ms {
            annotations.push(Annotation {
                key: "initTime".into(),
                value: json!(i),
            });
        }
        if let Some(l) = allocation {
            // keepwarm's own: where the activation ran (`warm`, `prewarm` or `cold`), and
            // under which claim (0 on a single host).
            annotations.push(Annotation {
                key: "keepwarm".into(),
                value: json!({
                    "start": l.start,
                    "container": l.container.id,
                    "address": l.container.address,
                    "epoch": self.pool.epoch(),
                }),
            });
        }
        WhiskActivation {
            namespace: msg.user.namespace.name.clone(),
            name: msg.action.name.clone(),
            subject: msg.user.subject.clone(),
            activation_id: msg.activation_id.clone(),
            start,
            end,
            cause: msg.cause.clone(),
            response,
            logs,
            version: action
                .map(|a| a.version.clone())
                .unwrap_or_else(|| "0.0.1".into()),
            publish: false,
            annotations,
            duration: Some(end - start),
        }
    }

    /// The outcome of an activation whose run failed inside keepwarm itself (a panic): a
    /// whisk error, so the controller hears of it and the slot is freed.
    pub fn internal_error(&self, msg: &ActivationMessage, reason: &str) -> Outcome {
        let ran = Ran::starting(msg);
        self.finish(
            &ran,
            ActivationResponse::whisk_error(format!(
                "The invoker failed while running this activation: {reason}"
            )),
            Vec::new(),
        )
    }

    fn finish(&self, ran: &Ran<'_>, response: ActivationResponse, logs: Vec<String>) -> Outcome {
        let record = self.record(ran, response, logs);
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

fn proxy_failure(e: &ProxyError, action: &Action, phase: &str) -> ActivationResponse {
    match e {
        ProxyError::Timeout { .. } => ActivationResponse::developer_error(format!(
            "The action exceeded its time limits of {} milliseconds{}.",
            action.limits.timeout,
            if phase == "initialization" { " during initialization" } else { "" }
        )),
        ProxyError::TooLarge { limit } => ActivationResponse::developer_error(format!(
            "The action produced a response that exceeded the allowed length: {limit} bytes."
        )),
        ProxyError::Connect { .. } | ProxyError::Broken { .. } | ProxyError::Fenced => ActivationResponse::developer_error(format!(
            "The action did not initialize or run as expected. Log data might be missing. ({phase}: {e})"
        )),
    }
}
