//! A parser for the patches of `git diff --cached -p -U0` and `git log -p -U0 --cc`: it
//! yields the added lines, grouped in runs of consecutive lines of one file, with the line
//! number they have in the new file.
//!
//! Hunk headers give the number of lines each hunk holds, and the parser counts them, so an
//! added line that happens to read `+++ b/x` or `diff --git` is never taken for a header.
//! File names come from the `+++ ` line, unquoted the way git quotes them.

/// What the parser hands to its caller.
pub(crate) enum Event<'a> {
    /// Consecutive added lines of one file.
    Added(Chunk<'a>),
    /// A file that is not scanned, and why.
    Skipped { commit: Option<&'a str>, path: &'a str, reason: &'static str },
}

/// Consecutive added lines of one file.
pub(crate) struct Chunk<'a> {
    pub(crate) commit: Option<&'a str>,
    pub(crate) path: &'a str,
    pub(crate) first_line: usize,
    pub(crate) text: &'a str,
}

/// The parser's state between lines.
pub(crate) struct Parser {
    max_file_bytes: usize,
    commit: Option<String>,
    file: Option<File>,
    hunk: Option<Hunk>,
    pending: Pending,
}

struct File {
    path: Option<String>,
    added_bytes: usize,
    skipped: bool,
}

struct Hunk {
    /// Number of parents (1, or more for a merge's combined diff).
    parents: usize,
    old_remaining: Vec<usize>,
    new_remaining: usize,
    new_line: usize,
}

#[derive(Default)]
struct Pending {
    first_line: usize,
    next_line: usize,
    text: Vec<u8>,
}

/// Marks the start of a commit in `git log` output (`--format=%x00commit %H`); no line of
/// a patch starts with a NUL byte.
pub(crate) const COMMIT_MARKER: &[u8] = b"\0commit ";

impl Parser {
    /// A parser that skips a file once its added lines exceed `max_file_bytes`.
    pub(crate) fn new(max_file_bytes: usize) -> Self {
        Self { max_file_bytes, commit: None, file: None, hunk: None, pending: Pending::default() }
    }

