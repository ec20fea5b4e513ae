//! The [`StateStore`] on Redis (the `redis` feature, SPEC §11): the state that several gateway
//! instances share, with every change seen by the others within a second.
//!
//! Submitting works as in the embedded store: [`StateStore::submit`] only puts the change in
//! an in-memory batch (the last change per key wins; usage history deltas add up) and a
//! writer thread (`cliproxy-state`) writes the batch every flush interval. A batch is one Lua
//! script, so it is atomic and one round trip (a batch of more than 512 operations goes in
//! parts, each atomic, so that no call holds the server long); the script of its last part
//! publishes one message per kind of shared state it changed (`<instance_id> client_keys|denylist|bans`) on `<prefix>changes`,
//! which the other instances' [`StateStore::watch`] threads turn into a [`SharedChange`].
//!
//! Why a script and not `MULTI`/`EXEC`: a write whose answer was lost (the server stopped,
//! the timeout passed) may or may not have happened, and retrying it must not add its usage
//! deltas twice. The script sets a marker named after the batch (`SET NX`) and skips a batch
//! whose marker is there; `MULTI` cannot make a write depend on that. A failed batch is
//! therefore kept as it was, under its name, and retried alone before the changes submitted
//! since (which keep coalescing, usage deltas summed, so memory stays bounded).
//!
//! Keys, all under the link's prefix:
//!
//! | key | type | holds |
//! |---|---|---|
//! | `state:denylist` | hash | network → `{"reason","created_at","expires_at"}` |
//! | `state:bans` | hash | address → `{"until"}` |
//! | `state:quota` | hash | `scope:period:name` → `{"scope","name","period","period_start","tokens"}` |
//! | `state:audit_head:<instance_id>` | string | `{"seq","hash"}`: each instance has its own chain |
//! | `state:client_keys` | hash | id → `{"digest","record"}` (the record as the vault wrote it) |
//! | `state:client_key_digests` | hash | digest → id |
//! | `state:usage:<hour>` | hash | `["client","provider","model","counter"]` → count (`HINCRBY`) |
//! | `state:usage_hours` | sorted set | the hours that have a usage hash |
//! | `state:batch:<instance_id>:<run>:<n>:<part>` | string | a written batch part's marker (a day) |
//! | `meta:epoch` | string | the server's epoch marker (below) |
//!
//! A Redis server restarted without persistence comes back empty. Every write (and an idle
//! writer's beat, once a second) checks the epoch marker: when it is gone or not the one this
//! instance saw, the store recreates it, says so in a notice and calls the watchers with
//! [`SharedChange::Emptied`], so that the caller re-seeds what it holds and re-reads.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cliproxy_core::QuotaPeriod;
use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};

use crate::config::OnUnavailable;
use crate::error::{Error, Result, Setting};
use crate::pending::Pending;
use crate::redis_link::{RedisLink, Unavailable};
use crate::state::{SharedChange, StateChange, StateStore};
use crate::types::{
    Ban, DenyEntry, QuotaScope, QuotaUsage, StoredClientKey, UsageCounts, UsageRow, canonical_ip,
    canonical_network,
};

/// How a [`RedisStore`] is opened.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RedisStoreOptions {
    /// This instance's name (`instance_id`, by default the host name): its audit head is kept
    /// under it, and its own change messages are told apart by it. Two instances must not
    /// share one.
    pub instance_id: String,
    /// How often the writer writes the batch (more than 0, at most 1 s): the longest a change
    /// waits before the other instances see it.
    pub flush_interval: Duration,
}

impl RedisStoreOptions {
    /// Options with this instance id and flush interval.
    pub fn new(instance_id: impl Into<String>, flush_interval: Duration) -> Self {
        Self { instance_id: instance_id.into(), flush_interval }
    }
}

/// The state store on a Redis server shared by several gateway instances.
pub struct RedisStore {
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("link", &self.shared.link)
            .field("instance_id", &self.shared.instance_id)
            .field("flush_interval", &self.shared.interval)
            .finish_non_exhaustive()
    }
}

/// The longest flush interval allowed: the SPEC promises changes on every instance within 1 s.
const MAX_FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// How often an idle writer checks the epoch marker, so that a server restarted empty is
/// found within about a second even when nothing is written.
const BEAT: Duration = Duration::from_secs(1);
/// How long a subscriber waits for a message before it looks whether the store was closed.
/// It is not a poll of Redis (messages wake it at once); it bounds how long a closed store's
/// subscriber thread lives on.
const SUBSCRIBER_TICK: Duration = Duration::from_millis(500);
/// The first wait before the subscriber reconnects; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How long a written batch's marker is kept: far longer than any retry of the batch.
const BATCH_MARKER_SECS: u64 = 86_400;
/// Operations per script call: a part of a large batch takes a few milliseconds on the
/// server, far below any sensible `state.redis.timeout`.
const OPS_PER_SCRIPT: usize = 512;
/// Hours of usage history read per round trip, so that a long range does not make one
/// call outlast the timeout.
const USAGE_HOURS_PER_CALL: usize = 24;
/// The counters of a usage row, as the field names of `state:usage:<hour>` spell them.
const USAGE_COUNTERS: [&str; 8] = [
    "requests",
    "errors",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cost_micros",
    "unpriced_requests",
];
/// What the notice of a server restarted empty says.
const EMPTIED_NOTICE: &str = "Redis restarted empty: shared state lost (client keys, the \
     runtime denylist, bans, quota usage and usage history written before); this instance \
     re-seeds what it holds; turn on AOF (appendonly yes) so that a restart keeps the state";

/// Writes one batch: checks the epoch marker, skips a batch already written (its marker is
/// there), applies the operations, publishes the change messages. Per-operation errors (a
/// key of the wrong type, written by hand) are collected and returned, not raised: the other
/// operations stand, and retrying would not fix the data.
///
/// KEYS[1] the epoch marker, KEYS[2] (absent for a beat) this batch's marker.
/// ARGV: the epoch this instance saw ('' at first contact), a new epoch value, the channel,
/// the batch marker's lifetime, the number of messages M, M messages, then the operations.
const BATCH_SCRIPT: &str = r#"
local known, fresh = ARGV[1], ARGV[2]
local ok, current = pcall(redis.call, 'GET', KEYS[1])
if not ok then
  redis.call('DEL', KEYS[1])
  current = false
end
local state = 'same'
if not current then
  redis.call('SET', KEYS[1], fresh)
  current = fresh
  if known ~= '' then state = 'emptied' else state = 'first' end
elseif current ~= known then
  if known ~= '' then state = 'emptied' else state = 'first' end
