//! The Anthropic codec against real-shaped bodies and streams.

use serde_json::{Value, json};

use super::Anthropic;
use crate::Format;
use crate::codec::Codec;
use crate::error::Error;
use crate::ir::*;

fn body(value: Value) -> Vec<u8> {
    serde_json::to_vec(&value).unwrap()
}

fn decode(value: Value) -> Result<Request, Error> {
    Anthropic::decode_request(&body(value))
}

fn encode(request: &Request) -> Value {
    serde_json::from_slice(&Anthropic::encode_request(request).unwrap()).unwrap()
}

fn thinking(text: &str, signature: Option<&str>, origin: Format) -> Part {
    Part::Thinking(Thinking {
        text: text.to_owned(),
        signature: signature.map(str::to_owned),
        redacted: None,
        origin: Some(origin),
    })
}

/// A request using every feature the common form carries.
fn full_request_json() -> Value {
    json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 2048,
        "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}},
                   {"type": "text", "text": "Use tools."}],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "Weather here?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}}
            ]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "Look it up.", "signature": "sigA"},
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_2", "name": "time", "input": {}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": true,
                 "content": [{"type": "text", "text": "clock broken"}]}
            ]},
            {"role": "assistant", "content": "Done?"}
        ],
        "tools": [
            {"name": "weather", "description": "Weather by city",
             "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
             "cache_control": {"type": "ephemeral"}},
            {"name": "time", "input_schema": {"type": "object", "properties": {}}}
        ],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
        "temperature": 0.5, "top_p": 0.9, "top_k": 40,
        "stop_sequences": ["END"],
        "stream": true,
        "thinking": {"type": "enabled", "budget_tokens": 1500},
        "metadata": {"user_id": "u1"}
    })
}

fn full_request() -> Request {
    Request {
        model: "claude-sonnet-4-5".to_owned(),
        system: vec![
            SystemPart { developer: false, text: "Be brief.".to_owned() },
            SystemPart { developer: false, text: "Use tools.".to_owned() },
        ],
        messages: vec![
            Message {
                role: Role::User,
                parts: vec![
                    Part::Text("Weather here?".to_owned()),
                    Part::Image(Image::Base64 {
                        media_type: "image/png".to_owned(),
                        data: "iVBORw0KGgo=".to_owned(),
                    }),
                    Part::Image(Image::Url {
                        url: "https://example.com/a.jpg".to_owned(),
                        media_type: None,
                    }),
                ],
            },
            Message {
                role: Role::Assistant,
                parts: vec![
                    thinking("Look it up.", Some("sigA"), Format::Anthropic),
                    Part::Text("Checking.".to_owned()),
                    Part::ToolCall(ToolCall {
                        id: "toolu_1".to_owned(),
                        name: "weather".to_owned(),
                        arguments: r#"{"city":"Paris"}"#.to_owned(),
                    }),
                    Part::ToolCall(ToolCall {
                        id: "toolu_2".to_owned(),
                        name: "time".to_owned(),
                        arguments: "{}".to_owned(),
                    }),
                ],
            },
            Message {
                role: Role::User,
                parts: vec![
                    Part::ToolResult(ToolResult {
                        call_id: "toolu_1".to_owned(),
                        name: None,
                        content: vec![ToolResultPart::Text("18C".to_owned())],
                        is_error: false,
                    }),
                    Part::ToolResult(ToolResult {
                        call_id: "toolu_2".to_owned(),
                        name: None,
                        content: vec![ToolResultPart::Text("clock broken".to_owned())],
                        is_error: true,
                    }),
                ],
            },
            Message { role: Role::Assistant, parts: vec![Part::Text("Done?".to_owned())] },
        ],
        tools: vec![
            Tool {
                name: "weather".to_owned(),
                description: Some("Weather by city".to_owned()),
                parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
                strict: None,
            },
            Tool {
                name: "time".to_owned(),
                description: None,
                parameters: json!({"type": "object", "properties": {}}),
                strict: None,
            },
        ],
        tool_choice: Some(ToolChoice::Required),
        parallel_tool_calls: Some(false),
        max_tokens: Some(2048),
        sampling: Sampling {
            temperature: Some(0.5),
            top_p: Some(0.9),
            top_k: Some(40),
            ..Sampling::default()
        },
        stop: vec!["END".to_owned()],
        stream: true,
        output: None,
        reasoning: Some(Reasoning::Budget(1500)),
        unmapped: Vec::new(),
    }
}

