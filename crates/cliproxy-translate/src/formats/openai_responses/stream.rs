//! Responses streams: named events (`event: response.output_text.delta`), each data object
//! carrying its `type` and a `sequence_number`; no `[DONE]`.
//!
//! Reading a provider's events: `response.created` opens the reply; a `function_call` or
//! `reasoning` output item opens a tool or thinking block when added, a message's text opens
//! a text block with its content part; deltas fill them; `output_item.done` brings a
//! reasoning item's encrypted content (its signature) and closes the block; the terminal
//! `response.completed` / `response.incomplete` gives the finish and the usage,
//! `response.failed` and `error` an error. A step the provider skipped (no `created`, a delta
//! for an item never added, arguments only in the `done` event) is made up, so that nothing
//! the model produced is lost.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    Ending, Item, ItemKind, Items, OutText, WireItem, WireResponse, pack_signature, response_id,
};
use crate::Format;
use crate::codec::{StreamDecoder, StreamEncoder};
use crate::error::{Error, Result};
use crate::formats::openai_chat::shared::{self, WireError, write_frame};
use crate::ir::{ApiError, BlockKind, ErrorKind, Event, StopReason, Usage};

#[derive(Deserialize)]
struct WireEvent<'a> {
    #[serde(default, rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(default)]
    response: Option<WireResponse>,
    #[serde(default)]
    item: Option<WireItem>,
    #[serde(default)]
    output_index: Option<usize>,
    #[serde(default)]
    content_index: Option<usize>,
    #[serde(default)]
    summary_index: Option<usize>,
    /// A string for every delta this codec reads (an object in the rare
    /// `response.reasoning_summary.delta`, which is skipped).
    #[serde(default)]
    delta: Option<Value>,
    #[serde(default)]
    arguments: Option<String>,
    #[serde(default)]
    item_id: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    code: Option<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotKind {
    Text,
    Thinking,
    Tool,
}

/// One block of the reply: the output item (and content part) it comes from.
#[derive(Debug)]
struct Slot {
    kind: SlotKind,
    output_index: usize,
    content_index: usize,
    block: usize,
    open: bool,
    /// Whether any delta filled it (a `done` event then repeats what is known).
    filled: bool,
}

/// Reads a Responses provider's stream.
#[derive(Debug, Default)]
pub(crate) struct EventDecoder {
    started: bool,
    done: bool,
    next_block: usize,
    slots: Vec<Slot>,
    tool_calls: bool,
    refused: bool,
}

impl EventDecoder {
    fn start(&mut self, id: Option<String>, model: Option<String>, out: &mut Vec<Event>) {
        if !self.started {
            self.started = true;
            out.push(Event::Start {
                id: id.unwrap_or_default(),
                model: model.unwrap_or_default(),
                usage: Usage::default(),
            });
        }
    }

    fn find(&self, kind: SlotKind, output_index: usize, content_index: usize) -> Option<usize> {
        self.slots.iter().position(|slot| {
            slot.open
                && slot.kind == kind
                && slot.output_index == output_index
                && slot.content_index == content_index
        })
    }

    /// The open block for this item (and part), opened now when the provider skipped its
    /// start. Opening a block closes the others: the Responses API streams one item at a time.
    fn slot(
        &mut self,
        kind: SlotKind,
        output_index: usize,
        content_index: usize,
        block: impl FnOnce() -> BlockKind,
        out: &mut Vec<Event>,
    ) -> usize {
        if let Some(found) = self.find(kind, output_index, content_index) {
            return found;
        }
        self.close_all(out);
        let index = self.next_block;
        self.next_block += 1;
        out.push(Event::BlockStart { index, block: block() });
        self.slots.push(Slot {
            kind,
            output_index,
            content_index,
            block: index,
            open: true,
            filled: false,
        });
        if kind == SlotKind::Tool {
            self.tool_calls = true;
        }
        self.slots.len() - 1
    }

    fn close(&mut self, slot: usize, out: &mut Vec<Event>) {
        if let Some(slot) = self.slots.get_mut(slot)
            && slot.open
        {
            slot.open = false;
            out.push(Event::BlockStop { index: slot.block });
        }
    }

