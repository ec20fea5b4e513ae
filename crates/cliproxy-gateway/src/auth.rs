//! Client authentication: the client key (`Authorization: Bearer`, `x-api-key`,
//! `x-goog-api-key`; never the query string) checked against the keys in force, the audit
//! event of the check, and the global bucket, charged after it in two halves.

use std::net::IpAddr;
use std::sync::Arc;

use cliproxy_audit::{Event, Plane, What};
use cliproxy_core::ErrorCode;
use cliproxy_vault::ClientIdentity;
use http::HeaderMap;
use http::header::{self, HeaderValue};

use crate::api::ApiFormat;
pub(crate) use crate::client_key_table::ClientKeyCell;
use crate::client_key_table::{KeyCheck, KeyTable};
use crate::error::{ApiError, Refusal};
use crate::guard::Guard;
use crate::upstream;

/// The authentication stage. The global bucket is charged after the key check, in two
/// halves: keyed requests draw on `server.rate_limit`, the rest on a bucket of their own, so
/// that strangers spread over many addresses cannot starve the clients.
pub(crate) fn authenticate(
    keys: &ClientKeyCell,
    guard: &Guard,
    parts: &http::request::Parts,
    client_ip: IpAddr,
    request_id: &str,
    format: ApiFormat,
) -> Result<Arc<ClientIdentity>, Refusal> {
    let limited = |limited: cliproxy_netguard::Limited| (format, ApiError::limited(&limited));
    let now = || guard.clock.unix_seconds();
    match check_key(&keys.current(), &parts.headers, parts.uri.query(), now) {
        Ok(client) => {
            guard.admit_global(client_ip, request_id, true).map_err(limited)?;
            guard.emit(
                Event::new(What::AuthSuccess)
                    .ip(client_ip)
                    .request_id(request_id)
                    .user(client.name.as_str()),
            );
            Ok(client)
        }
        Err((reason, error)) => {
            let event = Event::new(What::AuthFailure { plane: Plane::Client, reason, repeats: 0 })
                .ip(client_ip)
                .request_id(request_id);
            // Past the strangers' budget the failure still counts towards the alert rules,
            // but its line is the limiter's summarised one: a keyless flood from many
            // addresses cannot write an audit line per request.
            if let Err(refused) = guard.admit_global(client_ip, request_id, false) {
                guard.count(&event);
                return Err(limited(refused));
            }
            // Summarised under a flood, its request id listed in the summary line.
            guard.auth_failure(event);
            Err((format, error))
        }
    }
}

/// Checks the client key against the keys in force at the time `now` gives (Unix seconds). A key in the
/// query string is refused outright: query strings end up in access logs and browser
/// histories.
fn check_key(
    client_keys: &KeyTable,
    headers: &HeaderMap,
    query: Option<&str>,
    now: impl FnOnce() -> u64,
) -> Result<Arc<ClientIdentity>, (&'static str, ApiError)> {
    if upstream::query_holds_credential(query) {
        return Err((
            "key_in_query",
            ApiError::new(
                ErrorCode::Unauthorized,
                "API keys in the query string are refused; send the key in the Authorization, x-api-key or x-goog-api-key header",
            ),
        ));
    }
    if client_keys.is_empty() {
        return Err((
            "no_client_keys",
            ApiError::new(
                ErrorCode::Unauthorized,
                "this gateway has no client keys configured, so it refuses every request; an operator adds one under auth.api_keys in the config (cliproxy-server keygen prints a fresh key)",
            ),
        ));
    }
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .or_else(|| headers.get("x-api-key").map(HeaderValue::as_bytes))
        .or_else(|| headers.get("x-goog-api-key").map(HeaderValue::as_bytes));
    let Some(presented) = presented else {
        return Err((
            "missing_key",
            ApiError::new(
                ErrorCode::Unauthorized,
                "no client key: send it as `Authorization: Bearer <key>`, `x-api-key: <key>` or `x-goog-api-key: <key>`",
            ),
        ));
    };
    match client_keys.check(presented.trim_ascii(), now) {
        KeyCheck::Valid(client) => Ok(client),
        KeyCheck::Disabled => Err((
            "key_disabled",
            ApiError::new(ErrorCode::Unauthorized, "this client key is disabled"),
        )),
        KeyCheck::Expired(at) => Err((
            "key_expired",
            ApiError::new(
                ErrorCode::Unauthorized,
                format!("this client key expired at {}", cliproxy_core::format_utc(at)),
            ),
        )),
        KeyCheck::Unknown => {
            Err(("invalid_key", ApiError::new(ErrorCode::Unauthorized, "invalid client key")))
        }
    }
}
