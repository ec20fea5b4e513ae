use serde_json::{Value, json};

use super::*;
use crate::Pair;
use crate::codec::Codec;
use crate::formats::OpenAiChat;
use crate::ir::{BlockKind, Effort, ErrorKind, Event, Image, Reasoning};

fn decode(body: &Value) -> Result<Request> {
    OpenAiResponses::decode_request(&serde_json::to_vec(body).unwrap())
}

fn encode(request: &Request) -> Value {
    serde_json::from_slice(&OpenAiResponses::encode_request(request).unwrap()).unwrap()
}

fn text(text: &str) -> Part {
    Part::Text(text.to_owned())
}

fn call(id: &str, name: &str, arguments: &str) -> Part {
    Part::ToolCall(ToolCall { id: id.into(), name: name.into(), arguments: arguments.into() })
}

fn thinking(text: &str, signature: Option<&str>, origin: Format) -> Part {
    Part::Thinking(Thinking {
        text: text.into(),
        signature: signature.map(Into::into),
        redacted: None,
        origin: Some(origin),
    })
}

fn schema() -> Value {
    json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
}

/// The events of a Responses stream: each frame's name, and its data with the clock's
/// `created_at` zeroed; checks that every frame names its type and numbers itself in order.
fn frames(bytes: &[u8]) -> Vec<(String, Value)> {
    let text = std::str::from_utf8(bytes).unwrap();
    text.split_terminator("\n\n")
        .enumerate()
        .map(|(sequence, frame)| {
            let (name, data) = frame.split_once('\n').unwrap();
            let name = name.strip_prefix("event: ").unwrap().to_owned();
            let mut data: Value =
                serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
            assert_eq!(data["type"], name.as_str());
            assert_eq!(data["sequence_number"], sequence, "{name}");
            if let Some(response) = data.get_mut("response") {
                response["created_at"] = json!(0);
            }
            (name, data)
        })
        .collect()
}

#[test]
fn a_whole_request_decodes_into_the_common_form() {
    let body = json!({
        "model": "gpt-5",
        "instructions": "You are Codex.",
        "input": [
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "Sandbox: read-only."}]},
            {"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "Weather in Paris and Rome?"},
                {"type": "input_image", "image_url": "data:image/jpeg;base64,/9j/4AAQ", "detail": "auto"}
            ]},
            {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "Two cities."}], "encrypted_content": "gAAAAB-own"},
            {"type": "reasoning", "id": "rs_x", "summary": [{"type": "summary_text", "text": "Claude's plan."}], "encrypted_content": "cpx1.anthropic.EqRk"},
            {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "weather", "arguments": "{\"city\":\"Paris\"}"},
            {"type": "function_call", "call_id": "call_2", "name": "weather", "arguments": "{\"city\":\"Rome\"}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "18°C"},
            {"type": "function_call_output", "call_id": "call_2", "output": [{"type": "input_text", "text": "24°C"}]},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Paris 18, Rome 24.", "annotations": []}]},
            {"role": "user", "content": "Thanks"}
        ],
        "tools": [{"type": "function", "name": "weather", "description": "Current weather", "parameters": schema(), "strict": false}],
        "tool_choice": {"type": "function", "name": "weather"},
        "parallel_tool_calls": true,
        "max_output_tokens": 2000,
        "temperature": 1.0,
        "top_p": 0.95,
        "reasoning": {"effort": "medium", "summary": "auto"},
        "text": {"format": {"type": "json_schema", "name": "forecast", "schema": {"type": "object"}, "strict": true}, "verbosity": "low"},
        "stream": true,
        "store": false, "include": ["reasoning.encrypted_content"], "prompt_cache_key": "k", "safety_identifier": "s",
        "service_tier": "auto", "user": "u", "metadata": {}, "truncation": "auto", "background": false
    });
    let request = decode(&body).unwrap();
    let expected = Request {
        model: "gpt-5".into(),
        system: vec![
            SystemPart { developer: false, text: "You are Codex.".into() },
            SystemPart { developer: true, text: "Sandbox: read-only.".into() },
        ],
        messages: vec![
            Message {
                role: Role::User,
                parts: vec![
                    text("Weather in Paris and Rome?"),
                    Part::Image(Image::Base64 {
                        media_type: "image/jpeg".into(),
                        data: "/9j/4AAQ".into(),
                    }),
                ],
            },
            Message {
                role: Role::Assistant,
                parts: vec![
                    // OpenAI's own reasoning keeps its item id with the encrypted content;
                    // another provider's, given out wrapped, comes back with its origin.
                    thinking("Two cities.", Some("rs_1.gAAAAB-own"), Format::OpenAiResponses),
                    thinking("Claude's plan.", Some("EqRk"), Format::Anthropic),
                    call("call_1", "weather", r#"{"city":"Paris"}"#),
                    call("call_2", "weather", r#"{"city":"Rome"}"#),
                ],
            },
            Message {
                role: Role::User,
                parts: vec![
                    Part::ToolResult(ToolResult {
                        call_id: "call_1".into(),
                        name: None,
                        content: vec![ToolResultPart::Text("18°C".into())],
                        is_error: false,
                    }),
                    Part::ToolResult(ToolResult {
                        call_id: "call_2".into(),
                        name: None,
                        content: vec![ToolResultPart::Text("24°C".into())],
                        is_error: false,
                    }),
                ],
            },
            Message { role: Role::Assistant, parts: vec![text("Paris 18, Rome 24.")] },
            Message { role: Role::User, parts: vec![text("Thanks")] },
        ],
        tools: vec![Tool {
            name: "weather".into(),
            description: Some("Current weather".into()),
            parameters: schema(),
            strict: Some(false),
        }],
        tool_choice: Some(ToolChoice::Named("weather".into())),
        parallel_tool_calls: Some(true),
        max_tokens: Some(2000),
        sampling: Sampling { temperature: Some(1.0), top_p: Some(0.95), ..Sampling::default() },
        stop: vec![],
        stream: true,
        output: Some(OutputFormat::JsonSchema {
            name: "forecast".into(),
            schema: json!({"type": "object"}),
            strict: Some(true),
        }),
        reasoning: Some(Reasoning::Effort(Effort::Medium)),
        unmapped: vec![],
    };
    assert_eq!(request, expected);
    // The short form: the input is the user's text.
    let request = decode(&json!({"model": "m", "input": "Hi", "tool_choice": "required", "text": {"format": {"type": "json_object"}}})).unwrap();
    assert_eq!(request.messages, vec![Message { role: Role::User, parts: vec![text("Hi")] }]);
    assert_eq!(
        (request.tool_choice, request.output),
        (Some(ToolChoice::Required), Some(OutputFormat::JsonObject))
    );
}

#[test]
fn state_and_built_in_tools_are_kept_and_refused_by_name() {
    let body = json!({
        "model": "gpt-5",
        "previous_response_id": "resp_1",
        "input": [
            {"type": "item_reference", "id": "msg_1"},
            {"role": "user", "content": [{"type": "input_file", "file_id": "file-1"}, {"type": "input_image", "file_id": "file-2"}]}
        ],
        "tools": [{"type": "web_search"}, {"type": "function", "name": "f"}, {"type": "local_shell"}],
        "tool_choice": {"type": "web_search_preview"},
        "background": true, "max_tool_calls": 3, "top_logprobs": 2
    });
    let request = decode(&body).unwrap();
    let names: Vec<&str> = request.unmapped.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names,
        [
            "input[0].type",
            "input[1].content[0].type",
            "input[1].content[1].file_id",
            "tools[0].type",
            "tools[2].type",
            "tool_choice.type",
            "previous_response_id",
            "background",
            "max_tool_calls",
            "top_logprobs"
        ]
    );
    assert_eq!(request.tools.len(), 1);
    // A client of the Responses API served by a Chat Completions provider: refused, naming
    // the client's field and the target.
    let only_state =
        decode(&json!({"model": "m", "input": "x", "previous_response_id": "resp_1"})).unwrap();
    assert_eq!(
        OpenAiChat::encode_request(&only_state),
        Err(Error::unsupported("previous_response_id", Format::OpenAiChat))
    );
    let error = Pair::new(Format::OpenAiResponses, Format::OpenAiChat)
        .encode_request(
            &decode(&json!({"model": "m", "input": "x", "tools": [{"type": "file_search"}]}))
                .unwrap(),
        )
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "tools[0].type has no counterpart in the OpenAI Chat Completions API"
    );
}