#[test]
fn a_full_request_decodes_to_the_common_form() {
    assert_eq!(decode(full_request_json()).unwrap(), full_request());
}

#[test]
fn a_full_request_encodes_to_what_the_api_takes() {
    let mut expected = full_request_json();
    // Dropped on the way in: cache_control and metadata.
    expected["system"] =
        json!([{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Use tools."}]);
    expected["tools"][0].as_object_mut().unwrap().remove("cache_control");
    expected.as_object_mut().unwrap().remove("metadata");
    // A single text result is written in its short form; the error's one text block too.
    expected["messages"][2]["content"][1]["content"] = json!("clock broken");
    expected["messages"][3]["content"] = json!([{"type": "text", "text": "Done?"}]);
    assert_eq!(encode(&full_request()), expected);
}

#[test]
fn tool_choice_each_kind_both_ways() {
    for (wire, choice) in [
        (json!({"type": "auto"}), ToolChoice::Auto),
        (json!({"type": "any"}), ToolChoice::Required),
        (json!({"type": "none"}), ToolChoice::None),
        (json!({"type": "tool", "name": "weather"}), ToolChoice::Named("weather".to_owned())),
    ] {
        let mut request = full_request_json();
        request["tool_choice"] = wire.clone();
        let decoded = decode(request).unwrap();
        assert_eq!(decoded.tool_choice, Some(choice.clone()));
        assert_eq!(decoded.parallel_tool_calls, None);
        let mut ir = full_request();
        ir.tool_choice = Some(choice);
        ir.parallel_tool_calls = None;
        assert_eq!(encode(&ir)["tool_choice"], wire);
    }
    // Parallel calls forbidden without a choice: auto with the flag.
    let mut ir = full_request();
    ir.tool_choice = None;
    assert_eq!(
        encode(&ir)["tool_choice"],
        json!({"type": "auto", "disable_parallel_tool_use": true})
    );
    // No tools: no tool_choice at all (Anthropic refuses one alone).
    ir.tools.clear();
    ir.tool_choice = Some(ToolChoice::None);
    assert_eq!(encode(&ir).get("tool_choice"), None);
}

#[test]
fn system_as_a_string_and_developer_parts_fold_into_system() {
    let mut request = full_request_json();
    request["system"] = json!("Be brief.");
    assert_eq!(
        decode(request).unwrap().system,
        vec![SystemPart { developer: false, text: "Be brief.".to_owned() }]
    );
    let mut ir = full_request();
    ir.system = vec![SystemPart { developer: true, text: "Dev says.".to_owned() }];
    assert_eq!(encode(&ir)["system"], json!("Dev says."));
}

#[test]
fn claude_code_s_system_turns_join_the_system_prompt_and_context_management_is_dropped() {
    // What Claude Code 2.1 sends: context as system-role turns, and `context_management`
    // whenever thinking is on.
    let request = decode(json!({
        "model": "m", "max_tokens": 100, "system": [{"type": "text", "text": "You are Claude Code."}],
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "system", "content": [{"type": "text", "text": "# Environment\ncwd: /w"}]},
            {"role": "system", "content": "Reminder."}
        ],
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]}
    }))
    .unwrap();
    let system: Vec<&str> = request.system.iter().map(|part| part.text.as_str()).collect();
    assert_eq!(system, ["You are Claude Code.", "# Environment\ncwd: /w", "Reminder."]);
    assert_eq!(request.messages.len(), 1);
    assert!(request.unmapped.is_empty(), "{:?}", request.unmapped);
    // A system turn holds text only.
    let error = decode(json!({"model": "m", "max_tokens": 1, "messages": [
        {"role": "system", "content": [{"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}]}
    ]}))
    .unwrap_err();
    assert!(error.to_string().contains("messages[0].content[0].type"), "{error}");
    let error = decode(
        json!({"model": "m", "max_tokens": 1, "messages": [{"role": "tool", "content": "x"}]}),
    )
    .unwrap_err();
    assert!(error.to_string().contains("messages[0].role"), "{error}");
}

#[test]
fn max_tokens_is_required_from_clients_and_defaulted_for_providers() {
    let mut request = full_request_json();
    request.as_object_mut().unwrap().remove("max_tokens");
    let error = decode(request).unwrap_err();
    assert!(matches!(&error, Error::Invalid { field, .. } if field == "max_tokens"), "{error}");
    let mut ir = full_request();
    ir.max_tokens = None;
    ir.reasoning = None;
    assert_eq!(encode(&ir)["max_tokens"], DEFAULT_MAX_TOKENS);
}

#[test]
fn reasoning_maps_to_thinking_with_a_budget_that_fits() {
    let mut ir = full_request();
    // An effort is adaptive thinking at that effort, with room for the answer.
    ir.reasoning = Some(Reasoning::Effort(Effort::Medium));
    ir.max_tokens = None;
    let out = encode(&ir);
    assert_eq!(out["thinking"], json!({"type": "adaptive"}));
    assert_eq!(out["output_config"], json!({"effort": "medium"}));
    assert_eq!(out["max_tokens"], 8192 + DEFAULT_MAX_TOKENS);
    // A budget is a fixed budget, with room for the answer.
    ir.reasoning = Some(Reasoning::Budget(24576));
    let out = encode(&ir);
    assert_eq!(out["thinking"], json!({"type": "enabled", "budget_tokens": 24576}));
    assert_eq!(out["max_tokens"], 24576 + DEFAULT_MAX_TOKENS);
    assert_eq!(out.get("output_config"), None);
    // A budget above the client's limit is cut below it.
    ir.max_tokens = Some(8000);
    assert_eq!(encode(&ir)["thinking"], json!({"type": "enabled", "budget_tokens": 7999}));
    // Below Anthropic's minimum, the minimum.
    ir.reasoning = Some(Reasoning::Budget(10));
    assert_eq!(encode(&ir)["thinking"], json!({"type": "enabled", "budget_tokens": 1024}));
    ir.reasoning = Some(Reasoning::Off);
    assert_eq!(encode(&ir)["thinking"], json!({"type": "disabled"}));
    let mut request = full_request_json();
    request["thinking"] = json!({"type": "disabled"});
    assert_eq!(decode(request).unwrap().reasoning, Some(Reasoning::Off));
    // Adaptive thinking reads its effort from output_config (high by default).
    for (config, effort) in [
        (json!({"effort": "low"}), Effort::Low),
        (json!({"effort": "max"}), Effort::High),
        (json!({}), Effort::High),
    ] {
        let mut request = full_request_json();
        request["thinking"] = json!({"type": "adaptive"});
        request["output_config"] = config;
        let decoded = decode(request).unwrap();
        assert_eq!(
            (decoded.reasoning, decoded.unmapped),
            (Some(Reasoning::Effort(effort)), vec![])
        );
    }
    // Effort without adaptive thinking bounds the whole reply: no other format says that.
    let mut request = full_request_json();
    request["output_config"] = json!({"effort": "low"});
    assert_eq!(
        decode(request).unwrap().unmapped,
        vec![("output_config.effort".to_owned(), json!("low"))]
    );
}

#[test]
fn thinking_of_another_provider_is_dropped_and_wrapped_signatures_come_back_with_their_origin() {
    let mut request = full_request_json();
    request["messages"][1]["content"][0]["signature"] = json!("cpx1.gemini.g-sig");
    let decoded = decode(request).unwrap();
    assert_eq!(
        decoded.messages[1].parts[0],
        thinking("Look it up.", Some("g-sig"), Format::Gemini)
    );
    // Encoding for Anthropic drops the Gemini block, keeps the rest of the turn.
    let out = encode(&decoded);
    assert_eq!(out["messages"][1]["content"][0], json!({"type": "text", "text": "Checking."}));
    // A turn holding only foreign reasoning disappears rather than being sent empty.
    let mut ir = full_request();
    ir.messages[3].parts = vec![thinking("x", Some("s"), Format::OpenAiResponses)];
    assert_eq!(encode(&ir)["messages"].as_array().unwrap().len(), 3);
    // Redacted thinking round-trips.
    let mut request = full_request_json();
    request["messages"][1]["content"][0] = json!({"type": "redacted_thinking", "data": "opaque"});
    let decoded = decode(request).unwrap();
    assert_eq!(
        encode(&decoded)["messages"][1]["content"][0],
        json!({"type": "redacted_thinking", "data": "opaque"})
    );
}

#[test]
fn what_anthropic_cannot_say_is_refused_by_name() {
    let mut ir = full_request();
    ir.output = Some(OutputFormat::JsonObject);
    assert_eq!(
        Anthropic::encode_request(&ir),
        Err(Error::unsupported("response_format", Format::Anthropic))
    );
    for (field, set) in [
        (
            "presence_penalty",
            (|s: &mut Sampling| s.presence_penalty = Some(0.1)) as fn(&mut Sampling),
        ),
        ("frequency_penalty", |s: &mut Sampling| s.frequency_penalty = Some(0.1)),
        ("seed", |s: &mut Sampling| s.seed = Some(1)),
    ] {
        let mut ir = full_request();
        set(&mut ir.sampling);
        assert_eq!(
            Anthropic::encode_request(&ir),
            Err(Error::unsupported(field, Format::Anthropic))
        );
    }
    let mut ir = full_request();
    ir.unmapped.push(("logprobs".to_owned(), json!(true)));
    assert_eq!(
        Anthropic::encode_request(&ir),
        Err(Error::unsupported("logprobs", Format::Anthropic))
    );
    // Malformed arguments of another format's call are an error, never `{}`.
    let mut ir = full_request();
    ir.messages[1].parts[2] = Part::ToolCall(ToolCall {
        id: "c".to_owned(),
        name: "weather".to_owned(),
        arguments: "{\"city\":".to_owned(),
    });
    let error = Anthropic::encode_request(&ir).unwrap_err();
    assert!(
        matches!(&error, Error::Invalid { field, .. } if field == "messages[1].content[2].arguments"),
        "{error}"
    );
}

#[test]
fn anthropic_only_features_become_unmapped_by_name() {
    let mut request = full_request_json();
    request["tools"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "web_search_20250305", "name": "web_search"}));
    request["messages"][0]["content"].as_array_mut().unwrap().push(
        json!({"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"}}),
    );
    request["messages"][0]["content"].as_array_mut().unwrap().push(
        json!({"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "plain doc"}}),
    );
    request["container"] = json!("c1");
    let decoded = decode(request).unwrap();
    let names: Vec<&str> = decoded.unmapped.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ["messages[0].content[3]", "tools[2]", "container"]);
    assert_eq!(decoded.messages[0].parts.last(), Some(&Part::Text("plain doc".to_owned())));
    assert_eq!(decoded.tools.len(), 2);
}

