use serde_json::{Value, json};

use super::*;
use crate::codec::Codec;
use crate::ir::{BlockKind, Effort, ErrorKind, Event, Reasoning};

fn decode(body: &Value) -> Result<Request> {
    OpenAiChat::decode_request(&serde_json::to_vec(body).unwrap())
}

fn encode(request: &Request) -> Value {
    serde_json::from_slice(&OpenAiChat::encode_request(request).unwrap()).unwrap()
}

fn text(text: &str) -> Part {
    Part::Text(text.to_owned())
}

fn call(id: &str, name: &str, arguments: &str) -> Part {
    Part::ToolCall(ToolCall { id: id.into(), name: name.into(), arguments: arguments.into() })
}

fn result(call_id: &str, content: Vec<ToolResultPart>, is_error: bool) -> Part {
    Part::ToolResult(ToolResult { call_id: call_id.into(), name: None, content, is_error })
}

fn weather_schema() -> Value {
    json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
}

/// The frames of a Chat stream, each data object with its `created` time zeroed (it is the
/// clock's), and `[DONE]` as a string.
fn frames(bytes: &[u8]) -> Vec<Value> {
    let text = std::str::from_utf8(bytes).unwrap();
    assert!(text.ends_with("\n\n"), "a stream ends with a whole frame: {text:?}");
    text.split_terminator("\n\n")
        .map(|frame| {
            let data = frame
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("no event names in Chat streams: {frame:?}"));
            if data == "[DONE]" {
                return Value::from("[DONE]");
            }
            let mut value: Value = serde_json::from_str(data).unwrap();
            if value.get("created").is_some() {
                value["created"] = json!(0);
            }
            value
        })
        .collect()
}

