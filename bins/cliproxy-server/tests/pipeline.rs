//! The pipeline's answers for everything that needs no upstream: routing, authentication,
//! body limits, model checks and the mock provider in all three formats; and one real TCP
//! connection speaking HTTP/2.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a failed expectation fails the test")]

use std::net::SocketAddr;

use bytes::Bytes;
use cliproxy_gateway::{Gateway, REQUEST_ID_HEADER, Server};
use cliproxy_server::compose;
use cliproxy_server::config::Config;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

const KEY: &str = "client-key-0123456789abcdef";
const LIMITED_KEY: &str = "client-key-limited-0123456789";

fn gateway(extra: &str) -> (Gateway, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "auth:\n  api_keys: [\"{KEY}\", {{name: limited, key: \"{LIMITED_KEY}\", models: [\"mock-a*\"]}}]\n  dir: {:?}\n\
         server: {{limits: {{max_body_bytes: 2048}}}}\n\
         providers:\n  demo: {{type: mock}}\n  openai: {{type: openai, base_url: \"http://127.0.0.1:9\", models: [\"gpt-*\"]}}\n{extra}",
        dir.path().join("auths").display().to_string()
    );
    let config = Config::from_yaml(&yaml).unwrap();
    let log = slog::Logger::root(slog::Discard, slog::o!());
    (compose::gateway(&config, &log).unwrap(), dir)
}

fn peer() -> SocketAddr {
    "127.0.0.1:40000".parse().unwrap()
}

async fn call(
    gateway: &Gateway,
    method: Method,
    uri: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (StatusCode, http::HeaderMap, String) {
    let mut request = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(Bytes::from(body.to_owned()))).unwrap();
    let response: Response<_> = gateway.handle(request, peer()).await;
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (parts.status, parts.headers, String::from_utf8_lossy(&bytes).into_owned())
}

fn bearer() -> (&'static str, String) {
    ("authorization", format!("Bearer {KEY}"))
}

#[tokio::test]
async fn health_needs_no_key_and_every_answer_has_a_request_id() {
    let (gateway, _dir) = gateway("");
    let (status, headers, body) = call(&gateway, Method::GET, "/healthz", &[], "").await;
    assert_eq!(status, 200);
    assert!(headers[REQUEST_ID_HEADER].to_str().unwrap().starts_with("req_"));
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["status"], "ok");
    let (status, _, body) = call(&gateway, Method::GET, "/readyz", &[], "").await;
    assert_eq!(status, 200, "{body}");
    let (status, headers, _) = call(&gateway, Method::POST, "/nope", &[], "").await;
    assert_eq!(status, 404);
    assert!(headers.contains_key(REQUEST_ID_HEADER));
}

/// A credential file whose own `base_url` is `http://` to a host that is not loopback: the
/// gateway refuses to start, naming the credential (not the URL), unless its provider sets
/// `allow_insecure`.
#[test]
fn a_credential_with_a_plain_http_base_url_off_loopback_is_refused_at_load() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let auths = dir.path().join("auths");
    std::fs::create_dir(&auths).unwrap();
    std::fs::set_permissions(&auths, std::fs::Permissions::from_mode(0o700)).unwrap();
    let file = auths.join("openai-far.json");
    std::fs::write(
        &file,
        r#"{"format": "cliproxy-credential", "version": 1, "id": "openai-far",
        "provider": "openai", "type": "api_key", "token": "sk-far-away-token-000000",
        "base_url": "http://10.0.0.7/v1", "label": null, "created_at": 1700000000}"#,
    )
    .unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let build = |extra: &str| {
        let yaml = format!(
            "auth:\n  api_keys: [\"{KEY}\"]\n  dir: {:?}\n\
             providers:\n  openai: {{type: openai, base_url: \"https://127.0.0.1:9\", models: [\"gpt-*\"]{extra}}}\n",
            auths.display().to_string()
        );
        let config = Config::from_yaml(&yaml).unwrap();
        compose::gateway(&config, &slog::Logger::root(slog::Discard, slog::o!()))
    };
    let error = build("").unwrap_err().to_string();
    assert!(error.contains("credential `openai-far`"), "{error}");
    assert!(error.contains("`providers.openai.allow_insecure: true`"), "{error}");
    assert!(!error.contains("10.0.0.7") && !error.contains("sk-far"), "{error}");
    build(", allow_insecure: true").unwrap();
}

