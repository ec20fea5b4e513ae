//! [`RedisAdmission`]: the [`Admission`] of several gateway instances sharing one Redis
//! server; its documentation says how the counts are kept there and why.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use cliproxy_core::{Quota, QuotaPeriod, RateLimit};

use crate::admission::{
    Admission, AdmissionStatus, Caller, Demand, LimitTable, LocalAdmission, Settled, Ticket, Used,
    unpriced,
};
use crate::config::{GlobalRateLimitConfig, OnUnavailable, PerIpRateLimitConfig};
use crate::error::{Error, Result, Setting};
use crate::quota::{QuotaStatus, budget_quota, next_reset, period_start};
use crate::ratelimit::{Admitted, LimitKind, Limited, Reservation, ip_key};
use crate::redis_link::{RedisLink, Unavailable};
use crate::types::{QuotaScope, QuotaUsage};

/// The settlement thread sends what is queued at least this often.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(10);
/// With this many corrections queued, the settlement thread sends them without waiting for
/// the interval.
pub const BATCH_WAKE: usize = 256;
/// A hold against a quota or budget counts for this many minutes of admission at most.
pub const HOLD_MINUTES: u64 = 15;
/// At most this many corrections go in one script call (a larger queue takes several).
const CALL_MAX: usize = 1024;
/// A quota key lives this long past its period's end, for late settlements and skewed clocks.
const KEY_GRACE_SECS: u64 = 86_400;
/// A minute-bucket correction that could not be sent for this long is dropped: the bucket
/// has refilled by then, while a quota's count is kept until it is sent.
const BUCKET_CORRECTION_TTL: Duration = Duration::from_secs(60);
/// The largest figure sent to the script: Lua's numbers are doubles, exact below 2^53.
const LUA_MAX: u64 = 1 << 53;
/// How long a refusal for want of Redis (`deny`) asks the client to wait.
const SHARED_STATE_RETRY: Duration = Duration::from_secs(1);

const RESERVE_SCRIPT: &str = include_str!("redis_admission/reserve.lua");
const SETTLE_SCRIPT: &str = include_str!("redis_admission/settle.lua");

/// The [`Admission`] of several gateway instances that share one Redis
/// server (`state.backend: redis`, SPEC §11), so that a limit holds across them instead of
/// being multiplied by their number.
///
/// The limits themselves stay in this process's memory (the config file and the client-key
/// table are their authority); Redis holds only the counts, under `state.redis.key_prefix`:
///
/// - `rl:<scope>:<name>:<rpm>:<tpm>`: a hash of the two minute buckets of a provider or client
///   key, each in the GCRA form [`MinuteLimiter`](crate::MinuteLimiter) uses (the instant the
///   bucket is full again, in microseconds of the Redis clock). The figures are part of the
///   name, so a changed limit starts from fresh buckets on every instance at once, as the
///   local one does; the key expires when its buckets are full (a full bucket is none).
/// - `quota:<scope>:<name>:<period>:<start>`: a hash of one period's count (`used`) and what
///   requests in flight hold (`h<minute>`: per minute of admission), expiring a day after the
///   period ends.
///
/// A request costs one round trip: [`Admission::reserve`] is one `EVALSHA` of a Lua script
/// that checks the provider's and the key's requests and tokens per minute, both quotas and
/// the budget, and takes all of them or none, atomically, with the clock of the Redis server
/// (`TIME`), so instances with skewed clocks agree. Settling and cancelling never wait on
/// Redis: the correction (what was really used minus what was held) is queued and a
/// background thread sends the queue every [`FLUSH_INTERVAL`] (or at [`BATCH_WAKE`] queued
/// corrections), one script call per batch. [`RedisAdmission::flush`] sends what is queued at
/// once, for a shutdown; dropping the admission does the same.
///
/// When Redis cannot be reached, `state.redis.on_unavailable` decides: `local` admits with the
/// wrapped [`LocalAdmission`] (each instance its own limits, seeded with the shared counts as
/// last seen) and queues what those requests use, so that it is added to the shared quotas and
/// budgets when Redis answers again ("reconciled"); `deny` refuses with
/// [`LimitKind::SharedState`]. No call waits longer than `state.redis.timeout` (the link's
/// bound), and while the link is down none waits at all.
///
/// **Two halves of the per-IP and global limits.** [`Admission::check_ip`] and
/// [`Admission::check_global`] are asked before the client is known, for every request
/// including floods of strangers, so they stay per instance (the wrapped [`LocalAdmission`],
/// no round trip): a shared bucket there would put Redis on the path of every unauthenticated
/// request. With [`RedisAdmission::with_shared_buckets`], a request that reaches the reserve
/// stage (an authenticated client whose request is about to go out) is charged as well to a
/// per-IP bucket and a global bucket that every instance shares, inside the same script: the
/// per-IP and global limits then hold across instances for the traffic that costs upstream
/// money, at no extra round trip. Neither is given back by a cancellation, as locally.
///
/// **Redis commands.** Per request, one round trip (`EVALSHA`); inside it, `TIME` and for each
/// limit that applies a read and a write: 12 commands for a key with both minute limits and a
/// quota on a provider with a quota. Per settlement batch (every [`FLUSH_INTERVAL`]), one
/// `EVALSHA` carrying every correction queued, merged per key.
///
/// **Quota periods and clock skew.** The period a count belongs to (a UTC day, ISO week or
/// month) is computed here, not in the script, from this host's clock corrected by the offset
/// to the Redis clock learnt from the last reply. Instances therefore agree on the boundary to
/// within the time since their last request (and the first request of a process uses its own
/// clock): near a boundary, a request may be counted in the period that just ended. The bucket
/// clock is always Redis's.
///
/// **Holds that nobody ends.** What a request holds against a quota or budget is stored per
/// minute of admission and counts for [`HOLD_MINUTES`]: a process that crashes with requests in
/// flight leaves holds that lapse then, instead of blocking a quota until the period ends. A
/// request that lasts longer still has its usage counted when it settles.
///
/// Built from a [`RedisLink`] and the [`LocalAdmission`] of the same limits, which answers
/// the per-IP and global buckets (per instance) and stands in while Redis is unreachable
/// under `on_unavailable: local`.
pub struct RedisAdmission {
    inner: Arc<Inner>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

/// What [`RedisAdmission::take_notices`] reports, for the caller to log.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SharedNotice {
    /// Redis could not be asked; requests are admitted by this instance's own limits until
    /// it answers again. The cause, without the URL.
    Local(String),
    /// Redis answered again: the shared limits are back in force.
    Shared,
    /// The usage counted by this instance during an outage was added to the shared counts:
    /// this many corrections.
    Reconciled(u64),
}

