//! The activations a host is running, by id: what a planned step-down leaves to finish here
//! (the next active host does not run them again), and which of those were acknowledged.

use std::collections::BTreeSet;
use std::sync::Mutex;

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

    /// The activation stopped running: `acknowledged` if its acknowledgement is published.
    pub fn end(&self, id: &str, acknowledged: bool) {
        let mut inner = self.lock();
        inner.running.remove(id);
        if acknowledged && inner.handing_over {
            inner.acknowledged.push(id.to_owned());
        }
    }

    /// What runs now; from now on acknowledgements are kept for [`InFlight::acknowledged`].
    pub fn hand_over(&self) -> BTreeSet<String> {
        let mut inner = self.lock();
        inner.handing_over = true;
        let running = inner.running.clone();
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_is_acknowledged_after_the_handover_is_reported() {
        let f = InFlight::default();
        f.begin("before");
        f.end("before", true);
        f.begin("a");
        f.begin("b");
        f.begin("c");
        assert_eq!(f.hand_over(), ["a", "b", "c"].map(String::from).into());
        f.end("a", true);
        f.end("b", false); // fenced: not acknowledged, the next host runs it
        assert_eq!(f.acknowledged(), vec!["a".to_string()]);
        assert_eq!(f.running(), 1);
    }
}