/// A credential added through the management API is held to the same rules as one loaded at
/// start: its own `base_url` off the egress list, or plain http off loopback, is a 400 naming
/// the key, and nothing is stored.
#[tokio::test]
async fn an_added_credential_outside_the_egress_allow_list_is_refused() {
    const MGMT: &str = "mgmt-key-0123456789abcdef";
    let (gateway, dir) = gateway(&format!(
        "management: {{secret_key: \"{MGMT}\"}}\negress: {{allowed_hosts: [127.0.0.1]}}\n"
    ));
    let add = |base_url: &str| {
        let body =
            json!({"provider": "openai", "token": "sk-egress-added-000000", "base_url": base_url});
        let gateway = gateway.clone();
        async move {
            let headers = [("x-management-key", MGMT), ("content-type", "application/json")];
            call(&gateway, Method::POST, "/v0/management/auths", &headers, &body.to_string()).await
        }
    };
    let (status, _, body) = add("https://elsewhere.example/v1").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("base_url names a host that is not in `egress.allowed_hosts`"), "{body}");
    let stored = |dir: &tempfile::TempDir| {
        std::fs::read_dir(dir.path().join("auths"))
            .unwrap()
            .filter(|e| !e.as_ref().unwrap().file_name().to_string_lossy().starts_with('.'))
            .count()
    };
    assert_eq!(stored(&dir), 0);
    let (status, _, body) = add("http://127.0.0.1:9/v1").await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(stored(&dir), 1);
}

/// With `egress.allowed_hosts`, a credential whose own `base_url` or OAuth `token_url` names
/// another host stops the start naming the credential; listed, it loads.
#[test]
fn a_credential_outside_the_egress_allow_list_is_refused_at_load() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let auths = dir.path().join("auths");
    std::fs::create_dir(&auths).unwrap();
    std::fs::set_permissions(&auths, std::fs::Permissions::from_mode(0o700)).unwrap();
    let plant = |name: &str, contents: &str| {
        let file = auths.join(name);
        std::fs::write(&file, contents).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        file
    };
    let build = |allowed: &str| {
        let yaml = format!(
            "auth:\n  api_keys: [\"{KEY}\"]\n  dir: {:?}\negress: {{allowed_hosts: [{allowed}]}}\n\
             providers:\n  openai: {{type: openai, base_url: \"https://api.openai.com\", models: [\"gpt-*\"]}}\n",
            auths.display().to_string()
        );
        let config = Config::from_yaml(&yaml).unwrap();
        compose::gateway(&config, &slog::Logger::root(slog::Discard, slog::o!())).map(|_| ())
    };
    let key = plant(
        "openai-other.json",
        r#"{"format": "cliproxy-credential", "version": 1, "id": "openai-other",
        "provider": "openai", "type": "api_key", "token": "sk-egress-token-000000",
        "base_url": "https://other.example", "label": null, "created_at": 1700000000}"#,
    );
    let error = build("api.openai.com").unwrap_err().to_string();
    assert!(
        error.contains(
            "credential `openai-other`: base_url names a host that is not in `egress.allowed_hosts`"
        ),
        "{error}"
    );
    build("api.openai.com, other.example").unwrap();
    std::fs::remove_file(key).unwrap();
    plant(
        "openai-oauth.json",
        r#"{"format": "cliproxy-credential", "version": 1, "id": "openai-oauth",
        "provider": "openai", "type": "oauth", "token": "at-egress-000000", "refresh_token": "rt-egress-000000",
        "expires_at": 4000000000, "token_url": "https://auth.other.example/token", "client_id": "c",
        "base_url": null, "label": null, "created_at": 1700000000}"#,
    );
    let error = build("api.openai.com").unwrap_err().to_string();
    assert!(error.contains("credential `openai-oauth`: token_url names a host that is not in `egress.allowed_hosts`"), "{error}");
    assert!(!error.contains("rt-egress") && !error.contains("auth.other.example"), "{error}");
    build("api.openai.com, '*.other.example'").unwrap();
}

