//! Encryption at rest: AES-256-GCM (ring), a fresh random 96-bit nonce per write, the
//! credential id as associated data, and a key id in every file so that old keys can still
//! decrypt after a rotation.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use cliproxy_core::Secret;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::digest::{SHA256, digest};
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use crate::{Error, KeyRole, Result};

/// Length of an encryption key in bytes.
pub(crate) const KEY_LEN: usize = 32;

/// One AES-256-GCM key and its id (16 hex digits of a SHA-256 over the key: it names the key
/// in files and messages without revealing it).
pub(crate) struct DataKey {
    id: String,
    key: LessSafeKey,
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataKey").field("id", &self.id).finish_non_exhaustive()
    }
}

impl DataKey {
    /// Parses a key given as base64 (`openssl rand -base64 32`), 64 hex digits, or 32 raw
    /// bytes. `role` says which key of the keyring it is, for the error.
    pub(crate) fn parse(role: KeyRole, text: &Secret) -> Result<Self> {
        let bytes = decode_key(text.expose()).ok_or_else(|| Error::InvalidDataKey {
            key: role,
            chars: text.expose().chars().count(),
        })?;
        Ok(Self::from_bytes(&bytes))
    }

    fn from_bytes(bytes: &[u8; KEY_LEN]) -> Self {
        let hash = digest(&SHA256, &[b"cliproxy-key-id\0".as_slice(), bytes].concat());
        let id = hash.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect();
        // 32 bytes is always a valid AES-256 key.
        let key = match UnboundKey::new(&AES_256_GCM, bytes) {
            Ok(key) => LessSafeKey::new(key),
            Err(_) => unreachable_key(),
        };
        Self { id, key }
    }

    /// The key id written into files.
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// Encrypts `plaintext` for the credential `id`: returns the nonce and ciphertext+tag.
    pub(crate) fn seal(&self, id: &str, plaintext: &[u8]) -> Result<([u8; NONCE_LEN], Vec<u8>)> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).map_err(|_| Error::Random)?;
        // Sized for the tag up front: growing it would leave a copy of the plaintext in the
        // freed block. Zeroized should sealing fail with the plaintext still in it.
        let mut buffer =
            Zeroizing::new(Vec::with_capacity(plaintext.len() + AES_256_GCM.tag_len()));
        buffer.extend_from_slice(plaintext);
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(id.as_bytes()),
                &mut *buffer,
            )
            .map_err(|_| Error::Random)?;
        // Ciphertext now: it is moved out, not copied, and needs no zeroizing.
        Ok((nonce, std::mem::take(&mut *buffer)))
    }

    /// Decrypts and authenticates; `None` when the key is wrong or the bytes were changed.
    pub(crate) fn open(
        &self,
        id: &str,
        nonce: [u8; NONCE_LEN],
        ciphertext: &[u8],
    ) -> Option<Zeroizing<Vec<u8>>> {
        // Exactly the ciphertext's size, and only ever shrunk (`truncate` keeps the block):
        // the plaintext is never copied into a new block by a growth, leaving the old one
        // unzeroized.
        let mut buffer = Zeroizing::new(ciphertext.to_vec());
        let len = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(id.as_bytes()),
                &mut buffer,
            )
            .ok()?
            .len();
        buffer.truncate(len);
        Some(buffer)
    }
}

#[allow(clippy::panic, reason = "AES-256 accepts every 32-byte key; this cannot happen")]
fn unreachable_key() -> LessSafeKey {
    panic!("ring rejected a 32-byte AES-256 key")
}

/// Whether `text` would be taken in the "32 raw bytes" form: not 64 hex digits, not base64 of
/// 32 bytes, but 32 bytes long. Such a value is used as the key with no key derivation, so
/// a 32-character passphrase passes for a key with a fraction of a random key's strength.
pub(crate) fn is_raw_form(text: &str) -> bool {
    let trimmed = text.trim();
    let hex = trimmed.len() == 2 * KEY_LEN && trimmed.bytes().all(|b| b.is_ascii_hexdigit());
    let base64 = STANDARD.decode(trimmed).is_ok_and(|decoded| {
        let decoded = Zeroizing::new(decoded);
        decoded.len() == KEY_LEN
    });
    !hex && !base64 && text.len() == KEY_LEN
}

fn decode_key(text: &str) -> Option<Zeroizing<[u8; KEY_LEN]>> {
    let trimmed = text.trim();
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    if trimmed.len() == 2 * KEY_LEN && trimmed.bytes().all(|b| b.is_ascii_hexdigit()) {
        for (index, pair) in trimmed.as_bytes().chunks(2).enumerate() {
            let hex = std::str::from_utf8(pair).ok()?;
            out[index] = u8::from_str_radix(hex, 16).ok()?;
        }
        return Some(out);
    }
    if let Ok(decoded) = STANDARD.decode(trimmed) {
        let decoded = Zeroizing::new(decoded);
        if decoded.len() == KEY_LEN {
            out.copy_from_slice(&decoded);
            return Some(out);
        }
    }
    if text.len() == KEY_LEN {
        out.copy_from_slice(text.as_bytes());
        return Some(out);
    }
    None
}

