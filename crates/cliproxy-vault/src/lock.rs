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
use std::path::Path;

use cliproxy_core::private_fs::{self, FILE_MODE, Kind, PrivateError};
use nix::libc;

use crate::mode::Words;
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
    pub(crate) fn acquire(dir: &Path, uid: u32) -> Result<Option<Self>> {
        let path = dir.join(LOCK_FILE);
        let words = Words {
            open: "open the lock file of the credential directory",
            set_mode: "set mode 0600 on",
            symlink: "is a symbolic link; the lock file of the credential directory must be a regular file",
            wrong_kind: "is not a regular file",
        };
        let opened = private_fs::open_nonblocking(
            &path,
            OpenOptions::new().read(true).write(true).create(true),
        );
        let (file, read_only) = match opened {
            Ok(file) => (file, false),
            // A read-only mount: an existing lock file can still be locked through a read-only
            // descriptor (the lock is on the inode, so a writer outside the mount sees it).
            Err(PrivateError::Io { source, .. }) if source.raw_os_error() == Some(libc::EROFS) => {
                match private_fs::open_nonblocking(&path, OpenOptions::new().read(true)) {
                    Ok(file) => (file, true),
                    Err(PrivateError::Io { source, .. })
                        if source.kind() == io::ErrorKind::NotFound =>
                    {
                        return Ok(None);
                    }
                    Err(e) => return Err(words.error(&path, e)),
                }
            }
            Err(e) => return Err(words.error(&path, e)),
        };
        // The umask may have narrowed the mode of a new file, and an old one may be loose;
        // every hidden file of the directory is held to 0600, as credentials are. A read-only
        // mount keeps the mode it has (it cannot be set), but not another owner.
        let meta = file.metadata().map_err(|e| Error::io(&path, "inspect", e))?;
        let loose =
            private_fs::check(&meta, Kind::File, Some(uid)).map_err(|e| words.error(&path, e))?;
        if !read_only && loose.is_some() {
            private_fs::set_mode(&file, FILE_MODE).map_err(|e| words.error(&path, e))?;
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
