//! Request validation (`server.security.request_validation`): the fields each API requires,
//! and the `max_tokens` cap, before a request costs anything upstream.
//!
//! The body has already been parsed as JSON by the gateway (with serde_json's recursion
//! limit, so deep nesting is refused there); this module only reads it. Messages name the
//! field and the config key, never a value from the body (it may hold a secret).

use std::num::NonZeroU32;

use serde_json::Value;

use crate::config::ValidationConfig;

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

    /// Checks `body` for a request of `kind`; returns the output tokens it asks for (its
    /// `max_tokens` or equivalent), which the token limits reserve before the reply.
    ///
    /// The field types are checked even when validation is off: a `max_tokens` that is not a
    /// number would otherwise reach the token limits as a guess.
    pub fn check(
        &self,
        kind: RequestKind,
        body: &Value,
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
            // Zero is refused too: it would reserve nothing before the reply, and a reply
            // without usage is charged what was asked for.
            Some(Value::Number(n)) => match n.as_u64().filter(|&tokens| tokens > 0) {
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
                    "the request has no `max_tokens` (the Messages API requires it)".to_owned(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn validator(max: u32) -> Validator {
        Validator::new(&ValidationConfig {
            enabled: true,
            max_tokens: NonZeroU32::new(max).unwrap(),
        })
    }

    const CAP: TokenCap<'static> = TokenCap { provider_max_tokens: None, provider: "p" };

    #[test]
    fn well_formed_requests_pass_and_report_their_tokens() {
        let v = validator(4096);
        let chat = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100});
        assert_eq!(v.check(RequestKind::ChatCompletions, &chat, CAP), Ok(Some(100)));
        let msg = json!({"model": "m", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]});
        assert_eq!(v.check(RequestKind::Messages, &msg, CAP), Ok(Some(50)));
        let gem = json!({"contents": [{"parts": [{"text": "hi"}]}], "generationConfig": {"maxOutputTokens": 7}});
        assert_eq!(v.check(RequestKind::GeminiGenerate, &gem, CAP), Ok(Some(7)));
        let emb = json!({"model": "m", "input": ["a", "b"]});
        assert_eq!(v.check(RequestKind::Embeddings, &emb, CAP), Ok(None));
        let resp = json!({"model": "m", "input": "hi", "max_output_tokens": 9});
        assert_eq!(v.check(RequestKind::Responses, &resp, CAP), Ok(Some(9)));
    }

    #[test]
    fn the_cap_names_the_limit_and_the_key_and_providers_override_it() {
        let v = validator(4096);
        let chat = json!({"messages": [{"role": "user"}], "max_completion_tokens": 5000});
        let error = v.check(RequestKind::ChatCompletions, &chat, CAP).unwrap_err().0;
        assert!(
            error.contains("4096")
                && error.contains("server.security.request_validation.max_tokens"),
            "{error}"
        );
        let cap = TokenCap { provider_max_tokens: NonZeroU32::new(8000), provider: "claude" };
        assert_eq!(v.check(RequestKind::ChatCompletions, &chat, cap), Ok(Some(5000)));
        let cap = TokenCap { provider_max_tokens: NonZeroU32::new(100), provider: "claude" };
        let error = v.check(RequestKind::ChatCompletions, &chat, cap).unwrap_err().0;
        assert!(error.contains("providers.claude.max_tokens"), "{error}");
    }

    #[test]
    fn hostile_token_values_are_refused_even_with_validation_off() {
        let off = Validator::new(&ValidationConfig { enabled: false, max_tokens: NonZeroU32::MIN });
        for bad in [
            json!(-1),
            json!(0),
            json!(1.5),
            json!("100"),
            json!(true),
            json!({"a": 1}),
            json!(1e300),
        ] {
            let body = json!({"messages": [{"role": "user"}], "max_tokens": bad});
            assert!(off.check(RequestKind::ChatCompletions, &body, CAP).is_err(), "{body}");
        }
        let huge = json!({"messages": [{"role": "user"}], "max_tokens": u64::MAX});
        assert!(validator(4096).check(RequestKind::ChatCompletions, &huge, CAP).is_err());
        assert_eq!(off.check(RequestKind::ChatCompletions, &huge, CAP), Ok(Some(u64::MAX)));
    }

    #[test]
    fn missing_or_malformed_required_fields_are_named() {
        let v = validator(4096);
        let cases = [
            (RequestKind::ChatCompletions, json!({"model": "m"}), "`messages`"),
            (RequestKind::ChatCompletions, json!({"messages": []}), "must not be empty"),
            (RequestKind::ChatCompletions, json!({"messages": "hi"}), "must be an array"),
            (
                RequestKind::ChatCompletions,
                json!({"messages": [{"content": "x"}]}),
                "`messages[0]`",
            ),
            (RequestKind::Messages, json!({"messages": [{"role": "user"}]}), "`max_tokens`"),
            (RequestKind::Embeddings, json!({"input": 5}), "`input`"),
            (RequestKind::Responses, json!({}), "`input`"),
            (RequestKind::GeminiGenerate, json!({"contents": {}}), "`contents`"),
        ];
        for (kind, body, expected) in cases {
            let error = v.check(kind, &body, CAP).unwrap_err().0;
            assert!(error.contains(expected), "{kind:?} {body}: {error}");
        }
    }
}
