//! Client keys created at run time, through the gateway's pipeline: the `/client-keys`
//! management routes (create, list, read, change, revoke), what each change does to the
//! next request (401 disabled, expired, revoked; 403 on a model not listed), names unique
//! across the config file and the store, a restart reading the keys back, hostile bodies
//! answered with clear 400s, and the key never in a log line, audit line, metric or answer
//! after its creation.

#![allow(clippy::unwrap_used, clippy::panic, reason = "a failed expectation fails the test")]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

mod common;

use bytes::Bytes;
use cliproxy_gateway::Gateway;
use cliproxy_netguard::FakeClock;
use cliproxy_server::compose;
use cliproxy_server::config::Config;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

use crate::common::Captured;

const CLIENT_KEY: &str = "client-key-0123456789abcdef";
const MGMT_KEY: &str = "mgmt-key-0123456789abcdef";
const NOW: u64 = 1_800_000_000;
const PEER: &str = "127.0.0.1:40000";

struct Built {
    gateway: Gateway,
    log: Captured,
    clock: Arc<FakeClock>,
    audit: std::path::PathBuf,
    dir: tempfile::TempDir,
}

fn yaml(dir: &std::path::Path) -> String {
    format!(
        "auth:\n  api_keys: [{{name: file-key, key: \"{CLIENT_KEY}\"}}]\n  dir: {:?}\n\
         management: {{secret_key: \"{MGMT_KEY}\"}}\n\
         logging: {{audit: {{enabled: true, file: {:?}}}}}\n\
         metrics: {{enabled: true}}\n\
         providers:\n  demo: {{type: mock, models: [\"mock-*\", \"other-*\"]}}\n\
         pricing: {{models: {{\"mock-*\": {{input: 1, output: 2}}}}}}\n",
        dir.join("auths").display().to_string(),
        dir.join("audit.log").display().to_string(),
    )
}

fn build_in(dir: tempfile::TempDir) -> Built {
    let config = Config::from_yaml(&yaml(dir.path())).unwrap();
    let log = Captured::default();
    let clock = FakeClock::at_unix(NOW);
    let gateway = compose::gateway_with_clock(
        &config,
        &log.logger(),
        Some(clock.clone() as Arc<dyn cliproxy_netguard::Clock>),
    )
    .unwrap();
    Built { gateway, log, clock, audit: dir.path().join("audit.log"), dir }
}

fn build() -> Built {
    build_in(tempfile::tempdir().unwrap())
}

/// A management call with the management key.
async fn manage(gateway: &Gateway, method: Method, path: &str, body: &str) -> (u16, String) {
    send(gateway, method, &format!("/v0/management{path}"), ("x-management-key", MGMT_KEY), body)
        .await
}

async fn send(
    gateway: &Gateway,
    method: Method,
    path: &str,
    key: (&str, &str),
    body: &str,
) -> (u16, String) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(key.0, key.1)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let response = gateway.handle(request, PEER.parse::<SocketAddr>().unwrap()).await;
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// A chat completion with `key` for `model`.
async fn chat(gateway: &Gateway, key: &str, model: &str) -> (u16, String) {
    let body = json!({"model": model, "messages": [{"role": "user", "content": "Hi"}]});
    let bearer = format!("Bearer {key}");
    send(
        gateway,
        Method::POST,
        "/v1/chat/completions",
        ("authorization", &bearer),
        &body.to_string(),
    )
    .await
}

