//! The head anchor: the last durably written line's `seq` and `hash`, kept outside the audit
//! file (in the gateway's state store), so that a file cut back or deleted while the gateway
//! was stopped is noticed at the next start.
//!
//! A hash chain proves that no line inside it changed, but a chain with its last lines removed
//! is still a valid chain. The anchor is what the file must still hold: the line at the
//! anchored `seq`, with the anchored `hash`. The sink stores the anchor only after the lines up
//! to it were written and `fdatasync`ed, so a crash can leave the anchor behind the file (never
//! ahead of it), and [`compare`] accepts a file that goes on past its anchor.
//!
//! This crate defines the [`HeadAnchor`] trait only; the gateway adapts its state store to it
//! (the audit layer does not depend on the network guard that owns the store).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use crate::checkpoint::ChainHead;
use crate::verify::{MAX_LINE, parse_line};

/// Where the sink keeps the head of what it has durably written.
///
/// `store` is called on the writer thread after each `fdatasync` that made new lines durable
/// (at most once per `sync_interval`, one second by default), so it must not block for long:
/// queueing the value for a writer of its own is what the gateway's state store does.
pub trait HeadAnchor: Send + Sync + std::fmt::Debug {
    /// The anchored head, or `None` when nothing was anchored yet. The error says why the
    /// store could not be read (it names the store).
    fn load(&self) -> Result<Option<ChainHead>, String>;
    /// Records a new head; never fails (a store that cannot write reports it elsewhere).
    fn store(&self, head: &ChainHead);
}

/// Compares an audit file with its anchored head. `None`: the file holds the anchored line
/// (and maybe more); `Some(found)`: the file is behind its anchor, and `found` says what it
/// holds instead (for the error message and the `security_violation` line).
///
/// Reads the file backwards from its end until it reaches the anchored `seq` (or the file's
/// start), so the cost is the lines written after the anchor, not the whole file. An
/// unterminated last piece (a crash while writing) is not counted as a line.
pub fn compare(path: &Path, anchored: &ChainHead) -> io::Result<Option<String>> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(Some("the file does not exist".to_owned()));
        }
        Err(e) => return Err(e),
    };
    compare_file(&mut file, anchored)
}

/// [`compare`] on an open file.
pub(crate) fn compare_file(file: &mut File, anchored: &ChainHead) -> io::Result<Option<String>> {
    let len = file.metadata()?.len();
    let mut lines = BackLines::new(file, len)?;
    let Some(last) = lines.next_line()? else {
        return Ok(Some("the file holds no complete line".to_owned()));
    };
    let last = match parse_line(&last) {
        Ok(line) => line,
        Err(why) => return Ok(Some(format!("its last line is not an audit line ({why})"))),
    };
    if last.seq < anchored.seq {
        return Ok(Some(format!("the file ends at seq {} (hash {})", last.seq, last.hash)));
    }
    let mut line = last;
    loop {
        if line.seq == anchored.seq {
            return Ok((line.hash != anchored.hash)
                .then(|| format!("the line at seq {} has hash {}", line.seq, line.hash)));
        }
        if line.seq < anchored.seq {
            return Ok(Some(format!(
                "the file has no line with seq {} (it goes from seq {} to a later one)",
                anchored.seq, line.seq
            )));
        }
        let Some(bytes) = lines.next_line()? else {
            // The file starts after the anchored line: it must continue a rotated file whose
            // last line is the anchored one.
            let continues =
                line.seq.checked_sub(1) == Some(anchored.seq) && line.prev_hash == anchored.hash;
            return Ok((!continues).then(|| {
                format!(
                    "the file starts at seq {} (prev_hash {}), after the anchored line",
                    line.seq, line.prev_hash
                )
            }));
        };
        line = match parse_line(&bytes) {
            Ok(line) => line,
            Err(why) => {
                return Ok(Some(format!(
                    "a line before seq {} is not an audit line ({why})",
                    line.seq
                )));
            }
        };
    }
}

/// Complete lines of a file, last first, read in blocks from the end.
struct BackLines<'a> {
    file: &'a mut File,
    /// Where the part not yet read ends.
    pos: u64,
    /// Read bytes not yet returned: a partial line at its start (unless `pos` is 0), then
    /// complete lines.
    buf: Vec<u8>,
}

impl<'a> BackLines<'a> {
    const BLOCK: u64 = 64 * 1024;

    /// Starts at the end, dropping an unterminated last piece.
    fn new(file: &'a mut File, len: u64) -> io::Result<Self> {
        let mut lines = Self { file, pos: len, buf: Vec::new() };
        loop {
            if let Some(newline) = lines.buf.iter().rposition(|&b| b == b'\n') {
                lines.buf.truncate(newline + 1);
                return Ok(lines);
            }
            if lines.pos == 0 {
                lines.buf.clear();
                return Ok(lines);
            }
            lines.read_block()?;
        }
    }

