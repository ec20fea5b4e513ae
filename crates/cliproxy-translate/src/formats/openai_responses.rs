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
//! presence/frequency penalties (the Responses API has none of them).
//!
//! Own reasoning signatures carry the reasoning item's id (`<id>.<encrypted_content>`): the
//! Responses API wants the id back with the encrypted content.

mod stream;

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
        Box::new(stream::EventEncoder::default())
    }
}

// ---------------------------------------------------------------------------------------
// Requests, as a client sends them.

#[derive(Deserialize)]
struct WireRequest {
    model: String,
    #[serde(default)]
    instructions: Option<String>,
    #[serde(default)]
    input: Option<WireInput>,
    #[serde(default)]
    tools: Option<Vec<WireTool>>,
    #[serde(default)]
    tool_choice: Option<WireToolChoice>,
    #[serde(default)]
    parallel_tool_calls: Option<bool>,
    #[serde(default)]
    max_output_tokens: Option<u64>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    reasoning: Option<WireReasoning>,
    #[serde(default)]
    text: Option<WireText>,
    #[serde(default)]
    stream: Option<bool>,
    // Fields that change the reply and that no other format can say (a JSON null is the
    // same as absent).
    #[serde(default)]
    previous_response_id: Option<Value>,
    #[serde(default)]
    conversation: Option<Value>,
    #[serde(default)]
    prompt: Option<Value>,
    #[serde(default)]
    background: Option<Value>,
    #[serde(default)]
    max_tool_calls: Option<Value>,
    #[serde(default)]
    top_logprobs: Option<Value>,
}

#[derive(Deserialize)]
#[serde(untagged, expecting = "a string or an array of input items")]
enum WireInput {
    Text(String),
    Items(Vec<WireItem>),
}

/// An input or output item; which fields it has depends on its `type`.
#[derive(Deserialize)]
pub(super) struct WireItem {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    content: Option<WireContent>,
    #[serde(default)]
    call_id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
    #[serde(default)]
    output: Option<WireContent>,
    #[serde(default)]
    summary: Option<Vec<WireSummary>>,
    #[serde(default)]
    encrypted_content: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged, expecting = "a string or an array of content parts")]
enum WireContent {
    Text(String),
    Parts(Vec<WirePart>),
}

