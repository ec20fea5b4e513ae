//! `audit verify`: checks the hash chain of one or more audit files.
//!
//! Each line's `hash` is the lowercase hex SHA-256 of the line's bytes before `,"hash":`,
//! a prefix that ends with the line's `prev_hash`; so a line vouches for itself and for the
//! line before it. The verifier reads the files in the order given (rotated first, current
//! last) as one chain and names the first line that breaks it. It reads line by line with a
//! bounded buffer ([`MAX_LINE`]): no file content makes it use unbounded memory or panic.

use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use ring::digest;
use serde_json::Value;

use crate::checkpoint::{CHECKPOINT_EVENT, Checkpoint, CheckpointKind, PUBLIC_KEY_LEN};

/// The longest line accepted (without its newline). The sink never writes a longer one.
pub const MAX_LINE: usize = 1 << 20;

/// The `prev_hash` of a chain's first line.
pub(crate) const ZERO_HASH: &str =
    "0000000000000000000000000000000000000000000000000000000000000000";

/// How many lines after a seq gap are searched for the missing seq, to tell a removed line
/// from reordered ones.
const LOOKAHEAD: usize = 10_000;

/// How late a periodic checkpoint may be before the tail after the last one counts as cut: the
/// writer checks once per sync interval and may be busy with a batch.
pub const CHECKPOINT_GRACE: Duration = Duration::from_secs(30);

/// `,"hash":"` + 64 hex digits + `"}`: how every line ends.
const HASH_MARK: &[u8] = b",\"hash\":\"";
const HASH_TAIL_LEN: usize = HASH_MARK.len() + 64 + 2;

/// A chain that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Verified {
    /// Files read.
    pub files: usize,
    /// Complete lines checked.
    pub lines: u64,
    /// The first line's seq (`None` when there is no line); more than 1 when older files were
    /// not given.
    pub first_seq: Option<u64>,
    /// The last line's seq.
    pub last_seq: Option<u64>,
    /// The last line's hash: compare it with the head the sink told at close
    /// ([`crate::Notice::Closed`]) to catch a cut-off tail.
    pub head_hash: Option<String>,
    /// Things worth knowing that are not failures (a chain starting after seq 1, a torn last
    /// line).
    pub notes: Vec<String>,
    /// Checkpoint signatures verified (`None`: no public key was given, none were checked).
    pub checkpoints: Option<u64>,
}

impl fmt::Display for Verified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let files = if self.files == 1 { "file" } else { "files" };
        let lines = if self.lines == 1 { "line" } else { "lines" };
        write!(f, "ok: {} {files}, {} {lines}", self.files, self.lines)?;
        if let (Some(first), Some(last), Some(head)) =
            (self.first_seq, self.last_seq, self.head_hash.as_deref())
        {
            write!(f, ", seq {first}..{last}, head {head}")?;
        }
        match self.checkpoints {
            Some(count) => write!(f, "\ncheckpoints: {count} signatures verified")?,
            None => write!(
                f,
                "\nnote: checkpoints were not checked (no public key given: with it, their \
                 signatures are checked and a cut tail is found)"
            )?,
        }
        for note in &self.notes {
            write!(f, "\nnote: {note}")?;
        }
        Ok(())
    }
}

/// The first line that breaks the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Broken {
    /// The file, as given.
    pub file: PathBuf,
    /// The line number in that file, from 1 (0: the file as a whole).
    pub line: u64,
    /// The line's seq, when it could be read.
    pub seq: Option<u64>,
    /// What is wrong.
    pub problem: Problem,
}

impl fmt::Display for Broken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        if let Some(seq) = self.seq {
            write!(f, ": seq {seq}")?;
        }
        write!(f, ": {}", self.problem)
    }
}

impl std::error::Error for Broken {}

