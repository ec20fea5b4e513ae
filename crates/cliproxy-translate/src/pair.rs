//! A pair's translator: the client's format, the provider's, and what passes between them.

use crate::Format;
use crate::codec::{Codec, StreamDecoder, StreamEncoder, wrap_signature};
use crate::error::{Error, Result};
use crate::formats::{Anthropic, Gemini, OpenAiChat, OpenAiResponses};
use crate::ir::{ApiError, Event, Request, Usage};

/// Calls `$call` on the codec of `$format`.
macro_rules! with_codec {
    ($format:expr, $codec:ident => $call:expr) => {
        match $format {
            Format::OpenAiChat => {
                type $codec = OpenAiChat;
                $call
            }
            Format::OpenAiResponses => {
                type $codec = OpenAiResponses;
                $call
            }
            Format::Anthropic => {
                type $codec = Anthropic;
                $call
            }
            Format::Gemini => {
                type $codec = Gemini;
                $call
            }
        }
    };
}

/// The translator between a client's format and a provider's. When both are the same there
/// is nothing to translate ([`Pair::is_identity`]): the caller forwards the bytes untouched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pair {
    /// The format of the endpoint the client called.
    pub client: Format,
    /// The wire format of the provider that serves the model.
    pub provider: Format,
}

impl Pair {
    /// The pair of a client's format and a provider's.
    pub const fn new(client: Format, provider: Format) -> Self {
        Self { client, provider }
    }

    /// Whether both sides speak the same format.
    pub fn is_identity(self) -> bool {
        self.client == self.provider
    }

    /// Reads the client's request into the common form.
    pub fn decode_request(self, body: &[u8]) -> Result<Request> {
        with_codec!(self.client, C => C::decode_request(body))
    }

    /// Writes a request for the provider. A field it refuses is named as the client wrote
    /// it (`stop_sequences` for an Anthropic client, `generationConfig.topK` for Gemini's).
    pub fn encode_request(self, request: &Request) -> Result<Vec<u8>> {
        with_codec!(self.provider, C => C::encode_request(request)).map_err(|error| match error {
            Error::Unsupported { field, target } => {
                Error::Unsupported { field: client_field(self.client, field), target }
            }
            other => other,
        })
    }

    /// Translates a whole reply of the provider for the client.
    pub fn response(self, body: &[u8]) -> Result<Vec<u8>> {
        let response = with_codec!(self.provider, C => C::decode_response(body))?;
        with_codec!(self.client, C => C::encode_response(&response))
    }

    /// Reads a provider's error answer.
    pub fn decode_error(self, status: u16, body: &[u8]) -> ApiError {
        with_codec!(self.provider, C => C::decode_error(status, body))
    }

    /// Writes an error for the client.
    pub fn encode_error(self, error: &ApiError) -> Vec<u8> {
        with_codec!(self.client, C => C::encode_error(error))
    }

    /// Translates a provider's error answer for the client: the status stays (the kind is
    /// what each format can say), the body is the client's format.
    pub fn error(self, status: u16, body: &[u8]) -> (u16, Vec<u8>) {
        let error = self.decode_error(status, body);
        (error.status, self.encode_error(&error))
    }

    /// A translator of the provider's stream into the client's, event by event.
    pub fn stream(self) -> StreamTranslator {
        let mut encoder = with_codec!(self.client, C => C::stream_encoder());
        encoder.set_origin(self.provider);
        StreamTranslator {
            decoder: with_codec!(self.provider, C => C::stream_decoder()),
            encoder,
            events: Vec::new(),
            usage: Usage::default(),
            finished: false,
            pair: self,
        }
    }
}

/// The client's name for a common field that an encoder refused: encoders know only the
/// common form, whose sampling, stop and output fields they name as OpenAI Chat does. Names
/// that came from the client's own request (`Request::unmapped`) are the client's already.
fn client_field(client: Format, field: String) -> String {
    let renamed = match (client, field.as_str()) {
        (Format::Anthropic, "stop") => "stop_sequences",
        (Format::Anthropic, "response_format") => "output_format",
        (Format::OpenAiResponses, "response_format") => "text.format",
        (Format::Gemini, "stop") => "generationConfig.stopSequences",
        (Format::Gemini, "top_k") => "generationConfig.topK",
        (Format::Gemini, "presence_penalty") => "generationConfig.presencePenalty",
        (Format::Gemini, "frequency_penalty") => "generationConfig.frequencyPenalty",
        (Format::Gemini, "seed") => "generationConfig.seed",
        (Format::Gemini, "response_format") => "generationConfig.responseSchema",
        _ => return field,
    };
    renamed.to_owned()
}

