//! Tokens are counted whatever the client asks for (issue 18, item 2): a streamed OpenAI chat
//! request without `stream_options.include_usage` used to report no usage, and was charged
//! only its `max_tokens`, so prompts of 100k tokens with `max_tokens: 1` went through a
//! 50,000-token quota one token at a time. The gateway now reserves an estimate of the prompt
//! too, asks the upstream for the usage and keeps the extra chunk from a client that did not
//! ask for it.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use cliproxy_e2e::canned::{event, openai_stream, openai_stream_for, openai_stream_with_usage};
use cliproxy_e2e::disk::{metric, metrics_addr};
use cliproxy_e2e::*;
use serde_json::{Value, json};

const UPSTREAM_TOKEN: &str = "sk-e2e-usage-upstream-9c41d7e2b08a";
const WORDS: &[&str] = &["Counted", " all", " the", " same"];

/// How the test upstream reports usage.
#[derive(Clone, Copy)]
enum Upstream {
    /// As the real API: the usage chunk (and `"usage": null` on every other chunk) only when
    /// the request asks, with `prompt_tokens` one per four bytes of the request body.
    Honest,
    /// Never any usage, whatever the request asks (an OpenAI-compatible server that ignores
    /// `stream_options`).
    Silent,
    /// The canned stream: usage 17 + 9 when asked.
    Canned,
}

/// An OpenAI chat stream of [`WORDS`] whose usage chunk, when `usage` is given, reports it.
fn chunks(usage: Option<(u64, u64)>) -> Vec<String> {
    let chunk = |delta: Value, finish: Value| {
        let mut chunk = json!({"id": "chatcmpl-usage", "object": "chat.completion.chunk",
            "created": 1_763_769_600, "model": "gpt-x",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]});
        if usage.is_some() {
            chunk["usage"] = Value::Null;
        }
        event(None, &chunk)
    };
    let mut events = vec![chunk(json!({"role": "assistant", "content": ""}), Value::Null)];
    events.extend(WORDS.iter().map(|word| chunk(json!({"content": word}), Value::Null)));
    events.push(chunk(json!({}), json!("stop")));
    if let Some((prompt, completion)) = usage {
        events.push(event(
            None,
            &json!({"id": "chatcmpl-usage", "object": "chat.completion.chunk",
                "created": 1_763_769_600, "model": "gpt-x", "choices": [],
                "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                          "total_tokens": prompt + completion}}),
        ));
    }
    events.push("data: [DONE]\n\n".to_owned());
    events
}

async fn upstream(kind: Upstream) -> MockUpstream {
    MockUpstream::start(move |request| {
        let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
        let asked = body.pointer("/stream_options/include_usage") == Some(&json!(true));
        let max_tokens = body["max_tokens"].as_u64().unwrap_or(16);
        match kind {
            Upstream::Honest => {
                let prompt = (request.body.len() as u64).div_ceil(4);
                Reply::sse(chunks(asked.then_some((prompt, max_tokens))))
            }
            Upstream::Silent => Reply::sse(chunks(None)),
            Upstream::Canned => Reply::sse(openai_stream_for(request, "gpt-x", WORDS)),
        }
    })
    .await
}

/// The provider `oa` (OpenAI at `mock`) with `limits` (YAML flow entries such as
/// `quota: {...}`), the audit log at `audit` and metrics on a free port.
fn write_config(harness: &Harness, mock: &MockUpstream, limits: &str, audit: &Path) {
    let yaml = format!(
        "server:\n  host: 127.0.0.1\n  port: 0\n  shutdown_timeout: 10s\n\
         auth:\n  api_keys:\n    - {{name: e2e, key: \"{CLIENT_KEY}\"}}\n  dir: {dir:?}\n\
         logging: {{level: debug, format: json, audit: {{enabled: true, file: {audit:?}}}}}\n\
         metrics: {{enabled: true, host: 127.0.0.1, port: 0}}\n\
         providers:\n  oa: {{type: openai, base_url: \"{url}\", models: [\"gpt-*\"]{limits}}}\n",
        dir = harness.auth_dir().display().to_string(),
        audit = audit.display().to_string(),
        url = mock.url(),
    );
    harness.write_config(&yaml);
    harness.vault_add("oa", "oa-1", UPSTREAM_TOKEN, None);
}

/// Sends a streamed chat request and reads its answer to the end: the status, the request
/// id and the body as text.
async fn stream(gateway: &Gateway, body: &Value) -> (u16, String, String) {
    let mut response = client()
        .post(format!("{}/v1/chat/completions", gateway.url()))
        .bearer_auth(CLIENT_KEY)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    let mut seen = String::new();
    read_to_end(&mut response, &mut seen).await;
    (status, id, seen)
}

/// `cliproxy_quota_remaining{provider="oa"}` now.
async fn quota_remaining(metrics: SocketAddr) -> u64 {
    let series = "cliproxy_quota_remaining{provider=\"oa\"}";
    metric(metrics, series).await.map(|value| value as u64).expect("the quota figure")
}

/// The audit file's complete lines, parsed.
fn audit_lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete.lines().map(|line| serde_json::from_str(line).unwrap()).collect()
}

