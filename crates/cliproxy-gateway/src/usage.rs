//! Token usage, read from upstream replies as they pass through: the final `usage` of OpenAI
//! replies and streams, `message_start` / `message_delta` of Anthropic streams, and
//! `usageMetadata` of Gemini replies.
//!
//! Cache tokens are read too, and [`Usage`] holds them in one form whatever the provider:
//! `input_tokens` is the whole prompt, cached tokens included, and the two cache figures are
//! the parts of it read from and written to the provider's prompt cache. OpenAI (Chat:
//! `prompt_tokens_details.cached_tokens`; Responses: `input_tokens_details.cached_tokens`) and
//! Gemini (`cachedContentTokenCount`) count cached tokens inside the prompt already; Anthropic
//! leaves `cache_read_input_tokens` and `cache_creation_input_tokens` out of its
//! `input_tokens`, so they are added to it here. The token quota and the tokens-per-minute
//! limits count `input_tokens + output_tokens`: every prompt token the provider processed,
//! cached or not, so that a key's token count does not depend on which provider served it
//! (the discount of a cache hit shows in the cost, which prices each kind apart).
//!
//! The scanner never changes the bytes it sees and never buffers more than a bounded amount:
//! SSE is split into events as it arrives and only events that can carry usage are parsed;
//! plain JSON bodies are kept up to [`MAX_JSON_BODY`] and parsed at the end.

use serde::Deserialize;
use serde_json::Value;

use crate::api::ApiFormat;
use crate::sse::SseLines;

/// Tokens consumed by one request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt (input) tokens, the cached ones included.
    pub input_tokens: u64,
    /// Generated (output) tokens.
    pub output_tokens: u64,
    /// Prompt tokens read from the provider's prompt cache (a part of `input_tokens`).
    pub cache_read_tokens: u64,
    /// Prompt tokens written to the provider's prompt cache (a part of `input_tokens`; only
    /// Anthropic reports them).
    pub cache_write_tokens: u64,
}

impl Usage {
    /// A usage of plain (uncached) prompt and output tokens.
    pub const fn new(input_tokens: u64, output_tokens: u64) -> Self {
        Self { input_tokens, output_tokens, cache_read_tokens: 0, cache_write_tokens: 0 }
    }

    /// The tokens the quota and the tokens-per-minute limits count: the whole prompt (cached
    /// tokens included) and the output.
    pub const fn counted(&self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }
}

/// The tokens a request's prompt is taken to hold before the provider says: one per four
/// bytes of its body, rounded up. Counting every byte of the JSON (keys, quotes, escapes)
/// overestimates the text of real prompts, whose tokens run about four bytes of English
/// each; it stands in for the usage only while it is unknown (reserved against the limits,
/// and charged when the reply reports none), it costs nothing to compute, and no tokenizer
/// would be right for every provider anyway. Text in scripts of three-byte characters at about
/// one token each is the case it undercounts, by up to a quarter.
pub(crate) fn prompt_estimate(body_len: usize) -> u64 {
    u64::try_from(body_len.div_ceil(4)).unwrap_or(u64::MAX)
}

/// Largest non-streamed body kept for usage extraction; beyond it usage is unknown.
pub(crate) const MAX_JSON_BODY: usize = 8 * 1024 * 1024;

/// Largest single SSE event kept; a longer one is skipped.
pub(crate) const MAX_SSE_EVENT: usize = 1024 * 1024;

/// Reads usage from a body fed to it chunk by chunk.
#[derive(Debug)]
pub struct UsageScanner {
    sse: bool,
    /// SSE: the stream's lines, from the one framer (`sse.rs`).
    lines: SseLines,
    /// JSON: the body so far.
    buffer: Vec<u8>,
    /// JSON: set when the body exceeded its cap; it is not read.
    overflow: bool,
    /// The cap on the JSON body: [`MAX_JSON_BODY`] except under the fuzzer, which needs caps
    /// small enough for its inputs to reach.
    max_json_body: usize,
    /// What the lines and the body said.
    reader: Reader,
    /// A usage known before the body is read ([`UsageScanner::reporting`]): the body is not
    /// read.
    known: Option<Usage>,
}

