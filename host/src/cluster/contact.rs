//! What a member knows of its leader and tells a peer that pings it (`/raft/ping`): when it
//! last heard a leader, its term and how far it applied. The campaign guard reads peers'
//! answers; the peer listener writes this member's.

use super::types::Raft;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// When this member last heard a leader (an append-entries it accepted, or being the leader).
#[derive(Debug)]
pub struct LeaderContact {
    start: Instant,
    /// Milliseconds after `start`; `u64::MAX`: never.
    last: AtomicU64,
}

impl Default for LeaderContact {
    fn default() -> Self {
        LeaderContact {
            start: Instant::now(),
            last: AtomicU64::new(u64::MAX),
        }
    }
}

impl LeaderContact {
    pub fn heard(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last.store(ms, Ordering::Relaxed);
    }

    /// How long ago a leader was last heard; `None`: never.
    pub fn ago(&self) -> Option<Duration> {
        match self.last.load(Ordering::Relaxed) {
            u64::MAX => None,
            ms => Some(
                self.start
                    .elapsed()
                    .saturating_sub(Duration::from_millis(ms)),
            ),
        }
    }
}

/// A ping's answer: the peer's term, how long ago it heard a leader (0 when it leads) and the
/// last log index it applied.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Pong {
    pub term: u64,
    pub leader_heard_ms_ago: Option<u64>,
    #[serde(default)]
    pub last_applied: Option<u64>,
}

impl Pong {
    /// What this member answers.
    pub fn of(raft: &Raft, contact: &LeaderContact) -> Pong {
        let m = raft.metrics().borrow().clone();
        let leads = m.current_leader == Some(m.id);
        Pong {
            term: m.current_term,
            leader_heard_ms_ago: if leads {
                Some(0)
            } else {
                contact.ago().map(|d| d.as_millis() as u64)
            },
            last_applied: m.last_applied.map(|l| l.index),
        }
    }

    /// Whether this peer would refuse a candidate at `term`: it hears a live leader of a term
    /// at least as high.
    pub fn hears_a_leader(&self, term: u64, timeout: Duration) -> bool {
        self.term >= term
            && self
                .leader_heard_ms_ago
                .is_some_and(|ms| Duration::from_millis(ms) < timeout)
    }
}
