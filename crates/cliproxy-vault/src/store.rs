use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use cliproxy_core::private_fs::{self, DIR_MODE, FILE_MODE, Kind, PrivateError};
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use crate::credential::{MAX_FILE_BYTES, validate_name};
use crate::crypto::Keyring;
use crate::fingerprint::{self, FINGERPRINT_FILE};
use crate::lease::{ChangeHandler, RefreshLease, Watcher};
use crate::lock::DirLock;
use crate::mode::{Words, set_mode};
use crate::{
    Credential, CredentialFile, CredentialMeta, Error, Notice, Protection, Result,
    parse_credential_file,
};

/// Writes under one key after which a warning asks for a rotation (random 96-bit nonces are
/// safe for 2^32 encryptions under one key; we warn at a quarter of that).
const KEY_WRITES_WARN: u64 = 1 << 30;
/// Writes under one key after which the vault refuses to encrypt more.
pub(crate) const KEY_WRITES_MAX: u64 = 1 << 32;
/// The per-key write counters, in the credential directory (hidden, so never taken for a
/// credential).
const KEY_USAGE_FILE: &str = ".key-usage.json";
/// When each credential was last used: `{"<id>": <unix seconds>}`. Not secret.
const LAST_USED_FILE: &str = ".last-used.json";
/// The largest bookkeeping file read (key usage, last use, fingerprint).
const MAX_BOOKKEEPING_BYTES: u64 = 4 * 1024 * 1024;

/// What [`CredentialStore::reencrypt`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reencrypted {
    /// Ids that were plaintext and are now encrypted.
    pub from_plaintext: Vec<String>,
    /// Ids that were under a previous key and are now under the current one.
    pub from_previous_key: Vec<String>,
    /// How many were already under the current key.
    pub unchanged: usize,
}

/// One file of the credential directory as listed: a credential's metadata, or why the file
/// cannot be read.
#[derive(Debug)]
#[non_exhaustive]
pub enum ListEntry {
    /// A file that reads as a credential (plaintext ones included: listing uses no token).
    Readable(CredentialMeta),
    /// A file that does not read as a credential.
    Unreadable(UnreadableFile),
}

impl ListEntry {
    /// The credential id: from the file's contents when readable, else from its name.
    pub fn id(&self) -> &str {
        match self {
            Self::Readable(meta) => &meta.id,
            Self::Unreadable(file) => &file.id,
        }
    }
}

/// A credential file that cannot be read. Only its name, its path and the class of the
/// problem are given to callers that answer remote requests; `error` names the file and the
/// problem and never quotes a token, but may quote a short field of a damaged file (an id),
/// so it is for the operator's own tools and logs.
#[derive(Debug)]
#[non_exhaustive]
pub struct UnreadableFile {
    /// The id taken from the file name (`<id>.json`).
    pub id: String,
    /// The file.
    pub path: PathBuf,
    /// The class of the problem.
    pub reason: Unreadable,
    /// The full error.
    pub error: Error,
}

/// Why a credential file cannot be read, as a stable name for APIs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unreadable {
    /// Not JSON, or not a credential's shape (truncated, emptied, random bytes, id mismatch).
    Malformed,
    /// A format version this build cannot read.
    UnsupportedVersion,
    /// Larger than any credential.
    TooLarge,
    /// Sealed under a configured key but does not decrypt: the file was changed.
    DecryptFailed,
    /// Sealed under a key that is not configured.
    UnknownKey,
    /// Plaintext while the store requires encrypted files.
    PlaintextRefused,
    /// A symbolic link, a directory or another non-regular file.
    NotARegularFile,
    /// Owned by another user.
    ForeignOwner,
    /// The file name is not a valid credential id.
    InvalidName,
    /// The operating system could not open or read it.
    Io,
}

impl Unreadable {
    /// The class of a read error.
    pub fn of(error: &Error) -> Self {
        match error {
            Error::UnsupportedVersion { .. } => Self::UnsupportedVersion,
            Error::TooLarge { .. } => Self::TooLarge,
            Error::Decrypt { .. } => Self::DecryptFailed,
            Error::UnknownKey { .. } => Self::UnknownKey,
            Error::PlaintextRefused { .. } => Self::PlaintextRefused,
            Error::Unusable { .. } => Self::NotARegularFile,
            Error::ForeignOwner { .. } => Self::ForeignOwner,
            Error::InvalidName { .. } => Self::InvalidName,
            Error::Io { .. } | Error::Random | Error::Redis { .. } => Self::Io,
            // What remains (`Malformed`, `Invalid`, and errors a read never returns) is a file
            // that is not what a credential file must be.
            _ => Self::Malformed,
        }
    }

    /// `snake_case`, stable: `malformed`, `decrypt_failed`, `unknown_key`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::UnsupportedVersion => "unsupported_version",
            Self::TooLarge => "too_large",
            Self::DecryptFailed => "decrypt_failed",
            Self::UnknownKey => "unknown_key",
            Self::PlaintextRefused => "plaintext_refused",
            Self::NotARegularFile => "not_a_regular_file",
            Self::ForeignOwner => "foreign_owner",
            Self::InvalidName => "invalid_name",
            Self::Io => "io_error",
        }
    }

    /// One fixed sentence for the class, with the fix; it never depends on the file.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Malformed => {
                "not a valid credential file (damaged or not written by cliproxy); restore it from a backup or delete it"
            }
            Self::UnsupportedVersion => {
                "written by a newer cliproxy in a format this build cannot read"
            }
            Self::TooLarge => "larger than any credential file can be; delete it",
            Self::DecryptFailed => {
                "does not decrypt with the key it names: the file was changed; restore it from a backup or delete it"
            }
            Self::UnknownKey => {
                "sealed with a data key that is neither the current key nor a previous key; add that key or delete the file"
            }
            Self::PlaintextRefused => {
                "plaintext while the store requires encrypted files; migrate it if you wrote it, otherwise delete it"
            }
            Self::NotARegularFile => {
                "a symbolic link or not a regular file; only regular files are read"
            }
            Self::ForeignOwner => {
                "owned by another user; chown it to the user of the process that reads it or delete it"
            }
            Self::InvalidName => "the file name is not a valid credential id",
            Self::Io => "the file could not be opened or read (see the gateway's host)",
        }
    }
}

