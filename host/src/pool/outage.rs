//! Waiting out an engine outage: a Docker daemon restart takes its API and its port proxies
//! away for a few seconds while the containers keep running. Calls that fail because the
//! engine is away are asked again with doubling pauses, for up to [`ENGINE_OUTAGE`] in all.

use std::time::Duration;
use tokio::time::Instant;

/// How long a call waits for an unavailable engine to come back before the activation is
/// answered with an error.
pub const ENGINE_OUTAGE: Duration = Duration::from_secs(15);

/// The backoff of one call through an outage.
#[derive(Debug)]
pub struct Outage {
    started: Instant,
    pause: Duration,
    max_pause: Duration,
}

impl Outage {
    /// Pauses start at `first` and double up to `max_pause`.
    pub fn new(first: Duration, max_pause: Duration) -> Outage {
        Outage {
            started: Instant::now(),
            pause: first,
            max_pause,
        }
    }

    /// Whether one more wait still ends inside [`ENGINE_OUTAGE`].
    pub fn may_wait(&self) -> bool {
        self.started.elapsed() + self.pause < ENGINE_OUTAGE
    }

    /// The next pause, for the log line.
    pub fn pause(&self) -> Duration {
        self.pause
    }

    /// Sleeps the next pause and doubles it.
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.pause).await;
        self.pause = (self.pause * 2).min(self.max_pause);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn pauses_double_up_to_the_cap_and_stop_inside_the_outage() {
        let mut outage = Outage::new(Duration::from_millis(100), Duration::from_secs(1));
        let started = Instant::now();
        let mut pauses = Vec::new();
        while outage.may_wait() {
            pauses.push(outage.pause().as_millis());
            outage.wait().await;
        }
        assert_eq!(pauses[..5], [100, 200, 400, 800, 1000]);
        assert!(pauses[5..].iter().all(|&p| p == 1000), "{pauses:?}");
        let waited = started.elapsed();
        assert!(
            waited > ENGINE_OUTAGE - Duration::from_secs(1) && waited < ENGINE_OUTAGE,
            "{waited:?}"
        );
    }
}