#[derive(Deserialize)]
struct WirePart {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
    #[serde(default)]
    image_url: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct WireSummary {
    #[serde(default)]
    text: String,
}

#[derive(Deserialize)]
struct WireTool {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    parameters: Option<Value>,
    #[serde(default)]
    strict: Option<bool>,
}

#[derive(Deserialize)]
#[serde(untagged, expecting = "`none`, `auto`, `required` or a tool choice object")]
enum WireToolChoice {
    Mode(String),
    Object {
        #[serde(rename = "type")]
        kind: String,
        #[serde(default)]
        name: Option<String>,
    },
}

#[derive(Deserialize)]
struct WireReasoning {
    #[serde(default)]
    effort: Option<String>,
}

#[derive(Deserialize)]
struct WireText {
    #[serde(default)]
    format: Option<WireTextFormat>,
}

#[derive(Deserialize)]
struct WireTextFormat {
    #[serde(rename = "type")]
    kind: String,
    #[serde(flatten)]
    schema: WireJsonSchema,
}

fn locate_request(value: &Value) -> Option<(String, String)> {
    let object = value.as_object()?;
    locate_in_array(object, "", "input", |item, path| {
        let fields = item.as_object()?;
        locate_in_array(fields, path, "content", culprit::<WirePart>)
            .or_else(|| locate_in_array(fields, path, "output", culprit::<WirePart>))
            .or_else(|| locate_in_array(fields, path, "summary", culprit::<WireSummary>))
            .or_else(|| culprit::<WireItem>(item, path))
    })
    .or_else(|| locate_in_array(object, "", "tools", culprit::<WireTool>))
    .or_else(|| culprit::<WireRequest>(value, ""))
}

/// The signature kept for a reasoning item of OpenAI's: its id and encrypted content.
pub(super) fn pack_signature(id: Option<&str>, encrypted: &str) -> String {
    format!("{}.{encrypted}", id.unwrap_or_default())
}

/// The id and the encrypted content of an own signature ([`pack_signature`]).
fn unpack_signature(signature: &str) -> (Option<&str>, &str) {
    match signature.split_once('.') {
        Some((id, encrypted)) => (Some(id).filter(|id| !id.is_empty()), encrypted),
        None => (None, signature),
    }
}

/// The thinking part of a reasoning item. `client` says whether a client sent it (its
/// signature may be one this gateway wrapped) or a provider (it is OpenAI's own).
pub(super) fn reasoning_part(item: WireItem, client: bool) -> Thinking {
    let text = summary_text(item.summary.unwrap_or_default());
    let (origin, signature) = match item.encrypted_content {
        None => (Format::OpenAiResponses, None),
        Some(encrypted) => {
            let (origin, inner) = if client {
                unwrap_signature(Format::OpenAiResponses, &encrypted)
            } else {
                (Format::OpenAiResponses, encrypted.as_str())
            };
            let signature = if origin == Format::OpenAiResponses {
                pack_signature(item.id.as_deref(), inner)
            } else {
                inner.to_owned()
            };
            (origin, Some(signature))
        }
    };
    Thinking { text, signature, redacted: None, origin: Some(origin) }
}

fn summary_text(summary: Vec<WireSummary>) -> String {
    let mut text = String::new();
    for part in summary {
        if !text.is_empty() {
            text.push_str("\n\n");
        }
        text.push_str(&part.text);
    }
    text
}

impl WireRequest {
    fn into_ir(self) -> Result<Request> {
        let mut request = Request {
            model: self.model,
            max_tokens: self.max_output_tokens,
            sampling: Sampling {
                temperature: self.temperature,
                top_p: self.top_p,
                ..Sampling::default()
            },
            stream: self.stream.unwrap_or(false),
            parallel_tool_calls: self.parallel_tool_calls,
            ..Request::default()
        };
        if let Some(text) = self.instructions.filter(|text| !text.is_empty()) {
            request.system.push(SystemPart { developer: false, text });
        }
        match self.input {
            None => {}
            Some(WireInput::Text(text)) => {
                request.messages.push(Message { role: Role::User, parts: vec![Part::Text(text)] });
            }
            Some(WireInput::Items(items)) => {
                for (i, item) in items.into_iter().enumerate() {
                    item_into_ir(item, i, &mut request)?;
                }
            }
        }
        for (i, tool) in self.tools.unwrap_or_default().into_iter().enumerate() {
            if tool.kind != "function" {
                request.unmapped.push((format!("tools[{i}].type"), Value::from(tool.kind)));
                continue;
            }
            let name =
                tool.name.ok_or_else(|| Error::invalid(format!("tools[{i}].name"), "missing"))?;
            request.tools.push(Tool {
                name,
                description: tool.description,
                parameters: tool.parameters.unwrap_or_else(empty_parameters),
                strict: tool.strict,
            });
        }
        request.tool_choice = match self.tool_choice {
            None => None,
            Some(WireToolChoice::Mode(mode)) => Some(tool_choice_mode(&mode, "tool_choice")?),
            Some(WireToolChoice::Object { kind, name }) => match (kind.as_str(), name) {
                ("function", Some(name)) => Some(ToolChoice::Named(name)),
                ("function", None) => return Err(Error::invalid("tool_choice.name", "missing")),
                (kind, _) => {
                    request.unmapped.push(("tool_choice.type".to_owned(), Value::from(kind)));
                    None
                }
            },
        };
        if let Some(effort) = self.reasoning.and_then(|reasoning| reasoning.effort) {
            request.reasoning = Some(shared::parse_effort(&effort, "reasoning.effort")?);
        }
        request.output = match self.text.and_then(|text| text.format) {
            None => None,
            Some(format) => match format.kind.as_str() {
                "text" => None,
                "json_object" => Some(OutputFormat::JsonObject),
                "json_schema" => Some(json_schema(format.schema)),
                other => {
                    return Err(Error::invalid(
                        "text.format.type",
                        format!("unknown format `{other}`"),
                    ));
                }
            },
        };
        let unmapped = [
            ("previous_response_id", self.previous_response_id),
            ("conversation", self.conversation),
            ("prompt", self.prompt),
            ("background", self.background.filter(|on| on.as_bool() != Some(false))),
            ("max_tool_calls", self.max_tool_calls),
            ("top_logprobs", self.top_logprobs.filter(|count| count.as_u64() != Some(0))),
        ];
        for (name, value) in unmapped {
            if let Some(value) = value {
                request.unmapped.push((name.to_owned(), value));
            }
        }
        Ok(request)
    }
}

/// Adds a part to the conversation: to the last turn when it is the same side's, else to a
/// new turn.
fn push_part(request: &mut Request, role: Role, part: Part) {
    match request.messages.last_mut() {
        Some(last) if last.role == role => last.parts.push(part),
        _ => request.messages.push(Message { role, parts: vec![part] }),
    }
}

fn item_into_ir(item: WireItem, i: usize, request: &mut Request) -> Result<()> {
    let kind = item.kind.as_deref().unwrap_or("message");
    match kind {
        "message" => {
            let role = item.role.as_deref().unwrap_or_default();
            let path = format!("input[{i}].content");
            let content = item.content.ok_or_else(|| Error::invalid(&path, "missing"))?;
            match role {
                "system" | "developer" => {
                    let mut text = String::new();
                    for part in content_parts(content, &path, request)? {
                        if let Part::Text(piece) = part {
                            text.push_str(&piece);
                        }
                    }
                    request.system.push(SystemPart { developer: role == "developer", text });
                }
                "user" => {
                    for part in content_parts(content, &path, request)? {
                        push_part(request, Role::User, part);
                    }
                }
                "assistant" => {
                    for part in content_parts(content, &path, request)? {
                        push_part(request, Role::Assistant, part);
                    }
                }
                other => {
                    return Err(Error::invalid(
                        format!("input[{i}].role"),
                        format!("unknown role `{other}`"),
                    ));
                }
            }
        }
        "function_call" => {
            let missing = |field: &str| Error::invalid(format!("input[{i}].{field}"), "missing");
            let call = ToolCall {
                id: item.call_id.ok_or_else(|| missing("call_id"))?,
                name: item.name.ok_or_else(|| missing("name"))?,
                arguments: item.arguments.unwrap_or_else(|| "{}".to_owned()),
            };
            push_part(request, Role::Assistant, Part::ToolCall(call));
        }
        "function_call_output" => {
            let path = format!("input[{i}].output");
            let call_id = item
                .call_id
                .ok_or_else(|| Error::invalid(format!("input[{i}].call_id"), "missing"))?;
            let output = item.output.ok_or_else(|| Error::invalid(&path, "missing"))?;
            let content = content_parts(output, &path, request)?
                .into_iter()
                .filter_map(|part| match part {
                    Part::Text(text) => Some(ToolResultPart::Text(text)),
                    Part::Image(image) => Some(ToolResultPart::Image(image)),
                    _ => None,
                })
                .collect();
            let result = ToolResult { call_id, name: None, content, is_error: false };
            push_part(request, Role::User, Part::ToolResult(result));
        }
        "reasoning" => {
            push_part(request, Role::Assistant, Part::Thinking(reasoning_part(item, true)));
        }
        other => request.unmapped.push((format!("input[{i}].type"), Value::from(other))),
    }
    Ok(())
}

/// The parts of a message's content (or a tool output's); content types no other format can
/// say go to [`Request::unmapped`].
fn content_parts(content: WireContent, path: &str, request: &mut Request) -> Result<Vec<Part>> {
    let parts = match content {
        WireContent::Text(text) => return Ok(vec![Part::Text(text)]),
        WireContent::Parts(parts) => parts,
    };
    let mut out = Vec::with_capacity(parts.len());
    for (j, part) in parts.into_iter().enumerate() {
        match part.kind.as_str() {
            "input_text" | "output_text" | "text" => {
                let text = part
                    .text
                    .ok_or_else(|| Error::invalid(format!("{path}[{j}].text"), "missing"))?;
                out.push(Part::Text(text));
            }
            "refusal" => out.push(Part::Text(part.refusal.unwrap_or_default())),
            "input_image" => match part.image_url {
                Some(url) => out.push(Part::Image(shared::image_from_url(url))),
                // An image by `file_id` lives in OpenAI's file store: no other provider can
                // read it.
                None => request.unmapped.push((format!("{path}[{j}].file_id"), Value::Null)),
            },
            other => request.unmapped.push((format!("{path}[{j}].type"), Value::from(other))),
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Requests, as a provider takes them.

#[derive(Serialize)]
struct OutRequest<'a> {
    model: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    instructions: Option<String>,
    input: Vec<OutInput<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_output_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<OutTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parallel_tool_calls: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning: Option<OutReasoning>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<OutTextConfig>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    include: Vec<&'static str>,
    store: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum OutInput<'a> {
    Message { role: &'static str, content: Vec<OutInputPart<'a>> },
    FunctionCall { call_id: &'a str, name: &'a str, arguments: &'a str },
    FunctionCallOutput { call_id: &'a str, output: OutOutput<'a> },
    Reasoning { id: Cow<'a, str>, summary: Vec<OutSummary<'a>>, encrypted_content: &'a str },
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum OutInputPart<'a> {
    InputText { text: &'a str },
    InputImage { image_url: Cow<'a, str> },
    OutputText { text: &'a str },
}

#[derive(Serialize)]
#[serde(untagged)]
enum OutOutput<'a> {
    Text(Cow<'a, str>),
    Parts(Vec<OutInputPart<'a>>),
}

#[derive(Serialize)]
pub(super) struct OutSummary<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'a str,
}

impl<'a> OutSummary<'a> {
    /// The summary of a reasoning item: one part, or none when there is no text.
    pub(super) fn of(text: &'a str) -> Vec<Self> {
        if text.is_empty() { Vec::new() } else { vec![Self { kind: "summary_text", text }] }
    }
}

#[derive(Serialize)]
struct OutTool<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    parameters: &'a Value,
    strict: bool,
}

#[derive(Serialize)]
struct OutReasoning {
    effort: &'static str,
}

#[derive(Serialize)]
struct OutTextConfig {
    format: Value,
}

fn encode_request(request: &Request) -> Result<Vec<u8>> {
    let target = Format::OpenAiResponses;
    refuse_unmapped(request, target)?;
    let sampling = &request.sampling;
    let refused = [
        ("stop", !request.stop.is_empty()),
        ("top_k", sampling.top_k.is_some()),
        ("seed", sampling.seed.is_some()),
        ("presence_penalty", sampling.presence_penalty.is_some()),
        ("frequency_penalty", sampling.frequency_penalty.is_some()),
    ];
    if let Some((field, _)) = refused.into_iter().find(|(_, present)| *present) {
        return Err(Error::unsupported(field, target));
    }
    let instructions = match request.system.as_slice() {
        [] => None,
        parts => Some(parts.iter().map(|part| part.text.as_str()).collect::<Vec<_>>().join("\n\n")),
    };
    let mut input = Vec::with_capacity(request.messages.len());
    for (turn, message) in request.messages.iter().enumerate() {
        push_turn(&mut input, turn, message);
    }
    let has_tools = !request.tools.is_empty();
    let effort = shared::effort_name(request.reasoning);
    let out = OutRequest {
        model: &request.model,
        instructions,
        input,
        max_output_tokens: request.max_tokens,
        temperature: sampling.temperature,
        top_p: sampling.top_p,
        tools: request
            .tools
            .iter()
            .map(|tool| OutTool {
                kind: "function",
                name: &tool.name,
                description: tool.description.as_deref(),
                parameters: &tool.parameters,
                strict: tool.strict.unwrap_or(false),
            })
            .collect(),
        tool_choice: request.tool_choice.as_ref().filter(|_| has_tools).map(
            |choice| match choice {
                ToolChoice::Auto => Value::from("auto"),
                ToolChoice::None => Value::from("none"),
                ToolChoice::Required => Value::from("required"),
                ToolChoice::Named(name) => serde_json::json!({"type": "function", "name": name}),
            },
        ),
        parallel_tool_calls: request.parallel_tool_calls.filter(|_| has_tools),
        reasoning: effort.map(|effort| OutReasoning { effort }),
        text: request.output.as_ref().map(|output| OutTextConfig {
            format: match output {
                OutputFormat::JsonObject => serde_json::json!({"type": "json_object"}),
                OutputFormat::JsonSchema { name, schema, strict } => {
                    let mut format =
                        serde_json::json!({"type": "json_schema", "name": name, "schema": schema});
                    if let (Some(strict), Some(object)) = (strict, format.as_object_mut()) {
                        object.insert("strict".to_owned(), Value::from(*strict));
                    }
                    format
                }
            },
        }),
        include: if effort.is_some() { vec!["reasoning.encrypted_content"] } else { Vec::new() },
        store: false,
        stream: request.stream,
    };
    serde_json::to_vec(&out).map_err(|error| Error::invalid("request", error.to_string()))
}

/// The items of one turn, in the turn's order: runs of text and images are a message, each
/// call, result and reasoning an item of its own.
fn push_turn<'a>(input: &mut Vec<OutInput<'a>>, turn: usize, message: &'a Message) {
    let (role, user) = match message.role {
        Role::User => ("user", true),
        Role::Assistant => ("assistant", false),
    };
    let mut run: Vec<OutInputPart<'a>> = Vec::new();
    let flush = |input: &mut Vec<OutInput<'a>>, run: &mut Vec<OutInputPart<'a>>| {
        if !run.is_empty() {
            input.push(OutInput::Message { role, content: std::mem::take(run) });
        }
    };
    for (i, part) in message.parts.iter().enumerate() {
        match part {
            Part::Text(text) if user => run.push(OutInputPart::InputText { text }),
            Part::Text(text) => run.push(OutInputPart::OutputText { text }),
            Part::Image(image) => {
                run.push(OutInputPart::InputImage { image_url: shared::image_to_url(image) })
            }
            Part::ToolCall(call) => {
                flush(input, &mut run);
                input.push(OutInput::FunctionCall {
                    call_id: &call.id,
                    name: &call.name,
                    arguments: &call.arguments,
                });
            }
            Part::ToolResult(result) => {
                flush(input, &mut run);
                input.push(OutInput::FunctionCallOutput {
                    call_id: &result.call_id,
                    output: tool_output(&result.content),
                });
            }
            // Only OpenAI's own reasoning, with its encrypted content, can be sent back;
            // another provider's is dropped (its signature means nothing to OpenAI).
            Part::Thinking(thinking) => {
                if let (Some(Format::OpenAiResponses), Some(signature)) =
                    (thinking.origin, &thinking.signature)
                {
                    flush(input, &mut run);
                    let (id, encrypted) = unpack_signature(signature);
                    input.push(OutInput::Reasoning {
                        id: id.map_or_else(|| format!("rs_{turn}_{i}").into(), Cow::Borrowed),
                        summary: OutSummary::of(&thinking.text),
                        encrypted_content: encrypted,
                    });
                }
            }
        }
    }
    flush(input, &mut run);
}

/// A tool result's output: its text, or text and images as input parts.
fn tool_output(content: &[ToolResultPart]) -> OutOutput<'_> {
    match content {
        [] => OutOutput::Text("".into()),
        [ToolResultPart::Text(text)] => OutOutput::Text(text.as_str().into()),
        parts if parts.iter().all(|part| matches!(part, ToolResultPart::Text(_))) => {
            let texts: Vec<&str> = parts
                .iter()
                .filter_map(|part| match part {
                    ToolResultPart::Text(text) => Some(text.as_str()),
                    ToolResultPart::Image(_) => None,
                })
                .collect();
            OutOutput::Text(texts.join("\n").into())
        }
        parts => OutOutput::Parts(
            parts
                .iter()
                .map(|part| match part {
                    ToolResultPart::Text(text) => OutInputPart::InputText { text },
                    ToolResultPart::Image(image) => {
                        OutInputPart::InputImage { image_url: shared::image_to_url(image) }
                    }
                })
                .collect(),
        ),
    }
}

// ---------------------------------------------------------------------------------------
// Whole replies.

#[derive(Deserialize)]
pub(super) struct WireResponse {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    incomplete_details: Option<WireIncomplete>,
    #[serde(default)]
    output: Option<Vec<WireItem>>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<shared::WireError>,
}

#[derive(Deserialize)]
struct WireIncomplete {
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Deserialize, Default)]
pub(super) struct WireUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    input_tokens_details: Option<WireInputDetails>,
    #[serde(default)]
    output_tokens_details: Option<WireOutputDetails>,
}

#[derive(Deserialize, Default)]
struct WireInputDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

#[derive(Deserialize, Default)]
struct WireOutputDetails {
    #[serde(default)]
    reasoning_tokens: Option<u64>,
}

impl WireUsage {
    pub(super) fn to_ir(&self) -> Usage {
        Usage {
            input_tokens: self.input_tokens.unwrap_or(0),
            output_tokens: self.output_tokens.unwrap_or(0),
            cache_read_tokens: self
                .input_tokens_details
                .as_ref()
                .and_then(|d| d.cached_tokens)
                .unwrap_or(0),
            cache_write_tokens: 0,
            reasoning_tokens: self
                .output_tokens_details
                .as_ref()
                .and_then(|d| d.reasoning_tokens)
                .unwrap_or(0),
        }
    }
}

impl WireResponse {
    /// Why the reply ended: its status, and what it holds.
    pub(super) fn stop(&self, tool_calls: bool, refused: bool) -> StopReason {
        let reason = self.incomplete_details.as_ref().and_then(|details| details.reason.as_deref());
        match (self.status.as_deref(), reason) {
            (Some("incomplete"), Some("max_output_tokens")) => StopReason::MaxTokens,
            (Some("incomplete"), Some("content_filter")) => StopReason::ContentFilter,
            (Some("incomplete"), Some(other)) => StopReason::Other(other.to_owned()),
            (Some("failed"), _) => StopReason::Other("failed".to_owned()),
            _ if refused => StopReason::ContentFilter,
            _ if tool_calls => StopReason::ToolUse,
            _ => StopReason::EndTurn,
        }
    }

    pub(super) fn usage(&self) -> Usage {
        self.usage.as_ref().map(WireUsage::to_ir).unwrap_or_default()
    }

    /// The provider's error of a failed reply.
    pub(super) fn take_error(&mut self) -> ApiError {
        self.error.take().unwrap_or_default().into_api_error(None)
    }

    pub(super) fn id_and_model(&mut self) -> (Option<String>, Option<String>) {
        (self.id.take(), self.model.take())
    }

    fn into_ir(mut self) -> Response {
        let mut parts = Vec::new();
        let mut refused = false;
        for item in self.output.take().unwrap_or_default() {
            match item.kind.as_deref() {
                Some("message") => match item.content {
                    Some(WireContent::Text(text)) => parts.push(Part::Text(text)),
                    Some(WireContent::Parts(content)) => {
                        for part in content {
                            if let Some(text) = part.text {
                                parts.push(Part::Text(text));
                            } else if let Some(refusal) = part.refusal {
                                refused = true;
                                parts.push(Part::Text(refusal));
                            }
                        }
                    }
                    None => {}
                },
                Some("function_call") => parts.push(Part::ToolCall(ToolCall {
                    id: item.call_id.or(item.id).unwrap_or_default(),
                    name: item.name.unwrap_or_default(),
                    arguments: item.arguments.unwrap_or_else(|| "{}".to_owned()),
                })),
                Some("reasoning") => parts.push(Part::Thinking(reasoning_part(item, false))),
                // Built-in tools' items (web search, file search…) were refused in the
                // request; a provider that used one on its own has nothing to translate.
                _ => {}
            }
        }
        let tool_calls = parts.iter().any(|part| matches!(part, Part::ToolCall(_)));
        let stop = self.stop(tool_calls, refused);
        let usage = self.usage();
        Response {
            id: self.id.unwrap_or_default(),
            model: self.model.unwrap_or_default(),
            parts,
            stop,
            stop_sequence: None,
            usage,
        }
    }
}

/// The reply's id, or one in OpenAI's shape when the provider gave none.
pub(super) fn response_id(id: &str) -> Cow<'_, str> {
    if id.is_empty() { format!("resp_{:x}", shared::now()).into() } else { id.into() }
}

/// One output item of a reply for a client, as the stream builds it up and the whole reply
/// holds it.
#[derive(Debug)]
pub(super) struct Item {
    pub(super) id: String,
    pub(super) kind: ItemKind,
    /// The text, the reasoning summary or the call's arguments so far.
    pub(super) text: String,
    pub(super) done: bool,
}

#[derive(Debug)]
pub(super) enum ItemKind {
    Message,
    Reasoning { encrypted: Option<String> },
    FunctionCall { call_id: String, name: String },
}

/// The output items of one reply.
#[derive(Debug, Default)]
pub(super) struct Items(pub(super) Vec<Item>);

/// How a reply for a client ended.
pub(super) enum Ending<'a> {
    Running,
    Stop(&'a StopReason),
    Failed(&'a ApiError),
}

impl Items {
    /// The id of the output item at `index` of `kind`: unique within the reply.
    pub(super) fn item_id(prefix: &str, response: &str, index: usize) -> String {
        format!("{prefix}_{index}_{}", response.trim_start_matches("resp_"))
    }

    /// The client's form of a thinking part's signature: its own, or wrapped with its
    /// origin; `None` when there is none to give (or it came from an unknown format).
    pub(super) fn client_signature(
        thinking_origin: Option<Format>,
        signature: &str,
    ) -> Option<(Option<String>, String)> {
        match thinking_origin? {
            Format::OpenAiResponses => {
                let (id, encrypted) = unpack_signature(signature);
                Some((id.map(str::to_owned), encrypted.to_owned()))
            }
            origin => Some((None, wrap_signature(Format::OpenAiResponses, origin, signature))),
        }
    }

    fn from_parts(response_id: &str, parts: &[Part]) -> Self {
        let mut items = Self::default();
        for part in parts {
            let index = items.0.len();
            let item = match part {
                Part::Text(text) => Item {
                    id: Self::item_id("msg", response_id, index),
                    kind: ItemKind::Message,
                    text: text.clone(),
                    done: true,
                },
                Part::ToolCall(call) => Item {
                    id: Self::item_id("fc", response_id, index),
                    kind: ItemKind::FunctionCall {
                        call_id: call.id.clone(),
                        name: call.name.clone(),
                    },
                    text: call.arguments.clone(),
                    done: true,
                },
                // Anthropic's redacted reasoning has no form a Responses client can show or
                // send back: it is dropped.
                Part::Thinking(thinking) if thinking.redacted.is_none() => {
                    let signature = thinking
                        .signature
                        .as_deref()
                        .and_then(|signature| Self::client_signature(thinking.origin, signature));
                    let (id, encrypted) = match signature {
                        Some((id, encrypted)) => (id, Some(encrypted)),
                        None => (None, None),
                    };
                    Item {
                        id: id.unwrap_or_else(|| Self::item_id("rs", response_id, index)),
                        kind: ItemKind::Reasoning { encrypted },
                        text: thinking.text.clone(),
                        done: true,
                    }
                }
                Part::Thinking(_) | Part::Image(_) | Part::ToolResult(_) => continue,
            };
            items.0.push(item);
        }
        items
    }

    /// The reply object (`response`) with these items.
    pub(super) fn response<'a>(
        &'a self,
        id: &'a str,
        model: &'a str,
        created_at: u64,
        ending: Ending<'a>,
        usage: Option<&Usage>,
    ) -> OutResponse<'a> {
        let (status, incomplete_details, error) = match ending {
            Ending::Running => ("in_progress", None, None),
            Ending::Stop(StopReason::MaxTokens) => {
                ("incomplete", Some(OutIncomplete { reason: "max_output_tokens" }), None)
            }
            Ending::Stop(StopReason::ContentFilter) => {
                ("incomplete", Some(OutIncomplete { reason: "content_filter" }), None)
            }
            Ending::Stop(_) => ("completed", None, None),
            Ending::Failed(error) => {
                let (_, code) = shared::error_type(error.kind);
                (
                    "failed",
                    None,
                    Some(OutFailure {
                        code: code.unwrap_or("server_error"),
                        message: &error.message,
                    }),
                )
            }
        };
        OutResponse {
            id,
            object: "response",
            created_at,
            status,
            error,
            incomplete_details,
            model,
            output: self.0.iter().map(Item::out).collect(),
            parallel_tool_calls: true,
            tool_choice: "auto",
            tools: [],
            usage: usage.map(OutUsage::new),
        }
    }
}

impl Item {
    /// The item as the reply (or an `output_item` event) shows it.
    pub(super) fn out(&self) -> OutItem<'_> {
        let status = if self.done { "completed" } else { "in_progress" };
        match &self.kind {
            ItemKind::Message => OutItem::Message {
                id: &self.id,
                status,
                role: "assistant",
                content: if self.done { vec![OutText::new(&self.text)] } else { Vec::new() },
            },
            ItemKind::Reasoning { encrypted } => OutItem::Reasoning {
                id: &self.id,
                summary: if self.done { OutSummary::of(&self.text) } else { Vec::new() },
                encrypted_content: encrypted.as_deref(),
            },
            ItemKind::FunctionCall { call_id, name } => OutItem::FunctionCall {
                id: &self.id,
                status,
                call_id,
                name,
                arguments: if self.done { &self.text } else { "" },
            },
        }
    }
}

