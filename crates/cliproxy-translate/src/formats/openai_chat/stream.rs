//! Chat Completions streams: `data: {chunk}` frames without event names, ended by
//! `data: [DONE]`.
//!
//! Reading a provider's chunks: the first chunk opens the reply; `reasoning_content` (or
//! `reasoning`), `content` and `refusal` deltas fill a thinking or text block, a new kind
//! closing the previous one; each tool call (by its `index` among the tool calls) opens a
//! tool block when first seen, and its argument pieces follow. One block is open at a time:
//! OpenAI streams parallel calls one after the other, so a new call closes the previous one.
//! Should a provider go back to an earlier call, its pieces still follow, with that call's
//! index (the arguments are never dropped). The finish is emitted once the usage is known:
//! with the `finish_reason` chunk when it carries usage, else with the usage chunk that
//! follows it, else at `[DONE]` or at the end of the stream.

use crate::error::json_problem;
use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::shared::{self, WireError, write_frame};
use super::{OutUsage, WireUsage, chat_id, finish_reason, stop_reason};
use crate::codec::{StreamDecoder, StreamEncoder};
use crate::error::{Error, Result};
use crate::ir::{BlockKind, Event, StopReason, Usage};

/// One chunk. The id and model are borrowed: they are read once, from the first chunk, and
/// every chunk repeats them.
#[derive(Deserialize)]
struct WireChunk<'a> {
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    choices: Option<Vec<WireChunkChoice>>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<WireError>,
}

#[derive(Deserialize)]
struct WireChunkChoice {
    #[serde(default)]
    index: Option<u32>,
    #[serde(default)]
    delta: Option<WireDelta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireDelta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    reasoning_content: Option<String>,
    #[serde(default)]
    reasoning: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<WireToolDelta>>,
}

#[derive(Deserialize)]
struct WireToolDelta {
    #[serde(default)]
    index: Option<usize>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<WireFunctionDelta>,
}

#[derive(Deserialize)]
struct WireFunctionDelta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

/// The kind of the open block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Text,
    Thinking,
    Tool,
}

/// One tool call of the reply: its index among the calls, its block, its id.
#[derive(Debug)]
struct ToolSlot {
    key: usize,
    block: usize,
    id: String,
}

/// Reads a Chat Completions provider's stream.
#[derive(Debug, Default)]
pub(crate) struct ChunkDecoder {
    started: bool,
    done: bool,
    next_block: usize,
    /// The open block: its index and kind. One block is open at a time.
    open: Option<(usize, Open)>,
    /// Tool calls seen, in order.
    tools: Vec<ToolSlot>,
    finish: Option<StopReason>,
    usage: Usage,
    saw_usage: bool,
}

impl ChunkDecoder {
    fn start(
        &mut self,
        id: Option<Cow<'_, str>>,
        model: Option<Cow<'_, str>>,
        out: &mut Vec<Event>,
    ) {
        if !self.started {
            self.started = true;
            out.push(Event::Start {
                id: id.map(Cow::into_owned).unwrap_or_default(),
                model: model.map(Cow::into_owned).unwrap_or_default(),
                usage: Usage::default(),
            });
        }
    }

    fn close_open(&mut self, out: &mut Vec<Event>) {
        if let Some((index, _)) = self.open.take() {
            out.push(Event::BlockStop { index });
        }
    }

    /// Text or reasoning: continues the open block of the same kind or opens one.
    fn text(&mut self, thinking: bool, text: String, out: &mut Vec<Event>) {
        let kind = if thinking { Open::Thinking } else { Open::Text };
        let index = match self.open {
            Some((index, open)) if open == kind => index,
            _ => {
                self.close_open(out);
                let index = self.next_block;
                self.next_block += 1;
                self.open = Some((index, kind));
                let block = if thinking { BlockKind::Thinking } else { BlockKind::Text };
                out.push(Event::BlockStart { index, block });
                index
            }
        };
        out.push(if thinking {
            Event::ThinkingDelta { index, text }
        } else {
            Event::TextDelta { index, text }
        });
    }

