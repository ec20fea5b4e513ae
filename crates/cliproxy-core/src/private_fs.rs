//! The private file policy, written once: the directories that hold credentials, keys, the
//! state database and the audit log are 0700, their files 0600, both owned by the user the
//! process runs as, and no symbolic link is followed on the way to them (one planted there
//! would send a secret, or a write, wherever it points).
//!
//! The functions here change what they must and say what they changed: a loose mode is
//! tightened and returned as a [`Tightened`], never logged, so that each caller words it (and
//! logs it) in its own way. Refusals are a [`PrivateError`] without a path or a config key;
//! each crate maps it into its own error, with the texts its operators know. [`inspect`] is
//! the read-only twin for `check`: it says what is wrong and changes nothing.

use std::fs::{DirBuilder, File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The mode of a private directory: only its owner may list, enter or change it.
pub const DIR_MODE: u32 = 0o700;
/// The mode of a private file: only its owner may read or write it.
pub const FILE_MODE: u32 = 0o600;

/// What a private path must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
}

impl Kind {
    /// The mode this kind of private path has: 0600 or 0700.
    pub const fn mode(self) -> u32 {
        match self {
            Self::File => FILE_MODE,
            Self::Dir => DIR_MODE,
        }
    }

    fn is(self, meta: &std::fs::Metadata) -> bool {
        match self {
            Self::File => meta.is_file(),
            Self::Dir => meta.is_dir(),
        }
    }
}

/// Which step of [`open`] or [`secure`] an I/O error comes from, so that the caller can say
/// what it was doing in its own words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Step {
    /// Opening (or creating) the path.
    Open,
    /// Reading its metadata.
    Inspect,
    /// Setting its mode.
    SetMode,
}

/// Why a path is refused as private. It names no path: the caller holds it, and adds it (and
/// the config key it came from) when it maps this into its own error.
#[derive(Debug)]
#[non_exhaustive]
pub enum PrivateError {
    /// The path is a symbolic link; it is refused, not followed.
    Symlink,
    /// The path is not of the kind expected (a directory where a file must be, a device...).
    WrongKind {
        /// What it had to be.
        expected: Kind,
    },
    /// The path belongs to another user.
    ForeignOwner {
        /// Its owner.
        owner: u32,
        /// The user the process runs as.
        ours: u32,
    },
    /// The mode was set but did not stick: the filesystem ignores permissions (vfat, some
    /// network or FUSE mounts), so the path cannot be kept private.
    ModeNotKept {
        /// The mode set.
        wanted: u32,
        /// The mode read back.
        got: u32,
    },
    /// An operating-system error at one step.
    Io {
        /// The step that failed.
        step: Step,
        /// The error.
        source: io::Error,
    },
}

impl std::fmt::Display for PrivateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Symlink => f.write_str("is a symbolic link"),
            Self::WrongKind { expected: Kind::File } => f.write_str("is not a regular file"),
            Self::WrongKind { expected: Kind::Dir } => f.write_str("is not a directory"),
            Self::ForeignOwner { owner, ours } => write!(f, "is owned by uid {owner}, not {ours}"),
            Self::ModeNotKept { wanted, got } => {
                write!(f, "mode {wanted:04o} was set but reads back as {got:04o}")
            }
            Self::Io { source, .. } => source.fmt(f),
        }
    }
}

impl std::error::Error for PrivateError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// A loose mode that was tightened: the caller reports it (an operator should know that a
/// secret was readable by others until now).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tightened {
    /// The mode found (permission bits, with setuid, setgid and sticky).
    pub was: u32,
    /// The mode set.
    pub now: u32,
}

/// Creates `dir` and its missing parents, each new one 0700. An existing directory is left as
/// it is: [`secure`] checks (and tightens) the one that holds the secrets.
pub fn create_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)
}

/// Creates `dir`, 0700 whatever the umask, and only `dir`: its parent must exist, and a name
/// that exists already (a directory, a file, a symbolic link) is refused
/// (`ErrorKind::AlreadyExists`), so a directory planted under a predictable name is never
/// used.
pub fn create_new_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new().mode(DIR_MODE).create(dir)
}

/// Opens `path` with `options` without following a symbolic link at its last component
/// (`O_NOFOLLOW`), closed on exec, and created 0600 when the options create it. A symbolic
/// link is [`PrivateError::Symlink`]; any other failure, a missing file included, is
/// [`PrivateError::Io`] at [`Step::Open`].
pub fn open(path: &Path, options: &mut OpenOptions) -> Result<File, PrivateError> {
    open_with(path, options, 0)
}

