//! Serves the e2e suite's canned provider replies ([`cliproxy_e2e::canned`]) with the suite's
//! own [`MockUpstream`] on `127.0.0.1:0`, so `tests/sdk/check.sh` can point the official SDKs
//! straight at them: a fixture an SDK cannot parse fails that check.
//!
//! Prints `http://127.0.0.1:PORT` and a newline on stdout once it listens; exits 0 when stdin
//! closes or on SIGTERM. A path it has no route for answers 404.
//!
//! Adding a fixture is one line in [`ROUTES`], or in [`GEMINI_METHODS`] for a Gemini model
//! method.
//!
//! For the client matrix (`tests/clients/`), it also logs every request on stderr as one JSON
//! line (`at_ms`, `method`, `path`, `model`, `stream`, `status`), so that a check can see what a
//! client sent and when; and the first request for a model whose name contains
//! [`RATE_LIMITED_MARK`] is answered 429 with `Retry-After`, in the API's error format, so that
//! a check can see the client wait and come back.

use cliproxy_e2e::canned::*;
use cliproxy_e2e::{MockUpstream, Recorded, Reply};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::io::Read as _;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::io::AsyncWriteExt;
use tokio::signal::unix::{SignalKind, signal};

/// The text every fixture sends, one word per stream event.
const WORDS: &[&str] = &["Hello", " from", " the", " fixture", " upstream"];

/// The models the routes answer for; `check.py` asks for these.
const GPT: &str = "gpt-4o-mini";
/// The model the legacy completions route answers as (the real API serves it only for this).
const INSTRUCT: &str = "gpt-3.5-turbo-instruct";
const CLAUDE: &str = "claude-sonnet-4";
const EMBEDDING: &str = "text-embedding-3-small";

/// The one vector the embeddings route answers with (exact in binary, so `check.py` can
/// compare it with `==`), and the count the token-counting route answers with.
const EMBEDDING_VECTOR: [f64; 3] = [0.25, -0.5, 0.125];
const COUNTED_TOKENS: u64 = 21;

