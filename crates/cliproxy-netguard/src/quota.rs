//! Token quotas per period (`providers.<name>.quota`, `auth.api_keys[<name>].quota`) and the
//! spending budgets of client keys (`auth.api_keys[<name>].budget`, micro-dollars per period,
//! counted exactly like a quota of tokens): a calendar day, an ISO week from Monday or a
//! calendar month, all in UTC. The counts survive restarts through the state store:
//! [`Quotas::seed`] takes what was stored, and [`Quotas::take_dirty`] hands back what
//! changed, for the gateway to write in batches.
//!
//! The calendar is the `time` crate's (proleptic Gregorian, exact for every month length and
//! leap year); this module only says where each period starts and ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::ArcSwap;
use cliproxy_core::{Budget, Quota, QuotaPeriod};
use time::{Date, Month, OffsetDateTime};

use crate::clock::Clock;
use crate::ratelimit::{LimitKind, Limited};
use crate::types::{QuotaScope, QuotaUsage};

/// Unix seconds at which the period holding `unix_seconds` started: 00:00 UTC of the day,
/// of the Monday of the ISO week, or of the 1st of the month. (The week of 1970-01-01 began
/// before the epoch; its start is given as 0.)
pub fn period_start(period: QuotaPeriod, unix_seconds: u64) -> u64 {
    let date = date_of(unix_seconds);
    let start = match period {
        QuotaPeriod::Daily => Some(date),
        QuotaPeriod::Weekly => date.checked_sub(days(date.weekday().number_days_from_monday())),
        QuotaPeriod::Monthly => date.replace_day(1).ok(),
    };
    // Every date here has a Monday and a 1st before it (the earliest is 1970-01-01).
    unix_of(start.unwrap_or(date))
}

/// Unix seconds at which the period holding `unix_seconds` ends and the next one starts.
/// (Past the year 9999, which the calendar does not reach, it is `u64::MAX`: never.)
pub fn next_reset(period: QuotaPeriod, unix_seconds: u64) -> u64 {
    let date = date_of(unix_seconds);
    let next = match period {
        QuotaPeriod::Daily => date.next_day(),
        QuotaPeriod::Weekly => date.checked_add(days(7 - date.weekday().number_days_from_monday())),
        QuotaPeriod::Monthly => match date.month() {
            Month::December => Date::from_calendar_date(date.year() + 1, Month::January, 1),
            month => Date::from_calendar_date(date.year(), month.next(), 1),
        }
        .ok(),
    };
    next.map_or(u64::MAX, unix_of)
}

/// Where one quota stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct QuotaStatus {
    /// Tokens per period.
    pub limit: u64,
    /// Tokens used in the current period.
    pub used: u64,
    /// Tokens left (0 once the quota is used up, even if the last request went over).
    pub remaining: u64,
    /// Unix seconds at which the current period started.
    pub period_start: u64,
    /// Unix seconds at which the quota resets.
    pub resets_at: u64,
}

/// The token quotas of the providers and client keys and the budgets of the client keys,
/// built at start-up from the config; the client keys' change at run time
/// ([`Quotas::update`]).
///
/// A quota is checked before a request ([`Quotas::check`]: refused once the period's count
/// has reached the limit) and charged after the reply with the real usage
/// ([`Quotas::record`]). The request that crosses the limit is therefore completed and
/// counted in full; the ones after it are refused until the period resets. Usage recorded
/// after a period boundary counts towards the new period.
///
/// A budget ([`QuotaScope::Budget`]) is a quota whose unit is the micro-dollar: the same
/// entry holds what a request may cost at worst and charges what it really cost.
///
/// The client keys' tables sit behind an [`ArcSwap`]: the request path loads the current
/// map without a lock, and a change of limits swaps in a new map that shares the entries
/// which did not change (so their counts and in-flight holds carry on).
#[derive(Debug)]
pub struct Quotas {
    clock: Arc<dyn Clock>,
    providers: HashMap<String, Arc<Mutex<Entry>>>,
    clients: ArcSwap<EntryMap>,
    budgets: ArcSwap<EntryMap>,
}

/// The entries of one scope, by name.
type EntryMap = HashMap<String, Arc<Mutex<Entry>>>;

