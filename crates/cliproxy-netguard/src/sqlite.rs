//! The embedded SQLite [`StateStore`] (the `sqlite` feature).
//!
//! [`StateStore::submit`] only puts a change in an in-memory batch; a writer thread (named
//! `cliproxy-state`) coalesces the batch (the last change per key wins; usage history deltas
//! add up) and commits it in one
//! transaction every flush interval, or at once when someone calls [`StateStore::flush`]. A
//! `kill -9` therefore loses at most the changes of one interval.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use cliproxy_core::QuotaPeriod;
use cliproxy_core::private_fs::{self, FILE_MODE, Kind, PrivateError, Step, Tightened};
use ipnetwork::IpNetwork;
use rusqlite::{Connection, ErrorCode, OpenFlags, TransactionBehavior, params};

use crate::config::StateConfig;
use crate::error::{Error, Result, Setting};
use crate::pending::Pending;
use crate::state::{StateChange, StateStore};
use crate::types::{
    Ban, DenyEntry, QuotaScope, QuotaUsage, StoredClientKey, UsageCounts, UsageRow, canonical_ip,
    canonical_network,
};

/// The embedded SQLite state store: one database file, written by its own thread.
pub struct SqliteStore {
    shared: Arc<Shared>,
    /// The device and inode of the file opened, so that `check` notices it being replaced.
    identity: (u64, u64),
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.shared.path)
            .field("flush_interval", &self.shared.interval)
            .finish_non_exhaustive()
    }
}

