//! Usage from OpenAI chat and legacy completions streams whose client did not ask for it.
//!
//! A streamed Chat Completions (or legacy Completions) request reports its token usage only with
//! `stream_options.include_usage: true`; without it the stream carries no usage at all, and
//! the gateway could only charge an estimate. So for such a request the gateway asks the
//! upstream itself ([`ask_upstream`], [`ask_mock`]) and takes out of the stream what the
//! option adds ([`UsageStripper`]), so that the client gets exactly the stream it asked for:
//!
//! - the `"usage": null` member that OpenAI then adds to every chunk, and
//! - the last chunk, with `"choices": []` and the `usage` object, whole.
//!
//! The usage scanner reads the stream before the stripper, so the usage is counted.
//!
//! Both sides edit bytes, never re-serialize: the request body goes upstream as the client
//! wrote it plus one member, and the chunks keep their bytes except the member taken out. The
//! edits are conservative: a body or chunk that is not what they expect (not an object, a
//! key written with escapes, a key given twice, an event with several `data:` lines) is left
//! as it is. A request left unedited is charged its estimate when no usage comes back; a chunk
//! left unedited reaches the client as the upstream sent it.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use cliproxy_netguard::UsageOption;
use http_body::{Frame, SizeHint};
use serde_json::Value;

use crate::usage::MAX_SSE_EVENT;

