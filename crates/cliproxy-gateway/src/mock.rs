//! The built-in `mock` provider: deterministic replies in whichever API format the client
//! called, streamed or not, with usage numbers that look like a real provider's. It lets a
//! newcomer see the whole gateway work with no provider account, and the benchmarks measure
//! the gateway without a network in the way.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use serde_json::{Value, json};

use crate::api::Endpoint;
use crate::body::Paced;
use crate::http_util::{Body, full};
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
    let usage = Usage::new(
        u64::try_from(request.body_len / 4).unwrap_or(u64::MAX).max(1),
        u64::try_from(words.len()).unwrap_or(u64::MAX),
    );
    let created = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let id = request.request_id;
    let model = request.model;
    let (content_type, chunks): (&str, Vec<Bytes>) = match request.endpoint {
        Endpoint::ChatCompletions if request.stream => {
            let include_usage =
                request.body.pointer("/stream_options/include_usage") == Some(&Value::Bool(true));
            // As the real API does: a role chunk, one chunk per piece of text, a chunk with the
            // finish reason, and a usage chunk with no choices only when the client asked for
            // it; with `include_usage` every other chunk carries `"usage": null`.
            let chunk = |delta: Value, finish: Value| {
                let mut chunk = json!({"id": format!("chatcmpl-{id}"), "object": "chat.completion.chunk", "created": created,
                       "model": model, "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]});
                if include_usage {
                    chunk["usage"] = Value::Null;
                }
                chunk
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
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": null, "annotations": []},
                    "logprobs": null, "finish_reason": "stop"}],
                "usage": openai_usage(usage),
            }))],
        ),
        Endpoint::Responses => {
            let message_id = format!("msg_{id}");
            let usage_json = json!({"input_tokens": usage.input_tokens, "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": usage.output_tokens, "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": usage.input_tokens + usage.output_tokens});
            let part = |text: &str| json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []});
            let message = |status: &str, content: Value| json!({"type": "message", "id": message_id, "status": status, "role": "assistant", "content": content});
            let done_message = message("completed", json!([part(&text)]));
            // The fields every real Response object carries, so SDKs that read them find them.
            let response = |status: &str, output: Value, usage: Value| {
                json!({
                    "id": format!("resp_{id}"), "object": "response", "created_at": created, "status": status,
                    "error": null, "incomplete_details": null, "instructions": null, "max_output_tokens": null,
                    "model": model, "output": output, "parallel_tool_calls": true, "previous_response_id": null,
                    "reasoning": {"effort": null, "summary": null}, "store": false, "temperature": 1.0,
                    "text": {"format": {"type": "text"}}, "tool_choice": "auto", "tools": [], "top_p": 1.0,
                    "truncation": "disabled", "usage": usage, "metadata": {},
                })
            };
            if request.stream {
                // The real API's event order for one text message; every event carries its
                // position in `sequence_number`, from 0.
                let mut payloads = vec![
                    json!({"type": "response.created", "response": response("in_progress", json!([]), Value::Null)}),
                    json!({"type": "response.in_progress", "response": response("in_progress", json!([]), Value::Null)}),
                    json!({"type": "response.output_item.added", "output_index": 0,
                           "item": message("in_progress", json!([]))}),
                    json!({"type": "response.content_part.added", "item_id": message_id, "output_index": 0,
                           "content_index": 0, "part": part("")}),
                ];
                payloads.extend(words.iter().map(|w| json!({"type": "response.output_text.delta",
                    "item_id": message_id, "output_index": 0, "content_index": 0, "delta": w, "logprobs": []})));
                payloads.extend([
                    json!({"type": "response.output_text.done", "item_id": message_id, "output_index": 0,
                           "content_index": 0, "text": text, "logprobs": []}),
                    json!({"type": "response.content_part.done", "item_id": message_id, "output_index": 0,
                           "content_index": 0, "part": part(&text)}),
                    json!({"type": "response.output_item.done", "output_index": 0, "item": done_message}),
                    json!({"type": "response.completed",
                           "response": response("completed", json!([done_message]), usage_json)}),
                ]);
                let events = payloads
                    .into_iter()
                    .enumerate()
                    .map(|(sequence, mut payload)| {
                        payload["sequence_number"] = json!(sequence);
                        let kind = payload["type"].as_str().unwrap_or_default().to_owned();
                        sse(Some(&kind), &payload)
                    })
                    .collect();
                ("text/event-stream", events)
            } else {
                (
                    "application/json",
                    vec![json_bytes(&response("completed", json!([done_message]), usage_json))],
                )
            }
        }
        Endpoint::Embeddings => {
            let inputs = match request.body.get("input") {
                Some(Value::Array(items)) => items.len().max(1),
                _ => 1,
            };
            // As the real API: `encoding_format: "base64"` returns each vector as the base64
            // of its little-endian f32s, which the openai SDKs ask for by default and decode.
            let base64 =
                request.body.get("encoding_format").and_then(Value::as_str) == Some("base64");
            let data: Vec<Value> = (0..inputs)
                .map(|i| {
                    let vector = embedding(model, i);
                    let encoded =
                        if base64 { json!(embedding_base64(&vector)) } else { json!(vector) };
                    json!({"object": "embedding", "index": i, "embedding": encoded})
                })
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
                "usage": anthropic_usage(usage.input_tokens, 1)});
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
                "usage": anthropic_usage(usage.input_tokens, usage.output_tokens),
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
        Endpoint::Completions => legacy_completion(request, &words, usage, created),
        Endpoint::GeminiCountTokens { .. } => {
            ("application/json", vec![json_bytes(&gemini_count_tokens(usage))])
        }
        Endpoint::GeminiEmbed { batch, .. } => {
            ("application/json", vec![json_bytes(&gemini_embed(request, batch))])
        }
        Endpoint::Models { .. } | Endpoint::Model { .. } | Endpoint::Healthz | Endpoint::Readyz => {
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

/// The model names the mock lists: any name its patterns match is served, but a listing
/// needs names, so `GET /v1/models` shows these (those the provider's patterns match). The
/// demo's banner and docs use `mock-1`.
pub(crate) const MODEL_NAMES: [&str; 3] = ["mock-1", "mock-fast", "mock-embedding"];

/// The names a mock provider with `patterns` lists: each exact name as it is, and for each
/// glob the [`MODEL_NAMES`] it matches; sorted, without duplicates.
pub(crate) fn mock_model_names<'a>(patterns: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut names: Vec<String> = patterns
        .into_iter()
        .flat_map(|pattern| {
            if pattern.contains('*') {
                MODEL_NAMES
                    .iter()
                    .filter(|name| cliproxy_core::glob_match(pattern, name))
                    .map(|name| (*name).to_owned())
                    .collect()
            } else {
                vec![pattern.to_owned()]
            }
        })
        .collect();
    names.sort_unstable();
    names.dedup();
    names
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

/// Chat Completions usage with the token details the real API always sends.
fn openai_usage(usage: Usage) -> Value {
    json!({"prompt_tokens": usage.input_tokens, "completion_tokens": usage.output_tokens,
           "total_tokens": usage.input_tokens + usage.output_tokens,
           "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
           "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
               "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}})
}

/// Messages usage with the cache counts the real API always sends (the mock caches nothing).
fn anthropic_usage(input: u64, output: u64) -> Value {
    json!({"input_tokens": input, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
           "output_tokens": output})
}

/// The base64 of the vector's little-endian f32s, the real API's `encoding_format: "base64"`.
fn embedding_base64(vector: &[f64]) -> String {
    use base64::Engine as _;
    // The narrowing is the point: the real API sends f32s.
    let bytes: Vec<u8> = vector.iter().flat_map(|x| (*x as f32).to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
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

/// OpenAI's legacy `/v1/completions` answer: one `text_completion`, or streamed as chunks of
/// the same object (one per piece of text, the last with the finish reason) and `[DONE]`.
fn legacy_completion(
    request: &MockRequest<'_>,
    words: &[String],
    usage: Usage,
    created: u64,
) -> (&'static str, Vec<Bytes>) {
    let id = format!("cmpl-{}", request.request_id);
    // As for chat streams, the real API sends the usage of a stream only when asked, in a
    // last chunk with no choices, and then `"usage": null` on every other chunk.
    let include_usage = request.stream
        && request.body.pointer("/stream_options/include_usage") == Some(&Value::Bool(true));
    let completion = |text: &str, finish: Value| {
        let mut chunk = json!({"id": id, "object": "text_completion", "created": created, "model": request.model,
               "choices": [{"text": text, "index": 0, "logprobs": null, "finish_reason": finish}]});
        if include_usage {
            chunk["usage"] = Value::Null;
        }
        chunk
    };
    if !request.stream {
        let mut whole = completion(&words.concat(), json!("stop"));
        whole["usage"] = openai_usage(usage);
        return ("application/json", vec![json_bytes(&whole)]);
    }
    let mut events: Vec<Bytes> =
        words.iter().map(|w| sse(None, &completion(w, Value::Null))).collect();
    events.push(sse(None, &completion("", json!("stop"))));
    if include_usage {
        events.push(sse(
            None,
            &json!({"id": id, "object": "text_completion", "created": created,
            "model": request.model, "choices": [], "usage": openai_usage(usage)}),
        ));
    }
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    ("text/event-stream", events)
}

/// Gemini's `:countTokens` answer: the prompt's tokens, counted as for the other replies.
fn gemini_count_tokens(usage: Usage) -> Value {
    json!({"totalTokens": usage.input_tokens})
}

/// Gemini's `:embedContent` answer (one vector), or `:batchEmbedContents` (one per request).
fn gemini_embed(request: &MockRequest<'_>, batch: bool) -> Value {
    let values = |index: usize| json!({"values": embedding(request.model, index)});
    if batch {
        let count = request.body.get("requests").and_then(Value::as_array).map_or(1, Vec::len);
        json!({"embeddings": (0..count).map(values).collect::<Vec<_>>()})
    } else {
        json!({"embedding": values(0)})
    }
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

    /// One mock reply: its content type, its body as text, the usage the mock claims and the
    /// usage the gateway's scanner reads from the body.
    struct Reply {
        content_type: String,
        body: String,
        claimed: Usage,
        scanned: Option<Usage>,
    }

    async fn run(
        endpoint: Endpoint<'_>,
        stream: bool,
        sse_mode: bool,
        include_usage: bool,
    ) -> Reply {
        let body = json!({"model": "mock-1", "messages": [{"role": "user", "content": "hi"}],
                          "stream_options": {"include_usage": include_usage}});
        let request = MockRequest {
            endpoint,
            model: "mock-1",
            stream,
            sse: sse_mode,
            body: &body,
            body_len: 80,
            request_id: "r1",
        };
        let (response, claimed) = reply(&request, Duration::ZERO);
        let content_type = response.headers()[header::CONTENT_TYPE].to_str().unwrap().to_owned();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let mut scanner = UsageScanner::new(endpoint.format(), content_type == "text/event-stream");
        scanner.feed(&bytes);
        scanner.finish();
        Reply {
            content_type,
            body: String::from_utf8(bytes.to_vec()).unwrap(),
            claimed,
            scanned: scanner.usage(),
        }
    }

    /// What a client rebuilds from a reply: the text, the finish reason (or final status) and
    /// the usage `(input, output)`.
    #[derive(Debug, PartialEq)]
    struct Reassembled {
        text: String,
        finish: String,
        usage: Option<(u64, u64)>,
    }

    /// Splits an SSE body into `(event name, data)` pairs, checking the framing on the way.
    fn sse_events(body: &str) -> Vec<(Option<String>, String)> {
        assert!(body.ends_with("\n\n"), "the stream does not end with a blank line: {body}");
        body.split_terminator("\n\n")
            .map(|event| {
                let mut name = None;
                let mut data = None;
                for line in event.lines() {
                    if let Some(value) = line.strip_prefix("event: ") {
                        name = Some(value.to_owned());
                    } else if let Some(value) = line.strip_prefix("data: ") {
                        assert!(data.is_none(), "two data lines in one event: {event}");
                        data = Some(value.to_owned());
                    } else {
                        panic!("unexpected line {line:?} in {event:?}");
                    }
                }
                (name, data.unwrap_or_else(|| panic!("an event without data: {event:?}")))
            })
            .collect()
    }

    fn parse(data: &str) -> Value {
        serde_json::from_str(data).unwrap_or_else(|e| panic!("{e}: {data}"))
    }

    fn str_at<'v>(value: &'v Value, pointer: &str) -> &'v str {
        value
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no {pointer} in {value}"))
    }

    fn u64_at(value: &Value, pointer: &str) -> u64 {
        value
            .pointer(pointer)
            .and_then(Value::as_u64)
            .unwrap_or_else(|| panic!("no {pointer} in {value}"))
    }

    /// An OpenAI chat stream as the real API sends it: a role chunk, content chunks, one chunk
    /// with the finish reason, the usage chunk (no choices) only if asked for, `[DONE]`.
    fn chat_stream(body: &str, include_usage: bool) -> Reassembled {
        let mut events = sse_events(body);
        assert!(events.iter().all(|(name, _)| name.is_none()), "{body}");
        assert_eq!(events.pop().map(|(_, data)| data).as_deref(), Some("[DONE]"), "{body}");
        let chunks: Vec<Value> = events.iter().map(|(_, data)| parse(data)).collect();
        let usage_chunk = if include_usage { chunks.last() } else { None };
        let choice_chunks = &chunks[..chunks.len() - usize::from(include_usage)];
        for chunk in &chunks {
            assert_eq!(chunk["object"], "chat.completion.chunk");
            // With `include_usage` every chunk has the key; without it, none has.
            assert_eq!(chunk.get("usage").is_some(), include_usage, "{chunk}");
        }
        let (first, rest) = choice_chunks.split_first().expect("no chunk");
        assert_eq!(
            first["choices"][0]["delta"]["role"], "assistant",
            "the role chunk is not first: {first}"
        );
        let (last, content) = rest.split_last().expect("no finish chunk");
        let mut text = String::new();
        for chunk in content {
            assert_eq!(chunk["choices"][0]["finish_reason"], Value::Null, "{chunk}");
            assert_eq!(chunk["usage"], Value::Null, "{chunk}");
            text.push_str(str_at(chunk, "/choices/0/delta/content"));
        }
        assert_eq!(last["choices"][0]["delta"], json!({}), "{last}");
        let usage = usage_chunk.map(|chunk| {
            assert_eq!(chunk["choices"], json!([]), "{chunk}");
            (u64_at(chunk, "/usage/prompt_tokens"), u64_at(chunk, "/usage/completion_tokens"))
        });
        Reassembled { text, finish: str_at(last, "/choices/0/finish_reason").to_owned(), usage }
    }

    /// A legacy Completions stream as the real API sends it: one chunk per piece of text, a
    /// chunk with the finish reason, the usage chunk (no choices) only if asked for, `[DONE]`;
    /// with `include_usage` every other chunk carries `"usage": null`.
    fn completions_stream(body: &str, include_usage: bool) -> Reassembled {
        let mut events = sse_events(body);
        assert!(events.iter().all(|(name, _)| name.is_none()), "{body}");
        assert_eq!(events.pop().map(|(_, data)| data).as_deref(), Some("[DONE]"), "{body}");
        let chunks: Vec<Value> = events.iter().map(|(_, data)| parse(data)).collect();
        let usage_chunk = if include_usage { chunks.last() } else { None };
        let choice_chunks = &chunks[..chunks.len() - usize::from(include_usage)];
        for chunk in &chunks {
            assert_eq!(chunk["object"], "text_completion");
            assert_eq!(chunk.get("usage").is_some(), include_usage, "{chunk}");
        }
        let (last, content) = choice_chunks.split_last().expect("no finish chunk");
        let mut text = String::new();
        for chunk in content {
            assert_eq!(chunk["choices"][0]["finish_reason"], Value::Null, "{chunk}");
            assert_eq!(chunk["usage"], Value::Null, "{chunk}");
            text.push_str(str_at(chunk, "/choices/0/text"));
        }
        assert_eq!(str_at(last, "/choices/0/text"), "", "{last}");
        let usage = usage_chunk.map(|chunk| {
            assert_eq!(chunk["choices"], json!([]), "{chunk}");
            (u64_at(chunk, "/usage/prompt_tokens"), u64_at(chunk, "/usage/completion_tokens"))
        });
        Reassembled { text, finish: str_at(last, "/choices/0/finish_reason").to_owned(), usage }
    }

    /// The Responses API's event sequence: lifecycle, item and part opened, deltas, each
    /// closed with the whole text, `response.completed`; `sequence_number` counts from 0.
    fn responses_stream(body: &str) -> Reassembled {
        let events: Vec<(String, Value)> = sse_events(body)
            .into_iter()
            .map(|(name, data)| (name.expect("every Responses event is named"), parse(&data)))
            .collect();
        for (index, (name, event)) in events.iter().enumerate() {
            assert_eq!(event["type"], name.as_str(), "{event}");
            assert_eq!(event["sequence_number"], index, "{event}");
        }
        let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
        let deltas = events.len().saturating_sub(8);
        let mut expected = vec![
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
        ];
        expected.extend(std::iter::repeat_n("response.output_text.delta", deltas));
        expected.extend([
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]);
        assert_eq!(names, expected);
        let event = |name: &str| &events.iter().find(|(n, _)| n == name).unwrap().1;
        let item_id = str_at(event("response.output_item.added"), "/item/id");
        let mut text = String::new();
        for (_, delta) in events.iter().filter(|(n, _)| n == "response.output_text.delta") {
            assert_eq!(delta["item_id"], item_id, "{delta}");
            assert_eq!((&delta["output_index"], &delta["content_index"]), (&json!(0), &json!(0)));
            text.push_str(str_at(delta, "/delta"));
        }
        assert_eq!(event("response.content_part.added")["part"]["text"], "");
        assert_eq!(event("response.content_part.added")["item_id"], item_id);
        assert_eq!(str_at(event("response.output_text.done"), "/text"), text);
        assert_eq!(str_at(event("response.content_part.done"), "/part/text"), text);
        assert_eq!(str_at(event("response.output_item.done"), "/item/content/0/text"), text);
        assert_eq!(str_at(event("response.output_item.done"), "/item/id"), item_id);
        let completed = &event("response.completed")["response"];
        assert_eq!(str_at(completed, "/output/0/content/0/text"), text);
        assert_eq!(completed["id"], event("response.created")["response"]["id"]);
        Reassembled {
            text,
            finish: str_at(completed, "/status").to_owned(),
            usage: Some((
                u64_at(completed, "/usage/input_tokens"),
                u64_at(completed, "/usage/output_tokens"),
            )),
        }
    }

    /// The Messages API's event sequence, with the `ping` the real API sends.
    fn messages_stream(body: &str) -> Reassembled {
        let events: Vec<(String, Value)> = sse_events(body)
            .into_iter()
            .map(|(name, data)| (name.expect("every Messages event is named"), parse(&data)))
            .collect();
        let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
        let mut expected = vec!["message_start", "content_block_start", "ping"];
        expected.extend(std::iter::repeat_n("content_block_delta", events.len().saturating_sub(6)));
        expected.extend(["content_block_stop", "message_delta", "message_stop"]);
        assert_eq!(names, expected);
        let mut text = String::new();
        for (name, event) in &events {
            assert_eq!(event["type"], name.as_str(), "{event}");
            if name == "content_block_delta" {
                assert_eq!(
                    (&event["index"], &event["delta"]["type"]),
                    (&json!(0), &json!("text_delta"))
                );
                text.push_str(str_at(event, "/delta/text"));
            }
        }
        let delta = &events[events.len() - 2].1;
        Reassembled {
            text,
            finish: str_at(delta, "/delta/stop_reason").to_owned(),
            usage: Some((
                u64_at(&events[0].1, "/message/usage/input_tokens"),
                u64_at(delta, "/usage/output_tokens"),
            )),
        }
    }

    /// Gemini chunks: text in every chunk's first candidate, `finishReason` and
    /// `usageMetadata` on the last only.
    fn gemini_chunks(chunks: &[Value]) -> Reassembled {
        let (last, rest) = chunks.split_last().expect("no chunk");
        for chunk in rest {
            assert!(chunk["candidates"][0].get("finishReason").is_none(), "{chunk}");
            assert!(chunk.get("usageMetadata").is_none(), "{chunk}");
        }
        let text = chunks
            .iter()
            .map(|chunk| str_at(chunk, "/candidates/0/content/parts/0/text"))
            .collect();
        Reassembled {
            text,
            finish: str_at(last, "/candidates/0/finishReason").to_owned(),
            usage: Some((
                u64_at(last, "/usageMetadata/promptTokenCount"),
                u64_at(last, "/usageMetadata/candidatesTokenCount"),
            )),
        }
    }

    fn reassemble(
        endpoint: Endpoint<'_>,
        stream: bool,
        sse_mode: bool,
        include_usage: bool,
        body: &str,
    ) -> Reassembled {
        match (endpoint, stream) {
            (Endpoint::ChatCompletions, true) => chat_stream(body, include_usage),
            (Endpoint::Completions, true) => completions_stream(body, include_usage),
            (Endpoint::Completions, false) => {
                let value = parse(body);
                assert_eq!(value["object"], "text_completion");
                Reassembled {
                    text: str_at(&value, "/choices/0/text").to_owned(),
                    finish: str_at(&value, "/choices/0/finish_reason").to_owned(),
                    usage: Some((
                        u64_at(&value, "/usage/prompt_tokens"),
                        u64_at(&value, "/usage/completion_tokens"),
                    )),
                }
            }
            (Endpoint::Responses, true) => responses_stream(body),
            (Endpoint::Messages, true) => messages_stream(body),
            (Endpoint::GeminiGenerate { .. }, true) if sse_mode => {
                let chunks: Vec<Value> = sse_events(body)
                    .into_iter()
                    .map(|(name, data)| {
                        assert_eq!(name, None);
                        parse(&data)
                    })
                    .collect();
                gemini_chunks(&chunks)
            }
            (Endpoint::GeminiGenerate { .. }, true) => {
                gemini_chunks(parse(body).as_array().expect("a JSON array stream"))
            }
            (Endpoint::GeminiGenerate { .. }, false) => gemini_chunks(&[parse(body)]),
            (Endpoint::ChatCompletions, false) => {
                let value = parse(body);
                assert_eq!(value["choices"][0]["message"]["role"], "assistant");
                Reassembled {
                    text: str_at(&value, "/choices/0/message/content").to_owned(),
                    finish: str_at(&value, "/choices/0/finish_reason").to_owned(),
                    usage: Some((
                        u64_at(&value, "/usage/prompt_tokens"),
                        u64_at(&value, "/usage/completion_tokens"),
                    )),
                }
            }
            (Endpoint::Responses, false) => {
                let value = parse(body);
                assert_eq!(value["object"], "response");
                Reassembled {
                    text: str_at(&value, "/output/0/content/0/text").to_owned(),
                    finish: str_at(&value, "/status").to_owned(),
                    usage: Some((
                        u64_at(&value, "/usage/input_tokens"),
                        u64_at(&value, "/usage/output_tokens"),
                    )),
                }
            }
            (Endpoint::Messages, false) => {
                let value = parse(body);
                Reassembled {
                    text: str_at(&value, "/content/0/text").to_owned(),
                    finish: str_at(&value, "/stop_reason").to_owned(),
                    usage: Some((
                        u64_at(&value, "/usage/input_tokens"),
                        u64_at(&value, "/usage/output_tokens"),
                    )),
                }
            }
            (other, _) => panic!("no reassembly for {other:?}"),
        }
    }

    #[tokio::test]
    async fn every_format_reassembles_to_the_reply_with_the_usage_it_claims() {
        let gemini = Endpoint::GeminiGenerate { model: "mock-1", stream: false };
        let gemini_stream = Endpoint::GeminiGenerate { model: "mock-1", stream: true };
        for (endpoint, stream, sse_mode, include_usage, finish) in [
            (Endpoint::ChatCompletions, false, false, false, "stop"),
            (Endpoint::ChatCompletions, true, false, true, "stop"),
            (Endpoint::ChatCompletions, true, false, false, "stop"),
            (Endpoint::Completions, false, false, false, "stop"),
            (Endpoint::Completions, true, false, true, "stop"),
            (Endpoint::Completions, true, false, false, "stop"),
            (Endpoint::Responses, false, false, false, "completed"),
            (Endpoint::Responses, true, false, false, "completed"),
            (Endpoint::Messages, false, false, false, "end_turn"),
            (Endpoint::Messages, true, false, false, "end_turn"),
            (gemini, false, false, false, "STOP"),
            (gemini_stream, true, true, false, "STOP"),
            (gemini_stream, true, false, false, "STOP"),
        ] {
            let case = format!(
                "{endpoint:?} stream={stream} sse={sse_mode} include_usage={include_usage}"
            );
            let reply = run(endpoint, stream, sse_mode, include_usage).await;
            assert_eq!(
                reply.content_type == "text/event-stream",
                stream && (sse_mode || endpoint.format() != ApiFormat::Gemini),
                "{case}"
            );
            assert_eq!(reply.claimed.input_tokens, 20, "{case}");
            assert!(reply.claimed.output_tokens > 10, "{case}");
            let claimed = (reply.claimed.input_tokens, reply.claimed.output_tokens);
            // An OpenAI chat or completions stream the client did not ask usage of carries
            // none, as the real API's.
            let openai_stream =
                matches!(endpoint, Endpoint::ChatCompletions | Endpoint::Completions);
            let reported = (!stream || !openai_stream || include_usage).then_some(claimed);
            assert_eq!(
                reply.scanned.map(|u| (u.input_tokens, u.output_tokens)),
                reported,
                "{case}"
            );
            let expected = Reassembled {
                text: reply_text("mock-1"),
                finish: finish.to_owned(),
                usage: reported,
            };
            let reassembled = reassemble(endpoint, stream, sse_mode, include_usage, &reply.body);
            assert_eq!(reassembled, expected, "{case}: {}", reply.body);
        }
    }

    /// Fields the real APIs always send and clients read without checking (Claude Code adds
    /// up the cache counts, the openai SDKs type the token details and the refusal).
    #[tokio::test]
    async fn replies_carry_the_fields_real_clients_read() {
        let chat = parse(&run(Endpoint::ChatCompletions, false, false, false).await.body);
        assert!(str_at(&chat, "/id").starts_with("chatcmpl-"), "{chat}");
        assert_eq!(chat["object"], "chat.completion");
        assert!(u64_at(&chat, "/created") > 0, "{chat}");
        let message = &chat["choices"][0]["message"];
        assert_eq!((&message["refusal"], &message["annotations"]), (&Value::Null, &json!([])));
        assert_eq!(u64_at(&chat, "/usage/prompt_tokens_details/cached_tokens"), 0);
        assert_eq!(u64_at(&chat, "/usage/completion_tokens_details/reasoning_tokens"), 0);
        let stream = run(Endpoint::ChatCompletions, true, false, true).await.body;
        let usage_chunk = parse(&sse_events(&stream).iter().rev().nth(1).unwrap().1);
        assert_eq!(u64_at(&usage_chunk, "/usage/prompt_tokens_details/cached_tokens"), 0);

        let message = parse(&run(Endpoint::Messages, false, false, false).await.body);
        let stream = run(Endpoint::Messages, true, false, false).await.body;
        let start = parse(&sse_events(&stream)[0].1);
        for usage in [&message["usage"], &start["message"]["usage"]] {
            assert_eq!(usage["cache_creation_input_tokens"], 0, "{usage}");
            assert_eq!(usage["cache_read_input_tokens"], 0, "{usage}");
        }
    }

    async fn embeddings(body: Value) -> Value {
        let request = MockRequest {
            endpoint: Endpoint::Embeddings,
            model: "mock-embedding",
            stream: false,
            sse: false,
            body: &body,
            body_len: 40,
            request_id: "r1",
        };
        let (response, _) = reply(&request, Duration::ZERO);
        parse(
            std::str::from_utf8(&response.into_body().collect().await.unwrap().to_bytes()).unwrap(),
        )
    }

    #[tokio::test]
    async fn embeddings_come_as_floats_or_as_base64_of_little_endian_f32s() {
        use base64::Engine as _;
        let floats = embeddings(json!({"input": ["a", "b"], "encoding_format": "float"})).await;
        let unasked = embeddings(json!({"input": ["a", "b"]})).await;
        let encoded = embeddings(json!({"input": ["a", "b"], "encoding_format": "base64"})).await;
        assert_eq!(floats, unasked);
        for index in 0..2 {
            let vector: Vec<f64> = floats["data"][index]["embedding"]
                .as_array()
                .unwrap_or_else(|| panic!("not an array of floats: {floats}"))
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect();
            assert_eq!(vector, embedding("mock-embedding", index));
            // What the openai SDKs do with it: base64-decode, read little-endian f32s.
            let text = str_at(&encoded, &format!("/data/{index}/embedding"));
            let bytes = base64::engine::general_purpose::STANDARD.decode(text).unwrap();
            let decoded: Vec<f32> = bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            let expected: Vec<f32> = vector.iter().map(|x| *x as f32).collect();
            assert_eq!(decoded, expected, "{encoded}");
            assert_eq!(encoded["data"][index]["index"], index);
        }
        assert_eq!(encoded["object"], "list");
        assert_eq!(encoded["usage"]["prompt_tokens"], 10);
    }

    #[test]
    fn mock_globs_list_the_mock_names_they_match_and_exact_names_stay() {
        assert_eq!(mock_model_names(["mock-*"]), ["mock-1", "mock-embedding", "mock-fast"]);
        assert_eq!(mock_model_names(["mock-f*"]), ["mock-fast"]);
        assert_eq!(mock_model_names(["other-*"]), Vec::<String>::new());
        assert_eq!(
            mock_model_names(["mock-small", "mock-1*", "mock-small"]),
            ["mock-1", "mock-small"]
        );
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
