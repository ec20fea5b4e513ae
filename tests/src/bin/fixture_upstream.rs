//! Serves the e2e suite's canned provider replies ([`cliproxy_e2e::canned`]) with the suite's
//! own [`MockUpstream`] on `127.0.0.1:0`, so `tests/sdk/check.sh` can point the official SDKs
//! straight at them: a fixture an SDK cannot parse fails that check.
//!
//! Prints `http://127.0.0.1:PORT` and a newline on stdout once it listens; exits 0 when stdin
//! closes or on SIGTERM. A path it has no route for answers 404.
//!
//! Adding a fixture is one line in [`ROUTES`].

use cliproxy_e2e::canned::*;
use cliproxy_e2e::{MockUpstream, Recorded, Reply};
use serde_json::Value;
use std::io::Read as _;

use tokio::io::AsyncWriteExt;
use tokio::signal::unix::{SignalKind, signal};

/// The text every fixture sends, one word per stream event.
const WORDS: &[&str] = &["Hello", " from", " the", " fixture", " upstream"];

/// The models the routes answer for; `check.py` asks for these.
const GPT: &str = "gpt-4o-mini";
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
    ("/v1/messages", |r| {
        by_stream(r, anthropic_stream(CLAUDE, WORDS), anthropic_message(CLAUDE, &text()))
    }),
    ("/v1/responses", |r| {
        by_stream(r, openai_responses_stream(GPT, WORDS), openai_responses(GPT, &text()))
    }),
    ("/v1/embeddings", |r| float_only(r, openai_embeddings(EMBEDDING, &[&EMBEDDING_VECTOR]))),
    ("/v1/messages/count_tokens", |_| Reply::ok(anthropic_count_tokens(COUNTED_TOKENS))),
    ("/v1beta/models/gemini-2.0-flash:generateContent", |_| Reply::ok(gemini_generate(&text()))),
    ("/v1beta/models/gemini-2.0-flash:streamGenerateContent", |_| Reply::sse(gemini_stream(WORDS))),
    // Model lists: OpenAI's and Anthropic's share the path (Anthropic's SDK sends
    // `anthropic-version`); Anthropic's and Gemini's come in two pages.
    ("/v1/models", |r| {
        if r.header("anthropic-version").is_empty() { openai_models() } else { anthropic_models(r) }
    }),
    ("/v1beta/models", gemini_models),
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

fn answer(request: &Recorded) -> Reply {
    let path = request.path_and_query.split('?').next().unwrap_or_default();
    match ROUTES.iter().find(|(route, _)| *route == path) {
        Some((_, reply)) => reply(request),
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
