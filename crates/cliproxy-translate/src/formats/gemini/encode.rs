//! Gemini `generateContent` bodies as written for a provider, and the parts replies
//! share with them.

use std::borrow::Cow;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::Format;
use crate::error::{Error, Result};
use crate::ir::{Image, OutputFormat, Part, Reasoning, Request, Role, ToolChoice, ToolResultPart};
use crate::schema;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OutRequest<'a> {
    contents: Vec<OutContent<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_instruction: Option<OutSystem<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<OutTools<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_config: Option<OutToolConfig<'a>>,
    #[serde(skip_serializing_if = "OutGenerationConfig::is_empty")]
    generation_config: OutGenerationConfig<'a>,
}

#[derive(Serialize)]
pub(super) struct OutContent<'a> {
    pub(super) role: &'static str,
    pub(super) parts: Vec<OutPart<'a>>,
}

#[derive(Serialize)]
struct OutSystem<'a> {
    parts: Vec<OutPart<'a>>,
}

/// One part as written: exactly one of its data fields is set.
#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub(super) struct OutPart<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) text: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(super) thought: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) inline_data: Option<OutBlob<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) file_data: Option<OutFile<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) function_call: Option<OutCall<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) function_response: Option<OutFunctionResponse<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) thought_signature: Option<Cow<'a, str>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct OutBlob<'a> {
    mime_type: &'a str,
    data: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct OutFile<'a> {
    mime_type: &'a str,
    file_uri: &'a str,
}

#[derive(Serialize)]
pub(super) struct OutCall<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) id: Option<&'a str>,
    pub(super) name: &'a str,
    pub(super) args: Value,
}

#[derive(Serialize)]
pub(super) struct OutFunctionResponse<'a> {
    name: &'a str,
    response: Value,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OutTools<'a> {
    function_declarations: Vec<OutDeclaration<'a>>,
}

#[derive(Serialize)]
struct OutDeclaration<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<Value>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OutToolConfig<'a> {
    function_calling_config: OutCallingConfig<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OutCallingConfig<'a> {
    mode: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    allowed_function_names: Option<[&'a str; 1]>,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct OutGenerationConfig<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_k: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_output_tokens: Option<u64>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop_sequences: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    presence_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    frequency_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_mime_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_schema: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking_config: Option<OutThinkingConfig>,
}