#[derive(Serialize)]
pub(super) struct OutResponse<'a> {
    id: &'a str,
    object: &'static str,
    created_at: u64,
    status: &'static str,
    error: Option<OutFailure<'a>>,
    incomplete_details: Option<OutIncomplete>,
    model: &'a str,
    output: Vec<OutItem<'a>>,
    parallel_tool_calls: bool,
    tool_choice: &'static str,
    tools: [(); 0],
    usage: Option<OutUsage>,
}

#[derive(Serialize)]
struct OutFailure<'a> {
    code: &'static str,
    message: &'a str,
}

#[derive(Serialize)]
struct OutIncomplete {
    reason: &'static str,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum OutItem<'a> {
    Message {
        id: &'a str,
        status: &'static str,
        role: &'static str,
        content: Vec<OutText<'a>>,
    },
    Reasoning {
        id: &'a str,
        summary: Vec<OutSummary<'a>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        encrypted_content: Option<&'a str>,
    },
    FunctionCall {
        id: &'a str,
        status: &'static str,
        call_id: &'a str,
        name: &'a str,
        arguments: &'a str,
    },
}

#[derive(Serialize)]
pub(super) struct OutText<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'a str,
    annotations: [(); 0],
}

impl<'a> OutText<'a> {
    pub(super) const fn new(text: &'a str) -> Self {
        Self { kind: "output_text", text, annotations: [] }
    }
}

/// Usage as the Responses API reports it. Anthropic's cache writes have no figure here: they
/// stay counted in `input_tokens`.
#[derive(Serialize)]
pub(super) struct OutUsage {
    input_tokens: u64,
    input_tokens_details: OutInputDetails,
    output_tokens: u64,
    output_tokens_details: OutOutputDetails,
    total_tokens: u64,
}

#[derive(Serialize)]
struct OutInputDetails {
    cached_tokens: u64,
}

#[derive(Serialize)]
struct OutOutputDetails {
    reasoning_tokens: u64,
}

impl OutUsage {
    const fn new(usage: &Usage) -> Self {
        Self {
            input_tokens: usage.input_tokens,
            input_tokens_details: OutInputDetails { cached_tokens: usage.cache_read_tokens },
            output_tokens: usage.output_tokens,
            output_tokens_details: OutOutputDetails { reasoning_tokens: usage.reasoning_tokens },
            total_tokens: usage.input_tokens.saturating_add(usage.output_tokens),
        }
    }
}

#[cfg(test)]
mod tests;
