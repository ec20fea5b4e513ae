//! The client-facing API surface: which endpoints exist, which API format each speaks, and how
//! a request path maps to one.

use http::Method;

/// The path prefix of the management API.
pub(crate) const MANAGEMENT_PREFIX: &str = "/v0/management";

/// Whether `path` is the management API's: its prefix, or a path below it.
pub(crate) fn is_management(path: &str) -> bool {
    path.strip_prefix(MANAGEMENT_PREFIX)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The three API dialects the gateway speaks to clients (and upstreams).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApiFormat {
    /// OpenAI: `/v1/chat/completions`, `/v1/responses`, `/v1/embeddings`, `/v1/completions`.
    OpenAi,
    /// Anthropic: `/v1/messages`, `/v1/messages/count_tokens`.
    Anthropic,
    /// Gemini: `/v1beta/models/{model}:generateContent` and the other model methods, under
    /// `/v1/` too.
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
    /// `POST /v1/completions` (legacy)
    Completions,
    /// `POST /v1/messages`
    Messages,
    /// `POST /v1/messages/count_tokens`
    CountTokens,
    /// `POST /v1beta/models/{model}:generateContent` or `:streamGenerateContent` (or under
    /// `/v1/`)
    GeminiGenerate {
        /// The model named in the path.
        model: &'a str,
        /// Whether it is `:streamGenerateContent`.
        stream: bool,
    },
    /// `POST /v1beta/models/{model}:countTokens` (or under `/v1/`)
    GeminiCountTokens {
        /// The model named in the path.
        model: &'a str,
    },
    /// `POST /v1beta/models/{model}:embedContent` or `:batchEmbedContents` (or under `/v1/`)
    GeminiEmbed {
        /// The model named in the path.
        model: &'a str,
        /// Whether it is `:batchEmbedContents`.
        batch: bool,
    },
    /// `GET /v1/models`, or `GET /v1beta/models` (`gemini`)
    Models {
        /// Whether the path is Gemini's own (`/v1beta/`); under `/v1/` the client's headers
        /// choose the shape.
        gemini: bool,
    },
    /// `GET /v1/models/{id}`, or `GET /v1beta/models/{id}` (`gemini`)
    Model {
        /// The model asked about.
        id: &'a str,
        /// As for [`Endpoint::Models`].
        gemini: bool,
    },
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
            Self::GeminiGenerate { .. }
            | Self::GeminiCountTokens { .. }
            | Self::GeminiEmbed { .. }
            | Self::Models { gemini: true }
            | Self::Model { gemini: true, .. } => ApiFormat::Gemini,
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
            Self::Completions => RequestKind::Completions,
            Self::Messages => RequestKind::Messages,
            Self::CountTokens => RequestKind::CountTokens,
            Self::GeminiGenerate { .. } => RequestKind::GeminiGenerate,
            // Counting and embedding generate nothing, so there is no output cap to hold them
            // to; the body cap and the JSON checks still apply.
            Self::GeminiCountTokens { .. }
            | Self::GeminiEmbed { .. }
            | Self::Models { .. }
            | Self::Model { .. }
            | Self::Healthz
            | Self::Readyz => return None,
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
        "/v1/completions" => (Endpoint::Completions, "POST"),
        "/v1/messages" => (Endpoint::Messages, "POST"),
        "/v1/messages/count_tokens" => (Endpoint::CountTokens, "POST"),
        "/v1/models" => (Endpoint::Models { gemini: false }, "GET, HEAD"),
        "/v1beta/models" => (Endpoint::Models { gemini: true }, "GET, HEAD"),
        "/healthz" => (Endpoint::Healthz, "GET, HEAD"),
        "/readyz" => (Endpoint::Readyz, "GET, HEAD"),
        _ => {
            // Gemini's methods are served under `/v1/` too: the google-genai SDK calls `v1` by
            // default.
            let (rest, gemini) =
                match (path.strip_prefix("/v1beta/models/"), path.strip_prefix("/v1/models/")) {
                    (Some(rest), _) => (rest, true),
                    (None, Some(rest)) => (rest, false),
                    (None, None) => return Err(RouteError::NotFound(guess_format(path))),
                };
            model_endpoint(method, rest, gemini)?
        }
    };
    let allowed = match allow {
        "POST" => method == Method::POST,
        _ => method == Method::GET || method == Method::HEAD,
    };
    if allowed { Ok(endpoint) } else { Err(RouteError::MethodNotAllowed(endpoint.format(), allow)) }
}

