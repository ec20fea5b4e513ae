//! The operational log: slog to standard error, JSON or text.
//!
//! A record is formatted into a line on the thread that logs it and handed to a writer thread
//! over a bounded channel; the writer writes whatever lines have gathered with one `write` and
//! then pauses briefly, so that under load a request neither waits for standard error nor wakes
//! another thread for each line (a futex call on the request path). When the channel is full,
//! lines are dropped and counted rather than blocking a request, and the writer reports the
//! count in its next batch.

mod json;
mod text;

use std::io::Write;
use std::panic::{RefUnwindSafe, UnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use cliproxy_gateway::{LogFormat, LogLevel, LoggingConfig};
use slog::{Drain, Level, Logger, o};

/// Lines the channel holds before new ones are dropped.
const CHANNEL_LINES: usize = 8192;
/// How long the writer lets lines gather after writing a batch (the most a line is delayed
/// under load; an idle writer waits for the next line instead). 10 ms rather than 2: five
/// times fewer `write` calls and wake-ups under load, as for the audit writer.
const GATHER: Duration = Duration::from_millis(10);
/// Room a new line starts with: an access log line is about 400 bytes, so most lines never
/// grow their buffer.
const LINE_BYTES: usize = 512;
/// A batch is written out once it is this large, even while more lines are waiting.
const BATCH_BYTES: usize = 64 * 1024;

/// The root logger, and the guard that writes out the remaining lines and stops the writer
/// thread when dropped.
pub(crate) fn init(config: &LoggingConfig) -> (Logger, Flush) {
    init_to(config, Box::new(std::io::stderr()))
}

/// [`init`] writing to `out` instead of standard error.
fn init_to(config: &LoggingConfig, out: Box<dyn Write + Send>) -> (Logger, Flush) {
    let level = match config.level {
        LogLevel::Error => Level::Error,
        LogLevel::Warn => Level::Warning,
        LogLevel::Info => Level::Info,
        LogLevel::Debug => Level::Debug,
        LogLevel::Trace => Level::Trace,
    };
    let (tx, rx) = std::sync::mpsc::sync_channel(CHANNEL_LINES);
    let dropped = Arc::new(AtomicU64::new(0));
    let lines = LineSender { line: Vec::new(), tx: tx.clone(), dropped: Arc::clone(&dropped) };
    let format = config.format;
    let writer = std::thread::Builder::new()
        .name("cliproxy-log".to_owned())
        .spawn(move || run_writer(&rx, out, &dropped, format))
        .ok();
    // Both formatters flush their writer at the end of each record, which sends the line.
    let drain: Box<
        dyn Drain<Ok = (), Err = slog::Never> + Send + Sync + UnwindSafe + RefUnwindSafe,
    > = match format {
        LogFormat::Json => Box::new(LineDrain::new(lines, json::write_record)),
        LogFormat::Text => Box::new(LineDrain::new(lines, text::write_record)),
    };
    // Filtered before the formatter's lock: a debug line at info level costs a comparison.
    let drain = drain.filter_level(level).ignore_res();
    let flush = Flush { tx: writer.is_some().then_some(tx), writer };
    (Logger::root(drain, o!()), flush)
}

/// Stops the writer thread after the lines sent so far are written.
pub(crate) struct Flush {
    tx: Option<SyncSender<Vec<u8>>>,
    writer: Option<JoinHandle<()>>,
}

impl Drop for Flush {
    fn drop(&mut self) {
        // An empty line asks the writer to stop; it waits for room, behind the lines queued.
        if let Some(tx) = self.tx.take()
            && tx.send(Vec::new()).is_ok()
            && let Some(writer) = self.writer.take()
        {
            let _ = writer.join();
        }
    }
}

/// Formats a record into a line and appends it to the buffer, with the time it is logged at.
type WriteRecord = fn(&mut Vec<u8>, &slog::Record<'_>, &slog::OwnedKVList, SystemTime);

/// The drain of both formats: `write` formats each record into the one line buffer (the lock
/// serialises records into it), and the line is sent.
struct LineDrain {
    out: Mutex<LineSender>,
    write: WriteRecord,
}

impl LineDrain {
    fn new(out: LineSender, write: WriteRecord) -> Self {
        Self { out: Mutex::new(out), write }
    }
}

impl Drain for LineDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(
        &self,
        record: &slog::Record<'_>,
        values: &slog::OwnedKVList,
    ) -> Result<(), slog::Never> {
        // A value's `Display` that panicked mid-record left the lock poisoned and a part line
        // in the buffer; the buffer is cleared, so the log goes on rather than falling silent.
        let mut out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        out.line.clear();
        (self.write)(&mut out.line, record, values, SystemTime::now());
        // Sends the line; `LineSender` counts it if the channel is full.
        let _ = out.flush();
        Ok(())
    }
}

/// The formatters' output: collects a record's pieces, and sends the line when flushed.
struct LineSender {
    line: Vec<u8>,
    tx: SyncSender<Vec<u8>>,
    dropped: Arc<AtomicU64>,
}

impl Write for LineSender {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.line.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.line.is_empty() {
            return Ok(());
        }
        let line = std::mem::replace(&mut self.line, Vec::with_capacity(LINE_BYTES));
        match self.tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            // The writer has stopped (shutdown, or it could not start): write the line here
            // rather than lose it.
            Err(TrySendError::Disconnected(line)) => {
                let _ = std::io::stderr().write_all(&line);
            }
        }
        Ok(())
    }
}

