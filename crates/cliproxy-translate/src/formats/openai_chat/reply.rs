//! Whole Chat Completions replies (`chat.completion`), both ways, and their usage figures.

use super::*;

#[derive(Deserialize)]
pub(super) struct WireResponse {
    #[serde(default)]
    pub(super) id: Option<String>,
    #[serde(default)]
    pub(super) model: Option<String>,
    pub(super) choices: Vec<WireChoice>,
    #[serde(default)]
    pub(super) usage: Option<WireUsage>,
}

#[derive(Deserialize)]
pub(super) struct WireChoice {
    #[serde(default)]
    pub(super) message: Option<WireReplyMessage>,
    #[serde(default)]
    pub(super) finish_reason: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct WireReplyMessage {
    #[serde(default)]
    pub(super) content: Option<String>,
    #[serde(default)]
    pub(super) refusal: Option<String>,
    #[serde(default)]
    pub(super) reasoning_content: Option<String>,
    #[serde(default)]
    pub(super) tool_calls: Option<Vec<WireToolCall>>,
}

/// Usage as Chat Completions reports it; every figure may be missing or null.
#[derive(Deserialize, Default)]
pub(super) struct WireUsage {
    #[serde(default)]
    pub(super) prompt_tokens: Option<u64>,
    #[serde(default)]
    pub(super) completion_tokens: Option<u64>,
    #[serde(default)]
    pub(super) prompt_tokens_details: Option<WirePromptDetails>,
    #[serde(default)]
    pub(super) completion_tokens_details: Option<WireCompletionDetails>,
}

#[derive(Deserialize, Default)]
pub(super) struct WirePromptDetails {
    #[serde(default)]
    pub(super) cached_tokens: Option<u64>,
}

#[derive(Deserialize, Default)]
pub(super) struct WireCompletionDetails {
    #[serde(default)]
    pub(super) reasoning_tokens: Option<u64>,
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
    pub(super) fn into_ir(self) -> Result<Response> {
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
        // Some servers say `stop` after tool calls: the calls are what the client must act on.
        if stop == StopReason::EndTurn && parts.iter().any(|part| matches!(part, Part::ToolCall(_)))
        {
            stop = StopReason::ToolUse;
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
    pub(super) prompt_tokens: u64,
    pub(super) completion_tokens: u64,
    pub(super) total_tokens: u64,
    pub(super) prompt_tokens_details: OutPromptDetails,
    pub(super) completion_tokens_details: OutCompletionDetails,
}

#[derive(Serialize)]
pub(super) struct OutPromptDetails {
    pub(super) cached_tokens: u64,
}

#[derive(Serialize)]
pub(super) struct OutCompletionDetails {
    pub(super) reasoning_tokens: u64,
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
pub(super) struct OutResponse<'a> {
    pub(super) id: std::borrow::Cow<'a, str>,
    pub(super) object: &'static str,
    pub(super) created: u64,
    pub(super) model: &'a str,
    pub(super) choices: [OutChoice<'a>; 1],
    pub(super) usage: OutUsage,
}

#[derive(Serialize)]
pub(super) struct OutChoice<'a> {
    pub(super) index: u32,
    pub(super) message: OutReply<'a>,
    pub(super) logprobs: Option<()>,
    pub(super) finish_reason: &'static str,
}

#[derive(Serialize)]
pub(super) struct OutReply<'a> {
    pub(super) role: &'static str,
    pub(super) content: Option<String>,
    pub(super) refusal: Option<()>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) reasoning_content: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) tool_calls: Vec<OutToolCall<'a>>,
}

/// The reply's id, or one in OpenAI's shape when the provider gave none.
pub(super) fn chat_id(id: &str) -> std::borrow::Cow<'_, str> {
    if id.is_empty() { format!("chatcmpl-{:x}", shared::now()).into() } else { id.into() }
}

pub(super) fn encode_response(response: &Response) -> Result<Vec<u8>> {
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
