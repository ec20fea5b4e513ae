use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cliproxy_core::Secret;
use serde::Deserialize;

use crate::crypto::{DataKey, Keyring};
use crate::{ClientKeyConfig, ClientKeys, CredentialStore, Error, FileStore, Result};

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
    pub(crate) fn keyring(&self) -> Result<Keyring> {
        let current = match &self.key {
            Some(key) if !key.is_empty() => Some(DataKey::parse("auth.encryption.key", key)?),
            _ if self.enabled => {
                return Err(Error::Config {
                    key: "auth.encryption.key".to_owned(),
                    reason: "encryption is enabled but no key is set (set CLIPROXY_ENCRYPTION_KEY; `cliproxy-server keygen` prints one)".to_owned(),
                });
            }
            _ => None,
        };
        let previous = self
            .previous_keys
            .iter()
            .enumerate()
            .map(|(index, key)| {
                DataKey::parse(&format!("auth.encryption.previous_keys[{index}]"), key)
            })
            .collect::<Result<Vec<_>>>()?;
        // Without `enabled` the key only decrypts: new files stay plaintext.
        let (current, previous) = match current {
            Some(key) if !self.enabled => (None, std::iter::once(key).chain(previous).collect()),
            current => (current, previous),
        };
        Ok(Keyring::new(current, previous))
    }

    /// The config keys (`auth.encryption.key`, `auth.encryption.previous_keys[i]`) whose value
    /// is taken in the "32 raw bytes" form: used as the key as it is, with no key derivation,
    /// so a 32-character passphrase passes for a key. `check` warns about them; the form is
    /// kept so that files written under such a key still decrypt. Names only, never values.
    pub fn raw_form_keys(&self) -> Vec<String> {
        let current = self.key.iter().map(|key| ("auth.encryption.key".to_owned(), key));
        let previous = self
            .previous_keys
            .iter()
            .enumerate()
            .map(|(index, key)| (format!("auth.encryption.previous_keys[{index}]"), key));
        current
            .chain(previous)
            .filter(|(_, key)| crate::crypto::is_raw_form(key.expose()))
            .map(|(name, _)| name)
            .collect()
    }

    /// Whether plaintext files are refused at load: `require_encrypted`, by default `enabled`.
    pub(crate) fn require_encrypted(&self) -> Result<bool> {
        match self.require_encrypted {
            Some(true) if !self.enabled => Err(Error::Config {
                key: "auth.encryption.require_encrypted".to_owned(),
                reason: "is true while auth.encryption.enabled is false: new credentials would be written in plaintext and then refused; enable encryption or drop the setting".to_owned(),
            }),
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

/// The `auth:` section: who may call the gateway, and where provider credentials live.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Client keys (`auth.api_keys`): bare strings or `{name, key, models}` objects. Empty
    /// means every proxy request is refused with 401.
    pub api_keys: Vec<ClientKeyConfig>,
    /// The credential directory (`auth.dir`); created 0700 when missing.
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
    /// directory owned by another user is refused; a malformed key is an [`Error::Config`].
    ///
    /// The store holds no lock on the directory: it is for reading beside a running gateway
    /// (`vault list`, `check`), and each write it makes takes the lock of `auth.dir` for its
    /// own duration, refused with [`Error::Locked`] while a gateway runs. See
    /// [`Config::build_exclusive`].
    pub fn build(&self) -> Result<Arc<dyn CredentialStore>> {
        self.open(false)
    }

    /// [`Config::build`] that takes the lock of `auth.dir` and holds it until the store is
    /// dropped: for the gateway, which keeps the credentials in memory and writes them back,
    /// and for a command whose reads and writes must not be interleaved with another's.
    /// [`Error::Locked`] within 200 ms while another process holds it.
    pub fn build_exclusive(&self) -> Result<Arc<dyn CredentialStore>> {
        self.open(true)
    }

    fn open(&self, exclusive: bool) -> Result<Arc<dyn CredentialStore>> {
        Ok(Arc::new(FileStore::with_keys(
            &self.dir,
            self.encryption.keyring()?,
            self.encryption.require_encrypted()?,
            exclusive,
        )?))
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
        assert!(error.to_string().starts_with("auth.encryption.require_encrypted:"), "{error}");
    }
}