/// The `provider_request` audit line of the request `id`. The audit log is written by its own
/// thread and announces no line anywhere a test can wait on, so this polls (backing off to
/// 200 ms) until [`WAIT`].
async fn provider_request(path: &Path, id: &str) -> Value {
    let deadline = Instant::now() + WAIT;
    let mut pause = Duration::from_millis(10);
    loop {
        let lines = audit_lines(path);
        if let Some(line) =
            lines.iter().find(|l| l["event_type"] == "provider_request" && l["request_id"] == id)
        {
            return line.clone();
        }
        assert!(Instant::now() < deadline, "no provider_request line for {id}:\n{lines:#?}");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// A streamed chat request without `stream_options`, whose prompt is `prompt_bytes` long.
fn streamed_chat(prompt_bytes: usize, max_tokens: u64) -> Value {
    json!({"model": "gpt-x", "stream": true, "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": "lorem ipsum ".repeat(prompt_bytes / 12)}]})
}

/// The attack: 30 streamed requests, each with a prompt of about 100k tokens and
/// `max_tokens: 1`, none asking for usage, against a provider quota of 50,000 tokens. Before
/// the fix each was charged 1 token and all 30 were served; now the first one uses the quota
/// up (with the real usage it asked the upstream for, or with its estimate when the upstream
/// reports none) and the other 29 are refused.
#[tokio::test]
async fn prompts_of_100k_tokens_cannot_stream_through_a_quota_of_50000() {
    for kind in [Upstream::Honest, Upstream::Silent] {
        let label = match kind {
            Upstream::Honest => "upstream reporting usage when asked",
            _ => "upstream never reporting usage",
        };
        let mock = upstream(kind).await;
        let harness = Harness::new();
        let audit = harness.auth_dir().with_file_name("audit.log");
        write_config(&harness, &mock, ", quota: {limit: 50000, reset: daily}", &audit);
        let gateway = harness.start().await;
        let metrics = metrics_addr(&gateway).await;
        let body = streamed_chat(400_000, 1);
        let mut statuses = Vec::new();
        let mut first = None;
        for _ in 0..30 {
            let (status, id, _) = stream(&gateway, &body).await;
            first.get_or_insert(id);
            statuses.push(status);
        }
        let mut expected = vec![429; 30];
        expected[0] = 200;
        assert_eq!(statuses, expected, "{label}: {}", gateway.logs());
        assert_eq!(quota_remaining(metrics).await, 0, "{label}");
        let line = provider_request(&audit, first.as_deref().unwrap()).await;
        match kind {
            // The real figures, prompt and completion, reach the audit line.
            Upstream::Honest => {
                let prompt = mock.requests()[0].body.len().div_ceil(4) as u64;
                assert!(prompt > 100_000, "{prompt}");
                assert_eq!(line["details"]["input_tokens"], prompt, "{line}");
                assert_eq!(line["details"]["output_tokens"], 1, "{line}");
            }
            _ => assert_eq!(line["details"]["input_tokens"], Value::Null, "{line}"),
        }
        assert_eq!(mock.requests().len(), 1, "{label}: refused requests never go upstream");
    }
}

