//! The network guard's limits on the request path, asked of the [`Admission`] the binary
//! composed: the per-IP bucket (step 7), the global buckets once the client key is judged,
//! and per request the provider's and the client key's minute limits and quotas (step 10),
//! held as a [`Ticket`] until the finishing stage settles or cancels it, with the client
//! key's budget. Each refusal is filed here (`refusals.rs`), with the config key that sets
//! the limit; a spent budget is also audited once per key and period (`budget_exhausted`).

use std::net::IpAddr;
use std::sync::PoisonError;

use cliproxy_audit::{Event, What};
use cliproxy_netguard::{
    Admitted, Caller, Demand, LimitKind, Limited, QuotaScope, RejectionKind, Ticket, Used,
};

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

    /// Step 10: the provider's and the client key's requests and tokens per minute, their
    /// quotas, then the key's budget, in one call: nothing is held when any of them
    /// refuses. Each holds the request's estimate: its prompt (`demand.prompt_tokens`,
    /// estimated from the body) and its output cap (`max_tokens`, or the admission's
    /// estimate of a request without one), so that a large prompt with a tiny output cap
    /// holds, and is charged when no usage comes back, what it will really cost; the budget
    /// holds that estimate's cost under the routed model's price.
    pub(crate) fn admit_request(
        &self,
        ip: IpAddr,
        provider: &str,
        client: &str,
        demand: Demand,
        request_id: &str,
    ) -> Result<Ticket, Limited> {
        // An admission shared by several instances charges the client's per-IP bucket in the
        // same round trip (the local one charged it at step 7 already and ignores it).
        let demand = demand.with_client_ip(ip);
        self.admission.reserve(provider, client, demand).inspect_err(|limited| {
            // Not a refusal of the client: the shared state store is down (`deny`), which
            // the state store's health reports (log, status, metric) once, not per request.
            if limited.kind == LimitKind::SharedState {
                return;
            }
            let context = Context {
                request_id: Some(request_id),
                user: Some(client),
                provider: Some(provider),
            };
            let detail = crate::netguard_keys::limited_message(limited);
            let kind = match limited.kind {
                LimitKind::ProviderQuota | LimitKind::ClientQuota => RejectionKind::Quota,
                LimitKind::ClientBudget => {
                    self.budget_exhausted(ip, client, limited, &detail, &context);
                    RejectionKind::Budget
                }
                LimitKind::Unpriced => RejectionKind::Budget,
                _ => RejectionKind::MinuteLimit,
            };
            self.reject_in(kind, ip, &detail, &context);
        })
    }

    /// The `security_violation` (rule `budget`) of a key whose budget is spent: written
    /// once per key and budget period, at its first refused request, however many follow
    /// (they are counted as `budget` refusals). A spent budget is worth one line to an
    /// operator; a client retrying in a loop must not write one per request.
    fn budget_exhausted(
        &self,
        ip: IpAddr,
        client: &str,
        limited: &Limited,
        detail: &str,
        context: &Context<'_>,
    ) {
        let period = limited.resets_at.unwrap_or_default();
        {
            let mut filed = self.budgets_filed.lock().unwrap_or_else(PoisonError::into_inner);
            if filed.get(client) == Some(&period) {
                return;
            }
            // Keys are few and named, yet the book stays bounded whatever a table holds:
            // entries of ended periods go first, and past the cap the book starts over (a
            // key may then be filed twice in one period, never lost).
            if filed.len() >= MAX_BUDGET_KEYS {
                let now = self.clock.unix_seconds();
                filed.retain(|_, resets_at| *resets_at > now);
                if filed.len() >= MAX_BUDGET_KEYS {
                    filed.clear();
                }
            }
            filed.insert(client.to_owned(), period);
        }
        let mut event = Event::new(What::SecurityViolation {
            rule: BUDGET_RULE,
            rate_limit: false,
            detail: detail.to_owned(),
            repeats: 0,
        })
        .ip(ip);
        event.request_id = context.request_id.map(str::to_owned);
        event.user_id = Some(client.to_owned());
        event.provider = context.provider.map(str::to_owned);
        self.emit(event);
    }

    /// Settles a ticket with the real usage and cost, which the admission also adds to the
    /// quotas and the budget. A reply without a usage figure (a stream from an
    /// OpenAI-compatible upstream that ignores `stream_options.include_usage`, a client that
    /// hung up) is charged the estimate, prompt included: unknown usage must not be free.
    pub(crate) fn settle(&self, ticket: Ticket, used: Used) {
        let settled = self.admission.settle(ticket, used);
        if let Some(status) = settled.provider_quota {
            self.audit.metrics().set_quota_remaining(&settled.provider, status.remaining);
        }
        if let Some(status) = settled.client_budget {
            self.audit.metrics().set_client_budget_remaining(&settled.client, status.remaining);
        }
        // Straight to the state store's queue: its writer commits within one flush interval.
        self.save_quotas();
    }

    /// Gives everything a ticket held back, for a request that was never sent upstream.
    pub(crate) fn cancel(&self, ticket: Ticket) {
        self.admission.cancel(ticket);
    }

    /// Shows the budget left of each of these client keys that has one (at start, after the
    /// stored spend was seeded, and when keys change), so that the gauge is right before
    /// the key's next request.
    pub(crate) fn show_budgets<'a>(&self, names: impl IntoIterator<Item = &'a str>) {
        for name in names {
            if let Some(status) = self.admission.quota_status(QuotaScope::Budget, name) {
                self.audit.metrics().set_client_budget_remaining(name, status.remaining);
            }
        }
    }
}

/// The rule of the `security_violation` filed when a client key's budget is spent.
pub(crate) const BUDGET_RULE: &str = "budget";

/// Most client keys the once-per-period book of spent budgets remembers.
const MAX_BUDGET_KEYS: usize = 4096;

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
            let ticket =
                guard.admit_request(ip, "p", "alice", Demand::new(10, None), "r1").unwrap();
            let held = ticket.quota_held(cliproxy_netguard::QuotaScope::Client);
            guard.settle(ticket, Used::nothing());
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
