//! End-to-end tests: the real `cliproxy-server` binary, started with a temporary config and
//! vault, in front of mock provider APIs on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod audit;
mod audit_anchor;
mod budget;
mod cancelled;
mod client_keys;
mod crash;
mod defaults;
mod disk;
mod endpoints;
mod errors;
mod failover;
mod faults;
mod formats;
mod headers;
mod hostile;
mod leaks;
mod lifecycle;
mod load;
mod log_forging;
mod management;
mod netguard;
mod procfs;
mod redis;
mod revocation;
mod tls;
mod usage;
mod usage_history;
mod vault;
mod vault_lock;
mod webhook;

/// Asserts that none of `secrets` appears in `text`.
fn assert_no_secrets(text: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(!text.contains(secret), "a secret leaked into:\n{text}");
    }
}
