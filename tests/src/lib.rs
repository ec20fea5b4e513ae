//! The end-to-end harness: a programmable mock upstream (hyper on `127.0.0.1:0`) and the real
//! `cliproxy-server` binary started with a temporary config.
//!
//! The binary is the one `cargo test --workspace` builds next to this test
//! (`target/<profile>/cliproxy-server`); `CLIPROXY_SERVER_BIN` overrides the path.

#![allow(
    clippy::expect_used,
    clippy::panic,
    reason = "a test harness fails loudly, with the reason, and that fails the test"
)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;

pub mod faulty;
pub mod redis_server;
pub mod sweep;

/// How long any single wait in a test may take before the test fails. Waits end on events
/// (a log line, a byte on a socket); this bound only turns a hang into a failure.
pub const WAIT: Duration = Duration::from_secs(20);

/// A client key used by the tests; long enough for the gateway's minimum.
pub const CLIENT_KEY: &str = "cpk-e2e-client-key-3b9f2d7c51a04e88";

/// One request the mock upstream received.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// `POST`, ...
    pub method: String,
    /// Path and query as received.
    pub path_and_query: String,
    /// Every header.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

impl Recorded {
    /// A header as text, or `""`.
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    /// Whether `needle` appears in any header value, the path or the body.
    pub fn contains(&self, needle: &str) -> bool {
        self.path_and_query.contains(needle)
            || self.headers.values().any(|v| String::from_utf8_lossy(v.as_bytes()).contains(needle))
            || String::from_utf8_lossy(&self.body).contains(needle)
    }
}

/// What the mock upstream answers.
pub enum Reply {
    /// A complete body at once.
    Json {
        /// Status code.
        status: u16,
        /// Extra headers.
        headers: Vec<(&'static str, String)>,
        /// The body.
        body: String,
    },
    /// A `text/event-stream` body, one chunk per event. When `gate` is set, the stream stops
    /// after the first `hold_after` events until the gate is opened.
    Sse {
        /// Complete events, each ending in a blank line.
        events: Vec<String>,
        /// How many events go out before the gate.
        hold_after: usize,
        /// Opened by the test with [`Notify::notify_one`].
        gate: Option<Arc<Notify>>,
    },
    /// Never answers.
    Stall,
}

impl Reply {
    /// A 200 JSON reply.
    pub fn ok(body: Value) -> Self {
        Self::Json { status: 200, headers: Vec::new(), body: body.to_string() }
    }

    /// An SSE reply sent without pause.
    pub fn sse(events: Vec<String>) -> Self {
        Self::Sse { events, hold_after: 0, gate: None }
    }
}

type Handler = Arc<dyn Fn(&Recorded) -> Reply + Send + Sync>;

/// A mock provider API on `127.0.0.1:0` that records what it receives.
pub struct MockUpstream {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    task: JoinHandle<()>,
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A streaming body fed from a channel.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|chunk| chunk.map(|bytes| Ok(Frame::data(bytes))))
    }
}

type MockBody = http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>;

fn respond(reply: Reply) -> Option<Response<MockBody>> {
    match reply {
        Reply::Json { status, headers, body } => {
            let mut builder = Response::builder()
                .status(StatusCode::from_u16(status).ok()?)
                .header("content-type", "application/json");
            for (name, value) in headers {
                builder = builder.header(name, value);
            }
            builder.body(http_body_util::Full::new(Bytes::from(body)).boxed_unsync()).ok()
        }
        Reply::Sse { events, hold_after, gate } => {
            let (tx, rx) = mpsc::channel(16);
            tokio::spawn(async move {
                for (index, event) in events.into_iter().enumerate() {
                    if index == hold_after
                        && let Some(gate) = &gate
                    {
                        gate.notified().await;
                    }
                    if tx.send(Bytes::from(event)).await.is_err() {
                        return;
                    }
                }
            });
            Response::builder()
                .status(200)
                .header("content-type", "text/event-stream")
                .header("cache-control", "no-cache")
                .body(ChannelBody(rx).boxed_unsync())
                .ok()
        }
        Reply::Stall => None,
    }
}