/// What [`RedisAdmission::stats`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SharedStats {
    /// Requests admitted or refused by the shared limits (one round trip each).
    pub shared_reserves: u64,
    /// Requests decided by this instance's own limits, for want of Redis.
    pub local_reserves: u64,
    /// Script calls that sent settlement batches.
    pub batches: u64,
    /// Corrections those batches carried (after merging those of one key).
    pub corrections: u64,
    /// Corrections queued and not yet sent.
    pub pending: usize,
    /// Whether requests are admitted by this instance's own limits now.
    pub local: bool,
}

impl RedisAdmission {
    /// The admission of `providers` and `clients` (the limits `local` was built with) over
    /// `link`, with its settlement thread started. `local` also gives the estimate of a
    /// request without `max_tokens`. Fails only when the thread cannot be started.
    pub fn new(
        link: Arc<RedisLink>,
        local: LocalAdmission,
        providers: LimitTable,
        clients: LimitTable,
    ) -> Result<Self> {
        let inner = Arc::new(Inner {
            estimate: local.estimate(),
            link,
            local,
            providers,
            clients: ArcSwap::from_pointee(clients),
            front: ArcSwap::from_pointee(Front::default()),
            updating: Mutex::new(()),
            reserve: redis::Script::new(RESERVE_SCRIPT),
            settle: redis::Script::new(SETTLE_SCRIPT),
            clock_offset: AtomicI64::new(0),
            counts: Mutex::new(HashMap::new()),
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            sending: Mutex::new(()),
            stop: AtomicBool::new(false),
            local_now: AtomicBool::new(false),
            notices: Mutex::new(Vec::new()),
            shared_reserves: AtomicU64::new(0),
            local_reserves: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            corrections: AtomicU64::new(0),
        });
        let worker_inner = Arc::clone(&inner);
        let worker = thread::Builder::new()
            .name("cliproxy-redis-settle".to_owned())
            .spawn(move || worker_inner.run_worker())
            .map_err(|e| Error::Redis {
                setting: Setting::RedisUrl,
                message: format!("cannot start the settlement thread: {e}"),
            })?;
        Ok(Self { inner, worker: Mutex::new(Some(worker)) })
    }

    /// With the per-IP and global buckets of these configs shared as well (see "Two
    /// halves" above): a request that reaches [`Admission::reserve`] with
    /// its address ([`Demand::with_client_ip`]) is charged, in the same round trip, to a
    /// bucket of its address and to the global bucket of keyed requests that every instance
    /// shares, each of the size the config gives. The wrapped [`LocalAdmission`] keeps
    /// answering [`Admission::check_ip`] and [`Admission::check_global`] per instance, before
    /// the client is known.
    pub fn with_shared_buckets(
        self,
        per_ip: &PerIpRateLimitConfig,
        global: &GlobalRateLimitConfig,
    ) -> Self {
        let per_second = |rate: std::num::NonZeroU32, burst: std::num::NonZeroU32| {
            let interval_nanos = 1_000_000_000_u64.div_ceil(u64::from(rate.get())).max(1);
            (interval_nanos as f64 / 1_000.0, u64::from(burst.get()))
        };
        self.inner.front.store(Arc::new(Front {
            per_ip: (per_ip.enabled && per_ip.per_ip)
                .then(|| per_second(per_ip.requests_per_second, per_ip.burst)),
            global: global.enabled.then(|| per_second(global.requests_per_second, global.burst)),
        }));
        self
    }

    /// Sends every queued correction now, on the caller's thread (bounded by the link's
    /// timeout per script call). The gateway calls it at shutdown, after the last request has
    /// settled; an error means Redis could not take them, and they stay queued.
    pub fn flush(&self) -> std::result::Result<(), Unavailable> {
        self.inner.send_queued()
    }

    /// Stops the settlement thread after a last [`RedisAdmission::flush`]; what could not be
    /// sent is returned as the error. Dropping the admission does the same.
    pub fn close(&self) -> std::result::Result<(), Unavailable> {
        self.inner.stop.store(true, Ordering::Release);
        self.inner.wake.notify_all();
        if let Some(worker) = lock(&self.worker).take() {
            let _ = worker.join();
        }
        self.inner.send_queued()
    }

    /// The changes of standing since the last call, oldest first, for the caller to log.
    pub fn take_notices(&self) -> Vec<SharedNotice> {
        std::mem::take(&mut *lock(&self.inner.notices))
    }

    /// The admission's figures.
    pub fn stats(&self) -> SharedStats {
        let inner = &self.inner;
        SharedStats {
            shared_reserves: inner.shared_reserves.load(Ordering::Relaxed),
            local_reserves: inner.local_reserves.load(Ordering::Relaxed),
            batches: inner.batches.load(Ordering::Relaxed),
            corrections: inner.corrections.load(Ordering::Relaxed),
            pending: lock(&inner.queue).len(),
            local: inner.local_now.load(Ordering::Relaxed),
        }
    }

