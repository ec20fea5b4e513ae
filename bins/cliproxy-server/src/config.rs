//! The configuration file: the top-level [`Config`] assembled from each crate's section type,
//! and its loader, which layers built-in defaults, the YAML file (with `${VAR}`
//! interpolation) and `CLIPROXY_` environment variables with figment. Every error names the
//! key it is about. The gateway gets its view ([`Config::gateway`]); the sandbox section
//! is applied by the binary itself.

use std::path::PathBuf;

use figment::providers::{Env, Format, Yaml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::Deserialize;

use cliproxy_gateway::{
    ConfigError, ConfigLoader, EgressConfig, GatewayConfig, LoggingConfig, ManagementConfig,
    PricingConfig, ProvidersConfig, ServerConfig,
};

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
    /// `pricing:` — model prices in USD per 1M tokens, over the built-in list prices.
    pub pricing: PricingConfig,
    /// `usage:` — how long the usage history is kept.
    pub usage: cliproxy_gateway::UsageConfig,
}

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
    /// Checks what types alone cannot express (the gateway's own checks, on its view).
    fn validate(&self) -> Result<(), ConfigError> {
        self.gateway().check()
    }

    /// The gateway's view: every section but `sandbox:`.
    pub fn gateway(&self) -> GatewayConfig {
        let mut gateway = GatewayConfig::default();
        gateway.server = self.server.clone();
        gateway.auth = self.auth.clone();
        gateway.management = self.management.clone();
        gateway.providers = self.providers.clone();
        gateway.logging = self.logging.clone();
        gateway.state = self.state.clone();
        gateway.metrics = self.metrics.clone();
        gateway.alerts = self.alerts.clone();
        gateway.egress = self.egress.clone();
        gateway.pricing = self.pricing.clone();
        gateway.usage = self.usage.clone();
        gateway
    }
}

/// A reload (SIGHUP, `POST /v0/management/config/reload`) reads the same source again: the
/// gateway reads no file itself.
impl ConfigLoader for ConfigSource {
    fn raw(&self) -> Result<serde_json::Value, String> {
        Config::figment(self).extract::<serde_json::Value>().map_err(|e| e.to_string())
    }

    fn load(&self) -> Result<GatewayConfig, String> {
        Config::load(self).map(|config| config.gateway()).map_err(|e| e.to_string())
    }
}

/// Turns figment's errors into sentences that name the full key and where the value came from.
fn describe_figment_error(error: figment::Error) -> ConfigError {
    let problems = error.into_iter().map(|e| describe_one(&e)).collect();
    ConfigError::from_problems(problems)
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
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::Duration;

    use cliproxy_gateway::{LogFormat, LogLevel};
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
            assert_eq!(
                config.providers.0["demo"].effective_models(),
                [cliproxy_gateway::ModelEntry::plain("mock-*")]
            );
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
