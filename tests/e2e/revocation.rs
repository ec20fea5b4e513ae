//! The first incident step of `docs/security/operations.md`, "a client key leaked: remove it
//! from `auth.api_keys`, reload", done as an operator does it against the real binary: once
//! with `POST /v0/management/config/reload` and once with `kill -HUP`. (The gateway does not
//! watch its config file: these are its two ways to reload.) The leaked key works before,
//! is refused with 401 in each API's error format after, the other key keeps working, and
//! the reload is in the log and in the audit log as `config_change` naming the changed paths.

use std::path::Path;
use std::time::Duration;

use cliproxy_e2e::*;
use serde_json::{Value, json};

use crate::assert_no_secrets;

const LEAKED_KEY: &str = "cpk-e2e-leaked-key-0d6e4b21f9a8c375";
const MGMT_KEY: &str = "mgmt-e2e-revocation-key-2c7d90b41e6f";

/// The config: the test's own key `e2e` first, the key `leaked` second (so removing it
/// changes the paths `auth.api_keys[1].*`), the built-in mock provider, an audit file.
fn write_config(harness: &Harness, audit: &Path, with_leaked: bool) {
    let leaked = if with_leaked {
        format!("    - {{name: leaked, key: \"{LEAKED_KEY}\"}}\n")
    } else {
        String::new()
    };
    harness.write_config(&format!(
        "server:\n  host: 127.0.0.1\n  port: 0\n  shutdown_timeout: 10s\n\
         auth:\n  api_keys:\n    - {{name: e2e, key: \"{CLIENT_KEY}\"}}\n{leaked}\
         \x20 dir: {dir:?}\n\
         logging: {{level: debug, format: json, audit: {{enabled: true, file: {audit:?}}}}}\n\
         management: {{secret_key: \"{MGMT_KEY}\"}}\n\
         providers:\n  demo: {{type: mock, models: [\"mock-*\"]}}\n",
        dir = harness.auth_dir().display().to_string(),
        audit = audit.display().to_string(),
    ));
}

/// An OpenAI-format and an Anthropic-format call with `key`: each status and body.
async fn call_both(gateway: &Gateway, key: &str) -> [(u16, Value); 2] {
    let client = client();
    let openai = client
        .post(format!("{}/v1/chat/completions", gateway.url()))
        .bearer_auth(key)
        .json(&json!({"model": "mock-gpt", "messages": [{"role": "user", "content": "Hi"}]}))
        .send()
        .await
        .unwrap();
    let anthropic = client
        .post(format!("{}/v1/messages", gateway.url()))
        .header("x-api-key", key)
        .json(&json!({"model": "mock-claude", "max_tokens": 16,
                      "messages": [{"role": "user", "content": "Hi"}]}))
        .send()
        .await
        .unwrap();
    let mut answers = Vec::new();
    for response in [openai, anthropic] {
        let status = response.status().as_u16();
        answers.push((status, response.json::<Value>().await.unwrap()));
    }
    answers.try_into().unwrap()
}