/// The schema version this build writes (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 4;
/// How long a statement waits for a lock held by another connection (a reader, or a second
/// process opened on the same file by mistake) before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest flush interval allowed: the SPEC promises at most one second lost.
const MAX_FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// STRICT tables make SQLite refuse values of the wrong type, so every row read back has the
/// types the loaders expect and only the text fields can fail to parse.
const SCHEMA_V1: &str = "
CREATE TABLE IF NOT EXISTS quota_usage (
    scope TEXT NOT NULL,
    name TEXT NOT NULL,
    period TEXT NOT NULL,
    period_start INTEGER NOT NULL,
    tokens INTEGER NOT NULL,
    PRIMARY KEY (scope, name, period)
) STRICT;
CREATE TABLE IF NOT EXISTS denylist (
    network TEXT NOT NULL PRIMARY KEY,
    reason TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER
) STRICT;
CREATE TABLE IF NOT EXISTS bans (
    ip TEXT NOT NULL PRIMARY KEY,
    until INTEGER NOT NULL
) STRICT;
PRAGMA user_version = 1;
";
/// Version 2 adds the audit log's head anchor: one row, replaced as the audit sink syncs.
const SCHEMA_V2: &str = "
CREATE TABLE IF NOT EXISTS audit_head (
    id INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL,
    hash TEXT NOT NULL
) STRICT;
PRAGMA user_version = 2;
";
/// Version 3 adds the client keys created at run time: the record is the vault's versioned
/// JSON, opaque here; the digest has its own indexed column so that a key can be looked up by
/// it without reading every record. The index is not unique: two ids with one digest cannot
/// come from the random keys the vault makes, and a uniqueness failure would stall every
/// later batch of the writer.
const SCHEMA_V3: &str = "
CREATE TABLE IF NOT EXISTS client_keys (
    id TEXT NOT NULL PRIMARY KEY,
    digest TEXT NOT NULL,
    record TEXT NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS client_keys_digest ON client_keys (digest);
PRAGMA user_version = 3;
";
/// Version 4 adds the usage history: one row per hour, client key, provider and model, whose
/// counts only grow (the writer adds deltas to them), so several processes can write one row.
/// `hour` leads the key, so a range read and the retention purge walk the primary key.
const SCHEMA_V4: &str = "
CREATE TABLE IF NOT EXISTS usage_hourly (
    hour INTEGER NOT NULL,
    client TEXT NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    requests INTEGER NOT NULL,
    errors INTEGER NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cache_read_tokens INTEGER NOT NULL,
    cache_write_tokens INTEGER NOT NULL,
    cost_micros INTEGER NOT NULL,
    unpriced_requests INTEGER NOT NULL,
    PRIMARY KEY (hour, client, provider, model)
) STRICT;
PRAGMA user_version = 4;
";
/// The schema steps, each after the version before it: `SCHEMA_STEPS[n]` takes a database of
/// version `n` to `n + 1`.
const SCHEMA_STEPS: [&str; 4] = [SCHEMA_V1, SCHEMA_V2, SCHEMA_V3, SCHEMA_V4];
const TABLES: [&str; 6] =
    ["quota_usage", "denylist", "bans", "audit_head", "client_keys", "usage_hourly"];
/// The counters of `usage_hourly`, in the order of [`counts_params`].
const USAGE_COLUMNS: [&str; 8] = [
    "requests",
    "errors",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cost_micros",
    "unpriced_requests",
];

impl SqliteStore {
    /// Opens the database a [`StateConfig`] names, as [`SqliteStore::open_at`] does; a
    /// config without a path is an [`Error::MissingSetting`].
    pub fn open(config: &StateConfig) -> Result<Self> {
        let path = config.path.as_deref().ok_or(Error::MissingSetting(Setting::StatePath))?;
        Self::open_with(path, config.flush_interval, BUSY_TIMEOUT)
    }

    /// Opens (creating when missing) the database at `path` and starts its writer, which
    /// commits every `flush_interval` (more than 0, at most 1 s).
    ///
    /// The directory is created 0700 when missing and the file 0600; an existing file with a
    /// looser mode is tightened (reported as a notice), and one that is a symbolic link, not a
    /// regular file, not ours, not a SQLite database, damaged or from a newer cliproxy is an
    /// [`Error::State`] naming it.
    pub fn open_at(path: &Path, flush_interval: Duration) -> Result<Self> {
        Self::open_with(path, flush_interval, BUSY_TIMEOUT)
    }

    /// [`SqliteStore::open_at`] with a chosen lock wait, so that tests can make a held lock
    /// fail a write quickly.
    pub(crate) fn open_with(
        path: &Path,
        interval: Duration,
        busy_timeout: Duration,
    ) -> Result<Self> {
        let path = path.to_path_buf();
        if interval.is_zero() || interval > MAX_FLUSH_INTERVAL {
            return Err(Error::InvalidDuration {
                setting: Setting::FlushInterval,
                value: interval,
                allowed: "more than 0 and at most 1s (at most one interval of changes is lost on \
                          a crash)",
            });
        }
        let mut notices = Vec::new();
        let identity = prepare_file(&path, &mut notices)?;
        let mut conn = connect(&path, OpenFlags::SQLITE_OPEN_READ_WRITE, busy_timeout)?;
        // SQLite quietly opens read-only a file it may not write (a read-only mount, an
        // immutable file): the gateway would start, then fail every write.
        if conn
            .is_readonly(rusqlite::MAIN_DB)
            .map_err(|e| sqlite_error(&path, "open the database", &e))?
        {
            return Err(state_error(
                &path,
                "cannot be opened for writing (a read-only file system, an immutable file or a \
                 read-only directory); quota usage, the runtime denylist and management bans \
                 must be written there: make it writable or open a database elsewhere"
                    .to_owned(),
            ));
        }
        configure(&conn, &path)?;
        migrate(&mut conn, &path)?;

        let shared = Arc::new(Shared {
            path: path.clone(),
            interval,
            queue: Mutex::new(Queue::default()),
            wake_writer: Condvar::new(),
            written: Condvar::new(),
            notices: Mutex::new(notices),
        });
        let writer_shared = Arc::clone(&shared);
        let writer = thread::Builder::new()
            .name("cliproxy-state".to_owned())
            .spawn(move || run_writer(&writer_shared, conn))
            .map_err(|e| state_error(&path, format!("cannot start the writer thread: {e}")))?;
        Ok(Self { shared, identity, writer: Mutex::new(Some(writer)) })
    }

    /// Writes what is queued, stops the writer and waits for it. Returns an error when some
    /// changes could not be written; later submissions are counted as lost. Dropping the store
    /// does the same and discards the error.
    pub fn close(&self) -> Result<()> {
        {
            let mut queue = self.shared.lock();
            queue.shutdown = true;
            self.shared.wake_writer.notify_all();
        }
        let handle = self.writer.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(handle) = handle
            && handle.join().is_err()
        {
            return Err(self.error("the writer thread failed while closing".to_owned()));
        }
        let queue = self.shared.lock();
        if queue.durable >= queue.submitted && queue.lost == 0 {
            return Ok(());
        }
        Err(self.error(format!(
            "{} changes were not written before closing ({})",
            queue.submitted.saturating_sub(queue.durable) + queue.lost,
            queue.last_error.as_deref().unwrap_or("the writer had stopped")
        )))
    }

    fn error(&self, message: String) -> Error {
        state_error(&self.shared.path, message)
    }

    /// A read-only connection for the start-up loads; WAL lets it read beside the writer.
    fn reader(&self) -> Result<Connection> {
        connect(&self.shared.path, OpenFlags::SQLITE_OPEN_READ_ONLY, BUSY_TIMEOUT)
    }

    /// Runs `query` and turns each row into a record with `parse`; rows `parse` rejects are
    /// skipped with a notice naming the row.
    fn load<T>(
        &self,
        table: &str,
        query: &str,
        parse: impl Fn(&rusqlite::Row<'_>) -> rusqlite::Result<Result<T, String>>,
    ) -> Result<Vec<T>> {
        self.load_where(table, query, [], parse)
    }

    /// [`SqliteStore::load`] of a query with parameters.
    fn load_where<T>(
        &self,
        table: &str,
        query: &str,
        params: impl rusqlite::Params,
        parse: impl Fn(&rusqlite::Row<'_>) -> rusqlite::Result<Result<T, String>>,
    ) -> Result<Vec<T>> {
        self.flush()?;
        let conn = self.reader()?;
        let path = &self.shared.path;
        let read_error =
            |e: rusqlite::Error| sqlite_error(path, &format!("read table {table}"), &e);
        let mut statement = conn.prepare(query).map_err(read_error)?;
        let mut rows = statement.query(params).map_err(read_error)?;
        let mut records = Vec::new();
        while let Some(row) = rows.next().map_err(read_error)? {
            match parse(row) {
                Ok(Ok(record)) => records.push(record),
                Ok(Err(why)) => self.shared.notice(format!(
                    "state store {}: skipped a row of {table}: {why}",
                    path.display()
                )),
                Err(e) => self.shared.notice(format!(
                    "state store {}: skipped a row of {table}: {e}",
                    path.display()
                )),
            }
        }
        Ok(records)
    }
}

impl StateStore for SqliteStore {
    fn load_quota_usage(&self) -> Result<Vec<QuotaUsage>> {
        self.load(
            "quota_usage",
            "SELECT scope, name, period, period_start, tokens FROM quota_usage ORDER BY scope, name, period",
            |row| {
                Ok(parse_quota(
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get(3)?,
                    row.get(4)?,
                ))
            },
        )
    }

    fn load_denylist(&self) -> Result<Vec<DenyEntry>> {
        self.load(
            "denylist",
            "SELECT network, reason, created_at, expires_at FROM denylist ORDER BY network",
            |row| Ok(parse_deny(row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
        )
    }

    fn load_bans(&self) -> Result<Vec<Ban>> {
        self.load("bans", "SELECT ip, until FROM bans ORDER BY ip", |row| {
            Ok(parse_ban(row.get(0)?, row.get(1)?))
        })
    }

    fn load_audit_head(&self) -> Result<Option<(u64, String)>> {
        let rows =
            self.load("audit_head", "SELECT seq, hash FROM audit_head WHERE id = 1", |row| {
                let (seq, hash): (i64, String) = (row.get(0)?, row.get(1)?);
                Ok(to_u64(seq)
                    .map(|seq| (seq, hash))
                    .ok_or_else(|| format!("seq {seq} is negative")))
            })?;
        Ok(rows.into_iter().next())
    }

    fn load_client_keys(&self) -> Result<Vec<StoredClientKey>> {
        self.load("client_keys", "SELECT id, digest, record FROM client_keys ORDER BY id", |row| {
            Ok(parse_client_key(row.get(0)?, row.get(1)?, row.get(2)?))
        })
    }

    fn load_usage(&self, from: u64, to: u64) -> Result<Vec<UsageRow>> {
        let columns = USAGE_COLUMNS.join(", ");
        self.load_where(
            "usage_hourly",
            &format!(
                "SELECT hour, client, provider, model, {columns} FROM usage_hourly
                 WHERE hour >= ?1 AND hour < ?2 ORDER BY hour, client, provider, model"
            ),
            params![to_i64(from), to_i64(to)],
            |row| {
                let mut counts = [0i64; USAGE_COLUMNS.len()];
                for (i, count) in counts.iter_mut().enumerate() {
                    *count = row.get(4 + i)?;
                }
                Ok(parse_usage(row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, counts))
            },
        )
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
        // One process uses this store: a cool-down is that process's own memory (state.rs).
        if matches!(change, StateChange::Cooldown(_)) {
            return;
        }
        queue.pending.add(change);
        queue.submitted += 1;
        // The interval starts with the first change of a batch, so a change waits at most
        // one interval; an idle writer sleeps until then instead of polling.
        if queue.first_pending_at.is_none() {
            queue.first_pending_at = Some(Instant::now());
            self.shared.wake_writer.notify_all();
        }
    }

    fn write_soon(&self) {
        let mut queue = self.shared.lock();
        if !queue.pending.is_empty() {
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
            if let Some(failure) = &queue.failure
                && failure.attempt > attempts_before
                && failure.taken >= target
            {
                return Err(self.error(failure.message.clone()));
            }
            if !queue.writer_alive {
                return Err(self.error(
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
                return Err(self.error(
                    queue.last_error.clone().unwrap_or_else(|| "the writer has stopped".to_owned()),
                ));
            }
            if let Some(message) = &queue.last_error {
                return Err(self.error(format!(
                    "the last write failed ({message}); it is retried every {:?}",
                    self.shared.interval
                )));
            }
        }
        // SQLite keeps writing to a file that was deleted or renamed away, which would lose
        // everything at the next start; readiness should say so while an operator can act.
        match fs::symlink_metadata(&self.shared.path) {
            Ok(meta) if (meta.dev(), meta.ino()) == self.identity => Ok(()),
            Ok(_) => Err(self.error(
                "the file was replaced after it was opened; restart cliproxy to use the new one"
                    .to_owned(),
            )),
            Err(e) => Err(self.error(format!(
                "the file is gone ({e}); changes go to a deleted file until cliproxy restarts"
            ))),
        }
    }

    fn path(&self) -> Option<&Path> {
        Some(&self.shared.path)
    }

    fn describe(&self) -> String {
        format!("SQLite database {}", self.shared.path.display())
    }

    fn take_notices(&self) -> Vec<String> {
        std::mem::take(&mut *self.shared.notices.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // The error cannot be returned from drop; callers that care call `close` first.
        let _ = self.close();
    }
}

/// What the callers and the writer share.
struct Shared {
    path: PathBuf,
    interval: Duration,
    queue: Mutex<Queue>,
    /// Signalled when the writer has something to do: a first pending change, a flush, a close.
    wake_writer: Condvar,
    /// Signalled after every write attempt and when the writer stops.
    written: Condvar,
    notices: Mutex<Vec<String>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding the lock leaves the queue consistent (every update is a few
        // field assignments), so a poisoned lock is still safe to use.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn notice(&self, text: String) {
        self.notices.lock().unwrap_or_else(PoisonError::into_inner).push(text);
    }
}

/// The writer's queue and bookkeeping. Sequence numbers count submitted changes, so a
/// flusher knows whether the batch that was written or failed included its changes.
struct Queue {
    pending: Pending,
    /// When the oldest change in `pending` arrived; `None` when `pending` is empty.
    first_pending_at: Option<Instant>,
    /// Changes submitted so far.
    submitted: u64,
    /// Every change up to this sequence number is on disk.
    durable: u64,
    /// Write attempts started so far.
    attempts: u64,
    /// The last failed write attempt.
    failure: Option<Failure>,
    flush_wanted: bool,
    shutdown: bool,
    writer_alive: bool,
    /// The last write error, cleared by a successful write; what `check` reports.
    last_error: Option<String>,
    /// Changes submitted after the writer stopped, or dropped by a failed final write.
    lost: u64,
}

impl Default for Queue {
    fn default() -> Self {
        Self {
            pending: Pending::default(),
            first_pending_at: None,
            submitted: 0,
            durable: 0,
            attempts: 0,
            failure: None,
            flush_wanted: false,
            shutdown: false,
            writer_alive: true,
            last_error: None,
            lost: 0,
        }
    }
}

struct Failure {
    /// Which attempt failed (`Queue::attempts` when it started).
    attempt: u64,
    /// The sequence number the failed batch went up to.
    taken: u64,
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

fn run_writer(shared: &Shared, mut conn: Connection) {
    let _alive = AliveGuard(shared);
    let mut queue = shared.lock();
    loop {
        // Sleep until the oldest pending change is one interval old, or until asked.
        while !queue.shutdown && !queue.flush_wanted {
            match queue.first_pending_at {
                None => {
                    queue = shared.wake_writer.wait(queue).unwrap_or_else(PoisonError::into_inner);
                }
                Some(since) => {
                    let due = since + shared.interval;
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
            }
        }
        let closing = queue.shutdown;
        queue.flush_wanted = false;
        if queue.pending.is_empty() {
            // Nothing is in flight (this thread is the only writer), so all is on disk.
            queue.durable = queue.submitted;
            queue.first_pending_at = None;
            shared.written.notify_all();
            if closing {
                return;
            }
            continue;
        }
        let batch = std::mem::take(&mut queue.pending);
        queue.first_pending_at = None;
        let taken = queue.submitted;
        queue.attempts += 1;
        let attempt = queue.attempts;
        drop(queue);

        let result = write_batch(&mut conn, &batch);

        queue = shared.lock();
        match result {
            Ok(()) => {
                queue.durable = queue.durable.max(taken);
                queue.last_error = None;
            }
            Err(message) => {
                if closing {
                    queue.lost += u64::try_from(batch.len()).unwrap_or(u64::MAX);
                } else {
                    // Keep the batch and retry after another interval (or at the next flush):
                    // a full disk or a held lock is usually temporary.
                    queue.pending.restore(batch);
                    queue.first_pending_at.get_or_insert_with(Instant::now);
                }
                queue.last_error = Some(message.clone());
                queue.failure = Some(Failure { attempt, taken, message });
            }
        }
        shared.written.notify_all();
        if closing {
            return;
        }
    }
}

/// Writes one batch in one transaction. Purges go last: they only remove entries that have
/// ended, so running them after the upserts also removes an ended entry the batch re-added.
fn write_batch(conn: &mut Connection, batch: &Pending) -> Result<(), String> {
    let write = |conn: &mut Connection| -> rusqlite::Result<()> {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if !batch.quota.is_empty() {
            let mut upsert = tx.prepare(
                "INSERT INTO quota_usage (scope, name, period, period_start, tokens)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (scope, name, period)
                 DO UPDATE SET period_start = excluded.period_start, tokens = excluded.tokens",
            )?;
            for usage in batch.quota.values() {
                upsert.execute(params![
                    usage.scope.as_str(),
                    usage.name,
                    usage.period.as_str(),
                    to_i64(usage.period_start),
                    to_i64(usage.tokens),
                ])?;
            }
        }
        if !batch.deny.is_empty() {
            let mut upsert = tx.prepare(
                "INSERT INTO denylist (network, reason, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (network) DO UPDATE SET reason = excluded.reason,
                     created_at = excluded.created_at, expires_at = excluded.expires_at",
            )?;
            let mut delete = tx.prepare("DELETE FROM denylist WHERE network = ?1")?;
            for (network, entry) in &batch.deny {
                match entry {
                    Some(entry) => upsert.execute(params![
                        network.to_string(),
                        entry.reason,
                        to_i64(entry.created_at),
                        entry.expires_at.map(to_i64),
                    ])?,
                    None => delete.execute(params![network.to_string()])?,
                };
            }
        }
        if !batch.bans.is_empty() {
            let mut upsert = tx.prepare(
                "INSERT INTO bans (ip, until) VALUES (?1, ?2)
                 ON CONFLICT (ip) DO UPDATE SET until = excluded.until",
            )?;
            let mut delete = tx.prepare("DELETE FROM bans WHERE ip = ?1")?;
            for (ip, ban) in &batch.bans {
                match ban {
                    Some(ban) => upsert.execute(params![ip.to_string(), to_i64(ban.until)])?,
                    None => delete.execute(params![ip.to_string()])?,
                };
            }
        }
        if let Some((seq, hash)) = &batch.audit_head {
            tx.execute(
                "INSERT INTO audit_head (id, seq, hash) VALUES (1, ?1, ?2)
                 ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
                params![to_i64(*seq), hash],
            )?;
        }
        if !batch.client_keys.is_empty() {
            let mut upsert = tx.prepare(
                "INSERT INTO client_keys (id, digest, record) VALUES (?1, ?2, ?3)
                 ON CONFLICT (id) DO UPDATE SET digest = excluded.digest, record = excluded.record",
            )?;
            let mut delete = tx.prepare("DELETE FROM client_keys WHERE id = ?1")?;
            for (id, key) in &batch.client_keys {
                match key {
                    Some(key) => upsert.execute(params![id, key.digest, key.record_json])?,
                    None => delete.execute(params![id])?,
                };
            }
        }
        if !batch.usage.is_empty() {
            // The stored counts grow by the batch's deltas (another process may have written
            // the same row since), saturating at the largest integer instead of overflowing.
            let columns = USAGE_COLUMNS.join(", ");
            let placeholders: Vec<String> =
                (5..5 + USAGE_COLUMNS.len()).map(|i| format!("?{i}")).collect();
            let updates: Vec<String> = USAGE_COLUMNS
                .iter()
                .map(|c| {
                    format!(
                        "{c} = CASE WHEN {c} > {max} - excluded.{c} THEN {max} ELSE {c} + excluded.{c} END",
                        max = i64::MAX
                    )
                })
                .collect();
            let mut upsert = tx.prepare(&format!(
                "INSERT INTO usage_hourly (hour, client, provider, model, {columns})
                 VALUES (?1, ?2, ?3, ?4, {})
                 ON CONFLICT (hour, client, provider, model) DO UPDATE SET {}",
                placeholders.join(", "),
                updates.join(", ")
            ))?;
            for ((hour, client, provider, model), counts) in &batch.usage {
                let c = counts_params(counts);
                upsert.execute(params![
                    to_i64(*hour),
                    client,
                    provider,
                    model,
                    c[0],
                    c[1],
                    c[2],
                    c[3],
                    c[4],
                    c[5],
                    c[6],
                    c[7]
                ])?;
            }
        }
        if let Some(before) = batch.usage_purge {
            tx.execute("DELETE FROM usage_hourly WHERE hour < ?1", params![to_i64(before)])?;
        }
        if let Some(now) = batch.purge {
            let now = to_i64(now);
            tx.execute(
                "DELETE FROM denylist WHERE expires_at IS NOT NULL AND expires_at <= ?1",
                params![now],
            )?;
            tx.execute("DELETE FROM bans WHERE until <= ?1", params![now])?;
        }
        tx.commit()
    };
    write(conn).map_err(|e| format!("cannot write a batch of {} changes: {e}", batch.len()))
}

/// One `quota_usage` row as a record, or why it is skipped.
fn parse_quota(
    scope: String,
    name: String,
    period: String,
    period_start: i64,
    tokens: i64,
) -> Result<QuotaUsage, String> {
    let key = format!("{scope}/{name}/{period}");
    Ok(QuotaUsage {
        scope: QuotaScope::parse(&scope).ok_or_else(|| format!("{key}: unknown scope"))?,
        period: QuotaPeriod::parse(&period).ok_or_else(|| format!("{key}: unknown period"))?,
        period_start: to_u64(period_start)
            .ok_or_else(|| format!("{key}: negative period_start"))?,
        tokens: to_u64(tokens).ok_or_else(|| format!("{key}: negative tokens"))?,
        name,
    })
}

/// The counts of a usage row as SQLite integers, in the order of [`USAGE_COLUMNS`].
fn counts_params(counts: &UsageCounts) -> [i64; USAGE_COLUMNS.len()] {
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
    .map(to_i64)
}

/// One `usage_hourly` row as a record, or why it is skipped.
fn parse_usage(
    hour: i64,
    client: String,
    provider: String,
    model: String,
    counts: [i64; USAGE_COLUMNS.len()],
) -> Result<UsageRow, String> {
    let key = format!("{hour}/{client}/{provider}/{model}");
    let hour = to_u64(hour).ok_or_else(|| format!("{key}: negative hour"))?;
    let mut read = [0u64; USAGE_COLUMNS.len()];
    for (i, (value, column)) in counts.iter().zip(USAGE_COLUMNS).enumerate() {
        read[i] = to_u64(*value).ok_or_else(|| format!("{key}: negative {column}"))?;
    }
    let [
        requests,
        errors,
        input_tokens,
        output_tokens,
        cache_read_tokens,
        cache_write_tokens,
        cost_micros,
        unpriced_requests,
    ] = read;
    Ok(UsageRow {
        hour,
        client,
        provider,
        model,
        counts: UsageCounts {
            requests,
            errors,
            input_tokens,
            output_tokens,
            cache_read_tokens,
            cache_write_tokens,
            cost_micros,
            unpriced_requests,
        },
    })
}

/// One `client_keys` row as a stored key, or why it is skipped. Only what the store itself
/// relies on is checked (the digest's form, for a lookup by digest, and that the record is
/// JSON); the record's contents are the vault's to judge. The messages name the row by its
/// id and never quote the record.
fn parse_client_key(id: String, digest: String, record: String) -> Result<StoredClientKey, String> {
    if id.is_empty() {
        return Err("a client key with an empty id".to_owned());
    }
    if digest.len() != 64 || !digest.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(format!(
            "client key {id:?}: the digest is not 64 lowercase hex digits (a SHA-256)"
        ));
    }
    if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(&record) {
        return Err(format!(
            "client key {id:?}: the record is not JSON (line {}, column {})",
            e.line(),
            e.column()
        ));
    }
    Ok(StoredClientKey { id, digest, record_json: record })
}

/// One `denylist` row as an entry, or why it is skipped.
fn parse_deny(
    network: String,
    reason: String,
    created_at: i64,
    expires_at: Option<i64>,
) -> Result<DenyEntry, String> {
    let parsed = network
        .parse::<IpNetwork>()
        .map_err(|_| format!("{network:?} is not an address or CIDR range"))?;
    let expires_at = match expires_at {
        None => None,
        Some(at) => Some(to_u64(at).ok_or_else(|| format!("{network}: negative expires_at"))?),
    };
    Ok(DenyEntry {
        network: canonical_network(parsed),
        reason,
        created_at: to_u64(created_at).ok_or_else(|| format!("{network}: negative created_at"))?,
        expires_at,
    })
}

/// One `bans` row as a ban, or why it is skipped.
fn parse_ban(ip: String, until: i64) -> Result<Ban, String> {
    Ok(Ban {
        ip: canonical_ip(ip.parse::<IpAddr>().map_err(|_| format!("{ip:?} is not an IP address"))?),
        until: to_u64(until).ok_or_else(|| format!("{ip}: negative until"))?,
    })
}

/// Creates the directory and the file, or checks the existing file, before SQLite opens it;
/// returns the file's device and inode.
fn prepare_file(path: &Path, notices: &mut Vec<String>) -> Result<(u64, u64)> {
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    match fs::metadata(parent) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            private_fs::create_dir(parent)
                .map_err(|e| state_error(path, format!("cannot create its directory: {e}")))?;
        }
        Err(e) => {
            return Err(state_error(path, format!("cannot inspect its directory: {e}")));
        }
    }
    // SQLite writes beside the database; a symbolic link there would send those writes
    // elsewhere just as one at the database itself would.
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut companion = path.as_os_str().to_owned();
        companion.push(suffix);
        let companion = PathBuf::from(companion);
        if private_fs::is_symlink(&companion) {
            return Err(state_error(
                &companion,
                "is a symbolic link; the database must be a regular file in a directory of its own (open the real file)".to_owned(),
            ));
        }
    }
    let file = match private_fs::open(path, OpenOptions::new().write(true).create_new(true)) {
        Ok(file) => {
            // The umask can only narrow 0600, but a narrower mode would make the file
            // unwritable; make it exact (and refuse a filesystem that ignores it).
            private_fs::set_mode(&file, FILE_MODE)
                .map_err(|e| state_error(path, format!("cannot set mode 0600: {e}")))?;
            file
        }
        Err(PrivateError::Io { source, .. }) if source.kind() == io::ErrorKind::AlreadyExists => {
            open_existing(path, notices)?
        }
        Err(e) => return Err(state_error(path, format!("cannot create the file: {e}"))),
    };
    let meta = file.metadata().map_err(|e| state_error(path, format!("cannot inspect: {e}")))?;
    Ok((meta.dev(), meta.ino()))
}

/// Checks an existing database file: a regular file (not a link) of mode 0600, tightened
/// with a notice when looser. Its owner is not compared here: only the owner (or root) may
/// change a file's mode, and SQLite cannot write a 0600 file of another user.
fn open_existing(path: &Path, notices: &mut Vec<String>) -> Result<File> {
    let file =
        private_fs::open_nonblocking(path, OpenOptions::new().read(true)).map_err(|e| match e {
            PrivateError::Symlink => state_error(
                path,
                "is a symbolic link; the database must be a regular file (open the real file)"
                    .to_owned(),
            ),
            e => state_error(path, format!("cannot open: {e}")),
        })?;
    let tightened = private_fs::secure(&file, Kind::File, None).map_err(|e| match e {
        PrivateError::WrongKind { .. } => state_error(
            path,
            "is not a regular file; the database must be a regular file".to_owned(),
        ),
        PrivateError::Io { step: Step::Inspect, source } => {
            state_error(path, format!("cannot inspect: {source}"))
        }
        // Only the owner (or root) may change a file's mode, so this also refuses a file
        // that belongs to someone else.
        e => {
            let mode = file.metadata().map_or(0, |m| m.mode() & 0o7777);
            state_error(
                path,
                format!(
                    "has mode {mode:04o} and cannot be set to 0600 ({e}); it must belong to the user cliproxy runs as"
                ),
            )
        }
    })?;
    if let Some(Tightened { was, .. }) = tightened {
        notices.push(format!(
            "state store {}: tightened the mode from {was:04o} to 0600",
            path.display()
        ));
    }
    Ok(file)
}

/// Opens a connection that refuses symbolic links and never creates the file (it exists by
/// now) and never reads `file:` URIs from the configured path.
fn connect(path: &Path, mode: OpenFlags, busy_timeout: Duration) -> Result<Connection> {
    let flags = mode | OpenFlags::SQLITE_OPEN_NOFOLLOW | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|e| sqlite_error(path, "open the database", &e))?;
    conn.busy_timeout(busy_timeout).map_err(|e| sqlite_error(path, "set busy_timeout", &e))?;
    Ok(conn)
}

/// Sets the journal mode and checks the file is an undamaged SQLite database.
fn configure(conn: &Connection, path: &Path) -> Result<()> {
    let journal: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .map_err(|e| sqlite_error(path, "switch to WAL", &e))?;
    if !journal.eq_ignore_ascii_case("wal") {
        return Err(state_error(
            path,
            format!(
                "cannot use write-ahead logging (journal mode stays {journal}); keep the database on a local file system"
            ),
        ));
    }
    // WAL with synchronous=NORMAL survives the process being killed (`kill -9`, a crash, the
    // OOM killer): a commit is in the operating system's cache once it returns. Only a power
    // loss or kernel crash can drop the last commits, and even then the file stays
    // consistent. The SPEC promises the former; FULL would fsync every batch for the latter.
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(|e| sqlite_error(path, "set synchronous=NORMAL", &e))?;
    let check: String = conn
        .query_row("PRAGMA quick_check", [], |row| row.get(0))
        .map_err(|e| sqlite_error(path, "check the database", &e))?;
    if check != "ok" {
        return Err(state_error(path, format!("is damaged ({check}); {RECOVER}")));
    }
    Ok(())
}

/// Creates the schema in a new database, or checks the version of an existing one.
fn migrate(conn: &mut Connection, path: &Path) -> Result<()> {
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(|e| sqlite_error(path, "read the schema version", &e))?;
    if version == SCHEMA_VERSION {
        return Ok(());
    }
    if (1..SCHEMA_VERSION).contains(&version) {
        // An older version lacks the tables of the later steps; they are applied in one
        // transaction, the last of which sets the version.
        let upgrade = format!("upgrade the schema from version {version} to {SCHEMA_VERSION}");
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| sqlite_error(path, &upgrade, &e))?;
        for step in SCHEMA_STEPS.iter().skip(usize::try_from(version).unwrap_or(0)) {
            tx.execute_batch(step).map_err(|e| sqlite_error(path, &upgrade, &e))?;
        }
        return tx.commit().map_err(|e| sqlite_error(path, &upgrade, &e));
    }
    if version != 0 {
        return Err(state_error(
            path,
            format!(
                "has schema version {version}, written by a newer cliproxy (this one knows version {SCHEMA_VERSION}); run the newer version, or move the file aside to start with empty state"
            ),
        ));
    }
    let foreign: Option<String> = {
        let mut statement = conn
            .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
            .map_err(|e| sqlite_error(path, "read the schema", &e))?;
        let names = statement
            .query_map([], |row| row.get::<_, String>(0))
            .map_err(|e| sqlite_error(path, "read the schema", &e))?;
        let mut foreign = None;
        for name in names {
            let name = name.map_err(|e| sqlite_error(path, "read the schema", &e))?;
            if !TABLES.contains(&name.as_str()) {
                foreign = Some(name);
                break;
            }
        }
        foreign
    };
    if let Some(table) = foreign {
        return Err(state_error(
            path,
            format!(
                "is a SQLite database of something else (it has a table {table:?}); the state store needs a file of its own"
            ),
        ));
    }
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| sqlite_error(path, "create the schema", &e))?;
    for step in SCHEMA_STEPS {
        tx.execute_batch(step).map_err(|e| sqlite_error(path, "create the schema", &e))?;
    }
    tx.commit().map_err(|e| sqlite_error(path, "create the schema", &e))
}

/// How to get going again after a damaged database.
const RECOVER: &str = "move the file (and any -wal and -shm files beside it) aside and restart: it holds only quota usage, the runtime denylist, management bans, the audit log's head anchor, the client keys created at run time and the usage history, which then start empty (quota counts restart from zero; a cut audit log is no longer found at start; keys created at run time must be created again; the usage history starts over)";

fn state_error(path: &Path, message: String) -> Error {
    Error::State { path: path.to_owned(), message }
}

fn sqlite_error(path: &Path, what: &str, error: &rusqlite::Error) -> Error {
    match error.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => state_error(
            path,
            format!("is not a SQLite database or is damaged ({error}); {RECOVER}"),
        ),
        _ => state_error(path, format!("cannot {what}: {error}")),
    }
}

/// SQLite integers are signed; counts and times beyond `i64::MAX` cannot occur in practice
/// and are stored as the largest value rather than failing the batch.
fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn to_u64(value: i64) -> Option<u64> {
    u64::try_from(value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(name: &str, tokens: u64) -> QuotaUsage {
        QuotaUsage {
            scope: QuotaScope::Client,
            name: name.to_owned(),
            period: QuotaPeriod::Daily,
            period_start: 86_400,
            tokens,
        }
    }

    fn config(dir: &Path) -> StateConfig {
        StateConfig {
            path: Some(dir.join("state.db")),
            flush_interval: Duration::from_millis(50),
            ..StateConfig::default()
        }
    }

    #[test]
    fn pending_keeps_the_last_change_per_key() {
        let mut pending = Pending::default();
        for tokens in 0..1000 {
            pending.add(StateChange::Quota(usage("a", tokens)));
        }
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        pending.add(StateChange::Ban(Ban { ip, until: 5 }));
        // The mapped form names the same address, so it removes the same ban.
        pending.add(StateChange::Unban("::ffff:10.0.0.1".parse().unwrap()));
        pending.add(StateChange::PurgeExpired { now: 7 });
        pending.add(StateChange::PurgeExpired { now: 3 });
        assert_eq!(pending.len(), 3);
        assert_eq!(pending.quota.values().next().map(|u| u.tokens), Some(999));
        assert_eq!(pending.bans.get(&ip), Some(&None));
        assert_eq!(pending.purge, Some(7));
    }

    fn stored_key(id: &str, record: &str) -> StoredClientKey {
        StoredClientKey {
            id: id.to_owned(),
            digest: "0".repeat(64),
            record_json: record.to_owned(),
        }
    }

    #[test]
    fn pending_keeps_the_last_client_key_change_per_id_and_a_restore_keeps_newer_ones() {
        let mut older = Pending::default();
        older.add(StateChange::ClientKeyPut(stored_key("a", "1")));
        older.add(StateChange::ClientKeyPut(stored_key("a", "2")));
        older.add(StateChange::ClientKeyPut(stored_key("b", "1")));
        older.add(StateChange::ClientKeyDelete("c".to_owned()));
        assert_eq!(older.len(), 3);
        assert_eq!(older.client_keys.get("a"), Some(&Some(stored_key("a", "2"))));
        assert_eq!(older.client_keys.get("c"), Some(&None));

        // A revocation submitted while the older batch was being written wins over it.
        let mut newer = Pending::default();
        newer.add(StateChange::ClientKeyDelete("a".to_owned()));
        newer.restore(older);
        assert_eq!(newer.client_keys.get("a"), Some(&None));
        assert_eq!(newer.client_keys.get("b"), Some(&Some(stored_key("b", "1"))));
        assert_eq!(newer.len(), 3);
    }

    #[test]
    fn a_restored_batch_does_not_overwrite_newer_changes() {
        let mut older = Pending::default();
        older.add(StateChange::Quota(usage("a", 1)));
        older.add(StateChange::Quota(usage("b", 1)));
        let mut newer = Pending::default();
        newer.add(StateChange::Quota(usage("a", 2)));
        newer.restore(older);
        let mut tokens: Vec<_> = newer.quota.values().map(|u| (u.name.clone(), u.tokens)).collect();
        tokens.sort();
        assert_eq!(tokens, [("a".to_owned(), 2), ("b".to_owned(), 1)]);
    }

    #[test]
    fn a_failed_write_is_kept_reported_and_retried() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let store = SqliteStore::open_with(
            config.path.as_deref().unwrap(),
            config.flush_interval,
            Duration::from_millis(20),
        )
        .unwrap();
        // Another connection holding the write lock makes the writer's transaction fail.
        let blocker = Connection::open(config.path.as_ref().unwrap()).unwrap();
        blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
        store.submit(StateChange::Quota(usage("a", 42)));
        let error = store.flush().unwrap_err().to_string();
        assert!(error.contains("state.db"), "{error}");
        let error = store.check().unwrap_err().to_string();
        assert!(error.contains("last write failed"), "{error}");

        blocker.execute_batch("ROLLBACK").unwrap();
        store.flush().unwrap();
        store.check().unwrap();
        let tokens: i64 = blocker
            .query_row("SELECT tokens FROM quota_usage WHERE name = 'a'", [], |row| row.get(0))
            .unwrap();
        assert_eq!(tokens, 42);
    }

    #[test]
    fn budget_spend_is_a_scope_of_its_own_and_older_rows_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let store = SqliteStore::open(&config).unwrap();
        // A row as a build before budgets wrote it, straight into the table.
        let conn = Connection::open(config.path.as_ref().unwrap()).unwrap();
        conn.execute(
            "INSERT INTO quota_usage (scope, name, period, period_start, tokens) \
             VALUES ('client', 'team', 'daily', 86400, 40)",
            [],
        )
        .unwrap();
        // The same key's spend, in micro-dollars, under the budget scope.
        let spend = QuotaUsage { scope: QuotaScope::Budget, tokens: 9_000, ..usage("team", 0) };
        store.submit(StateChange::Quota(spend.clone()));
        store.flush().unwrap();
        let scope: String = conn
            .query_row("SELECT scope FROM quota_usage WHERE tokens = 9000", [], |row| row.get(0))
            .unwrap();
        assert_eq!(scope, "client_budget");
        store.close().unwrap();
        let reopened = SqliteStore::open(&config).unwrap();
        let loaded = reopened.load_quota_usage().unwrap();
        assert_eq!(loaded, [usage("team", 40), spend]);
    }

    #[test]
    fn changes_after_close_are_counted_as_lost() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&config(dir.path())).unwrap();
        store.close().unwrap();
        store.submit(StateChange::Unban("10.0.0.1".parse().unwrap()));
        let error = store.check().unwrap_err().to_string();
        assert!(error.contains("1 changes submitted since were lost"), "{error}");
        assert!(store.flush().is_ok(), "nothing submitted before the flush is missing");
        assert!(store.close().is_err());
    }

    #[test]
    fn the_interval_must_be_at_most_a_second() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config(dir.path());
        config.flush_interval = Duration::from_secs(2);
        let error = SqliteStore::open(&config).unwrap_err();
        assert!(
            matches!(error, Error::InvalidDuration { setting: Setting::FlushInterval, .. }),
            "{error:?}"
        );
        assert!(error.to_string().contains("state flush interval is 2s"), "{error}");
        config.flush_interval = Duration::ZERO;
        assert!(SqliteStore::open(&config).is_err());
        config.path = None;
        let error = SqliteStore::open(&config).unwrap_err();
        assert!(matches!(error, Error::MissingSetting(Setting::StatePath)), "{error:?}");
    }

    fn usage_delta(client: &str, requests: u64, cost_micros: u64) -> StateChange {
        StateChange::UsageAdd(UsageRow {
            hour: 3600,
            client: client.to_owned(),
            provider: "p".to_owned(),
            model: "m".to_owned(),
            counts: UsageCounts {
                requests,
                input_tokens: 10 * requests,
                cost_micros,
                ..UsageCounts::default()
            },
        })
    }

    /// Issue 22: usage deltas are summed in the batch, and a restored batch is summed into
    /// the newer one (not dropped for it, as a replaced quota count is).
    #[test]
    fn usage_deltas_sum_in_the_batch_and_a_restore_sums_them_into_newer_ones() {
        let mut older = Pending::default();
        for _ in 0..1000 {
            older.add(usage_delta("a", 1, 2));
        }
        older.add(usage_delta("b", 1, 0));
        older.add(StateChange::UsagePurge { before: 5 });
        assert_eq!(older.len(), 3);
        let mut newer = Pending::default();
        newer.add(usage_delta("a", 2, 1));
        newer.add(StateChange::UsagePurge { before: 3 });
        newer.restore(older);
        let a = newer.usage[&(3600, "a".to_owned(), "p".to_owned(), "m".to_owned())];
        assert_eq!((a.requests, a.input_tokens, a.cost_micros), (1002, 10_020, 2001));
        assert_eq!(newer.usage.len(), 2);
        assert_eq!(newer.usage_purge, Some(5), "the latest cut");
    }

    /// Issue 22: a usage batch whose write failed is kept; deltas submitted meanwhile are
    /// added to it, and the retried write stores both.
    #[test]
    fn a_failed_usage_write_is_kept_and_summed_with_later_deltas() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let path = config.path.clone().unwrap();
        let store = SqliteStore::open_with(&path, config.flush_interval, Duration::from_millis(20))
            .unwrap();
        let blocker = Connection::open(&path).unwrap();
        blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
        store.submit(usage_delta("a", 1, 7));
        assert!(store.flush().is_err(), "the lock is held: the write fails");
        store.submit(usage_delta("a", 2, 5));
        blocker.execute_batch("ROLLBACK").unwrap();
        store.flush().unwrap();
        let rows = store.load_usage(0, u64::MAX).unwrap();
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!((rows[0].counts.requests, rows[0].counts.cost_micros), (3, 12));
    }

    /// Issue 22: `write_soon` makes the writer commit what is pending at once, not when the
    /// interval that started with the first pending change ends (here 1 s).
    #[test]
    fn write_soon_commits_before_the_interval_ends() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            SqliteStore::open_at(&dir.path().join("state.db"), Duration::from_secs(1)).unwrap();
        store.submit(usage_delta("a", 1, 1));
        let asked = Instant::now();
        store.write_soon();
        // Woken by the writer after each write attempt; the deadline is the check.
        let limit = Duration::from_millis(800);
        let mut queue = store.shared.lock();
        while queue.durable < queue.submitted {
            let left = limit.checked_sub(asked.elapsed());
            assert!(left.is_some(), "not written within {limit:?} of write_soon");
            queue = store.shared.written.wait_timeout(queue, left.unwrap()).unwrap().0;
        }
        drop(queue);
        assert_eq!(store.load_usage(0, u64::MAX).unwrap().len(), 1);
    }
}