/// The data keys of a store: the current one, which encrypts new and re-written files, and
/// previous ones, which only decrypt files written before a rotation. Its `Debug` shows key
/// ids only.
///
/// ```
/// use cliproxy_core::Secret;
/// use cliproxy_vault::Keyring;
///
/// let old = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
/// let old = Secret::from(old.to_owned());
/// let new = Secret::from("q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=".to_owned());
/// let keys = Keyring::from_secrets(Some(&new), &[old]).unwrap();
/// assert_eq!(keys.ids().len(), 2);
/// assert_eq!(keys.current_id(), Some(keys.ids()[0]));
/// ```
#[derive(Debug, Default)]
pub struct Keyring {
    current: Option<DataKey>,
    previous: Vec<DataKey>,
}

impl Keyring {
    #[cfg(test)]
    pub(crate) fn new(current: Option<DataKey>, previous: Vec<DataKey>) -> Self {
        Self { current, previous }
    }

    /// Parses the current key (when given) and the previous ones, each written as base64 of 32
    /// bytes (`openssl rand -base64 32`), 64 hex digits or exactly 32 raw bytes (taken as they
    /// are, with no key derivation). A value in none of these forms is an
    /// [`Error::InvalidDataKey`] naming its [`KeyRole`], never its value.
    pub fn from_secrets(current: Option<&Secret>, previous: &[Secret]) -> Result<Self> {
        let current = current.map(|key| DataKey::parse(KeyRole::Current, key)).transpose()?;
        let previous = previous
            .iter()
            .enumerate()
            .map(|(index, key)| DataKey::parse(KeyRole::Previous(index), key))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { current, previous })
    }

    /// The same keys, all of them only for decrypting: a store given this keyring writes
    /// plaintext and still reads files encrypted under any of them.
    #[must_use]
    pub fn decrypt_only(self) -> Self {
        let previous = self.current.into_iter().chain(self.previous).collect();
        Self { current: None, previous }
    }

    /// The key new files are encrypted with, when encryption is on.
    pub(crate) fn current(&self) -> Option<&DataKey> {
        self.current.as_ref()
    }

    /// The id of the current key (16 hex digits, written into every file it encrypts), when
    /// there is one.
    pub fn current_id(&self) -> Option<&str> {
        self.current.as_ref().map(|key| key.id.as_str())
    }

    /// The key with this id, current or previous.
    pub(crate) fn find(&self, id: &str) -> Option<&DataKey> {
        self.current.iter().chain(&self.previous).find(|key| key.id == id)
    }

    /// The ids of every key, the current one first.
    pub fn ids(&self) -> Vec<&str> {
        self.current.iter().chain(&self.previous).map(|key| key.id.as_str()).collect()
    }
}

