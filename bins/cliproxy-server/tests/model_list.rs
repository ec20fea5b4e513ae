//! Model listings for glob patterns come from the upstream's own list (issue 19): fetched with a
//! vault credential in the provider's format (OpenAI, Anthropic with `after_id` pages, Gemini
//! with `pageToken` pages) from a recording mock upstream over real TCP, filtered by the globs,
//! by routing and by the client key's models, cached (one fetch for many listings, one fetch
//! in flight at a time, a refresh when stale), kept through failures, and proof against
//! malformed, oversized and endless lists. The credential never reaches the logs.

#![allow(clippy::unwrap_used, clippy::panic, reason = "a failed expectation fails the test")]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use cliproxy_core::Secret;
use cliproxy_e2e::{MockUpstream, Recorded, Reply};
use cliproxy_gateway::Gateway;
use cliproxy_netguard::FakeClock;
use cliproxy_server::compose;
use cliproxy_server::config::Config;
use cliproxy_vault::Credential;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::common::Captured;

const FULL: &str = "client-key-full-0123456789abcdef";
const LIMITED: &str = "client-key-limited-0123456789abcdef";
const TOKEN_OA: &str = "sk-vault-openai-list-token-1111aaaa";
const TOKEN_AN: &str = "sk-ant-vault-list-token-2222bbbb";
const TOKEN_GM: &str = "AIza-vault-list-token-3333cccc";

/// The gateway of `providers` (YAML lines under `providers:`), with a full key and a key
/// limited to `gpt-4*` and `claude-*`, one credential per upstream provider, on `clock`.
fn build(
    providers: &str,
    clock: Arc<FakeClock>,
    log: slog::Logger,
) -> (Gateway, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "auth:\n  api_keys: [{{name: full, key: \"{FULL}\"}}, {{name: limited, key: \"{LIMITED}\", models: [\"gpt-4*\", \"claude-*\"]}}]\n  dir: {:?}\n\
         providers:\n{providers}",
        dir.path().join("auths").display().to_string()
    );
    let config = Config::from_yaml(&yaml).unwrap();
    let store = config.auth.build().unwrap();
    for (provider, token) in [("oa", TOKEN_OA), ("an", TOKEN_AN), ("gm", TOKEN_GM)] {
        if config.providers.0.contains_key(provider) {
            let credential = Credential::new_api_key(provider, Secret::from(token.to_owned()))
                .unwrap()
                .with_id(&format!("{provider}-cred"))
                .unwrap();
            store.put(&credential).unwrap();
        }
    }
    let clock = clock as Arc<dyn cliproxy_netguard::Clock>;
    (compose::gateway_with_clock(&config, &log, Some(clock)).unwrap(), dir)
}

fn discard() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}

fn clock() -> Arc<FakeClock> {
    FakeClock::at_unix(1_800_000_000)
}

/// `GET path` with `key` in the header of `shape`'s SDK; the status and the JSON body.
async fn list(gateway: &Gateway, path: &str, key: &str, shape: &str) -> (StatusCode, Value) {
    let mut request = Request::builder().method(Method::GET).uri(path);
    request = match shape {
        "anthropic" => request.header("x-api-key", key).header("anthropic-version", "2023-06-01"),
        "gemini" => request.header("x-goog-api-key", key),
        _ => request.header("authorization", format!("Bearer {key}")),
    };
    let request = request.body(Full::new(Bytes::new())).unwrap();
    let response = gateway.handle(request, "127.0.0.1:40000".parse().unwrap()).await;
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (parts.status, value)
}

