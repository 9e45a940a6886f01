//! Which offsets are safe to record, and where they are kept: an offset is recorded only
//! once every activation before it has been acknowledged (at least once delivery with
//! out-of-order completions), in exactly one place per mode — `offsets.json` on a single host,
//! the replicated state in a cluster — so there is never a question which one is the truth.

use super::Progress;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use tokio::sync::mpsc;

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

/// Where the next offset to consume per partition is kept.
pub trait OffsetStore: Send + std::fmt::Debug {
    /// Where to start `partition` (`None`: the group's committed offset, else the earliest).
    fn start(&self, partition: i32) -> Option<i64>;
    /// Every activation before `next` on `partition` is acknowledged.
    fn record(&mut self, partition: i32, next: i64) -> std::io::Result<()>;
}

/// A single host's offsets: a file, written atomically and fsynced on every change.
#[derive(Debug)]
pub struct FileOffsets {
    path: PathBuf,
    offsets: BTreeMap<i32, i64>,
}

impl FileOffsets {
    pub fn open(path: &Path) -> std::io::Result<FileOffsets> {
        Ok(FileOffsets {
            path: path.to_owned(),
            offsets: crate::json_file::load(path)?,
        })
    }
}

impl OffsetStore for FileOffsets {
    fn start(&self, partition: i32) -> Option<i64> {
        self.offsets.get(&partition).copied()
    }

    fn record(&mut self, partition: i32, next: i64) -> std::io::Result<()> {
        self.offsets.insert(partition, next);
        crate::json_file::save(&self.path, &self.offsets)
    }
}

/// A cluster's offsets: the replicated ones this activity started from; each recorded offset
/// goes to the replicator, which proposes it through Raft (no file is written).
#[derive(Debug)]
pub struct ReplicatedOffsets {
    start: BTreeMap<i32, i64>,
    progress: Option<mpsc::UnboundedSender<Progress>>,
}

impl ReplicatedOffsets {
    pub fn new(
        start: BTreeMap<i32, i64>,
        progress: Option<mpsc::UnboundedSender<Progress>>,
    ) -> ReplicatedOffsets {
        ReplicatedOffsets { start, progress }
    }
}

impl OffsetStore for ReplicatedOffsets {
    fn start(&self, partition: i32) -> Option<i64> {
        self.start.get(&partition).copied()
    }

    fn record(&mut self, partition: i32, next: i64) -> std::io::Result<()> {
        if let Some(p) = &self.progress {
            let _ = p.send(Progress::Offset(partition, next));
        }
        Ok(())
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
        let mut s = FileOffsets::open(&path).unwrap();
        assert_eq!(s.start(0), None);
        s.record(0, 42).unwrap();
        assert_eq!(FileOffsets::open(&path).unwrap().start(0), Some(42));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn replicated_offsets_write_no_file_and_report_each_offset() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut s = ReplicatedOffsets::new(BTreeMap::from([(0, 7)]), Some(tx));
        assert_eq!((s.start(0), s.start(1)), (Some(7), None));
        s.record(0, 9).unwrap();
        assert_eq!(rx.try_recv().unwrap(), Progress::Offset(0, 9));
    }
}
