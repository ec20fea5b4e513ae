//! OpenAI Chat Completions (`/v1/chat/completions`): requests, whole replies, stream chunks
//! and errors.
//!
//! Requests: `system`/`developer` messages become the system prompt (in order; a system
//! message in the middle of the conversation moves to the front, the only place the other
//! formats have one); `tool` messages become tool results in a user turn; an assistant's
//! `reasoning_content` (DeepSeek, vLLM) becomes a thinking part. Refused for other formats
//! (kept in [`Request::unmapped`]): `n` other than 1, `logprobs`, `top_logprobs`,
//! `logit_bias`, `audio`, `modalities` other than text, `prediction`, `web_search_options`,
//! the legacy `functions`/`function_call`, tools of a type other than `function`, the
//! `allowed_tools` tool choice, and content parts other than text and images. Dropped (they
//! change nothing in the reply): `user`, `store`, `metadata`, `service_tier`,
//! `stream_options` (the encoder asks for usage itself), `verbosity`, a message's `name`, an
//! image's `detail`, the JSON schema's `description`.
//!
//! Provider requests: the output limit is sent as `max_completion_tokens` (the reasoning models
//! refuse `max_tokens`); a streamed request asks for the usage chunk (`stream_options`);
//! thinking parts are dropped (the Chat API takes no reasoning back); a tool result's error
//! flag is dropped (its text says what failed) and its images follow in a user message (a
//! `tool` message holds text only); `top_k` is refused.

pub(super) mod shared;
mod stream;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use self::shared::{culprit, locate_in_array, parse};
use crate::Format;
use crate::codec::{Codec, StreamDecoder, StreamEncoder};
use crate::error::{Error, Result};
use crate::ir::{
    ApiError, Image, Message, OutputFormat, Part, Request, Response, Role, Sampling, StopReason,
    SystemPart, Thinking, Tool, ToolCall, ToolChoice, ToolResult, ToolResultPart, Usage,
};

/// The codec of [`Format::OpenAiChat`].
#[derive(Debug)]
pub(crate) struct OpenAiChat;

impl Codec for OpenAiChat {
    fn decode_request(body: &[u8]) -> Result<Request> {
        let wire: WireRequest = parse(body, locate_request)?;
        wire.into_ir()
    }

    fn encode_request(request: &Request) -> Result<Vec<u8>> {
        encode_request(request)
    }

    fn decode_response(body: &[u8]) -> Result<Response> {
        let wire: WireResponse = parse(body, |value| culprit::<WireResponse>(value, ""))?;
        wire.into_ir()
    }

    fn encode_response(response: &Response) -> Result<Vec<u8>> {
        encode_response(response)
    }

    fn decode_error(status: u16, body: &[u8]) -> ApiError {
        shared::decode_error(status, body)
    }

    fn encode_error(error: &ApiError) -> Vec<u8> {
        shared::encode_error(error)
    }

    fn stream_decoder() -> Box<dyn StreamDecoder> {
        Box::new(stream::ChunkDecoder::default())
    }

    fn stream_encoder() -> Box<dyn StreamEncoder> {
        Box::new(stream::ChunkEncoder::default())
    }
}

// ---------------------------------------------------------------------------------------
// Requests, as a client sends them.

#[derive(Deserialize)]
struct WireRequest {
    model: String,
    messages: Vec<WireMessage>,
    #[serde(default)]
    tools: Option<Vec<WireTool>>,
    #[serde(default)]
    tool_choice: Option<WireToolChoice>,
    #[serde(default)]
    parallel_tool_calls: Option<bool>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    max_completion_tokens: Option<u64>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    presence_penalty: Option<f64>,
    #[serde(default)]
    frequency_penalty: Option<f64>,
    #[serde(default)]
    seed: Option<i64>,
    #[serde(default)]
    stop: Option<StringOrList>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    response_format: Option<WireResponseFormat>,
    #[serde(default)]
    reasoning_effort: Option<String>,
    // Fields that change the reply and that no other format can say: kept by name so that
    // another format's encoder refuses them (a JSON null is the same as absent).
    #[serde(default)]
    n: Option<Value>,
    #[serde(default)]
    logprobs: Option<Value>,
    #[serde(default)]
    top_logprobs: Option<Value>,
    #[serde(default)]
    logit_bias: Option<Value>,
    #[serde(default)]
    audio: Option<Value>,
    #[serde(default)]
    modalities: Option<Value>,
    #[serde(default)]
    prediction: Option<Value>,
    #[serde(default)]
    web_search_options: Option<Value>,
    #[serde(default)]
    functions: Option<Value>,
    #[serde(default)]
    function_call: Option<Value>,
}

