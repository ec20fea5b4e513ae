//! The operational log: slog to standard error, JSON or text, behind an async drain so that
//! writing a line never blocks a request.

use cliproxy_gateway::{LogFormat, LogLevel, LoggingConfig};
use slog::{Drain, Level, Logger, o};

/// The root logger, and the guard that flushes it when dropped.
pub(crate) fn init(config: &LoggingConfig) -> (Logger, slog_async::AsyncGuard) {
    let level = match config.level {
        LogLevel::Error => Level::Error,
        LogLevel::Warn => Level::Warning,
        LogLevel::Info => Level::Info,
        LogLevel::Debug => Level::Debug,
        LogLevel::Trace => Level::Trace,
    };
    // Standard error is unbuffered, and both formatters write a line piece by piece (slog-json
    // token by token): buffered, with a flush at the end of each record, a line is one
    // `write`, not dozens. (Formatting runs on the log thread, which shares the CPU with the
    // request path.)
    let stderr = || std::io::BufWriter::with_capacity(8192, std::io::stderr());
    let (drain, guard) = match config.format {
        LogFormat::Json => {
            let drain =
                slog_json::Json::new(stderr()).set_flush(true).add_default_keys().build().fuse();
            asynchronous(drain)
        }
        LogFormat::Text => {
            // `FullFormat` flushes the decorator after each record.
            let decorator = slog_term::PlainDecorator::new(stderr());
            asynchronous(slog_term::FullFormat::new(decorator).build().fuse())
        }
    };
    let drain = drain.filter_level(level).fuse();
    (Logger::root(drain, o!()), guard)
}

fn asynchronous<D>(drain: D) -> (slog::Fuse<slog_async::Async>, slog_async::AsyncGuard)
where
    D: Drain<Ok = (), Err = slog::Never> + Send + 'static,
{
    // Lines are dropped (and counted) rather than blocking when the channel is full.
    let (drain, guard) = slog_async::Async::new(drain)
        .chan_size(8192)
        .overflow_strategy(slog_async::OverflowStrategy::DropAndReport)
        .thread_name("cliproxy-log".to_owned())
        .build_with_guard();
    (drain.fuse(), guard)
}
