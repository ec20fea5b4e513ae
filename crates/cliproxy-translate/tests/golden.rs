//! Golden fixtures of API-format translation: every case of `tests/fixtures/translate/` (at the
//! repository root) through every translated pair (a client format with a provider format of
//! another kind: 12 pairs), streamed and not, compared with what a reviewer accepted.
//!
//! Per case and pair the harness computes, with the crate's public interface only:
//! - the upstream request: `request.<client>.json` decoded ([`Pair::decode_request`]) and
//!   encoded for the provider, once as sent and once streamed (`"stream": true`, or for a
//!   Gemini client the `:streamGenerateContent` path, which the body does not carry); the
//!   model is set to the provider's, as the gateway does once it has resolved the client's name;
//! - the client's reply: `reply.<provider>.json` through [`Pair::response`];
//! - the client's stream: `stream.<provider>.sse` split into SSE events (name and data) and fed
//!   one by one to [`Pair::stream`], then finished (`client_stream.sse`), and the usage the
//!   translator counted (`client_stream.usage.json`, what the gateway's quotas see);
//! - the client's errors: each `error.<provider>.<status>.json` through [`Pair::error`].
//!
//! Each result is compared with its file under `<case>/expected/<client>__<provider>/` (JSON as
//! values, streams as exact text); a refusal is a file holding the error's text: `refused.txt`
//! (the request; `refused.stream.txt` only when the streamed one is refused otherwise) or
//! `client_reply.refused.txt`; an event the stream translator refuses ends the client stream
//! with an SSE comment `: golden harness: refused …`. A panic fails the case, naming the step,
//! and is never blessed. Timestamps an encoder takes from the
//! clock (a `created`/`created_at` within a day of now) read `"<clock>"` in the files, so that
//! the comparison does not depend on when it runs; any other value is kept.
//!
//! `CLIPROXY_BLESS=1` writes the files instead of comparing (and the matrix of
//! `docs/translation.md`, generated from them): bless once the codecs exist, then review every
//! changed file as a diff. Without it a missing file fails, naming it and how to bless.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    reason = "tests: a failed step should stop the test with its message"
)]

// The property tests live beside, in the same test binary (one per crate).
#[path = "golden/roundtrip.rs"]
mod roundtrip;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use cliproxy_translate::{Format, Pair};
use serde::Deserialize;
use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// The cases: one test each, so that a failure names its case. The directory listing must be
// exactly this list (`every_fixture_case_is_tested_and_the_matrix_cannot_shrink`).

macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        const CASES: &[&str] = &[$(stringify!($name)),*];

        mod case {
            $(
                #[test]
                fn $name() {
                    super::run_case(stringify!($name));
                }
            )*
        }
    };
}

cases!(
    plain_text,
    system_prompt,
    multi_turn,
    image,
    tool_call_single,
    tool_calls_parallel,
    tool_result,
    forced_tool_choice,
    structured_output,
    thinking,
    stop_sequences,
    sampling,
    max_tokens_hit,
    upstream_error,
    usage_cache_tokens,
);

/// The cases the issue names; the list above may grow, never lose one of these.
const REQUIRED_CASES: &[&str] = &[
    "plain_text",
    "system_prompt",
    "multi_turn",
    "image",
    "tool_call_single",
    "tool_calls_parallel",
    "tool_result",
    "forced_tool_choice",
    "structured_output",
    "thinking",
    "stop_sequences",
    "max_tokens_hit",
    "upstream_error",
    "usage_cache_tokens",
];

const BLESS_HINT: &str = "bless with `CLIPROXY_BLESS=1 cargo test -p cliproxy-translate --test golden` once the codecs are in, then review the diff";

const MATRIX_START: &str = "<!-- translation-matrix:start -->";
const MATRIX_END: &str = "<!-- translation-matrix:end -->";

/// What the harness writes into a client stream when the translator refused an event: an SSE
/// comment, so the file stays a valid stream and the refusal shows where it happened.
const STREAM_REFUSAL: &str = ": golden harness: refused ";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/translate")
}

fn translation_doc() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/translation.md")
}

fn blessing() -> bool {
    std::env::var_os("CLIPROXY_BLESS").is_some_and(|value| value == "1")
}

/// Every translated pair: a client format with a provider format of another kind. Identity
/// pairs are not translated (the gateway forwards the bytes).
fn pairs() -> Vec<Pair> {
    let mut pairs = Vec::new();
    for client in Format::ALL {
        for provider in Format::ALL {
            if client != provider {
                pairs.push(Pair::new(client, provider));
            }
        }
    }
    pairs
}

/// The model the gateway asks each provider for once it has resolved the client's name.
fn provider_model(format: Format) -> &'static str {
    match format {
        Format::OpenAiChat => "gpt-4.1",
        Format::OpenAiResponses => "gpt-5",
        Format::Anthropic => "claude-sonnet-4-5",
        Format::Gemini => "gemini-2.5-flash",
    }
}

fn pair_dir(pair: Pair) -> String {
    format!("{}__{}", pair.client.as_str(), pair.provider.as_str())
}

/// `case.json`: the feature the case covers and the client formats that cannot say it.
#[derive(Debug, Deserialize)]
struct CaseMeta {
    feature: String,
    #[serde(default)]
    not_expressible: BTreeMap<String, String>,
}