#[derive(Deserialize)]
struct WireMessage {
    role: String,
    #[serde(default)]
    content: Option<WireContent>,
    #[serde(default)]
    tool_calls: Option<Vec<WireToolCall>>,
    #[serde(default)]
    tool_call_id: Option<String>,
    #[serde(default)]
    reasoning_content: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged, expecting = "a string or an array of content parts")]
enum WireContent {
    Text(String),
    Parts(Vec<WirePart>),
}

#[derive(Deserialize)]
struct WirePart {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
    #[serde(default)]
    image_url: Option<WireImageUrl>,
}

#[derive(Deserialize)]
#[serde(untagged, expecting = "an object with a url, or a url")]
enum WireImageUrl {
    Object { url: String },
    Url(String),
}

#[derive(Deserialize)]
struct WireToolCall {
    #[serde(default)]
    id: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    function: WireFunctionCall,
}

#[derive(Deserialize)]
struct WireFunctionCall {
    name: String,
    #[serde(default)]
    arguments: Option<String>,
}

#[derive(Deserialize)]
struct WireTool {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    function: Option<WireFunction>,
}

#[derive(Deserialize)]
struct WireFunction {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    parameters: Option<Value>,
    #[serde(default)]
    strict: Option<bool>,
}

#[derive(Deserialize)]
#[serde(untagged, expecting = "`none`, `auto`, `required` or a tool choice object")]
enum WireToolChoice {
    Mode(String),
    Object {
        #[serde(rename = "type")]
        kind: String,
        #[serde(default)]
        function: Option<WireNamed>,
    },
}

#[derive(Deserialize)]
struct WireNamed {
    name: String,
}

#[derive(Deserialize)]
#[serde(untagged, expecting = "a string or an array of strings")]
enum StringOrList {
    One(String),
    List(Vec<String>),
}

#[derive(Deserialize)]
struct WireResponseFormat {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    json_schema: Option<WireJsonSchema>,
}

#[derive(Deserialize)]
pub(super) struct WireJsonSchema {
    #[serde(default)]
    pub(super) name: Option<String>,
    #[serde(default)]
    pub(super) schema: Option<Value>,
    #[serde(default)]
    pub(super) strict: Option<bool>,
}

/// The schema OpenAI assumes for a function declared without `parameters`.
pub(super) fn empty_parameters() -> Value {
    serde_json::json!({"type": "object", "properties": {}})
}

/// Names the field of a request body that does not fit [`WireRequest`].
fn locate_request(value: &Value) -> Option<(String, String)> {
    let object = value.as_object()?;
    locate_in_array(object, "", "messages", locate_message)
        .or_else(|| locate_in_array(object, "", "tools", culprit::<WireTool>))
        .or_else(|| culprit::<WireRequest>(value, ""))
}

fn locate_message(value: &Value, path: &str) -> Option<(String, String)> {
    let object = value.as_object()?;
    locate_in_array(object, path, "content", |part, path| {
        // A content array's elements are parts; a string content is not an array.
        culprit::<WirePart>(part, path)
    })
    .or_else(|| locate_in_array(object, path, "tool_calls", culprit::<WireToolCall>))
    .or_else(|| culprit::<WireMessage>(value, path))
}