    fn close_all(&mut self, out: &mut Vec<Event>) {
        for slot in &mut self.slots {
            if slot.open {
                slot.open = false;
                out.push(Event::BlockStop { index: slot.block });
            }
        }
    }

    /// Appends a delta to the slot's block.
    fn delta(&mut self, slot: usize, text: String, out: &mut Vec<Event>) {
        let Some(slot) = self.slots.get_mut(slot) else { return };
        if text.is_empty() {
            return;
        }
        slot.filled = true;
        let index = slot.block;
        out.push(match slot.kind {
            SlotKind::Text => Event::TextDelta { index, text },
            SlotKind::Thinking => Event::ThinkingDelta { index, text },
            SlotKind::Tool => Event::ToolArgumentsDelta { index, json: text },
        });
    }

    fn tool_block(item: Option<&WireItem>, item_id: Option<&str>) -> BlockKind {
        let id = item
            .and_then(|item| item.call_id.clone().or_else(|| item.id.clone()))
            .or_else(|| item_id.map(str::to_owned));
        BlockKind::ToolCall {
            id: id.unwrap_or_else(|| "call_0".to_owned()),
            name: item.and_then(|item| item.name.clone()).unwrap_or_default(),
        }
    }

    fn item_done(&mut self, output_index: usize, item: WireItem, out: &mut Vec<Event>) {
        match item.kind.as_deref() {
            Some("function_call") => {
                let slot = self.slot(
                    SlotKind::Tool,
                    output_index,
                    0,
                    || Self::tool_block(Some(&item), None),
                    out,
                );
                if !self.slots.get(slot).is_some_and(|slot| slot.filled) {
                    self.delta(slot, item.arguments.unwrap_or_default(), out);
                }
                self.close(slot, out);
            }
            Some("reasoning") => {
                let slot =
                    self.slot(SlotKind::Thinking, output_index, 0, || BlockKind::Thinking, out);
                let filled = self.slots.get(slot).is_some_and(|slot| slot.filled);
                let index = self.slots.get(slot).map_or(0, |slot| slot.block);
                let encrypted = item.encrypted_content.clone();
                let id = item.id.clone();
                if !filled {
                    let thinking = super::reasoning_part(item, false);
                    self.delta(slot, thinking.text, out);
                }
                if let Some(encrypted) = encrypted {
                    out.push(Event::SignatureDelta {
                        index,
                        signature: pack_signature(id.as_deref(), &encrypted),
                    });
                }
                self.close(slot, out);
            }
            Some("message") => {
                let had_text = self
                    .slots
                    .iter()
                    .any(|slot| slot.kind == SlotKind::Text && slot.output_index == output_index);
                if !had_text {
                    // The provider sent the message whole, without deltas.
                    if let Some(super::WireContent::Parts(parts)) = item.content {
                        for (content_index, part) in parts.into_iter().enumerate() {
                            if let Some(text) = part.text.or(part.refusal) {
                                let slot = self.slot(
                                    SlotKind::Text,
                                    output_index,
                                    content_index,
                                    || BlockKind::Text,
                                    out,
                                );
                                self.delta(slot, text, out);
                            }
                        }
                    }
                }
                for slot in 0..self.slots.len() {
                    if self.slots.get(slot).is_some_and(|slot| {
                        slot.kind == SlotKind::Text && slot.output_index == output_index
                    }) {
                        self.close(slot, out);
                    }
                }
            }
            _ => {}
        }
    }

    fn finish_with(&mut self, mut response: Option<WireResponse>, out: &mut Vec<Event>) {
        self.start(None, None, out);
        self.close_all(out);
        let (stop, usage) = match response.as_mut() {
            Some(response) => (response.stop(self.tool_calls, self.refused), response.usage()),
            None => (
                if self.tool_calls { StopReason::ToolUse } else { StopReason::EndTurn },
                Usage::default(),
            ),
        };
        let stop = match stop {
            StopReason::EndTurn if self.refused => StopReason::ContentFilter,
            stop => stop,
        };
        out.push(Event::Finish { stop, stop_sequence: None, usage });
        self.done = true;
    }
}

