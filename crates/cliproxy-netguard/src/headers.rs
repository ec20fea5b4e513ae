//! The security headers, added to every response — errors,
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
        let hsts = (header::STRICT_TRANSPORT_SECURITY, config.strict_transport_security.as_str());
        let others = [
            (header::X_CONTENT_TYPE_OPTIONS, config.content_type_options.as_str()),
            (header::X_FRAME_OPTIONS, config.frame_options.as_str()),
            (header::X_XSS_PROTECTION, config.xss_protection.as_str()),
            (header::CONTENT_SECURITY_POLICY, config.content_security_policy.as_str()),
        ];
        Self::from_values(tls.then_some(hsts).into_iter().chain(others))
    }

    /// The headers named, with their values checked; an empty value leaves its header out.
    /// A value that cannot be sent (a line break, a byte outside printable ASCII) is an
    /// [`Error::InvalidHeaderValue`] naming the header.
    pub fn from_values<'a>(
        values: impl IntoIterator<Item = (HeaderName, &'a str)>,
    ) -> Result<Self> {
        let mut headers = Vec::new();
        for (name, value) in values {
            if value.is_empty() {
                continue;
            }
            let value = HeaderValue::from_str(value)
                .map_err(|_| Error::InvalidHeaderValue { header: name.clone() })?;
            headers.push((name, value));
        }
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
        let error = SecurityHeaders::new(&config, false).unwrap_err();
        assert!(
            matches!(&error, Error::InvalidHeaderValue { header } if *header == header::X_FRAME_OPTIONS),
            "{error:?}"
        );
        // The text names the header, never the value (which could be anything).
        let text = error.to_string();
        assert!(text.contains("x-frame-options") && !text.contains("Set-Cookie"), "{text}");
        config.enabled = false;
        assert!(SecurityHeaders::new(&config, true).unwrap().is_empty());
    }
}
