//! Opening the state store and the credential store the gateway uses — on this machine, or
//! on the Redis server several instances share (`state.backend: redis`, `auth.store:
//! redis`) — for `serve` and for the subcommands that read or write them offline (`bans`,
//! `keys`, `usage`, `vault …`).

use std::sync::Arc;

use anyhow::anyhow;
use cliproxy_gateway::GatewayConfig;
use cliproxy_netguard::{
    RedisLink, RedisStore, RedisStoreOptions, SqliteStore, StateBackend, StateStore,
};
use cliproxy_vault::{CredentialStore, StoreKind};

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

/// The Redis server of `state.redis` when `state.backend` is `redis`, answering: a new
/// instance does not start blind — without the shared keys, denylist and bans it would admit
/// what the others refuse — so Redis must answer at start (and for an offline command);
/// once running, an outage is met as `state.redis.on_unavailable` says.
pub(crate) fn shared_link(
    config: &GatewayConfig,
) -> Result<Option<Arc<RedisLink>>, cliproxy_gateway::Error> {
    if config.state.backend != StateBackend::Redis {
        return Ok(None);
    }
    let link = RedisLink::open(&config.state.redis).map_err(cliproxy_gateway::state_error)?;
    if let Err(unavailable) = link.ping() {
        return Err(cliproxy_gateway::state_error(cliproxy_netguard::Error::Redis {
            setting: cliproxy_netguard::Setting::RedisUrl,
            message: format!(
                "{} does not answer ({unavailable}): a gateway starts only with the shared state in reach; start Redis, or check state.redis.url",
                link.describe()
            ),
        }));
    }
    Ok(Some(Arc::new(link)))
}

/// The credential store of `auth:`: the files of `auth.dir` (`exclusive`: under their
/// directory's lock, for writers), or with `auth.store: redis` the records on the Redis
/// server of `state.redis` (sealed as the files are; no lock: instances share them).
pub(crate) fn open_vault(
    config: &GatewayConfig,
    shared: Option<&Arc<RedisLink>>,
    exclusive: bool,
) -> Result<Arc<dyn CredentialStore>, cliproxy_gateway::Error> {
    if config.auth.store != StoreKind::Redis {
        let store = if exclusive { config.auth.build_exclusive() } else { config.auth.build() };
        return Ok(store?);
    }
    let opened;
    let link = match shared {
        Some(link) => link,
        None => {
            opened = shared_link(config)?.ok_or_else(|| {
                cliproxy_gateway::ConfigError::new(
                    "`auth.store: redis` keeps the credentials on the Redis server of state.redis: set state.backend: redis too",
                )
            })?;
            &opened
        }
    };
    let store = config.auth.redis_store(link.client().clone(), link.prefix(), link.timeout())?;
    Ok(Arc::new(store))
}

fn gateway_failure(error: cliproxy_gateway::Error) -> Failure {
    Failure::from(error)
}
