//! [`Admission`]: the limit decisions of the request path behind one trait, and
//! [`LocalAdmission`], the implementation that keeps every bucket, minute limit and quota in
//! this process's memory.
//!
//! The trait is the seam for gateways that share their limits: several instances behind a
//! load balancer must agree on the per-IP and global buckets, the minute limits and the
//! quotas, so an implementation over a shared store (Redis) replaces [`LocalAdmission`]
//! without the caller changing. That shapes it:
//!
//! - every decision that must agree across instances is one method, and each call is one
//!   atomic decision: [`Admission::reserve`] takes the provider's and the client key's
//!   minute limits and quotas all at once or none of them, so no caller splits a
//!   read-modify-write over two calls (which two instances could interleave);
//! - what a request holds comes back as an owned [`Ticket`], and only the implementation
//!   that issued it settles ([`Admission::settle`]) or cancels ([`Admission::cancel`]) it, in
//!   one call each;
//! - the upkeep a caller runs on its own beat (idle buckets, quota counts for the state
//!   store, stored counts at start-up, client-key limits on reload) goes through it too, so
//!   that an implementation whose store keeps the counts itself can make it a no-op.
//!
//! The IP filter ([`IpFilter`](crate::IpFilter)) is not part of it: it is not a limit but a
//! list, checked at accept before a byte is read (where there is no request yet), fed by the
//! state store's runtime denylist and management bans, and changed by alerts and the
//! management API. Shared across instances it travels as list changes (the state store and
//! its pub/sub), not as decisions, so it stays a part of its own.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use cliproxy_core::{Budget, Quota, RateLimit};

use crate::clock::Clock;
use crate::config::{GlobalRateLimitConfig, SecurityConfig};
use crate::error::{Error, Result};
use crate::quota::{QuotaStatus, Quotas};
use crate::ratelimit::{
    Admitted, DEFAULT_TOKEN_ESTIMATE, GlobalRateLimiter, IpRateLimiter, Limited, MinuteLimiter,
    Reservation,
};
use crate::types::{QuotaScope, QuotaUsage};

/// The limit decisions of a request path (`SPEC.md` §2, steps 7 and 10), in the order a
/// service asks them: the per-IP bucket ([`Admission::check_ip`]) before authentication,
/// the global bucket once the caller is known to hold a valid key or not
/// ([`Admission::check_global`]), and the provider's and client key's minute limits and
/// quotas ([`Admission::reserve`]) once the request is known to go out, held as a [`Ticket`]
/// until the reply tells the real usage. See the [module](self) for why it has this shape.
///
/// Object safe: a service holds it as `Arc<dyn Admission>`.
pub trait Admission: Send + Sync + fmt::Debug {
    /// The per-IP token bucket: one request from `ip` (IPv6 by its /64). `Ok(None)` when
    /// there is no per-IP limit; on success, the bucket's standing for the `X-RateLimit-*`
    /// headers.
    fn check_ip(&self, ip: IpAddr) -> Result<Option<Admitted>, Limited>;

    /// The global token bucket: one request from a caller with a valid key
    /// ([`Caller::Keyed`]), or one from a caller without ([`Caller::Stranger`]), which draws
    /// on a bucket of its own so that strangers cannot spend what keyed clients need.
    fn check_global(&self, caller: Caller) -> Result<(), Limited>;

    /// Takes one request and holds its estimate — `prompt_tokens` plus `max_tokens`, or the
    /// implementation's estimate of a request without one — against the requests and tokens
    /// per minute and the quotas of `provider` and `client`. All of them are held or, when
    /// any refuses, none is.
    fn reserve(
        &self,
        provider: &str,
        client: &str,
        prompt_tokens: u64,
        max_tokens: Option<u64>,
    ) -> Result<Ticket, Limited>;

    /// Ends a ticket with the tokens the request really used: the minute limits give back or
    /// take the difference, the quotas count the usage. `None` (a reply without a usage
    /// figure) charges each limit what it held: unknown usage is not free. Returns the
    /// provider's quota standing afterwards, for a remaining-quota metric.
    fn settle(&self, ticket: Ticket, used_tokens: Option<u64>) -> Settled;

