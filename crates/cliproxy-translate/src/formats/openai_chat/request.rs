//! Chat Completions requests as a client sends them, read into the common form.

use super::*;

#[derive(Deserialize)]
pub(super) struct WireRequest {
    pub(super) model: String,
    pub(super) messages: Vec<WireMessage>,
    #[serde(default)]
    pub(super) tools: Option<Vec<WireTool>>,
    #[serde(default)]
    pub(super) tool_choice: Option<WireToolChoice>,
    #[serde(default)]
    pub(super) parallel_tool_calls: Option<bool>,
    #[serde(default)]
    pub(super) max_tokens: Option<u64>,
    #[serde(default)]
    pub(super) max_completion_tokens: Option<u64>,
    #[serde(default)]
    pub(super) temperature: Option<f64>,
    #[serde(default)]
    pub(super) top_p: Option<f64>,
    #[serde(default)]
    pub(super) presence_penalty: Option<f64>,
    #[serde(default)]
    pub(super) frequency_penalty: Option<f64>,
    #[serde(default)]
    pub(super) seed: Option<i64>,
    #[serde(default)]
    pub(super) stop: Option<StringOrList>,
    #[serde(default)]
    pub(super) stream: Option<bool>,
    #[serde(default)]
    pub(super) response_format: Option<WireResponseFormat>,
    #[serde(default)]
    pub(super) reasoning_effort: Option<String>,
    // Fields that change the reply and that no other format can say: kept by name so that
    // another format's encoder refuses them (a JSON null is the same as absent).
    #[serde(default)]
    pub(super) n: Option<Value>,
    #[serde(default)]
    pub(super) logprobs: Option<Value>,
    #[serde(default)]
    pub(super) top_logprobs: Option<Value>,
    #[serde(default)]
    pub(super) logit_bias: Option<Value>,
    #[serde(default)]
    pub(super) audio: Option<Value>,
    #[serde(default)]
    pub(super) modalities: Option<Value>,
    #[serde(default)]
    pub(super) prediction: Option<Value>,
    #[serde(default)]
    pub(super) web_search_options: Option<Value>,
    #[serde(default)]
    pub(super) functions: Option<Value>,
    #[serde(default)]
    pub(super) function_call: Option<Value>,
}

#[derive(Deserialize)]
pub(super) struct WireMessage {
    pub(super) role: String,
    #[serde(default)]
    pub(super) content: Option<WireContent>,
    #[serde(default)]
    pub(super) tool_calls: Option<Vec<WireToolCall>>,
    #[serde(default)]
    pub(super) tool_call_id: Option<String>,
    #[serde(default)]
    pub(super) reasoning_content: Option<String>,
    #[serde(default)]
    pub(super) refusal: Option<String>,
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
    pub(super) image_url: Option<WireImageUrl>,
}

#[derive(Deserialize)]
#[serde(untagged, expecting = "an object with a url, or a url")]
pub(super) enum WireImageUrl {
    Object { url: String },
    Url(String),
}

#[derive(Deserialize)]
pub(super) struct WireToolCall {
    #[serde(default)]
    pub(super) id: Option<String>,
    #[serde(default, rename = "type")]
    pub(super) kind: Option<String>,
    pub(super) function: WireFunctionCall,
}

#[derive(Deserialize)]
pub(super) struct WireFunctionCall {
    pub(super) name: String,
    #[serde(default)]
    pub(super) arguments: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct WireTool {
    #[serde(rename = "type")]
    pub(super) kind: String,
    #[serde(default)]
    pub(super) function: Option<WireFunction>,
}

#[derive(Deserialize)]
pub(super) struct WireFunction {
    pub(super) name: String,
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
        function: Option<WireNamed>,
    },
}

#[derive(Deserialize)]
pub(super) struct WireNamed {
    pub(super) name: String,
}

#[derive(Deserialize)]
#[serde(untagged, expecting = "a string or an array of strings")]
pub(super) enum StringOrList {
    One(String),
    List(Vec<String>),
}

#[derive(Deserialize)]
pub(super) struct WireResponseFormat {
    #[serde(rename = "type")]
    pub(super) kind: String,
    #[serde(default)]
    pub(super) json_schema: Option<WireJsonSchema>,
}

#[derive(Deserialize)]
pub(in crate::formats) struct WireJsonSchema {
    #[serde(default)]
    pub(in crate::formats) name: Option<String>,
    #[serde(default)]
    pub(in crate::formats) schema: Option<Value>,
    #[serde(default)]
    pub(in crate::formats) strict: Option<bool>,
}

/// The schema OpenAI assumes for a function declared without `parameters`.
pub(in crate::formats) fn empty_parameters() -> Value {
    serde_json::json!({"type": "object", "properties": {}})
}

/// Names the field of a request body that does not fit [`WireRequest`].
pub(super) fn locate_request(value: &Value) -> Option<(String, String)> {
    let object = value.as_object()?;
    locate_in_array(object, "", "messages", locate_message)
        .or_else(|| locate_in_array(object, "", "tools", culprit::<WireTool>))
        .or_else(|| culprit::<WireRequest>(value, ""))
}

