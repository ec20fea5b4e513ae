//! The Gemini codec against real-shaped bodies and streams, and the Anthropic ⇄ Gemini
//! pairs end to end.

use serde_json::{Value, json};

use super::Gemini;
use crate::codec::Codec;
use crate::error::Error;
use crate::ir::*;
use crate::{Format, Pair};

fn body(value: Value) -> Vec<u8> {
    serde_json::to_vec(&value).unwrap()
}

fn decode(value: Value) -> Result<Request, Error> {
    Gemini::decode_request(&body(value))
}

fn encode(request: &Request) -> Value {
    serde_json::from_slice(&Gemini::encode_request(request).unwrap()).unwrap()
}

fn thinking(text: &str, signature: Option<&str>, origin: Format) -> Part {
    Part::Thinking(Thinking {
        text: text.to_owned(),
        signature: signature.map(str::to_owned),
        redacted: None,
        origin: Some(origin),
    })
}

fn call(id: &str, name: &str, arguments: &str) -> Part {
    Part::ToolCall(ToolCall {
        id: id.to_owned(),
        name: name.to_owned(),
        arguments: arguments.to_owned(),
    })
}

fn result(id: &str, name: &str, text: &str, is_error: bool) -> Part {
    Part::ToolResult(ToolResult {
        call_id: id.to_owned(),
        name: Some(name.to_owned()),
        content: vec![ToolResultPart::Text(text.to_owned())],
        is_error,
    })
}

/// A request using every feature the common form carries, as a Gemini client writes it.
fn full_request_json() -> Value {
    json!({
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "contents": [
            {"role": "user", "parts": [
                {"text": "Weather here?"},
                {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
                {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/a.jpg"}}
            ]},
            {"role": "model", "parts": [
                {"text": "Let me think.", "thought": true, "thoughtSignature": "tsig"},
                {"functionCall": {"name": "weather", "args": {"city": "Paris"}}, "thoughtSignature": "csig"},
                {"functionCall": {"name": "weather", "args": {"city": "Oslo"}}}
            ]},
            {"role": "user", "parts": [
                {"functionResponse": {"name": "weather", "response": {"output": "18C"}}},
                {"functionResponse": {"name": "weather", "response": {"error": "no station"}}}
            ]}
        ],
        "tools": [{"functionDeclarations": [{
            "name": "weather", "description": "Weather by city",
            "parameters": {"type": "OBJECT", "properties": {"city": {"type": "STRING"}}, "required": ["city"]}
        }]}],
        "toolConfig": {"functionCallingConfig": {"mode": "ANY"}},
        "generationConfig": {
            "temperature": 0.5, "topP": 0.9, "topK": 40, "maxOutputTokens": 2048,
            "stopSequences": ["END"], "presencePenalty": 0.1, "frequencyPenalty": 0.2, "seed": 7,
            "thinkingConfig": {"thinkingBudget": 1500, "includeThoughts": true}
        },
        "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}]
    })
}

fn full_request() -> Request {
    Request {
        model: String::new(),
        system: vec![SystemPart { developer: false, text: "Be brief.".to_owned() }],
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
                        media_type: Some("image/jpeg".to_owned()),
                    }),
                ],
            },
            Message {
                role: Role::Assistant,
                parts: vec![
                    thinking("Let me think.", Some("tsig"), Format::Gemini),
                    thinking("", Some("csig"), Format::Gemini),
                    call("call_0", "weather", r#"{"city":"Paris"}"#),
                    call("call_1", "weather", r#"{"city":"Oslo"}"#),
                ],
            },
            Message {
                role: Role::User,
                parts: vec![
                    result("call_0", "weather", "18C", false),
                    result("call_1", "weather", "no station", true),
                ],
            },
        ],
        tools: vec![Tool {
            name: "weather".to_owned(),
            description: Some("Weather by city".to_owned()),
            parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
            strict: None,
        }],
        tool_choice: Some(ToolChoice::Required),
        parallel_tool_calls: None,
        max_tokens: Some(2048),
        sampling: Sampling {
            temperature: Some(0.5),
            top_p: Some(0.9),
            top_k: Some(40),
            presence_penalty: Some(0.1),
            frequency_penalty: Some(0.2),
            seed: Some(7),
        },
        stop: vec!["END".to_owned()],
        stream: false,
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
    // Dropped: safetySettings. Written: no call ids, schemas in Gemini's upper case.
    expected.as_object_mut().unwrap().remove("safetySettings");
    assert_eq!(encode(&full_request()), expected);
}

#[test]
fn snake_case_names_and_parameters_json_schema_are_read() {
    let request = decode(json!({
        "system_instruction": {"parts": [{"text": "S"}]},
        "contents": [{"parts": [{"text": "Hi"}, {"inline_data": {"mime_type": "image/gif", "data": "R0lG"}}]}],
        "tools": [{"function_declarations": [{"name": "f", "parametersJsonSchema": {"type": "object", "additionalProperties": false}}]}],
        "generation_config": {"max_output_tokens": 9}
    }))
    .unwrap();
    assert_eq!(request.system[0].text, "S");
    assert_eq!(request.messages[0].role, Role::User);
    assert_eq!(
        request.messages[0].parts[1],
        Part::Image(Image::Base64 { media_type: "image/gif".to_owned(), data: "R0lG".to_owned() })
    );
    assert_eq!(
        request.tools[0].parameters,
        json!({"type": "object", "additionalProperties": false})
    );
    assert_eq!(request.max_tokens, Some(9));
}