async fn create(gateway: &Gateway, body: Value) -> (String, Value) {
    let (status, text) = manage(gateway, Method::POST, "/client-keys", &body.to_string()).await;
    assert_eq!(status, 201, "{text}");
    let created: Value = serde_json::from_str(&text).unwrap();
    (created["key"].as_str().unwrap().to_owned(), created)
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[tokio::test]
async fn a_key_is_created_used_changed_and_revoked_and_never_shown_again() {
    let built = build();
    let gateway = &built.gateway;
    let (key, created) = create(
        gateway,
        json!({"name": "ci", "models": ["mock-*"], "rate_limit": {"requests_per_minute": 600},
               "quota": {"limit": 100000, "reset": "weekly"},
               "budget": {"usd": "2.5", "period": "daily"}, "expires_at": "2030-01-01T00:00:00Z"}),
    )
    .await;
    assert!(key.starts_with("cpk-") && key.len() == 52, "{key}");
    assert_eq!(created["name"], "ci");
    assert_eq!(created["source"], "store");
    assert_eq!(created["hint"], json!(format!("{}\u{2026}", &key[..12])));
    assert_eq!(created["budget"], json!({"usd": "2.500000", "period": "daily"}));
    assert_eq!(created["expires_at"], "2030-01-01T00:00:00Z");
    assert_eq!(created["quota"], json!({"limit": 100000, "reset": "weekly"}));
    let id = created["id"].as_str().unwrap().to_owned();

    // In force at once: a chat with it answers, on a model it lists.
    let (status, text) = chat(gateway, &key, "mock-1").await;
    assert_eq!(status, 200, "{text}");
    // A model it does not list is refused, naming the model, not the key.
    let (status, text) = chat(gateway, &key, "other-1").await;
    assert_eq!(status, 403, "{text}");
    assert!(!text.contains(&key), "{text}");

    // Listed with the config file's key, never with the key or its digest.
    let (status, text) = manage(gateway, Method::GET, "/client-keys", "").await;
    assert_eq!(status, 200, "{text}");
    let list = json(&text);
    let sources: Vec<(&str, &str)> = list["client_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["name"].as_str().unwrap(), k["source"].as_str().unwrap()))
        .collect();
    assert_eq!(sources, [("file-key", "config"), ("ci", "store")]);
    let (status, text) = manage(gateway, Method::GET, "/client-keys/ci", "").await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(json(&text)["id"], json!(id));
    let (status, text) = manage(gateway, Method::GET, "/client-keys/file-key", "").await;
    assert_eq!((status, json(&text)["source"].clone()), (200, json!("config")));

    // Disabled: refused with its own message; enabled again: served.
    let (status, text) =
        manage(gateway, Method::PATCH, "/client-keys/ci", r#"{"disabled": true}"#).await;
    assert_eq!((status, json(&text)["disabled"].clone()), (200, json!(true)), "{text}");
    let (status, text) = chat(gateway, &key, "mock-1").await;
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("this client key is disabled"), "{text}");
    let patch = r#"{"disabled": false, "models": null, "budget": null, "rate_limit": null}"#;
    let (status, text) = manage(gateway, Method::PATCH, "/client-keys/ci", patch).await;
    assert_eq!(status, 200, "{text}");
    let changed = json(&text);
    assert_eq!(
        (&changed["models"], &changed["budget"], &changed["rate_limit"]),
        (&json!([]), &Value::Null, &Value::Null)
    );
    // `models: null` opened every model.
    assert_eq!(chat(gateway, &key, "other-1").await.0, 200);

    // Revoked: 204, refused on the next request, gone from the list.
    let (status, text) = manage(gateway, Method::DELETE, "/client-keys/ci", "").await;
    assert_eq!((status, text.as_str()), (204, ""));
    let (status, text) = chat(gateway, &key, "mock-1").await;
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("invalid client key"), "{text}");
    assert_eq!(manage(gateway, Method::GET, "/client-keys/ci", "").await.0, 404);
    assert_eq!(manage(gateway, Method::DELETE, "/client-keys/ci", "").await.0, 404);

    // The audit log has each write as a config change naming the key and its id; no log
    // line, audit line, metric or answer after the creation holds the key or its secret part.
    gateway.flush_audit();
    let audit = std::fs::read_to_string(&built.audit).unwrap();
    for action in ["client_key_create", "client_key_change", "client_key_revoke"] {
        let line = audit
            .lines()
            .map(json)
            .find(|line| line["details"]["action"] == action)
            .unwrap_or_else(|| panic!("no {action} line in {audit}"));
        assert_eq!(line["event_type"], "config_change", "{line}");
        assert_eq!(line["details"]["client_key"], "ci", "{line}");
        assert_eq!(line["details"]["client_key_id"], json!(id), "{line}");
    }
    let (_, listed) = manage(gateway, Method::GET, "/client-keys", "").await;
    let everything =
        format!("{audit}\n{}\n{}\n{listed}", built.log.text(), gateway.render_metrics());
    assert!(!everything.contains(&key), "the key leaked");
    assert!(!everything.contains(&key[12..]), "the key's secret part leaked");
    assert!(!everything.contains(&cliproxy_vault::key_digest(key.as_bytes())), "the digest leaked");
}

#[tokio::test]
async fn expiry_is_honoured_on_the_gateways_clock() {
    let built = build();
    let gateway = &built.gateway;
    let (key, _) = create(gateway, json!({"name": "brief"})).await;
    let soon = cliproxy_core::format_utc(NOW + 60);
    let body = json!({"expires_at": soon}).to_string();
    let (status, text) = manage(gateway, Method::PATCH, "/client-keys/brief", &body).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(chat(gateway, &key, "mock-1").await.0, 200);
    built.clock.advance(Duration::from_secs(59));
    assert_eq!(chat(gateway, &key, "mock-1").await.0, 200);
    built.clock.advance(Duration::from_secs(1));
    let (status, text) = chat(gateway, &key, "mock-1").await;
    assert_eq!(status, 401, "{text}");
    assert!(text.contains(&format!("this client key expired at {soon}")), "{text}");
    gateway.flush_audit();
    let audit = std::fs::read_to_string(&built.audit).unwrap();
    assert!(
        audit
            .lines()
            .map(json)
            .any(|l| l["event_type"] == "auth_failure" && l["result"] == "key_expired"),
        "{audit}"
    );
    // An expiry in the past is refused (disable the key to stop it at once).
    let past = json!({"expires_at": cliproxy_core::format_utc(NOW)}).to_string();
    let (status, text) = manage(gateway, Method::PATCH, "/client-keys/brief", &past).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("must be in the future"), "{text}");
}

