//! Serves the e2e suite's canned provider replies ([`cliproxy_e2e::canned`]) with the suite's
//! own [`MockUpstream`] on `127.0.0.1:0`, so `tests/sdk/check.sh` can point the official SDKs
//! straight at them: a fixture an SDK cannot parse fails that check.
//!
//! Prints `http://127.0.0.1:PORT` and a newline on stdout once it listens; exits 0 when stdin
//! closes or on SIGTERM. A path it has no route for answers 404.
//!
//! Adding a fixture is one line in [`ROUTES`], or in [`GEMINI_METHODS`] for a Gemini model
//! method.
//!
//! For the client matrix (`tests/clients/`), it also logs every request on stderr as one JSON
//! line (`at_ms`, `method`, `path`, `model`, `stream`, `status`, and `tool_result`: whether the
//! conversation carries a tool result, `tool_call`: the tool the answer calls, if any), so that
//! a check can see what a client sent and when; the first request for a model whose name
//! contains [`RATE_LIMITED_MARK`] is answered 429 with `Retry-After`, in the API's error
//! format, so that a check can see the client wait and come back; and a model whose name
//! contains [`TOOL_MARK`] takes a tool-using turn (it calls the client's shell tool, then quotes
//! the tool's result), in each API's own format, streamed or not.

use cliproxy_e2e::canned::*;
use cliproxy_e2e::{MockUpstream, Recorded, Reply};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::io::Read as _;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::io::AsyncWriteExt;
use tokio::signal::unix::{SignalKind, signal};

/// The text every fixture sends, one word per stream event.
const WORDS: &[&str] = &["Hello", " from", " the", " fixture", " upstream"];

/// The models the routes answer for; `check.py` asks for these.
const GPT: &str = "gpt-4o-mini";
/// The model the legacy completions route answers as (the real API serves it only for this).
const INSTRUCT: &str = "gpt-3.5-turbo-instruct";
const CLAUDE: &str = "claude-sonnet-4";
const EMBEDDING: &str = "text-embedding-3-small";

/// The one vector the embeddings route answers with (exact in binary, so `check.py` can
/// compare it with `==`), and the count the token-counting route answers with.
const EMBEDDING_VECTOR: [f64; 3] = [0.25, -0.5, 0.125];
const COUNTED_TOKENS: u64 = 21;

