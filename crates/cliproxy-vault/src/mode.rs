//! Setting a file's permission bits and checking that they stuck, for the store (its
//! directory, credential files and temporary files) and the directory lock (its lock file).
//! A leaf, so that neither of the two imports the other for it.

use std::fs::{File, Permissions};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::{Error, Result};

/// Sets `mode` on the open `file` (at `path`) and reads it back: a filesystem that ignores
/// permissions (vfat, some network or FUSE mounts) accepts the call and keeps the old mode,
/// and the credentials must then be refused, not announced as "tightened" on every read.
pub(crate) fn set_mode(file: &File, path: &Path, mode: u32, op: &'static str) -> Result<()> {
    #[cfg(test)]
    let ignored = IGNORE_CHMOD.with(std::cell::Cell::get);
    #[cfg(not(test))]
    let ignored = false;
    if !ignored {
        file.set_permissions(Permissions::from_mode(mode)).map_err(|e| Error::io(path, op, e))?;
    }
    let got = file.metadata().map_err(|e| Error::io(path, op, e))?.mode() & 0o7777;
    if got != mode {
        return Err(Error::ModeNotKept { path: path.to_owned(), wanted: mode, got });
    }
    Ok(())
}

#[cfg(test)]
thread_local! {
    /// Makes `set_mode` skip the chmod on this thread, as a filesystem that ignores
    /// permissions does (none is mountable in a test without privileges).
    pub(crate) static IGNORE_CHMOD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}
