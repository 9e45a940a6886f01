//! What the pool learns as it runs: how long each action holds a warm container, and how long
//! a new container takes. With both, an activation that finds every warm container of its
//! action busy can tell whether waiting for one is quicker than starting another — after a
//! failover the backlog then drains through the re-attached warm containers instead of a
//! storm of cold starts.

use super::WarmKey;
use std::collections::HashMap;
use std::time::Duration;

/// A cold start's cost before one was measured: container create and start, then `/init`.
pub const COLD_START_GUESS: Duration = Duration::from_millis(500);

/// Exponentially weighted averages, newest sample weighted 1/4.
#[derive(Debug, Default)]
pub struct Timing {
    held: HashMap<WarmKey, Duration>,
    cold: Option<Duration>,
}

fn blend(old: Option<Duration>, sample: Duration) -> Duration {
    match old {
        None => sample,
        Some(old) => (old * 3 + sample) / 4,
    }
}

impl Timing {
    /// A warm container of `key` was held this long (run and logs).
    pub fn held(&mut self, key: &WarmKey, d: Duration) {
        let old = self.held.get(key).copied();
        self.held.insert(key.clone(), blend(old, d));
    }

    /// A new container took this long to create.
    pub fn cold(&mut self, d: Duration) {
        self.cold = Some(blend(self.cold, d));
    }

    pub fn cold_start(&self) -> Duration {
        self.cold.unwrap_or(COLD_START_GUESS)
    }

    /// How long an activation of `key` should wait for one of its `busy` warm containers,
    /// with `queued` activations of it already waiting, or `None` when starting a new
    /// container is expected to be quicker. An action never measured is assumed to hold its
    /// container a quarter of a cold start.
    pub fn wait_for_warm(&self, key: &WarmKey, busy: usize, queued: usize) -> Option<Duration> {
        if busy == 0 {
            return None;
        }
        let cold = self.cold_start();
        let held = self.held.get(key).copied().unwrap_or(cold / 4);
        let expected = held * (queued as u32 + 1) / busy as u32;
        (expected < cold).then_some(expected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> WarmKey {
        WarmKey {
            namespace: "guest".into(),
            action: "guest/a".into(),
            revision: "1".into(),
        }
    }

    #[test]
    fn a_short_action_waits_for_its_warm_container() {
        let mut t = Timing::default();
        t.cold(Duration::from_millis(800));
        t.held(&key(), Duration::from_millis(10));
        assert_eq!(
            t.wait_for_warm(&key(), 1, 0),
            Some(Duration::from_millis(10))
        );
        // ten already queued behind one busy container: still quicker than 800 ms
        assert_eq!(
            t.wait_for_warm(&key(), 1, 10),
            Some(Duration::from_millis(110))
        );
    }

    #[test]
    fn a_long_action_or_a_long_queue_starts_a_new_container() {
        let mut t = Timing::default();
        t.cold(Duration::from_millis(400));
        t.held(&key(), Duration::from_millis(2_000));
        assert_eq!(t.wait_for_warm(&key(), 1, 0), None);
        t.held = HashMap::new();
        t.held(&key(), Duration::from_millis(50));
        assert_eq!(t.wait_for_warm(&key(), 1, 8), None, "9 × 50 ms > 400 ms");
        assert_eq!(t.wait_for_warm(&key(), 0, 0), None, "nothing to wait for");
    }

    #[test]
    fn averages_move_a_quarter_towards_each_sample() {
        let mut t = Timing::default();
        t.cold(Duration::from_millis(400));
        t.cold(Duration::from_millis(800));
        assert_eq!(t.cold_start(), Duration::from_millis(500));
    }
}