/// One route: the request path (without the query) and the reply to a request on it.
type Route = (&'static str, fn(&Recorded) -> Reply);

/// Every route, one line each. [`by_stream`] picks the streamed fixture when the request's body
/// says `"stream": true`; the OpenAI stream carries usage only if the request asked for it.
const ROUTES: &[Route] = &[
    ("/v1/chat/completions", |r| {
        by_stream(r, openai_stream_for(r, GPT, WORDS), openai_chat(GPT, &text()))
    }),
    ("/v1/completions", |r| {
        by_stream(
            r,
            openai_completion_stream_for(r, INSTRUCT, WORDS),
            openai_completion(INSTRUCT, &text()),
        )
    }),
    ("/v1/messages", |r| {
        by_stream(r, anthropic_stream(CLAUDE, WORDS), anthropic_message(CLAUDE, &text()))
    }),
    ("/v1/responses", |r| {
        by_stream(r, openai_responses_stream(GPT, WORDS), openai_responses(GPT, &text()))
    }),
    ("/v1/embeddings", |r| float_only(r, openai_embeddings(EMBEDDING, &[&EMBEDDING_VECTOR]))),
    ("/v1/messages/count_tokens", |_| Reply::ok(anthropic_count_tokens(COUNTED_TOKENS))),
    // Model lists: OpenAI's and Anthropic's share the path (Anthropic's SDK sends
    // `anthropic-version`); Anthropic's and Gemini's come in two pages.
    ("/v1/models", |r| {
        if r.header("anthropic-version").is_empty() { openai_models() } else { anthropic_models(r) }
    }),
    ("/v1beta/models", gemini_models),
];

/// Gemini's model methods by name (the part of `POST /{version}/models/{model}:{method}` after
/// the colon), one line each: [`model_path`] answers them for any model, under `/v1beta/` and
/// `/v1/` alike, as the real API serves the same methods under both versions.
const GEMINI_METHODS: &[Route] = &[
    ("generateContent", |_| Reply::ok(gemini_generate(&text()))),
    ("streamGenerateContent", |_| Reply::sse(gemini_stream(WORDS))),
    ("countTokens", |_| Reply::ok(gemini_count_tokens(COUNTED_TOKENS))),
    ("embedContent", |_| Reply::ok(gemini_embedding(&EMBEDDING_VECTOR))),
    ("batchEmbedContents", |r| Reply::ok(gemini_batch_embeddings(&batch_vectors(r)))),
];

/// The models each fixture list names: some that `check.sh`'s gateway globs (`gpt-*`,
/// `text-embedding-*`, `claude-*`, `gemini-*`) match, and some they do not.
const OPENAI_MODELS: &[&str] =
    &["gpt-4o-mini", "gpt-4o", "text-embedding-3-small", "dall-e-3", "whisper-1", "o3-mini"];
const ANTHROPIC_PAGES: [&[&str]; 2] =
    [&["claude-sonnet-4", "claude-opus-4-1"], &["claude-haiku-4-5"]];
const GEMINI_PAGES: [&[&str]; 2] =
    [&["gemini-2.0-flash", "text-embedding-004"], &["gemini-2.5-pro", "imagen-3.0-generate-002"]];

/// `GET /v1/models` in OpenAI's shape: one page.
fn openai_models() -> Reply {
    let data: Vec<Value> = OPENAI_MODELS
        .iter()
        .map(|id| serde_json::json!({"id": id, "object": "model", "created": 1_700_000_000, "owned_by": "system"}))
        .collect();
    Reply::ok(serde_json::json!({"object": "list", "data": data}))
}

/// `GET /v1/models` in Anthropic's shape: the first page, or the second after `after_id`.
fn anthropic_models(request: &Recorded) -> Reply {
    let second = request.path_and_query.contains("after_id=");
    let page = ANTHROPIC_PAGES[usize::from(second)];
    let data: Vec<Value> = page
        .iter()
        .map(|id| serde_json::json!({"type": "model", "id": id, "display_name": id, "created_at": "2025-05-14T00:00:00Z"}))
        .collect();
    Reply::ok(serde_json::json!({"data": data, "has_more": !second,
        "first_id": page.first(), "last_id": page.last()}))
}

/// `GET /v1beta/models` in Gemini's shape: the first page, or the second with `pageToken`.
fn gemini_models(request: &Recorded) -> Reply {
    let second = request.path_and_query.contains("pageToken=");
    let models: Vec<Value> = GEMINI_PAGES[usize::from(second)]
        .iter()
        .map(|id| {
            serde_json::json!({"name": format!("models/{id}"), "displayName": id,
            "supportedGenerationMethods": ["generateContent"]})
        })
        .collect();
    let mut body = serde_json::json!({"models": models});
    if !second {
        body["nextPageToken"] = Value::from("fixture-page-2");
    }
    Reply::ok(body)
}

/// The whole text of [`WORDS`].
fn text() -> String {
    WORDS.concat()
}

/// The streamed fixture if the request body says `"stream": true`, else the JSON one.
fn by_stream(request: &Recorded, events: Vec<String>, body: Value) -> Reply {
    let streamed =
        serde_json::from_slice::<Value>(&request.body).is_ok_and(|b| b["stream"] == true);
    if streamed { Reply::sse(events) } else { Reply::ok(body) }
}

/// The embeddings fixture holds floats; the real API answers base64 when asked for it (the
/// OpenAI SDK's default), so a request for anything but `"float"` is refused rather than
/// answered in a form the real API would not send.
fn float_only(request: &Recorded, body: Value) -> Reply {
    let format = serde_json::from_slice::<Value>(&request.body)
        .ok()
        .and_then(|b| b["encoding_format"].as_str().map(str::to_owned));
    if format.as_deref() == Some("float") {
        Reply::ok(body)
    } else {
        Reply::Json {
            status: 400,
            headers: Vec::new(),
            body: format!(
                r#"{{"error":{{"message":"the embeddings fixture answers encoding_format \"float\" only, not {format:?}","type":"invalid_request_error"}}}}"#
            ),
        }
    }
}

/// A model whose name contains this is rate limited once: its first request is answered 429
/// with `Retry-After: RETRY_AFTER_SECONDS`, every later one as usual.
const RATE_LIMITED_MARK: &str = "ratelimit-once";
const RETRY_AFTER_SECONDS: u64 = 2;

/// The rate-limited models that have had their 429.
static RATE_LIMITED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// The model a request names: in the body (OpenAI, Anthropic) or in the path (Gemini's
/// `models/{model}:{method}`).
fn model_of(request: &Recorded, path: &str) -> Option<String> {
    serde_json::from_slice::<Value>(&request.body)
        .ok()
        .and_then(|body| body["model"].as_str().map(str::to_owned))
        .or_else(|| {
            let (_, rest) = path.split_once("/models/")?;
            Some(rest.split(':').next().unwrap_or(rest).to_owned())
        })
}

/// Whether the request asks for a stream: `"stream": true`, or Gemini's streaming method.
fn is_streamed(request: &Recorded, path: &str) -> bool {
    path.ends_with(":streamGenerateContent")
        || serde_json::from_slice::<Value>(&request.body).is_ok_and(|b| b["stream"] == true)
}

/// The 429 each API answers when a rate limit is hit, in its own error format.
fn rate_limited(path: &str) -> Reply {
    let message = "Rate limit reached for this fixture model; try again later.";
    let body = if path.starts_with("/v1/messages") {
        json!({"type": "error", "error": {"type": "rate_limit_error", "message": message}})
    } else if path.contains("/models/") {
        json!({"error": {"code": 429, "message": message, "status": "RESOURCE_EXHAUSTED"}})
    } else {
        json!({"error": {"message": message, "type": "requests", "param": null,
            "code": "rate_limit_exceeded"}})
    };
    Reply::Json {
        status: 429,
        headers: vec![("retry-after", RETRY_AFTER_SECONDS.to_string())],
        body: body.to_string(),
    }
}

/// One vector per request of a `batchEmbedContents` body (`{"requests": [...]}`), in order:
/// [`EMBEDDING_VECTOR`] times 1, 2, 3, ... (still exact in binary), so that `check.py` sees
/// which vector answers which text.
fn batch_vectors(request: &Recorded) -> Vec<Vec<f64>> {
    let body = serde_json::from_slice::<Value>(&request.body).unwrap_or_default();
    let count = body["requests"].as_array().map_or(0, Vec::len);
    (1..=count).map(|n| EMBEDDING_VECTOR.iter().map(|x| x * n as f64).collect()).collect()
}

/// The paths below `/v1/models/` and `/v1beta/models/` (not the lists themselves, which would
/// be exact routes): `POST .../{model}:{method}` is a Gemini method of [`GEMINI_METHODS`], and
/// `GET .../{id}` one model. `/v1/models/{id}` is shared by three APIs, so the model takes the
/// shape of the one whose SDK asks, told by the headers it sends (as the gateway tells it):
/// Anthropic's send `anthropic-version`, Google's `x-goog-api-key`; OpenAI's neither.
fn model_path(request: &Recorded, path: &str) -> Option<Reply> {
    let (rest, gemini) =
        match (path.strip_prefix("/v1beta/models/"), path.strip_prefix("/v1/models/")) {
            (Some(rest), _) => (rest, true),
            (None, Some(rest)) => (rest, !request.header("x-goog-api-key").is_empty()),
            (None, None) => return None,
        };
    if rest.is_empty() || rest.contains('/') {
        return None;
    }
    match request.method.as_str() {
        "POST" => {
            let (_, method) = rest.rsplit_once(':')?;
            let (_, reply) = GEMINI_METHODS.iter().find(|(name, _)| *name == method)?;
            Some(reply(request))
        }
        "GET" if gemini => Some(Reply::ok(gemini_model(rest))),
        "GET" if !request.header("anthropic-version").is_empty() => {
            Some(Reply::ok(anthropic_model(rest)))
        }
        "GET" => Some(Reply::ok(openai_model(rest))),
        _ => None,
    }
}

fn answer(request: &Recorded) -> Reply {
    let path = request.path_and_query.split('?').next().unwrap_or_default();
    let model = model_of(request, path);
    let limited_now = model.as_deref().is_some_and(|model| {
        model.contains(RATE_LIMITED_MARK)
            && RATE_LIMITED
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(model.to_owned())
    });
    let reply = if limited_now { rate_limited(path) } else { route(request, path) };
    let status = match &reply {
        Reply::Json { status, .. } => *status,
        _ => 200,
    };
    let at_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
    eprintln!(
        "{}",
        json!({"at_ms": at_ms as u64, "method": request.method, "path": path, "model": model,
            "stream": is_streamed(request, path), "status": status})
    );
    reply
}

fn route(request: &Recorded, path: &str) -> Reply {
    let reply = match ROUTES.iter().find(|(route, _)| *route == path) {
        Some((_, reply)) => Some(reply(request)),
        None => model_path(request, path),
    };
    match reply {
        Some(reply) => reply,
        None => Reply::Json {
            status: 404,
            headers: Vec::new(),
            body: format!(r#"{{"error":{{"message":"no fixture for {path}"}}}}"#),
        },
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let mut terminate = signal(SignalKind::terminate())?;
    let upstream = MockUpstream::start(answer).await;
    let mut stdout = tokio::io::stdout();
    stdout.write_all(format!("{}\n", upstream.url()).as_bytes()).await?;
    stdout.flush().await?;
    // The parent holds stdin open for as long as it needs the fixtures; its end closing (the
    // parent exiting, however it exits) ends this process too. The read blocks, so it runs on
    // a plain thread: a read on tokio's stdin cannot be cancelled and would hold up the
    // runtime's shutdown after SIGTERM.
    let (closed, stdin_closed) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let mut sink = [0u8; 256];
        let mut stdin = std::io::stdin().lock();
        while stdin.read(&mut sink).is_ok_and(|n| n > 0) {}
        let _ = closed.send(());
    });
    tokio::select! {
        _ = stdin_closed => {}
        _ = terminate.recv() => {}
    }
    Ok(())
}
