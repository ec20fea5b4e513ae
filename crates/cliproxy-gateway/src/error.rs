//! Errors of the gateway crate, and how an error reaches a client: in the API format of the
//! endpoint it called, with a stable code, and never with a secret in it.

use std::time::Duration;

use bytes::Bytes;
use cliproxy_core::ErrorCode;
use http::{HeaderValue, Response, StatusCode, header};
use serde_json::json;

use crate::api::ApiFormat;
use crate::http_util::{Body, full};

/// Errors from building or running the gateway.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The credential vault failed (its configuration errors become [`Error::Config`]). The
    /// message names this gateway's settings and commands (see [`crate::vault_error_message`]).
    #[error("credential vault: {}", crate::vault_errors::vault_error_message(.0))]
    Vault(cliproxy_vault::Error),
    /// Binding or serving failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The network guard's state store could not be opened or read.
    #[error("{0}")]
    State(String),
    /// TLS set-up for upstream connections failed.
    #[error("upstream TLS for provider `{provider}`: {message}")]
    UpstreamTls {
        /// The provider the CA file belongs to.
        provider: String,
        /// What went wrong.
        message: String,
    },
}

impl From<cliproxy_vault::Error> for Error {
    fn from(error: cliproxy_vault::Error) -> Self {
        if error.is_config() {
            // The vault's text speaks of "client key 1"; the operator wrote `auth.api_keys[1]`.
            Self::Config(crate::config::ConfigError::new(crate::vault_errors::vault_error_message(
                &error,
            )))
        } else {
            Self::Vault(error)
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A stage's refusal: the error, and the API format (the endpoint's) to answer it in.
pub(crate) type Refusal = (ApiFormat, ApiError);

/// An error answered to a client.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    /// Stable code; decides the status.
    pub code: ErrorCode,
    /// A sentence for the person reading the client's output. Never holds a secret.
    pub message: String,
    /// Sent as `Retry-After` (whole seconds, rounded up).
    pub retry_after: Option<Duration>,
    /// Sent as `Allow` on 405.
    pub allow: Option<std::borrow::Cow<'static, str>>,
    /// `X-RateLimit-Limit`, `-Remaining` and `-Reset` (seconds) of a refusing limit.
    pub rate: Option<(u64, u64, u64)>,
}

impl ApiError {
    /// An error with a code and a message.
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), retry_after: None, allow: None, rate: None }
    }

    /// Adds a `Retry-After`.
    pub(crate) fn retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    /// The 429 of a refusing limit, with `Retry-After` and the `X-RateLimit-*` figures; the
    /// message names the limit's config key (and, for a quota, when it resets).
    pub(crate) fn limited(limited: &cliproxy_netguard::Limited) -> Self {
        let code = match limited.kind {
            // A spent budget has a code of its own, so that a client tells "wait a moment"
            // from "wait for the period": `Retry-After` is the period's reset either way.
            cliproxy_netguard::LimitKind::ClientBudget => ErrorCode::BudgetExceeded,
            // A budgeted key on an unpriced model: waiting will not help. Routing refuses it
            // first (`forward.rs`); this is the same answer should an admission say so.
            cliproxy_netguard::LimitKind::Unpriced => {
                return Self::new(
                    ErrorCode::Forbidden,
                    crate::netguard_keys::limited_message(limited),
                );
            }
            // The shared state store is down and the operator chose to refuse rather than
            // admit on this instance's own limits: the client did nothing wrong (503).
            cliproxy_netguard::LimitKind::SharedState => {
                return Self::new(
                    ErrorCode::Unavailable,
                    crate::netguard_keys::limited_message(limited),
                )
                .retry_after(Duration::from_secs(limited.retry_after_secs().max(1)));
            }
            _ => ErrorCode::RateLimited,
        };
        let mut error = Self::new(code, crate::netguard_keys::limited_message(limited));
        error.retry_after = Some(Duration::from_secs(limited.retry_after_secs()));
        error.rate = Some((limited.limit, limited.remaining, limited.reset_after_secs()));
        error
    }

    /// The error as one server-sent event in `format`'s shape, for a stream that fails after
    /// its status was sent: Anthropic's `event: error` (what its API sends mid-stream), and
    /// for OpenAI and Gemini a `data:` event holding the error object, which their SDKs raise.
    pub(crate) fn sse_event(&self, format: ApiFormat) -> Bytes {
        let body = self.body(format);
        Bytes::from(match format {
            ApiFormat::Anthropic => format!("event: error\ndata: {body}\n\n"),
            ApiFormat::OpenAi | ApiFormat::Gemini => format!("data: {body}\n\n"),
        })
    }

    /// The error object in `format`'s shape.
    fn body(&self, format: ApiFormat) -> serde_json::Value {
        match format {
            ApiFormat::OpenAi => json!({"error": {
                "message": self.message,
                "type": self.code.openai_type(),
                "param": null,
                "code": self.code.as_str(),
            }}),
            ApiFormat::Anthropic => json!({"type": "error", "error": {
                "type": self.code.anthropic_type(),
                "message": self.message,
            }}),
            ApiFormat::Gemini => json!({"error": {
                "code": self.code.status(),
                "message": self.message,
                "status": self.code.gemini_status(),
            }}),
        }
    }

    /// The response in `format`'s error shape.
    pub(crate) fn into_response(self, format: ApiFormat) -> Response<Body> {
        let status =
            StatusCode::from_u16(self.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = self.body(format);
        let mut response = Response::new(full(Bytes::from(body.to_string())));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(after) = self.retry_after {
            let seconds = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        }
        if let Some((limit, remaining, reset)) = self.rate {
            headers.insert("x-ratelimit-limit", HeaderValue::from(limit));
            headers.insert("x-ratelimit-remaining", HeaderValue::from(remaining));
            headers.insert("x-ratelimit-reset", HeaderValue::from(reset));
        }
        if let Some(allow) = self.allow
            && let Ok(value) = HeaderValue::from_str(&allow)
        {
            headers.insert(header::ALLOW, value);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    async fn json_of(response: Response<Body>) -> serde_json::Value {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn each_format_has_its_own_shape() {
        let error = ApiError::new(ErrorCode::NotFound, "unknown model `x`");
        let openai = json_of(error.clone().into_response(ApiFormat::OpenAi)).await;
        assert_eq!(openai["error"]["type"], "invalid_request_error");
        assert_eq!(openai["error"]["code"], "not_found");
        assert_eq!(openai["error"]["message"], "unknown model `x`");
        let anthropic = json_of(error.clone().into_response(ApiFormat::Anthropic)).await;
        assert_eq!(anthropic["type"], "error");
        assert_eq!(anthropic["error"]["type"], "not_found_error");
        let gemini = json_of(error.into_response(ApiFormat::Gemini)).await;
        assert_eq!(gemini["error"]["code"], 404);
        assert_eq!(gemini["error"]["status"], "NOT_FOUND");
    }

    #[test]
    fn retry_after_rounds_up_and_allow_is_set() {
        let mut error = ApiError::new(ErrorCode::RateLimited, "slow down")
            .retry_after(Duration::from_millis(1500));
        error.allow = Some("POST".into());
        let response = error.into_response(ApiFormat::OpenAi);
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        assert_eq!(response.headers()[header::ALLOW], "POST");
    }
}