#[test]
fn structured_output_of_an_anthropic_client_is_read() {
    let schema = json!({"type": "object", "properties": {"a": {"type": "string"}}});
    for key in ["output_format", "output_config"] {
        let mut request = full_request_json();
        request[key] = if key == "output_format" {
            json!({"type": "json_schema", "schema": schema})
        } else {
            json!({"format": {"type": "json_schema", "schema": schema}})
        };
        assert_eq!(
            decode(request).unwrap().output,
            Some(OutputFormat::JsonSchema {
                name: "output".to_owned(),
                schema: schema.clone(),
                strict: Some(true)
            })
        );
    }
}

#[test]
fn malformed_requests_name_the_field() {
    let cases = [
        (json!({"max_tokens": 1, "messages": []}), "model"),
        (json!({"model": "m", "max_tokens": "many", "messages": []}), "max_tokens"),
        (json!({"model": "m", "max_tokens": 1}), "messages"),
        (
            json!({"model": "m", "max_tokens": 1, "messages": [{"role": "tool", "content": "x"}]}),
            "messages[0].role",
        ),
        (
            json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": 5}]}),
            "messages[0].content",
        ),
        (
            json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}),
            "messages[0].content[0].text",
        ),
        (
            json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": [{"type": "tool_use", "name": "x"}]}]}),
            "messages[0].content[0].id",
        ),
        (
            json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text", "text": []}]}]}]}),
            "messages[0].content[0].content[0].text",
        ),
        (
            json!({"model": "m", "max_tokens": 1, "messages": [], "tools": [{"name": "t"}]}),
            "tools[0].input_schema",
        ),
        (
            json!({"model": "m", "max_tokens": 1, "messages": [], "tool_choice": {"type": "maybe"}}),
            "tool_choice.type",
        ),
        (
            json!({"model": "m", "max_tokens": 1, "messages": [], "thinking": {"type": "enabled"}}),
            "thinking.budget_tokens",
        ),
        (
            json!({"model": "m", "max_tokens": 1, "messages": [], "system": [{"type": "image"}]}),
            "system[0].type",
        ),
    ];
    for (request, field) in cases {
        match decode(request.clone()) {
            Err(Error::Invalid { field: got, .. }) => assert_eq!(got, field, "{request}"),
            other => panic!("{request}: {other:?}"),
        }
    }
}

