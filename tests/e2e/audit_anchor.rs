//! Issue 18 item 10: a cut or deleted audit log is detected, through the real binary. The
//! head (seq, hash) is anchored in the state store as lines are synced; a file behind it at
//! start refuses to start (naming `logging.audit.on_gap` and what was found), goes on with a
//! `security_violation` line and a metric under `on_gap: continue`, and fails `check`; signed
//! checkpoints let `audit verify --pubkey` find a cut tail offline.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use cliproxy_e2e::*;
use serde_json::{Value, json};

/// The config: the mock provider, the audit log at `audit` with `extra` keys (defaults when
/// empty), metrics on a free port.
fn write_config(harness: &Harness, audit: &Path, extra: &str) {
    harness.config(
        "",
        &format!(
            "logging: {{level: debug, format: json, audit: {{enabled: true, file: {audit:?}{extra}}}}}\n\
             metrics: {{enabled: true, host: 127.0.0.1, port: 0}}\n\
             providers:\n  demo: {{type: mock, models: [\"mock-*\"]}}\n",
            audit = audit.display().to_string(),
        ),
    );
}

/// A checkpoint after every two lines.
const EVERY_TWO: &str = ", checkpoint: {every_lines: 2, every: 5m}";

fn audit_path(harness: &Harness) -> PathBuf {
    harness.auth_dir().with_file_name("audit").join("audit.log")
}

