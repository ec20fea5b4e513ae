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
    /// The audit file is behind the head anchored in the state store: lines were cut off its
    /// end, or it was deleted, since they were written.
    #[error(
        "the audit log {path} (logging.audit.file) is behind its anchor in the state store: the \
         anchor holds seq {anchored_seq} with hash {anchored_hash}, but {found}; lines were cut \
         off or the file was deleted or replaced. Refusing to start (logging.audit.on_gap: \
         refuse): put the missing lines back, or set logging.audit.on_gap: continue to start \
         anyway (the gap is then recorded as a security_violation line)"
    )]
    Gap {
        /// The file.
        path: PathBuf,
        /// The anchored seq.
        anchored_seq: u64,
        /// The anchored hash.
        anchored_hash: String,
        /// What the file holds instead.
        found: String,
    },
    /// The head anchor could not be read.
    #[error("cannot read the audit log's head anchor: {0}")]
    Anchor(String),
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