#[test]
fn hostile_bodies_are_errors_not_panics() {
    for bad in [
        &b""[..],
        b"{",
        b"[]",
        b"null",
        b"\xff\xfe{}",
        br#"{"model":"m","max_tokens":1,"messages":[{"role":"user","content":"\xff"}]}"#,
    ] {
        assert!(matches!(Anthropic::decode_request(bad), Err(Error::Invalid { .. })), "{bad:?}");
    }
    // Nesting beyond serde_json's recursion limit.
    let deep = format!(
        r#"{{"model":"m","max_tokens":1,"messages":{}{}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    assert!(matches!(Anthropic::decode_request(deep.as_bytes()), Err(Error::Invalid { .. })));
    // A megabyte of text passes through untouched.
    let big = "x".repeat(1 << 20);
    let decoded = decode(
        json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": big}]}),
    )
    .unwrap();
    assert_eq!(decoded.messages[0].parts[0], Part::Text(big));
    // A huge tool input inside a deeply nested schema is still just data.
    let mut schema = json!({"type": "string"});
    for _ in 0..100 {
        schema = json!({"type": "array", "items": schema});
    }
    let decoded = decode(
        json!({"model": "m", "max_tokens": 1, "messages": [], "tools": [{"name": "t", "input_schema": schema}]}),
    );
    assert!(decoded.is_ok());
}

fn response_json() -> Value {
    json!({
        "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [
            {"type": "thinking", "thinking": "Hmm.", "signature": "sig1"},
            {"type": "text", "text": "Calling.", "citations": null},
            {"type": "tool_use", "id": "toolu_9", "name": "weather", "input": {"city": "Oslo"}}
        ],
        "stop_reason": "tool_use", "stop_sequence": null,
        "usage": {"input_tokens": 10, "output_tokens": 20, "cache_creation_input_tokens": 5, "cache_read_input_tokens": 100}
    })
}

