//! Config reload (`POST /v0/management/config/reload` and SIGHUP): the file is loaded and
//! checked in full first — an invalid file changes nothing and the answer says why — then
//! the keys that can change in a running gateway are applied and the others are listed as
//! needing a restart. Either way the attempt is audited as `config_change` with the changed
//! key paths; values of secret keys are never shown.

use std::collections::BTreeMap;

use cliproxy_audit::{Event, What};
use cliproxy_core::ErrorCode;
use http::{Response, StatusCode};
use serde_json::{Value, json};
use slog::{info, warn};

use crate::body::Body;
use crate::config::{Config, ConfigSource};
use crate::error::ApiError;
use crate::gateway::{Gateway, json_response};
use crate::management::Note;

/// The key paths (and everything below them) a reload applies without a restart. Client
/// keys can be revoked, maintenance turned on, and the audit filter and alert rules changed
/// in the middle of an incident; everything else (listener, TLS, limits, vault, providers,
/// sandbox) is read once at start.
const LIVE: [&str; 5] = [
    "auth.api_keys",
    "server.maintenance_mode",
    "server.message",
    "logging.audit.events",
    "alerts",
];

/// Inside `auth.api_keys`, the per-key limits are built into the limiters at start.
const RESTART_INSIDE_LIVE: [&str; 2] = [".rate_limit", ".quota"];

/// The outcome of a reload.
#[derive(Debug, Clone, PartialEq)]
pub struct ReloadReport {
    /// The key paths whose new values are in force.
    pub applied: Vec<String>,
    /// The key paths that changed but take effect only after a restart.
    pub restart_required: Vec<String>,
    /// Each changed path with its old and new value (`[redacted]` for secret keys).
    pub changes: Vec<Value>,
}

/// Where the configuration was loaded from and what it said, for the next reload's diff.
#[derive(Debug)]
pub(crate) struct Loaded {
    source: ConfigSource,
    flat: BTreeMap<String, Value>,
}

impl Gateway {
    /// Remembers where the configuration came from, so that it can be reloaded. A gateway
    /// built from text (`demo`) has none and refuses reloads.
    pub fn set_config_source(&self, source: ConfigSource) {
        let flat = raw(&source).map(|v| flatten(&v)).unwrap_or_default();
        *self.loaded().lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some(Loaded { source, flat });
    }

    /// Reloads the configuration (SIGHUP). Errors are logged and audited; the old
    /// configuration stays in force.
    pub fn reload(&self, trigger: &str) -> Result<ReloadReport, String> {
        let mut note = Note::default();
        let outcome = self.reload_inner(trigger, &mut note);
        self.audit_reload(note, outcome.as_ref().map(|_| ()).map_err(Clone::clone));
        outcome
    }

    /// `POST /v0/management/config/reload` (the management layer audits the call).
    pub(crate) fn reload_config(
        &self,
        trigger: &str,
        note: &mut Note,
    ) -> Result<Response<Body>, ApiError> {
        match self.reload_inner(trigger, note) {
            Ok(report) => Ok(json_response(
                StatusCode::OK,
                &json!({
                    "reloaded": true,
                    "applied": report.applied,
                    "restart_required": report.restart_required,
                    "changes": report.changes,
                }),
            )),
            Err(reason) => Err(ApiError::new(
                ErrorCode::BadRequest,
                format!(
                    "the configuration was not reloaded; the running one stays in force: {reason}"
                ),
            )),
        }
    }

