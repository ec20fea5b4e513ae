//! Intake: what the request is. The endpoint its path names (and the API format its errors
//! are answered in), its body read within the size cap and the deadline, read once as JSON
//! for the fields that route and validate it, and the validation itself.

use bytes::Bytes;
use cliproxy_core::ErrorCode;
use cliproxy_netguard::{RejectionKind, RequestFields, UsageOption};
use http::header;
use http::{HeaderMap, request::Parts};
use http_body_util::{BodyExt, Limited};

use crate::api::{self, ApiFormat, Endpoint, RouteError};
use crate::config::LimitsConfig;
use crate::error::{ApiError, Refusal};
use crate::guard::Guard;
use crate::provider_set::Provider;

/// The endpoint `parts` names, and the API format to answer it (and its errors) in.
pub(crate) fn endpoint(parts: &Parts) -> Result<(Endpoint<'_>, ApiFormat), Refusal> {
    let path = parts.uri.path();
    // `/v1/` is OpenAI's and Anthropic's prefix (and Gemini's too): an error the path alone
    // would answer in OpenAI's format goes in the format of the SDK the headers name.
    let by_headers = |format| match format {
        ApiFormat::OpenAi => format_from_headers(&parts.headers),
        other => other,
    };
    let endpoint = api::route(&parts.method, path).map_err(|e| match e {
        RouteError::NotFound(format) => (
            by_headers(format),
            ApiError::new(ErrorCode::NotFound, format!("no route for {} {path}", parts.method)),
        ),
        RouteError::MethodNotAllowed(format, allow) => {
            let mut error = ApiError::new(
                ErrorCode::MethodNotAllowed,
                format!("{path} does not accept {}; use {allow}", parts.method),
            );
            error.allow = Some(allow.into());
            (by_headers(format), error)
        }
    })?;
    let format = match endpoint {
        // `/v1/models` is every SDK's: the answer (and its errors) takes the shape of the
        // API the client's headers say it speaks.
        Endpoint::Models { gemini: false } | Endpoint::Model { gemini: false, .. } => {
            format_from_headers(&parts.headers)
        }
        _ => endpoint.format(),
    };
    Ok((endpoint, format))
}

/// Reads the whole body, within `server.limits.max_body_bytes` and
/// `server.limits.body_read_timeout`.
pub(crate) async fn read_body<B>(
    parts: &Parts,
    body: B,
    limits: &LimitsConfig,
    format: ApiFormat,
) -> Result<Bytes, Refusal>
where
    B: http_body::Body<Data = Bytes> + Send,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let fail = |code, message: String| (format, ApiError::new(code, message));
    // Checked on Content-Length first, then while reading, so an oversized body is never
    // held in memory.
    let limit = limits.max_body_bytes.get();
    let too_large = || {
        fail(
            ErrorCode::PayloadTooLarge,
            format!("request body is larger than {limit} bytes (server.limits.max_body_bytes)"),
        )
    };
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(too_large());
    }
    // The whole body has a deadline, counted from here (the head is read and the key
    // checked): a client that sends the head and holds the body back would otherwise keep
    // its connection slot for as long as it likes. A deadline between chunks would not do:
    // one byte every few seconds would pass it.
    let body_timeout = limits.body_read_timeout;
    let read = tokio::time::timeout(body_timeout, Limited::new(body, limit).collect());
    match read.await {
        Err(_) => Err(fail(
            ErrorCode::RequestTimeout,
            format!(
                "the request body did not arrive within {body_timeout:?} (server.limits.body_read_timeout)"
            ),
        )),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Ok(Err(_)) => {
            Err(fail(ErrorCode::BadRequest, "the request body could not be read".to_owned()))
        }
    }
}

/// A request body as the gateway reads it.
pub(crate) struct Parsed<'b> {
    /// The fields validation and the usage option read, borrowed from the body.
    pub(crate) fields: RequestFields<'b>,
    /// The model asked for (from the path for Gemini's endpoints).
    pub(crate) model: String,
    /// Whether the answer is to be streamed.
    pub(crate) stream: bool,
}

