//! Private files: atomic writes with mode 0600 and directories with mode 0700.
//!
//! Everything this crate keeps on disk (the local backend's data dir, generated serving pairs,
//! the consumer's keys and kubeconfigs, join-token files) goes through here, so a crash leaves
//! the old file or the new one, never half of either, and nothing is ever world-readable.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A file operation that failed, with the path it was about.
#[derive(Debug, thiserror::Error)]
#[error("{action} {}", path.display())]
pub struct FileError {
    /// What was being done: "reading", "writing", "creating", ...
    pub action: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

impl FileError {
    fn new(action: &'static str, path: &Path, source: io::Error) -> Self {
        Self { action, path: path.to_path_buf(), source }
    }

    /// True when the file (or a parent directory) does not exist.
    pub fn is_not_found(&self) -> bool {
        self.source.kind() == io::ErrorKind::NotFound
    }
}

/// Creates `dir` (and parents) with mode 0700, tightening an existing one.
pub fn ensure_private_dir(dir: &Path) -> Result<(), FileError> {
    fs::create_dir_all(dir).map_err(|e| FileError::new("creating", dir, e))?;
    let meta = fs::metadata(dir).map_err(|e| FileError::new("reading", dir, e))?;
    if meta.permissions().mode() & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| FileError::new("restricting to 0700", dir, e))?;
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically with mode 0600: temp file, fsync, rename, fsync of the
/// directory.
pub fn write_private_file(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    // A bare file name has an empty parent: that is the current directory.
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.tmp-{}", uuid::Uuid::new_v4().simple()));
    let result = (|| {
        let mut file = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(|e| FileError::new("writing", path, e))
}

/// Reads a file as UTF-8.
pub fn read_string(path: &Path) -> Result<String, FileError> {
    fs::read_to_string(path).map_err(|e| FileError::new("reading", path, e))
}

/// Reads a file as UTF-8; `Ok(None)` when it does not exist.
pub fn read_string_opt(path: &Path) -> Result<Option<String>, FileError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(FileError::new("reading", path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_files_are_written_whole_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        write_private_file(&path, b"one").unwrap();
        write_private_file(&path, b"two").unwrap();
        assert_eq!(read_string(&path).unwrap(), "two");
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let leftovers = fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(leftovers, 1, "no temp file is left behind");
    }

    #[test]
    fn private_dirs_are_tightened_to_0700() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("data");
        fs::create_dir(&sub).unwrap();
        fs::set_permissions(&sub, fs::Permissions::from_mode(0o755)).unwrap();
        ensure_private_dir(&sub).unwrap();
        assert_eq!(fs::metadata(&sub).unwrap().permissions().mode() & 0o777, 0o700);
    }

    #[test]
    fn a_missing_file_reads_as_none_and_names_its_path_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent");
        assert_eq!(read_string_opt(&path).unwrap(), None);
        let error = read_string(&path).unwrap_err();
        assert!(error.is_not_found());
        assert!(error.to_string().contains("absent"), "{error}");
    }
}
