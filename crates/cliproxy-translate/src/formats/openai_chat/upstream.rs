//! Chat Completions requests as a provider takes them, written from the common form.

use super::*;

#[derive(Serialize)]
pub(super) struct OutRequest<'a> {
    pub(super) model: &'a str,
    pub(super) messages: Vec<OutMessage<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) max_completion_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) presence_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) frequency_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) seed: Option<i64>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub(super) stop: &'a [String],
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) tools: Vec<OutTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) tool_choice: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) parallel_tool_calls: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) response_format: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) reasoning_effort: Option<&'static str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(super) stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) stream_options: Option<StreamOptions>,
}

#[derive(Serialize)]
pub(super) struct StreamOptions {
    pub(super) include_usage: bool,
}

#[derive(Serialize)]
pub(super) struct OutMessage<'a> {
    pub(super) role: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) content: Option<OutContent<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) tool_calls: Vec<OutToolCall<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) tool_call_id: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(untagged)]
pub(super) enum OutContent<'a> {
    Text(&'a str),
    Parts(Vec<OutPart<'a>>),
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum OutPart<'a> {
    Text { text: &'a str },
    ImageUrl { image_url: OutImageUrl<'a> },
}

#[derive(Serialize)]
pub(super) struct OutImageUrl<'a> {
    pub(super) url: std::borrow::Cow<'a, str>,
}

#[derive(Serialize)]
pub(super) struct OutToolCall<'a> {
    pub(super) id: &'a str,
    #[serde(rename = "type")]
    pub(super) kind: &'static str,
    pub(super) function: OutFunctionCall<'a>,
}

#[derive(Serialize)]
pub(super) struct OutFunctionCall<'a> {
    pub(super) name: &'a str,
    pub(super) arguments: &'a str,
}

#[derive(Serialize)]
pub(super) struct OutTool<'a> {
    #[serde(rename = "type")]
    pub(super) kind: &'static str,
    pub(super) function: OutFunction<'a>,
}

#[derive(Serialize)]
pub(super) struct OutFunction<'a> {
    pub(super) name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) description: Option<&'a str>,
    pub(super) parameters: &'a Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) strict: Option<bool>,
}

/// The first field of another format that this one cannot say.
pub(in crate::formats) fn refuse_unmapped(request: &Request, target: Format) -> Result<()> {
    match request.unmapped.first() {
        Some((field, _)) => Err(Error::unsupported(field.clone(), target)),
        None => Ok(()),
    }
}

pub(super) fn encode_request(request: &Request) -> Result<Vec<u8>> {
    refuse_unmapped(request, Format::OpenAiChat)?;
    if request.sampling.top_k.is_some() {
        return Err(Error::unsupported("top_k", Format::OpenAiChat));
    }
    let mut messages = Vec::with_capacity(request.system.len() + request.messages.len());
    for part in &request.system {
        let role = if part.developer { "developer" } else { "system" };
        messages.push(OutMessage {
            role,
            content: Some(OutContent::Text(&part.text)),
            tool_calls: Vec::new(),
            tool_call_id: None,
        });
    }
    for message in &request.messages {
        match message.role {
            Role::User => push_user(&mut messages, &message.parts),
            Role::Assistant => push_assistant(&mut messages, &message.parts),
        }
    }
    let has_tools = !request.tools.is_empty();
    let out = OutRequest {
        model: &request.model,
        messages,
        max_completion_tokens: request.max_tokens,
        temperature: request.sampling.temperature,
        top_p: request.sampling.top_p,
        presence_penalty: request.sampling.presence_penalty,
        frequency_penalty: request.sampling.frequency_penalty,
        seed: request.sampling.seed,
        stop: &request.stop,
        tools: request
            .tools
            .iter()
            .map(|tool| OutTool {
                kind: "function",
                function: OutFunction {
                    name: &tool.name,
                    description: tool.description.as_deref(),
                    parameters: &tool.parameters,
                    strict: tool.strict,
                },
            })
            .collect(),
        // OpenAI refuses a tool choice or the parallel flag without tools.
        tool_choice: request.tool_choice.as_ref().filter(|_| has_tools).map(
            |choice| match choice {
                ToolChoice::Auto => Value::from("auto"),
                ToolChoice::None => Value::from("none"),
                ToolChoice::Required => Value::from("required"),
                ToolChoice::Named(name) => {
                    serde_json::json!({"type": "function", "function": {"name": name}})
                }
            },
        ),
        parallel_tool_calls: request.parallel_tool_calls.filter(|_| has_tools),
        response_format: request.output.as_ref().map(|output| match output {
            OutputFormat::JsonObject => serde_json::json!({"type": "json_object"}),
            OutputFormat::JsonSchema { name, schema, strict } => {
                let mut inner = serde_json::json!({"name": name, "schema": schema});
                if let (Some(strict), Some(object)) = (strict, inner.as_object_mut()) {
                    object.insert("strict".to_owned(), Value::from(*strict));
                }
                serde_json::json!({"type": "json_schema", "json_schema": inner})
            }
        }),
        reasoning_effort: shared::effort_name(request.reasoning),
        stream: request.stream,
        stream_options: request.stream.then_some(StreamOptions { include_usage: true }),
    };
    serde_json::to_vec(&out).map_err(|error| Error::invalid("request", error.to_string()))
}