#[test]
fn a_whole_request_decodes_into_the_common_form() {
    let body = json!({
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use metric units."}]},
            {"role": "user", "content": [
                {"type": "text", "text": "Weather in Paris and Rome? See the map."},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "high"}},
                {"type": "image_url", "image_url": {"url": "https://example.test/map.jpg"}}
            ]},
            {"role": "assistant", "reasoning_content": "Two cities: two calls.", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Rome\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18°C"},
            {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "24°C"}]},
            {"role": "assistant", "content": "Paris 18°C, Rome 24°C."},
            {"role": "user", "content": "Thanks", "name": "ana"}
        ],
        "tools": [{"type": "function", "function": {"name": "weather", "description": "Current weather", "parameters": weather_schema(), "strict": true}}],
        "tool_choice": {"type": "function", "function": {"name": "weather"}},
        "parallel_tool_calls": false,
        "max_completion_tokens": 300,
        "temperature": 0.2, "top_p": 0.9, "presence_penalty": 0.1, "frequency_penalty": 0.3, "seed": 7,
        "stop": "END",
        "stream": true, "stream_options": {"include_usage": true},
        "response_format": {"type": "json_schema", "json_schema": {"name": "forecast", "schema": {"type": "object"}, "strict": true, "description": "dropped"}},
        "reasoning_effort": "low",
        "user": "u-1", "store": false, "metadata": {"a": "b"}, "service_tier": "auto", "n": 1, "logprobs": false
    });
    let request = decode(&body).unwrap();
    let expected = Request {
        model: "gpt-4o".into(),
        system: vec![
            SystemPart { developer: false, text: "Be brief.".into() },
            SystemPart { developer: true, text: "Use metric units.".into() },
        ],
        messages: vec![
            Message {
                role: Role::User,
                parts: vec![
                    text("Weather in Paris and Rome? See the map."),
                    Part::Image(Image::Base64 {
                        media_type: "image/png".into(),
                        data: "iVBORw0KGgo=".into(),
                    }),
                    Part::Image(Image::Url {
                        url: "https://example.test/map.jpg".into(),
                        media_type: None,
                    }),
                ],
            },
            Message {
                role: Role::Assistant,
                parts: vec![
                    Part::Thinking(Thinking {
                        text: "Two cities: two calls.".into(),
                        signature: None,
                        redacted: None,
                        origin: Some(Format::OpenAiChat),
                    }),
                    call("call_1", "weather", r#"{"city":"Paris"}"#),
                    call("call_2", "weather", r#"{"city":"Rome"}"#),
                ],
            },
            Message {
                role: Role::User,
                parts: vec![
                    result("call_1", vec![ToolResultPart::Text("18°C".into())], false),
                    result("call_2", vec![ToolResultPart::Text("24°C".into())], false),
                ],
            },
            Message { role: Role::Assistant, parts: vec![text("Paris 18°C, Rome 24°C.")] },
            Message { role: Role::User, parts: vec![text("Thanks")] },
        ],
        tools: vec![Tool {
            name: "weather".into(),
            description: Some("Current weather".into()),
            parameters: weather_schema(),
            strict: Some(true),
        }],
        tool_choice: Some(ToolChoice::Named("weather".into())),
        parallel_tool_calls: Some(false),
        max_tokens: Some(300),
        sampling: Sampling {
            temperature: Some(0.2),
            top_p: Some(0.9),
            top_k: None,
            presence_penalty: Some(0.1),
            frequency_penalty: Some(0.3),
            seed: Some(7),
        },
        stop: vec!["END".into()],
        stream: true,
        output: Some(OutputFormat::JsonSchema {
            name: "forecast".into(),
            schema: json!({"type": "object"}),
            strict: Some(true),
        }),
        reasoning: Some(Reasoning::Effort(Effort::Low)),
        unmapped: vec![],
    };
    assert_eq!(request, expected);
}

#[test]
fn tool_choice_stop_limits_and_formats_read_every_form() {
    let base = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    let with = |field: &str, value: Value| {
        let mut body = base.clone();
        body[field] = value;
        decode(&body).unwrap()
    };
    assert_eq!(with("tool_choice", json!("auto")).tool_choice, Some(ToolChoice::Auto));
    assert_eq!(with("tool_choice", json!("none")).tool_choice, Some(ToolChoice::None));
    assert_eq!(with("tool_choice", json!("required")).tool_choice, Some(ToolChoice::Required));
    assert_eq!(
        with("tool_choice", json!({"type": "function", "function": {"name": "f"}})).tool_choice,
        Some(ToolChoice::Named("f".into()))
    );
    assert_eq!(with("stop", json!(["a", "b"])).stop, vec!["a".to_owned(), "b".to_owned()]);
    assert_eq!(with("max_tokens", json!(50)).max_tokens, Some(50));
    assert_eq!(
        with("response_format", json!({"type": "json_object"})).output,
        Some(OutputFormat::JsonObject)
    );
    assert_eq!(with("response_format", json!({"type": "text"})).output, None);
    assert_eq!(with("reasoning_effort", json!("none")).reasoning, Some(Reasoning::Off));
    assert_eq!(
        with("reasoning_effort", json!("high")).reasoning,
        Some(Reasoning::Effort(Effort::High))
    );
    // A tool without parameters takes none.
    let tools = with("tools", json!([{"type": "function", "function": {"name": "now"}}])).tools;
    assert_eq!(tools[0].parameters, json!({"type": "object", "properties": {}}));
}

#[test]
fn fields_no_other_format_can_say_are_kept_and_refused_by_name() {
    let body = json!({
        "model": "m",
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "hi"},
            {"type": "input_audio", "input_audio": {"data": "AAA=", "format": "wav"}}
        ]}],
        "n": 2, "logprobs": true, "top_logprobs": 3, "logit_bias": {"50256": -100},
        "modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"},
        "prediction": {"type": "content", "content": "x"}, "web_search_options": {},
        "tools": [{"type": "custom", "custom": {"name": "grammar"}}]
    });
    let request = decode(&body).unwrap();
    let names: Vec<&str> = request.unmapped.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names,
        [
            "messages[0].content[1].type",
            "tools[0].type",
            "n",
            "logprobs",
            "top_logprobs",
            "logit_bias",
            "audio",
            "modalities",
            "prediction",
            "web_search_options"
        ]
    );
    // No encoder says them, this format's own included (the same format is never translated).
    assert_eq!(
        OpenAiChat::encode_request(&request),
        Err(Error::unsupported("messages[0].content[1].type", Format::OpenAiChat))
    );
    // Their neutral values change nothing and are not kept.
    let neutral = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
        "n": 1, "logprobs": false, "top_logprobs": 0, "logit_bias": {}, "modalities": ["text"], "audio": null});
    assert!(decode(&neutral).unwrap().unmapped.is_empty());
}

