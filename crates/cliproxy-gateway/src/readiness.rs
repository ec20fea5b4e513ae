//! Health and readiness: `GET /healthz` (the process answers) and `GET /readyz` (the vault
//! readable, the state store and the audit sink writable; 503 naming the failing check),
//! and the same checks with their errors for the authenticated management status.

use std::sync::Arc;

use http::{Response, StatusCode};
use serde_json::{Value, json};
use slog::{Logger, warn};

use crate::guard::Guard;
use crate::http_util::Body;
use crate::http_util::json_response;
use crate::refresh::Vault;

/// `GET /healthz`: liveness, no key needed.
pub(crate) fn healthz() -> Response<Body> {
    json_response(StatusCode::OK, &json!({"status": "ok"}))
}

/// The readiness checks in order, each with its error (which names files and keys).
fn checks(vault: &Vault, guard: &Guard) -> [(&'static str, Result<(), String>); 3] {
    // The vault first: without credentials nothing can be served at all. The audit log
    // last: the gateway keeps serving while it fails, but an orchestrator should know.
    [
        ("vault", vault.store.check().map_err(|e| crate::vault_error_message(&e))),
        ("state", guard.state.check().map_err(|e| crate::netguard_error(&e))),
        ("audit", guard.audit_failing().map_or(Ok(()), Err)),
    ]
}

/// Each readiness check with its full error, for the authenticated management status.
pub(crate) fn detail(vault: &Vault, guard: &Guard) -> Value {
    let checks: serde_json::Map<String, Value> = checks(vault, guard)
        .into_iter()
        .map(|(name, result)| {
            (name.to_owned(), json!(result.err().unwrap_or_else(|| "ok".to_owned())))
        })
        .collect();
    Value::Object(checks)
}

/// `GET /readyz`: no key needed, so it names the failing check and nothing more.
pub(crate) fn readyz(vault: &Arc<Vault>, guard: &Guard, log: &Logger) -> Response<Body> {
    for (name, result) in &checks(vault, guard) {
        if let Err(error) = result {
            warn!(log, "readiness check failed"; "check" => *name, "error" => error);
            // `/readyz` needs no key, so it names the failing check and nothing more: the
            // error names files and directories, which are for the operator (this log line
            // and `GET /v0/management/status`), not for whoever can reach the port.
            return json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({"status": "not ready", "failing": name, "checks": {*name: "failing"}}),
            );
        }
    }
    let audit = if guard.audit.enabled() { "ok" } else { "off" };
    json_response(
        StatusCode::OK,
        &json!({"status": "ready", "checks": {"vault": "ok", "state": "ok", "audit": audit}}),
    )
}
