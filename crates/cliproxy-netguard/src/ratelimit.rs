//! Token buckets for the request path: one per client address ([`IpRateLimiter`]), one for
//! the whole gateway ([`GlobalRateLimiter`]), and requests and tokens per minute for each
//! provider and client key ([`MinuteLimiter`]). Every refusal is a [`Limited`], which names
//! the limit (the caller adds where it is configured, [`Limited::message`]) and carries what
//! a 429 answer needs (`Retry-After`, `X-RateLimit-Limit`, `-Remaining`, `-Reset`).
//!
//! Each bucket is kept in its GCRA form (the generic cell rate algorithm, as in ATM networks
//! and most production limiters): instead of a token count and a last-update time it stores
//! one number, the *theoretical arrival time* (TAT), the instant at which the bucket will be
//! full again. The two forms admit exactly the same requests, but the GCRA form is a single
//! `u64`, which keeps a per-address bucket at eight bytes, lets the global bucket be one
//! atomic, and makes "this bucket is full" a plain comparison (`tat <= now`): a full bucket
//! is the same as no bucket, so it can be forgotten at any time without changing a decision.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::num::{NonZeroU32, NonZeroU64, NonZeroUsize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::ArcSwap;
use cliproxy_core::RateLimit;

use crate::clock::Clock;
use crate::config::{GlobalRateLimitConfig, PerIpRateLimitConfig};
use crate::types::{QuotaScope, canonical_ip};

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LimitKind {
    /// The client address's token bucket ([`IpRateLimiter`]).
    PerIp,
    /// The one global token bucket ([`GlobalRateLimiter`]).
    Global,
    /// A provider's requests per minute ([`MinuteLimiter`]).
    ProviderRequests,
    /// A provider's tokens per minute.
    ProviderTokens,
    /// A client key's requests per minute.
    ClientRequests,
    /// A client key's tokens per minute.
    ClientTokens,
    /// A provider's token quota ([`Quotas`](crate::Quotas)).
    ProviderQuota,
    /// A client key's token quota.
    ClientQuota,
    /// A client key's spending budget (micro-dollars per period): spent, or held by requests
    /// in flight.
    ClientBudget,
    /// A client key with a budget asked for a model without a price: what it would cost is
    /// unknown, and unknown is never free.
    Unpriced,
    /// The shared state store (Redis) is unreachable and `state.redis.on_unavailable` is
    /// `deny`: a limit shared by several instances cannot be checked, so nothing is admitted
    /// (503, not 429: the client did nothing wrong).
    SharedState,
}

impl LimitKind {
    /// A stable label for metrics and audit events.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::PerIp => "per_ip",
            Self::Global => "global",
            Self::ProviderRequests => "provider_requests",
            Self::ProviderTokens => "provider_tokens",
            Self::ClientRequests => "client_requests",
            Self::ClientTokens => "client_tokens",
            Self::ProviderQuota => "provider_quota",
            Self::ClientQuota => "client_quota",
            Self::ClientBudget => "client_budget",
            Self::Unpriced => "unpriced",
            Self::SharedState => "shared_state",
        }
    }

    /// Whether this is a token quota or a budget (its refusal lasts until the period
    /// resets) rather than a rate.
    pub const fn is_quota(self) -> bool {
        matches!(self, Self::ProviderQuota | Self::ClientQuota | Self::ClientBudget)
    }

    fn requests_of(scope: QuotaScope) -> Self {
        match scope {
            QuotaScope::Provider => Self::ProviderRequests,
            QuotaScope::Client | QuotaScope::Budget => Self::ClientRequests,
        }
    }

    fn tokens_of(scope: QuotaScope) -> Self {
        match scope {
            QuotaScope::Provider => Self::ProviderTokens,
            QuotaScope::Client | QuotaScope::Budget => Self::ClientTokens,
        }
    }
}

