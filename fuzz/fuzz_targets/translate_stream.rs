//! A provider's stream is network input: the translation reads its SSE events in one API
//! format and writes the client's in another, event by event (`Pair::stream`). Whatever the
//! bytes, for every pair (client format, provider format of another kind), feeding the
//! events one by one and then finishing never panics, and what the client receives is valid
//! SSE: UTF-8, whole frames each ending in a blank line, every line a `data:` or `event:`
//! field (at most one `event:` and at least one `data:` per frame) or a comment, and no
//! carriage return (which a client would read as a line break inside a value). An event the
//! translator refuses is skipped (the gateway would end the stream there; going on reaches
//! more states).
//!
//! Input layout (the seeds in `fuzz/seeds/translate_stream/` follow it): the provider's
//! stream, as bytes; it is split into events by the SSE rules (LF, CRLF or CR line ends, a
//! blank line dispatches, `:` comments, `data:` lines joined with LF), as the gateway's framer
//! hands them over.
#![no_main]

use cliproxy_translate::{Format, Pair};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let events = split_sse(data);
    for client in Format::ALL {
        for provider in Format::ALL {
            if provider == client {
                continue;
            }
            let mut stream = Pair::new(client, provider).stream();
            let mut out = Vec::new();
            for (name, data) in &events {
                let before = out.len();
                if stream.feed(name.as_deref(), data, &mut out).is_err() {
                    assert_eq!(
                        out.len(),
                        before,
                        "{provider:?} → {client:?}: a refused event wrote"
                    );
                }
            }
            stream.finish(&mut out);
            let mut again = Vec::new();
            stream.finish(&mut again);
            assert!(again.is_empty(), "{provider:?} → {client:?}: finishing twice wrote twice");
            if let Err(problem) = check_sse(&out) {
                panic!(
                    "{provider:?} → {client:?}: the client's stream is not valid SSE: {problem}"
                );
            }
        }
    }
});

/// Splits bytes into SSE events: (the `event:` name, the data lines joined by LF).
fn split_sse(bytes: &[u8]) -> Vec<(Option<String>, Vec<u8>)> {
    let mut events = Vec::new();
    let mut name = None;
    let mut data: Option<Vec<u8>> = None;
    let mut rest = bytes;
    while let Some(end) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
        let line = &rest[..end];
        let skip = if rest[end] == b'\r' && rest.get(end + 1) == Some(&b'\n') { 2 } else { 1 };
        rest = &rest[end + skip..];
        if line.is_empty() {
            if let Some(data) = data.take() {
                events.push((name.take(), data));
            }
            name = None;
            continue;
        }
        if line.first() == Some(&b':') {
            continue;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => (&line[..colon], &line[colon + 1..]),
            None => (line, &[][..]),
        };
        let value = value.strip_prefix(b" ").unwrap_or(value);
        match field {
            b"event" => name = Some(String::from_utf8_lossy(value).into_owned()),
            b"data" => match &mut data {
                Some(data) => {
                    data.push(b'\n');
                    data.extend_from_slice(value);
                }
                None => data = Some(value.to_vec()),
            },
            _ => {}
        }
    }
    events
}

/// Whether `out` is a sequence of whole, well-formed SSE frames.
fn check_sse(out: &[u8]) -> Result<(), String> {
    let text = std::str::from_utf8(out).map_err(|e| format!("not UTF-8: {e}"))?;
    if text.contains('\r') {
        return Err("a carriage return".to_owned());
    }
    if text.is_empty() {
        return Ok(());
    }
    let Some(body) = text.strip_suffix("\n\n") else {
        return Err(format!("the last frame is not closed: {:?}", tail(text)));
    };
    for frame in body.split("\n\n") {
        let (mut names, mut datas) = (0, 0);
        for line in frame.split('\n') {
            if line.starts_with(':') {
                continue;
            }
            match line.split_once(':').map(|(field, _)| field) {
                Some("event") => names += 1,
                Some("data") => datas += 1,
                Some("id" | "retry") => {}
                _ => return Err(format!("a line that is no SSE field: {line:?}")),
            }
        }
        let comment_only = frame.split('\n').all(|line| line.starts_with(':'));
        if !comment_only && (names > 1 || datas == 0) {
            return Err(format!(
                "a frame with {names} event lines and {datas} data lines: {frame:?}"
            ));
        }
    }
    Ok(())
}

fn tail(text: &str) -> &str {
    let start = text.char_indices().rev().nth(80).map_or(0, |(at, _)| at);
    &text[start..]
}
