//! Prometheus metrics with help texts, useful histogram buckets and bounded labels.
//!
//! STUB: being written (helper B). Public signatures below are the contract.

use std::net::IpAddr;
use std::time::Duration;

use crate::config::MetricsConfig;
use crate::event::EventType;

/// Every metric of SPEC §6, on a recorder of its own (not the global one, so that several
/// gateways in one process keep their own figures).
#[derive(Debug)]
pub struct Metrics {}

#[allow(missing_docs, unused_variables, reason = "stub")]
impl Metrics {
    pub fn new(config: &MetricsConfig, providers: impl IntoIterator<Item = String>) -> Self {
        Self {}
    }
    pub fn auth_failure(&self, provider: Option<&str>) {}
    pub fn rate_limit_violation(&self, ip: IpAddr) {}
    pub fn security_event(&self, event_type: EventType) {}
    pub fn request(&self, provider: &str, status: u16, duration: Duration) {}
    pub fn upstream(&self, provider: &str, duration: Duration) {}
    pub fn tokens(&self, provider: &str, input: u64, output: u64) {}
    pub fn set_blocked_ips(&self, count: usize) {}
    pub fn set_quota_remaining(&self, provider: &str, remaining: u64) {}
    pub fn connection_opened(&self) {}
    pub fn connection_closed(&self) {}
    pub fn alert_fired(&self, rule: &str) {}
    pub fn audit_write_failed(&self) {}
    pub fn audit_events_dropped(&self, count: u64) {}
    pub fn set_audit_healthy(&self, healthy: bool) {}
    pub fn render(&self) -> String {
        String::new()
    }
}