fn response_ir() -> Response {
    Response {
        id: "msg_01".to_owned(),
        model: "claude-sonnet-4-5".to_owned(),
        parts: vec![
            thinking("Hmm.", Some("sig1"), Format::Anthropic),
            Part::Text("Calling.".to_owned()),
            Part::ToolCall(ToolCall {
                id: "toolu_9".to_owned(),
                name: "weather".to_owned(),
                arguments: r#"{"city":"Oslo"}"#.to_owned(),
            }),
        ],
        stop: StopReason::ToolUse,
        stop_sequence: None,
        usage: Usage {
            input_tokens: 115,
            output_tokens: 20,
            cache_read_tokens: 100,
            cache_write_tokens: 5,
            reasoning_tokens: 0,
        },
    }
}

#[test]
fn a_reply_decodes_with_usage_including_the_cache() {
    assert_eq!(Anthropic::decode_response(&body(response_json())).unwrap(), response_ir());
}

#[test]
fn a_reply_encodes_with_usage_excluding_the_cache() {
    let mut expected = response_json();
    expected["content"][1].as_object_mut().unwrap().remove("citations");
    let out: Value =
        serde_json::from_slice(&Anthropic::encode_response(&response_ir()).unwrap()).unwrap();
    assert_eq!(out, expected);
}

#[test]
fn a_reply_of_another_provider_wraps_its_signature_and_drops_its_redacted_data() {
    let mut ir = response_ir();
    ir.parts[0] = thinking("Hmm.", Some("gsig"), Format::Gemini);
    ir.parts.push(Part::Thinking(Thinking {
        text: String::new(),
        signature: None,
        redacted: Some("x".to_owned()),
        origin: Some(Format::OpenAiResponses),
    }));
    ir.parts.push(thinking("summary", None, Format::OpenAiResponses));
    let out: Value = serde_json::from_slice(&Anthropic::encode_response(&ir).unwrap()).unwrap();
    assert_eq!(
        out["content"][0],
        json!({"type": "thinking", "thinking": "Hmm.", "signature": "cpx1.gemini.gsig"})
    );
    assert_eq!(
        out["content"][3],
        json!({"type": "thinking", "thinking": "summary", "signature": ""})
    );
    assert_eq!(out["content"].as_array().unwrap().len(), 4);
}

