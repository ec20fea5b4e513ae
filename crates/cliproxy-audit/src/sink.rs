//! The audit sink: hash-chained JSON lines written by a writer thread of its own.
//!
//! # How a line gets to the disk
//!
//! [`FileSink::write_owned`] runs on the request path. It only moves the [`Event`] (boxed)
//! into a bounded channel (`std::sync::mpsc::sync_channel`, 16384 messages); it never touches
//! the disk, never formats anything and never blocks. On the writer thread (`cliproxy-audit`)
//! the chain writer numbers the line (`seq`), formats it straight from the typed event in a
//! fixed field order into the batch buffer, hashes it with the previous line's hash, and keeps
//! it in that in-memory batch. The batch is written with one `write` when the channel is
//! momentarily empty (or the batch reaches 64 KiB); then the writer sleeps 10 ms, so that under
//! load events gather in the channel rather than each waking the thread. `fdatasync` runs at
//! most once per second (a ticker thread asks for it when data is unsynced) and on
//! [`AuditSink::flush`], [`AuditSink::reopen`] and drop. A crash loses at most the last second of lines, and a line
//! torn by it is cut off at the next start.
//!
//! # The head anchor and signed checkpoints
//!
//! With a [`HeadAnchor`] in the options, the head of what is written is handed to it after
//! each `fdatasync` that made new lines durable (never before), so it lags the file by at most
//! about a sync interval and is never ahead of it; at open the file is compared with it (see
//! [`crate::anchor`]). With a signer, a checkpoint line (see [`crate::checkpoint`]) is chained
//! at open, after every `every_lines` lines, at least every `every` (the ticker beats while
//! idle), at a reopen (so a new file is never empty) and at shutdown.
//!
//! # When the channel is full
//!
//! The event is dropped and counted on the caller's side; the count travels through the
//! channel as soon as there is room, and the writer records it in the chain itself as a
//! `security_violation` line with `result: "audit_events_lost"` and `details.lost`, and in
//! the metrics (`Metrics::audit_events_dropped`). Commands (`flush`, `reopen`, close) travel
//! through the same channel, so they are ordered with the events; they are never dropped: the
//! caller waits for room.
//!
//! # When the disk is full or the file is unwritable
//!
//! The request path still never blocks. The sink turns [`SinkHealth::Failing`] (naming the file
//! and the OS error), reports it to the metrics, tells the caller a [`Notice::Failed`] at most
//! every 10 s (with the number of failures suppressed), and keeps the lines it could not write — already chained, in
//! order — in a backlog of at most 10,000 lines. Writing is retried with the next event (at
//! most every 100 ms), on the ticker, on `flush` and on `reopen`. After a failed write the file
//! is cut back to its last good length, so a line half written by ENOSPC never stays in the
//! chain. When the backlog is full, further events are dropped and counted, and once writing
//! works again an `audit_events_lost` line records how many.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cliproxy_core::private_fs::{self, FILE_MODE, Kind, PrivateError};
use ring::signature::Ed25519KeyPair;

use crate::anchor::HeadAnchor;
use crate::checkpoint::ChainHead;
use crate::checkpoint::CheckpointKind;
use crate::config::{AuditConfig, CheckpointConfig, OnGap};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::metrics::Metrics;
use crate::notice::{Notice, Notify, SinkFailure};
use crate::verify::{Line, MAX_LINE, ZERO_HASH, parse_line, sha256_hex_into};

/// Whether the sink can write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkHealth {
    /// The last write succeeded.
    Ok,
    /// Writes fail; events are held in memory (bounded) and retried.
    Failing {
        /// What fails, naming the file.
        error: SinkFailure,
    },
}

/// Where audit events go.
pub trait AuditSink: Send + Sync + std::fmt::Debug {
    /// Queues one event for writing; never blocks on the disk.
    fn write(&self, event: &Event);
    /// [`AuditSink::write`] for an event the caller is done with: a sink that keeps events
    /// (the file sink queues them) takes it without a copy.
    fn write_owned(&self, event: Event) {
        self.write(&event);
    }
    /// Whether writes currently succeed.
    fn health(&self) -> SinkHealth;
    /// Reopens the file at its configured path (after logrotate moved it), continuing the
    /// chain.
    fn reopen(&self);
    /// Waits until every queued event has been written (or failed).
    fn flush(&self);
    /// The gateway is stopping: writes what is queued and a shutdown checkpoint (when the sink
    /// signs checkpoints), syncs and anchors the head. Events after it are still written.
    fn shutdown(&self) {
        self.flush();
    }
}