    /// The link it uses.
    pub fn link(&self) -> &Arc<RedisLink> {
        &self.inner.link
    }
}

impl Drop for RedisAdmission {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

impl fmt::Debug for RedisAdmission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisAdmission")
            .field("link", &self.inner.link)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Admission for RedisAdmission {
    /// Per instance, from the wrapped [`LocalAdmission`]: no round trip before the client is
    /// known.
    fn check_ip(&self, ip: IpAddr) -> Result<Option<Admitted>, Limited> {
        self.inner.local.check_ip(ip)
    }

    /// Per instance, from the wrapped [`LocalAdmission`].
    fn check_global(&self, caller: Caller) -> Result<(), Limited> {
        self.inner.local.check_global(caller)
    }

    fn reserve(&self, provider: &str, client: &str, demand: Demand) -> Result<Ticket, Limited> {
        self.inner.reserve(provider, client, demand)
    }

    fn settle(&self, mut ticket: Ticket, used: Used) -> Settled {
        let inner = &self.inner;
        let Some(hold) = ticket.take_shared::<SharedHold>() else {
            // Admitted by this instance during an outage: settled here, and what it used is
            // queued for the shared counts (reconciliation).
            let charged = Charged::of(&ticket, used);
            let (provider, client) = (ticket.provider().to_owned(), ticket.client().to_owned());
            let settled = inner.local.settle(ticket, used);
            inner.queue_usage(&provider, &client, charged);
            return settled;
        };
        let charged = Charged::of(&ticket, used);
        let tokens = |reserved: u64| used.tokens.unwrap_or(reserved);
        let mut corrections = Vec::new();
        for (bucket, scope) in [
            (&hold.provider_bucket, QuotaScope::Provider),
            (&hold.client_bucket, QuotaScope::Client),
        ] {
            let (Some(key), Some(interval)) = (&bucket.key, bucket.tokens_interval) else {
                continue;
            };
            let reserved = ticket.minute(scope).reserved_tokens();
            let real = tokens(reserved);
            let correction = if real >= reserved {
                BucketFix::debt(key, interval, real - reserved)
            } else {
                BucketFix::give_back(key, 't', interval, reserved - real)
            };
            corrections.extend(correction);
        }
        let (provider, client) = (ticket.provider().to_owned(), ticket.client().to_owned());
        inner.queue(corrections, &hold.quotas);
        inner.queue_usage(&provider, &client, charged);
        let provider_quota = inner.status(QuotaScope::Provider, &provider);
        let budget = inner.status(QuotaScope::Budget, &client);
        Settled::new(provider, provider_quota).with_client_budget(client, budget)
    }

    fn cancel(&self, mut ticket: Ticket) {
        let Some(hold) = ticket.take_shared::<SharedHold>() else {
            self.inner.local.cancel(ticket);
            return;
        };
        let mut corrections = Vec::new();
        for (bucket, scope) in [
            (&hold.provider_bucket, QuotaScope::Provider),
            (&hold.client_bucket, QuotaScope::Client),
        ] {
            let Some(key) = &bucket.key else { continue };
            if let Some(interval) = bucket.requests_interval {
                corrections.extend(BucketFix::give_back(key, 'r', interval, 1));
            }
            if let Some(interval) = bucket.tokens_interval {
                let reserved = ticket.minute(scope).reserved_tokens();
                corrections.extend(BucketFix::give_back(key, 't', interval, reserved));
            }
        }
        self.inner.queue(corrections, &hold.quotas);
    }

    /// From the counts the last reserve replies brought back (and the settlements since),
    /// without a round trip: 0 used for a name this instance has not admitted a request for
    /// in the current period. While requests are admitted locally, from the local count.
    fn quota_status(&self, scope: QuotaScope, name: &str) -> Option<QuotaStatus> {
        self.inner.status(scope, name)
    }

    fn status(&self) -> AdmissionStatus {
        self.inner.local.status()
    }

    fn evict_idle(&self) {
        self.inner.local.evict_idle();
    }

    /// The shared counts are in Redis already: the stored ones only seed the local stand-in,
    /// so that an outage starts from them rather than from zero.
    fn seed_usage(&self, stored: Vec<QuotaUsage>) -> usize {
        self.inner.local.seed_usage(stored)
    }

    /// None: Redis keeps the counts itself (the stand-in's own counts are reconciled through
    /// the settlement queue, not through the state store).
    fn take_dirty_usage(&self) -> Vec<QuotaUsage> {
        Vec::new()
    }

    fn take_notices(&self) -> Vec<String> {
        RedisAdmission::take_notices(self)
            .into_iter()
            .map(|notice| match notice {
                SharedNotice::Local(cause) => format!(
                    "the shared limits cannot be checked ({cause}); admitting by this instance's own limits"
                ),
                SharedNotice::Shared => "the shared limits are in force again".to_owned(),
                SharedNotice::Reconciled(n) => format!(
                    "the usage this instance counted while Redis was unreachable was added to the shared counts ({n} corrections)"
                ),
            })
            .collect()
    }

    fn close(&self) -> std::result::Result<(), String> {
        RedisAdmission::close(self).map_err(|e| e.to_string())
    }

    fn update_client_limits(&self, limits: &LimitTable) -> Result<()> {
        let _serialised = lock(&self.inner.updating);
        let mut table = LimitTable::clone(&self.inner.clients.load());
        for (name, wanted) in limits {
            table.insert(name.clone(), *wanted);
        }
        self.inner.clients.store(Arc::new(table));
        self.inner.local.update_client_limits(limits)
    }
}

/// What a ticket held in Redis, for its settlement or cancellation.
#[derive(Debug)]
pub(crate) struct SharedHold {
    provider_bucket: BucketHold,
    client_bucket: BucketHold,
    /// The provider's quota, the client key's quota and its budget, when limited.
    quotas: [Option<QuotaHold>; 3],
}

/// A name's minute buckets as they were when the request was admitted: changed limits later
/// are other keys, and the reservation settles against the buckets it took from.
#[derive(Debug, Default)]
struct BucketHold {
    key: Option<String>,
    requests_interval: Option<f64>,
    tokens_interval: Option<f64>,
}

/// A hold against one quota or budget: the key of the period it was taken in, and its field.
#[derive(Debug)]
struct QuotaHold {
    key: String,
    field: String,
    amount: u64,
}

/// What a settlement charges the provider's quota, the client key's quota and its budget.
#[derive(Debug, Clone, Copy)]
struct Charged([u64; 3]);

impl Charged {
    fn of(ticket: &Ticket, used: Used) -> Self {
        let tokens = |scope| used.tokens.unwrap_or(ticket.quota_held(scope));
        let cost = used.cost.unwrap_or(ticket.quota_held(QuotaScope::Budget));
        Self([tokens(QuotaScope::Provider), tokens(QuotaScope::Client), cost])
    }
}

const SCOPES: [QuotaScope; 3] = [QuotaScope::Provider, QuotaScope::Client, QuotaScope::Budget];

/// One correction to a minute bucket.
#[derive(Debug, Clone)]
struct BucketFix {
    key: String,
    field: char,
    debt: bool,
    micros: f64,
    at: Instant,
}

impl BucketFix {
    fn give_back(key: &str, field: char, interval: f64, units: u64) -> Option<Self> {
        (units > 0).then(|| Self {
            key: key.to_owned(),
            field,
            debt: false,
            micros: interval * lua_figure(units) as f64,
            at: Instant::now(),
        })
    }

