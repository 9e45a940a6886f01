//! Which offsets are safe to record, and where they are kept: an offset is recorded only
//! once every activation before it has been acknowledged (at least once delivery with
//! out-of-order completions), in exactly one place per mode — `offsets.json` on a single host,
//! the replicated state in a cluster — so there is never a question which one is the truth.

use super::Progress;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
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
    /// Takes `offset` on `partition`; false when this feed already took it (the consumer
    /// delivered it again, as it can after a broker restart): it must not run twice.
    pub fn begin(&mut self, partition: i32, offset: i64) -> bool {
        // Nothing before the first offset seen is ours to report.
        let p = self
            .partitions
            .entry(partition)
            .or_insert_with(|| Partition {
                committed: offset,
                next: offset,
                ..Default::default()
            });
        if offset < p.next {
            return false;
        }
        p.in_flight.insert(offset);
        p.next = offset + 1;
        true
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

/// A single host's offsets: a file, written atomically and fsynced, by a writer thread of its
/// own that always writes the newest offsets (changes made while it writes are coalesced into
/// the next write). The feed never waits for a disk: two fsyncs per activation on its loop
/// held a single host to the disk's sync rate. What a crash can lose is the write in progress
/// (milliseconds of offsets: those activations run again after the restart, as at-least-once
/// delivery allows). A write that fails stops the feed at its next record; dropped, the store
/// writes what is left and waits for it.
#[derive(Debug)]
pub struct FileOffsets {
    offsets: BTreeMap<i32, i64>,
    shared: std::sync::Arc<Pending>,
    writer: Option<std::thread::JoinHandle<()>>,
}

/// Between the feed and the writer thread.
#[derive(Debug, Default)]
struct Pending {
    slot: std::sync::Mutex<Slot>,
    wake: std::sync::Condvar,
}

#[derive(Debug, Default)]
struct Slot {
    /// The newest offsets not yet written.
    next: Option<BTreeMap<i32, i64>>,
    closed: bool,
    /// The last write's failure, until a write succeeds.
    failed: Option<String>,
}

impl FileOffsets {
    pub fn open(path: &Path) -> std::io::Result<FileOffsets> {
        let offsets = crate::json_file::load(path)?;
        let shared = std::sync::Arc::new(Pending::default());
        let (path, pending) = (path.to_owned(), shared.clone());
        let writer = std::thread::Builder::new()
            .name("offsets-writer".into())
            .spawn(move || write_offsets(&path, &pending))?;
        Ok(FileOffsets {
            offsets,
            shared,
            writer: Some(writer),
        })
    }
}

/// The writer thread: writes the newest offsets until the store is closed and nothing is left.
fn write_offsets(path: &Path, pending: &Pending) {
    loop {
        let next = {
            let mut slot = pending.slot.lock().expect("offsets lock");
            while slot.next.is_none() && !slot.closed {
                slot = pending.wake.wait(slot).expect("offsets lock");
            }
            match slot.next.take() {
                Some(next) => next,
                None => return,
            }
        };
        let result = crate::json_file::save(path, &next);
        let mut slot = pending.slot.lock().expect("offsets lock");
        match result {
            Ok(()) => slot.failed = None,
            Err(e) => {
                tracing::error!(path = %path.display(), "offsets not written: {e}");
                slot.failed = Some(format!("{}: {e}", path.display()));
                // written again with the next change (or at the end)
                slot.next.get_or_insert(next);
                if slot.closed {
                    return;
                }
            }
        }
    }
}

impl Drop for FileOffsets {
    fn drop(&mut self) {
        self.shared.slot.lock().expect("offsets lock").closed = true;
        self.shared.wake.notify_one();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

impl OffsetStore for FileOffsets {
    fn start(&self, partition: i32) -> Option<i64> {
        self.offsets.get(&partition).copied()
    }

    fn record(&mut self, partition: i32, next: i64) -> std::io::Result<()> {
        self.offsets.insert(partition, next);
        let mut slot = self.shared.slot.lock().expect("offsets lock");
        if let Some(failed) = &slot.failed {
            return Err(std::io::Error::other(failed.clone()));
        }
        slot.next = Some(self.offsets.clone());
        drop(slot);
        self.shared.wake.notify_one();
        Ok(())
    }
}

/// A cluster's offsets: the replicated ones this activity started from; each recorded offset
/// goes to the replicator, which proposes it through Raft (no file is written).
#[derive(Debug)]
pub struct ReplicatedOffsets {
    start: BTreeMap<i32, i64>,
    progress: mpsc::UnboundedSender<Progress>,
}

impl ReplicatedOffsets {
    pub fn new(
        start: BTreeMap<i32, i64>,
        progress: mpsc::UnboundedSender<Progress>,
    ) -> ReplicatedOffsets {
        ReplicatedOffsets { start, progress }
    }
}

impl OffsetStore for ReplicatedOffsets {
    fn start(&self, partition: i32) -> Option<i64> {
        self.start.get(&partition).copied()
    }

    fn record(&mut self, partition: i32, next: i64) -> std::io::Result<()> {
        let _ = self.progress.send(Progress::Offset(partition, next));
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
            assert!(t.begin(0, o));
        }
        assert_eq!(t.done(0, 11), None);
        assert_eq!(t.done(0, 12), None);
        assert_eq!(t.done(0, 10), Some(13));
        assert!(t.begin(0, 13));
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
        for next in 1..=500 {
            s.record(0, next).unwrap();
        }
        s.record(1, 7).unwrap();
        // closing waits for the newest offsets to be on disk
        drop(s);
        let back = FileOffsets::open(&path).unwrap();
        assert_eq!((back.start(0), back.start(1)), (Some(500), Some(7)));
        drop(back);
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// Issue 32, found in the 30-minute chaos run: after a broker restart the consumer
    /// delivered offsets it had already delivered, and the feed ran those activations a
    /// second time on the same host (same epoch, two containers, milliseconds apart). An
    /// offset this feed already took is refused, in flight or done.
    #[test]
    fn an_offset_delivered_again_is_not_taken_twice() {
        let mut t = OffsetTracker::default();
        assert!(t.begin(0, 10) && t.begin(0, 11));
        assert!(!t.begin(0, 10), "in flight: refused");
        assert_eq!(t.done(0, 10), Some(11));
        assert!(!t.begin(0, 10), "done: refused");
        assert!(t.begin(1, 3), "another partition is its own");
        assert_eq!(t.in_flight(), 2);
        assert_eq!(t.done(0, 11), Some(12));
    }

    #[test]
    fn a_failed_write_stops_the_next_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gone").join("offsets.json");
        let mut s = FileOffsets::open(&path).unwrap();
        s.record(0, 1).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let err = loop {
            match s.record(0, 2) {
                Err(e) => break e.to_string(),
                Ok(()) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(5))
                }
                Ok(()) => panic!("a write into a missing directory never failed"),
            }
        };
        assert!(err.contains("offsets.json"), "{err}");
    }

    #[test]
    fn replicated_offsets_write_no_file_and_report_each_offset() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut s = ReplicatedOffsets::new(BTreeMap::from([(0, 7)]), tx);
        assert_eq!((s.start(0), s.start(1)), (Some(7), None));
        s.record(0, 9).unwrap();
        assert_eq!(rx.try_recv().unwrap(), Progress::Offset(0, 9));
    }
}
