//! Responses requests as a provider takes them, written from the common form.

use super::*;

#[derive(Serialize)]
pub(super) struct OutRequest<'a> {
    pub(super) model: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) instructions: Option<String>,
    pub(super) input: Vec<OutInput<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) max_output_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) top_p: Option<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) tools: Vec<OutTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) tool_choice: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) parallel_tool_calls: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) reasoning: Option<OutReasoning>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) text: Option<OutTextConfig>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) include: Vec<&'static str>,
    pub(super) store: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(super) stream: bool,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum OutInput<'a> {
    Message { role: &'static str, content: Vec<OutInputPart<'a>> },
    FunctionCall { call_id: &'a str, name: &'a str, arguments: &'a str },
    FunctionCallOutput { call_id: &'a str, output: OutOutput<'a> },
    Reasoning { id: Cow<'a, str>, summary: Vec<OutSummary<'a>>, encrypted_content: &'a str },
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum OutInputPart<'a> {
    InputText { text: &'a str },
    InputImage { image_url: Cow<'a, str> },
    OutputText { text: &'a str },
}

#[derive(Serialize)]
#[serde(untagged)]
pub(super) enum OutOutput<'a> {
    Text(Cow<'a, str>),
    Parts(Vec<OutInputPart<'a>>),
}

#[derive(Serialize)]
pub(super) struct OutSummary<'a> {
    #[serde(rename = "type")]
    pub(super) kind: &'static str,
    pub(super) text: &'a str,
}

impl<'a> OutSummary<'a> {
    /// The summary of a reasoning item: one part, or none when there is no text.
    pub(super) fn of(text: &'a str) -> Vec<Self> {
        if text.is_empty() { Vec::new() } else { vec![Self { kind: "summary_text", text }] }
    }
}

#[derive(Serialize)]
pub(super) struct OutTool<'a> {
    #[serde(rename = "type")]
    pub(super) kind: &'static str,
    pub(super) name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) description: Option<&'a str>,
    pub(super) parameters: &'a Value,
    pub(super) strict: bool,
}

#[derive(Serialize)]
pub(super) struct OutReasoning {
    pub(super) effort: &'static str,
}

#[derive(Serialize)]
pub(super) struct OutTextConfig {
    pub(super) format: Value,
}

pub(super) fn encode_request(request: &Request) -> Result<Vec<u8>> {
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
pub(super) fn push_turn<'a>(input: &mut Vec<OutInput<'a>>, turn: usize, message: &'a Message) {
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
pub(super) fn tool_output(content: &[ToolResultPart]) -> OutOutput<'_> {
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
