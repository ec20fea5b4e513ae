//! Failover to the next credential: on an upstream 429 (the first credential is cooled down
//! for its `Retry-After`, for that model), a refused connection, a key the provider calls
//! invalid or out of credit, 5xx and a success that is not an API answer; and what each API
//! format's client gets when every credential is cooling down.

use cliproxy_e2e::canned::*;
use cliproxy_e2e::faulty::{FaultyUpstream, Step, head};
use cliproxy_e2e::*;
use serde_json::{Value, json};

use crate::assert_no_secrets;

const TOKEN_A: &str = "sk-vault-first-credential-aaaa";
const TOKEN_B: &str = "sk-vault-second-credential-bbbb";
const TOKEN_C: &str = "sk-vault-refused-credential-cccc";
const TOKEN_D: &str = "sk-vault-working-credential-dddd";

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "Hi"}]})
}

#[tokio::test]
async fn fails_over_on_429_and_on_a_refused_connection() {
    // The upstream rate-limits the first credential and serves the others.
    let mock = MockUpstream::start(|request| {
        if request.header("authorization") == format!("Bearer {TOKEN_A}") {
            Reply::Json {
                status: 429,
                headers: vec![("retry-after", "120".to_owned())],
                body: json!({"error": {"message": "slow down", "type": "rate_limit_error"}})
                    .to_string(),
            }
        } else {
            let body: Value = serde_json::from_slice(&request.body).unwrap_or_default();
            Reply::ok(openai_chat(body["model"].as_str().unwrap_or(""), "served"))
        }
    })
    .await;
    let refused = refused_url().await;
    let harness = Harness::new();
    let url = mock.url();
    harness.config(
        "",
        &format!(
            "providers:\n  limited: {{type: openai, base_url: \"{url}\", models: [\"limited-*\"]}}\n  \
             flaky: {{type: openai, base_url: \"{url}\", models: [\"flaky-*\"]}}\n"
        ),
    );
    // Credentials are tried in id order, round-robin: `-a` first.
    harness.vault_add("limited", "limited-a", TOKEN_A, None);
    harness.vault_add("limited", "limited-b", TOKEN_B, None);
    harness.vault_add("flaky", "flaky-a", TOKEN_C, Some(&refused));
    harness.vault_add("flaky", "flaky-b", TOKEN_D, None);
    let gateway = harness.start().await;
    let client = client();
    let send = |model: &'static str| {
        client
            .post(format!("{}/v1/chat/completions", gateway.url()))
            .bearer_auth(CLIENT_KEY)
            .json(&chat(model))
            .send()
    };

    // 429 on the first credential, the second serves the request.
    let response = send("limited-1").await.unwrap();
    assert_eq!(response.status(), 200);
    let request_id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(
        response.json::<Value>().await.unwrap()["choices"][0]["message"]["content"],
        "served"
    );
    let tokens: Vec<String> =
        mock.requests().iter().map(|r| r.header("authorization").to_owned()).collect();
    assert_eq!(tokens, [format!("Bearer {TOKEN_A}"), format!("Bearer {TOKEN_B}")]);
    let log = gateway
        .wait_for_log(|e| e["msg"] == "request" && e["request_id"] == request_id.as_str())
        .await;
    assert_eq!(
        (log["attempts"].as_u64(), log["credential"].as_str()),
        (Some(2), Some("limited-b")),
        "{log}"
    );

    // The first credential is cooling down for its Retry-After, for that model (the
    // provider's limits are per model): the next requests for it go straight to the second.
    for _ in 0..2 {
        assert_eq!(send("limited-1").await.unwrap().status(), 200);
    }
    let tokens: Vec<String> =
        mock.requests().iter().skip(2).map(|r| r.header("authorization").to_owned()).collect();
    assert_eq!(tokens, [format!("Bearer {TOKEN_B}"), format!("Bearer {TOKEN_B}")]);

    // Connection refused on the first credential's base URL: the second serves it.
    let before = mock.requests().len();
    let response = send("flaky-1").await.unwrap();
    assert_eq!(response.status(), 200);
    let request_id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    let requests = mock.requests();
    assert_eq!(requests.len(), before + 1);
    assert_eq!(requests[before].header("authorization"), format!("Bearer {TOKEN_D}"));
    let log = gateway
        .wait_for_log(|e| e["msg"] == "request" && e["request_id"] == request_id.as_str())
        .await;
    assert_eq!(
        (log["attempts"].as_u64(), log["credential"].as_str()),
        (Some(2), Some("flaky-b")),
        "{log}"
    );

    assert_no_secrets(&gateway.logs(), &[CLIENT_KEY, TOKEN_A, TOKEN_B, TOKEN_C, TOKEN_D]);
}

