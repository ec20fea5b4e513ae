//! Forwarding: routing a request to the provider that serves its model, and sending it there
//! — the built-in mock answers in-process; an upstream gets it with a credential from the
//! provider's pool (an OAuth token refreshed when due), failing over to the next credential
//! on the credential's own faults, a 5xx or a refused connection, at most [`MAX_ATTEMPTS`]
//! times. Whose fault an upstream failure is decides whether a credential rests (see
//! [`COOLDOWN_REJECTED`] and `docs/security/faults.md`).

use std::time::Duration;

use bytes::Bytes;
use cliproxy_core::ErrorCode;
use cliproxy_netguard::UsageOption;
use cliproxy_vault::ClientIdentity;
use http::header;
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use slog::{info, warn};
use tokio::time::Instant;

use crate::api::{ApiFormat, Endpoint};
use crate::config::ProviderKind;
use crate::context::RequestContext;
use crate::error::{ApiError, Refusal};
use crate::http_util::{Body, full};
use crate::mock::{self, MockRequest};
use crate::pool::Rest;
use crate::provider_set::{Provider, ProviderSet};
use crate::providers;
use crate::refresh;
use crate::stream_usage;
use crate::translation;
use crate::upstream;
use crate::upstream_error::upstream_message;
use cliproxy_translate::Pair;

/// Most upstream attempts for one request (the first try plus failovers).
pub const MAX_ATTEMPTS: usize = 3;

/// How long a credential rests after each kind of upstream failure that is the credential's
/// own: rejected (the provider's error body says the key is invalid, revoked or out of
/// credit: `providers::classify_error`), rate limited (429 without `Retry-After`; for the
/// model asked only where the provider limits per model), or its own base URL unreachable or
/// answering 5xx. A 5xx or an unreachable provider-wide base URL is the provider's or the
/// network's fault: the request fails over, but no credential rests for it (resting them
/// would answer 503 "every credential is cooling down" for an outage they did not cause, and
/// keep them out after the upstream is back). Any other 4xx is the client's: it gets the
/// answer as it came, with no failover and no rest. See `docs/security/faults.md`.
const COOLDOWN_REJECTED: Duration = Duration::from_secs(300);
const COOLDOWN_RATE_LIMITED: Duration = Duration::from_secs(30);
const COOLDOWN_CONNECT: Duration = Duration::from_secs(5);

/// The longest a 5xx's body is waited for (within the first-byte timeout): it is read only
/// for the upstream's message (`upstream_error`), which is not worth holding the failover.
const SERVER_ERROR_BODY_WAIT: Duration = Duration::from_secs(2);

/// Where a request goes: the provider, the provider's name for the model, and the pair of
/// formats when they differ.
pub(crate) struct Routed<'s> {
    pub(crate) provider: &'s Provider,
    /// The provider's name for the model, when the client asked for an alias.
    pub(crate) upstream_model: Option<&'s str>,
    /// The client's and the provider's formats, when the request must be translated.
    pub(crate) translation: Option<Pair>,
    /// The client's and the provider's APIs of an embeddings or token-count request, when
    /// they differ.
    pub(crate) other: Option<translation::OtherApis>,
}

