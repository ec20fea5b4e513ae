//! Embeds the translator in a program of its own: an Anthropic Messages request with a tool
//! goes to a provider of OpenAI Chat Completions, and the provider's streamed tool call
//! comes back as the Anthropic events a client such as Claude Code reads — `message_start`
//! first, the call as a `tool_use` block whose arguments arrive as `input_json_delta`s, the
//! usage in `message_delta`. No HTTP: the caller moves the bytes.
//!
//! `cargo run -p cliproxy-translate --example tool_call_stream`

use cliproxy_translate::{Format, Pair};
use serde_json::{Value, json};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pair = Pair::new(Format::Anthropic, Format::OpenAiChat);

    let client_request = json!({
        "model": "gpt-4.1", "max_tokens": 512, "stream": true,
        "system": "You are a weather bot.",
        "tools": [{"name": "get_weather", "description": "Current weather in a city.",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                "required": ["city"]}}],
        "tool_choice": {"type": "any"},
        "messages": [{"role": "user", "content": "Weather in Paris?"}]
    });
    let request = pair.decode_request(client_request.to_string().as_bytes())?;
    let upstream: Value = serde_json::from_slice(&pair.encode_request(&request)?)?;
    println!("upstream request:\n{}\n", serde_json::to_string_pretty(&upstream)?);
    assert_eq!(upstream["tool_choice"], "required", "Anthropic's `any` is OpenAI's `required`");
    assert_eq!(upstream["tools"][0]["function"]["name"], "get_weather");
    assert_eq!(upstream["stream_options"]["include_usage"], true, "the usage is asked for");

    // The provider's stream, one SSE event at a time, as a caller's framer hands them over.
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
            "model": "gpt-4.1", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        .to_string()
    };
    let provider_events = [
        chunk(
            json!({"role": "assistant", "tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": ""}}]}),
            Value::Null,
        ),
        chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":"}}]}), Value::Null),
        chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]}), Value::Null),
        chunk(json!({}), json!("tool_calls")),
        json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4.1",
            "choices": [], "usage": {"prompt_tokens": 40, "completion_tokens": 9, "total_tokens": 49}})
        .to_string(),
        "[DONE]".to_owned(),
    ];
    let mut stream = pair.stream();
    let mut client_bytes = Vec::new();
    for data in &provider_events {
        stream.feed(None, data.as_bytes(), &mut client_bytes)?;
    }
    stream.finish(&mut client_bytes);
    let client_stream = String::from_utf8(client_bytes)?;
    println!("client stream:\n{client_stream}");

    let names: Vec<&str> =
        client_stream.lines().filter_map(|line| line.strip_prefix("event: ")).collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(names.last(), Some(&"message_stop"));
    let arguments: String = client_stream
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .filter_map(|data| serde_json::from_str::<Value>(data).ok())
        .filter(|event| event["delta"]["type"] == "input_json_delta")
        .filter_map(|event| event["delta"]["partial_json"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(serde_json::from_str::<Value>(&arguments)?, json!({"city": "Paris"}));
    assert!(client_stream.contains(r#""stop_reason":"tool_use""#));
    assert_eq!(stream.usage().output_tokens, 9);
    println!("ok: the tool call reached the Anthropic client whole, with its usage");
    Ok(())
}
