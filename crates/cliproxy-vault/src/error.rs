use std::io;
use std::path::PathBuf;

/// What went wrong in the vault. Every variant names the file or the config key it is about;
/// none of them carries a secret (file contents are never quoted, only line and column).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file-system operation failed.
    #[error("{path}: cannot {op}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done ("read", "create", "rename into place", ...).
        op: &'static str,
        /// The operating system's error.
        source: io::Error,
    },
    /// A file or directory belongs to another user; we refuse to trust or change it.
    #[error(
        "{path} is owned by uid {owner}, not by the uid the gateway runs as ({ours}); refusing to use it (fix: chown it to uid {ours} or remove it)"
    )]
    ForeignOwner {
        /// The file or directory.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// Our effective uid.
        ours: u32,
    },
    /// `auth.dir` (or a credential path) is not what it should be.
    #[error("{path}: {reason}")]
    Unusable {
        /// The file or directory.
        path: PathBuf,
        /// Why it cannot be used.
        reason: &'static str,
    },
    /// A mode was set and did not stick: the filesystem ignores permissions. Refused rather
    /// than reported as "changed" again on every read.
    #[error(
        "{path}: mode is still {got:04o} after setting it to {wanted:04o}: this filesystem ignores permissions (vfat, some network or FUSE mounts), so the credentials would be readable by others; put auth.dir on a filesystem that keeps modes"
    )]
    ModeNotKept {
        /// The file or directory.
        path: PathBuf,
        /// The mode set.
        wanted: u32,
        /// The mode read back.
        got: u32,
    },
    /// A credential file is not valid JSON or does not match the credential schema. Only the
    /// position and the kind of problem are reported: serde messages may quote the token.
    #[error("{path}: not a valid credential file ({category} at line {line}, column {column})")]
    Malformed {
        /// The credential file.
        path: PathBuf,
        /// `syntax error`, `unexpected end of file`, `wrong type or unknown field`, ...
        category: &'static str,
        /// 1-based line of the problem.
        line: usize,
        /// 1-based column of the problem.
        column: usize,
    },
    /// A credential file carries a format version this build cannot read.
    #[error(
        "{path}: credential file format version {version} is not supported by this build (supported: 1); it was written by a newer cliproxy"
    )]
    UnsupportedVersion {
        /// The credential file.
        path: PathBuf,
        /// The version found.
        version: u64,
    },
    /// A credential file is larger than any credential can be.
    #[error("{path}: {size} bytes is larger than the {limit}-byte limit for a credential file")]
    TooLarge {
        /// The credential file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A credential's contents are inconsistent with its file (id, provider, token).
    #[error("{path}: {reason}")]
    Invalid {
        /// The credential file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A credential id or provider name supplied by the caller is not acceptable.
    #[error("invalid {what} `{value}`: {reason}")]
    InvalidName {
        /// `credential id` or `provider name`.
        what: &'static str,
        /// The rejected value (ids and provider names are not secret).
        value: String,
        /// What is allowed.
        reason: &'static str,
    },
    /// A client key in `auth.api_keys` is unusable. The key itself is never printed.
    #[error("auth.api_keys[{index}]: {reason}")]
    ClientKey {
        /// Position in the list.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A configuration value of the vault (`auth.*`) is unusable.
    #[error("{key}: {reason}")]
    Config {
        /// The full config key, e.g. `auth.encryption.key`.
        key: String,
        /// What is wrong and how to fix it. Never contains the value of a secret.
        reason: String,
    },
    /// An encrypted credential file does not decrypt: the key is wrong or the file changed.
    #[error(
        "{path}: cannot decrypt with key {key_id}: the key is wrong or the file was changed or truncated (it is left as it is)"
    )]
    Decrypt {
        /// The credential file.
        path: PathBuf,
        /// The key id the file names.
        key_id: String,
    },
    /// An encrypted credential file names a key that is not configured.
    #[error(
        "{path}: encrypted with key {key_id}, which is neither auth.encryption.key nor one of auth.encryption.previous_keys (configured: {known}); add the old key to previous_keys"
    )]
    UnknownKey {
        /// The credential file.
        path: PathBuf,
        /// The key id the file names.
        key_id: String,
        /// The ids of the configured keys.
        known: String,
    },
    /// A plaintext credential file while `auth.encryption.require_encrypted` is on.
    #[error(
        "{path}: plaintext credential file refused: auth.encryption.require_encrypted is on (the default when encryption is enabled), and anyone who can write auth.dir can plant such a file; if you wrote it, `cliproxy-server vault migrate` encrypts it, otherwise delete it"
    )]
    PlaintextRefused {
        /// The credential file.
        path: PathBuf,
    },
    /// The current key has encrypted as many files as random 96-bit nonces safely allow.
    #[error(
        "encryption key {key_id} has been used for {writes} writes, the safe limit for random nonces; rotate it (new auth.encryption.key, old one in previous_keys, then `cliproxy-server vault rotate-key`)"
    )]
    KeyExhausted {
        /// The key id.
        key_id: String,
        /// Writes counted.
        writes: u64,
    },
    /// Another process holds the lock of `auth.dir`: a running gateway, or a vault command
    /// that writes. Refused at once rather than waited for: the holder may be a gateway that
    /// runs for months.
    #[error(
        "{dir}: auth.dir is in use by another process (a running gateway, `cliproxy-server serve`, or a vault command holds {dir}/.lock); nothing was changed. Stop the gateway first, or change credentials through the running gateway's management API (POST /v0/management/auths, DELETE /v0/management/auths/PROVIDER/ID)"
    )]
    Locked {
        /// The credential directory (`auth.dir`).
        dir: PathBuf,
    },
    /// The system random number generator failed.
    #[error("the system random number generator failed")]
    Random,
}

/// Result with the vault's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether this is a configuration problem (the process should exit with code 78).
    pub fn is_config(&self) -> bool {
        matches!(self, Self::Config { .. } | Self::ClientKey { .. })
    }

    pub(crate) fn io(path: impl Into<PathBuf>, op: &'static str, source: io::Error) -> Self {
        Self::Io { path: path.into(), op, source }
    }
}
