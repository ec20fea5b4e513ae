//! CORS for the client API (`server.cors`): browser pages from the listed origins may call
//! the gateway; pages from any other origin get no CORS header, so the browser keeps the
//! answer from them. Off (no [`Cors`] at all) unless origins are listed, so that the request
//! path pays one `Option` check for it.
//!
//! The gateway calls it at two points (`gateway.rs`): a preflight from a listed origin is
//! answered right after the IP filter and the per-IP bucket, before the client key (a browser
//! never sends the key on a preflight, so it is not a failed authentication); and every
//! answer to a listed origin gets its CORS headers on the way out. The management API is
//! outside both: it refuses any request with an `Origin` (issue 18), and its answers carry no
//! CORS header, so that no page can read them.
//!
//! `Access-Control-Allow-Origin` is always the request's own origin, never `*`, and
//! `Access-Control-Allow-Credentials` is never sent: the client's key travels in a header the
//! page sets itself, not in cookies the browser would add.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};

use crate::config::CorsConfig;
use crate::http_util::{Body, full};

/// The methods of the client API.
const ALLOWED_METHODS: HeaderValue = HeaderValue::from_static("GET, POST");

/// The answer headers a page's script may read: the request id (for support), how long to
/// wait after a 429 or 503, and the gateway's own rate-limit figures.
const EXPOSED_HEADERS: HeaderValue = HeaderValue::from_static(
    "x-request-id, retry-after, x-ratelimit-limit, x-ratelimit-remaining, x-ratelimit-reset",
);

/// `server.cors` as the request path uses it.
#[derive(Debug)]
pub(crate) struct Cors {
    /// The listed origins (lower case, checked at load).
    origins: Vec<HeaderValue>,
    /// `Access-Control-Allow-Headers` of a preflight's answer.
    allowed_headers: HeaderValue,
    /// `Access-Control-Max-Age` of a preflight's answer, in seconds.
    max_age: HeaderValue,
}

impl Cors {
    /// The CORS settings of `config`; `None` when no origin is listed (CORS off).
    pub(crate) fn new(config: &CorsConfig) -> Option<Self> {
        if config.allowed_origins.is_empty() {
            return None;
        }
        // The config check refused anything that is not a header value; one that still is
        // not would match no request, which is the safe side.
        let origins = config
            .allowed_origins
            .iter()
            .filter_map(|origin| HeaderValue::try_from(origin.as_str()).ok())
            .collect();
        let allowed_headers = HeaderValue::try_from(config.allowed_headers.join(", "))
            .unwrap_or_else(|_| HeaderValue::from_static(""));
        Some(Self {
            origins,
            allowed_headers,
            max_age: HeaderValue::from(config.max_age.as_secs()),
        })
    }

    /// The request's `Origin` when it is listed and the path is the client API's.
    pub(crate) fn allowed_origin(&self, path: &str, headers: &HeaderMap) -> Option<HeaderValue> {
        let origin = headers.get(header::ORIGIN)?;
        // The management API never answers a browser.
        if crate::api::is_management(path) {
            return None;
        }
        self.origins.iter().any(|listed| listed == origin).then(|| origin.clone())
    }

    /// The method a CORS preflight from a listed origin asks about (`OPTIONS` with `Origin`
    /// and `Access-Control-Request-Method`); `None` for any other request.
    pub(crate) fn preflight_method(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
    ) -> Option<Method> {
        if method != Method::OPTIONS {
            return None;
        }
        self.allowed_origin(path, headers)?;
        let requested = headers.get(header::ACCESS_CONTROL_REQUEST_METHOD)?;
        Method::from_bytes(requested.as_bytes()).ok()
    }

    /// The answer to a preflight for an endpoint that exists and takes the method asked
    /// about; [`Cors::decorate`] adds the origin.
    pub(crate) fn preflight(&self) -> Response<Body> {
        let mut response = Response::new(full(bytes::Bytes::new()));
        *response.status_mut() = StatusCode::NO_CONTENT;
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, ALLOWED_METHODS);
        headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, self.allowed_headers.clone());
        headers.insert(header::ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
        response
    }

    /// Adds the CORS headers of an answer to `origin` (from [`Cors::allowed_origin`]); with
    /// none, only `Vary: Origin`, since the answer would differ for a listed origin.
    pub(crate) fn decorate(origin: Option<HeaderValue>, headers: &mut HeaderMap) {
        headers.append(header::VARY, HeaderValue::from_static("origin"));
        if let Some(origin) = origin {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, EXPOSED_HEADERS);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors() -> Cors {
        let yaml = "server: {cors: {allowed_origins: [\"https://app.example.com\"], \
                    allowed_headers: [authorization, x-api-key], max_age: 2m}}";
        let config = crate::config::GatewayConfig::from_yaml(yaml).unwrap();
        Cors::new(&config.server.cors).unwrap()
    }

    fn origin(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ORIGIN, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn no_listed_origin_is_no_cors() {
        assert!(Cors::new(&CorsConfig::default()).is_none());
    }

    #[test]
    fn only_a_listed_origin_on_the_client_api_is_allowed() {
        let cors = cors();
        let app = origin("https://app.example.com");
        assert_eq!(
            cors.allowed_origin("/v1/messages", &app),
            Some(HeaderValue::from_static("https://app.example.com"))
        );
        assert_eq!(
            cors.allowed_origin("/v1/messages", &origin("https://app.example.com.evil")),
            None
        );
        assert_eq!(cors.allowed_origin("/v1/messages", &origin("http://app.example.com")), None);
        assert_eq!(cors.allowed_origin("/v1/messages", &HeaderMap::new()), None);
        assert_eq!(cors.allowed_origin("/v0/management", &app), None);
        assert_eq!(cors.allowed_origin("/v0/management/auths", &app), None);
        assert!(cors.allowed_origin("/v0/managementx", &app).is_some());
    }

    #[test]
    fn a_preflight_is_an_options_request_naming_a_method() {
        let cors = cors();
        let mut headers = origin("https://app.example.com");
        assert_eq!(cors.preflight_method(&Method::OPTIONS, "/v1/messages", &headers), None);
        headers.insert(header::ACCESS_CONTROL_REQUEST_METHOD, HeaderValue::from_static("POST"));
        assert_eq!(
            cors.preflight_method(&Method::OPTIONS, "/v1/messages", &headers),
            Some(Method::POST)
        );
        assert_eq!(cors.preflight_method(&Method::POST, "/v1/messages", &headers), None);
        let answer = cors.preflight();
        assert_eq!(answer.status(), StatusCode::NO_CONTENT);
        let headers = answer.headers();
        assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_HEADERS], "authorization, x-api-key");
        assert_eq!(headers[header::ACCESS_CONTROL_MAX_AGE], "120");
        assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_METHODS], "GET, POST");
    }

    #[test]
    fn an_answer_names_the_origin_never_a_wildcard_and_varies_on_it() {
        let mut headers = HeaderMap::new();
        headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
        Cors::decorate(Some(HeaderValue::from_static("https://app.example.com")), &mut headers);
        assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "https://app.example.com");
        let vary: Vec<_> = headers.get_all(header::VARY).iter().collect();
        assert_eq!(vary, ["accept-encoding", "origin"]);
        assert!(!headers.contains_key(header::ACCESS_CONTROL_ALLOW_CREDENTIALS));
        let mut headers = HeaderMap::new();
        Cors::decorate(None, &mut headers);
        assert!(headers.keys().all(|name| !name.as_str().starts_with("access-control-")));
    }
}
