//! Layer 3 of cliproxy: the credential vault, a library any Rust service can embed.
//!
//! It holds what a service must keep secret and must not lose:
//!
//! - **Provider credentials** (API keys and OAuth tokens) in a [`CredentialStore`], the
//!   crate's main trait and the seam another store (Redis, a database) implements. The
//!   [`FileStore`] keeps one JSON file per credential in a directory (0700, files 0600, owned
//!   by the process's user), written atomically (temporary file, fsync, rename, fsync of the
//!   directory). With a [`Keyring`] each file is sealed with AES-256-GCM under the current
//!   data key, with the credential id as associated data, so that a file copied onto another
//!   id does not open; previous keys still decrypt after a rotation
//!   ([`CredentialStore::reencrypt`]). See [`parse_credential_file`] for the format. One
//!   process writes the directory at a time: a store opened exclusively holds a lock on
//!   `DIR/.lock` for its life, and any other store takes it for each write; a second holder
//!   gets [`Error::Locked`] within 200 ms.
//! - **The same credentials shared by several processes** (feature `redis`): the
//!   `RedisStore` keeps each sealed document in a Redis key (a store without a current data
//!   key does not open, so the server never holds a plaintext token), publishes every change
//!   for [`CredentialStore::watch`], and lends the right to refresh an OAuth credential to one
//!   process at a time ([`CredentialStore::refresh_lock`]).
//! - **Client keys** ([`ClientKeys`]): the keys clients present, kept as SHA-256 digests and
//!   compared in constant time; each maps to a named [`ClientIdentity`].
//! - **Client keys created at run time** ([`ClientKeyRecord::create`]): a new key
//!   (`cpk-` + 48 hex from the system's random number generator) handed back once in a
//!   [`Secret`](cliproxy_core::Secret), and a record with its SHA-256 digest, a display hint
//!   and its limits (models, rate, token quota, [`Budget`](cliproxy_core::Budget) in micro-dollars, expiry),
//!   which a state store keeps as versioned JSON ([`ClientKeyRecord::to_stored_json`],
//!   [`ClientKeyRecord::from_stored`]).
//!
//! A store is built from plain values with [`FileStoreOptions`] (a directory, a [`Keyring`],
//! two flags), or from the [`Config`] section a program deserializes with serde. The vault
//! logs nothing: what it fixed or noticed on its own comes back as [`Notice`]s from
//! [`CredentialStore::take_notices`], for the caller to log as it likes. Its [`Error`]s speak
//! of the store, its files and its keys, never of a program's setting names: the variants
//! carry the data (which file, which client key, which [`KeyRole`]) for the caller to word
//! them in its own terms.
//!
//! Every token is a [`cliproxy_core::Secret`]: it never reaches a `Debug` line, and no error
//! or notice of this crate quotes a file's contents.
//!
//! ```
//! use cliproxy_core::Secret;
//! use cliproxy_vault::{
//!     Credential, CredentialSecret, CredentialStore, FileStoreOptions, Keyring, Protection,
//! };
//!
//! # let dir = tempfile::tempdir().unwrap();
//! let key = Secret::from("q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=".to_owned());
//! let store = FileStoreOptions::new()
//!     .keys(Keyring::from_secrets(Some(&key), &[]).unwrap())
//!     .require_encrypted(true)
//!     .open(&dir.path().join("credentials"))
//!     .unwrap();
//! let credential = Credential::new_api_key("openai", Secret::from("sk-test-0123".to_owned()))
//!     .unwrap()
//!     .with_id("openai-main")
//!     .unwrap();
//! store.put(&credential).unwrap();
//!
//! // Read back with its secret, which no `Debug` line shows.
//! let back = store.get("openai-main").unwrap().unwrap();
//! let CredentialSecret::ApiKey(token) = &back.secret else { unreachable!() };
//! assert_eq!(token.expose(), "sk-test-0123");
//! assert!(!format!("{back:?}").contains("sk-test-0123"));
//! assert!(matches!(store.list().unwrap()[0].stored, Protection::Encrypted(_)));
//!
//! // On disk the token is sealed: the file holds no plaintext of it.
//! let file = std::fs::read(dir.path().join("credentials/openai-main.json")).unwrap();
//! assert!(!file.windows(b"sk-test-0123".len()).any(|w| w == b"sk-test-0123"));
//! ```
//!
//! `examples/embedded_vault.rs` embeds the vault in a small program of its own: encryption,
//! API-key and OAuth credentials, a key rotation and a tampered file refused
//! (`cargo run -p cliproxy-vault --example embedded_vault`).

mod client_keys;
mod config;
mod credential;
mod crypto;
mod error;
mod fingerprint;
mod key_records;
mod lease;
mod lock;
mod mode;
mod notice;
mod oauth;
#[cfg(feature = "redis")]
mod redis_store;
mod signing;
mod store;

// The public interface is:
pub use client_keys::{BudgetConfig, ClientIdentity, ClientKeyConfig, ClientKeys, MAX_BUDGET_USD};
pub use config::{Config, EncryptionConfig, FingerprintConfig, RefreshConfig, StoreKind};
pub use credential::{
    Credential, CredentialFile, CredentialMeta, CredentialSecret, Protection, SealedCredential,
    parse_credential_file, validate_name,
};
pub use crypto::Keyring;
pub use error::{ClientKeyProblem, Error, KeyRole, Result};
pub use key_records::{
    CLIENT_KEY_LEN, CLIENT_KEY_PREFIX, ClientKeyRecord, ClientKeySpec, HINT_LEN, KeyRecordProblem,
    NewClientKey, RECORD_VERSION, digest_bytes, digests_match, generate_key, key_digest,
    key_sha256,
};
pub use lease::{ChangeHandler, RefreshLease, Watcher};
pub use notice::Notice;
pub use oauth::{
    MAX_TOKEN_RESPONSE_BYTES, OAuthTokens, RefreshError, Refreshed, parse_token_response,
};
#[cfg(feature = "redis")]
pub use redis_store::{RedisStore, RedisStoreOptions};
pub use signing::{AUDIT_SIGNING_KEY_FILE, AuditSigningKey};
pub use store::{
    CredentialStore, FileStore, FileStoreOptions, ListEntry, Reencrypted, Unreadable,
    UnreadableFile,
};
