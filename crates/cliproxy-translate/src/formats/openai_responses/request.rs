//! Responses requests as a client sends them, read into the common form.

use super::*;

#[derive(Deserialize)]
pub(super) struct WireRequest {
    pub(super) model: String,
    #[serde(default)]
    pub(super) instructions: Option<String>,
    #[serde(default)]
    pub(super) input: Option<WireInput>,
    #[serde(default)]
    pub(super) tools: Option<Vec<WireTool>>,
    #[serde(default)]
    pub(super) tool_choice: Option<WireToolChoice>,
    #[serde(default)]
    pub(super) parallel_tool_calls: Option<bool>,
    #[serde(default)]
    pub(super) max_output_tokens: Option<u64>,
    #[serde(default)]
    pub(super) temperature: Option<f64>,
    #[serde(default)]
    pub(super) top_p: Option<f64>,
    #[serde(default)]
    pub(super) reasoning: Option<WireReasoning>,
    #[serde(default)]
    pub(super) text: Option<WireText>,
    #[serde(default)]
    pub(super) stream: Option<bool>,
    // Fields that change the reply and that no other format can say (a JSON null is the
    // same as absent).
    #[serde(default)]
    pub(super) previous_response_id: Option<Value>,
    #[serde(default)]
    pub(super) conversation: Option<Value>,
    #[serde(default)]
    pub(super) prompt: Option<Value>,
    #[serde(default)]
    pub(super) background: Option<Value>,
    #[serde(default)]
    pub(super) max_tool_calls: Option<Value>,
    #[serde(default)]
    pub(super) top_logprobs: Option<Value>,
}

#[derive(Deserialize)]
#[serde(untagged, expecting = "a string or an array of input items")]
pub(super) enum WireInput {
    Text(String),
    Items(Vec<WireItem>),
}

/// An input or output item; which fields it has depends on its `type`.
#[derive(Deserialize)]
pub(super) struct WireItem {
    #[serde(default, rename = "type")]
    pub(super) kind: Option<String>,
    #[serde(default)]
    pub(super) id: Option<String>,
    #[serde(default)]
    pub(super) role: Option<String>,
    #[serde(default)]
    pub(super) content: Option<WireContent>,
    #[serde(default)]
    pub(super) call_id: Option<String>,
    #[serde(default)]
    pub(super) name: Option<String>,
    #[serde(default)]
    pub(super) arguments: Option<String>,
    #[serde(default)]
    pub(super) output: Option<WireContent>,
    #[serde(default)]
    pub(super) summary: Option<Vec<WireSummary>>,
    #[serde(default)]
    pub(super) encrypted_content: Option<String>,
}

pub(super) type WireContent = shared::TextOrParts<WirePart>;

#[derive(Deserialize)]
pub(super) struct WirePart {
    #[serde(rename = "type")]
    pub(super) kind: String,
    #[serde(default)]
    pub(super) text: Option<String>,
    #[serde(default)]
    pub(super) refusal: Option<String>,
    #[serde(default)]
    pub(super) image_url: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct WireSummary {
    #[serde(default)]
    pub(super) text: String,
}

#[derive(Deserialize)]
pub(super) struct WireTool {
    #[serde(rename = "type")]
    pub(super) kind: String,
    #[serde(default)]
    pub(super) name: Option<String>,
    #[serde(default)]
    pub(super) description: Option<String>,
    #[serde(default)]
    pub(super) parameters: Option<Value>,
    #[serde(default)]
    pub(super) strict: Option<bool>,
}

#[derive(Deserialize)]
#[serde(untagged, expecting = "`none`, `auto`, `required` or a tool choice object")]
pub(super) enum WireToolChoice {
    Mode(String),
    Object {
        #[serde(rename = "type")]
        kind: String,
        #[serde(default)]
        name: Option<String>,
    },
}

#[derive(Deserialize)]
pub(super) struct WireReasoning {
    #[serde(default)]
    pub(super) effort: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct WireText {
    #[serde(default)]
    pub(super) format: Option<WireTextFormat>,
}

#[derive(Deserialize)]
pub(super) struct WireTextFormat {
    #[serde(rename = "type")]
    pub(super) kind: String,
    #[serde(flatten)]
    pub(super) schema: WireJsonSchema,
}

pub(super) fn locate_request(value: &Value) -> Option<(String, String)> {
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
pub(super) fn unpack_signature(signature: &str) -> (Option<&str>, &str) {
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

pub(super) fn summary_text(summary: Vec<WireSummary>) -> String {
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
    pub(super) fn into_ir(self) -> Result<Request> {
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
pub(super) fn push_part(request: &mut Request, role: Role, part: Part) {
    match request.messages.last_mut() {
        Some(last) if last.role == role => last.parts.push(part),
        _ => request.messages.push(Message { role, parts: vec![part] }),
    }
}

pub(super) fn item_into_ir(item: WireItem, i: usize, request: &mut Request) -> Result<()> {
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
pub(super) fn content_parts(
    content: WireContent,
    path: &str,
    request: &mut Request,
) -> Result<Vec<Part>> {
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
