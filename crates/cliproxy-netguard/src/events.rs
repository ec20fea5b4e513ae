//! What the guard refused, counted per kind. The gateway hands each refusal to the audit
//! layer as a `security_violation` event (logged until that layer exists); the counts are
//! shown by `GET /v0/management/status` and become metrics.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// The kinds of refusal, one counter each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RejectionKind {
    /// A connection closed at accept: the peer is denied by the IP filter.
    IpDeniedConnection,
    /// A request refused with 403: the client address behind a trusted proxy is denied.
    IpDeniedRequest,
    /// A connection closed at accept: `server.limits.max_connections` reached.
    ConnectionLimit,
    /// A TLS handshake that failed or timed out.
    TlsHandshake,
    /// 503 while in maintenance.
    Maintenance,
    /// 429 from the per-IP token bucket.
    PerIpRateLimit,
    /// 429 from the global token bucket.
    GlobalRateLimit,
    /// 429 from a provider's or a client key's requests or tokens per minute.
    MinuteLimit,
    /// 429 from a token quota.
    Quota,
    /// 400 from request validation.
    InvalidRequest,
    /// 429 from a client key's spending budget (or 403 for a budgeted key asking for an
    /// unpriced model). Not a violation line per refusal: the gateway files one
    /// `security_violation` (rule `budget`) per key and budget period.
    Budget,
}

impl RejectionKind {
    /// Every kind, in a fixed order.
    pub const ALL: [Self; 11] = [
        Self::IpDeniedConnection,
        Self::IpDeniedRequest,
        Self::ConnectionLimit,
        Self::TlsHandshake,
        Self::Maintenance,
        Self::PerIpRateLimit,
        Self::GlobalRateLimit,
        Self::MinuteLimit,
        Self::Quota,
        Self::InvalidRequest,
        Self::Budget,
    ];

    /// The snake_case name used in logs, audit details and metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::IpDeniedConnection => "ip_denied_connection",
            Self::IpDeniedRequest => "ip_denied_request",
            Self::ConnectionLimit => "connection_limit",
            Self::TlsHandshake => "tls_handshake",
            Self::Maintenance => "maintenance",
            Self::PerIpRateLimit => "per_ip_rate_limit",
            Self::GlobalRateLimit => "global_rate_limit",
            Self::MinuteLimit => "minute_limit",
            Self::Quota => "quota",
            Self::InvalidRequest => "invalid_request",
            Self::Budget => "budget",
        }
    }

    /// Whether the refusal is a security violation (as opposed to load shedding or a client
    /// mistake); the audit layer files these as `security_violation`.
    pub const fn is_violation(self) -> bool {
        matches!(
            self,
            Self::IpDeniedConnection
                | Self::IpDeniedRequest
                | Self::PerIpRateLimit
                | Self::GlobalRateLimit
                | Self::MinuteLimit
                | Self::Quota
        )
    }

    /// The kind's position in [`RejectionKind::ALL`], for per-kind tables.
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// One counter per [`RejectionKind`].
#[derive(Debug, Default)]
pub struct Counters {
    counts: [AtomicU64; RejectionKind::ALL.len()],
}

impl Counters {
    /// Counts one refusal.
    pub fn record(&self, kind: RejectionKind) {
        self.counts[kind.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// The count for one kind.
    pub fn get(&self, kind: RejectionKind) -> u64 {
        self.counts[kind.index()].load(Ordering::Relaxed)
    }

    /// Every count, by name.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        RejectionKind::ALL.iter().map(|kind| (kind.as_str(), self.get(*kind))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_has_its_own_counter() {
        let counters = Counters::default();
        counters.record(RejectionKind::Quota);
        counters.record(RejectionKind::Quota);
        counters.record(RejectionKind::InvalidRequest);
        assert_eq!(counters.get(RejectionKind::Quota), 2);
        assert_eq!(counters.get(RejectionKind::InvalidRequest), 1);
        let snapshot = counters.snapshot();
        assert_eq!(snapshot.len(), RejectionKind::ALL.len());
        assert!(snapshot.contains(&("quota", 2)));
        for (index, kind) in RejectionKind::ALL.iter().enumerate() {
            assert_eq!(kind.index(), index);
        }
    }
}
