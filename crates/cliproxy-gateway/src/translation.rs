//! The translation stage (SPEC §9): between routing and the upstream, a request whose
//! client format differs from the provider's wire format is rewritten for the provider, and
//! on the way back its reply, stream or error is rewritten for the client. Three notions
//! stay apart: the client's format (from the endpoint it called), the provider's wire format
//! (from its type and `api`), and the pair's translator (`cliproxy-translate`). When both
//! formats agree nothing is translated and the body goes as it came — only an alias's model
//! name is put in.

use std::time::Duration;

use bytes::Bytes;
use cliproxy_core::ErrorCode;
use cliproxy_translate::count_tokens;
use cliproxy_translate::embeddings::{self, EmbeddingsApi};
use cliproxy_translate::{Format, Pair};
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use serde_json::Value;

use crate::api::{ApiFormat, Endpoint};
use crate::config::{OpenAiApi, ProviderKind};
use crate::context::{OtherCall, RequestContext};
use crate::error::ApiError;
use crate::http_util::{Body, full};
use crate::{providers, upstream};

/// The client's format of a generating endpoint; `None` for the others (embeddings, token
/// counts, listings), which are not translated.
pub(crate) fn client_format(endpoint: &Endpoint<'_>) -> Option<Format> {
    match endpoint {
        Endpoint::ChatCompletions => Some(Format::OpenAiChat),
        Endpoint::Responses => Some(Format::OpenAiResponses),
        Endpoint::Messages => Some(Format::Anthropic),
        Endpoint::GeminiGenerate { .. } => Some(Format::Gemini),
        _ => None,
    }
}

/// The wire format a provider is called with for a client of `client`'s format. The mock
/// answers every format in its own; an OpenAI provider without `api` takes an OpenAI client's
/// request at the endpoint it called, and anyone else's at Chat Completions, the API every
/// OpenAI-compatible server has.
pub(crate) fn provider_format(
    kind: ProviderKind,
    api: Option<OpenAiApi>,
    client: Format,
) -> Format {
    match (kind, api) {
        (ProviderKind::Claude, _) => Format::Anthropic,
        (ProviderKind::Gemini, _) => Format::Gemini,
        (ProviderKind::Openai, Some(OpenAiApi::Chat)) => Format::OpenAiChat,
        (ProviderKind::Openai, Some(OpenAiApi::Responses)) => Format::OpenAiResponses,
        (ProviderKind::Openai, None) => match client {
            Format::OpenAiChat | Format::OpenAiResponses => client,
            _ => Format::OpenAiChat,
        },
        _ => client,
    }
}

/// The gateway's name for a wire format's family (the usage reader and the error renderer
/// work per family).
pub(crate) fn family(format: Format) -> ApiFormat {
    match format {
        Format::OpenAiChat | Format::OpenAiResponses => ApiFormat::OpenAi,
        Format::Anthropic => ApiFormat::Anthropic,
        Format::Gemini => ApiFormat::Gemini,
    }
}

/// An embeddings request between OpenAI's API and Gemini's (Anthropic has none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EmbeddingsApis {
    pub(crate) client: EmbeddingsApi,
    pub(crate) provider: EmbeddingsApi,
}

impl EmbeddingsApis {
    /// The formats whose error bodies the two sides speak.
    pub(crate) fn pair(self) -> Pair {
        let format = |api| match api {
            EmbeddingsApi::OpenAi => Format::OpenAiChat,
            EmbeddingsApi::GeminiSingle | EmbeddingsApi::GeminiBatch => Format::Gemini,
        };
        Pair::new(format(self.client), format(self.provider))
    }
}

/// A request to an endpoint that is not a generation but has a counterpart in the
/// provider's API: embeddings (OpenAI's and Gemini's) and token counts (Anthropic's and
/// Gemini's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OtherApis {
    Embeddings(EmbeddingsApis),
    CountTokens(Pair),
}

impl OtherApis {
    /// The formats whose error bodies the two sides speak.
    pub(crate) fn pair(self) -> Pair {
        match self {
            Self::Embeddings(apis) => apis.pair(),
            Self::CountTokens(pair) => pair,
        }
    }
}