#[tokio::test]
async fn a_disabled_key_is_audited_as_such() {
    let built = build();
    let gateway = &built.gateway;
    let (key, _) = create(gateway, json!({"name": "off", "disabled": true})).await;
    assert_eq!(chat(gateway, &key, "mock-1").await.0, 401);
    gateway.flush_audit();
    let audit = std::fs::read_to_string(&built.audit).unwrap();
    assert!(
        audit
            .lines()
            .map(json)
            .any(|l| l["event_type"] == "auth_failure" && l["result"] == "key_disabled"),
        "{audit}"
    );
    assert!(!audit.contains(&key));
}

#[tokio::test]
async fn names_are_unique_and_config_keys_are_read_only() {
    let built = build();
    let gateway = &built.gateway;
    create(gateway, json!({"name": "ci"})).await;
    let (status, text) = manage(gateway, Method::POST, "/client-keys", r#"{"name": "ci"}"#).await;
    assert_eq!(status, 409, "{text}");
    assert!(text.contains("exists already"), "{text}");
    let (status, text) =
        manage(gateway, Method::POST, "/client-keys", r#"{"name": "file-key"}"#).await;
    assert_eq!(status, 409, "{text}");
    for (method, body) in [(Method::PATCH, r#"{"disabled": true}"#), (Method::DELETE, "")] {
        let (status, text) = manage(gateway, method, "/client-keys/file-key", body).await;
        assert_eq!(status, 409, "{text}");
        assert!(text.contains("auth.api_keys"), "{text}");
    }
    // The config file's key still works.
    assert_eq!(chat(gateway, CLIENT_KEY, "mock-1").await.0, 200);
}

#[tokio::test]
async fn a_restart_reads_the_keys_back_from_the_state_store() {
    let built = build();
    let (key, _) = create(&built.gateway, json!({"name": "kept", "models": ["mock-*"]})).await;
    let (revoked, _) = create(&built.gateway, json!({"name": "gone"})).await;
    assert_eq!(manage(&built.gateway, Method::DELETE, "/client-keys/gone", "").await.0, 204);
    let dir = built.dir;
    drop(built.gateway);
    let again = build_in(dir);
    assert_eq!(chat(&again.gateway, &key, "mock-1").await.0, 200);
    assert_eq!(chat(&again.gateway, &key, "other-1").await.0, 403);
    assert_eq!(chat(&again.gateway, &revoked, "mock-1").await.0, 401);
}

/// Hostile bodies and paths: each a 400 (413 oversized) that says what is wrong, never
/// repeats a key, and creates nothing.
#[tokio::test]
async fn hostile_bodies_get_clear_refusals_that_never_echo_a_key() {
    let built = build();
    let gateway = &built.gateway;
    let planted = "cpk-0123456789abcdef0123456789abcdef0123456789abcdef";
    let cases: Vec<(String, u16, &str)> = vec![
        ("{".to_owned(), 400, "not JSON"),
        ("".to_owned(), 400, "not JSON"),
        ("[]".to_owned(), 400, "must be a JSON object"),
        (format!("\"{planted}\""), 400, "must be a JSON object"),
        ("{}".to_owned(), 400, "`name` is required"),
        (json!({"name": 7}).to_string(), 400, "`name` must be a string"),
        (json!({"name": planted}).to_string(), 400, "not repeated"),
        (json!({"name": "bad\nname"}).to_string(), 400, "may contain only ASCII letters"),
        (json!({"name": "bad\u{1b}[31m"}).to_string(), 400, "may contain only ASCII letters"),
        (json!({"name": "x".repeat(129)}).to_string(), 400, "1 to 128 characters"),
        (json!({"name": "ok", planted: 1}).to_string(), 400, "unknown field (not repeated)"),
        (json!({"name": "ok", "nmae": 1}).to_string(), 400, "unknown field `nmae`"),
        (json!({"name": "ok", "models": "mock-1"}).to_string(), 400, "`models` must be a list"),
        (json!({"name": "ok", "models": [planted, 1]}).to_string(), 400, "`models` must be a list"),
        (json!({"name": "ok", "models": ["a\nb"]}).to_string(), 400, "control character"),
        (
            json!({"name": "ok", "rate_limit": {"requests_per_minute": 0}}).to_string(),
            400,
            "`rate_limit` must be",
        ),
        (json!({"name": "ok", "rate_limit": {"rpm": 5}}).to_string(), 400, "`rate_limit` must be"),
        (json!({"name": "ok", "quota": {"limit": -1}}).to_string(), 400, "`quota` must be"),
        (
            json!({"name": "ok", "quota": {"limit": 5, "reset": "hourly"}}).to_string(),
            400,
            "`quota` must be",
        ),
        (
            json!({"name": "ok", "budget": {"usd": planted, "period": "daily"}}).to_string(),
            400,
            "`budget.usd`",
        ),
        (
            json!({"name": "ok", "budget": {"usd": "-1", "period": "daily"}}).to_string(),
            400,
            "`budget.usd`",
        ),
        (
            json!({"name": "ok", "budget": {"usd": "0.0000001", "period": "daily"}}).to_string(),
            400,
            "`budget.usd`",
        ),
        (
            json!({"name": "ok", "budget": {"usd": 0, "period": "daily"}}).to_string(),
            400,
            "more than 0",
        ),
        (
            json!({"name": "ok", "budget": {"usd": 1e300, "period": "daily"}}).to_string(),
            400,
            "`budget.usd`",
        ),
        (json!({"name": "ok", "budget": {"usd": 5}}).to_string(), 400, "`budget` must be"),
        (json!({"name": "ok", "expires_at": planted}).to_string(), 400, "RFC 3339"),
        (json!({"name": "ok", "expires_at": 1_900_000_000}).to_string(), 400, "RFC 3339"),
        (json!({"name": "ok", "disabled": "yes"}).to_string(), 400, "true or false"),
        ("x".repeat(70_000), 413, "at most"),
    ];
    for (body, status, says) in &cases {
        let (got, text) = manage(gateway, Method::POST, "/client-keys", body).await;
        assert_eq!(got, *status, "{body:.80}: {text}");
        assert!(text.contains(says), "{body:.80}: {text}");
        assert!(!text.contains(planted), "{body:.80}: {text}");
        assert!(!text.contains(&planted[4..]), "{body:.80}: {text}");
    }
    // PATCH refuses renames and the same bad values.
    create(gateway, json!({"name": "ci"})).await;
    for (body, says) in [
        (json!({"name": "other"}), "cannot be changed"),
        (json!({"quota": "lots"}), "`quota` must be"),
        (json!({"bogus": true}), "unknown field `bogus`"),
    ] {
        let (got, text) =
            manage(gateway, Method::PATCH, "/client-keys/ci", &body.to_string()).await;
        assert_eq!(got, 400, "{body}: {text}");
        assert!(text.contains(says), "{body}: {text}");
    }
    // A key where a name goes in the path is refused without being repeated, in the answer
    // and in the audit line.
    for method in [Method::GET, Method::PATCH, Method::DELETE] {
        let (got, text) =
            manage(gateway, method.clone(), &format!("/client-keys/{planted}"), "{}").await;
        assert_eq!(got, 400, "{method}: {text}");
        assert!(!text.contains(&planted[4..]), "{method}: {text}");
    }
    let (got, text) = manage(gateway, Method::GET, "/client-keys/a%0Ab", "").await;
    assert_eq!(got, 400, "{text}");
    // Nothing but `ci` was created.
    let (_, text) = manage(gateway, Method::GET, "/client-keys", "").await;
    let names: Vec<String> = json(&text)["client_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["file-key", "ci"]);
    gateway.flush_audit();
    let everything =
        format!("{}\n{}", std::fs::read_to_string(&built.audit).unwrap(), built.log.text());
    let leaks: Vec<&str> = everything.lines().filter(|l| l.contains(&planted[4..])).collect();
    assert!(leaks.is_empty(), "a planted key reached a log or audit line: {leaks:#?}");
}

/// A state store that turns unwritable on demand: while it fails, what is submitted waits
/// (as the real writer keeps a change it could not write) and every flush and read fails.
#[derive(Debug)]
struct Unwritable {
    inner: Arc<dyn cliproxy_netguard::StateStore>,
    failing: std::sync::atomic::AtomicBool,
    held: std::sync::Mutex<Vec<cliproxy_netguard::StateChange>>,
}

impl Unwritable {
    fn failing(&self) -> bool {
        self.failing.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn error(&self) -> cliproxy_netguard::Error {
        cliproxy_netguard::Error::State {
            path: "unwritable.db".into(),
            message: "disk I/O error (test)".to_owned(),
        }
    }

    /// Makes the store writable again: what it held is written.
    fn recover(&self) {
        self.failing.store(false, std::sync::atomic::Ordering::SeqCst);
        for change in self.held.lock().unwrap().drain(..) {
            self.inner.submit(change);
        }
    }
}

impl cliproxy_netguard::StateStore for Unwritable {
    fn load_quota_usage(&self) -> cliproxy_netguard::Result<Vec<cliproxy_netguard::QuotaUsage>> {
        self.inner.load_quota_usage()
    }
    fn load_denylist(&self) -> cliproxy_netguard::Result<Vec<cliproxy_netguard::DenyEntry>> {
        self.inner.load_denylist()
    }
    fn load_bans(&self) -> cliproxy_netguard::Result<Vec<cliproxy_netguard::Ban>> {
        self.inner.load_bans()
    }
    fn load_audit_head(&self) -> cliproxy_netguard::Result<Option<(u64, String)>> {
        self.inner.load_audit_head()
    }
    fn load_client_keys(
        &self,
    ) -> cliproxy_netguard::Result<Vec<cliproxy_netguard::StoredClientKey>> {
        if self.failing() { Err(self.error()) } else { self.inner.load_client_keys() }
    }
    fn submit(&self, change: cliproxy_netguard::StateChange) {
        if self.failing() {
            self.held.lock().unwrap().push(change);
        } else {
            self.inner.submit(change);
        }
    }
    fn flush(&self) -> cliproxy_netguard::Result<()> {
        if self.failing() { Err(self.error()) } else { self.inner.flush() }
    }
    fn check(&self) -> cliproxy_netguard::Result<()> {
        if self.failing() { Err(self.error()) } else { self.inner.check() }
    }
    fn path(&self) -> Option<&std::path::Path> {
        self.inner.path()
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}

/// A write the state store cannot flush is answered 503 and is not put in force: a key
/// created then is not usable (nobody got it either), a key disabled then still works, a key
/// revoked then still works; once the store recovers, what it held is written and read back.
#[tokio::test]
async fn a_write_the_store_cannot_flush_is_refused_and_not_put_in_force() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::from_yaml(&yaml(dir.path())).unwrap().gateway();
    let log = Captured::default();
    let mut layers = compose::layers(&config, None, &log.logger()).unwrap();
    let state = Arc::new(Unwritable {
        inner: layers.state.clone(),
        failing: false.into(),
        held: Vec::new().into(),
    });
    layers.state = state.clone();
    let gateway = Gateway::from_parts(&config, layers, log.logger()).unwrap();
    let (key, _) = create(&gateway, json!({"name": "ci"})).await;
    assert_eq!(chat(&gateway, &key, "mock-1").await.0, 200);

    state.failing.store(true, std::sync::atomic::Ordering::SeqCst);
    for (method, path, body) in [
        (Method::POST, "/client-keys", r#"{"name": "new"}"#),
        (Method::PATCH, "/client-keys/ci", r#"{"disabled": true}"#),
        (Method::DELETE, "/client-keys/ci", ""),
    ] {
        let (status, text) = manage(&gateway, method.clone(), path, body).await;
        assert_eq!(status, 503, "{method} {path}: {text}");
        assert!(text.contains("the change is not in force"), "{text}");
        assert!(!text.contains("cpk-"), "{text}");
        // Not in force: the key still works, and no other appeared.
        assert_eq!(chat(&gateway, &key, "mock-1").await.0, 200, "after {method} {path}");
    }
    let (_, text) = manage(&gateway, Method::GET, "/client-keys", "").await;
    assert!(!text.contains("\"new\""), "{text}");

    // Recovered: the writes held are written (in order: created, disabled, revoked) and the
    // next read puts them in force.
    state.recover();
    let (_, text) = manage(&gateway, Method::GET, "/client-keys", "").await;
    let names: Vec<String> = json(&text)["client_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["file-key", "new"]);
    assert_eq!(chat(&gateway, &key, "mock-1").await.0, 401);
}
