//! Gemini stream chunks (`streamGenerateContent?alt=sse`): each SSE `data:` is a whole
//! `GenerateContentResponse` holding the next parts.

use crate::error::json_problem;
use std::io::Write as _;

use super::response::{OutErrorBody, OutUsage, WireResponse, call_id, stop_from, stop_name};
use crate::codec::{StreamDecoder, StreamEncoder};
use crate::error::{Error, Result};
use crate::formats::shared::{to_json_string, write_json};
use crate::ir::{BlockKind, Event, StopReason, Usage};

/// What the block open in a decoded stream holds (Gemini's parts come one after another:
/// at most one block is open).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Text,
    Thinking,
}

/// Reads a Gemini provider's stream.
#[derive(Debug, Default)]
pub(super) struct Decoder {
    started: bool,
    open: Option<(usize, Open)>,
    next: usize,
    calls: usize,
    response_id: String,
    usage: Usage,
    done: bool,
}

impl Decoder {
    fn close(&mut self, out: &mut Vec<Event>) {
        if let Some((index, _)) = self.open.take() {
            out.push(Event::BlockStop { index });
        }
    }

    /// The index of the open block of `kind`, opening one (and closing another) if needed.
    fn block(&mut self, kind: Open, out: &mut Vec<Event>) -> usize {
        if let Some((index, open)) = self.open
            && open == kind
        {
            return index;
        }
        self.close(out);
        let index = self.next;
        self.next += 1;
        self.open = Some((index, kind));
        let block = match kind {
            Open::Text => BlockKind::Text,
            Open::Thinking => BlockKind::Thinking,
        };
        out.push(Event::BlockStart { index, block });
        index
    }

    /// A block of its own for a signature that came on a non-thought part.
    fn signature_block(&mut self, signature: String, out: &mut Vec<Event>) {
        self.close(out);
        let index = self.next;
        self.next += 1;
        out.push(Event::BlockStart { index, block: BlockKind::Thinking });
        out.push(Event::SignatureDelta { index, signature });
        out.push(Event::BlockStop { index });
    }

    fn end(&mut self, stop: StopReason, out: &mut Vec<Event>) {
        self.close(out);
        out.push(Event::Finish { stop, stop_sequence: None, usage: self.usage });
        self.done = true;
    }
}

