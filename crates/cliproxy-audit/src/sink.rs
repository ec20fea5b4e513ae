//! The audit sink: hash-chained JSON lines written by a slog async drain.
//!
//! # How a line gets to the disk
//!
//! [`FileSink::write`] runs on the request path. It only turns the [`Event`] into slog
//! key-values and hands the record to a bounded channel (`slog_async`, 16384 records); it never
//! touches the disk and never blocks. On slog-async's worker thread the chain writer (a custom
//! `slog::Drain`) numbers the line (`seq`), formats it in a fixed field order, hashes it with
//! the previous line's hash, and appends it to an in-memory batch. The batch is written with
//! one `write` when the channel is momentarily empty (or the batch reaches 64 KiB), and
//! `fdatasync` runs at most once per second (a ticker thread asks for it when data is
//! unsynced) and on [`AuditSink::flush`], [`AuditSink::reopen`] and drop. A crash loses at
//! most the last second of lines, and a line torn by it is cut off at the next start.
//!
//! # When the channel is full
//!
//! The event is dropped and counted on the caller's side; the count travels through the
//! channel as soon as there is room, and the writer records it in the chain itself as a
//! `security_violation` line with `result: "audit_events_lost"` and `details.lost`, and in
//! the metrics (`Metrics::audit_events_dropped`). (This is slog-async's `DropAndReport` strategy, done
//! around `AsyncCore` rather than with `Async`: `Async` counts a failed report as one more
//! lost record, and it silently drops control records, while `flush` and `reopen` must never be
//! lost. Those are retried until the channel takes them.)
//!
//! # When the disk is full or the file is unwritable
//!
//! The request path still never blocks. The sink turns [`SinkHealth::Failing`] (naming the file
//! and the OS error), reports it to the metrics, logs an error at most every 10 s (with the
//! number of failures suppressed), and keeps the lines it could not write — already chained, in
//! order — in a backlog of at most 10,000 lines. Writing is retried with the next event (at
//! most every 100 ms), on the ticker, on `flush` and on `reopen`. After a failed write the file
//! is cut back to its last good length, so a line half written by ENOSPC never stays in the
//! chain. When the backlog is full, further events are dropped and counted, and once writing
//! works again an `audit_events_lost` line records how many.

use std::fs::{File, OpenOptions, Permissions, TryLockError};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use slog::{Drain, KV, Key, Level, Logger, OwnedKVList, Record, Serializer, error, info, warn};
use slog_async::{AsyncCore, AsyncError};

use crate::config::AuditConfig;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::metrics::Metrics;
use crate::verify::{Line, MAX_LINE, ZERO_HASH, parse_line, sha256_hex};

/// Whether the sink can write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkHealth {
    /// The last write succeeded.
    Ok,
    /// Writes fail; events are held in memory (bounded) and retried.
    Failing {
        /// The error, naming the file.
        error: String,
    },
}

/// Where audit events go.
pub trait AuditSink: Send + Sync + std::fmt::Debug {
    /// Queues one event for writing; never blocks on the disk.
    fn write(&self, event: &Event);
    /// Whether writes currently succeed.
    fn health(&self) -> SinkHealth;
    /// Reopens the file at its configured path (after logrotate moved it), continuing the
    /// chain.
    fn reopen(&self);
    /// Waits until every queued event has been written (or failed).
    fn flush(&self);
}

/// What the sink reports about itself (to the metrics, in the gateway).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SinkReport {
    /// A write (or fdatasync) failed (`Metrics::audit_write_failed`).
    WriteFailed,
    /// Events were dropped: channel full, or backlog full while the disk fails.
    EventsDropped(u64),
    /// The sink became healthy (`true`) or failing (`false`).
    Healthy(bool),
}

/// Receives the sink's [`SinkReport`]s (called on the writer thread, or on the caller's thread
/// when the writer is gone).
pub type Reporter = Arc<dyn Fn(SinkReport) + Send + Sync>;

/// What the chain writer writes to: the audit file, or a stand-in in tests.
pub trait AuditWriter: Write + Send {
    /// The current length (0 for something that is not a regular file).
    fn file_len(&mut self) -> io::Result<u64>;
    /// Cuts the file back to `len` bytes after a failed write (nothing for something that is
    /// not a regular file).
    fn truncate(&mut self, len: u64) -> io::Result<()>;
    /// Makes written data durable (`fdatasync`).
    fn sync(&mut self) -> io::Result<()>;
}

impl AuditWriter for File {
    fn file_len(&mut self) -> io::Result<u64> {
        let meta = self.metadata()?;
        Ok(if meta.is_file() { meta.len() } else { 0 })
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        if self.metadata()?.is_file() { self.set_len(len) } else { Ok(()) }
    }

    fn sync(&mut self) -> io::Result<()> {
        self.sync_data()
    }
}

/// Opens the audit file for appending at a path (at open and at every reopen).
pub type OpenWriter = Arc<dyn Fn(&Path) -> io::Result<Box<dyn AuditWriter>> + Send + Sync>;

