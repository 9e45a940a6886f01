//! Why containers came and went: counted by cause, so an operator (and the demo) can tell a
//! burst from an eviction from an idle timeout.

/// Containers created and destroyed since the pool started, by cause.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Churn {
    /// Prewarm containers created to keep the stem cells topped up.
    pub created_prewarm: u64,
    /// Containers created for an activation that found no warm container with spare
    /// concurrency and no prewarm of its kind: a burst, or a new action.
    pub created_cold: u64,
    /// Idle warm containers destroyed to make room for another action (LRU).
    pub destroyed_evicted: u64,
    /// Warm containers idle past the idle timeout.
    pub destroyed_idle: u64,
    /// Surplus prewarms of a reactive stem cell that were not used within its TTL.
    pub destroyed_prewarm_expired: u64,
    /// Containers that failed `/init`, timed out or died: never reused.
    pub destroyed_failed: u64,
    /// Labelled containers the pool did not know (found by the periodic reconcile).
    pub destroyed_orphans: u64,
    /// Containers the engine no longer listed (their engine machine failed, or they were
    /// removed behind the host's back), found by the periodic reconcile: idle ones are
    /// forgotten at once, busy ones when their activation gives them back.
    pub vanished: u64,
}

impl Churn {
    /// Each count with its cause, as `/metrics` labels them.
    pub fn by_cause(&self) -> [(&'static str, u64); 8] {
        [
            ("created_prewarm", self.created_prewarm),
            ("created_cold", self.created_cold),
            ("destroyed_evicted", self.destroyed_evicted),
            ("destroyed_idle", self.destroyed_idle),
            ("destroyed_prewarm_expired", self.destroyed_prewarm_expired),
            ("destroyed_failed", self.destroyed_failed),
            ("destroyed_orphans", self.destroyed_orphans),
            ("vanished", self.vanished),
        ]
    }
}