impl StreamDecoder for Decoder {
    fn decode(&mut self, event: Option<&str>, data: &[u8], out: &mut Vec<Event>) -> Result<()> {
        if self.done {
            return Ok(());
        }
        let chunk: WireResponse = serde_json::from_slice(data)
            .map_err(|error| Error::stream(event.unwrap_or("data"), json_problem(&error)))?;
        if let Some(usage) = chunk.usage_metadata {
            self.usage = usage.to_ir();
        }
        if !self.started {
            self.started = true;
            self.response_id = chunk.response_id.unwrap_or_default();
            out.push(Event::Start {
                id: self.response_id.clone(),
                model: chunk.model_version.unwrap_or_default(),
                usage: self.usage,
            });
        }
        let Some(candidate) = chunk.candidates.and_then(|candidates| candidates.into_iter().next())
        else {
            if chunk.prompt_feedback.and_then(|feedback| feedback.block_reason).is_some() {
                self.end(StopReason::ContentFilter, out);
            }
            return Ok(());
        };
        for part in candidate.content.and_then(|content| content.parts).unwrap_or_default() {
            let signature = part.thought_signature.filter(|signature| !signature.is_empty());
            if part.thought == Some(true) {
                let index = self.block(Open::Thinking, out);
                if let Some(text) = part.text.filter(|text| !text.is_empty()) {
                    out.push(Event::ThinkingDelta { index, text });
                }
                if let Some(signature) = signature {
                    out.push(Event::SignatureDelta { index, signature });
                }
                continue;
            }
            // Gemini puts the signature of its thoughts on the part that follows them: it
            // belongs to the thinking block still open (a client of Anthropic's format must
            // get it inside that block, before its stop), or to a block of its own when the
            // thoughts were not sent.
            if let Some(signature) = signature {
                match self.open {
                    Some((index, Open::Thinking)) => {
                        out.push(Event::SignatureDelta { index, signature });
                    }
                    _ => self.signature_block(signature, out),
                }
            }
            if let Some(call) = part.function_call {
                // Gemini sends each call whole: one block with all its arguments.
                self.close(out);
                let index = self.next;
                self.next += 1;
                let id = call.id.unwrap_or_else(|| call_id(&self.response_id, self.calls));
                self.calls += 1;
                out.push(Event::BlockStart {
                    index,
                    block: BlockKind::ToolCall { id, name: call.name.unwrap_or_default() },
                });
                let json = call.args.as_ref().map_or_else(|| "{}".to_owned(), to_json_string);
                out.push(Event::ToolArgumentsDelta { index, json });
                out.push(Event::BlockStop { index });
            } else if let Some(text) = part.text.filter(|text| !text.is_empty()) {
                let index = self.block(Open::Text, out);
                out.push(Event::TextDelta { index, text });
            }
        }
        // The chunk with the finish reason ends the reply (its usage is the final one).
        if let Some(reason) = candidate.finish_reason {
            let stop = stop_from(&reason, self.calls > 0);
            self.end(stop, out);
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<Event>) {
        if self.done {
            return;
        }
        if !self.started {
            self.started = true;
            out.push(Event::Start {
                id: String::new(),
                model: String::new(),
                usage: Usage::default(),
            });
        }
        // A stream cut before a finish reason did not finish.
        self.end(StopReason::Other("incomplete".to_owned()), out);
    }
}

/// What a block of the encoded stream holds.
#[derive(Debug)]
enum Block {
    Text,
    Thinking,
    /// A tool call, its arguments gathered until it is complete.
    Call {
        id: String,
        name: String,
        arguments: String,
    },
}

/// Writes a Gemini client's stream.
#[derive(Debug, Default)]
pub(super) struct Encoder {
    id: String,
    model: String,
    blocks: Vec<(usize, Block)>,
    done: bool,
}

impl Encoder {
    /// Appends one chunk holding `parts` (already JSON) and, at the end, the finish.
    fn chunk(&self, out: &mut Vec<u8>, parts: impl FnOnce(&mut Vec<u8>)) {
        out.extend_from_slice(br#"data: {"candidates":[{"content":{"role":"model","parts":["#);
        parts(out);
        out.extend_from_slice(br#"]},"index":0}]"#);
        self.trailer(out);
    }

    fn trailer(&self, out: &mut Vec<u8>) {
        if !self.model.is_empty() {
            out.extend_from_slice(br#","modelVersion":"#);
            write_json(out, &self.model);
        }
        if !self.id.is_empty() {
            out.extend_from_slice(br#","responseId":"#);
            write_json(out, &self.id);
        }
        out.extend_from_slice(b"}\n\n");
    }

    fn block(&mut self, index: usize) -> Option<&mut Block> {
        self.blocks.iter_mut().rev().find(|(at, _)| *at == index).map(|(_, block)| block)
    }

    /// Writes a complete tool call as one `functionCall` part.
    fn call(&self, id: &str, name: &str, arguments: &str, out: &mut Vec<u8>) {
        self.chunk(out, |out| {
            out.extend_from_slice(br#"{"functionCall":{"id":"#);
            write_json(out, id);
            out.extend_from_slice(br#","name":"#);
            write_json(out, name);
            out.extend_from_slice(br#","args":"#);
            match super::encode::arguments_object(arguments) {
                Some(args) => write_json(out, &args),
                // Arguments that are not a JSON object are kept as they came, never
                // replaced by `{}`: under a key that says what they are.
                None => {
                    out.extend_from_slice(br#"{"_raw_arguments":"#);
                    write_json(out, arguments);
                    out.push(b'}');
                }
            }
            out.extend_from_slice(b"}}");
        });
    }
}

impl StreamEncoder for Encoder {
    fn encode(&mut self, event: &Event, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        match event {
            Event::Start { id, model, .. } => {
                self.id.clone_from(id);
                self.model.clone_from(model);
            }
            Event::BlockStart { index, block } => {
                let block = match block {
                    BlockKind::Text => Block::Text,
                    // Redacted reasoning has no Gemini form: its block writes nothing.
                    BlockKind::Thinking | BlockKind::RedactedThinking { .. } => Block::Thinking,
                    BlockKind::ToolCall { id, name } => {
                        Block::Call { id: id.clone(), name: name.clone(), arguments: String::new() }
                    }
                };
                self.blocks.push((*index, block));
            }
            Event::TextDelta { text, .. } => self.chunk(out, |out| {
                out.extend_from_slice(br#"{"text":"#);
                write_json(out, text);
                out.push(b'}');
            }),
            Event::ThinkingDelta { text, .. } => self.chunk(out, |out| {
                out.extend_from_slice(br#"{"text":"#);
                write_json(out, text);
                out.extend_from_slice(br#","thought":true}"#);
            }),
            Event::SignatureDelta { signature, .. } => self.chunk(out, |out| {
                out.extend_from_slice(br#"{"text":"","thought":true,"thoughtSignature":"#);
                write_json(out, signature);
                out.push(b'}');
            }),
            Event::ToolArgumentsDelta { index, json } => match self.block(*index) {
                Some(Block::Call { arguments, .. }) => arguments.push_str(json),
                // Arguments for a call never opened: a call with no name, held the same way.
                _ => self.blocks.push((
                    *index,
                    Block::Call {
                        id: format!("call_{index}"),
                        name: String::new(),
                        arguments: json.clone(),
                    },
                )),
            },
            Event::BlockStop { index } => {
                if let Some(at) = self.blocks.iter().rposition(|(open, _)| open == index) {
                    let (_, block) = self.blocks.remove(at);
                    if let Block::Call { id, name, arguments } = block {
                        self.call(&id, &name, &arguments, out);
                    }
                }
            }
            Event::Error(error) => {
                out.extend_from_slice(b"data: ");
                write_json(out, &OutErrorBody::new(error));
                out.extend_from_slice(b"\n\n");
                self.done = true;
            }
            Event::Finish { stop, usage, .. } => {
                // Calls still open are complete now.
                for (_, block) in std::mem::take(&mut self.blocks) {
                    if let Block::Call { id, name, arguments } = block {
                        self.call(&id, &name, &arguments, out);
                    }
                }
                // The finishing chunk carries an empty text part, as Google's does: the
                // SDKs' `chunk.text` is then "" rather than nothing.
                out.extend_from_slice(
                    br#"data: {"candidates":[{"content":{"role":"model","parts":[{"text":""}]},"finishReason":"#,
                );
                write_json(out, stop_name(stop));
                let _ = write!(out, r#","index":0}}],"usageMetadata":"#);
                write_json(out, &OutUsage::from_ir(usage));
                self.trailer(out);
                self.done = true;
            }
        }
    }

    fn finish(&mut self, _out: &mut Vec<u8>) {}
}
