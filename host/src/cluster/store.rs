//! Durable Raft storage: the log, the vote and the committed id in one redb file, every write
//! a transaction committed (fsynced) before it is acknowledged; the last snapshot in a file of
//! its own beside it, written on a blocking thread (temporary file, fsync, rename). Built on
//! the Raft thread inside redb, a snapshot of a busy pool (JSON, serialized, then committed
//! while holding redb's one write lock) stalled the log's appends for most of a second: the
//! chaos suite saw a standby miss its heartbeats and campaign while it built one.
//!
//! The state machine lives in memory and is rebuilt on start from the last snapshot plus the
//! log after it (openraft re-applies what `applied_state` does not cover).

// openraft's traits fix the error type (`StorageError`, ~224 bytes); helpers share it.
#![allow(clippy::result_large_err)]

use super::state::{Replicated, Reply};
use super::types::{NodeId, StorageError, TypeConfig};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftLogReader,
    RaftSnapshotBuilder, SnapshotMeta, StorageIOError, StoredMembership, Vote,
};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use std::fmt::Debug;
use std::io::Cursor;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

fn io_err(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
    e: impl std::error::Error + 'static,
) -> StorageError {
    StorageIOError::new(subject, verb, openraft::AnyError::new(&e)).into()
}

fn store_err(e: impl std::error::Error + 'static) -> StorageError {
    io_err(ErrorSubject::Store, ErrorVerb::Write, e)
}

/// The Raft log and vote.
#[derive(Debug, Clone)]
pub struct LogStore {
    db: Arc<Database>,
}

impl LogStore {
    pub fn open(path: &Path) -> Result<LogStore, redb::Error> {
        let db = Database::create(path)?;
        let tx = db.begin_write()?;
        tx.open_table(LOG)?;
        tx.open_table(META)?;
        tx.commit()?;
        Ok(LogStore { db: Arc::new(db) })
    }

    fn meta<T: for<'de> Deserialize<'de>>(&self, key: &str) -> Result<Option<T>, StorageError> {
        let tx = self.db.begin_read().map_err(store_err)?;
        let table = tx.open_table(META).map_err(store_err)?;
        let Some(v) = table.get(key).map_err(store_err)? else {
            return Ok(None);
        };
        serde_json::from_slice(v.value())
            .map(Some)
            .map_err(store_err)
    }

    fn put_meta<T: Serialize>(&self, key: &str, value: &T) -> Result<(), StorageError> {
        let bytes = serde_json::to_vec(value).map_err(store_err)?;
        let tx = self.db.begin_write().map_err(store_err)?;
        tx.open_table(META)
            .map_err(store_err)?
            .insert(key, bytes.as_slice())
            .map_err(store_err)?;
        tx.commit().map_err(store_err)
    }

    fn last_entry(&self) -> Result<Option<Entry<TypeConfig>>, StorageError> {
        let tx = self.db.begin_read().map_err(store_err)?;
        let table = tx.open_table(LOG).map_err(store_err)?;
        let last = match table.last().map_err(store_err)? {
            Some((_, v)) => Some(serde_json::from_slice(v.value()).map_err(store_err)?),
            None => None,
        };
        Ok(last)
    }

    /// The snapshot table shares the file: the state machine keeps its snapshot here.
    /// True when this member has no log and no vote: new, or its storage was wiped.
    pub fn is_blank(&self) -> Result<bool, StorageError> {
        let vote: Option<Vote<NodeId>> = self.meta("vote")?;
        let purged: Option<LogId<NodeId>> = self.meta("last_purged")?;
        Ok(vote.is_none() && purged.is_none() && self.last_entry()?.is_none())
    }

