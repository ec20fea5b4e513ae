//! The audit log's checkpoint signing key: an Ed25519 key (PKCS#8, made by ring) kept in
//! the credential directory as the bookkeeping file `.audit-signing-key.json`, encrypted like
//! credentials.
//!
//! A vault record (a credential) would have to pass for a provider credential in every listing
//! and API, so the key is a hidden bookkeeping file instead (the credential listing skips
//! hidden files, as it does `.key-usage.json`). It is sealed with `auth.encryption.key`
//! (AES-256-GCM, the file name as associated data), or plaintext 0600 when encryption is off;
//! with `auth.encryption.require_encrypted` a plaintext key file is refused. A file sealed
//! with one of `previous_keys` is re-sealed with the current key when it is read, so a key
//! rotation carries it along at the next start. One seal per installation: it is not counted
//! towards the key's nonce budget.

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use cliproxy_core::private_fs::{self, PrivateError};
use nix::libc;
use ring::aead::NONCE_LEN;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::Ed25519KeyPair;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::crypto::{Keyring, from_base64, to_base64};
use crate::{Config, Error, Result};

/// The file name in the credential directory.
pub const AUDIT_SIGNING_KEY_FILE: &str = ".audit-signing-key.json";
const FORMAT: &str = "cliproxy-audit-signing-key";
/// The associated data of the seal: a sealed key moved to another name does not open.
const AAD: &str = AUDIT_SIGNING_KEY_FILE;
/// Far larger than a PKCS#8 Ed25519 key in JSON; a bigger file is not ours.
const MAX_FILE: u64 = 4096;

/// The signing key as loaded: PKCS#8 bytes (zeroized on drop), and whether it was created now.
pub struct AuditSigningKey {
    /// The PKCS#8 document `Ed25519KeyPair::from_pkcs8` takes.
    pub pkcs8: Zeroizing<Vec<u8>>,
    /// The key did not exist and was made by this call.
    pub created: bool,
    /// The file it is kept in.
    pub path: PathBuf,
}

impl std::fmt::Debug for AuditSigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditSigningKey")
            .field("pkcs8", &"[redacted]")
            .field("created", &self.created)
            .field("path", &self.path)
            .finish()
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    format: String,
    version: u32,
    /// The id of the key it is sealed with; `None`: plaintext.
    key_id: Option<String>,
    nonce: Option<String>,
    /// Base64 of the PKCS#8 document, or of its ciphertext and tag.
    data: String,
}

impl Config {
    /// Loads the audit checkpoint signing key from `auth.dir`, creating it (and the directory,
    /// 0700) when missing. With `create` false a missing key is an error (`audit pubkey` on a
    /// gateway that never started).
    pub fn audit_signing_key(&self, create: bool) -> Result<AuditSigningKey> {
        let keys = self.encryption.keyring()?;
        let require_encrypted = self.encryption.require_encrypted()?;
        let path = self.dir.join(AUDIT_SIGNING_KEY_FILE);
        match read_limited(&path) {
            Ok(bytes) => {
                let (pkcs8, reseal) = open(&path, &bytes, &keys, require_encrypted)?;
                if reseal {
                    write(&self.dir, &path, &pkcs8, &keys)?;
                }
                Ok(AuditSigningKey { pkcs8, created: false, path })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
                    .map_err(|_| Error::Random)?;
                let pkcs8 = Zeroizing::new(pkcs8.as_ref().to_vec());
                if !self.dir.exists() {
                    private_fs::create_dir(&self.dir)
                        .map_err(|e| Error::io(&self.dir, "create", e))?;
                }
                write(&self.dir, &path, &pkcs8, &keys)?;
                Ok(AuditSigningKey { pkcs8, created: true, path })
            }
            Err(e) => Err(Error::io(&path, "read", e)),
        }
    }
}