/// Tuning of a [`FileSink`]; the defaults are what the gateway uses.
#[derive(Clone)]
#[non_exhaustive]
pub struct SinkOptions {
    /// Records the channel to the writer thread holds (default 16384).
    pub channel_size: usize,
    /// Most lines held in memory while the file cannot be written (default 10,000).
    pub backlog_lines: usize,
    /// Most bytes held in memory while the file cannot be written (default 16 MiB).
    pub backlog_bytes: usize,
    /// How often unsynced data is `fdatasync`ed (default 1 s).
    pub sync_interval: Duration,
    /// How often a failing write is retried as events come in (default 100 ms).
    pub retry_interval: Duration,
    /// How the file is opened for writing; `None`: append-only, created 0600, a looser mode
    /// tightened. Whichever opener, the sink itself first opens the path without following a
    /// symlink (`O_NOFOLLOW`) and takes an exclusive lock on it (a regular file), held until
    /// the next successful reopen.
    pub open: Option<OpenWriter>,
}

impl Default for SinkOptions {
    fn default() -> Self {
        Self {
            channel_size: 16_384,
            backlog_lines: 10_000,
            backlog_bytes: 16 << 20,
            sync_interval: Duration::from_secs(1),
            retry_interval: Duration::from_millis(100),
            open: None,
        }
    }
}

impl std::fmt::Debug for SinkOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkOptions")
            .field("channel_size", &self.channel_size)
            .field("backlog_lines", &self.backlog_lines)
            .field("backlog_bytes", &self.backlog_bytes)
            .field("sync_interval", &self.sync_interval)
            .field("retry_interval", &self.retry_interval)
            .field("open", &self.open.as_ref().map(|_| "custom"))
            .finish()
    }
}

/// The file sink: hash-chained JSON lines appended by a slog async drain (see the module docs
/// for the write, fsync and failure policies).
pub struct FileSink {
    path: PathBuf,
    /// The slog logger whose drain is [`Front`]: events go through it.
    logger: Logger,
    front: Arc<Front>,
    shared: Arc<Shared>,
    ticker: Option<(mpsc::Sender<()>, JoinHandle<()>)>,
}

impl std::fmt::Debug for FileSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSink")
            .field("path", &self.path)
            .field("health", &self.health())
            .finish_non_exhaustive()
    }
}

impl FileSink {
    /// Opens (or creates, 0600) the audit file and continues its chain; write failures and
    /// dropped events are reported to `metrics`, and to `log` (the operational log).
    pub fn open(config: &AuditConfig, metrics: Arc<Metrics>, log: Logger) -> Result<Self> {
        let report: Reporter = Arc::new(move |report| match report {
            SinkReport::WriteFailed => metrics.audit_write_failed(),
            SinkReport::EventsDropped(count) => metrics.audit_events_dropped(count),
            SinkReport::Healthy(healthy) => metrics.set_audit_healthy(healthy),
        });
        Self::open_with(config, report, log, SinkOptions::default())
    }

    /// [`FileSink::open`] with the reports going to `report` and the given options.
    ///
    /// The existing file's last complete line is read (only the file's tail) and the chain
    /// continues from its `seq` and `hash`; a torn last line (no newline: a crash while
    /// writing) is cut off with a warning. A last complete line that is not a valid audit line
    /// is [`Error::Chain`]: a new chain is never started on top of a damaged one.
    pub fn open_with(
        config: &AuditConfig,
        report: Reporter,
        log: Logger,
        options: SinkOptions,
    ) -> Result<Self> {
        let path = config.file.clone();
        let open_error = |source: io::Error| {
            if source.kind() == io::ErrorKind::WouldBlock {
                Error::Locked { path: path.clone() }
            } else {
                Error::Open { path: path.clone(), source }
            }
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(open_error)?;
        }
        // Locked before the tail is read (and perhaps cut): nobody else appends meanwhile.
        let mut locked = open_locked(&path, &log, None).map_err(open_error)?;
        let head = continue_chain(&mut locked, &path, &log)?;
        let open = options.open.clone();
        let mut writer = writer_for(&locked, &path, open.as_ref()).map_err(open_error)?;
        let good_len = writer.file_len().map_err(open_error)?;
        info!(log, "audit log opened"; "file" => %path.display(), "seq" => head.seq,
              "hash" => &head.hash);

        let shared = Arc::new(Shared::new());
        let now = Instant::now();
        let worker = Worker {
            path: path.clone(),
            open,
            locked,
            writer,
            log,
            report,
            shared: shared.clone(),
            options: options.clone(),
            seq: head.seq,
            hash: head.hash,
            pending: Vec::new(),
            pending_lines: 0,
            good_len,
            needs_cut: false,
            unsynced: false,
            lost: 0,
            write_error: None,
            reopen_error: None,
            last_attempt: now,
            last_sync: now,
            error_log: RateLimit::default(),
        };
        let core = AsyncCore::custom(ChainDrain(Mutex::new(worker)))
            .chan_size(options.channel_size.max(1))
            .thread_name("cliproxy-audit".to_owned())
            .build();
        let front = Arc::new(Front {
            core,
            dropped: AtomicU64::new(0),
            shared: shared.clone(),
            empty: OwnedKVList::from(slog::o!()),
        });
        let logger = Logger::root(front.clone(), slog::o!());
        let ticker = spawn_ticker(Arc::downgrade(&front), options.sync_interval);
        Ok(Self { path, logger, front, shared, ticker })
    }