/// What is wrong with a line.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// The file could not be opened or read.
    Unreadable(String),
    /// Not an audit line: not JSON, a field missing or of the wrong kind, bad hex.
    Malformed(String),
    /// Longer than [`MAX_LINE`].
    TooLong,
    /// A line without its newline that is not at the end of the last file.
    Torn,
    /// The line's hash does not match its content.
    Changed,
    /// Seq 1 (a chain's start) whose `prev_hash` is not 64 zeros.
    BadStart,
    /// Seqs are missing before this line.
    Removed {
        /// The first missing seq.
        first: u64,
        /// The last missing seq.
        last: u64,
        /// The gap is between two files (a file may not have been given).
        at_file_start: bool,
    },
    /// The seq expected here comes later.
    Reordered {
        /// The seq expected here.
        expected: u64,
        /// Where it was found (`file:line`).
        found_at: String,
    },
    /// The seq goes back.
    Backwards {
        /// The previous line's seq.
        previous: u64,
        /// This is the first line of a file (files given out of order?).
        at_file_start: bool,
    },
    /// The same line twice in a row.
    Duplicated,
    /// The `prev_hash` is not the previous line's hash.
    PrevHash {
        /// This is the first line of a file.
        at_file_start: bool,
    },
    /// A checkpoint line is malformed, does not name the line before it, or its signature
    /// does not verify with the public key given.
    BadCheckpoint(String),
    /// The chain is sound but its end is not where the checkpoints say it must be.
    TailCut {
        /// The last line known to be covered (the last checkpoint's seq, or 0).
        after_seq: u64,
        /// Why.
        reason: String,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unreadable(e) => write!(f, "cannot read: {e}"),
            Self::Malformed(why) => write!(f, "malformed line: {why}"),
            Self::TooLong => write!(f, "line longer than {MAX_LINE} bytes (not an audit line)"),
            Self::Torn => {
                f.write_str("incomplete line (no newline) before the end of the last file")
            }
            Self::Changed => f.write_str("changed (hash does not match the line)"),
            Self::BadStart => f.write_str("seq 1 starts a chain but its prev_hash is not 64 zeros"),
            Self::Removed { first, last, at_file_start } => {
                if first == last {
                    write!(f, "seq {first} missing: line removed")?;
                } else {
                    write!(f, "seq {first}..{last} missing: lines removed")?;
                }
                if *at_file_start {
                    f.write_str(" (or a file between these two was not given)")?;
                }
                Ok(())
            }
            Self::Reordered { expected, found_at } => {
                write!(
                    f,
                    "lines reordered: seq {expected} expected here comes later, at {found_at}"
                )
            }
            Self::Backwards { previous, at_file_start: true } => write!(
                f,
                "files out of order: the seq goes back after seq {previous} of the previous file \
                 (give rotated files first, oldest first, the current file last)"
            ),
            Self::Backwards { previous, at_file_start: false } => {
                write!(f, "lines reordered: the seq goes back after seq {previous}")
            }
            Self::Duplicated => f.write_str("duplicated line (the same as the line before)"),
            Self::BadCheckpoint(why) => write!(f, "bad checkpoint: {why}"),
            Self::TailCut { after_seq, reason } => {
                write!(f, "the tail after seq {after_seq} may have been cut: {reason}")
            }
            Self::PrevHash { at_file_start } => {
                f.write_str("prev_hash does not match the previous line's hash (a line changed and re-hashed")?;
                if *at_file_start {
                    f.write_str(", or files given out of order")?;
                }
                f.write_str(")")
            }
        }
    }
}

/// Verifies the chain across `paths`, taken in the order given (rotated files first, oldest
/// first, the current file last).
pub fn verify_files<P: AsRef<Path>>(paths: &[P]) -> Result<Verified, Broken> {
    verify_files_signed(paths, None)
}

/// What a signed verification checks against: the public key, and the time "now" (the age of
/// the last checkpoint is measured against it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignedCheck {
    /// The Ed25519 public key (`cliproxy-server audit pubkey`).
    pub public_key: [u8; PUBLIC_KEY_LEN],
    /// The time to judge the last checkpoint's age by.
    pub now: SystemTime,
}

/// [`verify_files`], and with `signed`, every checkpoint's signature and the tail: the files
/// must end with a shutdown checkpoint, or with fewer than `every_lines` lines after the last
/// checkpoint, which must be less than `every` (plus [`CHECKPOINT_GRACE`]) old. Otherwise
/// [`Problem::TailCut`].
pub fn verify_files_signed<P: AsRef<Path>>(
    paths: &[P],
    signed: Option<SignedCheck>,
) -> Result<Verified, Broken> {
    let mut chain = Chain { signed, ..Chain::default() };
    for (i, path) in paths.iter().enumerate() {
        let path = path.as_ref();
        let last = i + 1 == paths.len();
        match File::open(path) {
            Ok(file) => chain.file(path, BufReader::with_capacity(64 * 1024, file), last)?,
            Err(e) => {
                chain.give_up()?;
                return Err(Broken {
                    file: path.to_owned(),
                    line: 0,
                    seq: None,
                    problem: Problem::Unreadable(e.to_string()),
                });
            }
        }
    }
    chain.finish()
}

