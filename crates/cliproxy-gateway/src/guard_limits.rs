//! The network guard's limits on the request path, asked of the [`Admission`] the binary
//! composed: the per-IP bucket (step 7), the global buckets once the client key is judged,
//! and per request the provider's and the client key's minute limits and quotas (step 10),
//! held as a [`Ticket`] until the finishing stage settles or cancels it. Each refusal is
//! filed here (`refusals.rs`), with the config key that sets the limit.

use std::net::IpAddr;

use cliproxy_netguard::{Admitted, Caller, LimitKind, Limited, RejectionKind, Ticket};

use crate::guard::Guard;
use crate::refusals::Context;

impl Guard {
    /// Step 7: the per-IP token bucket, before authentication. On success, its standing for
    /// the `X-RateLimit-*` headers.
    pub(crate) fn admit(&self, ip: IpAddr, request_id: &str) -> Result<Option<Admitted>, Limited> {
        self.admission.check_ip(ip).inspect_err(|limited| {
            let context = Context { request_id: Some(request_id), ..Context::default() };
            self.reject_in(
                RejectionKind::PerIpRateLimit,
                ip,
                &crate::netguard_keys::limited_message(limited),
                &context,
            );
        })
    }

    /// Once the client key is judged (between steps 7 and 10): the global token bucket of the
    /// keyed requests when `authenticated`, else the strangers' bucket of the same size.
    /// Charged after authentication so that requests without a valid key, from however many
    /// addresses, cannot spend the budget of the clients that have one (issue 18); it is
    /// still one atomic operation on the request path.
    pub(crate) fn admit_global(
        &self,
        ip: IpAddr,
        request_id: &str,
        authenticated: bool,
    ) -> Result<(), Limited> {
        let caller = if authenticated { Caller::Keyed } else { Caller::Stranger };
        self.admission.check_global(caller).inspect_err(|limited| {
            let context = Context { request_id: Some(request_id), ..Context::default() };
            self.reject_in(
                RejectionKind::GlobalRateLimit,
                ip,
                &crate::netguard_keys::limited_message(limited),
                &context,
            );
        })
    }

    /// Step 10: the provider's and the client key's requests and tokens per minute, then
    /// their quotas, in one call: nothing is held when any of them refuses. Each holds the
    /// request's estimate: its prompt (`prompt_tokens`, estimated from the body) and its
    /// output cap (`max_tokens`, or the admission's estimate of a request without one), so
    /// that a large prompt with a tiny output cap holds, and is charged when no usage comes
    /// back, what it will really cost.
    pub(crate) fn admit_request(
        &self,
        ip: IpAddr,
        provider: &str,
        client: &str,
        prompt_tokens: u64,
        max_tokens: Option<u64>,
        request_id: &str,
    ) -> Result<Ticket, Limited> {
        self.admission.reserve(provider, client, prompt_tokens, max_tokens).inspect_err(|limited| {
            let context = Context {
                request_id: Some(request_id),
                user: Some(client),
                provider: Some(provider),
            };
            let kind = match limited.kind {
                LimitKind::ProviderQuota | LimitKind::ClientQuota => RejectionKind::Quota,
                _ => RejectionKind::MinuteLimit,
            };
            self.reject_in(kind, ip, &crate::netguard_keys::limited_message(limited), &context);
        })
    }

    /// Settles a ticket with the real usage, which the admission also adds to the quotas. A
    /// reply without a usage figure (a stream from an OpenAI-compatible upstream that
    /// ignores `stream_options.include_usage`, a client that hung up) is charged the
    /// estimate, prompt included: unknown usage must not be free.
    pub(crate) fn settle(&self, ticket: Ticket, used_tokens: Option<u64>) {
        let settled = self.admission.settle(ticket, used_tokens);
        if let Some(status) = settled.provider_quota {
            self.audit.metrics().set_quota_remaining(&settled.provider, status.remaining);
        }
        // Straight to the state store's queue: its writer commits within one flush interval.
        self.save_quotas();
    }

