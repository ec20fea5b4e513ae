//! The header and query allow-lists, through the real binary in front of a recording mock
//! upstream: only the headers each provider's API defines go upstream, only the content type,
//! `Retry-After`, the provider's request id (as `x-upstream-request-id`) and what streaming
//! needs come back, and a credential in the query string never reaches the upstream, however
//! its name is percent-encoded.

use cliproxy_e2e::canned::*;
use cliproxy_e2e::*;
use serde_json::json;

use crate::assert_no_secrets;

const OPENAI_TOKEN: &str = "sk-vault-openai-headers-61c0";
const CLAUDE_TOKEN: &str = "sk-ant-vault-claude-headers-93d2";
const GEMINI_TOKEN: &str = "AIza-vault-gemini-headers-0b7e";
/// What the client puts in the query string as a key; it must never reach the upstream.
const QUERY_KEY: &str = "planted-query-key-4f1d9a";
/// The per-IP bucket's burst: the gateway's own `X-RateLimit-Limit`.
const BURST: u64 = 1000;

/// Headers the client sends that must not go upstream to any provider: addresses the client
/// chose (`true-client-ip`, `cf-connecting-ip`, `x-client-ip`, `via`, the forwarding headers),
/// account selectors that belong with the operator's credential (`openai-organization`,
/// `openai-project`, `x-goog-user-project`), a fingerprint the gateway sets itself, body
/// framing the gateway does not apply (`content-encoding`, `expect`), the browser's origin,
/// and anything else no API defines.
const REFUSED_REQUEST: &[(&str, &str)] = &[
    ("true-client-ip", "198.51.100.1"),
    ("cf-connecting-ip", "198.51.100.2"),
    ("x-client-ip", "198.51.100.3"),
    ("via", "1.1 client-proxy"),
    ("x-forwarded-for", "198.51.100.4"),
    ("forwarded", "for=198.51.100.5"),
    ("x-real-ip", "198.51.100.6"),
    ("x-goog-user-project", "someone-elses-billing-project"),
    ("openai-organization", "org-chosen-by-the-client"),
    ("openai-project", "proj-chosen-by-the-client"),
    ("x-device-fingerprint", "fingerprint-chosen-by-the-client"),
    ("content-encoding", "identity"),
    ("expect", "100-continue"),
    ("origin", "https://attacker.example"),
    ("anthropic-dangerous-direct-browser-access", "true"),
    ("cookie", "session=client"),
    ("x-custom-anything", "1"),
    ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
];

