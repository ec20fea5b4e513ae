//! One writer at a time on `auth.dir` (issue 18, item 16): while `serve` runs, the vault
//! commands that write (`vault add`, `vault migrate`, `vault rotate-key`) and a second `serve`
//! are refused at once with an error naming the directory, `auth.dir` and what to do; nothing
//! on disk changes and the running gateway keeps serving (its `/auths` stays 200). `vault
//! list` and `check` keep working beside it. After the gateway is killed with SIGKILL the
//! kernel has released its lock and the same commands work.

use std::path::Path;
use std::process::{Output, Stdio};

use cliproxy_e2e::canned::*;
use cliproxy_e2e::*;
use reqwest::Method;
use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::assert_no_secrets;

const KEY_A: &str = "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=";
const KEY_B: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const MGMT_KEY: &str = "cpm-e2e-lock-management-key-4e1f7a";
const TOKEN_1: &str = "sk-lock-token-one-0f3a9c51";
const TOKEN_2: &str = "sk-lock-token-two-1e4b8d62";
const TOKEN_NEW: &str = "sk-lock-token-new-2d5c7e73";

/// A config for `harness` with the vault encrypted under `key` (with `previous` keys), the
/// management API on, and one OpenAI-type provider at `upstream`.
fn config_yaml(harness: &Harness, key: &str, previous: &[&str], upstream: &str) -> String {
    let previous: Vec<String> = previous.iter().map(|k| format!("\"{k}\"")).collect();
    format!(
        "server:\n  host: 127.0.0.1\n  port: 0\n\
         auth:\n  api_keys:\n    - {{name: e2e, key: \"{CLIENT_KEY}\"}}\n  dir: {dir:?}\n\
         \x20 encryption: {{enabled: true, key: \"{key}\", previous_keys: [{previous}]}}\n\
         logging: {{level: debug, format: json}}\n\
         management: {{secret_key: \"{MGMT_KEY}\"}}\n\
         providers:\n  oa: {{type: openai, base_url: \"{upstream}\", models: [\"gpt-*\"]}}\n",
        dir = harness.auth_dir().display().to_string(),
        previous = previous.join(", "),
    )
}

/// Runs `cliproxy-server --config CONFIG ARGS` to completion with `stdin` on its standard input.
async fn cli(config: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = tokio::process::Command::new(server_binary())
        .arg("--config")
        .arg(config)
        .args(args)
        .env("CLIPROXY_SANDBOX__REQUIRE_NON_ROOT", "false")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start cliproxy-server");
    let mut input = child.stdin.take().expect("stdin");
    // A command refused before it reads its standard input closes it: a broken pipe is fine.
    let _ = input.write_all(stdin.as_bytes()).await;
    drop(input);
    tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("cliproxy-server did not exit")
        .expect("cliproxy-server output")
}

/// Every file of `auth.dir` with its bytes, sorted by name.
fn auth_files(harness: &Harness) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(harness.auth_dir())
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            (entry.file_name().to_string_lossy().into_owned(), std::fs::read(entry.path()).unwrap())
        })
        .collect();
    files.sort();
    files
}

