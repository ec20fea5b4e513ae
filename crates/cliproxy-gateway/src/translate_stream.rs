//! The response side of the translation stage for streams: a provider's event stream becomes
//! the client's, event by event as each one completes — nothing is held beyond the event
//! being read. It wraps the tapped body (`body::Tapped`), whose usage reader, idle timeout
//! and truncation checks work on the provider's own events, as for an untranslated stream.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use cliproxy_translate::ir::{ApiError, ErrorKind};
use cliproxy_translate::{Pair, StreamTranslator};
use http_body::{Frame, SizeHint};

use crate::sse::SseLines;

/// The longest event line read: a provider event past it is skipped, as the usage reader
/// skips it (a 1 MiB tool-call argument delta is far beyond any real one).
const MAX_EVENT_LINE: usize = 1024 * 1024;

/// Room beyond a provider chunk's length in the buffer of the client's frames it becomes.
const OUT_SLACK: usize = 512;

/// The largest event (all its `data:` lines together) translated. Lines are capped by the
/// framer, but an event may have any number of them: one past this cap ends the client's
/// stream with an error rather than growing without bound.
const MAX_EVENT: usize = 4 * 1024 * 1024;

/// A provider's event stream read into SSE events: the `event:` name and the `data:` lines
/// of the event being read, handed to the translator at its blank line.
#[derive(Debug)]
struct Events {
    /// The event's name; empty when it has none. Reused from event to event.
    name: String,
    data: Vec<u8>,
    /// Whether a `data:` line was seen for the event being read (an event may carry empty
    /// data).
    has_data: bool,
    /// Set when the event being read passed [`MAX_EVENT`]; it is never dispatched.
    oversized: bool,
}

impl Events {
    fn new() -> Self {
        Self { name: String::new(), data: Vec::new(), has_data: false, oversized: false }
    }

