//! The configuration types this layer owns. The gateway places them in its `server:` section
//! (`server.tls`, `server.security`, `server.rate_limit`, `server.trusted_proxies`,
//! `server.maintenance_mode`, `server.message`) and at the top level (`state:`); every type
//! here rejects unknown keys, so a typo is an error naming its full path.

use std::fmt;
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::PathBuf;
use std::time::Duration;

use ipnetwork::IpNetwork;
use serde::Deserialize;

/// Which header a trusted proxy names the client in (`server.forwarded_header`). Only that
/// one is read: a proxy passes the other through untouched, so a client could write it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ForwardedHeader {
    /// `X-Forwarded-For` (nginx, HAProxy, most cloud load balancers).
    #[default]
    XForwardedFor,
    /// `Forwarded` (RFC 7239; Envoy and HAProxy can be set to it).
    Forwarded,
}

/// The default maintenance message (`server.message`).
pub const DEFAULT_MAINTENANCE_MESSAGE: &str = "Scheduled maintenance in progress";

/// TLS protocol versions accepted as `server.tls.min_version`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3.
    #[default]
    #[serde(rename = "1.2")]
    Tls12,
    /// TLS 1.3 only.
    #[serde(rename = "1.3")]
    Tls13,
}

/// `server.tls`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct TlsConfig {
    /// Serve HTTPS instead of plain HTTP.
    pub enabled: bool,
    /// PEM certificate chain, leaf first.
    pub cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// Oldest protocol version accepted: `"1.2"` or `"1.3"`.
    pub min_version: TlsVersion,
    /// IANA cipher suite names; empty means rustls's defaults (all AEAD with forward secrecy).
    pub cipher_suites: Vec<String>,
    /// Time a client has to complete the handshake.
    #[serde(with = "cliproxy_core::duration")]
    pub handshake_timeout: Duration,
    /// How often the certificate and key files are checked for changes (they are also
    /// reloaded on SIGHUP).
    #[serde(with = "cliproxy_core::duration")]
    pub reload_interval: Duration,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            cert_file: None,
            key_file: None,
            min_version: TlsVersion::Tls12,
            cipher_suites: Vec::new(),
            handshake_timeout: Duration::from_secs(10),
            reload_interval: Duration::from_secs(10),
        }
    }
}

/// `server.security`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct SecurityConfig {
    /// `server.security.ip_allowlist`.
    pub ip_allowlist: IpAllowlistConfig,
    /// `server.security.ip_denylist`.
    pub ip_denylist: IpDenylistConfig,
    /// `server.security.rate_limiting`: the per-IP token buckets.
    pub rate_limiting: PerIpRateLimitConfig,
    /// `server.security.headers`.
    pub headers: HeadersConfig,
    /// `server.security.request_validation`.
    pub request_validation: ValidationConfig,
    /// `server.security.cooldown_abuse`: the throttle of client keys whose requests keep
    /// making the provider's credentials rest.
    pub cooldown_abuse: CooldownAbuseConfig,
}

/// `server.security.cooldown_abuse`. A client key whose requests cause more than
/// `max_per_window` credential cool-downs (the upstream said the credential is invalid, out
/// of credit or rate limited, or its own endpoint failed) within `window` gets 429 for
/// `throttle_for`, and a `security_violation` audit event says so. On by default: a client
/// that keeps tripping the operator's credentials is either broken or probing them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct CooldownAbuseConfig {
    /// Apply the throttle.
    pub enabled: bool,
    /// Cool-downs one client key may cause within `window`.
    pub max_per_window: NonZeroU32,
    /// The window they are counted in (from the first one).
    #[serde(with = "cliproxy_core::duration")]
    pub window: Duration,
    /// How long a key past the limit is refused.
    #[serde(with = "cliproxy_core::duration")]
    pub throttle_for: Duration,
}

impl Default for CooldownAbuseConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_per_window: NonZeroU32::new(20).unwrap_or(NonZeroU32::MIN),
            window: Duration::from_secs(60),
            throttle_for: Duration::from_secs(300),
        }
    }
}

/// `server.security.ip_allowlist`. Enabled with an empty list admits nobody unless
/// `deny_all` is false.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct IpAllowlistConfig {
    /// Apply the allowlist.
    pub enabled: bool,
    /// Addresses and CIDR ranges admitted.
    pub allowed_ips: Vec<IpNetwork>,
    /// Refuse every address not in `allowed_ips`. When false, an enabled allowlist with no
    /// entries admits everyone (the seed's behaviour); with entries it always restricts.
    pub deny_all: bool,
}

/// `server.security.ip_denylist`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct IpDenylistConfig {
    /// Apply the denylist (runtime entries from the management API apply regardless).
    pub enabled: bool,
    /// Addresses and CIDR ranges refused.
    pub denied_ips: Vec<IpNetwork>,
}

/// `server.security.rate_limiting`: one token bucket per client address.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct PerIpRateLimitConfig {
    /// Apply per-IP limits.
    pub enabled: bool,
    /// Sustained requests per second per address.
    pub requests_per_second: NonZeroU32,
    /// Requests an address may send at once after being idle.
    pub burst: NonZeroU32,
    /// Kept for the seed's key; per-IP limiting is what this section does, so `false` turns
    /// it off like `enabled: false`.
    pub per_ip: bool,
    /// Most addresses tracked at once; beyond it, new addresses share one overflow bucket
    /// (memory stays bounded under an address spray). IPv6 addresses count per /64.
    pub max_tracked: NonZeroUsize,
}

