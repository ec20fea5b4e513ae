//! Issue 18, item 13: a client cannot write a line of its own into the text-format log.
//! Before the fix, `logging.format: text` wrote a model name as it came, so a `\n` in it
//! ended the access log line and the rest read as a second, forged line. Every value is now
//! written with its control characters escaped (`\n`, `\r`, `\t`, the other C0 and C1
//! controls, DEL, U+2028 and U+2029), and quoted when it holds a separator.
//!
//! The harness reads JSON logs, so this test starts the real binary itself and reads its text
//! log line by line.

use std::sync::{Arc, Mutex};

use cliproxy_e2e::{CLIENT_KEY, Harness, WAIT, client, server_binary};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::Notify;

/// What a client writes after its `\n` to forge a whole access log line, as the text format
/// wrote one: an unauthenticated caller that was answered 200.
const FORGED: &str =
    "2026-12-07T10:00:00.000000Z INFO request, request_id: FORGED, status: 200, client: admin";

/// The gateway's text log, as it arrives.
#[derive(Clone, Default)]
struct Log {
    lines: Arc<Mutex<Vec<String>>>,
    more: Arc<Notify>,
}

impl Log {
    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits until a line contains `needle` and returns it; fails with the log after [`WAIT`].
    async fn wait_for(&self, needle: &str) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let more = self.more.notified();
            if let Some(line) = self.lines().into_iter().find(|l| l.contains(needle)) {
                return line;
            }
            if tokio::time::timeout_at(deadline, more).await.is_err() {
                panic!("no log line contains {needle:?}; log:\n{}", self.lines().join("\n"));
            }
        }
    }
}

#[tokio::test]
async fn a_control_character_in_a_logged_value_cannot_forge_a_text_log_line() {
    let harness = Harness::new();
    harness.write_config(&format!(
        "server: {{host: 127.0.0.1, port: 0, shutdown_timeout: 10s}}\n\
         auth:\n  api_keys: [{{name: e2e, key: \"{CLIENT_KEY}\"}}]\n  dir: {dir:?}\n\
         logging: {{level: info, format: text}}\n\
         providers:\n  demo: {{type: mock, models: [\"mock-*\"]}}\n",
        dir = harness.auth_dir().display().to_string(),
    ));
    let mut child = tokio::process::Command::new(server_binary())
        .arg("--config")
        .arg(harness.config_path())
        .arg("serve")
        .env("CLIPROXY_SANDBOX__REQUIRE_NON_ROOT", "false")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let log = Log::default();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let collector = log.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = stderr.next_line().await {
            collector.lines.lock().unwrap().push(line);
            collector.more.notify_waiters();
        }
    });
    let listening = log.wait_for("INFO listening").await;
    let addr = listening
        .split("addr: ")
        .nth(1)
        .and_then(|rest| rest.split([',', ' ']).next())
        .unwrap_or_else(|| panic!("no address in {listening:?}"));
    let url = format!("http://{addr}/v1/chat/completions");

    // Served (the mock takes `mock-*`): the model is on the access line. Not served: the
    // model is on it twice, as `model` and inside `error`. Each name carries every kind of
    // line break a log reader might split on.
    let cases = [
        (format!("mock-1\n{FORGED}"), 200),
        (format!("gpt-x\r\n{FORGED}\u{2028}\u{85}\t\u{7f}"), 404),
    ];
    for (sent, (model, status)) in (1..).zip(cases) {
        let response = client()
            .post(&url)
            .bearer_auth(CLIENT_KEY)
            .json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{}", log.lines().join("\n"));
        let request_id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
        let _ = response.bytes().await;
        let line = log.wait_for(&format!("request_id: {request_id}")).await;
        let lines = log.lines();
        let all = lines.join("\n");
        // One line for the request, and the forged text is inside it, escaped.
        assert_eq!(lines.iter().filter(|l| l.contains(&request_id)).count(), 1, "{all}");
        assert!(
            line.contains(&format!(r"\n{FORGED}")),
            "the forged text is not escaped in: {line}"
        );
        // Nothing outside the access lines holds the forged text: each line that does is one
        // of the requests sent so far, escaped; none is of the client's making.
        let forged: Vec<&String> =
            lines.iter().filter(|l| l.contains("request_id: FORGED")).collect();
        assert_eq!(forged.len(), sent, "a forged line was written:\n{all}");
        assert!(
            forged
                .iter()
                .all(|l| l.contains(r"\n2026-12-07T10:00:00") && l.contains("request_id: req_")),
            "a forged line was written:\n{all}"
        );
        assert!(!lines.iter().any(|l| l.starts_with(FORGED)), "a forged line was written:\n{all}");
        if status == 404 {
            // Every control character and Unicode line break is written as an escape, once
            // for `model` and once inside `error`.
            for escape in [r"\r\n", r"\u2028", r"\u0085", r"\t", r"\u007f"] {
                assert_eq!(line.matches(escape).count(), 2, "{escape} in: {line}");
            }
            assert!(
                !line.contains(['\r', '\u{2028}', '\u{85}', '\t', '\u{7f}']),
                "a raw control character in: {line:?}"
            );
        }
    }
    child.start_kill().unwrap();
    let _ = tokio::time::timeout(WAIT, child.wait()).await;
}
