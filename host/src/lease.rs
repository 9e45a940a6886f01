//! The active host's lease, from what openraft already measures: the leader's metrics carry
//! `millis_since_quorum_ack`, how long ago a quorum acknowledged a heartbeat or append that
//! this leader *sent* (openraft times acknowledgements from the sending instant). The lease is
//! held while that instant is younger than `lease-ms`; no extra confirmation rounds are sent.
//!
//! Why it is safe: openraft 0.9's followers refuse to vote for anyone until
//! `election-timeout-max-ms` has passed since they last heard from their leader, and they heard
//! from it no earlier than the instant the acknowledged message was sent. The lease is read on
//! this host's monotonic clock and `lease-ms` is shorter than `election-timeout-min-ms` (the
//! config enforces it), so it lapses before any member can be elected. The metrics are read a
//! little after openraft computed them (a scheduling delay, milliseconds); the margin between
//! `lease-ms` and `election-timeout-max-ms` (200 ms with the defaults) covers it.
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

    /// A quorum acknowledged what this leader sent `ago` before `observed_ms` (on this
    /// lease's clock). An older report never moves the lease back.
    pub fn acknowledged(&self, observed_ms: u64, ago: Duration) {
        let at = observed_ms.saturating_sub(ago.as_millis() as u64);
        self.acked_at.fetch_max(at + 1, Ordering::SeqCst);
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
    let id = node.id;
    tokio::spawn(async move {
        loop {
            {
                let m = metrics.borrow_and_update();
                if m.current_term != term || m.current_leader != Some(id) {
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
        let now = lease.now_ms();
        lease.acknowledged(now, Duration::ZERO);
        assert!(lease.held());
        // a paused process: nothing renews it
        std::thread::sleep(Duration::from_millis(120));
        assert!(!lease.held());
        // a quorum acknowledges again: held again, same lease
        lease.acknowledged(lease.now_ms(), Duration::from_millis(5));
        assert!(lease.held());
    }

    #[test]
    fn a_slow_quorum_does_not_renew_it() {
        let lease = Lease::new(Duration::from_millis(100));
        std::thread::sleep(Duration::from_millis(150));
        // acknowledged, but of something sent 120 ms ago: already past the lease
        lease.acknowledged(lease.now_ms(), Duration::from_millis(120));
        assert!(!lease.held());
    }

    #[test]
    fn an_older_report_never_moves_it_back() {
        let lease = Lease::new(Duration::from_millis(100));
        std::thread::sleep(Duration::from_millis(60));
        let now = lease.now_ms();
        lease.acknowledged(now, Duration::ZERO);
        lease.acknowledged(now, Duration::from_millis(59));
        std::thread::sleep(Duration::from_millis(50));
        assert!(lease.held(), "the newer acknowledgement still counts");
    }
}