impl UsageScanner {
    /// A scanner for a body in `format`; `sse` when the body is `text/event-stream`.
    pub fn new(format: ApiFormat, sse: bool) -> Self {
        Self::with_caps(format, sse, MAX_JSON_BODY, MAX_SSE_EVENT)
    }

    /// A scanner with its own caps on the JSON body and on an SSE line or event: for the
    /// `usage_scanner` fuzz target, whose inputs are too short to reach the real caps.
    #[doc(hidden)]
    pub fn with_caps(
        format: ApiFormat,
        sse: bool,
        max_json_body: usize,
        max_sse_event: usize,
    ) -> Self {
        Self {
            sse,
            lines: SseLines::new(max_sse_event),
            buffer: Vec::new(),
            overflow: false,
            max_json_body,
            reader: Reader {
                format,
                event: Vec::new(),
                max_sse_event,
                input: None,
                output: None,
                cache_read: None,
                cache_write: None,
            },
            known: None,
        }
    }

    /// A scanner that reports `usage` and reads nothing: for a whole reply whose usage was
    /// read before it was translated, in the provider's format, which may say more than the
    /// client's.
    pub(crate) fn reporting(usage: Usage) -> Self {
        let mut scanner = Self::new(ApiFormat::OpenAi, false);
        scanner.known = Some(usage);
        // Nothing is kept of the body: it is not read.
        scanner.overflow = true;
        scanner
    }

    /// The bytes held now: the unfinished line or the JSON body so far, and the SSE event
    /// being read. For the fuzz target, which asserts that neither passes its cap.
    #[doc(hidden)]
    pub fn buffered(&self) -> (usize, usize) {
        let held = if self.sse { self.lines.held() } else { self.buffer.len() };
        (held, self.reader.event.len())
    }

    /// Feeds the next chunk of the body.
    pub fn feed(&mut self, chunk: &[u8]) {
        if self.sse {
            self.lines.feed(chunk, |line| self.reader.line(line));
        } else if !self.overflow {
            if self.buffer.len() + chunk.len() > self.max_json_body {
                self.overflow = true;
                self.buffer = Vec::new();
            } else {
                self.buffer.extend_from_slice(chunk);
            }
        }
    }

    /// Marks the end of the body: a JSON body is parsed, a last unterminated SSE event is read.
    pub fn finish(&mut self) {
        if self.sse {
            self.lines.finish(|line| self.reader.line(line));
            self.reader.dispatch();
        } else if !self.overflow && !self.buffer.is_empty() {
            let body = std::mem::take(&mut self.buffer);
            // Gemini's non-SSE stream is one JSON array of responses.
            if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
                if let Ok(items) = serde_json::from_slice::<Vec<Carrier>>(&body) {
                    items.iter().for_each(|item| self.reader.extract(item));
                }
            } else if let Ok(reply) = serde_json::from_slice::<Carrier>(&body) {
                self.reader.extract(&reply);
            }
        }
    }

    /// The usage seen so far, if any was reported.
    pub fn usage(&self) -> Option<Usage> {
        if self.known.is_some() {
            return self.known;
        }
        let Reader { input, output, cache_read, cache_write, .. } = self.reader;
        if input.is_none() && output.is_none() {
            return None;
        }
        let cache_read = cache_read.unwrap_or(0);
        let cache_write = cache_write.unwrap_or(0);
        let mut input = input.unwrap_or(0);
        if self.reader.format == ApiFormat::Anthropic {
            // Anthropic's `input_tokens` leaves the cached prompt out; the other providers'
            // prompt counts hold it already.
            input = input.saturating_add(cache_read).saturating_add(cache_write);
        }
        Some(Usage {
            input_tokens: input,
            output_tokens: output.unwrap_or(0),
            // A provider's figures are trusted, but never past the prompt they are part of.
            cache_read_tokens: cache_read.min(input),
            cache_write_tokens: cache_write.min(input.saturating_sub(cache_read)),
        })
    }

    /// Whether the event stream fed so far ends at an event boundary (always, for a scanner
    /// of a JSON body, which is not framed): the body wrapper sends an error event of its own
    /// only there.
    pub(crate) fn at_event_boundary(&self) -> bool {
        self.lines.at_boundary()
    }
}