#[test]
fn streamed_thought_pieces_sent_back_are_one_block_again() {
    // What a Gemini client keeps of a streamed reply of Anthropic: thought text in pieces,
    // then the (wrapped) signature in a part of its own.
    let request = decode(json!({"contents": [
        {"role": "user", "parts": [{"text": "Go"}]},
        {"role": "model", "parts": [
            {"text": "Hm", "thought": true},
            {"text": "m.", "thought": true},
            {"text": "", "thought": true, "thoughtSignature": "cpx1.anthropic.sig"},
            {"text": "Answer."}
        ]}
    ]}))
    .unwrap();
    assert_eq!(
        request.messages[1].parts,
        vec![thinking("Hmm.", Some("sig"), Format::Anthropic), Part::Text("Answer.".to_owned())]
    );
}

#[test]
fn tool_choice_each_kind_both_ways() {
    for (wire, choice) in [
        (json!({"mode": "AUTO"}), ToolChoice::Auto),
        (json!({"mode": "ANY"}), ToolChoice::Required),
        (json!({"mode": "NONE"}), ToolChoice::None),
        (
            json!({"mode": "ANY", "allowedFunctionNames": ["weather"]}),
            ToolChoice::Named("weather".to_owned()),
        ),
    ] {
        let mut request = full_request_json();
        request["toolConfig"]["functionCallingConfig"] = wire.clone();
        assert_eq!(decode(request).unwrap().tool_choice, Some(choice.clone()));
        let mut ir = full_request();
        ir.tool_choice = Some(choice);
        assert_eq!(encode(&ir)["toolConfig"]["functionCallingConfig"], wire);
    }
    let mut request = full_request_json();
    request["toolConfig"]["functionCallingConfig"] =
        json!({"mode": "ANY", "allowedFunctionNames": ["a", "b"]});
    let decoded = decode(request).unwrap();
    assert_eq!(decoded.unmapped[0].0, "toolConfig.functionCallingConfig.allowedFunctionNames");
    // parallel_tool_calls=false has no Gemini counterpart and is dropped (documented).
    let mut ir = full_request();
    ir.parallel_tool_calls = Some(false);
    assert_eq!(encode(&ir), encode(&full_request()));
}

