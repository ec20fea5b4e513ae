//! The secret-leak sweep's error-path half (issue 9, item 6): one gateway holding every kind
//! of secret — a provider API key and an OAuth access and refresh token in the encrypted
//! vault, two client keys, the management key, the vault encryption key — is driven through
//! every error path a client or an operator can reach, with upstreams that echo the
//! credential they were sent in their error bodies and headers. No answer (status line,
//! headers, body) carries any planted secret. The logs, audit log, metrics and management
//! status of the same gateway are searched when it is dropped (tests/src/sweep.rs), like those
//! of every gateway of the suite.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use cliproxy_e2e::sweep::{Hit, plant, planted, scan};
use cliproxy_e2e::*;
use reqwest::Method;
use serde_json::{Value, json};

const MGMT_KEY: &str = "cpm-leak-management-key-9e3a61d07c24";
const ALICE_KEY: &str = "cpk-leak-alice-client-key-5d81c3a9f026";
const ENCRYPTION_KEY: &str = "jcsxmswqXse23ZdncHI6bG4qAdQtsC11Cd5CfJ603EU=";
const PROVIDER_TOKEN: &str = "sk-leak-provider-api-key-4f0c92e7b15a";
const ACCESS_TOKEN: &str = "at-leak-oauth-access-token-81b5e0c2";
const REFRESH_TOKEN: &str = "rt-leak-oauth-refresh-token-c73d19a4";

/// What a provider that echoes credentials answers: `status` with every header and the body
/// naming what it was sent (the Authorization or x-api-key header, and the whole request).
fn echo(request: &Recorded, status: u16) -> Reply {
    let sent = format!(
        "{} {} {}",
        request.header("authorization"),
        request.header("x-api-key"),
        String::from_utf8_lossy(&request.body)
    );
    Reply::Json {
        status,
        headers: vec![("x-echo-credential", request.header("authorization").to_owned())],
        body: json!({"error": {"message": format!("Incorrect API key provided: {sent}"),
                                "type": "invalid_request_error"}})
        .to_string(),
    }
}

/// One answer: where it came from, its status, its headers and body as text.
struct Answer {
    what: String,
    status: u16,
    text: String,
}

async fn send(request: reqwest::RequestBuilder, what: &str) -> Answer {
    let response = request.send().await.unwrap_or_else(|e| panic!("{what}: {e}"));
    let status = response.status().as_u16();
    let mut text = format!("HTTP {status}\n");
    for (name, value) in response.headers() {
        text.push_str(&format!("{name}: {}\n", String::from_utf8_lossy(value.as_bytes())));
    }
    text.push('\n');
    text.push_str(&response.text().await.unwrap_or_default());
    Answer { what: what.to_owned(), status, text }
}

fn chat_body(model: &str) -> Value {
    json!({"model": model, "max_tokens": 16, "messages": [{"role": "user", "content": "Hi"}]})
}