impl fmt::Display for LimitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request refused by a rate limit or a quota. A service answers 429 with
/// `Retry-After: retry_after_secs()`, `X-RateLimit-Limit: limit`,
/// `X-RateLimit-Remaining: remaining` and `X-RateLimit-Reset: reset_after_secs()`, and the
/// [`Display`](fmt::Display) text as the message (the limit, and for quotas the time the
/// quota resets), or [`Limited::message`] to name where the limit is set as well.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limited {
    /// Which limit refused.
    pub kind: LimitKind,
    /// The provider or client key the limit belongs to; `None` for the per-IP and global
    /// limits.
    pub name: Option<String>,
    /// The limit: the burst of a token bucket, requests or tokens per minute, or tokens per
    /// quota period.
    pub limit: u64,
    /// What is left now (requests, or tokens for token limits and quotas).
    pub remaining: u64,
    /// Time until the bucket is full again, or until the quota period ends.
    pub reset_after: Duration,
    /// Time until this request would be admitted (never zero).
    pub retry_after: Duration,
    /// For quotas: Unix seconds (UTC) at which the quota resets.
    pub resets_at: Option<u64>,
}

impl Limited {
    /// A refusal by `kind` (of `name`'s limit, for the minute limits and quotas): what an
    /// [`Admission`](crate::Admission) over another store reports. `retry_after` is at
    /// least a nanosecond.
    pub fn new(
        kind: LimitKind,
        name: Option<String>,
        limit: u64,
        remaining: u64,
        reset_after: Duration,
        retry_after: Duration,
    ) -> Self {
        let retry_after = retry_after.max(Duration::from_nanos(1));
        Self { kind, name, limit, remaining, reset_after, retry_after, resets_at: None }
    }

    /// With the Unix second (UTC) at which a quota resets.
    pub fn with_resets_at(mut self, unix_seconds: u64) -> Self {
        self.resets_at = Some(unix_seconds);
        self
    }

    /// The message with `source` — where the limit is set, such as a config key — in
    /// parentheses after the limit: `too many requests from this address (rate_limit.per_ip);
    /// retry after 1 s`. The [`Display`](fmt::Display) text is the same without it.
    pub fn message(&self, source: &str) -> String {
        Message { limited: self, source: Some(source) }.to_string()
    }

    /// `Retry-After` in whole seconds, rounded up so that a client that waits that long is
    /// admitted; at least 1.
    pub fn retry_after_secs(&self) -> u64 {
        ceil_secs(self.retry_after).max(1)
    }

    /// `X-RateLimit-Reset` in whole seconds, rounded up.
    pub fn reset_after_secs(&self) -> u64 {
        ceil_secs(self.reset_after)
    }
}

impl fmt::Display for Limited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Message { limited: self, source: None }.fmt(f)
    }
}

/// The text of a [`Limited`], with or without where the limit is set.
struct Message<'a> {
    limited: &'a Limited,
    source: Option<&'a str>,
}

impl fmt::Display for Message<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let limited = self.limited;
        let name = limited.name.as_deref().unwrap_or_default();
        match limited.kind {
            LimitKind::PerIp => f.write_str("too many requests from this address")?,
            LimitKind::Global => f.write_str("the gateway is at its request rate limit")?,
            LimitKind::ProviderRequests | LimitKind::ClientRequests => write!(
                f,
                "{} \"{name}\" reached its limit of {} requests per minute",
                scope_noun(limited.kind),
                limited.limit
            )?,
            LimitKind::ProviderTokens | LimitKind::ClientTokens => write!(
                f,
                "{} \"{name}\" reached its limit of {} tokens per minute",
                scope_noun(limited.kind),
                limited.limit
            )?,
            LimitKind::ProviderQuota | LimitKind::ClientQuota => write!(
                f,
                "{} \"{name}\" used its quota of {} tokens",
                scope_noun(limited.kind),
                limited.limit
            )?,
            LimitKind::ClientBudget => write!(
                f,
                "client key \"{name}\" spent its budget of ${} (requests in flight included)",
                cliproxy_core::money::format_usd(limited.limit)
            )?,
            LimitKind::Unpriced => write!(
                f,
                "client key \"{name}\" has a budget, and the model it asked for has no price"
            )?,
            LimitKind::SharedState => f.write_str(
                "the shared state store (Redis) is unreachable, so the limits shared by every \
                 gateway instance cannot be checked",
            )?,
        }
        if let Some(source) = self.source {
            write!(f, " ({source})")?;
        }
        if let Some(at) = limited.resets_at.filter(|_| limited.kind.is_quota()) {
            return write!(f, "; it resets at {}", cliproxy_core::format_utc(at));
        }
        write!(f, "; retry after {} s", limited.retry_after_secs())
    }
}

impl std::error::Error for Limited {}