    /// The file written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sends a command and waits until the writer has carried it out.
    ///
    /// The ticket is taken and the command sent under one lock, so commands reach the writer in
    /// ticket order and "done up to ticket N" means exactly that this command was carried out.
    fn command(&self, command: &'static str) {
        let ticket = {
            let mut last = lock(&self.shared.last_ticket);
            let ticket = *last + 1;
            if !self.front.command(command, ticket) {
                return;
            }
            *last = ticket;
            ticket
        };
        let mut done = lock(&self.shared.done);
        while *done < ticket && !self.shared.writer_gone.load(Ordering::SeqCst) {
            done = self.shared.done_changed.wait(done).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

impl AuditSink for FileSink {
    fn write(&self, event: &Event) {
        self.logger.log(&slog::record!(
            Level::Info,
            TAG_EVENT,
            &format_args!("audit"),
            slog::BorrowedKV(&EventKv(event))
        ));
    }

    fn health(&self) -> SinkHealth {
        let health = lock(&self.shared.health).clone();
        if health == SinkHealth::Ok && self.shared.writer_gone.load(Ordering::SeqCst) {
            // The writer thread reports its own death; this only covers a report that failed.
            return SinkHealth::Failing { error: writer_died(&self.path) };
        }
        health
    }

    fn reopen(&self) {
        self.command(CMD_REOPEN);
    }

    fn flush(&self) {
        self.command(CMD_FLUSH);
    }
}

impl Drop for FileSink {
    fn drop(&mut self) {
        if let Some((stop, ticker)) = self.ticker.take() {
            drop(stop);
            let _ = ticker.join();
        }
        // Writes what is queued, syncs and logs the chain head; the writer thread itself is
        // joined when the last reference to the `AsyncCore` goes.
        self.command(CMD_CLOSE);
    }
}

/// Record tags: what a record on the channel is.
const TAG_EVENT: &str = "audit-event";
const TAG_LOST: &str = "audit-lost";
const TAG_COMMAND: &str = "audit-command";
const CMD_FLUSH: &str = "flush";
const CMD_REOPEN: &str = "reopen";
const CMD_CLOSE: &str = "close";
const CMD_TICK: &str = "tick";

/// A batch is written once it reaches this size even when more records are queued.
const BATCH_BYTES: usize = 64 * 1024;
/// Longest `details` JSON written as is; longer ones are replaced by a note of their size.
const MAX_DETAILS: usize = 256 * 1024;
/// Longest other string field written (cut at a character boundary).
const MAX_FIELD: usize = 4096;
/// Errors are logged at most this often.
const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// State shared by the callers, the ticker and the writer thread.
struct Shared {
    health: Mutex<SinkHealth>,
    /// Records sent and not yet taken by the writer: 0 means the channel is empty for now.
    queued: AtomicUsize,
    /// Data written but not synced, or a failing write to retry: the ticker has work.
    dirty: AtomicBool,
    /// The last command ticket sent; held while a command is sent.
    last_ticket: Mutex<u64>,
    /// The last command ticket carried out.
    done: Mutex<u64>,
    done_changed: Condvar,
    writer_gone: AtomicBool,
}

impl Shared {
    fn new() -> Self {
        Self {
            health: Mutex::new(SinkHealth::Ok),
            queued: AtomicUsize::new(0),
            dirty: AtomicBool::new(false),
            last_ticket: Mutex::new(0),
            done: Mutex::new(0),
            done_changed: Condvar::new(),
            writer_gone: AtomicBool::new(false),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The caller side: sends records to the writer thread, counting what a full channel drops.
struct Front {
    core: AsyncCore,
    dropped: AtomicU64,
    shared: Arc<Shared>,
    empty: OwnedKVList,
}

impl Front {
    fn send(
        &self,
        record: &Record<'_>,
        values: &OwnedKVList,
    ) -> std::result::Result<(), AsyncError> {
        self.shared.queued.fetch_add(1, Ordering::SeqCst);
        let sent = self.core.log(record, values);
        if sent.is_err() {
            self.shared.queued.fetch_sub(1, Ordering::SeqCst);
        }
        sent
    }

    /// Sends the count of dropped events when there is one and there is room.
    fn push_lost(&self) {
        // A plain load first: the common case (nothing dropped) does not write the shared line.
        if self.dropped.load(Ordering::Relaxed) == 0 {
            return;
        }
        let count = self.dropped.swap(0, Ordering::SeqCst);
        if count > 0 {
            let sent = self.send(
                &slog::record!(
                    Level::Info,
                    TAG_LOST,
                    &format_args!("lost"),
                    slog::b!("count" => count)
                ),
                &self.empty,
            );
            if sent.is_err() {
                self.dropped.fetch_add(count, Ordering::SeqCst);
            }
        }
    }

    /// Sends a command (after the count of dropped events), waiting for room: a command is
    /// never dropped. False when the writer thread is gone.
    fn command(&self, command: &'static str, ticket: u64) -> bool {
        let count = self.dropped.swap(0, Ordering::SeqCst);
        if count > 0 {
            let sent = self.send_waiting(&slog::record!(
                Level::Info,
                TAG_LOST,
                &format_args!("lost"),
                slog::b!("count" => count)
            ));
            if !sent {
                return false;
            }
        }
        self.send_waiting(&slog::record!(
            Level::Info,
            TAG_COMMAND,
            &format_args!("command"),
            slog::b!("command" => command, "ticket" => ticket)
        ))
    }

    fn send_waiting(&self, record: &Record<'_>) -> bool {
        loop {
            match self.send(record, &self.empty) {
                Ok(()) => return true,
                // slog-async says `Full` for a channel whose writer thread is gone, too.
                Err(AsyncError::Full) if self.shared.writer_gone.load(Ordering::SeqCst) => {
                    return false;
                }
                // The writer drains the channel at disk speed; waiting a little is what a
                // command (never on the request path) can afford.
                Err(AsyncError::Full) => std::thread::sleep(Duration::from_millis(1)),
                Err(_) => return false,
            }
        }
    }
}

impl Drain for Front {
    type Ok = ();
    type Err = slog::Never;

    fn log(
        &self,
        record: &Record<'_>,
        values: &OwnedKVList,
    ) -> std::result::Result<(), slog::Never> {
        self.push_lost();
        if self.send(record, values).is_err() {
            self.dropped.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }
}

/// Every `interval`, reports dropped events and asks the writer to sync (or retry) when it
/// has work; ends when the sink drops the sender.
fn spawn_ticker(
    front: Weak<Front>,
    interval: Duration,
) -> Option<(mpsc::Sender<()>, JoinHandle<()>)> {
    let (stop, stopped) = mpsc::channel::<()>();
    let handle = std::thread::Builder::new()
        .name("cliproxy-audit-tick".to_owned())
        .spawn(move || {
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
                let Some(front) = front.upgrade() else { return };
                front.push_lost();
                if front.shared.dirty.load(Ordering::SeqCst) {
                    // A full channel means the writer is busy and will get there anyway.
                    let _ = front.send(
                        &slog::record!(
                            Level::Info,
                            TAG_COMMAND,
                            &format_args!("command"),
                            slog::b!("command" => CMD_TICK, "ticket" => 0u64)
                        ),
                        &front.empty,
                    );
                }
            }
        })
        .ok()?;
    Some((stop, handle))
}

/// An event as slog key-values: cheap to build on the caller's thread.
struct EventKv<'a>(&'a Event);

impl slog::KV for EventKv<'_> {
    fn serialize(&self, _: &Record<'_>, s: &mut dyn Serializer) -> slog::Result {
        let event = self.0;
        let at = event.at.duration_since(UNIX_EPOCH).unwrap_or_default();
        s.emit_u64("at", u64::try_from(at.as_nanos()).unwrap_or(u64::MAX))?;
        s.emit_str("event_type", event.event_type().as_str())?;
        emit_opt(s, "provider", event.provider.as_deref())?;
        emit_opt(s, "user_id", event.user_id.as_deref())?;
        match event.ip {
            Some(ip) => s.emit_arguments("ip", &format_args!("{ip}"))?,
            None => s.emit_none("ip")?,
        }
        s.emit_str("result", &event.result())?;
        emit_opt(s, "request_id", event.request_id.as_deref())?;
        let details = serde_json::to_string(&event.details()).unwrap_or_else(|_| "{}".to_owned());
        s.emit_str("details", &details)
    }
}

fn emit_opt(s: &mut dyn Serializer, key: Key, value: Option<&str>) -> slog::Result {
    match value {
        Some(value) => s.emit_str(key, value),
        None => s.emit_none(key),
    }
}

/// The fields of an event record, collected back on the writer thread.
#[derive(Default)]
struct Fields {
    at: u64,
    event_type: String,
    provider: Option<String>,
    user_id: Option<String>,
    ip: Option<String>,
    result: String,
    request_id: Option<String>,
    details: Option<String>,
    command: String,
    ticket: u64,
    count: u64,
}

impl Serializer for Fields {
    fn emit_arguments(&mut self, key: Key, value: &std::fmt::Arguments<'_>) -> slog::Result {
        self.emit_str(key, &value.to_string())
    }

    fn emit_str(&mut self, key: Key, value: &str) -> slog::Result {
        let value = value.to_owned();
        match key {
            "event_type" => self.event_type = value,
            "provider" => self.provider = Some(value),
            "user_id" => self.user_id = Some(value),
            "ip" => self.ip = Some(value),
            "result" => self.result = value,
            "request_id" => self.request_id = Some(value),
            "details" => self.details = Some(value),
            "command" => self.command = value,
            _ => {}
        }
        Ok(())
    }

    fn emit_u64(&mut self, key: Key, value: u64) -> slog::Result {
        match key {
            "at" => self.at = value,
            "ticket" => self.ticket = value,
            "count" => self.count = value,
            _ => {}
        }
        Ok(())
    }

    fn emit_none(&mut self, _: Key) -> slog::Result {
        Ok(())
    }
}

/// The drain on slog-async's worker thread. The mutex is never contended (one thread).
struct ChainDrain(Mutex<Worker>);

impl Drain for ChainDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record<'_>, _: &OwnedKVList) -> std::result::Result<(), slog::Never> {
        let mut worker = lock(&self.0);
        let last_queued = worker.shared.queued.fetch_sub(1, Ordering::SeqCst) <= 1;
        let mut fields = Fields::default();
        let _ = record.kv().serialize(record, &mut fields);
        match record.tag() {
            TAG_EVENT => worker.event(&fields),
            TAG_LOST => worker.lost(fields.count),
            TAG_COMMAND => worker.command(&fields.command, fields.ticket),
            _ => {}
        }
        if last_queued || worker.pending.len() >= BATCH_BYTES {
            worker.write_out(false);
            worker.sync(false);
        }
        let dirty =
            worker.unsynced || worker.write_error.is_some() || worker.reopen_error.is_some();
        worker.shared.dirty.store(dirty, Ordering::SeqCst);
        Ok(())
    }
}

impl Drop for ChainDrain {
    /// slog-async catches a panic of the drain and ends its thread; the mutex, poisoned by the
    /// panic, tells. The sink then reports itself failing for good.
    fn drop(&mut self) {
        if self.0.is_poisoned() {
            self.0.get_mut().unwrap_or_else(PoisonError::into_inner).died();
        }
    }
}

/// The health error once the writer thread is gone.
fn writer_died(path: &Path) -> String {
    format!(
        "the audit writer thread for {} (logging.audit.file) stopped after a panic: events are \
         no longer written; restart the gateway",
        path.display()
    )
}

/// The chain writer's state.
struct Worker {
    path: PathBuf,
    /// A custom opener for the writer (`None`: the locked file itself).
    open: Option<OpenWriter>,
    /// The file opened without following a symlink, exclusively locked (when a regular file).
    locked: File,
    writer: Box<dyn AuditWriter>,
    log: Logger,
    report: Reporter,
    shared: Arc<Shared>,
    options: SinkOptions,
    /// The last chained line's seq and hash (0 and zeros for a fresh chain).
    seq: u64,
    hash: String,
    /// Chained lines not yet written, in order.
    pending: Vec<u8>,
    pending_lines: usize,
    /// The file's length after the last successful write.
    good_len: u64,
    /// A write failed and the file is not yet cut back to `good_len`.
    needs_cut: bool,
    unsynced: bool,
    /// Events dropped and not yet recorded in the chain.
    lost: u64,
    write_error: Option<String>,
    reopen_error: Option<String>,
    last_attempt: Instant,
    last_sync: Instant,
    error_log: RateLimit,
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.shared.writer_gone.store(true, Ordering::SeqCst);
        let _guard = lock(&self.shared.done);
        self.shared.done_changed.notify_all();
    }
}

impl Worker {
    fn event(&mut self, fields: &Fields) {
        self.record_lost();
        if self.backlog_full() {
            self.lost += 1;
            (self.report)(SinkReport::EventsDropped(1));
        } else {
            self.chain(fields);
        }
    }