#[test]
fn results_answer_calls_by_name_and_order_and_need_a_call_when_encoded() {
    // The encoder finds a result's name from the call with its id.
    let mut ir = full_request();
    for part in &mut ir.messages[2].parts {
        if let Part::ToolResult(result) = part {
            result.name = None;
        }
    }
    assert_eq!(encode(&ir)["contents"][2], full_request_json()["contents"][2]);
    // A result for a call that is not in the conversation is refused.
    if let Part::ToolResult(result) = &mut ir.messages[2].parts[0] {
        result.call_id = "toolu_gone".to_owned();
    }
    let error = Gemini::encode_request(&ir).unwrap_err();
    assert!(
        matches!(&error, Error::Invalid { field, .. } if field == "messages[2].content[0]"),
        "{error}"
    );
    // The decoder refuses a result that answers no call.
    let error = decode(json!({"contents": [{"role": "user", "parts": [
        {"functionResponse": {"name": "f", "response": {}}}]}]}))
    .unwrap_err();
    assert!(
        matches!(&error, Error::Invalid { field, .. } if field == "contents[0].parts[0].functionResponse"),
        "{error}"
    );
    // Ids, when Gemini sends them, are kept and matched.
    let decoded = decode(json!({"contents": [
        {"role": "model", "parts": [{"functionCall": {"id": "a1", "name": "f", "args": {}}}]},
        {"role": "user", "parts": [{"functionResponse": {"id": "a1", "name": "f", "response": {"result": {"x": 1}}}}]}
    ]}))
    .unwrap();
    assert_eq!(decoded.messages[1].parts[0], result("a1", "f", r#"{"x":1}"#, false));
}

#[test]
fn calls_of_another_provider_get_the_documented_skip_signature() {
    let mut ir = full_request();
    ir.messages[1].parts = vec![
        thinking("Claude thought.", Some("asig"), Format::Anthropic),
        call("toolu_1", "weather", r#"{"city":"Paris"}"#),
        call("toolu_2", "weather", ""),
    ];
    ir.messages[2].parts = vec![
        result("toolu_1", "weather", "18C", false),
        result("toolu_2", "weather", "no station", true),
    ];
    let out = encode(&ir);
    assert_eq!(
        out["contents"][1]["parts"],
        json!([
            {"functionCall": {"name": "weather", "args": {"city": "Paris"}}, "thoughtSignature": "skip_thought_signature_validator"},
            {"functionCall": {"name": "weather", "args": {}}}
        ])
    );
}

#[test]
fn structured_output_and_reasoning_both_ways() {
    let schema = json!({"type": "object", "properties": {"n": {"type": ["integer", "null"]}}, "additionalProperties": false});
    let mut ir = full_request();
    ir.output = Some(OutputFormat::JsonSchema { name: "x".to_owned(), schema, strict: Some(true) });
    let out = encode(&ir);
    assert_eq!(out["generationConfig"]["responseMimeType"], "application/json");
    assert_eq!(
        out["generationConfig"]["responseSchema"],
        json!({"type": "OBJECT", "properties": {"n": {"type": "INTEGER", "nullable": true}}})
    );
    let mut request = full_request_json();
    request["generationConfig"]["responseMimeType"] = json!("application/json");
    assert_eq!(decode(request.clone()).unwrap().output, Some(OutputFormat::JsonObject));
    request["generationConfig"]["responseSchema"] = json!({"type": "STRING", "enum": ["a"]});
    assert_eq!(
        decode(request).unwrap().output,
        Some(OutputFormat::JsonSchema {
            name: "response".to_owned(),
            schema: json!({"type": "string", "enum": ["a"]}),
            strict: None
        })
    );
    for (config, reasoning) in [
        (json!({"thinkingBudget": 0}), Reasoning::Off),
        (json!({"thinkingBudget": 512}), Reasoning::Budget(512)),
        (json!({"thinkingBudget": -1}), Reasoning::Effort(Effort::Medium)),
        (json!({"thinkingLevel": "HIGH"}), Reasoning::Effort(Effort::High)),
    ] {
        let mut request = full_request_json();
        request["generationConfig"]["thinkingConfig"] = config;
        assert_eq!(decode(request).unwrap().reasoning, Some(reasoning));
    }
    let mut ir = full_request();
    ir.reasoning = Some(Reasoning::Effort(Effort::Low));
    assert_eq!(
        encode(&ir)["generationConfig"]["thinkingConfig"],
        json!({"thinkingBudget": 2048, "includeThoughts": true})
    );
    ir.reasoning = Some(Reasoning::Off);
    assert_eq!(encode(&ir)["generationConfig"]["thinkingConfig"], json!({"thinkingBudget": 0}));
}

#[test]
fn gemini_only_features_become_unmapped_and_foreign_ones_are_refused() {
    let mut request = full_request_json();
    request["tools"].as_array_mut().unwrap().push(json!({"googleSearch": {}}));
    request["contents"][0]["parts"]
        .as_array_mut()
        .unwrap()
        .push(json!({"inlineData": {"mimeType": "application/pdf", "data": "JVBE"}}));
    request["generationConfig"]["candidateCount"] = json!(2);
    request["generationConfig"]["responseLogprobs"] = json!(true);
    request["cachedContent"] = json!("cachedContents/abc");
    let names: Vec<String> =
        decode(request).unwrap().unmapped.into_iter().map(|(name, _)| name).collect();
    assert_eq!(
        names,
        [
            "contents[0].parts[3].inlineData",
            "tools[1].googleSearch",
            "generationConfig.candidateCount",
            "generationConfig.responseLogprobs",
            "cachedContent"
        ]
    );
    let mut ir = full_request();
    ir.unmapped.push(("logit_bias".to_owned(), json!({})));
    assert_eq!(Gemini::encode_request(&ir), Err(Error::unsupported("logit_bias", Format::Gemini)));
    // A recursive tool schema is refused naming the tool.
    let mut ir = full_request();
    ir.tools[0].parameters = json!({"$ref": "#/$defs/N", "$defs": {"N": {"type": "object", "properties": {"n": {"$ref": "#/$defs/N"}}}}});
    let error = Gemini::encode_request(&ir).unwrap_err();
    assert_eq!(
        error,
        Error::unsupported("tool `weather` parameters (recursive $ref #/$defs/N)", Format::Gemini)
    );
}

#[test]
fn malformed_requests_name_the_field() {
    let cases = [
        (json!({}), "contents"),
        (json!({"contents": 5}), "contents"),
        (json!({"contents": [{"role": "system", "parts": []}]}), "contents[0].role"),
        (json!({"contents": [{"role": "user"}]}), "contents[0].parts"),
        (json!({"contents": [{"parts": [{"text": 5}]}]}), "contents[0].parts[0].text"),
        (
            json!({"contents": [{"parts": [{"functionCall": {"args": {}}}]}]}),
            "contents[0].parts[0].functionCall.name",
        ),
        (
            json!({"contents": [], "generationConfig": {"temperature": "hot"}}),
            "generationConfig.temperature",
        ),
        (
            json!({"contents": [], "tools": [{"functionDeclarations": [{"name": 1}]}]}),
            "tools[0].functionDeclarations[0].name",
        ),
        (
            json!({"contents": [], "toolConfig": {"functionCallingConfig": {"mode": "SOMETIMES"}}}),
            "toolConfig.functionCallingConfig.mode",
        ),
        (
            json!({"contents": [], "systemInstruction": {"parts": [{"inlineData": {}}]}}),
            "systemInstruction.parts[0]",
        ),
    ];
    for (request, field) in cases {
        match decode(request.clone()) {
            Err(Error::Invalid { field: got, .. }) => assert_eq!(got, field, "{request}"),
            other => panic!("{request}: {other:?}"),
        }
    }
    for bad in [&b""[..], b"{", b"[]", b"\xff", br#"{"contents":[{"parts":[{"text":"\xff"}]}]}"#] {
        assert!(matches!(Gemini::decode_request(bad), Err(Error::Invalid { .. })), "{bad:?}");
    }
    let deep = format!(r#"{{"contents":{}{}}}"#, "[".repeat(10_000), "]".repeat(10_000));
    assert!(matches!(Gemini::decode_request(deep.as_bytes()), Err(Error::Invalid { .. })));
    let big = "y".repeat(1 << 20);
    let decoded = decode(json!({"contents": [{"parts": [{"text": big}]}]})).unwrap();
    assert_eq!(decoded.messages[0].parts[0], Part::Text(big));
}

fn response_json() -> Value {
    json!({
        "candidates": [{
            "content": {"role": "model", "parts": [
                {"text": "Plan.", "thought": true},
                {"text": "Calling."},
                {"functionCall": {"name": "weather", "args": {"city": "Oslo"}}, "thoughtSignature": "csig"}
            ]},
            "finishReason": "STOP", "index": 0,
            "safetyRatings": []
        }],
        "usageMetadata": {"promptTokenCount": 120, "candidatesTokenCount": 20, "totalTokenCount": 170,
                          "cachedContentTokenCount": 100, "thoughtsTokenCount": 30},
        "modelVersion": "gemini-2.5-flash", "responseId": "r1"
    })
}

fn response_ir() -> Response {
    Response {
        id: "r1".to_owned(),
        model: "gemini-2.5-flash".to_owned(),
        parts: vec![
            thinking("Plan.", None, Format::Gemini),
            Part::Text("Calling.".to_owned()),
            thinking("", Some("csig"), Format::Gemini),
            call("call_r1_0", "weather", r#"{"city":"Oslo"}"#),
        ],
        stop: StopReason::ToolUse,
        stop_sequence: None,
        usage: Usage {
            input_tokens: 120,
            output_tokens: 50,
            cache_read_tokens: 100,
            cache_write_tokens: 0,
            reasoning_tokens: 30,
        },
    }
}

#[test]
fn a_reply_decodes_with_thoughts_counted_in_the_output() {
    assert_eq!(Gemini::decode_response(&body(response_json())).unwrap(), response_ir());
}

#[test]
fn a_reply_encodes_for_a_gemini_client() {
    let out: Value =
        serde_json::from_slice(&Gemini::encode_response(&response_ir()).unwrap()).unwrap();
    let mut expected = response_json();
    expected["candidates"][0].as_object_mut().unwrap().remove("safetyRatings");
    expected["candidates"][0]["content"]["parts"][2]["functionCall"]["id"] = json!("call_r1_0");
    assert_eq!(out, expected);
}

#[test]
fn every_finish_reason_maps() {
    for (name, stop, back) in [
        ("STOP", StopReason::EndTurn, "STOP"),
        ("MAX_TOKENS", StopReason::MaxTokens, "MAX_TOKENS"),
        ("SAFETY", StopReason::ContentFilter, "SAFETY"),
        ("RECITATION", StopReason::ContentFilter, "SAFETY"),
        ("PROHIBITED_CONTENT", StopReason::ContentFilter, "SAFETY"),
        (
            "MALFORMED_FUNCTION_CALL",
            StopReason::Other("MALFORMED_FUNCTION_CALL".to_owned()),
            "MALFORMED_FUNCTION_CALL",
        ),
        ("OTHER", StopReason::Other("OTHER".to_owned()), "OTHER"),
    ] {
        let reply = json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "x"}]}, "finishReason": name}]});
        let decoded = Gemini::decode_response(&body(reply)).unwrap();
        assert_eq!(decoded.stop, stop, "{name}");
        let out: Value =
            serde_json::from_slice(&Gemini::encode_response(&decoded).unwrap()).unwrap();
        assert_eq!(out["candidates"][0]["finishReason"], back);
    }
    let mut ir = response_ir();
    ir.stop = StopReason::Other("pause_turn".to_owned());
    let out: Value = serde_json::from_slice(&Gemini::encode_response(&ir).unwrap()).unwrap();
    assert_eq!(out["candidates"][0]["finishReason"], "OTHER");
    // A blocked prompt has no candidate.
    let blocked =
        Gemini::decode_response(br#"{"promptFeedback":{"blockReason":"SAFETY"}}"#).unwrap();
    assert_eq!((blocked.stop, blocked.parts.len()), (StopReason::ContentFilter, 0));
}

