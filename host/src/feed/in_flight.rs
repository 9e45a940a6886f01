//! The activations a host is running, by id: what a planned step-down leaves to finish here
//! (the next active host does not run them again), and how each of those ended here.

use std::collections::BTreeSet;
use std::sync::Mutex;

/// How an activation stopped running here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Its acknowledgement is published.
    Acknowledged,
    /// Fenced before its `/run` was sent: it never reached a container here.
    Unsent,
    /// Given up with its outcome unknown: it may have run.
    Unknown,
}

#[derive(Debug, Default)]
pub struct InFlight {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    running: BTreeSet<String>,
    /// Set by [`InFlight::hand_over`]: from then on acknowledged ids are kept.
    handing_over: bool,
    /// What ran when the handover began.
    handed_over: Option<BTreeSet<String>>,
    acknowledged: Vec<String>,
    /// Fenced before their `/run` (only ever at the end of a term).
    unsent: Vec<String>,
    /// The feed takes no more messages.
    stopped_pulling: bool,
}

impl InFlight {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("in-flight lock")
    }

    pub fn begin(&self, id: &str) {
        self.lock().running.insert(id.to_owned());
    }

    /// The activation stopped running here, as `how` says.
    pub fn end(&self, id: &str, how: End) {
        let mut inner = self.lock();
        inner.running.remove(id);
        match how {
            // only at the end of a term (a fenced activation otherwise waits for the lease),
            // so these are few; kept from the start, as the feed may stop them just before
            // the step-down reads what runs
            End::Unsent => inner.unsent.push(id.to_owned()),
            End::Acknowledged if inner.handing_over => inner.acknowledged.push(id.to_owned()),
            End::Acknowledged | End::Unknown => {}
        }
    }

    /// From now on how each activation ends is kept (for this host's next term, should it
    /// lead again while they finish), without handing them over.
    pub fn keep_outcomes(&self) {
        self.lock().handing_over = true;
    }

    /// What runs now, and what was fenced before its `/run` (never sent here, its offset
    /// not passed: the next host reads it again); from now on acknowledgements are kept for
    /// [`InFlight::acknowledged`].
    pub fn hand_over(&self) -> BTreeSet<String> {
        let mut inner = self.lock();
        inner.handing_over = true;
        let mut running = inner.running.clone();
        running.extend(inner.unsent.iter().cloned());
        inner.handed_over = Some(running.clone());
        running
    }

    /// What ran when [`InFlight::hand_over`] was called, if it was.
    pub fn handed_over(&self) -> Option<BTreeSet<String>> {
        self.lock().handed_over.clone()
    }

    /// Said by the feed once it takes no more messages: what runs can only shrink.
    pub fn stop_pulling(&self) {
        self.lock().stopped_pulling = true;
    }

    pub fn has_stopped_pulling(&self) -> bool {
        self.lock().stopped_pulling
    }

    pub fn running(&self) -> usize {
        self.lock().running.len()
    }

    /// The activations acknowledged since [`InFlight::hand_over`].
    pub fn acknowledged(&self) -> Vec<String> {
        self.lock().acknowledged.clone()
    }

    /// The activations fenced before their `/run`.
    pub fn unsent(&self) -> Vec<String> {
        self.lock().unsent.clone()
    }

    /// Whether `id` still runs here.
    pub fn is_running(&self, id: &str) -> bool {
        self.lock().running.contains(id)
    }

    /// Whether `id` was acknowledged here since [`InFlight::hand_over`].
    pub fn was_acknowledged(&self, id: &str) -> bool {
        self.lock().acknowledged.iter().any(|a| a == id)
    }

    /// Whether `id` was fenced here before its `/run`.
    pub fn was_unsent(&self, id: &str) -> bool {
        self.lock().unsent.iter().any(|a| a == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_is_acknowledged_after_the_handover_is_reported() {
        let f = InFlight::default();
        f.begin("before");
        f.end("before", End::Acknowledged);
        f.begin("a");
        f.begin("b");
        f.begin("c");
        assert_eq!(f.hand_over(), ["a", "b", "c"].map(String::from).into());
        f.end("a", End::Acknowledged);
        f.end("b", End::Unsent); // fenced before its /run: the next host runs it
        assert_eq!(f.acknowledged(), vec!["a".to_string()]);
        assert_eq!(f.unsent(), vec!["b".to_string()]);
        assert_eq!(f.running(), 1);
        f.end("c", End::Unknown); // given up mid-run: neither
        assert_eq!((f.acknowledged().len(), f.unsent().len()), (1, 1));
    }

    /// Issue 32: activations the feed stopped while they waited for the lease, just before a
    /// step-down read what runs, were left out of the handover: the next host, seeing their
    /// journaled start, answered them "may have run" though they never reached a container.
    #[test]
    fn what_was_fenced_before_the_handover_is_handed_over_as_unsent() {
        let f = InFlight::default();
        f.begin("fenced");
        f.begin("running");
        f.end("fenced", End::Unsent);
        assert_eq!(
            f.hand_over(),
            ["fenced", "running"].map(String::from).into()
        );
        assert_eq!(f.unsent(), vec!["fenced".to_string()]);
    }

    #[test]
    fn a_lost_term_keeps_outcomes_for_this_hosts_next_term_without_handing_over() {
        let f = InFlight::default();
        f.begin("a");
        f.begin("b");
        f.begin("c");
        f.keep_outcomes();
        f.end("a", End::Acknowledged);
        f.end("b", End::Unsent);
        assert!(f.was_acknowledged("a") && !f.was_acknowledged("b"));
        assert!(f.was_unsent("b") && !f.was_unsent("a"));
        assert!(f.is_running("c") && !f.is_running("a"));
        assert_eq!(
            f.handed_over(),
            None,
            "nothing to hand back to another member"
        );
    }
}