impl Default for PerIpRateLimitConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            requests_per_second: NonZeroU32::new(10).unwrap_or(NonZeroU32::MIN),
            burst: NonZeroU32::new(20).unwrap_or(NonZeroU32::MIN),
            per_ip: true,
            max_tracked: NonZeroUsize::new(100_000).unwrap_or(NonZeroUsize::MIN),
        }
    }
}

/// `server.rate_limit`: the size of the gateway's global token buckets (one for requests with a
/// valid client key, one of the same size for the rest; see `docs/security/netguard.md`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct GlobalRateLimitConfig {
    /// Apply the global limit.
    pub enabled: bool,
    /// Sustained requests per second.
    pub requests_per_second: NonZeroU32,
    /// Requests admitted at once after an idle period.
    pub burst: NonZeroU32,
}

impl Default for GlobalRateLimitConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            requests_per_second: NonZeroU32::new(100).unwrap_or(NonZeroU32::MIN),
            burst: NonZeroU32::new(200).unwrap_or(NonZeroU32::MIN),
        }
    }
}

/// `server.security.headers`: added to every response, errors included. An empty value
/// leaves that header out.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct HeadersConfig {
    /// Add the headers.
    pub enabled: bool,
    /// `Strict-Transport-Security` (sent on TLS listeners only, as RFC 6797 requires).
    pub strict_transport_security: String,
    /// `X-Content-Type-Options`.
    pub content_type_options: String,
    /// `X-Frame-Options`.
    pub frame_options: String,
    /// `X-XSS-Protection`.
    pub xss_protection: String,
    /// `Content-Security-Policy`.
    pub content_security_policy: String,
}

impl Default for HeadersConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            strict_transport_security: "max-age=31536000; includeSubDomains".to_owned(),
            content_type_options: "nosniff".to_owned(),
            frame_options: "DENY".to_owned(),
            xss_protection: "0".to_owned(),
            content_security_policy: "default-src 'none'; frame-ancestors 'none'".to_owned(),
        }
    }
}

/// `server.security.request_validation`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct ValidationConfig {
    /// Check request bodies (required fields per API format, `max_tokens`).
    pub enabled: bool,
    /// Largest `max_tokens` (or `max_completion_tokens`, `max_output_tokens`,
    /// `maxOutputTokens`) a request may ask for. No cap unless set: the clients this gateway
    /// serves ask for 32000 and more (Claude Code's default), and the provider enforces each
    /// model's own limit. A provider's `max_tokens` applies beside it, the stricter of the two
    /// holding.
    pub max_tokens: Option<NonZeroU32>,
}

impl Default for ValidationConfig {
    fn default() -> Self {
        Self { enabled: true, max_tokens: None }
    }
}

/// `state:` — where quota usage, the runtime denylist, management bans, the client keys
/// created at run time and the usage history are kept: the embedded SQLite database (the
/// default), or a Redis server shared by several gateway instances (SPEC §11).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct StateConfig {
    /// `sqlite` (one instance, the default) or `redis` (several instances share
    /// `state.redis`).
    pub backend: StateBackend,
    /// The database file; its directory is created 0700 and the file is 0600. Without one,
    /// the gateway keeps it beside the credentials, as `.state.db` in `auth.dir`.
    pub path: Option<PathBuf>,
    /// How often changes are written (at most this much is lost on `kill -9`; ≤ 1 s).
    #[serde(with = "cliproxy_core::duration")]
    pub flush_interval: Duration,
    /// `state.redis`: the shared server, when `backend` is `redis`.
    pub redis: RedisConfig,
}

impl Default for StateConfig {
    fn default() -> Self {
        Self {
            backend: StateBackend::Sqlite,
            path: None,
            flush_interval: Duration::from_millis(500),
            redis: RedisConfig::default(),
        }
    }
}

/// `state.backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StateBackend {
    /// The embedded SQLite database at `state.path`: one gateway instance.
    #[default]
    Sqlite,
    /// A Redis server at `state.redis.url`, shared by every instance behind a load balancer.
    Redis,
}

/// `state.redis` — the Redis server several gateway instances share.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct RedisConfig {
    /// `redis://[:password@]host:port[/db]`, or `rediss://` for TLS (rustls on ring; the
    /// system's roots, or `ca_file`). A secret: it may hold the password, and it is never
    /// logged or shown (only host and port are).
    pub url: Option<cliproxy_core::Secret>,
    /// A PEM file of the certificate authority that signed the server's certificate, for a
    /// `rediss://` server with a private CA.
    pub ca_file: Option<PathBuf>,
    /// What every key this gateway writes starts with, so that several deployments can share
    /// one server.
    pub key_prefix: String,
    /// The longest a request waits on Redis (connect and answer): past it the request goes on
    /// as `on_unavailable` says.
    #[serde(with = "cliproxy_core::duration")]
    pub timeout: Duration,
    /// What a request that needs shared state gets while Redis cannot be reached.
    pub on_unavailable: OnUnavailable,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: None,
            ca_file: None,
            key_prefix: "cliproxy:".to_owned(),
            timeout: Duration::from_millis(200),
            on_unavailable: OnUnavailable::Local,
        }
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &self.url.as_ref().map(|_| "[REDACTED]"))
            .field("ca_file", &self.ca_file)
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .field("on_unavailable", &self.on_unavailable)
            .finish()
    }
}

/// `state.redis.on_unavailable`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum OnUnavailable {
    /// Keep serving with this instance's own limits (each instance then admits up to the full
    /// limit), say so in the log, `GET /status` and `cliproxy_state_backend_up`, and add what
    /// was used meanwhile to the shared counts when Redis is back.
    #[default]
    Local,
    /// Answer 503 to what needs shared state (limits, quotas, budgets) until Redis is back.
    Deny,
}
