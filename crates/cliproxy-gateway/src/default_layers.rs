//! The default layers, each built from its section of the configuration: the transitional
//! composition that `cliproxy-server`'s `compose.rs` calls builder by builder, and that
//! [`Gateway::build`](crate::Gateway::build) still calls whole for the crate's tests. The
//! gateway itself builds no layer ([`Gateway::from_parts`](crate::Gateway::from_parts)
//! takes them); these builders live here only because the figment [`Config`] and the mapping
//! of each layer's errors to the config keys still do. A later step moves them, with the
//! `Config`, into the binary.

use std::sync::Arc;

use cliproxy_audit::{AuditSink, Metrics};
use cliproxy_netguard::tls::TlsSettings;
use cliproxy_netguard::{Clock, SqliteStore, StateStore, SystemClock};
use cliproxy_vault::CredentialStore;
use slog::Logger;

use crate::config::{Config, ConfigError};
use crate::error::Result;
use crate::layers::Layers;

/// Builds every default layer from `config`, in the order the binary's composition does
/// (`clock` given by tests that drive limiters with a fake one).
pub fn build(config: &Config, clock: Option<Arc<dyn Clock>>, log: &Logger) -> Result<Layers> {
    let clock = clock.unwrap_or_else(self::clock);
    let tls = tls(config)?;
    // Opened before the audit log: it holds the log's head anchor.
    let state = state_store(config)?;
    let metrics = metrics(config);
    let audit_sink = audit_sink(config, &metrics, &state, log)?;
    let credentials = credential_store(config)?;
    Ok(Layers { clock, tls, state, metrics, audit_sink, credentials })
}

/// The system clock.
pub fn clock() -> Arc<dyn Clock> {
    SystemClock::shared()
}

/// The listener's TLS from `server.tls` (its files read and checked), `None` when off.
pub fn tls(config: &Config) -> Result<Option<TlsSettings>> {
    TlsSettings::build(&config.server.tls)
        .map_err(|e| ConfigError::new(crate::netguard_error(&e)).into())
}

/// The SQLite state store of `state:` (at `auth.dir/.state.db` unless `state.path` says
/// otherwise). A store that cannot be opened stops the start: running without it would
/// forget quotas and denylist entries silently.
pub fn state_store(config: &Config) -> Result<Arc<dyn StateStore>> {
    let state = SqliteStore::open(&crate::guard::state_config(config))
        .map_err(crate::guard::state_error)?;
    Ok(Arc::new(state))
}

/// The metrics registry of `metrics:`, its `provider` label bounded by the configured
/// providers.
pub fn metrics(config: &Config) -> Arc<Metrics> {
    Arc::new(Metrics::new(&config.metrics, config.providers.0.keys().cloned()))
}

/// The hash-chained audit file of `logging.audit` (`None` when it is off), reporting to
/// `metrics`, anchored in `state` and signing checkpoints with the key kept in `auth.dir`;
/// its notices go to `log`.
pub fn audit_sink(
    config: &Config,
    metrics: &Arc<Metrics>,
    state: &Arc<dyn StateStore>,
    log: &Logger,
) -> Result<Option<Arc<dyn AuditSink>>> {
    let options = crate::audit_anchor::sink_options(config, state, log)?;
    config
        .logging
        .audit
        .build(metrics.clone(), options)
        .map_err(|e| ConfigError::new(crate::audit_anchor::audit_error(&e)).into())
}

/// The credential file store of `auth:`, holding its directory's exclusive lock: the
/// gateway keeps the credentials in memory and writes them back, so a vault command writing
/// the same files meanwhile is refused. Bad encryption keys are configuration errors (exit
/// 78): see the `From<cliproxy_vault::Error>` for [`Error`](crate::Error).
pub fn credential_store(config: &Config) -> Result<Arc<dyn CredentialStore>> {
    Ok(config.auth.build_exclusive()?)
}
