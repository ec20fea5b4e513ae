//! Anthropic Messages requests.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Format;
use crate::codec::unwrap_signature;
use crate::error::{Error, Result};
use crate::formats::shared::{TextOrBlocks, culprit, culprit_in_list, parse, to_json_string};
use crate::ir::{
    DEFAULT_MAX_TOKENS, Effort, Image, Message, OutputFormat, Part, Reasoning, Request, Role,
    Sampling, SystemPart, Thinking, Tool, ToolCall, ToolChoice, ToolResult, ToolResultPart,
};

// The wire forms, as read. Every field is optional: required ones are checked by the decoder,
// which can then name them by their path.

#[derive(Deserialize)]
struct WireRequest {
    model: Option<String>,
    max_tokens: Option<u64>,
    system: Option<TextOrBlocks<WireBlock>>,
    messages: Option<Vec<WireMessage>>,
    tools: Option<Vec<WireTool>>,
    tool_choice: Option<WireToolChoice>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    top_k: Option<u64>,
    stop_sequences: Option<Vec<String>>,
    stream: Option<bool>,
    thinking: Option<WireThinking>,
    output_format: Option<WireOutputFormat>,
    output_config: Option<WireOutputConfig>,
    container: Option<Value>,
    mcp_servers: Option<Value>,
    context_management: Option<Value>,
}

#[derive(Deserialize)]
struct WireMessage {
    role: Option<String>,
    content: Option<TextOrBlocks<WireBlock>>,
}

#[derive(Deserialize)]
pub(super) struct WireBlock {
    #[serde(rename = "type")]
    pub(super) kind: Option<String>,
    pub(super) text: Option<String>,
    source: Option<WireSource>,
    pub(super) id: Option<String>,
    pub(super) name: Option<String>,
    pub(super) input: Option<Value>,
    tool_use_id: Option<String>,
    content: Option<TextOrBlocks<WireBlock>>,
    is_error: Option<bool>,
    pub(super) thinking: Option<String>,
    pub(super) signature: Option<String>,
    pub(super) data: Option<String>,
}

#[derive(Deserialize)]
struct WireSource {
    #[serde(rename = "type")]
    kind: Option<String>,
    media_type: Option<String>,
    data: Option<String>,
    url: Option<String>,
}

#[derive(Deserialize)]
struct WireTool {
    #[serde(rename = "type")]
    kind: Option<String>,
    name: Option<String>,
    description: Option<String>,
    input_schema: Option<Value>,
}

#[derive(Deserialize)]
struct WireToolChoice {
    #[serde(rename = "type")]
    kind: Option<String>,
    name: Option<String>,
    disable_parallel_tool_use: Option<bool>,
}

