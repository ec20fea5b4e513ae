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
//!   minute limits, quotas and the key's budget all at once or none of them, so no caller
//!   splits a
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
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use cliproxy_core::{Budget, Quota, RateLimit};

use crate::clock::Clock;
use crate::config::{GlobalRateLimitConfig, SecurityConfig};
use crate::error::Result;
use crate::quota::{QuotaStatus, Quotas, budget_quota};
use crate::ratelimit::{
    Admitted, DEFAULT_TOKEN_ESTIMATE, GlobalRateLimiter, IpRateLimiter, LimitKind, Limited,
    MinuteLimiter, Reservation,
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
    /// per minute and the quotas of `provider` and `client`, and its worst-case cost under
    /// the demand's price against the client key's budget (see [`Demand`]). All of them are
    /// held or, when any refuses, none is. A client key with a budget asking for a model
    /// without a price is refused ([`LimitKind::Unpriced`]): its cost cannot be held.
    fn reserve(&self, provider: &str, client: &str, demand: Demand) -> Result<Ticket, Limited>;

    /// Ends a ticket with what the request really used: the minute limits give back or
    /// take the difference, the quotas count the tokens, the budget the cost. A `None` in
    /// `used` (a reply without a usage figure, a model without a price) charges each limit
    /// what it held: unknown usage is not free. Returns the provider's quota and the client
    /// key's budget standings afterwards, for the metrics.
    fn settle(&self, ticket: Ticket, used: Used) -> Settled;

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

    /// When the client keys change (a reload of the config file, a key created, changed or
    /// revoked at run time): puts `limits` in force for the keys it names. A new name gets
    /// its limits; a changed quota or budget keeps the current period's count (and what
    /// requests in flight hold); changed minute limits may start from fresh buckets (the
    /// default one does, see [`LocalAdmission`]). A key missing from `limits` keeps its
    /// limits (a removed key no longer authenticates, so they are never asked for). An
    /// error means the store that keeps the limits could not be written; the default one
    /// never fails.
    fn update_client_limits(&self, limits: &LimitTable) -> Result<()>;

    /// What changed in the admission's standing since the last call (a shared store lost or
    /// back, usage reconciled), as sentences for the caller's log. The default one has
    /// nothing to say.
    fn take_notices(&self) -> Vec<String> {
        Vec::new()
    }

    /// Writes what is still queued (settlements sent in batches) before the process ends; an
    /// error says what could not be written. The default one queues nothing.
    fn close(&self) -> std::result::Result<(), String> {
        Ok(())
    }
}

/// What a request asks of [`Admission::reserve`]: its prompt's estimate, its output cap, and
/// the price of the model it is routed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Demand {
    /// The prompt's tokens, as estimated from the request.
    pub prompt_tokens: u64,
    /// The output cap the request named (`max_tokens`), or `None` for the admission's own
    /// estimate.
    pub max_tokens: Option<u64>,
    /// The routed model's price, or `None` for a model without one.
    pub price: Option<TokenPrice>,
    /// The client's address, for an admission that charges the per-IP bucket it shares with
    /// other instances along with the request's other limits (`RedisAdmission`); the local
    /// one has charged it in [`Admission::check_ip`] and ignores it.
    pub client_ip: Option<IpAddr>,
}

impl Demand {
    /// A request of `prompt_tokens` with an output cap of `max_tokens`, on an unpriced model.
    pub const fn new(prompt_tokens: u64, max_tokens: Option<u64>) -> Self {
        Self { prompt_tokens, max_tokens, price: None, client_ip: None }
    }

    /// On a model with this price.
    pub const fn with_price(mut self, price: Option<TokenPrice>) -> Self {
        self.price = price;
        self
    }

    /// From this client address.
    pub const fn with_client_ip(mut self, ip: IpAddr) -> Self {
        self.client_ip = Some(ip);
        self
    }
}

/// A model's price as a budget holds it: micro-dollars per 1M input and output tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct TokenPrice {
    /// Micro-dollars per 1M input (prompt) tokens.
    pub input: u64,
    /// Micro-dollars per 1M output (generated) tokens.
    pub output: u64,
}

impl TokenPrice {
    /// A price of `input` and `output` micro-dollars per 1M tokens.
    pub const fn new(input: u64, output: u64) -> Self {
        Self { input, output }
    }