impl MockUpstream {
    /// Starts a mock answering every request with `handler`'s reply.
    pub async fn start(handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> Self {
        let handler: Handler = Arc::new(handler);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the mock upstream");
        let addr = listener.local_addr().expect("mock upstream address");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&requests);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let handler = Arc::clone(&handler);
                let recorded = Arc::clone(&recorded);
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| {
                        let handler = Arc::clone(&handler);
                        let recorded = Arc::clone(&recorded);
                        async move {
                            let (parts, body) = request.into_parts();
                            let body =
                                body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            let request = Recorded {
                                method: parts.method.to_string(),
                                path_and_query: parts
                                    .uri
                                    .path_and_query()
                                    .map(ToString::to_string)
                                    .unwrap_or_default(),
                                headers: parts.headers,
                                body,
                            };
                            let reply = handler(&request);
                            recorded.lock().expect("mock log").push(request);
                            match respond(reply) {
                                Some(response) => Ok::<_, Infallible>(response),
                                None => std::future::pending().await,
                            }
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, requests, task }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Everything received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().expect("mock log").clone()
    }
}

/// An address on which nothing listens: connections to it are refused, and no other socket
/// can take its port, for the life of the test process. A port that was bound and released
/// could be taken by the next test's `127.0.0.1:0` (a mock upstream, a gateway) and answer.
/// The socket is bound but never listens (connects get `ECONNREFUSED`), and is bound without
/// `SO_REUSEADDR`, so that no other socket can bind the port, with or without it.
pub async fn refused_url() -> String {
    static REFUSING: std::sync::OnceLock<(tokio::net::TcpSocket, SocketAddr)> =
        std::sync::OnceLock::new();
    let (_, addr) = REFUSING.get_or_init(|| {
        let socket = tokio::net::TcpSocket::new_v4().expect("a TCP socket");
        socket.bind(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind 127.0.0.1:0");
        let addr = socket.local_addr().expect("address");
        (socket, addr)
    });
    format!("http://{addr}")
}

#[cfg(test)]
mod refused_url_tests {
    use super::*;

    #[tokio::test]
    async fn the_refused_address_refuses_and_its_port_stays_taken() {
        let url = refused_url().await;
        let addr: SocketAddr = url.strip_prefix("http://").expect("a URL").parse().expect("addr");
        let connect = tokio::net::TcpStream::connect(addr).await;
        let error = connect.expect_err("a connection to the refused address was accepted");
        assert_eq!(error.kind(), std::io::ErrorKind::ConnectionRefused, "{error}");
        // Neither a plain bind nor tokio's (which sets SO_REUSEADDR) can take the port.
        let plain = std::net::TcpListener::bind(addr);
        assert_eq!(plain.map(|_| ()).map_err(|e| e.kind()), Err(std::io::ErrorKind::AddrInUse));
        let reusing = TcpListener::bind(addr).await;
        assert_eq!(reusing.map(|_| ()).map_err(|e| e.kind()), Err(std::io::ErrorKind::AddrInUse));
        // Every caller gets the same held address.
        assert_eq!(refused_url().await, url);
    }
}

/// The path of the `cliproxy-server` binary under test.
pub fn server_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("CLIPROXY_SERVER_BIN") {
        return PathBuf::from(path);
    }
    // target/<profile>/deps/e2e-<hash> -> target/<profile>/cliproxy-server
    let exe = std::env::current_exe().expect("test executable path");
    let path = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("cliproxy-server"))
        .expect("target directory");
    assert!(
        path.exists(),
        "{} does not exist: run the suite with `cargo test --workspace` (which builds the server) or set CLIPROXY_SERVER_BIN",
        path.display()
    );
    path
}

