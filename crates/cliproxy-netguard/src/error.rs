//! The guard's one error type. Every message names the config key or the file it is about.

use std::path::PathBuf;

/// What can go wrong building or running the guard.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting that cannot work; the message names the key and the fix.
    #[error("{0}")]
    Config(String),
    /// A certificate or key that cannot be used; the message names the file.
    #[error("{0}")]
    Tls(String),
    /// The state database could not be opened, read or written.
    #[error("state store {} (state.path): {message}", path.display())]
    State {
        /// The database file (`state.path`).
        path: PathBuf,
        /// What failed, and what to do about it.
        message: String,
    },
}

/// The guard's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