#[tokio::test]
async fn readiness_fails_naming_the_vault_when_its_directory_goes() {
    const MGMT: &str = "mgmt-key-0123456789abcdef";
    let (gateway, dir) = gateway(&format!("management: {{secret_key: \"{MGMT}\"}}\n"));
    let auths = dir.path().join("auths").display().to_string();
    std::fs::remove_dir_all(dir.path().join("auths")).unwrap();
    let (status, _, body) = call(&gateway, Method::GET, "/readyz", &[], "").await;
    assert_eq!(status, 503);
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["failing"], "vault");
    // Without a key, the check's name only: no path of the host's file system.
    assert!(!body.contains(&auths) && !body.contains("auth.dir"), "{body}");
    // With the management key, the status has the detail.
    let (status, _, body) =
        call(&gateway, Method::GET, "/v0/management/status", &[("x-management-key", MGMT)], "")
            .await;
    assert_eq!(status, 200, "{body}");
    let status: Value = serde_json::from_str(&body).unwrap();
    let vault = status["readiness"]["vault"].as_str().unwrap();
    assert!(vault.contains(&auths), "{body}");
    assert_eq!(status["readiness"]["audit"], "ok", "{body}");
}

#[tokio::test]
async fn authentication_in_each_header_and_never_the_query() {
    let (gateway, _dir) = gateway("");
    let body = r#"{"model":"mock-1","messages":[{"role":"user","content":"hi"}]}"#;
    let auth = format!("Bearer {KEY}");
    for header in [("authorization", auth.as_str()), ("x-api-key", KEY), ("x-goog-api-key", KEY)] {
        let (status, _, text) =
            call(&gateway, Method::POST, "/v1/chat/completions", &[header], body).await;
        assert_eq!(status, 200, "{header:?}: {text}");
    }
    let (status, _, text) = call(&gateway, Method::POST, "/v1/chat/completions", &[], body).await;
    assert_eq!(status, 401);
    assert!(text.contains("Authorization: Bearer"), "{text}");
    let (status, _, _) = call(
        &gateway,
        Method::POST,
        "/v1/chat/completions",
        &[("authorization", "Bearer wrong-key-0123456789abc")],
        body,
    )
    .await;
    assert_eq!(status, 401);
    let (status, _, _) = call(
        &gateway,
        Method::POST,
        "/v1/chat/completions",
        &[("authorization", &format!("Bearer {}", &KEY[..10]))],
        body,
    )
    .await;
    assert_eq!(status, 401, "a prefix of a key is not the key");
    let uri = format!("/v1beta/models/mock-1:generateContent?key={KEY}");
    let (status, _, text) =
        call(&gateway, Method::POST, &uri, &[("x-goog-api-key", KEY)], "{}").await;
    assert_eq!(status, 401, "a key in the query string is refused even with a header key");
    assert!(!text.contains(KEY));
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap()["error"]["status"], "UNAUTHENTICATED");
}

#[tokio::test]
async fn no_client_keys_means_closed_with_a_helpful_message() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "auth: {{dir: {:?}}}\nproviders: {{demo: {{type: mock}}}}\n",
        dir.path().display().to_string()
    );
    let gateway = compose::gateway(
        &Config::from_yaml(&yaml).unwrap(),
        &slog::Logger::root(slog::Discard, slog::o!()),
    )
    .unwrap();
    let (status, _, text) = call(
        &gateway,
        Method::POST,
        "/v1/messages",
        &[("x-api-key", "anything-at-all-here")],
        r#"{"model":"mock-1","messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_eq!(status, 401);
    let value: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(value["type"], "error");
    assert!(value["error"]["message"].as_str().unwrap().contains("auth.api_keys"), "{text}");
}