/// Verifies one file's chain from a reader (`name` is used in messages); what
/// [`verify_files`] does for each file.
pub fn verify_reader(name: impl AsRef<Path>, reader: impl BufRead) -> Result<Verified, Broken> {
    let mut chain = Chain::default();
    chain.file(name.as_ref(), reader, true)?;
    chain.finish()
}

/// [`verify_reader`] with checkpoint signatures and the tail checked (see
/// [`verify_files_signed`]).
pub fn verify_reader_signed(
    name: impl AsRef<Path>,
    reader: impl BufRead,
    signed: SignedCheck,
) -> Result<Verified, Broken> {
    let mut chain = Chain { signed: Some(signed), ..Chain::default() };
    chain.file(name.as_ref(), reader, true)?;
    chain.finish()
}

/// A parsed audit line.
#[derive(Debug)]
pub(crate) struct Line {
    pub(crate) seq: u64,
    pub(crate) prev_hash: String,
    pub(crate) hash: String,
    /// Whether `hash` is the SHA-256 of the line before `,"hash":`.
    pub(crate) hash_ok: bool,
    /// For a checkpoint line, its fields (or why they cannot be read).
    pub(crate) checkpoint: Option<Result<Checkpoint, String>>,
}

/// Parses one line (without its newline) and checks its own hash.
pub(crate) fn parse_line(bytes: &[u8]) -> Result<Line, String> {
    if bytes.is_empty() {
        return Err("empty line".to_owned());
    }
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| format!("not a JSON object ({e})"))?;
    let Value::Object(map) = value else {
        return Err("not a JSON object".to_owned());
    };
    let seq = map
        .get("seq")
        .and_then(Value::as_u64)
        .filter(|&seq| seq > 0)
        .ok_or("`seq` missing or not a whole number from 1")?;
    for key in ["timestamp", "event_type", "result"] {
        if !map.get(key).is_some_and(Value::is_string) {
            return Err(format!("`{key}` missing or not a string"));
        }
    }
    for key in ["provider", "user_id", "ip", "request_id"] {
        if !map.get(key).is_some_and(|v| v.is_string() || v.is_null()) {
            return Err(format!("`{key}` missing or not a string or null"));
        }
    }
    if !map.get("details").is_some_and(Value::is_object) {
        return Err("`details` missing or not an object".to_owned());
    }
    let hex_field = |key: &str| {
        map.get(key)
            .and_then(Value::as_str)
            .filter(|s| is_hex64(s.as_bytes()))
            .map(str::to_owned)
            .ok_or_else(|| format!("`{key}` missing or not 64 lowercase hex digits"))
    };
    let prev_hash = hex_field("prev_hash")?;
    let hash = hex_field("hash")?;
    // The hash is over the bytes before the final `,"hash":`; the line must end with it so
    // that the rule is unambiguous, and the prefix must end with `prev_hash` so that the hash
    // covers it.
    let cut = bytes
        .len()
        .checked_sub(HASH_TAIL_LEN)
        .filter(|&cut| {
            bytes[cut..].starts_with(HASH_MARK)
                && bytes.ends_with(b"\"}")
                && bytes[cut + HASH_MARK.len()..bytes.len() - 2] == *hash.as_bytes()
        })
        .ok_or("does not end with `,\"hash\":\"<64 hex>\"}`")?;
    let prefix = &bytes[..cut];
    let prev_tail = format!(",\"prev_hash\":\"{prev_hash}\"");
    if !prefix.ends_with(prev_tail.as_bytes()) {
        return Err("`prev_hash` is not the field just before `hash`".to_owned());
    }
    let hash_ok = sha256_hex(prefix) == hash;
    let checkpoint = (map.get("event_type").and_then(Value::as_str) == Some(CHECKPOINT_EVENT))
        .then(|| Checkpoint::parse(&map));
    Ok(Line { seq, prev_hash, hash, hash_ok, checkpoint })
}

/// Lowercase hex SHA-256.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(64);
    sha256_hex_into(bytes, &mut out);
    out
}