    /// Gives everything a ticket held back, for a request that was never sent upstream.
    pub(crate) fn cancel(&self, ticket: Ticket) {
        self.admission.cancel(ticket);
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::sync::Arc;

    use cliproxy_netguard::FakeClock;
    use slog::Logger;

    use super::*;
    use crate::config::GatewayConfig as Config;

    /// A guard with a global bucket of 2 requests refilled at one a second, on a fake clock.
    fn guard_with_a_global_burst_of_two(dir: &std::path::Path) -> (Guard, Arc<FakeClock>) {
        let yaml = format!(
            "server:\n  rate_limit: {{enabled: true, requests_per_second: 1, burst: 2}}\n\
             auth:\n  dir: {dir:?}\n  api_keys: [{{name: alice, key: \"cpk-guard-unit-test-key-5e1f\"}}]\n",
            dir = dir.display().to_string(),
        );
        let config = Config::from_yaml(&yaml).unwrap();
        let clock = FakeClock::at_unix(1_800_000_000);
        let log = Logger::root(slog::Discard, slog::o!());
        (Guard::build(&config, Some(clock.clone()), &log).unwrap(), clock)
    }

    #[test]
    fn strangers_spend_their_own_bucket_not_the_keyed_clients_one() {
        let dir = tempfile::tempdir().unwrap();
        let (guard, clock) = guard_with_a_global_burst_of_two(dir.path());
        // Each stranger comes from another address: the per-IP bucket (off here) plays no part.
        let stranger = |n: u8| IpAddr::V4(Ipv4Addr::new(198, 51, 100, n));
        assert!(guard.admit_global(stranger(1), "s1", false).is_ok());
        assert!(guard.admit_global(stranger(2), "s2", false).is_ok());
        let refused = guard.admit_global(stranger(3), "s3", false).unwrap_err();
        assert_eq!(refused.kind, LimitKind::Global);
        // The keyed clients' bucket is whole: both requests of its burst are admitted.
        let client = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1));
        assert!(guard.admit_global(client, "c1", true).is_ok());
        assert!(guard.admit_global(client, "c2", true).is_ok());
        assert_eq!(guard.admit_global(client, "c3", true).unwrap_err().kind, LimitKind::Global);
        // Both buckets refill on their own.
        clock.advance(std::time::Duration::from_secs(1));
        assert!(guard.admit_global(stranger(4), "s4", false).is_ok());
        assert!(guard.admit_global(client, "c4", true).is_ok());
        assert_eq!(guard.counters.get(RejectionKind::GlobalRateLimit), 2);
    }

    /// What a request without `max_tokens` holds against a quota: its prompt plus
    /// `DEFAULT_TOKEN_ESTIMATE`, or the validation cap when it is lower; never the cap sized
    /// for coding clients (nor an unbounded figure), which would fill a key's limits with a
    /// few such requests.
    #[test]
    fn a_request_without_max_tokens_holds_the_default_estimate_or_a_lower_cap() {
        let held = |validation: &str| {
            let dir = tempfile::tempdir().unwrap();
            let yaml = format!(
                "server: {{security: {{request_validation: {validation}}}}}\n\
                 auth:\n  dir: {dir:?}\n  api_keys: [{{name: alice, key: \"cpk-guard-unit-test-key-5e1f\", \
                 quota: {{limit: 10000000, reset: daily}}}}]\n",
                dir = dir.path().display().to_string(),
            );
            let config = Config::from_yaml(&yaml).unwrap();
            let clock = FakeClock::at_unix(1_800_000_000);
            let log = Logger::root(slog::Discard, slog::o!());
            let guard = Guard::build(&config, Some(clock), &log).unwrap();
            let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
            let ticket = guard.admit_request(ip, "p", "alice", 10, None, "r1").unwrap();
            let held = ticket.quota_held(cliproxy_netguard::QuotaScope::Client);
            guard.settle(ticket, Some(0));
            held
        };
        assert_eq!(held("{enabled: true}"), 10 + cliproxy_netguard::DEFAULT_TOKEN_ESTIMATE);
        assert_eq!(
            held("{enabled: true, max_tokens: 128000}"),
            10 + cliproxy_netguard::DEFAULT_TOKEN_ESTIMATE
        );
        assert_eq!(held("{enabled: true, max_tokens: 1000}"), 10 + 1000);
    }
}