impl StreamDecoder for EventDecoder {
    fn decode(&mut self, event: Option<&str>, data: &[u8], out: &mut Vec<Event>) -> Result<()> {
        if self.done {
            return Ok(());
        }
        let data = data.trim_ascii();
        if data.is_empty() || data == b"[DONE]" {
            return Ok(());
        }
        let name = event.unwrap_or("data");
        let wire: WireEvent<'_> =
            serde_json::from_slice(data).map_err(|error| Error::stream(name, error.to_string()))?;
        let kind = wire.kind.as_deref().or(event).unwrap_or_default();
        let output_index = wire.output_index.unwrap_or(0);
        let content_index = wire.content_index.unwrap_or(0);
        let text = match wire.delta {
            Some(Value::String(text)) => Some(text),
            _ => None,
        };
        match kind {
            "response.created" | "response.in_progress" | "response.queued" => {
                let (id, model) =
                    wire.response.map_or((None, None), |mut response| response.id_and_model());
                self.start(id, model, out);
            }
            "response.completed" | "response.incomplete" => self.finish_with(wire.response, out),
            "response.failed" => {
                self.start(None, None, out);
                self.close_all(out);
                let error = wire.response.map_or_else(
                    || ApiError {
                        status: 500,
                        kind: ErrorKind::Api,
                        message: "response failed".to_owned(),
                    },
                    |mut response| response.take_error(),
                );
                out.push(Event::Error(error));
                self.done = true;
            }
            "error" => {
                self.start(None, None, out);
                self.close_all(out);
                let error = WireError { message: wire.message, kind: None, code: wire.code };
                out.push(Event::Error(error.into_api_error(None)));
                self.done = true;
            }
            _ => {
                self.start(None, None, out);
                self.item_event(
                    kind,
                    wire.item,
                    wire.item_id,
                    output_index,
                    content_index,
                    wire.summary_index,
                    text,
                    wire.arguments,
                    out,
                );
            }
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<Event>) {
        if !self.done {
            self.finish_with(None, out);
        }
    }
}

impl EventDecoder {
    #[allow(
        clippy::too_many_arguments,
        reason = "the fields of one event, taken apart once by the caller"
    )]
    fn item_event(
        &mut self,
        kind: &str,
        item: Option<WireItem>,
        item_id: Option<String>,
        output_index: usize,
        content_index: usize,
        summary_index: Option<usize>,
        text: Option<String>,
        arguments: Option<String>,
        out: &mut Vec<Event>,
    ) {
        match kind {
            "response.output_item.added" => match item {
                Some(item) if item.kind.as_deref() == Some("function_call") => {
                    let slot = self.slot(
                        SlotKind::Tool,
                        output_index,
                        0,
                        || Self::tool_block(Some(&item), None),
                        out,
                    );
                    self.delta(slot, item.arguments.unwrap_or_default(), out);
                }
                Some(item) if item.kind.as_deref() == Some("reasoning") => {
                    self.slot(SlotKind::Thinking, output_index, 0, || BlockKind::Thinking, out);
                }
                _ => {}
            },
            "response.content_part.added" => {
                self.slot(SlotKind::Text, output_index, content_index, || BlockKind::Text, out);
            }
            "response.output_text.delta" | "response.refusal.delta" => {
                if kind == "response.refusal.delta" {
                    self.refused = true;
                }
                let slot =
                    self.slot(SlotKind::Text, output_index, content_index, || BlockKind::Text, out);
                self.delta(slot, text.unwrap_or_default(), out);
            }
            "response.content_part.done" => {
                if let Some(slot) = self.find(SlotKind::Text, output_index, content_index) {
                    self.close(slot, out);
                }
            }
            "response.reasoning_summary_part.added" => {
                let slot =
                    self.slot(SlotKind::Thinking, output_index, 0, || BlockKind::Thinking, out);
                // Summary parts are paragraphs of one text.
                if summary_index.is_some_and(|index| index > 0) {
                    self.delta(slot, "\n\n".to_owned(), out);
                }
            }
            "response.reasoning_summary_text.delta" | "response.reasoning_text.delta" => {
                let slot =
                    self.slot(SlotKind::Thinking, output_index, 0, || BlockKind::Thinking, out);
                self.delta(slot, text.unwrap_or_default(), out);
            }
            "response.function_call_arguments.delta" => {
                let slot = self.slot(
                    SlotKind::Tool,
                    output_index,
                    0,
                    || Self::tool_block(None, item_id.as_deref()),
                    out,
                );
                self.delta(slot, text.unwrap_or_default(), out);
            }
            "response.function_call_arguments.done" => {
                let slot = self.slot(
                    SlotKind::Tool,
                    output_index,
                    0,
                    || Self::tool_block(None, item_id.as_deref()),
                    out,
                );
                if !self.slots.get(slot).is_some_and(|slot| slot.filled) {
                    self.delta(slot, arguments.unwrap_or_default(), out);
                }
            }
            "response.output_item.done" => {
                if let Some(item) = item {
                    self.item_done(output_index, item, out);
                }
            }
            // Everything else (text `done` events that repeat the deltas, annotations,
            // built-in tools' progress, events of later API versions) adds nothing.
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------------------
// Writing a client's stream.

#[derive(Serialize)]
struct Frame<'a, T> {
    #[serde(rename = "type")]
    kind: &'a str,
    sequence_number: u64,
    #[serde(flatten)]
    body: T,
}

fn emit<T: Serialize>(sequence: &mut u64, kind: &str, body: T, out: &mut Vec<u8>) {
    write_frame(out, Some(kind), &Frame { kind, sequence_number: *sequence, body });
    *sequence += 1;
}

#[derive(Serialize)]
struct ResponseBody<'a> {
    response: super::OutResponse<'a>,
}

