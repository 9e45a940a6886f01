//! One term of office as the active host: [`Term::take_over`] (claim, reconcile, re-attach,
//! wire the replicator, the quarantine and the feed), [`Term::serve`] (one method per event it
//! reacts to, until the term ends) and [`Term::end`] (stop taking work, leave what runs to
//! finish), which says in one [`Ended`] what the member does next.

use super::{Ended, Member};
use crate::activation::runner::Journal;
use crate::clock::now_ms;
use crate::cluster::handover::{Handback, StepDownRequest};
use crate::cluster::inbox::{ReloadRequest, ToTerm};
use crate::cluster::state::Command;
use crate::cluster::status::{Role, Takeover, TakeoverPhases, Transition};
use crate::cluster::ClusterError;
use crate::factory::ContainerFactory;
use crate::failover;
use crate::feed::{self, ClusterFeed, FeedHooks, InFlight, Progress};
use crate::fence::{FencedFactory, Gate};
use crate::lease::{self, Lease};
use crate::parts::upkeep;
use crate::pool::Pool;
use crate::quarantine;
use crate::rollout;
use crate::step_down::{self, StepDownError};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

/// Why a term ends.
enum Why {
    Shutdown,
    /// Leadership of the term ended.
    Lost,
    FeedFailed,
    /// A planned step-down handed leadership over (`true`) or stopped the feed without
    /// another member taking over (`false`).
    SteppedDown(bool),
}

impl Why {
    /// For the timeline.
    fn name(&self) -> &'static str {
        match self {
            Why::Shutdown => "shutting down",
            Why::Lost => "leadership lost",
            Why::FeedFailed => "feed failed",
            Why::SteppedDown(true) => "asked, handed over",
            Why::SteppedDown(false) => "asked, no member took over",
        }
    }
}

/// A term of office, from the committed claim until the feed is told to stop.
pub(super) struct Term<'a> {
    member: &'a Member,
    takeover: Takeover,
    led_at: Instant,
    pool: Arc<Pool>,
    /// Every engine call of the term goes through the lease.
    factory: Arc<dyn ContainerFactory>,
    gate: Gate,
    lost: watch::Receiver<bool>,
    watcher: JoinHandle<()>,
    replicator: JoinHandle<()>,
    upkeep: JoinHandle<()>,
    feed: JoinHandle<()>,
    stop_feed: watch::Sender<bool>,
    flush: mpsc::UnboundedSender<oneshot::Sender<()>>,
    in_flight: Arc<InFlight>,
    /// Containers the member that handed over still uses, until it hands them back.
    lent: BTreeSet<String>,
    lent_until_ms: i64,
    handed_back: bool,
    /// How long a handover took until another member led (0: none was waited for).
    handover_ms: u64,
}