/// Model routing, then the client key's own model list, then which format the provider is
/// called with: a generating endpoint is translated to the provider's format (SPEC §9); any
/// other reaches only a provider that speaks the API the client called.
pub(crate) fn route<'s>(
    set: &'s ProviderSet,
    model: &str,
    endpoint: &Endpoint<'_>,
    client: &ClientIdentity,
    format: ApiFormat,
    ctx: &mut RequestContext,
) -> Result<Routed<'s>, Refusal> {
    let fail = |code, message: String| (format, ApiError::new(code, message));
    let Some((index, upstream_model)) = set.router.route(model) else {
        return Err(fail(
            ErrorCode::NotFound,
            format!("model `{model}` is not served by this gateway (see GET /v1/models)"),
        ));
    };
    let provider = &set.providers[index];
    ctx.provider = Some(provider.name.clone());
    // Priced under the name the provider bills: an alias's upstream name.
    ctx.price = set.prices.lookup(upstream_model.unwrap_or(model));
    if !client.allows_model(model) {
        return Err(fail(
            ErrorCode::Forbidden,
            format!(
                "client key `{}` may not use model `{model}` (auth.api_keys models)",
                client.name
            ),
        ));
    }
    // A key with a budget pays for what it uses: a model without a price has a cost nobody
    // can hold against it, and it is never taken as free. Refused before anything is sent.
    if client.budget.is_some() && ctx.price.is_none() {
        return Err(fail(
            ErrorCode::Forbidden,
            format!(
                "client key `{}` has a budget, and model `{model}` has no price: add it to pricing.models to use it with this key",
                client.name
            ),
        ));
    }
    if let Some(client_format) = translation::client_format(endpoint) {
        let wire = translation::provider_format(provider.kind, provider.api, client_format);
        ctx.formats = Some(Pair::new(client_format, wire));
        return Ok(Routed {
            provider,
            upstream_model,
            translation: ctx.translation(),
            other: None,
        });
    }
    if let Some(apis) = translation::other_apis(endpoint, provider.kind) {
        ctx.formats = Some(apis.pair());
        return Ok(Routed {
            provider,
            upstream_model,
            translation: ctx.translation(),
            other: Some(apis),
        });
    }
    if !providers::speaks(provider.kind, format) {
        let native = providers::native_format(provider.kind);
        return Err(fail(
            ErrorCode::BadRequest,
            format!(
                "model `{model}` is served by provider `{}`, which speaks the {} API; this endpoint is not translated: call {} instead",
                provider.name,
                native.as_str(),
                native.example_path()
            ),
        ));
    }
    Ok(Routed { provider, upstream_model, translation: None, other: None })
}

/// A request on its way to a provider.
pub(crate) struct Outgoing<'a> {
    pub(crate) parts: &'a http::request::Parts,
    pub(crate) endpoint: Endpoint<'a>,
    pub(crate) model: &'a str,
    pub(crate) stream: bool,
    /// The body as the client sent it.
    pub(crate) body: Bytes,
    /// Whether the gateway must ask for the usage of a stream whose client did not.
    pub(crate) usage_option: Option<UsageOption>,
    pub(crate) format: ApiFormat,
    /// The provider's name for the model, when the client asked for an alias.
    pub(crate) upstream_model: Option<&'a str>,
    /// The client's and the provider's formats, when they differ.
    pub(crate) translation: Option<Pair>,
    /// The client's and the provider's APIs of an embeddings or token-count request, when
    /// they differ.
    pub(crate) other: Option<translation::OtherApis>,
}