#[derive(Deserialize)]
struct WireThinking {
    #[serde(rename = "type")]
    kind: Option<String>,
    budget_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct WireOutputFormat {
    #[serde(rename = "type")]
    kind: Option<String>,
    schema: Option<Value>,
}

#[derive(Deserialize)]
struct WireOutputConfig {
    format: Option<WireOutputFormat>,
    effort: Option<Value>,
}

/// Names the field a malformed request gets wrong.
fn locate(value: &Value) -> Option<(String, String)> {
    let block = |block: &Value| {
        culprit_in_list::<WireBlock>(block, "content", culprit::<WireBlock>)
            .or_else(|| culprit::<WireBlock>(block))
    };
    let message = |message: &Value| {
        culprit_in_list::<WireBlock>(message, "content", block)
            .or_else(|| culprit::<WireMessage>(message))
    };
    culprit_in_list::<WireMessage>(value, "messages", message)
        .or_else(|| culprit_in_list::<WireBlock>(value, "system", block))
        .or_else(|| culprit_in_list::<WireTool>(value, "tools", culprit::<WireTool>))
        .or_else(|| culprit::<WireRequest>(value))
}

fn missing(field: impl Into<String>) -> Error {
    Error::invalid(field, "missing")
}

/// Reads a client's Messages request.
pub(super) fn decode(body: &[u8]) -> Result<Request> {
    let wire: WireRequest = parse(body, locate)?;
    let mut request = Request {
        model: wire.model.ok_or_else(|| missing("model"))?,
        max_tokens: Some(wire.max_tokens.ok_or_else(|| {
            Error::invalid("max_tokens", "missing (the Messages API requires it)")
        })?),
        sampling: Sampling {
            temperature: wire.temperature,
            top_p: wire.top_p,
            top_k: wire.top_k,
            ..Sampling::default()
        },
        stop: wire.stop_sequences.unwrap_or_default(),
        stream: wire.stream.unwrap_or(false),
        ..Request::default()
    };
    match wire.system {
        None => {}
        Some(TextOrBlocks::Text(text)) => {
            request.system.push(SystemPart { developer: false, text });
        }
        Some(TextOrBlocks::Blocks(blocks)) => {
            for (i, block) in blocks.into_iter().enumerate() {
                if block.kind.as_deref() != Some("text") {
                    return Err(Error::invalid(format!("system[{i}].type"), "expected text"));
                }
                let text = block.text.ok_or_else(|| missing(format!("system[{i}].text")))?;
                request.system.push(SystemPart { developer: false, text });
            }
        }
    }
    let messages = wire.messages.ok_or_else(|| missing("messages"))?;
    request.messages.reserve(messages.len());
    for (i, message) in messages.into_iter().enumerate() {
        let role = match message.role.as_deref() {
            Some("user") => Role::User,
            Some("assistant") => Role::Assistant,
            Some(_) => {
                return Err(Error::invalid(
                    format!("messages[{i}].role"),
                    "expected user or assistant",
                ));
            }
            None => return Err(missing(format!("messages[{i}].role"))),
        };
        let parts =
            match message.content.ok_or_else(|| missing(format!("messages[{i}].content")))? {
                TextOrBlocks::Text(text) => vec![Part::Text(text)],
                TextOrBlocks::Blocks(blocks) => {
                    let mut parts = Vec::with_capacity(blocks.len());
                    for (j, block) in blocks.into_iter().enumerate() {
                        // The path is written out only when something is wrong with the block.
                        let path = || format!("messages[{i}].content[{j}]");
                        if let Some(part) = decode_block(block, &path, &mut request.unmapped)? {
                            parts.push(part);
                        }
                    }
                    parts
                }
            };
        request.messages.push(Message { role, parts });
    }
    for (i, tool) in wire.tools.unwrap_or_default().into_iter().enumerate() {
        // A tool with a type other than `custom` is one of Anthropic's server tools, run by
        // the provider itself: no other format can offer it.
        if let Some(kind) = tool.kind.filter(|kind| kind != "custom") {
            request.unmapped.push((format!("tools[{i}]"), Value::String(kind)));
            continue;
        }
        request.tools.push(Tool {
            name: tool.name.ok_or_else(|| missing(format!("tools[{i}].name")))?,
            description: tool.description,
            parameters: tool
                .input_schema
                .ok_or_else(|| missing(format!("tools[{i}].input_schema")))?,
            strict: None,
        });
    }
    if let Some(choice) = wire.tool_choice {
        request.tool_choice = Some(match choice.kind.as_deref() {
            Some("auto") => ToolChoice::Auto,
            Some("any") => ToolChoice::Required,
            Some("none") => ToolChoice::None,
            Some("tool") => {
                ToolChoice::Named(choice.name.ok_or_else(|| missing("tool_choice.name"))?)
            }
            _ => {
                return Err(Error::invalid("tool_choice.type", "expected auto, any, tool or none"));
            }
        });
        if choice.disable_parallel_tool_use == Some(true) {
            request.parallel_tool_calls = Some(false);
        }
    }
    let (effort, config_format) = match wire.output_config {
        Some(config) => (config.effort, config.format),
        None => (None, None),
    };
    let mut effort_used = false;
    if let Some(thinking) = wire.thinking {
        match thinking.kind.as_deref() {
            Some("enabled") => {
                let budget =
                    thinking.budget_tokens.ok_or_else(|| missing("thinking.budget_tokens"))?;
                request.reasoning = Some(Reasoning::Budget(budget));
            }
            Some("disabled") => request.reasoning = Some(Reasoning::Off),
            // Adaptive thinking: the model decides how much to think, guided by
            // `output_config.effort` (`high` when absent, as Anthropic's default is).
            Some("adaptive") => {
                effort_used = true;
                request.reasoning = Some(Reasoning::Effort(match &effort {
                    None => Effort::High,
                    Some(Value::String(name)) => match name.as_str() {
                        "low" => Effort::Low,
                        "medium" => Effort::Medium,
                        "high" | "max" | "xhigh" => Effort::High,
                        _ => {
                            return Err(Error::invalid(
                                "output_config.effort",
                                "expected low, medium, high or max",
                            ));
                        }
                    },
                    Some(_) => {
                        return Err(Error::invalid("output_config.effort", "expected a string"));
                    }
                }));
            }
            Some(other) => {
                request.unmapped.push(("thinking.type".to_owned(), Value::String(other.into())));
            }
            None => return Err(missing("thinking.type")),
        }
    }
    // Effort without adaptive thinking bounds all of the reply's tokens: no other format
    // has that.
    if let Some(effort) = effort.filter(|_| !effort_used) {
        request.unmapped.push(("output_config.effort".to_owned(), effort));
    }
    let (format, format_name) = match config_format {
        Some(format) => (Some(format), "output_config.format"),
        None => (wire.output_format, "output_format"),
    };
    if let Some(format) = format {
        match (format.kind.as_deref(), format.schema) {
            (Some("json_schema"), Some(schema)) => {
                request.output = Some(OutputFormat::JsonSchema {
                    name: "output".to_owned(),
                    schema,
                    strict: Some(true),
                });
            }
            (Some("json_schema"), None) => return Err(missing(format!("{format_name}.schema"))),
            _ => return Err(Error::invalid(format!("{format_name}.type"), "expected json_schema")),
        }
    }
    for (name, value) in [
        ("container", wire.container),
        ("mcp_servers", wire.mcp_servers),
        ("context_management", wire.context_management),
    ] {
        if let Some(value) = value.filter(|value| !value.is_null()) {
            request.unmapped.push((name.to_owned(), value));
        }
    }
    Ok(request)
}

/// One content block of a turn; `None` when it carries nothing (it was unmapped).
fn decode_block(
    block: WireBlock,
    path: &dyn Fn() -> String,
    unmapped: &mut Vec<(String, Value)>,
) -> Result<Option<Part>> {
    let field = |name: &str| format!("{}.{name}", path());
    let kind = block.kind.ok_or_else(|| missing(field("type")))?;
    Ok(Some(match kind.as_str() {
        "text" => Part::Text(block.text.ok_or_else(|| missing(field("text")))?),
        "image" => {
            let source = block.source.ok_or_else(|| missing(field("source")))?;
            match decode_source(source, &field("source"))? {
                Some(image) => Part::Image(image),
                None => {
                    unmapped.push((field("source"), Value::String(kind)));
                    return Ok(None);
                }
            }
        }
        "document" => match block.source {
            Some(WireSource { kind: Some(source), data: Some(data), .. }) if source == "text" => {
                Part::Text(data)
            }
            _ => {
                unmapped.push((path(), Value::String(kind)));
                return Ok(None);
            }
        },
        "tool_use" => Part::ToolCall(ToolCall {
            id: block.id.ok_or_else(|| missing(field("id")))?,
            name: block.name.ok_or_else(|| missing(field("name")))?,
            arguments: match &block.input {
                Some(input) => to_json_string(input),
                None => "{}".to_owned(),
            },
        }),
        "tool_result" => {
            let call_id = block.tool_use_id.ok_or_else(|| missing(field("tool_use_id")))?;
            let content = match block.content {
                None => Vec::new(),
                Some(TextOrBlocks::Text(text)) => vec![ToolResultPart::Text(text)],
                Some(TextOrBlocks::Blocks(blocks)) => {
                    let mut content = Vec::with_capacity(blocks.len());
                    for (k, inner) in blocks.into_iter().enumerate() {
                        let inner_path = || field(&format!("content[{k}]"));
                        match decode_block(inner, &inner_path, unmapped)? {
                            Some(Part::Text(text)) => content.push(ToolResultPart::Text(text)),
                            Some(Part::Image(image)) => content.push(ToolResultPart::Image(image)),
                            Some(_) => {
                                return Err(Error::invalid(
                                    format!("{}.type", inner_path()),
                                    "expected text or image",
                                ));
                            }
                            None => {}
                        }
                    }
                    content
                }
            };
            Part::ToolResult(ToolResult {
                call_id,
                name: None,
                content,
                is_error: block.is_error.unwrap_or(false),
            })
        }
        "thinking" => {
            let (origin, signature) = match block.signature.as_deref() {
                Some(signature) if !signature.is_empty() => {
                    let (origin, inner) = unwrap_signature(Format::Anthropic, signature);
                    (origin, Some(inner.to_owned()))
                }
                _ => (Format::Anthropic, None),
            };
            Part::Thinking(Thinking {
                text: block.thinking.unwrap_or_default(),
                signature,
                redacted: None,
                origin: Some(origin),
            })
        }
        "redacted_thinking" => Part::Thinking(Thinking {
            text: String::new(),
            signature: None,
            redacted: Some(block.data.ok_or_else(|| missing(field("data")))?),
            origin: Some(Format::Anthropic),
        }),
        _ => {
            unmapped.push((path(), Value::String(kind)));
            return Ok(None);
        }
    }))
}

/// An image source; `None` for kinds no other format has (`file`).
fn decode_source(source: WireSource, path: &str) -> Result<Option<Image>> {
    match source.kind.as_deref() {
        Some("base64") => Ok(Some(Image::Base64 {
            media_type: source.media_type.ok_or_else(|| missing(format!("{path}.media_type")))?,
            data: source.data.ok_or_else(|| missing(format!("{path}.data")))?,
        })),
        Some("url") => Ok(Some(Image::Url {
            url: source.url.ok_or_else(|| missing(format!("{path}.url")))?,
            media_type: None,
        })),
        Some(_) => Ok(None),
        None => Err(missing(format!("{path}.type"))),
    }
}

// The wire forms, as written.

#[derive(Serialize)]
struct OutRequest<'a> {
    model: &'a str,
    max_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<OutSystem<'a>>,
    messages: Vec<OutMessage<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<OutTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<OutToolChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_k: Option<u64>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop_sequences: &'a [String],
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking: Option<OutThinking>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output_config: Option<OutOutputConfig>,
}

