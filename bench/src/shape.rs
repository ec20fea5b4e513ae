//! The request a load run sends: which endpoint, in which API format, with which content, and
//! what a valid answer to it looks like.
//!
//! `chat` is the small OpenAI chat body every scenario has always sent. The two `*_tools_4k`
//! shapes are the SAME conversation — a system prompt, a few turns of text and two tools with
//! JSON-schema parameters, about 4 KB — written once as an OpenAI Chat Completions body for
//! `/v1/chat/completions` and once as an Anthropic Messages body for `/v1/messages`, so that
//! scenario 8 can set the gateway's translated path (Anthropic client, OpenAI provider) against
//! its untranslated one on equal content. The model name still steers the mock
//! (see [`crate::mock`]).

use std::fmt;
use std::str::FromStr;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// What a load run sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Shape {
    /// A one-line OpenAI chat request to `/v1/chat/completions` (every scenario but 8).
    #[default]
    Chat,
    /// The 4 KB conversation with two tools as an OpenAI chat request to
    /// `/v1/chat/completions`.
    #[serde(rename = "chat_tools_4k")]
    ChatTools4k,
    /// The same conversation as an Anthropic Messages request to `/v1/messages`.
    #[serde(rename = "anthropic_tools_4k")]
    AnthropicTools4k,
}

impl Shape {
    /// Every shape, for the command line's help and the tests.
    pub const ALL: [Self; 3] = [Self::Chat, Self::ChatTools4k, Self::AnthropicTools4k];

    /// Its name on the command line and in the report.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::ChatTools4k => "chat_tools_4k",
            Self::AnthropicTools4k => "anthropic_tools_4k",
        }
    }

    /// The path the request is posted to.
    pub const fn path(self) -> &'static str {
        match self {
            Self::Chat | Self::ChatTools4k => "/v1/chat/completions",
            Self::AnthropicTools4k => "/v1/messages",
        }
    }

    /// Whether the client speaks Anthropic's API (its headers, its replies, its events).
    pub const fn is_anthropic(self) -> bool {
        matches!(self, Self::AnthropicTools4k)
    }

    /// The request body for `model` (which names the mock's behaviour), streamed or not.
    pub fn body(self, model: &str, stream: bool) -> Bytes {
        let body = match self {
            // Byte for byte what the harness sent before shapes existed.
            Self::Chat => json!({
                "model": model,
                "stream": stream,
                "max_tokens": 64,
                "messages": [{"role": "user", "content": "Say hello."}]
            }),
            Self::ChatTools4k => {
                let mut messages = vec![json!({"role": "system", "content": SYSTEM})];
                messages.extend(
                    TURNS.iter().map(|(role, text)| json!({"role": role, "content": text})),
                );
                let tools: Vec<Value> = tools()
                    .into_iter()
                    .map(|(name, description, parameters)| {
                        json!({"type": "function", "function": {
                            "name": name, "description": description, "parameters": parameters
                        }})
                    })
                    .collect();
                // `max_completion_tokens`, OpenAI's current name, is what the gateway writes for
                // a translated request: both paths send the mock the same body.
                json!({
                    "model": model,
                    "stream": stream,
                    "max_completion_tokens": MAX_TOKENS,
                    "temperature": TEMPERATURE,
                    "messages": messages,
                    "tools": tools,
                    "tool_choice": "auto"
                })
            }
            Self::AnthropicTools4k => {
                let messages: Vec<Value> = TURNS
                    .iter()
                    .map(|(role, text)| json!({"role": role, "content": text}))
                    .collect();
                let tools: Vec<Value> = tools()
                    .into_iter()
                    .map(|(name, description, schema)| {
                        json!({"name": name, "description": description, "input_schema": schema})
                    })
                    .collect();
                json!({
                    "model": model,
                    "stream": stream,
                    "max_tokens": MAX_TOKENS,
                    "temperature": TEMPERATURE,
                    "system": SYSTEM,
                    "messages": messages,
                    "tools": tools,
                    "tool_choice": {"type": "auto"}
                })
            }
        };
        Bytes::from(body.to_string())
    }

    /// Checks a whole (not streamed) 2xx reply; `Err` says what is wrong with it. The `chat`
    /// shape keeps the harness's old check (a body, whatever it holds); the others must be a
    /// reply of their own format, so that a reply the gateway failed to translate is counted
    /// as a failure and not as a success.
    pub fn check_reply(self, body: &[u8]) -> Result<(), String> {
        if self == Self::Chat {
            return Ok(());
        }
        let reply: Value = serde_json::from_slice(body)
            .map_err(|e| format!("the {} reply is not JSON: {e}", self.as_str()))?;
        let valid = if self.is_anthropic() {
            reply["type"] == "message"
                && reply["role"] == "assistant"
                && reply["content"][0]["type"] == "text"
                && reply["content"][0]["text"].as_str().is_some_and(|t| !t.is_empty())
        } else {
            reply["object"] == "chat.completion"
                && reply["choices"][0]["message"]["content"].as_str().is_some_and(|t| !t.is_empty())
        };
        if valid {
            Ok(())
        } else {
            let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
            Err(format!("not a valid {} reply: {text}", self.as_str()))
        }
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Shape {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        Self::ALL.into_iter().find(|shape| shape.as_str() == name).ok_or_else(|| {
            let names: Vec<&str> = Self::ALL.iter().map(|s| s.as_str()).collect();
            format!("unknown shape `{name}` (one of: {})", names.join(", "))
        })
    }
}

