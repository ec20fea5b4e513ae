//! Which upstream errors bench a credential (issue 18, item 1), against a recording mock
//! upstream over real TCP: a 4xx the client caused goes back to it as it came and cools
//! nothing; a key the provider calls invalid (OpenAI's 401 `invalid_api_key`, Gemini's 400
//! `API_KEY_INVALID`) cools that credential and fails over; a 429 on one model leaves the
//! provider's other models usable through the same credential; a 5xx rests a credential only
//! when it came from the credential's own base URL; and a client key whose requests keep
//! causing cool-downs is throttled and audited (`server.security.cooldown_abuse`, whose
//! durations must be longer than 0).

#![allow(clippy::unwrap_used, clippy::panic, reason = "a failed expectation fails the test")]

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cliproxy_core::Secret;
use cliproxy_e2e::{MockUpstream, Recorded, Reply};

use crate::common::Captured;
use cliproxy_gateway::Gateway;
use cliproxy_netguard::FakeClock;
use cliproxy_server::compose;
use cliproxy_server::config::Config;
use cliproxy_vault::Credential;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

const ATTACKER: &str = "client-key-attacker-0123456789abcdef";
const BYSTANDER: &str = "client-key-bystander-0123456789abcdef";
const TOKEN_A: &str = "sk-vault-first-credential-aaaa1111";
const TOKEN_B: &str = "sk-vault-second-credential-bbbb2222";

/// What a provider says when the request names a model the account may not use: the
/// client's doing, not the key's (the message is OpenAI's own).
const NOT_ALLOWED: &str = r#"{"error":{"message":"You are not allowed to sample from this model","type":"invalid_request_error","param":null,"code":null}}"#;

/// A gateway with two client keys (`attacker`, `bystander`), the providers of `providers`
/// and the credentials `(provider, id, token)`, on `clock`, with `extra` config.
fn gateway(
    providers: &str,
    credentials: &[(&str, &str, &str)],
    extra: &str,
    clock: Arc<FakeClock>,
) -> (Gateway, tempfile::TempDir) {
    let credentials: Vec<(&str, &str, &str, Option<String>)> =
        credentials.iter().map(|&(p, i, t)| (p, i, t, None)).collect();
    gateway_with(providers, &credentials, extra, clock)
}

/// [`gateway`] with a base URL of its own for some credentials.
fn gateway_with(
    providers: &str,
    credentials: &[(&str, &str, &str, Option<String>)],
    extra: &str,
    clock: Arc<FakeClock>,
) -> (Gateway, tempfile::TempDir) {
    let log = slog::Logger::root(slog::Discard, slog::o!());
    gateway_logged(providers, credentials, extra, clock, log)
}

/// [`gateway_with`] logging to `log`.
fn gateway_logged(
    providers: &str,
    credentials: &[(&str, &str, &str, Option<String>)],
    extra: &str,
    clock: Arc<FakeClock>,
    log: slog::Logger,
) -> (Gateway, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "auth:\n  api_keys: [{{name: attacker, key: \"{ATTACKER}\"}}, {{name: bystander, key: \"{BYSTANDER}\"}}]\n  dir: {:?}\n\
         providers:\n{providers}{extra}",
        dir.path().join("auths").display().to_string()
    );
    let config = Config::from_yaml(&yaml).unwrap();
    let store = config.auth.build().unwrap();
    for (provider, id, token, base_url) in credentials {
        let mut credential = Credential::new_api_key(provider, Secret::from((*token).to_owned()))
            .unwrap()
            .with_id(id)
            .unwrap();
        credential.base_url = base_url.clone();
        store.put(&credential).unwrap();
    }
    let clock = clock as Arc<dyn cliproxy_netguard::Clock>;
    (compose::gateway_with_clock(&config, &log, Some(clock)).unwrap(), dir)
}