end
if #KEYS < 2 then
  return {state, current, 'beat'}
end
if not redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[4]) then
  return {state, current, 'replayed'}
end
local out = {state, current, 'applied'}
local function note(key, reply)
  if type(reply) == 'table' and reply.err then
    out[#out + 1] = key .. ': ' .. reply.err
  end
end
local function digest_of(hash, id)
  local old = redis.pcall('HGET', hash, id)
  if type(old) ~= 'string' then return nil end
  local decoded, record = pcall(cjson.decode, old)
  if decoded and type(record) == 'table' and type(record.digest) == 'string' then
    return record.digest
  end
  return nil
end
local function purge(hash, field, now)
  local entries = redis.pcall('HGETALL', hash)
  if type(entries) ~= 'table' or entries.err then
    note(hash, entries)
    return
  end
  for j = 1, #entries, 2 do
    local decoded, entry = pcall(cjson.decode, entries[j + 1])
    if decoded and type(entry) == 'table' and type(entry[field]) == 'number'
        and entry[field] <= now then
      redis.pcall('HDEL', hash, entries[j])
    end
  end
end
local messages = tonumber(ARGV[5])
local channel = ARGV[3]
local i = 6 + messages
while i <= #ARGV do
  local op = ARGV[i]
  if op == 'H' then
    note(ARGV[i + 1], redis.pcall('HSET', ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]))
    i = i + 4
  elseif op == 'D' then
    note(ARGV[i + 1], redis.pcall('HDEL', ARGV[i + 1], ARGV[i + 2]))
    i = i + 3
  elseif op == 'S' then
    note(ARGV[i + 1], redis.pcall('SET', ARGV[i + 1], ARGV[i + 2]))
    i = i + 3
  elseif op == 'I' then
    local reply = redis.pcall('HINCRBY', ARGV[i + 1], ARGV[i + 2], ARGV[i + 3])
    if type(reply) == 'table' and reply.err and string.find(reply.err, 'overflow') then
      reply = redis.pcall('HSET', ARGV[i + 1], ARGV[i + 2], '9223372036854775807')
    end
    note(ARGV[i + 1], reply)
    i = i + 4
  elseif op == 'Z' then
    note(ARGV[i + 1], redis.pcall('ZADD', ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]))
    i = i + 4
  elseif op == 'K' then
    local keys, digests, id, value, digest = ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5]
    local old = digest_of(keys, id)
    if old and old ~= digest and redis.pcall('HGET', digests, old) == id then
      redis.pcall('HDEL', digests, old)
    end
    note(keys, redis.pcall('HSET', keys, id, value))
    note(digests, redis.pcall('HSET', digests, digest, id))
    i = i + 6
  elseif op == 'X' then
    local keys, digests, id = ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
    local old = digest_of(keys, id)
    if old and redis.pcall('HGET', digests, old) == id then
      redis.pcall('HDEL', digests, old)
    end
    note(keys, redis.pcall('HDEL', keys, id))
    i = i + 4
  elseif op == 'P' then
    local now = tonumber(ARGV[i + 3])
    purge(ARGV[i + 1], 'expires_at', now)
    purge(ARGV[i + 2], 'until', now)
    i = i + 4
  elseif op == 'U' then
    local cut = '(' .. ARGV[i + 3]
    local hours = redis.pcall('ZRANGEBYSCORE', ARGV[i + 1], '-inf', cut)
    if type(hours) == 'table' and not hours.err then
      for _, hour in ipairs(hours) do
        redis.pcall('DEL', ARGV[i + 2] .. hour)
      end
      redis.pcall('ZREMRANGEBYSCORE', ARGV[i + 1], '-inf', cut)
    else
      note(ARGV[i + 1], hours)
    end
    i = i + 4
  else
    return redis.error_reply('unknown batch operation ' .. tostring(op))
  end
end
for m = 1, messages do
  redis.call('PUBLISH', channel, ARGV[5 + m])
end
return out
"#;

impl RedisStore {
    /// Starts the store's writer on `link`. Nothing is connected here (the writer's first
    /// beat is the first contact), so a gateway starts while Redis is down. The flush
    /// interval must be more than 0 and at most 1 s, and the instance id must not be empty.
    pub fn open(link: Arc<RedisLink>, options: RedisStoreOptions) -> Result<Self> {
        let RedisStoreOptions { instance_id, flush_interval } = options;
        if flush_interval.is_zero() || flush_interval > MAX_FLUSH_INTERVAL {
            return Err(Error::InvalidDuration {
                setting: Setting::FlushInterval,
                value: flush_interval,
                allowed: "more than 0 and at most 1s (the other instances see a change within \
                          one interval)",
            });
        }
        let describe = link.describe();
        if instance_id.trim().is_empty() {
            return Err(Error::State {
                path: PathBuf::from(&describe),
                message: "an instance id is needed (each instance keeps its own audit head and \
                          tells its own change messages apart by it)"
                    .to_owned(),
            });
        }
        let keys = Keys::new(&link, &instance_id);
        let shared = Arc::new(Shared {
            run: format!("{}-{}", std::process::id(), unix_nanos()),
            link,
            instance_id,
            interval: flush_interval,
            path: PathBuf::from(describe),
            keys,
            script: redis::Script::new(BATCH_SCRIPT),
            queue: Mutex::new(Queue { writer_alive: true, ..Queue::default() }),
            wake_writer: Condvar::new(),
            written: Condvar::new(),
            notices: Mutex::new(Vec::new()),
            watch: Mutex::new(Watch::default()),
            stopped: Mutex::new(false),
            stop: Condvar::new(),
        });
        let writer_shared = Arc::clone(&shared);
        let writer = thread::Builder::new()
            .name("cliproxy-state".to_owned())
            .spawn(move || run_writer(&writer_shared))
            .map_err(|e| shared.error(format!("cannot start the writer thread: {e}")))?;
        Ok(Self { shared, writer: Mutex::new(Some(writer)) })
    }

    /// Writes what is queued (within the link's timeout), stops the writer and the watcher
    /// and waits for the writer. Returns an error when some changes could not be written;
    /// later submissions are counted as lost. Dropping the store does the same and discards
    /// the error.
    pub fn close(&self) -> Result<()> {
        {
            let mut queue = self.shared.lock();
            queue.shutdown = true;
            self.shared.wake_writer.notify_all();
        }
        let handle = self.writer.lock().unwrap_or_else(PoisonError::into_inner).take();
        let joined = handle.is_none_or(|handle| handle.join().is_ok());
        self.shared.stop_watching();
        if !joined {
            return Err(self.shared.error("the writer thread failed while closing".to_owned()));
        }
        let queue = self.shared.lock();
        if queue.durable >= queue.submitted && queue.lost == 0 {
            return Ok(());
        }
        Err(self.shared.error(format!(
            "{} changes were not written before closing ({})",
            queue.submitted.saturating_sub(queue.durable) + queue.lost,
            queue.last_error.as_deref().unwrap_or("the writer had stopped")
        )))
    }