impl<'a> Term<'a> {
    /// Claims an epoch for leadership `term`, reconciles the engine with the replicated pool,
    /// re-attaches, holds apart what may still run, and starts the replicator and the feed.
    pub(super) async fn take_over(member: &'a Member, term: u64) -> Result<Self, ClusterError> {
        let node = &member.node;
        node.report(|r| r.role = Role::Takeover);
        let led_at = Instant::now();
        // The feed's Kafka clients: the set this member connected as a standby, or a new one
        // connected while the claim and the re-attach run.
        let clients = {
            let (prepared, config) = (member.clients.clone(), member.parts.feed_config());
            tokio::spawn(async move { prepared.take(&config).await })
        };
        let lease = Lease::new(member.lease);
        let (lost_tx, lost) = watch::channel(false);
        let watcher = lease::watch_leadership(node, term, lease.clone(), lost_tx.clone());
        let gate = lease.gate();
        let factory: Arc<dyn ContainerFactory> = Arc::new(FencedFactory::new(
            member.parts.factory.clone(),
            gate.clone(),
        ));
        let (pool, takeover, held) =
            match claim_and_reconcile(member, &gate, &factory, led_at).await {
                Ok(t) => t,
                Err(e) => {
                    watcher.abort();
                    return Err(e);
                }
            };
        member.report_takeover(&takeover, led_at);
        node.report(|r| r.role = Role::Active);

        let (progress_tx, progress_rx) = mpsc::unbounded_channel();
        let (writes_tx, writes_rx) = mpsc::channel(1);
        let (flush, flush_rx) = mpsc::unbounded_channel();
        for state in &member.plugin_states {
            state.activate(takeover.epoch, writes_tx.clone());
        }
        drop(writes_tx);
        let replicator = tokio::spawn(failover::replicate(
            node.clone(),
            takeover.epoch,
            member.parts.factory.default_engine().name.clone(),
            failover::Inputs {
                events: pool.subscribe(),
                progress: progress_rx,
                plugin_writes: writes_rx,
                plugin_states: member.plugin_states.clone(),
                flushes: flush_rx,
                pool: pool.clone(),
            },
            lost_tx,
        ));
        let upkeep = upkeep(
            pool.clone(),
            Some(node.clone()),
            member.parts.config.invoker.reconcile_interval_s,
        );
        let (stop_feed, stop_rx) = watch::channel(false);
        if !held.is_empty() {
            // in the pool as busy before the feed starts: its backlog may wait for them
            hold_apart(member, &takeover, &factory, &pool, held, stop_rx.clone()).await;
        }
        let in_flight = Arc::new(InFlight::default());
        let hooks = feed_hooks(member, &gate, &in_flight, progress_tx.clone());
        let runner = member.parts.runner(
            pool.clone(),
            factory.clone(),
            gate.clone(),
            Some(journal(progress_tx, flush.clone())),
        );
        let feed = spawn_feed(member, hooks, clients, runner, stop_rx);
        Ok(Term {
            member,
            lent: takeover.lent.clone(),
            lent_until_ms: node.state().lent.as_ref().map_or(0, |l| l.until_ms),
            takeover,
            led_at,
            pool,
            factory,
            gate,
            lost,
            watcher,
            replicator,
            upkeep,
            feed,
            stop_feed,
            flush,
            in_flight,
            handed_back: false,
            handover_ms: 0,
        })
    }

    /// Active until leadership of this term ends, the host shuts down, the feed fails, or
    /// the operator asks this host to step down.
    async fn serve(&mut self, mut shutdown: watch::Receiver<bool>) -> Why {
        let inbox = self.member.node.requests.clone();
        let mut requests = inbox.term.lock().await;
        loop {
            let lent_expires = tokio::time::Instant::now()
                + Duration::from_millis(u64::try_from(self.lent_until_ms - now_ms()).unwrap_or(0));
            tokio::select! {
                _ = shutdown.changed() => if *shutdown.borrow() { return Why::Shutdown },
                _ = self.lost.changed() => return Why::Lost,
                _ = &mut self.feed => return Why::FeedFailed,
                Some(request) = requests.recv() => match request {
                    ToTerm::StepDown(asked) => if let Some(why) = self.step_down(asked).await {
                        return why;
                    },
                    ToTerm::Reload(asked) => self.reload(asked),
                    ToTerm::Handback(back) => self.take_back(back),
                },
                _ = tokio::time::sleep_until(lent_expires), if !self.lent.is_empty() => {
                    self.expire_lent().await
                }
            }
        }
    }

    /// Serves until the term ends, then ends it.
    pub(super) async fn run(mut self, shutdown: watch::Receiver<bool>) -> Ended {
        let why = self.serve(shutdown).await;
        self.end(why).await
    }

