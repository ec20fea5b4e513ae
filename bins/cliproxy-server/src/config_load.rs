//! Loading the configuration named by `--config`, for every subcommand that reads one.

use crate::cli::ConfigArg;
use crate::config::{Config, ConfigSource};
use crate::failure::Failure;

/// The configuration `--config` names (or the defaults), or a configuration failure (exit
/// 78) naming the key.
pub(crate) fn load(config: &ConfigArg) -> Result<Config, Failure> {
    Config::load(&source(config)).map_err(Failure::config)
}

/// Where the configuration comes from: the file given, else `./config.yaml` when present,
/// else the built-in defaults (see `ConfigSource::Default`).
pub(crate) fn source(config: &ConfigArg) -> ConfigSource {
    match &config.config {
        Some(path) => ConfigSource::File(path.clone()),
        None => ConfigSource::Default,
    }
}