#[test]
fn a_request_encodes_as_the_responses_api_takes_it() {
    let request = Request {
        model: "gpt-5".into(),
        system: vec![
            SystemPart { developer: false, text: "Be brief.".into() },
            SystemPart { developer: true, text: "Metric.".into() },
        ],
        messages: vec![
            Message {
                role: Role::User,
                parts: vec![
                    text("Weather?"),
                    Part::Image(Image::Url {
                        url: "https://x.test/a.png".into(),
                        media_type: None,
                    }),
                ],
            },
            Message {
                role: Role::Assistant,
                parts: vec![
                    thinking("Own.", Some("rs_9.gAAA"), Format::OpenAiResponses),
                    thinking("Claude's.", Some("EqRk"), Format::Anthropic),
                    text("Checking."),
                    call("toolu_1", "weather", r#"{"city":"Paris"}"#),
                ],
            },
            Message {
                role: Role::User,
                parts: vec![
                    Part::ToolResult(ToolResult {
                        call_id: "toolu_1".into(),
                        name: Some("weather".into()),
                        content: vec![
                            ToolResultPart::Text("18".into()),
                            ToolResultPart::Image(Image::Base64 {
                                media_type: "image/png".into(),
                                data: "AA==".into(),
                            }),
                        ],
                        is_error: true,
                    }),
                    text("More?"),
                ],
            },
        ],
        tools: vec![Tool {
            name: "weather".into(),
            description: Some("d".into()),
            parameters: schema(),
            strict: None,
        }],
        tool_choice: Some(ToolChoice::Named("weather".into())),
        parallel_tool_calls: Some(false),
        max_tokens: Some(500),
        sampling: Sampling { temperature: Some(0.3), top_p: Some(0.8), ..Sampling::default() },
        stop: vec![],
        stream: true,
        output: Some(OutputFormat::JsonSchema {
            name: "out".into(),
            schema: json!({"type": "object"}),
            strict: Some(true),
        }),
        reasoning: Some(Reasoning::Budget(2048)),
        unmapped: vec![],
    };
    let expected = json!({
        "model": "gpt-5",
        "instructions": "Be brief.\n\nMetric.",
        "input": [
            {"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "Weather?"},
                {"type": "input_image", "image_url": "https://x.test/a.png"}
            ]},
            {"type": "reasoning", "id": "rs_9", "summary": [{"type": "summary_text", "text": "Own."}], "encrypted_content": "gAAA"},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Checking."}]},
            {"type": "function_call", "call_id": "toolu_1", "name": "weather", "arguments": "{\"city\":\"Paris\"}"},
            {"type": "function_call_output", "call_id": "toolu_1", "output": [
                {"type": "input_text", "text": "18"},
                {"type": "input_image", "image_url": "data:image/png;base64,AA=="}
            ]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "More?"}]}
        ],
        "max_output_tokens": 500,
        "temperature": 0.3,
        "top_p": 0.8,
        "tools": [{"type": "function", "name": "weather", "description": "d", "parameters": schema(), "strict": false}],
        "tool_choice": {"type": "function", "name": "weather"},
        "parallel_tool_calls": false,
        "reasoning": {"effort": "low"},
        "text": {"format": {"type": "json_schema", "name": "out", "schema": {"type": "object"}, "strict": true}},
        "include": ["reasoning.encrypted_content"],
        "store": false,
        "stream": true
    });
    assert_eq!(encode(&request), expected);
}