    /// Gives back everything a ticket held, for a request that was never sent.
    fn cancel(&self, ticket: Ticket);

    /// Where the quota of a provider or client key stands, or `None` without a quota.
    fn quota_status(&self, scope: QuotaScope, name: &str) -> Option<QuotaStatus>;

    /// What a status page shows: which buckets are on, and how full the per-IP table is.
    fn status(&self) -> AdmissionStatus;

    /// Upkeep on the caller's beat: forgets per-IP buckets that have refilled (a full bucket
    /// is the same as none).
    fn evict_idle(&self);

    /// Start-up: takes the quota counts the state store kept (see [`Quotas::seed`]); returns
    /// how many applied.
    fn seed_usage(&self, stored: Vec<QuotaUsage>) -> usize;

    /// The quota counts changed since the last call, for the state store (see
    /// [`Quotas::take_dirty`]). An implementation whose store keeps the counts itself
    /// returns none.
    fn take_dirty_usage(&self) -> Vec<QuotaUsage>;

    /// On a reload: puts `limits` in force for the client keys, or refuses the whole table
    /// with [`Error::ClientLimitsFixed`], naming the keys whose limits it cannot change
    /// while it runs (then nothing changes). A key missing from `limits` keeps its limits
    /// (a removed key no longer authenticates, so they are never asked for).
    fn update_client_limits(&self, limits: &LimitTable) -> Result<()>;
}

/// Which half of the global bucket a request draws on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// A request with a valid client key.
    Keyed,
    /// A request without one.
    Stranger,
}

/// The requests and tokens per minute, the token quota and (client keys only) the spending
/// budget of one provider or client key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Requests and tokens per minute, if limited.
    pub rate_limit: Option<RateLimit>,
    /// Tokens per period, if limited.
    pub quota: Option<Quota>,
    /// Micro-dollars per period, if limited (client keys; a provider's is ignored).
    pub budget: Option<Budget>,
}

impl Limits {
    /// The limits of one name, without a budget.
    pub const fn new(rate_limit: Option<RateLimit>, quota: Option<Quota>) -> Self {
        Self { rate_limit, quota, budget: None }
    }

    /// With this spending budget.
    pub const fn with_budget(mut self, budget: Option<Budget>) -> Self {
        self.budget = budget;
        self
    }
}

/// The limits of the providers or of the client keys, by name.
pub type LimitTable = BTreeMap<String, Limits>;

/// What one request holds from [`Admission::reserve`] until its reply ends: the minute-limit
/// reservations and the tokens held against each quota, and the standings for the
/// `X-RateLimit-*` headers. Hand it back to [`Admission::settle`] or [`Admission::cancel`]
/// of the admission that issued it. A ticket dropped without either leaves its minute-limit
/// tokens spent (see [`Reservation`]) and its quota tokens held until a restart, so a caller
/// always ends it.
#[derive(Debug)]
#[must_use = "settle the ticket with the real usage, or cancel it if the request was not sent"]
pub struct Ticket {
    provider: String,
    client: String,
    provider_minute: Reservation,
    client_minute: Reservation,
    provider_quota: u64,
    client_quota: u64,
}

impl Ticket {
    /// A ticket for `provider` and `client` holding these minute-limit reservations and
    /// these quota tokens. An implementation over a shared store records what it reserved
    /// there with [`Reservation::recorded`].
    pub fn new(
        provider: String,
        client: String,
        provider_minute: Reservation,
        client_minute: Reservation,
        provider_quota: u64,
        client_quota: u64,
    ) -> Self {
        Self { provider, client, provider_minute, client_minute, provider_quota, client_quota }
    }

    /// The provider the request goes to.
    pub fn provider(&self) -> &str {
        &self.provider
    }

    /// The client key the request came with.
    pub fn client(&self) -> &str {
        &self.client
    }

    /// The minute-limit reservation of the provider or of the client key.
    pub fn minute(&self, scope: QuotaScope) -> &Reservation {
        match scope {
            QuotaScope::Provider => &self.provider_minute,
            QuotaScope::Client => &self.client_minute,
        }
    }

    /// The tokens held against the provider's or the client key's quota (0 without one).
    pub fn quota_held(&self, scope: QuotaScope) -> u64 {
        match scope {
            QuotaScope::Provider => self.provider_quota,
            QuotaScope::Client => self.client_quota,
        }
    }

