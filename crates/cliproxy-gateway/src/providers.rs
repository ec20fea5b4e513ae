//! Provider adapters: how each kind of provider is addressed and authenticated. The body is
//! forwarded unchanged, so an adapter is only the parts of the request that differ.

use cliproxy_core::Secret;
use http::HeaderMap;
use http::header::{AUTHORIZATION, HeaderName, HeaderValue};

use crate::api::ApiFormat;
use crate::config::ProviderKind;

/// The Anthropic API version sent when the client did not choose one.
pub(crate) const DEFAULT_ANTHROPIC_VERSION: &str = "2023-06-01";

/// Whether a provider of `kind` serves requests in `format`. The mock answers every format;
/// the others speak only their own API (no translation between formats).
pub(crate) fn speaks(kind: ProviderKind, format: ApiFormat) -> bool {
    matches!(
        (kind, format),
        (ProviderKind::Mock, _)
            | (ProviderKind::Openai, ApiFormat::OpenAi)
            | (ProviderKind::Claude, ApiFormat::Anthropic)
            | (ProviderKind::Gemini, ApiFormat::Gemini)
    )
}

/// The format a provider of `kind` speaks (for error messages).
pub(crate) fn native_format(kind: ProviderKind) -> ApiFormat {
    match kind {
        ProviderKind::Claude => ApiFormat::Anthropic,
        ProviderKind::Gemini => ApiFormat::Gemini,
        _ => ApiFormat::OpenAi,
    }
}

/// The public API origin used when `base_url` is not configured.
pub(crate) fn default_base_url(kind: ProviderKind) -> &'static str {
    match kind {
        ProviderKind::Openai => "https://api.openai.com",
        ProviderKind::Claude => "https://api.anthropic.com",
        ProviderKind::Gemini => "https://generativelanguage.googleapis.com",
        ProviderKind::Mock => "http://mock.invalid",
    }
}

/// Puts the vault credential where a provider of `kind` expects it. The client's own
/// credential headers have already been removed by the caller.
pub(crate) fn apply_credential(
    kind: ProviderKind,
    headers: &mut HeaderMap,
    token: &Secret,
    oauth: bool,
) -> Result<(), http::header::InvalidHeaderValue> {
    // A failover attempt reuses the headers: nothing of the previous credential may stay.
    // Typed names: a `&str` name would be parsed again for each removal.
    for name in [
        AUTHORIZATION,
        HeaderName::from_static("x-api-key"),
        HeaderName::from_static("x-goog-api-key"),
    ] {
        headers.remove(name);
    }
    let (name, value) = match kind {
        // OAuth access tokens are bearer tokens whatever the provider.
        _ if oauth => {
            if kind == ProviderKind::Claude && !headers.contains_key("anthropic-version") {
                headers.insert(
                    HeaderName::from_static("anthropic-version"),
                    HeaderValue::from_static(DEFAULT_ANTHROPIC_VERSION),
                );
            }
            (AUTHORIZATION, HeaderValue::try_from(format!("Bearer {}", token.expose()))?)
        }
        ProviderKind::Openai | ProviderKind::Mock => {
            (AUTHORIZATION, HeaderValue::try_from(format!("Bearer {}", token.expose()))?)
        }
        ProviderKind::Claude => {
            if !headers.contains_key("anthropic-version") {
                headers.insert(
                    HeaderName::from_static("anthropic-version"),
                    HeaderValue::from_static(DEFAULT_ANTHROPIC_VERSION),
                );
            }
            (HeaderName::from_static("x-api-key"), HeaderValue::try_from(token.expose())?)
        }
        ProviderKind::Gemini => {
            (HeaderName::from_static("x-goog-api-key"), HeaderValue::try_from(token.expose())?)
        }
    };
    let mut value = value;
    // Keeps the credential out of HPACK tables and out of any header dump.
    value.set_sensitive(true);
    headers.insert(name, value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_authenticates_its_own_way() {
        let token = Secret::from("vault-token-1234567890".to_owned());
        let mut headers = HeaderMap::new();
        apply_credential(ProviderKind::Openai, &mut headers, &token, false).unwrap();
        assert_eq!(headers[AUTHORIZATION], "Bearer vault-token-1234567890");
        assert!(headers[AUTHORIZATION].is_sensitive());

        let mut headers = HeaderMap::new();
        apply_credential(ProviderKind::Claude, &mut headers, &token, false).unwrap();
        assert_eq!(headers["x-api-key"], "vault-token-1234567890");
        assert_eq!(headers["anthropic-version"], DEFAULT_ANTHROPIC_VERSION);

        let mut headers = HeaderMap::new();
        headers.insert("anthropic-version", HeaderValue::from_static("2024-01-01"));
        apply_credential(ProviderKind::Claude, &mut headers, &token, false).unwrap();
        assert_eq!(headers["anthropic-version"], "2024-01-01", "the client's choice is kept");

        let mut headers = HeaderMap::new();
        apply_credential(ProviderKind::Gemini, &mut headers, &token, false).unwrap();
        assert_eq!(headers["x-goog-api-key"], "vault-token-1234567890");
        assert!(!headers.contains_key(AUTHORIZATION));
    }

    #[test]
    fn oauth_tokens_are_bearer_tokens_and_failover_leaves_nothing_behind() {
        let access = Secret::from("oauth-access-0001".to_owned());
        let key = Secret::from("api-key-0002".to_owned());
        let mut headers = HeaderMap::new();
        apply_credential(ProviderKind::Claude, &mut headers, &access, true).unwrap();
        assert_eq!(headers[AUTHORIZATION], "Bearer oauth-access-0001");
        assert!(!headers.contains_key("x-api-key"));
        assert_eq!(headers["anthropic-version"], DEFAULT_ANTHROPIC_VERSION);
        // The next attempt uses an API key: the OAuth token must not go with it.
        apply_credential(ProviderKind::Claude, &mut headers, &key, false).unwrap();
        assert_eq!(headers["x-api-key"], "api-key-0002");
        assert!(!headers.contains_key(AUTHORIZATION));
        apply_credential(ProviderKind::Gemini, &mut headers, &access, true).unwrap();
        assert!(!headers.contains_key("x-api-key") && !headers.contains_key("x-goog-api-key"));
    }

    #[test]
    fn a_token_with_a_newline_is_refused_not_sent() {
        let token = Secret::from("bad\ntoken".to_owned());
        assert!(
            apply_credential(ProviderKind::Openai, &mut HeaderMap::new(), &token, false).is_err()
        );
    }

    #[test]
    fn formats() {
        assert!(speaks(ProviderKind::Mock, ApiFormat::Gemini));
        assert!(speaks(ProviderKind::Claude, ApiFormat::Anthropic));
        assert!(!speaks(ProviderKind::Claude, ApiFormat::OpenAi));
        assert!(!speaks(ProviderKind::Openai, ApiFormat::Gemini));
        assert_eq!(native_format(ProviderKind::Gemini), ApiFormat::Gemini);
    }
}
