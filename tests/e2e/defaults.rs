//! Defaults that serve the real clients (issue 19): Claude Code asks for `max_tokens` 32000 or
//! 64000 on its first request, so neither a gateway with the default config nor the demo may
//! refuse it; a configured cap still refuses, naming the key to raise.

use cliproxy_e2e::*;
use serde_json::{Value, json};

/// What Claude Code sends on its first request, reduced to the fields validation reads.
fn claude_code_request(max_tokens: u64) -> Value {
    json!({"model": "mock-1", "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": "Hello"}]})
}

async fn messages(base: &str, key: &str, body: &Value) -> (u16, Value) {
    let response = client()
        .post(format!("{base}/v1/messages"))
        .header("x-api-key", key)
        .header("anthropic-version", "2023-06-01")
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn a_default_config_sets_no_max_tokens_cap() {
    let harness = Harness::new();
    harness.config("", "providers:\n  demo: {type: mock, models: [\"mock-*\"]}\n");
    let gateway = harness.start().await;
    for max_tokens in [32_000, 64_000, 128_000] {
        let (status, body) =
            messages(&gateway.url(), CLIENT_KEY, &claude_code_request(max_tokens)).await;
        assert_eq!(status, 200, "max_tokens {max_tokens}: {body}");
    }
}

#[tokio::test]
async fn the_demo_cap_passes_claude_codes_defaults_and_names_its_key() {
    let (_demo, banner) = demo(&["--port", "0"]).await;
    let field = |prefix: &str| {
        banner
            .lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .map(|rest| rest.split_whitespace().next().unwrap().to_owned())
            .unwrap_or_else(|| panic!("no `{prefix}` in the banner:\n{banner}"))
    };
    let (base, key) = (field("base url:"), field("client key:"));
    for max_tokens in [32_000, 64_000] {
        let (status, body) = messages(&base, &key, &claude_code_request(max_tokens)).await;
        assert_eq!(status, 200, "max_tokens {max_tokens}: {body}");
    }
    let (status, body) = messages(&base, &key, &claude_code_request(1_000_000)).await;
    assert_eq!(status, 400, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("server.security.request_validation.max_tokens"), "{body}");
}

const APP: &str = "https://app.example.com";

/// A gateway with `server.cors` listing [`APP`], the mock provider and the management API.
fn cors_gateway(harness: &Harness) -> &Harness {
    harness.write_config(&format!(
        "server:\n  host: 127.0.0.1\n  port: 0\n  \
           cors: {{allowed_origins: [\"{APP}\", \"http://localhost:5173\"], max_age: 5m}}\n\
         auth:\n  api_keys: [{{name: e2e, key: \"{CLIENT_KEY}\"}}]\n  dir: {dir:?}\n\
         management: {{secret_key: \"management-key-cors-0123456789\"}}\n\
         logging: {{level: debug, format: json}}\n\
         providers:\n  demo: {{type: mock, models: [\"mock-*\"]}}\n",
        dir = harness.auth_dir().display().to_string(),
    ))
}

/// One raw HTTP/1.1 request (`Connection: close`) and the answer: status and lower-cased
/// head lines. Raw, so that nothing between the test and the gateway adds or drops a header.
async fn raw(addr: std::net::SocketAddr, head: &str) -> (u16, String) {
    raw_with_body(addr, head, "").await
}

/// [`raw`] with a body (`head` then gives its `Content-Length`).
async fn raw_with_body(addr: std::net::SocketAddr, head: &str, body: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("{head}Host: 127.0.0.1\r\nConnection: close\r\n\r\n{body}");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut answer)).await.unwrap().unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let head = answer.split("\r\n\r\n").next().unwrap_or_default().to_ascii_lowercase();
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, head)
}

/// The value of `name` in a lower-cased head, if present.
fn field<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(':').map(str::trim))
}