    /// The standing for the `X-RateLimit-*` headers: the client key's requests per minute,
    /// or else the provider's.
    pub fn headline(&self) -> Option<Admitted> {
        self.client_minute.requests().or(self.provider_minute.requests())
    }
}

/// What [`Admission::settle`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Settled {
    /// The provider the ticket was for.
    pub provider: String,
    /// The provider's quota after the settlement, `None` without a quota.
    pub provider_quota: Option<QuotaStatus>,
}

impl Settled {
    /// A settlement report.
    pub const fn new(provider: String, provider_quota: Option<QuotaStatus>) -> Self {
        Self { provider, provider_quota }
    }
}

/// What [`Admission::status`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct AdmissionStatus {
    /// The per-IP limiter, when on: the addresses it tracks, and at most how many.
    pub per_ip: Option<PerIpStatus>,
    /// Whether the global bucket is on.
    pub global: bool,
}

impl AdmissionStatus {
    /// A status report.
    pub const fn new(per_ip: Option<PerIpStatus>, global: bool) -> Self {
        Self { per_ip, global }
    }
}

/// How full the per-IP table is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PerIpStatus {
    /// Addresses with a bucket now.
    pub tracked: usize,
    /// The most it keeps.
    pub capacity: usize,
}

impl PerIpStatus {
    /// A per-IP table's figures.
    pub const fn new(tracked: usize, capacity: usize) -> Self {
        Self { tracked, capacity }
    }
}

/// The [`Admission`] of one process: today's [`IpRateLimiter`], [`GlobalRateLimiter`]s,
/// [`MinuteLimiter`]s and [`Quotas`], in memory, their counts surviving restarts through
/// [`Admission::take_dirty_usage`] and [`Admission::seed_usage`]. Nothing is on until it is
/// given: [`LocalAdmission::new`] limits only the names in its tables.
///
/// Its buckets are built once: [`Admission::update_client_limits`] accepts a table that
/// changes no key's limits and refuses any other, so a reloaded key never runs unlimited.
#[derive(Debug)]
pub struct LocalAdmission {
    per_ip: Option<IpRateLimiter>,
    /// The bucket of requests with a valid client key.
    global: Option<GlobalRateLimiter>,
    /// A bucket of the same size for requests without one, so that strangers cannot empty
    /// the one keyed clients draw on, while their flood stays bounded as a whole.
    strangers: Option<GlobalRateLimiter>,
    provider_minutes: MinuteLimiter,
    client_minutes: MinuteLimiter,
    quotas: Quotas,
    /// Tokens assumed for a request without `max_tokens`.
    estimate: u64,
    /// The client-key limits the minute limiters and quotas were built with.
    client_limits: LimitTable,
}

impl LocalAdmission {
    /// The minute limits and quotas of `providers` and `clients` (names without limits are
    /// not limited), holding `estimate` tokens for a request without `max_tokens`
    /// ([`DEFAULT_TOKEN_ESTIMATE`], or a lower output cap), with no per-IP or global bucket
    /// until [`LocalAdmission::with_per_ip`] and [`LocalAdmission::with_global`].
    pub fn new(
        providers: impl IntoIterator<Item = (String, Limits)>,
        clients: impl IntoIterator<Item = (String, Limits)>,
        estimate: u64,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let providers: LimitTable = providers.into_iter().collect();
        let client_limits: LimitTable = clients.into_iter().collect();
        let rates = |table: &LimitTable| -> Vec<(String, RateLimit)> {
            table.iter().filter_map(|(name, l)| l.rate_limit.map(|r| (name.clone(), r))).collect()
        };
        let quotas = |table: &LimitTable| -> Vec<(String, Quota)> {
            table.iter().filter_map(|(name, l)| l.quota.map(|q| (name.clone(), q))).collect()
        };
        Self {
            per_ip: None,
            global: None,
            strangers: None,
            provider_minutes: MinuteLimiter::new(
                QuotaScope::Provider,
                rates(&providers),
                estimate,
                clock.clone(),
            ),
            client_minutes: MinuteLimiter::new(
                QuotaScope::Client,
                rates(&client_limits),
                estimate,
                clock.clone(),
            ),
            quotas: Quotas::new(quotas(&providers), quotas(&client_limits), clock),
            estimate,
            client_limits,
        }
    }