/// The audit file's `config_change` lines. The file is written by the audit thread off the
/// request path and nothing signals a write, so this polls, bounded by [`WAIT`].
async fn config_changes(audit: &Path, count: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        // Only complete lines: the writer may be half-way through the last one.
        let lines: Vec<Value> = std::fs::read_to_string(audit)
            .unwrap_or_default()
            .split_inclusive('\n')
            .filter(|line| line.ends_with('\n'))
            .map(|line| serde_json::from_str(line).unwrap())
            .filter(|line: &Value| line["event_type"] == "config_change")
            .collect();
        if lines.len() >= count {
            return lines;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} config_change lines in the audit file, expected {count}",
            lines.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Trigger {
    ManagementApi,
    Sighup,
}

async fn revoke_a_leaked_key(trigger: Trigger) {
    let harness = Harness::new();
    let audit = harness.auth_dir().with_file_name("audit").join("audit.log");
    write_config(&harness, &audit, true);
    let gateway = harness.start().await;

    // Before: both keys work, in both formats.
    for key in [LEAKED_KEY, CLIENT_KEY] {
        for (status, body) in call_both(&gateway, key).await {
            assert_eq!(status, 200, "{body}");
        }
    }

    // The incident step: remove the key from the file, reload.
    write_config(&harness, &audit, false);
    let trigger_name = match trigger {
        Trigger::ManagementApi => {
            let (status, report) =
                manage_with(&gateway, MGMT_KEY, reqwest::Method::POST, "/config/reload", None)
                    .await;
            assert_eq!(status, 200, "{report}");
            assert_eq!(report["applied"], json!(["auth.api_keys[1].key", "auth.api_keys[1].name"]));
            assert_eq!(report["restart_required"], json!([]));
            "management API"
        }
        Trigger::Sighup => {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(gateway.pid()).unwrap());
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
            "SIGHUP"
        }
    };
    // The reload is logged once the new key list is in force: wait for that line.
    let logged = gateway
        .wait_for_log(|e| e["msg"] == "configuration reloaded" && e["trigger"] == trigger_name)
        .await;
    assert_eq!(logged["applied"], "auth.api_keys[1].key, auth.api_keys[1].name", "{logged}");

    // After: the leaked key is refused from the next request on, in each endpoint's format.
    let [(status, openai), (anthropic_status, anthropic)] = call_both(&gateway, LEAKED_KEY).await;
    assert_eq!(status, 401, "{openai}");
    assert_eq!(openai["error"]["type"], "authentication_error", "{openai}");
    assert_eq!(openai["error"]["code"], "invalid_api_key", "{openai}");
    assert!(openai["error"]["message"].is_string(), "{openai}");
    assert_eq!(anthropic_status, 401, "{anthropic}");
    assert_eq!(anthropic["type"], "error", "{anthropic}");
    assert_eq!(anthropic["error"]["type"], "authentication_error", "{anthropic}");
    // The other key still works.
    for (status, body) in call_both(&gateway, CLIENT_KEY).await {
        assert_eq!(status, 200, "{body}");
    }

    // The audit record operations.md promises: `config_change`, action reload, the trigger
    // and the changed paths.
    let changes = config_changes(&audit, 1).await;
    let reload = changes
        .iter()
        .find(|line| line["details"]["action"] == "reload")
        .unwrap_or_else(|| panic!("no reload event: {changes:#?}"));
    assert_eq!(reload["result"], "success", "{reload}");
    assert_eq!(reload["details"]["trigger"], trigger_name, "{reload}");
    assert_eq!(
        reload["details"]["changed"],
        json!(["auth.api_keys[1].key", "auth.api_keys[1].name"]),
        "{reload}"
    );

    let audit_text = std::fs::read_to_string(&audit).unwrap();
    assert_no_secrets(
        &format!("{}{audit_text}", gateway.logs()),
        &[LEAKED_KEY, CLIENT_KEY, MGMT_KEY],
    );
}

#[tokio::test]
async fn a_leaked_key_is_revoked_by_a_management_reload() {
    revoke_a_leaked_key(Trigger::ManagementApi).await;
}

#[tokio::test]
async fn a_leaked_key_is_revoked_by_sighup() {
    revoke_a_leaked_key(Trigger::Sighup).await;
}

const ENCRYPTION_KEY: &str = "mXb0cT3k1c9yQ6e2v1Z4nJ8rW5aH7uL0pS3dF6gK9jE=";
/// A key the gateway is not configured with: a file sealed under it is "foreign".
const FOREIGN_KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const LEAKED_TOKEN: &str = "sk-e2e-revoked-provider-token-5a1f";
const GOOD_TOKEN: &str = "sk-e2e-kept-provider-token-6b2e";
const FOREIGN_TOKEN: &str = "sk-e2e-foreign-provider-token-7c3d";

