//! The gateway's configuration: the top-level [`Config`] made of one section per crate, and
//! [`load`], which layers built-in defaults, the YAML file and `CLIPROXY_` environment variables
//! with figment.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::PathBuf;
use std::time::Duration;

use figment::providers::{Env, Format, Yaml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::Deserialize;

/// The whole configuration file: one section per crate.
///
/// Adding a layer adds a section field here whose type the layer crate owns; the sections
/// already here do not change shape.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct Config {
    /// `server:` — listener, limits and timeouts.
    pub server: ServerConfig,
    /// `auth:` — client keys and the credential vault (owned by `cliproxy-vault`).
    pub auth: cliproxy_vault::Config,
    /// `management:` — the management API under `/v0/management`.
    pub management: ManagementConfig,
    /// `providers:` — upstream providers by name.
    pub providers: ProvidersConfig,
    /// `logging:` — level and format of the operational log.
    pub logging: LoggingConfig,
    /// `sandbox:` — the process sandbox (owned by `cliproxy-container`; the binary applies
    /// it).
    pub sandbox: cliproxy_container::Config,
    /// `state:` — the state database of the network guard (owned by `cliproxy-netguard`).
    pub state: cliproxy_netguard::StateConfig,
    /// `metrics:` — the Prometheus listener (owned by `cliproxy-audit`).
    pub metrics: cliproxy_audit::MetricsConfig,
    /// `alerts:` — alert rules over the security metrics (owned by `cliproxy-audit`).
    pub alerts: Vec<cliproxy_audit::AlertRule>,
    /// `egress:` — the upstream hosts the gateway may send requests to.
    pub egress: EgressConfig,
}

/// The `egress:` section: an optional allow-list of upstream hosts. Every base URL (a
/// provider's, configured or the public default, and a credential's own) and every OAuth
/// `token_url` must name a listed host; empty (the default) lists no restriction.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct EgressConfig {
    /// Host names (`api.openai.com`), `*.` suffixes (`*.openai.azure.com`: its subdomains,
    /// not itself) and IP addresses (`10.0.0.7`, `::1`), without scheme or port.
    pub allowed_hosts: Vec<String>,
}

impl EgressConfig {
    /// Whether the gateway may connect to `host` (as a URI carries it: IPv6 in brackets).
    pub fn allows(&self, host: &str) -> bool {
        if self.allowed_hosts.is_empty() {
            return true;
        }
        let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.allowed_hosts.iter().any(|pattern| {
            let pattern = pattern.to_ascii_lowercase();
            match pattern.strip_prefix("*.") {
                Some(suffix) => {
                    host.strip_suffix(suffix).is_some_and(|sub| sub.ends_with('.') && sub.len() > 1)
                }
                None => {
                    match (pattern.parse::<std::net::IpAddr>(), host.parse::<std::net::IpAddr>()) {
                        (Ok(a), Ok(b)) => a.to_canonical() == b.to_canonical(),
                        _ => pattern == host,
                    }
                }
            }
        })
    }

    /// The problems with the patterns themselves, each naming its key.
    fn problems(&self) -> Vec<String> {
        self.allowed_hosts
            .iter()
            .enumerate()
            .filter(|(_, pattern)| {
                let name = pattern.strip_prefix("*.").unwrap_or(pattern);
                pattern.parse::<std::net::IpAddr>().is_err()
                    && (name.is_empty()
                        || name.len() > 253
                        || !name.split('.').all(|label| {
                            !label.is_empty()
                                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                        }))
            })
            .map(|(i, _)| {
                format!("`egress.allowed_hosts[{i}]` is not a host name, `*.` suffix or IP address (no scheme, port or path)")
            })
            .collect()
    }
}

/// The `server:` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Address to listen on; loopback by default so nothing is exposed by accident.
    pub host: IpAddr,
    /// Port to listen on; 0 picks a free one (the bound address is logged).
    pub port: u16,
    /// How long in-flight requests and streams may run on after SIGTERM.
    #[serde(with = "cliproxy_core::duration")]
    pub shutdown_timeout: Duration,
    /// `server.limits:` — protocol limits and upstream timeouts.
    pub limits: LimitsConfig,
    /// `server.trusted_proxies:` — peers (CIDRs) whose `X-Forwarded-For` / `Forwarded` names
    /// the client; from anyone else those headers are ignored.
    pub trusted_proxies: Vec<ipnetwork::IpNetwork>,
    /// `server.forwarded_header:` — `x-forwarded-for` (default) or `forwarded`: the one
    /// header trusted proxies name the client in; the other is never read.
    pub forwarded_header: cliproxy_netguard::ForwardedHeader,
    /// `server.maintenance_mode:` — start in maintenance (503 for proxied requests).
    pub maintenance_mode: bool,
    /// `server.message:` — the text of maintenance answers.
    pub message: String,
    /// `server.tls:` — HTTPS on the listener (owned by `cliproxy-netguard`).
    pub tls: cliproxy_netguard::TlsConfig,
    /// `server.security:` — IP lists, per-IP rate limits, security headers, request
    /// validation (owned by `cliproxy-netguard`).
    pub security: cliproxy_netguard::SecurityConfig,
    /// `server.rate_limit:` — the global rate limit (owned by `cliproxy-netguard`).
    pub rate_limit: cliproxy_netguard::GlobalRateLimitConfig,
    /// `server.cors:` — the web origins whose pages may call the client API (none by default).
    pub cors: CorsConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 8317,
            shutdown_timeout: Duration::from_secs(30),
            limits: LimitsConfig::default(),
            trusted_proxies: Vec::new(),
            forwarded_header: cliproxy_netguard::ForwardedHeader::default(),
            maintenance_mode: false,
            message: cliproxy_netguard::DEFAULT_MAINTENANCE_MESSAGE.to_owned(),
            tls: cliproxy_netguard::TlsConfig::default(),
            security: cliproxy_netguard::SecurityConfig::default(),
            rate_limit: cliproxy_netguard::GlobalRateLimitConfig::default(),
            cors: CorsConfig::default(),
        }
    }
}