impl WireRequest {
    fn into_ir(self) -> Result<Request> {
        let mut request = Request {
            model: self.model,
            max_tokens: self.max_completion_tokens.or(self.max_tokens),
            sampling: Sampling {
                temperature: self.temperature,
                top_p: self.top_p,
                top_k: None,
                presence_penalty: self.presence_penalty,
                frequency_penalty: self.frequency_penalty,
                seed: self.seed,
            },
            stream: self.stream.unwrap_or(false),
            parallel_tool_calls: self.parallel_tool_calls,
            ..Request::default()
        };
        request.stop = match self.stop {
            None => Vec::new(),
            Some(StringOrList::One(stop)) => vec![stop],
            Some(StringOrList::List(stops)) => stops,
        };
        for (i, message) in self.messages.into_iter().enumerate() {
            message.into_ir(i, &mut request)?;
        }
        for (i, tool) in self.tools.unwrap_or_default().into_iter().enumerate() {
            match (tool.kind.as_str(), tool.function) {
                ("function", Some(function)) => request.tools.push(Tool {
                    name: function.name,
                    description: function.description,
                    parameters: function.parameters.unwrap_or_else(empty_parameters),
                    strict: function.strict,
                }),
                ("function", None) => {
                    return Err(Error::invalid(format!("tools[{i}].function"), "missing"));
                }
                (kind, _) => {
                    request.unmapped.push((format!("tools[{i}].type"), Value::from(kind)));
                }
            }
        }
        request.tool_choice = match self.tool_choice {
            None => None,
            Some(WireToolChoice::Mode(mode)) => Some(tool_choice_mode(&mode, "tool_choice")?),
            Some(WireToolChoice::Object { kind, function }) => match (kind.as_str(), function) {
                ("function", Some(function)) => Some(ToolChoice::Named(function.name)),
                ("function", None) => {
                    return Err(Error::invalid("tool_choice.function", "missing"));
                }
                (kind, _) => {
                    request.unmapped.push(("tool_choice.type".to_owned(), Value::from(kind)));
                    None
                }
            },
        };
        request.output = match self.response_format {
            None => None,
            Some(format) => match format.kind.as_str() {
                "text" => None,
                "json_object" => Some(OutputFormat::JsonObject),
                "json_schema" => {
                    let schema = format
                        .json_schema
                        .ok_or_else(|| Error::invalid("response_format.json_schema", "missing"))?;
                    Some(json_schema(schema))
                }
                other => {
                    return Err(Error::invalid(
                        "response_format.type",
                        format!("unknown format `{other}`"),
                    ));
                }
            },
        };
        if let Some(effort) = self.reasoning_effort {
            request.reasoning = Some(shared::parse_effort(&effort, "reasoning_effort")?);
        }
        let unmapped = [
            ("n", self.n.filter(|n| n.as_u64() != Some(1))),
            ("logprobs", self.logprobs.filter(|on| on.as_bool() != Some(false))),
            ("top_logprobs", self.top_logprobs.filter(|count| count.as_u64() != Some(0))),
            (
                "logit_bias",
                self.logit_bias.filter(|bias| bias.as_object().is_none_or(|b| !b.is_empty())),
            ),
            ("audio", self.audio),
            ("modalities", self.modalities.filter(|m| *m != serde_json::json!(["text"]))),
            ("prediction", self.prediction),
            ("web_search_options", self.web_search_options),
            ("functions", self.functions),
            ("function_call", self.function_call),
        ];
        for (name, value) in unmapped {
            if let Some(value) = value {
                request.unmapped.push((name.to_owned(), value));
            }
        }
        Ok(request)
    }
}

/// `none`, `auto` or `required`.
pub(super) fn tool_choice_mode(mode: &str, field: &str) -> Result<ToolChoice> {
    match mode {
        "auto" => Ok(ToolChoice::Auto),
        "none" => Ok(ToolChoice::None),
        "required" => Ok(ToolChoice::Required),
        other => Err(Error::invalid(field, format!("unknown tool choice `{other}`"))),
    }
}

pub(super) fn json_schema(schema: WireJsonSchema) -> OutputFormat {
    OutputFormat::JsonSchema {
        name: schema.name.unwrap_or_else(|| "response".to_owned()),
        schema: schema.schema.unwrap_or_else(|| Value::Object(serde_json::Map::new())),
        strict: schema.strict,
    }
}