/// A client that does not ask for usage gets exactly the stream it would get from the real
/// API without the option (no usage chunk, no `"usage": null`), while the gateway asked the
/// upstream for it and the access log, the audit line and the quota carry the real figures.
#[tokio::test]
async fn a_client_that_did_not_ask_gets_no_usage_while_the_gateway_counts_it() {
    let mock = upstream(Upstream::Canned).await;
    let harness = Harness::new();
    let audit = harness.auth_dir().with_file_name("audit.log");
    write_config(&harness, &mock, ", quota: {limit: 1000, reset: daily}", &audit);
    let gateway = harness.start().await;
    let metrics = metrics_addr(&gateway).await;
    let body = json!({"model": "gpt-x", "stream": true, "max_tokens": 100,
        "messages": [{"role": "user", "content": "Hi"}]});
    let (status, id, seen) = stream(&gateway, &body).await;
    assert_eq!(status, 200, "{seen}");
    assert_eq!(seen, openai_stream("gpt-x", WORDS).concat());
    assert!(!seen.contains("usage"), "{seen}");

    // The upstream was asked for the usage, and saw the client's body otherwise unchanged.
    let sent: Value = serde_json::from_slice(&mock.requests()[0].body).unwrap();
    let mut expected = body.clone();
    expected["stream_options"] = json!({"include_usage": true});
    assert_eq!(sent, expected);

    let log =
        gateway.wait_for_log(|e| e["msg"] == "request" && e["request_id"] == id.as_str()).await;
    assert_eq!((log["input_tokens"].as_u64(), log["output_tokens"].as_u64()), (Some(17), Some(9)));
    let line = provider_request(&audit, &id).await;
    assert_eq!(line["details"]["input_tokens"], 17, "{line}");
    assert_eq!(line["details"]["output_tokens"], 9, "{line}");
    assert_eq!(quota_remaining(metrics).await, 1000 - 26);
}

/// A client that asks for usage gets the stream as the upstream sent it, usage chunk and
/// `"usage": null` fields included, and its request goes upstream byte for byte.
#[tokio::test]
async fn a_client_that_asked_for_usage_still_gets_it() {
    let mock = upstream(Upstream::Canned).await;
    let harness = Harness::new();
    let audit = harness.auth_dir().with_file_name("audit.log");
    write_config(&harness, &mock, "", &audit);
    let gateway = harness.start().await;
    for options in [json!({"include_usage": true}), json!({"include_usage": true, "x": 1})] {
        let body = json!({"model": "gpt-x", "stream": true, "stream_options": options,
            "messages": [{"role": "user", "content": "Hi"}]});
        let (status, _, seen) = stream(&gateway, &body).await;
        assert_eq!(status, 200, "{seen}");
        assert_eq!(seen, openai_stream_with_usage("gpt-x", WORDS).concat());
        let sent = mock.requests().last().unwrap().body.clone();
        assert_eq!(sent, serde_json::to_vec(&body).unwrap(), "the body went upstream unchanged");
    }
}

/// A client whose `stream_options` says `include_usage: false` (or holds other options only)
/// is treated as one that did not ask: the upstream is asked, the other options stay, and the
/// client gets no usage.
#[tokio::test]
async fn include_usage_false_is_asked_upstream_and_kept_from_the_client() {
    let mock = upstream(Upstream::Canned).await;
    let harness = Harness::new();
    let audit = harness.auth_dir().with_file_name("audit.log");
    write_config(&harness, &mock, "", &audit);
    let gateway = harness.start().await;
    for options in [json!({"include_usage": false}), json!({"x": 1}), json!(null)] {
        let body = json!({"model": "gpt-x", "stream": true, "stream_options": options.clone(),
            "messages": [{"role": "user", "content": "Hi"}]});
        let (status, id, seen) = stream(&gateway, &body).await;
        assert_eq!(status, 200, "{options}: {seen}");
        assert_eq!(seen, openai_stream("gpt-x", WORDS).concat(), "{options}");
        let sent: Value = serde_json::from_slice(&mock.requests().last().unwrap().body).unwrap();
        let mut expected = body.clone();
        match options.as_object() {
            Some(object) => {
                let mut object = object.clone();
                object.insert("include_usage".to_owned(), json!(true));
                expected["stream_options"] = Value::Object(object);
            }
            None => expected["stream_options"] = json!({"include_usage": true}),
        }
        assert_eq!(sent, expected, "{options}");
        let line = provider_request(&audit, &id).await;
        assert_eq!(line["details"]["input_tokens"], 17, "{options}: {line}");
    }
}

/// Tokens per minute are charged the real usage of a stream whose client did not ask for it:
/// with 1,000 tokens a minute, requests estimated at about 300 tokens that really use 401
/// are refused at the third; charged their estimate (or nothing, as before) the third passes.
#[tokio::test]
async fn tokens_per_minute_count_the_real_usage_of_streams_that_did_not_ask() {
    let mock = MockUpstream::start(|request| {
        let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
        let asked = body.pointer("/stream_options/include_usage") == Some(&json!(true));
        Reply::sse(chunks(asked.then_some((400, 1))))
    })
    .await;
    let harness = Harness::new();
    let audit = harness.auth_dir().with_file_name("audit.log");
    write_config(
        &harness,
        &mock,
        ", rate_limit: {requests_per_minute: 100, tokens_per_minute: 1000}",
        &audit,
    );
    let gateway = harness.start().await;
    let body = streamed_chat(1_200, 1);
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(stream(&gateway, &body).await.0);
    }
    assert_eq!(statuses, [200, 200, 429], "{}", gateway.logs());
}