/// [`open`] that does not wait (`O_NONBLOCK`): for reading a path where a named pipe may
/// have been planted, whose open would otherwise wait for a writer forever; [`secure`] then
/// refuses it as not a regular file. Not for a file that is written as a stream (an audit
/// log on a pipe would then drop lines when the pipe is full).
pub fn open_nonblocking(path: &Path, options: &mut OpenOptions) -> Result<File, PrivateError> {
    open_with(path, options, libc::O_NONBLOCK)
}

fn open_with(path: &Path, options: &mut OpenOptions, flags: i32) -> Result<File, PrivateError> {
    options
        .mode(FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | flags)
        .open(path)
        .map_err(|source| {
            // ELOOP is also a prefix with too many links; only a link at the path itself is
            // the refusal this function promises.
            let link = source.raw_os_error() == Some(libc::ELOOP) && is_symlink(path);
            if link { PrivateError::Symlink } else { PrivateError::Io { step: Step::Open, source } }
        })
}

/// Whether `path` itself is a symbolic link (a missing or unreadable path is not). For the
/// paths that another program opens, such as SQLite's companion files, where no descriptor of
/// ours can refuse the link.
pub fn is_symlink(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

/// Holds the open `file` to the policy for `kind` (see [`check`]); a different mode is set and
/// read back, and `Some` says what it was.
pub fn secure(
    file: &File,
    kind: Kind,
    uid: Option<u32>,
) -> Result<Option<Tightened>, PrivateError> {
    let meta =
        file.metadata().map_err(|source| PrivateError::Io { step: Step::Inspect, source })?;
    let Some(was) = check(&meta, kind, uid)? else { return Ok(None) };
    let now = kind.mode();
    set_mode(file, now)?;
    Ok(Some(Tightened { was, now }))
}

/// The policy for `kind`, on metadata already read: of that kind and owned by `uid` when one
/// is given, else refused. `Some(mode)` when its mode is not exactly 0600 (a file) or 0700 (a
/// directory), for the caller to tighten ([`set_mode`]) or to leave (a read-only mount). The
/// owner is checked first, so another user's file is refused before anything is changed.
pub fn check(
    meta: &std::fs::Metadata,
    kind: Kind,
    uid: Option<u32>,
) -> Result<Option<u32>, PrivateError> {
    if !kind.is(meta) {
        return Err(PrivateError::WrongKind { expected: kind });
    }
    if let Some(ours) = uid
        && meta.uid() != ours
    {
        return Err(PrivateError::ForeignOwner { owner: meta.uid(), ours });
    }
    let mode = meta.mode() & 0o7777;
    Ok((mode != kind.mode()).then_some(mode))
}

/// Sets `mode` on the open `file` and reads it back: a filesystem that ignores permissions
/// accepts the call and keeps the old mode, and what it holds must then be refused, not
/// announced as "tightened" at every start.
pub fn set_mode(file: &File, mode: u32) -> Result<(), PrivateError> {
    if !hooks::chmod_ignored() {
        file.set_permissions(Permissions::from_mode(mode))
            .map_err(|source| PrivateError::Io { step: Step::SetMode, source })?;
    }
    let got =
        file.metadata().map_err(|source| PrivateError::Io { step: Step::Inspect, source })?.mode()
            & 0o7777;
    if got != mode {
        return Err(PrivateError::ModeNotKept { wanted: mode, got });
    }
    Ok(())
}

/// What [`inspect`] found wrong with a private path. Several can hold at once (a loose mode
/// and another owner); a symbolic link, a wrong kind or an unreadable path is the only one.
#[derive(Debug)]
#[non_exhaustive]
pub enum Finding {
    /// It cannot be inspected (other than missing).
    Unreadable(io::Error),
    /// It is a symbolic link (not followed, so nothing else is known).
    Symlink,
    /// It is not of the kind expected.
    WrongKind,
    /// It belongs to another user.
    ForeignOwner {
        /// Its owner.
        owner: u32,
    },
    /// Its mode is not exactly 0600 (a file) or 0700 (a directory).
    LooseMode {
        /// The mode found (permission bits, with setuid, setgid and sticky).
        mode: u32,
    },
}

/// The read-only check: what is wrong with `path` as a private `kind` owned by `uid`, without
/// changing anything and without following a symbolic link. `None` when it does not exist; an
/// empty list when it is as it should be.
pub fn inspect(path: &Path, kind: Kind, uid: u32) -> Option<Vec<Finding>> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        Err(e) => return Some(vec![Finding::Unreadable(e)]),
    };
    if meta.file_type().is_symlink() {
        return Some(vec![Finding::Symlink]);
    }
    if !kind.is(&meta) {
        return Some(vec![Finding::WrongKind]);
    }
    let mut findings = Vec::new();
    if meta.mode() & 0o7777 != kind.mode() {
        findings.push(Finding::LooseMode { mode: meta.mode() & 0o7777 });
    }
    if meta.uid() != uid {
        findings.push(Finding::ForeignOwner { owner: meta.uid() });
    }
    Some(findings)
}

