//! The lock that keeps one writer at a time on a credential directory.
//!
//! A running service (a gateway) holds it for as long as it runs: it keeps its credentials in
//! memory and writes them back (OAuth refreshes, an admin API), so a command-line writer working
//! on the same files meanwhile would undo its changes or be undone by them (a deleted
//! credential brought back, a refresh token rolled back, files written under a key that is
//! being retired). Every other write takes it for the time of the operation. Readers (listings,
//! checks) take none: every write is an atomic rename, so a reader sees the old file
//! or the new one, never half of one.
//!
//! It is an advisory `flock` on `DIR/.lock`, an empty file that is never removed (a lock
//! file removed while held lets a second process lock a new file of the same name). The
//! kernel releases the lock when the holder's descriptor is closed, also when the holder is
//! killed with SIGKILL, so a crash never leaves a stale lock behind.

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use nix::libc;

use crate::{Error, Result};

/// The lock file in the credential directory. Hidden, so never taken for a credential
/// (`<id>.json`) nor for the temporary file of an interrupted write (`.<name>.tmp-<hex>`).
pub(crate) const LOCK_FILE: &str = ".lock";

/// How often a held lock is tried again before the answer is [`Error::Locked`], and the pause
/// between tries: 200 ms in all (see [`DirLock::acquire`]).
const LOCK_RETRIES: u32 = 20;
const LOCK_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(10);

/// An exclusive lock on a credential directory, released when dropped.
#[derive(Debug)]
pub(crate) struct DirLock {
    /// Holding the descriptor is holding the lock.
    _file: File,
}

impl DirLock {
    /// Takes the lock of `dir` (a directory the store has verified: ours, 0700), creating the
    /// lock file 0600 when missing. Never waits for a holder: when another process holds it, the answer is
    /// [`Error::Locked`] within 200 ms. `None` when the directory is on a read-only filesystem and
    /// has no lock file yet: nothing can be written there to race with, and a gateway must
    /// still be able to serve from a read-only directory.
    pub(crate) fn acquire(dir: &Path, uid: u32, file_mode: u32) -> Result<Option<Self>> {
        let path = dir.join(LOCK_FILE);
        let flags = libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC;
        let opened = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .mode(file_mode)
            .custom_flags(flags)
            .open(&path);
        let (file, read_only) = match opened {
            Ok(file) => (file, false),
            // A read-only mount: an existing lock file can still be locked through a read-only
            // descriptor (the lock is on the inode, so a writer outside the mount sees it).
            Err(e) if e.raw_os_error() == Some(libc::EROFS) => {
                match OpenOptions::new().read(true).custom_flags(flags).open(&path) {
                    Ok(file) => (file, true),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(open_error(&path, e)),
                }
            }
            Err(e) => return Err(open_error(&path, e)),
        };
        let meta = file.metadata().map_err(|e| Error::io(&path, "inspect", e))?;
        if !meta.is_file() {
            return Err(Error::Unusable { path, reason: "is not a regular file" });
        }
        if meta.uid() != uid {
            return Err(Error::ForeignOwner { path, owner: meta.uid(), ours: uid });
        }
        // The umask may have narrowed the mode of a new file, and an old one may be loose;
        // Every hidden file of the directory is held to 0600, as credentials are.
        if !read_only && meta.mode() & 0o7777 != file_mode {
            crate::mode::set_mode(&file, &path, file_mode, "set mode 0600 on")?;
        }
        // A child that another thread of this process forks holds a copy of every descriptor,
        // and so this lock, from its fork to its exec (which closes them: O_CLOEXEC). A lock
        // released a moment ago (the previous write's) can still be held that way for a few
        // microseconds; and two threads writing through one store without the lock take it in
        // turn (each its own descriptor). A gateway holds it for good: a short bounded retry
        // tells these apart and still answers at once, as far as a person can tell.
        for attempt in 0..=LOCK_RETRIES {
            match file.try_lock() {
                Ok(()) => return Ok(Some(Self { _file: file })),
                Err(TryLockError::WouldBlock) if attempt < LOCK_RETRIES => {
                    std::thread::sleep(LOCK_RETRY_PAUSE);
                }
                Err(TryLockError::WouldBlock) => break,
                Err(TryLockError::Error(e)) => return Err(Error::io(&path, "lock", e)),
            }
        }
        Err(Error::Locked { dir: dir.to_owned() })
    }
}

fn open_error(path: &Path, error: io::Error) -> Error {
    if error.raw_os_error() == Some(libc::ELOOP) {
        Error::Unusable {
            path: path.to_owned(),
            reason: "is a symbolic link; the lock file of the credential directory must be a regular file",
        }
    } else {
        Error::io(path, "open the lock file of the credential directory", error)
    }
}