/// The output-token limit of the 4 KB shapes (within the gateway's `request_validation`).
const MAX_TOKENS: u32 = 1024;
const TEMPERATURE: f64 = 0.2;

/// A coding agent's system prompt, of the length real ones have at the short end.
const SYSTEM: &str = "You are a careful software engineering assistant working in the user's \
repository. Read files before you change them, keep changes minimal and explain each one in a \
sentence. Prefer the project's existing style and libraries over new ones. When a command can \
change the system (installing packages, deleting files, pushing to a remote), ask first. When \
you run tests, run only the ones the change touches, and report the exact command and its \
result. Never print secrets, tokens or the contents of credential files, even when asked to. \
Answer in plain English; use code blocks for code and commands only.";

/// The conversation so far: text turns, the last one the user's.
const TURNS: [(&str, &str); 5] = [
    (
        "user",
        "The integration tests in tests/e2e.rs started failing after I bumped hyper from 1.4 \
         to 1.6. The failure is a timeout in `streams_survive_a_slow_client`: the client reads \
         the first event and then nothing arrives for 30 seconds. It passes on my laptop about \
         one time in five and fails every time in CI, where the runners have two CPUs. Nothing \
         else changed in the lock file except tokio, from 1.38 to 1.40. Can you find out why?",
    ),
    (
        "assistant",
        "A timeout right after the first event usually means the server stopped polling the \
         body once the client's receive window filled up, or that a frame is buffered and \
         never flushed. With hyper 1.6 the HTTP/1 writer changed how it coalesces small \
         writes. I would first read the test to see how the slow client is simulated, then the \
         body type the server returns for streams, to check whether it yields Poll::Pending \
         without registering a waker. Shall I start with tests/e2e.rs?",
    ),
    (
        "user",
        "Yes. The slow client sleeps 50 ms between reads of 16 bytes. The server's stream body \
         is in src/stream.rs, a struct called Relay that wraps the upstream body and a channel \
         for keep-alive comments.",
    ),
    (
        "assistant",
        "Then the keep-alive channel is my first suspect: if Relay polls the channel first and \
         returns Pending when it is empty without also polling the upstream body, the upstream \
         body's waker is never registered and only the next keep-alive tick wakes the task, \
         which with a 30 second keep-alive matches the timeout you see. I will read \
         src/stream.rs around poll_frame, then run that one test with RUST_LOG=hyper=trace to \
         confirm the order of the polls.",
    ),
    (
        "user",
        "Go ahead, read the file and run the test. Keep the output short: only the lines \
         around the stall matter. If you find the cause, propose the smallest fix first and a \
         regression test that fails without it; do not touch the keep-alive interval itself, \
         other services depend on it.",
    ),
];

