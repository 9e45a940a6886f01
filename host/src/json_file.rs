//! Small JSON files that must survive a crash: read whole (absent → empty), written whole to a
//! temporary file, fsynced, renamed over the old one, and the directory fsynced so the rename
//! itself survives a power loss.

use serde::de::DeserializeOwned;
use serde::Serialize;
use std::io::Write;
use std::path::Path;

/// The file's value, or the default when there is none; a file that does not parse is an
/// error naming it (never silently replaced).
pub fn load<T: DeserializeOwned + Default>(path: &Path) -> std::io::Result<T> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(e) => Err(e),
    }
}

/// Replaces the file's content with `value`, durably.
pub fn save<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec(value).map_err(std::io::Error::other)?)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    sync_dir(path)
}

/// Fsyncs the directory holding `path`, making a rename or a new file in it durable.
pub fn sync_dir(path: &Path) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    #[test]
    fn saves_replace_the_whole_file_and_leave_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        super::save(&path, &vec![1, 2, 3]).unwrap();
        super::save(&path, &vec![4]).unwrap();
        assert_eq!(super::load::<Vec<i32>>(&path).unwrap(), vec![4]);
        assert!(!path.with_extension("tmp").exists());
        std::fs::write(&path, b"{not json").unwrap();
        let err = super::load::<Vec<i32>>(&path).unwrap_err().to_string();
        assert!(err.contains("state.json"), "{err}");
    }
}
