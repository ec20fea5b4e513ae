//! The management API through the real binary: credentials added, listed, exported and
//! deleted at run time take effect on the next proxied request, are encrypted at rest and
//! survive restarts; the key gate bans a peer after repeated failures; `vault list` shows
//! last use after a graceful shutdown; the device fingerprint is stable and sent upstream;
//! and SIGKILL during management writes never leaves a broken credential.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cliproxy_e2e::canned::*;
use cliproxy_e2e::*;
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use crate::assert_no_secrets;

const ENCRYPTION_KEY: &str = "UZagsnPJF7hCHyF+naFaAdKkpUyp5ZL/VI6iNa2Nae8=";
const MGMT_KEY: &str = "cpm-e2e-management-key-7d41c09a2b5e";
const TOKEN: &str = "sk-mgmt-planted-token-one-61a0";
const TOKEN_2: &str = "sk-mgmt-planted-token-two-62b0";
const TOKEN_3: &str = "sk-mgmt-planted-token-three-63c0";

/// `auth.encryption` on, as an `auth_extra` for [`Harness::config_with_auth`].
fn encryption() -> String {
    format!("  encryption: {{enabled: true, key: \"{ENCRYPTION_KEY}\"}}\n")
}

/// The `management:` section with the test key and `extra` settings (`, max_failures: 3`).
fn management(extra: &str) -> String {
    format!("management: {{secret_key: \"{MGMT_KEY}\"{extra}}}\n")
}

/// One OpenAI-type provider called `name`, serving `gpt-*` from `url`.
fn openai_provider(name: &str, url: &str) -> String {
    format!("providers:\n  {name}: {{type: openai, base_url: \"{url}\", models: [\"gpt-*\"]}}\n")
}