#[derive(Serialize)]
struct OutOutputConfig {
    effort: &'static str,
}

#[derive(Serialize)]
#[serde(untagged)]
enum OutSystem<'a> {
    Text(&'a str),
    Blocks(Vec<OutBlock<'a>>),
}

#[derive(Serialize)]
struct OutMessage<'a> {
    role: &'static str,
    content: Vec<OutBlock<'a>>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum OutBlock<'a> {
    Text {
        text: &'a str,
    },
    Image {
        source: OutSource<'a>,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: Value,
    },
    ToolResult {
        tool_use_id: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        content: Option<OutResultContent<'a>>,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        is_error: bool,
    },
    Thinking {
        thinking: &'a str,
        signature: std::borrow::Cow<'a, str>,
    },
    RedactedThinking {
        data: &'a str,
    },
}

#[derive(Serialize)]
#[serde(untagged)]
pub(super) enum OutResultContent<'a> {
    Text(&'a str),
    Blocks(Vec<OutBlock<'a>>),
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum OutSource<'a> {
    Base64 { media_type: &'a str, data: &'a str },
    Url { url: &'a str },
}

#[derive(Serialize)]
struct OutTool<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    input_schema: std::borrow::Cow<'a, Value>,
}

#[derive(Serialize)]
struct OutToolChoice<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    disable_parallel_tool_use: bool,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum OutThinking {
    Enabled { budget_tokens: u64 },
    Adaptive,
    Disabled,
}

/// Anthropic's smallest thinking budget.
const MIN_THINKING_BUDGET: u64 = 1024;

/// Writes a Messages request for an Anthropic provider.
pub(super) fn encode(request: &Request) -> Result<Vec<u8>> {
    if let Some((name, _)) = request.unmapped.first() {
        return Err(Error::unsupported(name.clone(), Format::Anthropic));
    }
    if request.output.is_some() {
        return Err(Error::unsupported("response_format", Format::Anthropic));
    }
    for (name, set) in [
        ("presence_penalty", request.sampling.presence_penalty.is_some()),
        ("frequency_penalty", request.sampling.frequency_penalty.is_some()),
        ("seed", request.sampling.seed.is_some()),
    ] {
        if set {
            return Err(Error::unsupported(name, Format::Anthropic));
        }
    }
    let system = match request.system.as_slice() {
        [] => None,
        [one] => Some(OutSystem::Text(&one.text)),
        many => Some(OutSystem::Blocks(
            many.iter().map(|part| OutBlock::Text { text: &part.text }).collect(),
        )),
    };
    let mut messages = Vec::with_capacity(request.messages.len());
    for (i, message) in request.messages.iter().enumerate() {
        let mut content = Vec::with_capacity(message.parts.len());
        for (j, part) in message.parts.iter().enumerate() {
            if let Some(block) = encode_part(part, &|| format!("messages[{i}].content[{j}]"))? {
                content.push(block);
            }
        }
        // A turn left empty (it held only reasoning of another provider) is left out: the
        // API refuses empty content, and consecutive turns of one role are merged by it.
        if content.is_empty() {
            continue;
        }
        // Anthropic wants a turn's tool results before anything else in it; another format
        // may have put the client's text first.
        if message.role == Role::User {
            content.sort_by_key(|block| !matches!(block, OutBlock::ToolResult { .. }));
        }
        let role = match message.role {
            Role::User => "user",
            Role::Assistant => "assistant",
        };
        messages.push(OutMessage { role, content });
    }
    let tools: Vec<OutTool<'_>> = request
        .tools
        .iter()
        .map(|tool| OutTool {
            name: &tool.name,
            description: tool.description.as_deref(),
            input_schema: object_schema(&tool.parameters),
        })
        .collect();
    // Anthropic refuses a tool_choice without tools; an OpenAI client may send `none` alone.
    let disable_parallel = request.parallel_tool_calls == Some(false);
    let tool_choice = if tools.is_empty() {
        None
    } else {
        match &request.tool_choice {
            Some(ToolChoice::Auto) => Some(("auto", None)),
            Some(ToolChoice::Required) => Some(("any", None)),
            Some(ToolChoice::Named(name)) => Some(("tool", Some(name.as_str()))),
            Some(ToolChoice::None) => Some(("none", None)),
            None if disable_parallel => Some(("auto", None)),
            None => None,
        }
        .map(|(kind, name)| OutToolChoice {
            kind,
            name,
            disable_parallel_tool_use: disable_parallel && kind != "none",
        })
    };
    let mut max_tokens = request.max_tokens;
    let thinking = match request.reasoning {
        None => None,
        Some(Reasoning::Off) => Some(OutThinking::Disabled),
        Some(Reasoning::Budget(budget)) => Some(thinking_budget(budget, &mut max_tokens)),
        // An effort is adaptive thinking with that effort: the form current models take
        // (Claude Opus 4.7 and later refuse a fixed budget).
        Some(Reasoning::Effort(effort)) => {
            if max_tokens.is_none() {
                max_tokens = Some(effort.budget().saturating_add(DEFAULT_MAX_TOKENS));
            }
            Some(OutThinking::Adaptive)
        }
    };
    let output_config = match request.reasoning {
        Some(Reasoning::Effort(effort)) => Some(OutOutputConfig {
            effort: match effort {
                Effort::Minimal | Effort::Low => "low",
                Effort::Medium => "medium",
                Effort::High => "high",
            },
        }),
        _ => None,
    };
    let out = OutRequest {
        model: &request.model,
        max_tokens: max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
        system,
        messages,
        tools,
        tool_choice,
        temperature: request.sampling.temperature,
        top_p: request.sampling.top_p,
        top_k: request.sampling.top_k,
        stop_sequences: &request.stop,
        stream: request.stream,
        thinking,
        output_config,
    };
    serde_json::to_vec(&out).map_err(|error| Error::invalid("request", error.to_string()))
}

/// A thinking budget Anthropic accepts: at least its minimum and below the output limit.
/// With no limit from the client, the limit leaves [`DEFAULT_MAX_TOKENS`] for the answer;
/// with one, a budget that does not fit below it is cut to fit (when it still can).
fn thinking_budget(budget: u64, max_tokens: &mut Option<u64>) -> OutThinking {
    let mut budget = budget.max(MIN_THINKING_BUDGET);
    match *max_tokens {
        None => *max_tokens = Some(budget.saturating_add(DEFAULT_MAX_TOKENS)),
        Some(limit) if budget >= limit && limit > MIN_THINKING_BUDGET => budget = limit - 1,
        Some(_) => {}
    }
    OutThinking::Enabled { budget_tokens: budget }
}

/// A tool's schema as Anthropic requires it: an object schema (an empty one when the
/// client gave none).
fn object_schema(parameters: &Value) -> std::borrow::Cow<'_, Value> {
    match parameters {
        Value::Object(map) if !map.is_empty() => std::borrow::Cow::Borrowed(parameters),
        _ => std::borrow::Cow::Owned(serde_json::json!({"type": "object", "properties": {}})),
    }
}

/// One part as a content block of a request; `None` when the part is dropped (reasoning of
/// another provider). Replies keep such reasoning for the client: `response::encode`
/// handles thinking itself.
pub(super) fn encode_part<'a>(
    part: &'a Part,
    path: &dyn Fn() -> String,
) -> Result<Option<OutBlock<'a>>> {
    Ok(Some(match part {
        Part::Text(text) => OutBlock::Text { text },
        Part::Image(image) => OutBlock::Image { source: encode_image(image) },
        Part::ToolCall(call) => OutBlock::ToolUse {
            id: &call.id,
            name: &call.name,
            input: parse_arguments(&call.arguments).ok_or_else(|| {
                Error::invalid(format!("{}.arguments", path()), "not a JSON object")
            })?,
        },
        Part::ToolResult(result) => OutBlock::ToolResult {
            tool_use_id: &result.call_id,
            content: match result.content.as_slice() {
                [] => None,
                [ToolResultPart::Text(text)] => Some(OutResultContent::Text(text)),
                many => Some(OutResultContent::Blocks(
                    many.iter()
                        .map(|part| match part {
                            ToolResultPart::Text(text) => OutBlock::Text { text },
                            ToolResultPart::Image(image) => {
                                OutBlock::Image { source: encode_image(image) }
                            }
                        })
                        .collect(),
                )),
            },
            is_error: result.is_error,
        },
        Part::Thinking(thinking) => {
            // Only Anthropic's own reasoning can go back to it: another provider's signature
            // means nothing here, and a block without one is refused.
            if thinking.origin.is_some_and(|origin| origin != Format::Anthropic) {
                return Ok(None);
            }
            if let Some(data) = &thinking.redacted {
                OutBlock::RedactedThinking { data }
            } else if let Some(signature) = &thinking.signature {
                OutBlock::Thinking {
                    thinking: &thinking.text,
                    signature: std::borrow::Cow::Borrowed(signature),
                }
            } else {
                return Ok(None);
            }
        }
    }))
}

pub(super) fn encode_image(image: &Image) -> OutSource<'_> {
    match image {
        Image::Base64 { media_type, data } => OutSource::Base64 { media_type, data },
        Image::Url { url, .. } => OutSource::Url { url },
    }
}

/// Tool-call arguments as the object Anthropic carries: `None` when they are not a JSON
/// object (they are never silently replaced by `{}`); empty text means no arguments.
pub(super) fn parse_arguments(arguments: &str) -> Option<Value> {
    if arguments.trim().is_empty() {
        return Some(Value::Object(serde_json::Map::new()));
    }
    serde_json::from_str::<Value>(arguments).ok().filter(Value::is_object)
}