    /// One `HGETALL`, after a flush, each field parsed by `parse`; fields `parse` rejects
    /// (and fields or values that are not UTF-8) are skipped with a notice naming the key and
    /// the field, never the value.
    fn load_hash<T>(
        &self,
        key: &str,
        parse: impl Fn(&str, &str) -> Result<T, String>,
    ) -> Result<Vec<T>> {
        self.flush()?;
        let entries: BTreeMap<Vec<u8>, Vec<u8>> = self
            .shared
            .link
            .run(|c| redis::cmd("HGETALL").arg(key).query(c))
            .map_err(|e| self.shared.error(format!("cannot read {key}: {e}")))?;
        let mut records = Vec::with_capacity(entries.len());
        for (field, value) in entries {
            let Ok(field) = String::from_utf8(field) else {
                self.shared.notice(format!("skipped a field of {key}: the field is not UTF-8"));
                continue;
            };
            let parsed = std::str::from_utf8(&value)
                .map_err(|_| "the value is not UTF-8".to_owned())
                .and_then(|value| parse(&field, value));
            match parsed {
                Ok(record) => records.push(record),
                Err(why) => {
                    self.shared.notice(format!("skipped the field {field:?} of {key}: {why}"));
                }
            }
        }
        Ok(records)
    }

    /// The usage history of some hours, read in one round trip.
    fn load_usage_hours(
        &self,
        hours: &[u64],
        rows: &mut BTreeMap<(u64, String, String, String), UsageCounts>,
    ) -> Result<()> {
        let keys: Vec<String> = hours.iter().map(|hour| self.shared.keys.usage(*hour)).collect();
        let hashes: Vec<BTreeMap<Vec<u8>, Vec<u8>>> = self
            .shared
            .link
            .run(|c| {
                let mut pipe = redis::pipe();
                for key in &keys {
                    pipe.cmd("HGETALL").arg(key);
                }
                pipe.query(c)
            })
            .map_err(|e| self.shared.error(format!("cannot read the usage history: {e}")))?;
        for ((hour, key), hash) in hours.iter().zip(&keys).zip(hashes) {
            for (field, value) in hash {
                match parse_usage_field(&field, &value) {
                    Ok((client, provider, model, counter, count)) => {
                        let counts = rows.entry((*hour, client, provider, model)).or_default();
                        set_counter(counts, counter, count);
                    }
                    Err(why) => self.shared.notice(format!("skipped a field of {key}: {why}")),
                }
            }
        }
        Ok(())
    }
}

impl StateStore for RedisStore {
    fn load_quota_usage(&self) -> Result<Vec<QuotaUsage>> {
        self.load_hash(&self.shared.keys.quota, parse_quota)
    }

    fn load_denylist(&self) -> Result<Vec<DenyEntry>> {
        self.load_hash(&self.shared.keys.denylist, parse_deny)
    }

    fn load_bans(&self) -> Result<Vec<Ban>> {
        self.load_hash(&self.shared.keys.bans, parse_ban)
    }

    fn load_cooldowns(&self, now_ms: u64) -> Result<Vec<crate::Cooldown>> {
        let key = &self.shared.keys.cooldowns;
        let all = self.load_hash(key, parse_cooldown)?;
        // Ended rests leave the hash as they are read: they are few (credentials × models),
        // and every instance drops them by itself.
        let ended: Vec<String> = all
            .iter()
            .filter(|c| c.until_ms <= now_ms)
            .map(|c| json(&(&c.provider, &c.credential, &c.model)))
            .collect();
        if !ended.is_empty() {
            // Deleted only if still ended: another instance may have renewed one since the
            // read (compare and delete, in one script).
            let script = redis::Script::new(
                "local n = 0 \
                 for i = 2, #ARGV do \
                   local v = redis.call('HGET', KEYS[1], ARGV[i]) \
                   if v and tonumber(v) <= tonumber(ARGV[1]) then \
                     n = n + redis.call('HDEL', KEYS[1], ARGV[i]) \
                   end \
                 end \
                 return n",
            );
            let _ =
                self.shared.link.run(|c| script.key(key).arg(now_ms).arg(&ended).invoke::<u64>(c));
        }
        Ok(all.into_iter().filter(|c| c.until_ms > now_ms).collect())
    }

    fn load_audit_head(&self) -> Result<Option<(u64, String)>> {
        self.flush()?;
        let key = &self.shared.keys.audit_head;
        let value: Option<Vec<u8>> = self
            .shared
            .link
            .run(|c| redis::cmd("GET").arg(key).query(c))
            .map_err(|e| self.shared.error(format!("cannot read {key}: {e}")))?;
        let Some(value) = value else { return Ok(None) };
        let parsed = std::str::from_utf8(&value)
            .map_err(|_| "the value is not UTF-8".to_owned())
            .and_then(|text| serde_json::from_str::<StoredAuditHead>(text).map_err(json_problem));
        match parsed {
            Ok(head) => Ok(Some((head.seq, head.hash))),
            Err(why) => {
                self.shared.notice(format!("skipped {key}: {why}"));
                Ok(None)
            }
        }
    }

    fn load_client_keys(&self) -> Result<Vec<StoredClientKey>> {
        self.load_hash(&self.shared.keys.client_keys, parse_client_key)
    }

    fn load_usage(&self, from: u64, to: u64) -> Result<Vec<UsageRow>> {
        self.flush()?;
        let index = &self.shared.keys.usage_hours;
        if from >= to {
            return Ok(Vec::new());
        }
        let hours: Vec<Vec<u8>> = self
            .shared
            .link
            .run(|c| {
                redis::cmd("ZRANGEBYSCORE").arg(index).arg(from).arg(format!("({to}")).query(c)
            })
            .map_err(|e| self.shared.error(format!("cannot read {index}: {e}")))?;
        let mut parsed = Vec::with_capacity(hours.len());
        for hour in hours {
            match std::str::from_utf8(&hour).ok().and_then(|text| text.parse::<u64>().ok()) {
                Some(hour) => parsed.push(hour),
                None => self.shared.notice(format!("skipped a member of {index}: not an hour")),
            }
        }
        let mut rows = BTreeMap::new();
        for chunk in parsed.chunks(USAGE_HOURS_PER_CALL) {
            self.load_usage_hours(chunk, &mut rows)?;
        }
        Ok(rows
            .into_iter()
            .map(|((hour, client, provider, model), counts)| UsageRow {
                hour,
                client,
                provider,
                model,
                counts,
            })
            .collect())
    }

