//! Ops and audit (layer 5) through the real binary: a run of mixed traffic leaves exactly the
//! expected audit events in order, `audit verify` accepts the file and names the line after
//! it is tampered with, the metrics listener shows the matching counters (and passes
//! `promtool check metrics`), a config reload is applied live and audited, SIGHUP reopens a
//! rotated file with the chain going on, an alert rule blocks an address, and no planted
//! secret reaches the audit file, the logs, the metrics or an error body.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use cliproxy_e2e::*;
use reqwest::Method;
use serde_json::{Value, json};

const MGMT_KEY: &str = "cpm-e2e-audit-management-key-51c7f0a3";
const BOB_KEY: &str = "cpk-e2e-audit-bob-key-8e2d4a61c0b79f35";
const ENCRYPTION_KEY: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00112233445566778899aabbccddeeff0";
const CREDENTIAL: &str = "sk-e2e-audit-planted-credential-6a1c93e7d5b2";
const WRONG_KEY: &str = "cpk-e2e-audit-wrong-key-presented-2b8c";
const WEBHOOK_SECRET: &str = "SLACKSECRETe2e4f1a9c07b";
const URL_SECRET: &str = "AIzaURLSECRETe2e93c1d5f7";

/// The config of these tests: the client key `e2e` (plus `extra_keys`), encryption on, the
/// management key, the mock provider `demo` and an upstream provider `openai` at `upstream`,
/// per-IP rate limit 1/s burst 3, 127.0.0.3 on the static denylist, 127.0.0.4 a trusted
/// proxy (its `X-Forwarded-For` names the client), the audit log at
/// `audit`, metrics on a free port, and `alerts`.
fn write_config(harness: &Harness, upstream: &str, audit: &Path, extra_keys: &str, alerts: &str) {
    let yaml = format!(
        "server:\n  host: 127.0.0.1\n  port: 0\n  shutdown_timeout: 10s\n  trusted_proxies: [127.0.0.4/32]\n\
         \x20 security:\n\
         \x20   rate_limiting: {{enabled: true, requests_per_second: 1, burst: 3}}\n\
         \x20   ip_denylist: {{enabled: true, denied_ips: [\"127.0.0.3\"]}}\n\
         auth:\n  api_keys:\n    - {{name: e2e, key: \"{CLIENT_KEY}\"}}\n{extra_keys}\
         \x20 dir: {dir:?}\n  encryption: {{enabled: true, key: \"{ENCRYPTION_KEY}\"}}\n\
         logging: {{level: debug, format: json, audit: {{enabled: true, file: {audit:?}}}}}\n\
         metrics: {{enabled: true, host: 127.0.0.1, port: 0}}\n\
         management: {{secret_key: \"{MGMT_KEY}\"}}\n\
         providers:\n  demo: {{type: mock, models: [\"mock-*\"]}}\n\
         \x20 openai: {{type: openai, base_url: \"{upstream}\", models: [\"gpt-*\"]}}\n\
         alerts: {alerts}\n",
        dir = harness.auth_dir().display().to_string(),
        audit = audit.display().to_string(),
    );
    harness.write_config(&yaml);
}

fn secrets() -> [&'static str; 8] {
    [
        CLIENT_KEY,
        MGMT_KEY,
        BOB_KEY,
        ENCRYPTION_KEY,
        CREDENTIAL,
        WRONG_KEY,
        WEBHOOK_SECRET,
        URL_SECRET,
    ]
}

