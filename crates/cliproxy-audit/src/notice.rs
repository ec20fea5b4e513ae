//! What the file sink tells the service that embeds it: [`Notice`]s (a file opened, a mode
//! tightened, a write that failed, …) handed to a callback of the caller's, and the typed
//! [`SinkFailure`] its health reports.
//!
//! The crate logs nothing itself: which logging framework a service uses, and what it calls
//! the setting that names the audit file, is the service's business. The sink says what
//! happened, with the values an operator needs; the caller words and logs it (the `Display`
//! texts here are a plain default).

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use crate::checkpoint::ChainHead;

/// Receives the sink's [`Notice`]s: at open on the caller's thread, afterwards on the writer
/// thread. It must not block for long (the writer waits for it) and must not call back into
/// the sink's commands (`flush`, `reopen`, …), which wait for the writer.
pub type Notify = Arc<dyn Fn(Notice) + Send + Sync>;

/// How much a [`Notice`] matters, for the caller's log level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Severity {
    /// Normal operation worth a line (opened, reopened, closed, writable again).
    Info,
    /// Something was repaired (a torn line cut, a loose mode tightened).
    Warning,
    /// Lines are not being written, or the chain has a gap.
    Error,
}

/// Something the file sink did or ran into. Failures that repeat (a disk that stays full) are
/// told at most every 10 s, with the number of repeats left out in `suppressed`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Notice {
    /// The file was opened; the chain continues from `head` (seq 0 for a new chain).
    Opened {
        /// The audit file.
        path: PathBuf,
        /// The last line already in the file.
        head: ChainHead,
    },
    /// The file was readable by others; its mode was tightened to 0600.
    ModeTightened {
        /// The audit file.
        path: PathBuf,
        /// The permission bits it had (e.g. `0o644`).
        mode: u32,
    },
    /// The file's last line was a whole, valid line without its newline; the newline was
    /// added.
    NewlineCompleted {
        /// The audit file.
        path: PathBuf,
        /// That line's seq.
        seq: u64,
    },
    /// An incomplete last line (a crash while writing) was cut off.
    TornLineCut {
        /// The audit file.
        path: PathBuf,
        /// How many bytes were cut.
        bytes: u64,
    },
    /// The file is behind its anchored head and the sink went on (`OnGap::Continue`); the gap
    /// is the first new line of the chain.
    GapContinued {
        /// The audit file.
        path: PathBuf,
        /// What the anchor holds.
        anchored: ChainHead,
        /// What the file holds instead.
        found: String,
    },
    /// Writing, reopening, or the writer thread itself failed.
    Failed {
        /// What failed (also what [`crate::SinkHealth::Failing`] holds now).
        failure: SinkFailure,
        /// Lines chained but not written (held in the backlog, or lost with a dead writer).
        pending_lines: usize,
        /// Events dropped and not yet recorded in the chain.
        lost: u64,
        /// Failures of the same kind not told since the last notice.
        suppressed: u64,
    },
    /// Writing works again after failing; the backlog was written.
    WritableAgain {
        /// The audit file.
        path: PathBuf,
        /// Lines of the backlog written now.
        backlog_written: usize,
        /// Events dropped meanwhile (recorded in the chain right after).
        lost: u64,
    },
    /// The file was reopened at its path (after a rotation); the chain continues.
    Reopened {
        /// The audit file.
        path: PathBuf,
        /// The last line chained before the reopen.
        head: ChainHead,
    },
    /// The sink closed with lines it could not write.
    ClosedUnwritten {
        /// The audit file.
        path: PathBuf,
        /// Lines chained and never written.
        unwritten: usize,
        /// Events dropped and never recorded.
        lost: u64,
    },
    /// The sink closed; `head` is the last line chained.
    Closed {
        /// The audit file.
        path: PathBuf,
        /// The chain's head.
        head: ChainHead,
    },
}