impl WireMessage {
    fn into_ir(self, i: usize, request: &mut Request) -> Result<()> {
        let field = || format!("messages[{i}].content");
        match self.role.as_str() {
            "system" | "developer" => {
                let text = match self.content {
                    Some(content) => content_text(content, &field())?,
                    None => String::new(),
                };
                request.system.push(SystemPart { developer: self.role == "developer", text });
            }
            "user" => {
                let mut parts = Vec::new();
                match self.content {
                    None => return Err(Error::invalid(field(), "missing")),
                    Some(WireContent::Text(text)) => parts.push(Part::Text(text)),
                    Some(WireContent::Parts(wire)) => {
                        for (j, part) in wire.into_iter().enumerate() {
                            let path = || format!("messages[{i}].content[{j}]");
                            match (part.kind.as_str(), part.text, part.image_url) {
                                ("text", Some(text), _) => parts.push(Part::Text(text)),
                                ("image_url", _, Some(image)) => {
                                    let url = match image {
                                        WireImageUrl::Object { url } | WireImageUrl::Url(url) => {
                                            url
                                        }
                                    };
                                    parts.push(Part::Image(shared::image_from_url(url)));
                                }
                                ("text", None, _) => {
                                    return Err(Error::invalid(
                                        format!("{}.text", path()),
                                        "missing",
                                    ));
                                }
                                ("image_url", _, None) => {
                                    return Err(Error::invalid(
                                        format!("{}.image_url", path()),
                                        "missing",
                                    ));
                                }
                                (kind, _, _) => request
                                    .unmapped
                                    .push((format!("{}.type", path()), Value::from(kind))),
                            }
                        }
                    }
                }
                request.messages.push(Message { role: Role::User, parts });
            }
            "assistant" => {
                let mut parts = Vec::new();
                if let Some(reasoning) = self.reasoning_content.filter(|text| !text.is_empty()) {
                    parts.push(Part::Thinking(Thinking {
                        text: reasoning,
                        signature: None,
                        redacted: None,
                        origin: Some(Format::OpenAiChat),
                    }));
                }
                match self.content {
                    Some(WireContent::Text(text)) if !text.is_empty() => {
                        parts.push(Part::Text(text))
                    }
                    None | Some(WireContent::Text(_)) => {}
                    Some(WireContent::Parts(wire)) => {
                        for part in wire {
                            if let Some(text) = part.text.or(part.refusal) {
                                parts.push(Part::Text(text));
                            }
                        }
                    }
                }
                if let Some(refusal) = self.refusal.filter(|text| !text.is_empty()) {
                    parts.push(Part::Text(refusal));
                }
                for (j, call) in self.tool_calls.unwrap_or_default().into_iter().enumerate() {
                    if call.kind.as_deref().is_some_and(|kind| kind != "function") {
                        request.unmapped.push((
                            format!("messages[{i}].tool_calls[{j}].type"),
                            Value::from(call.kind.unwrap_or_default()),
                        ));
                        continue;
                    }
                    let id = call.id.ok_or_else(|| {
                        Error::invalid(format!("messages[{i}].tool_calls[{j}].id"), "missing")
                    })?;
                    parts.push(Part::ToolCall(ToolCall {
                        id,
                        name: call.function.name,
                        arguments: call.function.arguments.unwrap_or_else(|| "{}".to_owned()),
                    }));
                }
                request.messages.push(Message { role: Role::Assistant, parts });
            }
            "tool" => {
                let call_id = self.tool_call_id.ok_or_else(|| {
                    Error::invalid(format!("messages[{i}].tool_call_id"), "missing")
                })?;
                let text = match self.content {
                    Some(content) => content_text(content, &field())?,
                    None => String::new(),
                };
                let result = Part::ToolResult(ToolResult {
                    call_id,
                    name: None,
                    content: vec![ToolResultPart::Text(text)],
                    is_error: false,
                });
                // Consecutive tool messages answer one assistant turn: they share one user
                // turn, as Anthropic and Gemini require.
                match request.messages.last_mut() {
                    Some(last)
                        if last.role == Role::User
                            && last
                                .parts
                                .iter()
                                .all(|part| matches!(part, Part::ToolResult(_))) =>
                    {
                        last.parts.push(result);
                    }
                    _ => request.messages.push(Message { role: Role::User, parts: vec![result] }),
                }
            }
            other => {
                return Err(Error::invalid(
                    format!("messages[{i}].role"),
                    format!("unknown role `{other}`"),
                ));
            }
        }
        Ok(())
    }
}