/// Where credentials live: the vault's main trait, and the seam another store (a Redis or a
/// database, a secrets manager) implements. [`FileStore`] is the default implementation,
/// built from a [`crate::Config`] section or from plain values with [`FileStoreOptions`].
///
/// The trait is object-safe: programs hold an `Arc<dyn CredentialStore>` and never need to
/// know which store is behind it. Implementations must never put a secret into an error, a
/// notice or a `Debug` line, and must make `put` atomic: after a crash the old or the new
/// credential is there, never half of one.
pub trait CredentialStore: Send + Sync + fmt::Debug {
    /// Every credential, without secrets, sorted by id. One unreadable file is an error naming
    /// it. Plaintext files are listed (as [`Protection::Plaintext`]) even when the store
    /// requires encrypted files and refuses to load them: listing uses no token, and the
    /// operator needs to see them to decide whether to [`CredentialStore::migrate`] them.
    fn list(&self) -> Result<Vec<CredentialMeta>>;
    /// Every credential file, sorted by id, each as its metadata or as unreadable with the
    /// reason: one damaged or foreign-key file does not hide the others. An error only when
    /// the directory itself cannot be listed.
    fn list_entries(&self) -> Result<Vec<ListEntry>>;
    /// The file of one credential as [`CredentialStore::list_entries`] shows it, reading no
    /// other file; `None` when there is none with this id.
    fn entry(&self, id: &str) -> Result<Option<ListEntry>>;
    /// Every credential with its secret, sorted by id. One unreadable credential is an error
    /// naming it, never a silent skip; so is a plaintext file while the store requires
    /// encrypted files.
    fn load_all(&self) -> Result<Vec<Credential>>;
    /// One credential, or `None` when there is none with this id. Reads only its file, and
    /// refuses it as [`CredentialStore::load_all`] would.
    fn get(&self, id: &str) -> Result<Option<Credential>>;
    /// Stores (or replaces) a credential atomically.
    fn put(&self, credential: &Credential) -> Result<()>;
    /// How [`CredentialStore::put`] stores a credential now: encrypted under which key, or
    /// plaintext.
    fn write_protection(&self) -> Protection;
    /// Removes a credential's file without reading it (a damaged file can be removed too);
    /// `false` when there was none.
    fn delete(&self, id: &str) -> Result<bool>;
    /// Whether the store is usable right now (for a readiness probe).
    fn check(&self) -> Result<()>;
    /// Where the store keeps its data, for messages.
    fn location(&self) -> &Path;
    /// Things the store fixed or noticed on its own (loose permissions tightened, plaintext
    /// files while encryption is on, a key nearing its write limit) since the last call, for
    /// the caller to log. None of them contains a secret.
    fn take_notices(&self) -> Vec<Notice> {
        Vec::new()
    }
    /// Records when credentials were last used (`(id, unix seconds)`), for listings. Meant to
    /// be called in batches, off any request path.
    fn record_use(&self, used: &[(String, u64)]) -> Result<()>;
    /// This install's device fingerprint: a random id generated once and then kept with the
    /// credentials (0600), so it stays the same across restarts and differs between installs.
    fn device_fingerprint(&self) -> Result<String>;
    /// Re-writes every credential that is not under the current encryption key, each
    /// atomically: the second half of a key rotation. Plaintext files are encrypted too,
    /// unless the store requires encrypted files and refuses them (then nothing is rewritten:
    /// only [`CredentialStore::migrate`] takes them in). [`Error::EncryptionDisabled`] when
    /// the store has no current key.
    fn reencrypt(&self) -> Result<Reencrypted>;
    /// [`CredentialStore::reencrypt`] that also takes in plaintext files whatever
    /// the store requires: the explicit way in. Each file taken in is
    /// reported as a notice naming its provider and base URL, for the operator to check.
    fn migrate(&self) -> Result<Reencrypted>;
    /// Where the credential `id` is kept, for messages and listings: by default the file
    /// `<id>.json` in [`CredentialStore::location`].
    fn record_path(&self, id: &str) -> PathBuf {
        self.location().join(format!("{id}.json"))
    }
    /// Taken before an OAuth refresh of `id`, so that of several processes sharing the store
    /// only one refreshes: `Some(lease)` when this caller must refresh (and then
    /// [`RefreshLease::release`] it), `None` when another process holds the lease; that caller
    /// then re-reads [`CredentialStore::get`] until the access token changes or `ttl` has
    /// passed. A store only one process uses has nobody to share with: by default every
    /// caller gets a lease that releases nothing (the process orders its own refreshes).
    fn refresh_lock(&self, id: &str, ttl: Duration) -> Result<Option<RefreshLease>> {
        let _ = (id, ttl);
        Ok(Some(RefreshLease::local()))
    }
    /// Calls `on_change` with the id of each credential another process (or this one) puts or
    /// deletes, and with `"*"` when changes may have been missed (the caller then re-reads
    /// everything), from a thread of the store's own until the [`Watcher`] is dropped: it
    /// should hand the id on (to a channel) rather than block that thread. `None` for a store
    /// that no other process changes while it runs (the default).
    fn watch(&self, on_change: ChangeHandler) -> Result<Option<Watcher>> {
        let _ = on_change;
        Ok(None)
    }
}

/// How to open a [`FileStore`], from plain values: the keys, whether plaintext files are
/// refused, whether the directory is locked for the store's whole life.
///
/// ```
/// use cliproxy_core::Secret;
/// use cliproxy_vault::{CredentialStore, FileStoreOptions, Keyring, Protection};
///
/// # let dir = tempfile::tempdir().unwrap();
/// let key = Secret::from("q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=".to_owned());
/// let store = FileStoreOptions::new()
///     .keys(Keyring::from_secrets(Some(&key), &[]).unwrap())
///     .require_encrypted(true)
///     .exclusive(true)
///     .open(dir.path())
///     .unwrap();
/// assert!(matches!(store.write_protection(), Protection::Encrypted(_)));
/// ```
#[derive(Debug, Default)]
#[must_use]
pub struct FileStoreOptions {
    keys: Keyring,
    require_encrypted: bool,
    exclusive: bool,
}

impl FileStoreOptions {
    /// No keys (plaintext files), plaintext files accepted, the lock taken for each write.
    pub fn new() -> Self {
        Self::default()
    }

