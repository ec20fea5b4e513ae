//! The management API under `/v0/management` (SPEC §3): the course of one call. A call is
//! judged by its client address: the TCP peer, or behind a peer in `server.trusted_proxies`
//! the client its forwarding header names (the same address the network guard uses). It
//! passes the gate, or its refusal is audited and charged to the buckets; then the router
//! runs its route, and the call is audited and logged whatever the route answered.
//!
//! The plane is split by job, each in its own file under `management/`:
//! - `gate.rs` — who may call: the key, loopback, forwarded and browser calls, the book of
//!   failures and bans;
//! - `routes.rs` — the route table ([`ROUTES`]) and the dispatch from it;
//! - `credentials.rs`, `bans.rs`, `status.rs`, `usage.rs`, `client_keys.rs` — the handlers of
//!   `/auths`, `/security/bans`, `/status`, `/usage` and `/client-keys` (the denylist and
//!   maintenance handlers are `guard_api.rs`, which needs only the guard);
//! - `body.rs` — reading a request body under its cap, shared by the handlers that take one.
//!
//! This file holds what every call goes through around them: the refusal's charge and audit
//! line, the dispatch, the call's audit event and log line. It sits above the others and
//! none of them imports it, so the plane has no import circle. The whole plane reaches the
//! gateway only through [`ControlPlane`] (`control.rs`), never `gateway.rs`.
//!
//! A refusal but "no such API" (no key configured) is charged to the per-IP and global
//! buckets (429 past the limit); a call with the right key is not, so that the operator is
//! never locked out by a local client's traffic. Refusals are audited at most once per
//! address and second, and at most 20 a second across addresses; the rest in summary lines
//! (`Guard::auth_failure`).

mod bans;
mod body;
mod client_keys;
mod credentials;
mod gate;
mod routes;
mod status;
mod usage;

use std::net::SocketAddr;

use bytes::Bytes;
use http::{Method, Response};
use serde_json::Value;
use slog::{Logger, info};

use cliproxy_audit::{Event, Plane, What};

use crate::api::{ApiFormat, MANAGEMENT_PREFIX};
use crate::control::{ControlPlane, Note};
use crate::error::ApiError;
use crate::http_util::{Body, truncate};

pub use client_keys::check_client_key_body;
pub(crate) use gate::Management;
pub use routes::{ROUTES, Route};
pub use usage::{UsageBucket, UsageGroup, UsageQuery, usage_report};

/// Answers one management call.
pub(crate) async fn handle<B>(
    plane: &impl ControlPlane,
    gate: &Management,
    parts: &http::request::Parts,
    body: B,
    peer: SocketAddr,
    request_id: &str,
    log: &Logger,
) -> Response<Body>
where
    B: http_body::Body<Data = Bytes> + Send,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let path = parts.uri.path();
    let guard = plane.guard();
    // The client the network guard sees: behind a trusted proxy, the address its header
    // names, so that a ban falls on the caller and not on the proxy every caller shares.
    let client = guard.ip.client_ip(peer.ip(), &parts.headers).to_canonical();
    let (event, outcome) = match gate.gate(&parts.headers, client, log) {
        Err((reason, error)) => {
            if let Some(reason) = reason {
                // At most one line per address and second; the rest are counted.
                guard.auth_failure(
                    Event::new(What::AuthFailure { plane: Plane::Management, reason, repeats: 0 })
                        .ip(client)
                        .request_id(request_id)
                        .provider("management"),
                );
            }
            if reason == Some("ban_started") {
                let config = gate;
                // Under the violations' line budget: one ban per rotated address must not
                // write a line each.
                guard.violation(
                    Event::new(What::SecurityViolation {
                        rule: crate::guard::MANAGEMENT_BAN_RULE,
                        rate_limit: false,
                        detail: format!(
                            "banned from the management API for {} after {} failed keys (management.max_failures, management.ban)",
                            humantime::format_duration(config.ban_duration()),
                            config.max_failures()
                        ),
                        repeats: 0,
                    })
                    .ip(client)
                    .request_id(request_id),
                );
            }
            // A refused call is charged to the per-IP bucket and then the strangers' global
            // bucket, like a client request without a valid key: a flood of them trips the per-IP
            // limit (429, its summarised violation line, the `rate_limit_violations` alert rules)
            // and spends the address's budget for the client API too. A call with the right key is
            // not charged: the operator, and a monitor polling `/status`, must get in while a
            // local client uses up the address's bucket. The key is compared before the bucket is
            // asked (one SHA-256), so a refused guess is counted toward a ban whatever the bucket
            // answers.
            let charged = reason.map(|_| {
                guard
                    .admit(client, request_id)
                    .and_then(|_| guard.admit_global(client, request_id, false))
            });
            let error = match charged {
                Some(Err(limited)) => ApiError::limited(&limited),
                _ => error,
            };
            ("auth_failure", Err(error))
        }
        Ok(()) => {
            let mut note = Note::default();
            let outcome =
                routes::route(plane, gate, &parts.method, &parts.uri, body, log, &mut note).await;
            let result = match &outcome {
                Ok(response) if response.status().is_success() => Ok(()),
                Ok(response) => Err(format!("status {}", response.status().as_u16())),
                Err(error) => Err(error.message.clone()),
            };
            let (event_type, what) = describe(&parts.method, path, note, result);
            guard.emit(Event::new(what).ip(client).user("management").request_id(request_id));
            (event_type, outcome)
        }
    };
    let response = outcome.unwrap_or_else(|error| error.into_response(ApiFormat::OpenAi));
    if gate.enabled() {
        // The request's logger already carries the method, path and peer.
        info!(log, "management call"; "event_type" => event, "status" => response.status().as_u16());
    }
    response
}