fn read_meta(case_dir: &Path) -> Result<CaseMeta, String> {
    let path = case_dir.join("case.json");
    let text = fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------------------
// Running a case.

/// One result of the harness for a pair, compared with (or written as) a file.
#[derive(Debug, Clone, PartialEq)]
struct Outcome {
    name: String,
    content: String,
    /// Compared as JSON values (key order and spacing do not matter) rather than as text.
    json: bool,
}

impl Outcome {
    fn json(name: impl Into<String>, bytes: &[u8]) -> Self {
        let text = normalize_clock(&String::from_utf8_lossy(bytes), now());
        // A body that is not JSON is kept as it is, so that the comparison shows it.
        let content = match serde_json::from_str::<Value>(&text) {
            Ok(value) => serde_json::to_string_pretty(&value).unwrap() + "\n",
            Err(_) => text,
        };
        Self { name: name.into(), content, json: true }
    }

    fn text(name: impl Into<String>, content: impl Into<String>) -> Self {
        Self { name: name.into(), content: content.into(), json: false }
    }
}

fn run_case(name: &str) {
    let failures = golden_case(&fixtures(), name, blessing());
    assert!(
        failures.is_empty(),
        "case {name}: {} failure(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Runs one case through every pair; blesses or compares. Returns the failures.
fn golden_case(root: &Path, name: &str, bless: bool) -> Vec<String> {
    let case_dir = root.join(name);
    let meta = match read_meta(&case_dir) {
        Ok(meta) => meta,
        Err(e) => return vec![e],
    };
    let mut failures = Vec::new();
    for pair in pairs() {
        let label = format!("{name} {}", pair_dir(pair));
        let (outcomes, broken) = run_pair(&case_dir, &meta, pair);
        for step in &broken {
            failures.push(format!("{label}: {step}"));
        }
        let dir = case_dir.join("expected").join(pair_dir(pair));
        if !broken.is_empty() && bless {
            // Never bless a pair whose translation panicked or whose fixture is broken.
            continue;
        }
        failures.extend(check(&dir, &outcomes, bless));
    }
    failures
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "(a panic without a message)".to_owned()
    }
}

/// Runs a step of the translation; a panic is a failure of that step, not of the harness.
fn guarded<T>(step: &str, f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result.map_err(|e| format!("{step}: {e}")),
        Err(panic) => Err(format!("{step}: the translation PANICKED: {}", panic_text(&*panic))),
    }
}

/// Everything the harness computes for one pair of one case, and the steps that could not
/// run (a panic, a broken fixture).
fn run_pair(case_dir: &Path, meta: &CaseMeta, pair: Pair) -> (Vec<Outcome>, Vec<String>) {
    let read = |name: &str| {
        let path = case_dir.join(name);
        fs::read(&path).map_err(|e| format!("{}: {e}", display_path(&path)))
    };
    let mut outcomes = Vec::new();
    let mut broken = Vec::new();
    let provider = pair.provider.as_str();

    if !meta.not_expressible.contains_key(pair.client.as_str()) {
        let step = guarded("request", || {
            let body = read(&format!("request.{}.json", pair.client.as_str()))?;
            let streamed =
                if pair.client == Format::Gemini { body.clone() } else { with_stream(&body)? };
            Ok((translate_request(pair, &body, false), translate_request(pair, &streamed, true)))
        });
        match step {
            Ok((plain, streamed)) => {
                match &plain {
                    Ok(upstream) => outcomes.push(Outcome::json("upstream_request.json", upstream)),
                    Err(e) => outcomes.push(Outcome::text("refused.txt", format!("{e}\n"))),
                }
                match (streamed, &plain) {
                    (Ok(upstream), _) => {
                        outcomes.push(Outcome::json("upstream_request.stream.json", &upstream));
                    }
                    // Refused for the same reason as the request that is not streamed: said once.
                    (Err(e), Err(plain)) if e == *plain => {}
                    (Err(e), _) => {
                        outcomes.push(Outcome::text("refused.stream.txt", format!("{e}\n")))
                    }
                }
            }
            Err(e) => broken.push(e),
        }
    }

    if case_dir.join(format!("reply.{provider}.json")).exists() {
        let step =
            guarded("reply", || Ok(pair.response(&read(&format!("reply.{provider}.json"))?)));
        match step {
            Ok(Ok(reply)) => outcomes.push(Outcome::json("client_reply.json", &reply)),
            Ok(Err(e)) => {
                outcomes.push(Outcome::text("client_reply.refused.txt", format!("{e}\n")))
            }
            Err(e) => broken.push(e),
        }
    }

    let step = guarded("stream", || {
        let stream = read(&format!("stream.{provider}.sse"))?;
        let stream =
            String::from_utf8(stream).map_err(|e| format!("stream.{provider}.sse: {e}"))?;
        Ok(translate_stream(pair, &split_sse(&stream)))
    });
    match step {
        Ok((client_stream, usage)) => {
            outcomes
                .push(Outcome::text("client_stream.sse", normalize_clock(&client_stream, now())));
            outcomes.push(Outcome::json("client_stream.usage.json", usage.to_string().as_bytes()));
        }
        Err(e) => broken.push(e),
    }

    let step = guarded("errors", || {
        let mut errors = Vec::new();
        for (status, file) in error_files(case_dir, pair.provider)? {
            let (client_status, body) = pair.error(status, &read(&file)?);
            let body = serde_json::from_slice::<Value>(&body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
            let value = serde_json::json!({ "status": client_status, "body": body });
            errors.push(Outcome::json(
                format!("client_error.{status}.json"),
                value.to_string().as_bytes(),
            ));
        }
        Ok(errors)
    });
    match step {
        Ok(errors) => outcomes.extend(errors),
        Err(e) => broken.push(e),
    }
    (outcomes, broken)
}

/// Decodes a client's request and encodes it for the provider, as the gateway does.
fn translate_request(pair: Pair, body: &[u8], stream: bool) -> Result<Vec<u8>, String> {
    let mut request = pair.decode_request(body).map_err(|e| e.to_string())?;
    if pair.client == Format::Gemini {
        // Gemini's path carries the model and streaming; the gateway fills them in.
        request.stream = stream;
    }
    request.model = provider_model(pair.provider).to_owned();
    pair.encode_request(&request).map_err(|e| e.to_string())
}

/// The request as a client asks for a stream: `"stream": true` in the body.
fn with_stream(body: &[u8]) -> Result<Vec<u8>, String> {
    let mut value: Value = serde_json::from_slice(body).map_err(|e| format!("request: {e}"))?;
    let object = value.as_object_mut().ok_or("request: not a JSON object")?;
    object.insert("stream".to_owned(), Value::Bool(true));
    Ok(value.to_string().into_bytes())
}

/// Feeds a provider's stream to the pair's translator event by event. A refused event stops
/// the stream (the gateway ends the client's stream there), marked with an SSE comment.
fn translate_stream(pair: Pair, events: &[SseEvent]) -> (String, Value) {
    let mut translator = pair.stream();
    let mut out = Vec::new();
    let mut refused = false;
    for (n, event) in events.iter().enumerate() {
        if let Err(e) = translator.feed(event.event.as_deref(), event.data.as_bytes(), &mut out) {
            let name = event.event.as_deref().unwrap_or("data");
            let _ = write!(
                TextSink(&mut out),
                "{STREAM_REFUSAL}event {n} ({name}): {}\n\n",
                e.to_string().replace('\n', " ")
            );
            refused = true;
            break;
        }
    }
    if !refused {
        translator.finish(&mut out);
    }
    let usage = translator.usage();
    let usage = serde_json::json!({
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cache_read_tokens": usage.cache_read_tokens,
        "cache_write_tokens": usage.cache_write_tokens,
        "reasoning_tokens": usage.reasoning_tokens,
    });
    (String::from_utf8_lossy(&out).into_owned(), usage)
}

/// `write!` into a byte buffer.
struct TextSink<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for TextSink<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// The provider's error answers of a case: `error.<provider>.<status>.json`, by status.
fn error_files(case_dir: &Path, provider: Format) -> Result<Vec<(u16, String)>, String> {
    let prefix = format!("error.{}.", provider.as_str());
    let mut files = Vec::new();
    for entry in fs::read_dir(case_dir).map_err(|e| format!("{}: {e}", case_dir.display()))? {
        let name = entry.map_err(|e| e.to_string())?.file_name().to_string_lossy().into_owned();
        if let Some(status) = name.strip_prefix(&prefix).and_then(|rest| rest.strip_suffix(".json"))
        {
            let status =
                status.parse().map_err(|_| format!("{name}: the status is not a number"))?;
            files.push((status, name));
        }
    }
    files.sort();
    Ok(files)
}

// ---------------------------------------------------------------------------------------------
// SSE framing, as the gateway's framer hands events to the translator.

/// One SSE event: its `event:` name, if any, and its data lines joined by `\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SseEvent {
    event: Option<String>,
    data: String,
}

/// Splits an SSE stream into events by the rules of the HTML standard: lines end in CRLF, LF
/// or CR; a blank line dispatches; `:` starts a comment; one space after the colon is not
/// part of the value; an event without data is not dispatched, nor an unterminated last one.
fn split_sse(text: &str) -> Vec<SseEvent> {
    let mut events = Vec::new();
    let mut name: Option<String> = None;
    let mut data: Option<String> = None;
    let normalized = text.replace("\r\n", "\n").replace('\r', "\n");
    let mut lines = normalized.split('\n').peekable();
    while let Some(line) = lines.next() {
        if lines.peek().is_none() {
            // What follows the last line break is an unterminated line: dropped.
            break;
        }
        if line.is_empty() {
            if let Some(data) = data.take() {
                events.push(SseEvent { event: name.take(), data });
            }
            name = None;
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => name = Some(value.to_owned()),
            "data" => match &mut data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => data = Some(value.to_owned()),
            },
            _ => {}
        }
    }
    events
}

