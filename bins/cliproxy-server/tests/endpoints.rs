//! The endpoints real clients call besides chat: `x-should-retry: false` on every 401, errors in
//! the format of the path's API, Gemini under `/v1/` and `/v1beta/` with all its methods, and
//! the model listing and retrieval in OpenAI, Anthropic and Gemini shapes.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a failed expectation fails the test")]

use std::net::SocketAddr;

use bytes::Bytes;
use cliproxy_gateway::Gateway;
use cliproxy_server::compose;
use cliproxy_server::config::Config;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::Value;

const KEY: &str = "client-key-0123456789abcdef";
const LIMITED_KEY: &str = "client-key-limited-0123456789";
const MGMT: &str = "mgmt-key-0123456789abcdef";

fn gateway() -> (Gateway, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "auth:\n  api_keys: [\"{KEY}\", {{name: limited, key: \"{LIMITED_KEY}\", models: [\"mock-a*\"]}}]\n  dir: {:?}\n\
         management: {{secret_key: \"{MGMT}\"}}\n\
         providers:\n  demo: {{type: mock, max_tokens: 1000}}\n  openai: {{type: openai, base_url: \"http://127.0.0.1:9\", models: [\"gpt-4o\", \"gpt-*\"]}}\n",
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
) -> (StatusCode, http::HeaderMap, Value) {
    let mut request = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(Bytes::from(body.to_owned()))).unwrap();
    let response: Response<_> = gateway.handle(request, peer()).await;
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
        Value::String(format!("not JSON: {}", String::from_utf8_lossy(&bytes)))
    });
    (parts.status, parts.headers, value)
}

/// Which API's error shape a body has.
fn error_shape(body: &Value) -> &'static str {
    if body["type"] == "error" && body["error"]["type"].is_string() {
        "anthropic"
    } else if body["error"]["status"].is_string() && body["error"]["code"].is_u64() {
        "gemini"
    } else if body["error"]["type"].is_string() && body["error"]["code"].is_string() {
        "openai"
    } else {
        "unknown"
    }
}

/// A request: method, URI, headers, and the error shape expected.
type Case<'a> = (Method, &'a str, &'a [(&'a str, &'a str)], &'a str);