/// The second incident step of `docs/security/operations.md`, "a provider credential
/// leaked: `DELETE /v0/management/auths/{provider}/{id}`", while another credential file is
/// damaged (its bytes overwritten after the gateway loaded it) and a third is sealed under a
/// key the gateway does not have. Revocation must not depend on the other files being
/// readable: the listing answers 200 with the unreadable files marked as such (never their
/// content), the leaked credential is deleted and leaves the pool at once, and a provider-wide
/// delete removes what is known to be the provider's and reports what it left.
#[tokio::test]
async fn a_leaked_provider_credential_is_revoked_while_another_file_is_unreadable() {
    let mock = MockUpstream::start(|_| Reply::ok(canned::openai_chat("gpt-4o", "ok"))).await;
    let harness = Harness::new();
    harness.config_with_auth(
        "",
        &format!("  encryption: {{enabled: true, key: \"{ENCRYPTION_KEY}\"}}\n"),
        &format!(
            "management: {{secret_key: \"{MGMT_KEY}\"}}\n\
             providers:\n  oa: {{type: openai, base_url: \"{}\", models: [\"gpt-*\"]}}\n",
            mock.url()
        ),
    );
    harness.vault_add("oa", "oa-leaked", LEAKED_TOKEN, None);
    harness.vault_add("oa", "oa-good", GOOD_TOKEN, None);
    let gateway = harness.start().await;

    // At run time: `oa-good.json` is damaged (the gateway still holds the credential in its
    // pool), and `oa-foreign.json` is sealed under a key the gateway was never given.
    std::fs::write(harness.auth_dir().join("oa-good.json"), b"{\"format\": \"cliproxy-cred")
        .unwrap();
    let foreign_dir = harness.auth_dir().with_file_name("foreign");
    let foreign = cliproxy_vault::Config {
        dir: foreign_dir.clone(),
        encryption: cliproxy_vault::EncryptionConfig {
            enabled: true,
            key: Some(cliproxy_core::Secret::from(FOREIGN_KEY.to_owned())),
            ..Default::default()
        },
        ..Default::default()
    }
    .build()
    .unwrap();
    let credential = cliproxy_vault::Credential::new_api_key(
        "oa",
        cliproxy_core::Secret::from(FOREIGN_TOKEN.to_owned()),
    )
    .unwrap()
    .with_id("oa-foreign")
    .unwrap();
    foreign.put(&credential).unwrap();
    std::fs::copy(foreign_dir.join("oa-foreign.json"), harness.auth_dir().join("oa-foreign.json"))
        .unwrap();

    // The listing: 200, every file, the unreadable ones as such.
    let (status, listed) =
        manage_with(&gateway, MGMT_KEY, reqwest::Method::GET, "/auths", None).await;
    assert_eq!(status, 200, "{listed}");
    let entries = listed["auths"].as_array().unwrap();
    let ids: Vec<&str> = entries.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["oa-foreign", "oa-good", "oa-leaked"], "{listed}");
    assert_eq!(entries[0]["readable"], false, "{listed}");
    assert_eq!(entries[0]["reason"], "unknown_key", "{listed}");
    assert_eq!(entries[1]["readable"], false, "{listed}");
    assert_eq!(entries[1]["reason"], "malformed", "{listed}");
    assert_eq!(entries[2]["readable"], true, "{listed}");
    assert_eq!(entries[2]["provider"], "oa", "{listed}");

    // Revocation of the leaked credential: deleted, and no request uses it any more.
    let (status, deleted) =
        manage_with(&gateway, MGMT_KEY, reqwest::Method::DELETE, "/auths/oa/oa-leaked", None).await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(deleted["deleted"], json!(["oa-leaked"]), "{deleted}");
    assert!(!harness.auth_dir().join("oa-leaked.json").exists());
    let before = mock.requests().len();
    for _ in 0..4 {
        let response = client()
            .post(format!("{}/v1/chat/completions", gateway.url()))
            .bearer_auth(CLIENT_KEY)
            .json(&json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let used: Vec<String> =
        mock.requests()[before..].iter().map(|r| r.header("authorization").to_owned()).collect();
    assert_eq!(used, vec![format!("Bearer {GOOD_TOKEN}"); 4]);

    // Provider-wide: `oa-good` is unreadable but the gateway's pool knows it is `oa`'s, so it
    // goes (file and pool); `oa-foreign` names no provider anyone can read and is left, and
    // reported.
    let (status, deleted) =
        manage_with(&gateway, MGMT_KEY, reqwest::Method::DELETE, "/auths/oa", None).await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(deleted["deleted"], json!(["oa-good"]), "{deleted}");
    assert_eq!(deleted["unreadable_left"][0]["id"], "oa-foreign", "{deleted}");
    assert_eq!(deleted["unreadable_left"][0]["reason"], "unknown_key", "{deleted}");
    assert!(!harness.auth_dir().join("oa-good.json").exists());
    assert!(harness.auth_dir().join("oa-foreign.json").exists());
    let response = client()
        .post(format!("{}/v1/chat/completions", gateway.url()))
        .bearer_auth(CLIENT_KEY)
        .json(&json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);

    // The unreadable one is also deleted by its id, the way to clean it up.
    let (status, deleted) =
        manage_with(&gateway, MGMT_KEY, reqwest::Method::DELETE, "/auths/oa/oa-foreign", None)
            .await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(deleted["deleted"], json!(["oa-foreign"]), "{deleted}");
    assert!(!harness.auth_dir().join("oa-foreign.json").exists());

    assert_no_secrets(
        &format!("{}{listed}", gateway.logs()),
        &[LEAKED_TOKEN, GOOD_TOKEN, FOREIGN_TOKEN, ENCRYPTION_KEY, FOREIGN_KEY, MGMT_KEY],
    );
}
