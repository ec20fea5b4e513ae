//! Key formats: minisign's public key, our secret key (PKCS#8 in base64), and the key id.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::rand::SystemRandom;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use zeroize::Zeroizing;

use super::{Error, Result};

/// minisign's algorithm bytes for a pure Ed25519 key or signature (its "legacy" signatures).
pub(super) const ALG_ED25519: [u8; 2] = *b"Ed";
/// minisign's algorithm bytes for an Ed25519 signature over a BLAKE2b-512 hash of the file.
pub(super) const ALG_PREHASHED: [u8; 2] = *b"ED";
/// Why `ED` cannot be verified here.
pub(super) const PREHASHED_HINT: &str =
    " (\"ED\" signs a BLAKE2b-512 hash of the file, and ring has no BLAKE2b)";

/// The untrusted comment of a public key file: minisign's own wording, so the file looks like
/// one `minisign -G` writes.
const PUBLIC_KEY_COMMENT: &str = "untrusted comment: minisign public key ";
/// The first line of a secret key file. It names the format, so that the file is not mistaken
/// for a minisign secret key (which is scrypt-encrypted and which minisign cannot read here).
const SECRET_KEY_HEADER: &str =
    "cliproxy release secret key v1 (Ed25519 PKCS#8, base64); keep it secret";
/// No valid public key file is longer: a comment line of minisign's maximum and the key line.
pub(super) const MAX_PUBLIC_KEY_FILE: u64 = 2048;
/// No valid secret key file is longer.
pub(super) const MAX_SECRET_KEY_FILE: u64 = 1024;
/// Decoded PKCS#8 documents longer than this are not Ed25519 keys (v2 from ring is 83 bytes).
const MAX_PKCS8: usize = 256;
/// `"Ed" || key id || public key`.
const PUBLIC_KEY_BYTES: usize = 2 + 8 + 32;

/// The eight bytes that name a key in minisign's public key and signature files, so that a
/// verifier can tell "signed by another key" from "changed". Shown as minisign shows it: the
/// bytes read as a little-endian integer, in upper-case hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId([u8; 8]);

impl KeyId {
    /// A key id from its eight bytes, in file order.
    pub fn from_bytes(bytes: [u8; 8]) -> Self {
        Self(bytes)
    }

    /// The eight bytes, in file order.
    pub fn as_bytes(&self) -> &[u8; 8] {
        &self.0
    }

    /// Our key id for a public key: the first eight bytes of its SHA-256. minisign picks key
    /// ids at random; deriving ours means the secret key file does not need to store it.
    fn derive(public_key: &[u8; 32]) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, public_key);
        let mut id = [0; 8];
        id.copy_from_slice(&digest.as_ref()[..8]);
        Self(id)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016X}", u64::from_le_bytes(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// A minisign Ed25519 public key: its key id and the 32 key bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    key_id: KeyId,
    key: [u8; 32],
}

impl PublicKey {
    /// The key id signatures made with this key carry.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// The raw Ed25519 public key.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.key
    }

    /// Reads a public key file as minisign writes it (an `untrusted comment:` line, then the
    /// key line), or the key line alone (what `minisign -P` takes).
    pub fn parse(text: &str) -> Result<Self> {
        let malformed = |reason: &str| Error::MalformedPublicKey(reason.to_owned());
        if text.len() as u64 > MAX_PUBLIC_KEY_FILE {
            return Err(malformed("longer than any minisign public key file"));
        }
        let lines = split_lines(text);
        match lines.as_slice() {
            [key] => Self::from_base64(key),
            [comment, key] => {
                if !comment.starts_with("untrusted comment: ") {
                    return Err(malformed(
                        "the first line does not start with \"untrusted comment: \"",
                    ));
                }
                Self::from_base64(key)
            }
            _ => Err(malformed("expected an \"untrusted comment:\" line and a key line")),
        }
    }

    /// Reads the key line: the base64 of `"Ed" || key id || public key`.
    pub fn from_base64(line: &str) -> Result<Self> {
        let bytes = BASE64.decode(line).map_err(|_| {
            Error::MalformedPublicKey("the key line is not valid base64".to_owned())
        })?;
        if bytes.len() != PUBLIC_KEY_BYTES {
            return Err(Error::MalformedPublicKey(format!(
                "the key line decodes to {} bytes; a minisign public key has {PUBLIC_KEY_BYTES}",
                bytes.len()
            )));
        }
        check_algorithm("public key", [bytes[0], bytes[1]])?;
        let mut key_id = [0; 8];
        key_id.copy_from_slice(&bytes[2..10]);
        let mut key = [0; 32];
        key.copy_from_slice(&bytes[10..]);
        Ok(Self { key_id: KeyId(key_id), key })
    }

    /// The key line: the base64 of `"Ed" || key id || public key`.
    pub fn to_base64(&self) -> String {
        let mut bytes = Vec::with_capacity(PUBLIC_KEY_BYTES);
        bytes.extend_from_slice(&ALG_ED25519);
        bytes.extend_from_slice(&self.key_id.0);
        bytes.extend_from_slice(&self.key);
        BASE64.encode(bytes)
    }

    /// The public key file, as `minisign -G` would write it.
    pub fn to_file_text(&self) -> String {
        format!("{PUBLIC_KEY_COMMENT}{}\n{}\n", self.key_id, self.to_base64())
    }

    /// Whether `signature` is this key's Ed25519 signature of `message`.
    pub(super) fn verifies(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        UnparsedPublicKey::new(&ED25519, &self.key).verify(message, signature).is_ok()
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("key_id", &self.key_id)
            .field("key", &self.to_base64())
            .finish()
    }
}

