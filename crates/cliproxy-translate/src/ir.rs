//! The common form every format is decoded into and encoded from: a request, a reply, the
//! events of a streamed reply and an upstream error, each holding what at least two of the
//! formats share. A format's codec (`formats/`) owns the mapping between its wire JSON and
//! these types; a pair's translation is the client's decoder followed by the provider's
//! encoder (and back for the reply), so that each format is mapped once, not once per pair.
//!
//! What a format carries that has no place here is either dropped by its decoder (it changes
//! nothing about the output: `docs/translation.md` lists it) or kept in
//! [`Request::unmapped`], so that the encoder of another format refuses it by name instead of
//! silently producing a different answer.

use serde_json::Value;

/// A request for one model reply.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Request {
    /// The model the client asked for (Gemini carries it in the path: the caller fills it in).
    pub model: String,
    /// System and developer instructions, in order. Encoders without a developer role fold
    /// those into the system prompt.
    pub system: Vec<SystemPart>,
    /// The conversation, oldest first. Tool results sit in user turns, as Anthropic and Gemini
    /// put them; OpenAI's encoders split them into `tool` messages.
    pub messages: Vec<Message>,
    /// Tools the model may call.
    pub tools: Vec<Tool>,
    /// How the model must use the tools; `None` leaves it to the provider's default (auto).
    pub tool_choice: Option<ToolChoice>,
    /// `false` when the client forbids several calls in one turn; `None` when it did not say.
    pub parallel_tool_calls: Option<bool>,
    /// The output-token limit (`max_tokens`, `max_completion_tokens`, `max_output_tokens`,
    /// `maxOutputTokens`). Anthropic requires one: its encoder uses
    /// [`DEFAULT_MAX_TOKENS`] when the client gave none.
    pub max_tokens: Option<u64>,
    /// Sampling parameters.
    pub sampling: Sampling,
    /// Stop sequences.
    pub stop: Vec<String>,
    /// Whether the client asked for a streamed reply.
    pub stream: bool,
    /// Structured output: the reply must be JSON (matching a schema).
    pub output: Option<OutputFormat>,
    /// Reasoning / extended thinking.
    pub reasoning: Option<Reasoning>,
    /// Fields of the client's request that change the output and have no place above, by
    /// their name in the client's format (`logprobs`, `n`, …). Only an encoder of the same
    /// format may carry them; any other refuses the request naming the first one.
    pub unmapped: Vec<(String, Value)>,
}

/// The output-token limit sent to Anthropic when the client gave none (its API requires one).
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// One system or developer instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemPart {
    /// `true` for OpenAI's `developer` role; encoders without one treat it as system text.
    pub developer: bool,
    /// The text.
    pub text: String,
}

/// Who said a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The client's side: its text, images and tool results.
    User,
    /// The model's side: its text, thinking and tool calls.
    Assistant,
}

/// One turn of the conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Who said it.
    pub role: Role,
    /// What it holds, in order.
    pub parts: Vec<Part>,
}

/// One piece of a turn or of a reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    /// Plain text.
    Text(String),
    /// An image.
    Image(Image),
    /// The model calling a tool.
    ToolCall(ToolCall),
    /// The client's answer to a tool call.
    ToolResult(ToolResult),
    /// The model's reasoning.
    Thinking(Thinking),
}

/// An image, inline or by address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Image {
    /// Inline bytes, base64-encoded, with their media type (`image/png`).
    Base64 {
        /// The media type.
        media_type: String,
        /// The base64 text (standard alphabet, padded), as the client sent it.
        data: String,
    },
    /// An `https:` address (or a `data:` URL, which decoders turn into [`Image::Base64`]).
    Url {
        /// The address.
        url: String,
        /// The media type when the format names it (Gemini's `fileData.mimeType`).
        media_type: Option<String>,
    },
}

/// A tool call made by the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    /// The call's id, which its result refers to. Gemini calls may have none: its decoder
    /// makes one up (stable within the request) so that results can be matched.
    pub id: String,
    /// The tool's name.
    pub name: String,
    /// The arguments as JSON text (an object), exactly as produced: OpenAI carries text,
    /// Anthropic and Gemini an object, which their codecs serialise and parse.
    pub arguments: String,
}

/// The result of a tool call, sent back by the client.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolResult {
    /// The id of the call it answers.
    pub call_id: String,
    /// The tool's name when the format carries it (Gemini's `functionResponse.name`
    /// requires it: its encoder finds it from the matching call earlier in the conversation).
    pub name: Option<String>,
    /// The result: text and images.
    pub content: Vec<ToolResultPart>,
    /// Whether the tool failed (Anthropic's `is_error`).
    pub is_error: bool,
}

