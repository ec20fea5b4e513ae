//! The JSON format of the operational log: a `slog` drain that writes each record straight
//! into the line buffer as one JSON object.
//!
//! It replaces `slog_json`, which cost about a tenth of a request's instructions: it formatted
//! every `Display` value into a `String` before serde escaped it, and went through serde's map
//! machinery for each field. The output is the same: the keys `msg`, `level` (slog's short
//! names) and `ts` (RFC 3339 in UTC, the fraction without trailing zeros), then the logger's
//! key-values and then the record's, in the order slog hands them over, duplicates kept.
//! Numbers are still written by `serde_json`, so they read exactly as before (a float that is
//! not finite is `null`).
//!
//! A line is always a whole, valid object: a value whose `Display` fails keeps what it wrote,
//! a key-value that returns an error ends the fields early, and the object is closed either way.

use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use slog::{KV, Key, OwnedKVList, Record};
use time::OffsetDateTime;

/// Appends `record` as one JSON object and a newline.
pub(super) fn write_record(
    line: &mut Vec<u8>,
    record: &Record<'_>,
    values: &OwnedKVList,
    now: SystemTime,
) {
    line.extend_from_slice(b"{\"msg\":\"");
    write_args(line, record.msg());
    line.extend_from_slice(b"\",\"level\":\"");
    line.extend_from_slice(record.level().as_short_str().as_bytes());
    line.extend_from_slice(b"\",\"ts\":");
    write_ts(line, now);
    let mut fields = Fields(line);
    // Only a value's own `serialize` can fail, between two fields; what was written stands.
    let _ = values.serialize(record, &mut fields);
    let _ = record.kv().serialize(record, &mut fields);
    line.extend_from_slice(b"}\n");
}

/// The key-values of a record, each written as `,"key":value`.
struct Fields<'a>(&'a mut Vec<u8>);

impl Fields<'_> {
    fn key(&mut self, key: Key) {
        self.0.extend_from_slice(b",\"");
        escape(self.0, key);
        self.0.extend_from_slice(b"\":");
    }

    fn string(&mut self, key: Key, value: &str) {
        self.0.extend_from_slice(b",\"");
        escape(self.0, key);
        self.0.extend_from_slice(b"\":\"");
        escape(self.0, value);
        self.0.push(b'"');
    }
}

/// Numbers go through `serde_json`, which wrote them before, so they read exactly as they did.
/// Writing a number to a `Vec` cannot fail; if it ever did, the value is `null`.
macro_rules! numbers {
    ($($emit:ident: $ty:ty),* $(,)?) => {
        $(
            fn $emit(&mut self, key: Key, value: $ty) -> slog::Result {
                self.key(key);
                let start = self.0.len();
                if serde_json::to_writer(&mut *self.0, &value).is_err() {
                    self.0.truncate(start);
                    self.0.extend_from_slice(b"null");
                }
                Ok(())
            }
        )*
    };
}

impl slog::Serializer for Fields<'_> {
    numbers!(
        emit_usize: usize, emit_isize: isize,
        emit_u8: u8, emit_i8: i8, emit_u16: u16, emit_i16: i16,
        emit_u32: u32, emit_i32: i32, emit_u64: u64, emit_i64: i64,
        emit_u128: u128, emit_i128: i128,
        emit_f32: f32, emit_f64: f64,
    );

    fn emit_bool(&mut self, key: Key, value: bool) -> slog::Result {
        self.key(key);
        self.0.extend_from_slice(if value { b"true" } else { b"false" });
        Ok(())
    }

    fn emit_char(&mut self, key: Key, value: char) -> slog::Result {
        self.string(key, value.encode_utf8(&mut [0; 4]));
        Ok(())
    }

    fn emit_unit(&mut self, key: Key) -> slog::Result {
        self.key(key);
        self.0.extend_from_slice(b"null");
        Ok(())
    }

    fn emit_none(&mut self, key: Key) -> slog::Result {
        self.emit_unit(key)
    }

    fn emit_str(&mut self, key: Key, value: &str) -> slog::Result {
        self.string(key, value);
        Ok(())
    }

    fn emit_arguments(&mut self, key: Key, value: &fmt::Arguments<'_>) -> slog::Result {
        self.key(key);
        self.0.push(b'"');
        write_args(self.0, value);
        self.0.push(b'"');
        Ok(())
    }

    /// A `slog::Serde` value, as `serde_json` writes it; `null` if it cannot be serialised
    /// (a map with keys that are not strings, say).
    fn emit_serde(&mut self, key: Key, value: &dyn slog::SerdeValue) -> slog::Result {
        self.key(key);
        let start = self.0.len();
        if serde_json::to_writer(&mut *self.0, value.as_serde()).is_err() {
            self.0.truncate(start);
            self.0.extend_from_slice(b"null");
        }
        Ok(())
    }
}

