//! The release directory and key files: signing every artefact, verifying a release, and
//! writing and reading keys with the right permissions.

use std::fs::{self, File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::checksums::{Checksums, Sha256, check_name};
use super::keys::{KeyId, MAX_PUBLIC_KEY_FILE, MAX_SECRET_KEY_FILE, PublicKey, SecretKey};
use super::signature::{MAX_SIGNATURE_FILE, Signature};
use super::{Error, Result};

/// The checksum file's name in a release directory.
pub const SUMS_FILE: &str = "SHA256SUMS";
/// The signature file's name in a release directory (minisign's default for `SHA256SUMS`).
pub const SIGNATURE_FILE: &str = "SHA256SUMS.minisig";
/// The secret key file [`write_keypair`] writes.
pub const SECRET_KEY_FILE: &str = "cliproxy-release.key";
/// The public key file [`write_keypair`] writes.
pub const PUBLIC_KEY_FILE: &str = "cliproxy-release.pub";
/// A `SHA256SUMS` this long would list thousands of artefacts.
const MAX_SUMS_FILE: u64 = 1024 * 1024;

/// What [`sign_dir`] wrote.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SignedRelease {
    /// The artefacts and their digests, as written to `SHA256SUMS`.
    pub checksums: Checksums,
    /// The signature written to `SHA256SUMS.minisig`.
    pub signature: Signature,
}

/// What [`verify_dir`] checked.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct VerifiedRelease {
    /// The key that signed the release.
    pub key_id: KeyId,
    /// The signed trusted comment (timestamp, file, version).
    pub trusted_comment: String,
    /// The artefacts whose digests match, in `SHA256SUMS` order.
    pub files: Vec<String>,
    /// Files in the directory that `SHA256SUMS` does not list: nothing vouches for them.
    pub unlisted: Vec<String>,
}

/// The paths [`write_keypair`] wrote.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct KeyPairFiles {
    /// The secret key file, mode 0600.
    pub secret: PathBuf,
    /// The public key file, in minisign's format.
    pub public: PathBuf,
    /// The public key.
    pub public_key: PublicKey,
}

/// Writes `SHA256SUMS` over every file in `dir` and `SHA256SUMS.minisig`, its signature by
/// `key` with `trusted_comment`. Every entry of `dir` but those two must be a regular file
/// with a plain name (see [`Checksums::new`]): anything else is refused rather than left
/// unsigned. Both files are replaced atomically.
pub fn sign_dir(dir: &Path, key: &SecretKey, trusted_comment: &str) -> Result<SignedRelease> {
    let names = artefact_names(dir)?;
    if names.is_empty() {
        return Err(Error::NoArtifacts { dir: dir.to_owned() });
    }
    let mut entries = Vec::with_capacity(names.len());
    for name in names {
        let digest = Sha256::of_file(&dir.join(&name))?;
        entries.push((name, digest));
    }
    let checksums = Checksums::new(entries)?;
    let text = checksums.to_text();
    let signature = key.sign(text.as_bytes(), trusted_comment)?;
    write_atomically(dir, SUMS_FILE, text.as_bytes())?;
    write_atomically(dir, SIGNATURE_FILE, signature.to_text().as_bytes())?;
    Ok(SignedRelease { checksums, signature })
}