#[test]
fn errors_map_both_ways() {
    for (status, name, kind) in [
        (400, "INVALID_ARGUMENT", ErrorKind::InvalidRequest),
        (401, "UNAUTHENTICATED", ErrorKind::Authentication),
        (403, "PERMISSION_DENIED", ErrorKind::Permission),
        (404, "NOT_FOUND", ErrorKind::NotFound),
        (429, "RESOURCE_EXHAUSTED", ErrorKind::RateLimit),
        (500, "INTERNAL", ErrorKind::Api),
        (503, "UNAVAILABLE", ErrorKind::Overloaded),
    ] {
        let wire = json!({"error": {"code": status, "message": "boom", "status": name}});
        let error = Gemini::decode_error(status, &body(wire.clone()));
        assert_eq!(error, ApiError { status, kind, message: "boom".to_owned() });
        assert_eq!(serde_json::from_slice::<Value>(&Gemini::encode_error(&error)).unwrap(), wire);
    }
    // The array form of a stream's error, and a body that is no error shape.
    let error = Gemini::decode_error(
        429,
        br#"[{"error":{"code":429,"message":"quota","status":"RESOURCE_EXHAUSTED"}}]"#,
    );
    assert_eq!((error.kind, error.message.as_str()), (ErrorKind::RateLimit, "quota"));
    let error = Gemini::decode_error(502, b"Bad Gateway");
    assert_eq!((error.kind, error.message.as_str()), (ErrorKind::Api, "Bad Gateway"));
}

