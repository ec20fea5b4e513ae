//! Writing Responses events for a client: each common event becomes the API's events, in
//! the API's order, numbered by `sequence_number`; the output items are built up as they
//! stream, so that `response.completed` carries the whole reply.

use serde::Serialize;

use super::{Ending, Item, ItemKind, Items, OutText, response_id};
use crate::Format;
use crate::codec::StreamEncoder;
use crate::formats::openai_chat::shared::{self, write_frame};
use crate::ir::{BlockKind, Event, StopReason, Usage};

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
    /// The usage reported at the start, completing the finish's.
    start_usage: Usage,
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
            // A provider of another format's signature arrives wrapped already (the
            // stream translator wraps every foreign one, `Pair::stream`).
            let signature = match self.origin {
                Some(Format::OpenAiResponses) | None => {
                    Items::client_signature(self.origin, &raw).map(|(_, encrypted)| encrypted)
                }
                Some(_) => Some(raw),
            };
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
        if let Event::Start { id, model, usage } = event {
            self.start_usage = *usage;
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
                let usage = &shared::merge_usage(self.start_usage, *usage);
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
                // The error's code, or its type when OpenAI has no code for it.
                let (kind, code) = shared::error_type(error.kind);
                let body = ErrorBody {
                    code: Some(code.unwrap_or(kind)),
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
