//! Client keys created at run time (issue 22) through the real binary: created by the
//! management API, used, revoked and refused on the next request; created and revoked by
//! `cliproxy-server keys` while the server runs, in force there within about a second; a key
//! restricted to one model refused on another; an expiry honoured; the key never in a log,
//! audit line, metric scrape or API answer after its creation; and SIGKILL during key
//! creations: every acknowledged key exists and works after the restart, and no key exists
//! that was neither acknowledged nor in flight.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cliproxy_e2e::disk::{metric, metrics_addr};
use cliproxy_e2e::*;
use reqwest::Method;
use serde_json::{Value, json};

const CATEGORY: &str = "client-keys";
const MGMT_KEY: &str = "cpm-e2e-keys-management-key-5c2e81";
/// How long a change made by another process may take to be in force: the server re-reads
/// the state store every second; the rest is slack for two shared cores.
const REFRESH_DEADLINE: Duration = Duration::from_secs(5);
/// The pause between two probes of a bounded poll.
const PROBE_EVERY: Duration = Duration::from_millis(50);

/// A harness with the management API, the audit log and metrics on, and the mock serving
/// `mock-*` and `other-*`.
fn harness() -> Harness {
    let harness = Harness::new();
    let audit = harness.auth_dir().parent().unwrap().join("audit.log");
    harness.config(
        "",
        &format!(
            "management: {{secret_key: \"{MGMT_KEY}\"}}\n\
             logging: {{level: debug, format: json, audit: {{enabled: true, file: {:?}}}}}\n\
             metrics: {{enabled: true, host: 127.0.0.1, port: 0}}\n\
             providers:\n  demo: {{type: mock, models: [\"mock-*\", \"other-*\"]}}\n\
             pricing: {{models: {{\"mock-*\": {{input: 1, output: 2}}}}}}\n",
            audit.display().to_string()
        ),
    );
    // `config` writes a `logging:` of its own, without the audit log: the one above replaces
    // it (a key may appear only once in the file).
    let yaml = std::fs::read_to_string(harness.config_path()).unwrap();
    let yaml = yaml.replacen("logging: {level: debug, format: json}\n", "", 1);
    harness.write_config(&yaml);
    harness
}

async fn manage(
    gateway: &Gateway,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    manage_with(gateway, MGMT_KEY, method, path, body).await
}