impl Config {
    /// Re-seals the signing key under the current `auth.encryption.key` when it is sealed with
    /// a previous key or is plaintext (what `vault rotate-key` and `vault migrate` do for it,
    /// as for credentials; plaintext is taken in here even under `require_encrypted`, this
    /// being the explicit way in). `Ok(false)`: no key file, or already under the current key.
    pub fn reseal_audit_signing_key(&self) -> Result<bool> {
        let keys = self.encryption.keyring()?;
        let path = self.dir.join(AUDIT_SIGNING_KEY_FILE);
        let bytes = match read_limited(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(Error::io(&path, "read", e)),
        };
        let (pkcs8, reseal) = open(&path, &bytes, &keys, false)?;
        if reseal {
            write(&self.dir, &path, &pkcs8, &keys)?;
        }
        Ok(reseal)
    }
}

fn read_limited(path: &Path) -> io::Result<Vec<u8>> {
    let file = private_fs::open(path, OpenOptions::new().read(true)).map_err(into_io)?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "larger than a signing key file"));
    }
    Ok(bytes)
}

/// The key file's I/O errors are told as the system tells them (`cannot read: Too many levels
/// of symbolic links`), as they were before the policy moved to `cliproxy_core`.
fn into_io(error: PrivateError) -> io::Error {
    match error {
        PrivateError::Io { source, .. } => source,
        PrivateError::Symlink => io::Error::from_raw_os_error(libc::ELOOP),
        other => io::Error::other(other.to_string()),
    }
}

/// The key's PKCS#8 bytes, and whether it should be re-sealed with the current key.
fn open(
    path: &Path,
    bytes: &[u8],
    keys: &Keyring,
    require_encrypted: bool,
) -> Result<(Zeroizing<Vec<u8>>, bool)> {
    let unusable = |reason| Error::Unusable { path: path.to_owned(), reason };
    let file: KeyFile = serde_json::from_slice(bytes)
        .map_err(|_| unusable("not an audit signing key file (move it away to make a new key)"))?;
    if file.format != FORMAT || file.version != 1 {
        return Err(unusable("not an audit signing key file of a version this cliproxy reads"));
    }
    let data = Zeroizing::new(from_base64(&file.data).ok_or_else(|| unusable("bad base64"))?);
    let (pkcs8, reseal) = match (&file.key_id, &file.nonce) {
        (Some(key_id), Some(nonce)) => {
            let key = keys.find(key_id).ok_or_else(|| Error::UnknownKey {
                path: path.to_owned(),
                key_id: key_id.clone(),
                known: keys.ids().into_iter().map(str::to_owned).collect(),
            })?;
            let nonce: [u8; NONCE_LEN] = from_base64(nonce)
                .and_then(|n| n.try_into().ok())
                .ok_or_else(|| unusable("bad nonce"))?;
            let plain = key
                .open(AAD, nonce, &data)
                .ok_or_else(|| Error::Decrypt { path: path.to_owned(), key_id: key_id.clone() })?;
            let reseal = keys.current().is_some_and(|current| current.id() != key_id);
            (plain, reseal)
        }
        (None, None) if require_encrypted => {
            return Err(Error::PlaintextRefused { path: path.to_owned() });
        }
        (None, None) => (data, keys.current().is_some()),
        _ => return Err(unusable("a key id without a nonce, or a nonce without a key id")),
    };
    Ed25519KeyPair::from_pkcs8(&pkcs8)
        .map_err(|_| unusable("does not hold an Ed25519 key (move it away to make a new key)"))?;
    Ok((pkcs8, reseal))
}

