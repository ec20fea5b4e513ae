//! The default layers built from a configuration, for this crate's unit tests (the guard's
//! use real ones). Outside its tests the gateway builds no layer: `cliproxy-server`'s
//! `compose.rs` builds them, in the same order, from the loaded configuration.

use std::sync::Arc;

use cliproxy_audit::Metrics;
use cliproxy_netguard::tls::TlsSettings;
use cliproxy_netguard::{
    Admission, Clock, Limits, LocalAdmission, SqliteStore, StateStore, SystemClock,
};
use slog::Logger;

use crate::config::{ConfigError, GatewayConfig};
use crate::error::Result;
use crate::layers::Layers;

/// Every default layer from `config`, with `clock` (a fake one, in the guard's tests) or the
/// system's.
pub(crate) fn build(
    config: &GatewayConfig,
    clock: Option<Arc<dyn Clock>>,
    log: &Logger,
) -> Result<Layers> {
    let clock = clock.unwrap_or_else(SystemClock::shared);
    let providers = config
        .providers
        .0
        .iter()
        .map(|(name, p)| (name.clone(), Limits::new(p.rate_limit, p.quota)));
    let clients = crate::guard::client_limit_table(&config.auth.client_keys()?);
    let admission: Arc<dyn Admission> = Arc::new(LocalAdmission::from_config(
        &config.server.security,
        &config.server.rate_limit,
        providers,
        clients,
        clock.clone(),
    ));
    let tls = TlsSettings::build(&config.server.tls)
        .map_err(|e| ConfigError::new(crate::netguard_error(&e)))?;
    // Opened before the audit log: it holds the log's head anchor.
    let state: Arc<dyn StateStore> = Arc::new(
        SqliteStore::open(&crate::guard::state_config(config))
            .map_err(crate::guard::state_error)?,
    );
    let metrics = Arc::new(Metrics::new(&config.metrics, config.providers.0.keys().cloned()));
    let options = crate::audit_anchor::sink_options(config, &state, log)?;
    let audit_sink = config
        .logging
        .audit
        .build(metrics.clone(), options)
        .map_err(|e| ConfigError::new(crate::audit_anchor::audit_error(&e)))?;
    let credentials = config.auth.build_exclusive()?;
    Ok(Layers { clock, admission, tls, state, metrics, audit_sink, credentials })
}