    fn debt(key: &str, interval: f64, units: u64) -> Option<Self> {
        (units > 0).then(|| Self {
            key: key.to_owned(),
            field: 't',
            debt: true,
            micros: interval * lua_figure(units) as f64,
            at: Instant::now(),
        })
    }
}

/// The corrections to one quota key: holds ended (by field) and usage added.
#[derive(Debug, Default, Clone)]
struct QuotaFix {
    released: HashMap<String, u64>,
    used: u64,
    expire_at: u64,
}

/// The corrections waiting for the settlement thread. Those of one quota key are merged (they
/// add up); those of one bucket are merged with the one before when it is of the same kind
/// (two give-backs or two debts add up, a give-back and a debt do not commute).
#[derive(Debug, Default)]
struct Queue {
    buckets: Vec<BucketFix>,
    /// The index in `buckets` of the last correction of each key and field.
    last: HashMap<(String, char), usize>,
    quotas: HashMap<String, QuotaFix>,
    /// Usage counted while Redis could not be asked, for the reconciliation notice.
    from_outage: u64,
}

impl Queue {
    fn len(&self) -> usize {
        self.buckets.len() + self.quotas.len()
    }

    fn push_bucket(&mut self, fix: BucketFix) {
        let slot = (fix.key.clone(), fix.field);
        if let Some(&at) = self.last.get(&slot)
            && let Some(previous) = self.buckets.get_mut(at)
            && previous.debt == fix.debt
        {
            previous.micros += fix.micros;
            return;
        }
        self.last.insert(slot, self.buckets.len());
        self.buckets.push(fix);
    }

    fn release(&mut self, hold: &QuotaHold) {
        if hold.amount == 0 {
            return;
        }
        let fix = self.quotas.entry(hold.key.clone()).or_default();
        let released = fix.released.entry(hold.field.clone()).or_default();
        *released = released.saturating_add(hold.amount);
    }

    fn add_used(&mut self, key: String, used: u64, expire_at: u64) {
        let fix = self.quotas.entry(key).or_default();
        fix.used = fix.used.saturating_add(used);
        fix.expire_at = fix.expire_at.max(expire_at);
    }

