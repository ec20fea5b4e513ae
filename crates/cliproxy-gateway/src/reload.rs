//! Config reload (`POST /v0/management/config/reload` and SIGHUP): the file is loaded and
//! checked in full first — an invalid file changes nothing and the answer says why — then
//! the keys that can change in a running gateway are applied and the others are listed as
//! needing a restart. Either way the attempt is audited as `config_change` with the changed
//! key paths; values of secret keys are never shown.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use cliproxy_audit::{Event, What};
use cliproxy_core::ErrorCode;
use http::{Response, StatusCode};
use serde_json::{Value, json};
use slog::{Logger, info, warn};

use crate::auth::ClientKeyCell;
use crate::config::GatewayConfig;
use crate::control::Note;
use crate::error::ApiError;
use crate::guard::Guard;
use crate::http_util::Body;
use crate::http_util::json_response;

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

/// The outcome of a reload.
#[derive(Debug, Clone, PartialEq)]
pub struct ReloadReport {
    /// The key paths whose new values are in force.
    pub applied: Vec<String>,
    /// The key paths that changed but take effect only after a restart.
    pub restart_required: Vec<String>,
    /// Each changed path with its old and new value (`[redacted]` for secret keys).
    pub changes: Vec<Value>,
    /// Why changed keys that are normally applied at once were not.
    pub notes: Vec<String>,
}

/// Where a reload reads the configuration: the binary's loader. The gateway reads no file
/// itself; the binary, which owns the file's format, loads it and hands back the gateway's
/// view.
pub trait ConfigLoader: Send + Sync {
    /// The configuration as plain values (after `${VAR}` interpolation), for the diff of
    /// what changed.
    fn raw(&self) -> Result<Value, String>;

    /// The configuration loaded and checked in full, or why not (naming the key): an
    /// invalid file changes nothing.
    fn load(&self) -> Result<GatewayConfig, String>;
}

/// Where the configuration is loaded from and what it said, for the next reload's diff.
struct Loaded {
    loader: Box<dyn ConfigLoader>,
    flat: BTreeMap<String, Value>,
}

/// The reload: what it applies to (the client keys in force, the network guard and its
/// audit layer) and where the configuration came from. The gateway holds one; SIGHUP and
/// the management API call it.
pub(crate) struct Reloader {
    log: Logger,
    guard: Arc<Guard>,
    client_keys: Arc<ClientKeyCell>,
    /// Where the configuration came from and its last values; `None` for a gateway built
    /// from text.
    loaded: Mutex<Option<Loaded>>,
}

impl Reloader {
    pub(crate) fn new(log: Logger, guard: Arc<Guard>, client_keys: Arc<ClientKeyCell>) -> Self {
        Self { log, guard, client_keys, loaded: Mutex::new(None) }
    }

    /// Remembers how to load the configuration again, so that it can be reloaded. A gateway
    /// built from text (`demo`) has no loader and refuses reloads.
    pub(crate) fn set_config_loader(&self, loader: Box<dyn ConfigLoader>) {
        let flat = loader.raw().map(|v| flatten(&v)).unwrap_or_default();
        *self.loaded.lock().unwrap_or_else(PoisonError::into_inner) = Some(Loaded { loader, flat });
    }

    /// Reloads the configuration (SIGHUP). Errors are logged and audited; the old
    /// configuration stays in force.
    pub(crate) fn reload(&self, trigger: &str) -> Result<ReloadReport, String> {
        let mut note = Note::default();
        let outcome = self.reload_inner(trigger, &mut note);
        self.audit_reload(note, outcome.as_ref().map(|_| ()).map_err(Clone::clone));
        outcome
    }