    fn submit(&self, change: StateChange) {
        let mut queue = self.shared.lock();
        if queue.shutdown || !queue.writer_alive {
            queue.lost += 1;
            queue.last_error = Some(format!(
                "the writer has stopped; {} changes submitted since were lost",
                queue.lost
            ));
            return;
        }
        queue.pending.add(change);
        queue.submitted += 1;
        // The interval starts with the first change of a batch, so a change waits at most
        // one interval; the writer is woken to shorten its sleep to that.
        if queue.first_pending_at.is_none() {
            queue.first_pending_at = Some(Instant::now());
            self.shared.wake_writer.notify_all();
        }
    }

    fn write_soon(&self) {
        let mut queue = self.shared.lock();
        if !queue.pending.is_empty() || queue.kept.is_some() {
            queue.flush_wanted = true;
            self.shared.wake_writer.notify_all();
        }
    }

    fn flush(&self) -> Result<()> {
        let mut queue = self.shared.lock();
        let target = queue.submitted;
        let attempts_before = queue.attempts;
        if queue.durable >= target {
            return Ok(());
        }
        queue.flush_wanted = true;
        self.shared.wake_writer.notify_all();
        loop {
            if queue.durable >= target {
                return Ok(());
            }
            // Any attempt that started after this call and failed means that something
            // submitted before it is still not written (a kept batch goes first).
            if let Some(failure) = &queue.failure
                && failure.attempt > attempts_before
            {
                return Err(self.shared.error(failure.message.clone()));
            }
            if !queue.writer_alive {
                return Err(self.shared.error(
                    "the writer has stopped, so queued changes cannot be written".to_owned(),
                ));
            }
            queue = self.shared.written.wait(queue).unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn check(&self) -> Result<()> {
        {
            let queue = self.shared.lock();
            if !queue.writer_alive {
                return Err(self.shared.error(
                    queue.last_error.clone().unwrap_or_else(|| "the writer has stopped".to_owned()),
                ));
            }
            if queue.lost > 0 {
                return Err(self.shared.error(format!("{} changes were lost", queue.lost)));
            }
        }
        // With `local` the instance serves on its own limits while Redis is away (the shared
        // health says so); with `deny` it refuses what needs shared state, so it is not ready.
        if !self.shared.link.is_up() && self.shared.link.on_unavailable() == OnUnavailable::Deny {
            return Err(self.shared.error(format!(
                "{}, and on_unavailable is deny: what needs shared state is refused until it answers",
                Unavailable::Down
            )));
        }
        Ok(())
    }

    fn path(&self) -> Option<&Path> {
        None
    }

    fn describe(&self) -> String {
        self.shared.link.describe()
    }

    fn take_notices(&self) -> Vec<String> {
        std::mem::take(&mut *lock(&self.shared.notices))
    }

    fn watch(&self, on_change: Arc<dyn Fn(SharedChange) + Send + Sync>) {
        let mut watch = lock(&self.shared.watch);
        lock(&watch.callbacks).push(on_change);
        if watch.sender.is_some() {
            return;
        }
        let (sender, receiver) = mpsc::channel::<SharedChange>();
        let callbacks = Arc::clone(&watch.callbacks);
        // The callbacks run on a thread of their own, never on the writer's: a callback that
        // re-reads the store flushes first, which would wait for the writer forever.
        let notifier =
            thread::Builder::new().name("cliproxy-state-notify".to_owned()).spawn(move || {
                for change in receiver {
                    let callbacks = lock(&callbacks).clone();
                    for callback in callbacks {
                        callback(change);
                    }
                }
            });
        if let Err(e) = notifier {
            self.shared.notice(format!("cannot start the change notifier thread: {e}"));
            return;
        }
        watch.sender = Some(sender.clone());
        drop(watch);
        let shared = Arc::clone(&self.shared);
        let subscriber = thread::Builder::new()
            .name("cliproxy-state-watch".to_owned())
            .spawn(move || run_subscriber(&shared, &sender));
        if let Err(e) = subscriber {
            self.shared.notice(format!("cannot start the change subscriber thread: {e}"));
        }
    }

    fn shared_health(&self) -> Option<crate::LinkHealth> {
        Some(self.shared.link.health())
    }
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        // The error cannot be returned from drop; callers that care call `close` first.
        let _ = self.close();
    }
}

/// The names of the store's keys, made once.
struct Keys {
    denylist: String,
    bans: String,
    quota: String,
    audit_head: String,
    client_keys: String,
    client_key_digests: String,
    usage_prefix: String,
    usage_hours: String,
    batch_prefix: String,
    epoch: String,
    channel: String,
    cooldowns: String,
}

impl Keys {
    fn new(link: &RedisLink, instance_id: &str) -> Self {
        Self {
            denylist: link.key("state:denylist"),
            bans: link.key("state:bans"),
            quota: link.key("state:quota"),
            audit_head: link.key(&format!("state:audit_head:{instance_id}")),
            client_keys: link.key("state:client_keys"),
            client_key_digests: link.key("state:client_key_digests"),
            usage_prefix: link.key("state:usage:"),
            usage_hours: link.key("state:usage_hours"),
            batch_prefix: link.key(&format!("state:batch:{instance_id}:")),
            epoch: link.key("meta:epoch"),
            channel: link.key("changes"),
            cooldowns: link.key("state:cooldowns"),
        }
    }

    fn usage(&self, hour: u64) -> String {
        format!("{}{hour}", self.usage_prefix)
    }
}

/// What the callers, the writer and the watcher threads share.
struct Shared {
    link: Arc<RedisLink>,
    instance_id: String,
    /// Unique to this opening of the store, so that batch markers of a restarted process
    /// never match an earlier run's.
    run: String,
    interval: Duration,
    /// The link's description, as the "file" errors name.
    path: PathBuf,
    keys: Keys,
    script: redis::Script,
    queue: Mutex<Queue>,
    /// Signalled when the writer has something to do: a first pending change, a flush, a close.
    wake_writer: Condvar,
    /// Signalled after every write attempt and when the writer stops.
    written: Condvar,
    notices: Mutex<Vec<String>>,
    watch: Mutex<Watch>,
    /// Set when the store is closed; the subscriber waits on `stop` between reconnections.
    stopped: Mutex<bool>,
    stop: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding the lock leaves the queue consistent (every update is a few
        // field assignments), so a poisoned lock is still safe to use.
        lock(&self.queue)
    }

