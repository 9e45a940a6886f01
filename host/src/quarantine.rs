//! Containers that were busy when the host running them failed: held apart, then adopted.
//!
//! Such a container's activation has an unknown outcome (the delivery contract decides what
//! becomes of the activation), but the container itself is usually fine and finishes that
//! activation moments later. Offering it while the activation still runs is not safe with
//! every runtime: upstream's Node.js proxy refuses a second `/run` during one (403), but the
//! Go action loop (`openwhisk-runtime-go`, used by most runtimes) has no lock — a second
//! `/run` writes to the same pipe and may read the first one's answer. So a quarantined
//! container is offered to nothing until its output shows the activation ended: the
//! end-of-activation sentinel on stdout and on stderr, written after it became busy, which
//! every OpenWhisk runtime prints once `/run` has answered. Then it is adopted as it was
//! recorded (warm for its action); one whose sentinels do not come by the deadline (an
//! action past its limit, a stuck runtime) is destroyed and forgotten.
//!
//! Only warm containers are held: one busy without an action was being initialized, and
//! what its `/init` left behind is unknown, so it is destroyed at the takeover as before.

use crate::activation::logs::SENTINEL;
use crate::cluster::state::ContainerRecord;
use crate::cluster::Node;
use crate::factory::ContainerFactory;
use crate::pool::Pool;
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

/// Watches `held` until each shows its activation ended (adopted into `pool`, recorded idle)
/// or `deadline` passes (destroyed, forgotten), or `term_ended` turns true (left as they are
/// to the next active host, which quarantines them in turn).
pub async fn release(
    node: Node,
    epoch: u64,
    factory: Arc<dyn ContainerFactory>,
    pool: Arc<Pool>,
    held: Vec<ContainerRecord>,
    deadline: Duration,
    mut term_ended: watch::Receiver<bool>,
) -> Released {
    let mut released = Released::default();
    let mut waiting = held;
    let until = tokio::time::Instant::now() + deadline;
    while !waiting.is_empty() {
        let mut ended = Vec::new();
        let mut still = Vec::new();
        for record in waiting {
            // from just before it became busy (an earlier activation's sentinels come before)
            let since = u64::try_from(record.last_use_ms.saturating_sub(5)).unwrap_or(0);
            match factory
                .logs(&record.container.id, since, MAX_BYTES)
                .await
                .map(|text| activation_ended(&text))
            {
                Ok(true) => ended.push(record.container.id.clone()),
                Ok(false) => still.push(record),
                Err(e) => {
                    tracing::warn!(container = %record.container.id, "quarantine: reading its output: {e}");
                    still.push(record);
                }
            }
        }
        if !ended.is_empty() {
            tracing::info!(containers = ?ended, "quarantine: their activation ended; adopting them");
            match crate::failover::take_back(&node, epoch, &factory, &pool, &ended).await {
                Ok(n) => {
                    released.adopted += n;
                    released.destroyed += ended.len() - n;
                }
                Err(e) => tracing::warn!("quarantine: recording adopted containers: {e}"),
            }
        }
        waiting = still;
        if waiting.is_empty() {
            break;
        }
        if tokio::time::Instant::now() >= until {
            let ids: Vec<String> = waiting.iter().map(|r| r.container.id.clone()).collect();
            tracing::warn!(containers = ?ids, "quarantine: no end of their activation within {deadline:?}; destroying them");
            released.destroyed += ids.len();
            if let Err(e) = crate::failover::forget(&node, epoch, &factory, ids).await {
                tracing::warn!("quarantine: forgetting destroyed containers: {e}");
            }
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