/// What an admitting limiter reports, for the `X-RateLimit-*` headers of a successful answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Admitted {
    /// The bucket's size (burst, or requests or tokens per minute).
    pub limit: u64,
    /// What is left after this request.
    pub remaining: u64,
    /// Time until the bucket is full again.
    pub reset_after: Duration,
}

impl Admitted {
    /// A standing: the bucket's size, what is left and when it is full again.
    pub const fn new(limit: u64, remaining: u64, reset_after: Duration) -> Self {
        Self { limit, remaining, reset_after }
    }

    /// `X-RateLimit-Reset` in whole seconds, rounded up.
    pub fn reset_after_secs(&self) -> u64 {
        ceil_secs(self.reset_after)
    }
}

/// Tokens reserved for a request that gives no `max_tokens` (a lower
/// `server.security.request_validation.max_tokens` takes its place in the gateway). A fixed
/// figure, not the provider's largest output: a request without `max_tokens` mostly gets a
/// short reply, and its real usage settles the reservation when the reply ends.
pub const DEFAULT_TOKEN_ESTIMATE: u64 = 4096;

/// The per-IP limiter, `server.security.rate_limiting`: one token bucket per client address,
/// IPv4 addresses by address and IPv6 addresses by their /64 prefix (the smallest block a
/// host is normally given, so one host cannot rotate through its /64 to escape the limit).
/// IPv4-mapped IPv6 peers count as the IPv4 address they carry.
///
/// Memory is bounded by `max_tracked` buckets of 16 bytes (plus the hash table's overhead),
/// spread over up to 64 independently locked shards so that concurrent requests rarely
/// contend. A bucket that has refilled to full is dropped whenever room is needed (and by
/// [`IpRateLimiter::evict_idle`]); when a shard is still full, addresses it does not track
/// share one strict *overflow bucket* with the per-address rate and burst. Under an address
/// spray, memory therefore stays bounded and the spray competes with itself for the overflow
/// bucket, while addresses already tracked keep their own buckets.
pub struct IpRateLimiter {
    clock: Arc<dyn Clock>,
    gcra: Gcra,
    shards: Box<[Mutex<Shard>]>,
    shard_mask: u64,
    shard_capacity: usize,
    router: RandomState,
    overflow: AtomicBucket,
}

impl IpRateLimiter {
    /// The limiter `server.security.rate_limiting` asks for, or `None` when it is off
    /// (`enabled: false` or `per_ip: false`).
    pub fn from_config(config: &PerIpRateLimitConfig, clock: Arc<dyn Clock>) -> Option<Self> {
        (config.enabled && config.per_ip)
            .then(|| Self::new(config.requests_per_second, config.burst, config.max_tracked, clock))
    }

    /// A limiter admitting `requests_per_second` per address after an initial `burst`,
    /// tracking at most `max_tracked` addresses.
    pub fn new(
        requests_per_second: NonZeroU32,
        burst: NonZeroU32,
        max_tracked: NonZeroUsize,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let gcra = Gcra::new(
            u64::from(requests_per_second.get()),
            u64::from(burst.get()),
            NANOS_PER_SECOND,
        );
        // A power of two of shards, never more than the cap, so that the per-shard capacities
        // add up to at most `max_tracked` and a shard is picked with a mask.
        let wanted = max_tracked.get().min(MAX_SHARDS);
        let shard_count = 1_usize << (usize::BITS - 1 - wanted.leading_zeros());
        let shards = (0..shard_count).map(|_| Mutex::new(Shard::default())).collect();
        Self {
            clock,
            gcra,
            shards,
            shard_mask: u64::try_from(shard_count - 1).unwrap_or(0),
            shard_capacity: max_tracked.get() / shard_count,
            router: RandomState::new(),
            overflow: AtomicBucket::new(gcra),
        }
    }

