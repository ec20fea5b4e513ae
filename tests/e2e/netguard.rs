//! The network guard (layer 4) through the real binary: IP allow/deny lists at accept (also
//! for IPv4-mapped peers), the client address behind trusted proxies, maintenance mode turned
//! on and off at run time, security headers on every answer, the 429s of every limiter with
//! their headers, quotas that survive a restart, the runtime denylist (TTL, persistence), TLS
//! (HTTPS, certificate reload; protocols and suites are in tls.rs) and the header read timeout against slowloris.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cliproxy_e2e::*;
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

const MGMT_KEY: &str = "cpm-e2e-management-key-7d41c09a2b5e";
const ALICE_KEY: &str = "cpk-e2e-alice-key-0c5e7a19d2f3b864";

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// A full config: the test client key (`e2e`), `keys` more `auth.api_keys` entries (YAML list
/// items indented by four), `server` extra keys (indented by two), the management key, the
/// built-in mock provider `demo` with `provider_extra` (`, max_tokens: 100`), then `rest`.
fn write_config(
    harness: &Harness,
    host: &str,
    server: &str,
    keys: &str,
    provider_extra: &str,
    rest: &str,
) {
    let yaml = format!(
        "server:\n  host: \"{host}\"\n  port: 0\n  shutdown_timeout: 10s\n{server}\
         auth:\n  api_keys:\n    - {{name: e2e, key: \"{CLIENT_KEY}\"}}\n{keys}  dir: {dir:?}\n\
         logging: {{level: debug, format: json}}\n\
         management: {{secret_key: \"{MGMT_KEY}\"}}\n\
         providers:\n  demo: {{type: mock, models: [\"mock-*\"]{provider_extra}}}\n{rest}",
        dir = harness.auth_dir().display().to_string(),
    );
    harness.write_config(&yaml);
}

/// A reqwest client whose sockets are bound to `local`.
fn client_from(local: &str) -> reqwest::Client {
    reqwest::Client::builder().no_proxy().local_address(ip(local)).build().unwrap()
}

/// The body of a small chat completion for the mock.
fn chat_body() -> Value {
    json!({"model": "mock-1", "messages": [{"role": "user", "content": "Hi"}]})
}

/// A chat completion sent from `client` with `key` and `headers`; status, headers, body.
async fn chat_with(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> reqwest::Result<(u16, HeaderMap, Value)> {
    let mut request = client.post(format!("{url}/v1/chat/completions")).bearer_auth(key).json(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await?;
    Ok((status, headers, serde_json::from_str(&text).unwrap_or(Value::String(text))))
}

/// A chat completion with the test key from 127.0.0.1 that must get an HTTP answer.
async fn chat(gateway: &Gateway) -> (u16, HeaderMap, Value) {
    chat_with(&client(), &gateway.url(), CLIENT_KEY, &[], &chat_body()).await.unwrap()
}

/// A management call with the right key.
async fn manage(
    gateway: &Gateway,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    manage_with(gateway, MGMT_KEY, method, path, body).await
}

/// How a raw TCP connection from `local` to `addr` ends after sending an HTTP request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Raw {
    /// The gateway closed it (EOF or reset) without a byte of answer.
    Closed,
    /// An HTTP answer started with this status line.
    Answered(String),
}

/// Connects from `local` (port 0), sends `GET /healthz`, and reports what came back.
pub(crate) async fn raw_healthz(local: &str, addr: SocketAddr) -> Raw {
    let socket = if addr.is_ipv6() { TcpSocket::new_v6() } else { TcpSocket::new_v4() }.unwrap();
    socket.bind(SocketAddr::new(ip(local), 0)).unwrap();
    let mut stream = match tokio::time::timeout(WAIT, socket.connect(addr)).await.unwrap() {
        Ok(stream) => stream,
        Err(_) => return Raw::Closed,
    };
    // The write may fail on a connection already reset: that is a refusal too.
    let _ =
        stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n").await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(WAIT, stream.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the gateway neither answered nor closed the connection from {local}");
    if answer.is_empty() {
        return Raw::Closed;
    }
    let text = String::from_utf8_lossy(&answer);
    Raw::Answered(text.lines().next().unwrap_or_default().to_owned())
}

/// Polls `check` until it is true; false after [`WAIT`].
async fn poll_until<F, Fut>(mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    let mut pause = Duration::from_millis(20);
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}

