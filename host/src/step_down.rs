//! A planned step-down, from the active host's side (see `docs/architecture.md`, "Stepping
//! down in an orderly way"): choose a caught-up member, stop pulling, replicate a
//! [`Handover`] naming what still runs here, ask the chosen member to campaign, and, once the
//! activations still running here have finished, hand their containers back.

use crate::clock::now_ms;
use crate::cluster::handover::{Handback, StepDownPhases, SteppedDown};
use crate::cluster::state::{Command, Handover};
use crate::cluster::Node;
use crate::feed::InFlight;
use crate::pool::Pool;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};

/// What a step-down works with: the active term's feed, replicator and timings.
#[allow(missing_debug_implementations)]
pub struct Term<'a> {
    pub node: &'a Node,
    pub epoch: u64,
    /// When this member became leader: openraft's own vote refuses a candidate until
    /// `election_timeout_max` after that.
    pub led_at: Instant,
    pub election_timeout_max: Duration,
    /// How long the feed may drain what runs (the old host gives up after it).
    pub drain_timeout: Duration,
    pub in_flight: &'a Arc<InFlight>,
    pub stop_feed: &'a watch::Sender<bool>,
    pub flush: &'a mpsc::UnboundedSender<oneshot::Sender<()>>,
}

/// How long to wait for a member to catch up before refusing the step-down.
const CATCH_UP_WAIT: Duration = Duration::from_secs(2);

/// How long the handover may take to commit before the step-down gives up on it.
const HANDOVER_COMMIT_WAIT: Duration = Duration::from_secs(3);