#[derive(Serialize)]
struct ItemBody<'a> {
    output_index: usize,
    item: super::OutItem<'a>,
}

#[derive(Serialize)]
struct PartBody<'a, P> {
    item_id: &'a str,
    output_index: usize,
    content_index: usize,
    part: P,
}

#[derive(Serialize)]
struct TextBody<'a> {
    item_id: &'a str,
    output_index: usize,
    content_index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    delta: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    logprobs: [(); 0],
}

#[derive(Serialize)]
struct SummaryBody<'a, P> {
    item_id: &'a str,
    output_index: usize,
    summary_index: usize,
    #[serde(flatten)]
    payload: P,
}

#[derive(Serialize)]
struct Delta<'a> {
    delta: &'a str,
}

#[derive(Serialize)]
struct Text<'a> {
    text: &'a str,
}

#[derive(Serialize)]
struct SummaryPart<'a> {
    part: OutSummaryPart<'a>,
}

#[derive(Serialize)]
struct OutSummaryPart<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'a str,
}

#[derive(Serialize)]
struct ArgumentsBody<'a> {
    item_id: &'a str,
    output_index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    delta: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    arguments: Option<&'a str>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: Option<&'static str>,
    message: &'a str,
    param: Option<()>,
}

/// Writes Responses events for a client.
#[derive(Debug, Default)]
pub(crate) struct EventEncoder {
    sequence: u64,
    started: bool,
    done: bool,
    id: String,
    model: String,
    created: u64,
    /// The provider's format: its reasoning signatures are wrapped with it.
    origin: Option<Format>,
    items: Items,
    /// Each block of the reply and its output item (`None` for redacted reasoning, which has
    /// no Responses form).
    blocks: Vec<(usize, Option<usize>)>,
    /// The raw signatures of reasoning items, by item, until the item is done.
    signatures: Vec<(usize, String)>,
}

impl EventEncoder {
    fn start(&mut self, id: &str, model: &str, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        self.id = response_id(id).into_owned();
        model.clone_into(&mut self.model);
        self.created = shared::now();
        for kind in ["response.created", "response.in_progress"] {
            let response =
                self.items.response(&self.id, &self.model, self.created, Ending::Running, None);
            emit(&mut self.sequence, kind, ResponseBody { response }, out);
        }
    }

    fn item_of(&self, block: usize) -> Option<Option<usize>> {
        self.blocks.iter().rev().find(|(index, _)| *index == block).map(|(_, item)| *item)
    }