    /// The data keys: new files are encrypted under the current one; files under any of them
    /// are read.
    pub fn keys(mut self, keys: Keyring) -> Self {
        self.keys = keys;
        self
    }

    /// Refuse plaintext credential files when loading ([`Error::PlaintextRefused`]): whoever
    /// can write the directory without holding a key could otherwise plant a token and a
    /// `base_url` of their choosing. Listing still shows such files, and
    /// [`CredentialStore::migrate`] takes them in. Needs a current key
    /// ([`Error::RequireEncryptedWithoutEncryption`]).
    pub fn require_encrypted(mut self, require: bool) -> Self {
        self.require_encrypted = require;
        self
    }

    /// Hold the lock of the directory from opening until the store is dropped (a service that
    /// keeps credentials in memory and writes them back), instead of taking it for each write.
    /// Opening is refused with [`Error::Locked`] within 200 ms while another process holds it.
    pub fn exclusive(mut self, exclusive: bool) -> Self {
        self.exclusive = exclusive;
        self
    }

    /// Opens the store in `dir`, creating the directory 0700 when missing and tightening loose
    /// permissions on a directory we own (reported as notices). A directory owned by another
    /// user is refused.
    pub fn open(self, dir: &Path) -> Result<FileStore> {
        if self.require_encrypted && self.keys.current().is_none() {
            return Err(Error::RequireEncryptedWithoutEncryption);
        }
        FileStore::with_keys(dir, self.keys, self.require_encrypted, self.exclusive)
    }
}

/// One JSON file per credential (`<id>.json`) in a directory: the directory 0700, each file
/// 0600, both owned by the gateway's user.
pub struct FileStore {
    dir: PathBuf,
    uid: u32,
    keys: Keyring,
    /// Refuse plaintext files when loading.
    require_encrypted: bool,
    notices: Mutex<Vec<Notice>>,
    /// Serialises the key-usage counter updates of this process.
    writes: Mutex<()>,
    /// The lock of the directory, held for the store's whole life by a store opened with
    /// [`FileStore::open_exclusive`] (a long-running service's). A store without it takes the
    /// lock for each write instead (see [`FileStore::write_lock`]).
    held: Option<DirLock>,
}

impl fmt::Debug for FileStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileStore").field("dir", &self.dir).finish_non_exhaustive()
    }
}

/// Whether a read takes a plaintext file while `require_encrypted` is on.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Plaintext {
    /// Refuse it (loading: the token would be used).
    Refuse,
    /// Take it (listing, which uses no token; a migration, the explicit way in).
    Admit,
}

impl FileStore {
    /// Opens (creating 0700 when missing) the credential directory `dir`, without encryption
    /// keys: new files are plaintext and encrypted ones cannot be read. Use
    /// [`FileStoreOptions`] (or [`crate::Config::build`]) for a store with keys.
    ///
    /// The store holds no lock: it reads while another process writes (every write is an
    /// atomic rename, so a read sees the old file or the new one), and each of its writes takes
    /// the lock of the directory for its own duration, refused with [`Error::Locked`] while
    /// another process (a store opened exclusively) holds it.
    pub fn open(dir: &Path) -> Result<Self> {
        FileStoreOptions::new().open(dir)
    }

    /// [`FileStore::open`] that takes the lock of the directory and holds it until the store
    /// is dropped: what a long-running service does, since it keeps credentials in memory and
    /// writes them back. [`Error::Locked`] within 200 ms when another process holds it.
    pub fn open_exclusive(dir: &Path) -> Result<Self> {
        FileStoreOptions::new().exclusive(true).open(dir)
    }