/// Whether `needle` occurs in `bytes`.
fn holds(bytes: &[u8], needle: &str) -> bool {
    bytes.windows(needle.len()).any(|window| window == needle.as_bytes())
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// A chat completion for `gpt-4o` with the client key; the status.
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

/// A management call under `/v0/management` with `headers`; the status, the headers and the
/// body (parsed as JSON, or as a JSON string when it is not JSON).
async fn send(
    client: &reqwest::Client,
    gateway: &Gateway,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (u16, HeaderMap, Value) {
    let mut request = client.request(method, format!("{}/v0/management{path}", gateway.url()));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(body) = body {
        // Tokens posted here are planted for the leak sweep (tests/src/sweep.rs).
        cliproxy_e2e::sweep::plant_from_json(&body);
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, headers, body)
}

/// A management call with the right key.
async fn call(
    gateway: &Gateway,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, HeaderMap, Value) {
    send(&client(), gateway, method, path, &[("x-management-key", MGMT_KEY)], body).await
}

/// The `Authorization` header of every request the mock received, in order.
fn authorizations(mock: &MockUpstream) -> Vec<String> {
    mock.requests().iter().map(|r| r.header("authorization").to_owned()).collect()
}

#[tokio::test]
async fn added_credential_is_encrypted_used_at_once_survives_restart_and_is_gone_after_delete() {
    let mock = MockUpstream::start(|_| Reply::ok(openai_chat("gpt-4o", "ok"))).await;
    let harness = Harness::new();
    harness.config_with_auth(
        "",
        &encryption(),
        &format!("{}{}", management(""), openai_provider("openai", &mock.url())),
    );
    let mut gateway = harness.start().await;
    let mut logs = String::new();

    // No credential yet: the model answers 503 and nothing goes upstream.
    assert_eq!(chat(&gateway).await, 503, "{}", gateway.logs());
    assert!(mock.requests().is_empty());

    let (status, _, body) = call(
        &gateway,
        Method::POST,
        "/auths",
        Some(json!({"provider": "openai", "type": "api_key", "token": TOKEN,
                    "id": "oa-main", "label": "e2e main"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["id"], "oa-main", "{body}");
    assert_eq!(body["provider"], "openai", "{body}");
    assert_eq!(body["type"], "api_key", "{body}");
    assert_eq!(body["label"], "e2e main", "{body}");
    assert_eq!(body["stored"], "encrypted", "{body}");
    assert!(body["key_id"].as_str().is_some_and(|k| !k.is_empty()), "{body}");
    assert_no_secrets(&body.to_string(), &[TOKEN]);

    // On disk: a version 2 (encrypted) document without the token's bytes.
    let file = harness.auth_dir().join("oa-main.json");
    let bytes = std::fs::read(&file).unwrap();
    assert!(!holds(&bytes, TOKEN), "the token is in {} in plaintext", file.display());
    let document: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(document["version"], 2, "{document}");

    // Used by the very next request, without a restart.
    assert_eq!(chat(&gateway).await, 200, "{}", gateway.logs());
    assert_eq!(authorizations(&mock), [format!("Bearer {TOKEN}")]);

    // Listed without the secret.
    let (status, _, body) = call(&gateway, Method::GET, "/auths", None).await;
    assert_eq!(status, 200, "{body}");
    assert_no_secrets(&body.to_string(), &[TOKEN]);
    let auths = body["auths"].as_array().unwrap();
    assert_eq!(auths.len(), 1, "{body}");
    assert_eq!(auths[0]["id"], "oa-main");
    assert_eq!(auths[0]["provider"], "openai");
    assert_eq!(auths[0]["stored"], "encrypted");

    // It survives a restart.
    gateway.terminate();
    assert_eq!(gateway.wait().await.code(), Some(0), "{}", gateway.logs());
    logs.push_str(&gateway.logs());
    let mut gateway = harness.start().await;
    assert_eq!(chat(&gateway).await, 200, "{}", gateway.logs());
    assert_eq!(authorizations(&mock), [format!("Bearer {TOKEN}"), format!("Bearer {TOKEN}")]);

    // Deleted: the next request has no credential again, and the file is gone.
    let (status, _, body) = call(&gateway, Method::DELETE, "/auths/openai/oa-main", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"deleted": ["oa-main"]}));
    assert_eq!(chat(&gateway).await, 503, "{}", gateway.logs());
    assert_eq!(mock.requests().len(), 2, "a deleted credential was used");
    assert!(!file.exists(), "{} still exists", file.display());
    let (status, _, body) = call(&gateway, Method::DELETE, "/auths/openai/oa-main", None).await;
    assert_eq!(status, 404, "{body}");
    assert!(body["error"].is_object(), "{body}");

    gateway.terminate();
    assert_eq!(gateway.wait().await.code(), Some(0), "{}", gateway.logs());
    logs.push_str(&gateway.logs());
    assert_no_secrets(&logs, &[TOKEN, MGMT_KEY, ENCRYPTION_KEY]);
}

#[tokio::test]
async fn management_api_refuses_no_key_wrong_key_and_bans_the_peer() {
    let demo = "providers:\n  demo: {type: mock, models: [\"mock-*\"]}\n";
    let client = client();

    // Without `management.secret_key` the API does not exist, whatever key is sent.
    let harness = Harness::new();
    harness.config("", demo);
    let gateway = harness.start().await;
    let bearer = format!("Bearer {MGMT_KEY}");
    for headers in
        [&[("x-management-key", MGMT_KEY)][..], &[("authorization", bearer.as_str())][..], &[][..]]
    {
        for (method, path) in [
            (Method::GET, "/auths"),
            (Method::POST, "/auths"),
            (Method::GET, "/auths/export"),
            (Method::DELETE, "/auths/demo"),
        ] {
            let (status, _, body) = send(&client, &gateway, method, path, headers, None).await;
            assert_eq!(status, 404, "{path}: {body}");
        }
    }
    drop(gateway);

    let harness = Harness::new();
    harness.config("", &format!("{}{demo}", management(", max_failures: 3, ban: 30m")));
    let gateway = harness.start().await;
    let get = |headers: &'static [(&'static str, &'static str)]| {
        let client = &client;
        let gateway = &gateway;
        async move { send(client, gateway, Method::GET, "/auths", headers, None).await }
    };
    const GOOD: &[(&str, &str)] = &[("x-management-key", MGMT_KEY)];
    const WRONG_HEADER: &[(&str, &str)] = &[("x-management-key", "cpm-not-the-key-0000000000000")];
    const WRONG_BEARER: &[(&str, &str)] =
        &[("authorization", "Bearer cpm-not-the-key-1111111111111")];

    // No key and a wrong key: 401 with a JSON error.
    let (status, _, body) = get(&[]).await;
    assert_eq!(status, 401, "{body}");
    assert!(body["error"].is_object(), "{body}");
    let (status, _, body) = get(WRONG_BEARER).await;
    assert_eq!(status, 401, "{body}");
    assert!(body["error"].is_object(), "{body}");
    let (status, _, body) = get(GOOD).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["auths"].is_array(), "{body}");

    // Three failures in a row ban the peer, whether or not the success above reset its count.
    // The first of them is answered 401 either way (a ban starts after the failing call).
    let (status, _, body) = get(WRONG_HEADER).await;
    assert_eq!(status, 401, "{body}");
    for wrong in [WRONG_BEARER, WRONG_HEADER] {
        let (status, _, body) = get(wrong).await;
        assert!(status == 401 || status == 403, "{status}: {body}");
    }

    // Banned: the right key is refused, in either header, with how long the ban lasts.
    for headers in [GOOD, &[("authorization", bearer.as_str())][..]] {
        let (status, response_headers, body) =
            send(&client, &gateway, Method::GET, "/auths", headers, None).await;
        assert_eq!(status, 403, "{body}");
        assert!(body["error"].is_object(), "{body}");
        let retry_after: u64 = response_headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no numeric Retry-After: {response_headers:?}"));
        assert!((1..=1800).contains(&retry_after), "Retry-After: {retry_after}");
    }
    // A forwarded-for header does not change who the peer is.
    let (status, _, body) = get(&[
        ("x-management-key", MGMT_KEY),
        ("x-forwarded-for", "10.9.9.9"),
        ("x-real-ip", "10.9.9.9"),
        ("forwarded", "for=10.9.9.9"),
    ])
    .await;
    assert_eq!(status, 403, "{body}");
    let (status, _, body) =
        send(&client, &gateway, Method::POST, "/auths", GOOD, Some(json!({"provider": "demo"})))
            .await;
    assert_eq!(status, 403, "{body}");

    let violation = gateway
        .wait_for_log(|entry| {
            entry["event_type"] == "security_violation"
                && entry["peer"].as_str().is_some_and(|p| p.starts_with("127.0.0.1"))
        })
        .await;
    assert!(violation["failures"].as_u64().is_some_and(|n| n >= 3), "{violation}");

    // The ban is for that peer address only, and only for the management API.
    let other_peer = reqwest::Client::builder()
        .no_proxy()
        .local_address("127.0.0.2".parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap();
    let (status, _, body) = send(&other_peer, &gateway, Method::GET, "/auths", GOOD, None).await;
    assert_eq!(status, 200, "another loopback peer is banned too: {body}");
    let response = client
        .post(format!("{}/v1/chat/completions", gateway.url()))
        .bearer_auth(CLIENT_KEY)
        .json(&json!({"model": "mock-1", "messages": [{"role": "user", "content": "Hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    assert_no_secrets(&gateway.logs(), &[MGMT_KEY]);
}

#[tokio::test]
async fn export_and_delete_by_provider() {
    let refused = refused_url().await;
    let harness = Harness::new();
    harness.config_with_auth(
        "",
        &encryption(),
        &format!(
            "{}{}  claude: {{type: claude, base_url: \"{refused}\", models: [\"claude-*\"]}}\n  demo: {{type: mock, models: [\"mock-*\"]}}\n",
            management(""),
            openai_provider("openai", &refused)
        ),
    );
    let mut gateway = harness.start().await;

    for (provider, id, token) in
        [("openai", "oa-1", TOKEN), ("openai", "oa-2", TOKEN_2), ("claude", "cl-1", TOKEN_3)]
    {
        let (status, _, body) = call(
            &gateway,
            Method::POST,
            "/auths",
            Some(json!({"provider": provider, "token": token, "id": id})),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["stored"], "encrypted", "{body}");
    }

    // Refused: an unknown provider, the built-in mock (it takes no credentials), and an id
    // that would leave auth.dir. Nothing is written for them.
    for (input, what) in [
        (json!({"provider": "nope", "token": "sk-refused-0"}), "unknown provider"),
        (json!({"provider": "demo", "token": "sk-refused-1"}), "mock provider"),
        (json!({"provider": "openai", "token": "sk-refused-2", "id": "../x"}), "path id"),
        (json!({"provider": "openai", "token": "sk-refused-3", "id": ".hidden"}), "hidden id"),
    ] {
        let (status, _, body) = call(&gateway, Method::POST, "/auths", Some(input)).await;
        assert_eq!(status, 400, "{what}: {body}");
        assert!(body["error"].is_object(), "{what}: {body}");
        assert_no_secrets(&body.to_string(), &["sk-refused-"]);
    }
    assert!(!harness.auth_dir().parent().unwrap().join("x.json").exists());

    let (status, headers, body) = call(&gateway, Method::GET, "/auths/export", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers.get("cache-control").unwrap(), "no-store");
    assert_eq!(body["format"], "cliproxy-export", "{body}");
    assert_eq!(body["version"], 1, "{body}");
    let mut exported: Vec<(String, String, String)> = body["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap().to_owned(),
                c["provider"].as_str().unwrap().to_owned(),
                c["token"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    exported.sort();
    let expected: Vec<(String, String, String)> =
        [("cl-1", "claude", TOKEN_3), ("oa-1", "openai", TOKEN), ("oa-2", "openai", TOKEN_2)]
            .iter()
            .map(|(id, p, t)| ((*id).to_owned(), (*p).to_owned(), (*t).to_owned()))
            .collect();
    assert_eq!(exported, expected);
    let oa_1_export =
        body["credentials"].as_array().unwrap().iter().find(|c| c["id"] == "oa-1").unwrap().clone();

    // Deleting by provider deletes exactly that provider's credentials.
    let (status, _, body) = call(&gateway, Method::DELETE, "/auths/openai", None).await;
    assert_eq!(status, 200, "{body}");
    let mut deleted: Vec<&str> =
        body["deleted"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    deleted.sort_unstable();
    assert_eq!(deleted, ["oa-1", "oa-2"]);
    let (status, _, body) = call(&gateway, Method::GET, "/auths", None).await;
    assert_eq!(status, 200, "{body}");
    let left: Vec<&str> =
        body["auths"].as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap()).collect();
    assert_eq!(left, ["cl-1"]);
    assert!(!harness.auth_dir().join("oa-1.json").exists());
    assert!(!harness.auth_dir().join("oa-2.json").exists());
    assert!(harness.auth_dir().join("cl-1.json").exists());
    // Again: a configured provider without credentials deletes nothing.
    let (status, _, body) = call(&gateway, Method::DELETE, "/auths/openai", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"deleted": []}));

    // An exported entry can be posted back as it is.
    let (status, _, body) = call(&gateway, Method::POST, "/auths", Some(oa_1_export)).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["id"], "oa-1", "{body}");
    assert_no_secrets(&body.to_string(), &[TOKEN]);

    gateway.terminate();
    assert_eq!(gateway.wait().await.code(), Some(0), "{}", gateway.logs());
    let logs = gateway.logs();
    assert!(
        gateway
            .log_entries("credentials exported with their secrets")
            .iter()
            .any(|e| e["event_type"] == "credential_access" && e["count"] == 3),
        "{logs}"
    );
    assert_no_secrets(&logs, &[TOKEN, TOKEN_2, TOKEN_3, MGMT_KEY, ENCRYPTION_KEY, "sk-refused-"]);
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) of unix seconds, as `vault list` prints it.
fn utc(seconds: u64) -> String {
    // Days to a civil date: Howard Hinnant's `civil_from_days`.
    let z = i64::try_from(seconds / 86_400).unwrap() + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let rem = seconds % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The `LAST USED (UTC)` column of `vault list` for each id.
async fn last_used_column(harness: &Harness, ids: &[&str]) -> Vec<String> {
    let output = harness.run(&["vault", "list"]).await;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    let header = stdout.lines().next().unwrap_or_default();
    let column = header.find("LAST USED (UTC)").unwrap_or_else(|| panic!("{stdout}"));
    ids.iter()
        .map(|id| {
            let line = stdout
                .lines()
                .find(|line| line.split_whitespace().next() == Some(id))
                .unwrap_or_else(|| panic!("{id} is not listed:\n{stdout}"));
            line.get(column..column + 19).unwrap_or_else(|| panic!("{stdout}")).trim().to_owned()
        })
        .collect()
}

#[tokio::test]
async fn vault_list_shows_last_use_after_shutdown() {
    let mock = MockUpstream::start(|_| Reply::ok(openai_chat("gpt-4o", "ok"))).await;
    let harness = Harness::new();
    harness.config("", &format!("{}{}", management(""), openai_provider("oa", &mock.url())));
    harness.vault_add("oa", "oa-1", TOKEN, None);
    harness.vault_add("oa", "oa-2", TOKEN_2, None);
    assert_eq!(last_used_column(&harness, &["oa-1", "oa-2"]).await, ["never", "never"]);

    // One request uses one of the two (which one is the pool's business); no management
    // call before the shutdown, so only the shutdown can have written the last use.
    let mut gateway = harness.start().await;
    let before = now();
    assert_eq!(chat(&gateway).await, 200, "{}", gateway.logs());
    let seen = authorizations(&mock);
    let (used, unused) = if seen == [format!("Bearer {TOKEN}")] {
        ("oa-1", "oa-2")
    } else {
        assert_eq!(seen, [format!("Bearer {TOKEN_2}")]);
        ("oa-2", "oa-1")
    };
    gateway.terminate();
    assert_eq!(gateway.wait().await.code(), Some(0), "{}", gateway.logs());
    let after = now();

    let columns = last_used_column(&harness, &[used, unused]).await;
    let expected: Vec<String> = (before..=after).map(utc).collect();
    assert!(expected.contains(&columns[0]), "{used}: {:?} not in {expected:?}", columns[0]);
    assert_eq!(columns[1], "never", "{unused}");

    // The management API reports the same time.
    let gateway = harness.start().await;
    let (status, _, body) = call(&gateway, Method::GET, "/auths", None).await;
    assert_eq!(status, 200, "{body}");
    let last_used = |id: &str| {
        body["auths"].as_array().unwrap().iter().find(|a| a["id"] == id).unwrap()["last_used"]
            .clone()
    };
    let at = last_used(used).as_u64().unwrap_or_else(|| panic!("{body}"));
    assert!((before..=after).contains(&at), "{at} not in {before}..={after}");
    assert_eq!(last_used(unused), Value::Null, "{body}");
    assert_no_secrets(&gateway.logs(), &[TOKEN, TOKEN_2]);
}

#[tokio::test]
async fn fingerprint_is_stable_and_sent_upstream() {
    let mock = MockUpstream::start(|_| Reply::ok(openai_chat("gpt-4o", "ok"))).await;
    let harness = Harness::new();
    let providers = openai_provider("oa", &mock.url());
    harness.config("", &providers);
    harness.vault_add("oa", "oa-1", TOKEN, None);

    let mut printed = Vec::new();
    for _ in 0..2 {
        let output = harness.run(&["fingerprint"]).await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{stderr}");
        printed.push(String::from_utf8_lossy(&output.stdout).trim().to_owned());
    }
    let fingerprint = printed[0].clone();
    assert_eq!(printed[1], fingerprint);
    assert!(
        fingerprint.len() == 64
            && fingerprint.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
        "{fingerprint:?}"
    );
    let stored = std::fs::read_to_string(harness.auth_dir().join(".device-fingerprint")).unwrap();
    assert_eq!(stored.trim(), fingerprint);

    // Off by default: nothing is sent.
    let gateway = harness.start().await;
    assert_eq!(chat(&gateway).await, 200, "{}", gateway.logs());
    assert_eq!(mock.requests()[0].header("x-device-fingerprint"), "");
    drop(gateway);

    // On: every proxied request carries it, and a client cannot put its own in its place.
    harness.config_with_auth("", "  device_fingerprint: {enabled: true}\n", &providers);
    let gateway = harness.start().await;
    assert_eq!(chat(&gateway).await, 200, "{}", gateway.logs());
    let response = client()
        .post(format!("{}/v1/chat/completions", gateway.url()))
        .bearer_auth(CLIENT_KEY)
        .header("x-device-fingerprint", "forged-by-the-client")
        .json(&json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let requests = mock.requests();
    assert_eq!(requests.len(), 3);
    for request in &requests[1..] {
        let values: Vec<&[u8]> =
            request.headers.get_all("x-device-fingerprint").iter().map(|v| v.as_bytes()).collect();
        assert_eq!(values, [fingerprint.as_bytes()]);
    }
    let output = harness.run(&["fingerprint"]).await;
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), fingerprint);
}

/// What a writer saw before the gateway died: the last token acknowledged with 201, the one
/// whose request failed, and whether that request had been sent (not refused at connect).
struct Writes {
    acknowledged: String,
    in_flight: String,
    interrupted: bool,
}

/// Posts `oa-1` with tokens `sk-crash-mgmt-rRR-NNNN` one after the other until a request
/// fails; reports each acknowledgement on `acked`.
async fn overwrite_until_gone(
    url: String,
    round: u32,
    previous: String,
    acked: tokio::sync::watch::Sender<u32>,
) -> Writes {
    let client = client();
    let mut acknowledged = previous;
    for index in 0.. {
        let token = format!("sk-crash-mgmt-r{round:02}-{index:04}");
        let sent = client
            .post(format!("{url}/v0/management/auths"))
            .header("x-management-key", MGMT_KEY)
            .json(&json!({"provider": "oa", "id": "oa-1", "token": token}))
            .send()
            .await;
        match sent {
            Ok(response) => {
                assert_eq!(response.status(), 201, "round {round} write {index}");
                acknowledged = token;
                acked.send_replace(index + 1);
            }
            Err(error) => {
                return Writes { acknowledged, in_flight: token, interrupted: !error.is_connect() };
            }
        }
    }
    unreachable!()
}

/// The gateway killed with SIGKILL at random moments while it overwrites one encrypted
/// credential through `POST /auths`, 100 times: afterwards every file decrypts and the
/// credential holds the last acknowledged token or the one in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_during_management_writes_leaves_old_or_new_credential() {
    use cliproxy_core::Secret;
    use cliproxy_vault::{Config, CredentialSecret, EncryptionConfig};

    const ROUNDS: u32 = 100;
    let mock = MockUpstream::start(|_| Reply::ok(openai_chat("gpt-4o", "ok"))).await;
    let harness = Harness::new();
    harness.config_with_auth(
        "",
        &encryption(),
        &format!("{}{}", management(""), openai_provider("oa", &mock.url())),
    );
    let vault = Config {
        dir: harness.auth_dir(),
        encryption: EncryptionConfig {
            enabled: true,
            key: Some(Secret::from(ENCRYPTION_KEY.to_owned())),
            ..Default::default()
        },
        ..Config::default()
    }
    .build()
    .unwrap();
    let token_of = |id: &str| {
        let credential = vault.get(id).unwrap().expect("the credential survives");
        let CredentialSecret::ApiKey(token) = &credential.secret else { unreachable!() };
        token.expose().to_owned()
    };

    let mut current = "sk-crash-mgmt-initial".to_owned();
    let mut gateway = harness.start().await;
    let (status, _, body) = call(
        &gateway,
        Method::POST,
        "/auths",
        Some(json!({"provider": "oa", "id": "oa-1", "token": current})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    gateway.terminate();
    assert_eq!(gateway.wait().await.code(), Some(0), "{}", gateway.logs());

    // A fixed-seed generator: the kill points vary across the run and are reproducible.
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let (mut interrupted, mut landed_unacknowledged) = (0, 0);
    for round in 0..ROUNDS {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let mut gateway = harness.start().await;
        let (acked_tx, mut acked) = tokio::sync::watch::channel(0);
        let writer =
            tokio::spawn(overwrite_until_gone(gateway.url(), round, current.clone(), acked_tx));
        // Kill once 1..=4 writes are acknowledged: the next one is then on its way.
        let target = u32::try_from((seed >> 32) % 4).unwrap() + 1;
        tokio::time::timeout(WAIT, acked.wait_for(|n| *n >= target))
            .await
            .expect("the writes are not acknowledged")
            .expect("the writer stopped early");
        // Fault injection, not synchronisation: land somewhere in the write in flight.
        std::thread::sleep(Duration::from_micros(seed % 4000));
        gateway.kill().await;
        let writes = tokio::time::timeout(WAIT, writer).await.unwrap().unwrap();
        interrupted += u32::from(writes.interrupted);

        // Every credential file decrypts, and oa-1 holds the last acknowledged token or the
        // one in flight; no file in auth.dir (temporary ones included) holds a token in clear.
        assert_eq!(vault.load_all().unwrap().len(), 1, "round {round}");
        let token = token_of("oa-1");
        assert!(
            token == writes.acknowledged || token == writes.in_flight,
            "round {round}: {token} is neither {} nor {}",
            writes.acknowledged,
            writes.in_flight
        );
        landed_unacknowledged += u32::from(token == writes.in_flight);
        for entry in std::fs::read_dir(harness.auth_dir()).unwrap() {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                !holds(&bytes, "sk-crash-mgmt"),
                "round {round}: {} holds a token",
                path.display()
            );
        }
        current = token;
    }
    assert!(interrupted > 0, "no kill interrupted a write in flight");
    eprintln!(
        "{interrupted} of {ROUNDS} kills interrupted a write in flight; {landed_unacknowledged} unacknowledged writes landed"
    );

    // The gateway starts on what the crashes left and serves with the surviving token.
    let gateway = harness.start().await;
    let (status, _, body) = call(&gateway, Method::GET, "/auths", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["auths"][0]["id"], "oa-1", "{body}");
    assert_eq!(body["auths"][0]["stored"], "encrypted", "{body}");
    assert_eq!(chat(&gateway).await, 200, "{}", gateway.logs());
    assert_eq!(authorizations(&mock), [format!("Bearer {current}")]);
}

// The management plane behind a reverse proxy and in reach of web pages (issue 18, items 4
// and 6). The proxy is 127.0.0.1 in `server.trusted_proxies`: what it does to a request that
// matters here is the header it appends, so the tests send that header from 127.0.0.1.

/// A gateway config with 127.0.0.1 as a trusted proxy, the management key (`extra` added to
/// its section) and the mock provider.
fn behind_local_proxy(harness: &Harness, extra: &str) {
    harness.write_config(&format!(
        "server:\n  host: 127.0.0.1\n  port: 0\n  shutdown_timeout: 10s\n  trusted_proxies: [\"127.0.0.1/32\"]\n\
         auth:\n  api_keys:\n    - {{name: e2e, key: \"{CLIENT_KEY}\"}}\n  dir: {dir:?}\n\
         logging: {{level: debug, format: json}}\n{management}\
         providers:\n  demo: {{type: mock, models: [\"mock-*\"]}}\n",
        dir = harness.auth_dir().display().to_string(),
        management = management(extra),
    ));
}

/// A reqwest client whose connections come from `local` (a loopback address).
fn client_from(local: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .local_address(local.parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap()
}

/// The log line of a management ban (the test that bans checks that it is written).
const BANNED_LOG: &str = "management API: address banned after repeated authentication failures";
const GOOD_KEY: (&str, &str) = ("x-management-key", MGMT_KEY);
const BAD_KEY: (&str, &str) = ("x-management-key", "cpm-not-the-key-0000000000000");

#[tokio::test]
async fn forwarded_management_calls_are_refused_and_never_ban_the_proxy() {
    let harness = Harness::new();
    behind_local_proxy(&harness, "");
    let gateway = harness.start().await;
    let client = client();
    let forwarded = ("x-forwarded-for", "203.0.113.9");

    // A remote caller through the proxy, even with the right key: refused, and the answer
    // names the key that would allow it.
    let (status, _, body) =
        send(&client, &gateway, Method::GET, "/status", &[GOOD_KEY, forwarded], None).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.to_string().contains("management.allow_remote"), "{body}");
    for header in [("forwarded", "for=203.0.113.9"), ("x-real-ip", "203.0.113.9")] {
        let (status, _, body) =
            send(&client, &gateway, Method::GET, "/status", &[GOOD_KEY, header], None).await;
        assert_eq!(status, 403, "{header:?}: {body}");
    }

    // Five keyless and five wrong-key calls through the proxy (more than
    // management.max_failures, 5): each refused, none counted against 127.0.0.1.
    for headers in [&[forwarded][..], &[BAD_KEY, forwarded][..]] {
        for _ in 0..5 {
            let (status, _, body) =
                send(&client, &gateway, Method::GET, "/auths", headers, None).await;
            assert_eq!(status, 403, "{body}");
        }
    }
    // The operator on the machine, not through the proxy, still gets in.
    let (status, _, body) =
        send(&client, &gateway, Method::GET, "/status", &[GOOD_KEY], None).await;
    assert_eq!(status, 200, "the proxy's address was banned: {body}");
    assert!(gateway.log_entries(BANNED_LOG).is_empty(), "{}", gateway.logs());
    assert_no_secrets(&gateway.logs(), &[MGMT_KEY]);
}

#[tokio::test]
async fn behind_a_trusted_proxy_with_allow_remote_bans_follow_the_forwarded_client() {
    let harness = Harness::new();
    behind_local_proxy(&harness, ", allow_remote: true, max_failures: 2");
    let gateway = harness.start().await;
    let client = client();
    let from = |ip: &'static str| ("x-forwarded-for", ip);

    // The remote client 203.0.113.9 is let in with the key and banned after two wrong keys.
    let (status, _, body) =
        send(&client, &gateway, Method::GET, "/status", &[GOOD_KEY, from("203.0.113.9")], None)
            .await;
    assert_eq!(status, 200, "{body}");
    for _ in 0..2 {
        let (status, _, body) =
            send(&client, &gateway, Method::GET, "/status", &[BAD_KEY, from("203.0.113.9")], None)
                .await;
        assert_eq!(status, 401, "{body}");
    }
    let (status, _, body) =
        send(&client, &gateway, Method::GET, "/status", &[GOOD_KEY, from("203.0.113.9")], None)
            .await;
    assert_eq!(status, 403, "{body}");
    // The ban is the client's: another client behind the proxy and the proxy's own address
    // are not banned.
    let (status, _, body) =
        send(&client, &gateway, Method::GET, "/status", &[GOOD_KEY, from("203.0.113.10")], None)
            .await;
    assert_eq!(status, 200, "{body}");
    let (status, _, body) =
        send(&client, &gateway, Method::GET, "/status", &[GOOD_KEY], None).await;
    assert_eq!(status, 200, "the proxy's own address was banned: {body}");
    let (status, _, body) = call(&gateway, Method::GET, "/security/bans", None).await;
    assert_eq!(status, 200, "{body}");
    let banned: Vec<&str> =
        body["bans"].as_array().unwrap().iter().map(|b| b["ip"].as_str().unwrap()).collect();
    assert_eq!(banned, ["203.0.113.9"], "{body}");
}

#[tokio::test]
async fn header_less_gets_do_not_ban_and_browser_requests_are_refused() {
    let harness = Harness::new();
    harness.config(
        "",
        &format!("{}providers:\n  demo: {{type: mock, models: [\"mock-*\"]}}\n", management("")),
    );
    let gateway = harness.start().await;
    // What an `<img src>` or a no-cors `fetch` sends: a GET with no key at all, ten times
    // (twice management.max_failures).
    let bare = reqwest::Client::builder().no_proxy().build().unwrap();
    for _ in 0..10 {
        let response =
            bare.get(format!("{}/v0/management/auths", gateway.url())).send().await.unwrap();
        assert_eq!(response.status(), 401);
    }
    let (status, _, body) = call(&gateway, Method::GET, "/status", None).await;
    assert_eq!(status, 200, "header-less GETs banned loopback: {body}");

    // A request with an Origin header is refused, with the right key too, and wrong keys sent
    // with one do not count toward a ban either.
    let origin = ("origin", "http://evil.example");
    let (status, _, body) =
        send(&client(), &gateway, Method::GET, "/status", &[GOOD_KEY, origin], None).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.to_string().contains("Origin"), "{body}");
    for _ in 0..6 {
        let (status, _, body) =
            send(&client(), &gateway, Method::DELETE, "/auths/demo", &[BAD_KEY, origin], None)
                .await;
        assert_eq!(status, 403, "{body}");
    }
    let (status, _, body) = call(&gateway, Method::GET, "/status", None).await;
    assert_eq!(status, 200, "{body}");

    // A wrong key still counts: five ban the address.
    for _ in 0..5 {
        let (status, _, body) =
            send(&client(), &gateway, Method::GET, "/status", &[BAD_KEY], None).await;
        assert_eq!(status, 401, "{body}");
    }
    let (status, _, body) = call(&gateway, Method::GET, "/status", None).await;
    assert_eq!(status, 403, "{body}");
    let banned = gateway.wait_for_log(|entry| entry["msg"] == BANNED_LOG).await;
    assert_eq!(banned["client"], "127.0.0.1", "{banned}");
}

/// `cliproxy-server bans ARGS` with the harness's config; exit code and standard output.
async fn bans_cli(harness: &Harness, args: &[&str]) -> (Option<i32>, String) {
    let mut all = vec!["bans"];
    all.extend_from_slice(args);
    let output = harness.run(&all).await;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    (output.status.code(), format!("{stdout}{stderr}"))
}

#[tokio::test]
async fn bans_are_listed_and_lifted_through_the_api_and_offline() {
    let harness = Harness::new();
    harness.config(
        "",
        &format!(
            "{}providers:\n  demo: {{type: mock, models: [\"mock-*\"]}}\n",
            management(", max_failures: 2, ban: 30m")
        ),
    );
    let mut gateway = harness.start().await;
    let other = client_from("127.0.0.2");

    // 127.0.0.2 banned by two wrong keys; listed; lifted through the API; let in again.
    for _ in 0..2 {
        let (status, _, body) =
            send(&other, &gateway, Method::GET, "/status", &[BAD_KEY], None).await;
        assert_eq!(status, 401, "{body}");
    }
    let (status, _, body) = send(&other, &gateway, Method::GET, "/status", &[GOOD_KEY], None).await;
    assert_eq!(status, 403, "{body}");
    let (status, _, body) = call(&gateway, Method::GET, "/security/bans", None).await;
    assert_eq!(status, 200, "{body}");
    let bans = body["bans"].as_array().unwrap();
    assert_eq!(bans.len(), 1, "{body}");
    assert_eq!(bans[0]["ip"], "127.0.0.2", "{body}");
    let until = bans[0]["until"].as_u64().unwrap();
    assert!((now() + 1700..=now() + 1800).contains(&until), "{body}");
    let (status, _, body) = call(&gateway, Method::DELETE, "/security/bans/127.0.0.2", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["lifted"], "127.0.0.2", "{body}");
    let (status, _, body) = call(&gateway, Method::DELETE, "/security/bans/127.0.0.2", None).await;
    assert_eq!(status, 404, "{body}");
    let (status, _, body) = send(&other, &gateway, Method::GET, "/status", &[GOOD_KEY], None).await;
    assert_eq!(status, 200, "{body}");

    // The operator locks themselves out: 127.0.0.1 banned, so the API cannot lift it.
    for _ in 0..2 {
        let (status, _, body) =
            send(&client(), &gateway, Method::GET, "/status", &[BAD_KEY], None).await;
        assert_eq!(status, 401, "{body}");
    }
    let (status, _, body) = call(&gateway, Method::GET, "/security/bans", None).await;
    assert_eq!(status, 403, "{body}");
    // Stopped, the ban is in the state store: listed and lifted offline.
    gateway.terminate();
    assert_eq!(gateway.wait().await.code(), Some(0), "{}", gateway.logs());
    let (code, out) = bans_cli(&harness, &["list"]).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("127.0.0.1"), "{out}");
    assert!(!out.contains("127.0.0.2"), "a lifted ban is still stored: {out}");
    let (code, out) = bans_cli(&harness, &["lift", "10.1.2.3"]).await;
    assert_eq!(code, Some(1), "lifting a ban that does not exist: {out}");
    let (code, out) = bans_cli(&harness, &["lift", "not-an-ip"]).await;
    assert_eq!(code, Some(2), "{out}");
    let (code, out) = bans_cli(&harness, &["lift", "127.0.0.1"]).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("lifted"), "{out}");
    let (code, out) = bans_cli(&harness, &["list"]).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(!out.contains("127.0.0.1"), "{out}");

    // Restarted, the operator gets in.
    let gateway = harness.start().await;
    let (status, _, body) = call(&gateway, Method::GET, "/status", None).await;
    assert_eq!(status, 200, "{body}\n{}", gateway.logs());
    assert_no_secrets(&gateway.logs(), &[MGMT_KEY]);
}

#[tokio::test]
async fn check_fails_a_loopback_trusted_proxy_with_a_loopback_only_management_api() {
    let harness = Harness::new();
    let run = || async {
        let output = harness.run(&["check"]).await;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let row = stdout
            .lines()
            .skip_while(|line| !line.starts_with("management API"))
            .take(2)
            .collect::<Vec<_>>()
            .join("\n");
        (output.status.code(), row, stdout)
    };
    behind_local_proxy(&harness, "");
    let (code, row, stdout) = run().await;
    assert_eq!(code, Some(1), "{stdout}");
    assert!(row.contains("FAIL"), "{stdout}");
    for key in ["server.trusted_proxies", "management.allow_remote", "management.secret_key"] {
        assert!(row.contains(key), "the row does not name {key}: {row}");
    }
    // The same gateway without the loopback proxy: the row passes.
    let config = std::fs::read_to_string(harness.config_path()).unwrap();
    harness.write_config(&config.replace("\"127.0.0.1/32\"", "\"10.0.0.5/32\""));
    let (_, row, stdout) = run().await;
    assert!(row.contains("pass"), "{stdout}");
}

/// The config of the flood tests: the management key, the audit log at `audit`, and the
/// per-IP bucket `rate_limiting` (`enabled: false` or its settings).
fn flood_config(harness: &Harness, audit: &std::path::Path, rate_limiting: &str) {
    let yaml = format!(
        "server:\n  host: 127.0.0.1\n  port: 0\n  shutdown_timeout: 10s\n\
         \x20 security:\n    rate_limiting: {{{rate_limiting}}}\n\
         auth:\n  api_keys:\n    - {{name: e2e, key: \"{CLIENT_KEY}\"}}\n  dir: {dir:?}\n\
         logging: {{level: debug, format: json, audit: {{enabled: true, file: {audit:?}}}}}\n\
         {mgmt}providers:\n  demo: {{type: mock, models: [\"mock-*\"]}}\n",
        dir = harness.auth_dir().display().to_string(),
        audit = audit.display().to_string(),
        mgmt = management(""),
    );
    harness.write_config(&yaml);
}

#[tokio::test]
async fn three_thousand_refused_calls_on_one_connection_write_a_bounded_audit_log() {
    const CALLS: u64 = 3_000;
    let harness = Harness::new();
    let audit = harness.auth_dir().with_file_name("audit.log");
    // Per-IP limiting off (the default): the audit log must stay bounded by itself.
    flood_config(&harness, &audit, "enabled: false");
    let mut gateway = harness.start().await;
    let client = client();
    let started = std::time::Instant::now();
    for _ in 0..CALLS {
        let (status, _, body) =
            send(&client, &gateway, Method::GET, "/status", &[BAD_KEY], None).await;
        // 401 until the ban starts (management.max_failures), 403 after.
        assert!(status == 401 || status == 403, "{status}: {body}");
    }
    let elapsed = started.elapsed();
    let seconds = elapsed.as_secs();
    // A graceful stop writes every pending line (the summaries of the last beat too).
    gateway.terminate();
    assert!(gateway.wait().await.success(), "{}", gateway.logs());
    let text = std::fs::read_to_string(&audit).unwrap();
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let failures: Vec<&Value> =
        lines.iter().filter(|l| l["event_type"] == "auth_failure").collect();
    // The bound: one line per wall-clock second the flood touched (at most `seconds` + 2 of
    // them), written as it happens, and one `repeated` summary per housekeeping beat (500 ms
    // by default, and one at shutdown) listing the refusals left out; every refusal is still
    // accounted for in them.
    let beats = elapsed.as_millis() as u64 / 500 + 2;
    assert!(
        failures.len() as u64 <= seconds + 2 + beats,
        "{} auth_failure lines for {CALLS} refusals in {elapsed:?}",
        failures.len()
    );
    // A line is one refusal; a `repeated` line (written at each beat for the refusals left
    // out since the last one) only carries their count.
    let accounted: u64 = failures
        .iter()
        .map(|l| {
            u64::from(l["result"] != "repeated") + l["details"]["repeats"].as_u64().unwrap_or(0)
        })
        .sum();
    assert_eq!(accounted, CALLS, "{text}");
    // Everything else: the start, the one ban, the shutdown (a handful of lines).
    assert!(lines.len() as u64 <= seconds + 2 + beats + 10, "{} audit lines", lines.len());
}

#[tokio::test]
async fn refused_management_calls_past_the_per_ip_limit_are_answered_429() {
    let harness = Harness::new();
    let audit = harness.auth_dir().with_file_name("audit.log");
    flood_config(&harness, &audit, "enabled: true, requests_per_second: 1, burst: 3");
    let gateway = harness.start().await;
    let client = client();
    // Calls with the right key are not charged: the operator, and a monitor polling
    // `/status`, get in however often they call.
    for _ in 0..6 {
        let (status, _, body) =
            send(&client, &gateway, Method::GET, "/status", &[GOOD_KEY], None).await;
        assert_eq!(status, 200, "{body}");
    }
    // Refused calls are: the burst (3) is answered 401, then the bucket refuses (at most one
    // token comes back per second, so of ten calls in a row at most a few more pass).
    let mut statuses = Vec::new();
    for _ in 0..10 {
        let (status, headers, _) = send(&client, &gateway, Method::GET, "/status", &[], None).await;
        if status == 429 {
            assert!(headers.contains_key("retry-after"), "{headers:?}");
        }
        statuses.push(status);
    }
    assert_eq!(&statuses[..3], &[401, 401, 401], "{statuses:?}");
    assert!(statuses.iter().filter(|s| **s == 429).count() >= 5, "{statuses:?}");
    // The address's client API budget is spent too: the refusals came from it.
    let (status, _, _) = send(&client, &gateway, Method::GET, "/status", &[GOOD_KEY], None).await;
    assert_eq!(status, 200, "the operator is locked out by a flood of refused calls");
    let refused = gateway
        .wait_for_log(|entry| {
            entry["msg"] == "request refused" && entry["rejection"] == "per_ip_rate_limit"
        })
        .await;
    assert_eq!(refused["ip"], "127.0.0.1", "{refused}");
}