    fn open(&mut self, block: usize, kind: &BlockKind, out: &mut Vec<u8>) -> Option<usize> {
        let index = self.items.0.len();
        let (prefix, item_kind) = match kind {
            BlockKind::Text => ("msg", ItemKind::Message),
            BlockKind::Thinking => ("rs", ItemKind::Reasoning { encrypted: None }),
            BlockKind::ToolCall { id, name } => {
                ("fc", ItemKind::FunctionCall { call_id: id.clone(), name: name.clone() })
            }
            BlockKind::RedactedThinking { .. } => {
                self.blocks.push((block, None));
                return None;
            }
        };
        let item = Item {
            id: Items::item_id(prefix, &self.id, index),
            kind: item_kind,
            text: String::new(),
            done: false,
        };
        self.items.0.push(item);
        self.blocks.push((block, Some(index)));
        let item = self.items.0.get(index)?;
        emit(
            &mut self.sequence,
            "response.output_item.added",
            ItemBody { output_index: index, item: item.out() },
            out,
        );
        if matches!(kind, BlockKind::Text) {
            let part = PartBody {
                item_id: &item.id,
                output_index: index,
                content_index: 0,
                part: OutText::new(""),
            };
            emit(&mut self.sequence, "response.content_part.added", part, out);
        }
        Some(index)
    }

    /// The item of a block, opened now when its start was never seen.
    fn item_for(&mut self, block: usize, kind: BlockKind, out: &mut Vec<u8>) -> Option<usize> {
        match self.item_of(block) {
            Some(item) => item,
            None => self.open(block, &kind, out),
        }
    }

    fn append(&mut self, index: usize, text: &str, out: &mut Vec<u8>) {
        let Some(item) = self.items.0.get_mut(index) else { return };
        if item.done || text.is_empty() {
            return;
        }
        let first = item.text.is_empty();
        item.text.push_str(text);
        let item_id = item.id.as_str();
        match item.kind {
            ItemKind::Message => {
                let body = TextBody {
                    item_id,
                    output_index: index,
                    content_index: 0,
                    delta: Some(text),
                    text: None,
                    logprobs: [],
                };
                emit(&mut self.sequence, "response.output_text.delta", body, out);
            }
            ItemKind::Reasoning { .. } => {
                if first {
                    let part =
                        SummaryPart { part: OutSummaryPart { kind: "summary_text", text: "" } };
                    let body = SummaryBody {
                        item_id,
                        output_index: index,
                        summary_index: 0,
                        payload: part,
                    };
                    emit(&mut self.sequence, "response.reasoning_summary_part.added", body, out);
                }
                let body = SummaryBody {
                    item_id,
                    output_index: index,
                    summary_index: 0,
                    payload: Delta { delta: text },
                };
                emit(&mut self.sequence, "response.reasoning_summary_text.delta", body, out);
            }
            ItemKind::FunctionCall { .. } => {
                let body = ArgumentsBody {
                    item_id,
                    output_index: index,
                    delta: Some(text),
                    name: None,
                    arguments: None,
                };
                emit(&mut self.sequence, "response.function_call_arguments.delta", body, out);
            }
        }
    }