/// The ids `GET /v0/management/auths` lists, after asserting it answers 200.
async fn listed(gateway: &Gateway) -> Vec<String> {
    let (status, body) = manage_with(gateway, MGMT_KEY, Method::GET, "/auths", None).await;
    assert_eq!(status, 200, "{body}\n{}", gateway.logs());
    body["auths"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"))
        .iter()
        .map(|auth| auth["id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn chat(gateway: &Gateway) -> u16 {
    client()
        .post(format!("{}/v1/chat/completions", gateway.url()))
        .bearer_auth(CLIENT_KEY)
        .json(&json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// The refusal a writer gets while another process holds `auth.dir`: exit 1, and the message
/// names the directory, the config key and both ways out.
fn assert_refused(what: &str, output: &Output, harness: &Harness) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{what} was not refused:\n{stderr}");
    let dir = harness.auth_dir().display().to_string();
    for needle in [dir.as_str(), "auth.dir is in use", "Stop the gateway", "/v0/management/auths"] {
        assert!(stderr.contains(needle), "{what}: {needle:?} missing from:\n{stderr}");
    }
    assert_no_secrets(&stderr, &[TOKEN_1, TOKEN_2, TOKEN_NEW, KEY_A, KEY_B, MGMT_KEY]);
}

#[tokio::test]
async fn vault_writers_are_refused_while_the_gateway_runs_and_work_after_it_is_killed() {
    let mock = MockUpstream::start(|_| Reply::ok(openai_chat("gpt-4o", "ok"))).await;
    let harness = Harness::new();
    harness.write_config(&config_yaml(&harness, KEY_A, &[], &mock.url()));
    harness.vault_add("oa", "oa-1", TOKEN_1, None);
    harness.vault_add("oa", "oa-2", TOKEN_2, None);
    // The rotation's config: the new key current, the old one previous. The gateway keeps
    // running on the first.
    let rotation = harness.config_path().with_file_name("rotation.yaml");
    std::fs::write(&rotation, config_yaml(&harness, KEY_B, &[KEY_A], &mock.url())).unwrap();
    let config = harness.config_path();

    let mut gateway = harness.start().await;
    assert_eq!(listed(&gateway).await, ["oa-1", "oa-2"]);
    let before = auth_files(&harness);

    let add = ["vault", "add", "--provider", "oa", "--id", "oa-new"];
    assert_refused("vault add", &cli(&config, &add, &format!("{TOKEN_NEW}\n")).await, &harness);
    assert_refused("vault migrate", &cli(&config, &["vault", "migrate"], "").await, &harness);
    assert_refused(
        "vault rotate-key",
        &cli(&rotation, &["vault", "rotate-key"], "").await,
        &harness,
    );
    assert_refused("a second serve", &cli(&config, &["serve"], "").await, &harness);
    assert_eq!(auth_files(&harness), before, "a refused command changed auth.dir");

    // Readers are not refused: `vault list` and `check` work beside the gateway.
    let list = cli(&config, &["vault", "list"], "").await;
    let stdout = String::from_utf8_lossy(&list.stdout);
    assert!(list.status.success(), "{stdout}{}", String::from_utf8_lossy(&list.stderr));
    assert!(stdout.contains("oa-1") && stdout.contains("oa-2"), "{stdout}");
    assert!(!stdout.contains(".lock"), "{stdout}");
    let check = cli(&config, &["check"], "").await;
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert!(stdout.contains("2 credential(s) decrypt"), "{stdout}");
    assert!(!stdout.contains("in use"), "{stdout}");

    // The gateway was not disturbed: it lists and serves both credentials.
    assert_eq!(listed(&gateway).await, ["oa-1", "oa-2"]);
    for _ in 0..2 {
        assert_eq!(chat(&gateway).await, 200, "{}", gateway.logs());
    }

    // SIGKILL: no shutdown code runs, the kernel releases the lock with the descriptor.
    gateway.kill().await;
    let added = cli(&config, &add, &format!("{TOKEN_NEW}\n")).await;
    assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));
    let rotated = cli(&rotation, &["vault", "rotate-key"], "").await;
    let stdout = String::from_utf8_lossy(&rotated.stdout);
    assert!(rotated.status.success(), "{stdout}{}", String::from_utf8_lossy(&rotated.stderr));
    assert!(stdout.starts_with("3 credential(s) re-encrypted"), "{stdout}");

    // The rotated vault serves under the new key alone.
    std::fs::write(&config, config_yaml(&harness, KEY_B, &[], &mock.url())).unwrap();
    let gateway = harness.start().await;
    assert_eq!(listed(&gateway).await, ["oa-1", "oa-2", "oa-new"]);
    assert_no_secrets(&gateway.logs(), &[TOKEN_1, TOKEN_2, TOKEN_NEW, KEY_A, KEY_B]);
}