    /// The most a request can cost: `prompt_tokens` at the input price and `output_tokens` at
    /// the output price, in micro-dollars, rounded up (a request that may use any priced token
    /// never holds zero) and saturating rather than overflowing.
    pub fn worst_case(&self, prompt_tokens: u64, output_tokens: u64) -> u64 {
        let total = u128::from(prompt_tokens) * u128::from(self.input)
            + u128::from(output_tokens) * u128::from(self.output);
        u64::try_from(total.div_ceil(TOKENS_PER_PRICE)).unwrap_or(u64::MAX)
    }
}

/// Prices are per this many tokens.
const TOKENS_PER_PRICE: u128 = 1_000_000;

/// What a request really used, for [`Admission::settle`]: `None` in either field charges
/// what was held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Used {
    /// Tokens used (input and output), for the minute limits and quotas.
    pub tokens: Option<u64>,
    /// The request's cost in micro-dollars, for the budget.
    pub cost: Option<u64>,
}

impl Used {
    /// `tokens` used, at a cost of `cost` micro-dollars.
    pub const fn new(tokens: Option<u64>, cost: Option<u64>) -> Self {
        Self { tokens, cost }
    }

    /// Nothing known: every limit is charged what it held.
    pub const fn unknown() -> Self {
        Self { tokens: None, cost: None }
    }

