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
//! `tool` message holds text only); `top_k` is refused; reasoning turned off sends no
//! `reasoning_effort` (the models without reasoning refuse the field), a thinking budget sends
//! the nearest effort.
//!
//! Replies for a client: reasoning text is `reasoning_content` (as DeepSeek, vLLM and
//! OpenRouter give it); reasoning signatures and redacted reasoning have no place and are
//! dropped; cache writes have no figure (they stay counted in `prompt_tokens`). A stream
//! always ends with the usage chunk (`choices: []`), then `[DONE]`. The legacy `function`
//! role is refused as invalid.

mod reply;
mod request;
pub(super) mod shared;
mod stream;
mod upstream;

pub(super) use self::request::{WireJsonSchema, empty_parameters, json_schema, tool_choice_mode};
pub(super) use self::upstream::refuse_unmapped;
// The codec is split in files by direction (client requests, provider requests, replies);
// they share one namespace.
use self::{reply::*, request::*, upstream::*};

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

#[cfg(test)]
mod tests;
