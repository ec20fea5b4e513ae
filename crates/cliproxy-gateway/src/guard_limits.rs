//! The network guard's limits on the request path: the per-IP bucket (step 7), the global
//! buckets once the client key is judged, and per request the provider's and the client
//! key's minute limits and quotas (step 10), held as an [`Admission`] until the reply ends.

use std::net::IpAddr;

use cliproxy_netguard::{Admitted, LimitKind, Limited, QuotaScope, RejectionKind, Reservation};

use crate::guard::Guard;
use crate::refusals::Context;

/// What a proxied request holds from the minute limits until its reply ends: the reserved
/// tokens are settled with the real usage, which is also added to the quotas.
#[derive(Debug)]
pub(crate) struct Admission {
    provider: String,
    client: String,
    provider_minute: Reservation,
    client_minute: Reservation,
    /// The tokens held against each quota while the request runs (its prompt estimate plus
    /// its `max_tokens` or the guard's estimate, capped at the quota's limit; 0 without a
    /// quota), charged when its reply reports no usage.
    provider_quota: u64,
    client_quota: u64,
}

impl Admission {
    /// Settles the reservations with the real usage and counts it against the quotas. A
    /// reply without a usage figure (a stream from an OpenAI-compatible upstream that ignores
    /// `stream_options.include_usage`, a client that hung up) is charged the estimate, prompt
    /// included: unknown usage must not be free. Each limit is charged the estimate as it
    /// held it, capped at that limit (see `Quotas::reserve` and `MinuteLimiter::reserve`), so
    /// that a `max_tokens` of 2^64-1 accepted with validation off costs at most a whole quota
    /// or minute, never more.
    pub(crate) fn settle(self, guard: &Guard, used_tokens: Option<u64>) {
        let charge = |held: u64| used_tokens.unwrap_or(held);
        let provider_minute = charge(self.provider_minute.reserved_tokens());
        self.provider_minute.settle(provider_minute);
        let client_minute = charge(self.client_minute.reserved_tokens());
        self.client_minute.settle(client_minute);
        let (provider, client) = (charge(self.provider_quota), charge(self.client_quota));
        guard.quotas.settle(QuotaScope::Provider, &self.provider, self.provider_quota, provider);
        guard.quotas.settle(QuotaScope::Client, &self.client, self.client_quota, client);
        if let Some(status) = guard.quotas.status(QuotaScope::Provider, &self.provider) {
            guard.audit.metrics().set_quota_remaining(&self.provider, status.remaining);
        }
        // Straight to the state store's queue: its writer commits within one flush interval.
        guard.save_quotas();
    }

    /// Gives everything back for a request that was never sent upstream.
    pub(crate) fn cancel(self, guard: &Guard) {
        self.provider_minute.cancel();
        self.client_minute.cancel();
        guard.quotas.release(QuotaScope::Provider, &self.provider, self.provider_quota);
        guard.quotas.release(QuotaScope::Client, &self.client, self.client_quota);
    }

    /// The client key's requests-per-minute standing, for the `X-RateLimit-*` headers.
    pub(crate) fn headline(&self) -> Option<Admitted> {
        self.client_minute.requests().or(self.provider_minute.requests())
    }
}

impl Guard {
    /// Step 7: the per-IP token bucket, before authentication. On success, its standing for
    /// the `X-RateLimit-*` headers.
    pub(crate) fn admit(&self, ip: IpAddr, request_id: &str) -> Result<Option<Admitted>, Limited> {
        let context = Context { request_id: Some(request_id), ..Context::default() };
        match &self.per_ip {
            Some(limiter) => Ok(Some(limiter.check(ip).inspect_err(|limited| {
                self.reject_in(
                    RejectionKind::PerIpRateLimit,
                    ip,
                    &crate::netguard_keys::limited_message(limited),
                    &context,
                );
            })?)),
            None => Ok(None),
        }
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
        let bucket = if authenticated { &self.global } else { &self.strangers };
        let Some(bucket) = bucket else { return Ok(()) };
        let context = Context { request_id: Some(request_id), ..Context::default() };
        bucket.check().map(drop).inspect_err(|limited| {
            self.reject_in(
                RejectionKind::GlobalRateLimit,
                ip,
                &crate::netguard_keys::limited_message(limited),
                &context,
            );
        })
    }

    /// Step 10: the provider's and the client key's requests and tokens per minute, then
    /// their quotas. Nothing is held when any of them refuses. Each holds the request's
    /// estimate: its prompt (`prompt_tokens`, estimated from the body) and its output cap
    /// (`max_tokens`, or the estimate of a request without one), so that a large prompt with
    /// a tiny output cap holds, and is charged when no usage comes back, what it will really
    /// cost.
    pub(crate) fn admit_request(
        &self,
        ip: IpAddr,
        provider: &str,
        client: &str,
        prompt_tokens: u64,
        max_tokens: Option<u64>,
        request_id: &str,
    ) -> Result<Admission, Limited> {
        let context =
            Context { request_id: Some(request_id), user: Some(client), provider: Some(provider) };
        let refuse = |limited: Limited| {
            let kind = match limited.kind {
                LimitKind::ProviderQuota | LimitKind::ClientQuota => RejectionKind::Quota,
                _ => RejectionKind::MinuteLimit,
            };
            self.reject_in(kind, ip, &crate::netguard_keys::limited_message(&limited), &context);
            limited
        };
        let estimate = prompt_tokens.saturating_add(max_tokens.unwrap_or(self.estimate));
        let provider_minute =
            self.provider_minutes.reserve(provider, Some(estimate)).map_err(refuse)?;
        let client_minute = match self.client_minutes.reserve(client, Some(estimate)) {
            Ok(reservation) => reservation,
            Err(limited) => {
                provider_minute.cancel();
                return Err(refuse(limited));
            }
        };
        let provider_quota = match self.quotas.reserve(QuotaScope::Provider, provider, estimate) {
            Ok(held) => held,
            Err(limited) => {
                provider_minute.cancel();
                client_minute.cancel();
                return Err(refuse(limited));
            }
        };
        let client_quota = match self.quotas.reserve(QuotaScope::Client, client, estimate) {
            Ok(held) => held,
            Err(limited) => {
                provider_minute.cancel();
                client_minute.cancel();
                self.quotas.release(QuotaScope::Provider, provider, provider_quota);
                return Err(refuse(limited));
            }
        };
        Ok(Admission {
            provider: provider.to_owned(),
            client: client.to_owned(),
            provider_minute,
            client_minute,
            provider_quota,
            client_quota,
        })
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
            let admission = guard.admit_request(ip, "p", "alice", 10, None, "r1").unwrap();
            let held = admission.client_quota;
            admission.settle(&guard, Some(0));
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