/// Writes the key file atomically (temporary file 0600, fsync, rename, fsync of the
/// directory), sealed with the current key when there is one.
fn write(dir: &Path, path: &Path, pkcs8: &[u8], keys: &Keyring) -> Result<()> {
    let file = match keys.current() {
        Some(key) => {
            let (nonce, sealed) = key.seal(AAD, pkcs8)?;
            KeyFile {
                format: FORMAT.to_owned(),
                version: 1,
                key_id: Some(key.id().to_owned()),
                nonce: Some(to_base64(&nonce)),
                data: to_base64(&sealed),
            }
        }
        None => KeyFile {
            format: FORMAT.to_owned(),
            version: 1,
            key_id: None,
            nonce: None,
            data: to_base64(pkcs8),
        },
    };
    let text = Zeroizing::new(
        serde_json::to_vec(&file).map_err(|e| Error::io(path, "encode", io::Error::other(e)))?,
    );
    let mut random = [0u8; 6];
    SystemRandom::new().fill(&mut random).map_err(|_| Error::Random)?;
    let suffix: String = random.iter().map(|b| format!("{b:02x}")).collect();
    let temp = dir.join(format!(".audit-signing-key.json.tmp-{suffix}"));
    let written = (|| -> io::Result<()> {
        let mut out = private_fs::open(&temp, OpenOptions::new().write(true).create_new(true))
            .map_err(into_io)?;
        out.write_all(&text)?;
        out.sync_all()?;
        fs::rename(&temp, path)?;
        fs::File::open(dir)?.sync_all()
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&temp);
        return Err(Error::io(path, "write", e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use cliproxy_core::Secret;

    use super::*;

    const KEY: &str = "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=";
    const OTHER: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    fn config(dir: &Path, key: Option<&str>, previous: &[&str]) -> Config {
        let mut config = Config { dir: dir.join("auths"), ..Config::default() };
        config.encryption.enabled = key.is_some();
        config.encryption.key = key.map(|k| Secret::from(k.to_owned()));
        config.encryption.previous_keys =
            previous.iter().map(|k| Secret::from((*k).to_owned())).collect();
        config
    }

    #[test]
    fn the_key_is_made_once_sealed_and_carried_across_a_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let first = config(dir.path(), Some(KEY), &[]);
        assert!(first.audit_signing_key(false).is_err(), "not created without `create`");
        let made = first.audit_signing_key(true).unwrap();
        assert!(made.created);
        let text = fs::read_to_string(&made.path).unwrap();
        assert!(text.contains("\"key_id\":\""), "sealed: {text}");
        let again = first.audit_signing_key(true).unwrap();
        assert!(!again.created);
        assert_eq!(*again.pkcs8, *made.pkcs8);
        assert!(!format!("{again:?}").contains(&format!("{:?}", &again.pkcs8[..8])));

        // Rotation: the old key in previous_keys opens it, and it is re-sealed.
        let rotated = config(dir.path(), Some(OTHER), &[KEY]);
        assert_eq!(*rotated.audit_signing_key(true).unwrap().pkcs8, *made.pkcs8);
        let only_new = config(dir.path(), Some(OTHER), &[]);
        assert_eq!(*only_new.audit_signing_key(true).unwrap().pkcs8, *made.pkcs8);

        // Without the key it is refused, naming the file, not replaced.
        let err = config(dir.path(), Some(KEY), &[]).audit_signing_key(true).unwrap_err();
        assert!(err.to_string().contains(AUDIT_SIGNING_KEY_FILE), "{err}");
    }

    #[test]
    fn a_plaintext_key_file_is_refused_while_encryption_is_required() {
        let dir = tempfile::tempdir().unwrap();
        let plain = config(dir.path(), None, &[]);
        let made = plain.audit_signing_key(true).unwrap();
        assert!(fs::read_to_string(&made.path).unwrap().contains("\"key_id\":null"));
        let err = config(dir.path(), Some(KEY), &[]).audit_signing_key(true).unwrap_err();
        assert!(matches!(err, Error::PlaintextRefused { .. }), "{err}");
        // `vault migrate` takes it in: sealed afterwards, and loaded under require_encrypted.
        let encrypted = config(dir.path(), Some(KEY), &[]);
        assert!(encrypted.reseal_audit_signing_key().unwrap());
        assert!(!encrypted.reseal_audit_signing_key().unwrap(), "already sealed");
        assert_eq!(*encrypted.audit_signing_key(false).unwrap().pkcs8, *made.pkcs8);
        fs::write(&made.path, "{\"format\":1}").unwrap();
        assert!(plain.audit_signing_key(true).is_err());
    }
}