#[test]
fn a_request_encodes_as_the_chat_api_takes_it() {
    let request = Request {
        model: "gpt-4o".into(),
        system: vec![
            SystemPart { developer: false, text: "Be brief.".into() },
            SystemPart { developer: true, text: "Metric.".into() },
        ],
        messages: vec![
            Message {
                role: Role::User,
                parts: vec![
                    text("Weather?"),
                    Part::Image(Image::Base64 {
                        media_type: "image/png".into(),
                        data: "AAAA".into(),
                    }),
                ],
            },
            Message {
                role: Role::Assistant,
                parts: vec![
                    Part::Thinking(Thinking {
                        text: "hmm".into(),
                        signature: Some("sig".into()),
                        redacted: None,
                        origin: Some(Format::Anthropic),
                    }),
                    text("Checking."),
                    call("toolu_1", "weather", r#"{"city":"Paris"}"#),
                    call("toolu_2", "weather", r#"{"city":"Rome"}"#),
                ],
            },
            Message {
                role: Role::User,
                parts: vec![
                    result("toolu_1", vec![ToolResultPart::Text("18".into())], false),
                    result(
                        "toolu_2",
                        vec![
                            ToolResultPart::Text("no data".into()),
                            ToolResultPart::Image(Image::Url {
                                url: "https://x.test/r.png".into(),
                                media_type: None,
                            }),
                        ],
                        true,
                    ),
                    text("And tomorrow?"),
                ],
            },
            // Thinking alone says nothing the Chat API takes: the turn is left out.
            Message {
                role: Role::Assistant,
                parts: vec![Part::Thinking(Thinking {
                    text: "x".into(),
                    signature: None,
                    redacted: None,
                    origin: None,
                })],
            },
        ],
        tools: vec![Tool {
            name: "weather".into(),
            description: None,
            parameters: weather_schema(),
            strict: None,
        }],
        tool_choice: Some(ToolChoice::Required),
        parallel_tool_calls: Some(true),
        max_tokens: Some(1000),
        sampling: Sampling { temperature: Some(0.5), seed: Some(1), ..Sampling::default() },
        stop: vec!["\n\n".into()],
        stream: true,
        output: Some(OutputFormat::JsonSchema {
            name: "out".into(),
            schema: json!({"type": "object"}),
            strict: None,
        }),
        reasoning: Some(Reasoning::Budget(10_000)),
        unmapped: vec![],
    };
    let expected = json!({
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": "Metric."},
            {"role": "user", "content": [
                {"type": "text", "text": "Weather?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
            ]},
            {"role": "assistant", "content": "Checking.", "tool_calls": [
                {"id": "toolu_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "toolu_2", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Rome\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "toolu_1", "content": "18"},
            {"role": "tool", "tool_call_id": "toolu_2", "content": "no data"},
            {"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "https://x.test/r.png"}},
                {"type": "text", "text": "And tomorrow?"}
            ]}
        ],
        "max_completion_tokens": 1000,
        "temperature": 0.5,
        "seed": 1,
        "stop": ["\n\n"],
        "tools": [{"type": "function", "function": {"name": "weather", "parameters": weather_schema()}}],
        "tool_choice": "required",
        "parallel_tool_calls": true,
        "response_format": {"type": "json_schema", "json_schema": {"name": "out", "schema": {"type": "object"}}},
        "reasoning_effort": "medium",
        "stream": true,
        "stream_options": {"include_usage": true}
    });
    assert_eq!(encode(&request), expected);
}

#[test]
fn the_encoder_leaves_out_what_the_api_would_refuse_and_refuses_top_k() {
    let mut request = Request {
        model: "m".into(),
        messages: vec![Message { role: Role::User, parts: vec![text("hi")] }],
        tool_choice: Some(ToolChoice::Named("f".into())),
        parallel_tool_calls: Some(false),
        reasoning: Some(Reasoning::Off),
        ..Request::default()
    };
    // No tools: no tool choice, no parallel flag; reasoning off: no effort at all.
    assert_eq!(
        encode(&request),
        json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    );
    request.tools.push(Tool {
        name: "f".into(),
        description: None,
        parameters: json!({}),
        strict: None,
    });
    let body = encode(&request);
    assert_eq!(body["tool_choice"], json!({"type": "function", "function": {"name": "f"}}));
    assert_eq!(body["parallel_tool_calls"], json!(false));
    for (choice, wire) in
        [(ToolChoice::Auto, "auto"), (ToolChoice::None, "none"), (ToolChoice::Required, "required")]
    {
        request.tool_choice = Some(choice);
        assert_eq!(encode(&request)["tool_choice"], json!(wire));
    }
    request.output = Some(OutputFormat::JsonObject);
    assert_eq!(encode(&request)["response_format"], json!({"type": "json_object"}));
    request.sampling.top_k = Some(40);
    assert_eq!(
        OpenAiChat::encode_request(&request),
        Err(Error::unsupported("top_k", Format::OpenAiChat))
    );
}

#[test]
fn a_reply_decodes_with_its_calls_reasoning_usage_and_finish() {
    let body = json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "logprobs": null, "message": {
            "role": "assistant", "content": "Let me check.", "refusal": null, "reasoning_content": "think",
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Rome\"}"}}
            ]}}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 30, "total_tokens": 130,
            "prompt_tokens_details": {"cached_tokens": 64, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 12}}
    });
    let response = OpenAiChat::decode_response(&serde_json::to_vec(&body).unwrap()).unwrap();
    assert_eq!(
        response,
        Response {
            id: "chatcmpl-1".into(),
            model: "gpt-4o".into(),
            parts: vec![
                Part::Thinking(Thinking {
                    text: "think".into(),
                    signature: None,
                    redacted: None,
                    origin: Some(Format::OpenAiChat)
                }),
                text("Let me check."),
                call("call_1", "weather", r#"{"city":"Paris"}"#),
                call("call_2", "weather", r#"{"city":"Rome"}"#),
            ],
            stop: StopReason::ToolUse,
            stop_sequence: None,
            usage: Usage {
                input_tokens: 100,
                output_tokens: 30,
                cache_read_tokens: 64,
                cache_write_tokens: 0,
                reasoning_tokens: 12
            },
        }
    );
    for (reason, stop) in [
        (json!("stop"), StopReason::EndTurn),
        (json!("length"), StopReason::MaxTokens),
        (json!("content_filter"), StopReason::ContentFilter),
        (json!(null), StopReason::EndTurn),
        (json!("eos"), StopReason::Other("eos".into())),
    ] {
        let body = json!({"choices": [{"message": {"content": "x"}, "finish_reason": reason}]});
        let response = OpenAiChat::decode_response(&serde_json::to_vec(&body).unwrap()).unwrap();
        assert_eq!(response.stop, stop);
    }
    // A server that says `stop` after tool calls: the calls decide.
    let body = json!({"choices": [{"message": {"tool_calls": [{"id": "c", "function": {"name": "f"}}]}, "finish_reason": "stop"}]});
    let response = OpenAiChat::decode_response(&serde_json::to_vec(&body).unwrap()).unwrap();
    assert_eq!((response.parts, response.stop), (vec![call("c", "f", "{}")], StopReason::ToolUse));
    // A refusal is the reply's text, and a content filter stop.
    let body = json!({"choices": [{"message": {"content": null, "refusal": "I can't."}, "finish_reason": "stop"}]});
    let response = OpenAiChat::decode_response(&serde_json::to_vec(&body).unwrap()).unwrap();
    assert_eq!(
        (response.parts, response.stop),
        (vec![text("I can't.")], StopReason::ContentFilter)
    );
    assert_eq!(
        OpenAiChat::decode_response(br#"{"choices": []}"#),
        Err(Error::invalid("choices", "empty"))
    );
}

#[test]
fn a_reply_encodes_as_a_chat_completion() {
    let response = Response {
        id: "msg_1".into(),
        model: "claude-sonnet-4-5".into(),
        parts: vec![
            Part::Thinking(Thinking {
                text: "Plan.".into(),
                signature: Some("sig".into()),
                redacted: None,
                origin: Some(Format::Anthropic),
            }),
            text("Checking "),
            text("now."),
            call("toolu_1", "weather", r#"{"city":"Paris"}"#),
        ],
        stop: StopReason::ToolUse,
        stop_sequence: None,
        usage: Usage {
            input_tokens: 120,
            output_tokens: 40,
            cache_read_tokens: 100,
            cache_write_tokens: 20,
            reasoning_tokens: 9,
        },
    };
    let mut body: Value =
        serde_json::from_slice(&OpenAiChat::encode_response(&response).unwrap()).unwrap();
    assert!(body["created"].as_u64().unwrap() > 1_700_000_000, "created is the time of the reply");
    body["created"] = json!(0);
    assert_eq!(
        body,
        json!({
            "id": "msg_1", "object": "chat.completion", "created": 0, "model": "claude-sonnet-4-5",
            "choices": [{"index": 0, "logprobs": null, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": "Checking now.", "refusal": null, "reasoning_content": "Plan.",
                "tool_calls": [{"id": "toolu_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}]
            }}],
            "usage": {"prompt_tokens": 120, "completion_tokens": 40, "total_tokens": 160,
                "prompt_tokens_details": {"cached_tokens": 100}, "completion_tokens_details": {"reasoning_tokens": 9}}
        })
    );
    for (stop, reason) in [
        (StopReason::EndTurn, "stop"),
        (StopReason::StopSequence, "stop"),
        (StopReason::MaxTokens, "length"),
        (StopReason::ContentFilter, "content_filter"),
        (StopReason::Other("pause_turn".into()), "stop"),
    ] {
        let response = Response { stop, ..Response::default() };
        let body: Value =
            serde_json::from_slice(&OpenAiChat::encode_response(&response).unwrap()).unwrap();
        assert_eq!(body["choices"][0]["finish_reason"], reason);
        assert_eq!(body["choices"][0]["message"]["content"], Value::Null);
        assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
    }
}

#[test]
fn errors_translate_both_ways() {
    let body = br#"{"error": {"message": "Incorrect API key provided", "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}}"#;
    assert_eq!(
        OpenAiChat::decode_error(401, body),
        ApiError {
            status: 401,
            kind: ErrorKind::Authentication,
            message: "Incorrect API key provided".into()
        }
    );
    let error = OpenAiChat::decode_error(502, b"<html>Bad Gateway</html>");
    assert_eq!((error.kind, error.message.as_str()), (ErrorKind::Api, "<html>Bad Gateway</html>"));
    let error = OpenAiChat::decode_error(429, br#"{"error": "too many"}"#);
    assert_eq!((error.kind, error.message.as_str()), (ErrorKind::RateLimit, "too many"));
    for (kind, status, wire) in [
        (ErrorKind::InvalidRequest, 400, "invalid_request_error"),
        (ErrorKind::Authentication, 401, "authentication_error"),
        (ErrorKind::Permission, 403, "permission_error"),
        (ErrorKind::NotFound, 404, "not_found_error"),
        (ErrorKind::RequestTooLarge, 413, "invalid_request_error"),
        (ErrorKind::RateLimit, 429, "rate_limit_error"),
        (ErrorKind::Api, 500, "server_error"),
        (ErrorKind::Overloaded, 529, "server_error"),
    ] {
        let error = ApiError { status, kind, message: "m".into() };
        let body: Value = serde_json::from_slice(&OpenAiChat::encode_error(&error)).unwrap();
        assert_eq!(body["error"]["type"], wire);
        assert_eq!(body["error"]["message"], "m");
        assert!(body["error"].get("param").is_some() && body["error"].get("code").is_some());
        // What this codec writes, it reads back as the same kind.
        assert_eq!(OpenAiChat::decode_error(status, &OpenAiChat::encode_error(&error)).kind, kind);
    }
}

#[test]
fn malformed_requests_are_refused_naming_the_field() {
    let invalid = |body: &[u8]| match OpenAiChat::decode_request(body) {
        Err(Error::Invalid { field, problem }) => (field, problem),
        other => panic!("expected Invalid, got {other:?}"),
    };
    let messages = r#"[{"role":"system","content":"s"},{"role":"user","content":"a"},{"role":"user","content":5}]"#;
    let (field, problem) = invalid(format!(r#"{{"model":"m","messages":{messages}}}"#).as_bytes());
    assert_eq!(field, "messages[2].content");
    assert!(problem.contains("a string or an array of content parts"), "{problem}");
    let (field, _) = invalid(
        br#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":1}]}]}"#,
    );
    assert_eq!(field, "messages[0].content[0].text");
    let (field, problem) = invalid(br#"{"messages":[]}"#);
    assert_eq!((field.as_str(), problem.as_str()), ("body", "missing field `model`"));
    let (field, _) = invalid(br#"{"model":"m","messages":[{"content":"x"}]}"#);
    assert_eq!(field, "messages[0]");
    let (field, _) = invalid(br#"{"model":"m","messages":[],"temperature":"hot"}"#);
    assert_eq!(field, "temperature");
    let (field, _) = invalid(
        br#"{"model":"m","messages":[],"tools":[{"type":"function","function":{"name":3}}]}"#,
    );
    assert_eq!(field, "tools[0].function");
    let (field, problem) =
        invalid(br#"{"model":"m","messages":[{"role":"wizard","content":"x"}]}"#);
    assert_eq!((field.as_str(), problem.as_str()), ("messages[0].role", "unknown role `wizard`"));
    let (field, _) = invalid(br#"{"model":"m","messages":[{"role":"tool","content":"x"}]}"#);
    assert_eq!(field, "messages[0].tool_call_id");
    let (field, _) = invalid(br#"{"model":"m","messages":[],"reasoning_effort":"max"}"#);
    assert_eq!(field, "reasoning_effort");
    // Not JSON, cut short, not UTF-8, not an object: the body as a whole.
    for body in [
        &b"{\"model\":\"m\",\"messages\":[{\"role\""[..],
        b"",
        b"[1,2]",
        b"{\"model\":\"\xff\xfe\",\"messages\":[]}",
        b"null",
    ] {
        assert_eq!(invalid(body).0, "body", "{body:?}");
    }
    // Nesting past serde_json's recursion limit is an error, not a stack overflow.
    let deep = format!(
        r#"{{"model":"m","messages":[],"tools":[{{"type":"function","function":{{"name":"f","parameters":{}{}}}}}]}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    assert_eq!(invalid(deep.as_bytes()).0, "body");
    // A megabyte of text is just text.
    let long = "x".repeat(1 << 20);
    let request =
        decode(&json!({"model": "m", "messages": [{"role": "user", "content": long}]})).unwrap();
    assert_eq!(request.messages[0].parts, vec![Part::Text(long)]);
}

fn decode_stream(chunks: &[&str]) -> Vec<Event> {
    let mut decoder = OpenAiChat::stream_decoder();
    let mut events = Vec::new();
    for chunk in chunks {
        decoder.decode(None, chunk.as_bytes(), &mut events).unwrap();
    }
    decoder.finish(&mut events);
    events
}

#[test]
fn a_provider_stream_with_parallel_calls_decodes_in_order() {
    let chunk = |choices: &str| {
        format!(
            r#"{{"id":"chatcmpl-9","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":{choices}}}"#
        )
    };
    let chunks = [
        chunk(r#"[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"finish_reason":null}]"#),
        chunk(r#"[{"index":0,"delta":{"content":"Checking"},"finish_reason":null}]"#),
        chunk(r#"[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"weather","arguments":""}}]},"finish_reason":null}]"#),
        chunk(r#"[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":"}}]},"finish_reason":null}]"#),
        chunk(r#"[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"Paris\"}"}}]},"finish_reason":null}]"#),
        chunk(r#"[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_b","type":"function","function":{"name":"weather","arguments":"{\"city\":\"Rome\"}"}}]},"finish_reason":null}]"#),
        chunk(r#"[{"index":0,"delta":{},"finish_reason":"tool_calls"}]"#),
        r#"{"id":"chatcmpl-9","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[],"usage":{"prompt_tokens":50,"completion_tokens":20,"total_tokens":70,"prompt_tokens_details":{"cached_tokens":32},"completion_tokens_details":{"reasoning_tokens":0}}}"#.to_owned(),
        "[DONE]".to_owned(),
    ];
    let chunks: Vec<&str> = chunks.iter().map(String::as_str).collect();
    let tool = |id: &str| BlockKind::ToolCall { id: id.into(), name: "weather".into() };
    assert_eq!(
        decode_stream(&chunks),
        vec![
            Event::Start {
                id: "chatcmpl-9".into(),
                model: "gpt-4o".into(),
                usage: Usage::default()
            },
            Event::BlockStart { index: 0, block: BlockKind::Text },
            Event::TextDelta { index: 0, text: "Checking".into() },
            Event::BlockStop { index: 0 },
            Event::BlockStart { index: 1, block: tool("call_a") },
            Event::ToolArgumentsDelta { index: 1, json: r#"{"city":"#.into() },
            Event::ToolArgumentsDelta { index: 1, json: r#""Paris"}"#.into() },
            Event::BlockStop { index: 1 },
            Event::BlockStart { index: 2, block: tool("call_b") },
            Event::ToolArgumentsDelta { index: 2, json: r#"{"city":"Rome"}"#.into() },
            Event::BlockStop { index: 2 },
            Event::Finish {
                stop: StopReason::ToolUse,
                stop_sequence: None,
                usage: Usage {
                    input_tokens: 50,
                    output_tokens: 20,
                    cache_read_tokens: 32,
                    ..Usage::default()
                },
            },
        ]
    );
}

#[test]
fn a_provider_stream_that_skips_steps_still_decodes_whole() {
    // No role chunk, reasoning first, a tool call without index whose name comes with the
    // arguments, `stop` said after tool calls, no usage, no [DONE].
    let events = decode_stream(&[
        r#"{"choices":[{"delta":{"reasoning_content":"hm"}}]}"#,
        "",
        r#"{"choices":[{"delta":{"content":"ok"}}]}"#,
        r#"{"choices":[{"delta":{"tool_calls":[{"id":"c1","function":{"name":"f","arguments":"{}"}}]}}]}"#,
        r#"{"choices":[{"delta":{},"finish_reason":"stop"}]}"#,
    ]);
    assert_eq!(
        events,
        vec![
            Event::Start { id: String::new(), model: String::new(), usage: Usage::default() },
            Event::BlockStart { index: 0, block: BlockKind::Thinking },
            Event::ThinkingDelta { index: 0, text: "hm".into() },
            Event::BlockStop { index: 0 },
            Event::BlockStart { index: 1, block: BlockKind::Text },
            Event::TextDelta { index: 1, text: "ok".into() },
            Event::BlockStop { index: 1 },
            Event::BlockStart {
                index: 2,
                block: BlockKind::ToolCall { id: "c1".into(), name: "f".into() }
            },
            Event::ToolArgumentsDelta { index: 2, json: "{}".into() },
            Event::BlockStop { index: 2 },
            Event::Finish {
                stop: StopReason::ToolUse,
                stop_sequence: None,
                usage: Usage::default()
            },
        ]
    );
    // Usage on the finish chunk itself finishes at once; nothing after the finish counts.
    let events = decode_stream(&[
        r#"{"choices":[{"delta":{"content":"a"},"finish_reason":"length"}],"usage":{"prompt_tokens":3,"completion_tokens":1}}"#,
        r#"{"choices":[{"delta":{"content":"late"}}]}"#,
    ]);
    assert_eq!(
        events.last(),
        Some(&Event::Finish {
            stop: StopReason::MaxTokens,
            stop_sequence: None,
            usage: Usage { input_tokens: 3, output_tokens: 1, ..Usage::default() }
        })
    );
    assert_eq!(events.len(), 5);
    // A provider that goes back to an earlier call: its pieces keep that call's index.
    let events = decode_stream(&[
        r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"a","function":{"name":"f","arguments":"{\"x\":"}}]}}]}"#,
        r#"{"choices":[{"delta":{"tool_calls":[{"index":1,"id":"b","function":{"name":"g","arguments":"{}"}}]}}]}"#,
        r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"1}"}}]}}]}"#,
    ]);
    assert_eq!(events[6], Event::ToolArgumentsDelta { index: 0, json: "1}".into() });
    // An empty stream is still a whole reply.
    assert_eq!(decode_stream(&[]).len(), 2);
}

#[test]
fn provider_stream_errors_and_garbage() {
    let events = decode_stream(&[
        r#"{"choices":[{"delta":{"content":"a"}}]}"#,
        r#"{"error":{"message":"overloaded","type":"server_error","code":null}}"#,
    ]);
    assert_eq!(
        events.last(),
        Some(&Event::Error(ApiError {
            status: 500,
            kind: ErrorKind::Api,
            message: "overloaded".into()
        }))
    );
    assert!(
        !events.iter().any(|event| matches!(event, Event::Finish { .. })),
        "nothing follows an error"
    );
    let mut decoder = OpenAiChat::stream_decoder();
    let mut events = Vec::new();
    for garbage in
        [&b"{\"choices\":"[..], b"\xff\xfe", b"[1]", b"{\"choices\":[{\"delta\":{\"content\":7}}]}"]
    {
        assert!(
            matches!(decoder.decode(None, garbage, &mut events), Err(Error::Stream { .. })),
            "{garbage:?}"
        );
    }
    assert!(events.is_empty());
}

fn encode_stream(events: &[Event]) -> Vec<Value> {
    let mut encoder = OpenAiChat::stream_encoder();
    let mut out = Vec::new();
    for event in events {
        encoder.encode(event, &mut out);
    }
    encoder.finish(&mut out);
    frames(&out)
}

#[test]
fn events_encode_as_chat_chunks_with_tool_calls_numbered_among_calls() {
    let events = [
        Event::Start {
            id: "msg_1".into(),
            model: "claude".into(),
            usage: Usage { input_tokens: 10, ..Usage::default() },
        },
        Event::BlockStart { index: 0, block: BlockKind::Thinking },
        Event::ThinkingDelta { index: 0, text: "hm".into() },
        Event::SignatureDelta { index: 0, signature: "sig".into() },
        Event::BlockStop { index: 0 },
        Event::BlockStart { index: 1, block: BlockKind::Text },
        Event::TextDelta { index: 1, text: "Hi".into() },
        Event::BlockStop { index: 1 },
        Event::BlockStart {
            index: 2,
            block: BlockKind::ToolCall { id: "toolu_a".into(), name: "weather".into() },
        },
        Event::ToolArgumentsDelta { index: 2, json: r#"{"city":"Paris"}"#.into() },
        Event::BlockStop { index: 2 },
        Event::BlockStart {
            index: 3,
            block: BlockKind::ToolCall { id: "toolu_b".into(), name: "now".into() },
        },
        Event::BlockStop { index: 3 },
        Event::Finish {
            stop: StopReason::ToolUse,
            stop_sequence: None,
            usage: Usage {
                input_tokens: 10,
                output_tokens: 5,
                cache_read_tokens: 4,
                ..Usage::default()
            },
        },
    ];
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "msg_1", "object": "chat.completion.chunk", "created": 0, "model": "claude",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
    };
    let none = Value::Null;
    assert_eq!(
        encode_stream(&events),
        vec![
            chunk(json!({"role": "assistant", "content": ""}), none.clone()),
            chunk(json!({"reasoning_content": "hm"}), none.clone()),
            chunk(json!({"content": "Hi"}), none.clone()),
            chunk(
                json!({"tool_calls": [{"index": 0, "id": "toolu_a", "type": "function", "function": {"name": "weather", "arguments": ""}}]}),
                none.clone()
            ),
            chunk(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":\"Paris\"}"}}]}),
                none.clone()
            ),
            chunk(
                json!({"tool_calls": [{"index": 1, "id": "toolu_b", "type": "function", "function": {"name": "now", "arguments": ""}}]}),
                none.clone()
            ),
            // A call without arguments gets `{}`, which clients can parse.
            chunk(json!({"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]}), none),
            chunk(json!({}), json!("tool_calls")),
            json!({"id": "msg_1", "object": "chat.completion.chunk", "created": 0, "model": "claude", "choices": [],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15,
                    "prompt_tokens_details": {"cached_tokens": 4}, "completion_tokens_details": {"reasoning_tokens": 0}}}),
            json!("[DONE]"),
        ]
    );
}

#[test]
fn an_error_event_encodes_as_an_error_chunk() {
    let frames = encode_stream(&[
        Event::Start { id: "x".into(), model: "m".into(), usage: Usage::default() },
        Event::Error(ApiError {
            status: 529,
            kind: ErrorKind::Overloaded,
            message: "Overloaded".into(),
        }),
    ]);
    assert_eq!(
        frames[1],
        json!({"error": {"message": "Overloaded", "type": "server_error", "param": null, "code": "overloaded"}})
    );
    assert_eq!(frames.len(), 3);
}

#[test]
fn the_usage_chunk_completes_the_finish_with_the_prompt_reported_at_the_start() {
    // Anthropic reports the prompt in `message_start` and only the output at the end.
    let start =
        Usage { input_tokens: 10, cache_read_tokens: 8, cache_write_tokens: 2, ..Usage::default() };
    let frames = encode_stream(&[
        Event::Start { id: "x".into(), model: "m".into(), usage: start },
        Event::Finish {
            stop: StopReason::EndTurn,
            stop_sequence: None,
            usage: Usage { output_tokens: 5, ..Usage::default() },
        },
    ]);
    assert_eq!(
        frames[2]["usage"],
        json!({"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15,
            "prompt_tokens_details": {"cached_tokens": 8}, "completion_tokens_details": {"reasoning_tokens": 0}})
    );
}