impl Notice {
    /// How much it matters.
    pub const fn severity(&self) -> Severity {
        match self {
            Self::Opened { .. }
            | Self::WritableAgain { .. }
            | Self::Reopened { .. }
            | Self::Closed { .. } => Severity::Info,
            Self::ModeTightened { .. }
            | Self::NewlineCompleted { .. }
            | Self::TornLineCut { .. } => Severity::Warning,
            Self::GapContinued { .. } | Self::Failed { .. } | Self::ClosedUnwritten { .. } => {
                Severity::Error
            }
        }
    }
}

impl fmt::Display for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Opened { path, head } => {
                write!(
                    f,
                    "audit log {} opened at seq {} (hash {})",
                    path.display(),
                    head.seq,
                    head.hash
                )
            }
            Self::ModeTightened { path, mode } => write!(
                f,
                "the audit log {} was readable by others (mode {mode:o}): mode tightened to 0600",
                path.display()
            ),
            Self::NewlineCompleted { path, seq } => write!(
                f,
                "the audit log {}'s last line (seq {seq}) lacked its newline: completed",
                path.display()
            ),
            Self::TornLineCut { path, bytes } => write!(
                f,
                "cut an incomplete last line ({bytes} bytes) off the audit log {} (a crash while \
                 writing)",
                path.display()
            ),
            Self::GapContinued { path, anchored, found } => write!(
                f,
                "the audit log {} is behind its head anchor (seq {} with hash {}), but {found}; \
                 going on, the gap recorded as the first new line",
                path.display(),
                anchored.seq,
                anchored.hash
            ),
            Self::Failed { failure, pending_lines, lost, suppressed } => write!(
                f,
                "{failure} ({pending_lines} lines pending, {lost} events lost, {suppressed} \
                 repeats not told)"
            ),
            Self::WritableAgain { path, backlog_written, lost } => write!(
                f,
                "the audit log {} is writable again ({backlog_written} backlog lines written, \
                 {lost} events lost)",
                path.display()
            ),
            Self::Reopened { path, head } => write!(
                f,
                "audit log {} reopened at seq {} (hash {})",
                path.display(),
                head.seq,
                head.hash
            ),
            Self::ClosedUnwritten { path, unwritten, lost } => write!(
                f,
                "audit log {} closed with {unwritten} lines not written and {lost} events lost",
                path.display()
            ),
            Self::Closed { path, head } => write!(
                f,
                "audit log {} closed at seq {} (hash {})",
                path.display(),
                head.seq,
                head.hash
            ),
        }
    }
}

/// Why the sink cannot write, as [`crate::SinkHealth::Failing`] and [`Notice::Failed`] hold
/// it. The `Display` text names the file and the OS error, not a setting of the caller's.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SinkFailure {
    /// A write (or `fdatasync`) failed; lines are held in the backlog and retried.
    Write {
        /// The audit file.
        path: PathBuf,
        /// The OS error.
        error: String,
    },
    /// Reopening the path failed; the sink still writes to the file it had open.
    Reopen {
        /// The audit file.
        path: PathBuf,
        /// The OS error.
        error: String,
    },
    /// The writer thread stopped after a panic: nothing more is written.
    WriterDied {
        /// The audit file.
        path: PathBuf,
    },
}

impl SinkFailure {
    /// The audit file concerned.
    pub fn path(&self) -> &std::path::Path {
        match self {
            Self::Write { path, .. } | Self::Reopen { path, .. } | Self::WriterDied { path } => {
                path
            }
        }
    }
}

impl fmt::Display for SinkFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Write { path, error } => {
                write!(f, "cannot write the audit log {}: {error}", path.display())
            }
            Self::Reopen { path, error } => write!(
                f,
                "cannot reopen the audit log {}: {error}; still writing to the file open before",
                path.display()
            ),
            Self::WriterDied { path } => write!(
                f,
                "the audit writer thread for {} stopped after a panic: events are no longer \
                 written; open the sink again",
                path.display()
            ),
        }
    }
}
