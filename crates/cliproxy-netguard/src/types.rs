//! The records the guard keeps across restarts, shared by the limiters, the IP filter and the
//! [`crate::StateStore`].

use std::net::IpAddr;

use cliproxy_core::QuotaPeriod;
use ipnetwork::IpNetwork;
use serde::Serialize;

/// Whose quota a usage figure belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QuotaScope {
    /// `providers.<name>.quota`.
    Provider,
    /// `auth.api_keys[N].quota`, by the key's name.
    Client,
    /// `auth.api_keys[N].budget`, by the key's name: its figures are micro-dollars, not
    /// tokens.
    #[serde(rename = "client_budget")]
    Budget,
}

impl QuotaScope {
    /// The name stored in the database and shown in messages.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Provider => "provider",
            Self::Client => "client",
            // A scope text of its own in the same table: rows written before budgets existed
            // read as they did, and a budget's micro-dollars never mix with a quota's tokens.
            Self::Budget => "client_budget",
        }
    }

    /// Parses [`QuotaScope::as_str`].
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "provider" => Some(Self::Provider),
            "client" => Some(Self::Client),
            "client_budget" => Some(Self::Budget),
            _ => None,
        }
    }
}

/// Tokens used by one provider or client key in one quota period, or (scope
/// [`QuotaScope::Budget`]) micro-dollars spent by one client key in one budget period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QuotaUsage {
    /// Provider or client key.
    pub scope: QuotaScope,
    /// The provider's or the client key's name.
    pub name: String,
    /// The period kind the count is for.
    pub period: QuotaPeriod,
    /// Unix seconds at which the period started (UTC).
    pub period_start: u64,
    /// Tokens used so far in the period, or micro-dollars spent for a budget (an absolute
    /// count, so writing it twice is harmless).
    pub tokens: u64,
}

/// A runtime denylist entry (added through the management API or by an alert rule).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DenyEntry {
    /// The address or range refused. A single address is a /32 or /128.
    pub network: IpNetwork,
    /// Why, as given by whoever added it.
    pub reason: String,
    /// Unix seconds when it was added.
    pub created_at: u64,
    /// Unix seconds after which it no longer applies; `None` for never.
    pub expires_at: Option<u64>,
}

impl DenyEntry {
    /// Whether the entry still applies at `now` (Unix seconds).
    pub fn is_active(&self, now: u64) -> bool {
        self.expires_at.is_none_or(|at| now < at)
    }
}

/// A management-API ban of one peer address after too many failed keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Ban {
    /// The banned client: the TCP peer, or behind a trusted proxy the client it names.
    pub ip: IpAddr,
    /// Unix seconds when the ban ends.
    pub until: u64,
}

/// A client key created at run time, as the state store keeps it: the store does not know the
/// record's fields (they belong to the vault, and no layer crate depends on another), only its
/// id, the key's digest (its own column, so that a shared store can look a key up by it) and
/// the record as versioned JSON text, which the vault writes and reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredClientKey {
    /// The record's id (random, not derived from the key); one row per id.
    pub id: String,
    /// The SHA-256 digest of the key, 64 lowercase hex digits. Never the key itself.
    pub digest: String,
    /// The whole record as JSON text, opaque to the store.
    pub record_json: String,
}

/// Seconds in one bucket of the usage history.
pub const USAGE_BUCKET_SECS: u64 = 3600;

/// What the usage history counts for one row: requests, errors, tokens by kind and cost.
/// Every field is a count that only adds up, so that rows from several writers (two gateways
/// on one state, a batch retried after a failed write) are merged by summing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct UsageCounts {
    /// Requests that reached a provider (answered or not).
    pub requests: u64,
    /// Those of them that ended in an error (a status of 400 or more, or a failed body).
    pub errors: u64,
    /// Prompt tokens, the cached ones included.
    pub input_tokens: u64,
    /// Generated tokens.
    pub output_tokens: u64,
    /// Prompt tokens read from the provider's cache (a part of `input_tokens`).
    pub cache_read_tokens: u64,
    /// Prompt tokens written to the provider's cache (a part of `input_tokens`).
    pub cache_write_tokens: u64,
    /// The cost of the priced requests, in micro-dollars.
    pub cost_micros: u64,
    /// Requests whose cost is unknown (an unpriced model, or no usage reported): their tokens
    /// are counted, their cost is not, and they are never shown as free.
    pub unpriced_requests: u64,
}

impl UsageCounts {
    /// Adds `other` field by field, saturating (a count never wraps to a small number).
    pub fn add(&mut self, other: &Self) {
        self.requests = self.requests.saturating_add(other.requests);
        self.errors = self.errors.saturating_add(other.errors);
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
        self.cache_read_tokens = self.cache_read_tokens.saturating_add(other.cache_read_tokens);
        self.cache_write_tokens = self.cache_write_tokens.saturating_add(other.cache_write_tokens);
        self.cost_micros = self.cost_micros.saturating_add(other.cost_micros);
        self.unpriced_requests = self.unpriced_requests.saturating_add(other.unpriced_requests);
    }
}

/// One row of the usage history: what one client key did with one model of one provider in
/// one hour. As a [`crate::StateChange::UsageAdd`] it is a delta, added to the stored row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageRow {
    /// Unix seconds at which the hour started (UTC), a multiple of [`USAGE_BUCKET_SECS`].
    pub hour: u64,
    /// The client key's name.
    pub client: String,
    /// The provider's name.
    pub provider: String,
    /// The model the client asked for.
    pub model: String,
    /// The counts.
    pub counts: UsageCounts,
}

/// Normalises an address for matching and keying: an IPv4-mapped IPv6 address
/// (`::ffff:10.0.0.1`) becomes the IPv4 address it carries, so IPv4 rules match it.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// Normalises a network the same way: `::ffff:10.0.0.0/104` becomes `10.0.0.0/8`.
pub fn canonical_network(network: IpNetwork) -> IpNetwork {
    match network {
        IpNetwork::V6(v6) if v6.prefix() >= 96 => match v6.network().to_ipv4_mapped() {
            Some(v4) => ipnetwork::Ipv4Network::new(v4, v6.prefix() - 96)
                .map(IpNetwork::V4)
                .unwrap_or(network),
            None => network,
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_addresses_and_networks_become_ipv4() {
        let ip: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(canonical_ip(ip), "10.1.2.3".parse::<IpAddr>().unwrap());
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(canonical_ip(v6), v6);
        let net: IpNetwork = "::ffff:10.0.0.0/104".parse().unwrap();
        assert_eq!(canonical_network(net), "10.0.0.0/8".parse::<IpNetwork>().unwrap());
        let net: IpNetwork = "2001:db8::/32".parse().unwrap();
        assert_eq!(canonical_network(net), net);
    }

    #[test]
    fn deny_entries_expire() {
        let entry = DenyEntry {
            network: "10.0.0.1/32".parse().unwrap(),
            reason: "test".to_owned(),
            created_at: 100,
            expires_at: Some(200),
        };
        assert!(entry.is_active(199));
        assert!(!entry.is_active(200));
    }
}