/// The `request` log line of a request whose `client_ip` is `client_ip` and status `status`.
async fn request_logged(gateway: &Gateway, client_ip: &str, status: u16) -> Value {
    gateway
        .wait_for_log(|entry| {
            entry["msg"] == "request"
                && entry["client_ip"] == client_ip
                && entry["status"] == status
        })
        .await
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// The security headers that every answer carries (without TLS: no HSTS).
fn assert_security_headers(headers: &HeaderMap, what: &str) {
    assert_eq!(header(headers, "x-content-type-options"), "nosniff", "{what}: {headers:?}");
    assert_eq!(header(headers, "x-frame-options"), "DENY", "{what}: {headers:?}");
    assert_eq!(header(headers, "x-xss-protection"), "0", "{what}: {headers:?}");
    assert!(!header(headers, "content-security-policy").is_empty(), "{what}: {headers:?}");
}

/// `Retry-After` and the three `X-RateLimit-*` headers, all numbers; returns the limit.
fn assert_rate_headers(headers: &HeaderMap, what: &str) -> u64 {
    for name in ["retry-after", "x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"] {
        assert!(header(headers, name).parse::<u64>().is_ok(), "{what}: {name} in {headers:?}");
    }
    header(headers, "x-ratelimit-limit").parse().unwrap()
}

fn error_message(body: &Value) -> String {
    body["error"]["message"].as_str().unwrap_or_default().to_owned()
}

// ---------------------------------------------------------------- (1) IP lists, client address

#[tokio::test]
async fn denied_and_unlisted_peers_are_dropped_at_accept_and_listed_ones_are_served() {
    let harness = Harness::new();
    write_config(
        &harness,
        "127.0.0.1",
        "  security:\n    ip_allowlist: {enabled: true, allowed_ips: [\"127.0.0.1\", \"127.0.0.3\"], deny_all: true}\n    \
         ip_denylist: {enabled: true, denied_ips: [\"127.0.0.3\"]}\n",
        "",
        "",
        "",
    );
    let gateway = harness.start().await;
    let addr = gateway.addr();

    assert_eq!(raw_healthz("127.0.0.1", addr).await, Raw::Answered("HTTP/1.1 200 OK".into()));
    let (status, _, body) = chat(&gateway).await;
    assert_eq!(status, 200, "{body}");

    // Not on the allowlist, and on both lists (the denylist wins): closed without an answer.
    assert_eq!(raw_healthz("127.0.0.2", addr).await, Raw::Closed, "{}", gateway.logs());
    assert_eq!(raw_healthz("127.0.0.3", addr).await, Raw::Closed, "{}", gateway.logs());
    let refused =
        chat_with(&client_from("127.0.0.2"), &gateway.url(), CLIENT_KEY, &[], &chat_body()).await;
    assert!(refused.is_err(), "127.0.0.2 got an HTTP answer: {refused:?}");

    // Refusals are reported as security violations with the peer's address (at most one
    // line per kind per second, so a flood stays cheap) and every one is counted.
    gateway
        .wait_for_log(|e| {
            e["msg"] == "request refused"
                && e["rejection"] == "ip_denied_connection"
                && (e["ip"] == "127.0.0.2" || e["ip"] == "127.0.0.3")
                && e["event_type"] == "security_violation"
        })
        .await;
    let (status, report) = manage(&gateway, Method::GET, "/status", None).await;
    assert_eq!(status, 200, "{report}");
    let counted = report["layers"]["netguard"]["rejections"]["ip_denied_connection"].as_u64();
    assert!(counted.is_some_and(|n| n >= 3), "{report}");
    // The allowed peer is still served after the refusals.
    assert_eq!(raw_healthz("127.0.0.1", addr).await, Raw::Answered("HTTP/1.1 200 OK".into()));
}

#[tokio::test]
async fn ipv4_mapped_peers_of_a_dual_stack_listener_match_ipv4_rules() {
    let harness = Harness::new();
    write_config(
        &harness,
        "::",
        "  security:\n    ip_allowlist: {enabled: true, allowed_ips: [\"127.0.0.1\", \"127.0.0.2\", \"::1\"], deny_all: true}\n    \
         ip_denylist: {enabled: true, denied_ips: [\"127.0.0.2\"]}\n",
        "",
        "",
        "",
    );
    let gateway = harness.start().await;
    let port = gateway.addr().port();
    let v4: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
    let v6: SocketAddr = format!("[::1]:{port}").parse().unwrap();

    // 127.0.0.1 reaches the [::] listener as ::ffff:127.0.0.1 and matches the IPv4 allow rule.
    assert_eq!(
        raw_healthz("127.0.0.1", v4).await,
        Raw::Answered("HTTP/1.1 200 OK".into()),
        "{}",
        gateway.logs()
    );
    // ::ffff:127.0.0.2 matches the IPv4 deny rule.
    assert_eq!(raw_healthz("127.0.0.2", v4).await, Raw::Closed, "{}", gateway.logs());
    // 127.0.0.4 (::ffff:127.0.0.4) is on neither list: deny_all refuses it.
    assert_eq!(raw_healthz("127.0.0.4", v4).await, Raw::Closed, "{}", gateway.logs());
    // Plain IPv6 follows the IPv6 rule.
    assert_eq!(
        raw_healthz("::1", v6).await,
        Raw::Answered("HTTP/1.1 200 OK".into()),
        "{}",
        gateway.logs()
    );

    // The mapped client is logged in its IPv4 form.
    let (status, _, body) =
        chat_with(&client(), &format!("http://{v4}"), CLIENT_KEY, &[], &chat_body()).await.unwrap();
    assert_eq!(status, 200, "{body}");
    request_logged(&gateway, "127.0.0.1", 200).await;
    gateway
        .wait_for_log(|e| e["rejection"] == "ip_denied_connection" && e["ip"] == "127.0.0.2")
        .await;
}

#[tokio::test]
async fn forwarded_headers_count_only_from_trusted_proxies() {
    let harness = Harness::new();
    write_config(
        &harness,
        "127.0.0.1",
        "  trusted_proxies: [\"127.0.0.1/32\"]\n  security:\n    \
         ip_denylist: {enabled: true, denied_ips: [\"127.0.0.3\", \"203.0.113.0/24\"]}\n",
        "",
        "",
        "",
    );
    let gateway = harness.start().await;
    let url = gateway.url();
    let body = chat_body();
    let untrusted = client_from("127.0.0.2");

    // From an untrusted peer, X-Forwarded-For and Forwarded are ignored: a spoofed denied
    // address neither gets the peer refused nor changes the logged client.
    for headers in [
        vec![("x-forwarded-for", "203.0.113.9")],
        vec![("forwarded", "for=203.0.113.9")],
        vec![("x-forwarded-for", "198.51.100.7")],
    ] {
        let (status, _, answer) =
            chat_with(&untrusted, &url, CLIENT_KEY, &headers, &body).await.unwrap();
        assert_eq!(status, 200, "{headers:?}: {answer}");
    }
    request_logged(&gateway, "127.0.0.2", 200).await;
    assert!(
        gateway
            .log_entries("request")
            .iter()
            .all(|e| e["client_ip"] != "198.51.100.7" && e["client_ip"] != "203.0.113.9"),
        "a spoofed header set the client address:\n{}",
        gateway.logs()
    );

    // From the trusted proxy, the right-most untrusted address is the client.
    let trusted = client();
    let (status, _, answer) = chat_with(
        &trusted,
        &url,
        CLIENT_KEY,
        &[("x-forwarded-for", "203.0.113.9, 198.51.100.7, 127.0.0.1")],
        &body,
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{answer}");
    request_logged(&gateway, "198.51.100.7", 200).await;

    // Only X-Forwarded-For is read (server.forwarded_header): a Forwarded header passed
    // through by the proxy is the client's own writing and is ignored.
    let (status, _, answer) = chat_with(
        &trusted,
        &url,
        CLIENT_KEY,
        &[("forwarded", "for=203.0.113.9;proto=http")],
        &body,
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{answer}");

    // A denied client behind the trusted proxy: 403 in the API's error format.
    for headers in [
        vec![("x-forwarded-for", "198.51.100.7, 203.0.113.9")],
        vec![("x-forwarded-for", "127.0.0.3")],
    ] {
        let (status, headers_back, answer) =
            chat_with(&trusted, &url, CLIENT_KEY, &headers, &body).await.unwrap();
        assert_eq!(status, 403, "{headers:?}: {answer}");
        assert!(answer["error"]["code"].is_string(), "not an OpenAI error: {answer}");
        assert!(error_message(&answer).contains("not allowed"), "{answer}");
        assert_security_headers(&headers_back, "403");
    }
    // The Anthropic endpoint answers the same refusal in its own format.
    let response = trusted
        .post(format!("{url}/v1/messages"))
        .header("x-api-key", CLIENT_KEY)
        .header("x-forwarded-for", "203.0.113.9")
        .json(&json!({"model": "mock-1", "max_tokens": 16, "messages": [{"role": "user", "content": "Hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["type"], "error", "{answer}");
    request_logged(&gateway, "203.0.113.9", 403).await;
    gateway.wait_for_log(|e| e["rejection"] == "ip_denied_request").await;
}

#[tokio::test]
async fn behind_a_forwarded_proxy_only_forwarded_is_read() {
    let harness = Harness::new();
    write_config(
        &harness,
        "127.0.0.1",
        "  trusted_proxies: [\"127.0.0.1/32\"]\n  forwarded_header: forwarded\n  security:\n    \
         ip_denylist: {enabled: true, denied_ips: [\"203.0.113.0/24\"]}\n",
        "",
        "",
        "",
    );
    let gateway = harness.start().await;
    let url = gateway.url();
    // The proxy's Forwarded names a denied client: refused.
    let (status, _, answer) = chat_with(
        &client(),
        &url,
        CLIENT_KEY,
        &[("forwarded", "for=\"203.0.113.9:4711\";proto=http")],
        &chat_body(),
    )
    .await
    .unwrap();
    assert_eq!(status, 403, "{answer}");
    // An X-Forwarded-For the client wrote (and the proxy passed on) is not believed.
    let (status, _, answer) =
        chat_with(&client(), &url, CLIENT_KEY, &[("x-forwarded-for", "203.0.113.9")], &chat_body())
            .await
            .unwrap();
    assert_eq!(status, 200, "{answer}");
    request_logged(&gateway, "127.0.0.1", 200).await;
}

// ------------------------------------------------------------ (2) maintenance, security headers

#[tokio::test]
async fn maintenance_turns_on_and_off_without_restart_and_spares_health_and_management() {
    let harness = Harness::new();
    write_config(&harness, "127.0.0.1", "  maintenance_mode: false\n", "", "", "");
    let gateway = harness.start().await;

    assert_eq!(chat(&gateway).await.0, 200);
    let (status, state) = manage(&gateway, Method::GET, "/maintenance", None).await;
    assert_eq!(status, 200, "{state}");
    assert_eq!(state["enabled"], false, "{state}");

    let (status, state) = manage(
        &gateway,
        Method::PUT,
        "/maintenance",
        Some(json!({"enabled": true, "message": "Back after the e2e upgrade"})),
    )
    .await;
    assert_eq!(status, 200, "{state}");
    assert_eq!(state["enabled"], true, "{state}");
    let (_, state) = manage(&gateway, Method::GET, "/maintenance", None).await;
    assert_eq!(state["enabled"], true, "{state}");

    let (status, headers, body) = chat(&gateway).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(header(&headers, "retry-after"), "60", "{headers:?}");
    assert!(error_message(&body).contains("Back after the e2e upgrade"), "{body}");
    assert_security_headers(&headers, "503 maintenance");

    let health = client().get(format!("{}/healthz", gateway.url())).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let (status, _) = manage(&gateway, Method::GET, "/security/ip-denylist", None).await;
    assert_eq!(status, 200, "the management API must stay up in maintenance");

    let (status, state) =
        manage(&gateway, Method::PUT, "/maintenance", Some(json!({"enabled": false}))).await;
    assert_eq!(status, 200, "{state}");
    let (status, _, body) = chat(&gateway).await;
    assert_eq!(status, 200, "{body}");
    gateway.wait_for_log(|e| e["rejection"] == "maintenance").await;
}

#[tokio::test]
async fn maintenance_from_the_config_uses_the_configured_message() {
    let harness = Harness::new();
    write_config(
        &harness,
        "127.0.0.1",
        "  maintenance_mode: true\n  message: \"Scheduled e2e maintenance\"\n",
        "",
        "",
        "",
    );
    let gateway = harness.start().await;
    let (status, headers, body) = chat(&gateway).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(header(&headers, "retry-after"), "60");
    assert!(error_message(&body).contains("Scheduled e2e maintenance"), "{body}");
    let health = client().get(format!("{}/healthz", gateway.url())).send().await.unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn security_headers_are_on_every_answer_including_errors() {
    let harness = Harness::new();
    write_config(&harness, "127.0.0.1", "", "", "", "");
    let gateway = harness.start().await;
    let url = gateway.url();

    let (status, headers, _) = chat(&gateway).await;
    assert_eq!(status, 200);
    assert_security_headers(&headers, "200");
    assert!(headers.get("strict-transport-security").is_none(), "HSTS without TLS: {headers:?}");

    let (status, headers, _) =
        chat_with(&client(), &url, "cpk-e2e-wrong-key-000000000000", &[], &chat_body())
            .await
            .unwrap();
    assert_eq!(status, 401);
    assert_security_headers(&headers, "401");

    let response = client().get(format!("{url}/no/such/route")).send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert_security_headers(response.headers(), "404");

    let response = client().get(format!("{url}/healthz")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_security_headers(response.headers(), "healthz");

    // Validation refusals (on by default) carry them too. A `max_tokens` of 0 is refused
    // whatever the cap (there is none by default).
    let (status, headers, body) = chat_with(
        &client(),
        &url,
        CLIENT_KEY,
        &[],
        &json!({"model": "mock-1", "max_tokens": 0, "messages": [{"role": "user", "content": "Hi"}]}),
    )
    .await
    .unwrap();
    assert_eq!(status, 400, "{body}");
    assert_security_headers(&headers, "400");
}

#[tokio::test]
async fn request_validation_names_the_cap_that_was_exceeded() {
    let harness = Harness::new();
    write_config(
        &harness,
        "127.0.0.1",
        "  security:\n    request_validation: {enabled: true, max_tokens: 4096}\n",
        "",
        ", max_tokens: 100",
        "  free: {type: mock, models: [\"free-*\"]}\n",
    );
    let gateway = harness.start().await;
    let url = gateway.url();
    let send = |body: Value| {
        let url = url.clone();
        async move { chat_with(&client(), &url, CLIENT_KEY, &[], &body).await.unwrap() }
    };
    let messages = json!([{"role": "user", "content": "Hi"}]);

    // A provider without its own cap: the server-wide cap applies.
    let (status, _, body) =
        send(json!({"model": "free-1", "max_tokens": 5000, "messages": messages})).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        error_message(&body).contains("server.security.request_validation.max_tokens"),
        "{body}"
    );

    let (status, _, body) =
        send(json!({"model": "mock-1", "max_tokens": 200, "messages": messages})).await;
    assert_eq!(status, 400, "{body}");
    assert!(error_message(&body).contains("providers.demo.max_tokens"), "{body}");

    for bad in [json!(-1), json!("many"), json!(1.5)] {
        let (status, _, body) =
            send(json!({"model": "mock-1", "max_tokens": bad, "messages": messages})).await;
        assert_eq!(status, 400, "max_tokens {bad}: {body}");
    }
    let (status, _, body) = send(json!({"model": "mock-1"})).await;
    assert_eq!(status, 400, "no messages: {body}");

    let (status, _, body) =
        send(json!({"model": "mock-1", "max_tokens": 100, "messages": messages})).await;
    assert_eq!(status, 200, "{body}");
    gateway.wait_for_log(|e| e["rejection"] == "invalid_request").await;
}

// ------------------------------------------------------------------------- (3) 429s and quotas

/// Sends chat completions until one is refused (at most `most`); returns the successes before
/// it and the refusal.
async fn until_refused(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    most: usize,
) -> (Vec<HeaderMap>, (u16, HeaderMap, Value)) {
    let mut served = Vec::new();
    for _ in 0..most {
        let (status, headers, body) = chat_with(client, url, key, &[], &chat_body()).await.unwrap();
        if status != 200 {
            return (served, (status, headers, body));
        }
        served.push(headers);
    }
    panic!("{most} requests in a row were served: no limit applied");
}

#[tokio::test]
async fn the_per_ip_limiter_refuses_one_address_with_rate_headers_and_not_another() {
    let harness = Harness::new();
    write_config(
        &harness,
        "127.0.0.1",
        "  security:\n    rate_limiting: {enabled: true, requests_per_second: 1, burst: 3, per_ip: true}\n",
        "",
        "",
        "",
    );
    let gateway = harness.start().await;
    let url = gateway.url();

    let (served, (status, headers, body)) = until_refused(&client(), &url, CLIENT_KEY, 12).await;
    assert!(served.len() >= 3, "the burst of 3 was not served: {body}");
    for headers in &served {
        assert_eq!(header(headers, "x-ratelimit-limit"), "3", "a served answer: {headers:?}");
        assert!(header(headers, "x-ratelimit-remaining").parse::<u64>().is_ok(), "{headers:?}");
    }
    assert_eq!(status, 429, "{body}");
    assert_rate_headers(&headers, "per-IP 429");
    assert_eq!(header(&headers, "x-ratelimit-remaining"), "0", "{headers:?}");
    assert_security_headers(&headers, "429");
    assert!(error_message(&body).contains("server.security.rate_limiting"), "{body}");

    // Another address has its own bucket.
    let (status, _, body) =
        chat_with(&client_from("127.0.0.2"), &url, CLIENT_KEY, &[], &chat_body()).await.unwrap();
    assert_eq!(status, 200, "{body}");
    gateway.wait_for_log(|e| e["rejection"] == "per_ip_rate_limit" && e["ip"] == "127.0.0.1").await;
}

#[tokio::test]
async fn the_global_limiter_refuses_every_address_once_spent() {
    let harness = Harness::new();
    write_config(
        &harness,
        "127.0.0.1",
        "  rate_limit: {enabled: true, requests_per_second: 1, burst: 2}\n",
        "",
        "",
        "",
    );
    let gateway = harness.start().await;
    let url = gateway.url();

    let (served, (status, headers, body)) = until_refused(&client(), &url, CLIENT_KEY, 12).await;
    assert!(served.len() >= 2, "the burst of 2 was not served: {body}");
    assert_eq!(status, 429, "{body}");
    assert_rate_headers(&headers, "global 429");
    assert!(error_message(&body).contains("server.rate_limit"), "{body}");
    // Straight after, another address is refused as well (the bucket is shared). The bucket
    // refills one token a second, so retry until a refusal is seen from the other address.
    let other = client_from("127.0.0.2");
    let (_, (status, headers, body)) = until_refused(&other, &url, CLIENT_KEY, 4).await;
    assert_eq!(status, 429, "{body}");
    assert_rate_headers(&headers, "global 429 for 127.0.0.2");
    assert!(error_message(&body).contains("server.rate_limit"), "{body}");
}

/// Issue 18, item 3: keyless and wrong-key requests from many addresses, each under its
/// per-IP limit, used to empty the global bucket (charged before authentication), and then
/// every keyed request was refused. Strangers now draw on a budget of their own.
#[tokio::test]
async fn a_keyless_flood_from_many_addresses_cannot_starve_keyed_clients() {
    let harness = Harness::new();
    // A small global bucket that refills slowly, generous per-IP buckets, and the loopback
    // peer trusted as a proxy so that `X-Forwarded-For` names 80 distinct clients.
    write_config(
        &harness,
        "127.0.0.1",
        "  trusted_proxies: [127.0.0.0/8]\n  forwarded_header: x-forwarded-for\n  \
         rate_limit: {enabled: true, requests_per_second: 1, burst: 20}\n  \
         security:\n    rate_limiting: {enabled: true, requests_per_second: 1, burst: 3, per_ip: true}\n",
        "",
        "",
        "metrics: {enabled: true, host: 127.0.0.1, port: 0}\n",
    );
    let gateway = harness.start().await;
    let url = gateway.url();
    let client = client();

    // 80 addresses, two requests each (under the per-IP burst of 3): one without a key, one
    // with a wrong key. 160 requests are eight times the global burst.
    let (mut unauthorized, mut limited) = (0, 0);
    for n in 1..=80 {
        let from = format!("198.51.100.{n}");
        for key in [None, Some("cpk-not-a-key-of-this-gateway")] {
            let mut request = client
                .post(format!("{url}/v1/chat/completions"))
                .header("x-forwarded-for", &from)
                .json(&chat_body());
            if let Some(key) = key {
                request = request.bearer_auth(key);
            }
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap();
            match status {
                401 => unauthorized += 1,
                429 => {
                    // The strangers' budget has the size of `server.rate_limit` and says so.
                    assert!(error_message(&body).contains("server.rate_limit"), "{from}: {body}");
                    limited += 1;
                }
                other => panic!("{from}: a request without a valid key got {other}: {body}"),
            }
        }
    }
    // The flood is still limited as a whole: at most the burst (plus the tokens refilled while
    // it ran) got as far as a 401, the rest were refused by the strangers' bucket.
    assert!(limited > 0, "160 keyless requests against a burst of 20 were never limited");
    assert!(unauthorized >= 20, "the strangers' burst of 20 was not available: {unauthorized}");

    // Straight after the flood, keyed clients are served: their bucket was never touched.
    for n in 1..=5 {
        let from = format!("203.0.113.{n}");
        let (status, _, body) =
            chat_with(&client, &url, CLIENT_KEY, &[("x-forwarded-for", &from)], &chat_body())
                .await
                .unwrap();
        assert_eq!(status, 200, "a keyed request from {from} after the keyless flood: {body}");
    }
    gateway.wait_for_log(|e| e["rejection"] == "global_rate_limit").await;

    // Every failed authentication is still counted for the metrics and the alert rules,
    // those refused by the strangers' bucket included (they have no audit line of their own).
    let listening = gateway.wait_for_log(|e| e["msg"] == "metrics listening").await;
    let metrics = listening["addr"].as_str().unwrap();
    let text = client.get(format!("http://{metrics}/metrics")).send().await.unwrap();
    let text = text.text().await.unwrap();
    let series = "cliproxy_auth_failures_total{provider=\"none\"} ";
    let failures = text.lines().find_map(|line| line.strip_prefix(series));
    assert_eq!(failures.map(str::trim), Some("160"), "{text}");
}

/// The usual config plus a second client key, `alice`, with `settings` (YAML flow entries such
/// as `quota: {...}`), and `rest` at the top level.
fn write_alice_config(harness: &Harness, settings: &str, rest: &str) {
    write_config(
        harness,
        "127.0.0.1",
        "",
        &format!("    - {{name: alice, key: \"{ALICE_KEY}\", {settings}}}\n"),
        "",
        rest,
    );
}

#[tokio::test]
async fn client_key_requests_per_minute_refuse_that_key_only() {
    let harness = Harness::new();
    write_alice_config(
        &harness,
        "rate_limit: {requests_per_minute: 2, tokens_per_minute: 100000}",
        "",
    );
    let gateway = harness.start().await;
    let url = gateway.url();

    let (served, (status, headers, body)) = until_refused(&client(), &url, ALICE_KEY, 5).await;
    assert_eq!(served.len(), 2, "alice's 2 requests per minute: {body}");
    for headers in &served {
        assert_eq!(header(headers, "x-ratelimit-limit"), "2", "a served answer: {headers:?}");
    }
    assert_eq!(status, 429, "{body}");
    assert_eq!(assert_rate_headers(&headers, "client rpm 429"), 2);
    assert!(
        error_message(&body).contains("auth.api_keys[alice].rate_limit.requests_per_minute"),
        "{body}"
    );
    // The other key is not limited.
    let (status, _, body) = chat(&gateway).await;
    assert_eq!(status, 200, "{body}");
    gateway.wait_for_log(|e| e["rejection"] == "minute_limit").await;
}

#[tokio::test]
async fn client_key_tokens_per_minute_count_the_real_usage() {
    let harness = Harness::new();
    write_alice_config(
        &harness,
        "rate_limit: {requests_per_minute: 100, tokens_per_minute: 200}",
        "",
    );
    let gateway = harness.start().await;
    let url = gateway.url();
    // About 130 tokens each (the mock counts a token per four bytes of request), far more
    // than the 50 reserved: the real usage is what the minute is charged.
    let long = json!({"model": "mock-1", "max_tokens": 50,
        "messages": [{"role": "user", "content": "lorem ipsum ".repeat(40)}]});
    let mut served = 0;
    let refusal = loop {
        let (status, headers, body) =
            chat_with(&client(), &url, ALICE_KEY, &[], &long).await.unwrap();
        if status != 200 {
            break (status, headers, body);
        }
        served += 1;
        assert!(served < 6, "200 tokens per minute never refused: {body}");
    };
    let (status, headers, body) = refusal;
    assert!(served >= 1, "{body}");
    assert_eq!(status, 429, "{body}");
    assert_eq!(assert_rate_headers(&headers, "client tpm 429"), 200);
    assert!(
        error_message(&body).contains("auth.api_keys[alice].rate_limit.tokens_per_minute"),
        "{body}"
    );
    let (status, _, body) = chat(&gateway).await;
    assert_eq!(status, 200, "the other key has no token limit: {body}");
}

#[tokio::test]
async fn provider_requests_per_minute_refuse_every_key() {
    let harness = Harness::new();
    write_config(
        &harness,
        "127.0.0.1",
        "",
        &format!("    - {{name: alice, key: \"{ALICE_KEY}\"}}\n"),
        ", rate_limit: {requests_per_minute: 3, tokens_per_minute: 100000}",
        "",
    );
    let gateway = harness.start().await;
    let url = gateway.url();
    let (served, (status, headers, body)) = until_refused(&client(), &url, CLIENT_KEY, 6).await;
    assert_eq!(served.len(), 3, "{body}");
    assert_eq!(status, 429, "{body}");
    assert_rate_headers(&headers, "provider rpm 429");
    assert!(
        error_message(&body).contains("providers.demo.rate_limit.requests_per_minute"),
        "{body}"
    );
    let (status, _, body) = chat_with(&client(), &url, ALICE_KEY, &[], &chat_body()).await.unwrap();
    assert_eq!(status, 429, "the provider limit is for every key: {body}");
}

/// A gateway config where the key `alice` has a daily quota of 100 tokens.
fn alice_with_a_daily_quota_of_100(flush_interval: &str) -> Harness {
    let harness = Harness::new();
    write_alice_config(
        &harness,
        "quota: {limit: 100, reset: daily}",
        &format!("state: {{flush_interval: {flush_interval}}}\n"),
    );
    harness
}

/// One request from `alice` long enough to spend her quota of 100; the tokens it used.
async fn spend_alices_quota(url: &str) -> u64 {
    // The mock counts about a token per four bytes of request: a long prompt spends the quota.
    let long = json!({"model": "mock-1", "messages": [{"role": "user", "content": "lorem ipsum ".repeat(40)}]});
    let (status, _, body) = chat_with(&client(), url, ALICE_KEY, &[], &long).await.unwrap();
    assert_eq!(status, 200, "{body}");
    let used = body["usage"]["total_tokens"].as_u64().unwrap();
    assert!(used >= 100, "the first request should spend the quota of 100, used {used}");
    used
}

#[tokio::test]
async fn an_exhausted_quota_stays_exhausted_after_a_restart() {
    let harness = alice_with_a_daily_quota_of_100("500ms");
    let mut gateway = harness.start().await;
    let url = gateway.url();

    spend_alices_quota(&url).await;

    let (status, headers, body) =
        chat_with(&client(), &url, ALICE_KEY, &[], &chat_body()).await.unwrap();
    assert_eq!(status, 429, "{body}");
    assert_rate_headers(&headers, "quota 429");
    let message = error_message(&body);
    assert!(message.contains("auth.api_keys[alice].quota"), "{message}");
    assert!(message.contains("resets at"), "{message}");
    let at = message.split("resets at ").nth(1).unwrap_or_default();
    assert!(
        at.len() >= 20 && at.as_bytes()[10] == b'T' && at[..20].ends_with('Z'),
        "not a UTC time: {message}"
    );
    // The other key has no quota.
    assert_eq!(chat(&gateway).await.0, 200);

    // A graceful stop writes the usage; the next start still refuses alice.
    gateway.terminate();
    assert!(gateway.wait().await.success(), "{}", gateway.logs());
    let gateway = harness.start().await;
    let (status, headers, body) =
        chat_with(&client(), &gateway.url(), ALICE_KEY, &[], &chat_body()).await.unwrap();
    assert_eq!(status, 429, "the quota was forgotten at restart: {body}\n{}", gateway.logs());
    assert_rate_headers(&headers, "quota 429 after restart");
    assert!(error_message(&body).contains("resets at"), "{body}");
}

/// Alice's stored quota count in the state database, read the way an operator would: a
/// read-only connection beside the running gateway.
fn stored_quota(harness: &Harness) -> Option<i64> {
    let path = harness.auth_dir().join(".state.db");
    let db =
        rusqlite::Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .ok()?;
    db.query_row(
        "SELECT tokens FROM quota_usage WHERE scope = 'client' AND name = 'alice'",
        [],
        |row| row.get(0),
    )
    .ok()
}

#[tokio::test]
async fn quota_usage_reaches_the_state_database_within_a_flush_and_survives_sigkill() {
    let harness = alice_with_a_daily_quota_of_100("200ms");
    let mut gateway = harness.start().await;
    let url = gateway.url();
    let used = i64::try_from(spend_alices_quota(&url).await).unwrap();
    // Written in the background by the state store's writer, with no shutdown to help.
    let written = poll_until(|| async { stored_quota(&harness) == Some(used) }).await;
    assert!(
        written,
        "quota usage {used} never reached the database: {:?}\n{}",
        stored_quota(&harness),
        gateway.logs()
    );
    // A crash now loses nothing already flushed.
    assert!(!gateway.kill().await.success());
    let gateway = harness.start().await;
    let (status, _, body) =
        chat_with(&client(), &gateway.url(), ALICE_KEY, &[], &chat_body()).await.unwrap();
    assert_eq!(status, 429, "the quota was forgotten after SIGKILL: {body}\n{}", gateway.logs());
}

// ------------------------------------------------------------------------ (4) runtime denylist

#[tokio::test]
async fn the_runtime_denylist_applies_at_once_expires_and_survives_a_restart() {
    let harness = Harness::new();
    write_config(&harness, "127.0.0.1", "", "", "", "");
    let mut gateway = harness.start().await;
    let addr = gateway.addr();
    assert_eq!(raw_healthz("127.0.0.3", addr).await, Raw::Answered("HTTP/1.1 200 OK".into()));

    let (status, entry) = manage(
        &gateway,
        Method::POST,
        "/security/ip-denylist",
        Some(json!({"ip": "127.0.0.3", "reason": "e2e abuse"})),
    )
    .await;
    assert_eq!(status, 201, "{entry}");
    assert_eq!(entry["ip"], "127.0.0.3/32", "{entry}");
    assert_eq!(entry["reason"], "e2e abuse", "{entry}");
    assert!(entry["expires_at"].is_null(), "{entry}");
    assert_eq!(raw_healthz("127.0.0.3", addr).await, Raw::Closed);
    assert_eq!(raw_healthz("127.0.0.2", addr).await, Raw::Answered("HTTP/1.1 200 OK".into()));

    // Replacing answers 200.
    let (status, entry) = manage(
        &gateway,
        Method::POST,
        "/security/ip-denylist",
        Some(json!({"ip": "127.0.0.3", "reason": "e2e abuse, again"})),
    )
    .await;
    assert_eq!(status, 200, "{entry}");

    // A range, and a short-lived entry.
    let (status, entry) = manage(
        &gateway,
        Method::POST,
        "/security/ip-denylist",
        Some(json!({"ip": "10.0.0.0/8", "reason": "range", "ttl": 3600})),
    )
    .await;
    assert_eq!(status, 201, "{entry}");
    assert_eq!(
        entry["expires_at"].as_u64().unwrap() - entry["created_at"].as_u64().unwrap(),
        3600,
        "a ttl in seconds: {entry}"
    );
    let (status, entry) = manage(
        &gateway,
        Method::POST,
        "/security/ip-denylist",
        Some(json!({"ip": "127.0.0.4", "reason": "short", "ttl": "2s"})),
    )
    .await;
    assert_eq!(status, 201, "{entry}");
    assert!(
        entry["expires_at"].as_u64().unwrap() > entry["created_at"].as_u64().unwrap(),
        "{entry}"
    );
    assert_eq!(raw_healthz("127.0.0.4", addr).await, Raw::Closed);

    let (status, list) = manage(&gateway, Method::GET, "/security/ip-denylist", None).await;
    assert_eq!(status, 200, "{list}");
    let ips: Vec<&str> =
        list["entries"].as_array().unwrap().iter().filter_map(|e| e["ip"].as_str()).collect();
    assert!(ips.contains(&"127.0.0.3/32") && ips.contains(&"10.0.0.0/8"), "{list}");
    let third =
        list["entries"].as_array().unwrap().iter().find(|e| e["ip"] == "127.0.0.3/32").unwrap();
    assert_eq!(third["reason"], "e2e abuse, again", "{list}");
    assert!(third["created_at"].as_u64().is_some(), "{list}");

    // The TTL entry lapses by itself.
    assert!(
        poll_until(|| async {
            raw_healthz("127.0.0.4", addr).await == Raw::Answered("HTTP/1.1 200 OK".into())
        })
        .await,
        "timed out waiting until the 1 s denylist entry for 127.0.0.4 expired; logs:\n{}",
        gateway.logs()
    );

    // Persisted: a restart (even a crash) keeps 127.0.0.3 and the range refused.
    gateway.kill().await;
    let gateway = harness.start().await;
    let addr = gateway.addr();
    assert_eq!(raw_healthz("127.0.0.3", addr).await, Raw::Closed, "{}", gateway.logs());
    let (_, list) = manage(&gateway, Method::GET, "/security/ip-denylist", None).await;
    let ips: Vec<&str> =
        list["entries"].as_array().unwrap().iter().filter_map(|e| e["ip"].as_str()).collect();
    assert!(ips.contains(&"127.0.0.3/32") && ips.contains(&"10.0.0.0/8"), "{list}");
    assert!(!ips.contains(&"127.0.0.4/32"), "the expired entry came back: {list}");

    // Removal: at once, 404 the second time, and a range by its CIDR.
    let (status, body) =
        manage(&gateway, Method::DELETE, "/security/ip-denylist/127.0.0.3", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(raw_healthz("127.0.0.3", addr).await, Raw::Answered("HTTP/1.1 200 OK".into()));
    let (status, body) =
        manage(&gateway, Method::DELETE, "/security/ip-denylist/127.0.0.3", None).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) =
        manage(&gateway, Method::DELETE, "/security/ip-denylist/10.0.0.0/8", None).await;
    assert_eq!(status, 200, "{body}");
    let (_, list) = manage(&gateway, Method::GET, "/security/ip-denylist", None).await;
    assert_eq!(list["entries"], json!([]), "{list}");
}

#[tokio::test]
async fn bad_denylist_entries_are_refused_with_400() {
    let harness = Harness::new();
    write_config(&harness, "127.0.0.1", "", "", "", "");
    let gateway = harness.start().await;
    for body in [
        json!({"ip": "not-an-ip"}),
        json!({"ip": "10.0.0.1/8"}),
        json!({"ip": "127.0.0.5", "ttl": 0}),
        json!({"ip": "127.0.0.5", "ttl": "soon"}),
        json!({"ip": "127.0.0.5", "surprise": true}),
    ] {
        let (status, answer) =
            manage(&gateway, Method::POST, "/security/ip-denylist", Some(body.clone())).await;
        assert_eq!(status, 400, "{body}: {answer}");
    }
    let (_, list) = manage(&gateway, Method::GET, "/security/ip-denylist", None).await;
    assert_eq!(list["entries"], json!([]), "{list}");
}

// --------------------------------------------------------------------------------- (6) slowloris

/// How long a connection may take to send its headers (the slowloris test) or its TLS
/// handshake (the silent TLS client test), and the bounds put on when it is cut off. The other
/// client of each test must be served within the timeout while the first waits: 4 s is 40
/// times what that exchange takes on an idle machine (about 100 ms, openssl included), so a
/// loaded two-core runner does not lose the race. The cut-off cannot come before the timeout
/// (the test's clock starts before it connects, the gateway's when it accepts); it may come
/// later by the time a busy machine takes to run the timer, for which 5 s are allowed. That
/// keeps the bound under the 10 s default of both settings, so a gateway that ignored the
/// configured value would fail it.
const CUT_OFF_AFTER: Duration = Duration::from_secs(4);
const CUT_OFF_LATE_BY: Duration = Duration::from_secs(5);

#[tokio::test]
async fn a_slowloris_client_is_cut_off_while_others_are_served() {
    let harness = Harness::new();
    let limits = format!("  limits: {{header_read_timeout: {}s}}\n", CUT_OFF_AFTER.as_secs());
    write_config(&harness, "127.0.0.1", &limits, "", "", "");
    let gateway = harness.start().await;

    let started = Instant::now();
    let mut slow = tokio::net::TcpStream::connect(gateway.addr()).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: gw\r\nX-Slow: ").await.unwrap();
    let reader = tokio::spawn(async move {
        let mut answer = Vec::new();
        let result = slow.read_to_end(&mut answer).await;
        (started.elapsed(), result.is_ok(), answer)
    });

    // Meanwhile another client is served.
    let served = client().get(format!("{}/healthz", gateway.url())).send().await.unwrap();
    assert_eq!(served.status(), 200);
    assert!(!reader.is_finished(), "the slow client was cut off before the other was served");

    let (elapsed, _, answer) = tokio::time::timeout(WAIT, reader).await.unwrap().unwrap();
    assert!(elapsed >= CUT_OFF_AFTER, "cut off after {elapsed:?}");
    assert!(elapsed < CUT_OFF_AFTER + CUT_OFF_LATE_BY, "cut off only after {elapsed:?}");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 408"), "{answer}");
}

// ---------------------------------------------------------------------------------------- (5) TLS

/// How a new certificate pair takes the place of the old one.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Replace {
    /// The files are overwritten where they are (same inodes).
    InPlace,
    /// New files are renamed over the old ones (new inodes), as certbot-style tools and
    /// atomic deploys do.
    Rename,
}

/// Writes a self-signed certificate for 127.0.0.1 with common name `cn` (and its key) with
/// the `openssl` command, to `cert` and `key`.
fn make_cert(dir: &Path, cn: &str, cert: &Path, key: &Path, how: Replace) {
    let tmp_cert = dir.join(format!("{cn}.crt"));
    let tmp_key = dir.join(format!("{cn}.key"));
    let output = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"])
        .args(["-nodes", "-days", "2", "-keyout"])
        .arg(&tmp_key)
        .arg("-out")
        .arg(&tmp_cert)
        .args(["-subj", &format!("/CN={cn}"), "-addext", "subjectAltName=IP:127.0.0.1"])
        .output()
        .expect("run openssl req");
    assert!(output.status.success(), "openssl req: {}", String::from_utf8_lossy(&output.stderr));
    match how {
        Replace::InPlace => {
            std::fs::write(key, std::fs::read(&tmp_key).unwrap()).unwrap();
            std::fs::write(cert, std::fs::read(&tmp_cert).unwrap()).unwrap();
        }
        Replace::Rename => {
            std::fs::rename(&tmp_key, key).unwrap();
            std::fs::rename(&tmp_cert, cert).unwrap();
        }
    }
}

/// A gateway serving TLS from `cert`/`key` in `dir` (first certificate: CN `e2e-first`),
/// reloading every second.
async fn tls_gateway(harness: &Harness, dir: &Path) -> (Gateway, std::path::PathBuf) {
    tls_gateway_with(harness, dir, "5s", "1s").await
}

async fn tls_gateway_with(
    harness: &Harness,
    dir: &Path,
    handshake_timeout: &str,
    reload_interval: &str,
) -> (Gateway, std::path::PathBuf) {
    let cert = dir.join("server.crt");
    let key = dir.join("server.key");
    make_cert(dir, "e2e-first", &cert, &key, Replace::InPlace);
    write_config(
        harness,
        "127.0.0.1",
        &format!(
            "  tls: {{enabled: true, cert_file: {:?}, key_file: {:?}, min_version: \"1.2\", \
             handshake_timeout: {handshake_timeout}, reload_interval: {reload_interval}}}\n",
            cert.display().to_string(),
            key.display().to_string()
        ),
        "",
        "",
        "",
    );
    (harness.start().await, cert)
}

/// `openssl s_client` against `addr` with `args`, stdin `input`; exit success and all output.
async fn s_client(addr: SocketAddr, args: &[&str], input: &str) -> (bool, String) {
    let mut child = tokio::process::Command::new("openssl")
        .args(["s_client", "-connect", &addr.to_string(), "-servername", "localhost"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run openssl s_client");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).await.unwrap();
    drop(stdin);
    let output = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("openssl s_client did not finish")
        .unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

const HEALTHZ: &str = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";

#[tokio::test]
async fn tls_serves_https_and_reloads_the_certificate() {
    let harness = Harness::new();
    let dir = tempfile::tempdir().unwrap();
    let (gateway, cert) = tls_gateway(&harness, dir.path()).await;
    let key = dir.path().join("server.key");
    let addr = gateway.addr();
    // The first certificate, kept as the trust anchor (the file itself is overwritten later).
    let first = dir.path().join("first.pem");
    std::fs::copy(&cert, &first).unwrap();
    let ca = first.display().to_string();

    // HTTPS works, verified against the certificate, with HSTS.
    let (ok, out) =
        s_client(addr, &["-CAfile", &ca, "-verify_return_error", "-ign_eof"], HEALTHZ).await;
    assert!(ok, "{out}");
    assert!(out.contains("HTTP/1.1 200"), "{out}");
    assert!(out.to_ascii_lowercase().contains("strict-transport-security"), "{out}");
    assert!(out.contains("e2e-first"), "{out}");
    // Plain HTTP on the TLS port gets no HTTP answer.
    assert!(
        !matches!(raw_healthz("127.0.0.1", addr).await, Raw::Answered(line) if line.contains("200"))
    );

    // Protocols and suites: the catalogue in tls.rs.

    // A connection opened before the reload keeps working after it.
    let mut held = tokio::process::Command::new("openssl")
        .args(["s_client", "-connect", &addr.to_string(), "-quiet", "-ign_eof"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut held_in = held.stdin.take().unwrap();
    let mut held_out = held.stdout.take().unwrap();
    let seen = Arc::new(Mutex::new(String::new()));
    let sink = Arc::clone(&seen);
    tokio::spawn(async move {
        let mut buffer = [0_u8; 4096];
        while let Ok(n) = held_out.read(&mut buffer).await {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buffer[..n]));
        }
    });
    let keep_alive = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    held_in.write_all(keep_alive.as_bytes()).await.unwrap();
    assert!(
        poll_until(|| async { seen.lock().unwrap().matches("HTTP/1.1 200").count() == 1 }).await,
        "timed out waiting until the held connection answered; logs:\n{}",
        gateway.logs()
    );

    make_cert(dir.path(), "e2e-second", &cert, &key, Replace::InPlace);
    assert!(
        poll_until(|| async {
            let (_, out) = s_client(addr, &[], "").await;
            out.contains("e2e-second")
        })
        .await,
        "timed out waiting until a new handshake presents the new certificate; logs:\n{}",
        gateway.logs()
    );
    gateway.wait_for_log(|e| e["msg"] == "TLS certificate reloaded").await;
    let (ok, out) =
        s_client(addr, &["-CAfile", &ca, "-verify_return_error", "-ign_eof"], HEALTHZ).await;
    assert!(
        !ok || !out.contains("HTTP/1.1 200"),
        "the old certificate still verifies the new one:\n{out}"
    );

    held_in.write_all(keep_alive.as_bytes()).await.unwrap();
    assert!(
        poll_until(|| async { seen.lock().unwrap().matches("HTTP/1.1 200").count() == 2 }).await,
        "timed out waiting until the connection opened before the reload answered again; logs:\n{}",
        gateway.logs()
    );
}

#[tokio::test]
async fn tls_reload_picks_up_a_certificate_renamed_into_place() {
    let harness = Harness::new();
    let dir = tempfile::tempdir().unwrap();
    let (gateway, cert) = tls_gateway(&harness, dir.path()).await;
    let addr = gateway.addr();
    let (ok, out) = s_client(addr, &[], "").await;
    assert!(ok && out.contains("e2e-first"), "{out}");

    make_cert(dir.path(), "e2e-renamed", &cert, &dir.path().join("server.key"), Replace::Rename);
    assert!(
        poll_until(|| async {
            let (_, out) = s_client(addr, &[], "").await;
            out.contains("e2e-renamed")
        })
        .await,
        "a certificate renamed over server.tls.cert_file was never served; logs:\n{}",
        gateway.logs()
    );
    assert!(
        gateway
            .log_entries("TLS certificate not reloaded; the previous one stays in service")
            .is_empty(),
        "{}",
        gateway.logs()
    );
}

#[tokio::test]
async fn a_silent_tls_client_is_cut_off_at_the_handshake_timeout_while_others_handshake() {
    let harness = Harness::new();
    let dir = tempfile::tempdir().unwrap();
    let timeout = format!("{}s", CUT_OFF_AFTER.as_secs());
    let (gateway, _) = tls_gateway_with(&harness, dir.path(), &timeout, "1s").await;
    // Connects and says nothing: no ClientHello.
    let started = Instant::now();
    let mut silent = tokio::net::TcpStream::connect(gateway.addr()).await.unwrap();
    let reader = tokio::spawn(async move {
        let mut answer = Vec::new();
        let _ = silent.read_to_end(&mut answer).await;
        (started.elapsed(), answer)
    });
    // The accept loop is not held up: a full handshake and request go through meanwhile.
    let (ok, text) = s_client(gateway.addr(), &["-tls1_3", "-ign_eof"], HEALTHZ).await;
    assert!(ok && text.contains("200 OK"), "{text}");
    assert!(!reader.is_finished(), "the silent client was cut off before the other handshook");
    let (elapsed, answer) = tokio::time::timeout(WAIT, reader).await.unwrap().unwrap();
    assert!(elapsed >= CUT_OFF_AFTER, "cut off after {elapsed:?}");
    assert!(elapsed < CUT_OFF_AFTER + CUT_OFF_LATE_BY, "cut off only after {elapsed:?}");
    assert!(answer.is_empty(), "{answer:?}");
}

#[tokio::test]
async fn a_runtime_deny_stops_a_connection_that_was_already_open() {
    let harness = Harness::new();
    write_config(&harness, "127.0.0.1", "", "", "", "");
    let gateway = harness.start().await;
    // One keep-alive connection from 127.0.0.2, served before the entry exists.
    let pooled = client_from("127.0.0.2");
    let (status, _, body) =
        chat_with(&pooled, &gateway.url(), CLIENT_KEY, &[], &chat_body()).await.unwrap();
    assert_eq!(status, 200, "{body}");
    let (status, entry) = manage(
        &gateway,
        Method::POST,
        "/security/ip-denylist",
        Some(json!({"ip": "127.0.0.2", "reason": "abuse"})),
    )
    .await;
    assert_eq!(status, 201, "{entry}");
    // The next request on the same connection is refused, not only new connections.
    let (status, _, body) =
        chat_with(&pooled, &gateway.url(), CLIENT_KEY, &[], &chat_body()).await.unwrap();
    assert_eq!(status, 403, "{body}");
}

/// A gateway whose provider `oa` (OpenAI type, at `mock`, one credential) has a daily quota
/// of 100 tokens.
fn openai_provider_with_a_daily_quota_of_100(mock: &MockUpstream) -> Harness {
    let harness = Harness::new();
    harness.config(
        "",
        &format!(
            "providers:\n  oa: {{type: openai, base_url: \"{}\", models: [\"gpt-*\"], \
             quota: {{limit: 100, reset: daily}}}}\n",
            mock.url()
        ),
    );
    harness.vault_add("oa", "oa-1", "sk-upstream-token-0123456789", None);
    harness
}

#[tokio::test]
async fn streams_that_report_no_usage_are_charged_their_estimate() {
    // An OpenAI stream without a usage chunk (an upstream that ignores the include_usage the
    // gateway asks for).
    let events = canned::openai_stream("gpt-x", &["a", "b"]);
    let mock = MockUpstream::start(move |_| Reply::sse(events.clone())).await;
    let harness = openai_provider_with_a_daily_quota_of_100(&mock);
    let gateway = harness.start().await;
    let body = json!({"model": "gpt-x", "stream": true, "max_tokens": 60,
        "messages": [{"role": "user", "content": "Hi"}]});
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let mut response = client()
            .post(format!("{}/v1/chat/completions", gateway.url()))
            .bearer_auth(CLIENT_KEY)
            .json(&body)
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
        let mut seen = String::new();
        read_to_end(&mut response, &mut seen).await;
    }
    // Twice 60 tokens of output and about 23 of prompt charged: the third request finds the
    // quota of 100 spent.
    assert_eq!(statuses, [200, 200, 429, 429], "{}", gateway.logs());
}

#[tokio::test]
async fn parallel_requests_cannot_all_pass_on_one_quota_remainder() {
    // Every reply sends its first event, then waits at a gate: no usage is known while the
    // test sends its requests.
    let gate = Arc::new(tokio::sync::Notify::new());
    let events = canned::openai_stream("gpt-x", &["a", "b"]);
    let mock = {
        let gate = gate.clone();
        MockUpstream::start(move |_| Reply::Sse {
            events: events.clone(),
            hold_after: 1,
            gate: Some(gate.clone()),
        })
        .await
    };
    let harness = openai_provider_with_a_daily_quota_of_100(&mock);
    let gateway = harness.start().await;
    let body = json!({"model": "gpt-x", "stream": true, "max_tokens": 60,
        "messages": [{"role": "user", "content": "Hi"}]});
    let mut held = Vec::new();
    let mut statuses = Vec::new();
    // One after another, each admitted stream still open: the in-flight estimates (60 each
    // and the prompt's) count against the quota of 100, so the third finds nothing left.
    for _ in 0..5 {
        let response = client()
            .post(format!("{}/v1/chat/completions", gateway.url()))
            .bearer_auth(CLIENT_KEY)
            .json(&body)
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
        held.push(response);
    }
    assert_eq!(statuses, [200, 200, 429, 429, 429], "{}", gateway.logs());
    gate.notify_waiters();
    drop(held);
}

#[tokio::test]
async fn demo_tls_serves_https_with_a_throwaway_ca_and_every_guard_on() {
    use tokio::io::AsyncBufReadExt;
    let mut demo = tokio::process::Command::new(server_binary())
        .args(["demo", "--port", "0", "--tls"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start the demo");
    let mut lines = tokio::io::BufReader::new(demo.stdout.take().unwrap()).lines();
    let (mut base, mut ca, mut key) = (None, None, None);
    while base.is_none() || ca.is_none() || key.is_none() {
        let line = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .expect("the demo printed its banner")
            .unwrap()
            .expect("the demo ended before its banner");
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["base", "url:", url] => base = Some((*url).to_owned()),
            ["client", "key:", k] => key = Some((*k).to_owned()),
            [_, "--cacert", file, ..] if ca.is_none() => ca = Some((*file).to_owned()),
            _ => {}
        }
    }
    let base = base.unwrap();
    let addr: SocketAddr =
        base.strip_prefix("https://").expect("an https base url").parse().unwrap();
    let ca = ca.unwrap();
    let key = key.unwrap();
    let body = r#"{"model":"mock-1","messages":[{"role":"user","content":"Hi"}]}"#;
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (ok, out) =
        s_client(addr, &["-CAfile", &ca, "-verify_return_error", "-ign_eof"], &request).await;
    assert!(ok, "{out}");
    assert!(out.contains("HTTP/1.1 200"), "{out}");
    let lower = out.to_ascii_lowercase();
    for header in ["strict-transport-security", "x-content-type-options", "x-ratelimit-limit"] {
        assert!(lower.contains(header), "no {header}: {out}");
    }
    assert!(!out.contains(&key), "the client key came back: {out}");
    // SIGTERM: the demo stops cleanly and removes its directory, certificates included.
    let pid = nix::unistd::Pid::from_raw(i32::try_from(demo.id().unwrap()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = tokio::time::timeout(WAIT, demo.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(!Path::new(&ca).exists(), "{ca} is left behind");
}

#[tokio::test]
async fn sighup_reloads_the_certificate_at_once() {
    let harness = Harness::new();
    let dir = tempfile::tempdir().unwrap();
    // The files are checked only hourly: the new certificate can only come from SIGHUP.
    let (gateway, cert) = tls_gateway_with(&harness, dir.path(), "5s", "1h").await;
    let addr = gateway.addr();
    let (ok, out) = s_client(addr, &[], "").await;
    assert!(ok && out.contains("e2e-first"), "{out}");
    make_cert(dir.path(), "e2e-hangup", &cert, &dir.path().join("server.key"), Replace::Rename);
    let (_, out) = s_client(addr, &[], "").await;
    assert!(out.contains("e2e-first"), "reloaded before SIGHUP: {out}");
    let pid = nix::unistd::Pid::from_raw(i32::try_from(gateway.pid()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    gateway
        .wait_for_log(|e| e["msg"] == "TLS certificate reloaded" && e["trigger"] == "SIGHUP")
        .await;
    let (ok, out) = s_client(addr, &[], "").await;
    assert!(ok && out.contains("e2e-hangup"), "{out}");
}

#[tokio::test]
async fn a_management_ban_survives_a_restart() {
    let harness = Harness::new();
    write_config(&harness, "127.0.0.1", "", "", "", "");
    let mut gateway = harness.start().await;
    let wrong = |url: String| async move {
        client()
            .get(format!("{url}/v0/management/auths"))
            .header("x-management-key", "not-the-management-key-000")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    for _ in 0..5 {
        assert_eq!(wrong(gateway.url()).await, 401);
    }
    assert_eq!(manage(&gateway, Method::GET, "/auths", None).await.0, 403, "banned");
    // Written by the state store's writer within a flush interval; a graceful stop flushes.
    gateway.terminate();
    assert!(gateway.wait().await.success(), "{}", gateway.logs());
    let gateway = harness.start().await;
    let (status, body) = manage(&gateway, Method::GET, "/auths", None).await;
    assert_eq!(status, 403, "the ban was lifted by the restart: {body}\n{}", gateway.logs());
    gateway.wait_for_log(|e| e["msg"] == "management bans restored from the state store").await;
}

#[tokio::test]
async fn the_running_server_cannot_read_outside_its_landlock_paths_and_keeps_serving() {
    // The certificate file is a symbolic link. At start it points into a directory the sandbox
    // grants (the link's target directory is granted with it, as certbot's live/ → archive/
    // needs). Re-pointed into a directory the sandbox never granted, a reload is refused by
    // landlock: the old certificate stays in service and the gateway goes on answering.
    let harness = Harness::new();
    let granted = tempfile::tempdir().unwrap();
    let archive = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let first_cert = archive.path().join("cert1.crt");
    let key = granted.path().join("server.key");
    make_cert(archive.path(), "e2e-archive", &first_cert, &key, Replace::Rename);
    let cert = granted.path().join("server.crt");
    std::os::unix::fs::symlink(&first_cert, &cert).unwrap();
    write_config(
        &harness,
        "127.0.0.1",
        &format!(
            "  tls: {{enabled: true, cert_file: {:?}, key_file: {:?}, reload_interval: 1h}}\n",
            cert.display().to_string(),
            key.display().to_string()
        ),
        "",
        "",
        "",
    );
    let gateway = harness.start().await;
    let addr = gateway.addr();
    let (ok, out) = s_client(addr, &[], "").await;
    assert!(ok && out.contains("e2e-archive"), "{out}");

    // The same key, a new certificate, outside every granted directory.
    let outside_cert = outside.path().join("cert2.crt");
    let spare_key = outside.path().join("spare.key");
    make_cert(outside.path(), "e2e-outside", &outside_cert, &spare_key, Replace::Rename);
    std::fs::copy(&spare_key, &key).unwrap();
    let relink = granted.path().join("server.crt.new");
    std::os::unix::fs::symlink(&outside_cert, &relink).unwrap();
    std::fs::rename(&relink, &cert).unwrap();
    let pid = nix::unistd::Pid::from_raw(i32::try_from(gateway.pid()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    let refused = gateway
        .wait_for_log(|e| {
            e["msg"] == "TLS certificate not reloaded; the previous one stays in service"
        })
        .await;
    let error = refused["error"].as_str().unwrap_or_default();
    assert!(error.contains("Permission denied"), "{refused}");
    let (ok, out) = s_client(addr, &["-ign_eof"], HEALTHZ).await;
    assert!(ok && out.contains("HTTP/1.1 200") && out.contains("e2e-archive"), "{out}");
}
