//! Small durable-file helpers shared by the op log, checkpoints and the identity file.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use crate::error::MasterError;

/// Fsyncs a directory so that creates, renames and deletes inside it are durable.
pub fn fsync_dir(dir: &Path) -> Result<(), MasterError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| MasterError::io(dir, "fsync directory", e))
}

/// Writes `bytes` to `<path>.partial`, fsyncs it, renames it over `path`, fsyncs the dir.
pub fn durable_write(path: &Path, bytes: &[u8]) -> Result<(), MasterError> {
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = std::path::PathBuf::from(partial);
    let mut f = File::create(&partial).map_err(|e| MasterError::io(&partial, "create", e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| MasterError::io(&partial, "write and fsync", e))?;
    fs::rename(&partial, path).map_err(|e| MasterError::io(path, "rename into place", e))?;
    match path.parent() {
        Some(dir) => fsync_dir(dir),
        None => Ok(()),
    }
}