/// Sends the request to `provider`: the mock answers in-process; everything else goes
/// upstream.
pub(crate) async fn send(
    set: &ProviderSet,
    provider: &Provider,
    out: Outgoing<'_>,
    ctx: &mut RequestContext,
) -> Result<Response<Body>, Refusal> {
    if provider.kind == ProviderKind::Mock {
        return Ok(mock_reply(provider, &out, ctx));
    }
    // A Gemini stream without `alt=sse` is one JSON array; translated streams are written
    // as events only (every Google SDK asks for them).
    if let Some(pair) = out.translation
        && pair.client == cliproxy_translate::Format::Gemini
        && out.stream
        && !crate::intake::sse_query(out.parts)
    {
        return Err((
            out.format,
            ApiError::new(
                ErrorCode::BadRequest,
                format!(
                    "model `{}` is served by provider `{}` in another API format, whose stream is translated as server-sent events only: call :streamGenerateContent?alt=sse",
                    out.model, provider.name
                ),
            ),
        ));
    }
    // Translation (or an alias's name) first: what follows works on what goes upstream.
    let upstream_model = out.upstream_model.unwrap_or(out.model);
    let rewritten = match (out.translation, out.upstream_model) {
        (Some(_), _) if out.other.is_some() => out.other.map(|apis| {
            translation::other_request(apis, &out.body, upstream_model, &provider.name).map(
                |(rewritten, call)| {
                    ctx.other = Some(call);
                    rewritten
                },
            )
        }),
        (Some(pair), _) => {
            Some(translation::request(pair, &out.body, upstream_model, out.stream, &provider.name))
        }
        (None, Some(upstream)) => {
            Some(translation::rename_model(&out.endpoint, out.parts, out.body.clone(), upstream))
        }
        (None, None) => None,
    };
    // A translated stream for an OpenAI chat client always carries the usage (the
    // translator writes it); a client that did not ask for it has it taken out on the way,
    // as when the gateway asks an OpenAI upstream on its behalf.
    if out.translation.is_some_and(|pair| pair.client == cliproxy_translate::Format::OpenAiChat)
        && out.usage_option.is_some()
    {
        ctx.strip_usage = true;
    }
    let (body, path_and_query) = match rewritten {
        Some(Ok(rewritten)) => (rewritten.body, rewritten.path_and_query),
        Some(Err(error)) => return Err((out.format, error)),
        None => (out.body.clone(), None),
    };
    // An OpenAI upstream is asked for the usage here, once for every attempt of the
    // failover; the other provider types report usage in their streams unasked. (A
    // translated request asks in its own encoding: the translator needs the usage.)
    let body = match out
        .usage_option
        .filter(|_| provider.kind == ProviderKind::Openai && out.translation.is_none())
    {
        Some(option) => match stream_usage::ask_upstream(&body, option) {
            Some(edited) => {
                ctx.strip_usage = true;
                edited
            }
            None => body,
        },
        None => body,
    };
    failover(set, provider, out.parts, (body, path_and_query), out.format, upstream_model, ctx)
        .await
}

/// The mock's answer.
fn mock_reply(provider: &Provider, out: &Outgoing<'_>, ctx: &mut RequestContext) -> Response<Body> {
    // The mock reads fields the guard has no use for (`stream_options`, the inputs to
    // embed), so it gets the body as a tree; only its requests pay for that parse, and the
    // body was already read as valid JSON.
    let mut parsed: Value = serde_json::from_slice(&out.body).unwrap_or_default();
    if let Some(option) = out.usage_option {
        ctx.strip_usage = stream_usage::ask_mock(&mut parsed, option);
    }
    let (response, _) = mock::reply(
        &MockRequest {
            endpoint: out.endpoint,
            model: out.model,
            stream: out.stream,
            sse: crate::intake::sse_query(out.parts),
            body: &parsed,
            body_len: out.body.len(),
            request_id: &ctx.request_id,
        },
        provider.latency,
    );
    ctx.proxied = true;
    ctx.sent = true;
    ctx.sent_at = Some(Instant::now());
    ctx.sse =
        response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v == "text/event-stream");
    ctx.format = out.format;
    response
}