    /// Takes one request from `ip`'s bucket.
    pub fn check(&self, ip: IpAddr) -> Result<Admitted, Limited> {
        let key = ip_key(ip);
        let now = self.clock.monotonic_nanos();
        let refused = |refusal: Refusal| refusal.into_limited(LimitKind::PerIp, None);
        if let Some(shard) = self.shard(key) {
            let mut shard = lock(shard);
            if let Some(tat) = shard.buckets.get_mut(&key) {
                let (new_tat, admitted) = self.gcra.take(*tat, now, 1).map_err(refused)?;
                *tat = new_tat;
                return Ok(admitted);
            }
            if shard.buckets.len() >= self.shard_capacity {
                shard.evict_full(now, false);
            }
            if shard.buckets.len() < self.shard_capacity {
                // A new bucket starts full, exactly like one that was evicted.
                let (new_tat, admitted) = self.gcra.take(now, now, 1).map_err(refused)?;
                shard.buckets.insert(key, new_tat);
                shard.earliest_full = shard.earliest_full.min(new_tat);
                return Ok(admitted);
            }
        }
        self.overflow.take(now, 1).map_err(refused)
    }

    /// Forgets every bucket that has refilled to full (which changes no decision) and gives
    /// the memory back; returns how many were dropped. The gateway calls it now and then,
    /// e.g. every minute, so that memory falls back after a burst of addresses.
    pub fn evict_idle(&self) -> usize {
        let now = self.clock.monotonic_nanos();
        self.shards
            .iter()
            .map(|shard| {
                let mut shard = lock(shard);
                let dropped = shard.evict_full(now, true);
                // Shrinking only when the table is mostly empty avoids reallocating it on
                // every sweep while traffic is steady.
                if shard.buckets.len().saturating_mul(4) <= shard.buckets.capacity() {
                    shard.buckets.shrink_to_fit();
                }
                dropped
            })
            .sum()
    }

    /// How many addresses (IPv6: /64 prefixes) have a bucket now.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|shard| lock(shard).buckets.len()).sum()
    }

    /// Whether no address has a bucket.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most addresses tracked at once (the sum of the shards' capacities, at most
    /// `max_tracked`).
    pub fn capacity(&self) -> usize {
        self.shard_capacity * self.shards.len()
    }

    fn shard(&self, key: u64) -> Option<&Mutex<Shard>> {
        let index = usize::try_from(self.router.hash_one(key) & self.shard_mask).ok()?;
        self.shards.get(index)
    }
}

impl fmt::Debug for IpRateLimiter {
    // The buckets are left out: they are many, and they are client addresses.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IpRateLimiter")
            .field("burst", &self.gcra.limit)
            .field("interval_nanos", &self.gcra.interval)
            .field("shards", &self.shards.len())
            .field("capacity", &self.capacity())
            .finish_non_exhaustive()
    }
}

/// The global limiter, `server.rate_limit`: one token bucket for every request the gateway
/// serves, kept in one atomic so that it adds no lock to the request path.
#[derive(Debug)]
pub struct GlobalRateLimiter {
    clock: Arc<dyn Clock>,
    bucket: AtomicBucket,
}

impl GlobalRateLimiter {
    /// The limiter `server.rate_limit` asks for, or `None` when it is off.
    pub fn from_config(config: &GlobalRateLimitConfig, clock: Arc<dyn Clock>) -> Option<Self> {
        config.enabled.then(|| Self::new(config.requests_per_second, config.burst, clock))
    }

    /// A limiter admitting `requests_per_second` after an initial `burst`.
    pub fn new(requests_per_second: NonZeroU32, burst: NonZeroU32, clock: Arc<dyn Clock>) -> Self {
        let gcra = Gcra::new(
            u64::from(requests_per_second.get()),
            u64::from(burst.get()),
            NANOS_PER_SECOND,
        );
        Self { clock, bucket: AtomicBucket::new(gcra) }
    }

    /// Takes one request from the bucket.
    pub fn check(&self) -> Result<Admitted, Limited> {
        let now = self.clock.monotonic_nanos();
        self.bucket.take(now, 1).map_err(|refusal| refusal.into_limited(LimitKind::Global, None))
    }
}

/// Requests per minute and tokens per minute for each provider (`providers.<name>.rate_limit`)
/// or each client key (`auth.api_keys[<name>].rate_limit`): one limiter per scope, built at
/// start-up from the configured names.
///
/// Requests per minute is a bucket of N requests refilled at N/60 per second. Tokens per
/// minute works in two steps, because the real usage is only known after the reply:
/// [`MinuteLimiter::reserve`] takes the request's `max_tokens` (or the default estimate)
/// before it is sent and refuses when that does not fit, and [`Reservation::settle`] gives
/// back what was not used, or takes the excess, which puts the bucket into debt so that the
/// next requests wait until it is paid. A request that asks for more than a whole minute's
/// tokens reserves one minute's worth, so it can still be admitted when the bucket is full.
#[derive(Debug)]
pub struct MinuteLimiter {
    scope: QuotaScope,
    clock: Arc<dyn Clock>,
    default_estimate: u64,
    /// The buckets by name, swapped whole when limits change at run time, so that the
    /// request path reads them without a lock.
    keys: ArcSwap<HashMap<String, Arc<KeyBuckets>>>,
}