impl OutGenerationConfig<'_> {
    fn is_empty(&self) -> bool {
        self.temperature.is_none()
            && self.top_p.is_none()
            && self.top_k.is_none()
            && self.max_output_tokens.is_none()
            && self.stop_sequences.is_empty()
            && self.presence_penalty.is_none()
            && self.frequency_penalty.is_none()
            && self.seed.is_none()
            && self.response_mime_type.is_none()
            && self.thinking_config.is_none()
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OutThinkingConfig {
    thinking_budget: u64,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    include_thoughts: bool,
}

/// Google's documented signature for a function call whose history has none (a turn of
/// another provider): it tells Gemini 3 not to validate the missing reasoning.
pub(super) const SKIP_SIGNATURE: &str = "skip_thought_signature_validator";

/// Writes a `generateContent` body for a Gemini provider.
pub(super) fn encode(request: &Request) -> Result<Vec<u8>> {
    if let Some((name, _)) = request.unmapped.first() {
        return Err(Error::unsupported(name.clone(), Format::Gemini));
    }
    let system_instruction = (!request.system.is_empty()).then(|| OutSystem {
        parts: request
            .system
            .iter()
            .map(|part| OutPart { text: Some(&part.text), ..OutPart::default() })
            .collect(),
    });
    // The name of each call, for the results that answer it.
    let mut names: Vec<(&str, &str)> = Vec::new();
    let mut contents: Vec<OutContent<'_>> = Vec::with_capacity(request.messages.len());
    for (i, message) in request.messages.iter().enumerate() {
        let mut parts = Vec::with_capacity(message.parts.len());
        let mut signature: Option<&str> = None;
        let mut signed_call = false;
        let mut first_call = None;
        for (j, part) in message.parts.iter().enumerate() {
            let path = || format!("messages[{i}].content[{j}]");
            let mut out = match part {
                Part::Thinking(thinking) => {
                    if thinking.origin.is_some_and(|origin| origin != Format::Gemini)
                        || thinking.redacted.is_some()
                    {
                        continue;
                    }
                    if thinking.text.is_empty() {
                        // A signature of its own: it belongs to the next part.
                        signature = thinking.signature.as_deref().or(signature);
                        continue;
                    }
                    OutPart {
                        text: Some(&thinking.text),
                        thought: true,
                        thought_signature: thinking.signature.as_deref().map(Cow::Borrowed),
                        ..OutPart::default()
                    }
                }
                Part::ToolCall(call) => {
                    names.push((&call.id, &call.name));
                    first_call.get_or_insert(parts.len());
                    signed_call |= signature.is_some();
                    OutPart {
                        function_call: Some(OutCall {
                            id: None,
                            name: &call.name,
                            args: arguments_object(&call.arguments).ok_or_else(|| {
                                Error::invalid(format!("{}.arguments", path()), "not a JSON object")
                            })?,
                        }),
                        ..OutPart::default()
                    }
                }
                Part::ToolResult(result) => {
                    let name = match &result.name {
                        Some(name) => name.as_str(),
                        None => names
                            .iter()
                            .rev()
                            .find(|(id, _)| *id == result.call_id)
                            .map(|(_, name)| *name)
                            .ok_or_else(|| {
                                Error::invalid(
                                    path(),
                                    format!(
                                        "answers tool call {} which is not in the conversation",
                                        result.call_id
                                    ),
                                )
                            })?,
                    };
                    let mut text = String::new();
                    for piece in &result.content {
                        if let ToolResultPart::Text(piece) = piece {
                            if !text.is_empty() {
                                text.push('\n');
                            }
                            text.push_str(piece);
                        }
                    }
                    let key = if result.is_error { "error" } else { "output" };
                    let mut response = Map::with_capacity(1);
                    response.insert(key.to_owned(), Value::String(text));
                    parts.push(OutPart {
                        function_response: Some(OutFunctionResponse {
                            name,
                            response: Value::Object(response),
                        }),
                        thought_signature: signature.take().map(Cow::Borrowed),
                        ..OutPart::default()
                    });
                    // Images of a result follow it as parts of the same turn.
                    for piece in &result.content {
                        if let ToolResultPart::Image(image) = piece {
                            parts.push(image_part(image));
                        }
                    }
                    continue;
                }
                Part::Text(text) => OutPart { text: Some(text), ..OutPart::default() },
                Part::Image(image) => image_part(image),
            };
            if out.thought_signature.is_none() {
                out.thought_signature = signature.take().map(Cow::Borrowed);
            }
            parts.push(out);
        }
        if let Some(signature) = signature {
            parts.push(OutPart {
                text: Some(""),
                thought_signature: Some(Cow::Borrowed(signature)),
                ..OutPart::default()
            });
        }
        if message.role == Role::Assistant
            && !signed_call
            && let Some(first) = first_call.and_then(|at| parts.get_mut(at))
            && first.thought_signature.is_none()
        {
            first.thought_signature = Some(Cow::Borrowed(SKIP_SIGNATURE));
        }
        if parts.is_empty() {
            continue;
        }
        let role = match message.role {
            Role::User => "user",
            Role::Assistant => "model",
        };
        // Consecutive turns of one role (a tool result and the client's next words, kept
        // apart by another format) are one Gemini turn.
        match contents.last_mut() {
            Some(last) if last.role == role => last.parts.extend(parts),
            _ => contents.push(OutContent { role, parts }),
        }
    }
    let mut declarations = Vec::with_capacity(request.tools.len());
    for tool in &request.tools {
        let reduced = schema::reduce_for_gemini(
            &tool.parameters,
            &format!("tool `{}` parameters", tool.name),
        )?;
        // A function without parameters is declared without a schema: Gemini refuses an
        // object schema with no properties.
        let empty = reduced.get("properties").and_then(Value::as_object).is_none_or(Map::is_empty)
            && reduced.get("anyOf").is_none();
        declarations.push(OutDeclaration {
            name: &tool.name,
            description: tool.description.as_deref(),
            parameters: (!empty).then_some(reduced),
        });
    }
    let tool_config = if declarations.is_empty() {
        None
    } else {
        request.tool_choice.as_ref().map(|choice| OutToolConfig {
            function_calling_config: match choice {
                ToolChoice::Auto => OutCallingConfig { mode: "AUTO", allowed_function_names: None },
                ToolChoice::None => OutCallingConfig { mode: "NONE", allowed_function_names: None },
                ToolChoice::Required => {
                    OutCallingConfig { mode: "ANY", allowed_function_names: None }
                }
                ToolChoice::Named(name) => {
                    OutCallingConfig { mode: "ANY", allowed_function_names: Some([name.as_str()]) }
                }
            },
        })
    };
    let (response_mime_type, response_schema) = match &request.output {
        None => (None, None),
        Some(OutputFormat::JsonObject) => (Some("application/json"), None),
        Some(OutputFormat::JsonSchema { schema, .. }) => {
            (Some("application/json"), Some(schema::reduce_for_gemini(schema, "response_format")?))
        }
    };
    let thinking_config = request.reasoning.map(|reasoning| match reasoning {
        Reasoning::Off => OutThinkingConfig { thinking_budget: 0, include_thoughts: false },
        Reasoning::Budget(budget) => {
            OutThinkingConfig { thinking_budget: budget, include_thoughts: true }
        }
        Reasoning::Effort(effort) => {
            OutThinkingConfig { thinking_budget: effort.budget(), include_thoughts: true }
        }
    });
    let out = OutRequest {
        contents,
        system_instruction,
        tools: if declarations.is_empty() {
            Vec::new()
        } else {
            vec![OutTools { function_declarations: declarations }]
        },
        tool_config,
        generation_config: OutGenerationConfig {
            temperature: request.sampling.temperature,
            top_p: request.sampling.top_p,
            top_k: request.sampling.top_k,
            max_output_tokens: request.max_tokens,
            stop_sequences: &request.stop,
            presence_penalty: request.sampling.presence_penalty,
            frequency_penalty: request.sampling.frequency_penalty,
            seed: request.sampling.seed,
            response_mime_type,
            response_schema,
            thinking_config,
        },
    };
    serde_json::to_vec(&out).map_err(|error| Error::invalid("request", error.to_string()))
}

/// An image as a part: inline bytes, or a file by address (with its media type, which
/// Gemini requires: guessed from the address's extension when the client gave none).
pub(super) fn image_part(image: &Image) -> OutPart<'_> {
    match image {
        Image::Base64 { media_type, data } => OutPart {
            inline_data: Some(OutBlob { mime_type: media_type, data }),
            ..OutPart::default()
        },
        Image::Url { url, media_type } => OutPart {
            file_data: Some(OutFile {
                mime_type: media_type.as_deref().unwrap_or_else(|| guess_media_type(url)),
                file_uri: url,
            }),
            ..OutPart::default()
        },
    }
}

fn guess_media_type(url: &str) -> &'static str {
    let path = url.split(['?', '#']).next().unwrap_or(url).to_ascii_lowercase();
    match path.rsplit_once('.').map(|(_, extension)| extension) {
        Some("png") => "image/png",
        Some("webp") => "image/webp",
        Some("gif") => "image/gif",
        Some("heic") => "image/heic",
        Some("heif") => "image/heif",
        _ => "image/jpeg",
    }
}

/// Tool-call arguments as the object Gemini carries: `None` when they are not a JSON object
/// (never silently `{}`); empty text means no arguments.
pub(super) fn arguments_object(arguments: &str) -> Option<Value> {
    if arguments.trim().is_empty() {
        return Some(Value::Object(serde_json::Map::new()));
    }
    serde_json::from_str::<Value>(arguments).ok().filter(Value::is_object)
}