/// Formats `args` into `out`, escaped as it is written, with no intermediate `String`.
fn write_args(out: &mut Vec<u8>, args: &fmt::Arguments<'_>) {
    match args.as_str() {
        Some(text) => escape(out, text),
        // A `Display` that returns an error keeps what it wrote; the caller closes the string.
        None => {
            let _ = Escaped(out).write_fmt(*args);
        }
    }
}

/// A `fmt::Write` that escapes what is written to it into a JSON string's contents.
struct Escaped<'a>(&'a mut Vec<u8>);

impl fmt::Write for Escaped<'_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        escape(self.0, text);
        Ok(())
    }
}

/// Appends `text` as the contents of a JSON string, escaped as `serde_json` escapes: `"`, `\`
/// and the control characters below U+0020 (`\b \t \n \f \r` short, the rest as `\u00XX`);
/// everything else, non-ASCII included, is copied as it is. Inlined: a line makes forty-odd
/// calls, mostly with a few bytes each, and the call itself cost as much as the test.
#[inline(always)]
fn escape(out: &mut Vec<u8>, text: &str) {
    // Almost every key and value is plain, and most are short: the whole of one is tested
    // with a few word operations and copied at once.
    if is_plain(text.as_bytes()) {
        out.extend_from_slice(text.as_bytes());
    } else {
        escape_each(out, text.as_bytes());
    }
}

/// [`escape`] for text that holds at least one byte to escape.
#[inline(never)]
fn escape_each(out: &mut Vec<u8>, mut rest: &[u8]) {
    loop {
        let (plain, tail) = rest.split_at_checked(plain_prefix(rest)).unwrap_or((rest, &[]));
        out.extend_from_slice(plain);
        let Some((&byte, tail)) = tail.split_first() else { return };
        match byte {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                let high = HEX[usize::from(byte >> 4)];
                let low = HEX[usize::from(byte & 0x0f)];
                out.extend_from_slice(&[b'\\', b'u', b'0', b'0', high, low]);
            }
        }
        rest = tail;
    }
}

/// Whether no byte of `bytes` needs escaping. Eight bytes are tested at a time; the last
/// few ride in a word that overlaps the one before (or, under eight bytes, in the first and
/// last four put together), so there is no loop over single bytes above three.
#[inline(always)]
fn is_plain(bytes: &[u8]) -> bool {
    let (words, tail) = bytes.as_chunks::<8>();
    if words.iter().any(|word| has_special(u64::from_le_bytes(*word))) {
        return false;
    }
    if tail.is_empty() {
        return true;
    }
    if let Some(last) = bytes.last_chunk::<8>() {
        return !has_special(u64::from_le_bytes(*last));
    }
    if let (Some(first), Some(last)) = (bytes.first_chunk::<4>(), bytes.last_chunk::<4>()) {
        let word =
            u64::from(u32::from_le_bytes(*first)) | u64::from(u32::from_le_bytes(*last)) << 32;
        return !has_special(word);
    }
    !bytes.iter().any(|&byte| is_special(byte))
}

/// How many bytes at the start of `bytes` need no escaping: eight at a time, then one by one.
fn plain_prefix(bytes: &[u8]) -> usize {
    let (words, _) = bytes.as_chunks::<8>();
    let plain =
        8 * words.iter().take_while(|word| !has_special(u64::from_le_bytes(**word))).count();
    let rest = bytes.get(plain..).unwrap_or_default();
    plain + rest.iter().take_while(|&&byte| !is_special(byte)).count()
}

fn is_special(byte: u8) -> bool {
    byte < 0x20 || byte == b'"' || byte == b'\\'
}

