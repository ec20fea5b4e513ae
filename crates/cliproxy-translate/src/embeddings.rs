//! Embeddings between the two APIs that have them: OpenAI's `/v1/embeddings` and Gemini's
//! `embedContent` / `batchEmbedContents` (Anthropic has no embeddings API: a pair with it has
//! no counterpart). Texts only: both APIs embed text, and Gemini's other parts (images) have
//! no OpenAI counterpart.

use crate::error::json_problem;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Format;
use crate::error::{Error, Result};

/// An embeddings API, as a client calls it or a provider serves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmbeddingsApi {
    /// OpenAI `/v1/embeddings` (one text or several).
    OpenAi,
    /// Gemini `:embedContent` (one text).
    GeminiSingle,
    /// Gemini `:batchEmbedContents` (several texts).
    GeminiBatch,
}

/// What a translated embeddings request asked for, which its reply must honour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddingsCall {
    /// The client's API.
    pub client: EmbeddingsApi,
    /// The provider's API.
    pub provider: EmbeddingsApi,
    /// How many texts were sent, in order.
    pub texts: usize,
    /// Whether an OpenAI client asked for `encoding_format: base64` (little-endian `f32`s).
    pub base64: bool,
}

#[derive(Deserialize)]
struct OpenAiRequest {
    input: Input,
    #[serde(default)]
    dimensions: Option<u64>,
    #[serde(default)]
    encoding_format: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Input {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize, Serialize)]
struct Parts {
    parts: Vec<Part>,
}