/// What follows `models/`: a Gemini method (`{model}:{method}`, POST) or a model to retrieve
/// (GET). Under `/v1/` an id with a colon that names no Gemini method is an OpenAI model id
/// (fine-tuned ones have colons) when it is fetched with GET.
fn model_endpoint<'a>(
    method: &Method,
    rest: &'a str,
    gemini: bool,
) -> Result<(Endpoint<'a>, &'static str), RouteError> {
    let not_found = RouteError::NotFound(ApiFormat::Gemini);
    let gemini_method = rest.split_once(':').and_then(|(model, action)| {
        Some(match action {
            "generateContent" => Endpoint::GeminiGenerate { model, stream: false },
            "streamGenerateContent" => Endpoint::GeminiGenerate { model, stream: true },
            "countTokens" => Endpoint::GeminiCountTokens { model },
            "embedContent" => Endpoint::GeminiEmbed { model, batch: false },
            "batchEmbedContents" => Endpoint::GeminiEmbed { model, batch: true },
            _ => return None,
        })
        .map(|endpoint| (model, endpoint))
    });
    match gemini_method {
        // The model is sent upstream in a path again.
        Some((model, endpoint)) if valid_model_in_path(model) => Ok((endpoint, "POST")),
        Some(_) => Err(not_found),
        None if rest.is_empty() || rest.contains('/') => Err(not_found_in(gemini, rest)),
        None if rest.contains(':')
            && (gemini || method != Method::GET && method != Method::HEAD) =>
        {
            Err(not_found)
        }
        None => Ok((Endpoint::Model { id: rest, gemini }, "GET, HEAD")),
    }
}

/// A path under `models/` that is neither a method nor a model id: Gemini's when it is under
/// `/v1beta/`, and under `/v1/` Gemini's when it has a colon (a method call), else OpenAI's.
fn not_found_in(gemini: bool, rest: &str) -> RouteError {
    RouteError::NotFound(if gemini || rest.contains(':') {
        ApiFormat::Gemini
    } else {
        ApiFormat::OpenAi
    })
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
    if path == "/v1beta" || path.starts_with("/v1beta/") {
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
        assert_eq!(route(&Method::GET, "/v1/models"), Ok(Endpoint::Models { gemini: false }));
        assert_eq!(
            route(&Method::POST, "/v1/models/gemini-2.5-pro:batchEmbedContents"),
            Ok(Endpoint::GeminiEmbed { model: "gemini-2.5-pro", batch: true })
        );
        assert_eq!(
            route(&Method::GET, "/v1beta/models/gemini-2.5-pro"),
            Ok(Endpoint::Model { id: "gemini-2.5-pro", gemini: true })
        );
        assert_eq!(
            route(&Method::GET, "/v1/models/ft:gpt-4o-mini:org::abc"),
            Ok(Endpoint::Model { id: "ft:gpt-4o-mini:org::abc", gemini: false })
        );
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
            route(&Method::GET, "/v1/models/m:countTokens"),
            Err(RouteError::MethodNotAllowed(ApiFormat::Gemini, "POST"))
        );
        assert_eq!(
            route(&Method::POST, "/v1beta/models/m"),
            Err(RouteError::MethodNotAllowed(ApiFormat::Gemini, "GET, HEAD"))
        );
        assert_eq!(
            route(&Method::POST, "/v1/models/m:deleteEverything"),
            Err(RouteError::NotFound(ApiFormat::Gemini))
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
            "/v1/models/../../etc:embedContent",
            "/v1/models/a%2Fb:countTokens",
            "/v1beta/models/a/b",
            "/v1beta/models/",
        ] {
            assert_eq!(
                route(&Method::POST, hostile),
                Err(RouteError::NotFound(ApiFormat::Gemini)),
                "{hostile}"
            );
        }
    }
}