    fn lost(&mut self, count: u64) {
        self.lost += count;
        (self.report)(SinkReport::EventsDropped(count));
        self.record_lost();
    }

    fn command(&mut self, command: &str, ticket: u64) {
        match command {
            CMD_FLUSH => {
                self.write_out(true);
                self.sync(true);
            }
            CMD_REOPEN => self.reopen(),
            CMD_CLOSE => {
                self.write_out(true);
                self.sync(true);
                if self.pending_lines > 0 || self.lost > 0 {
                    error!(self.log, "audit log closed with lines not written";
                           "file" => %self.path.display(), "unwritten" => self.pending_lines,
                           "lost" => self.lost);
                }
                info!(self.log, "audit log closed"; "file" => %self.path.display(),
                      "seq" => self.seq, "hash" => &self.hash);
            }
            CMD_TICK => {
                if self.reopen_error.is_some() {
                    self.reopen();
                }
                self.write_out(true);
                self.sync(true);
            }
            _ => {}
        }
        if ticket > 0 {
            let mut done = lock(&self.shared.done);
            // Commands arrive in ticket order (see `FileSink::command`).
            *done = (*done).max(ticket);
            self.shared.done_changed.notify_all();
        }
    }

    fn backlog_full(&self) -> bool {
        self.pending_lines >= self.options.backlog_lines
            || self.pending.len() >= self.options.backlog_bytes
    }

