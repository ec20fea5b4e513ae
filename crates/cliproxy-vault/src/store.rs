use std::fmt;
use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::libc;
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use crate::credential::{MAX_FILE_BYTES, validate_name};
use crate::{Credential, CredentialMeta, Error, Result, parse_credential_file};

/// Where credentials live. The gateway reads them at start-up; the CLI and (later) the
/// management API write them.
///
/// Implementations must never put a secret into an error, and must make `put` atomic: after a
/// crash the old or the new credential is there, never half of one.
pub trait CredentialStore: Send + Sync + fmt::Debug {
    /// Every credential, without secrets, sorted by id.
    fn list(&self) -> Result<Vec<CredentialMeta>>;
    /// Every credential with its secret, sorted by id. One unreadable credential is an error
    /// naming it, never a silent skip.
    fn load_all(&self) -> Result<Vec<Credential>>;
    /// One credential, or `None` when there is none with this id.
    fn get(&self, id: &str) -> Result<Option<Credential>>;
    /// Stores (or replaces) a credential atomically.
    fn put(&self, credential: &Credential) -> Result<()>;
    /// Removes a credential; `false` when there was none.
    fn delete(&self, id: &str) -> Result<bool>;
    /// Whether the store is usable right now (for `/readyz`).
    fn check(&self) -> Result<()>;
    /// Where the store keeps its data, for messages.
    fn location(&self) -> &Path;
    /// Things the store fixed on its own (loose permissions tightened) since the last call,
    /// for the caller to log. None of them contains a secret.
    fn take_notices(&self) -> Vec<String> {
        Vec::new()
    }
}

/// One JSON file per credential (`<id>.json`) in a directory: the directory 0700, each file
/// 0600, both owned by the gateway's user.
pub struct FileStore {
    dir: PathBuf,
    uid: u32,
    notices: Mutex<Vec<String>>,
}

impl fmt::Debug for FileStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileStore").field("dir", &self.dir).finish_non_exhaustive()
    }
}

const DIR_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o600;

impl FileStore {
    /// Opens (creating 0700 when missing) the credential directory `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        let store = Self {
            dir: dir.to_owned(),
            uid: nix::unistd::geteuid().as_raw(),
            notices: Mutex::new(Vec::new()),
        };
        match fs::metadata(dir) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                DirBuilder::new()
                    .recursive(true)
                    .mode(DIR_MODE)
                    .create(dir)
                    .map_err(|e| Error::io(dir, "create the credential directory (auth.dir)", e))?;
            }
            Err(e) => return Err(Error::io(dir, "inspect the credential directory (auth.dir)", e)),
        }
        store.verify_dir()?;
        Ok(store)
    }

    /// The directory must be a directory we own, 0700; looser modes are tightened and reported.
    fn verify_dir(&self) -> Result<()> {
        let dir = &self.dir;
        let meta =
            fs::metadata(dir).map_err(|e| Error::io(dir, "inspect the credential directory", e))?;
        if !meta.is_dir() {
            return Err(Error::Unusable {
                path: dir.clone(),
                reason: "auth.dir exists but is not a directory",
            });
        }
        if meta.uid() != self.uid {
            return Err(Error::ForeignOwner {
                path: dir.clone(),
                owner: meta.uid(),
                ours: self.uid,
            });
        }
        let mode = meta.mode() & 0o7777;
        if mode != DIR_MODE {
            fs::set_permissions(dir, Permissions::from_mode(DIR_MODE))
                .map_err(|e| Error::io(dir, "restrict the credential directory to 0700", e))?;
            self.notice(format!(
                "{}: credential directory had mode {mode:04o}; changed to 0700",
                dir.display()
            ));
        }
        Ok(())
    }

    fn notice(&self, text: String) {
        if let Ok(mut notices) = self.notices.lock() {
            notices.push(text);
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
    /// at most 1 MiB; a loose mode is tightened and reported.
    fn read(&self, id: &str) -> Result<Option<Credential>> {
        let path = self.path_of(id);
        validate_name("credential id", id).map_err(|e| Error::Invalid {
            path: path.clone(),
            reason: format!("file name is not a valid credential id ({e})"),
        })?;
        let file = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&path)
        {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(Error::Unusable {
                    path,
                    reason: "is a symbolic link; credential files must be regular files",
                });
            }
            Err(e) => return Err(Error::io(path, "open", e)),
        };
        let meta = file.metadata().map_err(|e| Error::io(&path, "inspect", e))?;
        if !meta.is_file() {
            return Err(Error::Unusable { path, reason: "is not a regular file" });
        }
        if meta.uid() != self.uid {
            return Err(Error::ForeignOwner { path, owner: meta.uid(), ours: self.uid });
        }
        let mode = meta.mode() & 0o7777;
        if mode != FILE_MODE {
            file.set_permissions(Permissions::from_mode(FILE_MODE))
                .map_err(|e| Error::io(&path, "restrict the credential file to 0600", e))?;
            self.notice(format!(
                "{}: credential file had mode {mode:04o}; changed to 0600",
                path.display()
            ));
        }
        if meta.len() > MAX_FILE_BYTES {
            return Err(Error::TooLarge { path, size: meta.len(), limit: MAX_FILE_BYTES });
        }
        let mut bytes =
            Zeroizing::new(Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0)));
        file.take(MAX_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::io(&path, "read", e))?;
        parse_credential_file(&path, id, &bytes).map(Some)
    }

    fn sync_dir(&self) -> Result<()> {
        File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|e| Error::io(&self.dir, "sync the credential directory", e))
    }
}

