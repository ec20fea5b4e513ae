//! The usage history's accumulator: what each finished request adds to its row (hour ×
//! client key × provider × model), held in memory and handed to the state store in batches
//! off the request path.
//!
//! The finishing stage calls [`UsageBook::record`] once per request that reached a provider.
//! It does no I/O and allocates only for the first request of a row: the rows are nested maps
//! looked up by `&str`, so the names are copied once, when the row is made. The guard's
//! housekeeping beat (every `state.flush_interval`, at most 1 s) calls [`UsageBook::drain`],
//! which submits each row's delta since the last beat as one additive
//! [`StateChange::UsageAdd`], asks the store to write them at once (not one interval later),
//! and keeps the row (zeroed) for the rest of its hour; shutdown drains once more. A crash
//! therefore loses what was recorded since the last beat and not yet committed: at most one
//! flush interval (plus the commit itself).
//!
//! The map is bounded: at most [`MAX_ROWS_PER_HOUR`] distinct rows per hour. A request that
//! would make a row past that is folded into the row of its client and provider whose model
//! is [`OTHER`]; past twice the bound (many client keys each with new models), into the row
//! whose client is also [`OTHER`]. Rows of past hours are dropped once drained.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use cliproxy_netguard::{StateChange, StateStore, USAGE_BUCKET_SECS, UsageCounts, UsageRow};
use serde::Deserialize;

use crate::pricing::Price;
use crate::usage::Usage;

/// The distinct rows kept per hour before new ones are folded into [`OTHER`].
pub(crate) const MAX_ROWS_PER_HOUR: usize = 10_000;

/// The model (and, past twice the bound, the client) that overflowing rows are folded into.
pub(crate) const OTHER: &str = "(other)";

/// The name recorded for a request made without a client key name (client keys off).
pub(crate) const ANONYMOUS: &str = "(none)";

/// The `usage:` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct UsageConfig {
    /// `usage.retention:` — how long the history is kept (default 90 days); older hours are
    /// purged by the state store's writer.
    #[serde(with = "cliproxy_core::duration")]
    pub retention: Duration,
}

impl Default for UsageConfig {
    fn default() -> Self {
        Self { retention: DEFAULT_RETENTION }
    }
}

/// 90 days.
const DEFAULT_RETENTION: Duration = Duration::from_secs(90 * 86_400);
/// The shortest retention: one bucket.
const MIN_RETENTION: Duration = Duration::from_secs(USAGE_BUCKET_SECS);
/// The longest retention: ten years (a longer one is a typo, `90y` for `90d`).
const MAX_RETENTION: Duration = Duration::from_secs(3650 * 86_400);

impl UsageConfig {
    /// The problem with `usage.retention`, naming the key.
    pub(crate) fn problems(&self) -> Vec<String> {
        if self.retention < MIN_RETENTION || self.retention > MAX_RETENTION {
            return vec![format!(
                "`usage.retention` is {}; it must be at least 1h (one bucket of the history) and at most 3650d",
                humantime::format_duration(self.retention)
            )];
        }
        Vec::new()
    }
}

/// One finished request, as the history counts it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Finished<'a> {
    /// The client key's name; `None` when client keys are off.
    pub(crate) client: Option<&'a str>,
    pub(crate) provider: &'a str,
    pub(crate) model: &'a str,
    /// Whether it ended in an error (status ≥ 400 or a failed body).
    pub(crate) error: bool,
    /// Whether a provider answered it with a success status (so it may have been billed).
    pub(crate) answered: bool,
    /// The usage the answer reported, if any.
    pub(crate) usage: Option<Usage>,
    /// The routed model's price; `None` when unpriced.
    pub(crate) price: Option<Price>,
}

impl Finished<'_> {
    /// The request's cost in micro-dollars, or `None` when it is unknown: the model has no
    /// price, or a provider answered it and reported no usage (it may well have billed it).
    /// A priced request that no provider answered with a success (refused by a limit, an
    /// error status without usage) cost nothing.
    fn cost(&self) -> Option<u64> {
        let price = self.price?;
        match self.usage {
            Some(usage) => Some(price.cost(usage).0),
            None if self.answered => None,
            None => Some(0),
        }
    }
}

/// Rows by hour, client, provider and model.
type Rows = HashMap<u64, HashMap<String, HashMap<String, HashMap<String, Row>>>>;

