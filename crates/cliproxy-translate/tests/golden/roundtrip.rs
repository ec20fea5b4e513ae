//! Property: a request that says only what two formats share survives A → B → A. For every
//! translated pair (A, B), a generated request is encoded as A and decoded (what a client of A
//! sends), encoded for B and decoded as B (what a provider of B receives, read back), then
//! encoded as A and decoded again; every shared field must be as generated.
//!
//! What all four formats share, and so what is generated: one system text; alternating user
//! and assistant turns (user: a text, or the results of the previous turn's calls; assistant:
//! a text, or an optional text and one to three tool calls); tools with simple object schemas;
//! `tool_choice`; temperature and top_p; the output-token limit; stop sequences (except with
//! OpenAI Responses, which has none). What one side lacks is left out or compared loosely, and
//! each such choice says why below.

use cliproxy_translate::ir::{
    Message, Part, Request, Role, Sampling, SystemPart, Tool, ToolCall, ToolChoice, ToolResult,
    ToolResultPart,
};
use cliproxy_translate::{Format, Pair};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};

/// Cases per pair: enough to reach every turn shape, small enough to keep the suite quick.
const CASES_PER_PAIR: u32 = 64;

fn text() -> impl Strategy<Value = String> {
    // Printable text with the characters JSON escapes, some non-ASCII, and a line break; never
    // empty, since an empty text part may rightly vanish on the way.
    "[a-zA-Z0-9 .,?!'\"\\\\/\n\u{e9}\u{4e16}\u{1f600}]{1,40}"
}

fn tool_name() -> impl Strategy<Value = String> {
    // The names all four APIs accept: letters, digits and underscores, a letter first.
    "[a-z][a-z0-9_]{0,15}"
}

fn tool() -> impl Strategy<Value = Tool> {
    (tool_name(), proptest::option::of(text()), proptest::collection::btree_set("[a-z]{1,8}", 0..4))
        .prop_map(|(name, description, properties)| {
            let required: Vec<&String> = properties.iter().take(1).collect();
            let properties: serde_json::Map<String, Value> = properties
                .iter()
                .map(|p| (p.clone(), json!({"type": "string", "description": format!("the {p}")})))
                .collect();
            let mut parameters = json!({"type": "object", "properties": properties});
            // An empty `required` says nothing (Gemini's schema cut drops it): left out.
            if !required.is_empty() {
                parameters["required"] = json!(required);
            }
            Tool {
                name,
                description,
                parameters,
                // OpenAI's `strict` has no counterpart elsewhere.
                strict: None,
            }
        })
}

fn arguments() -> impl Strategy<Value = String> {
    proptest::collection::btree_map(
        "[a-z]{1,8}",
        prop_oneof![text().prop_map(Value::from), any::<i32>().prop_map(Value::from)],
        0..3,
    )
    .prop_map(|map| Value::Object(map.into_iter().collect()).to_string())
}

/// One exchange: a user text and the assistant's answer, plain or with tool calls (then the
/// results, then the assistant's text).
#[derive(Debug, Clone)]
enum Exchange {
    Plain(String, String),
    Tools {
        ask: String,
        preface: Option<String>,
        calls: Vec<(usize, String)>,
        results: Vec<String>,
        answer: String,
    },
}

fn exchange() -> impl Strategy<Value = Exchange> {
    prop_oneof![
        (text(), text()).prop_map(|(ask, answer)| Exchange::Plain(ask, answer)),
        (
            text(),
            proptest::option::of(text()),
            proptest::collection::vec((0usize..3, arguments()), 1..4),
            proptest::collection::vec(text(), 3),
            text()
        )
            .prop_map(|(ask, preface, calls, results, answer)| Exchange::Tools {
                ask,
                preface,
                results: results[..calls.len()].to_vec(),
                calls,
                answer,
            }),
    ]
}