/// The audit file's complete lines, parsed.
fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// Keeps the first `count` lines of the file: the raw text is cut (lines are not
/// re-serialised, which would change their bytes).
fn cut_to(path: &Path, count: usize) {
    let text = std::fs::read_to_string(path).unwrap();
    let keep: Vec<&str> = text.lines().take(count).collect();
    std::fs::write(path, keep.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
}

async fn chat(gateway: &Gateway) {
    let response = client()
        .post(format!("{}/v1/chat/completions", gateway.url()))
        .bearer_auth(CLIENT_KEY)
        .json(&json!({"model": "mock-1", "messages": [{"role": "user", "content": "Hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

/// Starts the gateway, answers three chat requests (six event lines, with a checkpoint after
/// every two) and stops it cleanly; returns the audit file's lines.
async fn run_once(harness: &Harness) -> Vec<Value> {
    let mut gateway = harness.start().await;
    for _ in 0..3 {
        chat(&gateway).await;
    }
    gateway.terminate();
    assert!(gateway.wait().await.success(), "{}", gateway.logs());
    lines(&audit_path(harness))
}

fn text(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `cliproxy-server audit verify [--pubkey KEY] FILE`.
async fn verify(harness: &Harness, audit: &Path, pubkey: Option<&str>) -> std::process::Output {
    let audit = audit.display().to_string();
    let mut args = vec!["audit", "verify"];
    if let Some(key) = pubkey {
        args.extend(["--pubkey", key]);
    }
    args.push(&audit);
    harness.run(&args).await
}

async fn metrics_addr(gateway: &Gateway) -> SocketAddr {
    let entry = gateway.wait_for_log(|e| e["msg"] == "metrics listening").await;
    entry["addr"].as_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_cut_tail_or_a_deleted_log_refuses_start_and_fails_check() {
    let harness = Harness::new();
    let audit = audit_path(&harness);
    // The defaults: on_gap refuse.
    write_config(&harness, &audit, "");
    let all = run_once(&harness).await;
    assert_eq!(all.last().unwrap()["result"], "shutdown", "{all:#?}");

    // A restart on the intact file is clean.
    let output = harness.run(&["check"]).await;
    assert!(!text(&output).contains("behind its anchor"), "{}", text(&output));
    let mut gateway = harness.start().await;
    gateway.terminate();
    assert!(gateway.wait().await.success());
    let all = lines(&audit);
    let head = all.last().unwrap().clone();

    // The last three lines cut off while the gateway is stopped.
    cut_to(&audit, all.len() - 3);
    let output = harness.run(&["check"]).await;
    let said = text(&output);
    assert!(!output.status.success(), "check must fail: {said}");
    assert!(said.contains("behind its anchor"), "{said}");
    assert!(said.contains(head["hash"].as_str().unwrap()), "{said}");
    let output = harness.run(&["serve"]).await;
    let said = text(&output);
    assert!(!output.status.success(), "the gateway must refuse to start: {said}");
    assert!(said.contains("logging.audit.on_gap"), "{said}");
    assert!(
        said.contains(&format!(
            "anchor holds seq {} with hash {}",
            head["seq"],
            head["hash"].as_str().unwrap()
        )),
        "{said}"
    );
    assert!(said.contains(&format!("the file ends at seq {}", all.len() - 3)), "{said}");

    // The whole file deleted.
    std::fs::remove_file(&audit).unwrap();
    let output = harness.run(&["serve"]).await;
    let said = text(&output);
    assert!(!output.status.success(), "{said}");
    assert!(said.contains("the file does not exist"), "{said}");
    let output = harness.run(&["check"]).await;
    assert!(!output.status.success());
    assert!(text(&output).contains("behind its anchor"), "{}", text(&output));
}

#[tokio::test]
async fn with_on_gap_continue_the_gap_is_audited_and_counted() {
    let harness = Harness::new();
    let audit = audit_path(&harness);
    write_config(&harness, &audit, "");
    let all = run_once(&harness).await;
    let anchored = all.last().unwrap().clone();
    cut_to(&audit, all.len() - 4);

    write_config(&harness, &audit, ", on_gap: continue");
    let gateway = harness.start().await;
    let metrics = metrics_addr(&gateway).await;
    let now = lines(&audit);
    let gap = &now[all.len() - 4];
    assert_eq!(gap["event_type"], "security_violation", "{now:#?}");
    assert_eq!(gap["result"], "audit_log_gap");
    assert_eq!(gap["seq"], json!(all.len() - 3), "the chain in the file goes on");
    assert_eq!(gap["details"]["anchored_seq"], anchored["seq"]);
    assert_eq!(gap["details"]["anchored_hash"], anchored["hash"]);
    // The gap line comes first, then the start checkpoint.
    assert_eq!(now[all.len() - 3]["result"], "start");
    let scraped = client()
        .get(format!("http://{metrics}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(scraped.lines().any(|l| l == "cliproxy_audit_gaps_total 1"), "{scraped}");
    assert!(gateway.logs().contains("behind its anchor"), "the operational log says so loudly too");
}

#[tokio::test]
async fn verify_with_the_public_key_finds_a_cut_tail_offline() {
    let harness = Harness::new();
    let audit = audit_path(&harness);
    write_config(&harness, &audit, EVERY_TWO);
    let all = run_once(&harness).await;
    // start@1, then per request auth_success and provider_request, a checkpoint after every
    // two lines, and the shutdown checkpoint.
    let kinds: Vec<String> = all
        .iter()
        .filter(|l| l["event_type"] == "audit_checkpoint")
        .map(|l| format!("{}@{}", l["result"].as_str().unwrap(), l["seq"]))
        .collect();
    assert_eq!(kinds, ["start@1", "periodic@4", "periodic@7", "periodic@10", "shutdown@11"]);

    let output = harness.run(&["audit", "pubkey"]).await;
    assert!(output.status.success(), "{}", text(&output));
    let pubkey = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    assert_eq!(pubkey.len(), 64, "{pubkey}");
    assert!(!pubkey.contains(CLIENT_KEY));
    let output = verify(&harness, &audit, Some(&pubkey)).await;
    assert!(output.status.success(), "an intact log verifies: {}", text(&output));
    assert!(text(&output).contains("checkpoints: 5 signatures verified"), "{}", text(&output));
    let output = verify(&harness, &audit, None).await;
    assert!(output.status.success());
    assert!(text(&output).contains("checkpoints were not checked"), "{}", text(&output));

    // The last two lines (a periodic and the shutdown checkpoint) cut off: two lines follow
    // the last checkpoint left (seq 7), where one comes every two lines.
    let original = std::fs::read_to_string(&audit).unwrap();
    cut_to(&audit, 9);
    let output = verify(&harness, &audit, None).await;
    assert!(output.status.success(), "the hash chain alone sees nothing: {}", text(&output));
    let output = verify(&harness, &audit, Some(&pubkey)).await;
    assert!(!output.status.success());
    assert!(text(&output).contains("the tail after seq 7 may have been cut"), "{}", text(&output));

    // Another installation's key does not verify these checkpoints.
    let other = Harness::new();
    write_config(&other, &audit_path(&other), EVERY_TWO);
    run_once(&other).await;
    let output = other.run(&["audit", "pubkey"]).await;
    let other_key = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    std::fs::write(&audit, original).unwrap();
    let output = verify(&harness, &audit, Some(&other_key)).await;
    assert!(!output.status.success());
    assert!(text(&output).contains("signature does not verify"), "{}", text(&output));
}
