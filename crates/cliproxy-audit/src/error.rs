//! The crate's one error type.
//!
//! The texts are about the audit log itself: they name the file and what is wrong with it,
//! never a setting of the service that embeds the crate. A service that wants its operators to
//! see which of its settings is concerned matches on the variant and words it (the fields
//! carry everything the text says).

use std::path::PathBuf;

/// What can go wrong in the audit layer. Every variant names the file concerned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The audit file (or its directory) could not be opened or created.
    #[error("cannot open the audit log {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Another process (or another sink) holds the exclusive lock on the audit file: two
    /// writers would interleave their chains and cut each other's lines.
    #[error(
        "cannot open the audit log {path}: another process holds it (an exclusive lock on the \
         file: is another writer appending to the same audit log?)"
    )]
    Locked {
        /// The file.
        path: PathBuf,
    },
    /// The existing audit file's last line could not be read to continue its chain. The file
    /// should be checked with the verifier ([`crate::verify_files`]) and moved away.
    #[error("cannot continue the hash chain of {path}: {reason}")]
    Chain {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The audit file is behind the head anchored by its [`crate::HeadAnchor`]: lines were cut
    /// off its end, or it was deleted, since they were written (refused under
    /// [`crate::OnGap::Refuse`]).
    #[error(
        "the audit log {path} is behind its head anchor: the anchor holds seq {anchored_seq} \
         with hash {anchored_hash}, but {found}; lines were cut off or the file was deleted or \
         replaced (refused: on_gap is refuse; with continue the gap is recorded as a \
         security_violation line and the chain goes on)"
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
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
