//! The usage history through the real binary (issue 22, SPEC §10): requests through the
//! gateway, then `cliproxy-server usage --json` (offline, on the state store) and `GET
//! /v0/management/usage` give the same answer; the history survives a restart; each request's
//! row is committed within one flush interval (plus a stated margin) of its answer, and once
//! the rows are visible to the command (durable on disk), a SIGKILL loses none of them.

use std::time::{Duration, Instant, SystemTime};

use cliproxy_e2e::*;
use serde_json::{Value, json};

const UPSTREAM_TOKEN: &str = "sk-e2e-usage-history-7f21c9a04d3e";
const MGMT_KEY: &str = "mgmt-e2e-usage-history-5b8e13d2c0";
const CATEGORY: &str = "usage-history";

/// Every reply reports 1000 prompt tokens (400 of them cached) and 500 completion tokens.
async fn upstream() -> MockUpstream {
    MockUpstream::start(|_| {
        Reply::ok(json!({"id": "chatcmpl-h", "object": "chat.completion", "created": 1,
            "model": "gpt-4o", "choices": [{"index": 0, "finish_reason": "stop",
                "message": {"role": "assistant", "content": "Hello"}}],
            "usage": {"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500,
                "prompt_tokens_details": {"cached_tokens": 400}}}))
    })
    .await
}

async fn chat(gateway: &Gateway) {
    let response = client()
        .post(format!("{}/v1/chat/completions", gateway.url()))
        .bearer_auth(CLIENT_KEY)
        .json(&json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.bytes().await.unwrap();
}

/// The API's answer for the last hour.
async fn api(gateway: &Gateway) -> Value {
    let (status, answer) =
        manage_with(gateway, MGMT_KEY, reqwest::Method::GET, "/usage?from=1h", None).await;
    assert_eq!(status, 200, "{answer}");
    answer
}

/// `cliproxy-server usage --json --since 1h`, read from the state store.
async fn cli(harness: &Harness) -> Value {
    let output = harness.run(&["usage", "--json", "--since", "1h"]).await;
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The requests, and what they cost: each reply is 600 uncached prompt tokens at $2, 400
/// cached at $1 and 500 output tokens at $10 per 1M: 6600 micro-dollars.
fn expect(report: &Value, requests: u64) {
    let totals = &report["totals"];
    assert_eq!(totals["requests"], requests, "{report}");
    assert_eq!(totals["input_tokens"], 1000 * requests, "{report}");
    assert_eq!(totals["output_tokens"], 500 * requests, "{report}");
    assert_eq!(totals["cache_read_tokens"], 400 * requests, "{report}");
    assert_eq!(totals["cost_usd"], cliproxy_core::money::format_usd(6600 * requests), "{report}");
    assert_eq!(totals["unpriced_requests"], 0, "{report}");
    assert_eq!(report["buckets"][0]["group"], "e2e", "{report}");
}

#[tokio::test]
async fn the_cli_and_the_api_agree_and_the_history_survives_restart_and_sigkill() {
    let upstream = upstream().await;
    let harness = Harness::new();
    harness.config(
        "",
        &format!(
            "management: {{secret_key: \"{MGMT_KEY}\"}}\n\
             state: {{flush_interval: 1s}}\n\
             pricing: {{models: {{gpt-4o: {{input: 2, output: 10, cache_read: 1}}}}}}\n\
             providers:\n  oa: {{type: openai, base_url: \"{}\", models: [gpt-4o]}}\n",
            upstream.url()
        ),
    );
    harness.vault_add("oa", "oa-1", UPSTREAM_TOKEN, None);
    let mut gateway = harness.start().await;
    for _ in 0..3 {
        chat(&gateway).await;
    }
    // The finishing stage runs when the answer's body has ended, after the client has read
    // it; the API reads the accumulator too, so it shows the three once they finished. No
    // event tells the test when that is: it asks again within a deadline.
    let deadline = Instant::now() + WAIT;
    let answer = loop {
        let answer = api(&gateway).await;
        if answer["totals"]["requests"] == 3 || Instant::now() > deadline {
            break answer;
        }
    };
    expect(&answer, 3);
    // The API's read has flushed the rows, so the offline command sees the same.
    let offline = cli(&harness).await;
    assert_eq!(offline["buckets"], answer["buckets"], "CLI {offline}\nAPI {answer}");
    assert_eq!(offline["totals"], answer["totals"]);
    let table = harness.run(&["usage", "--since", "1h"]).await;
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.lines().any(|l| l.starts_with("TOTAL") && l.contains("0.019800")), "{table}");
    assert!(table.contains("e2e"), "{table}");

    // A graceful restart keeps the history.
    gateway.terminate();
    assert!(gateway.wait().await.success());
    let mut gateway = harness.start().await;
    expect(&api(&gateway).await, 3);

    // Each request's row reaches the disk within one flush interval of its answer: the beat
    // that takes it from the accumulator asks the store to commit at once. Four rounds, each
    // timed by the write-ahead log's modification against the answer, as the crash suite times
    // quota counts; the database is polled (the writer gives no event to wait on) within a
    // deadline that only ends a test whose rows never arrive.
    let interval = Duration::from_secs(1);
    // The writer thread's wake-up and commit (WAL, no fsync) and the beat's own scheduling,
    // on two shared cores. Without the prompt commit a row waits up to two intervals, so a
    // round lands past this margin more often than not.
    let margin = Duration::from_millis(400);
    let database = harness.auth_dir().join(".state.db");
    let wal = harness.auth_dir().join(".state.db-wal");
    let mut rounds = Vec::new();
    for round in 0..4u64 {
        let before = std::fs::metadata(&wal).and_then(|m| m.modified()).ok();
        chat(&gateway).await;
        let answered = SystemTime::now();
        let deadline = Instant::now() + 10 * interval;
        loop {
            let conn = rusqlite::Connection::open_with_flags(
                &database,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )
            .unwrap();
            let stored: i64 = conn
                .query_row("SELECT coalesce(sum(requests), 0) FROM usage_hourly", [], |row| {
                    row.get(0)
                })
                .unwrap();
            if u64::try_from(stored).unwrap() > 3 + round {
                break;
            }
            assert!(Instant::now() < deadline, "round {round}: the row never reached the disk");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let committed = std::fs::metadata(&wal).and_then(|m| m.modified()).unwrap();
        assert!(before.is_none_or(|before| committed > before), "round {round}: no commit");
        let took = committed.duration_since(answered).unwrap_or_default();
        assert!(
            took <= interval + margin,
            "round {round}: the usage row was committed {took:?} after the answer; at most one \
             flush interval ({interval:?}, plus {margin:?}) may be lost on a crash"
        );
        rounds.push(took);
    }
    // What the command reads is what a kill keeps.
    expect(&cli(&harness).await, 7);
    gateway.kill().await;
    let gateway = harness.start().await;
    expect(&api(&gateway).await, 7);
    expect(&cli(&harness).await, 7);
    let worst = rounds.iter().max().copied().unwrap_or_default();
    report::figure(
        CATEGORY,
        "worst time from answer to durable usage row (flush_interval 1 s)",
        u64::try_from(worst.as_millis()).unwrap_or(u64::MAX),
        "ms",
    );
    report::cases(
        CATEGORY,
        "the_cli_and_the_api_agree_and_the_history_survives_restart_and_sigkill",
        1,
    );
}