/// The writer thread: batches of lines, one `write` each, until asked to stop.
fn run_writer(
    rx: &Receiver<Vec<u8>>,
    mut out: Box<dyn Write + Send>,
    dropped: &AtomicU64,
    format: LogFormat,
) {
    let mut batch = Vec::with_capacity(BATCH_BYTES);
    while let Ok(first) = rx.recv() {
        let mut stop = first.is_empty();
        batch.extend_from_slice(&first);
        while !stop {
            match rx.try_recv() {
                Ok(line) if line.is_empty() => stop = true,
                Ok(line) => {
                    batch.extend_from_slice(&line);
                    if batch.len() >= BATCH_BYTES {
                        let _ = out.write_all(&batch);
                        batch.clear();
                    }
                }
                Err(_) => break,
            }
        }
        let lost = dropped.swap(0, Ordering::Relaxed);
        if lost > 0 {
            batch.extend_from_slice(dropped_line(lost, format).as_bytes());
        }
        // Standard error may be closed or full; there is nowhere else to report that.
        let _ = out.write_all(&batch);
        let _ = out.flush();
        batch.clear();
        if stop {
            return;
        }
        std::thread::sleep(GATHER);
    }
}

/// The line that reports `lost` dropped lines, in the log's format.
fn dropped_line(lost: u64, format: LogFormat) -> String {
    let ts = humantime::format_rfc3339_micros(std::time::SystemTime::now());
    match format {
        LogFormat::Json => format!(
            "{{\"msg\":\"log lines dropped: the logging channel was full\",\"level\":\"WARN\",\"ts\":\"{ts}\",\"dropped\":{lost}}}\n"
        ),
        LogFormat::Text => {
            format!("{ts} WARN log lines dropped: the logging channel was full, dropped: {lost}\n")
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use slog::{info, warn};

    use super::*;

    /// A `Write` the test can read back.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().map_err(|_| std::io::Error::other("poisoned"))?.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn config(format: LogFormat, level: LogLevel) -> LoggingConfig {
        let mut config = LoggingConfig::default();
        config.format = format;
        config.level = level;
        config
    }

    #[test]
    fn every_line_is_written_whole_and_in_order_by_the_time_the_guard_drops() {
        let out = Shared::default();
        let (log, flush) = init_to(&config(LogFormat::Json, LogLevel::Info), Box::new(out.clone()));
        for n in 0..1000 {
            info!(log, "request"; "n" => n, "path" => "/v1/chat/completions");
        }
        slog::debug!(log, "filtered out at info");
        drop(flush);
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> =
            text.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
        assert_eq!(lines.len(), 1000, "{text}");
        for (n, line) in lines.iter().enumerate() {
            assert_eq!(line["msg"], "request");
            assert_eq!(line["n"], n);
            assert_eq!(line["level"], "INFO");
        }
    }

    #[test]
    fn text_format_writes_one_line_per_record() {
        let out = Shared::default();
        let (log, flush) = init_to(&config(LogFormat::Text, LogLevel::Warn), Box::new(out.clone()));
        info!(log, "below the level");
        warn!(log, "disk nearly full"; "free_mb" => 12);
        drop(flush);
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains("WARN disk nearly full") && text.contains("free_mb: 12"), "{text}");
    }

    #[test]
    fn a_full_channel_drops_lines_counts_them_and_reports_the_count() {
        let (tx, rx) = std::sync::mpsc::sync_channel(2);
        let dropped = Arc::new(AtomicU64::new(0));
        let mut sender = LineSender { line: Vec::new(), tx, dropped: Arc::clone(&dropped) };
        for n in 0..5 {
            writeln!(sender, "{{\"n\":{n}}}").unwrap();
            sender.flush().unwrap();
        }
        assert_eq!(dropped.load(Ordering::Relaxed), 3);
        drop(sender);
        let out = Shared::default();
        run_writer(&rx, Box::new(out.clone()), &dropped, LogFormat::Json);
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> =
            text.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(lines[0]["n"], 0);
        assert_eq!(lines[1]["n"], 1);
        assert_eq!(lines[2]["dropped"], 3);
        assert_eq!(lines[2]["level"], "WARN");
    }
}
