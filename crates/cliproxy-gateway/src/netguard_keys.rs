//! The config keys of the network guard's settings. `cliproxy-netguard` reports its errors in
//! its own terms (a setting, a file, a header) so that other services can embed it; an
//! operator of this gateway must read the key to change, so every netguard error the gateway
//! or `cliproxy-server` shows goes through [`netguard_error`] first.

use cliproxy_netguard::{CipherSuiteProblem, Error, Setting};
use http::header;

/// The text of a netguard error with the config key it is about.
pub fn netguard_error(error: &Error) -> String {
    match error {
        // The file first, as the operator looks for it in the log, then the key that names it.
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

    use cliproxy_netguard::{HeadersConfig, SecurityHeaders, TlsConfig, TlsFile, TlsProblem};

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
}