    /// Puts back `failed` (older than what was queued since), dropping bucket corrections
    /// that are too old to matter.
    fn put_back(&mut self, failed: Queue) {
        let newer = std::mem::take(self);
        let fresh = |fix: &BucketFix| fix.at.elapsed() < BUCKET_CORRECTION_TTL;
        for fix in failed.buckets.into_iter().filter(fresh).chain(newer.buckets) {
            self.push_bucket(fix);
        }
        for (key, fix) in failed.quotas.into_iter().chain(newer.quotas) {
            let into = self.quotas.entry(key).or_default();
            for (field, amount) in fix.released {
                *into.released.entry(field).or_default() += amount;
            }
            into.used = into.used.saturating_add(fix.used);
            into.expire_at = into.expire_at.max(fix.expire_at);
        }
        self.from_outage = failed.from_outage + newer.from_outage;
    }
}

/// One period's shared count of a quota or budget, as last seen.
#[derive(Debug, Clone, Copy)]
struct Count {
    period_start: u64,
    used: u64,
}

struct Inner {
    link: Arc<RedisLink>,
    local: LocalAdmission,
    providers: LimitTable,
    clients: ArcSwap<LimitTable>,
    /// The shared per-IP and global buckets, when on.
    front: ArcSwap<Front>,
    updating: Mutex<()>,
    estimate: u64,
    reserve: redis::Script,
    settle: redis::Script,
    /// Redis's Unix seconds minus this host's, from the last reply.
    clock_offset: AtomicI64,
    counts: Mutex<HashMap<(QuotaScope, String), Count>>,
    queue: Mutex<Queue>,
    wake: Condvar,
    /// Held while a batch is sent, so that batches reach Redis in the order they were queued.
    sending: Mutex<()>,
    stop: AtomicBool,
    /// Whether the last reserve was decided locally.
    local_now: AtomicBool,
    notices: Mutex<Vec<SharedNotice>>,
    shared_reserves: AtomicU64,
    local_reserves: AtomicU64,
    batches: AtomicU64,
    corrections: AtomicU64,
}

/// The script's reply: status, Redis seconds, minute, then figures.
type Reply = Vec<i64>;

impl Inner {
    fn reserve(&self, provider: &str, client: &str, demand: Demand) -> Result<Ticket, Limited> {
        let clients = self.clients.load();
        let provider_limits = self.providers.get(provider).copied().unwrap_or_default();
        let client_limits = clients.get(client).copied().unwrap_or_default();
        let output = demand.max_tokens.unwrap_or(self.estimate);
        let estimate = demand.prompt_tokens.saturating_add(output);
        // Exactly as LocalAdmission: a budgeted key's request must have a price before
        // anything is held, so this refusal costs no round trip.
        let worst_cost = match (demand.price, client_limits.budget) {
            (Some(price), _) => price.worst_case(demand.prompt_tokens, output),
            (None, Some(_)) => return Err(unpriced(client)),
            (None, None) => 0,
        };
        let now = self.now();
        let buckets = [
            Buckets::of(QuotaScope::Provider, provider, provider_limits.rate_limit, estimate),
            Buckets::of(QuotaScope::Client, client, client_limits.rate_limit, estimate),
        ];
        let quotas = [
            Period::of(QuotaScope::Provider, provider, provider_limits.quota, now, estimate),
            Period::of(QuotaScope::Client, client, client_limits.quota, now, estimate),
            Period::of(
                QuotaScope::Budget,
                client,
                client_limits.budget.map(budget_quota),
                now,
                worst_cost,
            ),
        ];
        let mut call = self.reserve.prepare_invoke();
        for bucket in &buckets {
            call.key(self.link.key(bucket.key.as_deref().unwrap_or("rl:-")));
        }
        for quota in &quotas {
            call.key(self.link.key(quota.as_ref().map_or("quota:-", |q| q.key.as_str())));
        }
        for bucket in &buckets {
            call.arg(bucket.requests.map_or(0.0, |(interval, _)| interval))
                .arg(bucket.requests.map_or(0, |(_, limit)| limit))
                .arg(bucket.tokens.map_or(0.0, |(interval, _)| interval))
                .arg(bucket.tokens.map_or(0, |(_, limit)| limit))
                .arg(bucket.reserved);
        }
        for quota in &quotas {
            call.arg(quota.as_ref().map_or(0, |q| q.limit))
                .arg(quota.as_ref().map_or(0, |q| q.take));
        }
        for quota in &quotas {
            call.arg(quota.as_ref().map_or(0, |q| q.expire_at));
        }
        call.arg(HOLD_MINUTES);
        let front = self.front.load();
        let per_ip = front.per_ip.zip(demand.client_ip);
        call.key(self.link.key(
            &per_ip.map_or_else(|| "ip:-".to_owned(), |(_, ip)| format!("ip:{:016x}", ip_key(ip))),
        ));
        call.key(self.link.key("global:keyed"));
        for bucket in [per_ip.map(|(bucket, _)| bucket), front.global] {
            call.arg(bucket.map_or(0.0, |(interval, _)| interval))
                .arg(bucket.map_or(0, |(_, burst)| burst));
        }
        let reply = match self.link.run(|c| call.invoke::<Reply>(c)) {
            Ok(reply) => reply,
            Err(unavailable) => {
                return self.reserve_without(provider, client, demand, &unavailable);
            }
        };
        self.shared_reserves.fetch_add(1, Ordering::Relaxed);
        if self.local_now.swap(false, Ordering::Relaxed) {
            lock(&self.notices).push(SharedNotice::Shared);
        }
        let figure = |i: usize| reply.get(i).copied().unwrap_or(-1);
        let redis_now = u64::try_from(figure(1)).unwrap_or(now);
        self.clock_offset.store(figure(1).saturating_sub(local_unix() as i64), Ordering::Relaxed);
        let minute = figure(2);
        let names = [provider, client];
        match figure(0) {
            0 => {}
            refused @ 1..=4 => {
                let index = usize::try_from(refused - 1).unwrap_or(0);
                let (scope, requests) = (index / 2, index % 2 == 0);
                let bucket = &buckets[scope.min(1)];
                let kind = match (scope, requests) {
                    (0, true) => LimitKind::ProviderRequests,
                    (0, false) => LimitKind::ProviderTokens,
                    (_, true) => LimitKind::ClientRequests,
                    (_, false) => LimitKind::ClientTokens,
                };
                let limit = if requests { bucket.requests } else { bucket.tokens };
                return Err(Limited::new(
                    kind,
                    Some(names[scope.min(1)].to_owned()),
                    limit.map_or(0, |(_, limit)| limit),
                    u64::try_from(figure(3)).unwrap_or(0),
                    micros(figure(4)),
                    micros(figure(5)),
                ));
            }
            refused @ 8..=9 => {
                let (kind, bucket) = match refused {
                    8 => (LimitKind::PerIp, per_ip.map(|(bucket, _)| bucket)),
                    _ => (LimitKind::Global, front.global),
                };
                return Err(Limited::new(
                    kind,
                    None,
                    bucket.map_or(0, |(_, burst)| burst),
                    u64::try_from(figure(3)).unwrap_or(0),
                    micros(figure(4)),
                    micros(figure(5)),
                ));
            }
            refused => {
                let index = usize::try_from(refused - 5).unwrap_or(0).min(2);
                let Some(period) = &quotas[index] else {
                    return Err(shared_state());
                };
                let (used, held) = (figure(3).max(0) as u64, figure(4).max(0) as u64);
                self.remember(SCOPES[index], names[index.min(1)], period.start, used);
                let resets_at = period.resets_at;
                let wait = Duration::from_secs(resets_at.saturating_sub(redis_now).max(1));
                let kind = match index {
                    0 => LimitKind::ProviderQuota,
                    1 => LimitKind::ClientQuota,
                    _ => LimitKind::ClientBudget,
                };
                return Err(Limited::new(
                    kind,
                    Some(names[index.min(1)].to_owned()),
                    period.limit,
                    period.limit.saturating_sub(used).saturating_sub(held),
                    wait,
                    wait,
                )
                .with_resets_at(resets_at));
            }
        }
        let standing = |i: usize, limit: Option<(f64, u64)>| {
            limit.map(|(_, limit)| {
                Admitted::new(limit, figure(3 + 2 * i).max(0) as u64, micros(figure(4 + 2 * i)))
            })
        };
        let reservation = |i: usize, bucket: &Buckets| {
            Reservation::recorded(
                if bucket.tokens.is_some() { bucket.reserved } else { 0 },
                standing(2 * i, bucket.requests),
                standing(2 * i + 1, bucket.tokens),
            )
        };
        let mut holds = [None, None, None];
        for (index, period) in quotas.iter().enumerate() {
            let Some(period) = period else { continue };
            let used = figure(11 + 2 * index).max(0) as u64;
            self.remember(SCOPES[index], names[index.min(1)], period.start, used);
            holds[index] = Some(QuotaHold {
                key: period.key.clone(),
                field: format!("h{minute}"),
                amount: period.take,
            });
        }
        let held = |index: usize| holds[index].as_ref().map_or(0, |h: &QuotaHold| h.amount);
        let ticket = Ticket::new(
            provider.to_owned(),
            client.to_owned(),
            reservation(0, &buckets[0]),
            reservation(1, &buckets[1]),
            held(0),
            held(1),
        )
        .with_budget_held(held(2));
        let [provider_bucket, client_bucket] = buckets.map(Buckets::into_hold);
        Ok(ticket.with_shared(SharedHold { provider_bucket, client_bucket, quotas: holds }))
    }

