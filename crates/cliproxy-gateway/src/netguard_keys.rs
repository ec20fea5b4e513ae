//! The config keys of the network guard's settings. `cliproxy-netguard` reports its errors and
//! refusals in its own terms (a setting, a file, a header, a limit) so that other services can
//! embed it; an operator of this gateway (and a client refused by a limit) must read the key
//! to change, so every netguard error or refusal the gateway or `cliproxy-server` shows goes
//! through one of these functions first.

use cliproxy_netguard::{
    CapOwner, CipherSuiteProblem, DenyReason, Error, Invalid, LimitKind, Limited, Setting,
};
use http::header;

/// The text of a netguard error with the config key it is about.
pub fn netguard_error(error: &Error) -> String {
    match error {
        // The file first, as the operator looks for it in the log, then the key that names it.
        // A Redis store names itself `Redis at host:port (keys …)`: its key is `state.redis`.
        Error::State { path, message } if path.to_string_lossy().starts_with("Redis at ") => {
            format!("state store {} (state.redis): {message}", path.display())
        }
        Error::State { path, message } => {
            format!("state store {} (state.path): {message}", path.display())
        }
        Error::Tls { path, problem, .. } => {
            let key = error.setting().map_or("server.tls", setting_key);
            format!("{} ({key}): {problem}", path.display())
        }
        Error::CipherSuites { problem: CipherSuiteProblem::NoneAtMinVersion } => {
            format!("server.tls.cipher_suites with server.tls.min_version \"1.3\": {error}")
        }
        Error::InvalidHeaderValue { header } => {
            format!("`{}`: {error}", header_key(header))
        }
        other => match other.setting() {
            Some(setting) => format!("{}: {other}", setting_key(setting)),
            None => other.to_string(),
        },
    }
}

/// The message of a refusing limit, naming the config key that sets it (and for a quota when
/// it resets): the 429's message and the log's detail.
pub(crate) fn limited_message(limited: &Limited) -> String {
    limited.message(&limit_key(limited.kind, limited.name.as_deref().unwrap_or_default()))
}

/// The config key that sets a limit, for the provider or client key `name` where the limit
/// belongs to one.
pub(crate) fn limit_key(kind: LimitKind, name: &str) -> String {
    match kind {
        LimitKind::PerIp => "server.security.rate_limiting".to_owned(),
        LimitKind::Global => "server.rate_limit".to_owned(),
        LimitKind::ProviderRequests => format!("providers.{name}.rate_limit.requests_per_minute"),
        LimitKind::ProviderTokens => format!("providers.{name}.rate_limit.tokens_per_minute"),
        LimitKind::ClientRequests => {
            format!("auth.api_keys[{name}].rate_limit.requests_per_minute")
        }
        LimitKind::ClientTokens => format!("auth.api_keys[{name}].rate_limit.tokens_per_minute"),
        LimitKind::ProviderQuota => format!("providers.{name}.quota"),
        LimitKind::ClientQuota => format!("auth.api_keys[{name}].quota"),
        LimitKind::ClientBudget => format!("auth.api_keys[{name}].budget"),
        LimitKind::Unpriced => "pricing.models".to_owned(),
        LimitKind::SharedState => "state.redis.on_unavailable: deny".to_owned(),
        // A limit added to netguard before this table learns it: its own label.
        other => other.as_str().to_owned(),
    }
}

/// Why an address was refused, naming the config key of the list (or the management route
/// of the runtime denylist): the detail of the log line and the audit event.
pub(crate) fn deny_reason(reason: &DenyReason) -> String {
    reason.describe(match reason {
        DenyReason::Denylisted(_) => "server.security.ip_denylist",
        DenyReason::RuntimeDenied { .. } => {
            "runtime denylist (/v0/management/security/ip-denylist)"
        }
        DenyReason::NotAllowlisted => "server.security.ip_allowlist",
    })
}

/// The 400 message of an invalid request; a request over a `max_tokens` cap names the key
/// of the cap that held (`provider` is the provider the request was routed to).
pub(crate) fn invalid_message(invalid: &Invalid, provider: &str) -> String {
    match invalid.over_cap {
        Some(CapOwner::Validator) => {
            format!("{} (server.security.request_validation.max_tokens)", invalid.message)
        }
        Some(CapOwner::Provider) => {
            format!("{} (providers.{provider}.max_tokens)", invalid.message)
        }
        None => invalid.message.clone(),
    }
}

