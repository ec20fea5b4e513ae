//! Request validation (`server.security.request_validation`): the fields each API requires,
//! and the `max_tokens` cap, before a request costs anything upstream.
//!
//! The checks read a [`RequestFields`], the few fields the gateway found in the body in its one
//! pass over it (with serde_json's recursion limit, so deep nesting is refused there). Messages
//! name the field and the config key, never a value from the body (it may hold a secret).

use std::num::NonZeroU32;

use crate::config::ValidationConfig;
use crate::fields::{RequestFields, Shape};

/// The kind of request, by endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestKind {
    /// `POST /v1/chat/completions`.
    ChatCompletions,
    /// `POST /v1/responses`.
    Responses,
    /// `POST /v1/embeddings`.
    Embeddings,
    /// `POST /v1/messages`.
    Messages,
    /// `POST /v1/messages/count_tokens`.
    CountTokens,
    /// `POST /v1beta/models/{model}:generateContent` and `:streamGenerateContent`.
    GeminiGenerate,
}

/// A request that fails validation; the message is safe to send to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub String);

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The validator built from `server.security.request_validation`.
#[derive(Debug, Clone)]
pub struct Validator {
    enabled: bool,
    max_tokens: NonZeroU32,
}

/// The cap that applies to one request, and where it is configured.
#[derive(Debug, Clone, Copy)]
pub struct TokenCap<'a> {
    /// The provider's `max_tokens`, when set.
    pub provider_max_tokens: Option<NonZeroU32>,
    /// The provider's name, for the message.
    pub provider: &'a str,
}

impl Validator {
    /// The validator for `config`.
    pub fn new(config: &ValidationConfig) -> Self {
        Self { enabled: config.enabled, max_tokens: config.max_tokens }
    }

    /// Checks the fields of `body` for a request of `kind`; returns the output tokens it asks
    /// for (its `max_tokens` or equivalent), which the token limits reserve before the reply.
    ///
    /// The field types are checked even when validation is off: a `max_tokens` that is not a
    /// number would otherwise reach the token limits as a guess.
    pub fn check(
        &self,
        kind: RequestKind,
        body: &RequestFields<'_>,
        cap: TokenCap<'_>,
    ) -> Result<Option<u64>, Invalid> {
        let requested = requested_tokens(kind, body)?;
        if !self.enabled {
            return Ok(requested);
        }
        required_fields(kind, body)?;
        let (limit, key) = match cap.provider_max_tokens {
            Some(limit) => (limit, format!("providers.{}.max_tokens", cap.provider)),
            None => (self.max_tokens, "server.security.request_validation.max_tokens".to_owned()),
        };
        if let Some(requested) = requested
            && requested > u64::from(limit.get())
        {
            return Err(Invalid(format!(
                "`{}` is {requested}, over this gateway's limit of {limit} ({key})",
                token_field(kind)
            )));
        }
        Ok(requested)
    }
}

/// The name of the output-token field for `kind`, as the client writes it.
fn token_field(kind: RequestKind) -> &'static str {
    match kind {
        RequestKind::Responses => "max_output_tokens",
        RequestKind::GeminiGenerate => "generationConfig.maxOutputTokens",
        _ => "max_tokens",
    }
}

/// The output tokens a request asks for, checked to be a whole number of at least 1.
fn requested_tokens(kind: RequestKind, body: &RequestFields<'_>) -> Result<Option<u64>, Invalid> {
    let fields: &[(&str, Option<Shape>)] = match kind {
        RequestKind::ChatCompletions => &[
            ("max_tokens", body.max_tokens),
            ("max_completion_tokens", body.max_completion_tokens),
        ],
        RequestKind::Responses => &[("max_output_tokens", body.max_output_tokens)],
        RequestKind::Messages | RequestKind::CountTokens => &[("max_tokens", body.max_tokens)],
        RequestKind::GeminiGenerate => {
            &[("generationConfig.maxOutputTokens", body.gemini_max_output_tokens)]
        }
        RequestKind::Embeddings => &[],
    };
    let mut most: Option<u64> = None;
    for (name, value) in fields {
        match value {
            None | Some(Shape::Null) => {}
            // Zero is refused too: it would reserve nothing before the reply, and a reply
            // without usage is charged what was asked for.
            Some(Shape::Number(n)) => match n.filter(|&tokens| tokens > 0) {
                Some(tokens) => most = Some(most.map_or(tokens, |m| m.max(tokens))),
                None => {
                    return Err(Invalid(format!("`{name}` must be a whole number of at least 1")));
                }
            },
            Some(_) => return Err(Invalid(format!("`{name}` must be a number"))),
        }
    }
    Ok(most)
}