#[test]
fn every_stop_reason_maps_both_ways() {
    for (name, stop) in [
        ("end_turn", StopReason::EndTurn),
        ("max_tokens", StopReason::MaxTokens),
        ("stop_sequence", StopReason::StopSequence),
        ("tool_use", StopReason::ToolUse),
        ("refusal", StopReason::ContentFilter),
        ("pause_turn", StopReason::Other("pause_turn".to_owned())),
    ] {
        let mut reply = response_json();
        reply["stop_reason"] = json!(name);
        let decoded = Anthropic::decode_response(&body(reply)).unwrap();
        assert_eq!(decoded.stop, stop);
        let out: Value =
            serde_json::from_slice(&Anthropic::encode_response(&decoded).unwrap()).unwrap();
        assert_eq!(out["stop_reason"], name);
    }
    let mut ir = response_ir();
    ir.stop = StopReason::Other("MALFORMED_FUNCTION_CALL".to_owned());
    let out: Value = serde_json::from_slice(&Anthropic::encode_response(&ir).unwrap()).unwrap();
    assert_eq!(out["stop_reason"], "end_turn");
    ir.stop = StopReason::StopSequence;
    ir.stop_sequence = Some("END".to_owned());
    let out: Value = serde_json::from_slice(&Anthropic::encode_response(&ir).unwrap()).unwrap();
    assert_eq!(
        (&out["stop_reason"], &out["stop_sequence"]),
        (&json!("stop_sequence"), &json!("END"))
    );
}

#[test]
fn errors_map_both_ways() {
    for (status, name, kind) in [
        (400, "invalid_request_error", ErrorKind::InvalidRequest),
        (401, "authentication_error", ErrorKind::Authentication),
        (403, "permission_error", ErrorKind::Permission),
        (404, "not_found_error", ErrorKind::NotFound),
        (413, "request_too_large", ErrorKind::RequestTooLarge),
        (429, "rate_limit_error", ErrorKind::RateLimit),
        (500, "api_error", ErrorKind::Api),
        (529, "overloaded_error", ErrorKind::Overloaded),
    ] {
        let wire = json!({"type": "error", "error": {"type": name, "message": "boom"}});
        let error = Anthropic::decode_error(status, &body(wire.clone()));
        assert_eq!(error, ApiError { status, kind, message: "boom".to_owned() });
        assert_eq!(
            serde_json::from_slice::<Value>(&Anthropic::encode_error(&error)).unwrap(),
            wire
        );
    }
    // A body that is not Anthropic's shape keeps its text, cut short.
    let page = format!("<html>{}</html>", "x".repeat(5000));
    let error = Anthropic::decode_error(502, page.as_bytes());
    assert_eq!(error.kind, ErrorKind::Api);
    assert!(error.message.starts_with("<html>") && error.message.len() < 400, "{}", error.message);
}

/// Feeds (event name, data) pairs to a decoder, then ends the stream.
fn decode_stream(events: &[(&str, Value)]) -> Vec<Event> {
    let mut decoder = Anthropic::stream_decoder();
    let mut out = Vec::new();
    for (name, data) in events {
        decoder.decode(Some(name), &body(data.clone()), &mut out).unwrap();
    }
    decoder.finish(&mut out);
    out
}

fn provider_stream() -> Vec<(&'static str, Value)> {
    vec![
        (
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x", "content": [], "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 10, "cache_read_input_tokens": 90, "cache_creation_input_tokens": 0, "output_tokens": 1}}}),
        ),
        ("ping", json!({"type": "ping"})),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Plan."}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "sigZ"}}),
        ),
        ("content_block_stop", json!({"type": "content_block_stop", "index": 0})),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Hi"}}),
        ),
        ("content_block_stop", json!({"type": "content_block_stop", "index": 1})),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {}}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "{\"city\":"}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "\"Oslo\"}"}}),
        ),
        ("content_block_stop", json!({"type": "content_block_stop", "index": 2})),
        (
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"output_tokens": 42}}),
        ),
        ("message_stop", json!({"type": "message_stop"})),
    ]
}

fn stream_ir() -> Vec<Event> {
    let usage =
        Usage { input_tokens: 100, output_tokens: 1, cache_read_tokens: 90, ..Usage::default() };
    vec![
        Event::Start { id: "msg_1".to_owned(), model: "claude-x".to_owned(), usage },
        Event::BlockStart { index: 0, block: BlockKind::Thinking },
        Event::ThinkingDelta { index: 0, text: "Plan.".to_owned() },
        Event::SignatureDelta { index: 0, signature: "sigZ".to_owned() },
        Event::BlockStop { index: 0 },
        Event::BlockStart { index: 1, block: BlockKind::Text },
        Event::TextDelta { index: 1, text: "Hi".to_owned() },
        Event::BlockStop { index: 1 },
        Event::BlockStart {
            index: 2,
            block: BlockKind::ToolCall { id: "toolu_1".to_owned(), name: "weather".to_owned() },
        },
        Event::ToolArgumentsDelta { index: 2, json: "{\"city\":".to_owned() },
        Event::ToolArgumentsDelta { index: 2, json: "\"Oslo\"}".to_owned() },
        Event::BlockStop { index: 2 },
        Event::Finish {
            stop: StopReason::ToolUse,
            stop_sequence: None,
            usage: Usage { output_tokens: 42, ..usage },
        },
    ]
}

