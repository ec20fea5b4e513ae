//! Alert rules: sliding-window counts of a metric, per address for `block_ip`.
//!
//! STUB: being written (helper B). Public signatures below are the contract.

use std::net::IpAddr;
use std::time::Duration;

use crate::config::{AlertAction, AlertMetric, AlertRule};

/// A rule that fired, for the caller to act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fired {
    /// The rule's name.
    pub rule: String,
    /// What to do.
    pub action: AlertAction,
    /// The offending address (always set for `block_ip`).
    pub ip: Option<IpAddr>,
    /// Events counted within the window when it fired.
    pub count: u64,
    /// The rule's window.
    pub window: Duration,
    /// `block_ip`: how long to block.
    pub block_for: Duration,
    /// `notify_admin`: the webhook URL and its timeout.
    pub webhook: Option<(String, Duration)>,
}

/// The alert rules and their windows.
#[derive(Debug)]
pub struct Alerts {}

#[allow(missing_docs, unused_variables, reason = "stub")]
impl Alerts {
    pub fn new(rules: Vec<AlertRule>) -> Self {
        Self {}
    }
    pub fn replace(&self, rules: Vec<AlertRule>) {}
    pub fn observe(&self, metric: AlertMetric, ip: Option<IpAddr>, now_millis: u64) -> Vec<Fired> {
        Vec::new()
    }
}
