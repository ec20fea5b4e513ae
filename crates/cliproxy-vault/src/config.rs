use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cliproxy_core::Secret;
use serde::Deserialize;

use crate::{
    ClientKeyConfig, ClientKeys, CredentialStore, Error, FileStoreOptions, KeyRole, Keyring, Result,
};

/// `auth.encryption`: encryption at rest of credential files.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EncryptionConfig {
    /// Encrypt new and re-written credential files.
    pub enabled: bool,
    /// The current key: base64 of 32 bytes, 64 hex digits or 32 raw bytes (no key
    /// derivation: `check` warns, as a 32-character passphrase would pass); usually
    /// `${CLIPROXY_ENCRYPTION_KEY}`.
    pub key: Option<Secret>,
    /// Earlier keys, still used to decrypt files written before a rotation.
    pub previous_keys: Vec<Secret>,
    /// Refuse plaintext credential files when loading (`auth.encryption.require_encrypted`).
    /// Unset means "on when `enabled` is on": whoever can write `auth.dir` without holding the
    /// key could otherwise plant a token and a `base_url` of their choosing. `vault migrate`
    /// is the explicit way to take a plaintext file in. Listing still shows such files (as
    /// plaintext), so that the operator can judge them before migrating.
    pub require_encrypted: Option<bool>,
}

impl EncryptionConfig {
    /// The keyring these settings describe: without `enabled`, every key only decrypts (new
    /// files stay plaintext). [`Error::NoCurrentKey`] when `enabled` has no key.
    pub fn keyring(&self) -> Result<Keyring> {
        let current = self.key.as_ref().filter(|key| !key.is_empty());
        if current.is_none() && self.enabled {
            return Err(Error::NoCurrentKey);
        }
        let keys = Keyring::from_secrets(current, &self.previous_keys)?;
        Ok(if self.enabled { keys } else { keys.decrypt_only() })
    }

    /// The keys whose value is taken in the "32 raw bytes" form: used as the key as it is,
    /// with no key derivation, so a 32-character passphrase passes for a key. A program's own
    /// checks can warn about them; the form is kept so that files written under such a key
    /// still decrypt. Roles only, never values.
    pub fn raw_form_keys(&self) -> Vec<KeyRole> {
        let current = self.key.iter().map(|key| (KeyRole::Current, key));
        let previous = self
            .previous_keys
            .iter()
            .enumerate()
            .map(|(index, key)| (KeyRole::Previous(index), key));
        current
            .chain(previous)
            .filter(|(_, key)| crate::crypto::is_raw_form(key.expose()))
            .map(|(role, _)| role)
            .collect()
    }

    /// Whether plaintext files are refused at load: `require_encrypted`, by default `enabled`.
    pub(crate) fn require_encrypted(&self) -> Result<bool> {
        match self.require_encrypted {
            Some(true) if !self.enabled => Err(Error::RequireEncryptedWithoutEncryption),
            Some(require) => Ok(require),
            None => Ok(self.enabled),
        }
    }
}

/// `auth.refresh`: when and how OAuth access tokens are refreshed.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RefreshConfig {
    /// The longest a refresh may take before it counts as failed.
    #[serde(with = "cliproxy_core::duration")]
    pub timeout: Duration,
    /// How long before expiry an access token is refreshed.
    #[serde(with = "cliproxy_core::duration")]
    pub ahead: Duration,
}

impl Default for RefreshConfig {
    fn default() -> Self {
        Self { timeout: Duration::from_secs(30), ahead: Duration::from_secs(300) }
    }
}

/// `auth.device_fingerprint`: a stable id of this machine sent upstream in a header.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FingerprintConfig {
    /// Send the fingerprint upstream.
    pub enabled: bool,
    /// The header it is sent in.
    pub header: String,
}

impl Default for FingerprintConfig {
    fn default() -> Self {
        Self { enabled: false, header: "X-Device-Fingerprint".to_owned() }
    }
}

/// `auth.store`: where the credentials are kept.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum StoreKind {
    /// One file per credential in `auth.dir` ([`crate::FileStore`]).
    #[default]
    File,
    /// One record per credential in the Redis server the program shares with its other
    /// instances (`RedisStore`, feature `redis`); the records are encrypted exactly as the
    /// files are.
    Redis,
}

/// The `auth:` section: who may call the gateway, and where provider credentials live.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Client keys (`auth.api_keys`): bare strings or `{name, key, models}` objects. Empty
    /// means every proxy request is refused with 401.
    pub api_keys: Vec<ClientKeyConfig>,
    /// Where the credentials are kept (`auth.store`): files in `dir`, or Redis.
    pub store: StoreKind,
    /// The credential directory (`auth.dir`); created 0700 when missing. With the Redis store
    /// it holds nothing of the vault's.
    pub dir: PathBuf,
    /// Encryption at rest (`auth.encryption`).
    pub encryption: EncryptionConfig,
    /// OAuth refresh (`auth.refresh`).
    pub refresh: RefreshConfig,
    /// The device fingerprint header (`auth.device_fingerprint`).
    pub device_fingerprint: FingerprintConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            api_keys: Vec::new(),
            store: StoreKind::File,
            dir: PathBuf::from("./auths"),
            encryption: EncryptionConfig::default(),
            refresh: RefreshConfig::default(),
            device_fingerprint: FingerprintConfig::default(),
        }
    }
}