fn decode_stream(chunks: &[Value]) -> Vec<Event> {
    let mut decoder = Gemini::stream_decoder();
    let mut out = Vec::new();
    for chunk in chunks {
        decoder.decode(None, &body(chunk.clone()), &mut out).unwrap();
    }
    decoder.finish(&mut out);
    out
}

fn provider_chunks() -> Vec<Value> {
    let model = |parts: Value| {
        json!({"candidates": [{"content": {"role": "model", "parts": parts}, "index": 0}],
                                      "usageMetadata": {"promptTokenCount": 12}, "modelVersion": "gemini-2.5-pro", "responseId": "r9"})
    };
    vec![
        model(json!([{"text": "Think", "thought": true}])),
        model(json!([{"text": "ing.", "thought": true}])),
        model(json!([{"text": "Hel"}])),
        model(json!([{"text": "lo"}])),
        model(json!([{"functionCall": {"name": "a", "args": {"x": 1}}, "thoughtSignature": "s1"},
                     {"functionCall": {"name": "b", "args": {}}}])),
        json!({"candidates": [{"content": {"role": "model", "parts": [{"text": ""}]}, "finishReason": "STOP", "index": 0}],
               "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 8, "thoughtsTokenCount": 4, "totalTokenCount": 24},
               "modelVersion": "gemini-2.5-pro", "responseId": "r9"}),
    ]
}

