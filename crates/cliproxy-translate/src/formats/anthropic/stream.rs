//! Anthropic Messages stream events (`message_start`, `content_block_start`,
//! `content_block_delta`, `content_block_stop`, `message_delta`, `message_stop`, `ping`,
//! `error`).

use crate::error::json_problem;
use std::borrow::Cow;
use std::io::Write as _;

use serde::Deserialize;

use super::request::WireBlock;
use super::response::{OutErrorBody, OutUsage, WireUsage, kind_from, stop_from, stop_name};
use crate::codec::{StreamDecoder, StreamEncoder};
use crate::error::{Error, Result};
use crate::formats::shared::{to_json_string, write_json};
use crate::ir::{ApiError, BlockKind, ErrorKind, Event, StopReason, Usage};

#[derive(Deserialize)]
struct WireEvent<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    index: Option<usize>,
    message: Option<WireStart>,
    content_block: Option<WireBlock>,
    #[serde(borrow)]
    delta: Option<WireDelta<'a>>,
    usage: Option<WireUsage>,
    error: Option<WireStreamError>,
}

#[derive(Deserialize)]
struct WireStart {
    id: Option<String>,
    model: Option<String>,
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct WireDelta<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    text: Option<String>,
    partial_json: Option<String>,
    thinking: Option<String>,
    signature: Option<String>,
    stop_reason: Option<String>,
    stop_sequence: Option<String>,
}

#[derive(Deserialize)]
struct WireStreamError {
    #[serde(rename = "type")]
    kind: Option<String>,
    message: Option<String>,
}

/// The status an error of a stream stands for (the HTTP status was 200 when it began).
fn status_of(kind: ErrorKind) -> u16 {
    match kind {
        ErrorKind::InvalidRequest => 400,
        ErrorKind::Authentication => 401,
        ErrorKind::Permission => 403,
        ErrorKind::NotFound => 404,
        ErrorKind::RequestTooLarge => 413,
        ErrorKind::RateLimit => 429,
        ErrorKind::Api => 500,
        ErrorKind::Overloaded => 529,
    }
}

/// How many blocks a provider's stream may hold open at once.
const MAX_OPEN_BLOCKS: usize = 64;

/// Reads an Anthropic provider's stream.
#[derive(Debug, Default)]
pub(super) struct Decoder {
    started: bool,
    /// The indices of the blocks open now.
    open: Vec<usize>,
    stop: Option<StopReason>,
    stop_sequence: Option<String>,
    usage: Usage,
    done: bool,
}

impl Decoder {
    fn ensure_started(&mut self, out: &mut Vec<crate::ir::Event>) {
        if !self.started {
            self.started = true;
            out.push(Event::Start {
                id: String::new(),
                model: String::new(),
                usage: Usage::default(),
            });
        }
    }

    /// Opens the block a delta refers to when the provider never opened it.
    fn ensure_open(
        &mut self,
        index: usize,
        block: impl FnOnce() -> BlockKind,
        out: &mut Vec<Event>,
    ) -> Result<()> {
        if !self.open.contains(&index) {
            if self.open.len() >= MAX_OPEN_BLOCKS {
                return Err(Error::stream("content_block_delta", "too many blocks open at once"));
            }
            self.open.push(index);
            out.push(Event::BlockStart { index, block: block() });
        }
        Ok(())
    }

    fn close_all(&mut self, out: &mut Vec<Event>) {
        for index in self.open.drain(..) {
            out.push(Event::BlockStop { index });
        }
    }

    fn end(&mut self, out: &mut Vec<Event>) {
        self.ensure_started(out);
        self.close_all(out);
        out.push(Event::Finish {
            // A stream cut before `message_delta` said why it stopped did not finish.
            stop: self.stop.take().unwrap_or_else(|| StopReason::Other("incomplete".to_owned())),
            stop_sequence: self.stop_sequence.take(),
            usage: self.usage,
        });
        self.done = true;
    }
}