    fn error(&self, message: String) -> Error {
        Error::State { path: self.path.clone(), message }
    }

    fn notice(&self, text: String) {
        lock(&self.notices).push(format!("state store {}: {text}", self.path.display()));
    }

    /// Hands a change to the notifier thread, when someone watches.
    fn announce(&self, change: SharedChange) {
        if let Some(sender) = &lock(&self.watch).sender {
            let _ = sender.send(change);
        }
    }

    fn stop_watching(&self) {
        *lock(&self.stopped) = true;
        self.stop.notify_all();
        lock(&self.watch).sender = None;
    }

    fn is_stopped(&self) -> bool {
        *lock(&self.stopped)
    }

    /// Waits `wait`, or less when the store is closed meanwhile; true when it was.
    fn wait_for_stop(&self, wait: Duration) -> bool {
        let stopped = lock(&self.stopped);
        let (stopped, _) = self
            .stop
            .wait_timeout_while(stopped, wait, |stopped| !*stopped)
            .unwrap_or_else(PoisonError::into_inner);
        *stopped
    }
}

/// What [`StateStore::watch`] is given.
type Callback = Arc<dyn Fn(SharedChange) + Send + Sync>;

/// The watchers' callbacks, and the channel to the thread that calls them (once started).
#[derive(Default)]
struct Watch {
    callbacks: Arc<Mutex<Vec<Callback>>>,
    sender: Option<Sender<SharedChange>>,
}

/// The writer's queue and bookkeeping. Sequence numbers count submitted changes, so a
/// flusher knows whether what was written included its changes.
#[derive(Default)]
struct Queue {
    pending: Pending,
    /// When the oldest change in `pending` (or the kept batch) began to wait; `None` when
    /// nothing waits.
    first_pending_at: Option<Instant>,
    /// A batch whose write failed, retried as it was, under its name, before `pending`.
    kept: Option<Batch>,
    /// Batches named so far in this run.
    batches: u64,
    submitted: u64,
    /// Every change up to this sequence number is written.
    durable: u64,
    /// Write attempts started so far.
    attempts: u64,
    /// The last failed write attempt.
    failure: Option<Failure>,
    flush_wanted: bool,
    shutdown: bool,
    /// Cleared when the writer thread ends (see [`AliveGuard`]).
    writer_alive: bool,
    /// The last write error, cleared by a successful write.
    last_error: Option<String>,
    /// Changes submitted after the writer stopped, or dropped by a failed final write.
    lost: u64,
}

struct Failure {
    /// Which attempt failed (`Queue::attempts` when it started).
    attempt: u64,
    message: String,
}

/// A named batch: its changes, its number (the marker's name) and the sequence number of
/// the last change in it.
struct Batch {
    changes: Pending,
    number: u64,
    taken: u64,
}

/// What the Redis store does with a batch: the messages it publishes and the script's
/// operations (the batch itself is the shared `Pending`).
impl Pending {
    /// The messages the batch publishes: one per kind of state the other instances hold.
    /// Purges are not announced: every instance drops ended entries by itself.
    fn messages(&self, instance_id: &str) -> Vec<String> {
        let mut messages = Vec::new();
        for (changed, kind) in [
            (!self.client_keys.is_empty(), "client_keys"),
            (!self.deny.is_empty(), "denylist"),
            (!self.bans.is_empty(), "bans"),
            (!self.cooldowns.is_empty(), "cooldowns"),
        ] {
            if changed {
                messages.push(format!("{instance_id} {kind}"));
            }
        }
        messages
    }

    /// The script's operations (see [`BATCH_SCRIPT`]). Purges go last: they only remove
    /// what has ended, so running them after the upserts also removes an ended entry the
    /// batch re-added, as the embedded store does.
    fn operations(&self, keys: &Keys) -> Vec<Vec<String>> {
        let mut ops = Vec::new();
        let mut push =
            |items: &[&str]| ops.push(items.iter().map(|item| (*item).to_owned()).collect());
        for usage in self.quota.values() {
            let field =
                format!("{}:{}:{}", usage.scope.as_str(), usage.period.as_str(), usage.name);
            let value = json(&StoredQuota {
                scope: usage.scope.as_str().to_owned(),
                name: usage.name.clone(),
                period: usage.period.as_str().to_owned(),
                period_start: usage.period_start,
                tokens: usage.tokens,
            });
            push(&["H", &keys.quota, &field, &value]);
        }
        for (network, entry) in &self.deny {
            let field = network.to_string();
            match entry {
                Some(entry) => {
                    let value = json(&StoredDeny {
                        reason: entry.reason.clone(),
                        created_at: entry.created_at,
                        expires_at: entry.expires_at,
                    });
                    push(&["H", &keys.denylist, &field, &value]);
                }
                None => push(&["D", &keys.denylist, &field]),
            }
        }
        for (ip, ban) in &self.bans {
            let field = ip.to_string();
            match ban {
                Some(ban) => {
                    push(&["H", &keys.bans, &field, &json(&StoredBan { until: ban.until })]);
                }
                None => push(&["D", &keys.bans, &field]),
            }
        }
        if let Some((seq, hash)) = &self.audit_head {
            let value = json(&StoredAuditHead { seq: *seq, hash: hash.clone() });
            push(&["S", &keys.audit_head, &value]);
        }
        for (id, key) in &self.client_keys {
            match key {
                Some(key) => {
                    let value = json(&StoredKey {
                        digest: key.digest.clone(),
                        record: key.record_json.clone(),
                    });
                    push(&[
                        "K",
                        &keys.client_keys,
                        &keys.client_key_digests,
                        id,
                        &value,
                        &key.digest,
                    ]);
                }
                None => push(&["X", &keys.client_keys, &keys.client_key_digests, id]),
            }
        }
        let mut hours = Vec::new();
        for ((hour, client, provider, model), counts) in &self.usage {
            let key = keys.usage(*hour);
            for (index, (counter, count)) in
                USAGE_COUNTERS.iter().zip(counter_values(counts)).enumerate()
            {
                // Zero counters are left out (a missing field reads as 0), except `requests`,
                // which is always written so that the row exists, as it does in SQLite.
                if count == 0 && index > 0 {
                    continue;
                }
                let field = json(&[client.as_str(), provider.as_str(), model.as_str(), *counter]);
                push(&["I", &key, &field, &count.to_string()]);
            }
            if !hours.contains(hour) {
                hours.push(*hour);
            }
        }
        for hour in hours {
            let hour = hour.to_string();
            push(&["Z", &keys.usage_hours, &hour, &hour]);
        }
        for ((provider, credential, model), until_ms) in &self.cooldowns {
            let field = json(&(provider, credential, model));
            push(&["H", &keys.cooldowns, &field, &until_ms.to_string()]);
        }
        if let Some(before) = self.usage_purge {
            push(&["U", &keys.usage_hours, &keys.usage_prefix, &before.to_string()]);
        }
        if let Some(now) = self.purge {
            push(&["P", &keys.denylist, &keys.bans, &now.to_string()]);
        }
        ops
    }
}

/// The stored forms of the records (JSON values in the hashes).
#[derive(Serialize, Deserialize)]
struct StoredQuota {
    scope: String,
    name: String,
    period: String,
    period_start: u64,
    tokens: u64,
}

#[derive(Serialize, Deserialize)]
struct StoredDeny {
    reason: String,
    created_at: u64,
    expires_at: Option<u64>,
}

#[derive(Serialize, Deserialize)]
struct StoredBan {
    until: u64,
}

#[derive(Serialize, Deserialize)]
struct StoredAuditHead {
    seq: u64,
    hash: String,
}

#[derive(Serialize, Deserialize)]
struct StoredKey {
    digest: String,
    record: String,
}

/// What the script answered: how the epoch marker stood, and the per-operation errors.
struct Written {
    epoch: String,
    emptied: bool,
    errors: Vec<String>,
}

/// Why a batch was not written.
struct Unwritten {
    /// Redis answered with an error (out of memory, a read-only replica): unlike an outage,
    /// the link's health does not show it, so the writer reports it.
    refused: bool,
    message: String,
}

/// Marks the writer as stopped however its thread ends, so that flushers stop waiting and
/// submissions count as lost instead of piling up.
struct AliveGuard<'a>(&'a Shared);