/// The body to send upstream in place of `body` (a Chat Completions request with
/// `"stream": true` whose `stream_options` says `option`), asking for the usage chunk; `None`
/// when the client asked for it itself, or when the body cannot be edited safely (then it
/// goes as it is, and nothing is stripped).
///
/// Without `stream_options`, `"stream_options":{"include_usage":true}` is added before the
/// body's closing brace: no parse beyond the one validation made. With one, the member is
/// found by [`members`] and `include_usage` set to `true` in it, its other options kept.
pub(crate) fn ask_upstream(body: &[u8], option: UsageOption) -> Option<Bytes> {
    const ASK: &[u8] = br#""stream_options":{"include_usage":true}"#;
    match option {
        UsageOption::Asked => None,
        UsageOption::Missing => {
            let close = last_non_space(body, body.len())?;
            if body[close] != b'}' {
                return None;
            }
            let empty = last_non_space(body, close).is_some_and(|at| body[at] == b'{');
            let mut edited = Vec::with_capacity(body.len() + ASK.len() + 1);
            edited.extend_from_slice(&body[..close]);
            if !empty {
                edited.push(b',');
            }
            edited.extend_from_slice(ASK);
            edited.extend_from_slice(&body[close..]);
            Some(edited.into())
        }
        // `NotAsked` and any option a later version adds: edit the member in place.
        _ => {
            let top = members(body, 0, true)?;
            let options = single(body, &top, b"stream_options")?;
            let value = &body[options.value.clone()];
            let (at, insert): (std::ops::Range<usize>, &[u8]) = if value == b"null" {
                (options.value.clone(), br#"{"include_usage":true}"#)
            } else if value.first() == Some(&b'{') {
                let inner = members(body, options.value.start, false)?;
                // A key written with escapes could be `include_usage`: not edited.
                if inner.iter().any(|m| key(body, m).contains(&b'\\')) {
                    return None;
                }
                let mut found = inner.iter().filter(|m| key(body, m) == b"include_usage");
                match (found.next(), found.next()) {
                    (Some(member), None) => (member.value.clone(), b"true"),
                    (Some(_), Some(_)) => return None,
                    (None, _) => {
                        let open = options.value.start + 1;
                        let text: &[u8] = if inner.is_empty() {
                            br#""include_usage":true"#
                        } else {
                            br#""include_usage":true,"#
                        };
                        (open..open, text)
                    }
                }
            } else {
                // Another type: the upstream refuses it as it is; an edit would change what
                // the client's request means.
                return None;
            };
            let mut edited = Vec::with_capacity(body.len() + insert.len());
            edited.extend_from_slice(&body[..at.start]);
            edited.extend_from_slice(insert);
            edited.extend_from_slice(&body[at.end..]);
            Some(edited.into())
        }
    }
}

/// The mock provider's side of [`ask_upstream`]: its request is already a tree. Returns
/// whether the mock was asked (and its stream must be stripped): not when the client asked
/// itself, nor when its `stream_options` is neither an object nor `null`.
pub(crate) fn ask_mock(body: &mut Value, option: UsageOption) -> bool {
    if option == UsageOption::Asked {
        return false;
    }
    let Some(object) = body.as_object_mut() else { return false };
    let options = object.entry("stream_options").or_insert(Value::Null);
    if options.is_null() {
        *options = Value::Object(serde_json::Map::new());
    }
    match options.as_object_mut() {
        Some(options) => {
            options.insert("include_usage".to_owned(), Value::Bool(true));
            true
        }
        None => false,
    }
}

/// Takes out of an OpenAI chat stream what `include_usage` adds to it, event by event, as
/// the stream passes.
///
/// It holds the event being read (up to [`MAX_SSE_EVENT`] bytes) until its blank line, so
/// that a chunk split anywhere is edited the same way; an event that grows past the cap is
/// passed on as it is, from then to its end. At the end of the body whatever is held goes out
/// unchanged ([`UsageStripper::finish`]), so a stream cut mid-event still looks cut.
#[derive(Debug)]
pub struct UsageStripper {
    /// The event being read: its lines so far, terminators included, and its unfinished line.
    held: BytesMut,
    /// Where the next line of `held` starts (the lines before it are complete).
    line_start: usize,
    /// How many lines of the held event start with `data:`.
    data_lines: usize,
    /// Passing an oversized event on unchanged, to its end: `Some(blank)`, where `blank` says
    /// whether the current line is empty so far (carriage returns aside), to find the blank
    /// line that ends the event.
    passing: Option<bool>,
    max_event: usize,
}

impl Default for UsageStripper {
    fn default() -> Self {
        Self::new()
    }
}

impl UsageStripper {
    /// A stripper for one stream.
    pub fn new() -> Self {
        Self::with_cap(MAX_SSE_EVENT)
    }

    /// A stripper with its own cap on the event it holds: for the `usage_stripper` fuzz
    /// target, whose inputs are too short to reach the real cap.
    #[doc(hidden)]
    pub fn with_cap(max_event: usize) -> Self {
        Self { held: BytesMut::new(), line_start: 0, data_lines: 0, passing: None, max_event }
    }

    /// The bytes held now, for the fuzz target, which asserts that they stay within the cap.
    #[doc(hidden)]
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Takes the next chunk of the stream and returns what goes to the client now.
    pub fn feed(&mut self, chunk: &Bytes) -> Bytes {
        let mut out = Out::default();
        let mut rest = chunk.clone();
        while !rest.is_empty() {
            if let Some(blank) = self.passing.as_mut() {
                // An oversized event: pass it on, up to and including its blank line.
                let mut end = None;
                for (index, &byte) in rest.iter().enumerate() {
                    match byte {
                        b'\n' if *blank => {
                            end = Some(index + 1);
                            break;
                        }
                        b'\n' => *blank = true,
                        b'\r' => {}
                        _ => *blank = false,
                    }
                }
                out.push(rest.split_to(end.unwrap_or(rest.len())));
                if end.is_some() {
                    self.passing = None;
                }
                continue;
            }
            // The fast path: nothing held and the chunk ends at an event boundary with no
            // `"usage"` in it (every chunk of an upstream that never sends usage).
            if self.held.is_empty() && ends_event(&rest) && !contains(&rest, b"\"usage\"") {
                out.push(rest);
                break;
            }
            self.held.extend_from_slice(&rest);
            rest = Bytes::new();
            self.drain_events(&mut out);
            if self.held.len() > self.max_event {
                // Too long to hold: what is held goes out as it is, and the rest of the event
                // after it.
                let blank = self.held[self.line_start..].iter().all(|&b| b == b'\r');
                out.push(self.take_held());
                self.passing = Some(blank);
            }
        }
        out.finish()
    }

    /// The end of the stream: whatever is held goes out unchanged.
    pub fn finish(&mut self) -> Bytes {
        self.passing = None;
        self.take_held()
    }

    fn take_held(&mut self) -> Bytes {
        self.line_start = 0;
        self.data_lines = 0;
        self.held.split().freeze()
    }

    /// Sends on every complete event in `held`, edited.
    fn drain_events(&mut self, out: &mut Out) {
        while let Some(newline) = memchr::memchr(b'\n', &self.held[self.line_start..]) {
            let line_end = self.line_start + newline + 1;
            let line = &self.held[self.line_start..line_end - 1];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                let event = self.held.split_to(line_end).freeze();
                let data_lines = self.data_lines;
                self.line_start = 0;
                self.data_lines = 0;
                // An event past the cap is passed on as it is, whether it came whole or not:
                // where the stream was split must not change what the client gets.
                if data_lines == 1
                    && event.len() <= self.max_event
                    && contains(&event, b"\"usage\"")
                {
                    edit_event(event, out);
                } else {
                    out.push(event);
                }
            } else {
                if line.starts_with(b"data:") {
                    self.data_lines += 1;
                }
                self.line_start = line_end;
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// A response body passed through a [`UsageStripper`] on its way to the client. It wraps
    /// the tapped body (`body::Tapped`), whose scanner has read the usage from the upstream's
    /// bytes first, and whose idle timeout, error events and truncation checks work on the
    /// upstream's events as without it: a stream cut mid-event is still cut (the stripper then
    /// holds at most that event's beginning, which goes nowhere).
    pub(crate) struct Stripped<B> {
        #[pin]
        inner: B,
        stripper: UsageStripper,
        done: bool,
    }
}

impl<B> Stripped<B> {
    pub(crate) fn new(inner: B) -> Self {
        Self { inner, stripper: UsageStripper::new(), done: false }
    }
}

impl<B: http_body::Body<Data = Bytes>> http_body::Body for Stripped<B> {
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
        // Loops only while the stripper holds back whole frames (parts of one event): an
        // empty frame is not passed on.
        loop {
            let frame = match ready!(this.inner.as_mut().poll_frame(cx)) {
                Some(Ok(frame)) => frame,
                Some(Err(error)) => return Poll::Ready(Some(Err(error))),
                None => {
                    *this.done = true;
                    let held = this.stripper.finish();
                    return Poll::Ready((!held.is_empty()).then(|| Ok(Frame::data(held))));
                }
            };
            let data = match frame.into_data() {
                Ok(data) => data,
                Err(frame) => return Poll::Ready(Some(Ok(frame))),
            };
            let mut data = this.stripper.feed(&data);
            let end = this.inner.is_end_stream();
            if end {
                // A body that knows its end is not polled past it: nothing may stay held.
                let held = this.stripper.finish();
                if !held.is_empty() {
                    data = [&data[..], &held[..]].concat().into();
                }
            }
            if !data.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(data))));
            }
            if end {
                *this.done = true;
                return Poll::Ready(None);
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || (self.inner.is_end_stream() && self.stripper.held() == 0)
    }

    fn size_hint(&self) -> SizeHint {
        // Shorter than the upstream's by an amount known only at its end: the upstream's
        // exact length would be a wrong `content-length` for the client.
        let mut hint = SizeHint::new();
        if let Some(upper) = self.inner.size_hint().upper() {
            hint.set_upper(upper);
        }
        hint
    }
}

