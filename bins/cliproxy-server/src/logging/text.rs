//! The text format of the operational log (`logging.format: text`): a `slog` drain that
//! writes each record as one line, `TIME LEVEL message, key: value, key: value`.
//!
//! It replaces `slog_term`'s `FullFormat`, which wrote values as they came: a model name with
//! a `\n` in it ended the access log line, and whatever the client put after it read as a
//! line of its own (issue 18, item 13). Here no value can break a line or add a field:
//!
//! - a value that holds a control character (C0, DEL, C1), a Unicode line or paragraph
//!   separator (U+2028, U+2029), a quote, a backslash or a comma (the field separator), or
//!   that is empty, is written as a JSON string: in quotes, with `\"`, `\\`, `\n`, `\r`, `\t`
//!   and `\uXXXX` for every other one of those characters, so it can be read back exactly;
//! - the message and the keys come from the code, but any control character or line
//!   separator in them is escaped the same way (without quotes);
//! - a `slog::Serde` value is written as compact JSON, which escapes the C0 controls itself;
//!   the rest (DEL, C1, U+2028, U+2029) are escaped as `\uXXXX`, which JSON reads back.
//!
//! The time is RFC 3339 in UTC, as in the JSON format; then the level's short name, the
//! message, the record's key-values and the logger's, in the order `slog_term` wrote them.

use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::time::SystemTime;

use slog::{KV, Key, OwnedKVList, Record};

/// Appends `record` as one line and a newline.
pub(super) fn write_record(
    line: &mut Vec<u8>,
    record: &Record<'_>,
    values: &OwnedKVList,
    now: SystemTime,
) {
    if !super::json::write_time(line, now) {
        line.push(b'-');
    }
    line.push(b' ');
    line.extend_from_slice(record.level().as_short_str().as_bytes());
    line.push(b' ');
    let start = line.len();
    write_args(line, record.msg());
    escape_tail(line, start, Quote::Never);
    let first = start == line.len();
    let mut fields = Fields { line, first };
    // Only a value's own `serialize` can fail, between two fields; what was written stands.
    let _ = record.kv().serialize(record, &mut fields);
    let _ = values.serialize(record, &mut fields);
    line.push(b'\n');
}

/// The key-values of a record, each written as `, key: value`.
struct Fields<'a> {
    line: &'a mut Vec<u8>,
    /// No separator before the first field when the message was empty (as `slog_term`).
    first: bool,
}

impl Fields<'_> {
    fn key(&mut self, key: Key) {
        if !std::mem::take(&mut self.first) {
            self.line.extend_from_slice(b", ");
        }
        let start = self.line.len();
        self.line.extend_from_slice(key.as_bytes());
        escape_tail(self.line, start, Quote::Never);
        self.line.extend_from_slice(b": ");
    }

    /// A value written with `Display`, then escaped and quoted if it needs to be.
    fn display(&mut self, key: Key, value: impl fmt::Display) {
        self.key(key);
        let start = self.line.len();
        // A `Display` that returns an error keeps what it wrote.
        let _ = write!(Raw(self.line), "{value}");
        escape_tail(self.line, start, Quote::IfNeeded);
    }
}

/// Numbers and booleans are written as `slog_term` wrote them (`Display`): they hold nothing
/// to escape.
macro_rules! plain {
    ($($emit:ident: $ty:ty),* $(,)?) => {
        $(
            fn $emit(&mut self, key: Key, value: $ty) -> slog::Result {
                self.key(key);
                let _ = write!(Raw(self.line), "{value}");
                Ok(())
            }
        )*
    };
}