impl MinuteLimiter {
    /// A limiter for the providers or the client keys of `scope`, with the `rate_limit` of
    /// each; names with neither figure set are not limited. `default_estimate` is the number
    /// of tokens reserved for a request without `max_tokens` (e.g. the validation cap, or
    /// [`DEFAULT_TOKEN_ESTIMATE`]).
    pub fn new(
        scope: QuotaScope,
        limits: impl IntoIterator<Item = (String, RateLimit)>,
        default_estimate: u64,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let keys = limits
            .into_iter()
            .filter_map(|(name, limit)| KeyBuckets::new(limit).map(|b| (name, Arc::new(b))))
            .collect();
        Self { scope, clock, default_estimate, keys: ArcSwap::from_pointee(keys) }
    }

    /// Puts new limits in force for the names given: `Some` limit for a name that had none,
    /// or other ones, gets fresh (full) buckets; the same limit keeps the buckets it has; a
    /// `None` (or a limit of neither figure) removes the name's buckets. Names not given
    /// keep theirs. Fresh buckets start full, exactly as an idle key's would be after a
    /// minute: a changed limit does not carry over what the old buckets had taken (their
    /// figures mean something else), and reservations made before settle against the old
    /// buckets, which nothing else uses any more.
    pub fn update(&self, changes: impl IntoIterator<Item = (String, Option<RateLimit>)>) {
        // One writer at a time (the admission serialises its updates), so load, edit and
        // store loses nothing; the request path keeps reading the old map meanwhile.
        let mut keys: HashMap<String, Arc<KeyBuckets>> = HashMap::clone(&self.keys.load());
        for (name, limit) in changes {
            match limit.and_then(KeyBuckets::new) {
                None => {
                    keys.remove(&name);
                }
                Some(_) if keys.get(&name).is_some_and(|b| Some(b.limit) == limit) => {}
                Some(buckets) => {
                    keys.insert(name, Arc::new(buckets));
                }
            }
        }
        self.keys.store(Arc::new(keys));
    }

    /// Takes one request and reserves `max_tokens` (or the default estimate) for `name`.
    /// Both are taken or neither is. A name without limits gets a reservation that does
    /// nothing.
    pub fn reserve(&self, name: &str, max_tokens: Option<u64>) -> Result<Reservation, Limited> {
        let Some(buckets) = self.keys.load().get(name).cloned() else {
            return Ok(Reservation::unlimited());
        };
        let now = self.clock.monotonic_nanos();
        let estimate = max_tokens.unwrap_or(self.default_estimate);
        let reserved = buckets.tokens.map_or(0, |gcra| estimate.min(gcra.limit));
        let refused = |kind: LimitKind| {
            move |refusal: Refusal| refusal.into_limited(kind, Some(name.to_owned()))
        };
        let mut tats = lock(&buckets.tats);
        let requests = buckets
            .requests
            .map(|gcra| gcra.take(tats.requests, now, 1))
            .transpose()
            .map_err(refused(LimitKind::requests_of(self.scope)))?;
        let tokens = buckets
            .tokens
            .map(|gcra| gcra.take(tats.tokens, now, reserved))
            .transpose()
            .map_err(refused(LimitKind::tokens_of(self.scope)))?;
        if let Some((tat, _)) = requests {
            tats.requests = tat;
        }
        if let Some((tat, _)) = tokens {
            tats.tokens = tat;
        }
        drop(tats);
        Ok(Reservation {
            held: Some((buckets, Arc::clone(&self.clock))),
            reserved,
            requests: requests.map(|(_, admitted)| admitted),
            tokens: tokens.map(|(_, admitted)| admitted),
        })
    }

    /// Whether `name` has a requests or tokens per minute limit.
    pub fn is_limited(&self, name: &str) -> bool {
        self.keys.load().contains_key(name)
    }
}