    fn tool(&mut self, position: usize, delta: WireToolDelta, out: &mut Vec<Event>) {
        // Providers that leave out `index` send each call whole: a new id is a new call, no
        // id continues the last one.
        let key = match (delta.index, &delta.id) {
            (Some(index), _) => index,
            (None, Some(id)) => match self.tools.iter().find(|slot| slot.id == *id) {
                Some(slot) => slot.key,
                None => self.tools.iter().map(|slot| slot.key + 1).max().unwrap_or(position),
            },
            (None, None) => self.tools.last().map_or(position, |slot| slot.key),
        };
        let (name, arguments) = match delta.function {
            Some(function) => (function.name, function.arguments),
            None => (None, None),
        };
        let block = match self.tools.iter().find(|slot| slot.key == key) {
            Some(slot) => slot.block,
            None => {
                self.close_open(out);
                let block = self.next_block;
                self.next_block += 1;
                let id = delta.id.unwrap_or_else(|| format!("call_{block}"));
                out.push(Event::BlockStart {
                    index: block,
                    block: BlockKind::ToolCall { id: id.clone(), name: name.unwrap_or_default() },
                });
                self.tools.push(ToolSlot { key, block, id });
                self.open = Some((block, Open::Tool));
                block
            }
        };
        if let Some(json) = arguments.filter(|json| !json.is_empty()) {
            out.push(Event::ToolArgumentsDelta { index: block, json });
        }
    }

    /// Closes every open block and reports the finish.
    fn end(&mut self, out: &mut Vec<Event>) {
        if self.done {
            return;
        }
        self.start(None, None, out);
        self.close_open(out);
        let stop = match self.finish.take() {
            // Some servers say `stop` after tool calls: the calls are what the client must
            // act on.
            Some(StopReason::EndTurn) | None if !self.tools.is_empty() => StopReason::ToolUse,
            Some(stop) => stop,
            None => StopReason::EndTurn,
        };
        out.push(Event::Finish { stop, stop_sequence: None, usage: self.usage });
        self.done = true;
    }
}

impl StreamDecoder for ChunkDecoder {
    fn decode(&mut self, _event: Option<&str>, data: &[u8], out: &mut Vec<Event>) -> Result<()> {
        if self.done {
            return Ok(());
        }
        let data = data.trim_ascii();
        if data == b"[DONE]" {
            self.end(out);
            return Ok(());
        }
        if data.is_empty() {
            return Ok(());
        }
        let chunk: WireChunk<'_> = serde_json::from_slice(data)
            .map_err(|error| Error::stream("data", json_problem(&error)))?;
        if let Some(error) = chunk.error {
            self.start(chunk.id, chunk.model, out);
            out.push(Event::Error(error.into_api_error(None)));
            self.done = true;
            return Ok(());
        }
        self.start(chunk.id, chunk.model, out);
        for choice in chunk.choices.unwrap_or_default() {
            // `n` other than 1 is refused for translated requests: only the first choice is
            // the reply.
            if choice.index.unwrap_or(0) != 0 {
                continue;
            }
            if let Some(delta) = choice.delta {
                if let Some(text) = delta.reasoning_content.or(delta.reasoning)
                    && !text.is_empty()
                {
                    self.text(true, text, out);
                }
                if let Some(text) = delta.content.filter(|text| !text.is_empty()) {
                    self.text(false, text, out);
                }
                if let Some(text) = delta.refusal.filter(|text| !text.is_empty()) {
                    self.text(false, text, out);
                    self.finish.get_or_insert(StopReason::ContentFilter);
                }
                for (position, call) in delta.tool_calls.unwrap_or_default().into_iter().enumerate()
                {
                    self.tool(position, call, out);
                }
            }
            if let Some(reason) = choice.finish_reason {
                let stop = stop_reason(Some(&reason));
                if self.finish != Some(StopReason::ContentFilter) {
                    self.finish = Some(stop);
                }
            }
        }
        if let Some(usage) = chunk.usage {
            self.usage = usage.to_ir();
            self.saw_usage = true;
        }
        if self.finish.is_some() && self.saw_usage {
            self.end(out);
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<Event>) {
        self.end(out);
    }
}

#[derive(Serialize)]
struct OutChunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: &'a [OutChunkChoice<'a>],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<OutUsage>,
}

#[derive(Serialize)]
struct OutChunkChoice<'a> {
    index: u32,
    delta: OutDelta<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

#[derive(Serialize, Default)]
struct OutDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[OutToolDelta<'a>; 1]>,
}

#[derive(Serialize)]
struct OutToolDelta<'a> {
    index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: OutFunctionDelta<'a>,
}

#[derive(Serialize)]
struct OutFunctionDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
}

/// Writes Chat Completions chunks for a client.
#[derive(Debug, Default)]
pub(crate) struct ChunkEncoder {
    started: bool,
    id: String,
    model: String,
    created: u64,
    /// The block index of each tool call, in the order the calls began: a call's position
    /// here is the `index` its chunks carry (OpenAI numbers the calls, not the blocks). The
    /// flag says whether any arguments were sent.
    tools: Vec<(usize, bool)>,
    /// The usage reported at the start, completing the finish's.
    start_usage: Usage,
}