    /// Chains an `audit_events_lost` line for the events dropped so far, when there is room.
    fn record_lost(&mut self) {
        if self.lost == 0 || self.backlog_full() {
            return;
        }
        let fields = Fields {
            at: u64::try_from(
                SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos(),
            )
            .unwrap_or(u64::MAX),
            event_type: "security_violation".to_owned(),
            result: "audit_events_lost".to_owned(),
            details: Some(format!("{{\"lost\":{}}}", self.lost)),
            ..Fields::default()
        };
        self.lost = 0;
        self.chain(&fields);
    }

    /// Formats, numbers and hashes one line and appends it to the batch.
    fn chain(&mut self, f: &Fields) {
        let seq = self.seq + 1;
        let start = self.pending.len();
        let at = UNIX_EPOCH + Duration::from_nanos(f.at);
        let buf = &mut self.pending;
        buf.extend_from_slice(format!("{{\"seq\":{seq},\"timestamp\":\"").as_bytes());
        buf.extend_from_slice(humantime::format_rfc3339_millis(at).to_string().as_bytes());
        buf.extend_from_slice(b"\",\"event_type\":");
        json_str(buf, Some(&f.event_type));
        buf.extend_from_slice(b",\"provider\":");
        json_str(buf, f.provider.as_deref());
        buf.extend_from_slice(b",\"user_id\":");
        json_str(buf, f.user_id.as_deref());
        buf.extend_from_slice(b",\"ip\":");
        json_str(buf, f.ip.as_deref());
        buf.extend_from_slice(b",\"result\":");
        json_str(buf, Some(&f.result));
        buf.extend_from_slice(b",\"request_id\":");
        json_str(buf, f.request_id.as_deref());
        buf.extend_from_slice(b",\"details\":");
        match f.details.as_deref() {
            // Produced by serde_json on the caller's side from a `Value` object.
            Some(details) if details.len() <= MAX_DETAILS && details.starts_with('{') => {
                buf.extend_from_slice(details.as_bytes());
            }
            Some(details) => buf.extend_from_slice(
                format!("{{\"truncated\":true,\"bytes\":{}}}", details.len()).as_bytes(),
            ),
            None => buf.extend_from_slice(b"{}"),
        }
        buf.extend_from_slice(b",\"prev_hash\":\"");
        buf.extend_from_slice(self.hash.as_bytes());
        buf.extend_from_slice(b"\"");
        let hash = sha256_hex(&buf[start..]);
        buf.extend_from_slice(b",\"hash\":\"");
        buf.extend_from_slice(hash.as_bytes());
        buf.extend_from_slice(b"\"}\n");
        debug_assert!(buf.len() - start <= MAX_LINE);
        self.seq = seq;
        self.hash = hash;
        self.pending_lines += 1;
    }