impl Quotas {
    /// The quotas of the providers and of the client keys, by name, each starting at zero in
    /// the current period (see [`Quotas::seed`] for the stored counts).
    pub fn new(
        providers: impl IntoIterator<Item = (String, Quota)>,
        clients: impl IntoIterator<Item = (String, Quota)>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let now = clock.unix_seconds();
        let providers = build(&mut providers.into_iter(), now);
        let clients = ArcSwap::from_pointee(build(&mut clients.into_iter(), now));
        Self { clock, providers, clients, budgets: ArcSwap::from_pointee(HashMap::new()) }
    }

    /// With these client-key budgets, each starting at nothing spent in the current period.
    pub fn with_budgets(self, budgets: impl IntoIterator<Item = (String, Budget)>) -> Self {
        let now = self.clock.unix_seconds();
        let mut entries = budgets.into_iter().map(|(name, budget)| (name, budget_quota(budget)));
        self.budgets.store(Arc::new(build(&mut entries, now)));
        self
    }

    /// Puts new client-key quotas (`scope` [`QuotaScope::Client`]) or budgets
    /// ([`QuotaScope::Budget`]) in force: a name given `Some` gets that limit (a new entry
    /// starting at zero, or the existing one with its new limit, which keeps the current
    /// period's count and the requests in flight), a name given `None` loses its limit, and a
    /// name not given keeps its own. A change of period kind starts counting in the new kind's
    /// current period, the count kept. Provider quotas are fixed (`scope`
    /// [`QuotaScope::Provider`] changes nothing).
    pub fn update(
        &self,
        scope: QuotaScope,
        changes: impl IntoIterator<Item = (String, Option<Quota>)>,
    ) {
        let table = match scope {
            QuotaScope::Provider => return,
            QuotaScope::Client => &self.clients,
            QuotaScope::Budget => &self.budgets,
        };
        let now = self.clock.unix_seconds();
        // Only one caller changes limits at a time (the admission serialises its updates),
        // so a plain load, edit and store loses nothing.
        let mut map: EntryMap = HashMap::clone(&table.load());
        for (name, wanted) in changes {
            match (wanted, map.get(&name)) {
                (None, _) => {
                    map.remove(&name);
                }
                (Some(quota), Some(entry)) => lock(entry).change(quota, now),
                (Some(quota), None) => {
                    map.insert(name, Arc::new(Mutex::new(Entry::new(quota, now))));
                }
            }
        }
        table.store(Arc::new(map));
    }

    /// Takes the counts loaded from the state store. A count for the current period of a
    /// configured quota with the same period kind is applied; counts for an older period,
    /// another period kind or a name no longer configured are ignored. Returns how many were
    /// applied. Seeded counts are not dirty: they are already stored.
    pub fn seed(&self, stored: impl IntoIterator<Item = QuotaUsage>) -> usize {
        let now = self.clock.unix_seconds();
        let mut applied = 0;
        for usage in stored {
            let Some(entry) = self.entry(usage.scope, &usage.name) else { continue };
            let mut entry = lock(&entry);
            entry.roll(now);
            if usage.period == entry.quota.reset && usage.period_start == entry.period_start {
                entry.used = entry.used.max(usage.tokens);
                applied += 1;
            }
        }
        applied
    }

    /// Whether `name` may send a request: `Ok(None)` when it has no quota, `Ok(Some(_))`
    /// with what is left, or the refusal with the time the quota resets.
    pub fn check(&self, scope: QuotaScope, name: &str) -> Result<Option<QuotaStatus>, Limited> {
        let Some(entry) = self.entry(scope, name) else { return Ok(None) };
        let now = self.clock.unix_seconds();
        let mut entry = lock(&entry);
        entry.roll(now);
        let status = entry.status(now);
        if status.remaining > 0 {
            return Ok(Some(status));
        }
        Err(entry.refusal(scope, name, now))
    }

