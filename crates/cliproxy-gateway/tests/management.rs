//! The management API through the pipeline: the gate (no key → 404, remote peers → 403 unless
//! allowed, bans per TCP peer), the routes, hostile input (path traversal, bad bodies, wrong
//! methods), and that no answer repeats a planted token.

#![allow(clippy::unwrap_used, reason = "a failed expectation fails the test")]

use std::net::SocketAddr;

use bytes::Bytes;
use cliproxy_gateway::{Config, Gateway};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

const MGMT_KEY: &str = "mgmt-key-0123456789abcdef";
const PLANTED: &str = "sk-planted-management-token-40c1";

fn build(management: &str) -> (Gateway, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "auth:\n  api_keys: [\"client-key-0123456789abcdef\"]\n  dir: {:?}\n{management}\
         providers:\n  demo: {{type: mock}}\n  openai: {{type: openai, base_url: \"http://127.0.0.1:9\", models: [\"gpt-*\"]}}\n",
        dir.path().join("auths").display().to_string()
    );
    let config = Config::from_yaml(&yaml).unwrap();
    (Gateway::build(&config, slog::Logger::root(slog::Discard, slog::o!())).unwrap(), dir)
}

fn enabled(extra: &str) -> String {
    format!("management: {{secret_key: \"{MGMT_KEY}\"{extra}}}\n")
}