/// One request admitted by a [`MinuteLimiter`], holding its reserved tokens until the reply
/// tells the real usage.
///
/// Dropping a reservation without settling it (the client hung up, the upstream failed
/// without a usage figure) leaves the reserved tokens spent: it is the same as settling with
/// the reserved amount. That errs on the side of the upstream's own limits, which count a
/// request the moment it is sent. Call [`Reservation::cancel`] for a request that never left
/// the gateway (e.g. a later limit refused it).
#[derive(Debug)]
#[must_use = "settle the reservation with the real usage, or cancel it if the request was not sent"]
pub struct Reservation {
    held: Option<(Arc<KeyBuckets>, Arc<dyn Clock>)>,
    reserved: u64,
    requests: Option<Admitted>,
    tokens: Option<Admitted>,
}

impl Reservation {
    /// A reservation for a name without limits.
    pub fn unlimited() -> Self {
        Self { held: None, reserved: 0, requests: None, tokens: None }
    }

    /// A reservation made in another store (a shared one, by an
    /// [`Admission`](crate::Admission) of its own): it records the tokens reserved there and
    /// the standings after it. Settling or cancelling it here does nothing; the admission
    /// that made it ends it in its store.
    pub fn recorded(reserved: u64, requests: Option<Admitted>, tokens: Option<Admitted>) -> Self {
        Self { held: None, reserved, requests, tokens }
    }

    /// The tokens reserved (0 without a tokens-per-minute limit).
    pub fn reserved_tokens(&self) -> u64 {
        self.reserved
    }

    /// The requests-per-minute bucket after this request, if there is one.
    pub fn requests(&self) -> Option<Admitted> {
        self.requests
    }

    /// The tokens-per-minute bucket after this reservation, if there is one.
    pub fn tokens(&self) -> Option<Admitted> {
        self.tokens
    }

    /// Settles with the tokens the request really used: the unused part of the reservation
    /// is given back, and usage above it is taken as debt that later requests wait for.
    pub fn settle(self, used_tokens: u64) {
        let Some((buckets, clock)) = &self.held else { return };
        let Some(gcra) = buckets.tokens else { return };
        let now = clock.monotonic_nanos();
        let mut tats = lock(&buckets.tats);
        tats.tokens = if used_tokens >= self.reserved {
            gcra.add_debt(tats.tokens, now, used_tokens - self.reserved)
        } else {
            gcra.give_back(tats.tokens, now, self.reserved - used_tokens)
        };
    }

    /// Gives back the request and the whole reservation, for a request that was not sent.
    pub fn cancel(self) {
        let Some((buckets, clock)) = &self.held else { return };
        let now = clock.monotonic_nanos();
        let mut tats = lock(&buckets.tats);
        if let Some(gcra) = buckets.requests {
            tats.requests = gcra.give_back(tats.requests, now, 1);
        }
        if let Some(gcra) = buckets.tokens {
            tats.tokens = gcra.give_back(tats.tokens, now, self.reserved);
        }
    }
}

const NANOS_PER_SECOND: u64 = 1_000_000_000;
const NANOS_PER_MINUTE: u64 = 60 * NANOS_PER_SECOND;
const MAX_SHARDS: usize = 64;
/// A full shard is scanned for full buckets at most this often, so that a spray of new
/// addresses (which keeps every shard full) costs one scan per shard per interval, not one
/// per request.
const MIN_SCAN_GAP_NANOS: u64 = 10_000_000;
/// IPv4 addresses are keyed inside `ffff:ffff::/32`, a multicast range that is never the
/// source of a connection, so they cannot share a key with an IPv6 /64.
const IPV4_KEY_TAG: u64 = 0xffff_ffff_0000_0000;

/// The bucket key of an address: the IPv4 address, or the IPv6 /64 prefix.
pub(crate) fn ip_key(ip: IpAddr) -> u64 {
    match canonical_ip(ip) {
        IpAddr::V4(v4) => IPV4_KEY_TAG | u64::from(u32::from(v4)),
        IpAddr::V6(v6) => {
            let [a, b, c, d, ..] = v6.segments();
            (u64::from(a) << 48) | (u64::from(b) << 32) | (u64::from(c) << 16) | u64::from(d)
        }
    }
}

