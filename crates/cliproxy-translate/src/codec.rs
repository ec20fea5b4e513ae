//! The seam between a format and the pairs: each format implements [`Codec`] once (its
//! requests, replies and errors) plus a [`StreamDecoder`] and a [`StreamEncoder`] for its
//! stream events; [`Pair`](crate::Pair) chains the client's codec with the provider's.

use crate::Format;
use crate::error::Result;
use crate::ir::{ApiError, Event, Request, Response};

/// One format's mapping to and from the common form.
pub(crate) trait Codec {
    /// Reads a client's request body. Gemini's model and streaming live in the path: the
    /// decoder leaves `model` empty and `stream` false, and the caller fills them in.
    fn decode_request(body: &[u8]) -> Result<Request>;
    /// Writes a request body for a provider of this format. Refuses what the format cannot
    /// say ([`Request::unmapped`] from another format, a sampling parameter it lacks, …)
    /// with [`Error::Unsupported`](crate::Error::Unsupported). Gemini's body carries neither
    /// the model nor streaming (the caller puts them in the path).
    fn encode_request(request: &Request) -> Result<Vec<u8>>;
    /// Reads a provider's whole reply.
    fn decode_response(body: &[u8]) -> Result<Response>;
    /// Writes a whole reply for a client of this format.
    fn encode_response(response: &Response) -> Result<Vec<u8>>;
    /// Reads a provider's error answer; a body that is not this format's error shape keeps
    /// its text (cut to a few hundred bytes) as the message and the status's kind.
    fn decode_error(status: u16, body: &[u8]) -> ApiError;
    /// Writes an error body for a client of this format (its status is `error.status`).
    fn encode_error(error: &ApiError) -> Vec<u8>;
    /// A decoder of this format's stream events.
    fn stream_decoder() -> Box<dyn StreamDecoder>;
    /// An encoder of this format's stream events.
    fn stream_encoder() -> Box<dyn StreamEncoder>;
}

/// Reads a provider's stream, one SSE event at a time, into common events.
pub trait StreamDecoder: Send + std::fmt::Debug {
    /// One SSE event: its `event:` name when it has one, and its `data:` (lines joined by
    /// `\n`, as the SSE rules say). Appends what it means to `out` (possibly nothing: a
    /// `ping`, a keep-alive). Events the format does not know are skipped.
    fn decode(&mut self, event: Option<&str>, data: &[u8], out: &mut Vec<Event>) -> Result<()>;
    /// The provider's stream ended (cleanly or not): appends what a well-formed stream still
    /// owes (closing open blocks, a [`Event::Finish`] when none came).
    fn finish(&mut self, out: &mut Vec<Event>);
}

/// Writes common events as a client's stream: whole SSE frames (`event: …\ndata: …\n\n`).
pub trait StreamEncoder: Send + std::fmt::Debug {
    /// Appends the frames for one event to `out`.
    fn encode(&mut self, event: &Event, out: &mut Vec<u8>);
    /// Told once, before the first event, which format the provider speaks, so that the
    /// reasoning signatures it streams reach the client wrapped with their origin
    /// (`wrap_signature`). Encoders whose format carries no signatures ignore it.
    fn set_origin(&mut self, _provider: Format) {}
    /// The stream is over: appends the format's terminator (`data: [DONE]`), if it has one.
    fn finish(&mut self, out: &mut Vec<u8>);
}

/// The prefix of a reasoning signature that another format produced and this gateway passed
/// to a client: `cpx1.<origin>.<signature>`. A client sends it back on its next turn; the
/// decoder recognises it and restores the origin, so that the signature goes back only to
/// a provider of the format that made it (and is dropped for any other).
#[allow(dead_code, reason = "used by the codecs, which land on top of this skeleton")]
const SIGNATURE_PREFIX: &str = "cpx1.";

/// The signature a client of `client` is given for a reasoning block that `origin` made.
#[allow(dead_code, reason = "used by the codecs, which land on top of this skeleton")]
pub(crate) fn wrap_signature(client: Format, origin: Format, signature: &str) -> String {
    if client == origin {
        signature.to_owned()
    } else {
        format!("{SIGNATURE_PREFIX}{}.{signature}", origin.as_str())
    }
}

/// Reads back a signature a client of `client` sent: where it came from, and the
/// provider's own signature.
#[allow(dead_code, reason = "used by the codecs, which land on top of this skeleton")]
pub(crate) fn unwrap_signature(client: Format, signature: &str) -> (Format, &str) {
    if let Some(rest) = signature.strip_prefix(SIGNATURE_PREFIX)
        && let Some((origin, inner)) = rest.split_once('.')
        && let Some(origin) = Format::from_name(origin)
    {
        return (origin, inner);
    }
    (client, signature)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_foreign_signature_round_trips_with_its_origin() {
        let wrapped = wrap_signature(Format::Anthropic, Format::Gemini, "abc.def");
        assert_eq!(wrapped, "cpx1.gemini.abc.def");
        assert_eq!(unwrap_signature(Format::Anthropic, &wrapped), (Format::Gemini, "abc.def"));
        // The client's own format is passed through untouched, both ways.
        assert_eq!(wrap_signature(Format::Anthropic, Format::Anthropic, "sig"), "sig");
        assert_eq!(unwrap_signature(Format::Anthropic, "sig"), (Format::Anthropic, "sig"));
        // A prefix naming no format is the client's own signature.
        assert_eq!(
            unwrap_signature(Format::Gemini, "cpx1.nope.x"),
            (Format::Gemini, "cpx1.nope.x")
        );
    }
}