/// Sends `event` (one `data:` line, then its blank line) on, without what `include_usage`
/// added to it.
fn edit_event(event: Bytes, out: &mut Out) {
    let Some((start, end)) = data_payload(&event) else {
        out.push(event);
        return;
    };
    match edit_chunk(&event[start..end]) {
        Edit::Keep => out.push(event),
        Edit::Drop => {}
        Edit::Remove(range) => {
            out.push(event.slice(..start + range.start));
            out.push(event.slice(start + range.end..));
        }
    }
}

/// Where the JSON of the event's `data:` line lies.
fn data_payload(event: &[u8]) -> Option<(usize, usize)> {
    let mut at = 0;
    while at < event.len() {
        let end = memchr::memchr(b'\n', &event[at..]).map_or(event.len(), |n| at + n);
        let line = &event[at..end];
        if let Some(data) = line.strip_prefix(b"data:") {
            let mut start = at + 5;
            if data.first() == Some(&b' ') {
                start += 1;
            }
            let end = if line.ends_with(b"\r") { end - 1 } else { end };
            return Some((start, end.max(start)));
        }
        at = end + 1;
    }
    None
}

/// What to do with one chunk's JSON.
#[derive(Debug, PartialEq, Eq)]
enum Edit {
    /// Nothing to take out.
    Keep,
    /// The usage chunk: `"choices": []` and a `usage` that is not `null`.
    Drop,
    /// Take out this byte range: the `"usage": null` member and one comma beside it.
    Remove(std::ops::Range<usize>),
}