fn request() -> impl Strategy<Value = Request> {
    (
        proptest::option::of(text()),
        proptest::collection::vec(tool(), 1..4),
        proptest::collection::vec(exchange(), 0..3),
        text(),
        // None, auto, none, required, or the first tool by name.
        0u8..5,
        proptest::option::of((0u32..=100).prop_map(|t| f64::from(t) / 100.0)),
        proptest::option::of((1u32..=100).prop_map(|t| f64::from(t) / 100.0)),
        1u64..=8192,
        proptest::collection::vec("[A-Z#]{1,6}", 0..3),
    )
        .prop_map(
            |(system, tools, exchanges, last, choice, temperature, top_p, max_tokens, stop)| {
                let mut messages = Vec::new();
                let mut next_id = 0;
                let user =
                    |text: String| Message { role: Role::User, parts: vec![Part::Text(text)] };
                let assistant =
                    |text: String| Message { role: Role::Assistant, parts: vec![Part::Text(text)] };
                for exchange in exchanges {
                    match exchange {
                        Exchange::Plain(ask, answer) => {
                            messages.push(user(ask));
                            messages.push(assistant(answer));
                        }
                        Exchange::Tools { ask, preface, calls, results, answer } => {
                            messages.push(user(ask));
                            let mut parts: Vec<Part> =
                                preface.into_iter().map(Part::Text).collect();
                            let mut answers = Vec::new();
                            for ((tool, arguments), result) in calls.into_iter().zip(results) {
                                let name = tools[tool % tools.len()].name.clone();
                                let id = format!("call_{next_id}");
                                next_id += 1;
                                parts.push(Part::ToolCall(ToolCall {
                                    id: id.clone(),
                                    name: name.clone(),
                                    arguments,
                                }));
                                answers.push(Part::ToolResult(ToolResult {
                                    call_id: id,
                                    name: Some(name),
                                    content: vec![ToolResultPart::Text(result)],
                                    // OpenAI has no error flag on a tool result.
                                    is_error: false,
                                }));
                            }
                            messages.push(Message { role: Role::Assistant, parts });
                            messages.push(Message { role: Role::User, parts: answers });
                            messages.push(assistant(answer));
                        }
                    }
                }
                messages.push(user(last));
                let tool_choice = match choice {
                    1 => Some(ToolChoice::Auto),
                    2 => Some(ToolChoice::None),
                    3 => Some(ToolChoice::Required),
                    4 => tools.first().map(|tool| ToolChoice::Named(tool.name.clone())),
                    _ => None,
                };
                Request {
                    model: "m".to_owned(),
                    system: system
                        .into_iter()
                        .map(|text| SystemPart { developer: false, text })
                        .collect(),
                    messages,
                    tools,
                    tool_choice,
                    max_tokens: Some(max_tokens),
                    sampling: Sampling { temperature, top_p, ..Sampling::default() },
                    stop,
                    ..Request::default()
                }
            },
        )
}

/// Encodes `request` as `format` and decodes it back, as a client of that format would send it
/// and the gateway read it.
fn through(format: Format, request: &Request) -> Result<Request, String> {
    // The encoder is the provider side of a pair, the decoder the client side.
    let bytes = Pair::new(format, format)
        .encode_request(request)
        .map_err(|e| format!("encode as {format:?}: {e}"))?;
    let mut decoded = Pair::new(format, format).decode_request(&bytes).map_err(|e| {
        format!("decode as {format:?}: {e}; the body was {}", String::from_utf8_lossy(&bytes))
    })?;
    // Gemini carries the model in the path: the gateway fills it in.
    decoded.model.clone_from(&request.model);
    Ok(decoded)
}

/// The request as the comparison sees it: the fields one format may legitimately rewrite are
/// put in one canonical form.
fn canonical(mut request: Request) -> Request {
    // Gemini's calls have no ids (its decoder makes them up): ids are compared by the link
    // between a call and its result, numbered in order of appearance.
    let mut ids: Vec<String> = Vec::new();
    let mut rename = |id: &mut String| {
        let n = ids.iter().position(|known| known == id).unwrap_or_else(|| {
            ids.push(id.clone());
            ids.len() - 1
        });
        *id = format!("id{n}");
    };
    for message in &mut request.messages {
        // Reasoning is not generated (it is never shared: a signature is valid for its own
        // format only), but a provider's format may add some of its own on the way: Gemini's
        // encoder signs a call that has no signature with its documented placeholder, which
        // its decoder reads back as an empty thinking part.
        message.parts.retain(|part| !matches!(part, Part::Thinking(_)));
        for part in &mut message.parts {
            match part {
                Part::ToolCall(call) => {
                    rename(&mut call.id);
                    // Arguments are compared as JSON values: Anthropic and Gemini carry an
                    // object, which their codecs serialise with their own spacing.
                    call.arguments = serde_json::from_str::<Value>(&call.arguments)
                        .map_or_else(|_| call.arguments.clone(), |value| value.to_string());
                }
                Part::ToolResult(result) => {
                    rename(&mut result.call_id);
                    // Only Gemini names the tool in a result; its encoder finds it again from
                    // the call.
                    result.name = None;
                }
                _ => {}
            }
        }
    }
    // Only OpenAI has `strict`, and its two APIs default it differently (Chat: off,
    // Responses: on), so an encoder may write `false` where the client said nothing: not
    // strict either way. The generator never asks for strict tools.
    for tool in &mut request.tools {
        if tool.strict.is_none() {
            tool.strict = Some(false);
        }
    }
    // Leaving the choice to the provider and asking for `auto` mean the same.
    if request.tool_choice == Some(ToolChoice::Auto) {
        request.tool_choice = None;
    }
    request
}

