//! Whole Responses replies (`response` objects), both ways: the output items a client is
//! given, which the stream encoder builds up too.

use super::*;

#[derive(Deserialize)]
pub(super) struct WireResponse {
    #[serde(default)]
    pub(super) id: Option<String>,
    #[serde(default)]
    pub(super) model: Option<String>,
    #[serde(default)]
    pub(super) status: Option<String>,
    #[serde(default)]
    pub(super) incomplete_details: Option<WireIncomplete>,
    #[serde(default)]
    pub(super) output: Option<Vec<WireItem>>,
    #[serde(default)]
    pub(super) usage: Option<WireUsage>,
    #[serde(default)]
    pub(super) error: Option<shared::WireError>,
}

#[derive(Deserialize)]
pub(super) struct WireIncomplete {
    #[serde(default)]
    pub(super) reason: Option<String>,
}

#[derive(Deserialize, Default)]
pub(super) struct WireUsage {
    #[serde(default)]
    pub(super) input_tokens: Option<u64>,
    #[serde(default)]
    pub(super) output_tokens: Option<u64>,
    #[serde(default)]
    pub(super) input_tokens_details: Option<WireInputDetails>,
    #[serde(default)]
    pub(super) output_tokens_details: Option<WireOutputDetails>,
}

#[derive(Deserialize, Default)]
pub(super) struct WireInputDetails {
    #[serde(default)]
    pub(super) cached_tokens: Option<u64>,
}

#[derive(Deserialize, Default)]
pub(super) struct WireOutputDetails {
    #[serde(default)]
    pub(super) reasoning_tokens: Option<u64>,
}

impl WireUsage {
    pub(super) fn to_ir(&self) -> Usage {
        Usage {
            input_tokens: self.input_tokens.unwrap_or(0),
            output_tokens: self.output_tokens.unwrap_or(0),
            cache_read_tokens: self
                .input_tokens_details
                .as_ref()
                .and_then(|d| d.cached_tokens)
                .unwrap_or(0),
            cache_write_tokens: 0,
            reasoning_tokens: self
                .output_tokens_details
                .as_ref()
                .and_then(|d| d.reasoning_tokens)
                .unwrap_or(0),
        }
    }
}

impl WireResponse {
    /// Why the reply ended: its status, and what it holds.
    pub(super) fn stop(&self, tool_calls: bool, refused: bool) -> StopReason {
        let reason = self.incomplete_details.as_ref().and_then(|details| details.reason.as_deref());
        match (self.status.as_deref(), reason) {
            (Some("incomplete"), Some("max_output_tokens")) => StopReason::MaxTokens,
            (Some("incomplete"), Some("content_filter")) => StopReason::ContentFilter,
            (Some("incomplete"), Some(other)) => StopReason::Other(other.to_owned()),
            (Some("failed"), _) => StopReason::Other("failed".to_owned()),
            _ if refused => StopReason::ContentFilter,
            _ if tool_calls => StopReason::ToolUse,
            _ => StopReason::EndTurn,
        }
    }

    pub(super) fn usage(&self) -> Usage {
        self.usage.as_ref().map(WireUsage::to_ir).unwrap_or_default()
    }

    /// The provider's error of a failed reply.
    pub(super) fn take_error(&mut self) -> ApiError {
        self.error.take().unwrap_or_default().into_api_error(None)
    }

    pub(super) fn id_and_model(&mut self) -> (Option<String>, Option<String>) {
        (self.id.take(), self.model.take())
    }

    pub(super) fn into_ir(mut self) -> Response {
        let mut parts = Vec::new();
        let mut refused = false;
        for item in self.output.take().unwrap_or_default() {
            match item.kind.as_deref() {
                Some("message") => match item.content {
                    Some(WireContent::Text(text)) => parts.push(Part::Text(text)),
                    Some(WireContent::Parts(content)) => {
                        for part in content {
                            if let Some(text) = part.text {
                                parts.push(Part::Text(text));
                            } else if let Some(refusal) = part.refusal {
                                refused = true;
                                parts.push(Part::Text(refusal));
                            }
                        }
                    }
                    None => {}
                },
                Some("function_call") => parts.push(Part::ToolCall(ToolCall {
                    id: item.call_id.or(item.id).unwrap_or_default(),
                    name: item.name.unwrap_or_default(),
                    arguments: item.arguments.unwrap_or_else(|| "{}".to_owned()),
                })),
                Some("reasoning") => {
                    // Reasoning nobody asked to see (no summary, no encrypted content) is left
                    // out rather than given as an empty thinking part.
                    let thinking = reasoning_part(item, false);
                    if !thinking.text.is_empty() || thinking.signature.is_some() {
                        parts.push(Part::Thinking(thinking));
                    }
                }
                // Built-in tools' items (web search, file search…) were refused in the
                // request; a provider that used one on its own has nothing to translate.
                _ => {}
            }
        }
        let tool_calls = parts.iter().any(|part| matches!(part, Part::ToolCall(_)));
        let stop = self.stop(tool_calls, refused);
        let usage = self.usage();
        Response {
            id: self.id.unwrap_or_default(),
            model: self.model.unwrap_or_default(),
            parts,
            stop,
            stop_sequence: None,
            usage,
        }
    }
}