#[test]
fn what_the_responses_api_cannot_say_is_refused() {
    let base = Request { model: "m".into(), ..Request::default() };
    assert_eq!(encode(&base), json!({"model": "m", "input": [], "store": false}));
    let cases = [
        ("stop", Request { stop: vec!["x".into()], ..base.clone() }),
        (
            "top_k",
            Request {
                sampling: Sampling { top_k: Some(5), ..Sampling::default() },
                ..base.clone()
            },
        ),
        (
            "seed",
            Request { sampling: Sampling { seed: Some(5), ..Sampling::default() }, ..base.clone() },
        ),
        (
            "presence_penalty",
            Request {
                sampling: Sampling { presence_penalty: Some(0.5), ..Sampling::default() },
                ..base.clone()
            },
        ),
        (
            "frequency_penalty",
            Request {
                sampling: Sampling { frequency_penalty: Some(0.5), ..Sampling::default() },
                ..base.clone()
            },
        ),
        ("n", Request { unmapped: vec![("n".into(), json!(2))], ..base.clone() }),
    ];
    for (field, request) in cases {
        assert_eq!(
            OpenAiResponses::encode_request(&request),
            Err(Error::unsupported(field, Format::OpenAiResponses))
        );
    }
}

#[test]
fn a_reply_decodes_with_reasoning_calls_usage_and_status() {
    let body = json!({
        "id": "resp_1", "object": "response", "created_at": 1, "status": "completed", "model": "gpt-5",
        "output": [
            {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "A"}, {"type": "summary_text", "text": "B"}], "encrypted_content": "gAAA"},
            {"type": "message", "id": "msg_1", "status": "completed", "role": "assistant", "content": [{"type": "output_text", "text": "Checking.", "annotations": []}]},
            {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "weather", "arguments": "{\"city\":\"Paris\"}", "status": "completed"},
            {"type": "web_search_call", "id": "ws_1", "status": "completed"}
        ],
        "usage": {"input_tokens": 300, "input_tokens_details": {"cached_tokens": 256}, "output_tokens": 80, "output_tokens_details": {"reasoning_tokens": 64}, "total_tokens": 380}
    });
    let response = OpenAiResponses::decode_response(&serde_json::to_vec(&body).unwrap()).unwrap();
    assert_eq!(
        response,
        Response {
            id: "resp_1".into(),
            model: "gpt-5".into(),
            parts: vec![
                thinking("A\n\nB", Some("rs_1.gAAA"), Format::OpenAiResponses),
                text("Checking."),
                call("call_1", "weather", r#"{"city":"Paris"}"#),
            ],
            stop: StopReason::ToolUse,
            stop_sequence: None,
            usage: Usage {
                input_tokens: 300,
                output_tokens: 80,
                cache_read_tokens: 256,
                cache_write_tokens: 0,
                reasoning_tokens: 64
            },
        }
    );
    let stop = |body: Value| {
        OpenAiResponses::decode_response(&serde_json::to_vec(&body).unwrap()).unwrap().stop
    };
    assert_eq!(
        stop(
            json!({"status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"}, "output": []})
        ),
        StopReason::MaxTokens
    );
    assert_eq!(
        stop(json!({"status": "incomplete", "incomplete_details": {"reason": "content_filter"}})),
        StopReason::ContentFilter
    );
    assert_eq!(
        stop(
            json!({"status": "completed", "output": [{"type": "message", "content": [{"type": "refusal", "refusal": "No."}]}]})
        ),
        StopReason::ContentFilter
    );
    assert_eq!(
        stop(
            json!({"status": "completed", "output": [{"type": "message", "content": [{"type": "output_text", "text": "ok"}]}]})
        ),
        StopReason::EndTurn
    );
}

