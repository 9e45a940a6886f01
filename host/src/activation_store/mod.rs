//! Activation records to CouchDB's `{db_prefix}activations`, in upstream's document shape
//! (`_id` = `namespace/activationId`, the record's fields, `entityType: "activation"`), after
//! the acknowledgement, as upstream's invoker stores them — and never in its way:
//!
//! - [`backlog`]: every record is first appended to a backlog on disk (fsync'd in groups)
//!   before its Kafka offset may be recorded, so a crash or a restart loses none;
//! - [`uploader`]: a task sends the backlog to CouchDB in `_bulk_docs` batches and deletes
//!   what CouchDB took; while CouchDB is away it retries with backoff and the backlog grows,
//!   up to `[activations] backlog-mb` (then the oldest records are dropped, logged and
//!   counted).
//!
//! Each host drains its own backlog in any role (writing a record touches no container and no
//! offset, so it needs no lease): after a failover the old host's records arrive when it runs
//! again with its data directory. Writes are idempotent (a record already stored answers
//! "conflict" and counts as stored).

pub mod backlog;
pub mod uploader;

use crate::activation::WhiskActivation;
use crate::couchdb::CouchDb;
use backlog::Backlog;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Notify};

/// Counters for `/status` and `/metrics`.
#[derive(Debug, Default)]
pub struct StoreStats {
    pub stored: AtomicU64,
    pub waiting: AtomicU64,
    pub dropped: AtomicU64,
    pub upload_failures: AtomicU64,
}

/// The CouchDB activation store of one host.
#[derive(Debug)]
pub struct CouchRecords {
    append: mpsc::UnboundedSender<(Vec<u8>, oneshot::Sender<()>)>,
    pub stats: Arc<StoreStats>,
}

/// Upstream's document for a record: `WhiskActivation.toDocumentRecord`.
pub fn document(record: &WhiskActivation, updated_ms: i64) -> Value {
    let mut doc = serde_json::to_value(record).expect("a record serializes");
    doc["_id"] = json!(format!(
        "{}/{}",
        record.namespace.trim_matches('/'),
        record.activation_id
    ));
    doc["entityType"] = json!("activation");
    doc["updated"] = json!(updated_ms);
    doc
}

impl CouchRecords {
    /// Opens the backlog in `dir` (what a previous run left is sent first) and starts the
    /// writer and the uploader.
    pub fn start(db: CouchDb, dir: &Path, max_bytes: u64) -> std::io::Result<CouchRecords> {
        let stats = Arc::new(StoreStats::default());
        let backlog = Arc::new(Backlog::open(dir, max_bytes, stats.clone())?);
        let written = Arc::new(Notify::new());
        let (append, requests) = mpsc::unbounded_channel();
        tokio::spawn(write_groups(backlog.clone(), requests, written.clone()));
        tokio::spawn(uploader::run(db, backlog, written, stats.clone()));
        Ok(CouchRecords { append, stats })
    }

    /// Returns once the record is on disk (its offset may then be recorded).
    pub async fn store(&self, record: &WhiskActivation) {
        let now = crate::clock::now_ms();
        let mut line = serde_json::to_vec(&document(record, now)).expect("a record serializes");
        line.push(b'\n');
        let (done, written) = oneshot::channel();
        if self.append.send((line, done)).is_ok() {
            let _ = written.await;
        }
    }
}

/// Appends whatever records are waiting as one group, fsyncs once, then answers them all.
async fn write_groups(
    backlog: Arc<Backlog>,
    mut requests: mpsc::UnboundedReceiver<(Vec<u8>, oneshot::Sender<()>)>,
    written: Arc<Notify>,
) {
    while let Some(first) = requests.recv().await {
        let mut group = vec![first];
        while let Ok(more) = requests.try_recv() {
            group.push(more);
            if group.len() >= 1000 {
                break;
            }
        }
        let (lines, waiters): (Vec<Vec<u8>>, Vec<oneshot::Sender<()>>) = group.into_iter().unzip();
        let b = backlog.clone();
        match tokio::task::spawn_blocking(move || b.append(&lines)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!("activation records not written to the backlog: {e}"),
            Err(e) => tracing::error!("activation backlog writer failed: {e}"),
        }
        for w in waiters {
            let _ = w.send(());
        }
        written.notify_one();
    }
}