    pub fn database(&self) -> Arc<Database> {
        self.db.clone()
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError> {
        let tx = self.db.begin_read().map_err(store_err)?;
        let table = tx.open_table(LOG).map_err(store_err)?;
        let mut out = Vec::new();
        for item in table.range(range).map_err(store_err)? {
            let (_, v) = item.map_err(store_err)?;
            out.push(serde_json::from_slice(v.value()).map_err(store_err)?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged: Option<LogId<NodeId>> = self.meta("last_purged")?;
        let last = self.last_entry()?.map(|e| e.log_id).or(last_purged);
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        self.put_meta("vote", vote)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        self.meta("vote")
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError> {
        self.put_meta("committed", &committed)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError> {
        Ok(self.meta::<Option<LogId<NodeId>>>("committed")?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let tx = self.db.begin_write().map_err(store_err)?;
        {
            let mut table = tx.open_table(LOG).map_err(store_err)?;
            for entry in entries {
                let bytes = serde_json::to_vec(&entry).map_err(store_err)?;
                table
                    .insert(entry.log_id.index, bytes.as_slice())
                    .map_err(store_err)?;
            }
        }
        // redb's commit is durable (fsync) by default: only then is the append acknowledged.
        tx.commit().map_err(store_err)?;
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError> {
        let tx = self.db.begin_write().map_err(store_err)?;
        tx.open_table(LOG)
            .map_err(store_err)?
            .retain_in(log_id.index.., |_, _| false)
            .map_err(store_err)?;
        tx.commit().map_err(store_err)
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError> {
        self.put_meta("last_purged", &Some(log_id))?;
        let tx = self.db.begin_write().map_err(store_err)?;
        tx.open_table(LOG)
            .map_err(store_err)?
            .retain_in(..=log_id.index, |_, _| false)
            .map_err(store_err)?;
        tx.commit().map_err(store_err)
    }
}

/// What a snapshot holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct SnapshotDoc {
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, openraft::BasicNode>,
    state: Replicated,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, openraft::BasicNode>,
    data: Vec<u8>,
}

/// The state machine: the replicated state, readable by the rest of the host.
#[derive(Debug, Clone)]
pub struct StateMachine {
    db: Arc<Database>,
    /// Where the last snapshot is kept.
    snapshot_path: Arc<PathBuf>,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, openraft::BasicNode>,
    pub state: Arc<RwLock<Replicated>>,
}

impl StateMachine {
    /// Loads the last snapshot, if any, from `snapshot_path` (or, as older versions kept it,
    /// from the log store's file).
    pub fn open(log: &LogStore, snapshot_path: &Path) -> Result<StateMachine, StorageError> {
        let db = log.database();
        let mut sm = StateMachine {
            db,
            snapshot_path: Arc::new(snapshot_path.to_owned()),
            last_applied: None,
            membership: StoredMembership::default(),
            state: Arc::default(),
        };
        if let Some(snap) = sm.stored_snapshot()? {
            let doc: SnapshotDoc = serde_json::from_slice(&snap.data).map_err(store_err)?;
            sm.last_applied = doc.last_applied;
            sm.membership = doc.membership;
            *sm.state.write().expect("state lock") = doc.state;
        }
        Ok(sm)
    }

    fn stored_snapshot(&self) -> Result<Option<StoredSnapshot>, StorageError> {
        match std::fs::read(&*self.snapshot_path) {
            Ok(bytes) => return StoredSnapshot::decode(&bytes).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(ErrorSubject::Snapshot(None), ErrorVerb::Read, e)),
        }
        // written by an older version inside the redb file
        let tx = self.db.begin_read().map_err(store_err)?;
        let table = tx.open_table(META).map_err(store_err)?;
        match table.get("snapshot").map_err(store_err)? {
            Some(v) => serde_json::from_slice(v.value())
                .map(Some)
                .map_err(store_err),
            None => Ok(None),
        }
    }
}

impl StoredSnapshot {
    /// `[meta length: u32 LE][meta JSON][data]`.
    fn encode(&self) -> Result<Vec<u8>, StorageError> {
        let meta = serde_json::to_vec(&self.meta).map_err(store_err)?;
        let mut out = Vec::with_capacity(4 + meta.len() + self.data.len());
        out.extend_from_slice(&(meta.len() as u32).to_le_bytes());
        out.extend_from_slice(&meta);
        out.extend_from_slice(&self.data);
        Ok(out)
    }

    fn decode(bytes: &[u8]) -> Result<StoredSnapshot, StorageError> {
        let corrupt = || {
            let e = std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "snapshot file is cut short",
            );
            io_err(ErrorSubject::Snapshot(None), ErrorVerb::Read, e)
        };
        let len = u32::from_le_bytes(
            bytes
                .get(..4)
                .ok_or_else(corrupt)?
                .try_into()
                .expect("4 bytes"),
        ) as usize;
        let meta = bytes.get(4..4 + len).ok_or_else(corrupt)?;
        Ok(StoredSnapshot {
            meta: serde_json::from_slice(meta).map_err(store_err)?,
            data: bytes[4 + len..].to_vec(),
        })
    }

    /// Writes it to `path` durably: a temporary file, fsynced, renamed over the last one.
    fn save(&self, path: &Path) -> Result<(), StorageError> {
        use std::io::Write;
        let err = |e: std::io::Error| io_err(ErrorSubject::Snapshot(None), ErrorVerb::Write, e);
        let bytes = self.encode()?;
        let tmp = path.with_extension("tmp");
        let mut file = std::fs::File::create(&tmp).map_err(err)?;
        file.write_all(&bytes).map_err(err)?;
        file.sync_all().map_err(err)?;
        std::fs::rename(&tmp, path).map_err(err)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(err)?;
        }
        Ok(())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let meta = SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.membership.clone(),
            snapshot_id: format!(
                "{}-{}",
                self.last_applied.map(|l| l.leader_id.term).unwrap_or(0),
                self.last_applied.map(|l| l.index).unwrap_or(0)
            ),
        };
        let doc = SnapshotDoc {
            last_applied: self.last_applied,
            membership: self.membership.clone(),
            // the builder's own copy (see get_snapshot_builder)
            state: std::mem::take(&mut *self.state.write().expect("state lock")),
        };
        let path = self.snapshot_path.clone();
        let stored = tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let stored = StoredSnapshot {
                meta,
                data: serde_json::to_vec(&doc).map_err(store_err)?,
            };
            stored.save(&path)?;
            tracing::info!(
                containers = doc.state.containers.len(),
                bytes = stored.data.len(),
                took_ms = started.elapsed().as_millis() as u64,
                "snapshot built"
            );
            Ok::<_, StorageError>(stored)
        })
        .await
        .map_err(store_err)??;
        Ok(Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<
        (
            Option<LogId<NodeId>>,
            StoredMembership<NodeId, openraft::BasicNode>,
        ),
        StorageError,
    > {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Reply>, StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut replies = Vec::new();
        let mut state = self.state.write().expect("state lock");
        for entry in entries {
            self.last_applied = Some(entry.log_id);
            replies.push(match &entry.payload {
                EntryPayload::Blank => Reply::Applied,
                EntryPayload::Normal(command) => state.apply(entry.log_id.index, command),
                EntryPayload::Membership(m) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                    Reply::Applied
                }
            });
        }
        Ok(replies)
    }

    /// The builder gets a copy of the state as of `last_applied` (not the shared handle):
    /// openraft builds snapshots while entries keep being applied, and a snapshot holding
    /// changes past its `last_applied` would have them applied twice after an install.
    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        let copy = self.state.read().expect("state lock").clone();
        StateMachine {
            state: Arc::new(RwLock::new(copy)),
            ..self.clone()
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, openraft::BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let doc: SnapshotDoc = serde_json::from_slice(&data).map_err(store_err)?;
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        *self.state.write().expect("state lock") = doc.state;
        let (stored, path) = (
            StoredSnapshot {
                meta: meta.clone(),
                data,
            },
            self.snapshot_path.clone(),
        );
        tokio::task::spawn_blocking(move || stored.save(&path))
            .await
            .map_err(store_err)?
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        Ok(self.stored_snapshot()?.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::state::{Command, PoolChange};
    use openraft::CommittedLeaderId;

    fn entry(index: u64, command: Command) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(command),
        }
    }

    #[tokio::test]
    async fn a_snapshot_holds_nothing_applied_after_its_last_applied() {
        let dir = tempfile::tempdir().unwrap();
        let log = LogStore::open(&dir.path().join("raft.redb")).unwrap();
        assert!(log.is_blank().unwrap());
        let mut sm = StateMachine::open(&log, &dir.path().join("snapshot")).unwrap();
        sm.apply([entry(1, Command::Claim { node: 1 })])
            .await
            .unwrap();
        let mut builder = sm.get_snapshot_builder().await;
        // applied after the builder was taken, before it builds
        let record = crate::cluster::state::ContainerRecord::sample("p", "late");
        sm.apply([entry(
            2,
            Command::Pool {
                epoch: 1,
                changes: vec![PoolChange::Upsert(Box::new(record))],
            },
        )])
        .await
        .unwrap();
        let snapshot = builder.build_snapshot().await.unwrap();
        assert_eq!(snapshot.meta.last_log_id.map(|l| l.index), Some(1));
        let doc: SnapshotDoc = serde_json::from_slice(snapshot.snapshot.get_ref()).unwrap();
        assert!(
            doc.state.containers.is_empty(),
            "the snapshot holds a change from after its last_applied"
        );
        assert_eq!(sm.state.read().unwrap().containers.len(), 1);
    }
}