/// Sends the request upstream with a credential from the pool, failing over to the next
/// credential on the credential's own faults (see [`COOLDOWN_REJECTED`]), 5xx and
/// connection failures, at most [`MAX_ATTEMPTS`]
/// times.
async fn failover(
    set: &ProviderSet,
    provider: &Provider,
    parts: &http::request::Parts,
    // The body, and the upstream path when it is not the one the client called
    // (translation, aliases).
    (body, path_and_query): (Bytes, Option<String>),
    format: ApiFormat,
    // Rests after a 429 are per model where the provider limits per model.
    model: &str,
    ctx: &mut RequestContext,
) -> Result<Response<Body>, Refusal> {
    let fail = |code, message: String| (format, ApiError::new(code, message));
    let Some(client) = &provider.client else {
        return Err(fail(ErrorCode::Internal, "provider has no upstream client".to_owned()));
    };
    let path_and_query = path_and_query
        .unwrap_or_else(|| upstream::upstream_path(parts.uri.path(), parts.uri.query()));
    let mut headers = upstream::forwardable_request_headers(provider.kind, &parts.headers);
    if let Some((name, value)) = &set.fingerprint {
        headers.insert(name.clone(), value.clone());
    }
    // One pool for all attempts, even when credentials change meanwhile.
    let pool = provider.pool.load();
    let mut tried: Vec<usize> = Vec::with_capacity(MAX_ATTEMPTS);
    let mut last: Option<ApiError> = None;
    while tried.len() < MAX_ATTEMPTS {
        let index = match pool.pick(&tried, model) {
            Ok(index) => index,
            Err(wait) => {
                if let Some(error) = last {
                    return Err((format, error));
                }
                let error = match wait {
                    None => ApiError::new(
                        ErrorCode::Unavailable,
                        format!(
                            "provider `{}` has no credentials; an operator adds one with `cliproxy-server vault add --provider {}`",
                            provider.name, provider.name
                        ),
                    ),
                    Some(wait) => ApiError::new(
                        ErrorCode::Unavailable,
                        format!("every credential of provider `{}` is cooling down after upstream errors", provider.name),
                    )
                    .retry_after(wait),
                };
                return Err((format, error));
            }
        };
        tried.push(index);
        let slot = pool.slot(index);
        ctx.credential = Some(slot.id.clone());
        ctx.attempts = tried.len();
        let base = slot.base_url.as_ref().unwrap_or(&provider.base_url);
        let uri = base.join(&path_and_query).map_err(|_| {
            fail(ErrorCode::BadRequest, "the request path cannot be forwarded".to_owned())
        })?;
        // OAuth tokens due for refresh are refreshed here (single-flight, own task); a
        // failed refresh has already cooled the credential down.
        let token = match refresh::bearer(slot, &provider.name, client, &set.vault).await {
            Ok(token) => token,
            Err(failure) => {
                last = Some(ApiError::new(
                    ErrorCode::UpstreamFailure,
                    format!(
                        "a credential of provider `{}` needs a token refresh, which failed: {}",
                        provider.name, failure.reason
                    ),
                ));
                continue;
            }
        };
        let oauth = matches!(slot.auth, crate::pool::SlotAuth::OAuth(_));
        if providers::apply_credential(provider.kind, &mut headers, &token, oauth).is_err() {
            warn!(set.log, "credential holds characters not allowed in a header; skipping it";
                "credential" => &slot.id, "provider" => &provider.name);
            pool.cool_down(index, COOLDOWN_REJECTED);
            continue;
        }
        slot.touch();
        let mut request = Request::new(Full::new(body.clone()));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = uri;
        *request.headers_mut() = headers.clone();

        ctx.sent = true;
        ctx.sent_at.get_or_insert_with(Instant::now);
        let sent =
            tokio::time::timeout(set.limits.upstream_first_byte_timeout, client.request(request))
                .await;
        let response = match sent {
            Err(_) => {
                // Not failed over: the upstream may still be generating, and a retry
                // would pay for the same work twice.
                return Err(fail(
                    ErrorCode::UpstreamTimeout,
                    format!(
                        "provider `{}` sent no response within {:?} (server.limits.upstream_first_byte_timeout)",
                        provider.name, set.limits.upstream_first_byte_timeout
                    ),
                ));
            }
            Ok(Err(error)) if error.is_connect() => {
                // Only an endpoint that belongs to this credential makes it rest (it
                // spares the next requests the connect timeout); the provider's own
                // endpoint being down is no credential's fault.
                let own_endpoint = slot.base_url.is_some();
                warn!(set.log, "upstream connection failed; trying the next credential";
                    "provider" => &provider.name, "credential" => &slot.id,
                    "cooldown" => own_endpoint, "error" => error_chain(&error));
                if own_endpoint {
                    pool.cool_down(index, COOLDOWN_CONNECT);
                }
                last = Some(ApiError::new(
                    ErrorCode::UpstreamFailure,
                    if timed_out(&error) {
                        format!(
                            "could not connect to provider `{}` within {:?} (server.limits.upstream_connect_timeout)",
                            provider.name, set.limits.upstream_connect_timeout
                        )
                    } else {
                        format!("could not connect to provider `{}`", provider.name)
                    },
                ));
                continue;
            }
            Ok(Err(error)) => {
                // The request may have reached the upstream: retrying is not safe.
                warn!(set.log, "upstream request failed"; "provider" => &provider.name,
                    "credential" => &slot.id, "error" => error_chain(&error));
                return Err(fail(
                    ErrorCode::UpstreamFailure,
                    format!(
                        "the request to provider `{}` failed before a response arrived",
                        provider.name
                    ),
                ));
            }
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        let (upstream_parts, upstream_body) = response.into_parts();
        // A 4xx with which a provider may say that the key is bad is read (capped, within
        // the first-byte timeout) to judge whose fault it is: only the credential's own
        // faults make it rest and fail over, so that no client can bench the credentials
        // by asking for something the provider refuses (`providers::classify_error`).
        // `said`: the upstream's own message, made safe to show (`upstream_error`), for
        // the gateway's error when this answer makes it fail over or give up.
        let judged = providers::judged_by_body(status.as_u16());
        let (upstream_body, fault, said): (Body, _, _) = if judged {
            let read = tokio::time::timeout(
                set.limits.upstream_first_byte_timeout,
                upstream::read_error_body(upstream_body, providers::MAX_ERROR_BODY),
            )
            .await;
            match read {
                Ok(Ok(Some(bytes))) => {
                    let fault = providers::classify_error(provider.kind, status.as_u16(), &bytes);
                    let said = upstream_message(provider.kind, &bytes, token.expose());
                    // The body may go back to the client: a provider (or a proxy in
                    // front of it) that echoes the credential must not hand it over.
                    (full(upstream::redact(bytes, token.expose())), Some(fault), said)
                }
                Ok(Ok(None)) => {
                    // Not judged and not forwarded: it could not be searched for the
                    // credential. Nobody's fault, so no rest and no failover.
                    return Err(fail(
                        ErrorCode::UpstreamFailure,
                        format!(
                            "provider `{}` refused the request (upstream status {status}) with an error body over {} KiB, which the gateway does not forward",
                            provider.name,
                            providers::MAX_ERROR_BODY / 1024
                        ),
                    ));
                }
                Ok(Err(_)) | Err(_) => {
                    // Not failed over, as for any reply that stops half-way: the
                    // upstream has answered this request.
                    return Err(fail(
                        ErrorCode::UpstreamFailure,
                        format!(
                            "provider `{}` answered {status} but its error body did not arrive whole within {:?} (server.limits.upstream_first_byte_timeout)",
                            provider.name, set.limits.upstream_first_byte_timeout
                        ),
                    ));
                }
            }
        } else if status.is_server_error() {
            // A 5xx fails over whatever its body says: the body is read (capped, and for
            // at most `SERVER_ERROR_BODY_WAIT`) only for its message.
            let read = tokio::time::timeout(
                set.limits.upstream_first_byte_timeout.min(SERVER_ERROR_BODY_WAIT),
                upstream::read_error_body(upstream_body, providers::MAX_ERROR_BODY),
            )
            .await;
            let said = match read {
                Ok(Ok(Some(bytes))) => upstream_message(provider.kind, &bytes, token.expose()),
                _ => None,
            };
            (full(Bytes::new()), None, said)
        } else {
            (upstream_body.map_err(Into::into).boxed_unsync(), None, None)
        };
        // The gateway's message for the client, with what the upstream said after it.
        let told = |message: String| match &said {
            Some(said) => format!("{message}: upstream said: {said}"),
            None => message,
        };
        // A 5xx from the credential's own base URL is that endpoint's fault, and rests it
        // (as a refused connection does); from the provider's shared one it is nobody's.
        let own_endpoint = slot.base_url.is_some();
        let failover = match (status.as_u16(), fault) {
            // The upstream's message is not shown here: about the gateway's key, it
            // would make the client think its own key wrong. The operator reads it in
            // the log below.
            (_, Some(providers::UpstreamFault::Credential)) => Some((
                Some(Rest::Credential(COOLDOWN_REJECTED)),
                ApiError::new(
                    ErrorCode::UpstreamFailure,
                    format!(
                        "provider `{}` rejected the gateway's credential (upstream status {status}); an operator must check the vault and the provider account",
                        provider.name
                    ),
                ),
            )),
            (_, Some(providers::UpstreamFault::RateLimited)) => {
                let wait = upstream::retry_after(&upstream_parts.headers)
                    .unwrap_or(COOLDOWN_RATE_LIMITED);
                let rest = if providers::limits_per_model(provider.kind) {
                    Rest::Model(wait)
                } else {
                    Rest::Credential(wait)
                };
                Some((
                    Some(rest),
                    ApiError::new(
                        ErrorCode::RateLimited,
                        told(format!(
                            "provider `{}` is rate limiting the gateway's credentials",
                            provider.name
                        )),
                    )
                    .retry_after(wait),
                ))
            }
            (500..=599, _) => Some((
                own_endpoint.then_some(Rest::Credential(COOLDOWN_CONNECT)),
                ApiError::new(
                    ErrorCode::UpstreamFailure,
                    told(format!(
                        "provider `{}` failed (upstream status {status})",
                        provider.name
                    )),
                ),
            )),
            // A success that is not an API answer (an HTML page from a captive portal or
            // a misconfigured proxy in front of the provider) would reach the client as
            // a 200 its SDK cannot parse: it is an upstream failure, not the credential's.
            (200..=299, _) => upstream::unexpected_content_type(&upstream_parts.headers).map(
                |found| {
                    (
                        None,
                        ApiError::new(
                            ErrorCode::UpstreamFailure,
                            format!(
                                "provider `{}` answered with content type `{found}` instead of JSON or an event stream",
                                provider.name
                            ),
                        ),
                    )
                },
            ),
            _ => None,
        };
        if let Some((rest, error)) = failover {
            match rest {
                Some(rest) => {
                    info!(set.log, "upstream refused the request; cooling the credential down";
                        "provider" => &provider.name, "credential" => &slot.id,
                        "status" => status.as_u16(), "cooldown_ms" => rest.duration().as_millis() as u64,
                        "model_only" => matches!(rest, Rest::Model(_)),
                        "upstream_message" => said.as_deref());
                    pool.rest(index, model, rest);
                    // Counted against the client key whose request it was: one that keeps
                    // causing cool-downs is throttled (`server.security.cooldown_abuse`).
                    if let (Some(client), Some(ip)) = (&ctx.client, ctx.client_ip) {
                        ctx.guard.cooldown_caused(client, ip, &ctx.request_id);
                    }
                }
                None => {
                    info!(set.log, "upstream failed; trying the next credential";
                        "provider" => &provider.name, "credential" => &slot.id,
                        "status" => status.as_u16(), "upstream_message" => said.as_deref());
                }
            }
            last = Some(error);
            continue;
        }

        // Success (or a client error the client should see as is): stream it back.
        let sse = upstream_parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if let Some(pair) = ctx.translation() {
            return translation::reply(
                pair,
                Response::from_parts(upstream_parts, upstream_body),
                sse,
                set.limits.upstream_first_byte_timeout,
                &provider.name,
                token.expose(),
                ctx,
            )
            .await
            .map_err(|error| (format, error));
        }
        ctx.proxied = true;
        ctx.sse = sse;
        ctx.format = format;
        let mut response = Response::new(upstream_body);
        *response.status_mut() = upstream_parts.status;
        *response.headers_mut() = upstream::forwardable_response_headers(&upstream_parts.headers);
        return Ok(response);
    }
    Err((
        format,
        last.unwrap_or_else(|| {
            ApiError::new(ErrorCode::UpstreamFailure, "no upstream attempt succeeded")
        }),
    ))
}

/// Whether an I/O timeout is among the causes of `error` (the connector's connect timeout).
fn timed_out(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(cause) = source {
        if cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        source = cause.source();
    }
    false
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