/// An Ed25519 signing key. The PKCS#8 document is kept in a buffer zeroized on drop, and
/// `Debug` does not show it; there is no `Display` and no `Serialize`. (ring's own key pair
/// does not zeroize its copy of the private scalar on drop; nothing here can change that.)
pub struct SecretKey {
    pkcs8: Zeroizing<Vec<u8>>,
    pair: Ed25519KeyPair,
    public: PublicKey,
}

impl SecretKey {
    /// A fresh key from the system's random number generator.
    pub fn generate() -> Result<Self> {
        let document =
            Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| Error::Random)?;
        // ring's `Document` is not zeroized when it goes out of scope; the copy kept is.
        Self::from_pkcs8(Zeroizing::new(document.as_ref().to_vec()))
    }

    /// Reads a secret key: the text of a key file (our header line, then the base64 line), or
    /// the base64 line alone, which is handier in a CI secret. Errors never quote the input.
    pub fn from_text(text: &str) -> Result<Self> {
        let malformed = |reason: &str| Error::MalformedSecretKey(reason.to_owned());
        if text.len() as u64 > MAX_SECRET_KEY_FILE {
            return Err(malformed("longer than any secret key file"));
        }
        let lines = split_lines(text);
        let line = match lines.as_slice() {
            [line] => line.trim(),
            [header, line] if *header == SECRET_KEY_HEADER => line.trim(),
            [_, _] => {
                return Err(malformed(
                    "the first line is not the cliproxy release secret key header (a minisign secret key cannot be used: sign with a key from `cargo xtask release keygen`)",
                ));
            }
            _ => return Err(malformed("expected a header line and one base64 line")),
        };
        // Decode into a zeroized buffer sized in advance, so that no copy is left behind by a
        // reallocation.
        let mut pkcs8 = Zeroizing::new(vec![0; MAX_PKCS8]);
        let len = BASE64
            .decode_slice(line, &mut pkcs8[..])
            .map_err(|_| malformed("the key line is not valid base64 of an Ed25519 PKCS#8 key"))?;
        pkcs8.truncate(len);
        Self::from_pkcs8(pkcs8)
    }

    /// Reads a secret key from the environment variable `var` (what CI passes from a
    /// secret), as [`SecretKey::from_text`] reads it. The value is copied into a zeroized
    /// buffer at once; the process environment itself cannot be cleared without `unsafe`.
    pub fn from_env(var: &str) -> Result<Self> {
        let value = match std::env::var(var) {
            Ok(value) => Zeroizing::new(value),
            Err(std::env::VarError::NotPresent) => return Err(key_env(var, "is not set")),
            Err(std::env::VarError::NotUnicode(_)) => return Err(key_env(var, "is not UTF-8")),
        };
        if value.trim().is_empty() {
            return Err(key_env(var, "is empty"));
        }
        Self::from_text(&value)
    }

    fn from_pkcs8(pkcs8: Zeroizing<Vec<u8>>) -> Result<Self> {
        // `maybe_unchecked` also takes PKCS#8 v1 (no public key inside), which is what
        // `openssl genpkey -algorithm ed25519` writes; v2 documents are still checked.
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&pkcs8).map_err(|rejected| {
            Error::MalformedSecretKey(format!("not an Ed25519 PKCS#8 key ({rejected})"))
        })?;
        let mut key = [0; 32];
        key.copy_from_slice(pair.public_key().as_ref());
        let public = PublicKey { key_id: KeyId::derive(&key), key };
        Ok(Self { pkcs8, pair, public })
    }

    /// The text of a secret key file: the header line and the base64 line.
    pub fn to_text(&self) -> Zeroizing<String> {
        let mut text = Zeroizing::new(String::with_capacity(
            SECRET_KEY_HEADER.len() + 2 + 4 * MAX_PKCS8 / 3 + 4,
        ));
        text.push_str(SECRET_KEY_HEADER);
        text.push('\n');
        BASE64.encode_string(&self.pkcs8[..], &mut text);
        text.push('\n');
        text
    }

    /// The public half, with its key id.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// The raw Ed25519 signature of `bytes`. `SecretKey::sign`, which writes minisign's
    /// format with it, is in `signature.rs`, beside that format: the key does not know the
    /// signature file, so the two modules do not import each other.
    pub(super) fn sign_raw(&self, bytes: &[u8]) -> [u8; 64] {
        let mut out = [0; 64];
        out.copy_from_slice(self.pair.sign(bytes).as_ref());
        out
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretKey")
            .field("key_id", &self.public.key_id)
            .field("pkcs8", &"[redacted]")
            .finish()
    }
}

