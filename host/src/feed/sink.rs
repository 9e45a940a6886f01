//! Where finished activation records go: the JSON-lines activation log (as OpenWhisk's file
//! activation store writes it) when configured, and CouchDB's `activations` database when
//! `[activations] store = "couchdb"` ([`crate::activation_store`]).
//!
//! The log is created `0600` (records carry results and parameters) and rotates by size:
//! `log` → `log.1` → … → `log.{keep}`, the oldest deleted.

use crate::activation::WhiskActivation;
use crate::activation_store::CouchRecords;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// How large the activation log grows before it rotates, and how many rotated files stay.
#[derive(Debug, Clone, Copy)]
pub struct Rotation {
    pub max_bytes: u64,
    pub keep: u32,
}

#[derive(Debug)]
struct RotatingLog {
    path: PathBuf,
    file: File,
    size: u64,
    rotation: Rotation,
}

impl RotatingLog {
    fn open(path: &Path, rotation: Rotation) -> std::io::Result<RotatingLog> {
        let file = open_private(path)?;
        let size = file.metadata()?.len();
        Ok(RotatingLog {
            path: path.to_owned(),
            file,
            size,
            rotation,
        })
    }

    /// Appends one whole line; rotates first when it would take the file past the limit
    /// (a line is never split across files).
    fn append(&mut self, line: &[u8]) -> std::io::Result<()> {
        if self.size > 0 && self.size + line.len() as u64 > self.rotation.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(line)?;
        self.size += line.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let numbered = |n: u32| {
            let mut name = self.path.clone().into_os_string();
            name.push(format!(".{n}"));
            PathBuf::from(name)
        };
        let keep = self.rotation.keep;
        if keep == 0 {
            self.file.set_len(0)?;
        } else {
            for n in (1..keep).rev() {
                match std::fs::rename(numbered(n), numbered(n + 1)) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            std::fs::rename(&self.path, numbered(1))?;
            self.file = open_private(&self.path)?;
        }
        self.size = 0;
        tracing::info!(log = %self.path.display(), keep, "activation log rotated");
        Ok(())
    }
}

/// Opens `path` for appending, readable by its owner only (a file that was there keeps its
/// mode on open: it is set).
fn open_private(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::PermissionsExt;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(file)
}

#[derive(Debug, Default)]
pub struct ActivationSink {
    file: Option<Mutex<RotatingLog>>,
    couch: Option<CouchRecords>,
}

impl ActivationSink {
    /// Appends to `path`, rotating it as `rotation` says; `None` keeps no records.
    pub fn open(path: Option<&Path>, rotation: Rotation) -> std::io::Result<ActivationSink> {
        let file = match path {
            Some(p) => Some(Mutex::new(RotatingLog::open(p, rotation).map_err(|e| {
                std::io::Error::new(e.kind(), format!("activation log {}: {e}", p.display()))
            })?)),
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
            if let Err(e) = f.lock().expect("sink lock").append(&line) {
                tracing::warn!(activation = %record.activation_id, "activation record not written: {e}");
            }
        }
        if let Some(couch) = self.couch.as_ref().filter(|_| store) {
            couch.store(record).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_log_is_private_and_rotates_by_size_without_splitting_a_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("activations.log");
        let rotation = Rotation {
            max_bytes: 25,
            keep: 2,
        };
        let mut log = RotatingLog::open(&path, rotation).unwrap();
        for i in 0..7 {
            log.append(format!("record-{i:03}\n").as_bytes()).unwrap();
        }
        let read = |p: &Path| std::fs::read_to_string(p).unwrap();
        // 11 bytes a line, two to a file; the oldest (records 0 and 1) was deleted
        assert_eq!(read(&path), "record-006\n");
        assert_eq!(
            read(&dir.path().join("activations.log.1")),
            "record-004\nrecord-005\n"
        );
        assert_eq!(
            read(&dir.path().join("activations.log.2")),
            "record-002\nrecord-003\n"
        );
        assert!(!dir.path().join("activations.log.3").exists());
        for p in [path.clone(), dir.path().join("activations.log.1")] {
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", p.display());
        }
        // a restart continues the current file's size, and narrows a file made wider
        drop(log);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut log = RotatingLog::open(&path, rotation).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "an existing log keeps no wider mode");
        log.append(b"record-007\n").unwrap();
        log.append(b"record-008\n").unwrap();
        assert_eq!(read(&path), "record-008\n");
        assert_eq!(
            read(&dir.path().join("activations.log.1")),
            "record-006\nrecord-007\n"
        );
    }
}