    fn close(&mut self, index: usize, out: &mut Vec<u8>) {
        // A call streamed without arguments has `{}`: clients parse the arguments as JSON.
        if let Some(Item { kind: ItemKind::FunctionCall { .. }, text, done: false, .. }) =
            self.items.0.get(index)
            && text.is_empty()
        {
            self.append(index, "{}", out);
        }
        if let Some(position) = self.signatures.iter().position(|(item, _)| *item == index) {
            let (_, raw) = self.signatures.swap_remove(position);
            let signature =
                Items::client_signature(self.origin, &raw).map(|(_, encrypted)| encrypted);
            if let Some(Item { kind: ItemKind::Reasoning { encrypted }, .. }) =
                self.items.0.get_mut(index)
            {
                *encrypted = signature;
            }
        }
        let Some(item) = self.items.0.get_mut(index) else { return };
        if item.done {
            return;
        }
        item.done = true;
        let item = &*item;
        let item_id = item.id.as_str();
        let text = item.text.as_str();
        match &item.kind {
            ItemKind::Message => {
                let body = TextBody {
                    item_id,
                    output_index: index,
                    content_index: 0,
                    delta: None,
                    text: Some(text),
                    logprobs: [],
                };
                emit(&mut self.sequence, "response.output_text.done", body, out);
                let part = PartBody {
                    item_id,
                    output_index: index,
                    content_index: 0,
                    part: OutText::new(text),
                };
                emit(&mut self.sequence, "response.content_part.done", part, out);
            }
            ItemKind::Reasoning { .. } if !text.is_empty() => {
                let body = SummaryBody {
                    item_id,
                    output_index: index,
                    summary_index: 0,
                    payload: Text { text },
                };
                emit(&mut self.sequence, "response.reasoning_summary_text.done", body, out);
                let part = SummaryPart { part: OutSummaryPart { kind: "summary_text", text } };
                let body =
                    SummaryBody { item_id, output_index: index, summary_index: 0, payload: part };
                emit(&mut self.sequence, "response.reasoning_summary_part.done", body, out);
            }
            ItemKind::Reasoning { .. } => {}
            ItemKind::FunctionCall { name, .. } => {
                let body = ArgumentsBody {
                    item_id,
                    output_index: index,
                    delta: None,
                    name: Some(name),
                    arguments: Some(text),
                };
                emit(&mut self.sequence, "response.function_call_arguments.done", body, out);
            }
        }
        emit(
            &mut self.sequence,
            "response.output_item.done",
            ItemBody { output_index: index, item: item.out() },
            out,
        );
    }

    fn close_all(&mut self, out: &mut Vec<u8>) {
        for index in 0..self.items.0.len() {
            self.close(index, out);
        }
    }
}

impl StreamEncoder for EventEncoder {
    fn encode(&mut self, event: &Event, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        if let Event::Start { id, model, .. } = event {
            self.start(id, model, out);
            return;
        }
        self.start("", "", out);
        match event {
            Event::BlockStart { index, block } => {
                self.open(*index, block, out);
            }
            Event::TextDelta { index, text } => {
                if let Some(item) = self.item_for(*index, BlockKind::Text, out) {
                    self.append(item, text, out);
                }
            }
            Event::ThinkingDelta { index, text } => {
                if let Some(item) = self.item_for(*index, BlockKind::Thinking, out) {
                    self.append(item, text, out);
                }
            }
            Event::SignatureDelta { index, signature } => {
                if let Some(item) = self.item_for(*index, BlockKind::Thinking, out) {
                    match self.signatures.iter_mut().find(|(of, _)| *of == item) {
                        Some((_, raw)) => raw.push_str(signature),
                        None => self.signatures.push((item, signature.clone())),
                    }
                }
            }
            Event::ToolArgumentsDelta { index, json } => {
                let kind = BlockKind::ToolCall { id: format!("call_{index}"), name: String::new() };
                if let Some(item) = self.item_for(*index, kind, out) {
                    self.append(item, json, out);
                }
            }
            Event::BlockStop { index } => {
                if let Some(Some(item)) = self.item_of(*index) {
                    self.close(item, out);
                }
            }
            Event::Finish { stop, usage, .. } => {
                self.close_all(out);
                let kind = match stop {
                    StopReason::MaxTokens | StopReason::ContentFilter => "response.incomplete",
                    _ => "response.completed",
                };
                let response = self.items.response(
                    &self.id,
                    &self.model,
                    self.created,
                    Ending::Stop(stop),
                    Some(usage),
                );
                emit(&mut self.sequence, kind, ResponseBody { response }, out);
                self.done = true;
            }
            Event::Error(error) => {
                self.close_all(out);
                let (_, code) = shared::error_type(error.kind);
                let body = ErrorBody {
                    code: Some(code.unwrap_or("server_error")),
                    message: &error.message,
                    param: None,
                };
                emit(&mut self.sequence, "error", body, out);
                let response = self.items.response(
                    &self.id,
                    &self.model,
                    self.created,
                    Ending::Failed(error),
                    None,
                );
                emit(&mut self.sequence, "response.failed", ResponseBody { response }, out);
                self.done = true;
            }
            Event::Start { .. } => {}
        }
    }

    fn set_origin(&mut self, provider: Format) {
        self.origin = Some(provider);
    }

    fn finish(&mut self, _out: &mut Vec<u8>) {}
}