fn stream_ir() -> Vec<Event> {
    let start_usage = Usage { input_tokens: 12, ..Usage::default() };
    vec![
        Event::Start {
            id: "r9".to_owned(),
            model: "gemini-2.5-pro".to_owned(),
            usage: start_usage,
        },
        Event::BlockStart { index: 0, block: BlockKind::Thinking },
        Event::ThinkingDelta { index: 0, text: "Think".to_owned() },
        Event::ThinkingDelta { index: 0, text: "ing.".to_owned() },
        Event::BlockStop { index: 0 },
        Event::BlockStart { index: 1, block: BlockKind::Text },
        Event::TextDelta { index: 1, text: "Hel".to_owned() },
        Event::TextDelta { index: 1, text: "lo".to_owned() },
        Event::BlockStop { index: 1 },
        Event::BlockStart { index: 2, block: BlockKind::Thinking },
        Event::SignatureDelta { index: 2, signature: "s1".to_owned() },
        Event::BlockStop { index: 2 },
        Event::BlockStart {
            index: 3,
            block: BlockKind::ToolCall { id: "call_r9_0".to_owned(), name: "a".to_owned() },
        },
        Event::ToolArgumentsDelta { index: 3, json: r#"{"x":1}"#.to_owned() },
        Event::BlockStop { index: 3 },
        Event::BlockStart {
            index: 4,
            block: BlockKind::ToolCall { id: "call_r9_1".to_owned(), name: "b".to_owned() },
        },
        Event::ToolArgumentsDelta { index: 4, json: "{}".to_owned() },
        Event::BlockStop { index: 4 },
        Event::Finish {
            stop: StopReason::ToolUse,
            stop_sequence: None,
            usage: Usage {
                input_tokens: 12,
                output_tokens: 12,
                reasoning_tokens: 4,
                ..Usage::default()
            },
        },
    ]
}

#[test]
fn a_provider_stream_decodes_chunk_by_chunk() {
    assert_eq!(decode_stream(&provider_chunks()), stream_ir());
}

fn frames(bytes: &[u8]) -> Vec<Value> {
    std::str::from_utf8(bytes)
        .unwrap()
        .split_terminator("\n\n")
        .map(|frame| serde_json::from_str(frame.strip_prefix("data: ").unwrap()).unwrap())
        .collect()
}

#[test]
fn common_events_encode_to_the_exact_chunks_with_tool_arguments_held_until_complete() {
    let mut encoder = Gemini::stream_encoder();
    let mut out = Vec::new();
    let events = [
        Event::Start {
            id: "msg_1".to_owned(),
            model: "claude-x".to_owned(),
            usage: Usage::default(),
        },
        Event::BlockStart { index: 0, block: BlockKind::Thinking },
        Event::ThinkingDelta { index: 0, text: "Hm".to_owned() },
        Event::SignatureDelta { index: 0, signature: "cpx1.anthropic.sig".to_owned() },
        Event::BlockStop { index: 0 },
        Event::BlockStart { index: 1, block: BlockKind::Text },
        Event::TextDelta { index: 1, text: "Hi".to_owned() },
        Event::BlockStop { index: 1 },
        Event::BlockStart {
            index: 2,
            block: BlockKind::ToolCall { id: "toolu_1".to_owned(), name: "a".to_owned() },
        },
        Event::ToolArgumentsDelta { index: 2, json: "{\"x\":".to_owned() },
    ];
    for event in &events {
        encoder.encode(event, &mut out);
    }
    let before_stop = out.len();
    encoder.encode(&Event::ToolArgumentsDelta { index: 2, json: "1}".to_owned() }, &mut out);
    assert_eq!(out.len(), before_stop, "argument pieces are held, not written");
    encoder.encode(&Event::BlockStop { index: 2 }, &mut out);
    encoder.encode(
        &Event::Finish {
            stop: StopReason::ToolUse,
            stop_sequence: None,
            usage: Usage {
                input_tokens: 10,
                output_tokens: 7,
                reasoning_tokens: 2,
                cache_read_tokens: 4,
                ..Usage::default()
            },
        },
        &mut out,
    );
    encoder.finish(&mut out);
    let tail = json!({"modelVersion": "claude-x", "responseId": "msg_1"});
    let chunk = |parts: Value| {
        let mut chunk =
            json!({"candidates": [{"content": {"role": "model", "parts": parts}, "index": 0}]});
        chunk.as_object_mut().unwrap().extend(tail.as_object().unwrap().clone());
        chunk
    };
    let mut finish = json!({"candidates": [{"content": {"role": "model", "parts": [{"text": ""}]},
            "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 5, "totalTokenCount": 17,
                          "cachedContentTokenCount": 4, "thoughtsTokenCount": 2}});
    finish.as_object_mut().unwrap().extend(tail.as_object().unwrap().clone());
    assert_eq!(
        frames(&out),
        vec![
            chunk(json!([{"text": "Hm", "thought": true}])),
            chunk(json!([{"text": "", "thought": true, "thoughtSignature": "cpx1.anthropic.sig"}])),
            chunk(json!([{"text": "Hi"}])),
            chunk(json!([{"functionCall": {"id": "toolu_1", "name": "a", "args": {"x": 1}}}])),
            finish,
        ]
    );
}

#[test]
fn a_stream_that_stops_short_or_errs_is_finished_and_garbage_is_an_error() {
    // Text, then the connection drops: the block is closed and the reply finished.
    let events =
        decode_stream(&[json!({"candidates": [{"content": {"parts": [{"text": "Hi"}]}}]})]);
    assert_eq!(
        events[events.len() - 2..],
        [
            Event::BlockStop { index: 0 },
            Event::Finish {
                stop: StopReason::Other("incomplete".to_owned()),
                stop_sequence: None,
                usage: Usage::default()
            },
        ]
    );
    // An empty stream still starts and finishes.
    assert_eq!(decode_stream(&[]).len(), 2);
    let mut decoder = Gemini::stream_decoder();
    let mut out = Vec::new();
    for bad in [&b"{"[..], b"\xff", b"[]", br#"{"candidates":5}"#] {
        assert!(
            matches!(decoder.decode(None, bad, &mut out), Err(Error::Stream { .. })),
            "{bad:?}"
        );
    }
    // A client of Gemini sees an error as an error chunk, and nothing after it.
    let mut encoder = Gemini::stream_encoder();
    let mut out = Vec::new();
    encoder.encode(
        &Event::Error(ApiError {
            status: 529,
            kind: ErrorKind::Overloaded,
            message: "busy".to_owned(),
        }),
        &mut out,
    );
    encoder.encode(&Event::TextDelta { index: 0, text: "late".to_owned() }, &mut out);
    assert_eq!(
        frames(&out),
        vec![json!({"error": {"code": 529, "message": "busy", "status": "UNAVAILABLE"}})]
    );
    // Arguments that are not a JSON object are kept, not turned into {}.
    let mut encoder = Gemini::stream_encoder();
    let mut out = Vec::new();
    encoder.encode(
        &Event::BlockStart {
            index: 0,
            block: BlockKind::ToolCall { id: "c".to_owned(), name: "f".to_owned() },
        },
        &mut out,
    );
    encoder.encode(&Event::ToolArgumentsDelta { index: 0, json: "{\"a\":".to_owned() }, &mut out);
    encoder.encode(
        &Event::Finish { stop: StopReason::ToolUse, stop_sequence: None, usage: Usage::default() },
        &mut out,
    );
    assert_eq!(
        frames(&out)[0]["candidates"][0]["content"]["parts"][0]["functionCall"]["args"],
        json!({"_raw_arguments": "{\"a\":"})
    );
}

/// Splits SSE frames into (event name, data).
fn sse(bytes: &[u8]) -> Vec<(String, Value)> {
    std::str::from_utf8(bytes)
        .unwrap()
        .split_terminator("\n\n")
        .map(|frame| {
            let (event, data) = frame.split_once('\n').unwrap();
            (
                event.strip_prefix("event: ").unwrap().to_owned(),
                serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap(),
            )
        })
        .collect()
}

#[test]
fn an_anthropic_client_streams_from_a_gemini_provider() {
    let pair = Pair::new(Format::Anthropic, Format::Gemini);
    let mut stream = pair.stream();
    let mut out = Vec::new();
    for chunk in provider_chunks() {
        stream.feed(None, &body(chunk), &mut out).unwrap();
    }
    stream.finish(&mut out);
    let frames = sse(&out);
    let names: Vec<&str> = frames.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names[0], "message_start");
    assert_eq!(names[names.len() - 2..], ["message_delta", "message_stop"]);
    // The signature Gemini put on the call reaches the client wrapped, in its own block.
    assert!(frames.iter().any(|(_, data)| data["delta"]
        == json!({"type": "signature_delta", "signature": "cpx1.gemini.s1"})));
    // Each call is a tool_use block with its whole input, in order, with unique ids.
    let starts: Vec<&Value> = frames
        .iter()
        .filter(|(name, data)| {
            name == "content_block_start" && data["content_block"]["type"] == "tool_use"
        })
        .map(|(_, data)| data)
        .collect();
    assert_eq!(
        starts[0]["content_block"],
        json!({"type": "tool_use", "id": "call_r9_0", "name": "a", "input": {}})
    );
    assert_eq!(starts[1]["index"], 4);
    assert!(
        frames
            .iter()
            .any(|(_, data)| data["index"] == 3 && data["delta"]["partial_json"] == "{\"x\":1}")
    );
    let (_, delta) = &frames[frames.len() - 2];
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    assert_eq!(delta["usage"]["output_tokens"], 12);
    assert_eq!(stream.usage().input_tokens, 12);
}

#[test]
fn an_anthropic_conversation_reaches_gemini_and_its_reply_comes_back() {
    let pair = Pair::new(Format::Anthropic, Format::Gemini);
    // Turn 2 of a conversation whose first reply came from Gemini through this gateway.
    let request = pair
        .decode_request(&body(json!({
            "model": "gemini-2.5-pro", "max_tokens": 500, "system": "Be brief.",
            "tools": [{"name": "a", "input_schema": {"type": "object", "properties": {"x": {"type": "integer"}}, "additionalProperties": false}}],
            "messages": [
                {"role": "user", "content": "Go"},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "", "signature": "cpx1.gemini.s1"},
                    {"type": "tool_use", "id": "call_r9_0", "name": "a", "input": {"x": 1}}
                ]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_r9_0", "content": "ok"}]}
            ]
        })))
        .unwrap();
    let upstream: Value = serde_json::from_slice(&pair.encode_request(&request).unwrap()).unwrap();
    assert_eq!(
        upstream,
        json!({
            "systemInstruction": {"parts": [{"text": "Be brief."}]},
            "contents": [
                {"role": "user", "parts": [{"text": "Go"}]},
                {"role": "model", "parts": [{"functionCall": {"name": "a", "args": {"x": 1}}, "thoughtSignature": "s1"}]},
                {"role": "user", "parts": [{"functionResponse": {"name": "a", "response": {"output": "ok"}}}]}
            ],
            "tools": [{"functionDeclarations": [{"name": "a", "parameters": {"type": "OBJECT", "properties": {"x": {"type": "INTEGER"}}}}]}],
            "generationConfig": {"maxOutputTokens": 500}
        })
    );
    let reply: Value =
        serde_json::from_slice(&pair.response(&body(response_json())).unwrap()).unwrap();
    assert_eq!(
        reply["content"],
        json!([
            {"type": "thinking", "thinking": "Plan.", "signature": ""},
            {"type": "text", "text": "Calling."},
            {"type": "thinking", "thinking": "", "signature": "cpx1.gemini.csig"},
            {"type": "tool_use", "id": "call_r1_0", "name": "weather", "input": {"city": "Oslo"}}
        ])
    );
    assert_eq!(reply["stop_reason"], "tool_use");
    assert_eq!(
        reply["usage"],
        json!({"input_tokens": 20, "output_tokens": 50, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 100})
    );
    // An upstream error reaches the client in its own shape, with its status.
    let (status, error) = pair
        .error(429, br#"{"error":{"code":429,"message":"quota","status":"RESOURCE_EXHAUSTED"}}"#);
    assert_eq!(status, 429);
    assert_eq!(
        serde_json::from_slice::<Value>(&error).unwrap(),
        json!({"type": "error", "error": {"type": "rate_limit_error", "message": "quota"}})
    );
}

