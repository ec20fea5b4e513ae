//! The usage stripper edits the OpenAI chat streams of clients that did not ask for usage as
//! they pass (`crates/cliproxy-gateway/src/stream_usage.rs`): it must never panic, never hold
//! more than its cap, and where the stream is split must not change what the client gets. A
//! stream with no `"usage"` in it passes unchanged, and stripping what was stripped changes
//! nothing more.
//!
//! Input layout (the seeds in `fuzz/seeds/usage_stripper/` follow it):
//! - byte 0: the cap on the event held, in units of 8 bytes;
//! - byte 1: how many chunk lengths follow (`% 8`, then + 1), then those lengths, one byte
//!   each, used in turn to split the stream;
//! - the rest: the stream.
//!
//! The real cap (1 MiB) is far beyond the inputs libFuzzer makes, so the cap is taken from
//! the input: the same code runs with a cap the input can reach.
#![no_main]

use bytes::Bytes;
use cliproxy_gateway::UsageStripper;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [cap, splits, rest @ ..] = data else { return };
    let cap = usize::from(*cap) * 8;
    let splits = usize::from(splits % 8) + 1;
    let Some((lengths, stream)) = rest.split_at_checked(splits) else { return };

    let whole = strip(cap, std::iter::once(stream));
    let split = strip(cap, Chunks { body: stream, lengths, next: 0 });
    assert_eq!(whole, split, "splitting the stream at {lengths:?} changed what passes");
    let bytes = strip(cap, stream.chunks(1));
    assert_eq!(whole, bytes, "feeding the stream byte by byte changed what passes");
    if !stream.windows(7).any(|w| w == b"\"usage\"") {
        assert_eq!(whole, stream, "a stream without usage was changed");
    }
    assert!(whole.len() <= stream.len(), "the stripper added bytes");
    assert_eq!(strip(cap, std::iter::once(&whole[..])), whole, "stripping twice changed more");
});

/// Feeds the chunks and returns what passed, checking the cap after every chunk.
fn strip<'a>(cap: usize, chunks: impl Iterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut stripper = UsageStripper::with_cap(cap);
    let mut out = Vec::new();
    for chunk in chunks {
        out.extend_from_slice(&stripper.feed(&Bytes::copy_from_slice(chunk)));
        assert!(stripper.held() <= cap, "{} bytes held, past the cap of {cap}", stripper.held());
    }
    out.extend_from_slice(&stripper.finish());
    out
}

/// The stream cut into the fuzzer's chunk lengths, used in turn; a length of zero feeds an
/// empty chunk (which the stripper must accept too) and still moves on to the next length.
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