/// [`sha256_hex`] into `out`, replacing what it held (no allocation once it has room).
pub(crate) fn sha256_hex_into(bytes: &[u8], out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = digest::digest(&digest::SHA256, bytes);
    out.clear();
    for b in digest.as_ref() {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
}

fn is_hex64(s: &[u8]) -> bool {
    s.len() == 64 && s.iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
}

/// What [`read_line`] found.
enum Read {
    /// A line is in the buffer; `complete` when it ended with a newline.
    Line { complete: bool },
    /// The end of the input.
    Eof,
    /// The line is longer than [`MAX_LINE`] (the buffer holds its start).
    TooLong,
}

/// Reads one line into `buf` (without its newline), never holding more than [`MAX_LINE`]
/// bytes plus one read buffer.
fn read_line(reader: &mut impl BufRead, buf: &mut Vec<u8>) -> io::Result<Read> {
    buf.clear();
    loop {
        let available = match reader.fill_buf() {
            Ok(available) => available,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok(if buf.is_empty() { Read::Eof } else { Read::Line { complete: false } });
        }
        let (take, newline) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (i, true),
            None => (available.len(), false),
        };
        if buf.len() + take > MAX_LINE {
            return Ok(Read::TooLong);
        }
        buf.extend_from_slice(&available[..take]);
        reader.consume(take + usize::from(newline));
        if newline {
            return Ok(Read::Line { complete: true });
        }
    }
}

/// A seq gap being examined: is the missing seq further on (reordered) or gone (removed)?
struct Gap {
    broken: Broken,
    expected: u64,
    left: usize,
}

/// The chain state across files.
#[derive(Default)]
struct Chain {
    files: usize,
    lines: u64,
    first_seq: Option<u64>,
    last: Option<(u64, String)>,
    notes: Vec<String>,
    gap: Option<Gap>,
    /// The key and time to check checkpoints with (`None`: they are not checked).
    signed: Option<SignedCheck>,
    /// Checkpoints verified.
    checkpoints: u64,
    /// The last verified checkpoint: its seq and fields.
    last_checkpoint: Option<(u64, Checkpoint)>,
    /// Lines after the last checkpoint (all lines while there is none).
    since_checkpoint: u64,
    /// The file read last (a cut tail is reported against it).
    last_file: Option<PathBuf>,
}

impl Chain {
    fn file(
        &mut self,
        path: &Path,
        mut reader: impl BufRead,
        last_file: bool,
    ) -> Result<(), Broken> {
        self.files += 1;
        self.last_file = Some(path.to_owned());
        let mut buf = Vec::new();
        let mut line_no = 0u64;
        loop {
            line_no += 1;
            let broken =
                |problem| Broken { file: path.to_owned(), line: line_no, seq: None, problem };
            match read_line(&mut reader, &mut buf) {
                Err(e) => {
                    self.give_up()?;
                    return Err(broken(Problem::Unreadable(e.to_string())));
                }
                Ok(Read::Eof) => return Ok(()),
                Ok(Read::TooLong) => {
                    self.give_up()?;
                    return Err(broken(Problem::TooLong));
                }
                Ok(Read::Line { complete: false }) => {
                    if !last_file {
                        if self.gap.is_some() {
                            return Ok(());
                        }
                        return Err(broken(Problem::Torn));
                    }
                    // A newline is easy to drop: a tail that is a whole audit line is checked
                    // like any other (an edited last line must not pass for a crash).
                    if parse_line(&buf).is_ok() {
                        self.line(path, line_no, &buf)?;
                        self.notes.push(format!(
                            "{}:{line_no}: the last line has no newline; it is a complete audit \
                             line and was checked (the gateway adds the newline when it next \
                             starts)",
                            path.display()
                        ));
                        return Ok(());
                    }
                    if self.gap.is_some() {
                        return Ok(());
                    }
                    self.notes.push(format!(
                        "{}:{line_no}: the last line is incomplete ({} bytes, no newline, not a \
                         whole audit line), as after a crash while writing; it is not checked \
                         (the gateway cuts it off when it next starts)",
                        path.display(),
                        buf.len()
                    ));
                    return Ok(());
                }
                Ok(Read::Line { complete: true }) => self.line(path, line_no, &buf)?,
            }
        }
    }

