//! The composition: the one place where `serve` and `demo` build each layer from its section
//! of the configuration and hand them to the gateway, which builds none itself
//! ([`Gateway::from_parts`]). The order is the order of their dependencies: the network
//! guard's admission runs on the clock and takes the limits of the client keys kept in the
//! state store; the audit sink anchors its chain in the state store;
//! the credential store, whose exclusive lock is held for the gateway's life, comes last, as
//! it always has.
//!
//! Each builder maps its layer's errors to the config key concerned (the gateway crate's
//! mappings: `netguard_error`, `audit_error`, the vault's `From` for its `Error`), so that a
//! bad section stops the start with exit 78 naming the key.

use std::sync::Arc;

use cliproxy_audit::{AuditSink, Metrics};
use cliproxy_gateway::{ConfigError, Error, Gateway, GatewayConfig, Layers};
use cliproxy_netguard::tls::TlsSettings;
use cliproxy_netguard::{
    Admission, Clock, LimitTable, Limits, LocalAdmission, RedisAdmission, RedisLink, RedisStore,
    RedisStoreOptions, SqliteStore, StateBackend, StateStore, SystemClock,
};
use cliproxy_vault::{CredentialStore, StoreKind};
use slog::Logger;

use crate::config::Config;

/// Builds every layer from `config` and the gateway on them.
pub fn gateway(config: &Config, log: &Logger) -> Result<Gateway, Error> {
    gateway_with_clock(config, log, None)
}

/// [`gateway`] with the network guard's clock given: the gateway's tests drive limiters,
/// quota periods and denylist expiry with a fake one (`None` is the system's).
pub fn gateway_with_clock(
    config: &Config,
    log: &Logger,
    clock: Option<Arc<dyn Clock>>,
) -> Result<Gateway, Error> {
    let config = config.gateway();
    let layers = layers(&config, clock, log)?;
    Gateway::from_parts(&config, layers, log.clone())
}

/// The layers, each from its own section.
pub fn layers(
    config: &GatewayConfig,
    clock: Option<Arc<dyn Clock>>,
    log: &Logger,
) -> Result<Layers, Error> {
    // The network guard's clock: the system's unless a test hands in a fake.
    let clock = clock.unwrap_or_else(SystemClock::shared);
    // `auth.api_keys`: checked before anything is opened, as the admission built first used
    // to check them.
    let client_keys = config.auth.client_keys()?;
    // `server.tls`: the certificate and key are read and checked before anything is opened.
    let tls = tls(config)?;
    // `state.redis`, when several instances share one Redis: reached before anything else
    // is built on it.
    let shared = shared_link(config)?;
    // `state:`: opened before the admission, which takes the limits of the client keys
    // stored there, and the audit log, whose chain head it anchors.
    let state = state_store(config, shared.as_ref())?;
    // `server.security.rate_limiting`, `server.rate_limit` and the `rate_limit` and `quota`
    // of each provider and client key (the config file's and the stored ones): the limits,
    // on the same clock.
    let admission = admission(config, client_keys, &clock, &state, shared.as_ref())?;
    // `metrics:`: the registry the audit sink reports its health to.
    let metrics = metrics(config);
    // `logging.audit`: the hash-chained file, anchored in the state store.
    let audit_sink = audit_sink(config, &metrics, &state, log)?;
    // `auth:`: the credential files, under their directory's exclusive lock for the
    // gateway's life (a vault command writing the same files meanwhile is refused).
    let credentials = credential_store(config, shared.as_ref())?;
    Ok(Layers { clock, admission, tls, state, metrics, audit_sink, credentials })
}

