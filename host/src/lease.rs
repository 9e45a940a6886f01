//! The active host's lease. While it is held, openraft's own measurement renews it: the
//! leader's metrics carry `millis_since_quorum_ack`, how long ago a quorum acknowledged a
//! heartbeat or append this leader *sent* (openraft times acknowledgements from the sending
//! instant), so no extra rounds are needed. Once it has lapsed (or before the first
//! acknowledgement), only an explicit confirmation round renews it, timed from before it was
//! sent: a metrics report read after a pause may predate the pause and look fresh.
//!
//! Why it is safe: openraft 0.9's followers refuse to vote for anyone until
//! `election-timeout-max-ms` has passed since they last heard from their leader, and they heard
//! from it no earlier than the instant the acknowledged message was sent. A report renews a
//! held lease at most `lease-ms` late, so the lease never reaches past 2 × `lease-ms` after
//! the real acknowledgement; the config keeps that below `election-timeout-max-ms` (and
//! `lease-ms` below `election-timeout-min-ms`), so it lapses before any member can be elected.
//!
//! A lapse is not the end of the role: pulling and container calls stop while it is lapsed and
//! resume as soon as a quorum acknowledges this leader again in the same term, with the same
//! pool and feed. Only a new term, or no longer being leader, ends the role.

use crate::cluster::Node;
use crate::fence::Gate;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// When a quorum last acknowledged this leader, on a monotonic clock.
#[derive(Debug, Clone)]
pub struct Lease {
    clock: Instant,
    lease_ms: u64,
    /// Milliseconds on `clock` at which the last acknowledged message was sent, plus one
    /// (0: never acknowledged).
    acked_at: Arc<AtomicU64>,
}

impl Lease {
    pub fn new(lease: Duration) -> Lease {
        Lease {
            clock: Instant::now(),
            lease_ms: lease.as_millis() as u64,
            acked_at: Arc::default(),
        }
    }

    pub fn now_ms(&self) -> u64 {
        self.clock.elapsed().as_millis() as u64
    }

    /// A metrics report: a quorum acknowledged what this leader sent `ago` before
    /// `observed_ms` (on this lease's clock). It only *extends* a lease that is still held:
    /// a report can be read some time after openraft made it — across a whole SIGSTOP, say —
    /// and would then look fresher than it is. While the lease is held that delay is below
    /// `lease-ms`, so the lease never reaches past 2 × `lease-ms` after the real
    /// acknowledgement (the config keeps that below `election-timeout-max-ms`). A lapsed lease
    /// is renewed only by [`Lease::confirmed`]. An older report never moves it back.
    pub fn acknowledged(&self, observed_ms: u64, ago: Duration) {
        if !self.held() {
            return;
        }
        let at = observed_ms.saturating_sub(ago.as_millis() as u64);
        self.acked_at.fetch_max(at + 1, Ordering::SeqCst);
    }

    /// An explicit confirmation round asked at `asked_ms` (read before the round was sent)
    /// succeeded: exact, whatever happened meanwhile.
    pub fn confirmed(&self, asked_ms: u64) {
        self.acked_at.fetch_max(asked_ms + 1, Ordering::SeqCst);
    }

    /// True while the last acknowledgement is younger than the lease. A paused process
    /// (SIGSTOP) wakes up with an old acknowledgement and so touches nothing.
    pub fn held(&self) -> bool {
        match self.acked_at.load(Ordering::SeqCst) {
            0 => false,
            at => self.now_ms() < at - 1 + self.lease_ms,
        }
    }

    /// The gate the pool's factory, the proxy client and the feed check.
    pub fn gate(&self) -> Gate {
        let lease = self.clone();
        Gate(Arc::new(move || lease.held()))
    }
}

/// Renews `lease` from the member's Raft metrics for as long as it leads in `term`; when it
/// no longer does (a new term, or another role), sends `true` on `lost` and returns.
pub fn watch_leadership(
    node: &Node,
    term: u64,
    lease: Lease,
    lost: watch::Sender<bool>,
) -> tokio::task::JoinHandle<()> {
    let mut metrics = node.raft.metrics();
    let node = node.clone();
    tokio::spawn(async move {
        let round = Duration::from_millis(lease.lease_ms / 4).max(Duration::from_millis(5));
        // After failed rounds (no quorum reachable), wait longer before the next one: at first
        // `lease/4`, doubling to half a second, so an unreachable quorum is not asked in a
        // busy loop. A round that succeeds resets it.
        let mut pause = round;
        let mut was_held = false;
        loop {
            {
                let m = metrics.borrow_and_update();
                if m.current_term != term || m.current_leader != Some(node.id) {
                    tracing::warn!(
                        term,
                        now = m.current_term,
                        leader = ?m.current_leader,
                        "leadership lost: stepping down"
                    );
                    let _ = lost.send(true);
                    return;
                }
                if let Some(ms) = m.millis_since_quorum_ack {
                    lease.acknowledged(lease.now_ms(), Duration::from_millis(ms));
                }
            }
            if was_held && !lease.held() {
                tracing::warn!(
                    term,
                    "the lease lapsed: no quorum acknowledgement within lease-ms"
                );
                crate::metrics::global().lease_lapsed();
            }
            was_held = lease.held();
            if !was_held {
                // Lapsed (or never held): only an explicit round, timed from before it was
                // sent, renews it.
                let asked = lease.now_ms();
                let limit = Duration::from_millis(lease.lease_ms);
                if matches!(
                    tokio::time::timeout(limit, node.confirm_leadership()).await,
                    Ok(true)
                ) {
                    lease.confirmed(asked);
                    pause = round;
                    continue;
                }
                // the loop's top sees a new term or leader in the latest metrics
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(500));
                continue;
            }
            if metrics.changed().await.is_err() {
                let _ = lost.send(true);
                return;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_acknowledged_is_not_held() {
        assert!(!Lease::new(Duration::from_millis(100)).held());
    }

    #[test]
    fn held_until_the_lease_passes_since_the_acknowledged_send() {
        let lease = Lease::new(Duration::from_millis(100));
        lease.confirmed(lease.now_ms());
        assert!(lease.held());
        lease.acknowledged(lease.now_ms(), Duration::from_millis(1));
        assert!(lease.held());
        // a paused process: nothing renews it
        std::thread::sleep(Duration::from_millis(120));
        assert!(!lease.held());
        // a metrics report read after the pause may predate it: it cannot revive the lease
        lease.acknowledged(lease.now_ms(), Duration::from_millis(5));
        assert!(!lease.held(), "a stale report revived a lapsed lease");
        // an explicit round can: held again, same lease
        lease.confirmed(lease.now_ms());
        assert!(lease.held());
    }

    #[test]
    fn a_slow_quorum_does_not_renew_it() {
        let lease = Lease::new(Duration::from_millis(100));
        std::thread::sleep(Duration::from_millis(150));
        // a round asked 120 ms ago that only now came back: already past the lease
        lease.confirmed(lease.now_ms() - 120);
        assert!(!lease.held());
    }

    #[test]
    fn an_older_report_never_moves_it_back() {
        // a long lease: the check must not depend on how long this thread sleeps under load
        let lease = Lease::new(Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(60));
        let now = lease.now_ms();
        lease.confirmed(now);
        lease.acknowledged(now, Duration::from_millis(59));
        assert_eq!(
            lease.acked_at.load(Ordering::SeqCst),
            now + 1,
            "the newer acknowledgement still counts"
        );
        assert!(lease.held());
    }
}