    fn with_keys(
        dir: &Path,
        keys: Keyring,
        require_encrypted: bool,
        exclusive: bool,
    ) -> Result<Self> {
        let mut store = Self {
            dir: dir.to_owned(),
            uid: nix::unistd::geteuid().as_raw(),
            keys,
            require_encrypted,
            notices: Mutex::new(Vec::new()),
            writes: Mutex::new(()),
            held: None,
        };
        match fs::metadata(dir) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                private_fs::create_dir(dir)
                    .map_err(|e| Error::io(dir, "create the credential directory", e))?;
            }
            Err(e) => return Err(Error::io(dir, "inspect the credential directory", e)),
        }
        store.verify_dir()?;
        if exclusive {
            store.held = store.lock_dir()?;
        }
        store.remove_stale_temporaries();
        Ok(store)
    }

    /// Takes the lock of the directory (see the `lock` module); `None` on a read-only
    /// filesystem without a lock file, which is reported.
    fn lock_dir(&self) -> Result<Option<DirLock>> {
        let lock = DirLock::acquire(&self.dir, self.uid)?;
        if lock.is_none() {
            self.notice(Notice::ReadOnlyUnlocked { dir: self.dir.clone() });
        }
        Ok(lock)
    }

    /// The lock for one write: nothing when the store holds the lock for its life, else the
    /// lock taken now and released when the returned guard is dropped. Every write of the
    /// store goes through this first, so no two processes write the directory at once.
    fn write_lock(&self) -> Result<Option<DirLock>> {
        if self.held.is_some() { Ok(None) } else { self.lock_dir() }
    }

    /// Removes the temporary files of writes that were killed half-way (`.<name>.tmp-<hex>`).
    /// They are never read as credentials, but one may hold a sealed copy of a credential
    /// deleted since, and they would pile up. A temporary file being written right now is
    /// locked by its writer and left alone. Failures only leave the file (reported).
    fn remove_stale_temporaries(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else { return };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if !(name.starts_with('.') && name.contains(".tmp-")) {
                continue;
            }
            let path = entry.path();
            let Ok(file) = private_fs::open_nonblocking(&path, OpenOptions::new().read(true))
            else {
                continue;
            };
            if !file.metadata().is_ok_and(|m| m.is_file()) || file.try_lock().is_err() {
                continue;
            }
            match fs::remove_file(&path) {
                Ok(()) => self.notice(Notice::TemporaryRemoved { path }),
                Err(e) => {
                    self.notice(Notice::TemporaryNotRemoved { path, error: e.to_string() });
                }
            }
        }
    }

    /// The directory must be a directory we own, 0700; looser modes are tightened and reported.
    fn verify_dir(&self) -> Result<()> {
        let dir = &self.dir;
        let meta =
            fs::metadata(dir).map_err(|e| Error::io(dir, "inspect the credential directory", e))?;
        // The directory itself may be a symbolic link (to a directory on another mount, say):
        // it is the files inside that are never read through one.
        let words = Words {
            open: "restrict the credential directory to 0700",
            set_mode: "restrict the credential directory to 0700",
            symlink: "is a symbolic link",
            wrong_kind: "exists but is not a directory; the credential directory must be one",
        };
        if let Some(mode) =
            private_fs::check(&meta, Kind::Dir, Some(self.uid)).map_err(|e| words.error(dir, e))?
        {
            let file = File::open(dir)
                .map_err(|e| Error::io(dir, "restrict the credential directory to 0700", e))?;
            private_fs::set_mode(&file, DIR_MODE).map_err(|e| words.error(dir, e))?;
            self.notice(Notice::DirectoryModeTightened { path: dir.clone(), was: mode });
        }
        Ok(())
    }

    fn notice(&self, notice: Notice) {
        if let Ok(mut notices) = self.notices.lock() {
            notices.push(notice);
        }
    }

    fn path_of(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// The ids of the credential files: `*.json`, not hidden (temporary files are hidden).
    fn ids(&self) -> Result<Vec<String>> {
        let entries = fs::read_dir(&self.dir)
            .map_err(|e| Error::io(&self.dir, "list the credential directory", e))?;
        let mut ids = Vec::new();
        for entry in entries {
            let entry =
                entry.map_err(|e| Error::io(&self.dir, "list the credential directory", e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with('.') {
                continue;
            }
            if let Some(id) = name.strip_suffix(".json") {
                ids.push(id.to_owned());
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// Reads and parses one credential file: no symlinks, regular files only, owned by us,
    /// at most 1 MiB; a loose mode is tightened and reported. A plaintext file is refused
    /// when `require_encrypted` is on, unless `plaintext` admits it (listing, migration).
    fn read(&self, id: &str, plaintext: Plaintext) -> Result<Option<(Credential, Protection)>> {
        let path = self.path_of(id);
        validate_name("credential id", id).map_err(|e| Error::Invalid {
            path: path.clone(),
            reason: format!("file name is not a valid credential id ({e})"),
        })?;
        let Some((file, meta, loose)) = self.open_owned(&path)? else { return Ok(None) };
        if let Some(mode) = loose {
            set_mode(&file, &path, FILE_MODE, "restrict the credential file to 0600")?;
            self.notice(Notice::FileModeTightened { path: path.clone(), was: mode });
        }
        if meta.len() > MAX_FILE_BYTES {
            return Err(Error::TooLarge { path, size: meta.len(), limit: MAX_FILE_BYTES });
        }
        let mut bytes =
            Zeroizing::new(Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0)));
        file.take(MAX_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::io(&path, "read", e))?;
        let (credential, protection, notice) =
            open_record(&self.keys, self.require_encrypted, plaintext, &path, id, &bytes)?;
        if let Some(notice) = notice {
            self.notice(notice);
        }
        Ok(Some((credential, protection)))
    }

    fn read_all(&self, plaintext: Plaintext) -> Result<Vec<(Credential, Protection)>> {
        let mut credentials = Vec::new();
        for id in self.ids()? {
            // A file that vanished between listing and reading was deleted concurrently.
            if let Some(entry) = self.read(&id, plaintext)? {
                credentials.push(entry);
            }
        }
        Ok(credentials)
    }

    /// One file as listed; `None` when it vanished (deleted concurrently).
    fn list_entry(&self, id: &str, last_used: &BTreeMap<String, u64>) -> Option<ListEntry> {
        let path = self.path_of(id);
        let read = match validate_name("credential id", id) {
            // `read` says the same, but as `Invalid`: keep the class precise.
            Err(error) => Err(error),
            Ok(()) => self.read(id, Plaintext::Admit),
        };
        match read {
            Ok(None) => None,
            Ok(Some((credential, protection))) => {
                let mut meta = credential.meta(path, protection);
                meta.last_used = last_used.get(&credential.id).copied();
                Some(ListEntry::Readable(meta))
            }
            Err(error) => Some(unreadable_entry(id, path, error)),
        }
    }

    /// Re-writes every credential not under the current key; see `reencrypt` and `migrate`.
    fn rewrite(&self, plaintext: Plaintext) -> Result<Reencrypted> {
        let Some(current) = self.keys.current() else {
            return Err(Error::EncryptionDisabled);
        };
        // The whole run holds the lock: a gateway started meanwhile is refused until it ends,
        // and a running one refuses the run before anything is read.
        let _lock = self.write_lock()?;
        // Read everything first: a file that does not decrypt (or a plaintext file refused)
        // stops the run before any file is rewritten. Only the ids are kept.
        let ids: Vec<String> =
            self.read_all(plaintext)?.into_iter().map(|(credential, _)| credential.id).collect();
        #[cfg(test)]
        tests::between_passes(&self.dir);
        let mut report = Reencrypted::default();
        for id in ids {
            // Each credential is read again right before it is rewritten, never taken from the
            // first pass: whatever changed it since (a writer that does not take the lock, an
            // operator's `rm`) is kept, not undone. One that is gone stays gone.
            let Some((credential, protection)) = self.read(&id, plaintext)? else { continue };
            match protection {
                Protection::Encrypted(key_id) if key_id == current.id() => report.unchanged += 1,
                Protection::Encrypted(_) => {
                    self.put_locked(&credential)?;
                    report.from_previous_key.push(credential.id);
                }
                Protection::Plaintext => {
                    self.put_locked(&credential)?;
                    // The operator's last chance to notice a file they did not write: where
                    // its token will be sent.
                    self.notice(Notice::PlaintextTakenIn {
                        path: self.path_of(&credential.id),
                        provider: credential.provider.clone(),
                        base_url: credential.base_url.clone(),
                    });
                    report.from_plaintext.push(credential.id);
                }
            }
        }
        // "plaintext credential; migrate it", said by both reads, is what this run fixed.
        if let Ok(mut notices) = self.notices.lock() {
            notices.retain(|n| !matches!(n, Notice::PlaintextWhileEncrypting { .. }));
        }
        Ok(report)
    }

    /// [`CredentialStore::put`] for a caller that holds the lock of the directory.
    fn put_locked(&self, credential: &Credential) -> Result<()> {
        let key = self.keys.current();
        if let Some(key) = key {
            let _guard = self.writes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            self.count_key_write(key.id())?;
        }
        let bytes = credential.encode(key)?;
        self.write_atomically(&format!("{}.json", credential.id), &bytes)
    }

    /// Counts one more write under the current key, persistently; refuses past the limit.
    fn count_key_write(&self, key_id: &str) -> Result<()> {
        let path = self.dir.join(KEY_USAGE_FILE);
        let mut usage: BTreeMap<String, u64> = match self.read_bookkeeping(KEY_USAGE_FILE)? {
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|_| Error::Invalid {
                path: path.clone(),
                reason: "the key-usage counters are unreadable; restore the file or delete it (the counts restart at zero)".to_owned(),
            })?,
            None => BTreeMap::new(),
        };
        let writes = usage.entry(key_id.to_owned()).or_insert(0);
        refuse_exhausted_key(key_id, *writes)?;
        *writes += 1;
        if let Some(notice) = key_near_limit(key_id, *writes) {
            self.notice(notice);
        }
        let bytes = serde_json::to_vec(&usage).map_err(|_| Error::Invalid {
            path: path.clone(),
            reason: "cannot encode the key-usage counters".to_owned(),
        })?;
        self.write_atomically(KEY_USAGE_FILE, &bytes)
    }

    /// Opens a file in the directory for reading: never through a symbolic link, only a
    /// regular file, only one we own; with its mode when that is not 0600 (tightened by
    /// credential reads, left by bookkeeping reads). `None` when it does not exist.
    fn open_owned(&self, path: &Path) -> Result<Option<(File, fs::Metadata, Option<u32>)>> {
        let file = match private_fs::open_nonblocking(path, OpenOptions::new().read(true)) {
            Ok(file) => file,
            Err(PrivateError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                return Ok(None);
            }
            Err(e) => return Err(Words::FILE.error(path, e)),
        };
        let meta = file.metadata().map_err(|e| Error::io(path, "inspect", e))?;
        let loose = private_fs::check(&meta, Kind::File, Some(self.uid))
            .map_err(|e| Words::FILE.error(path, e))?;
        Ok(Some((file, meta, loose)))
    }

    /// Reads one of the hidden bookkeeping files with the same care as a credential file (no
    /// symlinks, regular files we own, size cap); `None` when it does not exist.
    fn read_bookkeeping(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let path = self.dir.join(name);
        let Some((file, meta, _)) = self.open_owned(&path)? else { return Ok(None) };
        if meta.len() > MAX_BOOKKEEPING_BYTES {
            return Err(Error::TooLarge { path, size: meta.len(), limit: MAX_BOOKKEEPING_BYTES });
        }
        let mut bytes = Vec::new();
        file.take(MAX_BOOKKEEPING_BYTES)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::io(&path, "read", e))?;
        Ok(Some(bytes))
    }

    /// The last-use times; an unreadable file is reported and treated as empty (it only
    /// feeds `vault list`, and the next flush rewrites it).
    fn last_used(&self) -> BTreeMap<String, u64> {
        let parsed = self.read_bookkeeping(LAST_USED_FILE).and_then(|bytes| {
            bytes.map_or(Ok(BTreeMap::new()), |bytes| {
                serde_json::from_slice(&bytes).map_err(|_| Error::Invalid {
                    path: self.dir.join(LAST_USED_FILE),
                    reason: "not a map of credential ids to times".to_owned(),
                })
            })
        });
        parsed.unwrap_or_else(|error| {
            self.notice(Notice::LastUsedUnreadable { error: error.to_string() });
            BTreeMap::new()
        })
    }

    /// Writes `name` in the directory: temporary file 0600, fsync, rename, fsync directory.
    fn write_atomically(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let mut random = [0u8; 6];
        SystemRandom::new().fill(&mut random).map_err(|_| Error::Random)?;
        let suffix: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let temp = self.dir.join(format!(".{}.tmp-{suffix}", name.trim_start_matches('.')));
        let target = self.dir.join(name);
        let write = || -> Result<()> {
            let mut file = private_fs::open(&temp, OpenOptions::new().write(true).create_new(true))
                .map_err(|e| Words { open: "create", ..Words::FILE }.error(&temp, e))?;
            // Held until the file is renamed or gone: a store opening meanwhile (see
            // `remove_stale_temporaries`) leaves a locked temporary file alone.
            file.try_lock().map_err(|e| {
                Error::io(
                    &temp,
                    "lock",
                    io::Error::other(format!("{e}: removed by another process?")),
                )
            })?;
            // The umask cannot widen 0600, but it could have narrowed it; make it exact.
            set_mode(&file, &temp, FILE_MODE, "set mode 0600 on")?;
            file.write_all(bytes).map_err(|e| Error::io(&temp, "write", e))?;
            file.sync_all().map_err(|e| Error::io(&temp, "sync", e))?;
            fs::rename(&temp, &target).map_err(|e| Error::io(&target, "rename into place", e))
        };
        if let Err(error) = write() {
            let _ = fs::remove_file(&temp);
            return Err(error);
        }
        self.sync_dir()
    }

    fn sync_dir(&self) -> Result<()> {
        File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|e| Error::io(&self.dir, "sync the credential directory", e))
    }
}