/// One route: the request path (without the query) and the reply to a request on it.
type Route = (&'static str, fn(&Recorded) -> Reply);

/// Every route, one line each. [`by_stream`] picks the streamed fixture when the request's body
/// says `"stream": true`; the OpenAI stream carries usage only if the request asked for it.
const ROUTES: &[Route] = &[
    ("/v1/chat/completions", |r| {
        by_stream(r, openai_stream_for(r, GPT, WORDS), openai_chat(GPT, &text()))
    }),
    ("/v1/completions", |r| {
        by_stream(
            r,
            openai_completion_stream_for(r, INSTRUCT, WORDS),
            openai_completion(INSTRUCT, &text()),
        )
    }),
    ("/v1/messages", |r| {
        by_stream(r, anthropic_stream(CLAUDE, WORDS), anthropic_message(CLAUDE, &text()))
    }),
    ("/v1/responses", |r| {
        by_stream(r, openai_responses_stream(GPT, WORDS), openai_responses(GPT, &text()))
    }),
    ("/v1/embeddings", |r| float_only(r, openai_embeddings(EMBEDDING, &[&EMBEDDING_VECTOR]))),
    ("/v1/messages/count_tokens", |_| Reply::ok(anthropic_count_tokens(COUNTED_TOKENS))),
    // Model lists: OpenAI's and Anthropic's share the path (Anthropic's SDK sends
    // `anthropic-version`); Anthropic's and Gemini's come in two pages.
    ("/v1/models", |r| {
        if r.header("anthropic-version").is_empty() { openai_models() } else { anthropic_models(r) }
    }),
    ("/v1beta/models", gemini_models),
];

/// Gemini's model methods by name (the part of `POST /{version}/models/{model}:{method}` after
/// the colon), one line each: [`model_path`] answers them for any model, under `/v1beta/` and
/// `/v1/` alike, as the real API serves the same methods under both versions.
const GEMINI_METHODS: &[Route] = &[
    ("generateContent", |_| Reply::ok(gemini_generate(&text()))),
    ("streamGenerateContent", |_| Reply::sse(gemini_stream(WORDS))),
    ("countTokens", |_| Reply::ok(gemini_count_tokens(COUNTED_TOKENS))),
    ("embedContent", |_| Reply::ok(gemini_embedding(&EMBEDDING_VECTOR))),
    ("batchEmbedContents", |r| Reply::ok(gemini_batch_embeddings(&batch_vectors(r)))),
];

/// The models each fixture list names: some that `check.sh`'s gateway globs (`gpt-*`,
/// `text-embedding-*`, `claude-*`, `gemini-*`) match, and some they do not.
const OPENAI_MODELS: &[&str] =
    &["gpt-4o-mini", "gpt-4o", "text-embedding-3-small", "dall-e-3", "whisper-1", "o3-mini"];
const ANTHROPIC_PAGES: [&[&str]; 2] =
    [&["claude-sonnet-4", "claude-opus-4-1"], &["claude-haiku-4-5"]];
const GEMINI_PAGES: [&[&str]; 2] =
    [&["gemini-2.0-flash", "text-embedding-004"], &["gemini-2.5-pro", "imagen-3.0-generate-002"]];

/// `GET /v1/models` in OpenAI's shape: one page.
fn openai_models() -> Reply {
    let data: Vec<Value> = OPENAI_MODELS
        .iter()
        .map(|id| serde_json::json!({"id": id, "object": "model", "created": 1_700_000_000, "owned_by": "system"}))
        .collect();
    Reply::ok(serde_json::json!({"object": "list", "data": data}))
}

/// `GET /v1/models` in Anthropic's shape: the first page, or the second after `after_id`.
fn anthropic_models(request: &Recorded) -> Reply {
    let second = request.path_and_query.contains("after_id=");
    let page = ANTHROPIC_PAGES[usize::from(second)];
    let data: Vec<Value> = page
        .iter()
        .map(|id| serde_json::json!({"type": "model", "id": id, "display_name": id, "created_at": "2025-05-14T00:00:00Z"}))
        .collect();
    Reply::ok(serde_json::json!({"data": data, "has_more": !second,
        "first_id": page.first(), "last_id": page.last()}))
}

/// `GET /v1beta/models` in Gemini's shape: the first page, or the second with `pageToken`.
fn gemini_models(request: &Recorded) -> Reply {
    let second = request.path_and_query.contains("pageToken=");
    let models: Vec<Value> = GEMINI_PAGES[usize::from(second)]
        .iter()
        .map(|id| {
            serde_json::json!({"name": format!("models/{id}"), "displayName": id,
            "supportedGenerationMethods": ["generateContent"]})
        })
        .collect();
    let mut body = serde_json::json!({"models": models});
    if !second {
        body["nextPageToken"] = Value::from("fixture-page-2");
    }
    Reply::ok(body)
}

/// The whole text of [`WORDS`].
fn text() -> String {
    WORDS.concat()
}

/// The streamed fixture if the request body says `"stream": true`, else the JSON one.
fn by_stream(request: &Recorded, events: Vec<String>, body: Value) -> Reply {
    let streamed =
        serde_json::from_slice::<Value>(&request.body).is_ok_and(|b| b["stream"] == true);
    if streamed { Reply::sse(events) } else { Reply::ok(body) }
}

/// The embeddings fixture holds floats; the real API answers base64 when asked for it (the
/// OpenAI SDK's default), so a request for anything but `"float"` is refused rather than
/// answered in a form the real API would not send.
fn float_only(request: &Recorded, body: Value) -> Reply {
    let format = serde_json::from_slice::<Value>(&request.body)
        .ok()
        .and_then(|b| b["encoding_format"].as_str().map(str::to_owned));
    if format.as_deref() == Some("float") {
        Reply::ok(body)
    } else {
        Reply::Json {
            status: 400,
            headers: Vec::new(),
            body: format!(
                r#"{{"error":{{"message":"the embeddings fixture answers encoding_format \"float\" only, not {format:?}","type":"invalid_request_error"}}}}"#
            ),
        }
    }
}

/// A model whose name contains this is rate limited once: its first request is answered 429
/// with `Retry-After: RETRY_AFTER_SECONDS`, every later one as usual.
const RATE_LIMITED_MARK: &str = "ratelimit-once";
const RETRY_AFTER_SECONDS: u64 = 2;

/// The rate-limited models that have had their 429.
static RATE_LIMITED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// The model a request names: in the body (OpenAI, Anthropic) or in the path (Gemini's
/// `models/{model}:{method}`).
fn model_of(request: &Recorded, path: &str) -> Option<String> {
    serde_json::from_slice::<Value>(&request.body)
        .ok()
        .and_then(|body| body["model"].as_str().map(str::to_owned))
        .or_else(|| {
            let (_, rest) = path.split_once("/models/")?;
            Some(rest.split(':').next().unwrap_or(rest).to_owned())
        })
}

/// Whether the request asks for a stream: `"stream": true`, or Gemini's streaming method.
fn is_streamed(request: &Recorded, path: &str) -> bool {
    path.ends_with(":streamGenerateContent")
        || serde_json::from_slice::<Value>(&request.body).is_ok_and(|b| b["stream"] == true)
}

/// The 429 each API answers when a rate limit is hit, in its own error format.
fn rate_limited(path: &str) -> Reply {
    let message = "Rate limit reached for this fixture model; try again later.";
    let body = if path.starts_with("/v1/messages") {
        json!({"type": "error", "error": {"type": "rate_limit_error", "message": message}})
    } else if path.contains("/models/") {
        json!({"error": {"code": 429, "message": message, "status": "RESOURCE_EXHAUSTED"}})
    } else {
        json!({"error": {"message": message, "type": "requests", "param": null,
            "code": "rate_limit_exceeded"}})
    };
    Reply::Json {
        status: 429,
        headers: vec![("retry-after", RETRY_AFTER_SECONDS.to_string())],
        body: body.to_string(),
    }
}

/// One vector per request of a `batchEmbedContents` body (`{"requests": [...]}`), in order:
/// [`EMBEDDING_VECTOR`] times 1, 2, 3, ... (still exact in binary), so that `check.py` sees
/// which vector answers which text.
fn batch_vectors(request: &Recorded) -> Vec<Vec<f64>> {
    let body = serde_json::from_slice::<Value>(&request.body).unwrap_or_default();
    let count = body["requests"].as_array().map_or(0, Vec::len);
    (1..=count).map(|n| EMBEDDING_VECTOR.iter().map(|x| x * n as f64).collect()).collect()
}

/// The paths below `/v1/models/` and `/v1beta/models/` (not the lists themselves, which would
/// be exact routes): `POST .../{model}:{method}` is a Gemini method of [`GEMINI_METHODS`], and
/// `GET .../{id}` one model. `/v1/models/{id}` is shared by three APIs, so the model takes the
/// shape of the one whose SDK asks, told by the headers it sends (as the gateway tells it):
/// Anthropic's send `anthropic-version`, Google's `x-goog-api-key`; OpenAI's neither.
fn model_path(request: &Recorded, path: &str) -> Option<Reply> {
    let (rest, gemini) =
        match (path.strip_prefix("/v1beta/models/"), path.strip_prefix("/v1/models/")) {
            (Some(rest), _) => (rest, true),
            (None, Some(rest)) => (rest, !request.header("x-goog-api-key").is_empty()),
            (None, None) => return None,
        };
    if rest.is_empty() || rest.contains('/') {
        return None;
    }
    match request.method.as_str() {
        "POST" => {
            let (_, method) = rest.rsplit_once(':')?;
            let (_, reply) = GEMINI_METHODS.iter().find(|(name, _)| *name == method)?;
            Some(reply(request))
        }
        "GET" if gemini => Some(Reply::ok(gemini_model(rest))),
        "GET" if !request.header("anthropic-version").is_empty() => {
            Some(Reply::ok(anthropic_model(rest)))
        }
        "GET" => Some(Reply::ok(openai_model(rest))),
        _ => None,
    }
}

/// A model whose name contains this takes a tool-using turn, as a coding CLI meets it: asked
/// with the client's tools and no tool result yet, the fixture answers with one call of the
/// client's shell tool ([`SHELL_TOOLS`]); asked again with the tool's result, it answers
/// [`TOOL_SAID`] followed by the result's text. The client matrix routes such a model through
/// the gateway's translation to a provider of another format, so that the call, the client
/// running it and the result coming back all cross the translation.
const TOOL_MARK: &str = "toolcall";

/// The command the fixture asks the shell tool to run. It prints `cliproxy-tool-ok` without
/// holding that text itself, so a reply can show the marker only if the tool ran: an error
/// message that quotes the command does not.
const TOOL_COMMAND: &str = "printf 'cliproxy-%s-ok\\n' tool";

/// What the fixture says once it has the tool's result, before the result's text.
const TOOL_SAID: &str = "Tool said: ";

/// The ids of the one tool call (the API's own prefixes, which some clients expect).
const CALL_ID: &str = "call_e2e_tool";
const TOOLU_ID: &str = "toolu_e2e_tool";

/// The usage of a reply holding the tool call (the text replies keep the canned usage).
const TOOL_INPUT_TOKENS: u64 = 31;
const TOOL_OUTPUT_TOKENS: u64 = 12;

/// The shell tools of the coding CLIs, by the name they declare, each with the arguments that
/// run [`TOOL_COMMAND`] in its own schema. The fixture calls the first tool of the request's
/// list that is named here.
const SHELL_TOOLS: &[ShellTool] = &[
    // Claude Code: `{command, description}`.
    (
        "Bash",
        || json!({"command": TOOL_COMMAND, "description": "Print the client matrix's marker"}),
    ),
    // Codex CLI 0.1xx: a command line in `cmd`, run in a PTY.
    ("exec_command", || json!({"cmd": TOOL_COMMAND})),
    // Older Codex CLI: an argv in `command`.
    ("shell", || json!({"command": ["bash", "-lc", TOOL_COMMAND]})),
    // Gemini CLI.
    (
        "run_shell_command",
        || json!({"command": TOOL_COMMAND, "description": "Print the client matrix's marker"}),
    ),
];

/// A shell tool's name and the arguments that run [`TOOL_COMMAND`] with it.
type ShellTool = (&'static str, fn() -> Value);

/// The provider API a generating request is for, told by its path.
#[derive(Clone, Copy)]
enum Api {
    Chat,
    Responses,
    Messages,
    Gemini,
}

impl Api {
    fn of(path: &str) -> Option<Self> {
        match path {
            "/v1/chat/completions" => Some(Self::Chat),
            "/v1/responses" => Some(Self::Responses),
            "/v1/messages" => Some(Self::Messages),
            _ if path.contains("/models/")
                && (path.ends_with(":generateContent")
                    || path.ends_with(":streamGenerateContent")) =>
            {
                Some(Self::Gemini)
            }
            _ => None,
        }
    }
}

/// The names of the function tools a request declares, in its order.
fn declared_tools(api: Api, body: &Value) -> Vec<&str> {
    let tools = body["tools"].as_array().map(Vec::as_slice).unwrap_or_default();
    let functions: Vec<&Value> = match api {
        Api::Chat => tools.iter().map(|tool| &tool["function"]).collect(),
        Api::Responses | Api::Messages => tools.iter().collect(),
        Api::Gemini => tools
            .iter()
            .filter_map(|tool| tool["functionDeclarations"].as_array())
            .flatten()
            .collect(),
    };
    functions.into_iter().filter_map(|function| function["name"].as_str()).collect()
}

/// The shell tool to call and its arguments, if the request declares one the fixture knows.
fn shell_tool(api: Api, body: &Value) -> Option<(&'static str, Value)> {
    declared_tools(api, body).into_iter().find_map(|declared| {
        SHELL_TOOLS.iter().find(|(name, _)| *name == declared).map(|(name, args)| (*name, args()))
    })
}

/// The text of the conversation's last tool result, if it has one: an OpenAI `tool` message,
/// a Responses `function_call_output` item, an Anthropic `tool_result` block, a Gemini
/// `functionResponse` part.
fn tool_result(api: Api, body: &Value) -> Option<String> {
    let list = |key: &str| body[key].as_array().map(Vec::as_slice).unwrap_or_default();
    let parts = |key: &str, parts: &'static str| {
        list(key).iter().filter_map(move |m| m[parts].as_array()).flatten().collect::<Vec<_>>()
    };
    let result = match api {
        Api::Chat => {
            list("messages").iter().rev().find(|m| m["role"] == "tool").map(|m| &m["content"])
        }
        Api::Responses => list("input")
            .iter()
            .rev()
            .find(|item| item["type"] == "function_call_output")
            .map(|item| &item["output"]),
        Api::Messages => parts("messages", "content")
            .into_iter()
            .rev()
            .find(|block| block["type"] == "tool_result")
            .map(|block| &block["content"]),
        Api::Gemini => parts("contents", "parts")
            .into_iter()
            .rev()
            .find_map(|part| part.get("functionResponse"))
            .map(|response| &response["response"]),
    }?;
    let mut texts = Vec::new();
    strings(result, &mut texts);
    Some(texts.join("\n"))
}

/// Every string in `value`, depth first, but the `type` tags of content blocks: a result is a
/// string, an array of text blocks, or (Gemini) any object.
fn strings<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::String(text) => out.push(text),
        Value::Array(items) => items.iter().for_each(|item| strings(item, out)),
        Value::Object(fields) => fields
            .iter()
            .filter(|(key, _)| key.as_str() != "type")
            .for_each(|(_, field)| strings(field, out)),
        _ => {}
    }
}

