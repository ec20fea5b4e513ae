//! What the sandbox must leave reachable for a configuration, computed before the gateway is
//! built; it creates the writable directories that are missing. Not part of the request
//! path: the binary calls it (through `Gateway::sandbox_paths`) before it sandboxes itself.
//! It stays in this crate because it runs the build's own configuration checks
//! (`guard::check_config`, `guard::state_config`), which are crate-private.

use crate::config::GatewayConfig;

/// Checks `config` as the build will (without writing anything), then says what the
/// sandbox must leave reachable for it, computed before the gateway is built: the sandbox goes on first, while the process has one thread (landlock covers
/// only the threads started after it), so the writable directories are created here
/// (0700, where missing) — landlock grants existing paths only.
///
/// Read-only: `config_file` (reloads read it again), the directories of the TLS files and
/// of the files they link to (a renewed certificate is usually renamed into place, and
/// landlock grants inodes), the providers' `ca_file`s. Read-write: `auth.dir`, the state database's directory, the
/// audit log's directory.
pub(crate) fn sandbox_paths(
    config: &GatewayConfig,
    config_file: Option<&std::path::Path>,
) -> Result<cliproxy_container::sandbox::Paths, crate::error::Error> {
    use std::path::{Path, PathBuf};
    fn dir_of(file: &Path) -> PathBuf {
        match file.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
            _ => PathBuf::from("."),
        }
    }
    // What the build would refuse, first: a configuration error is named before the
    // sandbox's own refusals (running as root, say).
    crate::guard::check_config(config).map_err(crate::config::ConfigError::new)?;
    let tls = &config.server.tls;
    let mut read_only: Vec<PathBuf> = config_file.map(Path::to_owned).into_iter().collect();
    for file in tls.cert_file.iter().chain(tls.key_file.iter()) {
        read_only.push(dir_of(file));
        // A TLS file that is a symbolic link (certbot's live/ → archive/) is read where
        // the link points now; renewals put the new file beside it.
        if let Ok(target) = std::fs::canonicalize(file) {
            read_only.push(dir_of(&target));
        }
    }
    read_only.extend(config.providers.0.values().filter_map(|p| p.ca_file.clone()));
    read_only.dedup();
    let state = crate::guard::state_config(config);
    let mut read_write = vec![(config.auth.dir.clone(), "auth.dir")];
    if let Some(path) = &state.path {
        read_write.push((dir_of(path), "state.path"));
    }
    if config.logging.audit.enabled {
        read_write.push((dir_of(&config.logging.audit.file), "logging.audit.file"));
    }
    for (dir, key) in &read_write {
        if !dir.exists() {
            cliproxy_core::private_fs::create_dir(dir).map_err(|source| {
                crate::error::Error::Io {
                    context: format!("cannot create the directory {} ({key})", dir.display()),
                    source,
                }
            })?;
        }
    }
    Ok(cliproxy_container::sandbox::Paths {
        read_only,
        read_write: read_write.into_iter().map(|(dir, _)| dir).collect(),
    })
}