    /// The decision when Redis could not be asked: `local` admits with this instance's own
    /// limits (seeded with the shared counts as last seen, the first time), `deny` refuses.
    fn reserve_without(
        &self,
        provider: &str,
        client: &str,
        demand: Demand,
        unavailable: &Unavailable,
    ) -> Result<Ticket, Limited> {
        if self.link.on_unavailable() == OnUnavailable::Deny {
            return Err(shared_state());
        }
        self.local_reserves.fetch_add(1, Ordering::Relaxed);
        if !self.local_now.swap(true, Ordering::Relaxed) {
            let seen: Vec<QuotaUsage> = self.seen_counts();
            self.local.seed_usage(seen);
            lock(&self.notices).push(SharedNotice::Local(unavailable.to_string()));
        }
        self.local.reserve(provider, client, demand)
    }

    /// The shared counts as last seen, as the local stand-in takes them.
    fn seen_counts(&self) -> Vec<QuotaUsage> {
        let clients = self.clients.load();
        let counts = lock(&self.counts);
        counts
            .iter()
            .filter_map(|((scope, name), count)| {
                let period = self.quota_of(&clients, *scope, name)?.reset;
                Some(QuotaUsage {
                    scope: *scope,
                    name: name.clone(),
                    period,
                    period_start: count.period_start,
                    tokens: count.used,
                })
            })
            .collect()
    }

    fn quota_of(&self, clients: &LimitTable, scope: QuotaScope, name: &str) -> Option<Quota> {
        match scope {
            QuotaScope::Provider => self.providers.get(name)?.quota,
            QuotaScope::Client => clients.get(name)?.quota,
            QuotaScope::Budget => clients.get(name)?.budget.map(budget_quota),
        }
    }

    fn remember(&self, scope: QuotaScope, name: &str, start: u64, used: u64) {
        let mut counts = lock(&self.counts);
        match counts.get_mut(&(scope, name.to_owned())) {
            Some(count) if count.period_start > start => {}
            Some(count) => *count = Count { period_start: start, used },
            None => {
                counts.insert((scope, name.to_owned()), Count { period_start: start, used });
            }
        }
    }

    fn status(&self, scope: QuotaScope, name: &str) -> Option<QuotaStatus> {
        if self.local_now.load(Ordering::Relaxed) {
            return self.local.quota_status(scope, name);
        }
        let quota = self.quota_of(&self.clients.load(), scope, name)?;
        let now = self.now();
        let start = period_start(quota.reset, now);
        let used = lock(&self.counts)
            .get(&(scope, name.to_owned()))
            .filter(|count| count.period_start == start)
            .map_or(0, |count| count.used);
        let limit = quota.limit.get();
        Some(QuotaStatus {
            limit,
            used,
            remaining: limit.saturating_sub(used),
            period_start: start,
            resets_at: next_reset(quota.reset, now),
        })
    }

    /// Queues the usage a settlement charges to each quota's current period, and counts it
    /// in the cache the metrics read.
    fn queue_usage(&self, provider: &str, client: &str, charged: Charged) {
        let clients = self.clients.load();
        let now = self.now();
        let local = self.local_now.load(Ordering::Relaxed);
        let names = [provider, client, client];
        let mut queue = lock(&self.queue);
        let was_empty = queue.len() == 0;
        for (index, scope) in SCOPES.into_iter().enumerate() {
            let Some(quota) = self.quota_of(&clients, scope, names[index]) else { continue };
            let period = Period::new(scope, names[index], quota, now, 0);
            queue.add_used(period.key, charged.0[index], period.expire_at);
            if local {
                queue.from_outage += 1;
            } else {
                let mut counts = lock(&self.counts);
                if let Some(count) = counts.get_mut(&(scope, names[index].to_owned()))
                    && count.period_start == period.start
                {
                    count.used = count.used.saturating_add(charged.0[index]);
                }
            }
        }
        let wake = was_empty || queue.len() >= BATCH_WAKE;
        drop(queue);
        if wake {
            self.wake.notify_one();
        }
    }

