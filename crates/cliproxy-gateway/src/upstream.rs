//! The upstream HTTP client and the request/response header rules of a forwarding proxy.

use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{self, GetAll, HeaderMap, HeaderName, HeaderValue};
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::config::ProviderKind;
use crate::error::{Error, Result};
use crate::providers;

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

/// The header that carries the provider's own request id back to the client (OpenAI's
/// `x-request-id`, Anthropic's `request-id`), so that a support case with the provider can
/// name the call; `x-request-id` is the gateway's own id.
pub(crate) const UPSTREAM_REQUEST_ID_HEADER: &str = "x-upstream-request-id";

/// Request headers every provider takes from the client: the body's media type, the answer
/// the client accepts and the client's name. Everything else is refused unless the
/// provider's API defines it ([`providers::api_request_header`]): an allow-list, because the
/// headers that do harm upstream are open-ended (addresses the client chose, such as
/// `true-client-ip` or `via`; account selectors that belong with the operator's credential,
/// such as `openai-organization` or `x-goog-user-project`; body framing the gateway does not
/// apply, such as `content-encoding` or `expect`). Hop-by-hop headers, `host` and
/// `content-length` are not here either: the client library sets them for the upstream
/// connection. `accept-encoding` is not, so replies arrive uncompressed and their token
/// usage can be read.
fn common_request_header(name: &str) -> bool {
    // A `match`: compared with constants by the compiled code, not looked up in a table.
    matches!(name, "content-type" | "accept" | "user-agent")
}