    /// What a step-down needs of this term.
    fn stepping(&self) -> step_down::Term<'_> {
        step_down::Term {
            node: &self.member.node,
            epoch: self.takeover.epoch,
            led_at: self.led_at,
            election_timeout_max: self.member.election_timeout_max,
            drain_timeout: self.member.parts.feed_config().drain_timeout,
            in_flight: &self.in_flight,
            stop_feed: &self.stop_feed,
            flush: &self.flush,
        }
    }

    /// An operator's `cluster step-down`: ends the term when it handed over, or when it
    /// stopped the feed without another member taking over.
    async fn step_down(&mut self, asked: StepDownRequest) -> Option<Why> {
        if asked.is_closed() {
            return None;
        }
        let asked_at = Instant::now();
        match step_down::step_down(&self.stepping()).await {
            Ok(done) => {
                self.handover_ms = asked_at.elapsed().as_millis() as u64;
                tracing::info!(?done, "stepped down: another member leads");
                let _ = asked.send(Ok(done));
                Some(Why::SteppedDown(true))
            }
            Err(e) => {
                tracing::warn!("step-down: {e}");
                let stopped = matches!(e, StepDownError::Stopped(_));
                let _ = asked.send(Err(e.to_string()));
                stopped.then_some(Why::SteppedDown(false))
            }
        }
    }

    /// `plugin reload`: a cluster-wide rollout of a new build, in the background (it ends
    /// with the term: every engine call of it goes through the lease).
    fn reload(&self, asked: ReloadRequest) {
        if asked.reply.is_closed() {
            return;
        }
        let plugins = &self.member.parts.plugins;
        let Some(plugin) = rollout::named(plugins, asked.plugin.as_deref()).cloned() else {
            let names: Vec<&str> = plugins.iter().map(|p| p.name()).collect();
            let asked_for = asked.plugin.unwrap_or_default();
            let _ = asked.reply.send(Err(format!(
                "this cluster runs no plugin `{asked_for}` (it runs {})",
                names.join(", ")
            )));
            return;
        };
        let node = self.member.node.clone();
        let engines = self.member.parts.factory.clone();
        let (pool, epoch, lease) = (self.pool.clone(), self.takeover.epoch, self.gate.clone());
        tokio::spawn(async move {
            let rolled = rollout::cluster_wide(&node, &plugin, &engines, &pool, (epoch, &lease));
            let _ = asked.reply.send(rolled.await);
        });
    }

    /// The member that handed over is done with what ran there: records it and adopts the
    /// containers it lent (only the member the replicated handover names, once).
    fn take_back(&mut self, back: Handback) {
        let node = &self.member.node;
        let lender = node.state().lent.as_ref().map(|l| l.from);
        if lender != Some(back.from) || self.handed_back {
            tracing::warn!(
                from = back.from,
                ?lender,
                handed_back = self.handed_back,
                "a handback no handover of this term awaits: ignored"
            );
            return;
        }
        self.handed_back = true;
        let ids: Vec<String> = back
            .containers
            .iter()
            .filter(|id| self.lent.remove(*id))
            .cloned()
            .collect();
        let (node, factory, pool) = (node.clone(), self.factory.clone(), self.pool.clone());
        let epoch = self.takeover.epoch;
        tokio::spawn(async move {
            let handed_back = Command::HandedBack {
                epoch,
                completed: back.completed,
                unfinished: back.unfinished,
            };
            if let Err(e) = node.propose(handed_back).await {
                tracing::warn!("recording the handback: {e}");
            }
            match failover::take_back(&node, epoch, &factory, &pool, &ids).await {
                Ok(n) => tracing::info!(
                    from = back.from,
                    taken_back = n,
                    "containers handed back after a step-down"
                ),
                Err(e) => tracing::warn!("taking back containers: {e}"),
            }
        });
    }

    /// The handover's deadline passed with containers never handed back: their outcome is
    /// unknown, so they are destroyed.
    async fn expire_lent(&mut self) {
        let ids: Vec<String> = std::mem::take(&mut self.lent).into_iter().collect();
        let (node, epoch) = (&self.member.node, self.takeover.epoch);
        if let Err(e) = failover::expire_lent(node, epoch, &self.factory, ids).await {
            tracing::warn!("forgetting containers never handed back: {e}");
        }
    }

    /// Stops taking work; what runs finishes in the background (handed back after a
    /// handover). A shutdown hands over first when another member can take it.
    async fn end(mut self, why: Why) -> Ended {
        let node = self.member.node.clone();
        if let Why::Shutdown = why {
            let stopping_at = Instant::now();
            match step_down::step_down(&self.stepping()).await {
                Ok(done) => {
                    self.handover_ms = stopping_at.elapsed().as_millis() as u64;
                    tracing::info!(?done, "stopping: handed the active role over first");
                }
                Err(e) => tracing::warn!(
                    "stopping without a handover ({e}): a standby takes over when this host is gone"
                ),
            }
        }
        let handed_over = self.in_flight.has_stopped_pulling() && !node.is_leader();
        let kept = self.pool.stats();
        node.report(|r| {
            r.role = Role::SteppingDown;
            r.record(Transition {
                at_ms: now_ms(),
                epoch: self.takeover.epoch,
                what: format!("stepped-down ({})", why.name()),
                took_ms: self.handover_ms,
                kept: kept.prewarm + kept.warm_idle + kept.busy,
                lost: 0,
            });
        });
        let _ = self.stop_feed.send(true);
        node.report(|r| r.consuming = false);
        self.member
            .plugin_states
            .iter()
            .for_each(|s| s.deactivate());
        self.upkeep.abort();
        // A host stopping that no one took over from still leads while it drains: the lease
        // keeps being renewed, so what finishes here is still acknowledged (`feed::dispatch`);
        // the watcher ends with Raft.
        let leads_while_draining = matches!(why, Why::Shutdown) && !handed_over;
        if !leads_while_draining {
            self.watcher.abort();
        }
        let still_leads =
            leads_while_draining || matches!(why, Why::FeedFailed | Why::SteppedDown(false));
        if still_leads {
            // let the last progress reach the log
            if tokio::time::timeout(Duration::from_millis(500), &mut self.replicator)
                .await
                .is_err()
            {
                self.replicator.abort();
            }
        } else {
            // a new term: anything still proposed under this epoch would be rejected
            self.replicator.abort();
        }
        if let Why::FeedFailed = why {
            return Ended::CannotServe;
        }
        // A handover leaves what runs here to finish here; once it has, hand it back.
        let (feed, in_flight, pool) = (self.feed, self.in_flight, self.pool);
        let draining = tokio::spawn(async move {
            let _ = feed.await;
            if let Some(running) = in_flight.handed_over() {
                step_down::hand_back(node, running, in_flight, pool).await;
            }
        });
        match why {
            Why::Shutdown => Ended::Shutdown(draining),
            Why::SteppedDown(false) => Ended::HandOver(draining),
            Why::Lost | Why::SteppedDown(true) | Why::FeedFailed => Ended::SteppedDown(draining),
        }
    }
}