/// Encodes bytes for a file.
pub(crate) fn to_base64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Decodes bytes from a file.
pub(crate) fn from_base64(text: &str) -> Option<Vec<u8>> {
    STANDARD.decode(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const B64: &str = "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=";

    fn secret(text: &str) -> Secret {
        Secret::from(text.to_owned())
    }

    /// Issue 18 item 19: the buffer that holds the plaintext while it is sealed is allocated
    /// once at its final size. Were it grown for the tag, the allocator would copy it and
    /// free the old block with the plaintext still in it; an exact capacity shows it never
    /// was. Opening works in a copy of the ciphertext, which does not grow either.
    #[test]
    fn sealing_and_opening_never_grow_the_plaintext_buffer() {
        let key = DataKey::parse(KeyRole::Current, &secret(B64)).unwrap();
        for size in [0, 1, 15, 16, 17, 100, 3000] {
            let plaintext = vec![b'p'; size];
            let (nonce, sealed) = key.seal("id", &plaintext).unwrap();
            assert_eq!(sealed.len(), size + AES_256_GCM.tag_len());
            assert_eq!(sealed.capacity(), sealed.len(), "{size}-byte plaintext");
            let opened = key.open("id", nonce, &sealed).unwrap();
            assert_eq!(*opened, plaintext);
            assert_eq!(opened.capacity(), sealed.len(), "{size}-byte plaintext");
        }
    }

    #[test]
    fn the_raw_form_is_told_apart() {
        assert!(is_raw_form("correct horse battery staple 32c"));
        assert!(!is_raw_form(B64));
        assert!(!is_raw_form(&"ab".repeat(32)));
        assert!(!is_raw_form("too short"));
    }

    #[test]
    fn accepts_base64_hex_and_raw_forms_of_the_same_kind() {
        let b64 = DataKey::parse(KeyRole::Current, &secret(B64)).unwrap();
        let hex = DataKey::parse(
            KeyRole::Current,
            &secret("abcdef1234567890abcdef1234567890abcdef1234567890abcdef1234567890"),
        )
        .unwrap();
        assert_eq!(b64.id(), hex.id(), "the base64 and hex spell the same key");
        let raw =
            DataKey::parse(KeyRole::Current, &secret("0123456789abcdef0123456789ABCDEF")).unwrap();
        assert_ne!(raw.id(), b64.id());
        assert_eq!(b64.id().len(), 16);
    }

    #[test]
    fn rejects_other_forms_naming_the_key_and_the_forms_without_the_value() {
        for bad in ["", "short", "q83vEjRWeJCrze8SNFZ4kA==", &"a".repeat(33), &"g".repeat(64)] {
            let error = DataKey::parse(KeyRole::Previous(1), &secret(bad)).unwrap_err();
            assert!(
                matches!(error, Error::InvalidDataKey { key: KeyRole::Previous(1), .. }),
                "{error:?}"
            );
            let error = error.to_string();
            assert!(error.starts_with("the previous data key 1 is not a 32-byte key"), "{error}");
            assert!(!error.contains("auth.") && !error.contains("cliproxy-server"), "{error}");
            assert!(
                error.contains("openssl rand -base64 32") && error.contains("64 hex digits"),
                "{error}"
            );
            if !bad.is_empty() {
                assert!(!error.contains(bad), "{error}");
            }
        }
    }

    #[test]
    fn seal_open_round_trip_and_tamper_detection() {
        let key = DataKey::parse(KeyRole::Current, &secret(B64)).unwrap();
        let (nonce, sealed) = key.seal("openai-a", b"secret payload").unwrap();
        assert_eq!(&key.open("openai-a", nonce, &sealed).unwrap()[..], b"secret payload");
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        // Another id (associated data), another key, a flipped bit, a truncation: all refused.
        assert!(key.open("openai-b", nonce, &sealed).is_none());
        let other = DataKey::parse(KeyRole::Current, &secret(&"7".repeat(64))).unwrap();
        assert!(other.open("openai-a", nonce, &sealed).is_none());
        let mut flipped = sealed.clone();
        flipped[0] ^= 1;
        assert!(key.open("openai-a", nonce, &flipped).is_none());
        assert!(key.open("openai-a", nonce, &sealed[..sealed.len() - 1]).is_none());
        // Fresh nonce per write.
        let (second, _) = key.seal("openai-a", b"secret payload").unwrap();
        assert_ne!(nonce, second);
    }

    /// A fixed vector, computed once with ring from the key `B64` (hex `abcdef12…`), the nonce
    /// 00 01 … 0b, the associated data `openai-a` and the plaintext `secret payload`:
    /// ciphertext then the 16-byte tag.
    const VECTOR_NONCE: [u8; NONCE_LEN] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
    const VECTOR_SEALED: &str = "9079a33a9305b19ffe53bd5c28384ce70297cabcab8760ebe21ef2625e46";
    /// The key id of `B64`: 16 hex digits of SHA-256("cliproxy-key-id\0" ‖ key), written into
    /// every file.
    const B64_KEY_ID: &str = "d539272df7015924";

    fn unhex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn a_fixed_vector_opens_to_its_plaintext_and_no_changed_byte_does() {
        let key = DataKey::parse(KeyRole::Current, &secret(B64)).unwrap();
        assert_eq!(key.id(), B64_KEY_ID);
        let sealed = unhex(VECTOR_SEALED);
        assert_eq!(sealed.len(), b"secret payload".len() + 16);
        let plain = key.open("openai-a", VECTOR_NONCE, &sealed).expect("the vector opens");
        assert_eq!(&plain[..], b"secret payload");
        // Every byte of the ciphertext and of the tag is authenticated.
        for index in 0..sealed.len() {
            let mut changed = sealed.clone();
            changed[index] ^= 0x01;
            assert!(key.open("openai-a", VECTOR_NONCE, &changed).is_none(), "byte {index}");
        }
        let mut nonce = VECTOR_NONCE;
        nonce[11] ^= 0x01;
        assert!(key.open("openai-a", nonce, &sealed).is_none());
        assert!(key.open("openai-b", VECTOR_NONCE, &sealed).is_none());
    }

    #[test]
    fn seal_is_aes_256_gcm_with_the_id_as_associated_data() {
        // Opened with ring directly from the raw key bytes, not with `DataKey::open`: a change
        // made to both halves of this module alike cannot pass.
        let key = DataKey::parse(KeyRole::Current, &secret(B64)).unwrap();
        let (nonce, mut sealed) = key.seal("openai-a", b"secret payload").unwrap();
        let raw = unhex("abcdef1234567890abcdef1234567890abcdef1234567890abcdef1234567890");
        let reference = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &raw).unwrap());
        let plain = reference
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(b"openai-a"), &mut sealed)
            .expect("ring opens what seal wrote");
        assert_eq!(plain, b"secret payload");
    }

    #[test]
    fn debug_shows_only_the_key_id() {
        let key = DataKey::parse(KeyRole::Current, &secret(B64)).unwrap();
        let id = key.id().to_owned();
        let single = format!("{key:?}");
        let printed = format!("{single} {:?}", Keyring::new(Some(key), Vec::new()));
        assert!(printed.contains(&id) && !printed.contains(B64), "{printed}");
    }
}