/// The text of a content that may only hold text (system, developer and tool messages).
fn content_text(content: WireContent, field: &str) -> Result<String> {
    match content {
        WireContent::Text(text) => Ok(text),
        WireContent::Parts(parts) => {
            let mut text = String::new();
            for (j, part) in parts.into_iter().enumerate() {
                match (part.kind.as_str(), part.text) {
                    ("text", Some(piece)) => text.push_str(&piece),
                    _ => {
                        return Err(Error::invalid(
                            format!("{field}[{j}]"),
                            "expected a text part",
                        ));
                    }
                }
            }
            Ok(text)
        }
    }
}

// ---------------------------------------------------------------------------------------
// Requests, as a provider takes them.

#[derive(Serialize)]
struct OutRequest<'a> {
    model: &'a str,
    messages: Vec<OutMessage<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_completion_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    presence_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    frequency_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<i64>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    stop: &'a [String],
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<OutTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parallel_tool_calls: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_effort: Option<&'static str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

#[derive(Serialize)]
struct OutMessage<'a> {
    role: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<OutContent<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<OutToolCall<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum OutContent<'a> {
    Text(&'a str),
    Parts(Vec<OutPart<'a>>),
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum OutPart<'a> {
    Text { text: &'a str },
    ImageUrl { image_url: OutImageUrl<'a> },
}

#[derive(Serialize)]
struct OutImageUrl<'a> {
    url: std::borrow::Cow<'a, str>,
}

#[derive(Serialize)]
struct OutToolCall<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: OutFunctionCall<'a>,
}

#[derive(Serialize)]
struct OutFunctionCall<'a> {
    name: &'a str,
    arguments: &'a str,
}

#[derive(Serialize)]
struct OutTool<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    function: OutFunction<'a>,
}

#[derive(Serialize)]
struct OutFunction<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    parameters: &'a Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    strict: Option<bool>,
}

/// The first field of another format that this one cannot say.
pub(super) fn refuse_unmapped(request: &Request, target: Format) -> Result<()> {
    match request.unmapped.first() {
        Some((field, _)) => Err(Error::unsupported(field.clone(), target)),
        None => Ok(()),
    }
}

