//! Layer 5 of cliproxy, ops and audit: what lets an operator see what a service did and prove
//! that the record was not changed afterwards. The crate is cliproxy's, and any Rust service
//! can embed it on its own: it has no HTTP server, no async runtime and no logging framework,
//! and it names none of cliproxy's settings.
//!
//! - [`AuditSink`]: where [`Event`]s go. The default one, [`FileSink`], writes JSON lines from
//!   a thread of its own, each with `seq`, `prev_hash` and `hash` (SHA-256 over the previous
//!   hash and the line), so that a changed, removed or reordered line is found by
//!   [`verify_files`]. It is built from its section, [`AuditConfig::build`], or from a plain
//!   path, [`FileSink::open_path`]; it never blocks the caller on the disk, and it reopens the
//!   file after a rotation with the chain going on.
//! - [`Notice`]: what the sink did or ran into (opened, a torn line cut, a write failed, …),
//!   handed to the caller's [`Notify`] callback for its own log; [`SinkFailure`] is what its
//!   health reports. [`Error`] is what can stop it from opening.
//! - [`HeadAnchor`]: where the sink keeps the head it has durably written (outside the file),
//!   so that a file cut back or deleted while the service was stopped is found at the next
//!   start ([`OnGap`]); signed checkpoint lines (Ed25519, ring) let [`verify_files_signed`]
//!   find a cut tail offline with only the public key.
//! - [`Audit`]: the handle a service holds. Every [`Event`] (one of seven [`EventType`]s)
//!   bumps its [`Metrics`], feeds the [`Alerts`] and, when its type is selected, goes to the
//!   sink.
//! - [`Metrics`]: counters and histograms on a Prometheus recorder of its own, with help texts,
//!   histogram buckets from 100 µs to 5 minutes and bounded label sets.
//! - [`Alerts`]: `METRIC > N` over a sliding window, `notify_admin` or `block_ip`; the caller
//!   carries out what a fired alert asks for.
//!
//! Two events written to a file sink in a directory of their own, and the chain verified:
//!
//! ```
//! use std::sync::{Arc, Mutex};
//!
//! use cliproxy_audit::{AuditSink, Event, FileSink, Notice, Plane, SinkOptions, What};
//!
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("audit.log");
//! // The crate logs nothing: what the sink has to say comes to this callback.
//! let notices = Arc::new(Mutex::new(Vec::new()));
//! let mut options = SinkOptions::default();
//! options.notify = Some({
//!     let notices = notices.clone();
//!     Arc::new(move |notice: Notice| notices.lock().unwrap().push(notice))
//! });
//!
//! let sink = FileSink::open_path(&path, options)?;
//! let peer = "192.0.2.7".parse()?;
//! sink.write(&Event::new(What::AuthSuccess).user("alice").ip(peer));
//! let refused = What::AuthFailure { plane: Plane::Client, reason: "invalid_key", repeats: 0 };
//! sink.write(&Event::new(refused).ip(peer));
//! sink.flush();
//!
//! let verified = cliproxy_audit::verify_files(&[&path])?;
//! assert_eq!((verified.lines, verified.last_seq), (2, Some(2)));
//! drop(sink);
//! let told = notices.lock().unwrap();
//! assert!(matches!(told.first(), Some(Notice::Opened { head, .. }) if head.seq == 0));
//! assert!(matches!(told.last(), Some(Notice::Closed { head, .. }) if head.seq == 2));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! `examples/embedded_service.rs` embeds it in a small TCP service of its own, and shows a
//! tampered line being found.

mod alerts;
mod anchor;
mod audit;
mod checkpoint;
mod config;
mod error;
mod event;
mod metrics;
mod notice;
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
pub use crate::notice::{Notice, Notify, Severity, SinkFailure};
pub use crate::sink::{
    AuditSink, AuditWriter, FileSink, OpenWriter, Reporter, SinkHealth, SinkOptions, SinkReport,
};
pub use crate::verify::{
    Broken, CHECKPOINT_GRACE, MAX_LINE, Problem, SignedCheck, Verified, verify_files,
    verify_files_signed, verify_reader, verify_reader_signed,
};