    fn reload_inner(&self, trigger: &str, note: &mut Note) -> Result<ReloadReport, String> {
        let log = self.log();
        note.details.insert("trigger".to_owned(), json!(trigger));
        let mut loaded = self.loaded().lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(current) = loaded.as_mut() else {
            return Err("this gateway was not started from a config file (demo); restart it to change its configuration".to_owned());
        };
        let fail = |reason: String| {
            warn!(log, "config reload refused; the running configuration stays in force";
                "trigger" => trigger, "error" => &reason);
            reason
        };
        let config = Config::load(&current.source).map_err(|e| fail(e.to_string()))?;
        crate::webhook::check(&config.alerts).map_err(|e| fail(e.to_string()))?;
        let client_keys = config.auth.client_keys().map_err(|e| fail(e.to_string()))?;
        let flat = raw(&current.source).map(|v| flatten(&v)).map_err(fail)?;

        let changed = diff(&current.flat, &flat);
        let mut report =
            ReloadReport { applied: Vec::new(), restart_required: Vec::new(), changes: Vec::new() };
        for path in &changed {
            let live = LIVE.iter().any(|prefix| under(path, prefix))
                && !RESTART_INSIDE_LIVE.iter().any(|part| path.contains(part));
            if live {
                report.applied.push(path.clone());
            } else {
                report.restart_required.push(path.clone());
            }
            let show = |v: Option<&Value>| match v {
                None => Value::Null,
                Some(_) if secret(path) => json!("[redacted]"),
                Some(v) => v.clone(),
            };
            report.changes.push(
                json!({"path": path, "from": show(current.flat.get(path)), "to": show(flat.get(path))}),
            );
        }
        // Apply, in the order an incident needs: keys first.
        if report.applied.iter().any(|p| under(p, "auth.api_keys")) {
            self.set_client_keys(client_keys);
        }
        if report
            .applied
            .iter()
            .any(|p| under(p, "server.maintenance_mode") || under(p, "server.message"))
        {
            self.guard()
                .maintenance
                .set(config.server.maintenance_mode, Some(config.server.message.clone()));
        }
        if report.applied.iter().any(|p| under(p, "logging.audit.events") || under(p, "alerts")) {
            self.guard().audit.reload(&config.logging.audit, &config.alerts);
        }
        current.flat = flat;
        note.changed = changed;
        if !report.restart_required.is_empty() {
            note.details.insert("restart_required".to_owned(), json!(report.restart_required));
        }
        info!(log, "configuration reloaded"; "trigger" => trigger,
            "applied" => report.applied.join(", "),
            "restart_required" => report.restart_required.join(", "));
        Ok(report)
    }

    fn audit_reload(&self, note: Note, outcome: Result<(), String>) {
        let event = Event::new(What::ConfigChange {
            action: "reload",
            changed: note.changed,
            details: note.details,
            outcome,
        });
        self.guard().emit(event);
    }
}

/// The configuration as plain values (after `${VAR}` interpolation), for the diff.
fn raw(source: &ConfigSource) -> Result<Value, String> {
    Config::figment(source).extract::<Value>().map_err(|e| e.to_string())
}

/// `a.b[2].c` → value, for every leaf.
fn flatten(value: &Value) -> BTreeMap<String, Value> {
    fn walk(prefix: String, value: &Value, out: &mut BTreeMap<String, Value>) {
        match value {
            Value::Object(map) if !map.is_empty() => {
                for (key, value) in map {
                    let path =
                        if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
                    walk(path, value, out);
                }
            }
            Value::Array(items) if !items.is_empty() => {
                for (index, value) in items.iter().enumerate() {
                    walk(format!("{prefix}[{index}]"), value, out);
                }
            }
            leaf => {
                out.insert(prefix, leaf.clone());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(String::new(), value, &mut out);
    out
}

/// The paths whose value differs, was added or was removed.
fn diff(old: &BTreeMap<String, Value>, new: &BTreeMap<String, Value>) -> Vec<String> {
    let mut paths: Vec<String> = old
        .iter()
        .filter(|(path, value)| new.get(*path) != Some(*value))
        .map(|(path, _)| path.clone())
        .chain(new.keys().filter(|path| !old.contains_key(*path)).cloned())
        .collect();
    paths.sort();
    paths.dedup();
    paths
}

/// Whether `path` is `prefix` or below it.
fn under(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix).is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
}

/// Whether a path holds a secret: its value is never shown.
fn secret(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    lower.starts_with("auth.api_keys")
        || ["key", "secret", "token", "password"].iter().any(|word| lower.contains(word))
}

/// Map helper for tests.
#[cfg(test)]
fn flat(value: Value) -> BTreeMap<String, Value> {
    flatten(&value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_names_changed_added_and_removed_leaves() {
        let old =
            flat(json!({"server": {"port": 1, "message": "a"}, "auth": {"api_keys": ["k1"]}}));
        let new = flat(json!({"server": {"port": 2, "message": "a", "host": "::1"},
                              "auth": {"api_keys": ["k1", "k2"]}}));
        assert_eq!(diff(&old, &new), ["auth.api_keys[1]", "server.host", "server.port"]);
        assert!(diff(&old, &old).is_empty());
    }

    #[test]
    fn secret_paths_are_recognised() {
        for path in [
            "auth.api_keys[0]",
            "auth.api_keys[1].key",
            "auth.encryption.key",
            "management.secret_key",
            "providers.x.token",
        ] {
            assert!(secret(path), "{path}");
        }
        for path in ["server.port", "server.message", "alerts[0].duration"] {
            assert!(!secret(path), "{path}");
        }
    }

    #[test]
    fn prefixes_match_whole_segments() {
        assert!(under("alerts[0].name", "alerts"));
        assert!(under("server.message", "server.message"));
        assert!(!under("server.messages", "server.message"));
        assert!(!under("alertsx", "alerts"));
    }
}