/// The `server.cors:` section. Off unless `allowed_origins` lists origins: then a browser page
/// served from one of them may call the client API (its preflight is answered without a key,
/// its replies carry `Access-Control-Allow-Origin` with its own origin, never `*`). Pages from
/// any other origin get no CORS header, so the browser keeps the answer from them. The
/// management API never answers a browser, listed origin or not.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct CorsConfig {
    /// Origins as browsers send them: `scheme://host[:port]` (http or https, no path, no
    /// default port, no `*`).
    pub allowed_origins: Vec<String>,
    /// Request headers a page may send: the key headers and API headers of each provider's
    /// SDK by default.
    pub allowed_headers: Vec<String>,
    /// How long a browser may reuse a preflight's answer (`Access-Control-Max-Age`).
    #[serde(with = "cliproxy_core::duration")]
    pub max_age: Duration,
}

impl Default for CorsConfig {
    fn default() -> Self {
        // The headers the OpenAI, Anthropic and Google SDKs send from a browser: the key
        // headers, each API's version and beta headers, and the SDKs' telemetry headers (the
        // upstream allow-lists decide which of them go further).
        let headers = [
            "authorization",
            "content-type",
            "x-api-key",
            "anthropic-version",
            "anthropic-beta",
            "anthropic-dangerous-direct-browser-access",
            "x-goog-api-key",
            "x-goog-api-client",
            "openai-beta",
            "openai-organization",
            "openai-project",
            "x-stainless-arch",
            "x-stainless-lang",
            "x-stainless-os",
            "x-stainless-package-version",
            "x-stainless-retry-count",
            "x-stainless-runtime",
            "x-stainless-runtime-version",
            "x-stainless-timeout",
            "x-stainless-helper-method",
        ];
        Self {
            allowed_origins: Vec::new(),
            allowed_headers: headers.into_iter().map(str::to_owned).collect(),
            max_age: Duration::from_secs(600),
        }
    }
}

impl CorsConfig {
    /// The problems with the lists, each naming its key.
    fn problems(&self) -> Vec<String> {
        let origins = self.allowed_origins.iter().enumerate().filter_map(|(i, origin)| {
            origin_problem(origin)
                .map(|why| format!("`server.cors.allowed_origins[{i}]` {origin:?}: {why}"))
        });
        let headers = self
            .allowed_headers
            .iter()
            .enumerate()
            .filter(|(_, name)| http::HeaderName::try_from(name.as_str()).is_err())
            .map(|(i, _)| format!("`server.cors.allowed_headers[{i}]` is not a valid header name"));
        origins.chain(headers).collect()
    }
}

/// Why `origin` can never equal an `Origin` header a browser sends, if it cannot: a browser
/// sends `scheme://host[:port]`, lower-case, without the scheme's default port.
fn origin_problem(origin: &str) -> Option<&'static str> {
    const FORM: &str = "an origin is scheme://host[:port]";
    if origin.contains('*') {
        return Some(
            "`*` is not allowed: list each origin (a wildcard would let any site's pages use the keys typed into them)",
        );
    }
    let Some((scheme, rest)) = origin.split_once("://") else { return Some(FORM) };
    let default_port = match scheme {
        "http" => ":80",
        "https" => ":443",
        _ => return Some("the scheme is http or https"),
    };
    if rest.contains(['/', '?', '#']) {
        return Some(
            "no path, query or fragment (and no trailing `/`): an origin is scheme://host[:port]",
        );
    }
    if rest.is_empty() || rest.contains('@') || rest.starts_with(':') {
        return Some(FORM);
    }
    // The port is what follows the last `:` outside an IPv6 literal's brackets.
    let (host, port) = match rest.rfind(':').filter(|&at| !rest[at..].contains(']')) {
        Some(at) => (&rest[..at], Some(&rest[at + 1..])),
        None => (rest, None),
    };
    if let Some(port) = port {
        if !port.bytes().all(|b| b.is_ascii_digit()) || port.parse::<u16>().map_or(true, |p| p == 0)
        {
            return Some("the port is a number from 1 to 65535");
        }
        if rest.ends_with(default_port) {
            return Some("leave out the scheme's default port (browsers do)");
        }
    }
    let valid_host = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => {
            !host.is_empty()
                && host.split('.').all(|label| {
                    !label.is_empty()
                        && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                })
        }
    };
    if !valid_host {
        return Some(FORM);
    }
    if origin.bytes().any(|b| b.is_ascii_uppercase()) {
        return Some("write it in lower case, as browsers send it");
    }
    None
}

/// The `server.limits:` section. Defaults follow Envoy's edge-proxy guidance where it has one.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct LimitsConfig {
    /// Connections served at once; further connections are closed at accept.
    pub max_connections: NonZeroUsize,
    /// Connections one client address holds at once (IPv6: one /64); further connections from
    /// it are closed at accept. `0` turns the cap off. Peers in `server.trusted_proxies` are
    /// exempt: every client behind a proxy shares its address, so they get the global cap only.
    pub max_connections_per_ip: usize,
    /// Time a client has to send the complete request head.
    #[serde(with = "cliproxy_core::duration")]
    pub header_read_timeout: Duration,
    /// Most request headers accepted (HTTP/1.1).
    pub max_headers: NonZeroUsize,
    /// Most bytes of request headers accepted.
    pub max_header_bytes: NonZeroUsize,
    /// Largest request body accepted; larger ones get 413.
    pub max_body_bytes: NonZeroUsize,
    /// Time a client has to send the whole request body, counted from the end of the request
    /// head; beyond it the request gets 408 and the connection is closed.
    #[serde(with = "cliproxy_core::duration")]
    pub body_read_timeout: Duration,
    /// HTTP/2 streams per connection.
    pub http2_max_streams: NonZeroU32,
    /// Time to open a TCP (and TLS) connection to an upstream.
    #[serde(with = "cliproxy_core::duration")]
    pub upstream_connect_timeout: Duration,
    /// Time from sending a request upstream to its response head. A non-streamed reply is only
    /// sent when generation is complete, so this is generous by default.
    #[serde(with = "cliproxy_core::duration")]
    pub upstream_first_byte_timeout: Duration,
    /// Longest silence allowed between two chunks of an upstream response body.
    #[serde(with = "cliproxy_core::duration")]
    pub stream_idle_timeout: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_connections: NonZeroUsize::new(10_000).unwrap_or(NonZeroUsize::MIN),
            // A coding CLI opens a handful of HTTP/1.1 connections; 64 leaves room for several
            // clients behind one NAT while one address cannot take every slot.
            max_connections_per_ip: 64,
            header_read_timeout: Duration::from_secs(10),
            max_headers: NonZeroUsize::new(100).unwrap_or(NonZeroUsize::MIN),
            max_header_bytes: NonZeroUsize::new(64 * 1024).unwrap_or(NonZeroUsize::MIN),
            max_body_bytes: NonZeroUsize::new(10 * 1024 * 1024).unwrap_or(NonZeroUsize::MIN),
            // Real clients send an LLM request's body at once, right after its head.
            body_read_timeout: Duration::from_secs(15),
            http2_max_streams: NonZeroU32::new(100).unwrap_or(NonZeroU32::MIN),
            upstream_connect_timeout: Duration::from_secs(10),
            upstream_first_byte_timeout: Duration::from_secs(300),
            stream_idle_timeout: Duration::from_secs(120),
        }
    }
}

