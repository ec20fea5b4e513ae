//! Request validation reads client JSON bodies in one pass (`RequestFields`): whatever the
//! body, it answers a token count or a message, never panics, and a count it accepts is within
//! the cap. It must also answer exactly as the same checks do on a `serde_json::Value` of the
//! body (kept below as the reference): the same JSON error at the same place, the same `model`,
//! `stream` and `stream_options.include_usage`, the same verdict. A `Value` keeps one value per key, so the reference finds a
//! key given twice with a walk of its own (a `HashSet` of owned keys per object).
#![no_main]

use std::num::NonZeroU32;

use cliproxy_netguard::{
    CapOwner, Invalid, RequestFields, RequestKind, TokenCap, UsageOption, ValidationConfig,
    Validator,
};
use libfuzzer_sys::fuzz_target;
use serde::Deserialize;
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
    // The top eight values of bits 0-6 set no cap (the default); the rest a cap of x16 + 1.
    config.max_tokens = (control & 0x7f < 0x78)
        .then(|| NonZeroU32::new(u32::from(control & 0x7f) * 16 + 1).unwrap());
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
    assert_eq!(fields.usage_option(), reference::usage_option(&value));
    let repeated = serde_json::from_slice::<reference::Repeated>(body).unwrap().0;
    assert_eq!(fields.has_repeated_key(), repeated);
    let checked = validator.check(kind, &fields, cap);
    assert_eq!(checked, reference::check(&config, kind, &value, repeated, cap));
    if config.enabled
        && let Ok(Some(tokens)) = checked
        && let Some(cap) = config.max_tokens
    {
        assert!(tokens <= u64::from(cap.get()));
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

    /// Whether `stream_options.include_usage` asks for a stream's usage, read from the tree.
    pub fn usage_option(body: &Value) -> UsageOption {
        match body.get("stream_options") {
            None => UsageOption::Missing,
            Some(options) if options.get("include_usage") == Some(&Value::Bool(true)) => {
                UsageOption::Asked
            }
            Some(_) => UsageOption::NotAsked,
        }
    }

    /// Whether some object in a JSON text has a key twice.
    pub struct Repeated(pub bool);

    impl<'de> Deserialize<'de> for Repeated {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(RepeatedVisitor)
        }
    }

    struct RepeatedVisitor;

    impl<'de> serde::de::Visitor<'de> for RepeatedVisitor {
        type Value = Repeated;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
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

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Repeated, A::Error> {
            let mut repeated = false;
            while let Some(Repeated(inner)) = seq.next_element()? {
                repeated |= inner;
            }
            Ok(Repeated(repeated))
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Repeated, A::Error> {
            let mut seen = std::collections::HashSet::new();
            let mut repeated = false;
            while let Some(key) = map.next_key::<String>()? {
                repeated |= !seen.insert(key);
                let Repeated(inner) = map.next_value()?;
                repeated |= inner;
            }
            Ok(Repeated(repeated))
        }
    }

    pub fn check(
        config: &ValidationConfig,
        kind: RequestKind,
        body: &Value,
        repeated: bool,
        cap: TokenCap<'_>,
    ) -> Result<Option<u64>, Invalid> {
        if repeated {
            return Err(Invalid::new(
                "the request body has an object with the same key twice (this gateway would \
                 read the last, the provider may read the first); send each key once"
                    .to_owned(),
            ));
        }
        let requested = requested_tokens(kind, body)?;
        if !config.enabled {
            return Ok(requested.map(|(_, tokens)| tokens));
        }
        required_fields(kind, body)?;
        // The stricter of the two caps holds, the provider's on a tie; none when neither is set.
        let global = config.max_tokens.map(|limit| (limit, CapOwner::Validator));
        let provider = cap.provider_max_tokens.map(|limit| (limit, CapOwner::Provider));
        let limit = match (provider, global) {
            (Some(p), Some(g)) => Some(if g.0 < p.0 { g } else { p }),
            (p, g) => p.or(g),
        };
        if let Some((field, requested)) = &requested
            && let Some((limit, owner)) = &limit
            && *requested > u64::from(limit.get())
        {
            return Err(Invalid::over_cap(
                format!("`{field}` is {requested}, over this gateway's limit of {limit}"),
                *owner,
            ));
        }
        Ok(requested.map(|(_, tokens)| tokens))
    }

    /// Every name the provider reads for the output-token limit; two that are set must agree
    /// (for Gemini's two spellings of one field, `null` is a value too).
    fn requested_tokens(kind: RequestKind, body: &Value) -> Result<Option<(String, u64)>, Invalid> {
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
            RequestKind::Messages | RequestKind::CountTokens => {
                fields.push(("max_tokens".to_owned(), body.get("max_tokens")));
            }
            RequestKind::GeminiGenerate => {
                let configs: Vec<&str> = ["generationConfig", "generation_config"]
                    .into_iter()
                    .filter(|name| body.get(name).is_some())
                    .collect();
                if configs.len() == 2 {
                    return Err(Invalid::new(
                        "`generationConfig` and `generation_config` are one field spelt two ways \
                         (the provider may read either); send one of them"
                            .to_owned(),
                    ));
                }
                if let Some(config) = configs.first() {
                    for name in ["maxOutputTokens", "max_output_tokens"] {
                        fields.push((format!("{config}.{name}"), body[config].get(name)));
                    }
                }
                null_counts = true;
            }
            _ => {}
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
                        "`{first}` and `{name}` differ (the provider may read either); send one of them"
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
                Some(Value::Array(_)) => Err(Invalid::new(format!("`{name}` must not be empty"))),
                Some(_) => Err(Invalid::new(format!("`{name}` must be an array"))),
                None => Err(Invalid::new(format!("the request has no `{name}`"))),
            }
        };
        let with_role = |items: &Vec<Value>, name: &str| -> Result<(), Invalid> {
            for (index, item) in items.iter().enumerate() {
                if !item.get("role").is_some_and(Value::is_string) {
                    return Err(Invalid::new(format!("`{name}[{index}]` needs a string `role`")));
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
                    return Err(Invalid::new(
                        "the request has no `max_tokens` (the Messages API requires it)".to_owned(),
                    ));
                }
                Ok(())
            }
            RequestKind::Responses | RequestKind::Embeddings => match body.get("input") {
                Some(Value::String(_) | Value::Array(_)) => Ok(()),
                Some(_) => Err(Invalid::new("`input` must be a string or an array".to_owned())),
                None => Err(Invalid::new("the request has no `input`".to_owned())),
            },
            RequestKind::GeminiGenerate => non_empty_array("contents").map(|_| ()),
            _ => Ok(()),
        }
    }
}