/// Opens the contents of one stored credential (a file's, or a Redis record's, which is the
/// same document) as every store does: a plaintext one is refused when the store requires
/// encrypted records, unless `plaintext` admits it; a sealed one is opened with the key it
/// names. The notice, when there is one, says a plaintext record was read while the store
/// encrypts. `path` names the record in errors.
pub(crate) fn open_record(
    keys: &Keyring,
    require_encrypted: bool,
    plaintext: Plaintext,
    path: &Path,
    id: &str,
    bytes: &[u8],
) -> Result<(Credential, Protection, Option<Notice>)> {
    match parse_credential_file(path, id, bytes)? {
        CredentialFile::Plain(_) if require_encrypted && plaintext == Plaintext::Refuse => {
            Err(Error::PlaintextRefused { path: path.to_owned() })
        }
        CredentialFile::Plain(credential) => {
            let notice =
                keys.current().map(|_| Notice::PlaintextWhileEncrypting { path: path.to_owned() });
            Ok((credential, Protection::Plaintext, notice))
        }
        CredentialFile::Sealed(sealed) => {
            let key = keys.find(&sealed.key_id).ok_or_else(|| Error::UnknownKey {
                path: path.to_owned(),
                key_id: sealed.key_id.clone(),
                known: keys.ids().into_iter().map(str::to_owned).collect(),
            })?;
            let credential = sealed.open(path, key)?;
            Ok((credential, Protection::Encrypted(sealed.key_id), None))
        }
    }
}

