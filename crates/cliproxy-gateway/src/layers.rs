//! [`Layers`]: what the gateway is composed of, each layer behind its trait. The gateway
//! takes them ([`Gateway::from_parts`](crate::Gateway::from_parts)) and builds none; the
//! binary builds them from their config sections (`cliproxy-server`'s `compose.rs`).

use std::sync::Arc;

use cliproxy_audit::{AuditSink, Metrics};
use cliproxy_netguard::tls::TlsSettings;
use cliproxy_netguard::{Admission, Clock, StateStore};
use cliproxy_vault::CredentialStore;

/// The layers a [`Gateway`](crate::Gateway) is composed of, each behind its trait, so that
/// any implementation can be handed in (another state store, an in-memory vault in a test).
/// The gateway only uses them: it opens, locks and creates nothing of its own.
pub struct Layers {
    /// The clock of the network guard's limiters, quota periods, denylist expiry and the
    /// audit layer's alert windows.
    pub clock: Arc<dyn Clock>,
    /// The listener's TLS (`server.tls`), or `None` for plain HTTP.
    pub tls: Option<TlsSettings>,
    /// The network guard's limit decisions: the per-IP and global buckets, the minute
    /// limits and quotas of providers and client keys. Its quota counts are seeded from
    /// `state` at start and handed back to it as they change.
    pub admission: Arc<dyn Admission>,
    /// Where quota usage, the runtime denylist, management bans and the audit log's head
    /// anchor survive restarts.
    pub state: Arc<dyn StateStore>,
    /// The metrics registry the audit sink reports to and the metrics listener renders.
    pub metrics: Arc<Metrics>,
    /// Where audit events are written; `None` when the audit log is off (events are still
    /// counted in `metrics`).
    pub audit_sink: Option<Arc<dyn AuditSink>>,
    /// The provider credentials. The default store holds its directory's exclusive lock for
    /// the gateway's life.
    pub credentials: Arc<dyn CredentialStore>,
}

impl std::fmt::Debug for Layers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Layers")
            .field("tls", &self.tls.is_some())
            .field("admission", &self.admission)
            .field("state", &self.state.describe())
            .field("audit_sink", &self.audit_sink)
            .field("credentials", &self.credentials.location())
            .finish_non_exhaustive()
    }
}