impl ChunkEncoder {
    fn chunk(&self, delta: OutDelta<'_>, finish: Option<&'static str>, out: &mut Vec<u8>) {
        let choice = OutChunkChoice { index: 0, delta, logprobs: None, finish_reason: finish };
        let chunk = OutChunk {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
            choices: std::slice::from_ref(&choice),
            usage: None,
        };
        write_frame(out, None, &chunk);
    }

    fn start(&mut self, id: &str, model: &str, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        id.clone_into(&mut self.id);
        self.id = chat_id(&self.id).into_owned();
        model.clone_into(&mut self.model);
        self.created = super::shared::now();
        let delta = OutDelta { role: Some("assistant"), content: Some(""), ..OutDelta::default() };
        self.chunk(delta, None, out);
    }

    fn tool_header(&mut self, block: usize, id: &str, name: &str, out: &mut Vec<u8>) -> usize {
        let ordinal = self.tools.len();
        self.tools.push((block, false));
        let call = OutToolDelta {
            index: ordinal,
            id: Some(id),
            kind: Some("function"),
            function: OutFunctionDelta { name: Some(name), arguments: "" },
        };
        self.chunk(OutDelta { tool_calls: Some([call]), ..OutDelta::default() }, None, out);
        ordinal
    }
}

impl ChunkEncoder {
    fn arguments(&mut self, ordinal: usize, json: &str, out: &mut Vec<u8>) {
        if let Some((_, sent)) = self.tools.get_mut(ordinal) {
            *sent = true;
        }
        let call = OutToolDelta {
            index: ordinal,
            id: None,
            kind: None,
            function: OutFunctionDelta { name: None, arguments: json },
        };
        self.chunk(OutDelta { tool_calls: Some([call]), ..OutDelta::default() }, None, out);
    }
}

impl StreamEncoder for ChunkEncoder {
    fn encode(&mut self, event: &Event, out: &mut Vec<u8>) {
        if let Event::Start { id, model, usage } = event {
            self.start_usage = *usage;
            self.start(id, model, out);
            return;
        }
        self.start("", "", out);
        match event {
            Event::BlockStart { index, block: BlockKind::ToolCall { id, name } } => {
                self.tool_header(*index, id, name, out);
            }
            Event::TextDelta { text, .. } if !text.is_empty() => {
                self.chunk(OutDelta { content: Some(text), ..OutDelta::default() }, None, out);
            }
            Event::ThinkingDelta { text, .. } if !text.is_empty() => {
                let delta = OutDelta { reasoning_content: Some(text), ..OutDelta::default() };
                self.chunk(delta, None, out);
            }
            Event::ToolArgumentsDelta { index, json } if !json.is_empty() => {
                let ordinal = match self.tools.iter().position(|(block, _)| block == index) {
                    Some(ordinal) => ordinal,
                    // A delta for a call never opened: the call is opened here, so that its
                    // arguments are not lost.
                    None => self.tool_header(*index, &format!("call_{index}"), "", out),
                };
                self.arguments(ordinal, json, out);
            }
            Event::BlockStop { index } => {
                // A call that streamed no arguments has `{}`: clients parse them as JSON.
                if let Some(ordinal) =
                    self.tools.iter().position(|(block, sent)| block == index && !sent)
                {
                    self.arguments(ordinal, "{}", out);
                }
            }
            Event::Finish { stop, usage, .. } => {
                let usage = &shared::merge_usage(self.start_usage, *usage);
                self.chunk(OutDelta::default(), Some(finish_reason(stop)), out);
                let chunk = OutChunk {
                    id: &self.id,
                    object: "chat.completion.chunk",
                    created: self.created,
                    model: &self.model,
                    choices: &[],
                    usage: Some(OutUsage::new(usage)),
                };
                write_frame(out, None, &chunk);
            }
            Event::Error(error) => {
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(&super::shared::encode_error(error));
                out.extend_from_slice(b"\n\n");
            }
            // Block boundaries, signatures and redacted reasoning have no Chat chunk: the
            // Chat API has no place for them.
            Event::Start { .. }
            | Event::BlockStart { .. }
            | Event::SignatureDelta { .. }
            | Event::ToolArgumentsDelta { .. }
            | Event::TextDelta { .. }
            | Event::ThinkingDelta { .. } => {}
        }
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"data: [DONE]\n\n");
    }
}
