//! The built-in `mock` provider: deterministic replies in whichever API format the client
//! called, streamed or not, with usage numbers that look like a real provider's. It lets a
//! newcomer see the whole gateway work with no provider account, and the benchmarks measure
//! the gateway without a network in the way.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use serde_json::{Value, json};

use crate::api::Endpoint;
use crate::body::{Body, Paced, full};
use crate::usage::Usage;

/// What the mock is asked.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MockRequest<'a> {
    /// The endpoint called.
    pub endpoint: Endpoint<'a>,
    /// The model asked for.
    pub model: &'a str,
    /// Whether a stream was asked for.
    pub stream: bool,
    /// Gemini only: whether `alt=sse` was asked for.
    pub sse: bool,
    /// The request body, parsed.
    pub body: &'a Value,
    /// Size of the request body in bytes; the prompt token count is derived from it.
    pub body_len: usize,
    /// Used to make ids unique per request.
    pub request_id: &'a str,
}

/// The mock's reply and the usage it reports.
pub(crate) fn reply(request: &MockRequest<'_>, latency: Duration) -> (Response<Body>, Usage) {
    let text = reply_text(request.model);
    let words: Vec<String> = split_words(&text);
    // About four bytes of JSON per token is what real tokenizers give for English prompts.
    let usage = Usage {
        input_tokens: u64::try_from(request.body_len / 4).unwrap_or(u64::MAX).max(1),
        output_tokens: u64::try_from(words.len()).unwrap_or(u64::MAX),
    };
    let created = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let id = request.request_id;
    let model = request.model;
    let (content_type, chunks): (&str, Vec<Bytes>) = match request.endpoint {
        Endpoint::ChatCompletions if request.stream => {
            let include_usage =
                request.body.pointer("/stream_options/include_usage") == Some(&Value::Bool(true));
            let chunk = |delta: Value, finish: Value| {
                json!({"id": format!("chatcmpl-{id}"), "object": "chat.completion.chunk", "created": created,
                       "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
            };
            let mut events =
                vec![sse(None, &chunk(json!({"role": "assistant", "content": ""}), Value::Null))];
            events.extend(
                words.iter().map(|w| sse(None, &chunk(json!({"content": w}), Value::Null))),
            );
            events.push(sse(None, &chunk(json!({}), json!("stop"))));
            if include_usage {
                events.push(sse(None, &json!({"id": format!("chatcmpl-{id}"), "object": "chat.completion.chunk",
                    "created": created, "model": model, "choices": [], "usage": openai_usage(usage)})));
            }
            events.push(Bytes::from_static(b"data: [DONE]\n\n"));
            ("text/event-stream", events)
        }
        Endpoint::ChatCompletions => (
            "application/json",
            vec![json_bytes(&json!({
                "id": format!("chatcmpl-{id}"), "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": null, "finish_reason": "stop"}],
                "usage": openai_usage(usage),
            }))],
        ),
        Endpoint::Responses => {
            let response = |status: &str, with_output: bool| {
                json!({
                    "id": format!("resp_{id}"), "object": "response", "created_at": created, "status": status, "model": model,
                    "output": if with_output { json!([{"type": "message", "id": format!("msg_{id}"), "status": "completed", "role": "assistant",
                        "content": [{"type": "output_text", "text": text, "annotations": []}]}]) } else { json!([]) },
                    "usage": if with_output { json!({"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
                        "total_tokens": usage.input_tokens + usage.output_tokens}) } else { Value::Null },
                })
            };
            if request.stream {
                let mut events = vec![sse(
                    Some("response.created"),
                    &json!({"type": "response.created", "response": response("in_progress", false)}),
                )];
                events.extend(words.iter().map(|w| sse(Some("response.output_text.delta"), &json!({
                    "type": "response.output_text.delta", "item_id": format!("msg_{id}"), "output_index": 0, "content_index": 0, "delta": w}))));
                events.push(sse(
                    Some("response.completed"),
                    &json!({"type": "response.completed", "response": response("completed", true)}),
                ));
                ("text/event-stream", events)
            } else {
                ("application/json", vec![json_bytes(&response("completed", true))])
            }
        }
        Endpoint::Embeddings => {
            let inputs = match request.body.get("input") {
                Some(Value::Array(items)) => items.len().max(1),
                _ => 1,
            };
            let data: Vec<Value> = (0..inputs)
                .map(|i| json!({"object": "embedding", "index": i, "embedding": embedding(model, i)}))
                .collect();
            (
                "application/json",
                vec![json_bytes(&json!({"object": "list", "data": data, "model": model,
                "usage": {"prompt_tokens": usage.input_tokens, "total_tokens": usage.input_tokens}}))],
            )
        }
        Endpoint::CountTokens => {
            ("application/json", vec![json_bytes(&json!({"input_tokens": usage.input_tokens}))])
        }
        Endpoint::Messages if request.stream => {
            let message = json!({"id": format!("msg_{id}"), "type": "message", "role": "assistant", "model": model,
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": usage.input_tokens, "output_tokens": 1}});
            let mut events = vec![
                sse(Some("message_start"), &json!({"type": "message_start", "message": message})),
                sse(
                    Some("content_block_start"),
                    &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
                ),
                sse(Some("ping"), &json!({"type": "ping"})),
            ];
            events.extend(words.iter().map(|w| sse(Some("content_block_delta"), &json!({
                "type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": w}}))));
            events.push(sse(
                Some("content_block_stop"),
                &json!({"type": "content_block_stop", "index": 0}),
            ));
            events.push(sse(Some("message_delta"), &json!({"type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": usage.output_tokens}})));
            events.push(sse(Some("message_stop"), &json!({"type": "message_stop"})));
            ("text/event-stream", events)
        }
        Endpoint::Messages => (
            "application/json",
            vec![json_bytes(&json!({
                "id": format!("msg_{id}"), "type": "message", "role": "assistant", "model": model,
                "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": null,
                "usage": {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens},
            }))],
        ),
        Endpoint::GeminiGenerate { stream, .. } => {
            let chunk = |part: &str, last: bool| {
                let mut candidate =
                    json!({"content": {"parts": [{"text": part}], "role": "model"}, "index": 0});
                let mut value = json!({"modelVersion": model, "responseId": id});
                if last {
                    candidate["finishReason"] = json!("STOP");
                }
                value["candidates"] = json!([candidate]);
                if last || !stream {
                    value["usageMetadata"] = json!({"promptTokenCount": usage.input_tokens,
                        "candidatesTokenCount": usage.output_tokens,
                        "totalTokenCount": usage.input_tokens + usage.output_tokens});
                }
                value
            };
            if !stream {
                ("application/json", vec![json_bytes(&chunk(&text, true))])
            } else {
                let parts: Vec<Value> =
                    words.iter().enumerate().map(|(i, w)| chunk(w, i + 1 == words.len())).collect();
                if request.sse {
                    ("text/event-stream", parts.iter().map(|p| sse(None, p)).collect())
                } else {
                    // Without `alt=sse` Gemini streams one JSON array, element by element.
                    let last = parts.len().saturating_sub(1);
                    let mut pieces: Vec<Bytes> = parts
                        .iter()
                        .enumerate()
                        .map(|(i, p)| {
                            let lead = if i == 0 { "[" } else { "" };
                            let tail = if i == last { "]" } else { ",\r\n" };
                            Bytes::from(format!("{lead}{p}{tail}"))
                        })
                        .collect();
                    if pieces.is_empty() {
                        pieces.push(Bytes::from_static(b"[]"));
                    }
                    ("application/json", pieces)
                }
            }
        }
        Endpoint::Models | Endpoint::Healthz | Endpoint::Readyz => {
            ("application/json", vec![Bytes::from_static(b"{}")])
        }
    };
    let body = if chunks.len() == 1 && latency.is_zero() {
        full(chunks.into_iter().next().unwrap_or_default())
    } else {
        http_body_util::BodyExt::boxed_unsync(Paced::new(chunks, latency))
    };
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if content_type == "text/event-stream" {
        response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
    (response, usage)
}

/// The reply text: fixed for a model, so tests and demos can rely on it.
pub(crate) fn reply_text(model: &str) -> String {
    format!(
        "Hello from the cliproxy mock provider. This deterministic reply for model {model} \
         travelled through the gateway's whole request path."
    )
}

/// Splits text into stream pieces: each word with the space before it.
fn split_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    for (i, word) in text.split(' ').enumerate() {
        words.push(if i == 0 { word.to_owned() } else { format!(" {word}") });
    }
    words
}