/// The takeover proper: follow the builds the cluster switched to, commit the claim, wait for
/// the lease, and reconcile the engine with the replicated pool.
async fn claim_and_reconcile(
    member: &Member,
    gate: &Gate,
    factory: &Arc<dyn ContainerFactory>,
    led_at: Instant,
) -> Result<(Arc<Pool>, Takeover, Vec<failover::ToHold>), ClusterError> {
    let node = &member.node;
    for plugin in &member.parts.plugins {
        rollout::follow(node, plugin).await;
    }
    let follow_ms = led_at.elapsed().as_millis() as u64;
    // The claim's commit is itself a quorum acknowledgement, so the lease is held right
    // after it.
    let claiming = Instant::now();
    let epoch = node.claim().await?;
    let claim_ms = claiming.elapsed().as_millis() as u64;
    let claimed_at_ms = now_ms();
    let confirm_by = Instant::now() + member.lease * 4;
    while !gate.open() && Instant::now() < confirm_by {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let lease_ms = claiming.elapsed().as_millis() as u64 - claim_ms;
    let pool = member.parts.pool(factory.clone(), epoch);
    let cluster = &member.parts.config.invoker.cluster;
    let (takeover, held) = failover::take_over(node, epoch, factory, cluster, &pool).await?;
    let takeover = Takeover {
        claimed_at_ms,
        phases: TakeoverPhases {
            follow_ms,
            claim_ms,
            lease_ms,
            ..takeover.phases
        },
        ..takeover
    };
    Ok((pool, takeover, held))
}

/// The feed of this term, once its Kafka clients are there (prepared, or connected anew).
fn spawn_feed(
    member: &Member,
    hooks: FeedHooks,
    clients: JoinHandle<Result<feed::Clients, feed::FeedError>>,
    runner: Arc<crate::activation::runner::Runner>,
    stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let (config, sink) = (member.parts.feed_config(), member.parts.sink.clone());
    tokio::spawn(async move {
        let clients = match clients.await {
            Ok(Ok(clients)) => Some(clients),
            Ok(Err(e)) => {
                tracing::warn!("kafka clients: {e}; connecting again");
                None
            }
            Err(e) => {
                tracing::warn!("kafka clients: {e}; connecting again");
                None
            }
        };
        if let Err(e) = feed::run_with(config, hooks, clients, runner, sink, stop).await {
            tracing::warn!("feed stopped: {e}");
        }
    })
}

/// Holds `held` in the pool as busy and watches them in the background until each shows
/// its activation ended (adopted) or the deadline passes (destroyed); the status counts each.
async fn hold_apart(
    member: &Member,
    takeover: &Takeover,
    factory: &Arc<dyn ContainerFactory>,
    pool: &Arc<Pool>,
    held: Vec<failover::ToHold>,
    term_ended: watch::Receiver<bool>,
) {
    let node = &member.node;
    let (held, not_attached) = quarantine::hold(node, takeover.epoch, factory, pool, held).await;
    let report = {
        let node = node.clone();
        move |released: quarantine::Released| {
            node.report(|r| {
                if let Some(t) = r.last_takeover.as_mut() {
                    t.quarantine_adopted = released.adopted;
                    t.quarantine_destroyed = released.destroyed + not_attached;
                }
            })
        }
    };
    let release = quarantine::release(
        factory.clone(),
        pool.clone(),
        held,
        quarantine::DEADLINE,
        term_ended,
        report,
    );
    tokio::spawn(async move {
        let mut released = release.await;
        released.destroyed += not_attached;
        tracing::info!(?released, "quarantine over");
        crate::metrics::global().quarantine(released.adopted, released.destroyed);
    });
}

/// What cluster mode adds to the feed: the lease as its gate, the replicated offsets and
/// completions, the delivery contract's record of starts, and what a handover lent.
fn feed_hooks(
    member: &Member,
    gate: &Gate,
    in_flight: &Arc<InFlight>,
    progress: mpsc::UnboundedSender<Progress>,
) -> FeedHooks {
    let node = &member.node;
    let (done, started, lent) = (
        node.shared_state(),
        node.shared_state(),
        node.shared_state(),
    );
    FeedHooks {
        may_pull: gate.clone(),
        cluster: Some(ClusterFeed {
            offsets: node.state().offsets.clone(),
            already_done: Arc::new(move |id: &str| {
                done.read().expect("state lock").is_completed(id)
            }),
            may_have_run: Arc::new(move |id: &str| {
                started.read().expect("state lock").may_have_run(id)
            }),
            progress,
            in_flight: in_flight.clone(),
            lent_until: Arc::new(move |id: &str| lent.read().expect("state lock").lent_until(id)),
        }),
        // the role reports consuming itself (`Progress::Consuming`)
        on_consuming: None,
    }
}

/// Records an activation's start in the replicated state and answers once it is committed
/// (false once this term's replicator has stopped): what the runner calls before `/run`.
fn journal(
    progress: mpsc::UnboundedSender<Progress>,
    flushes: mpsc::UnboundedSender<oneshot::Sender<()>>,
) -> Journal {
    Journal(Arc::new(
        move |activation: String, container: String, wait: bool| {
            let (progress, flushes) = (progress.clone(), flushes.clone());
            Box::pin(async move {
                let at_ms = now_ms();
                let started = Progress::Started {
                    activation,
                    container,
                    at_ms,
                };
                if progress.send(started).is_err() {
                    return false;
                }
                if !wait {
                    return true;
                }
                let (done, committed) = oneshot::channel();
                flushes.send(done).is_ok() && committed.await.is_ok()
            })
        },
    ))
}