/// Hands the active role to a caught-up member. Nothing has changed when it fails before
/// the feed stops (no member caught up); after that the caller hands over the slow way.
pub async fn step_down(term: &Term<'_>) -> Result<SteppedDown, StepDownError> {
    let node = term.node;
    if node.other_voters().is_empty() {
        return Err(StepDownError::Refused(
            "this is the only member: there is no one to hand over to".into(),
        ));
    }
    // 1. A member that holds everything this leader has, before anything stops.
    let mut to = caught_up_member(node).await?;
    // openraft 0.9 lets a leader vote for another candidate only once its own vote is
    // older than the leader lease (`election-timeout-max-ms`); wait that out while serving.
    let votable_at = term.led_at + term.election_timeout_max + Duration::from_millis(20);
    tokio::time::sleep_until(votable_at.into()).await;

    // 2. Stop pulling; what runs now is all that will ever run here.
    let stopped_at = Instant::now();
    let stopped_at_ms = now_ms();
    let _ = term.stop_feed.send(true);
    let stop_by = Instant::now() + Duration::from_secs(1);
    while !term.in_flight.has_stopped_pulling() && Instant::now() < stop_by {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let running = term.in_flight.hand_over();
    let mut phases = StepDownPhases::default();
    let mut mark = stopped_at;
    let mut lap = || {
        let ms = mark.elapsed().as_millis() as u64;
        mark = Instant::now();
        ms
    };
    phases.stop_ms = lap();

    // 3. Everything acknowledged so far, then the handover, committed.
    let (flushed_tx, flushed) = oneshot::channel();
    if term.flush.send(flushed_tx).is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(2), flushed).await;
    }
    phases.flush_ms = lap();
    if let Some(better) = node.caught_up(node.last_log_index()).first() {
        to = *better;
    }
    commit_handover(term, to, running.clone()).await?;
    phases.handover_ms = lap();

    // 4. The chosen member campaigns; this leader's vote elects it. A voter refuses a
    // candidate whose log is older than its own, so nothing more is appended meanwhile
    // (completions of what still runs here wait) and the candidate first holds everything.
    let _held = node.hold_proposals(CATCH_UP_WAIT).await;
    let last = node.last_log_index();
    let deadline = Instant::now() + CATCH_UP_WAIT;
    while !node.caught_up(last).contains(&to) && Instant::now() < deadline {
        if let Some(better) = node.caught_up(last).first() {
            to = *better;
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    phases.catch_up_ms = lap();
    node.raft.runtime_config().elect(false);
    let asked = node
        .call_member(to, "/raft/campaign", Vec::new(), Duration::from_secs(1))
        .await;
    let result = match asked {
        Err(e) => Err(StepDownError::Stopped(format!(
            "member {to} did not campaign: {e}"
        ))),
        Ok(_) => {
            let wait_until = Instant::now() + term.election_timeout_max * 2;
            loop {
                if !node.is_leader() {
                    phases.election_ms = lap();
                    break Ok(SteppedDown {
                        from: node.id,
                        to,
                        stopped_at_ms,
                        handed_over_ms: stopped_at.elapsed().as_millis() as u64,
                        running: running.len(),
                        phases: std::mem::take(&mut phases),
                    });
                }
                if Instant::now() > wait_until {
                    break Err(StepDownError::Stopped(format!(
                        "member {to} campaigned but did not win within {:?}",
                        term.election_timeout_max * 2
                    )));
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    };
    elections_back(node, result.is_ok(), term.election_timeout_max * 10);
    result
}

/// The first member that holds everything this leader has, waited for up to
/// [`CATCH_UP_WAIT`] before anything stops.
async fn caught_up_member(node: &Node) -> Result<u64, StepDownError> {
    let deadline = Instant::now() + CATCH_UP_WAIT;
    loop {
        if let Some(to) = node.caught_up(node.last_log_index()).first() {
            return Ok(*to);
        }
        if Instant::now() > deadline {
            return Err(StepDownError::Refused(
                "no other member has caught up with the log within 2 s: not stepping down".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Commits the handover naming `to` and what still runs here. Bounded: with every other
/// member gone (SIGTERM to all hosts at once) nothing commits, and a shutdown must still end
/// within its drain timeout (issue 32, item 13).
async fn commit_handover(
    term: &Term<'_>,
    to: u64,
    running: BTreeSet<String>,
) -> Result<(), StepDownError> {
    let handover = Handover {
        from: term.node.id,
        to,
        running,
        until_ms: now_ms() + term.drain_timeout.as_millis() as i64,
    };
    let proposed = term.node.propose(Command::Handover {
        epoch: term.epoch,
        handover,
    });
    match tokio::time::timeout(HANDOVER_COMMIT_WAIT, proposed).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(StepDownError::Stopped(format!(
            "replicating the handover: {e}"
        ))),
        Err(_) => Err(StepDownError::Stopped(format!(
            "the handover was not committed within {HANDOVER_COMMIT_WAIT:?}: no quorum"
        ))),
    }
}

/// Lets this member campaign again. After a handover its election timer runs again from
/// now; on a busy machine the new leader's first heartbeat can come later than that, and a
/// campaign from here would unseat it mid-takeover. So elections come back once the new
/// leader is heard (or, if it never is, after `patience`: it may have failed at once).
fn elections_back(node: &Node, handed_over: bool, patience: Duration) {
    if !handed_over {
        node.raft.runtime_config().elect(true);
        return;
    }
    let node = node.clone();
    tokio::spawn(async move {
        let until = Instant::now() + patience;
        while node.leader().is_none_or(|l| l == node.id) && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        node.raft.runtime_config().elect(true);
    });
}

#[derive(Debug, thiserror::Error)]
pub enum StepDownError {
    /// Nothing changed: this host stays active.
    #[error("{0}")]
    Refused(String),
    /// The feed stopped but no member took over: hand over the slow way.
    #[error("{0}")]
    Stopped(String),
}

/// Attempts (100 ms apart) after which a handover not yet committed is taken never to be.
const NEVER_COMMITTED_AFTER: usize = 10;

/// Once the feed has drained, tells the new leader which activations of the handover
/// finished here and that this host's containers are free again; retried while the
/// leadership settles.
pub async fn hand_back(
    node: Node,
    running: BTreeSet<String>,
    in_flight: Arc<InFlight>,
    pool: Arc<Pool>,
) {
    let completed: Vec<String> = in_flight.acknowledged();
    let finished: BTreeSet<&String> = completed.iter().collect();
    let handback = Handback {
        from: node.id,
        unfinished: running
            .iter()
            .filter(|id| !finished.contains(id))
            .cloned()
            .collect(),
        completed,
        containers: pool.idle_ids(),
    };
    let body = serde_json::to_vec(&handback).expect("handback json");
    for attempt in 0..600 {
        // A step-down whose handover never committed (no quorum: every member stopping at
        // once) lent nothing: the next active host waits for no handback from here.
        let committed = node.state().has_handover_from(node.id);
        if attempt >= NEVER_COMMITTED_AFTER && !committed {
            tracing::warn!("the handover was never committed: nothing to hand back");
            return;
        }
        if attempt >= 200 && node.is_leader() {
            // the step-down did not complete and this host still leads (it is stopping, or
            // handing over the slow way): whoever claims next waits out the handover's deadline
            tracing::warn!("no other member leads: not handing back");
            return;
        }
        let leader = node.leader().filter(|l| *l != node.id);
        if let Some(leader) = leader {
            match node
                .call_member(
                    leader,
                    "/raft/handback",
                    body.clone(),
                    Duration::from_secs(2),
                )
                .await
            {
                Ok(_) => {
                    tracing::info!(
                        leader,
                        completed = handback.completed.len(),
                        unfinished = handback.unfinished.len(),
                        containers = handback.containers.len(),
                        "handed back what ran here after the step-down"
                    );
                    return;
                }
                Err(e) if attempt % 10 == 0 => {
                    tracing::warn!(attempt, "handing back to member {leader}: {e}")
                }
                Err(_) => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tracing::error!(
        "could not hand back to the new leader: it destroys the containers that ran here and \
         runs again what was not acknowledged once the handover's deadline passes"
    );
}