    /// Feeds one line (without its `\n`).
    pub(crate) fn line(&mut self, line: &[u8], sink: &mut dyn FnMut(Event<'_>)) {
        if self.hunk.is_some() && self.hunk_line(line, sink) {
            return;
        }
        self.hunk = None;
        self.flush(sink);
        if let Some(id) = line.strip_prefix(COMMIT_MARKER) {
            self.commit = Some(String::from_utf8_lossy(id).trim().to_owned());
            self.file = None;
        } else if line.starts_with(b"diff --") {
            self.file = Some(File { path: None, added_bytes: 0, skipped: false });
        } else if let Some(rest) = line.strip_prefix(b"+++ ") {
            if let Some(file) = &mut self.file {
                file.path = new_path(rest);
            }
        } else if line.starts_with(b"@@") {
            self.hunk = parse_hunk_header(line);
        }
    }

    /// Flushes what is pending at the end of the input.
    pub(crate) fn finish(&mut self, sink: &mut dyn FnMut(Event<'_>)) {
        self.flush(sink);
    }

    /// Handles a line inside a hunk; returns false when the line does not belong to it.
    fn hunk_line(&mut self, line: &[u8], sink: &mut dyn FnMut(Event<'_>)) -> bool {
        let Some(hunk) = &mut self.hunk else { return false };
        if hunk.new_remaining == 0 && hunk.old_remaining.iter().all(|n| *n == 0) {
            return false;
        }
        if line.first() == Some(&b'\\') {
            // "\ No newline at end of file"
            return true;
        }
        let Some(columns) = line.get(..hunk.parents) else { return false };
        if !columns.iter().all(|c| matches!(c, b' ' | b'+' | b'-')) {
            return false;
        }
        let content = &line[hunk.parents..];
        if columns.contains(&b'-') {
            for (remaining, column) in hunk.old_remaining.iter_mut().zip(columns) {
                if *column == b'-' {
                    *remaining = remaining.saturating_sub(1);
                }
            }
            self.flush(sink);
            return true;
        }
        for (remaining, column) in hunk.old_remaining.iter_mut().zip(columns) {
            if *column == b' ' {
                *remaining = remaining.saturating_sub(1);
            }
        }
        hunk.new_remaining = hunk.new_remaining.saturating_sub(1);
        let number = hunk.new_line;
        hunk.new_line += 1;
        // A line is new when it is absent from every parent; a merge's lines taken from one
        // side were scanned in the commit that wrote them.
        if columns.iter().all(|c| *c == b'+') {
            self.added(number, content, sink);
        } else {
            self.flush(sink);
        }
        true
    }

    fn added(&mut self, number: usize, content: &[u8], sink: &mut dyn FnMut(Event<'_>)) {
        let Some(file) = &mut self.file else { return };
        if file.skipped {
            return;
        }
        let reason = if content.contains(&0) {
            Some("binary (NUL byte)")
        } else if file.added_bytes + content.len() > self.max_file_bytes {
            Some("over the size cap")
        } else {
            None
        };
        if let Some(reason) = reason {
            file.skipped = true;
            self.pending = Pending::default();
            let path = file.path.as_deref().unwrap_or("?");
            sink(Event::Skipped { commit: self.commit.as_deref(), path, reason });
            return;
        }
        file.added_bytes += content.len() + 1;
        if !self.pending.text.is_empty() && self.pending.next_line != number {
            self.flush(sink);
        }
        let pending = &mut self.pending;
        if pending.text.is_empty() {
            pending.first_line = number;
        } else {
            pending.text.push(b'\n');
        }
        pending.text.extend_from_slice(content);
        pending.next_line = number + 1;
    }

    fn flush(&mut self, sink: &mut dyn FnMut(Event<'_>)) {
        let pending = std::mem::take(&mut self.pending);
        if pending.text.is_empty() {
            return;
        }
        let Some(File { path: Some(path), skipped: false, .. }) = &self.file else { return };
        let text = String::from_utf8_lossy(&pending.text);
        sink(Event::Added(Chunk {
            commit: self.commit.as_deref(),
            path,
            first_line: pending.first_line,
            text: &text,
        }));
    }
}

/// `@@ -a,b +c,d @@` or, for a merge of n parents, n+1 `@` and n `-` ranges.
fn parse_hunk_header(line: &[u8]) -> Option<Hunk> {
    let text = std::str::from_utf8(line).ok()?;
    let ats = text.bytes().take_while(|b| *b == b'@').count();
    if ats < 2 {
        return None;
    }
    let fence = &text[..ats];
    let ranges = text[ats..].split(fence).next()?;
    let mut old_remaining = Vec::new();
    let mut new = None;
    for range in ranges.split_whitespace() {
        let (sign, numbers) = range.split_at(1);
        let (start, count) = match numbers.split_once(',') {
            Some((start, count)) => (start.parse::<usize>().ok()?, count.parse::<usize>().ok()?),
            None => (numbers.parse::<usize>().ok()?, 1),
        };
        match sign {
            "-" => old_remaining.push(count),
            "+" => new = Some((start, count)),
            _ => return None,
        }
    }
    let (start, count) = new?;
    if old_remaining.len() != ats - 1 {
        return None;
    }
    Some(Hunk { parents: ats - 1, old_remaining, new_remaining: count, new_line: start })
}

/// The path of a `+++ ` line: `b/path`, `"b/quoted\tpath"`, or `/dev/null`. git ends an
/// unquoted name that holds a space with a tab; a name that itself ends with a tab is quoted.
fn new_path(rest: &[u8]) -> Option<String> {
    let name = if rest.first() == Some(&b'"') {
        unquote(rest)?
    } else {
        rest.strip_suffix(b"\t").unwrap_or(rest).to_vec()
    };
    if name == b"/dev/null" {
        return None;
    }
    let name = name.strip_prefix(b"b/").unwrap_or(&name);
    Some(String::from_utf8_lossy(name).into_owned())
}

/// Undoes git's C-style quoting: `"...\t...\303\251..."`.
fn unquote(quoted: &[u8]) -> Option<Vec<u8>> {
    let inner = quoted.strip_prefix(b"\"")?;
    let mut out = Vec::with_capacity(inner.len());
    let mut bytes = inner.iter().copied();
    while let Some(b) = bytes.next() {
        match b {
            b'"' => return Some(out),
            b'\\' => {
                let escaped = bytes.next()?;
                let value = match escaped {
                    b'a' => 0x07,
                    b'b' => 0x08,
                    b't' => b'\t',
                    b'n' => b'\n',
                    b'v' => 0x0b,
                    b'f' => 0x0c,
                    b'r' => b'\r',
                    b'0'..=b'7' => {
                        let mut value = u32::from(escaped - b'0');
                        for _ in 0..2 {
                            let digit = bytes.next()?;
                            if !(b'0'..=b'7').contains(&digit) {
                                return None;
                            }
                            value = value * 8 + u32::from(digit - b'0');
                        }
                        u8::try_from(value).ok()?
                    }
                    other => other,
                };
                out.push(value);
            }
            other => out.push(other),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn added(input: &str) -> Vec<(Option<String>, String, usize, String)> {
        let mut parser = Parser::new(1 << 20);
        let mut out = Vec::new();
        let mut sink = |event: Event<'_>| {
            if let Event::Added(c) = event {
                out.push((
                    c.commit.map(str::to_owned),
                    c.path.to_owned(),
                    c.first_line,
                    c.text.to_owned(),
                ));
            }
        };
        for line in input.split('\n') {
            parser.line(line.as_bytes(), &mut sink);
        }
        parser.finish(&mut sink);
        out
    }

    #[test]
    fn counts_hunk_lines_so_added_headers_stay_content() {
        let patch = "diff --git a/x b/x\n--- a/x\n+++ b/x\n@@ -1,2 +1,3 @@\n-++ b/evil\n-old\n++++ b/not-a-header\n+diff --git a/y b/y\n+@@ -1 +1 @@\n@@ -10 +11,0 @@\n-gone\n@@ -20,0 +20 @@\n+last";
        assert_eq!(
            added(patch),
            vec![
                (
                    None,
                    "x".to_owned(),
                    1,
                    "+++ b/not-a-header\ndiff --git a/y b/y\n@@ -1 +1 @@".to_owned()
                ),
                (None, "x".to_owned(), 20, "last".to_owned()),
            ]
        );
    }

    #[test]
    fn quoted_and_spaced_names() {
        assert_eq!(new_path(b"\"b/a\\tb\\303\\251\\\"\"").as_deref(), Some("a\tbé\""));
        assert_eq!(new_path(b"b/with space.txt\t").as_deref(), Some("with space.txt"));
        assert_eq!(new_path(b"/dev/null"), None);
    }

    #[test]
    fn combined_diff_keeps_only_lines_new_to_every_parent() {
        let patch = "\0commit abc\ndiff --cc f\nindex 1,2..3\n--- a/f\n+++ b/f\n@@@ -1,1 -1,2 +1,2 @@@\n- one\n -two\n++evil\n+ from-first";
        assert_eq!(
            added(patch),
            vec![(Some("abc".to_owned()), "f".to_owned(), 1, "evil".to_owned())]
        );
    }
}
