//! Layer 4 of cliproxy, the network guard: everything that decides whether a connection or a
//! request may proceed before it costs anything upstream.
//!
//! - [`tls`]: the rustls server configuration (ring only) from `server.tls`, cipher suites by
//!   IANA name, and a certificate resolver that reloads changed files without dropping
//!   connections.
//! - [`IpFilter`]: static deny and allow lists, the runtime denylist with expiry, and the
//!   client address behind trusted proxies (`X-Forwarded-For`, `Forwarded`).
//! - Rate limits: per-IP and global token buckets, per-provider and per-client-key requests and
//!   tokens per minute, and token quotas per day, week or month.
//! - [`StateStore`]: where quota usage, the runtime denylist and management bans survive a
//!   restart (SQLite, written in batches off the request path).
//! - [`RequestFields`]: the few fields of a request body that routing and validation read,
//!   found in one borrowed pass over its bytes; [`Validator`] checks them.
//! - Security headers, request validation and maintenance mode.
//!
//! The crate has no HTTP server and no async runtime: the gateway calls it at the steps of
//! its pipeline, in the order `SPEC.md` §2 gives, and answers with what it returns — a
//! [`Verdict`], a [`Limited`] (429 with its headers) or an [`Invalid`] (400) — counting each
//! refusal under its [`RejectionKind`]. Everything that depends on time takes a [`Clock`], so
//! tests drive it with [`FakeClock`] instead of sleeping.
//!
//! ```
//! use cliproxy_netguard::canonical_ip;
//!
//! // IPv4 rules match IPv4-mapped IPv6 peers.
//! assert_eq!(canonical_ip("::ffff:10.0.0.1".parse()?), "10.0.0.1".parse::<std::net::IpAddr>()?);
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
pub use quota::{QuotaStatus, Quotas, format_utc, next_reset, period_start};
pub use ratelimit::{
    Admitted, DEFAULT_TOKEN_ESTIMATE, GlobalRateLimiter, IpRateLimiter, LimitKind, Limited,
    MinuteLimiter, Reservation,
};
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;
pub use state::{StateChange, StateStore};
pub use types::{Ban, DenyEntry, QuotaScope, QuotaUsage, canonical_ip, canonical_network};
pub use validate::{Invalid, RequestKind, TokenCap, Validator};
