//! The network guard's management routes (SPEC §3): the runtime IP denylist and maintenance
//! mode. They run behind the management gate in `management.rs`.

use std::time::Duration;

use bytes::Bytes;
use cliproxy_core::ErrorCode;
use cliproxy_netguard::{DenyEntry, parse_network};
use http::{Response, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use slog::{Logger, info};

use crate::control::Note;
use crate::error::ApiError;
use crate::guard::Guard;
use crate::http_util::Body;
use crate::http_util::{json_response, truncate};

type Answer = Result<Response<Body>, ApiError>;

/// Longest reason kept with a denylist entry.
const MAX_REASON: usize = 256;

/// `GET /security/ip-denylist`: the runtime entries in force.
pub(crate) fn denylist(guard: &Guard) -> Response<Body> {
    let entries: Vec<Value> = guard.ip.runtime_denylist().iter().map(entry_json).collect();
    json_response(StatusCode::OK, &json!({ "entries": entries }))
}

/// What `POST /security/ip-denylist` accepts.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewEntry {
    ip: String,
    #[serde(default)]
    reason: Option<String>,
    /// `"30m"`, `"1h"`, or a number of seconds; absent for an entry that does not expire.
    #[serde(default)]
    ttl: Option<Value>,
}

/// `POST /security/ip-denylist`: refuses an address or range from the next connection on,
/// and keeps it across restarts (written to the state store before the answer).
pub(crate) async fn deny(guard: &Guard, body: Bytes, log: &Logger, note: &mut Note) -> Answer {
    let bad = |message: String| ApiError::new(ErrorCode::BadRequest, message);
    let input: NewEntry = serde_json::from_slice(&body).map_err(|e| {
        bad(format!(
            "the body must be {{\"ip\": \"IP or CIDR\", \"reason\": \"...\", \"ttl\": \"1h\"}} (error at line {} column {})",
            e.line(),
            e.column()
        ))
    })?;
    let network = parse_network(&input.ip).ok_or_else(|| {
        bad(format!(
            "`ip` `{}` is not an IP address or a CIDR range written with its network address (e.g. 203.0.113.0/24)",
            truncate(&input.ip, 64)
        ))
    })?;
    let ttl = match &input.ttl {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => match n.as_u64() {
            Some(seconds) if seconds > 0 => Some(Duration::from_secs(seconds)),
            _ => return Err(bad("`ttl` in seconds must be a positive whole number".to_owned())),
        },
        Some(Value::String(text)) => match humantime::parse_duration(text) {
            Ok(ttl) if !ttl.is_zero() => Some(ttl),
            _ => return Err(bad("`ttl` must be a duration such as \"30m\" or \"1h\"".to_owned())),
        },
        Some(_) => return Err(bad("`ttl` must be a duration string or seconds".to_owned())),
    };
    let reason = input.reason.unwrap_or_default();
    if reason.chars().count() > MAX_REASON || reason.chars().any(char::is_control) {
        return Err(bad(format!(
            "`reason` must be at most {MAX_REASON} characters with no control characters"
        )));
    }
    let now = guard.clock.unix_seconds();
    let entry = DenyEntry {
        network,
        reason,
        created_at: now,
        expires_at: ttl.map(|ttl| now.saturating_add(ttl.as_secs().max(1))),
    };
    // In force at once; then stored. When the store fails, its writer keeps the change and
    // retries, so memory and disk agree again once it recovers; the answer says so.
    note.changed.push("security.ip_denylist".to_owned());
    note.details.insert("network".to_owned(), json!(network.to_string()));
    note.details.insert("expires_at".to_owned(), json!(entry.expires_at));
    let replaced = guard.ip.deny(entry.clone());
    guard.persist_deny(&entry).await?;
    info!(log, "IP denylist entry added"; "event_type" => "config_change",
        "network" => network.to_string(), "reason" => &entry.reason,
        "expires_at" => entry.expires_at, "replaced" => replaced);
    let status = if replaced { StatusCode::OK } else { StatusCode::CREATED };
    Ok(json_response(status, &entry_json(&entry)))
}

/// `DELETE /security/ip-denylist/{ip}` (a range as `203.0.113.0/24` or `203.0.113.0%2F24`).
pub(crate) async fn undeny(guard: &Guard, text: &str, log: &Logger, note: &mut Note) -> Answer {
    let decoded =
        text.replace("%2F", "/").replace("%2f", "/").replace("%3A", ":").replace("%3a", ":");
    let network = parse_network(&decoded).ok_or_else(|| {
        ApiError::new(
            ErrorCode::BadRequest,
            "the path must end with an IP address or a CIDR range (e.g. /security/ip-denylist/203.0.113.0/24)",
        )
    })?;
    if !guard
        .ip
        .runtime_denylist()
        .iter()
        .any(|e| e.network == cliproxy_netguard::canonical_network(network))
    {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!("{network} is not in the runtime denylist"),
        ));
    }
    note.changed.push("security.ip_denylist".to_owned());
    note.details.insert("network".to_owned(), json!(network.to_string()));
    guard.ip.undeny(network);
    guard.persist_undeny(network).await?;
    info!(log, "IP denylist entry removed"; "event_type" => "config_change", "network" => network.to_string());
    Ok(json_response(StatusCode::OK, &json!({"removed": network.to_string()})))
}

/// `GET /maintenance`.
pub(crate) fn maintenance(guard: &Guard) -> Response<Body> {
    json_response(StatusCode::OK, &json!(guard.maintenance.get()))
}

/// What `PUT /maintenance` accepts.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetMaintenance {
    enabled: bool,
    #[serde(default)]
    message: Option<String>,
}

/// `PUT /maintenance`: on or off at once, no restart.
pub(crate) fn set_maintenance(guard: &Guard, body: Bytes, log: &Logger, note: &mut Note) -> Answer {
    let input: SetMaintenance = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            ErrorCode::BadRequest,
            format!(
                "the body must be {{\"enabled\": true|false, \"message\": \"...\"}} (error at line {} column {})",
                e.line(),
                e.column()
            ),
        )
    })?;
    if let Some(message) = &input.message
        && (message.chars().count() > 1024 || message.chars().any(|c| c.is_control() && c != '\n'))
    {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            "`message` must be at most 1024 characters with no control characters",
        ));
    }
    note.changed.push("server.maintenance_mode".to_owned());
    if input.message.is_some() {
        note.changed.push("server.message".to_owned());
    }
    note.details.insert("enabled".to_owned(), json!(input.enabled));
    let state = guard.maintenance.set(input.enabled, input.message);
    info!(log, "maintenance mode changed"; "event_type" => "config_change", "enabled" => state.enabled);
    Ok(json_response(StatusCode::OK, &json!(state)))
}

fn entry_json(entry: &DenyEntry) -> Value {
    json!({
        "ip": entry.network.to_string(),
        "reason": entry.reason,
        "created_at": entry.created_at,
        "expires_at": entry.expires_at,
    })
}