// ---------------------------------------------------------------------------------------------
// Comparing and blessing.

/// Compares the outcomes with the files of `dir` (or writes them when blessing). Returns the
/// failures, each naming its file.
fn check(dir: &Path, outcomes: &[Outcome], bless: bool) -> Vec<String> {
    let shown = display_path(dir);
    if bless {
        return bless_dir(dir, outcomes).err().into_iter().collect();
    }
    if !dir.is_dir() {
        return vec![format!(
            "{shown}/: missing (no expected outcome for this pair yet): {BLESS_HINT}"
        )];
    }
    let mut failures = Vec::new();
    for outcome in outcomes {
        let path = dir.join(&outcome.name);
        let shown = display_path(&path);
        let Ok(expected) = fs::read_to_string(&path) else {
            failures.push(format!(
                "{shown}: missing; the translation gives:\n{}\n  ({BLESS_HINT})",
                excerpt(&outcome.content)
            ));
            continue;
        };
        let same = if outcome.json {
            match (
                serde_json::from_str::<Value>(&expected),
                serde_json::from_str::<Value>(&outcome.content),
            ) {
                (Ok(expected), Ok(actual)) => expected == actual,
                (Err(_), Ok(_)) => false,
                (_, Err(_)) => {
                    failures.push(format!(
                        "{shown}: the translation's output is not JSON:\n{}",
                        excerpt(&outcome.content)
                    ));
                    continue;
                }
            }
        } else {
            expected == outcome.content
        };
        if !same {
            failures.push(format!(
                "{shown}: differs\n  expected: {}\n  actual:   {}\n  first difference: {}",
                excerpt(&expected),
                excerpt(&outcome.content),
                first_difference(&expected, &outcome.content)
            ));
        }
    }
    let produced: BTreeSet<&str> = outcomes.iter().map(|o| o.name.as_str()).collect();
    for name in file_names(dir) {
        if !produced.contains(name.as_str()) {
            failures.push(format!(
                "{}: expected, but the translation no longer produces it (a refusal that is now translated, or the reverse): {BLESS_HINT}",
                display_path(&dir.join(&name))
            ));
        }
    }
    failures
}