/// The fields each API requires.
fn required_fields(kind: RequestKind, body: &RequestFields<'_>) -> Result<(), Invalid> {
    let non_empty_array = |name: &str, value: Option<Shape>| -> Result<Option<usize>, Invalid> {
        match value {
            Some(Shape::Array { len, first_without_role }) if len > 0 => Ok(first_without_role),
            Some(Shape::Array { .. }) => Err(Invalid(format!("`{name}` must not be empty"))),
            Some(_) => Err(Invalid(format!("`{name}` must be an array"))),
            None => Err(Invalid(format!("the request has no `{name}`"))),
        }
    };
    let messages_with_roles = || -> Result<(), Invalid> {
        match non_empty_array("messages", body.messages)? {
            Some(index) => Err(Invalid(format!("`messages[{index}]` needs a string `role`"))),
            None => Ok(()),
        }
    };
    match kind {
        RequestKind::ChatCompletions | RequestKind::CountTokens => messages_with_roles(),
        RequestKind::Messages => {
            messages_with_roles()?;
            // Present counts, `null` included, as it did when the body was a `Value`.
            if body.max_tokens.is_none() {
                return Err(Invalid(
                    "the request has no `max_tokens` (the Messages API requires it)".to_owned(),
                ));
            }
            Ok(())
        }
        RequestKind::Responses | RequestKind::Embeddings => match body.input {
            Some(Shape::String | Shape::Array { .. }) => Ok(()),
            Some(_) => Err(Invalid("`input` must be a string or an array".to_owned())),
            None => Err(Invalid("the request has no `input`".to_owned())),
        },
        RequestKind::GeminiGenerate => non_empty_array("contents", body.contents).map(|_| ()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validator(max: u32) -> Validator {
        Validator::new(&ValidationConfig {
            enabled: true,
            max_tokens: NonZeroU32::new(max).unwrap(),
        })
    }

    const CAP: TokenCap<'static> = TokenCap { provider_max_tokens: None, provider: "p" };

    const KINDS: [RequestKind; 6] = [
        RequestKind::ChatCompletions,
        RequestKind::Responses,
        RequestKind::Embeddings,
        RequestKind::Messages,
        RequestKind::CountTokens,
        RequestKind::GeminiGenerate,
    ];

    /// Checks the JSON text `body` as the gateway does: read in one pass, then checked.
    fn check(
        v: &Validator,
        kind: RequestKind,
        body: &str,
        cap: TokenCap<'_>,
    ) -> Result<Option<u64>, Invalid> {
        let fields = RequestFields::from_slice(body.as_bytes()).unwrap();
        v.check(kind, &fields, cap)
    }

    #[test]
    fn well_formed_requests_pass_and_report_their_tokens() {
        let v = validator(4096);
        let chat =
            r#"{"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100}"#;
        assert_eq!(check(&v, RequestKind::ChatCompletions, chat, CAP), Ok(Some(100)));
        let msg =
            r#"{"model": "m", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}"#;
        assert_eq!(check(&v, RequestKind::Messages, msg, CAP), Ok(Some(50)));
        let gem = r#"{"contents": [{"parts": [{"text": "hi"}]}], "generationConfig": {"maxOutputTokens": 7}}"#;
        assert_eq!(check(&v, RequestKind::GeminiGenerate, gem, CAP), Ok(Some(7)));
        let emb = r#"{"model": "m", "input": ["a", "b"]}"#;
        assert_eq!(check(&v, RequestKind::Embeddings, emb, CAP), Ok(None));
        let resp = r#"{"model": "m", "input": "hi", "max_output_tokens": 9}"#;
        assert_eq!(check(&v, RequestKind::Responses, resp, CAP), Ok(Some(9)));
    }

    #[test]
    fn the_cap_names_the_limit_and_the_key_and_providers_override_it() {
        let v = validator(4096);
        let chat = r#"{"messages": [{"role": "user"}], "max_completion_tokens": 5000}"#;
        let error = check(&v, RequestKind::ChatCompletions, chat, CAP).unwrap_err().0;
        assert_eq!(
            error,
            "`max_tokens` is 5000, over this gateway's limit of 4096 \
             (server.security.request_validation.max_tokens)"
        );
        let cap = TokenCap { provider_max_tokens: NonZeroU32::new(8000), provider: "claude" };
        assert_eq!(check(&v, RequestKind::ChatCompletions, chat, cap), Ok(Some(5000)));
        let cap = TokenCap { provider_max_tokens: NonZeroU32::new(100), provider: "claude" };
        let error = check(&v, RequestKind::ChatCompletions, chat, cap).unwrap_err().0;
        assert!(error.contains("providers.claude.max_tokens"), "{error}");
    }

    #[test]
    fn hostile_token_values_are_refused_even_with_validation_off() {
        let off = Validator::new(&ValidationConfig { enabled: false, max_tokens: NonZeroU32::MIN });
        for bad in ["-1", "0", "1.5", r#""100""#, "true", r#"{"a": 1}"#, "1e300", "1.0", "1e3"] {
            let body = format!(r#"{{"messages": [{{"role": "user"}}], "max_tokens": {bad}}}"#);
            assert!(check(&off, RequestKind::ChatCompletions, &body, CAP).is_err(), "{body}");
        }
        let huge = format!(r#"{{"messages": [{{"role": "user"}}], "max_tokens": {}}}"#, u64::MAX);
        assert!(check(&validator(4096), RequestKind::ChatCompletions, &huge, CAP).is_err());
        assert_eq!(check(&off, RequestKind::ChatCompletions, &huge, CAP), Ok(Some(u64::MAX)));
        let over = r#"{"messages": [{"role": "user"}], "max_tokens": 18446744073709551616}"#;
        assert_eq!(
            check(&off, RequestKind::ChatCompletions, over, CAP),
            Err(Invalid("`max_tokens` must be a whole number of at least 1".to_owned()))
        );
    }

    #[test]
    fn missing_or_malformed_required_fields_are_named() {
        let v = validator(4096);
        let cases = [
            (RequestKind::ChatCompletions, r#"{"model": "m"}"#, "the request has no `messages`"),
            (RequestKind::ChatCompletions, r#"{"messages": []}"#, "`messages` must not be empty"),
            (RequestKind::ChatCompletions, r#"{"messages": "hi"}"#, "`messages` must be an array"),
            (
                RequestKind::ChatCompletions,
                r#"{"messages": [{"content": "x"}]}"#,
                "`messages[0]` needs a string `role`",
            ),
            (
                RequestKind::Messages,
                r#"{"messages": [{"role": "user"}]}"#,
                "the request has no `max_tokens` (the Messages API requires it)",
            ),
            (RequestKind::Embeddings, r#"{"input": 5}"#, "`input` must be a string or an array"),
            (RequestKind::Responses, "{}", "the request has no `input`"),
            (RequestKind::GeminiGenerate, r#"{"contents": {}}"#, "`contents` must be an array"),
        ];
        for (kind, body, expected) in cases {
            let error = check(&v, kind, body, CAP).unwrap_err().0;
            assert_eq!(error, expected, "{kind:?} {body}");
        }
    }

    /// The checks as they were when the gateway parsed every body into a `serde_json::Value`,
    /// kept as the reference the one-pass reader must agree with.
    mod reference {
        use std::fmt::Write as _;

        use serde::Deserialize;
        use serde_json::Value;

        use super::super::{Invalid, RequestKind, TokenCap, Validator, token_field};

        /// The gateway's `Peek`, read from the tree.
        #[derive(Deserialize)]
        struct Peek {
            #[serde(default)]
            model: Option<String>,
            #[serde(default)]
            stream: Option<bool>,
        }

        /// What the gateway made of `body`: the JSON error, the object check, `model` and
        /// `stream`, then each check's answer.
        pub(super) fn outcome(body: &[u8], checks: &[(Validator, TokenCap<'_>)]) -> String {
            let parsed: Value = match serde_json::from_slice(body) {
                Ok(parsed) => parsed,
                Err(e) => return format!("not JSON: {e} ({:?})", e.classify()),
            };
            let mut out = if !parsed.is_object() {
                "not an object".to_owned()
            } else {
                match Peek::deserialize(&parsed) {
                    Ok(peek) => {
                        format!("model {:?} stream {:?}", peek.model.as_deref(), peek.stream)
                    }
                    Err(_) => "wrong model or stream".to_owned(),
                }
            };
            for (validator, cap) in checks {
                for kind in super::KINDS {
                    let _ = write!(out, "; {kind:?} {:?}", check(validator, kind, &parsed, *cap));
                }
            }
            out
        }

        fn check(
            v: &Validator,
            kind: RequestKind,
            body: &Value,
            cap: TokenCap<'_>,
        ) -> Result<Option<u64>, Invalid> {
            let requested = requested_tokens(kind, body)?;
            if !v.enabled {
                return Ok(requested);
            }
            required_fields(kind, body)?;
            let (limit, key) = match cap.provider_max_tokens {
                Some(limit) => (limit, format!("providers.{}.max_tokens", cap.provider)),
                None => (v.max_tokens, "server.security.request_validation.max_tokens".to_owned()),
            };
            if let Some(requested) = requested
                && requested > u64::from(limit.get())
            {
                return Err(Invalid(format!(
                    "`{}` is {requested}, over this gateway's limit of {limit} ({key})",
                    token_field(kind)
                )));
            }
            Ok(requested)
        }

        fn requested_tokens(kind: RequestKind, body: &Value) -> Result<Option<u64>, Invalid> {
            let fields: &[(&str, Option<&Value>)] = match kind {
                RequestKind::ChatCompletions => &[
                    ("max_tokens", body.get("max_tokens")),
                    ("max_completion_tokens", body.get("max_completion_tokens")),
                ],
                RequestKind::Responses => &[("max_output_tokens", body.get("max_output_tokens"))],
                RequestKind::Messages | RequestKind::CountTokens => {
                    &[("max_tokens", body.get("max_tokens"))]
                }
                RequestKind::GeminiGenerate => &[(
                    "generationConfig.maxOutputTokens",
                    body.get("generationConfig").and_then(|c| c.get("maxOutputTokens")),
                )],
                RequestKind::Embeddings => &[],
            };
            let mut most: Option<u64> = None;
            for (name, value) in fields {
                match value {
                    None | Some(Value::Null) => {}
                    Some(Value::Number(n)) => match n.as_u64().filter(|&tokens| tokens > 0) {
                        Some(tokens) => most = Some(most.map_or(tokens, |m| m.max(tokens))),
                        None => {
                            return Err(Invalid(format!(
                                "`{name}` must be a whole number of at least 1"
                            )));
                        }
                    },
                    Some(_) => return Err(Invalid(format!("`{name}` must be a number"))),
                }
            }
            Ok(most)
        }

        fn required_fields(kind: RequestKind, body: &Value) -> Result<(), Invalid> {
            let non_empty_array = |name: &str| -> Result<&Vec<Value>, Invalid> {
                match body.get(name) {
                    Some(Value::Array(items)) if !items.is_empty() => Ok(items),
                    Some(Value::Array(_)) => Err(Invalid(format!("`{name}` must not be empty"))),
                    Some(_) => Err(Invalid(format!("`{name}` must be an array"))),
                    None => Err(Invalid(format!("the request has no `{name}`"))),
                }
            };
            let with_role = |items: &Vec<Value>, name: &str| -> Result<(), Invalid> {
                for (index, item) in items.iter().enumerate() {
                    if !item.get("role").is_some_and(Value::is_string) {
                        return Err(Invalid(format!("`{name}[{index}]` needs a string `role`")));
                    }
                }
                Ok(())
            };
            match kind {
                RequestKind::ChatCompletions => with_role(non_empty_array("messages")?, "messages"),
                RequestKind::Messages => {
                    with_role(non_empty_array("messages")?, "messages")?;
                    if body.get("max_tokens").is_none() {
                        return Err(Invalid(
                            "the request has no `max_tokens` (the Messages API requires it)"
                                .to_owned(),
                        ));
                    }
                    Ok(())
                }
                RequestKind::CountTokens => with_role(non_empty_array("messages")?, "messages"),
                RequestKind::Responses | RequestKind::Embeddings => match body.get("input") {
                    Some(Value::String(_) | Value::Array(_)) => Ok(()),
                    Some(_) => Err(Invalid("`input` must be a string or an array".to_owned())),
                    None => Err(Invalid("the request has no `input`".to_owned())),
                },
                RequestKind::GeminiGenerate => non_empty_array("contents").map(|_| ()),
            }
        }
    }

    /// [`reference::outcome`], through the one-pass reader.
    fn outcome(body: &[u8], checks: &[(Validator, TokenCap<'_>)]) -> String {
        use std::fmt::Write as _;
        let fields = match RequestFields::from_slice(body) {
            Ok(fields) => fields,
            Err(e) => return format!("not JSON: {e} ({:?})", e.classify()),
        };
        let mut out = if !fields.is_object() {
            "not an object".to_owned()
        } else {
            match (fields.model(), fields.stream()) {
                (Ok(model), Ok(stream)) => format!("model {model:?} stream {stream:?}"),
                _ => "wrong model or stream".to_owned(),
            }
        };
        for (validator, cap) in checks {
            for kind in KINDS {
                let _ = write!(out, "; {kind:?} {:?}", validator.check(kind, &fields, *cap));
            }
        }
        out
    }

    /// Validation on with the gateway's cap, on with a provider's, and off.
    fn checks() -> Vec<(Validator, TokenCap<'static>)> {
        let off = Validator::new(&ValidationConfig { enabled: false, max_tokens: NonZeroU32::MIN });
        let provider = TokenCap { provider_max_tokens: NonZeroU32::new(100), provider: "claude" };
        vec![(validator(4096), CAP), (validator(4096), provider), (off, CAP)]
    }

    /// Asserts that both readings of `body` agree and returns what they said.
    fn same(body: &[u8]) -> String {
        let checks = checks();
        let new = outcome(body, &checks);
        let old = reference::outcome(body, &checks);
        assert_eq!(new, old, "body: {}", String::from_utf8_lossy(&body[..body.len().min(200)]));
        new
    }

    /// `depth` arrays nested in one another.
    fn nested(depth: usize) -> String {
        "[".repeat(depth) + &"]".repeat(depth)
    }

    #[test]
    fn the_one_pass_reader_answers_as_the_value_tree_did() {
        let user = r#"{"role": "user", "content": "hi"}"#;
        let bodies: Vec<Vec<u8>> = [
            // Well-formed, each API.
            r#"{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100}"#,
            r#"{"model": "m", "stream": true, "messages": [{"role": "user"}], "max_completion_tokens": 5000, "max_tokens": 7}"#,
            r#"{"model": "m", "input": "hi", "max_output_tokens": 9, "stream": false}"#,
            r#"{"model": "m", "input": ["a", "b"]}"#,
            r#"{"model": "m", "max_tokens": 50, "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}"#,
            // Gemini.
            r#"{"contents": [{"parts": [{"text": "hi"}]}], "generationConfig": {"maxOutputTokens": 7, "temperature": 0.5}}"#,
            r#"{"contents": [], "generationConfig": []}"#,
            r#"{"contents": "hi", "generationConfig": null}"#,
            r#"{"contents": [1], "generationConfig": {"maxOutputTokens": "7"}}"#,
            r#"{"contents": [1], "generationConfig": {"maxOutputTokens": 7}, "generationConfig": {"topK": 1}}"#,
            r#"{"contents": [1], "generationConfig": {"maxOutputTokens": 1, "maxOutputTokens": null}}"#,
            r#"{"contents": [1], "generationConfig": {"maxOutputTokens": 0}, "maxOutputTokens": 5}"#,
            // Duplicate keys: the last one counts.
            r#"{"model": "a", "model": "b", "messages": [{"role": "user"}]}"#,
            r#"{"model": 5, "model": "b", "stream": "x", "stream": true}"#,
            r#"{"model": "a", "model": null}"#,
            r#"{"max_tokens": 5, "max_tokens": "x", "messages": [{"role": "user"}]}"#,
            r#"{"max_tokens": "x", "max_tokens": 5, "messages": [{"role": "user"}]}"#,
            r#"{"messages": [], "messages": [{"role": "user"}], "input": 1, "input": "x"}"#,
            r#"{"messages": [{"role": "user"}], "messages": []}"#,
            r#"{"messages": [{"role": "user", "role": 5}]}"#,
            r#"{"messages": [{"role": 5, "role": "user"}]}"#,
            // Escapes: in values and in keys.
            r#"{"model": "gpt\u002d4", "messages": [{"r\u006fle": "user"}]}"#,
            r#"{"mod\u0065l": "x\ny\"z\\", "\u0073tream": true}"#,
            r#"{"model": "\ud83d\ude00", "max_tokens": 1}"#,
            // Nulls, empties and wrong types.
            r#"{"model": null, "stream": null, "max_tokens": null, "messages": [{"role": "user"}]}"#,
            r#"{"model": "", "messages": null, "input": null, "contents": null}"#,
            r#"{"model": [], "messages": {}}"#,
            r#"{"model": {"a": 1}}"#,
            r#"{"model": 1.5}"#,
            r#"{"model": "m", "stream": 1}"#,
            r#"{"model": "m", "stream": "true"}"#,
            r#"{"messages": "hi", "input": 5, "max_completion_tokens": true}"#,
            r#"{"messages": [[]], "input": {}, "max_output_tokens": [1]}"#,
            // Roles missing or not strings, at various indexes.
            &format!(r#"{{"messages": [{{"content": "x"}}, {user}]}}"#),
            &format!(r#"{{"messages": [{user}, {user}, {{"role": null}}, {{"role": 5}}]}}"#),
            &format!(r#"{{"messages": [{user}, {user}, {user}, {{"role": ["user"]}}]}}"#),
            &format!(r#"{{"messages": [{user}, "user", {{"role": {{"a": 1}}}}]}}"#),
            &format!(r#"{{"messages": [{user}, null], "max_tokens": 3}}"#),
            &format!(r#"{{"messages": [{user}, [{user}]], "max_tokens": 3}}"#),
            // Numbers.
            r#"{"messages": [{"role": "u"}], "max_tokens": 1.0}"#,
            r#"{"messages": [{"role": "u"}], "max_tokens": -1}"#,
            r#"{"messages": [{"role": "u"}], "max_tokens": 0}"#,
            r#"{"messages": [{"role": "u"}], "max_tokens": -0}"#,
            r#"{"messages": [{"role": "u"}], "max_tokens": 1e3}"#,
            r#"{"messages": [{"role": "u"}], "max_tokens": 1E2}"#,
            r#"{"messages": [{"role": "u"}], "max_tokens": 18446744073709551616}"#,
            r#"{"messages": [{"role": "u"}], "max_tokens": 18446744073709551615}"#,
            r#"{"messages": [{"role": "u"}], "max_tokens": -9223372036854775809}"#,
            r#"{"messages": [{"role": "u"}], "max_tokens": 1e308, "max_completion_tokens": 4097}"#,
            r#"{"messages": [{"role": "u"}], "max_tokens": 99, "max_completion_tokens": 101}"#,
            r#"{"input": "x", "max_output_tokens": 100.5}"#,
            // Bodies that are not objects.
            "[1, 2]",
            r#""model""#,
            "5",
            "null",
            " true ",
            // Bodies that are not JSON.
            "",
            "{",
            r#"{"model": }"#,
            r#"{"model": "m"} x"#,
            r#"{"model": "m"}{}"#,
            r#"{"model": "m",}"#,
            r#"{"messages": [{"role": "user"},]}"#,
            r#"{'model': 'm'}"#,
            r#"{"model": tru}"#,
            r#"{"max_tokens": 01}"#,
            r#"{"max_tokens": 1.}"#,
            r#"{"max_tokens": -}"#,
            r#"{"x": 1e400}"#,
            r#"{"x": "\ud800"}"#,
            r#"{"x": "\udc00 lone trailing"}"#,
            r#"{"x": "\q"}"#,
            "{\"x\": \"a\tb\"}",
            r#"{1: 2}"#,
            r#"{"messages": [{"role": "user"}"#,
        ]
        .iter()
        .map(|body| body.as_bytes().to_vec())
        .chain([
            // Invalid UTF-8 in a skipped value, a skipped key and a read value.
            b"{\"x\": \"\xff\"}".to_vec(),
            b"{\"\xc3\x28\": 1}".to_vec(),
            b"{\"model\": \"m\xed\xa0\x80\"}".to_vec(),
            b"{\"messages\": [{\"role\": \"\xf0\x28\x8c\x28\"}]}".to_vec(),
            // Nesting at and past serde_json's limit (127 levels pass, 128 do not), skipped
            // and read.
            format!(r#"{{"x": {}}}"#, nested(126)).into_bytes(),
            format!(r#"{{"x": {}}}"#, nested(127)).into_bytes(),
            format!(r#"{{"messages": [{{"role": "u", "c": {}}}]}}"#, nested(124)).into_bytes(),
            format!(r#"{{"messages": [{{"role": "u", "c": {}}}]}}"#, nested(125)).into_bytes(),
            format!(r#"{{"generationConfig": {{"maxOutputTokens": {}}}}}"#, nested(125)).into_bytes(),
            format!(r#"{{"generationConfig": {{"maxOutputTokens": {}}}}}"#, nested(126)).into_bytes(),
        ])
        .collect();
        assert!(bodies.len() >= 40, "{}", bodies.len());
        for body in &bodies {
            same(body);
        }
        // Both readings could agree and both be wrong: what some of them said, spelled out.
        for (body, said) in [
            (
                r#"{"model": "a", "model": "b", "messages": [{"role": "user"}]}"#,
                r#"model Some("b")"#,
            ),
            (r#"{"model": "a", "model": null}"#, "model None stream None"),
            (
                r#"{"model": 5, "model": "b", "stream": "x", "stream": true}"#,
                r#"model Some("b") stream Some(true)"#,
            ),
            (r#"{"model": "m", "stream": "true"}"#, "wrong model or stream"),
            (
                r#"{"model": "gpt\u002d4", "messages": [{"r\u006fle": "user"}]}"#,
                r#"model Some("gpt-4") stream None; ChatCompletions Ok(None)"#,
            ),
            (
                r#"{"max_tokens": 5, "max_tokens": "x", "messages": [{"role": "user"}]}"#,
                "ChatCompletions Err(Invalid(\"`max_tokens` must be a number\"))",
            ),
            (
                r#"{"messages": [{"role": "user", "role": 5}]}"#,
                "`messages[0]` needs a string `role`",
            ),
            (r#"{"messages": [{"role": 5, "role": "user"}]}"#, "ChatCompletions Ok(None)"),
            (
                r#"{"contents": [1], "generationConfig": {"maxOutputTokens": 7}, "generationConfig": {"topK": 1}}"#,
                "GeminiGenerate Ok(None)",
            ),
            (
                r#"{"messages": [{"role": "u"}], "max_tokens": 1.0}"#,
                "must be a whole number of at least 1",
            ),
            (
                r#"{"messages": [{"role": "u"}], "max_tokens": 1e3}"#,
                "must be a whole number of at least 1",
            ),
            (
                r#"{"messages": [{"role": "u"}], "max_tokens": 18446744073709551616}"#,
                "must be a whole number of at least 1",
            ),
            (
                r#"{"messages": [{"role": "u"}], "max_tokens": 18446744073709551615}"#,
                "ChatCompletions Ok(Some(18446744073709551615))",
            ),
            (
                r#"{"model": null, "stream": null, "max_tokens": null, "messages": [{"role": "user"}]}"#,
                "Messages Ok(None)",
            ),
            ("[1, 2]", "not an object"),
            (r#"{"model": "m"} x"#, "not JSON: trailing characters at line 1 column 16"),
            (r#"{"x": "\ud800"}"#, "not JSON: unexpected end of hex escape"),
            (r#"{"x": 1e400}"#, "not JSON: number out of range"),
        ] {
            let answer = same(body.as_bytes());
            assert!(answer.contains(said), "{body}: {answer}");
        }
        assert!(same(format!(r#"{{"x": {}}}"#, nested(126)).as_bytes()).starts_with("model None"));
        assert!(same(format!(r#"{{"x": {}}}"#, nested(127)).as_bytes()).starts_with("not JSON"));
    }

    #[test]
    fn hostile_bodies_are_refused_as_the_value_tree_refused_them() {
        // Deep nesting in a skipped field and in `messages`: refused at the recursion limit,
        // where serde_json stops, not after a walk of the whole depth.
        for body in [
            format!(r#"{{"model": "m", "x": {}}}"#, nested(10_000)),
            format!(r#"{{"model": "m", "messages": {}}}"#, nested(10_000)),
            format!(r#"{{"model": "m", "messages": [{{"role": {}}}]}}"#, nested(10_000)),
            format!(
                r#"{{"model": "m", "generationConfig": {{"maxOutputTokens": {}}}}}"#,
                nested(10_000)
            ),
            format!("{}{}", r#"{"a":"#.repeat(10_000), "}".repeat(10_000)),
        ] {
            let error = RequestFields::from_slice(body.as_bytes()).unwrap_err();
            assert!(error.to_string().starts_with("recursion limit exceeded"), "{error}");
            assert!(same(body.as_bytes()).starts_with("not JSON: recursion limit exceeded"));
        }
        // Invalid UTF-8 where serde_json's skipping scanner would not look.
        let error = RequestFields::from_slice(b"{\"x\": [\"ok\", \"\xff\"]}").unwrap_err();
        assert!(error.to_string().starts_with("invalid unicode code point"), "{error}");
        // Truncated at every byte, and followed by garbage.
        let body = r#"{"model": "gpt\u002d4", "stream": true, "messages": [{"role": "user", "content": [{"type": "text", "text": "h\u00e9"}]}], "max_tokens": 1e2, "generationConfig": {"maxOutputTokens": 3}}"#;
        assert!(same(body.as_bytes()).starts_with(r#"model Some("gpt-4") stream Some(true)"#));
        for end in 0..body.len() {
            assert!(same(&body.as_bytes()[..end]).starts_with("not JSON"), "{end}");
        }
        for garbage in [" x", "}", "]", ",", "{}", "\0", " \u{feff}"] {
            let with = format!("{body}{garbage}");
            assert!(same(with.as_bytes()).starts_with("not JSON: trailing characters"), "{with}");
        }
    }

    #[test]
    fn megabyte_strings_are_read_without_a_copy_unless_escaped() {
        let big = "a".repeat(1 << 20);
        let body =
            format!(r#"{{"model": "{big}", "input": "{big}", "messages": [{{"role": "{big}"}}]}}"#);
        let fields = RequestFields::from_slice(body.as_bytes()).unwrap();
        let model = fields.model().unwrap().unwrap();
        // Borrowed: the model is the body's own bytes.
        assert!(body.as_bytes().as_ptr_range().contains(&model.as_ptr()));
        assert_eq!(model.len(), 1 << 20);
        assert_eq!(check(&validator(1), RequestKind::Responses, &body, CAP), Ok(None));
        assert_eq!(check(&validator(1), RequestKind::ChatCompletions, &body, CAP), Ok(None));
        same(body.as_bytes());
        let escaped = "\\u0061".repeat(1 << 18);
        let body = format!(r#"{{"model": "{escaped}", "x": "{escaped}"}}"#);
        let fields = RequestFields::from_slice(body.as_bytes()).unwrap();
        assert_eq!(fields.model(), Ok(Some("a".repeat(1 << 18).as_str())));
        same(body.as_bytes());
    }
}
