//! Which offsets are safe to record: an offset is recorded only once every activation before
//! it has been acknowledged (at least once delivery with out-of-order completions).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// In-flight offsets per partition.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    partitions: HashMap<i32, Partition>,
}

#[derive(Debug, Default)]
struct Partition {
    in_flight: BTreeSet<i64>,
    /// One past the highest offset seen.
    next: i64,
    /// What was last reported as committable.
    committed: i64,
}

impl OffsetTracker {
    pub fn begin(&mut self, partition: i32, offset: i64) {
        // Nothing before the first offset seen is ours to report.
        let p = self
            .partitions
            .entry(partition)
            .or_insert_with(|| Partition {
                committed: offset,
                next: offset,
                ..Default::default()
            });
        p.in_flight.insert(offset);
        p.next = p.next.max(offset + 1);
    }

    /// Marks `offset` done; returns the new committable offset (the next to consume) when it
    /// moved forward.
    pub fn done(&mut self, partition: i32, offset: i64) -> Option<i64> {
        let p = self.partitions.get_mut(&partition)?;
        p.in_flight.remove(&offset);
        let committable = p.in_flight.first().copied().unwrap_or(p.next);
        (committable > p.committed).then(|| {
            p.committed = committable;
            committable
        })
    }

    pub fn in_flight(&self) -> usize {
        self.partitions.values().map(|p| p.in_flight.len()).sum()
    }
}

/// The next offset to consume per partition, kept in a file (written atomically, fsynced).
#[derive(Debug)]
pub struct OffsetStore {
    path: PathBuf,
    offsets: BTreeMap<i32, i64>,
}

impl OffsetStore {
    pub fn open(path: &Path) -> std::io::Result<OffsetStore> {
        Ok(OffsetStore {
            path: path.to_owned(),
            offsets: crate::json_file::load(path)?,
        })
    }

    pub fn get(&self, partition: i32) -> Option<i64> {
        self.offsets.get(&partition).copied()
    }

    pub fn save(&mut self, partition: i32, next: i64) -> std::io::Result<()> {
        self.offsets.insert(partition, next);
        crate::json_file::save(&self.path, &self.offsets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_offsets_until_earlier_ones_finish() {
        let mut t = OffsetTracker::default();
        for o in 10..13 {
            t.begin(0, o);
        }
        assert_eq!(t.done(0, 11), None);
        assert_eq!(t.done(0, 12), None);
        assert_eq!(t.done(0, 10), Some(13));
        t.begin(0, 13);
        assert_eq!(t.done(0, 13), Some(14));
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn stores_offsets_durably() {
        let dir = std::env::temp_dir().join(format!("kw-offsets-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("offsets.json");
        let mut s = OffsetStore::open(&path).unwrap();
        assert_eq!(s.get(0), None);
        s.save(0, 42).unwrap();
        assert_eq!(OffsetStore::open(&path).unwrap().get(0), Some(42));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