/// Writes the outcomes into `dir` and removes the files no outcome names. Each file is written
/// whole under a temporary name and renamed, so a concurrent reader never sees half of it.
fn bless_dir(dir: &Path, outcomes: &[Outcome]) -> Result<(), String> {
    fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let produced: BTreeSet<&str> = outcomes.iter().map(|o| o.name.as_str()).collect();
    for name in file_names(dir) {
        if !produced.contains(name.as_str()) {
            fs::remove_file(dir.join(&name)).map_err(|e| format!("{name}: {e}"))?;
        }
    }
    for outcome in outcomes {
        let path = dir.join(&outcome.name);
        // The cases' tests and the matrix's bless the same files from several threads: each
        // write has a name of its own.
        static WRITES: AtomicUsize = AtomicUsize::new(0);
        let n = WRITES.fetch_add(1, Ordering::Relaxed);
        let temporary = dir.join(format!(".{}.{}.{n}.tmp", outcome.name, std::process::id()));
        fs::write(&temporary, &outcome.content)
            .map_err(|e| format!("{}: {e}", temporary.display()))?;
        fs::rename(&temporary, &path).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| entry.path().is_file())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| !name.starts_with('.'))
        .collect();
    names.sort();
    names
}

/// A path as the repository names it (`tests/fixtures/translate/...`), for messages.
fn display_path(path: &Path) -> String {
    let text = path.to_string_lossy();
    match text.find("tests/fixtures/translate") {
        Some(at) => text[at..].to_owned(),
        None => text.into_owned(),
    }
}

fn excerpt(text: &str) -> String {
    const MAX: usize = 600;
    let flat = text.replace('\n', "⏎");
    match flat.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}… ({} bytes)", &flat[..at], text.len()),
        None => flat,
    }
}

