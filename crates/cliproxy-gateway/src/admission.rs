//! Admission: the stages that decide whether a request may be served at all, each placed so
//! that a refused request costs the gateway as little as possible — the client's address
//! and the IP filter, maintenance, the per-IP bucket, and, last, once the request is known
//! to go out, the provider's and the client key's minute limits and quotas. (The global
//! bucket is charged by authentication, `auth.rs`, which knows which half to charge.)

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use cliproxy_core::ErrorCode;
use cliproxy_netguard::RejectionKind;

use crate::api::{self, ApiFormat, RouteError};
use crate::context::RequestContext;
use crate::error::{ApiError, Refusal};
use crate::guard::Guard;

/// `Retry-After` of maintenance answers: clients come back in a minute.
const MAINTENANCE_RETRY: Duration = Duration::from_secs(60);

/// The client's address, which must pass the IP filter. The client behind a trusted proxy
/// is known only now, from its headers; the peer itself passed the IP filter at accept, the
/// client it names must pass it too.
pub(crate) fn client_ip(
    guard: &Guard,
    peer: SocketAddr,
    parts: &http::request::Parts,
    ctx: &mut RequestContext,
) -> Result<IpAddr, Refusal> {
    let client_ip = guard.ip.client_ip(peer.ip(), &parts.headers);
    ctx.client_ip = Some(client_ip);
    // Checked on every request, not only when a proxy names the client: a runtime denylist
    // entry must also stop a connection that was open before it was added.
    if let cliproxy_netguard::Verdict::Deny(reason) = guard.ip.check(client_ip) {
        let context =
            crate::refusals::Context { request_id: Some(&ctx.request_id), ..Default::default() };
        guard.reject_in(
            RejectionKind::IpDeniedRequest,
            client_ip,
            &crate::netguard_keys::deny_reason(&reason),
            &context,
        );
        let format = api::route(&parts.method, parts.uri.path())
            .map(|e| e.format())
            .unwrap_or_else(|(RouteError::NotFound(f) | RouteError::MethodNotAllowed(f, _))| f);
        return Err((
            format,
            ApiError::new(ErrorCode::Forbidden, "your address is not allowed to use this gateway"),
        ));
    }
    Ok(client_ip)
}

/// Maintenance mode: 503 with `Retry-After` and the configured message.
pub(crate) fn maintenance(
    guard: &Guard,
    client_ip: IpAddr,
    format: ApiFormat,
) -> Result<(), Refusal> {
    if let Some(message) = guard.maintenance.active() {
        guard.reject(RejectionKind::Maintenance, client_ip, "maintenance mode");
        return Err((
            format,
            ApiError::new(ErrorCode::Unavailable, message).retry_after(MAINTENANCE_RETRY),
        ));
    }
    Ok(())
}

/// The per-IP bucket; its standing is kept for the `X-RateLimit-*` headers of a success.
pub(crate) fn per_ip(
    guard: &Guard,
    client_ip: IpAddr,
    format: ApiFormat,
    ctx: &mut RequestContext,
) -> Result<(), Refusal> {
    ctx.rate = guard
        .admit(client_ip, &ctx.request_id)
        .map_err(|limited| (format, ApiError::limited(&limited)))?;
    Ok(())
}

/// What the minute limits and quotas charge a request.
pub(crate) struct Charge<'a> {
    pub(crate) provider: &'a str,
    pub(crate) client: &'a str,
    /// The request body's length, from which the prompt's size is estimated.
    pub(crate) body_len: usize,
    /// The output cap the request asked for, when it named one.
    pub(crate) requested_tokens: Option<u64>,
    /// A call that generates nothing (`count_tokens`): settled as zero tokens.
    pub(crate) free: bool,
}

/// The provider's and the client key's requests and tokens per minute, then the quotas and
/// the key's budget. They hold the prompt's estimate too, not only the output's cap; the
/// reservations are kept in the context for the finishing stage to settle.
pub(crate) fn minute_limits_and_quotas(
    guard: &Guard,
    client_ip: IpAddr,
    charge: Charge<'_>,
    format: ApiFormat,
    ctx: &mut RequestContext,
) -> Result<(), Refusal> {
    let prompt_tokens = crate::usage::prompt_estimate(charge.body_len);
    // The routed model's price (looked up at routing) is what the key's budget holds the
    // worst case of.
    let price = ctx.price.map(|p| cliproxy_netguard::TokenPrice::new(p.input, p.output));
    let demand =
        cliproxy_netguard::Demand::new(prompt_tokens, charge.requested_tokens).with_price(price);
    let ticket = guard
        .admit_request(client_ip, charge.provider, charge.client, demand, &ctx.request_id)
        .map_err(|limited| (format, ApiError::limited(&limited)))?;
    if ctx.rate.is_none() {
        ctx.rate = ticket.headline();
    }
    ctx.admission = Some(ticket);
    ctx.free = charge.free;
    Ok(())
}