/// The `providers:` section: provider name → provider.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct ProvidersConfig(pub BTreeMap<String, ProviderConfig>);

/// One provider under `providers.<name>`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ProviderConfig {
    /// Which API the provider speaks.
    #[serde(rename = "type")]
    pub kind: ProviderKind,
    /// Origin with an optional path prefix; the endpoint path the client called is appended.
    /// Defaults to the provider's public API.
    #[serde(default)]
    pub base_url: Option<BaseUrl>,
    /// Model names this provider serves: exact names or `*` globs.
    #[serde(default)]
    pub models: Vec<String>,
    /// Extra PEM CA certificates trusted for this provider, beside the bundled web PKI roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Mock only: time before the reply starts, and between streamed events.
    #[serde(default, with = "cliproxy_core::duration")]
    pub latency: Duration,
    /// Largest `max_tokens` a request to this provider may ask for (no cap unless set). With
    /// `server.security.request_validation.max_tokens` set too, the stricter of the two holds.
    #[serde(default)]
    pub max_tokens: Option<NonZeroU32>,
    /// Requests and tokens per minute sent to this provider, all clients together.
    #[serde(default)]
    pub rate_limit: Option<cliproxy_core::RateLimit>,
    /// Tokens per day, week or month sent to this provider, all clients together.
    #[serde(default)]
    pub quota: Option<cliproxy_core::Quota>,
    /// Lets `base_url` (and the `base_url` of this provider's credentials) be `http://` to a
    /// host that is not loopback. Off: the key or token would cross the network in clear.
    #[serde(default)]
    pub allow_insecure: bool,
}

/// The API a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ProviderKind {
    /// OpenAI and OpenAI-compatible servers.
    Openai,
    /// Anthropic.
    Claude,
    /// Google Gemini (Generative Language API).
    Gemini,
    /// The built-in deterministic provider; answers in whichever format the client called.
    Mock,
}

impl ProviderKind {
    /// The lowercase name used in config and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Openai => "openai",
            Self::Claude => "claude",
            Self::Gemini => "gemini",
            Self::Mock => "mock",
        }
    }

    /// The public API origin used when `base_url` is not configured.
    pub(crate) const fn default_base_url(self) -> &'static str {
        match self {
            Self::Openai => "https://api.openai.com",
            Self::Claude => "https://api.anthropic.com",
            Self::Gemini => "https://generativelanguage.googleapis.com",
            Self::Mock => "http://mock.invalid",
        }
    }
}

/// An upstream base URL: `http` or `https`, a host, an optional port and path prefix; no
/// query, no fragment, no user info.
#[derive(Clone, PartialEq, Eq)]
pub struct BaseUrl {
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    /// Path prefix without a trailing slash; empty for none.
    prefix: String,
}

impl BaseUrl {
    /// Parses and checks a base URL.
    pub fn parse(text: &str) -> Result<Self, String> {
        // The messages never repeat the text: a URL may carry a key in its query or user
        // info, and these errors reach logs, audit lines and API answers.
        let uri: http::Uri = text.parse().map_err(|_| {
            "is not a valid URL; write it as https://host[:port][/prefix]".to_owned()
        })?;
        let scheme = uri
            .scheme()
            .cloned()
            .ok_or_else(|| "has no scheme; write it as https://host[:port][/prefix]".to_owned())?;
        if scheme != http::uri::Scheme::HTTP && scheme != http::uri::Scheme::HTTPS {
            return Err("uses a scheme other than http:// or https://".to_owned());
        }
        let authority = uri.authority().cloned().ok_or_else(|| "has no host".to_owned())?;
        if authority.as_str().contains('@') {
            return Err(
                "carries user info; a base URL holds no credentials (put them in the vault)"
                    .to_owned(),
            );
        }
        if uri.query().is_some() || text.contains('#') {
            return Err(
                "has a query or fragment; a base URL takes neither (keys belong in the vault)"
                    .to_owned(),
            );
        }
        let prefix = uri.path().trim_end_matches('/').to_owned();
        Ok(Self { scheme, authority, prefix })
    }

    /// The upstream URI for `path_and_query` (which starts with `/`).
    pub fn join(&self, path_and_query: &str) -> Result<http::Uri, http::Error> {
        http::Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(format!("{}{}", self.prefix, path_and_query))
            .build()
    }

    /// Whether the scheme is https.
    pub fn is_https(&self) -> bool {
        self.scheme == http::uri::Scheme::HTTPS
    }

    /// The host, as the URL spells it (IPv6 in brackets).
    pub fn host(&self) -> &str {
        self.authority.host()
    }

    /// Whether the host is loopback: `localhost`, 127.0.0.0/8 or `::1`.
    pub fn is_loopback(&self) -> bool {
        let host = self.authority.host();
        let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        host.eq_ignore_ascii_case("localhost")
            || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }

    /// Refuses `http://` to a host that is not loopback unless `allow_insecure`: every request
    /// carries a provider key or token, which would cross the network in clear. The error
    /// completes a sentence that starts with the key or the credential it is about.
    pub fn check_transport(&self, allow_insecure: bool) -> Result<(), String> {
        if self.is_https() || self.is_loopback() || allow_insecure {
            Ok(())
        } else {
            Err("is http:// to a host that is not loopback: the provider key would travel in clear; use https://".to_owned())
        }
    }
}

impl fmt::Display for BaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}{}", self.scheme, self.authority, self.prefix)
    }
}

impl fmt::Debug for BaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl<'de> Deserialize<'de> for BaseUrl {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        BaseUrl::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// The `management:` section. Without `secret_key` the management API does not exist (every
/// route answers 404).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct ManagementConfig {
    /// The management key, usually `${CLIPROXY_MANAGEMENT_KEY}`; at least 16 characters.
    /// Empty or absent turns the management API off.
    pub secret_key: Option<cliproxy_core::Secret>,
    /// Accept management calls from non-loopback peers.
    pub allow_remote: bool,
    /// Failed authentications from one peer address before it is banned.
    pub max_failures: NonZeroU32,
    /// How long a banned peer stays banned.
    #[serde(with = "cliproxy_core::duration")]
    pub ban: Duration,
}

impl Default for ManagementConfig {
    fn default() -> Self {
        Self {
            secret_key: None,
            allow_remote: false,
            max_failures: NonZeroU32::new(5).unwrap_or(NonZeroU32::MIN),
            ban: Duration::from_secs(30 * 60),
        }
    }
}

impl ManagementConfig {
    /// The management key when the API is on.
    pub fn key(&self) -> Option<&cliproxy_core::Secret> {
        self.secret_key.as_ref().filter(|key| !key.is_empty())
    }
}

/// The `logging:` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct LoggingConfig {
    /// Least severe level written.
    pub level: LogLevel,
    /// `json` (one object per line, for collectors) or `text` (for people).
    pub format: LogFormat,
    /// `logging.audit:` — the hash-chained audit log (owned by `cliproxy-audit`).
    pub audit: cliproxy_audit::AuditConfig,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self {
            level: LogLevel::Info,
            format: LogFormat::Json,
            audit: cliproxy_audit::AuditConfig::default(),
        }
    }
}

/// Log levels, most severe first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs, reason = "the level names say it all")]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

/// Log line formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    Text,
}

/// A configuration that could not be loaded: every problem found, each naming its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    problems: Vec<String>,
}

impl ConfigError {
    /// One problem, already phrased with its key.
    pub fn new(problem: impl Into<String>) -> Self {
        Self { problems: vec![problem.into()] }
    }