#[tokio::test]
async fn request_errors_in_the_endpoint_format() {
    let (gateway, _dir) = gateway("");
    let (name, value) = bearer();
    let headers = [(name, value.as_str())];
    for (uri, body, status, pointer, expected) in [
        ("/v1/chat/completions", "{not json", 400, "/error/type", "invalid_request_error"),
        ("/v1/chat/completions", "[1]", 400, "/error/code", "bad_request"),
        ("/v1/chat/completions", r#"{"messages":[]}"#, 400, "/error/code", "bad_request"),
        (
            "/v1/chat/completions",
            r#"{"model":"x","stream":"yes"}"#,
            400,
            "/error/code",
            "bad_request",
        ),
        ("/v1/chat/completions", r#"{"model":"unknown-model"}"#, 404, "/error/code", "not_found"),
        ("/v1/messages", r#"{"model":"unknown-model"}"#, 404, "/error/type", "not_found_error"),
        ("/v1/messages", r#"{"model":"gpt-4o"}"#, 400, "/error/type", "invalid_request_error"),
        ("/v1beta/models/unknown:generateContent", "{}", 404, "/error/status", "NOT_FOUND"),
    ] {
        let (got, _, text) = call(&gateway, Method::POST, uri, &headers, body).await;
        assert_eq!(got.as_u16(), status, "{uri} {body}: {text}");
        let value: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value.pointer(pointer).unwrap(), expected, "{uri} {body}: {text}");
    }
    let (status, response_headers, _) =
        call(&gateway, Method::GET, "/v1/chat/completions", &headers, "").await;
    assert_eq!(status, 405);
    assert_eq!(response_headers["allow"], "POST");
    // A generation request to a provider of another format is translated (SPEC §9), so it
    // is validated as its own format says; an endpoint with no counterpart says which
    // endpoint to call.
    let (_, _, text) =
        call(&gateway, Method::POST, "/v1/messages", &headers, r#"{"model":"gpt-4o"}"#).await;
    assert!(text.contains("`messages`"), "validated as a Messages request: {text}");
    let (got, _, text) = call(
        &gateway,
        Method::POST,
        "/v1/messages/count_tokens",
        &headers,
        r#"{"model":"gpt-4o","messages":[{"role":"user","content":"x"}]}"#,
    )
    .await;
    assert_eq!(got, 400, "{text}");
    assert!(text.contains("/v1/chat/completions"), "says which endpoint to call: {text}");
}

#[tokio::test]
async fn oversized_bodies_get_413_by_header_and_by_content() {
    let (gateway, _dir) = gateway("");
    let (name, value) = bearer();
    let big = format!(
        r#"{{"model":"mock-1","messages":[{{"role":"user"}}],"pad":"{}"}}"#,
        "x".repeat(4096)
    );
    let (status, _, text) =
        call(&gateway, Method::POST, "/v1/messages", &[(name, &value)], &big).await;
    assert_eq!(status, 413);
    assert!(text.contains("server.limits.max_body_bytes"), "{text}");
    let (status, _, _) = call(
        &gateway,
        Method::POST,
        "/v1/messages",
        &[(name, &value), ("content-length", "999999999")],
        "{}",
    )
    .await;
    assert_eq!(status, 413);
}

#[tokio::test]
async fn client_key_model_lists_are_enforced_and_listed() {
    let (gateway, _dir) = gateway("");
    let limited = [("x-api-key", LIMITED_KEY)];
    let (status, _, _) = call(
        &gateway,
        Method::POST,
        "/v1/messages",
        &limited,
        r#"{"model":"mock-abc","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_eq!(status, 200);
    let (status, _, text) = call(
        &gateway,
        Method::POST,
        "/v1/messages",
        &limited,
        r#"{"model":"mock-b","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_eq!(status, 403, "{text}");
    let (status, _, text) = call(&gateway, Method::GET, "/v1/models", &limited, "").await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["data"].as_array().unwrap().len(),
        0,
        "{text}"
    );
    let (name, value) = bearer();
    let (_, _, text) = call(&gateway, Method::GET, "/v1/models", &[(name, &value)], "").await;
    let ids: Vec<String> = serde_json::from_str::<Value>(&text).unwrap()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    // The mock's glob lists the names the mock serves. A provider's glob lists the names of
    // the upstream's own list (`tests/model_list.rs`), never the pattern: `openai` has no
    // credential to fetch it with, so its `gpt-*` lists nothing.
    assert_eq!(ids, ["mock-1", "mock-embedding", "mock-fast"]);
    let (_, _, text) = call(
        &gateway,
        Method::GET,
        "/v1/models",
        &[(name, &value), ("anthropic-version", "2023-06-01")],
        "",
    )
    .await;
    let value: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(value["data"][0]["type"], "model");
    assert_eq!(value["has_more"], false);
}

#[tokio::test]
async fn a_provider_without_credentials_answers_503_saying_how_to_add_one() {
    let (gateway, _dir) = gateway("");
    let (name, value) = bearer();
    let (status, _, text) = call(
        &gateway,
        Method::POST,
        "/v1/chat/completions",
        &[(name, &value)],
        r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("vault add --provider openai"), "{text}");
}

/// The finishing stage gives back what a request reserved when the request is refused after
/// the minute limits and quotas admitted it but before it reached a provider (here: a provider
/// without credentials, 503). A reservation kept would stay held until a restart: with a quota
/// that holds one request's estimate at a time, the next request would get 429 instead of the
/// same 503.
#[tokio::test]
async fn a_request_refused_before_it_is_sent_gives_its_quota_reservation_back() {
    let (gateway, _dir) = gateway(
        "  capped: {type: openai, base_url: \"http://127.0.0.1:9\", models: [\"capped-*\"], \
         quota: {limit: 1000, reset: daily}}\n",
    );
    let (name, value) = bearer();
    let body =
        r#"{"model":"capped-1","max_tokens":600,"messages":[{"role":"user","content":"hi"}]}"#;
    for attempt in 0..3 {
        let (status, _, text) =
            call(&gateway, Method::POST, "/v1/chat/completions", &[(name, &value)], body).await;
        assert_eq!(status, 503, "attempt {attempt}: {text}");
        assert!(text.contains("vault add --provider capped"), "attempt {attempt}: {text}");
    }
}

#[tokio::test]
async fn the_mock_answers_every_format_streamed_and_not() {
    let (gateway, _dir) = gateway("");
    let (name, value) = bearer();
    let headers = [(name, value.as_str())];
    let (status, response_headers, text) = call(
        &gateway,
        Method::POST,
        "/v1/chat/completions",
        &headers,
        r#"{"model":"mock-1","messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(response_headers["content-type"], "application/json");
    let value: Value = serde_json::from_str(&text).unwrap();
    assert!(value["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    assert!(value["choices"][0]["message"]["content"].as_str().unwrap().contains("mock-1"));

    let (status, response_headers, text) = call(
        &gateway,
        Method::POST,
        "/v1/responses",
        &headers,
        r#"{"model":"mock-1","input":"hi"}"#,
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(response_headers["content-type"], "application/json");
    let value: Value = serde_json::from_str(&text).unwrap();
    let reply = value["output"][0]["content"][0]["text"].as_str().unwrap().to_owned();
    assert!(reply.contains("mock-1"), "{text}");
    assert!(value["usage"]["input_tokens"].as_u64().unwrap() > 0);

    // The streamed Responses reply: the deltas add up to the same text, which the closing
    // `response.completed` event repeats, and the first event is `response.created`.
    let (status, response_headers, text) = call(
        &gateway,
        Method::POST,
        "/v1/responses",
        &headers,
        r#"{"model":"mock-1","input":"hi","stream":true}"#,
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(response_headers["content-type"], "text/event-stream");
    assert!(text.starts_with("event: response.created\n"), "{text}");
    let events: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let streamed: String = events
        .iter()
        .filter(|e| e["type"] == "response.output_text.delta")
        .map(|e| e["delta"].as_str().unwrap())
        .collect();
    assert_eq!(streamed, reply);
    let completed = events.last().unwrap();
    assert_eq!(completed["type"], "response.completed", "{text}");
    assert_eq!(completed["response"]["output"][0]["content"][0]["text"], reply.as_str());

    let (_, response_headers, text) = call(
        &gateway,
        Method::POST,
        "/v1/messages",
        &headers,
        r#"{"model":"mock-1","stream":true,"max_tokens":16,"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_eq!(response_headers["content-type"], "text/event-stream");
    assert!(text.starts_with("event: message_start"), "{text}");

    let (_, response_headers, text) = call(
        &gateway,
        Method::POST,
        "/v1beta/models/mock-2:streamGenerateContent?alt=sse",
        &headers,
        r#"{"contents":[{"parts":[{"text":"hi"}]}]}"#,
    )
    .await;
    assert_eq!(response_headers["content-type"], "text/event-stream");
    assert!(text.contains("usageMetadata"), "{text}");

    let (status, _, text) = call(
        &gateway,
        Method::POST,
        "/v1/embeddings",
        &headers,
        r#"{"model":"mock-e","input":["a","b"]}"#,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap()["data"].as_array().unwrap().len(), 2);

    let (status, _, text) = call(
        &gateway,
        Method::POST,
        "/v1/messages/count_tokens",
        &headers,
        r#"{"model":"mock-1","messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_eq!(status, 200);
    assert!(serde_json::from_str::<Value>(&text).unwrap()["input_tokens"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn http2_over_a_real_connection() {
    let (gateway, _dir) = gateway("");
    let dir = tempfile::tempdir().unwrap();
    let yaml =
        format!("server: {{port: 0}}\nauth: {{dir: {:?}}}\n", dir.path().display().to_string());
    let config = Config::from_yaml(&yaml).unwrap();
    let log = slog::Logger::root(slog::Discard, slog::o!());
    let server = Server::bind(&config.server, gateway, log).await.unwrap();
    let addr = server.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));

    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let body =
        json!({"model": "mock-1", "stream": true, "messages": [{"role": "user", "content": "hi"}]})
            .to_string();
    let request = Request::post(format!("http://{addr}/v1/chat/completions"))
        .header("authorization", format!("Bearer {KEY}"))
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    let text = String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec())
        .unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");

    stop.send(()).unwrap();
    serving.await.unwrap().unwrap();
}

/// `cliproxy_quota_remaining{provider="demo"}`, once it is no longer `before`. A body's usage
/// is settled by a task spawned after its last frame, on this test's one-thread runtime: each
/// yield lets it run, and a bounded number of them turns a settlement that never comes into a
/// failure.
async fn demo_quota_after(gateway: &Gateway, before: u64) -> u64 {
    let mut now = None;
    for _ in 0..100 {
        let text = gateway.render_metrics();
        now = text
            .lines()
            .find_map(|line| line.strip_prefix("cliproxy_quota_remaining{provider=\"demo\"} "))
            .map(|value| value.trim().parse::<f64>().unwrap() as u64);
        if now.is_some_and(|now| now != before) {
            break;
        }
        tokio::task::yield_now().await;
    }
    let now = now.expect("no quota figure for `demo`");
    assert_ne!(now, before, "the quota was not settled");
    now
}

/// Issue 18, item 2, through the mock provider: a streamed chat request that does not ask for
/// usage gets no usage chunk and no `"usage"` member, and the quota is charged the usage the
/// mock reports (the gateway asked it), not the request's `max_tokens`. The other streamed
/// formats carry their usage anyway, and each is charged prompt and output.
#[tokio::test]
async fn streams_are_charged_their_real_usage_whatever_the_client_asks() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "auth:\n  api_keys: [\"{KEY}\"]\n  dir: {:?}\n\
         providers:\n  demo: {{type: mock, quota: {{limit: 1000000, reset: daily}}}}\n",
        dir.path().join("auths").display().to_string()
    );
    let config = Config::from_yaml(&yaml).unwrap();
    let gateway =
        compose::gateway(&config, &slog::Logger::root(slog::Discard, slog::o!())).unwrap();
    let (name, value) = bearer();
    let headers = [(name, value.as_str()), ("content-type", "application/json")];
    let chat =
        r#"{"model":"mock-1","max_tokens":1000,"messages":[{"role":"user","content":"hi"}]}"#;
    let (_, _, text) = call(&gateway, Method::POST, "/v1/chat/completions", &headers, chat).await;
    let output = serde_json::from_str::<Value>(&text).unwrap()["usage"]["completion_tokens"]
        .as_u64()
        .unwrap();
    let mut left = demo_quota_after(&gateway, 1_000_000).await;

    let streamed = r#"{"model":"mock-1","stream":true,"max_tokens":1000,"messages":[{"role":"user","content":"hi"}]}"#;
    let asked = r#"{"model":"mock-1","stream":true,"stream_options":{"include_usage":true},"max_tokens":1000,"messages":[{"role":"user","content":"hi"}]}"#;
    let legacy = r#"{"model":"mock-1","stream":true,"max_tokens":1000,"prompt":"hi"}"#;
    let legacy_asked = r#"{"model":"mock-1","stream":true,"stream_options":{"include_usage":true},"max_tokens":1000,"prompt":"hi"}"#;
    let responses = r#"{"model":"mock-1","input":"hi","stream":true,"max_output_tokens":1000}"#;
    let messages = r#"{"model":"mock-1","stream":true,"max_tokens":1000,"messages":[{"role":"user","content":"hi"}]}"#;
    let gemini =
        r#"{"contents":[{"parts":[{"text":"hi"}]}],"generationConfig":{"maxOutputTokens":1000}}"#;
    for (path, body, usage_seen) in [
        ("/v1/chat/completions", streamed, false),
        ("/v1/chat/completions", asked, true),
        ("/v1/completions", legacy, false),
        ("/v1/completions", legacy_asked, true),
        ("/v1/responses", responses, true),
        ("/v1/messages", messages, true),
        ("/v1beta/models/mock-1:streamGenerateContent?alt=sse", gemini, true),
    ] {
        let (status, _, text) = call(&gateway, Method::POST, path, &headers, body).await;
        assert_eq!(status, 200, "{path}: {text}");
        let seen = text.contains("usage");
        assert_eq!(seen, usage_seen, "{path} {body}: {text}");
        // The mock counts a prompt token per four bytes of the body the client sent.
        let charged = (body.len() as u64 / 4).max(1) + output;
        let now = demo_quota_after(&gateway, left).await;
        assert_eq!(left - now, charged, "{path} {body}");
        left = now;
    }
}