fn ceil_secs(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

fn scope_noun(kind: LimitKind) -> &'static str {
    match kind {
        LimitKind::ClientRequests
        | LimitKind::ClientTokens
        | LimitKind::ClientQuota
        | LimitKind::ClientBudget
        | LimitKind::Unpriced => "client key",
        _ => "provider",
    }
}

/// Locks a mutex, carrying on through poisoning: every critical section here leaves its
/// numbers consistent at each step, so a panic elsewhere does not make them unusable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The figures of one token bucket in GCRA form.
#[derive(Debug, Clone, Copy)]
struct Gcra {
    /// Nanoseconds to refill one unit.
    interval: u64,
    /// Nanoseconds to refill the whole bucket: `interval * limit`.
    capacity: u64,
    /// The bucket's size in units.
    limit: u64,
}

/// A refusal before it is told which limit it came from.
#[derive(Debug, Clone, Copy)]
struct Refusal {
    limit: u64,
    remaining: u64,
    reset_after: u64,
    retry_after: u64,
}

impl Refusal {
    fn into_limited(self, kind: LimitKind, name: Option<String>) -> Limited {
        Limited {
            kind,
            name,
            limit: self.limit,
            remaining: self.remaining,
            reset_after: Duration::from_nanos(self.reset_after),
            retry_after: Duration::from_nanos(self.retry_after.max(1)),
            resets_at: None,
        }
    }
}

impl Gcra {
    /// A bucket of `limit` units refilled at `rate` units per `period_nanos`. The interval
    /// is rounded up, so a rate that does not divide the period evenly errs on the strict
    /// side by under a nanosecond per unit.
    fn new(rate: u64, limit: u64, period_nanos: u64) -> Self {
        let interval = period_nanos.div_ceil(rate.max(1)).max(1);
        let limit = limit.max(1);
        Self { interval, capacity: interval.saturating_mul(limit), limit }
    }

    /// Takes `cost` units at `now` from the bucket whose theoretical arrival time is `tat`;
    /// returns the new TAT and what is left, or why not.
    fn take(self, tat: u64, now: u64, cost: u64) -> Result<(u64, Admitted), Refusal> {
        let base = tat.max(now);
        let new_tat = base.saturating_add(cost.saturating_mul(self.interval));
        let ahead = new_tat - now;
        if ahead > self.capacity {
            let owed = base - now;
            return Err(Refusal {
                limit: self.limit,
                remaining: self.capacity.saturating_sub(owed) / self.interval,
                reset_after: owed,
                retry_after: ahead - self.capacity,
            });
        }
        let admitted = Admitted {
            limit: self.limit,
            remaining: (self.capacity - ahead) / self.interval,
            reset_after: Duration::from_nanos(ahead),
        };
        Ok((new_tat, admitted))
    }

    /// The TAT after `units` are given back; a bucket never fills beyond full.
    fn give_back(self, tat: u64, now: u64, units: u64) -> u64 {
        tat.saturating_sub(units.saturating_mul(self.interval)).max(tat.min(now))
    }

    /// The TAT after `units` more are taken unconditionally (usage above a reservation).
    fn add_debt(self, tat: u64, now: u64, units: u64) -> u64 {
        tat.max(now).saturating_add(units.saturating_mul(self.interval))
    }
}

/// A token bucket in one atomic: a compare-and-swap loop on the TAT.
#[derive(Debug)]
struct AtomicBucket {
    gcra: Gcra,
    tat: AtomicU64,
}

impl AtomicBucket {
    fn new(gcra: Gcra) -> Self {
        Self { gcra, tat: AtomicU64::new(0) }
    }

    fn take(&self, now: u64, cost: u64) -> Result<Admitted, Refusal> {
        let mut current = self.tat.load(Ordering::Acquire);
        loop {
            let (new_tat, admitted) = self.gcra.take(current, now, cost)?;
            match self.tat.compare_exchange_weak(
                current,
                new_tat,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(admitted),
                Err(actual) => current = actual,
            }
        }
    }
}

/// One shard of the per-IP table: address key → TAT.
#[derive(Debug, Default)]
struct Shard {
    buckets: HashMap<u64, u64>,
    /// No bucket is full before this instant (a lower bound), so a scan before it would
    /// find nothing to drop.
    earliest_full: u64,
    /// No scan before this instant, except a forced one.
    next_scan: u64,
}

