//! The management routes over the gate's ban book: `GET /security/bans` lists the addresses
//! banned after failed keys, `DELETE /security/bans/{ip}` lifts one. They are apart from the
//! gate (`gate.rs`), which only judges calls, because they are handlers like the others: the
//! router calls them past the gate, and the lift also reaches the guard's state store so that
//! a restart does not bring a lifted ban back.

use std::net::IpAddr;

use cliproxy_core::ErrorCode;
use http::{Response, StatusCode};
use serde_json::{Value, json};
use slog::{Logger, info};

use super::gate::Management;
use crate::control::Note;
use crate::error::ApiError;
use crate::guard::{Guard, ban_key};
use crate::http_util::{Body, json_response};

/// `GET /security/bans`: the addresses banned from the management API after failed keys,
/// with when each ban ends (an IPv6 ban covers the address's /64, named in `network`), and
/// how many bans were dropped since the start to keep the table within its bound.
pub(super) fn bans(gate: &Management) -> Response<Body> {
    let now = crate::clock::unix_now();
    let bans: Vec<Value> = gate
        .bans()
        .into_iter()
        .map(|(ip, until)| {
            let mut ban = json!({"ip": ip.to_string(), "until": until, "remaining_s": until.saturating_sub(now)});
            if ip.is_ipv6() {
                ban["network"] = json!(format!("{ip}/64"));
            }
            ban
        })
        .collect();
    let evicted = gate.evicted();
    json_response(StatusCode::OK, &json!({ "bans": bans, "evicted": evicted }))
}

/// `DELETE /security/bans/{ip}`: lifts a ban at once and removes it from the state store
/// before answering, so that a restart does not bring it back.
pub(super) async fn lift(
    gate: &Management,
    guard: &Guard,
    text: &str,
    log: &Logger,
    note: &mut Note,
) -> Result<Response<Body>, ApiError> {
    // An IPv6 address may arrive with its colons percent-encoded.
    let decoded = text.replace("%3A", ":").replace("%3a", ":");
    let ip = decoded.parse::<IpAddr>().map_err(|_| {
        ApiError::new(
            ErrorCode::BadRequest,
            "the path must end with an IP address (e.g. /security/bans/127.0.0.1)",
        )
    })?;
    // A ban on IPv6 covers its /64: any address of it names the ban.
    let ip = ban_key(ip);
    note.changed.push("management.bans".to_owned());
    note.details.insert("ip".to_owned(), json!(ip.to_string()));
    if !gate.lift(ip) {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!("{ip} is not banned from the management API"),
        ));
    }
    guard.persist(cliproxy_netguard::StateChange::Unban(ip)).await?;
    info!(log, "management API ban lifted"; "event_type" => "config_change", "ip" => ip.to_string());
    Ok(json_response(StatusCode::OK, &json!({ "lifted": ip.to_string() })))
}