    /// Writes the batch (or retries the backlog). `force`: retry now even if the last attempt
    /// failed less than `retry_interval` ago.
    fn write_out(&mut self, force: bool) {
        loop {
            if self.pending.is_empty() && !self.needs_cut {
                return;
            }
            if self.write_error.is_some()
                && !force
                && self.last_attempt.elapsed() < self.options.retry_interval
            {
                return;
            }
            self.last_attempt = Instant::now();
            if self.needs_cut {
                // Never append after a partial line: the chain would break in the middle.
                if let Err(e) = self.writer.truncate(self.good_len) {
                    self.failed(&e);
                    return;
                }
                self.needs_cut = false;
            }
            if self.pending.is_empty() {
                return;
            }
            let written = self.writer.write_all(&self.pending).and_then(|()| self.writer.flush());
            if let Err(e) = written {
                self.needs_cut = true;
                if self.writer.truncate(self.good_len).is_ok() {
                    self.needs_cut = false;
                }
                self.failed(&e);
                return;
            }
            self.good_len += self.pending.len() as u64;
            let lines = self.pending_lines;
            self.pending.clear();
            self.pending_lines = 0;
            self.unsynced = true;
            if self.write_error.take().is_some() {
                info!(self.log, "the audit log is writable again";
                      "file" => %self.path.display(), "backlog_written" => lines,
                      "lost" => self.lost);
                self.publish_health();
            }
            // Events dropped while the backlog was full are recorded right after it.
            if self.lost == 0 {
                return;
            }
            self.record_lost();
        }
    }

    fn sync(&mut self, force: bool) {
        if !self.unsynced || self.write_error.is_some() {
            return;
        }
        if !force && self.last_sync.elapsed() < self.options.sync_interval {
            return;
        }
        self.last_sync = Instant::now();
        match self.writer.sync() {
            Ok(()) => self.unsynced = false,
            Err(e) => self.failed(&e),
        }
    }

    fn reopen(&mut self) {
        self.write_out(true);
        self.sync(true);
        let opened = open_locked(&self.path, &self.log, Some(&self.locked)).and_then(|locked| {
            let mut writer = writer_for(&locked, &self.path, self.open.as_ref())?;
            let len = writer.file_len()?;
            Ok((locked, writer, len))
        });
        match opened {
            Ok((locked, writer, len)) => {
                // The old file and its lock go only now, once the new one is in hand.
                self.writer = writer;
                self.locked = locked;
                self.good_len = len;
                self.needs_cut = false;
                self.unsynced = false;
                self.reopen_error = None;
                info!(self.log, "audit log reopened"; "file" => %self.path.display(),
                      "seq" => self.seq, "hash" => &self.hash);
                self.write_out(true);
                self.publish_health();
            }
            Err(e) => {
                let message = format!(
                    "cannot reopen the audit log {} (logging.audit.file): {e}; still writing to \
                     the file open before",
                    self.path.display()
                );
                // Retried every tick: logged like write errors, at most every 10 s.
                if let Some(suppressed) = self.error_log.allow() {
                    error!(self.log, "{}", message; "suppressed" => suppressed);
                }
                self.reopen_error = Some(message);
                self.publish_health();
            }
        }
    }

