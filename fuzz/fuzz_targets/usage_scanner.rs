//! The usage scanner reads upstream bodies (SSE or JSON) in all three formats, chunk by chunk:
//! it must never panic, never grow past its caps, whatever the bytes and their split points.
#![no_main]

use cliproxy_gateway::{ApiFormat, UsageScanner};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&control, body)) = data.split_first() else { return };
    let format = match control % 3 {
        0 => ApiFormat::OpenAi,
        1 => ApiFormat::Anthropic,
        _ => ApiFormat::Gemini,
    };
    let sse = control & 0x80 != 0;
    let chunk = usize::from(control >> 3 & 0x0f) + 1;
    let mut scanner = UsageScanner::new(format, sse);
    for piece in body.chunks(chunk) {
        scanner.feed(piece);
    }
    scanner.finish();
    let _ = scanner.usage();
});
