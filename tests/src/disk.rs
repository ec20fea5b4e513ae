//! Disk faults for the end-to-end suite: the real binary started inside a private mount
//! namespace (`unshare --mount`), after a shell script has mounted what the test needs (a tiny
//! tmpfs that fills up, a read-only bind mount of a directory). The mounts exist only for that
//! process: the test sees the directories as they were, and reaches the gateway's view of them
//! through `/proc/<pid>/root`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::process::Command;
use tokio::sync::{Notify, oneshot};

use crate::{Gateway, Harness, WAIT, server_binary};

/// How a start attempt ended.
pub enum Started {
    /// The gateway logged `listening`.
    Running(Box<Gateway>),
    /// The process exited first: its status and everything it wrote.
    Exited(ExitStatus, String),
}

impl Started {
    /// The running gateway; panics with the output when it exited.
    pub fn running(self) -> Gateway {
        match self {
            Self::Running(gateway) => *gateway,
            Self::Exited(status, logs) => panic!("the gateway exited ({status}):\n{logs}"),
        }
    }

    /// The exit status and output; panics when the gateway is running.
    pub fn exited(self) -> (ExitStatus, String) {
        match self {
            Self::Exited(status, logs) => (status, logs),
            Self::Running(gateway) => {
                panic!(
                    "the gateway started but should have refused to; its logs:\n{}",
                    gateway.logs()
                )
            }
        }
    }
}

/// Quotes `path` for a POSIX shell.
pub fn sh_quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', "'\\''"))
}

/// Shell lines that mount a tmpfs of `size` (e.g. `64k`) on `dir`.
pub fn mount_tmpfs(dir: &Path, size: &str) -> String {
    format!("mount -t tmpfs -o size={size},mode=0700 cliproxy-e2e {}\n", sh_quote(dir))
}

/// Shell lines that make `dir` read-only (a read-only bind mount of itself): root's bypass of
/// file modes does not apply to a read-only mount.
pub fn mount_read_only(dir: &Path) -> String {
    let dir = sh_quote(dir);
    format!("mount --bind {dir} {dir}\nmount -o remount,bind,ro {dir}\n")
}

/// The path `path` as the process `pid` sees it (through its mount namespace).
pub fn seen_by(pid: u32, path: &Path) -> PathBuf {
    let relative = path.strip_prefix("/").unwrap_or(path);
    PathBuf::from(format!("/proc/{pid}/root")).join(relative)
}

impl Harness {
    /// Starts `cliproxy-server serve` in a private mount namespace after `setup` (shell lines,
    /// run as root in that namespace; any failing line stops the start) and waits for its
    /// `listening` line or its exit.
    pub async fn start_in_namespace(&self, setup: &str) -> Started {
        let script = format!("set -e\n{setup}exec \"$0\" --config \"$1\" serve\n");
        let mut command = Command::new("unshare");
        command
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .arg(server_binary())
            .arg(self.config_path());
        launch(command).await
    }

    /// Starts `cliproxy-server serve` (no namespace), reporting an exit rather than panicking.
    pub async fn try_start(&self) -> Started {
        let mut command = Command::new(server_binary());
        command.arg("--config").arg(self.config_path()).arg("serve");
        launch(command).await
    }
}

/// Spawns `command` as the harness does (output piped, killed on drop, the root check off)
/// and waits for its `listening` line or its exit.
async fn launch(mut command: Command) -> Started {
    let mut child = command
        .env("CLIPROXY_SANDBOX__REQUIRE_NON_ROOT", "false")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start cliproxy-server");
    let logs = Arc::new(Mutex::new(String::new()));
    let log_lines = Arc::new(Notify::new());
    let (ready_tx, ready_rx) = oneshot::channel();
    let err_done = crate::collect(
        child.stderr.take().expect("stderr"),
        Arc::clone(&logs),
        Some(ready_tx),
        Arc::clone(&log_lines),
    );
    let out_done = crate::collect(
        child.stdout.take().expect("stdout"),
        Arc::clone(&logs),
        None,
        Arc::clone(&log_lines),
    );
    // The sender is dropped when standard error closes without `listening`: an exit.
    if let Ok(Ok(addr)) = tokio::time::timeout(WAIT, ready_rx).await {
        return Started::Running(Box::new(Gateway {
            child,
            addr,
            logs,
            log_lines,
            collectors: vec![err_done, out_done],
        }));
    }
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the gateway neither started nor exited; its output:\n{}",
                logs.lock().expect("logs")
            )
        })
        .expect("wait for the gateway");
    // Both pipes reach their end once the process is gone.
    let _ = tokio::time::timeout(WAIT, async {
        let _ = err_done.await;
        let _ = out_done.await;
    })
    .await;
    let text = logs.lock().expect("logs").clone();
    Started::Exited(status, text)
}

/// The encryption key of [`faults_config`] (hex).
pub const ENCRYPTION_KEY: &str = "5a1e2d3c4b5a69788796a5b4c3d2e1f00112233445566778899aabbccddeeff0";

/// The management key of [`faults_config`].
pub const MANAGEMENT_KEY: &str = "cpm-e2e-disk-management-key-7d41c2a9";

/// The quota of the `demo` provider in [`faults_config`] (tokens per month): far above what a
/// test uses, so that usage is counted but never refused.
pub const QUOTA: u64 = 1_000_000_000;