    /// Like [`Quotas::check`], and holds `estimate` tokens for the request until
    /// [`Quotas::settle`] or [`Quotas::release`]: requests in flight count against the quota,
    /// so a burst of parallel requests cannot all pass on the same remainder. Returns the
    /// tokens held (0 without a quota).
    ///
    /// No request holds more than the quota's limit: with validation off a client may ask for
    /// `max_tokens` 2^64-1, and that estimate must not stand for more than the whole quota
    /// (it is also what such a request is charged when its reply reports no usage).
    pub fn reserve(&self, scope: QuotaScope, name: &str, estimate: u64) -> Result<u64, Limited> {
        let Some(entry) = self.entry(scope, name) else { return Ok(0) };
        let now = self.clock.unix_seconds();
        let mut entry = lock(&entry);
        entry.roll(now);
        let status = entry.status(now);
        let available = status.remaining.saturating_sub(entry.in_flight);
        if available > 0 {
            let held = estimate.min(status.limit);
            entry.in_flight = entry.in_flight.saturating_add(held);
            return Ok(held);
        }
        Err(entry.refusal(scope, name, now))
    }

    /// Ends a reservation with the tokens the request really used.
    pub fn settle(&self, scope: QuotaScope, name: &str, reserved: u64, used_tokens: u64) {
        let Some(entry) = self.entry(scope, name) else { return };
        let mut entry = lock(&entry);
        entry.in_flight = entry.in_flight.saturating_sub(reserved);
        entry.roll(self.clock.unix_seconds());
        entry.used = entry.used.saturating_add(used_tokens);
        entry.dirty = true;
    }

    /// Ends a reservation for a request that was never sent.
    pub fn release(&self, scope: QuotaScope, name: &str, reserved: u64) {
        let Some(entry) = self.entry(scope, name) else { return };
        let mut entry = lock(&entry);
        entry.in_flight = entry.in_flight.saturating_sub(reserved);
    }

    /// Where `name`'s quota stands (for metrics), or `None` without a quota.
    pub fn status(&self, scope: QuotaScope, name: &str) -> Option<QuotaStatus> {
        let entry = self.entry(scope, name)?;
        let now = self.clock.unix_seconds();
        let mut entry = lock(&entry);
        entry.roll(now);
        Some(entry.status(now))
    }

    /// Adds the tokens a request really used to `name`'s count in the current period.
    pub fn record(&self, scope: QuotaScope, name: &str, tokens: u64) {
        let Some(entry) = self.entry(scope, name) else { return };
        let mut entry = lock(&entry);
        entry.roll(self.clock.unix_seconds());
        entry.used = entry.used.saturating_add(tokens);
        entry.dirty = true;
    }

    /// The absolute counts changed since the last call, sorted by scope and name, for the
    /// state store. Writing a count twice is harmless, so a failed write can be retried with
    /// the next batch by calling [`Quotas::mark_dirty`].
    pub fn take_dirty(&self) -> Vec<QuotaUsage> {
        let mut changed = Vec::new();
        let (clients, budgets) = (self.clients.load(), self.budgets.load());
        for (scope, entries) in [
            (QuotaScope::Provider, &self.providers),
            (QuotaScope::Client, &**clients),
            (QuotaScope::Budget, &**budgets),
        ] {
            for (name, entry) in entries {
                let mut entry = lock(entry);
                if entry.dirty {
                    entry.dirty = false;
                    changed.push(QuotaUsage {
                        scope,
                        name: name.clone(),
                        period: entry.quota.reset,
                        period_start: entry.period_start,
                        tokens: entry.used,
                    });
                }
            }
        }
        changed.sort_by(|a, b| (a.scope, &a.name).cmp(&(b.scope, &b.name)));
        changed
    }

    /// Marks these counts as changed again (after a failed write), so the next
    /// [`Quotas::take_dirty`] returns their current values.
    pub fn mark_dirty(&self, usages: &[QuotaUsage]) {
        for usage in usages {
            if let Some(entry) = self.entry(usage.scope, &usage.name) {
                lock(&entry).dirty = true;
            }
        }
    }

    /// Whether `name` has a quota (or, for [`QuotaScope::Budget`], a budget).
    pub fn is_limited(&self, scope: QuotaScope, name: &str) -> bool {
        self.entry(scope, name).is_some()
    }

    fn entry(&self, scope: QuotaScope, name: &str) -> Option<Arc<Mutex<Entry>>> {
        match scope {
            QuotaScope::Provider => self.providers.get(name).cloned(),
            QuotaScope::Client => self.clients.load().get(name).cloned(),
            QuotaScope::Budget => self.budgets.load().get(name).cloned(),
        }
    }
}

/// A budget as the quota that counts it: micro-dollars per period.
pub(crate) fn budget_quota(budget: Budget) -> Quota {
    Quota::new(budget.micro_usd, budget.period)
}

