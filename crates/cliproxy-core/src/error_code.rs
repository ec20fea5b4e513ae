/// The stable error codes of the gateway, shared by every crate that answers a client.
///
/// Each code has one HTTP status and one spelling in each of the three API formats the
/// gateway speaks, so an error reads the same whichever layer produced it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The request is malformed: bad JSON, a missing field, a value out of range.
    BadRequest,
    /// No client key, or one the gateway does not know.
    Unauthorized,
    /// The caller is known but not allowed to do this.
    Forbidden,
    /// Unknown route or unknown model.
    NotFound,
    /// The route exists but not for this method.
    MethodNotAllowed,
    /// The request body is larger than `server.limits.max_body_bytes`.
    PayloadTooLarge,
    /// The request body did not arrive within `server.limits.body_read_timeout`.
    RequestTimeout,
    /// A rate limit or quota was hit.
    RateLimited,
    /// The client key's spending budget for the period is spent (or held by requests in
    /// flight).
    BudgetExceeded,
    /// The request headers are larger than the configured limit.
    HeadersTooLarge,
    /// The upstream provider failed or could not be reached.
    UpstreamFailure,
    /// The gateway is in maintenance, overloaded, or has no usable credential.
    Unavailable,
    /// The upstream provider did not answer in time.
    UpstreamTimeout,
    /// A bug or an unexpected local failure.
    Internal,
    /// The change asked for conflicts with the state (a name already taken, a config file
    /// key changed through the management API).
    Conflict,
}

impl ErrorCode {
    /// The HTTP status code.
    pub const fn status(self) -> u16 {
        match self {
            Self::BadRequest => 400,
            Self::Unauthorized => 401,
            Self::Forbidden => 403,
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::RequestTimeout => 408,
            Self::PayloadTooLarge => 413,
            Self::RateLimited | Self::BudgetExceeded => 429,
            Self::HeadersTooLarge => 431,
            Self::UpstreamFailure => 502,
            Self::Unavailable => 503,
            Self::UpstreamTimeout => 504,
            Self::Internal => 500,
            Self::Conflict => 409,
        }
    }

    /// The stable machine-readable code, used as OpenAI's `error.code`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::Unauthorized => "invalid_api_key",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::PayloadTooLarge => "payload_too_large",
            Self::RequestTimeout => "request_timeout",
            Self::RateLimited => "rate_limit_exceeded",
            Self::BudgetExceeded => "budget_exceeded",
            Self::HeadersTooLarge => "headers_too_large",
            Self::UpstreamFailure => "upstream_error",
            Self::Unavailable => "unavailable",
            Self::UpstreamTimeout => "upstream_timeout",
            Self::Internal => "internal_error",
            Self::Conflict => "conflict",
        }
    }

    /// OpenAI's `error.type`.
    pub const fn openai_type(self) -> &'static str {
        match self {
            Self::BadRequest
            | Self::NotFound
            | Self::MethodNotAllowed
            | Self::PayloadTooLarge
            | Self::RequestTimeout
            | Self::HeadersTooLarge
            | Self::Conflict => "invalid_request_error",
            Self::Unauthorized => "authentication_error",
            Self::Forbidden => "permission_error",
            Self::RateLimited => "rate_limit_error",
            // What OpenAI itself answers (429) when an account's money has run out.
            Self::BudgetExceeded => "insufficient_quota",
            Self::UpstreamFailure | Self::Unavailable | Self::UpstreamTimeout | Self::Internal => {
                "api_error"
            }
        }
    }

    /// Anthropic's `error.type`.
    pub const fn anthropic_type(self) -> &'static str {
        match self {
            Self::BadRequest
            | Self::MethodNotAllowed
            | Self::HeadersTooLarge
            | Self::RequestTimeout
            | Self::Conflict => "invalid_request_error",
            Self::Unauthorized => "authentication_error",
            Self::Forbidden => "permission_error",
            Self::NotFound => "not_found_error",
            Self::PayloadTooLarge => "request_too_large",
            // Anthropic has no 429 type of its own for spent money: its SDKs raise
            // `RateLimitError` for this one, which is what a 429 means to them.
            Self::RateLimited | Self::BudgetExceeded => "rate_limit_error",
            Self::Unavailable => "overloaded_error",
            Self::UpstreamFailure | Self::UpstreamTimeout | Self::Internal => "api_error",
        }
    }

    /// Gemini's `error.status` (the google.rpc code name).
    pub const fn gemini_status(self) -> &'static str {
        match self {
            Self::BadRequest | Self::PayloadTooLarge | Self::HeadersTooLarge => "INVALID_ARGUMENT",
            Self::Unauthorized => "UNAUTHENTICATED",
            Self::Forbidden => "PERMISSION_DENIED",
            Self::NotFound => "NOT_FOUND",
            Self::MethodNotAllowed => "UNIMPLEMENTED",
            Self::RateLimited | Self::BudgetExceeded => "RESOURCE_EXHAUSTED",
            Self::Unavailable => "UNAVAILABLE",
            Self::UpstreamTimeout | Self::RequestTimeout => "DEADLINE_EXCEEDED",
            Self::UpstreamFailure | Self::Internal => "INTERNAL",
            Self::Conflict => "ALREADY_EXISTS",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [ErrorCode; 15] = [
        ErrorCode::BadRequest,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::PayloadTooLarge,
        ErrorCode::RequestTimeout,
        ErrorCode::RateLimited,
        ErrorCode::BudgetExceeded,
        ErrorCode::HeadersTooLarge,
        ErrorCode::UpstreamFailure,
        ErrorCode::Unavailable,
        ErrorCode::UpstreamTimeout,
        ErrorCode::Internal,
        ErrorCode::Conflict,
    ];

    #[test]
    fn statuses_match_the_spec() {
        let statuses: Vec<u16> = ALL.iter().map(|c| c.status()).collect();
        assert_eq!(
            statuses,
            [400, 401, 403, 404, 405, 413, 408, 429, 429, 431, 502, 503, 504, 500, 409]
        );
    }

    #[test]
    fn codes_are_unique() {
        let mut codes: Vec<&str> = ALL.iter().map(|c| c.as_str()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), ALL.len());
    }
}