/// Sends `body` to `path` with `key` in the header the path's API uses.
async fn send(
    gateway: &Gateway,
    key: &str,
    path: &str,
    body: &Value,
) -> (StatusCode, HeaderMap, String) {
    let mut request = Request::post(path).header("content-type", "application/json");
    request = if path.starts_with("/v1beta") {
        request.header("x-goog-api-key", key)
    } else {
        request.header("authorization", format!("Bearer {key}"))
    };
    let request = request.body(Full::new(Bytes::from(body.to_string()))).unwrap();
    let response = gateway.handle(request, "127.0.0.1:40000".parse().unwrap()).await;
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (parts.status, parts.headers, String::from_utf8_lossy(&bytes).into_owned())
}

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "Hi"}]})
}

fn served(model: &str) -> Reply {
    Reply::ok(json!({"id": "c1", "object": "chat.completion", "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "served"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}))
}

fn model_of(request: &Recorded) -> String {
    serde_json::from_slice::<Value>(&request.body).unwrap_or_default()["model"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

/// Which credential each upstream request carried (`a`, `b`), in order.
fn tokens_seen(mock: &MockUpstream) -> Vec<&'static str> {
    mock.requests()
        .iter()
        .map(|r| {
            if r.contains(TOKEN_A) {
                "a"
            } else if r.contains(TOKEN_B) {
                "b"
            } else {
                "?"
            }
        })
        .collect()
}

fn openai_provider(url: &str) -> String {
    format!("  openai: {{type: openai, base_url: \"{url}\", models: [\"gpt-*\"]}}\n")
}

#[tokio::test]
async fn a_client_caused_403_cools_nothing_and_goes_back_as_it_came() {
    let mock = MockUpstream::start(|request| {
        if model_of(request) == "gpt-forbidden" {
            Reply::Json {
                status: 403,
                headers: vec![("x-request-id", "req_upstream_1".to_owned())],
                body: NOT_ALLOWED.to_owned(),
            }
        } else {
            served(&model_of(request))
        }
    })
    .await;
    let (gateway, _dir) = gateway(
        &openai_provider(&mock.url()),
        &[("openai", "c-a", TOKEN_A), ("openai", "c-b", TOKEN_B)],
        "",
        FakeClock::at_unix(1_800_000_000),
    );
    for _ in 0..4 {
        let (status, headers, body) =
            send(&gateway, ATTACKER, "/v1/chat/completions", &chat("gpt-forbidden")).await;
        assert_eq!(status, 403, "{body}");
        assert_eq!(body, NOT_ALLOWED, "the upstream's answer, unchanged");
        assert_eq!(headers["x-upstream-request-id"], "req_upstream_1");
    }
    // One upstream call per request: no failover for a fault that is not the credential's.
    assert_eq!(tokens_seen(&mock), ["a", "b", "a", "b"]);
    // Both credentials still serve another client.
    for _ in 0..2 {
        let (status, _, body) =
            send(&gateway, BYSTANDER, "/v1/chat/completions", &chat("gpt-4o")).await;
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(tokens_seen(&mock)[4..], ["a", "b"]);
}

#[tokio::test]
async fn a_key_the_provider_calls_invalid_cools_and_fails_over() {
    // The first credential is revoked: OpenAI says so with 401, Gemini with 400.
    let mock = MockUpstream::start(|request| {
        if !request.contains(TOKEN_A) {
            return served(&model_of(request));
        }
        if request.path_and_query.starts_with("/gm/") {
            Reply::Json {
                status: 400,
                headers: Vec::new(),
                body: json!({"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.",
                    "status": "INVALID_ARGUMENT", "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "API_KEY_INVALID", "domain": "googleapis.com",
                    "metadata": {"service": "generativelanguage.googleapis.com"}}]}})
                .to_string(),
            }
        } else {
            Reply::Json {
                status: 401,
                headers: Vec::new(),
                body: json!({"error": {"message": "Incorrect API key provided: sk-vault-****aaaa1111.",
                    "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}})
                .to_string(),
            }
        }
    })
    .await;
    let url = mock.url();
    let (gateway, _dir) = gateway(
        &format!(
            "  oa: {{type: openai, base_url: \"{url}/oa\", models: [\"gpt-*\"]}}\n  \
               gm: {{type: gemini, base_url: \"{url}/gm\", models: [\"gemini-*\"]}}\n"
        ),
        &[
            ("oa", "oa-a", TOKEN_A),
            ("oa", "oa-b", TOKEN_B),
            ("gm", "gm-a", TOKEN_A),
            ("gm", "gm-b", TOKEN_B),
        ],
        "",
        FakeClock::at_unix(1_800_000_000),
    );
    let gemini = json!({"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]});
    for (path, body) in [
        ("/v1/chat/completions", chat("gpt-4o")),
        ("/v1beta/models/gemini-2.0-flash:generateContent", gemini),
    ] {
        let before = mock.requests().len();
        // The revoked key fails over to the second; the next requests skip it.
        for _ in 0..3 {
            let (status, _, text) = send(&gateway, BYSTANDER, path, &body).await;
            assert_eq!(status, 200, "{path}: {text}");
        }
        assert_eq!(tokens_seen(&mock)[before..], ["a", "b", "b", "b"], "{path}");
    }
}

#[tokio::test]
async fn a_429_on_one_model_leaves_the_others_usable_through_the_same_credential() {
    let mock = MockUpstream::start(|request| {
        if model_of(request) == "gpt-busy" {
            Reply::Json {
                status: 429,
                headers: vec![("retry-after", "60".to_owned())],
                body: json!({"error": {"message": "Rate limit reached for gpt-busy in organization org-x on requests per min (RPM)",
                    "type": "requests", "param": null, "code": "rate_limit_exceeded"}})
                .to_string(),
            }
        } else {
            served(&model_of(request))
        }
    })
    .await;
    let (gateway, _dir) = gateway(
        &openai_provider(&mock.url()),
        &[("openai", "only", TOKEN_A)],
        "",
        FakeClock::at_unix(1_800_000_000),
    );
    let (status, headers, body) =
        send(&gateway, ATTACKER, "/v1/chat/completions", &chat("gpt-busy")).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(headers["retry-after"], "60");
    // The same credential still serves the provider's other models.
    for model in ["gpt-4o", "gpt-4o-mini"] {
        let (status, _, body) =
            send(&gateway, BYSTANDER, "/v1/chat/completions", &chat(model)).await;
        assert_eq!(status, 200, "{model}: {body}");
    }
    // The limited model rests, without another call upstream.
    let (status, _, body) =
        send(&gateway, BYSTANDER, "/v1/chat/completions", &chat("gpt-busy")).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(mock.requests().len(), 3);
}

#[tokio::test]
async fn a_key_that_keeps_causing_cooldowns_is_throttled_and_audited() {
    // Every model the attacker names is rate limited upstream: each request cools one
    // (credential, model) pair.
    let mock = MockUpstream::start(|request| {
        if model_of(request).starts_with("gpt-hot") {
            Reply::Json {
                status: 429,
                headers: Vec::new(),
                body: json!({"error": {"message": "Rate limit reached", "type": "tokens",
                    "param": null, "code": "rate_limit_exceeded"}})
                .to_string(),
            }
        } else {
            served(&model_of(request))
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.log");
    let clock = FakeClock::at_unix(1_800_000_000);
    let (gateway, _dir) = gateway(
        &openai_provider(&mock.url()),
        &[("openai", "only", TOKEN_A)],
        &format!(
            "server: {{security: {{cooldown_abuse: {{max_per_window: 3, window: 1m, throttle_for: 5m}}}}}}\n\
             logging: {{audit: {{enabled: true, file: {:?}, events: [security_violation]}}}}\n",
            file.display().to_string()
        ),
        clock.clone(),
    );
    for n in 0..3 {
        let (status, _, body) =
            send(&gateway, ATTACKER, "/v1/chat/completions", &chat(&format!("gpt-hot-{n}"))).await;
        assert_eq!(status, 429, "{body}");
    }
    // The fourth cool-down within the minute is one too many: that request still got its
    // upstream answer, the next ones are refused by the gateway itself.
    let (status, _, body) =
        send(&gateway, ATTACKER, "/v1/chat/completions", &chat("gpt-hot-3")).await;
    assert_eq!(status, 429, "{body}");
    let sent = mock.requests().len();
    assert_eq!(sent, 4);
    let (status, headers, body) =
        send(&gateway, ATTACKER, "/v1/chat/completions", &chat("gpt-4o")).await;
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("server.security.cooldown_abuse"), "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["error"]["type"], "rate_limit_error");
    let wait: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((299..=300).contains(&wait), "Retry-After {wait}");
    assert_eq!(mock.requests().len(), sent, "a throttled key reached the upstream");
    // Another key is served meanwhile.
    let (status, _, body) =
        send(&gateway, BYSTANDER, "/v1/chat/completions", &chat("gpt-4o")).await;
    assert_eq!(status, 200, "{body}");
    // The throttle ends after `throttle_for`.
    clock.advance(Duration::from_secs(301));
    let (status, _, body) = send(&gateway, ATTACKER, "/v1/chat/completions", &chat("gpt-4o")).await;
    assert_eq!(status, 200, "{body}");

    gateway.flush_audit();
    let lines: Vec<Value> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let throttled: Vec<&Value> = lines.iter().filter(|l| l["result"] == "cooldown_abuse").collect();
    assert!(!throttled.is_empty(), "no cooldown_abuse line: {lines:?}");
    assert_eq!(throttled[0]["event_type"], "security_violation", "{}", throttled[0]);
    assert_eq!(throttled[0]["user_id"], "attacker", "{}", throttled[0]);
    let text = throttled[0].to_string();
    for secret in [ATTACKER, BYSTANDER, TOKEN_A] {
        assert!(!text.contains(secret), "{text}");
    }
}

/// A request that went upstream and got only errors back (here a 503 on every attempt, which
/// the gateway answers with its own 502) delivered no tokens: the finishing stage settles its
/// quota reservation at zero. A reservation kept would stay held until a restart: with a quota
/// that holds one request's estimate at a time, the next request would get 429 instead of
/// reaching the upstream again.
#[tokio::test]
async fn a_request_answered_with_an_upstream_error_is_charged_no_tokens() {
    let mock = MockUpstream::start(|_| Reply::Json {
        status: 503,
        headers: Vec::new(),
        body: r#"{"error":{"message":"overloaded"}}"#.to_owned(),
    })
    .await;
    let provider = format!(
        "  openai: {{type: openai, base_url: \"{}\", models: [\"gpt-*\"], \
         quota: {{limit: 1000, reset: daily}}}}\n",
        mock.url()
    );
    let (gateway, _dir) =
        gateway(&provider, &[("openai", "c-a", TOKEN_A)], "", FakeClock::at_unix(1_800_000_000));
    let mut body = chat("gpt-4o");
    body["max_tokens"] = json!(600);
    for attempt in 1..=3 {
        let (status, _, text) = send(&gateway, BYSTANDER, "/v1/chat/completions", &body).await;
        assert_eq!(status, 502, "attempt {attempt}: {text}");
        assert_eq!(mock.requests().len(), attempt, "attempt {attempt} reached the upstream");
    }
}

#[tokio::test]
async fn a_5xx_rests_a_credential_only_from_its_own_base_url() {
    // `/own` is the first credential's own endpoint, `/shared` the provider's; both fail
    // for the first credential's token only.
    let mock = MockUpstream::start(|request| {
        if request.contains(TOKEN_A) {
            Reply::Json {
                status: 503,
                headers: Vec::new(),
                body: r#"{"error":{"message":"overloaded","type":"server_error"}}"#.to_owned(),
            }
        } else {
            served(&model_of(request))
        }
    })
    .await;
    let url = mock.url();
    let (gateway, _dir) = gateway_with(
        &format!(
            "  own: {{type: openai, base_url: \"{url}/shared\", models: [\"own-*\"]}}\n  \
               shared: {{type: openai, base_url: \"{url}/shared\", models: [\"shared-*\"]}}\n"
        ),
        &[
            ("own", "own-a", TOKEN_A, Some(format!("{url}/own"))),
            ("own", "own-b", TOKEN_B, None),
            ("shared", "shared-a", TOKEN_A, None),
            ("shared", "shared-b", TOKEN_B, None),
        ],
        "",
        FakeClock::at_unix(1_800_000_000),
    );
    for (model, expected) in [
        // The own endpoint's 5xx rests its credential: the next requests skip it.
        ("own-1", &["a", "b", "b", "b"][..]),
        // The shared endpoint's 5xx rests nobody: each request meets it again and fails
        // over.
        ("shared-1", &["a", "b", "a", "b", "a", "b"][..]),
    ] {
        let before = mock.requests().len();
        for _ in 0..3 {
            let (status, _, body) =
                send(&gateway, BYSTANDER, "/v1/chat/completions", &chat(model)).await;
            assert_eq!(status, 200, "{model}: {body}");
        }
        assert_eq!(&tokens_seen(&mock)[before..], expected, "{model}");
    }
}

#[test]
fn a_zero_cooldown_abuse_window_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "auth:\n  api_keys: [\"{ATTACKER}\"]\n  dir: {:?}\nproviders:\n  demo: {{type: mock}}\n\
         server: {{security: {{cooldown_abuse: {{window: 0s}}}}}}\n",
        dir.path().join("auths").display().to_string()
    );
    let config = Config::from_yaml(&yaml).unwrap();
    let log = slog::Logger::root(slog::Discard, slog::o!());
    let error = compose::gateway(&config, &log).unwrap_err().to_string();
    assert!(error.contains("server.security.cooldown_abuse.window"), "{error}");
}

/// The message of an error body in any of the three formats (OpenAI's and Gemini's
/// `error.message`, Anthropic's too), and which format it is in.
fn error_message(body: &str) -> (&'static str, String) {
    let value: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    let format = if value["type"] == "error" {
        "anthropic"
    } else if value["error"]["status"].is_string() {
        "gemini"
    } else if value["error"]["param"].is_null() && value["error"]["type"].is_string() {
        "openai"
    } else {
        panic!("an error body in no known format: {body}")
    };
    (format, value["error"]["message"].as_str().unwrap().to_owned())
}

/// When the upstream's answer makes the gateway give up (issue 19), the client's error ends
/// with what the upstream said, in the format of the API the client called, when that is safe
/// to show: a 429 or a 5xx whose body is the provider's error JSON, the credential and the
/// organisation id redacted, escapes taken out. Not an HTML page, and not the provider's
/// words about the gateway's own key (which the operator reads in the log instead).
#[tokio::test]
async fn the_upstreams_message_reaches_the_client_only_when_safe_to_show() {
    let mock = MockUpstream::start(|request| {
        let path = request.path_and_query.as_str();
        let (status, body) = if path.starts_with("/oa/") {
            match model_of(request).as_str() {
                "gpt-limited" => (429, json!({"error": {"message": format!(
                    "Rate limit reached for gpt-limited in organization org-Secret42 on requests per min (RPM). Key: {TOKEN_A}\u{1b}[2J\u{202e}"),
                    "type": "requests", "param": null, "code": "rate_limit_exceeded"}}).to_string()),
                "gpt-html" => (503, "<html><body><h1>503 Service Temporarily Unavailable</h1><p>nginx</p></body></html>".to_owned()),
                // OpenAI's own 401 quotes the key's ends.
                "gpt-revoked" => (401, json!({"error": {"message": "Incorrect API key provided: sk-vault-****aaaa1111. You can find your API key at https://platform.openai.com/account/api-keys.",
                    "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}}).to_string()),
                _ => (503, json!({"error": {"message": "The server is overloaded, try again later", "type": "server_error",
                    "param": null, "code": null}}).to_string()),
            }
        } else if path.starts_with("/an/") {
            match model_of(request).as_str() {
                "claude-limited" => (429, json!({"type": "error", "error": {"type": "rate_limit_error",
                    "message": "Number of request tokens has exceeded your per-minute rate limit"}}).to_string()),
                _ => (401, json!({"type": "error", "error": {"type": "authentication_error",
                    "message": "invalid x-api-key"}}).to_string()),
            }
        } else {
            (429, json!({"error": {"code": 429, "message": "Resource has been exhausted (e.g. check quota).",
                "status": "RESOURCE_EXHAUSTED"}}).to_string())
        };
        Reply::Json { status, headers: Vec::new(), body }
    })
    .await;
    let url = mock.url();
    let captured = Captured::default();
    // One credential per provider: the first answer that fails over is the last one.
    let (gateway, _dir) = gateway_logged(
        &format!(
            "  oa: {{type: openai, base_url: \"{url}/oa\", models: [\"gpt-*\"]}}\n  \
               an: {{type: claude, base_url: \"{url}/an\", models: [\"claude-*\"]}}\n  \
               gm: {{type: gemini, base_url: \"{url}/gm\", models: [\"gemini-*\"]}}\n"
        ),
        &[
            ("oa", "oa-a", TOKEN_A, None),
            ("an", "an-a", TOKEN_A, None),
            ("gm", "gm-a", TOKEN_A, None),
        ],
        "",
        FakeClock::at_unix(1_800_000_000),
        captured.logger(),
    );
    let messages = |model: &str| json!({"model": model, "max_tokens": 16, "messages": [{"role": "user", "content": "Hi"}]});
    let gemini = json!({"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]});
    for (path, body, status, format, expected) in [
        (
            "/v1/chat/completions",
            chat("gpt-limited"),
            429,
            "openai",
            "provider `oa` is rate limiting the gateway's credentials: upstream said: Rate limit reached for gpt-limited in organization org-[redacted] on requests per min (RPM). Key: [redacted]",
        ),
        (
            "/v1/messages",
            messages("claude-limited"),
            429,
            "anthropic",
            "provider `an` is rate limiting the gateway's credentials: upstream said: Number of request tokens has exceeded your per-minute rate limit",
        ),
        (
            "/v1beta/models/gemini-2.0-flash:generateContent",
            gemini,
            429,
            "gemini",
            "provider `gm` is rate limiting the gateway's credentials: upstream said: Resource has been exhausted (e.g. check quota).",
        ),
        (
            "/v1/chat/completions",
            chat("gpt-overloaded"),
            502,
            "openai",
            "provider `oa` failed (upstream status 503 Service Unavailable): upstream said: The server is overloaded, try again later",
        ),
        // Not the provider's error JSON: nothing of it is shown.
        (
            "/v1/chat/completions",
            chat("gpt-html"),
            502,
            "openai",
            "provider `oa` failed (upstream status 503 Service Unavailable)",
        ),
        // About the gateway's key: the client is not told "invalid x-api-key".
        (
            "/v1/messages",
            messages("claude-3-haiku"),
            502,
            "anthropic",
            "provider `an` rejected the gateway's credential (upstream status 401 Unauthorized); an operator must check the vault and the provider account",
        ),
        // Last for `oa`: it rests the provider's only credential.
        (
            "/v1/chat/completions",
            chat("gpt-revoked"),
            502,
            "openai",
            "provider `oa` rejected the gateway's credential (upstream status 401 Unauthorized); an operator must check the vault and the provider account",
        ),
    ] {
        let (got, _, text) = send(&gateway, BYSTANDER, path, &body).await;
        assert_eq!(got.as_u16(), status, "{path} {body}: {text}");
        assert_eq!(error_message(&text), (format, expected.to_owned()), "{path} {body}");
        assert!(!text.contains(TOKEN_A) && !text.contains("Secret42"), "{text}");
    }
    // The operator reads what the upstream said about the key, and never the key.
    let logs = captured.text();
    assert!(
        logs.lines().any(|line| line.contains("cooling the credential down")
            && line.contains("upstream_message=invalid x-api-key")),
        "{logs}"
    );
    assert!(
        logs.lines().any(|line| line.contains("cooling the credential down")
            && line.contains("upstream_message=Incorrect API key provided: [redacted]. You can")),
        "{logs}"
    );
    // Nor any part of it that the provider quotes.
    assert!(!logs.contains(TOKEN_A) && !logs.contains("aaaa1111"), "{logs}");
}
