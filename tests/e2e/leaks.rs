//! The secret-leak sweep's error-path half (issue 9, item 6): one gateway holding every kind
//! of secret — a provider API key and an OAuth access and refresh token in the encrypted
//! vault, two client keys, the management key, the vault encryption key — is driven through
//! every error path a client or an operator can reach, with upstreams that echo the
//! credential they were sent in their error bodies and headers. Each answer has the exact
//! status its case expects (28 refusals and failures, and 4 successes on the way, searched
//! all the same), and none (status line, headers, body) carries any planted secret, whole,
//! cut to its first 12 characters, in base64 or percent- or JSON-escaped (the forms of
//! [`cliproxy_e2e::sweep::forms`]). The logs, audit log, metrics and management
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
/// naming what it was sent (the Authorization or x-api-key header, and the whole request),
/// with OpenAI's `code` (`invalid_api_key` makes it the credential's fault, `null` the
/// client's, whose answer goes back to the client), padded by `pad` bytes.
fn echo(request: &Recorded, status: u16, code: Option<&str>, pad: usize) -> Reply {
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
                                "type": "invalid_request_error", "code": code},
                     "pad": "x".repeat(pad)})
        .to_string(),
    }
}

/// One answer: where it came from, its status and the status its case expects, its headers
/// and body as text.
struct Answer {
    what: String,
    status: u16,
    expected: u16,
    text: String,
}