    /// The writer thread panicked: nothing more is written.
    fn died(&mut self) {
        let message = writer_died(&self.path);
        error!(self.log, "{}", message; "unwritten" => self.pending_lines, "lost" => self.lost);
        self.write_error = Some(message);
        self.publish_health();
    }

    fn failed(&mut self, e: &io::Error) {
        (self.report)(SinkReport::WriteFailed);
        let message =
            format!("cannot write the audit log {} (logging.audit.file): {e}", self.path.display());
        if let Some(suppressed) = self.error_log.allow() {
            error!(self.log, "{}", message; "backlog_lines" => self.pending_lines,
                   "lost" => self.lost, "suppressed" => suppressed);
        }
        self.write_error = Some(message);
        self.publish_health();
    }

    /// Publishes the health and reports a change.
    fn publish_health(&mut self) {
        let health = match self.write_error.as_ref().or(self.reopen_error.as_ref()) {
            Some(error) => SinkHealth::Failing { error: error.clone() },
            None => SinkHealth::Ok,
        };
        let healthy = health == SinkHealth::Ok;
        let was_healthy = {
            let mut shared = lock(&self.shared.health);
            let was_healthy = *shared == SinkHealth::Ok;
            *shared = health;
            was_healthy
        };
        // Reported outside the lock: the reporter may well ask for the health.
        if was_healthy != healthy {
            (self.report)(SinkReport::Healthy(healthy));
        }
    }
}

/// Writes a JSON string (or `null`), cut at [`MAX_FIELD`] bytes.
fn json_str(buf: &mut Vec<u8>, value: Option<&str>) {
    match value {
        None => buf.extend_from_slice(b"null"),
        Some(value) => {
            let mut end = value.len().min(MAX_FIELD);
            while !value.is_char_boundary(end) {
                end -= 1;
            }
            // Serialising a `str` cannot fail.
            let _ = serde_json::to_writer(&mut *buf, &value[..end]);
        }
    }
}

/// Allows an action at most every [`ERROR_LOG_INTERVAL`], counting what it suppressed.
#[derive(Default)]
struct RateLimit {
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimit {
    /// `Some(suppressed since the last time)` when allowed now.
    fn allow(&mut self) -> Option<u64> {
        match self.last {
            Some(last) if last.elapsed() < ERROR_LOG_INTERVAL => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(Instant::now());
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// What the I/O error says when another process holds the lock.
const LOCKED: &str = "another process holds it (an exclusive lock on the file: is another \
                      cliproxy writing the same audit log?)";

/// Opens the audit file (creating it 0600) without following a symlink, takes an exclusive
/// lock on it when it is a regular file, and tightens a looser mode (with a warning). Read and
/// append: the tail is read from it at start, and it is the writer unless the options give an
/// opener. A lock held elsewhere is an error of kind `WouldBlock`.
///
/// `held`: the file the sink holds now (at reopen). When the path is still that file (a reopen
/// without a rotation), its lock is kept rather than fought over.
fn open_locked(path: &Path, log: &Logger, held: Option<&File>) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| {
            let symlink = e.raw_os_error() == Some(libc::ELOOP)
                && std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
            if symlink {
                io::Error::new(
                    e.kind(),
                    "is a symbolic link (refused: the audit log must be the file itself)",
                )
            } else {
                e
            }
        })?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        // A device such as /dev/full: nothing to lock, cut or tighten.
        return Ok(file);
    }
    if let Some(held) = held {
        let same = held.metadata().is_ok_and(|h| (h.dev(), h.ino()) == (meta.dev(), meta.ino()));
        if same {
            return held.try_clone();
        }
    }
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            return Err(io::Error::new(io::ErrorKind::WouldBlock, LOCKED));
        }
        Err(TryLockError::Error(e)) => return Err(e),
    }
    if meta.permissions().mode() & 0o077 != 0 {
        warn!(log, "the audit log was readable by others: mode tightened to 0600";
              "file" => %path.display(),
              "mode" => format!("{:o}", meta.permissions().mode() & 0o777));
        file.set_permissions(Permissions::from_mode(0o600))?;
    }
    Ok(file)
}

/// The writer: the options' opener, or else the locked file itself (append-only).
fn writer_for(
    locked: &File,
    path: &Path,
    open: Option<&OpenWriter>,
) -> io::Result<Box<dyn AuditWriter>> {
    match open {
        Some(open) => open(path),
        None => Ok(Box::new(locked.try_clone()?)),
    }
}

