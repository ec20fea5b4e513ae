//! Request validation: the fields each API requires, and the `max_tokens` cap under every
//! name the provider reads, before a request costs anything upstream. A body with a key given
//! twice is refused first, with validation on or off: the gateway and the provider must read
//! the same request.
//!
//! The checks read a [`RequestFields`], the few fields the gateway found in the body in its one
//! pass over it (with serde_json's recursion limit, so deep nesting is refused there). Messages
//! name the field (and for a cap, whose cap held), never a value from the body (it may hold a
//! secret); the caller adds where the cap is configured.

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
    /// `POST /v1/completions` (OpenAI's legacy completions).
    Completions,
}

/// A request that fails validation; the message is safe to send to the client.
///
/// When the request asked for more output tokens than a cap allows, [`Invalid::over_cap`]
/// says whose cap it was, so that the caller can name where it is set (the cap to raise);
/// the [`Display`](std::fmt::Display) text names it in this library's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Invalid {
    /// What is wrong, naming the field, never a value from the body.
    pub message: String,
    /// The cap the request is over, when that is what is wrong.
    pub over_cap: Option<CapOwner>,
}

impl Invalid {
    /// A request that is wrong in itself.
    pub fn new(message: impl Into<String>) -> Self {
        Self { message: message.into(), over_cap: None }
    }

    /// A request over the cap of `owner`.
    pub fn over_cap(message: impl Into<String>, owner: CapOwner) -> Self {
        Self { message: message.into(), over_cap: Some(owner) }
    }
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)?;
        match self.over_cap {
            Some(owner) => write!(f, " ({owner})"),
            None => Ok(()),
        }
    }
}

/// Whose `max_tokens` cap a request is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapOwner {
    /// The [`Validator`]'s own cap.
    Validator,
    /// The provider's cap, from [`TokenCap::provider_max_tokens`].
    Provider,
}

impl std::fmt::Display for CapOwner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Validator => "the validator's cap",
            Self::Provider => "the provider's cap",
        })
    }
}

/// The request validator: the required fields and the output-token cap.
#[derive(Debug, Clone)]
pub struct Validator {
    enabled: bool,
    /// The cap on the output tokens a request may ask for; `None` is no cap.
    max_tokens: Option<NonZeroU32>,
}

/// The provider's cap that applies to one request besides the validator's own.
#[derive(Debug, Clone, Copy)]
pub struct TokenCap<'a> {
    /// The provider's `max_tokens`, when set.
    pub provider_max_tokens: Option<NonZeroU32>,
    /// The provider's name.
    pub provider: &'a str,
}

impl Validator {
    /// The validator for `config`.
    pub fn new(config: &ValidationConfig) -> Self {
        Self::from_values(config.enabled, config.max_tokens)
    }

    /// A validator that checks the required fields of each request and caps the output
    /// tokens it may ask for at `max_tokens` when `enabled`; when not, it checks only what
    /// must always hold (no repeated key, the field types).
    pub fn from_values(enabled: bool, max_tokens: Option<NonZeroU32>) -> Self {
        Self { enabled, max_tokens }
    }

    /// Checks the fields of `body` for a request of `kind`; returns the output tokens it asks
    /// for (its `max_tokens` or equivalent), which the token limits reserve before the reply.
    ///
    /// A repeated key and the field types are checked even when validation is off: this
    /// gateway and the provider must read the same request (the model, the token count), and
    /// a `max_tokens` that is not a number would otherwise reach the token limits as a guess.
    pub fn check(
        &self,
        kind: RequestKind,
        body: &RequestFields<'_>,
        cap: TokenCap<'_>,
    ) -> Result<Option<u64>, Invalid> {
        if body.has_repeated_key() {
            return Err(Invalid::new(REPEATED_KEY.to_owned()));
        }
        let requested = requested_tokens(kind, body)?;
        if !self.enabled {
            return Ok(requested.map(|(_, tokens)| tokens));
        }
        required_fields(kind, body)?;
        if let Some((field, requested)) = requested
            && let Some((limit, owner)) = self.limit(cap)
            && requested > u64::from(limit.get())
        {
            return Err(Invalid::over_cap(
                format!("`{field}` is {requested}, over this gateway's limit of {limit}"),
                owner,
            ));
        }
        Ok(requested.map(|(_, tokens)| tokens))
    }

    /// The cap that holds for a request under `cap` and whose it is: the stricter of the
    /// validator's and the provider's (a provider cap cannot lift the validator's), or none
    /// when neither is set. The owner's cap is the one to raise, so a refusal names it.
    fn limit(&self, cap: TokenCap<'_>) -> Option<(NonZeroU32, CapOwner)> {
        match (self.max_tokens, cap.provider_max_tokens) {
            (Some(global), Some(provider)) if global < provider => {
                Some((global, CapOwner::Validator))
            }
            (_, Some(provider)) => Some((provider, CapOwner::Provider)),
            (Some(global), None) => Some((global, CapOwner::Validator)),
            (None, None) => None,
        }
    }
}