/// One piece of a tool result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolResultPart {
    /// Text (a JSON result is kept as its text).
    Text(String),
    /// An image.
    Image(Image),
}

/// The model's reasoning, as a reply returns it and a later request sends it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thinking {
    /// The reasoning text (a summary for providers that only give one); empty when redacted.
    pub text: String,
    /// The provider's opaque signature (Anthropic's `signature`, Gemini's
    /// `thoughtSignature`, OpenAI's `encrypted_content`), valid only for the format that made
    /// it: an encoder of another format drops the whole block.
    pub signature: Option<String>,
    /// Anthropic's `redacted_thinking` data.
    pub redacted: Option<String>,
    /// The format that produced it, so that an encoder keeps it only for its own format.
    pub origin: Option<crate::Format>,
}

/// A tool the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    /// Its name.
    pub name: String,
    /// What it does.
    pub description: Option<String>,
    /// Its arguments' JSON Schema (an object schema). Encoders cut it to the subset their
    /// provider accepts (`crate::schema`).
    pub parameters: Value,
    /// OpenAI's `strict`.
    pub strict: Option<bool>,
}

/// How the model must use the tools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    /// The model decides.
    Auto,
    /// No tool call.
    None,
    /// At least one tool call (OpenAI `required`, Anthropic `any`, Gemini `ANY`).
    Required,
    /// This tool.
    Named(String),
}

/// Sampling parameters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sampling {
    /// Temperature.
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    pub top_p: Option<f64>,
    /// Top-k (Anthropic, Gemini; OpenAI has none: its encoders refuse it).
    pub top_k: Option<u64>,
    /// Presence penalty (OpenAI, Gemini).
    pub presence_penalty: Option<f64>,
    /// Frequency penalty (OpenAI, Gemini).
    pub frequency_penalty: Option<f64>,
    /// Seed (OpenAI, Gemini).
    pub seed: Option<i64>,
}

/// Structured output.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputFormat {
    /// Any JSON object (OpenAI `json_object`, Gemini `responseMimeType: application/json`).
    JsonObject,
    /// JSON matching a schema.
    JsonSchema {
        /// The schema's name (OpenAI requires one; others make one up).
        name: String,
        /// The schema.
        schema: Value,
        /// OpenAI's `strict`.
        strict: Option<bool>,
    },
}

/// Reasoning / extended thinking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reasoning {
    /// Thinking off (Anthropic `disabled`, Gemini budget 0, OpenAI effort `minimal`/`none`).
    Off,
    /// An effort level (OpenAI `reasoning_effort`/`reasoning.effort`).
    Effort(Effort),
    /// A budget in tokens (Anthropic `thinking.budget_tokens`, Gemini `thinkingBudget`).
    Budget(u64),
}

/// OpenAI's reasoning effort levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effort {
    /// `minimal`.
    Minimal,
    /// `low`.
    Low,
    /// `medium`.
    Medium,
    /// `high`.
    High,
}

impl Effort {
    /// The thinking budget this effort maps to for providers that take a budget.
    pub const fn budget(self) -> u64 {
        match self {
            Self::Minimal => 1024,
            Self::Low => 2048,
            Self::Medium => 8192,
            Self::High => 24576,
        }
    }

    /// The effort a budget maps to for providers that take an effort.
    pub const fn from_budget(budget: u64) -> Self {
        match budget {
            0..=1024 => Self::Minimal,
            1025..=4096 => Self::Low,
            4097..=16384 => Self::Medium,
            _ => Self::High,
        }
    }

    /// OpenAI's name for it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Minimal => "minimal",
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
        }
    }
}

/// A whole (not streamed) reply.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Response {
    /// The provider's id for it (encoders make one up in their format's shape when empty).
    pub id: String,
    /// The model that answered.
    pub model: String,
    /// What the model produced, in order.
    pub parts: Vec<Part>,
    /// Why it stopped.
    pub stop: StopReason,
    /// The stop sequence that ended it, when one did and the format says which.
    pub stop_sequence: Option<String>,
    /// Tokens used.
    pub usage: Usage,
}

/// Why a reply ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum StopReason {
    /// It finished (OpenAI `stop`, Anthropic `end_turn`, Gemini `STOP`).
    #[default]
    EndTurn,
    /// The output-token limit was hit.
    MaxTokens,
    /// A stop sequence was produced.
    StopSequence,
    /// The model called a tool.
    ToolUse,
    /// Content was filtered or refused (OpenAI `content_filter`, Anthropic `refusal`,
    /// Gemini `SAFETY`, `RECITATION`, …).
    ContentFilter,
    /// Anything else, by the provider's own name.
    Other(String),
}