impl StreamDecoder for Decoder {
    fn decode(&mut self, event: Option<&str>, data: &[u8], out: &mut Vec<Event>) -> Result<()> {
        if self.done {
            return Ok(());
        }
        let wire: WireEvent<'_> = serde_json::from_slice(data)
            .map_err(|error| Error::stream(event.unwrap_or("data"), json_problem(&error)))?;
        // The data's own `type` names the event; the SSE name is the fallback.
        let kind = wire.kind.as_deref().or(event).unwrap_or_default();
        let index = wire.index.unwrap_or(0);
        match kind {
            "message_start" => {
                let start = wire.message.ok_or_else(|| Error::stream(kind, "no message"))?;
                if let Some(usage) = start.usage {
                    self.usage = usage.to_ir();
                }
                if !self.started {
                    self.started = true;
                    out.push(Event::Start {
                        id: start.id.unwrap_or_default(),
                        model: start.model.unwrap_or_default(),
                        usage: self.usage,
                    });
                }
            }
            "content_block_start" => {
                self.ensure_started(out);
                let block =
                    wire.content_block.ok_or_else(|| Error::stream(kind, "no content_block"))?;
                if self.open.contains(&index) {
                    return Err(Error::stream(kind, format!("block {index} is already open")));
                }
                // Anthropic opens one block at a time; a stream that keeps hundreds open is
                // not one, and each event would cost more to look up.
                if self.open.len() >= MAX_OPEN_BLOCKS {
                    return Err(Error::stream(kind, "too many blocks open at once"));
                }
                let (ir_block, first) = match block.kind.as_deref() {
                    Some("text") => {
                        (BlockKind::Text, block.text.map(|text| Event::TextDelta { index, text }))
                    }
                    Some("thinking") => (
                        BlockKind::Thinking,
                        block.thinking.map(|text| Event::ThinkingDelta { index, text }),
                    ),
                    Some("redacted_thinking") => {
                        (BlockKind::RedactedThinking { data: block.data.unwrap_or_default() }, None)
                    }
                    Some("tool_use") => (
                        BlockKind::ToolCall {
                            id: block.id.unwrap_or_default(),
                            name: block.name.unwrap_or_default(),
                        },
                        // The input is `{}` at the start and arrives in deltas; a provider that
                        // sends it whole here still has it passed on.
                        block
                            .input
                            .filter(|input| input.as_object().is_some_and(|map| !map.is_empty()))
                            .map(|input| Event::ToolArgumentsDelta {
                                index,
                                json: to_json_string(&input),
                            }),
                    ),
                    // Server-tool blocks are not passed on (see `response::decode_block`).
                    _ => return Ok(()),
                };
                self.open.push(index);
                out.push(Event::BlockStart { index, block: ir_block });
                out.extend(first.filter(|event| match event {
                    Event::TextDelta { text, .. } | Event::ThinkingDelta { text, .. } => {
                        !text.is_empty()
                    }
                    _ => true,
                }));
                if let Some(signature) = block.signature.filter(|signature| !signature.is_empty()) {
                    out.push(Event::SignatureDelta { index, signature });
                }
            }
            "content_block_delta" => {
                self.ensure_started(out);
                let delta = wire.delta.ok_or_else(|| Error::stream(kind, "no delta"))?;
                match delta.kind.as_deref() {
                    Some("text_delta") => {
                        self.ensure_open(index, || BlockKind::Text, out)?;
                        out.push(Event::TextDelta { index, text: delta.text.unwrap_or_default() });
                    }
                    Some("input_json_delta") => {
                        self.ensure_open(
                            index,
                            || BlockKind::ToolCall {
                                id: format!("toolu_missing_{index}"),
                                name: String::new(),
                            },
                            out,
                        )?;
                        out.push(Event::ToolArgumentsDelta {
                            index,
                            json: delta.partial_json.unwrap_or_default(),
                        });
                    }
                    Some("thinking_delta") => {
                        self.ensure_open(index, || BlockKind::Thinking, out)?;
                        out.push(Event::ThinkingDelta {
                            index,
                            text: delta.thinking.unwrap_or_default(),
                        });
                    }
                    Some("signature_delta") => {
                        self.ensure_open(index, || BlockKind::Thinking, out)?;
                        out.push(Event::SignatureDelta {
                            index,
                            signature: delta.signature.unwrap_or_default(),
                        });
                    }
                    // Citations and deltas of kinds this version does not know change nothing
                    // the other formats can say.
                    _ => {}
                }
            }
            "content_block_stop" => {
                if let Some(at) = self.open.iter().position(|open| *open == index) {
                    self.open.remove(at);
                    out.push(Event::BlockStop { index });
                }
            }
            "message_delta" => {
                self.ensure_started(out);
                if let Some(delta) = wire.delta {
                    if let Some(reason) = delta.stop_reason {
                        self.stop = Some(stop_from(&reason));
                    }
                    if delta.stop_sequence.is_some() {
                        self.stop_sequence = delta.stop_sequence;
                    }
                }
                if let Some(usage) = wire.usage {
                    let figures = usage.to_ir();
                    self.usage.output_tokens = figures.output_tokens;
                    // Newer streams repeat the prompt figures here; older ones only the output.
                    if usage.has_input() {
                        self.usage.input_tokens = figures.input_tokens;
                        self.usage.cache_read_tokens = figures.cache_read_tokens;
                        self.usage.cache_write_tokens = figures.cache_write_tokens;
                    }
                }
            }
            "message_stop" => {
                if self.stop.is_none() {
                    self.stop = Some(StopReason::EndTurn);
                }
                self.end(out);
            }
            "error" => {
                let error = wire.error.unwrap_or(WireStreamError { kind: None, message: None });
                let kind =
                    error.kind.as_deref().map_or(ErrorKind::Api, |name| kind_from(name, 500));
                out.push(Event::Error(ApiError {
                    status: status_of(kind),
                    kind,
                    message: error.message.unwrap_or_default(),
                }));
                self.done = true;
            }
            // `ping` and events this version does not know carry nothing.
            _ => {}
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<Event>) {
        if !self.done {
            self.end(out);
        }
    }
}

/// Writes an Anthropic client's stream.
#[derive(Debug, Default)]
pub(super) struct Encoder {
    started: bool,
    done: bool,
    /// The blocks open now: their common index and their Anthropic index. Anthropic's SDKs
    /// add a block at each `content_block_start`, so its indices count up from 0 in the
    /// order blocks open, whatever the common indices are.
    open: Vec<(usize, usize)>,
    /// The Anthropic index of the next block.
    next: usize,
}

/// Appends one SSE frame: its event name, then the data written by `data`.
fn frame(out: &mut Vec<u8>, name: &str, data: impl FnOnce(&mut Vec<u8>)) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    data(out);
    out.extend_from_slice(b"\n\n");
}