/// Starts `cliproxy-server demo` with `args` and returns it with its banner (stdout up to
/// and including the `Press Ctrl-C` line, which the demo prints once it serves).
pub async fn demo(args: &[&str]) -> (Child, String) {
    let mut child = Command::new(server_binary())
        .arg("demo")
        .args(args)
        .env("CLIPROXY_SANDBOX__REQUIRE_NON_ROOT", "false")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start cliproxy-server demo");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut banner = String::new();
    tokio::time::timeout(WAIT, async {
        while let Some(line) = lines.next_line().await.expect("read the demo's stdout") {
            banner.push_str(&line);
            banner.push('\n');
            if line.contains("Press Ctrl-C") {
                break;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the demo printed no `Press Ctrl-C` line; so far:\n{banner}"));
    (child, banner)
}

/// A temporary directory with a config file and a vault, from which gateways are started.
pub struct Harness {
    dir: tempfile::TempDir,
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

impl Harness {
    /// A fresh directory.
    pub fn new() -> Self {
        Self { dir: tempfile::tempdir().expect("temporary directory") }
    }

    /// The vault directory used by [`Harness::config`].
    pub fn auth_dir(&self) -> PathBuf {
        self.dir.path().join("auths")
    }

    /// The config file path.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.yaml")
    }

    /// Writes a config: JSON logs at debug level, the test client key, the vault in this
    /// directory, then `rest` (the `providers:` section and anything else, as YAML).
    pub fn config(&self, server_limits: &str, rest: &str) -> &Self {
        self.config_with_auth(server_limits, "", rest)
    }

    /// [`Harness::config`] with more `auth:` keys (`auth_extra`, YAML lines indented by two).
    pub fn config_with_auth(&self, server_limits: &str, auth_extra: &str, rest: &str) -> &Self {
        let yaml = format!(
            "server:\n  host: 127.0.0.1\n  port: 0\n  shutdown_timeout: 10s\n  limits: {{{server_limits}}}\n\
             auth:\n  api_keys:\n    - {{name: e2e, key: \"{CLIENT_KEY}\"}}\n  dir: {dir:?}\n{auth_extra}\
             logging: {{level: debug, format: json}}\n{rest}",
            dir = self.auth_dir().display().to_string(),
        );
        self.write_config(&yaml)
    }

    /// Writes `yaml` as the config file verbatim.
    pub fn write_config(&self, yaml: &str) -> &Self {
        std::fs::write(self.config_path(), yaml).expect("write the config");
        self
    }

    /// `cliproxy-server vault add` with the token on standard input.
    pub fn vault_add(&self, provider: &str, id: &str, token: &str, base_url: Option<&str>) {
        use std::io::Write;
        sweep::plant(token);
        let mut command = std::process::Command::new(server_binary());
        command.arg("--config").arg(self.config_path()).args([
            "vault",
            "add",
            "--provider",
            provider,
            "--id",
            id,
        ]);
        if let Some(url) = base_url {
            command.args(["--base-url", url]);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start vault add");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(format!("{token}\n").as_bytes())
            .expect("write the token");
        let output = child.wait_with_output().expect("vault add");
        assert!(
            output.status.success(),
            "vault add failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Starts the binary with `--config FILE` and `args`, output piped, killed on drop.
    fn spawn(&self, args: &[&str]) -> Child {
        self.spawn_via(&[], args)
    }

    /// [`Harness::spawn`] through `wrapper` (a program and its arguments, such as
    /// `taskset -c 0`), when not empty.
    fn spawn_via(&self, wrapper: &[&str], args: &[&str]) -> Child {
        let mut command = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut command = Command::new(program);
                command.args(rest).arg(server_binary());
                command
            }
            None => Command::new(server_binary()),
        };
        command
            .arg("--config")
            .arg(self.config_path())
            .args(args)
            // The suite runs under the full sandbox (seccomp, landlock, no_new_privs); CI
            // runs as root, which the sandbox refuses by default.
            .env("CLIPROXY_SANDBOX__REQUIRE_NON_ROOT", "false")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start cliproxy-server")
    }

    /// Runs the binary with `args` (after `--config FILE`) to completion.
    pub async fn run(&self, args: &[&str]) -> std::process::Output {
        let child = self.spawn(args);
        tokio::time::timeout(WAIT, child.wait_with_output())
            .await
            .expect("cliproxy-server did not exit")
            .expect("cliproxy-server output")
    }

    /// Starts `cliproxy-server serve` and waits for its `listening` log line.
    pub async fn start(&self) -> Gateway {
        self.start_via(&[]).await
    }

    /// [`Harness::start`] through `wrapper`, e.g. `["taskset", "-c", "0"]` to run the gateway
    /// on one CPU.
    pub async fn start_via(&self, wrapper: &[&str]) -> Gateway {
        let child = self.spawn_via(wrapper, &["serve"]);
        self.attach(child, "").await
    }

    /// Follows a started `serve`: collects its output and waits for its `listening` line;
    /// `as_who` completes "the gateway did not start…" when it fails.
    async fn attach(&self, mut child: Child, as_who: &str) -> Gateway {
        let logs = Arc::new(Mutex::new(String::new()));
        let (ready_tx, ready_rx) = oneshot::channel();
        let log_lines = Arc::new(Notify::new());
        let collectors = vec![
            collect(
                child.stderr.take().expect("stderr"),
                Arc::clone(&logs),
                Some(ready_tx),
                Arc::clone(&log_lines),
            ),
            collect(
                child.stdout.take().expect("stdout"),
                Arc::clone(&logs),
                None,
                Arc::clone(&log_lines),
            ),
        ];
        let Ok(Ok(addr)) = tokio::time::timeout(WAIT, ready_rx).await else {
            let status = child.try_wait().ok().flatten();
            panic!(
                "the gateway did not start{as_who} (exit status {status:?}); its output:\n{}",
                logs.lock().expect("logs")
            );
        };
        sweep::register(addr, self.dir.path(), &self.config_path());
        Gateway { child, addr, logs, log_lines, collectors }
    }
}

/// Copies a child's output into `logs`, line by line; reports the `listening` address. The
/// task ends when the stream does (the child exited and its last line was read).
pub(crate) fn collect(
    stream: impl AsyncRead + Unpin + Send + 'static,
    logs: Arc<Mutex<String>>,
    mut ready: Option<oneshot::Sender<SocketAddr>>,
    log_lines: Arc<Notify>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Ok(entry) = serde_json::from_str::<Value>(&line)
                && entry["msg"] == "listening"
                && let Some(addr) = entry["addr"].as_str().and_then(|a| a.parse().ok())
                && let Some(ready) = ready.take()
            {
                let _ = ready.send(addr);
            }
            {
                let mut logs = logs.lock().expect("logs");
                logs.push_str(&line);
                logs.push('\n');
            }
            log_lines.notify_waiters();
        }
    })
}

/// A running gateway process.
pub struct Gateway {
    child: Child,
    addr: SocketAddr,
    logs: Arc<Mutex<String>>,
    log_lines: Arc<Notify>,
    /// The tasks copying its output into `logs`: [`Gateway::wait`] waits for them too.
    collectors: Vec<tokio::task::JoinHandle<()>>,
}

impl Gateway {
    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Everything the process wrote so far (stderr and stdout).
    pub fn logs(&self) -> String {
        self.logs.lock().expect("logs").clone()
    }

    /// The parsed JSON log lines with `"msg": msg`.
    pub fn log_entries(&self, msg: &str) -> Vec<Value> {
        self.logs()
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|entry| entry["msg"] == msg)
            .collect()
    }

    /// Waits until a log line satisfies `predicate`; panics with the logs after [`WAIT`].
    pub async fn wait_for_log(&self, predicate: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let notified = self.log_lines.notified();
            let found = self
                .logs()
                .lines()
                .filter_map(|line| serde_json::from_str::<Value>(line).ok())
                .find(|entry| predicate(entry));
            if let Some(entry) = found {
                return entry;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("the expected log line did not appear; logs:\n{}", self.logs());
            }
        }
    }

    /// The gateway's process id (to send it signals).
    pub fn pid(&self) -> u32 {
        self.child.id().expect("the gateway is running")
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let pid = self.child.id().expect("the gateway is running");
        let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid"));
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("send SIGTERM");
    }

    /// Waits for the process to exit.
    pub async fn wait(&mut self) -> ExitStatus {
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("the gateway did not exit")
            .expect("wait for the gateway");
        // The exit comes before the last lines are read from the pipes: a test that reads the
        // logs once the process is gone must see all of them.
        for collector in std::mem::take(&mut self.collectors) {
            tokio::time::timeout(WAIT, collector)
                .await
                .expect("the gateway's output did not end after it exited")
                .expect("the output collector");
        }
        status
    }
}

