//! The audit sink: hash-chained JSON lines written by a slog async drain.
//!
//! STUB: being written (helper A). Public signatures below are the contract.

use std::sync::Arc;

use slog::Logger;

use crate::config::AuditConfig;
use crate::error::Result;
use crate::event::Event;
use crate::metrics::Metrics;

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

/// The file sink.
#[derive(Debug)]
pub struct FileSink {}

impl FileSink {
    /// Opens (or creates, 0600) the audit file and continues its chain.
    pub fn open(_config: &AuditConfig, _metrics: Arc<Metrics>, _log: Logger) -> Result<Self> {
        unimplemented!("helper A")
    }
}

#[allow(unused_variables, reason = "stub")]
impl AuditSink for FileSink {
    fn write(&self, event: &Event) {}
    fn health(&self) -> SinkHealth {
        SinkHealth::Ok
    }
    fn reopen(&self) {}
    fn flush(&self) {}
}