/// The client's request headers that may go to a provider of `kind`. The credential and the
/// gateway's own headers (the Anthropic version, the device fingerprint) are added by the
/// caller after this.
pub(crate) fn forwardable_request_headers(kind: ProviderKind, client: &HeaderMap) -> HeaderMap {
    let connection = client.get_all(header::CONNECTION);
    let mut out = HeaderMap::with_capacity(client.len().min(16));
    for (name, value) in client {
        let text = name.as_str();
        if (common_request_header(text) || providers::api_request_header(kind, text))
            && !named_by_connection(&connection, text)
        {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// The upstream's response headers that may go back to the client: the body's media type
/// and content coding (the body is passed as it came), `Retry-After`, and the provider's
/// request id under [`UPSTREAM_REQUEST_ID_HEADER`]. The rest describes the operator's account
/// (`openai-organization`, `anthropic-organization-id`, the provider's `x-ratelimit-*` and
/// `anthropic-ratelimit-*`), the provider's servers (`server`, `via`, `cf-ray`) or sets a
/// browser policy the gateway does not make (`access-control-allow-origin`, `set-cookie`).
/// An event stream gets `Cache-Control: no-cache`, so no cache in between holds it back.
/// The gateway's own headers (its request id, the security headers, its `X-RateLimit-*`)
/// are set on the response after this.
pub(crate) fn forwardable_response_headers(upstream: &HeaderMap) -> HeaderMap {
    let connection = upstream.get_all(header::CONNECTION);
    let mut out = HeaderMap::with_capacity(4);
    for (name, value) in upstream {
        // A `match`: compared with constants by the compiled code, not looked up in a table.
        let kept = match name.as_str() {
            "content-type" | "content-encoding" | "retry-after" => name.clone(),
            "x-request-id" | "request-id" => HeaderName::from_static(UPSTREAM_REQUEST_ID_HEADER),
            _ => continue,
        };
        if !named_by_connection(&connection, name.as_str()) {
            out.append(kept, value.clone());
        }
    }
    let event_stream = out.get(header::CONTENT_TYPE).is_some_and(|v| {
        v.as_bytes().get(..17).is_some_and(|t| t.eq_ignore_ascii_case(b"text/event-stream"))
    });
    if event_stream {
        out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
    out
}

/// Whether the `Connection` values name `name`, which makes it hop-by-hop (RFC 9110
/// §7.6.1). Read in place: no list is built, and an HTTP/2 request has no such header.
fn named_by_connection(connection: &GetAll<'_, HeaderValue>, name: &str) -> bool {
    connection.iter().any(|value| {
        value
            .as_bytes()
            .split(|&b| b == b',')
            .any(|token| token.trim_ascii().eq_ignore_ascii_case(name.as_bytes()))
    })
}

/// Query parameter names that carry a credential, compared after percent-decoding and
/// without regard to case: Google reads `key` from the query once decoded, so `%6Bey` is
/// `key` to it.
fn credential_param(name: &str) -> bool {
    ["key", "api_key", "api-key", "access_token"].iter().any(|c| name.eq_ignore_ascii_case(c))
}

/// Whether the query string holds a credential under any spelling of its name.
pub(crate) fn query_holds_credential(query: Option<&str>) -> bool {
    query_pairs(query).any(|(name, _)| param_name(name).is_some_and(|name| credential_param(&name)))
}

/// The path and query sent upstream: the client's path, and its query minus any credential
/// and minus any parameter whose name cannot be decoded (an upstream that decodes it
/// differently, or twice, could read a credential in it). Kept pairs go as the client wrote
/// them.
pub(crate) fn upstream_path(path: &str, query: Option<&str>) -> String {
    let mut out = String::with_capacity(path.len() + query.map_or(0, str::len) + 1);
    out.push_str(path);
    let mut separator = '?';
    for (name, value) in query_pairs(query) {
        if param_name(name).is_none_or(|name| credential_param(&name)) {
            continue;
        }
        out.push(separator);
        separator = '&';
        out.push_str(name);
        if !value.is_empty() {
            out.push('=');
            out.push_str(value);
        }
    }
    out
}

/// Splits a query string into raw (still encoded) name and value pairs.
fn query_pairs(query: Option<&str>) -> impl Iterator<Item = (&str, &str)> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
}

/// A parameter name percent-decoded (`+` is a space, as in a form), or `None` when it cannot
/// be: a `%` not followed by two hex digits, bytes that are not UTF-8, or a `%` left after
/// decoding (a second decoding would read another name). The usual name has no escape and is
/// borrowed as it is.
fn param_name(raw: &str) -> Option<Cow<'_, str>> {
    if !raw.contains(['%', '+']) {
        return Some(Cow::Borrowed(raw));
    }
    let bytes = raw.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        match bytes[at] {
            b'%' => {
                // Two hex digits exactly (`from_str_radix` would take a sign too).
                let digit = |i: usize| bytes.get(i).and_then(|&b| char::from(b).to_digit(16));
                let byte = digit(at + 1)? * 16 + digit(at + 2)?;
                decoded.push(u8::try_from(byte).ok()?);
                at += 3;
            }
            b'+' => {
                decoded.push(b' ');
                at += 1;
            }
            byte => {
                decoded.push(byte);
                at += 1;
            }
        }
    }
    let decoded = String::from_utf8(decoded).ok()?;
    (!decoded.contains('%')).then_some(Cow::Owned(decoded))
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

/// Reads an upstream error body up to `cap` bytes, to judge it (see
/// [`providers::classify_error`]): `None` when it is longer, and the rest is not read. The
/// caller bounds the time it takes (the upstream's first-byte timeout): a body that never
/// ends must not hold the request.
pub(crate) async fn read_error_body<B>(mut body: B, cap: usize) -> Result<Option<Bytes>, B::Error>
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    use http_body_util::BodyExt;
    let mut read = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else { continue };
        read.extend_from_slice(&data);
        if read.len() > cap {
            return Ok(None);
        }
    }
    Ok(Some(read.freeze()))
}

