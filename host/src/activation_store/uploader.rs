//! Sends the backlog to CouchDB in `_bulk_docs` batches of at most [`BATCH`] records and
//! [`BATCH_BYTES`]; while CouchDB is away, retries with backoff (100 ms doubling to 5 s) and
//! says so once, not per attempt. A batch CouchDB refuses as too large (413) is split in
//! halves down to one record; one record refused alone is dropped (logged and counted), so a
//! record can never hold up the ones behind it.

use super::backlog::Backlog;
use super::StoreStats;
use crate::couchdb::{CouchDb, CouchError};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// Documents per `_bulk_docs` request.
pub const BATCH: usize = 500;

/// Bytes of documents per request: well under CouchDB's request limits
/// (`max_http_request_size`, 64 MiB in 2.x) and sent within the client's timeout.
pub const BATCH_BYTES: u64 = 8 << 20;

pub async fn run(db: CouchDb, backlog: Arc<Backlog>, written: Arc<Notify>, stats: Arc<StoreStats>) {
    let mut pause = Duration::from_millis(100);
    let mut failing = false;
    let mut database_ready = false;
    // halved for each batch refused as too large, back to BATCH_BYTES after a success
    let mut batch_bytes = BATCH_BYTES;
    loop {
        let b = backlog.clone();
        let (docs, cursor) =
            match tokio::task::spawn_blocking(move || b.read(BATCH, batch_bytes)).await {
                Ok(Ok(read)) => read,
                Ok(Err(e)) => {
                    tracing::error!("cannot read the activation backlog: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
                Err(_) => return,
            };
        if docs.is_empty() {
            let _ = tokio::time::timeout(Duration::from_secs(1), written.notified()).await;
            continue;
        }
        if !database_ready {
            database_ready = db.ensure().await.is_ok();
        }
        match db.bulk(&docs).await {
            Ok(results) => {
                for r in results
                    .iter()
                    .filter(|r| r.error.as_deref().is_some_and(|e| e != "conflict"))
                {
                    tracing::error!(id = %r.id, "CouchDB refused an activation record: {} {}",
                        r.error.as_deref().unwrap_or(""), r.reason.as_deref().unwrap_or(""));
                }
                let n = docs.len() as u64;
                backlog.uploaded(cursor, n);
                stats.stored.fetch_add(n, Ordering::Relaxed);
                if failing {
                    tracing::info!(
                        database = db.name(),
                        "CouchDB takes activation records again"
                    );
                    failing = false;
                }
                pause = Duration::from_millis(100);
                batch_bytes = BATCH_BYTES;
            }
            Err(CouchError::Status { status: 413, body }) if docs.len() > 1 => {
                batch_bytes = (batch_bytes / 2).max(1);
                tracing::warn!(records = docs.len(), batch_bytes, "CouchDB refused a batch of activation records as too large: sending it in halves ({body})");
            }
            Err(CouchError::Status { status: 413, body }) => {
                tracing::error!(id = %docs[0]["_id"], "CouchDB refused an activation record as too large on its own: dropped ({body})");
                backlog.uploaded(cursor, 1);
                stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                stats.upload_failures.fetch_add(1, Ordering::Relaxed);
                if !failing {
                    tracing::warn!(
                        database = db.name(),
                        waiting = stats.waiting.load(Ordering::Relaxed),
                        "activation records wait on disk until CouchDB takes them: {e}"
                    );
                    failing = true;
                    database_ready = false;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
    }
}
