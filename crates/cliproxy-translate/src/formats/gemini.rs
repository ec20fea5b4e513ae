//! Gemini `generateContent` / `streamGenerateContent`: requests, replies, stream chunks and
//! errors. The model and streaming live in the URL path: the decoder leaves `model` empty
//! and `stream` false, the encoder writes neither.
//!
//! Tool calls: Gemini's calls often have no id, and its results are matched by name and
//! order. The decoder makes ids up (`call_<n>` by order in a request; in a reply,
//! `call_<responseId>_<n>`, so that ids stay unique across turns) and matches a result to
//! the earliest unanswered call of its name; the encoder writes no ids and finds each
//! result's `functionResponse.name` from its call earlier in the conversation (a result
//! that answers no call is [`Error::Invalid`](crate::Error)). A result's text is written
//! as `{"output": text}` (`{"error": text}` when the tool failed), the keys Google's
//! reference documents; both, and `content`, are unwrapped on the way in.
//!
//! Reasoning: a `thoughtSignature` sits on whatever part it came with. A thought part's
//! signature stays with its thinking block; a signature on any other part (a function
//! call, text) becomes a thinking block with no text just before that part, and the
//! encoder puts it back on the part that follows. A model turn of another provider with
//! tool calls gets Google's documented `skip_thought_signature_validator` signature on its
//! first call (Gemini 3 refuses calls without a signature).
//!
//! Dropped on the way in: `safetySettings` (provider policy, not content),
//! `generationConfig.mediaResolution`, `videoMetadata`. Unmapped (refused by other
//! formats): `cachedContent`, tools other than function declarations (`googleSearch`,
//! `codeExecution`, `urlContext`, …), `executableCode`/`codeExecutionResult` parts,
//! non-image inline or file data, `candidateCount` above 1, `responseLogprobs`/`logprobs`,
//! `responseModalities` other than text, `speechConfig`, `responseMimeType` other than
//! JSON and text, and `allowedFunctionNames` other than one name with mode `ANY`.
//!
//! Encoding for a Gemini provider drops `parallel_tool_calls: false` (Gemini cannot forbid
//! parallel calls) and tools' `strict`; schemas are reduced to Gemini's subset
//! (`crate::schema`). In a stream to a Gemini client, a tool call's argument deltas are
//! held until the call is complete: Gemini has no argument deltas, only whole
//! `functionCall` parts.

mod encode;
mod request;
mod response;
mod stream;
#[cfg(test)]
mod tests;

use crate::codec::{Codec, StreamDecoder, StreamEncoder};
use crate::error::Result;
use crate::ir::{ApiError, Request, Response};

/// The codec of [`Format::Gemini`](crate::Format::Gemini).
#[derive(Debug)]
pub(crate) struct Gemini;

impl Codec for Gemini {
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