    /// The problems, one sentence each.
    pub fn problems(&self) -> &[String] {
        &self.problems
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.problems.as_slice() {
            [one] => write!(f, "invalid configuration: {one}"),
            many => {
                write!(f, "invalid configuration ({} problems):", many.len())?;
                for problem in many {
                    write!(f, "\n  - {problem}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ConfigError {}

/// Where the configuration comes from.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ConfigSource {
    /// `--config PATH` given explicitly: the file must exist.
    File(PathBuf),
    /// No `--config`: `./config.yaml` if it exists, else the built-in defaults.
    Default,
}

/// The environment variable prefix; `CLIPROXY_SERVER__PORT=9000` sets `server.port`.
pub const ENV_PREFIX: &str = "CLIPROXY_";

impl Config {
    /// The figment behind [`Config::load`]: defaults, then the YAML file with `${VAR}`
    /// interpolation, then `CLIPROXY_<SECTION>__<KEY>` variables.
    pub fn figment(source: &ConfigSource) -> Figment {
        let file = match source {
            ConfigSource::File(path) => Yaml::file_exact(path),
            ConfigSource::Default => Yaml::file("config.yaml"),
        };
        // Only double-underscore variables are config keys: `CLIPROXY_CLIENT_KEY` and friends
        // are values meant for `${VAR}` interpolation and must not be read as unknown keys.
        let env = Env::prefixed(ENV_PREFIX).filter(|key| key.as_str().contains("__")).split("__");
        Figment::new().merge(Interpolated(file)).merge(env)
    }

    /// Loads and checks the configuration. Every error names the key it is about.
    pub fn load(source: &ConfigSource) -> Result<Self, ConfigError> {
        if let ConfigSource::File(path) = source
            && !path.is_file()
        {
            return Err(ConfigError::new(format!(
                "config file {} does not exist or is not a file (given with --config)",
                path.display()
            )));
        }
        Self::from_figment(&Self::figment(source))
    }

    /// Loads a configuration from YAML text alone (no file, no environment), as `demo` does.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        Self::from_figment(&Figment::from(Yaml::string(text)))
    }

    /// Extracts and checks a configuration from any figment (tests build their own).
    pub fn from_figment(figment: &Figment) -> Result<Self, ConfigError> {
        let config: Config = figment.extract().map_err(describe_figment_error)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what types alone cannot express.
    fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        for (name, provider) in &self.providers.0 {
            let key = format!("providers.{name}");
            if !valid_name(name) {
                problems.push(format!(
                    "`{key}`: provider names use letters, digits, `.`, `_` and `-` (at most 64)"
                ));
            }
            if provider.kind != ProviderKind::Mock && provider.models.is_empty() {
                problems.push(format!(
                    "`{key}.models` is empty: list the model names (or `*` globs) this provider serves"
                ));
            }
            if provider.models.iter().any(|m| m.is_empty()) {
                problems.push(format!("`{key}.models` contains an empty model name"));
            }
            if provider.kind == ProviderKind::Mock {
                if provider.base_url.is_some() || provider.ca_file.is_some() {
                    problems.push(format!(
                        "`{key}`: type mock is built in and takes no base_url or ca_file"
                    ));
                }
            } else if !provider.latency.is_zero() {
                problems.push(format!("`{key}.latency` applies only to providers of type mock"));
            }
            if let Some(url) = &provider.base_url
                && let Err(e) = url.check_transport(provider.allow_insecure)
            {
                problems.push(format!("`{key}.base_url` {e}; or set `{key}.allow_insecure: true`"));
            }
            if provider.kind != ProviderKind::Mock && !self.egress.allowed_hosts.is_empty() {
                let default = provider.kind.default_base_url();
                let host = match &provider.base_url {
                    Some(url) => url.host().to_owned(),
                    None => {
                        BaseUrl::parse(default).map(|url| url.host().to_owned()).unwrap_or_default()
                    }
                };
                if !self.egress.allows(&host) {
                    let which = if provider.base_url.is_some() {
                        "base_url"
                    } else {
                        "base_url (the default)"
                    };
                    problems.push(format!(
                        "`{key}.{which}`: host {host} is not in `egress.allowed_hosts`"
                    ));
                }
            }
        }
        problems.extend(self.egress.problems());
        problems.extend(self.server.cors.problems());
        if let Some(key) = self.management.key()
            && key.expose().trim().len() < 16
        {
            problems.push(
                "`management.secret_key` is shorter than 16 characters; use a random key (`cliproxy-server keygen` prints one)"
                    .to_owned(),
            );
        }
        if http::HeaderName::try_from(self.auth.device_fingerprint.header.as_str()).is_err() {
            problems.push(format!(
                "`auth.device_fingerprint.header` `{}` is not a valid HTTP header name",
                self.auth.device_fingerprint.header
            ));
        }
        if problems.is_empty() { Ok(()) } else { Err(ConfigError { problems }) }
    }
}

impl ProviderConfig {
    /// The models a provider of this kind serves when its `models` list is empty.
    pub fn effective_models(&self) -> Vec<String> {
        if self.models.is_empty() && self.kind == ProviderKind::Mock {
            vec!["mock-*".to_owned()]
        } else {
            self.models.clone()
        }
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Turns figment's errors into sentences that name the full key and where the value came from.
fn describe_figment_error(error: figment::Error) -> ConfigError {
    let problems = error.into_iter().map(|e| describe_one(&e)).collect();
    ConfigError { problems }
}

fn describe_one(error: &figment::Error) -> String {
    use figment::error::Kind;
    let mut path = error.path.clone();
    let detail = match &error.kind {
        Kind::UnknownField(field, expected) => {
            if path.last() != Some(field) {
                path.push(field.clone());
            }
            format!("unknown key; expected one of: {}", expected.join(", "))
        }
        Kind::MissingField(field) => {
            if path.last().map(String::as_str) != Some(field.as_ref()) {
                path.push(field.to_string());
            }
            "missing required key".to_owned()
        }
        Kind::UnknownVariant(found, expected) => {
            format!("unknown value `{found}`; expected one of: {}", expected.join(", "))
        }
        Kind::InvalidType(actual, expected) => {
            format!("expected {expected}, found {}", redact_actual(actual, &path))
        }
        Kind::InvalidValue(actual, expected) => {
            format!("invalid value {}: expected {expected}", redact_actual(actual, &path))
        }
        Kind::Message(message) => message.clone(),
        other => other.to_string(),
    };
    let key = render_key(&path);
    let source = match &error.metadata {
        Some(metadata) if metadata.name.contains("environment") => {
            let name = path.iter().map(|p| p.to_uppercase()).collect::<Vec<_>>().join("__");
            format!(" (from environment variable {ENV_PREFIX}{name})")
        }
        Some(metadata) => match &metadata.source {
            Some(source) => format!(" (from {source})"),
            None => format!(" (from {})", metadata.name),
        },
        None => String::new(),
    };
    if key.is_empty() { format!("{detail}{source}") } else { format!("`{key}`: {detail}{source}") }
}

/// Renders `["auth", "api_keys", "0"]` as `auth.api_keys[0]`.
fn render_key(path: &[String]) -> String {
    let mut key = String::new();
    for part in path {
        if part.parse::<usize>().is_ok() {
            key.push_str(&format!("[{part}]"));
        } else {
            if !key.is_empty() {
                key.push('.');
            }
            key.push_str(part);
        }
    }
    key
}

/// Echoes a rejected value unless it may be a secret: values under a key that names a key,
/// token or secret are never printed, and long strings are cut.
fn redact_actual(actual: &figment::error::Actual, path: &[String]) -> String {
    use figment::error::Actual;
    let sensitive =
        path.iter().any(|p| p.contains("key") || p.contains("token") || p.contains("secret"));
    match actual {
        Actual::Str(_) if sensitive => "a string (value not shown)".to_owned(),
        Actual::Str(s) if s.chars().count() > 40 => {
            format!("a string of {} characters (value not shown)", s.chars().count())
        }
        other => other.to_string(),
    }
}

/// A provider whose string values have `${VAR}` replaced by the environment variable `VAR`.
/// `$${` writes a literal `${`.
struct Interpolated<P>(P);

impl<P: Provider> Provider for Interpolated<P> {
    fn metadata(&self) -> Metadata {
        self.0.metadata()
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut data = self.0.data()?;
        for dict in data.values_mut() {
            for (key, value) in dict.iter_mut() {
                interpolate_value(value, &mut vec![key.clone()], &|name| std::env::var(name).ok())?;
            }
        }
        Ok(data)
    }
}

#[allow(clippy::result_large_err, reason = "figment's Provider trait fixes the error type")]
fn interpolate_value(
    value: &mut Value,
    path: &mut Vec<String>,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(), figment::Error> {
    match value {
        Value::String(tag, text) if text.contains('$') => {
            let replaced = interpolate_str(text, lookup).map_err(|message| {
                let mut error = figment::Error::from(message);
                error.path = path.clone();
                error
            })?;
            *value = Value::String(*tag, replaced);
        }
        Value::Dict(_, dict) => {
            for (key, inner) in dict.iter_mut() {
                path.push(key.clone());
                interpolate_value(inner, path, lookup)?;
                path.pop();
            }
        }
        Value::Array(_, items) => {
            for (index, inner) in items.iter_mut().enumerate() {
                path.push(index.to_string());
                interpolate_value(inner, path, lookup)?;
                path.pop();
            }
        }
        _ => {}
    }
    Ok(())
}

/// Replaces `${NAME}` in `text`. Errors say which variable is missing or malformed, never the
/// text around it (which may be a secret written literally).
fn interpolate_str(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(escaped) = after.strip_prefix("${") {
            out.push_str("${");
            rest = escaped;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body
                .find('}')
                .ok_or_else(|| "unterminated `${` (write `$${` for a literal `${`)".to_owned())?;
            let name = &body[..end];
            if name.is_empty()
                || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                || name.as_bytes()[0].is_ascii_digit()
            {
                return Err(format!(
                    "`${{{}}}` is not a variable reference: names use letters, digits and `_`",
                    name.chars().take(40).collect::<String>()
                ));
            }
            let value =
                lookup(name).ok_or_else(|| format!("environment variable `{name}` is not set"))?;
            out.push_str(&value);
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::result_large_err, reason = "figment::Jail closures return figment's error")]
mod tests {
    use figment::Jail;

    use super::*;

    fn load_in_jail(jail: &mut Jail, yaml: &str) -> Result<Config, ConfigError> {
        jail.create_file("config.yaml", yaml).map_err(|e| ConfigError::new(e.to_string()))?;
        Config::load(&ConfigSource::File("config.yaml".into()))
    }

    #[test]
    fn defaults_are_secure_and_complete() {
        let config = Config::from_figment(&Figment::new()).unwrap();
        assert_eq!(config.server.host, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(config.server.port, 8317);
        assert_eq!(config.server.limits.header_read_timeout, Duration::from_secs(10));
        assert_eq!(config.server.limits.max_headers.get(), 100);
        assert_eq!(config.server.limits.http2_max_streams.get(), 100);
        assert!(config.providers.0.is_empty());
        assert_eq!(config.logging.format, LogFormat::Json);
    }

    #[test]
    fn the_hardened_deploy_config_loads_with_every_guard_on() {
        Jail::expect_with(|jail| {
            jail.set_env("CLIPROXY_CLIENT_KEY", "client-key-0123456789abcdef");
            jail.set_env("CLIPROXY_ENCRYPTION_KEY", "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=");
            jail.set_env("CLIPROXY_MANAGEMENT_KEY", "management-key-0123456789");
            let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/config.hardened.yaml");
            let config = Config::load(&ConfigSource::File(path.into())).unwrap();
            let server = &config.server;
            assert!(server.tls.enabled && server.tls.cipher_suites.len() == 9);
            assert!(server.security.ip_allowlist.enabled && server.security.ip_allowlist.deny_all);
            assert!(server.security.ip_denylist.enabled);
            assert!(server.security.rate_limiting.enabled && server.rate_limit.enabled);
            assert!(server.security.headers.enabled && server.security.request_validation.enabled);
            let abuse = &server.security.cooldown_abuse;
            assert!(abuse.enabled && abuse.max_per_window.get() == 20);
            assert_eq!((abuse.window.as_secs(), abuse.throttle_for.as_secs()), (60, 300));
            assert_eq!(server.trusted_proxies.len(), 1);
            assert!(
                config.auth.api_keys[0].quota.is_some()
                    && config.auth.api_keys[0].rate_limit.is_some()
            );
            assert!(config.providers.0["claude"].quota.is_some());
            // Claude Code asks for up to 64000 output tokens on its first request: the caps
            // (the stricter of the two holds) must let that through.
            let global = server.security.request_validation.max_tokens.map(|cap| cap.get());
            let claude = config.providers.0["claude"].max_tokens.map(|cap| cap.get());
            assert!(global.unwrap_or(u32::MAX).min(claude.unwrap_or(u32::MAX)) >= 64_000);
            assert!(config.state.path.is_some());
            assert!(config.logging.audit.enabled && config.logging.audit.events.len() == 7);
            assert!(config.metrics.enabled && config.metrics.host.is_loopback());
            assert_eq!(config.alerts.len(), 2);
            // The suite list is valid for rustls with ring.
            cliproxy_netguard::tls::select_cipher_suites(
                &server.tls.cipher_suites,
                server.tls.min_version,
            )
            .unwrap();
            Ok(())
        });
    }

    #[test]
    fn file_then_env_with_typed_fields() {
        Jail::expect_with(|jail| {
            jail.set_env("CLIPROXY_SERVER__PORT", "9001");
            jail.set_env("CLIPROXY_SERVER__LIMITS__STREAM_IDLE_TIMEOUT", "45s");
            // A plain CLIPROXY_ variable is a value for interpolation, not a key.
            jail.set_env("CLIPROXY_CLIENT_KEY", "client-key-0123456789abcdef");
            let config = load_in_jail(
                jail,
                r#"
server:
  host: "::1"
  port: 8000
  shutdown_timeout: 5m
  limits: {upstream_first_byte_timeout: 1h, max_body_bytes: 1024}
auth:
  api_keys: ["${CLIPROXY_CLIENT_KEY}"]
providers:
  claude: {type: claude, base_url: "https://api.anthropic.com/", models: ["claude-*"]}
  local: {type: openai, base_url: "http://127.0.0.1:11434/v1", models: [llama3]}
  demo: {type: mock, latency: 20ms}
logging: {level: debug, format: text}
"#,
            )
            .unwrap();
            assert_eq!(config.server.port, 9001, "env overrides the file");
            assert_eq!(config.server.host, "::1".parse::<IpAddr>().unwrap());
            assert_eq!(config.server.shutdown_timeout, Duration::from_secs(300));
            assert_eq!(config.server.limits.stream_idle_timeout, Duration::from_secs(45));
            assert_eq!(config.server.limits.upstream_first_byte_timeout, Duration::from_secs(3600));
            assert_eq!(config.server.limits.max_body_bytes.get(), 1024);
            let local = &config.providers.0["local"];
            assert_eq!(local.base_url.as_ref().unwrap().to_string(), "http://127.0.0.1:11434/v1");
            let claude = &config.providers.0["claude"];
            assert_eq!(claude.base_url.as_ref().unwrap().to_string(), "https://api.anthropic.com");
            assert_eq!(config.providers.0["demo"].latency, Duration::from_millis(20));
            assert_eq!(config.providers.0["demo"].effective_models(), ["mock-*"]);
            assert_eq!(config.logging.level, LogLevel::Debug);
            let keys = config.auth.client_keys().unwrap();
            assert!(keys.authenticate(b"client-key-0123456789abcdef").is_some());
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_name_the_full_path() {
        Jail::expect_with(|jail| {
            let error =
                load_in_jail(jail, "server:\n  limits:\n    bogus: 1\n").unwrap_err().to_string();
            assert!(error.contains("`server.limits.bogus`"), "{error}");
            assert!(error.contains("unknown key"), "{error}");
            let error = load_in_jail(jail, "nope: 1\n").unwrap_err().to_string();
            assert!(error.contains("`nope`"), "{error}");
            let error =
                load_in_jail(jail, "providers:\n  x: {type: openai, models: [a], foo: 1}\n")
                    .unwrap_err()
                    .to_string();
            assert!(error.contains("`providers.x.foo`"), "{error}");
            Ok(())
        });
    }

    #[test]
    fn env_errors_name_the_variable() {
        Jail::expect_with(|jail| {
            jail.set_env("CLIPROXY_SERVER__PORT", "eighty");
            let error = Config::load(&ConfigSource::Default).unwrap_err().to_string();
            assert!(error.contains("`server.port`"), "{error}");
            assert!(error.contains("CLIPROXY_SERVER__PORT"), "{error}");
            Ok(())
        });
    }

    #[test]
    fn bad_values_name_the_key() {
        Jail::expect_with(|jail| {
            for (yaml, key, hint) in [
                ("server: {port: 70000}\n", "`server.port`", "u16"),
                ("server: {shutdown_timeout: 30x}\n", "`server.shutdown_timeout`", "30s"),
                ("server: {shutdown_timeout: 30}\n", "`server.shutdown_timeout`", "30s"),
                ("server: {limits: {max_body_bytes: 0}}\n", "`server.limits.max_body_bytes`", ""),
                ("server: {host: example.com}\n", "`server.host`", "IP"),
                ("providers: {x: {type: azure, models: [a]}}\n", "`providers.x.type`", "openai"),
                (
                    "providers: {x: {type: openai, base_url: 'ftp://h', models: [a]}}\n",
                    "`providers.x.base_url`",
                    "http",
                ),
                (
                    "providers: {x: {type: openai, base_url: 'https://h/?a=b', models: [a]}}\n",
                    "`providers.x.base_url`",
                    "query",
                ),
                ("providers: {x: {type: openai}}\n", "`providers.x.models`", "model"),
                (
                    "providers: {x: {type: openai, models: [a], latency: 1s}}\n",
                    "`providers.x.latency`",
                    "mock",
                ),
                ("providers: {'a/b': {type: mock}}\n", "`providers.a/b`", "letters"),
                ("logging: {format: xml}\n", "`logging.format`", "json"),
            ] {
                let error = load_in_jail(jail, yaml).unwrap_err().to_string();
                assert!(error.contains(key), "{yaml} → {error}");
                assert!(error.contains(hint), "{yaml} → {error}");
            }
            Ok(())
        });
    }

    #[test]
    fn unset_variable_names_key_and_variable() {
        Jail::expect_with(|jail| {
            let error = load_in_jail(jail, "auth:\n  api_keys: [\"${CLIPROXY_UNSET_FOR_TEST}\"]\n")
                .unwrap_err()
                .to_string();
            assert!(error.contains("`auth.api_keys[0]`"), "{error}");
            assert!(error.contains("CLIPROXY_UNSET_FOR_TEST"), "{error}");
            Ok(())
        });
    }

    #[test]
    fn missing_explicit_file_is_an_error() {
        let error = Config::load(&ConfigSource::File("/nonexistent/cliproxy.yaml".into()))
            .unwrap_err()
            .to_string();
        assert!(error.contains("/nonexistent/cliproxy.yaml"), "{error}");
    }

    #[test]
    fn rejected_secret_values_are_not_echoed() {
        Jail::expect_with(|jail| {
            // A secret pasted into the wrong key is not echoed back into logs.
            let planted = "sk-planted-0123456789abcdef0123456789abcdef";
            let error = load_in_jail(jail, &format!("server: {{port: \"{planted}\"}}\n"))
                .unwrap_err()
                .to_string();
            assert!(!error.contains(planted), "{error}");
            assert!(error.contains("`server.port`"), "{error}");
            let short = "sk-short-secret";
            let yaml = format!("auth:\n  api_keys: [{{name: x, key: {{token: \"{short}\"}}}}]\n");
            let error = load_in_jail(jail, &yaml).unwrap_err().to_string();
            assert!(!error.contains(short), "{error}");
            Ok(())
        });
    }

    #[test]
    fn interpolation_rules() {
        let lookup = |name: &str| (name == "A").then(|| "alpha".to_owned());
        assert_eq!(interpolate_str("x${A}y", &lookup).unwrap(), "xalphay");
        assert_eq!(interpolate_str("$${A} $5 $", &lookup).unwrap(), "${A} $5 $");
        assert!(interpolate_str("${B}", &lookup).unwrap_err().contains("`B` is not set"));
        assert!(interpolate_str("${A", &lookup).unwrap_err().contains("unterminated"));
        assert!(interpolate_str("${a-b}", &lookup).unwrap_err().contains("not a variable"));
        assert!(interpolate_str("${}", &lookup).is_err());
    }

    #[test]
    fn plain_http_base_url_is_refused_off_loopback_unless_allowed() {
        Jail::expect_with(|jail| {
            for host in ["api.example.com", "10.0.0.7", "[2001:db8::1]:8080", "127.0.0.1.nip.io"] {
                let yaml = format!(
                    "providers: {{x: {{type: openai, base_url: 'http://{host}/v1', models: [a]}}}}\n"
                );
                let error = load_in_jail(jail, &yaml).unwrap_err().to_string();
                assert!(error.contains("`providers.x.base_url`"), "{host}: {error}");
                assert!(error.contains("`providers.x.allow_insecure: true`"), "{host}: {error}");
                assert!(!error.contains(host), "the URL is never repeated: {error}");
            }
            for host in ["127.0.0.1:11434", "127.8.9.10", "localhost:8080", "LOCALHOST", "[::1]:9"]
            {
                let yaml = format!(
                    "providers: {{x: {{type: openai, base_url: 'http://{host}/v1', models: [a]}}}}\n"
                );
                load_in_jail(jail, &yaml).map_err(|e| format!("{host}: {e}")).unwrap();
            }
            let config = load_in_jail(
                jail,
                "providers: {x: {type: openai, base_url: 'http://10.0.0.7/v1', models: [a], allow_insecure: true}}\n",
            )
            .unwrap();
            assert!(config.providers.0["x"].allow_insecure);
            load_in_jail(
                jail,
                "providers: {x: {type: openai, base_url: 'https://10.0.0.7', models: [a]}}\n",
            )
            .unwrap();
            Ok(())
        });
    }

    #[test]
    fn egress_allow_list_matches_hosts_suffixes_and_addresses() {
        let egress = EgressConfig {
            allowed_hosts: vec![
                "API.openai.com".into(),
                "*.example.com".into(),
                "::1".into(),
                "10.0.0.7".into(),
            ],
        };
        for yes in [
            "api.openai.com",
            "api.openai.com.",
            "a.example.com",
            "b.a.EXAMPLE.com",
            "[::1]",
            "10.0.0.7",
        ] {
            assert!(egress.allows(yes), "{yes}");
        }
        for no in [
            "openai.com",
            "api.openai.com.evil",
            "example.com",
            "evilexample.com",
            ".example.com",
            "[::2]",
            "10.0.0.70",
        ] {
            assert!(!egress.allows(no), "{no}");
        }
        assert!(EgressConfig::default().allows("anything.example"), "empty: no restriction");
    }

    #[test]
    fn egress_allow_list_covers_every_provider_base_url_at_load() {
        Jail::expect_with(|jail| {
            let error = load_in_jail(
                jail,
                "egress: {allowed_hosts: [api.anthropic.com]}\n\
                 providers:\n  claude: {type: claude, models: [c]}\n  oa: {type: openai, models: [g]}\n  \
                 local: {type: openai, base_url: 'http://127.0.0.1:9', models: [l]}\n  demo: {type: mock}\n",
            )
            .unwrap_err()
            .to_string();
            assert!(error.contains("`providers.oa.base_url (the default)`: host api.openai.com is not in `egress.allowed_hosts`"), "{error}");
            assert!(error.contains("`providers.local.base_url`: host 127.0.0.1"), "{error}");
            assert!(
                !error.contains("providers.claude") && !error.contains("providers.demo"),
                "{error}"
            );
            let error = load_in_jail(jail, "egress: {allowed_hosts: ['https://api.openai.com']}\n")
                .unwrap_err()
                .to_string();
            assert!(error.contains("`egress.allowed_hosts[0]`"), "{error}");
            load_in_jail(
                jail,
                "egress: {allowed_hosts: [api.anthropic.com, api.openai.com, 127.0.0.1]}\n\
                 providers:\n  claude: {type: claude, models: [c]}\n  oa: {type: openai, models: [g]}\n  \
                 local: {type: openai, base_url: 'http://127.0.0.1:9', models: [l]}\n",
            )
            .unwrap();
            Ok(())
        });
    }

    #[test]
    fn base_url_joins_paths() {
        let url = BaseUrl::parse("http://127.0.0.1:9/prefix/").unwrap();
        assert_eq!(
            url.join("/v1/chat/completions?x=1").unwrap().to_string(),
            "http://127.0.0.1:9/prefix/v1/chat/completions?x=1"
        );
        assert!(!url.is_https());
        assert!(BaseUrl::parse("https://user:pw@host").unwrap_err().contains("user info"));
        assert!(BaseUrl::parse("host:80").is_err());
    }
    #[test]
    fn cors_is_off_by_default_and_origins_are_checked_at_load() {
        let config = Config::from_figment(&Figment::new()).unwrap();
        assert!(config.server.cors.allowed_origins.is_empty());
        assert_eq!(config.server.cors.max_age, Duration::from_secs(600));
        for header in ["authorization", "x-api-key", "anthropic-version", "x-goog-api-key"] {
            assert!(config.server.cors.allowed_headers.iter().any(|h| h == header), "{header}");
        }

        let good = "server: {cors: {allowed_origins: [\"https://app.example.com\", \
                    \"http://localhost:5173\", \"http://127.0.0.1:8080\", \"http://[::1]:3000\"]}}";
        let config = Config::from_yaml(good).unwrap();
        assert_eq!(config.server.cors.allowed_origins.len(), 4);

        for (origin, why) in [
            ("*", "`*`"),
            ("https://*.example.com", "`*`"),
            ("null", "scheme://host[:port]"),
            ("app.example.com", "scheme://host[:port]"),
            ("ftp://app.example.com", "http or https"),
            ("https://app.example.com/", "no path"),
            ("https://app.example.com/ui", "no path"),
            ("https://app.example.com?x=1", "no path"),
            ("https://user@app.example.com", "scheme://host[:port]"),
            ("https://app.example.com:99999", "port"),
            ("https://app.example.com:443", "default port"),
            ("https://", "scheme://host[:port]"),
        ] {
            let yaml = format!(
                "server: {{cors: {{allowed_origins: [\"https://ok.example\", {origin:?}]}}}}"
            );
            let error = Config::from_yaml(&yaml).unwrap_err().to_string();
            assert!(error.contains("`server.cors.allowed_origins[1]`"), "{origin}: {error}");
            assert!(error.contains(why), "{origin}: {error}");
        }
        let yaml = "server: {cors: {allowed_origins: [\"https://ok.example\"], allowed_headers: [\"bad header\"]}}";
        let error = Config::from_yaml(yaml).unwrap_err().to_string();
        assert!(error.contains("`server.cors.allowed_headers[0]`"), "{error}");
    }
}