/// Reads the lines of an event stream into events, and events and bodies into usage.
#[derive(Debug)]
struct Reader {
    format: ApiFormat,
    /// SSE: the `data:` payload of the event being read.
    event: Vec<u8>,
    max_sse_event: usize,
    input: Option<u64>,
    output: Option<u64>,
    cache_read: Option<u64>,
    cache_write: Option<u64>,
}

impl Reader {
    fn line(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            self.dispatch();
        } else if let Some(data) = line.strip_prefix(b"data:") {
            let data = data.strip_prefix(b" ").unwrap_or(data);
            // The newline joining two data lines counts too: the event never passes the cap.
            let separator = usize::from(!self.event.is_empty());
            if self.event.len() + separator + data.len() > self.max_sse_event {
                self.event.clear();
                return;
            }
            if separator == 1 {
                self.event.push(b'\n');
            }
            self.event.extend_from_slice(data);
        }
    }

    fn dispatch(&mut self) {
        if self.event.is_empty() {
            return;
        }
        let event = std::mem::take(&mut self.event);
        // Only a few events carry usage; skip the JSON parse of all the others.
        let key: &[u8] = match self.format {
            ApiFormat::Gemini => b"usageMetadata",
            _ => b"usage",
        };
        if memchr::memmem::find(&event, key).is_some()
            && let Ok(event) = serde_json::from_slice::<Carrier>(&event)
        {
            self.extract(&event);
        }
    }

    fn extract(&mut self, value: &Carrier) {
        match self.format {
            ApiFormat::OpenAi => {
                // Chat completions and embeddings: `usage`; the Responses API: `usage`, or
                // `response.usage` in its `response.completed` stream event.
                let usage = value
                    .usage
                    .as_ref()
                    .or_else(|| value.response.as_ref().and_then(|r| r.get("usage")));
                if let Some(usage) = usage.filter(|u| u.is_object()) {
                    self.set(
                        number(usage, "prompt_tokens").or_else(|| number(usage, "input_tokens")),
                        number(usage, "completion_tokens")
                            .or_else(|| number(usage, "output_tokens")),
                    );
                    // Chat: `prompt_tokens_details`; Responses: `input_tokens_details`. Both
                    // count the cached tokens inside the prompt.
                    let cached = usage
                        .get("prompt_tokens_details")
                        .or_else(|| usage.get("input_tokens_details"))
                        .and_then(|details| number(details, "cached_tokens"));
                    self.set_cache(cached, None);
                }
            }
            ApiFormat::Anthropic => {
                // `message_start` carries the whole message; `message_delta` and plain replies
                // carry `usage` at the top. Output counts are cumulative, so the last one wins.
                let usage =
                    value.message.as_ref().and_then(|m| m.get("usage")).or(value.usage.as_ref());
                if let Some(usage) = usage {
                    self.set(number(usage, "input_tokens"), number(usage, "output_tokens"));
                    self.set_cache(
                        number(usage, "cache_read_input_tokens"),
                        number(usage, "cache_creation_input_tokens"),
                    );
                }
            }
            ApiFormat::Gemini => {
                if let Some(usage) = &value.usage_metadata {
                    let output = match (
                        number(usage, "candidatesTokenCount"),
                        number(usage, "thoughtsTokenCount"),
                    ) {
                        (None, None) => None,
                        (c, t) => Some(c.unwrap_or(0) + t.unwrap_or(0)),
                    };
                    self.set(number(usage, "promptTokenCount"), output);
                    self.set_cache(number(usage, "cachedContentTokenCount"), None);
                }
            }
        }
    }

    fn set(&mut self, input: Option<u64>, output: Option<u64>) {
        if input.is_some() {
            self.input = input;
        }
        if output.is_some() {
            self.output = output;
        }
    }

    fn set_cache(&mut self, read: Option<u64>, write: Option<u64>) {
        if read.is_some() {
            self.cache_read = read;
        }
        if write.is_some() {
            self.cache_write = write;
        }
    }
}

