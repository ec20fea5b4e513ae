//! Opening the state store and the credential store the gateway uses — on this machine, or
//! on the Redis server several instances share (`state.backend: redis`, `auth.store:
//! redis`) — for `serve` and for the subcommands that read or write them offline (`bans`,
//! `keys`, `usage`, `vault …`).

use anyhow::anyhow;
use cliproxy_netguard::{RedisStore, RedisStoreOptions, SqliteStore, StateStore};
use cliproxy_server::compose::shared_link;

use crate::config::Config;
use crate::failure::Failure;

/// Whether a missing state file is created (a write: a key created before the gateway's
/// first start is there when it starts) or left alone (a read: nothing was ever stored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Missing {
    /// Create the file.
    Create,
    /// Answer `None`, so that a read does not create it.
    Skip,
}

/// The state store `serve` uses (`state.path`, or `.state.db` in `auth.dir`), opened as
/// `serve` opens it, its notices printed on stderr. A file that cannot be used is a runtime
/// failure; a setting that cannot work is a configuration failure.
///
/// With `state.backend: redis`, the Redis store (under this host's name with `-cli`: a
/// command keeps no audit head of its own), Redis answering or the command fails.
pub(crate) fn open_state(
    config: &Config,
    missing: Missing,
) -> Result<Option<Box<dyn StateStore>>, Failure> {
    if let Some(link) = shared_link(&config.gateway()).map_err(gateway_failure)? {
        let instance = format!("{}-cli", config.server.instance_id());
        let options = RedisStoreOptions::new(instance, config.state.flush_interval);
        let store = RedisStore::open(link, options)
            .map_err(|e| Failure::from(anyhow!(cliproxy_gateway::netguard_error(&e))))?;
        return Ok(Some(Box::new(store)));
    }
    let mut state = config.state.clone();
    let path = state.path.get_or_insert_with(|| config.auth.dir.join(".state.db")).clone();
    if missing == Missing::Skip && !path.exists() {
        return Ok(None);
    }
    let store = SqliteStore::open(&state).map_err(|e| {
        let text = cliproxy_gateway::netguard_error(&e);
        match e {
            cliproxy_netguard::Error::State { .. } => anyhow!(text).into(),
            _ => Failure::config(anyhow!(text)),
        }
    })?;
    for notice in store.take_notices() {
        eprintln!("notice: {notice}");
    }
    Ok(Some(Box::new(store)))
}

fn gateway_failure(error: cliproxy_gateway::Error) -> Failure {
    Failure::from(error)
}