/// The reply's id, or one in OpenAI's shape when the provider gave none.
pub(super) fn response_id(id: &str) -> Cow<'_, str> {
    if id.is_empty() { format!("resp_{:x}", shared::now()).into() } else { id.into() }
}

/// One output item of a reply for a client, as the stream builds it up and the whole reply
/// holds it.
#[derive(Debug)]
pub(super) struct Item {
    pub(super) id: String,
    pub(super) kind: ItemKind,
    /// The text, the reasoning summary or the call's arguments so far.
    pub(super) text: String,
    pub(super) done: bool,
}

#[derive(Debug)]
pub(super) enum ItemKind {
    Message,
    Reasoning { encrypted: Option<String> },
    FunctionCall { call_id: String, name: String },
}

/// The output items of one reply.
#[derive(Debug, Default)]
pub(super) struct Items(pub(super) Vec<Item>);

/// How a reply for a client ended.
pub(super) enum Ending<'a> {
    Running,
    Stop(&'a StopReason),
    Failed(&'a ApiError),
}

impl Items {
    /// The id of the output item at `index` of `kind`: unique within the reply.
    pub(super) fn item_id(prefix: &str, response: &str, index: usize) -> String {
        format!("{prefix}_{index}_{}", response.trim_start_matches("resp_"))
    }

    /// The client's form of a thinking part's signature: its own, or wrapped with its
    /// origin; `None` when there is none to give (or it came from an unknown format).
    pub(super) fn client_signature(
        thinking_origin: Option<Format>,
        signature: &str,
    ) -> Option<(Option<String>, String)> {
        match thinking_origin? {
            Format::OpenAiResponses => {
                let (id, encrypted) = unpack_signature(signature);
                Some((id.map(str::to_owned), encrypted.to_owned()))
            }
            origin => Some((None, wrap_signature(Format::OpenAiResponses, origin, signature))),
        }
    }

    pub(super) fn from_parts(response_id: &str, parts: &[Part]) -> Self {
        let mut items = Self::default();
        for part in parts {
            let index = items.0.len();
            let item = match part {
                Part::Text(text) => Item {
                    id: Self::item_id("msg", response_id, index),
                    kind: ItemKind::Message,
                    text: text.clone(),
                    done: true,
                },
                Part::ToolCall(call) => Item {
                    id: Self::item_id("fc", response_id, index),
                    kind: ItemKind::FunctionCall {
                        call_id: call.id.clone(),
                        name: call.name.clone(),
                    },
                    text: call.arguments.clone(),
                    done: true,
                },
                // Anthropic's redacted reasoning has no form a Responses client can show or
                // send back: it is dropped.
                Part::Thinking(thinking) if thinking.redacted.is_none() => {
                    let signature = thinking
                        .signature
                        .as_deref()
                        .and_then(|signature| Self::client_signature(thinking.origin, signature));
                    let (id, encrypted) = match signature {
                        Some((id, encrypted)) => (id, Some(encrypted)),
                        None => (None, None),
                    };
                    Item {
                        id: id.unwrap_or_else(|| Self::item_id("rs", response_id, index)),
                        kind: ItemKind::Reasoning { encrypted },
                        text: thinking.text.clone(),
                        done: true,
                    }
                }
                Part::Thinking(_) | Part::Image(_) | Part::ToolResult(_) => continue,
            };
            items.0.push(item);
        }
        items
    }

    /// The reply object (`response`) with these items.
    pub(super) fn response<'a>(
        &'a self,
        id: &'a str,
        model: &'a str,
        created_at: u64,
        ending: Ending<'a>,
        usage: Option<&Usage>,
    ) -> OutResponse<'a> {
        let (status, incomplete_details, error) = match ending {
            Ending::Running => ("in_progress", None, None),
            Ending::Stop(StopReason::MaxTokens) => {
                ("incomplete", Some(OutIncomplete { reason: "max_output_tokens" }), None)
            }
            Ending::Stop(StopReason::ContentFilter) => {
                ("incomplete", Some(OutIncomplete { reason: "content_filter" }), None)
            }
            Ending::Stop(_) => ("completed", None, None),
            Ending::Failed(error) => {
                let (kind, code) = shared::error_type(error.kind);
                (
                    "failed",
                    None,
                    Some(OutFailure { code: code.unwrap_or(kind), message: &error.message }),
                )
            }
        };
        OutResponse {
            id,
            object: "response",
            created_at,
            status,
            error,
            incomplete_details,
            model,
            output: self.0.iter().map(Item::out).collect(),
            parallel_tool_calls: true,
            tool_choice: "auto",
            tools: [],
            usage: usage.map(OutUsage::new),
        }
    }
}