impl slog::Serializer for Fields<'_> {
    plain!(
        emit_usize: usize, emit_isize: isize,
        emit_u8: u8, emit_i8: i8, emit_u16: u16, emit_i16: i16,
        emit_u32: u32, emit_i32: i32, emit_u64: u64, emit_i64: i64,
        emit_u128: u128, emit_i128: i128,
        emit_f32: f32, emit_f64: f64, emit_bool: bool,
    );

    fn emit_char(&mut self, key: Key, value: char) -> slog::Result {
        self.display(key, value);
        Ok(())
    }

    fn emit_unit(&mut self, key: Key) -> slog::Result {
        self.key(key);
        self.line.extend_from_slice(b"()");
        Ok(())
    }

    fn emit_none(&mut self, key: Key) -> slog::Result {
        self.key(key);
        self.line.extend_from_slice(b"None");
        Ok(())
    }

    fn emit_str(&mut self, key: Key, value: &str) -> slog::Result {
        self.key(key);
        let start = self.line.len();
        self.line.extend_from_slice(value.as_bytes());
        escape_tail(self.line, start, Quote::IfNeeded);
        Ok(())
    }

    fn emit_arguments(&mut self, key: Key, value: &fmt::Arguments<'_>) -> slog::Result {
        self.key(key);
        let start = self.line.len();
        write_args(self.line, value);
        escape_tail(self.line, start, Quote::IfNeeded);
        Ok(())
    }

    /// A `slog::Serde` value as compact JSON; `null` if it cannot be serialised.
    fn emit_serde(&mut self, key: Key, value: &dyn slog::SerdeValue) -> slog::Result {
        self.key(key);
        let start = self.line.len();
        if serde_json::to_writer(&mut *self.line, value.as_serde()).is_err() {
            self.line.truncate(start);
            self.line.extend_from_slice(b"null");
        }
        escape_tail(self.line, start, Quote::Never);
        Ok(())
    }
}

/// Formats `args` into `out`. A `Display` that returns an error keeps what it wrote.
fn write_args(out: &mut Vec<u8>, args: &fmt::Arguments<'_>) {
    match args.as_str() {
        Some(text) => out.extend_from_slice(text.as_bytes()),
        None => {
            let _ = Raw(out).write_fmt(*args);
        }
    }
}

/// A `fmt::Write` into the line. Not `io::Write`: its `write_fmt` panics when a `Display`
/// returns an error the writer did not cause, and a value's `Display` is not ours to trust.
struct Raw<'a>(&'a mut Vec<u8>);

impl fmt::Write for Raw<'_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        self.0.extend_from_slice(text.as_bytes());
        Ok(())
    }
}

/// Whether [`escape_tail`] puts a value in quotes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Quote {
    /// A value: quoted (and then `"` and `\` escaped too) when it holds anything that needs
    /// escaping, a quote, a backslash or a comma, or is empty.
    IfNeeded,
    /// The message, a key, or JSON (which has its own quotes): control characters and line
    /// separators escaped in place, nothing quoted.
    Never,
}

/// Escapes what was written to `line` from `start` on, in place. The plain case, by far the
/// most common (a path, a model name, an address), is one scan and no copy.
fn escape_tail(line: &mut Vec<u8>, start: usize, quote: Quote) {
    let Some(tail) = line.get(start..) else { return };
    let quoted = quote == Quote::IfNeeded && needs_quotes(tail);
    if !quoted && !tail.iter().any(|&byte| may_break(byte)) {
        return;
    }
    let tail = line.split_off(start);
    escape(line, &String::from_utf8_lossy(&tail), quoted);
}

/// Appends `text`, escaped, in quotes if `quoted`.
fn escape(out: &mut Vec<u8>, text: &str, quoted: bool) {
    if quoted {
        out.push(b'"');
    }
    let mut buf = [0u8; 4];
    for c in text.chars() {
        match c {
            '"' if quoted => out.extend_from_slice(b"\\\""),
            '\\' if quoted => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            c if is_escaped(c) => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes()),
        }
    }
    if quoted {
        out.push(b'"');
    }
}

/// The characters no text value may hold as they are: the C0 controls, DEL, the C1 controls
/// (U+0085 is a line break to some readers) and the Unicode line and paragraph separators.
fn is_escaped(c: char) -> bool {
    c.is_control() || c == '\u{2028}' || c == '\u{2029}'
}

/// Whether a byte may start (or be) a character [`is_escaped`] holds: any control byte, DEL,
/// and the lead bytes of U+0080–U+009F (`0xC2`) and of U+2028/U+2029 (`0xE2`). A cheap test
/// that lets plain text through without decoding it.
fn may_break(byte: u8) -> bool {
    byte < 0x20 || byte == 0x7f || byte == 0xc2 || byte == 0xe2
}