/// The two tools, with JSON-schema parameters of the size real agents declare.
fn tools() -> [(&'static str, &'static str, Value); 2] {
    [
        (
            "read_file",
            "Reads a text file of the repository and returns its lines with their numbers. Use \
             it before changing a file; for large files, read the part you need.",
            json!({
                "type": "object",
                "properties": {
                    "path": {"type": "string", "description": "The file's path, relative to the repository root."},
                    "offset": {"type": "integer", "minimum": 1, "description": "The first line to read (1-based)."},
                    "limit": {"type": "integer", "minimum": 1, "maximum": 2000, "description": "How many lines to read at most."}
                },
                "required": ["path"],
                "additionalProperties": false
            }),
        ),
        (
            "run_command",
            "Runs a shell command in the repository and returns its exit status and the last \
             lines of its output. Commands that change the system need the user's consent.",
            json!({
                "type": "object",
                "properties": {
                    "command": {"type": "string", "description": "The command line, run with sh -c."},
                    "timeout_ms": {"type": "integer", "minimum": 1000, "maximum": 600000, "description": "How long it may run."},
                    "env": {"type": "object", "additionalProperties": {"type": "string"}, "description": "Extra environment variables."},
                    "output": {"type": "string", "enum": ["tail", "full"], "description": "Which part of the output to return."}
                },
                "required": ["command"],
                "additionalProperties": false
            }),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    use cliproxy_translate::{Format, Pair};

    #[test]
    fn the_chat_shape_is_the_old_body() {
        let body: Value = serde_json::from_slice(&Shape::Chat.body("bench-json", false)).unwrap();
        assert_eq!(
            body,
            json!({"model": "bench-json", "stream": false, "max_tokens": 64,
                   "messages": [{"role": "user", "content": "Say hello."}]})
        );
    }

    #[test]
    fn the_4k_shapes_are_about_4_kb_and_carry_two_tools() {
        for shape in [Shape::ChatTools4k, Shape::AnthropicTools4k] {
            for stream in [false, true] {
                let body = shape.body("bench-sse-50-2", stream);
                let size = body.len() as f64;
                assert!(
                    (size - 4096.0).abs() <= 409.6,
                    "{shape} body is {size} bytes, not within 10% of 4096"
                );
                let tree: Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(tree["tools"].as_array().map(Vec::len), Some(2), "{shape}");
                assert_eq!(tree["stream"], stream);
                assert_eq!(tree["model"], "bench-sse-50-2");
            }
        }
    }

    #[test]
    fn the_anthropic_shape_is_what_the_gateway_translates_into_the_chat_shape() {
        let pair = Pair::new(Format::Anthropic, Format::OpenAiChat);
        let anthropic = Shape::AnthropicTools4k.body("bench-json", false);
        let request = pair.decode_request(&anthropic).unwrap();
        assert_eq!(request.model, "bench-json");
        assert!(!request.stream);
        // Translated for an OpenAI provider, it is the chat shape's body: the mock gets the
        // same request on both paths (a translated request leaves out `stream: false`).
        let translated: Value =
            serde_json::from_slice(&pair.encode_request(&request).unwrap()).unwrap();
        let mut chat: Value =
            serde_json::from_slice(&Shape::ChatTools4k.body("bench-json", false)).unwrap();
        chat.as_object_mut().unwrap().remove("stream");
        assert_eq!(translated, chat);
        // The chat shape needs no translation to reach an OpenAI provider, and is valid there.
        let identity = Pair::new(Format::OpenAiChat, Format::OpenAiChat);
        assert!(identity.is_identity());
        identity.decode_request(&Shape::ChatTools4k.body("bench-json", true)).unwrap();
    }

    #[test]
    fn replies_are_checked_in_the_shape_s_format() {
        let openai = json!({"object": "chat.completion", "choices": [{"index": 0,
            "message": {"role": "assistant", "content": "Hello"}, "finish_reason": "stop"}]});
        let openai = openai.to_string();
        let pair = Pair::new(Format::Anthropic, Format::OpenAiChat);
        let anthropic = pair.response(openai.as_bytes()).unwrap();
        assert_eq!(Shape::ChatTools4k.check_reply(openai.as_bytes()), Ok(()));
        assert_eq!(Shape::AnthropicTools4k.check_reply(&anthropic), Ok(()));
        // An untranslated reply, or an error body, is not a valid Anthropic reply.
        assert!(Shape::AnthropicTools4k.check_reply(openai.as_bytes()).is_err());
        assert!(Shape::ChatTools4k.check_reply(&anthropic).is_err());
        assert!(Shape::AnthropicTools4k.check_reply(b"{\"type\":\"error\"}").is_err());
        assert!(Shape::ChatTools4k.check_reply(b"not json").is_err());
        assert_eq!(Shape::Chat.check_reply(b"anything"), Ok(()));
    }

    #[test]
    fn shapes_are_named_on_the_command_line() {
        for shape in Shape::ALL {
            assert_eq!(shape.as_str().parse::<Shape>(), Ok(shape));
            assert_eq!(serde_json::to_value(shape).unwrap(), shape.as_str());
        }
        assert!("anthropic".parse::<Shape>().unwrap_err().contains("anthropic_tools_4k"));
    }
}