#[test]
fn a_gemini_client_reaches_anthropic() {
    let pair = Pair::new(Format::Gemini, Format::Anthropic);
    let mut request = pair.decode_request(&body(full_request_json())).unwrap();
    // Gemini's penalties and seed have no Anthropic counterpart: named as the client wrote
    // them.
    assert_eq!(
        pair.encode_request(&request),
        Err(Error::unsupported("generationConfig.presencePenalty", Format::Anthropic))
    );
    request.sampling.presence_penalty = None;
    request.sampling.frequency_penalty = None;
    request.sampling.seed = None;
    request.model = "claude-sonnet-4-5".to_owned();
    let upstream: Value = serde_json::from_slice(&pair.encode_request(&request).unwrap()).unwrap();
    // Gemini's reasoning is dropped for Anthropic; the calls keep the ids the decoder gave.
    assert_eq!(
        upstream["messages"][1]["content"],
        json!([
            {"type": "tool_use", "id": "call_0", "name": "weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Oslo"}}
        ])
    );
    assert_eq!(
        upstream["messages"][2]["content"][1],
        json!({"type": "tool_result", "tool_use_id": "call_1", "content": "no station", "is_error": true})
    );
    assert_eq!(
        upstream["tools"][0]["input_schema"],
        json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
    );
    assert_eq!(upstream["thinking"], json!({"type": "enabled", "budget_tokens": 1500}));
}

