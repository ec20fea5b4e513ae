//! The client-facing API surface: which endpoints exist, which API format each speaks, and how
//! a request path maps to one.

use http::Method;

/// The three API dialects the gateway speaks to clients (and upstreams).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApiFormat {
    /// OpenAI: `/v1/chat/completions`, `/v1/responses`, `/v1/embeddings`.
    OpenAi,
    /// Anthropic: `/v1/messages`, `/v1/messages/count_tokens`.
    Anthropic,
    /// Gemini: `/v1beta/models/{model}:generateContent` and `:streamGenerateContent`.
    Gemini,
}

impl ApiFormat {
    /// A short name for logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::OpenAi => "openai",
            Self::Anthropic => "anthropic",
            Self::Gemini => "gemini",
        }
    }

    /// The endpoint a client should call for this format, for error messages.
    pub const fn example_path(self) -> &'static str {
        match self {
            Self::OpenAi => "/v1/chat/completions",
            Self::Anthropic => "/v1/messages",
            Self::Gemini => "/v1beta/models/{model}:generateContent",
        }
    }
}

/// A recognised endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint<'a> {
    /// `POST /v1/chat/completions`
    ChatCompletions,
    /// `POST /v1/responses`
    Responses,
    /// `POST /v1/embeddings`
    Embeddings,
    /// `POST /v1/messages`
    Messages,
    /// `POST /v1/messages/count_tokens`
    CountTokens,
    /// `POST /v1beta/models/{model}:generateContent` or `:streamGenerateContent`
    GeminiGenerate {
        /// The model named in the path.
        model: &'a str,
        /// Whether it is `:streamGenerateContent`.
        stream: bool,
    },
    /// `GET /v1/models`
    Models,
    /// `GET /healthz`
    Healthz,
    /// `GET /readyz`
    Readyz,
}

impl Endpoint<'_> {
    /// The API format of the endpoint; errors are answered in it.
    pub(crate) fn format(&self) -> ApiFormat {
        match self {
            Self::Messages | Self::CountTokens => ApiFormat::Anthropic,
            Self::GeminiGenerate { .. } => ApiFormat::Gemini,
            _ => ApiFormat::OpenAi,
        }
    }

    /// What request validation checks the body as; `None` for endpoints without a body.
    pub(crate) fn request_kind(&self) -> Option<cliproxy_netguard::RequestKind> {
        use cliproxy_netguard::RequestKind;
        Some(match self {
            Self::ChatCompletions => RequestKind::ChatCompletions,
            Self::Responses => RequestKind::Responses,
            Self::Embeddings => RequestKind::Embeddings,
            Self::Messages => RequestKind::Messages,
            Self::CountTokens => RequestKind::CountTokens,
            Self::GeminiGenerate { .. } => RequestKind::GeminiGenerate,
            Self::Models | Self::Healthz | Self::Readyz => return None,
        })
    }
}

/// Why a path did not resolve to an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RouteError {
    /// No such route.
    NotFound(ApiFormat),
    /// The route exists for other methods, listed in the `Allow` value.
    MethodNotAllowed(ApiFormat, &'static str),
}

/// Maps a method and path to an endpoint.
pub(crate) fn route<'a>(method: &Method, path: &'a str) -> Result<Endpoint<'a>, RouteError> {
    let (endpoint, allow) = match path {
        "/v1/chat/completions" => (Endpoint::ChatCompletions, "POST"),
        "/v1/responses" => (Endpoint::Responses, "POST"),
        "/v1/embeddings" => (Endpoint::Embeddings, "POST"),
        "/v1/messages" => (Endpoint::Messages, "POST"),
        "/v1/messages/count_tokens" => (Endpoint::CountTokens, "POST"),
        "/v1/models" => (Endpoint::Models, "GET, HEAD"),
        "/healthz" => (Endpoint::Healthz, "GET, HEAD"),
        "/readyz" => (Endpoint::Readyz, "GET, HEAD"),
        _ => match path.strip_prefix("/v1beta/models/") {
            Some(rest) => {
                (gemini_endpoint(rest).ok_or(RouteError::NotFound(ApiFormat::Gemini))?, "POST")
            }
            None => return Err(RouteError::NotFound(guess_format(path))),
        },
    };
    let allowed = match allow {
        "POST" => method == Method::POST,
        _ => method == Method::GET || method == Method::HEAD,
    };
    if allowed { Ok(endpoint) } else { Err(RouteError::MethodNotAllowed(endpoint.format(), allow)) }
}

fn gemini_endpoint(rest: &str) -> Option<Endpoint<'_>> {
    let (model, action) = rest.split_once(':')?;
    let stream = match action {
        "generateContent" => false,
        "streamGenerateContent" => true,
        _ => return None,
    };
    valid_model_in_path(model).then_some(Endpoint::GeminiGenerate { model, stream })
}

/// A model name taken from the path is sent upstream in a path again, so only plain names
/// pass: no slashes, no percent-escapes, no dot segments.
fn valid_model_in_path(model: &str) -> bool {
    !model.is_empty()
        && model.len() <= 128
        && model != "."
        && model != ".."
        && model.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The format to answer an unknown route in, judged from its prefix.
fn guess_format(path: &str) -> ApiFormat {
    if path.starts_with("/v1beta/") {
        ApiFormat::Gemini
    } else if path.starts_with("/v1/messages") {
        ApiFormat::Anthropic
    } else {
        ApiFormat::OpenAi
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_routes() {
        assert_eq!(route(&Method::POST, "/v1/chat/completions"), Ok(Endpoint::ChatCompletions));
        assert_eq!(route(&Method::POST, "/v1/messages/count_tokens"), Ok(Endpoint::CountTokens));
        assert_eq!(
            route(&Method::POST, "/v1beta/models/gemini-2.0-flash:streamGenerateContent"),
            Ok(Endpoint::GeminiGenerate { model: "gemini-2.0-flash", stream: true })
        );
        assert_eq!(route(&Method::GET, "/v1/models"), Ok(Endpoint::Models));
        assert_eq!(route(&Method::HEAD, "/healthz"), Ok(Endpoint::Healthz));
        assert_eq!(Endpoint::Messages.format(), ApiFormat::Anthropic);
    }

    #[test]
    fn wrong_methods_and_unknown_paths() {
        assert_eq!(
            route(&Method::GET, "/v1/messages"),
            Err(RouteError::MethodNotAllowed(ApiFormat::Anthropic, "POST"))
        );
        assert_eq!(
            route(&Method::DELETE, "/v1/models"),
            Err(RouteError::MethodNotAllowed(ApiFormat::OpenAi, "GET, HEAD"))
        );
        assert_eq!(
            route(&Method::POST, "/v1/nothing"),
            Err(RouteError::NotFound(ApiFormat::OpenAi))
        );
        assert_eq!(
            route(&Method::POST, "/v1/chat/completions/"),
            Err(RouteError::NotFound(ApiFormat::OpenAi))
        );
        for hostile in [
            "/v1beta/models/../../etc:generateContent",
            "/v1beta/models/a%2Fb:generateContent",
            "/v1beta/models/..:generateContent",
            "/v1beta/models/:generateContent",
            "/v1beta/models/m:deleteEverything",
            "/v1beta/models/m",
        ] {
            assert_eq!(
                route(&Method::POST, hostile),
                Err(RouteError::NotFound(ApiFormat::Gemini)),
                "{hostile}"
            );
        }
    }
}