/// The config key of a netguard setting.
pub fn setting_key(setting: Setting) -> &'static str {
    match setting {
        Setting::StatePath => "state.path",
        Setting::FlushInterval => "state.flush_interval",
        Setting::CertFile => "server.tls.cert_file",
        Setting::KeyFile => "server.tls.key_file",
        Setting::CipherSuites => "server.tls.cipher_suites",
        Setting::HandshakeTimeout => "server.tls.handshake_timeout",
        Setting::ReloadInterval => "server.tls.reload_interval",
        Setting::RedisUrl => "state.redis.url",
        Setting::RedisCaFile => "state.redis.ca_file",
        Setting::RedisTimeout => "state.redis.timeout",
        // A setting added to netguard before this table learns it: the section at least.
        _ => "server.tls",
    }
}

/// The key under `server.security.headers` that sets a security header.
fn header_key(name: &http::HeaderName) -> String {
    let field = if name == header::STRICT_TRANSPORT_SECURITY {
        "strict_transport_security"
    } else if name == header::X_CONTENT_TYPE_OPTIONS {
        "content_type_options"
    } else if name == header::X_FRAME_OPTIONS {
        "frame_options"
    } else if name == header::X_XSS_PROTECTION {
        "xss_protection"
    } else if name == header::CONTENT_SECURITY_POLICY {
        "content_security_policy"
    } else {
        return "server.security.headers".to_owned();
    };
    format!("server.security.headers.{field}")
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use std::num::{NonZeroU32, NonZeroUsize};
    use std::sync::Arc;

    use cliproxy_netguard::{
        FakeClock, GlobalRateLimiter, HeadersConfig, IpFilter, IpRateLimiter, RequestFields,
        RequestKind, SecurityHeaders, TlsConfig, TlsFile, TlsProblem, TokenCap, Validator, Verdict,
    };

    #[test]
    fn redis_errors_name_the_state_redis_keys() {
        let url = cliproxy_netguard::Error::Redis {
            setting: cliproxy_netguard::Setting::RedisUrl,
            message: "the Redis URL cannot be used".to_owned(),
        };
        assert_eq!(super::netguard_error(&url), "state.redis.url: the Redis URL cannot be used");
        let timeout = cliproxy_netguard::Error::InvalidDuration {
            setting: cliproxy_netguard::Setting::RedisTimeout,
            value: Duration::from_secs(60),
            allowed: "between 1ms and 10s",
        };
        assert!(super::netguard_error(&timeout).starts_with("state.redis.timeout: "));
        let down = cliproxy_netguard::Error::State {
            path: PathBuf::from("Redis at 127.0.0.1:6379 (keys cliproxy:*)"),
            message: "cannot read".to_owned(),
        };
        assert!(
            super::netguard_error(&down).contains("(state.redis)"),
            "{}",
            super::netguard_error(&down)
        );
    }

    use super::*;

    #[test]
    fn every_netguard_setting_maps_to_its_own_key() {
        let settings = [
            (Setting::StatePath, "state.path"),
            (Setting::FlushInterval, "state.flush_interval"),
            (Setting::CertFile, "server.tls.cert_file"),
            (Setting::KeyFile, "server.tls.key_file"),
            (Setting::CipherSuites, "server.tls.cipher_suites"),
            (Setting::HandshakeTimeout, "server.tls.handshake_timeout"),
            (Setting::ReloadInterval, "server.tls.reload_interval"),
        ];
        for (setting, key) in settings {
            assert_eq!(setting_key(setting), key, "{setting:?}");
        }
    }

    #[test]
    fn errors_name_the_key_and_keep_the_library_detail() {
        let cases: [(Error, &str); 5] = [
            (Error::MissingSetting(Setting::CertFile), "server.tls.cert_file: no TLS certificate"),
            (
                Error::InvalidDuration {
                    setting: Setting::HandshakeTimeout,
                    value: Duration::ZERO,
                    allowed: "longer than 0 (e.g. 10s)",
                },
                "server.tls.handshake_timeout: the TLS handshake timeout is 0ns",
            ),
            (
                Error::Tls {
                    file: TlsFile::Key,
                    path: PathBuf::from("/etc/key.pem"),
                    problem: TlsProblem::NoPem,
                },
                "/etc/key.pem (server.tls.key_file): no PEM",
            ),
            (
                Error::State { path: PathBuf::from("/var/state.db"), message: "is damaged".into() },
                "state store /var/state.db (state.path): is damaged",
            ),
            (
                Error::CipherSuites { problem: CipherSuiteProblem::NoneAtMinVersion },
                "server.tls.cipher_suites with server.tls.min_version \"1.3\": every suite",
            ),
        ];
        for (error, expected) in cases {
            let text = netguard_error(&error);
            assert!(text.starts_with(expected), "{text}");
        }
    }

    #[test]
    fn a_bad_header_value_names_its_key() {
        let mut config = HeadersConfig::default();
        config.content_security_policy = "default-src\n'none'".to_owned();
        let error = SecurityHeaders::new(&config, false).unwrap_err();
        let text = netguard_error(&error);
        assert!(text.starts_with("`server.security.headers.content_security_policy`: "), "{text}");
    }

    #[test]
    fn a_refused_cipher_suite_names_the_key_and_the_supported_list() {
        let mut config = TlsConfig::default();
        config.cipher_suites = vec!["RC4-MD5".to_owned()];
        let error = cliproxy_netguard::tls::TlsSettings::build(&config).unwrap_err();
        let text = netguard_error(&error);
        assert!(text.starts_with("server.tls.cipher_suites: `RC4-MD5` is refused"), "{text}");
        assert!(text.contains("TLS_AES_128_GCM_SHA256"), "{text}");
    }

    #[test]
    fn a_refusing_limit_names_its_key() {
        let clock = FakeClock::at_unix(0);
        let one = NonZeroU32::MIN;
        let per_ip = IpRateLimiter::new(one, one, NonZeroUsize::MIN, Arc::clone(&clock) as Arc<_>);
        let peer = "192.0.2.1".parse().unwrap();
        per_ip.check(peer).unwrap();
        let refused = per_ip.check(peer).unwrap_err();
        assert_eq!(
            limited_message(&refused),
            "too many requests from this address (server.security.rate_limiting); retry after 1 s"
        );
        let global = GlobalRateLimiter::new(one, one, clock);
        global.check().unwrap();
        let refused = global.check().unwrap_err();
        assert!(limited_message(&refused).contains("(server.rate_limit)"));
        let cases = [
            (LimitKind::ProviderRequests, "providers.p.rate_limit.requests_per_minute"),
            (LimitKind::ProviderTokens, "providers.p.rate_limit.tokens_per_minute"),
            (LimitKind::ClientRequests, "auth.api_keys[p].rate_limit.requests_per_minute"),
            (LimitKind::ClientTokens, "auth.api_keys[p].rate_limit.tokens_per_minute"),
            (LimitKind::ProviderQuota, "providers.p.quota"),
            (LimitKind::ClientQuota, "auth.api_keys[p].quota"),
            (LimitKind::ClientBudget, "auth.api_keys[p].budget"),
            (LimitKind::Unpriced, "pricing.models"),
        ];
        for (kind, key) in cases {
            assert_eq!(limit_key(kind, "p"), key);
        }
    }

    #[test]
    fn a_denied_address_names_the_list_that_refused_it() {
        let denied = ["10.1.0.0/16".parse().unwrap()];
        let allowed = ["10.0.0.0/8".parse().unwrap()];
        let filter = IpFilter::from_lists(&denied, Some(&allowed), &[], FakeClock::at_unix(0));
        let reason = |ip: &str| match filter.check(ip.parse().unwrap()) {
            Verdict::Deny(reason) => deny_reason(&reason),
            Verdict::Allow => panic!("{ip} admitted"),
        };
        assert_eq!(reason("10.1.2.3"), "in 10.1.0.0/16 of server.security.ip_denylist");
        assert_eq!(reason("192.0.2.1"), "not in server.security.ip_allowlist");
    }

    #[test]
    fn a_request_over_a_token_cap_names_the_cap_that_held() {
        let fields =
            RequestFields::from_slice(br#"{"messages": [{"role": "u"}], "max_tokens": 500}"#)
                .unwrap();
        let validator = Validator::from_values(true, NonZeroU32::new(400));
        let loose = TokenCap { provider_max_tokens: None, provider: "claude" };
        let invalid = validator.check(RequestKind::ChatCompletions, &fields, loose).unwrap_err();
        assert_eq!(
            invalid_message(&invalid, "claude"),
            "`max_tokens` is 500, over this gateway's limit of 400 \
             (server.security.request_validation.max_tokens)"
        );
        let strict = TokenCap { provider_max_tokens: NonZeroU32::new(100), provider: "claude" };
        let invalid = validator.check(RequestKind::ChatCompletions, &fields, strict).unwrap_err();
        assert_eq!(
            invalid_message(&invalid, "claude"),
            "`max_tokens` is 500, over this gateway's limit of 100 (providers.claude.max_tokens)"
        );
    }
}
