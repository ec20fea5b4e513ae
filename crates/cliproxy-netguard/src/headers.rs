//! The security headers of `server.security.headers`, added to every response — errors,
//! health answers and upstream replies alike.

use http::HeaderMap;
use http::header::{self, HeaderName, HeaderValue};

use crate::config::HeadersConfig;
use crate::error::{Error, Result};

/// The configured headers, checked once at start-up.
#[derive(Debug, Clone, Default)]
pub struct SecurityHeaders {
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl SecurityHeaders {
    /// Checks every configured value. `Strict-Transport-Security` is kept only on TLS
    /// listeners: RFC 6797 tells browsers to ignore it over plain HTTP, and sending it there
    /// only misleads whoever reads the response.
    pub fn new(config: &HeadersConfig, tls: bool) -> Result<Self> {
        if !config.enabled {
            return Ok(Self::default());
        }
        let mut headers = Vec::new();
        let mut add = |name: HeaderName, value: &str, key: &str| -> Result<()> {
            if value.is_empty() {
                return Ok(());
            }
            let value = HeaderValue::from_str(value).map_err(|_| {
                Error::Config(format!(
                    "`server.security.headers.{key}` is not a valid header value (printable ASCII, no line breaks)"
                ))
            })?;
            headers.push((name, value));
            Ok(())
        };
        if tls {
            add(
                header::STRICT_TRANSPORT_SECURITY,
                &config.strict_transport_security,
                "strict_transport_security",
            )?;
        }
        add(header::X_CONTENT_TYPE_OPTIONS, &config.content_type_options, "content_type_options")?;
        add(header::X_FRAME_OPTIONS, &config.frame_options, "frame_options")?;
        add(header::X_XSS_PROTECTION, &config.xss_protection, "xss_protection")?;
        add(
            header::CONTENT_SECURITY_POLICY,
            &config.content_security_policy,
            "content_security_policy",
        )?;
        Ok(Self { headers })
    }

    /// Sets the headers on a response, replacing any an upstream sent: the gateway's policy
    /// is what the client sees.
    pub fn apply(&self, headers: &mut HeaderMap) {
        // One growth of the table at most, instead of one per header.
        headers.reserve(self.headers.len());
        for (name, value) in &self.headers {
            headers.insert(name.clone(), value.clone());
        }
    }

    /// Whether any header is configured.
    pub fn is_empty(&self) -> bool {
        self.headers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_five_headers_are_set_and_replace_upstream_ones() {
        let headers = SecurityHeaders::new(&HeadersConfig::default(), true).unwrap();
        let mut map = HeaderMap::new();
        map.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("ALLOWALL"));
        headers.apply(&mut map);
        assert_eq!(map[header::X_FRAME_OPTIONS], "DENY");
        assert_eq!(map[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert!(map.contains_key(header::STRICT_TRANSPORT_SECURITY));
        assert!(map.contains_key(header::X_XSS_PROTECTION));
        assert!(map.contains_key(header::CONTENT_SECURITY_POLICY));
    }

    #[test]
    fn hsts_only_over_tls_empty_values_skipped_bad_values_named() {
        let mut config = HeadersConfig { xss_protection: String::new(), ..Default::default() };
        let headers = SecurityHeaders::new(&config, false).unwrap();
        let mut map = HeaderMap::new();
        headers.apply(&mut map);
        assert!(!map.contains_key(header::STRICT_TRANSPORT_SECURITY));
        assert!(!map.contains_key(header::X_XSS_PROTECTION));
        config.frame_options = "DENY\r\nSet-Cookie: x".to_owned();
        let error = SecurityHeaders::new(&config, false).unwrap_err().to_string();
        assert!(error.contains("server.security.headers.frame_options"), "{error}");
        config.enabled = false;
        assert!(SecurityHeaders::new(&config, true).unwrap().is_empty());
    }
}
