use std::fmt;
use std::io;
use std::path::PathBuf;

/// What went wrong in the vault. Every variant names the file, the key or the setting it is
/// about, in the library's own terms; none of them carries a secret (file contents are never
/// quoted, only line and column).
///
/// The texts speak of the store, its directory, its keys and its settings, never of how a
/// program that embeds the vault names them in its configuration: the variants carry the data
/// (which client key, which data key, which file), so that such a program can map them to its
/// own setting names and commands.
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
        "{path} is owned by uid {owner}, not by the uid this process runs as ({ours}); refusing to use it (fix: chown it to uid {ours} or remove it)"
    )]
    ForeignOwner {
        /// The file or directory.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// Our effective uid.
        ours: u32,
    },
    /// The credential directory (or a credential path) is not what it should be.
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
        "{path}: mode is still {got:04o} after setting it to {wanted:04o}: this filesystem ignores permissions (vfat, some network or FUSE mounts), so the credentials would be readable by others; put the credential directory on a filesystem that keeps modes"
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
    /// A client key of [`crate::ClientKeys::from_config`] is unusable. The key itself is never
    /// printed.
    #[error("client key {index}: {problem}")]
    ClientKey {
        /// Position in the list given, from 0.
        index: usize,
        /// What is wrong with it.
        problem: ClientKeyProblem,
    },
    /// A data (encryption) key is not in one of the accepted forms. Its value is never printed,
    /// only its length.
    #[error(
        "the {key} is not a 32-byte key (the value is {chars} characters); accepted forms: base64 of 32 bytes (what `openssl rand -base64 32` prints), 64 hex digits, or exactly 32 raw bytes"
    )]
    InvalidDataKey {
        /// Which key of the keyring.
        key: KeyRole,
        /// The length of the value given, in characters.
        chars: usize,
    },
    /// Encryption is asked for, but no current data key is given.
    #[error("encryption is enabled but no current data key is set")]
    NoCurrentKey,
    /// Plaintext files are to be refused while new files would be written in plaintext (no
    /// current data key): every credential written would then be refused when read.
    #[error(
        "encrypted files are required while encryption is off: new credentials would be written in plaintext and then refused; enable encryption or stop requiring encrypted files"
    )]
    RequireEncryptedWithoutEncryption,
    /// Re-encryption was asked of a store without a current data key.
    #[error(
        "encryption is not enabled (the store has no current data key), so nothing can be re-encrypted"
    )]
    EncryptionDisabled,
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
    /// An encrypted credential file names a data key that the store was not given.
    #[error(
        "{path}: encrypted with data key {key_id}, which is neither the current key nor a previous key (configured: {}); add the old key to the previous keys",
        key_list(.known)
    )]
    UnknownKey {
        /// The credential file.
        path: PathBuf,
        /// The key id the file names.
        key_id: String,
        /// The ids of the keys the store was given (empty: none).
        known: Vec<String>,
    },
    /// A plaintext credential file while the store requires encrypted files.
    #[error(
        "{path}: plaintext credential file refused: the store requires encrypted files, and anyone who can write the credential directory can plant such a file; if you wrote it, migrate it (`CredentialStore::migrate` encrypts it), otherwise delete it"
    )]
    PlaintextRefused {
        /// The credential file.
        path: PathBuf,
    },
    /// The current key has encrypted as many files as random 96-bit nonces safely allow.
    #[error(
        "data key {key_id} has been used for {writes} writes, the safe limit for random nonces; rotate it (a new current key, this one among the previous keys, then re-encrypt)"
    )]
    KeyExhausted {
        /// The key id.
        key_id: String,
        /// Writes counted.
        writes: u64,
    },
    /// Another process holds the lock of the credential directory: a store opened exclusively
    /// (a running service), or another store's write. Refused at once rather than waited
    /// for: the holder may be a service that runs for months.
    #[error(
        "{dir}: the credential directory is in use by another process (it holds {}); nothing was changed",
        .dir.join(crate::lock::LOCK_FILE).display()
    )]
    Locked {
        /// The credential directory.
        dir: PathBuf,
    },
    /// A call to the Redis server that keeps the credentials failed: unreachable, no answer
    /// within the timeout, or an answer refused. The cause is the client's text, which never
    /// holds the server's URL or password, nor a token (records are sealed before they leave).
    #[error("the credential store in Redis could not {op}: {cause}")]
    Redis {
        /// What was being done ("read the credentials", "store a credential", ...).
        op: &'static str,
        /// Why it failed.
        cause: String,
    },
    /// The store is to be kept in Redis, but it was opened without a Redis connection.
    #[error(
        "the credentials are kept in Redis, and this store was opened without a Redis connection; open it with the Redis settings"
    )]
    RedisNotGiven,
    /// A Redis store was asked for without a current data key: it would write plaintext
    /// tokens to a server other hosts reach.
    #[error(
        "the credentials are kept in Redis, which must never hold a plaintext token: enable encryption with a current data key"
    )]
    RedisNeedsEncryption,
    /// The system random number generator failed.
    #[error("the system random number generator failed")]
    Random,
    /// A client key record ([`crate::ClientKeyRecord`]) is not acceptable: settings asked
    /// for at creation or in a change, or a stored record that does not read back. The key
    /// itself is never printed.
    #[error("client key record: {problem}")]
    KeyRecord {
        /// What is wrong with it.
        problem: crate::KeyRecordProblem,
    },
}

