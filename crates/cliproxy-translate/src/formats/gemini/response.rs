//! Gemini replies (`GenerateContentResponse`) and errors.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::encode::{OutCall, OutContent, OutPart, arguments_object, image_part};
use super::request::{WireContent, WirePart};
use crate::Format;
use crate::codec::wrap_signature;
use crate::error::{Error, Result};
use crate::formats::shared::{culprit, parse, raw_message, to_json_string};
use crate::ir::{ApiError, ErrorKind, Part, Response, StopReason, Thinking, ToolCall, Usage};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct WireResponse {
    pub(super) candidates: Option<Vec<WireCandidate>>,
    #[serde(alias = "usage_metadata")]
    pub(super) usage_metadata: Option<WireUsage>,
    #[serde(alias = "model_version")]
    pub(super) model_version: Option<String>,
    #[serde(alias = "response_id")]
    pub(super) response_id: Option<String>,
    #[serde(alias = "prompt_feedback")]
    pub(super) prompt_feedback: Option<WireFeedback>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct WireCandidate {
    pub(super) content: Option<WireContent>,
    #[serde(alias = "finish_reason")]
    pub(super) finish_reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct WireFeedback {
    #[serde(alias = "block_reason")]
    pub(super) block_reason: Option<String>,
}

/// Gemini's usage: the prompt includes the cached part; `candidatesTokenCount` excludes
/// the thoughts, which `thoughtsTokenCount` counts.
#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "camelCase")]
pub(super) struct WireUsage {
    #[serde(alias = "prompt_token_count")]
    prompt_token_count: Option<u64>,
    #[serde(alias = "candidates_token_count")]
    candidates_token_count: Option<u64>,
    #[serde(alias = "cached_content_token_count")]
    cached_content_token_count: Option<u64>,
    #[serde(alias = "thoughts_token_count")]
    thoughts_token_count: Option<u64>,
}

impl WireUsage {
    pub(super) fn to_ir(self) -> Usage {
        let thoughts = self.thoughts_token_count.unwrap_or(0);
        Usage {
            input_tokens: self.prompt_token_count.unwrap_or(0),
            output_tokens: self.candidates_token_count.unwrap_or(0).saturating_add(thoughts),
            cache_read_tokens: self.cached_content_token_count.unwrap_or(0),
            cache_write_tokens: 0,
            reasoning_tokens: thoughts,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct OutUsage {
    prompt_token_count: u64,
    candidates_token_count: u64,
    total_token_count: u64,
    #[serde(skip_serializing_if = "is_zero")]
    cached_content_token_count: u64,
    #[serde(skip_serializing_if = "is_zero")]
    thoughts_token_count: u64,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

impl OutUsage {
    pub(super) fn from_ir(usage: &Usage) -> Self {
        Self {
            prompt_token_count: usage.input_tokens,
            candidates_token_count: usage.output_tokens.saturating_sub(usage.reasoning_tokens),
            total_token_count: usage.input_tokens.saturating_add(usage.output_tokens),
            cached_content_token_count: usage.cache_read_tokens,
            thoughts_token_count: usage.reasoning_tokens,
        }
    }
}

/// The common stop reason of a `finishReason`; `called` says whether the reply called a
/// tool (Gemini says `STOP` then).
pub(super) fn stop_from(reason: &str, called: bool) -> StopReason {
    match reason {
        "STOP" if called => StopReason::ToolUse,
        "STOP" | "FINISH_REASON_UNSPECIFIED" => StopReason::EndTurn,
        "MAX_TOKENS" => StopReason::MaxTokens,
        "SAFETY"
        | "RECITATION"
        | "BLOCKLIST"
        | "PROHIBITED_CONTENT"
        | "SPII"
        | "IMAGE_SAFETY"
        | "IMAGE_PROHIBITED_CONTENT"
        | "IMAGE_RECITATION" => StopReason::ContentFilter,
        other => StopReason::Other(other.to_owned()),
    }
}

/// The `finishReason` of a common stop reason.
pub(super) fn stop_name(stop: &StopReason) -> &str {
    match stop {
        StopReason::EndTurn | StopReason::StopSequence | StopReason::ToolUse => "STOP",
        StopReason::MaxTokens => "MAX_TOKENS",
        StopReason::ContentFilter => "SAFETY",
        StopReason::Other(name)
            if !name.is_empty() && name.bytes().all(|b| b.is_ascii_uppercase() || b == b'_') =>
        {
            name
        }
        StopReason::Other(_) => "OTHER",
    }
}

/// The id a reply's id-less call gets: unique across turns when the reply has an id.
pub(super) fn call_id(response_id: &str, n: usize) -> String {
    let safe: String = response_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .take(40)
        .collect();
    if safe.is_empty() { format!("call_{n}") } else { format!("call_{safe}_{n}") }
}

/// Reads a Gemini provider's whole reply (the first candidate: requests never ask for more).
pub(super) fn decode(body: &[u8]) -> Result<Response> {
    let wire: WireResponse = parse(body, culprit::<WireResponse>)?;
    let id = wire.response_id.unwrap_or_default();
    let mut parts = Vec::new();
    let mut stop = StopReason::EndTurn;
    let mut calls = 0;
    if let Some(candidate) = wire.candidates.and_then(|candidates| candidates.into_iter().next()) {
        for part in candidate.content.and_then(|content| content.parts).unwrap_or_default() {
            decode_part(part, &id, &mut calls, &mut parts);
        }
        if let Some(reason) = candidate.finish_reason {
            stop = stop_from(&reason, calls > 0);
        }
    } else if wire.prompt_feedback.and_then(|feedback| feedback.block_reason).is_some() {
        // The prompt itself was blocked: no candidate at all.
        stop = StopReason::ContentFilter;
    }
    Ok(Response {
        id,
        model: wire.model_version.unwrap_or_default(),
        parts,
        stop,
        stop_sequence: None,
        usage: wire.usage_metadata.unwrap_or_default().to_ir(),
    })
}

/// One part of a reply, appended to `parts` (a signature on a non-thought part first
/// becomes a thinking block of its own).
pub(super) fn decode_part(
    part: WirePart,
    response_id: &str,
    calls: &mut usize,
    parts: &mut Vec<Part>,
) {
    let signature = part.thought_signature.filter(|signature| !signature.is_empty());
    if part.thought == Some(true) {
        parts.push(Part::Thinking(Thinking {
            text: part.text.unwrap_or_default(),
            signature,
            redacted: None,
            origin: Some(Format::Gemini),
        }));
        return;
    }
    if signature.is_some() {
        parts.push(Part::Thinking(Thinking {
            text: String::new(),
            signature,
            redacted: None,
            origin: Some(Format::Gemini),
        }));
    }
    if let Some(call) = part.function_call {
        let id = call.id.unwrap_or_else(|| call_id(response_id, *calls));
        *calls += 1;
        parts.push(Part::ToolCall(ToolCall {
            id,
            name: call.name.unwrap_or_default(),
            arguments: call.args.as_ref().map_or_else(|| "{}".to_owned(), to_json_string),
        }));
    } else if let Some(text) = part.text.filter(|text| !text.is_empty()) {
        parts.push(Part::Text(text));
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OutResponse<'a> {
    candidates: [OutCandidate<'a>; 1],
    usage_metadata: OutUsage,
    #[serde(skip_serializing_if = "str::is_empty")]
    model_version: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    response_id: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OutCandidate<'a> {
    content: OutContent<'a>,
    finish_reason: &'a str,
    index: u32,
}

/// Writes a whole reply for a Gemini client.
pub(super) fn encode(response: &Response) -> Result<Vec<u8>> {
    let mut parts: Vec<OutPart<'_>> = Vec::with_capacity(response.parts.len());
    let mut signature: Option<Cow<'_, str>> = None;
    for (i, part) in response.parts.iter().enumerate() {
        let mut out = match part {
            Part::Thinking(thinking) => {
                let Some(thinking) = thought_part(thinking) else { continue };
                if thinking.text.is_some_and(str::is_empty) && !thinking.thought {
                    signature = thinking.thought_signature;
                    continue;
                }
                thinking
            }
            Part::Text(text) => OutPart { text: Some(text), ..OutPart::default() },
            Part::Image(image) => image_part(image),
            Part::ToolCall(call) => OutPart {
                function_call: Some(OutCall {
                    id: Some(&call.id),
                    name: &call.name,
                    args: arguments_object(&call.arguments).ok_or_else(|| {
                        Error::invalid(format!("parts[{i}].arguments"), "not a JSON object")
                    })?,
                }),
                ..OutPart::default()
            },
            // A reply holds no tool results.
            Part::ToolResult(_) => continue,
        };
        if out.thought_signature.is_none() {
            out.thought_signature = signature.take();
        }
        parts.push(out);
    }
    if let Some(signature) = signature {
        parts.push(OutPart {
            text: Some(""),
            thought_signature: Some(signature),
            ..OutPart::default()
        });
    }
    let out = OutResponse {
        candidates: [OutCandidate {
            content: OutContent { role: "model", parts },
            finish_reason: stop_name(&response.stop),
            index: 0,
        }],
        usage_metadata: OutUsage::from_ir(&response.usage),
        model_version: &response.model,
        response_id: &response.id,
    };
    serde_json::to_vec(&out).map_err(|error| Error::invalid("response", error.to_string()))
}

/// A reasoning block as a part for a Gemini client. Gemini's own signature-only block is
/// returned as a part with empty text and no `thought` (the caller moves its signature onto
/// the next part, where it came from); reasoning of another provider becomes a thought part
/// with its signature wrapped. Redacted reasoning has no Gemini form and is dropped.
fn thought_part(thinking: &Thinking) -> Option<OutPart<'_>> {
    if thinking.redacted.is_some() {
        return None;
    }
    let origin = thinking.origin.unwrap_or(Format::Gemini);
    let signature = thinking.signature.as_deref().map(|signature| {
        if origin == Format::Gemini {
            Cow::Borrowed(signature)
        } else {
            Cow::Owned(wrap_signature(Format::Gemini, origin, signature))
        }
    });
    let own_signature_only = origin == Format::Gemini && thinking.text.is_empty();
    Some(OutPart {
        text: Some(&thinking.text),
        thought: !own_signature_only,
        thought_signature: signature,
        ..OutPart::default()
    })
}

#[derive(Deserialize)]
struct WireErrorBody {
    error: Option<WireError>,
}

#[derive(Deserialize)]
struct WireError {
    message: Option<String>,
    status: Option<String>,
}

/// The common kind of a Google status name.
fn kind_from(status_name: &str, status: u16) -> ErrorKind {
    match status_name {
        "INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "OUT_OF_RANGE" => {
            if status == 413 {
                ErrorKind::RequestTooLarge
            } else {
                ErrorKind::InvalidRequest
            }
        }
        "UNAUTHENTICATED" => ErrorKind::Authentication,
        "PERMISSION_DENIED" => ErrorKind::Permission,
        "NOT_FOUND" => ErrorKind::NotFound,
        "RESOURCE_EXHAUSTED" => ErrorKind::RateLimit,
        "UNAVAILABLE" | "DEADLINE_EXCEEDED" => ErrorKind::Overloaded,
        "INTERNAL" | "UNKNOWN" => ErrorKind::Api,
        _ => ErrorKind::from_status(status),
    }
}

/// The Google status name of a common kind.
pub(super) const fn status_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidRequest | ErrorKind::RequestTooLarge => "INVALID_ARGUMENT",
        ErrorKind::Authentication => "UNAUTHENTICATED",
        ErrorKind::Permission => "PERMISSION_DENIED",
        ErrorKind::NotFound => "NOT_FOUND",
        ErrorKind::RateLimit => "RESOURCE_EXHAUSTED",
        ErrorKind::Api => "INTERNAL",
        ErrorKind::Overloaded => "UNAVAILABLE",
    }
}

/// Reads a Gemini provider's error answer (a stream answers errors inside a JSON array).
pub(super) fn decode_error(status: u16, body: &[u8]) -> ApiError {
    // Serde reads a struct from an array too, by position: the array form is chosen by its
    // first byte, not tried as a fallback.
    let parsed = if body.trim_ascii_start().starts_with(b"[") {
        serde_json::from_slice::<Vec<WireErrorBody>>(body)
            .ok()
            .and_then(|list| list.into_iter().next())
    } else {
        serde_json::from_slice::<WireErrorBody>(body).ok()
    };
    match parsed {
        Some(WireErrorBody { error: Some(WireError { message: Some(message), status: name }) }) => {
            ApiError {
                status,
                kind: name
                    .as_deref()
                    .map_or(ErrorKind::from_status(status), |name| kind_from(name, status)),
                message,
            }
        }
        _ => ApiError { status, kind: ErrorKind::from_status(status), message: raw_message(body) },
    }
}

#[derive(Serialize)]
pub(super) struct OutErrorBody<'a> {
    error: OutError<'a>,
}

#[derive(Serialize)]
struct OutError<'a> {
    code: u16,
    message: &'a str,
    status: &'static str,
}

impl<'a> OutErrorBody<'a> {
    pub(super) fn new(error: &'a ApiError) -> Self {
        Self {
            error: OutError {
                code: error.status,
                message: &error.message,
                status: status_name(error.kind),
            },
        }
    }
}

/// Writes an error body for a Gemini client.
pub(super) fn encode_error(error: &ApiError) -> Vec<u8> {
    serde_json::to_vec(&OutErrorBody::new(error)).unwrap_or_default()
}
