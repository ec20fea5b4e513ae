//! The throttle of client keys that keep making credentials rest, as the guard files it
//! (the counting is `abuse.rs`): the line when a key is throttled, each refusal of a
//! throttled key, and the summaries of the refusals counted but not written.

use std::net::IpAddr;

use cliproxy_audit::{Event, What};
use cliproxy_core::ErrorCode;
use slog::warn;

use crate::error::ApiError;
use crate::guard::Guard;
use crate::refusals::SUMMARY_DETAIL;

/// The throttle of client keys that keep making credentials rest (`crate::abuse`).
impl Guard {
    /// Notes that a request of client key `client` (from `ip`) made a credential rest; past
    /// `server.security.cooldown_abuse.max_per_window` within its window the key is
    /// throttled, which is logged and audited once.
    pub(crate) fn cooldown_caused(&self, client: &str, ip: IpAddr, request_id: &str) {
        let now = self.clock.monotonic_nanos() / 1_000_000;
        let Some(count) = self.cooldown_abuse.record(client, now) else { return };
        let config = &self.cooldown_abuse.config;
        let window = humantime::format_duration(config.window).to_string();
        let throttle_for = humantime::format_duration(config.throttle_for).to_string();
        warn!(self.log, "client key throttled: its requests keep making credentials rest";
            "event_type" => "security_violation", "rule" => crate::abuse::RULE, "client" => client,
            "ip" => ip.to_string(), "cooldowns" => count, "window" => &window,
            "throttle_for" => &throttle_for);
        let event = Event::new(What::SecurityViolation {
            rule: crate::abuse::RULE,
            rate_limit: false,
            detail: format!(
                "client key `{client}` caused {count} credential cool-downs within {window}; refused for {throttle_for} (server.security.cooldown_abuse)"
            ),
            repeats: 0,
        })
        .ip(ip)
        .request_id(request_id)
        .user(client);
        self.emit(event);
    }

    /// Refuses a request of a throttled client key with 429 and `Retry-After`, counting the
    /// refusal (metrics, alert rules) and writing its line at most once per key and second.
    pub(crate) fn cooldown_throttle(
        &self,
        client: &str,
        ip: IpAddr,
        request_id: &str,
    ) -> Result<(), ApiError> {
        let now = self.clock.monotonic_nanos() / 1_000_000;
        let (wait, line) =
            match self.cooldown_abuse.check(client, ip, now, self.clock.unix_seconds()) {
                Ok(()) => return Ok(()),
                Err(refused) => refused,
            };
        let event = Event::new(What::SecurityViolation {
            rule: crate::abuse::RULE,
            rate_limit: false,
            detail: format!("client key `{client}` is throttled (server.security.cooldown_abuse)"),
            repeats: line.unwrap_or(0),
        })
        .ip(ip)
        .request_id(request_id)
        .user(client);
        match line {
            Some(_) => self.emit(event),
            None => self.count(&event),
        }
        let config = &self.cooldown_abuse.config;
        Err(ApiError::new(
            ErrorCode::RateLimited,
            format!(
                "client key `{client}` made the gateway's credentials rest more than {} times within {} and is refused for {} (server.security.cooldown_abuse)",
                config.max_per_window,
                humantime::format_duration(config.window),
                humantime::format_duration(config.throttle_for),
            ),
        )
        .retry_after(wait))
    }

    /// Writes one line per throttled key for the refusals counted but not written in the
    /// seconds before `second` (the housekeeping beat gives the current one, the shutdown
    /// `u64::MAX`).
    pub(crate) fn write_cooldown_abuse_summaries(&self, second: u64) {
        let now = self.clock.monotonic_nanos() / 1_000_000;
        for (client, ip, repeats) in self.cooldown_abuse.take_pending(now, second) {
            let mut event = Event::new(What::SecurityViolation {
                rule: crate::abuse::RULE,
                rate_limit: false,
                detail: SUMMARY_DETAIL.to_owned(),
                repeats,
            })
            .user(client);
            event.ip = ip;
            // Counted already, one by one: only the line.
            self.audit.write(&event);
        }
    }
}