/// `body` with every occurrence of `secret` replaced by `[redacted]`: an upstream error body
/// that goes back to the client must not carry the credential the gateway sent, whatever the
/// upstream echoes. The body is returned as it is when the secret is not in it (the common
/// case) or is empty.
pub(crate) fn redact(body: Bytes, secret: &str) -> Bytes {
    let secret = secret.as_bytes();
    let found = |from: usize| {
        body[from..].windows(secret.len()).position(|w| w == secret).map(|at| from + at)
    };
    if secret.is_empty() || body.len() < secret.len() {
        return body;
    }
    let Some(mut at) = found(0) else { return body };
    let mut out = Vec::with_capacity(body.len());
    let mut from = 0;
    loop {
        out.extend_from_slice(&body[from..at]);
        out.extend_from_slice(b"[redacted]");
        from = at + secret.len();
        match found(from) {
            Some(next) => at = next,
            None => break,
        }
    }
    out.extend_from_slice(&body[from..]);
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_static(value));
        }
        headers
    }

    fn names(headers: &HeaderMap) -> Vec<&str> {
        let mut names: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        names
    }

    #[test]
    fn an_echoed_credential_is_redacted_wherever_it_appears() {
        let secret = "sk-echo-0123456789";
        let body =
            Bytes::from(format!("{{\"error\":\"Bearer {secret} is wrong; {secret}{secret} x\"}}"));
        let redacted = redact(body, secret);
        assert_eq!(
            &redacted[..],
            b"{\"error\":\"Bearer [redacted] is wrong; [redacted][redacted] x\"}"
        );
        // Without the secret, and shorter than it: the same bytes back.
        let plain = Bytes::from_static(b"{\"error\":\"nothing here\"}");
        assert_eq!(redact(plain.clone(), secret), plain);
        assert_eq!(redact(Bytes::from_static(b"sk"), secret), Bytes::from_static(b"sk"));
        assert_eq!(redact(plain.clone(), ""), plain);
        // A secret cut in the middle is not the secret.
        let cut = Bytes::copy_from_slice(&secret.as_bytes()[..10]);
        assert_eq!(redact(cut.clone(), secret), cut);
    }

    #[test]
    fn only_the_headers_of_the_providers_api_go_upstream() {
        let headers = map(&[
            ("authorization", "Bearer client-key"),
            ("x-api-key", "client-key"),
            ("x-goog-api-key", "client-key"),
            ("api-key", "client-key"),
            ("openai-organization", "org-of-the-client"),
            ("x-goog-user-project", "project-of-the-client"),
            ("connection", "keep-alive, x-secret-hop, anthropic-beta"),
            ("x-secret-hop", "1"),
            ("transfer-encoding", "chunked"),
            ("content-encoding", "gzip"),
            ("expect", "100-continue"),
            ("true-client-ip", "192.0.2.1"),
            ("via", "1.1 proxy"),
            ("content-type", "application/json"),
            ("anthropic-version", "2023-06-01"),
            ("anthropic-beta", "tools"),
            ("openai-beta", "assistants=v2"),
            ("x-goog-api-client", "google-genai-sdk/1.0"),
            ("x-stainless-os", "Linux"),
            ("x-forwarded-for", "10.0.0.1"),
            ("cookie", "a=b"),
            ("user-agent", "sdk/1.0"),
        ]);
        // `anthropic-beta` is named by `Connection`: hop-by-hop, so it stays even for Claude.
        assert_eq!(
            names(&forwardable_request_headers(ProviderKind::Claude, &headers)),
            ["anthropic-version", "content-type", "user-agent", "x-stainless-os"]
        );
        assert_eq!(
            names(&forwardable_request_headers(ProviderKind::Openai, &headers)),
            ["content-type", "openai-beta", "user-agent", "x-stainless-os"]
        );
        assert_eq!(
            names(&forwardable_request_headers(ProviderKind::Gemini, &headers)),
            ["content-type", "user-agent", "x-goog-api-client"]
        );
    }

    #[test]
    fn only_the_allowed_response_headers_come_back_with_the_request_id_renamed() {
        let upstream = map(&[
            ("set-cookie", "__cf=1"),
            ("transfer-encoding", "chunked"),
            ("content-length", "12"),
            ("x-request-id", "up-1"),
            ("openai-organization", "org-operator"),
            ("x-ratelimit-limit-requests", "10000"),
            ("anthropic-ratelimit-tokens-remaining", "1"),
            ("access-control-allow-origin", "*"),
            ("server", "cloudflare"),
            ("retry-after", "3"),
            ("content-type", "application/json"),
        ]);
        let kept = forwardable_response_headers(&upstream);
        assert_eq!(names(&kept), ["content-type", "retry-after", UPSTREAM_REQUEST_ID_HEADER]);
        assert_eq!(kept[UPSTREAM_REQUEST_ID_HEADER], "up-1");

        let stream =
            map(&[("content-type", "text/event-stream; charset=utf-8"), ("request-id", "a-1")]);
        let kept = forwardable_response_headers(&stream);
        assert_eq!(kept[header::CACHE_CONTROL], "no-cache", "{kept:?}");
        assert_eq!(kept[UPSTREAM_REQUEST_ID_HEADER], "a-1");
        assert!(!forwardable_response_headers(&upstream).contains_key(header::CACHE_CONTROL));
    }

    #[test]
    fn query_credentials_are_judged_decoded_and_never_forwarded() {
        let path = "/v1beta/models/m:streamGenerateContent";
        assert_eq!(upstream_path(path, Some("alt=sse&key=secret")), format!("{path}?alt=sse"));
        assert_eq!(upstream_path("/p", None), "/p");
        assert_eq!(upstream_path("/p", Some("key=a&api_key=b")), "/p");
        assert_eq!(upstream_path("/p", Some("beta=true&flag")), "/p?beta=true&flag");
        // Encoded spellings of a credential name, and names that cannot be decoded once and
        // for all, stay behind; kept pairs go as written.
        for query in ["%6Bey=s", "k%65y=s", "KEY=s", "api%5fkey=s", "access_token=s", "%256Bey=s"] {
            assert_eq!(upstream_path("/p", Some(&format!("{query}&%61lt=sse"))), "/p?%61lt=sse");
        }
        for undecodable in ["k%zzey=s", "key%=s", "key%6=s", "%E9=s", "%+1ey=s"] {
            assert_eq!(upstream_path("/p", Some(undecodable)), "/p", "{undecodable}");
        }
        for query in ["%6Bey=s", "k%65y=1", "a=1&KEY=2", "api-key", "access%5Ftoken=t"] {
            assert!(query_holds_credential(Some(query)), "{query}");
        }
        for query in ["alt=sse", "keys=1", "k+ey=1", "%256Bey=1", "monkey=1"] {
            assert!(!query_holds_credential(Some(query)), "{query}");
        }
        assert!(!query_holds_credential(None));
        assert_eq!(param_name("a+b%2Fc").as_deref(), Some("a b/c"));
    }

    #[tokio::test]
    async fn error_bodies_are_read_up_to_the_cap_and_no_further() {
        let small = Full::new(Bytes::from_static(b"{\"error\":{}}"));
        let read = read_error_body(small, 64).await.unwrap();
        assert_eq!(read.as_deref(), Some(&b"{\"error\":{}}"[..]));
        // A long body is not held beyond the cap: the reading stops there.
        struct Chunks(std::collections::VecDeque<Bytes>);
        impl http_body::Body for Chunks {
            type Data = Bytes;
            type Error = std::convert::Infallible;
            fn poll_frame(
                mut self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
            ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
                std::task::Poll::Ready(self.0.pop_front().map(|c| Ok(http_body::Frame::data(c))))
            }
        }
        let mut long = Chunks((0..10).map(|i| Bytes::from(vec![b'a' + i; 40])).collect());
        assert_eq!(read_error_body(&mut long, 64).await.unwrap(), None);
        assert_eq!(long.0.len(), 8, "read past the cap");
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