/// Verifies the release in `dir`: the signature of `SHA256SUMS` by `public_key` first, then
/// the digest of every file it lists, in its order. The error names the first failure: the
/// signature, a missing file, or a file whose digest differs (with both digests).
pub fn verify_dir(dir: &Path, public_key: &PublicKey) -> Result<VerifiedRelease> {
    let sums = read_limited(&dir.join(SUMS_FILE), MAX_SUMS_FILE, "SHA256SUMS file")?;
    let signature_path = dir.join(SIGNATURE_FILE);
    let signature_bytes = read_limited(&signature_path, MAX_SIGNATURE_FILE, "signature file")?;
    let signature_text = std::str::from_utf8(&signature_bytes)
        .map_err(|_| Error::MalformedSignature("the file is not UTF-8".to_owned()))?;
    let signature = Signature::parse(signature_text)?;
    signature.verify(public_key, &sums)?;
    // Only what the key vouched for is parsed.
    let text = std::str::from_utf8(&sums).map_err(|_| Error::MalformedChecksums {
        line: 1,
        reason: "the file is not UTF-8".to_owned(),
    })?;
    let checksums = Checksums::parse(text)?;
    let mut files = Vec::with_capacity(checksums.len());
    for (name, expected) in checksums.iter() {
        let path = dir.join(name);
        match fs::symlink_metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::MissingArtifact { name: name.to_owned() });
            }
            Err(e) => return Err(Error::io(&path, e)),
            Ok(meta) if !meta.file_type().is_file() => {
                return Err(Error::UnsafeArtifact {
                    path,
                    reason: "not a regular file (a symbolic link or directory is not followed)"
                        .to_owned(),
                });
            }
            Ok(_) => {}
        }
        let actual = Sha256::of_file(&path)?;
        if actual != *expected {
            return Err(Error::ChecksumMismatch {
                name: name.to_owned(),
                expected: *expected,
                actual,
            });
        }
        files.push(name.to_owned());
    }
    let mut unlisted = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name != SUMS_FILE && name != SIGNATURE_FILE && !checksums.contains(&name) {
            unlisted.push(name);
        }
    }
    unlisted.sort();
    Ok(VerifiedRelease {
        key_id: signature.key_id(),
        trusted_comment: signature.trusted_comment().to_owned(),
        files,
        unlisted,
    })
}

/// Generates a key pair and writes it into `dir` (created 0700 if missing):
/// `cliproxy-release.key`, mode 0600, and `cliproxy-release.pub`, minisign's public key
/// format. Both are created exclusively: an existing file is never overwritten.
pub fn write_keypair(dir: &Path) -> Result<KeyPairFiles> {
    let secret = dir.join(SECRET_KEY_FILE);
    let public = dir.join(PUBLIC_KEY_FILE);
    for path in [&secret, &public] {
        if fs::symlink_metadata(path).is_ok() {
            return Err(Error::KeyExists { path: path.clone() });
        }
    }
    create_private_dir(dir)?;
    let key = SecretKey::generate()?;
    write_new(&secret, key.to_text().as_bytes(), Access::Private)?;
    if let Err(e) = write_new(&public, key.public_key().to_file_text().as_bytes(), Access::Public) {
        // Half a key pair is worse than none: the secret key would sign for a public key
        // nobody has.
        let _ = fs::remove_file(&secret);
        return Err(e);
    }
    Ok(KeyPairFiles { secret, public, public_key: key.public_key().clone() })
}

/// Reads a secret key file. It must be a regular file that only its owner can read (like
/// ssh, a key others could have copied is refused).
pub fn read_secret_key(path: &Path) -> Result<SecretKey> {
    let file = open_secret_key(path)?;
    let bytes = Zeroizing::new(read_all(file, path, MAX_SECRET_KEY_FILE, "secret key file")?);
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| Error::MalformedSecretKey("the file is not UTF-8".to_owned()))?;
    SecretKey::from_text(text)
}

/// Reads a public key file in minisign's format.
pub fn read_public_key(path: &Path) -> Result<PublicKey> {
    let bytes = read_limited(path, MAX_PUBLIC_KEY_FILE, "public key file")?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| Error::MalformedPublicKey("the file is not UTF-8".to_owned()))?;
    PublicKey::parse(text)
}

/// The names of the artefacts in `dir`, sorted: every entry but the checksum and signature
/// files, each checked to be a regular file with a plain name.
fn artefact_names(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            return Err(Error::UnsafeArtifact { path, reason: "the name is not UTF-8".to_owned() });
        };
        if name == SUMS_FILE || name == SIGNATURE_FILE {
            continue;
        }
        check_name(&name).map_err(|reason| Error::UnsafeArtifact {
            path: path.clone(),
            reason: reason.to_owned(),
        })?;
        let file_type = entry.file_type().map_err(|e| Error::io(&path, e))?;
        if !file_type.is_file() {
            return Err(Error::UnsafeArtifact {
                path,
                reason: "not a regular file: a release directory holds only artefacts".to_owned(),
            });
        }
        names.push(name);
    }
    names.sort();
    Ok(names)
}

/// Reads a whole file that no valid instance makes longer than `limit` bytes.
fn read_limited(path: &Path, limit: u64, what: &'static str) -> Result<Vec<u8>> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    read_all(file, path, limit, what)
}