#[derive(Debug, Default)]
struct Row {
    /// What was recorded since the last drain.
    delta: UsageCounts,
}

#[derive(Debug, Default)]
struct Book {
    rows: Rows,
    /// Distinct rows per hour.
    counts: HashMap<u64, usize>,
}

/// The accumulator (see the module's doc).
#[derive(Debug)]
pub(crate) struct UsageBook {
    book: Mutex<Book>,
    retention: Duration,
    /// When the retention purge was last asked for (Unix seconds).
    last_purge: std::sync::atomic::AtomicU64,
}

impl UsageBook {
    pub(crate) fn new(config: &UsageConfig) -> Self {
        Self {
            book: Mutex::new(Book::default()),
            retention: config.retention,
            last_purge: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// `usage.retention`.
    pub(crate) fn retention(&self) -> Duration {
        self.retention
    }

    /// Adds one finished request to its row of the hour that holds `now` (Unix seconds).
    pub(crate) fn record(&self, now: u64, request: &Finished<'_>) {
        let hour = now - now % USAGE_BUCKET_SECS;
        let usage = request.usage.unwrap_or_default();
        let cost = request.cost();
        let delta = UsageCounts {
            requests: 1,
            errors: u64::from(request.error),
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
            cache_read_tokens: usage.cache_read_tokens,
            cache_write_tokens: usage.cache_write_tokens,
            cost_micros: cost.unwrap_or(0),
            unpriced_requests: u64::from(cost.is_none()),
        };
        let client = request.client.unwrap_or(ANONYMOUS);
        let mut book = self.book.lock().unwrap_or_else(PoisonError::into_inner);
        let Book { rows, counts } = &mut *book;
        let count = counts.entry(hour).or_default();
        let hour_rows = rows.entry(hour).or_default();
        let exists = hour_rows
            .get(client)
            .and_then(|p| p.get(request.provider))
            .is_some_and(|m| m.contains_key(request.model));
        let (client, model) = if exists || *count < MAX_ROWS_PER_HOUR {
            (client, request.model)
        } else if *count < 2 * MAX_ROWS_PER_HOUR {
            (client, OTHER)
        } else {
            (OTHER, OTHER)
        };
        if let Some(row) = row_mut(hour_rows, client, request.provider, model, count) {
            row.delta.add(&delta);
        }
    }

    /// Submits every row's delta since the last drain to `state` (one additive change per
    /// row that changed), forgets the hours before the one that holds `now`, and once an hour
    /// asks the store to purge the hours past `usage.retention`.
    pub(crate) fn drain(&self, now: u64, state: &dyn StateStore) {
        let current = now - now % USAGE_BUCKET_SECS;
        let mut changes = Vec::new();
        {
            let mut book = self.book.lock().unwrap_or_else(PoisonError::into_inner);
            let Book { rows, counts } = &mut *book;
            for (&hour, clients) in rows.iter_mut() {
                for (client, providers) in clients.iter_mut() {
                    for (provider, models) in providers.iter_mut() {
                        for (model, row) in models.iter_mut() {
                            if row.delta.requests == 0 {
                                continue;
                            }
                            changes.push(UsageRow {
                                hour,
                                client: client.clone(),
                                provider: provider.clone(),
                                model: model.clone(),
                                counts: std::mem::take(&mut row.delta),
                            });
                        }
                    }
                }
            }
            // A request finishing just after the hour turned lands in the new hour; the
            // finished hours hold nothing more and go.
            rows.retain(|&hour, _| hour >= current);
            counts.retain(|&hour, _| hour >= current);
        }
        // Submitted outside the lock: the store takes its own. The deltas have waited up to
        // one beat already, so the store writes them now rather than one interval later: a
        // crash loses at most one interval of history.
        let any = !changes.is_empty();
        for change in changes {
            state.submit(StateChange::UsageAdd(change));
        }
        if any {
            state.write_soon();
        }
        let last = self.last_purge.load(std::sync::atomic::Ordering::Relaxed);
        if now.saturating_sub(last) >= USAGE_BUCKET_SECS {
            self.last_purge.store(now, std::sync::atomic::Ordering::Relaxed);
            let before = current.saturating_sub(self.retention.as_secs());
            state.submit(StateChange::UsagePurge { before });
        }
    }

    /// The rows held now (for the tests of the bound).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.book.lock().unwrap_or_else(PoisonError::into_inner).counts.values().sum()
    }
}

/// The row, made (its names copied, the hour's count raised) when it is new. Each level is
/// looked up by `&str` first, so a known row costs no allocation. `None` cannot happen (each
/// level is there once inserted); it is an `Option` rather than an `expect`.
fn row_mut<'a>(
    rows: &'a mut HashMap<String, HashMap<String, HashMap<String, Row>>>,
    client: &str,
    provider: &str,
    model: &str,
    count: &mut usize,
) -> Option<&'a mut Row> {
    if !rows.contains_key(client) {
        rows.insert(client.to_owned(), HashMap::new());
    }
    let providers = rows.get_mut(client)?;
    if !providers.contains_key(provider) {
        providers.insert(provider.to_owned(), HashMap::new());
    }
    let models = providers.get_mut(provider)?;
    if !models.contains_key(model) {
        models.insert(model.to_owned(), Row::default());
        *count += 1;
    }
    models.get_mut(model)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// A state store that keeps what it is given.
    #[derive(Debug, Default)]
    struct Recorder(Mutex<Vec<StateChange>>, std::sync::atomic::AtomicUsize);

    impl StateStore for Recorder {
        fn load_quota_usage(
            &self,
        ) -> cliproxy_netguard::Result<Vec<cliproxy_netguard::QuotaUsage>> {
            Ok(Vec::new())
        }
        fn load_denylist(&self) -> cliproxy_netguard::Result<Vec<cliproxy_netguard::DenyEntry>> {
            Ok(Vec::new())
        }
        fn load_bans(&self) -> cliproxy_netguard::Result<Vec<cliproxy_netguard::Ban>> {
            Ok(Vec::new())
        }
        fn load_audit_head(&self) -> cliproxy_netguard::Result<Option<(u64, String)>> {
            Ok(None)
        }
        fn load_client_keys(
            &self,
        ) -> cliproxy_netguard::Result<Vec<cliproxy_netguard::StoredClientKey>> {
            Ok(Vec::new())
        }
        fn submit(&self, change: StateChange) {
            self.0.lock().unwrap().push(change);
        }
        fn write_soon(&self) {
            self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        fn flush(&self) -> cliproxy_netguard::Result<()> {
            Ok(())
        }
        fn check(&self) -> cliproxy_netguard::Result<()> {
            Ok(())
        }
        fn path(&self) -> Option<&Path> {
            None
        }
        fn describe(&self) -> String {
            "recorder".to_owned()
        }
    }

    impl Recorder {
        /// The `write_soon` calls since the last call.
        fn writes_soon(&self) -> usize {
            self.1.swap(0, std::sync::atomic::Ordering::Relaxed)
        }

        fn take(&self) -> (Vec<UsageRow>, Vec<u64>) {
            let mut rows = Vec::new();
            let mut purges = Vec::new();
            for change in std::mem::take(&mut *self.0.lock().unwrap()) {
                match change {
                    StateChange::UsageAdd(row) => rows.push(row),
                    StateChange::UsagePurge { before } => purges.push(before),
                    other => panic!("unexpected {other:?}"),
                }
            }
            rows.sort_by(|a, b| (a.hour, &a.client, &a.model).cmp(&(b.hour, &b.client, &b.model)));
            (rows, purges)
        }
    }

    const H: u64 = 1_800_000_000 / 3600 * 3600;

    /// A request of 10 prompt tokens (4 of them cached) and 3 output tokens, whose price makes
    /// it cost `cost` micro-dollars (`None`: unpriced).
    fn request<'a>(client: &'a str, model: &'a str, cost: Option<u64>) -> Finished<'a> {
        // Only output is priced: 3 tokens at `cost` × 1M / 3 per 1M tokens cost `cost`.
        let price = cost.map(|c| Price {
            input: 0,
            output: c * 1_000_000 / 3,
            cache_read: 0,
            cache_write: 0,
        });
        Finished {
            client: Some(client),
            provider: "openai",
            model,
            error: false,
            answered: true,
            usage: Some(Usage { cache_read_tokens: 4, ..Usage::new(10, 3) }),
            price,
        }
    }

    fn book() -> UsageBook {
        UsageBook::new(&UsageConfig::default())
    }

    #[test]
    fn requests_add_to_their_row_and_a_drain_hands_over_each_delta_once() {
        let book = book();
        let store = Recorder::default();
        book.record(H + 5, &request("alice", "gpt-4o", Some(7)));
        book.record(H + 6, &request("alice", "gpt-4o", Some(7)));
        // Answered without usage: its cost is unknown, so it is unpriced.
        book.record(H + 7, &Finished { usage: None, ..request("alice", "gpt-4o", Some(7)) });
        // Refused by the provider, no usage: an error that cost nothing.
        book.record(
            H + 7,
            &Finished {
                error: true,
                answered: false,
                usage: None,
                ..request("alice", "gpt-4o", Some(7))
            },
        );
        book.record(H + 8, &request("bob", "llama", None));
        book.drain(H + 9, &store);
        let (rows, purges) = store.take();
        assert_eq!(rows.len(), 2, "{rows:?}");
        let alice = rows[0].counts;
        assert_eq!(
            (rows[0].hour, rows[0].client.as_str(), rows[0].model.as_str()),
            (H, "alice", "gpt-4o")
        );
        assert_eq!(
            (alice.requests, alice.errors, alice.input_tokens, alice.output_tokens),
            (4, 1, 20, 6)
        );
        assert_eq!(
            (alice.cache_read_tokens, alice.cost_micros, alice.unpriced_requests),
            (8, 14, 1)
        );
        assert_eq!(rows[1].counts.unpriced_requests, 1, "bob's model is unpriced");
        assert_eq!(rows[1].counts.cost_micros, 0);
        // 90 days before the current hour.
        assert_eq!(purges, [H - 90 * 86_400]);
        assert_eq!(store.writes_soon(), 1, "the deltas are written at once");
        // Nothing new: nothing submitted, and the purge waits an hour.
        book.drain(H + 10, &store);
        assert_eq!(store.take(), (Vec::new(), Vec::new()));
        assert_eq!(store.writes_soon(), 0);
        book.record(H + 11, &request("alice", "gpt-4o", Some(7)));
        book.drain(H + 12, &store);
        let (rows, _) = store.take();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].counts.requests, 1, "only the delta since the last drain");
    }

    #[test]
    fn a_client_without_a_name_is_recorded_as_none_and_past_hours_are_dropped() {
        let book = book();
        let store = Recorder::default();
        book.record(H, &Finished { client: None, ..request("x", "m", Some(1)) });
        book.drain(H + 3600, &store);
        let (rows, _) = store.take();
        assert_eq!((rows[0].client.as_str(), rows[0].hour), (ANONYMOUS, H));
        assert_eq!(book.len(), 0, "the finished hour is forgotten once drained");
    }

    #[test]
    fn rows_past_the_bound_fold_into_other() {
        let book = book();
        let store = Recorder::default();
        let models: Vec<String> = (0..MAX_ROWS_PER_HOUR + 5).map(|i| format!("m{i}")).collect();
        for model in &models {
            book.record(H, &request("alice", model, Some(1)));
        }
        assert_eq!(book.len(), MAX_ROWS_PER_HOUR + 1);
        // Past twice the bound, new clients fold too.
        let clients: Vec<String> = (0..MAX_ROWS_PER_HOUR + 3).map(|i| format!("c{i}")).collect();
        for client in &clients {
            book.record(H, &request(client, "m0", Some(1)));
        }
        assert_eq!(book.len(), 2 * MAX_ROWS_PER_HOUR + 1);
        book.drain(H, &store);
        let (rows, _) = store.take();
        let requests = |client: &str, model: &str| {
            rows.iter().find(|r| r.client == client && r.model == model).map(|r| r.counts.requests)
        };
        assert_eq!(requests("alice", OTHER), Some(5));
        assert_eq!(requests(OTHER, OTHER), Some(4));
        let total: u64 = rows.iter().map(|r| r.counts.requests).sum();
        assert_eq!(total, u64::try_from(2 * MAX_ROWS_PER_HOUR + 8).unwrap(), "nothing is lost");
    }

    #[test]
    fn the_retention_is_checked() {
        let mut config = UsageConfig::default();
        assert!(config.problems().is_empty());
        config.retention = Duration::from_secs(60);
        assert!(
            config.problems()[0].contains("`usage.retention` is 1m"),
            "{:?}",
            config.problems()
        );
        config.retention = Duration::from_secs(3651 * 86_400);
        assert!(!config.problems().is_empty());
    }
}