pub(super) fn push_user<'a>(messages: &mut Vec<OutMessage<'a>>, parts: &'a [Part]) {
    // Tool results go first, one `tool` message each; what else the turn holds (and the
    // images of the results, which a `tool` message cannot hold) follows as a user message.
    let mut rest = Vec::new();
    let mut result_images = Vec::new();
    for part in parts {
        match part {
            Part::ToolResult(result) => {
                let texts: Vec<&str> = result
                    .content
                    .iter()
                    .filter_map(|piece| match piece {
                        ToolResultPart::Text(text) => Some(text.as_str()),
                        ToolResultPart::Image(image) => {
                            result_images.push(image);
                            None
                        }
                    })
                    .collect();
                let content = match texts.as_slice() {
                    [] => OutContent::Text(""),
                    [one] => OutContent::Text(one),
                    many => {
                        OutContent::Parts(many.iter().map(|text| OutPart::Text { text }).collect())
                    }
                };
                messages.push(OutMessage {
                    role: "tool",
                    content: Some(content),
                    tool_calls: Vec::new(),
                    tool_call_id: Some(&result.call_id),
                });
            }
            Part::Text(text) => rest.push(OutPart::Text { text }),
            Part::Image(image) => rest.push(image_part(image)),
            // A user turn holds no calls or reasoning; a decoder that put some there is
            // read as leniently as the providers read it: they are left out.
            Part::ToolCall(_) | Part::Thinking(_) => {}
        }
    }
    if rest.is_empty() && result_images.is_empty() {
        return;
    }
    let mut content: Vec<OutPart<'a>> = result_images.into_iter().map(image_part).collect();
    content.append(&mut rest);
    let content = match content.as_slice() {
        [OutPart::Text { text }] => OutContent::Text(text),
        _ => OutContent::Parts(content),
    };
    messages.push(OutMessage {
        role: "user",
        content: Some(content),
        tool_calls: Vec::new(),
        tool_call_id: None,
    });
}

pub(super) fn image_part(image: &Image) -> OutPart<'_> {
    OutPart::ImageUrl { image_url: OutImageUrl { url: shared::image_to_url(image) } }
}

pub(super) fn push_assistant<'a>(messages: &mut Vec<OutMessage<'a>>, parts: &'a [Part]) {
    let mut texts = Vec::new();
    let mut tool_calls = Vec::new();
    for part in parts {
        match part {
            Part::Text(text) => texts.push(text.as_str()),
            Part::ToolCall(call) => tool_calls.push(OutToolCall {
                id: &call.id,
                kind: "function",
                function: OutFunctionCall { name: &call.name, arguments: &call.arguments },
            }),
            // The Chat API takes no reasoning back: thinking is dropped (the models reason
            // afresh each turn).
            Part::Thinking(_) | Part::Image(_) | Part::ToolResult(_) => {}
        }
    }
    let content = match texts.as_slice() {
        [] => None,
        [one] => Some(OutContent::Text(one)),
        many => Some(OutContent::Parts(many.iter().map(|text| OutPart::Text { text }).collect())),
    };
    // An assistant message with neither text nor calls (thinking only) is refused by the
    // API: it is left out.
    if content.is_none() && tool_calls.is_empty() {
        return;
    }
    messages.push(OutMessage { role: "assistant", content, tool_calls, tool_call_id: None });
}