/// The config of the disk and crash tests: encryption on, the management key, the mock
/// provider `demo` (with a monthly quota, so that every request updates the state store) and
/// an `openai` provider `oa` at `upstream` (for stored credentials), the audit log at `audit`,
/// metrics on a free port, the state database at `state` flushed every `flush`.
pub fn faults_config(harness: &Harness, upstream: &str, audit: &Path, state: &Path, flush: &str) {
    let yaml = format!(
        "server:\n  host: 127.0.0.1\n  port: 0\n  shutdown_timeout: 10s\n\
         auth:\n  api_keys:\n    - {{name: e2e, key: \"{client}\"}}\n\
         \x20 dir: {dir:?}\n  encryption: {{enabled: true, key: \"{ENCRYPTION_KEY}\"}}\n\
         logging: {{level: debug, format: json, audit: {{enabled: true, file: {audit:?}}}}}\n\
         metrics: {{enabled: true, host: 127.0.0.1, port: 0}}\n\
         management: {{secret_key: \"{MANAGEMENT_KEY}\"}}\n\
         state: {{path: {state:?}, flush_interval: {flush}}}\n\
         providers:\n  demo: {{type: mock, models: [\"mock-*\"], quota: {{limit: {QUOTA}, reset: monthly}}}}\n\
         \x20 oa: {{type: openai, base_url: \"{upstream}\", models: [\"gpt-*\"]}}\n",
        client = crate::CLIENT_KEY,
        dir = harness.auth_dir().display().to_string(),
        audit = audit.display().to_string(),
        state = state.display().to_string(),
    );
    harness.write_config(&yaml);
}

/// The vault of [`faults_config`], opened with the library (as the gateway does).
pub fn vault(harness: &Harness) -> std::sync::Arc<dyn cliproxy_vault::CredentialStore> {
    cliproxy_vault::Config {
        dir: harness.auth_dir(),
        encryption: cliproxy_vault::EncryptionConfig {
            enabled: true,
            key: Some(cliproxy_core::Secret::from(ENCRYPTION_KEY.to_owned())),
            ..Default::default()
        },
        ..cliproxy_vault::Config::default()
    }
    .build()
    .expect("open the vault")
}

/// The API-key token of credential `id`, read and decrypted with the library; panics naming
/// the credential when it is missing or does not decrypt.
pub fn token_of(harness: &Harness, id: &str) -> String {
    let credential = vault(harness)
        .get(id)
        .unwrap_or_else(|e| panic!("credential {id} does not load: {e}"))
        .unwrap_or_else(|| panic!("credential {id} is gone"));
    match &credential.secret {
        cliproxy_vault::CredentialSecret::ApiKey(token) => token.expose().to_owned(),
        _ => panic!("credential {id} is not an API key"),
    }
}

/// Where the gateway's metrics listener is (from its `metrics listening` line).
pub async fn metrics_addr(gateway: &Gateway) -> SocketAddr {
    let entry = gateway.wait_for_log(|e| e["msg"] == "metrics listening").await;
    entry["addr"].as_str().and_then(|a| a.parse().ok()).expect("metrics address")
}

/// One sample of the metrics (`series`: name and labels exactly as rendered), if present.
pub async fn metric(addr: SocketAddr, series: &str) -> Option<f64> {
    let text = crate::client()
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .expect("scrape the metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find_map(|line| line.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|value| value.trim().parse().ok())
}

/// `GET /readyz`: the status and the body.
pub async fn readiness(gateway: &Gateway) -> (u16, Value) {
    let response = crate::client()
        .get(format!("{}/readyz", gateway.url()))
        .send()
        .await
        .expect("readiness probe");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// One chat completion through the `demo` provider: the status and the tokens the reply
/// reports (`usage.total_tokens`, 0 when absent).
pub async fn chat(client: &reqwest::Client, gateway: &Gateway) -> (u16, u64) {
    let response = client
        .post(format!("{}/v1/chat/completions", gateway.url()))
        .bearer_auth(crate::CLIENT_KEY)
        .json(&serde_json::json!({"model": "mock-1", "max_tokens": 64,
                                  "messages": [{"role": "user", "content": "Hello there"}]}))
        .send()
        .await
        .expect("chat request");
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    (status, body["usage"]["total_tokens"].as_u64().unwrap_or(0))
}

/// `cliproxy-server audit verify FILE`: success, and what it printed.
pub fn audit_verify(file: &Path) -> (bool, String) {
    let output = std::process::Command::new(server_binary())
        .args(["audit", "verify"])
        .arg(file)
        .output()
        .expect("run audit verify");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// A file made immutable with `chattr +i` (even root cannot write it, through a descriptor
/// opened before either), made mutable again on drop so that the temporary directory can go.
pub struct Immutable(PathBuf);

impl Immutable {
    /// `chattr +i path`.
    pub fn set(path: &Path) -> Self {
        chattr("+i", path);
        Self(path.to_owned())
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        chattr("-i", &self.0);
    }
}

fn chattr(flag: &str, path: &Path) {
    let status =
        std::process::Command::new("chattr").arg(flag).arg(path).status().expect("run chattr");
    assert!(status.success(), "chattr {flag} {} failed", path.display());
}