fn build(entries: &mut dyn Iterator<Item = (String, Quota)>, now: u64) -> EntryMap {
    entries.map(|(name, quota)| (name, Arc::new(Mutex::new(Entry::new(quota, now))))).collect()
}

/// One quota's count in its current period.
#[derive(Debug)]
struct Entry {
    quota: Quota,
    period_start: u64,
    used: u64,
    /// Tokens held by requests admitted but not yet settled (memory only: a restart ends
    /// them).
    in_flight: u64,
    dirty: bool,
}

impl Entry {
    fn new(quota: Quota, now: u64) -> Self {
        Self {
            quota,
            period_start: period_start(quota.reset, now),
            used: 0,
            in_flight: 0,
            dirty: false,
        }
    }

    /// Puts a changed limit in force. The count of the current period is kept (a raised or
    /// lowered limit applies to what was already used), and the requests in flight stay
    /// held; a new period kind starts at its own current period, with the count kept.
    fn change(&mut self, quota: Quota, now: u64) {
        if quota.reset != self.quota.reset {
            self.period_start = period_start(quota.reset, now);
            self.dirty = true;
        }
        self.quota = quota;
    }

    /// Starts a new period from zero once the wall clock has passed into it. A wall clock
    /// set back never reopens an older period.
    fn roll(&mut self, now: u64) {
        let current = period_start(self.quota.reset, now);
        if current > self.period_start {
            self.period_start = current;
            self.used = 0;
        }
    }

    /// The refusal of an exhausted quota, with the time it resets.
    fn refusal(&self, scope: QuotaScope, name: &str, now: u64) -> Limited {
        let status = self.status(now);
        let wait = Duration::from_secs(status.resets_at.saturating_sub(now).max(1));
        Limited {
            kind: match scope {
                QuotaScope::Provider => LimitKind::ProviderQuota,
                QuotaScope::Client => LimitKind::ClientQuota,
                QuotaScope::Budget => LimitKind::ClientBudget,
            },
            name: Some(name.to_owned()),
            limit: status.limit,
            remaining: status.remaining.saturating_sub(self.in_flight),
            reset_after: wait,
            retry_after: wait,
            resets_at: Some(status.resets_at),
        }
    }

