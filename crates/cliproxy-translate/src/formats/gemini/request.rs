//! Gemini `generateContent` bodies as a client sends them.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::Value;

use crate::Format;
use crate::codec::unwrap_signature;
use crate::error::{Error, Result};
use crate::formats::shared::{Tag, culprit, culprit_in_list, parse, to_json_string};
use crate::ir::{
    Image, Message, OutputFormat, Part, Reasoning, Request, Role, Sampling, SystemPart, Thinking,
    Tool, ToolCall, ToolChoice, ToolResult, ToolResultPart,
};
use crate::schema;

use super::encode::SKIP_SIGNATURE;

// The wire forms, as read. Google's JSON accepts both camelCase and snake_case names; the
// aliases take the latter. Every field is optional: required ones are checked by the
// decoder, which names them by their path.

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireRequest {
    contents: Option<Vec<WireContent>>,
    #[serde(alias = "system_instruction")]
    system_instruction: Option<WireContent>,
    tools: Option<Vec<WireTool>>,
    #[serde(alias = "tool_config")]
    tool_config: Option<WireToolConfig>,
    #[serde(alias = "generation_config")]
    generation_config: Option<WireGenerationConfig>,
    #[serde(alias = "cached_content")]
    cached_content: Option<Value>,
}

#[derive(Deserialize)]
pub(super) struct WireContent {
    pub(super) role: Option<Tag>,
    pub(super) parts: Option<Vec<WirePart>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct WirePart {
    pub(super) text: Option<String>,
    pub(super) thought: Option<bool>,
    #[serde(alias = "thought_signature")]
    pub(super) thought_signature: Option<String>,
    #[serde(alias = "inline_data")]
    inline_data: Option<WireBlob>,
    #[serde(alias = "file_data")]
    file_data: Option<WireFile>,
    #[serde(alias = "function_call")]
    pub(super) function_call: Option<WireCall>,
    #[serde(alias = "function_response")]
    function_response: Option<WireFunctionResponse>,
    #[serde(alias = "executable_code")]
    executable_code: Option<Value>,
    #[serde(alias = "code_execution_result")]
    code_execution_result: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireBlob {
    #[serde(alias = "mime_type")]
    mime_type: Option<String>,
    data: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireFile {
    #[serde(alias = "mime_type")]
    mime_type: Option<String>,
    #[serde(alias = "file_uri")]
    file_uri: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct WireCall {
    pub(super) id: Option<String>,
    pub(super) name: Option<String>,
    pub(super) args: Option<Value>,
}

#[derive(Deserialize)]
struct WireFunctionResponse {
    id: Option<String>,
    name: Option<String>,
    response: Option<Value>,
}

struct WireTool {
    function_declarations: Option<Vec<WireDeclaration>>,
    /// The other tool kinds, by name (`googleSearch`, `codeExecution`, …).
    other: Vec<(String, Value)>,
}

// Read by hand: `#[serde(flatten)]` would buffer every tool, declarations and schemas
// included, before reading it again.
impl<'de> Deserialize<'de> for WireTool {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = WireTool;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a tool object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<WireTool, A::Error> {
                let mut tool = WireTool { function_declarations: None, other: Vec::new() };
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    if key == "functionDeclarations" || key == "function_declarations" {
                        tool.function_declarations = map.next_value()?;
                    } else {
                        tool.other.push((key.into_owned(), map.next_value()?));
                    }
                }
                Ok(tool)
            }
        }
        deserializer.deserialize_map(V)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireDeclaration {
    name: Option<String>,
    description: Option<String>,
    parameters: Option<Value>,
    #[serde(alias = "parameters_json_schema")]
    parameters_json_schema: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireToolConfig {
    #[serde(alias = "function_calling_config")]
    function_calling_config: Option<WireCallingConfig>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireCallingConfig {
    mode: Option<String>,
    #[serde(alias = "allowed_function_names")]
    allowed_function_names: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireGenerationConfig {
    temperature: Option<f64>,
    #[serde(alias = "top_p")]
    top_p: Option<f64>,
    #[serde(alias = "top_k")]
    top_k: Option<u64>,
    #[serde(alias = "max_output_tokens")]
    max_output_tokens: Option<u64>,
    #[serde(alias = "stop_sequences")]
    stop_sequences: Option<Vec<String>>,
    #[serde(alias = "presence_penalty")]
    presence_penalty: Option<f64>,
    #[serde(alias = "frequency_penalty")]
    frequency_penalty: Option<f64>,
    seed: Option<i64>,
    #[serde(alias = "response_mime_type")]
    response_mime_type: Option<String>,
    #[serde(alias = "response_schema")]
    response_schema: Option<Value>,
    #[serde(alias = "response_json_schema")]
    response_json_schema: Option<Value>,
    #[serde(alias = "thinking_config")]
    thinking_config: Option<WireThinkingConfig>,
    #[serde(alias = "candidate_count")]
    candidate_count: Option<u64>,
    #[serde(alias = "response_logprobs")]
    response_logprobs: Option<bool>,
    logprobs: Option<Value>,
    #[serde(alias = "response_modalities")]
    response_modalities: Option<Vec<String>>,
    #[serde(alias = "speech_config")]
    speech_config: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireThinkingConfig {
    #[serde(alias = "thinking_budget")]
    thinking_budget: Option<i64>,
    #[serde(alias = "include_thoughts")]
    include_thoughts: Option<bool>,
    #[serde(alias = "thinking_level")]
    thinking_level: Option<String>,
}

/// Names the field a malformed request gets wrong.
fn locate(value: &Value) -> Option<(String, String)> {
    let content = |content: &Value| {
        culprit_in_list::<WirePart>(content, "parts", culprit::<WirePart>)
            .or_else(|| culprit::<WireContent>(content))
    };
    let tool = |tool: &Value| {
        culprit_in_list::<WireDeclaration>(tool, "functionDeclarations", culprit::<WireDeclaration>)
    };
    culprit_in_list::<WireContent>(value, "contents", content)
        .or_else(|| culprit_in_list::<WireTool>(value, "tools", tool))
        .or_else(|| {
            let config = value.get("generationConfig")?;
            culprit::<WireGenerationConfig>(config)
                .map(|(field, problem)| (format!("generationConfig.{field}"), problem))
        })
        .or_else(|| {
            let system = value.get("systemInstruction")?;
            content(system).map(|(field, problem)| (format!("systemInstruction.{field}"), problem))
        })
        .or_else(|| culprit::<WireRequest>(value))
}

fn missing(field: impl Into<String>) -> Error {
    Error::invalid(field, "missing")
}

/// Reads a client's `generateContent` body.
pub(super) fn decode(body: &[u8]) -> Result<Request> {
    let wire: WireRequest = parse(body, locate)?;
    let mut request = Request::default();
    if let Some(system) = wire.system_instruction {
        for (j, part) in system.parts.unwrap_or_default().into_iter().enumerate() {
            let text = part.text.ok_or_else(|| {
                Error::invalid(format!("systemInstruction.parts[{j}]"), "expected a text part")
            })?;
            request.system.push(SystemPart { developer: false, text });
        }
    }
    let contents = wire.contents.ok_or_else(|| missing("contents"))?;
    let mut calls = Calls::default();
    request.messages.reserve(contents.len());
    for (i, content) in contents.into_iter().enumerate() {
        let role = match content.role.as_deref() {
            // A single-turn request may leave the role out; `function` is the old role of
            // function responses.
            None | Some("user" | "function") => Role::User,
            Some("model") => Role::Assistant,
            Some(_) => {
                return Err(Error::invalid(
                    format!("contents[{i}].role"),
                    "expected user or model",
                ));
            }
        };
        let wire_parts = content.parts.ok_or_else(|| missing(format!("contents[{i}].parts")))?;
        let mut parts = Vec::with_capacity(wire_parts.len());
        for (j, part) in wire_parts.into_iter().enumerate() {
            // The path is only written out when something is wrong with the part.
            let path = || format!("contents[{i}].parts[{j}]");
            decode_part(part, &path, &mut calls, &mut parts, &mut request.unmapped)?;
        }
        request.messages.push(Message { role, parts });
    }
    for (i, tool) in wire.tools.unwrap_or_default().into_iter().enumerate() {
        for (j, declaration) in
            tool.function_declarations.unwrap_or_default().into_iter().enumerate()
        {
            let path = || format!("tools[{i}].functionDeclarations[{j}]");
            let parameters = match (declaration.parameters_json_schema, declaration.parameters) {
                (Some(json_schema), _) => json_schema,
                (None, Some(parameters)) => schema::from_gemini(parameters),
                (None, None) => serde_json::json!({"type": "object", "properties": {}}),
            };
            request.tools.push(Tool {
                name: declaration.name.ok_or_else(|| missing(format!("{}.name", path())))?,
                description: declaration.description,
                parameters,
                strict: None,
            });
        }
        for (kind, value) in tool.other {
            request.unmapped.push((format!("tools[{i}].{kind}"), value));
        }
    }
    if let Some(config) = wire.tool_config.and_then(|config| config.function_calling_config) {
        let names = config.allowed_function_names.unwrap_or_default();
        let choice = match (config.mode.as_deref(), names.as_slice()) {
            (Some("ANY"), [one]) => Some(ToolChoice::Named(one.clone())),
            (_, [_, ..]) => {
                request.unmapped.push((
                    "toolConfig.functionCallingConfig.allowedFunctionNames".to_owned(),
                    Value::from(names.clone()),
                ));
                None
            }
            (Some("ANY"), []) => Some(ToolChoice::Required),
            (Some("NONE"), []) => Some(ToolChoice::None),
            // `VALIDATED` lets the model choose, like `AUTO`, with calls checked against
            // their schema, which the other formats do on their own.
            (Some("AUTO" | "VALIDATED" | "MODE_UNSPECIFIED") | None, []) => Some(ToolChoice::Auto),
            (Some(_), []) => {
                return Err(Error::invalid(
                    "toolConfig.functionCallingConfig.mode",
                    "expected AUTO, ANY, NONE or VALIDATED",
                ));
            }
        };
        request.tool_choice = choice;
    }
    if let Some(config) = wire.generation_config {
        decode_generation_config(config, &mut request)?;
    }
    if let Some(cached) = wire.cached_content {
        request.unmapped.push(("cachedContent".to_owned(), cached));
    }
    Ok(request)
}

fn decode_generation_config(config: WireGenerationConfig, request: &mut Request) -> Result<()> {
    request.sampling = Sampling {
        temperature: config.temperature,
        top_p: config.top_p,
        top_k: config.top_k,
        presence_penalty: config.presence_penalty,
        frequency_penalty: config.frequency_penalty,
        seed: config.seed,
    };
    request.max_tokens = config.max_output_tokens;
    request.stop = config.stop_sequences.unwrap_or_default();
    let unmapped = &mut request.unmapped;
    let mut refuse =
        |name: &str, value: Value| unmapped.push((format!("generationConfig.{name}"), value));
    if let Some(count) = config.candidate_count.filter(|count| *count > 1) {
        refuse("candidateCount", Value::from(count));
    }
    if config.response_logprobs == Some(true) {
        refuse("responseLogprobs", Value::Bool(true));
    }
    if let Some(logprobs) = config.logprobs {
        refuse("logprobs", logprobs);
    }
    if let Some(modalities) = config.response_modalities
        && modalities.iter().any(|modality| !modality.eq_ignore_ascii_case("text"))
    {
        refuse("responseModalities", Value::from(modalities));
    }
    if let Some(speech) = config.speech_config {
        refuse("speechConfig", speech);
    }
    let schema = match (config.response_json_schema, config.response_schema) {
        (Some(json_schema), _) => Some(json_schema),
        (None, Some(schema)) => Some(schema::from_gemini(schema)),
        (None, None) => None,
    };
    match (config.response_mime_type.as_deref(), schema) {
        (Some("application/json"), Some(schema)) => {
            request.output = Some(OutputFormat::JsonSchema {
                name: "response".to_owned(),
                schema,
                strict: None,
            });
        }
        (Some("application/json"), None) => request.output = Some(OutputFormat::JsonObject),
        (None | Some("text/plain"), _) => {}
        (Some(other), _) => refuse("responseMimeType", Value::String(other.to_owned())),
    }
    if let Some(thinking) = config.thinking_config {
        request.reasoning = match (thinking.thinking_budget, thinking.thinking_level.as_deref()) {
            (Some(0), _) => Some(Reasoning::Off),
            (Some(budget), _) if budget > 0 => Some(Reasoning::Budget(budget.unsigned_abs())),
            // -1 asks the model to choose its budget: a middle effort says the same elsewhere.
            (Some(_), _) => Some(Reasoning::Effort(crate::ir::Effort::Medium)),
            (None, Some(level)) => {
                Some(Reasoning::Effort(match level.to_ascii_lowercase().as_str() {
                    "minimal" => crate::ir::Effort::Minimal,
                    "low" => crate::ir::Effort::Low,
                    "medium" => crate::ir::Effort::Medium,
                    "high" => crate::ir::Effort::High,
                    _ => {
                        return Err(Error::invalid(
                            "generationConfig.thinkingConfig.thinkingLevel",
                            "expected minimal, low, medium or high",
                        ));
                    }
                }))
            }
            (None, None) if thinking.include_thoughts == Some(true) => {
                Some(Reasoning::Effort(crate::ir::Effort::Medium))
            }
            (None, None) => None,
        };
    }
    Ok(())
}

/// The calls of a conversation so far, to give id-less calls an id and match results.
#[derive(Default)]
struct Calls {
    /// Every call in order: its id, name, and whether a result answered it.
    calls: Vec<(String, String, bool)>,
}

impl Calls {
    fn call(&mut self, id: Option<String>, name: &str) -> String {
        let id = id.unwrap_or_else(|| format!("call_{}", self.calls.len()));
        self.calls.push((id.clone(), name.to_owned(), false));
        id
    }

    /// The id of the call a result answers: its own id, else the earliest unanswered call
    /// of its name.
    fn result(&mut self, id: Option<String>, name: &str) -> Option<String> {
        let slot = match &id {
            Some(id) => self.calls.iter_mut().find(|(call, _, _)| call == id),
            None => self.calls.iter_mut().find(|(_, call, answered)| call == name && !answered),
        };
        match slot {
            Some(slot) => {
                slot.2 = true;
                Some(slot.0.clone())
            }
            // A result with its own id that no call in the history carries still names its
            // call: the client kept the calls elsewhere (a cached prefix).
            None => id,
        }
    }
}

/// A thought signature the client sent: its origin (when it was wrapped) and the signature.
/// Google's placeholder is no signature: it is dropped, and the encoder writes it again
/// where it is needed.
fn signature_of(signature: Option<String>) -> (Format, Option<String>) {
    match signature.filter(|signature| !signature.is_empty() && signature != SKIP_SIGNATURE) {
        None => (Format::Gemini, None),
        Some(signature) => {
            let (origin, inner) = unwrap_signature(Format::Gemini, &signature);
            (origin, Some(inner.to_owned()))
        }
    }
}

fn decode_part(
    part: WirePart,
    path: &dyn Fn() -> String,
    calls: &mut Calls,
    parts: &mut Vec<Part>,
    unmapped: &mut Vec<(String, Value)>,
) -> Result<()> {
    let (origin, signature) = signature_of(part.thought_signature);
    if part.thought == Some(true) {
        let text = part.text.unwrap_or_default();
        // Consecutive thought parts are pieces of one thought (a streamed reply gives its
        // text in several and its signature in the last): they are one block again, so
        // that the signature covers the whole text when it goes back to its provider.
        if let Some(Part::Thinking(previous)) = parts.last_mut()
            && previous.signature.is_none()
            && previous.redacted.is_none()
            && !previous.text.is_empty()
        {
            previous.text.push_str(&text);
            previous.signature = signature;
            previous.origin = Some(origin);
            return Ok(());
        }
        parts.push(Part::Thinking(Thinking {
            text,
            signature,
            redacted: None,
            origin: Some(origin),
        }));
        return Ok(());
    }
    // A signature on any other part travels as a thinking block of its own, just before it.
    if signature.is_some() {
        parts.push(Part::Thinking(Thinking {
            text: String::new(),
            signature,
            redacted: None,
            origin: Some(origin),
        }));
    }
    if let Some(text) = part.text {
        parts.push(Part::Text(text));
    } else if let Some(blob) = part.inline_data {
        let media_type =
            blob.mime_type.ok_or_else(|| missing(format!("{}.inlineData.mimeType", path())))?;
        if !media_type.starts_with("image/") {
            unmapped.push((format!("{}.inlineData", path()), Value::String(media_type)));
            return Ok(());
        }
        let data = blob.data.ok_or_else(|| missing(format!("{}.inlineData.data", path())))?;
        parts.push(Part::Image(Image::Base64 { media_type, data }));
    } else if let Some(file) = part.file_data {
        let url = file.file_uri.ok_or_else(|| missing(format!("{}.fileData.fileUri", path())))?;
        if file.mime_type.as_deref().is_some_and(|media_type| !media_type.starts_with("image/")) {
            unmapped.push((format!("{}.fileData", path()), Value::String(url)));
            return Ok(());
        }
        parts.push(Part::Image(Image::Url { url, media_type: file.mime_type }));
    } else if let Some(call) = part.function_call {
        let name = call.name.ok_or_else(|| missing(format!("{}.functionCall.name", path())))?;
        let arguments = call.args.as_ref().map_or_else(|| "{}".to_owned(), to_json_string);
        let id = calls.call(call.id, &name);
        parts.push(Part::ToolCall(ToolCall { id, name, arguments }));
    } else if let Some(result) = part.function_response {
        let name =
            result.name.ok_or_else(|| missing(format!("{}.functionResponse.name", path())))?;
        let call_id = calls.result(result.id, &name).ok_or_else(|| {
            Error::invalid(
                format!("{}.functionResponse", path()),
                "answers no earlier functionCall",
            )
        })?;
        let (text, is_error) = unwrap_response(result.response.unwrap_or(Value::Null));
        parts.push(Part::ToolResult(ToolResult {
            call_id,
            name: Some(name),
            content: vec![ToolResultPart::Text(text)],
            is_error,
        }));
    } else if part.executable_code.is_some() || part.code_execution_result.is_some() {
        unmapped.push((path(), Value::String("code execution".to_owned())));
    }
    // A part with none of these (only a signature, or `videoMetadata`) says nothing more.
    Ok(())
}

/// A function response as text: the value of its one `output`, `content` or `result` key
/// when that is the shape, the `error` key's (a failed call), else the whole object's JSON.
fn unwrap_response(response: Value) -> (String, bool) {
    if let Value::Object(map) = &response
        && map.len() == 1
        && let Some((key, value)) = map.iter().next()
    {
        let text = match value {
            Value::String(text) => text.clone(),
            other => to_json_string(other),
        };
        match key.as_str() {
            "output" | "content" | "result" => return (text, false),
            "error" => return (text, true),
            _ => {}
        }
    }
    (to_json_string(&response), false)
}