fn edit_chunk(json: &[u8]) -> Edit {
    let Some(members) = members(json, 0, true) else { return Edit::Keep };
    let Some(index) = single_index(json, &members, b"usage") else { return Edit::Keep };
    let usage = &members[index];
    if &json[usage.value.clone()] != b"null" {
        let no_choices = single(json, &members, b"choices").is_some_and(|choices| {
            let value = &json[choices.value.clone()];
            value.first() == Some(&b'[') && value[1..value.len() - 1].iter().all(is_space)
        });
        return if no_choices { Edit::Drop } else { Edit::Keep };
    }
    // With the comma before it, or (when it comes first) the one after it.
    let range = match (index.checked_sub(1).map(|i| &members[i]), members.get(index + 1)) {
        (Some(before), _) => before.value.end..usage.value.end,
        (None, Some(after)) => usage.key.start - 1..after.key.start - 1,
        (None, None) => usage.key.start - 1..usage.value.end,
    };
    Edit::Remove(range)
}

/// One member of a JSON object: its key (the bytes between the quotes, escapes as written)
/// and its value, as byte ranges of the text.
#[derive(Debug, Clone)]
struct Member {
    key: std::ops::Range<usize>,
    value: std::ops::Range<usize>,
}

fn key<'a>(text: &'a [u8], member: &Member) -> &'a [u8] {
    &text[member.key.clone()]
}

/// The member named `name`, when exactly one member has that name and no key of the object
/// is written with escapes (one could spell `name` another way).
fn single<'m>(text: &[u8], members: &'m [Member], name: &[u8]) -> Option<&'m Member> {
    single_index(text, members, name).map(|index| &members[index])
}

fn single_index(text: &[u8], members: &[Member], name: &[u8]) -> Option<usize> {
    if members.iter().any(|m| key(text, m).contains(&b'\\')) {
        return None;
    }
    let mut found = members.iter().enumerate().filter(|(_, m)| key(text, m) == name);
    let (index, _) = found.next()?;
    found.next().is_none().then_some(index)
}