    fn status(&self, now: u64) -> QuotaStatus {
        let limit = self.quota.limit.get();
        QuotaStatus {
            limit,
            used: self.used,
            remaining: limit.saturating_sub(self.used),
            period_start: self.period_start,
            // The period that holds `now`, or the stored one if the clock went back.
            resets_at: next_reset(self.quota.reset, now.max(self.period_start)),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Each critical section leaves the entry consistent, so a poisoned lock is still usable.
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The UTC date holding `unix_seconds`; a time past the year 9999 (no clock reaches it, and
/// the calendar stops there) is taken as its last day.
fn date_of(unix_seconds: u64) -> Date {
    i64::try_from(unix_seconds)
        .ok()
        .and_then(|seconds| OffsetDateTime::from_unix_timestamp(seconds).ok())
        .map_or(Date::MAX, OffsetDateTime::date)
}

/// Unix seconds at 00:00 UTC of `date`; 0 for a date before 1970.
fn unix_of(date: Date) -> u64 {
    u64::try_from(date.midnight().assume_utc().unix_timestamp()).unwrap_or(0)
}

fn days(count: u8) -> time::Duration {
    time::Duration::days(i64::from(count))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cliproxy_core::format_utc;

    const SECONDS_PER_DAY: u64 = 86_400;

    #[test]
    fn periods_tile_the_calendar() {
        // Every day from 1970 to past 2100, at its first and last second: the period holding
        // it starts at midnight on a Monday or a 1st, ends where the next one starts, and
        // lasts a day, a week, or the month's length.
        for day in 0..50_000u64 {
            for at in [day * SECONDS_PER_DAY, day * SECONDS_PER_DAY + SECONDS_PER_DAY - 1] {
                for period in [QuotaPeriod::Daily, QuotaPeriod::Weekly, QuotaPeriod::Monthly] {
                    let (start, end) = (period_start(period, at), next_reset(period, at));
                    assert!(start <= at && at < end, "{period:?} {at}");
                    assert_eq!(start % SECONDS_PER_DAY, 0);
                    assert_eq!(period_start(period, end), end, "{period:?} {at}");
                    let first = date_of(start);
                    let length = (end - start) / SECONDS_PER_DAY;
                    match period {
                        QuotaPeriod::Daily => assert_eq!(length, 1),
                        QuotaPeriod::Weekly if start == 0 => assert_eq!(length, 4),
                        QuotaPeriod::Weekly => {
                            assert_eq!(length, 7);
                            assert_eq!(first.weekday(), time::Weekday::Monday);
                        }
                        QuotaPeriod::Monthly => {
                            assert_eq!(first.day(), 1);
                            assert_eq!(length, u64::from(first.month().length(first.year())));
                        }
                    }
                }
            }
        }
        assert_eq!(period_start(QuotaPeriod::Monthly, 1_709_251_199), 1_706_745_600);
        assert_eq!(next_reset(QuotaPeriod::Monthly, 1_709_251_199), 1_709_251_200);
    }

    #[test]
    fn utc_formatting() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(1_709_251_199), "2024-02-29T23:59:59Z");
    }

    #[test]
    fn the_first_week_clamps_to_the_epoch() {
        assert_eq!(period_start(QuotaPeriod::Weekly, 100), 0);
        // Monday 1970-01-05.
        assert_eq!(next_reset(QuotaPeriod::Weekly, 100), 4 * SECONDS_PER_DAY);
    }

    #[test]
    fn parallel_requests_cannot_all_pass_on_the_same_remainder() {
        let clock = crate::clock::FakeClock::at_unix(1_700_000_000);
        let quota = Quota::new(std::num::NonZeroU64::new(100).unwrap(), QuotaPeriod::Daily);
        let quotas = Quotas::new(Vec::new(), vec![("a".to_owned(), quota)], clock);
        let first = quotas.reserve(QuotaScope::Client, "a", 60).unwrap();
        let second = quotas.reserve(QuotaScope::Client, "a", 60).unwrap();
        // 120 tokens are held against 100: the third request waits for the replies.
        let refused = quotas.reserve(QuotaScope::Client, "a", 60).unwrap_err();
        assert_eq!(refused.remaining, 0);
        quotas.release(QuotaScope::Client, "a", second);
        quotas.settle(QuotaScope::Client, "a", first, 10);
        assert_eq!(quotas.status(QuotaScope::Client, "a").unwrap().used, 10);
        let third = quotas.reserve(QuotaScope::Client, "a", 60).unwrap();
        quotas.settle(QuotaScope::Client, "a", third, 95);
        assert!(quotas.reserve(QuotaScope::Client, "a", 1).is_err());
        assert_eq!(quotas.take_dirty()[0].tokens, 105);
        assert_eq!(quotas.reserve(QuotaScope::Client, "unknown", 5), Ok(0));
    }

    #[test]
    fn an_estimate_never_holds_or_costs_more_than_the_limit() {
        let clock = crate::clock::FakeClock::at_unix(1_700_000_000);
        let quota = Quota::new(std::num::NonZeroU64::new(8_000).unwrap(), QuotaPeriod::Daily);
        let quotas = Quotas::new(vec![("p".to_owned(), quota)], Vec::new(), clock.clone());
        // `max_tokens` 2^64-1 (validation off) holds the whole quota, not 2^64-1 tokens.
        let held = quotas.reserve(QuotaScope::Provider, "p", u64::MAX).unwrap();
        assert_eq!(held, 8_000);
        assert!(quotas.reserve(QuotaScope::Provider, "p", 1).is_err());
        // Given back, it leaves nothing held: the next request has the whole quota again.
        quotas.release(QuotaScope::Provider, "p", held);
        let held = quotas.reserve(QuotaScope::Provider, "p", u64::MAX).unwrap();
        assert_eq!(held, 8_000);
        // Charged what it held (its reply reported no usage), it uses the quota up for this
        // period only: the next day starts from zero with nothing held.
        quotas.settle(QuotaScope::Provider, "p", held, held);
        assert_eq!(quotas.status(QuotaScope::Provider, "p").unwrap().used, 8_000);
        clock.advance(std::time::Duration::from_secs(SECONDS_PER_DAY));
        assert_eq!(quotas.reserve(QuotaScope::Provider, "p", 100), Ok(100));
    }
}
