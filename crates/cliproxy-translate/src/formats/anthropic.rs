//! Anthropic Messages (`/v1/messages`): requests, replies, stream events and errors.
//!
//! What is dropped on the way in, because it changes nothing about the answer:
//! `cache_control` (on system blocks, messages and tools: prompt caching is the provider's
//! affair and the other formats cache on their own), `metadata`, `service_tier`, text
//! `citations`. What is kept as unmapped (refused by another format's encoder, by name):
//! server tools (a tool with a `type`: `web_search_*`, `bash_*`, `text_editor_*`, …),
//! `document` blocks other than plain text, image sources other than `base64` and `url`,
//! other block kinds (`search_result`, `server_tool_use`, …), `container`, `mcp_servers`,
//! `context_management`, `output_config.effort` without adaptive thinking, and unknown
//! `thinking` types.
//!
//! Reasoning: `thinking.type: enabled` with `budget_tokens` is a budget; `adaptive` is an
//! effort (`output_config.effort`, `high` by default, `max` read as high); `disabled` is
//! off. Encoded for Anthropic, a budget is `enabled` (at least 1024, below `max_tokens`)
//! and an effort is `adaptive` with `output_config.effort`, the form Claude Opus 4.7 and
//! later require; with no `max_tokens` from the client, the limit leaves
//! [`DEFAULT_MAX_TOKENS`](crate::ir::DEFAULT_MAX_TOKENS) beyond the thinking.
//!
//! Encoding for an Anthropic provider refuses: structured output (Anthropic's own form is
//! not mapped: [`Request::output`](crate::ir::Request) is refused as `response_format`),
//! `presence_penalty`, `frequency_penalty` and `seed` (OpenAI's names), and any unmapped
//! field of another format. Thinking blocks made by another format are dropped (their
//! signature means nothing to Anthropic); `strict` on tools is dropped.

mod encode;
mod request;
mod response;
mod stream;
#[cfg(test)]
mod tests;

use crate::codec::{Codec, StreamDecoder, StreamEncoder};
use crate::error::Result;
use crate::ir::{ApiError, Request, Response};

/// The codec of [`Format::Anthropic`](crate::Format::Anthropic).
#[derive(Debug)]
pub(crate) struct Anthropic;

impl Codec for Anthropic {
    fn decode_request(body: &[u8]) -> Result<Request> {
        request::decode(body)
    }
    fn encode_request(request: &Request) -> Result<Vec<u8>> {
        encode::encode(request)
    }
    fn decode_response(body: &[u8]) -> Result<Response> {
        response::decode(body)
    }
    fn encode_response(response: &Response) -> Result<Vec<u8>> {
        response::encode(response)
    }
    fn decode_error(status: u16, body: &[u8]) -> ApiError {
        response::decode_error(status, body)
    }
    fn encode_error(error: &ApiError) -> Vec<u8> {
        response::encode_error(error)
    }
    fn stream_decoder() -> Box<dyn StreamDecoder> {
        Box::new(stream::Decoder::default())
    }
    fn stream_encoder() -> Box<dyn StreamEncoder> {
        Box::new(stream::Encoder::default())
    }
}
