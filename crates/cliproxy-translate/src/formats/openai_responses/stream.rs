//! Reading a Responses provider's stream: named events (`event: response.output_text.delta`),
//! each data object carrying its `type` and a `sequence_number`; no `[DONE]`.
//!
//! The events: `response.created` opens the reply; a `function_call` or
//! `reasoning` output item opens a tool or thinking block when added, a message's text opens
//! a text block with its content part; deltas fill them; `output_item.done` brings a
//! reasoning item's encrypted content (its signature) and closes the block; the terminal
//! `response.completed` / `response.incomplete` gives the finish and the usage,
//! `response.failed` and `error` an error. A step the provider skipped (no `created`, a delta
//! for an item never added, arguments only in the `done` event) is made up, so that nothing
//! the model produced is lost.

use crate::error::json_problem;
use std::borrow::Cow;

use serde::Deserialize;
use serde_json::Value;

use super::{WireItem, WireResponse, pack_signature};
use crate::codec::StreamDecoder;
use crate::error::{Error, Result};
use crate::formats::openai_chat::shared::WireError;
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
                let open = self.find(SlotKind::Thinking, output_index, 0);
                let filled =
                    open.and_then(|slot| self.slots.get(slot)).is_some_and(|slot| slot.filled);
                let id = item.id.clone();
                let encrypted = item.encrypted_content.clone();
                let text =
                    if filled { String::new() } else { super::reasoning_part(item, false).text };
                // A reasoning item with no summary and no encrypted content (the model reasoned,
                // nobody asked to see it) says nothing: no empty thinking block is made up.
                if open.is_none() && text.is_empty() && encrypted.is_none() {
                    return;
                }
                let slot =
                    self.slot(SlotKind::Thinking, output_index, 0, || BlockKind::Thinking, out);
                self.delta(slot, text, out);
                if let Some(encrypted) = encrypted {
                    let index = self.slots.get(slot).map_or(0, |slot| slot.block);
                    let signature = pack_signature(id.as_deref(), &encrypted);
                    out.push(Event::SignatureDelta { index, signature });
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
        let wire: WireEvent<'_> = serde_json::from_slice(data)
            .map_err(|error| Error::stream(name, json_problem(&error)))?;
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
            // A reasoning item's block opens with its first summary piece or its signature.
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
