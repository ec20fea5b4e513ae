//! Layer 4 of cliproxy, the network guard: everything that decides whether a connection or a
//! request may proceed before it costs anything upstream. It is a library of its own: another
//! Rust service can put the IP filter and the limiters in front of its handlers without
//! taking anything else of cliproxy.
//!
//! - [`IpFilter`]: static deny and allow lists, the runtime denylist with expiry, and the
//!   client address behind trusted proxies (`X-Forwarded-For`, `Forwarded`).
//! - Rate limits: per-IP ([`IpRateLimiter`]) and global ([`GlobalRateLimiter`]) token buckets,
//!   requests and tokens per minute per name ([`MinuteLimiter`]), and token quotas per day,
//!   week or month ([`Quotas`]).
//! - [`StateStore`]: where quota usage, the runtime denylist and management bans survive a
//!   restart; `SqliteStore` is the embedded implementation (written in batches off the
//!   request path).
//! - [`RequestFields`]: the few fields of a request body that routing and validation read,
//!   found in one borrowed pass over its bytes; [`Validator`] checks them.
//! - [`SecurityHeaders`], [`Maintenance`], and `tls`: the rustls server configuration (ring
//!   only), cipher suites by IANA name, and a certificate resolver that reloads changed files
//!   without dropping connections.
//!
//! The crate has no HTTP server and no async runtime: the caller asks it at the steps of its
//! own pipeline (cliproxy's gateway in the order `SPEC.md` §2 gives) and answers with what it
//! returns — a [`Verdict`], a [`Limited`] (429 with its headers) or an [`Invalid`] (400) —
//! counting each refusal under its [`RejectionKind`]. Everything that depends on time takes a
//! [`Clock`], so tests drive it with [`FakeClock`] instead of sleeping. It logs nothing: what
//! a caller should hear of comes back as a value (an [`Error`], or notices from
//! [`StateStore::take_notices`]).
//!
//! # Features
//!
//! Both on by default; without them the crate compiles neither bundled SQLite nor rustls.
//!
//! - `sqlite`: `SqliteStore`, the embedded [`StateStore`].
//! - `tls`: the `tls` module.
//!
//! # Configuration and errors
//!
//! Each part has a constructor from plain values ([`IpFilter::from_lists`],
//! [`IpRateLimiter::new`], [`Validator::from_values`], [`SecurityHeaders::from_values`], …)
//! and, for a service that reads cliproxy's configuration sections (serde types that reject
//! unknown keys, such as [`SecurityConfig`]), one from the section that delegates to it. An
//! [`Error`] describes what is wrong in this library's terms (a [`Setting`], a file); the
//! caller names the key of its own configuration file.
//!
//! # Example
//!
//! An IP filter and a per-IP limiter in front of a handler, on a fake clock (a service passes
//! [`SystemClock::shared`]). `examples/guarded_service.rs` puts the same two in front of a
//! hyper service.
//!
//! ```
//! use std::net::IpAddr;
//! use std::num::{NonZeroU32, NonZeroUsize};
//! use std::time::Duration;
//!
//! use cliproxy_netguard::{FakeClock, IpFilter, IpRateLimiter, Verdict};
//!
//! let clock = FakeClock::at_unix(1_700_000_000);
//! // Refuse one network, admit every other address.
//! let filter = IpFilter::from_lists(&["203.0.113.0/24".parse()?], None, &[], clock.clone());
//! // One request per second per address, after a burst of two.
//! let limiter = IpRateLimiter::new(
//!     NonZeroU32::new(1).ok_or("zero")?,
//!     NonZeroU32::new(2).ok_or("zero")?,
//!     NonZeroUsize::new(10_000).ok_or("zero")?,
//!     clock.clone(),
//! );
//!
//! let client: IpAddr = "192.0.2.7".parse()?;
//! assert_eq!(filter.check(client), Verdict::Allow);
//! assert!(limiter.check(client).is_ok());
//! assert!(limiter.check(client).is_ok());
//! // Over the burst: 429, and the client is told when to come back.
//! let refused = limiter.check(client).unwrap_err();
//! assert_eq!(refused.retry_after_secs(), 1);
//! clock.advance(Duration::from_secs(1));
//! assert!(limiter.check(client).is_ok());
//!
//! // IPv4 rules match IPv4-mapped IPv6 peers, as a dual-stack listener reports them.
//! assert!(matches!(filter.check("::ffff:203.0.113.9".parse()?), Verdict::Deny(_)));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod clock;
mod config;
mod error;
mod events;
mod fields;
mod headers;
mod ipfilter;
mod maintenance;
mod quota;
mod ratelimit;
#[cfg(feature = "sqlite")]
mod sqlite;
mod state;
mod types;
mod validate;

#[cfg(feature = "tls")]
pub mod tls;

// The public interface is:
pub use clock::{Clock, FakeClock, SystemClock};
pub use config::{
    CooldownAbuseConfig, DEFAULT_MAINTENANCE_MESSAGE, ForwardedHeader, GlobalRateLimitConfig,
    HeadersConfig, IpAllowlistConfig, IpDenylistConfig, PerIpRateLimitConfig, SecurityConfig,
    StateConfig, TlsConfig, TlsVersion, ValidationConfig,
};
pub use error::{CipherSuiteProblem, Error, Result, Setting, TlsFile, TlsProblem};
pub use events::{Counters, RejectionKind};
pub use fields::{RequestFields, UsageOption, WrongType};
pub use headers::SecurityHeaders;
pub use ipfilter::{DenyReason, IpFilter, Verdict, parse_network};
pub use maintenance::{Maintenance, MaintenanceState};
// The form quota messages give a reset time in; the one implementation lives in the core.
pub use cliproxy_core::format_utc;
pub use quota::{QuotaStatus, Quotas, next_reset, period_start};
pub use ratelimit::{
    Admitted, DEFAULT_TOKEN_ESTIMATE, GlobalRateLimiter, IpRateLimiter, LimitKind, Limited,
    MinuteLimiter, Reservation,
};
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;
pub use state::{StateChange, StateStore};
pub use types::{Ban, DenyEntry, QuotaScope, QuotaUsage, canonical_ip, canonical_network};
pub use validate::{CapOwner, Invalid, RequestKind, TokenCap, Validator};