/// Reads `body` once, in one pass and without building a tree: the model and stream flag
/// route the request, the token fields and message shapes feed validation; the body itself
/// goes upstream byte for byte.
pub(crate) fn parse<'b>(
    endpoint: &Endpoint<'_>,
    body: &'b [u8],
    format: ApiFormat,
) -> Result<Parsed<'b>, Refusal> {
    let fail = |code, message: String| (format, ApiError::new(code, message));
    let fields = RequestFields::from_slice(body).map_err(|e| {
        fail(
            ErrorCode::BadRequest,
            format!("request body is not valid JSON ({})", json_error_position(&e)),
        )
    })?;
    if !fields.is_object() {
        return Err(fail(ErrorCode::BadRequest, "request body must be a JSON object".to_owned()));
    }
    let (Ok(body_model), Ok(body_stream)) = (fields.model(), fields.stream()) else {
        return Err(fail(
            ErrorCode::BadRequest,
            "`model` must be a string and `stream` a boolean".to_owned(),
        ));
    };
    let (model, stream) = match *endpoint {
        Endpoint::GeminiGenerate { model, stream } => (model.to_owned(), stream),
        Endpoint::GeminiCountTokens { model } | Endpoint::GeminiEmbed { model, .. } => {
            (model.to_owned(), false)
        }
        _ => match body_model {
            Some(model) if !model.is_empty() => (model.to_owned(), body_stream.unwrap_or(false)),
            _ => {
                return Err(fail(ErrorCode::BadRequest, "the request has no `model`".to_owned()));
            }
        },
    };
    Ok(Parsed { fields, model, stream })
}

/// Validates the request; returns the output cap it asked for. Validation needs the
/// provider: its `max_tokens` caps its requests too.
pub(crate) fn validate(
    guard: &Guard,
    endpoint: &Endpoint<'_>,
    parsed: &Parsed<'_>,
    provider: &Provider,
    client_ip: std::net::IpAddr,
    format: ApiFormat,
) -> Result<Option<u64>, Refusal> {
    let cap = cliproxy_netguard::TokenCap {
        provider_max_tokens: provider.max_tokens,
        provider: &provider.name,
    };
    match endpoint.request_kind() {
        Some(kind) => guard.validator.check(kind, &parsed.fields, cap).map_err(|invalid| {
            let message = crate::netguard_keys::invalid_message(&invalid, &provider.name);
            guard.reject(RejectionKind::InvalidRequest, client_ip, &message);
            (format, ApiError::new(ErrorCode::BadRequest, message))
        }),
        None => Ok(None),
    }
}

/// Whether a streamed chat or legacy completions request asked for its usage: if not, the
/// gateway asks the provider for it and keeps it from the client (`stream_usage`). Both
/// endpoints take `stream_options` and answer it alike.
pub(crate) fn usage_option(endpoint: &Endpoint<'_>, parsed: &Parsed<'_>) -> Option<UsageOption> {
    (matches!(endpoint, Endpoint::ChatCompletions | Endpoint::Completions) && parsed.stream)
        .then(|| parsed.fields.usage_option())
        .filter(|option| *option != UsageOption::Asked)
}

/// Whether the query asks for server-sent events (`alt=sse`, Gemini's; read by the mock).
pub(crate) fn sse_query(parts: &Parts) -> bool {
    query_pairs(parts.uri.query()).any(|(k, v)| k == "alt" && v == "sse")
}

/// The API a caller of a path shared by several APIs (`/v1/models`) speaks, from the headers
/// its SDK sends: Anthropic's send `anthropic-version`, Google's send `x-goog-api-key`;
/// anything else gets OpenAI's shape.
fn format_from_headers(headers: &HeaderMap) -> ApiFormat {
    if headers.contains_key("anthropic-version") {
        ApiFormat::Anthropic
    } else if headers.contains_key("x-goog-api-key") {
        ApiFormat::Gemini
    } else {
        ApiFormat::OpenAi
    }
}

/// Splits a query string into pairs, not decoded: only the mock's `alt=sse` is read from them
/// (credentials in the query are judged, decoded, by `upstream::query_holds_credential`).
fn query_pairs(query: Option<&str>) -> impl Iterator<Item = (&str, &str)> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
}

/// Where a JSON error is, without echoing any of the input (it may hold a secret).
fn json_error_position(error: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let what = match error.classify() {
        Category::Syntax => "syntax error",
        Category::Eof => "unexpected end of input",
        Category::Data => "invalid data",
        Category::Io => "read error",
    };
    format!("{what} at line {} column {}", error.line(), error.column())
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    #[test]
    fn json_errors_do_not_echo_input() {
        let planted = "sk-planted-secret-value";
        let error =
            serde_json::from_str::<Value>(&format!("{{\"a\": \"{planted}\" oops}}")).unwrap_err();
        let text = json_error_position(&error);
        assert!(!text.contains(planted) && text.contains("line 1"), "{text}");
    }
}
