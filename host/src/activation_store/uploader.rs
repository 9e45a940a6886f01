//! Sends the backlog to CouchDB in `_bulk_docs` batches; while CouchDB is away, retries with
//! backoff (100 ms doubling to 5 s) and says so once, not per attempt.

use super::backlog::Backlog;
use super::StoreStats;
use crate::couchdb::CouchDb;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// Documents per `_bulk_docs` request.
pub const BATCH: usize = 500;

pub async fn run(db: CouchDb, backlog: Arc<Backlog>, written: Arc<Notify>, stats: Arc<StoreStats>) {
    let mut pause = Duration::from_millis(100);
    let mut failing = false;
    let mut database_ready = false;
    loop {
        let b = backlog.clone();
        let (docs, cursor) = match tokio::task::spawn_blocking(move || b.read(BATCH)).await {
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