    fn queue(&self, buckets: Vec<BucketFix>, holds: &[Option<QuotaHold>; 3]) {
        let mut queue = lock(&self.queue);
        let was_empty = queue.len() == 0;
        for fix in buckets {
            queue.push_bucket(fix);
        }
        for hold in holds.iter().flatten() {
            queue.release(hold);
        }
        let wake = was_empty || queue.len() >= BATCH_WAKE;
        drop(queue);
        if wake {
            self.wake.notify_one();
        }
    }

    fn run_worker(&self) {
        loop {
            let mut queue = lock(&self.queue);
            while queue.len() == 0 && !self.stop.load(Ordering::Acquire) {
                queue = self.wake.wait(queue).unwrap_or_else(PoisonError::into_inner);
            }
            if self.stop.load(Ordering::Acquire) {
                return;
            }
            // Gather a batch: wait out the interval unless the queue is large already. A
            // timer, not a synchronisation: corrections are sent in batches on purpose.
            if queue.len() < BATCH_WAKE {
                queue = self
                    .wake
                    .wait_timeout(queue, FLUSH_INTERVAL)
                    .map_or_else(|e| e.into_inner().0, |(guard, _)| guard);
            }
            drop(queue);
            if self.send_queued().is_err() {
                // Redis is down: the link fails at once until its backoff has passed, so
                // trying again at the interval costs nothing on the network.
                let queue = lock(&self.queue);
                let _ = self.wake.wait_timeout(queue, FLUSH_INTERVAL);
            }
        }
    }

    /// Sends everything queued, in script calls of at most [`CALL_MAX`] corrections.
    fn send_queued(&self) -> std::result::Result<(), Unavailable> {
        let _sending = lock(&self.sending);
        let batch = std::mem::take(&mut *lock(&self.queue));
        if batch.len() == 0 {
            return Ok(());
        }
        let from_outage = batch.from_outage;
        let mut ops: Vec<Op> = Vec::with_capacity(batch.len());
        for fix in &batch.buckets {
            let kind = if fix.debt { 'D' } else { 'G' };
            ops.push(Op {
                kind,
                key: &fix.key,
                amount: format!("{}", fix.micros),
                extra: fix.field.to_string(),
            });
        }
        for (key, fix) in &batch.quotas {
            for (field, amount) in &fix.released {
                ops.push(Op { kind: 'H', key, amount: amount.to_string(), extra: field.clone() });
            }
            if fix.expire_at > 0 {
                ops.push(Op {
                    kind: 'U',
                    key,
                    amount: lua_figure(fix.used).to_string(),
                    extra: fix.expire_at.to_string(),
                });
            }
        }
        let mut sent = 0;
        for chunk in ops.chunks(CALL_MAX) {
            let mut keys: Vec<&str> = Vec::new();
            let mut index: HashMap<&str, usize> = HashMap::new();
            let mut call = self.settle.prepare_invoke();
            for op in chunk {
                let at = *index.entry(op.key).or_insert_with(|| {
                    keys.push(op.key);
                    keys.len()
                });
                call.arg(op.kind.to_string()).arg(at).arg(&op.amount).arg(&op.extra);
            }
            for key in &keys {
                call.key(self.link.key(key));
            }
            match self.link.run(|c| call.invoke::<i64>(c)) {
                Ok(_) => {
                    sent += chunk.len();
                    self.batches.fetch_add(1, Ordering::Relaxed);
                    self.corrections.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                }
                Err(unavailable) => {
                    // What was sent is applied; the rest goes back, merged ahead of what
                    // was queued meanwhile. A chunk whose reply was lost after Redis applied
                    // it (a timeout at that moment) is sent again: its usage is counted
                    // twice rather than not at all, erring on the side of the limits.
                    let rest = rebuild(&ops[sent..], &batch);
                    lock(&self.queue).put_back(rest);
                    return Err(unavailable);
                }
            }
        }
        if from_outage > 0 {
            lock(&self.notices).push(SharedNotice::Reconciled(from_outage));
        }
        Ok(())
    }

    /// Unix seconds on the Redis clock, as far as the last reply told.
    fn now(&self) -> u64 {
        let offset = self.clock_offset.load(Ordering::Relaxed);
        local_unix().saturating_add_signed(offset)
    }
}

/// The per-IP and global buckets charged in the reserve script: interval (microseconds) and
/// burst of each, when on.
#[derive(Debug, Default)]
struct Front {
    per_ip: Option<(f64, u64)>,
    global: Option<(f64, u64)>,
}

/// One correction as the settlement script takes it.
struct Op<'a> {
    kind: char,
    key: &'a str,
    amount: String,
    extra: String,
}