/// A record that does not read, as listed: its id, where it is, the class of the problem.
pub(crate) fn unreadable_entry(id: &str, path: PathBuf, error: Error) -> ListEntry {
    ListEntry::Unreadable(UnreadableFile {
        id: id.to_owned(),
        path,
        reason: Unreadable::of(&error),
        error,
    })
}

/// The write limit of a data key, shared by every store: [`Error::KeyExhausted`] when the key
/// has already encrypted `writes` records and that is the most random nonces safely allow.
pub(crate) fn refuse_exhausted_key(key_id: &str, writes: u64) -> Result<()> {
    if writes >= KEY_WRITES_MAX {
        return Err(Error::KeyExhausted { key_id: key_id.to_owned(), writes });
    }
    Ok(())
}

/// The warning of a data key nearing its write limit, after its `writes`-th write: once at
/// the warning threshold, then every million writes, so that a log is not flooded.
pub(crate) fn key_near_limit(key_id: &str, writes: u64) -> Option<Notice> {
    (writes >= KEY_WRITES_WARN && (writes == KEY_WRITES_WARN || writes.is_multiple_of(1_000_000)))
        .then(|| Notice::KeyNearLimit { key_id: key_id.to_owned(), writes, limit: KEY_WRITES_MAX })
}

impl CredentialStore for FileStore {
    fn list(&self) -> Result<Vec<CredentialMeta>> {
        let last_used = self.last_used();
        Ok(self
            .read_all(Plaintext::Admit)?
            .into_iter()
            .map(|(c, p)| {
                let mut meta = c.meta(self.path_of(&c.id), p);
                meta.last_used = last_used.get(&c.id).copied();
                meta
            })
            .collect())
    }

    fn list_entries(&self) -> Result<Vec<ListEntry>> {
        let last_used = self.last_used();
        Ok(self.ids()?.iter().filter_map(|id| self.list_entry(id, &last_used)).collect())
    }

    fn entry(&self, id: &str) -> Result<Option<ListEntry>> {
        validate_name("credential id", id)?;
        Ok(self.list_entry(id, &self.last_used()))
    }

    fn load_all(&self) -> Result<Vec<Credential>> {
        Ok(self
            .read_all(Plaintext::Refuse)?
            .into_iter()
            .map(|(credential, _)| credential)
            .collect())
    }

    fn get(&self, id: &str) -> Result<Option<Credential>> {
        validate_name("credential id", id)?;
        Ok(self.read(id, Plaintext::Refuse)?.map(|(credential, _)| credential))
    }

    fn put(&self, credential: &Credential) -> Result<()> {
        validate_name("credential id", &credential.id)?;
        validate_name("provider name", &credential.provider)?;
        let _lock = self.write_lock()?;
        self.put_locked(credential)
    }

    fn write_protection(&self) -> Protection {
        self.keys
            .current()
            .map_or(Protection::Plaintext, |key| Protection::Encrypted(key.id().to_owned()))
    }

    fn delete(&self, id: &str) -> Result<bool> {
        validate_name("credential id", id)?;
        let _lock = self.write_lock()?;
        let path = self.path_of(id);
        match fs::remove_file(&path) {
            Ok(()) => {
                self.sync_dir()?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io(path, "delete", e)),
        }
    }

    fn check(&self) -> Result<()> {
        self.verify_dir()?;
        fs::read_dir(&self.dir)
            .map(drop)
            .map_err(|e| Error::io(&self.dir, "list the credential directory", e))
    }

    fn location(&self) -> &Path {
        &self.dir
    }

    fn take_notices(&self) -> Vec<Notice> {
        self.notices.lock().map(|mut n| std::mem::take(&mut *n)).unwrap_or_default()
    }

    fn record_use(&self, used: &[(String, u64)]) -> Result<()> {
        if used.is_empty() {
            return Ok(());
        }
        let _lock = self.write_lock()?;
        let _guard = self.writes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut last_used = self.last_used();
        for (id, at) in used {
            let entry = last_used.entry(id.clone()).or_insert(0);
            *entry = (*entry).max(*at);
        }
        // Forget credentials that no longer exist, so the file stays small.
        let ids = self.ids()?;
        last_used.retain(|id, _| ids.binary_search(id).is_ok());
        let bytes = serde_json::to_vec(&last_used).map_err(|_| Error::Invalid {
            path: self.dir.join(LAST_USED_FILE),
            reason: "cannot encode the last-use times".to_owned(),
        })?;
        self.write_atomically(LAST_USED_FILE, &bytes)
    }

    fn device_fingerprint(&self) -> Result<String> {
        let path = self.dir.join(FINGERPRINT_FILE);
        let _guard = self.writes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(bytes) = self.read_bookkeeping(FINGERPRINT_FILE)? {
            let text = String::from_utf8_lossy(&bytes).trim().to_owned();
            if !fingerprint::is_valid(&text) {
                return Err(Error::Invalid {
                    path,
                    reason: "not a device fingerprint (64 hex digits); delete it to compute a new one (upstreams will see a new device)".to_owned(),
                });
            }
            if fingerprint::legacy_of_this_machine().as_deref() != Some(text.as_str()) {
                return Ok(text);
            }
            // The old unkeyed hash of this machine's MAC address and hostname: it can be
            // reversed by enumeration, so it is replaced once (upstreams see a new device).
            self.notice(Notice::FingerprintReplaced { path: path.clone() });
        }
        let computed = fingerprint::generate()?;
        let _lock = self.write_lock()?;
        self.write_atomically(FINGERPRINT_FILE, format!("{computed}\n").as_bytes())?;
        Ok(computed)
    }