/// The reply of a tool-using turn: the text holding the tool's result when the conversation
/// has one, else the call of the shell tool.
fn tool_turn(
    request: &Recorded,
    api: Api,
    model: &str,
    result: Option<&str>,
    call: Option<&(&'static str, Value)>,
) -> Option<Reply> {
    let streamed =
        is_streamed(request, request.path_and_query.split('?').next().unwrap_or_default());
    if let Some(result) = result {
        let text = format!("{TOOL_SAID}{}", result.trim());
        let words: Vec<&str> = text.split_inclusive(' ').collect();
        return Some(match api {
            Api::Chat => by_stream(
                request,
                openai_stream_for(request, model, &words),
                openai_chat(model, &text),
            ),
            Api::Responses => by_stream(
                request,
                openai_responses_stream(model, &words),
                openai_responses(model, &text),
            ),
            Api::Messages => {
                by_stream(request, anthropic_stream(model, &words), anthropic_message(model, &text))
            }
            Api::Gemini if streamed => Reply::sse(gemini_stream(&words)),
            Api::Gemini => Reply::ok(gemini_generate(&text)),
        });
    }
    let (name, args) = call?;
    Some(match api {
        Api::Chat if streamed => Reply::sse(chat_tool_stream(request, model, name, args)),
        Api::Chat => Reply::ok(chat_tool_call(model, name, args)),
        Api::Responses if streamed => Reply::sse(responses_tool_stream(model, name, args)),
        Api::Responses => Reply::ok(responses_tool_call(model, name, args)),
        Api::Messages if streamed => Reply::sse(anthropic_tool_stream(model, name, args)),
        Api::Messages => Reply::ok(anthropic_tool_call(model, name, args)),
        Api::Gemini if streamed => Reply::sse(vec![event(None, &gemini_tool_call(name, args))]),
        Api::Gemini => Reply::ok(gemini_tool_call(name, args)),
    })
}

/// The arguments as the JSON text the APIs stream, cut in three pieces (on character
/// boundaries) so that a client must join argument deltas.
fn argument_pieces(args: &Value) -> Vec<String> {
    let text = args.to_string();
    let chars: Vec<char> = text.chars().collect();
    chars.chunks(chars.len().div_ceil(3).max(1)).map(|piece| piece.iter().collect()).collect()
}

/// An OpenAI chat completion whose message calls `name`.
fn chat_tool_call(model: &str, name: &str, args: &Value) -> Value {
    json!({
        "id": "chatcmpl-e2e-tool", "object": "chat.completion", "created": 1_763_769_600,
        "model": model,
        "choices": [{"index": 0, "finish_reason": "tool_calls", "logprobs": null,
            "message": {"role": "assistant", "content": null, "refusal": null,
                "tool_calls": [{"id": CALL_ID, "type": "function",
                    "function": {"name": name, "arguments": args.to_string()}}]}}],
        "usage": {"prompt_tokens": TOOL_INPUT_TOKENS, "completion_tokens": TOOL_OUTPUT_TOKENS,
            "total_tokens": TOOL_INPUT_TOKENS + TOOL_OUTPUT_TOKENS}
    })
}

/// The same call streamed as the API streams it: a first chunk with the role and the call's
/// id and name (`tool_calls[0]` with `index`), one chunk per argument piece (the same
/// `index`, only `arguments`), a chunk with the finish reason `tool_calls`, the usage chunk if
/// the request asked for it, `[DONE]`.
fn chat_tool_stream(request: &Recorded, model: &str, name: &str, args: &Value) -> Vec<String> {
    let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
    let include_usage = body.pointer("/stream_options/include_usage") == Some(&json!(true));
    let chunk = |delta: Value, finish: Value| {
        let mut chunk = json!({"id": "chatcmpl-e2e-tool", "object": "chat.completion.chunk",
            "created": 1_763_769_600, "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]});
        if include_usage {
            chunk["usage"] = Value::Null;
        }
        event(None, &chunk)
    };
    let mut events = vec![chunk(
        json!({"role": "assistant", "content": null, "tool_calls": [{"index": 0, "id": CALL_ID,
            "type": "function", "function": {"name": name, "arguments": ""}}]}),
        Value::Null,
    )];
    for piece in argument_pieces(args) {
        events.push(chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}),
            Value::Null,
        ));
    }
    events.push(chunk(json!({}), json!("tool_calls")));
    if include_usage {
        events.push(event(
            None,
            &json!({"id": "chatcmpl-e2e-tool", "object": "chat.completion.chunk",
                "created": 1_763_769_600, "model": model, "choices": [],
                "usage": {"prompt_tokens": TOOL_INPUT_TOKENS, "completion_tokens": TOOL_OUTPUT_TOKENS,
                    "total_tokens": TOOL_INPUT_TOKENS + TOOL_OUTPUT_TOKENS}}),
        ));
    }
    events.push("data: [DONE]\n\n".to_owned());
    events
}