impl CredentialStore for FileStore {
    fn list(&self) -> Result<Vec<CredentialMeta>> {
        Ok(self.load_all()?.iter().map(|c| c.meta(self.path_of(&c.id))).collect())
    }

    fn load_all(&self) -> Result<Vec<Credential>> {
        let mut credentials = Vec::new();
        for id in self.ids()? {
            // A file that vanished between listing and reading was deleted concurrently.
            if let Some(credential) = self.read(&id)? {
                credentials.push(credential);
            }
        }
        Ok(credentials)
    }

    fn get(&self, id: &str) -> Result<Option<Credential>> {
        validate_name("credential id", id)?;
        self.read(id)
    }

    fn put(&self, credential: &Credential) -> Result<()> {
        validate_name("credential id", &credential.id)?;
        validate_name("provider name", &credential.provider)?;
        let bytes = credential.encode()?;
        let mut random = [0u8; 6];
        SystemRandom::new().fill(&mut random).map_err(|_| Error::Random)?;
        let suffix: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let temp = self.dir.join(format!(".{}.json.tmp-{suffix}", credential.id));
        let target = self.path_of(&credential.id);
        let write = || -> Result<()> {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(FILE_MODE)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&temp)
                .map_err(|e| Error::io(&temp, "create", e))?;
            // The umask cannot widen 0600, but it could have narrowed it; make it exact.
            file.set_permissions(Permissions::from_mode(FILE_MODE))
                .map_err(|e| Error::io(&temp, "set mode 0600 on", e))?;
            file.write_all(&bytes).map_err(|e| Error::io(&temp, "write", e))?;
            file.sync_all().map_err(|e| Error::io(&temp, "sync", e))?;
            fs::rename(&temp, &target).map_err(|e| Error::io(&target, "rename into place", e))
        };
        if let Err(error) = write() {
            let _ = fs::remove_file(&temp);
            return Err(error);
        }
        self.sync_dir()
    }

    fn delete(&self, id: &str) -> Result<bool> {
        validate_name("credential id", id)?;
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

    fn take_notices(&self) -> Vec<String> {
        self.notices.lock().map(|mut n| std::mem::take(&mut *n)).unwrap_or_default()
    }
}