/// The members of the object that starts at `at` (after any whitespace), or `None` when the
/// text there is not an object whose strings and brackets close; with `whole`, only
/// whitespace may follow it. This finds members, it does not validate: the texts it sees
/// were either checked as JSON already (request bodies) or are passed on unchanged when it
/// says no (chunks).
fn members(text: &[u8], at: usize, whole: bool) -> Option<Vec<Member>> {
    let mut at = skip_space(text, at);
    if text.get(at) != Some(&b'{') {
        return None;
    }
    at = skip_space(text, at + 1);
    let mut members = Vec::new();
    if text.get(at) == Some(&b'}') {
        at += 1;
    } else {
        loop {
            if text.get(at) != Some(&b'"') {
                return None;
            }
            let key_end = string_end(text, at)?;
            let key = at + 1..key_end - 1;
            at = skip_space(text, key_end);
            if text.get(at) != Some(&b':') {
                return None;
            }
            let start = skip_space(text, at + 1);
            let end = value_end(text, start)?;
            members.push(Member { key, value: start..end });
            at = skip_space(text, end);
            match text.get(at) {
                Some(b',') => at = skip_space(text, at + 1),
                Some(b'}') => {
                    at += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    (!whole || skip_space(text, at) == text.len()).then_some(members)
}

/// The index after the string whose opening quote is at `at`.
fn string_end(text: &[u8], at: usize) -> Option<usize> {
    let mut index = at + 1;
    while index < text.len() {
        match text[index] {
            b'\\' => index += 2,
            b'"' => return Some(index + 1),
            _ => index += 1,
        }
    }
    None
}

/// The index after the value that starts at `at`: a string, an object or array (to its
/// matching bracket, strings inside skipped), or a literal or number (to the next delimiter).
fn value_end(text: &[u8], at: usize) -> Option<usize> {
    match text.get(at)? {
        b'"' => string_end(text, at),
        b'{' | b'[' => {
            let mut depth = 0_usize;
            let mut index = at;
            while index < text.len() {
                match text[index] {
                    b'"' => {
                        index = string_end(text, index)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(index + 1);
                        }
                    }
                    _ => {}
                }
                index += 1;
            }
            None
        }
        b',' | b'}' | b']' | b':' => None,
        _ => {
            let len = text[at..]
                .iter()
                .position(|&b| matches!(b, b',' | b'}' | b']') || is_space(&b))
                .unwrap_or(text.len() - at);
            Some(at + len)
        }
    }
}

fn is_space(byte: &u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\r')
}

fn skip_space(text: &[u8], at: usize) -> usize {
    at + text.get(at..).map_or(0, |rest| rest.iter().take_while(|b| is_space(b)).count())
}

/// The index of the last byte before `end` that is not whitespace.
fn last_non_space(text: &[u8], end: usize) -> Option<usize> {
    text[..end].iter().rposition(|b| !is_space(b))
}

/// Whether `bytes` ends with a blank line: an event boundary.
fn ends_event(bytes: &[u8]) -> bool {
    bytes.ends_with(b"\n\n") || bytes.ends_with(b"\n\r\n")
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(haystack, needle).is_some()
}

/// What one [`UsageStripper::feed`] sends on: one `Bytes` without a copy when it is one
/// piece, the pieces joined otherwise.
#[derive(Default)]
struct Out {
    first: Option<Bytes>,
    joined: Option<BytesMut>,
}

impl Out {
    fn push(&mut self, bytes: Bytes) {
        if bytes.is_empty() {
            return;
        }
        match (&mut self.first, &mut self.joined) {
            (None, _) => self.first = Some(bytes),
            (Some(first), None) => {
                let mut joined = BytesMut::with_capacity(first.len() + bytes.len());
                joined.extend_from_slice(first);
                joined.extend_from_slice(&bytes);
                self.joined = Some(joined);
            }
            (Some(_), Some(joined)) => joined.extend_from_slice(&bytes),
        }
    }

    fn finish(self) -> Bytes {
        match (self.first, self.joined) {
            (_, Some(joined)) => joined.freeze(),
            (Some(first), None) => first,
            (None, None) => Bytes::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn ask(body: &str, option: UsageOption) -> Option<String> {
        ask_upstream(body.as_bytes(), option).map(|b| String::from_utf8(b.to_vec()).unwrap())
    }

    fn option(body: &str) -> UsageOption {
        cliproxy_netguard::RequestFields::from_slice(body.as_bytes()).unwrap().usage_option()
    }

    #[test]
    fn a_body_without_stream_options_gets_the_member_before_its_closing_brace() {
        let body = "{\"model\": \"gpt-4o\", \"stream\": true}\n";
        assert_eq!(
            ask(body, option(body)).as_deref(),
            Some(
                "{\"model\": \"gpt-4o\", \"stream\": true,\"stream_options\":{\"include_usage\":true}}\n"
            )
        );
        assert_eq!(
            ask(" { } ", UsageOption::Missing).as_deref(),
            Some(" { \"stream_options\":{\"include_usage\":true}} ")
        );
        // Not an object (the pipeline refuses those before; the edit does not rely on it).
        assert_eq!(ask("[1]", UsageOption::Missing), None);
        assert_eq!(ask("", UsageOption::Missing), None);
    }

    #[test]
    fn stream_options_that_do_not_ask_are_edited_in_place_and_keep_their_other_options() {
        for (body, expected) in [
            (
                r#"{"stream_options": {"include_usage": false}, "stream": true}"#,
                json!({"stream_options": {"include_usage": true}, "stream": true}),
            ),
            (
                r#"{"stream": true, "stream_options": null}"#,
                json!({"stream_options": {"include_usage": true}, "stream": true}),
            ),
            (r#"{"stream_options": {}}"#, json!({"stream_options": {"include_usage": true}})),
            (
                r#"{"stream_options": {"include_obfuscation": false, "x": [1, {"y": "}"}]}}"#,
                json!({"stream_options": {"include_usage": true, "include_obfuscation": false, "x": [1, {"y": "}"}]}}),
            ),
            (
                r#"{"a": "\"stream_options\"", "stream_options": { "include_usage" : null } }"#,
                json!({"a": "\"stream_options\"", "stream_options": {"include_usage": true}}),
            ),
        ] {
            assert_eq!(option(body), UsageOption::NotAsked, "{body}");
            let edited = ask(body, option(body)).unwrap_or_else(|| panic!("{body}"));
            let edited: Value = serde_json::from_str(&edited).unwrap();
            assert_eq!(edited, expected, "{body}");
        }
    }

    #[test]
    fn bodies_that_cannot_be_edited_safely_are_left_alone() {
        for body in [
            // The client asked itself.
            r#"{"stream_options": {"include_usage": true}}"#,
            // A key written with escapes could be the one to edit.
            r#"{"stream_options": {"include\u005fusage": false}}"#,
            r#"{"stream\u005foptions": {"include_usage": false}}"#,
            // Keys given twice (validation refuses them when it is on).
            r#"{"stream_options": {"include_usage": false, "include_usage": false}}"#,
            r#"{"stream_options": {}, "stream_options": {}}"#,
            // Another type: the upstream refuses it, the gateway does not change its meaning.
            r#"{"stream_options": "include_usage"}"#,
            r#"{"stream_options": [true]}"#,
        ] {
            assert_eq!(ask(body, option(body)), None, "{body}");
        }
    }

    #[test]
    fn the_mock_is_asked_in_its_tree() {
        for (mut body, asked, expected) in [
            (
                json!({"stream": true}),
                true,
                json!({"stream": true, "stream_options": {"include_usage": true}}),
            ),
            (
                json!({"stream_options": null}),
                true,
                json!({"stream_options": {"include_usage": true}}),
            ),
            (
                json!({"stream_options": {"include_usage": false, "x": 1}}),
                true,
                json!({"stream_options": {"include_usage": true, "x": 1}}),
            ),
            (json!({"stream_options": "x"}), false, json!({"stream_options": "x"})),
        ] {
            let option = option(&body.to_string());
            assert_eq!(ask_mock(&mut body, option), asked);
            assert_eq!(body, expected);
        }
        let mut body = json!({"stream_options": {"include_usage": true}});
        assert!(!ask_mock(&mut body, UsageOption::Asked));
    }

    /// A chat stream as OpenAI sends it with `include_usage`, and the same without.
    fn streams(line_end: &str) -> (String, String) {
        let chunk = |delta: &str, usage: bool| {
            let usage = if usage { r#","usage":null"# } else { "" };
            format!(
                r#"data: {{"id":"c","object":"chat.completion.chunk","choices":[{{"index":0,"delta":{delta}}}]{usage}}}{line_end}{line_end}"#
            )
        };
        let deltas = [r#"{"role":"assistant","content":""}"#, r#"{"content":"usage"}"#, "{}"];
        let done = format!("data: [DONE]{line_end}{line_end}");
        let without: String =
            deltas.iter().map(|d| chunk(d, false)).chain([done.clone()]).collect();
        let last = format!(
            r#"data: {{"id":"c","object":"chat.completion.chunk","choices":[],"usage":{{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}}}{line_end}{line_end}"#
        );
        let with: String = deltas.iter().map(|d| chunk(d, true)).chain([last, done]).collect();
        (with, without)
    }

    fn strip(stream: &[u8], split: usize, cap: usize) -> Vec<u8> {
        let mut stripper = UsageStripper::with_cap(cap);
        let mut out = Vec::new();
        for piece in stream.chunks(split.max(1)) {
            out.extend_from_slice(&stripper.feed(&Bytes::copy_from_slice(piece)));
            assert!(stripper.held() <= cap);
        }
        out.extend_from_slice(&stripper.finish());
        out
    }

    #[test]
    fn the_stream_is_what_it_would_be_without_the_option_however_it_is_split() {
        for line_end in ["\n", "\r\n"] {
            let (with, without) = streams(line_end);
            for split in 1..=with.len() {
                assert_eq!(
                    String::from_utf8(strip(with.as_bytes(), split, MAX_SSE_EVENT)).unwrap(),
                    without,
                    "split every {split} bytes, lines ending {line_end:?}"
                );
            }
            // A stream without the option passes unchanged.
            assert_eq!(strip(without.as_bytes(), 7, MAX_SSE_EVENT), without.as_bytes());
        }
    }

    #[test]
    fn chunks_the_option_did_not_add_to_pass_unchanged() {
        for event in [
            // Not JSON, or not an object.
            "data: [DONE]\n\n",
            "data: {\"usage\":null\n\n",
            "data: [{\"usage\":null}]\n\n",
            "data: \"usage\"\n\n",
            // Usage with choices (what some compatible servers send unasked), and a usage
            // inside another member.
            "data: {\"choices\":[{\"index\":0}],\"usage\":{\"prompt_tokens\":1}}\n\n",
            "data: {\"choices\":[],\"x\":{\"usage\":{\"prompt_tokens\":1}}}\n\n",
            // Keys given twice, or written with escapes.
            "data: {\"usage\":null,\"usage\":null}\n\n",
            "data: {\"usag\\u0065\":null,\"a\":1}\n\n",
            // Two data lines make one event: left whole.
            "data: {\"a\":1,\ndata: \"usage\":null}\n\n",
            // Comments and other fields.
            ": usage\n\nevent: usage\nid: \"usage\"\n\n",
        ] {
            for split in [1, 3, event.len()] {
                assert_eq!(
                    strip(event.as_bytes(), split, MAX_SSE_EVENT),
                    event.as_bytes(),
                    "{event:?}"
                );
            }
        }
    }

    #[test]
    fn the_usage_member_goes_with_one_comma_wherever_it_stands() {
        for (event, expected) in [
            ("data: {\"usage\":null,\"a\":1}\n\n", "data: {\"a\":1}\n\n"),
            ("data:{ \"usage\" : null , \"a\" : [1] }\n\n", "data:{ \"a\" : [1] }\n\n"),
            ("data: {\"a\":\"x\\\"\",\"usage\":null}\n\n", "data: {\"a\":\"x\\\"\"}\n\n"),
            ("data: {\"a\":1, \"usage\":null, \"b\":2}\n\n", "data: {\"a\":1, \"b\":2}\n\n"),
            ("data: {\"usage\":null}\n\n", "data: {}\n\n"),
            // Azure's first chunk has no choices and `"usage": null`: only the member goes.
            (
                "data: {\"choices\":[],\"prompt_filter_results\":[],\"usage\":null}\n\n",
                "data: {\"choices\":[],\"prompt_filter_results\":[]}\n\n",
            ),
            // The usage chunk goes whole, with its event's other fields.
            ("id: 7\ndata: {\"choices\":[ ],\"usage\":{\"prompt_tokens\":1}}\r\n\r\n", ""),
        ] {
            let out = strip(event.as_bytes(), event.len(), MAX_SSE_EVENT);
            assert_eq!(String::from_utf8(out).unwrap(), expected, "{event:?}");
        }
    }

    #[test]
    fn an_event_past_the_cap_passes_unchanged_and_the_next_ones_are_stripped_again() {
        let (with, without) = streams("\n");
        let huge = format!("data: {{\"usage\":null,\"pad\":\"{}\"}}\n\n", "x".repeat(300));
        let stream = format!("{huge}{with}");
        for split in [1, 2, 5, 64, stream.len()] {
            let out = String::from_utf8(strip(stream.as_bytes(), split, 200)).unwrap();
            let expected = format!("{huge}{without}");
            let at = out.bytes().zip(expected.bytes()).position(|(a, b)| a != b);
            assert_eq!(out, expected, "split {split}, first difference at {at:?}");
        }
        // A line that never ends is passed on as it grows, not held.
        let mut stripper = UsageStripper::with_cap(64);
        let mut passed = 0;
        for _ in 0..100 {
            passed += stripper.feed(&Bytes::from(vec![b'x'; 50])).len();
            assert!(stripper.held() <= 64);
        }
        assert_eq!(passed, 5000);
    }

    #[test]
    fn a_stream_cut_mid_event_ends_with_the_held_bytes_unchanged() {
        let mut stripper = UsageStripper::new();
        let first =
            stripper.feed(&Bytes::from_static(b"data: {\"usage\":null,\"a\":1}\n\ndata: {\"usa"));
        assert_eq!(&first[..], b"data: {\"a\":1}\n\n");
        assert_eq!(&stripper.finish()[..], b"data: {\"usa");
        assert_eq!(stripper.held(), 0);
    }
}