    fn reencrypt(&self) -> Result<Reencrypted> {
        self.rewrite(Plaintext::Refuse)
    }

    fn migrate(&self) -> Result<Reencrypted> {
        self.rewrite(Plaintext::Admit)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a failed expectation fails the test")]

    use super::*;
    use cliproxy_core::private_fs::hooks::ignore_chmod;
    use std::fs::Permissions;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    /// What a test runs between the two passes of `rewrite`.
    type Hook = Box<dyn FnOnce(&Path)>;

    thread_local! {
        /// Run by `rewrite` on this thread between its check of every file and its rewrites,
        /// to change the directory at the moment a snapshot would go stale.
        static BETWEEN_PASSES: std::cell::RefCell<Option<Hook>> = const { std::cell::RefCell::new(None) };
    }

    pub(super) fn between_passes(dir: &Path) {
        if let Some(hook) = BETWEEN_PASSES.with(|hook| hook.borrow_mut().take()) {
            hook(dir);
        }
    }

    const KEY_OLD: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    const KEY_NEW: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";

    fn api_key(id: &str, token: &str) -> Credential {
        Credential::new_api_key("openai", cliproxy_core::Secret::from(token.to_owned()))
            .unwrap()
            .with_id(id)
            .unwrap()
    }

    /// A vault config for `dir` under `key`, with `previous` keys.
    fn encrypted(dir: &Path, key: &str, previous: &[&str]) -> crate::Config {
        crate::Config {
            dir: dir.to_owned(),
            encryption: crate::EncryptionConfig {
                enabled: true,
                key: Some(cliproxy_core::Secret::from(key.to_owned())),
                previous_keys: previous
                    .iter()
                    .map(|k| cliproxy_core::Secret::from((*k).to_owned()))
                    .collect(),
                ..Default::default()
            },
            ..crate::Config::default()
        }
    }

    fn token_of(store: &dyn CredentialStore, id: &str) -> Option<String> {
        let credential = store.get(id).unwrap()?;
        let crate::CredentialSecret::ApiKey(token) = &credential.secret else { panic!("{id}") };
        Some(token.expose().to_owned())
    }

    /// A child process that another thread forks holds a copy of the lock's descriptor until
    /// it execs: writes taken one after another (each takes and releases the lock) while
    /// children are spawned must not be refused. (Seen with the management tests, whose
    /// private-network threads run `ip`.) Two threads writing at once through one store are
    /// not refused either.
    #[test]
    fn writes_are_not_refused_while_other_threads_spawn_children_or_write() {
        let root = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(FileStore::open(root.path()).unwrap());
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let spawner = {
            let done = std::sync::Arc::clone(&done);
            std::thread::spawn(move || {
                let mut children = 0;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    std::process::Command::new("true").status().unwrap();
                    children += 1;
                }
                children
            })
        };
        let writer = {
            let store = std::sync::Arc::clone(&store);
            std::thread::spawn(move || {
                for n in 0..100 {
                    store.put(&api_key(&format!("w{n}"), "sk-lock-unit-w")).unwrap();
                }
            })
        };
        for n in 0..200 {
            store.put(&api_key(&format!("s{}", n % 4), "sk-lock-unit-s")).unwrap();
        }
        writer.join().unwrap();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        let children = spawner.join().unwrap();
        assert!(children > 0, "no child was spawned meanwhile");
        assert_eq!(store.list().unwrap().len(), 104);
    }

    /// Issue 18 item 16: while one store holds the directory (a running gateway), a second one
    /// cannot take it, and a store without the lock can read but not write; the refusal names
    /// the directory and its lock file, in the library's terms (the setting and the ways out
    /// are the caller's to add). Dropping the holder releases it.
    #[test]
    fn a_second_writer_is_refused_until_the_holder_is_dropped() {
        let root = tempfile::tempdir().unwrap();
        let holder = FileStore::open_exclusive(root.path()).unwrap();
        holder.put(&api_key("one", "sk-lock-unit-one")).unwrap();

        let refused = FileStore::open_exclusive(root.path()).map(|_| ()).unwrap_err();
        assert!(matches!(refused, Error::Locked { .. }), "{refused:?}");
        let message = refused.to_string();
        let dir = root.path().display().to_string();
        let lock = root.path().join(".lock").display().to_string();
        for needle in [dir.as_str(), "the credential directory is in use", lock.as_str()] {
            assert!(message.contains(needle), "{needle:?} not in {message}");
        }
        for product in ["auth.", "cliproxy-server", "/v0/management"] {
            assert!(!message.contains(product), "{product:?} in {message}");
        }
        let reader = FileStore::open(root.path()).unwrap();
        assert_eq!(token_of(&reader, "one").as_deref(), Some("sk-lock-unit-one"));
        assert_eq!(reader.list().unwrap().len(), 1);
        let error = reader.put(&api_key("two", "sk-lock-unit-two")).unwrap_err();
        assert!(matches!(error, Error::Locked { .. }), "{error:?}");
        let error = reader.delete("one").unwrap_err();
        assert!(matches!(error, Error::Locked { .. }), "{error:?}");
        let error = reader.record_use(&[("one".to_owned(), 1)]).unwrap_err();
        assert!(matches!(error, Error::Locked { .. }), "{error:?}");
        assert!(!root.path().join("two.json").exists());
        assert!(root.path().join("one.json").exists());
        // The holder itself writes as before.
        holder.put(&api_key("two", "sk-lock-unit-two")).unwrap();
        assert!(holder.delete("two").unwrap());

        drop(holder);
        reader.put(&api_key("two", "sk-lock-unit-two")).unwrap();
        let next = FileStore::open_exclusive(root.path()).unwrap();
        assert_eq!(token_of(&next, "two").as_deref(), Some("sk-lock-unit-two"));
    }