/// A queue holding `ops` (the unsent part of `batch`) again.
fn rebuild(ops: &[Op<'_>], batch: &Queue) -> Queue {
    let mut queue = Queue { from_outage: batch.from_outage, ..Queue::default() };
    let at = batch.buckets.first().map_or_else(Instant::now, |fix| fix.at);
    for op in ops {
        match op.kind {
            'G' | 'D' => queue.push_bucket(BucketFix {
                key: op.key.to_owned(),
                field: op.extra.chars().next().unwrap_or('t'),
                debt: op.kind == 'D',
                micros: op.amount.parse().unwrap_or(0.0),
                at,
            }),
            'H' => queue.release(&QuotaHold {
                key: op.key.to_owned(),
                field: op.extra.clone(),
                amount: op.amount.parse().unwrap_or(0),
            }),
            _ => queue.add_used(
                op.key.to_owned(),
                op.amount.parse().unwrap_or(0),
                op.extra.parse().unwrap_or(0),
            ),
        }
    }
    queue
}

/// A name's minute buckets for one request: their key, figures and what it reserves.
struct Buckets {
    key: Option<String>,
    /// Interval in microseconds and limit.
    requests: Option<(f64, u64)>,
    tokens: Option<(f64, u64)>,
    reserved: u64,
}

impl Buckets {
    fn of(scope: QuotaScope, name: &str, rate: Option<RateLimit>, estimate: u64) -> Self {
        let Some(rate) =
            rate.filter(|r| r.requests_per_minute.is_some() || r.tokens_per_minute.is_some())
        else {
            return Self { key: None, requests: None, tokens: None, reserved: 0 };
        };
        let requests = rate.requests_per_minute.map(|n| per_minute(u64::from(n.get())));
        let tokens = rate.tokens_per_minute.map(|n| per_minute(n.get()));
        let figure = |n: Option<u64>| n.map_or_else(|| "-".to_owned(), |n| n.to_string());
        let key = format!(
            "rl:{}:{}:{}:{}",
            scope.as_str(),
            escape(name),
            figure(rate.requests_per_minute.map(|n| u64::from(n.get()))),
            figure(rate.tokens_per_minute.map(|n| n.get()))
        );
        // As MinuteLimiter: a request asking for more than a minute's tokens reserves one
        // minute's worth, so a full bucket still admits it.
        let reserved = tokens.map_or(0, |(_, limit)| estimate.min(limit));
        Self { key: Some(key), requests, tokens, reserved }
    }

    fn into_hold(self) -> BucketHold {
        BucketHold {
            key: self.key,
            requests_interval: self.requests.map(|(interval, _)| interval),
            tokens_interval: self.tokens.map(|(interval, _)| interval),
        }
    }
}

/// The interval (microseconds, as the local bucket's nanoseconds rounded up) and limit of a
/// bucket of `n` a minute. Limits above 2^53 are taken as 2^53 (Lua's numbers are doubles).
fn per_minute(n: u64) -> (f64, u64) {
    let n = lua_figure(n).max(1);
    let interval_nanos = 60_000_000_000_u64.div_ceil(n).max(1);
    (interval_nanos as f64 / 1_000.0, n)
}

/// One quota's period for one request: its key, limit, what the request holds, and when it
/// resets.
struct Period {
    key: String,
    limit: u64,
    take: u64,
    start: u64,
    resets_at: u64,
    expire_at: u64,
}

impl Period {
    fn of(
        scope: QuotaScope,
        name: &str,
        quota: Option<Quota>,
        now: u64,
        wanted: u64,
    ) -> Option<Self> {
        quota.map(|quota| Self::new(scope, name, quota, now, wanted))
    }

    fn new(scope: QuotaScope, name: &str, quota: Quota, now: u64, wanted: u64) -> Self {
        let limit = lua_figure(quota.limit.get());
        let start = period_start(quota.reset, now);
        let resets_at = next_reset(quota.reset, now);
        Self {
            key: quota_key(scope, name, quota.reset, start),
            limit,
            // As Quotas::reserve: no request holds more than the whole quota.
            take: wanted.min(limit),
            start,
            resets_at,
            expire_at: resets_at.saturating_add(KEY_GRACE_SECS),
        }
    }
}

/// `quota:<scope>:<name>:<period>:<start>`.
fn quota_key(scope: QuotaScope, name: &str, period: QuotaPeriod, start: u64) -> String {
    format!("quota:{}:{}:{}:{start}", scope.as_str(), escape(name), period.as_str())
}

/// A name as a part of a key: `%` and `:` escaped, so that no name can reach into another
/// part (`a:daily` is not a name followed by a period).
fn escape(name: &str) -> String {
    name.replace('%', "%25").replace(':', "%3A")
}

fn lua_figure(n: u64) -> u64 {
    n.min(LUA_MAX)
}

fn micros(figure: i64) -> Duration {
    Duration::from_micros(u64::try_from(figure).unwrap_or(0))
}

fn shared_state() -> Limited {
    Limited::new(LimitKind::SharedState, None, 0, 0, SHARED_STATE_RETRY, SHARED_STATE_RETRY)
}

fn local_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Each critical section leaves its data consistent, so a poisoned lock is still usable.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_reach_into_other_parts_of_a_key() {
        let a = quota_key(QuotaScope::Client, "a:daily", QuotaPeriod::Daily, 0);
        let b = quota_key(QuotaScope::Client, "a", QuotaPeriod::Daily, 0);
        assert_eq!(a, "quota:client:a%3Adaily:daily:0");
        assert_ne!(a, b);
        assert_eq!(escape("50%"), "50%25");
    }

    #[test]
    fn bucket_figures_follow_the_local_limiter() {
        // 600 a minute: one every 100 ms, exactly; 7 a minute: the nanoseconds rounded up.
        assert_eq!(per_minute(600), (100_000.0, 600));
        assert_eq!(per_minute(7), (8_571_428.572, 7));
        assert_eq!(per_minute(u64::MAX).1, LUA_MAX);
    }

    #[test]
    fn corrections_of_one_kind_merge_and_opposite_ones_keep_their_order() {
        let mut queue = Queue::default();
        for fix in [
            BucketFix::give_back("k", 't', 1.0, 5),
            BucketFix::give_back("k", 't', 1.0, 3),
            BucketFix::debt("k", 1.0, 2),
            BucketFix::give_back("k", 't', 1.0, 0),
            BucketFix::give_back("k", 'r', 1.0, 1),
        ]
        .into_iter()
        .flatten()
        {
            queue.push_bucket(fix);
        }
        let figures: Vec<_> = queue.buckets.iter().map(|f| (f.field, f.debt, f.micros)).collect();
        assert_eq!(figures, [('t', false, 8.0), ('t', true, 2.0), ('r', false, 1.0)]);
    }
}