fn round_trip(pair: Pair, generated: &Request) -> Result<(), TestCaseError> {
    let (a, b) = (pair.client, pair.provider);
    let mut generated = generated.clone();
    if a == Format::OpenAiResponses || b == Format::OpenAiResponses {
        // The Responses API has no stop sequences.
        generated.stop.clear();
    }
    let want = canonical(generated.clone());
    let step = |what: &str, result: Result<Request, String>| {
        result.map_err(|e| TestCaseError::fail(format!("{a:?} → {b:?} → {a:?}, {what}: {e}")))
    };
    let as_a = step("as the client sends it", through(a, &generated))?;
    prop_assert_eq!(&canonical(as_a.clone()), &want, "{:?} alone changes the request", a);
    let as_b = step("for the provider", through(b, &as_a))?;
    prop_assert_eq!(&canonical(as_b.clone()), &want, "{:?} → {:?} changes the request", a, b);
    let back = step("and back", through(a, &as_b))?;
    prop_assert_eq!(&canonical(back), &want, "{:?} → {:?} → {:?} changes the request", a, b, a);
    Ok(())
}

#[test]
fn a_request_of_shared_fields_survives_a_to_b_to_a_for_every_pair() {
    for pair in super::pairs() {
        let config = Config {
            cases: CASES_PER_PAIR,
            // A failure is reported with its shrunk input; nothing is written next to the
            // sources.
            failure_persistence: None,
            ..Config::default()
        };
        let mut runner = TestRunner::new(config);
        if let Err(e) = runner.run(&request(), |generated| round_trip(pair, &generated)) {
            panic!("{:?} → {:?}: {e}", pair.client, pair.provider);
        }
    }
}

#[test]
fn the_generator_makes_well_formed_conversations() {
    // The property is only as good as its inputs: they alternate, start and end with the user,
    // and every call is answered in the next turn.
    let mut runner =
        TestRunner::new(Config { cases: 256, failure_persistence: None, ..Config::default() });
    runner
        .run(&request(), |request| {
            let roles: Vec<Role> = request.messages.iter().map(|m| m.role).collect();
            prop_assert_eq!(roles.first(), Some(&Role::User));
            prop_assert_eq!(roles.last(), Some(&Role::User));
            prop_assert!(roles.windows(2).all(|w| w[0] != w[1]), "roles alternate: {:?}", roles);
            for (n, message) in request.messages.iter().enumerate() {
                let calls: Vec<&str> = message
                    .parts
                    .iter()
                    .filter_map(
                        |p| if let Part::ToolCall(c) = p { Some(c.id.as_str()) } else { None },
                    )
                    .collect();
                if calls.is_empty() {
                    continue;
                }
                let answered: Vec<&str> = request.messages[n + 1]
                    .parts
                    .iter()
                    .filter_map(|p| {
                        if let Part::ToolResult(r) = p { Some(r.call_id.as_str()) } else { None }
                    })
                    .collect();
                prop_assert_eq!(calls, answered);
            }
            for part in request.messages.iter().flat_map(|m| &m.parts) {
                if let Part::ToolCall(call) = part {
                    prop_assert!(request.tools.iter().any(|t| t.name == call.name));
                    prop_assert!(
                        serde_json::from_str::<Value>(&call.arguments).is_ok_and(|v| v.is_object())
                    );
                }
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn canonical_form_keeps_what_matters() {
    let call = |id: &str, arguments: &str| {
        Part::ToolCall(ToolCall { id: id.into(), name: "f".into(), arguments: arguments.into() })
    };
    let result = |id: &str, name: Option<&str>| {
        Part::ToolResult(ToolResult {
            call_id: id.into(),
            name: name.map(Into::into),
            content: vec![],
            is_error: false,
        })
    };
    let request = |a: &str, b: &str, args: &str, name: Option<&str>, choice| Request {
        messages: vec![
            Message { role: Role::Assistant, parts: vec![call(a, args), call(b, "{}")] },
            Message { role: Role::User, parts: vec![result(a, name), result(b, None)] },
        ],
        tool_choice: choice,
        ..Request::default()
    };
    // Other ids with the same links, other spacing, a result's name, auto: the same.
    assert_eq!(
        canonical(request("call_1", "call_2", r#"{"x": 1}"#, Some("f"), Some(ToolChoice::Auto))),
        canonical(request("gem_0", "gem_1", r#"{"x":1}"#, None, None))
    );
    // A result linked to the other call, other arguments, another choice: different.
    let base = canonical(request("a", "b", "{}", None, None));
    let mut swapped = request("a", "b", "{}", None, None);
    swapped.messages[1].parts.swap(0, 1);
    assert_ne!(canonical(swapped), base);
    assert_ne!(canonical(request("a", "b", r#"{"x":2}"#, None, None)), base);
    assert_ne!(canonical(request("a", "b", "{}", None, Some(ToolChoice::Required))), base);
}
