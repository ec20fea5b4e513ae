//! The upstream HTTP client and the request/response header rules of a forwarding proxy.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName};
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::error::{Error, Result};

/// The pooled HTTP/1.1 + HTTP/2 client used for one provider.
pub(crate) type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Builds a client: rustls on ring with the bundled web PKI roots plus the certificates of
/// `ca_file`, ALPN h2/http1.1, pooled connections, and the connect timeout.
pub(crate) fn build_client(
    provider: &str,
    connect_timeout: Duration,
    ca_file: Option<&Path>,
) -> Result<HttpClient> {
    let tls_error = |message: String| Error::UpstreamTls { provider: provider.to_owned(), message };
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        let certificates = CertificateDer::pem_file_iter(path)
            .map_err(|e| tls_error(format!("cannot read ca_file {}: {e}", path.display())))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| tls_error(format!("ca_file {} is not valid PEM: {e}", path.display())))?;
        if certificates.is_empty() {
            return Err(tls_error(format!("ca_file {} holds no certificate", path.display())));
        }
        for certificate in certificates {
            roots.add(certificate).map_err(|e| {
                tls_error(format!("ca_file {} holds an unusable certificate: {e}", path.display()))
            })?;
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| tls_error(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();

    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .timer(TokioTimer::new())
        .build(connector))
}

/// The media type of a successful reply when it is neither JSON (`application/json`,
/// `*+json`, `application/x-ndjson`) nor an event stream; `None` for those and for a reply
/// without `Content-Type`. Only the type is returned (at most 64 characters, parameters
/// dropped), so an error message never carries more of the upstream's header than that.
pub(crate) fn unexpected_content_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::CONTENT_TYPE)?;
    // The usual answer is checked on the bytes, without building the lower-case text.
    let media = value.as_bytes().split(|&b| b == b';').next().unwrap_or_default().trim_ascii();
    if media.is_empty()
        || media.windows(4).any(|w| w.eq_ignore_ascii_case(b"json"))
        || media.eq_ignore_ascii_case(b"text/event-stream")
    {
        return None;
    }
    let text = String::from_utf8_lossy(value.as_bytes());
    let media = text.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let expected = media.is_empty() || media.contains("json") || media == "text/event-stream";
    (!expected).then(|| media.chars().filter(|c| c.is_ascii_graphic()).take(64).collect())
}

/// Request headers never forwarded upstream: hop-by-hop headers (RFC 9110 §7.6.1), the
/// client's own credentials and the account selectors that belong with a credential (only the
/// vault credential is sent, and it picks its own organisation), cookies, headers that would
/// leak the client's address, and `accept-encoding`, so replies arrive uncompressed and their
/// token usage can be read.
fn dropped_request_header(name: &str) -> bool {
    // A `match`: compared with constants by the compiled code, not looked up in a table.
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "content-length"
            | "authorization"
            | "x-api-key"
            | "x-goog-api-key"
            | "api-key"
            | "openai-organization"
            | "openai-project"
            | "cookie"
            | "forwarded"
            | "x-forwarded-for"
            | "x-forwarded-host"
            | "x-forwarded-proto"
            | "x-real-ip"
            | "accept-encoding"
    )
}

/// Response headers never passed back: hop-by-hop headers and the upstream's cookies.
fn dropped_response_header(name: &str) -> bool {
    // A `match`: compared with constants by the compiled code, not looked up in a table.
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "set-cookie"
            | "alt-svc"
    )
}

/// The client's request headers that may go upstream.
pub(crate) fn forwardable_request_headers(client: &HeaderMap) -> HeaderMap {
    filtered(client, dropped_request_header)
}

/// The upstream's response headers that may go back to the client.
pub(crate) fn forwardable_response_headers(upstream: &HeaderMap) -> HeaderMap {
    filtered(upstream, dropped_response_header)
}

fn filtered(headers: &HeaderMap, dropped: fn(&str) -> bool) -> HeaderMap {
    // Headers named in `Connection` are hop-by-hop too.
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::try_from(name.trim()).ok())
        .collect();
    let mut out = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        if dropped(name.as_str()) || listed.contains(name) {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    out
}

/// The wait a `Retry-After` header asks for: delay-seconds or an HTTP date; capped at an hour
/// so a hostile upstream cannot park a credential for ever.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    let wait = if let Ok(seconds) = value.parse::<u64>() {
        Duration::from_secs(seconds)
    } else {
        let at = httpdate::parse_http_date(value).ok()?;
        at.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO)
    };
    Some(wait.min(Duration::from_secs(3600)))
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn client_credentials_and_hop_by_hop_headers_stay_behind() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("authorization", "Bearer client-key"),
            ("x-api-key", "client-key"),
            ("x-goog-api-key", "client-key"),
            ("api-key", "client-key"),
            ("openai-organization", "org-of-the-client"),
            ("connection", "keep-alive, x-secret-hop"),
            ("x-secret-hop", "1"),
            ("transfer-encoding", "chunked"),
            ("content-type", "application/json"),
            ("anthropic-version", "2023-06-01"),
            ("anthropic-beta", "tools"),
            ("x-forwarded-for", "10.0.0.1"),
            ("cookie", "a=b"),
            ("user-agent", "sdk/1.0"),
        ] {
            headers.append(name, HeaderValue::from_static(value));
        }
        let kept = forwardable_request_headers(&headers);
        let mut names: Vec<&str> = kept.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["anthropic-beta", "anthropic-version", "content-type", "user-agent"]);
    }

    #[test]
    fn response_cookies_and_hop_by_hop_are_dropped() {
        let mut headers = HeaderMap::new();
        headers.insert("set-cookie", HeaderValue::from_static("__cf=1"));
        headers.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        headers.insert("x-request-id", HeaderValue::from_static("up-1"));
        headers.insert("content-type", HeaderValue::from_static("text/event-stream"));
        let kept = forwardable_response_headers(&headers);
        assert_eq!(kept.len(), 2);
        assert!(kept.contains_key("x-request-id"));
    }

    #[test]
    fn retry_after_forms() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("99999999"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(3600)));
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
        headers.insert(header::RETRY_AFTER, HeaderValue::try_from(later).unwrap());
        let wait = retry_after(&headers).unwrap();
        assert!(wait > Duration::from_secs(100) && wait <= Duration::from_secs(120), "{wait:?}");
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn a_bad_ca_file_names_the_provider_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate").unwrap();
        let error =
            build_client("local", Duration::from_secs(1), Some(&path)).unwrap_err().to_string();
        assert!(error.contains("`local`") && error.contains("ca.pem"), "{error}");
    }

    #[test]
    fn only_json_and_event_streams_are_api_answers() {
        let with = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(value));
            unexpected_content_type(&headers)
        };
        assert_eq!(unexpected_content_type(&HeaderMap::new()), None);
        for fine in [
            "application/json",
            "application/json; charset=utf-8",
            "text/event-stream",
            "application/problem+json",
            "application/x-ndjson",
            "TEXT/EVENT-STREAM",
        ] {
            assert_eq!(with(fine), None, "{fine}");
        }
        assert_eq!(with("text/html; charset=utf-8").as_deref(), Some("text/html"));
        assert_eq!(with("text/plain").as_deref(), Some("text/plain"));
    }
}
