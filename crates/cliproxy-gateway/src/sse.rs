//! The one event-stream framer: splits a `text/event-stream` body into its lines as the bytes
//! arrive, however the upstream chunked them, and knows whether the bytes passed so far end at
//! an event boundary. The usage reader (`usage.rs`) reads the lines; the body wrapper
//! (`body.rs`) asks about the boundary before it sends an error event of its own. A leaf: it
//! knows nothing of formats or usage.

/// Lines of an event stream, fed chunk by chunk.
#[derive(Debug)]
pub(crate) struct SseLines {
    /// The unfinished line.
    partial: Vec<u8>,
    /// Set when the unfinished line passed `max_line`: it is skipped up to its end.
    overflow: bool,
    max_line: usize,
    /// Whether any byte was fed.
    started: bool,
    /// Line feeds at the end of what was fed (carriage returns do not count).
    trailing_newlines: u8,
}

impl SseLines {
    /// A framer that skips any line longer than `max_line` bytes.
    pub(crate) fn new(max_line: usize) -> Self {
        Self {
            partial: Vec::new(),
            overflow: false,
            max_line,
            started: false,
            trailing_newlines: 0,
        }
    }

    /// Feeds the next chunk; `on_line` gets each line it completes, without its `\n` (a `\r`
    /// before it stays, for the reader to strip).
    pub(crate) fn feed(&mut self, mut chunk: &[u8], mut on_line: impl FnMut(&[u8])) {
        self.track_boundary(chunk);
        while let Some(at) = memchr::memchr(b'\n', chunk) {
            let (head, rest) = chunk.split_at(at);
            chunk = rest.get(1..).unwrap_or_default();
            // A line past the cap is skipped whole, whether it came in one chunk or overflowed
            // the buffer over several: where the body was split must not change what is read.
            if self.overflow || self.partial.len() + head.len() > self.max_line {
                self.overflow = false;
                self.partial.clear();
                continue;
            }
            if self.partial.is_empty() {
                on_line(head);
            } else {
                self.partial.extend_from_slice(head);
                on_line(&self.partial);
                self.partial.clear();
            }
        }
        if !self.overflow {
            if self.partial.len() + chunk.len() > self.max_line {
                self.overflow = true;
                self.partial.clear();
            } else {
                self.partial.extend_from_slice(chunk);
            }
        }
    }

    /// Marks the end of the stream: hands a last line that no `\n` ended to `on_line`.
    pub(crate) fn finish(&mut self, mut on_line: impl FnMut(&[u8])) {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            on_line(&line);
        }
    }

    /// Whether an event may start here (nothing fed yet, or the last bytes were a blank
    /// line): an error event sent now is read on its own.
    pub(crate) fn at_boundary(&self) -> bool {
        !self.started || self.trailing_newlines >= 2
    }

    /// The bytes of the unfinished line held now.
    pub(crate) fn held(&self) -> usize {
        self.partial.len()
    }

    fn track_boundary(&mut self, chunk: &[u8]) {
        if chunk.is_empty() {
            return;
        }
        self.started = true;
        let mut count = 0_u8;
        for &byte in chunk.iter().rev() {
            match byte {
                b'\n' => count = count.saturating_add(1),
                b'\r' => {}
                _ => {
                    self.trailing_newlines = count;
                    return;
                }
            }
        }
        self.trailing_newlines = self.trailing_newlines.saturating_add(count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lines of `stream` fed in two chunks split at `at`, and the boundary after each.
    fn split(stream: &[u8], at: usize, max_line: usize) -> (Vec<Vec<u8>>, bool) {
        let mut framer = SseLines::new(max_line);
        let mut lines = Vec::new();
        let (first, second) = stream.split_at(at);
        framer.feed(first, |line| lines.push(line.to_vec()));
        framer.feed(second, |line| lines.push(line.to_vec()));
        let boundary = framer.at_boundary();
        framer.finish(|line| lines.push(line.to_vec()));
        (lines, boundary)
    }

    #[test]
    fn lines_and_boundary_do_not_depend_on_where_the_stream_is_split() {
        let stream = b"event: a\r\ndata: {\"x\":1}\r\n\r\ndata: 2\n\ndata: tail";
        let expected: Vec<Vec<u8>> =
            [&b"event: a\r"[..], b"data: {\"x\":1}\r", b"\r", b"data: 2", b"", b"data: tail"]
                .iter()
                .map(|line| line.to_vec())
                .collect();
        for at in 0..=stream.len() {
            assert_eq!(split(stream, at, 64), (expected.clone(), false), "split at {at}");
        }
        let whole = b"data: 1\r\n\r\n";
        for at in 0..=whole.len() {
            assert!(split(whole, at, 64).1, "split at {at}");
        }
    }

    #[test]
    fn the_boundary_follows_blank_lines_only() {
        let mut framer = SseLines::new(64);
        assert!(framer.at_boundary(), "nothing fed yet");
        for (chunk, boundary) in [
            (&b"data: {}"[..], false),
            (b"\n", false),
            (b"\r\n", true),
            (b"data: x\n\r", false),
            (b"\n", true),
            (b"\n \n", false),
        ] {
            framer.feed(chunk, |_| {});
            assert_eq!(framer.at_boundary(), boundary, "after {chunk:?}");
        }
    }

    #[test]
    fn a_line_past_the_cap_is_skipped_however_it_is_split() {
        let stream = [&b"data: "[..], &[b'x'; 70], b"\ndata: ok\n"].concat();
        for at in 0..=stream.len() {
            let (lines, _) = split(&stream, at, 64);
            assert_eq!(lines, [b"data: ok".to_vec()], "split at {at}");
        }
    }
}
