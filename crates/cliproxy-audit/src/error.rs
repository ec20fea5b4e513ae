//! The crate's one error type.

use std::path::PathBuf;

/// What can go wrong in the audit layer. Every variant names the file or key concerned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The audit file (or its directory) could not be opened or created.
    #[error("cannot open the audit log {path} (logging.audit.file): {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Another process (or another sink) holds the exclusive lock on the audit file: two
    /// writers would interleave their chains and cut each other's lines.
    #[error(
        "cannot open the audit log {path} (logging.audit.file): another process holds it (an \
         exclusive lock on the file: is another cliproxy writing the same audit log?)"
    )]
    Locked {
        /// The file.
        path: PathBuf,
    },
    /// The existing audit file's last line could not be read to continue its chain.
    #[error("cannot continue the hash chain of {path} (logging.audit.file): {reason}")]
    Chain {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A configuration value is unusable.
    #[error("{key}: {reason}")]
    Config {
        /// The key path.
        key: String,
        /// Why.
        reason: String,
    },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
