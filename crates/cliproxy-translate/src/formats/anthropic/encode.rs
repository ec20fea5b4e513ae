//! Anthropic Messages requests as written for a provider, and the content blocks
//! replies share with them.

use serde::Serialize;
use serde_json::Value;

use crate::Format;
use crate::error::{Error, Result};
use crate::ir::{
    DEFAULT_MAX_TOKENS, Effort, Image, Part, Reasoning, Request, Role, ToolChoice, ToolResultPart,
};

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