/// What the sink reports about itself (to the metrics, in the gateway).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SinkReport {
    /// A write (or fdatasync) failed (`Metrics::audit_write_failed`).
    WriteFailed,
    /// The file was found behind its anchored head at start and the sink went on
    /// (`Metrics::audit_gap`).
    Gap,
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
    /// Where the head of what is durably written is anchored (the gateway's state store);
    /// `None`: no anchor, a cut or deleted file goes unnoticed at start.
    pub anchor: Option<Arc<dyn HeadAnchor>>,
    /// The key signed checkpoints are made with; `None`: no checkpoint lines.
    pub signer: Option<Arc<Ed25519KeyPair>>,
    /// Where the sink's [`Notice`]s go (the caller logs them); `None`: they are dropped, and
    /// only [`AuditSink::health`] and the reports say that writing fails.
    pub notify: Option<Notify>,
    /// The name of the process writing the chain (the gateway's `server.instance_id`),
    /// written in every line as `instance`, after `timestamp`: several instances sharing one
    /// state each write a chain of their own, and a line says whose it is. `None`: no field.
    pub instance: Option<String>,
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
            anchor: None,
            signer: None,
            notify: None,
            instance: None,
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
            .field("anchor", &self.anchor)
            .field("signer", &self.signer.as_ref().map(|_| "[redacted]"))
            .field("notify", &self.notify.as_ref().map(|_| "custom"))
            .field("instance", &self.instance)
            .finish()
    }
}

/// The file sink: hash-chained JSON lines appended by a writer thread of its own (see the
/// module docs for the write, fsync and failure policies).
pub struct FileSink {
    path: PathBuf,
    /// The caller side of the channel; `None` only while the sink is dropped.
    front: Option<Front>,
    shared: Arc<Shared>,
    ticker: Option<(mpsc::Sender<()>, JoinHandle<()>)>,
    /// The writer thread, joined at drop (so that the file and its lock are released then).
    writer: Option<JoinHandle<()>>,
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
    /// dropped events are reported to `metrics`, and told to `options.notify` (for the
    /// caller's operational log).
    pub fn open(config: &AuditConfig, metrics: Arc<Metrics>, options: SinkOptions) -> Result<Self> {
        let report: Reporter = Arc::new(move |report| match report {
            SinkReport::WriteFailed => metrics.audit_write_failed(),
            SinkReport::Gap => metrics.audit_gap(),
            SinkReport::EventsDropped(count) => metrics.audit_events_dropped(count),
            SinkReport::Healthy(healthy) => metrics.set_audit_healthy(healthy),
        });
        Self::open_with(config, report, options)
    }