pub(super) fn locate_message(value: &Value, path: &str) -> Option<(String, String)> {
    let object = value.as_object()?;
    locate_in_array(object, path, "content", |part, path| {
        // A content array's elements are parts; a string content is not an array.
        culprit::<WirePart>(part, path)
    })
    .or_else(|| locate_in_array(object, path, "tool_calls", culprit::<WireToolCall>))
    .or_else(|| culprit::<WireMessage>(value, path))
}

impl WireRequest {
    pub(super) fn into_ir(self) -> Result<Request> {
        let mut request = Request {
            model: self.model,
            max_tokens: self.max_completion_tokens.or(self.max_tokens),
            sampling: Sampling {
                temperature: self.temperature,
                top_p: self.top_p,
                top_k: None,
                presence_penalty: self.presence_penalty,
                frequency_penalty: self.frequency_penalty,
                seed: self.seed,
            },
            stream: self.stream.unwrap_or(false),
            parallel_tool_calls: self.parallel_tool_calls,
            ..Request::default()
        };
        request.stop = match self.stop {
            None => Vec::new(),
            Some(StringOrList::One(stop)) => vec![stop],
            Some(StringOrList::List(stops)) => stops,
        };
        for (i, message) in self.messages.into_iter().enumerate() {
            message.into_ir(i, &mut request)?;
        }
        for (i, tool) in self.tools.unwrap_or_default().into_iter().enumerate() {
            match (tool.kind.as_str(), tool.function) {
                ("function", Some(function)) => request.tools.push(Tool {
                    name: function.name,
                    description: function.description,
                    parameters: function.parameters.unwrap_or_else(empty_parameters),
                    strict: function.strict,
                }),
                ("function", None) => {
                    return Err(Error::invalid(format!("tools[{i}].function"), "missing"));
                }
                (kind, _) => {
                    request.unmapped.push((format!("tools[{i}].type"), Value::from(kind)));
                }
            }
        }
        request.tool_choice = match self.tool_choice {
            None => None,
            Some(WireToolChoice::Mode(mode)) => Some(tool_choice_mode(&mode, "tool_choice")?),
            Some(WireToolChoice::Object { kind, function }) => match (kind.as_str(), function) {
                ("function", Some(function)) => Some(ToolChoice::Named(function.name)),
                ("function", None) => {
                    return Err(Error::invalid("tool_choice.function", "missing"));
                }
                (kind, _) => {
                    request.unmapped.push(("tool_choice.type".to_owned(), Value::from(kind)));
                    None
                }
            },
        };
        request.output = match self.response_format {
            None => None,
            Some(format) => match format.kind.as_str() {
                "text" => None,
                "json_object" => Some(OutputFormat::JsonObject),
                "json_schema" => {
                    let schema = format
                        .json_schema
                        .ok_or_else(|| Error::invalid("response_format.json_schema", "missing"))?;
                    Some(json_schema(schema))
                }
                other => {
                    return Err(Error::invalid(
                        "response_format.type",
                        format!("unknown format `{other}`"),
                    ));
                }
            },
        };
        if let Some(effort) = self.reasoning_effort {
            request.reasoning = Some(shared::parse_effort(&effort, "reasoning_effort")?);
        }
        let unmapped = [
            ("n", self.n.filter(|n| n.as_u64() != Some(1))),
            ("logprobs", self.logprobs.filter(|on| on.as_bool() != Some(false))),
            ("top_logprobs", self.top_logprobs.filter(|count| count.as_u64() != Some(0))),
            (
                "logit_bias",
                self.logit_bias.filter(|bias| bias.as_object().is_none_or(|b| !b.is_empty())),
            ),
            ("audio", self.audio),
            ("modalities", self.modalities.filter(|m| *m != serde_json::json!(["text"]))),
            ("prediction", self.prediction),
            ("web_search_options", self.web_search_options),
            ("functions", self.functions),
            ("function_call", self.function_call),
        ];
        for (name, value) in unmapped {
            if let Some(value) = value {
                request.unmapped.push((name.to_owned(), value));
            }
        }
        Ok(request)
    }
}

/// `none`, `auto` or `required`.
pub(in crate::formats) fn tool_choice_mode(mode: &str, field: &str) -> Result<ToolChoice> {
    match mode {
        "auto" => Ok(ToolChoice::Auto),
        "none" => Ok(ToolChoice::None),
        "required" => Ok(ToolChoice::Required),
        other => Err(Error::invalid(field, format!("unknown tool choice `{other}`"))),
    }
}

pub(in crate::formats) fn json_schema(schema: WireJsonSchema) -> OutputFormat {
    OutputFormat::JsonSchema {
        name: schema.name.unwrap_or_else(|| "response".to_owned()),
        schema: schema.schema.unwrap_or_else(|| Value::Object(serde_json::Map::new())),
        strict: schema.strict,
    }
}

