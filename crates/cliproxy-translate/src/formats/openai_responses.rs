//! OpenAI Responses (`/v1/responses`): requests, whole replies, stream events and errors.
//!
//! Requests: `instructions` and `system`/`developer` input messages become the system prompt;
//! input items become turns, consecutive items of one side sharing a turn (a reasoning item,
//! a message and the function calls the model made together are one assistant turn);
//! `function_call_output` items become tool results. A `reasoning` item becomes a thinking
//! part; its `encrypted_content` is its signature, unwrapped when this gateway gave it out for
//! another format's reasoning (`cpx1.<origin>.`). Refused for other formats (kept in
//! [`Request::unmapped`]): `previous_response_id` and `conversation` (state held by OpenAI,
//! which no other provider has), `prompt` (a stored template), `background`,
//! `max_tool_calls`, `top_logprobs`, tools of a type other than `function` (`web_search`,
//! `file_search`, `computer_use_preview`, `code_interpreter`, `image_generation`, `mcp`,
//! `local_shell`, `custom`), tool choices naming them, `item_reference` and the items of
//! built-in tools, `input_file`/`input_audio` content and images by `file_id`. Dropped
//! (they change nothing in the reply): `store`, `include`, `prompt_cache_key`,
//! `safety_identifier`, `service_tier`, `user`, `metadata`, `truncation`, `stream_options`,
//! `reasoning.summary` and `text.verbosity` (a length hint; no other format has one), an
//! image's `detail`, the schema's `description`.
//!
//! Provider requests: the system prompt goes in `instructions`; `store` is false (the other
//! formats are stateless, and nothing should stay at OpenAI that the client did not ask to
//! keep), and when reasoning is asked for, `include: ["reasoning.encrypted_content"]` brings
//! back the reasoning as a signature for the next turn; function tools are sent with
//! `strict: false` unless the client said otherwise (the Responses API makes them strict by
//! default, which refuses most schemas). Refused: `stop` sequences, `top_k`, `seed` and the
//! presence/frequency penalties (the Responses API has none of them). A tool result's error
//! flag is dropped (its text says what failed); reasoning turned off sends no effort (the
//! models without reasoning refuse the field); another provider's reasoning is dropped.
//!
//! Replies for a client: another provider's reasoning is a `reasoning` item whose summary is
//! the reasoning text and whose `encrypted_content` is the signature wrapped with its origin;
//! Anthropic's redacted reasoning is dropped; cache writes have no figure (they stay counted
//! in `input_tokens`); the output limit and a content filter end the reply `incomplete`.
//!
//! Own reasoning signatures carry the reasoning item's id (`<id>.<encrypted_content>`): the
//! Responses API wants the id back with the encrypted content.

mod client_stream;
mod reply;
mod request;
mod stream;
mod upstream;

// The codec is split in files by direction (client requests, provider requests, replies);
// they share one namespace.
use self::{reply::*, request::*, upstream::*};

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::openai_chat::shared::{self, culprit, locate_in_array, parse};
use super::openai_chat::{
    WireJsonSchema, empty_parameters, json_schema, refuse_unmapped, tool_choice_mode,
};
use crate::Format;
use crate::codec::{Codec, StreamDecoder, StreamEncoder, unwrap_signature, wrap_signature};
use crate::error::{Error, Result};
use crate::ir::{
    ApiError, Message, OutputFormat, Part, Request, Response, Role, Sampling, StopReason,
    SystemPart, Thinking, Tool, ToolCall, ToolChoice, ToolResult, ToolResultPart, Usage,
};

/// The codec of [`Format::OpenAiResponses`].
#[derive(Debug)]
pub(crate) struct OpenAiResponses;

impl Codec for OpenAiResponses {
    fn decode_request(body: &[u8]) -> Result<Request> {
        let wire: WireRequest = parse(body, locate_request)?;
        wire.into_ir()
    }

    fn encode_request(request: &Request) -> Result<Vec<u8>> {
        encode_request(request)
    }

    fn decode_response(body: &[u8]) -> Result<Response> {
        let wire: WireResponse = parse(body, |value| culprit::<WireResponse>(value, ""))?;
        Ok(wire.into_ir())
    }

    fn encode_response(response: &Response) -> Result<Vec<u8>> {
        let id = response_id(&response.id);
        let items = Items::from_parts(&id, &response.parts);
        let ending = Ending::Stop(&response.stop);
        let out =
            items.response(&id, &response.model, shared::now(), ending, Some(&response.usage));
        serde_json::to_vec(&out).map_err(|error| Error::invalid("response", error.to_string()))
    }

    fn decode_error(status: u16, body: &[u8]) -> ApiError {
        shared::decode_error(status, body)
    }

    fn encode_error(error: &ApiError) -> Vec<u8> {
        shared::encode_error(error)
    }

    fn stream_decoder() -> Box<dyn StreamDecoder> {
        Box::new(stream::EventDecoder::default())
    }

    fn stream_encoder() -> Box<dyn StreamEncoder> {
        Box::new(client_stream::EventEncoder::default())
    }
}

#[cfg(test)]
mod tests;
