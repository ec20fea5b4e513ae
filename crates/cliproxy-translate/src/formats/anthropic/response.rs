//! Anthropic Messages replies and errors.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::encode::{OutBlock, encode_part};
use super::request::WireBlock;
use crate::Format;
use crate::codec::wrap_signature;
use crate::error::{Error, Result};
use crate::formats::shared::{culprit, culprit_in_list, parse, raw_message, to_json_string};
use crate::ir::{ApiError, ErrorKind, Part, Response, StopReason, Thinking, ToolCall, Usage};

#[derive(Deserialize)]
struct WireResponse {
    id: Option<String>,
    model: Option<String>,
    content: Option<Vec<WireBlock>>,
    stop_reason: Option<String>,
    stop_sequence: Option<String>,
    usage: Option<WireUsage>,
}

/// Anthropic's usage: `input_tokens` excludes the cached prompt, which the two cache
/// figures count.
#[derive(Deserialize, Default, Clone, Copy)]
pub(super) struct WireUsage {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
}

impl WireUsage {
    /// The usage in the common form, where the prompt includes the cache.
    pub(super) fn to_ir(self) -> Usage {
        let cache_write = self.cache_creation_input_tokens.unwrap_or(0);
        let cache_read = self.cache_read_input_tokens.unwrap_or(0);
        Usage {
            input_tokens: self
                .input_tokens
                .unwrap_or(0)
                .saturating_add(cache_write)
                .saturating_add(cache_read),
            output_tokens: self.output_tokens.unwrap_or(0),
            cache_read_tokens: cache_read,
            cache_write_tokens: cache_write,
            reasoning_tokens: 0,
        }
    }

    /// Whether the prompt figures are present (a `message_delta` may carry only the output).
    pub(super) fn has_input(self) -> bool {
        self.input_tokens.is_some()
    }
}

/// Usage as Anthropic writes it.
#[derive(Serialize)]
pub(super) struct OutUsage {
    input_tokens: u64,
    output_tokens: u64,
    cache_creation_input_tokens: u64,
    cache_read_input_tokens: u64,
}

impl OutUsage {
    pub(super) fn from_ir(usage: &Usage) -> Self {
        Self {
            input_tokens: usage
                .input_tokens
                .saturating_sub(usage.cache_read_tokens)
                .saturating_sub(usage.cache_write_tokens),
            output_tokens: usage.output_tokens,
            cache_creation_input_tokens: usage.cache_write_tokens,
            cache_read_input_tokens: usage.cache_read_tokens,
        }
    }
}

/// The common stop reason of Anthropic's `stop_reason`.
pub(super) fn stop_from(reason: &str) -> StopReason {
    match reason {
        "end_turn" => StopReason::EndTurn,
        "max_tokens" => StopReason::MaxTokens,
        "stop_sequence" => StopReason::StopSequence,
        "tool_use" => StopReason::ToolUse,
        "refusal" => StopReason::ContentFilter,
        other => StopReason::Other(other.to_owned()),
    }
}

/// Anthropic's `stop_reason` for a common one; another provider's own reasons, which an
/// Anthropic client's SDK would not know, become `end_turn`.
pub(super) fn stop_name(stop: &StopReason) -> &str {
    match stop {
        StopReason::EndTurn => "end_turn",
        StopReason::MaxTokens => "max_tokens",
        StopReason::StopSequence => "stop_sequence",
        StopReason::ToolUse => "tool_use",
        StopReason::ContentFilter => "refusal",
        StopReason::Other(name)
            if matches!(name.as_str(), "pause_turn" | "model_context_window_exceeded") =>
        {
            name
        }
        StopReason::Other(_) => "end_turn",
    }
}

/// Reads an Anthropic provider's whole reply.
pub(super) fn decode(body: &[u8]) -> Result<Response> {
    let locate = |value: &serde_json::Value| {
        culprit_in_list::<WireBlock>(value, "content", culprit::<WireBlock>)
            .or_else(|| culprit::<WireResponse>(value))
    };
    let wire: WireResponse = parse(body, locate)?;
    let content = wire.content.ok_or_else(|| Error::invalid("content", "missing"))?;
    let mut parts = Vec::with_capacity(content.len());
    for (i, block) in content.into_iter().enumerate() {
        if let Some(part) = decode_block(block, i)? {
            parts.push(part);
        }
    }
    Ok(Response {
        id: wire.id.unwrap_or_default(),
        model: wire.model.unwrap_or_default(),
        parts,
        stop: wire.stop_reason.as_deref().map_or(StopReason::EndTurn, stop_from),
        stop_sequence: wire.stop_sequence,
        usage: wire.usage.unwrap_or_default().to_ir(),
    })
}

