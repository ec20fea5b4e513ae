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

use crate::verify::{MAX_LINE, parse_line};

/// A chain head: a line's `seq` and `hash`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    /// The line's sequence number.
    pub seq: u64,
    /// The line's hash (64 lowercase hex digits).
    pub hash: String,
}

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