/// Claude Code and Codex retry a 401 unless told not to; every 401 the gateway answers (no key,
/// a wrong key, a key in the query, the management plane's) says so, in the path's format.
#[tokio::test]
async fn every_401_says_do_not_retry_in_the_paths_format() {
    let (gateway, _dir) = gateway();
    let chat = r#"{"model":"mock-1","messages":[{"role":"user","content":"hi"}]}"#;
    let wrong = [("authorization", "Bearer wrong-key-0123456789abc")];
    let cases: [Case<'_>; 7] = [
        (Method::POST, "/v1/chat/completions", &[], "openai"),
        (Method::POST, "/v1/chat/completions", &wrong, "openai"),
        (Method::POST, "/v1/messages", &[("x-api-key", "sk-ant-wrong-000000000000")], "anthropic"),
        (Method::POST, "/v1beta/models/mock-1:generateContent", &[], "gemini"),
        (Method::POST, "/v1/models/mock-1:generateContent", &[], "gemini"),
        (Method::POST, &*format!("/v1beta/models/mock-1:generateContent?key={KEY}"), &[], "gemini"),
        (Method::GET, "/v1/models", &[("anthropic-version", "2023-06-01")], "anthropic"),
    ];
    for (method, uri, headers, shape) in cases {
        let (status, response_headers, body) = call(&gateway, method, uri, headers, chat).await;
        assert_eq!(status, 401, "{uri}: {body}");
        assert_eq!(response_headers["x-should-retry"], "false", "{uri}");
        assert_eq!(error_shape(&body), shape, "{uri}: {body}");
    }
    let (status, headers, _) = call(
        &gateway,
        Method::GET,
        "/v0/management/status",
        &[("x-management-key", "not-the-management-key")],
        "",
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(headers["x-should-retry"], "false", "the management plane's 401 too");
    // Other errors leave the client's retry policy alone.
    let (status, headers, _) = call(&gateway, Method::POST, "/v1/nothing", &[], "").await;
    assert_eq!(status, 404);
    assert!(!headers.contains_key("x-should-retry"));
}

/// Unknown routes and wrong methods under each API's prefix answer in that API's format.
#[tokio::test]
async fn unknown_routes_and_methods_answer_in_the_paths_api_format() {
    let (gateway, _dir) = gateway();
    let bearer = format!("Bearer {KEY}");
    let auth = [("authorization", bearer.as_str())];
    for (method, uri, status, shape) in [
        (Method::POST, "/v1beta/models/mock-1:deleteEverything", 404, "gemini"),
        (Method::POST, "/v1/models/mock-1:deleteEverything", 404, "gemini"),
        (Method::POST, "/v1beta/tunedModels", 404, "gemini"),
        (Method::GET, "/v1beta/models/mock-1:generateContent", 405, "gemini"),
        (Method::GET, "/v1/models/mock-1:streamGenerateContent", 405, "gemini"),
        (Method::DELETE, "/v1beta/models", 405, "gemini"),
        (Method::POST, "/v1/messages/batches", 404, "anthropic"),
        (Method::GET, "/v1/messages", 405, "anthropic"),
        (Method::POST, "/v1/nothing", 404, "openai"),
        (Method::POST, "/v1/models", 405, "openai"),
    ] {
        let (got, _, body) = call(&gateway, method.clone(), uri, &auth, "{}").await;
        assert_eq!(got.as_u16(), status, "{method} {uri}: {body}");
        assert_eq!(error_shape(&body), shape, "{method} {uri}: {body}");
    }
    // Under the `/v1/` prefix every API shares, the SDK's own headers pick the format.
    let anthropic = [("x-api-key", KEY), ("anthropic-version", "2023-06-01")];
    let gemini = [("x-goog-api-key", KEY)];
    for (method, uri, headers, status, shape) in [
        (Method::POST, "/v1/complete", &anthropic[..], 404, "anthropic"),
        (Method::POST, "/v1/models", &anthropic[..], 405, "anthropic"),
        (Method::DELETE, "/v1/models/mock-1", &gemini[..], 405, "gemini"),
        (Method::POST, "/v1/cachedContents", &gemini[..], 404, "gemini"),
    ] {
        let (got, _, body) = call(&gateway, method.clone(), uri, headers, "{}").await;
        assert_eq!(got.as_u16(), status, "{method} {uri}: {body}");
        assert_eq!(error_shape(&body), shape, "{method} {uri}: {body}");
    }
}

/// The google-genai SDK's default API version is `v1`: every Gemini method is served under
/// `/v1/` as under `/v1beta/`, here by the mock in Gemini's shapes.
#[tokio::test]
async fn gemini_methods_are_served_under_v1_and_v1beta() {
    let (gateway, _dir) = gateway();
    let auth = [("x-goog-api-key", KEY)];
    let contents = r#"{"contents":[{"role":"user","parts":[{"text":"hi"}]}]}"#;
    for prefix in ["/v1beta", "/v1"] {
        let uri = format!("{prefix}/models/mock-1:generateContent");
        let (status, _, body) = call(&gateway, Method::POST, &uri, &auth, contents).await;
        assert_eq!(status, 200, "{uri}: {body}");
        let text = body.pointer("/candidates/0/content/parts/0/text").unwrap().as_str().unwrap();
        assert!(text.contains("mock-1"), "{uri}: {body}");

        let uri = format!("{prefix}/models/mock-1:streamGenerateContent?alt=sse");
        let (status, headers, _) = call(&gateway, Method::POST, &uri, &auth, contents).await;
        assert_eq!(status, 200, "{uri}");
        assert_eq!(headers["content-type"], "text/event-stream", "{uri}");

        let uri = format!("{prefix}/models/mock-1:countTokens");
        let (status, _, body) = call(&gateway, Method::POST, &uri, &auth, contents).await;
        assert_eq!(status, 200, "{uri}: {body}");
        assert!(body["totalTokens"].as_u64().unwrap() > 0, "{uri}: {body}");

        let uri = format!("{prefix}/models/mock-1:embedContent");
        let one = r#"{"content":{"parts":[{"text":"hi"}]}}"#;
        let (status, _, body) = call(&gateway, Method::POST, &uri, &auth, one).await;
        assert_eq!(status, 200, "{uri}: {body}");
        assert!(!body["embedding"]["values"].as_array().unwrap().is_empty(), "{uri}: {body}");

        let uri = format!("{prefix}/models/mock-1:batchEmbedContents");
        let two = r#"{"requests":[{"model":"models/mock-1","content":{"parts":[{"text":"a"}]}},
                                  {"model":"models/mock-1","content":{"parts":[{"text":"b"}]}}]}"#;
        let (status, _, body) = call(&gateway, Method::POST, &uri, &auth, two).await;
        assert_eq!(status, 200, "{uri}: {body}");
        let embeddings = body["embeddings"].as_array().unwrap();
        assert_eq!(embeddings.len(), 2, "{uri}: {body}");
        assert_ne!(embeddings[0], embeddings[1], "one vector per input");

        let uri = format!("{prefix}/models");
        let (status, _, body) = call(&gateway, Method::GET, &uri, &auth, "").await;
        assert_eq!(status, 200, "{uri}: {body}");
        let names: Vec<&str> = body["models"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"models/gpt-4o"), "{uri}: {body}");

        let uri = format!("{prefix}/models/gpt-4o");
        let (status, _, body) = call(&gateway, Method::GET, &uri, &auth, "").await;
        assert_eq!(status, 200, "{uri}: {body}");
        assert_eq!(body["name"], "models/gpt-4o", "{uri}: {body}");
        assert!(body["supportedGenerationMethods"].is_array(), "{uri}: {body}");

        let uri = format!("{prefix}/models/claude-unknown");
        let (status, _, body) = call(&gateway, Method::GET, &uri, &auth, "").await;
        assert_eq!(status, 404, "{uri}: {body}");
        assert_eq!(error_shape(&body), "gemini", "{uri}: {body}");
    }
    // A model the key may not use is not found, not forbidden: a listing tells nothing more.
    let (status, _, body) = call(
        &gateway,
        Method::GET,
        "/v1beta/models/gpt-4o",
        &[("x-goog-api-key", LIMITED_KEY)],
        "",
    )
    .await;
    assert_eq!(status, 404, "{body}");
}