/// The APIs of a request to an embeddings or token-count endpoint whose provider speaks the
/// other API; `None` for any other request (the mock answers every API itself).
pub(crate) fn other_apis(endpoint: &Endpoint<'_>, kind: ProviderKind) -> Option<OtherApis> {
    match (endpoint, kind) {
        (Endpoint::CountTokens, ProviderKind::Gemini) => {
            return Some(OtherApis::CountTokens(Pair::new(Format::Anthropic, Format::Gemini)));
        }
        (Endpoint::GeminiCountTokens { .. }, ProviderKind::Claude) => {
            return Some(OtherApis::CountTokens(Pair::new(Format::Gemini, Format::Anthropic)));
        }
        _ => {}
    }
    let client = match endpoint {
        Endpoint::Embeddings => EmbeddingsApi::OpenAi,
        Endpoint::GeminiEmbed { batch: false, .. } => EmbeddingsApi::GeminiSingle,
        Endpoint::GeminiEmbed { batch: true, .. } => EmbeddingsApi::GeminiBatch,
        _ => return None,
    };
    let provider = match (kind, client) {
        (ProviderKind::Openai, EmbeddingsApi::GeminiSingle | EmbeddingsApi::GeminiBatch) => {
            EmbeddingsApi::OpenAi
        }
        (ProviderKind::Gemini, EmbeddingsApi::OpenAi) => EmbeddingsApi::GeminiBatch,
        _ => return None,
    };
    Some(OtherApis::Embeddings(EmbeddingsApis { client, provider }))
}

/// Translates an embeddings or token-count request for the provider's API; the call is what
/// its reply needs.
pub(crate) fn other_request(
    apis: OtherApis,
    body: &[u8],
    model: &str,
    provider: &str,
) -> Result<(Rewritten, OtherCall), ApiError> {
    match apis {
        OtherApis::Embeddings(apis) => {
            let (body, call) = embeddings::request(apis.client, apis.provider, body, model)
                .map_err(|e| refused(&e, provider))?;
            let path = match apis.provider {
                EmbeddingsApi::OpenAi => "/v1/embeddings".to_owned(),
                EmbeddingsApi::GeminiSingle => format!("/v1beta/models/{model}:embedContent"),
                EmbeddingsApi::GeminiBatch => {
                    format!("/v1beta/models/{model}:batchEmbedContents")
                }
            };
            let rewritten = Rewritten { body: Bytes::from(body), path_and_query: Some(path) };
            Ok((rewritten, OtherCall::Embeddings(call)))
        }
        OtherApis::CountTokens(pair) => {
            let body =
                count_tokens::request(pair, body, model).map_err(|e| refused(&e, provider))?;
            let path = match pair.provider {
                Format::Gemini => format!("/v1beta/models/{model}:countTokens"),
                _ => "/v1/messages/count_tokens".to_owned(),
            };
            let rewritten = Rewritten { body: Bytes::from(body), path_and_query: Some(path) };
            Ok((rewritten, OtherCall::CountTokens))
        }
    }
}

/// What goes upstream for a translated request, or for an alias.
#[derive(Debug)]
pub(crate) struct Rewritten {
    pub(crate) body: Bytes,
    /// The upstream path and query, when it is not the one the client called.
    pub(crate) path_and_query: Option<String>,
}

/// The path of `format`'s generating endpoint for `model`.
fn upstream_path(format: Format, model: &str, stream: bool) -> String {
    match format {
        Format::OpenAiChat => "/v1/chat/completions".to_owned(),
        Format::OpenAiResponses => "/v1/responses".to_owned(),
        Format::Anthropic => "/v1/messages".to_owned(),
        Format::Gemini if stream => format!("/v1beta/models/{model}:streamGenerateContent?alt=sse"),
        Format::Gemini => format!("/v1beta/models/{model}:generateContent"),
    }
}

/// Translates a client's request for the provider: `model` is the provider's name for the
/// model (the alias's upstream, or the name asked for) and `stream` whether the client asked
/// for a stream (from the body, or from a Gemini path). A field the provider's format has
/// no counterpart for is a 400 naming it and the provider.
pub(crate) fn request(
    pair: Pair,
    body: &[u8],
    model: &str,
    stream: bool,
    provider: &str,
) -> Result<Rewritten, ApiError> {
    let mut request = pair.decode_request(body).map_err(|e| refused(&e, provider))?;
    model.clone_into(&mut request.model);
    request.stream = stream;
    let body = pair.encode_request(&request).map_err(|e| refused(&e, provider))?;
    Ok(Rewritten {
        body: Bytes::from(body),
        path_and_query: Some(upstream_path(pair.provider, model, stream)),
    })
}