/// The answer to a body with a key twice in one object. No key is named: a key is the
/// client's text, and the message goes to the audit log too.
const REPEATED_KEY: &str = "the request body has an object with the same key twice \
    (this gateway would read the last, the provider may read the first); send each key once";

/// The output tokens a request asks for, checked to be a whole number of at least 1, with
/// the field that asks for them as the client spelt it. Every field and spelling the
/// provider reads is read; when two are set, they must agree.
fn requested_tokens(
    kind: RequestKind,
    body: &RequestFields<'_>,
) -> Result<Option<(&'static str, u64)>, Invalid> {
    match kind {
        // OpenAI reads both (`max_tokens` is the older name); some clients send both, with
        // one value. `null` is OpenAI's "not set".
        RequestKind::ChatCompletions => agreed(
            &[
                ("max_tokens", body.max_tokens),
                ("max_completion_tokens", body.max_completion_tokens),
            ],
            Null::Unset,
        ),
        RequestKind::Responses => {
            agreed(&[("max_output_tokens", body.max_output_tokens)], Null::Unset)
        }
        RequestKind::Messages | RequestKind::CountTokens | RequestKind::Completions => {
            agreed(&[("max_tokens", body.max_tokens)], Null::Unset)
        }
        // Google reads its JSON with the proto3 mapping: a field's lowerCamelCase name and its
        // proto (snake_case) name are the same field, at every level, and `null` sets it to
        // its default (the model's own limit). A field given under both names is one the
        // provider could read either way.
        RequestKind::GeminiGenerate => {
            let (config, camel, snake) =
                match (body.generation_config, body.generation_config_snake) {
                    (Some(_), Some(_)) => {
                        return Err(Invalid::new(
                            "`generationConfig` and `generation_config` are one field spelt two \
                             ways (the provider may read either); send one of them"
                                .to_owned(),
                        ));
                    }
                    (Some(config), None) => (
                        config,
                        "generationConfig.maxOutputTokens",
                        "generationConfig.max_output_tokens",
                    ),
                    (None, Some(config)) => (
                        config,
                        "generation_config.maxOutputTokens",
                        "generation_config.max_output_tokens",
                    ),
                    (None, None) => return Ok(None),
                };
            agreed(&[(camel, config.camel), (snake, config.snake)], Null::Value)
        }
        RequestKind::Embeddings => Ok(None),
    }
}

/// How a `null` token field counts when another field gives a count too.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Null {
    /// Not set: the other field counts.
    Unset,
    /// A value of its own (the provider's default), which the other must agree with.
    Value,
}