fn encode_request(request: &Request) -> Result<Vec<u8>> {
    refuse_unmapped(request, Format::OpenAiChat)?;
    if request.sampling.top_k.is_some() {
        return Err(Error::unsupported("top_k", Format::OpenAiChat));
    }
    let mut messages = Vec::with_capacity(request.system.len() + request.messages.len());
    for part in &request.system {
        let role = if part.developer { "developer" } else { "system" };
        messages.push(OutMessage {
            role,
            content: Some(OutContent::Text(&part.text)),
            tool_calls: Vec::new(),
            tool_call_id: None,
        });
    }
    for message in &request.messages {
        match message.role {
            Role::User => push_user(&mut messages, &message.parts),
            Role::Assistant => push_assistant(&mut messages, &message.parts),
        }
    }
    let has_tools = !request.tools.is_empty();
    let out = OutRequest {
        model: &request.model,
        messages,
        max_completion_tokens: request.max_tokens,
        temperature: request.sampling.temperature,
        top_p: request.sampling.top_p,
        presence_penalty: request.sampling.presence_penalty,
        frequency_penalty: request.sampling.frequency_penalty,
        seed: request.sampling.seed,
        stop: &request.stop,
        tools: request
            .tools
            .iter()
            .map(|tool| OutTool {
                kind: "function",
                function: OutFunction {
                    name: &tool.name,
                    description: tool.description.as_deref(),
                    parameters: &tool.parameters,
                    strict: tool.strict,
                },
            })
            .collect(),
        // OpenAI refuses a tool choice or the parallel flag without tools.
        tool_choice: request.tool_choice.as_ref().filter(|_| has_tools).map(
            |choice| match choice {
                ToolChoice::Auto => Value::from("auto"),
                ToolChoice::None => Value::from("none"),
                ToolChoice::Required => Value::from("required"),
                ToolChoice::Named(name) => {
                    serde_json::json!({"type": "function", "function": {"name": name}})
                }
            },
        ),
        parallel_tool_calls: request.parallel_tool_calls.filter(|_| has_tools),
        response_format: request.output.as_ref().map(|output| match output {
            OutputFormat::JsonObject => serde_json::json!({"type": "json_object"}),
            OutputFormat::JsonSchema { name, schema, strict } => {
                let mut inner = serde_json::json!({"name": name, "schema": schema});
                if let (Some(strict), Some(object)) = (strict, inner.as_object_mut()) {
                    object.insert("strict".to_owned(), Value::from(*strict));
                }
                serde_json::json!({"type": "json_schema", "json_schema": inner})
            }
        }),
        reasoning_effort: shared::effort_name(request.reasoning),
        stream: request.stream,
        stream_options: request.stream.then_some(StreamOptions { include_usage: true }),
    };
    serde_json::to_vec(&out).map_err(|error| Error::invalid("request", error.to_string()))
}

fn push_user<'a>(messages: &mut Vec<OutMessage<'a>>, parts: &'a [Part]) {
    // Tool results go first, one `tool` message each; what else the turn holds (and the
    // images of the results, which a `tool` message cannot hold) follows as a user message.
    let mut rest = Vec::new();
    let mut result_images = Vec::new();
    for part in parts {
        match part {
            Part::ToolResult(result) => {
                let texts: Vec<&str> = result
                    .content
                    .iter()
                    .filter_map(|piece| match piece {
                        ToolResultPart::Text(text) => Some(text.as_str()),
                        ToolResultPart::Image(image) => {
                            result_images.push(image);
                            None
                        }
                    })
                    .collect();
                let content = match texts.as_slice() {
                    [] => OutContent::Text(""),
                    [one] => OutContent::Text(one),
                    many => {
                        OutContent::Parts(many.iter().map(|text| OutPart::Text { text }).collect())
                    }
                };
                messages.push(OutMessage {
                    role: "tool",
                    content: Some(content),
                    tool_calls: Vec::new(),
                    tool_call_id: Some(&result.call_id),
                });
            }
            Part::Text(text) => rest.push(OutPart::Text { text }),
            Part::Image(image) => rest.push(image_part(image)),
            // A user turn holds no calls or reasoning; a decoder that put some there is
            // read as leniently as the providers read it: they are left out.
            Part::ToolCall(_) | Part::Thinking(_) => {}
        }
    }
    if rest.is_empty() && result_images.is_empty() {
        return;
    }
    let mut content: Vec<OutPart<'a>> = result_images.into_iter().map(image_part).collect();
    content.append(&mut rest);
    let content = match content.as_slice() {
        [OutPart::Text { text }] => OutContent::Text(text),
        _ => OutContent::Parts(content),
    };
    messages.push(OutMessage {
        role: "user",
        content: Some(content),
        tool_calls: Vec::new(),
        tool_call_id: None,
    });
}

fn image_part(image: &Image) -> OutPart<'_> {
    OutPart::ImageUrl { image_url: OutImageUrl { url: shared::image_to_url(image) } }
}