/// Where an existing chain ends.
struct Head {
    seq: u64,
    hash: String,
}

/// Reads the tail of an existing audit file (the locked file) to continue its chain. Reads at
/// most 2 MiB from the end (a last line without its newline and a complete line, each at most
/// [`MAX_LINE`]).
///
/// A last line without its newline is checked like any other when it is a complete audit line
/// (its hash, and its link to the line before), then completed with its newline: an edited
/// line is not cut off as if a crash had torn it. Only a tail that is not a complete line (a
/// crash while writing) is cut off, with a warning.
fn continue_chain(file: &mut File, path: &Path, log: &Logger) -> Result<Head> {
    let fresh = Head { seq: 0, hash: ZERO_HASH.to_owned() };
    let open_error = |source| Error::Open { path: path.to_owned(), source };
    let chain_error = |reason: String| Error::Chain { path: path.to_owned(), reason };
    let meta = file.metadata().map_err(open_error)?;
    if !meta.is_file() || meta.len() == 0 {
        return Ok(fresh);
    }
    let len = meta.len();
    let most = (2 * MAX_LINE + 2) as u64;
    let mut window = 64 * 1024u64;
    loop {
        let size = window.min(len);
        let start = len - size;
        let mut tail = vec![0; usize::try_from(size).unwrap_or(usize::MAX)];
        file.seek(SeekFrom::Start(start)).map_err(open_error)?;
        file.read_exact(&mut tail).map_err(open_error)?;
        let whole = start == 0;
        let grow = |window: u64| -> Result<u64> {
            if window >= most || window >= len {
                Err(chain_error(format!(
                    "no complete line in its last {} bytes (not an audit log?)",
                    window.min(len)
                )))
            } else {
                Ok((window * 4).min(most))
            }
        };
        // The last complete line: where it starts and where its newline is.
        let last = match tail.iter().rposition(|&b| b == b'\n') {
            // No newline at all: the whole file is one unterminated line.
            None if whole => None,
            None => {
                window = grow(window)?;
                continue;
            }
            Some(end) => match tail[..end].iter().rposition(|&b| b == b'\n') {
                Some(i) => Some((i + 1, end)),
                None if whole => Some((0, end)),
                None => {
                    window = grow(window)?;
                    continue;
                }
            },
        };
        let previous = match last {
            Some((line_start, end)) => Some(last_line(&tail[line_start..end], &chain_error)?),
            None => None,
        };
        let tail_start = last.map_or(0, |(_, end)| end + 1);
        let unterminated = &tail[tail_start..];
        if unterminated.is_empty() {
            return Ok(previous.map_or(fresh, |line| Head { seq: line.seq, hash: line.hash }));
        }
        let Ok(line) = parse_line(unterminated) else {
            // Not a whole line: torn by a crash while writing.
            cut(file, path, start + tail_start as u64, len, log)?;
            return Ok(previous.map_or(fresh, |line| Head { seq: line.seq, hash: line.hash }));
        };
        if !line.hash_ok {
            return Err(chain_error(
                "its last line (without its newline) was changed (its hash does not match it); \
                 refusing to continue the chain: check the file with `cliproxy-server audit \
                 verify`, then move it away"
                    .to_owned(),
            ));
        }
        let links = match &previous {
            Some(previous) => {
                previous.seq.checked_add(1) == Some(line.seq) && line.prev_hash == previous.hash
            }
            None => line.seq != 1 || line.prev_hash == ZERO_HASH,
        };
        if !links {
            return Err(chain_error(
                "its last line (without its newline) does not follow the line before it (seq or \
                 prev_hash); refusing to continue the chain: check the file with \
                 `cliproxy-server audit verify`, then move it away"
                    .to_owned(),
            ));
        }
        // Appended (the file is opened for appending).
        file.write_all(b"\n").map_err(open_error)?;
        warn!(log, "the audit log's last line lacked its newline: completed";
              "file" => %path.display(), "seq" => line.seq);
        return Ok(Head { seq: line.seq, hash: line.hash });
    }
}

/// Parses the last complete line of an existing file; it must be a sound audit line.
fn last_line(bytes: &[u8], chain_error: &impl Fn(String) -> Error) -> Result<Line> {
    let line = parse_line(bytes).map_err(|why| {
        chain_error(format!(
            "its last complete line is not an audit line ({why}); refusing to start a new chain \
             on top of it: check the file with `cliproxy-server audit verify`, then move it away"
        ))
    })?;
    if !line.hash_ok {
        return Err(chain_error(
            "its last complete line was changed (its hash does not match it); refusing to \
             continue the chain: check the file with `cliproxy-server audit verify`, then move \
             it away"
                .to_owned(),
        ));
    }
    Ok(line)
}

/// Cuts a torn last line off.
fn cut(file: &File, path: &Path, good: u64, len: u64, log: &Logger) -> Result<()> {
    file.set_len(good).map_err(|source| Error::Open { path: path.to_owned(), source })?;
    warn!(log, "cut an incomplete last line off the audit log (a crash while writing)";
          "file" => %path.display(), "bytes" => len - good);
    Ok(())
}