/// Result with the vault's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether this is a problem with the values the store or the client keys were built
    /// from (a program may treat it as a configuration error), not with the files.
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            Self::ClientKey { .. }
                | Self::InvalidDataKey { .. }
                | Self::NoCurrentKey
                | Self::RequireEncryptedWithoutEncryption
                | Self::EncryptionDisabled
                | Self::RedisNotGiven
                | Self::RedisNeedsEncryption
        )
    }

    pub(crate) fn io(path: impl Into<PathBuf>, op: &'static str, source: io::Error) -> Self {
        Self::Io { path: path.into(), op, source }
    }
}

/// Which key of a keyring a [`Error::InvalidDataKey`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyRole {
    /// The current key: new files are encrypted with it.
    Current,
    /// A previous key, by its position among the previous keys (from 0).
    Previous(usize),
}

impl fmt::Display for KeyRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Current => f.write_str("current data key"),
            Self::Previous(index) => write!(f, "previous data key {index}"),
        }
    }
}

/// What is wrong with a client key ([`Error::ClientKey`]). The key itself is never held.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientKeyProblem {
    /// The key is empty (often: the environment variable meant to fill it is not set).
    Empty,
    /// The key is shorter than the shortest accepted.
    TooShort {
        /// Its length in bytes.
        len: usize,
        /// The shortest accepted, in bytes.
        min: usize,
    },
    /// The name given is empty or blank.
    EmptyName,
    /// A model pattern is empty or blank.
    EmptyModelPattern {
        /// The pattern as given (blank; never a secret).
        pattern: String,
    },
    /// The same key is listed earlier.
    DuplicateKey {
        /// The position of the earlier one.
        first: usize,
    },
    /// The same name is used earlier.
    DuplicateName {
        /// The name.
        name: String,
        /// The position of the earlier one.
        first: usize,
    },
    /// `budget.usd` is not an amount of dollars above zero and within the cap.
    BadBudget {
        /// What is wrong with it (never a secret: the amount's text, at most 20 characters).
        reason: String,
    },
}

impl fmt::Display for ClientKeyProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => {
                f.write_str("the key is empty (is the environment variable it names set?)")
            }
            Self::TooShort { len, min } => {
                write!(f, "the key is {len} bytes; client keys must be at least {min} bytes")
            }
            Self::EmptyName => f.write_str("`name` is empty"),
            Self::EmptyModelPattern { pattern } => {
                write!(f, "`models` contains an empty pattern `{pattern}`")
            }
            Self::DuplicateKey { first } => {
                write!(f, "the same key is already listed as client key {first}")
            }
            Self::DuplicateName { name, first } => {
                write!(f, "the name `{name}` is already used by client key {first}")
            }
            Self::BadBudget { reason } => write!(f, "`budget.usd` {reason}"),
        }
    }
}

/// The configured key ids of an [`Error::UnknownKey`], for its message.
fn key_list(ids: &[String]) -> String {
    if ids.is_empty() { "none".to_owned() } else { ids.join(", ") }
}
