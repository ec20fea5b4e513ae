//! The usage scanner reads upstream bodies (SSE or JSON) in all three formats, chunk by chunk:
//! it must never panic, never grow past its caps, whatever the bytes and their split points,
//! and where the body is split must not change the usage it reads.
//!
//! Input layout (the seeds in `fuzz/seeds/usage_scanner/` follow it):
//! - byte 0: the format in its low seven bits (`% 3`: OpenAI, Anthropic, Gemini), SSE when its
//!   top bit is set;
//! - byte 1: the SSE line and event cap, in units of 8 bytes;
//! - byte 2: the JSON body cap, in units of 16 bytes;
//! - byte 3: how many chunk lengths follow (`% 8`, then + 1), then those lengths, one byte
//!   each, used in turn to split the body;
//! - the rest: the body.
//!
//! The real caps (8 MiB of JSON, 1 MiB of SSE event) are far beyond the inputs libFuzzer makes,
//! so the caps are taken from the input: the same code runs with caps the input can reach.
#![no_main]

use cliproxy_gateway::{ApiFormat, Usage, UsageScanner};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [control, sse_cap, json_cap, splits, rest @ ..] = data else { return };
    let format = match (control & 0x7f) % 3 {
        0 => ApiFormat::OpenAi,
        1 => ApiFormat::Anthropic,
        _ => ApiFormat::Gemini,
    };
    let sse = control & 0x80 != 0;
    let caps = Caps {
        sse,
        max_sse_event: usize::from(*sse_cap) * 8,
        max_json_body: usize::from(*json_cap) * 16,
    };
    let splits = usize::from(splits % 8) + 1;
    let Some((lengths, body)) = rest.split_at_checked(splits) else { return };

    let whole = caps.scan(format, std::iter::once(body));
    let split = caps.scan(format, Chunks { body, lengths, next: 0 });
    assert_eq!(whole, split, "splitting the body at {lengths:?} changed the usage read");
    let bytes = caps.scan(format, body.chunks(1));
    assert_eq!(whole, bytes, "feeding the body byte by byte changed the usage read");
});

struct Caps {
    sse: bool,
    max_sse_event: usize,
    max_json_body: usize,
}

impl Caps {
    /// Feeds the chunks and returns the usage read, checking the caps after every chunk.
    fn scan<'a>(&self, format: ApiFormat, chunks: impl Iterator<Item = &'a [u8]>) -> Option<Usage> {
        let mut scanner =
            UsageScanner::with_caps(format, self.sse, self.max_json_body, self.max_sse_event);
        for chunk in chunks {
            scanner.feed(chunk);
            self.check(&scanner);
        }
        scanner.finish();
        self.check(&scanner);
        scanner.usage()
    }

    fn check(&self, scanner: &UsageScanner) {
        let (line, event) = scanner.buffered();
        let line_cap = if self.sse { self.max_sse_event } else { self.max_json_body };
        assert!(line <= line_cap, "{line} bytes of line or body held, past the cap of {line_cap}");
        assert!(
            event <= self.max_sse_event,
            "{event} bytes of SSE event held, past the cap of {}",
            self.max_sse_event
        );
    }
}

/// The body cut into the fuzzer's chunk lengths, used in turn; a length of zero feeds an empty
/// chunk (which the scanner must accept too) and still moves on to the next length.
struct Chunks<'a> {
    body: &'a [u8],
    lengths: &'a [u8],
    next: usize,
}

impl<'a> Iterator for Chunks<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.body.is_empty() {
            return None;
        }
        let mut length = usize::from(self.lengths[self.next % self.lengths.len()]);
        self.next += 1;
        // Only zeros: one byte at a time, so the iteration ends.
        if length == 0 && self.lengths.iter().all(|&l| l == 0) {
            length = 1;
        }
        let (chunk, body) = self.body.split_at(length.min(self.body.len()));
        self.body = body;
        Some(chunk)
    }
}
