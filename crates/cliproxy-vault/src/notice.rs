//! What a store fixed or noticed on its own, for the caller to log as it sees fit: the vault
//! depends on no logging framework.

use std::fmt;
use std::path::PathBuf;

/// Something a [`crate::CredentialStore`] fixed or noticed on its own (loose permissions
/// tightened, a plaintext file while encryption is on, a key nearing its write limit), as
/// returned by [`crate::CredentialStore::take_notices`]. None of them holds a secret. The
/// `Display` speaks in the library's terms; the variants carry the data, so that a program
/// can word them with its own setting names and commands.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Notice {
    /// The credential directory had a looser mode; it was changed to 0700.
    DirectoryModeTightened {
        /// The directory.
        path: PathBuf,
        /// The mode it had.
        was: u32,
    },
    /// A credential file had a looser mode; it was changed to 0600.
    FileModeTightened {
        /// The file.
        path: PathBuf,
        /// The mode it had.
        was: u32,
    },
    /// The credential directory is on a read-only filesystem and has no lock file, so a store
    /// opened exclusively holds no lock on it.
    ReadOnlyUnlocked {
        /// The directory.
        dir: PathBuf,
    },
    /// The temporary file of an interrupted write was removed.
    TemporaryRemoved {
        /// The temporary file.
        path: PathBuf,
    },
    /// The temporary file of an interrupted write could not be removed.
    TemporaryNotRemoved {
        /// The temporary file.
        path: PathBuf,
        /// The operating system's error.
        error: String,
    },
    /// A plaintext credential file was read while the store encrypts new files.
    PlaintextWhileEncrypting {
        /// The file.
        path: PathBuf,
    },
    /// A plaintext credential file was taken in and encrypted by a migration.
    PlaintextTakenIn {
        /// The file.
        path: PathBuf,
        /// The credential's provider.
        provider: String,
        /// Where its token will be sent, when not the provider's default.
        base_url: Option<String>,
    },
    /// The current data key has encrypted many files: it should be rotated before the limit.
    KeyNearLimit {
        /// The key id.
        key_id: String,
        /// Writes counted under it.
        writes: u64,
        /// The limit after which writes are refused ([`crate::Error::KeyExhausted`]).
        limit: u64,
    },
    /// The last-use times are unreadable; they start afresh.
    LastUsedUnreadable {
        /// Why (an error of this crate, which never holds a secret).
        error: String,
    },
    /// The device fingerprint derived from this machine's MAC address and hostname was
    /// replaced by a random id.
    FingerprintReplaced {
        /// The fingerprint file.
        path: PathBuf,
    },
    /// The feed of changes made by other processes (a shared store's watcher) was cut; it is
    /// reconnected with a backoff, and everything is re-read once it is back.
    ChangeFeedDown {
        /// Where the store is.
        location: PathBuf,
        /// Why (the client's text, which never holds a URL or a secret).
        cause: String,
    },
    /// The feed of changes is back; every credential is re-read, in case one changed meanwhile.
    ChangeFeedUp {
        /// Where the store is.
        location: PathBuf,
    },
}

impl fmt::Display for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::DirectoryModeTightened { path, was } => write!(
                f,
                "{}: credential directory had mode {was:04o}; changed to 0700",
                path.display()
            ),
            Self::FileModeTightened { path, was } => {
                write!(f, "{}: credential file had mode {was:04o}; changed to 0600", path.display())
            }
            Self::ReadOnlyUnlocked { dir } => write!(
                f,
                "{}: the credential directory is on a read-only filesystem and has no lock file, so it is not locked against a writer where it is writable",
                dir.display()
            ),
            Self::TemporaryRemoved { path } => {
                write!(f, "{}: removed the temporary file of an interrupted write", path.display())
            }
            Self::TemporaryNotRemoved { path, error } => write!(
                f,
                "{}: cannot remove the temporary file of an interrupted write: {error}",
                path.display()
            ),
            Self::PlaintextWhileEncrypting { path } => write!(
                f,
                "{}: plaintext credential while encryption is enabled; a migration encrypts it",
                path.display()
            ),
            Self::PlaintextTakenIn { path, provider, base_url } => write!(
                f,
                "{}: plaintext credential taken in and encrypted (provider {provider}, base_url {}); make sure you wrote it",
                path.display(),
                base_url.as_deref().unwrap_or("the provider's"),
            ),
            Self::KeyNearLimit { key_id, writes, limit } => write!(
                f,
                "data key {key_id} has encrypted {writes} files; rotate it before {limit} (a new current key, this one among the previous keys, then re-encrypt)"
            ),
            Self::LastUsedUnreadable { error } => {
                write!(f, "{error}; last-use times start afresh")
            }
            Self::FingerprintReplaced { path } => write!(
                f,
                "{}: the device fingerprint was derived from this machine's MAC address and hostname; replaced by a random id (upstreams see a new device once)",
                path.display()
            ),
            Self::ChangeFeedDown { location, cause } => write!(
                f,
                "{}: the feed of credential changes made by other instances was cut ({cause}); reconnecting, and every credential is re-read once it is back",
                location.display()
            ),
            Self::ChangeFeedUp { location } => write!(
                f,
                "{}: the feed of credential changes is back; every credential is re-read",
                location.display()
            ),
        }
    }
}