    /// [`FileSink::open`] with the reports going to `report` and the given options.
    ///
    /// The existing file's last complete line is read (only the file's tail) and the chain
    /// continues from its `seq` and `hash`; a torn last line (no newline: a crash while
    /// writing) is cut off ([`Notice::TornLineCut`]). A last complete line that is not a valid audit line
    /// is [`Error::Chain`]: a new chain is never started on top of a damaged one.
    ///
    /// With an anchor in the options, the file is then compared with the anchored head (see
    /// [`crate::compare_with_anchor`]): a file behind it is [`Error::Gap`] under
    /// [`OnGap::Refuse`], and under [`OnGap::Continue`] a `security_violation` line
    /// (`audit_log_gap`) is the first line written. With a signer, a start checkpoint follows.
    pub fn open_with(config: &AuditConfig, report: Reporter, options: SinkOptions) -> Result<Self> {
        let path = config.file.clone();
        let tell = Teller(options.notify.clone());
        let open_error = |source: io::Error| {
            if source.kind() == io::ErrorKind::WouldBlock {
                Error::Locked { path: path.clone() }
            } else {
                Error::Open { path: path.clone(), source }
            }
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
            private_fs::create_dir(dir).map_err(open_error)?;
        }
        let anchored = match &options.anchor {
            Some(anchor) => anchor.load().map_err(Error::Anchor)?,
            None => None,
        };
        // Whether the file exists is known only before it is opened (the open creates it).
        let existed = std::fs::symlink_metadata(&path).is_ok();
        // Locked before the tail is read (and perhaps cut): nobody else appends meanwhile.
        let mut locked = open_locked(&path, &tell, None).map_err(open_error)?;
        let head = continue_chain(&mut locked, &path, &tell)?;
        let gap = match &anchored {
            Some(anchored) if !existed => Some((anchored, "the file does not exist".to_owned())),
            Some(anchored) if locked.metadata().is_ok_and(|m| m.is_file()) => {
                crate::anchor::compare_file(&mut locked, anchored)
                    .map_err(open_error)?
                    .map(|found| (anchored, found))
            }
            _ => None,
        };
        if let Some((anchored, found)) = &gap {
            if config.on_gap == OnGap::Refuse {
                return Err(Error::Gap {
                    path,
                    anchored_seq: anchored.seq,
                    anchored_hash: anchored.hash.clone(),
                    found: found.clone(),
                });
            }
            tell.tell(Notice::GapContinued {
                path: path.clone(),
                anchored: (*anchored).clone(),
                found: found.clone(),
            });
        }
        let open = options.open.clone();
        let mut writer = writer_for(&locked, &path, open.as_ref()).map_err(open_error)?;
        let good_len = writer.file_len().map_err(open_error)?;
        tell.tell(Notice::Opened {
            path: path.clone(),
            head: ChainHead { seq: head.seq, hash: head.hash.clone() },
        });

        let shared = Arc::new(Shared::new());
        // The ticker must beat while idle too when periodic checkpoints are due.
        shared.dirty.store(options.signer.is_some(), Ordering::SeqCst);
        let now = Instant::now();
        let mut worker = Worker {
            path: path.clone(),
            open,
            locked,
            writer,
            tell,
            report,
            shared: shared.clone(),
            options: options.clone(),
            written: ChainHead { seq: head.seq, hash: head.hash.clone() },
            anchored_seq: anchored.as_ref().map(|a| a.seq),
            seq: head.seq,
            hash: head.hash,
            anchor: options.anchor.clone(),
            signer: options.signer.clone(),
            checkpoint: config.checkpoint,
            since_checkpoint: 0,
            last_checkpoint: now,
            ends_with_shutdown: false,
            clock: Stamp::default(),
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
        if let Some((anchored, found)) = &gap {
            (worker.report)(SinkReport::Gap);
            worker.record_gap(anchored, found);
        }
        worker.checkpoint(CheckpointKind::Start);
        let first_lines = worker.pending_lines > 0;
        let (tx, rx) = mpsc::sync_channel(options.channel_size.max(1));
        let writer = std::thread::Builder::new()
            .name("cliproxy-audit".to_owned())
            .spawn(move || run_writer(worker, &rx))
            .map_err(open_error)?;
        let front = Front { tx, shared: shared.clone() };
        let ticker = spawn_ticker(front.clone(), options.sync_interval);
        let sink = Self { path, front: Some(front), shared, ticker, writer: Some(writer) };
        if first_lines {
            // The gap line and the start checkpoint reach the disk (and the anchor) now, not
            // with the first event.
            sink.flush();
        }
        Ok(sink)
    }

    /// Opens (or creates) the audit file at `path` with the defaults of [`AuditConfig::new`]
    /// and the given options, for a service with no configuration section of this crate; the
    /// sink's reports go nowhere (its health and notices still say when writing fails).
    pub fn open_path(path: impl Into<PathBuf>, options: SinkOptions) -> Result<Self> {
        Self::open_with(&AuditConfig::new(path), Arc::new(|_| {}), options)
    }

    /// The file written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sends a command and waits until the writer has carried it out.
    ///
    /// The ticket is taken and the command sent under one lock, so commands reach the writer in
    /// ticket order and "done up to ticket N" means exactly that this command was carried out.
    fn command(&self, command: Command) {
        let Some(front) = &self.front else { return };
        let ticket = {
            let mut last = lock(&self.shared.last_ticket);
            let ticket = *last + 1;
            if !front.command(command, ticket) {
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

impl AuditConfig {
    /// Builds the default [`AuditSink`], the hash-chained [`FileSink`], from this section
    /// (reporting to `metrics`); `None` when `enabled` is false.
    pub fn build(
        &self,
        metrics: Arc<Metrics>,
        options: SinkOptions,
    ) -> Result<Option<Arc<dyn AuditSink>>> {
        if !self.enabled {
            return Ok(None);
        }
        Ok(Some(Arc::new(FileSink::open(self, metrics, options)?)))
    }
}

impl AuditSink for FileSink {
    fn write(&self, event: &Event) {
        self.write_owned(event.clone());
    }

    fn write_owned(&self, event: Event) {
        if let Some(front) = &self.front {
            front.event(event);
        }
    }

    fn health(&self) -> SinkHealth {
        let health = lock(&self.shared.health).clone();
        if health == SinkHealth::Ok && self.shared.writer_gone.load(Ordering::SeqCst) {
            // The writer thread reports its own death; this only covers a report that failed.
            return SinkHealth::Failing {
                error: SinkFailure::WriterDied { path: self.path.clone() },
            };
        }
        health
    }

    fn reopen(&self) {
        self.command(Command::Reopen);
    }

    fn flush(&self) {
        self.command(Command::Flush);
    }

    fn shutdown(&self) {
        self.command(Command::Shutdown);
    }
}

impl Drop for FileSink {
    fn drop(&mut self) {
        if let Some((stop, ticker)) = self.ticker.take() {
            drop(stop);
            let _ = ticker.join();
        }
        // Writes what is queued, syncs and tells the chain head (`Notice::Closed`).
        self.command(Command::Close);
        // The last sender goes (the ticker's went with its thread): the writer thread ends,
        // and with it the file and its lock.
        drop(self.front.take());
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// What travels to the writer thread, in order.
enum Message {
    /// An event to chain. Boxed: the channel's slots stay small (it is allocated whole).
    Event(Box<Event>),
    /// Events dropped on the callers' side (channel full).
    Lost(u64),
    /// A command, and its ticket (0: nobody waits for it).
    Command(Command, u64),
}

/// What the writer is asked to do besides chaining events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Command {
    /// Write and sync everything queued before it.
    Flush,
    /// Reopen the file at its path (after logrotate), continuing the chain.
    Reopen,
    /// Write, sync and log the chain head: the sink is going.
    Close,
    /// Write a shutdown checkpoint, write and sync: the gateway is stopping.
    Shutdown,
    /// The ticker's beat: sync unsynced data, retry a failing write or reopen.
    Tick,
}

/// A batch is written once it reaches this size even when more records are queued.
const BATCH_BYTES: usize = 64 * 1024;
/// How long the writer lets events gather after writing a batch. The channel (16384 events)
/// holds far more than arrive meanwhile; an event or command waits at most this much longer.
/// 10 ms rather than 2: at 10,000 requests/s the writer's system time (its `write` calls and
/// wake-ups) fell from about 3 µs to about 1.7 µs per request, and the lines are synced only
/// once a second anyway.
const GATHER: Duration = Duration::from_millis(10);
/// Longest `details` JSON written as is; longer ones are replaced by a note of their size.
const MAX_DETAILS: usize = 256 * 1024;
/// Longest other string field written (cut at a character boundary).
const MAX_FIELD: usize = 4096;
/// Failures are told at most this often.
const ERROR_NOTICE_INTERVAL: Duration = Duration::from_secs(10);

/// State shared by the callers, the ticker and the writer thread.
struct Shared {
    health: Mutex<SinkHealth>,
    /// Events dropped on the callers' side and not yet sent to the writer.
    dropped: AtomicU64,
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
            dropped: AtomicU64::new(0),
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

/// The caller side: sends messages to the writer thread, counting what a full channel drops.
#[derive(Clone)]
struct Front {
    tx: SyncSender<Message>,
    shared: Arc<Shared>,
}

impl Front {
    /// Queues an event; never blocks. A full channel (or a dead writer) drops it, counted.
    fn event(&self, event: Event) {
        self.push_lost();
        if self.tx.try_send(Message::Event(Box::new(event))).is_err() {
            self.shared.dropped.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Sends the count of dropped events when there is one and there is room.
    fn push_lost(&self) {
        // A plain load first: the common case (nothing dropped) does not write the shared line.
        if self.shared.dropped.load(Ordering::Relaxed) == 0 {
            return;
        }
        let count = self.shared.dropped.swap(0, Ordering::SeqCst);
        if count > 0 && self.tx.try_send(Message::Lost(count)).is_err() {
            self.shared.dropped.fetch_add(count, Ordering::SeqCst);
        }
    }

    /// Sends a command (after the count of dropped events), waiting for room: a command is
    /// never dropped. False when the writer thread is gone.
    fn command(&self, command: Command, ticket: u64) -> bool {
        let count = self.shared.dropped.swap(0, Ordering::SeqCst);
        // The writer drains the channel at disk speed; waiting for room is what a command
        // (never on the request path) can afford. A send fails only once the writer is gone.
        if count > 0 && self.tx.send(Message::Lost(count)).is_err() {
            return false;
        }
        self.tx.send(Message::Command(command, ticket)).is_ok()
    }
}

/// Every `interval`, reports dropped events and asks the writer to sync (or retry) when it
/// has work; ends when the sink drops the sender.
fn spawn_ticker(front: Front, interval: Duration) -> Option<(mpsc::Sender<()>, JoinHandle<()>)> {
    let (stop, stopped) = mpsc::channel::<()>();
    let handle = std::thread::Builder::new()
        .name("cliproxy-audit-tick".to_owned())
        .spawn(move || {
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
                front.push_lost();
                if front.shared.dirty.load(Ordering::SeqCst) {
                    // A full channel means the writer is busy and will get there anyway.
                    let _ = front.tx.try_send(Message::Command(Command::Tick, 0));
                }
            }
        })
        .ok()?;
    Some((stop, handle))
}

/// The writer thread: takes messages until every sender is gone. Lines are batched while
/// messages keep coming; the batch is written when the channel is momentarily empty (or the
/// batch is big), so a burst costs one `write` rather than one per line.
///
/// A panic (a bug, or a custom writer's) ends the thread; the sink then reports itself failing
/// for good, and callers stop waiting for it.
fn run_writer(mut worker: Worker, rx: &Receiver<Message>) {
    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        while let Ok(message) = rx.recv() {
            worker.take(message);
            loop {
                if worker.pending.len() >= BATCH_BYTES {
                    worker.write_out(false);
                    worker.sync(false);
                }
                match rx.try_recv() {
                    Ok(message) => worker.take(message),
                    Err(_) => break,
                }
            }
            worker.write_out(false);
            worker.sync(false);
            // A signing sink keeps the ticker beating: periodic checkpoints fall due while idle.
            let dirty = worker.unsynced
                || worker.write_error.is_some()
                || worker.reopen_error.is_some()
                || worker.signer.is_some();
            worker.shared.dirty.store(dirty, Ordering::SeqCst);
            // Under load, let the next events gather instead of waking this thread (a futex
            // call on the request path) for each one: the next batch is at most this late.
            // An idle writer blocks in `recv` again at once after it.
            std::thread::sleep(GATHER);
        }
    }));
    if ran.is_err() {
        worker.died();
    }
    // Dropping the worker tells waiting callers that the writer is gone.
}

/// Hands notices to the caller's [`Notify`], when it gave one.
#[derive(Clone, Default)]
struct Teller(Option<Notify>);

impl Teller {
    fn tell(&self, notice: Notice) {
        if let Some(notify) = &self.0 {
            notify(notice);
        }
    }
}

/// The chain writer's state.
struct Worker {
    path: PathBuf,
    /// A custom opener for the writer (`None`: the locked file itself).
    open: Option<OpenWriter>,
    /// The file opened without following a symlink, exclusively locked (when a regular file).
    locked: File,
    writer: Box<dyn AuditWriter>,
    tell: Teller,
    report: Reporter,
    shared: Arc<Shared>,
    options: SinkOptions,
    /// The last chained line's seq and hash (0 and zeros for a fresh chain).
    seq: u64,
    hash: String,
    /// The last line written to the file (not necessarily synced yet).
    written: ChainHead,
    /// The seq last given to the anchor (or loaded from it).
    anchored_seq: Option<u64>,
    anchor: Option<Arc<dyn HeadAnchor>>,
    signer: Option<Arc<Ed25519KeyPair>>,
    checkpoint: CheckpointConfig,
    /// Lines chained since the last checkpoint.
    since_checkpoint: u64,
    last_checkpoint: Instant,
    /// The last chained line is a shutdown checkpoint (a second one would say nothing new).
    ends_with_shutdown: bool,
    /// Formats the lines' timestamps.
    clock: Stamp,
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
    write_error: Option<SinkFailure>,
    reopen_error: Option<SinkFailure>,
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
    fn take(&mut self, message: Message) {
        match message {
            Message::Event(event) => self.event(&event),
            Message::Lost(count) => self.lost(count),
            Message::Command(command, ticket) => self.command(command, ticket),
        }
        // Whatever chained the lines (events, an `audit_events_lost` line): never more than
        // `every_lines` lines after a checkpoint, the bound `audit verify --pubkey` checks.
        if self.since_checkpoint >= self.checkpoint.every_lines.get() {
            self.checkpoint(CheckpointKind::Periodic);
        }
    }

    fn event(&mut self, event: &Event) {
        self.record_lost();
        if self.backlog_full() {
            self.lost += 1;
            (self.report)(SinkReport::EventsDropped(1));
        } else {
            let at = event.at;
            self.chain(at, |buf| event_fields(buf, event));
        }
    }

    /// Chains the `security_violation` line that records a gap found at start.
    fn record_gap(&mut self, anchored: &ChainHead, found: &str) {
        self.chain(SystemTime::now(), |buf| {
            buf.extend_from_slice(
                b",\"event_type\":\"security_violation\",\"provider\":null,\"user_id\":null,\
                  \"ip\":null,\"result\":\"audit_log_gap\",\"request_id\":null,\"details\":",
            );
            let details = serde_json::json!({
                "anchored_seq": anchored.seq,
                "anchored_hash": anchored.hash,
                "found": found,
            });
            let _ = serde_json::to_writer(&mut *buf, &details);
        });
    }

    /// Chains a signed checkpoint line over the current head, when the sink has a key.
    fn checkpoint(&mut self, kind: CheckpointKind) {
        let Some(signer) = self.signer.clone() else { return };
        if kind == CheckpointKind::Shutdown && self.ends_with_shutdown {
            return;
        }
        let head = ChainHead { seq: self.seq, hash: self.hash.clone() };
        let every = self.checkpoint;
        let mut stamp = Vec::new();
        let at = SystemTime::now();
        self.clock.push(&mut stamp, at);
        let stamp = String::from_utf8(stamp).unwrap_or_default();
        self.chain(at, |buf| {
            crate::checkpoint::write_fields(buf, &signer, kind, &head, &stamp, &every);
        });
        self.since_checkpoint = 0;
        self.last_checkpoint = Instant::now();
        self.ends_with_shutdown = kind == CheckpointKind::Shutdown;
    }

    fn lost(&mut self, count: u64) {
        self.lost += count;
        (self.report)(SinkReport::EventsDropped(count));
        self.record_lost();
    }

    fn command(&mut self, command: Command, ticket: u64) {
        match command {
            Command::Flush => {
                self.write_out(true);
                self.sync(true);
            }
            Command::Reopen => self.reopen(),
            Command::Shutdown => {
                self.checkpoint(CheckpointKind::Shutdown);
                self.write_out(true);
                self.sync(true);
            }
            Command::Close => {
                self.checkpoint(CheckpointKind::Shutdown);
                self.write_out(true);
                self.sync(true);
                if self.pending_lines > 0 || self.lost > 0 {
                    self.tell.tell(Notice::ClosedUnwritten {
                        path: self.path.clone(),
                        unwritten: self.pending_lines,
                        lost: self.lost,
                    });
                }
                self.tell.tell(Notice::Closed { path: self.path.clone(), head: self.head() });
            }
            Command::Tick => {
                if self.reopen_error.is_some() {
                    self.reopen();
                }
                if self.last_checkpoint.elapsed() >= self.checkpoint.every {
                    self.checkpoint(CheckpointKind::Periodic);
                }
                self.write_out(true);
                self.sync(true);
            }
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
        let lost = std::mem::take(&mut self.lost);
        self.chain(SystemTime::now(), |buf| {
            buf.extend_from_slice(
                b",\"event_type\":\"security_violation\",\"provider\":null,\"user_id\":null,\
                  \"ip\":null,\"result\":\"audit_events_lost\",\"request_id\":null,\"details\":",
            );
            let _ = write!(buf, "{{\"lost\":{lost}}}");
        });
    }

    /// Numbers, formats and hashes one line and appends it to the batch: `seq` and
    /// `timestamp` here, the fields from `event_type` to `details` by `fields`, then
    /// `prev_hash` and `hash`. Formatted straight into the batch, with no allocation.
    fn chain(&mut self, at: SystemTime, fields: impl FnOnce(&mut Vec<u8>)) {
        let seq = self.seq + 1;
        let start = self.pending.len();
        let buf = &mut self.pending;
        buf.extend_from_slice(b"{\"seq\":");
        buf.extend_from_slice(itoa::Buffer::new().format(seq).as_bytes());
        buf.extend_from_slice(b",\"timestamp\":\"");
        self.clock.push(buf, at);
        buf.push(b'"');
        if let Some(instance) = &self.options.instance {
            buf.extend_from_slice(b",\"instance\":");
            // A string is always serializable; the name is escaped like every other field.
            let _ = serde_json::to_writer(&mut *buf, instance);
        }
        fields(buf);
        buf.extend_from_slice(b",\"prev_hash\":\"");
        buf.extend_from_slice(self.hash.as_bytes());
        buf.extend_from_slice(b"\"");
        // The previous hash is in the line now: its buffer takes this line's.
        sha256_hex_into(&buf[start..], &mut self.hash);
        buf.extend_from_slice(b",\"hash\":\"");
        buf.extend_from_slice(self.hash.as_bytes());
        buf.extend_from_slice(b"\"}\n");
        debug_assert!(buf.len() - start <= MAX_LINE);
        self.seq = seq;
        self.pending_lines += 1;
        self.since_checkpoint += 1;
        self.ends_with_shutdown = false;
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
            // Everything chained is in the file now.
            self.written.seq = self.seq;
            self.written.hash.clone_from(&self.hash);
            let lines = self.pending_lines;
            self.pending.clear();
            self.pending_lines = 0;
            self.unsynced = true;
            if self.write_error.take().is_some() {
                self.tell.tell(Notice::WritableAgain {
                    path: self.path.clone(),
                    backlog_written: lines,
                    lost: self.lost,
                });
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
            Ok(()) => {
                self.unsynced = false;
                self.store_anchor();
            }
            Err(e) => self.failed(&e),
        }
    }

    /// Anchors the head of what is now durable: only after the `fdatasync` that made it so,
    /// so the anchor is never ahead of the file (a crash leaves it behind, which start-up
    /// accepts).
    fn store_anchor(&mut self) {
        let Some(anchor) = &self.anchor else { return };
        if self.anchored_seq == Some(self.written.seq) || self.written.seq == 0 {
            return;
        }
        anchor.store(&self.written);
        self.anchored_seq = Some(self.written.seq);
    }

    fn reopen(&mut self) {
        self.write_out(true);
        self.sync(true);
        let opened = open_locked(&self.path, &self.tell, Some(&self.locked)).and_then(|locked| {
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
                self.tell.tell(Notice::Reopened { path: self.path.clone(), head: self.head() });
                // A new file after a rotation is never left empty: a file that is empty while
                // the anchor names a line would read as deleted at the next start.
                self.checkpoint(CheckpointKind::Reopen);
                self.write_out(true);
                self.sync(true);
                self.publish_health();
            }
            Err(e) => {
                let failure = SinkFailure::Reopen { path: self.path.clone(), error: e.to_string() };
                // Retried every tick: told like write errors, at most every 10 s.
                if let Some(suppressed) = self.error_log.allow() {
                    self.tell.tell(Notice::Failed {
                        failure: failure.clone(),
                        pending_lines: self.pending_lines,
                        lost: self.lost,
                        suppressed,
                    });
                }
                self.reopen_error = Some(failure);
                self.publish_health();
            }
        }
    }

    /// The writer thread panicked: nothing more is written.
    fn died(&mut self) {
        let failure = SinkFailure::WriterDied { path: self.path.clone() };
        self.tell.tell(Notice::Failed {
            failure: failure.clone(),
            pending_lines: self.pending_lines,
            lost: self.lost,
            suppressed: 0,
        });
        self.write_error = Some(failure);
        self.publish_health();
    }

    fn failed(&mut self, e: &io::Error) {
        (self.report)(SinkReport::WriteFailed);
        let failure = SinkFailure::Write { path: self.path.clone(), error: e.to_string() };
        if let Some(suppressed) = self.error_log.allow() {
            self.tell.tell(Notice::Failed {
                failure: failure.clone(),
                pending_lines: self.pending_lines,
                lost: self.lost,
                suppressed,
            });
        }
        self.write_error = Some(failure);
        self.publish_health();
    }

    /// The last line chained.
    fn head(&self) -> ChainHead {
        ChainHead { seq: self.seq, hash: self.hash.clone() }
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

/// Writes an event's fields from `event_type` to `details`, in the fixed order.
fn event_fields(buf: &mut Vec<u8>, event: &Event) {
    buf.extend_from_slice(b",\"event_type\":");
    json_str(buf, Some(event.event_type().as_str()));
    buf.extend_from_slice(b",\"provider\":");
    json_str(buf, event.provider.as_deref());
    buf.extend_from_slice(b",\"user_id\":");
    json_str(buf, event.user_id.as_deref());
    buf.extend_from_slice(b",\"ip\":");
    match event.ip {
        // An address is digits, dots and colons: nothing to escape.
        Some(IpAddr::V4(ip)) => {
            buf.push(b'"');
            for (index, octet) in ip.octets().into_iter().enumerate() {
                if index > 0 {
                    buf.push(b'.');
                }
                buf.extend_from_slice(itoa::Buffer::new().format(octet).as_bytes());
            }
            buf.push(b'"');
        }
        Some(ip) => {
            let _ = write!(buf, "\"{ip}\"");
        }
        None => buf.extend_from_slice(b"null"),
    }
    buf.extend_from_slice(b",\"result\":");
    event.write_result(buf);
    buf.extend_from_slice(b",\"request_id\":");
    json_str(buf, event.request_id.as_deref());
    buf.extend_from_slice(b",\"details\":");
    let details = buf.len();
    event.write_details(buf);
    let bytes = buf.len() - details;
    if bytes > MAX_DETAILS {
        buf.truncate(details);
        let _ = write!(buf, "{{\"truncated\":true,\"bytes\":{bytes}}}");
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

/// The last instant the RFC 3339 formatter can write (9999-12-31T23:59:59.999Z).
const LAST_STAMP: Duration = Duration::new(253_402_300_799, 999_999_999);

/// Formats a line's timestamp as RFC 3339 UTC with milliseconds, as
/// `humantime::format_rfc3339_millis` does, keeping the text of the current second: lines
/// come many to a second, and only the milliseconds change between them.
#[derive(Default)]
struct Stamp {
    /// The second formatted last (Unix time), and its text up to the seconds
    /// (`2026-11-29T09:18:22`).
    second: Option<(u64, String)>,
}

impl Stamp {
    fn push(&mut self, buf: &mut Vec<u8>, at: SystemTime) {
        // A broken clock before 1970 or after 9999 is written as the nearest end of that
        // range, the formatter's.
        let since = at.duration_since(UNIX_EPOCH).unwrap_or_default().min(LAST_STAMP);
        let secs = since.as_secs();
        let text = match &mut self.second {
            Some((second, text)) if *second == secs => text,
            slot => {
                let mut text =
                    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs))
                        .to_string();
                // "…:22Z": the zone goes after the milliseconds.
                text.pop();
                &mut slot.insert((secs, text)).1
            }
        };
        buf.extend_from_slice(text.as_bytes());
        let millis = since.subsec_millis();
        // Three digits; `millis` < 1000, so each is a single digit.
        let digits = [millis / 100, millis / 10 % 10, millis % 10].map(|d| b'0' + d as u8);
        buf.push(b'.');
        buf.extend_from_slice(&digits);
        buf.push(b'Z');
    }
}

/// Allows an action at most every [`ERROR_NOTICE_INTERVAL`], counting what it suppressed.
#[derive(Default)]
struct RateLimit {
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimit {
    /// `Some(suppressed since the last time)` when allowed now.
    fn allow(&mut self) -> Option<u64> {
        match self.last {
            Some(last) if last.elapsed() < ERROR_NOTICE_INTERVAL => {
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
                      writer appending to the same audit log?)";

/// Opens the audit file (creating it 0600) without following a symlink, takes an exclusive
/// lock on it when it is a regular file, and tightens a looser mode (told as a notice). Read and
/// append: the tail is read from it at start, and it is the writer unless the options give an
/// opener. A lock held elsewhere is an error of kind `WouldBlock`.
///
/// `held`: the file the sink holds now (at reopen). When the path is still that file (a reopen
/// without a rotation), its lock is kept rather than fought over.
fn open_locked(path: &Path, tell: &Teller, held: Option<&File>) -> io::Result<File> {
    // Blocking: the audit log may be a pipe to a log shipper, which must not drop lines.
    let file = private_fs::open(path, OpenOptions::new().read(true).append(true).create(true))
        .map_err(|e| match e {
            PrivateError::Symlink => io::Error::new(
                io::Error::from_raw_os_error(libc::ELOOP).kind(),
                "is a symbolic link (refused: the audit log must be the file itself)",
            ),
            PrivateError::Io { source, .. } => source,
            other => io::Error::other(other.to_string()),
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
    // Only a mode open to group or others is changed (as the notice says); the owner is not
    // compared: a file the process cannot write is refused by the open itself.
    let loose = private_fs::check(&meta, Kind::File, None).map_err(private_io)?;
    if let Some(mode) = loose.filter(|mode| mode & 0o077 != 0) {
        tell.tell(Notice::ModeTightened { path: path.to_owned(), mode: mode & 0o777 });
        private_fs::set_mode(&file, FILE_MODE).map_err(private_io)?;
    }
    Ok(file)
}

/// A refusal of the private file policy as the I/O error that the open reports.
fn private_io(error: PrivateError) -> io::Error {
    match error {
        PrivateError::Io { source, .. } => source,
        other => io::Error::other(other.to_string()),
    }
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
/// crash while writing) is cut off, and told as a notice.
fn continue_chain(file: &mut File, path: &Path, tell: &Teller) -> Result<Head> {
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
            cut(file, path, start + tail_start as u64, len, tell)?;
            return Ok(previous.map_or(fresh, |line| Head { seq: line.seq, hash: line.hash }));
        };
        if !line.hash_ok {
            return Err(chain_error(
                "its last line (without its newline) was changed (its hash does not match it); \
                 refusing to continue the chain"
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
                 prev_hash); refusing to continue the chain"
                    .to_owned(),
            ));
        }
        // Appended (the file is opened for appending).
        file.write_all(b"\n").map_err(open_error)?;
        tell.tell(Notice::NewlineCompleted { path: path.to_owned(), seq: line.seq });
        return Ok(Head { seq: line.seq, hash: line.hash });
    }
}

/// Parses the last complete line of an existing file; it must be a sound audit line.
fn last_line(bytes: &[u8], chain_error: &impl Fn(String) -> Error) -> Result<Line> {
    let line = parse_line(bytes).map_err(|why| {
        chain_error(format!(
            "its last complete line is not an audit line ({why}); refusing to start a new chain \
             on top of it"
        ))
    })?;
    if !line.hash_ok {
        return Err(chain_error(
            "its last complete line was changed (its hash does not match it); refusing to \
             continue the chain"
                .to_owned(),
        ));
    }
    Ok(line)
}

/// Cuts a torn last line off.
fn cut(file: &File, path: &Path, good: u64, len: u64, tell: &Teller) -> Result<()> {
    file.set_len(good).map_err(|source| Error::Open { path: path.to_owned(), source })?;
    tell.tell(Notice::TornLineCut { path: path.to_owned(), bytes: len - good });
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use crate::event::What;

    use super::*;

    /// The cached second gives what the formatter gives for every instant, whichever order
    /// the instants come in (a clock stepped back included), and clamps a broken clock.
    #[test]
    fn timestamps_match_the_rfc3339_formatter() {
        let mut stamp = Stamp::default();
        let base = 1_795_000_000u64; // 2026-11-18
        let mut instants: Vec<SystemTime> = Vec::new();
        for (secs, nanos) in [
            (0, 0),
            (0, 999_999_999),
            (base, 0),
            (base, 1_000_000),
            (base, 999_000_000),
            (base, 999_999_999),
            (base + 1, 0),
            (base, 500_000_000),
            (base + 86_400 * 365, 42_000_000),
            (951_782_400, 7_000_000), // 2000-02-29
            (LAST_STAMP.as_secs(), 999_999_999),
        ] {
            instants.push(UNIX_EPOCH + Duration::new(secs, nanos));
        }
        for step in 0..2_000u64 {
            instants.push(UNIX_EPOCH + Duration::from_nanos(base * 1_000_000_000 + step * 777_777));
        }
        for at in instants {
            let mut buf = Vec::new();
            stamp.push(&mut buf, at);
            let expected = humantime::format_rfc3339_millis(at).to_string();
            assert_eq!(String::from_utf8(buf).unwrap(), expected);
        }
        let mut buf = Vec::new();
        stamp.push(&mut buf, UNIX_EPOCH - Duration::from_secs(5));
        assert_eq!(buf, b"1970-01-01T00:00:00.000Z");
        buf.clear();
        stamp.push(&mut buf, UNIX_EPOCH + Duration::from_secs(300_000_000_000));
        assert_eq!(buf, b"9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn addresses_are_written_as_they_display() {
        for ip in [
            IpAddr::V4(Ipv4Addr::new(0, 0, 0, 0)),
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)),
            IpAddr::V4(Ipv4Addr::new(255, 10, 200, 9)),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
            IpAddr::V6("2001:db8::8a2e:370:7334".parse().unwrap()),
            IpAddr::V6("::ffff:192.0.2.1".parse().unwrap()),
        ] {
            let event = Event::new(What::AuthSuccess).ip(ip);
            let mut buf = Vec::new();
            event_fields(&mut buf, &event);
            let text = String::from_utf8(buf).unwrap();
            assert!(text.contains(&format!(",\"ip\":\"{ip}\",")), "{text}");
        }
    }
}
