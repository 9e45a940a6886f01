//! The activation ids this feed took lately. A controller whose producer retried across a
//! broker failure can leave one activation in the topic twice, at two offsets (the 30-minute
//! chaos run found one: offsets 44,526 and 44,527, written 3 s apart). Both copies carry the
//! same activation id; the second is not run: one activation, one run, one completion.

use std::collections::{HashSet, VecDeque};

/// How many ids are remembered: far more than a backlog holds between a message and its
/// copy (a producer's retries follow within seconds).
pub const REMEMBERED: usize = 65_536;

/// A bounded memory of ids, oldest forgotten first.
#[derive(Debug, Default)]
pub struct TakenIds {
    order: VecDeque<String>,
    ids: HashSet<String>,
}

impl TakenIds {
    /// Remembers `id`; false when it was already taken (a copy).
    pub fn take(&mut self, id: &str) -> bool {
        if self.ids.contains(id) {
            return false;
        }
        if self.order.len() == REMEMBERED {
            if let Some(oldest) = self.order.pop_front() {
                self.ids.remove(&oldest);
            }
        }
        self.order.push_back(id.to_owned());
        self.ids.insert(id.to_owned());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::{TakenIds, REMEMBERED};

    #[test]
    fn a_copy_is_refused_until_its_id_is_forgotten() {
        let mut taken = TakenIds::default();
        assert!(taken.take("a"));
        assert!(!taken.take("a"), "a copy");
        for i in 0..REMEMBERED - 1 {
            assert!(taken.take(&i.to_string()));
        }
        assert!(
            !taken.take("a"),
            "still remembered: {REMEMBERED} ids in all"
        );
        assert!(taken.take("next"), "one more pushes the oldest out");
        assert!(taken.take("a"), "forgotten");
        assert_eq!(taken.order.len(), REMEMBERED);
        assert_eq!(taken.ids.len(), REMEMBERED);
    }
}