impl WireMessage {
    pub(super) fn into_ir(self, i: usize, request: &mut Request) -> Result<()> {
        let field = || format!("messages[{i}].content");
        match self.role.as_str() {
            "system" | "developer" => {
                let text = match self.content {
                    Some(content) => content_text(content, &field())?,
                    None => String::new(),
                };
                request.system.push(SystemPart { developer: self.role == "developer", text });
            }
            "user" => {
                let mut parts = Vec::new();
                match self.content {
                    None => return Err(Error::invalid(field(), "missing")),
                    Some(WireContent::Text(text)) => parts.push(Part::Text(text)),
                    Some(WireContent::Parts(wire)) => {
                        for (j, part) in wire.into_iter().enumerate() {
                            let path = || format!("messages[{i}].content[{j}]");
                            match (part.kind.as_str(), part.text, part.image_url) {
                                ("text", Some(text), _) => parts.push(Part::Text(text)),
                                ("image_url", _, Some(image)) => {
                                    let url = match image {
                                        WireImageUrl::Object { url } | WireImageUrl::Url(url) => {
                                            url
                                        }
                                    };
                                    parts.push(Part::Image(shared::image_from_url(url)));
                                }
                                ("text", None, _) => {
                                    return Err(Error::invalid(
                                        format!("{}.text", path()),
                                        "missing",
                                    ));
                                }
                                ("image_url", _, None) => {
                                    return Err(Error::invalid(
                                        format!("{}.image_url", path()),
                                        "missing",
                                    ));
                                }
                                (kind, _, _) => request
                                    .unmapped
                                    .push((format!("{}.type", path()), Value::from(kind))),
                            }
                        }
                    }
                }
                request.messages.push(Message { role: Role::User, parts });
            }
            "assistant" => {
                let mut parts = Vec::new();
                if let Some(reasoning) = self.reasoning_content.filter(|text| !text.is_empty()) {
                    parts.push(Part::Thinking(Thinking {
                        text: reasoning,
                        signature: None,
                        redacted: None,
                        origin: Some(Format::OpenAiChat),
                    }));
                }
                match self.content {
                    Some(WireContent::Text(text)) if !text.is_empty() => {
                        parts.push(Part::Text(text))
                    }
                    None | Some(WireContent::Text(_)) => {}
                    Some(WireContent::Parts(wire)) => {
                        for part in wire {
                            if let Some(text) = part.text.or(part.refusal) {
                                parts.push(Part::Text(text));
                            }
                        }
                    }
                }
                if let Some(refusal) = self.refusal.filter(|text| !text.is_empty()) {
                    parts.push(Part::Text(refusal));
                }
                for (j, call) in self.tool_calls.unwrap_or_default().into_iter().enumerate() {
                    if call.kind.as_deref().is_some_and(|kind| kind != "function") {
                        request.unmapped.push((
                            format!("messages[{i}].tool_calls[{j}].type"),
                            Value::from(call.kind.unwrap_or_default()),
                        ));
                        continue;
                    }
                    let id = call.id.ok_or_else(|| {
                        Error::invalid(format!("messages[{i}].tool_calls[{j}].id"), "missing")
                    })?;
                    parts.push(Part::ToolCall(ToolCall {
                        id,
                        name: call.function.name,
                        arguments: call.function.arguments.unwrap_or_else(|| "{}".to_owned()),
                    }));
                }
                request.messages.push(Message { role: Role::Assistant, parts });
            }
            "tool" => {
                let call_id = self.tool_call_id.ok_or_else(|| {
                    Error::invalid(format!("messages[{i}].tool_call_id"), "missing")
                })?;
                let text = match self.content {
                    Some(content) => content_text(content, &field())?,
                    None => String::new(),
                };
                let result = Part::ToolResult(ToolResult {
                    call_id,
                    name: None,
                    content: vec![ToolResultPart::Text(text)],
                    is_error: false,
                });
                // Consecutive tool messages answer one assistant turn: they share one user
                // turn, as Anthropic and Gemini require.
                match request.messages.last_mut() {
                    Some(last)
                        if last.role == Role::User
                            && last
                                .parts
                                .iter()
                                .all(|part| matches!(part, Part::ToolResult(_))) =>
                    {
                        last.parts.push(result);
                    }
                    _ => request.messages.push(Message { role: Role::User, parts: vec![result] }),
                }
            }
            other => {
                return Err(Error::invalid(
                    format!("messages[{i}].role"),
                    format!("unknown role `{other}`"),
                ));
            }
        }
        Ok(())
    }
}

/// The text of a content that may only hold text (system, developer and tool messages).
pub(super) fn content_text(content: WireContent, field: &str) -> Result<String> {
    match content {
        WireContent::Text(text) => Ok(text),
        WireContent::Parts(parts) => {
            let mut text = String::new();
            for (j, part) in parts.into_iter().enumerate() {
                match (part.kind.as_str(), part.text) {
                    ("text", Some(piece)) => text.push_str(&piece),
                    _ => {
                        return Err(Error::invalid(
                            format!("{field}[{j}]"),
                            "expected a text part",
                        ));
                    }
                }
            }
            Ok(text)
        }
    }
}