impl Config {
    /// Opens the credential store in `dir` with the configured encryption keys, creating the
    /// directory 0700 when missing and tightening loose permissions on a directory we own. A
    /// directory owned by another user is refused; a malformed key is an
    /// [`Error::InvalidDataKey`]. [`FileStoreOptions`] does the same from plain values.
    ///
    /// The store holds no lock on the directory: it is for reading beside a running gateway
    /// (`vault list`, `check`), and each write it makes takes the lock of `auth.dir` for its
    /// own duration, refused with [`Error::Locked`] while a gateway runs. See
    /// [`Config::build_exclusive`].
    pub fn build(&self) -> Result<Arc<dyn CredentialStore>> {
        self.open(false)
    }

    /// [`Error::RedisNotGiven`] when `store` is `redis`: that store needs the program's Redis
    /// connection ([`Config::redis_store`]).
    ///
    /// [`Config::build`] that takes the lock of `auth.dir` and holds it until the store is
    /// dropped: for the gateway, which keeps the credentials in memory and writes them back,
    /// and for a command whose reads and writes must not be interleaved with another's.
    /// [`Error::Locked`] within 200 ms while another process holds it.
    pub fn build_exclusive(&self) -> Result<Arc<dyn CredentialStore>> {
        self.open(true)
    }

    fn open(&self, exclusive: bool) -> Result<Arc<dyn CredentialStore>> {
        if self.store == StoreKind::Redis {
            return Err(Error::RedisNotGiven);
        }
        let store = FileStoreOptions::new()
            .keys(self.encryption.keyring()?)
            .require_encrypted(self.encryption.require_encrypted()?)
            .exclusive(exclusive)
            .open(&self.dir)?;
        Ok(Arc::new(store))
    }

    /// The Redis store of this section's encryption settings, on the server `client` points
    /// to (the program builds it from its own Redis settings), with its keys under
    /// `key_prefix` and every call bounded by `timeout`. Connects to nothing yet:
    /// [`CredentialStore::check`] is the probe. Whatever `store` says: the program decides.
    #[cfg(feature = "redis")]
    pub fn redis_store(
        &self,
        client: redis::Client,
        key_prefix: &str,
        timeout: Duration,
    ) -> Result<crate::RedisStore> {
        crate::RedisStoreOptions::new()
            .keys(self.encryption.keyring()?)
            .require_encrypted(self.encryption.require_encrypted()?)
            .key_prefix(key_prefix)
            .timeout(timeout)
            .open(client)
    }

    /// Validates `api_keys` into the constant-time lookup table the gateway uses.
    pub fn client_keys(&self) -> Result<ClientKeys> {
        ClientKeys::from_config(&self.api_keys)
    }
}

#[cfg(test)]
mod tests {
    use figment::Figment;
    use figment::providers::{Format, Yaml};

    use super::*;

    #[test]
    fn reads_the_auth_section_with_defaults_and_rejects_unknown_keys() {
        let config: Config = Figment::new()
            .merge(Yaml::string("api_keys: [\"cpk-0123456789abcdef\"]\n"))
            .extract()
            .unwrap();
        assert_eq!(config.dir, PathBuf::from("./auths"));
        assert_eq!(config.client_keys().unwrap().len(), 1);

        let error = Figment::new()
            .merge(Yaml::string("dir: /tmp/x\nencryption_kee: abc\n"))
            .extract::<Config>()
            .unwrap_err()
            .to_string();
        assert!(error.contains("encryption_kee"), "{error}");
    }

    #[test]
    fn require_encrypted_follows_enabled_unless_set() {
        let parse = |yaml: &str| -> EncryptionConfig {
            Figment::new().merge(Yaml::string(yaml)).extract().unwrap()
        };
        assert!(!parse("enabled: false\n").require_encrypted().unwrap());
        assert!(parse("enabled: true\n").require_encrypted().unwrap());
        assert!(!parse("enabled: true\nrequire_encrypted: false\n").require_encrypted().unwrap());
        let error = parse("require_encrypted: true\n").require_encrypted().unwrap_err();
        assert!(error.is_config());
        assert!(matches!(error, Error::RequireEncryptedWithoutEncryption), "{error:?}");
        assert!(
            error.to_string().starts_with("encrypted files are required while encryption is off"),
            "{error}"
        );
    }
}
