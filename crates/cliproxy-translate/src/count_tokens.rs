//! Token counts between the two APIs that have them: Anthropic's `/v1/messages/count_tokens`
//! and Gemini's `:countTokens`. Both count a whole generation request (system, turns, tools)
//! without generating, so a count is the pair's request translation with the count's own
//! envelope. OpenAI has no counterpart: a pair with it is refused by name.

use crate::error::json_problem;
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::{Format, Pair};

/// The fields Anthropic's count takes (its generation fields, `max_tokens` included, are
/// refused there).
const ANTHROPIC_COUNT_FIELDS: [&str; 6] =
    ["model", "messages", "system", "tools", "tool_choice", "thinking"];

fn object(body: &[u8], what: &str) -> Result<Map<String, Value>> {
    match serde_json::from_slice(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Error::invalid(what, "is not a JSON object")),
        Err(error) => Err(Error::invalid(what, json_problem(&error))),
    }
}

fn bytes(value: &Value) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| Error::invalid("body", e.to_string()))
}

/// Translates a count request of the client's API for the provider's, counting `model`.
pub fn request(pair: Pair, body: &[u8], model: &str) -> Result<Vec<u8>> {
    match (pair.client, pair.provider) {
        (Format::Anthropic, Format::Gemini) => {
            // A count carries no output limit, which a Messages request requires: a
            // stand-in lets the request decode, and the Gemini envelope leaves it out.
            let mut map = object(body, "body")?;
            map.entry("max_tokens").or_insert(Value::from(1));
            let mut request = pair.decode_request(&bytes(&Value::Object(map))?)?;
            model.clone_into(&mut request.model);
            let mut inner = object(&pair.encode_request(&request)?, "body")?;
            inner.remove("generationConfig");
            inner.insert("model".to_owned(), Value::String(format!("models/{model}")));
            bytes(&serde_json::json!({"generateContentRequest": inner}))
        }
        (Format::Gemini, Format::Anthropic) => {
            // `{contents}` alone, or a whole `generateContentRequest`.
            let mut map = object(body, "body")?;
            let inner = match map.remove("generateContentRequest") {
                Some(Value::Object(inner)) => inner,
                Some(_) => {
                    return Err(Error::invalid("generateContentRequest", "is not an object"));
                }
                None => map,
            };
            let mut request = pair.decode_request(&bytes(&Value::Object(inner))?)?;
            model.clone_into(&mut request.model);
            let mut out = object(&pair.encode_request(&request)?, "body")?;
            out.retain(|key, _| ANTHROPIC_COUNT_FIELDS.contains(&key.as_str()));
            bytes(&Value::Object(out))
        }
        (client, provider) if client == provider => Ok(body.to_vec()),
        (_, provider) => Err(Error::unsupported("count_tokens", provider)),
    }
}

/// Translates the provider's count for the client.
pub fn response(pair: Pair, body: &[u8]) -> Result<Vec<u8>> {
    let map = object(body, "reply")?;
    let count = |field: &str| {
        map.get(field)
            .and_then(Value::as_u64)
            .ok_or_else(|| Error::invalid(format!("reply.{field}"), "is not a token count"))
    };
    match (pair.client, pair.provider) {
        (Format::Anthropic, Format::Gemini) => {
            bytes(&serde_json::json!({"input_tokens": count("totalTokens")?}))
        }
        (Format::Gemini, Format::Anthropic) => {
            bytes(&serde_json::json!({"totalTokens": count("input_tokens")?}))
        }
        (client, provider) if client == provider => Ok(body.to_vec()),
        (_, provider) => Err(Error::unsupported("count_tokens", provider)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tree(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).unwrap_or_default()
    }

    #[test]
    fn an_anthropic_count_reaches_gemini_in_its_envelope() {
        let pair = Pair::new(Format::Anthropic, Format::Gemini);
        let body =
            br#"{"model":"x","system":"Be brief.","messages":[{"role":"user","content":"Hi"}]}"#;
        let out = tree(&request(pair, body, "gemini-2.5-pro").unwrap_or_else(|e| panic!("{e}")));
        let inner = &out["generateContentRequest"];
        assert_eq!(inner["model"], "models/gemini-2.5-pro");
        assert_eq!(inner["contents"][0]["parts"][0]["text"], "Hi");
        assert_eq!(inner["systemInstruction"]["parts"][0]["text"], "Be brief.");
        assert!(inner.get("generationConfig").is_none(), "{out}");
        let reply = response(pair, br#"{"totalTokens": 31, "promptTokensDetails": []}"#)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(tree(&reply), json!({"input_tokens": 31}));
    }

    #[test]
    fn a_gemini_count_reaches_anthropic_with_only_the_fields_it_takes() {
        let pair = Pair::new(Format::Gemini, Format::Anthropic);
        for body in [
            &br#"{"contents":[{"role":"user","parts":[{"text":"Hi"}]}]}"#[..],
            br#"{"generateContentRequest":{"model":"models/x","contents":[{"role":"user","parts":[{"text":"Hi"}]}],"generationConfig":{"temperature":0.5}}}"#,
        ] {
            let out = tree(&request(pair, body, "claude-sonnet-4-5").unwrap_or_else(|e| panic!("{e}")));
            assert_eq!(out["model"], "claude-sonnet-4-5");
            assert_eq!(out["messages"][0]["content"][0]["text"], "Hi", "{out}");
            assert!(out.get("max_tokens").is_none() && out.get("temperature").is_none(), "{out}");
        }
        let reply = response(pair, br#"{"input_tokens": 12}"#).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(tree(&reply), json!({"totalTokens": 12}));
    }

    #[test]
    fn openai_has_no_count_and_bad_bodies_are_named() {
        let error = request(Pair::new(Format::Anthropic, Format::OpenAiChat), b"{}", "m")
            .unwrap_err()
            .to_string();
        assert!(error.contains("count_tokens has no counterpart"), "{error}");
        let pair = Pair::new(Format::Gemini, Format::Anthropic);
        for (body, expected) in [
            (&b"[1]"[..], "not a JSON object"),
            (br#"{"generateContentRequest": 3}"#, "generateContentRequest"),
            (b"{", "body"),
        ] {
            let error = request(pair, body, "m").unwrap_err().to_string();
            assert!(error.contains(expected), "{error}");
        }
        let error = response(pair, br#"{"input_tokens": "many"}"#).unwrap_err().to_string();
        assert!(error.contains("reply.input_tokens"), "{error}");
    }
}
