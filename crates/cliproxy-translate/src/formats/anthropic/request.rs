//! Anthropic Messages requests as a client sends them.

use serde::Deserialize;
use serde_json::Value;

use crate::Format;
use crate::codec::unwrap_signature;
use crate::error::{Error, Result};
use crate::formats::shared::{Tag, TextOrBlocks, culprit, culprit_in_list, parse, to_json_string};
use crate::ir::{
    Effort, Image, Message, OutputFormat, Part, Reasoning, Request, Role, Sampling, SystemPart,
    Thinking, Tool, ToolCall, ToolChoice, ToolResult, ToolResultPart,
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
    role: Option<Tag>,
    content: Option<TextOrBlocks<WireBlock>>,
}

#[derive(Deserialize)]
pub(super) struct WireBlock {
    #[serde(rename = "type")]
    pub(super) kind: Option<Tag>,
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
    kind: Option<Tag>,
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
            // Claude Code (2.1) sends context (its environment, reminders) as system-role
            // turns between the others. Their text joins the system prompt, the one place
            // every other format has for instructions; its position in the turns is lost.
            Some("system") => {
                let content =
                    message.content.ok_or_else(|| missing(format!("messages[{i}].content")))?;
                match content {
                    TextOrBlocks::Text(text) => {
                        request.system.push(SystemPart { developer: false, text });
                    }
                    TextOrBlocks::Blocks(blocks) => {
                        for (j, block) in blocks.into_iter().enumerate() {
                            if block.kind.as_deref() != Some("text") {
                                return Err(Error::invalid(
                                    format!("messages[{i}].content[{j}].type"),
                                    "expected text in a system turn",
                                ));
                            }
                            let text = block.text.ok_or_else(|| {
                                missing(format!("messages[{i}].content[{j}].text"))
                            })?;
                            request.system.push(SystemPart { developer: false, text });
                        }
                    }
                }
                continue;
            }
            Some(_) => {
                return Err(Error::invalid(
                    format!("messages[{i}].role"),
                    "expected user, assistant or system",
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
    // `context_management` (clearing old thinking or tool results server-side) is dropped:
    // it only removes context, which another provider then sees whole; thinking blocks do
    // not cross formats anyway. Claude Code sends it whenever thinking is on.
    drop(wire.context_management);
    for (name, value) in [("container", wire.container), ("mcp_servers", wire.mcp_servers)] {
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
    Ok(Some(match &*kind {
        "text" => Part::Text(block.text.ok_or_else(|| missing(field("text")))?),
        "image" => {
            let source = block.source.ok_or_else(|| missing(field("source")))?;
            match decode_source(source, &field("source"))? {
                Some(image) => Part::Image(image),
                None => {
                    unmapped.push((field("source"), Value::String(kind.to_string())));
                    return Ok(None);
                }
            }
        }
        "document" => match block.source {
            Some(WireSource { kind: Some(source), data: Some(data), .. }) if &*source == "text" => {
                Part::Text(data)
            }
            _ => {
                unmapped.push((path(), Value::String(kind.to_string())));
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
            unmapped.push((path(), Value::String(kind.to_string())));
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
