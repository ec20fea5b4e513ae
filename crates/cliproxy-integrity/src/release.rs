//! Signed releases: a `SHA256SUMS` file over the release artefacts and an Ed25519 signature
//! over it, made with ring and written in [minisign]'s format, so that anyone can check a
//! release with the stock `minisign -Vm SHA256SUMS -p cliproxy-release.pub` and then
//! `sha256sum -c SHA256SUMS`, or with [`verify_dir`] (`cargo xtask release verify`).
//!
//! ```no_run
//! use std::path::Path;
//! use cliproxy_integrity::release::{self, SecretKey};
//!
//! # fn main() -> release::Result<()> {
//! let key = SecretKey::generate()?;
//! let dir = Path::new("target/release-artifacts");
//! release::sign_dir(dir, &key, "timestamp:1700000000\tfile:SHA256SUMS")?;
//! let verified = release::verify_dir(dir, key.public_key())?;
//! println!("{} files match, signed by {}", verified.files.len(), verified.key_id);
//! # Ok(())
//! # }
//! ```
//!
//! # Formats
//!
//! - `SHA256SUMS` is byte for byte what `sha256sum` writes in text mode: one
//!   `<64 lowercase hex>  <name>\n` line per artefact, sorted by name. Names are restricted to
//!   `[A-Za-z0-9._+-]` (no leading dot or dash), so no line ever needs `sha256sum`'s escaping.
//! - `SHA256SUMS.minisig` is a minisign signature in the *legacy* `Ed` form: a pure Ed25519
//!   signature over the whole file. minisign's default `ED` form signs a BLAKE2b-512 hash of
//!   the file instead, and ring has no BLAKE2b. minisign (0.11 in Debian 12, 0.12 upstream)
//!   verifies `Ed` signatures unless it is given `-H`; the file is small, well under the 1 GiB
//!   minisign allows for this form.
//! - The public key file is minisign's: `untrusted comment: ...` then the base64 of
//!   `"Ed" || key id (8 bytes) || Ed25519 public key (32 bytes)`. The key id is the first eight
//!   bytes of the SHA-256 of the public key, so it never needs storing.
//! - The secret key file is ours, not minisign's (minisign's is scrypt-encrypted and needs
//!   BLAKE2b): a header line and the base64 of an Ed25519 PKCS#8 document (v2 from
//!   [`SecretKey::generate`]; v1 from `openssl genpkey -algorithm ed25519` is read too). It is
//!   written 0600 and refused when group or others can read it. minisign is only ever used to
//!   verify.
//!
//! [minisign]: https://jedisct1.github.io/minisign/

mod checksums;
mod dir;
mod keys;
mod signature;

use std::path::PathBuf;

pub use checksums::{Checksums, Sha256};
pub use dir::{
    KeyPairFiles, PUBLIC_KEY_FILE, SECRET_KEY_FILE, SIGNATURE_FILE, SUMS_FILE, SignedRelease,
    VerifiedRelease, read_public_key, read_secret_key, sign_dir, verify_dir, write_keypair,
};
pub use keys::{KeyId, PublicKey, SecretKey};
pub use signature::Signature;

/// What went wrong while signing or verifying a release. Messages name files, lines and
/// reasons; they never quote a secret key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file or directory could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file is larger than any valid file of its kind.
    #[error("{}: larger than {limit} bytes, which no valid {what} is", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// What the file should have been.
        what: &'static str,
        /// The size limit, in bytes.
        limit: u64,
    },
    /// A public key is not a minisign Ed25519 public key.
    #[error("malformed public key: {0}")]
    MalformedPublicKey(String),
    /// A signature file is not a minisign signature.
    #[error("malformed signature file: {0}")]
    MalformedSignature(String),
    /// A secret key is not in our format. The reason never quotes the key.
    #[error("malformed secret key: {0}")]
    MalformedSecretKey(String),
    /// The environment variable that should hold the secret key does not.
    #[error("the environment variable {var} {reason}")]
    KeyEnv {
        /// The variable.
        var: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A key or signature uses an algorithm other than legacy Ed25519 (`Ed`).
    #[error(
        "{what} uses algorithm {found:?}; only minisign's legacy Ed25519 (\"Ed\") is supported{hint}"
    )]
    UnsupportedAlgorithm {
        /// "signature" or "public key".
        what: &'static str,
        /// The two algorithm bytes, lossily decoded.
        found: String,
        /// Why, when the algorithm is a known one.
        hint: &'static str,
    },
    /// The signature was made by another key than the public key given.
    #[error("the signature was made by key {signature}, but the public key is {public_key}")]
    KeyIdMismatch {
        /// The key id in the signature.
        signature: KeyId,
        /// The key id in the public key.
        public_key: KeyId,
    },
    /// The Ed25519 signature over the signed file does not verify.
    #[error(
        "signature does not verify: {SUMS_FILE} was changed after signing, or was signed by another key with the same id"
    )]
    BadSignature,
    /// The signature over the trusted comment does not verify.
    #[error(
        "the trusted comment's signature does not verify: the comment was changed after signing"
    )]
    BadTrustedComment,
    /// A trusted comment that cannot be signed (control characters, too long).
    #[error("invalid trusted comment: {0}")]
    InvalidComment(&'static str),
    /// A `SHA256SUMS` line is not in `sha256sum` format, or names an unsafe file.
    #[error("{SUMS_FILE} line {line}: {reason}")]
    MalformedChecksums {
        /// The line number, from 1.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// An artefact's SHA-256 differs from the one in `SHA256SUMS`.
    #[error("{name}: SHA-256 mismatch: {SUMS_FILE} has {expected}, the file has {actual}")]
    ChecksumMismatch {
        /// The artefact.
        name: String,
        /// The digest `SHA256SUMS` lists.
        expected: Sha256,
        /// The digest of the file.
        actual: Sha256,
    },
    /// A file listed in `SHA256SUMS` is not in the release directory.
    #[error("{name}: file listed in {SUMS_FILE} is missing")]
    MissingArtifact {
        /// The artefact.
        name: String,
    },
    /// An entry of the release directory that cannot be signed or checked.
    #[error("{}: {reason}", path.display())]
    UnsafeArtifact {
        /// The entry.
        path: PathBuf,
        /// Why it is refused.
        reason: String,
    },
    /// There is nothing to sign.
    #[error("{}: no artefacts to sign", dir.display())]
    NoArtifacts {
        /// The release directory.
        dir: PathBuf,
    },
    /// A key file would be overwritten.
    #[error("{}: already exists; refusing to overwrite a key", path.display())]
    KeyExists {
        /// The existing file.
        path: PathBuf,
    },
    /// A secret key file that group or others can read, or that is not a regular file.
    #[error("{}: {reason}", path.display())]
    KeyFileUnsafe {
        /// The key file.
        path: PathBuf,
        /// Why it is refused.
        reason: String,
    },
    /// The system's random number generator failed.
    #[error("the system random number generator failed")]
    Random,
}

/// The result type of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }
}