#[tokio::test]
async fn a_listed_origin_gets_its_preflight_without_a_key_and_cors_headers_on_replies() {
    let harness = Harness::new();
    let gateway = cors_gateway(&harness).start().await;
    let addr = gateway.addr();

    // What a browser sends before a cross-origin POST with an API key: no key of its own.
    let preflight = |origin: &str, path: &str| {
        format!(
            "OPTIONS {path} HTTP/1.1\r\nOrigin: {origin}\r\nAccess-Control-Request-Method: POST\r\n\
             Access-Control-Request-Headers: x-api-key, anthropic-version, content-type\r\n"
        )
    };
    let (status, head) = raw(addr, &preflight(APP, "/v1/messages")).await;
    assert_eq!(status, 204, "{head}");
    assert_eq!(field(&head, "access-control-allow-origin"), Some(APP), "{head}");
    assert!(field(&head, "vary").is_some_and(|v| v.contains("origin")), "{head}");
    assert!(field(&head, "access-control-allow-methods").is_some_and(|m| m.contains("post")));
    let allowed = field(&head, "access-control-allow-headers").unwrap_or_default();
    for header in ["x-api-key", "anthropic-version", "content-type", "authorization"] {
        assert!(allowed.contains(header), "{header} not allowed: {head}");
    }
    assert_eq!(field(&head, "access-control-max-age"), Some("300"), "{head}");
    assert!(field(&head, "access-control-allow-credentials").is_none(), "{head}");
    assert!(!head.contains(": *"), "a wildcard: {head}");
    // Not a failed authentication either (checked in the log below).
    let (status, _) = raw(addr, &preflight("http://localhost:5173", "/v1/chat/completions")).await;
    assert_eq!(status, 204);

    // The real request from the listed origin gets the origin back, and the headers a
    // browser script may read.
    let body = r#"{"model":"mock-1","max_tokens":16,"messages":[{"role":"user","content":"Hi"}]}"#;
    let post = |origin: &str| {
        format!(
            "POST /v1/messages HTTP/1.1\r\nOrigin: {origin}\r\nx-api-key: {CLIENT_KEY}\r\n\
             anthropic-version: 2023-06-01\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n",
            body.len()
        )
    };
    let (status, head) = raw_with_body(addr, &post(APP), body).await;
    assert_eq!(status, 200, "{head}");
    assert_eq!(field(&head, "access-control-allow-origin"), Some(APP), "{head}");
    assert!(field(&head, "vary").is_some_and(|v| v.contains("origin")), "{head}");
    let exposed = field(&head, "access-control-expose-headers").unwrap_or_default();
    assert!(exposed.contains("x-request-id") && exposed.contains("retry-after"), "{head}");

    // An unlisted origin gets no CORS header at all: the browser keeps the answer from it.
    let (status, head) = raw(addr, &preflight("https://evil.example", "/v1/messages")).await;
    assert_ne!(status, 204, "{head}");
    assert!(!head.contains("access-control-"), "{head}");
    let (status, head) = raw_with_body(addr, &post("https://evil.example"), body).await;
    assert_eq!(status, 200, "{head}");
    assert!(!head.contains("access-control-"), "{head}");

    // The management plane stays closed to browsers, listed origins included, and its
    // answers carry no CORS header.
    let (status, head) = raw(addr, &preflight(APP, "/v0/management/auths")).await;
    assert_ne!(status, 204, "{head}");
    assert!(!head.contains("access-control-"), "{head}");
    let (status, head) = raw(
        addr,
        &format!(
            "GET /v0/management/auths HTTP/1.1\r\nOrigin: {APP}\r\n\
             X-Management-Key: management-key-cors-0123456789\r\n"
        ),
    )
    .await;
    assert_eq!(status, 403, "{head}");
    assert!(!head.contains("access-control-"), "{head}");

    // A keyless request from the listed origin is a failed authentication: its access log
    // line says 401 and why. The preflights' lines must say neither.
    let (status, head) = raw_with_body(
        addr,
        &format!(
            "POST /v1/messages HTTP/1.1\r\nOrigin: {APP}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n",
            body.len()
        ),
        body,
    )
    .await;
    assert_eq!(status, 401, "{head}");
    assert_eq!(field(&head, "access-control-allow-origin"), Some(APP), "{head}");
    let control = field(&head, "x-request-id").unwrap().to_owned();
    gateway.wait_for_log(|entry| entry["msg"] == "request" && entry["request_id"] == control).await;
    let client_lines: Vec<Value> = gateway
        .log_entries("request")
        .into_iter()
        .filter(|entry| entry["path"].as_str().is_some_and(|path| path.starts_with("/v1/")))
        .collect();
    let refused: Vec<&Value> = client_lines.iter().filter(|e| e["status"] == 401).collect();
    assert_eq!(refused.len(), 1, "{client_lines:#?}");
    assert_eq!(refused[0]["request_id"], control.as_str());
    let preflights: Vec<&Value> = client_lines
        .iter()
        .filter(|e| e["method"] == "OPTIONS" && e["status"] == 204 && e["error"].is_null())
        .collect();
    assert_eq!(preflights.len(), 2, "{client_lines:#?}");
}

#[tokio::test]
async fn without_cors_configured_no_answer_carries_a_cors_header() {
    let harness = Harness::new();
    harness.config("", "providers:\n  demo: {type: mock, models: [\"mock-*\"]}\n");
    let gateway = harness.start().await;
    let (status, head) = raw(
        gateway.addr(),
        &format!(
            "OPTIONS /v1/messages HTTP/1.1\r\nOrigin: {APP}\r\nAccess-Control-Request-Method: POST\r\n"
        ),
    )
    .await;
    assert_ne!(status, 204, "{head}");
    assert!(!head.contains("access-control-"), "{head}");
    let (status, head) = raw(
        gateway.addr(),
        &format!(
            "GET /v1/models HTTP/1.1\r\nOrigin: {APP}\r\nAuthorization: Bearer {CLIENT_KEY}\r\n"
        ),
    )
    .await;
    assert_eq!(status, 200, "{head}");
    assert!(!head.contains("access-control-"), "{head}");
}