#[test]
fn a_request_survives_encoding_and_decoding_again() {
    let first = decode(full_request_json()).unwrap();
    let again = Gemini::decode_request(&Gemini::encode_request(&first).unwrap()).unwrap();
    assert_eq!(again, first);
    let reply = Gemini::decode_response(&body(response_json())).unwrap();
    assert_eq!(Gemini::decode_response(&Gemini::encode_response(&reply).unwrap()).unwrap(), reply);
}

#[test]
fn an_anthropic_request_through_gemini_and_back_keeps_what_both_say() {
    let to_gemini = Pair::new(Format::Anthropic, Format::Gemini);
    let from_gemini = Pair::new(Format::Gemini, Format::Anthropic);
    let original = to_gemini
        .decode_request(&body(json!({
            "model": "m", "max_tokens": 300, "system": "S",
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "Hi"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}]},
                {"role": "assistant", "content": [{"type": "text", "text": "Calling"},
                    {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": [1, 2]}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "done", "is_error": true}]}
            ],
            "tools": [{"name": "f", "description": "F", "input_schema": {"type": "object", "properties": {"a": {"type": "array", "items": {"type": "integer"}}}, "required": ["a"]}}],
            "tool_choice": {"type": "tool", "name": "f"},
            "temperature": 0.2, "top_p": 0.8, "top_k": 5, "stop_sequences": ["X"],
            "thinking": {"type": "enabled", "budget_tokens": 2000}
        })))
        .unwrap();
    let back = from_gemini.decode_request(&to_gemini.encode_request(&original).unwrap()).unwrap();
    // Gemini carries no model and no call ids: its decoder numbers the calls.
    assert_eq!(back.model, "");
    let mut expected = original.clone();
    expected.model = String::new();
    expected.messages[1].parts[1] = call("call_0", "f", r#"{"a":[1,2]}"#);
    expected.messages[2].parts[0] = result("call_0", "f", "done", true);
    assert_eq!(back, expected);
}

#[test]
fn every_truncation_and_byte_flip_of_real_bodies_is_a_clean_error() {
    let request = body(full_request_json());
    let reply = body(response_json());
    for cut in 0..request.len() {
        let error = Gemini::decode_request(&request[..cut]).unwrap_err();
        assert!(matches!(error, Error::Invalid { .. }), "cut at {cut}: {error}");
    }
    for cut in 0..reply.len() {
        assert!(Gemini::decode_response(&reply[..cut]).is_err(), "cut at {cut}");
    }
    let mut decoder = Gemini::stream_decoder();
    let mut events = Vec::new();
    for at in 0..request.len() {
        let mut bent = request.clone();
        bent[at] ^= 0x20;
        let _ = Gemini::decode_request(&bent);
        let _ = decoder.decode(None, &bent, &mut events);
        let _ = Gemini::decode_error(400, &bent);
    }
    for chunk in provider_chunks() {
        let chunk = body(chunk);
        let mut decoder = Gemini::stream_decoder();
        for cut in 0..chunk.len() {
            assert!(decoder.decode(None, &chunk[..cut], &mut events).is_err(), "cut at {cut}");
        }
    }
}

#[test]
fn consecutive_turns_of_one_role_are_one_gemini_turn() {
    let mut ir = full_request();
    ir.messages.push(Message { role: Role::User, parts: vec![Part::Text("And now?".to_owned())] });
    let out = encode(&ir);
    assert_eq!(out["contents"].as_array().unwrap().len(), 3);
    assert_eq!(out["contents"][2]["parts"][2], json!({"text": "And now?"}));
}