/// `GET /v1/models/{id}` in OpenAI's shape, or Anthropic's with `anthropic-version`; a model
/// the key may not use is a 404 in the same format.
#[tokio::test]
async fn a_model_is_retrieved_in_the_clients_shape() {
    let (gateway, _dir) = gateway();
    let bearer = format!("Bearer {KEY}");
    let (status, _, body) =
        call(&gateway, Method::GET, "/v1/models/gpt-4o", &[("authorization", &bearer)], "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id"], "gpt-4o");
    assert_eq!(body["object"], "model");
    assert_eq!(body["owned_by"], "openai");
    assert!(body["created"].is_u64(), "{body}");

    let anthropic = [("x-api-key", KEY), ("anthropic-version", "2023-06-01")];
    let (status, _, body) = call(&gateway, Method::GET, "/v1/models/mock-1", &anthropic, "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["type"], "model");
    assert_eq!(body["id"], "mock-1");
    assert!(body["display_name"].is_string() && body["created_at"].is_string(), "{body}");

    let (status, _, body) = call(&gateway, Method::GET, "/v1/models", &anthropic, "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["has_more"], false);
    assert_eq!(body["first_id"], body["data"][0]["id"]);
    assert!(body["data"].as_array().unwrap().iter().all(|m| m["type"] == "model"), "{body}");

    for (headers, shape) in [
        (&[("authorization", bearer.as_str())][..], "openai"),
        (&[("x-api-key", LIMITED_KEY), ("anthropic-version", "2023-06-01")][..], "anthropic"),
        (&[("x-api-key", LIMITED_KEY)][..], "openai"),
    ] {
        let uri =
            if headers[0].1 == bearer { "/v1/models/claude-unknown" } else { "/v1/models/gpt-4o" };
        let (status, _, body) = call(&gateway, Method::GET, uri, headers, "").await;
        assert_eq!(status, 404, "{uri} {headers:?}: {body}");
        assert_eq!(error_shape(&body), shape, "{uri} {headers:?}: {body}");
    }
}

/// The legacy `POST /v1/completions`: the mock answers it in its own shape, streamed and not,
/// and a `max_tokens` over the configured cap is refused as on the other endpoints.
#[tokio::test]
async fn legacy_completions_are_answered_in_their_shape_and_capped() {
    let (gateway, _dir) = gateway();
    let bearer = format!("Bearer {KEY}");
    let auth = [("authorization", bearer.as_str())];
    let (status, _, body) = call(
        &gateway,
        Method::POST,
        "/v1/completions",
        &auth,
        r#"{"model":"mock-1","prompt":"Say hi","max_tokens":16}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "text_completion");
    assert!(body["choices"][0]["text"].as_str().unwrap().contains("mock-1"), "{body}");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert!(body["usage"]["completion_tokens"].as_u64().unwrap() > 0, "{body}");

    let mut request = Request::builder()
        .method(Method::POST)
        .uri("/v1/completions")
        .header("authorization", &bearer)
        .body(Full::new(Bytes::from_static(br#"{"model":"mock-1","prompt":"hi","stream":true}"#)))
        .unwrap();
    request.headers_mut().insert("content-type", "application/json".parse().unwrap());
    let response = gateway.handle(request, peer()).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let text = String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec())
        .unwrap();
    let chunks: Vec<Value> = text
        .split("\n\n")
        .filter_map(|event| event.strip_prefix("data: "))
        .filter(|data| *data != "[DONE]")
        .map(|data| serde_json::from_str(data).unwrap())
        .collect();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let streamed: String =
        chunks.iter().map(|c| c["choices"][0]["text"].as_str().unwrap_or("")).collect();
    assert!(streamed.contains("mock-1"), "{text}");
    assert!(chunks.iter().all(|c| c["object"] == "text_completion"), "{text}");

    let (status, _, body) = call(
        &gateway,
        Method::POST,
        "/v1/completions",
        &auth,
        r#"{"model":"mock-1","prompt":"Say hi","max_tokens":999999999}"#,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("`max_tokens`") && message.contains("providers.demo.max_tokens"),
        "{body}"
    );
}