    /// Nothing used (a request answered with an error, a call that generates nothing).
    pub const fn nothing() -> Self {
        Self { tokens: Some(0), cost: Some(0) }
    }
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
/// reservations, the tokens held against each quota and the micro-dollars held against the
/// client key's budget, and the standings for the
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
    client_budget: u64,
    /// What an admission over a shared store holds there for this request, in its own type
    /// (`None` for a ticket of memory, including one it admitted locally during an outage).
    /// Opaque here, so that this module names no implementation of the trait.
    shared: Option<Box<dyn std::any::Any + Send + Sync>>,
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
        Self {
            provider,
            client,
            provider_minute,
            client_minute,
            provider_quota,
            client_quota,
            client_budget: 0,
            shared: None,
        }
    }

    /// Recording what was held in a shared store for it.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn with_shared<T: std::any::Any + Send + Sync>(mut self, hold: T) -> Self {
        self.shared = Some(Box::new(hold));
        self
    }

    /// What was held in a shared store for it, taken out (once), when it is a `T`.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn take_shared<T: std::any::Any>(&mut self) -> Option<Box<T>> {
        self.shared.take()?.downcast::<T>().ok()
    }

    /// Holding these micro-dollars against the client key's budget as well.
    pub fn with_budget_held(mut self, micro_usd: u64) -> Self {
        self.client_budget = micro_usd;
        self
    }

    /// The provider the request goes to.
    pub fn provider(&self) -> &str {
        &self.provider
    }

    /// The client key the request came with.
    pub fn client(&self) -> &str {
        &self.client
    }

    /// The minute-limit reservation of the provider or of the client key (a budget has
    /// none: [`QuotaScope::Budget`] gives the client key's).
    pub fn minute(&self, scope: QuotaScope) -> &Reservation {
        match scope {
            QuotaScope::Provider => &self.provider_minute,
            QuotaScope::Client | QuotaScope::Budget => &self.client_minute,
        }
    }

    /// The tokens held against the provider's or the client key's quota, or for
    /// [`QuotaScope::Budget`] the micro-dollars held against the client key's budget (0
    /// without one).
    pub fn quota_held(&self, scope: QuotaScope) -> u64 {
        match scope {
            QuotaScope::Provider => self.provider_quota,
            QuotaScope::Client => self.client_quota,
            QuotaScope::Budget => self.client_budget,
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
    /// The client key the ticket was for.
    pub client: String,
    /// The client key's budget after the settlement (micro-dollars), `None` without one.
    pub client_budget: Option<QuotaStatus>,
}

impl Settled {
    /// A settlement report, without a client key's budget.
    pub const fn new(provider: String, provider_quota: Option<QuotaStatus>) -> Self {
        Self { provider, provider_quota, client: String::new(), client_budget: None }
    }

    /// With the client key's name and its budget's standing.
    pub fn with_client_budget(mut self, client: String, budget: Option<QuotaStatus>) -> Self {
        self.client = client;
        self.client_budget = budget;
        self
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
/// [`MinuteLimiter`]s and [`Quotas`] (budgets included), in memory, their counts surviving
/// restarts through [`Admission::take_dirty_usage`] and [`Admission::seed_usage`]. Nothing is
/// on until it is given: [`LocalAdmission::new`] limits only the names in its tables.
///
/// The providers' limits are built once. The client keys' change with
/// [`Admission::update_client_limits`]: their tables are swapped whole ([`ArcSwap`]), so the
/// request path reads them without a lock. A changed quota or budget keeps its count for the
/// current period; changed requests or tokens per minute start from fresh, full buckets
/// (what the old ones had taken is forgotten: at most one minute's worth more passes).
///
/// [`ArcSwap`]: arc_swap::ArcSwap
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
    /// The client-key limits in force, to tell what an update changes. Only updates take
    /// this lock (never the request path), which also serialises them.
    client_limits: Mutex<LimitTable>,
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
        let budgets: Vec<(String, Budget)> = client_limits
            .iter()
            .filter_map(|(name, l)| l.budget.map(|b| (name.clone(), b)))
            .collect();
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
            quotas: Quotas::new(quotas(&providers), quotas(&client_limits), clock)
                .with_budgets(budgets),
            estimate,
            client_limits: Mutex::new(client_limits),
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

    fn reserve(&self, provider: &str, client: &str, demand: Demand) -> Result<Ticket, Limited> {
        let output = demand.max_tokens.unwrap_or(self.estimate);
        let estimate = demand.prompt_tokens.saturating_add(output);
        // A budgeted key's request must have a price before anything is held: what it would
        // cost cannot be held otherwise, and it is never taken as free.
        let worst_cost = match demand.price {
            Some(price) => price.worst_case(demand.prompt_tokens, output),
            None if self.quotas.is_limited(QuotaScope::Budget, client) => {
                return Err(unpriced(client));
            }
            None => 0,
        };
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
        // The worst case is held like a quota's estimate: in-flight holds count, so parallel
        // requests cannot all pass on the same remainder, and no hold exceeds the budget.
        let client_budget = match self.quotas.reserve(QuotaScope::Budget, client, worst_cost) {
            Ok(held) => held,
            Err(limited) => {
                provider_minute.cancel();
                client_minute.cancel();
                self.quotas.release(QuotaScope::Provider, provider, provider_quota);
                self.quotas.release(QuotaScope::Client, client, client_quota);
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
        )
        .with_budget_held(client_budget))
    }

    /// Each limit is charged the estimate as it held it when no usage is known, capped at
    /// that limit (see [`Quotas::reserve`] and [`MinuteLimiter::reserve`]), so that a
    /// `max_tokens` of 2^64-1 accepted with validation off costs at most a whole quota or
    /// minute, never more. The budget is charged the cost, or without one what it held
    /// (the worst case, capped at the whole budget).
    fn settle(&self, ticket: Ticket, used: Used) -> Settled {
        let Ticket {
            provider,
            client,
            provider_minute,
            client_minute,
            provider_quota,
            client_quota,
            client_budget,
            ..
        } = ticket;
        let charge = |held: u64| used.tokens.unwrap_or(held);
        let provider_minute_used = charge(provider_minute.reserved_tokens());
        provider_minute.settle(provider_minute_used);
        let client_minute_used = charge(client_minute.reserved_tokens());
        client_minute.settle(client_minute_used);
        let (provider_used, client_used) = (charge(provider_quota), charge(client_quota));
        self.quotas.settle(QuotaScope::Provider, &provider, provider_quota, provider_used);
        self.quotas.settle(QuotaScope::Client, &client, client_quota, client_used);
        let spent = used.cost.unwrap_or(client_budget);
        self.quotas.settle(QuotaScope::Budget, &client, client_budget, spent);
        let provider_quota = self.quotas.status(QuotaScope::Provider, &provider);
        let budget = self.quotas.status(QuotaScope::Budget, &client);
        Settled::new(provider, provider_quota).with_client_budget(client, budget)
    }

    fn cancel(&self, ticket: Ticket) {
        ticket.provider_minute.cancel();
        ticket.client_minute.cancel();
        self.quotas.release(QuotaScope::Provider, &ticket.provider, ticket.provider_quota);
        self.quotas.release(QuotaScope::Client, &ticket.client, ticket.client_quota);
        self.quotas.release(QuotaScope::Budget, &ticket.client, ticket.client_budget);
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
        let mut current = self.client_limits.lock().unwrap_or_else(PoisonError::into_inner);
        let changed: Vec<(&String, Limits)> = limits
            .iter()
            .filter(|(name, wanted)| current.get(*name).copied().unwrap_or_default() != **wanted)
            .map(|(name, wanted)| (name, *wanted))
            .collect();
        if changed.is_empty() {
            return Ok(());
        }
        // Each table is changed only where the limit in it changed: a new budget does not
        // refill the key's minute buckets, a new rate does not touch its quota.
        let was = |name: &String| current.get(name).copied().unwrap_or_default();
        self.client_minutes.update(
            changed
                .iter()
                .filter(|(name, wanted)| was(name).rate_limit != wanted.rate_limit)
                .map(|(name, wanted)| ((*name).clone(), wanted.rate_limit)),
        );
        self.quotas.update(
            QuotaScope::Client,
            changed
                .iter()
                .filter(|(name, wanted)| was(name).quota != wanted.quota)
                .map(|(name, wanted)| ((*name).clone(), wanted.quota)),
        );
        self.quotas.update(
            QuotaScope::Budget,
            changed
                .iter()
                .filter(|(name, wanted)| was(name).budget != wanted.budget)
                .map(|(name, wanted)| ((*name).clone(), wanted.budget.map(budget_quota))),
        );
        for (name, wanted) in changed {
            current.insert(name.clone(), wanted);
        }
        Ok(())
    }
}

/// The refusal of a budgeted key's request for a model without a price. It will not pass
/// later either; the wait given is a day, so that a client that retries does so slowly.
pub(crate) fn unpriced(client: &str) -> Limited {
    let day = Duration::from_secs(86_400);
    Limited::new(LimitKind::Unpriced, Some(client.to_owned()), 0, 0, day, day)
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
        let first = admission.reserve("p", "c", Demand::new(10, Some(500))).unwrap();
        assert_eq!(first.quota_held(QuotaScope::Client), 100);
        assert_eq!(first.headline().map(|a| a.remaining), Some(1));
        admission.cancel(first);
        // Without `max_tokens`, the estimate; settled with more, the quota is used up.
        let second = admission.reserve("p", "c", Demand::new(0, None)).unwrap();
        assert_eq!(second.quota_held(QuotaScope::Client), 50);
        assert_eq!(second.headline().map(|a| a.remaining), Some(1));
        let settled = admission.settle(second, Used::new(Some(100), None));
        assert_eq!((settled.provider.as_str(), settled.provider_quota), ("p", None));
        assert_eq!(admission.quota_status(QuotaScope::Client, "c").unwrap().used, 100);
        // The client's quota refuses after the provider's minute took its request, which
        // goes back: the provider's last request of the minute is still there for another key.
        let refused = admission.reserve("p", "c", Demand::new(0, None)).unwrap_err();
        assert_eq!(refused.kind, LimitKind::ClientQuota);
        let third = admission.reserve("p", "d", Demand::new(0, None)).unwrap();
        assert_eq!(third.headline().map(|a| a.remaining), Some(0));
        let refused = admission.reserve("p", "d", Demand::new(0, None)).unwrap_err();
        assert_eq!(refused.kind, LimitKind::ProviderRequests);
        admission.cancel(third);
    }

    #[test]
    fn settling_charges_the_usage_or_what_was_held() {
        let clock = FakeClock::at_unix(1_800_000_000);
        let admission =
            LocalAdmission::new([("p".to_owned(), quota(10_000))], [], 1_000, clock.clone());
        let ticket = admission.reserve("p", "c", Demand::new(20, None)).unwrap();
        assert_eq!(ticket.quota_held(QuotaScope::Provider), 1_020);
        let settled = admission.settle(ticket, Used::new(Some(7), None));
        assert_eq!(settled.provider_quota.map(|s| s.used), Some(7));
        // Without a usage figure, the estimate as held is charged.
        let ticket = admission.reserve("p", "c", Demand::new(20, Some(100))).unwrap();
        let settled = admission.settle(ticket, Used::unknown());
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

    /// $1 per 1M input tokens, $2 per 1M output tokens.
    const PRICE: TokenPrice = TokenPrice::new(1_000_000, 2_000_000);

    fn budget(micro_usd: u64) -> Limits {
        Limits::default()
            .with_budget(Some(Budget::new(QuotaPeriod::Daily, NonZeroU64::new(micro_usd).unwrap())))
    }

    fn priced(prompt: u64, max_tokens: Option<u64>) -> Demand {
        Demand::new(prompt, max_tokens).with_price(Some(PRICE))
    }

    #[test]
    fn a_budget_holds_the_worst_case_and_settles_the_real_cost() {
        let clock = FakeClock::at_unix(1_800_000_000);
        let admission = LocalAdmission::new([], [("c".to_owned(), budget(10_000))], 1_000, clock);
        // 1000 prompt tokens at $1/M and 2000 output tokens at $2/M: $0.005 at worst.
        let ticket = admission.reserve("p", "c", priced(1_000, Some(2_000))).unwrap();
        assert_eq!(ticket.quota_held(QuotaScope::Budget), 5_000);
        // Without `max_tokens`, the estimate (1000) stands for the output: $0.003; and a
        // fraction of a micro-dollar is rounded up.
        let second = admission.reserve("p", "c", priced(1_000, None)).unwrap();
        assert_eq!(second.quota_held(QuotaScope::Budget), 3_000);
        // gpt-4o-mini's $0.15 per 1M input tokens: three tokens hold one micro-dollar, not 0.
        assert_eq!(TokenPrice::new(150_000, 600_000).worst_case(3, 0), 1);
        assert_eq!(PRICE.worst_case(u64::MAX, u64::MAX), u64::MAX);
        admission.cancel(second);
        // Settled with its real cost, the budget counts that, not the hold.
        let settled = admission.settle(ticket, Used::new(Some(300), Some(1_234)));
        let status = settled.client_budget.unwrap();
        assert_eq!((settled.client.as_str(), status.used, status.remaining), ("c", 1_234, 8_766));
        // Without a cost, the hold is charged; a huge `max_tokens` holds the whole budget.
        let ticket = admission.reserve("p", "c", priced(0, Some(1_000))).unwrap();
        admission.settle(ticket, Used::new(Some(10), None));
        assert_eq!(admission.quota_status(QuotaScope::Budget, "c").unwrap().used, 3_234);
        let ticket = admission.reserve("p", "c", priced(0, Some(u64::MAX))).unwrap();
        assert_eq!(ticket.quota_held(QuotaScope::Budget), 10_000);
        admission.cancel(ticket);
        // A key without a budget holds nothing and may use an unpriced model.
        let free = admission.reserve("p", "other", Demand::new(10, None)).unwrap();
        assert_eq!(free.quota_held(QuotaScope::Budget), 0);
        admission.settle(free, Used::unknown());
    }

    #[test]
    fn a_budgeted_key_on_an_unpriced_model_is_refused_and_holds_nothing() {
        let clock = FakeClock::at_unix(1_800_000_000);
        let mut limits = client_limits(1, 1_000_000).with_budget(budget(10_000).budget);
        limits.quota = quota(100).quota;
        let admission = LocalAdmission::new([], [("c".to_owned(), limits)], 10, clock);
        let refused = admission.reserve("p", "c", Demand::new(5, Some(5))).unwrap_err();
        assert_eq!(refused.kind, LimitKind::Unpriced);
        assert!(refused.to_string().contains("no price"), "{refused}");
        // Nothing was held: the key's one request of the minute is still there.
        let ticket = admission.reserve("p", "c", priced(5, Some(5))).unwrap();
        assert_eq!(ticket.quota_held(QuotaScope::Client), 10);
        admission.cancel(ticket);
    }

    #[test]
    fn parallel_requests_never_spend_beyond_one_in_flight_reservation() {
        let clock = FakeClock::at_unix(1_800_000_000);
        let admission =
            LocalAdmission::new([], [("c".to_owned(), budget(10_000))], 1_000, clock.clone());
        // Requests of $0.004 at worst, all in flight at once: the first three pass (the third
        // on the $0.002 left), the fourth finds nothing left.
        let held: Vec<Ticket> =
            (0..3).map(|_| admission.reserve("p", "c", priced(0, Some(2_000))).unwrap()).collect();
        let refused = admission.reserve("p", "c", priced(0, Some(2_000))).unwrap_err();
        assert_eq!(refused.kind, LimitKind::ClientBudget);
        assert_eq!(refused.limit, 10_000);
        // The refusal lasts until the next UTC midnight, and says so.
        let midnight = crate::quota::next_reset(QuotaPeriod::Daily, 1_800_000_000);
        assert_eq!(refused.resets_at, Some(midnight));
        assert_eq!(refused.retry_after_secs(), midnight - 1_800_000_000);
        assert!(refused.to_string().contains("budget of $0.010000"), "{refused}");
        // Each is charged all it held: the spend is at most the budget plus one hold.
        for ticket in held {
            admission.settle(ticket, Used::new(Some(2_000), Some(4_000)));
        }
        let status = admission.quota_status(QuotaScope::Budget, "c").unwrap();
        assert_eq!((status.used, status.remaining), (12_000, 0));
        assert!(status.used <= 10_000 + 4_000);
        // The next period starts from nothing spent.
        clock.advance(Duration::from_secs(midnight - 1_800_000_000));
        let ticket = admission.reserve("p", "c", priced(0, Some(2_000))).unwrap();
        assert_eq!(admission.quota_status(QuotaScope::Budget, "c").unwrap().used, 0);
        admission.cancel(ticket);
    }

    #[test]
    fn the_spend_survives_a_restart_as_a_budget_scope_of_its_own() {
        let clock = FakeClock::at_unix(1_800_000_000);
        let mut both = budget(10_000);
        both.quota = quota(1_000_000).quota;
        let admission = LocalAdmission::new([], [("c".to_owned(), both)], 1_000, clock.clone());
        let ticket = admission.reserve("p", "c", priced(100, Some(100))).unwrap();
        admission.settle(ticket, Used::new(Some(150), Some(777)));
        let dirty = admission.take_dirty_usage();
        let figures: Vec<_> = dirty.iter().map(|u| (u.scope, u.tokens)).collect();
        assert_eq!(figures, [(QuotaScope::Client, 150), (QuotaScope::Budget, 777)]);
        let restarted = LocalAdmission::new([], [("c".to_owned(), both)], 1_000, clock);
        assert_eq!(restarted.seed_usage(dirty), 2);
        assert_eq!(restarted.quota_status(QuotaScope::Budget, "c").map(|s| s.used), Some(777));
        assert_eq!(restarted.quota_status(QuotaScope::Client, "c").map(|s| s.used), Some(150));
    }

    #[test]
    fn client_limits_change_at_run_time_and_missing_names_keep_theirs() {
        let clock = FakeClock::at_unix(1_800_000_000);
        let mut a = client_limits(1, 1_000_000);
        a.quota = quota(1_000).quota;
        let admission = LocalAdmission::new([], [("a".to_owned(), a)], 10, clock);
        let ticket = admission.reserve("p", "a", Demand::new(0, Some(290))).unwrap();
        admission.settle(ticket, Used::new(Some(300), None));
        assert!(admission.reserve("p", "a", Demand::new(0, None)).is_err());
        // A new key gets its budget; `a` gets a larger quota and two requests a minute.
        let mut table = LimitTable::new();
        let mut a2 = client_limits(2, 1_000_000);
        a2.quota = quota(2_000).quota;
        table.insert("a".to_owned(), a2);
        table.insert("b".to_owned(), budget(500));
        admission.update_client_limits(&table).unwrap();
        // The quota kept its count (300 of 2000 used); the minute buckets are fresh.
        assert_eq!(admission.quota_status(QuotaScope::Client, "a").unwrap().used, 300);
        let first = admission.reserve("p", "a", Demand::new(0, None)).unwrap();
        let second = admission.reserve("p", "a", Demand::new(0, None)).unwrap();
        assert_eq!(
            admission.reserve("p", "a", Demand::new(0, None)).unwrap_err().kind,
            LimitKind::ClientRequests
        );
        admission.cancel(first);
        admission.cancel(second);
        let b = admission.reserve("p", "b", priced(0, Some(1_000))).unwrap();
        assert_eq!(b.quota_held(QuotaScope::Budget), 500);
        admission.cancel(b);
        // A table without `a` leaves its limits alone; `b` losing its budget is unlimited.
        let table = LimitTable::from([("b".to_owned(), Limits::default())]);
        admission.update_client_limits(&table).unwrap();
        assert_eq!(admission.quota_status(QuotaScope::Client, "a").unwrap().limit, 2_000);
        assert!(admission.quota_status(QuotaScope::Budget, "b").is_none());
        assert!(admission.reserve("p", "b", Demand::new(0, None)).is_ok_and(|t| {
            let unlimited = t.quota_held(QuotaScope::Budget) == 0;
            admission.cancel(t);
            unlimited
        }));
    }
}