/// Translates one streamed reply as it arrives: each provider event is decoded and encoded
/// at once, nothing is held back beyond the event being read.
#[derive(Debug)]
pub struct StreamTranslator {
    decoder: Box<dyn StreamDecoder>,
    encoder: Box<dyn StreamEncoder>,
    /// Reused between events, so that a steady stream allocates nothing for them.
    events: Vec<Event>,
    usage: Usage,
    finished: bool,
    /// The formats on each side: a reasoning signature of the provider is wrapped for a
    /// client of another format (see `codec::wrap_signature`), as `encode_response` does for
    /// whole replies through `Thinking::origin`.
    pair: Pair,
}

impl StreamTranslator {
    /// One SSE event of the provider (its `event:` name, if any, and its data): appends the
    /// client's frames to `out`. An error leaves `out` as it was before the call.
    pub fn feed(&mut self, event: Option<&str>, data: &[u8], out: &mut Vec<u8>) -> Result<()> {
        self.events.clear();
        self.decoder.decode(event, data, &mut self.events)?;
        self.emit(out);
        Ok(())
    }

    /// The provider's stream ended: appends what the client's stream still owes.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.finished {
            return;
        }
        self.events.clear();
        self.decoder.finish(&mut self.events);
        self.emit(out);
        self.encoder.finish(out);
        self.finished = true;
    }

    /// The stream cannot go on (the provider's events stopped making sense, or the caller
    /// gave up on it): appends an error event in the client's format and ends the stream.
    pub fn fail(&mut self, error: &ApiError, out: &mut Vec<u8>) {
        if self.finished {
            return;
        }
        self.encoder.encode(&Event::Error(error.clone()), out);
        self.encoder.finish(out);
        self.finished = true;
    }

    /// The usage reported so far (the whole reply's once the stream has finished).
    pub fn usage(&self) -> Usage {
        self.usage
    }

    fn emit(&mut self, out: &mut Vec<u8>) {
        for event in &self.events {
            match event {
                Event::Start { usage, .. } | Event::Finish { usage, .. } => {
                    self.usage = merge_usage(self.usage, *usage);
                }
                Event::SignatureDelta { index, signature } if !self.pair.is_identity() => {
                    let signature = wrap_signature(self.pair.client, self.pair.provider, signature);
                    self.encoder.encode(&Event::SignatureDelta { index: *index, signature }, out);
                    continue;
                }
                _ => {}
            }
            self.encoder.encode(event, out);
        }
    }
}

/// Later figures win, but a zero never erases one already known (Anthropic reports the
/// prompt at the start and the output at the end).
fn merge_usage(known: Usage, new: Usage) -> Usage {
    let pick = |a: u64, b: u64| if b == 0 { a } else { b };
    Usage {
        input_tokens: pick(known.input_tokens, new.input_tokens),
        output_tokens: pick(known.output_tokens, new.output_tokens),
        cache_read_tokens: pick(known.cache_read_tokens, new.cache_read_tokens),
        cache_write_tokens: pick(known.cache_write_tokens, new.cache_write_tokens),
        reasoning_tokens: pick(known.reasoning_tokens, new.reasoning_tokens),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Anthropic provider's streamed thinking block with its signature.
    const THINKING: [(&str, &str); 6] = [
        (
            "message_start",
            r#"{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-x","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":3,"output_tokens":1}}}"#,
        ),
        (
            "content_block_start",
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":"","signature":""}}"#,
        ),
        (
            "content_block_delta",
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Hmm."}}"#,
        ),
        (
            "content_block_delta",
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"SIG-abc"}}"#,
        ),
        ("content_block_stop", r#"{"type":"content_block_stop","index":0}"#),
        (
            "message_delta",
            r#"{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":5}}"#,
        ),
    ];

    #[test]
    fn a_foreign_stream_signature_is_wrapped_once_for_every_client_format() {
        for client in [Format::OpenAiChat, Format::OpenAiResponses, Format::Gemini] {
            let mut stream = Pair::new(client, Format::Anthropic).stream();
            let mut out = Vec::new();
            for (name, data) in THINKING {
                stream
                    .feed(Some(name), data.as_bytes(), &mut out)
                    .unwrap_or_else(|e| panic!("{client:?}: {e}"));
            }
            stream.finish(&mut out);
            let text = String::from_utf8_lossy(&out);
            // Clients that carry reasoning signatures get the wrapped one, never twice.
            if client != Format::OpenAiChat {
                assert!(text.contains("cpx1.anthropic.SIG-abc"), "{client:?}: {text}");
            }
            assert!(!text.contains("cpx1.anthropic.cpx1."), "{client:?}: wrapped twice: {text}");
            assert_eq!(stream.usage().output_tokens, 5, "{client:?}");
        }
    }
}