impl Item {
    /// The item as the reply (or an `output_item` event) shows it.
    pub(super) fn out(&self) -> OutItem<'_> {
        let status = if self.done { "completed" } else { "in_progress" };
        match &self.kind {
            ItemKind::Message => OutItem::Message {
                id: &self.id,
                status,
                role: "assistant",
                content: if self.done { vec![OutText::new(&self.text)] } else { Vec::new() },
            },
            ItemKind::Reasoning { encrypted } => OutItem::Reasoning {
                id: &self.id,
                summary: if self.done { OutSummary::of(&self.text) } else { Vec::new() },
                encrypted_content: encrypted.as_deref(),
            },
            ItemKind::FunctionCall { call_id, name } => OutItem::FunctionCall {
                id: &self.id,
                status,
                call_id,
                name,
                arguments: if self.done { &self.text } else { "" },
            },
        }
    }
}

#[derive(Serialize)]
pub(super) struct OutResponse<'a> {
    pub(super) id: &'a str,
    pub(super) object: &'static str,
    pub(super) created_at: u64,
    pub(super) status: &'static str,
    pub(super) error: Option<OutFailure<'a>>,
    pub(super) incomplete_details: Option<OutIncomplete>,
    pub(super) model: &'a str,
    pub(super) output: Vec<OutItem<'a>>,
    pub(super) parallel_tool_calls: bool,
    pub(super) tool_choice: &'static str,
    pub(super) tools: [(); 0],
    pub(super) usage: Option<OutUsage>,
}

#[derive(Serialize)]
pub(super) struct OutFailure<'a> {
    pub(super) code: &'static str,
    pub(super) message: &'a str,
}

#[derive(Serialize)]
pub(super) struct OutIncomplete {
    pub(super) reason: &'static str,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum OutItem<'a> {
    Message {
        id: &'a str,
        status: &'static str,
        role: &'static str,
        content: Vec<OutText<'a>>,
    },
    Reasoning {
        id: &'a str,
        summary: Vec<OutSummary<'a>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        encrypted_content: Option<&'a str>,
    },
    FunctionCall {
        id: &'a str,
        status: &'static str,
        call_id: &'a str,
        name: &'a str,
        arguments: &'a str,
    },
}

#[derive(Serialize)]
pub(super) struct OutText<'a> {
    #[serde(rename = "type")]
    pub(super) kind: &'static str,
    pub(super) text: &'a str,
    pub(super) annotations: [(); 0],
}

impl<'a> OutText<'a> {
    pub(super) const fn new(text: &'a str) -> Self {
        Self { kind: "output_text", text, annotations: [] }
    }
}

/// Usage as the Responses API reports it. Anthropic's cache writes have no figure here: they
/// stay counted in `input_tokens`.
#[derive(Serialize)]
pub(super) struct OutUsage {
    pub(super) input_tokens: u64,
    pub(super) input_tokens_details: OutInputDetails,
    pub(super) output_tokens: u64,
    pub(super) output_tokens_details: OutOutputDetails,
    pub(super) total_tokens: u64,
}

#[derive(Serialize)]
pub(super) struct OutInputDetails {
    pub(super) cached_tokens: u64,
}

#[derive(Serialize)]
pub(super) struct OutOutputDetails {
    pub(super) reasoning_tokens: u64,
}

impl OutUsage {
    pub(super) const fn new(usage: &Usage) -> Self {
        Self {
            input_tokens: usage.input_tokens,
            input_tokens_details: OutInputDetails { cached_tokens: usage.cache_read_tokens },
            output_tokens: usage.output_tokens,
            output_tokens_details: OutOutputDetails { reasoning_tokens: usage.reasoning_tokens },
            total_tokens: usage.input_tokens.saturating_add(usage.output_tokens),
        }
    }
}