/// The in-memory admission of `server.security` (its per-IP rate limit, and its validation
/// cap, which bounds the estimate of a request without `max_tokens`), `server.rate_limit`,
/// `providers.<name>` and `auth.api_keys` (their `rate_limit` and `quota`). Its quota counts
/// are seeded from the state store by the gateway, which owns that upkeep. The config file's
/// client keys are read by the caller as the gateway reads them, so their errors name
/// `auth.api_keys` the same way; the client keys created at run time are read from the state
/// store, so that their limits (and budgets) are in force from the start.
///
/// With `state.backend: redis` the same limits are kept in Redis (`RedisAdmission`: one
/// round trip per request, the per-IP and global buckets charged in it too), the in-memory
/// admission standing in while Redis cannot be reached (`state.redis.on_unavailable`).
fn admission(
    config: &GatewayConfig,
    client_keys: cliproxy_vault::ClientKeys,
    clock: &Arc<dyn Clock>,
    state: &Arc<dyn StateStore>,
    shared: Option<&Arc<RedisLink>>,
) -> Result<Arc<dyn Admission>, Error> {
    let providers: LimitTable = config
        .providers
        .0
        .iter()
        .map(|(name, provider)| (name.clone(), Limits::new(provider.rate_limit, provider.quota)))
        .collect();
    let stored = state.load_client_keys().map_err(cliproxy_gateway::state_error)?;
    let clients = cliproxy_gateway::client_limit_table_with_stored(client_keys, stored);
    let local = LocalAdmission::from_config(
        &config.server.security,
        &config.server.rate_limit,
        providers.clone(),
        clients.clone(),
        clock.clone(),
    );
    let Some(link) = shared else { return Ok(Arc::new(local)) };
    let admission = RedisAdmission::new(link.clone(), local, providers, clients)
        .map_err(cliproxy_gateway::state_error)?
        .with_shared_buckets(&config.server.security.rate_limiting, &config.server.rate_limit);
    Ok(Arc::new(admission))
}

/// The Redis server of `state.redis` when `state.backend` is `redis`, answering: a new
/// instance does not start blind — without the shared keys, denylist and bans it would admit
/// what the others refuse — so Redis must answer at start (and for an offline command);
/// once running, an outage is met as `state.redis.on_unavailable` says.
pub fn shared_link(
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
pub fn open_vault(
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

/// The listener's TLS from `server.tls` (its files read and checked), `None` when off.
fn tls(config: &GatewayConfig) -> Result<Option<TlsSettings>, Error> {
    TlsSettings::build(&config.server.tls)
        .map_err(|e| ConfigError::new(cliproxy_gateway::netguard_error(&e)).into())
}

/// The SQLite state store of `state:` (at `auth.dir/.state.db` unless `state.path` says
/// otherwise). A store that cannot be opened stops the start: running without it would
/// forget quotas and denylist entries silently.
///
/// With `state.backend: redis`, the Redis store on `shared`, naming this instance
/// (`server.instance_id`): its audit head is its own.
fn state_store(
    config: &GatewayConfig,
    shared: Option<&Arc<RedisLink>>,
) -> Result<Arc<dyn StateStore>, Error> {
    if let Some(link) = shared {
        let options =
            RedisStoreOptions::new(config.server.instance_id(), config.state.flush_interval);
        let state =
            RedisStore::open(link.clone(), options).map_err(cliproxy_gateway::state_error)?;
        return Ok(Arc::new(state));
    }
    let state = SqliteStore::open(&cliproxy_gateway::state_config(config))
        .map_err(cliproxy_gateway::state_error)?;
    Ok(Arc::new(state))
}

/// The metrics registry of `metrics:`, its `provider` label bounded by the configured
/// providers.
fn metrics(config: &GatewayConfig) -> Arc<Metrics> {
    Arc::new(Metrics::new(&config.metrics, config.providers.0.keys().cloned()))
}

/// The hash-chained audit file of `logging.audit` (`None` when it is off), reporting to
/// `metrics`, anchored in `state` and signing checkpoints with the key kept in `auth.dir`;
/// its notices go to `log`.
fn audit_sink(
    config: &GatewayConfig,
    metrics: &Arc<Metrics>,
    state: &Arc<dyn StateStore>,
    log: &Logger,
) -> Result<Option<Arc<dyn AuditSink>>, Error> {
    let options = cliproxy_gateway::audit_sink_options(config, state, log)?;
    config
        .logging
        .audit
        .build(metrics.clone(), options)
        .map_err(|e| ConfigError::new(cliproxy_gateway::audit_error(&e)).into())
}

/// The credential file store of `auth:`, holding its directory's exclusive lock: the
/// gateway keeps the credentials in memory and writes them back, so a vault command writing
/// the same files meanwhile is refused. Bad encryption keys are configuration errors (exit
/// 78): see the `From<cliproxy_vault::Error>` for [`Error`].
///
/// With `auth.store: redis`, the records kept on the Redis server of `state.redis`, sealed
/// exactly as the files are (several instances share them; no directory lock).
fn credential_store(
    config: &GatewayConfig,
    shared: Option<&Arc<RedisLink>>,
) -> Result<Arc<dyn CredentialStore>, Error> {
    open_vault(config, shared, true)
}