#[tokio::test]
async fn no_error_answer_carries_a_planted_secret() {
    for secret in [
        MGMT_KEY,
        ALICE_KEY,
        ENCRYPTION_KEY,
        PROVIDER_TOKEN,
        ACCESS_TOKEN,
        REFRESH_TOKEN,
        CLIENT_KEY,
    ] {
        plant(secret);
    }
    // `/oa` answers 401, `/an` 500, `/rl` 429, each echoing the credential; the token
    // endpoint refuses the refresh token, naming it.
    let refreshes = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&refreshes);
    let mock = MockUpstream::start(move |request| {
        let path = request.path_and_query.as_str();
        if path.starts_with("/oauth/token") {
            counted.fetch_add(1, Ordering::SeqCst);
            let body = String::from_utf8_lossy(&request.body).into_owned();
            return Reply::Json {
                status: 400,
                headers: Vec::new(),
                body: json!({"error": "invalid_grant",
                              "error_description": format!("refresh token rejected: {body}")})
                .to_string(),
            };
        }
        let status = match path.split('/').nth(1) {
            Some("oa") => 401,
            Some("an") => 500,
            Some("rl") => 429,
            _ => 403,
        };
        echo(request, status)
    })
    .await;
    let url = mock.url();
    let harness = Harness::new();
    let audit = harness.auth_dir().with_file_name("audit.log");
    harness.write_config(&format!(
        "server:\n  host: 127.0.0.1\n  port: 0\n  shutdown_timeout: 10s\n  \
           limits: {{max_body_bytes: 4096}}\n  \
           security:\n    request_validation: {{enabled: true, max_tokens: 1000}}\n\
         auth:\n  api_keys:\n    - {{name: e2e, key: \"{CLIENT_KEY}\"}}\n    \
           - {{name: alice, key: \"{ALICE_KEY}\", rate_limit: {{requests_per_minute: 1, tokens_per_minute: 100000}}}}\n  \
           dir: {dir:?}\n  encryption: {{enabled: true, key: \"{ENCRYPTION_KEY}\"}}\n\
         logging: {{level: debug, format: json, audit: {{enabled: true, file: {audit:?}}}}}\n\
         metrics: {{enabled: true, host: 127.0.0.1, port: 0}}\n\
         management: {{secret_key: \"{MGMT_KEY}\", max_failures: 50}}\n\
         providers:\n  \
           oa: {{type: openai, base_url: \"{url}/oa\", models: [\"gpt-*\"]}}\n  \
           an: {{type: claude, base_url: \"{url}/an\", models: [\"claude-*\"]}}\n  \
           rl: {{type: openai, base_url: \"{url}/rl\", models: [\"rl-*\"]}}\n  \
           oauth: {{type: openai, base_url: \"{url}/oauth-api\", models: [\"oauth-*\"]}}\n  \
           demo: {{type: mock, models: [\"mock-*\"]}}\n",
        dir = harness.auth_dir().display().to_string(),
        audit = audit.display().to_string(),
    ));
    for provider in ["oa", "an", "rl"] {
        harness.vault_add(provider, &format!("{provider}-key"), PROVIDER_TOKEN, None);
    }
    let gateway = harness.start().await;
    let base = gateway.url();
    let http = client();
    let mut answers = Vec::new();

    // An OAuth credential whose access token is due: the refresh is refused, echoing it.
    let (status, body) = manage_with(
        &gateway,
        MGMT_KEY,
        Method::POST,
        "/auths",
        Some(json!({"provider": "oauth", "type": "oauth", "id": "oauth-1",
                    "access_token": ACCESS_TOKEN, "refresh_token": REFRESH_TOKEN,
                    "expires_in": 1, "token_url": format!("{url}/oauth/token"),
                    "client_id": "leak-client"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    answers.push(Answer { what: "POST /auths oauth".into(), status, text: body.to_string() });

    let chat = |key: Option<&str>, model: &str| {
        let mut request = http.post(format!("{base}/v1/chat/completions")).json(&chat_body(model));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        request
    };
    let prefix = &CLIENT_KEY[..CLIENT_KEY.len() - 4];
    let longer = format!("{CLIENT_KEY}0");
    let cases: Vec<(&str, reqwest::RequestBuilder)> = vec![
        ("no client key", chat(None, "gpt-4o")),
        ("a wrong client key", chat(Some("cpk-wrong-key-0000000000000000"), "gpt-4o")),
        ("a prefix of the client key", chat(Some(prefix), "gpt-4o")),
        ("the client key and one more byte", chat(Some(&longer), "gpt-4o")),
        ("the management key as client key", chat(Some(MGMT_KEY), "gpt-4o")),
        (
            "a wrong x-api-key",
            http.post(format!("{base}/v1/messages"))
                .header("x-api-key", prefix)
                .header("anthropic-version", "2023-06-01")
                .json(&chat_body("claude-3")),
        ),
        (
            "a wrong Gemini ?key=",
            http.post(format!("{base}/v1beta/models/gemini-pro:generateContent?key={prefix}"))
                .json(&json!({"contents": [{"parts": [{"text": "Hi"}]}]})),
        ),
        ("upstream 401 echoing the token", chat(Some(CLIENT_KEY), "gpt-4o")),
        (
            "upstream 500 echoing the token",
            http.post(format!("{base}/v1/messages"))
                .header("x-api-key", CLIENT_KEY)
                .header("anthropic-version", "2023-06-01")
                .json(&chat_body("claude-3")),
        ),
        ("upstream 429 echoing the token", chat(Some(CLIENT_KEY), "rl-1")),
        ("an OAuth refresh refused echoing the refresh token", chat(Some(CLIENT_KEY), "oauth-1")),
        ("an unknown model", chat(Some(CLIENT_KEY), "no-such-model")),
        (
            "max_tokens above the cap",
            http.post(format!("{base}/v1/chat/completions"))
                .bearer_auth(CLIENT_KEY)
                .json(&json!({"model": "mock-1", "max_tokens": 100000,
                         "messages": [{"role": "user", "content": "Hi"}]})),
        ),
        (
            "a body that is not JSON",
            http.post(format!("{base}/v1/chat/completions"))
                .bearer_auth(CLIENT_KEY)
                .body(format!("{{\"model\": \"mock-1\", \"key\": \"{PROVIDER_TOKEN}")),
        ),
        (
            "a body over the cap",
            http.post(format!("{base}/v1/chat/completions"))
                .bearer_auth(CLIENT_KEY)
                .body("x".repeat(8192)),
        ),
        ("an unknown route", http.get(format!("{base}/v1/nothing-here")).bearer_auth(CLIENT_KEY)),
        ("a wrong method", http.get(format!("{base}/v1/chat/completions")).bearer_auth(CLIENT_KEY)),
        ("alice's first request", chat(Some(ALICE_KEY), "mock-1")),
        ("alice over her minute limit", chat(Some(ALICE_KEY), "mock-1")),
    ];
    for (what, request) in cases {
        answers.push(send(request, what).await);
    }

    // The management plane: wrong keys, bad bodies (carrying tokens), unknown entries.
    let manage = |method: Method, path: &str, key: &str| {
        http.request(method, format!("{base}/v0/management{path}")).header("x-management-key", key)
    };
    let mgmt_prefix = &MGMT_KEY[..MGMT_KEY.len() - 3];
    let management: Vec<(&str, reqwest::RequestBuilder)> = vec![
        ("management without a key", http.get(format!("{base}/v0/management/status"))),
        ("management with a prefix of its key", manage(Method::GET, "/status", mgmt_prefix)),
        ("management with the client key", manage(Method::GET, "/auths", CLIENT_KEY)),
        (
            "a credential for an unknown provider",
            manage(Method::POST, "/auths", MGMT_KEY)
                .json(&json!({"provider": "nope", "token": PROVIDER_TOKEN})),
        ),
        (
            "an OAuth credential without its token URL",
            manage(Method::POST, "/auths", MGMT_KEY).json(&json!({"provider": "oauth",
                "type": "oauth", "access_token": ACCESS_TOKEN, "refresh_token": REFRESH_TOKEN})),
        ),
        (
            "a credential body that is not JSON",
            manage(Method::POST, "/auths", MGMT_KEY)
                .body(format!("{{\"provider\": \"oa\", \"token\": \"{PROVIDER_TOKEN}\"")),
        ),
        ("deleting an unknown credential", manage(Method::DELETE, "/auths/oa/nope", MGMT_KEY)),
        (
            "a bad denylist entry",
            manage(Method::POST, "/security/ip-denylist", MGMT_KEY)
                .json(&json!({"ip": "999.1.2.3/33", "reason": "leak test"})),
        ),
        ("an unknown management route", manage(Method::GET, "/nothing", MGMT_KEY)),
        ("the management status", manage(Method::GET, "/status", MGMT_KEY)),
        ("the credential list", manage(Method::GET, "/auths", MGMT_KEY)),
    ];
    for (what, request) in management {
        answers.push(send(request, what).await);
    }

    // Maintenance: 503 for clients while it is on.
    let (status, body) = manage_with(
        &gateway,
        MGMT_KEY,
        Method::PUT,
        "/maintenance",
        Some(json!({"enabled": true})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    answers.push(send(chat(Some(CLIENT_KEY), "gpt-4o"), "maintenance").await);
    let (status, body) = manage_with(
        &gateway,
        MGMT_KEY,
        Method::PUT,
        "/maintenance",
        Some(json!({"enabled": false})),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // The error paths were really taken.
    let status_of = |what: &str| answers.iter().find(|a| a.what == what).map(|a| a.status);
    for (what, expected) in [
        ("no client key", 401),
        ("a prefix of the client key", 401),
        ("the client key and one more byte", 401),
        ("an unknown model", 404),
        ("a body over the cap", 413),
        ("an unknown route", 404),
        ("a wrong method", 405),
        ("alice over her minute limit", 429),
        ("maintenance", 503),
        ("management with a prefix of its key", 401),
        ("the management status", 200),
        ("a bad denylist entry", 400),
    ] {
        assert_eq!(status_of(what), Some(expected), "{what}");
    }
    for what in [
        "upstream 401 echoing the token",
        "upstream 500 echoing the token",
        "upstream 429 echoing the token",
        "an OAuth refresh refused echoing the refresh token",
    ] {
        let status = status_of(what).unwrap();
        assert!(status >= 400, "{what}: {status}");
    }
    assert!(refreshes.load(Ordering::SeqCst) >= 1, "the OAuth refresh was never tried");
    // The upstreams were sent the provider token, and echoed it.
    assert!(mock.requests().iter().any(|r| r.contains(PROVIDER_TOKEN)));

    let secrets = planted();
    let hits: Vec<Hit> =
        answers.iter().flat_map(|a| scan(&a.what, a.text.as_bytes(), &secrets)).collect();
    let bytes: usize = answers.iter().map(|a| a.text.len()).sum();
    assert!(hits.is_empty(), "secrets in answers: {hits:#?}");
    report::cases("secret-leaks", "no_error_answer_carries_a_planted_secret", answers.len());
    report::figure("secret-leaks", "error answers scanned", answers.len() as u64, "answers");
    report::figure("secret-leaks", "error answer bytes scanned", bytes as u64, "bytes");
    report::figure("secret-leaks", "hits in error answers", hits.len() as u64, "hits");
    // The gateway's logs, audit log, metrics and status are swept when it is dropped.
    drop(gateway);
}