fn push_assistant<'a>(messages: &mut Vec<OutMessage<'a>>, parts: &'a [Part]) {
    let mut texts = Vec::new();
    let mut tool_calls = Vec::new();
    for part in parts {
        match part {
            Part::Text(text) => texts.push(text.as_str()),
            Part::ToolCall(call) => tool_calls.push(OutToolCall {
                id: &call.id,
                kind: "function",
                function: OutFunctionCall { name: &call.name, arguments: &call.arguments },
            }),
            // The Chat API takes no reasoning back: thinking is dropped (the models reason
            // afresh each turn).
            Part::Thinking(_) | Part::Image(_) | Part::ToolResult(_) => {}
        }
    }
    let content = match texts.as_slice() {
        [] => None,
        [one] => Some(OutContent::Text(one)),
        many => Some(OutContent::Parts(many.iter().map(|text| OutPart::Text { text }).collect())),
    };
    // An assistant message with neither text nor calls (thinking only) is refused by the
    // API: it is left out.
    if content.is_none() && tool_calls.is_empty() {
        return;
    }
    messages.push(OutMessage { role: "assistant", content, tool_calls, tool_call_id: None });
}

// ---------------------------------------------------------------------------------------
// Whole replies.

#[derive(Deserialize)]
struct WireResponse {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    model: Option<String>,
    choices: Vec<WireChoice>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct WireChoice {
    #[serde(default)]
    message: Option<WireReplyMessage>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireReplyMessage {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
    #[serde(default)]
    reasoning_content: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<WireToolCall>>,
}

/// Usage as Chat Completions reports it; every figure may be missing or null.
#[derive(Deserialize, Default)]
pub(super) struct WireUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens_details: Option<WirePromptDetails>,
    #[serde(default)]
    completion_tokens_details: Option<WireCompletionDetails>,
}

#[derive(Deserialize, Default)]
struct WirePromptDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

#[derive(Deserialize, Default)]
struct WireCompletionDetails {
    #[serde(default)]
    reasoning_tokens: Option<u64>,
}

impl WireUsage {
    pub(super) fn to_ir(&self) -> Usage {
        Usage {
            input_tokens: self.prompt_tokens.unwrap_or(0),
            output_tokens: self.completion_tokens.unwrap_or(0),
            cache_read_tokens: self
                .prompt_tokens_details
                .as_ref()
                .and_then(|details| details.cached_tokens)
                .unwrap_or(0),
            cache_write_tokens: 0,
            reasoning_tokens: self
                .completion_tokens_details
                .as_ref()
                .and_then(|details| details.reasoning_tokens)
                .unwrap_or(0),
        }
    }
}

/// The common stop reason of a `finish_reason`.
pub(super) fn stop_reason(reason: Option<&str>) -> StopReason {
    match reason {
        None | Some("stop") => StopReason::EndTurn,
        Some("length") => StopReason::MaxTokens,
        Some("tool_calls" | "function_call") => StopReason::ToolUse,
        Some("content_filter") => StopReason::ContentFilter,
        Some(other) => StopReason::Other(other.to_owned()),
    }
}

/// The `finish_reason` of a common stop reason. A stop sequence is `stop` (the Chat API does
/// not say which); reasons the Chat API has no name for are a plain stop.
pub(super) const fn finish_reason(stop: &StopReason) -> &'static str {
    match stop {
        StopReason::EndTurn | StopReason::StopSequence | StopReason::Other(_) => "stop",
        StopReason::MaxTokens => "length",
        StopReason::ToolUse => "tool_calls",
        StopReason::ContentFilter => "content_filter",
    }
}

impl WireResponse {
    fn into_ir(self) -> Result<Response> {
        let choice =
            self.choices.into_iter().next().ok_or_else(|| Error::invalid("choices", "empty"))?;
        let mut stop = stop_reason(choice.finish_reason.as_deref());
        let mut parts = Vec::new();
        if let Some(message) = choice.message {
            if let Some(text) = message.reasoning_content.filter(|text| !text.is_empty()) {
                parts.push(Part::Thinking(Thinking {
                    text,
                    signature: None,
                    redacted: None,
                    origin: Some(Format::OpenAiChat),
                }));
            }
            if let Some(text) = message.content.filter(|text| !text.is_empty()) {
                parts.push(Part::Text(text));
            }
            if let Some(refusal) = message.refusal.filter(|text| !text.is_empty()) {
                parts.push(Part::Text(refusal));
                stop = StopReason::ContentFilter;
            }
            for call in message.tool_calls.unwrap_or_default() {
                parts.push(Part::ToolCall(ToolCall {
                    id: call.id.unwrap_or_default(),
                    name: call.function.name,
                    arguments: call.function.arguments.unwrap_or_else(|| "{}".to_owned()),
                }));
            }
        }
        Ok(Response {
            id: self.id.unwrap_or_default(),
            model: self.model.unwrap_or_default(),
            parts,
            stop,
            stop_sequence: None,
            usage: self.usage.map(|usage| usage.to_ir()).unwrap_or_default(),
        })
    }
}