impl Encoder {
    fn start(&mut self, id: &str, model: &str, usage: &Usage, out: &mut Vec<u8>) {
        self.started = true;
        frame(out, "message_start", |out| {
            out.extend_from_slice(br#"{"type":"message_start","message":{"id":"#);
            write_json(out, if id.is_empty() { "msg_translated" } else { id });
            out.extend_from_slice(br#","type":"message","role":"assistant","model":"#);
            write_json(out, model);
            out.extend_from_slice(
                br#","content":[],"stop_reason":null,"stop_sequence":null,"usage":"#,
            );
            write_json(out, &OutUsage::from_ir(usage));
            out.extend_from_slice(b"}}");
        });
    }

    /// The Anthropic index of the block at common `index`, opening one of `kind` when the
    /// events skipped its start.
    fn wire_index(
        &mut self,
        index: usize,
        kind: impl FnOnce() -> BlockKind,
        out: &mut Vec<u8>,
    ) -> usize {
        match self.open.iter().find(|(ir, _)| *ir == index) {
            Some((_, at)) => *at,
            None => self.open(index, &kind(), out),
        }
    }

    fn open(&mut self, index: usize, block: &BlockKind, out: &mut Vec<u8>) -> usize {
        let at = self.next;
        self.next += 1;
        self.open.push((index, at));
        frame(out, "content_block_start", |out| {
            let _ = write!(out, r#"{{"type":"content_block_start","index":{at},"content_block":"#);
            match block {
                BlockKind::Text => out.extend_from_slice(br#"{"type":"text","text":""}"#),
                BlockKind::Thinking => {
                    out.extend_from_slice(br#"{"type":"thinking","thinking":"","signature":""}"#);
                }
                BlockKind::RedactedThinking { data } => {
                    out.extend_from_slice(br#"{"type":"redacted_thinking","data":"#);
                    write_json(out, data);
                    out.push(b'}');
                }
                BlockKind::ToolCall { id, name } => {
                    out.extend_from_slice(br#"{"type":"tool_use","id":"#);
                    write_json(out, id);
                    out.extend_from_slice(br#","name":"#);
                    write_json(out, name);
                    out.extend_from_slice(br#","input":{}}"#);
                }
            }
            out.push(b'}');
        });
        at
    }

    fn delta(out: &mut Vec<u8>, at: usize, kind: &str, field: &str, value: &str) {
        frame(out, "content_block_delta", |out| {
            let _ = write!(
                out,
                r#"{{"type":"content_block_delta","index":{at},"delta":{{"type":"{kind}","{field}":"#
            );
            write_json(out, value);
            out.extend_from_slice(b"}}");
        });
    }

    fn stop(at: usize, out: &mut Vec<u8>) {
        frame(out, "content_block_stop", |out| {
            let _ = write!(out, r#"{{"type":"content_block_stop","index":{at}}}"#);
        });
    }
}

impl StreamEncoder for Encoder {
    fn encode(&mut self, event: &Event, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        if !self.started {
            match event {
                Event::Start { id, model, usage } => return self.start(id, model, usage, out),
                // An error before anything else is the stream's only event.
                Event::Error(_) => {}
                _ => self.start("", "", &Usage::default(), out),
            }
        }
        match event {
            Event::Start { .. } => {}
            Event::BlockStart { index, block } => {
                self.open(*index, block, out);
            }
            Event::TextDelta { index, text } => {
                let at = self.wire_index(*index, || BlockKind::Text, out);
                Self::delta(out, at, "text_delta", "text", text);
            }
            Event::ThinkingDelta { index, text } => {
                let at = self.wire_index(*index, || BlockKind::Thinking, out);
                Self::delta(out, at, "thinking_delta", "thinking", text);
            }
            Event::SignatureDelta { index, signature } => {
                let at = self.wire_index(*index, || BlockKind::Thinking, out);
                Self::delta(out, at, "signature_delta", "signature", signature);
            }
            Event::ToolArgumentsDelta { index, json } => {
                let at = self.wire_index(
                    *index,
                    || BlockKind::ToolCall {
                        id: format!("toolu_missing_{index}"),
                        name: String::new(),
                    },
                    out,
                );
                Self::delta(out, at, "input_json_delta", "partial_json", json);
            }
            Event::BlockStop { index } => {
                if let Some(position) = self.open.iter().position(|(ir, _)| ir == index) {
                    let (_, at) = self.open.remove(position);
                    Self::stop(at, out);
                }
            }
            Event::Error(error) => {
                frame(out, "error", |out| write_json(out, &OutErrorBody::new(error)));
                self.done = true;
            }
            Event::Finish { stop, stop_sequence, usage } => {
                for (_, at) in std::mem::take(&mut self.open) {
                    Self::stop(at, out);
                }
                frame(out, "message_delta", |out| {
                    out.extend_from_slice(br#"{"type":"message_delta","delta":{"stop_reason":"#);
                    write_json(out, stop_name(stop));
                    out.extend_from_slice(br#","stop_sequence":"#);
                    write_json(out, stop_sequence);
                    out.extend_from_slice(br#"},"usage":"#);
                    write_json(out, &OutUsage::from_ir(usage));
                    out.push(b'}');
                });
                frame(out, "message_stop", |out| {
                    out.extend_from_slice(br#"{"type":"message_stop"}"#)
                });
                self.done = true;
            }
        }
    }

    fn finish(&mut self, _out: &mut Vec<u8>) {}
}