#[test]
fn a_reply_encodes_as_a_response_object_with_foreign_signatures_wrapped() {
    let response = Response {
        id: "msg_01".into(),
        model: "claude-sonnet-4-5".into(),
        parts: vec![
            thinking("Plan.", Some("EqRk"), Format::Anthropic),
            Part::Thinking(Thinking {
                text: String::new(),
                signature: None,
                redacted: Some("opaque".into()),
                origin: Some(Format::Anthropic),
            }),
            text("Checking."),
            call("toolu_1", "weather", r#"{"city":"Paris"}"#),
        ],
        stop: StopReason::ToolUse,
        stop_sequence: None,
        usage: Usage {
            input_tokens: 120,
            output_tokens: 40,
            cache_read_tokens: 100,
            cache_write_tokens: 20,
            reasoning_tokens: 0,
        },
    };
    let mut body: Value =
        serde_json::from_slice(&OpenAiResponses::encode_response(&response).unwrap()).unwrap();
    assert!(body["created_at"].as_u64().unwrap() > 1_700_000_000);
    body["created_at"] = json!(0);
    assert_eq!(
        body,
        json!({
            "id": "msg_01", "object": "response", "created_at": 0, "status": "completed",
            "error": null, "incomplete_details": null, "model": "claude-sonnet-4-5",
            "output": [
                {"type": "reasoning", "id": "rs_0_msg_01", "summary": [{"type": "summary_text", "text": "Plan."}], "encrypted_content": "cpx1.anthropic.EqRk"},
                {"type": "message", "id": "msg_1_msg_01", "status": "completed", "role": "assistant", "content": [{"type": "output_text", "text": "Checking.", "annotations": []}]},
                {"type": "function_call", "id": "fc_2_msg_01", "status": "completed", "call_id": "toolu_1", "name": "weather", "arguments": "{\"city\":\"Paris\"}"}
            ],
            "parallel_tool_calls": true, "tool_choice": "auto", "tools": [],
            "usage": {"input_tokens": 120, "input_tokens_details": {"cached_tokens": 100}, "output_tokens": 40, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 160}
        })
    );
    // The wrapped signature comes back next turn and is Anthropic's again.
    let item = body["output"][0].clone();
    let request = decode(&json!({"model": "m", "input": [item]})).unwrap();
    assert_eq!(request.messages[0].parts, vec![thinking("Plan.", Some("EqRk"), Format::Anthropic)]);
    // The output limit and a filter end the reply as incomplete, saying why.
    for (stop, reason) in [
        (StopReason::MaxTokens, "max_output_tokens"),
        (StopReason::ContentFilter, "content_filter"),
    ] {
        let body: Value = serde_json::from_slice(
            &OpenAiResponses::encode_response(&Response { stop, ..Response::default() }).unwrap(),
        )
        .unwrap();
        assert_eq!(
            (body["status"].as_str(), body["incomplete_details"]["reason"].as_str()),
            (Some("incomplete"), Some(reason))
        );
        assert!(body["id"].as_str().unwrap().starts_with("resp_"));
    }
}

#[test]
fn malformed_requests_are_refused_naming_the_field() {
    let invalid = |body: Value| match decode(&body) {
        Err(Error::Invalid { field, problem }) => (field, problem),
        other => panic!("expected Invalid, got {other:?}"),
    };
    assert_eq!(invalid(json!({"model": "m", "input": [{"role": "user", "content": "a"}, {"role": "user", "content": 4}]})).0, "input[1].content");
    assert_eq!(invalid(json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_text", "text": []}]}]})).0, "input[0].content[0].text");
    assert_eq!(
        invalid(json!({"model": "m", "input": [{"type": "function_call", "name": "f"}]})).0,
        "input[0].call_id"
    );
    assert_eq!(
        invalid(json!({"model": "m", "input": [{"type": "function_call_output", "call_id": "c"}]}))
            .0,
        "input[0].output"
    );
    assert_eq!(
        invalid(json!({"model": "m", "input": [{"role": "robot", "content": "x"}]})).0,
        "input[0].role"
    );
    assert_eq!(invalid(json!({"model": "m", "max_output_tokens": -1})).0, "max_output_tokens");
    assert_eq!(invalid(json!({"model": "m", "tools": [{"type": "function"}]})).0, "tools[0].name");
    assert_eq!(
        invalid(json!({"model": "m", "reasoning": {"effort": "extreme"}})).0,
        "reasoning.effort"
    );
    assert_eq!(
        invalid(json!({"model": "m", "text": {"format": {"type": "yaml"}}})).0,
        "text.format.type"
    );
    assert_eq!(
        invalid(json!({"input": "x"})),
        ("body".to_owned(), "missing field `model`".to_owned())
    );
    for body in [&b"{\"model\":"[..], b"\xc3\x28", b"42"] {
        assert!(
            matches!(OpenAiResponses::decode_request(body), Err(Error::Invalid { field, .. }) if field == "body")
        );
    }
}

fn decode_stream(events: &[(&str, Value)]) -> Vec<Event> {
    let mut decoder = OpenAiResponses::stream_decoder();
    let mut out = Vec::new();
    for (name, data) in events {
        decoder.decode(Some(name), &serde_json::to_vec(data).unwrap(), &mut out).unwrap();
    }
    decoder.finish(&mut out);
    out
}

fn event(kind: &str, mut data: Value) -> (&str, Value) {
    data["type"] = json!(kind);
    (kind, data)
}

#[test]
fn a_provider_stream_decodes_in_order() {
    let response = |status: &str| json!({"id": "resp_7", "object": "response", "status": status, "model": "gpt-5", "output": []});
    let events = [
        event(
            "response.created",
            json!({"sequence_number": 0, "response": response("in_progress")}),
        ),
        event(
            "response.in_progress",
            json!({"sequence_number": 1, "response": response("in_progress")}),
        ),
        event(
            "response.output_item.added",
            json!({"output_index": 0, "item": {"id": "rs_1", "type": "reasoning", "summary": []}}),
        ),
        event(
            "response.reasoning_summary_part.added",
            json!({"item_id": "rs_1", "output_index": 0, "summary_index": 0, "part": {"type": "summary_text", "text": ""}}),
        ),
        event(
            "response.reasoning_summary_text.delta",
            json!({"item_id": "rs_1", "output_index": 0, "summary_index": 0, "delta": "Think"}),
        ),
        event(
            "response.reasoning_summary_text.done",
            json!({"item_id": "rs_1", "output_index": 0, "summary_index": 0, "text": "Think"}),
        ),
        event(
            "response.reasoning_summary_part.added",
            json!({"item_id": "rs_1", "output_index": 0, "summary_index": 1, "part": {"type": "summary_text", "text": ""}}),
        ),
        event(
            "response.reasoning_summary_text.delta",
            json!({"item_id": "rs_1", "output_index": 0, "summary_index": 1, "delta": "More"}),
        ),
        event(
            "response.output_item.done",
            json!({"output_index": 0, "item": {"id": "rs_1", "type": "reasoning", "summary": [], "encrypted_content": "gAAA"}}),
        ),
        event(
            "response.output_item.added",
            json!({"output_index": 1, "item": {"id": "msg_1", "type": "message", "status": "in_progress", "role": "assistant", "content": []}}),
        ),
        event(
            "response.content_part.added",
            json!({"item_id": "msg_1", "output_index": 1, "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}}),
        ),
        event(
            "response.output_text.delta",
            json!({"item_id": "msg_1", "output_index": 1, "content_index": 0, "delta": "Hel", "logprobs": []}),
        ),
        event(
            "response.output_text.delta",
            json!({"item_id": "msg_1", "output_index": 1, "content_index": 0, "delta": "lo", "logprobs": []}),
        ),
        event(
            "response.output_text.done",
            json!({"item_id": "msg_1", "output_index": 1, "content_index": 0, "text": "Hello"}),
        ),
        event(
            "response.content_part.done",
            json!({"item_id": "msg_1", "output_index": 1, "content_index": 0, "part": {"type": "output_text", "text": "Hello"}}),
        ),
        event(
            "response.output_item.done",
            json!({"output_index": 1, "item": {"id": "msg_1", "type": "message", "content": [{"type": "output_text", "text": "Hello"}]}}),
        ),
        event(
            "response.output_item.added",
            json!({"output_index": 2, "item": {"id": "fc_1", "type": "function_call", "status": "in_progress", "call_id": "call_1", "name": "weather", "arguments": ""}}),
        ),
        event(
            "response.function_call_arguments.delta",
            json!({"item_id": "fc_1", "output_index": 2, "delta": "{\"city\":"}),
        ),
        event(
            "response.function_call_arguments.delta",
            json!({"item_id": "fc_1", "output_index": 2, "delta": "\"Paris\"}"}),
        ),
        event(
            "response.function_call_arguments.done",
            json!({"item_id": "fc_1", "output_index": 2, "arguments": "{\"city\":\"Paris\"}"}),
        ),
        event(
            "response.output_item.done",
            json!({"output_index": 2, "item": {"id": "fc_1", "type": "function_call", "call_id": "call_1", "name": "weather", "arguments": "{\"city\":\"Paris\"}"}}),
        ),
        event("response.some_future_event", json!({"x": 1})),
        event(
            "response.completed",
            json!({"response": {"id": "resp_7", "status": "completed", "output": [],
            "usage": {"input_tokens": 40, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 30, "output_tokens_details": {"reasoning_tokens": 12}}}}),
        ),
    ];
    assert_eq!(
        decode_stream(&events),
        vec![
            Event::Start { id: "resp_7".into(), model: "gpt-5".into(), usage: Usage::default() },
            Event::BlockStart { index: 0, block: BlockKind::Thinking },
            Event::ThinkingDelta { index: 0, text: "Think".into() },
            Event::ThinkingDelta { index: 0, text: "\n\n".into() },
            Event::ThinkingDelta { index: 0, text: "More".into() },
            Event::SignatureDelta { index: 0, signature: "rs_1.gAAA".into() },
            Event::BlockStop { index: 0 },
            Event::BlockStart { index: 1, block: BlockKind::Text },
            Event::TextDelta { index: 1, text: "Hel".into() },
            Event::TextDelta { index: 1, text: "lo".into() },
            Event::BlockStop { index: 1 },
            Event::BlockStart {
                index: 2,
                block: BlockKind::ToolCall { id: "call_1".into(), name: "weather".into() }
            },
            Event::ToolArgumentsDelta { index: 2, json: r#"{"city":"#.into() },
            Event::ToolArgumentsDelta { index: 2, json: r#""Paris"}"#.into() },
            Event::BlockStop { index: 2 },
            Event::Finish {
                stop: StopReason::ToolUse,
                stop_sequence: None,
                usage: Usage {
                    input_tokens: 40,
                    output_tokens: 30,
                    reasoning_tokens: 12,
                    ..Usage::default()
                },
            },
        ]
    );
}

#[test]
fn a_provider_stream_that_skips_steps_loses_nothing() {
    // No `created`; text deltas for a part never added; a call whose arguments come only in
    // its `done` event; a message sent whole; the stream cut before `completed`.
    let events = [
        event(
            "response.output_text.delta",
            json!({"output_index": 0, "content_index": 0, "delta": "Hi"}),
        ),
        event(
            "response.output_item.done",
            json!({"output_index": 1, "item": {"type": "function_call", "call_id": "c9", "name": "f", "arguments": "{\"a\":1}"}}),
        ),
        event(
            "response.output_item.done",
            json!({"output_index": 2, "item": {"type": "message", "content": [{"type": "output_text", "text": "Whole"}]}}),
        ),
    ];
    assert_eq!(
        decode_stream(&events),
        vec![
            Event::Start { id: String::new(), model: String::new(), usage: Usage::default() },
            Event::BlockStart { index: 0, block: BlockKind::Text },
            Event::TextDelta { index: 0, text: "Hi".into() },
            Event::BlockStop { index: 0 },
            Event::BlockStart {
                index: 1,
                block: BlockKind::ToolCall { id: "c9".into(), name: "f".into() }
            },
            Event::ToolArgumentsDelta { index: 1, json: r#"{"a":1}"#.into() },
            Event::BlockStop { index: 1 },
            Event::BlockStart { index: 2, block: BlockKind::Text },
            Event::TextDelta { index: 2, text: "Whole".into() },
            Event::BlockStop { index: 2 },
            Event::Finish {
                stop: StopReason::ToolUse,
                stop_sequence: None,
                usage: Usage::default()
            },
        ]
    );
    // The output limit: incomplete, and the usage so far.
    let events = [event(
        "response.incomplete",
        json!({"response": {"status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"}, "usage": {"input_tokens": 5, "output_tokens": 9}}}),
    )];
    assert_eq!(
        decode_stream(&events).last(),
        Some(&Event::Finish {
            stop: StopReason::MaxTokens,
            stop_sequence: None,
            usage: Usage { input_tokens: 5, output_tokens: 9, ..Usage::default() }
        })
    );
}

#[test]
fn reasoning_nobody_asked_to_see_makes_no_thinking_block() {
    let events = [
        event(
            "response.output_item.added",
            json!({"output_index": 0, "item": {"id": "rs_1", "type": "reasoning", "summary": []}}),
        ),
        event(
            "response.output_item.done",
            json!({"output_index": 0, "item": {"id": "rs_1", "type": "reasoning", "summary": []}}),
        ),
        event(
            "response.output_text.delta",
            json!({"output_index": 1, "content_index": 0, "delta": "Hi"}),
        ),
    ];
    let events = decode_stream(&events);
    assert_eq!(events[1], Event::BlockStart { index: 0, block: BlockKind::Text });
    let body = json!({"status": "completed", "output": [{"type": "reasoning", "id": "rs_1", "summary": []}]});
    let response = OpenAiResponses::decode_response(&serde_json::to_vec(&body).unwrap()).unwrap();
    assert!(response.parts.is_empty());
}

#[test]
fn provider_stream_errors_and_garbage() {
    let failed = [event(
        "response.failed",
        json!({"response": {"status": "failed", "error": {"code": "rate_limit_exceeded", "message": "Slow down"}}}),
    )];
    assert_eq!(
        decode_stream(&failed).last(),
        Some(&Event::Error(ApiError {
            status: 429,
            kind: ErrorKind::RateLimit,
            message: "Slow down".into()
        }))
    );
    let error = [event("error", json!({"code": "server_error", "message": "boom", "param": null}))];
    let events = decode_stream(&error);
    assert_eq!(
        events.last(),
        Some(&Event::Error(ApiError { status: 500, kind: ErrorKind::Api, message: "boom".into() }))
    );
    assert!(!events.iter().any(|event| matches!(event, Event::Finish { .. })));
    let mut decoder = OpenAiResponses::stream_decoder();
    let mut out = Vec::new();
    for garbage in [
        &b"{\"type\":"[..],
        b"\xff",
        b"{\"type\":5}",
        b"{\"type\":\"response.output_text.delta\",\"output_index\":\"x\"}",
    ] {
        assert!(
            matches!(decoder.decode(Some("x"), garbage, &mut out), Err(Error::Stream { .. })),
            "{garbage:?}"
        );
    }
    // A megabyte delta is just text.
    let long = "y".repeat(1 << 20);
    decoder
        .decode(
            None,
            &serde_json::to_vec(&json!({"type": "response.output_text.delta", "delta": long}))
                .unwrap(),
            &mut out,
        )
        .unwrap();
    assert_eq!(out.last(), Some(&Event::TextDelta { index: 0, text: long }));
}

fn encode_stream(events: &[Event], origin: Option<Format>) -> Vec<(String, Value)> {
    let mut encoder = OpenAiResponses::stream_encoder();
    if let Some(origin) = origin {
        encoder.set_origin(origin);
    }
    let mut out = Vec::new();
    for event in events {
        encoder.encode(event, &mut out);
    }
    encoder.finish(&mut out);
    frames(&out)
}

#[test]
fn events_encode_as_responses_events_in_the_api_order() {
    let events = [
        Event::Start { id: "msg_01".into(), model: "claude".into(), usage: Usage::default() },
        Event::BlockStart { index: 0, block: BlockKind::Thinking },
        Event::ThinkingDelta { index: 0, text: "Plan".into() },
        // A foreign signature comes wrapped by the stream translator (`Pair::stream`).
        Event::SignatureDelta { index: 0, signature: "cpx1.anthropic.EqRk".into() },
        Event::BlockStop { index: 0 },
        Event::BlockStart { index: 1, block: BlockKind::Text },
        Event::TextDelta { index: 1, text: "Hi".into() },
        Event::BlockStop { index: 1 },
        Event::BlockStart {
            index: 2,
            block: BlockKind::ToolCall { id: "toolu_1".into(), name: "weather".into() },
        },
        Event::ToolArgumentsDelta { index: 2, json: r#"{"city":"Paris"}"#.into() },
        Event::BlockStop { index: 2 },
        Event::Finish {
            stop: StopReason::ToolUse,
            stop_sequence: None,
            usage: Usage { input_tokens: 9, output_tokens: 7, ..Usage::default() },
        },
    ];
    let frames = encode_stream(&events, Some(Format::Anthropic));
    let names: Vec<&str> = frames.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.reasoning_summary_part.added",
            "response.reasoning_summary_text.delta",
            "response.reasoning_summary_text.done",
            "response.reasoning_summary_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    let data = |i: usize| frames[i].1.clone();
    assert_eq!(data(0)["response"]["status"], "in_progress");
    assert_eq!(data(0)["response"]["id"], "msg_01");
    assert_eq!(
        data(7)["item"],
        json!({"type": "reasoning", "id": "rs_0_msg_01", "summary": [{"type": "summary_text", "text": "Plan"}], "encrypted_content": "cpx1.anthropic.EqRk"})
    );
    assert_eq!(
        data(10),
        json!({"type": "response.output_text.delta", "sequence_number": 10, "item_id": "msg_1_msg_01", "output_index": 1, "content_index": 0, "delta": "Hi", "logprobs": []})
    );
    assert_eq!(
        data(14)["item"],
        json!({"type": "function_call", "id": "fc_2_msg_01", "status": "in_progress", "call_id": "toolu_1", "name": "weather", "arguments": ""})
    );
    assert_eq!(
        data(16),
        json!({"type": "response.function_call_arguments.done", "sequence_number": 16, "item_id": "fc_2_msg_01", "output_index": 2, "name": "weather", "arguments": "{\"city\":\"Paris\"}"})
    );
    let completed = data(18)["response"].clone();
    assert_eq!(completed["status"], "completed");
    assert_eq!(completed["output"].as_array().unwrap().len(), 3);
    assert_eq!(completed["output"][1]["content"][0]["text"], "Hi");
    assert_eq!(completed["usage"]["total_tokens"], 16);
}

#[test]
fn limits_and_errors_end_a_client_stream_as_the_api_does() {
    // The prompt reported at the start completes the usage of the end.
    let usage = Usage { input_tokens: 7, cache_read_tokens: 3, ..Usage::default() };
    let start = Event::Start { id: "r".into(), model: "m".into(), usage };
    let frames = encode_stream(
        &[
            start.clone(),
            Event::Finish {
                stop: StopReason::MaxTokens,
                stop_sequence: None,
                usage: Usage { output_tokens: 2, ..Usage::default() },
            },
        ],
        None,
    );
    let (name, data) = frames.last().unwrap();
    assert_eq!(
        (name.as_str(), &data["response"]["incomplete_details"]),
        ("response.incomplete", &json!({"reason": "max_output_tokens"}))
    );
    assert_eq!(
        data["response"]["usage"],
        json!({"input_tokens": 7, "input_tokens_details": {"cached_tokens": 3}, "output_tokens": 2,
            "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 9})
    );
    let error = ApiError { status: 429, kind: ErrorKind::RateLimit, message: "Slow down".into() };
    let frames = encode_stream(
        &[start, Event::Error(error), Event::TextDelta { index: 0, text: "late".into() }],
        None,
    );
    let names: Vec<&str> = frames.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ["response.created", "response.in_progress", "error", "response.failed"]);
    assert_eq!(frames[2].1["code"], "rate_limit_exceeded");
    assert_eq!(
        frames[3].1["response"]["error"],
        json!({"code": "rate_limit_exceeded", "message": "Slow down"})
    );
    // A call streamed without arguments and a delta for a block never opened: `{}` and
    // the lost call's arguments are both there.
    let frames = encode_stream(
        &[
            Event::BlockStart {
                index: 0,
                block: BlockKind::ToolCall { id: "t".into(), name: "now".into() },
            },
            Event::BlockStop { index: 0 },
            Event::ToolArgumentsDelta { index: 1, json: "{\"x\":1}".into() },
            Event::Finish {
                stop: StopReason::ToolUse,
                stop_sequence: None,
                usage: Usage::default(),
            },
        ],
        None,
    );
    let completed = &frames.last().unwrap().1["response"]["output"];
    assert_eq!(completed[0]["arguments"], "{}");
    assert_eq!(completed[1]["arguments"], "{\"x\":1}");
}

/// Feeds a provider's frames through a pair's translator and returns the client's bytes.
fn translate(pair: Pair, frames: &[(Option<&str>, &str)]) -> Vec<u8> {
    let mut stream = pair.stream();
    let mut out = Vec::new();
    for (name, data) in frames {
        stream.feed(*name, data.as_bytes(), &mut out).unwrap();
    }
    stream.finish(&mut out);
    out
}

#[test]
fn a_chat_provider_streams_to_a_responses_client() {
    let out = translate(
        Pair::new(Format::OpenAiResponses, Format::OpenAiChat),
        &[
            (
                None,
                r#"{"id":"c1","model":"gpt-4o","choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"}}]}"#,
            ),
            (
                None,
                r#"{"id":"c1","model":"gpt-4o","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"a\""}}]}}]}"#,
            ),
            (
                None,
                r#"{"id":"c1","model":"gpt-4o","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":":1}"}}]}}]}"#,
            ),
            (
                None,
                r#"{"id":"c1","model":"gpt-4o","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
            ),
            (
                None,
                r#"{"id":"c1","model":"gpt-4o","choices":[],"usage":{"prompt_tokens":4,"completion_tokens":6}}"#,
            ),
            (None, "[DONE]"),
        ],
    );
    let frames = frames(&out);
    let (name, data) = frames.last().unwrap();
    assert_eq!(name, "response.completed");
    let output = &data["response"]["output"];
    assert_eq!(output[0]["content"][0]["text"], "Hi");
    assert_eq!(
        (output[1]["call_id"].as_str(), output[1]["arguments"].as_str()),
        (Some("call_1"), Some("{\"a\":1}"))
    );
    assert_eq!(data["response"]["usage"]["total_tokens"], 10);
}

#[test]
fn a_responses_provider_streams_to_a_chat_client() {
    let pair = Pair::new(Format::OpenAiChat, Format::OpenAiResponses);
    let out = translate(
        pair,
        &[
            (
                Some("response.created"),
                r#"{"type":"response.created","sequence_number":0,"response":{"id":"resp_1","model":"gpt-5","status":"in_progress","output":[]}}"#,
            ),
            (
                Some("response.output_item.added"),
                r#"{"type":"response.output_item.added","output_index":0,"item":{"id":"fc_1","type":"function_call","call_id":"call_9","name":"f","arguments":""}}"#,
            ),
            (
                Some("response.function_call_arguments.delta"),
                r#"{"type":"response.function_call_arguments.delta","output_index":0,"delta":"{}"}"#,
            ),
            (
                Some("response.output_item.done"),
                r#"{"type":"response.output_item.done","output_index":0,"item":{"id":"fc_1","type":"function_call","call_id":"call_9","name":"f","arguments":"{}"}}"#,
            ),
            (
                Some("response.completed"),
                r#"{"type":"response.completed","response":{"status":"completed","usage":{"input_tokens":3,"output_tokens":2}}}"#,
            ),
        ],
    );
    let text = String::from_utf8(out).unwrap();
    assert!(text.starts_with("data: {\"id\":\"resp_1\""), "{text}");
    assert!(text.contains(r#""tool_calls":[{"index":0,"id":"call_9","type":"function","function":{"name":"f","arguments":""}}]"#));
    assert!(text.contains(r#""finish_reason":"tool_calls""#));
    assert!(text.contains(r#""usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5"#));
    assert!(text.ends_with("data: [DONE]\n\n"));
}

#[test]
fn a_request_keeps_every_shared_field_from_chat_to_responses_and_back() {
    let chat = json!({
        "model": "gpt-5",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}]},
            {"role": "assistant", "content": "Calling.", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "done"}
        ],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": schema(), "strict": true}}],
        "tool_choice": "required", "parallel_tool_calls": false, "max_completion_tokens": 99,
        "temperature": 0.1, "top_p": 0.2, "stream": true,
        "response_format": {"type": "json_object"}, "reasoning_effort": "high"
    });
    let original = OpenAiChat::decode_request(&serde_json::to_vec(&chat).unwrap()).unwrap();
    let upstream =
        Pair::new(Format::OpenAiChat, Format::OpenAiResponses).encode_request(&original).unwrap();
    let back = OpenAiResponses::decode_request(&upstream).unwrap();
    assert_eq!(back, original);
    let again = OpenAiChat::decode_request(&OpenAiChat::encode_request(&back).unwrap()).unwrap();
    assert_eq!(again, original);
}

#[test]
fn whole_replies_and_errors_translate_between_the_two_apis() {
    let pair = Pair::new(Format::OpenAiChat, Format::OpenAiResponses);
    let reply = json!({"id": "resp_1", "status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"}, "model": "gpt-5",
        "output": [{"type": "message", "content": [{"type": "output_text", "text": "Cut"}]}],
        "usage": {"input_tokens": 10, "input_tokens_details": {"cached_tokens": 8}, "output_tokens": 5}});
    let body: Value =
        serde_json::from_slice(&pair.response(&serde_json::to_vec(&reply).unwrap()).unwrap())
            .unwrap();
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    assert_eq!(body["choices"][0]["message"]["content"], "Cut");
    assert_eq!(body["usage"]["prompt_tokens_details"]["cached_tokens"], 8);
    let (status, body) = pair.error(404, br#"{"error":{"message":"The model `x` does not exist","type":"invalid_request_error","param":"model","code":"model_not_found"}}"#);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((status, body["error"]["type"].as_str()), (404, Some("not_found_error")));
    assert_eq!(body["error"]["message"], "The model `x` does not exist");
}

#[test]
fn a_request_keeps_every_shared_field_from_responses_to_chat_and_back() {
    let responses = json!({
        "model": "gpt-5",
        "instructions": "Be brief.",
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "Hi"}, {"type": "input_image", "image_url": "https://x.test/a.png"}]},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Calling."}]},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{\"a\":1}"},
            {"type": "function_call", "call_id": "c2", "name": "f", "arguments": "{\"a\":2}"},
            {"type": "function_call_output", "call_id": "c1", "output": "one"},
            {"type": "function_call_output", "call_id": "c2", "output": "two"}
        ],
        "tools": [{"type": "function", "name": "f", "description": "d", "parameters": schema(), "strict": false}],
        "tool_choice": "none", "parallel_tool_calls": true, "max_output_tokens": 64,
        "temperature": 0.7, "top_p": 0.5, "stream": false,
        "text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "object"}, "strict": false}},
        "reasoning": {"effort": "minimal"}
    });
    let original = decode(&responses).unwrap();
    let upstream =
        Pair::new(Format::OpenAiResponses, Format::OpenAiChat).encode_request(&original).unwrap();
    assert_eq!(OpenAiChat::decode_request(&upstream).unwrap(), original);
}

#[test]
fn every_tool_choice_encodes_for_the_responses_api() {
    let tool =
        Tool { name: "f".into(), description: None, parameters: json!({}), strict: Some(true) };
    let mut request = Request { model: "m".into(), tools: vec![tool], ..Request::default() };
    for (choice, wire) in [
        (ToolChoice::Auto, json!("auto")),
        (ToolChoice::None, json!("none")),
        (ToolChoice::Required, json!("required")),
        (ToolChoice::Named("f".into()), json!({"type": "function", "name": "f"})),
    ] {
        request.tool_choice = Some(choice);
        let body = encode(&request);
        assert_eq!(body["tool_choice"], wire);
        assert_eq!(body["tools"][0]["strict"], true);
    }
    // Nesting past serde_json's recursion limit is refused, not a stack overflow.
    let deep = format!(r#"{{"model":"m","input":{}{}}}"#, "[".repeat(50_000), "]".repeat(50_000));
    assert!(
        matches!(OpenAiResponses::decode_request(deep.as_bytes()), Err(Error::Invalid { field, .. }) if field == "body")
    );
}

/// Every prefix of real-shaped bodies and events, and each with one byte changed: the
/// decoders answer (an error or a value), they never panic. A cheap stand-in, in the unit
/// tests, for the fuzz targets.
#[test]
fn cut_and_corrupted_input_never_panics() {
    let chat = br#"{"model":"m","messages":[{"role":"system","content":"s"},{"role":"user","content":[{"type":"text","text":"a"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AA=="}}]},{"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]},{"role":"tool","tool_call_id":"c","content":"r"}],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],"tool_choice":{"type":"function","function":{"name":"f"}},"stop":["x"],"response_format":{"type":"json_schema","json_schema":{"name":"n","schema":{}}},"n":2}"#;
    let responses = br#"{"model":"m","instructions":"i","input":[{"type":"reasoning","id":"rs","summary":[{"type":"summary_text","text":"t"}],"encrypted_content":"cpx1.anthropic.s"},{"role":"user","content":[{"type":"input_text","text":"a"},{"type":"input_image","image_url":"https://x"}]},{"type":"function_call","call_id":"c","name":"f","arguments":"{}"},{"type":"function_call_output","call_id":"c","output":[{"type":"input_text","text":"r"}]}],"tools":[{"type":"function","name":"f"},{"type":"web_search"}],"text":{"format":{"type":"json_schema","name":"n","schema":{}}},"reasoning":{"effort":"low"}}"#;
    let chunk = br#"{"id":"c","model":"m","choices":[{"index":0,"delta":{"content":"a","tool_calls":[{"index":0,"id":"t","function":{"name":"f","arguments":"{}"}}]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":1,"prompt_tokens_details":{"cached_tokens":1}}}"#;
    let event = br#"{"type":"response.output_item.done","output_index":0,"item":{"type":"reasoning","id":"rs","summary":[{"type":"summary_text","text":"t"}],"encrypted_content":"e"}}"#;
    let variants = |body: &[u8]| {
        let mut all: Vec<Vec<u8>> = (0..body.len()).map(|end| body[..end].to_vec()).collect();
        for at in 0..body.len() {
            for byte in [b'"', b'{', b']', 0xff, b'0'] {
                let mut changed = body.to_vec();
                changed[at] = byte;
                all.push(changed);
            }
        }
        all
    };
    for body in variants(chat) {
        if let Ok(request) = OpenAiChat::decode_request(&body) {
            let _ = OpenAiResponses::encode_request(&request);
            let _ = OpenAiChat::encode_request(&request);
        }
        let _ = OpenAiChat::decode_response(&body);
    }
    for body in variants(responses) {
        if let Ok(request) = OpenAiResponses::decode_request(&body) {
            let _ = OpenAiChat::encode_request(&request);
            let _ = OpenAiResponses::encode_request(&request);
        }
        let _ = OpenAiResponses::decode_response(&body);
    }
    for (pair, data) in [
        (Pair::new(Format::OpenAiResponses, Format::OpenAiChat), &chunk[..]),
        (Pair::new(Format::OpenAiChat, Format::OpenAiResponses), &event[..]),
    ] {
        for body in variants(data) {
            let mut stream = pair.stream();
            let mut out = Vec::new();
            let _ = stream.feed(Some("response.output_item.done"), &body, &mut out);
            stream.finish(&mut out);
            assert!(!out.is_empty(), "a finished stream always says how it ended");
        }
    }
}

#[test]
fn an_error_without_an_openai_code_is_named_by_its_type() {
    let error = ApiError { status: 400, kind: ErrorKind::InvalidRequest, message: "bad".into() };
    let frames = encode_stream(&[Event::Error(error)], None);
    assert_eq!(frames[2].1["code"], "invalid_request_error");
    assert_eq!(frames[3].1["response"]["error"]["code"], "invalid_request_error");
    assert_eq!(frames[3].1["response"]["status"], "failed");
}
