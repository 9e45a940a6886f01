//! Where finished activation records go: the JSON-lines activation log (as OpenWhisk's file
//! activation store writes it) when configured, and CouchDB's `activations` database when
//! `[activations] store = "couchdb"` ([`crate::activation_store`]).

use crate::activation::WhiskActivation;
use crate::activation_store::CouchRecords;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

#[derive(Debug, Default)]
pub struct ActivationSink {
    file: Option<Mutex<std::fs::File>>,
    couch: Option<CouchRecords>,
}

impl ActivationSink {
    /// Appends to `path`; `None` keeps no records.
    pub fn open(path: Option<&Path>) -> std::io::Result<ActivationSink> {
        let file = match path {
            Some(p) => Some(Mutex::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?,
            )),
            None => None,
        };
        Ok(ActivationSink { file, couch: None })
    }

    /// Also stores records in CouchDB.
    pub fn with_couchdb(mut self, couch: CouchRecords) -> ActivationSink {
        self.couch = Some(couch);
        self
    }

    pub fn couchdb(&self) -> Option<&CouchRecords> {
        self.couch.as_ref()
    }

    /// Writes `record`; returns once it is safe on disk. `store` is false when the
    /// namespace's `storeActivations` limit says not to keep records in the database.
    pub async fn write(&self, record: &WhiskActivation, store: bool) {
        if let Some(f) = &self.file {
            let mut line = serde_json::to_vec(record).expect("record serializes");
            line.push(b'\n');
            if let Err(e) = f.lock().expect("sink lock").write_all(&line) {
                tracing::warn!(activation = %record.activation_id, "activation record not written: {e}");
            }
        }
        if let Some(couch) = self.couch.as_ref().filter(|_| store) {
            couch.store(record).await;
        }
    }
}