/// A Responses API `response` object (the fields the API always sends), for the tool call.
fn responses_object(model: &str, status: &str, output: Value, usage: Value) -> Value {
    json!({
        "id": "resp_e2e_tool", "object": "response", "created_at": 1_763_769_600,
        "status": status, "error": null, "incomplete_details": null, "instructions": null,
        "max_output_tokens": null, "model": model, "output": output,
        "parallel_tool_calls": true, "previous_response_id": null,
        "reasoning": {"effort": null, "summary": null}, "store": true, "temperature": 1.0,
        "text": {"format": {"type": "text"}}, "tool_choice": "auto", "tools": [],
        "top_p": 1.0, "truncation": "disabled", "usage": usage, "user": null, "metadata": {}
    })
}

fn responses_tool_usage() -> Value {
    json!({"input_tokens": TOOL_INPUT_TOKENS, "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": TOOL_OUTPUT_TOKENS, "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": TOOL_INPUT_TOKENS + TOOL_OUTPUT_TOKENS})
}

/// The `function_call` output item of a Responses reply.
fn responses_call_item(status: &str, name: &str, arguments: &str) -> Value {
    json!({"id": "fc_e2e_tool", "type": "function_call", "status": status,
        "arguments": arguments, "call_id": CALL_ID, "name": name})
}