/// The token count that `fields` (the names a provider reads for one limit) give: each set
/// one must be a whole number of at least 1, and all of them the same.
fn agreed(
    fields: &[(&'static str, Option<Shape>)],
    null: Null,
) -> Result<Option<(&'static str, u64)>, Invalid> {
    let mut found: Option<(&'static str, Option<u64>)> = None;
    for &(name, value) in fields {
        let tokens = match value {
            None => continue,
            Some(Shape::Null) if null == Null::Unset => continue,
            Some(Shape::Null) => None,
            // Zero is refused too: it would reserve nothing before the reply, and a reply
            // without usage is charged what was asked for.
            Some(Shape::Number(n)) => match n.filter(|&tokens| tokens > 0) {
                Some(tokens) => Some(tokens),
                None => {
                    return Err(Invalid::new(format!(
                        "`{name}` must be a whole number of at least 1"
                    )));
                }
            },
            Some(_) => return Err(Invalid::new(format!("`{name}` must be a number"))),
        };
        match found {
            None => found = Some((name, tokens)),
            Some((first, earlier)) if earlier != tokens => {
                return Err(Invalid::new(format!(
                    "`{first}` and `{name}` differ (the provider may read either); send one of them"
                )));
            }
            Some(_) => {}
        }
    }
    Ok(found.and_then(|(name, tokens)| Some((name, tokens?))))
}

/// The fields each API requires.
fn required_fields(kind: RequestKind, body: &RequestFields<'_>) -> Result<(), Invalid> {
    let non_empty_array = |name: &str, value: Option<Shape>| -> Result<Option<usize>, Invalid> {
        match value {
            Some(Shape::Array { len, first_without_role }) if len > 0 => Ok(first_without_role),
            Some(Shape::Array { .. }) => Err(Invalid::new(format!("`{name}` must not be empty"))),
            Some(_) => Err(Invalid::new(format!("`{name}` must be an array"))),
            None => Err(Invalid::new(format!("the request has no `{name}`"))),
        }
    };
    let messages_with_roles = || -> Result<(), Invalid> {
        match non_empty_array("messages", body.messages)? {
            Some(index) => Err(Invalid::new(format!("`messages[{index}]` needs a string `role`"))),
            None => Ok(()),
        }
    };
    match kind {
        RequestKind::ChatCompletions | RequestKind::CountTokens => messages_with_roles(),
        RequestKind::Messages => {
            messages_with_roles()?;
            // Present counts, `null` included, as it did when the body was a `Value`.
            if body.max_tokens.is_none() {
                return Err(Invalid::new(
                    "the request has no `max_tokens` (the Messages API requires it)".to_owned(),
                ));
            }
            Ok(())
        }
        RequestKind::Responses | RequestKind::Embeddings => match body.input {
            Some(Shape::String | Shape::Array { .. }) => Ok(()),
            Some(_) => Err(Invalid::new("`input` must be a string or an array".to_owned())),
            None => Err(Invalid::new("the request has no `input`".to_owned())),
        },
        RequestKind::GeminiGenerate => non_empty_array("contents", body.contents).map(|_| ()),
        // The prompt may be a string, an array of strings or of token arrays; the provider
        // judges it.
        RequestKind::Completions => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validator(max: u32) -> Validator {
        Validator::new(&ValidationConfig { enabled: true, max_tokens: NonZeroU32::new(max) })
    }

    const CAP: TokenCap<'static> = TokenCap { provider_max_tokens: None, provider: "p" };

    const KINDS: [RequestKind; 7] = [
        RequestKind::ChatCompletions,
        RequestKind::Responses,
        RequestKind::Embeddings,
        RequestKind::Messages,
        RequestKind::CountTokens,
        RequestKind::GeminiGenerate,
        RequestKind::Completions,
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
    fn plain_values_build_the_validator_the_section_does() {
        let chat = r#"{"messages": [{"role": "user"}], "max_tokens": 5000}"#;
        let plain = Validator::from_values(true, NonZeroU32::new(4096));
        assert!(check(&plain, RequestKind::ChatCompletions, chat, CAP).is_err());
        assert_eq!(
            check(&plain, RequestKind::ChatCompletions, chat, CAP),
            check(&validator(4096), RequestKind::ChatCompletions, chat, CAP)
        );
        // Off, it still reads the tokens but neither caps them nor asks for `model`.
        let off = Validator::from_values(false, NonZeroU32::new(4096));
        assert_eq!(check(&off, RequestKind::ChatCompletions, chat, CAP), Ok(Some(5000)));
    }

    #[test]
    fn the_cap_names_the_limit_and_the_key() {
        let v = validator(4096);
        let chat = r#"{"messages": [{"role": "user"}], "max_completion_tokens": 5000}"#;
        let error = check(&v, RequestKind::ChatCompletions, chat, CAP).unwrap_err().to_string();
        assert_eq!(
            error,
            "`max_completion_tokens` is 5000, over this gateway's limit of 4096 \
             (the validator's cap)"
        );
        let cap = TokenCap { provider_max_tokens: NonZeroU32::new(100), provider: "claude" };
        let error = check(&v, RequestKind::ChatCompletions, chat, cap).unwrap_err();
        assert_eq!(error.over_cap, Some(CapOwner::Provider));
        assert!(
            error.to_string().ends_with("over this gateway's limit of 100 (the provider's cap)")
        );
    }

    #[test]
    fn the_default_sets_no_cap_so_real_clients_pass() {
        // Claude Code asks for 32000 or 64000 output tokens, other clients more: without a
        // configured cap, every count the provider could accept passes.
        let v = Validator::new(&ValidationConfig::default());
        let messages = r#"{"model": "m", "max_tokens": 64000, "messages": [{"role": "user"}]}"#;
        assert_eq!(check(&v, RequestKind::Messages, messages, CAP), Ok(Some(64000)));
        let chat = r#"{"messages": [{"role": "user"}], "max_completion_tokens": 128000}"#;
        assert_eq!(check(&v, RequestKind::ChatCompletions, chat, CAP), Ok(Some(128000)));
        let gem =
            r#"{"contents": [{"parts": []}], "generationConfig": {"maxOutputTokens": 65536}}"#;
        assert_eq!(check(&v, RequestKind::GeminiGenerate, gem, CAP), Ok(Some(65536)));
        // A provider's own cap still applies, and is the key the message names.
        let cap = TokenCap { provider_max_tokens: NonZeroU32::new(32000), provider: "claude" };
        let error = check(&v, RequestKind::Messages, messages, cap).unwrap_err().to_string();
        assert_eq!(
            error,
            "`max_tokens` is 64000, over this gateway's limit of 32000 (the provider's cap)"
        );
    }

    #[test]
    fn the_stricter_of_the_global_and_the_provider_cap_applies() {
        let chat = r#"{"messages": [{"role": "user"}], "max_tokens": 5000}"#;
        // A provider cap above the global one does not lift it.
        let loose = TokenCap { provider_max_tokens: NonZeroU32::new(8000), provider: "claude" };
        let error = check(&validator(1000), RequestKind::ChatCompletions, chat, loose)
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "`max_tokens` is 5000, over this gateway's limit of 1000 \
             (the validator's cap)"
        );
        // A provider cap below the global one holds for that provider.
        let strict = TokenCap { provider_max_tokens: NonZeroU32::new(100), provider: "claude" };
        let error = check(&validator(8000), RequestKind::ChatCompletions, chat, strict)
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "`max_tokens` is 5000, over this gateway's limit of 100 (the provider's cap)"
        );
        assert_eq!(
            check(&validator(8000), RequestKind::ChatCompletions, chat, CAP),
            Ok(Some(5000))
        );
    }

    #[test]
    fn hostile_token_values_are_refused_even_with_validation_off() {
        let off =
            Validator::new(&ValidationConfig { enabled: false, max_tokens: Some(NonZeroU32::MIN) });
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
            Err(Invalid::new("`max_tokens` must be a whole number of at least 1".to_owned()))
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
            let error = check(&v, kind, body, CAP).unwrap_err().to_string();
            assert_eq!(error, expected, "{kind:?} {body}");
        }
    }

    /// The message a body with a repeated key gets.
    const DUPLICATE: &str = "the request body has an object with the same key twice \
        (this gateway would read the last, the provider may read the first); send each key once";

    #[test]
    fn every_spelling_of_the_gemini_token_field_is_capped() {
        // Google parses the body with the proto3 JSON mapping, which accepts a field's
        // lowerCamelCase name and its original snake_case name alike, at every level.
        let v = validator(4096);
        for (config, field) in [
            ("generationConfig", "maxOutputTokens"),
            ("generationConfig", "max_output_tokens"),
            ("generation_config", "maxOutputTokens"),
            ("generation_config", "max_output_tokens"),
        ] {
            let body =
                format!(r#"{{"contents": [{{"parts": []}}], "{config}": {{"{field}": 5000}}}}"#);
            assert_eq!(
                check(&v, RequestKind::GeminiGenerate, &body, CAP),
                Err(Invalid::over_cap(
                    format!("`{config}.{field}` is 5000, over this gateway's limit of 4096"),
                    CapOwner::Validator
                )),
                "{body}"
            );
            let body =
                format!(r#"{{"contents": [{{"parts": []}}], "{config}": {{"{field}": 7}}}}"#);
            assert_eq!(check(&v, RequestKind::GeminiGenerate, &body, CAP), Ok(Some(7)), "{body}");
            // A token count that is not a whole number is refused under every spelling, with
            // validation off too: the provider would read it as a number (proto3 JSON takes
            // `"5000"` for an integer), the token limits could not.
            let off = Validator::new(&ValidationConfig {
                enabled: false,
                max_tokens: Some(NonZeroU32::MIN),
            });
            let body =
                format!(r#"{{"contents": [{{"parts": []}}], "{config}": {{"{field}": "5000"}}}}"#);
            assert_eq!(
                check(&off, RequestKind::GeminiGenerate, &body, CAP),
                Err(Invalid::new(format!("`{config}.{field}` must be a number"))),
                "{body}"
            );
        }
    }

    #[test]
    fn two_spellings_of_one_field_must_agree() {
        let v = validator(4096);
        let gemini = |rest: &str| format!(r#"{{"contents": [{{"parts": []}}], {rest}}}"#);
        let refused = [
            (
                gemini(
                    r#""generationConfig": {"maxOutputTokens": 1, "max_output_tokens": 100000}"#,
                ),
                "`generationConfig.maxOutputTokens` and `generationConfig.max_output_tokens` \
                 differ (the provider may read either); send one of them",
            ),
            // `null` is a value too: the provider reads it as "unset", the model's own limit.
            (
                gemini(r#""generationConfig": {"max_output_tokens": 10, "maxOutputTokens": null}"#),
                "`generationConfig.maxOutputTokens` and `generationConfig.max_output_tokens` \
                 differ (the provider may read either); send one of them",
            ),
            (
                gemini(r#""generationConfig": {"maxOutputTokens": 10}, "generation_config": {}"#),
                "`generationConfig` and `generation_config` are one field spelt two ways \
                 (the provider may read either); send one of them",
            ),
        ];
        for (body, expected) in refused {
            let error = check(&v, RequestKind::GeminiGenerate, &body, CAP).unwrap_err().to_string();
            assert_eq!(error, expected, "{body}");
        }
        let same = gemini(r#""generationConfig": {"maxOutputTokens": 9, "max_output_tokens": 9}"#);
        assert_eq!(check(&v, RequestKind::GeminiGenerate, &same, CAP), Ok(Some(9)));

        // OpenAI's two chat fields: a client may send both (some do, with one value), and
        // `null` is OpenAI's "not set", so only two numbers that differ are refused.
        let chat = |rest: &str| format!(r#"{{"messages": [{{"role": "user"}}], {rest}}}"#);
        let error = check(
            &v,
            RequestKind::ChatCompletions,
            &chat(r#""max_tokens": 1, "max_completion_tokens": 4000"#),
            CAP,
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            error,
            "`max_tokens` and `max_completion_tokens` differ (the provider may read either); \
             send one of them"
        );
        for (rest, tokens) in [
            (r#""max_tokens": 300, "max_completion_tokens": 300"#, Some(300)),
            (r#""max_tokens": null, "max_completion_tokens": 300"#, Some(300)),
            (r#""max_tokens": 300, "max_completion_tokens": null"#, Some(300)),
        ] {
            assert_eq!(check(&v, RequestKind::ChatCompletions, &chat(rest), CAP), Ok(tokens));
        }
        // The cap names the spelling the client used.
        let error =
            check(&v, RequestKind::ChatCompletions, &chat(r#""max_completion_tokens": 5000"#), CAP)
                .unwrap_err()
                .to_string();
        assert!(error.starts_with("`max_completion_tokens` is 5000, over"), "{error}");
    }

    #[test]
    fn a_key_given_twice_is_refused_at_any_level_with_validation_on_or_off() {
        let off =
            Validator::new(&ValidationConfig { enabled: false, max_tokens: Some(NonZeroU32::MIN) });
        let user = r#"{"role": "user", "content": "hi"}"#;
        let bodies = [
            // At the top level: the gateway reads 1, a provider may read 100000.
            format!(r#"{{"model": "m", "max_tokens": 100000, "max_tokens": 1, "messages": [{user}]}}"#),
            // `model` twice: routing and the client key's model list see the last.
            format!(r#"{{"model": "other", "model": "m", "max_tokens": 1, "messages": [{user}]}}"#),
            // In a nested object.
            format!(r#"{{"model": "m", "max_tokens": 1, "metadata": {{"a": 1, "b": 2, "a": 3}}, "messages": [{user}]}}"#),
            // In an object in an array, and deeper.
            format!(r#"{{"model": "m", "max_tokens": 1, "messages": [{user}, {{"role": "user", "role": "assistant"}}]}}"#),
            r#"{"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": [{"type": "text", "text": "a", "type": "image"}]}]}"#.to_owned(),
            format!(r#"{{"model": "m", "max_tokens": 1, "tools": [[[{{"x": {{"k": 1, "k": 1}}}}]]], "messages": [{user}]}}"#),
            // Equal once unescaped: a provider's parser unescapes keys before it compares them.
            format!(r#"{{"model": "m", "max_tokens": 100000, "max\u005ftokens": 1, "messages": [{user}]}}"#),
            r#"{"model": "m", "max_tokens": 1, "messages": [{"role": "user", "\u0072ole": "system"}]}"#.to_owned(),
            format!(r#"{{"model": "m", "max_tokens": 1, "x": {{"\u00e9": 1, "é": 2}}, "messages": [{user}]}}"#),
            // Inside the Gemini configuration.
            r#"{"contents": [{"parts": []}], "generationConfig": {"maxOutputTokens": 100000, "maxOutputTokens": 1}}"#.to_owned(),
        ];
        for body in &bodies {
            for kind in KINDS {
                for v in [&validator(4096), &off] {
                    assert_eq!(
                        check(v, kind, body, CAP),
                        Err(Invalid::new(DUPLICATE.to_owned())),
                        "{kind:?} {body}"
                    );
                }
            }
        }
        // Keys that only look alike are different keys.
        let alike = format!(
            r#"{{"model": "m", "max_tokens": 1, "Max_tokens": 2, "max_tokens ": 3, "x": {{"a": 1}}, "y": {{"a": 1}}, "messages": [{user}, {user}]}}"#
        );
        assert_eq!(check(&validator(4096), RequestKind::ChatCompletions, &alike, CAP), Ok(Some(1)));
    }

    #[test]
    fn a_repeated_key_is_found_in_a_large_object_wherever_it_is() {
        // Enough keys for the reader to sort them rather than compare each pair.
        let keys: Vec<String> = (0..5_000).map(|i| format!(r#""k{i}": {i}"#)).collect();
        let distinct = format!(r#"{{"input": "x", "o": {{{}}}}}"#, keys.join(", "));
        assert_eq!(check(&validator(4096), RequestKind::Embeddings, &distinct, CAP), Ok(None));
        for (first, second) in [(0, 4_999), (4_998, 4_999), (0, 1), (2_500, 17)] {
            let mut with = keys.clone();
            with[second] = format!(r#""k{first}": 0"#);
            let body = format!(r#"{{"input": "x", "o": {{{}}}}}"#, with.join(", "));
            assert_eq!(
                check(&validator(4096), RequestKind::Embeddings, &body, CAP),
                Err(Invalid::new(DUPLICATE.to_owned())),
                "k{first} at {second}"
            );
        }
    }

    /// The checks on a `serde_json::Value` (what the gateway parsed every body into before
    /// the one-pass reader), kept as the reference the reader must agree with. A `Value`
    /// keeps one value per key, so repeated keys are found here by a separate, slower walk:
    /// every object's keys in a `HashSet` of owned strings.
    mod reference {
        use std::collections::HashSet;
        use std::fmt::{self, Write as _};

        use serde::Deserialize;
        use serde::de::{MapAccess, SeqAccess, Visitor};
        use serde_json::Value;

        use super::super::{CapOwner, Invalid, REPEATED_KEY, RequestKind, TokenCap, Validator};

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
            let repeated = serde_json::from_slice::<Repeated>(body).unwrap().0;
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
                    let answer = check(validator, kind, &parsed, repeated, *cap);
                    let _ = write!(out, "; {kind:?} {answer:?}");
                }
            }
            out
        }

        /// Whether some object in a JSON text has a key twice.
        struct Repeated(bool);

        impl<'de> Deserialize<'de> for Repeated {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_any(RepeatedVisitor)
            }
        }

        struct RepeatedVisitor;

        impl<'de> Visitor<'de> for RepeatedVisitor {
            type Value = Repeated;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("JSON")
            }

            fn visit_bool<E>(self, _: bool) -> Result<Repeated, E> {
                Ok(Repeated(false))
            }

            fn visit_i64<E>(self, _: i64) -> Result<Repeated, E> {
                Ok(Repeated(false))
            }

            fn visit_u64<E>(self, _: u64) -> Result<Repeated, E> {
                Ok(Repeated(false))
            }

            fn visit_f64<E>(self, _: f64) -> Result<Repeated, E> {
                Ok(Repeated(false))
            }

            fn visit_str<E>(self, _: &str) -> Result<Repeated, E> {
                Ok(Repeated(false))
            }

            fn visit_unit<E>(self) -> Result<Repeated, E> {
                Ok(Repeated(false))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Repeated, A::Error> {
                let mut repeated = false;
                while let Some(Repeated(inner)) = seq.next_element()? {
                    repeated |= inner;
                }
                Ok(Repeated(repeated))
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Repeated, A::Error> {
                let mut seen = HashSet::new();
                let mut repeated = false;
                while let Some(key) = map.next_key::<String>()? {
                    repeated |= !seen.insert(key);
                    let Repeated(inner) = map.next_value()?;
                    repeated |= inner;
                }
                Ok(Repeated(repeated))
            }
        }

        fn check(
            v: &Validator,
            kind: RequestKind,
            body: &Value,
            repeated: bool,
            cap: TokenCap<'_>,
        ) -> Result<Option<u64>, Invalid> {
            if repeated {
                return Err(Invalid::new(REPEATED_KEY.to_owned()));
            }
            let requested = requested_tokens(kind, body)?;
            if !v.enabled {
                return Ok(requested.map(|(_, tokens)| tokens));
            }
            required_fields(kind, body)?;
            // Each set cap is a candidate; the smallest holds, the provider's on a tie.
            let mut caps: Vec<(u32, CapOwner)> = Vec::new();
            if let Some(limit) = cap.provider_max_tokens {
                caps.push((limit.get(), CapOwner::Provider));
            }
            if let Some(limit) = v.max_tokens {
                caps.push((limit.get(), CapOwner::Validator));
            }
            caps.sort_by_key(|(limit, _)| *limit);
            if let Some((field, requested)) = &requested
                && let Some((limit, owner)) = caps.first()
                && *requested > u64::from(*limit)
            {
                return Err(Invalid::over_cap(
                    format!("`{field}` is {requested}, over this gateway's limit of {limit}"),
                    *owner,
                ));
            }
            Ok(requested.map(|(_, tokens)| tokens))
        }

        fn requested_tokens(
            kind: RequestKind,
            body: &Value,
        ) -> Result<Option<(String, u64)>, Invalid> {
            // (name, value, whether `null` is a value the others must agree with)
            let mut fields: Vec<(String, Option<&Value>)> = Vec::new();
            let mut null_counts = false;
            match kind {
                RequestKind::ChatCompletions => {
                    for name in ["max_tokens", "max_completion_tokens"] {
                        fields.push((name.to_owned(), body.get(name)));
                    }
                }
                RequestKind::Responses => {
                    fields.push(("max_output_tokens".to_owned(), body.get("max_output_tokens")));
                }
                RequestKind::Messages | RequestKind::CountTokens | RequestKind::Completions => {
                    fields.push(("max_tokens".to_owned(), body.get("max_tokens")));
                }
                RequestKind::GeminiGenerate => {
                    let configs: Vec<&str> = ["generationConfig", "generation_config"]
                        .into_iter()
                        .filter(|name| body.get(name).is_some())
                        .collect();
                    if configs.len() == 2 {
                        return Err(Invalid::new(
                            "`generationConfig` and `generation_config` are one field spelt \
                             two ways (the provider may read either); send one of them"
                                .to_owned(),
                        ));
                    }
                    if let Some(config) = configs.first() {
                        for name in ["maxOutputTokens", "max_output_tokens"] {
                            let value = body[config].get(name);
                            fields.push((format!("{config}.{name}"), value));
                        }
                    }
                    null_counts = true;
                }
                RequestKind::Embeddings => {}
            }
            let mut found: Option<(String, Option<u64>)> = None;
            for (name, value) in fields {
                let tokens = match value {
                    None => continue,
                    Some(Value::Null) if !null_counts => continue,
                    Some(Value::Null) => None,
                    Some(Value::Number(n)) => match n.as_u64().filter(|&tokens| tokens > 0) {
                        Some(tokens) => Some(tokens),
                        None => {
                            return Err(Invalid::new(format!(
                                "`{name}` must be a whole number of at least 1"
                            )));
                        }
                    },
                    Some(_) => return Err(Invalid::new(format!("`{name}` must be a number"))),
                };
                match &found {
                    None => found = Some((name, tokens)),
                    Some((first, earlier)) if *earlier != tokens => {
                        return Err(Invalid::new(format!(
                            "`{first}` and `{name}` differ (the provider may read either); \
                             send one of them"
                        )));
                    }
                    Some(_) => {}
                }
            }
            Ok(found.and_then(|(name, tokens)| Some((name, tokens?))))
        }

        fn required_fields(kind: RequestKind, body: &Value) -> Result<(), Invalid> {
            let non_empty_array = |name: &str| -> Result<&Vec<Value>, Invalid> {
                match body.get(name) {
                    Some(Value::Array(items)) if !items.is_empty() => Ok(items),
                    Some(Value::Array(_)) => {
                        Err(Invalid::new(format!("`{name}` must not be empty")))
                    }
                    Some(_) => Err(Invalid::new(format!("`{name}` must be an array"))),
                    None => Err(Invalid::new(format!("the request has no `{name}`"))),
                }
            };
            let with_role = |items: &Vec<Value>, name: &str| -> Result<(), Invalid> {
                for (index, item) in items.iter().enumerate() {
                    if !item.get("role").is_some_and(Value::is_string) {
                        return Err(Invalid::new(format!(
                            "`{name}[{index}]` needs a string `role`"
                        )));
                    }
                }
                Ok(())
            };
            match kind {
                RequestKind::ChatCompletions => with_role(non_empty_array("messages")?, "messages"),
                RequestKind::Messages => {
                    with_role(non_empty_array("messages")?, "messages")?;
                    if body.get("max_tokens").is_none() {
                        return Err(Invalid::new(
                            "the request has no `max_tokens` (the Messages API requires it)"
                                .to_owned(),
                        ));
                    }
                    Ok(())
                }
                RequestKind::CountTokens => with_role(non_empty_array("messages")?, "messages"),
                RequestKind::Responses | RequestKind::Embeddings => match body.get("input") {
                    Some(Value::String(_) | Value::Array(_)) => Ok(()),
                    Some(_) => Err(Invalid::new("`input` must be a string or an array".to_owned())),
                    None => Err(Invalid::new("the request has no `input`".to_owned())),
                },
                RequestKind::GeminiGenerate => non_empty_array("contents").map(|_| ()),
                RequestKind::Completions => Ok(()),
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

    /// Validation on with the gateway's cap, a provider's, both (each the stricter), none,
    /// and off.
    fn checks() -> Vec<(Validator, TokenCap<'static>)> {
        let off =
            Validator::new(&ValidationConfig { enabled: false, max_tokens: Some(NonZeroU32::MIN) });
        let provider = TokenCap { provider_max_tokens: NonZeroU32::new(100), provider: "claude" };
        let uncapped = Validator::new(&ValidationConfig::default());
        vec![
            (validator(4096), CAP),
            (validator(4096), provider),
            (validator(50), provider),
            (uncapped.clone(), CAP),
            (uncapped, provider),
            (off, CAP),
        ]
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
            // Every spelling Google accepts, alone, together, agreeing or not.
            r#"{"contents": [1], "generation_config": {"max_output_tokens": 7}}"#,
            r#"{"contents": [1], "generation_config": {"maxOutputTokens": 5000}}"#,
            r#"{"contents": [1], "generationConfig": {"max_output_tokens": "7"}}"#,
            r#"{"contents": [1], "generationConfig": {"max_output_tokens": 7, "maxOutputTokens": 7}}"#,
            r#"{"contents": [1], "generationConfig": {"max_output_tokens": 7, "maxOutputTokens": 8}}"#,
            r#"{"contents": [1], "generationConfig": {"max_output_tokens": null, "maxOutputTokens": 8}}"#,
            r#"{"contents": [1], "generationConfig": {"max_output_tokens": null, "maxOutputTokens": null}}"#,
            r#"{"contents": [1], "generationConfig": {"max_output_tokens": 0, "maxOutputTokens": 8}}"#,
            r#"{"contents": [1], "generationConfig": {}, "generation_config": null}"#,
            r#"{"contents": [1], "generationConfig": 5, "generation_config": {"maxOutputTokens": 1}}"#,
            r#"{"contents": [1], "generation_config": [], "max_output_tokens": 9}"#,
            r#"{"contents": [1], "generation\u005fconfig": {"max\u005foutput_tokens": 9000}}"#,
            r#"{"messages": [{"role": "u"}], "max_tokens": 9, "max_completion_tokens": 9}"#,
            r#"{"messages": [{"role": "u"}], "max_tokens": null, "max_completion_tokens": 9}"#,
            r#"{"messages": [{"role": "u"}], "max_tokens": 9, "max_completion_tokens": "9"}"#,
            // Duplicate keys: refused, at any depth, compared unescaped.
            r#"{"x": {"a": 1, "a": 1}}"#,
            r#"{"x": [[{"a": 1}, {"a": 1, "b": [{"c": 1, "c": 2}]}]]}"#,
            r#"{"model": "m", "mod\u0065l": "m"}"#,
            r#"{"a": 1, "b": 2, "c": 3, "d": 4, "e": 5, "f": 6, "g": 7, "h": 8, "i": 9, "j": 10, "a": 11}"#,
            r#"{"a": 1, "b": 2, "c": 3, "d": 4, "e": 5, "f": 6, "g": 7, "h": 8, "i": 9, "j": 10, "k": 11}"#,
            r#"{"generationConfig": {"maxOutputTokens": 1, "maxOutputTokens": 1}}"#,
            r#"{"": 1, "": 2}"#,
            r#"{"\ud83d\ude00": 1, "😀": 2}"#,
            // Duplicate keys: the last one counts in the fields, and the checks refuse them.
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
            // A repeated key is refused by every check, with validation off too.
            (
                r#"{"max_tokens": 5, "max_tokens": "x", "messages": [{"role": "user"}]}"#,
                "ChatCompletions Err(Invalid { message: \"the request body has an object with the same key twice",
            ),
            (
                r#"{"messages": [{"role": "user", "role": 5}]}"#,
                "Embeddings Err(Invalid { message: \"the request body has an object with the same key twice",
            ),
            (
                r#"{"messages": [{"role": "user"}], "x": [{"a": {"b": 1, "\u0062": 2}}]}"#,
                "GeminiGenerate Err(Invalid { message: \"the request body has an object with the same key twice",
            ),
            (
                r#"{"contents": [1], "generationConfig": {"maxOutputTokens": 7}, "generationConfig": {"topK": 1}}"#,
                "GeminiGenerate Err(Invalid { message: \"the request body has an object with the same key twice",
            ),
            (
                r#"{"contents": [1], "generation_config": {"max_output_tokens": 7}}"#,
                "GeminiGenerate Ok(Some(7))",
            ),
            (
                r#"{"contents": [1], "generation_config": {"maxOutputTokens": 700}}"#,
                "`generation_config.maxOutputTokens` is 700, over this gateway's limit of 100",
            ),
            (
                r#"{"messages": [{"role": "u"}], "max_tokens": 99, "max_completion_tokens": 101}"#,
                "ChatCompletions Err(Invalid { message: \"`max_tokens` and `max_completion_tokens` differ",
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
