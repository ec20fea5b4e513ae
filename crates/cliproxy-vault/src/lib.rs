//! Layer 3 of cliproxy: the credential vault.
//!
//! It holds what the gateway must keep secret and must not lose:
//!
//! - **Provider credentials** in a [`CredentialStore`]. The [`FileStore`] keeps one JSON file
//!   per credential in `auth.dir` (directory 0700, files 0600, owned by the gateway's user),
//!   written atomically (temporary file, fsync, rename, fsync of the directory). Each file
//!   carries a format marker and a version, so encrypted versions can be added without
//!   breaking old files; see [`parse_credential_file`] for the format. One process writes
//!   `auth.dir` at a time: [`Config::build_exclusive`] (a gateway) holds an exclusive lock on
//!   `auth.dir/.lock` for the store's life, and a store from [`Config::build`] takes it for
//!   each write; a second holder gets [`Error::Locked`] within 200 ms.
//! - **Client keys** ([`ClientKeys`]): the keys clients present, kept as SHA-256 digests and
//!   compared in constant time; each maps to a named [`ClientIdentity`].
//!
//! Every token is a [`cliproxy_core::Secret`]: it never reaches a `Debug` line, and no error
//! of this crate quotes a file's contents.
//!
//! ```
//! use cliproxy_core::Secret;
//! use cliproxy_vault::{Config, Credential, CredentialSecret};
//!
//! # let dir = tempfile::tempdir().unwrap();
//! let config = Config { dir: dir.path().join("auths"), ..Config::default() };
//! let store = config.build().unwrap();
//! let credential = Credential::new_api_key("openai", Secret::from("sk-test-0123".to_owned()))
//!     .unwrap()
//!     .with_id("openai-main")
//!     .unwrap();
//! store.put(&credential).unwrap();
//! let back = store.get("openai-main").unwrap().unwrap();
//! let CredentialSecret::ApiKey(token) = &back.secret else { unreachable!() };
//! assert_eq!(token.expose(), "sk-test-0123");
//! assert_eq!(format!("{back:?}").contains("sk-test-0123"), false);
//! ```

mod client_keys;
mod config;
mod credential;
mod crypto;
mod error;
mod fingerprint;
mod lock;
mod oauth;
mod signing;
mod store;

// The public interface is:
pub use client_keys::{ClientIdentity, ClientKeyConfig, ClientKeys};
pub use config::{Config, EncryptionConfig, FingerprintConfig, RefreshConfig};
pub use credential::{
    Credential, CredentialFile, CredentialMeta, CredentialSecret, Protection, SealedCredential,
    parse_credential_file, validate_name,
};
pub use error::{Error, Result};
pub use oauth::{
    MAX_TOKEN_RESPONSE_BYTES, OAuthTokens, RefreshError, Refreshed, parse_token_response,
};
pub use signing::{AUDIT_SIGNING_KEY_FILE, AuditSigningKey};
pub use store::{CredentialStore, FileStore, ListEntry, Reencrypted, Unreadable, UnreadableFile};