/// A Responses API reply whose one output item calls `name`.
fn responses_tool_call(model: &str, name: &str, args: &Value) -> Value {
    let item = responses_call_item("completed", name, &args.to_string());
    responses_object(model, "completed", json!([item]), responses_tool_usage())
}

/// The same call streamed in the API's event order: `response.created`,
/// `response.in_progress`, `response.output_item.added` (the `function_call` item, empty
/// arguments), one `response.function_call_arguments.delta` per piece,
/// `response.function_call_arguments.done`, `response.output_item.done`,
/// `response.completed` with the usage; each event named and numbered.
fn responses_tool_stream(model: &str, name: &str, args: &Value) -> Vec<String> {
    let arguments = args.to_string();
    let item = responses_call_item("completed", name, &arguments);
    let mut payloads = vec![
        json!({"type": "response.created",
            "response": responses_object(model, "in_progress", json!([]), Value::Null)}),
        json!({"type": "response.in_progress",
            "response": responses_object(model, "in_progress", json!([]), Value::Null)}),
        json!({"type": "response.output_item.added", "output_index": 0,
            "item": responses_call_item("in_progress", name, "")}),
    ];
    for piece in argument_pieces(args) {
        payloads.push(json!({"type": "response.function_call_arguments.delta",
            "item_id": "fc_e2e_tool", "output_index": 0, "delta": piece}));
    }
    payloads.extend([
        json!({"type": "response.function_call_arguments.done", "item_id": "fc_e2e_tool",
            "output_index": 0, "arguments": arguments}),
        json!({"type": "response.output_item.done", "output_index": 0, "item": item}),
        json!({"type": "response.completed",
            "response": responses_object(model, "completed", json!([item]), responses_tool_usage())}),
    ]);
    payloads
        .into_iter()
        .enumerate()
        .map(|(sequence, mut payload)| {
            payload["sequence_number"] = json!(sequence);
            let name = payload["type"].as_str().unwrap_or_default().to_owned();
            event(Some(&name), &payload)
        })
        .collect()
}

