//! Request validation reads client JSON bodies in one pass (`RequestFields`): whatever the
//! body, it answers a token count or a message, never panics, and a count it accepts is within
//! the cap. It must also answer exactly as the checks did when the body was parsed into a
//! `serde_json::Value` (kept below as the reference): the same JSON error at the same place,
//! the same `model` and `stream`, the same verdict.
#![no_main]

use std::num::NonZeroU32;

use cliproxy_netguard::{
    Invalid, RequestFields, RequestKind, TokenCap, ValidationConfig, Validator,
};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const KINDS: [RequestKind; 6] = [
    RequestKind::ChatCompletions,
    RequestKind::Responses,
    RequestKind::Embeddings,
    RequestKind::Messages,
    RequestKind::CountTokens,
    RequestKind::GeminiGenerate,
];

fuzz_target!(|data: &[u8]| {
    let Some((&control, body)) = data.split_first() else { return };
    let mut config = ValidationConfig::default();
    config.enabled = control & 0x80 == 0;
    config.max_tokens = NonZeroU32::new(u32::from(control & 0x7f) * 16 + 1).unwrap();
    let validator = Validator::new(&config);
    let kind = KINDS[usize::from(control) % KINDS.len()];
    let cap = TokenCap { provider_max_tokens: None, provider: "fuzz" };

    let fields = RequestFields::from_slice(body);
    let value = serde_json::from_slice::<Value>(body);
    let (fields, value) = match (fields, value) {
        (Ok(fields), Ok(value)) => (fields, value),
        (Err(new), Err(old)) => {
            assert_eq!(new.to_string(), old.to_string());
            return;
        }
        (new, old) => panic!("the readings disagree: {new:?} against {old:?}"),
    };
    assert_eq!(fields.is_object(), value.is_object());
    if value.is_object() {
        assert_eq!(fields.model().ok(), reference::model(&value).ok());
        assert_eq!(fields.stream().ok(), reference::stream(&value).ok());
    }
    let checked = validator.check(kind, &fields, cap);
    assert_eq!(checked, reference::check(&config, kind, &value, cap));
    if config.enabled
        && let Ok(Some(tokens)) = checked
    {
        assert!(tokens <= u64::from(config.max_tokens.get()));
    }
});

/// The checks as they were on a `Value`.
mod reference {
    use super::*;

    /// `model` as the gateway's `Peek` read it from the tree.
    pub fn model(body: &Value) -> Result<Option<&str>, ()> {
        match body.get("model") {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(model)) => Ok(Some(model)),
            Some(_) => Err(()),
        }
    }

    /// `stream` as the gateway's `Peek` read it from the tree.
    pub fn stream(body: &Value) -> Result<Option<bool>, ()> {
        match body.get("stream") {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(stream)) => Ok(Some(*stream)),
            Some(_) => Err(()),
        }
    }

    pub fn check(
        config: &ValidationConfig,
        kind: RequestKind,
        body: &Value,
        cap: TokenCap<'_>,
    ) -> Result<Option<u64>, Invalid> {
        let requested = requested_tokens(kind, body)?;
        if !config.enabled {
            return Ok(requested);
        }
        required_fields(kind, body)?;
        let (limit, key) = match cap.provider_max_tokens {
            Some(limit) => (limit, format!("providers.{}.max_tokens", cap.provider)),
            None => (config.max_tokens, "server.security.request_validation.max_tokens".to_owned()),
        };
        if let Some(requested) = requested
            && requested > u64::from(limit.get())
        {
            let field = match kind {
                RequestKind::Responses => "max_output_tokens",
                RequestKind::GeminiGenerate => "generationConfig.maxOutputTokens",
                _ => "max_tokens",
            };
            return Err(Invalid(format!(
                "`{field}` is {requested}, over this gateway's limit of {limit} ({key})"
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
            _ => &[],
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
            RequestKind::ChatCompletions | RequestKind::CountTokens => {
                with_role(non_empty_array("messages")?, "messages")
            }
            RequestKind::Messages => {
                with_role(non_empty_array("messages")?, "messages")?;
                if body.get("max_tokens").is_none() {
                    return Err(Invalid(
                        "the request has no `max_tokens` (the Messages API requires it)".to_owned(),
                    ));
                }
                Ok(())
            }
            RequestKind::Responses | RequestKind::Embeddings => match body.get("input") {
                Some(Value::String(_) | Value::Array(_)) => Ok(()),
                Some(_) => Err(Invalid("`input` must be a string or an array".to_owned())),
                None => Err(Invalid("the request has no `input`".to_owned())),
            },
            RequestKind::GeminiGenerate => non_empty_array("contents").map(|_| ()),
            _ => Ok(()),
        }
    }
}
