//! Translation between the API formats of LLM providers, as pure data: OpenAI Chat
//! Completions, OpenAI Responses, Anthropic Messages and Gemini generateContent — requests,
//! whole replies, stream events and errors, in every direction.
//!
//! Three notions stay apart, as in agentgateway: the client's [`Format`] (fixed by the
//! endpoint it called), the provider's wire [`Format`] (fixed by its type), and the
//! [`Pair`] that translates between them. Each format is mapped once to a common form
//! ([`ir`]); a pair decodes with one side's codec and encodes with the other's, so adding a
//! format adds one codec, not one translator per pair.
//!
//! What every format can say is translated; a field that would change the answer and has no
//! counterpart in the target is refused ([`Error::Unsupported`], naming it) rather than
//! dropped; fields that change nothing may be dropped (the project's `docs/translation.md`
//! lists them). When both sides speak the same format there is nothing to do
//! ([`Pair::is_identity`]): the caller forwards the bytes as they are.
//!
//! The crate has no HTTP and no async: the caller reads the request body, frames the
//! provider's stream into SSE events and writes what comes back. `examples/tool_call_stream.rs`
//! embeds it in a program of its own: a streamed tool call from an OpenAI provider to an
//! Anthropic client. Embeddings (OpenAI ⇄ Gemini, [`embeddings`]) and token counts
//! (Anthropic ⇄ Gemini, [`count_tokens`]) have their own small translations.
//!
//! # Example
//!
//! ```
//! use cliproxy_translate::{Format, Pair};
//!
//! // A client of the Anthropic Messages API, served by a provider of OpenAI Chat Completions.
//! let pair = Pair::new(Format::Anthropic, Format::OpenAiChat);
//! let request = pair.decode_request(br#"{
//!     "model": "gpt-4o", "max_tokens": 100, "system": "Be brief.",
//!     "messages": [{"role": "user", "content": "Hi"}]
//! }"#)?;
//! let upstream: serde_json::Value = serde_json::from_slice(&pair.encode_request(&request)?)?;
//! assert_eq!(upstream["messages"][0]["role"], "system");
//! assert_eq!(upstream["messages"][1]["content"], "Hi");
//!
//! // The provider's stream, event by event, becomes the client's.
//! let mut stream = pair.stream();
//! let mut out = Vec::new();
//! stream.feed(None, br#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{"role":"assistant","content":"Hello"},"finish_reason":null}]}"#, &mut out)?;
//! let text = String::from_utf8(out)?;
//! assert!(text.starts_with("event: message_start\n"));
//! assert!(text.contains(r#""text":"Hello""#));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod codec;
pub mod count_tokens;
pub mod embeddings;
mod error;
mod formats;
pub mod ir;
mod pair;
mod schema;

// The public interface is:
pub use codec::{StreamDecoder, StreamEncoder};
pub use error::{Error, Result};
pub use pair::{Pair, StreamTranslator};

/// An API format, as a client speaks it or a provider serves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// OpenAI Chat Completions (`/v1/chat/completions`).
    OpenAiChat,
    /// OpenAI Responses (`/v1/responses`).
    OpenAiResponses,
    /// Anthropic Messages (`/v1/messages`).
    Anthropic,
    /// Gemini `generateContent` / `streamGenerateContent`.
    Gemini,
}

impl Format {
    /// Every format.
    pub const ALL: [Self; 4] =
        [Self::OpenAiChat, Self::OpenAiResponses, Self::Anthropic, Self::Gemini];

    /// Its short name, for logs, audit events and error messages.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::OpenAiChat => "openai-chat",
            Self::OpenAiResponses => "openai-responses",
            Self::Anthropic => "anthropic",
            Self::Gemini => "gemini",
        }
    }

    /// The format named by [`Format::as_str`].
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|format| format.as_str() == name)
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::OpenAiChat => "OpenAI Chat Completions",
            Self::OpenAiResponses => "OpenAI Responses",
            Self::Anthropic => "Anthropic Messages",
            Self::Gemini => "Gemini generateContent",
        })
    }
}