const MGMT_KEY: &str = "mgmt-e2e-failover-key-8d2e61c0b7a94f35";

/// One upstream fault answered by a provider's first credential.
struct Fault {
    /// The provider's name; its credentials are `NAME-a` (the faulty one) and `NAME-b`.
    name: &'static str,
    status: u16,
    content_type: &'static str,
    body: &'static str,
    /// How long `docs/security/faults.md` says the first credential rests afterwards, in
    /// milliseconds (a key the provider calls invalid or out of credit: 5 minutes); `None`
    /// where it must not rest at all.
    cooldown: Option<u64>,
}

const FAULTS: [Fault; 5] = [
    Fault {
        name: "rejected",
        status: 401,
        content_type: "application/json",
        body: r#"{"error": {"message": "Incorrect API key provided", "type": "invalid_request_error", "code": "invalid_api_key"}}"#,
        cooldown: Some(300_000),
    },
    Fault {
        // The account is out of credit: the credential's fault although it is a 429.
        name: "exhausted",
        status: 429,
        content_type: "application/json",
        body: r#"{"error": {"message": "You exceeded your current quota, please check your plan and billing details.", "type": "insufficient_quota", "param": null, "code": "insufficient_quota"}}"#,
        cooldown: Some(300_000),
    },
    Fault {
        name: "failing",
        status: 500,
        content_type: "application/json",
        body: r#"{"error": {"message": "The server had an error", "type": "server_error"}}"#,
        cooldown: None,
    },
    Fault {
        name: "overloaded",
        status: 503,
        content_type: "text/html",
        body: "<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>",
        cooldown: None,
    },
    Fault {
        // A captive portal or a misconfigured proxy: a success that is not an API answer.
        name: "portal",
        status: 200,
        content_type: "text/html; charset=utf-8",
        body: "<!doctype html><html><body>Please sign in to the network</body></html>",
        cooldown: None,
    },
];

fn token_a(name: &str) -> String {
    format!("sk-vault-{name}-first-a1b2c3d4")
}

fn token_b(name: &str) -> String {
    format!("sk-vault-{name}-second-e5f6a7b8")
}

/// `(cooling_down, cooldown_remaining_ms)` of credential `id`, per `GET /v0/management/auths`.
async fn cooldown_of(gateway: &Gateway, id: &str) -> (bool, Option<u64>) {
    let (status, body) = manage_with(gateway, MGMT_KEY, reqwest::Method::GET, "/auths", None).await;
    assert_eq!(status, 200, "{body}");
    let entry = body["auths"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == id)
        .unwrap_or_else(|| panic!("{id} not listed: {body}"))
        .clone();
    (
        entry["cooling_down"].as_bool().unwrap_or_else(|| panic!("no cooling_down: {entry}")),
        entry["cooldown_remaining_ms"].as_u64(),
    )
}

