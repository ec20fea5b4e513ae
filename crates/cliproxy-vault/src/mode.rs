//! The vault's words for the private file policy of `cliproxy_core::private_fs`, which the
//! store (its directory, credential and bookkeeping files, temporary files), the directory
//! lock and the signing key share. A leaf, so that none of them imports another for it.

use std::path::Path;

use cliproxy_core::private_fs::{self, PrivateError, Step};

use crate::Error;

/// What the vault says when a path breaks the policy: the operation it was doing when an
/// operating-system error came (`cannot {op}`), and why a symbolic link or a path of the
/// wrong kind cannot be used there.
#[derive(Clone, Copy)]
pub(crate) struct Words {
    /// The operation, when the path could not be opened.
    pub(crate) open: &'static str,
    /// The operation, when its mode could not be set.
    pub(crate) set_mode: &'static str,
    /// Why a symbolic link is refused.
    pub(crate) symlink: &'static str,
    /// Why a path of the wrong kind is refused.
    pub(crate) wrong_kind: &'static str,
}

impl Words {
    /// A file in the credential directory read or written by the store.
    pub(crate) const FILE: Self = Self {
        open: "open",
        set_mode: "set mode 0600 on",
        symlink: "is a symbolic link; only regular files are read here",
        wrong_kind: "is not a regular file",
    };

    /// The same, with another operation named when its mode cannot be set.
    pub(crate) const fn setting_mode(self, set_mode: &'static str) -> Self {
        Self { set_mode, ..self }
    }

    /// The vault's error for `error` at `path`.
    pub(crate) fn error(self, path: &Path, error: PrivateError) -> Error {
        let path = path.to_owned();
        match error {
            PrivateError::Symlink => Error::Unusable { path, reason: self.symlink },
            PrivateError::WrongKind { .. } => Error::Unusable { path, reason: self.wrong_kind },
            PrivateError::ForeignOwner { owner, ours } => Error::ForeignOwner { path, owner, ours },
            PrivateError::ModeNotKept { wanted, got } => Error::ModeNotKept { path, wanted, got },
            PrivateError::Io { step, source } => {
                let op = match step {
                    Step::Open => self.open,
                    Step::SetMode => self.set_mode,
                    _ => "inspect",
                };
                Error::io(&path, op, source)
            }
            // The policy may grow refusals; each is still one of this path.
            other => Error::io(&path, "inspect", std::io::Error::other(other.to_string())),
        }
    }
}

/// Sets `mode` on the open `file` (at `path`) and reads it back (a filesystem that ignores
/// permissions is refused, not announced as "tightened" on every read).
pub(crate) fn set_mode(
    file: &std::fs::File,
    path: &Path,
    mode: u32,
    op: &'static str,
) -> crate::Result<()> {
    private_fs::set_mode(file, mode).map_err(|e| Words::FILE.setting_mode(op).error(path, e))
}
