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
//! - [`Admission`]: those limit decisions behind one trait — the per-IP bucket, the global
//!   bucket (keyed callers and strangers apart), and a request's minute limits and quotas
//!   held as a [`Ticket`] until it is settled with the real usage or cancelled — so that a
//!   store shared by several instances can stand in for [`LocalAdmission`], the in-memory
//!   one built from the parts above. The IP filter stays outside it (see the trait's
//!   module): it is a list fed by the state store, not a limit. `RedisAdmission` (feature
//!   `redis`) is the one for several instances sharing a Redis server: one round trip per
//!   request, settlements batched off the request path.
//! - [`StateStore`]: where quota usage, the runtime denylist, management bans and the client
//!   keys created at run time ([`StoredClientKey`], opaque records) survive a restart; `SqliteStore` is the embedded implementation (written in batches off the
//!   request path), `RedisStore` the one several gateway instances share (each change
//!   announced to the others, [`SharedChange`]).
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
//!
//! The limits of a service with client keys go through an [`Admission`]: here the default
//! one, a provider with a daily quota and a key with two requests per minute, taken by a
//! request and settled with what its reply used, then a key given a dollar budget at run time.
//!
//! ```
//! use std::num::{NonZeroU32, NonZeroU64};
//! use std::sync::Arc;
//!
//! use cliproxy_core::{Budget, Quota, QuotaPeriod, RateLimit};
//! use cliproxy_netguard::{
//!     Admission, Caller, Demand, FakeClock, LimitKind, LimitTable, Limits, LocalAdmission,
//!     QuotaScope, TokenPrice, Used,
//! };
//!
//! let clock = FakeClock::at_unix(1_700_000_000);
//! let daily = Quota::new(NonZeroU64::new(10_000).ok_or("zero")?, QuotaPeriod::Daily);
//! let two_a_minute = RateLimit::new(NonZeroU32::new(2), None);
//! let admission: Arc<dyn Admission> = Arc::new(LocalAdmission::new(
//!     [("upstream".to_owned(), Limits::new(None, Some(daily)))],
//!     [("alice".to_owned(), Limits::new(Some(two_a_minute), None))],
//!     // Held for a request that does not say how many tokens it may use.
//!     1_000,
//!     clock.clone(),
//! ));
//!
//! // No per-IP or global bucket was given: those always admit.
//! assert!(admission.check_global(Caller::Keyed).is_ok());
//! // A request with a 40-token prompt and `max_tokens` 200 holds 240 tokens of the quota.
//! let ticket = admission.reserve("upstream", "alice", Demand::new(40, Some(200)))?;
//! assert_eq!(ticket.quota_held(QuotaScope::Provider), 240);
//! assert_eq!(ticket.headline().map(|standing| standing.remaining), Some(1));
//! // Its reply used 75 tokens: that, not the estimate, is what the quota counts.
//! let settled = admission.settle(ticket, Used::new(Some(75), None));
//! assert_eq!(settled.provider_quota.map(|quota| quota.remaining), Some(9_925));
//! // A request that is not sent after all gives everything back.
//! let ticket = admission.reserve("upstream", "alice", Demand::new(40, None))?;
//! admission.cancel(ticket);
//! // Alice's second request of the minute is admitted, her third refused.
//! let _second = admission.reserve("upstream", "alice", Demand::new(0, None))?;
//! let refused = admission.reserve("upstream", "alice", Demand::new(0, None)).unwrap_err();
//! assert_eq!(refused.kind, LimitKind::ClientRequests);
//!
//! // Client keys change at run time: bob gets a budget of $0.01 a day. A request holds its
//! // worst case under the model's price ($1 per 1M input, $2 per 1M output tokens) and is
//! // charged what it really cost.
//! let cent = Budget::new(QuotaPeriod::Daily, NonZeroU64::new(10_000).ok_or("zero")?);
//! let table = LimitTable::from([("bob".to_owned(), Limits::default().with_budget(Some(cent)))]);
//! admission.update_client_limits(&table)?;
//! let price = Some(TokenPrice::new(1_000_000, 2_000_000));
//! let ticket = admission.reserve("upstream", "bob", Demand::new(500, Some(1_000)).with_price(price))?;
//! assert_eq!(ticket.quota_held(QuotaScope::Budget), 2_500);
//! let settled = admission.settle(ticket, Used::new(Some(900), Some(1_300)));
//! assert_eq!(settled.client_budget.map(|budget| budget.remaining), Some(8_700));
//! // Bob's budget does not pay for a model without a price.
//! let unpriced = admission.reserve("upstream", "bob", Demand::new(10, None)).unwrap_err();
//! assert_eq!(unpriced.kind, LimitKind::Unpriced);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod admission;
mod clock;
mod config;
mod error;
mod events;
mod fields;
mod headers;
mod ipfilter;
mod maintenance;
#[cfg(any(feature = "sqlite", feature = "redis"))]
mod pending;
mod quota;
mod ratelimit;
#[cfg(feature = "redis")]
mod redis_admission;
#[cfg(feature = "redis")]
mod redis_link;
#[cfg(feature = "redis")]
mod redis_store;
#[cfg(feature = "sqlite")]
mod sqlite;
mod state;
mod types;
mod validate;

#[cfg(feature = "tls")]
pub mod tls;

// The public interface is:
pub use admission::{
    Admission, AdmissionStatus, Caller, Demand, LimitTable, Limits, LocalAdmission, PerIpStatus,
    Settled, Ticket, TokenPrice, Used,
};
pub use clock::{Clock, FakeClock, SystemClock};
pub use config::{
    CooldownAbuseConfig, DEFAULT_MAINTENANCE_MESSAGE, ForwardedHeader, GlobalRateLimitConfig,
    HeadersConfig, IpAllowlistConfig, IpDenylistConfig, OnUnavailable, PerIpRateLimitConfig,
    RedisConfig, SecurityConfig, StateBackend, StateConfig, TlsConfig, TlsVersion,
    ValidationConfig,
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
#[cfg(feature = "redis")]
pub use redis_admission::{
    BATCH_WAKE, FLUSH_INTERVAL, HOLD_MINUTES, RedisAdmission, SharedNotice, SharedStats,
};
#[cfg(feature = "redis")]
pub use redis_link::{LinkHealth, LinkNotice, RedisLink, Unavailable};
#[cfg(feature = "redis")]
pub use redis_store::{RedisStore, RedisStoreOptions};
/// The parsers of what the Redis state store reads back, for the fuzz target
/// `redis_state_values`; not part of the API.
#[cfg(feature = "redis")]
#[doc(hidden)]
pub mod redis_store_fuzz {
    pub use crate::redis_store::parse_stored_value;
}
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;
pub use state::{SharedChange, StateChange, StateStore};
pub use types::{
    Ban, Cooldown, DenyEntry, QuotaScope, QuotaUsage, StoredClientKey, USAGE_BUCKET_SECS,
    UsageCounts, UsageRow, canonical_ip, canonical_network,
};
pub use validate::{CapOwner, Invalid, RequestKind, TokenCap, Validator};