/// Every call is audited: calls on credentials as `credential_access`, the rest as
/// `config_change` (reads included: who looked at the gateway's state is worth knowing).
fn describe(
    method: &Method,
    path: &str,
    note: Note,
    outcome: Result<(), String>,
) -> (&'static str, What) {
    let rest = path.strip_prefix(MANAGEMENT_PREFIX).unwrap_or("").trim_start_matches('/');
    let segments: Vec<&str> = rest.split('/').collect();
    if segments.first() == Some(&"auths") {
        let action = match (method, segments.as_slice()) {
            (&Method::GET, ["auths", "export"]) => "export",
            (&Method::GET, _) => "list",
            (&Method::POST, _) => "add",
            (&Method::DELETE, _) => "delete",
            _ => "other",
        };
        let credential = note.credential.or_else(|| match segments.as_slice() {
            ["auths", provider, id] => Some(format!("{provider}/{id}")),
            ["auths", provider] if action == "delete" => Some(format!("{provider}/*")),
            _ => None,
        });
        let credential = credential.map(|c| truncate(&c, 200));
        return ("credential_access", What::CredentialAccess { action, credential, outcome });
    }
    let action = match (method, segments.as_slice()) {
        (&Method::GET, ["status"]) => "status_read",
        (&Method::GET, ["maintenance"]) => "maintenance_read",
        (&Method::PUT, ["maintenance"]) => "maintenance",
        (&Method::GET, ["security", "ip-denylist"]) => "ip_denylist_read",
        (&Method::POST, ["security", "ip-denylist"]) => "ip_deny",
        (&Method::DELETE, ["security", "ip-denylist", ..]) => "ip_undeny",
        (&Method::GET, ["security", "bans"]) => "bans_read",
        (&Method::DELETE, ["security", "bans", ..]) => "ban_lift",
        (&Method::POST, ["config", "reload"]) => "reload",
        (&Method::GET, ["usage"]) => "usage_read",
        (&Method::GET, ["client-keys", ..]) => "client_keys_read",
        (&Method::POST, ["client-keys"]) => "client_key_create",
        (&Method::PATCH, ["client-keys", _]) => "client_key_change",
        (&Method::DELETE, ["client-keys", _]) => "client_key_revoke",
        _ => "other",
    };
    let mut details = note.details;
    // A client key pasted into the path where its name goes is not written to the audit log.
    let path = crate::client_key_table::redact_keys_in_path(path);
    details.insert("path".to_owned(), Value::String(truncate(&path, 200)));
    ("config_change", What::ConfigChange { action, changed: note.changed, details, outcome })
}