async fn call(
    gateway: &Gateway,
    peer: &str,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (StatusCode, http::HeaderMap, String) {
    let mut request = Request::builder().method(method).uri(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(Bytes::from(body.to_owned()))).unwrap();
    let peer: SocketAddr = peer.parse().unwrap();
    let response = gateway.handle(request, peer).await;
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (parts.status, parts.headers, String::from_utf8_lossy(&bytes).into_owned())
}

const LOCAL: &str = "127.0.0.1:50000";
const KEY: (&str, &str) = ("x-management-key", MGMT_KEY);

#[tokio::test]
async fn without_a_key_every_route_is_404() {
    let (gateway, _dir) = build("");
    for (method, path) in [
        (Method::GET, "/v0/management/auths"),
        (Method::POST, "/v0/management/auths"),
        (Method::GET, "/v0/management/auths/export"),
        (Method::DELETE, "/v0/management/auths/openai"),
        (Method::GET, "/v0/management"),
        (Method::GET, "/v0/management/anything"),
    ] {
        let (status, _, body) = call(&gateway, LOCAL, method, path, &[KEY], "").await;
        assert_eq!(status, 404, "{path}: {body}");
    }
    // An empty key (an unset variable defaulting to "") is also "off".
    let (gateway, _dir) = build("management: {secret_key: \"\"}\n");
    let (status, _, _) =
        call(&gateway, LOCAL, Method::GET, "/v0/management/auths", &[KEY], "").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn remote_peers_are_refused_unless_allowed_and_bans_follow_the_tcp_peer() {
    let (gateway, _dir) = build(&enabled(", max_failures: 2"));
    let (status, _, body) =
        call(&gateway, "10.1.2.3:4000", Method::GET, "/v0/management/auths", &[KEY], "").await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("management.allow_remote"), "{body}");
    // IPv4-mapped loopback is loopback.
    let (status, _, _) =
        call(&gateway, "[::ffff:127.0.0.1]:4000", Method::GET, "/v0/management/auths", &[KEY], "")
            .await;
    assert_eq!(status, 200);

    let (gateway, _dir) = build(&enabled(", allow_remote: true, max_failures: 2"));
    let remote = "10.1.2.3:4000";
    let (status, _, _) =
        call(&gateway, remote, Method::GET, "/v0/management/auths", &[KEY], "").await;
    assert_eq!(status, 200);
    for _ in 0..2 {
        let forged = [("x-management-key", "wrong-key-000000000"), ("x-forwarded-for", "10.9.9.9")];
        let (status, _, body) =
            call(&gateway, remote, Method::GET, "/v0/management/auths", &forged, "").await;
        assert_eq!(status, 401, "{body}");
        assert!(!body.contains("wrong-key"), "{body}");
    }
    let (status, headers, body) =
        call(&gateway, remote, Method::GET, "/v0/management/auths", &[KEY], "").await;
    assert_eq!(status, 403, "{body}");
    assert!(headers.contains_key("retry-after"));
    // Forwarded headers name another client but the TCP peer is the banned one.
    let (status, _, _) = call(
        &gateway,
        remote,
        Method::GET,
        "/v0/management/auths",
        &[KEY, ("x-forwarded-for", "10.7.7.7"), ("forwarded", "for=10.7.7.7")],
        "",
    )
    .await;
    assert_eq!(status, 403);
    // Another peer is unaffected.
    let (status, _, _) =
        call(&gateway, "10.1.2.4:4000", Method::GET, "/v0/management/auths", &[KEY], "").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn hostile_paths_bodies_and_methods_get_clear_errors_and_no_echo() {
    let (gateway, dir) = build(&enabled(""));
    let auths = "/v0/management/auths";
    let post = |body: String| {
        let gateway = gateway.clone();
        async move { call(&gateway, LOCAL, Method::POST, auths, &[KEY], &body).await }
    };
    let cases: Vec<(String, u16, &str)> = vec![
        ("not json".to_owned(), 400, "syntax error"),
        (json!({"provider": "openai"}).to_string(), 400, "`token` is required"),
        (json!({"provider": "nope", "token": PLANTED}).to_string(), 400, "not a configured upstream provider"),
        (json!({"provider": "demo", "token": PLANTED}).to_string(), 400, "not a configured upstream provider"),
        (json!({"provider": "openai", "token": PLANTED, "id": "../../etc/passwd"}).to_string(), 400, "invalid credential id"),
        (json!({"provider": "openai", "token": PLANTED, "id": ".hidden"}).to_string(), 400, "invalid credential id"),
        (json!({"provider": "openai", "token": PLANTED, PLANTED: 1}).to_string(), 400, "unknown field"),
        (json!({"provider": "openai", "token": [PLANTED]}).to_string(), 400, "wrong type"),
        (json!({"provider": "openai", "type": "jwt", "token": PLANTED}).to_string(), 400, "unknown credential type"),
        (json!({"provider": "openai", "token": PLANTED, "refresh_token": PLANTED}).to_string(), 400, "only `token`"),
        (json!({"provider": "openai", "type": "oauth", "token": PLANTED, "refresh_token": "r", "expires_in": 60, "token_url": "http://evil.example/t", "client_id": "c"}).to_string(), 400, "token_url"),
        (json!({"provider": "openai", "token": PLANTED, "base_url": "ftp://x"}).to_string(), 400, "base_url"),
        (json!({"provider": "openai", "token": PLANTED, "label": "a\u{0}b"}).to_string(), 400, "label"),
        (format!("{{\"provider\": \"openai\", \"token\": \"{}\"}}", "x".repeat(70_000)), 413, "at most"),
        (format!("{}{}", "[".repeat(5000), "]".repeat(5000)), 400, "not a credential"),
    ];
    for (body, status, expected) in cases {
        let (got, _, text) = post(body).await;
        assert_eq!(got.as_u16(), status, "{text}");
        assert!(text.contains(expected), "expected {expected:?} in {text}");
        assert!(!text.contains(PLANTED), "{text}");
        serde_json::from_str::<Value>(&text).unwrap();
    }
    // Nothing was stored, and nothing was written outside auth.dir.
    // Hidden files are bookkeeping (the state database lives there by default), never
    // credentials.
    let files: Vec<_> = std::fs::read_dir(dir.path().join("auths"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|name| !name.to_string_lossy().starts_with('.'))
        .collect();
    assert!(files.is_empty(), "{files:?}");
    assert!(!dir.path().join("etc").exists());

    for (method, path, status) in [
        (Method::DELETE, "/v0/management/auths/openai/..%2F..%2Fetc", 400),
        (Method::DELETE, "/v0/management/auths/openai/.key-usage", 400),
        (Method::DELETE, "/v0/management/auths/openai/missing", 404),
        (Method::DELETE, "/v0/management/auths/nope", 404),
        (Method::PUT, "/v0/management/auths", 405),
        (Method::POST, "/v0/management/auths/export", 405),
        (Method::GET, "/v0/management/auths/openai", 405),
        (Method::GET, "/v0/management/auths/", 405),
        (Method::GET, "/v0/management/nothing", 404),
        (Method::GET, "/v0/managementx", 404),
    ] {
        let (got, headers, text) = call(&gateway, LOCAL, method.clone(), path, &[KEY], "").await;
        assert_eq!(got.as_u16(), status, "{method} {path}: {text}");
        if status == 405 {
            assert!(headers.contains_key("allow"), "{path}");
        }
    }
}

#[tokio::test]
async fn credentials_are_listed_without_secrets_and_replaced_by_id() {
    let (gateway, _dir) = build(&enabled(""));
    let body = json!({"provider": "openai", "token": PLANTED, "id": "oa-1", "label": "team a"});
    let (status, _, text) =
        call(&gateway, LOCAL, Method::POST, "/v0/management/auths", &[KEY], &body.to_string())
            .await;
    assert_eq!(status, 201, "{text}");
    let created: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(created["id"], "oa-1");
    assert_eq!(created["stored"], "plaintext");
    let replaced = json!({"provider": "openai", "token": "sk-second-token-000000", "id": "oa-1"});
    let (status, _, _) =
        call(&gateway, LOCAL, Method::POST, "/v0/management/auths", &[KEY], &replaced.to_string())
            .await;
    assert_eq!(status, 201);
    let (status, _, text) =
        call(&gateway, LOCAL, Method::GET, "/v0/management/auths", &[KEY], "").await;
    assert_eq!(status, 200);
    assert!(!text.contains(PLANTED) && !text.contains("sk-second"), "{text}");
    let list: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(list["auths"].as_array().unwrap().len(), 1);
    let (_, headers, text) =
        call(&gateway, LOCAL, Method::GET, "/v0/management/auths/export", &[KEY], "").await;
    assert_eq!(headers["cache-control"], "no-store");
    let export: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(export["credentials"][0]["token"], "sk-second-token-000000");
}

/// Who calls (for the message), the gateway, the TCP peer, the headers, the expected status.
type Caller<'a> = (&'a str, &'a Gateway, &'a str, Vec<(&'a str, &'a str)>, u16);

/// The authorisation matrix, generated from the router's table: every route × {management
/// off, no key, wrong key, right key from a remote peer, banned peer, right key} gets its
/// expected status. A route added to the table without an expectation here fails the test.
#[tokio::test]
async fn every_route_answers_each_kind_of_caller_as_expected() {
    let (gateway, _dir) = build(&enabled(", max_failures: 1000"));
    let (off, _off_dir) = build("");
    // A gateway where one failure bans; 127.0.0.9 is banned before the walk.
    let (strict, _strict_dir) = build(&enabled(", max_failures: 1"));
    let banned = "127.0.0.9:4000";
    let wrong = ("x-management-key", "wrong-key-000000000");
    let (status, _, _) =
        call(&strict, banned, Method::GET, "/v0/management/status", &[wrong], "").await;
    assert_eq!(status, 401);
    // (method, path) → (example path, body, status with the right key from loopback)
    let expected = |route: &cliproxy_gateway::ManagementRoute| -> (&str, &str, u16) {
        match (route.method, route.path) {
            ("GET", "/auths") => ("/auths", "", 200),
            ("POST", "/auths") => ("/auths", r#"{"provider":"nope","id":"x","api_key":"k"}"#, 400),
            ("GET", "/auths/export") => ("/auths/export", "", 200),
            // Deleting every credential of a provider that has none deletes nothing.
            ("DELETE", "/auths/{provider}") => ("/auths/demo", "", 200),
            ("DELETE", "/auths/{provider}/{id}") => ("/auths/demo/missing-id", "", 404),
            ("GET", "/security/ip-denylist") => ("/security/ip-denylist", "", 200),
            ("POST", "/security/ip-denylist") => {
                ("/security/ip-denylist", r#"{"ip":"203.0.113.9","reason":"matrix"}"#, 201)
            }
            ("DELETE", "/security/ip-denylist/{network..}") => {
                ("/security/ip-denylist/198.51.100.0/24", "", 404)
            }
            ("GET", "/maintenance") => ("/maintenance", "", 200),
            ("PUT", "/maintenance") => ("/maintenance", r#"{"enabled":false}"#, 200),
            // Built from a YAML string, this gateway has no config file to read again.
            ("POST", "/config/reload") => ("/config/reload", "", 400),
            ("GET", "/status") => ("/status", "", 200),
            (method, path) => {
                panic!("no expectation for the management route {method} {path}: add one here")
            }
        }
    };
    let mut failures = Vec::new();
    let mut checked = 0;
    for route in cliproxy_gateway::MANAGEMENT_ROUTES {
        let (path, body, right) = expected(route);
        let path = format!("/v0/management{path}");
        let method: Method = route.method.parse().unwrap();
        let callers: [Caller<'_>; 6] = [
            ("management off", &off, LOCAL, vec![KEY], 404),
            ("no key", &gateway, LOCAL, vec![], 401),
            ("wrong key", &gateway, "127.0.0.8:4000", vec![wrong], 401),
            ("remote peer", &gateway, "10.1.2.3:4000", vec![KEY], 403),
            ("banned peer", &strict, banned, vec![KEY], 403),
            ("right key", &gateway, LOCAL, vec![KEY], right),
        ];
        for (who, target, peer, headers, want) in callers {
            checked += 1;
            let (status, _, answer) =
                call(target, peer, method.clone(), &path, &headers, body).await;
            if status != want {
                failures.push(format!(
                    "{} {path} by {who}: expected {want}, got {status}: {answer}",
                    route.method
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    cliproxy_e2e::report::cases(
        "management-matrix",
        "every_route_answers_each_kind_of_caller_as_expected",
        checked,
    );
    cliproxy_e2e::report::figure(
        "management-matrix",
        "management routes in the router's table",
        cliproxy_gateway::MANAGEMENT_ROUTES.len(),
        "routes",
    );
}