/// Reads the open `file` (at `path`) whole, refused past `limit` bytes.
fn read_all(file: File, path: &Path, limit: u64, what: &'static str) -> Result<Vec<u8>> {
    // Sized in advance so that a secret key is never copied by a reallocation.
    let capacity = usize::try_from(limit).unwrap_or(usize::MAX).saturating_add(1);
    let mut bytes = Vec::with_capacity(capacity);
    file.take(limit + 1).read_to_end(&mut bytes).map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > limit {
        return Err(Error::TooLarge { path: path.to_owned(), what, limit });
    }
    Ok(bytes)
}

/// Replaces `dir/name` with `bytes` through a temporary file and a rename, so that a reader
/// never sees half a checksum or signature file.
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let path = dir.join(name);
    let temporary = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let written = (|| {
        let mut file = File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temporary, &path)
    })();
    written.map_err(|e| {
        let _ = fs::remove_file(&temporary);
        Error::io(&path, e)
    })
}

/// Who may read a file [`write_new`] creates.
#[derive(Clone, Copy)]
enum Access {
    /// Only its owner: 0600, through the private file policy.
    Private,
    /// Everyone: 0644 (a public key).
    Public,
}

/// Creates `path` (it must not exist) and writes `bytes` into it, removing it again when the
/// write fails.
fn write_new(path: &Path, bytes: &[u8], access: Access) -> Result<()> {
    let mut file = create_new(path, access).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            Error::KeyExists { path: path.to_owned() }
        } else {
            Error::io(path, e)
        }
    })?;
    file.write_all(bytes).and_then(|()| file.sync_all()).map_err(|e| {
        let _ = fs::remove_file(path);
        Error::io(path, e)
    })
}

#[cfg(unix)]
fn create_new(path: &Path, access: Access) -> std::io::Result<File> {
    use cliproxy_core::private_fs::{self, PrivateError};
    use std::os::unix::fs::OpenOptionsExt as _;
    match access {
        // `create_new` does not follow a link either; the policy adds nothing but its mode.
        Access::Private => private_fs::open(path, OpenOptions::new().write(true).create_new(true))
            .map_err(|e| match e {
                PrivateError::Io { source, .. } => source,
                other => std::io::Error::other(other.to_string()),
            }),
        Access::Public => OpenOptions::new().write(true).create_new(true).mode(0o644).open(path),
    }
}

#[cfg(not(unix))]
fn create_new(path: &Path, _: Access) -> std::io::Result<File> {
    OpenOptions::new().write(true).create_new(true).open(path)
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> Result<()> {
    cliproxy_core::private_fs::create_dir(dir).map_err(|e| Error::io(dir, e))
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))
}

/// Opens a secret key file without following a link: it must be a regular file that no one
/// but its owner can read. Its owner is not compared (a release key may be read by another
/// account of the same person, as ssh allows).
#[cfg(unix)]
fn open_secret_key(path: &Path) -> Result<File> {
    use cliproxy_core::private_fs::{self, Kind, PrivateError};
    let not_a_file =
        || Error::KeyFileUnsafe { path: path.to_owned(), reason: "not a regular file".to_owned() };
    let file =
        private_fs::open_nonblocking(path, OpenOptions::new().read(true)).map_err(|e| match e {
            PrivateError::Io { source, .. } => Error::io(path, source),
            _ => not_a_file(),
        })?;
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    // Unlike the vault, a loose key is refused, not tightened: it may have been copied.
    match private_fs::check(&meta, Kind::File, None) {
        Ok(Some(mode)) if mode & 0o077 != 0 => Err(Error::KeyFileUnsafe {
            path: path.to_owned(),
            reason: format!(
                "mode {:04o} lets group or others read the secret key; it must be 0600 (chmod 600)",
                mode & 0o777
            ),
        }),
        Ok(_) => Ok(file),
        Err(PrivateError::Io { source, .. }) => Err(Error::io(path, source)),
        Err(_) => Err(not_a_file()),
    }
}

#[cfg(not(unix))]
fn open_secret_key(path: &Path) -> Result<File> {
    let meta = fs::symlink_metadata(path).map_err(|e| Error::io(path, e))?;
    if !meta.file_type().is_file() {
        return Err(Error::KeyFileUnsafe {
            path: path.to_owned(),
            reason: "not a regular file".to_owned(),
        });
    }
    File::open(path).map_err(|e| Error::io(path, e))
}