/// Tokens used by one request. The figures are the provider's; the split follows OpenAI:
/// `input_tokens` counts the whole prompt, cached parts included, and `output_tokens` the
/// whole output, reasoning included. Anthropic's `input_tokens` excludes the cache: its
/// codec adds and subtracts the cache figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens, cached ones included.
    pub input_tokens: u64,
    /// Output tokens, reasoning included.
    pub output_tokens: u64,
    /// Prompt tokens read from the provider's cache.
    pub cache_read_tokens: u64,
    /// Prompt tokens written to the provider's cache (Anthropic).
    pub cache_write_tokens: u64,
    /// Output tokens spent reasoning.
    pub reasoning_tokens: u64,
}

/// One event of a streamed reply, in the order a client must see them: [`Event::Start`]
/// first; each block opened by [`Event::BlockStart`], filled by deltas and closed by
/// [`Event::BlockStop`] (blocks may interleave only when the provider interleaves them:
/// OpenAI's parallel tool calls); [`Event::Finish`] last, then nothing. A decoder that
/// sees a provider stream which skips a step (no `message_start`, a delta for a block never
/// opened) emits the missing events itself, so that encoders can rely on the order.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The reply begins.
    Start {
        /// The provider's id for the reply.
        id: String,
        /// The model that answers.
        model: String,
        /// Usage known at the start (Anthropic's `message_start` reports the prompt).
        usage: Usage,
    },
    /// A block opens at `index` (a counter over the reply's blocks, from 0).
    BlockStart {
        /// The block's index.
        index: usize,
        /// What the block holds.
        block: BlockKind,
    },
    /// Text for the text block at `index`.
    TextDelta {
        /// The block's index.
        index: usize,
        /// The text.
        text: String,
    },
    /// Reasoning text for the thinking block at `index`.
    ThinkingDelta {
        /// The block's index.
        index: usize,
        /// The text.
        text: String,
    },
    /// The signature of the thinking block at `index`.
    SignatureDelta {
        /// The block's index.
        index: usize,
        /// The signature.
        signature: String,
    },
    /// A piece of the JSON arguments of the tool call at `index`.
    ToolArgumentsDelta {
        /// The block's index.
        index: usize,
        /// The piece (concatenated, the pieces make the arguments' JSON text).
        json: String,
    },
    /// The block at `index` is complete.
    BlockStop {
        /// The block's index.
        index: usize,
    },
    /// The provider reported an error in the middle of the stream (Anthropic's `error`
    /// event, an OpenAI error object); nothing follows it.
    Error(ApiError),
    /// The reply ends.
    Finish {
        /// Why.
        stop: StopReason,
        /// The stop sequence, when known.
        stop_sequence: Option<String>,
        /// The reply's whole usage, as far as the provider reported it.
        usage: Usage,
    },
}

/// What a streamed block holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockKind {
    /// Text.
    Text,
    /// Reasoning.
    Thinking,
    /// Anthropic's redacted reasoning.
    RedactedThinking {
        /// The opaque data.
        data: String,
    },
    /// A tool call, whose arguments follow as deltas.
    ToolCall {
        /// The call's id.
        id: String,
        /// The tool's name.
        name: String,
    },
}

/// An error answer from the provider, in the form every format's error body can say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: u16,
    /// What kind of error it is.
    pub kind: ErrorKind,
    /// The provider's message.
    pub message: String,
}

/// The kinds of error every format can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// 400: the request is wrong.
    InvalidRequest,
    /// 401: the key is wrong.
    Authentication,
    /// 403: the key may not do this.
    Permission,
    /// 404: no such model or route.
    NotFound,
    /// 413: the request is too large.
    RequestTooLarge,
    /// 429: rate limited or out of quota.
    RateLimit,
    /// 500: the provider failed.
    Api,
    /// 503 / 529: the provider is overloaded.
    Overloaded,
}

impl ErrorKind {
    /// The kind a status maps to.
    pub const fn from_status(status: u16) -> Self {
        match status {
            401 => Self::Authentication,
            403 => Self::Permission,
            404 => Self::NotFound,
            413 => Self::RequestTooLarge,
            429 => Self::RateLimit,
            503 | 529 => Self::Overloaded,
            400..=499 => Self::InvalidRequest,
            _ => Self::Api,
        }
    }
}
