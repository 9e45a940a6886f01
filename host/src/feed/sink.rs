//! Finished activation records, one JSON line each, as OpenWhisk's file activation store
//! writes them.

use crate::activation::WhiskActivation;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

#[derive(Debug)]
pub struct ActivationSink {
    file: Option<Mutex<std::fs::File>>,
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
        Ok(ActivationSink { file })
    }

    pub fn write(&self, record: &WhiskActivation) {
        if let Some(f) = &self.file {
            let mut line = serde_json::to_vec(record).expect("record serializes");
            line.push(b'\n');
            if let Err(e) = f.lock().expect("sink lock").write_all(&line) {
                tracing::warn!(activation = %record.activation_id, "activation record not written: {e}");
            }
        }
    }
}