/// A test hook: a filesystem that ignores chmod, which no test can mount without privileges.
/// Compiled only for this crate's tests and for crates that turn on `test-hooks` in their
/// dev-dependencies.
#[cfg(any(test, feature = "test-hooks"))]
pub mod hooks {
    use std::cell::Cell;

    thread_local! {
        static IGNORE_CHMOD: Cell<bool> = const { Cell::new(false) };
    }

    /// Makes [`super::set_mode`] skip the chmod on this thread while `ignore` is true, as a
    /// filesystem that ignores permissions does.
    pub fn ignore_chmod(ignore: bool) {
        IGNORE_CHMOD.with(|cell| cell.set(ignore));
    }

    pub(super) fn chmod_ignored() -> bool {
        IGNORE_CHMOD.with(Cell::get)
    }
}

#[cfg(not(any(test, feature = "test-hooks")))]
mod hooks {
    pub(super) const fn chmod_ignored() -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn uid_of(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().uid()
    }

    fn mode_of(path: &Path) -> u32 {
        std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
    }

    /// A new private directory inside a temporary one, so that `create_dir` is exercised.
    fn temp_dir() -> (tempfile::TempDir, std::path::PathBuf) {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("private");
        create_dir(&dir).unwrap();
        (root, dir)
    }

    #[test]
    fn a_symbolic_link_is_refused_not_followed() {
        let (_root, dir) = temp_dir();
        let target = dir.join("target");
        std::fs::write(&target, b"secret").unwrap();
        let link = dir.join("link");
        symlink(&target, &link).unwrap();
        let opened = open(&link, OpenOptions::new().read(true));
        assert!(matches!(opened, Err(PrivateError::Symlink)), "{opened:?}");
        // Creating through a dangling link must not create its target either.
        let dangling = dir.join("dangling");
        symlink(dir.join("elsewhere"), &dangling).unwrap();
        let created = open(&dangling, OpenOptions::new().write(true).create(true));
        assert!(matches!(created, Err(PrivateError::Symlink)), "{created:?}");
        assert!(!dir.join("elsewhere").exists());
        assert!(is_symlink(&link) && !is_symlink(&target) && !is_symlink(&dir.join("missing")));
        assert!(matches!(
            inspect(&link, Kind::File, uid_of(&dir)).as_deref(),
            Some([Finding::Symlink])
        ));
    }

    #[test]
    fn a_loose_mode_is_tightened_and_told() {
        let (_root, dir) = temp_dir();
        let path = dir.join("file");
        std::fs::write(&path, b"secret").unwrap();
        std::fs::set_permissions(&path, Permissions::from_mode(0o644)).unwrap();
        let file = open(&path, OpenOptions::new().read(true)).unwrap();
        let told = secure(&file, Kind::File, Some(uid_of(&path))).unwrap();
        assert_eq!(told, Some(Tightened { was: 0o644, now: 0o600 }));
        assert_eq!(mode_of(&path), 0o600);
        // Once private, nothing more is done or told.
        assert_eq!(secure(&file, Kind::File, Some(uid_of(&path))).unwrap(), None);
        std::fs::set_permissions(&dir, Permissions::from_mode(0o755)).unwrap();
        let handle = File::open(&dir).unwrap();
        let told = secure(&handle, Kind::Dir, Some(uid_of(&dir))).unwrap();
        assert_eq!(told, Some(Tightened { was: 0o755, now: 0o700 }));
        assert_eq!(mode_of(&dir), 0o700);
    }

    #[test]
    fn a_new_file_and_directory_are_created_private() {
        let (_root, dir) = temp_dir();
        let path = dir.join("new");
        let file = open(&path, OpenOptions::new().write(true).create_new(true)).unwrap();
        assert_eq!(secure(&file, Kind::File, Some(uid_of(&path))).unwrap(), None);
        assert_eq!(mode_of(&path), 0o600);
        assert_eq!(mode_of(&dir), 0o700);
    }

