//! The completed activation ids the cluster keeps for de-duplication after a failover.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::{HashSet, VecDeque};

/// The newest completed ids in arrival order, at most a cap, with a set for the lookup the
/// feed makes for every message it takes (`is_completed`): a scan of the list cost up to
/// 10,000 string comparisons per message under the state lock. Serialized as the list alone,
/// as before (snapshots and entries of earlier versions read the same).
#[derive(Debug, Clone, Default)]
pub struct CompletedIds {
    order: VecDeque<String>,
    set: HashSet<String>,
}

impl CompletedIds {
    /// Adds `ids` not already kept, then forgets the oldest beyond `cap`.
    pub fn extend<'a>(&mut self, ids: impl IntoIterator<Item = &'a String>, cap: usize) {
        for id in ids {
            if self.set.insert(id.clone()) {
                self.order.push_back(id.clone());
            }
        }
        while self.order.len() > cap {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
    }

    pub fn contains(&self, id: &str) -> bool {
        self.set.contains(id)
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

impl PartialEq for CompletedIds {
    fn eq(&self, other: &Self) -> bool {
        self.order == other.order
    }
}

impl Serialize for CompletedIds {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.order.serialize(s)
    }
}

impl<'de> Deserialize<'de> for CompletedIds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let order = VecDeque::<String>::deserialize(d)?;
        let set = order.iter().cloned().collect();
        Ok(CompletedIds { order, set })
    }
}

#[cfg(test)]
mod tests {
    use super::CompletedIds;

    #[test]
    fn keeps_the_newest_up_to_the_cap_and_reads_as_the_old_list() {
        let mut c = CompletedIds::default();
        let ids: Vec<String> = (0..5).map(|i| i.to_string()).collect();
        c.extend(&ids, 3);
        assert_eq!(c.len(), 3);
        assert!(!c.contains("1") && c.contains("2") && c.contains("4"));
        // a repeated id is kept once
        c.extend(&["4".to_string()], 3);
        assert_eq!(c.len(), 3);
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(json, r#"["2","3","4"]"#);
        let back: CompletedIds = serde_json::from_str(&json).unwrap();
        assert_eq!(back, c);
        assert!(back.contains("3"));
    }
}