    /// The admission a [`SecurityConfig`] (its per-IP rate limit, and its validation cap,
    /// which bounds the estimate of a request without `max_tokens`) and a
    /// [`GlobalRateLimitConfig`] ask for, with these provider and client-key limits.
    pub fn from_config(
        security: &SecurityConfig,
        global: &GlobalRateLimitConfig,
        providers: impl IntoIterator<Item = (String, Limits)>,
        clients: impl IntoIterator<Item = (String, Limits)>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        // A request without `max_tokens` is not bounded by the cap (it caps what is asked
        // for, and nothing is), so its estimate is a fixed figure, a lower cap taking its
        // place. Holding a cap sized for coding clients (128000) instead would let two such
        // requests fill a client key's tokens per minute until their usage comes back.
        let estimate = security
            .request_validation
            .max_tokens
            .map_or(DEFAULT_TOKEN_ESTIMATE, |cap| u64::from(cap.get()).min(DEFAULT_TOKEN_ESTIMATE));
        let mut admission = Self::new(providers, clients, estimate, clock.clone());
        admission.per_ip = IpRateLimiter::from_config(&security.rate_limiting, clock.clone());
        admission.global = GlobalRateLimiter::from_config(global, clock.clone());
        admission.strangers = GlobalRateLimiter::from_config(global, clock);
        admission
    }

    /// With this per-IP limiter.
    pub fn with_per_ip(mut self, limiter: IpRateLimiter) -> Self {
        self.per_ip = Some(limiter);
        self
    }

    /// With a global bucket for keyed callers and one of the same size for strangers.
    pub fn with_global(mut self, keyed: GlobalRateLimiter, strangers: GlobalRateLimiter) -> Self {
        self.global = Some(keyed);
        self.strangers = Some(strangers);
        self
    }

    /// The tokens held for a request without `max_tokens`.
    pub fn estimate(&self) -> u64 {
        self.estimate
    }
}

impl Admission for LocalAdmission {
    fn check_ip(&self, ip: IpAddr) -> Result<Option<Admitted>, Limited> {
        self.per_ip.as_ref().map(|limiter| limiter.check(ip)).transpose()
    }

    fn check_global(&self, caller: Caller) -> Result<(), Limited> {
        let bucket = match caller {
            Caller::Keyed => &self.global,
            Caller::Stranger => &self.strangers,
        };
        bucket.as_ref().map_or(Ok(()), |bucket| bucket.check().map(drop))
    }

    fn reserve(
        &self,
        provider: &str,
        client: &str,
        prompt_tokens: u64,
        max_tokens: Option<u64>,
    ) -> Result<Ticket, Limited> {
        let estimate = prompt_tokens.saturating_add(max_tokens.unwrap_or(self.estimate));
        let provider_minute = self.provider_minutes.reserve(provider, Some(estimate))?;
        let client_minute = match self.client_minutes.reserve(client, Some(estimate)) {
            Ok(reservation) => reservation,
            Err(limited) => {
                provider_minute.cancel();
                return Err(limited);
            }
        };
        let provider_quota = match self.quotas.reserve(QuotaScope::Provider, provider, estimate) {
            Ok(held) => held,
            Err(limited) => {
                provider_minute.cancel();
                client_minute.cancel();
                return Err(limited);
            }
        };
        let client_quota = match self.quotas.reserve(QuotaScope::Client, client, estimate) {
            Ok(held) => held,
            Err(limited) => {
                provider_minute.cancel();
                client_minute.cancel();
                self.quotas.release(QuotaScope::Provider, provider, provider_quota);
                return Err(limited);
            }
        };
        Ok(Ticket::new(
            provider.to_owned(),
            client.to_owned(),
            provider_minute,
            client_minute,
            provider_quota,
            client_quota,
        ))
    }

