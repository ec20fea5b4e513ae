//! `GET /status`: what the operator (or a monitor) reads of the running gateway, gathered
//! from each layer through [`ControlPlane`] and from `/proc/self` at the time of the call.
//! It is a handler of its own because it reads every layer and changes none; the router
//! calls it past the gate.

use http::{Response, StatusCode};
use serde_json::{Value, json};

use cliproxy_vault::Protection;

use crate::control::ControlPlane;
use crate::http_util::{Body, json_response};

/// `GET /status`: version, uptime, the state of each layer and the sandbox posture read
/// from `/proc/self` now.
pub(super) fn status(plane: &impl ControlPlane) -> Response<Body> {
    let posture = cliproxy_container::posture::Posture::read()
        .ok()
        .and_then(|p| serde_json::to_value(p).ok())
        .unwrap_or(Value::Null);
    let store = &plane.vault().store;
    let gateway = plane.status();
    let encryption = match store.write_protection() {
        Protection::Plaintext => json!({"enabled": false}),
        Protection::Encrypted(key_id) => json!({"enabled": true, "key_id": key_id}),
    };
    json_response(
        StatusCode::OK,
        &json!({
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_s": gateway.uptime.as_secs(),
            // What `/readyz` says without a key, with the errors (files, keys) it leaves out.
            "readiness": gateway.readiness,
            // Tasks alive on the runtime (connections, bodies in flight, background work):
            // a figure that returns to its idle value when nothing leaks.
            "runtime": {
                "tasks": tokio::runtime::Handle::try_current()
                    .map(|handle| handle.metrics().num_alive_tasks())
                    .ok(),
            },
            "layers": {
                "vault": {"dir": store.location().display().to_string(), "encryption": encryption},
                "management": {"enabled": true},
                "netguard": plane.guard().status(),
                "audit": plane.guard().audit_status(),
                "metrics": {
                    "listener": gateway.metrics.enabled,
                    "path": gateway.metrics.path,
                },
                "sandbox": {"applied": gateway.sandbox, "posture": posture},
            },
        }),
    )
}