/// A legacy Completions stream of [`WORDS`] as the real API sends it: a chunk per word, a
/// finish chunk and, when `usage` is given, `"usage": null` on each of them and a last chunk
/// with no choices that reports it.
fn completion_chunks(usage: Option<(u64, u64)>) -> Vec<String> {
    let chunk = |text: &str, finish: Value| {
        let mut chunk = json!({"id": "cmpl-usage", "object": "text_completion",
            "created": 1_763_769_600, "model": "gpt-x",
            "choices": [{"text": text, "index": 0, "logprobs": null, "finish_reason": finish}]});
        if usage.is_some() {
            chunk["usage"] = Value::Null;
        }
        event(None, &chunk)
    };
    let mut events: Vec<String> = WORDS.iter().map(|word| chunk(word, Value::Null)).collect();
    events.push(chunk("", json!("stop")));
    if let Some((prompt, completion)) = usage {
        events.push(event(
            None,
            &json!({"id": "cmpl-usage", "object": "text_completion", "created": 1_763_769_600,
                "model": "gpt-x", "choices": [],
                "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                          "total_tokens": prompt + completion}}),
        ));
    }
    events.push("data: [DONE]\n\n".to_owned());
    events
}

/// Streamed legacy completions (`POST /v1/completions`) are asked for their usage as chat
/// streams are (issue 19): the upstream gets `include_usage`, the request is charged the
/// usage the upstream reports (not the estimate), and a client that did not ask gets the
/// stream without the usage chunk and without `"usage": null`; one that asked gets both.
#[tokio::test]
async fn streamed_legacy_completions_are_charged_their_real_usage() {
    let mock = MockUpstream::start(|request| {
        let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
        let asked = body.pointer("/stream_options/include_usage") == Some(&json!(true));
        Reply::sse(completion_chunks(asked.then_some((23, 4))))
    })
    .await;
    let harness = Harness::new();
    let audit = harness.auth_dir().with_file_name("audit.log");
    write_config(&harness, &mock, ", quota: {limit: 1000, reset: daily}", &audit);
    let gateway = harness.start().await;
    let metrics = metrics_addr(&gateway).await;
    let completions = |body: Value| {
        let url = format!("{}/v1/completions", gateway.url());
        async move {
            let mut response =
                client().post(url).bearer_auth(CLIENT_KEY).json(&body).send().await.unwrap();
            let status = response.status().as_u16();
            let id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
            let mut seen = String::new();
            read_to_end(&mut response, &mut seen).await;
            (status, id, seen)
        }
    };

    let body = json!({"model": "gpt-x", "stream": true, "max_tokens": 100, "prompt": "Say hi"});
    let (status, id, seen) = completions(body.clone()).await;
    assert_eq!(status, 200, "{seen}");
    assert_eq!(seen, completion_chunks(None).concat(), "the client gets no usage");
    let sent: Value = serde_json::from_slice(&mock.requests()[0].body).unwrap();
    let mut expected = body.clone();
    expected["stream_options"] = json!({"include_usage": true});
    assert_eq!(sent, expected, "the upstream is asked for the usage");
    let log =
        gateway.wait_for_log(|e| e["msg"] == "request" && e["request_id"] == id.as_str()).await;
    assert_eq!((log["input_tokens"].as_u64(), log["output_tokens"].as_u64()), (Some(23), Some(4)));
    let line = provider_request(&audit, &id).await;
    assert_eq!(
        (&line["details"]["input_tokens"], &line["details"]["output_tokens"]),
        (&json!(23), &json!(4))
    );
    assert_eq!(quota_remaining(metrics).await, 1000 - 27, "the real usage is charged");

    let mut asked = body;
    asked["stream_options"] = json!({"include_usage": true});
    let (status, _, seen) = completions(asked.clone()).await;
    assert_eq!(status, 200, "{seen}");
    assert_eq!(seen, completion_chunks(Some((23, 4))).concat());
    assert_eq!(mock.requests()[1].body, serde_json::to_vec(&asked).unwrap());
}
