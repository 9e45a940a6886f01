//! Containers that were busy when the host running them failed: held apart, then adopted.
//!
//! Such a container's activation has an unknown outcome (the delivery contract decides what
//! becomes of the activation), but the container itself is usually fine and finishes that
//! activation moments later. Offering it while the activation still runs is not safe with
//! every runtime: upstream's Node.js proxy refuses a second `/run` during one (403), but the
//! Go action loop (`openwhisk-runtime-go`, used by most runtimes) has no lock — a second
//! `/run` writes to the same pipe and may read the first one's answer. So a quarantined
//! container is held in the pool as busy — offered to nothing, its memory counted, and
//! among its action's busy containers, so the takeover's backlog may wait for it rather than
//! cold-start as it would for any busy container — until its output shows the activation
//! ended: the end-of-activation sentinel on stdout and on stderr, written after it became
//! busy, which every OpenWhisk runtime prints once `/run` has answered. Then it is offered
//! again (recorded idle); one whose sentinels do not come by the deadline (an action past its
//! limit, a stuck runtime) is destroyed and forgotten.
//!
//! Only a warm container an activation that may have run was sent to is held (its start is
//! committed before its `/run`, with the container's id; the output counts from that start).
//! One busy with no such start never received `/run` — under at-most-once the `/run` waits
//! for the commit — and the takeover offers it at once (`failover::Plan::unstarted`). One
//! busy without an action was being initialized, and what its `/init` left behind is
//! unknown, so it is destroyed at the takeover as before.

use crate::activation::logs::SENTINEL;
use crate::cluster::Node;
use crate::factory::ContainerFactory;
use crate::failover::ToHold;
use crate::pool::{Allocation, Fate, Pool};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How long a quarantined container has to show its activation ended: OpenWhisk's default
/// action time limit (60 s), plus a margin for the log to reach the engine.
pub const DEADLINE: Duration = Duration::from_secs(65);

/// How often a quarantined container's output is read.
const POLL: Duration = Duration::from_millis(100);

/// Output read back at most per look (the sentinels are the last lines of an activation).
const MAX_BYTES: u32 = 4 * 1024 * 1024;

/// A container held apart: in the pool as busy, until its activation shows it ended.
#[derive(Debug)]
pub struct Held {
    allocation: Allocation,
    /// Epoch millis its activation started: that activation's output comes after.
    since_ms: i64,
}

/// What became of the quarantined containers of one takeover.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Released {
    pub adopted: usize,
    pub destroyed: usize,
}

/// Whether `output` (a plugin's `logs` answer since the container became busy) shows both
/// end-of-activation sentinels.
pub fn activation_ended(output: &str) -> bool {
    output.lines().filter(|l| l.contains(SENTINEL)).count() >= 2
}

/// Attaches the warm containers `records` names and puts them in `pool` as busy (memory
/// counted, offered to nothing; activations of their action may wait for them as for any
/// busy container). Those that cannot be attached are destroyed and forgotten: answers them
/// and how many those were.
pub async fn hold(
    node: &Node,
    epoch: u64,
    factory: &Arc<dyn ContainerFactory>,
    pool: &Pool,
    records: Vec<ToHold>,
) -> (Vec<Held>, usize) {
    let attaches = records
        .iter()
        .map(|h| crate::failover::attach_and_check(factory, crate::failover::known(&h.record)));
    let results = futures::future::join_all(attaches).await;
    let mut held = Vec::new();
    let mut failed = Vec::new();
    for (ToHold { record, since_ms }, result) in records.into_iter().zip(results) {
        match (result, record.warm) {
            (Ok(container), Some(key)) => held.push(Held {
                allocation: pool.adopt_busy(
                    container,
                    (&record.kind, &record.image),
                    record.memory_mb,
                    key,
                ),
                since_ms,
            }),
            (Ok(_), None) => failed.push(record.container.id),
            (Err(reason), _) => {
                tracing::warn!(container = %record.container.id, "quarantine: not attached: {reason}");
                failed.push(record.container.id);
            }
        }
    }
    let lost = failed.len();
    if !failed.is_empty() {
        if let Err(e) = crate::failover::forget(node, epoch, factory, failed).await {
            tracing::warn!("quarantine: forgetting containers not attached: {e}");
        }
    }
    (held, lost)
}

/// Watches `held` until each shows its activation ended (given back to `pool` for reuse, so
/// recorded idle) or `deadline` passes (given back to be destroyed), or `term_ended` turns
/// true (left as they are to the next active host, which holds them apart in turn).
pub async fn release(
    factory: Arc<dyn ContainerFactory>,
    pool: Arc<Pool>,
    held: Vec<Held>,
    deadline: Duration,
    mut term_ended: watch::Receiver<bool>,
    progress: impl Fn(Released) + Send,
) -> Released {
    let mut released = Released::default();
    let mut waiting = held;
    let until = tokio::time::Instant::now() + deadline;
    while !waiting.is_empty() {
        let mut still = Vec::new();
        // every held container's output at once: one at a time, a takeover that held many
        // took a round of engine calls per container before the last was looked at
        let looks = waiting.iter().map(|h| {
            // from its activation's start: an earlier activation's sentinels come before
            let since = u64::try_from(h.since_ms).unwrap_or(0);
            factory.logs(&h.allocation.container.id, since, MAX_BYTES)
        });
        let outputs = futures::future::join_all(looks).await;
        for (h, output) in waiting.into_iter().zip(outputs) {
            let id = &h.allocation.container.id;
            match output {
                Ok(text) if activation_ended(&text) => {
                    tracing::info!(container = %id, "quarantine: its activation ended; offered again");
                    pool.release(&h.allocation, Fate::Reuse);
                    released.adopted += 1;
                }
                Ok(_) => still.push(h),
                Err(e) => {
                    tracing::warn!(container = %id, "quarantine: reading its output: {e}");
                    still.push(h);
                }
            }
        }
        waiting = still;
        progress(released);
        if waiting.is_empty() {
            break;
        }
        if tokio::time::Instant::now() >= until {
            for h in &waiting {
                tracing::warn!(container = %h.allocation.container.id, "quarantine: no end of its activation within {deadline:?}; destroying it");
                pool.release(&h.allocation, Fate::Destroy);
            }
            released.destroyed += waiting.len();
            progress(released);
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = term_ended.changed() => {
                tracing::info!(containers = waiting.len(), "quarantine: the term ended; left to the next active host");
                break;
            }
        }
    }
    released
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_activation_ended_once_both_streams_show_the_sentinel() {
        let stdout = format!(
            "2026-12-07T07:00:00.1Z stdout: hello\n2026-12-07T07:00:00.2Z stdout: {SENTINEL}\n"
        );
        assert!(!activation_ended(""));
        assert!(
            !activation_ended(&stdout),
            "stdout alone: stderr may still come"
        );
        let both = format!("{stdout}2026-12-07T07:00:00.2Z stderr: {SENTINEL}\n");
        assert!(activation_ended(&both));
    }
}