/// An Anthropic message whose one content block is a `tool_use` of `name`.
fn anthropic_tool_call(model: &str, name: &str, args: &Value) -> Value {
    json!({
        "id": "msg_e2e_tool", "type": "message", "role": "assistant", "model": model,
        "content": [{"type": "tool_use", "id": TOOLU_ID, "name": name, "input": args}],
        "stop_reason": "tool_use", "stop_sequence": null,
        "usage": {"input_tokens": TOOL_INPUT_TOKENS, "output_tokens": TOOL_OUTPUT_TOKENS}
    })
}

/// The same message streamed in the API's order: `message_start`, `content_block_start` with
/// the `tool_use` block (empty input), `ping`, `content_block_delta`s of `input_json_delta`
/// (the first one empty, as the API sends it, then one per piece), `content_block_stop`,
/// `message_delta` (stop reason `tool_use`, output tokens), `message_stop`.
fn anthropic_tool_stream(model: &str, name: &str, args: &Value) -> Vec<String> {
    let mut events = vec![
        event(
            Some("message_start"),
            &json!({"type": "message_start", "message": {"id": "msg_e2e_tool", "type": "message",
                "role": "assistant", "model": model, "content": [], "stop_reason": null,
                "stop_sequence": null,
                "usage": {"input_tokens": TOOL_INPUT_TOKENS, "output_tokens": 1}}}),
        ),
        event(
            Some("content_block_start"),
            &json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "tool_use", "id": TOOLU_ID, "name": name, "input": {}}}),
        ),
        event(Some("ping"), &json!({"type": "ping"})),
    ];
    let pieces = std::iter::once(String::new()).chain(argument_pieces(args));
    for piece in pieces {
        events.push(event(
            Some("content_block_delta"),
            &json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "input_json_delta", "partial_json": piece}}),
        ));
    }
    events.extend([
        event(Some("content_block_stop"), &json!({"type": "content_block_stop", "index": 0})),
        event(
            Some("message_delta"),
            &json!({"type": "message_delta",
                "delta": {"stop_reason": "tool_use", "stop_sequence": null},
                "usage": {"output_tokens": TOOL_OUTPUT_TOKENS}}),
        ),
        event(Some("message_stop"), &json!({"type": "message_stop"})),
    ]);
    events
}