/// 401 `invalid_api_key`, 429 `insufficient_quota`, 5xx (JSON and HTML) and a 200 that is not
/// an API answer on the first credential: the request fails over to the second, whose answer
/// the client gets; the upstream saw both tokens in that order; and only the credential's own
/// faults (the provider says the key is invalid or out of credit) make it rest, as
/// `docs/security/faults.md` decides (a 5xx from the provider's base URL or a non-API reply is
/// the provider's fault). A 4xx the client caused is not failed over at all: see
/// `bins/cliproxy-server/tests/failover.rs` and the hostile catalogue.
/// The upstream is the raw scripted one, which can answer any status with any content type.
#[tokio::test]
async fn fails_over_on_401_403_5xx_and_a_non_api_success() {
    let mock = FaultyUpstream::start(|request| {
        let fault = FAULTS.iter().find(|fault| request.contains(&token_a(fault.name)));
        let (status, content_type, body) = match fault {
            Some(fault) => (fault.status, fault.content_type, fault.body.to_owned()),
            None => {
                (200, "application/json", openai_chat("gpt-4o", "served by the second").to_string())
            }
        };
        let mut reply = head(status, content_type, Some(body.len() as u64));
        reply.extend_from_slice(body.as_bytes());
        vec![Step::Send(reply)]
    })
    .await;
    let harness = Harness::new();
    let url = mock.url();
    let providers: String = FAULTS
        .iter()
        .map(|f| {
            format!(
                "  {0}: {{type: openai, base_url: \"{url}/{0}\", models: [\"{0}-*\"]}}\n",
                f.name
            )
        })
        .collect();
    harness.config(
        "",
        &format!("management: {{secret_key: \"{MGMT_KEY}\"}}\nproviders:\n{providers}"),
    );
    let mut secrets = vec![CLIENT_KEY.to_owned(), MGMT_KEY.to_owned()];
    for fault in &FAULTS {
        // Credentials are tried in id order, round-robin: `-a` first.
        harness.vault_add(fault.name, &format!("{}-a", fault.name), &token_a(fault.name), None);
        harness.vault_add(fault.name, &format!("{}-b", fault.name), &token_b(fault.name), None);
        secrets.extend([token_a(fault.name), token_b(fault.name)]);
    }
    let gateway = harness.start().await;
    let client = client();

    for fault in &FAULTS {
        let name = fault.name;
        let response = client
            .post(format!("{}/v1/chat/completions", gateway.url()))
            .bearer_auth(CLIENT_KEY)
            .json(&chat(&format!("{name}-model")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{name}: the second credential's answer");
        let request_id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
        let text = response.text().await.unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text)),
            openai_chat("gpt-4o", "served by the second"),
            "{name}: the client must get the second credential's answer"
        );
        // The upstream saw the first credential, then the second, and nothing else.
        let seen: Vec<&str> = mock
            .connections_for(&format!(" /{name}/v1/chat/completions "))
            .iter()
            .map(|c| {
                if c.request.contains(&token_a(name)) {
                    "a"
                } else if c.request.contains(&token_b(name)) {
                    "b"
                } else {
                    "neither"
                }
            })
            .collect();
        assert_eq!(seen, ["a", "b"], "{name}: the tokens the upstream saw, in order");
        let id = request_id.clone();
        let log = gateway
            .wait_for_log(move |e| e["msg"] == "request" && e["request_id"] == id.as_str())
            .await;
        assert_eq!(
            (log["attempts"].as_u64(), log["credential"].as_str(), log["status"].as_u64()),
            (Some(2), Some(format!("{name}-b").as_str()), Some(200)),
            "{name}: {log}"
        );

        // Only the credential's own faults make it rest, for the documented time.
        let (cooling, remaining) = cooldown_of(&gateway, &format!("{name}-a")).await;
        match fault.cooldown {
            Some(full) => {
                let remaining =
                    remaining.unwrap_or_else(|| panic!("{name}: no cooldown_remaining_ms"));
                // A minute of margin for a loaded machine between the fault and this call.
                assert!(
                    cooling && remaining <= full && remaining > full - 60_000,
                    "{name}: cooling {cooling}, {remaining} ms left of {full}"
                );
            }
            None => {
                assert!(!cooling, "{name}: the first credential rests for the provider's fault")
            }
        }
        assert!(!cooldown_of(&gateway, &format!("{name}-b")).await.0, "{name}: the second rests");
    }
    let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
    assert_no_secrets(&gateway.logs(), &secrets);
}

/// One API format's client, with the provider behind it.
struct Format {
    name: &'static str,
    provider: &'static str,
    path: &'static str,
    auth: &'static str,
    body: Value,
}

