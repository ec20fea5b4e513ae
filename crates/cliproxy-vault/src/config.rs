use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;

use crate::{ClientKeyConfig, ClientKeys, CredentialStore, FileStore, Result};

/// The `auth:` section: who may call the gateway, and where provider credentials live.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Client keys (`auth.api_keys`): bare strings or `{name, key, models}` objects. Empty
    /// means every proxy request is refused with 401.
    pub api_keys: Vec<ClientKeyConfig>,
    /// The credential directory (`auth.dir`); created 0700 when missing.
    pub dir: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Self { api_keys: Vec::new(), dir: PathBuf::from("./auths") }
    }
}

impl Config {
    /// Opens the credential store in `dir`, creating it 0700 when missing and tightening loose
    /// permissions on a directory we own. A directory owned by another user is refused.
    pub fn build(&self) -> Result<Arc<dyn CredentialStore>> {
        Ok(Arc::new(FileStore::open(&self.dir)?))
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
}
