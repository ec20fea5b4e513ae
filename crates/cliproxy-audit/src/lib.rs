//! Layer 5 of cliproxy, ops and audit: what lets an operator see what the gateway did and
//! prove that the record was not changed afterwards.
//!
//! - [`Audit`]: the handle the gateway holds. Every [`Event`] (one of seven
//!   [`EventType`]s) bumps its metrics, feeds the [`Alerts`] and, when selected by
//!   `logging.audit.events`, is written by the [`AuditSink`].
//! - [`FileSink`]: JSON lines written by a thread of its own, each with `seq`, `prev_hash` and
//!   `hash` (SHA-256 over the previous hash and the line), so that a changed, removed or
//!   reordered line is found by [`verify_files`]. Reopened on SIGHUP with the chain going on.
//! - [`HeadAnchor`]: where the sink keeps the head it has durably written (the gateway's state
//!   store), so that a file cut back or deleted while the gateway was stopped is found at the
//!   next start (`logging.audit.on_gap`); signed checkpoint lines (Ed25519, ring) let
//!   [`verify_files_signed`] find a cut tail offline with only the public key.
//! - [`Metrics`]: every metric of SPEC §6 on a Prometheus recorder of its own, with help texts,
//!   histogram buckets from 100 µs to 5 minutes and bounded label sets.
//! - [`Alerts`]: `METRIC > N` over a sliding window, `notify_admin` or `block_ip`.
//!
//! The crate has no HTTP server and no async runtime; the gateway serves the metrics text and
//! carries out what a fired alert asks for.
//!
//! ```
//! use cliproxy_audit::{Condition, AlertMetric};
//!
//! let c: Condition = "rate_limit_violations > 50".parse()?;
//! assert_eq!((c.metric, c.threshold), (AlertMetric::RateLimitViolations, 50));
//! # Ok::<(), String>(())
//! ```

mod alerts;
mod anchor;
mod audit;
mod checkpoint;
mod config;
mod error;
mod event;
mod metrics;
mod sink;
mod verify;

pub use crate::alerts::{Alerts, Fired};
pub use crate::anchor::{HeadAnchor, compare as compare_with_anchor};
pub use crate::audit::{ALERT_RULE, Audit, MillisClock};
pub use crate::checkpoint::{
    CHECKPOINT_EVENT, ChainHead, CheckpointKind, PUBLIC_KEY_LEN, parse_public_key, public_key_hex,
};
pub use crate::config::{
    AlertAction, AlertMetric, AlertRule, AuditConfig, AuditFormat, CheckpointConfig, Condition,
    MetricsConfig, OnGap,
};
pub use crate::error::{Error, Result};
pub use crate::event::{Event, EventType, Plane, Summary, What};
pub use crate::metrics::Metrics;
pub use crate::sink::{
    AuditSink, AuditWriter, FileSink, OpenWriter, Reporter, SinkHealth, SinkOptions, SinkReport,
};
pub use crate::verify::{
    Broken, CHECKPOINT_GRACE, MAX_LINE, Problem, SignedCheck, Verified, verify_files,
    verify_files_signed, verify_reader, verify_reader_signed,
};