/// Whether a value must be quoted: it is empty, or holds a character to escape, a quote, a
/// backslash or a comma.
fn needs_quotes(bytes: &[u8]) -> bool {
    if bytes.is_empty() {
        return true;
    }
    if bytes.iter().any(|&byte| matches!(byte, b'"' | b'\\' | b',')) {
        return true;
    }
    bytes.iter().any(|&byte| may_break(byte))
        && String::from_utf8_lossy(bytes).chars().any(is_escaped)
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::Receiver;

    use slog::{Logger, info, o};

    use super::*;

    fn capture() -> (Logger, Receiver<Vec<u8>>) {
        let (tx, rx) = std::sync::mpsc::sync_channel(16);
        let sender = crate::logging::LineSender {
            line: Vec::new(),
            tx,
            dropped: std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0)),
        };
        (
            Logger::root(
                crate::logging::LineDrain::new(sender, write_record),
                o!("version" => "1.0"),
            ),
            rx,
        )
    }

    /// The line after its time stamp.
    fn next_line(rx: &Receiver<Vec<u8>>) -> String {
        let line = String::from_utf8(rx.try_recv().unwrap()).unwrap();
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1, "{line:?}");
        let (ts, rest) = line.split_once(' ').unwrap();
        assert!(ts.starts_with("20") && ts.ends_with('Z'), "{line:?}");
        rest.trim_end_matches('\n').to_owned()
    }

    fn value(text: &str) -> String {
        let mut out = Vec::new();
        let start = out.len();
        out.extend_from_slice(text.as_bytes());
        escape_tail(&mut out, start, Quote::IfNeeded);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn every_line_breaking_character_is_escaped_and_the_value_quoted() {
        assert_eq!(value("a\nb"), r#""a\nb""#);
        assert_eq!(value("a\r\nb\tc"), r#""a\r\nb\tc""#);
        assert_eq!(value("\u{0}\u{1b}[31m\u{7f}"), r#""\u0000\u001b[31m\u007f""#);
        assert_eq!(value("c1 \u{85} \u{9b}"), r#""c1 \u0085 \u009b""#);
        assert_eq!(value("\u{2028}\u{2029}"), r#""\u2028\u2029""#);
        // Quotes, backslashes and the field separator make a value quoted, so that it cannot
        // end early or add a field.
        assert_eq!(value(r#"say "hi""#), r#""say \"hi\"""#);
        assert_eq!(value(r"C:\dir"), r#""C:\\dir""#);
        assert_eq!(value("x, status: 200"), r#""x, status: 200""#);
        assert_eq!(value(""), r#""""#);
        // Everything else is written as it is, non-ASCII included (the lead bytes 0xC2 and
        // 0xE2 start ordinary characters too).
        for plain in ["gpt-4o", "127.0.0.1:443", "/v1/chat/completions", "é ü 日本 🦀 ©", "€ – …"]
        {
            assert_eq!(value(plain), plain);
        }
    }

    #[test]
    fn an_escaped_value_reads_back_as_json() {
        for text in ["a\nb", "\u{0}\u{7f}\u{85}\u{2028}", r#"q"uote\back"#, "x, y: z", "é\n🦀"] {
            let escaped = value(text);
            assert_eq!(serde_json::from_str::<String>(&escaped).unwrap(), text, "{escaped}");
        }
    }

    #[test]
    fn a_forged_line_stays_inside_its_field() {
        let (log, rx) = capture();
        let model = "gpt-x\n2026-12-07T10:00:00Z INFO request, status: 200\u{2028}, client: admin";
        info!(log, "request"; "model" => model, "path" => "/v1/chat/completions", "status" => 404);
        assert_eq!(
            next_line(&rx),
            r#"INFO request, status: 404, path: /v1/chat/completions, model: "gpt-x\n2026-12-07T10:00:00Z INFO request, status: 200\u2028, client: admin", version: 1.0"#
        );
    }

    #[test]
    fn messages_keys_arguments_and_serde_values_are_escaped_too() {
        let (log, rx) = capture();
        let name = "a\nb";
        info!(log, "hello {}", name; "shown" => %format_args!("{name}!"), "n" => 1.5, "ok" => true,
            "none" => Option::<&str>::None, "char" => '\n');
        assert_eq!(
            next_line(&rx),
            r#"INFO hello a\nb, char: "\n", none: None, ok: true, n: 1.5, shown: "a\nb!", version: 1.0"#
        );
        info!(log, ""; "json" => slog::Serde(serde_json::json!({"k": "v\n\u{2028}"})));
        assert_eq!(next_line(&rx), r#"INFO json: {"k":"v\n\u2028"}, version: 1.0"#);
    }

    /// A value that fails part-way still leaves one whole line.
    struct Fails;

    impl fmt::Display for Fails {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("part\n")?;
            Err(fmt::Error)
        }
    }

    #[test]
    fn a_value_whose_display_fails_still_leaves_one_line() {
        let (log, rx) = capture();
        info!(log, "x"; "bad" => %Fails, "after" => 1);
        assert_eq!(next_line(&rx), r#"INFO x, after: 1, bad: "part\n", version: 1.0"#);
    }
}