/// The ids of an OpenAI-shape listing with `key`.
async fn ids(gateway: &Gateway, key: &str) -> Vec<String> {
    let (status, body) = list(gateway, "/v1/models", key, "openai").await;
    assert_eq!(status, 200, "{body}");
    body["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_owned()).collect()
}

/// The upstream requests whose path starts with `prefix`.
fn hits(mock: &MockUpstream, prefix: &str) -> Vec<Recorded> {
    mock.requests().into_iter().filter(|r| r.path_and_query.starts_with(prefix)).collect()
}

fn openai_list(ids: &[&str]) -> Reply {
    let data: Vec<Value> =
        ids.iter().map(|id| json!({"id": id, "object": "model", "owned_by": "system"})).collect();
    Reply::ok(json!({"object": "list", "data": data}))
}

/// The three upstreams behind one mock: `/oa` (OpenAI), `/an` (Anthropic, two pages) and `/gm`
/// (Gemini, two pages). Any other request is a 404.
fn three_upstreams(request: &Recorded) -> Reply {
    let path = request.path_and_query.as_str();
    match path {
        "/oa/v1/models" => openai_list(&[
            "gpt-4o",
            "gpt-4o-mini",
            "gpt-3.5-turbo",
            "text-embedding-3-small",
            "dall-e-3",
            "whisper-1",
        ]),
        "/an/v1/models?limit=1000" => Reply::ok(json!({"data": [
            {"type": "model", "id": "claude-opus-4-1", "display_name": "Claude Opus 4.1"},
            {"type": "model", "id": "claude-sonnet-4-5", "display_name": "Claude Sonnet 4.5"}],
            "has_more": true, "first_id": "claude-opus-4-1", "last_id": "claude-sonnet-4-5"})),
        "/an/v1/models?limit=1000&after_id=claude-sonnet-4-5" => Reply::ok(json!({"data": [
            {"type": "model", "id": "claude-haiku-4-5", "display_name": "Claude Haiku 4.5"}],
            "has_more": false, "first_id": "claude-haiku-4-5", "last_id": "claude-haiku-4-5"})),
        "/gm/v1beta/models?pageSize=1000" => Reply::ok(json!({"models": [
            {"name": "models/gemini-2.5-pro"}, {"name": "models/embedding-001"}],
            "nextPageToken": "page/2="})),
        "/gm/v1beta/models?pageSize=1000&pageToken=page%2F2%3D" => {
            Reply::ok(json!({"models": [{"name": "models/gemini-2.5-flash"}]}))
        }
        _ => Reply::Json { status: 404, headers: Vec::new(), body: "{}".to_owned() },
    }
}

fn three_providers(url: &str) -> String {
    format!(
        "  oa: {{type: openai, base_url: \"{url}/oa\", models: [\"gpt-*\", \"gpt-4*\", \"text-embedding-*\"]}}\n  \
           an: {{type: claude, base_url: \"{url}/an\", models: [\"claude-*\"]}}\n  \
           gm: {{type: gemini, base_url: \"{url}/gm\", models: [\"gemini-*\"]}}\n  \
           other: {{type: openai, base_url: \"{url}/other\", models: [\"gpt-4o-mini\"]}}\n  \
           demo: {{type: mock, models: [\"mock-f*\"]}}\n"
    )
}

#[tokio::test]
async fn glob_listings_are_the_upstreams_names_filtered() {
    let mock = MockUpstream::start(three_upstreams).await;
    let (gateway, _dir) = build(&three_providers(&mock.url()), clock(), discard());

    let listed = ids(&gateway, FULL).await;
    // `gpt-4o-mini` is listed once, as `other`'s (it claims the name exactly); `dall-e-3`,
    // `whisper-1` and `embedding-001` match no glob; `gpt-4o` matches two of `oa`'s globs.
    assert_eq!(
        listed,
        [
            "claude-haiku-4-5",
            "claude-opus-4-1",
            "claude-sonnet-4-5",
            "gemini-2.5-flash",
            "gemini-2.5-pro",
            "gpt-3.5-turbo",
            "gpt-4o",
            "gpt-4o-mini",
            "mock-fast",
            "text-embedding-3-small",
        ]
    );
    // Each provider was asked in its own format, with its own credential in its own header.
    let oa = hits(&mock, "/oa/");
    assert_eq!(oa.len(), 1, "{oa:?}");
    assert_eq!(oa[0].method, "GET");
    assert_eq!(oa[0].header("authorization"), format!("Bearer {TOKEN_OA}"));
    let an = hits(&mock, "/an/");
    assert_eq!(an.len(), 2, "two pages: {an:?}");
    assert!(an.iter().all(|r| r.header("x-api-key") == TOKEN_AN), "{an:?}");
    assert!(an.iter().all(|r| r.header("anthropic-version") == "2023-06-01"), "{an:?}");
    assert!(an.iter().all(|r| r.header("authorization").is_empty()), "{an:?}");
    let gm = hits(&mock, "/gm/");
    assert_eq!(gm.len(), 2, "two pages: {gm:?}");
    assert!(gm.iter().all(|r| r.header("x-goog-api-key") == TOKEN_GM), "{gm:?}");
    assert!(hits(&mock, "/other/").is_empty(), "no glob: nothing to fetch");

    // The key's own models filter the list.
    assert_eq!(
        ids(&gateway, LIMITED).await,
        ["claude-haiku-4-5", "claude-opus-4-1", "claude-sonnet-4-5", "gpt-4o", "gpt-4o-mini"]
    );
    // The other shapes list the same names, and every listed name is retrievable with the
    // provider that serves it as its owner.
    let (status, body) = list(&gateway, "/v1/models", FULL, "anthropic").await;
    assert_eq!(status, 200, "{body}");
    let anthropic: Vec<&str> =
        body["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(anthropic, listed);
    assert_eq!(body["last_id"], "text-embedding-3-small");
    let (status, body) = list(&gateway, "/v1beta/models", FULL, "gemini").await;
    assert_eq!(status, 200, "{body}");
    let gemini: Vec<String> = body["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap().trim_start_matches("models/").to_owned())
        .collect();
    assert_eq!(gemini, listed);
    let (_, body) = list(&gateway, "/v1/models", FULL, "openai").await;
    for model in body["data"].as_array().unwrap() {
        let id = model["id"].as_str().unwrap();
        let (status, one) = list(&gateway, &format!("/v1/models/{id}"), FULL, "openai").await;
        assert_eq!(status, 200, "{id}: {one}");
        assert_eq!(one["owned_by"], model["owned_by"], "{id}");
    }
    // Six listings, one fetch per provider (the pages of one fetch apart): the cache served
    // the rest.
    assert_eq!(hits(&mock, "/oa/").len(), 1);
    assert_eq!(hits(&mock, "/an/").len(), 2);
    assert_eq!(hits(&mock, "/gm/").len(), 2);
}

#[tokio::test]
async fn exact_names_alone_fetch_nothing() {
    let mock = MockUpstream::start(three_upstreams).await;
    let url = mock.url();
    let providers = format!(
        "  oa: {{type: openai, base_url: \"{url}/oa\", models: [\"gpt-4o\", \"o3\"]}}\n  demo: {{type: mock}}\n"
    );
    let (gateway, _dir) = build(&providers, clock(), discard());
    let listed = ids(&gateway, FULL).await;
    assert_eq!(listed, ["gpt-4o", "mock-1", "mock-embedding", "mock-fast", "o3"]);
    assert!(mock.requests().is_empty(), "{:?}", mock.requests());
}

/// The list served by the upstream of [`a_stale_list_is_refreshed_and_a_failure_keeps_the_last_good_one`]:
/// 0 the first list, 1 a second list with a new model, 2 a 500.
static PHASE: AtomicUsize = AtomicUsize::new(0);

#[tokio::test]
async fn a_stale_list_is_refreshed_and_a_failure_keeps_the_last_good_one() {
    let mock = MockUpstream::start(|_| match PHASE.load(Ordering::SeqCst) {
        0 => openai_list(&["gpt-4o"]),
        1 => openai_list(&["gpt-4o", "gpt-5"]),
        _ => Reply::Json { status: 500, headers: Vec::new(), body: "{}".to_owned() },
    })
    .await;
    let clock = clock();
    let log = Captured::default();
    let providers =
        format!("  oa: {{type: openai, base_url: \"{}\", models: [\"gpt-*\"]}}\n", mock.url());
    let (gateway, _dir) = build(&providers, clock.clone(), log.logger());
    assert_eq!(ids(&gateway, FULL).await, ["gpt-4o"]);
    PHASE.store(1, Ordering::SeqCst);
    clock.advance(Duration::from_secs(599));
    assert_eq!(ids(&gateway, FULL).await, ["gpt-4o"], "fresh for ten minutes");
    assert_eq!(mock.requests().len(), 1);
    clock.advance(Duration::from_secs(1));
    assert_eq!(ids(&gateway, FULL).await, ["gpt-4o", "gpt-5"], "stale: fetched again");
    assert_eq!(mock.requests().len(), 2);

    // The upstream fails: the last good list is served, and the failure is remembered for
    // 30 s, so that listings meanwhile do not ask again.
    PHASE.store(2, Ordering::SeqCst);
    clock.advance(Duration::from_secs(600));
    assert_eq!(ids(&gateway, FULL).await, ["gpt-4o", "gpt-5"]);
    assert_eq!(mock.requests().len(), 3);
    let warning = log.text();
    assert!(
        warning.contains("could not fetch a provider's model list")
            && warning.contains("provider=oa")
            && warning.contains("status=500"),
        "{warning}"
    );
    clock.advance(Duration::from_secs(29));
    assert_eq!(ids(&gateway, FULL).await, ["gpt-4o", "gpt-5"]);
    assert_eq!(mock.requests().len(), 3, "a failure is not retried within 30 s");
    clock.advance(Duration::from_secs(1));
    PHASE.store(0, Ordering::SeqCst);
    assert_eq!(ids(&gateway, FULL).await, ["gpt-4o"], "retried after 30 s");
    assert_eq!(mock.requests().len(), 4);
}

/// Upstream answers that are not usable lists: each makes the glob list nothing (with no
/// list before it), while the exact names and the mock's stay listed; the endless ones are
/// cut at the page cap.
#[tokio::test]
async fn malformed_oversized_and_endless_lists_list_nothing_or_what_is_sane() {
    let oversized = format!(
        r#"{{"object":"list","data":[{{"id":"gpt-big"}}],"pad":"{}"}}"#,
        "x".repeat(5 * 1024 * 1024)
    );
    // Each case with the reason the warning gives.
    let cases: Vec<(&str, Reply, &str)> = vec![
        (
            "not json",
            Reply::Json { status: 200, headers: Vec::new(), body: "<html>".into() },
            "not JSON",
        ),
        (
            "no data",
            Reply::ok(json!({"object": "list", "data": {"id": "gpt-x"}})),
            "no `data` array",
        ),
        (
            "deep",
            Reply::Json { status: 200, headers: Vec::new(), body: "[".repeat(200_000) },
            "not JSON",
        ),
        (
            "oversized",
            Reply::Json { status: 200, headers: Vec::new(), body: oversized.clone() },
            "larger than 4 MiB",
        ),
        // Chunked, without a `Content-Length` to refuse it by: cut off while read.
        (
            "oversized, chunked",
            Reply::sse(vec![oversized[..3 << 20].to_owned(), oversized[3 << 20..].to_owned()]),
            "larger than 4 MiB",
        ),
    ];
    for (case, reply, reason) in cases {
        let reply = Arc::new(std::sync::Mutex::new(Some(reply)));
        let mock = MockUpstream::start(move |_| {
            reply.lock().unwrap().take().unwrap_or(Reply::Json {
                status: 599,
                headers: Vec::new(),
                body: String::new(),
            })
        })
        .await;
        let log = Captured::default();
        let providers = format!(
            "  oa: {{type: openai, base_url: \"{}\", models: [\"gpt-*\", \"o3\"]}}\n  demo: {{type: mock, models: [mock-1]}}\n",
            mock.url()
        );
        let (gateway, _dir) = build(&providers, clock(), log.logger());
        assert_eq!(ids(&gateway, FULL).await, ["mock-1", "o3"], "{case}");
        assert_eq!(mock.requests().len(), 1, "{case}");
        let text = log.text();
        assert!(text.contains("could not fetch a provider's model list"), "{case}: {text}");
        assert!(text.contains(reason), "{case}: {text}");
    }

    // An Anthropic list whose every page says there is more: the fetch stops at ten pages
    // and keeps what it read. One whose cursor does not move stops at the second page.
    let page = Arc::new(AtomicUsize::new(0));
    let counter = page.clone();
    let mock = MockUpstream::start(move |request| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        let last = if request.path_and_query.starts_with("/stuck") {
            "claude-stuck".to_owned()
        } else {
            format!("claude-{n}")
        };
        Reply::ok(
            json!({"data": [{"id": format!("claude-{n}")}], "has_more": true, "last_id": last}),
        )
    })
    .await;
    let providers = format!(
        "  an: {{type: claude, base_url: \"{}/endless\", models: [\"claude-*\"]}}\n",
        mock.url()
    );
    let (gateway, _dir) = build(&providers, clock(), discard());
    let listed = ids(&gateway, FULL).await;
    assert_eq!(mock.requests().len(), 10, "the page cap");
    assert_eq!(listed.len(), 10, "{listed:?}");
    let before = mock.requests().len();
    let providers = format!(
        "  an: {{type: claude, base_url: \"{}/stuck\", models: [\"claude-*\"]}}\n",
        mock.url()
    );
    let (gateway, _dir) = build(&providers, clock(), discard());
    assert_eq!(ids(&gateway, FULL).await.len(), 2);
    assert_eq!(mock.requests().len() - before, 2, "a cursor that does not move ends the list");
}

/// Many listings at once while the list is on its way: one fetch, and every listing gets its
/// names.
#[tokio::test]
async fn concurrent_listings_share_one_fetch() {
    let gate = Arc::new(Notify::new());
    let held = gate.clone();
    let mock = MockUpstream::start(move |_| {
        // The answer's head goes out at once; its body waits for the gate, so the fetch stays
        // in flight while the other listings arrive.
        let body = json!({"object": "list", "data": [{"id": "gpt-4o"}]}).to_string();
        Reply::Sse { events: vec![body], hold_after: 0, gate: Some(held.clone()) }
    })
    .await;
    // A short first-byte timeout: were there a fetch per listing, the ones the gate never
    // opens for would end in seconds, not in the default five minutes.
    let providers = format!(
        "  oa: {{type: openai, base_url: \"{}\", models: [\"gpt-*\"]}}\nserver:\n  limits: {{upstream_first_byte_timeout: 5s}}\n",
        mock.url()
    );
    let (gateway, _dir) = build(&providers, clock(), discard());
    let listings: Vec<_> = (0..8)
        .map(|_| {
            let gateway = gateway.clone();
            tokio::spawn(async move { ids(&gateway, FULL).await })
        })
        .collect();
    // The first fetch reaching the mock is the event to wait for; the mock has no hook for
    // it, so this is a bounded poll (20 s), yielding to the listings in between. On this
    // single-threaded runtime every spawned listing has run up to its first wait before the
    // fetch's connection is even accepted.
    let deadline = tokio::time::Instant::now() + cliproxy_e2e::WAIT;
    while mock.requests().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no fetch reached the upstream");
        tokio::task::yield_now().await;
    }
    gate.notify_one();
    for listing in listings {
        assert_eq!(listing.await.unwrap(), ["gpt-4o"]);
    }
    assert_eq!(mock.requests().len(), 1, "one fetch in flight per provider");
}

/// A refused fetch is logged with the provider, the credential's id and the status; the
/// credential itself appears in no log line and in no answer, even when the upstream's
/// error body echoes it.
#[tokio::test]
async fn the_credential_never_reaches_the_logs() {
    let mock = MockUpstream::start(|_| Reply::Json {
        status: 401,
        headers: vec![("www-authenticate", format!("Bearer {TOKEN_OA}"))],
        body: json!({"error": {"message": format!("Incorrect API key provided: {TOKEN_OA}"),
            "code": "invalid_api_key"}})
        .to_string(),
    })
    .await;
    let log = Captured::default();
    let providers = format!(
        "  oa: {{type: openai, base_url: \"{}\", models: [\"gpt-*\", \"o3\"]}}\n",
        mock.url()
    );
    let (gateway, _dir) = build(&providers, clock(), log.logger());
    for shape in ["openai", "anthropic", "gemini"] {
        let (status, body) = list(&gateway, "/v1/models", FULL, shape).await;
        assert_eq!(status, 200, "{body}");
        assert!(!body.to_string().contains(TOKEN_OA), "{body}");
    }
    assert_eq!(mock.requests().len(), 1);
    assert!(mock.requests()[0].contains(TOKEN_OA), "the credential was sent upstream");
    let text = log.text();
    assert!(
        text.contains("provider=oa")
            && text.contains("credential=oa-cred")
            && text.contains("status=401"),
        "{text}"
    );
    assert!(!text.contains(TOKEN_OA) && !text.contains("1111aaaa"), "{text}");
}