    /// Each limit is charged the estimate as it held it when no usage is known, capped at
    /// that limit (see [`Quotas::reserve`] and [`MinuteLimiter::reserve`]), so that a
    /// `max_tokens` of 2^64-1 accepted with validation off costs at most a whole quota or
    /// minute, never more.
    fn settle(&self, ticket: Ticket, used_tokens: Option<u64>) -> Settled {
        let Ticket {
            provider,
            client,
            provider_minute,
            client_minute,
            provider_quota,
            client_quota,
        } = ticket;
        let charge = |held: u64| used_tokens.unwrap_or(held);
        let provider_minute_used = charge(provider_minute.reserved_tokens());
        provider_minute.settle(provider_minute_used);
        let client_minute_used = charge(client_minute.reserved_tokens());
        client_minute.settle(client_minute_used);
        let (provider_used, client_used) = (charge(provider_quota), charge(client_quota));
        self.quotas.settle(QuotaScope::Provider, &provider, provider_quota, provider_used);
        self.quotas.settle(QuotaScope::Client, &client, client_quota, client_used);
        let provider_quota = self.quotas.status(QuotaScope::Provider, &provider);
        Settled { provider, provider_quota }
    }

    fn cancel(&self, ticket: Ticket) {
        ticket.provider_minute.cancel();
        ticket.client_minute.cancel();
        self.quotas.release(QuotaScope::Provider, &ticket.provider, ticket.provider_quota);
        self.quotas.release(QuotaScope::Client, &ticket.client, ticket.client_quota);
    }

    fn quota_status(&self, scope: QuotaScope, name: &str) -> Option<QuotaStatus> {
        self.quotas.status(scope, name)
    }

    fn status(&self) -> AdmissionStatus {
        let per_ip = self.per_ip.as_ref().map(|l| PerIpStatus::new(l.len(), l.capacity()));
        AdmissionStatus::new(per_ip, self.global.is_some())
    }

    fn evict_idle(&self) {
        if let Some(limiter) = &self.per_ip {
            limiter.evict_idle();
        }
    }

    fn seed_usage(&self, stored: Vec<QuotaUsage>) -> usize {
        self.quotas.seed(stored)
    }

    fn take_dirty_usage(&self) -> Vec<QuotaUsage> {
        self.quotas.take_dirty()
    }

    fn update_client_limits(&self, limits: &LimitTable) -> Result<()> {
        let names: Vec<String> = limits
            .iter()
            .filter(|(name, wanted)| {
                self.client_limits.get(*name).copied().unwrap_or_default() != **wanted
            })
            .map(|(name, _)| name.clone())
            .collect();
        if names.is_empty() { Ok(()) } else { Err(Error::ClientLimitsFixed { names }) }
    }
}

#[cfg(test)]
mod tests {
    use std::num::{NonZeroU32, NonZeroU64};
    use std::time::Duration;

    use cliproxy_core::QuotaPeriod;

    use super::*;
    use crate::clock::FakeClock;
    use crate::ratelimit::LimitKind;

    fn client_limits(requests: u32, tokens: u64) -> Limits {
        let rate = RateLimit::new(NonZeroU32::new(requests), NonZeroU64::new(tokens));
        Limits::new(Some(rate), None)
    }

    fn quota(limit: u64) -> Limits {
        Limits::new(None, Some(Quota::new(NonZeroU64::new(limit).unwrap(), QuotaPeriod::Daily)))
    }

    #[test]
    fn a_refusal_by_a_later_limit_gives_back_what_the_earlier_ones_took() {
        let clock = FakeClock::at_unix(1_800_000_000);
        let admission = LocalAdmission::new(
            [("p".to_owned(), client_limits(2, 1_000_000))],
            [("c".to_owned(), quota(100))],
            50,
            clock,
        );
        // Held at most the whole quota; cancelled, it gives back the provider's request too.
        let first = admission.reserve("p", "c", 10, Some(500)).unwrap();
        assert_eq!(first.quota_held(QuotaScope::Client), 100);
        assert_eq!(first.headline().map(|a| a.remaining), Some(1));
        admission.cancel(first);
        // Without `max_tokens`, the estimate; settled with more, the quota is used up.
        let second = admission.reserve("p", "c", 0, None).unwrap();
        assert_eq!(second.quota_held(QuotaScope::Client), 50);
        assert_eq!(second.headline().map(|a| a.remaining), Some(1));
        let settled = admission.settle(second, Some(100));
        assert_eq!((settled.provider.as_str(), settled.provider_quota), ("p", None));
        assert_eq!(admission.quota_status(QuotaScope::Client, "c").unwrap().used, 100);
        // The client's quota refuses after the provider's minute took its request, which
        // goes back: the provider's last request of the minute is still there for another key.
        let refused = admission.reserve("p", "c", 0, None).unwrap_err();
        assert_eq!(refused.kind, LimitKind::ClientQuota);
        let third = admission.reserve("p", "d", 0, None).unwrap();
        assert_eq!(third.headline().map(|a| a.remaining), Some(0));
        let refused = admission.reserve("p", "d", 0, None).unwrap_err();
        assert_eq!(refused.kind, LimitKind::ProviderRequests);
        admission.cancel(third);
    }