/// One block of a reply. Blocks of Anthropic's server tools (`server_tool_use`,
/// `web_search_tool_result`, …) are dropped: requests that enable them are refused for
/// other formats, so they only come from an Anthropic client, which gets the bytes as
/// they are.
fn decode_block(block: WireBlock, i: usize) -> Result<Option<Part>> {
    let missing = |name: &str| Error::invalid(format!("content[{i}].{name}"), "missing");
    let kind = block.kind.ok_or_else(|| missing("type"))?;
    Ok(Some(match &*kind {
        "text" => Part::Text(block.text.ok_or_else(|| missing("text"))?),
        "tool_use" => Part::ToolCall(ToolCall {
            id: block.id.ok_or_else(|| missing("id"))?,
            name: block.name.ok_or_else(|| missing("name"))?,
            arguments: block.input.as_ref().map_or_else(|| "{}".to_owned(), to_json_string),
        }),
        "thinking" => Part::Thinking(Thinking {
            text: block.thinking.unwrap_or_default(),
            signature: block.signature.filter(|signature| !signature.is_empty()),
            redacted: None,
            origin: Some(Format::Anthropic),
        }),
        "redacted_thinking" => Part::Thinking(Thinking {
            text: String::new(),
            signature: None,
            redacted: Some(block.data.ok_or_else(|| missing("data"))?),
            origin: Some(Format::Anthropic),
        }),
        _ => return Ok(None),
    }))
}

#[derive(Serialize)]
struct OutResponse<'a> {
    id: Cow<'a, str>,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: Vec<OutBlock<'a>>,
    stop_reason: &'a str,
    stop_sequence: Option<&'a str>,
    usage: OutUsage,
}

/// Writes a whole reply for an Anthropic client.
pub(super) fn encode(response: &Response) -> Result<Vec<u8>> {
    let mut content = Vec::with_capacity(response.parts.len());
    for (i, part) in response.parts.iter().enumerate() {
        let block = match part {
            Part::Thinking(thinking) => thinking_block(thinking),
            other => encode_part(other, &|| format!("content[{i}]"))?,
        };
        content.extend(block);
    }
    let out = OutResponse {
        id: if response.id.is_empty() {
            Cow::Borrowed("msg_translated")
        } else {
            Cow::Borrowed(&response.id)
        },
        kind: "message",
        role: "assistant",
        model: &response.model,
        content,
        stop_reason: stop_name(&response.stop),
        stop_sequence: response.stop_sequence.as_deref(),
        usage: OutUsage::from_ir(&response.usage),
    };
    serde_json::to_vec(&out).map_err(|error| Error::invalid("response", error.to_string()))
}

/// A reasoning block for an Anthropic client: another provider's signature is wrapped (it
/// comes back on the next turn and is routed to that provider only); redacted reasoning is
/// Anthropic's alone.
fn thinking_block(thinking: &Thinking) -> Option<OutBlock<'_>> {
    let origin = thinking.origin.unwrap_or(Format::Anthropic);
    if let Some(data) = &thinking.redacted {
        return (origin == Format::Anthropic).then_some(OutBlock::RedactedThinking { data });
    }
    let signature = match &thinking.signature {
        Some(signature) if origin == Format::Anthropic => Cow::Borrowed(signature.as_str()),
        Some(signature) => Cow::Owned(wrap_signature(Format::Anthropic, origin, signature)),
        None => Cow::Borrowed(""),
    };
    Some(OutBlock::Thinking { thinking: &thinking.text, signature })
}

#[derive(Deserialize)]
struct WireErrorBody {
    error: Option<WireError>,
}

#[derive(Deserialize)]
struct WireError {
    #[serde(rename = "type")]
    kind: Option<String>,
    message: Option<String>,
}

/// The common kind of Anthropic's error `type`.
pub(super) fn kind_from(name: &str, status: u16) -> ErrorKind {
    match name {
        "invalid_request_error" => ErrorKind::InvalidRequest,
        "authentication_error" => ErrorKind::Authentication,
        "permission_error" => ErrorKind::Permission,
        "not_found_error" => ErrorKind::NotFound,
        "request_too_large" => ErrorKind::RequestTooLarge,
        "rate_limit_error" => ErrorKind::RateLimit,
        "api_error" => ErrorKind::Api,
        "overloaded_error" => ErrorKind::Overloaded,
        _ => ErrorKind::from_status(status),
    }
}

/// Anthropic's error `type` for a common kind.
pub(super) const fn kind_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidRequest => "invalid_request_error",
        ErrorKind::Authentication => "authentication_error",
        ErrorKind::Permission => "permission_error",
        ErrorKind::NotFound => "not_found_error",
        ErrorKind::RequestTooLarge => "request_too_large",
        ErrorKind::RateLimit => "rate_limit_error",
        ErrorKind::Api => "api_error",
        ErrorKind::Overloaded => "overloaded_error",
    }
}

/// Reads an Anthropic provider's error answer.
pub(super) fn decode_error(status: u16, body: &[u8]) -> ApiError {
    match serde_json::from_slice::<WireErrorBody>(body) {
        Ok(WireErrorBody { error: Some(WireError { kind, message: Some(message) }) }) => ApiError {
            status,
            kind: kind
                .as_deref()
                .map_or(ErrorKind::from_status(status), |kind| kind_from(kind, status)),
            message,
        },
        _ => ApiError { status, kind: ErrorKind::from_status(status), message: raw_message(body) },
    }
}

#[derive(Serialize)]
pub(super) struct OutErrorBody<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    error: OutError<'a>,
}

#[derive(Serialize)]
struct OutError<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    message: &'a str,
}

impl<'a> OutErrorBody<'a> {
    pub(super) fn new(error: &'a ApiError) -> Self {
        Self {
            kind: "error",
            error: OutError { kind: kind_name(error.kind), message: &error.message },
        }
    }
}

/// Writes an error body for an Anthropic client.
pub(super) fn encode_error(error: &ApiError) -> Vec<u8> {
    serde_json::to_vec(&OutErrorBody::new(error)).unwrap_or_default()
}