/// A chat completion with `key` for `model`: the status and the body.
async fn chat(gateway: &Gateway, key: &str, model: &str) -> (u16, String) {
    let response = client()
        .post(format!("{}/v1/chat/completions", gateway.url()))
        .bearer_auth(key)
        .json(&json!({"model": model, "messages": [{"role": "user", "content": "Hi"}]}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// Creates a key through the API; the key (planted for the sweep) and the answer.
async fn create(gateway: &Gateway, body: Value) -> (String, Value) {
    let (status, created) = manage(gateway, Method::POST, "/client-keys", Some(body)).await;
    assert_eq!(status, 201, "{created}");
    let key = created["key"].as_str().unwrap().to_owned();
    sweep::plant(&key);
    (key, created)
}

/// Polls `probe` until it returns true, every [`PROBE_EVERY`], for at most `deadline`; how
/// long it took. A bounded poll, not a wait on an event: the gateway's re-read of the state
/// store has no event a test can wait on.
async fn poll_until<F, Fut>(deadline: Duration, what: &str, mut probe: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if probe().await {
            return started.elapsed();
        }
        assert!(started.elapsed() < deadline, "{what}: not within {deadline:?}");
        tokio::time::sleep(PROBE_EVERY).await;
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

#[tokio::test]
async fn a_key_created_by_the_api_works_is_restricted_and_revoked_and_never_shown_again() {
    let harness = harness();
    let gateway = harness.start().await;
    let metrics = metrics_addr(&gateway).await;
    let (key, created) = create(&gateway, json!({"name": "api-key", "models": ["mock-*"]})).await;
    assert_eq!(created["hint"], json!(format!("{}\u{2026}", &key[..12])));

    let (status, body) = chat(&gateway, &key, "mock-1").await;
    assert_eq!(status, 200, "{body}");
    // Restricted to `mock-*`: another model the gateway serves is refused.
    let (status, body) = chat(&gateway, &key, "other-1").await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("other-1"), "{body}");

    // Every answer after the creation: none holds the key or its secret part.
    let mut answers = Vec::new();
    for path in ["/client-keys", "/client-keys/api-key", "/status"] {
        let (status, answer) = manage(&gateway, Method::GET, path, None).await;
        assert_eq!(status, 200, "{path}: {answer}");
        answers.push(answer.to_string());
    }
    let (status, answer) =
        manage(&gateway, Method::PATCH, "/client-keys/api-key", Some(json!({"disabled": false})))
            .await;
    assert_eq!(status, 200, "{answer}");
    answers.push(answer.to_string());

    // Revoked: the very next request is refused.
    let (status, answer) = manage(&gateway, Method::DELETE, "/client-keys/api-key", None).await;
    assert_eq!(status, 204, "{answer}");
    let (status, body) = chat(&gateway, &key, "mock-1").await;
    assert_eq!(status, 401, "{body}");
    answers.push(body);
    let scrape = client()
        .get(format!("http://{metrics}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(scrape.contains("cliproxy_requests_total"), "{scrape}");
    answers.push(scrape);
    let everything = answers.join("\n");
    assert!(!everything.contains(&key), "the key is in an answer after its creation");
    assert!(!everything.contains(&key[12..]), "the key's secret part is in an answer");
    // The logs, the audit log, the state database and the metrics are swept for the key
    // (planted by `create`) when the gateway is dropped.
    assert!(metric(metrics, "cliproxy_active_connections").await.is_some());
}

#[tokio::test]
async fn keys_created_and_revoked_by_the_cli_take_effect_while_the_server_runs() {
    let harness = harness();
    let gateway = harness.start().await;
    let output = harness
        .run(&["keys", "create", "--name", "cli-key", "--models", "mock-*", "--budget-usd", "1"])
        .await;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    let key = stdout
        .lines()
        .map(str::trim)
        .find(|line| line.starts_with("cpk-"))
        .unwrap_or_else(|| panic!("no key printed: {stdout}"))
        .to_owned();
    sweep::plant(&key);
    assert!(stdout.contains("Authorization: Bearer"), "{stdout}");
    let took = poll_until(REFRESH_DEADLINE, "the key created by the CLI works", || async {
        chat(&gateway, &key, "mock-1").await.0 == 200
    })
    .await;
    report::figure(CATEGORY, "created by the CLI to in force", took.as_millis() as u64, "ms");
    assert_eq!(chat(&gateway, &key, "other-1").await.0, 403);

    // Listed by the CLI (table and JSON) without the key.
    let output = harness.run(&["keys", "list"]).await;
    let table = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success() && table.contains("cli-key"), "{table}");
    assert!(table.contains("$1.000000/monthly"), "{table}");
    let output = harness.run(&["keys", "list", "--json"]).await;
    let listed: Value = serde_json::from_slice(&output.stdout).unwrap();
    let names: Vec<&str> = listed["client_keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|k| k["name"].as_str())
        .collect();
    assert_eq!(names, ["e2e", "cli-key"]);
    for text in [&table, &listed.to_string()] {
        assert!(!text.contains(&key) && !text.contains(&key[12..]), "{text}");
    }

    let output = harness.run(&["keys", "revoke", "cli-key"]).await;
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let took = poll_until(REFRESH_DEADLINE, "the key revoked by the CLI is refused", || async {
        chat(&gateway, &key, "mock-1").await.0 == 401
    })
    .await;
    report::figure(CATEGORY, "revoked by the CLI to refused", took.as_millis() as u64, "ms");
    // The gateway's audit log has a line for each change the CLI made: no other line would
    // tell of them. Its sink writes on its own beat, so the file is polled (bounded).
    let audit = harness.auth_dir().parent().unwrap().join("audit.log");
    let seen = |action: &str, line: &Value| {
        line["event_type"] == "config_change"
            && line["details"]["action"] == action
            && line["details"]["client_key"] == "cli-key"
            && line["details"]["source"] == "state_store"
    };
    poll_until(REFRESH_DEADLINE, "the CLI's create and revoke in the audit log", || async {
        let lines: Vec<Value> = std::fs::read_to_string(&audit)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        lines.iter().any(|l| seen("client_key_create", l))
            && lines.iter().any(|l| seen("client_key_revoke", l))
    })
    .await;
    // Revoking it again, or a config file key, fails with exit 1; a bad flag is exit 2.
    assert_eq!(harness.run(&["keys", "revoke", "cli-key"]).await.status.code(), Some(1));
    assert_eq!(harness.run(&["keys", "revoke", "e2e"]).await.status.code(), Some(1));
    let bad = harness.run(&["keys", "create", "--name", "x", "--budget-usd", "lots"]).await;
    assert_eq!(bad.status.code(), Some(2), "{}", String::from_utf8_lossy(&bad.stderr));
}

#[tokio::test]
async fn an_expiry_set_a_few_seconds_ahead_is_honoured() {
    let harness = harness();
    let gateway = harness.start().await;
    let (key, _) = create(&gateway, json!({"name": "brief"})).await;
    // Two seconds ahead: whole seconds, and still in the future when the PATCH arrives.
    let at = now() + 2;
    let expires_at = cliproxy_core::format_utc(at);
    let (status, answer) = manage(
        &gateway,
        Method::PATCH,
        "/client-keys/brief",
        Some(json!({"expires_at": expires_at})),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["expires_at"], json!(expires_at));
    // Served until then (the first request is answered well within the two seconds, or the
    // poll below fails on the first probe with the expiry message anyway).
    let (status, body) = chat(&gateway, &key, "mock-1").await;
    assert!(status == 200 || now() >= at, "{status}: {body}");
    // A bounded poll: expiry is a moment on the gateway's clock, with no event to wait on.
    let deadline = Instant::now() + Duration::from_secs(8);
    let last = loop {
        let (status, body) = chat(&gateway, &key, "mock-1").await;
        if status == 401 {
            break body;
        }
        assert_eq!(status, 200, "{body}");
        assert!(Instant::now() < deadline, "the expired key is still served");
        tokio::time::sleep(PROBE_EVERY).await;
    };
    assert!(last.contains(&format!("this client key expired at {expires_at}")), "{last}");
    assert!(now() >= at, "refused before its expiry");
}

/// SIGKILL while keys are being created through the API, many times on the same state:
/// after each restart every key whose creation was acknowledged (201 with the key) is
/// listed and works, and every key listed was acknowledged or in flight at the kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_key_creations_loses_no_acknowledged_key() {
    const ROUNDS: u64 = 12;
    let harness = harness();
    // Every key whose creation was acknowledged (201 with the key): name and key.
    let mut acknowledged: Vec<(String, String)> = Vec::new();
    // Creations in flight at a kill that were stored all the same (their answer cut off):
    // they exist, though nobody holds their key.
    let mut landed: Vec<String> = Vec::new();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for round in 0..ROUNDS {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let mut gateway = harness.start().await;
        // After the restart: every acknowledged key is listed and works, and every key listed
        // is known.
        let (status, list) = manage(&gateway, Method::GET, "/client-keys", None).await;
        assert_eq!(status, 200, "{list}");
        let listed: Vec<String> = list["client_keys"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|k| k["source"] == "store")
            .map(|k| k["name"].as_str().unwrap().to_owned())
            .collect();
        for (name, key) in &acknowledged {
            assert!(listed.contains(name), "round {round}: acknowledged {name} is not listed");
            let (status, body) = chat(&gateway, key, "mock-1").await;
            assert_eq!(status, 200, "round {round}: acknowledged {name}: {body}");
        }
        for name in &listed {
            assert!(
                acknowledged.iter().any(|(n, _)| n == name) || landed.contains(name),
                "round {round}: {name} is listed but was never acknowledged or in flight"
            );
        }

        let (acked_tx, mut acked) = tokio::sync::watch::channel(0u64);
        let url = gateway.url();
        // Creates keys one after the other until the gateway dies; returns those
        // acknowledged and the name of the one in flight at the kill.
        let writer = tokio::spawn(async move {
            let mut done: Vec<(String, String)> = Vec::new();
            for n in 0.. {
                let name = format!("crash-{round}-{n}");
                let sent = client()
                    .post(format!("{url}/v0/management/client-keys"))
                    .header("x-management-key", MGMT_KEY)
                    .json(&json!({"name": name}))
                    .send()
                    .await;
                let answer = match sent {
                    Ok(response) if response.status() == 201 => response.json::<Value>().await,
                    _ => return (done, name),
                };
                let Ok(answer) = answer else { return (done, name) };
                let key = answer["key"].as_str().unwrap().to_owned();
                sweep::plant(&key);
                done.push((name, key));
                let _ = acked_tx.send(done.len() as u64);
            }
            unreachable!("the loop ends with the gateway")
        });
        // Kill once 1..=3 creations are acknowledged: the next one is then on its way.
        let target = (seed >> 32) % 3 + 1;
        tokio::time::timeout(WAIT, acked.wait_for(|n| *n >= target))
            .await
            .expect("creations are not acknowledged")
            .expect("the writer stopped early");
        // Fault injection, not synchronisation: land somewhere in the creation in flight.
        std::thread::sleep(Duration::from_micros(seed % 3000));
        gateway.kill().await;
        let (done, in_flight) = tokio::time::timeout(WAIT, writer).await.unwrap().unwrap();
        acknowledged.extend(done);
        // Read with the gateway down, as the next start reads it.
        let stored = list_store_names(&harness).await;
        for (name, _) in &acknowledged {
            assert!(stored.contains(name), "round {round}: acknowledged {name} was lost");
        }
        if stored.contains(&in_flight) {
            landed.push(in_flight.clone());
        }
        for name in &stored {
            assert!(
                acknowledged.iter().any(|(n, _)| n == name) || landed.contains(name),
                "round {round}: {name} is stored but was neither acknowledged nor in flight"
            );
        }
    }
    report::iterations(
        CATEGORY,
        "sigkill_during_key_creations_loses_no_acknowledged_key",
        ROUNDS as usize,
    );
    report::figure(CATEGORY, "SIGKILLs during key creations", ROUNDS, "kills");
    report::figure(
        CATEGORY,
        "acknowledged keys checked after restarts",
        acknowledged.len(),
        "keys",
    );
    report::figure(CATEGORY, "creations in flight that landed", landed.len(), "keys");
}

/// The names of the stored run-time keys, read by the CLI (`keys list --json`) with no
/// gateway running.
async fn list_store_names(harness: &Harness) -> Vec<String> {
    let output = harness.run(&["keys", "list", "--json"]).await;
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let listed: Value = serde_json::from_slice(&output.stdout).unwrap();
    listed["client_keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["source"] == "store")
        .map(|k| k["name"].as_str().unwrap().to_owned())
        .collect()
}

/// Two gateways sharing one state store (each with its own vault directory, the audit log
/// off, since each would anchor its own chain in it): a key created on one is in force on
/// the other within about a second, and revoked on one, refused by the other as soon.
#[tokio::test]
async fn a_key_created_or_revoked_on_one_gateway_follows_on_another_sharing_the_state() {
    let shared = tempfile::tempdir().unwrap();
    let state = shared.path().join("state.db");
    let start = || async {
        let harness = Harness::new();
        harness.config(
            "",
            &format!(
                "management: {{secret_key: \"{MGMT_KEY}\"}}\nstate: {{path: {:?}}}\n\
                 providers:\n  demo: {{type: mock}}\n",
                state.display().to_string()
            ),
        );
        let gateway = harness.start().await;
        (harness, gateway)
    };
    let (_one_dir, one) = start().await;
    let (_two_dir, two) = start().await;
    let (key, _) = create(&one, json!({"name": "shared"})).await;
    assert_eq!(chat(&one, &key, "mock-1").await.0, 200);
    let took = poll_until(
        REFRESH_DEADLINE,
        "the key created on the first works on the second",
        || async { chat(&two, &key, "mock-1").await.0 == 200 },
    )
    .await;
    report::figure(
        CATEGORY,
        "created on one gateway to in force on another",
        took.as_millis() as u64,
        "ms",
    );
    let (status, answer) = manage(&two, Method::DELETE, "/client-keys/shared", None).await;
    assert_eq!(status, 204, "{answer}");
    assert_eq!(chat(&two, &key, "mock-1").await.0, 401);
    let took = poll_until(
        REFRESH_DEADLINE,
        "the key revoked on the second is refused by the first",
        || async { chat(&one, &key, "mock-1").await.0 == 401 },
    )
    .await;
    report::figure(
        CATEGORY,
        "revoked on one gateway to refused by another",
        took.as_millis() as u64,
        "ms",
    );
}

/// The demo prints how to create a key with a budget, and the command it prints works: the
/// body is taken from the banner as printed and sent with the banner's management key.
#[tokio::test]
async fn the_demo_prints_a_working_way_to_create_a_key_with_a_budget() {
    let (_demo, banner) = demo(&["--port", "0"]).await;
    let field = |prefix: &str| {
        banner
            .lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .map(|rest| rest.split_whitespace().next().unwrap().to_owned())
            .unwrap_or_else(|| panic!("no `{prefix}` in the banner:\n{banner}"))
    };
    let (base, management_key) = (field("base url:"), field("management key:"));
    let lines: Vec<&str> = banner.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.contains("-X POST") && l.contains("/v0/management/client-keys"))
        .unwrap_or_else(|| panic!("no client key creation in the banner:\n{banner}"));
    let body = lines[at..]
        .iter()
        .find_map(|l| l.trim().strip_prefix("-d '").and_then(|rest| rest.strip_suffix('\'')))
        .unwrap_or_else(|| panic!("no body after the creation command:\n{banner}"));
    let body: Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["budget"], json!({"usd": "0.01", "period": "daily"}));
    let response = client()
        .post(format!("{base}/v0/management/client-keys"))
        .header("x-management-key", &management_key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();
    assert_eq!(created["budget"], json!({"usd": "0.010000", "period": "daily"}));
    let key = created["key"].as_str().unwrap();
    let answer = client()
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(key)
        .json(&json!({"model": "mock-1", "messages": [{"role": "user", "content": "Hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
}
