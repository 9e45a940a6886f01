//! The backlog on disk: segment files `NNNNNNNNNN.jsonl` of CouchDB documents, one per line,
//! appended and fsync'd, read from a cursor (`cursor.json`: segment and byte offset) by the
//! uploader. A segment is deleted once uploaded; past the size bound the oldest is dropped.

use super::StoreStats;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

/// A segment is closed at this size and a new one begun.
const SEGMENT_BYTES: u64 = 4 << 20;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub segment: u64,
    pub offset: u64,
}

#[derive(Debug)]
struct Inner {
    /// Segment ids, oldest first; the last one is being appended to.
    segments: VecDeque<u64>,
    current: File,
    current_len: u64,
    /// Bytes in all segments.
    total: u64,
    cursor: Cursor,
}

#[derive(Debug)]
pub struct Backlog {
    dir: PathBuf,
    max_bytes: u64,
    stats: Arc<StoreStats>,
    inner: Mutex<Inner>,
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:010}.jsonl"))
}

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Lines (records) in `bytes`.
fn lines_in(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|&&b| b == b'\n').count() as u64
}

impl Backlog {
    pub fn open(dir: &Path, max_bytes: u64, stats: Arc<StoreStats>) -> std::io::Result<Backlog> {
        std::fs::create_dir_all(dir)?;
        let mut segments: Vec<u64> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_suffix(".jsonl")?
                    .parse::<u64>()
                    .ok()
            })
            .collect();
        segments.sort_unstable();
        if segments.is_empty() {
            segments.push(1);
        }
        let cursor: Cursor = std::fs::read(dir.join("cursor.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .filter(|c: &Cursor| segments.contains(&c.segment))
            .unwrap_or(Cursor {
                segment: segments[0],
                offset: 0,
            });
        let mut total = 0;
        let mut waiting = 0;
        for id in &segments {
            let bytes = std::fs::read(segment_path(dir, *id)).unwrap_or_default();
            total += bytes.len() as u64;
            let unread = match id.cmp(&cursor.segment) {
                std::cmp::Ordering::Less => &[][..],
                std::cmp::Ordering::Equal => &bytes[(cursor.offset as usize).min(bytes.len())..],
                std::cmp::Ordering::Greater => &bytes[..],
            };
            waiting += lines_in(unread);
        }
        stats.waiting.store(waiting, Ordering::Relaxed);
        if waiting > 0 {
            tracing::info!(records = waiting, dir = %dir.display(), "activation records from an earlier run are waiting for CouchDB");
        }
        let last = *segments.last().expect("one segment");
        let current = open_append(&segment_path(dir, last))?;
        let current_len = current.metadata()?.len();
        Ok(Backlog {
            dir: dir.to_owned(),
            max_bytes,
            stats,
            inner: Mutex::new(Inner {
                segments: segments.into(),
                current,
                current_len,
                total,
                cursor,
            }),
        })
    }

    /// Appends `lines` and fsyncs (blocking: call from a blocking thread).
    pub fn append(&self, lines: &[Vec<u8>]) -> std::io::Result<()> {
        let mut inner = self.inner.lock().expect("backlog lock");
        if inner.current_len >= SEGMENT_BYTES {
            let next = inner.segments.back().copied().unwrap_or(0) + 1;
            inner.current = open_append(&segment_path(&self.dir, next))?;
            inner.current_len = 0;
            inner.segments.push_back(next);
            sync_dir(&self.dir);
        }
        let bytes: Vec<u8> = lines.concat();
        inner.current.write_all(&bytes)?;
        inner.current.sync_data()?;
        inner.current_len += bytes.len() as u64;
        inner.total += bytes.len() as u64;
        self.stats
            .waiting
            .fetch_add(lines.len() as u64, Ordering::Relaxed);
        self.enforce_bound(&mut inner);
        Ok(())
    }

    /// Drops the oldest segments while over the bound (never the one being appended to).
    fn enforce_bound(&self, inner: &mut Inner) {
        while inner.total > self.max_bytes && inner.segments.len() > 1 {
            let oldest = inner.segments.pop_front().expect("more than one");
            let path = segment_path(&self.dir, oldest);
            let bytes = std::fs::read(&path).unwrap_or_default();
            let unread = if inner.cursor.segment == oldest {
                &bytes[(inner.cursor.offset as usize).min(bytes.len())..]
            } else if inner.cursor.segment > oldest {
                &[][..]
            } else {
                &bytes[..]
            };
            let dropped = lines_in(unread);
            let _ = std::fs::remove_file(&path);
            inner.total = inner.total.saturating_sub(bytes.len() as u64);
            if inner.cursor.segment <= oldest {
                inner.cursor = Cursor {
                    segment: inner.segments[0],
                    offset: 0,
                };
            }
            self.stats.dropped.fetch_add(dropped, Ordering::Relaxed);
            self.stats.waiting.fetch_sub(
                dropped.min(self.stats.waiting.load(Ordering::Relaxed)),
                Ordering::Relaxed,
            );
            tracing::error!(
                dropped,
                bound_mb = self.max_bytes >> 20,
                "activation record backlog is over its bound ([activations] backlog-mb): dropped the oldest records CouchDB has not taken"
            );
        }
    }

    /// Up to `max` documents and about `max_bytes` of them (at least one) from the cursor,
    /// and the cursor after them.
    pub fn read(
        &self,
        max: usize,
        max_bytes: u64,
    ) -> std::io::Result<(Vec<serde_json::Value>, Cursor)> {
        let mut inner = self.inner.lock().expect("backlog lock");
        let mut docs = Vec::new();
        let mut bytes = 0u64;
        let mut full = false;
        let mut cursor = inner.cursor;
        loop {
            let mut file = BufReader::new(File::open(segment_path(&self.dir, cursor.segment))?);
            file.seek(SeekFrom::Start(cursor.offset))?;
            let mut line = String::new();
            while docs.len() < max && bytes < max_bytes {
                line.clear();
                let n = file.read_line(&mut line)?;
                if n == 0 || !line.ends_with('\n') {
                    break; // the end, or a line still being written
                }
                if !docs.is_empty() && bytes + n as u64 > max_bytes {
                    full = true;
                    break; // the next batch's
                }
                bytes += n as u64;
                cursor.offset += n as u64;
                match serde_json::from_str(&line) {
                    Ok(doc) => docs.push(doc),
                    Err(e) => tracing::error!(
                        segment = cursor.segment,
                        "skipping a backlog line that is not JSON: {e}"
                    ),
                }
            }
            if docs.len() >= max || bytes >= max_bytes || full {
                break;
            }
            // at the end of this segment: move on when a newer one exists
            match inner.segments.iter().find(|&&s| s > cursor.segment) {
                Some(&next) => {
                    cursor = Cursor {
                        segment: next,
                        offset: 0,
                    };
                    if docs.is_empty() {
                        // nothing read from the finished one: drop it now
                        self.advance(&mut inner, cursor);
                    }
                }
                None => break,
            }
        }
        Ok((docs, cursor))
    }

    /// CouchDB took everything before `cursor`.
    pub fn uploaded(&self, cursor: Cursor, records: u64) {
        let mut inner = self.inner.lock().expect("backlog lock");
        self.advance(&mut inner, cursor);
        let waiting = self.stats.waiting.load(Ordering::Relaxed);
        self.stats
            .waiting
            .store(waiting.saturating_sub(records), Ordering::Relaxed);
    }

    fn advance(&self, inner: &mut Inner, cursor: Cursor) {
        // The bound may have dropped the cursor's segment while its records were being
        // uploaded (and moved the cursor past it): never move back onto a deleted segment.
        let behind = (cursor.segment, cursor.offset) < (inner.cursor.segment, inner.cursor.offset);
        if behind || !inner.segments.contains(&cursor.segment) {
            return;
        }
        while inner.segments.len() > 1 && inner.segments[0] < cursor.segment {
            let done = inner.segments.pop_front().expect("more than one");
            let path = segment_path(&self.dir, done);
            let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            let _ = std::fs::remove_file(path);
            inner.total = inner.total.saturating_sub(len);
        }
        inner.cursor = cursor;
        // Losing the cursor only sends some records again (CouchDB answers "conflict").
        let _ = std::fs::write(
            self.dir.join("cursor.json"),
            serde_json::to_vec(&cursor).expect("cursor serializes"),
        );
    }
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn line(i: u64) -> Vec<u8> {
        let mut l =
            serde_json::to_vec(&json!({"_id": format!("guest/{i}"), "pad": "x".repeat(1000)}))
                .unwrap();
        l.push(b'\n');
        l
    }

    #[test]
    fn records_survive_a_reopen_and_leave_once_uploaded() {
        let dir = tempfile::tempdir().unwrap();
        let stats = Arc::new(StoreStats::default());
        let b = Backlog::open(dir.path(), 1 << 30, stats.clone()).unwrap();
        b.append(&(0..10).map(line).collect::<Vec<_>>()).unwrap();
        let (docs, cursor) = b.read(4, u64::MAX).unwrap();
        assert_eq!(docs.len(), 4);
        b.uploaded(cursor, 4);
        drop(b);
        let stats = Arc::new(StoreStats::default());
        let b = Backlog::open(dir.path(), 1 << 30, stats.clone()).unwrap();
        assert_eq!(stats.waiting.load(Ordering::Relaxed), 6);
        let (docs, _) = b.read(100, u64::MAX).unwrap();
        assert_eq!(docs[0]["_id"], "guest/4");
        assert_eq!(docs.len(), 6);
    }

    #[test]
    fn segments_roll_and_the_oldest_is_dropped_past_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let stats = Arc::new(StoreStats::default());
        let b = Backlog::open(dir.path(), 2 * SEGMENT_BYTES, stats.clone()).unwrap();
        // ~1 KB lines: 4 MB segments take ~4,000 each
        for chunk in 0..12 {
            b.append(
                &(chunk * 1000..(chunk + 1) * 1000)
                    .map(line)
                    .collect::<Vec<_>>(),
            )
            .unwrap();
        }
        let dropped = stats.dropped.load(Ordering::Relaxed);
        assert!(dropped >= 3000, "{dropped}");
        let (docs, cursor) = b.read(100_000, u64::MAX).unwrap();
        assert_eq!(docs.len() as u64 + dropped, 12_000);
        assert_eq!(docs.last().unwrap()["_id"], "guest/11999");
        b.uploaded(cursor, docs.len() as u64);
        assert_eq!(stats.waiting.load(Ordering::Relaxed), 0);
    }

    /// Issue 32, defect 2: the bound dropped the segment a read's cursor pointed into while
    /// its records were uploading; `uploaded` put the cursor back on the deleted segment and
    /// every later read failed (ENOENT) until a restart.
    #[test]
    fn an_upload_finishing_after_the_bound_dropped_its_segment_does_not_stick() {
        let dir = tempfile::tempdir().unwrap();
        let stats = Arc::new(StoreStats::default());
        let b = Backlog::open(dir.path(), 2 * SEGMENT_BYTES, stats.clone()).unwrap();
        b.append(&(0..1000).map(line).collect::<Vec<_>>()).unwrap();
        let (docs, cursor) = b.read(500, u64::MAX).unwrap();
        assert_eq!(docs.len(), 500);
        // meanwhile: enough records that the oldest segments go
        for chunk in 1..12 {
            b.append(
                &(chunk * 1000..(chunk + 1) * 1000)
                    .map(line)
                    .collect::<Vec<_>>(),
            )
            .unwrap();
        }
        assert!(stats.dropped.load(Ordering::Relaxed) > 0);
        b.uploaded(cursor, 500);
        let (docs, _) = b.read(100, u64::MAX).expect("reads go on");
        assert_eq!(docs.len(), 100);
        assert!(
            docs[0]["_id"] != "guest/500",
            "the dropped segment is not read again"
        );
    }

    /// A batch is bounded by bytes too: large records go in smaller batches.
    #[test]
    fn a_read_stops_at_its_byte_bound_but_takes_at_least_one() {
        let dir = tempfile::tempdir().unwrap();
        let b = Backlog::open(dir.path(), 1 << 30, Arc::default()).unwrap();
        b.append(&(0..10).map(line).collect::<Vec<_>>()).unwrap();
        let size = line(0).len() as u64;
        let (docs, cursor) = b.read(500, 3 * size).unwrap();
        assert_eq!(docs.len(), 3);
        b.uploaded(cursor, 3);
        let (docs, _) = b.read(500, 1).unwrap();
        assert_eq!(docs.len(), 1, "one record larger than the bound still goes");
        assert_eq!(docs[0]["_id"], "guest/3");
    }
}