/// Whether any byte of `word` is below 0x20, a quote or a backslash. The classic bit tricks
/// (`x - 0x01…` and `!x` leave a byte's high bit set only if that byte was zero, and with
/// `0x20…` only if it was below 0x20) are exact about whether any byte matches, which is all
/// this needs; the byte itself is found one at a time.
#[inline(always)]
fn has_special(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let quote = word ^ (ONES * u64::from(b'"'));
    let backslash = word ^ (ONES * u64::from(b'\\'));
    let control = word.wrapping_sub(ONES * 0x20) & !word;
    let quote = quote.wrapping_sub(ONES) & !quote;
    let backslash = backslash.wrapping_sub(ONES) & !backslash;
    (control | quote | backslash) & HIGH != 0
}

/// Appends `now` as `slog_json` wrote it: an RFC 3339 string in UTC with `Z`, the fraction
/// of a second with its trailing zeros cut (none at all on a whole second), or `null` for a
/// year outside 0000–9999.
fn write_ts(out: &mut Vec<u8>, now: SystemTime) {
    out.push(b'"');
    if write_time(out, now) {
        out.push(b'"');
    } else {
        out.pop();
        out.extend_from_slice(b"null");
    }
}

/// Appends `now` in RFC 3339 in UTC as [`write_ts`] describes it, without the quotes; writes
/// nothing and returns false for a year outside 0000–9999. The text format uses it too.
pub(super) fn write_time(out: &mut Vec<u8>, now: SystemTime) -> bool {
    // Seconds since the epoch, rounded down, and the nanoseconds after them.
    let (secs, nanos) = match now.duration_since(UNIX_EPOCH) {
        Ok(after) => (i64::try_from(after.as_secs()).unwrap_or(i64::MAX), after.subsec_nanos()),
        Err(before) => {
            let before = before.duration();
            let secs = i64::try_from(before.as_secs()).map_or(i64::MIN, |secs| -secs);
            match before.subsec_nanos() {
                0 => (secs, 0),
                nanos => (secs.saturating_sub(1), 1_000_000_000 - nanos),
            }
        }
    };
    // The calendar is the `time` crate's; the digits are written here, straight into the
    // line, because this runs for every log line (a `format` call would allocate).
    let Ok(at) = OffsetDateTime::from_unix_timestamp(secs) else { return false };
    let Ok(year) = u32::try_from(at.year()) else { return false };
    if year > 9999 {
        return false;
    }
    push_digits(out, year, 4);
    out.push(b'-');
    push_digits(out, u32::from(u8::from(at.month())), 2);
    out.push(b'-');
    push_digits(out, u32::from(at.day()), 2);
    out.push(b'T');
    push_digits(out, u32::from(at.hour()), 2);
    out.push(b':');
    push_digits(out, u32::from(at.minute()), 2);
    out.push(b':');
    push_digits(out, u32::from(at.second()), 2);
    if nanos != 0 {
        let mut width = 9;
        let mut fraction = nanos;
        while fraction % 10 == 0 {
            fraction /= 10;
            width -= 1;
        }
        out.push(b'.');
        push_digits(out, fraction, width);
    }
    out.push(b'Z');
    true
}

/// Appends the last `width` (at most nine) decimal digits of `value`, zero-padded.
fn push_digits(out: &mut Vec<u8>, mut value: u32, width: usize) {
    let mut digits = [b'0'; 9];
    let digits = digits.get_mut(..width).unwrap_or_default();
    for digit in digits.iter_mut().rev() {
        // `value % 10` is below ten, so the cast loses nothing.
        *digit = b'0' + (value % 10) as u8;
        value /= 10;
    }
    out.extend_from_slice(digits);
}

#[cfg(test)]
mod tests {
    use std::panic::AssertUnwindSafe;
    use std::sync::Arc;
    use std::sync::atomic::AtomicU64;
    use std::sync::mpsc::Receiver;
    use std::time::Duration;

    use slog::{Logger, SendSyncRefUnwindSafeKV, info, o};

    use super::*;