    fn line(&mut self, path: &Path, line_no: u64, bytes: &[u8]) -> Result<(), Broken> {
        let at_file_start = line_no == 1;
        if let Some(gap) = &mut self.gap {
            // Only the seq matters while looking for the missing one.
            let seq = serde_json::from_slice::<Value>(bytes)
                .ok()
                .and_then(|v| v.get("seq").and_then(Value::as_u64));
            if seq == Some(gap.expected) {
                let mut broken = gap.broken.clone();
                broken.problem = Problem::Reordered {
                    expected: gap.expected,
                    found_at: format!("{}:{line_no}", path.display()),
                };
                return Err(broken);
            }
            gap.left = gap.left.saturating_sub(1);
            if gap.left == 0 {
                return self.give_up();
            }
            return Ok(());
        }
        let broken = |seq, problem| Broken { file: path.to_owned(), line: line_no, seq, problem };
        let line = parse_line(bytes).map_err(|why| broken(None, Problem::Malformed(why)))?;
        let seq = line.seq;
        if !line.hash_ok {
            return Err(broken(Some(seq), Problem::Changed));
        }
        match &self.last {
            None => {
                if seq == 1 {
                    if line.prev_hash != ZERO_HASH {
                        return Err(broken(Some(seq), Problem::BadStart));
                    }
                } else {
                    self.notes.push(format!(
                        "the chain starts at seq {seq} ({}:{line_no}): seq 1..{} are in older \
                         files not given here (or were removed); its first link is not checked",
                        path.display(),
                        seq - 1
                    ));
                }
                self.first_seq = Some(seq);
            }
            Some((previous, previous_hash)) => {
                let previous = *previous;
                if seq == previous.saturating_add(1) {
                    if line.prev_hash != *previous_hash {
                        return Err(broken(Some(seq), Problem::PrevHash { at_file_start }));
                    }
                } else if seq > previous {
                    self.gap = Some(Gap {
                        broken: broken(
                            Some(seq),
                            Problem::Removed { first: previous + 1, last: seq - 1, at_file_start },
                        ),
                        expected: previous + 1,
                        left: LOOKAHEAD,
                    });
                    return Ok(());
                } else if seq == previous && line.hash == *previous_hash {
                    return Err(broken(Some(seq), Problem::Duplicated));
                } else {
                    return Err(broken(Some(seq), Problem::Backwards { previous, at_file_start }));
                }
            }
        }
        match (line.checkpoint, self.signed) {
            (Some(checkpoint), Some(signed)) => {
                let checkpoint =
                    checkpoint.map_err(|why| broken(Some(seq), Problem::BadCheckpoint(why)))?;
                if seq.checked_sub(1) != Some(checkpoint.head_seq)
                    || checkpoint.head_hash != line.prev_hash
                {
                    return Err(broken(
                        Some(seq),
                        Problem::BadCheckpoint(
                            "its head_seq/head_hash do not name the line before it".to_owned(),
                        ),
                    ));
                }
                if !checkpoint.signed_by(&signed.public_key) {
                    return Err(broken(
                        Some(seq),
                        Problem::BadCheckpoint(
                            "the signature does not verify with the public key given (a forged \
                             or altered checkpoint, or the log of another installation)"
                                .to_owned(),
                        ),
                    ));
                }
                self.checkpoints += 1;
                self.since_checkpoint = 0;
                self.last_checkpoint = Some((seq, checkpoint));
            }
            _ => self.since_checkpoint += 1,
        }
        self.lines += 1;
        self.last = Some((seq, line.hash));
        Ok(())
    }

    /// With a key: whether the end of the chain is where the last checkpoint says it must be.
    fn check_tail(&self, file: &Path, signed: &SignedCheck) -> Result<(), Broken> {
        let cut = |after_seq, reason| Broken {
            file: file.to_owned(),
            line: 0,
            seq: None,
            problem: Problem::TailCut { after_seq, reason },
        };
        let Some((seq, checkpoint)) = &self.last_checkpoint else {
            return Err(cut(
                0,
                "no signed checkpoint in the files given (the gateway writes one at every start)"
                    .to_owned(),
            ));
        };
        if checkpoint.kind == CheckpointKind::Shutdown && self.since_checkpoint == 0 {
            return Ok(());
        }
        if self.since_checkpoint >= checkpoint.every_lines {
            return Err(cut(
                *seq,
                format!(
                    "{} lines follow the last checkpoint, but one is written every {} lines",
                    self.since_checkpoint, checkpoint.every_lines
                ),
            ));
        }
        let at = humantime::parse_rfc3339(&checkpoint.timestamp)
            .map_err(|e| cut(*seq, format!("the last checkpoint's timestamp: {e}")))?;
        let age = signed.now.duration_since(at).unwrap_or_default();
        let due = Duration::from_secs(checkpoint.every_secs).saturating_add(CHECKPOINT_GRACE);
        if age > due {
            return Err(cut(
                *seq,
                format!(
                    "the log does not end with a shutdown checkpoint, and its last checkpoint \
                     ({}, {} kind) is {}s old although one is written every {}s: the gateway \
                     stopped without a clean shutdown, or the lines after it were removed",
                    checkpoint.timestamp,
                    checkpoint.kind.as_str(),
                    age.as_secs(),
                    checkpoint.every_secs
                ),
            ));
        }
        Ok(())
    }