    /// Prepends the block before `pos`; refuses to hold more than a line's worth.
    fn read_block(&mut self) -> io::Result<()> {
        if self.buf.len() > MAX_LINE + 1 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a line longer than {MAX_LINE} bytes (not an audit log?)"),
            ));
        }
        let size = Self::BLOCK.min(self.pos);
        self.pos -= size;
        let mut block = vec![0; usize::try_from(size).unwrap_or(0)];
        self.file.seek(SeekFrom::Start(self.pos))?;
        self.file.read_exact(&mut block)?;
        block.extend_from_slice(&self.buf);
        self.buf = block;
        Ok(())
    }

    /// The previous complete line (without its newline), or `None` at the file's start.
    fn next_line(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            // `buf` ends with a newline whenever it holds a line.
            let Some(body) = self.buf.len().checked_sub(1) else {
                if self.pos == 0 {
                    return Ok(None);
                }
                self.read_block()?;
                continue;
            };
            match self.buf[..body].iter().rposition(|&b| b == b'\n') {
                Some(start) => {
                    let line = self.buf[start + 1..body].to_vec();
                    self.buf.truncate(start + 1);
                    return Ok(Some(line));
                }
                None if self.pos == 0 => {
                    let line = self.buf[..body].to_vec();
                    self.buf.clear();
                    return Ok(Some(line));
                }
                None => self.read_block()?,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;
    use crate::verify::{ZERO_HASH, sha256_hex};

    /// `n` chained lines from `first` (linked to `prev`), with `pad` bytes of details each;
    /// returns the text and each line's hash.
    fn chain(first: u64, n: u64, prev: &str, pad: usize) -> (String, Vec<String>) {
        let mut prev = prev.to_owned();
        let mut text = String::new();
        let mut hashes = Vec::new();
        for seq in first..first + n {
            let prefix = format!(
                "{{\"seq\":{seq},\"timestamp\":\"2026-01-01T00:00:00.000Z\",\"event_type\":\"auth_success\",\
                 \"provider\":null,\"user_id\":null,\"ip\":null,\"result\":\"success\",\
                 \"request_id\":null,\"details\":{{\"pad\":\"{}\"}},\"prev_hash\":\"{prev}\"",
                "x".repeat(pad)
            );
            let hash = sha256_hex(prefix.as_bytes());
            text.push_str(&format!("{prefix},\"hash\":\"{hash}\"}}\n"));
            hashes.push(hash.clone());
            prev = hash;
        }
        (text, hashes)
    }

    fn file_with(text: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(text.as_bytes()).unwrap();
        file
    }

    fn head(seq: u64, hash: &str) -> ChainHead {
        ChainHead { seq, hash: hash.to_owned() }
    }

    #[test]
    fn a_file_at_or_past_its_anchor_passes_across_many_blocks() {
        // About 600 KiB: the anchored line is found ten blocks back from the end.
        let (text, hashes) = chain(1, 300, ZERO_HASH, 2000);
        let file = file_with(&text);
        for seq in [1u64, 17, 150, 299, 300] {
            let anchored = head(seq, &hashes[usize::try_from(seq).unwrap() - 1]);
            assert_eq!(compare(file.path(), &anchored).unwrap(), None, "seq {seq}");
        }
        // A torn last piece (a crash while writing) is not a line, and not a gap.
        let torn = file_with(&format!("{text}{{\"seq\":301,\"ti"));
        assert_eq!(compare(torn.path(), &head(300, &hashes[299])).unwrap(), None);
    }

    #[test]
    fn a_file_behind_its_anchor_says_what_it_holds() {
        let (text, hashes) = chain(1, 10, ZERO_HASH, 10);
        let cut: String = text.lines().take(7).map(|l| format!("{l}\n")).collect();
        let found = compare(file_with(&cut).path(), &head(10, &hashes[9])).unwrap();
        assert_eq!(
            found.as_deref(),
            Some(&*format!("the file ends at seq 7 (hash {})", hashes[6]))
        );

        let found = compare(file_with(&text).path(), &head(10, &"a".repeat(64))).unwrap();
        assert_eq!(found.as_deref(), Some(&*format!("the line at seq 10 has hash {}", hashes[9])));

        let found = compare(file_with("").path(), &head(3, &hashes[2])).unwrap();
        assert_eq!(found.as_deref(), Some("the file holds no complete line"));
        let dir = tempfile::tempdir().unwrap();
        let found = compare(&dir.path().join("gone.log"), &head(3, &hashes[2])).unwrap();
        assert_eq!(found.as_deref(), Some("the file does not exist"));

        // Seq 5 removed from the middle: the anchored seq is skipped.
        let holed: String = text
            .lines()
            .enumerate()
            .filter(|(i, _)| *i != 4)
            .map(|(_, l)| format!("{l}\n"))
            .collect();
        let found = compare(file_with(&holed).path(), &head(5, &hashes[4])).unwrap();
        assert!(found.is_some_and(|f| f.contains("no line with seq 5")));
    }

    #[test]
    fn a_rotated_file_must_link_to_the_anchored_line() {
        let (_, old) = chain(1, 5, ZERO_HASH, 10);
        let (next, _) = chain(6, 3, &old[4], 10);
        assert_eq!(compare(file_with(&next).path(), &head(5, &old[4])).unwrap(), None);
        // Starting later than the line after the anchor: lines are missing in between.
        let (later, _) = chain(7, 3, &old[4], 10);
        let found = compare(file_with(&later).path(), &head(5, &old[4])).unwrap();
        assert!(found.is_some_and(|f| f.contains("starts at seq 7")));
        // The right seq but linked to another line.
        let (forged, _) = chain(6, 3, &"b".repeat(64), 10);
        assert!(compare(file_with(&forged).path(), &head(5, &old[4])).unwrap().is_some());
    }

    #[test]
    fn hostile_content_gives_a_verdict_without_unbounded_reads() {
        let (_, hashes) = chain(1, 3, ZERO_HASH, 10);
        for junk in ["not json\n", "\n\n\n", "{\"seq\":99}\n"] {
            let found = compare(file_with(junk).path(), &head(3, &hashes[2])).unwrap();
            assert!(found.is_some(), "{junk:?}");
        }
        // A "line" longer than any audit line is refused as an error, not read whole.
        let long = format!("{}\n", "y".repeat(MAX_LINE + 200_000));
        let err = compare(file_with(&long).path(), &head(3, &hashes[2])).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