    /// A logger over the JSON drain, and the lines it sends.
    fn capture<T: SendSyncRefUnwindSafeKV + 'static>(
        values: slog::OwnedKV<T>,
    ) -> (Logger, Receiver<Vec<u8>>) {
        let (tx, rx) = std::sync::mpsc::sync_channel(16);
        let sender = crate::logging::LineSender {
            line: Vec::new(),
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
        };
        (Logger::root(crate::logging::LineDrain::new(sender, write_record), values), rx)
    }

    /// The next line sent, which must be one JSON object ending in a newline.
    fn next_line(rx: &Receiver<Vec<u8>>) -> String {
        let line = String::from_utf8(rx.try_recv().unwrap()).unwrap();
        assert!(line.ends_with("}\n") && line.matches('\n').count() == 1, "{line:?}");
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert!(value.is_object(), "{line}");
        line
    }

    /// The line without its `ts` value, which changes from run to run.
    fn without_ts(line: &str) -> String {
        let at = line.find(",\"ts\":\"").unwrap();
        let end = at + 7 + line[at + 7..].find('"').unwrap();
        format!("{}{}", &line[..at], &line[end + 1..])
    }

    fn escaped(text: &str) -> String {
        let mut out = Vec::new();
        escape(&mut out, text);
        String::from_utf8(out).unwrap()
    }

    /// Writes its text in several pieces, as `Display` impls do.
    struct Pieces;

    impl fmt::Display for Pieces {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("say \"hi\"")?;
            f.write_char('\n')?;
            let (number, control) = (1, '\u{1}');
            write!(f, "{number}\\{control}é")
        }
    }

    #[test]
    fn escapes_quotes_backslashes_and_control_characters_and_nothing_else() {
        assert_eq!(escaped(r#"a "quoted" \path\"#), r#"a \"quoted\" \\path\\"#);
        assert_eq!(escaped("line\nnext\ttab\r\u{8}\u{c}"), r"line\nnext\ttab\r\b\f");
        assert_eq!(escaped("\u{0}\u{1}\u{1f}"), r"\u0000\u0001\u001f");
        assert_eq!(escaped("\u{7f} é ü 日本 🦀 \u{2028} /"), "\u{7f} é ü 日本 🦀 \u{2028} /");
        assert_eq!(escaped("plain text longer than one word"), "plain text longer than one word");
        assert_eq!(escaped(""), "");
    }

    #[test]
    fn the_word_at_a_time_scans_agree_with_a_byte_at_a_time_one() {
        // Every byte value at every position of every length up to two words and a tail.
        for len in 0..20 {
            let plain = vec![b'a'; len];
            assert!(is_plain(&plain), "{len}");
            assert_eq!(plain_prefix(&plain), len);
            for at in 0..len {
                for byte in 0..=255_u8 {
                    let mut bytes = plain.clone();
                    bytes[at] = byte;
                    let expected = bytes.iter().take_while(|&&byte| !is_special(byte)).count();
                    assert_eq!(plain_prefix(&bytes), expected, "byte {byte:#x} at {at} of {len}");
                    assert_eq!(
                        is_plain(&bytes),
                        expected == len,
                        "byte {byte:#x} at {at} of {len}"
                    );
                }
            }
        }
    }

    #[test]
    fn display_values_are_escaped_as_they_are_written() {
        let (log, rx) = capture(o!());
        info!(log, "{}", Pieces; "shown" => %Pieces, "debug" => ?"q\"");
        let line = next_line(&rx);
        let expected = r#"{"msg":"say \"hi\"\n1\\\u0001é","level":"INFO","debug":"\"q\\\"\"","shown":"say \"hi\"\n1\\\u0001é"}"#;
        assert_eq!(without_ts(&line), format!("{expected}\n"));
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["shown"], Pieces.to_string());
        assert_eq!(value["msg"], Pieces.to_string());
    }

    /// The line `slog_json` 2.6.1 (with its default keys) wrote for the same logger and
    /// record, `ts` left out: the logger's values newest first, then the record's in the order
    /// slog hands them over (the last first), a repeated key written twice.
    #[test]
    fn writes_every_value_type_in_slog_json_s_order_and_form() {
        let (root, rx) = capture(o!("root_a" => 1, "root_b" => "x"));
        let log = root.new(o!("child_a" => 2, "dup" => "logger"));
        info!(log, "hello {}", "world";
            "r1" => 1, "r2" => 2.5_f64, "nan" => f64::NAN, "inf" => f64::INFINITY,
            "f32" => 1.1_f32, "big" => 1e20_f64, "small" => 1e-7_f64, "u128" => u128::MAX,
            "i" => -5_i64, "ch" => 'q', "unit" => (), "none" => None::<u8>, "some" => Some(3_u8),
            "b" => true, "disp" => %"a\"b\nc", "dup" => "record",
            "ctl" => "\u{1}\u{1f}\u{7f}\u{80}é\u{2028}/\u{8}\u{c}\r\t");
        let line = next_line(&rx);
        let expected = concat!(
            r#"{"msg":"hello world","level":"INFO","dup":"logger","child_a":2,"root_b":"x","#,
            r#""root_a":1,"ctl":"\u0001\u001f"#,
            "\u{7f}\u{80}é\u{2028}",
            r#"/\b\f\r\t","dup":"record","disp":"a\"b\nc","b":true,"some":3,"none":null,"#,
            r#""unit":null,"ch":"q","i":-5,"u128":340282366920938463463374607431768211455,"#,
            r#""small":1e-7,"big":1e+20,"f32":1.1,"inf":null,"nan":null,"r2":2.5,"r1":1}"#,
            "\n"
        );
        assert_eq!(without_ts(&line), expected);
        assert!(line.starts_with(r#"{"msg":"hello world","level":"INFO","ts":""#), "{line}");

        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["ctl"], "\u{1}\u{1f}\u{7f}\u{80}é\u{2028}/\u{8}\u{c}\r\t");
        assert_eq!(value["disp"], "a\"b\nc");
        assert_eq!(value["r2"], 2.5);
        assert_eq!(value["i"], -5);
        assert_eq!(value["b"], true);
        assert!(value["none"].is_null() && value["nan"].is_null());
    }

    #[test]
    fn level_names_are_slog_s_short_ones() {
        use slog::Level;
        let (log, rx) = capture(o!());
        // Built by hand: slog's macros leave out trace records at compile time.
        for (level, name) in [
            (Level::Critical, "CRIT"),
            (Level::Error, "ERRO"),
            (Level::Warning, "WARN"),
            (Level::Info, "INFO"),
            (Level::Debug, "DEBG"),
            (Level::Trace, "TRCE"),
        ] {
            let record_static = slog::record_static!(level, "");
            log.log(&Record::new(&record_static, &format_args!("m"), slog::b!()));
            let line = next_line(&rx);
            assert!(line.starts_with(&format!(r#"{{"msg":"m","level":"{name}","ts":""#)), "{line}");
        }
    }

    #[test]
    fn serde_values_are_written_as_nested_json() {
        let (log, rx) = capture(o!());
        let nested = serde_json::json!({"list": [1, "two\"", null], "n": 1.5});
        info!(log, "nested"; "value" => slog::Serde(nested.clone()));
        let value: serde_json::Value = serde_json::from_str(&next_line(&rx)).unwrap();
        assert_eq!(value["value"], nested);
    }

    /// A value whose `serialize` fails, and one whose `Display` fails partway.
    struct Fails;

    impl slog::Value for Fails {
        fn serialize(&self, _: &Record<'_>, _: Key, _: &mut dyn slog::Serializer) -> slog::Result {
            Err(slog::Error::Other)
        }
    }

    struct HalfShown;

    impl fmt::Display for HalfShown {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("half")?;
            Err(fmt::Error)
        }
    }

    #[test]
    fn values_that_fail_still_leave_a_whole_line() {
        let (log, rx) = capture(o!("kept" => "logger"));
        // Record values are serialised last first: `after` is written, then `fails` stops them.
        info!(log, "odd"; "before" => 1, "fails" => Fails, "half" => %HalfShown, "after" => 2);
        let line = next_line(&rx);
        assert_eq!(
            without_ts(&line),
            "{\"msg\":\"odd\",\"level\":\"INFO\",\"kept\":\"logger\",\"after\":2,\"half\":\"half\"}\n"
        );
    }

    /// Panics when shown, as a buggy `Display` might.
    struct Panics;

    impl fmt::Display for Panics {
        fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
            panic!("a Display that panics");
        }
    }

    #[test]
    fn a_panic_while_formatting_does_not_stop_the_log() {
        let (log, rx) = capture(o!());
        let logged = std::panic::catch_unwind(AssertUnwindSafe(|| {
            info!(log, "lost"; "value" => %Panics);
        }));
        assert!(logged.is_err());
        info!(log, "after");
        let line = next_line(&rx);
        assert!(line.starts_with(r#"{"msg":"after","#), "{line}");
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn a_one_megabyte_value_is_written_whole() {
        let (log, rx) = capture(o!());
        let big: String = "0123456789abcdef\"\\\n é".repeat(1 << 16);
        assert!(big.len() > 1 << 20);
        info!(log, "big"; "value" => big.as_str(), "shown" => %big);
        let value: serde_json::Value = serde_json::from_str(&next_line(&rx)).unwrap();
        assert_eq!(value["value"], big.as_str());
        assert_eq!(value["shown"], big.as_str());
    }

    /// Every ASCII character and a few longer ones, at every offset within an eight-byte word,
    /// round-trip through a string value, a `Display` value, the message and a key.
    #[test]
    fn tricky_strings_parse_back_to_themselves() {
        let mut tricky: Vec<String> =
            (0..0x80_u8).map(|byte| char::from(byte).to_string()).collect();
        tricky.push((0..0x80_u8).map(char::from).collect());
        tricky.push((0..0x80_u8).rev().map(char::from).collect());
        tricky.extend(
            [
                "é",
                "ü\"",
                "日本\\",
                "🦀\n🦀",
                "\u{2028}\u{2029}",
                "\u{ffff}\u{10ffff}",
                "\u{80}\u{7ff}\u{800}",
            ]
            .map(String::from),
        );
        let (log, rx) = capture(o!());
        for text in &tricky {
            for pad in 0..8 {
                let text = format!("{}{text}{}", "p".repeat(pad), "s".repeat(8 - pad));
                info!(log, "{}", text; "str" => text.as_str(), "shown" => %text);
                let line = next_line(&rx);
                let value: serde_json::Value = serde_json::from_str(&line).unwrap();
                assert_eq!(value["str"], text.as_str(), "{line}");
                assert_eq!(value["shown"], text.as_str(), "{line}");
                assert_eq!(value["msg"], text.as_str(), "{line}");
            }
        }
    }

    fn ts(at: SystemTime) -> String {
        let mut out = Vec::new();
        write_ts(&mut out, at);
        String::from_utf8(out).unwrap()
    }

    /// `humantime`'s nine-digit form with the fraction's trailing zeros cut, as the `time`
    /// crate (behind `slog_json`) wrote it.
    fn reference(at: SystemTime) -> String {
        let nanos = humantime::format_rfc3339_nanos(at).to_string();
        let (whole, fraction) = nanos.trim_end_matches('Z').split_once('.').unwrap();
        match fraction.trim_end_matches('0') {
            "" => format!("\"{whole}Z\""),
            fraction => format!("\"{whole}.{fraction}Z\""),
        }
    }

    #[test]
    fn timestamps_match_slog_json_s_rfc_3339_form() {
        let at = |secs: u64, nanos: u32| UNIX_EPOCH + Duration::new(secs, nanos);
        assert_eq!(ts(at(0, 0)), "\"1970-01-01T00:00:00Z\"");
        assert_eq!(ts(at(951_782_400, 500_000_000)), "\"2000-02-29T00:00:00.5Z\"");
        assert_eq!(ts(at(1_700_000_000, 123_456_789)), "\"2023-11-14T22:13:20.123456789Z\"");
        assert_eq!(ts(at(1_700_000_000, 1_000)), "\"2023-11-14T22:13:20.000001Z\"");
        assert_eq!(ts(at(253_402_300_799, 999_999_999)), "\"9999-12-31T23:59:59.999999999Z\"");
        assert_eq!(ts(at(253_402_300_800, 0)), "null");
        assert_eq!(ts(UNIX_EPOCH - Duration::new(0, 500_000_000)), "\"1969-12-31T23:59:59.5Z\"");
        assert_eq!(
            ts(UNIX_EPOCH - Duration::from_secs(62_167_219_200)),
            "\"0000-01-01T00:00:00Z\""
        );
        assert_eq!(ts(UNIX_EPOCH - Duration::from_secs(62_167_219_201)), "null");
        // A stride that lands on every month, leap days and century years included.
        let mut secs = 0;
        let mut nanos = 0;
        while secs < 253_402_300_800 {
            assert_eq!(ts(at(secs, nanos)), reference(at(secs, nanos)), "{secs}.{nanos}");
            secs += 86_400 * 29 + 3_607;
            nanos = (nanos + 70_000_130) % 1_000_000_000;
        }
        let now = SystemTime::now();
        assert_eq!(ts(now), reference(now));
    }
}