/// Usage as Chat Completions reports it.
#[derive(Serialize)]
pub(super) struct OutUsage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    prompt_tokens_details: OutPromptDetails,
    completion_tokens_details: OutCompletionDetails,
}

#[derive(Serialize)]
struct OutPromptDetails {
    cached_tokens: u64,
}

#[derive(Serialize)]
struct OutCompletionDetails {
    reasoning_tokens: u64,
}

impl OutUsage {
    /// Anthropic's cache writes have no Chat figure: they stay counted in `prompt_tokens`.
    pub(super) const fn new(usage: &Usage) -> Self {
        Self {
            prompt_tokens: usage.input_tokens,
            completion_tokens: usage.output_tokens,
            total_tokens: usage.input_tokens.saturating_add(usage.output_tokens),
            prompt_tokens_details: OutPromptDetails { cached_tokens: usage.cache_read_tokens },
            completion_tokens_details: OutCompletionDetails {
                reasoning_tokens: usage.reasoning_tokens,
            },
        }
    }
}

#[derive(Serialize)]
struct OutResponse<'a> {
    id: std::borrow::Cow<'a, str>,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [OutChoice<'a>; 1],
    usage: OutUsage,
}

#[derive(Serialize)]
struct OutChoice<'a> {
    index: u32,
    message: OutReply<'a>,
    logprobs: Option<()>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct OutReply<'a> {
    role: &'static str,
    content: Option<String>,
    refusal: Option<()>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<OutToolCall<'a>>,
}

/// The reply's id, or one in OpenAI's shape when the provider gave none.
pub(super) fn chat_id(id: &str) -> std::borrow::Cow<'_, str> {
    if id.is_empty() { format!("chatcmpl-{:x}", shared::now()).into() } else { id.into() }
}

fn encode_response(response: &Response) -> Result<Vec<u8>> {
    let mut content: Option<String> = None;
    let mut reasoning: Option<String> = None;
    let mut tool_calls = Vec::new();
    for part in &response.parts {
        match part {
            Part::Text(text) => content.get_or_insert_with(String::new).push_str(text),
            // The Chat API's replies carry reasoning text as `reasoning_content` (DeepSeek,
            // vLLM, OpenRouter); signatures have no place and are dropped.
            Part::Thinking(thinking) if !thinking.text.is_empty() => {
                let text = reasoning.get_or_insert_with(String::new);
                if !text.is_empty() {
                    text.push_str("\n\n");
                }
                text.push_str(&thinking.text);
            }
            Part::ToolCall(call) => tool_calls.push(OutToolCall {
                id: &call.id,
                kind: "function",
                function: OutFunctionCall { name: &call.name, arguments: &call.arguments },
            }),
            Part::Thinking(_) | Part::Image(_) | Part::ToolResult(_) => {}
        }
    }
    let out = OutResponse {
        id: chat_id(&response.id),
        object: "chat.completion",
        created: shared::now(),
        model: &response.model,
        choices: [OutChoice {
            index: 0,
            message: OutReply {
                role: "assistant",
                content,
                refusal: None,
                reasoning_content: reasoning,
                tool_calls,
            },
            logprobs: None,
            finish_reason: finish_reason(&response.stop),
        }],
        usage: OutUsage::new(&response.usage),
    };
    serde_json::to_vec(&out).map_err(|error| Error::invalid("response", error.to_string()))
}

#[cfg(test)]
mod tests;