impl Shard {
    /// Drops the buckets that are full at `now`; returns how many.
    fn evict_full(&mut self, now: u64, force: bool) -> usize {
        if !force && (now < self.earliest_full || now < self.next_scan) {
            return 0;
        }
        let before = self.buckets.len();
        let mut earliest = u64::MAX;
        self.buckets.retain(|_, tat| {
            let keep = *tat > now;
            if keep {
                earliest = earliest.min(*tat);
            }
            keep
        });
        self.earliest_full = earliest;
        self.next_scan = now.saturating_add(MIN_SCAN_GAP_NANOS);
        before - self.buckets.len()
    }
}

/// The requests and tokens buckets of one provider or client key.
#[derive(Debug)]
struct KeyBuckets {
    /// The limit the buckets were built for, to tell a changed limit from the same one.
    limit: RateLimit,
    requests: Option<Gcra>,
    tokens: Option<Gcra>,
    tats: Mutex<Tats>,
}

impl KeyBuckets {
    /// Full buckets for `limit`, or `None` when it sets neither figure.
    fn new(limit: RateLimit) -> Option<Self> {
        if limit.requests_per_minute.is_none() && limit.tokens_per_minute.is_none() {
            return None;
        }
        let per_minute = |n: u64| Gcra::new(n, n, NANOS_PER_MINUTE);
        Some(Self {
            limit,
            requests: limit.requests_per_minute.map(|n| per_minute(u64::from(n.get()))),
            tokens: limit.tokens_per_minute.map(|n: NonZeroU64| per_minute(n.get())),
            tats: Mutex::new(Tats::default()),
        })
    }
}

#[derive(Debug, Default)]
struct Tats {
    requests: u64,
    tokens: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FakeClock;

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    #[test]
    fn keys_group_ipv6_by_64_and_keep_ipv4_apart() {
        let key = |text: &str| ip_key(text.parse().unwrap());
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff:ffff:ffff:ffff"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:10.0.0.1"), key("10.0.0.1"));
        assert_ne!(key("10.0.0.1"), key("10.0.0.2"));
        // The IPv4 tag keeps 0.0.0.0 apart from the all-zero /64.
        assert_ne!(key("0.0.0.0"), key("::"));
    }

    #[test]
    fn gcra_admits_the_burst_then_one_per_interval() {
        let gcra = Gcra::new(10, 3, NANOS_PER_SECOND);
        let mut tat = 0;
        for left in [2, 1, 0] {
            let (next, admitted) = gcra.take(tat, 0, 1).unwrap();
            assert_eq!(admitted.remaining, left);
            tat = next;
        }
        let refusal = gcra.take(tat, 0, 1).unwrap_err();
        assert_eq!((refusal.retry_after, refusal.reset_after), (100_000_000, 300_000_000));
        assert!(gcra.take(tat, 100_000_000, 1).is_ok());
    }

    #[test]
    fn give_back_never_fills_beyond_full() {
        let gcra = Gcra::new(60, 60, NANOS_PER_MINUTE);
        // A full bucket stays as it is.
        assert_eq!(gcra.give_back(5, 10, 100), 5);
        // A bucket owing 3 s gets back at most those 3 s.
        assert_eq!(
            gcra.give_back(13 * NANOS_PER_SECOND, 10 * NANOS_PER_SECOND, 100),
            10 * NANOS_PER_SECOND
        );
    }

    #[test]
    fn small_caps_use_fewer_shards_and_never_exceed_the_cap() {
        let clock = FakeClock::at_unix(0);
        let limiter =
            IpRateLimiter::new(nz(1), nz(1), NonZeroUsize::new(10).unwrap(), clock.clone());
        assert_eq!(limiter.shards.len(), 8);
        assert!(limiter.capacity() <= 10);
        for n in 0..1_000_u32 {
            let _ = limiter.check(IpAddr::from(n.to_be_bytes()));
        }
        assert!(limiter.len() <= 10);
    }

    #[test]
    fn debug_output_leaves_addresses_out() {
        let clock = FakeClock::at_unix(0);
        let limiter = IpRateLimiter::new(nz(1), nz(1), NonZeroUsize::new(100).unwrap(), clock);
        limiter.check("192.0.2.77".parse().unwrap()).unwrap();
        let text = format!("{limiter:?}");
        assert!(!text.contains("192.0.2.77") && text.contains("IpRateLimiter"), "{text}");
    }
}
