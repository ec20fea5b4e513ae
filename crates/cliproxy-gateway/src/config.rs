//! The gateway's own configuration: [`GatewayConfig`], the sections the gateway reads (its
//! own — `server:`, `providers:`, `management:`, `logging:`, `egress:`, `pricing:` — and the layer
//! crates' sections it hands on), with the checks types alone cannot express
//! ([`GatewayConfig::check`]). Loading the file (figment, `${VAR}` interpolation, the
//! environment) is the binary's job: `cliproxy-server` assembles the top-level `Config`, of
//! which this is a view.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// The sections the gateway is built from: every section of the configuration file but the
/// process's own (`sandbox:`, which the binary applies). The binary loads and checks the
/// file and hands this view to [`Gateway::from_parts`](crate::Gateway::from_parts); it
/// deserializes from the same keys, so an embedder can read it from a document of its own.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct GatewayConfig {
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
    /// `state:` — the state database of the network guard (owned by `cliproxy-netguard`).
    pub state: cliproxy_netguard::StateConfig,
    /// `metrics:` — the Prometheus listener (owned by `cliproxy-audit`).
    pub metrics: cliproxy_audit::MetricsConfig,
    /// `alerts:` — alert rules over the security metrics (owned by `cliproxy-audit`).
    pub alerts: Vec<cliproxy_audit::AlertRule>,
    /// `egress:` — the upstream hosts the gateway may send requests to.
    pub egress: EgressConfig,
    /// `pricing:` — model prices in USD per 1M tokens, over the built-in list prices
    /// (`pricing.rs`).
    pub pricing: crate::pricing::PricingConfig,
    /// `usage:` — the usage history's retention (`usage_history.rs`).
    pub usage: crate::usage_history::UsageConfig,
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
    /// `server.instance_id:` — this gateway's name among several sharing one state (SPEC
    /// §11): in every log line and every audit line (`instance`), and in the state store's
    /// keys that are its own (its audit head). Letters, digits, `.`, `_`, `-`, at most 64;
    /// the host's name by default.
    pub instance_id: Option<String>,
}

impl ServerConfig {
    /// `server.instance_id`, or the host's name (`/proc/sys/kernel/hostname`, as containers
    /// set it), or `cliproxy` when neither gives a valid name.
    pub fn instance_id(&self) -> String {
        if let Some(id) = &self.instance_id {
            return id.clone();
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|name| name.trim().to_owned())
            .filter(|name| valid_name(name))
            .unwrap_or_else(|| "cliproxy".to_owned())
    }
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
            instance_id: None,
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
    /// Model names this provider serves: exact names or `*` globs, each served under its own
    /// name, or aliases (`{name: sonnet, upstream: claude-sonnet-4-5}`): a client asks for
    /// the alias, the provider is asked for the upstream name.
    #[serde(default)]
    pub models: Vec<ModelEntry>,
    /// For `type: openai`: the API the provider is called with when the client's format is
    /// not OpenAI's own, or when it is set — `chat` (Chat Completions, what every
    /// OpenAI-compatible server has) or `responses`. Unset, an OpenAI client's request goes
    /// to the endpoint it called, as it came.
    #[serde(default)]
    pub api: Option<OpenAiApi>,
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

/// The API an OpenAI provider is called with (`providers.<name>.api`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpenAiApi {
    /// Chat Completions (`/v1/chat/completions`).
    Chat,
    /// Responses (`/v1/responses`).
    Responses,
}

/// One entry of `providers.<name>.models`: a name (or `*` glob) served as it is, or an alias
/// (`{name, upstream}`) that a client asks for and the provider knows by another name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelEntry {
    /// The name clients use.
    pub name: String,
    /// The provider's name for it, for an alias.
    pub upstream: Option<String>,
}

impl ModelEntry {
    /// A name served as it is.
    pub fn plain(name: impl Into<String>) -> Self {
        Self { name: name.into(), upstream: None }
    }

    /// The name the provider is asked for.
    pub fn upstream_name(&self) -> &str {
        self.upstream.as_deref().unwrap_or(&self.name)
    }
}

impl<'de> Deserialize<'de> for ModelEntry {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        /// The mapping form, with its own unknown-key check (an untagged enum would only
        /// say that the entry matched no variant).
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Alias {
            name: String,
            upstream: String,
        }
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = ModelEntry;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a model name, or an alias {name, upstream}")
            }
            fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<ModelEntry, E> {
                Ok(ModelEntry::plain(name))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<ModelEntry, A::Error> {
                let alias = Alias::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(ModelEntry { name: alias.name, upstream: Some(alias.upstream) })
            }
        }
        deserializer.deserialize_any(Visitor)
    }
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

    /// Several problems, each already phrased with its key.
    pub fn from_problems(problems: Vec<String>) -> Self {
        Self { problems }
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

impl GatewayConfig {
    /// Reads and checks a configuration from YAML text, for this crate's unit tests (the
    /// binary's loader adds the file, `${VAR}` interpolation and the environment).
    #[cfg(test)]
    pub(crate) fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        use figment::providers::{Format, Yaml};
        let config: Self = figment::Figment::from(Yaml::string(text))
            .extract()
            .map_err(|e| ConfigError::new(e.to_string()))?;
        config.check()?;
        Ok(config)
    }

    /// Checks what types alone cannot express; every problem names its key. The binary
    /// calls it on each configuration it loads (at start and on reload).
    pub fn check(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        if let Some(id) = &self.server.instance_id
            && !valid_name(id)
        {
            problems.push(
                "`server.instance_id`: use letters, digits, `.`, `_` and `-` (at most 64)"
                    .to_owned(),
            );
        }
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
            if provider.models.iter().any(|m| m.name.is_empty() || m.upstream_name().is_empty()) {
                problems.push(format!("`{key}.models` contains an empty model name"));
            }
            if let Some(alias) = provider.models.iter().find(|m| {
                m.upstream.is_some() && (m.name.contains('*') || m.upstream_name().contains('*'))
            }) {
                problems.push(format!(
                    "`{key}.models`: alias `{}` holds a `*`; an alias names one model on each side",
                    alias.name
                ));
            }
            if provider.api.is_some() && provider.kind != ProviderKind::Openai {
                problems.push(format!(
                    "`{key}.api` applies only to providers of type openai (chat or responses)"
                ));
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
        if let Err(pricing) = self.pricing.check() {
            problems.extend(pricing);
        }
        problems.extend(self.usage.problems());
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
    pub fn effective_models(&self) -> Vec<ModelEntry> {
        if self.models.is_empty() && self.kind == ProviderKind::Mock {
            vec![ModelEntry::plain("mock-*")]
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