fn openai_usage(usage: Usage) -> Value {
    json!({"prompt_tokens": usage.input_tokens, "completion_tokens": usage.output_tokens,
           "total_tokens": usage.input_tokens + usage.output_tokens})
}

/// A small deterministic unit vector derived from the model and input index.
fn embedding(model: &str, index: usize) -> Vec<f64> {
    let seed = model
        .bytes()
        .fold(index as u64 + 1, |acc, b| acc.wrapping_mul(31).wrapping_add(u64::from(b)));
    let raw: Vec<f64> =
        (0..8u64).map(|i| ((seed.wrapping_mul(i + 7) % 1000) as f64) / 1000.0 - 0.5).collect();
    let norm = raw.iter().map(|x| x * x).sum::<f64>().sqrt().max(f64::EPSILON);
    raw.iter().map(|x| (x / norm * 1e6).round() / 1e6).collect()
}

fn sse(event: Option<&str>, data: &Value) -> Bytes {
    match event {
        Some(event) => Bytes::from(format!("event: {event}\ndata: {data}\n\n")),
        None => Bytes::from(format!("data: {data}\n\n")),
    }
}

fn json_bytes(value: &Value) -> Bytes {
    Bytes::from(value.to_string())
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;
    use crate::api::ApiFormat;
    use crate::usage::UsageScanner;

    async fn run(
        endpoint: Endpoint<'_>,
        stream: bool,
        sse_mode: bool,
    ) -> (String, String, Usage, Option<Usage>) {
        let body = json!({"model": "mock-1", "messages": [{"role": "user", "content": "hi"}],
                          "stream_options": {"include_usage": true}});
        let request = MockRequest {
            endpoint,
            model: "mock-1",
            stream,
            sse: sse_mode,
            body: &body,
            body_len: 80,
            request_id: "r1",
        };
        let (response, usage) = reply(&request, Duration::ZERO);
        let content_type = response.headers()[header::CONTENT_TYPE].to_str().unwrap().to_owned();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let mut scanner = UsageScanner::new(endpoint.format(), content_type == "text/event-stream");
        scanner.feed(&bytes);
        scanner.finish();
        (content_type, String::from_utf8(bytes.to_vec()).unwrap(), usage, scanner.usage())
    }

    #[tokio::test]
    async fn every_format_reports_the_usage_it_claims() {
        let gemini = Endpoint::GeminiGenerate { model: "mock-1", stream: false };
        let gemini_stream = Endpoint::GeminiGenerate { model: "mock-1", stream: true };
        for (endpoint, stream, sse_mode) in [
            (Endpoint::ChatCompletions, false, false),
            (Endpoint::ChatCompletions, true, false),
            (Endpoint::Responses, false, false),
            (Endpoint::Responses, true, false),
            (Endpoint::Messages, false, false),
            (Endpoint::Messages, true, false),
            (gemini, false, false),
            (gemini_stream, true, true),
            (gemini_stream, true, false),
        ] {
            let (content_type, body, claimed, scanned) = run(endpoint, stream, sse_mode).await;
            assert_eq!(
                content_type == "text/event-stream",
                stream && (sse_mode || endpoint.format() != ApiFormat::Gemini),
                "{endpoint:?}"
            );
            assert_eq!(Some(claimed), scanned, "{endpoint:?} stream={stream}: {body}");
            assert_eq!(claimed.input_tokens, 20);
            assert!(claimed.output_tokens > 10);
            let text: String = if stream { String::new() } else { reply_text("mock-1") };
            assert!(body.contains(&text));
        }
    }

    #[tokio::test]
    async fn gemini_json_array_stream_parses() {
        let (_, body, ..) =
            run(Endpoint::GeminiGenerate { model: "mock-1", stream: true }, true, false).await;
        let parsed: Value = serde_json::from_str(&body).unwrap();
        assert!(parsed.as_array().unwrap().len() > 5);
    }

    #[tokio::test]
    async fn streamed_text_reassembles_to_the_reply() {
        let (_, body, ..) = run(Endpoint::Messages, true, false).await;
        let text: String = body
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .filter_map(|v| v.pointer("/delta/text").and_then(Value::as_str).map(str::to_owned))
            .collect();
        assert_eq!(text, reply_text("mock-1"));
        assert!(body.starts_with("event: message_start\n"));
        assert!(body.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"));
    }

    #[test]
    fn embeddings_are_deterministic_unit_vectors() {
        let a = embedding("m", 0);
        assert_eq!(a, embedding("m", 0));
        assert_ne!(a, embedding("m", 1));
        let norm: f64 = a.iter().map(|x| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-3, "{norm}");
    }
}