/// Puts an alias's upstream name in a request that is not translated: in a Gemini path (and
/// the per-text model names of a batch embedding), or in the body's `model` (every other
/// API). Every other member, the query and the method stay as they came.
pub(crate) fn rename_model(
    endpoint: &Endpoint<'_>,
    parts: &http::request::Parts,
    body: Bytes,
    upstream: &str,
) -> Result<Rewritten, ApiError> {
    let unwritable =
        || ApiError::new(ErrorCode::Internal, "the request could not be written for the provider");
    let not_object =
        || ApiError::new(ErrorCode::BadRequest, "the request body is not a JSON object");
    let gemini_model = match endpoint {
        Endpoint::GeminiGenerate { model, .. }
        | Endpoint::GeminiCountTokens { model }
        | Endpoint::GeminiEmbed { model, .. } => Some(*model),
        _ => None,
    };
    let Some(model) = gemini_model else {
        let mut tree: serde_json::Map<String, Value> =
            serde_json::from_slice(&body).map_err(|_| not_object())?;
        tree.insert("model".to_owned(), Value::String(upstream.to_owned()));
        let body = serde_json::to_vec(&tree).map_err(|_| unwritable())?;
        return Ok(Rewritten { body: Bytes::from(body), path_and_query: None });
    };
    // The model sits between `models/` and the method's `:`.
    let path =
        parts.uri.path().replacen(&format!("/models/{model}:"), &format!("/models/{upstream}:"), 1);
    let path_and_query = Some(upstream::upstream_path(&path, parts.uri.query()));
    let body = match endpoint {
        // Each text of a batch names its model too, which must be the path's.
        Endpoint::GeminiEmbed { batch: true, .. } => {
            let mut tree: Value = serde_json::from_slice(&body).map_err(|_| not_object())?;
            if let Some(requests) = tree.get_mut("requests").and_then(Value::as_array_mut) {
                for request in requests {
                    if let Some(one) = request.as_object_mut() {
                        one.insert("model".to_owned(), Value::String(format!("models/{upstream}")));
                    }
                }
            }
            Bytes::from(serde_json::to_vec(&tree).map_err(|_| unwritable())?)
        }
        _ => body,
    };
    Ok(Rewritten { body, path_and_query })
}

/// The largest whole (not streamed) reply translated: a reply is read whole before it can be
/// translated, and one past this is refused rather than held.
const MAX_REPLY: usize = 16 * 1024 * 1024;

/// The provider's answer to a translated request, for the client: a stream is passed on
/// for the response stage to translate as it arrives (`translate_stream.rs`); a whole reply
/// or an error is read (within `wait`, capped), cleared of the credential the gateway sent,
/// and written in the client's format.
pub(crate) async fn reply(
    pair: Pair,
    upstream: Response<Body>,
    sse: bool,
    wait: Duration,
    provider: &str,
    secret: &str,
    ctx: &mut RequestContext,
) -> Result<Response<Body>, ApiError> {
    let (upstream, body) = upstream.into_parts();
    ctx.proxied = true;
    let mut headers = upstream::forwardable_response_headers(&upstream.headers);
    headers.remove(header::CONTENT_LENGTH);
    if upstream.status.is_success() && sse {
        ctx.sse = true;
        // The usage reader reads the provider's own events.
        ctx.format = family(pair.provider);
        let mut response = Response::new(body);
        *response.status_mut() = upstream.status;
        *response.headers_mut() = headers;
        return Ok(response);
    }
    ctx.sse = false;
    // The usage reader reads the client's reply, which carries the provider's figures, unless
    // the provider's own were read from its reply below (`provider_usage`).
    ctx.format = family(pair.client);
    let cap = if upstream.status.is_success() { MAX_REPLY } else { providers::MAX_ERROR_BODY };
    let bytes = match tokio::time::timeout(wait, upstream::read_error_body(body, cap)).await {
        Ok(Ok(Some(bytes))) => upstream::redact(bytes, secret),
        Ok(Ok(None)) => {
            return Err(ApiError::new(
                ErrorCode::UpstreamFailure,
                format!(
                    "provider `{provider}` answered with a body over {} KiB, which the gateway does not translate",
                    cap / 1024
                ),
            ));
        }
        Ok(Err(_)) | Err(_) => {
            return Err(ApiError::new(
                ErrorCode::UpstreamFailure,
                format!("provider `{provider}`'s answer did not arrive whole within {wait:?}"),
            ));
        }
    };
    let (status, body) = if upstream.status.is_success() {
        // Read before translation, in the provider's format, which says all it reported.
        let mut scanner = crate::usage::UsageScanner::new(family(pair.provider), false);
        scanner.feed(&bytes);
        scanner.finish();
        ctx.provider_usage = scanner.usage();
        let translated = match &ctx.other {
            Some(OtherCall::Embeddings(call)) => {
                embeddings::response(call, &bytes, ctx.model.as_deref().unwrap_or(""))
            }
            Some(OtherCall::CountTokens) => count_tokens::response(pair, &bytes),
            None => pair.response(&bytes),
        };
        let body = translated.map_err(|error| {
            ApiError::new(
                ErrorCode::UpstreamFailure,
                format!(
                    "provider `{provider}` answered with a reply that could not be translated to the {} format: {error}",
                    pair.client
                ),
            )
        })?;
        (upstream.status, body)
    } else {
        let (status, body) = pair.error(upstream.status.as_u16(), &bytes);
        (StatusCode::from_u16(status).unwrap_or(upstream.status), body)
    };
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let mut response = Response::new(full(Bytes::from(body)));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    Ok(response)
}