async fn send(request: reqwest::RequestBuilder, what: &str, expected: u16) -> Answer {
    let response = request.send().await.unwrap_or_else(|e| panic!("{what}: {e}"));
    let status = response.status().as_u16();
    let mut text = format!("HTTP {status}\n");
    for (name, value) in response.headers() {
        text.push_str(&format!("{name}: {}\n", String::from_utf8_lossy(value.as_bytes())));
    }
    text.push('\n');
    text.push_str(&response.text().await.unwrap_or_default());
    Answer { what: what.to_owned(), status, expected, text }
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
    // `/oa` answers 401, `/an` 500, `/rl` 429, `/cf` and `/cl` 400 (the client's fault, `/cl`
    // over the error-body cap), each echoing the credential; the token endpoint refuses the
    // refresh token, naming it.
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
        match path.split('/').nth(1) {
            Some("oa") => echo(request, 401, Some("invalid_api_key"), 0),
            Some("an") => echo(request, 500, None, 0),
            Some("rl") => echo(request, 429, None, 0),
            // Refusals that are the client's come back to it: the echo is redacted, or (over
            // the 16 KiB error-body cap) not forwarded at all.
            Some("cf") => echo(request, 400, None, 0),
            Some("cl") => echo(request, 400, None, 20_000),
            _ => echo(request, 403, None, 0),
        }
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
           cf: {{type: openai, base_url: \"{url}/cf\", models: [\"cf-*\"]}}\n  \
           cl: {{type: openai, base_url: \"{url}/cl\", models: [\"cl-*\"]}}\n  \
           oauth: {{type: openai, base_url: \"{url}/oauth-api\", models: [\"oauth-*\"]}}\n  \
           demo: {{type: mock, models: [\"mock-*\"]}}\n",
        dir = harness.auth_dir().display().to_string(),
        audit = audit.display().to_string(),
    ));
    for provider in ["oa", "an", "rl", "cf", "cl"] {
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
    answers.push(Answer {
        what: "POST /auths oauth".into(),
        status,
        expected: 201,
        text: body.to_string(),
    });

    let chat = |key: Option<&str>, model: &str| {
        let mut request = http.post(format!("{base}/v1/chat/completions")).json(&chat_body(model));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        request
    };
    let prefix = &CLIENT_KEY[..CLIENT_KEY.len() - 4];
    let longer = format!("{CLIENT_KEY}0");
    // Each answer with the status it must have: refused, failed upstream, or (the few
    // successes, searched all the same) served.
    let cases: Vec<(&str, u16, reqwest::RequestBuilder)> = vec![
        ("no client key", 401, chat(None, "gpt-4o")),
        ("a wrong client key", 401, chat(Some("cpk-wrong-key-0000000000000000"), "gpt-4o")),
        ("a prefix of the client key", 401, chat(Some(prefix), "gpt-4o")),
        ("the client key and one more byte", 401, chat(Some(&longer), "gpt-4o")),
        ("the management key as client key", 401, chat(Some(MGMT_KEY), "gpt-4o")),
        (
            "a wrong x-api-key",
            401,
            http.post(format!("{base}/v1/messages"))
                .header("x-api-key", prefix)
                .header("anthropic-version", "2023-06-01")
                .json(&chat_body("claude-3")),
        ),
        (
            "a wrong Gemini ?key=",
            401,
            http.post(format!("{base}/v1beta/models/gemini-pro:generateContent?key={prefix}"))
                .json(&json!({"contents": [{"parts": [{"text": "Hi"}]}]})),
        ),
        ("upstream 401 echoing the token", 502, chat(Some(CLIENT_KEY), "gpt-4o")),
        (
            "upstream 500 echoing the token",
            502,
            http.post(format!("{base}/v1/messages"))
                .header("x-api-key", CLIENT_KEY)
                .header("anthropic-version", "2023-06-01")
                .json(&chat_body("claude-3")),
        ),
        ("upstream 429 echoing the token", 429, chat(Some(CLIENT_KEY), "rl-1")),
        ("upstream 400 echoing the token, passed back", 400, chat(Some(CLIENT_KEY), "cf-1")),
        ("upstream 400 echoing the token past the cap", 502, chat(Some(CLIENT_KEY), "cl-1")),
        (
            "an OAuth refresh refused echoing the refresh token",
            502,
            chat(Some(CLIENT_KEY), "oauth-1"),
        ),
        ("an unknown model", 404, chat(Some(CLIENT_KEY), "no-such-model")),
        (
            "max_tokens above the cap",
            400,
            http.post(format!("{base}/v1/chat/completions"))
                .bearer_auth(CLIENT_KEY)
                .json(&json!({"model": "mock-1", "max_tokens": 100000,
                         "messages": [{"role": "user", "content": "Hi"}]})),
        ),
        (
            "a body that is not JSON",
            400,
            http.post(format!("{base}/v1/chat/completions"))
                .bearer_auth(CLIENT_KEY)
                .body(format!("{{\"model\": \"mock-1\", \"key\": \"{PROVIDER_TOKEN}")),
        ),
        (
            "a body over the cap",
            413,
            http.post(format!("{base}/v1/chat/completions"))
                .bearer_auth(CLIENT_KEY)
                .body("x".repeat(8192)),
        ),
        (
            "an unknown route",
            404,
            http.get(format!("{base}/v1/nothing-here")).bearer_auth(CLIENT_KEY),
        ),
        (
            "a wrong method",
            405,
            http.get(format!("{base}/v1/chat/completions")).bearer_auth(CLIENT_KEY),
        ),
        ("alice's first request", 200, chat(Some(ALICE_KEY), "mock-1")),
        ("alice over her minute limit", 429, chat(Some(ALICE_KEY), "mock-1")),
    ];
    for (what, expected, request) in cases {
        answers.push(send(request, what, expected).await);
    }

    // The management plane: wrong keys, bad bodies (carrying tokens), unknown entries.
    let manage = |method: Method, path: &str, key: &str| {
        http.request(method, format!("{base}/v0/management{path}")).header("x-management-key", key)
    };
    let mgmt_prefix = &MGMT_KEY[..MGMT_KEY.len() - 3];
    let management: Vec<(&str, u16, reqwest::RequestBuilder)> = vec![
        ("management without a key", 401, http.get(format!("{base}/v0/management/status"))),
        ("management with a prefix of its key", 401, manage(Method::GET, "/status", mgmt_prefix)),
        ("management with the client key", 401, manage(Method::GET, "/auths", CLIENT_KEY)),
        (
            "a credential for an unknown provider",
            400,
            manage(Method::POST, "/auths", MGMT_KEY)
                .json(&json!({"provider": "nope", "token": PROVIDER_TOKEN})),
        ),
        (
            "an OAuth credential without its token URL",
            400,
            manage(Method::POST, "/auths", MGMT_KEY).json(&json!({"provider": "oauth",
                "type": "oauth", "access_token": ACCESS_TOKEN, "refresh_token": REFRESH_TOKEN})),
        ),
        (
            "a credential body that is not JSON",
            400,
            manage(Method::POST, "/auths", MGMT_KEY)
                .body(format!("{{\"provider\": \"oa\", \"token\": \"{PROVIDER_TOKEN}\"")),
        ),
        ("deleting an unknown credential", 404, manage(Method::DELETE, "/auths/oa/nope", MGMT_KEY)),
        (
            "a bad denylist entry",
            400,
            manage(Method::POST, "/security/ip-denylist", MGMT_KEY)
                .json(&json!({"ip": "999.1.2.3/33", "reason": "leak test"})),
        ),
        ("an unknown management route", 404, manage(Method::GET, "/nothing", MGMT_KEY)),
        ("the management status", 200, manage(Method::GET, "/status", MGMT_KEY)),
        ("the credential list", 200, manage(Method::GET, "/auths", MGMT_KEY)),
    ];
    for (what, expected, request) in management {
        answers.push(send(request, what, expected).await);
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
    answers.push(send(chat(Some(CLIENT_KEY), "gpt-4o"), "maintenance", 503).await);
    let (status, body) = manage_with(
        &gateway,
        MGMT_KEY,
        Method::PUT,
        "/maintenance",
        Some(json!({"enabled": false})),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // Each path was really taken: every answer has the status its case expects.
    let wrong: Vec<String> = answers
        .iter()
        .filter(|a| a.status != a.expected)
        .map(|a| format!("{}: {} (expected {})", a.what, a.status, a.expected))
        .collect();
    assert!(wrong.is_empty(), "answers with another status than expected: {wrong:#?}");
    assert!(refreshes.load(Ordering::SeqCst) >= 1, "the OAuth refresh was never tried");
    // The client's own refusal came back as the upstream wrote it, the credential redacted.
    let passed = answers.iter().find(|a| a.what.ends_with("passed back")).unwrap();
    assert!(
        passed.text.contains("Incorrect API key provided: Bearer [redacted]"),
        "{}",
        passed.text
    );
    // The upstreams were sent the provider token, and echoed it.
    assert!(mock.requests().iter().any(|r| r.contains(PROVIDER_TOKEN)));

    let secrets = planted();
    let hits: Vec<Hit> =
        answers.iter().flat_map(|a| scan(&a.what, a.text.as_bytes(), &secrets)).collect();
    assert!(hits.is_empty(), "secrets in answers: {hits:#?}");
    // The successes (a credential stored, alice's first request, the status and credential
    // list of the management API) are searched too, and counted apart.
    let (errors, successes): (Vec<&Answer>, Vec<&Answer>) =
        answers.iter().partition(|a| a.expected >= 400);
    let error_bytes: usize = errors.iter().map(|a| a.text.len()).sum();
    let success_bytes: usize = successes.iter().map(|a| a.text.len()).sum();
    report::cases("secret-leaks", "no_error_answer_carries_a_planted_secret", answers.len());
    report::figure("secret-leaks", "error answers scanned", errors.len() as u64, "answers");
    report::figure("secret-leaks", "error answer bytes scanned", error_bytes as u64, "bytes");
    report::figure("secret-leaks", "successful answers scanned", successes.len() as u64, "answers");
    report::figure(
        "secret-leaks",
        "successful answer bytes scanned",
        success_bytes as u64,
        "bytes",
    );
    report::figure("secret-leaks", "hits in the answers scanned", hits.len() as u64, "hits");
    // The gateway's logs, audit log, metrics and status are swept when it is dropped.
    drop(gateway);
}