#[test]
fn a_provider_stream_decodes_event_by_event() {
    assert_eq!(decode_stream(&provider_stream()), stream_ir());
}

#[test]
fn common_events_encode_to_the_exact_frames() {
    let mut encoder = Anthropic::stream_encoder();
    let mut out = Vec::new();
    for event in stream_ir() {
        encoder.encode(&event, &mut out);
    }
    encoder.finish(&mut out);
    let text = String::from_utf8(out).unwrap();
    let frames: Vec<(String, Value)> = text
        .split_terminator("\n\n")
        .map(|frame| {
            let (event, data) = frame.split_once('\n').unwrap();
            (
                event.strip_prefix("event: ").unwrap().to_owned(),
                serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap(),
            )
        })
        .collect();
    // The provider's stream, less its ping, with usage as Anthropic writes it.
    let mut expected: Vec<(String, Value)> = provider_stream()
        .into_iter()
        .filter(|(name, _)| *name != "ping")
        .map(|(name, data)| (name.to_owned(), data))
        .collect();
    expected[0].1["message"]["usage"] = json!({"input_tokens": 10, "output_tokens": 1, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 90});
    expected[12].1["usage"] = json!({"input_tokens": 10, "output_tokens": 42, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 90});
    assert_eq!(frames, expected);
    assert!(text.starts_with("event: message_start\ndata: {\"type\":\"message_start\""));
}