    /// `POST /v0/management/config/reload` (the management layer audits the call).
    pub(crate) async fn reload_config(
        self: &Arc<Self>,
        trigger: &'static str,
        note: &mut Note,
    ) -> Result<Response<Body>, ApiError> {
        // Reading and checking the file is blocking work: off the async workers.
        let reloader = self.clone();
        let (outcome, filled) = tokio::task::spawn_blocking(move || {
            let mut note = Note::default();
            let outcome = reloader.reload_inner(trigger, &mut note);
            (outcome, note)
        })
        .await
        .map_err(|_| ApiError::new(ErrorCode::Internal, "the config reload task failed"))?;
        *note = filled;
        match outcome {
            Ok(report) => Ok(json_response(
                StatusCode::OK,
                &json!({
                    "reloaded": true,
                    "applied": report.applied,
                    "restart_required": report.restart_required,
                    "changes": report.changes,
                    "notes": report.notes,
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
        let log = &self.log;
        note.details.insert("trigger".to_owned(), json!(trigger));
        let mut loaded = self.loaded.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(current) = loaded.as_mut() else {
            return Err("this gateway was not started from a config file (demo); restart it to change its configuration".to_owned());
        };
        let fail = |reason: String| {
            warn!(log, "config reload refused; the running configuration stays in force";
                "trigger" => trigger, "error" => &reason);
            reason
        };
        let config = current.loader.load().map_err(fail)?;
        crate::guard::check_config(&config).map_err(fail)?;
        let client_keys =
            Arc::new(config.auth.client_keys().map_err(|e| fail(crate::vault_error_message(&e)))?);
        let flat = current.loader.raw().map(|v| flatten(&v)).map_err(fail)?;

        let changed = diff(&current.flat, &flat);
        let mut report = ReloadReport {
            applied: Vec::new(),
            restart_required: Vec::new(),
            changes: Vec::new(),
            notes: Vec::new(),
        };
        // The keys' limits go to the admission before the keys themselves, so that no
        // reloaded key ever runs without them; should the admission fail to take them (the
        // default one never does), the whole key list waits for a restart.
        let keys_held = if changed.iter().any(|p| under(p, "auth.api_keys")) {
            // The run-time keys stay beside the reloaded ones, so their limits are checked
            // together.
            let candidate = self.client_keys.with_config(client_keys.clone(), log);
            self.guard.apply_client_limits(&candidate.limit_table()).err().map(|why| {
                format!(
                    "the limits of auth.api_keys could not be put in force ({why}); the running keys stay"
                )
            })
        } else {
            None
        };
        if let Some(note) = &keys_held {
            report.notes.push(note.clone());
        }
        for path in &changed {
            let live = LIVE.iter().any(|prefix| under(path, prefix))
                && !(keys_held.is_some() && under(path, "auth.api_keys"));
            if live {
                report.applied.push(path.clone());
            } else {
                report.restart_required.push(path.clone());
            }
            let show = |v: Option<&Value>| match v {
                None => Value::Null,
                Some(v) if v.get("redacted_sha256").is_some() => json!("[redacted]"),
                Some(v) => v.clone(),
            };
            report.changes.push(
                json!({"path": path, "from": show(current.flat.get(path)), "to": show(flat.get(path))}),
            );
        }
        // Apply, in the order an incident needs: keys first.
        if report.applied.iter().any(|p| under(p, "auth.api_keys")) {
            self.client_keys.replace(client_keys, log);
        }
        // Maintenance follows the file only where the file changed: a new message alone
        // keeps the on/off state an operator set through the API.
        let guard = &self.guard;
        if report.applied.iter().any(|p| under(p, "server.maintenance_mode")) {
            guard
                .maintenance
                .set(config.server.maintenance_mode, Some(config.server.message.clone()));
        } else if report.applied.iter().any(|p| under(p, "server.message")) {
            let enabled = guard.maintenance.get().enabled;
            guard.maintenance.set(enabled, Some(config.server.message.clone()));
        }
        if report.applied.iter().any(|p| under(p, "logging.audit.events") || under(p, "alerts")) {
            self.guard.audit.reload(&config.logging.audit, &config.alerts);
        }
        current.flat = flat;
        note.changed = changed;
        if !report.restart_required.is_empty() {
            note.details.insert("restart_required".to_owned(), json!(report.restart_required));
        }
        if !report.notes.is_empty() {
            note.details.insert("notes".to_owned(), json!(report.notes));
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
        self.guard.emit(event);
    }
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
                let kept = keep(&prefix, leaf);
                out.insert(prefix, kept);
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

/// String settings whose values are shown in a reload's `changes` (by the last path segment,
/// list indexes left out). Every other string — keys, tokens, URLs (a webhook URL or a
/// query string is a bearer secret), file paths — is shown as `[redacted]`: an allow-list,
/// so that a secret under an unexpected name is never shown.
const SHOWN_STRINGS: [&str; 17] = [
    "host",
    "message",
    "level",
    "format",
    "name",
    "condition",
    "action",
    "duration",
    "min_version",
    "reset",
    "type",
    "forwarded_header",
    "events",
    "models",
    "cipher_suites",
    "allowed_ips",
    "denied_ips",
];

/// Whether a leaf's value may be shown: numbers, booleans and null always (no secret is
/// one); strings only for [`SHOWN_STRINGS`], and nothing under `auth.api_keys` or
/// `management`.
fn shown(path: &str, value: &Value) -> bool {
    if under(path, "auth.api_keys") || under(path, "management") {
        return false;
    }
    match value {
        Value::String(_) => {
            let last = path.rsplit('.').next().unwrap_or(path);
            let last = last.split('[').next().unwrap_or(last);
            SHOWN_STRINGS.contains(&last)
        }
        Value::Array(_) | Value::Object(_) => false,
        _ => true,
    }
}

/// What is kept of a leaf between reloads: its value when it may be shown, else only a
/// digest (so that the configuration's secrets are not kept in memory outside their
/// `Secret` wrappers).
fn keep(path: &str, value: &Value) -> Value {
    if shown(path, value) {
        value.clone()
    } else {
        let digest = ring::digest::digest(&ring::digest::SHA256, value.to_string().as_bytes());
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        json!({ "redacted_sha256": hex })
    }
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
    fn only_allow_listed_strings_are_kept_and_shown() {
        let kept = flat(json!({
            "auth": {"api_keys": ["cpk-1", {"name": "bob", "key": "cpk-2"}],
                     "encryption": {"key": "k"}},
            "management": {"secret_key": "m"},
            "alerts": [{"name": "flood", "webhook": "https://hooks.example.com/T0/B0/SECRET"}],
            "providers": {"x": {"base_url": "https://h/v1?key=AIzaSECRET", "models": ["gpt-*"]}},
            "server": {"port": 8080, "message": "back soon", "host": "::1"},
        }));
        let text = serde_json::to_string(&kept).unwrap();
        for secret in ["cpk-1", "cpk-2", "\"k\"", "\"m\"", "SECRET", "bob"] {
            assert!(!text.contains(secret), "{secret} kept in {text}");
        }
        for (path, value) in [
            ("server.port", json!(8080)),
            ("server.message", json!("back soon")),
            ("server.host", json!("::1")),
            ("alerts[0].name", json!("flood")),
            ("providers.x.models[0]", json!("gpt-*")),
        ] {
            assert_eq!(kept[path], value, "{path}");
        }
        // Changed secrets still show up as changed paths.
        let other = flat(json!({"auth": {"encryption": {"key": "k2"}}}));
        let before = flat(json!({"auth": {"encryption": {"key": "k"}}}));
        assert_eq!(diff(&before, &other), ["auth.encryption.key"]);
    }

    #[test]
    fn prefixes_match_whole_segments() {
        assert!(under("alerts[0].name", "alerts"));
        assert!(under("server.message", "server.message"));
        assert!(!under("server.messages", "server.message"));
        assert!(!under("alertsx", "alerts"));
    }
}