/// The members of a reply (or of a stream event) that can carry usage. Only these are parsed;
/// the rest (the generated content, often most of the body) is skipped without being
/// allocated.
#[derive(Deserialize)]
struct Carrier {
    /// OpenAI and Anthropic replies, OpenAI and Anthropic `message_delta` events.
    #[serde(default)]
    usage: Option<Value>,
    /// The OpenAI Responses API's `response.completed` event: `response.usage`.
    #[serde(default)]
    response: Option<Value>,
    /// Anthropic's `message_start` event: `message.usage`.
    #[serde(default)]
    message: Option<Value>,
    /// Gemini.
    #[serde(default, rename = "usageMetadata")]
    usage_metadata: Option<Value>,
}

fn number(value: &Value, key: &str) -> Option<u64> {
    value.get(key).and_then(Value::as_u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(format: ApiFormat, sse: bool, chunks: &[&[u8]]) -> Option<Usage> {
        let mut scanner = UsageScanner::new(format, sse);
        for chunk in chunks {
            scanner.feed(chunk);
        }
        scanner.finish();
        scanner.usage()
    }

    fn usage(input_tokens: u64, output_tokens: u64) -> Option<Usage> {
        Some(Usage::new(input_tokens, output_tokens))
    }

    #[test]
    fn the_prompt_estimate_is_a_token_per_four_bytes_rounded_up() {
        assert_eq!(prompt_estimate(0), 0);
        assert_eq!(prompt_estimate(1), 1);
        assert_eq!(prompt_estimate(4), 1);
        assert_eq!(prompt_estimate(5), 2);
        // The issue's prompt: 400,000 bytes of text stand for 100,000 tokens.
        assert_eq!(prompt_estimate(400_000), 100_000);
        assert_eq!(prompt_estimate(usize::MAX), u64::try_from(usize::MAX / 4 + 1).unwrap());
    }

    #[test]
    fn openai_reply_and_stream() {
        let body = br#"{"id":"x","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17}}"#;
        assert_eq!(scan(ApiFormat::OpenAi, false, &[&body[..9], &body[9..]]), usage(12, 5));
        let stream: &[&[u8]] = &[
            b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n",
            b"data: {\"choices\":[],\"usa",
            b"ge\":{\"prompt_tokens\":3,\"completion_tokens\":9}}\r\n\r\n",
            b"data: [DONE]\n\n",
        ];
        assert_eq!(scan(ApiFormat::OpenAi, true, stream), usage(3, 9));
        let responses = b"event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":4,\"output_tokens\":6}}}\n\n";
        assert_eq!(scan(ApiFormat::OpenAi, true, &[responses]), usage(4, 6));
    }

    #[test]
    fn anthropic_stream_merges_start_and_delta() {
        let stream: &[&[u8]] = &[
            b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n",
            b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"usage\"}}\n\n",
            b"event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":15}}\n\n",
        ];
        assert_eq!(scan(ApiFormat::Anthropic, true, stream), usage(25, 15));
        let reply = br#"{"type":"message","usage":{"input_tokens":10,"output_tokens":2}}"#;
        assert_eq!(scan(ApiFormat::Anthropic, false, &[reply]), usage(10, 2));
    }

    #[test]
    fn gemini_reply_array_and_sse() {
        let reply = br#"{"candidates":[],"usageMetadata":{"promptTokenCount":8,"candidatesTokenCount":4,"totalTokenCount":12}}"#;
        assert_eq!(scan(ApiFormat::Gemini, false, &[reply]), usage(8, 4));
        let array = br#"[{"usageMetadata":{"promptTokenCount":8}},{"usageMetadata":{"promptTokenCount":8,"candidatesTokenCount":6,"thoughtsTokenCount":2}}]"#;
        assert_eq!(scan(ApiFormat::Gemini, false, &[array]), usage(8, 8));
        let sse = b"data: {\"usageMetadata\":{\"promptTokenCount\":1,\"candidatesTokenCount\":2}}";
        assert_eq!(scan(ApiFormat::Gemini, true, &[sse]), usage(1, 2), "unterminated last event");
    }

    #[test]
    fn a_line_past_the_cap_is_skipped_however_the_body_is_split() {
        // The fuzz target's first two finds (fuzz/regressions/usage_scanner/): a data line past
        // the cap used to clear the event when it came in one chunk but was skipped when it
        // overflowed the buffer, and two data lines could join into an event one byte past it.
        let body = [
            &b"data: {\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}\n"[..],
            &[b"data: ".as_slice(), &[b'x'; 70], b"\n\n"].concat(),
        ]
        .concat();
        let read = |chunk: usize| {
            let mut scanner = UsageScanner::with_caps(ApiFormat::OpenAi, true, 0, 64);
            body.chunks(chunk).for_each(|piece| scanner.feed(piece));
            scanner.finish();
            scanner.usage()
        };
        assert_eq!(read(body.len()), usage(1, 2));
        assert_eq!(read(5), usage(1, 2));
        let mut scanner = UsageScanner::with_caps(ApiFormat::OpenAi, true, 0, 16);
        scanner.feed(b"data:12345678\ndata:1234567\ndata:\n");
        assert!(scanner.buffered().1 <= 16, "{:?}", scanner.buffered());
    }

    #[test]
    fn hostile_and_garbage_input_yields_no_usage_and_bounded_memory() {
        assert_eq!(scan(ApiFormat::OpenAi, false, &[b"{not json"]), None);
        assert_eq!(scan(ApiFormat::OpenAi, true, &[b"data: {\"usage\": [1,2]}\n\n"]), None);
        assert_eq!(scan(ApiFormat::Anthropic, true, &[b"\xff\xfe\x00data:\n\n\n"]), None);
        let mut scanner = UsageScanner::new(ApiFormat::OpenAi, true);
        let junk = vec![b'x'; 64 * 1024];
        for _ in 0..40 {
            scanner.feed(&junk);
        }
        assert!(scanner.buffered().0 <= MAX_SSE_EVENT);
        // After the oversized line ends, later events are read again.
        scanner.feed(b"\ndata: {\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1}}\n\n");
        assert_eq!(scanner.usage(), usage(1, 1));
        let mut scanner = UsageScanner::new(ApiFormat::OpenAi, false);
        for _ in 0..200 {
            scanner.feed(&junk);
        }
        scanner.finish();
        assert_eq!(scanner.usage(), None);
        assert!(scanner.buffer.capacity() <= MAX_JSON_BODY);
    }

    fn cached(input: u64, output: u64, read: u64, write: u64) -> Option<Usage> {
        Some(Usage {
            input_tokens: input,
            output_tokens: output,
            cache_read_tokens: read,
            cache_write_tokens: write,
        })
    }

    /// Issue 22: OpenAI counts cached tokens inside the prompt, in
    /// `prompt_tokens_details.cached_tokens` (Chat) and `input_tokens_details.cached_tokens`
    /// (Responses); the prompt count stays as reported.
    #[test]
    fn openai_cached_tokens_are_read_from_chat_and_responses() {
        let chat = br#"{"id":"chatcmpl-1","object":"chat.completion","choices":[],"usage":{"prompt_tokens":2006,"completion_tokens":300,"total_tokens":2306,"prompt_tokens_details":{"cached_tokens":1920,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}}}"#;
        assert_eq!(scan(ApiFormat::OpenAi, false, &[chat]), cached(2006, 300, 1920, 0));
        let stream: &[&[u8]] = &[
            b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n",
            b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1200,\"completion_tokens\":9,\"prompt_tokens_details\":{\"cached_tokens\":1024}}}\n\n",
            b"data: [DONE]\n\n",
        ];
        assert_eq!(scan(ApiFormat::OpenAi, true, stream), cached(1200, 9, 1024, 0));
        let responses = b"event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":5000,\"input_tokens_details\":{\"cached_tokens\":4096},\"output_tokens\":6,\"output_tokens_details\":{\"reasoning_tokens\":0},\"total_tokens\":5006}}}\n\n";
        assert_eq!(scan(ApiFormat::OpenAi, true, &[responses]), cached(5000, 6, 4096, 0));
        let reply = br#"{"object":"response","usage":{"input_tokens":40,"input_tokens_details":{"cached_tokens":0},"output_tokens":2}}"#;
        assert_eq!(scan(ApiFormat::OpenAi, false, &[reply]), cached(40, 2, 0, 0));
    }

    /// Issue 22: Anthropic leaves both cache figures out of `input_tokens`; they are added to
    /// the prompt, from a whole reply and from `message_start` (whose figures a later
    /// `message_delta` may repeat, cumulatively).
    #[test]
    fn anthropic_cache_tokens_are_added_to_the_prompt() {
        let reply = br#"{"id":"msg_1","type":"message","role":"assistant","content":[],"usage":{"input_tokens":21,"cache_creation_input_tokens":188086,"cache_read_input_tokens":0,"output_tokens":393}}"#;
        assert_eq!(scan(ApiFormat::Anthropic, false, &[reply]), cached(188_107, 393, 0, 188_086));
        let stream: &[&[u8]] = &[
            b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_2\",\"usage\":{\"input_tokens\":10,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":2000,\"output_tokens\":1}}}\n\n",
            b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"usage\"}}\n\n",
            b"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":15}}\n\n",
        ];
        assert_eq!(scan(ApiFormat::Anthropic, true, stream), cached(2010, 15, 2000, 0));
        // The newer `message_delta` repeats the cumulative input figures: the same answer.
        let repeated: &[&[u8]] = &[
            stream[0],
            b"event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"input_tokens\":10,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":2000,\"output_tokens\":15}}\n\n",
        ];
        assert_eq!(scan(ApiFormat::Anthropic, true, repeated), cached(2010, 15, 2000, 0));
    }

    /// Issue 22: Gemini counts `cachedContentTokenCount` inside `promptTokenCount`.
    #[test]
    fn gemini_cached_content_tokens_are_read() {
        let reply = br#"{"candidates":[],"usageMetadata":{"promptTokenCount":3000,"cachedContentTokenCount":2048,"candidatesTokenCount":40,"totalTokenCount":3040}}"#;
        assert_eq!(scan(ApiFormat::Gemini, false, &[reply]), cached(3000, 40, 2048, 0));
        let sse = b"data: {\"usageMetadata\":{\"promptTokenCount\":100,\"cachedContentTokenCount\":64,\"candidatesTokenCount\":2}}\n\n";
        assert_eq!(scan(ApiFormat::Gemini, true, &[sse]), cached(100, 2, 64, 0));
    }

    /// A cache figure larger than the prompt it is part of (a provider bug, or a hostile
    /// upstream) is cut to the prompt, so the uncached part never goes below zero.
    #[test]
    fn cache_figures_never_exceed_the_prompt() {
        let reply = br#"{"usage":{"prompt_tokens":10,"completion_tokens":1,"prompt_tokens_details":{"cached_tokens":99}}}"#;
        assert_eq!(scan(ApiFormat::OpenAi, false, &[reply]), cached(10, 1, 10, 0));
        let reply =
            br#"{"usage":{"prompt_tokens":10,"prompt_tokens_details":{"cached_tokens":-5}}}"#;
        assert_eq!(scan(ApiFormat::OpenAi, false, &[reply]), cached(10, 0, 0, 0));
        let reply = br#"{"usage":{"input_tokens":18446744073709551615,"cache_read_input_tokens":5,"cache_creation_input_tokens":7,"output_tokens":1}}"#;
        assert_eq!(scan(ApiFormat::Anthropic, false, &[reply]), cached(u64::MAX, 1, 5, 7));
    }

    /// A scanner made with the usage read before translation reports it and reads nothing of
    /// the body (which holds no more, and may say less).
    #[test]
    fn a_reporting_scanner_reports_its_usage_and_keeps_no_body() {
        let known = Usage { cache_write_tokens: 1000, ..Usage::new(1100, 50) };
        let mut scanner = UsageScanner::reporting(known);
        scanner.feed(br#"{"usage":{"prompt_tokens":1100,"completion_tokens":50}}"#);
        assert_eq!(scanner.buffered(), (0, 0));
        scanner.finish();
        assert_eq!(scanner.usage(), Some(known));
    }
}