struct Provider {
    name: &'static str,
    path: &'static str,
    body: serde_json::Value,
    auth: (&'static str, String),
    /// Headers of the provider's own API (and its SDK's telemetry) that must go upstream.
    allowed: &'static [(&'static str, &'static str)],
    /// Headers another provider's API defines, which this one must not get.
    foreign: &'static [(&'static str, &'static str)],
}

fn providers() -> Vec<Provider> {
    vec![
        Provider {
            name: "oa",
            path: "/v1/chat/completions",
            body: json!({"model": "gpt-4.1-mini", "messages": [{"role": "user", "content": "hi"}]}),
            auth: ("authorization", format!("Bearer {CLIENT_KEY}")),
            allowed: &[
                ("openai-beta", "assistants=v2"),
                ("x-stainless-lang", "python"),
                ("x-stainless-retry-count", "0"),
                ("x-client-request-id", "client-req-1"),
                ("user-agent", "OpenAI/Python 1.99.0"),
                ("accept", "application/json"),
            ],
            foreign: &[("anthropic-beta", "x"), ("x-goog-api-client", "x"), ("x-app", "cli")],
        },
        Provider {
            name: "an",
            path: "/v1/messages",
            body: json!({"model": "claude-sonnet-4", "max_tokens": 16,
                "messages": [{"role": "user", "content": "hi"}]}),
            auth: ("x-api-key", CLIENT_KEY.to_owned()),
            allowed: &[
                ("anthropic-version", "2023-06-01"),
                ("anthropic-beta", "prompt-caching-2024-07-31"),
                ("x-app", "cli"),
                ("x-stainless-os", "Linux"),
                ("user-agent", "claude-cli/2.1.0 (external, cli)"),
                ("accept", "application/json"),
            ],
            foreign: &[("openai-beta", "x"), ("x-goog-api-client", "x")],
        },
        Provider {
            name: "ge",
            path: "/v1beta/models/gemini-2.5-flash:generateContent",
            body: json!({"contents": [{"parts": [{"text": "hi"}]}]}),
            auth: ("x-goog-api-key", CLIENT_KEY.to_owned()),
            allowed: &[
                ("x-goog-api-client", "google-genai-sdk/1.30.0 gl-python/3.12"),
                ("x-server-timeout", "60"),
                ("user-agent", "google-genai-sdk/1.30.0 gl-python/3.12"),
            ],
            foreign: &[("anthropic-version", "x"), ("openai-beta", "x"), ("x-stainless-os", "x")],
        },
    ]
}

fn yaml(harness: &Harness, url: &str) -> String {
    format!(
        "server:\n  host: 127.0.0.1\n  port: 0\n  shutdown_timeout: 10s\n  \
           security:\n    rate_limiting: {{enabled: true, requests_per_second: {BURST}, burst: {BURST}}}\n\
         auth:\n  api_keys: [{{name: e2e, key: \"{CLIENT_KEY}\"}}]\n  dir: {dir:?}\n\
         logging: {{level: debug, format: json}}\n\
         providers:\n  \
           oa: {{type: openai, base_url: \"{url}/oa\", models: [\"gpt-*\"]}}\n  \
           an: {{type: claude, base_url: \"{url}/an\", models: [\"claude-*\"]}}\n  \
           ge: {{type: gemini, base_url: \"{url}/ge\", models: [\"gemini-*\"]}}\n",
        dir = harness.auth_dir().display().to_string(),
    )
}

async fn start(mock: &MockUpstream) -> (Harness, Gateway) {
    let harness = Harness::new();
    harness.write_config(&yaml(&harness, &mock.url()));
    harness.vault_add("oa", "oa-1", OPENAI_TOKEN, None);
    harness.vault_add("an", "an-1", CLAUDE_TOKEN, None);
    harness.vault_add("ge", "ge-1", GEMINI_TOKEN, None);
    let gateway = harness.start().await;
    (harness, gateway)
}

/// The canned answer of each provider's path.
fn answer(path: &str) -> serde_json::Value {
    if path.starts_with("/an/") {
        anthropic_message("claude-sonnet-4", "ok")
    } else if path.starts_with("/ge/") {
        gemini_generate("ok")
    } else {
        openai_chat("gpt-4.1-mini", "ok")
    }
}

#[tokio::test]
async fn only_the_headers_each_api_defines_go_upstream() {
    let mock = MockUpstream::start(|request| Reply::ok(answer(&request.path_and_query))).await;
    let (_harness, gateway) = start(&mock).await;
    let client = client();
    let providers = providers();
    for (index, provider) in providers.iter().enumerate() {
        let mut request = client
            .post(format!("{}{}", gateway.url(), provider.path))
            .header(provider.auth.0, &provider.auth.1)
            .header("content-type", "application/json")
            .body(provider.body.to_string());
        for (name, value) in REFUSED_REQUEST.iter().chain(provider.allowed).chain(provider.foreign)
        {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200, "{}: {:?}", provider.name, response.text().await);

        let requests = mock.requests();
        assert_eq!(requests.len(), index + 1, "{}: one upstream call", provider.name);
        let seen = &requests[index];
        let leaked: Vec<&str> = REFUSED_REQUEST
            .iter()
            .chain(provider.foreign)
            .map(|(name, _)| *name)
            .filter(|name| seen.headers.contains_key(*name))
            .collect();
        assert!(leaked.is_empty(), "{}: these headers went upstream: {leaked:?}", provider.name);
        for (name, value) in provider.allowed {
            assert_eq!(
                seen.header(name),
                *value,
                "{}: `{name}` did not go upstream",
                provider.name
            );
        }
        assert_eq!(seen.header("content-type"), "application/json", "{}", provider.name);
        assert!(!seen.contains(CLIENT_KEY), "{}: the client key went upstream", provider.name);
    }
    // What the gateway sets itself still goes: each provider's credential where its API
    // expects it, and the Anthropic version the client chose.
    let requests = mock.requests();
    assert_eq!(requests[0].header("authorization"), format!("Bearer {OPENAI_TOKEN}"));
    assert_eq!(requests[1].header("x-api-key"), CLAUDE_TOKEN);
    assert_eq!(requests[1].header("anthropic-version"), "2023-06-01");
    assert_eq!(requests[2].header("x-goog-api-key"), GEMINI_TOKEN);
    assert_no_secrets(&gateway.logs(), &[CLIENT_KEY, OPENAI_TOKEN, CLAUDE_TOKEN, GEMINI_TOKEN]);
}

/// Headers a provider sends that describe the operator's account, the provider's servers or a
/// browser policy the gateway does not make; none may reach the client.
const REFUSED_RESPONSE: &[(&str, &str)] = &[
    ("openai-organization", "org-of-the-operator"),
    ("openai-project", "proj_of_the_operator"),
    ("openai-processing-ms", "321"),
    ("openai-version", "2020-10-01"),
    ("anthropic-organization-id", "0b1c2d3e-operator-org"),
    ("x-ratelimit-limit-requests", "10000"),
    ("x-ratelimit-remaining-tokens", "1999000"),
    ("x-ratelimit-reset-requests", "6ms"),
    ("anthropic-ratelimit-requests-limit", "4000"),
    ("anthropic-ratelimit-tokens-remaining", "399000"),
    ("anthropic-ratelimit-input-tokens-reset", "2026-12-07T10:00:00Z"),
    ("via", "1.1 google"),
    ("server", "cloudflare"),
    ("access-control-allow-origin", "*"),
    ("access-control-allow-credentials", "true"),
    ("set-cookie", "__cf_bm=operator-session; path=/"),
    ("cf-ray", "8f0e-LHR"),
    ("x-should-retry", "true"),
    ("x-envoy-upstream-service-time", "300"),
];

#[tokio::test]
async fn only_allowed_upstream_headers_reach_the_client() {
    let mock = MockUpstream::start(|request| {
        let path = request.path_and_query.as_str();
        // The provider's own rate-limit headers under the names the gateway uses for its
        // own, with values the gateway's limiter cannot have: they must not replace its own.
        let mut headers: Vec<(&'static str, String)> = REFUSED_RESPONSE
            .iter()
            .map(|(name, value)| (*name, (*value).to_owned()))
            .chain([
                ("x-ratelimit-limit", "999999".to_owned()),
                ("x-ratelimit-remaining", "999998".to_owned()),
                ("x-ratelimit-reset", "999997".to_owned()),
                ("retry-after", "7".to_owned()),
            ])
            .collect();
        // OpenAI names its request id `x-request-id`, Anthropic `request-id`.
        if path.starts_with("/an/") {
            headers.push(("request-id", "req_upstream_anthropic_1".to_owned()));
        } else {
            headers.push(("x-request-id", "req_upstream_openai_1".to_owned()));
        }
        if path.contains("bad") {
            // A client error passes through as it is, with the same header rules.
            Reply::Json { status: 400, headers, body: r#"{"error":{"message":"bad"}}"#.to_owned() }
        } else if path.contains("stream") {
            Reply::sse(openai_stream("gpt-4.1-mini", &["o", "k"]))
        } else {
            Reply::Json { status: 200, headers, body: answer(path).to_string() }
        }
    })
    .await;
    let (_harness, gateway) = start(&mock).await;
    let client = client();
    let providers = providers();
    for provider in &providers {
        let response = client
            .post(format!("{}{}", gateway.url(), provider.path))
            .header(provider.auth.0, &provider.auth.1)
            .header("content-type", "application/json")
            .header("anthropic-version", "2023-06-01")
            .body(provider.body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{}", provider.name);
        let headers = response.headers().clone();
        let leaked: Vec<&str> = REFUSED_RESPONSE
            .iter()
            .map(|(name, _)| *name)
            .filter(|name| headers.contains_key(*name))
            .collect();
        assert!(
            leaked.is_empty(),
            "{}: these upstream headers reached the client: {leaked:?}",
            provider.name
        );
        assert!(!headers.contains_key("request-id"), "{}", provider.name);
        assert_eq!(headers["content-type"], "application/json", "{}", provider.name);
        assert_eq!(headers["retry-after"], "7", "{}", provider.name);
        let upstream_id = if provider.name == "an" {
            "req_upstream_anthropic_1"
        } else {
            "req_upstream_openai_1"
        };
        assert_eq!(headers["x-upstream-request-id"], upstream_id, "{}", provider.name);
        // The gateway's own headers are its own: the request id, the security headers and
        // the per-IP limiter's standing.
        assert!(headers["x-request-id"].to_str().unwrap().starts_with("req_"), "{headers:?}");
        assert_eq!(headers["x-content-type-options"], "nosniff", "{}", provider.name);
        assert_eq!(headers["x-ratelimit-limit"], BURST.to_string().as_str(), "{}", provider.name);
        let remaining: u64 = headers["x-ratelimit-remaining"].to_str().unwrap().parse().unwrap();
        assert!(remaining < BURST, "{}: {remaining}", provider.name);
        let reset: u64 = headers["x-ratelimit-reset"].to_str().unwrap().parse().unwrap();
        assert!(reset <= 1, "{}: {reset}", provider.name);
        let _ = response.text().await.unwrap();
    }

    // An upstream 400 reaches the client as it is, without the provider's headers, and
    // without rate-limit headers of anyone: the gateway puts its own on successes only.
    let response = client
        .post(format!("{}/v1/chat/completions?bad=1", gateway.url()))
        .bearer_auth(CLIENT_KEY)
        .header("content-type", "application/json")
        .body(providers[0].body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let headers = response.headers().clone();
    for (name, _) in REFUSED_RESPONSE {
        assert!(!headers.contains_key(*name), "`{name}` reached the client on a 400");
    }
    assert!(!headers.contains_key("x-ratelimit-limit"), "{headers:?}");
    assert_eq!(headers["x-upstream-request-id"], "req_upstream_openai_1");

    // A stream keeps what streaming needs.
    let mut response = client
        .post(format!("{}/v1/chat/completions?stream=1", gateway.url()))
        .bearer_auth(CLIENT_KEY)
        .header("content-type", "application/json")
        .body(
            json!({"model": "gpt-4.1-mini", "stream": true,
            "messages": [{"role": "user", "content": "hi"}]})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(response.headers()["cache-control"], "no-cache");
    let mut seen = String::new();
    read_to_end(&mut response, &mut seen).await;
    assert!(seen.contains("[DONE]"), "{seen}");
}

#[tokio::test]
async fn a_percent_encoded_key_in_the_query_never_reaches_the_upstream() {
    let mock = MockUpstream::start(|request| Reply::ok(answer(&request.path_and_query))).await;
    let (_harness, gateway) = start(&mock).await;
    let client = client();
    let path = "/v1beta/models/gemini-2.5-flash:generateContent";
    let body = json!({"contents": [{"parts": [{"text": "hi"}]}]}).to_string();
    let call = |query: String| {
        client
            .post(format!("{}{path}?{query}", gateway.url()))
            .header("x-goog-api-key", CLIENT_KEY)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
    };
    // Each spelling names a credential once decoded (Google decodes the name before it reads
    // it; the names are compared without regard to case): the gateway refuses it as it
    // refuses the plain name, before anything is sent.
    for name in
        ["%6Bey", "k%65y", "%6b%65%79", "%4Bey", "KEY", "api%5Fkey", "api%2Dkey", "%61ccess_token"]
    {
        let response = call(format!("{name}={QUERY_KEY}&alt=sse")).await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        assert_eq!(status, 401, "{name}: {text}");
        assert!(text.contains("query string"), "{name}: {text}");
    }
    assert!(mock.requests().is_empty(), "a refused request went upstream");
    // A name whose escapes cannot be decoded, or that decodes to another escape (a second
    // decoding would make it `key`), is dropped: the rest of the query still goes.
    for name in ["%256Bey", "k%zzey", "key%", "%E9ey"] {
        let response = call(format!("{name}={QUERY_KEY}&alt=sse")).await.unwrap();
        assert_eq!(response.status(), 200, "{name}");
        let _ = response.text().await.unwrap();
    }
    let requests = mock.requests();
    assert_eq!(requests.len(), 4, "{requests:?}");
    for request in &requests {
        assert_eq!(request.path_and_query, format!("/ge{path}?alt=sse"));
        assert!(!request.contains(QUERY_KEY), "a query key reached the upstream");
    }
    assert_no_secrets(&gateway.logs(), &[QUERY_KEY, CLIENT_KEY]);
}