    #[test]
    fn a_new_directory_is_created_private_and_an_existing_name_is_refused() {
        let (_root, dir) = temp_dir();
        let new = dir.join("new");
        create_new_dir(&new).unwrap();
        assert_eq!(mode_of(&new), 0o700);
        // Whatever is there already is refused, a link to a directory included.
        std::os::unix::fs::symlink(&new, dir.join("link")).unwrap();
        for taken in [new.clone(), dir.join("link")] {
            let error = create_new_dir(&taken).unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::AlreadyExists, "{}", taken.display());
        }
        // Its parent is not made for it.
        assert!(create_new_dir(&dir.join("missing").join("child")).is_err());
    }

    #[test]
    fn a_named_pipe_is_refused_without_waiting_for_a_writer() {
        let (_root, dir) = temp_dir();
        let pipe = dir.join("pipe");
        let made = std::process::Command::new("mkfifo").arg(&pipe).status().unwrap();
        assert!(made.success());
        let file = open_nonblocking(&pipe, OpenOptions::new().read(true)).unwrap();
        let refused = secure(&file, Kind::File, None);
        assert!(
            matches!(refused, Err(PrivateError::WrongKind { expected: Kind::File })),
            "{refused:?}"
        );
    }

    #[test]
    fn another_owner_is_refused_untouched() {
        let (_root, dir) = temp_dir();
        let path = dir.join("file");
        std::fs::write(&path, b"secret").unwrap();
        std::fs::set_permissions(&path, Permissions::from_mode(0o644)).unwrap();
        let ours = uid_of(&path);
        // Without privileges a file of another user cannot be made: the process poses as
        // another user instead, which is the same comparison.
        let other = ours.wrapping_add(1);
        let file = open(&path, OpenOptions::new().read(true)).unwrap();
        let refused = secure(&file, Kind::File, Some(other));
        assert!(
            matches!(refused, Err(PrivateError::ForeignOwner { owner, ours: o }) if owner == ours && o == other),
            "{refused:?}"
        );
        assert_eq!(mode_of(&path), 0o644, "a refused file is not changed");
        let findings = inspect(&path, Kind::File, other).unwrap();
        assert!(
            findings.iter().any(|f| matches!(f, Finding::ForeignOwner { owner } if *owner == ours))
        );
    }

    #[test]
    fn a_wrong_kind_is_refused() {
        let (_root, dir) = temp_dir();
        let handle = File::open(&dir).unwrap();
        let refused = secure(&handle, Kind::File, None);
        assert!(
            matches!(refused, Err(PrivateError::WrongKind { expected: Kind::File })),
            "{refused:?}"
        );
        assert!(matches!(
            inspect(&dir, Kind::File, uid_of(&dir)).as_deref(),
            Some([Finding::WrongKind])
        ));
    }

    #[test]
    fn a_filesystem_that_ignores_chmod_is_refused() {
        let (_root, dir) = temp_dir();
        let path = dir.join("file");
        std::fs::write(&path, b"secret").unwrap();
        std::fs::set_permissions(&path, Permissions::from_mode(0o640)).unwrap();
        let file = open(&path, OpenOptions::new().read(true)).unwrap();
        hooks::ignore_chmod(true);
        let refused = secure(&file, Kind::File, None);
        hooks::ignore_chmod(false);
        assert!(
            matches!(refused, Err(PrivateError::ModeNotKept { wanted: 0o600, got: 0o640 })),
            "{refused:?}"
        );
    }

    #[test]
    fn inspect_says_what_is_wrong_and_changes_nothing() {
        let (_root, dir) = temp_dir();
        let path = dir.join("file");
        std::fs::write(&path, b"secret").unwrap();
        std::fs::set_permissions(&path, Permissions::from_mode(0o664)).unwrap();
        std::fs::set_permissions(&dir, Permissions::from_mode(0o750)).unwrap();
        let ours = uid_of(&path);
        let file = inspect(&path, Kind::File, ours).unwrap();
        assert!(matches!(file.as_slice(), [Finding::LooseMode { mode: 0o664 }]), "{file:?}");
        let folder = inspect(&dir, Kind::Dir, ours).unwrap();
        assert!(matches!(folder.as_slice(), [Finding::LooseMode { mode: 0o750 }]), "{folder:?}");
        assert_eq!(mode_of(&path), 0o664);
        assert_eq!(mode_of(&dir), 0o750);
        assert!(inspect(&dir.join("missing"), Kind::File, ours).is_none());
        std::fs::set_permissions(&path, Permissions::from_mode(0o600)).unwrap();
        assert!(inspect(&path, Kind::File, ours).unwrap().is_empty());
    }
}