fn client_from(local: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .local_address(local.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

/// A chat completion for the mock; status and body text.
async fn chat(client: &reqwest::Client, gateway: &Gateway, key: &str) -> (u16, String) {
    let response = client
        .post(format!("{}/v1/chat/completions", gateway.url()))
        .bearer_auth(key)
        .json(&json!({"model": "mock-1", "messages": [{"role": "user", "content": "Hi"}]}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

async fn manage(
    gateway: &Gateway,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    manage_with(gateway, MGMT_KEY, method, path, body).await
}

/// The audit file's event lines, parsed: [`all_audit_lines`] without the signed checkpoint
/// lines the sink adds at start, at a reopen, periodically and at shutdown.
fn audit_lines(path: &Path) -> Vec<Value> {
    all_audit_lines(path)
        .into_iter()
        .filter(|line| line["event_type"] != "audit_checkpoint")
        .collect()
}

/// The audit file's complete lines, parsed (a line being written as it is read is left out).
fn all_audit_lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = match text.rfind('\n') {
        Some(end) => &text[..end],
        None => "",
    };
    complete
        .lines()
        .map(|line| serde_json::from_str(line).expect("every audit line is JSON"))
        .collect()
}

/// Waits until the audit file holds at least `count` lines (it is written off the request
/// path), then returns them.
async fn wait_for_lines(path: &Path, count: usize) -> Vec<Value> {
    let deadline = Instant::now() + WAIT;
    let mut pause = Duration::from_millis(10);
    loop {
        let lines = audit_lines(path);
        if lines.len() >= count {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "the audit file has {} lines, expected {count}:\n{lines:#?}",
            lines.len()
        );
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// `(event_type, result, ip, user_id)` of each line, for comparing with what is expected.
fn summary(lines: &[Value]) -> Vec<(String, String, String, String)> {
    lines
        .iter()
        .map(|l| {
            let text = |v: &Value| v.as_str().unwrap_or("-").to_owned();
            (text(&l["event_type"]), text(&l["result"]), text(&l["ip"]), text(&l["user_id"]))
        })
        .collect()
}

fn expect(event: &str, result: &str, ip: &str, user: &str) -> (String, String, String, String) {
    (event.to_owned(), result.to_owned(), ip.to_owned(), user.to_owned())
}

/// The metrics listener's address, from its log line.
async fn metrics_addr(gateway: &Gateway) -> SocketAddr {
    let entry = gateway.wait_for_log(|e| e["msg"] == "metrics listening").await;
    entry["addr"].as_str().unwrap().parse().unwrap()
}

async fn scrape(addr: SocketAddr) -> String {
    let response = client().get(format!("http://{addr}/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    response.text().await.unwrap()
}

/// The value of the sample `series` (name and labels exactly as rendered), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|value| value.trim().parse().ok())
}

/// `cliproxy-server audit verify FILES…`: success, and what it printed.
fn verify(files: &[&Path]) -> (bool, String) {
    let output = std::process::Command::new(server_binary())
        .args(["audit", "verify"])
        .args(files)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// Runs `promtool check metrics` on `text` when promtool is installed (`.ci/run` installs it
/// and sets `CLIPROXY_REQUIRE_PROMTOOL=1`, so there it must run; see docs/security/metrics.md).
fn promtool_check(text: &str) {
    use std::io::Write;
    // One rule for CLIPROXY_REQUIRE_PROMTOOL, the same as in crates/cliproxy-audit/tests/
    // metrics.rs: "1" requires promtool, "0" or unset does not, and any other value is a
    // mistake that fails the test.
    let required = match std::env::var_os("CLIPROXY_REQUIRE_PROMTOOL") {
        Some(value) if value == "1" => true,
        Some(value) if value == "0" => false,
        None => false,
        Some(other) => panic!(
            "CLIPROXY_REQUIRE_PROMTOOL is {other:?}: it must be 1 (promtool required) or 0 or \
             unset (not required)"
        ),
    };
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(error) => {
            assert!(!required, "CLIPROXY_REQUIRE_PROMTOOL=1 but promtool cannot run: {error}");
            return;
        }
    };
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn mixed_traffic_leaves_the_expected_chain_metrics_and_no_secret() {
    let upstream = MockUpstream::start(|_| Reply::ok(canned::openai_chat("gpt-4o", "hi"))).await;
    let harness = Harness::new();
    let audit = harness.auth_dir().with_file_name("audit").join("audit.log");
    write_config(&harness, &upstream.url(), &audit, "", "[]");
    let gateway = harness.start().await;
    let metrics = metrics_addr(&gateway).await;
    let mut expected = Vec::new();
    let mut bodies = String::new();

    // A good request, then a wrong key.
    assert_eq!(chat(&client(), &gateway, CLIENT_KEY).await.0, 200);
    expected.push(expect("auth_success", "success", "127.0.0.1", "e2e"));
    expected.push(expect("provider_request", "200", "127.0.0.1", "e2e"));
    wait_for_lines(&audit, expected.len()).await;
    let (status, body) = chat(&client(), &gateway, WRONG_KEY).await;
    assert_eq!(status, 401);
    bodies.push_str(&body);
    expected.push(expect("auth_failure", "invalid_key", "127.0.0.1", "-"));
    wait_for_lines(&audit, expected.len()).await;

    // A burst from 127.0.0.2 until the per-IP bucket refuses.
    let burst = client_from("127.0.0.2");
    let mut admitted = 0;
    loop {
        let (status, body) = chat(&burst, &gateway, CLIENT_KEY).await;
        if status == 429 {
            bodies.push_str(&body);
            break;
        }
        assert_eq!(status, 200);
        admitted += 1;
        assert!(admitted <= 10, "the per-IP limit never refused");
        expected.push(expect("auth_success", "success", "127.0.0.2", "e2e"));
        expected.push(expect("provider_request", "200", "127.0.0.2", "e2e"));
        wait_for_lines(&audit, expected.len()).await;
    }
    expected.push(expect("security_violation", "per_ip_rate_limit", "127.0.0.2", "-"));
    wait_for_lines(&audit, expected.len()).await;

    // A denied address: closed at accept, before a byte is read.
    assert!(
        client_from("127.0.0.3").get(format!("{}/healthz", gateway.url())).send().await.is_err()
    );
    expected.push(expect("security_violation", "ip_denied_connection", "127.0.0.3", "-"));
    wait_for_lines(&audit, expected.len()).await;

    // A credential added and deleted through the management API.
    let (status, added) = manage(
        &gateway,
        Method::POST,
        "/auths",
        Some(json!({"provider": "openai", "type": "api_key", "token": CREDENTIAL})),
    )
    .await;
    assert_eq!(status, 201, "{added}");
    expected.push(expect("credential_access", "success", "127.0.0.1", "management"));
    wait_for_lines(&audit, expected.len()).await;
    let id = added["id"].as_str().unwrap().to_owned();
    assert_eq!(manage(&gateway, Method::DELETE, &format!("/auths/openai/{id}"), None).await.0, 200);
    expected.push(expect("credential_access", "success", "127.0.0.1", "management"));
    wait_for_lines(&audit, expected.len()).await;

    // A config reload that adds the key `bob`: in force for the next request (bob calls
    // from 127.0.0.5, whose per-IP bucket is full).
    let bob = client_from("127.0.0.5");
    assert_eq!(chat(&bob, &gateway, BOB_KEY).await.0, 401);
    expected.push(expect("auth_failure", "invalid_key", "127.0.0.5", "-"));
    wait_for_lines(&audit, expected.len()).await;
    write_config(
        &harness,
        &upstream.url(),
        &audit,
        &format!("    - {{name: bob, key: \"{BOB_KEY}\"}}\n"),
        "[]",
    );
    let (status, report) = manage(&gateway, Method::POST, "/config/reload", None).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["applied"], json!(["auth.api_keys[1].key", "auth.api_keys[1].name"]));
    assert_eq!(report["restart_required"], json!([]));
    assert!(report.to_string().contains("[redacted]"), "{report}");
    expected.push(expect("config_change", "success", "127.0.0.1", "management"));
    wait_for_lines(&audit, expected.len()).await;
    assert_eq!(chat(&bob, &gateway, BOB_KEY).await.0, 200);
    expected.push(expect("auth_success", "success", "127.0.0.5", "bob"));
    expected.push(expect("provider_request", "200", "127.0.0.5", "bob"));
    wait_for_lines(&audit, expected.len()).await;
    let mut answers = report.to_string();

    // A webhook URL is a bearer secret: a reload shows that it changed, never its value.
    let bob_key = format!("    - {{name: bob, key: \"{BOB_KEY}\"}}\n");
    let webhook = format!(
        "[{{name: watch, condition: \"auth_failures > 100\", duration: 5m, action: notify_admin, \
           webhook: \"https://hooks.example.com/services/T0/B0/{WEBHOOK_SECRET}\"}}]"
    );
    write_config(&harness, &upstream.url(), &audit, &bob_key, &webhook);
    let (status, report) = manage(&gateway, Method::POST, "/config/reload", None).await;
    assert_eq!(status, 200, "{report}");
    assert!(
        report["applied"].as_array().unwrap().contains(&json!("alerts[0].webhook")),
        "{report}"
    );
    let change = report["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["path"] == "alerts[0].webhook")
        .unwrap();
    assert_eq!(change["to"], "[redacted]");
    answers.push_str(&report.to_string());
    expected.push(expect("config_change", "success", "127.0.0.1", "management"));
    wait_for_lines(&audit, expected.len()).await;
    // A base URL with a key in its query is refused without repeating it.
    let bad_url = format!("https://api.example.com/v1?key={URL_SECRET}");
    write_config(&harness, &bad_url, &audit, &bob_key, &webhook);
    let (status, report) = manage(&gateway, Method::POST, "/config/reload", None).await;
    assert_eq!(status, 400, "{report}");
    assert!(report.to_string().contains("providers.openai.base_url"), "{report}");
    answers.push_str(&report.to_string());
    expected.push(expect("config_change", "failure", "127.0.0.1", "management"));

    // Exactly these events, in this order.
    let lines = wait_for_lines(&audit, expected.len()).await;
    assert_eq!(summary(&lines), expected, "{lines:#?}");
    // The chain fields (over every line, the start checkpoint included), and the details
    // that matter.
    let chained = all_audit_lines(&audit);
    assert_eq!(chained[0]["event_type"], "audit_checkpoint");
    for (index, line) in chained.iter().enumerate() {
        assert_eq!(line["seq"], json!(index + 1));
        assert_eq!(line["hash"].as_str().unwrap().len(), 64);
        if index > 0 {
            assert_eq!(line["prev_hash"], chained[index - 1]["hash"]);
        }
    }
    assert_eq!(lines[1]["provider"], "demo");
    assert!(lines[1]["request_id"].as_str().unwrap().starts_with("req_"));
    let reload = lines.iter().find(|l| l["event_type"] == "config_change").unwrap();
    assert_eq!(reload["details"]["action"], "reload");
    assert_eq!(
        reload["details"]["changed"],
        json!(["auth.api_keys[1].key", "auth.api_keys[1].name"])
    );
    let credential_events: Vec<&Value> =
        lines.iter().filter(|l| l["event_type"] == "credential_access").collect();
    assert_eq!(credential_events[0]["details"]["action"], "add");
    assert_eq!(credential_events[1]["details"]["action"], "delete");
    assert_eq!(credential_events[1]["details"]["credential"], format!("openai/{id}"));

    // The metrics listener counts the same things.
    let text = scrape(metrics).await;
    let provider_requests = f64::from(admitted + 2);
    assert_eq!(
        sample(&text, "cliproxy_requests_total{provider=\"demo\",status=\"200\"}"),
        Some(provider_requests),
        "{text}"
    );
    assert_eq!(sample(&text, "cliproxy_rate_limit_violations_total{ip=\"127.0.0.2\"}"), Some(1.0));
    assert_eq!(
        sample(&text, "cliproxy_security_events_total{event_type=\"auth_failure\"}"),
        Some(2.0)
    );
    assert_eq!(
        sample(&text, "cliproxy_security_events_total{event_type=\"security_violation\"}"),
        Some(2.0)
    );
    assert_eq!(
        sample(&text, "cliproxy_security_events_total{event_type=\"credential_access\"}"),
        Some(2.0)
    );
    assert!(text.contains("cliproxy_request_duration_seconds_bucket"), "{text}");
    assert!(text.contains("# HELP cliproxy_auth_failures_total"), "{text}");
    promtool_check(&text);

    // The file verifies; tampering is named by line.
    let (ok, verified) = verify(&[&audit]);
    assert!(ok, "{verified}");
    let raw = std::fs::read_to_string(&audit).unwrap();
    let raw_lines: Vec<&str> = raw.lines().collect();
    let tampered = audit.with_file_name("tampered.log");
    let write = |lines: &[String]| std::fs::write(&tampered, lines.join("\n") + "\n").unwrap();
    // One byte flipped inside line 4 (its result `invalid_key` becomes `invalid_kez`; line 1
    // is the start checkpoint).
    assert!(raw_lines[3].contains("invalid_key"), "{}", raw_lines[3]);
    let mut flipped: Vec<String> = raw_lines.iter().map(|l| (*l).to_owned()).collect();
    flipped[3] = flipped[3].replacen("invalid_key", "invalid_kez", 1);
    write(&flipped);
    let (ok, verified) = verify(&[&tampered]);
    assert!(!ok && verified.contains(":4:"), "{verified}");
    // Line 4 deleted.
    let mut deleted: Vec<String> = raw_lines.iter().map(|l| (*l).to_owned()).collect();
    deleted.remove(3);
    write(&deleted);
    let (ok, verified) = verify(&[&tampered]);
    assert!(!ok && verified.contains(":4:"), "{verified}");
    // Lines 5 and 6 swapped.
    let mut swapped: Vec<String> = raw_lines.iter().map(|l| (*l).to_owned()).collect();
    swapped.swap(4, 5);
    write(&swapped);
    let (ok, verified) = verify(&[&tampered]);
    assert!(!ok && verified.contains(":5:"), "{verified}");

    // No planted secret anywhere.
    let mut everything = raw.clone();
    everything.push_str(&gateway.logs());
    everything.push_str(&text);
    everything.push_str(&bodies);
    everything.push_str(&answers);
    everything.push_str(&verified);
    for secret in secrets() {
        assert!(!everything.contains(secret), "a planted secret leaked");
    }
    // The audit file is the operator's alone.
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&audit).unwrap().permissions().mode() & 0o777, 0o600);
}

#[tokio::test]
async fn sighup_reopens_a_rotated_file_and_the_chain_goes_on_across_files() {
    let upstream = MockUpstream::start(|_| Reply::ok(canned::openai_chat("gpt-4o", "hi"))).await;
    let harness = Harness::new();
    let audit = harness.auth_dir().with_file_name("audit").join("audit.log");
    write_config(&harness, &upstream.url(), &audit, "", "[]");
    let gateway = harness.start().await;
    assert_eq!(chat(&client(), &gateway, CLIENT_KEY).await.0, 200);
    wait_for_lines(&audit, 2).await;

    // logrotate: rename, then SIGHUP. The same SIGHUP reloads the (unchanged) config.
    let rotated = audit.with_file_name("audit.log.1");
    std::fs::rename(&audit, &rotated).unwrap();
    signal(&gateway, nix::sys::signal::Signal::SIGHUP);
    let reopened = wait_for_lines(&audit, 1).await;
    assert_eq!(reopened[0]["event_type"], "config_change");
    assert_eq!(reopened[0]["details"]["trigger"], "SIGHUP");
    // After the rotated file's start checkpoint and two events, and the new file's reopen
    // checkpoint.
    assert_eq!(reopened[0]["seq"], 5);
    assert_eq!(all_audit_lines(&audit)[0]["result"], "reopen");
    assert_eq!(chat(&client(), &gateway, CLIENT_KEY).await.0, 200);
    wait_for_lines(&audit, 3).await;
    assert_eq!(audit_lines(&rotated).len(), 2);

    let (ok, report) = verify(&[&rotated, &audit]);
    assert!(ok, "{report}");
    // In the wrong order the chain does not hold.
    let (ok, report) = verify(&[&audit, &rotated]);
    assert!(!ok, "{report}");

    // An invalid config on SIGHUP keeps the running one, and says so in the audit log.
    harness.write_config("server: {port: not-a-port}\n");
    signal(&gateway, nix::sys::signal::Signal::SIGHUP);
    let lines = wait_for_lines(&audit, 4).await;
    assert_eq!(lines[3]["event_type"], "config_change");
    assert_eq!(lines[3]["result"], "failure");
    assert!(lines[3]["details"]["error"].as_str().unwrap().contains("server.port"), "{}", lines[3]);
    assert_eq!(chat(&client(), &gateway, CLIENT_KEY).await.0, 200);
}

#[tokio::test]
async fn an_alert_rule_blocks_the_client_behind_a_trusted_proxy() {
    let upstream = MockUpstream::start(|_| Reply::ok(canned::openai_chat("gpt-4o", "hi"))).await;
    let harness = Harness::new();
    let audit = harness.auth_dir().with_file_name("audit").join("audit.log");
    let alerts = "[{name: \"Rate limit violations\", condition: \"rate_limit_violations > 5\", \
                  duration: 1m, action: block_ip, block_for: 10m}]";
    write_config(&harness, &upstream.url(), &audit, "", alerts);
    let gateway = harness.start().await;
    // The trusted proxy 127.0.0.4 forwards the client 203.0.113.9.
    let proxy = client_from("127.0.0.4");
    let models = || {
        proxy
            .get(format!("{}/v1/models", gateway.url()))
            .bearer_auth(CLIENT_KEY)
            .header("x-forwarded-for", "203.0.113.9")
            .send()
    };
    let mut refused = 0;
    // 3 admitted by the burst, then refusals until the sixth one trips the rule (the clock
    // may refill a token meanwhile: count refusals, not requests).
    while refused < 6 {
        match models().await.unwrap().status().as_u16() {
            429 => refused += 1,
            200 => {}
            other => panic!("unexpected answer {other}"),
        }
    }
    // The alert worker carries the block out off the request path: its log line says it is
    // in force.
    gateway.wait_for_log(|e| e["msg"] == "alert fired: address blocked").await;
    // Blocked: the client is refused by address; the proxy itself and others are not.
    assert_eq!(models().await.unwrap().status(), 403);
    let (status, list) = manage(&gateway, Method::GET, "/security/ip-denylist", None).await;
    assert_eq!(status, 200);
    let entry = &list["entries"][0];
    assert_eq!(entry["ip"], "203.0.113.9/32");
    assert_eq!(entry["reason"], "alert: Rate limit violations");
    assert_eq!(chat(&client(), &gateway, CLIENT_KEY).await.0, 200);
    assert_eq!(proxy.get(format!("{}/healthz", gateway.url())).send().await.unwrap().status(), 200);
    // The audit log has the block, the alert and all six refusals (one line per second
    // and address, the later lines counting the ones left out).
    let deadline = Instant::now() + WAIT;
    let lines = loop {
        let lines = audit_lines(&audit);
        let refusals: u64 = lines
            .iter()
            .filter(|l| l["result"] == "per_ip_rate_limit")
            .map(|l| {
                // A summary line carries only the refusals left out; any other is one more.
                let summary = l["details"]["detail"].as_str().unwrap_or("").starts_with("summary:");
                u64::from(!summary) + l["details"]["repeats"].as_u64().unwrap_or(0)
            })
            .sum();
        if (refusals >= 6 && lines.iter().any(|l| l["result"] == "alert"))
            || Instant::now() > deadline
        {
            assert_eq!(refusals, 6, "{lines:#?}");
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let block = lines.iter().find(|l| l["details"]["action"] == "alert_block_ip").unwrap();
    assert_eq!(block["ip"], "203.0.113.9");
    let alert = lines.iter().find(|l| l["result"] == "alert").unwrap();
    assert_eq!(alert["event_type"], "security_violation");
    assert!(alert["details"]["detail"].as_str().unwrap().contains("blocked for 10m"), "{alert}");
    // The block survives a restart (state store), and loopback is still served.
    let mut gateway = gateway;
    gateway.terminate();
    assert!(gateway.wait().await.success());
    let gateway = harness.start().await;
    let proxy = client_from("127.0.0.4");
    let response = proxy
        .get(format!("{}/v1/models", gateway.url()))
        .bearer_auth(CLIENT_KEY)
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(chat(&client(), &gateway, CLIENT_KEY).await.0, 200);
}

#[tokio::test]
async fn the_demo_turns_audit_and_metrics_on_and_says_where_they_are() {
    let (_demo, banner) = demo(&["--port", "0"]).await;
    let field = |prefix: &str| {
        banner
            .lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .map(|rest| rest.split_whitespace().next().unwrap().to_owned())
            .unwrap_or_else(|| panic!("no `{prefix}` in the banner:\n{banner}"))
    };
    let base = field("base url:");
    let key = field("client key:");
    let audit = std::path::PathBuf::from(field("cliproxy-server audit verify"));
    let metrics = banner
        .lines()
        .find_map(|l| {
            l.trim().strip_prefix("curl -s http://").filter(|rest| rest.ends_with("/metrics"))
        })
        .unwrap_or_else(|| panic!("no metrics URL in the banner:\n{banner}"))
        .to_owned();
    let response = client()
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&json!({"model": "mock-1", "messages": [{"role": "user", "content": "Hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let lines = wait_for_lines(&audit, 2).await;
    assert_eq!(lines[1]["event_type"], "provider_request");
    let text =
        client().get(format!("http://{metrics}")).send().await.unwrap().text().await.unwrap();
    assert_eq!(
        sample(&text, "cliproxy_requests_total{provider=\"demo\",status=\"200\"}"),
        Some(1.0),
        "{text}"
    );
    assert!(!std::fs::read_to_string(&audit).unwrap().contains(&key));
}

fn signal(gateway: &Gateway, signal: nix::sys::signal::Signal) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(gateway.pid()).unwrap());
    nix::sys::signal::kill(pid, signal).unwrap();
}