/// A plain HTTP/1.1 client that ignores proxy settings.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().expect("HTTP client")
}

/// A management API call from loopback with `key`: the status and the body (JSON, or the
/// text as a JSON string).
pub async fn manage_with(
    gateway: &Gateway,
    key: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = client()
        .request(method, format!("{}/v0/management{path}", gateway.url()))
        .header("x-management-key", key);
    if let Some(body) = body {
        sweep::plant_from_json(&body);
        request = request.json(&body);
    }
    let response = request.send().await.expect("management call");
    let status = response.status().as_u16();
    let text = response.text().await.expect("management answer");
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// Reads a streamed response until its text contains `needle`; returns everything read.
pub async fn read_until(response: &mut reqwest::Response, seen: &mut String, needle: &str) {
    let read = async {
        while !seen.contains(needle) {
            match response.chunk().await.expect("read the stream") {
                Some(chunk) => seen.push_str(&String::from_utf8_lossy(&chunk)),
                None => panic!("the stream ended before {needle:?}; got:\n{seen}"),
            }
        }
    };
    if tokio::time::timeout(WAIT, read).await.is_err() {
        panic!("{needle:?} did not arrive; got so far:\n{seen}");
    }
}

/// Reads a streamed response to its end.
pub async fn read_to_end(response: &mut reqwest::Response, seen: &mut String) {
    let read = async {
        while let Some(chunk) = response.chunk().await.expect("read the stream") {
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    };
    tokio::time::timeout(WAIT, read).await.expect("the stream did not end");
}

pub mod disk;

/// Canned provider replies with real-looking usage numbers.
pub mod canned {
    use super::*;

    /// Formats one SSE event.
    pub fn event(name: Option<&str>, data: &Value) -> String {
        match name {
            Some(name) => format!("event: {name}\ndata: {data}\n\n"),
            None => format!("data: {data}\n\n"),
        }
    }

    /// An OpenAI chat completion.
    pub fn openai_chat(model: &str, text: &str) -> Value {
        json!({
            "id": "chatcmpl-e2e", "object": "chat.completion", "created": 1_763_769_600, "model": model,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 17, "completion_tokens": 9, "total_tokens": 26}
        })
    }

    /// An OpenAI chat completion stream as the real API sends it when the request did not ask
    /// for usage: a chunk with the role, one chunk per word, a chunk with the finish reason,
    /// `[DONE]`. Such a stream reports no usage at all.
    pub fn openai_stream(model: &str, words: &[&str]) -> Vec<String> {
        openai_chunks(model, words, false)
    }

    /// The same stream for a request with `stream_options: {include_usage: true}`: every
    /// chunk carries `"usage": null` and a last chunk with no choices carries the usage, before
    /// `[DONE]`.
    pub fn openai_stream_with_usage(model: &str, words: &[&str]) -> Vec<String> {
        openai_chunks(model, words, true)
    }

    /// [`openai_stream`] or [`openai_stream_with_usage`], as the request's
    /// `stream_options.include_usage` asks: what a real upstream would answer to `request`.
    pub fn openai_stream_for(request: &Recorded, model: &str, words: &[&str]) -> Vec<String> {
        let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
        openai_chunks(
            model,
            words,
            body.pointer("/stream_options/include_usage") == Some(&json!(true)),
        )
    }

    fn openai_chunks(model: &str, words: &[&str], include_usage: bool) -> Vec<String> {
        let chunk = |delta: Value, finish: Value| {
            let mut chunk = json!({"id": "chatcmpl-e2e", "object": "chat.completion.chunk",
                "created": 1_763_769_600, "model": model,
                "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]});
            if include_usage {
                chunk["usage"] = Value::Null;
            }
            event(None, &chunk)
        };
        let mut events = vec![chunk(json!({"role": "assistant", "content": ""}), Value::Null)];
        events.extend(words.iter().map(|word| chunk(json!({"content": word}), Value::Null)));
        events.push(chunk(json!({}), json!("stop")));
        if include_usage {
            events.push(event(
                None,
                &json!({"id": "chatcmpl-e2e", "object": "chat.completion.chunk",
                "created": 1_763_769_600, "model": model, "choices": [],
                "usage": {"prompt_tokens": 17, "completion_tokens": 9, "total_tokens": 26}}),
            ));
        }
        events.push("data: [DONE]\n\n".to_owned());
        events
    }

    /// An OpenAI legacy completion (`POST /v1/completions`, not streamed): one choice holding
    /// `text` and its finish reason, usage 11 in / 6 out.
    pub fn openai_completion(model: &str, text: &str) -> Value {
        json!({
            "id": "cmpl-e2e", "object": "text_completion", "created": 1_763_769_600, "model": model,
            "choices": [{"text": text, "index": 0, "logprobs": null, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 6, "total_tokens": 17}
        })
    }

    /// An OpenAI legacy completion stream as the real API sends it: one `text_completion`
    /// chunk per word, a chunk with empty text and the finish reason, then (only when the
    /// request's `stream_options.include_usage` asks, every chunk then carrying
    /// `"usage": null`) a chunk with no choices carrying the usage, and `[DONE]`. Unlike chat
    /// chunks, legacy chunks have no role chunk and no delta: each choice holds its `text`.
    pub fn openai_completion_stream_for(
        request: &Recorded,
        model: &str,
        words: &[&str],
    ) -> Vec<String> {
        let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
        let include_usage = body.pointer("/stream_options/include_usage") == Some(&json!(true));
        let chunk = |choices: Value, usage: Value| {
            let mut chunk = json!({"id": "cmpl-e2e", "object": "text_completion",
                "created": 1_763_769_600, "model": model, "choices": choices});
            if include_usage {
                chunk["usage"] = usage;
            }
            event(None, &chunk)
        };
        let choice = |text: &str, finish: Value| json!([{"text": text, "index": 0, "logprobs": null, "finish_reason": finish}]);
        let mut events: Vec<String> =
            words.iter().map(|word| chunk(choice(word, Value::Null), Value::Null)).collect();
        events.push(chunk(choice("", json!("stop")), Value::Null));
        if include_usage {
            events.push(chunk(
                json!([]),
                json!({"prompt_tokens": 11, "completion_tokens": 6, "total_tokens": 17}),
            ));
        }
        events.push("data: [DONE]\n\n".to_owned());
        events
    }

    /// An OpenAI model (`GET /v1/models/{id}`).
    pub fn openai_model(id: &str) -> Value {
        json!({"id": id, "object": "model", "created": 1_721_172_741, "owned_by": "system"})
    }

    /// An Anthropic message.
    pub fn anthropic_message(model: &str, text: &str) -> Value {
        json!({
            "id": "msg_e2e", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": 21, "output_tokens": 11}
        })
    }

    /// An Anthropic message stream, in the real API's order: `message_start`,
    /// `content_block_start`, `ping`, one `content_block_delta` per word, `content_block_stop`,
    /// `message_delta` (stop reason and output tokens), `message_stop`.
    pub fn anthropic_stream(model: &str, words: &[&str]) -> Vec<String> {
        let mut events = vec![
            event(
                Some("message_start"),
                &json!({"type": "message_start", "message": {"id": "msg_e2e",
                "type": "message", "role": "assistant", "model": model, "content": [],
                "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 21, "output_tokens": 1}}}),
            ),
            event(
                Some("content_block_start"),
                &json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "text", "text": ""}}),
            ),
            // The real API sends a ping early in every stream; clients must skip it.
            event(Some("ping"), &json!({"type": "ping"})),
        ];
        for word in words {
            events.push(event(
                Some("content_block_delta"),
                &json!({"type": "content_block_delta",
                "index": 0, "delta": {"type": "text_delta", "text": word}}),
            ));
        }
        events.push(event(
            Some("content_block_stop"),
            &json!({"type": "content_block_stop", "index": 0}),
        ));
        events.push(event(Some("message_delta"), &json!({"type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": 11}})));
        events.push(event(Some("message_stop"), &json!({"type": "message_stop"})));
        events
    }

    /// A Gemini `generateContent` reply.
    pub fn gemini_generate(text: &str) -> Value {
        json!({
            "candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 13, "candidatesTokenCount": 7, "totalTokenCount": 20}
        })
    }

    /// A Gemini `streamGenerateContent?alt=sse` stream.
    pub fn gemini_stream(words: &[&str]) -> Vec<String> {
        let last = words.len().saturating_sub(1);
        words
            .iter()
            .enumerate()
            .map(|(index, word)| {
                let mut chunk = json!({"candidates": [{"content": {"role": "model", "parts": [{"text": word}]}, "index": 0}]});
                if index == last {
                    chunk["candidates"][0]["finishReason"] = json!("STOP");
                    chunk["usageMetadata"] = json!({"promptTokenCount": 13, "candidatesTokenCount": 7, "totalTokenCount": 20});
                }
                event(None, &chunk)
            })
            .collect()
    }

    /// An Anthropic model (`GET /v1/models/{id}`): its id, a display name and the RFC 3339
    /// date of its release.
    pub fn anthropic_model(id: &str) -> Value {
        json!({"type": "model", "id": id, "display_name": format!("Claude ({id})"),
               "created_at": "2025-05-22T00:00:00Z"})
    }

    /// A Gemini `countTokens` reply: the total and its split by modality (all text here).
    pub fn gemini_count_tokens(total_tokens: u64) -> Value {
        json!({"totalTokens": total_tokens,
               "promptTokensDetails": [{"modality": "TEXT", "tokenCount": total_tokens}]})
    }

    /// A Gemini `embedContent` reply: one embedding.
    pub fn gemini_embedding(values: &[f64]) -> Value {
        json!({"embedding": {"values": values}})
    }

    /// A Gemini `batchEmbedContents` reply: one embedding per request, in request order.
    pub fn gemini_batch_embeddings(vectors: &[Vec<f64>]) -> Value {
        let embeddings: Vec<Value> =
            vectors.iter().map(|values| json!({"values": values})).collect();
        json!({"embeddings": embeddings})
    }

    /// A Gemini model (`GET /v1beta/models/{model}`, or under `/v1/`): its resource name,
    /// limits, and the methods it supports.
    pub fn gemini_model(model: &str) -> Value {
        json!({
            "name": format!("models/{model}"), "version": "001",
            "displayName": format!("Gemini ({model})"),
            "description": "A model of the e2e fixtures.",
            "inputTokenLimit": 1_048_576, "outputTokenLimit": 8192,
            "supportedGenerationMethods": ["generateContent", "countTokens",
                "embedContent", "batchEmbedContents"],
            "temperature": 1.0, "topP": 0.95, "topK": 40, "maxTemperature": 2.0
        })
    }

    /// The usage block of the Responses API fixtures (`input_tokens`/`output_tokens`, with
    /// the detail objects the API always includes).
    fn responses_usage() -> Value {
        json!({"input_tokens": 19, "input_tokens_details": {"cached_tokens": 0},
               "output_tokens": 8, "output_tokens_details": {"reasoning_tokens": 0},
               "total_tokens": 27})
    }

    /// A Responses API `response` object with `status`, `output` and `usage` (null while
    /// the response is in progress, as the API sends it in `response.created`).
    fn responses_object(model: &str, status: &str, output: Value, usage: Value) -> Value {
        json!({
            "id": "resp_e2e", "object": "response", "created_at": 1_763_769_600,
            "status": status, "error": null, "incomplete_details": null,
            "instructions": null, "max_output_tokens": null, "model": model,
            "output": output, "parallel_tool_calls": true, "previous_response_id": null,
            "reasoning": {"effort": null, "summary": null}, "store": true,
            "temperature": 1.0, "text": {"format": {"type": "text"}}, "tool_choice": "auto",
            "tools": [], "top_p": 1.0, "truncation": "disabled", "usage": usage,
            "user": null, "metadata": {}
        })
    }

    /// The assistant message output item of a Responses API reply.
    fn responses_message(status: &str, content: Value) -> Value {
        json!({"id": "msg_e2e", "type": "message", "status": status, "role": "assistant",
               "content": content})
    }

    /// An `output_text` content part.
    fn responses_text_part(text: &str) -> Value {
        json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
    }

    /// An OpenAI Responses API reply (`POST /v1/responses`, not streamed): one completed
    /// assistant message holding `text`, usage 19 in / 8 out.
    pub fn openai_responses(model: &str, text: &str) -> Value {
        responses_object(
            model,
            "completed",
            json!([responses_message("completed", json!([responses_text_part(text)]))]),
            responses_usage(),
        )
    }

    /// An OpenAI Responses API stream, in the API's event order: `response.created`,
    /// `response.in_progress`, `response.output_item.added`, `response.content_part.added`,
    /// one `response.output_text.delta` per word, `response.output_text.done`,
    /// `response.content_part.done`, `response.output_item.done`, and `response.completed`
    /// carrying the usage. Each event is named (`event:`) and numbered (`sequence_number`
    /// from 0); the stream ends after `response.completed` (no `[DONE]`).
    pub fn openai_responses_stream(model: &str, words: &[&str]) -> Vec<String> {
        let text: String = words.concat();
        let mut payloads = vec![
            json!({"type": "response.created",
                   "response": responses_object(model, "in_progress", json!([]), Value::Null)}),
            json!({"type": "response.in_progress",
                   "response": responses_object(model, "in_progress", json!([]), Value::Null)}),
            json!({"type": "response.output_item.added", "output_index": 0,
                   "item": responses_message("in_progress", json!([]))}),
            json!({"type": "response.content_part.added", "item_id": "msg_e2e",
                   "output_index": 0, "content_index": 0, "part": responses_text_part("")}),
        ];
        for word in words {
            payloads.push(json!({"type": "response.output_text.delta", "item_id": "msg_e2e",
                "output_index": 0, "content_index": 0, "delta": word, "logprobs": []}));
        }
        let part = responses_text_part(&text);
        let item = responses_message("completed", json!([part]));
        payloads.extend([
            json!({"type": "response.output_text.done", "item_id": "msg_e2e",
                   "output_index": 0, "content_index": 0, "text": text, "logprobs": []}),
            json!({"type": "response.content_part.done", "item_id": "msg_e2e",
                   "output_index": 0, "content_index": 0, "part": part}),
            json!({"type": "response.output_item.done", "output_index": 0, "item": item}),
            json!({"type": "response.completed",
                   "response": responses_object(model, "completed", json!([item]), responses_usage())}),
        ]);
        payloads
            .into_iter()
            .enumerate()
            .map(|(sequence, mut payload)| {
                payload["sequence_number"] = json!(sequence);
                let name = payload["type"].as_str().unwrap_or_default().to_owned();
                event(Some(&name), &payload)
            })
            .collect()
    }

    /// An OpenAI embeddings reply (`POST /v1/embeddings`): one `embedding` object per vector,
    /// in input order, usage 8 prompt tokens (embeddings have no output tokens).
    pub fn openai_embeddings(model: &str, vectors: &[&[f64]]) -> Value {
        let data: Vec<Value> = vectors
            .iter()
            .enumerate()
            .map(|(index, vector)| json!({"object": "embedding", "index": index, "embedding": vector}))
            .collect();
        json!({"object": "list", "data": data, "model": model,
               "usage": {"prompt_tokens": 8, "total_tokens": 8}})
    }

    /// An Anthropic `POST /v1/messages/count_tokens` reply: only `input_tokens`, at the top
    /// level (a count, not a consumption: the call generates nothing and is not billed).
    pub fn anthropic_count_tokens(input_tokens: u64) -> Value {
        json!({"input_tokens": input_tokens})
    }
}

impl Gateway {
    /// Sends SIGKILL (no graceful shutdown: a crash) and waits for the process to exit.
    pub async fn kill(&mut self) -> ExitStatus {
        self.child.start_kill().expect("send SIGKILL");
        self.wait().await
    }
}

impl Harness {
    /// Starts `cliproxy-server serve` as the user `uid`:`gid` (the child drops to them before
    /// it runs: the caller must be root, or be that user) and waits for its `listening` line.
    /// Unlike [`Harness::start`], `sandbox.require_non_root` keeps its real default (nothing
    /// overrides it), so this is how the root check is seen to let a non-root user through.
    /// The harness's directory is handed to that user first, so that it can read its config
    /// and keep its vault and state there (it is also the child's working directory).
    pub async fn start_as_user(&self, uid: u32, gid: u32) -> Gateway {
        self.start_as_user_with_env(uid, gid, &[]).await
    }

    /// [`Harness::start_as_user`] with `env` (name, value) added to the child's environment,
    /// as a deployment passes its keys in (`CLIPROXY_MANAGEMENT__SECRET_KEY`, ...).
    pub async fn start_as_user_with_env(
        &self,
        uid: u32,
        gid: u32,
        env: &[(&str, &str)],
    ) -> Gateway {
        chown_tree(self.dir.path(), uid, gid);
        let child = Command::new(server_binary())
            .arg("--config")
            .arg(self.config_path())
            .arg("serve")
            .env_remove("CLIPROXY_SANDBOX__REQUIRE_NON_ROOT")
            .envs(env.iter().copied())
            .current_dir(self.dir.path())
            .uid(uid)
            .gid(gid)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start cliproxy-server as another user");
        self.attach(child, &format!(" as uid {uid}")).await
    }
}

/// `chown -R uid:gid path` (symbolic links are not followed).
fn chown_tree(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
    if path.symlink_metadata().is_ok_and(|m| m.is_dir()) {
        for entry in std::fs::read_dir(path).expect("read the directory") {
            chown_tree(&entry.expect("directory entry").path(), uid, gid);
        }
    }
}

/// Figures for `docs/security/test-report.md`. A test calls these as it runs; when the
/// environment variable [`report::DIR`] names a directory (as `cargo xtask test-report` sets
/// it), each call appends one JSON line to `<dir>/<category>.jsonl`; otherwise nothing is
/// written. A line is one `write` on a file opened for appending, so tests running in
/// parallel do not interleave.
pub mod report {
    use std::io::Write as _;

    use serde_json::{Value, json};

    /// The environment variable naming the report directory.
    pub const DIR: &str = "CLIPROXY_TEST_REPORT";

    /// `count` distinct cases (scenarios) of `category` checked by the test `test` (e.g. 84
    /// hostile inputs, each with its own expected answer).
    pub fn cases(category: &str, test: &str, count: usize) {
        append(category, &json!({"kind": "cases", "test": test, "count": count}));
    }

    /// `count` iterations of one repeated scenario checked by the test `test` (e.g. 200
    /// SIGKILL rounds of one crash scenario, 50,000 addresses sprayed into one limiter). The
    /// report counts these apart from [`cases`]: a loop is not a distinct case.
    pub fn iterations(category: &str, test: &str, count: usize) {
        append(category, &json!({"kind": "iterations", "test": test, "count": count}));
    }

    /// A count added up over every call with the same `name` (one call per gateway swept,
    /// say): the report shows the total.
    pub fn total(category: &str, name: &str, value: u64, unit: &str) {
        append(category, &json!({"kind": "total", "name": name, "value": value, "unit": unit}));
    }

    /// A measured figure, e.g. `figure("load", "RSS with 10,000 idle connections", 257.3, "MB")`.
    pub fn figure(category: &str, name: &str, value: impl Into<Value>, unit: &str) {
        append(
            category,
            &json!({"kind": "figure", "name": name, "value": value.into(), "unit": unit}),
        );
    }

    fn append(category: &str, entry: &Value) {
        let Some(dir) = std::env::var_os(DIR) else { return };
        assert!(
            !category.is_empty() && category.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'),
            "report category {category:?}: lower-case letters and dashes only"
        );
        let dir = std::path::PathBuf::from(dir);
        std::fs::create_dir_all(&dir).expect("create the report directory");
        let mut line = entry.to_string();
        line.push('\n');
        let path = dir.join(format!("{category}.jsonl"));
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        file.write_all(line.as_bytes()).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }
}