/// A translation error as the client's 400: what is wrong, in the client's terms, and which
/// provider could not take it.
fn refused(error: &cliproxy_translate::Error, provider: &str) -> ApiError {
    ApiError::new(
        ErrorCode::BadRequest,
        format!("{error} (the model is served by provider `{provider}`)"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_provider_format_follows_its_type_and_api() {
        use Format::*;
        let cases = [
            (ProviderKind::Claude, None, OpenAiChat, Anthropic),
            (ProviderKind::Gemini, None, Anthropic, Gemini),
            (ProviderKind::Openai, None, OpenAiResponses, OpenAiResponses),
            (ProviderKind::Openai, None, OpenAiChat, OpenAiChat),
            (ProviderKind::Openai, None, Anthropic, OpenAiChat),
            (ProviderKind::Openai, Some(OpenAiApi::Responses), Gemini, OpenAiResponses),
            (ProviderKind::Openai, Some(OpenAiApi::Chat), OpenAiResponses, OpenAiChat),
            (ProviderKind::Mock, None, Gemini, Gemini),
        ];
        for (kind, api, client, expected) in cases {
            assert_eq!(provider_format(kind, api, client), expected, "{kind:?} {api:?} {client:?}");
        }
    }

    #[test]
    fn an_alias_is_put_in_the_body_or_the_path_and_nothing_else_changes() {
        let parts = |uri: &str| http::Request::post(uri).body(()).unwrap().into_parts().0;
        let messages = parts("/v1/messages?beta=true");
        let body =
            Bytes::from_static(br#"{"model":"sonnet","x-extra":{"kept":[1,2]},"stream":true}"#);
        let out = rename_model(&Endpoint::Messages, &messages, body, "claude-sonnet-4-5").unwrap();
        let tree: Value = serde_json::from_slice(&out.body).unwrap();
        assert_eq!(tree["model"], "claude-sonnet-4-5");
        assert_eq!(tree["x-extra"]["kept"][1], 2);
        assert_eq!(tree["stream"], true);
        assert!(out.path_and_query.is_none());

        // A Gemini stream keeps its API version and its choice of JSON array or events.
        let body = Bytes::from_static(br#"{"contents":[]}"#);
        for (uri, expected) in [
            (
                "/v1/models/pro:streamGenerateContent",
                "/v1/models/gemini-2.5-pro:streamGenerateContent",
            ),
            (
                "/v1beta/models/pro:streamGenerateContent?alt=sse",
                "/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse",
            ),
        ] {
            let endpoint = Endpoint::GeminiGenerate { model: "pro", stream: true };
            let out = rename_model(&endpoint, &parts(uri), body.clone(), "gemini-2.5-pro").unwrap();
            assert_eq!(out.body, body);
            assert_eq!(out.path_and_query.as_deref(), Some(expected));
        }
        // A batch embedding's texts name the model too.
        let endpoint = Endpoint::GeminiEmbed { model: "emb", batch: true };
        let body = Bytes::from_static(
            br#"{"requests":[{"model":"models/emb","content":{"parts":[{"text":"a"}]}}]}"#,
        );
        let out = rename_model(
            &endpoint,
            &parts("/v1beta/models/emb:batchEmbedContents"),
            body,
            "gemini-embedding-001",
        )
        .unwrap();
        let tree: Value = serde_json::from_slice(&out.body).unwrap();
        assert_eq!(tree["requests"][0]["model"], "models/gemini-embedding-001");
        assert_eq!(
            out.path_and_query.as_deref(),
            Some("/v1beta/models/gemini-embedding-001:batchEmbedContents")
        );
    }
}