fn first_difference(expected: &str, actual: &str) -> String {
    for (n, (e, a)) in expected.lines().zip(actual.lines()).enumerate() {
        if e != a {
            return format!("line {}: expected {:?}, got {:?}", n + 1, e, a);
        }
    }
    format!(
        "after the common lines: {} lines expected, {} given",
        expected.lines().count(),
        actual.lines().count()
    )
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Replaces `"created":N` and `"created_at":N` when N is within a day of `now` (an encoder
/// that took the time from the clock) by `"created":"<clock>"`; any other value stays.
fn normalize_clock(text: &str, now: u64) -> String {
    const DAY: u64 = 86_400;
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = ["\"created\":", "\"created_at\":"]
        .iter()
        .filter_map(|key| rest.find(key).map(|at| (at, key.len())))
        .min()
    {
        let (at, key_len) = at;
        let value_start = at + key_len;
        let spaces = rest[value_start..].len() - rest[value_start..].trim_start().len();
        let digits_start = value_start + spaces;
        let digits = rest[digits_start..].bytes().take_while(u8::is_ascii_digit).count();
        out.push_str(&rest[..digits_start]);
        let number = &rest[digits_start..digits_start + digits];
        match number.parse::<u64>() {
            Ok(value) if value.abs_diff(now) <= DAY => out.push_str("\"<clock>\""),
            _ => out.push_str(number),
        }
        rest = &rest[digits_start + digits..];
    }
    out.push_str(rest);
    out
}

// ---------------------------------------------------------------------------------------------
// The matrix of docs/translation.md, generated from the blessed outcomes.

/// `dropped.json`: what a codec drops without refusing, because it changes nothing the client
/// is owed (one entry per format and field). `cases` names the fixture cases that carry the
/// field, so that their cells say so; `direction` is `request` (the client's field, dropped
/// for any other provider) or `reply` (the provider's field, dropped for any other client);
/// `sample`, for a request field, is top-level JSON that carries it, merged into the
/// plain_text request to check that it is indeed dropped (the upstream request is the same).
#[derive(Debug, Deserialize)]
struct Dropped {
    format: String,
    direction: String,
    field: String,
    why: String,
    #[serde(default)]
    cases: Vec<String>,
    #[serde(default)]
    sample: Option<serde_json::Map<String, Value>>,
}

fn read_dropped(root: &Path) -> Result<Vec<Dropped>, String> {
    let path = root.join("dropped.json");
    let text = fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let dropped: Vec<Dropped> =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    for entry in &dropped {
        if Format::from_name(&entry.format).is_none() {
            return Err(format!("dropped.json: {:?} is not a format", entry.format));
        }
        if entry.direction != "request" && entry.direction != "reply" {
            return Err(format!(
                "dropped.json: direction {:?} is neither request nor reply",
                entry.direction
            ));
        }
    }
    Ok(dropped)
}

/// The case directories of `root` (those with a `case.json`), sorted.
fn case_names(root: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| entry.path().join("case.json").is_file())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Text for a table cell: one line, no `|`, no backquote (the cell quotes it).
fn cell_text(text: &str) -> String {
    text.lines().next().unwrap_or("").trim().replace('|', "\\|").replace('`', "'")
}

/// The generated section: per case (in `order`, then any other case by name), a table of the
/// client format (rows) by the provider format (columns); then the list of dropped fields.
fn matrix(root: &Path, order: &[&str], dropped: &[Dropped]) -> Result<String, String> {
    let mut names: Vec<String> = order.iter().map(|&name| name.to_owned()).collect();
    for name in case_names(root) {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    let mut out = String::new();
    out.push_str(MATRIX_START);
    out.push_str(
        "\n<!-- Generated from tests/fixtures/translate by crates/cliproxy-translate/tests/golden.rs; \
         do not edit: `CLIPROXY_BLESS=1 cargo test -p cliproxy-translate --test golden` rewrites it. -->\n\n",
    );
    out.push_str(
        "Rows: the client's format (the endpoint it called); columns: the provider's wire format. \
         *translated*: the request, the reply, the stream and the errors are translated (the \
         expected outputs are the fixtures' `expected/` files); *refused*: the request is answered \
         with a 400 in the client's format carrying this text; *passthrough*: same format, the \
         bytes are forwarded untouched; *n/a*: the client's format cannot say this.\n",
    );
    for name in &names {
        let case_dir = root.join(name);
        let meta = read_meta(&case_dir)?;
        let _ = write!(out, "\n### {} (`{name}`)\n\n", meta.feature);
        out.push_str("| client \\ provider |");
        for provider in Format::ALL {
            let _ = write!(out, " {} |", provider.as_str());
        }
        out.push_str("\n|---|---|---|---|---|\n");
        for client in Format::ALL {
            let _ = write!(out, "| {} |", client.as_str());
            for provider in Format::ALL {
                let cell = cell(&case_dir, name, &meta, Pair::new(client, provider), dropped);
                let _ = write!(out, " {cell} |");
            }
            out.push('\n');
        }
    }
    out.push_str("\n### Dropped without a refusal\n\n");
    out.push_str(
        "Fields that change nothing the client is owed, dropped when the other side has no \
         counterpart (from `tests/fixtures/translate/dropped.json`):\n\n",
    );
    out.push_str("| format | direction | field | why |\n|---|---|---|---|\n");
    for entry in dropped {
        let _ = writeln!(
            out,
            "| {} | {} | `{}` | {} |",
            entry.format,
            entry.direction,
            cell_text(&entry.field),
            cell_text(&entry.why)
        );
    }
    out.push_str(MATRIX_END);
    Ok(out)
}

fn cell(case_dir: &Path, name: &str, meta: &CaseMeta, pair: Pair, dropped: &[Dropped]) -> String {
    if let Some(why) = meta.not_expressible.get(pair.client.as_str()) {
        return format!("n/a: {}", cell_text(why));
    }
    if pair.is_identity() {
        return "passthrough".to_owned();
    }
    let dir = case_dir.join("expected").join(pair_dir(pair));
    if !dir.is_dir() {
        return "not blessed".to_owned();
    }
    let read = |file: &str| fs::read_to_string(dir.join(file)).ok();
    if let Some(error) = read("refused.txt") {
        return format!("refused: `{}`", cell_text(&error));
    }
    let mut text = "translated".to_owned();
    if let Some(error) = read("refused.stream.txt") {
        let _ = write!(text, "; streamed: refused: `{}`", cell_text(&error));
    }
    if let Some(error) = read("client_reply.refused.txt") {
        let _ = write!(text, "; reply refused: `{}`", cell_text(&error));
    }
    if let Some(stream) = read("client_stream.sse")
        && let Some(at) = stream.find(STREAM_REFUSAL)
    {
        let _ =
            write!(text, "; stream refused: `{}`", cell_text(&stream[at + STREAM_REFUSAL.len()..]));
    }
    for entry in dropped {
        let side = if entry.direction == "request" { pair.client } else { pair.provider };
        if entry.format == side.as_str() && entry.cases.iter().any(|case| case == name) {
            let _ = write!(text, "; drops `{}`", cell_text(&entry.field));
        }
    }
    text
}

/// `doc` with the text between the markers (included) replaced by `section`.
fn splice(doc: &str, section: &str) -> Result<String, String> {
    let start = doc.find(MATRIX_START).ok_or(format!("no {MATRIX_START} marker"))?;
    let end = doc.find(MATRIX_END).ok_or(format!("no {MATRIX_END} marker"))? + MATRIX_END.len();
    if end < start {
        return Err("the end marker comes before the start marker".to_owned());
    }
    Ok(format!("{}{section}{}", &doc[..start], &doc[end..]))
}

// ---------------------------------------------------------------------------------------------
// Tests of the fixtures and of the matrix.

#[test]
fn every_fixture_case_is_tested_and_the_matrix_cannot_shrink() {
    let root = fixtures();
    let on_disk = case_names(&root);
    let mut listed: Vec<String> = CASES.iter().map(|&c| c.to_owned()).collect();
    listed.sort();
    assert_eq!(on_disk, listed, "the case directories and the `cases!` list differ");
    assert!(CASES.len() >= 12, "{} cases: the issue asks for at least 12", CASES.len());
    for required in REQUIRED_CASES {
        assert!(CASES.contains(required), "the case {required} is gone");
    }
    let pairs = pairs();
    assert_eq!(pairs.len(), 12, "every client format with every other provider format");
    assert!(pairs.iter().all(|pair| !pair.is_identity()));

    // Every case holds what the harness reads, in every format.
    let mut requests = 0;
    let mut streams = 0;
    for name in CASES {
        let dir = root.join(name);
        let meta = read_meta(&dir).unwrap();
        assert!(!meta.feature.is_empty(), "{name}: case.json names no feature");
        for format in Format::ALL {
            let f = format.as_str();
            let request = dir.join(format!("request.{f}.json"));
            match meta.not_expressible.get(f) {
                Some(why) => {
                    assert!(
                        !request.exists(),
                        "{name}: request.{f}.json exists but case.json says: {why}"
                    );
                }
                None => {
                    let body: Value = serde_json::from_slice(&fs::read(&request).unwrap())
                        .unwrap_or_else(|e| panic!("{name}/request.{f}.json: {e}"));
                    assert!(body.is_object(), "{name}/request.{f}.json is not an object");
                    requests += 1;
                }
            }
            let errors = error_files(&dir, format).unwrap();
            let reply = dir.join(format!("reply.{f}.json"));
            if errors.is_empty() {
                let body: Value = serde_json::from_slice(&fs::read(&reply).unwrap())
                    .unwrap_or_else(|e| panic!("{name}/reply.{f}.json: {e}"));
                assert!(body.is_object(), "{name}/reply.{f}.json is not an object");
            } else {
                let statuses: Vec<u16> = errors.iter().map(|(status, _)| *status).collect();
                assert_eq!(statuses, [400, 429], "{name}: the error answers of {f}");
                for (_, file) in &errors {
                    let _: Value = serde_json::from_slice(&fs::read(dir.join(file)).unwrap())
                        .unwrap_or_else(|e| panic!("{name}/{file}: {e}"));
                }
            }
            let stream = fs::read_to_string(dir.join(format!("stream.{f}.sse"))).unwrap();
            let events = split_sse(&stream);
            // Gemini may send a whole reply (a function call) in one chunk.
            assert!(!events.is_empty(), "{name}/stream.{f}.sse: no event");
            for event in &events {
                // Every event is JSON, but OpenAI Chat's terminator.
                if event.data != "[DONE]" {
                    let _: Value = serde_json::from_str(&event.data)
                        .unwrap_or_else(|e| panic!("{name}/stream.{f}.sse: {e}: {}", event.data));
                }
            }
            streams += 1;
        }
    }
    // 15 cases × 4 formats, less the requests a format cannot say.
    assert!(requests >= 12 * 4 - 2, "{requests} requests");
    assert_eq!(streams, CASES.len() * 4);
}

#[test]
fn fixture_streams_are_shaped_as_each_api_sends_them() {
    let root = fixtures();
    for name in CASES {
        let dir = root.join(name);
        let read =
            |f: &str| split_sse(&fs::read_to_string(dir.join(format!("stream.{f}.sse"))).unwrap());
        let chat = read("openai-chat");
        assert!(chat.iter().all(|e| e.event.is_none()), "{name}: OpenAI Chat names no events");
        let anthropic = read("anthropic");
        assert_eq!(anthropic[0].event.as_deref(), Some("message_start"), "{name}");
        let responses = read("openai-responses");
        for (n, event) in responses.iter().enumerate() {
            let data: Value = serde_json::from_str(&event.data).unwrap();
            assert_eq!(data["sequence_number"], n, "{name}: Responses event {n}");
            assert_eq!(Some(data["type"].as_str().unwrap()), event.event.as_deref(), "{name}");
        }
        let gemini = read("gemini");
        assert!(gemini.iter().all(|e| e.event.is_none()), "{name}: Gemini names no events");
        if *name == "upstream_error" {
            assert_eq!(anthropic.last().unwrap().event.as_deref(), Some("error"));
            assert!(chat.last().unwrap().data.starts_with("{\"error\""));
            assert_eq!(responses.last().unwrap().event.as_deref(), Some("response.failed"));
            assert!(gemini.last().unwrap().data.starts_with("{\"error\""));
        } else {
            assert_eq!(chat.last().unwrap().data, "[DONE]", "{name}");
            assert_eq!(anthropic.last().unwrap().event.as_deref(), Some("message_stop"), "{name}");
            let last = responses.last().unwrap().event.as_deref().unwrap();
            assert!(matches!(last, "response.completed" | "response.incomplete"), "{name}: {last}");
            let last: Value = serde_json::from_str(&gemini.last().unwrap().data).unwrap();
            assert!(last["candidates"][0]["finishReason"].is_string(), "{name}: no finishReason");
        }
    }
}

#[test]
fn docs_translation_matrix_is_generated_from_the_fixtures() {
    let root = fixtures();
    let bless = blessing();
    if bless {
        // The cases' own tests bless too, in parallel; the matrix must see them all written.
        let failures: Vec<String> =
            CASES.iter().flat_map(|name| golden_case(&root, name, true)).collect();
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }
    let dropped = read_dropped(&root).unwrap();
    let section = matrix(&root, CASES, &dropped).unwrap();
    let path = translation_doc();
    let doc = fs::read_to_string(&path).unwrap();
    let wanted = splice(&doc, &section).unwrap();
    if bless {
        fs::write(&path, &wanted).unwrap();
        return;
    }
    assert!(
        doc == wanted,
        "docs/translation.md: the matrix between the markers is not what the fixtures give ({}); {BLESS_HINT}",
        first_difference(&doc, &wanted)
    );
}

// ---------------------------------------------------------------------------------------------
// Tests of the harness itself, on inputs that need no codec.

#[test]
fn sse_splitter_follows_the_event_stream_rules() {
    let text = "event: message_start\ndata: {\"a\":1}\n\n\
                : a comment\n\
                data: [DONE]\n\n\
                event: ping\n\n\
                data:no space\r\ndata:  two spaces\r\n\r\n\
                id: 7\rretry: 10\rdata: cr\r\r\
                event: x\ndata: unterminated";
    assert_eq!(
        split_sse(text),
        [
            SseEvent { event: Some("message_start".into()), data: "{\"a\":1}".into() },
            SseEvent { event: None, data: "[DONE]".into() },
            // `event: ping` had no data: not dispatched, and its name does not leak onward.
            SseEvent { event: None, data: "no space\n two spaces".into() },
            SseEvent { event: None, data: "cr".into() },
        ]
    );
    assert_eq!(split_sse(""), []);
    assert_eq!(split_sse("data: x"), [], "an event without its blank line is not dispatched");
    assert_eq!(split_sse("data\n\n"), [SseEvent { event: None, data: String::new() }]);
}

#[test]
fn clock_timestamps_are_masked_and_others_kept() {
    let now = 1_800_000_000;
    assert_eq!(
        normalize_clock(
            r#"{"created":1800000100,"x":{"created_at": 1799999000},"created":1764950400}"#,
            now
        ),
        r#"{"created":"<clock>","x":{"created_at": "<clock>"},"created":1764950400}"#
    );
    assert_eq!(
        normalize_clock(r#"{"created":"soon","created_at":}"#, now),
        r#"{"created":"soon","created_at":}"#
    );
}

fn outcome_set() -> Vec<Outcome> {
    vec![
        Outcome::json("upstream_request.json", br#"{"b":1,"a":[true]}"#),
        Outcome::text("client_stream.sse", "event: x\ndata: {}\n\n"),
    ]
}

#[test]
fn check_blesses_then_compares_and_names_each_difference() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("tests/fixtures/translate/case/expected/anthropic__gemini");

    // Nothing blessed: one failure that says how to bless.
    let failures = check(&dir, &outcome_set(), false);
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(
        failures[0].contains("tests/fixtures/translate/case/expected/anthropic__gemini/: missing")
    );
    assert!(failures[0].contains("CLIPROXY_BLESS=1"), "{}", failures[0]);

    // Blessed, with a stale file left from before: the stale file goes.
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("refused.txt"), "old refusal\n").unwrap();
    assert_eq!(check(&dir, &outcome_set(), true), Vec::<String>::new());
    assert_eq!(file_names(&dir), ["client_stream.sse", "upstream_request.json"]);
    assert_eq!(check(&dir, &outcome_set(), false), Vec::<String>::new());

    // JSON is compared as values: another key order and spacing is the same.
    fs::write(dir.join("upstream_request.json"), "{ \"a\": [ true ], \"b\": 1 }").unwrap();
    assert_eq!(check(&dir, &outcome_set(), false), Vec::<String>::new());

    // A different value, a different stream byte, a missing file, a stale file: each named.
    let mut changed = outcome_set();
    changed[0] = Outcome::json("upstream_request.json", br#"{"b":2,"a":[true]}"#);
    changed[1] = Outcome::text("client_stream.sse", "event: x\ndata: {} \n\n");
    changed.push(Outcome::text("client_reply.refused.txt", "no\n"));
    let failures = check(&dir, &changed, false);
    assert_eq!(failures.len(), 3, "{failures:#?}");
    assert!(
        failures[0].contains("anthropic__gemini/upstream_request.json: differs"),
        "{}",
        failures[0]
    );
    assert!(failures[1].contains("client_stream.sse: differs"), "{}", failures[1]);
    assert!(
        failures[1].contains(r#"line 2: expected "data: {}", got "data: {} ""#),
        "{}",
        failures[1]
    );
    assert!(failures[2].contains("client_reply.refused.txt: missing"), "{}", failures[2]);
    let failures = check(&dir, &outcome_set()[..1], false);
    assert_eq!(failures.len(), 1, "{failures:#?}");
    assert!(
        failures[0]
            .contains("client_stream.sse: expected, but the translation no longer produces it")
    );

    // Output that is not JSON where JSON is owed.
    let failures = check(&dir, &[Outcome::json("upstream_request.json", b"{oops")], false);
    assert!(failures.iter().any(|f| f.contains("is not JSON")), "{failures:#?}");
}

#[test]
fn matrix_is_computed_from_the_expected_outcomes() {
    let temp = tempfile::tempdir().unwrap();
    let root = temp.path();
    let case = root.join("tiny");
    fs::create_dir_all(&case).unwrap();
    fs::write(
        case.join("case.json"),
        r#"{"feature": "Tiny", "not_expressible": {"openai-responses": "Responses has no | such field."}}"#,
    )
    .unwrap();
    let expected = |pair: &str, files: &[(&str, &str)]| {
        let dir = case.join("expected").join(pair);
        fs::create_dir_all(&dir).unwrap();
        for (name, text) in files {
            fs::write(dir.join(name), text).unwrap();
        }
    };
    expected(
        "anthropic__openai-chat",
        &[("refused.txt", "top_k has no counterpart in the `OpenAI` API\n")],
    );
    expected(
        "anthropic__gemini",
        &[("upstream_request.json", "{}"), ("client_reply.refused.txt", "bad reply\n")],
    );
    expected(
        "anthropic__openai-responses",
        &[
            ("upstream_request.json", "{}"),
            (
                "client_stream.sse",
                "data: {}\n\n: golden harness: refused event 3 (data): broken\n\n",
            ),
        ],
    );
    expected("gemini__anthropic", &[("upstream_request.json", "{}")]);
    let dropped: Vec<Dropped> = serde_json::from_str(
        r#"[{"format": "gemini", "direction": "request", "field": "labels", "why": "billing only", "cases": ["tiny"]},
            {"format": "openai-chat", "direction": "reply", "field": "system_fingerprint", "why": "no counterpart"}]"#,
    )
    .unwrap();
    let table = matrix(root, &[], &dropped).unwrap();
    let rows: Vec<&str> = table.lines().filter(|line| line.starts_with("| ")).collect();
    assert_eq!(
        rows,
        [
            "| client \\ provider | openai-chat | openai-responses | anthropic | gemini |",
            "| openai-chat | passthrough | not blessed | not blessed | not blessed |",
            "| openai-responses | n/a: Responses has no \\| such field. | n/a: Responses has no \\| such field. | n/a: Responses has no \\| such field. | n/a: Responses has no \\| such field. |",
            "| anthropic | refused: `top_k has no counterpart in the 'OpenAI' API` | translated; stream refused: `event 3 (data): broken` | passthrough | translated; reply refused: `bad reply` |",
            "| gemini | not blessed | not blessed | translated; drops `labels` | passthrough |",
            "| format | direction | field | why |",
            "| gemini | request | `labels` | billing only |",
            "| openai-chat | reply | `system_fingerprint` | no counterpart |",
        ]
    );
    assert!(table.starts_with(MATRIX_START) && table.ends_with(MATRIX_END));
    assert!(table.contains("\n### Tiny (`tiny`)\n"));

    let doc = format!("# Title\n\nprose\n\n{MATRIX_START}\nold\n{MATRIX_END}\n\nmore prose\n");
    let spliced = splice(&doc, &table).unwrap();
    assert_eq!(spliced, format!("# Title\n\nprose\n\n{table}\n\nmore prose\n"));
    assert_eq!(splice(&spliced, &table).unwrap(), spliced, "splicing twice changes nothing");
    assert!(splice("no markers", &table).is_err());
}

#[test]
fn a_dropped_request_field_changes_nothing_upstream() {
    // Each request field the list says is dropped, added to the plain_text request of its
    // format: every other provider gets the same request as without it (not a refusal).
    let root = fixtures();
    let mut failures = Vec::new();
    let mut checked = 0;
    for entry in read_dropped(&root).unwrap() {
        let Some(sample) = &entry.sample else { continue };
        let client = Format::from_name(&entry.format).unwrap();
        let path = root.join(format!("plain_text/request.{}.json", entry.format));
        let plain = fs::read(&path).unwrap();
        let mut with: Value = serde_json::from_slice(&plain).unwrap();
        for (key, value) in sample {
            with[key] = value.clone();
        }
        let with = with.to_string().into_bytes();
        for provider in Format::ALL.into_iter().filter(|&p| p != client) {
            let pair = Pair::new(client, provider);
            let label = format!("{} `{}` to {}", entry.format, entry.field, provider.as_str());
            let translate = |body: &[u8]| {
                guarded("request", || {
                    let upstream = translate_request(pair, body, false)?;
                    serde_json::from_slice::<Value>(&upstream).map_err(|e| e.to_string())
                })
            };
            match (translate(&plain), translate(&with)) {
                (Ok(without), Ok(with)) if without == with => checked += 1,
                (Ok(_), Ok(with)) => {
                    failures.push(format!("{label}: not dropped, it gives {with}"))
                }
                (without, with) => {
                    failures.push(format!("{label}: without it {without:?}, with it {with:?}"));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "dropped.json says so, the codecs do not:\n{}",
        failures.join("\n")
    );
    assert!(checked >= 3 * 5, "only {checked} checks: the samples are gone");
}

#[test]
fn the_dropped_list_names_real_formats_and_cases() {
    let dropped = read_dropped(&fixtures()).unwrap();
    assert!(!dropped.is_empty());
    for entry in &dropped {
        assert!(!entry.field.is_empty() && !entry.why.is_empty(), "{entry:?}");
        for case in &entry.cases {
            assert!(CASES.contains(&case.as_str()), "dropped.json: no case {case}");
        }
    }
}