    /// One line of the stream; at a blank line, the event it ends goes to `dispatch` (or,
    /// when it was oversized, `Err` goes).
    fn line(&mut self, line: &[u8], dispatch: &mut impl FnMut(Result<(Option<&str>, &[u8]), ()>)) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            if self.oversized {
                dispatch(Err(()));
            } else if self.has_data {
                let name = (!self.name.is_empty()).then_some(self.name.as_str());
                dispatch(Ok((name, &self.data)));
            }
            self.name.clear();
            self.data.clear();
            self.has_data = false;
            self.oversized = false;
            return;
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(at) => {
                let value = &line[at + 1..];
                (&line[..at], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"event" => {
                self.name.clear();
                self.name.push_str(&String::from_utf8_lossy(value));
            }
            b"data" if !self.oversized => {
                if self.data.len() + value.len() + 1 > MAX_EVENT {
                    self.oversized = true;
                    self.data.clear();
                    return;
                }
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            // Comments (`: ping`), `id:` and `retry:` mean nothing to a translation.
            _ => {}
        }
    }
}

pin_project_lite::pin_project! {
    /// A provider's event stream translated into the client's format as it arrives.
    pub(crate) struct Translated<B> {
        #[pin]
        inner: B,
        lines: SseLines,
        events: Events,
        translator: StreamTranslator,
        // Set once the translator has been told the stream ended (or failed).
        done: bool,
    }
}

impl<B> Translated<B> {
    pub(crate) fn new(inner: B, pair: Pair) -> Self {
        Self {
            inner,
            lines: SseLines::new(MAX_EVENT_LINE),
            events: Events::new(),
            translator: pair.stream(),
            done: false,
        }
    }
}

/// Feeds one chunk of the provider's stream through the translator; an event that is not
/// what its format says ends the client's stream with an error event.
fn translate(
    lines: &mut SseLines,
    events: &mut Events,
    translator: &mut StreamTranslator,
    chunk: Option<&[u8]>,
    out: &mut Vec<u8>,
) -> bool {
    let mut failed: Option<String> = None;
    let mut dispatch = |event: Result<(Option<&str>, &[u8]), ()>| {
        if failed.is_some() {
            return;
        }
        match event {
            Ok((name, data)) => {
                if let Err(error) = translator.feed(name, data, out) {
                    failed = Some(error.to_string());
                }
            }
            Err(()) => failed = Some(format!("an event over {} MiB", MAX_EVENT >> 20)),
        }
    };
    // The framer hands lines to `events`, which hands whole events to the translator.
    match chunk {
        Some(chunk) => lines.feed(chunk, |line| events.line(line, &mut dispatch)),
        None => {
            // The end: a last event without its blank line still counts.
            lines.finish(|line| events.line(line, &mut dispatch));
            events.line(b"", &mut dispatch);
        }
    }
    match failed {
        Some(problem) => {
            translator.fail(
                &ApiError {
                    status: 502,
                    kind: ErrorKind::Api,
                    message: format!("the provider's stream could not be translated: {problem}"),
                },
                out,
            );
            true
        }
        None => false,
    }
}

impl<B: http_body::Body<Data = Bytes>> http_body::Body for Translated<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let mut this = self.project();
        if *this.done {
            return Poll::Ready(None);
        }
        // Loops only while provider events translate to nothing (a ping, a part of an event).
        loop {
            let frame = ready!(this.inner.as_mut().poll_frame(cx));
            // Sized once for what one provider chunk becomes (the client's events are about
            // as long, plus their names), so that writing them does not grow it step by step.
            let mut out = Vec::with_capacity(match &frame {
                Some(Ok(frame)) => frame.data_ref().map_or(0, Bytes::len) + OUT_SLACK,
                _ => OUT_SLACK,
            });
            match frame {
                Some(Ok(frame)) => {
                    let data = match frame.into_data() {
                        Ok(data) => data,
                        Err(frame) => return Poll::Ready(Some(Ok(frame))),
                    };
                    if translate(this.lines, this.events, this.translator, Some(&data), &mut out) {
                        *this.done = true;
                    }
                }
                Some(Err(error)) => return Poll::Ready(Some(Err(error))),
                None => {
                    if !translate(this.lines, this.events, this.translator, None, &mut out) {
                        this.translator.finish(&mut out);
                    }
                    *this.done = true;
                }
            }
            if !out.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
            }
            if *this.done {
                return Poll::Ready(None);
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        // The client's stream has a length of its own, known only at its end.
        SizeHint::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The events `Events` dispatches for `stream`, `None` standing for an oversized one.
    fn dispatched(stream: &[u8]) -> Vec<Option<(Option<String>, Vec<u8>)>> {
        let mut lines = SseLines::new(MAX_EVENT_LINE);
        let mut events = Events::new();
        let mut seen = Vec::new();
        let mut dispatch = |event: Result<(Option<&str>, &[u8]), ()>| {
            seen.push(event.ok().map(|(name, data)| (name.map(str::to_owned), data.to_vec())));
        };
        lines.feed(stream, |line| events.line(line, &mut dispatch));
        seen
    }

    #[test]
    fn events_carry_their_name_and_joined_data_lines() {
        let seen = dispatched(b"event: a\ndata: 1\ndata:2\n\n: ping\n\ndata: 3\r\n\r\n");
        assert_eq!(
            seen,
            [Some((Some("a".to_owned()), b"1\n2".to_vec())), Some((None, b"3".to_vec()))],
            "the name does not carry over to the next event"
        );
    }

    #[test]
    fn an_event_of_many_lines_past_the_cap_is_refused_not_held() {
        // Lines under the line cap, but more of them than the event cap allows.
        let line = format!("data: {}\n", "x".repeat(MAX_EVENT_LINE - 16));
        let mut stream = line.repeat(MAX_EVENT / (MAX_EVENT_LINE - 16) + 1).into_bytes();
        stream.extend_from_slice(b"\ndata: after\n\n");
        let seen = dispatched(&stream);
        assert_eq!(seen, [None, Some((None, b"after".to_vec()))]);
    }
}