    /// The lock file is bookkeeping: 0600 like every file of the directory, never listed as a
    /// credential, never removed as the temporary file of an interrupted write (a store
    /// opening beside the holder leaves it, and the lock, in place).
    #[test]
    fn the_lock_file_is_0600_and_never_taken_for_a_credential() {
        let root = tempfile::tempdir().unwrap();
        let holder = FileStore::open_exclusive(root.path()).unwrap();
        holder.put(&api_key("one", "sk-lock-unit-one")).unwrap();
        let lock = root.path().join(crate::lock::LOCK_FILE);
        assert_eq!(fs::metadata(&lock).unwrap().mode() & 0o7777, FILE_MODE);
        let reader = FileStore::open(root.path()).unwrap();
        let listed: Vec<String> =
            reader.list_entries().unwrap().iter().map(|e| e.id().to_owned()).collect();
        assert_eq!(listed, ["one"]);
        assert_eq!(reader.load_all().unwrap().len(), 1);
        assert!(lock.exists());
        assert!(matches!(FileStore::open_exclusive(root.path()), Err(Error::Locked { .. })));
        // A loose lock file left by something else is tightened by the next holder.
        drop(holder);
        fs::set_permissions(&lock, Permissions::from_mode(0o644)).unwrap();
        drop(FileStore::open_exclusive(root.path()).unwrap());
        assert_eq!(fs::metadata(&lock).unwrap().mode() & 0o7777, FILE_MODE);
        // A symbolic link in its place is refused, and what it points to is left alone.
        let elsewhere = root.path().join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        let target = elsewhere.join("target");
        fs::remove_file(&lock).unwrap();
        std::os::unix::fs::symlink(&target, &lock).unwrap();
        let error = FileStore::open_exclusive(root.path()).map(|_| ()).unwrap_err().to_string();
        assert!(error.contains(".lock") && error.contains("symbolic link"), "{error}");
        assert!(!target.exists());
    }

    /// `vault rotate-key` rewrites each credential from the file as it is when its turn
    /// comes, never from the pass that checked them all: a credential deleted meanwhile stays
    /// deleted, and one whose tokens changed meanwhile (an OAuth refresh) keeps the new ones.
    /// Before issue 18 every file was rewritten from a snapshot taken before the first write.
    #[test]
    fn reencrypt_neither_resurrects_nor_rolls_back_what_changed_meanwhile() {
        let root = tempfile::tempdir().unwrap();
        let old = encrypted(root.path(), KEY_OLD, &[]).build().unwrap();
        for id in ["one", "two", "three"] {
            old.put(&api_key(id, &format!("sk-lock-unit-{id}-old"))).unwrap();
        }
        drop(old);
        // What a writer under the old key makes of `three` meanwhile, made elsewhere.
        let elsewhere = tempfile::tempdir().unwrap();
        encrypted(elsewhere.path(), KEY_OLD, &[])
            .build()
            .unwrap()
            .put(&api_key("three", "sk-lock-unit-three-refreshed"))
            .unwrap();
        let refreshed = fs::read(elsewhere.path().join("three.json")).unwrap();

        let rotating = encrypted(root.path(), KEY_NEW, &[KEY_OLD]).build_exclusive().unwrap();
        BETWEEN_PASSES.with(|hook| {
            *hook.borrow_mut() = Some(Box::new(move |dir: &Path| {
                fs::remove_file(dir.join("two.json")).unwrap();
                fs::write(dir.join("three.json"), &refreshed).unwrap();
            }));
        });
        let report = rotating.reencrypt().unwrap();
        assert_eq!(report.from_previous_key, ["one", "three"]);
        assert!(!root.path().join("two.json").exists(), "a deleted credential came back");
        drop(rotating);
        let new = encrypted(root.path(), KEY_NEW, &[]).build().unwrap();
        assert_eq!(
            token_of(new.as_ref(), "three").as_deref(),
            Some("sk-lock-unit-three-refreshed")
        );
        assert_eq!(token_of(new.as_ref(), "one").as_deref(), Some("sk-lock-unit-one-old"));
        assert_eq!(token_of(new.as_ref(), "two"), None);
    }

    /// Issue 18 item 19: a loose mode that cannot be tightened is refused, every time, and
    /// never reported as changed.
    #[test]
    fn a_filesystem_that_ignores_chmod_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let store = FileStore::open(root.path()).unwrap();
        let credential = crate::Credential::new_api_key(
            "openai",
            cliproxy_core::Secret::from("sk-planted-1".to_owned()),
        )
        .unwrap()
        .with_id("one")
        .unwrap();
        store.put(&credential).unwrap();
        let file = root.path().join("one.json");
        fs::set_permissions(&file, Permissions::from_mode(0o644)).unwrap();
        ignore_chmod(true);
        for _ in 0..2 {
            let error = store.get("one").unwrap_err().to_string();
            assert!(
                error.contains("still 0644") && error.contains("ignores permissions"),
                "{error}"
            );
        }
        let notices: Vec<String> = store.take_notices().iter().map(Notice::to_string).collect();
        let notices = notices.join("\n");
        assert!(!notices.contains("changed to 0600"), "{notices}");
        // The directory is checked the same way when the store opens.
        fs::set_permissions(root.path(), Permissions::from_mode(0o755)).unwrap();
        let error = FileStore::open(root.path()).map(|_| ()).unwrap_err().to_string();
        assert!(error.contains("still 0755"), "{error}");
        // Where modes are kept, the same file is tightened and read.
        ignore_chmod(false);
        assert!(FileStore::open(root.path()).unwrap().get("one").unwrap().is_some());
        assert_eq!(fs::metadata(&file).unwrap().mode() & 0o7777, 0o600);
    }

    /// Issue 18 item 19: an install that kept the old, reversible fingerprint gets a random
    /// one in its place, once; a machine without a MAC address never had that hash.
    #[test]
    fn the_old_unkeyed_fingerprint_is_replaced_once() {
        let Some(legacy) = fingerprint::legacy_of_this_machine() else { return };
        let root = tempfile::tempdir().unwrap();
        let store = FileStore::open(root.path()).unwrap();
        let file = root.path().join(FINGERPRINT_FILE);
        fs::write(&file, format!("{legacy}\n")).unwrap();
        let replaced = store.device_fingerprint().unwrap();
        assert_ne!(replaced, legacy);
        assert_eq!(fs::read_to_string(&file).unwrap(), format!("{replaced}\n"));
        let notices = store.take_notices();
        assert!(
            notices
                .iter()
                .any(|n| matches!(n, Notice::FingerprintReplaced { path } if *path == file)
                    && n.to_string().contains("replaced by a random id")),
            "{notices:?}"
        );
        assert_eq!(store.device_fingerprint().unwrap(), replaced);
    }
}