    /// Ends a look-ahead for a missing seq: it was not found, so the lines were removed.
    fn give_up(&mut self) -> Result<(), Broken> {
        match self.gap.take() {
            Some(gap) => Err(gap.broken),
            None => Ok(()),
        }
    }

    fn finish(mut self) -> Result<Verified, Broken> {
        self.give_up()?;
        if let Some(signed) = &self.signed {
            let file = self.last_file.clone().unwrap_or_default();
            self.check_tail(&file, signed)?;
        }
        let (last_seq, head_hash) = match self.last {
            Some((seq, hash)) => (Some(seq), Some(hash)),
            None => (None, None),
        };
        Ok(Verified {
            files: self.files,
            lines: self.lines,
            first_seq: self.first_seq,
            last_seq,
            head_hash,
            notes: self.notes,
            checkpoints: self.signed.map(|_| self.checkpoints),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(seq: u64, prev: &str) -> (String, String) {
        let prefix = format!(
            "{{\"seq\":{seq},\"timestamp\":\"2026-01-01T00:00:00.000Z\",\"event_type\":\"auth_success\",\
             \"provider\":null,\"user_id\":\"alice\",\"ip\":null,\"result\":\"success\",\
             \"request_id\":null,\"details\":{{}},\"prev_hash\":\"{prev}\""
        );
        let hash = sha256_hex(prefix.as_bytes());
        (format!("{prefix},\"hash\":\"{hash}\"}}\n"), hash)
    }

    fn chain(n: u64) -> Vec<String> {
        let mut prev = ZERO_HASH.to_owned();
        (1..=n)
            .map(|seq| {
                let (text, hash) = line(seq, &prev);
                prev = hash;
                text
            })
            .collect()
    }

    fn check(lines: &[String]) -> Result<Verified, Broken> {
        verify_reader("a.log", lines.concat().as_bytes())
    }

    #[test]
    fn a_good_chain_verifies_and_damage_names_the_line() {
        let lines = chain(5);
        let ok = check(&lines).map_err(|b| b.to_string());
        assert_eq!(
            ok.as_ref().map(|v| (v.lines, v.first_seq, v.last_seq)),
            Ok((5, Some(1), Some(5)))
        );

        let mut removed = lines.clone();
        removed.remove(2);
        let broken = check(&removed).err().map(|b| b.to_string());
        assert_eq!(broken.as_deref(), Some("a.log:3: seq 4: seq 3 missing: line removed"));

        let mut swapped = lines.clone();
        swapped.swap(1, 2);
        let broken = check(&swapped).err().map(|b| b.to_string()).unwrap_or_default();
        assert!(broken.starts_with("a.log:2: seq 3: lines reordered"), "{broken}");
        assert!(broken.contains("at a.log:3"), "{broken}");

        let mut duplicated = lines.clone();
        duplicated.insert(1, lines[0].clone());
        let broken = check(&duplicated).err().map(|b| b.to_string()).unwrap_or_default();
        assert!(broken.starts_with("a.log:2: seq 1: duplicated"), "{broken}");
    }

    #[test]
    fn a_torn_or_oversized_or_foreign_tail_is_handled_without_panicking() {
        let mut lines = chain(2);
        lines.push("{\"seq\":3,\"times".to_owned());
        let ok = check(&lines).map_err(|b| b.to_string()).map(|v| (v.lines, v.notes.len()));
        assert_eq!(ok, Ok((2, 1)));

        let long = vec![b'x'; MAX_LINE + 10];
        let broken = verify_reader("b.log", &long[..]).err().map(|b| b.problem);
        assert_eq!(broken, Some(Problem::TooLong));

        for junk in ["\n", "[]\n", "{\"seq\":0}\n", "not json\n", "{\"seq\":1}\n"] {
            let broken = verify_reader("c.log", junk.as_bytes()).err().map(|b| b.problem);
            assert!(matches!(broken, Some(Problem::Malformed(_))), "{junk:?}: {broken:?}");
        }
    }
}