impl Drop for AliveGuard<'_> {
    fn drop(&mut self) {
        let mut queue = self.0.lock();
        queue.writer_alive = false;
        if !queue.shutdown && queue.last_error.is_none() {
            queue.last_error = Some("the writer thread stopped unexpectedly".to_owned());
        }
        self.0.written.notify_all();
    }
}

fn run_writer(shared: &Shared) {
    let _alive = AliveGuard(shared);
    // The epoch marker this instance saw last; `None` until the first contact.
    let mut epoch: Option<String> = None;
    // The first beat is at once: it is the first contact, which remembers the marker.
    let mut next_beat = Instant::now();
    let mut queue = shared.lock();
    loop {
        // Sleep until the oldest waiting change is one interval old, the beat is due, or
        // someone asks.
        loop {
            if queue.shutdown || queue.flush_wanted {
                break;
            }
            let due = queue
                .first_pending_at
                .map_or(next_beat, |since| (since + shared.interval).min(next_beat));
            let now = Instant::now();
            if now >= due {
                break;
            }
            queue = shared
                .wake_writer
                .wait_timeout(queue, due - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        let closing = queue.shutdown;
        queue.flush_wanted = false;
        let mut contacted = false;
        let mut took_pending = false;
        // The kept batch first, then what was submitted since: the order they were made in.
        // What is submitted during this cycle's writes waits for the next one, so that under
        // a steady load the writer still writes once per interval, not back to back.
        loop {
            let batch = match queue.kept.take() {
                Some(batch) => batch,
                None if !took_pending && !queue.pending.is_empty() => {
                    took_pending = true;
                    queue.batches += 1;
                    Batch {
                        changes: std::mem::take(&mut queue.pending),
                        number: queue.batches,
                        taken: queue.submitted,
                    }
                }
                None => break,
            };
            queue.first_pending_at = None;
            queue.attempts += 1;
            let attempt = queue.attempts;
            drop(queue);
            let outcome = write_batch(shared, Some(&batch), epoch.as_deref());
            contacted = true;
            queue = shared.lock();
            match outcome {
                Ok(written) => {
                    queue.durable = queue.durable.max(batch.taken);
                    queue.last_error = None;
                    drop(queue);
                    settle(shared, &mut epoch, written);
                    queue = shared.lock();
                    shared.written.notify_all();
                }
                Err(Unwritten { refused, message }) => {
                    // An outage is the link's to report; a refusal is reported here, once
                    // per cause rather than at every retry.
                    if refused && queue.last_error.as_deref() != Some(message.as_str()) {
                        shared.notice(format!("{message}; the batch is kept and retried"));
                    }
                    if closing {
                        queue.lost += u64::try_from(batch.changes.len()).unwrap_or(u64::MAX);
                    } else {
                        // Kept as it was, under its name, and retried after another interval
                        // (or at the next flush): Redis being away is usually temporary.
                        queue.kept = Some(batch);
                        queue.first_pending_at.get_or_insert_with(Instant::now);
                    }
                    queue.last_error = Some(message.clone());
                    queue.failure = Some(Failure { attempt, message });
                    shared.written.notify_all();
                    break;
                }
            }
        }
        if queue.pending.is_empty() && queue.kept.is_none() {
            // Nothing is in flight (this thread is the only writer), so all is written; and
            // nothing waits, so the next sleep lasts until a change or the beat.
            queue.durable = queue.submitted;
            queue.first_pending_at = None;
            shared.written.notify_all();
        }
        if closing {
            return;
        }
        if !contacted && Instant::now() >= next_beat {
            drop(queue);
            // The beat only looks at the epoch marker; a failure is the link's to report.
            if let Ok(written) = write_batch(shared, None, epoch.as_deref()) {
                settle(shared, &mut epoch, written);
            }
            queue = shared.lock();
        }
        next_beat = Instant::now() + BEAT;
    }
}

/// What follows a write: the epoch marker remembered, a server found emptied announced, the
/// per-operation errors reported.
fn settle(shared: &Shared, epoch: &mut Option<String>, written: Written) {
    for error in written.errors {
        shared.notice(format!("a write was refused: {error}"));
    }
    if written.emptied {
        shared.notice(EMPTIED_NOTICE.to_owned());
        shared.announce(SharedChange::Emptied);
    }
    *epoch = Some(written.epoch);
}

/// Writes `batch` (or, for a beat, only checks the epoch marker). A large batch goes in
/// parts of [`OPS_PER_SCRIPT`] operations, each a script of its own, so that no call holds
/// the server (and the link every request shares) longer than a few milliseconds; each part
/// has its own marker, so a retry skips the parts already written, and the messages go with
/// the last part, once everything is written.
fn write_batch(
    shared: &Shared,
    batch: Option<&Batch>,
    epoch: Option<&str>,
) -> Result<Written, Unwritten> {
    let Some(batch) = batch else {
        return run_script(shared, None, &[], &[], epoch).map_err(|e| Unwritten {
            refused: matches!(e, Unavailable::Refused(_)),
            message: format!("cannot check the epoch marker: {e}"),
        });
    };
    let keys = &shared.keys;
    let ops = batch.changes.operations(keys);
    let messages = batch.changes.messages(&shared.instance_id);
    let parts: Vec<&[Vec<String>]> =
        if ops.is_empty() { vec![&[]] } else { ops.chunks(OPS_PER_SCRIPT).collect() };
    let mut written =
        Written { epoch: epoch.unwrap_or_default().to_owned(), emptied: false, errors: Vec::new() };
    for (index, part) in parts.iter().enumerate() {
        let marker = format!("{}{}:{}:{index}", keys.batch_prefix, shared.run, batch.number);
        let last = index + 1 == parts.len();
        let known = (!written.epoch.is_empty()).then_some(written.epoch.as_str());
        let answer =
            run_script(shared, Some(&marker), part, if last { &messages } else { &[] }, known)
                .map_err(|e| Unwritten {
                    refused: matches!(e, Unavailable::Refused(_)),
                    message: format!(
                        "cannot write a batch of {} changes: {e}",
                        batch.changes.len()
                    ),
                })?;
        written.emptied |= answer.emptied;
        written.errors.extend(answer.errors);
        written.epoch = answer.epoch;
    }
    Ok(written)
}

/// One call of [`BATCH_SCRIPT`].
fn run_script(
    shared: &Shared,
    marker: Option<&str>,
    ops: &[Vec<String>],
    messages: &[String],
    epoch: Option<&str>,
) -> Result<Written, Unavailable> {
    let keys = &shared.keys;
    let mut invocation = shared.script.prepare_invoke();
    invocation.key(&keys.epoch);
    if let Some(marker) = marker {
        invocation.key(marker);
    }
    invocation
        .arg(epoch.unwrap_or_default())
        .arg(format!("{}-{}", shared.run, unix_nanos()))
        .arg(&keys.channel)
        .arg(BATCH_MARKER_SECS)
        .arg(messages.len())
        .arg(messages);
    for op in ops {
        invocation.arg(op);
    }
    let answer: Vec<String> = shared.link.run(|c| invocation.invoke(c))?;
    let mut answer = answer.into_iter();
    let state = answer.next().unwrap_or_default();
    let current = answer.next().unwrap_or_default();
    // The third item says whether the part was applied or already had been: the same to
    // the writer either way.
    let _applied = answer.next();
    Ok(Written { epoch: current, emptied: state == "emptied", errors: answer.collect() })
}

/// The subscriber thread: subscribes to the changes channel, hands other instances' changes
/// to the notifier, and reconnects with a backoff when the connection fails.
fn run_subscriber(shared: &Shared, sender: &Sender<SharedChange>) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        match subscribe_once(shared, sender) {
            Subscription::Stopped => return,
            Subscription::Lost { was_subscribed } => {
                if was_subscribed {
                    backoff = FIRST_BACKOFF;
                }
            }
        }
        if shared.wait_for_stop(backoff) {
            return;
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

enum Subscription {
    Stopped,
    Lost { was_subscribed: bool },
}

fn subscribe_once(shared: &Shared, sender: &Sender<SharedChange>) -> Subscription {
    if shared.is_stopped() {
        return Subscription::Stopped;
    }
    let Ok(mut connection) = shared.link.subscriber_connection() else {
        return Subscription::Lost { was_subscribed: false };
    };
    if connection.set_read_timeout(Some(SUBSCRIBER_TICK)).is_err() {
        return Subscription::Lost { was_subscribed: false };
    }
    let mut pubsub = connection.as_pubsub();
    if pubsub.subscribe(&shared.keys.channel).is_err() {
        return Subscription::Lost { was_subscribed: false };
    }
    // Messages published while this instance was not subscribed (before the first
    // subscription, or while the connection was lost) are gone: the caller re-reads all.
    let _ = sender.send(SharedChange::Everything);
    loop {
        match pubsub.get_message() {
            Ok(message) => {
                if let Some(change) =
                    parse_message(message.get_payload_bytes(), &shared.instance_id)
                {
                    let _ = sender.send(change);
                }
            }
            Err(e) if e.is_timeout() => {
                if shared.is_stopped() {
                    return Subscription::Stopped;
                }
            }
            Err(_) => return Subscription::Lost { was_subscribed: true },
        }
    }
}

fn parse_quota(_field: &str, value: &str) -> std::result::Result<QuotaUsage, String> {
    let stored: StoredQuota = serde_json::from_str(value).map_err(json_problem)?;
    Ok(QuotaUsage {
        scope: QuotaScope::parse(&stored.scope)
            .ok_or_else(|| format!("unknown scope {:?}", stored.scope))?,
        period: QuotaPeriod::parse(&stored.period)
            .ok_or_else(|| format!("unknown period {:?}", stored.period))?,
        name: stored.name,
        period_start: stored.period_start,
        tokens: stored.tokens,
    })
}

fn parse_deny(field: &str, value: &str) -> std::result::Result<DenyEntry, String> {
    let network = field
        .parse::<IpNetwork>()
        .map_err(|_| "the field is not an address or CIDR range".to_owned())?;
    let stored: StoredDeny = serde_json::from_str(value).map_err(json_problem)?;
    Ok(DenyEntry {
        network: canonical_network(network),
        reason: stored.reason,
        created_at: stored.created_at,
        expires_at: stored.expires_at,
    })
}

fn parse_ban(field: &str, value: &str) -> std::result::Result<Ban, String> {
    let ip = field.parse::<IpAddr>().map_err(|_| "the field is not an IP address".to_owned())?;
    let stored: StoredBan = serde_json::from_str(value).map_err(json_problem)?;
    Ok(Ban { ip: canonical_ip(ip), until: stored.until })
}

fn parse_cooldown(field: &str, value: &str) -> std::result::Result<crate::Cooldown, String> {
    let (provider, credential, model): (String, String, Option<String>) =
        serde_json::from_str(field).map_err(json_problem)?;
    let until_ms = value.parse::<u64>().map_err(|_| "the value is not a time".to_owned())?;
    Ok(crate::Cooldown { provider, credential, model, until_ms })
}

fn parse_client_key(id: &str, value: &str) -> std::result::Result<StoredClientKey, String> {
    let stored: StoredKey = serde_json::from_str(value).map_err(json_problem)?;
    check_client_key(id, &stored.digest, &stored.record)?;
    Ok(StoredClientKey { id: id.to_owned(), digest: stored.digest, record_json: stored.record })
}

/// Every parser of what the store reads back from Redis — a value another process (or a
/// person with `redis-cli`) may have written — on one input: `table` picks the parser
/// (quota, denylist, bans, cool-downs, client keys, usage history, audit head, a change
/// message). It returns whether the input was accepted; it must never panic. For the fuzz
/// target `redis_state_values`; not part of the API.
#[doc(hidden)]
pub fn parse_stored_value(table: u8, field: &[u8], value: &[u8]) -> bool {
    let (Ok(field_text), Ok(value_text)) = (std::str::from_utf8(field), std::str::from_utf8(value))
    else {
        return match table % 8 {
            5 => parse_usage_field(field, value).is_ok(),
            7 => parse_message(value, "fuzz").is_some(),
            _ => false,
        };
    };
    match table % 8 {
        0 => parse_quota(field_text, value_text).is_ok(),
        1 => parse_deny(field_text, value_text).is_ok(),
        2 => parse_ban(field_text, value_text).is_ok(),
        3 => parse_cooldown(field_text, value_text).is_ok(),
        4 => parse_client_key(field_text, value_text).is_ok(),
        5 => parse_usage_field(field, value).is_ok(),
        6 => serde_json::from_str::<StoredAuditHead>(value_text).is_ok(),
        _ => parse_message(value, field_text).is_some(),
    }
}

/// `<instance_id> <kind>` as a change, or `None` for this instance's own messages and for
/// kinds this build does not know.
fn parse_message(payload: &[u8], own_id: &str) -> Option<SharedChange> {
    let text = std::str::from_utf8(payload).ok()?;
    let (sender, kind) = text.rsplit_once(' ')?;
    if sender == own_id {
        return None;
    }
    match kind {
        "client_keys" => Some(SharedChange::ClientKeys),
        "denylist" => Some(SharedChange::Denylist),
        "bans" => Some(SharedChange::Bans),
        "cooldowns" => Some(SharedChange::Cooldowns),
        _ => None,
    }
}

/// One field of `state:usage:<hour>`: `["client","provider","model","counter"]` and its count.
fn parse_usage_field(
    field: &[u8],
    value: &[u8],
) -> Result<(String, String, String, usize, u64), String> {
    let [client, provider, model, counter]: [String; 4] =
        serde_json::from_slice(field).map_err(|_| {
            "the field is not [\"client\",\"provider\",\"model\",\"counter\"]".to_owned()
        })?;
    let index = USAGE_COUNTERS
        .iter()
        .position(|known| *known == counter)
        .ok_or_else(|| format!("unknown counter {counter:?}"))?;
    let count = std::str::from_utf8(value)
        .ok()
        .and_then(|text| text.parse::<u64>().ok())
        .ok_or_else(|| format!("the {counter} count is not a non-negative integer"))?;
    Ok((client, provider, model, index, count))
}

/// The counts of a usage row, in the order of [`USAGE_COUNTERS`], as stored (`HINCRBY` takes
/// signed integers: a count beyond `i64::MAX` is stored as the largest).
fn counter_values(counts: &UsageCounts) -> [i64; USAGE_COUNTERS.len()] {
    [
        counts.requests,
        counts.errors,
        counts.input_tokens,
        counts.output_tokens,
        counts.cache_read_tokens,
        counts.cache_write_tokens,
        counts.cost_micros,
        counts.unpriced_requests,
    ]
    .map(|count| i64::try_from(count).unwrap_or(i64::MAX))
}

fn set_counter(counts: &mut UsageCounts, index: usize, count: u64) {
    let slot = match index {
        0 => &mut counts.requests,
        1 => &mut counts.errors,
        2 => &mut counts.input_tokens,
        3 => &mut counts.output_tokens,
        4 => &mut counts.cache_read_tokens,
        5 => &mut counts.cache_write_tokens,
        6 => &mut counts.cost_micros,
        _ => &mut counts.unpriced_requests,
    };
    *slot = count;
}

/// Only what the store itself relies on is checked (the digest's form, for the digest index,
/// and that the record is JSON); the record's contents are the vault's to judge. The
/// messages never quote the record.
fn check_client_key(id: &str, digest: &str, record: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("a client key with an empty id".to_owned());
    }
    if digest.len() != 64 || !digest.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err("the digest is not 64 lowercase hex digits (a SHA-256)".to_owned());
    }
    if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(record) {
        return Err(format!("the record is not JSON (line {}, column {})", e.line(), e.column()));
    }
    Ok(())
}

/// Why a stored value is not the JSON expected, by position only: the value itself may hold
/// something that must not reach a log.
fn json_problem(error: serde_json::Error) -> String {
    format!(
        "the value is not the JSON expected ({:?} at line {}, column {})",
        error.classify(),
        error.line(),
        error.column()
    )
}

fn json<T: Serialize + ?Sized>(value: &T) -> String {
    // Serialising these plain structs of strings and integers cannot fail.
    serde_json::to_string(value).unwrap_or_default()
}

fn unix_nanos() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_nanos())
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_of_this_instance_are_ignored_and_others_mapped() {
        assert_eq!(parse_message(b"gw-1 denylist", "gw-2"), Some(SharedChange::Denylist));
        assert_eq!(parse_message(b"gw 1 client_keys", "gw-2"), Some(SharedChange::ClientKeys));
        assert_eq!(parse_message(b"gw-2 bans", "gw-2"), None);
        assert_eq!(parse_message(b"gw-1 something_new", "gw-2"), None);
        assert_eq!(parse_message(b"\xff\xfe", "gw-2"), None);
    }

    #[test]
    fn usage_fields_are_parsed_and_garbage_is_refused() {
        let field = json(&["alice", "openai", "gpt-4o", "cost_micros"]);
        assert_eq!(
            parse_usage_field(field.as_bytes(), b"12"),
            Ok(("alice".into(), "openai".into(), "gpt-4o".into(), 6, 12))
        );
        assert!(parse_usage_field(b"garbage", b"1").is_err());
        assert!(parse_usage_field(field.as_bytes(), b"-1").is_err());
        let unknown = json(&["a", "b", "c", "d"]);
        assert!(parse_usage_field(unknown.as_bytes(), b"1").is_err());
    }

    #[test]
    fn a_batch_announces_only_the_kinds_it_changed() {
        let mut pending = Pending::default();
        pending.add(StateChange::PurgeExpired { now: 5 });
        pending.add(StateChange::Unban("10.0.0.1".parse().unwrap()));
        assert_eq!(pending.messages("gw-1"), ["gw-1 bans"]);
    }
}