fn key_env(var: &str, reason: &'static str) -> Error {
    Error::KeyEnv { var: var.to_owned(), reason }
}

/// Refuses every algorithm but `Ed`, naming `ED` when that is what was found.
pub(super) fn check_algorithm(what: &'static str, found: [u8; 2]) -> Result<()> {
    if found == ALG_ED25519 {
        return Ok(());
    }
    Err(Error::UnsupportedAlgorithm {
        what,
        found: String::from_utf8_lossy(&found).into_owned(),
        hint: if found == ALG_PREHASHED { PREHASHED_HINT } else { "" },
    })
}

/// The lines of a small text file: split on `\n`, one final newline allowed, and a `\r` before
/// each `\n` dropped as minisign does.
pub(super) fn split_lines(text: &str) -> Vec<&str> {
    let text = text.strip_suffix('\n').unwrap_or(text);
    text.split('\n').map(|line| line.strip_suffix('\r').unwrap_or(line)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn public_bytes(alg: &[u8], key_id: [u8; 8], key: [u8; 32]) -> String {
        let mut bytes = alg.to_vec();
        bytes.extend_from_slice(&key_id);
        bytes.extend_from_slice(&key);
        BASE64.encode(bytes)
    }

    #[test]
    fn key_id_is_shown_like_minisign() {
        // minisign prints the eight bytes read as a little-endian integer.
        let id = KeyId::from_bytes([0xDE, 0xB4, 0x6D, 0xE0, 0x47, 0x5C, 0xF2, 0x6C]);
        assert_eq!(id.to_string(), "6CF25C47E06DB4DE");
        assert_eq!(format!("{id:?}"), "KeyId(6CF25C47E06DB4DE)");
    }

    #[test]
    fn public_key_file_is_minisigns_format() {
        // The key line of a `minisign -G` key file whose key id prints as 6CF25C47E06DB4DE.
        let id = [0xDE, 0xB4, 0x6D, 0xE0, 0x47, 0x5C, 0xF2, 0x6C];
        let line = public_bytes(b"Ed", id, [9; 32]);
        assert!(line.starts_with("RWTetG3gR1zybA"), "{line}");
        let text = format!("untrusted comment: minisign public key 6CF25C47E06DB4DE\n{line}\n");
        let key = PublicKey::parse(&text).unwrap();
        assert_eq!(key.key_id().to_string(), "6CF25C47E06DB4DE");
        assert_eq!(key.as_bytes(), &[9; 32]);
        assert_eq!(key.to_file_text(), text);
        assert_eq!(PublicKey::parse(&line).unwrap(), key);
        assert_eq!(PublicKey::parse(&text.replace('\n', "\r\n")).unwrap(), key);
    }

    #[test]
    fn hostile_public_keys_are_refused_with_a_reason() {
        let good = public_bytes(b"Ed", [1; 8], [2; 32]);
        assert!(PublicKey::from_base64(&good).is_ok());
        let cases: Vec<(String, &str)> = vec![
            ("not base64 at all!".to_owned(), "not valid base64"),
            (format!("{good}="), "not valid base64"),
            (good[..good.len() - 4].to_owned(), "decodes to 39 bytes"),
            (BASE64.encode([0u8; 43]), "decodes to 43 bytes"),
            (String::new(), "decodes to 0 bytes"),
            (public_bytes(b"ED", [1; 8], [2; 32]), "BLAKE2b"),
            (public_bytes(b"Xx", [1; 8], [2; 32]), "algorithm \"Xx\""),
            (format!(" {good}"), "not valid base64"),
        ];
        for (line, expected) in cases {
            let err = PublicKey::from_base64(&line).unwrap_err().to_string();
            assert!(err.contains(expected), "{line:?}: {err}");
        }
        let files: Vec<(String, &str)> = vec![
            (format!("comment\n{good}\n"), "does not start with"),
            (format!("untrusted comment: a\n{good}\nextra\n"), "expected an"),
            (String::new(), "decodes to 0 bytes"),
            ("x".repeat(4096), "longer than"),
        ];
        for (text, expected) in files {
            let err = PublicKey::parse(&text).unwrap_err().to_string();
            assert!(err.contains(expected), "{text:?}: {err}");
        }
    }

    #[test]
    fn secret_key_round_trips_and_never_shows_itself() {
        let key = SecretKey::generate().unwrap();
        let text = key.to_text();
        let again = SecretKey::from_text(&text).unwrap();
        assert_eq!(again.public_key(), key.public_key());
        // The base64 line alone is accepted too (a CI secret).
        let line = text.lines().nth(1).unwrap();
        assert_eq!(SecretKey::from_text(line).unwrap().public_key(), key.public_key());
        assert_eq!(
            SecretKey::from_text(&format!("{line}\n")).unwrap().public_key(),
            key.public_key()
        );
        let debug = format!("{key:?}");
        assert!(debug.contains("[redacted]") && !debug.contains(line), "{debug}");
        // The key id is derived from the public key.
        assert_eq!(key.public_key().key_id(), KeyId::derive(key.public_key().as_bytes()));
    }

    #[test]
    fn hostile_secret_keys_are_refused_without_quoting_them() {
        let key = SecretKey::generate().unwrap();
        let text = key.to_text();
        let line = text.lines().nth(1).unwrap().to_owned();
        let mut flipped = BASE64.decode(&line).unwrap();
        // Byte 20 lies inside the private key octets of ring's v2 document: the embedded
        // public key no longer matches, which ring checks.
        flipped[20] ^= 1;
        let cases: Vec<(String, &str)> = vec![
            (format!("wrong header\n{line}\n"), "header"),
            (format!("{SECRET_KEY_HEADER}\n{line}\n{line}\n"), "expected a header"),
            (format!("{SECRET_KEY_HEADER}\n{line}!\n"), "not valid base64"),
            (
                format!("{SECRET_KEY_HEADER}\n{}\n", BASE64.encode([7u8; 83])),
                "not an Ed25519 PKCS#8 key",
            ),
            (
                format!("{SECRET_KEY_HEADER}\n{}\n", BASE64.encode(&flipped)),
                "not an Ed25519 PKCS#8 key",
            ),
            (format!("{SECRET_KEY_HEADER}\n{}\n", BASE64.encode([0u8; 300])), "not valid base64"),
            (
                "untrusted comment: minisign encrypted secret key\nRWRTY0Iy\n".to_owned(),
                "minisign secret key cannot be used",
            ),
            (String::new(), "not an Ed25519"),
            ("A".repeat(2000), "longer than"),
        ];
        for (input, expected) in cases {
            let err = SecretKey::from_text(&input).unwrap_err().to_string();
            assert!(err.contains(expected), "{expected}: {err}");
            assert!(!err.contains(&line[..16]), "the error quotes the key: {err}");
        }
    }

    #[test]
    fn reads_a_pkcs8_v1_key_as_openssl_writes_it() {
        // `openssl genpkey -algorithm ed25519` writes PKCS#8 v1: the seed without the public
        // key (RFC 8410 section 7). Build one from a fresh v2 document's seed (offset 16).
        let key = SecretKey::generate().unwrap();
        let mut v1 = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        v1.extend_from_slice(&key.pkcs8[16..48]);
        let again = SecretKey::from_text(&BASE64.encode(&v1)).unwrap();
        assert_eq!(again.public_key(), key.public_key());
    }
}