/// A Gemini reply whose one part is a `functionCall` of `name`. Gemini sends a call whole,
/// never in pieces: its stream is this same object as its one event.
fn gemini_tool_call(name: &str, args: &Value) -> Value {
    json!({
        "candidates": [{"content": {"role": "model",
            "parts": [{"functionCall": {"name": name, "args": args}}]},
            "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": TOOL_INPUT_TOKENS,
            "candidatesTokenCount": TOOL_OUTPUT_TOKENS,
            "totalTokenCount": TOOL_INPUT_TOKENS + TOOL_OUTPUT_TOKENS}
    })
}

fn answer(request: &Recorded) -> Reply {
    let path = request.path_and_query.split('?').next().unwrap_or_default();
    let model = model_of(request, path);
    let limited_now = model.as_deref().is_some_and(|model| {
        model.contains(RATE_LIMITED_MARK)
            && RATE_LIMITED
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(model.to_owned())
    });
    // Whether the conversation carries a tool result is logged for every generating request,
    // so that a check can see a client send the result back; the tool-using turn itself is
    // only for a model with the mark.
    let body = serde_json::from_slice::<Value>(&request.body).unwrap_or_default();
    let api = Api::of(path);
    let result = api.and_then(|api| tool_result(api, &body));
    let tool_model = model.as_deref().filter(|model| model.contains(TOOL_MARK));
    let call = match (api, tool_model, &result) {
        (Some(api), Some(_), None) => shell_tool(api, &body),
        _ => None,
    };
    let turn = match (api, tool_model) {
        (Some(api), Some(model)) => {
            tool_turn(request, api, model, result.as_deref(), call.as_ref())
        }
        _ => None,
    };
    let reply = match turn {
        _ if limited_now => rate_limited(path),
        Some(turn) => turn,
        None => route(request, path),
    };
    let status = match &reply {
        Reply::Json { status, .. } => *status,
        _ => 200,
    };
    let at_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
    eprintln!(
        "{}",
        json!({"at_ms": at_ms as u64, "method": request.method, "path": path, "model": model,
            "stream": is_streamed(request, path), "status": status,
            "tool_result": result.is_some(), "tool_call": call.as_ref().map(|(name, _)| *name)})
    );
    reply
}

fn route(request: &Recorded, path: &str) -> Reply {
    let reply = match ROUTES.iter().find(|(route, _)| *route == path) {
        Some((_, reply)) => Some(reply(request)),
        None => model_path(request, path),
    };
    match reply {
        Some(reply) => reply,
        None => Reply::Json {
            status: 404,
            headers: Vec::new(),
            body: format!(r#"{{"error":{{"message":"no fixture for {path}"}}}}"#),
        },
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let mut terminate = signal(SignalKind::terminate())?;
    let upstream = MockUpstream::start(answer).await;
    let mut stdout = tokio::io::stdout();
    stdout.write_all(format!("{}\n", upstream.url()).as_bytes()).await?;
    stdout.flush().await?;
    // The parent holds stdin open for as long as it needs the fixtures; its end closing (the
    // parent exiting, however it exits) ends this process too. The read blocks, so it runs on
    // a plain thread: a read on tokio's stdin cannot be cancelled and would hold up the
    // runtime's shutdown after SIGTERM.
    let (closed, stdin_closed) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let mut sink = [0u8; 256];
        let mut stdin = std::io::stdin().lock();
        while stdin.read(&mut sink).is_ok_and(|n| n > 0) {}
        let _ = closed.send(());
    });
    tokio::select! {
        _ = stdin_closed => {}
        _ = terminate.recv() => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! The tool-using turn in each format, as the client matrix relies on it: the call's
    //! arguments, joined from the stream's pieces where there are some, are the shell tool's;
    //! the answer after the result quotes it; without the mark or a known tool, nothing changes.

    use super::*;

    /// One generating request to `path` with `body`.
    fn request(path: &str, body: Value) -> Recorded {
        Recorded {
            method: "POST".to_owned(),
            path_and_query: path.to_owned(),
            headers: http::HeaderMap::new(),
            body: body.to_string().into(),
        }
    }

    /// The reply's body (JSON), or its events' `data` (SSE), as JSON values.
    fn payloads(reply: Reply) -> Vec<Value> {
        match reply {
            Reply::Json { status, body, .. } => {
                assert_eq!(status, 200, "{body}");
                vec![serde_json::from_str(&body).expect("a JSON reply")]
            }
            Reply::Sse { events, .. } => events
                .iter()
                .filter_map(|event| event.lines().find_map(|l| l.strip_prefix("data: ")))
                .filter(|data| *data != "[DONE]")
                .map(|data| serde_json::from_str(data).expect("a JSON event"))
                .collect(),
            Reply::Stall => panic!("the fixture stalled"),
        }
    }

    /// One format: its paths (whole and streamed), a request declaring a client's tools (the
    /// shell tool second, so that the first known one is picked, not the first one), the same
    /// conversation with the tool's result, and how to read the called tool's name and
    /// arguments (joined from the pieces) and the text from the reply's payloads.
    struct Case {
        path: &'static str,
        stream_path: &'static str,
        ask: Value,
        answered: Value,
        call: fn(&[Value]) -> (String, String),
        text: fn(&[Value]) -> String,
    }

    fn join(payloads: &[Value], pointer: &str) -> String {
        payloads.iter().filter_map(|p| p.pointer(pointer).and_then(Value::as_str)).collect()
    }

    fn cases() -> Vec<Case> {
        let result = "cliproxy-tool-ok\n";
        vec![
            Case {
                path: "/v1/chat/completions",
                stream_path: "/v1/chat/completions",
                ask: json!({"model": "gpt-4o-mini-toolcall", "messages": [{"role": "user", "content": "go"}],
                    "tools": [{"type": "function", "function": {"name": "Read"}},
                              {"type": "function", "function": {"name": "Bash"}}],
                    "stream_options": {"include_usage": true}}),
                answered: json!({"model": "gpt-4o-mini-toolcall", "messages": [{"role": "user", "content": "go"},
                    {"role": "assistant", "tool_calls": [{"id": CALL_ID, "type": "function",
                        "function": {"name": "Bash", "arguments": "{}"}}]},
                    {"role": "tool", "tool_call_id": CALL_ID, "content": [{"type": "text", "text": result}]}],
                    "tools": [{"type": "function", "function": {"name": "Bash"}}]}),
                call: |p| {
                    let name = join(p, "/choices/0/message/tool_calls/0/function/name")
                        + &join(p, "/choices/0/delta/tool_calls/0/function/name");
                    let args = join(p, "/choices/0/message/tool_calls/0/function/arguments")
                        + &join(p, "/choices/0/delta/tool_calls/0/function/arguments");
                    (name, args)
                },
                text: |p| {
                    join(p, "/choices/0/message/content") + &join(p, "/choices/0/delta/content")
                },
            },
            Case {
                path: "/v1/responses",
                stream_path: "/v1/responses",
                ask: json!({"model": "gpt-4o-mini-toolcall", "input": "go",
                    "tools": [{"type": "function", "name": "write_stdin"},
                              {"type": "function", "name": "exec_command"}]}),
                answered: json!({"model": "gpt-4o-mini-toolcall", "input": [
                    {"type": "function_call", "call_id": CALL_ID, "name": "exec_command", "arguments": "{}"},
                    {"type": "function_call_output", "call_id": CALL_ID, "output": result}],
                    "tools": [{"type": "function", "name": "exec_command"}]}),
                call: |p| {
                    // A stream's `output_item.added` holds the name, its deltas the arguments.
                    let item = p.iter().find_map(|e| e.get("item")).unwrap_or(&p[0]["output"][0]);
                    let deltas: String = p
                        .iter()
                        .filter(|e| e["type"] == "response.function_call_arguments.delta")
                        .filter_map(|e| e["delta"].as_str())
                        .collect();
                    let args = if p.len() > 1 {
                        deltas
                    } else {
                        item["arguments"].as_str().unwrap_or_default().to_owned()
                    };
                    (item["name"].as_str().unwrap_or_default().to_owned(), args)
                },
                text: |p| {
                    let deltas: String = p
                        .iter()
                        .filter(|e| e["type"] == "response.output_text.delta")
                        .filter_map(|e| e["delta"].as_str())
                        .collect();
                    deltas + &join(p, "/output/0/content/0/text")
                },
            },
            Case {
                path: "/v1/messages",
                stream_path: "/v1/messages",
                ask: json!({"model": "claude-sonnet-4-toolcall", "max_tokens": 100,
                    "messages": [{"role": "user", "content": "go"}],
                    "tools": [{"name": "Read"}, {"name": "exec_command"}]}),
                answered: json!({"model": "claude-sonnet-4-toolcall", "max_tokens": 100, "messages": [
                    {"role": "user", "content": "go"},
                    {"role": "assistant", "content": [{"type": "tool_use", "id": TOOLU_ID, "name": "exec_command", "input": {}}]},
                    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": TOOLU_ID,
                        "content": [{"type": "text", "text": result}]}]}],
                    "tools": [{"name": "exec_command"}]}),
                call: |p| {
                    let name = join(p, "/content/0/name") + &join(p, "/content_block/name");
                    let args = p[0]
                        .pointer("/content/0/input")
                        .map_or_else(|| join(p, "/delta/partial_json"), Value::to_string);
                    (name, args)
                },
                text: |p| join(p, "/content/0/text") + &join(p, "/delta/text"),
            },
            Case {
                path: "/v1beta/models/gemini-2.0-flash-toolcall:generateContent",
                stream_path: "/v1beta/models/gemini-2.0-flash-toolcall:streamGenerateContent?alt=sse",
                ask: json!({"contents": [{"role": "user", "parts": [{"text": "go"}]}],
                    "tools": [{"functionDeclarations": [{"name": "Read"}, {"name": "run_shell_command"}]}]}),
                answered: json!({"contents": [{"role": "user", "parts": [{"text": "go"}]},
                    {"role": "model", "parts": [{"functionCall": {"name": "run_shell_command", "args": {}}}]},
                    {"role": "user", "parts": [{"functionResponse": {"name": "run_shell_command",
                        "response": {"output": result}}}]}],
                    "tools": [{"functionDeclarations": [{"name": "run_shell_command"}]}]}),
                call: |p| {
                    let call = &p[0]["candidates"][0]["content"]["parts"][0]["functionCall"];
                    (call["name"].as_str().unwrap_or_default().to_owned(), call["args"].to_string())
                },
                text: |p| join(p, "/candidates/0/content/parts/0/text"),
            },
        ]
    }

    /// `body` sent to the case's streamed path (with `"stream": true` where the API says it
    /// in the body), or to its whole one.
    fn with_stream(case: &Case, body: &Value, streamed: bool) -> Recorded {
        let mut body = body.clone();
        if streamed && !case.stream_path.contains(':') {
            body["stream"] = json!(true);
        }
        request(if streamed { case.stream_path } else { case.path }, body)
    }

    #[test]
    fn each_format_calls_the_shell_tool_then_quotes_its_result() {
        for case in cases() {
            for streamed in [false, true] {
                let what = format!("{} (streamed: {streamed})", case.path);
                let (name, args) =
                    (case.call)(&payloads(answer(&with_stream(&case, &case.ask, streamed))));
                let (_, want) = SHELL_TOOLS.iter().find(|(known, _)| *known == name).expect(&what);
                let args: Value = serde_json::from_str(&args).expect(&what);
                assert_eq!(args, want(), "{what}");
                let text =
                    (case.text)(&payloads(answer(&with_stream(&case, &case.answered, streamed))));
                assert_eq!(text, "Tool said: cliproxy-tool-ok", "{what}");
            }
        }
    }

    #[test]
    fn without_the_mark_or_a_known_tool_the_usual_text() {
        for case in cases() {
            let unmarked = |body: &Value| {
                let text = body.to_string().replace(TOOL_MARK, "plain");
                serde_json::from_str::<Value>(&text).expect("still JSON")
            };
            let path = case.path.replace(TOOL_MARK, "plain");
            for body in [unmarked(&case.ask), unmarked(&case.answered)] {
                let text = (case.text)(&payloads(answer(&request(&path, body))));
                assert_eq!(text, WORDS.concat(), "{path}");
            }
            let mut unknown = case.ask.clone();
            let names = unknown["tools"]
                .to_string()
                .replace("Bash", "Other")
                .replace("exec_command", "Other")
                .replace("run_shell_command", "Other");
            unknown["tools"] = serde_json::from_str(&names).expect("tools");
            let text = (case.text)(&payloads(answer(&request(case.path, unknown))));
            assert_eq!(text, WORDS.concat(), "{} with no shell tool", case.path);
        }
    }
}