    #[test]
    fn settling_charges_the_usage_or_what_was_held() {
        let clock = FakeClock::at_unix(1_800_000_000);
        let admission =
            LocalAdmission::new([("p".to_owned(), quota(10_000))], [], 1_000, clock.clone());
        let ticket = admission.reserve("p", "c", 20, None).unwrap();
        assert_eq!(ticket.quota_held(QuotaScope::Provider), 1_020);
        let settled = admission.settle(ticket, Some(7));
        assert_eq!(settled.provider_quota.map(|s| s.used), Some(7));
        // Without a usage figure, the estimate as held is charged.
        let ticket = admission.reserve("p", "c", 20, Some(100)).unwrap();
        let settled = admission.settle(ticket, None);
        assert_eq!(settled.provider_quota.map(|s| s.used), Some(127));
        // The counts go to the state store once, then are clean.
        let dirty = admission.take_dirty_usage();
        assert_eq!(dirty.iter().map(|u| u.tokens).collect::<Vec<_>>(), [127]);
        assert!(admission.take_dirty_usage().is_empty());
        // A restart seeded with them carries on from there.
        let restarted = LocalAdmission::new([("p".to_owned(), quota(10_000))], [], 1_000, clock);
        assert_eq!(restarted.seed_usage(dirty), 1);
        assert_eq!(restarted.quota_status(QuotaScope::Provider, "p").map(|s| s.used), Some(127));
    }

    #[test]
    fn strangers_and_keyed_callers_draw_on_buckets_of_their_own() {
        let clock = FakeClock::at_unix(1_800_000_000);
        let one = NonZeroU32::MIN;
        let shared: Arc<dyn Clock> = clock.clone();
        let admission = LocalAdmission::new([], [], 1, shared.clone()).with_global(
            GlobalRateLimiter::new(one, one, shared.clone()),
            GlobalRateLimiter::new(one, one, shared),
        );
        assert!(admission.check_ip("192.0.2.1".parse().unwrap()).unwrap().is_none());
        assert!(admission.check_global(Caller::Stranger).is_ok());
        assert_eq!(admission.check_global(Caller::Stranger).unwrap_err().kind, LimitKind::Global);
        assert!(admission.check_global(Caller::Keyed).is_ok());
        clock.advance(Duration::from_secs(1));
        assert!(admission.check_global(Caller::Stranger).is_ok());
        assert_eq!(admission.status(), AdmissionStatus::new(None, true));
    }

    #[test]
    fn client_limits_that_differ_are_refused_by_name_and_the_rest_accepted() {
        let clock = FakeClock::at_unix(1_800_000_000);
        let admission =
            LocalAdmission::new([], [("a".to_owned(), client_limits(2, 100))], 1, clock);
        let mut table = LimitTable::new();
        // A key without limits, the same limits for `a`, and a removal: nothing to change.
        table.insert("plain".to_owned(), Limits::default());
        assert!(admission.update_client_limits(&table).is_ok());
        table.insert("a".to_owned(), client_limits(2, 100));
        assert!(admission.update_client_limits(&table).is_ok());
        // New limits for `a`, and a new key with limits: both named.
        table.insert("a".to_owned(), client_limits(3, 100));
        table.insert("b".to_owned(), quota(5));
        match admission.update_client_limits(&table) {
            Err(Error::ClientLimitsFixed { names }) => assert_eq!(names, ["a", "b"]),
            other => panic!("{other:?}"),
        }
    }
}