#[derive(Deserialize, Serialize)]
struct Part {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    text: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GeminiSingle {
    content: Parts,
    #[serde(default)]
    output_dimensionality: Option<u64>,
}

#[derive(Deserialize)]
struct GeminiBatch {
    requests: Vec<GeminiSingle>,
}

/// The texts of a Gemini content: its text parts joined (Gemini embeds them as one text).
fn text_of(content: Parts, at: &str) -> Result<String> {
    let mut text = String::new();
    for (i, part) in content.parts.into_iter().enumerate() {
        match part.text {
            Some(piece) => text.push_str(&piece),
            None => {
                return Err(Error::unsupported(
                    format!("{at}.content.parts[{i}] (not text)"),
                    Format::OpenAiChat,
                ));
            }
        }
    }
    Ok(text)
}

/// Translates an embeddings request for `model` from the client's API to the provider's.
pub fn request(
    client: EmbeddingsApi,
    provider: EmbeddingsApi,
    body: &[u8],
    model: &str,
) -> Result<(Vec<u8>, EmbeddingsCall)> {
    let invalid = |e: serde_json::Error| Error::invalid("body", json_problem(&e));
    let (texts, dimensions, base64) = match client {
        EmbeddingsApi::OpenAi => {
            let request: OpenAiRequest = serde_json::from_slice(body).map_err(invalid)?;
            let texts = match request.input {
                Input::One(text) => vec![text],
                Input::Many(texts) => texts,
            };
            let base64 = match request.encoding_format.as_deref() {
                None | Some("float") => false,
                Some("base64") => true,
                Some(other) => {
                    return Err(Error::invalid(
                        "encoding_format",
                        format!("`{other}` is neither float nor base64"),
                    ));
                }
            };
            (texts, request.dimensions, base64)
        }
        EmbeddingsApi::GeminiSingle => {
            let request: GeminiSingle = serde_json::from_slice(body).map_err(invalid)?;
            (vec![text_of(request.content, "body")?], request.output_dimensionality, false)
        }
        EmbeddingsApi::GeminiBatch => {
            let request: GeminiBatch = serde_json::from_slice(body).map_err(invalid)?;
            let mut dimensions = None;
            let mut texts = Vec::with_capacity(request.requests.len());
            for (i, single) in request.requests.into_iter().enumerate() {
                dimensions = dimensions.or(single.output_dimensionality);
                texts.push(text_of(single.content, &format!("requests[{i}]"))?);
            }
            (texts, dimensions, false)
        }
    };
    if texts.is_empty() {
        return Err(Error::invalid("input", "no text to embed"));
    }
    let call = EmbeddingsCall { client, provider, texts: texts.len(), base64 };
    let out = match provider {
        EmbeddingsApi::OpenAi => {
            let mut out =
                serde_json::json!({"model": model, "input": texts, "encoding_format": "float"});
            if let Some(dimensions) = dimensions {
                out["dimensions"] = dimensions.into();
            }
            out
        }
        EmbeddingsApi::GeminiSingle | EmbeddingsApi::GeminiBatch => {
            let requests: Vec<Value> = texts
                .into_iter()
                .map(|text| {
                    let mut one = serde_json::json!({"model": format!("models/{model}"),
                        "content": {"parts": [{"text": text}]}});
                    if let Some(dimensions) = dimensions {
                        one["outputDimensionality"] = dimensions.into();
                    }
                    one
                })
                .collect();
            match (provider, requests.as_slice()) {
                (EmbeddingsApi::GeminiSingle, [one]) => one.clone(),
                _ => serde_json::json!({"requests": requests}),
            }
        }
    };
    let bytes = serde_json::to_vec(&out).map_err(|e| Error::invalid("body", e.to_string()))?;
    Ok((bytes, call))
}

#[derive(Deserialize)]
struct OpenAiReply {
    data: Vec<OpenAiVector>,
    #[serde(default)]
    usage: Option<OpenAiUsage>,
}

#[derive(Deserialize)]
struct OpenAiVector {
    #[serde(default)]
    index: Option<usize>,
    embedding: Vec<f64>,
}

#[derive(Deserialize)]
struct OpenAiUsage {
    #[serde(default)]
    prompt_tokens: u64,
}

#[derive(Deserialize)]
struct GeminiVector {
    values: Vec<f64>,
}

#[derive(Deserialize)]
struct GeminiSingleReply {
    embedding: GeminiVector,
}

#[derive(Deserialize)]
struct GeminiBatchReply {
    embeddings: Vec<GeminiVector>,
}

/// Translates the provider's embeddings reply for the client; `model` is the name the
/// client asked for.
pub fn response(call: &EmbeddingsCall, body: &[u8], model: &str) -> Result<Vec<u8>> {
    let invalid = |e: serde_json::Error| Error::invalid("reply", json_problem(&e));
    let (vectors, tokens) = match call.provider {
        EmbeddingsApi::OpenAi => {
            let mut reply: OpenAiReply = serde_json::from_slice(body).map_err(invalid)?;
            reply.data.sort_by_key(|v| v.index.unwrap_or(0));
            let tokens = reply.usage.map_or(0, |u| u.prompt_tokens);
            (reply.data.into_iter().map(|v| v.embedding).collect::<Vec<_>>(), tokens)
        }
        EmbeddingsApi::GeminiSingle => {
            let reply: GeminiSingleReply = serde_json::from_slice(body).map_err(invalid)?;
            (vec![reply.embedding.values], 0)
        }
        EmbeddingsApi::GeminiBatch => {
            let reply: GeminiBatchReply = serde_json::from_slice(body).map_err(invalid)?;
            (reply.embeddings.into_iter().map(|v| v.values).collect(), 0)
        }
    };
    if vectors.len() != call.texts {
        return Err(Error::invalid(
            "reply",
            format!("{} embeddings for {} texts", vectors.len(), call.texts),
        ));
    }
    let out = match call.client {
        EmbeddingsApi::OpenAi => {
            let data: Vec<Value> = vectors
                .into_iter()
                .enumerate()
                .map(|(index, vector)| {
                    let embedding = if call.base64 {
                        let bytes: Vec<u8> =
                            vector.iter().flat_map(|v| (*v as f32).to_le_bytes()).collect();
                        Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
                    } else {
                        Value::from(vector)
                    };
                    serde_json::json!({"object": "embedding", "index": index, "embedding": embedding})
                })
                .collect();
            serde_json::json!({"object": "list", "data": data, "model": model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})
        }
        EmbeddingsApi::GeminiSingle => {
            let values = vectors.into_iter().next().unwrap_or_default();
            serde_json::json!({"embedding": {"values": values}})
        }
        EmbeddingsApi::GeminiBatch => {
            let embeddings: Vec<Value> =
                vectors.into_iter().map(|values| serde_json::json!({"values": values})).collect();
            serde_json::json!({"embeddings": embeddings})
        }
    };
    serde_json::to_vec(&out).map_err(|e| Error::invalid("reply", e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tree(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).unwrap_or_default()
    }

    #[test]
    fn openai_texts_reach_gemini_in_one_batch_and_come_back_as_base64_floats() {
        let (body, call) = request(
            EmbeddingsApi::OpenAi,
            EmbeddingsApi::GeminiBatch,
            br#"{"model":"e","input":["a","b"],"dimensions":3,"encoding_format":"base64"}"#,
            "gemini-embedding-001",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            tree(&body),
            json!({"requests": [
                {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "a"}]}, "outputDimensionality": 3},
                {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "b"}]}, "outputDimensionality": 3}]})
        );
        let reply = response(
            &call,
            br#"{"embeddings":[{"values":[0.5,-1.0,0.25]},{"values":[1.0,2.0,3.0]}]}"#,
            "e",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let reply = tree(&reply);
        assert_eq!(reply["object"], "list");
        assert_eq!(reply["data"][1]["index"], 1);
        let first = base64::engine::general_purpose::STANDARD
            .decode(reply["data"][0]["embedding"].as_str().unwrap_or_default())
            .unwrap_or_default();
        let floats: Vec<f32> =
            first.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        assert_eq!(floats, [0.5, -1.0, 0.25]);
    }

    #[test]
    fn a_gemini_batch_reaches_openai_and_comes_back_in_order() {
        let (body, call) = request(
            EmbeddingsApi::GeminiBatch,
            EmbeddingsApi::OpenAi,
            br#"{"requests":[{"model":"models/x","content":{"parts":[{"text":"a"},{"text":"b"}]}},{"model":"models/x","content":{"parts":[{"text":"c"}]}}]}"#,
            "text-embedding-3-small",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            tree(&body),
            json!({"model": "text-embedding-3-small", "input": ["ab", "c"], "encoding_format": "float"})
        );
        // OpenAI may list the vectors out of order: `index` says which is which.
        let reply = response(
            &call,
            br#"{"object":"list","data":[{"index":1,"embedding":[2.0]},{"index":0,"embedding":[1.0]}],"usage":{"prompt_tokens":4,"total_tokens":4}}"#,
            "x",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(tree(&reply), json!({"embeddings": [{"values": [1.0]}, {"values": [2.0]}]}));
    }

    #[test]
    fn malformed_and_mismatched_input_is_refused_clearly() {
        let cases: [(&[u8], &str); 4] = [
            (br#"{"input": 7}"#, "body"),
            (br#"{"input": []}"#, "no text"),
            (br#"{"input": "a", "encoding_format": "hex"}"#, "encoding_format"),
            (b"not json", "body"),
        ];
        for (body, expected) in cases {
            let error = request(EmbeddingsApi::OpenAi, EmbeddingsApi::GeminiBatch, body, "m")
                .map(|_| ())
                .unwrap_err()
                .to_string();
            assert!(error.contains(expected), "{error}");
        }
        let image =
            br#"{"content":{"parts":[{"inlineData":{"mimeType":"image/png","data":"AA=="}}]}}"#;
        let error = request(EmbeddingsApi::GeminiSingle, EmbeddingsApi::OpenAi, image, "m")
            .map(|_| ())
            .unwrap_err();
        assert!(matches!(error, Error::Unsupported { .. }), "{error}");
        let call = EmbeddingsCall {
            client: EmbeddingsApi::OpenAi,
            provider: EmbeddingsApi::GeminiBatch,
            texts: 2,
            base64: false,
        };
        let error = response(&call, br#"{"embeddings":[{"values":[1.0]}]}"#, "m").unwrap_err();
        assert!(error.to_string().contains("1 embeddings for 2 texts"), "{error}");
    }
}