/// Every credential of a provider rate-limited: the client's answer, in each API format.
/// The first request meets both 429s (`Retry-After` 120 and 90) and gets the provider's 429
/// with the last one's `Retry-After`; the next finds every credential cooling down and gets
/// 503 with `Retry-After` until the first comes back (90 s), without reaching the upstream.
/// Each error body is in the shape of the client's own API.
#[tokio::test]
async fn every_credential_cooling_down_answers_in_each_format() {
    let mock = MockUpstream::start(|request| {
        let wait = if request.contains("-first-") { "120" } else { "90" };
        Reply::Json {
            status: 429,
            headers: vec![("retry-after", wait.to_owned())],
            body: json!({"error": {"message": "rate limited", "type": "rate_limit_error"}})
                .to_string(),
        }
    })
    .await;
    let formats = [
        Format {
            name: "openai",
            provider: "oa",
            path: "/v1/chat/completions",
            auth: "authorization",
            body: chat("gpt-4o"),
        },
        Format {
            name: "anthropic",
            provider: "an",
            path: "/v1/messages",
            auth: "x-api-key",
            body: json!({"model": "claude-sonnet-4", "max_tokens": 16,
                         "messages": [{"role": "user", "content": "Hi"}]}),
        },
        Format {
            name: "gemini",
            provider: "gm",
            path: "/v1beta/models/gemini-2.0-flash:generateContent",
            auth: "x-goog-api-key",
            body: json!({"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]}),
        },
    ];
    let harness = Harness::new();
    let url = mock.url();
    harness.config(
        "",
        &format!(
            "providers:\n  oa: {{type: openai, base_url: \"{url}/oa\", models: [\"gpt-*\"]}}\n  \
             an: {{type: claude, base_url: \"{url}/an\", models: [\"claude-*\"]}}\n  \
             gm: {{type: gemini, base_url: \"{url}/gm\", models: [\"gemini-*\"]}}\n"
        ),
    );
    let token = |provider: &str, which: &str| format!("sk-vault-{provider}-{which}-credential-77");
    for format in &formats {
        for which in ["first", "second"] {
            let id = format!("{}-{which}", format.provider);
            harness.vault_add(format.provider, &id, &token(format.provider, which), None);
        }
    }
    let gateway = harness.start().await;
    let client = client();
    let send = |format: &Format| {
        let value = if format.auth == "authorization" {
            format!("Bearer {CLIENT_KEY}")
        } else {
            CLIENT_KEY.to_owned()
        };
        client
            .post(format!("{}{}", gateway.url(), format.path))
            .header(format.auth, value)
            .json(&format.body)
            .send()
    };
    let retry_after = |response: &reqwest::Response| -> u64 {
        response.headers()["retry-after"].to_str().unwrap().parse().unwrap()
    };

    for format in &formats {
        let name = format.name;
        let prefix = format!("/{}/", format.provider);
        // Both credentials answer 429: the client gets 429 and the last `Retry-After`.
        let response = send(format).await.unwrap();
        assert_eq!(response.status(), 429, "{name}");
        assert_eq!(retry_after(&response), 90, "{name}");
        let limited: Value = response.json().await.unwrap();
        let seen: Vec<bool> = mock
            .requests()
            .iter()
            .filter(|r| r.path_and_query.starts_with(&prefix))
            .map(|r| r.contains(&token(format.provider, "first")))
            .collect();
        assert_eq!(seen, [true, false], "{name}: the first credential, then the second");

        // Every credential is cooling down now: 503 at once, nothing sent upstream.
        let response = send(format).await.unwrap();
        assert_eq!(response.status(), 503, "{name}");
        assert_eq!(response.headers()["content-type"], "application/json", "{name}");
        let wait = retry_after(&response);
        // The sooner credential is back after its 90 s; a minute of margin for a loaded
        // machine between the 429 and this request.
        assert!((30..=90).contains(&wait), "{name}: Retry-After {wait}");
        let cooling: Value = response.json().await.unwrap();
        assert_eq!(
            mock.requests().iter().filter(|r| r.path_and_query.starts_with(&prefix)).count(),
            2,
            "{name}: the upstream was called while every credential was cooling down"
        );

        // Each body in its client's own error shape.
        match name {
            "openai" => {
                assert_eq!(limited["error"]["type"], "rate_limit_error", "{limited}");
                assert_eq!(limited["error"]["code"], "rate_limit_exceeded", "{limited}");
                assert_eq!(cooling["error"]["type"], "api_error", "{cooling}");
                assert_eq!(cooling["error"]["code"], "unavailable", "{cooling}");
                assert_eq!(cooling["error"]["param"], Value::Null, "{cooling}");
                assert!(
                    cooling["error"]["message"].as_str().unwrap().contains("cooling down"),
                    "{cooling}"
                );
            }
            "anthropic" => {
                assert_eq!(limited["type"], "error", "{limited}");
                assert_eq!(limited["error"]["type"], "rate_limit_error", "{limited}");
                assert_eq!(cooling["type"], "error", "{cooling}");
                assert_eq!(cooling["error"]["type"], "overloaded_error", "{cooling}");
                assert!(
                    cooling["error"]["message"].as_str().unwrap().contains("cooling down"),
                    "{cooling}"
                );
            }
            _ => {
                assert_eq!(limited["error"]["code"], 429, "{limited}");
                assert_eq!(limited["error"]["status"], "RESOURCE_EXHAUSTED", "{limited}");
                assert_eq!(cooling["error"]["code"], 503, "{cooling}");
                assert_eq!(cooling["error"]["status"], "UNAVAILABLE", "{cooling}");
                assert!(
                    cooling["error"]["message"].as_str().unwrap().contains("cooling down"),
                    "{cooling}"
                );
            }
        }
    }
    let mut secrets = vec![CLIENT_KEY.to_owned()];
    for format in &formats {
        secrets.extend([token(format.provider, "first"), token(format.provider, "second")]);
    }
    let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
    assert_no_secrets(&gateway.logs(), &secrets);
}