#[test]
fn a_stream_that_skips_steps_is_repaired() {
    // No message_start, a delta for a block never opened, no stop events at all.
    let events = decode_stream(&[
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": "{}"}}),
        ),
        ("mystery_event", json!({"type": "mystery_event"})),
    ]);
    assert_eq!(
        events,
        vec![
            Event::Start { id: String::new(), model: String::new(), usage: Usage::default() },
            Event::BlockStart {
                index: 0,
                block: BlockKind::ToolCall {
                    id: "toolu_missing_0".to_owned(),
                    name: String::new()
                }
            },
            Event::ToolArgumentsDelta { index: 0, json: "{}".to_owned() },
            Event::BlockStop { index: 0 },
            Event::Finish {
                stop: StopReason::Other("incomplete".to_owned()),
                stop_sequence: None,
                usage: Usage::default()
            },
        ]
    );
    // The encoder likewise writes message_start before a block and closes what is open.
    let mut encoder = Anthropic::stream_encoder();
    let mut out = Vec::new();
    encoder.encode(&Event::TextDelta { index: 3, text: "x".to_owned() }, &mut out);
    encoder.encode(
        &Event::Finish { stop: StopReason::EndTurn, stop_sequence: None, usage: Usage::default() },
        &mut out,
    );
    let text = String::from_utf8(out).unwrap();
    let names: Vec<&str> = text.lines().filter_map(|line| line.strip_prefix("event: ")).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert!(text.contains(r#""index":0,"delta":{"type":"text_delta","text":"x"}"#), "{text}");
}

#[test]
fn stream_errors_and_garbage() {
    let events = decode_stream(&[
        (
            "message_start",
            json!({"type": "message_start", "message": {"id": "m", "model": "c", "usage": {"input_tokens": 1}}}),
        ),
        (
            "error",
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
        ),
    ]);
    assert_eq!(
        events.last(),
        Some(&Event::Error(ApiError {
            status: 529,
            kind: ErrorKind::Overloaded,
            message: "Overloaded".to_owned()
        }))
    );
    let mut encoder = Anthropic::stream_encoder();
    let mut out = Vec::new();
    for event in &events {
        encoder.encode(event, &mut out);
    }
    let text = String::from_utf8(out).unwrap();
    assert!(text.ends_with(
        "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n"
    ));
    let mut decoder = Anthropic::stream_decoder();
    let mut out = Vec::new();
    for bad in [&b"{"[..], b"\xff", b"[1]", br#"{"type":"content_block_delta","index":"x"}"#] {
        assert!(
            matches!(decoder.decode(None, bad, &mut out), Err(Error::Stream { .. })),
            "{bad:?}"
        );
    }
    // A delta with no payload at all is an error naming the event.
    let error =
        decoder.decode(None, br#"{"type":"content_block_delta","index":0}"#, &mut out).unwrap_err();
    assert_eq!(error, Error::stream("content_block_delta", "no delta"));
}

#[test]
fn interleaved_blocks_are_numbered_in_the_order_they_open() {
    // Two tool calls whose argument pieces interleave (OpenAI's parallel calls), with
    // common indices that do not start at 0.
    let call = |index, id: &str| Event::BlockStart {
        index,
        block: BlockKind::ToolCall { id: id.to_owned(), name: "f".to_owned() },
    };
    let args = |index, json: &str| Event::ToolArgumentsDelta { index, json: json.to_owned() };
    let mut encoder = Anthropic::stream_encoder();
    let mut out = Vec::new();
    for event in [
        Event::Start { id: "m".to_owned(), model: "x".to_owned(), usage: Usage::default() },
        call(5, "a"),
        call(7, "b"),
        args(7, "{}"),
        args(5, "{}"),
        Event::BlockStop { index: 5 },
        Event::BlockStop { index: 7 },
    ] {
        encoder.encode(&event, &mut out);
    }
    let text = String::from_utf8(out).unwrap();
    let datas: Vec<Value> = text
        .split_terminator("\n\n")
        .map(|frame| serde_json::from_str(frame.split_once("\ndata: ").unwrap().1).unwrap())
        .collect();
    let indices: Vec<(&str, u64)> = datas[1..]
        .iter()
        .map(|data| (data["type"].as_str().unwrap(), data["index"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        indices,
        [
            ("content_block_start", 0),
            ("content_block_start", 1),
            ("content_block_delta", 1),
            ("content_block_delta", 0),
            ("content_block_stop", 0),
            ("content_block_stop", 1),
        ]
    );
}

#[test]
fn a_stream_holding_too_many_blocks_open_is_refused() {
    let mut decoder = Anthropic::stream_decoder();
    let mut out = Vec::new();
    let mut result = Ok(());
    for index in 0..1000 {
        let data = format!(
            r#"{{"type":"content_block_delta","index":{index},"delta":{{"type":"text_delta","text":"x"}}}}"#
        );
        result = decoder.decode(None, data.as_bytes(), &mut out);
        if result.is_err() {
            break;
        }
    }
    assert_eq!(result, Err(Error::stream("content_block_delta", "too many blocks open at once")));
    assert!(out.len() < 200, "{} events", out.len());
}

#[test]
fn a_request_survives_encoding_and_decoding_again() {
    let first = decode(full_request_json()).unwrap();
    let again = Anthropic::decode_request(&Anthropic::encode_request(&first).unwrap()).unwrap();
    assert_eq!(again, first);
    let reply = Anthropic::decode_response(&body(response_json())).unwrap();
    assert_eq!(
        Anthropic::decode_response(&Anthropic::encode_response(&reply).unwrap()).unwrap(),
        reply
    );
}

#[test]
fn every_truncation_and_byte_flip_of_real_bodies_is_a_clean_error() {
    let request = body(full_request_json());
    let reply = body(response_json());
    for cut in 0..request.len() {
        let error = Anthropic::decode_request(&request[..cut]).unwrap_err();
        assert!(matches!(error, Error::Invalid { .. }), "cut at {cut}: {error}");
    }
    for cut in 0..reply.len() {
        assert!(Anthropic::decode_response(&reply[..cut]).is_err(), "cut at {cut}");
    }
    // Flipped bytes may still parse (a letter in a string): whatever comes back, no panic,
    // and the stream decoder and error reader take the same bytes.
    let mut decoder = Anthropic::stream_decoder();
    let mut events = Vec::new();
    for at in 0..request.len() {
        let mut bent = request.clone();
        bent[at] ^= 0x20;
        let _ = Anthropic::decode_request(&bent);
        let _ = decoder.decode(Some("content_block_delta"), &bent, &mut events);
        let _ = Anthropic::decode_error(400, &bent);
    }
    for (_, data) in provider_stream() {
        let data = body(data);
        let mut decoder = Anthropic::stream_decoder();
        for cut in 0..data.len() {
            assert!(decoder.decode(None, &data[..cut], &mut events).is_err(), "cut at {cut}");
        }
    }
}

#[test]
fn tool_results_come_first_in_their_turn() {
    let mut ir = full_request();
    ir.messages[2].parts.insert(0, Part::Text("Here you go.".to_owned()));
    let out = encode(&ir);
    let kinds: Vec<&str> = out["messages"][2]["content"]
        .as_array()
        .unwrap()
        .iter()
        .map(|block| block["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["tool_result", "tool_result", "text"]);
}
